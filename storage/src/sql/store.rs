//! [`Store`] for [`SqlStore`]: the trait, in one `impl` block as Rust wants it. Each
//! method runs a query here or one of the domain modules' transactions in
//! [`SqlStore::retry`].

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::Row;

use super::accounts::{
    AccountUpdate, Key, SELECT_ACCOUNT_BY_ADDRESS, SELECT_ACCOUNT_BY_ID, SELECT_ACCOUNT_BY_NAME,
    SELECT_ACCOUNTS, SELECT_ACTIVE_PSKS, SELECT_PSK_BY_IDENTITY, SELECT_PSKS_OF,
};
use super::mailboxes::{SELECT_MAILBOX_BY_NAME, SELECT_MAILBOXES, canonical_name};
use super::messages::{
    SELECT_EXPUNGED_RANGE, SELECT_RANGE, normalise_keywords, normalise_ranges, usage,
};
use super::rows::{
    account_from_row, mailbox_from_row, map_sqlx, meta_from_row, metas_in_ranges, psk_from_row,
    quota_to_db, to_u32, to_u64,
};
use super::{PURGE_BATCH, SYSTEM_MASK, SqlStore};
use crate::changes::ChangeBus;

/// Hashes [`Store::blobs`] asks for in one statement.
const BLOBS_PER_QUERY: usize = 64;
use crate::{
    Account, AccountId, AccountStatus, Appended, ConditionalStore, Copied, CredentialRecord, Error,
    FlagOp, Flags, Mailbox, MailboxChanges, MailboxCounts, MailboxId, MessageMeta, MetadataDepth,
    MetadataWrite, NewAccount, NewMailbox, NewMessage, PskRecord, Result, Store, SystemFlags,
    UidRange, Whitelist, WhitelistEntry,
};

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

    async fn blobs(&self, account: AccountId, hashes: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut wanted: Vec<&str> = hashes.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = Vec::with_capacity(wanted.len());
        // A bounded number of placeholders per statement.
        for part in wanted.chunks(BLOBS_PER_QUERY) {
            let mut sql =
                String::from("SELECT hash, data FROM blobs WHERE account_id = $1 AND hash IN (");
            for i in 0..part.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i + 2));
            }
            sql.push(')');
            let mut query = sqlx::query(&sql).bind(account.0);
            for hash in part {
                query = query.bind(*hash);
            }
            let rows = query
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.map_err(e))?;
            for row in rows {
                out.push((
                    row.try_get(0).map_err(map_sqlx)?,
                    row.try_get(1).map_err(map_sqlx)?,
                ));
            }
        }
        Ok(out)
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
        let ranges = normalise_ranges(uids);
        let mut conn = self.pool.acquire().await.map_err(|e| self.map_err(e))?;
        metas_in_ranges(&mut conn, SELECT_EXPUNGED_RANGE, account, mailbox, &ranges)
            .await
            .map_err(|e| self.fail(e))
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

    async fn uids_by_header(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        name: &str,
        value: &str,
    ) -> Result<Vec<u32>> {
        let Some(name) = crate::cpm::indexed_name(name) else {
            return Err(Error::Invalid(format!("header {name:?} is not indexed")));
        };
        self.read_mailbox(account, mailbox)
            .await
            .map_err(|e| self.fail(e))?;
        let rows = sqlx::query(
            "SELECT uid FROM cpm_headers WHERE account_id = $1 AND name = $2 AND folded = $3 \
             AND mailbox_id = $4 ORDER BY uid",
        )
        .bind(account.0)
        .bind(name)
        .bind(value.trim().to_ascii_lowercase())
        .bind(mailbox.0)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.map_err(e))?;
        let mut uids = rows
            .iter()
            .map(|row| to_u32(row.try_get(0).map_err(|e| self.map_err(e))?, "uid"))
            .collect::<Result<Vec<u32>>>()?;
        uids.dedup();
        Ok(uids)
    }

    async fn uids_by_header_containing(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        name: &str,
        needle: &str,
    ) -> Result<Vec<u32>> {
        let Some(name) = crate::cpm::indexed_name(name) else {
            return Err(Error::Invalid(format!("header {name:?} is not indexed")));
        };
        let folded = needle.to_ascii_lowercase();
        let chars = i32::try_from(folded.chars().count())
            .map_err(|_| Error::Invalid("search string too long".into()))?;
        let mut pattern = String::with_capacity(folded.len() + 2);
        pattern.push('%');
        for c in folded.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        // One statement, two index searches (see `HEADER_SEARCH_SQL`).
        let rows = sqlx::query(crate::cpm::HEADER_SEARCH_SQL)
            .bind(account.0)
            .bind(name)
            .bind(folded.as_str())
            .bind(mailbox.0)
            .bind(chars)
            .bind(pattern)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.map_err(e))?;
        if rows.is_empty() {
            // Nothing found: say so only of a mailbox that exists.
            self.read_mailbox(account, mailbox)
                .await
                .map_err(|e| self.fail(e))?;
        }
        let mut uids = rows
            .iter()
            .map(|row| to_u32(row.try_get(0).map_err(|e| self.map_err(e))?, "uid"))
            .collect::<Result<Vec<u32>>>()?;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    async fn backfill_cpm_headers(&self, batch: u32) -> Result<u64> {
        self.retry(|| Box::pin(self.backfill_cpm_headers_tx(i64::from(batch))))
            .await
    }

    async fn objects_by_imdn(
        &self,
        account: AccountId,
        imdn_id: &str,
    ) -> Result<Vec<(MailboxId, u32)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT mailbox_id, uid FROM cpm_headers WHERE account_id = $1 AND name = $2 \
             AND folded = $3 ORDER BY mailbox_id, uid",
        )
        .bind(account.0)
        .bind(crate::cpm::IMDN_MESSAGE_ID)
        .bind(imdn_id.trim().to_ascii_lowercase())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.map_err(e))?;
        rows.iter()
            .map(|row| {
                let mailbox: i64 = row.try_get(0).map_err(|e| self.map_err(e))?;
                let uid = to_u32(row.try_get(1).map_err(|e| self.map_err(e))?, "uid")?;
                Ok((MailboxId(mailbox), uid))
            })
            .collect()
    }

    async fn accounts_without_mailbox(&self, name: &str) -> Result<Vec<AccountId>> {
        let rows = sqlx::query(
            "SELECT account_id FROM accounts a WHERE NOT EXISTS \
             (SELECT 1 FROM mailboxes m WHERE m.account_id = a.account_id AND m.name = $1) \
             ORDER BY account_id",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.map_err(e))?;
        rows.iter()
            .map(|row| Ok(AccountId(row.try_get(0).map_err(|e| self.map_err(e))?)))
            .collect()
    }

    async fn set_metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let entries = [(entry.to_owned(), value.map(<[u8]>::to_vec))];
        self.set_metadata_entries(account, mailbox, &entries, usize::MAX)
            .await
            .map(|_| ())
    }

    async fn metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
    ) -> Result<Option<Vec<u8>>> {
        let found = self
            .metadata_below(account, mailbox, entry, MetadataDepth::Entry)
            .await?;
        Ok(found.into_iter().next().map(|(_, value)| value))
    }

    async fn set_metadata_entries(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entries: &[(String, Option<Vec<u8>>)],
        max_entries: usize,
    ) -> Result<MetadataWrite> {
        self.retry(|| {
            Box::pin(self.set_metadata_entries_tx(account, mailbox, entries, max_entries))
        })
        .await
    }

    async fn metadata_below(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        depth: MetadataDepth,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        self.metadata_below_read(account, mailbox, entry, depth)
            .await
            .map_err(|e| self.fail(e))
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
