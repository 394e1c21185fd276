//! RFC 5464 metadata: server (account-wide) and mailbox entries, in the `metadata`
//! table of migration 0001 (`mailbox_id` NULL for a server entry; the foreign key to
//! the mailbox row cascades, and DELETE removes a mailbox's entries explicitly too;
//! RENAME keeps them, as they are keyed by the mailbox's id).
//!
//! Entry names are stored in ASCII lower case. Names compare bytewise (SQLite's BINARY
//! collation, `COLLATE "C"` on PostgreSQL), so the entries below `/a/b` are exactly
//! those between `/a/b/` and `/a/b0` (`0` follows `/`).

use sqlx::{AnyConnection, Row};

use super::rows::{lock_mailbox, map_sqlx, not_found_account, require_account_tx};
use super::{SqlStore, TxResult};
use crate::changes::{Change, ChangeKind};
use crate::{AccountId, Error, MailboxId, MetadataDepth, MetadataWrite};

/// The condition naming one owner's entries (a mailbox's, or the server's when
/// `mailbox_id IS NULL`: each has its partial unique index), and the number of the
/// first placeholder after it. [`bind_owner`] binds its values.
fn owner(mailbox: Option<MailboxId>) -> (&'static str, usize) {
    match mailbox {
        Some(_) => ("account_id = $1 AND mailbox_id = $2", 3),
        None => ("account_id = $1 AND mailbox_id IS NULL", 2),
    }
}

/// Binds what [`owner`]'s condition names.
fn bind_owner(query: AnyQuery<'_>, account: AccountId, mailbox: Option<MailboxId>) -> AnyQuery<'_> {
    let query = query.bind(account.0);
    match mailbox {
        Some(mailbox) => query.bind(mailbox.0),
        None => query,
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl SqlStore {
    pub(super) async fn set_metadata_entries_tx(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entries: &[(String, Option<Vec<u8>>)],
        max_entries: usize,
    ) -> TxResult<MetadataWrite> {
        if entries.iter().any(|(entry, _)| entry.is_empty()) {
            return Err(Error::Invalid("empty metadata entry name".into()).into());
        }
        let mut tx = self.begin().await?;
        // The owner's row is locked first, so concurrent writers (other nodes too) take
        // turns and the count below stays true until the commit.
        let modseq = match mailbox {
            Some(mailbox) => {
                lock_mailbox(&mut tx, account, mailbox, 1)
                    .await?
                    .highestmodseq
            }
            None => {
                lock_account(&mut tx, account).await?;
                0
            }
        };
        let before = count(&mut tx, account, mailbox).await?;
        let (condition, next) = owner(mailbox);
        let delete = format!("DELETE FROM metadata WHERE {condition} AND entry = ${next}");
        let mut changed = 0;
        for (entry, value) in entries {
            let entry = entry.to_ascii_lowercase();
            changed += bind_owner(sqlx::query(&delete), account, mailbox)
                .bind(entry.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if let Some(value) = value {
                sqlx::query(
                    "INSERT INTO metadata (account_id, mailbox_id, entry, value) VALUES ($1, $2, $3, $4)",
                )
                .bind(account.0)
                .bind(mailbox.map(|m| m.0))
                .bind(entry.as_str())
                .bind(value.clone())
                .execute(&mut *tx)
                .await?;
                changed += 1;
            }
        }
        let after = count(&mut tx, account, mailbox).await?;
        if after > before && after > max_entries {
            tx.rollback().await?;
            return Ok(MetadataWrite::TooMany);
        }
        if changed == 0 {
            // Removing entries that are not there: nothing to tell anyone.
            tx.rollback().await?;
            return Ok(MetadataWrite::Written);
        }
        let change = Change {
            account,
            mailbox,
            modseq,
            kind: ChangeKind::Metadata,
        };
        self.commit(tx, vec![change]).await?;
        Ok(MetadataWrite::Written)
    }

    /// The entry and what is below it to `depth`, read outside a transaction.
    pub(super) async fn metadata_below_read(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        depth: MetadataDepth,
    ) -> TxResult<Vec<(String, Vec<u8>)>> {
        match mailbox {
            Some(mailbox) => {
                self.read_mailbox(account, mailbox).await?;
            }
            None => self.require_account(account).await?,
        }
        let entry = entry.to_ascii_lowercase();
        let (first, last) = if depth == MetadataDepth::Entry {
            // An empty range: `first` > `last`.
            ("1".to_owned(), "0".to_owned())
        } else {
            (format!("{entry}/"), format!("{entry}0"))
        };
        let (condition, n) = owner(mailbox);
        let select = format!(
            "SELECT entry, value FROM metadata WHERE {condition} \
             AND (entry = ${n} OR (entry > ${} AND entry < ${})) ORDER BY entry",
            n + 1,
            n + 2
        );
        let rows = bind_owner(sqlx::query(&select), account, mailbox)
            .bind(entry.as_str())
            .bind(first.as_str())
            .bind(last.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(map_sqlx)?;
            let value: Vec<u8> = row.try_get(1).map_err(map_sqlx)?;
            let below = name.get(entry.len() + 1..).unwrap_or_default();
            if depth == MetadataDepth::Children && below.contains('/') {
                continue;
            }
            found.push((name, value));
        }
        Ok(found)
    }
}

/// Locks the account's row for the rest of the transaction (PostgreSQL; an SQLite
/// write transaction holds the database anyway); [`Error::NotFound`] if it is gone.
async fn lock_account(tx: &mut AnyConnection, account: AccountId) -> TxResult<()> {
    let locked = sqlx::query("UPDATE accounts SET status = status WHERE account_id = $1")
        .bind(account.0)
        .execute(&mut *tx)
        .await?;
    if locked.rows_affected() == 0 {
        // Said the same way as everywhere else.
        require_account_tx(tx, account).await?;
        return Err(not_found_account(account));
    }
    Ok(())
}

/// How many entries the owner has.
async fn count(
    tx: &mut AnyConnection,
    account: AccountId,
    mailbox: Option<MailboxId>,
) -> TxResult<usize> {
    let (condition, _) = owner(mailbox);
    let select = format!("SELECT COUNT(*) FROM metadata WHERE {condition}");
    let row = bind_owner(sqlx::query(&select), account, mailbox)
        .fetch_one(&mut *tx)
        .await?;
    let n: i64 = row.try_get(0)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}
