//! The CPM headers a message store indexes (INTERFACES.md 9.4), read from the top-level
//! header block of a stored message.
//!
//! Only the message's own header block is read (up to the first empty line): that is
//! what `SEARCH HEADER` matches, and where every CPM object carries these headers. A
//! `Message/CPIM` object repeats the IMDN id inside its CPIM part as `imdn.Message-ID`,
//! a different header name that clients do not search; it is not indexed.

/// The indexed header names, lower-case.
/// The statement behind `Store::uids_by_header_containing`, one for both backends:
/// values equal to the needle (`$3`) by the value index (account, name, folded,
/// mailbox, uid); longer values that contain it (`$6`, a LIKE pattern) by the length
/// index (account, mailbox, name, length(folded), folded, uid), as a range on
/// `length(folded) > $5` (the needle's length in characters, bound as a 32-bit
/// integer). The expression is written exactly as indexed and compared with the bare
/// parameter: SQLite uses an expression index for a range only then (a
/// `CAST($5 AS INTEGER)` there made it read every value of the header in the mailbox:
/// 16 ms for 100,000 objects instead of 0.04 ms); PostgreSQL infers `$5` as `integer`
/// from `length()`. Public so that the storage tests can check SQLite's plan of it.
pub const HEADER_SEARCH_SQL: &str = "SELECT uid FROM cpm_headers WHERE account_id = $1 \
     AND name = $2 AND folded = $3 AND mailbox_id = $4 \
     UNION ALL \
     SELECT uid FROM cpm_headers WHERE account_id = $1 AND mailbox_id = $4 AND name = $2 \
     AND length(folded) > $5 AND folded LIKE $6 ESCAPE '\\'";

pub const INDEXED_HEADERS: [&str; 4] = [
    CONVERSATION_ID,
    CONTRIBUTION_ID,
    IN_REPLY_TO_CONTRIBUTION_ID,
    IMDN_MESSAGE_ID,
];

/// `Conversation-ID`, lower-case.
pub const CONVERSATION_ID: &str = "conversation-id";
/// `Contribution-ID`, lower-case.
pub const CONTRIBUTION_ID: &str = "contribution-id";
/// `InReplyTo-Contribution-ID`, lower-case.
pub const IN_REPLY_TO_CONTRIBUTION_ID: &str = "inreplyto-contribution-id";
/// `IMDN-Message-ID`, lower-case.
pub const IMDN_MESSAGE_ID: &str = "imdn-message-id";

/// The CPM system flag `\read-report-sent` (a read report was sent for the message),
/// as stored: among the message's keywords, in this spelling (the one `\`-flag the
/// keyword list takes). The server keeps it only where `[cpm] read_report_flag` is on.
pub const READ_REPORT_SENT: &str = "\\read-report-sent";

/// Longest value indexed, in bytes; a longer one is left out of the index (CPM ids are
/// short tokens; a huge header is not one).
pub const MAX_VALUE_BYTES: usize = 1024;

/// The indexed name `name` stands for (any case), if it is one.
pub fn indexed_name(name: &str) -> Option<&'static str> {
    INDEXED_HEADERS
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(name.trim()))
}

/// Every header of the top-level block as (name, unfolded value), in order. Lines end
/// in CRLF or LF; a line that starts with a space or tab continues the previous one; a
/// line without a colon is skipped. Values are trimmed; bytes that are not UTF-8 are
/// replaced.
pub fn top_level_headers(content: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = out.last_mut() {
                let more = String::from_utf8_lossy(line);
                value.push(' ');
                value.push_str(more.trim());
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
        if name.is_empty() {
            continue;
        }
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_owned();
        out.push((name, value));
    }
    for (_, value) in &mut out {
        let trimmed = value.trim();
        if trimmed.len() != value.len() {
            *value = trimmed.to_owned();
        }
    }
    out
}

/// The indexed headers of a message: (lower-case name, value), each pair once, values
/// that are empty or longer than [`MAX_VALUE_BYTES`] left out.
pub fn indexed_headers(content: &[u8]) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for (name, value) in top_level_headers(content) {
        let Some(name) = indexed_name(&name) else {
            continue;
        };
        if value.is_empty() || value.len() > MAX_VALUE_BYTES {
            continue;
        }
        if !out
            .iter()
            .any(|(n, v)| *n == name && v.eq_ignore_ascii_case(&value))
        {
            out.push((name, value));
        }
    }
    out
}

/// The first value of header `name` (any case) in the top-level block.
pub fn header_value(content: &[u8], name: &str) -> Option<String> {
    top_level_headers(content)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn top_level_block_only_unfolded_any_case() {
        type Case<'a> = (&'a [u8], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (
                b"Conversation-ID: abc\r\nimdn-message-id:  X1 \r\n\r\nIMDN-Message-ID: inner\r\n",
                &[("conversation-id", "abc"), ("imdn-message-id", "X1")],
            ),
            (
                b"CONTRIBUTION-ID: a\r\n\tb\r\nSubject: s\r\n\r\n",
                &[("contribution-id", "a b")],
            ),
            (
                b"InReplyTo-Contribution-ID: r\nIMDN-Message-ID: lf\n\nbody",
                &[
                    ("inreplyto-contribution-id", "r"),
                    ("imdn-message-id", "lf"),
                ],
            ),
            (b"no colon\r\nIMDN-Message-ID:\r\n\r\n", &[]),
            (
                b"IMDN-Message-ID: a\r\nIMDN-Message-ID: A\r\n",
                &[("imdn-message-id", "a")],
            ),
            (b"", &[]),
        ];
        for (content, want) in cases {
            let got = indexed_headers(content);
            let got: Vec<(&str, &str)> = got.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(content));
        }
        let long = format!(
            "IMDN-Message-ID: {}\r\n\r\n",
            "x".repeat(MAX_VALUE_BYTES + 1)
        );
        assert!(indexed_headers(long.as_bytes()).is_empty());
        assert_eq!(
            header_value(b"conversation-id: c1\r\n\r\n", "Conversation-ID").as_deref(),
            Some("c1")
        );
        assert_eq!(indexed_name(" IMDN-message-ID"), Some(IMDN_MESSAGE_ID));
        assert_eq!(indexed_name("Subject"), None);
    }
}
