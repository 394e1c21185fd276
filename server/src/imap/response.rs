//! Small wire-format helpers for the responses the session writes itself. Complex data
//! (FETCH items such as ENVELOPE and BODYSTRUCTURE) is encoded with imap-codec in
//! `mime.rs` / `command/fetch.rs`.

use cpmstore_storage::{Flags, SystemFlags};
use imap_codec::imap_types::core::{AString, IString, Literal, Quoted};
use imap_codec::imap_types::mailbox::{Mailbox, MailboxOther};
use imap_codec::imap_types::sequence::SequenceSet;

/// A stored mailbox name as a typed response spells it, as [`mailbox`] does: `INBOX`
/// as an atom, else a quoted string or (past what quoting can carry) a literal. `None`
/// for a name no mailbox can have on the wire (another spelling of INBOX).
pub fn wire_mailbox(name: &str) -> Option<Mailbox<'static>> {
    if name == "INBOX" {
        return Some(Mailbox::Inbox);
    }
    let string = if quotable(name.as_bytes()) {
        IString::Quoted(Quoted::try_from(name.to_owned()).ok()?)
    } else {
        IString::Literal(Literal::try_from(name.as_bytes().to_vec()).ok()?)
    };
    let name = AString::String(string);
    MailboxOther::validate(name.as_ref()).ok()?;
    Some(Mailbox::Other(MailboxOther::unvalidated(name)))
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

/// An `nstring`: NIL or a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A mailbox name: `INBOX` as an atom, else a string.
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    if name == "INBOX" {
        out.extend_from_slice(b"INBOX");
    } else {
        string(out, name.as_bytes());
    }
}

/// The parenthesised flag list of a message, with `\Recent` when asked.
pub fn flag_list(flags: &Flags, recent: bool) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let sys = flags.system;
    if sys.contains(SystemFlags::ANSWERED) {
        parts.push("\\Answered");
    }
    if sys.contains(SystemFlags::FLAGGED) {
        parts.push("\\Flagged");
    }
    if sys.contains(SystemFlags::DELETED) {
        parts.push("\\Deleted");
    }
    if sys.contains(SystemFlags::SEEN) {
        parts.push("\\Seen");
    }
    if sys.contains(SystemFlags::DRAFT) {
        parts.push("\\Draft");
    }
    for kw in &flags.keywords {
        parts.push(kw);
    }
    if recent {
        parts.push("\\Recent");
    }
    format!("({})", parts.join(" "))
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
        assert_eq!(
            flag_list(&flags, true),
            "(\\Answered \\Seen $Forwarded \\Recent)"
        );
        assert_eq!(flag_list(&Flags::default(), false), "()");
    }
}
