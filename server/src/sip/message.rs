//! SIP messages on the wire (RFC 3261 section 7): parsing a request, framing on a
//! stream, and building a response that echoes what section 8.2.6.2 says it must.
//!
//! Only what the push ingress needs is interpreted: the request line, header fields
//! (long and compact names, folded lines, repeated fields), `Content-Length`, and the
//! body. Nothing here does I/O.

use std::fmt::Write as _;

/// Longest header section (request line and header fields) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields in one message.
const MAX_HEADERS: usize = 100;

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The Request-URI, as sent.
    pub uri: String,
    /// Header fields in order, names in their long form (see [`canonical_name`]).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// What came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response (the ingress sends no requests, so it ignores them).
    Response,
}

/// Why a message cannot be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not SIP, or broken: answer 400 when the request can be answered at all.
    #[error("{0}")]
    Malformed(String),
    /// The body is larger than allowed: answer 413.
    #[error("the body is {size} bytes, more than the {max} accepted")]
    TooLarge {
        /// The body size (from Content-Length).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The request line's version is not SIP/2.0: answer 505.
    #[error("SIP version {0:?} is not supported; only SIP/2.0")]
    Version(String),
}

impl ParseError {
    fn malformed(why: impl Into<String>) -> ParseError {
        ParseError::Malformed(why.into())
    }
}

/// The long form of a header name (RFC 3261 7.3.3 compact forms expanded), with the
/// capitalisation this module uses for lookups and output.
pub fn canonical_name(name: &str) -> String {
    let known = [
        ("v", "Via"),
        ("via", "Via"),
        ("f", "From"),
        ("from", "From"),
        ("t", "To"),
        ("to", "To"),
        ("i", "Call-ID"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
        ("l", "Content-Length"),
        ("content-length", "Content-Length"),
        ("c", "Content-Type"),
        ("content-type", "Content-Type"),
        ("m", "Contact"),
        ("contact", "Contact"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("e", "Content-Encoding"),
        ("max-forwards", "Max-Forwards"),
        ("p-asserted-identity", "P-Asserted-Identity"),
    ];
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .find(|(short, _)| *short == lower)
        .map_or(name.to_owned(), |(_, long)| (*long).to_owned())
}

impl Request {
    /// Every value of a header field (by long name, case-insensitively), in order.
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a header field.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    /// Checks the fields every request must carry (RFC 3261 8.1.1): Via, From, To,
    /// Call-ID, and a CSeq whose method is the request's.
    pub fn check_mandatory(&self) -> Result<(), ParseError> {
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if self.header(name).is_none_or(|v| v.trim().is_empty()) {
                return Err(ParseError::malformed(format!("no {name} header")));
            }
        }
        let cseq = self.header("CSeq").unwrap_or("");
        let mut parts = cseq.split_whitespace();
        let number = parts.next().and_then(|n| n.parse::<u32>().ok());
        let method = parts.next();
        if number.is_none() || method != Some(self.method.as_str()) || parts.next().is_some() {
            return Err(ParseError::malformed(format!(
                "CSeq {cseq:?} is not \"<number> {}\"",
                self.method
            )));
        }
        Ok(())
    }
}

/// Where a message ends in `buffer`, if it holds a whole one: the length of the head
/// (through the blank line) and of the body (from `Content-Length`, required on a
/// stream). Leading CRLFs (keep-alives, RFC 5626 4.4.1) must be skipped by the caller.
pub fn frame(buffer: &[u8], max_body: usize) -> Result<Option<(usize, usize)>, ParseError> {
    let Some(end) = find(buffer, b"\r\n\r\n") else {
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(ParseError::malformed(format!(
                "the header section is longer than {MAX_HEAD_BYTES} bytes"
            )));
        }
        return Ok(None);
    };
    let head_len = end + 4;
    if head_len > MAX_HEAD_BYTES {
        return Err(ParseError::malformed(format!(
            "the header section is longer than {MAX_HEAD_BYTES} bytes"
        )));
    }
    let head = std::str::from_utf8(&buffer[..end])
        .map_err(|_| ParseError::malformed("the header section is not UTF-8"))?;
    let headers = split_head(head)?.headers;
    let length = content_length(&headers)?
        .ok_or_else(|| ParseError::malformed("no Content-Length (required over TCP)"))?;
    if length > max_body {
        return Err(ParseError::TooLarge {
            size: length,
            max: max_body,
        });
    }
    Ok((buffer.len() >= head_len + length).then_some((head_len, length)))
}

/// Parses one message (a datagram, or a frame cut by [`frame`]). Without
/// `Content-Length` (allowed on UDP) the body is the rest of the input.
pub fn parse(input: &[u8], max_body: usize) -> Result<Message, ParseError> {
    let end = find(input, b"\r\n\r\n")
        .ok_or_else(|| ParseError::malformed("no blank line after the headers"))?;
    if end + 4 > MAX_HEAD_BYTES {
        return Err(ParseError::malformed(format!(
            "the header section is longer than {MAX_HEAD_BYTES} bytes"
        )));
    }
    let head = std::str::from_utf8(&input[..end])
        .map_err(|_| ParseError::malformed("the header section is not UTF-8"))?;
    let Head { start, headers } = split_head(head)?;
    if start.starts_with("SIP/") {
        return Ok(Message::Response);
    }
    let mut parts = start.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::malformed(format!(
            "the request line {start:?} is not \"METHOD URI SIP/2.0\""
        )));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) || uri.is_empty() {
        return Err(ParseError::malformed(format!(
            "the request line {start:?} is not \"METHOD URI SIP/2.0\""
        )));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::Version(version.to_owned()));
    }
    let rest = &input[end + 4..];
    let body = match content_length(&headers)? {
        Some(length) if length > max_body => {
            return Err(ParseError::TooLarge {
                size: length,
                max: max_body,
            });
        }
        Some(length) => rest
            .get(..length)
            .ok_or_else(|| {
                ParseError::malformed(format!(
                    "Content-Length is {length} but the body has {} bytes",
                    rest.len()
                ))
            })?
            .to_vec(),
        None if rest.len() > max_body => {
            return Err(ParseError::TooLarge {
                size: rest.len(),
                max: max_body,
            });
        }
        None => rest.to_vec(),
    };
    Ok(Message::Request(Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
        headers,
        body,
    }))
}

/// A header section: the start line and the header fields.
struct Head<'a> {
    start: &'a str,
    headers: Vec<(String, String)>,
}

/// The start line and the header fields of a head (without the blank line), folded
/// lines joined.
fn split_head(head: &str) -> Result<Head<'_>, ParseError> {
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = headers.last_mut() else {
                return Err(ParseError::malformed(
                    "a continuation line before any header",
                ));
            };
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::malformed(format!("header line {line:?} has no ':'")))?;
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ParseError::malformed(format!(
                "header name {name:?} is not a token"
            )));
        }
        if headers.len() == MAX_HEADERS {
            return Err(ParseError::malformed(format!(
                "more than {MAX_HEADERS} header fields"
            )));
        }
        headers.push((canonical_name(name), value.trim().to_owned()));
    }
    if headers
        .iter()
        .any(|(_, v)| v.chars().any(|c| c.is_control() && c != '\t'))
    {
        return Err(ParseError::malformed(
            "a header value has a control character",
        ));
    }
    Ok(Head { start, headers })
}

/// The Content-Length, if given (all copies must agree).
fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, ParseError> {
    let mut length = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "Content-Length") {
        let n: usize = value.parse().map_err(|_| {
            ParseError::malformed(format!("Content-Length {value:?} is not a number"))
        })?;
        if length.is_some_and(|l| l != n) {
            return Err(ParseError::malformed("Content-Length headers disagree"));
        }
        length = Some(n);
    }
    Ok(length)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The reason phrase of a status code this ingress sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        480 => "Temporarily Unavailable",
        500 => "Server Internal Error",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

/// A response to `request` (RFC 3261 8.2.6): every Via in order (the top one with
/// `received` when its sent-by is not `source`, and `rport` filled in when asked for,
/// RFC 3581), From, To (with `to_tag` added unless it has a tag), Call-ID, CSeq,
/// `extra` fields, and `Content-Length: 0`.
pub fn response(
    request: &Request,
    code: u16,
    source: std::net::SocketAddr,
    to_tag: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} {}\r\n", reason_phrase(code));
    let mut first = true;
    for via in request.all("Via") {
        let via = if first {
            first = false;
            stamp_via(via, source)
        } else {
            via.to_owned()
        };
        let _ = write!(out, "Via: {via}\r\n");
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(value) = request.header(name) {
            let value = if name == "To" && !has_tag(value) && code != 100 {
                format!("{value};tag={to_tag}")
            } else {
                value.to_owned()
            };
            let _ = write!(out, "{name}: {value}\r\n");
        }
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("Server: cpmstore\r\nContent-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// The top Via value (the first of a comma-separated list) with `received` and
/// `rport` set for the source of the request.
fn stamp_via(via: &str, source: std::net::SocketAddr) -> String {
    let (top, rest) = match via.split_once(',') {
        Some((top, rest)) => (top.trim(), Some(rest.trim())),
        None => (via.trim(), None),
    };
    let ip = crate::push::ip::canonical(source.ip());
    let mut params: Vec<String> = top.split(';').map(|p| p.trim().to_owned()).collect();
    let sent_by_host = params
        .first()
        .and_then(|proto_host| proto_host.split_whitespace().nth(1))
        .map(|hostport| {
            match hostport.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(""),
                None => hostport.split(':').next().unwrap_or(""),
            }
            .to_owned()
        })
        .unwrap_or_default();
    let mut stamped_received = false;
    for param in params.iter_mut().skip(1) {
        let name = param
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "rport" {
            *param = format!("rport={}", source.port());
        } else if name == "received" {
            stamped_received = true;
        }
    }
    let asked_rport = params.iter().skip(1).any(|p| p.starts_with("rport="));
    let same_host = sent_by_host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|host| crate::push::ip::canonical(host) == ip);
    if !stamped_received && (!same_host || asked_rport) {
        params.push(format!("received={ip}"));
    }
    let top = params.join(";");
    match rest {
        Some(rest) => format!("{top}, {rest}"),
        None => top,
    }
}

/// Whether a To/From value carries a `tag` parameter (after the URI).
fn has_tag(value: &str) -> bool {
    let params = match value.rfind('>') {
        Some(close) => &value[close + 1..],
        None => value.split_once(';').map_or("", |(_, p)| p),
    };
    params.split(';').any(|p| {
        p.trim()
            .split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("tag"))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MESSAGE: &str = "MESSAGE sip:alice@ims.example.net SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
        v: SIP/2.0/UDP proxy.example:5060;branch=z9hG4bKa, SIP/2.0/UDP ua.example;branch=z9hG4bKb\r\n\
        Max-Forwards: 70\r\n\
        f: <sip:ppg@operator.example>;tag=49583\r\n\
        t: <sip:alice@ims.example.net>\r\n\
        i: asd88asd77a@192.0.2.1\r\n\
        CSeq: 1 MESSAGE\r\n\
        P-Asserted-Identity: \"PPG\"\r\n <sip:ppg@operator.example>\r\n\
        P-Asserted-Identity: <tel:+358401234567>\r\n\
        c: text/plain\r\n\
        l: 5\r\n\
        \r\n\
        hello";

    fn request(text: &str) -> Request {
        match parse(text.as_bytes(), 1024).unwrap() {
            Message::Request(r) => r,
            Message::Response => panic!("a response"),
        }
    }

    #[test]
    fn parses_a_message_with_compact_and_folded_headers() {
        let r = request(MESSAGE);
        assert_eq!(r.method, "MESSAGE");
        assert_eq!(r.uri, "sip:alice@ims.example.net");
        assert_eq!(r.body, b"hello");
        assert_eq!(r.all("Via").count(), 2);
        assert_eq!(r.header("call-id"), Some("asd88asd77a@192.0.2.1"));
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert_eq!(
            r.all("P-Asserted-Identity").collect::<Vec<_>>(),
            ["\"PPG\" <sip:ppg@operator.example>", "<tel:+358401234567>"]
        );
        r.check_mandatory().unwrap();
    }

    #[test]
    fn malformed_inputs() {
        let cases: &[(&str, &str)] = &[
            ("", "blank line"),
            ("MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n", "blank line"),
            ("MESSAGE sip:a@b\r\n\r\n", "request line"),
            ("MESSAGE  sip:a@b SIP/2.0\r\n\r\n", "request line"),
            ("MESSAGE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n", "no ':'"),
            (
                "MESSAGE sip:a@b SIP/2.0\r\n continued\r\n\r\n",
                "continuation",
            ),
            ("MESSAGE sip:a@b SIP/2.0\r\nl: x\r\n\r\n", "Content-Length"),
            (
                "MESSAGE sip:a@b SIP/2.0\r\nl: 9\r\n\r\nabc",
                "Content-Length is 9",
            ),
            (
                "MESSAGE sip:a@b SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\nab",
                "disagree",
            ),
            ("MESSAGE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", "token"),
        ];
        for (input, expected) in cases {
            let e = parse(input.as_bytes(), 1024).unwrap_err();
            assert!(e.to_string().contains(expected), "{input:?}: {e}");
        }
        assert_eq!(
            parse(b"MESSAGE sip:a@b SIP/3.0\r\n\r\n", 10).unwrap_err(),
            ParseError::Version("SIP/3.0".into())
        );
        assert!(matches!(
            parse(b"MESSAGE sip:a@b SIP/2.0\r\nl: 11\r\n\r\nhello world", 10),
            Err(ParseError::TooLarge { size: 11, max: 10 })
        ));
        assert!(matches!(
            parse(b"MESSAGE sip:a@b SIP/2.0\r\n\r\nhello world", 10),
            Err(ParseError::TooLarge { .. })
        ));
        assert_eq!(
            parse(b"SIP/2.0 200 OK\r\n\r\n", 10).unwrap(),
            Message::Response
        );
        let long = format!(
            "MESSAGE sip:a@b SIP/2.0\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(parse(long.as_bytes(), 10).is_err());
    }

    #[test]
    fn mandatory_headers() {
        request(MESSAGE).check_mandatory().unwrap();
        for drop in ["Via:", "v:", "f:", "t:", "i:", "CSeq:"] {
            let text: String = MESSAGE
                .split_inclusive("\r\n")
                .filter(|l| !l.starts_with(drop))
                .collect();
            let r = request(&text);
            if drop == "Via:" {
                r.check_mandatory().unwrap(); // the v: line is still there
            } else if drop == "v:" {
                r.check_mandatory().unwrap();
            } else {
                assert!(r.check_mandatory().is_err(), "without {drop}");
            }
        }
        let wrong = MESSAGE.replace("CSeq: 1 MESSAGE", "CSeq: 1 OPTIONS");
        assert!(request(&wrong).check_mandatory().is_err());
    }

    #[test]
    fn framing_on_a_stream() {
        let text = MESSAGE.as_bytes();
        for cut in [0, 10, text.len() - 6, text.len() - 1] {
            assert_eq!(frame(&text[..cut], 1024).unwrap(), None, "cut at {cut}");
        }
        let whole = frame(text, 1024).unwrap().unwrap();
        assert_eq!(whole.0 + whole.1, text.len());
        let mut two = text.to_vec();
        two.extend_from_slice(text);
        assert_eq!(frame(&two, 1024).unwrap(), Some(whole));
        assert!(matches!(frame(text, 4), Err(ParseError::TooLarge { .. })));
        let no_length = MESSAGE.replace("l: 5\r\n", "");
        assert!(frame(no_length.as_bytes(), 1024).is_err());
        assert!(frame(&vec![b'a'; MAX_HEAD_BYTES + 1], 1024).is_err());
    }

    #[test]
    fn response_echoes_and_tags() {
        let r = request(MESSAGE);
        let source: std::net::SocketAddr = "192.0.2.1:5070".parse().unwrap();
        let out = String::from_utf8(response(&r, 200, source, "abc123", &[])).unwrap();
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[0], "SIP/2.0 200 OK");
        assert_eq!(
            lines[1],
            "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds"
        );
        assert_eq!(
            lines[2],
            "Via: SIP/2.0/UDP proxy.example:5060;branch=z9hG4bKa, SIP/2.0/UDP ua.example;branch=z9hG4bKb"
        );
        assert_eq!(lines[3], "From: <sip:ppg@operator.example>;tag=49583");
        assert_eq!(lines[4], "To: <sip:alice@ims.example.net>;tag=abc123");
        assert_eq!(lines[5], "Call-ID: asd88asd77a@192.0.2.1");
        assert_eq!(lines[6], "CSeq: 1 MESSAGE");
        assert!(out.ends_with("Content-Length: 0\r\n\r\n"));

        // An existing tag is kept; extra fields; received/rport stamped.
        let tagged = MESSAGE
            .replace(
                "t: <sip:alice@ims.example.net>",
                "t: sip:alice@ims.example.net;tag=x9",
            )
            .replace("192.0.2.1:5060;branch", "10.0.0.1:5060;rport;branch");
        let r = request(&tagged);
        let out = String::from_utf8(response(
            &r,
            405,
            source,
            "abc",
            &[("Allow", "MESSAGE, OPTIONS")],
        ))
        .unwrap();
        assert!(
            out.starts_with("SIP/2.0 405 Method Not Allowed\r\n"),
            "{out}"
        );
        assert!(
            out.contains("To: sip:alice@ims.example.net;tag=x9\r\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "Via: SIP/2.0/UDP 10.0.0.1:5060;rport=5070;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
            ),
            "{out}"
        );
        assert!(out.contains("Allow: MESSAGE, OPTIONS\r\n"));
    }

    #[test]
    fn tags() {
        assert!(has_tag("<sip:a@b>;tag=1"));
        assert!(has_tag("sip:a@b;TAG=1"));
        assert!(!has_tag("<sip:a@b;tag=1>"));
        assert!(!has_tag("<sip:a@b>"));
        assert!(!has_tag("\"x;tag=1\" <sip:a@b>"));
    }
}
