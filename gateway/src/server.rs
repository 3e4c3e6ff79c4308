//! The HTTP server. Only this module knows status codes and wire shapes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::runtime::Runtime;

/// The router of the gateway's HTTP API.
pub fn app(runtime: Arc<Runtime>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/workflows", get(workflows))
        .with_state(runtime)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The workflows being served: name, version (sha256 of the file) and purpose.
async fn workflows(State(runtime): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    let mut list: Vec<serde_json::Value> = runtime
        .current()
        .iter()
        .map(|w| {
            serde_json::json!({
                "name": w.name,
                "description": w.description,
                "version": w.version,
                "purpose": format!("{:?}", w.purpose).to_lowercase(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(serde_json::json!({ "workflows": list }))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    runtime: Arc<Runtime>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(runtime))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The address a listener is bound to, for the start-up line.
pub fn describe_addr(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
