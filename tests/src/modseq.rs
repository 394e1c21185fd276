//! What the CONDSTORE and QRESYNC tests (RFC 7162) share: a server with one user,
//! numbered messages, and readers for the MODSEQ numbers in replies.

use crate::imap_client::{Client, Reply};
use crate::server::{Server, ServerOptions};
use crate::{TempDatabase, postgres_url_or_skip};

/// The password of the test user `alice`.
pub const PASSWORD: &str = "correct horse";

/// Message number `n`: its Subject says `note n`, its Message-ID is `<n@example.net>`.
pub fn message(n: u32) -> Vec<u8> {
    format!(
        "From: alice@example.net\r\nTo: bob@example.net\r\nSubject: note {n}\r\n\
         Message-ID: <{n}@example.net>\r\n\r\nBody {n}.\r\n"
    )
    .into_bytes()
}

/// A server on SQLite with the user `alice`.
pub fn server_with_user() -> Server {
    // The stories create top-level mailboxes: no CPM folder rules.
    let server = Server::start_generic();
    server.add_user("alice", PASSWORD);
    server
}

/// Runs `story` against a server with the user `alice` on a fresh PostgreSQL database
/// (named after `prefix`), then stops the server and drops the database. Says it
/// skipped when `CPMSTORE_TEST_POSTGRES_URL` is not set.
pub fn on_postgres(prefix: &str, story: impl FnOnce(&Server)) {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let mut db = TempDatabase::create(&admin, prefix);
    let mut server = Server::start_with(ServerOptions {
        storage_url: Some(db.url.clone()),
        extra_config: crate::server::GENERIC_IMAP.into(),
        ..Default::default()
    });
    server.add_user("alice", PASSWORD);
    story(&server);
    server.terminate();
    db.drop_now();
}

/// `alice` logged in over implicit TLS.
pub fn login(server: &Server) -> Client {
    Client::login(server.imaps, "alice", PASSWORD)
}

/// Appends messages 1 to `count` to INBOX, each in its own transaction (so each has
/// its own MODSEQ).
pub fn fill(c: &mut Client, count: u32) {
    for n in 1..=count {
        c.append("INBOX", "", &message(n)).ok();
    }
}

/// The number right after `word` in `text`.
pub fn number_after(text: &str, word: &str) -> Option<u64> {
    let start = text.find(word)? + word.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The number of the first `[CODE n]` in a reply's untagged lines.
pub fn code_in(reply: &Reply, code: &str) -> Option<u64> {
    let word = format!("[{code} ");
    reply.untagged.iter().find_map(|l| number_after(l, &word))
}

/// The number in `MODSEQ (n)` of a FETCH line.
pub fn modseq(line: &str) -> u64 {
    number_after(line, "MODSEQ (").unwrap_or_else(|| panic!("no MODSEQ in {line}"))
}

/// HIGHESTMODSEQ of INBOX through STATUS.
pub fn status_highest(c: &mut Client) -> u64 {
    let r = c.command("STATUS INBOX (HIGHESTMODSEQ)").ok();
    let line = r.lines_with("STATUS")[0].clone();
    number_after(&line, "HIGHESTMODSEQ ").unwrap_or_else(|| panic!("{line}"))
}
