//! The HTTP server. Only this module knows status codes and wire shapes.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;

/// The router of the gateway's HTTP API.
pub fn app() -> Router {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app())
        .with_graceful_shutdown(shutdown)
        .await
}

/// The address a listener is bound to, for the start-up line.
pub fn describe_addr(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
