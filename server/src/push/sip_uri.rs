//! SIP, SIPS and tel URIs as push origins: parsing, `P-Asserted-Identity` values, and
//! URI equivalence.
//!
//! - SIP/SIPS URIs compare by RFC 3261 section 19.1.4: the scheme must match (sip is
//!   never sips); userinfo is case-sensitive; host, parameter names and values are
//!   case-insensitive; an escaped character equals its unescaped form unless it is
//!   reserved; a missing port differs from an explicit default port; `transport`,
//!   `user`, `ttl`, `method` and `maddr` must be in both or neither; other parameters
//!   must match when in both and are ignored when in one; headers must all be in both.
//! - tel URIs compare by RFC 3966 section 4: global and local numbers never match each
//!   other; digits are compared without visual separators; every parameter must be in
//!   both, `phone-context` compared as a domain or as digits, `ext` as digits; all
//!   comparisons are case-insensitive.
//!
//! URI equivalence is not transitive (parameters present in one URI only are ignored),
//! so [`Uri`] offers [`Uri::equivalent`] rather than `PartialEq`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A SIP, SIPS or tel URI.
#[derive(Debug, Clone)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:`.
    Tel(TelUri),
}

/// A `sip:` or `sips:` URI (RFC 3261 section 19.1).
#[derive(Debug, Clone)]
pub struct SipUri {
    secure: bool,
    /// The user part as written (validated).
    user: Option<String>,
    password: Option<String>,
    host: Host,
    port: Option<u16>,
    /// Names lowercased, values as written.
    params: Vec<(String, Option<String>)>,
    /// As written.
    headers: Vec<(String, String)>,
}

/// A `tel:` URI (RFC 3966).
#[derive(Debug, Clone)]
pub struct TelUri {
    global: bool,
    /// Digits without visual separators, `+` included for a global number.
    number: String,
    /// Names lowercased, values as written.
    params: Vec<(String, Option<String>)>,
}

/// The host of a SIP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name, lowercased.
    Name(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference (`[...]`).
    V6(Ipv6Addr),
}

/// A value that is not a usable URI or `P-Asserted-Identity`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?}: {why}")]
pub struct UriError {
    /// The offending text (shortened).
    pub input: String,
    /// What is wrong with it.
    pub why: String,
}

fn error(input: &str, why: impl Into<String>) -> UriError {
    let mut shown: String = input.chars().take(120).collect();
    if shown.len() < input.len() {
        shown.push('…');
    }
    UriError {
        input: shown,
        why: why.into(),
    }
}

// --- character classes (RFC 3261 section 25.1) ----------------------------------------

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)
}

const USER_UNRESERVED: &[u8] = b"&=+$,;?/";
const PASSWORD_EXTRA: &[u8] = b"&=+$,";
const PARAM_UNRESERVED: &[u8] = b"[]/:&+$";
const HNV_UNRESERVED: &[u8] = b"[]/?:+$";

/// Whether `s` is made of unreserved characters, `extra` and `%HH` escapes.
fn valid_chars(s: &str, extra: &[u8]) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if is_unreserved(b[i]) || extra.contains(&b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// The comparison form of an escaped string: `%HH` of an unreserved character becomes
/// the character, other escapes keep `%` with upper-case hex; letters are lowercased
/// when the component is case-insensitive. Expects [`valid_chars`] input.
fn normalize(s: &str, case_insensitive: bool) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = if b[i] == b'%' {
            b.get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        } else {
            None
        };
        match decoded {
            Some(byte) if is_unreserved(byte) => {
                out.push(fold(byte, case_insensitive));
                i += 3;
            }
            Some(byte) => {
                out.push_str(&format!("%{byte:02X}"));
                i += 3;
            }
            None => {
                out.push(fold(b[i], case_insensitive));
                i += 1;
            }
        }
    }
    out
}

fn fold(b: u8, case_insensitive: bool) -> char {
    char::from(if case_insensitive {
        b.to_ascii_lowercase()
    } else {
        b
    })
}

// --- parsing --------------------------------------------------------------------------

impl Uri {
    /// Parses a `sip:`, `sips:` or `tel:` URI (surrounding blanks ignored).
    pub fn parse(input: &str) -> Result<Uri, UriError> {
        let text = input.trim();
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(error(input, "not a URI (no scheme)"));
        };
        if scheme.eq_ignore_ascii_case("sip") {
            parse_sip(false, rest, input).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            parse_sip(true, rest, input).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            parse_tel(rest, input).map(Uri::Tel)
        } else {
            Err(error(input, "only sip:, sips: and tel: URIs are accepted"))
        }
    }

    /// `"sip"`, `"sips"` or `"tel"`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Uri::Sip(sip) if sip.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
        }
    }

    /// Whether the two URIs are equivalent (RFC 3261 19.1.4, RFC 3966 section 4).
    pub fn equivalent(&self, other: &Uri) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Tel(a), Uri::Tel(b)) => a.equivalent(b),
            _ => false,
        }
    }
}

impl FromStr for Uri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uri::parse(s)
    }
}

fn parse_sip(secure: bool, rest: &str, input: &str) -> Result<SipUri, UriError> {
    // '@' may appear neither in the host, nor (unescaped) in parameters or headers, so
    // the first one ends the userinfo.
    let (userinfo, after) = match rest.split_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if user.is_empty() || !valid_chars(user, USER_UNRESERVED) {
                return Err(error(input, "malformed user part"));
            }
            if password.is_some_and(|p| !valid_chars(p, PASSWORD_EXTRA)) {
                return Err(error(input, "malformed password"));
            }
            (Some(user.to_owned()), password.map(str::to_owned))
        }
    };
    let (before_headers, headers) = match after.split_once('?') {
        Some((before, headers)) => (before, Some(headers)),
        None => (after, None),
    };
    let (hostport, params) = match before_headers.split_once(';') {
        Some((hostport, params)) => (hostport, Some(params)),
        None => (before_headers, None),
    };
    let (host, port) = parse_hostport(hostport, input)?;
    let params = match params {
        Some(params) => parse_params(params, PARAM_UNRESERVED, input)?,
        None => Vec::new(),
    };
    let headers = match headers {
        Some(headers) => parse_headers(headers, input)?,
        None => Vec::new(),
    };
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

fn parse_hostport(hostport: &str, input: &str) -> Result<(Host, Option<u16>), UriError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(error(input, "unterminated IPv6 reference"));
        };
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| error(input, "malformed IPv6 reference"))?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(error(input, "junk after the IPv6 reference")),
            },
        };
        (Host::V6(addr), port)
    } else {
        let (name, port) = match hostport.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (hostport, None),
        };
        (parse_host(name, input)?, port)
    };
    let port = match port {
        None => None,
        Some(port) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error(input, "malformed port"));
            }
            Some(
                port.parse::<u16>()
                    .map_err(|_| error(input, "port out of range"))?,
            )
        }
    };
    Ok((host, port))
}

fn parse_host(name: &str, input: &str) -> Result<Host, UriError> {
    if name.is_empty() {
        return Err(error(input, "no host"));
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return name
            .parse::<Ipv4Addr>()
            .map(Host::V4)
            .map_err(|_| error(input, "malformed IPv4 address"));
    }
    let labels = name.strip_suffix('.').unwrap_or(name);
    let ok = labels.len() <= 253
        && labels.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !ok {
        return Err(error(input, "malformed host name"));
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

fn parse_params(
    params: &str,
    extra: &[u8],
    input: &str,
) -> Result<Vec<(String, Option<String>)>, UriError> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for param in params.split(';') {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (param, None),
        };
        if name.is_empty() || !valid_chars(name, extra) {
            return Err(error(input, format!("malformed parameter {param:?}")));
        }
        if value.is_some_and(|v| v.is_empty() || !valid_chars(v, extra)) {
            return Err(error(input, format!("malformed parameter {param:?}")));
        }
        let name = normalize(name, true);
        if out.iter().any(|(n, _)| *n == name) {
            return Err(error(input, format!("parameter {name} appears twice")));
        }
        out.push((name, value.map(str::to_owned)));
    }
    Ok(out)
}

fn parse_headers(headers: &str, input: &str) -> Result<Vec<(String, String)>, UriError> {
    headers
        .split('&')
        .map(|header| {
            let Some((name, value)) = header.split_once('=') else {
                return Err(error(input, format!("malformed header {header:?}")));
            };
            if name.is_empty()
                || !valid_chars(name, HNV_UNRESERVED)
                || !valid_chars(value, HNV_UNRESERVED)
            {
                return Err(error(input, format!("malformed header {header:?}")));
            }
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

fn is_visual_separator(c: char) -> bool {
    matches!(c, '-' | '.' | '(' | ')')
}

fn parse_tel(rest: &str, input: &str) -> Result<TelUri, UriError> {
    let (number, params) = match rest.split_once(';') {
        Some((number, params)) => (number, Some(params)),
        None => (rest, None),
    };
    let (global, digits) = match number.strip_prefix('+') {
        Some(digits) => (true, digits),
        None => (false, number),
    };
    let stripped: String = digits
        .chars()
        .filter(|&c| !is_visual_separator(c))
        .collect();
    let valid = if global {
        !stripped.is_empty() && stripped.bytes().all(|b| b.is_ascii_digit())
    } else {
        !stripped.is_empty()
            && stripped
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
    };
    if !valid
        || !digits
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || is_visual_separator(c) || c == '*' || c == '#')
    {
        return Err(error(input, "malformed telephone number"));
    }
    let params = match params {
        Some(params) => parse_params(params, PARAM_UNRESERVED, input)?,
        None => Vec::new(),
    };
    for (name, value) in &params {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(error(input, format!("malformed parameter name {name:?}")));
        }
        if matches!(name.as_str(), "phone-context" | "ext" | "isub") && value.is_none() {
            return Err(error(input, format!("{name} needs a value")));
        }
    }
    if !global && !params.iter().any(|(n, _)| n == "phone-context") {
        return Err(error(input, "a local number needs a phone-context"));
    }
    let number = if global {
        format!("+{stripped}")
    } else {
        stripped.to_ascii_lowercase()
    };
    Ok(TelUri {
        global,
        number,
        params,
    })
}

// --- equivalence ----------------------------------------------------------------------

/// Parameters that make two SIP URIs differ when only one of them has it.
const SIP_PARAMS_NEEDED_IN_BOTH: [&str; 5] = ["transport", "user", "ttl", "method", "maddr"];

impl SipUri {
    /// Whether this is a `sips:` URI.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The user part as written.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port, if written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The value of a URI parameter (name case-insensitive); `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        let name = name.to_ascii_lowercase();
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// RFC 3261 section 19.1.4 equivalence.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        let userinfo = |u: &SipUri| {
            (
                u.user.as_deref().map(|s| normalize(s, false)),
                u.password.as_deref().map(|s| normalize(s, false)),
            )
        };
        if self.secure != other.secure
            || userinfo(self) != userinfo(other)
            || self.host != other.host
            || self.port != other.port
        {
            return false;
        }
        let value = |v: &Option<String>| v.as_deref().map(|v| normalize(v, true));
        for (name, mine) in &self.params {
            match other.params.iter().find(|(n, _)| n == name) {
                Some((_, theirs)) => {
                    if value(mine) != value(theirs) {
                        return false;
                    }
                }
                None => {
                    if SIP_PARAMS_NEEDED_IN_BOTH.contains(&name.as_str()) {
                        return false;
                    }
                }
            }
        }
        for (name, _) in &other.params {
            let in_mine = self.params.iter().any(|(n, _)| n == name);
            if !in_mine && SIP_PARAMS_NEEDED_IN_BOTH.contains(&name.as_str()) {
                return false;
            }
        }
        let headers = |u: &SipUri| {
            let mut h: Vec<(String, String)> = u
                .headers
                .iter()
                .map(|(n, v)| (normalize(n, true), normalize(v, false)))
                .collect();
            h.sort();
            h
        };
        headers(self) == headers(other)
    }
}

impl TelUri {
    /// Whether the number is global (`+...`).
    pub fn is_global(&self) -> bool {
        self.global
    }

    /// The number without visual separators (with its `+` if global).
    pub fn number(&self) -> &str {
        &self.number
    }

    fn compared_params(&self) -> Vec<(String, Option<String>)> {
        let mut params: Vec<(String, Option<String>)> = self
            .params
            .iter()
            .map(|(name, value)| {
                let value = value.as_deref().map(|v| match name.as_str() {
                    "phone-context" if v.starts_with('+') => {
                        v.chars().filter(|&c| !is_visual_separator(c)).collect()
                    }
                    "ext" => v
                        .chars()
                        .filter(|&c| !is_visual_separator(c))
                        .collect::<String>()
                        .to_ascii_lowercase(),
                    _ => normalize(v, true),
                });
                (name.clone(), value)
            })
            .collect();
        params.sort();
        params
    }

    /// RFC 3966 section 4 equivalence.
    pub fn equivalent(&self, other: &TelUri) -> bool {
        self.global == other.global
            && self.number == other.number
            && self.compared_params() == other.compared_params()
    }
}

// --- display --------------------------------------------------------------------------

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::V4(v4) => write!(f, "{v4}"),
            Host::V6(v6) => write!(f, "[{v6}]"),
        }
    }
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[(String, Option<String>)]) -> fmt::Result {
    for (name, value) in params {
        match value {
            Some(value) => write!(f, ";{name}={value}")?,
            None => write!(f, ";{name}")?,
        }
    }
    Ok(())
}

/// The normalised form stored in whitelists: lower-case scheme, host and parameter
/// names; the user part, values and headers as written.
impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(sip) => {
                write!(f, "{}:", self.scheme())?;
                if let Some(user) = &sip.user {
                    f.write_str(user)?;
                    if let Some(password) = &sip.password {
                        write!(f, ":{password}")?;
                    }
                    f.write_str("@")?;
                }
                write!(f, "{}", sip.host)?;
                if let Some(port) = sip.port {
                    write!(f, ":{port}")?;
                }
                write_params(f, &sip.params)?;
                for (i, (name, value)) in sip.headers.iter().enumerate() {
                    let sep = if i == 0 { '?' } else { '&' };
                    write!(f, "{sep}{name}={value}")?;
                }
                Ok(())
            }
            Uri::Tel(tel) => {
                write!(f, "tel:{}", tel.number)?;
                write_params(f, &tel.params)
            }
        }
    }
}

// --- P-Asserted-Identity --------------------------------------------------------------

/// Parses one `P-Asserted-Identity` header value (RFC 3325 section 9.1): one or two
/// comma-separated identities, each `"Display" <uri>`, `Display <uri>`, `<uri>` or a
/// bare URI, with at most one sip/sips and at most one tel URI.
///
/// RFC 3325 defines no header parameters, so `;...` after a bare URI is read as URI
/// parameters; text after `>` is refused.
pub fn parse_pai(header: &str) -> Result<Vec<Uri>, UriError> {
    parse_pai_values(&[header])
}

/// Parses every `P-Asserted-Identity` header of a request together, with the same
/// limits as [`parse_pai`] over all of them.
pub fn parse_pai_values<S: AsRef<str>>(headers: &[S]) -> Result<Vec<Uri>, UriError> {
    let mut uris = Vec::new();
    for header in headers {
        let header = header.as_ref();
        for value in split_values(header)? {
            if value.trim().is_empty() {
                return Err(error(header, "empty identity"));
            }
            uris.push(parse_identity(value)?);
            if uris.len() > 2 {
                return Err(error(header, "more than two identities"));
            }
        }
    }
    if uris.is_empty() {
        return Err(error("", "no identity"));
    }
    let sip = uris.iter().filter(|u| matches!(u, Uri::Sip(_))).count();
    if sip > 1 {
        return Err(error(&joined(headers), "more than one sip/sips identity"));
    }
    if uris.len() - sip > 1 {
        return Err(error(&joined(headers), "more than one tel identity"));
    }
    Ok(uris)
}

fn joined<S: AsRef<str>>(headers: &[S]) -> String {
    headers
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits at commas outside quoted strings and angle brackets.
fn split_values(header: &str) -> Result<Vec<&str>, UriError> {
    let mut values = Vec::new();
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    let mut start = 0;
    for (i, c) in header.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' if !angle => quoted = true,
            '<' if !angle => angle = true,
            '>' if angle => angle = false,
            ',' if !angle => {
                values.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted || angle {
        return Err(error(header, "unterminated quoted string or <URI>"));
    }
    values.push(&header[start..]);
    Ok(values)
}

fn parse_identity(value: &str) -> Result<Uri, UriError> {
    let value = value.trim();
    let uri = if let Some(open) = find_unquoted_angle(value) {
        let display = value[..open].trim();
        check_display_name(display, value)?;
        let inner = &value[open + 1..];
        let Some(close) = inner.find('>') else {
            return Err(error(value, "unterminated <URI>"));
        };
        if !inner[close + 1..].trim().is_empty() {
            return Err(error(value, "text after the <URI>"));
        }
        &inner[..close]
    } else {
        value
    };
    Uri::parse(uri)
}

fn find_unquoted_angle(value: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in value.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
        } else if c == '"' {
            quoted = true;
        } else if c == '<' {
            return Some(i);
        }
    }
    None
}

/// A display name is a quoted string or tokens separated by blanks (RFC 3261 25.1).
fn check_display_name(display: &str, value: &str) -> Result<(), UriError> {
    if display.is_empty() {
        return Ok(());
    }
    if let Some(inner) = display.strip_prefix('"') {
        return match inner.strip_suffix('"') {
            Some(_) => Ok(()),
            None => Err(error(value, "malformed display name")),
        };
    }
    let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~ \t".contains(&b);
    if display.bytes().all(token) {
        Ok(())
    } else {
        Err(error(value, "malformed display name"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn eq(a: &str, b: &str) -> bool {
        let a = Uri::parse(a).unwrap_or_else(|e| panic!("{e}"));
        let b = Uri::parse(b).unwrap_or_else(|e| panic!("{e}"));
        let forward = a.equivalent(&b);
        assert_eq!(forward, b.equivalent(&a), "symmetry");
        forward
    }

    /// RFC 3261 section 19.1.4: the listed equivalent pairs.
    #[test]
    fn rfc3261_equivalent_pairs() {
        let pairs = [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ];
        for (a, b) in pairs {
            assert!(eq(a, b), "{a} should equal {b}");
        }
    }

    /// RFC 3261 section 19.1.4: the listed non-equivalent pairs.
    #[test]
    fn rfc3261_unequal_pairs() {
        let pairs = [
            // different usernames
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            // can resolve to different ports
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            // can resolve to different transports
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            // can resolve to different port and transports
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            // different header component
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            // even though that's what phone21.boxesbybob.com resolves to
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ];
        for (a, b) in pairs {
            assert!(!eq(a, b), "{a} should differ from {b}");
        }
    }

    #[test]
    fn more_sip_rules() {
        let cases: &[(&str, &str, bool)] = &[
            // sip is never sips
            (
                "sip:ppg@operator.example",
                "sips:ppg@operator.example",
                false,
            ),
            (
                "SIPS:ppg@operator.example",
                "sips:ppg@OPERATOR.example",
                true,
            ),
            // escapes: unreserved characters equal their escapes, reserved ones do not
            ("sip:a%2Db@x.example", "sip:a-b@x.example", true),
            ("sip:a%3bb@x.example", "sip:a;b@x.example", false),
            ("sip:a%3bb@x.example", "sip:a%3Bb@x.example", true),
            ("sip:%41lice@x.example", "sip:alice@x.example", false),
            (
                "sip:alice:secret@x.example",
                "sip:alice:Secret@x.example",
                false,
            ),
            ("sip:alice:secret@x.example", "sip:alice@x.example", false),
            ("sip:x.example", "sip:alice@x.example", false),
            // user, ttl, method, maddr, transport: only in one never matches
            ("sip:a@x.example;user=phone", "sip:a@x.example", false),
            ("sip:a@x.example;ttl=1", "sip:a@x.example", false),
            ("sip:a@x.example;method=INVITE", "sip:a@x.example", false),
            (
                "sip:a@x.example;maddr=239.255.255.1",
                "sip:a@x.example",
                false,
            ),
            ("sip:a@x.example;lr", "sip:a@x.example", true),
            (
                "sip:a@x.example;user=phone",
                "sip:a@x.example;user=ip",
                false,
            ),
            (
                "sip:a@x.example;user=PHONE",
                "sip:a@x.example;USER=phone",
                true,
            ),
            ("sip:a@x.example;foo=1", "sip:a@x.example;foo=2", false),
            ("sip:a@x.example;foo=%41", "sip:a@x.example;FOO=a", true),
            // ports and hosts
            ("sip:a@x.example:5060", "sip:a@x.example:5060", true),
            ("sip:a@x.example:5061", "sip:a@x.example:5060", false),
            ("sip:a@[2001:db8::1]", "sip:a@[2001:DB8:0::1]", true),
            ("sip:a@[2001:db8::1]:5060", "sip:a@[2001:db8::1]", false),
            ("sip:a@192.0.2.1", "sip:a@192.0.2.1", true),
            // headers: names case-insensitive, all must be in both
            (
                "sip:a@x.example?Subject=hi",
                "sip:a@x.example?subject=hi",
                true,
            ),
            (
                "sip:a@x.example?subject=hi",
                "sip:a@x.example?subject=Hi",
                false,
            ),
            ("sip:a@x.example?a=1&b=2", "sip:a@x.example?a=1", false),
            // a sip URI is never a tel URI
            (
                "sip:+358401234567@x.example;user=phone",
                "tel:+358401234567",
                false,
            ),
        ];
        for (a, b, expected) in cases {
            assert_eq!(eq(a, b), *expected, "{a} vs {b}");
        }
    }

    #[test]
    fn tel_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("tel:+358-40-123-4567", "tel:+358401234567", true),
            ("tel:+1(201)555.0123", "TEL:+12015550123", true),
            ("tel:+358401234567", "tel:+358401234568", false),
            // global and local numbers never match
            (
                "tel:+1234;phone-context=+1",
                "tel:1234;phone-context=+1",
                false,
            ),
            // local numbers: phone-context as digits or as a domain
            (
                "tel:7042;phone-context=+1-201-555",
                "tel:70-42;phone-context=+1201555",
                true,
            ),
            (
                "tel:7042;phone-context=EXAMPLE.com",
                "tel:7042;phone-context=example.COM",
                true,
            ),
            (
                "tel:7042;phone-context=a.example",
                "tel:7042;phone-context=b.example",
                false,
            ),
            (
                "tel:7a42;phone-context=x.example",
                "tel:7A42;phone-context=x.example",
                true,
            ),
            // parameters: all must be in both, any order, case-insensitive
            (
                "tel:+1234;ext=1-2;isub=AB",
                "tel:+1234;ISUB=ab;ext=12",
                true,
            ),
            ("tel:+1234;ext=1", "tel:+1234", false),
            ("tel:+1234;foo=bar", "tel:+1234", false),
            ("tel:+1234;foo=BAR", "tel:+1234;FOO=bar", true),
        ];
        for (a, b, expected) in cases {
            assert_eq!(eq(a, b), *expected, "{a} vs {b}");
        }
    }

    #[test]
    fn malformed_uris() {
        let bad = [
            "",
            "alice@atlanta.com",
            "http://ppg.example/",
            "sip:",
            "sip:@x.example",
            "sip:a b@x.example",
            "sip:a@",
            "sip:a@x.example:",
            "sip:a@x.example:99999",
            "sip:a@x.example:5o6",
            "sip:a@-x.example",
            "sip:a@x..example",
            "sip:a@[2001:db8::1",
            "sip:a@[zz]",
            "sip:a@256.1.1.1",
            "sip:a@x.example;",
            "sip:a@x.example;a=1;A=2",
            "sip:a@x.example?nameonly",
            "sip:a%4@x.example",
            "tel:",
            "tel:+",
            "tel:+12a4",
            "tel:1234",
            "tel:+1234;ext",
            "tel:+1234;bad_name=1",
        ];
        for input in bad {
            assert!(Uri::parse(input).is_err(), "{input} should be refused");
        }
    }

    #[test]
    fn display_is_normalised() {
        let uri = Uri::parse(" SIP:Alice@AtLanTa.CoM:5060;Transport=TCP?Subject=x ").unwrap();
        assert_eq!(
            uri.to_string(),
            "sip:Alice@atlanta.com:5060;transport=TCP?Subject=x"
        );
        let uri = Uri::parse("TEL:+358-40-123;EXT=1").unwrap();
        assert_eq!(uri.to_string(), "tel:+35840123;ext=1");
        assert_eq!(
            Uri::parse("sips:[2001:DB8::1]").unwrap().to_string(),
            "sips:[2001:db8::1]"
        );
    }

    #[test]
    fn p_asserted_identity() {
        let uris =
            parse_pai(r#""Cullen, Jennings" <sip:fluffy@cisco.com>, tel:+14085264000"#).unwrap();
        assert_eq!(uris.len(), 2);
        assert_eq!(uris[0].to_string(), "sip:fluffy@cisco.com");
        assert_eq!(uris[1].to_string(), "tel:+14085264000");

        let uris = parse_pai("<sip:ppg@operator.example;user=ip>").unwrap();
        assert!(uris[0].equivalent(&Uri::parse("sip:ppg@operator.example;user=ip").unwrap()));
        let uris = parse_pai("PPG  Gateway <sips:ppg@operator.example>").unwrap();
        assert_eq!(uris[0].scheme(), "sips");
        let uris = parse_pai(" sip:ppg@operator.example ").unwrap();
        assert_eq!(uris.len(), 1);
        // A quoted display name may hold '<', '>' and ','.
        let uris = parse_pai(r#""a <b>, \"c\"" <tel:+1234>"#).unwrap();
        assert_eq!(uris[0].to_string(), "tel:+1234");
        // Two header fields count together.
        let uris = parse_pai_values(&["<sip:a@x.example>", "<tel:+1234>"]).unwrap();
        assert_eq!(uris.len(), 2);

        let bad = [
            "",
            " , ",
            "<sip:a@x.example>, <sip:b@x.example>",
            "<tel:+1>, <tel:+2>",
            "<sip:a@x.example>, <tel:+1>, <sips:b@x.example>",
            "<sip:a@x.example",
            "\"unterminated <sip:a@x.example>",
            "<sip:a@x.example>;tag=1",
            "<mailto:a@x.example>",
            "a@b <sip:a@x.example>",
        ];
        for header in bad {
            assert!(parse_pai(header).is_err(), "{header:?} should be refused");
        }
        assert!(parse_pai_values(&["<sip:a@x.example>", "<sips:b@x.example>"]).is_err());
    }
}
