//! `POST /v1/push/{address}` (INTERFACES.md 6.3): `{address}` is a username or a
//! percent-encoded subscriber URI. The origin is the TCP peer (a PPG); a peer in
//! `push.trusted_gateways` may assert it instead with `X-Push-Origin-PPG: IP` or
//! `X-Push-Origin-SMSC: ADDR[;ton=N][;npi=N]` (from anyone else those headers are
//! ignored). `X-Wap-Push-ProvURL` selects the provisioning context; one the subscriber
//! has no whitelist for is rejected once it has a whitelist in any context
//! ([`crate::push::decide`]). Answers, with JSON bodies: 202
//! `{"mailbox":"INBOX","uid":N}`, 403 rejected by the whitelist (the same answer for
//! every reason, so a sender learns nothing of which contexts exist) or the
//! subscriber is disabled, 404 unknown subscriber, 400 malformed, 408 too slow,
//! 413 larger than `limits.http_max_body_bytes` (refused from `Content-Length` before
//! the body is read, else as soon as the body passes the limit), 507 over quota.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::{AppState, BodyError, REQUEST_TIMEOUT, answer, error, read_body};
use crate::push::ingress::{Ingress, Outcome, PushRequest, PushResult};
use crate::push::{Origin, ip, try_parse_smsc_header};

pub(super) async fn push_handler(
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::http::tests::headers;

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
}
