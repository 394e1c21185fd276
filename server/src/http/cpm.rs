//! The CPM deposit and event-report API (INTERFACES.md 9.2, 9.3):
//!
//! - `POST /v1/cpm/{user}/conversations/{conversation}/objects`
//! - `POST /v1/cpm/{user}/conversations/{conversation}/sessions/{contribution}/objects`
//!   (query `flags=\Seen,$MDNSent` and `date=RFC3339`)
//! - `POST /v1/cpm/{user}/events`
//!
//! Authenticated with `Authorization: Bearer` and the admin token or the deposit token
//! (`[cpm] deposit_token_file`); with neither configured the API is off (404). The
//! operations are `crate::cpm`'s; a call is logged with its subscriber, folder and
//! status, never with the token or the object.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use percent_encoding::percent_decode_str;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::admin::bearer_token;
use super::{AppState, BodyError, answer, error, read_body};
use crate::cpm::{self, CpmError, DepositRequest};

/// Largest event report accepted.
const MAX_EVENTS_BYTES: usize = 1 << 20;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/cpm/{user}/conversations/{conversation}/objects",
            post(deposit_conversation),
        )
        .route(
            "/v1/cpm/{user}/conversations/{conversation}/sessions/{contribution}/objects",
            post(deposit_session),
        )
        .route("/v1/cpm/{user}/events", post(events))
}

async fn deposit_conversation(
    State(state): State<AppState>,
    Path((user, conversation)): Path<(String, String)>,
    request: Request,
) -> Response {
    deposit(state, user, conversation, None, request).await
}

async fn deposit_session(
    State(state): State<AppState>,
    Path((user, conversation, contribution)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    deposit(state, user, conversation, Some(contribution), request).await
}

async fn deposit(
    state: AppState,
    user: String,
    conversation: String,
    session: Option<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let (parts, body) = request.into_parts();
        authorize(&state, &parts.headers)?;
        let (flags, date) = deposit_query(&parts.uri)?;
        let limit = usize::try_from(state.config.limits.max_literal_bytes).unwrap_or(usize::MAX);
        let content = read(&parts.headers, body, limit).await?;
        let deposited = cpm::deposit(
            state.store.as_ref(),
            &state.config,
            DepositRequest {
                user: user.clone(),
                conversation,
                session,
                content,
                flags,
                date,
            },
        )
        .await
        .map_err(Failure::Cpm)?;
        tracing::info!(
            subscriber = %user,
            mailbox = %deposited.mailbox,
            uid = deposited.uid,
            repeated = deposited.repeated,
            "CPM object deposited"
        );
        state.metrics.cpm_deposit(deposited.repeated);
        let status = if deposited.repeated {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(answer(status, json!(deposited)))
    }
    .await;
    finish(&state, &user, "deposit", outcome)
}

async fn events(
    State(state): State<AppState>,
    Path(user): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let (parts, body) = request.into_parts();
        authorize(&state, &parts.headers)?;
        if parts.uri.query().is_some_and(|q| !q.is_empty()) {
            return Err(Failure::Cpm(CpmError::Invalid(
                "the events endpoint takes no query parameters".into(),
            )));
        }
        let bytes = read(&parts.headers, body, MAX_EVENTS_BYTES).await?;
        let report = cpm::decode_events(&bytes).map_err(Failure::Cpm)?;
        let applied = cpm::apply_events(state.store.as_ref(), &state.config, &user, &report)
            .await
            .map_err(Failure::Cpm)?;
        tracing::info!(
            subscriber = %user,
            applied = applied.applied,
            objects = applied.objects,
            unknown = applied.unknown.len(),
            "CPM event report applied"
        );
        state
            .metrics
            .cpm_events(applied.applied, applied.unknown.len());
        Ok(answer(StatusCode::OK, json!(applied)))
    }
    .await;
    finish(&state, &user, "events", outcome)
}

/// Why a call failed.
enum Failure {
    /// No token configured: the API is off.
    Off,
    /// No or a wrong bearer token.
    Unauthorized,
    /// The operation's error.
    Cpm(CpmError),
}

fn finish(
    state: &AppState,
    user: &str,
    operation: &str,
    outcome: Result<Response, Failure>,
) -> Response {
    let response = match outcome {
        Ok(response) => response,
        Err(Failure::Off) => error(
            StatusCode::NOT_FOUND,
            "the CPM API is off; set http.admin_token_file or cpm.deposit_token_file to turn it on",
        ),
        Err(Failure::Unauthorized) => {
            tracing::info!(subscriber = %user, operation, "CPM API call refused: bad or missing bearer token");
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <token>, the token being the content of \
                 cpm.deposit_token_file or http.admin_token_file",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"cpmstore cpm\""),
            );
            response
        }
        Err(Failure::Cpm(e)) => {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::warn!(subscriber = %user, operation, error = %e, "CPM API call failed");
            } else {
                tracing::info!(subscriber = %user, operation, status = status.as_u16(), error = %e, "CPM API call refused");
            }
            error(status, &e.to_string())
        }
    }
    .into_response();
    state
        .metrics
        .cpm_request(operation, response.status().as_u16());
    response
}

/// The admin token or the deposit token, compared as SHA-256 digests in constant time.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Failure> {
    let tokens: Vec<_> = [&state.admin_token, &state.deposit_token]
        .into_iter()
        .flatten()
        .collect();
    if tokens.is_empty() {
        return Err(Failure::Off);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(bearer_token)
        .ok_or(Failure::Unauthorized)?;
    let presented = Sha256::digest(presented.as_bytes());
    let mut matched = false;
    for token in tokens {
        let expected = Sha256::digest(token.expose().as_bytes());
        matched |= bool::from(presented.as_slice().ct_eq(expected.as_slice()));
    }
    if matched {
        Ok(())
    } else {
        Err(Failure::Unauthorized)
    }
}

/// `flags` (comma-separated) and `date` of a deposit's query; anything else is 400.
fn deposit_query(uri: &Uri) -> Result<(Vec<String>, Option<String>), Failure> {
    let mut flags = Vec::new();
    let mut date = None;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| invalid(format!("query parameter {name:?} is not UTF-8")))?;
        match name {
            "flags" => flags.extend(value.split(',').map(|f| f.trim().to_owned())),
            "date" => date = Some(value.into_owned()),
            _ => {
                return Err(invalid(format!(
                    "unknown query parameter {name:?}; a deposit takes flags and date"
                )));
            }
        }
    }
    Ok((flags, date))
}

fn invalid(message: String) -> Failure {
    Failure::Cpm(CpmError::Invalid(message))
}

async fn read(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, Failure> {
    read_body(headers, body, max).await.map_err(|e| match e {
        BodyError::TooLarge => Failure::Cpm(CpmError::TooLarge(format!(
            "the body is larger than the {max} bytes accepted here"
        ))),
        BodyError::Broken(why) => invalid(why),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn deposit_queries() {
        let uri: Uri = "/x?flags=%5CSeen,$MDNSent&date=2026-12-03T09:15:00Z"
            .parse()
            .unwrap();
        let Ok((flags, date)) = deposit_query(&uri) else {
            panic!("parsed")
        };
        assert_eq!(flags, ["\\Seen", "$MDNSent"]);
        assert_eq!(date.as_deref(), Some("2026-12-03T09:15:00Z"));
        let uri: Uri = "/x?colour=red".parse().unwrap();
        assert!(deposit_query(&uri).is_err());
        let uri: Uri = "/x".parse().unwrap();
        assert!(deposit_query(&uri).is_ok_and(|(f, d)| f.is_empty() && d.is_none()));
    }
}
