//! CONDSTORE (RFC 7162 section 3.1) end to end, over real sockets against the real
//! binary: SQLite, and PostgreSQL when `CPMSTORE_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use cpmstore_tests::imap_client::{Client, Reply};
use cpmstore_tests::modseq::{
    code_in, fill, login, message, modseq, on_postgres, server_with_user, status_highest,
};
use cpmstore_tests::server::Server;

/// The `[HIGHESTMODSEQ n]` of a reply (untagged OK lines).
fn highest_in(reply: &Reply) -> Option<u64> {
    code_in(reply, "HIGHESTMODSEQ")
}

/// The FETCH lines of a reply for sequence number `seq`.
fn fetches_of(reply: &Reply, seq: u32) -> Vec<String> {
    let prefix = format!("* {seq} FETCH ");
    reply
        .untagged
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .cloned()
        .collect()
}

/// Every MODSEQ of `FETCH 1:* (MODSEQ)`, by sequence number.
fn all_modseqs(c: &mut Client) -> Vec<u64> {
    let r = c.command("FETCH 1:* (MODSEQ)").ok();
    let lines = r.lines_with("FETCH");
    lines.iter().map(|l| modseq(l)).collect()
}

#[test]
fn capability_enable_and_select_tell_highestmodseq() {
    let server = server_with_user();
    let mut anonymous = Client::tls(server.imaps);
    let caps = anonymous.command("CAPABILITY").ok();
    assert!(
        !caps.lines_with("CAPABILITY")[0].contains("CONDSTORE"),
        "CONDSTORE is a post-login capability: {caps:?}"
    );

    let mut c = login(&server);
    let caps = c.command("CAPABILITY").ok();
    let line = caps.lines_with("CAPABILITY")[0].clone();
    assert!(line.split(' ').any(|w| w == "CONDSTORE"), "{line}");
    fill(&mut c, 2);

    // A plain SELECT of a session that has not enabled CONDSTORE: no HIGHESTMODSEQ.
    let plain = c.command("SELECT INBOX").ok();
    assert_eq!(highest_in(&plain), None, "{plain:?}");
    // ENABLE while selected: ENABLED lists it, and the mailbox's HIGHESTMODSEQ is told.
    let enabled = c.command("ENABLE CONDSTORE").ok();
    assert!(
        enabled
            .untagged
            .contains(&"* ENABLED CONDSTORE".to_string()),
        "{enabled:?}"
    );
    let told = highest_in(&enabled).expect("HIGHESTMODSEQ after ENABLE while selected");
    // Enabling again enables nothing new.
    let again = c.command("ENABLE CONDSTORE").ok();
    assert_eq!(again.untagged, vec!["* ENABLED".to_string()]);
    // From now on every SELECT tells it, equal to STATUS's.
    let select = c.command("SELECT INBOX").ok();
    let selected = highest_in(&select).expect("HIGHESTMODSEQ in SELECT");
    assert_eq!(selected, told);

    let mut other = login(&server);
    assert_eq!(status_highest(&mut other), selected);
    // SELECT (CONDSTORE) tells it even to a session that enabled nothing before.
    let mut fresh = login(&server);
    let r = fresh.command("SELECT INBOX (CONDSTORE)").ok();
    assert_eq!(highest_in(&r), Some(selected));
    assert!(r.status.starts_with("OK [READ-WRITE]"), "{r:?}");
    let mut examining = login(&server);
    let r = examining.command("EXAMINE INBOX (CONDSTORE)").ok();
    assert_eq!(highest_in(&r), Some(selected));
    assert!(r.status.starts_with("OK [READ-ONLY]"), "{r:?}");
    // ENABLE before selecting: ENABLED, then SELECT tells it.
    let mut early = login(&server);
    let r = early.command("ENABLE CONDSTORE").ok();
    assert_eq!(r.untagged, vec!["* ENABLED CONDSTORE".to_string()]);
    let r = early.command("SELECT INBOX").ok();
    assert_eq!(highest_in(&r), Some(selected));
    // QRESYNC is not enabled (CONDSTORE is not enough): its SELECT parameter is refused.
    let r = early.command("SELECT INBOX (QRESYNC (1 1))");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    // Never NOMODSEQ.
    let r = fresh.command("SELECT INBOX (CONDSTORE)").ok();
    assert!(!r.all_text().contains("NOMODSEQ"), "{r:?}");
}

#[test]
fn highestmodseq_grows_with_append_store_expunge() {
    let server = server_with_user();
    let mut c = login(&server);
    let start = status_highest(&mut c);
    c.append("INBOX", "", &message(1)).ok();
    let after_append = status_highest(&mut c);
    assert!(after_append > start, "{start} -> {after_append}");
    c.append("INBOX", "", &message(2)).ok();
    let after_second = status_highest(&mut c);
    assert!(after_second > after_append);

    let select = c.command("SELECT INBOX (CONDSTORE)").ok();
    assert_eq!(highest_in(&select), Some(after_second));
    let modseqs = all_modseqs(&mut c);
    assert_eq!(modseqs.len(), 2);
    assert!(modseqs[0] < modseqs[1], "{modseqs:?}");
    assert_eq!(
        modseqs[1], after_second,
        "the last APPEND's MODSEQ is the highest"
    );

    let r = c.command("STORE 1 +FLAGS (\\Deleted)").ok();
    let stored = modseq(&fetches_of(&r, 1)[0]);
    let after_store = status_highest(&mut c);
    assert!(after_store > after_second);
    assert_eq!(stored, after_store);
    // A STORE that changes nothing changes no MODSEQ.
    c.command("STORE 1 +FLAGS (\\Deleted)").ok();
    assert_eq!(status_highest(&mut c), after_store);

    let r = c.command("EXPUNGE").ok();
    assert_eq!(r.lines_with("EXPUNGE"), vec!["* 1 EXPUNGE"]);
    let after_expunge = status_highest(&mut c);
    assert!(
        after_expunge > after_store,
        "{after_store} -> {after_expunge}"
    );
    let r = c.command("SELECT INBOX").ok();
    assert_eq!(highest_in(&r), Some(after_expunge));
}

#[test]
fn fetch_modseq_and_changedsince() {
    let server = server_with_user();
    let mut c = login(&server);
    fill(&mut c, 3);
    let r = c.command("SELECT INBOX").ok();
    assert_eq!(highest_in(&r), None);
    // FETCH MODSEQ enables CONDSTORE: the selected mailbox's HIGHESTMODSEQ comes first.
    let r = c.command("FETCH 1:* (MODSEQ)").ok();
    let highest = highest_in(&r).expect("HIGHESTMODSEQ when FETCH MODSEQ enables CONDSTORE");
    let modseqs: Vec<u64> = r.lines_with("FETCH").iter().map(|l| modseq(l)).collect();
    assert_eq!(modseqs.len(), 3);
    assert!(modseqs[0] < modseqs[1] && modseqs[1] < modseqs[2]);
    assert_eq!(modseqs[2], highest);
    assert_eq!(
        r.lines_with("FETCH")[0].as_str(),
        format!("* 1 FETCH (MODSEQ ({}))", modseqs[0])
    );

    // Once enabled, FLAGS comes with MODSEQ, and STORE answers carry UID and MODSEQ.
    // (This session selected INBOX first: the messages are \Recent for it.)
    let r = c.command("FETCH 1 (FLAGS)").ok();
    assert_eq!(
        r.lines_with("FETCH")[0].as_str(),
        format!("* 1 FETCH (FLAGS (\\Recent) MODSEQ ({}))", modseqs[0])
    );
    let r = c.command("STORE 2 +FLAGS (\\Flagged)").ok();
    let line = fetches_of(&r, 2)[0].clone();
    assert!(
        line.contains("UID 2") && line.contains("\\Flagged"),
        "{line}"
    );
    let m2 = modseq(&line);
    assert!(m2 > highest);

    // CHANGEDSINCE: only what changed after it, with MODSEQ even if not asked.
    let r = c
        .command(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})"))
        .ok();
    assert_eq!(
        r.lines_with("FETCH"),
        vec![&format!(
            "* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ({m2}))"
        )]
    );
    let r = c
        .command(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m2})"))
        .ok();
    assert!(r.lines_with("FETCH").is_empty(), "{r:?}");
    let r = c
        .command(&format!("FETCH 1:* (UID) (CHANGEDSINCE {})", modseqs[0]))
        .ok();
    let seqs: Vec<&str> = r
        .lines_with("FETCH")
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(seqs, ["2", "3"]);
    // Items read from the message row and its content, with CHANGEDSINCE too.
    let r = c
        .command(&format!(
            "UID FETCH 1:* (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)]) (CHANGEDSINCE {highest})"
        ))
        .ok();
    let lines = r.lines_with("FETCH");
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(lines[0].starts_with("* 2 FETCH (UID 2 "), "{}", lines[0]);
    assert!(lines[0].contains(&format!("MODSEQ ({m2})")), "{}", lines[0]);
    assert!(lines[0].contains("Subject: note 2"), "{}", lines[0]);

    // A FETCH that sets \Seen tells the new flags with UID and MODSEQ.
    let r = c.command("FETCH 3 (BODY[TEXT])").ok();
    let line = fetches_of(&r, 3)[0].clone();
    assert!(line.contains("\\Seen") && line.contains("UID 3"), "{line}");
    let m3 = modseq(&line);
    assert!(m3 > m2);
    assert_eq!(status_highest(&mut c), m3);

    // A session without CONDSTORE gets no MODSEQ it did not ask for.
    let mut plain = login(&server);
    plain.command("SELECT INBOX").ok();
    let r = plain.command("FETCH 1:* (FLAGS)").ok();
    assert!(!r.all_text().contains("MODSEQ"), "{r:?}");
    let r = plain.command("STORE 1 +FLAGS (\\Answered)").ok();
    assert_eq!(
        r.lines_with("FETCH"),
        vec!["* 1 FETCH (FLAGS (\\Answered))"]
    );
    // VANISHED needs QRESYNC.
    let r = c.command("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)");
    assert!(r.status.starts_with("BAD"), "{r:?}");
}

/// UNCHANGEDSINCE: the messages changed meanwhile by another session are left alone and
/// listed in MODIFIED (sequence numbers for STORE, UIDs for UID STORE).
fn unchangedsince_story(server: &Server) {
    let mut a = login(server);
    fill(&mut a, 4);
    let mut b = login(server);
    // UID 1 goes: from now on sequence number n is UID n + 1.
    a.command("SELECT INBOX (CONDSTORE)").ok();
    a.command("UID STORE 1 +FLAGS.SILENT (\\Deleted)").ok();
    a.command("EXPUNGE").ok();
    b.command("SELECT INBOX").ok();
    let before = all_modseqs(&mut a);
    assert_eq!(before.len(), 3);
    let since = *before.iter().max().unwrap();

    // B changes message 2 (UID 3) after A read the MODSEQs.
    b.command("STORE 2 +FLAGS (\\Flagged)").ok();
    let r = a
        .command(&format!(
            "STORE 1:3 (UNCHANGEDSINCE {since}) +FLAGS (\\Seen)"
        ))
        .ok();
    assert_eq!(
        r.status, "OK [MODIFIED 2] Conditional STORE failed.",
        "{r:?}"
    );
    for seq in [1, 3] {
        let line = fetches_of(&r, seq)[0].clone();
        assert!(line.contains("\\Seen"), "{line}");
        assert!(modseq(&line) > since, "{line}");
    }
    // Message 2 was not changed: whatever A hears of it has B's flags only.
    for line in fetches_of(&r, 2) {
        assert!(!line.contains("\\Seen"), "{line}");
    }
    let r = a.command("FETCH 2 (FLAGS)").ok();
    let line = r.lines_with("FETCH")[0].clone();
    assert!(
        line.contains("\\Flagged") && !line.contains("\\Seen"),
        "{line}"
    );

    // UID STORE reports UIDs.
    let now = all_modseqs(&mut a);
    let since = *now.iter().max().unwrap();
    b.command("UID STORE 4 +FLAGS (\\Answered)").ok();
    let r = a
        .command(&format!(
            "UID STORE 2:4 (UNCHANGEDSINCE {since}) -FLAGS (\\Seen)"
        ))
        .ok();
    assert_eq!(
        r.status, "OK [MODIFIED 4] Conditional STORE failed.",
        "{r:?}"
    );
    let line = fetches_of(&r, 1)[0].clone();
    assert!(line.contains("UID 2") && !line.contains("\\Seen"), "{line}");

    // .SILENT still tells a CONDSTORE client the new MODSEQ, without FLAGS.
    let high = status_highest(&mut a);
    let r = a
        .command(&format!(
            "STORE 1 (UNCHANGEDSINCE {high}) +FLAGS.SILENT (\\Draft)"
        ))
        .ok();
    assert_eq!(r.status, "OK Store completed.", "{r:?}");
    let after = status_highest(&mut a);
    assert!(after > high);
    assert_eq!(
        fetches_of(&r, 1),
        vec![format!("* 1 FETCH (UID 2 MODSEQ ({after}))")]
    );

    // UNCHANGEDSINCE 0 fails for every message, and changes nothing.
    let r = a
        .command("STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS (\\Deleted)")
        .ok();
    assert_eq!(r.status, "OK [MODIFIED 1:3] Conditional STORE failed.");
    assert_eq!(status_highest(&mut a), after);
    let r = a.command("SEARCH DELETED").ok();
    assert_eq!(r.untagged, vec!["* SEARCH".to_string()]);

    // A session that only ever used UNCHANGEDSINCE is CONDSTORE-aware from then on.
    let mut c = login(server);
    c.command("SELECT INBOX").ok();
    let r = c
        .command("STORE 1 (UNCHANGEDSINCE 18446744073709551615) +FLAGS (\\Flagged)")
        .ok();
    assert!(highest_in(&r).is_some(), "{r:?}");
    let line = fetches_of(&r, 1)[0].clone();
    assert!(
        line.contains("MODSEQ (") && line.contains("UID 2"),
        "{line}"
    );
}

/// Flag changes by another session reach a CONDSTORE session with MODSEQ, at its next
/// command and in IDLE.
fn two_sessions_story(server: &Server) {
    let mut a = login(server);
    fill(&mut a, 2);
    a.command("SELECT INBOX (CONDSTORE)").ok();
    let mut plain = login(server);
    plain.command("SELECT INBOX").ok();
    let mut b = login(server);
    b.command("SELECT INBOX").ok();

    b.command("STORE 1 +FLAGS (\\Flagged)").ok();
    let highest = status_highest(&mut b);
    // A selected INBOX first: the messages are \Recent for it, not for the others.
    let r = a.command("NOOP").ok();
    assert_eq!(
        r.untagged,
        vec![format!(
            "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) MODSEQ ({highest}))"
        )]
    );
    let r = plain.command("NOOP").ok();
    assert_eq!(
        r.untagged,
        vec!["* 1 FETCH (UID 1 FLAGS (\\Flagged))".to_string()]
    );
    // Told once.
    let r = a.command("NOOP").ok();
    assert!(r.untagged.is_empty(), "{r:?}");

    // In IDLE, at once.
    let tag = a.tag();
    a.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    let cont = a.read_line().unwrap();
    assert!(cont.starts_with('+'), "{cont}");
    b.command("STORE 2 +FLAGS (\\Seen)").ok();
    let highest = status_highest(&mut b);
    a.set_timeout(Duration::from_secs(10));
    let mut line = a.read_line().unwrap();
    while line.starts_with("* OK") {
        line = a.read_line().unwrap();
    }
    assert_eq!(
        line,
        format!("* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ ({highest}))")
    );
    a.send_raw(b"DONE\r\n");
    assert!(a.read_reply(&tag).is_ok());

    // CHANGEDSINCE after these changes finds exactly them.
    let r = a
        .command(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {})", highest - 1))
        .ok();
    assert_eq!(r.lines_with("FETCH").len(), 1, "{r:?}");
    assert!(r.lines_with("FETCH")[0].starts_with("* 2 FETCH"), "{r:?}");
}

#[test]
fn unchangedsince_conflict_reports_modified() {
    unchangedsince_story(&server_with_user());
}

#[test]
fn other_sessions_flag_changes_carry_modseq() {
    two_sessions_story(&server_with_user());
}

#[test]
fn search_modseq() {
    let server = server_with_user();
    let mut c = login(&server);
    fill(&mut c, 4);
    c.command("SELECT INBOX").ok();
    // SEARCH without MODSEQ: no suffix, nothing enabled.
    let r = c.command("SEARCH ALL").ok();
    assert_eq!(r.untagged, vec!["* SEARCH 1 2 3 4".to_string()]);
    c.command("STORE 2 +FLAGS (\\Seen)").ok();
    c.command("STORE 4 +FLAGS (\\Seen)").ok();
    // The STOREs came after every APPEND: messages 2 and 4 hold the two highest MODSEQs.
    let r = c.command("SEARCH MODSEQ 1").ok();
    assert!(
        highest_in(&r).is_some(),
        "SEARCH MODSEQ enables CONDSTORE: {r:?}"
    );
    let modseqs = all_modseqs(&mut c);
    let highest = status_highest(&mut c);
    assert_eq!(modseqs[3], highest);
    assert!(
        modseqs[1] > modseqs[2] && modseqs[1] < modseqs[3],
        "{modseqs:?}"
    );

    let r = c.command(&format!("SEARCH MODSEQ {}", modseqs[1])).ok();
    assert_eq!(
        r.lines_with("SEARCH"),
        vec![&format!("* SEARCH 2 4 (MODSEQ {highest})")]
    );
    // The entry-name form is treated as the plain one; UID SEARCH answers UIDs.
    let r = c
        .command(&format!(
            "UID SEARCH MODSEQ \"/flags/\\\\seen\" all {}",
            modseqs[1]
        ))
        .ok();
    assert_eq!(
        r.lines_with("SEARCH"),
        vec![&format!("* SEARCH 2 4 (MODSEQ {highest})")]
    );
    // Combined with other keys; the suffix is the highest of the messages found.
    let r = c
        .command(&format!("SEARCH UNSEEN MODSEQ {}", modseqs[0]))
        .ok();
    assert_eq!(
        r.lines_with("SEARCH"),
        vec![&format!("* SEARCH 1 3 (MODSEQ {})", modseqs[2])]
    );
    // Nothing found: no suffix.
    let r = c.command(&format!("SEARCH MODSEQ {}", highest + 1)).ok();
    assert_eq!(r.untagged, vec!["* SEARCH".to_string()]);
    let r = c.command("SEARCH SEEN").ok();
    assert_eq!(r.untagged, vec!["* SEARCH 2 4".to_string()]);
}

#[test]
fn condstore_on_postgres() {
    on_postgres("cpmstore_condstore", |server| {
        unchangedsince_story(server);
        let mut c = login(server);
        c.command("CREATE Other").ok();
        let before = status_highest(&mut c);
        c.append("INBOX", "", &message(9)).ok();
        assert!(status_highest(&mut c) > before);
    });
}

#[test]
fn two_sessions_on_postgres() {
    on_postgres("cpmstore_condstore", two_sessions_story);
}

/// RFC 7162 3.2: while an expunge is held back (a FETCH is no moment to renumber), the
/// client may be shown higher MODSEQs of other messages; it is then told a
/// HIGHESTMODSEQ below the held-back expunge, so resynchronising from what it saw
/// cannot skip the expunge. Once the EXPUNGE is told, the warning stops.
#[test]
fn deferred_expunge_lowers_the_told_highestmodseq() {
    let server = server_with_user();
    let mut other = login(&server);
    fill(&mut other, 3);
    let mut c = login(&server);
    c.command("ENABLE CONDSTORE").ok();
    let selected = c.command("SELECT INBOX").ok();
    let before = highest_in(&selected).expect("HIGHESTMODSEQ at SELECT");

    other.command("SELECT INBOX").ok();
    other.command("STORE 1 +FLAGS (\\Deleted)").ok();
    other.command("EXPUNGE").ok();
    let expunged_at = status_highest(&mut other);
    other.command("STORE 2 +FLAGS (\\Flagged)").ok();

    // A FETCH: the expunge of message 1 waits (so the flagged message is still number
    // 3 here), its new MODSEQ is shown, and the session is told a HIGHESTMODSEQ below
    // the expunge.
    let fetched = c.command("FETCH 1:* (FLAGS)").ok();
    assert!(
        fetched.lines_with("EXPUNGE").is_empty(),
        "no EXPUNGE during FETCH: {fetched:#?}"
    );
    let flagged = fetches_of(&fetched, 3)
        .into_iter()
        .find(|l| l.contains("\\Flagged"))
        .unwrap_or_else(|| panic!("the flag change is told: {fetched:#?}"));
    assert!(modseq(&flagged) > expunged_at, "{flagged}");
    let told = highest_in(&fetched)
        .unwrap_or_else(|| panic!("HIGHESTMODSEQ told while the expunge waits: {fetched:#?}"));
    assert!(
        told >= before && told < expunged_at,
        "told {told}, SELECT said {before}, expunge at {expunged_at}"
    );

    // NOOP tells the EXPUNGE; nothing is pending any more.
    let noop = c.command("NOOP").ok();
    assert_eq!(noop.lines_with("EXPUNGE").len(), 1, "{noop:#?}");
    assert_eq!(highest_in(&noop), None, "{noop:#?}");
    let again = c.command("FETCH 1:* (FLAGS)").ok();
    assert_eq!(highest_in(&again), None, "{again:#?}");
}
