//! IP addresses of trusted PPGs: parsing and comparison, where an IPv4-mapped IPv6
//! address (`::ffff:192.0.2.1`) is the IPv4 address, whichever side is written so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address with an IPv4-mapped IPv6 address turned into its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether two addresses are the same host address.
pub fn same(a: IpAddr, b: IpAddr) -> bool {
    canonical(a) == canonical(b)
}

/// Parses an address as written in a whitelist: IPv4, IPv6, or IPv6 in brackets.
pub fn parse(value: &str) -> Option<IpAddr> {
    let value = value.trim();
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    inner.parse().ok()
}

/// Parses an IPv4 address (a `PXADDRTYPE` of `IPV4`).
pub fn parse_v4(value: &str) -> Option<Ipv4Addr> {
    value.trim().parse().ok()
}

/// Parses an IPv6 address (a `PXADDRTYPE` of `IPV6`), brackets allowed.
pub fn parse_v6(value: &str) -> Option<Ipv6Addr> {
    match parse(value)? {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    }
}

/// Whether `origin` equals the address written in `entry`.
pub fn matches(origin: IpAddr, entry: &str) -> bool {
    parse(entry).is_some_and(|ip| same(origin, ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("192.0.2.1", "192.0.2.1", true),
            ("192.0.2.1", "192.0.2.2", false),
            ("192.0.2.1", "::ffff:192.0.2.1", true),
            ("::ffff:192.0.2.1", "192.0.2.1", true),
            ("::ffff:c000:201", "192.0.2.1", true),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1", true),
            // IPv4-compatible (deprecated) addresses are not IPv4-mapped.
            ("::192.0.2.1", "192.0.2.1", false),
            ("2001:db8::1", "2001:DB8:0:0:0:0:0:1", true),
            ("2001:db8::1", "[2001:db8::1]", true),
            ("2001:db8::1", "2001:db8::2", false),
            ("::1", "127.0.0.1", false),
            ("192.0.2.1", "not an address", false),
        ];
        for (origin, entry, expected) in cases {
            let origin: IpAddr = origin.parse().unwrap();
            assert_eq!(matches(origin, entry), *expected, "{origin} vs {entry}");
        }
        assert!(parse_v4("::1").is_none());
        assert!(parse_v6("192.0.2.1").is_none());
        assert_eq!(parse_v6("[::1]"), Some(Ipv6Addr::LOCALHOST));
    }
}
