//! Provisioning operations: one implementation shared by the CLI (`cpmstore subscriber
//! ...`) and the HTTP admin API. Each takes the [`Store`], validates its input, and
//! returns a serde-serialisable result or an [`AdminError`] whose class is the CLI exit
//! status and the HTTP status.
//!
//! Secrets: a generated password or PSK is returned once, in the result's `password` /
//! `psk_key_hex` field; nothing here logs one.

use std::sync::Arc;

use cpmstore_storage::{
    Account, AccountStatus, Error as StorageError, NewAccount, NewMailbox, OpenOptions, Store,
};
use serde::Serialize;

use crate::auth::credentials::{self, CredentialRecord, HashParams};
use crate::auth::psk::{self, Kek};
use crate::auth::secret::{self, Secret};
use crate::config::Config;
use crate::validate::{normalize_address, validate_username};

pub mod error;
pub mod whitelist;

pub use error::AdminError;

/// Where a new password comes from.
#[derive(Debug)]
pub enum PasswordSource {
    /// Given by the caller (CLI stdin, API body); checked against the policy.
    Given(Secret),
    /// Generated; returned once in the result.
    Generate,
    /// No password (the subscriber may still log in with a PSK).
    None,
}

/// Where a PSK comes from.
#[derive(Debug)]
pub enum PskSource {
    /// Given as hex (16 to 64 bytes).
    Hex(Secret),
    /// Generated (32 bytes); returned once in the result as hex.
    Generate,
}

/// `subscriber add`.
#[derive(Debug)]
pub struct AddRequest {
    /// The login name.
    pub username: String,
    /// The password, if any.
    pub password: PasswordSource,
    /// Public identities (`tel:...`, `sip:...`), normalised before storing.
    pub addresses: Vec<String>,
    /// Storage quota in bytes; `None` is unlimited.
    pub quota: Option<u64>,
}

/// A subscriber as `subscriber show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberInfo {
    /// Login name.
    pub username: String,
    /// `active` or `disabled`.
    pub status: AccountStatus,
    /// Quota in bytes, `null` for unlimited.
    pub quota: Option<u64>,
    /// Normalised addresses.
    pub addresses: Vec<String>,
    /// Whether a password is set.
    pub has_password: bool,
    /// PSK identities of the subscriber.
    pub psk_identities: Vec<String>,
    /// Mailbox names.
    pub mailboxes: Vec<String>,
    /// Bytes used by the subscriber's messages.
    pub usage_bytes: u64,
}

/// The result of `subscriber add`: the subscriber, plus the generated password if one
/// was asked for.
#[derive(Debug, Serialize)]
pub struct Added {
    /// The new subscriber.
    #[serde(flatten)]
    pub subscriber: SubscriberInfo,
    /// The generated password; absent when the caller gave one or none.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::serialize_exposed"
    )]
    pub password: Option<Secret>,
}

/// The result of `subscriber set-password`.
#[derive(Debug, Serialize)]
pub struct PasswordChanged {
    /// The subscriber.
    pub username: String,
    /// Always true: the subscriber has a password now.
    pub has_password: bool,
    /// The generated password; absent when the caller gave one.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::serialize_exposed"
    )]
    pub password: Option<Secret>,
}

/// The result of `subscriber set-psk`.
#[derive(Debug, Serialize)]
pub struct PskSet {
    /// The subscriber.
    pub username: String,
    /// The PSK identity now bound to the subscriber.
    pub identity: String,
    /// The generated key as hex; absent when the caller gave one.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::serialize_exposed"
    )]
    pub psk_key_hex: Option<Secret>,
}

/// The result of `subscriber remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// The subscriber that was removed.
    pub username: String,
    /// Always true.
    pub removed: bool,
}

/// One entry of `subscriber list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberSummary {
    /// Login name.
    pub username: String,
    /// `active` or `disabled`.
    pub status: AccountStatus,
    /// Quota in bytes, `null` for unlimited.
    pub quota: Option<u64>,
}

/// Opens the configured store, applying migrations, after creating the directory of a
/// SQLite database. The error names where the storage is, never its password.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, AdminError> {
    open_store_with(config, &OpenOptions::default()).await
}

/// [`open_store`] with explicit pool options.
pub async fn open_store_with(
    config: &Config,
    options: &OpenOptions,
) -> Result<Arc<dyn Store>, AdminError> {
    if let Some(path) = config.storage.sqlite_path()
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            AdminError::Internal(format!(
                "cannot create the directory {} for the SQLite database: {e}; \
                 check its permissions, or set data_dir / storage.url",
                dir.display()
            ))
        })?;
    }
    cpmstore_storage::open(&config.storage.url, options)
        .await
        .map_err(|e| open_error(config, e))
}

/// The error of opening the store, scrubbed of the URL's password.
fn open_error(config: &Config, err: StorageError) -> AdminError {
    let where_ = config.storage.describe();
    let mend = "check that the database is running and reachable, and that storage.url \
                (or CPMSTORE_STORAGE_URL) is right";
    match err {
        StorageError::Invalid(cause) => AdminError::Invalid(format!(
            "cannot open storage ({where_}): {}; {mend}",
            scrub(config, &cause)
        )),
        StorageError::Unreachable(cause) => AdminError::Unavailable(format!(
            "cannot reach storage ({where_}): {}; {mend}",
            scrub(config, &cause)
        )),
        other => AdminError::Internal(format!(
            "cannot open storage ({where_}): {}; {mend}",
            scrub(config, &other.to_string())
        )),
    }
}

/// Removes the storage URL and its password from a message of a lower layer.
pub fn scrub(config: &Config, message: &str) -> String {
    let mut message = message.replace(&config.storage.url, &config.storage.redacted_url());
    if let Some(password) = config.storage.url_password() {
        // The URL holds the password percent-encoded; lower layers may show it decoded.
        let decoded = percent_decode(&password);
        for form in [password, decoded] {
            if !form.is_empty() {
                message = message.replace(&form, "***");
            }
        }
    }
    message
}

/// `%XX` escapes decoded (invalid escapes kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Looks an account up by name: a missing one is [`AdminError::NotFound`] naming it.
async fn account(store: &dyn Store, username: &str) -> Result<Account, AdminError> {
    validate_username(username)?;
    match store.account_by_name(username).await {
        Ok(account) => Ok(account),
        Err(StorageError::NotFound(_)) => Err(AdminError::no_subscriber(username)),
        Err(e) => Err(e.into()),
    }
}

/// Derives credentials on the blocking pool (argon2 is slow by design).
async fn derive_credentials(
    password: &Secret,
    params: HashParams,
) -> Result<CredentialRecord, AdminError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || credentials::derive(&password, &params))
        .await
        .map_err(|e| AdminError::Internal(format!("password hashing failed: {e}")))?
        .map_err(AdminError::from)
}

/// The password to set, and whether it was generated.
fn resolve_password(source: PasswordSource) -> Result<Option<(Secret, bool)>, AdminError> {
    match source {
        PasswordSource::Given(password) => {
            credentials::check_policy(&password)?;
            Ok(Some((password, false)))
        }
        PasswordSource::Generate => Ok(Some((secret::generate_password(), true))),
        PasswordSource::None => Ok(None),
    }
}

/// Normalises and de-duplicates addresses, keeping their order.
fn normalize_addresses(addresses: &[String]) -> Result<Vec<String>, AdminError> {
    let mut out: Vec<String> = Vec::with_capacity(addresses.len());
    for address in addresses {
        let normalized = normalize_address(address)?;
        if !out.contains(&normalized) {
            out.push(normalized);
        }
    }
    Ok(out)
}

/// Creates a subscriber with its credentials, addresses and default mailboxes, all at
/// once (INTERFACES.md 1). Conflicts: the username or an address already taken.
pub async fn add_subscriber(
    store: &dyn Store,
    config: &Config,
    request: AddRequest,
) -> Result<Added, AdminError> {
    let AddRequest {
        username,
        password,
        addresses,
        quota,
    } = request;
    validate_username(&username)?;
    let addresses = normalize_addresses(&addresses)?;
    let password = resolve_password(password)?;

    // Cheap checks first, so a conflict does not cost an argon2 run; the insert below
    // still decides atomically if two adds race.
    match store.account_by_name(&username).await {
        Ok(_) => return Err(user_exists(&username)),
        Err(StorageError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    for address in &addresses {
        match store.account_by_address(address).await {
            Ok(owner) => {
                return Err(AdminError::Conflict(format!(
                    "address {address} already belongs to subscriber {:?}; \
                     give another address, or remove that subscriber first",
                    owner.username
                )));
            }
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let credentials = match &password {
        Some((password, _)) => {
            Some(derive_credentials(password, HashParams::from_config(&config.auth)).await?)
        }
        None => None,
    };
    let mailboxes = config
        .accounts
        .default_mailboxes
        .iter()
        .map(|m| NewMailbox {
            name: m.name.clone(),
            special_use: m.special_use.clone(),
            subscribed: true,
        })
        .chain([crate::cpm::root_mailbox(config)])
        .collect();
    let account = store
        .create_account(NewAccount {
            username: username.clone(),
            quota,
            credentials,
            addresses,
            mailboxes,
        })
        .await
        .map_err(|e| match e {
            StorageError::AlreadyExists(what) => AdminError::Conflict(format!(
                "already exists: {what}; choose another username or address, or remove the existing subscriber first"
            )),
            e => e.into(),
        })?;
    tracing::info!(username = %account.username, "subscriber added");
    let subscriber = describe(store, &account).await?;
    Ok(Added {
        subscriber,
        password: password.and_then(|(p, generated)| generated.then_some(p)),
    })
}

fn user_exists(username: &str) -> AdminError {
    AdminError::Conflict(format!(
        "subscriber {username:?} already exists; choose another username, \
         or remove the existing subscriber first"
    ))
}

/// Replaces the subscriber's password (given or generated).
pub async fn set_password(
    store: &dyn Store,
    config: &Config,
    username: &str,
    password: PasswordSource,
) -> Result<PasswordChanged, AdminError> {
    let account = account(store, username).await?;
    let Some((password, generated)) = resolve_password(password)? else {
        return Err(AdminError::Invalid(
            "no password given; supply one, or ask for a generated one".into(),
        ));
    };
    let record = derive_credentials(&password, HashParams::from_config(&config.auth)).await?;
    store
        .set_credentials(account.id, record)
        .await
        .map_err(|e| not_found_as_user(e, username))?;
    tracing::info!(username = %account.username, "password changed");
    Ok(PasswordChanged {
        username: account.username,
        has_password: true,
        password: generated.then_some(password),
    })
}

/// Sets (or replaces) the subscriber's PSK under `identity`, sealed at rest.
pub async fn set_psk(
    store: &dyn Store,
    config: &Config,
    username: &str,
    identity: &str,
    key: PskSource,
) -> Result<PskSet, AdminError> {
    psk::validate_identity(identity)?;
    let (key, generated) = match key {
        PskSource::Hex(hex) => (psk::parse_key_hex(hex.expose())?, false),
        PskSource::Generate => (psk::generate_key(), true),
    };
    let account = account(store, username).await?;
    match store.psk_by_identity(identity).await {
        Ok(existing) if existing.account != account.id => {
            return Err(identity_taken(identity));
        }
        Ok(_) | Err(StorageError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let kek = Kek::load_or_create(config)?;
    let sealed = kek.seal(identity, &key)?;
    store
        .set_psk(account.id, identity, sealed)
        .await
        .map_err(|e| match e {
            StorageError::AlreadyExists(_) => identity_taken(identity),
            e => not_found_as_user(e, username),
        })?;
    tracing::info!(username = %account.username, identity, "PSK set");
    Ok(PskSet {
        username: account.username,
        identity: identity.to_owned(),
        psk_key_hex: generated.then(|| key.to_hex()),
    })
}

fn identity_taken(identity: &str) -> AdminError {
    AdminError::Conflict(format!(
        "PSK identity {identity:?} already belongs to another subscriber; choose another identity"
    ))
}

/// A NotFound from a write on an account just looked up means it vanished meanwhile.
fn not_found_as_user(err: StorageError, username: &str) -> AdminError {
    match err {
        StorageError::NotFound(_) => AdminError::no_subscriber(username),
        e => e.into(),
    }
}

/// Disables the subscriber: no login, no push delivery. Sessions learn of it through
/// the store's change bus.
pub async fn disable(store: &dyn Store, username: &str) -> Result<SubscriberInfo, AdminError> {
    set_status(store, username, AccountStatus::Disabled).await
}

/// Enables a disabled subscriber.
pub async fn enable(store: &dyn Store, username: &str) -> Result<SubscriberInfo, AdminError> {
    set_status(store, username, AccountStatus::Active).await
}

async fn set_status(
    store: &dyn Store,
    username: &str,
    status: AccountStatus,
) -> Result<SubscriberInfo, AdminError> {
    let mut account = account(store, username).await?;
    store
        .set_account_status(account.id, status)
        .await
        .map_err(|e| not_found_as_user(e, username))?;
    tracing::info!(username = %account.username, ?status, "subscriber status changed");
    account.status = status;
    describe(store, &account).await
}

/// Removes the subscriber and all its mail.
pub async fn remove(store: &dyn Store, username: &str) -> Result<Removed, AdminError> {
    let account = account(store, username).await?;
    store
        .remove_account(account.id)
        .await
        .map_err(|e| not_found_as_user(e, username))?;
    tracing::info!(username = %account.username, "subscriber removed");
    Ok(Removed {
        username: account.username,
        removed: true,
    })
}

/// Everything about one subscriber (no secrets).
pub async fn show(store: &dyn Store, username: &str) -> Result<SubscriberInfo, AdminError> {
    let account = account(store, username).await?;
    describe(store, &account).await
}

/// Every subscriber, by username.
pub async fn list(store: &dyn Store) -> Result<Vec<SubscriberSummary>, AdminError> {
    let mut accounts = store.list_accounts().await?;
    accounts.sort_by(|a, b| a.username.cmp(&b.username));
    Ok(accounts
        .into_iter()
        .map(|a| SubscriberSummary {
            username: a.username,
            status: a.status,
            quota: a.quota,
        })
        .collect())
}

async fn describe(store: &dyn Store, account: &Account) -> Result<SubscriberInfo, AdminError> {
    let id = account.id;
    let gone = |e| not_found_as_user(e, &account.username);
    let addresses = store.addresses(id).await.map_err(gone)?;
    let has_password = store.credentials(id).await.map_err(gone)?.is_some();
    let psk_identities = store
        .psks_of(id)
        .await
        .map_err(gone)?
        .into_iter()
        .map(|p| p.identity)
        .collect();
    let mailboxes = store
        .list_mailboxes(id)
        .await
        .map_err(gone)?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let usage_bytes = store.quota_usage(id).await.map_err(gone)?;
    Ok(SubscriberInfo {
        username: account.username.clone(),
        status: account.status,
        quota: account.quota,
        addresses,
        has_password,
        psk_identities,
        mailboxes,
        usage_bytes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_serialize_once_and_given_ones_not_at_all() {
        let info = SubscriberInfo {
            username: "alice".into(),
            status: AccountStatus::Active,
            quota: None,
            addresses: vec!["tel:+358401234567".into()],
            has_password: true,
            psk_identities: vec![],
            mailboxes: vec!["INBOX".into()],
            usage_bytes: 0,
        };
        let added = Added {
            subscriber: info.clone(),
            password: Some(Secret::from("Generated-123")),
        };
        let json = serde_json::to_string(&added).unwrap();
        assert_eq!(json.matches("Generated-123").count(), 1, "{json}");
        assert!(json.contains("\"password\":\"Generated-123\""));
        assert!(json.contains("\"status\":\"active\""));
        assert!(json.contains("\"quota\":null"));
        assert!(!format!("{added:?}").contains("Generated-123"));

        let added = Added {
            subscriber: info,
            password: None,
        };
        assert!(
            !serde_json::to_string(&added)
                .unwrap()
                .contains("\"password\"")
        );

        let psk = PskSet {
            username: "alice".into(),
            identity: "id".into(),
            psk_key_hex: Some(Secret::from("00ff")),
        };
        assert!(
            serde_json::to_string(&psk)
                .unwrap()
                .contains("\"psk_key_hex\":\"00ff\"")
        );
    }

    #[test]
    fn scrub_removes_url_and_password() {
        let mut config = Config::default();
        config.storage.url = "postgres://cpm:p%40ss@db.example.net/x".into();
        let scrubbed = scrub(
            &config,
            "failed postgres://cpm:p%40ss@db.example.net/x with p@ss and p%40ss",
        );
        assert!(
            !scrubbed.contains("p%40ss") && !scrubbed.contains("p@ss"),
            "{scrubbed}"
        );
        assert!(
            scrubbed.contains("postgres://cpm@db.example.net/x"),
            "{scrubbed}"
        );
    }
}
