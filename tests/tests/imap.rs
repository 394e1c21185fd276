//! End-to-end IMAP tests over real sockets against the real binary (SQLite).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use cpmstore_tests::imap_client::{Client, quote};
use cpmstore_tests::server::Server;

const MSG: &[u8] = b"From: Alice <alice@example.net>\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <1@example.net>\r\n\r\nHello Bob.\r\n";

fn server_with_user() -> Server {
    // These tests create top-level mailboxes: no CPM folder rules.
    let server = Server::start_generic();
    server.add_user("alice", "correct horse");
    server
}

#[test]
fn cleartext_requires_starttls_before_login() {
    let server = server_with_user();
    let mut c = Client::plain(server.imap);
    assert!(c.greeting.starts_with("* OK"), "{}", c.greeting);
    let caps = c.command("CAPABILITY").ok();
    let line = caps.lines_with("CAPABILITY")[0].clone();
    assert!(
        line.contains("STARTTLS") && line.contains("LOGINDISABLED"),
        "{line}"
    );
    assert!(
        !line.contains("AUTH="),
        "no cleartext AUTH= before TLS: {line}"
    );
    let r = c.command("LOGIN alice \"correct horse\"");
    assert!(r.status.starts_with("NO [PRIVACYREQUIRED]"), "{r:?}");
    let r = c.command("AUTHENTICATE PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=");
    assert!(r.status.starts_with("NO [PRIVACYREQUIRED]"), "{r:?}");

    let mut c = Client::starttls(server.imap);
    let caps = c.command("CAPABILITY").ok();
    let line = caps.lines_with("CAPABILITY")[0].clone();
    assert!(
        line.contains("AUTH=PLAIN") && !line.contains("LOGINDISABLED"),
        "{line}"
    );
    let r = c.command("LOGIN alice \"correct horse\"").ok();
    assert!(
        r.status.contains("[CAPABILITY IMAP4rev1"),
        "post-login capabilities: {r:?}"
    );
    c.command("SELECT INBOX").ok();
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let server = server_with_user();
    let mut c = Client::plain(server.imap);
    // A command injected after STARTTLS in the same packet must not run inside TLS.
    c.send_raw(b"s1 STARTTLS\r\ns2 LOGIN alice \"correct horse\"\r\n");
    let r = c.read_reply("s1");
    assert!(r.is_ok(), "{r:?}");
    // The next bytes are the TLS handshake; if the server had kept "s2" it would answer
    // in plaintext now. Give it a moment and check nothing plaintext arrived.
    c.set_timeout(Duration::from_millis(300));
    assert!(
        c.read_line().is_err(),
        "server answered pipelined plaintext after STARTTLS"
    );
}

#[test]
fn implicit_tls_login_and_failures_look_alike() {
    let server = server_with_user();
    server.add_user("carol", "pw carol");
    let out = server.cli(&["subscriber", "disable", "carol"], "");
    assert!(out.status.success());

    let mut c = Client::tls(server.imaps);
    let wrong = c.command("LOGIN alice wrong");
    let unknown = c.command("LOGIN nobody wrong");
    assert_eq!(wrong.status, unknown.status);
    assert!(
        wrong.status.starts_with("NO [AUTHENTICATIONFAILED]"),
        "{wrong:?}"
    );
    let mut c = Client::tls(server.imaps);
    let disabled = c.command("LOGIN carol \"pw carol\"");
    assert_eq!(
        disabled.status, wrong.status,
        "a disabled account answers like a wrong password"
    );
    let mut c = Client::tls(server.imaps);
    c.command("LOGIN alice \"correct horse\"").ok();
}

#[test]
fn three_failures_close_the_connection() {
    let server = server_with_user();
    let mut c = Client::tls(server.imaps);
    for _ in 0..2 {
        assert!(
            c.command("LOGIN alice nope")
                .status
                .starts_with("NO [AUTHENTICATIONFAILED]")
        );
    }
    let r = c.command("LOGIN alice nope");
    assert!(r.untagged.iter().any(|l| l.starts_with("* BYE")), "{r:?}");
    assert!(c.read_line().is_err(), "connection should be closed");
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let server = server_with_user();
    // "\0alice\0correct horse"
    let b64 = "AGFsaWNlAGNvcnJlY3QgaG9yc2U=";
    let mut c = Client::tls(server.imaps);
    c.command(&format!("AUTHENTICATE PLAIN {b64}")).ok();

    let mut c = Client::tls(server.imaps);
    let tag = c.tag();
    c.send_raw(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes());
    assert!(c.read_line().unwrap().starts_with('+'));
    c.send_raw(format!("{b64}\r\n").as_bytes());
    assert!(c.read_reply(&tag).is_ok());

    // Cancelled with "*".
    let mut c = Client::tls(server.imaps);
    let tag = c.tag();
    c.send_raw(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes());
    assert!(c.read_line().unwrap().starts_with('+'));
    c.send_raw(b"*\r\n");
    assert!(c.read_reply(&tag).status.starts_with("BAD"));
    // Authorisation identity naming someone else is refused.
    let other = "Ym9iAGFsaWNlAGNvcnJlY3QgaG9yc2U="; // "bob\0alice\0correct horse"
    assert!(
        c.command(&format!("AUTHENTICATE PLAIN {other}"))
            .status
            .starts_with("NO [AUTHENTICATIONFAILED]")
    );
}

#[test]
fn commands_are_refused_in_the_wrong_state_and_garbage_gets_bad() {
    let server = server_with_user();
    let mut c = Client::tls(server.imaps);
    assert!(c.command("SELECT INBOX").status.starts_with("BAD"));
    assert!(c.command("FETCH 1 FLAGS").status.starts_with("BAD"));
    c.send_raw(b"x1 FROB\r\n");
    assert!(c.read_reply("x1").status.starts_with("BAD"));
    c.send_raw(b"x2 LOGIN\r\n");
    assert!(c.read_reply("x2").status.starts_with("BAD"));
    c.command("LOGIN alice \"correct horse\"").ok();
    assert!(
        c.command("FETCH 1 FLAGS").status.starts_with("BAD"),
        "no mailbox selected"
    );
    c.command("NOOP").ok();
}

#[test]
fn oversized_literal_is_refused_before_it_is_sent() {
    let server = Server::start_with(cpmstore_tests::server::ServerOptions {
        extra_config: "[limits]\nmax_literal_bytes = 1000\n".into(),
        ..Default::default()
    });
    server.add_user("alice", "correct horse");
    let mut c = Client::login(server.imaps, "alice", "correct horse");
    let caps = c.command("CAPABILITY").ok();
    assert!(caps.untagged[0].contains("APPENDLIMIT=1000"), "{caps:?}");
    let tag = c.tag();
    c.send_raw(format!("{tag} APPEND INBOX {{5000}}\r\n").as_bytes());
    // No continuation: an immediate tagged NO [TOOBIG].
    let r = c.read_reply(&tag);
    assert!(r.status.starts_with("NO [TOOBIG]"), "{r:?}");
    assert!(r.untagged.is_empty(), "no continuation expected: {r:?}");
    // The session goes on.
    c.append("INBOX", "", MSG).ok();
    // A non-synchronising literal that is too large ends the connection.
    let tag = c.tag();
    c.send_raw(format!("{tag} APPEND INBOX {{5000+}}\r\n").as_bytes());
    let r = c.read_reply(&tag);
    assert!(r.status.starts_with("BAD [TOOBIG]"), "{r:?}");
}

#[test]
fn mailboxes_list_create_rename_delete_subscribe_status() {
    let server = server_with_user();
    let mut c = Client::login(server.imaps, "alice", "correct horse");
    let list = c.command("LIST \"\" \"*\"").ok();
    let text = list.all_text();
    for (name, attr) in [
        ("Drafts", "\\Drafts"),
        ("Sent", "\\Sent"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ] {
        let line = list
            .untagged
            .iter()
            .find(|l| l.ends_with(&format!("\"/\" \"{name}\"")))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        assert!(line.contains(attr), "{line}");
    }
    assert!(text.contains("\"/\" INBOX"), "{text}");
    let r = c.command("LIST \"\" \"\"").ok();
    assert_eq!(
        r.untagged,
        vec!["* LIST (\\Noselect) \"/\" \"\"".to_string()]
    );

    c.command("CREATE work/projects/cpm").ok();
    let r = c.command("LIST \"\" \"work/%\"").ok();
    assert_eq!(
        r.untagged,
        vec!["* LIST (\\HasChildren) \"/\" \"work/projects\"".to_string()]
    );
    assert!(
        c.command("CREATE work")
            .status
            .starts_with("NO [ALREADYEXISTS]")
    );
    assert!(c.command("CREATE INBOX").status.starts_with("NO"));
    c.command("RENAME work job").ok();
    let r = c.command("LIST \"\" \"job*\"").ok();
    assert_eq!(r.untagged.len(), 3, "{r:?}");
    assert!(c.command("LIST \"\" \"work*\"").ok().untagged.is_empty());
    assert!(
        c.command("DELETE job").status.starts_with("NO"),
        "has children"
    );
    c.command("DELETE job/projects/cpm").ok();
    assert!(
        c.command("DELETE job/projects/cpm")
            .status
            .starts_with("NO [NONEXISTENT]")
    );
    assert!(c.command("DELETE INBOX").status.starts_with("NO"));

    c.command("SUBSCRIBE job").ok();
    let r = c.command("LSUB \"\" \"*\"").ok();
    assert!(
        r.untagged.iter().any(|l| l == "* LSUB () \"/\" \"job\""),
        "{r:?}"
    );
    c.command("UNSUBSCRIBE job").ok();
    assert!(
        !c.command("LSUB \"\" \"*\"")
            .ok()
            .untagged
            .iter()
            .any(|l| l.ends_with("\"job\""))
    );

    c.append("INBOX", "\\Seen", MSG).ok();
    c.append("INBOX", "", MSG).ok();
    let r = c
        .command("STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY)")
        .ok();
    let line = &r.untagged[0];
    assert!(
        line.starts_with("* STATUS INBOX (MESSAGES 2 UNSEEN 1 UIDNEXT 3 UIDVALIDITY "),
        "{line}"
    );
    assert!(
        c.command("STATUS nosuch (MESSAGES)")
            .status
            .starts_with("NO [NONEXISTENT]")
    );

    // RFC 3501: renaming INBOX moves its messages and leaves it empty.
    c.command("RENAME INBOX old-inbox").ok();
    let r = c.command("STATUS INBOX (MESSAGES)").ok();
    assert!(r.untagged[0].contains("MESSAGES 0"), "{r:?}");
    let r = c.command("STATUS old-inbox (MESSAGES)").ok();
    assert!(r.untagged[0].contains("MESSAGES 2"), "{r:?}");
}

#[test]
fn append_select_store_copy_move_expunge() {
    let server = server_with_user();
    let mut c = Client::login(server.imaps, "alice", "correct horse");
    let r = c.append("INBOX", "\\Flagged $Work", MSG).ok();
    assert!(r.status.starts_with("OK [APPENDUID "), "{r:?}");
    let validity: u32 = r.status.split(' ').nth(2).unwrap().parse().unwrap();
    assert!(r.status.contains(&format!("APPENDUID {validity} 1]")));
    c.append("INBOX", "", MSG).ok();
    c.append("INBOX", "", MSG).ok();
    assert!(
        c.append("nosuch", "", MSG)
            .status
            .starts_with("NO [TRYCREATE]")
    );

    let r = c.command("SELECT INBOX").ok();
    let text = r.all_text();
    assert!(text.contains("* 3 EXISTS"), "{text}");
    assert!(text.contains("* 3 RECENT"), "{text}");
    // `\read-report-sent`: the CPM flag, named where `[cpm] read_report_flag` (the
    // default) is on.
    assert!(
        text.contains(
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\read-report-sent $Work)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "[PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\read-report-sent $Work \\*)]"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("[UIDVALIDITY {validity}]")),
        "{text}"
    );
    assert!(text.contains("[UIDNEXT 4]"), "{text}");
    assert!(text.contains("[UNSEEN 1]"), "{text}");
    assert!(r.status.starts_with("OK [READ-WRITE]"));

    let r = c.command("STORE 2 +FLAGS (\\Seen \\Deleted)").ok();
    assert_eq!(
        r.untagged,
        vec!["* 2 FETCH (FLAGS (\\Deleted \\Seen \\Recent))".to_string()]
    );
    let r = c.command("UID STORE 1 -FLAGS.SILENT (\\Flagged)").ok();
    assert!(r.untagged.is_empty(), "{r:?}");
    assert!(
        c.command("STORE 9 +FLAGS (\\Seen)")
            .status
            .starts_with("BAD"),
        "beyond EXISTS"
    );

    let r = c.command("COPY 1:2 Archive").ok();
    assert!(r.status.starts_with("OK [COPYUID "), "{r:?}");
    assert!(r.status.contains(" 1:2 1:2]"), "{r:?}");
    assert!(
        c.command("COPY 1 nosuch")
            .status
            .starts_with("NO [TRYCREATE]")
    );

    let r = c.command("EXPUNGE").ok();
    // The expunged message was \Recent: the new RECENT count follows.
    assert_eq!(r.untagged, ["* 2 EXPUNGE", "* 2 RECENT"]);
    let r = c.command("UID MOVE 3 Trash").ok();
    assert!(
        r.untagged.iter().any(|l| l.starts_with("* OK [COPYUID ")),
        "{r:?}"
    );
    assert!(r.untagged.iter().any(|l| l == "* 2 EXPUNGE"), "{r:?}");
    let r = c.command("STATUS Trash (MESSAGES)").ok();
    assert!(r.untagged[0].contains("MESSAGES 1"));

    // UID EXPUNGE only removes the named \Deleted messages.
    c.append("INBOX", "\\Deleted", MSG).ok();
    // An APPEND to the selected mailbox reports the new message at once.
    let r = c.append("INBOX", "\\Deleted", MSG).ok();
    assert!(r.untagged.contains(&"* 3 EXISTS".to_string()), "{r:?}");
    let r = c.command("UID EXPUNGE 4").ok();
    assert_eq!(r.untagged, ["* 2 EXPUNGE", "* 2 RECENT"]);
    c.command("CLOSE").ok();
    let r = c.command("STATUS INBOX (MESSAGES)").ok();
    assert!(
        r.untagged[0].contains("MESSAGES 1"),
        "CLOSE expunged the rest: {r:?}"
    );

    let r = c.command("EXAMINE INBOX").ok();
    assert!(r.status.starts_with("OK [READ-ONLY]"));
    assert!(
        c.command("STORE 1 +FLAGS (\\Seen)")
            .status
            .starts_with("NO")
    );
    c.command("UNSELECT").ok();
    c.command("LOGOUT").ok();
}

#[test]
fn two_sessions_see_each_others_changes_at_the_right_time() {
    let server = server_with_user();
    let mut a = Client::login(server.imaps, "alice", "correct horse");
    let mut b = Client::login(server.imaps, "alice", "correct horse");
    a.append("INBOX", "", MSG).ok();
    a.append("INBOX", "", MSG).ok();
    a.command("SELECT INBOX").ok();
    b.command("SELECT INBOX").ok();

    // B appends: A hears EXISTS at its next command.
    b.append("INBOX", "", MSG).ok();
    let r = a.command("NOOP").ok();
    assert!(r.untagged.contains(&"* 3 EXISTS".to_string()), "{r:?}");

    // B flags: A hears FETCH FLAGS.
    b.command("STORE 1 +FLAGS (\\Flagged)").ok();
    let r = a.command("NOOP").ok();
    assert!(
        r.untagged
            .iter()
            .any(|l| l.starts_with("* 1 FETCH (") && l.contains("\\Flagged")),
        "{r:?}"
    );

    // B expunges message 2: A is not told during FETCH/STORE/SEARCH, only later.
    b.command("STORE 2 +FLAGS (\\Deleted)").ok();
    b.command("EXPUNGE").ok();
    // Until A is told, it still reads the expunged message as it was (as in Dovecot).
    let r = a.command("FETCH 1:3 (FLAGS RFC822.SIZE)");
    let told =
        |r: &cpmstore_tests::imap_client::Reply| r.untagged.iter().any(|l| l.ends_with(" EXPUNGE"));
    assert!(!told(&r), "EXPUNGE during FETCH: {r:?}");
    assert!(r.status.starts_with("OK"), "{r:?}");
    assert_eq!(
        r.untagged
            .iter()
            .filter(|l| l.contains("RFC822.SIZE"))
            .count(),
        3,
        "{r:?}"
    );
    let r = a.command("STORE 1 +FLAGS (\\Seen)");
    assert!(!told(&r), "EXPUNGE during STORE: {r:?}");
    let r = a.command("SEARCH ALL").ok();
    assert_eq!(
        r.untagged,
        vec!["* SEARCH 1 2 3".to_string()],
        "sequence numbers stable during SEARCH"
    );
    let r = a.command("NOOP").ok();
    assert!(r.untagged.contains(&"* 2 EXPUNGE".to_string()), "{r:?}");
    // Sequence numbers agree again.
    let r = a.command("UID FETCH 1:* (FLAGS)").ok();
    assert_eq!(r.untagged.len(), 2, "{r:?}");
}

#[test]
fn idle_wakes_up_on_append_flag_and_expunge() {
    let server = server_with_user();
    let mut a = Client::login(server.imaps, "alice", "correct horse");
    let mut b = Client::login(server.imaps, "alice", "correct horse");
    a.append("INBOX", "", MSG).ok();
    a.command("SELECT INBOX").ok();
    b.command("SELECT INBOX").ok();

    let tag = a.tag();
    a.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    assert!(a.read_line().unwrap().starts_with('+'));

    let t = Instant::now();
    b.append("INBOX", "", MSG).ok();
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l == "* 2 EXISTS") {
        lines.push(a.read_line().unwrap());
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "EXISTS took {:?}",
        t.elapsed()
    );

    b.command("STORE 1 +FLAGS (\\Answered)").ok();
    loop {
        let l = a.read_line().unwrap();
        if l.starts_with("* 1 FETCH") && l.contains("\\Answered") {
            break;
        }
    }
    b.command("STORE 1 +FLAGS (\\Deleted)").ok();
    b.command("EXPUNGE").ok();
    loop {
        if a.read_line().unwrap() == "* 1 EXPUNGE" {
            break;
        }
    }
    a.send_raw(b"DONE\r\n");
    assert!(a.read_reply(&tag).is_ok());
}

#[test]
fn idle_sends_keepalive() {
    let server = Server::start_with(cpmstore_tests::server::ServerOptions {
        extra_config: "[limits]\nidle_keepalive_secs = 1\n".into(),
        ..Default::default()
    });
    server.add_user("alice", "correct horse");
    let mut a = Client::login(server.imaps, "alice", "correct horse");
    a.command("SELECT INBOX").ok();
    let tag = a.tag();
    a.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    assert!(a.read_line().unwrap().starts_with('+'));
    assert_eq!(a.read_line().unwrap(), "* OK Still here");
    a.send_raw(b"DONE\r\n");
    assert!(a.read_reply(&tag).is_ok());
}

#[test]
fn namespace_id_enable_capabilities_after_login() {
    let server = server_with_user();
    let mut c = Client::login(server.imaps, "alice", "correct horse");
    let caps = c.command("CAPABILITY").ok().untagged[0].clone();
    for cap in [
        "IMAP4rev1",
        "LITERAL+",
        "SASL-IR",
        "ID",
        "ENABLE",
        "IDLE",
        "NAMESPACE",
        "UIDPLUS",
        "UNSELECT",
        "CHILDREN",
        "SPECIAL-USE",
        "MOVE",
        "CONDSTORE",
        "QRESYNC",
        "APPENDLIMIT=",
    ] {
        assert!(caps.contains(cap), "{cap} missing in {caps}");
    }
    let r = c.command("NAMESPACE").ok();
    assert_eq!(
        r.untagged,
        vec!["* NAMESPACE ((\"\" \"/\")) NIL NIL".to_string()]
    );
    let r = c.command("ID (\"name\" \"test\")").ok();
    assert!(r.untagged[0].starts_with("* ID (\"name\" \"cpmstore\""));
    let r = c.command("ENABLE CONDSTORE").ok();
    assert_eq!(r.untagged, vec!["* ENABLED CONDSTORE".to_string()]);
    // LITERAL+ works.
    let tag = c.tag();
    c.send_raw(format!("{tag} CREATE {{4+}}\r\nabcd\r\n").as_bytes());
    assert!(c.read_reply(&tag).is_ok());
    assert!(
        c.command(&format!("STATUS {} (MESSAGES)", quote("abcd")))
            .is_ok()
    );
}

#[test]
fn sessions_per_account_are_capped() {
    let server = Server::start_with(cpmstore_tests::server::ServerOptions {
        extra_config: "[limits]\nmax_connections_per_account = 2\n".into(),
        ..Default::default()
    });
    server.add_user("alice", "correct horse");
    server.add_user("bob", "bob pw");
    let first = Client::login(server.imaps, "alice", "correct horse");
    let _second = Client::login(server.imaps, "alice", "correct horse");
    let mut third = Client::tls(server.imaps);
    let r = third.command("LOGIN alice \"correct horse\"");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    // Other accounts are not affected, and a place comes free when a session ends.
    Client::login(server.imaps, "bob", "bob pw");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::tls(server.imaps);
        if c.command("LOGIN alice \"correct horse\"").is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the place was not given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
