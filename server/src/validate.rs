//! Validation of what a subscription system or a push names: usernames, subscriber
//! addresses and whitelist contexts (PROVURL).
//!
//! Shared by provisioning (`admin`, for the CLI and the admin API) and push ingress
//! (`push::ingress`, for HTTP and SIP), so neither imports the other for it. Each
//! failure is an [`InvalidInput`] whose message says what is wrong and how to mend it;
//! `admin` turns it into `AdminError::Invalid` (exit 5, HTTP 400).

/// Input that is not a valid username, address or context. The message is one line
/// and says how to mend it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// Longest username, in bytes.
pub const MAX_USERNAME_BYTES: usize = 255;

/// Longest provisioning context (PROVURL), in bytes.
pub const MAX_CONTEXT_BYTES: usize = 1024;

/// Longest E.164 number, in digits (ITU-T E.164 section 6).
const MAX_E164_DIGITS: usize = 15;

/// Longest local tel number, in digits.
const MAX_LOCAL_DIGITS: usize = 32;

/// Characters RFC 3966 allows as visual separators in a phone number (plus space, which
/// people type).
const VISUAL_SEPARATORS: &[char] = &['-', '.', '(', ')', ' '];

/// Checks a username: 1..=255 bytes, no control characters, no whitespace, no `/`, not
/// starting with `.`.
pub fn validate_username(username: &str) -> Result<(), InvalidInput> {
    let problem = if username.is_empty() {
        Some("it is empty")
    } else if username.len() > MAX_USERNAME_BYTES {
        Some("it is longer than 255 bytes")
    } else if username.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if username.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else if username.contains('/') {
        Some("it contains '/'")
    } else if username.starts_with('.') {
        Some("it starts with '.'")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(InvalidInput(format!(
            "invalid username {}: {problem}; a username is 1 to 255 bytes without whitespace, \
             control characters or '/', and does not start with '.'",
            shorten(username)
        ))),
    }
}

/// The context name: `None` or blank is the default context (`""`).
pub fn context_name(context: Option<&str>) -> Result<String, InvalidInput> {
    let context = context.map(str::trim).unwrap_or("");
    if context.len() > MAX_CONTEXT_BYTES {
        return Err(InvalidInput(format!(
            "the context (PROVURL) is longer than {MAX_CONTEXT_BYTES} bytes"
        )));
    }
    if context.chars().any(char::is_control) {
        return Err(InvalidInput(
            "the context (PROVURL) contains a control character".into(),
        ));
    }
    Ok(context.to_owned())
}

/// The name quoted and escaped for a one-line message, cut to a readable length.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() > MAX_CHARS {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}...")
    } else {
        format!("{text:?}")
    }
}

/// Normalises a subscriber address (INTERFACES.md 1):
/// - `tel:` - visual separators `- . ( )` and spaces removed; `+` and up to 15 digits
///   (global, E.164) or digits only (local). `TEL:+358 40 123-4567` -> `tel:+358401234567`.
/// - `sip:` / `sips:` - scheme and host lowercased, user part kept as given; a user part
///   and a host are required; URI parameters, headers and passwords are refused.
///   `SIP:alice@IMS.Example.NET` -> `sip:alice@ims.example.net`.
///
/// Anything else is invalid input.
pub fn normalize_address(input: &str) -> Result<String, InvalidInput> {
    let address = input.trim();
    let Some((scheme, rest)) = address.split_once(':') else {
        return Err(invalid_address(
            input,
            "it has no URI scheme; write tel:+<number> or sip:user@host",
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "tel" => normalize_tel(input, rest),
        scheme @ ("sip" | "sips") => normalize_sip(input, scheme, rest),
        _ => Err(invalid_address(
            input,
            "only tel:, sip: and sips: addresses are supported",
        )),
    }
}

fn invalid_address(input: &str, why: &str) -> InvalidInput {
    InvalidInput(format!("invalid address {}: {why}", shorten(input)))
}

fn normalize_tel(input: &str, number: &str) -> Result<String, InvalidInput> {
    let compact: String = number
        .chars()
        .filter(|c| !VISUAL_SEPARATORS.contains(c))
        .collect();
    let (global, digits) = match compact.strip_prefix('+') {
        Some(digits) => (true, digits),
        None => (false, compact.as_str()),
    };
    let max = if global {
        MAX_E164_DIGITS
    } else {
        MAX_LOCAL_DIGITS
    };
    if digits.is_empty() || digits.len() > max || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_address(
            input,
            "a tel address is tel:+ followed by the international number (up to 15 digits) \
             or tel: followed by digits; only - . ( ) and spaces may separate them, \
             and parameters are not accepted",
        ));
    }
    Ok(format!("tel:{}{digits}", if global { "+" } else { "" }))
}

fn normalize_sip(input: &str, scheme: &str, rest: &str) -> Result<String, InvalidInput> {
    let sip_error = |why: &str| invalid_address(input, why);
    let Some((user, hostport)) = rest.rsplit_once('@') else {
        return Err(sip_error("a SIP address needs a user part: sip:user@host"));
    };
    if user.is_empty() {
        return Err(sip_error("the user part before '@' is empty"));
    }
    if user.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(sip_error(
            "the user part contains whitespace or control characters",
        ));
    }
    if user.contains(':') {
        return Err(sip_error(
            "passwords in SIP URIs (user:password@host) are not accepted",
        ));
    }
    if hostport.contains([';', '?']) {
        return Err(sip_error(
            "URI parameters (;...) and headers (?...) are not part of an address; remove them",
        ));
    }
    let (host, port) = split_host_port(hostport).ok_or_else(|| {
        sip_error("the host is not a domain name or IP address (with an optional :port)")
    })?;
    let host = host.to_ascii_lowercase();
    Ok(match port {
        Some(port) => format!("{scheme}:{user}@{host}:{port}"),
        None => format!("{scheme}:{user}@{host}"),
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, with a syntactically valid host.
fn split_host_port(hostport: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let host = &hostport[..v6.len() + 2];
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        };
        let labels_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !labels_ok {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(port) => Some(port.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    Some((host, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        let long = "a".repeat(255);
        let too_long = "a".repeat(256);
        let cases: &[(&str, bool)] = &[
            ("alice", true),
            ("alice@example.net", true),
            ("+358401234567", true),
            ("a.b_c-d", true),
            ("ÄÖ", true),
            (&long, true),
            ("", false),
            (&too_long, false),
            ("al ice", false),
            ("alice\t", false),
            ("al\u{1}ice", false),
            ("al\u{7f}ice", false),
            ("al\u{85}ice", false),
            ("a/b", false),
            (".hidden", false),
            ("\u{a0}x", false),
        ];
        for (name, ok) in cases {
            let result = validate_username(name);
            assert_eq!(result.is_ok(), *ok, "{name:?}: {result:?}");
            if let Err(e) = result {
                assert!(!e.to_string().contains('\n'));
            }
        }
    }

    #[test]
    fn contexts() {
        assert_eq!(context_name(None).unwrap(), "");
        assert_eq!(context_name(Some("  ")).unwrap(), "");
        assert_eq!(
            context_name(Some(" http://prov.example/a ")).unwrap(),
            "http://prov.example/a"
        );
        assert!(context_name(Some("a\nb")).is_err());
        assert!(context_name(Some(&"x".repeat(MAX_CONTEXT_BYTES + 1))).is_err());
    }

    #[test]
    fn addresses() {
        let cases: &[(&str, Option<&str>)] = &[
            ("tel:+358401234567", Some("tel:+358401234567")),
            ("TEL:+358 40 123-4567", Some("tel:+358401234567")),
            ("tel:+1 (555) 010.0000", Some("tel:+15550100000")),
            ("tel:0401234567", Some("tel:0401234567")),
            (" tel:+358401234567 ", Some("tel:+358401234567")),
            ("tel:", None),
            ("tel:+", None),
            ("tel:+358-40-12a", None),
            ("tel:+1234567890123456", None),
            ("tel:+358;phone-context=x", None),
            ("tel:++358", None),
            (
                "sip:alice@ims.example.net",
                Some("sip:alice@ims.example.net"),
            ),
            (
                "SIP:Alice@IMS.Example.NET",
                Some("sip:Alice@ims.example.net"),
            ),
            (
                "sips:bob@Example.com:5061",
                Some("sips:bob@example.com:5061"),
            ),
            (
                "sip:+358401234567@ims.example.net",
                Some("sip:+358401234567@ims.example.net"),
            ),
            ("sip:carol@[2001:DB8::1]", Some("sip:carol@[2001:db8::1]")),
            ("sip:carol@192.0.2.1:5060", Some("sip:carol@192.0.2.1:5060")),
            ("sip:ims.example.net", None),
            ("sip:@ims.example.net", None),
            ("sip:alice@", None),
            ("sip:alice@ims..net", None),
            ("sip:alice@ims.example.net;user=phone", None),
            ("sip:alice@ims.example.net?subject=x", None),
            ("sip:alice:pw@ims.example.net", None),
            ("sip:al ice@ims.example.net", None),
            ("sip:alice@host:0", None),
            ("sip:alice@host:99999", None),
            ("sip:alice@[zz]", None),
            ("mailto:alice@example.net", None),
            ("alice@example.net", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = normalize_address(input);
            match want {
                Some(want) => assert_eq!(got.as_deref().ok(), Some(*want), "{input:?}: {got:?}"),
                None => {
                    let err = got.expect_err(input);
                    assert!(err.to_string().starts_with("invalid address"), "{input:?}");
                }
            }
        }
    }
}
