//! What every push ingress (HTTP, SIP) shares: finding the subscriber, what it has
//! provisioned for the push's context, the decision, delivery, and one log line and
//! one count per push ([`PushService::push`]). `whitelist check` uses
//! [`provisioning_for`] so it answers exactly as a push would be decided.
//!
//! The context is the push's `X-Wap-Push-ProvURL` (HTTP header or SIP header field),
//! else the default one. Once a subscriber has a whitelist in any context, a push
//! whose context has none is rejected (`unknown_context`): the sender names the
//! context, so it must not be able to pick one that lets everything in.

use std::sync::Arc;
use std::time::Duration;

use cpmstore_storage::{
    Account, AccountId, AccountStatus, Error as StorageError, Store, WhitelistKind,
};

use super::decide::{Origin, Provisioning, Reason, decide};
use super::deliver::{self, DeliverError, Delivered, Push};
use super::whitelist::resolve_fqdns;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::validate;

/// How long one FQDN entry may take to resolve (at load, and per push with
/// `push.resolve_on_push`).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `account` has provisioned for a push in `context`, as the push is judged by
/// it: the context's whitelist, else whether it has whitelists in other contexts.
/// With `push.resolve_on_push`, FQDN entries are resolved again now; a name that does
/// not resolve keeps the addresses it had at load.
pub async fn provisioning_for(
    store: &dyn Store,
    config: &Config,
    account: AccountId,
    context: &str,
) -> Result<Provisioning, StorageError> {
    let Some(whitelist) = store.whitelist(account, context).await? else {
        return Ok(if store.has_whitelist(account).await? {
            Provisioning::OtherContexts
        } else {
            Provisioning::Unprovisioned
        });
    };
    let mut entries = whitelist.entries;
    if config.push.resolve_on_push && entries.iter().any(|e| e.kind == WhitelistKind::Fqdn) {
        for failure in resolve_fqdns(&mut entries, RESOLVE_TIMEOUT).await {
            tracing::warn!(
                name = %failure.name,
                reason = %failure.reason,
                "whitelist FQDN did not resolve at push time; using the addresses from load"
            );
        }
    }
    Ok(Provisioning::Whitelist(entries))
}

/// The `reason` metrics label of a push that never reached the whitelist decision.
const NO_REASON: &str = "none";

/// Which ingress a push came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// `POST /v1/push/{address}`.
    Http,
    /// OTA-SIP `MESSAGE`.
    Sip,
}

impl Ingress {
    /// `http` or `sip` (log field, metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Http => "http",
            Ingress::Sip => "sip",
        }
    }
}

/// How a push ended: one per push, logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored in the mailbox.
    Delivered,
    /// Refused by the whitelist.
    Rejected,
    /// The subscriber is disabled.
    Disabled,
    /// No subscriber with that address.
    UnknownSubscriber,
    /// The request was malformed.
    Malformed,
    /// The request was larger than allowed.
    TooLarge,
    /// The subscriber's quota is full.
    OverQuota,
    /// Storage failed or the request timed out.
    Failed,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Delivered,
        Outcome::Rejected,
        Outcome::Disabled,
        Outcome::UnknownSubscriber,
        Outcome::Malformed,
        Outcome::TooLarge,
        Outcome::OverQuota,
        Outcome::Failed,
    ];

    /// The log field and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Rejected => "rejected",
            Outcome::Disabled => "disabled",
            Outcome::UnknownSubscriber => "unknown_subscriber",
            Outcome::Malformed => "malformed",
            Outcome::TooLarge => "too_large",
            Outcome::OverQuota => "over_quota",
            Outcome::Failed => "failed",
        }
    }
}

/// A push as an ingress received it, origin already established (the ingress decides
/// which headers to believe).
#[derive(Debug, Clone)]
pub struct PushRequest<'a> {
    /// Which ingress.
    pub ingress: Ingress,
    /// The network peer (for the log).
    pub peer: std::net::SocketAddr,
    /// The subscriber as addressed: a username or a subscriber URI.
    pub address: &'a str,
    /// Where it comes from.
    pub origin: Origin,
    /// `X-Wap-Push-ProvURL`, if any.
    pub context: Option<&'a str>,
    /// The body's Content-Type, if any.
    pub content_type: Option<&'a str>,
    /// `X-Wap-Application-Id`, if any.
    pub application_id: Option<&'a str>,
    /// The content.
    pub body: &'a [u8],
}

/// The answer an ingress turns into its status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// Stored.
    Delivered(Delivered),
    /// Refused by the whitelist.
    Rejected,
    /// The subscriber is disabled: no push delivery.
    Disabled,
    /// No such subscriber.
    UnknownSubscriber,
    /// Malformed: why.
    Malformed(String),
    /// The subscriber's quota is full.
    OverQuota,
    /// Storage failed.
    Failed,
}

impl PushResult {
    /// The outcome it is counted as.
    pub fn outcome(&self) -> Outcome {
        match self {
            PushResult::Delivered(_) => Outcome::Delivered,
            PushResult::Rejected => Outcome::Rejected,
            PushResult::Disabled => Outcome::Disabled,
            PushResult::UnknownSubscriber => Outcome::UnknownSubscriber,
            PushResult::Malformed(_) => Outcome::Malformed,
            PushResult::OverQuota => Outcome::OverQuota,
            PushResult::Failed => Outcome::Failed,
        }
    }
}

/// The push pipeline shared by the ingresses.
pub struct PushService {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl PushService {
    /// A service over `store`, configured by `config` (`[push]`).
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, metrics: Arc<Metrics>) -> PushService {
        PushService {
            store,
            config,
            metrics,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Logs and counts a push refused before it reached [`PushService::push`]
    /// (malformed, too large, timed out).
    pub fn refused(
        &self,
        ingress: Ingress,
        peer: std::net::SocketAddr,
        address: &str,
        outcome: Outcome,
        why: &str,
    ) {
        self.metrics
            .push_decision(ingress.as_str(), outcome.as_str(), "none", NO_REASON);
        tracing::info!(
            ingress = ingress.as_str(),
            %peer,
            address = %printable(address),
            outcome = outcome.as_str(),
            why,
            "push refused"
        );
    }

    /// Finds the subscriber, decides with the whitelist of the push's context,
    /// delivers when accepted; logs and counts the outcome.
    pub async fn push(&self, request: PushRequest<'_>) -> PushResult {
        let (result, reason) = self.run(&request).await;
        self.metrics.push_decision(
            request.ingress.as_str(),
            result.outcome().as_str(),
            request.origin.kind(),
            reason.map_or(NO_REASON, Reason::as_str),
        );
        if result == PushResult::Failed {
            self.metrics.storage_error("push");
        }
        result
    }

    /// The result, and the whitelist decision's reason when one was made.
    async fn run(&self, request: &PushRequest<'_>) -> (PushResult, Option<Reason>) {
        let ingress = request.ingress.as_str();
        let origin = &request.origin;
        let refuse = |outcome: Outcome, why: &str| {
            tracing::info!(
                ingress,
                peer = %request.peer,
                address = %printable(request.address),
                origin_type = origin.kind(),
                origin = %origin,
                outcome = outcome.as_str(),
                why,
                "push refused"
            );
        };
        let context = match validate::context_name(request.context) {
            Ok(context) => context,
            Err(e) => {
                let why = format!("X-Wap-Push-ProvURL: {e}");
                refuse(Outcome::Malformed, &why);
                return (PushResult::Malformed(why), None);
            }
        };
        let content_type = match deliver::content_type(request.content_type) {
            Ok(content_type) => content_type,
            Err(why) => {
                refuse(Outcome::Malformed, &why);
                return (PushResult::Malformed(why), None);
            }
        };
        let (account, to) = match self.subscriber(request.address).await {
            Ok(found) => found,
            Err(result) => {
                let why = match &result {
                    PushResult::Malformed(why) => why.as_str(),
                    PushResult::UnknownSubscriber => "no subscriber has this address",
                    _ => "storage failed",
                };
                refuse(result.outcome(), why);
                return (result, None);
            }
        };
        let subscriber = account.username.as_str();
        if account.status == AccountStatus::Disabled {
            tracing::info!(
                ingress,
                peer = %request.peer,
                subscriber,
                origin_type = origin.kind(),
                origin = %origin,
                outcome = Outcome::Disabled.as_str(),
                "push refused: subscriber disabled"
            );
            return (PushResult::Disabled, None);
        }
        let provisioning = match provisioning_for(
            self.store.as_ref(),
            &self.config,
            account.id,
            &context,
        )
        .await
        {
            Ok(provisioning) => provisioning,
            Err(e) => {
                tracing::error!(ingress, subscriber, error = %e, "cannot load the push whitelist");
                return (PushResult::Failed, None);
            }
        };
        let decision = decide(&provisioning, origin);
        let matched = decision
            .matched
            .as_ref()
            .map(|e| format!("{} {}", e.kind, e.value));
        if !decision.accepted {
            tracing::info!(
                ingress,
                peer = %request.peer,
                subscriber,
                context = %context,
                origin_type = origin.kind(),
                origin = %origin,
                reason = decision.reason.as_str(),
                outcome = Outcome::Rejected.as_str(),
                "push decision"
            );
            return (PushResult::Rejected, Some(decision.reason));
        }
        let push = Push {
            origin,
            to: &to,
            content_type: &content_type,
            application_id: request.application_id,
            body: request.body,
        };
        let delivered = deliver::deliver(
            self.store.as_ref(),
            &account,
            &self.config.push.deliver_to,
            &push,
        )
        .await;
        let (result, outcome) = match delivered {
            Ok(delivered) => {
                let outcome = Outcome::Delivered;
                (PushResult::Delivered(delivered), outcome)
            }
            Err(DeliverError::OverQuota) => (PushResult::OverQuota, Outcome::OverQuota),
            Err(DeliverError::Storage(e)) => {
                tracing::error!(ingress, subscriber, error = %e, "cannot store an accepted push");
                (PushResult::Failed, Outcome::Failed)
            }
        };
        let (mailbox, uid) = match &result {
            PushResult::Delivered(d) => (Some(d.mailbox.as_str()), Some(d.uid)),
            _ => (None, None),
        };
        tracing::info!(
            ingress,
            peer = %request.peer,
            subscriber,
            context = %context,
            origin_type = origin.kind(),
            origin = %origin,
            reason = decision.reason.as_str(),
            matched = matched.as_deref(),
            outcome = outcome.as_str(),
            mailbox,
            uid,
            bytes = request.body.len(),
            "push decision"
        );
        (result, Some(decision.reason))
    }

    /// The account an address names, and the address for `To:` (the normalised URI;
    /// for a username, the subscriber's first address, else the username).
    async fn subscriber(&self, address: &str) -> Result<(Account, String), PushResult> {
        let store = self.store.as_ref();
        let lookup = if address.contains(':') {
            let normalized = validate::normalize_address(address)
                .map_err(|e| PushResult::Malformed(e.to_string()))?;
            store
                .account_by_address(&normalized)
                .await
                .map(|a| (a, Some(normalized)))
        } else {
            validate::validate_username(address)
                .map_err(|e| PushResult::Malformed(e.to_string()))?;
            store.account_by_name(address).await.map(|a| (a, None))
        };
        let (account, to) = match lookup {
            Ok(found) => found,
            Err(StorageError::NotFound(_)) => return Err(PushResult::UnknownSubscriber),
            Err(e) => {
                tracing::error!(error = %e, "cannot look the subscriber up");
                return Err(PushResult::Failed);
            }
        };
        let to = match to {
            Some(to) => to,
            None => match store.addresses(account.id).await {
                Ok(addresses) => addresses
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| account.username.clone()),
                Err(StorageError::NotFound(_)) => return Err(PushResult::UnknownSubscriber),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the subscriber's addresses");
                    return Err(PushResult::Failed);
                }
            },
        };
        Ok((account, to))
    }
}

/// A value from the network made safe for one log field: controls escaped, cut to 256
/// characters.
fn printable(value: &str) -> String {
    value
        .chars()
        .take(256)
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes() {
        assert_eq!(printable("a\r\nb"), "a\\r\\nb");
        assert_eq!(printable(&"x".repeat(300)).len(), 256);
    }
}
