//! FETCH and UID FETCH (RFC 3501 6.4.5 and 7.4.2).
//!
//! Messages are read from the store a chunk at a time and each one's response is
//! written, then flushed when the buffer is large, so a FETCH over a whole mailbox
//! never holds more than one message body. A message's content is loaded only when an
//! item needs it. `BODY[...]`, `RFC822` and `RFC822.TEXT` set `\Seen` (once, for the
//! whole command, before any data goes out) on a read-write mailbox; a message whose
//! flags this changed gets a FLAGS item even if none was asked, as Dovecot does.
//!
//! CONDSTORE (RFC 7162 3.1): the `MODSEQ` item and the `(CHANGEDSINCE n)` modifier both
//! enable it; once enabled, FLAGS brings MODSEQ along (as in Dovecot), and a message
//! whose flags this FETCH changed is answered with its UID and MODSEQ too.
//!
//! QRESYNC (RFC 7162 3.2.6): `UID FETCH set items (CHANGEDSINCE n VANISHED)` first
//! says `VANISHED (EARLIER)` with the UIDs of the set expunged since `n`. VANISHED
//! is BAD without QRESYNC enabled, without CHANGEDSINCE, or on a FETCH by sequence
//! number.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;

use cpmstore_storage::{FlagOp, Flags, MessageMeta, SystemFlags};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Part, Section,
};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::sequence::SequenceSet;

use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::{MailboxView, read_rows, to_ranges, uid_set_ranges};
use crate::imap::mime::{self, Message};
use crate::imap::response::{self, flags_item, modseq_item, string, uid_sequence_set};
use crate::imap::state::{Login, Selected};

/// Messages asked of the store per round trip.
const CHUNK: usize = 256;

/// The most content bytes read from the store in one round trip (a larger message is
/// read alone).
const CONTENT_BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// How many of `metas` (at least one) have their contents read together: up to
/// [`CONTENT_BATCH_BYTES`] by their sizes.
fn content_batch(metas: &[MessageMeta]) -> usize {
    let mut bytes = 0u64;
    let mut n = 0;
    for meta in metas {
        bytes = bytes.saturating_add(meta.size);
        if n > 0 && bytes > CONTENT_BATCH_BYTES {
            break;
        }
        n += 1;
    }
    n
}

/// Runs FETCH (`uid` false) or UID FETCH.
pub async fn fetch<S: SessionStream>(
    s: &mut Connection<S>,
    login: &mut Login,
    selected: &mut Selected,
    sequence_set: &SequenceSet,
    names: MacroOrMessageDataItemNames<'static>,
    uid: bool,
    modifiers: &[FetchModifier],
) -> CmdResult {
    let mut changed_since = None;
    let mut vanished = false;
    for modifier in modifiers {
        match modifier {
            FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
            FetchModifier::Vanished => vanished = true,
        }
    }
    if vanished {
        if !login.qresync {
            return Err(CmdError::bad(
                "VANISHED needs QRESYNC, which is not enabled.",
            ));
        }
        if !uid {
            return Err(CmdError::bad("VANISHED is only valid with UID FETCH."));
        }
    }
    let mut request = Request::new(names, uid)?;
    if let (true, Some(since)) = (vanished, changed_since) {
        vanished_earlier(s, &selected.view, sequence_set, since).await?;
    } else if vanished {
        return Err(CmdError::bad("VANISHED needs CHANGEDSINCE."));
    }
    if changed_since.is_some() || request.items.contains(&Item::ModSeq) {
        // A CONDSTORE-enabling command (RFC 7162 3.1).
        login.enable_condstore(Some(&selected.view), &mut s.out);
    }
    if changed_since.is_some() || (login.condstore && request.items.contains(&Item::Flags)) {
        request.add(Item::ModSeq);
    }
    let account = login.user.id;
    let condstore = login.condstore;
    if request.answerable_from_view() {
        return fetch_from_view(
            s,
            condstore,
            &selected.view,
            sequence_set,
            uid,
            &request,
            changed_since,
        )
        .await;
    }
    // Every message the client can see, those expunged meanwhile included: until the
    // client is told, it reads them as they were (RFC 3501 5.5; as Dovecot does).
    let (mailbox, read_only, uids) = {
        let view = &selected.view;
        let uids = changed_after(
            view,
            view.resolve(sequence_set, uid).map_err(CmdError::bad)?,
            changed_since,
        );
        (view.mailbox.id, view.read_only, uids)
    };
    let store = s.ctx.store.clone();

    let mut now_seen = HashSet::new();
    if request.sets_seen && !read_only {
        let view = &selected.view;
        let unseen: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|&u| {
                !view.is_expunged(u)
                    && view
                        .flags_of(u)
                        .is_some_and(|f| !f.system.contains(SystemFlags::SEEN))
            })
            .collect();
        if !unseen.is_empty() {
            let seen = Flags {
                system: SystemFlags(SystemFlags::SEEN),
                keywords: Vec::new(),
            };
            let changed = store
                .store_flags(
                    account,
                    mailbox,
                    &to_ranges(&unseen),
                    FlagOp::Add,
                    &seen,
                    None,
                )
                .await?;
            for meta in changed {
                now_seen.insert(meta.uid);
                selected.view.set_flags(meta.uid, meta.flags, meta.modseq);
            }
        }
    }

    let mut missing = false;
    for chunk in uids.chunks(CHUNK) {
        // Formatting is CPU work on the reactor: let other sessions run between chunks.
        tokio::task::yield_now().await;
        let metas = read_rows(store.as_ref(), account, mailbox, chunk).await?;
        // Expunged by someone else and its content since deleted.
        missing |= metas.len() < chunk.len();
        let mut rest = metas.as_slice();
        while !rest.is_empty() {
            // The contents of a batch of messages in one round trip, within a byte budget.
            let n = if request.needs_content {
                content_batch(rest)
            } else {
                rest.len()
            };
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let contents: HashMap<String, Vec<u8>> = if request.needs_content {
                let hashes: Vec<&str> = batch.iter().map(|m| m.blob.as_str()).collect();
                store.blobs(account, &hashes).await?.into_iter().collect()
            } else {
                HashMap::new()
            };
            for meta in batch {
                let view = &selected.view;
                let known = (|| {
                    Some((
                        view.seq_of(meta.uid)?,
                        view.flags_of(meta.uid)?.clone(),
                        view.is_recent(meta.uid),
                        view.modseq_of(meta.uid)?,
                    ))
                })();
                let Some((seq, flags, recent, modseq)) = known else {
                    continue;
                };
                let raw = if request.needs_content {
                    match contents.get(&meta.blob) {
                        Some(raw) => Some(raw.as_slice()),
                        // Expunged and deleted between the row and its content: one
                        // vanished message never cuts the answer short.
                        None => {
                            missing = true;
                            continue;
                        }
                    }
                } else {
                    None
                };
                let status = Status {
                    seq,
                    flags: &flags,
                    recent,
                    modseq,
                    flags_changed: now_seen.contains(&meta.uid),
                    condstore,
                };
                let mut spliced = Vec::new();
                request.write(&mut s.out, &mut spliced, meta, &status, raw);
                write_spliced(s, spliced).await?;
            }
        }
    }

    if missing && !uid {
        // RFC 5530: the client asked by sequence number for messages that are gone.
        return Err(CmdError::no_code(
            "EXPUNGEISSUED",
            "Some of the requested messages no longer exist.",
        ));
    }
    Ok(Done::text("Fetch completed."))
}

/// `VANISHED (EARLIER)` for the UIDs of `set` expunged after `since`. A UID the view
/// still holds (expunged, but not yet told) is included: EARLIER does not change
/// the client's message count, and the VANISHED that removes it follows later.
async fn vanished_earlier<S: SessionStream>(
    s: &mut Connection<S>,
    view: &MailboxView,
    set: &SequenceSet,
    since: u64,
) -> CmdResult<()> {
    let (account, mailbox, ranges) = {
        let max = view.last_uid().max(view.mailbox.uidnext.saturating_sub(1));
        (
            view.mailbox.account,
            view.mailbox.id,
            uid_set_ranges(set, max),
        )
    };
    let gone = s
        .ctx
        .store
        .expunged_since(account, mailbox, since, Some(&ranges))
        .await?;
    if let Some(known_uids) = uid_sequence_set(&gone) {
        s.data(Data::Vanished {
            earlier: true,
            known_uids,
        });
    }
    Ok(())
}

/// Answers a FETCH of UID and FLAGS alone from the mailbox view: they are what the
/// session already knows, so every message the client can see is answered, even one
/// another session has expunged meanwhile (as Dovecot answers them from its index).
async fn fetch_from_view<S: SessionStream>(
    s: &mut Connection<S>,
    condstore: bool,
    view: &MailboxView,
    sequence_set: &SequenceSet,
    uid: bool,
    request: &Request,
    changed_since: Option<u64>,
) -> CmdResult {
    let uids = changed_after(
        view,
        view.resolve(sequence_set, uid).map_err(CmdError::bad)?,
        changed_since,
    );
    for chunk in uids.chunks(CHUNK) {
        // Formatting is CPU work on the reactor: let other sessions run between chunks.
        tokio::task::yield_now().await;
        for &uid in chunk {
            if let (Some(seq), Some(flags), Some(modseq)) =
                (view.seq_of(uid), view.flags_of(uid), view.modseq_of(uid))
            {
                let status = Status {
                    seq,
                    flags,
                    recent: view.is_recent(uid),
                    modseq,
                    flags_changed: false,
                    condstore,
                };
                request.write(&mut s.out, &mut Vec::new(), &view_meta(uid), &status, None);
            }
        }
        s.maybe_flush().await?;
    }
    Ok(Done::text("Fetch completed."))
}

/// The UIDs whose MODSEQ (as the view knows it) is above `since`, all with `None`
/// (FETCH's CHANGEDSINCE modifier).
fn changed_after(view: &MailboxView, uids: Vec<u32>, since: Option<u64>) -> Vec<u32> {
    match since {
        None => uids,
        Some(since) => uids
            .into_iter()
            .filter(|&u| view.modseq_of(u).is_some_and(|m| m > since))
            .collect(),
    }
}

/// One data item asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Uid,
    Flags,
    InternalDate,
    Rfc822Size,
    Envelope,
    Body,
    BodyStructure,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    ModSeq,
    Section {
        section: Option<Section<'static>>,
        partial: Option<(u32, NonZeroU32)>,
    },
}

/// What a FETCH asks of every message.
#[derive(Debug)]
struct Request {
    /// In the order asked, UID first, without repeats.
    items: Vec<Item>,
    /// Whether the message content must be loaded.
    needs_content: bool,
    /// Whether fetching sets `\Seen`.
    sets_seen: bool,
}

/// What the session knows of a message when answering.
struct Status<'a> {
    seq: u32,
    flags: &'a Flags,
    recent: bool,
    modseq: u64,
    /// This command set `\Seen`: the client is told the new flags.
    flags_changed: bool,
    /// The session is CONDSTORE-aware: changed flags come with UID and MODSEQ.
    condstore: bool,
}

impl Request {
    fn new(names: MacroOrMessageDataItemNames<'static>, uid: bool) -> CmdResult<Self> {
        let names = match names {
            MacroOrMessageDataItemNames::Macro(m) => m
                .expand()
                .into_iter()
                .map(IntoStatic::into_static)
                .collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
        };
        // `FETCH 1 ()` would be answered `* 1 FETCH ()`, which the response grammar
        // does not allow (msg-att needs an item); found by the imap_session fuzzer.
        if names.is_empty() && !uid {
            return Err(CmdError::bad("FETCH needs at least one data item."));
        }
        let mut items = Vec::new();
        let mut sets_seen = false;
        if uid {
            items.push(Item::Uid);
        }
        for name in names {
            let item = match name {
                MessageDataItemName::Uid => Item::Uid,
                MessageDataItemName::Flags => Item::Flags,
                MessageDataItemName::InternalDate => Item::InternalDate,
                MessageDataItemName::Rfc822Size => Item::Rfc822Size,
                MessageDataItemName::Envelope => Item::Envelope,
                MessageDataItemName::Body => Item::Body,
                MessageDataItemName::BodyStructure => Item::BodyStructure,
                MessageDataItemName::Rfc822 => {
                    sets_seen = true;
                    Item::Rfc822
                }
                MessageDataItemName::Rfc822Header => Item::Rfc822Header,
                MessageDataItemName::Rfc822Text => {
                    sets_seen = true;
                    Item::Rfc822Text
                }
                MessageDataItemName::BodyExt {
                    section,
                    partial,
                    peek,
                } => {
                    sets_seen |= !peek;
                    Item::Section { section, partial }
                }
                MessageDataItemName::ModSeq => Item::ModSeq,
                // BINARY (RFC 3516): not advertised.
                _ => return Err(CmdError::bad("Unsupported FETCH item.")),
            };
            if item == Item::Uid {
                if !items.contains(&Item::Uid) {
                    items.insert(0, Item::Uid);
                }
            } else if !items.contains(&item) {
                items.push(item);
            }
        }
        let needs_content = items.iter().any(|item| {
            !matches!(
                item,
                Item::Uid | Item::Flags | Item::InternalDate | Item::Rfc822Size | Item::ModSeq
            )
        });
        Ok(Request {
            items,
            needs_content,
            sets_seen,
        })
    }

    /// Adds an item the client did not ask for (MODSEQ), unless it is there.
    fn add(&mut self, item: Item) {
        if !self.items.contains(&item) {
            self.items.push(item);
        }
    }

    /// Whether every item asked for is one the mailbox view holds (UID, FLAGS, MODSEQ).
    fn answerable_from_view(&self) -> bool {
        !self.sets_seen
            && self
                .items
                .iter()
                .all(|item| matches!(item, Item::Uid | Item::Flags | Item::ModSeq))
    }

    /// Appends one message's untagged FETCH response. `raw` is the message content,
    /// present when `needs_content`; it is parsed only if an item needs its structure.
    fn write<'a>(
        &self,
        out: &mut Vec<u8>,
        spliced: &mut Spliced<'a>,
        meta: &MessageMeta,
        status: &Status<'_>,
        raw: Option<&'a [u8]>,
    ) {
        let raw = raw.unwrap_or_default();
        let parsed = OnceCell::new();
        let message = || parsed.get_or_init(|| Message::parse(raw));
        let Some(seq) = NonZeroU32::new(status.seq) else {
            return;
        };
        let mut att = FetchItems::new(out, seq);
        for item in &self.items {
            match item {
                Item::Uid => {
                    if let Some(uid) = NonZeroU32::new(meta.uid) {
                        att.typed(MessageDataItem::Uid(uid));
                    }
                }
                Item::Flags => att.typed(flags_item(status.flags, status.recent)),
                Item::InternalDate => {
                    if let Some(date) = internal_date(meta.internal_date, meta.internal_date_tz) {
                        att.typed(MessageDataItem::InternalDate(date));
                    }
                }
                Item::Rfc822Size => match u32::try_from(meta.size) {
                    Ok(size) => att.typed(MessageDataItem::Rfc822Size(size)),
                    // Raw escape: imap-types' RFC822.SIZE is a u32 (RFC 3501's number);
                    // no message accepted under the literal limit is larger.
                    Err(_) => att
                        .raw()
                        .extend_from_slice(format!("RFC822.SIZE {}", meta.size).as_bytes()),
                },
                Item::ModSeq => att.typed_opt(modseq_item(status.modseq)),
                // Raw escape: ENVELOPE and BODY[STRUCTURE] are written by mime.rs
                // (no imap-types `Envelope`/`BodyStructure` is built there yet).
                Item::Envelope => {
                    let out = att.raw();
                    out.extend_from_slice(b"ENVELOPE ");
                    message().write_envelope(out);
                }
                Item::Body => {
                    let out = att.raw();
                    out.extend_from_slice(b"BODY ");
                    message().write_body_structure(out, false);
                }
                Item::BodyStructure => {
                    let out = att.raw();
                    out.extend_from_slice(b"BODYSTRUCTURE ");
                    message().write_body_structure(out, true);
                }
                // Raw escape for the literal items: their content is streamed from the
                // message as loaded (`Spliced`), never copied into an imap-types
                // `Literal` (which would hold a 50 MB message twice).
                Item::Rfc822 => {
                    let out = att.raw();
                    out.extend_from_slice(b"RFC822 ");
                    literal(out, spliced, Cow::Borrowed(raw));
                }
                Item::Rfc822Header => {
                    let out = att.raw();
                    out.extend_from_slice(b"RFC822.HEADER ");
                    literal(out, spliced, Cow::Borrowed(message().header()));
                }
                Item::Rfc822Text => {
                    let out = att.raw();
                    out.extend_from_slice(b"RFC822.TEXT ");
                    literal(out, spliced, Cow::Borrowed(message().text()));
                }
                Item::Section { section, partial } => {
                    let out = att.raw();
                    out.extend_from_slice(b"BODY[");
                    section_name(out, section.as_ref());
                    out.push(b']');
                    if let Some((origin, _)) = partial {
                        out.extend_from_slice(format!("<{origin}>").as_bytes());
                    }
                    out.push(b' ');
                    let text = match section {
                        None => Some(Cow::Borrowed(raw)),
                        Some(section) => message().section(Some(section)),
                    };
                    match text {
                        Some(text) => {
                            let text = match (partial, text) {
                                (None, text) => text,
                                (Some((origin, count)), Cow::Borrowed(text)) => {
                                    Cow::Borrowed(mime::partial(text, *origin, count.get()))
                                }
                                (Some((origin, count)), Cow::Owned(text)) => {
                                    Cow::Owned(mime::partial(&text, *origin, count.get()).to_vec())
                                }
                            };
                            literal(out, spliced, text)
                        }
                        None => out.extend_from_slice(b"NIL"),
                    }
                }
            }
        }
        if status.flags_changed && !self.items.contains(&Item::Flags) {
            att.typed(flags_item(status.flags, status.recent));
        }
        if status.flags_changed && status.condstore {
            if !self.items.contains(&Item::Uid)
                && let Some(uid) = NonZeroU32::new(meta.uid)
            {
                att.typed(MessageDataItem::Uid(uid));
            }
            if !self.items.contains(&Item::ModSeq) {
                att.typed_opt(modseq_item(status.modseq));
            }
        }
        att.finish();
    }
}

/// One FETCH response's items as they are written: runs of typed items are encoded by
/// imap-codec; the items it cannot carry (see [`Request::write`]) are raw pieces
/// between them. A response of typed items only is one `Data::Fetch`.
struct FetchItems<'o> {
    out: &'o mut Vec<u8>,
    seq: NonZeroU32,
    run: Vec<MessageDataItem<'static>>,
    /// Whether the frame is open (a raw piece was written).
    open: bool,
    /// Whether an item has been written after the open frame.
    any: bool,
}

impl<'o> FetchItems<'o> {
    fn new(out: &'o mut Vec<u8>, seq: NonZeroU32) -> Self {
        FetchItems {
            out,
            seq,
            run: Vec::new(),
            open: false,
            any: false,
        }
    }

    fn typed(&mut self, item: MessageDataItem<'static>) {
        self.run.push(item);
    }

    fn typed_opt(&mut self, item: Option<MessageDataItem<'static>>) {
        self.run.extend(item);
    }

    /// Where the next raw item is to be written (after its separator).
    fn raw(&mut self) -> &mut Vec<u8> {
        if !self.open {
            response::fetch_open(self.out, self.seq);
            self.open = true;
        }
        self.write_run();
        if self.any {
            self.out.push(b' ');
        }
        self.any = true;
        self.out
    }

    fn write_run(&mut self) {
        if self.run.is_empty() {
            return;
        }
        if self.any {
            self.out.push(b' ');
        }
        self.any = true;
        response::push_fetch_items(self.out, self.seq, std::mem::take(&mut self.run));
    }

    fn finish(mut self) {
        if !self.open {
            if let Ok(data) = Data::fetch(self.seq, std::mem::take(&mut self.run)) {
                response::push_data(self.out, data);
            }
            return;
        }
        self.write_run();
        response::fetch_close(self.out);
    }
}

/// The row of a message for [`Request::write`] when only view items (UID, FLAGS) are
/// asked: nothing but the UID is read from it.
fn view_meta(uid: u32) -> MessageMeta {
    MessageMeta {
        uid,
        modseq: 0,
        flags: Flags::default(),
        internal_date: 0,
        internal_date_tz: 0,
        size: 0,
        blob: String::new(),
    }
}

/// Literals too large to copy into the output buffer, each with the position in the
/// buffer where its bytes belong: they are written to the socket straight from the
/// message content, so a 50 MB message is held once (as loaded), not twice.
type Spliced<'a> = Vec<(usize, Cow<'a, [u8]>)>;

/// Literals at least this large are spliced rather than copied.
const SPLICE_AT: usize = 64 * 1024;

/// A literal. NUL may not appear in one; like Dovecot, it is sent as 0x80.
fn literal<'a>(out: &mut Vec<u8>, spliced: &mut Spliced<'a>, data: Cow<'a, [u8]>) {
    out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
    if data.len() >= SPLICE_AT {
        spliced.push((out.len(), data));
        return;
    }
    let start = out.len();
    out.extend_from_slice(&data);
    nul_to_0x80(&mut out[start..]);
}

fn nul_to_0x80(bytes: &mut [u8]) {
    for b in bytes {
        if *b == 0 {
            *b = 0x80;
        }
    }
}

/// Writes the output buffer with its spliced literals in place, a chunk at a time;
/// without splices, only flushes a full buffer.
async fn write_spliced<S: SessionStream>(
    s: &mut Connection<S>,
    spliced: Spliced<'_>,
) -> CmdResult<()> {
    if spliced.is_empty() {
        s.maybe_flush().await?;
        return Ok(());
    }
    let mut out = std::mem::take(&mut s.out);
    let mut chunk = Vec::with_capacity(SPLICE_AT);
    let mut at = 0;
    for (pos, data) in spliced {
        s.io.write_all(&out[at..pos]).await?;
        for piece in data.chunks(SPLICE_AT) {
            chunk.clear();
            chunk.extend_from_slice(piece);
            nul_to_0x80(&mut chunk);
            s.io.write_all(&chunk).await?;
        }
        at = pos;
    }
    out.drain(..at);
    s.out = out;
    s.maybe_flush().await?;
    Ok(())
}

/// The section as the client wrote it, for the response item name.
fn section_name(out: &mut Vec<u8>, section: Option<&Section<'_>>) {
    let Some(section) = section else { return };
    let prefix = |out: &mut Vec<u8>, part: &Option<Part>| {
        if let Some(part) = part {
            part_path(out, part);
            out.push(b'.');
        }
    };
    let fields = |out: &mut Vec<u8>, names: &[AString<'_>]| {
        out.extend_from_slice(b" (");
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            astring(out, name.as_ref());
        }
        out.push(b')');
    };
    match section {
        Section::Part(part) => part_path(out, part),
        Section::Header(part) => {
            prefix(out, part);
            out.extend_from_slice(b"HEADER");
        }
        Section::HeaderFields(part, names) => {
            prefix(out, part);
            out.extend_from_slice(b"HEADER.FIELDS");
            fields(out, names.as_ref());
        }
        Section::HeaderFieldsNot(part, names) => {
            prefix(out, part);
            out.extend_from_slice(b"HEADER.FIELDS.NOT");
            fields(out, names.as_ref());
        }
        Section::Text(part) => {
            prefix(out, part);
            out.extend_from_slice(b"TEXT");
        }
        Section::Mime(part) => {
            part_path(out, part);
            out.extend_from_slice(b".MIME");
        }
    }
}

fn part_path(out: &mut Vec<u8>, part: &Part) {
    let numbers: Vec<String> = part.0.as_ref().iter().map(|n| n.to_string()).collect();
    out.extend_from_slice(numbers.join(".").as_bytes());
}

/// An astring: an atom when it can be one (and holds no `]`, which would end the
/// section), else a string.
fn astring(out: &mut Vec<u8>, s: &[u8]) {
    let atom = !s.is_empty()
        && s.iter()
            .all(|&b| b > b' ' && b < 0x7f && !b"(){%*\"\\]".contains(&b));
    if atom {
        out.extend_from_slice(s);
    } else {
        string(out, s);
    }
}

/// The INTERNALDATE (`dd-Mon-yyyy hh:mm:ss +zzzz`) in the zone the message was received
/// in; `None` for a date IMAP cannot say (a year past 9999).
fn internal_date(unix_secs: i64, tz_minutes: i32) -> Option<DateTime> {
    let offset = chrono::FixedOffset::east_opt(tz_minutes.saturating_mul(60))
        .or_else(|| chrono::FixedOffset::east_opt(0))?;
    let utc = chrono::DateTime::from_timestamp(unix_secs, 0).unwrap_or_default();
    DateTime::try_from(utc.with_timezone(&offset)).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::{CommandCodec, ResponseCodec};

    use super::*;

    const MESSAGE: &str = "From: Alice <alice@example.com>\r\n\
        Subject: hello\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\
        \r\n\
        --b\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        one\r\n\
        --b\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        Subject: inner\r\n\
        \r\n\
        two\0\r\n\
        --b--\r\n";

    /// The request of `FETCH 1 <items>` (or UID FETCH).
    fn request(items: &str, uid: bool) -> CmdResult<Request> {
        let line = format!("a {}FETCH 1 {items}\r\n", if uid { "UID " } else { "" });
        let (_, command) = CommandCodec::default()
            .decode_static(line.as_bytes())
            .unwrap();
        let CommandBody::Fetch {
            macro_or_item_names,
            uid,
            ..
        } = command.body
        else {
            panic!("not a fetch: {line}");
        };
        Request::new(macro_or_item_names, uid)
    }

    fn meta() -> MessageMeta {
        MessageMeta {
            uid: 42,
            modseq: 7,
            flags: Flags::default(),
            internal_date: 837_596_665,
            internal_date_tz: -420,
            size: MESSAGE.len() as u64,
            blob: String::new(),
        }
    }

    /// The FETCH response for MESSAGE as message 3 with `\Seen`.
    fn response(items: &str, uid: bool, flags_changed: bool) -> Vec<u8> {
        let request = request(items, uid).unwrap();
        let flags = Flags {
            system: SystemFlags(SystemFlags::SEEN),
            keywords: vec!["$Forwarded".into()],
        };
        let status = Status {
            seq: 3,
            flags: &flags,
            recent: false,
            modseq: 42,
            flags_changed,
            condstore: false,
        };
        let mut out = Vec::new();
        request.write(
            &mut out,
            &mut Vec::new(),
            &meta(),
            &status,
            Some(MESSAGE.as_bytes()),
        );
        out
    }

    #[test]
    fn items_are_planned() {
        let cases: &[(&str, bool, &[Item], bool, bool)] = &[
            (
                "FAST",
                false,
                &[Item::Flags, Item::InternalDate, Item::Rfc822Size],
                false,
                false,
            ),
            (
                "ALL",
                false,
                &[
                    Item::Flags,
                    Item::InternalDate,
                    Item::Rfc822Size,
                    Item::Envelope,
                ],
                true,
                false,
            ),
            (
                "FULL",
                true,
                &[
                    Item::Uid,
                    Item::Flags,
                    Item::InternalDate,
                    Item::Rfc822Size,
                    Item::Envelope,
                    Item::Body,
                ],
                true,
                false,
            ),
            // UID FETCH always answers UID, first; repeats are dropped.
            (
                "(FLAGS UID FLAGS)",
                true,
                &[Item::Uid, Item::Flags],
                false,
                false,
            ),
            (
                "(FLAGS UID)",
                false,
                &[Item::Uid, Item::Flags],
                false,
                false,
            ),
            ("(RFC822.HEADER)", false, &[Item::Rfc822Header], true, false),
            ("(RFC822.TEXT)", false, &[Item::Rfc822Text], true, true),
            ("RFC822", false, &[Item::Rfc822], true, true),
            (
                "BODY.PEEK[]",
                false,
                &[Item::Section {
                    section: None,
                    partial: None,
                }],
                true,
                false,
            ),
            (
                "BODY[]",
                false,
                &[Item::Section {
                    section: None,
                    partial: None,
                }],
                true,
                true,
            ),
        ];
        for (items, uid, expected, content, seen) in cases {
            let request = request(items, *uid).unwrap();
            assert_eq!(request.items, *expected, "{items}");
            assert_eq!(request.needs_content, *content, "{items}");
            assert_eq!(request.sets_seen, *seen, "{items}");
        }
        assert!(matches!(
            request("BINARY.PEEK[1]", false),
            Err(CmdError::Bad(_))
        ));
    }

    #[test]
    fn responses() {
        let text = &MESSAGE[MESSAGE.find("\r\n\r\n").unwrap() + 4..];
        let cases: Vec<(&str, bool, bool, Vec<u8>)> = vec![
            (
                "(FLAGS INTERNALDATE RFC822.SIZE)",
                true,
                false,
                format!(
                    "* 3 FETCH (UID 42 FLAGS (\\Seen $Forwarded) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" \
                     RFC822.SIZE {})\r\n",
                    MESSAGE.len()
                )
                .into_bytes(),
            ),
            // The item names echo the request: the section as written, the origin.
            (
                "BODY.PEEK[HEADER.FIELDS (from \"X-Y\" \"a]\")]",
                false,
                false,
                b"* 3 FETCH (BODY[HEADER.FIELDS (from X-Y \"a]\")] {35}\r\nFrom: Alice <alice@example.com>\r\n\r\n)\r\n"
                    .to_vec(),
            ),
            ("BODY.PEEK[]<0.4>", false, false, b"* 3 FETCH (BODY[]<0> {4}\r\nFrom)\r\n".to_vec()),
            ("BODY.PEEK[1]<2.100>", false, false, b"* 3 FETCH (BODY[1]<2> {1}\r\ne)\r\n".to_vec()),
            ("BODY.PEEK[1]<10.4>", false, false, b"* 3 FETCH (BODY[1]<10> {0}\r\n)\r\n".to_vec()),
            // A part that does not exist is NIL.
            ("BODY.PEEK[3.MIME]", false, false, b"* 3 FETCH (BODY[3.MIME] NIL)\r\n".to_vec()),
            ("BODY.PEEK[2.HEADER]", false, false, b"* 3 FETCH (BODY[2.HEADER] {18}\r\nSubject: inner\r\n\r\n)\r\n".to_vec()),
            // NUL goes out as 0x80.
            ("BODY.PEEK[2.TEXT]", false, false, b"* 3 FETCH (BODY[2.TEXT] {4}\r\ntwo\x80)\r\n".to_vec()),
            // \Seen set by this command: FLAGS comes along, once.
            ("BODY[1]", false, true, b"* 3 FETCH (BODY[1] {3}\r\none FLAGS (\\Seen $Forwarded))\r\n".to_vec()),
            (
                "(FLAGS RFC822.TEXT)",
                false,
                true,
                [
                    format!("* 3 FETCH (FLAGS (\\Seen $Forwarded) RFC822.TEXT {{{}}}\r\n", text.len()).as_bytes(),
                    text.replace('\0', "\u{80}").as_bytes(),
                    b")\r\n",
                ]
                .concat(),
            ),
        ];
        for (items, uid, changed, expected) in cases {
            let mut expected = expected;
            // The fixture's NUL, after the \u{80} stand-in above became two UTF-8 bytes.
            if let Some(at) = expected.windows(2).position(|w| w == [0xc2, 0x80]) {
                expected.remove(at);
            }
            let got = response(items, uid, changed);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected),
                "{items}"
            );
            assert_eq!(got, expected, "{items}");
        }
    }

    #[test]
    fn nul_is_sent_as_0x80() {
        let mut out = Vec::new();
        let mut spliced = Vec::new();
        literal(&mut out, &mut spliced, Cow::Borrowed(b"a\0b"));
        assert_eq!(out, b"{3}\r\na\x80b");
        assert!(spliced.is_empty());
    }

    #[test]
    fn an_empty_item_list_is_bad_unless_uid_fetch() {
        let empty = || MacroOrMessageDataItemNames::MessageDataItemNames(Vec::new());
        assert!(matches!(
            Request::new(empty(), false),
            Err(CmdError::Bad(_))
        ));
        let request = Request::new(empty(), true).map_err(|_| ()).unwrap();
        assert_eq!(request.items, vec![Item::Uid]);
    }

    #[test]
    fn large_literals_are_spliced_not_copied() {
        let big = vec![b'x'; SPLICE_AT];
        let mut out = b"* 1 FETCH (RFC822 ".to_vec();
        let mut spliced = Vec::new();
        literal(&mut out, &mut spliced, Cow::Borrowed(&big));
        out.extend_from_slice(b")\r\n");
        assert_eq!(
            out,
            format!("* 1 FETCH (RFC822 {{{}}}\r\n)\r\n", big.len()).as_bytes()
        );
        assert_eq!(spliced.len(), 1);
        assert_eq!(
            spliced[0].0,
            out.len() - 3,
            "the literal goes before the ')'"
        );
        assert!(
            matches!(spliced[0].1, Cow::Borrowed(_)),
            "no copy of the message"
        );
    }

    /// Everything a FETCH can say must parse as IMAP.
    #[test]
    fn responses_parse_as_imap() {
        let items = "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE RFC822 RFC822.HEADER \
                     RFC822.TEXT BODY[] BODY[HEADER.FIELDS.NOT (Subject)]<1.5> BODY[2.1] BODY[9])";
        let line = response(items, true, false);
        let parsed = ResponseCodec::default().decode(&line);
        assert!(
            matches!(parsed, Ok(([], _))),
            "{parsed:?}\n{}",
            String::from_utf8_lossy(&line)
        );
    }

    #[test]
    fn internal_dates() {
        let cases: &[(i64, i32, &str)] = &[
            (837_596_665, -420, "17-Jul-1996 02:44:25 -0700"),
            (0, 0, "01-Jan-1970 00:00:00 +0000"),
            (1_700_000_000, 330, "15-Nov-2023 03:43:20 +0530"),
            // An offset out of range falls back to UTC.
            (0, 100_000, "01-Jan-1970 00:00:00 +0000"),
        ];
        for (secs, tz, expected) in cases {
            let date = internal_date(*secs, *tz).unwrap();
            assert_eq!(
                date.as_ref().format("%d-%b-%Y %H:%M:%S %z").to_string(),
                *expected
            );
        }
    }
}

#[cfg(test)]
mod table_tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn fetch_and_uid_fetch() {
        table(
            Start::Selected { read_only: true },
            &[(
                &[
                    "a FETCH 1:* (UID)",
                    "b UID FETCH 3 (UID RFC822.SIZE)",
                    "c FETCH 9 (UID)",
                    "d UID FETCH 1 (UID) (VANISHED)",
                ],
                &[
                    "* 1 FETCH (UID 1)",
                    "* 2 FETCH (UID 2)",
                    "* 3 FETCH (UID 3)",
                    "a OK Fetch completed.",
                    "* 3 FETCH (UID 3 RFC822.SIZE ...",
                    "b OK Fetch completed.",
                    "c BAD...",
                    "d BAD VANISHED needs QRESYNC, which is not enabled.",
                ],
            )],
        )
        .await;
    }

    /// The items come back UID first, then in the order asked (INTERFACES.md 9.4): an
    /// RCS Common Message Store client reads Orange's `UID FETCH n (RFC822.SIZE FLAGS
    /// MODSEQ BODY.PEEK[])` answer positionally.
    #[tokio::test]
    async fn items_in_the_order_asked() {
        table(
            Start::Selected { read_only: false },
            &[(
                &[
                    "a UID FETCH 1 (RFC822.SIZE FLAGS MODSEQ BODY.PEEK[])",
                    "b UID FETCH 2 (MODSEQ FLAGS UID RFC822.SIZE)",
                    "c FETCH 3 (FLAGS INTERNALDATE UID)",
                    "d UID FETCH 1:2 (FLAGS) (CHANGEDSINCE 1)",
                ],
                &[
                    "* OK [HIGHESTMODSEQ ...] Highest",
                    "* 1 FETCH (UID 1 RFC822.SIZE 402 FLAGS (\\Seen) MODSEQ (...) BODY[] {402}",
                    "Return-Path: <alice@example.com>",
                    "From: Alice Example <alice@example.com>",
                    "To: Bob <bob@example.net>, team: carol@example.org, dave@example.org;",
                    "Cc: \"Eve, Q.\" <eve@example.com>",
                    "Subject: Lunch on Friday?",
                    "Date: Mon, 7 Feb 1994 21:52:25 -0800",
                    "Message-ID: <lunch.1@example.com>",
                    "MIME-Version: 1.0",
                    "Content-Type: text/plain; charset=us-ascii",
                    "",
                    "Shall we meet at noon, at the usual place?",
                    "",
                    "-- ",
                    "Alice",
                    ")",
                    "a OK Fetch completed.",
                    "* 2 FETCH (UID 2 MODSEQ (...) FLAGS (\\Answered \\Flagged $Important) RFC822.SIZE ...)",
                    "b OK Fetch completed.",
                    "* 3 FETCH (UID 3 FLAGS () INTERNALDATE \"...\" MODSEQ (...))",
                    "c OK Fetch completed.",
                    "* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (...))",
                    "* 2 FETCH (UID 2 FLAGS (\\Answered \\Flagged $Important) MODSEQ (...))",
                    "d OK Fetch completed.",
                ],
            )],
        )
        .await;
    }
}
