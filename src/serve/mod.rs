//! The operations surface of a live run: an HTTP server (axum, on its own small tokio runtime)
//! that shows what the engine sees now — Prometheus `/metrics`, a JSON API, health and
//! readiness, silences, and a dashboard at `/` — read from the [`Board`] the workers and the
//! delivery thread write.
//!
//! Every answer is JSON (or the Prometheus text format); every error is JSON with a message and
//! the right status code. Nothing here touches the hot path: a request locks one worker's shard
//! at a time, for as long as it takes to copy out what it shows.

mod api;
mod metrics;
mod silences;

pub use metrics::classic_text as metrics_text;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::link::Link;
use crate::silence::Silences;
use crate::status::Board;

/// What the server shows, shared with the run.
pub struct Served {
    pub board: Arc<Board>,
    /// Every broker connection of the run: ready once one of them was reached.
    pub links: Vec<Arc<Link>>,
    /// The silences the delivery thread obeys, which the API lists, adds and removes.
    pub silences: Arc<Mutex<Silences>>,
    /// The bearer token writes require; without one, writes are refused.
    pub token: Option<String>,
}

/// A running server; dropping it (or [`stop`](Server::stop)) shuts it down.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("http: cannot serve on {listen}: {source}")]
pub struct ServeError {
    listen: String,
    source: std::io::Error,
}

/// A listening socket not yet served: bound first, so that a taken port fails the run before
/// any broker connection is made.
pub struct Bound {
    listen: String,
    listener: std::net::TcpListener,
}

impl Server {
    pub fn bind(listen: &str) -> Result<Bound, ServeError> {
        let fail = |source| ServeError {
            listen: listen.to_string(),
            source,
        };
        let listener = std::net::TcpListener::bind(listen).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        Ok(Bound {
            listen: listen.to_string(),
            listener,
        })
    }
}

impl Bound {
    /// Serves on a thread of its own until stopped.
    pub fn serve(self, served: Served) -> Result<Server, ServeError> {
        let fail = |source| ServeError {
            listen: self.listen.clone(),
            source,
        };
        let addr = self.listener.local_addr().map_err(fail)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(fail)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(Arc::new(served));
        let std_listener = self.listener;
        let thread = std::thread::Builder::new()
            .name("mqwatch-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "http: cannot serve");
                            return;
                        }
                    };
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown)
                        .await
                    {
                        tracing::error!(error = %e, "http: server failed");
                    }
                })
            })
            .map_err(fail)?;
        tracing::info!("serving the API, /metrics and the dashboard on http://{addr}");
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Server {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn router(served: Arc<Served>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics::scrape))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/alerts/{id}", get(api::alert))
        .route("/api/v1/entities", get(api::entities))
        .route("/api/v1/entities/{id}", get(api::entity))
        .route(
            "/api/v1/silences",
            get(silences::list).post(silences::create),
        )
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(silences::remove),
        )
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        // A silence is a few hundred bytes; nothing the API takes is larger than this.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(served)
}

/// The largest request body the API reads; a larger one is refused with 413.
pub const MAX_BODY: usize = 64 << 10;

/// Whether `listen` keeps the API to this machine.
pub fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => listen.starts_with("localhost:"),
    }
}

/// The live dashboard: one page, its styles and script inline (no CDN, no fonts to fetch),
/// drawn from the JSON API and refreshed every few seconds.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

/// An error as the API answers it: a status code and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}
