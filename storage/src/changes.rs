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
    Append,
    Flags,
    Expunge,
    /// Mailbox created, renamed, deleted or (un)subscribed.
    Mailboxes,
    Metadata,
    /// Account disabled, removed, credentials or PSK changed.
    Account,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub account: AccountId,
    pub mailbox: Option<MailboxId>,
    pub modseq: u64,
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
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        ChangeBus { tx }
    }

    /// Delivers a committed change to every local subscriber.
    pub fn publish(&self, change: Change) {
        // No receivers is not an error: nobody is listening right now.
        let _ = self.tx.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}
