//! Push whitelist operations (INTERFACES.md 1 and 6.1): load a provisioning document,
//! show, clear, and check what the server would decide for an origin. Shared by the
//! CLI (`cpmstore whitelist ...`) and the HTTP admin API.
//!
//! A load is all or nothing: the document is decoded and its entries extracted (any
//! problem is [`AdminError::Invalid`], naming the line or byte offset), FQDN entries are
//! resolved, and only then is the subscriber's whitelist for the context replaced, in
//! one storage transaction.

use std::net::IpAddr;

use cpmstore_storage::{Error as StorageError, Store, Whitelist, WhitelistEntry};
use serde::Serialize;

use super::{AdminError, account};
use crate::config::Config;
use crate::push::{self, Format, Origin, Provisioning, Reason, sip_uri};
use crate::validate::context_name;

/// Largest provisioning document accepted, in bytes. The spec's documents are a few
/// kilobytes; 1,000 entries in verbose XML stay well under this.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The result of `whitelist load`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loaded {
    /// The subscriber.
    pub username: String,
    /// The provisioning context: `""` for the default one, else the PROVURL.
    pub context: String,
    /// How many entries the whitelist has now.
    pub count: usize,
    /// The entries, in document order (FQDNs with what they resolved to).
    pub entries: Vec<WhitelistEntry>,
    /// FQDN entries that did not resolve now; they are kept, and resolved again on
    /// the next load (and on each push with `push.resolve_on_push`).
    pub unresolved: Vec<Unresolved>,
}

/// An FQDN entry that did not resolve at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    /// The host name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The result of `whitelist show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shown {
    /// The subscriber.
    pub username: String,
    /// False when no whitelist is provisioned in any context (every push accepted).
    pub provisioned: bool,
    /// One per provisioned context, the default context (`""`) first.
    pub whitelists: Vec<ContextWhitelist>,
}

/// The whitelist of one context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextWhitelist {
    /// `""` for the default context, else the PROVURL.
    pub context: String,
    /// When it was loaded (RFC 3339, UTC).
    pub loaded_at: String,
    /// How many entries.
    pub count: usize,
    /// The entries.
    pub entries: Vec<WhitelistEntry>,
}

/// The result of `whitelist clear`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cleared {
    /// The subscriber.
    pub username: String,
    /// The contexts whose whitelist was removed (`""` is the default one).
    pub cleared: Vec<String>,
}

/// The result of `whitelist check`: what the server would decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// The subscriber.
    pub username: String,
    /// The context checked.
    pub context: String,
    /// The origin, as the server would record it.
    pub origin: OriginInfo,
    /// Whether a whitelist is provisioned for the context itself.
    pub provisioned: bool,
    /// Would the push be delivered?
    pub accepted: bool,
    /// `not_provisioned` (no whitelist in any context), `matched`, `no_match`, or
    /// `unknown_context` (whitelists in other contexts only: rejected).
    pub reason: Reason,
    /// The entry that matched.
    pub matched: Option<WhitelistEntry>,
}

/// An origin in a result: `type` is `ppg`, `smsc` or `sip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OriginInfo {
    /// `ppg`, `smsc` or `sip`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The IP, the SMSC address (with `;ton=` / `;npi=`), or the P-Asserted-Identity.
    pub value: String,
}

impl From<&Origin> for OriginInfo {
    fn from(origin: &Origin) -> Self {
        OriginInfo {
            kind: origin.kind(),
            value: origin.to_string(),
        }
    }
}

/// The origin `whitelist check` is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginQuery {
    /// `--ppg IP`.
    Ppg(String),
    /// `--smsc ADDR[;ton=N][;npi=N]`.
    Smsc(String),
    /// `--sip-pai VALUE` (a P-Asserted-Identity header value).
    SipPai(String),
}

impl OriginQuery {
    /// The origin, or [`AdminError::Invalid`] saying what is wrong with the value.
    pub fn to_origin(&self) -> Result<Origin, AdminError> {
        match self {
            OriginQuery::Ppg(value) => {
                value
                    .trim()
                    .parse::<IpAddr>()
                    .map(Origin::Ppg)
                    .map_err(|_| {
                        AdminError::Invalid(format!(
                            "--ppg {value:?} is not an IP address; give an IPv4 or IPv6 address"
                        ))
                    })
            }
            OriginQuery::Smsc(value) => push::try_parse_smsc_header(value).map_err(|e| {
                AdminError::Invalid(format!(
                    "--smsc {value:?}: {e}; give ADDR[;ton=N][;npi=N], e.g. +35809503401"
                ))
            }),
            OriginQuery::SipPai(value) => {
                sip_uri::parse_pai(value).map_err(|e| {
                    AdminError::Invalid(format!(
                        "--sip-pai {value:?}: {e}; give a P-Asserted-Identity value, \
                         e.g. <sip:ppg@operator.example> or \"PPG\" <sip:ppg@operator.example>, <tel:+358401234567>"
                    ))
                })?;
                Ok(Origin::Sip {
                    pai: vec![value.clone()],
                })
            }
        }
    }
}

/// Decodes a provisioning document and extracts its whitelist, without storage: every
/// problem with the document itself is found here (exit 5 / HTTP 400).
pub fn parse_document(
    config: &Config,
    document: &[u8],
    format: Format,
) -> Result<Vec<WhitelistEntry>, AdminError> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(AdminError::Invalid(format!(
            "the provisioning document is {} bytes, more than the {MAX_DOCUMENT_BYTES} accepted",
            document.len()
        )));
    }
    push::load(document, format, config.push.max_whitelist_entries).map_err(|e| {
        AdminError::Invalid(format!(
            "{e}; the previous whitelist is unchanged; fix the document and load it again"
        ))
    })
}

/// `whitelist load`: replaces the subscriber's whitelist for `context` with the one the
/// document gives, FQDNs resolved (each within [`push::ingress::RESOLVE_TIMEOUT`]).
pub async fn load(
    store: &dyn Store,
    config: &Config,
    username: &str,
    document: &[u8],
    format: Format,
    context: Option<&str>,
) -> Result<Loaded, AdminError> {
    let context = context_name(context)?;
    let mut entries = parse_document(config, document, format)?;
    let account = account(store, username).await?;
    let failures = push::resolve_fqdns(&mut entries, push::ingress::RESOLVE_TIMEOUT).await;
    for failure in &failures {
        tracing::warn!(
            username = %account.username,
            name = %failure.name,
            reason = %failure.reason,
            "whitelist FQDN did not resolve; kept, resolved again on the next load"
        );
    }
    store
        .set_whitelist(account.id, &context, &entries)
        .await
        .map_err(|e| gone(e, username))?;
    tracing::info!(
        username = %account.username,
        context = %context,
        entries = entries.len(),
        "whitelist loaded"
    );
    Ok(Loaded {
        username: account.username,
        context,
        count: entries.len(),
        entries,
        unresolved: failures
            .into_iter()
            .map(|f| Unresolved {
                name: f.name,
                reason: f.reason,
            })
            .collect(),
    })
}

/// `whitelist show`: every provisioned context of the subscriber.
pub async fn show(store: &dyn Store, username: &str) -> Result<Shown, AdminError> {
    let account = account(store, username).await?;
    let mut whitelists = store
        .whitelists(account.id)
        .await
        .map_err(|e| gone(e, username))?;
    whitelists.sort_by(|a, b| a.context.cmp(&b.context));
    Ok(Shown {
        username: account.username,
        provisioned: !whitelists.is_empty(),
        whitelists: whitelists.into_iter().map(describe).collect(),
    })
}

fn describe(whitelist: Whitelist) -> ContextWhitelist {
    let loaded_at = chrono::DateTime::from_timestamp(whitelist.loaded_at, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    ContextWhitelist {
        context: whitelist.context,
        loaded_at,
        count: whitelist.entries.len(),
        entries: whitelist.entries,
    }
}

/// `whitelist clear`: removes the whitelist of one context, or of every context when
/// `context` is `None` (the subscriber is then not provisioned: every push accepted).
/// A named context with no whitelist is [`AdminError::NotFound`].
pub async fn clear(
    store: &dyn Store,
    username: &str,
    context: Option<&str>,
) -> Result<Cleared, AdminError> {
    let context = context.map(|c| context_name(Some(c))).transpose()?;
    let account = account(store, username).await?;
    let cleared = match &context {
        Some(context) => {
            store
                .clear_whitelist(account.id, Some(context))
                .await
                .map_err(|e| match e {
                    StorageError::NotFound(_) => AdminError::NotFound(format!(
                        "subscriber {username:?} has no whitelist in context {context:?}; \
                         `whitelist show` lists the provisioned contexts"
                    )),
                    e => e.into(),
                })?;
            vec![context.clone()]
        }
        None => {
            let mut contexts: Vec<String> = store
                .whitelists(account.id)
                .await
                .map_err(|e| gone(e, username))?
                .into_iter()
                .map(|w| w.context)
                .collect();
            contexts.sort();
            store
                .clear_whitelist(account.id, None)
                .await
                .map_err(|e| gone(e, username))?;
            contexts
        }
    };
    tracing::info!(username = %account.username, contexts = ?cleared, "whitelist cleared");
    Ok(Cleared {
        username: account.username,
        cleared,
    })
}

/// `whitelist check`: what the server would decide for a push from `origin` to the
/// subscriber in `context`, with the entry that matched, exactly as the ingress
/// decides ([`push::ingress::provisioning_for`], [`push::decide`]). Nothing is logged
/// as a push decision and nothing is counted: this is a question, not a push.
pub async fn check(
    store: &dyn Store,
    config: &Config,
    username: &str,
    origin: &OriginQuery,
    context: Option<&str>,
) -> Result<Checked, AdminError> {
    let context = context_name(context)?;
    let origin = origin.to_origin()?;
    let account = account(store, username).await?;
    let provisioning = push::ingress::provisioning_for(store, config, account.id, &context)
        .await
        .map_err(|e| gone(e, username))?;
    let decision = push::decide(&provisioning, &origin);
    Ok(Checked {
        username: account.username,
        context,
        origin: OriginInfo::from(&origin),
        provisioned: matches!(provisioning, Provisioning::Whitelist(_)),
        accepted: decision.accepted,
        reason: decision.reason,
        matched: decision.matched,
    })
}

/// A NotFound from an operation on an account just looked up means it vanished.
fn gone(err: StorageError, username: &str) -> AdminError {
    match err {
        StorageError::NotFound(_) => AdminError::no_subscriber(username),
        e => e.into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            OriginQuery::Ppg(" 127.0.0.1 ".into()).to_origin().unwrap(),
            Origin::Ppg("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            OriginQuery::Ppg("ppg.example".into())
                .to_origin()
                .unwrap_err()
                .exit_code(),
            5
        );
        assert_eq!(
            OriginQuery::Smsc("+35809503401;ton=1;npi=1".into())
                .to_origin()
                .unwrap()
                .kind(),
            "smsc"
        );
        assert!(OriginQuery::Smsc("+358;x=1".into()).to_origin().is_err());
        assert!(
            OriginQuery::SipPai("<sip:ppg@operator.example>".into())
                .to_origin()
                .is_ok()
        );
        assert!(OriginQuery::SipPai("not a uri".into()).to_origin().is_err());
    }

    #[test]
    fn document_errors_are_invalid_input() {
        let config = Config::default();
        let e = parse_document(&config, b"<wap-provisioningdoc>", Format::Xml).unwrap_err();
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().contains("unchanged"), "{e}");
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert_eq!(
            parse_document(&config, &big, Format::Xml)
                .unwrap_err()
                .exit_code(),
            5
        );
    }
}
