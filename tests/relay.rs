//! A fast loopback relay for the benchmarks: an HTTP/1.1 server on
//! `127.0.0.1` (axum, keep-alive, on a thread of its own) that takes the
//! `one-time-code` gate's requests, keeps the last code sent to each
//! destination, and answers `202`. A benchmark's client reads the code of
//! its user's destination in process ([`CodeRelay::take_code`]), as a person
//! reads their SMS.
//!
//! Unlike [`crate::sink::Sink`], which records every request and closes
//! every connection (what the tests need), this keeps one string per
//! destination and its connections open, so that the relay costs a reset
//! about what a real relay's round trip on loopback would.
//!
//! The body must be JSON with `to` and `code` (the tests' relay body,
//! [`CodeRelay::BODY`]); anything else is answered `400`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running relay; stopped (and its thread joined) when dropped.
pub struct CodeRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    codes: Mutex<HashMap<String, String>>,
    sent: AtomicU64,
}

impl CodeRelay {
    /// The `one-time-code` body this relay reads.
    pub const BODY: &'static str = r#"{"to": "{{destination}}", "code": "{{code}}"}"#;

    /// Starts the relay on a free loopback port.
    pub fn start() -> CodeRelay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("code-relay".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let app = axum::Router::new()
                        .fallback(axum::routing::post(receive))
                        .with_state(state);
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await
                        .unwrap();
                });
            })
            .unwrap();
        CodeRelay {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`: the origin to grant and to list in
    /// `http_origins` (with `plain_http: true`).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The relay's URL for `path` (e.g. `/send`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// The last code sent to `destination`, taken (a second read is `None`
    /// until another code is sent).
    pub fn take_code(&self, destination: &str) -> Option<String> {
        self.shared.codes.lock().unwrap().remove(destination)
    }

    /// How many codes the relay has received.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }
}

async fn receive(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let (Some(to), Some(code)) = (v["to"].as_str(), v["code"].as_str()) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    shared
        .codes
        .lock()
        .unwrap()
        .insert(to.to_owned(), code.to_owned());
    shared.sent.fetch_add(1, Ordering::Relaxed);
    axum::http::StatusCode::ACCEPTED
}

impl Drop for CodeRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
