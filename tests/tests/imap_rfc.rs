//! RFC 3501 behaviours where cpmstore was checked against Dovecot's ImapTest scripted
//! tests (dovecot/imaptest `src/tests/`) and once answered differently. Each test
//! states the behaviour in our own words, over real TLS sockets against the real
//! binary (SQLite).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use cpmstore_tests::imap_client::{Client, Reply, quote};
use cpmstore_tests::server::Server;

const USER: &str = "rita";
const PASSWORD: &str = "rfc 3501 pass";

fn note(n: u32) -> Vec<u8> {
    format!(
        "From: Nora <nora@example.org>\r\nTo: rita@example.org\r\nSubject: note {n}\r\n\r\nNote number {n}.\r\n"
    )
    .into_bytes()
}

fn start() -> Server {
    // These tests create top-level mailboxes: no CPM folder rules.
    let server = Server::start_generic();
    server.add_user(USER, PASSWORD);
    server
}

fn login(server: &Server) -> Client {
    Client::login(server.imaps, USER, PASSWORD)
}

/// The untagged `* <n> <word>` count, e.g. `count(&r, "RECENT")`.
fn count(r: &Reply, word: &str) -> Option<u32> {
    r.untagged.iter().find_map(|l| {
        let mut words = l.split(' ').skip(1);
        let n = words.next()?.parse().ok()?;
        words
            .next()
            .filter(|w| w.eq_ignore_ascii_case(word))
            .map(|_| n)
    })
}

/// The `RECENT n` of a `STATUS <mailbox> (RECENT)` reply.
fn status_recent(c: &mut Client, mailbox: &str) -> u32 {
    let r = c.command(&format!("STATUS {mailbox} (RECENT)")).ok();
    let line = r.lines_with("STATUS")[0].clone();
    let at = line.find("RECENT ").expect("RECENT in STATUS") + "RECENT ".len();
    line[at..]
        .trim_end_matches(')')
        .parse()
        .unwrap_or_else(|_| panic!("{line}"))
}

/// The FETCH FLAGS line for sequence number `seq`, if the reply has one.
fn flags_line(r: &Reply, seq: u32) -> Option<String> {
    let prefix = format!("* {seq} FETCH (");
    r.untagged
        .iter()
        .find(|l| l.starts_with(&prefix) && l.contains("FLAGS ("))
        .cloned()
}

/// The content of the first literal in the untagged lines of `r`.
fn literal(r: &Reply) -> String {
    let line = r
        .untagged
        .iter()
        .find(|l| l.contains("}\r\n"))
        .unwrap_or_else(|| panic!("no literal in {r:?}"));
    let open = line.find('{').expect("literal");
    let close = line[open..].find("}\r\n").expect("literal") + open;
    let len: usize = line[open + 1..close].parse().expect("literal length");
    line[close + 3..close + 3 + len].to_string()
}

#[test]
fn a_new_message_is_recent_in_one_session_only() {
    let server = start();
    let mut first = login(&server);
    let mut second = login(&server);
    let mut outside = login(&server);
    first.command("SELECT INBOX").ok();
    second.command("SELECT INBOX").ok();

    // Delivered by a session that does not have the mailbox open.
    outside.append("INBOX", "", &note(1)).ok();
    let r = first.command("NOOP").ok();
    assert_eq!(count(&r, "EXISTS"), Some(1), "{r:?}");
    assert_eq!(count(&r, "RECENT"), Some(1), "{r:?}");
    let r = second.command("NOOP").ok();
    assert_eq!(count(&r, "EXISTS"), Some(1), "{r:?}");
    assert_eq!(count(&r, "RECENT"), Some(0), "{r:?}");

    let r = first.command("FETCH 1 (FLAGS)").ok();
    assert!(flags_line(&r, 1).unwrap().contains("\\Recent"), "{r:?}");
    let r = second.command("FETCH 1 (FLAGS)").ok();
    assert!(!flags_line(&r, 1).unwrap().contains("\\Recent"), "{r:?}");
    // Claimed by a session: nobody else counts it as recent any more.
    assert_eq!(status_recent(&mut outside, "INBOX"), 0);

    // A session appending to the mailbox it has selected hears of the message at once
    // and is the one that has it as recent.
    let r = second.append("INBOX", "", &note(2)).ok();
    assert_eq!(count(&r, "EXISTS"), Some(2), "{r:?}");
    let r = second.command("FETCH 2 (FLAGS)").ok();
    assert!(flags_line(&r, 2).unwrap().contains("\\Recent"), "{r:?}");
    let r = first.command("NOOP").ok();
    assert_eq!(count(&r, "EXISTS"), Some(2), "{r:?}");
    let r = first.command("FETCH 2 (FLAGS)").ok();
    assert!(!flags_line(&r, 2).unwrap().contains("\\Recent"), "{r:?}");
    let r = first.command("FETCH 1 (FLAGS)").ok();
    assert!(flags_line(&r, 1).unwrap().contains("\\Recent"), "{r:?}");
}

#[test]
fn examine_shows_recent_messages_without_taking_them() {
    let server = start();
    let mut c = login(&server);
    c.append("INBOX", "", &note(1)).ok();
    c.append("INBOX", "", &note(2)).ok();
    assert_eq!(status_recent(&mut c, "INBOX"), 2);

    let r = c.command("EXAMINE INBOX").ok();
    assert!(r.status.starts_with("OK [READ-ONLY]"), "{r:?}");
    assert_eq!(count(&r, "RECENT"), Some(2), "{r:?}");
    let r = c.command("FETCH 1:2 (FLAGS)").ok();
    assert!(flags_line(&r, 1).unwrap().contains("\\Recent"), "{r:?}");
    c.command("CLOSE").ok();
    assert_eq!(status_recent(&mut c, "INBOX"), 2);

    // The first read-write SELECT takes them; after it, nobody else sees them recent.
    let r = c.command("SELECT INBOX").ok();
    assert_eq!(count(&r, "RECENT"), Some(2), "{r:?}");
    assert_eq!(status_recent(&mut c, "INBOX"), 2, "as this session sees it");
    c.command("CLOSE").ok();
    assert_eq!(status_recent(&mut c, "INBOX"), 0);
    let mut other = login(&server);
    let r = other.command("EXAMINE INBOX").ok();
    assert_eq!(count(&r, "RECENT"), Some(0), "{r:?}");
    let r = other.command("SELECT INBOX").ok();
    assert_eq!(count(&r, "RECENT"), Some(0), "{r:?}");
}

#[test]
fn a_message_expunged_elsewhere_is_answered_until_told() {
    let server = start();
    let mut a = login(&server);
    let mut b = login(&server);
    for n in 1..=3 {
        a.append("INBOX", "\\Flagged", &note(n)).ok();
    }
    a.command("SELECT INBOX").ok();
    b.command("SELECT INBOX").ok();
    b.command("STORE 3 +FLAGS.SILENT (\\Deleted)").ok();
    b.command("EXPUNGE").ok();

    // A has not been told: message 3 is still in its view, and UID and FLAGS are what
    // A already knows. No EXPUNGE while answering a FETCH.
    let r = a.command("FETCH 3 (UID FLAGS)").ok();
    let line = flags_line(&r, 3).unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        line.contains("UID 3") && line.contains("\\Flagged"),
        "{r:?}"
    );
    assert!(!r.untagged.iter().any(|l| l.ends_with("EXPUNGE")), "{r:?}");
    // What needs the message itself is still answered, as it was (as in Dovecot).
    let r = a.command("FETCH 3 (RFC822.SIZE BODY.PEEK[TEXT])").ok();
    assert!(r.all_text().contains("RFC822.SIZE "), "{r:?}");
    assert!(!r.untagged.iter().any(|l| l.ends_with("EXPUNGE")), "{r:?}");

    // A UID command may be told of expunges: it answers, then reports the expunge.
    let r = a.command("UID FETCH 3 (FLAGS)").ok();
    assert!(flags_line(&r, 3).is_some(), "{r:?}");
    assert_eq!(r.untagged[1..], ["* 3 EXPUNGE", "* 2 RECENT"], "{r:?}");
    let r = a.command("FETCH 1:* (UID)").ok();
    assert_eq!(r.lines_with("FETCH").len(), 2, "{r:?}");
}

#[test]
fn text_of_an_attached_multipart_message_runs_to_the_end_of_its_part() {
    let inner_body = "preamble text\r\n\
        --inner\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        first alternative\r\n\
        --inner--\r\n\
        trailing epilogue\r\n";
    let inner = format!(
        "From: Ola <ola@example.net>\r\n\
         Subject: attached\r\n\
         Content-Type: multipart/alternative; boundary=inner\r\n\
         \r\n\
         {inner_body}"
    );
    let message = format!(
        "From: Rita <rita@example.org>\r\n\
         Subject: forwarding\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: message/rfc822\r\n\
         \r\n\
         {inner}"
    );
    let server = start();
    let mut c = login(&server);
    c.append("INBOX", "", message.as_bytes()).ok();
    c.command("SELECT INBOX").ok();

    let r = c.command("FETCH 1 (BODY.PEEK[1.TEXT])").ok();
    assert_eq!(literal(&r), inner_body, "{r:?}");
    let r = c.command("FETCH 1 (BODY.PEEK[TEXT])").ok();
    assert_eq!(literal(&r), inner, "{r:?}");
    let r = c.command("FETCH 1 (BODY.PEEK[1])").ok();
    assert_eq!(literal(&r), inner, "{r:?}");
    let r = c.command("FETCH 1 (BODY.PEEK[1.1])").ok();
    assert_eq!(literal(&r), "first alternative", "{r:?}");
}

/// RFC 3501 5.1.3: a mailbox name is modified UTF-7, in its one valid spelling. Every
/// command that creates, opens or writes to a mailbox refuses a malformed name with
/// NO [CANNOT] saying why, and nothing is created; valid names work and are listed as sent.
/// DELETE (like RENAME's source, UNSUBSCRIBE and LIST) takes any name, so one stored
/// before the check can still be removed: a malformed name it cannot find is NO.
#[test]
fn mailbox_names_must_be_valid_modified_utf7() {
    const WHY: &str =
        "NO [CANNOT] Invalid mailbox name: malformed modified UTF-7 (RFC 3501 5.1.3): ";
    let server = start();
    let mut c = login(&server);
    let listed = |c: &mut Client| {
        let mut lines = c.command("LIST \"\" \"*\"").ok().untagged;
        lines.sort();
        lines
    };
    let before = listed(&mut c);

    let invalid = [
        ("&Jjo", "no '-' closes"),
        ("&AGE-", "encodes printable US-ASCII"),
        ("m&AAA-", "encodes a control character"),
        ("&/+8-", "byte 1 is not modified BASE64"),
        ("&AOk-&AOk-", "directly follows another"),
        ("&AOl-", "padding bits"),
        ("&2D0-", "unpaired UTF-16 surrogate"),
        ("&AOkA-", "whole UTF-16 code units"),
        ("Work/&AGE-", "byte 5"),
    ];
    for (name, reason) in invalid {
        let r = c.command(&format!("CREATE {}", quote(name)));
        assert!(r.status.starts_with(WHY), "CREATE {name}: {r:?}");
        assert!(r.status.contains(reason), "CREATE {name}: {r:?}");
    }
    // A raw 8-bit name (no UTF8=ACCEPT here) in a literal.
    let tag = c.tag();
    c.send_raw(format!("{tag} CREATE {{9+}}\r\nEntw\u{fc}rfe\r\n").as_bytes());
    let r = c.read_reply(&tag);
    assert!(
        r.status.starts_with(WHY) && r.status.contains("8-bit"),
        "{r:?}"
    );
    assert_eq!(listed(&mut c), before, "a refused CREATE created nothing");

    // Every other command that names a mailbox to open or write to.
    let bad = "&AGE-";
    c.append("INBOX", "", &note(1)).ok();
    for command in [
        format!("SELECT {}", quote(bad)),
        format!("EXAMINE {}", quote(bad)),
        format!("STATUS {} (MESSAGES)", quote(bad)),
        format!("SUBSCRIBE {}", quote(bad)),
        format!("RENAME INBOX {}", quote(bad)),
    ] {
        let r = c.command(&command);
        assert!(r.status.starts_with(WHY), "{command}: {r:?}");
    }
    let r = c.append(bad, "", &note(2));
    assert!(r.status.starts_with(WHY), "APPEND: {r:?}");
    c.command("SELECT INBOX").ok();
    for command in ["COPY", "MOVE", "UID COPY"] {
        let r = c.command(&format!("{command} 1 {}", quote(bad)));
        assert!(r.status.starts_with(WHY), "{command}: {r:?}");
    }
    c.command("UNSELECT").ok();
    let r = c.command(&format!("DELETE {}", quote(bad)));
    assert!(r.status.starts_with("NO [NONEXISTENT]"), "DELETE: {r:?}");
    assert_eq!(listed(&mut c), before, "nothing was created");

    // Valid names: Japanese, a German umlaut between ASCII, an escaped '&'.
    for name in ["&ZeVnLIqe-", "Entw&APw-rfe", "R&-D", "&ZeVnLIqe-/&U,BTFw-"] {
        c.command(&format!("CREATE {}", quote(name))).ok();
        c.append(name, "", &note(3)).ok();
        let r = c.command(&format!("SELECT {}", quote(name))).ok();
        assert_eq!(count(&r, "EXISTS"), Some(1), "{name}: {r:?}");
        c.command(&format!("SUBSCRIBE {}", quote(name))).ok();
        let r = c
            .command(&format!("STATUS {} (MESSAGES)", quote(name)))
            .ok();
        assert!(r.untagged[0].contains("(MESSAGES 1)"), "{name}: {r:?}");
    }
    let after = listed(&mut c).join("\n");
    for name in ["&ZeVnLIqe-", "Entw&APw-rfe", "R&-D", "&ZeVnLIqe-/&U,BTFw-"] {
        assert!(after.contains(&quote(name)), "{name} not listed:\n{after}");
    }
}

/// RFC 2971: ID takes up to 30 field/value pairs, fields up to 30 octets and values up
/// to 1,024; the largest such command is allowed before login (ImapTest's `id` test
/// sends it), while the pre-auth cap still refuses anything beyond 32 KiB.
#[test]
fn the_largest_id_fits_before_login() {
    let server = start();
    let mut c = Client::plain(server.imap);
    let pairs: Vec<String> = (0..30)
        .map(|i| format!("\"{:0>30}\" \"{}\"", i, "v".repeat(1024)))
        .collect();
    let command = format!("ID ({})", pairs.join(" "));
    assert!(command.len() > 31_000, "{}", command.len());
    let r = c.command(&command);
    assert!(r.status.starts_with("OK"), "{r:?}");
    assert!(!r.lines_with("ID").is_empty(), "{r:?}");
    // Beyond the cap: refused, and the connection is closed.
    let tag = c.tag();
    c.send_raw(format!("{tag} ID (\"x\" \"{}\")\r\n", "v".repeat(40_000)).as_bytes());
    let mut answer = String::new();
    while let Ok(line) = c.read_line() {
        answer.push_str(&line);
        answer.push('\n');
    }
    assert!(answer.contains("BAD [TOOBIG]"), "{answer}");
}
