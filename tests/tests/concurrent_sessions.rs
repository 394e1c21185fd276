//! Several sessions on one mailbox — a phone, a tablet, the network depositing history —
//! over real sockets, as ImapTest's stress mode drives them: a message another session
//! expunged stays readable, searchable and storable (harmlessly) for a session that
//! has not been told yet; one vanished message never cuts a FETCH short; new keywords
//! are announced (FLAGS, then PERMANENTFLAGS) before any response uses them. Run on
//! SQLite (one server) and on PostgreSQL (the sessions spread over two nodes).
//!
//! Also what real clients found: SEARCH TEXT / BODY see MIME part headers (an
//! attachment's file name), and an APPEND with bare LF line ends is stored and served
//! with CRLF, RFC822.SIZE counting what is served.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use cpmstore_tests::imap_client::{Client, Reply};
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

const PASSWORD: &str = "several devices";

fn msg(n: u32) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.net>\r\nTo: bob@example.net\r\nSubject: note {n}\r\n\
         Message-ID: <{n}@example.net>\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\n\
         Body of note {n}, word{n}x.\r\n"
    )
    .into_bytes()
}

const WITH_ATTACHMENT: &[u8] = b"From: a@example.net\r\nSubject: report\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n\
--b1\r\nContent-Type: application/pdf; name=\"zqxj.pdf\"\r\n\
Content-Disposition: attachment; filename=\"zqxj.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
JVBERi0xLjQK\r\n--b1--\r\n";

fn login(server: &Server) -> Client {
    Client::login(server.imaps, "alice", PASSWORD)
}

/// The untagged lines that contain `text`.
fn containing<'r>(r: &'r Reply, text: &str) -> Vec<&'r String> {
    r.untagged.iter().filter(|l| l.contains(text)).collect()
}

/// NOOP until the reply satisfies `done` (across nodes, news takes a moment).
fn noop_until(client: &mut Client, done: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.command("NOOP").ok();
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn told_expunge(r: &Reply) -> bool {
    r.untagged
        .iter()
        .any(|l| l.ends_with(" EXPUNGE") || l.starts_with("* VANISHED"))
}

/// `a`, `b` and `c` are three sessions of one subscriber (on one node or two).
fn story(a_node: &Server, b_node: &Server, c_node: &Server) {
    let mut a = login(a_node);
    let mut b = login(b_node);
    let mut c = login(c_node);
    for n in 1..=30 {
        a.append("INBOX", "", &msg(n)).ok();
    }
    a.command("SELECT INBOX").ok();
    b.command("SELECT INBOX").ok();
    c.command("SELECT INBOX").ok();

    // B expunges 3, 10 and 22 (and 25, by MOVE); A and C have not been told.
    b.command("STORE 3,10,22 +FLAGS.SILENT (\\Deleted)").ok();
    b.command("EXPUNGE").ok();
    b.command("CREATE Elsewhere").ok();
    let r = b.command("UID MOVE 25 Elsewhere").ok();
    assert!(told_expunge(&r), "{r:?}");

    // A reads them as they were: every message of the set answered, data and all.
    let r = a.command("FETCH 2:7,9,11,15,17,22,25 (UID RFC822.SIZE FLAGS BODY.PEEK[])");
    assert!(!told_expunge(&r), "EXPUNGE during FETCH: {r:?}");
    assert!(r.status.starts_with("OK"), "{r:?}");
    let uids: Vec<u32> = r
        .untagged
        .iter()
        .filter_map(|l| l.split("(UID ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(uids, [2, 3, 4, 5, 6, 7, 9, 11, 15, 17, 22, 25], "{r:?}");
    let text = r.all_text();
    for n in [3, 22, 25] {
        assert!(
            text.contains(&format!("Body of note {n}, word{n}x.")),
            "{text}"
        );
    }
    // ENVELOPE and BODYSTRUCTURE too (UID FETCH may tell of expunges: it comes last).
    let r = a
        .command("FETCH 10 (ENVELOPE BODYSTRUCTURE INTERNALDATE)")
        .ok();
    assert!(r.all_text().contains("\"note 10\""), "{r:?}");
    let r = c.command("FETCH 22 (RFC822.HEADER)").ok();
    assert!(r.all_text().contains("Subject: note 22"), "{r:?}");

    // STORE on one: OK, and no FETCH for it (nothing changed); the others change.
    let r = a.command("STORE 9:11 +FLAGS (\\Flagged)");
    assert!(r.status.starts_with("OK"), "{r:?}");
    assert!(!told_expunge(&r), "EXPUNGE during STORE: {r:?}");
    let fetched: Vec<&String> = r.untagged.iter().filter(|l| l.contains("FETCH")).collect();
    assert_eq!(fetched.len(), 2, "{r:?}");
    assert!(fetched.iter().all(|l| !l.starts_with("* 10 ")), "{r:?}");
    let r = a.command("STORE 3 +FLAGS (\\Seen)");
    assert!(r.status.starts_with("OK"), "{r:?}");
    assert!(containing(&r, "FETCH").is_empty(), "{r:?}");

    // SEARCH is over A's view: the expunged messages are found by what they hold.
    let r = a.command("SEARCH ALL").ok();
    let all: Vec<String> = (1..=30).map(|n| n.to_string()).collect();
    assert_eq!(r.untagged, [format!("* SEARCH {}", all.join(" "))], "{r:?}");
    let r = a.command("SEARCH BODY word22x").ok();
    assert_eq!(r.untagged, ["* SEARCH 22"], "{r:?}");
    let r = a
        .command("SEARCH OR HEADER Message-ID <3@example.net> TEXT word25x")
        .ok();
    assert_eq!(r.untagged, ["* SEARCH 3 25"], "{r:?}");
    // Flags are those A was told (B's \Deleted never reached it): SEARCH agrees
    // with FETCH FLAGS.
    let r = a.command("SEARCH DELETED").ok();
    assert_eq!(r.untagged, ["* SEARCH"], "{r:?}");
    let r = a.command("FETCH 3 (FLAGS)").ok();
    assert!(!r.all_text().contains("\\Deleted"), "{r:?}");
    let r = a.command("SEARCH LARGER 100 UNDELETED SUBJECT note").ok();
    assert_eq!(r.untagged, [format!("* SEARCH {}", all.join(" "))], "{r:?}");

    // Now A is told (NOOP); C, still untold, can read them all the same.
    let r = noop_until(&mut a, |r| containing(r, "EXPUNGE").len() == 4);
    let expunged: Vec<&String> = r.lines_with("EXPUNGE");
    assert_eq!(expunged.len(), 4, "{r:?}");
    let r = a.command("FETCH 1:* (UID)").ok();
    assert_eq!(r.untagged.len(), 26, "{r:?}");
    let r = c.command("UID FETCH 3,10,22,25 (BODY.PEEK[TEXT])").ok();
    assert_eq!(containing(&r, "BODY[TEXT]").len(), 4, "{r:?}");

    // Keywords: FLAGS with all of them, then PERMANENTFLAGS, before the FETCH that
    // shows them — for the session that set them and for those that learn of them.
    noop_until(&mut b, |r| containing(r, "\\Flagged").len() == 2);
    let r = b.command("STORE 1 +FLAGS ($hello $world)").ok();
    let order: Vec<&str> = r
        .untagged
        .iter()
        .map(|l| {
            if l.starts_with("* FLAGS") {
                "FLAGS"
            } else if l.starts_with("* OK [PERMANENTFLAGS") {
                "PERMANENTFLAGS"
            } else if l.contains(" FETCH ") {
                "FETCH"
            } else {
                "other"
            }
        })
        .filter(|k| *k != "other")
        .collect();
    assert_eq!(order, ["FLAGS", "PERMANENTFLAGS", "FETCH"], "{r:?}");
    let flags_line = containing(&r, "* FLAGS")[0];
    assert!(
        flags_line.contains("$hello") && flags_line.contains("$world"),
        "{r:?}"
    );
    assert!(
        containing(&r, "PERMANENTFLAGS")[0].contains("$world \\*)"),
        "{r:?}"
    );
    let r = noop_until(&mut a, |r| !containing(r, "* FLAGS").is_empty());
    let first_flags = r.untagged.iter().position(|l| l.starts_with("* FLAGS"));
    let first_fetch = r
        .untagged
        .iter()
        .position(|l| l.contains(" FETCH ") && l.contains("$hello"));
    assert!(
        matches!((first_flags, first_fetch), (Some(f), Some(g)) if f < g),
        "{r:?}"
    );
    assert_eq!(containing(&r, "* FLAGS").len(), 1, "one FLAGS line: {r:?}");
    // Known keywords are not announced again.
    let r = b.command("STORE 2 +FLAGS ($hello)").ok();
    assert!(containing(&r, "* FLAGS").is_empty(), "{r:?}");

    // MIME part headers are body text: an attachment's file name is found.
    a.append("INBOX", "", WITH_ATTACHMENT).ok();
    a.command("NOOP").ok();
    for key in ["TEXT zqxj", "BODY zqxj.pdf", "TEXT application/pdf"] {
        let r = a.command(&format!("UID SEARCH {key}")).ok();
        assert_eq!(r.untagged, ["* SEARCH 31"], "{key}: {r:?}");
    }
    let r = a.command("UID SEARCH HEADER Content-Type pdf").ok();
    assert_eq!(r.untagged, ["* SEARCH"], "top-level header only: {r:?}");

    // Bare LF in: CRLF stored and served, the size counting what is served.
    let bare = b"From: lf@example.net\nSubject: bare\n\nline one\nline two\n";
    let r = a.append("INBOX", "", bare).ok();
    let uid: u32 = r
        .status
        .split_whitespace()
        .nth(3)
        .and_then(|s| s.trim_end_matches(']').parse().ok())
        .expect("APPENDUID");
    let want = b"From: lf@example.net\r\nSubject: bare\r\n\r\nline one\r\nline two\r\n";
    c.command("NOOP").ok();
    let r = c
        .command(&format!("UID FETCH {uid} (RFC822.SIZE BODY.PEEK[])"))
        .ok();
    let text = r.all_text();
    assert!(
        text.contains(&format!("RFC822.SIZE {}", want.len())),
        "{text}"
    );
    assert!(text.contains(std::str::from_utf8(want).unwrap()), "{text}");
}

#[test]
fn three_sessions_on_one_server() {
    // The story creates a top-level mailbox: no CPM folder rules.
    let server = Server::start_generic();
    server.add_user("alice", PASSWORD);
    story(&server, &server, &server);
}

#[test]
fn sessions_on_two_nodes_of_one_postgresql() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_sessions");
    let options = ServerOptions {
        storage_url: Some(db.url.clone()),
        extra_config: cpmstore_tests::server::GENERIC_IMAP.into(),
        ..Default::default()
    };
    let one = Server::start_with(options.clone());
    let two = Server::start_with(options);
    one.add_user("alice", PASSWORD);
    story(&one, &two, &one);

    // A NOOP or CHECK reads the store itself: what another node committed before it
    // was sent is seen at once, notification or not (ImapTest's checkpoints rely on
    // it). Repeated, as the notification sometimes wins the race anyway.
    let mut far = login(&two);
    let mut near = login(&one);
    far.command("SELECT INBOX").ok();
    near.command("SELECT INBOX").ok();
    far.command("NOOP").ok();
    for (i, poll) in ["NOOP", "CHECK", "NOOP", "CHECK", "NOOP"]
        .iter()
        .enumerate()
    {
        let r = near.append("INBOX", "", &msg(100 + i as u32)).ok();
        assert!(r.status.starts_with("OK [APPENDUID"), "{r:?}");
        let r = far.command(poll).ok();
        assert!(
            r.untagged.iter().any(|l| l.ends_with(" EXISTS")),
            "{poll} right after the other node's APPEND: {r:?}"
        );
    }
}

/// The content of an expunged message is deleted once `expunged_retention_secs` has
/// passed (the purge runs at most once a minute, and at once for short retentions).
#[test]
fn expunged_content_goes_after_the_retention() {
    let server = Server::start_with(ServerOptions {
        extra_config: "[limits]\nexpunged_retention_secs = 1\n".into(),
        ..Default::default()
    });
    server.add_user("alice", PASSWORD);
    let mut a = login(&server);
    let mut b = login(&server);
    a.append("INBOX", "", &msg(1)).ok();
    a.append("INBOX", "", &msg(2)).ok();
    a.command("SELECT INBOX").ok();
    b.command("SELECT INBOX").ok();
    b.command("STORE 1 +FLAGS (\\Deleted)").ok();
    b.command("EXPUNGE").ok();
    // At first A reads it; once purged, a FETCH by sequence number says so, and still
    // answers the other message.
    let r = a.command("FETCH 1 (BODY.PEEK[TEXT])").ok();
    assert!(r.all_text().contains("word1x"), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = a.command("FETCH 1:2 (BODY.PEEK[TEXT])");
        if r.status.starts_with("NO [EXPUNGEISSUED]") {
            assert!(r.all_text().contains("word2x"), "{r:?}");
            assert!(!r.all_text().contains("word1x"), "{r:?}");
            break;
        }
        assert!(r.status.starts_with("OK"), "{r:?}");
        assert!(Instant::now() < deadline, "never purged: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
