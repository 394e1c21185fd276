//! The whitelist decision (INTERFACES.md 6.2): a pure function of what the subscriber
//! has provisioned and the push's origin.
//!
//! A whitelist belongs to a subscriber and a provisioning context: the default one, or
//! the PROVURL a push names with `X-Wap-Push-ProvURL`. The sender chooses the context,
//! so naming one must never widen what is accepted (OMA Push 8.3.1: a push that
//! matches no entry of the whitelist or other connectivity configuration is rejected):
//!
//! - No whitelist in any context ([`Provisioning::Unprovisioned`]) → accept.
//! - Whitelists, but none for the push's context ([`Provisioning::OtherContexts`]) →
//!   reject (`unknown_context`). This covers a ProvURL the subscriber has no
//!   provisioning for, and a push naming no context when only named contexts are
//!   provisioned.
//! - The context's whitelist ([`Provisioning::Whitelist`], even with no entries) →
//!   accept only on a match.
//! - A PPG's IP address matches `ip` entries and the resolved addresses of `fqdn`
//!   entries; an IPv4-mapped IPv6 address equals the IPv4 address.
//! - An SMSC address matches `e164` entries of role `smsc` by `<NPI><TON><digits>`
//!   prefix ([`super::e164`]).
//! - SIP `P-Asserted-Identity` URIs match `uri` entries by URI equivalence
//!   ([`super::sip_uri`]).
//! - A push without a verified origin matches nothing.

use std::fmt;
use std::net::IpAddr;

use cpmstore_storage::{WhitelistEntry, WhitelistKind};
use serde::Serialize;

use super::e164;
use super::ip;
use super::sip_uri::{self, Uri};
use super::whitelist::{ROLE_PPG, ROLE_SMSC};

/// Where a push comes from, as far as the ingress believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A PPG: the TCP peer, or `X-Push-Origin-PPG` from a trusted gateway.
    Ppg(IpAddr),
    /// An SMSC, from `X-Push-Origin-SMSC` of a trusted gateway.
    Smsc {
        /// The address as given (`+35809503401`, `0401234567`).
        address: String,
        /// Type of number, when given.
        ton: Option<u8>,
        /// Numbering-plan indicator, when given.
        npi: Option<u8>,
    },
    /// OTA-SIP: the `P-Asserted-Identity` header values of a trusted peer.
    Sip {
        /// Each `P-Asserted-Identity` header field value.
        pai: Vec<String>,
    },
    /// Nothing believable (e.g. SIP from an untrusted peer).
    Unverified,
}

impl Origin {
    /// `ppg`, `smsc`, `sip` or `none`: the `X-Push-Origin-Type` and the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Ppg(_) => "ppg",
            Origin::Smsc { .. } => "smsc",
            Origin::Sip { .. } => "sip",
            Origin::Unverified => "none",
        }
    }
}

/// The origin for logs and `X-Push-Origin`: the IP, the SMSC address (with `;ton=`
/// `;npi=` when given), or the P-Asserted-Identity values joined by `, `.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Ppg(ip) => write!(f, "{ip}"),
            Origin::Smsc { address, ton, npi } => {
                f.write_str(address)?;
                if let Some(ton) = ton {
                    write!(f, ";ton={ton}")?;
                }
                if let Some(npi) = npi {
                    write!(f, ";npi={npi}")?;
                }
                Ok(())
            }
            Origin::Sip { pai } => f.write_str(&pai.join(", ")),
            Origin::Unverified => f.write_str("unverified"),
        }
    }
}

/// What a subscriber has provisioned, as it bears on one push (whose context is the
/// PROVURL it names, or the default context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    /// No whitelist in any context.
    Unprovisioned,
    /// Whitelists in other contexts, none in the push's.
    OtherContexts,
    /// The whitelist of the push's context (possibly with no entries).
    Whitelist(Vec<WhitelistEntry>),
}

/// Why the decision went as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No whitelist for the subscriber in any context: accepted.
    NotProvisioned,
    /// An entry matched: accepted.
    Matched,
    /// The context's whitelist exists and nothing in it matched: rejected.
    NoMatch,
    /// The subscriber has whitelists, but none for the push's context: rejected.
    UnknownContext,
}

impl Reason {
    /// `not_provisioned`, `matched`, `no_match` or `unknown_context` (log field and
    /// metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotProvisioned => "not_provisioned",
            Reason::Matched => "matched",
            Reason::NoMatch => "no_match",
            Reason::UnknownContext => "unknown_context",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome for one push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Deliver the push?
    pub accepted: bool,
    /// Why.
    pub reason: Reason,
    /// The entry that matched, if one did.
    pub matched: Option<WhitelistEntry>,
}

/// Decides whether a push from `origin` passes what the subscriber has provisioned for
/// the push's context.
pub fn decide(provisioning: &Provisioning, origin: &Origin) -> Decision {
    let entries = match provisioning {
        Provisioning::Unprovisioned => {
            return Decision {
                accepted: true,
                reason: Reason::NotProvisioned,
                matched: None,
            };
        }
        Provisioning::OtherContexts => {
            return Decision {
                accepted: false,
                reason: Reason::UnknownContext,
                matched: None,
            };
        }
        Provisioning::Whitelist(entries) => entries,
    };
    match find(entries, origin) {
        Some(entry) => Decision {
            accepted: true,
            reason: Reason::Matched,
            matched: Some(entry.clone()),
        },
        None => Decision {
            accepted: false,
            reason: Reason::NoMatch,
            matched: None,
        },
    }
}

fn find<'a>(entries: &'a [WhitelistEntry], origin: &Origin) -> Option<&'a WhitelistEntry> {
    match origin {
        Origin::Ppg(addr) => entries.iter().find(|e| {
            e.role == ROLE_PPG
                && match e.kind {
                    WhitelistKind::Ip => ip::matches(*addr, &e.value),
                    WhitelistKind::Fqdn => e.resolved.iter().any(|r| ip::matches(*addr, r)),
                    _ => false,
                }
        }),
        Origin::Smsc { address, ton, npi } => {
            let key = e164::origin_key(address, *ton, *npi).ok()?;
            entries.iter().find(|e| {
                e.kind == WhitelistKind::E164
                    && e.role == ROLE_SMSC
                    && e164::matches(&key, &e.value)
            })
        }
        Origin::Sip { pai } => {
            let asserted = sip_uri::parse_pai_values(pai).ok()?;
            entries.iter().find(|e| {
                e.kind == WhitelistKind::Uri
                    && Uri::parse(&e.value)
                        .is_ok_and(|uri| asserted.iter().any(|a| a.equivalent(&uri)))
            })
        }
        Origin::Unverified => None,
    }
}

/// Reads `X-Push-Origin-SMSC: ADDR[;ton=N][;npi=N]`; anything malformed gives
/// [`Origin::Unverified`] (see [`try_parse_smsc_header`] for the reason).
pub fn parse_smsc_header(value: &str) -> Origin {
    try_parse_smsc_header(value).unwrap_or(Origin::Unverified)
}

/// Reads `X-Push-Origin-SMSC: ADDR[;ton=N][;npi=N]` (parameter names case-insensitive,
/// blanks around the parts ignored), checking the address and the TON/NPI ranges.
pub fn try_parse_smsc_header(value: &str) -> Result<Origin, e164::E164Error> {
    let bad = |why| e164::E164Error {
        value: value.to_owned(),
        why,
    };
    let mut parts = value.split(';');
    let address = parts.next().unwrap_or("").trim().to_owned();
    let (mut ton, mut npi) = (None, None);
    for part in parts {
        let (name, number) = part
            .split_once('=')
            .ok_or_else(|| bad("parameters are ton=N and npi=N"))?;
        let number: u8 = number
            .trim()
            .parse()
            .map_err(|_| bad("ton and npi are small numbers"))?;
        let slot = match name.trim().to_ascii_lowercase().as_str() {
            "ton" => &mut ton,
            "npi" => &mut npi,
            _ => return Err(bad("parameters are ton=N and npi=N")),
        };
        if slot.replace(number).is_some() {
            return Err(bad("ton or npi given twice"));
        }
    }
    // Validates the address and the ranges.
    e164::origin_key(&address, ton, npi)?;
    Ok(Origin::Smsc { address, ton, npi })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn entry(kind: &str, value: &str, role: &str) -> WhitelistEntry {
        WhitelistEntry {
            kind: kind.parse().unwrap(),
            value: value.into(),
            resolved: Vec::new(),
            role: role.into(),
        }
    }

    fn whitelist() -> Vec<WhitelistEntry> {
        let mut fqdn = entry("fqdn", "localhost", "ppg");
        fqdn.resolved = vec!["127.0.0.1".into(), "::1".into()];
        vec![
            entry("ip", "215.221.51.5", "ppg"),
            entry("ip", "2001:db8::1", "ppg"),
            entry("ip", "::ffff:198.51.100.7", "ppg"),
            fqdn,
            entry("e164", "+358", "smsc"),
            entry("e164", "1244", "smsc"),
            entry("e164", "+4479", "ppg"),
            entry("uri", "sip:ppg@atlanta.com", "ppg"),
            entry("uri", "tel:+14085264000", "ppg"),
        ]
    }

    fn ppg(ip: &str) -> Origin {
        Origin::Ppg(ip.parse().unwrap())
    }

    fn sip(values: &[&str]) -> Origin {
        Origin::Sip {
            pai: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    /// Origins of every kind, including ones the full whitelist trusts.
    fn every_kind() -> Vec<Origin> {
        vec![
            ppg("192.0.2.1"),
            ppg("215.221.51.5"),
            ppg("127.0.0.1"),
            parse_smsc_header("+35809503401"),
            sip(&["<sip:ppg@atlanta.com>"]),
            sip(&["garbage"]),
            Origin::Unverified,
        ]
    }

    #[test]
    fn by_provisioning() {
        // (what the subscriber has for the push's context, accepted, reason) for
        // every origin: only a whitelist of the context itself can let a push in once
        // anything is provisioned.
        let cases = [
            (Provisioning::Unprovisioned, true, Reason::NotProvisioned),
            (Provisioning::OtherContexts, false, Reason::UnknownContext),
            (Provisioning::Whitelist(Vec::new()), false, Reason::NoMatch),
        ];
        for (provisioning, accepted, reason) in cases {
            for origin in every_kind() {
                let d = decide(&provisioning, &origin);
                assert_eq!(
                    (d.accepted, d.reason, d.matched),
                    (accepted, reason, None),
                    "{provisioning:?} {origin}"
                );
            }
        }
    }

    #[test]
    fn unknown_context_rejects_what_another_context_trusts() {
        // The default context trusts 215.221.51.5; a push naming a context with no
        // whitelist is judged as OtherContexts, whatever its origin.
        let default = Provisioning::Whitelist(whitelist());
        assert!(decide(&default, &ppg("215.221.51.5")).accepted);
        let d = decide(&Provisioning::OtherContexts, &ppg("215.221.51.5"));
        assert_eq!((d.accepted, d.reason), (false, Reason::UnknownContext));
        assert_eq!(Reason::UnknownContext.to_string(), "unknown_context");
    }

    #[test]
    fn table() {
        let list = Provisioning::Whitelist(whitelist());
        // (origin, accepted, value of the matching entry)
        let cases: Vec<(Origin, bool, Option<&str>)> = vec![
            (ppg("215.221.51.5"), true, Some("215.221.51.5")),
            (ppg("::ffff:215.221.51.5"), true, Some("215.221.51.5")),
            (ppg("215.221.51.6"), false, None),
            (ppg("2001:db8::1"), true, Some("2001:db8::1")),
            (ppg("2001:db8:0:0::1"), true, Some("2001:db8::1")),
            (ppg("2001:db8::2"), false, None),
            // A mapped entry matches the plain IPv4 peer.
            (ppg("198.51.100.7"), true, Some("::ffff:198.51.100.7")),
            // FQDN entries match through their resolved addresses.
            (ppg("127.0.0.1"), true, Some("localhost")),
            (ppg("::1"), true, Some("localhost")),
            (ppg("::ffff:127.0.0.1"), true, Some("localhost")),
            (ppg("127.0.0.2"), false, None),
            // SMSC prefixes.
            (parse_smsc_header("+35809503401"), true, Some("+358")),
            (parse_smsc_header("+358 (0)9 503 401"), true, Some("+358")),
            (
                parse_smsc_header("35809503401;ton=1;npi=1"),
                true,
                Some("+358"),
            ),
            (parse_smsc_header("+35909503401"), false, None),
            (parse_smsc_header("35809503401"), false, None),
            (parse_smsc_header("4412345;ton=2"), true, Some("1244")),
            (parse_smsc_header("4412345;ton=0"), false, None),
            // An E.164 PPG entry is no SMSC.
            (parse_smsc_header("+447911123456"), false, None),
            (parse_smsc_header("not a number"), false, None),
            // SIP P-Asserted-Identity.
            (
                sip(&["<sip:ppg@atlanta.com>"]),
                true,
                Some("sip:ppg@atlanta.com"),
            ),
            (
                sip(&["\"PPG\" <sip:ppg@ATLANTA.com;lr>"]),
                true,
                Some("sip:ppg@atlanta.com"),
            ),
            (sip(&["<sip:PPG@atlanta.com>"]), false, None),
            (sip(&["<sips:ppg@atlanta.com>"]), false, None),
            (sip(&["<sip:ppg@atlanta.com:5060>"]), false, None),
            (sip(&["<sip:ppg@atlanta.com;transport=tcp>"]), false, None),
            (
                sip(&["<sip:other@atlanta.com>, <tel:+1-408-526-4000>"]),
                true,
                Some("tel:+14085264000"),
            ),
            (
                sip(&["<sip:other@atlanta.com>", "tel:+14085264000"]),
                true,
                Some("tel:+14085264000"),
            ),
            // Three identities, or two SIP ones, are malformed: nothing matches.
            (
                sip(&["<sip:ppg@atlanta.com>, <sip:x@y.example>"]),
                false,
                None,
            ),
            (sip(&[]), false, None),
            (Origin::Unverified, false, None),
        ];
        for (origin, accepted, matched) in cases {
            let d = decide(&list, &origin);
            assert_eq!(d.accepted, accepted, "{origin:?}");
            assert_eq!(
                d.reason,
                if accepted {
                    Reason::Matched
                } else {
                    Reason::NoMatch
                }
            );
            assert_eq!(
                d.matched.as_ref().map(|e| e.value.as_str()),
                matched,
                "{origin:?}"
            );
        }
    }

    #[test]
    fn smsc_header() {
        assert_eq!(
            try_parse_smsc_header(" +358 40 ; TON=1 ;npi= 1").unwrap(),
            Origin::Smsc {
                address: "+358 40".into(),
                ton: Some(1),
                npi: Some(1)
            }
        );
        assert_eq!(
            parse_smsc_header("0401234567;ton=2"),
            Origin::Smsc {
                address: "0401234567".into(),
                ton: Some(2),
                npi: None
            }
        );
        for bad in [
            "",
            "+",
            "abc",
            "+358;ton=8",
            "+358;npi=16",
            "+358;ton",
            "+358;foo=1",
            "+358;ton=1;ton=1",
            "+358;ton=x",
        ] {
            assert!(try_parse_smsc_header(bad).is_err(), "{bad}");
            assert_eq!(parse_smsc_header(bad), Origin::Unverified);
        }
        assert_eq!(parse_smsc_header("+358;ton=1").to_string(), "+358;ton=1");
    }

    #[test]
    fn decision_serializes() {
        let d = decide(&Provisioning::Whitelist(whitelist()), &ppg("215.221.51.5"));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["accepted"], true);
        assert_eq!(json["reason"], "matched");
        assert_eq!(json["matched"]["value"], "215.221.51.5");
        let d = decide(&Provisioning::OtherContexts, &ppg("215.221.51.5"));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["reason"], "unknown_context");
    }
}
