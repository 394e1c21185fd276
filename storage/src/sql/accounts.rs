//! Accounts: the account row, credentials, PSK identities and addresses, and the
//! statements that read and write them.

use sqlx::AnyConnection;
use sqlx::Row;

use super::mailboxes::{insert_mailbox, subscribe, valid_mailbox_name};
use super::rows::{
    account_change, account_from_row, exists_or, not_found_account, now, quota_to_db,
    require_account_tx,
};
use super::{INBOX, SqlStore, TxResult};
use crate::{Account, AccountId, AccountStatus, CredentialRecord, Error, NewAccount};

impl SqlStore {
    pub(super) async fn read_account(
        &self,
        sql: &'static str,
        key: Key<'_>,
    ) -> TxResult<Option<Account>> {
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

    pub(super) async fn require_account(&self, id: AccountId) -> TxResult<()> {
        let row = sqlx::query("SELECT account_id FROM accounts WHERE account_id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(_) => Ok(()),
            None => Err(not_found_account(id)),
        }
    }

    pub(super) async fn create_account_tx(&self, new: &NewAccount) -> TxResult<Account> {
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

    pub(super) async fn update_account_tx(
        &self,
        id: AccountId,
        update: AccountUpdate,
    ) -> TxResult<()> {
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

    pub(super) async fn remove_account_tx(&self, id: AccountId) -> TxResult<()> {
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

    pub(super) async fn set_credentials_tx(
        &self,
        id: AccountId,
        cred: &CredentialRecord,
    ) -> TxResult<()> {
        let mut tx = self.begin().await?;
        require_account_tx(&mut tx, id).await?;
        upsert_credentials(&mut tx, id, cred).await?;
        self.commit(tx, vec![account_change(id)]).await
    }

    pub(super) async fn set_psk_tx(
        &self,
        id: AccountId,
        identity: &str,
        sealed_key: &[u8],
    ) -> TxResult<()> {
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

    pub(super) async fn remove_psk_tx(&self, id: AccountId) -> TxResult<()> {
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

    pub(super) async fn add_address_tx(&self, id: AccountId, address: &str) -> TxResult<()> {
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

    pub(super) async fn remove_address_tx(&self, id: AccountId, address: &str) -> TxResult<()> {
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
}

/// What `update_account_tx` changes.
#[derive(Debug, Clone, Copy)]
pub(super) enum AccountUpdate {
    Status(&'static str),
    Quota(Option<i64>),
}

/// How an account is looked up.
pub(super) enum Key<'a> {
    Id(i64),
    Text(&'a str),
}

/// Tables with an account_id column, children before parents: `remove_account`
/// deletes from each explicitly, whatever ON DELETE CASCADE would do. A table added to
/// the schema must be added here (the story test checks every table of the schema).
pub(super) const ACCOUNT_TABLES_CHILDREN_FIRST: [&str; 13] = [
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

pub(super) const SELECT_ACCOUNT_BY_ID: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE account_id = $1"
);
pub(super) const SELECT_ACCOUNT_BY_NAME: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE username = $1"
);
pub(super) const SELECT_ACCOUNT_BY_ADDRESS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE account_id = (SELECT account_id FROM addresses WHERE address = $1)"
);
pub(super) const SELECT_ACCOUNTS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts ORDER BY account_id"
);

pub(super) const SELECT_PSK_BY_IDENTITY: &str = concat!(
    "SELECT ",
    psk_columns!(),
    " FROM psk_identities WHERE identity = $1"
);
pub(super) const SELECT_PSKS_OF: &str = concat!(
    "SELECT ",
    psk_columns!(),
    " FROM psk_identities WHERE account_id = $1 ORDER BY identity"
);
pub(super) const SELECT_ACTIVE_PSKS: &str = concat!(
    "SELECT ",
    psk_columns!(),
    " FROM psk_identities WHERE account_id IN (SELECT account_id FROM accounts WHERE status = 'active') \
     ORDER BY identity"
);

pub(super) async fn upsert_credentials(
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
