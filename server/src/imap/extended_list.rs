//! The syntax of the extended LIST command (RFC 5258 section 6, with RFC 5819's
//! `STATUS` return option), which imap-codec 2.0.0-alpha.10 does not parse: its
//! `CommandBody::List` holds a reference and one pattern only (imap-types'
//! `ext_list_extended` has the response items alone). The framing layer tries this
//! parser on a command imap-codec refused; `command::list` serves what it finds.
//!
//! ```abnf
//! list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
//! list-select-opts = "(" [option *(SP option)] ")"
//! mbox-or-pat = list-mailbox / patterns
//! patterns = "(" list-mailbox *(SP list-mailbox) ")"
//! list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")"
//! return-option =/ "STATUS" SP "(" status-att *(SP status-att) ")"
//! ```
//!
//! Option names are kept as sent (upper-cased): which ones are served, and what is BAD,
//! is decided by the command, where the answer can say why. A leaf module: it knows
//! neither the codec nor the commands.

/// An extended LIST as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedList {
    /// Selection options, upper-cased, in the order sent.
    pub selection: Vec<String>,
    /// The reference name's bytes.
    pub reference: Vec<u8>,
    /// The mailbox patterns' bytes (one or more).
    pub patterns: Vec<Vec<u8>>,
    /// Return options, in the order sent.
    pub returns: Vec<ReturnOption>,
}

/// One return option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnOption {
    /// An option without a value, upper-cased (`SUBSCRIBED`, `CHILDREN`, ...).
    Plain(String),
    /// `STATUS (items)`: the item names, upper-cased, in the order asked.
    Status(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    /// An atom (list wildcards and `]` included).
    Atom(Vec<u8>),
    /// A quoted string or a literal, unescaped.
    String(Vec<u8>),
    /// The CRLF that ends the command.
    End,
}

struct Lexer<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Lexer<'_> {
    /// The next token; `None` for bytes the grammar does not allow.
    fn next(&mut self) -> Option<Token> {
        while self.bytes.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
        let rest = &self.bytes[self.at..];
        let first = *rest.first()?;
        match first {
            b'\r' if rest == b"\r\n" => {
                self.at += 2;
                Some(Token::End)
            }
            b'\n' if rest.len() == 1 => {
                self.at += 1;
                Some(Token::End)
            }
            b'(' => {
                self.at += 1;
                Some(Token::Open)
            }
            b')' => {
                self.at += 1;
                Some(Token::Close)
            }
            b'"' => self.quoted(),
            b'{' => self.literal(),
            _ => {
                let len = rest.iter().take_while(|&&b| atom_char(b)).count();
                if len == 0 {
                    return None;
                }
                self.at += len;
                Some(Token::Atom(rest[..len].to_vec()))
            }
        }
    }

    fn quoted(&mut self) -> Option<Token> {
        let mut out = Vec::new();
        let mut i = self.at + 1;
        loop {
            match *self.bytes.get(i)? {
                b'"' => break,
                b'\\' => {
                    let escaped = *self.bytes.get(i + 1)?;
                    if escaped != b'"' && escaped != b'\\' {
                        return None;
                    }
                    out.push(escaped);
                    i += 2;
                }
                b'\r' | b'\n' | 0 => return None,
                b if b.is_ascii() => {
                    out.push(b);
                    i += 1;
                }
                _ => return None,
            }
        }
        self.at = i + 1;
        Some(Token::String(out))
    }

    /// `{n}` or `{n+}`, CRLF, then n bytes (the framing layer put them there).
    fn literal(&mut self) -> Option<Token> {
        let rest = &self.bytes[self.at + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        let digits = &rest[..close];
        let digits = digits.strip_suffix(b"+").unwrap_or(digits);
        if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let data_at = self.at + 1 + close + 1;
        if self.bytes.get(data_at..data_at + 2)? != b"\r\n" {
            return None;
        }
        let end = (data_at + 2).checked_add(len)?;
        let data = self.bytes.get(data_at + 2..end)?;
        if data.contains(&0) {
            return None;
        }
        self.at = end;
        Some(Token::String(data.to_vec()))
    }
}

/// ATOM-CHAR, plus the list wildcards and `]` (RFC 3501's `list-char`).
fn atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\')
}

fn upper(bytes: Vec<u8>) -> Option<String> {
    String::from_utf8(bytes)
        .ok()
        .map(|s| s.to_ascii_uppercase())
}

/// Parses a whole command (tag to CRLF, literals inline) as an extended LIST; `None`
/// if it is not one.
pub fn parse(message: &[u8]) -> Option<ExtendedList> {
    let mut lx = Lexer {
        bytes: message,
        at: 0,
    };
    let Token::Atom(_tag) = lx.next()? else {
        return None;
    };
    match lx.next()? {
        Token::Atom(name) if name.eq_ignore_ascii_case(b"LIST") => {}
        _ => return None,
    }
    let mut token = lx.next()?;
    let mut selection = Vec::new();
    if token == Token::Open {
        loop {
            match lx.next()? {
                Token::Close => break,
                Token::Atom(option) => selection.push(upper(option)?),
                _ => return None,
            }
        }
        token = lx.next()?;
    }
    let reference = match token {
        Token::Atom(bytes) | Token::String(bytes) => bytes,
        _ => return None,
    };
    let mut patterns = Vec::new();
    match lx.next()? {
        Token::Atom(bytes) | Token::String(bytes) => patterns.push(bytes),
        Token::Open => loop {
            match lx.next()? {
                Token::Atom(bytes) | Token::String(bytes) => patterns.push(bytes),
                Token::Close if !patterns.is_empty() => break,
                _ => return None,
            }
        },
        _ => return None,
    }
    let mut returns = Vec::new();
    match lx.next()? {
        Token::End => {}
        Token::Atom(word) if word.eq_ignore_ascii_case(b"RETURN") => {
            if lx.next()? != Token::Open {
                return None;
            }
            loop {
                match lx.next()? {
                    Token::Close => break,
                    Token::Atom(option) if option.eq_ignore_ascii_case(b"STATUS") => {
                        if lx.next()? != Token::Open {
                            return None;
                        }
                        let mut items = Vec::new();
                        loop {
                            match lx.next()? {
                                Token::Atom(item) => items.push(upper(item)?),
                                Token::Close if !items.is_empty() => break,
                                _ => return None,
                            }
                        }
                        returns.push(ReturnOption::Status(items));
                    }
                    Token::Atom(option) => returns.push(ReturnOption::Plain(upper(option)?)),
                    _ => return None,
                }
            }
            if lx.next()? != Token::End {
                return None;
            }
        }
        _ => return None,
    }
    Some(ExtendedList {
        selection,
        reference,
        patterns,
        returns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(line: &str) -> Option<ExtendedList> {
        parse(format!("{line}\r\n").as_bytes())
    }

    #[test]
    fn parses_what_rfc_5258_and_5819_allow() {
        let l = list(
            "a LIST \"\" \"RCSMessageStore/*\" RETURN (STATUS (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ))",
        )
        .unwrap();
        assert_eq!(l.reference, b"");
        assert_eq!(l.patterns, vec![b"RCSMessageStore/*".to_vec()]);
        assert_eq!(
            l.returns,
            vec![ReturnOption::Status(
                ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ"]
                    .map(String::from)
                    .to_vec()
            )]
        );
        let l = list("t list (subscribed RecursiveMatch) \"\" (\"a\" b* {1}\r\nc) return (children status (unseen) special-use)").unwrap();
        assert_eq!(l.selection, ["SUBSCRIBED", "RECURSIVEMATCH"]);
        assert_eq!(l.patterns, [b"a".to_vec(), b"b*".to_vec(), b"c".to_vec()]);
        assert_eq!(
            l.returns,
            vec![
                ReturnOption::Plain("CHILDREN".into()),
                ReturnOption::Status(vec!["UNSEEN".into()]),
                ReturnOption::Plain("SPECIAL-USE".into()),
            ]
        );
        let l = list("t LIST () INBOX % RETURN ()").unwrap();
        assert!(l.selection.is_empty() && l.returns.is_empty());
        assert_eq!(l.reference, b"INBOX");
        assert_eq!(list("t LIST \"a\\\"b\" %").unwrap().reference, b"a\"b");
    }

    #[test]
    fn refuses_what_is_not_an_extended_list() {
        for bad in [
            "a LSUB \"\" *",
            "a LIST",
            "a LIST \"\"",
            "a LIST \"\" ()",
            "a LIST \"\" * RETURN",
            "a LIST \"\" * RETURN (STATUS ())",
            "a LIST \"\" * RETURN (STATUS MESSAGES)",
            "a LIST \"\" * RETURN (CHILDREN) x",
            "a LIST \"\" * x",
            "a LIST (SUBSCRIBED \"\" *",
            "a LIST \"\" \"unterminated",
            "a LIST \"\" {5}\r\nab",
            "a LIST \"\" \"\\x\"",
            "a LIST \"\" \"caf\u{e9}\"",
        ] {
            assert_eq!(list(bad), None, "{bad:?}");
        }
    }
}
