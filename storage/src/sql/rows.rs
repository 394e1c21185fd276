//! Rows into model types, and what every domain shares: time, integer conversions,
//! keyword text, "not found" errors, change-bus events, sqlx error mapping, and the two
//! statements most write transactions begin with ([`require_account_tx`],
//! [`lock_mailbox`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyRow;
use sqlx::error::ErrorKind;
use sqlx::{AnyConnection, Row};

use super::{Fail, Locked, SYSTEM_MASK, TxResult};
use crate::changes::{Change, ChangeKind};
use crate::{
    Account, AccountId, AccountStatus, Error, Flags, Mailbox, MailboxId, MessageMeta, PskRecord,
    Result, SystemFlags,
};

pub(super) fn account_from_row(row: &AnyRow) -> Result<Account> {
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

pub(super) fn mailbox_from_row(row: &AnyRow) -> Result<Mailbox> {
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

pub(super) fn meta_from_row(row: &AnyRow) -> Result<MessageMeta> {
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

pub(super) fn psk_from_row(row: &AnyRow) -> Result<PskRecord> {
    Ok(PskRecord {
        identity: row.try_get(0).map_err(map_sqlx)?,
        account: AccountId(row.try_get(1).map_err(map_sqlx)?),
        sealed_key: row.try_get(2).map_err(map_sqlx)?,
        updated_at: row.try_get(3).map_err(map_sqlx)?,
    })
}

pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Exponential backoff with jitter between attempts of a transaction.
pub(super) fn backoff(attempt: u32) -> Duration {
    let base = 5_u64 << attempt.min(8);
    Duration::from_millis(base + rand::random::<u64>() % base)
}

pub(super) fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Database(format!("{what} out of range: {value}")))
}

pub(super) fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Database(format!("{what} out of range: {value}")))
}

pub(super) fn to_i64(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::Invalid(format!("value out of range: {value}")))
}

pub(super) fn quota_to_db(quota: Option<u64>) -> Result<Option<i64>> {
    quota.map(to_i64).transpose()
}

pub(super) fn not_found_account(id: AccountId) -> Fail {
    Fail::Store(Error::NotFound(format!("account {}", id.0)))
}

pub(super) fn not_found_mailbox(id: MailboxId) -> Fail {
    Fail::Store(Error::NotFound(format!("mailbox {}", id.0)))
}

pub(super) fn account_change(account: AccountId) -> Change {
    Change {
        account,
        mailbox: None,
        modseq: 0,
        kind: ChangeKind::Account,
    }
}

pub(super) fn mailbox_change(account: AccountId, mailbox: MailboxId, modseq: u64) -> Change {
    message_change(account, mailbox, modseq, ChangeKind::Mailboxes)
}

pub(super) fn message_change(
    account: AccountId,
    mailbox: MailboxId,
    modseq: u64,
    kind: ChangeKind,
) -> Change {
    Change {
        account,
        mailbox: Some(mailbox),
        modseq,
        kind,
    }
}

/// A unique violation becomes `AlreadyExists(what)`; anything else stays a database error.
pub(super) fn exists_or(e: sqlx::Error, what: impl FnOnce() -> String) -> Fail {
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

pub(super) fn decode_keywords(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn encode_keywords(keywords: &[String]) -> String {
    keywords.join(" ")
}

pub(super) async fn require_account_tx(tx: &mut AnyConnection, id: AccountId) -> TxResult<()> {
    let row = sqlx::query("SELECT account_id FROM accounts WHERE account_id = $1")
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(not_found_account(id)),
    }
}

/// The message rows `sql` returns (it binds account, mailbox and a UID range's two
/// ends, and reads [`meta_from_row`]'s columns) for each of `ranges` in turn.
pub(super) async fn metas_in_ranges(
    tx: &mut AnyConnection,
    sql: &'static str,
    account: AccountId,
    mailbox: MailboxId,
    ranges: &[(i64, i64)],
) -> TxResult<Vec<MessageMeta>> {
    let mut metas = Vec::new();
    for &(lo, hi) in ranges {
        let rows = sqlx::query(sql)
            .bind(account.0)
            .bind(mailbox.0)
            .bind(lo)
            .bind(hi)
            .fetch_all(&mut *tx)
            .await?;
        for row in rows {
            metas.push(meta_from_row(&row)?);
        }
    }
    Ok(metas)
}

/// Locks the mailbox row (the first statement of a message write) and adds `bump` to
/// its HIGHESTMODSEQ; returns the row as updated.
pub(super) async fn lock_mailbox(
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
