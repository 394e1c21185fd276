//! Messages: append, flags, copy and move, expunge and its tombstones, changes since a
//! MODSEQ, and the quota; keyword and UID-range helpers.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use sqlx::error::ErrorKind;
use sqlx::{Any, Connection, Row};

use super::rows::{
    encode_keywords, lock_mailbox, message_change, meta_from_row, metas_in_ranges,
    not_found_mailbox, now, to_i64, to_u32, to_u64,
};
use super::{Backend, SYSTEM_MASK, SqlStore, TxResult};
use crate::changes::ChangeKind;
use crate::{
    AccountId, Appended, ConditionalStore, Copied, Error, FlagOp, Flags, MailboxChanges, MailboxId,
    MessageMeta, NewMessage, Result, SystemFlags, UidRange,
};

impl SqlStore {
    pub(super) async fn append_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        msg: &NewMessage,
        keywords: &[String],
    ) -> TxResult<Appended> {
        let size = i64::try_from(msg.content.len())
            .map_err(|_| Error::Invalid("message too large".into()))?;
        let hash = hex::encode(Sha256::digest(&msg.content));
        let cpm_headers = crate::cpm::indexed_headers(&msg.content);
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
        insert_cpm_headers(&mut tx, account, mailbox, uid, &cpm_headers).await?;
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

    pub(super) async fn store_flags_tx(
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

    pub(super) async fn copy_tx(
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
        let messages = metas_in_ranges(&mut tx, SELECT_RANGE, account, from, ranges).await?;
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
        // The copies are indexed like their sources; read before a move deletes the
        // sources (and, by the foreign key, their index rows).
        let mut cpm_headers: std::collections::BTreeMap<u32, Vec<(String, String)>> =
            Default::default();
        for &(lo, hi) in ranges {
            let rows = sqlx::query(
                "SELECT uid, name, value FROM cpm_headers WHERE account_id = $1 AND mailbox_id = $2 \
                 AND uid >= $3 AND uid <= $4",
            )
            .bind(account.0)
            .bind(from.0)
            .bind(lo)
            .bind(hi)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                cpm_headers
                    .entry(to_u32(row.try_get(0)?, "uid")?)
                    .or_default()
                    .push((row.try_get(1)?, row.try_get(2)?));
            }
        }
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
            if let Some(headers) = cpm_headers.get(&meta.uid) {
                insert_cpm_headers(&mut tx, account, to, i64::from(uid), headers).await?;
            }
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

    pub(super) async fn expunge_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        ranges: &[(i64, i64)],
    ) -> TxResult<Vec<u32>> {
        let mut tx = self.begin().await?;
        let locked = lock_mailbox(&mut tx, account, mailbox, 1).await?;
        let modseq = to_i64(locked.highestmodseq)?;
        let mut gone = metas_in_ranges(&mut tx, EXPUNGE_RANGE, account, mailbox, ranges).await?;
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
    pub(super) async fn collect_blobs(
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
    pub(super) async fn purge_expunged_tx(&self, before: i64, limit: u64) -> TxResult<u64> {
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

    pub(super) async fn changes_since_tx(
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

    pub(super) async fn expunged_since_tx(
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
}

pub(super) const SELECT_RANGE: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 ORDER BY uid"
);
pub(super) const SELECT_MAILBOX_MESSAGES: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM messages WHERE account_id = $1 AND mailbox_id = $2 ORDER BY uid"
);
pub(super) const EXPUNGE_RANGE: &str = concat!(
    "DELETE FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 \
     AND (system_flags & 8) <> 0 RETURNING ",
    meta_columns!()
);
/// The kept data of expunged messages, as [`meta_from_row`] reads it (the MODSEQ is the
/// expunge's).
pub(super) const SELECT_EXPUNGED_RANGE: &str = "SELECT uid, modseq, system_flags, keywords, internal_date, \
     internal_date_tz, size, blob_hash FROM expunged \
     WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 AND blob_hash IS NOT NULL \
     ORDER BY uid";
pub(super) const SELECT_RANGE_UNCHANGED_SINCE: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 AND modseq <= $5 \
     ORDER BY uid"
);
pub(super) const SELECT_CHANGED: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM messages WHERE account_id = $1 AND mailbox_id = $2 AND modseq > $3 AND modseq <= $4 ORDER BY uid"
);
/// $6: the bits to add.
pub(super) const STORE_ADD_SYSTEM: &str = concat!(
    "UPDATE messages SET system_flags = (system_flags | $6), modseq = $7 \
     WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 AND modseq <= $5 \
     AND (system_flags | $6) <> system_flags RETURNING ",
    meta_columns!()
);
/// $6: the bits to keep.
pub(super) const STORE_REMOVE_SYSTEM: &str = concat!(
    "UPDATE messages SET system_flags = (system_flags & $6), modseq = $7 \
     WHERE account_id = $1 AND mailbox_id = $2 AND uid >= $3 AND uid <= $4 AND modseq <= $5 \
     AND (system_flags & $6) <> system_flags RETURNING ",
    meta_columns!()
);

/// Refuses `extra` more bytes if the account has a quota they would exceed. On
/// PostgreSQL the no-op UPDATE locks the account row, so concurrent appends to different
/// mailboxes of one account are checked one after the other.
pub(super) async fn check_quota(
    tx: &mut AnyConnection,
    account: AccountId,
    extra: i64,
) -> TxResult<()> {
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

pub(super) async fn usage<'e, E>(
    executor: E,
    account: AccountId,
) -> std::result::Result<i64, sqlx::Error>
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
pub(super) struct MessageRow<'a> {
    uid: i64,
    modseq: i64,
    internal_date: i64,
    internal_date_tz: i64,
    size: i64,
    system_flags: i64,
    keywords: &'a str,
    blob_hash: &'a str,
}

pub(super) async fn insert_message(
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

impl SqlStore {
    /// One batch of [`Store::backfill_cpm_headers`]: the pending messages' headers
    /// indexed (a message gone meanwhile took its pending row with it; one whose blob
    /// cannot be read is dropped from the list all the same, so the backfill ends).
    pub(super) async fn backfill_cpm_headers_tx(&self, batch: i64) -> TxResult<u64> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT p.account_id, p.mailbox_id, p.uid, b.data FROM cpm_headers_pending p \
             LEFT JOIN messages m ON m.account_id = p.account_id AND m.mailbox_id = p.mailbox_id \
             AND m.uid = p.uid \
             LEFT JOIN blobs b ON b.account_id = m.account_id AND b.hash = m.blob_hash \
             ORDER BY p.account_id, p.mailbox_id, p.uid LIMIT $1",
        )
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let account = AccountId(row.try_get(0)?);
            let mailbox = MailboxId(row.try_get(1)?);
            let uid: i64 = row.try_get(2)?;
            let data: Option<Vec<u8>> = row.try_get(3)?;
            if let Some(data) = data {
                let headers = crate::cpm::indexed_headers(&data);
                insert_cpm_headers(&mut tx, account, mailbox, uid, &headers).await?;
            }
            sqlx::query(
                "DELETE FROM cpm_headers_pending WHERE account_id = $1 AND mailbox_id = $2 \
                 AND uid = $3",
            )
            .bind(account.0)
            .bind(mailbox.0)
            .bind(uid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}

/// Indexes a message's CPM headers (see `crate::cpm`): (lower-case name, value) pairs.
pub(super) async fn insert_cpm_headers<N: AsRef<str>>(
    tx: &mut AnyConnection,
    account: AccountId,
    mailbox: MailboxId,
    uid: i64,
    headers: &[(N, String)],
) -> TxResult<()> {
    for (name, value) in headers {
        sqlx::query(
            "INSERT INTO cpm_headers (account_id, mailbox_id, uid, name, value, folded) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (account_id, mailbox_id, uid, name, folded) DO NOTHING",
        )
        .bind(account.0)
        .bind(mailbox.0)
        .bind(uid)
        .bind(name.as_ref())
        .bind(value.as_str())
        .bind(value.to_ascii_lowercase())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Records `meta` as expunged from `mailbox` at `modseq`, keeping its row (and so its
/// blob) for the sessions that have not yet been told (see [`Store::fetch_expunged`]).
pub(super) async fn insert_tombstone(
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

pub(super) async fn record_keywords(
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

/// Sorted, merged, inclusive ranges (a reversed range is read the other way round, as
/// IMAP reads `5:3`); UID 0 does not exist.
pub(super) fn normalise_ranges(uids: &[UidRange]) -> Vec<(i64, i64)> {
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
/// an IMAP atom: no spaces, controls or atom-specials, and not a `\` system flag, except
/// the CPM flag [`crate::cpm::READ_REPORT_SENT`], kept among the keywords.
pub(super) fn normalise_keywords(keywords: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(keywords.len());
    for keyword in keywords {
        let bad = keyword != crate::cpm::READ_REPORT_SENT
            && (keyword.is_empty()
                || keyword.starts_with('\\')
                || keyword.chars().any(|c| {
                    c.is_whitespace()
                        || c.is_control()
                        || matches!(c, '(' | ')' | '{' | '%' | '*' | '"' | '\\' | ']')
                }));
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

/// The flags a STORE leaves on a message. `given` is normalised.
pub(super) fn apply_flags(op: FlagOp, current: &Flags, given: &Flags) -> Flags {
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
