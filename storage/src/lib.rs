//! cpmstore's storage: the model and its persistence.
//!
//! # Layout
//! - `lib.rs` (this file): the [`Store`] trait, the model types and [`Error`].
//! - `sql.rs`: the one SQL implementation of [`Store`], over `sqlx::Any`, shared by both backends.
//! - `sqlite.rs` / `postgres.rs`: what differs per backend (connecting, pragmas, migrations,
//!   and for PostgreSQL the LISTEN/NOTIFY leg of the change bus).
//! - `changes.rs`: the change bus.
//!
//! Storage knows nothing of IMAP wire syntax. Every write a client could see bumps the
//! mailbox's MODSEQ inside its transaction and is published on the change bus only after
//! the commit.

use std::sync::Arc;

use futures::stream::BoxStream;

pub mod changes;

pub use changes::{Change, ChangeBus, ChangeKind};

/// Errors of the storage layer. The IMAP layer maps them to responses in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("over quota")]
    OverQuota,
    #[error("storage unreachable: {0}")]
    Unreachable(String),
    #[error("database error: {0}")]
    Database(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Database id of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AccountId(pub i64);

/// Database id of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct MailboxId(pub i64);

/// Whether an account may log in and receive pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub username: String,
    pub status: AccountStatus,
    /// Storage quota in bytes; `None` is unlimited.
    pub quota: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
}

/// What `subscriber add` stores, all in one transaction.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: String,
    pub quota: Option<u64>,
    pub credentials: Option<CredentialRecord>,
    /// Normalised address URIs (`tel:+358...`, `sip:alice@...`).
    pub addresses: Vec<String>,
    /// Created together with the account; INBOX is always created even if absent here.
    pub mailboxes: Vec<NewMailbox>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMailbox {
    pub name: String,
    /// RFC 6154 attribute without the backslash, e.g. "Sent".
    pub special_use: Option<String>,
    pub subscribed: bool,
}

/// A password's verifiers: argon2id for LOGIN/PLAIN, SCRAM-SHA-256 secrets for SCRAM.
/// Never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    /// argon2id PHC string.
    pub argon2_phc: String,
    pub scram_salt: Vec<u8>,
    pub scram_iterations: u32,
    pub scram_stored_key: Vec<u8>,
    pub scram_server_key: Vec<u8>,
}

impl std::fmt::Debug for CredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialRecord(<redacted>)")
    }
}

/// A PSK identity with its key encrypted at rest (the server's `auth` layer seals and
/// opens it; storage only keeps the sealed bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct PskRecord {
    pub identity: String,
    pub account: AccountId,
    /// AEAD nonce || ciphertext+tag.
    pub sealed_key: Vec<u8>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

impl std::fmt::Debug for PskRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskRecord")
            .field("identity", &self.identity)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub id: MailboxId,
    pub account: AccountId,
    /// Full hierarchical name with `/` as separator; INBOX is always "INBOX".
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    pub special_use: Option<String>,
    pub subscribed: bool,
}

/// Counters for STATUS / SELECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxCounts {
    pub messages: u32,
    pub unseen: u32,
    /// Bytes used by the mailbox's messages.
    pub size: u64,
}

/// System flags as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SystemFlags(pub u8);

impl SystemFlags {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;

    pub fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// A message's flags: system flags plus keywords (atoms, case preserved, compared
/// case-insensitively, kept sorted and unique).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    pub system: SystemFlags,
    pub keywords: Vec<String>,
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

/// An inclusive UID range; `u32::MAX` as `end` means "to the last".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub start: u32,
    pub end: u32,
}

impl UidRange {
    pub fn all() -> Self {
        UidRange { start: 1, end: u32::MAX }
    }
    pub fn one(uid: u32) -> Self {
        UidRange { start: uid, end: uid }
    }
}

/// A message's row without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub modseq: u64,
    pub flags: Flags,
    /// Unix seconds.
    pub internal_date: i64,
    /// Offset from UTC of the internal date, in minutes.
    pub internal_date_tz: i32,
    pub size: u64,
    /// SHA-256 of the content, hex; the key of the blob.
    pub blob: String,
}

/// What APPEND (and push delivery) stores.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub content: Vec<u8>,
    pub flags: Flags,
    /// Unix seconds; `None` is now.
    pub internal_date: Option<i64>,
    pub internal_date_tz: i32,
}

/// The outcome of an APPEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub mailbox: MailboxId,
    pub uidvalidity: u32,
    pub uid: u32,
    pub modseq: u64,
}

/// The outcome of a COPY or MOVE: source UIDs and the UIDs they got, pairwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub uidvalidity: u32,
    pub source_uids: Vec<u32>,
    pub dest_uids: Vec<u32>,
}

/// What changed in a mailbox since a MODSEQ: how a selected session catches up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailboxChanges {
    pub highestmodseq: u64,
    pub uidnext: u32,
    /// Messages whose modseq is greater than the one asked for (new or with changed flags).
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged after the modseq asked for, ascending.
    pub expunged: Vec<u32>,
}

/// A whitelist entry as provisioned (see INTERFACES.md 6.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WhitelistEntry {
    /// "ip", "e164", "uri" or "fqdn".
    pub kind: String,
    pub value: String,
    /// For "fqdn": the addresses it resolved to at load.
    pub resolved: Vec<String>,
    /// "ppg" or "smsc".
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whitelist {
    /// "" for the default context, else the PROVURL.
    pub context: String,
    pub entries: Vec<WhitelistEntry>,
    pub loaded_at: i64,
}

/// The storage of cpmstore. One implementation over SQL serves both backends; the
/// backend is chosen once, from the URL scheme, by [`open`].
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // --- accounts -------------------------------------------------------------------
    /// Creates the account with its credentials, addresses and mailboxes atomically.
    async fn create_account(&self, new: NewAccount) -> Result<Account>;
    async fn account_by_name(&self, username: &str) -> Result<Account>;
    async fn account_by_id(&self, id: AccountId) -> Result<Account>;
    /// The account that owns a normalised address URI.
    async fn account_by_address(&self, address: &str) -> Result<Account>;
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    async fn set_account_status(&self, id: AccountId, status: AccountStatus) -> Result<()>;
    async fn set_quota(&self, id: AccountId, quota: Option<u64>) -> Result<()>;
    /// Deletes the account and every row that belongs to it, in one transaction.
    async fn remove_account(&self, id: AccountId) -> Result<()>;

    // --- credentials ----------------------------------------------------------------
    async fn set_credentials(&self, id: AccountId, cred: CredentialRecord) -> Result<()>;
    /// `Ok(None)` when the account has no password set.
    async fn credentials(&self, id: AccountId) -> Result<Option<CredentialRecord>>;
    /// Sets (or replaces) the account's PSK; an identity belongs to one account only.
    async fn set_psk(&self, id: AccountId, identity: &str, sealed_key: Vec<u8>) -> Result<()>;
    async fn remove_psk(&self, id: AccountId) -> Result<()>;
    async fn psk_by_identity(&self, identity: &str) -> Result<PskRecord>;
    async fn psks_of(&self, id: AccountId) -> Result<Vec<PskRecord>>;
    /// Every PSK of every active account, for the PSK cache.
    async fn all_psks(&self) -> Result<Vec<PskRecord>>;

    // --- addresses ------------------------------------------------------------------
    async fn add_address(&self, id: AccountId, address: &str) -> Result<()>;
    async fn remove_address(&self, id: AccountId, address: &str) -> Result<()>;
    async fn addresses(&self, id: AccountId) -> Result<Vec<String>>;

    // --- mailboxes ------------------------------------------------------------------
    async fn create_mailbox(&self, id: AccountId, mailbox: NewMailbox) -> Result<Mailbox>;
    /// RFC 3501 RENAME: children move with the parent; renaming INBOX moves its
    /// messages into a new mailbox and leaves INBOX empty.
    async fn rename_mailbox(&self, id: AccountId, from: &str, to: &str) -> Result<()>;
    /// Deletes the mailbox and its messages (not its children).
    async fn delete_mailbox(&self, id: AccountId, name: &str) -> Result<()>;
    async fn mailbox(&self, id: AccountId, name: &str) -> Result<Mailbox>;
    async fn mailbox_by_id(&self, account: AccountId, mailbox: MailboxId) -> Result<Mailbox>;
    async fn list_mailboxes(&self, id: AccountId) -> Result<Vec<Mailbox>>;
    async fn set_subscribed(&self, id: AccountId, name: &str, subscribed: bool) -> Result<()>;
    /// Names subscribed to, including ones that no longer exist as mailboxes.
    async fn subscriptions(&self, id: AccountId) -> Result<Vec<String>>;
    async fn mailbox_counts(&self, account: AccountId, mailbox: MailboxId) -> Result<MailboxCounts>;
    /// Keywords ever used in the mailbox (for FLAGS / PERMANENTFLAGS).
    async fn mailbox_keywords(&self, account: AccountId, mailbox: MailboxId) -> Result<Vec<String>>;
    /// Claims \Recent: returns the first UID that is recent for the caller and moves the
    /// mailbox's recent mark to UIDNEXT, so only one session sees a message as recent.
    async fn claim_recent(&self, account: AccountId, mailbox: MailboxId) -> Result<u32>;

    // --- messages -------------------------------------------------------------------
    /// Stores a message; UID and MODSEQ are allocated in the insert's transaction.
    async fn append(&self, account: AccountId, mailbox: MailboxId, msg: NewMessage) -> Result<Appended>;
    /// Message rows in UID order within the ranges, streamed.
    fn fetch<'a>(
        &'a self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &'a [UidRange],
    ) -> BoxStream<'a, Result<MessageMeta>>;
    /// The content of a blob.
    async fn blob(&self, account: AccountId, hash: &str) -> Result<Vec<u8>>;
    /// Changes flags; returns the messages changed, with their new flags and modseq.
    /// `unchanged_since` (CONDSTORE) skips messages whose modseq is greater.
    async fn store_flags(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[UidRange],
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<Vec<MessageMeta>>;
    /// Copies messages; blobs are shared, not duplicated.
    async fn copy(&self, account: AccountId, from: MailboxId, uids: &[UidRange], to: MailboxId) -> Result<Copied>;
    /// Moves messages (copy + expunge in one transaction).
    async fn move_messages(&self, account: AccountId, from: MailboxId, uids: &[UidRange], to: MailboxId) -> Result<Copied>;
    /// Expunges messages flagged \Deleted (within `uids` if given); returns their UIDs.
    async fn expunge(&self, account: AccountId, mailbox: MailboxId, uids: Option<&[UidRange]>) -> Result<Vec<u32>>;
    /// What changed after `since_modseq`.
    async fn changes_since(&self, account: AccountId, mailbox: MailboxId, since_modseq: u64) -> Result<MailboxChanges>;
    /// Bytes used by all the account's messages (each message counted, shared blobs too).
    async fn quota_usage(&self, account: AccountId) -> Result<u64>;

    // --- metadata (RFC 5464) ----------------------------------------------------------
    async fn set_metadata(&self, account: AccountId, mailbox: Option<MailboxId>, entry: &str, value: Option<&[u8]>) -> Result<()>;
    async fn metadata(&self, account: AccountId, mailbox: Option<MailboxId>, entry: &str) -> Result<Option<Vec<u8>>>;

    // --- whitelists -----------------------------------------------------------------
    /// Replaces the whitelist of (account, context) atomically.
    async fn set_whitelist(&self, account: AccountId, context: &str, entries: &[WhitelistEntry]) -> Result<()>;
    /// `Ok(None)` when no whitelist is provisioned for the context.
    async fn whitelist(&self, account: AccountId, context: &str) -> Result<Option<Whitelist>>;
    async fn whitelists(&self, account: AccountId) -> Result<Vec<Whitelist>>;
    /// Removes one context's whitelist, or all of them with `None`.
    async fn clear_whitelist(&self, account: AccountId, context: Option<&str>) -> Result<()>;

    // --- changes and health ---------------------------------------------------------
    /// The change bus: every committed change, from this node and (PostgreSQL) others.
    fn changes(&self) -> &ChangeBus;
    /// Storage reachable (for /readyz).
    async fn ping(&self) -> Result<()>;
    /// Closes the pools.
    async fn close(&self);
}

/// Pool and busy-timeout settings.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub max_connections: u32,
    pub busy_timeout: std::time::Duration,
    /// Apply migrations when opening.
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            max_connections: 16,
            busy_timeout: std::time::Duration::from_secs(10),
            migrate: true,
        }
    }
}

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://...`).
pub async fn open(url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    // Implemented in sql.rs once the backends land.
    let _ = (url, options);
    Err(Error::Unreachable("no backend compiled".into()))
}
