//! What every way in (IMAP APPEND, a CPM deposit) does to a message before it is
//! stored: bare LFs become CRLF, so RFC822.SIZE counts what FETCH serves.

/// The message with every bare LF made CRLF (a CR alone is left as it is). Content
/// that has none comes back as it was, without a copy.
pub fn crlf(content: Vec<u8>) -> Vec<u8> {
    let bare = content
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || content[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return content;
    }
    let mut out = Vec::with_capacity(content.len() + bare);
    let mut prev = 0u8;
    for &b in &content {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::crlf;

    #[test]
    fn bare_line_feeds_become_crlf() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"", b""),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"\nx", b"\r\nx"),
            (b"mixed\r\nand\nbare\n\n", b"mixed\r\nand\r\nbare\r\n\r\n"),
            (b"lone\rcr\r\n", b"lone\rcr\r\n"),
        ];
        for (given, want) in cases {
            assert_eq!(
                crlf(given.to_vec()),
                want,
                "{:?}",
                String::from_utf8_lossy(given)
            );
        }
    }
}
