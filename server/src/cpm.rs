//! The CPM message store's operations (INTERFACES.md 9): the root folder every
//! subscriber has, deposits from the network and event reports. One implementation
//! shared by the HTTP API (`http::cpm`) and the CLI (`cpmstore cpm ...`); each returns
//! a serde-serialisable result or a [`CpmError`] whose class is the HTTP status and the
//! CLI exit status.
//!
//! Everything is stored through the ordinary [`Store`] calls (`create_mailbox`,
//! `append`, `store_flags`, `expunge`), so the change bus tells the IMAP sessions of
//! every node, as for an IMAP command.

use cpmstore_storage::cpm::{CONTRIBUTION_ID, CONVERSATION_ID, IMDN_MESSAGE_ID, header_value};
use cpmstore_storage::{
    AccountId, Error as StorageError, FlagOp, Flags, Mailbox, NewMailbox, NewMessage, Store,
    SystemFlags, UidRange,
};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::validate::validate_username;

/// The CPM system flag a client sets once it has sent a read report (IMDN display
/// notification) for a message; kept only where `[cpm] read_report_flag` is on.
pub use cpmstore_storage::cpm::READ_REPORT_SENT;

/// Longest Conversation-ID or Contribution-ID accepted as a folder name level.
pub const MAX_ID_BYTES: usize = 256;

/// What went wrong; the message says what and how to mend it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpmError {
    /// Malformed request or object (HTTP 400, exit 5).
    #[error("{0}")]
    Invalid(String),
    /// No such subscriber (HTTP 404, exit 4).
    #[error("{0}")]
    NotFound(String),
    /// Over the literal limit (HTTP 413, exit 5).
    #[error("{0}")]
    TooLarge(String),
    /// Over the subscriber's quota (HTTP 507, exit 5).
    #[error("{0}")]
    OverQuota(String),
    /// Storage unreachable (HTTP 503, exit 1).
    #[error("{0}")]
    Unavailable(String),
    /// Any other failure (HTTP 500, exit 1).
    #[error("{0}")]
    Internal(String),
}

impl CpmError {
    /// The HTTP status (INTERFACES.md 9.2).
    pub fn http_status(&self) -> u16 {
        match self {
            CpmError::Invalid(_) => 400,
            CpmError::NotFound(_) => 404,
            CpmError::TooLarge(_) => 413,
            CpmError::OverQuota(_) => 507,
            CpmError::Unavailable(_) => 503,
            CpmError::Internal(_) => 500,
        }
    }

    /// The CLI exit status (INTERFACES.md 1).
    pub fn exit_code(&self) -> u8 {
        match self {
            CpmError::Invalid(_) | CpmError::TooLarge(_) | CpmError::OverQuota(_) => 5,
            CpmError::NotFound(_) => 4,
            CpmError::Unavailable(_) | CpmError::Internal(_) => 1,
        }
    }
}

impl From<StorageError> for CpmError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::OverQuota => CpmError::OverQuota(
                "the subscriber is over quota; raise the quota or free space first".into(),
            ),
            StorageError::Invalid(why) => CpmError::Invalid(format!("invalid: {why}")),
            StorageError::NotFound(what) => CpmError::NotFound(format!("not found: {what}")),
            StorageError::Unreachable(why) => CpmError::Unavailable(format!(
                "storage unreachable: {why}; check that the database is running"
            )),
            e => CpmError::Internal(format!("storage error: {e}")),
        }
    }
}

// --- the root folder -------------------------------------------------------------------

/// The root folder as a new subscriber's mailbox (`subscriber add` creates it with the
/// default mailboxes, in the same transaction).
pub fn root_mailbox(config: &Config) -> NewMailbox {
    NewMailbox {
        name: config.cpm.root.clone(),
        special_use: None,
        subscribed: true,
    }
}

/// Gives every existing subscriber the root folder it lacks; returns how many got one.
///
/// A start-up step rather than a SQL migration: the root's name is configuration
/// (`[cpm] root`), which migrations do not see, and a changed root must reach the
/// subscribers of the next start too. It is idempotent and cheap when nothing is
/// missing (one query), and safe with several nodes starting at once: a folder another
/// node has just created is `AlreadyExists`, taken as done.
pub async fn ensure_roots(store: &dyn Store, config: &Config) -> Result<usize, CpmError> {
    let root = &config.cpm.root;
    let mut created = 0;
    for account in store.accounts_without_mailbox(root).await? {
        match store.create_mailbox(account, root_mailbox(config)).await {
            Ok(_) => created += 1,
            // Created meanwhile by another node, or the account removed meanwhile.
            Err(StorageError::AlreadyExists(_) | StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if created > 0 {
        tracing::info!(created, root = %root, "CPM root folder created for existing subscribers");
    }
    Ok(created)
}

/// Indexes the CPM headers of the messages stored before the index existed (migration
/// 0005 lists them), batch by batch; returns how many messages it read.
///
/// A start-up step, run before the listeners accept anything, so that `SEARCH HEADER`
/// answered from the index finds old messages as a scan would, and deposits of a
/// retried old object stay idempotent. It reads each listed message once (after the
/// upgrade to 0005: every message without CPM headers too, as nothing told them apart);
/// later starts find the list empty (one query). Several nodes may run it at once.
pub async fn backfill_index(store: &dyn Store) -> Result<u64, CpmError> {
    const BATCH: u32 = 500;
    let mut total = 0;
    loop {
        let done = store.backfill_cpm_headers(BATCH).await?;
        if done == 0 {
            break;
        }
        total += done;
    }
    if total > 0 {
        tracing::info!(
            messages = total,
            "CPM header index filled for older messages"
        );
    }
    Ok(total)
}

/// Opens (or creates) the mailbox `name`, creating missing levels; names the ones
/// created in `created`. Race-free across nodes: each create is its own transaction,
/// and `AlreadyExists` (another deposit created it first; on PostgreSQL the unique
/// violation that ends that transaction) means the folder is there to be used.
async fn open_or_create(
    store: &dyn Store,
    account: AccountId,
    levels: &[&str],
    created: &mut Vec<String>,
) -> Result<Mailbox, CpmError> {
    let mut name = String::new();
    let mut last = None;
    for level in levels {
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str(level);
        let mailbox = match store.mailbox(account, &name).await {
            Ok(mailbox) => mailbox,
            Err(StorageError::NotFound(_)) => {
                let new = NewMailbox {
                    name: name.clone(),
                    special_use: None,
                    subscribed: true,
                };
                match store.create_mailbox(account, new).await {
                    Ok(mailbox) => {
                        created.push(name.clone());
                        mailbox
                    }
                    Err(StorageError::AlreadyExists(_)) => store.mailbox(account, &name).await?,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        last = Some(mailbox);
    }
    last.ok_or_else(|| CpmError::Internal("no folder level to open".into()))
}

// --- deposit ---------------------------------------------------------------------------

/// A deposit (INTERFACES.md 9.2).
#[derive(Debug, Clone)]
pub struct DepositRequest {
    /// The subscriber's username.
    pub user: String,
    /// The Conversation-ID of the path.
    pub conversation: String,
    /// The Contribution-ID of a session path.
    pub session: Option<String>,
    /// The object, an RFC 5322 message; bare LF become CRLF.
    pub content: Vec<u8>,
    /// Flags to store it with (`\Seen`, `$MDNSent`, ...).
    pub flags: Vec<String>,
    /// Internal date, RFC 3339; `None` is now.
    pub date: Option<String>,
}

/// The outcome of a deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deposited {
    /// The folder it is in.
    pub mailbox: String,
    /// The folder's UIDVALIDITY.
    pub uidvalidity: u32,
    /// Its UID (the first one's, for a repeated deposit).
    pub uid: u32,
    /// Folders this deposit created, root first.
    pub created: Vec<String>,
    /// Whether the object was there already (same IMDN-Message-ID in the folder) and
    /// nothing was stored: HTTP 200 instead of 201.
    #[serde(skip)]
    pub repeated: bool,
}

/// Stores an object in its Conversation or Session History folder, creating the
/// folders on demand. A repeat (same `IMDN-Message-ID` in the same folder) stores
/// nothing and answers with the first UID.
pub async fn deposit(
    store: &dyn Store,
    config: &Config,
    request: DepositRequest,
) -> Result<Deposited, CpmError> {
    let DepositRequest {
        user,
        conversation,
        session,
        content,
        flags,
        date,
    } = request;
    let account = subscriber(store, &user).await?;
    folder_level("conversation id", &conversation)?;
    if let Some(session) = &session {
        folder_level("contribution id (session)", session)?;
    }
    let limit = usize::try_from(config.limits.max_literal_bytes).unwrap_or(usize::MAX);
    if content.len() > limit {
        return Err(too_large(limit));
    }
    let content = crate::message::crlf(content);
    if content.len() > limit {
        return Err(too_large(limit));
    }
    if content.is_empty() {
        return Err(CpmError::Invalid(
            "the object is empty; send the RFC 5322 message as the body".into(),
        ));
    }
    check_header(&content, CONVERSATION_ID, "Conversation-ID", &conversation)?;
    if let Some(session) = &session {
        check_header(&content, CONTRIBUTION_ID, "Contribution-ID", session)?;
    }
    let flags = parse_flags(&flags, config.cpm.read_report_flag)?;
    let internal_date = match &date {
        Some(text) => Some(parse_date(text)?),
        None => None,
    };

    let mut levels = vec![config.cpm.root.as_str(), conversation.as_str()];
    if let Some(session) = &session {
        levels.push(session);
    }
    let mut created = Vec::new();
    let folder = open_or_create(store, account, &levels, &mut created).await?;
    let imdn = header_value(&content, IMDN_MESSAGE_ID).filter(|v| !v.is_empty());
    if let Some(imdn) = &imdn
        && let Some(&first) = store
            .uids_by_header(account, folder.id, IMDN_MESSAGE_ID, imdn)
            .await?
            .first()
    {
        return Ok(Deposited {
            mailbox: folder.name,
            uidvalidity: folder.uidvalidity,
            uid: first,
            created,
            repeated: true,
        });
    }
    let appended = store
        .append(
            account,
            folder.id,
            NewMessage {
                content,
                flags,
                internal_date: internal_date.map(|(secs, _)| secs),
                internal_date_tz: internal_date.map_or(0, |(_, tz)| tz),
            },
        )
        .await?;
    let mut outcome = Deposited {
        mailbox: folder.name,
        uidvalidity: appended.uidvalidity,
        uid: appended.uid,
        created,
        repeated: false,
    };
    // Two copies of one deposit racing (a retry sent while the first is still being
    // stored, possibly on another node) both pass the check above. The one with the
    // higher UID gives way: it removes its copy and answers with the first, so the
    // folder keeps one object whatever the timing.
    if let Some(imdn) = &imdn {
        let uids = store
            .uids_by_header(account, folder.id, IMDN_MESSAGE_ID, imdn)
            .await?;
        if let Some(&first) = uids.first()
            && first < appended.uid
        {
            let ours = [UidRange::one(appended.uid)];
            let deleted = Flags {
                system: SystemFlags(SystemFlags::DELETED),
                keywords: Vec::new(),
            };
            store
                .store_flags(account, folder.id, &ours, FlagOp::Add, &deleted, None)
                .await?;
            store.expunge(account, folder.id, Some(&ours)).await?;
            outcome.uid = first;
            outcome.repeated = true;
        }
    }
    Ok(outcome)
}

fn too_large(limit: usize) -> CpmError {
    CpmError::TooLarge(format!(
        "the object is larger than limits.max_literal_bytes ({limit} bytes)"
    ))
}

/// The account of `user`; 404 when there is none.
async fn subscriber(store: &dyn Store, user: &str) -> Result<AccountId, CpmError> {
    validate_username(user).map_err(|e| CpmError::Invalid(e.0))?;
    match store.account_by_name(user).await {
        Ok(account) => Ok(account.id),
        Err(StorageError::NotFound(_)) => Err(CpmError::NotFound(format!(
            "no subscriber named {user:?}; check the name (`subscriber list` shows the existing ones)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A Conversation-ID or Contribution-ID usable as one folder level.
fn folder_level(what: &str, id: &str) -> Result<(), CpmError> {
    let bad = id.is_empty()
        || id.len() > MAX_ID_BYTES
        || id.trim() != id
        || id
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '*' | '%'));
    if bad {
        return Err(CpmError::Invalid(format!(
            "the {what} {id:?} cannot name a folder: 1 to {MAX_ID_BYTES} bytes, no `/`, `*`, `%`, \
             control characters or surrounding spaces"
        )));
    }
    Ok(())
}

/// The object's header `name` must be there and equal the path's `expected` (ignoring
/// ASCII case, as ids are often hex).
fn check_header(content: &[u8], name: &str, shown: &str, expected: &str) -> Result<(), CpmError> {
    match header_value(content, name) {
        Some(value) if value.eq_ignore_ascii_case(expected) => Ok(()),
        Some(value) => Err(CpmError::Invalid(format!(
            "the object's {shown} header is {value:?} but the path says {expected:?}; \
             deposit it under its own {shown}"
        ))),
        None => Err(CpmError::Invalid(format!(
            "the object has no {shown} header; a CPM object carries the {shown} of its path ({expected:?})"
        ))),
    }
}

/// `\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft` (any case), keywords, and
/// the CPM flag `\read-report-sent` where `read_report` (`[cpm] read_report_flag`).
pub fn parse_flags(given: &[String], read_report: bool) -> Result<Flags, CpmError> {
    let mut flags = Flags::default();
    for flag in given.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
        if read_report && flag.eq_ignore_ascii_case(READ_REPORT_SENT) {
            if !flags.keywords.iter().any(|k| k == READ_REPORT_SENT) {
                flags.keywords.push(READ_REPORT_SENT.to_owned());
            }
            continue;
        }
        if let Some(system) = flag.strip_prefix('\\') {
            let bit = match system.to_ascii_lowercase().as_str() {
                "seen" => SystemFlags::SEEN,
                "answered" => SystemFlags::ANSWERED,
                "flagged" => SystemFlags::FLAGGED,
                "deleted" => SystemFlags::DELETED,
                "draft" => SystemFlags::DRAFT,
                _ => {
                    return Err(CpmError::Invalid(format!(
                        "unsupported system flag {flag:?}; use \\Seen, \\Answered, \\Flagged, \
                         \\Deleted, \\Draft or a keyword such as $MDNSent"
                    )));
                }
            };
            flags.system.0 |= bit;
        } else {
            flags.keywords.push(flag.to_owned());
        }
    }
    Ok(flags)
}

/// An RFC 3339 date: unix seconds and the offset in minutes.
fn parse_date(text: &str) -> Result<(i64, i32), CpmError> {
    let date = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        CpmError::Invalid(format!(
            "date {text:?} is not RFC 3339 ({e}); e.g. 2026-12-03T09:15:00Z"
        ))
    })?;
    Ok((date.timestamp(), date.offset().local_minus_utc() / 60))
}

// --- event reports ---------------------------------------------------------------------

/// An event report (INTERFACES.md 9.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventReport {
    /// The events, applied in order.
    pub events: Vec<Event>,
}

/// One event: flags to add and remove, and whether to expunge, for every object with
/// the IMDN-Message-ID.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The objects' `IMDN-Message-ID`.
    pub imdn_message_id: String,
    /// Flags to add.
    #[serde(default)]
    pub add: Vec<String>,
    /// Flags to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Remove the objects (flag `\Deleted` and expunge).
    #[serde(default)]
    pub expunge: bool,
}

/// What an event report did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Events that found at least one object.
    pub applied: usize,
    /// Objects the events were applied to (an object counted once per event).
    pub objects: usize,
    /// The IMDN-Message-IDs of the events that found no object.
    pub unknown: Vec<String>,
}

/// Decodes an event report.
pub fn decode_events(bytes: &[u8]) -> Result<EventReport, CpmError> {
    serde_json::from_slice(bytes).map_err(|e| {
        CpmError::Invalid(format!(
            "the event report is not {{\"events\": [{{\"imdn_message_id\", \"add\", \"remove\", \"expunge\"}}]}}: {e}"
        ))
    })
}

/// Applies each event to every object of the subscriber with its IMDN-Message-ID, in
/// any folder. Every event is checked before any is applied.
pub async fn apply_events(
    store: &dyn Store,
    config: &Config,
    user: &str,
    report: &EventReport,
) -> Result<Applied, CpmError> {
    let read_report = config.cpm.read_report_flag;
    let account = subscriber(store, user).await?;
    let mut parsed = Vec::with_capacity(report.events.len());
    for event in &report.events {
        if event.imdn_message_id.trim().is_empty() {
            return Err(CpmError::Invalid(
                "an event has an empty imdn_message_id".into(),
            ));
        }
        parsed.push((
            event,
            parse_flags(&event.add, read_report)?,
            parse_flags(&event.remove, read_report)?,
        ));
    }
    let mut outcome = Applied {
        applied: 0,
        objects: 0,
        unknown: Vec::new(),
    };
    for (event, add, remove) in parsed {
        let objects = store
            .objects_by_imdn(account, &event.imdn_message_id)
            .await?;
        if objects.is_empty() {
            outcome.unknown.push(event.imdn_message_id.clone());
            continue;
        }
        outcome.applied += 1;
        outcome.objects += objects.len();
        for (mailbox, uid) in objects {
            let uids = [UidRange::one(uid)];
            let mut add = add.clone();
            if event.expunge {
                add.system.0 |= SystemFlags::DELETED;
            }
            // A folder deleted between the lookup and the change: nothing left to change.
            let result = async {
                if add != Flags::default() {
                    store
                        .store_flags(account, mailbox, &uids, FlagOp::Add, &add, None)
                        .await?;
                }
                if remove != Flags::default() {
                    store
                        .store_flags(account, mailbox, &uids, FlagOp::Remove, &remove, None)
                        .await?;
                }
                if event.expunge {
                    store.expunge(account, mailbox, Some(&uids)).await?;
                }
                Ok::<(), StorageError>(())
            }
            .await;
            match result {
                Ok(()) | Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_dates_and_ids() {
        let flags = parse_flags(&["\\seen".into(), "$MDNSent".into(), " ".into()], true).unwrap();
        assert_eq!(flags.system.0, SystemFlags::SEEN);
        assert_eq!(flags.keywords, ["$MDNSent"]);
        assert!(parse_flags(&["\\Recent".into()], true).is_err());
        let flags = parse_flags(&["\\Read-Report-Sent".into()], true).unwrap();
        assert_eq!(flags.keywords, [READ_REPORT_SENT]);
        let err = parse_flags(&["\\read-report-sent".into()], false).unwrap_err();
        assert!(err.to_string().contains("unsupported system flag"), "{err}");
        assert_eq!(parse_date("2026-12-03T09:15:00+02:00").unwrap().1, 120);
        assert!(parse_date("yesterday").is_err());
        for bad in ["", "a/b", " a", "*", "x%", "a\r"] {
            assert!(folder_level("id", bad).is_err(), "{bad:?}");
        }
        folder_level("id", "tel:+15550100").unwrap();
        let content = b"Conversation-ID: ABC\r\n\r\n";
        check_header(content, CONVERSATION_ID, "Conversation-ID", "abc").unwrap();
        let err = check_header(content, CONVERSATION_ID, "Conversation-ID", "x").unwrap_err();
        assert!(err.to_string().contains("Conversation-ID"), "{err}");
        let err = check_header(content, CONTRIBUTION_ID, "Contribution-ID", "x").unwrap_err();
        assert!(err.to_string().contains("no Contribution-ID"), "{err}");
    }

    #[test]
    fn classes() {
        let cases = [
            (CpmError::Invalid(String::new()), 400, 5),
            (CpmError::NotFound(String::new()), 404, 4),
            (CpmError::TooLarge(String::new()), 413, 5),
            (CpmError::OverQuota(String::new()), 507, 5),
            (CpmError::Unavailable(String::new()), 503, 1),
            (CpmError::Internal(String::new()), 500, 1),
        ];
        for (err, status, exit) in cases {
            assert_eq!((err.http_status(), err.exit_code()), (status, exit));
        }
    }
}
