//! The push whitelist carried by a provisioning document (INTERFACES.md 6.1, OMA Push
//! 2.2 section 8.3.1 with the SIP extension).
//!
//! Every `APPLICATION` whose `APPID` is `urn:oma:mo:oma-push:1.0` (or the spelling
//! `oma:mo:oma-push:1.0` of the specification's own example) contributes:
//! - each `ADDR`: a PPG identified by a sip/sips/tel URI (kind `uri`);
//! - each `TO-PROXY`: every `PXLOGICAL` whose `PROXY-ID` equals it, and of each of its
//!   `PXPHYSICAL`s the `PXADDR` by `PXADDRTYPE` (`IPV4`, the default, and `IPV6` give
//!   kind `ip`; `E164` gives kind `e164`) and the `PXADDR-FQDN` (kind `fqdn`, resolved
//!   by [`resolve_fqdns`]), all with role `ppg`;
//! - each `TO-NAPID`: every `NAPDEF` whose `NAPID` equals it, its `NAP-ADDRESS` as a
//!   trusted SMSC (kind `e164`, role `smsc`).
//!
//! Values are compared trimmed; everything else in the document is ignored. A reference
//! to a missing `PXLOGICAL` or `NAPDEF`, an address that cannot identify an origin, or
//! more entries than allowed rejects the whole document.

use std::time::Duration;

use cpmstore_storage::{WhitelistEntry, WhitelistKind};

use super::e164;
use super::ip;
use super::sip_uri::Uri;
use super::tree::{Characteristic, DocError, ProvDoc};
use super::{wbxml, xml};

/// The APPIDs of the push whitelist application.
pub const PUSH_APPIDS: [&str; 2] = ["urn:oma:mo:oma-push:1.0", "oma:mo:oma-push:1.0"];

/// Entry roles, as stored: a push proxy gateway.
pub const ROLE_PPG: &str = "ppg";
/// A short message service centre.
pub const ROLE_SMSC: &str = "smsc";

/// How the document is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decide from the first byte: WBXML starts with its version (0x00-0x03).
    Auto,
    /// `text/vnd.wap.connectivity-xml`, `application/xml`.
    Xml,
    /// `application/vnd.wap.connectivity-wbxml`.
    Wbxml,
}

impl Format {
    /// The format a Content-Type names; `None` for one that is neither XML nor WBXML
    /// provisioning (`application/octet-stream` and the like may use [`Format::Auto`]).
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/vnd.wap.connectivity-wbxml" => Some(Format::Wbxml),
            "text/vnd.wap.connectivity-xml" | "application/xml" | "text/xml" => Some(Format::Xml),
            _ => None,
        }
    }

    /// The concrete format of `input` (only [`Format::Auto`] looks at it).
    pub fn detect(self, input: &[u8]) -> Format {
        match self {
            Format::Auto => match input.first() {
                Some(0x00..=0x03) => Format::Wbxml,
                _ => Format::Xml,
            },
            other => other,
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    /// `auto`, `xml` or `wbxml` (the CLI's `--format`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Format::Auto),
            "xml" => Ok(Format::Xml),
            "wbxml" => Ok(Format::Wbxml),
            _ => Err(format!("unknown format {s:?} (auto, xml or wbxml)")),
        }
    }
}

/// Why a document gives no whitelist. Every variant is invalid input (CLI exit 5, HTTP
/// 400); the previous whitelist must stay as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not well-formed XML/WBXML, or not a provisioning document.
    #[error("malformed provisioning document ({format}): {error}")]
    Malformed {
        /// "XML" or "WBXML".
        format: &'static str,
        /// Where and what.
        error: DocError,
    },
    /// A `TO-PROXY` that names no `PXLOGICAL`.
    #[error("TO-PROXY {0:?} names no PXLOGICAL with that PROXY-ID")]
    DanglingProxy(String),
    /// A `TO-NAPID` that names no `NAPDEF`.
    #[error("TO-NAPID {0:?} names no NAPDEF with that NAPID")]
    DanglingNapId(String),
    /// An address that cannot be an entry.
    #[error("{what}: {why}")]
    BadAddress {
        /// Which parameter, of what.
        what: String,
        /// Why it is refused.
        why: String,
    },
    /// More entries than `push.max_whitelist_entries`.
    #[error(
        "the document gives at least {count} whitelist entries, more than the {max} allowed (push.max_whitelist_entries)"
    )]
    TooManyEntries {
        /// Entries counted (after removing duplicates) when the limit was passed.
        count: usize,
        /// The configured limit.
        max: usize,
    },
}

/// Decodes a provisioning document in the given format.
pub fn parse_document(input: &[u8], format: Format) -> Result<ProvDoc, LoadError> {
    match format.detect(input) {
        Format::Wbxml => wbxml::parse(input).map_err(|error| LoadError::Malformed {
            format: "WBXML",
            error,
        }),
        _ => xml::parse(input).map_err(|error| LoadError::Malformed {
            format: "XML",
            error,
        }),
    }
}

/// Decodes a document and extracts its whitelist: what `whitelist load` and the admin
/// API store (after [`resolve_fqdns`]).
pub fn load(
    input: &[u8],
    format: Format,
    max_entries: usize,
) -> Result<Vec<WhitelistEntry>, LoadError> {
    let doc = parse_document(input, format)?;
    extract(&doc, max_entries)
}

/// The whitelist entries of a document, deduplicated, in document order. FQDN entries
/// come with `resolved` empty.
pub fn extract(doc: &ProvDoc, max_entries: usize) -> Result<Vec<WhitelistEntry>, LoadError> {
    let mut out = Entries {
        entries: Vec::new(),
        max: max_entries,
    };
    let push_apps = doc
        .characteristics_of("APPLICATION")
        .filter(|app| app.values("APPID").any(|id| PUSH_APPIDS.contains(&id)));
    for app in push_apps {
        // Parameters in document order, so entries come out in the order written.
        for parm in &app.parms {
            let value = parm.value.as_deref().unwrap_or("").trim();
            match parm.name.trim() {
                "ADDR" => {
                    let uri = Uri::parse(value).map_err(|e| LoadError::BadAddress {
                        what: format!("ADDR {value:?}"),
                        why: e.why,
                    })?;
                    out.push_uri(uri)?;
                }
                "TO-PROXY" => {
                    let mut found = false;
                    for pxlogical in doc
                        .characteristics_of("PXLOGICAL")
                        .filter(|px| px.values("PROXY-ID").any(|id| id == value))
                    {
                        found = true;
                        for physical in pxlogical.children_of("PXPHYSICAL") {
                            physical_entries(&mut out, value, physical)?;
                        }
                    }
                    if !found {
                        return Err(LoadError::DanglingProxy(value.to_owned()));
                    }
                }
                "TO-NAPID" => {
                    let mut found = false;
                    for napdef in doc
                        .characteristics_of("NAPDEF")
                        .filter(|nap| nap.values("NAPID").any(|id| id == value))
                    {
                        found = true;
                        smsc_entries(&mut out, value, napdef)?;
                    }
                    if !found {
                        return Err(LoadError::DanglingNapId(value.to_owned()));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out.entries)
}

struct Entries {
    entries: Vec<WhitelistEntry>,
    max: usize,
}

impl Entries {
    fn push(&mut self, kind: WhitelistKind, value: String, role: &str) -> Result<(), LoadError> {
        let duplicate = self
            .entries
            .iter()
            .any(|e| e.kind == kind && e.value == value && e.role == role);
        if duplicate {
            return Ok(());
        }
        if self.entries.len() >= self.max {
            return Err(LoadError::TooManyEntries {
                count: self.entries.len() + 1,
                max: self.max,
            });
        }
        self.entries.push(WhitelistEntry {
            kind,
            value,
            resolved: Vec::new(),
            role: role.to_owned(),
        });
        Ok(())
    }

    /// URIs are deduplicated by their normalised text, not by equivalence: equivalence
    /// is not transitive, so dropping one of two equivalent entries could lose matches.
    fn push_uri(&mut self, uri: Uri) -> Result<(), LoadError> {
        self.push(WhitelistKind::Uri, uri.to_string(), ROLE_PPG)
    }
}

fn physical_entries(
    out: &mut Entries,
    proxy_id: &str,
    physical: &Characteristic,
) -> Result<(), LoadError> {
    let name = physical.value("PHYSICAL-PROXY-ID").unwrap_or("?");
    let what = |parm: &str, value: &str| {
        format!("{parm} {value:?} of PXPHYSICAL {name:?} in PXLOGICAL {proxy_id:?}")
    };
    let addr_type = physical.value("PXADDRTYPE").unwrap_or("IPV4");
    for addr in physical.values("PXADDR") {
        let bad = |why: &str| LoadError::BadAddress {
            what: what("PXADDR", addr),
            why: why.to_owned(),
        };
        match addr_type.to_ascii_uppercase().as_str() {
            "IPV4" => {
                let v4 = ip::parse_v4(addr).ok_or_else(|| bad("not an IPv4 address"))?;
                out.push(WhitelistKind::Ip, v4.to_string(), ROLE_PPG)?;
            }
            "IPV6" => {
                let v6 = ip::parse_v6(addr).ok_or_else(|| bad("not an IPv6 address"))?;
                out.push(WhitelistKind::Ip, v6.to_string(), ROLE_PPG)?;
            }
            "E164" => {
                let number = e164::normalize_entry(addr).map_err(|e| bad(e.why))?;
                out.push(WhitelistKind::E164, number, ROLE_PPG)?;
            }
            other => {
                return Err(bad(&format!(
                    "PXADDRTYPE {other} cannot identify a push origin (IPV4, IPV6 or E164)"
                )));
            }
        }
    }
    for fqdn in physical.values("PXADDR-FQDN") {
        let name = normalize_fqdn(fqdn).ok_or_else(|| LoadError::BadAddress {
            what: what("PXADDR-FQDN", fqdn),
            why: "not a host name".to_owned(),
        })?;
        out.push(WhitelistKind::Fqdn, name, ROLE_PPG)?;
    }
    Ok(())
}

fn smsc_entries(out: &mut Entries, napid: &str, napdef: &Characteristic) -> Result<(), LoadError> {
    let addr_type = napdef.value("NAP-ADDRTYPE").unwrap_or("E164");
    let mut any = false;
    for addr in napdef.values("NAP-ADDRESS") {
        any = true;
        let what = format!("NAP-ADDRESS {addr:?} of NAPDEF {napid:?}");
        if !addr_type.eq_ignore_ascii_case("E164") {
            return Err(LoadError::BadAddress {
                what,
                why: format!("NAP-ADDRTYPE {addr_type} is not E164, so it names no SMSC"),
            });
        }
        let number = e164::normalize_entry(addr).map_err(|e| LoadError::BadAddress {
            what,
            why: e.why.to_owned(),
        })?;
        out.push(WhitelistKind::E164, number, ROLE_SMSC)?;
    }
    if !any {
        return Err(LoadError::BadAddress {
            what: format!("NAPDEF {napid:?}"),
            why: "it has no NAP-ADDRESS".to_owned(),
        });
    }
    Ok(())
}

/// A host name in lower case, or `None` if it is not one.
fn normalize_fqdn(value: &str) -> Option<String> {
    let name = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    ok.then_some(name)
}

/// An FQDN entry that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveFailure {
    /// The host name.
    pub name: String,
    /// Why (timeout, lookup error, no addresses).
    pub reason: String,
}

/// Resolves every `fqdn` entry, each bounded by `timeout`, all at once. A name that
/// resolves gets its addresses (deduplicated, IPv4 first) in `resolved`; a name that
/// does not keeps its previous `resolved` and is reported.
pub async fn resolve_fqdns(
    entries: &mut [WhitelistEntry],
    timeout: Duration,
) -> Vec<ResolveFailure> {
    let names: Vec<(usize, String)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == WhitelistKind::Fqdn)
        .map(|(i, e)| (i, e.value.clone()))
        .collect();
    let lookups = names.into_iter().map(|(i, name)| async move {
        // An owned "host:port" string, so the lookup borrows nothing.
        let lookup = tokio::net::lookup_host(format!("{name}:0"));
        let result = tokio::time::timeout(timeout, lookup).await;
        let outcome = match result {
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(addrs)) => {
                let mut ips: Vec<std::net::IpAddr> = addrs.map(|a| ip::canonical(a.ip())).collect();
                ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
                ips.dedup();
                if ips.is_empty() {
                    Err("no addresses".to_owned())
                } else {
                    Ok(ips.iter().map(ToString::to_string).collect::<Vec<_>>())
                }
            }
        };
        (i, name, outcome)
    });
    let mut failures = Vec::new();
    for (i, name, outcome) in futures::future::join_all(lookups).await {
        match outcome {
            Ok(resolved) => {
                if let Some(entry) = entries.get_mut(i) {
                    entry.resolved = resolved;
                }
            }
            Err(reason) => failures.push(ResolveFailure { name, reason }),
        }
    }
    failures
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    const SAMPLES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/provisioning"
    );
    const LOCAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/push/testdata");

    fn read(dir: &str, name: &str) -> Vec<u8> {
        let path = format!("{dir}/{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn entry(kind: &str, value: &str, role: &str) -> WhitelistEntry {
        WhitelistEntry {
            kind: kind.parse().unwrap(),
            value: value.into(),
            resolved: Vec::new(),
            role: role.into(),
        }
    }

    /// Loads `<stem>.xml`, and `<stem>.wbxml` when it exists, checking both give the same
    /// document and the same whitelist; returns the whitelist.
    fn load_both(stem: &str) -> Vec<WhitelistEntry> {
        let xml = read(SAMPLES, &format!("{stem}.xml"));
        let from_xml = parse_document(&xml, Format::Auto).unwrap();
        assert_eq!(parse_document(&xml, Format::Xml).unwrap(), from_xml);
        let wbxml_path = format!("{SAMPLES}/{stem}.wbxml");
        if std::path::Path::new(&wbxml_path).exists() {
            let bytes = read(SAMPLES, &format!("{stem}.wbxml"));
            let from_wbxml = parse_document(&bytes, Format::Auto).unwrap();
            assert_eq!(from_wbxml, from_xml, "{stem}: WBXML and XML differ");
            assert_eq!(parse_document(&bytes, Format::Wbxml).unwrap(), from_xml);
        }
        load(&xml, Format::Auto, 1000).unwrap()
    }

    #[test]
    fn seed_example() {
        let entries = load_both("seed-example");
        assert_eq!(
            entries,
            vec![
                entry("ip", "215.221.51.5", "ppg"),
                entry("e164", "+35809503401", "smsc"),
                entry("uri", "sip:ppg@atlanta.com", "ppg"),
            ]
        );
    }

    #[test]
    fn loopback_ppg() {
        let entries = load_both("loopback-ppg");
        assert_eq!(
            entries,
            vec![
                entry("ip", "127.0.0.1", "ppg"),
                entry("fqdn", "localhost", "ppg"),
                entry("e164", "+358", "smsc"),
                entry("uri", "sip:ppg@operator.example", "ppg"),
            ]
        );
    }

    #[test]
    fn twelve_entries() {
        let entries = load_both("twelve-entries");
        let ips: Vec<&str> = entries
            .iter()
            .filter(|e| e.kind == WhitelistKind::Ip)
            .map(|e| e.value.as_str())
            .collect();
        assert_eq!(ips.len(), 12);
        assert_eq!(ips.iter().filter(|ip| ip.contains(':')).count(), 4);
        assert!(
            entries
                .iter()
                .filter(|e| e.kind == WhitelistKind::Ip)
                .all(|e| e.role == "ppg")
        );
        let smscs: Vec<&str> = entries
            .iter()
            .filter(|e| e.role == "smsc")
            .map(|e| e.value.as_str())
            .collect();
        assert_eq!(smscs, ["+4479", "+35840"]);
        assert_eq!(entries.len(), 14);
        // The limit counts entries: 14 fit in 14, not in 13.
        let xml = read(SAMPLES, "twelve-entries.xml");
        assert_eq!(load(&xml, Format::Auto, 14).unwrap().len(), 14);
        assert_eq!(
            load(&xml, Format::Auto, 13).unwrap_err(),
            LoadError::TooManyEntries { count: 14, max: 13 }
        );
        let wbxml = read(SAMPLES, "twelve-entries.wbxml");
        assert!(matches!(
            load(&wbxml, Format::Auto, 10),
            Err(LoadError::TooManyEntries { max: 10, .. })
        ));
    }

    #[test]
    fn empty_whitelist() {
        assert_eq!(load_both("empty-whitelist"), vec![]);
    }

    #[test]
    fn dangling_proxy() {
        let xml = read(SAMPLES, "dangling-proxy.xml");
        let e = load(&xml, Format::Auto, 1000).unwrap_err();
        assert_eq!(e, LoadError::DanglingProxy("missing.proxy".into()));
        assert!(e.to_string().contains("missing.proxy"));
    }

    #[test]
    fn malformed() {
        let xml = read(SAMPLES, "malformed.xml");
        let e = load(&xml, Format::Auto, 1000).unwrap_err();
        let LoadError::Malformed { format, error } = &e else {
            panic!("{e}");
        };
        assert_eq!(*format, "XML");
        assert!(
            matches!(error.at, crate::push::tree::Location::Text { line: 4, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("line 4"), "{e}");
        // The same bytes forced through the WBXML decoder fail with an offset.
        let e = load(&xml, Format::Wbxml, 1000).unwrap_err();
        assert!(e.to_string().contains("byte offset 0"), "{e}");
    }

    /// The samples as libwbxml's `xml2wbxml` writes them by default (string table and
    /// STR_T references, SWITCH_PAGE inside attribute lists), and one with `-k -v 1.1`
    /// (WBXML 1.1, whitespace kept as STR_I content), kept beside this module.
    #[test]
    fn libwbxml_encodings() {
        let files = [
            ("seed-example.strtab.wbxml", "seed-example"),
            ("loopback-ppg.strtab.wbxml", "loopback-ppg"),
            ("twelve-entries.strtab.wbxml", "twelve-entries"),
            ("empty-whitelist.strtab.wbxml", "empty-whitelist"),
            ("seed-example.ws-v11.wbxml", "seed-example"),
        ];
        for (file, stem) in files {
            let xml = read(SAMPLES, &format!("{stem}.xml"));
            let bytes = read(LOCAL, file);
            assert_eq!(
                parse_document(&bytes, Format::Auto).unwrap(),
                parse_document(&xml, Format::Auto).unwrap(),
                "{file}"
            );
            assert_eq!(
                load(&bytes, Format::Auto, 1000).unwrap(),
                load(&xml, Format::Auto, 1000).unwrap(),
                "{file}"
            );
        }
    }

    fn doc(apps: &str, rest: &str) -> Vec<u8> {
        format!(
            r#"<wap-provisioningdoc version="1.1">{rest}
  <characteristic type="APPLICATION">
    <parm name="APPID" value="urn:oma:mo:oma-push:1.0"/>{apps}
  </characteristic>
</wap-provisioningdoc>"#
        )
        .into_bytes()
    }

    #[test]
    fn extraction_rules() {
        // Other applications and unreferenced proxies are ignored; duplicates collapse;
        // URI entries are stored normalised and deduplicated by that text.
        let input = doc(
            r#"
    <parm name="ADDR" value=" SIP:PPG@Operator.Example "/>
    <parm name="ADDR" value="sip:ppg@operator.example"/>
    <parm name="ADDR" value="tel:+358-40-1"/>
    <parm name="TO-PROXY" value="p"/>
    <parm name="TO-PROXY" value=" p "/>"#,
            r#"
  <characteristic type="APPLICATION">
    <parm name="APPID" value="w2"/>
    <parm name="TO-PROXY" value="other"/>
    <parm name="ADDR" value="sip:browser@x.example"/>
  </characteristic>
  <characteristic type="PXLOGICAL">
    <parm name="PROXY-ID" value="other"/>
    <characteristic type="PXPHYSICAL"><parm name="PXADDR" value="10.0.0.1"/></characteristic>
  </characteristic>
  <characteristic type="PXLOGICAL">
    <parm name="PROXY-ID" value="p"/>
    <characteristic type="PXPHYSICAL">
      <parm name="PXADDR" value="192.0.2.9"/>
    </characteristic>
    <characteristic type="PXPHYSICAL">
      <parm name="PXADDR" value="2001:DB8::9"/><parm name="PXADDRTYPE" value="IPV6"/>
      <parm name="PXADDR-FQDN" value="PPG.Example."/>
    </characteristic>
    <characteristic type="PXPHYSICAL">
      <parm name="PXADDR" value="+44 7700 900"/><parm name="PXADDRTYPE" value="E164"/>
    </characteristic>
  </characteristic>"#,
        );
        let entries = load(&input, Format::Xml, 1000).unwrap();
        assert_eq!(
            entries,
            vec![
                entry("uri", "sip:PPG@operator.example", "ppg"),
                entry("uri", "sip:ppg@operator.example", "ppg"),
                entry("uri", "tel:+358401", "ppg"),
                entry("ip", "192.0.2.9", "ppg"),
                entry("ip", "2001:db8::9", "ppg"),
                entry("fqdn", "ppg.example", "ppg"),
                entry("e164", "+447700900", "ppg"),
            ]
        );
    }

    #[test]
    fn extraction_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"<parm name="TO-NAPID" value="nope"/>"#,
                "",
                "TO-NAPID \"nope\" names no NAPDEF",
            ),
            (
                r#"<parm name="ADDR" value="http://ppg.example/"/>"#,
                "",
                "ADDR",
            ),
            (
                r#"<parm name="TO-PROXY" value="p"/>"#,
                r#"<characteristic type="PXLOGICAL"><parm name="PROXY-ID" value="p"/>
                   <characteristic type="PXPHYSICAL"><parm name="PXADDR" value="ppg"/></characteristic>
                   </characteristic>"#,
                "not an IPv4 address",
            ),
            (
                r#"<parm name="TO-PROXY" value="p"/>"#,
                r#"<characteristic type="PXLOGICAL"><parm name="PROXY-ID" value="p"/>
                   <characteristic type="PXPHYSICAL"><parm name="PXADDR" value="x"/>
                   <parm name="PXADDRTYPE" value="ALPHA"/></characteristic>
                   </characteristic>"#,
                "PXADDRTYPE ALPHA",
            ),
            (
                r#"<parm name="TO-NAPID" value="n"/>"#,
                r#"<characteristic type="NAPDEF"><parm name="NAPID" value="n"/>
                   <parm name="NAP-ADDRESS" value="internet"/><parm name="NAP-ADDRTYPE" value="APN"/>
                   </characteristic>"#,
                "not E164",
            ),
            (
                r#"<parm name="TO-NAPID" value="n"/>"#,
                r#"<characteristic type="NAPDEF"><parm name="NAPID" value="n"/></characteristic>"#,
                "no NAP-ADDRESS",
            ),
            (
                r#"<parm name="TO-NAPID" value="n"/>"#,
                r#"<characteristic type="NAPDEF"><parm name="NAPID" value="n"/>
                   <parm name="NAP-ADDRESS" value="+35a"/></characteristic>"#,
                "only digits",
            ),
        ];
        for (apps, rest, expected) in cases {
            let e = load(&doc(apps, rest), Format::Xml, 1000).unwrap_err();
            assert!(e.to_string().contains(expected), "{e} (wanted {expected})");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            Format::from_content_type("application/vnd.wap.connectivity-wbxml"),
            Some(Format::Wbxml)
        );
        assert_eq!(
            Format::from_content_type("Text/Vnd.Wap.Connectivity-XML; charset=utf-8"),
            Some(Format::Xml)
        );
        assert_eq!(
            Format::from_content_type("application/xml"),
            Some(Format::Xml)
        );
        assert_eq!(Format::from_content_type("image/png"), None);
        assert_eq!(Format::Auto.detect(&[0x03, 0x0B]), Format::Wbxml);
        assert_eq!(Format::Auto.detect(b"<?xml"), Format::Xml);
        assert_eq!(Format::Auto.detect(b""), Format::Xml);
        assert_eq!("WBXML".parse::<Format>(), Ok(Format::Wbxml));
        assert!("json".parse::<Format>().is_err());
    }

    #[tokio::test]
    async fn resolves_localhost() {
        let mut entries = vec![
            entry("fqdn", "localhost", "ppg"),
            entry("ip", "192.0.2.1", "ppg"),
            entry("fqdn", "no-such-host.invalid", "ppg"),
        ];
        entries[2].resolved = vec!["192.0.2.7".into()];
        let failures = resolve_fqdns(&mut entries, Duration::from_secs(5)).await;
        assert!(
            entries[0].resolved.contains(&"127.0.0.1".to_owned()),
            "{entries:?}"
        );
        assert!(entries[1].resolved.is_empty());
        // A failed lookup keeps what was resolved before, and is reported.
        assert_eq!(entries[2].resolved, ["192.0.2.7"]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].name, "no-such-host.invalid");
    }
}
