//! The HTTP admin API (INTERFACES.md 7): the provisioning operations of [`crate::admin`]
//! for subscription systems that call over the network. The user's reference is
//! `docs/admin-api.md`.
//!
//! | method | path | operation (metrics label) |
//! |---|---|---|
//! | `GET` | `/v1/subscribers` | `subscriber_list` (extension) |
//! | `POST` | `/v1/subscribers` | `subscriber_add` |
//! | `GET` | `/v1/subscribers/{user}` | `subscriber_show` |
//! | `DELETE` | `/v1/subscribers/{user}` | `subscriber_remove` |
//! | `PUT` | `/v1/subscribers/{user}/password` | `subscriber_set_password` |
//! | `PUT` | `/v1/subscribers/{user}/psk` | `subscriber_set_psk` |
//! | `PUT` | `/v1/subscribers/{user}/status` | `subscriber_set_status` (extension) |
//! | `PUT` | `/v1/subscribers/{user}/whitelist` | `whitelist_load` |
//! | `GET` | `/v1/subscribers/{user}/whitelist` | `whitelist_show` |
//! | `DELETE` | `/v1/subscribers/{user}/whitelist` | `whitelist_clear` |
//! | `GET` | `/v1/subscribers/{user}/whitelist/check` | `whitelist_check` (extension) |
//!
//! Every request goes through [`handle`], which checks in this order, so that nothing is
//! read or revealed before the caller is known:
//! 1. the API is on (`http.admin_token_file` is set), else 404 for the whole tree;
//! 2. `Authorization: Bearer <token>`, compared in constant time, else 401;
//! 3. the method, else 405 with `Allow`;
//! 4. the subscriber name in the path (percent-encoded UTF-8), else 400;
//! 5. the query and the body, whose size is capped before it is read ([`MAX_JSON_BYTES`],
//!    or [`whitelist::MAX_DOCUMENT_BYTES`] for a provisioning document): 400, 413, 415;
//! 6. the operation, whose [`AdminError`] becomes a status in one place
//!    ([`Failure::status`], through [`AdminError::http_status`]).
//!
//! Each request is counted once (`cpmstore_admin_requests_total{operation,status}`) and
//! logged once with its operation, peer, subscriber and status; never with the token, a
//! password or a PSK. Answers carry `Cache-Control: no-store`: some hold a generated
//! secret.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts as _, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodRouter, any};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroize as _;

use super::{AppState, BodyError, REQUEST_TIMEOUT, read_body};
use crate::admin::whitelist::{self, OriginQuery};
use crate::admin::{self, AddRequest, AdminError, PasswordSource, PskSource};
use crate::auth::secret::Secret;
use crate::config::Config;
use crate::push::Format;

/// Largest JSON body accepted, in bytes: the bodies are a few fields; 64 KiB leaves room
/// for many addresses and still refuses a flood at once.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// The collection of subscribers; every other path of the API is below it.
const COLLECTION: &str = "/v1/subscribers";

/// Longest subscriber name written to the log, in characters.
const MAX_LOGGED_NAME_CHARS: usize = 255;

/// The admin routes. Each path answers every method; [`handle`] decides.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(COLLECTION, resource(Resource::Subscribers))
        .route("/v1/subscribers/{user}", resource(Resource::Subscriber))
        .route(
            "/v1/subscribers/{user}/password",
            resource(Resource::Password),
        )
        .route("/v1/subscribers/{user}/psk", resource(Resource::Psk))
        .route("/v1/subscribers/{user}/status", resource(Resource::Status))
        .route(
            "/v1/subscribers/{user}/whitelist",
            resource(Resource::Whitelist),
        )
        .route(
            "/v1/subscribers/{user}/whitelist/check",
            resource(Resource::WhitelistCheck),
        )
}

fn resource(resource: Resource) -> MethodRouter<AppState> {
    any(move |State(state): State<AppState>, request: Request| handle(state, resource, request))
}

/// A path of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Subscribers,
    Subscriber,
    Password,
    Psk,
    Status,
    Whitelist,
    WhitelistCheck,
}

impl Resource {
    /// Every resource, for tests.
    #[cfg(test)]
    const ALL: [Resource; 7] = [
        Resource::Subscribers,
        Resource::Subscriber,
        Resource::Password,
        Resource::Psk,
        Resource::Status,
        Resource::Whitelist,
        Resource::WhitelistCheck,
    ];

    /// The operation `method` asks for here, if the resource has one. HEAD is GET
    /// without the body.
    fn operation(self, method: &Method) -> Option<Operation> {
        let read = *method == Method::GET || *method == Method::HEAD;
        let (put, post, delete) = (
            *method == Method::PUT,
            *method == Method::POST,
            *method == Method::DELETE,
        );
        Some(match self {
            Resource::Subscribers if read => Operation::SubscriberList,
            Resource::Subscribers if post => Operation::SubscriberAdd,
            Resource::Subscriber if read => Operation::SubscriberShow,
            Resource::Subscriber if delete => Operation::SubscriberRemove,
            Resource::Password if put => Operation::SetPassword,
            Resource::Psk if put => Operation::SetPsk,
            Resource::Status if put => Operation::SetStatus,
            Resource::Whitelist if put => Operation::WhitelistLoad,
            Resource::Whitelist if read => Operation::WhitelistShow,
            Resource::Whitelist if delete => Operation::WhitelistClear,
            Resource::WhitelistCheck if read => Operation::WhitelistCheck,
            _ => return None,
        })
    }

    /// The `Allow` header of a 405 (kept equal to [`Resource::operation`] by a test).
    fn allow(self) -> &'static str {
        match self {
            Resource::Subscribers => "GET, HEAD, POST",
            Resource::Subscriber => "GET, HEAD, DELETE",
            Resource::Password | Resource::Psk | Resource::Status => "PUT",
            Resource::Whitelist => "GET, HEAD, PUT, DELETE",
            Resource::WhitelistCheck => "GET, HEAD",
        }
    }

    /// Whether the path names a subscriber (`{user}`).
    fn has_user(self) -> bool {
        self != Resource::Subscribers
    }
}

/// What a request does; its name is the `operation` label of the metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    SubscriberList,
    SubscriberAdd,
    SubscriberShow,
    SubscriberRemove,
    SetPassword,
    SetPsk,
    SetStatus,
    WhitelistLoad,
    WhitelistShow,
    WhitelistClear,
    WhitelistCheck,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::SubscriberList => "subscriber_list",
            Operation::SubscriberAdd => "subscriber_add",
            Operation::SubscriberShow => "subscriber_show",
            Operation::SubscriberRemove => "subscriber_remove",
            Operation::SetPassword => "subscriber_set_password",
            Operation::SetPsk => "subscriber_set_psk",
            Operation::SetStatus => "subscriber_set_status",
            Operation::WhitelistLoad => "whitelist_load",
            Operation::WhitelistShow => "whitelist_show",
            Operation::WhitelistClear => "whitelist_clear",
            Operation::WhitelistCheck => "whitelist_check",
        }
    }
}

/// The operation label of a request whose method the resource does not have.
const METHOD_NOT_ALLOWED: &str = "method_not_allowed";

/// What the log line of a request says besides the status.
struct Call {
    operation: &'static str,
    peer: Option<SocketAddr>,
    /// The subscriber, once the caller is authorised (from the path, or the body of an
    /// add).
    subscriber: Option<String>,
}

/// A successful answer: status and JSON body.
struct Done {
    status: StatusCode,
    json: Vec<u8>,
    location: Option<String>,
}

impl Done {
    fn new<T: Serialize>(status: StatusCode, value: &T) -> Result<Done, Failure> {
        let json = serde_json::to_vec(value).map_err(|e| {
            Failure::Admin(AdminError::Internal(format!(
                "cannot encode the result as JSON: {e}"
            )))
        })?;
        Ok(Done {
            status,
            json,
            location: None,
        })
    }

    fn ok<T: Serialize>(value: &T) -> Result<Done, Failure> {
        Done::new(StatusCode::OK, value)
    }

    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.json,
        )
            .into_response();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    }
}

/// Why a request failed. [`Failure::status`] is the one place that turns it (an
/// [`AdminError`] included) into an HTTP status.
#[derive(Debug)]
enum Failure {
    /// The admin API is off.
    Off,
    /// No bearer token, or not the right one.
    Unauthorized { presented: bool },
    /// The resource has no such method; the `Allow` value.
    MethodNotAllowed(&'static str),
    /// The request is wrong at the HTTP level (path, query, headers, body size); the
    /// message goes to the client and the log.
    Request(StatusCode, String),
    /// The JSON body did not decode. The message goes to the client only: the decoder
    /// may quote values of the body, which may be secrets.
    Json(String),
    /// The operation failed.
    Admin(AdminError),
}

impl From<AdminError> for Failure {
    fn from(err: AdminError) -> Self {
        Failure::Admin(err)
    }
}

impl Failure {
    fn bad_request(message: impl Into<String>) -> Failure {
        Failure::Request(StatusCode::BAD_REQUEST, message.into())
    }

    fn status(&self) -> StatusCode {
        match self {
            Failure::Off => StatusCode::NOT_FOUND,
            Failure::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Failure::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Failure::Request(status, _) => *status,
            Failure::Json(_) => StatusCode::BAD_REQUEST,
            Failure::Admin(err) => {
                StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// What the client is told. Operation errors are scrubbed of the storage URL.
    fn message(&self, config: &Config) -> String {
        match self {
            Failure::Off => "the admin API is off; set http.admin_token_file to turn it on".into(),
            Failure::Unauthorized { presented: false } => {
                "no bearer token; send Authorization: Bearer <token>, the token being the \
                 content of the file http.admin_token_file names"
                    .into()
            }
            Failure::Unauthorized { presented: true } => {
                "wrong bearer token; send Authorization: Bearer <token>, the token being the \
                 content of the file http.admin_token_file names"
                    .into()
            }
            Failure::MethodNotAllowed(allow) => {
                format!("method not allowed on this resource; allowed: {allow}")
            }
            Failure::Request(_, message) | Failure::Json(message) => message.clone(),
            Failure::Admin(err) => admin::scrub(config, &err.to_string()),
        }
    }

    /// What the log says about the failure (never a value from a JSON body).
    fn log_reason(&self, config: &Config) -> String {
        match self {
            Failure::Json(_) => "the body is not the JSON expected".into(),
            other => other.message(config),
        }
    }

    fn into_response(self, config: &Config) -> Response {
        let mut response = super::error(self.status(), &self.message(config));
        let headers = response.headers_mut();
        match self {
            Failure::Unauthorized { presented } => {
                let challenge = if presented {
                    "Bearer realm=\"cpmstore admin\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"cpmstore admin\""
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            Failure::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}

/// Serves one request of the admin API: checks, operation, answer, metrics, log.
async fn handle(state: AppState, resource: Resource, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let operation = resource.operation(&parts.method);
    let user = if resource.has_user() {
        Some(
            Path::<String>::from_request_parts(&mut parts, &state)
                .await
                .map(|Path(user)| user)
                .ok(),
        )
    } else {
        None
    };
    let mut call = Call {
        operation: operation.map_or(METHOD_NOT_ALLOWED, Operation::name),
        peer: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0),
        subscriber: None,
    };
    let work = respond(&state, resource, operation, user, &parts, body, &mut call);
    let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Request(
            StatusCode::REQUEST_TIMEOUT,
            "the request was not complete in time".into(),
        )),
    };
    finish(&state, &call, outcome)
}

/// Counts and logs the request, and builds its answer.
fn finish(state: &AppState, call: &Call, outcome: Result<Done, Failure>) -> Response {
    let (status, mut response, reason) = match outcome {
        Ok(done) => (done.status, done.into_response(), None),
        Err(failure) => {
            let status = failure.status();
            let reason = failure.log_reason(&state.config);
            (status, failure.into_response(&state.config), Some(reason))
        }
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    state.metrics.admin_request(call.operation, status.as_u16());
    let peer = call
        .peer
        .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    // Absent fields (no subscriber, no error) are left out of the line.
    let subscriber = call.subscriber.as_deref().map(loggable);
    let (subscriber, reason) = (subscriber.as_deref(), reason.as_deref());
    if status.is_server_error() {
        if status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE
        {
            state.metrics.storage_error("admin");
        }
        tracing::warn!(
            operation = call.operation,
            %peer,
            subscriber,
            status = status.as_u16(),
            error = reason,
            "admin request"
        );
    } else {
        tracing::info!(
            operation = call.operation,
            %peer,
            subscriber,
            status = status.as_u16(),
            error = reason,
            "admin request"
        );
    }
    response
}

/// A name as written to the log: control characters replaced, length capped.
fn loggable(name: &str) -> String {
    name.chars()
        .take(MAX_LOGGED_NAME_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The checks of the module documentation, then the operation.
async fn respond(
    state: &AppState,
    resource: Resource,
    operation: Option<Operation>,
    user: Option<Option<String>>,
    parts: &Parts,
    body: Body,
    call: &mut Call,
) -> Result<Done, Failure> {
    let Some(token) = &state.admin_token else {
        return Err(Failure::Off);
    };
    authorize(token, &parts.headers)?;
    let operation = operation.ok_or(Failure::MethodNotAllowed(resource.allow()))?;
    // Every operation but list and add is on a path with `{user}`.
    let user = match user {
        None => String::new(),
        Some(Some(user)) => {
            call.subscriber = Some(user.clone());
            user
        }
        Some(None) => {
            return Err(Failure::bad_request(
                "the subscriber name in the path is not valid percent-encoded UTF-8",
            ));
        }
    };
    let store = state.store.as_ref();
    let config = state.config.as_ref();
    let headers = &parts.headers;
    match operation {
        Operation::SubscriberList => Done::ok(&admin::list(store).await?),
        Operation::SubscriberAdd => {
            let AddBody {
                username,
                password,
                generate_password,
                addresses,
                quota,
            } = json_body(headers, body, AddBody::SHAPE).await?;
            call.subscriber = Some(username.clone());
            let password = match (password, generate_password) {
                (Some(_), true) => {
                    return Err(Failure::bad_request(
                        "give either \"password\" or \"generate_password\": true, not both",
                    ));
                }
                (Some(SecretField(password)), false) => PasswordSource::Given(password),
                (None, true) => PasswordSource::Generate,
                (None, false) => PasswordSource::None,
            };
            let request = AddRequest {
                username,
                password,
                addresses: addresses.unwrap_or_default(),
                quota,
            };
            let added = admin::add_subscriber(store, config, request).await?;
            let mut done = Done::new(StatusCode::CREATED, &added)?;
            done.location = Some(format!(
                "{COLLECTION}/{}",
                encode_segment(&added.subscriber.username)
            ));
            Ok(done)
        }
        Operation::SubscriberShow => Done::ok(&admin::show(store, &user).await?),
        Operation::SubscriberRemove => Done::ok(&admin::remove(store, &user).await?),
        Operation::SetPassword => {
            let PasswordBody { password, generate } =
                json_body(headers, body, PasswordBody::SHAPE).await?;
            let source = match (password, generate) {
                (Some(SecretField(password)), false) => PasswordSource::Given(password),
                (None, true) => PasswordSource::Generate,
                _ => {
                    return Err(Failure::bad_request(format!(
                        "give exactly one of \"password\" and \"generate\": true: {}",
                        PasswordBody::SHAPE
                    )));
                }
            };
            Done::ok(&admin::set_password(store, config, &user, source).await?)
        }
        Operation::SetPsk => {
            let PskBody {
                identity,
                key_hex,
                generate,
            } = json_body(headers, body, PskBody::SHAPE).await?;
            let source = match (key_hex, generate) {
                (Some(SecretField(key)), false) if key.expose().trim().is_empty() => {
                    return Err(Failure::bad_request(
                        "\"key_hex\" is empty; give the key as 32 to 128 hex digits, \
                         or ask for a generated one with \"generate\": true",
                    ));
                }
                (Some(SecretField(key)), false) => PskSource::Hex(key),
                (None, true) => PskSource::Generate,
                _ => {
                    return Err(Failure::bad_request(format!(
                        "give exactly one of \"key_hex\" and \"generate\": true: {}",
                        PskBody::SHAPE
                    )));
                }
            };
            Done::ok(&admin::set_psk(store, config, &user, &identity, source).await?)
        }
        Operation::SetStatus => {
            let StatusBody { status } = json_body(headers, body, StatusBody::SHAPE).await?;
            let info = match status {
                WantedStatus::Active => admin::enable(store, &user).await?,
                WantedStatus::Disabled => admin::disable(store, &user).await?,
            };
            Done::ok(&info)
        }
        Operation::WhitelistLoad => {
            let query = Params::parse(&parts.uri, &["context"])?;
            let format = document_format(headers)?;
            let document = read(headers, body, whitelist::MAX_DOCUMENT_BYTES).await?;
            let loaded = whitelist::load(
                store,
                config,
                &user,
                &document,
                format,
                query.get("context"),
            )
            .await?;
            Done::ok(&loaded)
        }
        Operation::WhitelistShow => Done::ok(&whitelist::show(store, &user).await?),
        Operation::WhitelistClear => {
            let query = Params::parse(&parts.uri, &["context"])?;
            Done::ok(&whitelist::clear(store, &user, query.get("context")).await?)
        }
        Operation::WhitelistCheck => {
            let query = Params::parse(&parts.uri, &["ppg", "smsc", "sip_pai", "context"])?;
            let origin = match (query.get("ppg"), query.get("smsc"), query.get("sip_pai")) {
                (Some(ip), None, None) => OriginQuery::Ppg(ip.to_owned()),
                (None, Some(smsc), None) => OriginQuery::Smsc(smsc.to_owned()),
                (None, None, Some(pai)) => OriginQuery::SipPai(pai.to_owned()),
                _ => {
                    return Err(Failure::bad_request(
                        "give exactly one origin: ?ppg=IP, ?smsc=ADDR or ?sip_pai=VALUE \
                         (percent-encoded), and optionally &context=PROVURL",
                    ));
                }
            };
            let checked =
                whitelist::check(store, config, &user, &origin, query.get("context")).await?;
            Done::ok(&checked)
        }
    }
}

/// Checks `Authorization: Bearer <token>`. The token and the expected one are compared
/// as SHA-256 digests in constant time, so neither their content nor their length shows
/// in the time taken.
fn authorize(expected: &Secret, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Failure::Unauthorized { presented: false });
    };
    let presented = bearer_token(value).ok_or(Failure::Unauthorized { presented: true })?;
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.expose().as_bytes());
    if bool::from(presented.as_slice().ct_eq(expected.as_slice())) {
        Ok(())
    } else {
        Err(Failure::Unauthorized { presented: true })
    }
}

/// The token of a `Bearer` credential (the scheme is case-insensitive, RFC 9110 11.1).
pub(super) fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads a body of at most `max` bytes: 413 at once when `Content-Length` says more.
async fn read(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, Failure> {
    read_body(headers, body, max).await.map_err(|e| match e {
        BodyError::TooLarge => Failure::Request(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the {max} bytes accepted here"),
        ),
        BodyError::Broken(why) => Failure::bad_request(why),
    })
}

/// Reads and decodes a JSON body of at most [`MAX_JSON_BYTES`], whatever its
/// Content-Type; its bytes are wiped once decoded (it may hold a password or a PSK).
async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    shape: &str,
) -> Result<T, Failure> {
    let mut bytes = read(headers, body, MAX_JSON_BYTES).await?;
    let decoded = decode_json(&bytes, shape);
    bytes.zeroize();
    decoded
}

/// Decodes a JSON object (serde would take an array for a struct too).
fn decode_json<T: DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, Failure> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Failure::Json(format!(
            "the body is not a JSON object; send {shape}"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Failure::Json(format!(
            "the body is not the JSON expected: {e}; send {shape}"
        ))
    })
}

/// A secret string of a JSON body: `Debug` shows `<redacted>`, wiped when dropped.
#[derive(Debug)]
struct SecretField(Secret);

impl<'de> Deserialize<'de> for SecretField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| SecretField(Secret::new(text)))
    }
}

/// `POST /v1/subscribers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    username: String,
    #[serde(default)]
    password: Option<SecretField>,
    #[serde(default)]
    generate_password: bool,
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default)]
    quota: Option<u64>,
}

impl AddBody {
    const SHAPE: &str = "{\"username\": \"...\", \"password\": \"...\" or \"generate_password\": true \
                         (or neither), \"addresses\": [\"tel:+...\", \"sip:...\"], \"quota\": BYTES}";
}

/// `PUT /v1/subscribers/{user}/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    #[serde(default)]
    password: Option<SecretField>,
    #[serde(default)]
    generate: bool,
}

impl PasswordBody {
    const SHAPE: &str = "{\"password\": \"...\"} or {\"generate\": true}";
}

/// `PUT /v1/subscribers/{user}/psk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PskBody {
    identity: String,
    #[serde(default)]
    key_hex: Option<SecretField>,
    #[serde(default)]
    generate: bool,
}

impl PskBody {
    const SHAPE: &str = "{\"identity\": \"...\", \"key_hex\": \"HEX\"} or {\"identity\": \"...\", \"generate\": true}";
}

/// `PUT /v1/subscribers/{user}/status`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: WantedStatus,
}

impl StatusBody {
    const SHAPE: &str = "{\"status\": \"active\"} or {\"status\": \"disabled\"}";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WantedStatus {
    Active,
    Disabled,
}

/// The encoding of a provisioning document, from its Content-Type: the WBXML and XML
/// types the push module knows, any `+xml` type as XML; no Content-Type or
/// `application/octet-stream` tells them apart by the first byte (like the CLI's
/// `--format auto`); anything else is 415.
fn document_format(headers: &HeaderMap) -> Result<Format, Failure> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Auto);
    };
    let text = value
        .to_str()
        .map_err(|_| Failure::bad_request("the Content-Type header is not ASCII text"))?;
    if let Some(format) = Format::from_content_type(text) {
        return Ok(format);
    }
    let essence = text.split(';').next().unwrap_or("").trim();
    let lower = essence.to_ascii_lowercase();
    if lower.is_empty() || lower == "application/octet-stream" {
        return Ok(Format::Auto);
    }
    if lower.ends_with("+xml") {
        return Ok(Format::Xml);
    }
    Err(Failure::Request(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "Content-Type {essence:?} is not a provisioning document; send \
             application/vnd.wap.connectivity-wbxml (WBXML), text/vnd.wap.connectivity-xml, \
             application/xml or text/xml (XML), or application/octet-stream to have it told \
             by its first byte (curl --data-binary sends application/x-www-form-urlencoded \
             unless given -H 'Content-Type: ...')"
        ),
    ))
}

/// The parameters of a query string, percent-decoded (`+` is a space) by axum's
/// [`Query`] extractor, checked against the names an operation accepts.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    /// Parses the query of `uri`, accepting only the names in `allowed`, each once.
    fn parse(uri: &Uri, allowed: &[&str]) -> Result<Params, Failure> {
        let malformed =
            || Failure::bad_request("the query string is not valid percent-encoded UTF-8");
        // `Query` decodes leniently (a broken escape stays as written, bytes that are not
        // UTF-8 become U+FFFD); the API refuses both, as it always has.
        if !strictly_encoded(uri.query().unwrap_or("")) {
            return Err(malformed());
        }
        let Query(pairs) =
            Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|_| malformed())?;
        let mut params: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(Failure::bad_request(format!(
                    "unknown query parameter {:?}; accepted here: {}",
                    loggable(&name),
                    allowed.join(", ")
                )));
            }
            if params.iter().any(|(n, _)| *n == name) {
                return Err(Failure::bad_request(format!(
                    "query parameter {name:?} is given more than once"
                )));
            }
            params.push((name, value));
        }
        Ok(Params(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether every `%` of `query` starts an escape of two hex digits and the decoded
/// bytes are UTF-8 (`&`, `=` and `+` being ASCII, the whole decodes as UTF-8 exactly
/// when every name and value does).
fn strictly_encoded(query: &str) -> bool {
    let bytes = query.as_bytes();
    let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
    let broken = bytes
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'%' && !(hex(i + 1) && hex(i + 2)));
    !broken
        && percent_encoding::percent_decode_str(query)
            .decode_utf8()
            .is_ok()
}

/// Everything but RFC 3986 unreserved characters is escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `text` for a path segment.
fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use tower::ServiceExt as _;

    use super::*;
    use crate::metrics::Metrics;
    use crate::push::ingress::PushService;

    const TOKEN: &str = "0123456789abcdef-test-token";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn bearer_token_is_checked_whole() {
        let expected = Secret::from(TOKEN);
        let good = format!("Bearer {TOKEN}");
        let lower = format!("bearer   {TOKEN} ");
        assert!(authorize(&expected, &headers(&[("authorization", &good)])).is_ok());
        assert!(authorize(&expected, &headers(&[("authorization", &lower)])).is_ok());
        let cases: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some("Bearer"), true),
            (Some("Bearer "), true),
            (Some("Basic YWRtaW46eA=="), true),
            (Some(&TOKEN[..TOKEN.len() - 1]), true),
            (Some("Bearer 0123456789abcdef-test-toke"), true),
            (Some("Bearer 0123456789abcdef-test-tokenX"), true),
            (Some("Bearer 0123456789ABCDEF-test-token"), true),
        ];
        for (value, presented) in cases {
            let map = match value {
                Some(v) => headers(&[("authorization", v)]),
                None => HeaderMap::new(),
            };
            match authorize(&expected, &map) {
                Err(Failure::Unauthorized { presented: p }) => {
                    assert_eq!(p, *presented, "{value:?}")
                }
                other => panic!("{value:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn allow_lists_exactly_the_methods_with_an_operation() {
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ];
        for resource in Resource::ALL {
            let allow: Vec<&str> = resource.allow().split(", ").collect();
            for method in &methods {
                assert_eq!(
                    resource.operation(method).is_some(),
                    allow.contains(&method.as_str()),
                    "{resource:?} {method}"
                );
            }
        }
    }

    #[test]
    fn queries() {
        let uri: Uri = "/x?context=http%3A%2F%2Fprov.example%2Fa%2Bb+c"
            .parse()
            .unwrap();
        let query = Params::parse(&uri, &["context"]).unwrap();
        assert_eq!(query.get("context"), Some("http://prov.example/a+b c"));
        let uri: Uri = "/x?context=".parse().unwrap();
        assert_eq!(
            Params::parse(&uri, &["context"]).unwrap().get("context"),
            Some("")
        );
        let uri: Uri = "/x".parse().unwrap();
        assert_eq!(
            Params::parse(&uri, &["context"]).unwrap().get("context"),
            None
        );
        let uri: Uri = "/x?context=%E2%82%AC%26=&&".parse().unwrap();
        assert_eq!(
            Params::parse(&uri, &["context"]).unwrap().get("context"),
            Some("\u{20ac}&=")
        );
        for bad in [
            "/x?context=%FF",
            "/x?context=%G1",
            "/x?context=%+1",
            "/x?context=%4",
            "/x?context=%E2%82",
            "/x?context=%E2%82&context=%AC",
            "/x?contxt=a",
            "/x?context=a&context=b",
        ] {
            let uri: Uri = bad.parse().unwrap();
            let err = Params::parse(&uri, &["context"]).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn document_formats() {
        let cases: &[(Option<&str>, Option<Format>)] = &[
            (None, Some(Format::Auto)),
            (Some("application/octet-stream"), Some(Format::Auto)),
            (
                Some("application/vnd.wap.connectivity-wbxml"),
                Some(Format::Wbxml),
            ),
            (Some("text/vnd.wap.connectivity-xml"), Some(Format::Xml)),
            (Some("application/xml; charset=utf-8"), Some(Format::Xml)),
            (Some("TEXT/XML"), Some(Format::Xml)),
            (
                Some("application/vnd.wap.connectivity+xml"),
                Some(Format::Xml),
            ),
            (Some("application/x-www-form-urlencoded"), None),
            (Some("application/json"), None),
        ];
        for (content_type, want) in cases {
            let map = match content_type {
                Some(v) => headers(&[("content-type", v)]),
                None => HeaderMap::new(),
            };
            match (document_format(&map), want) {
                (Ok(got), Some(want)) => assert_eq!(got, *want, "{content_type:?}"),
                (Err(e), None) => assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
                (got, _) => panic!("{content_type:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn bodies_are_strict_and_secrets_stay_out_of_debug() {
        let body: AddBody = decode_json(
            br#"{"username":"alice","password":"hunter2 secret","addresses":["tel:+358"]}"#,
            AddBody::SHAPE,
        )
        .unwrap();
        assert!(!format!("{body:?}").contains("hunter2"));
        assert_eq!(body.addresses.unwrap(), ["tel:+358"]);
        for bad in [
            &br#"{"username":"alice","pasword":"x"}"#[..],
            br#"{"password":"x"}"#,
            br#"{"username":"alice","quota":-1}"#,
            br#"{"username":"alice","generate_password":"yes"}"#,
            br#"["alice"]"#,
            b"",
            b"{",
        ] {
            let err = decode_json::<AddBody>(bad, AddBody::SHAPE).unwrap_err();
            assert!(matches!(err, Failure::Json(_)), "{bad:?}");
            assert_eq!(
                err.log_reason(&Config::default()),
                "the body is not the JSON expected"
            );
        }
        let status: StatusBody = decode_json(br#"{"status":"disabled"}"#, "").unwrap();
        assert_eq!(status.status, WantedStatus::Disabled);
        assert!(decode_json::<StatusBody>(br#"{"status":"gone"}"#, "").is_err());
    }

    #[test]
    fn errors_map_through_http_status() {
        let cases = [
            (AdminError::Invalid(String::new()), StatusCode::BAD_REQUEST),
            (AdminError::Conflict(String::new()), StatusCode::CONFLICT),
            (AdminError::NotFound(String::new()), StatusCode::NOT_FOUND),
            (
                AdminError::Unavailable(String::new()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                AdminError::Internal(String::new()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(Failure::Admin(err).status(), status);
        }
    }

    #[test]
    fn segments_and_log_names() {
        assert_eq!(encode_segment("alice"), "alice");
        assert_eq!(encode_segment("+358 a/é"), "%2B358%20a%2F%C3%A9");
        assert_eq!(loggable("a\nb\u{7}"), "a?b?");
        assert_eq!(loggable(&"x".repeat(300)).len(), MAX_LOGGED_NAME_CHARS);
    }

    async fn state(dir: &std::path::Path, token: Option<&str>) -> AppState {
        let mut config = Config::default();
        config.storage.url = format!("sqlite://{}", dir.join("t.db").display());
        let store = admin::open_store(&config).await.unwrap();
        let config = Arc::new(config);
        let metrics = Metrics::new().unwrap();
        AppState {
            push: Arc::new(PushService::new(
                store.clone(),
                config.clone(),
                metrics.clone(),
            )),
            store,
            config,
            admin_token: token.map(|t| Arc::new(Secret::from(t))),
            deposit_token: None,
            metrics,
            max_body: 1024,
        }
    }

    async fn call(state: &AppState, request: axum::http::Request<Body>) -> Response {
        super::super::router(state.clone())
            .oneshot(request)
            .await
            .unwrap()
    }

    fn request(method: &str, path: &str, pairs: &[(&str, &str)]) -> axum::http::Request<Body> {
        let mut builder = axum::http::Request::builder().method(method).uri(path);
        for (name, value) in pairs {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn checks_come_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let auth = format!("Bearer {TOKEN}");
        let huge = (MAX_JSON_BYTES * 100).to_string();

        // Off: 404 for the whole tree, whatever the token or method.
        let off = state(dir.path(), None).await;
        for (method, path) in [
            ("GET", "/v1/subscribers"),
            ("PATCH", "/v1/subscribers/alice"),
            ("PUT", "/v1/subscribers/alice/psk"),
        ] {
            let answer = call(&off, request(method, path, &[("authorization", &auth)])).await;
            assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{method} {path}");
        }

        let on = state(dir.path(), Some(TOKEN)).await;
        // The token before the method and the body: no 405 or 413 to strangers.
        for (method, headers) in [
            ("PATCH", vec![]),
            ("POST", vec![("content-length", huge.as_str())]),
            (
                "POST",
                vec![("authorization", "Bearer wrong-token-xxxxxxxx")],
            ),
        ] {
            let answer = call(&on, request(method, "/v1/subscribers", &headers)).await;
            assert_eq!(
                answer.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {headers:?}"
            );
            assert!(
                answer.headers()[header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer")
            );
        }
        // Then the method, then the body's size.
        let answer = call(
            &on,
            request("PATCH", "/v1/subscribers", &[("authorization", &auth)]),
        )
        .await;
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[header::ALLOW], "GET, HEAD, POST");
        let answer = call(
            &on,
            request(
                "POST",
                "/v1/subscribers",
                &[("authorization", &auth), ("content-length", &huge)],
            ),
        )
        .await;
        assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(answer.headers()[header::CACHE_CONTROL], "no-store");

        let rendered = String::from_utf8(on.metrics.render().unwrap()).unwrap();
        assert!(
            rendered.contains(
                "cpmstore_admin_requests_total{operation=\"subscriber_add\",status=\"413\"} 1"
            ),
            "{rendered}"
        );
        assert!(
            rendered.contains(
                "cpmstore_admin_requests_total{operation=\"method_not_allowed\",status=\"401\"} 1"
            ),
            "{rendered}"
        );
    }
}
