//! cpmstore's storage: the model and its persistence.
//!
//! # Layout
//! - `lib.rs` (this file): the [`Store`] trait, the model types and [`Error`].
//! - `sql/`: the one SQL implementation of [`Store`], over `sqlx::Any`, shared by both
//!   backends: `mod.rs` (the store, its transactions and retries), one module per domain
//!   (`accounts`, `mailboxes`, `messages`, `metadata`, `whitelists`), `rows` (rows into model
//!   types, shared values and statements) and `store` (the trait implementation).
//! - `sqlite.rs` / `postgres.rs`: what differs per backend (connecting, pragmas, migrations,
//!   and for PostgreSQL the LISTEN/NOTIFY leg of the change bus).
//! - `changes.rs`: the change bus.
//! - `cpm.rs`: the CPM headers the store indexes, read from a message's header block.
//!
//! Storage knows nothing of IMAP wire syntax. Every write a client could see bumps the
//! mailbox's MODSEQ inside its transaction and is published on the change bus only after
//! the commit.

use std::sync::Arc;

use futures::stream::BoxStream;

pub mod changes;
pub mod cpm;
mod postgres;
mod sql;
mod sqlite;

pub use changes::{Change, ChangeBus, ChangeKind};

/// Errors of the storage layer. The IMAP layer maps them to responses in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The account, mailbox, message, blob, address, PSK or entry does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A username, address, PSK identity or mailbox name is already taken.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The request itself is wrong (bad name, deleting INBOX, ...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The write would take the account over its quota.
    #[error("over quota")]
    OverQuota,
    /// The database cannot be reached; the message names it (never its password).
    #[error("storage unreachable: {0}")]
    Unreachable(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
}

/// The result of a storage operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Database id of an account.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AccountId(pub i64);

/// Database id of a mailbox.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct MailboxId(pub i64);

/// Whether an account may log in and receive pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    /// May log in and receive pushes.
    Active,
    /// Kept, but may neither log in nor receive pushes.
    Disabled,
}

/// A subscriber's account.
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

/// A mailbox to create.
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

/// A mailbox as stored.
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
    /// Messages no session has claimed as \Recent yet (see [`Store::claim_recent`]).
    pub recent: u32,
    /// Bytes used by the mailbox's messages.
    pub size: u64,
}

/// System flags as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SystemFlags(pub u8);

impl SystemFlags {
    /// `\Seen`
    pub const SEEN: u8 = 1;
    /// `\Answered`
    pub const ANSWERED: u8 = 2;
    /// `\Flagged`
    pub const FLAGGED: u8 = 4;
    /// `\Deleted`
    pub const DELETED: u8 = 8;
    /// `\Draft`
    pub const DRAFT: u8 = 16;

    /// Whether the flag `bit` (one of the constants) is set.
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
    /// `FLAGS`: the message gets exactly the given flags.
    Replace,
    /// `+FLAGS`
    Add,
    /// `-FLAGS`
    Remove,
}

/// An inclusive UID range; `u32::MAX` as `end` means "to the last".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub start: u32,
    pub end: u32,
}

impl UidRange {
    /// `1:*`
    pub fn all() -> Self {
        UidRange {
            start: 1,
            end: u32::MAX,
        }
    }
    /// One UID.
    pub fn one(uid: u32) -> Self {
        UidRange {
            start: uid,
            end: uid,
        }
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

/// The outcome of a conditional STORE (see [`Store::store_flags_conditional`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConditionalStore {
    /// The messages changed, with their new flags and modseq, in UID order.
    pub changed: Vec<MessageMeta>,
    /// The messages left alone because their modseq was above the limit, ascending.
    pub modified: Vec<u32>,
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

/// What a whitelist entry names. Stored, serialised and shown as its lowercase name
/// (`ip`, `e164`, `uri`, `fqdn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhitelistKind {
    /// An IPv4 or IPv6 address of a push proxy gateway.
    Ip,
    /// An E.164 number (PPG or SMSC).
    E164,
    /// A sip, sips or tel URI.
    Uri,
    /// A host name, resolved to addresses.
    Fqdn,
}

impl WhitelistKind {
    /// Every kind.
    pub const ALL: [WhitelistKind; 4] = [
        WhitelistKind::Ip,
        WhitelistKind::E164,
        WhitelistKind::Uri,
        WhitelistKind::Fqdn,
    ];

    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            WhitelistKind::Ip => "ip",
            WhitelistKind::E164 => "e164",
            WhitelistKind::Uri => "uri",
            WhitelistKind::Fqdn => "fqdn",
        }
    }
}

impl std::fmt::Display for WhitelistKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WhitelistKind {
    type Err = Error;

    /// The kind a stored name stands for; any other name is [`Error::Invalid`].
    fn from_str(name: &str) -> Result<Self> {
        WhitelistKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| Error::Invalid(format!("unknown whitelist entry kind {name:?}")))
    }
}

/// A whitelist entry as provisioned (see INTERFACES.md 6.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WhitelistEntry {
    pub kind: WhitelistKind,
    pub value: String,
    /// For [`WhitelistKind::Fqdn`]: the addresses it resolved to at load.
    pub resolved: Vec<String>,
    /// "ppg" or "smsc".
    pub role: String,
}

/// The whitelist of one (account, context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whitelist {
    /// "" for the default context, else the PROVURL.
    pub context: String,
    pub entries: Vec<WhitelistEntry>,
    pub loaded_at: i64,
}

/// How far below an entry [`Store::metadata_below`] reads (RFC 5464 `DEPTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataDepth {
    /// The entry alone (`DEPTH 0`).
    Entry,
    /// The entry and those one level below it (`DEPTH 1`).
    Children,
    /// The entry and everything below it (`DEPTH infinity`).
    All,
}

/// The outcome of [`Store::set_metadata_entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataWrite {
    /// Every entry was set or removed.
    Written,
    /// Nothing was written: the mailbox (or server) would hold more entries than allowed.
    TooMany,
}

/// The storage of cpmstore. One implementation over SQL serves both backends; the
/// backend is chosen once, from the URL scheme, by [`open`].
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // --- accounts -------------------------------------------------------------------
    /// Creates the account with its credentials, addresses and mailboxes atomically.
    /// INBOX is always created (and subscribed unless `new.mailboxes` says otherwise);
    /// each mailbox gets its own UIDVALIDITY. A taken username or address gives
    /// [`Error::AlreadyExists`] and leaves nothing behind.
    async fn create_account(&self, new: NewAccount) -> Result<Account>;
    /// The account with this exact username; [`Error::NotFound`] if none.
    async fn account_by_name(&self, username: &str) -> Result<Account>;
    /// The account with this id; [`Error::NotFound`] if none.
    async fn account_by_id(&self, id: AccountId) -> Result<Account>;
    /// The account that owns a normalised address URI.
    async fn account_by_address(&self, address: &str) -> Result<Account>;
    /// Every account, by id.
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    /// Enables or disables the account (publishes an `Account` change).
    async fn set_account_status(&self, id: AccountId, status: AccountStatus) -> Result<()>;
    /// Sets the quota in bytes, `None` for unlimited. Lowering it below the usage refuses
    /// further appends and copies, and removes nothing.
    async fn set_quota(&self, id: AccountId, quota: Option<u64>) -> Result<()>;
    /// Deletes the account and every row that belongs to it, in one transaction.
    async fn remove_account(&self, id: AccountId) -> Result<()>;

    // --- credentials ----------------------------------------------------------------
    /// Sets or replaces the account's password verifiers.
    async fn set_credentials(&self, id: AccountId, cred: CredentialRecord) -> Result<()>;
    /// `Ok(None)` when the account has no password set.
    async fn credentials(&self, id: AccountId) -> Result<Option<CredentialRecord>>;
    /// Sets (or replaces) the account's PSK; an identity belongs to one account only.
    /// An account has at most one PSK: setting one replaces any other, identity
    /// included. An identity held by another account gives [`Error::AlreadyExists`].
    async fn set_psk(&self, id: AccountId, identity: &str, sealed_key: Vec<u8>) -> Result<()>;
    /// Removes the account's PSK; [`Error::NotFound`] if it has none.
    async fn remove_psk(&self, id: AccountId) -> Result<()>;
    /// The PSK with this identity, whatever the account's status.
    async fn psk_by_identity(&self, identity: &str) -> Result<PskRecord>;
    /// The account's PSKs (zero or one).
    async fn psks_of(&self, id: AccountId) -> Result<Vec<PskRecord>>;
    /// Every PSK of every active account, for the PSK cache.
    async fn all_psks(&self) -> Result<Vec<PskRecord>>;

    // --- addresses ------------------------------------------------------------------
    /// Gives the account a normalised address URI; [`Error::AlreadyExists`] if any
    /// account (this one included) has it.
    async fn add_address(&self, id: AccountId, address: &str) -> Result<()>;
    /// Takes the address from the account; [`Error::NotFound`] if it is not the account's.
    async fn remove_address(&self, id: AccountId, address: &str) -> Result<()>;
    /// The account's addresses, sorted.
    async fn addresses(&self, id: AccountId) -> Result<Vec<String>>;

    // --- mailboxes ------------------------------------------------------------------
    /// Creates a mailbox with a fresh UIDVALIDITY (never one a deleted mailbox of the
    /// account had). One trailing `/` is dropped; empty levels or control characters give
    /// [`Error::Invalid`]; an existing name (INBOX in any case) [`Error::AlreadyExists`].
    /// Superior levels are not created.
    async fn create_mailbox(&self, id: AccountId, mailbox: NewMailbox) -> Result<Mailbox>;
    /// RFC 3501 RENAME: children move with the parent; renaming INBOX moves its
    /// messages into a new mailbox and leaves INBOX empty.
    ///
    /// A renamed mailbox keeps its id, UIDVALIDITY and UIDs, and its subscription moves
    /// with it. Renaming INBOX creates the new mailbox (new UIDVALIDITY; the messages
    /// keep their UIDs), leaves INBOX's inferiors alone and records the messages as
    /// expunged from INBOX. A taken target name (including a child's) gives
    /// [`Error::AlreadyExists`]; a target under the source itself [`Error::Invalid`].
    async fn rename_mailbox(&self, id: AccountId, from: &str, to: &str) -> Result<()>;
    /// Deletes the mailbox and its messages (not its children).
    /// Blobs no other message refers to go too; the subscription stays (RFC 3501).
    /// INBOX gives [`Error::Invalid`].
    async fn delete_mailbox(&self, id: AccountId, name: &str) -> Result<()>;
    /// The mailbox by name (INBOX in any case).
    async fn mailbox(&self, id: AccountId, name: &str) -> Result<Mailbox>;
    /// The mailbox by id; [`Error::NotFound`] also if it is another account's.
    async fn mailbox_by_id(&self, account: AccountId, mailbox: MailboxId) -> Result<Mailbox>;
    /// Every mailbox of the account, sorted by name (byte order).
    async fn list_mailboxes(&self, id: AccountId) -> Result<Vec<Mailbox>>;
    /// Subscribes or unsubscribes a name, which need not be an existing mailbox;
    /// doing it twice is not an error.
    async fn set_subscribed(&self, id: AccountId, name: &str, subscribed: bool) -> Result<()>;
    /// Names subscribed to, including ones that no longer exist as mailboxes.
    async fn subscriptions(&self, id: AccountId) -> Result<Vec<String>>;
    /// Messages, unseen messages, unclaimed \Recent messages and bytes in the mailbox.
    async fn mailbox_counts(&self, account: AccountId, mailbox: MailboxId)
    -> Result<MailboxCounts>;
    /// Keywords ever used in the mailbox (for FLAGS / PERMANENTFLAGS).
    async fn mailbox_keywords(&self, account: AccountId, mailbox: MailboxId)
    -> Result<Vec<String>>;
    /// Claims \Recent: returns the UIDs `start..end` that are recent for the caller (the
    /// messages no session had claimed, up to UIDNEXT) and moves the mailbox's recent
    /// mark to `end`, so only one session sees a message as recent.
    async fn claim_recent(
        &self,
        account: AccountId,
        mailbox: MailboxId,
    ) -> Result<std::ops::Range<u32>>;
    /// The first UID no session has claimed as \Recent yet, without claiming anything
    /// (what a read-only session shows as recent).
    async fn unclaimed_recent(&self, account: AccountId, mailbox: MailboxId) -> Result<u32>;

    // --- messages -------------------------------------------------------------------
    /// Stores a message; UID and MODSEQ are allocated in the insert's transaction.
    /// [`Error::OverQuota`] if the account has a quota the message would exceed (nothing
    /// is then allocated); [`Error::Invalid`] for a keyword that is not an atom.
    async fn append(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        msg: NewMessage,
    ) -> Result<Appended>;
    /// Message rows in UID order within the ranges, streamed.
    /// Ranges may come in any order, reversed or overlapping; each message comes once.
    /// The first item is [`Error::NotFound`] if the mailbox does not exist. Bodies are not
    /// loaded: see [`Store::blob`].
    fn fetch<'a>(
        &'a self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &'a [UidRange],
    ) -> BoxStream<'a, Result<MessageMeta>>;
    /// The content of a blob.
    async fn blob(&self, account: AccountId, hash: &str) -> Result<Vec<u8>>;
    /// The contents of several blobs in one round trip, as `(hash, content)` in no
    /// particular order; a hash with no blob is left out. The caller bounds how many
    /// bytes it asks for at once (the messages' sizes are in their rows).
    async fn blobs(&self, account: AccountId, hashes: &[&str]) -> Result<Vec<(String, Vec<u8>)>>;
    /// Changes flags; returns the messages changed, with their new flags and modseq.
    /// `unchanged_since` (CONDSTORE) skips messages whose modseq is greater.
    ///
    /// Only messages whose flags actually change are written and returned (in UID order);
    /// they share one new MODSEQ. If none changes, HIGHESTMODSEQ stays as it was and
    /// nothing is published. Keywords compare case-insensitively.
    async fn store_flags(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[UidRange],
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<Vec<MessageMeta>>;
    /// CONDSTORE's STORE ... (UNCHANGEDSINCE n) (RFC 7162 3.1.3): [`Store::store_flags`]
    /// with `unchanged_since`, and also the UIDs within `uids` whose modseq was above
    /// it. The test and the change are one transaction (under the mailbox's row lock),
    /// so no concurrent writer can slip between them.
    async fn store_flags_conditional(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[UidRange],
        op: FlagOp,
        flags: &Flags,
        unchanged_since: u64,
    ) -> Result<ConditionalStore>;
    /// Copies messages; blobs are shared, not duplicated.
    /// The copies get new UIDs in the destination, in source UID order, with the same
    /// flags and internal date. Counts against the quota ([`Error::OverQuota`]). Nothing
    /// in the ranges: an empty [`Copied`] and no change.
    async fn copy(
        &self,
        account: AccountId,
        from: MailboxId,
        uids: &[UidRange],
        to: MailboxId,
    ) -> Result<Copied>;
    /// Moves messages (copy + expunge in one transaction).
    /// The sources are recorded as expunged (see [`Store::changes_since`]); the quota is
    /// not checked, as usage does not change.
    async fn move_messages(
        &self,
        account: AccountId,
        from: MailboxId,
        uids: &[UidRange],
        to: MailboxId,
    ) -> Result<Copied>;
    /// Expunges messages flagged \Deleted (within `uids` if given); returns their UIDs.
    /// The UIDs come ascending; each is recorded as expunged with the new MODSEQ. The
    /// tombstone keeps the message's row and blob (see [`Store::fetch_expunged`]) until
    /// [`Store::purge_expunged`] forgets them.
    async fn expunge(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: Option<&[UidRange]>,
    ) -> Result<Vec<u32>>;
    /// What changed after `since_modseq`.
    /// Consistent with the `highestmodseq` it reports: changes committed after it was
    /// read are left for the next call.
    async fn changes_since(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since_modseq: u64,
    ) -> Result<MailboxChanges>;
    /// UIDs expunged from the mailbox after `since_modseq` (by EXPUNGE, UID EXPUNGE,
    /// CLOSE, MOVE or the move of INBOX's messages on rename), ascending, limited to
    /// `uids` when given: what QRESYNC calls `VANISHED (EARLIER)`.
    ///
    /// Tombstones are kept for the mailbox's life (never pruned), so the answer is
    /// exact for any `since_modseq`; they go with the mailbox or the account.
    async fn expunged_since(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since_modseq: u64,
        uids: Option<&[UidRange]>,
    ) -> Result<Vec<u32>>;
    /// The messages of `uids` expunged from the mailbox (by EXPUNGE, MOVE or the rename
    /// of INBOX) whose data is still kept, in UID order: each row as it was when
    /// expunged, except that `modseq` is the expunge's. Their blobs stay readable with
    /// [`Store::blob`] until [`Store::purge_expunged`]. This is how a session reads a
    /// message another session expunged before it could tell its client (RFC 3501 5.5:
    /// no EXPUNGE during FETCH, STORE or SEARCH). An unknown mailbox has none.
    async fn fetch_expunged(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[UidRange],
    ) -> Result<Vec<MessageMeta>>;
    /// Forgets the data of messages expunged at or before `before` (unix seconds), in
    /// every account: their tombstones stay (for [`Store::changes_since`] and
    /// [`Store::expunged_since`]), their blobs go unless a message or another kept
    /// tombstone refers to them. Returns how many messages' data was forgotten.
    async fn purge_expunged(&self, before: i64) -> Result<u64>;
    /// Bytes used by all the account's messages (each message counted, shared blobs too;
    /// expunged messages whose data is still kept are not counted).
    async fn quota_usage(&self, account: AccountId) -> Result<u64>;

    // --- CPM header index (INTERFACES.md 9.4) ----------------------------------------
    /// UIDs of the mailbox's messages whose top-level header `name` (one of
    /// [`cpm::INDEXED_HEADERS`], any case) equals `value` ignoring ASCII case, ascending;
    /// answered from the index, without reading bodies. A name that is not indexed gives
    /// [`Error::Invalid`] (the caller scans instead); an unknown mailbox
    /// [`Error::NotFound`].
    async fn uids_by_header(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        name: &str,
        value: &str,
    ) -> Result<Vec<u32>>;
    /// UIDs of the mailbox's messages with an indexed value of header `name` (one of
    /// [`cpm::INDEXED_HEADERS`], any case) that contains `needle`, both compared in
    /// ASCII lower case, ascending: IMAP `SEARCH HEADER`'s substring match, answered from
    /// the index (values equal to the needle by one index, longer ones of this mailbox
    /// and header by another). The values are those of [`cpm::indexed_headers`]; an
    /// empty needle finds every message with one. A name that is not indexed gives
    /// [`Error::Invalid`]; an unknown mailbox [`Error::NotFound`].
    async fn uids_by_header_containing(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        name: &str,
        needle: &str,
    ) -> Result<Vec<u32>>;
    /// Indexes the CPM headers of up to `batch` messages stored before the index
    /// existed (migrations 0003, 0005); returns how many it looked at, 0 once none is
    /// left. Safe to run on several nodes at once.
    async fn backfill_cpm_headers(&self, batch: u32) -> Result<u64>;
    /// Every message of the account, in any mailbox, whose `IMDN-Message-ID` equals
    /// `imdn_id` ignoring ASCII case: (mailbox, UID), sorted.
    async fn objects_by_imdn(
        &self,
        account: AccountId,
        imdn_id: &str,
    ) -> Result<Vec<(MailboxId, u32)>>;
    /// The accounts that have no mailbox named exactly `name`, by id (to give existing
    /// accounts a mailbox every new one gets).
    async fn accounts_without_mailbox(&self, name: &str) -> Result<Vec<AccountId>>;

    // --- metadata (RFC 5464) ----------------------------------------------------------
    /// Sets an entry (`None` removes it) of the mailbox, or of the server (account-wide)
    /// with `mailbox: None`. Entry names compare case-insensitively. A mailbox entry
    /// bumps the mailbox's HIGHESTMODSEQ.
    async fn set_metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        value: Option<&[u8]>,
    ) -> Result<()>;
    /// The value of an entry, `Ok(None)` if it is not set.
    async fn metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
    ) -> Result<Option<Vec<u8>>>;
    /// RFC 5464 SETMETADATA: sets (`Some`) or removes (`None`) several entries of the
    /// mailbox, or of the server with `mailbox: None`, all or none, in one transaction.
    ///
    /// Entry names are stored in ASCII lower case (they compare case-insensitively); an
    /// empty name gives [`Error::Invalid`] (the IMAP layer checks RFC 5464's syntax).
    /// If the writes would leave more than `max_entries` entries where there were fewer
    /// (or would add to a count already at or over it), nothing is written and the
    /// answer is [`MetadataWrite::TooMany`]. When anything changed, a mailbox's
    /// HIGHESTMODSEQ goes up by one (CONDSTORE clients see the folder changed) and one
    /// [`ChangeKind::Metadata`] change is published; removing entries that are not
    /// there changes nothing. An unknown (or another account's) mailbox gives
    /// [`Error::NotFound`]. Entries go with their mailbox (DELETE) or account, and stay
    /// with a renamed mailbox (they are keyed by its id).
    async fn set_metadata_entries(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entries: &[(String, Option<Vec<u8>>)],
        max_entries: usize,
    ) -> Result<MetadataWrite>;
    /// RFC 5464 GETMETADATA with DEPTH: the entry `entry` (any case) if set, and the
    /// entries below it (`entry/...`) as far as `depth` says, as (lower-case name,
    /// value), sorted by name (byte order). An unknown mailbox gives
    /// [`Error::NotFound`].
    async fn metadata_below(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        depth: MetadataDepth,
    ) -> Result<Vec<(String, Vec<u8>)>>;

    // --- whitelists -----------------------------------------------------------------
    /// Replaces the whitelist of (account, context) atomically.
    async fn set_whitelist(
        &self,
        account: AccountId,
        context: &str,
        entries: &[WhitelistEntry],
    ) -> Result<()>;
    /// `Ok(None)` when no whitelist is provisioned for the context.
    async fn whitelist(&self, account: AccountId, context: &str) -> Result<Option<Whitelist>>;
    /// Every whitelist of the account, by context.
    async fn whitelists(&self, account: AccountId) -> Result<Vec<Whitelist>>;
    /// Whether the account has a whitelist in any context (even an empty one), without
    /// reading the entries. An account that does not exist has none.
    async fn has_whitelist(&self, account: AccountId) -> Result<bool>;
    /// Removes one context's whitelist, or all of them with `None`.
    /// A context with no whitelist gives [`Error::NotFound`]; `None` never does.
    async fn clear_whitelist(&self, account: AccountId, context: Option<&str>) -> Result<()>;

    // --- changes and health ---------------------------------------------------------
    /// The change bus: every committed change, from this node and (PostgreSQL) others.
    fn changes(&self) -> &ChangeBus;
    /// Storage reachable (for /readyz).
    async fn ping(&self) -> Result<()>;
    /// Closes the pools (and stops listening for other nodes' changes).
    async fn close(&self);
}

/// Pool and busy-timeout settings.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Connections in the pool.
    pub max_connections: u32,
    /// SQLite: how long a statement waits for a lock. PostgreSQL: how long opening waits
    /// for the server to answer.
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
///
/// `sqlite://PATH` (or `sqlite:PATH`; `sqlite:///abs/path`): the file and its parent
/// directories are created if missing; WAL journal, foreign keys on. `postgres://` or
/// `postgresql://`: a pool, plus one connection that LISTENs for other nodes' changes.
/// Migrations are applied when `options.migrate` is set. A database that cannot be
/// reached gives [`Error::Unreachable`], naming the host but never the password.
pub async fn open(url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "sqlite" => sqlite::open(url, options).await,
        "postgres" | "postgresql" => postgres::open(url, options).await,
        // Only the scheme is echoed: the rest of the URL may hold a password.
        _ => Err(Error::Invalid(format!(
            "unsupported database URL scheme {scheme:?}: expected sqlite: or postgres:"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn whitelist_kinds_keep_their_stored_and_serialised_names() {
        for (kind, name) in WhitelistKind::ALL
            .into_iter()
            .zip(["ip", "e164", "uri", "fqdn"])
        {
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.to_string(), name);
            assert_eq!(name.parse::<WhitelistKind>().unwrap(), kind);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<WhitelistKind>(&format!("\"{name}\"")).unwrap(),
                kind
            );
        }
        for bad in ["IP", "", "host", "e.164"] {
            assert!(bad.parse::<WhitelistKind>().is_err(), "{bad}");
            assert!(serde_json::from_str::<WhitelistKind>(&format!("{bad:?}")).is_err());
        }
    }
}
