//! QRESYNC (RFC 7162 section 3.2) end to end, over real sockets against the real
//! binary: SQLite, and PostgreSQL when `CPMSTORE_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use cpmstore_tests::imap_client::{Client, Reply};
use cpmstore_tests::modseq::{
    code_in, fill, login, message, number_after, on_postgres, server_with_user, status_highest,
};
use cpmstore_tests::server::Server;

/// A logged-in session that has enabled QRESYNC.
fn qresync_login(server: &Server) -> Client {
    let mut c = login(server);
    let r = c.command("ENABLE QRESYNC").ok();
    assert_eq!(r.untagged, vec!["* ENABLED QRESYNC".to_string()]);
    c
}

fn uidvalidity(reply: &Reply) -> u64 {
    code_in(reply, "UIDVALIDITY").unwrap_or_else(|| panic!("no UIDVALIDITY: {reply:?}"))
}

fn highest(reply: &Reply) -> u64 {
    code_in(reply, "HIGHESTMODSEQ").unwrap_or_else(|| panic!("no HIGHESTMODSEQ: {reply:?}"))
}

/// The resynchronisation part of a reply: its VANISHED and FETCH lines, in order.
fn resync_lines(reply: &Reply) -> Vec<String> {
    reply
        .untagged
        .iter()
        .filter(|l| l.starts_with("* VANISHED") || l.contains(" FETCH "))
        .cloned()
        .collect()
}

/// The MODSEQ of each UID, by `UID FETCH 1:* (MODSEQ)` on a session of its own.
fn modseq_of_uid(server: &Server, uid: u32) -> u64 {
    let mut c = login(server);
    c.command("EXAMINE INBOX").ok();
    let r = c.command(&format!("UID FETCH {uid} (MODSEQ)")).ok();
    let line = r.lines_with("FETCH")[0].clone();
    number_after(&line, "MODSEQ (").unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn capability_and_enable() {
    let server = server_with_user();
    let mut anonymous = Client::tls(server.imaps);
    let caps = anonymous.command("CAPABILITY").ok();
    assert!(
        !caps.lines_with("CAPABILITY")[0].contains("QRESYNC"),
        "QRESYNC is a post-login capability: {caps:?}"
    );
    let mut c = login(&server);
    let caps = c.command("CAPABILITY").ok();
    let line = caps.lines_with("CAPABILITY")[0].clone();
    assert!(line.split(' ').any(|w| w == "QRESYNC"), "{line}");

    fill(&mut c, 1);
    // Without any ENABLE, SELECT says no HIGHESTMODSEQ.
    let r = c.command("SELECT INBOX").ok();
    assert_eq!(code_in(&r, "HIGHESTMODSEQ"), None, "{r:?}");
    c.command("UNSELECT").ok();
    let r = c.command("ENABLE QRESYNC").ok();
    assert_eq!(r.untagged, vec!["* ENABLED QRESYNC".to_string()]);
    // QRESYNC implies CONDSTORE: SELECT tells HIGHESTMODSEQ, and enabling CONDSTORE
    // now enables nothing new.
    let r = c.command("SELECT INBOX").ok();
    assert_eq!(highest(&r), status_highest(&mut login(&server)));
    let r = c.command("ENABLE CONDSTORE QRESYNC").ok();
    assert_eq!(r.untagged, vec!["* ENABLED".to_string()]);

    // Both at once, case-insensitively.
    let mut both = login(&server);
    let r = both.command("ENABLE CONDSTORE qresync").ok();
    assert_eq!(r.untagged, vec!["* ENABLED CONDSTORE QRESYNC".to_string()]);
    // CONDSTORE first, then QRESYNC: each ENABLED once.
    let mut stepwise = login(&server);
    let r = stepwise.command("ENABLE CONDSTORE").ok();
    assert_eq!(r.untagged, vec!["* ENABLED CONDSTORE".to_string()]);
    let r = stepwise.command("ENABLE QRESYNC").ok();
    assert_eq!(r.untagged, vec!["* ENABLED QRESYNC".to_string()]);
}

#[test]
fn qresync_syntax_is_bad_without_enable() {
    let server = server_with_user();
    let mut c = login(&server);
    fill(&mut c, 2);
    let r = c.command("SELECT INBOX (QRESYNC (1 1))");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    // CONDSTORE is not enough.
    c.command("ENABLE CONDSTORE").ok();
    let r = c.command("SELECT INBOX (QRESYNC (1 1))");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    c.command("SELECT INBOX").ok();
    let r = c.command("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    assert!(r.lines_with("FETCH").is_empty(), "{r:?}");
    // The same without VANISHED is fine.
    let r = c.command("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)").ok();
    assert_eq!(r.lines_with("FETCH").len(), 2, "{r:?}");

    c.command("ENABLE QRESYNC").ok();
    // VANISHED only on UID FETCH, and only with CHANGEDSINCE.
    let r = c.command("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    let r = c.command("UID FETCH 1:* (FLAGS) (VANISHED)");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    let r = c
        .command("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
        .ok();
    assert_eq!(r.lines_with("FETCH").len(), 2, "{r:?}");
}

/// Another session changes flags, expunges (EXPUNGE, UID EXPUNGE, MOVE) and appends
/// after a client last knew the mailbox; SELECT (QRESYNC ...) tells it exactly that.
fn resync_story(server: &Server) {
    let mut a = qresync_login(server);
    fill(&mut a, 8);
    let r = a.command("SELECT INBOX").ok();
    let uv = uidvalidity(&r);
    let known = highest(&r);
    a.command("LOGOUT");

    let mut b = login(server);
    b.command("CREATE Done").ok();
    b.command("SELECT INBOX").ok();
    b.command("UID STORE 2 +FLAGS (\\Seen)").ok();
    b.command("UID STORE 5 +FLAGS (\\Flagged)").ok();
    b.command("UID STORE 3:4 +FLAGS (\\Deleted)").ok();
    b.command("EXPUNGE").ok();
    let after_expunge = status_highest(&mut b);
    b.command("UID STORE 6 +FLAGS (\\Deleted)").ok();
    b.command("UID EXPUNGE 6").ok();
    b.command("UID MOVE 8 Done").ok();
    b.append("INBOX", "\\Answered", &message(9)).ok();
    b.command("NOOP").ok();
    // Live now: 1 2 5 7 9, as sequence numbers 1 to 5.
    let (m2, m5, m9) = (
        modseq_of_uid(server, 2),
        modseq_of_uid(server, 5),
        modseq_of_uid(server, 9),
    );
    let now = status_highest(&mut b);

    // Everything since what the client knew.
    let mut c = qresync_login(server);
    let r = c
        .command(&format!("SELECT INBOX (QRESYNC ({uv} {known}))"))
        .ok();
    assert_eq!(highest(&r), now);
    assert_eq!(
        resync_lines(&r),
        vec![
            "* VANISHED (EARLIER) 3:4,6,8".to_string(),
            format!("* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ ({m2}))"),
            format!("* 3 FETCH (UID 5 FLAGS (\\Flagged) MODSEQ ({m5}))"),
            format!("* 5 FETCH (UID 9 FLAGS (\\Answered) MODSEQ ({m9}))"),
        ]
    );
    // The resync lines come after the normal answer, before the tagged OK.
    let vanished_at = r
        .untagged
        .iter()
        .position(|l| l.starts_with("* VANISHED"))
        .unwrap();
    let uidnext_at = r
        .untagged
        .iter()
        .position(|l| l.contains("[UIDNEXT "))
        .unwrap();
    assert!(uidnext_at < vanished_at, "{r:?}");
    assert!(r.status.starts_with("OK [READ-WRITE]"), "{r:?}");
    assert_eq!(code_in(&r, "UIDNEXT"), Some(10));
    // Nothing is told twice: the session is in step.
    let r = c.command("NOOP").ok();
    assert!(r.untagged.is_empty(), "{r:?}");

    // Known UIDs limit both the vanished and the changed (EXAMINE alike); the
    // seq-match-data is accepted.
    let mut d = qresync_login(server);
    let r = d
        .command(&format!("EXAMINE INBOX (QRESYNC ({uv} {known} 1:4))"))
        .ok();
    assert!(r.status.starts_with("OK [READ-ONLY]"), "{r:?}");
    assert_eq!(
        resync_lines(&r),
        vec![
            "* VANISHED (EARLIER) 3:4".to_string(),
            format!("* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ ({m2}))"),
        ]
    );
    let r = d
        .command(&format!(
            "EXAMINE INBOX (QRESYNC ({uv} {known} 5:* (1:2 1:2)))"
        ))
        .ok();
    assert_eq!(
        resync_lines(&r),
        vec![
            "* VANISHED (EARLIER) 6,8".to_string(),
            format!("* 3 FETCH (UID 5 FLAGS (\\Flagged) MODSEQ ({m5}))"),
            format!("* 5 FETCH (UID 9 FLAGS (\\Answered) MODSEQ ({m9}))"),
        ]
    );

    // A later MODSEQ: only what came after it.
    let r = d
        .command(&format!("EXAMINE INBOX (QRESYNC ({uv} {after_expunge}))"))
        .ok();
    assert_eq!(
        resync_lines(&r),
        vec![
            "* VANISHED (EARLIER) 6,8".to_string(),
            format!("* 5 FETCH (UID 9 FLAGS (\\Answered) MODSEQ ({m9}))"),
        ]
    );
    // Up to date: nothing.
    let r = d
        .command(&format!("EXAMINE INBOX (QRESYNC ({uv} {now}))"))
        .ok();
    assert!(resync_lines(&r).is_empty(), "{r:?}");
    // Another UIDVALIDITY: the client's cache is worthless, no resync data at all.
    let r = d
        .command(&format!("SELECT INBOX (QRESYNC ({} {known}))", uv + 1))
        .ok();
    assert!(resync_lines(&r).is_empty(), "{r:?}");
    assert_eq!(uidvalidity(&r), uv);
}

#[test]
fn select_qresync_tells_vanished_and_changed() {
    resync_story(&server_with_user());
}

/// A QRESYNC session hears of expunges as VANISHED: its own EXPUNGE and UID EXPUNGE,
/// another session's (in a command's answer and in IDLE, MOVE included); CLOSE stays
/// silent but leaves its tombstone. A session without QRESYNC still hears EXPUNGE.
fn vanished_story(server: &Server) {
    let mut a = qresync_login(server);
    a.command("CREATE Done").ok();
    fill(&mut a, 7);
    let r = a.command("SELECT INBOX").ok();
    let uv = uidvalidity(&r);
    let mut plain = login(server);
    plain.command("SELECT INBOX").ok();
    let mut b = login(server);
    b.command("SELECT INBOX").ok();

    // Its own EXPUNGE.
    a.command("STORE 1 +FLAGS.SILENT (\\Deleted)").ok();
    let r = a.command("EXPUNGE").ok();
    // The expunged message was \Recent here: the new RECENT count follows.
    assert_eq!(r.untagged, ["* VANISHED 1", "* 6 RECENT"]);
    // The plain session: the classic EXPUNGE (with the flag change first).
    let r = plain.command("NOOP").ok();
    assert_eq!(r.lines_with("EXPUNGE"), vec!["* 1 EXPUNGE"]);
    assert!(!r.all_text().contains("VANISHED"), "{r:?}");
    b.command("NOOP").ok();

    // Its own UID EXPUNGE.
    a.command("UID STORE 2:3 +FLAGS.SILENT (\\Deleted)").ok();
    let r = a.command("UID EXPUNGE 3").ok();
    assert_eq!(r.untagged, ["* VANISHED 3", "* 5 RECENT"]);

    // Another session's EXPUNGE, told in the next command's answer, as one set.
    b.command("UID STORE 4:5 +FLAGS.SILENT (\\Deleted)").ok();
    b.command("UID EXPUNGE 2:5").ok();
    let r = a.command("NOOP").ok();
    let vanished: Vec<&String> = r
        .untagged
        .iter()
        .filter(|l| l.starts_with("* VANISHED"))
        .collect();
    assert_eq!(vanished, vec!["* VANISHED 2,4:5"], "{r:?}");
    assert!(r.lines_with("EXPUNGE").is_empty(), "{r:?}");
    let r = a.command("UID FETCH 1:* (UID)").ok();
    assert_eq!(
        r.lines_with("FETCH"),
        vec!["* 1 FETCH (UID 6)", "* 2 FETCH (UID 7)"]
    );

    // In IDLE, at once: another session's MOVE.
    let tag = a.tag();
    a.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    let cont = a.read_line().unwrap();
    assert!(cont.starts_with('+'), "{cont}");
    b.command("UID MOVE 6 Done").ok();
    a.set_timeout(Duration::from_secs(10));
    let mut line = a.read_line().unwrap();
    while line.starts_with("* OK") {
        line = a.read_line().unwrap();
    }
    assert_eq!(line, "* VANISHED 6");
    a.send_raw(b"DONE\r\n");
    let r = a.read_reply(&tag);
    assert!(r.is_ok(), "{r:?}");
    let r = a.command("NOOP").ok();
    assert!(r.untagged.is_empty(), "told once: {r:?}");

    // CLOSE is silent, and leaves a tombstone a resync finds.
    let before_close = status_highest(&mut b);
    a.command("STORE 1 +FLAGS.SILENT (\\Deleted)").ok();
    let r = a.command("CLOSE").ok();
    assert!(r.untagged.is_empty(), "{r:?}");
    let r = a
        .command(&format!("SELECT INBOX (QRESYNC ({uv} {before_close}))"))
        .ok();
    assert_eq!(
        resync_lines(&r),
        vec!["* VANISHED (EARLIER) 7".to_string()],
        "{r:?}"
    );
    assert!(r.untagged.contains(&"* 0 EXISTS".to_string()), "{r:?}");
}

#[test]
fn vanished_replaces_expunge() {
    vanished_story(&server_with_user());
}

#[test]
fn uid_fetch_changedsince_vanished() {
    let server = server_with_user();
    let mut a = qresync_login(&server);
    fill(&mut a, 5);
    let r = a.command("SELECT INBOX").ok();
    let since = highest(&r);
    let r = a.command("UID STORE 1 +FLAGS (\\Seen)").ok();
    let stored = number_after(&r.lines_with("FETCH")[0].clone(), "MODSEQ (").unwrap();
    a.command("UID STORE 2,4 +FLAGS.SILENT (\\Deleted)").ok();
    let r = a.command("EXPUNGE").ok();
    assert_eq!(r.untagged, ["* VANISHED 2,4", "* 3 RECENT"]);
    let after = status_highest(&mut a);

    let r = a
        .command(&format!(
            "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)"
        ))
        .ok();
    assert_eq!(
        r.untagged,
        vec![
            "* VANISHED (EARLIER) 2,4".to_string(),
            format!("* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ ({stored}))"),
        ]
    );
    // Within the set only.
    let r = a
        .command(&format!(
            "UID FETCH 3:5 (FLAGS) (CHANGEDSINCE {since} VANISHED)"
        ))
        .ok();
    assert_eq!(r.untagged, vec!["* VANISHED (EARLIER) 4".to_string()]);
    // Nothing since the expunge.
    let r = a
        .command(&format!(
            "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {after} VANISHED)"
        ))
        .ok();
    assert!(r.untagged.is_empty(), "{r:?}");
    // Without VANISHED, CHANGEDSINCE alone says nothing of expunges.
    let r = a
        .command(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since})"))
        .ok();
    assert_eq!(
        r.untagged,
        vec![format!(
            "* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ ({stored}))"
        )]
    );
}

#[test]
fn reselect_says_closed() {
    let server = server_with_user();
    let mut c = login(&server);
    fill(&mut c, 1);
    c.command("CREATE Other").ok();
    let r = c.command("SELECT INBOX").ok();
    assert!(
        !r.all_text().contains("[CLOSED]"),
        "nothing was selected: {r:?}"
    );
    // Without anything enabled, and with QRESYNC: CLOSED first, then the new mailbox.
    let r = c.command("EXAMINE Other").ok();
    assert!(r.untagged[0].starts_with("* OK [CLOSED]"), "{r:?}");
    assert_eq!(
        r.untagged.iter().filter(|l| l.contains("[CLOSED]")).count(),
        1
    );
    c.command("ENABLE QRESYNC").ok();
    let r = c.command("SELECT INBOX").ok();
    assert!(r.untagged[0].starts_with("* OK [CLOSED]"), "{r:?}");
    assert!(r.untagged.contains(&"* 1 EXISTS".to_string()), "{r:?}");
    // After UNSELECT or CLOSE there is nothing to close.
    c.command("UNSELECT").ok();
    let r = c.command("SELECT INBOX").ok();
    assert!(!r.all_text().contains("[CLOSED]"), "{r:?}");
    c.command("CLOSE").ok();
    let r = c.command("EXAMINE INBOX").ok();
    assert!(!r.all_text().contains("[CLOSED]"), "{r:?}");
    // A SELECT that fails still closed the mailbox.
    let r = c.command("SELECT Nowhere");
    assert!(r.status.starts_with("NO"), "{r:?}");
    assert!(r.untagged[0].starts_with("* OK [CLOSED]"), "{r:?}");
    let r = c.command("FETCH 1 (FLAGS)");
    assert!(r.status.starts_with("BAD"), "nothing selected now: {r:?}");
}

#[test]
fn qresync_on_postgres() {
    on_postgres("cpmstore_qresync", resync_story);
}

#[test]
fn vanished_on_postgres() {
    on_postgres("cpmstore_qresync", vanished_story);
}
