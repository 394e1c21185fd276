//! Sony's CPM client (android-rcs/rcsjta branch `cpm`, libs/cpm,
//! `DefaultImapService`) replayed over a real TLS socket against a store filled through
//! the HTTP deposit API: the commands as that client spells them (unquoted mailbox
//! names, plain COPY, SETMETADATA without its closing parenthesis) and the answers
//! parsed the way it parses them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use cpmstore_tests::http_client::{Answer, percent_encode, request};
use cpmstore_tests::imap_client::Client;
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/cpm");
const TOKEN: &str = "cpm-admin-token-0123456789";
const CONVERSATION: &str = "f3c1b7e0-5a2d-4c9e-9b1a-2d7e8c4a6f01";
const ROOT: &str = "RCSMessageStore";
const COMMENT: &str = "/private/comment";

fn object(name: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn deposit(server: &Server, body: &[u8]) -> Answer {
    let path = format!(
        "/v1/cpm/bob/conversations/{}/objects",
        percent_encode(CONVERSATION)
    );
    let auth = format!("Bearer {TOKEN}");
    request(
        server.http.expect("http listener"),
        "POST",
        &path,
        &[("Authorization", &auth)],
        body,
        None,
    )
}

fn start(storage_url: Option<String>) -> Server {
    Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.into()),
        storage_url,
        extra_config: format!(
            "[cpm]\nroot = \"{ROOT}\"\nenforce_folder_rules = true\nread_report_flag = true\n"
        ),
        ..Default::default()
    })
}

/// Sony's login: `LOGIN user password`, unquoted, over TLS.
fn sony_login(server: &Server) -> Client {
    let mut c = Client::tls(server.imaps);
    c.command("LOGIN bob sonypw").ok();
    c
}

/// `getFolderMetadata`: one `* METADATA` line, the value between the quote after the
/// entry name and the last quote of the line.
fn sony_get_comment(c: &mut Client, folder: &str) -> String {
    let r = c.command(&format!("GETMETADATA {folder} {COMMENT}")).ok();
    assert_eq!(r.untagged.len(), 1, "{r:#?}");
    let line = &r.untagged[0];
    assert!(line.starts_with("* METADATA "), "{line}");
    let at = line.find(COMMENT).expect("the entry") + COMMENT.len();
    let start = line[at..].find('"').expect("a quoted value") + at + 1;
    let end = line.rfind('"').expect("the closing quote");
    line[start..end].to_string()
}

fn status_items(reply_line: &str) -> Vec<(String, u64)> {
    let open = reply_line.find('(').expect("(");
    let close = reply_line.rfind(')').expect(")");
    let words: Vec<&str> = reply_line[open + 1..close].split(' ').collect();
    words
        .chunks(2)
        .map(|pair| (pair[0].to_string(), pair[1].parse().expect("a number")))
        .collect()
}

fn status(c: &mut Client, folder: &str, items: &str) -> Vec<(String, u64)> {
    let r = c.command(&format!("STATUS {folder} ({items})")).ok();
    let line = r
        .untagged
        .iter()
        .find(|l| l.starts_with("* STATUS"))
        .unwrap_or_else(|| panic!("no STATUS in {r:#?}"));
    status_items(line)
}

fn item(items: &[(String, u64)], name: &str) -> u64 {
    items
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {items:?}"))
        .1
}

fn flow(server: &Server) {
    server.add_user("bob", "sonypw");
    for name in ["chat-message.eml", "imdn-displayed.eml"] {
        let a = deposit(server, &object(name));
        assert_eq!(a.status, 201, "{name}: {}", a.text());
    }
    let folder = format!("{ROOT}/{CONVERSATION}");

    let mut c = sony_login(server);
    // CAPABILITY, then NAMESPACE as `initNamespace` reads it.
    let r = c.command("CAPABILITY").ok();
    let caps: Vec<&str> = r.untagged[0].split(' ').skip(2).collect();
    for cap in ["METADATA", "NAMESPACE", "UIDPLUS", "UNSELECT", "IDLE"] {
        assert!(caps.contains(&cap), "{cap} missing in {caps:?}");
    }
    let r = c.command("NAMESPACE").ok();
    let spec = r.untagged[0].trim().replace("NIL", "()");
    let spec = &spec[13..spec.len() - 1];
    assert_eq!(spec.split(") (").next(), Some("(\"\" \"/\")"), "{spec}");

    // LIST "" "root/%": the folder is the text after the line's last quote but one.
    let r = c.command(&format!("LIST \"\" \"{ROOT}/%\"")).ok();
    let paths: Vec<String> = r
        .untagged
        .iter()
        .map(|l| {
            let s = &l[6..l.len() - 1];
            s[s.rfind('"').unwrap() + 1..].to_string()
        })
        .collect();
    assert_eq!(paths, std::slice::from_ref(&folder), "{r:#?}");

    // SELECT and STATUS, names unquoted.
    let r = c.command(&format!("SELECT {folder}")).ok();
    assert!(r.untagged.contains(&"* 2 EXISTS".to_string()), "{r:#?}");
    let st = status(
        &mut c,
        &folder,
        "MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN",
    );
    assert_eq!(item(&st, "MESSAGES"), 2);
    assert_eq!(item(&st, "UIDNEXT"), 3);
    assert!(item(&st, "UIDVALIDITY") > 0);

    // CREATE / RENAME / DELETE under the root.
    let scratch = format!("{ROOT}/sony-scratch");
    let renamed = format!("{ROOT}/sony-renamed");
    c.command(&format!("CREATE {scratch}")).ok();
    c.command(&format!("RENAME {scratch} {renamed}")).ok();
    c.command(&format!("DELETE {renamed}")).ok();
    let r = c.command(&format!("LIST \"\" \"{ROOT}/sony-*\"")).ok();
    assert!(r.untagged.is_empty(), "{r:#?}");

    // UNSELECT, then COPY (plain COPY of the number the client holds).
    c.command("UNSELECT").ok();
    let copies = format!("{ROOT}/sony-copies");
    c.command(&format!("CREATE {copies}")).ok();
    c.command(&format!("SELECT {folder}")).ok();
    c.command(&format!("COPY 1 {copies}")).ok();
    assert_eq!(item(&status(&mut c, &copies, "MESSAGES"), "MESSAGES"), 1);

    // SEARCH HEADER Conversation-ID, in UID mode.
    let r = c
        .command(&format!("UID SEARCH HEADER Conversation-ID {CONVERSATION}"))
        .ok();
    assert_eq!(r.untagged, ["* SEARCH 1 2"], "{r:#?}");

    // APPEND reading APPENDUID: the third word inside the brackets.
    let payload = format!(
        "Conversation-ID: {CONVERSATION}\r\nIMDN-Message-ID: sony-1\r\n\
         Message-Direction: sent\r\nContent-Type: text/plain\r\n\r\nFrom the phone.\r\n"
    );
    let tag = c.tag();
    c.send_raw(format!("{tag} APPEND {folder} (\\Seen) {{{}}}\r\n", payload.len()).as_bytes());
    assert!(c.read_line().unwrap().starts_with('+'));
    c.send_raw(format!("{payload}\r\n").as_bytes());
    let r = c.read_reply(&tag).ok();
    let code = &r.status[r.status.find('[').unwrap() + 1..r.status.find(']').unwrap()];
    let words: Vec<&str> = code.split(' ').collect();
    assert_eq!(words[0], "APPENDUID");
    let uid: u32 = words[2].parse().unwrap();
    assert_eq!(uid, 3);

    // UID FETCH and UID STORE.
    let r = c.command(&format!("UID FETCH {uid} BODY.PEEK[]")).ok();
    assert!(r.all_text().contains("From the phone."), "{r:#?}");
    let r = c.command(&format!("UID FETCH 1:{uid} FAST")).ok();
    assert_eq!(r.untagged.len(), 3, "{r:#?}");
    assert!(
        r.untagged.iter().all(|l| l.contains("RFC822.SIZE")),
        "{r:#?}"
    );
    c.command(&format!("UID STORE {uid} +FLAGS ($MDNSent)"))
        .ok();
    c.command(&format!("UID STORE {uid} -FLAGS (\\Seen)")).ok();
    let r = c.command(&format!("UID FETCH {uid} (FLAGS)")).ok();
    let flags = &r.untagged[0];
    assert!(
        flags.contains("$MDNSent") && !flags.contains("\\Seen"),
        "{flags}"
    );

    // METADATA: /private/comment on the folder, as Sony sends it (the entry list
    // unclosed); the folder's HIGHESTMODSEQ goes up.
    let before = item(&status(&mut c, &folder, "HIGHESTMODSEQ"), "HIGHESTMODSEQ");
    c.command(&format!("SETMETADATA {folder} ({COMMENT} \"Dinner plans\""))
        .ok();
    let after = item(&status(&mut c, &folder, "HIGHESTMODSEQ"), "HIGHESTMODSEQ");
    assert!(after > before, "{before} -> {after}");
    assert_eq!(sony_get_comment(&mut c, &folder), "Dinner plans");
    c.command("LOGOUT").ok();

    // Kept across connections; a folder without a comment answers NIL.
    let mut c = sony_login(server);
    assert_eq!(sony_get_comment(&mut c, &folder), "Dinner plans");
    let r = c.command(&format!("GETMETADATA {copies} {COMMENT}")).ok();
    assert_eq!(
        r.untagged,
        [format!("* METADATA \"{copies}\" ({COMMENT} NIL)")]
    );

    // IDLE sees a deposit made through the HTTP API meanwhile.
    let r = c.command(&format!("SELECT {folder}")).ok();
    assert!(r.untagged.contains(&"* 3 EXISTS".to_string()), "{r:#?}");
    let tag = c.tag();
    c.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    assert!(c.read_line().unwrap().starts_with('+'));
    let t = Instant::now();
    let a = deposit(server, &object("file-transfer.eml"));
    assert_eq!(a.status, 201, "{}", a.text());
    c.set_timeout(Duration::from_secs(10));
    while c.read_line().unwrap() != "* 4 EXISTS" {}
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    c.send_raw(b"DONE\r\n");
    assert!(c.read_reply(&tag).is_ok());
    c.command("LOGOUT").ok();
}

#[test]
fn sony_cpm_client_flow() {
    let server = start(None);
    flow(&server);
}

#[test]
fn sony_cpm_client_flow_on_postgres() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_sony");
    let server = start(Some(db.url.clone()));
    flow(&server);
}
