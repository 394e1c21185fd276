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

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::error::ErrorKind;
use sqlx::{Any, Connection, Row, Transaction};
use sqlx::{AnyConnection, AnyPool};

use crate::changes::{Change, ChangeBus, ChangeKind};
use crate::{
    Account, AccountId, AccountStatus, Appended, ConditionalStore, Copied, CredentialRecord, Error,
    FlagOp, Flags, Mailbox, MailboxChanges, MailboxCounts, MailboxId, MessageMeta, NewAccount,
    NewMailbox, NewMessage, PskRecord, Result, Store, SystemFlags, UidRange, Whitelist,
    WhitelistEntry,
};

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

    // --- transactions ----------------------------------------------------------------

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

    // --- reads -----------------------------------------------------------------------

    async fn read_account(&self, sql: &'static str, key: Key<'_>) -> TxResult<Option<Account>> {
        let query = sqlx::query(sql);
        let query = match key {
            Key::Id(id) => query.bind(id),
            Key::Text(text) => query.bind(text.to_owned()),
        };
        match query.fetch_optional(&self.pool).await? {
            Some(row) => Ok(Some(account_from_row(&row)?)),
            None => Ok(None),
        }
    }

    async fn require_account(&self, id: AccountId) -> TxResult<()> {
        let row = sqlx::query("SELECT account_id FROM accounts WHERE account_id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(_) => Ok(()),
            None => Err(not_found_account(id)),
        }
    }

    async fn read_mailbox(&self, account: AccountId, mailbox: MailboxId) -> TxResult<Mailbox> {
        let row = sqlx::query(SELECT_MAILBOX_BY_ID)
            .bind(account.0)
            .bind(mailbox.0)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(mailbox_from_row(&row)?),
            None => Err(not_found_mailbox(mailbox)),
        }
    }

    // --- write transactions ------------------------------------------------------------

    async fn create_account_tx(&self, new: &NewAccount) -> TxResult<Account> {
        let username = new.username.as_str();
        if username.is_empty() || username.chars().any(char::is_control) {
            return Err(Error::Invalid("username must be non-empty printable text".into()).into());
        }
        let quota = quota_to_db(new.quota)?;
        let mut addresses: Vec<&str> = Vec::new();
        for address in &new.addresses {
            if address.is_empty() {
                return Err(Error::Invalid("empty address".into()).into());
            }
            if !addresses.contains(&address.as_str()) {
                addresses.push(address);
            }
        }
        // INBOX first, always; then the others, each name once.
        let mut mailboxes: Vec<(String, Option<String>, bool)> =
            vec![(INBOX.to_owned(), None, true)];
        for mailbox in &new.mailboxes {
            let name = valid_mailbox_name(&mailbox.name)?;
            match mailboxes.iter_mut().find(|(n, _, _)| *n == name) {
                Some(existing) if name == INBOX => {
                    existing.1 = mailbox.special_use.clone();
                    existing.2 = mailbox.subscribed;
                }
                Some(_) => {}
                None => mailboxes.push((name, mailbox.special_use.clone(), mailbox.subscribed)),
            }
        }
        let created_at = now();
        let first_uidvalidity = created_at.max(1);
        let count = i64::try_from(mailboxes.len()).unwrap_or(i64::MAX);
        let last_uidvalidity = first_uidvalidity.saturating_add(count - 1);
        if last_uidvalidity > i64::from(u32::MAX) {
            return Err(Error::Database("UIDVALIDITY space exhausted".into()).into());
        }

        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "INSERT INTO accounts (username, status, quota, created_at, last_uidvalidity) \
             VALUES ($1, 'active', $2, $3, $4) RETURNING account_id",
        )
        .bind(username)
        .bind(quota)
        .bind(created_at)
        .bind(last_uidvalidity)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| exists_or(e, || format!("account {username}")))?;
        let id = AccountId(row.try_get(0)?);

        if let Some(cred) = &new.credentials {
            upsert_credentials(&mut tx, id, cred).await?;
        }
        for address in addresses {
            sqlx::query("INSERT INTO addresses (account_id, address) VALUES ($1, $2)")
                .bind(id.0)
                .bind(address)
                .execute(&mut *tx)
                .await
                .map_err(|e| exists_or(e, || format!("address {address}")))?;
        }
        for (uidvalidity, (name, special_use, subscribed)) in (first_uidvalidity..).zip(&mailboxes)
        {
            insert_mailbox(&mut tx, id, name, uidvalidity, special_use.as_deref()).await?;
            if *subscribed {
                subscribe(&mut tx, id, name).await?;
            }
        }
        let account = Account {
            id,
            username: username.to_owned(),
            status: AccountStatus::Active,
            quota: new.quota,
            created_at,
        };
        self.commit(tx, vec![account_change(id)]).await?;
        Ok(account)
    }

    async fn update_account_tx(&self, id: AccountId, update: AccountUpdate) -> TxResult<()> {
        let mut tx = self.begin().await?;
        let done = match update {
            AccountUpdate::Status(status) => {
                sqlx::query("UPDATE accounts SET status = $2 WHERE account_id = $1")
                    .bind(id.0)
                    .bind(status)
                    .execute(&mut *tx)
                    .await?
            }
            AccountUpdate::Quota(quota) => {
                sqlx::query("UPDATE accounts SET quota = $2 WHERE account_id = $1")
                    .bind(id.0)
                    .bind(quota)
                    .execute(&mut *tx)
                    .await?
            }
        };
        if done.rows_affected() == 0 {
            return Err(not_found_account(id));
        }
        self.commit(tx, vec![account_change(id)]).await
    }

    async fn remove_account_tx(&self, id: AccountId) -> TxResult<()> {
        let mut tx = self.begin().await?;
        // Lock the account first; then every table, children before parents, so that no
        // row of the account is left whatever the foreign keys say.
        let locked = sqlx::query(
            "UPDATE accounts SET status = 'disabled' WHERE account_id = $1 RETURNING account_id",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        if locked.is_none() {
            return Err(not_found_account(id));
        }
        for table in ACCOUNT_TABLES_CHILDREN_FIRST {
            let sql = format!("DELETE FROM {table} WHERE account_id = $1");
            sqlx::query(&sql).bind(id.0).execute(&mut *tx).await?;
        }
        self.commit(tx, vec![account_change(id)]).await
    }

    async fn set_credentials_tx(&self, id: AccountId, cred: &CredentialRecord) -> TxResult<()> {
        let mut tx = self.begin().await?;
        require_account_tx(&mut tx, id).await?;
        upsert_credentials(&mut tx, id, cred).await?;
        self.commit(tx, vec![account_change(id)]).await
    }

    async fn set_psk_tx(&self, id: AccountId, identity: &str, sealed_key: &[u8]) -> TxResult<()> {
        if identity.is_empty() {
            return Err(Error::Invalid("empty PSK identity".into()).into());
        }
        let mut tx = self.begin().await?;
        require_account_tx(&mut tx, id).await?;
        let owner = sqlx::query("SELECT account_id FROM psk_identities WHERE identity = $1")
            .bind(identity)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(owner) = owner {
            let owner: i64 = owner.try_get(0)?;
            if owner != id.0 {
                return Err(Error::AlreadyExists(format!("PSK identity {identity}")).into());
            }
        }
        sqlx::query("DELETE FROM psk_identities WHERE account_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO psk_identities (account_id, identity, sealed_key, updated_at) VALUES ($1, $2, $3, $4)")
            .bind(id.0)
            .bind(identity)
            .bind(sealed_key.to_vec())
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(|e| exists_or(e, || format!("PSK identity {identity}")))?;
        self.commit(tx, vec![account_change(id)]).await
    }

    async fn remove_psk_tx(&self, id: AccountId) -> TxResult<()> {
        let mut tx = self.begin().await?;
        require_account_tx(&mut tx, id).await?;
        let done = sqlx::query("DELETE FROM psk_identities WHERE account_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("PSK of account {}", id.0)).into());
        }
        self.commit(tx, vec![account_change(id)]).await
    }

    async fn add_address_tx(&self, id: AccountId, address: &str) -> TxResult<()> {
        if address.is_empty() {
            return Err(Error::Invalid("empty address".into()).into());
        }
        let mut tx = self.begin().await?;
        require_account_tx(&mut tx, id).await?;
        sqlx::query("INSERT INTO addresses (account_id, address) VALUES ($1, $2)")
            .bind(id.0)
            .bind(address)
            .execute(&mut *tx)
            .await
            .map_err(|e| exists_or(e, || format!("address {address}")))?;
        self.commit(tx, vec![account_change(id)]).await
    }

    async fn remove_address_tx(&self, id: AccountId, address: &str) -> TxResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM addresses WHERE account_id = $1 AND address = $2")
            .bind(id.0)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("address {address} of account {}", id.0)).into());
        }
        self.commit(tx, vec![account_change(id)]).await
    }

    async fn create_mailbox_tx(&self, id: AccountId, mailbox: &NewMailbox) -> TxResult<Mailbox> {
        let name = valid_mailbox_name(&mailbox.name)?;
        if name == INBOX {
            return Err(Error::AlreadyExists(INBOX.into()).into());
        }
        let mut tx = self.begin().await?;
        let uidvalidity = next_uidvalidity(&mut tx, id).await?;
        let mailbox_id = insert_mailbox(
            &mut tx,
            id,
            &name,
            uidvalidity,
            mailbox.special_use.as_deref(),
        )
        .await?;
        if mailbox.subscribed {
            subscribe(&mut tx, id, &name).await?;
        }
        let created = Mailbox {
            id: mailbox_id,
            account: id,
            name,
            uidvalidity: to_u32(uidvalidity, "uidvalidity")?,
            uidnext: 1,
            highestmodseq: 1,
            special_use: mailbox.special_use.clone(),
            subscribed: mailbox.subscribed,
        };
        self.commit(tx, vec![mailbox_change(id, mailbox_id, 1)])
            .await?;
        Ok(created)
    }

    async fn rename_mailbox_tx(&self, id: AccountId, from: &str, to: &str) -> TxResult<()> {
        let from = canonical_name(from);
        let to = valid_mailbox_name(to)?;
        if to == INBOX || to == from {
            return Err(Error::AlreadyExists(to).into());
        }
        if from == INBOX {
            return self.rename_inbox_tx(id, &to).await;
        }
        if to.len() > from.len() && to.starts_with(&from) && to[from.len()..].starts_with('/') {
            return Err(Error::Invalid(format!("cannot rename {from} under itself")).into());
        }
        let mut tx = self.begin().await?;
        // Lock the mailbox row first (PostgreSQL: against concurrent writers of it).
        let top = sqlx::query(
            "UPDATE mailboxes SET highestmodseq = highestmodseq WHERE account_id = $1 AND name = $2 \
             RETURNING id, highestmodseq",
        )
        .bind(id.0)
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("mailbox {from}")))?;
        let mut renamed = vec![(
            MailboxId(top.try_get(0)?),
            from.clone(),
            top.try_get::<i64, _>(1)?,
        )];
        let children = sqlx::query(
            "SELECT id, name, highestmodseq FROM mailboxes WHERE account_id = $1 \
             AND length(name) > length($2) AND substr(name, 1, length($2) + 1) = $2 || '/' ORDER BY name",
        )
        .bind(id.0)
        .bind(from.as_str())
        .fetch_all(&mut *tx)
        .await?;
        for row in children {
            renamed.push((MailboxId(row.try_get(0)?), row.try_get(1)?, row.try_get(2)?));
        }
        // Every new name must be free: then no rename in the loop below can collide.
        let moves: Vec<(MailboxId, String, String, i64)> = renamed
            .into_iter()
            .map(|(mid, old, modseq)| {
                let new = format!("{to}{}", &old[from.len()..]);
                (mid, old, new, modseq)
            })
            .collect();
        for (_, _, new, _) in &moves {
            let taken = sqlx::query("SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2")
                .bind(id.0)
                .bind(new.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                return Err(Error::AlreadyExists(new.clone()).into());
            }
        }
        let mut changes = Vec::with_capacity(moves.len());
        for (mid, old, new, modseq) in &moves {
            sqlx::query("UPDATE mailboxes SET name = $3 WHERE account_id = $1 AND id = $2")
                .bind(id.0)
                .bind(mid.0)
                .bind(new.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| exists_or(e, || new.clone()))?;
            rename_subscription(&mut tx, id, old, new).await?;
            changes.push(mailbox_change(id, *mid, to_u64(*modseq, "modseq")?));
        }
        self.commit(tx, changes).await
    }

    /// RFC 3501 6.3.5: renaming INBOX moves its messages to a new mailbox and leaves
    /// INBOX empty; its inferiors are unaffected. The messages keep their UIDs and
    /// MODSEQs (the new mailbox has its own UIDVALIDITY); INBOX records tombstones.
    async fn rename_inbox_tx(&self, id: AccountId, to: &str) -> TxResult<()> {
        let mut tx = self.begin().await?;
        let inbox = sqlx::query(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE account_id = $1 AND name = $2 \
             RETURNING id, uidnext, highestmodseq",
        )
        .bind(id.0)
        .bind(INBOX)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("INBOX of account {}", id.0)))?;
        let inbox_id: i64 = inbox.try_get(0)?;
        let inbox_uidnext: i64 = inbox.try_get(1)?;
        let inbox_modseq: i64 = inbox.try_get(2)?;

        let uidvalidity = next_uidvalidity(&mut tx, id).await?;
        let new_id = insert_mailbox(&mut tx, id, to, uidvalidity, None).await?;
        // The new mailbox continues INBOX's counters so that every moved message's UID
        // and MODSEQ stay below its UIDNEXT and HIGHESTMODSEQ; nothing in it is \Recent.
        sqlx::query(
            "UPDATE mailboxes SET uidnext = $3, highestmodseq = $4, recent_uid = $3, recent_prev = $3 \
             WHERE account_id = $1 AND id = $2",
        )
        .bind(id.0)
        .bind(new_id.0)
        .bind(inbox_uidnext)
        .bind(inbox_modseq)
        .execute(&mut *tx)
        .await?;
        let moved = sqlx::query(SELECT_MAILBOX_MESSAGES)
            .bind(id.0)
            .bind(inbox_id)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE messages SET mailbox_id = $3 WHERE account_id = $1 AND mailbox_id = $2",
        )
        .bind(id.0)
        .bind(inbox_id)
        .bind(new_id.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO mailbox_keywords (account_id, mailbox_id, folded, keyword) \
             SELECT account_id, $3, folded, keyword FROM mailbox_keywords WHERE account_id = $1 AND mailbox_id = $2",
        )
        .bind(id.0)
        .bind(inbox_id)
        .bind(new_id.0)
        .execute(&mut *tx)
        .await?;
        for row in &moved {
            let meta = meta_from_row(row)?;
            insert_tombstone(&mut tx, id, inbox_id, &meta, inbox_modseq).await?;
        }
        let inbox_modseq = to_u64(inbox_modseq, "modseq")?;
        let changes = vec![
            Change {
                account: id,
                mailbox: Some(MailboxId(inbox_id)),
                modseq: inbox_modseq,
                kind: ChangeKind::Expunge,
            },
            mailbox_change(id, new_id, inbox_modseq),
        ];
        self.commit(tx, changes).await
    }

    async fn delete_mailbox_tx(&self, id: AccountId, name: &str) -> TxResult<()> {
        let name = canonical_name(name);
        if name == INBOX {
            return Err(Error::Invalid("INBOX cannot be deleted".into()).into());
        }
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE account_id = $1 AND name = $2 \
             RETURNING id, highestmodseq",
        )
        .bind(id.0)
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("mailbox {name}")))?;
        let mailbox = MailboxId(row.try_get(0)?);
        let modseq = to_u64(row.try_get(1)?, "modseq")?;
        let hashes = sqlx::query(
            "SELECT blob_hash FROM messages WHERE account_id = $1 AND mailbox_id = $2 \
             UNION SELECT blob_hash FROM expunged WHERE account_id = $1 AND mailbox_id = $2 \
             AND blob_hash IS NOT NULL",
        )
        .bind(id.0)
        .bind(mailbox.0)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<std::result::Result<BTreeSet<_>, _>>()?;
        for table in ["messages", "expunged", "mailbox_keywords", "metadata"] {
            let sql = format!("DELETE FROM {table} WHERE account_id = $1 AND mailbox_id = $2");
            sqlx::query(&sql)
                .bind(id.0)
                .bind(mailbox.0)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM mailboxes WHERE account_id = $1 AND id = $2")
            .bind(id.0)
            .bind(mailbox.0)
            .execute(&mut *tx)
            .await?;
        self.collect_blobs(&mut tx, id, &hashes).await?;
        self.commit(tx, vec![mailbox_change(id, mailbox, modseq)])
            .await
    }

    async fn set_subscribed_tx(&self, id: AccountId, name: &str, subscribed: bool) -> TxResult<()> {
        let name = canonical_name(name);
        if name.is_empty() {
            return Err(Error::Invalid("empty mailbox name".into()).into());
        }
        let mut tx = self.begin().await?;
        require_account_tx(&mut tx, id).await?;
        if subscribed {
            subscribe(&mut tx, id, &name).await?;
        } else {
            sqlx::query("DELETE FROM subscriptions WHERE account_id = $1 AND name = $2")
                .bind(id.0)
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let mailbox = sqlx::query(
            "SELECT id, highestmodseq FROM mailboxes WHERE account_id = $1 AND name = $2",
        )
        .bind(id.0)
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let change = match mailbox {
            Some(row) => mailbox_change(
                id,
                MailboxId(row.try_get(0)?),
                to_u64(row.try_get(1)?, "modseq")?,
            ),
            None => Change {
                account: id,
                mailbox: None,
                modseq: 0,
                kind: ChangeKind::Mailboxes,
            },
        };
        self.commit(tx, vec![change]).await
    }

    async fn claim_recent_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
    ) -> TxResult<std::ops::Range<u32>> {
        // One statement: SET expressions see the row as it was, so recent_prev gets the
        // old mark while recent_uid moves to UIDNEXT; RETURNING sees the new row. Only
        // when there is something to claim: every session with the mailbox selected
        // asks after each new message, and all but the first must not write.
        let row = sqlx::query(
            "UPDATE mailboxes SET recent_prev = recent_uid, recent_uid = uidnext \
             WHERE account_id = $1 AND id = $2 AND recent_uid < uidnext \
             RETURNING recent_prev, recent_uid",
        )
        .bind(account.0)
        .bind(mailbox.0)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let start = to_u32(row.try_get(0)?, "recent uid")?;
                let end = to_u32(row.try_get(1)?, "recent uid")?;
                Ok(start..end.max(start))
            }
            // Nothing unclaimed (or no such mailbox: NotFound from the read).
            None => {
                let mark = self.unclaimed_recent_tx(account, mailbox).await?;
                Ok(mark..mark)
            }
        }
    }

    async fn unclaimed_recent_tx(&self, account: AccountId, mailbox: MailboxId) -> TxResult<u32> {
        let row = sqlx::query("SELECT recent_uid FROM mailboxes WHERE account_id = $1 AND id = $2")
            .bind(account.0)
            .bind(mailbox.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found_mailbox(mailbox))?;
        Ok(to_u32(row.try_get(0)?, "recent uid")?)
    }

    async fn append_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        msg: &NewMessage,
        keywords: &[String],
    ) -> TxResult<Appended> {
        let size = i64::try_from(msg.content.len())
            .map_err(|_| Error::Invalid("message too large".into()))?;
        let hash = hex::encode(Sha256::digest(&msg.content));
        let mut tx = self.begin().await?;
        // First statement: allocate UID and MODSEQ by updating (and so locking) the
        // mailbox row.
        let row = sqlx::query(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 \
             WHERE account_id = $1 AND id = $2 RETURNING uidvalidity, uidnext, highestmodseq",
        )
        .bind(account.0)
        .bind(mailbox.0)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found_mailbox(mailbox))?;
        let uidvalidity = to_u32(row.try_get(0)?, "uidvalidity")?;
        let uid: i64 = row.try_get::<i64, _>(1)? - 1;
        let modseq: i64 = row.try_get(2)?;
        if uid >= i64::from(u32::MAX) {
            return Err(Error::Invalid("mailbox UID space exhausted".into()).into());
        }
        check_quota(&mut tx, account, size).await?;
        sqlx::query(
            "INSERT INTO blobs (account_id, hash, size, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, hash) DO NOTHING",
        )
        .bind(account.0)
        .bind(hash.as_str())
        .bind(size)
        .bind(msg.content.as_slice())
        .execute(&mut *tx)
        .await?;
        let row = MessageRow {
            uid,
            modseq,
            internal_date: msg.internal_date.unwrap_or_else(now),
            internal_date_tz: i64::from(msg.internal_date_tz),
            size,
            system_flags: i64::from(msg.flags.system.0) & SYSTEM_MASK,
            keywords: &encode_keywords(keywords),
            blob_hash: &hash,
        };
        insert_message(&mut tx, account, mailbox, &row).await?;
        record_keywords(&mut tx, account, mailbox, keywords).await?;
        let modseq = to_u64(modseq, "modseq")?;
        let appended = Appended {
            mailbox,
            uidvalidity,
            uid: to_u32(uid, "uid")?,
            modseq,
        };
        self.commit(
            tx,
            vec![message_change(account, mailbox, modseq, ChangeKind::Append)],
        )
        .await?;
        Ok(appended)
    }

    async fn store_flags_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        ranges: &[(i64, i64)],
        op: FlagOp,
        given: &Flags,
        unchanged_since: Option<u64>,
    ) -> TxResult<ConditionalStore> {
        let limit = unchanged_since.map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let mut tx = self.begin().await?;
        let locked = lock_mailbox(&mut tx, account, mailbox, 1).await?;
        let modseq = locked.highestmodseq;
        let modseq_db = to_i64(modseq)?;
        // The messages that fail the test, read under the lock before anything changes
        // (what this transaction writes gets a modseq above the limit).
        let mut modified = Vec::new();
        if unchanged_since.is_some() {
            for &(lo, hi) in ranges {
                let rows = sqlx::query(
                    "SELECT uid FROM messages WHERE account_id = $1 AND mailbox_id = $2 \
                     AND uid >= $3 AND uid <= $4 AND modseq > $5 ORDER BY uid",
                )
                .bind(account.0)
                .bind(mailbox.0)
                .bind(lo)
                .bind(hi)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                for row in rows {
                    modified.push(to_u32(row.try_get(0)?, "uid")?);
                }
            }
            modified.sort_unstable();
            modified.dedup();
        }
        let mut changed = Vec::new();
        let bits = i64::from(given.system.0) & SYSTEM_MASK;
        let system_only = given.keywords.is_empty() && op != FlagOp::Replace;
        for &(lo, hi) in ranges {
            if system_only {
                // Add or remove system flags: one statement per range, touching only the
                // rows it changes.
                let sql = match op {
                    FlagOp::Remove => STORE_REMOVE_SYSTEM,
                    _ => STORE_ADD_SYSTEM,
                };
                let rows = sqlx::query(sql)
                    .bind(account.0)
                    .bind(mailbox.0)
                    .bind(lo)
                    .bind(hi)
                    .bind(limit)
                    .bind(if op == FlagOp::Remove {
                        SYSTEM_MASK & !bits
                    } else {
                        bits
                    })
                    .bind(modseq_db)
                    .fetch_all(&mut *tx)
                    .await?;
                for row in rows {
                    changed.push(meta_from_row(&row)?);
                }
                continue;
            }
            let rows = sqlx::query(SELECT_RANGE_UNCHANGED_SINCE)
                .bind(account.0)
                .bind(mailbox.0)
                .bind(lo)
                .bind(hi)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let mut meta = meta_from_row(&row)?;
                let flags = apply_flags(op, &meta.flags, given);
                if flags == meta.flags {
                    continue;
                }
                sqlx::query(
                    "UPDATE messages SET system_flags = $4, keywords = $5, modseq = $6 \
                     WHERE account_id = $1 AND mailbox_id = $2 AND uid = $3",
                )
                .bind(account.0)
                .bind(mailbox.0)
                .bind(i64::from(meta.uid))
                .bind(i64::from(flags.system.0))
                .bind(encode_keywords(&flags.keywords))
                .bind(modseq_db)
                .execute(&mut *tx)
                .await?;
                meta.flags = flags;
                meta.modseq = modseq;
                changed.push(meta);
            }
        }
        if changed.is_empty() {
            // Nothing changed: leave HIGHESTMODSEQ as it was.
            tx.rollback().await?;
            return Ok(ConditionalStore { changed, modified });
        }
        if op != FlagOp::Remove {
            record_keywords(&mut tx, account, mailbox, &given.keywords).await?;
        }
        self.commit(
            tx,
            vec![message_change(account, mailbox, modseq, ChangeKind::Flags)],
        )
        .await?;
        changed.sort_by_key(|m| m.uid);
        Ok(ConditionalStore { changed, modified })
    }

    async fn copy_tx(
        &self,
        account: AccountId,
        from: MailboxId,
        ranges: &[(i64, i64)],
        to: MailboxId,
        expunge_source: bool,
    ) -> TxResult<Copied> {
        let mut tx = self.begin().await?;
        // Lock both mailbox rows, lower id first, so that two opposite moves cannot
        // deadlock. The source is locked even for a copy: an expunge of it cannot then
        // collect a blob this copy is about to reference.
        let source_bump = i64::from(expunge_source);
        let (source, dest) = if from == to {
            let locked = lock_mailbox(&mut tx, account, to, 1).await?;
            (locked, locked)
        } else if from.0 < to.0 {
            let source = lock_mailbox(&mut tx, account, from, source_bump).await?;
            (source, lock_mailbox(&mut tx, account, to, 1).await?)
        } else {
            let dest = lock_mailbox(&mut tx, account, to, 1).await?;
            (
                lock_mailbox(&mut tx, account, from, source_bump).await?,
                dest,
            )
        };
        let mut messages = Vec::new();
        for &(lo, hi) in ranges {
            let rows = sqlx::query(SELECT_RANGE)
                .bind(account.0)
                .bind(from.0)
                .bind(lo)
                .bind(hi)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                messages.push(meta_from_row(&row)?);
            }
        }
        if messages.is_empty() {
            tx.rollback().await?;
            return Ok(Copied {
                uidvalidity: dest.uidvalidity,
                source_uids: Vec::new(),
                dest_uids: Vec::new(),
            });
        }
        if !expunge_source {
            let extra = messages.iter().map(|m| m.size).sum::<u64>();
            check_quota(&mut tx, account, to_i64(extra)?).await?;
        }
        let count = u32::try_from(messages.len())
            .map_err(|_| Error::Invalid("too many messages".into()))?;
        let first_uid = dest.uidnext;
        if u64::from(first_uid) + u64::from(count) > u64::from(u32::MAX) {
            return Err(Error::Invalid("mailbox UID space exhausted".into()).into());
        }
        sqlx::query(
            "UPDATE mailboxes SET uidnext = uidnext + $3 WHERE account_id = $1 AND id = $2",
        )
        .bind(account.0)
        .bind(to.0)
        .bind(i64::from(count))
        .execute(&mut *tx)
        .await?;
        let source_uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        if expunge_source {
            // Before the inserts: with from == to the new UIDs may fall in the ranges.
            let modseq = to_i64(source.highestmodseq)?;
            for meta in &messages {
                sqlx::query(
                    "DELETE FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND uid = $3",
                )
                .bind(account.0)
                .bind(from.0)
                .bind(i64::from(meta.uid))
                .execute(&mut *tx)
                .await?;
                insert_tombstone(&mut tx, account, from.0, meta, modseq).await?;
            }
        }
        let dest_modseq = to_i64(dest.highestmodseq)?;
        let mut dest_uids = Vec::with_capacity(messages.len());
        let mut keywords: Vec<String> = Vec::new();
        for (uid, meta) in (first_uid..).zip(&messages) {
            let row = MessageRow {
                uid: i64::from(uid),
                modseq: dest_modseq,
                internal_date: meta.internal_date,
                internal_date_tz: i64::from(meta.internal_date_tz),
                size: to_i64(meta.size)?,
                system_flags: i64::from(meta.flags.system.0),
                keywords: &encode_keywords(&meta.flags.keywords),
                blob_hash: &meta.blob,
            };
            insert_message(&mut tx, account, to, &row).await?;
            dest_uids.push(uid);
            keywords.extend(meta.flags.keywords.iter().cloned());
        }
        let keywords = normalise_keywords(&keywords)?;
        record_keywords(&mut tx, account, to, &keywords).await?;
        let mut changes = vec![message_change(
            account,
            to,
            dest.highestmodseq,
            ChangeKind::Append,
        )];
        if expunge_source {
            changes.push(message_change(
                account,
                from,
                source.highestmodseq,
                ChangeKind::Expunge,
            ));
        }
        self.commit(tx, changes).await?;
        Ok(Copied {
            uidvalidity: dest.uidvalidity,
            source_uids,
            dest_uids,
        })
    }

    async fn expunge_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        ranges: &[(i64, i64)],
    ) -> TxResult<Vec<u32>> {
        let mut tx = self.begin().await?;
        let locked = lock_mailbox(&mut tx, account, mailbox, 1).await?;
        let modseq = to_i64(locked.highestmodseq)?;
        let mut gone = Vec::new();
        for &(lo, hi) in ranges {
            let rows = sqlx::query(EXPUNGE_RANGE)
                .bind(account.0)
                .bind(mailbox.0)
                .bind(lo)
                .bind(hi)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                gone.push(meta_from_row(&row)?);
            }
        }
        if gone.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        gone.sort_unstable_by_key(|m| m.uid);
        // The tombstones keep the blobs: nothing is collected until the data is purged.
        for meta in &gone {
            insert_tombstone(&mut tx, account, mailbox.0, meta, modseq).await?;
        }
        self.commit(
            tx,
            vec![message_change(
                account,
                mailbox,
                locked.highestmodseq,
                ChangeKind::Expunge,
            )],
        )
        .await?;
        Ok(gone.into_iter().map(|m| m.uid).collect())
    }

    /// Deletes the blobs among `hashes` that no message of the account references, nor
    /// any tombstone still keeping an expunged message's data.
    async fn collect_blobs(
        &self,
        tx: &mut AnyConnection,
        account: AccountId,
        hashes: &BTreeSet<String>,
    ) -> TxResult<()> {
        const GC: &str = "DELETE FROM blobs WHERE account_id = $1 AND hash = $2 \
                          AND NOT EXISTS (SELECT 1 FROM messages WHERE account_id = $1 AND blob_hash = $2) \
                          AND NOT EXISTS (SELECT 1 FROM expunged WHERE account_id = $1 AND blob_hash = $2)";
        for hash in hashes {
            match self.backend {
                // Writers are serialised: what is unreferenced now stays so until commit.
                Backend::Sqlite => {
                    sqlx::query(GC)
                        .bind(account.0)
                        .bind(hash.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                // Another node may have just appended a message with the same content and
                // be about to commit it: then the foreign key refuses the delete. Keep the
                // blob (it is referenced again) without failing the whole transaction.
                Backend::Postgres => {
                    let mut savepoint = tx.begin().await?;
                    let deleted = sqlx::query(GC)
                        .bind(account.0)
                        .bind(hash.as_str())
                        .execute(&mut *savepoint)
                        .await;
                    match deleted {
                        Ok(_) => savepoint.commit().await?,
                        Err(sqlx::Error::Database(db))
                            if db.kind() == ErrorKind::ForeignKeyViolation =>
                        {
                            savepoint.rollback().await?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets the data of up to `limit` tombstones expunged at or before `before`, and
    /// collects the blobs only they kept; returns how many.
    async fn purge_expunged_tx(&self, before: i64, limit: u64) -> TxResult<u64> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT account_id, mailbox_id, uid, blob_hash FROM expunged \
             WHERE blob_hash IS NOT NULL AND expunged_at <= $1 ORDER BY expunged_at LIMIT $2",
        )
        .bind(before)
        .bind(to_i64(limit)?)
        .fetch_all(&mut *tx)
        .await?;
        let mut hashes: std::collections::BTreeMap<i64, BTreeSet<String>> = Default::default();
        for row in &rows {
            let account: i64 = row.try_get(0)?;
            sqlx::query(
                "UPDATE expunged SET blob_hash = NULL, keywords = NULL \
                 WHERE account_id = $1 AND mailbox_id = $2 AND uid = $3",
            )
            .bind(account)
            .bind(row.try_get::<i64, _>(1)?)
            .bind(row.try_get::<i64, _>(2)?)
            .execute(&mut *tx)
            .await?;
            hashes
                .entry(account)
                .or_default()
                .insert(row.try_get::<String, _>(3)?);
        }
        for (account, hashes) in &hashes {
            self.collect_blobs(&mut tx, AccountId(*account), hashes)
                .await?;
        }
        self.commit(tx, Vec::new()).await?;
        Ok(rows.len() as u64)
    }

    async fn changes_since_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since: u64,
    ) -> TxResult<MailboxChanges> {
        let row = sqlx::query(
            "SELECT highestmodseq, uidnext FROM mailboxes WHERE account_id = $1 AND id = $2",
        )
        .bind(account.0)
        .bind(mailbox.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| not_found_mailbox(mailbox))?;
        let highestmodseq: i64 = row.try_get(0)?;
        let uidnext: i64 = row.try_get(1)?;
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        // Everything up to the HIGHESTMODSEQ just read has committed (it was allocated
        // under the mailbox row's lock, and that row is read committed); anything newer
        // is left for the next catch-up, so the answer is never ahead of itself.
        let mut changes = MailboxChanges {
            highestmodseq: to_u64(highestmodseq, "modseq")?,
            uidnext: to_u32(uidnext, "uidnext")?,
            changed: Vec::new(),
            expunged: Vec::new(),
        };
        if since >= highestmodseq {
            return Ok(changes);
        }
        let rows = sqlx::query(SELECT_CHANGED)
            .bind(account.0)
            .bind(mailbox.0)
            .bind(since)
            .bind(highestmodseq)
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            changes.changed.push(meta_from_row(&row)?);
        }
        let rows = sqlx::query(
            "SELECT uid FROM expunged WHERE account_id = $1 AND mailbox_id = $2 AND modseq > $3 AND modseq <= $4 \
             ORDER BY uid",
        )
        .bind(account.0)
        .bind(mailbox.0)
        .bind(since)
        .bind(highestmodseq)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            changes.expunged.push(to_u32(row.try_get(0)?, "uid")?);
        }
        Ok(changes)
    }

    async fn expunged_since_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since: u64,
        uids: Option<&[UidRange]>,
    ) -> TxResult<Vec<u32>> {
        let exists = sqlx::query("SELECT 1 FROM mailboxes WHERE account_id = $1 AND id = $2")
            .bind(account.0)
            .bind(mailbox.0)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(not_found_mailbox(mailbox));
        }
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT uid FROM expunged WHERE account_id = $1 AND mailbox_id = $2 AND modseq > $3 \
             ORDER BY uid",
        )
        .bind(account.0)
        .bind(mailbox.0)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let uid = to_u32(row.try_get(0)?, "uid")?;
            // The ranges are filtered here rather than in SQL: a client's set can have
            // any number of ranges, and a tombstone row is small.
            if uids.is_none_or(|ranges| ranges.iter().any(|r| r.start <= uid && uid <= r.end)) {
                out.push(uid);
            }
        }
        Ok(out)
    }

    async fn set_metadata_tx(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        value: Option<&[u8]>,
    ) -> TxResult<()> {
        let entry = entry.to_ascii_lowercase();
        if entry.is_empty() {
            return Err(Error::Invalid("empty metadata entry name".into()).into());
        }
        let mut tx = self.begin().await?;
        let modseq = match mailbox {
            Some(mailbox) => {
                lock_mailbox(&mut tx, account, mailbox, 1)
                    .await?
                    .highestmodseq
            }
            None => {
                require_account_tx(&mut tx, account).await?;
                0
            }
        };
        let mailbox_db = mailbox.map(|m| m.0);
        let touched = match (value, mailbox_db) {
            (None, None) => {
                sqlx::query("DELETE FROM metadata WHERE account_id = $1 AND mailbox_id IS NULL AND entry = $2")
                    .bind(account.0)
                    .bind(entry.as_str())
                    .execute(&mut *tx)
                    .await?
            }
            (None, Some(mailbox)) => {
                sqlx::query("DELETE FROM metadata WHERE account_id = $1 AND mailbox_id = $2 AND entry = $3")
                    .bind(account.0)
                    .bind(mailbox)
                    .bind(entry.as_str())
                    .execute(&mut *tx)
                    .await?
            }
            (Some(value), None) => {
                sqlx::query(
                    "INSERT INTO metadata (account_id, mailbox_id, entry, value) VALUES ($1, NULL, $2, $3) \
                     ON CONFLICT (account_id, entry) WHERE mailbox_id IS NULL DO UPDATE SET value = excluded.value",
                )
                .bind(account.0)
                .bind(entry.as_str())
                .bind(value.to_vec())
                .execute(&mut *tx)
                .await?
            }
            (Some(value), Some(mailbox)) => {
                sqlx::query(
                    "INSERT INTO metadata (account_id, mailbox_id, entry, value) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (account_id, mailbox_id, entry) WHERE mailbox_id IS NOT NULL \
                     DO UPDATE SET value = excluded.value",
                )
                .bind(account.0)
                .bind(mailbox)
                .bind(entry.as_str())
                .bind(value.to_vec())
                .execute(&mut *tx)
                .await?
            }
        };
        if touched.rows_affected() == 0 {
            // Removing an entry that is not there: nothing to tell anyone.
            tx.rollback().await?;
            return Ok(());
        }
        let change = Change {
            account,
            mailbox,
            modseq,
            kind: ChangeKind::Metadata,
        };
        self.commit(tx, vec![change]).await
    }

    async fn set_whitelist_tx(
        &self,
        account: AccountId,
        context: &str,
        entries: &[WhitelistEntry],
    ) -> TxResult<()> {
        let mut tx = self.begin().await?;
        require_account_tx(&mut tx, account).await?;
        sqlx::query(
            "INSERT INTO whitelists (account_id, context, loaded_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id, context) DO UPDATE SET loaded_at = excluded.loaded_at",
        )
        .bind(account.0)
        .bind(context)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM whitelist_entries WHERE account_id = $1 AND context = $2")
            .bind(account.0)
            .bind(context)
            .execute(&mut *tx)
            .await?;
        for (position, entry) in (0_i64..).zip(entries) {
            let resolved = serde_json::to_string(&entry.resolved)
                .map_err(|e| Error::Database(format!("encoding resolved addresses: {e}")))?;
            sqlx::query(
                "INSERT INTO whitelist_entries (account_id, context, position, kind, role, value, resolved) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(account.0)
            .bind(context)
            .bind(position)
            .bind(entry.kind.as_str())
            .bind(entry.role.as_str())
            .bind(entry.value.as_str())
            .bind(resolved)
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx, vec![account_change(account)]).await
    }

    async fn clear_whitelist_tx(&self, account: AccountId, context: Option<&str>) -> TxResult<()> {
        let mut tx = self.begin().await?;
        require_account_tx(&mut tx, account).await?;
        let removed = match context {
            Some(context) => {
                sqlx::query("DELETE FROM whitelist_entries WHERE account_id = $1 AND context = $2")
                    .bind(account.0)
                    .bind(context)
                    .execute(&mut *tx)
                    .await?;
                let done =
                    sqlx::query("DELETE FROM whitelists WHERE account_id = $1 AND context = $2")
                        .bind(account.0)
                        .bind(context)
                        .execute(&mut *tx)
                        .await?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("whitelist context {context:?}")).into());
                }
                done.rows_affected()
            }
            None => {
                sqlx::query("DELETE FROM whitelist_entries WHERE account_id = $1")
                    .bind(account.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM whitelists WHERE account_id = $1")
                    .bind(account.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
        };
        if removed == 0 {
            tx.rollback().await?;
            return Ok(());
        }
        self.commit(tx, vec![account_change(account)]).await
    }

    async fn whitelists_of(
        &self,
        account: AccountId,
        context: Option<&str>,
    ) -> TxResult<Vec<Whitelist>> {
        self.require_account(account).await?;
        let (lists, entries) = match context {
            Some(context) => {
                let lists = sqlx::query("SELECT context, loaded_at FROM whitelists WHERE account_id = $1 AND context = $2")
                    .bind(account.0)
                    .bind(context)
                    .fetch_all(&self.pool)
                    .await?;
                let entries = sqlx::query(
                    "SELECT context, kind, role, value, resolved FROM whitelist_entries \
                     WHERE account_id = $1 AND context = $2 ORDER BY position",
                )
                .bind(account.0)
                .bind(context)
                .fetch_all(&self.pool)
                .await?;
                (lists, entries)
            }
            None => {
                let lists =
                    sqlx::query("SELECT context, loaded_at FROM whitelists WHERE account_id = $1")
                        .bind(account.0)
                        .fetch_all(&self.pool)
                        .await?;
                let entries = sqlx::query(
                    "SELECT context, kind, role, value, resolved FROM whitelist_entries \
                     WHERE account_id = $1 ORDER BY context, position",
                )
                .bind(account.0)
                .fetch_all(&self.pool)
                .await?;
                (lists, entries)
            }
        };
        let mut out = Vec::with_capacity(lists.len());
        for row in lists {
            out.push(Whitelist {
                context: row.try_get(0)?,
                entries: Vec::new(),
                loaded_at: row.try_get(1)?,
            });
        }
        out.sort_by(|a, b| a.context.cmp(&b.context));
        for row in entries {
            let context: String = row.try_get(0)?;
            let resolved: String = row.try_get(4)?;
            let resolved: Vec<String> = serde_json::from_str(&resolved)
                .map_err(|e| Error::Database(format!("decoding resolved addresses: {e}")))?;
            let entry = WhitelistEntry {
                kind: row.try_get(1)?,
                role: row.try_get(2)?,
                value: row.try_get(3)?,
                resolved,
            };
            if let Ok(i) = out.binary_search_by(|w| w.context.as_str().cmp(&context)) {
                out[i].entries.push(entry);
            }
        }
        Ok(out)
    }
}

/// What `update_account_tx` changes.
#[derive(Debug, Clone, Copy)]
enum AccountUpdate {
    Status(&'static str),
    Quota(Option<i64>),
}

/// How an account is looked up.
enum Key<'a> {
    Id(i64),
    Text(&'a str),
}

#[async_trait]
impl Store for SqlStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account> {
        self.retry(|| Box::pin(self.create_account_tx(&new))).await
    }

    async fn account_by_name(&self, username: &str) -> Result<Account> {
        self.read_account(SELECT_ACCOUNT_BY_NAME, Key::Text(username))
            .await
            .map_err(|e| self.fail(e))?
            .ok_or_else(|| Error::NotFound(format!("account {username}")))
    }

    async fn account_by_id(&self, id: AccountId) -> Result<Account> {
        self.read_account(SELECT_ACCOUNT_BY_ID, Key::Id(id.0))
            .await
            .map_err(|e| self.fail(e))?
            .ok_or_else(|| Error::NotFound(format!("account {}", id.0)))
    }

    async fn account_by_address(&self, address: &str) -> Result<Account> {
        self.read_account(SELECT_ACCOUNT_BY_ADDRESS, Key::Text(address))
            .await
            .map_err(|e| self.fail(e))?
            .ok_or_else(|| Error::NotFound(format!("address {address}")))
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        let rows = sqlx::query(SELECT_ACCOUNTS)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?;
        rows.iter().map(account_from_row).collect()
    }

    async fn set_account_status(&self, id: AccountId, status: AccountStatus) -> Result<()> {
        let status = match status {
            AccountStatus::Active => "active",
            AccountStatus::Disabled => "disabled",
        };
        self.retry(|| Box::pin(self.update_account_tx(id, AccountUpdate::Status(status))))
            .await
    }

    async fn set_quota(&self, id: AccountId, quota: Option<u64>) -> Result<()> {
        let quota = quota_to_db(quota)?;
        self.retry(|| Box::pin(self.update_account_tx(id, AccountUpdate::Quota(quota))))
            .await
    }

    async fn remove_account(&self, id: AccountId) -> Result<()> {
        self.retry(|| Box::pin(self.remove_account_tx(id))).await
    }

    async fn set_credentials(&self, id: AccountId, cred: CredentialRecord) -> Result<()> {
        self.retry(|| Box::pin(self.set_credentials_tx(id, &cred)))
            .await
    }

    async fn credentials(&self, id: AccountId) -> Result<Option<CredentialRecord>> {
        let row = sqlx::query(
            "SELECT argon2_phc, scram_salt, scram_iterations, scram_stored_key, scram_server_key \
             FROM credentials WHERE account_id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.map_err(e))?;
        let Some(row) = row else {
            self.require_account(id).await.map_err(|e| self.fail(e))?;
            return Ok(None);
        };
        let iterations: i64 = row.try_get(2).map_err(map_sqlx)?;
        Ok(Some(CredentialRecord {
            argon2_phc: row.try_get(0).map_err(map_sqlx)?,
            scram_salt: row.try_get(1).map_err(map_sqlx)?,
            scram_iterations: to_u32(iterations, "scram iterations")?,
            scram_stored_key: row.try_get(3).map_err(map_sqlx)?,
            scram_server_key: row.try_get(4).map_err(map_sqlx)?,
        }))
    }

    async fn set_psk(&self, id: AccountId, identity: &str, sealed_key: Vec<u8>) -> Result<()> {
        self.retry(|| Box::pin(self.set_psk_tx(id, identity, &sealed_key)))
            .await
    }

    async fn remove_psk(&self, id: AccountId) -> Result<()> {
        self.retry(|| Box::pin(self.remove_psk_tx(id))).await
    }

    async fn psk_by_identity(&self, identity: &str) -> Result<PskRecord> {
        let row = sqlx::query(SELECT_PSK_BY_IDENTITY)
            .bind(identity)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?
            .ok_or_else(|| Error::NotFound(format!("PSK identity {identity}")))?;
        psk_from_row(&row)
    }

    async fn psks_of(&self, id: AccountId) -> Result<Vec<PskRecord>> {
        let rows = sqlx::query(SELECT_PSKS_OF)
            .bind(id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?;
        if rows.is_empty() {
            self.require_account(id).await.map_err(|e| self.fail(e))?;
        }
        rows.iter().map(psk_from_row).collect()
    }

    async fn all_psks(&self) -> Result<Vec<PskRecord>> {
        let rows = sqlx::query(SELECT_ACTIVE_PSKS)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?;
        rows.iter().map(psk_from_row).collect()
    }

    async fn add_address(&self, id: AccountId, address: &str) -> Result<()> {
        self.retry(|| Box::pin(self.add_address_tx(id, address)))
            .await
    }

    async fn remove_address(&self, id: AccountId, address: &str) -> Result<()> {
        self.retry(|| Box::pin(self.remove_address_tx(id, address)))
            .await
    }

    async fn addresses(&self, id: AccountId) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT address FROM addresses WHERE account_id = $1 ORDER BY address")
                .bind(id.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.map_err(e))?;
        if rows.is_empty() {
            self.require_account(id).await.map_err(|e| self.fail(e))?;
        }
        rows.iter()
            .map(|row| row.try_get(0).map_err(map_sqlx))
            .collect()
    }

    async fn create_mailbox(&self, id: AccountId, mailbox: NewMailbox) -> Result<Mailbox> {
        self.retry(|| Box::pin(self.create_mailbox_tx(id, &mailbox)))
            .await
    }

    async fn rename_mailbox(&self, id: AccountId, from: &str, to: &str) -> Result<()> {
        self.retry(|| Box::pin(self.rename_mailbox_tx(id, from, to)))
            .await
    }

    async fn delete_mailbox(&self, id: AccountId, name: &str) -> Result<()> {
        self.retry(|| Box::pin(self.delete_mailbox_tx(id, name)))
            .await
    }

    async fn mailbox(&self, id: AccountId, name: &str) -> Result<Mailbox> {
        let name = canonical_name(name);
        let row = sqlx::query(SELECT_MAILBOX_BY_NAME)
            .bind(id.0)
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?
            .ok_or_else(|| Error::NotFound(format!("mailbox {name}")))?;
        mailbox_from_row(&row)
    }

    async fn mailbox_by_id(&self, account: AccountId, mailbox: MailboxId) -> Result<Mailbox> {
        self.read_mailbox(account, mailbox)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn list_mailboxes(&self, id: AccountId) -> Result<Vec<Mailbox>> {
        let rows = sqlx::query(SELECT_MAILBOXES)
            .bind(id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?;
        if rows.is_empty() {
            self.require_account(id).await.map_err(|e| self.fail(e))?;
        }
        let mut mailboxes = rows
            .iter()
            .map(mailbox_from_row)
            .collect::<Result<Vec<_>>>()?;
        mailboxes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(mailboxes)
    }

    async fn set_subscribed(&self, id: AccountId, name: &str, subscribed: bool) -> Result<()> {
        self.retry(|| Box::pin(self.set_subscribed_tx(id, name, subscribed)))
            .await
    }

    async fn subscriptions(&self, id: AccountId) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT name FROM subscriptions WHERE account_id = $1 ORDER BY name")
                .bind(id.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.map_err(e))?;
        if rows.is_empty() {
            self.require_account(id).await.map_err(|e| self.fail(e))?;
        }
        rows.iter()
            .map(|row| row.try_get(0).map_err(map_sqlx))
            .collect()
    }

    async fn mailbox_counts(
        &self,
        account: AccountId,
        mailbox: MailboxId,
    ) -> Result<MailboxCounts> {
        let recent_uid = self.unclaimed_recent(account, mailbox).await?;
        let row = sqlx::query(
            "SELECT COUNT(*), \
                    CAST(COALESCE(SUM(CASE WHEN (system_flags & 1) = 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(size), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN uid >= $3 THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM messages WHERE account_id = $1 AND mailbox_id = $2",
        )
        .bind(account.0)
        .bind(mailbox.0)
        .bind(i64::from(recent_uid))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.map_err(e))?;
        Ok(MailboxCounts {
            messages: to_u32(row.try_get(0).map_err(map_sqlx)?, "count")?,
            unseen: to_u32(row.try_get(1).map_err(map_sqlx)?, "count")?,
            recent: to_u32(row.try_get(3).map_err(map_sqlx)?, "count")?,
            size: to_u64(row.try_get(2).map_err(map_sqlx)?, "size")?,
        })
    }

    async fn mailbox_keywords(
        &self,
        account: AccountId,
        mailbox: MailboxId,
    ) -> Result<Vec<String>> {
        self.read_mailbox(account, mailbox)
            .await
            .map_err(|e| self.fail(e))?;
        let rows = sqlx::query("SELECT keyword FROM mailbox_keywords WHERE account_id = $1 AND mailbox_id = $2 ORDER BY folded")
            .bind(account.0)
            .bind(mailbox.0)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(map_sqlx))
            .collect()
    }

    async fn claim_recent(
        &self,
        account: AccountId,
        mailbox: MailboxId,
    ) -> Result<std::ops::Range<u32>> {
        self.retry(|| Box::pin(self.claim_recent_tx(account, mailbox)))
            .await
    }

    async fn unclaimed_recent(&self, account: AccountId, mailbox: MailboxId) -> Result<u32> {
        self.unclaimed_recent_tx(account, mailbox)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn append(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        msg: NewMessage,
    ) -> Result<Appended> {
        let keywords = normalise_keywords(&msg.flags.keywords)?;
        self.retry(|| Box::pin(self.append_tx(account, mailbox, &msg, &keywords)))
            .await
    }

    fn fetch<'a>(
        &'a self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &'a [UidRange],
    ) -> BoxStream<'a, Result<MessageMeta>> {
        let ranges = normalise_ranges(uids);
        let rows = async move {
            self.read_mailbox(account, mailbox)
                .await
                .map_err(|e| self.fail(e))?;
            // One query per range, each in UID order, the ranges ascending and disjoint:
            // the rows come out in UID order and are never all held in memory.
            let rows = stream::iter(ranges)
                .flat_map(move |(lo, hi)| {
                    sqlx::query(SELECT_RANGE)
                        .bind(account.0)
                        .bind(mailbox.0)
                        .bind(lo)
                        .bind(hi)
                        .fetch(&self.pool)
                })
                .map(move |row| {
                    row.map_err(|e| self.map_err(e))
                        .and_then(|row| meta_from_row(&row))
                });
            Ok::<_, Error>(rows)
        };
        stream::once(rows).try_flatten().boxed()
    }

    async fn blob(&self, account: AccountId, hash: &str) -> Result<Vec<u8>> {
        let row = sqlx::query("SELECT data FROM blobs WHERE account_id = $1 AND hash = $2")
            .bind(account.0)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?
            .ok_or_else(|| Error::NotFound(format!("blob {hash}")))?;
        row.try_get(0).map_err(map_sqlx)
    }

    async fn store_flags(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[UidRange],
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<Vec<MessageMeta>> {
        let given = Flags {
            system: SystemFlags(flags.system.0 & SYSTEM_MASK as u8),
            keywords: normalise_keywords(&flags.keywords)?,
        };
        let ranges = normalise_ranges(uids);
        let outcome = self
            .retry(|| {
                Box::pin(self.store_flags_tx(
                    account,
                    mailbox,
                    &ranges,
                    op,
                    &given,
                    unchanged_since,
                ))
            })
            .await?;
        Ok(outcome.changed)
    }

    async fn store_flags_conditional(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[UidRange],
        op: FlagOp,
        flags: &Flags,
        unchanged_since: u64,
    ) -> Result<ConditionalStore> {
        let given = Flags {
            system: SystemFlags(flags.system.0 & SYSTEM_MASK as u8),
            keywords: normalise_keywords(&flags.keywords)?,
        };
        let ranges = normalise_ranges(uids);
        self.retry(|| {
            Box::pin(self.store_flags_tx(
                account,
                mailbox,
                &ranges,
                op,
                &given,
                Some(unchanged_since),
            ))
        })
        .await
    }

    async fn copy(
        &self,
        account: AccountId,
        from: MailboxId,
        uids: &[UidRange],
        to: MailboxId,
    ) -> Result<Copied> {
        let ranges = normalise_ranges(uids);
        self.retry(|| Box::pin(self.copy_tx(account, from, &ranges, to, false)))
            .await
    }

    async fn move_messages(
        &self,
        account: AccountId,
        from: MailboxId,
        uids: &[UidRange],
        to: MailboxId,
    ) -> Result<Copied> {
        let ranges = normalise_ranges(uids);
        self.retry(|| Box::pin(self.copy_tx(account, from, &ranges, to, true)))
            .await
    }

    async fn expunge(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: Option<&[UidRange]>,
    ) -> Result<Vec<u32>> {
        let ranges = match uids {
            Some(uids) => normalise_ranges(uids),
            None => normalise_ranges(&[UidRange::all()]),
        };
        self.retry(|| Box::pin(self.expunge_tx(account, mailbox, &ranges)))
            .await
    }

    async fn changes_since(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since_modseq: u64,
    ) -> Result<MailboxChanges> {
        self.changes_since_tx(account, mailbox, since_modseq)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn expunged_since(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since_modseq: u64,
        uids: Option<&[UidRange]>,
    ) -> Result<Vec<u32>> {
        self.expunged_since_tx(account, mailbox, since_modseq, uids)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn fetch_expunged(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[UidRange],
    ) -> Result<Vec<MessageMeta>> {
        let mut out = Vec::new();
        for (lo, hi) in normalise_ranges(uids) {
            let rows = sqlx::query(SELECT_EXPUNGED_RANGE)
                .bind(account.0)
                .bind(mailbox.0)
                .bind(lo)
                .bind(hi)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.map_err(e))?;
            for row in rows {
                out.push(meta_from_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn purge_expunged(&self, before: i64) -> Result<u64> {
        let mut purged = 0;
        // A batch per transaction, so that a large purge never holds the write lock long.
        loop {
            let n = self
                .retry(|| Box::pin(self.purge_expunged_tx(before, PURGE_BATCH)))
                .await?;
            purged += n;
            if n < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    async fn quota_usage(&self, account: AccountId) -> Result<u64> {
        self.require_account(account)
            .await
            .map_err(|e| self.fail(e))?;
        let usage = usage(&self.pool, account)
            .await
            .map_err(|e| self.map_err(e))?;
        to_u64(usage, "usage")
    }

    async fn set_metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        self.retry(|| Box::pin(self.set_metadata_tx(account, mailbox, entry, value)))
            .await
    }

    async fn metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
    ) -> Result<Option<Vec<u8>>> {
        let entry = entry.to_ascii_lowercase();
        let row = match mailbox {
            Some(mailbox) => {
                self.read_mailbox(account, mailbox).await.map_err(|e| self.fail(e))?;
                sqlx::query("SELECT value FROM metadata WHERE account_id = $1 AND mailbox_id = $2 AND entry = $3")
                    .bind(account.0)
                    .bind(mailbox.0)
                    .bind(entry)
                    .fetch_optional(&self.pool)
                    .await
            }
            None => {
                self.require_account(account).await.map_err(|e| self.fail(e))?;
                sqlx::query("SELECT value FROM metadata WHERE account_id = $1 AND mailbox_id IS NULL AND entry = $2")
                    .bind(account.0)
                    .bind(entry)
                    .fetch_optional(&self.pool)
                    .await
            }
        }
        .map_err(|e| self.map_err(e))?;
        row.map(|row| row.try_get(0).map_err(map_sqlx)).transpose()
    }

    async fn set_whitelist(
        &self,
        account: AccountId,
        context: &str,
        entries: &[WhitelistEntry],
    ) -> Result<()> {
        self.retry(|| Box::pin(self.set_whitelist_tx(account, context, entries)))
            .await
    }

    async fn whitelist(&self, account: AccountId, context: &str) -> Result<Option<Whitelist>> {
        let lists = self
            .whitelists_of(account, Some(context))
            .await
            .map_err(|e| self.fail(e))?;
        Ok(lists.into_iter().next())
    }

    async fn whitelists(&self, account: AccountId) -> Result<Vec<Whitelist>> {
        self.whitelists_of(account, None)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn has_whitelist(&self, account: AccountId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM whitelists WHERE account_id = $1 LIMIT 1")
            .bind(account.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.is_some())
    }

    async fn clear_whitelist(&self, account: AccountId, context: Option<&str>) -> Result<()> {
        self.retry(|| Box::pin(self.clear_whitelist_tx(account, context)))
            .await
    }

    fn changes(&self) -> &ChangeBus {
        &self.bus
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| match self.map_err(e) {
                Error::Database(msg) => Error::Unreachable(format!("{}: {msg}", self.target)),
                other => other,
            })
    }

    async fn close(&self) {
        if let Some(companion) = &self.companion {
            companion.stop().await;
        }
        self.pool.close().await;
    }
}

// --- SQL text --------------------------------------------------------------------------

/// Tables with an account_id column, children before parents: `remove_account`
/// deletes from each explicitly, whatever ON DELETE CASCADE would do. A table added to
/// the schema must be added here (the story test checks every table of the schema).
const ACCOUNT_TABLES_CHILDREN_FIRST: [&str; 13] = [
    "whitelist_entries",
    "whitelists",
    "metadata",
    "mailbox_keywords",
    "expunged",
    "messages",
    "blobs",
    "subscriptions",
    "mailboxes",
    "addresses",
    "psk_identities",
    "credentials",
    "accounts",
];

/// The columns [`account_from_row`] reads, in its order.
macro_rules! account_columns {
    () => {
        "account_id, username, status, quota, created_at"
    };
}

/// The columns [`psk_from_row`] reads, in its order.
macro_rules! psk_columns {
    () => {
        "identity, account_id, sealed_key, updated_at"
    };
}

/// What [`mailbox_from_row`] reads, from `mailboxes m`.
macro_rules! select_mailbox {
    () => {
        "SELECT m.id, m.account_id, m.name, m.uidvalidity, m.uidnext, m.highestmodseq, m.special_use, \
         CASE WHEN EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = m.account_id AND s.name = m.name) \
         THEN 1 ELSE 0 END FROM mailboxes m"
    };
}

/// The columns [`meta_from_row`] reads, in its order.
macro_rules! meta_columns {
    () => {
        "uid, modseq, system_flags, keywords, internal_date, internal_date_tz, size, blob_hash"
    };
}

const SELECT_ACCOUNT_BY_ID: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE account_id = $1"
);
const SELECT_ACCOUNT_BY_NAME: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE username = $1"
);
const SELECT_ACCOUNT_BY_ADDRESS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE account_id = (SELECT account_id FROM addresses WHERE address = $1)"
);
const SELECT_ACCOUNTS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts ORDER BY account_id"
);

const SELECT_PSK_BY_IDENTITY: &str = concat!(
    "SELECT ",
    psk_columns!(),
    " FROM psk_identities WHERE identity = $1"
);
const SELECT_PSKS_OF: &str = concat!(
    "SELECT ",
    psk_columns!(),
    " FROM psk_identities WHERE account_id = $1 ORDER BY identity"
);
const SELECT_ACTIVE_PSKS: &str = concat!(
    "SELECT ",
    psk_columns!(),
    " FROM psk_identities WHERE account_id IN (SELECT account_id FROM accounts WHERE status = 'active') \
     ORDER BY identity"
);

const SELECT_MAILBOX_BY_ID: &str =
    concat!(select_mailbox!(), " WHERE m.account_id = $1 AND m.id = $2");
const SELECT_MAILBOX_BY_NAME: &str = concat!(
    select_mailbox!(),
    " WHERE m.account_id = $1 AND m.name = $2"
);
const SELECT_MAILBOXES: &str = concat!(
    select_mailbox!(),
    " WHERE m.account_id = $1 ORDER BY m.name"
);

const SELECT_RANGE: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 ORDER BY uid"
);
const SELECT_MAILBOX_MESSAGES: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM messages WHERE account_id = $1 AND mailbox_id = $2 ORDER BY uid"
);
const EXPUNGE_RANGE: &str = concat!(
    "DELETE FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 \
     AND (system_flags & 8) <> 0 RETURNING ",
    meta_columns!()
);
/// The kept data of expunged messages, as [`meta_from_row`] reads it (the MODSEQ is the
/// expunge's).
const SELECT_EXPUNGED_RANGE: &str = "SELECT uid, modseq, system_flags, keywords, internal_date, \
     internal_date_tz, size, blob_hash FROM expunged \
     WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 AND blob_hash IS NOT NULL \
     ORDER BY uid";
const SELECT_RANGE_UNCHANGED_SINCE: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 AND modseq <= $5 \
     ORDER BY uid"
);
const SELECT_CHANGED: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND modseq > $3 AND modseq <= $4 ORDER BY uid"
);
/// $6: the bits to add.
const STORE_ADD_SYSTEM: &str = concat!(
    "UPDATE messages SET system_flags = (system_flags | $6), modseq = $7 \
     WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 AND modseq <= $5 \
     AND (system_flags | $6) <> system_flags RETURNING ",
    meta_columns!()
);
/// $6: the bits to keep.
const STORE_REMOVE_SYSTEM: &str = concat!(
    "UPDATE messages SET system_flags = (system_flags & $6), modseq = $7 \
     WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 AND modseq <= $5 \
     AND (system_flags & $6) <> system_flags RETURNING ",
    meta_columns!()
);

// --- statements used inside transactions ----------------------------------------------

/// Locks the mailbox row (the first statement of a message write) and adds `bump` to
/// its HIGHESTMODSEQ; returns the row as updated.
async fn lock_mailbox(
    tx: &mut AnyConnection,
    account: AccountId,
    mailbox: MailboxId,
    bump: i64,
) -> TxResult<Locked> {
    let row = sqlx::query(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + $3 WHERE account_id = $1 AND id = $2 \
         RETURNING uidvalidity, uidnext, highestmodseq",
    )
    .bind(account.0)
    .bind(mailbox.0)
    .bind(bump)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| not_found_mailbox(mailbox))?;
    Ok(Locked {
        uidvalidity: to_u32(row.try_get(0)?, "uidvalidity")?,
        uidnext: to_u32(row.try_get(1)?, "uidnext")?,
        highestmodseq: to_u64(row.try_get(2)?, "modseq")?,
    })
}

async fn require_account_tx(tx: &mut AnyConnection, id: AccountId) -> TxResult<()> {
    let row = sqlx::query("SELECT account_id FROM accounts WHERE account_id = $1")
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(not_found_account(id)),
    }
}

/// The next UIDVALIDITY of the account: now, or one more than the last if that is not
/// less (two mailboxes created in one second, or a clock that went back).
async fn next_uidvalidity(tx: &mut AnyConnection, id: AccountId) -> TxResult<i64> {
    let row = sqlx::query(
        "UPDATE accounts SET last_uidvalidity = CASE WHEN last_uidvalidity < $2 THEN $2 ELSE last_uidvalidity + 1 END \
         WHERE account_id = $1 RETURNING last_uidvalidity",
    )
    .bind(id.0)
    .bind(now().max(1))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| not_found_account(id))?;
    let value: i64 = row.try_get(0)?;
    if value > i64::from(u32::MAX) {
        return Err(Error::Database("UIDVALIDITY space exhausted".into()).into());
    }
    Ok(value)
}

async fn insert_mailbox(
    tx: &mut AnyConnection,
    id: AccountId,
    name: &str,
    uidvalidity: i64,
    special_use: Option<&str>,
) -> TxResult<MailboxId> {
    let row = sqlx::query(
        "INSERT INTO mailboxes (account_id, name, uidvalidity, special_use) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(id.0)
    .bind(name)
    .bind(uidvalidity)
    .bind(special_use)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| exists_or(e, || format!("mailbox {name}")))?;
    Ok(MailboxId(row.try_get(0)?))
}

async fn subscribe(tx: &mut AnyConnection, id: AccountId, name: &str) -> TxResult<()> {
    sqlx::query(
        "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(id.0)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves a subscription along with a renamed mailbox (as Dovecot does).
async fn rename_subscription(
    tx: &mut AnyConnection,
    id: AccountId,
    old: &str,
    new: &str,
) -> TxResult<()> {
    let done = sqlx::query("DELETE FROM subscriptions WHERE account_id = $1 AND name = $2")
        .bind(id.0)
        .bind(old)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() > 0 {
        subscribe(tx, id, new).await?;
    }
    Ok(())
}

async fn upsert_credentials(
    tx: &mut AnyConnection,
    id: AccountId,
    cred: &CredentialRecord,
) -> TxResult<()> {
    sqlx::query(
        "INSERT INTO credentials (account_id, argon2_phc, scram_salt, scram_iterations, scram_stored_key, \
         scram_server_key, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (account_id) DO UPDATE SET argon2_phc = excluded.argon2_phc, scram_salt = excluded.scram_salt, \
         scram_iterations = excluded.scram_iterations, scram_stored_key = excluded.scram_stored_key, \
         scram_server_key = excluded.scram_server_key, updated_at = excluded.updated_at",
    )
    .bind(id.0)
    .bind(cred.argon2_phc.as_str())
    .bind(cred.scram_salt.clone())
    .bind(i64::from(cred.scram_iterations))
    .bind(cred.scram_stored_key.clone())
    .bind(cred.scram_server_key.clone())
    .bind(now())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Refuses `extra` more bytes if the account has a quota they would exceed. On
/// PostgreSQL the no-op UPDATE locks the account row, so concurrent appends to different
/// mailboxes of one account are checked one after the other.
async fn check_quota(tx: &mut AnyConnection, account: AccountId, extra: i64) -> TxResult<()> {
    let row = sqlx::query("UPDATE accounts SET quota = quota WHERE account_id = $1 AND quota IS NOT NULL RETURNING quota")
        .bind(account.0)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let quota: i64 = row.try_get(0)?;
    let used = usage(&mut *tx, account).await?;
    if used.saturating_add(extra) > quota {
        return Err(Error::OverQuota.into());
    }
    Ok(())
}

async fn usage<'e, E>(executor: E, account: AccountId) -> std::result::Result<i64, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM messages WHERE account_id = $1",
    )
    .bind(account.0)
    .fetch_one(executor)
    .await?;
    row.try_get(0)
}

/// A message row to insert.
struct MessageRow<'a> {
    uid: i64,
    modseq: i64,
    internal_date: i64,
    internal_date_tz: i64,
    size: i64,
    system_flags: i64,
    keywords: &'a str,
    blob_hash: &'a str,
}

async fn insert_message(
    tx: &mut AnyConnection,
    account: AccountId,
    mailbox: MailboxId,
    row: &MessageRow<'_>,
) -> TxResult<()> {
    sqlx::query(
        "INSERT INTO messages (account_id, mailbox_id, uid, modseq, internal_date, internal_date_tz, size, \
         system_flags, keywords, blob_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(account.0)
    .bind(mailbox.0)
    .bind(row.uid)
    .bind(row.modseq)
    .bind(row.internal_date)
    .bind(row.internal_date_tz)
    .bind(row.size)
    .bind(row.system_flags)
    .bind(row.keywords)
    .bind(row.blob_hash)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records `meta` as expunged from `mailbox` at `modseq`, keeping its row (and so its
/// blob) for the sessions that have not yet been told (see [`Store::fetch_expunged`]).
async fn insert_tombstone(
    tx: &mut AnyConnection,
    account: AccountId,
    mailbox: i64,
    meta: &MessageMeta,
    modseq: i64,
) -> TxResult<()> {
    sqlx::query(
        "INSERT INTO expunged (account_id, mailbox_id, uid, modseq, internal_date, internal_date_tz, \
         size, system_flags, keywords, blob_hash, expunged_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (account_id, mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq, \
         internal_date = excluded.internal_date, internal_date_tz = excluded.internal_date_tz, \
         size = excluded.size, system_flags = excluded.system_flags, keywords = excluded.keywords, \
         blob_hash = excluded.blob_hash, expunged_at = excluded.expunged_at",
    )
    .bind(account.0)
    .bind(mailbox)
    .bind(i64::from(meta.uid))
    .bind(modseq)
    .bind(meta.internal_date)
    .bind(i64::from(meta.internal_date_tz))
    .bind(to_i64(meta.size)?)
    .bind(i64::from(meta.flags.system.0))
    .bind(encode_keywords(&meta.flags.keywords))
    .bind(meta.blob.as_str())
    .bind(now())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn record_keywords(
    tx: &mut AnyConnection,
    account: AccountId,
    mailbox: MailboxId,
    keywords: &[String],
) -> TxResult<()> {
    for keyword in keywords {
        sqlx::query(
            "INSERT INTO mailbox_keywords (account_id, mailbox_id, folded, keyword) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, mailbox_id, folded) DO NOTHING",
        )
        .bind(account.0)
        .bind(mailbox.0)
        .bind(keyword.to_ascii_lowercase())
        .bind(keyword.as_str())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

// --- rows ---------------------------------------------------------------------------------

fn account_from_row(row: &AnyRow) -> Result<Account> {
    let status: String = row.try_get(2).map_err(map_sqlx)?;
    let status = match status.as_str() {
        "active" => AccountStatus::Active,
        "disabled" => AccountStatus::Disabled,
        other => return Err(Error::Database(format!("unknown account status {other:?}"))),
    };
    let quota: Option<i64> = row.try_get(3).map_err(map_sqlx)?;
    Ok(Account {
        id: AccountId(row.try_get(0).map_err(map_sqlx)?),
        username: row.try_get(1).map_err(map_sqlx)?,
        status,
        quota: quota.map(|q| to_u64(q, "quota")).transpose()?,
        created_at: row.try_get(4).map_err(map_sqlx)?,
    })
}

fn mailbox_from_row(row: &AnyRow) -> Result<Mailbox> {
    let subscribed: i64 = row.try_get(7).map_err(map_sqlx)?;
    Ok(Mailbox {
        id: MailboxId(row.try_get(0).map_err(map_sqlx)?),
        account: AccountId(row.try_get(1).map_err(map_sqlx)?),
        name: row.try_get(2).map_err(map_sqlx)?,
        uidvalidity: to_u32(row.try_get(3).map_err(map_sqlx)?, "uidvalidity")?,
        uidnext: to_u32(row.try_get(4).map_err(map_sqlx)?, "uidnext")?,
        highestmodseq: to_u64(row.try_get(5).map_err(map_sqlx)?, "modseq")?,
        special_use: row.try_get(6).map_err(map_sqlx)?,
        subscribed: subscribed != 0,
    })
}

fn meta_from_row(row: &AnyRow) -> Result<MessageMeta> {
    let system: i64 = row.try_get(2).map_err(map_sqlx)?;
    let keywords: String = row.try_get(3).map_err(map_sqlx)?;
    let tz: i64 = row.try_get(5).map_err(map_sqlx)?;
    Ok(MessageMeta {
        uid: to_u32(row.try_get(0).map_err(map_sqlx)?, "uid")?,
        modseq: to_u64(row.try_get(1).map_err(map_sqlx)?, "modseq")?,
        flags: Flags {
            system: SystemFlags(u8::try_from(system & SYSTEM_MASK).unwrap_or(0)),
            keywords: decode_keywords(&keywords),
        },
        internal_date: row.try_get(4).map_err(map_sqlx)?,
        internal_date_tz: i32::try_from(tz)
            .map_err(|_| Error::Database(format!("time zone out of range: {tz}")))?,
        size: to_u64(row.try_get(6).map_err(map_sqlx)?, "size")?,
        blob: row.try_get(7).map_err(map_sqlx)?,
    })
}

fn psk_from_row(row: &AnyRow) -> Result<PskRecord> {
    Ok(PskRecord {
        identity: row.try_get(0).map_err(map_sqlx)?,
        account: AccountId(row.try_get(1).map_err(map_sqlx)?),
        sealed_key: row.try_get(2).map_err(map_sqlx)?,
        updated_at: row.try_get(3).map_err(map_sqlx)?,
    })
}

// --- values -------------------------------------------------------------------------------

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Exponential backoff with jitter between attempts of a transaction.
fn backoff(attempt: u32) -> Duration {
    let base = 5_u64 << attempt.min(8);
    Duration::from_millis(base + rand::random::<u64>() % base)
}

fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Database(format!("{what} out of range: {value}")))
}

fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Database(format!("{what} out of range: {value}")))
}

fn to_i64(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::Invalid(format!("value out of range: {value}")))
}

fn quota_to_db(quota: Option<u64>) -> Result<Option<i64>> {
    quota.map(to_i64).transpose()
}

fn not_found_account(id: AccountId) -> Fail {
    Fail::Store(Error::NotFound(format!("account {}", id.0)))
}

fn not_found_mailbox(id: MailboxId) -> Fail {
    Fail::Store(Error::NotFound(format!("mailbox {}", id.0)))
}

fn account_change(account: AccountId) -> Change {
    Change {
        account,
        mailbox: None,
        modseq: 0,
        kind: ChangeKind::Account,
    }
}

fn mailbox_change(account: AccountId, mailbox: MailboxId, modseq: u64) -> Change {
    message_change(account, mailbox, modseq, ChangeKind::Mailboxes)
}

fn message_change(account: AccountId, mailbox: MailboxId, modseq: u64, kind: ChangeKind) -> Change {
    Change {
        account,
        mailbox: Some(mailbox),
        modseq,
        kind,
    }
}

/// A unique violation becomes `AlreadyExists(what)`; anything else stays a database error.
fn exists_or(e: sqlx::Error, what: impl FnOnce() -> String) -> Fail {
    match &e {
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
            Fail::Store(Error::AlreadyExists(what()))
        }
        _ => Fail::Sql(e),
    }
}

/// Maps a database error to the storage error.
pub(crate) fn map_sqlx(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match db.kind() {
                ErrorKind::UniqueViolation => Error::AlreadyExists(db.message().to_owned()),
                ErrorKind::ForeignKeyViolation => {
                    Error::NotFound(format!("referenced row: {}", db.message()))
                }
                // PostgreSQL connection exceptions, shutdown, too many connections.
                _ if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
                    Error::Unreachable(e.to_string())
                }
                _ => Error::Database(e.to_string()),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::Unreachable(e.to_string()),
        _ => Error::Database(e.to_string()),
    }
}

/// INBOX is case-insensitive (also as the first level of a hierarchy); every other name
/// is kept as given.
pub(crate) fn canonical_name(name: &str) -> String {
    let (first, rest) = match name.find('/') {
        Some(i) => name.split_at(i),
        None => (name, ""),
    };
    if first.eq_ignore_ascii_case(INBOX) {
        format!("{INBOX}{rest}")
    } else {
        name.to_owned()
    }
}

/// A name a mailbox may be created with: non-empty levels, no control characters. One
/// trailing separator is dropped (RFC 3501 CREATE "foo/").
fn valid_mailbox_name(name: &str) -> Result<String> {
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() || name.split('/').any(str::is_empty) || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("bad mailbox name {name:?}")));
    }
    Ok(canonical_name(name))
}

/// Sorted, merged, inclusive ranges (a reversed range is read the other way round, as
/// IMAP reads `5:3`); UID 0 does not exist.
fn normalise_ranges(uids: &[UidRange]) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = uids
        .iter()
        .map(|r| {
            let (lo, hi) = if r.start <= r.end {
                (r.start, r.end)
            } else {
                (r.end, r.start)
            };
            (i64::from(lo.max(1)), i64::from(hi))
        })
        .filter(|(lo, hi)| lo <= hi)
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// Keywords sorted case-insensitively, each once (the first spelling wins). A keyword is
/// an IMAP atom: no spaces, controls or atom-specials, and not a `\` system flag.
fn normalise_keywords(keywords: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(keywords.len());
    for keyword in keywords {
        let bad = keyword.is_empty()
            || keyword.starts_with('\\')
            || keyword.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || matches!(c, '(' | ')' | '{' | '%' | '*' | '"' | '\\' | ']')
            });
        if bad {
            return Err(Error::Invalid(format!("bad keyword {keyword:?}")));
        }
        if !out.iter().any(|k| k.eq_ignore_ascii_case(keyword)) {
            out.push(keyword.clone());
        }
    }
    out.sort_by_key(|k| k.to_ascii_lowercase());
    Ok(out)
}

fn encode_keywords(keywords: &[String]) -> String {
    keywords.join(" ")
}

fn decode_keywords(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The flags a STORE leaves on a message. `given` is normalised.
fn apply_flags(op: FlagOp, current: &Flags, given: &Flags) -> Flags {
    match op {
        FlagOp::Replace => given.clone(),
        FlagOp::Add => {
            let mut keywords = current.keywords.clone();
            for keyword in &given.keywords {
                if !keywords.iter().any(|k| k.eq_ignore_ascii_case(keyword)) {
                    keywords.push(keyword.clone());
                }
            }
            keywords.sort_by_key(|k| k.to_ascii_lowercase());
            Flags {
                system: SystemFlags(current.system.0 | given.system.0),
                keywords,
            }
        }
        FlagOp::Remove => Flags {
            system: SystemFlags(current.system.0 & !given.system.0),
            keywords: current
                .keywords
                .iter()
                .filter(|k| !given.keywords.iter().any(|g| g.eq_ignore_ascii_case(k)))
                .cloned()
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
