//! Push whitelists: replace or clear a context's entries, and read them back.

use sqlx::Row;

use super::rows::{account_change, now, require_account_tx};
use super::{SqlStore, TxResult};
use crate::{AccountId, Error, Whitelist, WhitelistEntry, WhitelistKind};

impl SqlStore {
    pub(super) async fn set_whitelist_tx(
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

    pub(super) async fn clear_whitelist_tx(
        &self,
        account: AccountId,
        context: Option<&str>,
    ) -> TxResult<()> {
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

    pub(super) async fn whitelists_of(
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
            let kind: String = row.try_get(1)?;
            let kind = kind.parse::<WhitelistKind>().map_err(|_| {
                Error::Database(format!(
                    "unknown whitelist entry kind {kind:?} in the database"
                ))
            })?;
            let entry = WhitelistEntry {
                kind,
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
