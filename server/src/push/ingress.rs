//! What every push ingress (HTTP, SIP) and `whitelist check` share: the whitelist a
//! push is judged by.

use std::time::Duration;

use cpmstore_storage::{AccountId, Error as StorageError, Store, WhitelistEntry};

use super::whitelist::{KIND_FQDN, resolve_fqdns};
use crate::config::Config;

/// How long one FQDN entry may take to resolve (at load, and per push with
/// `push.resolve_on_push`).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The whitelist of (account, context) as a push is judged by it: `None` when none is
/// provisioned. With `push.resolve_on_push`, FQDN entries are resolved again now; a
/// name that does not resolve keeps the addresses it had at load.
pub async fn whitelist_for(
    store: &dyn Store,
    config: &Config,
    account: AccountId,
    context: &str,
) -> Result<Option<Vec<WhitelistEntry>>, StorageError> {
    let Some(whitelist) = store.whitelist(account, context).await? else {
        return Ok(None);
    };
    let mut entries = whitelist.entries;
    if config.push.resolve_on_push && entries.iter().any(|e| e.kind == KIND_FQDN) {
        for failure in resolve_fqdns(&mut entries, RESOLVE_TIMEOUT).await {
            tracing::warn!(
                name = %failure.name,
                reason = %failure.reason,
                "whitelist FQDN did not resolve at push time; using the addresses from load"
            );
        }
    }
    Ok(Some(entries))
}
