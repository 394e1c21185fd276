//! The one SQL implementation of [`Store`], over `sqlx::Any`, shared by SQLite and
//! PostgreSQL.
//!
//! The SQL text is the same for both backends: `$N` placeholders, `RETURNING`,
//! `ON CONFLICT`, BIGINT everywhere, `substr`/`length` for hierarchy matching. What
//! differs is small and lives here as [`Backend`] switches: how a write transaction
//! begins, which errors are worth a retry, and that PostgreSQL also NOTIFYs each change
//! inside the transaction.
//!
//! # Writes
//! Every write runs in [`SqlStore::retry`]: a transaction that fails with SQLite BUSY
//! or a PostgreSQL serialization failure / deadlock is run again from the start. A
//! write that touches messages begins with the UPDATE of its mailbox row, which
//! allocates UIDNEXT / HIGHESTMODSEQ: on PostgreSQL that row lock serialises the writers
//! of one mailbox across nodes, so UIDs are allocated without collisions and without
//! gaps a client could see; SQLite write transactions begin IMMEDIATE (the write lock
//! is taken at BEGIN, waited for with the busy timeout), so no snapshot ever needs an
//! upgrade, and a store's own writers take turns on a mutex before that, rather than in
//! SQLite's polling busy handler. Changes are published on the local [`ChangeBus`] only
//! after the commit.
//!
//! # Layout
//! - this file: the [`SqlStore`] type, its transactions and the retry loop, and the
//!   SQL text macros the domains share;
//! - [`accounts`], [`mailboxes`], [`messages`], [`metadata`], [`whitelists`]: each domain's write
//!   transactions, its SQL text and the statements they run;
//! - [`rows`]: rows into model types, conversions, errors and change events;
//! - [`store`]: the [`Store`] trait implemented over all of them.

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::AnyPool;
use sqlx::{Any, Transaction};

use self::rows::{backoff, map_sqlx};
use crate::changes::{Change, ChangeBus};
use crate::{Error, Result};

/// The columns `rows::account_from_row` reads, in its order.
macro_rules! account_columns {
    () => {
        "account_id, username, status, quota, created_at"
    };
}

/// The columns `rows::psk_from_row` reads, in its order.
macro_rules! psk_columns {
    () => {
        "identity, account_id, sealed_key, updated_at"
    };
}

/// What `rows::mailbox_from_row` reads, from `mailboxes m`.
macro_rules! select_mailbox {
    () => {
        "SELECT m.id, m.account_id, m.name, m.uidvalidity, m.uidnext, m.highestmodseq, m.special_use, \
         CASE WHEN EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = m.account_id AND s.name = m.name) \
         THEN 1 ELSE 0 END FROM mailboxes m"
    };
}

/// The columns `rows::meta_from_row` reads, in its order.
macro_rules! meta_columns {
    () => {
        "uid, modseq, system_flags, keywords, internal_date, internal_date_tz, size, blob_hash"
    };
}

mod accounts;
mod mailboxes;
mod messages;
mod metadata;
mod rows;
mod store;
mod whitelists;

/// The NOTIFY channel of the change bus (PostgreSQL).
pub(crate) const NOTIFY_CHANNEL: &str = "cpmstore_changes";

/// How many times a transaction is tried when the database asks for a retry.
const ATTEMPTS: u32 = 6;

/// Every system flag bit [`SystemFlags`] defines.
const SYSTEM_MASK: i64 = 0x1f;

/// The name of the one mailbox that always exists.
const INBOX: &str = "INBOX";

/// Tombstones whose data one transaction of [`Store::purge_expunged`] forgets.
const PURGE_BATCH: u64 = 500;

/// Which database is behind the `Any` pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A change as it travels through NOTIFY: the sending node's id, so that a node does not
/// deliver its own change twice (it publishes locally right after the commit).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Notice {
    pub(crate) node: String,
    pub(crate) change: Change,
}

/// Something that runs beside the store and must stop with it (the LISTEN relay).
#[async_trait]
pub(crate) trait Companion: Send + Sync + 'static {
    async fn stop(&self);
}

/// [`Store`] over SQL.
pub(crate) struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    bus: ChangeBus,
    /// Random id of this node, carried in NOTIFY payloads.
    node: String,
    /// What to name in "unreachable" errors: the backend and host, never a password.
    target: String,
    companion: Option<Box<dyn Companion>>,
    /// SQLite: this store's writers take turns here rather than in SQLite's busy
    /// handler, which polls with sleeps; other processes are still waited for there.
    writer: tokio::sync::Mutex<()>,
}

/// A transaction's failure: either already a storage error (not retried), or a database
/// error that may be transient.
enum Fail {
    Store(Error),
    Sql(sqlx::Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Store(e)
    }
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Sql(e)
    }
}

type TxResult<T> = std::result::Result<T, Fail>;

/// The mailbox row as a write transaction locked it.
#[derive(Debug, Clone, Copy)]
struct Locked {
    uidvalidity: u32,
    uidnext: u32,
    highestmodseq: u64,
}

impl SqlStore {
    pub(crate) fn new(
        pool: AnyPool,
        backend: Backend,
        bus: ChangeBus,
        node: String,
        target: String,
        companion: Option<Box<dyn Companion>>,
    ) -> Self {
        SqlStore {
            pool,
            backend,
            bus,
            node,
            target,
            companion,
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// Begins a write transaction. SQLite: IMMEDIATE, so the write lock is taken now
    /// (waiting with the busy timeout) rather than upgraded later from a stale snapshot.
    async fn begin(&self) -> TxResult<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Commits and then publishes the changes locally. On PostgreSQL the changes are also
    /// NOTIFYed inside the transaction, so other nodes hear of them only if it commits.
    async fn commit(
        &self,
        mut tx: Transaction<'static, Any>,
        changes: Vec<Change>,
    ) -> TxResult<()> {
        if self.backend == Backend::Postgres {
            for change in &changes {
                let notice = Notice {
                    node: self.node.clone(),
                    change: change.clone(),
                };
                let payload = serde_json::to_string(&notice)
                    .map_err(|e| Error::Database(format!("encoding a change: {e}")))?;
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(NOTIFY_CHANNEL)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        for change in changes {
            self.bus.publish(change);
        }
        Ok(())
    }

    /// Runs `op` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times.
    async fn retry<'s, T, F>(&'s self, mut op: F) -> Result<T>
    where
        F: FnMut() -> BoxFuture<'s, TxResult<T>> + Send,
        T: Send,
    {
        let mut attempt = 1;
        loop {
            let turn = match self.backend {
                Backend::Sqlite => Some(self.writer.lock().await),
                Backend::Postgres => None,
            };
            let outcome = op().await;
            drop(turn);
            match outcome {
                Ok(value) => return Ok(value),
                Err(Fail::Store(e)) => return Err(e),
                Err(Fail::Sql(e)) if attempt < ATTEMPTS && self.is_transient(&e) => {
                    tracing::debug!(attempt, error = %e, "transaction conflict, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(Fail::Sql(e)) => return Err(self.map_err(e)),
            }
        }
    }

    /// Whether the database asks for the transaction to be tried again.
    fn is_transient(&self, e: &sqlx::Error) -> bool {
        let sqlx::Error::Database(db) = e else {
            return false;
        };
        let Some(code) = db.code() else {
            return false;
        };
        match self.backend {
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
            Backend::Sqlite => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
            // serialization_failure, deadlock_detected
            Backend::Postgres => matches!(&*code, "40001" | "40P01"),
        }
    }

    /// Maps a database error to the storage error, naming the database (never its
    /// password) when it cannot be reached.
    fn map_err(&self, e: sqlx::Error) -> Error {
        match map_sqlx(e) {
            Error::Unreachable(msg) => Error::Unreachable(format!("{}: {msg}", self.target)),
            other => other,
        }
    }

    fn fail(&self, e: Fail) -> Error {
        match e {
            Fail::Store(e) => e,
            Fail::Sql(e) => self.map_err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mailboxes::{canonical_name, valid_mailbox_name};
    use super::messages::{apply_flags, normalise_keywords, normalise_ranges};
    use super::rows::{decode_keywords, encode_keywords};
    use super::*;
    use crate::{FlagOp, Flags, SystemFlags, UidRange};

    #[test]
    fn ranges_are_sorted_merged_and_clamped() {
        let ranges = [
            UidRange { start: 9, end: 7 },
            UidRange::one(1),
            UidRange { start: 0, end: 2 },
            UidRange { start: 3, end: 4 },
            UidRange::one(20),
        ];
        assert_eq!(normalise_ranges(&ranges), vec![(1, 4), (7, 9), (20, 20)]);
        assert_eq!(
            normalise_ranges(&[UidRange::all()]),
            vec![(1, i64::from(u32::MAX))]
        );
        assert!(normalise_ranges(&[UidRange { start: 0, end: 0 }]).is_empty());
    }

    #[test]
    fn inbox_is_case_insensitive() {
        for (given, canonical) in [
            ("inbox", "INBOX"),
            ("Inbox/Sub", "INBOX/Sub"),
            ("INBOXes", "INBOXes"),
            ("Archive/inbox", "Archive/inbox"),
        ] {
            assert_eq!(canonical_name(given), canonical);
        }
    }

    #[test]
    fn mailbox_names_are_checked() {
        assert_eq!(valid_mailbox_name("a/b/").ok().as_deref(), Some("a/b"));
        for bad in ["", "/", "/a", "a//b", "a\u{7}"] {
            assert!(
                matches!(valid_mailbox_name(bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keywords_are_sorted_and_unique() -> Result<()> {
        let kws = normalise_keywords(&["b".into(), "A".into(), "a".into(), "$Junk".into()])?;
        assert_eq!(kws, vec!["$Junk", "A", "b"]);
        assert!(normalise_keywords(&["two words".into()]).is_err());
        assert!(normalise_keywords(&["\\Seen".into()]).is_err());
        assert_eq!(decode_keywords(&encode_keywords(&kws)), kws);
        assert!(decode_keywords("").is_empty());
        Ok(())
    }

    #[test]
    fn flag_operations() {
        let current = Flags {
            system: SystemFlags(SystemFlags::SEEN),
            keywords: vec!["a".into(), "B".into()],
        };
        let given = Flags {
            system: SystemFlags(SystemFlags::FLAGGED),
            keywords: vec!["b".into(), "c".into()],
        };
        let added = apply_flags(FlagOp::Add, &current, &given);
        assert_eq!(added.system.0, SystemFlags::SEEN | SystemFlags::FLAGGED);
        assert_eq!(added.keywords, vec!["a", "B", "c"]);
        let removed = apply_flags(FlagOp::Remove, &current, &given);
        assert_eq!(removed.system.0, SystemFlags::SEEN);
        assert_eq!(removed.keywords, vec!["a"]);
        assert_eq!(apply_flags(FlagOp::Replace, &current, &given), given);
    }
}
