//! Real RCS Common Message Store clients against a store filled through the deposit
//! API (INTERFACES.md 9), over TLS on a real socket: each test replays the commands a
//! public client sends, in its order, and reads the answers the way that client parses
//! them (item order included).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;

use cpmstore_tests::http_client::{percent_encode, request};
use cpmstore_tests::imap_client::{Client, quote};
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/cpm");
const TOKEN: &str = "cpm-admin-token-0123456789";
const CONVERSATION: &str = "f3c1b7e0-5a2d-4c9e-9b1a-2d7e8c4a6f01";
const SESSION: &str = "0b9d4e2a-77c3-4f1e-8a65-c1d2e3f4a5b6";
const ROOT: &str = "RCSMessageStore";
/// The STATUS items Orange's client asks for in LIST, in its order.
const STATUS_ITEMS: [&str; 4] = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ"];

fn object(name: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The value of a header of an object (the first one, unfolded lines only).
fn header(object: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(object);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// Deposits `body` (INTERFACES.md 9.2) into the conversation, or its session.
fn deposit(server: &Server, session: Option<&str>, body: &[u8]) -> serde_json::Value {
    let mut path = format!(
        "/v1/cpm/alice/conversations/{}",
        percent_encode(CONVERSATION)
    );
    if let Some(session) = session {
        path.push_str(&format!("/sessions/{}", percent_encode(session)));
    }
    path.push_str("/objects");
    let auth = format!("Bearer {TOKEN}");
    let answer = request(
        server.http.expect("http listener"),
        "POST",
        &path,
        &[("Authorization", &auth)],
        body,
        None,
    );
    assert_eq!(answer.status, 201, "{}", answer.text());
    answer.json()
}

/// One parsed item of a response: its name and its value as sent (a literal's bytes
/// for a literal, the parenthesised list with its parentheses, or the atom).
type Items = Vec<(String, String)>;

/// Splits `(NAME value NAME value ...)` (the rest of a line from its opening
/// parenthesis, literals inlined as the test client reads them) into its items, in
/// the order sent.
fn items(list: &str) -> Items {
    let inner = list
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a parenthesised list: {list}"));
    let mut out = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once(' ').expect("an item with a value");
        let (value, after) = if after.starts_with('(') {
            let end = after.find(')').expect("a closing parenthesis");
            (after[..=end].to_string(), &after[end + 1..])
        } else if let Some(literal) = after.strip_prefix('{') {
            let close = literal.find("}\r\n").expect("a literal");
            let len: usize = literal[..close].parse().expect("a literal length");
            let data = &literal[close + 3..];
            (data[..len].to_string(), &data[len..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.push((name.to_string(), value));
        rest = after.trim_start();
    }
    out
}

/// A FETCH response's items: `* n FETCH (...)`.
fn fetch_items(line: &str) -> Items {
    let at = line
        .find(" FETCH (")
        .unwrap_or_else(|| panic!("not FETCH: {line}"));
    items(&line[at + 7..])
}

fn names(items: &Items) -> Vec<&str> {
    items.iter().map(|(n, _)| n.as_str()).collect()
}

fn value<'a>(items: &'a Items, name: &str) -> &'a str {
    items
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {items:?}"))
}

/// `MODSEQ (n)`'s n.
fn modseq(items: &Items) -> u64 {
    value(items, "MODSEQ")
        .trim_matches(|c| c == '(' || c == ')')
        .parse()
        .unwrap()
}

/// A mailbox name as a response gives it: quoted or an atom.
fn unquote(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => name.to_string(),
    }
}

/// A folder as `LIST ... RETURN (STATUS (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ))`
/// describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FolderStatus {
    messages: u32,
    uidnext: u32,
    uidvalidity: u32,
    highestmodseq: u64,
}

/// Sends Orange's LIST and reads it as Orange does: each `* LIST` with `/` as the
/// delimiter, directly followed by the `* STATUS` of that folder whose items are
/// exactly MESSAGES, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ in that order.
fn list_status(c: &mut Client, pattern: &str) -> BTreeMap<String, FolderStatus> {
    let r = c
        .command(&format!(
            "LIST \"\" {} RETURN (STATUS ({}))",
            quote(pattern),
            STATUS_ITEMS.join(" ")
        ))
        .ok();
    let mut folders = BTreeMap::new();
    let mut lines = r.untagged.iter();
    while let Some(list) = lines.next() {
        let rest = list
            .strip_prefix("* LIST (")
            .unwrap_or_else(|| panic!("expected * LIST, got {list} in {r:#?}"));
        let (attrs, rest) = rest.split_once(") ").unwrap();
        let name = unquote(
            rest.strip_prefix("\"/\" ")
                .unwrap_or_else(|| panic!("delimiter is not /: {list}")),
        );
        if attrs.contains("\\Noselect") || attrs.contains("\\NonExistent") {
            continue;
        }
        let status = lines
            .next()
            .unwrap_or_else(|| panic!("no STATUS after {list}"));
        let rest = status
            .strip_prefix("* STATUS ")
            .unwrap_or_else(|| panic!("expected * STATUS after {list}, got {status}"));
        let open = rest.rfind(" (").unwrap();
        assert_eq!(unquote(&rest[..open]), name, "{status}");
        let got = items(&rest[open + 1..]);
        assert_eq!(names(&got), STATUS_ITEMS, "{status}");
        let number = |i: usize| got[i].1.parse::<u64>().unwrap();
        folders.insert(
            name,
            FolderStatus {
                messages: number(0) as u32,
                uidnext: number(1) as u32,
                uidvalidity: number(2) as u32,
                highestmodseq: number(3),
            },
        );
    }
    folders
}

/// `SELECT f (CONDSTORE)`: EXISTS, UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ as told.
fn select_condstore(c: &mut Client, folder: &str) -> FolderStatus {
    let r = c
        .command(&format!("SELECT {} (CONDSTORE)", quote(folder)))
        .ok();
    let code = |name: &str| -> u64 {
        let prefix = format!("* OK [{name} ");
        r.untagged
            .iter()
            .find_map(|l| l.strip_prefix(&prefix)?.split(']').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {r:#?}"))
    };
    let exists = r
        .untagged
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS")?.strip_prefix("* ")?.parse().ok())
        .unwrap_or_else(|| panic!("no EXISTS in {r:#?}"));
    FolderStatus {
        messages: exists,
        uidnext: code("UIDNEXT") as u32,
        uidvalidity: code("UIDVALIDITY") as u32,
        highestmodseq: code("HIGHESTMODSEQ"),
    }
}

/// `UID SEARCH criteria`'s UIDs.
fn search(c: &mut Client, criteria: &str) -> Vec<u32> {
    let r = c.command(&format!("UID SEARCH {criteria}")).ok();
    let line = r
        .untagged
        .iter()
        .find(|l| l.starts_with("* SEARCH"))
        .unwrap_or_else(|| panic!("no SEARCH in {r:#?}"));
    line["* SEARCH".len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// The FETCH responses of a command, each parsed.
fn fetch(c: &mut Client, command: &str) -> Vec<Items> {
    let r = c.command(command).ok();
    r.untagged
        .iter()
        .filter(|l| l.contains(" FETCH ("))
        .map(|l| fetch_items(l))
        .collect()
}

/// Orange's CMS client (yplo6403/rcsjta, branch `cms`) syncing a store the network
/// filled: a one-to-one chat message and its IMDN in the conversation folder, a group
/// chat session (session info, a file transfer, group state) in its session folder.
fn orange_flow(storage_url: Option<String>) {
    let server = Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.into()),
        storage_url,
        ..Default::default()
    });
    server.add_user("alice", "cpm pw");
    let chat = object("chat-message.eml");
    let imdn = object("imdn-displayed.eml");
    let session_objects = [
        object("session-info.eml"),
        object("file-transfer.eml"),
        object("group-state.eml"),
    ];
    let first = deposit(&server, None, &chat);
    deposit(&server, None, &imdn);
    for o in &session_objects {
        deposit(&server, Some(SESSION), o);
    }
    let conversation = format!("{ROOT}/{CONVERSATION}");
    let session = format!("{conversation}/{SESSION}");

    // Plain LOGIN over TLS; the extensions it relies on are advertised.
    let mut c = Client::login(server.imaps, "alice", "cpm pw");
    let caps = c.command("CAPABILITY").ok().all_text();
    for cap in [
        "LIST-EXTENDED",
        "LIST-STATUS",
        "CONDSTORE",
        "UIDPLUS",
        "LITERAL+",
    ] {
        assert!(caps.split_whitespace().any(|w| w == cap), "{cap}: {caps}");
    }

    // LIST-STATUS: both folders, each with its STATUS in Orange's item order.
    let folders = list_status(&mut c, &format!("{ROOT}/*"));
    assert_eq!(
        folders.keys().collect::<Vec<_>>(),
        [&conversation, &session],
        "{folders:#?}"
    );
    assert_eq!(folders[&conversation].messages, 2);
    assert_eq!(folders[&conversation].uidnext, 3);
    assert_eq!(
        u64::from(folders[&conversation].uidvalidity),
        first["uidvalidity"].as_u64().unwrap()
    );
    assert_eq!(folders[&session].messages, 3);
    assert_eq!(folders[&session].uidnext, 4);

    // What SELECT (CONDSTORE) says is what LIST-STATUS said, for every folder.
    for (name, status) in &folders {
        assert_eq!(select_condstore(&mut c, name), *status, "{name}");
    }

    // The session folder: the first sync reads every header, then every object.
    let listed = folders[&session];
    let all = fetch(
        &mut c,
        &format!(
            "UID FETCH 1:{} (UID FLAGS) (CHANGEDSINCE 1)",
            listed.uidnext - 1
        ),
    );
    assert!(!all.is_empty());
    for items in &all {
        assert_eq!(names(items), ["UID", "FLAGS", "MODSEQ"], "{items:?}");
    }
    let headers = fetch(&mut c, "UID FETCH 1:3 (FLAGS MODSEQ BODY.PEEK[HEADER])");
    assert_eq!(headers.len(), 3);
    for (i, items) in headers.iter().enumerate() {
        assert_eq!(
            names(items),
            ["UID", "FLAGS", "MODSEQ", "BODY[HEADER]"],
            "{items:?}"
        );
        assert_eq!(value(items, "UID"), (i + 1).to_string());
        let want = header(&session_objects[i], "IMDN-Message-ID");
        assert_eq!(
            header(value(items, "BODY[HEADER]").as_bytes(), "IMDN-Message-ID"),
            want
        );
        assert!(value(items, "BODY[HEADER]").ends_with("\r\n\r\n"));
    }
    for (i, object) in session_objects.iter().enumerate() {
        let uid = i + 1;
        let got = fetch(
            &mut c,
            &format!("UID FETCH {uid} (RFC822.SIZE FLAGS MODSEQ BODY.PEEK[])"),
        );
        assert_eq!(got.len(), 1);
        let items = &got[0];
        assert_eq!(
            names(items),
            ["UID", "RFC822.SIZE", "FLAGS", "MODSEQ", "BODY[]"],
            "Orange reads the items in this order: {items:?}"
        );
        assert_eq!(value(items, "UID"), uid.to_string());
        assert_eq!(value(items, "RFC822.SIZE"), object.len().to_string());
        assert_eq!(value(items, "BODY[]").as_bytes(), object.as_slice());
        assert!(modseq(items) <= listed.highestmodseq);
    }
    for object in &session_objects {
        let id = header(object, "IMDN-Message-ID");
        let uid = session_objects.iter().position(|o| o == object).unwrap() as u32 + 1;
        assert_eq!(
            search(&mut c, &format!("HEADER IMDN-Message-ID {id}")),
            [uid]
        );
    }

    // The conversation folder: nothing changed since LIST; the IMDN is found by its
    // IMDN-Message-ID, marked read, and then is the one change since.
    let listed = select_condstore(&mut c, &conversation);
    let since = listed.highestmodseq;
    let none = fetch(
        &mut c,
        &format!("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {since})"),
    );
    assert!(none.is_empty(), "{none:?}");
    let imdn_id = header(&imdn, "IMDN-Message-ID");
    let found = search(&mut c, &format!("HEADER IMDN-Message-ID {imdn_id}"));
    assert_eq!(found, [2]);
    assert_eq!(
        search(
            &mut c,
            &format!(
                "HEADER IMDN-Message-ID {}",
                header(&chat, "IMDN-Message-ID")
            )
        ),
        [1]
    );
    let stored = fetch(&mut c, "UID STORE 2 +FLAGS (\\Seen)");
    assert_eq!(stored.len(), 1);
    assert!(value(&stored[0], "FLAGS").contains("\\Seen"), "{stored:?}");
    let changed = fetch(
        &mut c,
        &format!("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {since})"),
    );
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(names(&changed[0]), ["UID", "FLAGS", "MODSEQ"]);
    assert_eq!(value(&changed[0], "UID"), "2");
    assert!(modseq(&changed[0]) > since);

    // A message the client sent itself: APPEND with \Seen gets APPENDUID, and is found
    // by its IMDN-Message-ID.
    let sent = format!(
        "From: <tel:+15550200>\r\nTo: <tel:+15550100>\r\nDate: Thu, 03 Dec 2026 09:20:00 +0000\r\n\
         Conversation-ID: {CONVERSATION}\r\nIMDN-Message-ID: OrangeSent0001\r\n\
         Message-Direction: sent\r\nContent-Type: Message/CPIM\r\n\r\n\
         From: <tel:+15550200>\r\nTo: <tel:+15550100>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
         imdn.Message-ID: OrangeSent0001\r\nDateTime: 2026-12-03T09:20:00.000Z\r\n\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nOn my way.\r\n"
    );
    let r = c.append(&conversation, "\\Seen", sent.as_bytes()).ok();
    assert_eq!(
        r.status,
        format!(
            "OK [APPENDUID {} {}] Append completed.",
            listed.uidvalidity, listed.uidnext
        )
    );
    assert_eq!(
        search(&mut c, "HEADER IMDN-Message-ID OrangeSent0001"),
        [listed.uidnext]
    );
    let got = fetch(
        &mut c,
        &format!(
            "UID FETCH {} (RFC822.SIZE FLAGS MODSEQ BODY.PEEK[])",
            listed.uidnext
        ),
    );
    // \Recent too: it came into the mailbox this session has selected.
    assert_eq!(value(&got[0], "FLAGS"), "(\\Seen \\Recent)");
    assert_eq!(value(&got[0], "BODY[]"), sent);

    // LIST-STATUS tells the new state.
    let after = list_status(&mut c, &format!("{ROOT}/*"));
    assert_eq!(after[&conversation].messages, 3);
    assert_eq!(after[&conversation].uidnext, listed.uidnext + 1);
    assert!(after[&conversation].highestmodseq > since);
    assert_eq!(after[&session], folders[&session]);

    // Orange's one-to-one layout, a folder per peer that the client makes, under the
    // root (outside it the folder rules refuse it: an operator whose clients use
    // `Default` sets `[cpm] root = "Default"`), listed the same way.
    let outside = c.command(&format!("CREATE {}", quote("Default/tel:+15550100")));
    assert!(
        outside.status.starts_with("NO [CANNOT]"),
        "{:?}",
        outside.status
    );
    let one_to_one = &format!("{ROOT}/tel:+15550100");
    c.command(&format!("CREATE {}", quote(one_to_one))).ok();
    c.append(one_to_one, "\\Seen", &chat).ok();
    let default = list_status(&mut c, &format!("{ROOT}/tel:*"));
    assert_eq!(default.keys().collect::<Vec<_>>(), [one_to_one]);
    assert_eq!(default[one_to_one].messages, 1);
    assert_eq!(default[one_to_one].uidnext, 2);
    assert!(default[one_to_one].highestmodseq > 0);
    assert_eq!(select_condstore(&mut c, one_to_one), default[one_to_one]);
    c.command("LOGOUT").ok();
}

#[test]
fn orange_cms_client_flow() {
    orange_flow(None);
}

#[test]
fn orange_cms_client_flow_on_postgres() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_cpm_clients");
    orange_flow(Some(db.url.clone()));
}
