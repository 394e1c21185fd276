//! The CPM message store end to end (INTERFACES.md 9): objects deposited over HTTP (and
//! the CLI) are read by IMAP clients; deposits are idempotent by IMDN-Message-ID and
//! race-free across nodes; event reports change flags everywhere, and sessions on
//! other nodes are told.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use cpmstore_tests::http_client::{Answer, percent_encode, request};
use cpmstore_tests::imap_client::Client;
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};
use serde_json::{Value, json};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/cpm");
const TOKEN: &str = "cpm-admin-token-0123456789";
const DEPOSIT_TOKEN: &str = "cpm-deposit-token-abcdefghij";
const CONVERSATION: &str = "f3c1b7e0-5a2d-4c9e-9b1a-2d7e8c4a6f01";
const SESSION: &str = "0b9d4e2a-77c3-4f1e-8a65-c1d2e3f4a5b6";
const ROOT: &str = "RCSMessageStore";

fn object(name: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn conversation_path(user: &str, conversation: &str) -> String {
    format!(
        "/v1/cpm/{user}/conversations/{}/objects",
        percent_encode(conversation)
    )
}

fn session_path(user: &str, conversation: &str, session: &str) -> String {
    format!(
        "/v1/cpm/{user}/conversations/{}/sessions/{}/objects",
        percent_encode(conversation),
        percent_encode(session)
    )
}

fn post(server: &Server, path: &str, token: &str, body: &[u8]) -> Answer {
    let auth = format!("Bearer {token}");
    request(
        server.http.expect("http listener"),
        "POST",
        path,
        &[("Authorization", &auth)],
        body,
        None,
    )
}

fn deposit(server: &Server, path: &str, body: &[u8]) -> Answer {
    post(server, path, TOKEN, body)
}

fn with_token(storage_url: Option<String>) -> Server {
    Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.into()),
        storage_url,
        ..Default::default()
    })
}

/// The (UID-ordered) untagged `* SEARCH` numbers.
fn search(c: &mut Client, criteria: &str) -> Vec<u32> {
    let r = c.command(&format!("UID SEARCH {criteria}")).ok();
    let line = r
        .untagged
        .iter()
        .find(|l| l.starts_with("* SEARCH"))
        .unwrap_or_else(|| panic!("no SEARCH in {r:?}"));
    line["* SEARCH".len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// `UID FETCH uid BODY.PEEK[]`: the literal's bytes.
fn body(c: &mut Client, uid: u32) -> Vec<u8> {
    let r = c.command(&format!("UID FETCH {uid} BODY.PEEK[]")).ok();
    let line = r
        .untagged
        .iter()
        .find(|l| l.contains("BODY[]"))
        .unwrap_or_else(|| panic!("no BODY[] in {r:?}"));
    let start = line.find("}\r\n").expect("a literal") + 3;
    let end = line.rfind(')').expect("the closing parenthesis");
    line.as_bytes()[start..end].to_vec()
}

fn exists(reply: &[String]) -> u32 {
    reply
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS")?.strip_prefix("* ")?.parse().ok())
        .unwrap_or_else(|| panic!("no EXISTS in {reply:?}"))
}

#[test]
fn deposits_every_object_kind_and_imap_clients_read_them() {
    let server = with_token(None);
    server.add_user("alice", "cpm pw");
    let conversation = conversation_path("alice", CONVERSATION);
    let session = session_path("alice", CONVERSATION, SESSION);

    // The first deposit creates the conversation folder (the root exists already).
    let chat = object("chat-message.eml");
    let a = deposit(
        &server,
        &format!("{conversation}?flags=%5CSeen,$MDNSent"),
        &chat,
    );
    assert_eq!(a.status, 201, "{}", a.text());
    let first = a.json();
    let folder = format!("{ROOT}/{CONVERSATION}");
    assert_eq!(first["mailbox"], folder.as_str());
    assert_eq!(first["uid"], 1);
    assert_eq!(first["created"], json!([folder]));
    assert!(first["uidvalidity"].as_u64().unwrap() > 0);
    let a = deposit(&server, &conversation, &object("imdn-displayed.eml"));
    assert_eq!(
        (a.status, a.json()["uid"].clone()),
        (201, json!(2)),
        "{}",
        a.text()
    );
    assert_eq!(a.json()["created"], json!([]));

    // Session objects go to the session folder, created by the first.
    let session_folder = format!("{folder}/{SESSION}");
    for (i, name) in ["session-info.eml", "file-transfer.eml", "group-state.eml"]
        .into_iter()
        .enumerate()
    {
        let a = deposit(&server, &session, &object(name));
        assert_eq!(a.status, 201, "{name}: {}", a.text());
        let v = a.json();
        assert_eq!(v["mailbox"], session_folder.as_str());
        assert_eq!(v["uid"], i + 1);
        let created = if i == 0 {
            json!([session_folder])
        } else {
            json!([])
        };
        assert_eq!(v["created"], created, "{name}");
    }

    // What IMAP clients see.
    let mut c = Client::login(server.imaps, "alice", "cpm pw");
    let r = c.command(&format!("LIST \"\" \"{ROOT}/*\"")).ok();
    let text = r.all_text();
    assert!(
        text.contains(&format!("\"/\" \"{folder}\"")) || text.contains(&format!("\"/\" {folder}")),
        "{text}"
    );
    assert!(text.contains(&session_folder), "{text}");
    assert_eq!(r.untagged.len(), 2, "{text}");

    let r = c.command(&format!("SELECT \"{folder}\"")).ok();
    assert_eq!(exists(&r.untagged), 2);
    assert_eq!(body(&mut c, 1), chat, "FETCH gives the object as deposited");
    assert_eq!(body(&mut c, 2), object("imdn-displayed.eml"));
    let r = c.command("UID FETCH 1:2 (FLAGS)").ok().all_text();
    assert!(r.contains("\\Seen") && r.contains("$MDNSent"), "{r}");
    assert_eq!(
        search(&mut c, "HEADER IMDN-Message-ID Xk2mQ7rT0a9LpZ3c"),
        vec![1]
    );
    assert_eq!(
        search(&mut c, "HEADER IMDN-Message-ID Nq8vW1eY4uI6oP2s"),
        vec![2]
    );

    let r = c.command(&format!("SELECT \"{session_folder}\"")).ok();
    assert_eq!(exists(&r.untagged), 3);
    assert_eq!(body(&mut c, 2), object("file-transfer.eml"));
    assert_eq!(
        search(&mut c, "HEADER IMDN-Message-ID Gs1aS3dF5gH7jK9l"),
        vec![3]
    );
    assert_eq!(
        search(&mut c, &format!("HEADER Contribution-ID {SESSION}")),
        vec![1, 2, 3]
    );

    // Bare LF becomes CRLF, as with IMAP APPEND.
    let lf = b"Conversation-ID: lf-conv\nIMDN-Message-ID: lf-1\n\nhello\n";
    let a = deposit(&server, &conversation_path("alice", "lf-conv"), lf);
    assert_eq!(a.status, 201, "{}", a.text());
    c.command(&format!("SELECT \"{ROOT}/lf-conv\"")).ok();
    assert_eq!(
        body(&mut c, 1),
        b"Conversation-ID: lf-conv\r\nIMDN-Message-ID: lf-1\r\n\r\nhello\r\n"
    );
}

#[test]
fn deposit_is_idempotent_and_checks_what_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let deposit_token_file = dir.path().join("deposit.token");
    std::fs::write(&deposit_token_file, format!("{DEPOSIT_TOKEN}\n")).unwrap();
    let server = Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.into()),
        extra_config: format!(
            "[cpm]\ndeposit_token_file = \"{}\"\n[limits]\nmax_literal_bytes = 100000\n",
            deposit_token_file.display()
        ),
        ..Default::default()
    });
    server.add_user("alice", "cpm pw");
    let path = conversation_path("alice", CONVERSATION);
    let chat = object("chat-message.eml");

    // Retried three times (with either token): one object, the first UID each time.
    let a = post(&server, &path, DEPOSIT_TOKEN, &chat);
    assert_eq!(a.status, 201, "{}", a.text());
    for token in [DEPOSIT_TOKEN, TOKEN, DEPOSIT_TOKEN] {
        let again = post(&server, &path, token, &chat);
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.json()["uid"], 1);
        assert_eq!(again.json()["created"], json!([]));
    }
    let mut c = Client::login(server.imaps, "alice", "cpm pw");
    let r = c.command(&format!("SELECT \"{ROOT}/{CONVERSATION}\"")).ok();
    assert_eq!(exists(&r.untagged), 1, "{r:?}");

    // Authentication.
    let no_auth = request(server.http.unwrap(), "POST", &path, &[], &chat, None);
    assert_eq!(no_auth.status, 401);
    assert!(no_auth.header("www-authenticate").is_some());
    assert_eq!(
        post(&server, &path, "wrong-token-0123456789", &chat).status,
        401
    );
    let log = server.log_text();
    assert!(
        !log.contains(TOKEN) && !log.contains(DEPOSIT_TOKEN),
        "a token in the log"
    );

    // Header checks say which header.
    let other = conversation_path("alice", "another-conversation");
    let a = deposit(&server, &other, &chat);
    assert_eq!(a.status, 400);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("Conversation-ID"),
        "{}",
        a.text()
    );
    let a = deposit(
        &server,
        &session_path("alice", CONVERSATION, "other-session"),
        &object("file-transfer.eml"),
    );
    assert_eq!(a.status, 400);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("Contribution-ID"),
        "{}",
        a.text()
    );
    let a = deposit(
        &server,
        &session_path("alice", CONVERSATION, SESSION),
        &chat,
    );
    assert_eq!(a.status, 400, "a chat message without Contribution-ID");
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("no Contribution-ID"),
        "{}",
        a.text()
    );
    let a = deposit(
        &server,
        &format!("{path}?flags=%5CRecent"),
        &object("imdn-displayed.eml"),
    );
    assert_eq!(a.status, 400, "{}", a.text());
    let a = deposit(
        &server,
        &format!("{path}?date=yesterday"),
        &object("imdn-displayed.eml"),
    );
    assert_eq!(a.status, 400, "{}", a.text());
    let a = deposit(
        &server,
        &format!("{path}?colour=red"),
        &object("imdn-displayed.eml"),
    );
    assert_eq!(a.status, 400, "{}", a.text());
    let a = deposit(&server, &conversation_path("alice", "a/b"), &chat);
    assert_eq!(a.status, 400, "{}", a.text());

    // Unknown subscriber, too large, over quota.
    assert_eq!(
        deposit(&server, &conversation_path("nobody", CONVERSATION), &chat).status,
        404
    );
    let mut big = format!("Conversation-ID: {CONVERSATION}\r\n\r\n").into_bytes();
    big.resize(100_001, b'x');
    assert_eq!(deposit(&server, &path, &big).status, 413);
    let out = server.cli(
        &[
            "subscriber",
            "add",
            "bob",
            "--generate-password",
            "--quota",
            "100",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = deposit(&server, &conversation_path("bob", CONVERSATION), &chat);
    assert_eq!(a.status, 507, "{}", a.text());

    // A date and flags are kept.
    let a = deposit(
        &server,
        &format!("{path}?date=2026-12-03T09:16:10%2B02:00&flags=%5CFlagged"),
        &object("imdn-displayed.eml"),
    );
    assert_eq!(a.status, 201, "{}", a.text());
    c.command("NOOP").ok();
    let r = c
        .command("UID FETCH 2 (FLAGS INTERNALDATE)")
        .ok()
        .all_text();
    assert!(
        r.contains("\\Flagged") && r.contains("03-Dec-2026 09:16:10 +0200"),
        "{r}"
    );
}

#[test]
fn event_reports_change_every_copy() {
    let server = with_token(None);
    server.add_user("alice", "cpm pw");
    let chat = object("chat-message.eml");
    assert_eq!(
        deposit(&server, &conversation_path("alice", CONVERSATION), &chat).status,
        201
    );
    let folder = format!("{ROOT}/{CONVERSATION}");
    let mut c = Client::login(server.imaps, "alice", "cpm pw");
    c.command(&format!("SELECT \"{folder}\"")).ok();
    c.command("UID COPY 1 INBOX").ok();
    c.command("UID COPY 1 Archive").ok();

    let report = json!({"events": [
        {"imdn_message_id": "Xk2mQ7rT0a9LpZ3c", "add": ["\\Seen", "$MDNSent"]},
        {"imdn_message_id": "no-such-id", "add": ["\\Seen"]},
    ]});
    let a = post(
        &server,
        "/v1/cpm/alice/events",
        TOKEN,
        report.to_string().as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["applied"], 1);
    assert_eq!(a.json()["objects"], 3);
    assert_eq!(a.json()["unknown"], json!(["no-such-id"]));
    for mailbox in [folder.as_str(), "INBOX", "Archive"] {
        c.command(&format!("EXAMINE \"{mailbox}\"")).ok();
        let r = c.command("UID FETCH 1 (FLAGS)").ok().all_text();
        assert!(
            r.contains("\\Seen") && r.contains("$MDNSent"),
            "{mailbox}: {r}"
        );
    }

    // Remove a flag, then expunge everywhere.
    let report =
        json!({"events": [{"imdn_message_id": "Xk2mQ7rT0a9LpZ3c", "remove": ["$MDNSent"]}]});
    assert_eq!(
        post(
            &server,
            "/v1/cpm/alice/events",
            TOKEN,
            report.to_string().as_bytes()
        )
        .status,
        200
    );
    c.command("NOOP").ok();
    let r = c.command("UID FETCH 1 (FLAGS)").ok().all_text();
    assert!(r.contains("\\Seen") && !r.contains("$MDNSent"), "{r}");
    let report = json!({"events": [{"imdn_message_id": "Xk2mQ7rT0a9LpZ3c", "expunge": true}]});
    let a = post(
        &server,
        "/v1/cpm/alice/events",
        TOKEN,
        report.to_string().as_bytes(),
    );
    assert_eq!(a.json()["objects"], 3, "{}", a.text());
    for mailbox in [folder.as_str(), "INBOX", "Archive"] {
        let r = c.command(&format!("EXAMINE \"{mailbox}\"")).ok();
        assert_eq!(exists(&r.untagged), 0, "{mailbox}");
    }

    // Malformed reports and unknown subscribers.
    for bad in [
        "[]",
        "{\"events\": [{}]}",
        "{\"events\": [{\"imdn_message_id\": \"x\", \"add\": [\"\\\\Bogus\"]}]}",
        "not json",
    ] {
        let a = post(&server, "/v1/cpm/alice/events", TOKEN, bad.as_bytes());
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
    }
    assert_eq!(
        post(&server, "/v1/cpm/nobody/events", TOKEN, b"{\"events\": []}").status,
        404
    );
}

#[test]
fn cli_deposits_and_applies_events() {
    let server = Server::start();
    server.add_user("alice", "cpm pw");
    let chat = String::from_utf8(object("chat-message.eml")).unwrap();
    let args = [
        "cpm",
        "deposit",
        "alice",
        "--conversation",
        CONVERSATION,
        "--flags",
        "\\Seen,$MDNSent",
    ];
    let out = server.cli(&args, &chat);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["uid"], 1);
    assert_eq!(v["repeated"], false);
    assert_eq!(v["mailbox"], format!("{ROOT}/{CONVERSATION}"));
    let out = server.cli(&args, &chat);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["uid"].clone(), v["repeated"].clone()),
        (json!(1), json!(true))
    );

    let ft = String::from_utf8(object("file-transfer.eml")).unwrap();
    let out = server.cli(
        &[
            "cpm",
            "deposit",
            "alice",
            "--conversation",
            CONVERSATION,
            "--session",
            SESSION,
        ],
        &ft,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Exit classes: invalid input 5, unknown subscriber 4, usage 2.
    let out = server.cli(
        &["cpm", "deposit", "alice", "--conversation", "other"],
        &chat,
    );
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("Conversation-ID"),
        "{stderr}"
    );
    let out = server.cli(
        &["cpm", "deposit", "nobody", "--conversation", CONVERSATION],
        &chat,
    );
    assert_eq!(out.status.code(), Some(4));
    let out = server.cli(&["cpm", "deposit", "alice"], &chat);
    assert_eq!(out.status.code(), Some(2));

    let report = json!({"events": [{"imdn_message_id": "Fz5hJ9kL1mN3bV7x", "add": ["\\Flagged"]}, {"imdn_message_id": "gone"}]});
    let out = server.cli(&["cpm", "event", "alice"], &report.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["applied"].clone(), v["unknown"].clone()),
        (json!(1), json!(["gone"]))
    );
    let out = server.cli(&["cpm", "event", "alice"], "{");
    assert_eq!(out.status.code(), Some(5));

    let mut c = Client::login(server.imaps, "alice", "cpm pw");
    c.command(&format!("SELECT \"{ROOT}/{CONVERSATION}/{SESSION}\""))
        .ok();
    let r = c.command("UID FETCH 1 (FLAGS)").ok().all_text();
    assert!(r.contains("\\Flagged"), "{r}");
}

/// Two nodes on one PostgreSQL: the first message of a new conversation deposited on
/// both at once gives one folder and two objects; a session on one node hears a
/// deposit on the other in IDLE; an event report's new MODSEQ reaches a CONDSTORE
/// session on the other node.
#[test]
fn two_nodes_deposit_race_idle_and_condstore() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_cpm");
    let a = with_token(Some(db.url.clone()));
    let b = with_token(Some(db.url.clone()));
    a.add_user("alice", "cpm pw");

    for round in 0..4 {
        let conversation = format!("race-{round}");
        let objects: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                format!("Conversation-ID: {conversation}\r\nIMDN-Message-ID: {round}-{i}\r\n\r\nhello {i}\r\n")
                    .into_bytes()
            })
            .collect();
        let path = conversation_path("alice", &conversation);
        let answers: Vec<Answer> = std::thread::scope(|scope| {
            let handles: Vec<_> = [&a, &b]
                .into_iter()
                .zip(&objects)
                .map(|(node, body)| {
                    let path = path.clone();
                    scope.spawn(move || deposit(node, &path, body))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut uids = Vec::new();
        let mut created = 0;
        for answer in &answers {
            assert_eq!(answer.status, 201, "{}", answer.text());
            uids.push(answer.json()["uid"].as_u64().unwrap());
            created += answer.json()["created"].as_array().unwrap().len();
        }
        uids.sort_unstable();
        assert_eq!(uids, [1, 2], "round {round}");
        assert_eq!(created, 1, "one folder created, round {round}");
    }
    let mut on_b = Client::login(b.imaps, "alice", "cpm pw");
    let r = on_b.command(&format!("LIST \"\" \"{ROOT}/race-*\"")).ok();
    assert_eq!(r.untagged.len(), 4, "{r:?}");
    let r = on_b
        .command(&format!("SELECT \"{ROOT}/race-0\" (CONDSTORE)"))
        .ok();
    assert_eq!(exists(&r.untagged), 2);

    // IDLE on B hears a deposit on A.
    let tag = on_b.tag();
    on_b.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    assert!(on_b.read_line().unwrap().starts_with('+'));
    let t = Instant::now();
    let body = b"Conversation-ID: race-0\r\nIMDN-Message-ID: idle-1\r\n\r\nhi\r\n";
    assert_eq!(
        deposit(&a, &conversation_path("alice", "race-0"), body).status,
        201
    );
    while on_b.read_line().unwrap() != "* 3 EXISTS" {}
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    on_b.send_raw(b"DONE\r\n");
    assert!(on_b.read_reply(&tag).is_ok());

    // An event report on A: B's CONDSTORE session sees the new MODSEQ.
    let r = on_b.command("UID FETCH 3 (MODSEQ)").ok().all_text();
    let modseq = |text: &str| -> u64 {
        let at = text.find("MODSEQ (").expect("MODSEQ") + 8;
        text[at..].split(')').next().unwrap().parse().unwrap()
    };
    let before = modseq(&r);
    let report = json!({"events": [{"imdn_message_id": "idle-1", "add": ["\\Seen"]}]});
    let answer = post(
        &a,
        "/v1/cpm/alice/events",
        TOKEN,
        report.to_string().as_bytes(),
    );
    assert_eq!(answer.json()["applied"], 1, "{}", answer.text());
    // The session is told at its next command (here NOOP, with the new MODSEQ) ...
    let r = on_b.command("NOOP").ok().all_text();
    assert!(r.contains("UID 3") && r.contains("\\Seen"), "{r}");
    assert!(modseq(&r) > before, "{r}");
    // ... and CHANGEDSINCE finds the change.
    let r = on_b
        .command(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {before})"))
        .ok()
        .all_text();
    assert!(r.contains("UID 3") && r.contains("\\Seen"), "{r}");
    assert!(modseq(&r) > before, "{r}");
}

/// `NO [CANNOT]` with the reason, and nothing changed.
fn refused(c: &mut Client, command: &str, why: &str) {
    let r = c.command(command);
    assert!(
        r.status.starts_with("NO [CANNOT]") && r.status.contains(why),
        "{command}: {r:?}"
    );
}

/// The folder rules of INTERFACES 9.1 (on by default), `\read-report-sent` (9.4) and
/// SEARCH HEADER's substring match on the indexed CPM headers, over real sockets; then
/// the same server with both switched off.
#[test]
fn folder_rules_read_report_flag_and_header_search() {
    let server = with_token(None);
    server.add_user("alice", "cpm pw");
    let conversation = conversation_path("alice", CONVERSATION);
    for name in ["chat-message.eml", "imdn-displayed.eml"] {
        assert_eq!(deposit(&server, &conversation, &object(name)).status, 201);
    }
    let folder = format!("{ROOT}/{CONVERSATION}");
    let mut c = Client::login(server.imaps, "alice", "cpm pw");

    // CREATE only under the root; the default mailboxes are there already.
    refused(
        &mut c,
        "CREATE Work",
        "create folders only under RCSMessageStore",
    );
    refused(&mut c, "CREATE Work/2026", "only under RCSMessageStore");
    assert!(
        c.command("CREATE Sent")
            .status
            .starts_with("NO [ALREADYEXISTS]")
    );
    c.command(&format!("CREATE {ROOT}/Mine")).ok();
    let listed = c.command("LIST \"\" \"*\"").ok().all_text();
    assert!(!listed.contains("Work"), "{listed}");
    assert!(listed.contains(&format!("{ROOT}/Mine")), "{listed}");

    // Objects leave a history folder by COPY only.
    c.command(&format!("SELECT \"{folder}\"")).ok();
    refused(&mut c, "MOVE 1 INBOX", "not moved one by one");
    refused(&mut c, &format!("UID MOVE 1:* {ROOT}/Mine"), "COPY them");
    let r = c.command("UID COPY 1 INBOX").ok();
    assert!(r.status.starts_with("OK [COPYUID "), "{r:?}");
    let r = c.command("NOOP").ok();
    assert!(
        !r.all_text().contains("EXPUNGE"),
        "nothing left the folder: {r:?}"
    );
    assert_eq!(search(&mut c, "ALL"), vec![1, 2]);
    // Into a history folder and out of INBOX: allowed.
    c.command("SELECT INBOX").ok();
    let r = c.command(&format!("UID MOVE 1:* {ROOT}/Mine")).ok();
    assert!(r.all_text().contains("EXPUNGE"), "{r:?}");

    // SEARCH HEADER on the indexed names: a case-insensitive substring, from the index.
    c.command(&format!("SELECT \"{folder}\"")).ok();
    assert_eq!(search(&mut c, "HEADER IMDN-Message-ID xk2mq7"), vec![1]);
    assert_eq!(search(&mut c, "HEADER imdn-message-id 0A9LPZ3"), vec![1]);
    assert_eq!(search(&mut c, "HEADER IMDN-Message-ID \"\""), vec![1, 2]);
    assert_eq!(search(&mut c, "HEADER Conversation-ID 9b1a"), vec![1, 2]);
    assert_eq!(search(&mut c, "NOT HEADER IMDN-Message-ID Nq8v"), vec![1]);
    assert!(search(&mut c, "HEADER IMDN-Message-ID Xk2mQ7rT0a9LpZ3cX").is_empty());

    // \read-report-sent: kept, shown, advertised; settable by the network too.
    let r = c.command("SELECT INBOX").ok().all_text();
    assert!(
        r.contains("\\read-report-sent"),
        "FLAGS and PERMANENTFLAGS name it: {r}"
    );
    c.command(&format!("SELECT \"{folder}\"")).ok();
    c.command("UID STORE 1 +FLAGS (\\read-report-sent)").ok();
    let report =
        json!({"events": [{"imdn_message_id": "Nq8vW1eY4uI6oP2s", "add": ["\\read-report-sent"]}]});
    let a = post(
        &server,
        "/v1/cpm/alice/events",
        TOKEN,
        report.to_string().as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    c.command("LOGOUT");
    let mut c = Client::login(server.imaps, "alice", "cpm pw");
    c.command(&format!("EXAMINE \"{folder}\"")).ok();
    let r = c.command("UID FETCH 1:2 (FLAGS)").ok();
    let flagged = r
        .untagged
        .iter()
        .filter(|l| l.contains("FLAGS (\\read-report-sent)"));
    assert_eq!(flagged.count(), 2, "{r:?}");

    // RENAME and DELETE of whole folders stay allowed.
    c.command(&format!("RENAME {ROOT}/Mine {ROOT}/Ours")).ok();
    c.command(&format!("DELETE {ROOT}/Ours")).ok();

    // Both switched off.
    let plain = Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.into()),
        extra_config: "[cpm]\nenforce_folder_rules = false\nread_report_flag = false\n".into(),
        ..Default::default()
    });
    plain.add_user("bob", "cpm pw");
    let mut c = Client::login(plain.imaps, "bob", "cpm pw");
    c.command("CREATE Work").ok();
    let r = c.command("SELECT INBOX").ok().all_text();
    assert!(!r.contains("read-report-sent"), "{r}");
    let a = deposit(
        &plain,
        &format!(
            "{}?flags=%5Cread-report-sent",
            conversation_path("bob", CONVERSATION)
        ),
        &object("chat-message.eml"),
    );
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(
        deposit(
            &plain,
            &conversation_path("bob", CONVERSATION),
            &object("chat-message.eml")
        )
        .status,
        201
    );
    c.command(&format!("SELECT \"{folder}\"")).ok();
    let r = c.command("UID STORE 1 +FLAGS (\\read-report-sent)");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    let r = c.command("UID MOVE 1 Work").ok();
    assert!(r.all_text().contains("EXPUNGE"), "{r:?}");
}

/// Messages stored before the CPM header index (migration 0003) are indexed when the
/// server starts, so SEARCH HEADER answered from the index finds them.
#[test]
fn older_messages_are_indexed_at_start() {
    let mut server = with_token(None);
    server.add_user("alice", "cpm pw");
    let conversation = conversation_path("alice", CONVERSATION);
    assert_eq!(
        deposit(&server, &conversation, &object("chat-message.eml")).status,
        201
    );
    // As a store from before 0003 looks once 0005 has run: no index rows, the message
    // listed for the backfill.
    let url = format!(
        "sqlite://{}",
        server.dir.path().join("data/cpmstore.db").display()
    );
    let change = |sql: &'static str| {
        let url = url.clone();
        cpmstore_tests::block_on(async move {
            use sqlx::Connection;
            let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&mut db).await.unwrap();
        })
    };
    change("DELETE FROM cpm_headers");
    change(
        "INSERT INTO cpm_headers_pending (account_id, mailbox_id, uid) \
         SELECT account_id, mailbox_id, uid FROM messages",
    );
    let folder = format!("{ROOT}/{CONVERSATION}");
    let mut c = Client::login(server.imaps, "alice", "cpm pw");
    c.command(&format!("SELECT \"{folder}\"")).ok();
    assert!(
        search(&mut c, "HEADER IMDN-Message-ID Xk2mQ7rT0a9LpZ3c").is_empty(),
        "not in the index"
    );
    drop(c);
    server.restart();
    assert!(
        server.log_text().contains("CPM header index filled"),
        "{}",
        server.log_text()
    );
    let mut c = Client::login(server.imaps, "alice", "cpm pw");
    c.command(&format!("SELECT \"{folder}\"")).ok();
    assert_eq!(
        search(&mut c, "HEADER IMDN-Message-ID Xk2mQ7rT0a9LpZ3c"),
        vec![1]
    );
    // A retried deposit of it is still recognised.
    assert_eq!(
        deposit(&server, &conversation, &object("chat-message.eml")).status,
        200
    );
}
