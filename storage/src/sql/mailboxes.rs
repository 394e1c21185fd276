//! Mailboxes: create, rename (INBOX included), delete, subscriptions, `\Recent`,
//! and the mailbox row lock every message write begins with (metadata: `metadata.rs`).

use std::collections::BTreeSet;

use sqlx::AnyConnection;
use sqlx::Row;

use super::messages::{SELECT_MAILBOX_MESSAGES, insert_tombstone};
use super::rows::{
    exists_or, mailbox_change, mailbox_from_row, meta_from_row, not_found_account,
    not_found_mailbox, now, require_account_tx, to_u32, to_u64,
};
use super::{INBOX, SqlStore, TxResult};
use crate::changes::{Change, ChangeKind};
use crate::{AccountId, Error, Mailbox, MailboxId, NewMailbox, Result};

impl SqlStore {
    pub(super) async fn read_mailbox(
        &self,
        account: AccountId,
        mailbox: MailboxId,
    ) -> TxResult<Mailbox> {
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

    pub(super) async fn create_mailbox_tx(
        &self,
        id: AccountId,
        mailbox: &NewMailbox,
    ) -> TxResult<Mailbox> {
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

    pub(super) async fn rename_mailbox_tx(
        &self,
        id: AccountId,
        from: &str,
        to: &str,
    ) -> TxResult<()> {
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
    pub(super) async fn rename_inbox_tx(&self, id: AccountId, to: &str) -> TxResult<()> {
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

    pub(super) async fn delete_mailbox_tx(&self, id: AccountId, name: &str) -> TxResult<()> {
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

    pub(super) async fn set_subscribed_tx(
        &self,
        id: AccountId,
        name: &str,
        subscribed: bool,
    ) -> TxResult<()> {
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

    pub(super) async fn claim_recent_tx(
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

    pub(super) async fn unclaimed_recent_tx(
        &self,
        account: AccountId,
        mailbox: MailboxId,
    ) -> TxResult<u32> {
        let row = sqlx::query("SELECT recent_uid FROM mailboxes WHERE account_id = $1 AND id = $2")
            .bind(account.0)
            .bind(mailbox.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found_mailbox(mailbox))?;
        Ok(to_u32(row.try_get(0)?, "recent uid")?)
    }
}

pub(super) const SELECT_MAILBOX_BY_ID: &str =
    concat!(select_mailbox!(), " WHERE m.account_id = $1 AND m.id = $2");
pub(super) const SELECT_MAILBOX_BY_NAME: &str = concat!(
    select_mailbox!(),
    " WHERE m.account_id = $1 AND m.name = $2"
);
pub(super) const SELECT_MAILBOXES: &str = concat!(
    select_mailbox!(),
    " WHERE m.account_id = $1 ORDER BY m.name"
);

/// The next UIDVALIDITY of the account: now, or one more than the last if that is not
/// less (two mailboxes created in one second, or a clock that went back).
pub(super) async fn next_uidvalidity(tx: &mut AnyConnection, id: AccountId) -> TxResult<i64> {
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

pub(super) async fn insert_mailbox(
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

pub(super) async fn subscribe(tx: &mut AnyConnection, id: AccountId, name: &str) -> TxResult<()> {
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
pub(super) async fn rename_subscription(
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
pub(super) fn valid_mailbox_name(name: &str) -> Result<String> {
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() || name.split('/').any(str::is_empty) || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("bad mailbox name {name:?}")));
    }
    Ok(canonical_name(name))
}
