//! The HTTP listener (INTERFACES.md 6.3 and 8): push ingress and health.
//!
//! - `POST /v1/push/{address}`: `{address}` is a username or a percent-encoded
//!   subscriber URI. The origin is the TCP peer (a PPG); a peer in
//!   `push.trusted_gateways` may assert it instead with `X-Push-Origin-PPG: IP` or
//!   `X-Push-Origin-SMSC: ADDR[;ton=N][;npi=N]` (from anyone else those headers are
//!   ignored). `X-Wap-Push-ProvURL` selects the provisioning context. Answers, with JSON
//!   bodies: 202 `{"mailbox":"INBOX","uid":N}`, 403 rejected by the whitelist (or the
//!   subscriber is disabled), 404 unknown subscriber, 400 malformed, 408 too slow,
//!   413 larger than `limits.http_max_body_bytes` (refused from `Content-Length` before
//!   the body is read, else as soon as the body passes the limit), 507 over quota.
//! - `GET /healthz`: 200 while the process runs.
//!
//! Connections are served by hyper with a header read timeout, a request timeout that
//! covers reading the body, and a cap on connections; at shutdown each connection
//! finishes its request in flight and closes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::push::ingress::{Ingress, Outcome, PushRequest, PushResult, PushService};
use crate::push::{Origin, ip, try_parse_smsc_header};

/// How long a client may take to send a request's headers (also the idle time allowed
/// between requests on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may take to finish its request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    push: Arc<PushService>,
    max_body: usize,
}

/// The routes, over a push service.
pub fn router(push: Arc<PushService>) -> Router {
    let max_body = push.config().limits.http_max_body_bytes;
    Router::new()
        .route("/v1/push/{address}", post(push_handler))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(AppState { push, max_body })
}

/// Serves `listener` until `shutdown` turns true. Each connection holds a clone of
/// `alive` while it runs, so the server can wait for them to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    alive: Arc<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let Some((tcp, peer)) = crate::net::accept(&listener, "http", &mut shutdown).await else {
            return;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::info!(%peer, listener = "http", "connection refused: limit reached");
            continue;
        };
        let router = router.clone();
        let alive = alive.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _alive = alive;
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
                _ = shutdown.wait_for(|stop| *stop) => None,
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

async fn not_found() -> Response {
    answer(StatusCode::NOT_FOUND, json!({"error": "no such resource"}))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    answer(status, json!({ "error": message }))
}

async fn push_handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    address: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let service = state.push.clone();
    let Ok(Path(address)) = address else {
        let why = "the address in the path is not valid percent-encoded UTF-8";
        service.refused(Ingress::Http, peer, "", Outcome::Malformed, why);
        return error(StatusCode::BAD_REQUEST, why);
    };
    let work = handle_push(&state, peer, &address, &headers, body);
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(response) => response,
        Err(_) => {
            let why = "the request was not complete in time";
            service.refused(Ingress::Http, peer, &address, Outcome::Failed, why);
            error(StatusCode::REQUEST_TIMEOUT, why)
        }
    }
}

async fn handle_push(
    state: &AppState,
    peer: SocketAddr,
    address: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let service = &state.push;
    let refuse = |outcome: Outcome, status: StatusCode, why: &str| {
        service.refused(Ingress::Http, peer, address, outcome, why);
        error(status, why)
    };
    let peer_ip = ip::canonical(peer.ip());
    let origin = match origin(service.config(), peer_ip, headers) {
        Ok(origin) => origin,
        Err(why) => return refuse(Outcome::Malformed, StatusCode::BAD_REQUEST, &why),
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(Some)
                .map_err(|_| format!("the {name} header is not ASCII text")),
        }
    };
    let (context, content_type, application_id) = match (
        text("x-wap-push-provurl"),
        text(header::CONTENT_TYPE.as_str()),
        text("x-wap-application-id"),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => {
            return refuse(Outcome::Malformed, StatusCode::BAD_REQUEST, &why);
        }
    };
    let body = match read_body(headers, body, state.max_body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let why = format!(
                "the body is larger than {} bytes (limits.http_max_body_bytes)",
                state.max_body
            );
            return refuse(Outcome::TooLarge, StatusCode::PAYLOAD_TOO_LARGE, &why);
        }
        Err(BodyError::Broken(why)) => {
            return refuse(Outcome::Malformed, StatusCode::BAD_REQUEST, &why);
        }
    };
    let result = service
        .push(PushRequest {
            ingress: Ingress::Http,
            peer,
            address,
            origin,
            context,
            content_type,
            application_id,
            body: &body,
        })
        .await;
    match result {
        PushResult::Delivered(delivered) => answer(
            StatusCode::ACCEPTED,
            json!({"mailbox": delivered.mailbox, "uid": delivered.uid}),
        ),
        PushResult::Rejected => error(
            StatusCode::FORBIDDEN,
            "the origin is not in the subscriber's push whitelist",
        ),
        PushResult::Disabled => error(StatusCode::FORBIDDEN, "the subscriber is disabled"),
        PushResult::UnknownSubscriber => error(StatusCode::NOT_FOUND, "unknown subscriber"),
        PushResult::Malformed(why) => error(StatusCode::BAD_REQUEST, &why),
        PushResult::OverQuota => error(
            StatusCode::INSUFFICIENT_STORAGE,
            "the subscriber's mailbox is over quota",
        ),
        PushResult::Failed => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the push could not be stored; try again later",
        ),
    }
}

/// The origin of a push from `peer`: the peer itself, or what a trusted gateway asserts.
fn origin(
    config: &crate::config::Config,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<Origin, String> {
    let trusted = config
        .push
        .trusted_gateways
        .iter()
        .any(|net| net.contains(peer));
    let ppg = headers.get("x-push-origin-ppg");
    let smsc = headers.get("x-push-origin-smsc");
    if !trusted {
        if ppg.is_some() || smsc.is_some() {
            tracing::debug!(%peer, "X-Push-Origin-* from a peer that is not a trusted gateway: ignored");
        }
        return Ok(Origin::Ppg(peer));
    }
    fn value<'h>(h: &'h axum::http::HeaderValue, name: &str) -> Result<&'h str, String> {
        h.to_str()
            .map(str::trim)
            .map_err(|_| format!("the {name} header is not ASCII text"))
    }
    match (ppg, smsc) {
        (Some(_), Some(_)) => {
            Err("give one of X-Push-Origin-PPG and X-Push-Origin-SMSC, not both".into())
        }
        (Some(ppg), None) => {
            let text = value(ppg, "X-Push-Origin-PPG")?;
            ip::parse(text)
                .map(|ip| Origin::Ppg(ip::canonical(ip)))
                .ok_or_else(|| format!("X-Push-Origin-PPG {text:?} is not an IP address"))
        }
        (None, Some(smsc)) => {
            let text = value(smsc, "X-Push-Origin-SMSC")?;
            try_parse_smsc_header(text).map_err(|e| format!("X-Push-Origin-SMSC: {e}"))
        }
        (None, None) => Ok(Origin::Ppg(peer)),
    }
}

enum BodyError {
    TooLarge,
    Broken(String),
}

/// Reads the body, refusing it as soon as it is known to be larger than `max`: at once
/// from `Content-Length`, else when the bytes read pass the limit.
async fn read_body(headers: &HeaderMap, mut body: Body, max: usize) -> Result<Vec<u8>, BodyError> {
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
mod tests {
    use super::*;
    use crate::config::Config;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn origin_headers_only_from_trusted_gateways() {
        let mut config = Config::default();
        config.push.trusted_gateways = vec!["10.0.0.0/8".parse().unwrap()];
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        let asserted = headers(&[("x-push-origin-ppg", "198.51.100.7")]);
        assert_eq!(
            origin(&config, untrusted, &asserted).unwrap(),
            Origin::Ppg(untrusted)
        );
        assert_eq!(
            origin(&config, trusted, &asserted).unwrap(),
            Origin::Ppg("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            origin(&config, trusted, &headers(&[])).unwrap(),
            Origin::Ppg(trusted)
        );
        let smsc = headers(&[("x-push-origin-smsc", "+35809503401;ton=1;npi=1")]);
        assert_eq!(origin(&config, trusted, &smsc).unwrap().kind(), "smsc");
        assert_eq!(
            origin(&config, untrusted, &smsc).unwrap(),
            Origin::Ppg(untrusted)
        );
        assert!(origin(&config, trusted, &headers(&[("x-push-origin-ppg", "nope")])).is_err());
        assert!(
            origin(
                &config,
                trusted,
                &headers(&[("x-push-origin-smsc", "+358;q=1")])
            )
            .is_err()
        );
        let both = headers(&[
            ("x-push-origin-ppg", "198.51.100.7"),
            ("x-push-origin-smsc", "+358"),
        ]);
        assert!(origin(&config, trusted, &both).is_err());
        assert_eq!(
            origin(
                &config,
                trusted,
                &headers(&[("x-push-origin-ppg", "::ffff:198.51.100.7")])
            )
            .unwrap(),
            Origin::Ppg("198.51.100.7".parse().unwrap())
        );
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
