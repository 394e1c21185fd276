//! Small wire-format helpers for the responses the session writes itself. Complex data
//! (FETCH items such as ENVELOPE and BODYSTRUCTURE) is encoded with imap-codec in
//! `mime.rs` / `command/fetch.rs`.

use cpmstore_storage::{Flags, SystemFlags};

/// An IMAP string: an atom-safe quoted string when possible, else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024
        && s.iter()
            .all(|&b| b.is_ascii() && b != b'\r' && b != b'\n' && b != 0);
    if quotable {
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
