//! In-process tests of the IMAP layer: a session over `tokio::io::duplex` against a
//! real Store on a temporary SQLite file (the fuzzing [`Harness`]'s subscriber and
//! mailboxes), driven line by line, so that tests can pause the clock for timeouts
//! and IDLE. Each command file has a table of (client lines, expected server lines)
//! run through [`table`].

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::io::{ReadHalf, WriteHalf};

use super::harness::{Harness, Opening, Start};
use super::session;
use crate::config::{CpmConfig, LimitsConfig};

/// A harness on a fresh SQLite file (kept as long as the directory is).
pub async fn harness() -> (tempfile::TempDir, Harness) {
    harness_with(&LimitsConfig::default()).await
}

/// A harness with `limits`.
pub async fn harness_with(limits: &LimitsConfig) -> (tempfile::TempDir, Harness) {
    harness_cpm(limits, super::harness::generic_cpm()).await
}

/// A harness with `limits` whose sessions apply `cpm`.
pub async fn harness_cpm(limits: &LimitsConfig, cpm: CpmConfig) -> (tempfile::TempDir, Harness) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = cpmstore_storage::open(&url, &Default::default())
        .await
        .expect("a store");
    let harness = Harness::with_cpm(store, limits, cpm)
        .await
        .expect("a harness");
    (dir, harness)
}

/// The client end of a session running on its own task.
pub struct Client {
    from_server: BufReader<ReadHalf<DuplexStream>>,
    to_server: WriteHalf<DuplexStream>,
    session: tokio::task::JoinHandle<()>,
}

/// How long a test waits for a line (virtual time when the clock is paused).
const WAIT: Duration = Duration::from_secs(3600);

impl Client {
    /// Starts a session in `opening` and reads its greeting.
    pub async fn start(h: &mut Harness, opening: Opening) -> (Client, String) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let session = tokio::spawn(session::run(h.session(opening, server)));
        let (from_server, to_server) = tokio::io::split(client);
        let mut client = Client {
            from_server: BufReader::new(from_server),
            to_server,
            session,
        };
        let greeting = client.line().await.expect("a greeting");
        (client, greeting)
    }

    /// Sends one line (CRLF added).
    pub async fn send(&mut self, line: &str) {
        self.to_server
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("the session reads");
    }

    /// The next line from the server without its CRLF; `None` once it has closed.
    pub async fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let read = tokio::time::timeout(WAIT, self.from_server.read_until(b'\n', &mut line))
            .await
            .expect("a line in time")
            .expect("a read");
        if read == 0 {
            return None;
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    /// Lines up to and including the first that starts with `tag ` (or the end).
    pub async fn until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.line().await {
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    }

    /// Lines up to and including the tagged answer to `tag` or a continuation
    /// request (`+ ...`), or the end.
    pub async fn until_answer(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.line().await {
            let done = line.starts_with(&format!("{tag} ")) || line.starts_with('+');
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    }

    /// Closes the client's side; returns what the server still said before closing.
    pub async fn close(mut self) -> String {
        let _ = self.to_server.shutdown().await;
        let mut rest = Vec::new();
        let _ = self.from_server.read_to_end(&mut rest).await;
        let _ = self.session.await;
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// Whether a server line is what was expected: equal, where each `...` in the
/// expectation stands for any text (UIDVALIDITY, sizes, versions).
pub fn line_matches(line: &str, expected: &str) -> bool {
    let mut pieces = expected.split("...");
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Runs each case in a new session started in `start` (nothing enabled): the client
/// lines are sent one at a time; after each tagged line, the server's lines up to its
/// tagged answer are collected; all of them together must be `expected`, line by line.
pub async fn table(start: Start, cases: &[(&[&str], &[&str])]) {
    table_cpm(super::harness::generic_cpm(), start, cases).await;
}

/// [`table`] with sessions that apply `cpm` (folder rules, `\read-report-sent`).
pub async fn table_cpm(cpm: CpmConfig, start: Start, cases: &[(&[&str], &[&str])]) {
    let (_dir, mut h) = harness_cpm(&LimitsConfig::default(), cpm).await;
    for (client, expected) in cases {
        let (mut c, _) = Client::start(&mut h, Opening::new(start)).await;
        let mut got = Vec::new();
        let mut tag = "*";
        for line in *client {
            c.send(line).await;
            // A tagged line starts a command; any other (DONE, AUTHENTICATE data)
            // continues the last one. Either way, read up to its tagged answer or
            // up to a continuation request.
            if let Some((t, _)) = line.split_once(' ') {
                tag = t;
            }
            got.extend(c.until_answer(tag).await);
        }
        c.close().await;
        let ok = got.len() == expected.len()
            && got
                .iter()
                .zip(expected.iter())
                .all(|(g, e)| line_matches(g, e));
        assert!(
            ok,
            "client {client:#?}\nexpected {expected:#?}\ngot {got:#?}"
        );
        h.restore(false).await.expect("the fixture put back");
    }
}

#[cfg(test)]
mod tests {
    use super::line_matches;

    #[test]
    fn expectations() {
        let cases = [
            ("a OK done", "a OK done", true),
            ("a OK done", "a OK", false),
            (
                "* OK [UIDVALIDITY 17] UIDs valid.",
                "* OK [UIDVALIDITY ...] UIDs valid.",
                true,
            ),
            (
                "* OK [UIDVALIDITY 17] UIDs valid.",
                "* OK [UIDNEXT ...",
                false,
            ),
            (
                "a OK [COPYUID 9 1:2 2:3] Copy completed.",
                "a OK [COPYUID ... 1:2 ...] Copy...",
                true,
            ),
            ("* 3 FETCH (UID 3)", "* 3 FETCH (UID 3)...", true),
        ];
        for (line, expected, matches) in cases {
            assert_eq!(line_matches(line, expected), matches, "{line} / {expected}");
        }
    }
}
