//! SEARCH and UID SEARCH (RFC 3501 6.4.4, 6.4.8).
//!
//! The criteria are compiled once into a [`Query`] (needles decoded and case-folded,
//! cheap keys ordered first), then evaluated per message by [`matches`], a pure
//! function of the query and a [`MessageContext`]. The context grows in tiers: what the
//! session's view knows (sequence number, UID, flags, \Recent), then the message row
//! (size, internal date), then the content (parsed lazily, headers alone when that is
//! enough). [`decide`] answers "don't know yet" when a key needs a tier the context
//! lacks, so the command only fetches rows, and only loads blobs, for messages the
//! cheaper tiers could not settle.
//!
//! String keys follow Dovecot: a case-insensitive substring match on decoded text.
//! Header keys see the RFC 2047-decoded value; FROM / TO / CC / BCC see the parsed
//! addresses as `Display Name <local@domain>`; BODY sees the decoded text parts (transfer
//! encoding undone, charset converted to UTF-8 by mail-parser), including those of
//! attached messages along with their headers; TEXT sees the header and the body.
//!
//! The CPM headers (`HEADER` with Conversation-ID, Contribution-ID,
//! InReplyTo-Contribution-ID or IMDN-Message-ID and a non-empty string; INTERFACES.md
//! 9.4) are answered from the storage index, not from message bodies: [`resolve_index`]
//! replaces each such key by the UIDs the index finds before the search runs, so they
//! cost what a flag costs, in any combination with other keys. For these four names
//! the match is defined on what the index holds, so that the index and a scan agree
//! exactly: the values `storage::cpm::indexed_headers` reads from the top-level header
//! (unfolded, trimmed, not RFC 2047-decoded: CPM ids are tokens; values over 1024
//! bytes are not ids and are not searched), compared ignoring ASCII case, substring
//! as RFC 3501 asks. A message the store expunged and this session still shows is not
//! in the index; it is searched by reading its kept content with the same definition.
//! `HEADER <name> ""` (every message that has the header) is the ordinary scan.
//!
//! CONDSTORE (RFC 7162 3.1.5): `MODSEQ n` matches messages whose MODSEQ is at least `n`
//! (the form with an entry name is treated as the plain one, which the RFC allows, as
//! we keep one MODSEQ per message); a SEARCH using it enables CONDSTORE, and its answer
//! ends with `(MODSEQ m)`, the highest MODSEQ of the messages found.

use std::cell::OnceCell;
use std::num::{NonZeroU32, NonZeroU64};

use crate::imap::seqset::LazyIntervals;
use chrono::{FixedOffset, NaiveDate};
use cpmstore_storage::{
    AccountId, Error as StoreError, Flags, MailboxId, MessageMeta, Store, SystemFlags,
};
use imap_codec::imap_types::core::{AString, Charset, Vec1};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::search::SearchKey;
use mail_parser::parsers::MessageStream;
use mail_parser::{Addr, Address, Header, HeaderValue, Message, MessageParser, PartType};

use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::{MailboxView, read_rows};
use crate::imap::state::{Login, Selected};

/// The charsets SEARCH accepts, as the BADCHARSET response code lists them.
const BADCHARSET: &str = "BADCHARSET (UTF-8 US-ASCII)";

/// How many undecided messages' rows are fetched at a time: the rows of one batch are
/// held in memory while their blobs are loaded, so no database cursor stays open across
/// blob reads and memory stays bounded whatever the mailbox size.
const BATCH: usize = 512;

/// Runs SEARCH / UID SEARCH on the selected mailbox and writes `* SEARCH ...`.
pub async fn search<S: SessionStream>(
    s: &mut Connection<S>,
    login: &mut Login,
    selected: &mut Selected,
    charset: Option<Charset<'static>>,
    criteria: Vec1<SearchKey<'static>>,
    uid: bool,
) -> CmdResult {
    check_charset(charset.as_ref())?;
    let query = Query::compile_all(criteria.as_ref())?;
    let uses_modseq = query.uses_modseq();
    if uses_modseq {
        // A CONDSTORE-enabling command (RFC 7162 3.1).
        login.enable_condstore(Some(&selected.view), &mut s.out);
    }
    let store = s.ctx.store.clone();
    let view = &selected.view;
    let source = StoreSource {
        store: store.as_ref(),
        account: login.user.id,
        mailbox: view.mailbox.id,
    };
    let query = resolve_index(&source, view, query).await?;
    let hits = run(&source, view, &query).await?;
    let numbers: Vec<u32> = hits
        .iter()
        .map(|&(seq, msg_uid)| if uid { msg_uid } else { seq })
        .collect();
    let highest = hits
        .iter()
        .filter_map(|&(_, msg_uid)| view.modseq_of(msg_uid))
        .max()
        .filter(|_| uses_modseq);
    s.data(search_response(&numbers, highest));
    s.maybe_flush().await?;
    Ok(Done::text("Search completed."))
}

/// Accepts no charset, `UTF-8` and `US-ASCII` (any case); anything else is
/// `NO [BADCHARSET (UTF-8 US-ASCII)]`.
fn check_charset(charset: Option<&Charset<'_>>) -> CmdResult<()> {
    match charset {
        None => Ok(()),
        Some(c) => {
            let name: &str = c.as_ref();
            if name.eq_ignore_ascii_case("UTF-8") || name.eq_ignore_ascii_case("US-ASCII") {
                Ok(())
            } else {
                Err(CmdError::no_code(
                    BADCHARSET,
                    format!("Unsupported charset {name}."),
                ))
            }
        }
    }
}

/// Where the search reads message rows and contents: the store, or a fake in tests.
trait Source {
    /// The rows of `uids` (ascending), in UID order, as the session shows them: those
    /// expunged meanwhile from what the store keeps of them; absent once purged.
    async fn rows(&self, uids: &[u32]) -> CmdResult<Vec<MessageMeta>>;
    async fn blob(&self, hash: &str) -> Result<Vec<u8>, StoreError>;
    /// The UIDs of the mailbox's messages whose indexed header `name` contains `needle`
    /// (ASCII case ignored), from the CPM header index.
    async fn indexed(&self, name: &str, needle: &str) -> CmdResult<Vec<u32>>;
    /// The UIDs the store has expunged after MODSEQ `since` (and so no longer indexes).
    async fn expunged_since(&self, since: u64) -> CmdResult<Vec<u32>>;
}

/// The selected mailbox in the store.
struct StoreSource<'a> {
    store: &'a dyn Store,
    account: AccountId,
    mailbox: MailboxId,
}

impl Source for StoreSource<'_> {
    async fn rows(&self, uids: &[u32]) -> CmdResult<Vec<MessageMeta>> {
        Ok(read_rows(self.store, self.account, self.mailbox, uids).await?)
    }

    async fn blob(&self, hash: &str) -> Result<Vec<u8>, StoreError> {
        self.store.blob(self.account, hash).await
    }

    async fn indexed(&self, name: &str, needle: &str) -> CmdResult<Vec<u32>> {
        Ok(self
            .store
            .uids_by_header_containing(self.account, self.mailbox, name, needle)
            .await?)
    }

    async fn expunged_since(&self, since: u64) -> CmdResult<Vec<u32>> {
        Ok(self
            .store
            .expunged_since(self.account, self.mailbox, since, None)
            .await?)
    }
}

/// Answers the query's CPM header keys from the index: each [`Query::CpmHeader`]
/// becomes a [`Query::Indexed`] holding the UIDs found. Messages of the view the store
/// has expunged meanwhile are not in the index; for those the key reads their kept
/// content (see [`run`]).
async fn resolve_index(source: &impl Source, view: &MailboxView, query: Query) -> CmdResult<Query> {
    let mut keys = Vec::new();
    query.cpm_keys(&mut keys);
    if keys.is_empty() {
        return Ok(query);
    }
    let mut found = Vec::with_capacity(keys.len());
    for (name, needle) in keys {
        let hits = source.indexed(name, &needle).await?;
        found.push(((name, needle), std::sync::Arc::new(hits)));
    }
    // Still shown but expunged: deferred expunges the view knows of, and those after
    // the MODSEQ it has caught up to (a few tombstones, not the mailbox's history).
    let mut unsure: Vec<u32> = source
        .expunged_since(view.modseq)
        .await?
        .into_iter()
        .filter(|&uid| view.seq_of(uid).is_some())
        .collect();
    unsure.extend(view.pending_expunges());
    unsure.sort_unstable();
    unsure.dedup();
    let unsure = std::sync::Arc::new(unsure);
    Ok(query.with_index(&found, &unsure))
}

/// The `(sequence number, UID)` of every message of the view that matches, ascending.
///
/// Tier 1 decides what the view alone can (flags, numbers); messages pending expunge
/// are still in the view, so sequence numbers stay what the client was told. Tier 2
/// fetches the rows of the undecided ones, in batches; tier 3 loads the content of
/// those the row could not decide either. A message expunged meanwhile by another
/// session is searched as it was (the store keeps it for a while: `read_rows`); once
/// its row or content is gone it matches nothing that needs them (not even
/// `NOT BODY x`).
async fn run(
    source: &impl Source,
    view: &MailboxView,
    query: &Query,
) -> CmdResult<Vec<(u32, u32)>> {
    let last = Last {
        seq: view.exists(),
        uid: view.last_uid(),
    };
    // The common CPM search, one indexed key alone: its hits are the answer.
    if let Query::Indexed { hits, unsure, .. } = query
        && unsure.is_empty()
    {
        return Ok(hits
            .iter()
            .filter_map(|&uid| view.seq_of(uid).map(|seq| (seq, uid)))
            .collect());
    }
    let no_flags = Flags::default();
    let mut hits: Vec<(u32, u32)> = Vec::new();
    let mut undecided: Vec<u32> = Vec::new();
    for seq in 1..=last.seq {
        let Some(uid) = view.uid_of(seq) else {
            continue;
        };
        let flags = view.flags_of(uid).unwrap_or(&no_flags);
        match decide(
            query,
            &MessageContext::new(seq, uid, flags, view.is_recent(uid), last)
                .with_modseq(view.modseq_of(uid)),
        ) {
            Some(true) => hits.push((seq, uid)),
            Some(false) => {}
            None => undecided.push(uid),
        }
    }

    for chunk in undecided.chunks(BATCH) {
        // Matching is CPU work on the reactor: let other sessions run between batches.
        tokio::task::yield_now().await;
        for meta in source.rows(chunk).await? {
            let Some(seq) = view.seq_of(meta.uid) else {
                continue;
            };
            // The flags the client was told, like tier 1.
            let flags = view.flags_of(meta.uid).unwrap_or(&meta.flags);
            let recent = view.is_recent(meta.uid);
            let modseq = view.modseq_of(meta.uid);
            let decided = decide(
                query,
                &MessageContext::new(seq, meta.uid, flags, recent, last)
                    .with_modseq(modseq)
                    .with_meta(&meta),
            );
            let hit = match decided {
                Some(hit) => hit,
                None => match source.blob(&meta.blob).await {
                    Ok(raw) => {
                        let ctx = MessageContext::new(seq, meta.uid, flags, recent, last)
                            .with_modseq(modseq)
                            .with_meta(&meta);
                        matches(query, &ctx.with_content(&raw))
                    }
                    // Expunged and collected meanwhile: nothing left to match.
                    Err(StoreError::NotFound(_)) => false,
                    Err(e) => return Err(e.into()),
                },
            };
            if hit {
                hits.push((seq, meta.uid));
            }
        }
    }
    hits.sort_unstable();
    Ok(hits)
}

/// `* SEARCH 2 5 7\r\n`, or `* SEARCH\r\n` for no match; `highest` adds
/// ` (MODSEQ m)` (a search with MODSEQ that found something).
fn search_response(numbers: &[u32], highest: Option<u64>) -> Data<'static> {
    // Sequence numbers and UIDs start at 1; a MODSEQ of 0 is never a message's.
    let numbers = numbers.iter().filter_map(|&n| NonZeroU32::new(n)).collect();
    Data::Search(numbers, highest.and_then(NonZeroU64::new))
}

// --- the compiled query ---------------------------------------------------------------

/// A search program: the criteria with needles decoded and case-folded, dates as
/// calendar dates, and the operands of AND / OR in cost order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    All,
    And(Vec<Query>),
    Or(Box<Query>, Box<Query>),
    Not(Box<Query>),
    /// Message sequence numbers (even in UID SEARCH); `*` is the last message.
    Seq(LazyIntervals),
    /// UIDs; `*` is the highest UID in the mailbox.
    Uid(LazyIntervals),
    /// A system flag (a `SystemFlags` bit) is set.
    Flag(u8),
    /// A keyword is set (compared case-insensitively).
    Keyword(String),
    Recent,
    /// The message's MODSEQ is at least this (CONDSTORE).
    ModSeq(u64),
    Larger(u64),
    Smaller(u64),
    /// The internal date, as a calendar date in its own zone.
    Internal(DateCmp, NaiveDate),
    /// The Date: header, as a calendar date in its own zone (the internal date when
    /// there is no valid Date:).
    Sent(DateCmp, NaiveDate),
    /// An address header (From, To, Cc, Bcc) contains the needle.
    Address(&'static str, Needle),
    /// A header field contains the needle; an empty needle asks only that it exists.
    Header(String, Needle),
    /// An indexed CPM header (lower-case name) has a value that contains the needle,
    /// ASCII case ignored (the needle is in ASCII lower case, not empty); see the
    /// module's documentation. Answered by reading the content until
    /// [`resolve_index`] makes it an [`Query::Indexed`].
    CpmHeader(&'static str, String),
    /// A [`Query::CpmHeader`] answered by the index: `hits` are the UIDs it found
    /// (ascending); for the UIDs in `unsure` (expunged meanwhile, ascending) `scan`
    /// reads the content instead.
    Indexed {
        hits: std::sync::Arc<Vec<u32>>,
        unsure: std::sync::Arc<Vec<u32>>,
        scan: Box<Query>,
    },
    Body(Needle),
    Text(Needle),
}

/// One CPM header key, (name, needle), and the UIDs the index found for it.
type IndexAnswer = ((&'static str, String), std::sync::Arc<Vec<u32>>);

/// How a date key compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateCmp {
    Before,
    On,
    Since,
}

impl DateCmp {
    fn test(self, date: NaiveDate, key: NaiveDate) -> bool {
        match self {
            DateCmp::Before => date < key,
            DateCmp::On => date == key,
            DateCmp::Since => date >= key,
        }
    }
}

/// A search string, case-folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle(String);

impl Needle {
    fn new(s: &AString<'_>) -> CmdResult<Self> {
        let text = std::str::from_utf8(s.as_ref())
            .map_err(|_| CmdError::bad("Search string is not valid UTF-8."))?;
        Ok(Needle(fold(text)))
    }

    /// Whether `haystack` (not yet folded) contains the needle.
    fn found_in(&self, haystack: &str) -> bool {
        self.0.is_empty() || fold(haystack).contains(&self.0)
    }

    /// Whether an already folded `haystack` contains the needle.
    fn found_in_folded(&self, haystack: &str) -> bool {
        haystack.contains(&self.0)
    }
}

/// The folding both sides of a string comparison go through.
fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// What a key needs to be decided; operands are evaluated cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cost {
    View,
    Row,
    Headers,
    Content,
}

impl Query {
    /// Compiles the top-level criteria (implicitly ANDed).
    pub fn compile_all(keys: &[SearchKey<'_>]) -> CmdResult<Query> {
        let parts = keys
            .iter()
            .map(Query::compile)
            .collect::<CmdResult<Vec<_>>>()?;
        match <[Query; 1]>::try_from(parts) {
            Ok([only]) => Ok(only),
            Err(mut parts) => {
                parts.sort_by_key(Query::cost);
                Ok(Query::And(parts))
            }
        }
    }

    /// Compiles one search key.
    pub fn compile(key: &SearchKey<'_>) -> CmdResult<Query> {
        use SearchKey as K;
        let day = |d: &imap_codec::imap_types::datetime::NaiveDate| *d.as_ref();
        Ok(match key {
            // WITHIN (RFC 5032) is parsed (imap-codec's `ext_within`) but not advertised.
            K::Older(_) | K::Younger(_) => {
                return Err(CmdError::bad(
                    "OLDER and YOUNGER (WITHIN) are not supported.",
                ));
            }
            K::And(keys) => Query::compile_all(keys.as_ref())?,
            K::SequenceSet(set) => Query::Seq(LazyIntervals::new(set.clone())),
            K::Uid(set) => Query::Uid(LazyIntervals::new(set.clone())),
            K::All => Query::All,
            K::Answered => Query::Flag(SystemFlags::ANSWERED),
            K::Deleted => Query::Flag(SystemFlags::DELETED),
            K::Draft => Query::Flag(SystemFlags::DRAFT),
            K::Flagged => Query::Flag(SystemFlags::FLAGGED),
            K::Seen => Query::Flag(SystemFlags::SEEN),
            K::Unanswered => Query::not(Query::Flag(SystemFlags::ANSWERED)),
            K::Undeleted => Query::not(Query::Flag(SystemFlags::DELETED)),
            K::Undraft => Query::not(Query::Flag(SystemFlags::DRAFT)),
            K::Unflagged => Query::not(Query::Flag(SystemFlags::FLAGGED)),
            K::Unseen => Query::not(Query::Flag(SystemFlags::SEEN)),
            K::Keyword(atom) => Query::Keyword(atom.inner().to_string()),
            K::Unkeyword(atom) => Query::not(Query::Keyword(atom.inner().to_string())),
            K::Recent => Query::Recent,
            // One MODSEQ per message: the entry name and type change nothing.
            K::ModSequence { modseq, .. } => Query::ModSeq(*modseq),
            K::Old => Query::not(Query::Recent),
            K::New => Query::And(vec![
                Query::Recent,
                Query::not(Query::Flag(SystemFlags::SEEN)),
            ]),
            K::Larger(n) => Query::Larger(u64::from(*n)),
            K::Smaller(n) => Query::Smaller(u64::from(*n)),
            K::Before(d) => Query::Internal(DateCmp::Before, day(d)),
            K::On(d) => Query::Internal(DateCmp::On, day(d)),
            K::Since(d) => Query::Internal(DateCmp::Since, day(d)),
            K::SentBefore(d) => Query::Sent(DateCmp::Before, day(d)),
            K::SentOn(d) => Query::Sent(DateCmp::On, day(d)),
            K::SentSince(d) => Query::Sent(DateCmp::Since, day(d)),
            K::From(s) => Query::Address("From", Needle::new(s)?),
            K::To(s) => Query::Address("To", Needle::new(s)?),
            K::Cc(s) => Query::Address("Cc", Needle::new(s)?),
            K::Bcc(s) => Query::Address("Bcc", Needle::new(s)?),
            K::Subject(s) => Query::Header("Subject".into(), Needle::new(s)?),
            K::Header(name, s) => {
                let name = std::str::from_utf8(name.as_ref())
                    .map_err(|_| CmdError::bad("Header field name is not valid UTF-8."))?;
                let needle = std::str::from_utf8(s.as_ref())
                    .map_err(|_| CmdError::bad("Search string is not valid UTF-8."))?;
                match cpmstore_storage::cpm::indexed_name(name) {
                    Some(indexed) if !needle.is_empty() => {
                        Query::CpmHeader(indexed, needle.to_ascii_lowercase())
                    }
                    _ => Query::Header(name.to_string(), Needle::new(s)?),
                }
            }
            K::Body(s) => Query::Body(Needle::new(s)?),
            K::Text(s) => Query::Text(Needle::new(s)?),
            K::Not(inner) => Query::not(Query::compile(inner)?),
            K::Or(a, b) => {
                let (a, b) = (Query::compile(a)?, Query::compile(b)?);
                let (a, b) = if b.cost() < a.cost() { (b, a) } else { (a, b) };
                Query::Or(Box::new(a), Box::new(b))
            }
        })
    }

    /// Whether a MODSEQ key appears anywhere in the query.
    pub fn uses_modseq(&self) -> bool {
        match self {
            Query::ModSeq(_) => true,
            Query::And(qs) => qs.iter().any(Query::uses_modseq),
            Query::Or(a, b) => a.uses_modseq() || b.uses_modseq(),
            Query::Not(q) => q.uses_modseq(),
            _ => false,
        }
    }

    fn not(q: Query) -> Query {
        Query::Not(Box::new(q))
    }

    /// The (name, needle) of every CPM header key, each once.
    fn cpm_keys(&self, out: &mut Vec<(&'static str, String)>) {
        match self {
            Query::CpmHeader(name, needle)
                if !out.iter().any(|(n, v)| n == name && v == needle) =>
            {
                out.push((name, needle.clone()));
            }
            Query::And(qs) => qs.iter().for_each(|q| q.cpm_keys(out)),
            Query::Or(a, b) => {
                a.cpm_keys(out);
                b.cpm_keys(out);
            }
            Query::Not(q) => q.cpm_keys(out),
            _ => {}
        }
    }

    /// The query with each CPM header key answered by `found` (from [`cpm_keys`]).
    fn with_index(self, found: &[IndexAnswer], unsure: &std::sync::Arc<Vec<u32>>) -> Query {
        match self {
            Query::CpmHeader(name, needle) => {
                match found.iter().find(|((n, v), _)| *n == name && *v == needle) {
                    Some((_, hits)) => Query::Indexed {
                        hits: hits.clone(),
                        unsure: unsure.clone(),
                        scan: Box::new(Query::CpmHeader(name, needle)),
                    },
                    None => Query::CpmHeader(name, needle),
                }
            }
            Query::And(qs) => {
                let mut qs: Vec<Query> = qs
                    .into_iter()
                    .map(|q| q.with_index(found, unsure))
                    .collect();
                qs.sort_by_key(Query::cost);
                Query::And(qs)
            }
            Query::Or(a, b) => {
                let (a, b) = (a.with_index(found, unsure), b.with_index(found, unsure));
                let (a, b) = if b.cost() < a.cost() { (b, a) } else { (a, b) };
                Query::Or(Box::new(a), Box::new(b))
            }
            Query::Not(q) => Query::not(q.with_index(found, unsure)),
            other => other,
        }
    }

    fn cost(&self) -> Cost {
        match self {
            Query::All
            | Query::Seq(_)
            | Query::Uid(_)
            | Query::Flag(_)
            | Query::Keyword(_)
            | Query::Recent
            | Query::ModSeq(_)
            | Query::Indexed { .. } => Cost::View,
            Query::Larger(_) | Query::Smaller(_) | Query::Internal(..) => Cost::Row,
            Query::Sent(..) | Query::Address(..) | Query::Header(..) | Query::CpmHeader(..) => {
                Cost::Headers
            }
            Query::Body(_) | Query::Text(_) => Cost::Content,
            Query::And(qs) => qs.iter().map(Query::cost).max().unwrap_or(Cost::View),
            Query::Or(a, b) => a.cost().max(b.cost()),
            Query::Not(q) => q.cost(),
        }
    }
}

// --- the evaluator --------------------------------------------------------------------

/// The values `*` stands for: the last sequence number and the highest UID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Last {
    pub seq: u32,
    pub uid: u32,
}

/// What the evaluator knows of one message: the view's part always, the row's and the
/// content when given.
pub struct MessageContext<'a> {
    pub seq: u32,
    pub uid: u32,
    pub flags: &'a Flags,
    pub recent: bool,
    pub last: Last,
    /// The MODSEQ: the view's, or the row's when given.
    modseq: Option<u64>,
    row: Option<Row>,
    content: Option<Content<'a>>,
}

/// The part of the message row that keys look at.
#[derive(Debug, Clone, Copy)]
struct Row {
    size: u64,
    internal_date: i64,
    internal_date_tz: i32,
}

impl<'a> MessageContext<'a> {
    pub fn new(seq: u32, uid: u32, flags: &'a Flags, recent: bool, last: Last) -> Self {
        MessageContext {
            seq,
            uid,
            flags,
            recent,
            last,
            modseq: None,
            row: None,
            content: None,
        }
    }

    /// Adds the MODSEQ the session's view knows.
    pub fn with_modseq(mut self, modseq: Option<u64>) -> Self {
        self.modseq = modseq.or(self.modseq);
        self
    }

    /// Adds what the message row tells (size, internal date).
    pub fn with_meta(mut self, meta: &MessageMeta) -> Self {
        self.modseq = self.modseq.or(Some(meta.modseq));
        self.row = Some(Row {
            size: meta.size,
            internal_date: meta.internal_date,
            internal_date_tz: meta.internal_date_tz,
        });
        self
    }

    /// Adds the raw message; it is parsed on first need.
    pub fn with_content(mut self, raw: &'a [u8]) -> Self {
        self.content = Some(Content::new(raw));
        self
    }

    /// The internal date's calendar date in its own zone.
    fn internal_day(&self) -> Option<NaiveDate> {
        let row = self.row?;
        let offset = row
            .internal_date_tz
            .checked_mul(60)
            .and_then(FixedOffset::east_opt);
        let utc = chrono::DateTime::from_timestamp(row.internal_date, 0)?;
        Some(match offset {
            Some(offset) => utc.with_timezone(&offset).date_naive(),
            None => utc.date_naive(),
        })
    }
}

/// Whether a message matches; `false` when the context lacks the row or the content
/// the query needs (give it both to get the full answer).
pub fn matches(query: &Query, msg: &MessageContext<'_>) -> bool {
    decide(query, msg).unwrap_or(false)
}

/// Decides a query with what the context holds: `None` when a key needs more.
pub fn decide(query: &Query, msg: &MessageContext<'_>) -> Option<bool> {
    match query {
        Query::All => Some(true),
        Query::And(qs) => {
            let mut known = true;
            for q in qs {
                match decide(q, msg) {
                    Some(false) => return Some(false),
                    Some(true) => {}
                    None => known = false,
                }
            }
            known.then_some(true)
        }
        Query::Or(a, b) => match decide(a, msg) {
            Some(true) => Some(true),
            first => match (first, decide(b, msg)) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
        },
        Query::Not(q) => decide(q, msg).map(|b| !b),
        Query::Seq(set) => Some(set.contains(msg.seq, msg.last.seq)),
        Query::Uid(set) => Some(set.contains(msg.uid, msg.last.uid)),
        Query::Flag(bit) => Some(msg.flags.system.contains(*bit)),
        Query::Keyword(kw) => Some(
            msg.flags
                .keywords
                .iter()
                .any(|k| k.eq_ignore_ascii_case(kw)),
        ),
        Query::Recent => Some(msg.recent),
        Query::ModSeq(n) => msg.modseq.map(|m| m >= *n),
        Query::Larger(n) => msg.row.map(|r| r.size > *n),
        Query::Smaller(n) => msg.row.map(|r| r.size < *n),
        Query::Internal(cmp, key) => {
            msg.row?;
            Some(msg.internal_day().is_some_and(|d| cmp.test(d, *key)))
        }
        Query::Sent(cmp, key) => {
            let content = msg.content.as_ref()?;
            let day = content.sent_day().or_else(|| msg.internal_day());
            Some(day.is_some_and(|d| cmp.test(d, *key)))
        }
        Query::Address(field, needle) => Some(msg.content.as_ref()?.address_matches(field, needle)),
        Query::Header(field, needle) => Some(msg.content.as_ref()?.header_matches(field, needle)),
        Query::CpmHeader(name, needle) => {
            Some(msg.content.as_ref()?.cpm_header_matches(name, needle))
        }
        Query::Indexed { hits, unsure, scan } => {
            if unsure.binary_search(&msg.uid).is_ok() {
                decide(scan, msg)
            } else {
                Some(hits.binary_search(&msg.uid).is_ok())
            }
        }
        Query::Body(needle) => Some(needle.found_in_folded(msg.content.as_ref()?.body_text())),
        Query::Text(needle) => {
            let content = msg.content.as_ref()?;
            Some(
                needle.found_in_folded(content.header_text())
                    || needle.found_in_folded(content.body_text()),
            )
        }
    }
}

/// A message's content, parsed on first need: the header alone for header keys, the
/// whole message for BODY and TEXT.
struct Content<'a> {
    raw: &'a [u8],
    header: OnceCell<Option<Message<'a>>>,
    full: OnceCell<Option<Message<'a>>>,
    /// Folded `Name: value` lines of the top-level header.
    header_text: OnceCell<String>,
    /// Folded decoded text of the body parts.
    body_text: OnceCell<String>,
}

impl<'a> Content<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Content {
            raw,
            header: OnceCell::new(),
            full: OnceCell::new(),
            header_text: OnceCell::new(),
            body_text: OnceCell::new(),
        }
    }

    /// The parsed message with at least its top-level header; `None` when the content
    /// has no header at all.
    fn head(&self) -> Option<&Message<'a>> {
        if let Some(full) = self.full.get() {
            return full.as_ref();
        }
        self.header
            .get_or_init(|| MessageParser::default().parse_headers(self.raw))
            .as_ref()
    }

    fn full(&self) -> Option<&Message<'a>> {
        self.full
            .get_or_init(|| MessageParser::default().parse(self.raw))
            .as_ref()
    }

    fn headers(&self) -> &[Header<'a>] {
        self.head().map_or(&[], |m| m.headers())
    }

    /// The Date: header's calendar date in its own zone, if there is a valid one.
    fn sent_day(&self) -> Option<NaiveDate> {
        let date = self
            .headers()
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case("Date"))?;
        let HeaderValue::DateTime(dt) = &date.value else {
            return None;
        };
        let day =
            NaiveDate::from_ymd_opt(i32::from(dt.year), u32::from(dt.month), u32::from(dt.day))?;
        // mail-parser keeps out-of-range times (25:00); such a date is not valid.
        (dt.hour < 24 && dt.minute < 60 && dt.second < 61).then_some(day)
    }

    fn header_matches(&self, field: &str, needle: &Needle) -> bool {
        let Some(msg) = self.head() else { return false };
        msg.headers()
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(field))
            .any(|h| needle.found_in(&decoded_value(msg, h)))
    }

    /// The index's definition of a CPM header key (see the module's documentation).
    fn cpm_header_matches(&self, name: &str, needle: &str) -> bool {
        cpmstore_storage::cpm::indexed_headers(self.raw)
            .iter()
            .any(|(n, v)| *n == name && v.to_ascii_lowercase().contains(needle))
    }

    fn address_matches(&self, field: &str, needle: &Needle) -> bool {
        let Some(msg) = self.head() else { return false };
        msg.headers()
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(field))
            .any(|h| {
                let text = match &h.value {
                    HeaderValue::Address(address) => render_addresses(address),
                    // Not parsable as addresses: search what is there.
                    _ => decoded_value(msg, h),
                };
                needle.found_in(&text)
            })
    }

    fn header_text(&self) -> &str {
        self.header_text.get_or_init(|| {
            self.head()
                .map(|m| fold(&header_block(m)))
                .unwrap_or_default()
        })
    }

    fn body_text(&self) -> &str {
        self.body_text.get_or_init(|| {
            let mut text = String::new();
            match self.full() {
                Some(msg) => body_block(msg, &mut text),
                // No header at all: the whole content is the body.
                None => text.push_str(&String::from_utf8_lossy(self.raw)),
            }
            fold(&text)
        })
    }
}

/// A header field's value, unfolded, with RFC 2047 encoded words decoded.
fn decoded_value(msg: &Message<'_>, h: &Header<'_>) -> String {
    let Some(bytes) = msg
        .raw_message
        .get(h.offset_start as usize..h.offset_end as usize)
    else {
        return String::new();
    };
    match MessageStream::new(bytes).parse_unstructured() {
        HeaderValue::Text(text) => text.into_owned(),
        _ => String::new(),
    }
}

/// The top-level header as `Name: decoded value` lines.
fn header_block(msg: &Message<'_>) -> String {
    let mut text = String::new();
    push_headers(msg, msg.headers(), &mut text);
    text
}

/// `headers` (of `msg` or one of its parts) as `Name: decoded value` lines.
fn push_headers(msg: &Message<'_>, headers: &[Header<'_>], text: &mut String) {
    for h in headers {
        text.push_str(h.name.as_str());
        text.push_str(": ");
        text.push_str(&decoded_value(msg, h));
        text.push('\n');
    }
}

/// The body as BODY and TEXT search it: every MIME part's header (so an attachment's
/// file name is found: RFC 3501 counts them as body text), the decoded text parts, and
/// attached messages' headers and text.
fn body_block(msg: &Message<'_>, text: &mut String) {
    for (i, part) in msg.parts.iter().enumerate() {
        // Part 0 is the message itself: its header is the message header, not body.
        if i > 0 {
            push_headers(msg, &part.headers, text);
        }
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => {
                text.push_str(t);
                text.push('\n');
            }
            PartType::Message(inner) => {
                text.push_str(&header_block(inner));
                body_block(inner, text);
            }
            PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Multipart(_) => {}
        }
    }
}

/// Addresses as `Display Name <local@domain>`, comma separated; groups by name.
fn render_addresses(address: &Address<'_>) -> String {
    let mut text = String::new();
    match address {
        Address::List(list) => list.iter().for_each(|a| push_addr(&mut text, a)),
        Address::Group(groups) => {
            for group in groups {
                if let Some(name) = &group.name {
                    if !text.is_empty() {
                        text.push_str(", ");
                    }
                    text.push_str(name);
                    text.push(':');
                }
                group.addresses.iter().for_each(|a| push_addr(&mut text, a));
            }
        }
    }
    text
}

fn push_addr(text: &mut String, a: &Addr<'_>) {
    if !text.is_empty() && !text.ends_with(':') {
        text.push(',');
    }
    if !text.is_empty() {
        text.push(' ');
    }
    match (&a.name, &a.address) {
        (Some(name), Some(addr)) => {
            text.push_str(name);
            text.push_str(" <");
            text.push_str(addr);
            text.push('>');
        }
        (Some(name), None) => text.push_str(name),
        (None, Some(addr)) => text.push_str(addr),
        (None, None) => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::cell::{Cell, RefCell};

    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;

    use super::*;

    /// Parses `a SEARCH <keys>\r\n` with imap-codec and returns charset and criteria.
    /// Strings with non-ASCII characters are sent as literals, as a client would.
    fn parse(keys: &str) -> (Option<Charset<'static>>, Vec1<SearchKey<'static>>) {
        let mut line = b"a SEARCH ".to_vec();
        line.extend_from_slice(&literals(keys));
        line.extend_from_slice(b"\r\n");
        let (rest, command) = CommandCodec::default().decode_static(&line).unwrap();
        assert!(rest.is_empty(), "{keys}: left over {rest:?}");
        match command.body {
            CommandBody::Search {
                charset, criteria, ..
            } => (charset, criteria),
            other => panic!("{keys}: parsed as {other:?}"),
        }
    }

    /// Rewrites quoted strings and atoms holding non-ASCII characters as literals.
    fn literals(keys: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chars = keys.chars().peekable();
        while let Some(&c) = chars.peek() {
            if matches!(c, ' ' | '(' | ')') {
                out.push(c as u8);
                chars.next();
                continue;
            }
            let quoted = c == '"';
            let mut token = String::new();
            if quoted {
                chars.next();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    token.push(c);
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if matches!(c, ' ' | ')') {
                        break;
                    }
                    token.push(c);
                    chars.next();
                }
            }
            if !token.is_ascii() {
                out.extend_from_slice(format!("{{{}}}\r\n{token}", token.len()).as_bytes());
            } else if quoted {
                out.extend_from_slice(format!("\"{token}\"").as_bytes());
            } else {
                out.extend_from_slice(token.as_bytes());
            }
        }
        out
    }

    fn query(keys: &str) -> Query {
        let (charset, criteria) = parse(keys);
        check_charset(charset.as_ref()).unwrap();
        Query::compile_all(criteria.as_ref()).unwrap()
    }

    /// A message as the tests describe it.
    #[derive(Clone)]
    struct Msg {
        raw: &'static [u8],
        seq: u32,
        uid: u32,
        flags: Flags,
        recent: bool,
        size: u64,
        /// RFC 3339 with offset, e.g. "2024-03-01T23:30:00+02:00".
        internal: &'static str,
    }

    const LAST: Last = Last { seq: 10, uid: 100 };

    fn msg(raw: &'static [u8]) -> Msg {
        Msg {
            raw,
            seq: 3,
            uid: 30,
            flags: Flags::default(),
            recent: false,
            size: raw.len() as u64,
            internal: "2024-03-01T12:00:00+00:00",
        }
    }

    impl Msg {
        fn flags(mut self, bits: u8, keywords: &[&str]) -> Self {
            self.flags.system.0 = bits;
            self.flags.keywords = keywords.iter().map(|k| k.to_string()).collect();
            self
        }
        fn recent(mut self) -> Self {
            self.recent = true;
            self
        }
        fn at(mut self, seq: u32, uid: u32) -> Self {
            self.seq = seq;
            self.uid = uid;
            self
        }
        fn size(mut self, size: u64) -> Self {
            self.size = size;
            self
        }
        fn internal(mut self, date: &'static str) -> Self {
            self.internal = date;
            self
        }
        fn meta(&self) -> MessageMeta {
            let date = chrono::DateTime::parse_from_rfc3339(self.internal).unwrap();
            MessageMeta {
                uid: self.uid,
                modseq: 1,
                flags: self.flags.clone(),
                internal_date: date.timestamp(),
                internal_date_tz: date.offset().local_minus_utc() / 60,
                size: self.size,
                blob: String::new(),
            }
        }
        fn matches(&self, keys: &str) -> bool {
            let q = query(keys);
            let meta = self.meta();
            let ctx = MessageContext::new(self.seq, self.uid, &self.flags, self.recent, LAST)
                .with_meta(&meta)
                .with_content(self.raw);
            matches(&q, &ctx)
        }
    }

    const PLAIN: &[u8] = b"Date: Fri, 01 Mar 2024 23:30:00 -0500\r\n\
From: \"Alice Smith\" <alice@example.com>\r\n\
To: bob@example.org, =?UTF-8?Q?Ren=C3=A9e?= <renee@example.net>\r\n\
Cc: Carol <carol@example.com>\r\n\
Bcc: dave@example.com\r\n\
Subject: =?UTF-8?B?SMOpbGxvIFfDtnJsZA==?= and more\r\n\
X-Priority: 1 (Highest)\r\n\
X-Empty:\r\n\
Message-ID: <1@example.com>\r\n\
\r\n\
Hello Bob,\r\n\
the quick brown fox.\r\n";

    const MULTIPART: &[u8] = b"From: Zed <zed@example.com>\r\n\
Subject: parts\r\n\
Date: Sat, 02 Mar 2024 00:10:00 +0100\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
preamble is not searched\r\n\
--XX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
U2Now7ZuZSBHcsO8w59lIGF1cyBCZXJsaW4=\r\n\
--XX\r\n\
Content-Type: text/html; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<p>Caf=E9 cr=E8me soft=\r\nbreak</p>\r\n\
--XX\r\n\
Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
c2VjcmV0YmluYXJ5\r\n\
--XX\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: =?UTF-8?Q?inner_=C3=BCber?=\r\n\
From: inner@example.com\r\n\
\r\n\
nested body words\r\n\
--XX--\r\n";

    const NO_DATE: &[u8] = b"Subject: undated\r\nFrom: x@example.com\r\n\r\nno date here\r\n";
    const BAD_DATE: &[u8] = b"Subject: bad\r\nDate: not a date\r\n\r\nbad date\r\n";
    const GROUP: &[u8] =
        b"To: Friends: ann@example.com, Ben <ben@example.com>;\r\nSubject: g\r\n\r\nx\r\n";
    const HEADERLESS: &[u8] = b"just some words without a header\r\n";

    #[test]
    fn every_key() {
        let seen = SystemFlags::SEEN;
        let answered = SystemFlags::ANSWERED;
        let flagged = SystemFlags::FLAGGED;
        let deleted = SystemFlags::DELETED;
        let draft = SystemFlags::DRAFT;
        let base = msg(PLAIN);
        #[rustfmt::skip]
        let cases: Vec<(Msg, &str, bool)> = vec![
            // ALL, flags and their negations.
            (base.clone(), "ALL", true),
            (base.clone().flags(answered, &[]), "ANSWERED", true),
            (base.clone(), "ANSWERED", false),
            (base.clone().flags(answered, &[]), "UNANSWERED", false),
            (base.clone(), "UNANSWERED", true),
            (base.clone().flags(deleted, &[]), "DELETED", true),
            (base.clone(), "DELETED", false),
            (base.clone().flags(deleted, &[]), "UNDELETED", false),
            (base.clone(), "UNDELETED", true),
            (base.clone().flags(draft, &[]), "DRAFT", true),
            (base.clone(), "DRAFT", false),
            (base.clone().flags(draft, &[]), "UNDRAFT", false),
            (base.clone(), "UNDRAFT", true),
            (base.clone().flags(flagged, &[]), "FLAGGED", true),
            (base.clone(), "FLAGGED", false),
            (base.clone().flags(flagged, &[]), "UNFLAGGED", false),
            (base.clone(), "UNFLAGGED", true),
            (base.clone().flags(seen, &[]), "SEEN", true),
            (base.clone(), "SEEN", false),
            (base.clone().flags(seen, &[]), "UNSEEN", false),
            (base.clone(), "UNSEEN", true),
            (base.clone().flags(seen | flagged, &[]), "SEEN FLAGGED UNDELETED", true),
            // KEYWORD / UNKEYWORD, case-insensitive.
            (base.clone().flags(0, &["$Forwarded"]), "KEYWORD $forwarded", true),
            (base.clone().flags(0, &["$Forwarded"]), "KEYWORD $FORWARDED", true),
            (base.clone().flags(0, &["$Forwarded"]), "KEYWORD $Junk", false),
            (base.clone().flags(0, &["$Forwarded"]), "UNKEYWORD $forwarded", false),
            (base.clone(), "UNKEYWORD $forwarded", true),
            // RECENT / NEW / OLD.
            (base.clone().recent(), "RECENT", true),
            (base.clone(), "RECENT", false),
            (base.clone().recent(), "NEW", true),
            (base.clone().recent().flags(seen, &[]), "NEW", false),
            (base.clone(), "NEW", false),
            (base.clone(), "OLD", true),
            (base.clone().recent(), "OLD", false),
            (base.clone().recent().flags(seen, &[]), "OLD", false),
            // LARGER / SMALLER: strict, at the edges.
            (base.clone().size(100), "LARGER 99", true),
            (base.clone().size(100), "LARGER 100", false),
            (base.clone().size(100), "SMALLER 101", true),
            (base.clone().size(100), "SMALLER 100", false),
            (base.clone().size(0), "SMALLER 0", false),
            (base.clone().size(0), "LARGER 0", false),
            (base.clone().size(1), "LARGER 0", true),
            (base.clone().size(u64::from(u32::MAX) + 1), "LARGER 4294967295", true),
            // Sequence sets and UID sets; `*` is the last message / highest UID.
            (base.clone().at(3, 30), "3", true),
            (base.clone().at(3, 30), "1,2", false),
            (base.clone().at(3, 30), "2:4", true),
            (base.clone().at(3, 30), "4:2", true),
            (base.clone().at(10, 100), "*", true),
            (base.clone().at(9, 90), "*", false),
            (base.clone().at(10, 100), "12:*", true),
            (base.clone().at(3, 30), "11:20", false),
            (base.clone().at(3, 30), "UID 30", true),
            (base.clone().at(3, 30), "UID 3", false),
            (base.clone().at(3, 30), "UID 1:29,31:*", false),
            (base.clone().at(10, 100), "UID *", true),
            (base.clone().at(10, 100), "UID 500:*", true),
            (base.clone().at(3, 30), "UID 25:35 2:4", true),
            // BEFORE / ON / SINCE: the internal date's day in its own zone.
            (base.clone().internal("2024-03-01T23:30:00-05:00"), "ON 1-Mar-2024", true),
            (base.clone().internal("2024-03-01T23:30:00-05:00"), "ON 2-Mar-2024", false),
            (base.clone().internal("2024-03-02T00:30:00+01:00"), "ON 2-Mar-2024", true),
            (base.clone().internal("2024-03-02T00:30:00+01:00"), "ON 1-Mar-2024", false),
            (base.clone().internal("2024-03-01T00:00:00+00:00"), "BEFORE 1-Mar-2024", false),
            (base.clone().internal("2024-02-29T23:59:59+00:00"), "BEFORE 1-Mar-2024", true),
            (base.clone().internal("2024-03-01T00:00:00+00:00"), "SINCE 1-Mar-2024", true),
            (base.clone().internal("2024-02-29T23:59:59+00:00"), "SINCE 1-Mar-2024", false),
            (base.clone().internal("2024-03-01T00:30:00+14:00"), "SINCE 1-Mar-2024", true),
            (base.clone().internal("2024-02-29T23:30:00-12:00"), "BEFORE 1-Mar-2024", true),
            // SENTBEFORE / SENTON / SENTSINCE: the Date: header's day in its own zone
            // (23:30 -0500 on the 1st is the 2nd in UTC; it is still the 1st).
            (base.clone(), "SENTON 1-Mar-2024", true),
            (base.clone(), "SENTON 2-Mar-2024", false),
            (base.clone(), "SENTBEFORE 2-Mar-2024", true),
            (base.clone(), "SENTBEFORE 1-Mar-2024", false),
            (base.clone(), "SENTSINCE 1-Mar-2024", true),
            (base.clone(), "SENTSINCE 2-Mar-2024", false),
            (msg(MULTIPART), "SENTON 2-Mar-2024", true),
            (msg(MULTIPART), "SENTON 1-Mar-2024", false),
            // No Date: or an invalid one: the internal date stands in.
            (msg(NO_DATE).internal("2023-07-04T10:00:00+00:00"), "SENTON 4-Jul-2023", true),
            (msg(NO_DATE).internal("2023-07-04T10:00:00+00:00"), "SENTBEFORE 4-Jul-2023", false),
            (msg(BAD_DATE).internal("2023-07-04T23:00:00-02:00"), "SENTON 4-Jul-2023", true),
            (msg(BAD_DATE).internal("2023-07-04T23:00:00-02:00"), "SENTSINCE 5-Jul-2023", false),
            // FROM / TO / CC / BCC: display names and addresses, decoded.
            (base.clone(), "FROM alice", true),
            (base.clone(), "FROM \"alice smith\"", true),
            (base.clone(), "FROM \"Alice Smith <alice@example.com>\"", true),
            (base.clone(), "FROM EXAMPLE.COM", true),
            (base.clone(), "FROM bob", false),
            (base.clone(), "TO bob@example.org", true),
            (base.clone(), "TO renee@example.net", true),
            (base.clone(), "TO carol", false),
            (base.clone(), "CC Carol", true),
            (base.clone(), "CC carol@example.com", true),
            (base.clone(), "CC alice", false),
            (base.clone(), "BCC dave", true),
            (base.clone(), "BCC alice", false),
            (msg(NO_DATE), "CC x", false),
            (msg(GROUP), "TO friends", true),
            (msg(GROUP), "TO ann@example.com", true),
            (msg(GROUP), "TO \"ben <ben@\"", true),
            // SUBJECT: decoded encoded words.
            (base.clone(), "SUBJECT wörld", true),
            (base.clone(), "SUBJECT \"héllo wörld and\"", true),
            (base.clone(), "SUBJECT SMOpbGxv", false),
            (base.clone(), "SUBJECT missing", false),
            (base.clone(), "SUBJECT \"\"", true),
            (msg(HEADERLESS), "SUBJECT \"\"", false),
            // HEADER: any field, decoded; the empty string asks only for presence.
            (base.clone(), "HEADER X-Priority highest", true),
            (base.clone(), "HEADER x-priority \"1 (\"", true),
            (base.clone(), "HEADER X-Priority lowest", false),
            (base.clone(), "HEADER X-Empty \"\"", true),
            (base.clone(), "HEADER X-Absent \"\"", false),
            (base.clone(), "HEADER Message-ID \"<1@example\"", true),
            (base.clone(), "HEADER To renée", true),
            (base.clone(), "HEADER Subject wörld", true),
            // BODY: decoded text parts only.
            (base.clone(), "BODY \"QUICK brown\"", true),
            (base.clone(), "BODY alice", false),
            (msg(MULTIPART), "BODY \"schöne grüße\"", true),
            (msg(MULTIPART), "BODY berlin", true),
            (msg(MULTIPART), "BODY U2Now7Zu", false),
            (msg(MULTIPART), "BODY \"café crème softbreak\"", true),
            (msg(MULTIPART), "BODY secretbinary", false),
            (msg(MULTIPART), "BODY preamble", false),
            (msg(MULTIPART), "BODY \"nested body\"", true),
            (msg(MULTIPART), "BODY \"inner über\"", true),
            (msg(MULTIPART), "BODY zed", false),
            (msg(HEADERLESS), "BODY \"without a header\"", true),
            // TEXT: header and body.
            (base.clone(), "TEXT fox", true),
            (base.clone(), "TEXT alice@example.com", true),
            (base.clone(), "TEXT \"héllo wörld\"", true),
            (base.clone(), "TEXT \"hello world\"", false),
            (base.clone(), "TEXT x-priority", true),
            (base.clone(), "TEXT zebra", false),
            (msg(MULTIPART), "TEXT zed", true),
            (msg(MULTIPART), "TEXT grüße", true),
            // NOT, OR, parenthesised lists, nesting.
            (base.clone(), "NOT SEEN", true),
            (base.clone().flags(seen, &[]), "NOT SEEN", false),
            (base.clone(), "NOT NOT FROM alice", true),
            (base.clone(), "OR SEEN FROM alice", true),
            (base.clone(), "OR SEEN FROM bob", false),
            (base.clone().flags(seen, &[]), "OR SEEN FROM bob", true),
            (base.clone(), "(FROM alice SUBJECT wörld)", true),
            (base.clone(), "(FROM alice SUBJECT nope)", false),
            (base.clone(), "OR (FROM bob) (SUBJECT wörld LARGER 10)", true),
            (base.clone(), "NOT (FROM alice OR SEEN DRAFT)", true),
            (base.clone(), "NOT (FROM alice OR SEEN UNDRAFT)", false),
            (base.clone(), "OR NOT BODY fox OR SEEN (UID 30 NOT 4)", true),
            (base.clone(), "OR NOT BODY fox OR SEEN (UID 30 NOT 3)", false),
            (base.clone(), "((((FROM alice))))", true),
            // CHARSET.
            (base.clone(), "CHARSET UTF-8 SUBJECT wörld", true),
            (base.clone(), "CHARSET us-ascii FROM alice", true),
        ];
        let mut failures = Vec::new();
        for (m, keys, expected) in &cases {
            if m.matches(keys) != *expected {
                failures.push(format!("{keys} on uid {}: expected {expected}", m.uid));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn literal_needles_are_utf8() {
        let line = "a SEARCH CHARSET UTF-8 SUBJECT {6}\r\nWörld\r\n";
        let (rest, command) = CommandCodec::default()
            .decode_static(line.as_bytes())
            .unwrap();
        assert!(rest.is_empty());
        let CommandBody::Search { criteria, .. } = command.body else {
            panic!()
        };
        let q = Query::compile_all(criteria.as_ref()).unwrap();
        let m = msg(PLAIN);
        let meta = m.meta();
        let ctx = MessageContext::new(1, 1, &m.flags, false, LAST)
            .with_meta(&meta)
            .with_content(PLAIN);
        assert!(matches(&q, &ctx));
    }

    #[test]
    fn charsets() {
        for ok in [
            "",
            "CHARSET UTF-8 ",
            "CHARSET utf-8 ",
            "CHARSET US-ASCII ",
            "CHARSET \"us-ascii\" ",
        ] {
            let (charset, _) = parse(&format!("{ok}ALL"));
            assert!(check_charset(charset.as_ref()).is_ok(), "{ok}");
        }
        let (charset, _) = parse("CHARSET ISO-8859-1 ALL");
        let err = check_charset(charset.as_ref()).unwrap_err();
        assert_eq!(
            crate::imap::error::status_line("a", &err),
            "a NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset ISO-8859-1.\r\n"
        );
    }

    #[test]
    fn invalid_utf8_needle_is_bad() {
        let line = b"a SEARCH BODY {2}\r\n\xff\xfe\r\n";
        let (_, command) = CommandCodec::default().decode_static(line).unwrap();
        let CommandBody::Search { criteria, .. } = command.body else {
            panic!()
        };
        assert!(matches!(
            Query::compile_all(criteria.as_ref()),
            Err(CmdError::Bad(_))
        ));
    }

    #[test]
    fn tiers_decide_without_loading_what_is_not_needed() {
        let flags = Flags {
            system: SystemFlags(SystemFlags::SEEN),
            keywords: vec![],
        };
        let view_only = MessageContext::new(1, 1, &flags, false, LAST);
        // Decided by the view alone.
        assert_eq!(decide(&query("UNSEEN BODY fox"), &view_only), Some(false));
        assert_eq!(decide(&query("OR SEEN BODY fox"), &view_only), Some(true));
        assert_eq!(decide(&query("NOT (SEEN 1)"), &view_only), Some(false));
        assert_eq!(decide(&query("ALL"), &view_only), Some(true));
        // Needs the row, then the content.
        assert_eq!(decide(&query("LARGER 5"), &view_only), None);
        assert_eq!(decide(&query("SEEN BODY fox"), &view_only), None);
        assert_eq!(
            decide(&query("OR UNSEEN SENTON 1-Mar-2024"), &view_only),
            None
        );
        let m = msg(PLAIN).size(3);
        let meta = m.meta();
        let with_row = MessageContext::new(1, 1, &flags, false, LAST).with_meta(&meta);
        assert_eq!(decide(&query("LARGER 5 BODY fox"), &with_row), Some(false));
        assert_eq!(decide(&query("SMALLER 5 BODY fox"), &with_row), None);
        assert_eq!(
            decide(&query("SINCE 1-Jan-2024 SUBJECT x"), &with_row),
            None
        );
        let full = with_row.with_content(PLAIN);
        assert_eq!(decide(&query("SMALLER 5 BODY fox"), &full), Some(true));
        // matches() on a context lacking a tier: the key does not match.
        assert!(!matches(
            &query("BODY fox"),
            &MessageContext::new(1, 1, &flags, false, LAST)
        ));
    }

    #[test]
    fn header_keys_parse_only_the_header() {
        let m = msg(MULTIPART);
        let meta = m.meta();
        let ctx = MessageContext::new(1, 1, &m.flags, false, LAST)
            .with_meta(&meta)
            .with_content(MULTIPART);
        assert!(matches(
            &query("FROM zed SUBJECT parts SENTON 2-Mar-2024"),
            &ctx
        ));
        let content = ctx.content.as_ref().unwrap();
        assert!(content.full.get().is_none(), "header keys parsed the body");
        assert!(matches(&query("BODY berlin"), &ctx));
        assert!(content.full.get().is_some());
    }

    #[test]
    fn cheap_operands_first() {
        let q = query("BODY x FROM y LARGER 3 SEEN");
        let Query::And(parts) = q else {
            panic!("{q:?}")
        };
        let costs: Vec<Cost> = parts.iter().map(Query::cost).collect();
        assert_eq!(
            costs,
            vec![Cost::View, Cost::Row, Cost::Headers, Cost::Content]
        );
        let Query::Or(a, _) = query("OR BODY x SEEN") else {
            panic!()
        };
        assert_eq!(*a, Query::Flag(SystemFlags::SEEN));
    }

    /// Messages of a fake mailbox, counting what the search loads.
    struct Fake {
        rows: Vec<(MessageMeta, &'static [u8])>,
        row_reads: Cell<usize>,
        blob_reads: RefCell<Vec<String>>,
    }

    impl Fake {
        fn new(msgs: &[Msg]) -> Self {
            let rows = msgs
                .iter()
                .map(|m| {
                    let mut meta = m.meta();
                    meta.blob = format!("blob{}", m.uid);
                    (meta, m.raw)
                })
                .collect();
            Fake {
                rows,
                row_reads: Cell::new(0),
                blob_reads: RefCell::new(Vec::new()),
            }
        }

        fn view(&self, recent_from: u32) -> MailboxView {
            let mailbox = cpmstore_storage::Mailbox {
                id: MailboxId(1),
                account: AccountId(1),
                name: "INBOX".into(),
                uidvalidity: 1,
                uidnext: 1000,
                highestmodseq: 1,
                special_use: None,
                subscribed: true,
            };
            let metas = self.rows.iter().map(|(m, _)| m.clone()).collect();
            MailboxView::new(mailbox, false, metas, recent_from..u32::MAX, vec![])
        }

        fn blobs_read(&self) -> Vec<String> {
            self.blob_reads.borrow().clone()
        }
    }

    impl Source for Fake {
        async fn rows(&self, uids: &[u32]) -> CmdResult<Vec<MessageMeta>> {
            self.row_reads.set(self.row_reads.get() + uids.len());
            Ok(self
                .rows
                .iter()
                .filter(|(m, _)| uids.contains(&m.uid))
                .map(|(m, _)| m.clone())
                .collect())
        }

        async fn indexed(&self, name: &str, needle: &str) -> CmdResult<Vec<u32>> {
            // What the store's index holds for these messages.
            Ok(self
                .rows
                .iter()
                .filter(|(_, raw)| {
                    cpmstore_storage::cpm::indexed_headers(raw)
                        .iter()
                        .any(|(n, v)| {
                            *n == name
                                && v.to_ascii_lowercase()
                                    .contains(&needle.to_ascii_lowercase())
                        })
                })
                .map(|(m, _)| m.uid)
                .collect())
        }

        async fn expunged_since(&self, _since: u64) -> CmdResult<Vec<u32>> {
            // The fake keeps no tombstones: what a view still shows and the fake lacks
            // was expunged.
            Ok((1..2000)
                .filter(|u| !self.rows.iter().any(|(m, _)| m.uid == *u))
                .collect())
        }

        async fn blob(&self, hash: &str) -> Result<Vec<u8>, StoreError> {
            self.blob_reads.borrow_mut().push(hash.to_string());
            match hash {
                "blob666" => Err(StoreError::Database("broken".into())),
                "collected" => Err(StoreError::NotFound(hash.into())),
                _ => self
                    .rows
                    .iter()
                    .find(|(m, _)| m.blob == hash)
                    .map(|(_, raw)| raw.to_vec())
                    .ok_or_else(|| StoreError::NotFound(hash.into())),
            }
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn mailbox() -> Vec<Msg> {
        vec![
            msg(PLAIN).at(1, 4).flags(SystemFlags::SEEN, &[]).size(50),
            msg(MULTIPART).at(2, 7).size(5000),
            msg(NO_DATE)
                .at(3, 9)
                .flags(SystemFlags::SEEN, &["Work"])
                .size(200),
            msg(GROUP).at(4, 12).size(10),
        ]
    }

    #[test]
    fn command_loads_only_what_keys_need() {
        let fake = Fake::new(&mailbox());
        let view = fake.view(12);
        let run = |keys: &str| block_on(run(&fake, &view, &query(keys))).unwrap();

        assert_eq!(run("ALL"), vec![(1, 4), (2, 7), (3, 9), (4, 12)]);
        assert_eq!(run("SEEN KEYWORD work"), vec![(3, 9)]);
        assert_eq!(run("RECENT"), vec![(4, 12)]);
        assert_eq!(run("UID 7:* 1:3"), vec![(2, 7), (3, 9)]);
        assert_eq!(run("5:*"), vec![(4, 12)]);
        assert_eq!(fake.row_reads.get(), 0, "flag and number keys read no rows");

        assert_eq!(run("LARGER 100"), vec![(2, 7), (3, 9)]);
        assert_eq!(fake.row_reads.get(), 4);
        assert!(fake.blobs_read().is_empty());

        // Only the seen messages' content is loaded, and only those the size allows.
        assert_eq!(run("SEEN LARGER 100 BODY \"no date\""), vec![(3, 9)]);
        assert_eq!(fake.blobs_read(), vec!["blob9"]);
        assert_eq!(run("OR UNSEEN TEXT alice"), vec![(1, 4), (2, 7), (4, 12)]);
        assert_eq!(fake.blobs_read(), vec!["blob9", "blob4", "blob9"]);
        assert_eq!(run("NOT FROM alice"), vec![(2, 7), (3, 9), (4, 12)]);
    }

    #[test]
    fn pending_expunges_keep_their_numbers() {
        let fake = Fake::new(&mailbox());
        let mut view = fake.view(100);
        let mut out = Vec::new();
        let changes = cpmstore_storage::MailboxChanges {
            highestmodseq: 2,
            uidnext: 1000,
            changed: vec![],
            expunged: vec![7],
        };
        view.apply(
            changes,
            false,
            crate::imap::mailbox_view::Report::default(),
            &mut out,
        );
        // The store no longer has uid 7; the client still knows it as message 2.
        let fake = Fake {
            rows: fake.rows.into_iter().filter(|(m, _)| m.uid != 7).collect(),
            ..Fake::new(&[])
        };
        let run = |keys: &str| block_on(run(&fake, &view, &query(keys))).unwrap();
        assert_eq!(run("UNSEEN"), vec![(2, 7), (4, 12)]);
        assert_eq!(run("2:3"), vec![(2, 7), (3, 9)]);
        assert_eq!(run("UNSEEN LARGER 1"), vec![(4, 12)]);
        assert_eq!(run("NOT BODY zzz"), vec![(1, 4), (3, 9), (4, 12)]);
    }

    #[test]
    fn missing_blobs_do_not_match_and_failures_are_errors() {
        let mut msgs = mailbox();
        msgs.push(msg(PLAIN).at(5, 666));
        let fake = Fake::new(&msgs);
        let view = fake.view(100);
        let gone = Fake {
            rows: fake
                .rows
                .iter()
                .map(|(m, raw)| {
                    let mut m = m.clone();
                    if m.uid == 4 {
                        m.blob = "collected".into();
                    }
                    (m, *raw)
                })
                .collect(),
            ..Fake::new(&[])
        };
        let hits = block_on(run(&gone, &view, &query("1:4 BODY fox"))).unwrap();
        assert!(hits.is_empty());
        let err = block_on(run(&fake, &view, &query("BODY fox"))).unwrap_err();
        assert!(matches!(err, CmdError::Store(StoreError::Database(_))));
    }

    /// The command's future must be `Send` to run on the multi-threaded runtime.
    fn search_is_send<S: SessionStream>(
        c: &mut Connection<S>,
        login: &mut Login,
        selected: &mut Selected,
        criteria: Vec1<SearchKey<'static>>,
    ) {
        fn send<T: Send>(_: T) {}
        send(search(c, login, selected, None, criteria, false));
    }

    #[test]
    fn command_future_is_send() {
        let _checked: fn(
            &mut Connection<tokio::io::DuplexStream>,
            &mut Login,
            &mut Selected,
            Vec1<SearchKey<'static>>,
        ) = search_is_send;
    }

    #[test]
    fn response_line() {
        use imap_codec::ResponseCodec;
        use imap_codec::encode::Encoder;
        use imap_codec::imap_types::response::Response;
        let line = |numbers: &[u32], highest| {
            let data = Response::Data(search_response(numbers, highest));
            ResponseCodec::default().encode(&data).dump()
        };
        assert_eq!(line(&[], None), b"* SEARCH\r\n");
        assert_eq!(line(&[2, 5, 7], None), b"* SEARCH 2 5 7\r\n");
        assert_eq!(line(&[2, 5], Some(917)), b"* SEARCH 2 5 (MODSEQ 917)\r\n");
    }

    #[test]
    fn modseq_key() {
        // The entry-name form is the plain one (one MODSEQ per message).
        assert_eq!(query("MODSEQ 7"), Query::ModSeq(7));
        assert_eq!(query("MODSEQ \"/flags/\\\\seen\" all 7"), Query::ModSeq(7));
        assert!(query("OR MODSEQ 7 SEEN").uses_modseq());
        assert!(!query("SEEN").uses_modseq());
        let flags = Flags::default();
        let ctx = |m: Option<u64>| MessageContext::new(1, 1, &flags, false, LAST).with_modseq(m);
        let q = query("MODSEQ 7");
        assert_eq!(decide(&q, &ctx(Some(7))), Some(true));
        assert_eq!(decide(&q, &ctx(Some(6))), Some(false));
        assert_eq!(decide(&q, &ctx(None)), None);
        let mut meta = msg(PLAIN).meta();
        meta.modseq = 9;
        assert_eq!(decide(&q, &ctx(None).with_meta(&meta)), Some(true));
    }

    #[test]
    fn zone_offsets_out_of_range_fall_back_to_utc() {
        let flags = Flags::default();
        let mut meta = msg(PLAIN).meta();
        meta.internal_date = 1_709_337_600; // 2024-03-02T00:00:00Z
        meta.internal_date_tz = 100_000;
        let ctx = MessageContext::new(1, 1, &flags, false, LAST).with_meta(&meta);
        assert!(matches(&query("ON 2-Mar-2024"), &ctx));
        meta.internal_date = i64::MAX;
        let ctx = MessageContext::new(1, 1, &flags, false, LAST).with_meta(&meta);
        assert!(!matches(&query("ON 2-Mar-2024"), &ctx));
        assert!(matches(&query("NOT ON 2-Mar-2024"), &ctx));
    }
    /// Messages with CPM headers of every shape the index and the scan could read
    /// differently: folded lines, LIKE's special characters, non-ASCII, an encoded word,
    /// two values of one header, none at all.
    const CPM_MESSAGES: &[&str] = &[
        "Conversation-ID: F3C1-aaa\r\nContribution-ID: s1\r\nIMDN-Message-ID: Xk2mQ7rT0a9LpZ3c\r\n\r\nIMDN-Message-ID: body\r\n",
        "Conversation-ID: f3c1-aaa\r\nIMDN-Message-ID: abc_%\\x\r\n\r\nx\r\n",
        "IMDN-Message-ID: long\r\n part\r\nInReplyTo-Contribution-ID: s1\r\n\r\nx\r\n",
        "imdn-message-id: \u{c4}\u{d6}x\r\nContribution-ID: S1\r\nContribution-ID: s2\r\n\r\nx\r\n",
        "Subject: plain\r\n\r\nConversation-ID: f3c1\r\n",
        "IMDN-Message-ID: =?utf-8?q?enc?=\r\nIMDN-Message-ID:\r\n\r\nx\r\n",
    ];

    /// The index path gives exactly what reading every message gives, for every CPM
    /// name, through the real store: equal, prefix, infix, case, LIKE wildcards,
    /// non-ASCII, whole and partial values, in combination with other keys; and the
    /// common search reads no content at all.
    #[tokio::test]
    async fn index_and_scan_agree() {
        let (_dir, h) = crate::imap::testing::harness().await;
        let store = h.ctx().store.clone();
        let account = h.account().id;
        let mailbox = store
            .create_mailbox(
                account,
                cpmstore_storage::NewMailbox {
                    name: "RCSMessageStore/f3c1-aaa".into(),
                    special_use: None,
                    subscribed: false,
                },
            )
            .await
            .unwrap();
        for raw in CPM_MESSAGES {
            store
                .append(
                    account,
                    mailbox.id,
                    cpmstore_storage::NewMessage {
                        content: raw.as_bytes().to_vec(),
                        flags: Flags::default(),
                        internal_date: None,
                        internal_date_tz: 0,
                    },
                )
                .await
                .unwrap();
        }
        let metas: Vec<MessageMeta> = futures::TryStreamExt::try_collect(store.fetch(
            account,
            mailbox.id,
            &[cpmstore_storage::UidRange::all()],
        ))
        .await
        .unwrap();
        let mb = store
            .mailbox(account, "RCSMessageStore/f3c1-aaa")
            .await
            .unwrap();
        let view = MailboxView::new(mb, false, metas, 0..0, vec![]);
        let source = StoreSource {
            store: store.as_ref(),
            account,
            mailbox: mailbox.id,
        };
        let needles = [
            "Xk2mQ7rT0a9LpZ3c",
            "xk2m",
            "0A9l",
            "3c",
            "c",
            "_",
            "%",
            "_%",
            "\\\\",
            "abc_%\\\\x",
            "long part",
            "long",
            "part",
            "\u{e4}",
            "\u{c4}\u{d6}X",
            "x",
            "=?",
            "enc",
            "s1",
            "S",
            "s2",
            "f3c1",
            "F3C1-AAA",
            "f3c1-aaa-",
            "zzz",
            "a",
            "-",
            " ",
        ];
        let names = [
            "Conversation-ID",
            "contribution-id",
            "InReplyTo-Contribution-ID",
            "IMDN-Message-ID",
        ];
        let mut found_any = 0;
        for name in names {
            for needle in needles {
                for keys in [
                    format!("HEADER {name} \"{needle}\""),
                    format!("NOT HEADER {name} \"{needle}\""),
                    format!("OR HEADER {name} \"{needle}\" UID 2"),
                    format!("HEADER {name} \"{needle}\" HEADER IMDN-Message-ID x"),
                ] {
                    let compiled = query(&keys);
                    let scanned = run(&source, &view, &compiled).await.unwrap();
                    let indexed = resolve_index(&source, &view, compiled).await.unwrap();
                    assert!(
                        matches!(
                            &indexed,
                            Query::Indexed { .. } | Query::Not(_) | Query::Or(..) | Query::And(_)
                        ),
                        "{keys}: {indexed:?}"
                    );
                    let answered = run(&source, &view, &indexed).await.unwrap();
                    assert_eq!(answered, scanned, "{keys}");
                    found_any += usize::from(!answered.is_empty());
                }
            }
        }
        assert!(found_any > 50, "the needles find something: {found_any}");
        // Spot checks of what the definition gives.
        let uids = |keys: &str| {
            let q = query(keys);
            let source = &source;
            let view = &view;
            async move {
                let q = resolve_index(source, view, q).await.unwrap();
                run(source, view, &q)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(_, uid)| uid)
                    .collect::<Vec<u32>>()
            }
        };
        assert_eq!(
            uids("HEADER IMDN-Message-ID xk2mq7rt0a9lpzc3c").await,
            Vec::<u32>::new()
        );
        assert_eq!(
            uids("HEADER IMDN-Message-ID XK2MQ7RT0A9LPZ3C").await,
            vec![1]
        );
        assert_eq!(uids("HEADER IMDN-Message-ID 9lpz").await, vec![1]);
        assert_eq!(uids("HEADER IMDN-Message-ID \"_%\"").await, vec![2]);
        assert_eq!(uids("HEADER IMDN-Message-ID \"long part\"").await, vec![3]);
        assert_eq!(uids("HEADER Contribution-ID s2").await, vec![4]);
        assert_eq!(uids("HEADER Conversation-ID f3c1").await, vec![1, 2]);
        assert_eq!(uids("HEADER IMDN-Message-ID body").await, Vec::<u32>::new());
        // Not decoded: CPM ids are tokens.
        assert_eq!(
            uids("HEADER IMDN-Message-ID \"=?utf-8?q?enc\"").await,
            vec![6]
        );
        // The empty string: every message with the header (the ordinary scan), the
        // empty one included.
        assert_eq!(
            uids("HEADER IMDN-Message-ID \"\"").await,
            vec![1, 2, 3, 4, 6]
        );

        // Another session expunges message 1; this view still shows it (and no longer
        // the index): it is searched from its kept content, as the scan does.
        store
            .store_flags(
                account,
                mailbox.id,
                &[cpmstore_storage::UidRange::one(1)],
                cpmstore_storage::FlagOp::Add,
                &Flags {
                    system: SystemFlags(SystemFlags::DELETED),
                    keywords: vec![],
                },
                None,
            )
            .await
            .unwrap();
        store.expunge(account, mailbox.id, None).await.unwrap();
        assert!(
            store
                .uids_by_header_containing(account, mailbox.id, "IMDN-Message-ID", "xk2m")
                .await
                .unwrap()
                .is_empty()
        );
        for keys in [
            "HEADER IMDN-Message-ID xk2m",
            "NOT HEADER IMDN-Message-ID xk2m",
        ] {
            let scanned = run(&source, &view, &query(keys)).await.unwrap();
            let indexed = resolve_index(&source, &view, query(keys)).await.unwrap();
            assert_eq!(
                run(&source, &view, &indexed).await.unwrap(),
                scanned,
                "{keys}"
            );
        }
        assert_eq!(uids("HEADER IMDN-Message-ID xk2m").await, vec![1]);
    }
}

#[cfg(test)]
mod table_tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn search_and_uid_search() {
        table(
            Start::Selected { read_only: false },
            &[(
                &[
                    "a SEARCH ALL",
                    "b UID SEARCH 2:*",
                    "c SEARCH CHARSET KOI8-R ALL",
                    "d SEARCH MODSEQ 1",
                ],
                &[
                    "* SEARCH 1 2 3",
                    "a OK Search completed.",
                    "* SEARCH 2 3",
                    "b OK Search completed.",
                    "c NO [BADCHARSET (UTF-8 US-ASCII)]...",
                    "* OK [HIGHESTMODSEQ ...",
                    "* SEARCH 1 2 3 (MODSEQ ...",
                    "d OK Search completed.",
                ],
            )],
        )
        .await;
    }
}
