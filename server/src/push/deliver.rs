//! Delivery of an accepted push (INTERFACES.md 6.5): an RFC 5322 message stored in the
//! subscriber's `push.deliver_to` mailbox through `Store::append`, the path IMAP APPEND
//! takes, so the change bus tells every IDLE session on every node at once.
//!
//! The message:
//!
//! ```text
//! From: <the origin>            (a PPG as ppg@[IP], an SMSC as <tel:...>, SIP as the PAI)
//! To: <the subscriber address>
//! Date: ...
//! Message-ID: <...@cpmstore>
//! Subject: Push notification
//! X-Push-Origin-Type: ppg|smsc|sip
//! X-Push-Origin: <value>
//! X-Wap-Application-Id: ...     (when the push carried one)
//! MIME-Version: 1.0
//! Content-Type: <the push's own>
//! Content-Transfer-Encoding: 7bit|8bit|base64
//!
//! <the body: text as it came (CRLF line ends), anything else base64>
//! ```

use std::net::IpAddr;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use cpmstore_storage::{Account, Error as StorageError, Flags, NewMailbox, NewMessage, Store};
use rand::RngCore as _;
use serde::Serialize;

use super::decide::Origin;
use super::sip_uri;

/// The Content-Type of a push that came without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Longest header value we copy from a request (Content-Type, application id, PAI).
const MAX_HEADER_VALUE: usize = 900;

/// Longest line RFC 5322 allows, without CRLF.
const MAX_LINE: usize = 998;

/// A push to deliver.
#[derive(Debug, Clone)]
pub struct Push<'a> {
    /// Where it came from (as believed and accepted).
    pub origin: &'a Origin,
    /// The subscriber address it was sent to (normalised URI, or the username).
    pub to: &'a str,
    /// The Content-Type of the body, checked by [`content_type`].
    pub content_type: &'a str,
    /// `X-Wap-Application-Id`, if the push had one.
    pub application_id: Option<&'a str>,
    /// The content.
    pub body: &'a [u8],
}

/// Where a push was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivered {
    /// The mailbox name.
    pub mailbox: String,
    /// The UID it got.
    pub uid: u32,
}

/// Why a push could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The subscriber's quota would be exceeded.
    #[error("the subscriber's mailbox is over quota")]
    OverQuota,
    /// Storage failed.
    #[error("cannot store the push: {0}")]
    Storage(#[from] StorageError),
}

/// Checks a push's Content-Type: `type/subtype` tokens and parameters, printable
/// ASCII, at most 900 bytes. `None` or blank gives [`DEFAULT_CONTENT_TYPE`]. The value
/// is returned trimmed, as it will be written.
pub fn content_type(raw: Option<&str>) -> Result<String, String> {
    let value = raw.map(str::trim).unwrap_or("");
    if value.is_empty() {
        return Ok(DEFAULT_CONTENT_TYPE.to_owned());
    }
    if value.len() > MAX_HEADER_VALUE {
        return Err(format!(
            "the Content-Type is longer than {MAX_HEADER_VALUE} bytes"
        ));
    }
    if !value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        return Err("the Content-Type has a character that is not printable ASCII".into());
    }
    let essence = value.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => Ok(value.to_owned()),
        _ => Err(format!("the Content-Type {value:?} is not type/subtype")),
    }
}

/// The message for a push, as stored.
pub fn compose(push: &Push<'_>, now: DateTime<Utc>, message_id: &str) -> Vec<u8> {
    let mut out = String::with_capacity(512 + push.body.len() * 4 / 3);
    let mut header = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&header_value(value));
        out.push_str("\r\n");
    };
    header("From", &from(push.origin));
    header("To", &format!("<{}>", push.to));
    header("Date", &now.to_rfc2822());
    header("Message-ID", &format!("<{message_id}>"));
    header("Subject", "Push notification");
    // Only OTA-SIP has pushes without a verified origin (an untrusted peer's, accepted
    // for a subscriber with no whitelist): their type is still sip.
    let kind = match push.origin {
        Origin::Unverified => "sip",
        origin => origin.kind(),
    };
    header("X-Push-Origin-Type", kind);
    header("X-Push-Origin", &push.origin.to_string());
    if let Some(id) = push.application_id.map(str::trim).filter(|i| !i.is_empty()) {
        header("X-Wap-Application-Id", id);
    }
    header("MIME-Version", "1.0");
    header("Content-Type", push.content_type);
    let text = as_text(push.content_type, push.body);
    let encoding = match &text {
        Some(text) if text.is_ascii() => "7bit",
        Some(_) => "8bit",
        None => "base64",
    };
    header("Content-Transfer-Encoding", encoding);
    out.push_str("\r\n");
    match text {
        Some(text) => {
            out.push_str(&text);
            if !text.is_empty() && !text.ends_with("\r\n") {
                out.push_str("\r\n");
            }
        }
        None => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(push.body);
            // 76-character lines (RFC 2045 6.8); base64 is ASCII, so byte chunks are
            // whole characters.
            for line in encoded.as_bytes().chunks(76) {
                out.push_str(&String::from_utf8_lossy(line));
                out.push_str("\r\n");
            }
        }
    }
    out.into_bytes()
}

/// The body as text with CRLF line ends, when it can travel as 7bit/8bit: a `text/*`
/// type, UTF-8, no NUL, no line longer than RFC 5322 allows. Otherwise `None` (base64).
fn as_text(content_type: &str, body: &[u8]) -> Option<String> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !essence.starts_with("text/") {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    if text.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() > MAX_LINE || line.contains('\r') {
            return None;
        }
        out.push_str(line);
        if lines.peek().is_some() {
            out.push_str("\r\n");
        }
    }
    Some(out)
}

/// A header value on one line: CR, LF and other controls become spaces; cut at
/// [`MAX_HEADER_VALUE`] bytes (on a character boundary).
fn header_value(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_HEADER_VALUE {
        let mut end = MAX_HEADER_VALUE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The `From:` of a push: `"PPG 192.0.2.1" <ppg@[192.0.2.1]>` (an RFC 5321 address
/// literal), `<tel:+35809503401>` for an SMSC, the P-Asserted-Identity values for SIP.
fn from(origin: &Origin) -> String {
    match origin {
        Origin::Ppg(ip) => {
            let literal = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("IPv6:{v6}"),
            };
            format!("\"PPG {ip}\" <ppg@[{literal}]>")
        }
        Origin::Smsc { address, .. } => {
            let number: String = address
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect();
            format!("\"SMSC {number}\" <tel:{number}>")
        }
        Origin::Sip { pai } => {
            // The URIs alone (display names may hold anything), in the order given.
            match sip_uri::parse_pai_values(pai) {
                Ok(uris) if !uris.is_empty() => uris
                    .iter()
                    .map(|u| format!("<{}>", pai_uri_text(pai, u)))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => pai.join(", "),
            }
        }
        Origin::Unverified => "<unverified>".to_owned(),
    }
}

/// The text of a PAI URI as it was written (between `<` and `>`, or the whole
/// addr-spec), found again in the header values; falls back to the scheme alone.
fn pai_uri_text(pai: &[String], uri: &sip_uri::Uri) -> String {
    let scheme = uri.scheme();
    pai.iter()
        .flat_map(|v| v.split(','))
        .map(|part| {
            let part = part.trim();
            match (part.find('<'), part.rfind('>')) {
                (Some(open), Some(close)) if open < close => &part[open + 1..close],
                _ => part,
            }
        })
        .find(|text| {
            text.get(..scheme.len() + 1)
                .is_some_and(|s| s.eq_ignore_ascii_case(&format!("{scheme}:")))
                && sip_uri::Uri::parse(text).is_ok_and(|parsed| parsed.equivalent(uri))
        })
        .map_or_else(|| format!("{scheme}:"), str::to_owned)
}

/// A fresh Message-ID (without the angle brackets).
pub fn message_id(now: DateTime<Utc>) -> String {
    let mut random = [0u8; 9];
    rand::rngs::OsRng.fill_bytes(&mut random);
    format!(
        "{}.{}@push.cpmstore",
        now.timestamp_millis(),
        hex::encode(random)
    )
}

/// Stores an accepted push in the subscriber's `deliver_to` mailbox (created, if it is
/// missing, like any other mailbox) and returns where it went.
pub async fn deliver(
    store: &dyn Store,
    account: &Account,
    deliver_to: &str,
    push: &Push<'_>,
) -> Result<Delivered, DeliverError> {
    let now = Utc::now();
    let content = compose(push, now, &message_id(now));
    let mailbox = match store.mailbox(account.id, deliver_to).await {
        Ok(mailbox) => mailbox,
        Err(StorageError::NotFound(_)) => {
            let created = store
                .create_mailbox(
                    account.id,
                    NewMailbox {
                        name: deliver_to.to_owned(),
                        special_use: None,
                        subscribed: true,
                    },
                )
                .await;
            match created {
                Ok(mailbox) => mailbox,
                // Another push created it meanwhile.
                Err(StorageError::AlreadyExists(_)) => {
                    store.mailbox(account.id, deliver_to).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let appended = store
        .append(
            account.id,
            mailbox.id,
            NewMessage {
                content,
                flags: Flags::default(),
                internal_date: Some(now.timestamp()),
                internal_date_tz: 0,
            },
        )
        .await
        .map_err(|e| match e {
            StorageError::OverQuota => DeliverError::OverQuota,
            e => DeliverError::Storage(e),
        })?;
    Ok(Delivered {
        mailbox: mailbox.name,
        uid: appended.uid,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(None).unwrap(), DEFAULT_CONTENT_TYPE);
        assert_eq!(content_type(Some("  ")).unwrap(), DEFAULT_CONTENT_TYPE);
        assert_eq!(
            content_type(Some(" text/plain; charset=utf-8 ")).unwrap(),
            "text/plain; charset=utf-8"
        );
        assert!(content_type(Some("application/vnd.wap.sic")).is_ok());
        for bad in [
            "text",
            "text/",
            "/plain",
            "te xt/plain",
            "text/plain\r\nX: y",
            "tëxt/plain",
        ] {
            assert!(content_type(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(content_type(Some(&format!("text/plain; x={}", "a".repeat(1000)))).is_err());
    }

    #[test]
    fn text_push_from_a_ppg() {
        let origin = Origin::Ppg("127.0.0.1".parse().unwrap());
        let push = Push {
            origin: &origin,
            to: "tel:+358401234567",
            content_type: "text/plain; charset=utf-8",
            application_id: Some("x-wap-application:push.sia"),
            body: "Hello\nwörld".as_bytes(),
        };
        let message = compose(&push, at(), "1.abc@push.cpmstore");
        let message = text(&message);
        let (head, body) = message.split_once("\r\n\r\n").unwrap();
        let expected = [
            "From: \"PPG 127.0.0.1\" <ppg@[127.0.0.1]>",
            "To: <tel:+358401234567>",
            "Date: Tue, 14 Nov 2023 22:13:20 +0000",
            "Message-ID: <1.abc@push.cpmstore>",
            "Subject: Push notification",
            "X-Push-Origin-Type: ppg",
            "X-Push-Origin: 127.0.0.1",
            "X-Wap-Application-Id: x-wap-application:push.sia",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
        ];
        assert_eq!(head.split("\r\n").collect::<Vec<_>>(), expected);
        assert_eq!(body, "Hello\r\nwörld\r\n");

        // mail-parser (what FETCH uses) reads it back.
        let parsed = mail_parser::MessageParser::default()
            .parse(message.as_bytes())
            .unwrap();
        assert_eq!(parsed.subject(), Some("Push notification"));
        assert_eq!(parsed.body_text(0).unwrap(), "Hello\r\nwörld\r\n");
    }

    #[test]
    fn binary_push_is_base64() {
        let origin = Origin::Smsc {
            address: "+35809503401".into(),
            ton: Some(1),
            npi: Some(1),
        };
        let body: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let push = Push {
            origin: &origin,
            to: "alice",
            content_type: "application/vnd.wap.sic",
            application_id: None,
            body: &body,
        };
        let message = compose(&push, at(), "x@push.cpmstore");
        let message = text(&message);
        assert!(message.contains("From: \"SMSC +35809503401\" <tel:+35809503401>\r\n"));
        assert!(message.contains("X-Push-Origin-Type: smsc\r\n"));
        assert!(message.contains("X-Push-Origin: +35809503401;ton=1;npi=1\r\n"));
        assert!(message.contains("Content-Transfer-Encoding: base64\r\n"));
        assert!(!message.contains("X-Wap-Application-Id"));
        let (_, encoded) = message.split_once("\r\n\r\n").unwrap();
        assert!(encoded.lines().all(|l| l.len() <= 76));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.replace("\r\n", ""))
            .unwrap();
        assert_eq!(decoded, body);
        let parsed = mail_parser::MessageParser::default()
            .parse(message.as_bytes())
            .unwrap();
        assert_eq!(parsed.attachment(0).map(|a| a.contents()), Some(&body[..]));
    }

    #[test]
    fn text_that_cannot_travel_as_text_is_base64() {
        let origin = Origin::Ppg("::1".parse().unwrap());
        let long = "a".repeat(MAX_LINE + 1);
        for body in [
            &b"nul\0byte"[..],
            &[0xff, 0xfe],
            long.as_bytes(),
            b"bare\rcr",
        ] {
            let push = Push {
                origin: &origin,
                to: "alice",
                content_type: "text/plain",
                application_id: None,
                body,
            };
            let message = compose(&push, at(), "x@y");
            let message = String::from_utf8(message).unwrap();
            assert!(
                message.contains("Content-Transfer-Encoding: base64"),
                "{body:?}"
            );
            assert!(message.contains("From: \"PPG ::1\" <ppg@[IPv6:::1]>"));
        }
    }

    #[test]
    fn sip_origin_and_hostile_header_values() {
        let origin = Origin::Sip {
            pai: vec!["\"PPG\r\nBcc: x\" <sip:ppg@operator.example>, <tel:+358401234567>".into()],
        };
        let push = Push {
            origin: &origin,
            to: "sip:alice@ims.example.net",
            content_type: "text/plain",
            application_id: Some("evil\r\nBcc: y"),
            body: b"hi",
        };
        let message = String::from_utf8(compose(&push, at(), "x@y")).unwrap();
        assert!(
            message.contains("From: <sip:ppg@operator.example>, <tel:+358401234567>\r\n"),
            "{message}"
        );
        assert!(message.contains("X-Push-Origin-Type: sip\r\n"));
        assert!(!message.contains("\r\nBcc:"), "{message}");
        assert!(message.contains("To: <sip:alice@ims.example.net>\r\n"));
        assert!(message.ends_with("\r\n\r\nhi\r\n"));
    }

    #[test]
    fn message_ids_differ() {
        let now = Utc::now();
        assert_ne!(message_id(now), message_id(now));
        assert!(message_id(now).ends_with("@push.cpmstore"));
    }
}
