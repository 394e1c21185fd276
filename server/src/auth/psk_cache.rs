//! The PSK table the TLS handshake reads: identity -> (account, key), in memory, read
//! synchronously from OpenSSL's PSK callback.
//!
//! Filled from storage at start ([`PskCache::reload`]); then [`PskCache::run_refresher`]
//! reloads it whenever the change bus carries an account-level change (a PSK set or
//! removed, an account disabled or removed: on PostgreSQL that includes other nodes'
//! changes) and, as a safety net for changes no notification reports (the CLI on
//! SQLite is another process; a NOTIFY can be lost), every `psk.refresh_secs`. Only
//! active accounts' PSKs are loaded, so disabling a subscriber stops their PSK.
//!
//! Keys are sealed at rest; here they are open, in [`SecretBytes`] that are wiped
//! when a reload replaces them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cpmstore_storage::{AccountId, ChangeKind, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::psk::Kek;
use super::secret::SecretBytes;

/// Who a PSK-TLS connection authenticated as: the identity the client sent and the
/// account whose key it proved to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskPeer {
    pub identity: String,
    pub account: AccountId,
}

struct Entry {
    account: AccountId,
    key: SecretBytes,
}

/// identity -> (account, key) of every active account.
pub struct PskCache {
    kek: Kek,
    table: RwLock<Arc<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for PskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskCache")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl PskCache {
    /// An empty cache that opens keys with `kek`.
    pub fn new(kek: Kek) -> Arc<PskCache> {
        Arc::new(PskCache {
            kek,
            table: RwLock::new(Arc::new(HashMap::new())),
        })
    }

    fn current(&self) -> Arc<HashMap<String, Entry>> {
        // The table is replaced whole, never modified in place, so a poisoned lock
        // still guards a consistent value.
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Number of identities loaded.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// True when no identity is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the key of `identity` into `out` and returns the peer and the key length;
    /// `None` for an unknown identity or a key longer than `out`. Synchronous and
    /// allocation-light: called inside the TLS handshake.
    pub fn key_into(&self, identity: &str, out: &mut [u8]) -> Option<(PskPeer, usize)> {
        let table = self.current();
        let entry = table.get(identity)?;
        let key = entry.key.expose();
        let slot = out.get_mut(..key.len())?;
        slot.copy_from_slice(key);
        Some((
            PskPeer {
                identity: identity.to_owned(),
                account: entry.account,
            },
            key.len(),
        ))
    }

    /// The account `identity` belongs to now, if it is loaded.
    pub fn account_of(&self, identity: &str) -> Option<AccountId> {
        self.current().get(identity).map(|e| e.account)
    }

    /// Replaces the table with what storage holds now. A key that cannot be opened
    /// (another KEK, tampering) is left out with a warning naming its identity.
    pub async fn reload(&self, store: &dyn Store) -> Result<usize, cpmstore_storage::Error> {
        let records = store.all_psks().await?;
        let mut table = HashMap::with_capacity(records.len());
        for record in records {
            match self.kek.open(&record.identity, &record.sealed_key) {
                Ok(key) => {
                    table.insert(
                        record.identity,
                        Entry {
                            account: record.account,
                            key,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(identity = %record.identity, error = %e, "PSK left out");
                }
            }
        }
        let count = table.len();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        Ok(count)
    }

    /// Keeps the table current until `shutdown` is cancelled: reloads on account-level
    /// changes from the bus (and when the bus lagged), and every `every`.
    pub async fn run_refresher(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut changes = Some(store.changes().subscribe());
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last = self.len();
        loop {
            let next_change = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                received = next_change => match received {
                    Ok(change) if change.kind != ChangeKind::Account => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        // Several changes often come together (subscriber add sets
                        // credentials, addresses, PSK): take them in one reload.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if let Some(rx) = changes.as_mut() {
                            while rx.try_recv().is_ok() {}
                        }
                    }
                    Err(RecvError::Closed) => {
                        // No bus any more: the periodic reload carries on alone.
                        changes = None;
                        continue;
                    }
                },
            }
            match self.reload(store.as_ref()).await {
                Ok(count) => {
                    if count != last {
                        tracing::info!(identities = count, "PSK table reloaded");
                    }
                    last = count;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PSK table reload failed; keeping the previous one");
                }
            }
        }
    }
}
