//! The HTTP listener (INTERFACES.md 6.3, 7 and 8): push ingress, the admin API,
//! metrics and health.
//!
//! - `POST /v1/push/{address}`: push ingress ([`push`]).
//! - `/v1/subscribers...`: the admin API ([`admin`]), only when `http.admin_token_file`
//!   is set; every call carries `Authorization: Bearer <token>`.
//! - `/v1/cpm/{user}/...`: CPM deposits and event reports ([`cpm`]), with the admin
//!   token or `cpm.deposit_token_file`'s.
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`]).
//! - `GET /healthz`: 200 while the process runs. `GET /readyz`: 200 when storage
//!   answers, 503 otherwise.
//!
//! Connections are served by hyper with a header read timeout, a request timeout that
//! covers reading the body, and a cap on connections; at shutdown each connection
//! finishes its request in flight and closes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cpmstore_storage::Store;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::auth::secret::Secret;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::push::ingress::PushService;

pub mod admin;
pub mod cpm;
pub mod push;

/// How long a client may take to send a request's headers (also the idle time allowed
/// between requests on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `/readyz` waits for storage to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection may take to finish its request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The push pipeline (push ingress).
    pub push: Arc<PushService>,
    /// Storage (admin API, readiness).
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The admin API's bearer token; `None` turns the admin API off (404).
    pub admin_token: Option<Arc<Secret>>,
    /// The CPM deposit API's own bearer token (`cpm.deposit_token_file`); the admin
    /// token is accepted there too.
    pub deposit_token: Option<Arc<Secret>>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// `limits.http_max_body_bytes`.
    pub max_body: usize,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/push/{address}", post(push::push_handler))
        .merge(admin::routes())
        .merge(cpm::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Serves `listener` until `shutdown` is cancelled. Each connection runs on `tracker`,
/// so the server can wait for them to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    metrics: Arc<Metrics>,
    max_connections: usize,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let Some((tcp, peer)) = crate::net::accept(&listener, "http", &shutdown).await else {
            return;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::info!(%peer, listener = "http", "connection refused: limit reached");
            continue;
        };
        let router = router.clone();
        let open = metrics.connection_opened("http");
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let _open = open;
            let service = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(Body::new))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(connection);
            let finished = tokio::select! {
                r = connection.as_mut() => Some(r),
                _ = shutdown.cancelled() => None,
            };
            let result = match finished {
                Some(r) => r,
                None => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(SHUTDOWN_GRACE, connection).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, listener = "http", error = %e, "connection ended with an error");
            }
        });
    }
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => answer(StatusCode::OK, json!({"status": "ready"})),
        Ok(Err(e)) => {
            state.metrics.storage_error("health");
            tracing::warn!(error = %e, "readiness check: storage did not answer");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage is not reachable")
        }
        Err(_) => {
            state.metrics.storage_error("health");
            tracing::warn!("readiness check: storage did not answer in time");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage did not answer in time",
            )
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the metrics");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the metrics",
            )
        }
    }
}

async fn not_found() -> Response {
    answer(StatusCode::NOT_FOUND, json!({"error": "no such resource"}))
}

/// A JSON answer.
pub(crate) fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A JSON error answer: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    answer(status, json!({ "error": message }))
}

/// Why a body could not be read.
pub(crate) enum BodyError {
    TooLarge,
    Broken(String),
}

/// Reads the body, refusing it as soon as it is known to be larger than `max`: at once
/// from `Content-Length`, else when the bytes read pass the limit.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(max).min(max));
    let mut out = Vec::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Broken(format!("cannot read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A header map from pairs (test helper shared by the handlers' tests).
    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[tokio::test]
    async fn body_limit() {
        let small = headers(&[("content-length", "3")]);
        assert_eq!(
            read_body(&small, Body::from("abc"), 3).await.ok(),
            Some(b"abc".to_vec())
        );
        let declared = headers(&[("content-length", "4")]);
        assert!(matches!(
            read_body(&declared, Body::from("abcd"), 3).await,
            Err(BodyError::TooLarge)
        ));
        // No Content-Length (chunked): refused once the bytes pass the limit.
        assert!(matches!(
            read_body(&headers(&[]), Body::from("abcd"), 3).await,
            Err(BodyError::TooLarge)
        ));
    }
}
