//! Typed building blocks of responses (flags, mailbox names, UID sets) and
//! [`push`], the one place that encodes a typed response with imap-codec into an
//! output buffer ([`Connection`](super::connection::Connection) writes through it, and
//! so does [`MailboxView`](super::mailbox_view::MailboxView), which fills the
//! connection's buffer while it catches up). The byte-level [`string`] serves the
//! documented raw escapes only (FETCH's section names, mime.rs's ENVELOPE).

use std::num::{NonZeroU32, NonZeroU64};

use cpmstore_storage::{Flags, SystemFlags};
use imap_codec::GreetingCodec;
use imap_codec::ResponseCodec;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::core::{AString, Atom, IString, Literal, Quoted};
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::flag::{Flag, FlagFetch, FlagPerm};
use imap_codec::imap_types::mailbox::{Mailbox, MailboxOther};
use imap_codec::imap_types::response::{
    Code, CodeOther, Data, Greeting, Response, Status, StatusKind,
};
use imap_codec::imap_types::sequence::SequenceSet;

/// Appends `response`, encoded by imap-codec, to `out`.
pub fn push(out: &mut Vec<u8>, response: &Response<'_>) {
    for fragment in ResponseCodec::default().encode(response) {
        match fragment {
            Fragment::Line { data } | Fragment::Literal { data, .. } => {
                out.extend_from_slice(&data)
            }
        }
    }
}

/// A response code kept as the bytes we formed. Raw escape for two things imap-types
/// has no faithful type for: `CAPABILITY` (its `Capability` writes `IMAP4rev1` as
/// `IMAP4REV1`; we keep the bytes clients have always seen), and the codes commands
/// still give as text in [`Done`](super::error::Done) (`COPYUID`, `MODIFIED`,
/// `READ-WRITE`, ...), which are ours and always valid `resp-text-code`s.
pub fn raw_code(code: &str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(code.as_bytes().to_vec()))
}

/// The greeting: `* OK [CAPABILITY caps] cpmstore ready.`
pub fn greeting(capabilities: &str) -> Vec<u8> {
    let code = raw_code(&format!("CAPABILITY {capabilities}"));
    match Greeting::ok(Some(code), "cpmstore ready.") {
        Ok(greeting) => GreetingCodec::default().encode(&greeting).dump(),
        // Unreachable: the text is a valid constant.
        Err(_) => b"* OK cpmstore ready.\r\n".to_vec(),
    }
}

/// Appends a status response: tagged with `tag`, or untagged without; `code` as
/// [`raw_code`]; `text` as [`text`] makes it.
pub fn push_status(
    out: &mut Vec<u8>,
    tag: Option<&str>,
    kind: StatusKind,
    code: Option<Code<'_>>,
    text: &str,
) {
    let text = self::text(text);
    let typed = match tag.map(|t| Tag::try_from(t.to_owned())) {
        None => Some(None),
        Some(Ok(tag)) => Some(Some(tag)),
        // A tag we answer was parsed from the client's command, so is valid.
        Some(Err(_)) => None,
    };
    // A text imap-types refuses (8-bit, or one that would read as a code) is said
    // untyped, as before; the code then goes through imap-codec alone.
    let status = match typed {
        Some(typed) => Status::new(typed, kind, code.clone(), text.as_str()).ok(),
        None => None,
    };
    match status {
        Some(status) => push(out, &Response::Status(status)),
        None => {
            let kind = match kind {
                StatusKind::Ok => "OK",
                StatusKind::No => "NO",
                StatusKind::Bad => "BAD",
            };
            let code = code.map(|c| {
                let mut bytes = Vec::new();
                // The code alone, through a response that holds nothing else.
                if let Ok(status) = Status::ok(None, Some(c), "x") {
                    push(&mut bytes, &Response::Status(status));
                }
                let text = String::from_utf8_lossy(&bytes).into_owned();
                text.strip_prefix("* OK ")
                    .and_then(|t| t.strip_suffix(" x\r\n"))
                    .map(|c| format!("{c} "))
                    .unwrap_or_default()
            });
            let tag = tag.unwrap_or("*");
            let code = code.unwrap_or_default();
            out.extend_from_slice(format!("{tag} {kind} {code}{text}\r\n").as_bytes());
        }
    }
}

/// `* BYE text` as bytes, for the loop to write when it ends a session.
pub fn bye(text: &str) -> Vec<u8> {
    let text = self::text(text);
    let mut out = Vec::new();
    match Status::bye(None, text.as_str()) {
        Ok(status) => push(&mut out, &Response::Status(status)),
        // Unreachable: `text` is never empty and holds no CR/LF.
        Err(_) => out.extend_from_slice(b"* BYE Closing.\r\n"),
    }
    out
}

/// Opens a FETCH response written piece by piece (`* seq FETCH (`). Raw escape:
/// imap-codec encodes msg-att items only inside a whole `Data::Fetch`, and a FETCH
/// with a streamed literal or a mime.rs-written ENVELOPE/BODYSTRUCTURE cannot be one;
/// its typed items go through [`push_fetch_items`].
pub fn fetch_open(out: &mut Vec<u8>, seq: NonZeroU32) {
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
}

/// Closes what [`fetch_open`] opened.
pub fn fetch_close(out: &mut Vec<u8>) {
    out.extend_from_slice(b")\r\n");
}

/// Appends typed msg-att items, space-separated, encoded by imap-codec: they are
/// encoded as the `Data::Fetch` they would be alone and taken out of its frame
/// (`* seq FETCH (` ... `)\r\n`, whose first `(` opens the list).
pub fn push_fetch_items(out: &mut Vec<u8>, seq: NonZeroU32, items: Vec<MessageDataItem<'_>>) {
    let Ok(data) = Data::fetch(seq, items) else {
        return;
    };
    let mut bytes = Vec::new();
    push_data(&mut bytes, data);
    let start = bytes.iter().position(|&b| b == b'(').map_or(0, |p| p + 1);
    let end = bytes.len().saturating_sub(3).max(start);
    out.extend_from_slice(&bytes[start..end]);
}

/// Appends an untagged data response to `out`.
pub fn push_data(out: &mut Vec<u8>, data: Data<'_>) {
    push(out, &Response::Data(data));
}

/// Appends `* OK [code] text` to `out`; `text` is ours (see [`text`]).
pub fn push_ok(out: &mut Vec<u8>, code: Option<Code<'_>>, text: &str) {
    let text = self::text(text);
    match Status::ok(None, code, text.as_str()) {
        Ok(status) => push(out, &Response::Status(status)),
        // Unreachable: `text` is never empty and holds no CR/LF.
        Err(_) => out.extend_from_slice(format!("* OK {text}\r\n").as_bytes()),
    }
}

/// `* OK [HIGHESTMODSEQ n] text`. Raw escape for 0: imap-types' `Code::HighestModSeq`
/// holds a `NonZeroU64` and has no type for a zero mod-sequence, which a mailbox of a
/// store that starts at 0 has before its first change (the bytes stay as before).
pub fn push_highestmodseq(out: &mut Vec<u8>, modseq: u64, text: &str) {
    match NonZeroU64::new(modseq) {
        Some(modseq) => push_ok(out, Some(Code::HighestModSeq(modseq)), text),
        None => out.extend_from_slice(
            format!("* OK [HIGHESTMODSEQ 0] {}\r\n", self::text(text)).as_bytes(),
        ),
    }
}

/// A keyword as a typed flag; `None` if it is not an atom. Keywords were atoms when
/// clients stored them, so only a store filled some other way holds such a one; every
/// typed flag list below leaves it out (as SELECT's FLAGS always did).
/// The CPM flag `\read-report-sent`, kept among the keywords, is the system flag it
/// names.
pub fn keyword(keyword: &str) -> Option<Flag<'static>> {
    if keyword == crate::cpm::READ_REPORT_SENT {
        return Atom::try_from(keyword[1..].to_owned())
            .ok()
            .map(Flag::system);
    }
    Atom::try_from(keyword.to_owned()).ok().map(Flag::Keyword)
}

/// A message's flags as FETCH says them, in the order FLAGS has always had: system flags,
/// keywords, then `\Recent` when asked.
pub fn fetch_flags(flags: &Flags, recent: bool) -> Vec<FlagFetch<'static>> {
    let sys = flags.system;
    let mut out = Vec::new();
    for (bit, flag) in [
        (SystemFlags::ANSWERED, Flag::Answered),
        (SystemFlags::FLAGGED, Flag::Flagged),
        (SystemFlags::DELETED, Flag::Deleted),
        (SystemFlags::SEEN, Flag::Seen),
        (SystemFlags::DRAFT, Flag::Draft),
    ] {
        if sys.contains(bit) {
            out.push(FlagFetch::Flag(flag));
        }
    }
    out.extend(
        flags
            .keywords
            .iter()
            .filter_map(|kw| keyword(kw))
            .map(FlagFetch::Flag),
    );
    if recent {
        out.push(FlagFetch::Recent);
    }
    out
}

/// The `FLAGS` item of a FETCH response.
pub fn flags_item(flags: &Flags, recent: bool) -> MessageDataItem<'static> {
    MessageDataItem::Flags(fetch_flags(flags, recent))
}

/// The `MODSEQ (n)` item of a FETCH response; `None` for 0, which no message has
/// (a message's MODSEQ is that of the change that stored it, at least 1).
pub fn modseq_item(modseq: u64) -> Option<MessageDataItem<'static>> {
    NonZeroU64::new(modseq).map(MessageDataItem::ModSeq)
}

/// The flags a mailbox knows (`* FLAGS`): the system flags, then `keywords`.
pub fn mailbox_flags(keywords: &[String]) -> Vec<Flag<'static>> {
    let mut out = vec![
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Seen,
        Flag::Draft,
    ];
    out.extend(keywords.iter().filter_map(|kw| keyword(kw)));
    out
}

/// `PERMANENTFLAGS`: the mailbox's flags and `\*`.
pub fn permanent_flags(keywords: &[String]) -> Vec<FlagPerm<'static>> {
    let mut out: Vec<FlagPerm<'static>> = mailbox_flags(keywords)
        .into_iter()
        .map(FlagPerm::Flag)
        .collect();
    out.push(FlagPerm::Asterisk);
    out
}

/// A stored mailbox name as a typed response spells it, as [`mailbox`] does: `INBOX`
/// as an atom, else a quoted string or (past what quoting can carry) a literal. `None`
/// for a name no mailbox can have on the wire (another spelling of INBOX).
pub fn wire_mailbox(name: &str) -> Option<Mailbox<'static>> {
    let mailbox = listed_mailbox(name)?;
    if let Mailbox::Other(other) = &mailbox {
        MailboxOther::validate(other.inner().as_ref()).ok()?;
    }
    Some(mailbox)
}

/// A stored mailbox name as LIST and LSUB show it: as [`wire_mailbox`], but a name
/// that is another spelling of INBOX (stored before names were checked) is shown as
/// stored, quoted, so that a client can still see and delete it. `None` only for a
/// name holding NUL, which no string can carry.
pub fn listed_mailbox(name: &str) -> Option<Mailbox<'static>> {
    if name == "INBOX" {
        return Some(Mailbox::Inbox);
    }
    let string = if quotable(name.as_bytes()) {
        IString::Quoted(Quoted::try_from(name.to_owned()).ok()?)
    } else {
        IString::Literal(Literal::try_from(name.as_bytes().to_vec()).ok()?)
    };
    Some(Mailbox::Other(MailboxOther::unvalidated(AString::String(
        string,
    ))))
}

fn quotable(s: &[u8]) -> bool {
    s.len() < 1024
        && s.iter()
            .all(|&b| b.is_ascii() && b != b'\r' && b != b'\n' && b != 0)
}

/// A set of UIDs in its shortest form (`1:3,7`) for a typed response; `None` when
/// there are none (a sequence set is never empty).
pub fn uid_sequence_set(uids: &[u32]) -> Option<SequenceSet> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(&start.to_string());
        if sorted[i] != start {
            text.push_str(&format!(":{}", sorted[i]));
        }
        i += 1;
    }
    SequenceSet::try_from(text.as_str()).ok()
}

/// An IMAP string: an atom-safe quoted string when possible, else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    if quotable(s) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

/// Text of a status response: no CR/LF, never empty.
pub fn text(s: &str) -> String {
    let t: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    if t.is_empty() { "done".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_quote_or_literal() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"abc", b"\"abc\""),
            (b"a\"b\\c", b"\"a\\\"b\\\\c\""),
            (b"", b"\"\""),
            (b"a\r\nb", b"{4}\r\na\r\nb"),
            ("ä".as_bytes(), b"{2}\r\n\xc3\xa4"),
        ];
        for (input, expected) in cases {
            let mut out = Vec::new();
            string(&mut out, input);
            assert_eq!(&out[..], *expected, "input {input:?}");
        }
    }

    #[test]
    fn uid_sets_are_shortest() {
        let set = |uids: &[u32]| {
            uid_sequence_set(uids).map(|set| {
                let data = imap_codec::imap_types::response::Data::Vanished {
                    earlier: false,
                    known_uids: set,
                };
                let response = imap_codec::imap_types::response::Response::Data(data);
                use imap_codec::encode::Encoder;
                imap_codec::ResponseCodec::default()
                    .encode(&response)
                    .dump()
            })
        };
        assert_eq!(set(&[]), None);
        assert_eq!(
            set(&[7, 1, 2, 3, 9, 10]).unwrap(),
            b"* VANISHED 1:3,7,9:10\r\n"
        );
        assert_eq!(set(&[5]).unwrap(), b"* VANISHED 5\r\n");
    }

    #[test]
    fn flags_in_canonical_order() {
        let flags = Flags {
            system: SystemFlags(SystemFlags::SEEN | SystemFlags::ANSWERED),
            keywords: vec!["$Forwarded".into()],
        };
        let item = |flags: &Flags, recent: bool| {
            let mut out = Vec::new();
            let seq = NonZeroU32::MIN;
            push_fetch_items(&mut out, seq, vec![flags_item(flags, recent)]);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            item(&flags, true),
            "FLAGS (\\Answered \\Seen $Forwarded \\Recent)"
        );
        assert_eq!(item(&Flags::default(), false), "FLAGS ()");
    }
}
