//! The HTTP server: binds the API's router to a listener.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::Api;

/// Serves the API on `listener` (over TLS if `options.tls` is set) until
/// `shutdown` completes; see [`crate::listen`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    options: crate::listen::Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::listen::serve(listener, crate::api::router(api), options, shutdown).await
}

/// The URL of a listener bound to `addr`, for the start-up line:
/// `https://ADDR` when serving TLS, `http://ADDR` otherwise.
pub fn describe_addr(addr: SocketAddr, tls: bool) -> String {
    crate::listen::url(addr, tls)
}
