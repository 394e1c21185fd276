//! The change bus: after a write commits, `(account, mailbox, modseq)` is published so
//! that sessions with the mailbox selected can catch up. In one process this is a
//! tokio broadcast; on PostgreSQL the backend also sends it with NOTIFY and relays what
//! other nodes notify into the local broadcast.

use tokio::sync::broadcast;

use crate::{AccountId, MailboxId};

/// What kind of change happened (a hint; sessions always catch up from the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Messages were added (APPEND, COPY, MOVE, push delivery).
    Append,
    /// Flags of messages changed.
    Flags,
    /// Messages were expunged (EXPUNGE, MOVE, INBOX renamed).
    Expunge,
    /// Mailbox created, renamed, deleted or (un)subscribed.
    Mailboxes,
    /// A metadata entry changed (`mailbox: None` for a server entry).
    Metadata,
    /// Account created, enabled or disabled, removed; its credentials, PSK, addresses,
    /// quota or whitelists changed.
    Account,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Whose data changed.
    pub account: AccountId,
    /// The mailbox, or `None` for account-level changes.
    pub mailbox: Option<MailboxId>,
    /// The mailbox's HIGHESTMODSEQ after the change (0 for account-level changes).
    pub modseq: u64,
    /// What happened.
    pub kind: ChangeKind,
}

/// Capacity of the in-process broadcast; a receiver that lags behind gets
/// `RecvError::Lagged` and must resynchronise from the store.
const CAPACITY: usize = 4096;

/// The in-process side of the change bus.
#[derive(Debug, Clone)]
pub struct ChangeBus {
    tx: broadcast::Sender<Change>,
}

impl Default for ChangeBus {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeBus {
    /// A bus nobody listens to yet.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        ChangeBus { tx }
    }

    /// Delivers a committed change to every local subscriber.
    pub fn publish(&self, change: Change) {
        // No receivers is not an error: nobody is listening right now.
        let _ = self.tx.send(change);
    }

    /// Listens to every change published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}
