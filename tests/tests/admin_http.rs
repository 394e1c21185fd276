//! The HTTP admin API end to end (INTERFACES.md 7): the real server with a token file,
//! raw HTTP/1.1 calls, and the effects seen by real clients: IMAP logins over TLS and
//! STARTTLS, PSK-TLS with `openssl s_client`, pushes over `POST /v1/push/{address}`,
//! and the CLI printing the same documents.
//!
//! Needs the binary: `cargo build -p cpmstore-server` before `cargo test -p
//! cpmstore-tests`. With `CPMSTORE_TEST_POSTGRES_URL` set, the main story runs on
//! PostgreSQL too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use cpmstore_tests::http_client::{Answer, percent_encode, request};
use cpmstore_tests::imap_client::{Client, quote};
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

/// The shared provisioning samples; their expected results are in the README beside them.
const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/provisioning"
);
const TOKEN: &str = "admin-token-0123456789abcdef-test";
const PASSWORD: &str = "first password 1";
const NEW_PASSWORD: &str = "second password 2";
const ALICE_TEL: &str = "tel:+358401234567";
const WBXML: &str = "application/vnd.wap.connectivity-wbxml";
// A throwaway test key: `openssl s_client -psk` takes it in argv.
const KEY: &str = "00112233445566778899aabbccddeeff";

fn start_with(options: ServerOptions) -> Server {
    Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.into()),
        ..options
    })
}

fn start() -> Server {
    start_with(ServerOptions::default())
}

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{SAMPLES}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("missing sample {path}: {e}"))
}

/// The admin API of a server, called with the right token unless told otherwise.
struct Api {
    addr: SocketAddr,
    auth: String,
}

impl Api {
    fn of(server: &Server) -> Api {
        let token = server.admin_token.clone().expect("admin token");
        Api {
            addr: server.http.expect("http listener"),
            auth: format!("Bearer {token}"),
        }
    }

    /// A request with the token and extra headers.
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut all = vec![("Authorization", self.auth.as_str())];
        all.extend_from_slice(headers);
        request(self.addr, method, path, &all, body, None)
    }

    /// A request with a JSON body (or none).
    fn json(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        match body {
            Some(body) => self.raw(
                method,
                path,
                &[("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            ),
            None => self.raw(method, path, &[], b""),
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.json("GET", path, None)
    }

    fn add(&self, body: Value) -> Answer {
        self.json("POST", "/v1/subscribers", Some(body))
    }

    fn load(&self, user: &str, query: &str, content_type: Option<&str>, doc: &[u8]) -> Answer {
        let path = format!("{}/whitelist{query}", user_path(user));
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| vec![("Content-Type", t)])
            .unwrap_or_default();
        self.raw("PUT", &path, &headers, doc)
    }
}

fn user_path(user: &str) -> String {
    format!("/v1/subscribers/{}", percent_encode(user))
}

/// Asserts the status, showing the answer when it differs; returns the JSON body.
#[track_caller]
fn expect(answer: &Answer, status: u16) -> Value {
    assert_eq!(answer.status, status, "{}\n{}", answer.head, answer.text());
    let json = answer.json();
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{}",
        answer.head
    );
    assert_eq!(
        answer.header("cache-control"),
        Some("no-store"),
        "{}",
        answer.head
    );
    json
}

/// Asserts an error answer: the status and a JSON `{"error": "..."}` containing `hint`.
#[track_caller]
fn expect_error(answer: &Answer, status: u16, hint: &str) {
    let json = expect(answer, status);
    let message = json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {json}"));
    assert!(
        message.contains(hint),
        "{status}: {message:?} does not mention {hint:?}"
    );
}

/// Whether LOGIN over implicit TLS works now.
fn login_works(server: &Server, user: &str, password: &str) -> bool {
    let mut imap = Client::tls(server.imaps);
    let ok = imap
        .command(&format!("LOGIN {} {}", quote(user), quote(password)))
        .is_ok();
    imap.command("LOGOUT");
    ok
}

/// Whether LOGIN after STARTTLS works now.
fn starttls_login_works(server: &Server, user: &str, password: &str) -> bool {
    let mut imap = Client::starttls(server.imap);
    let ok = imap
        .command(&format!("LOGIN {} {}", quote(user), quote(password)))
        .is_ok();
    imap.command("LOGOUT");
    ok
}

fn push(server: &Server, address: &str) -> u16 {
    let path = format!("/v1/push/{}", percent_encode(address));
    let answer = request(
        server.http.unwrap(),
        "POST",
        &path,
        &[("Content-Type", "text/plain")],
        b"push body",
        None,
    );
    answer.status
}

fn cli_json(server: &Server, args: &[&str]) -> Value {
    let out = server.cli(args, "");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The number of `cpmstore_admin_requests_total` for an operation and status.
fn admin_requests(server: &Server, operation: &str, status: u16) -> u64 {
    let text = request(server.http.unwrap(), "GET", "/metrics", &[], b"", None).text();
    let wanted =
        format!("cpmstore_admin_requests_total{{operation=\"{operation}\",status=\"{status}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Every provisioning operation through the API, each checked by what a client sees.
fn story(server: &Server) {
    let api = Api::of(server);
    let alice = user_path("alice");

    // Add: 201, the `subscriber add` document, a login at once.
    let answer = api.add(json!({
        "username": "alice",
        "password": PASSWORD,
        "addresses": ["TEL:+358 40 123-4567", "SIP:alice@IMS.Example.NET"],
        "quota": 1_000_000,
    }));
    let added = expect(&answer, 201);
    assert_eq!(answer.header("location"), Some("/v1/subscribers/alice"));
    assert_eq!(added["username"], "alice");
    assert_eq!(added["status"], "active");
    assert_eq!(added["quota"], 1_000_000);
    let mut addresses: Vec<String> = serde_json::from_value(added["addresses"].clone()).unwrap();
    addresses.sort();
    assert_eq!(addresses, ["sip:alice@ims.example.net", ALICE_TEL]);
    assert_eq!(added["has_password"], true);
    assert!(
        added["mailboxes"]
            .as_array()
            .unwrap()
            .contains(&json!("INBOX"))
    );
    assert!(
        added.get("password").is_none(),
        "a given password is never echoed: {added}"
    );
    assert!(login_works(server, "alice", PASSWORD));

    // Show: the document `subscriber show` prints.
    let shown = expect(&api.get(&alice), 200);
    assert_eq!(shown, cli_json(server, &["subscriber", "show", "alice"]));
    assert_eq!(shown, added);

    // A generated password is returned once and works.
    let answer = api.add(json!({"username": "bob", "generate_password": true}));
    let bob = expect(&answer, 201);
    let generated = bob["password"].as_str().unwrap().to_owned();
    assert!(generated.len() >= 16, "{bob}");
    assert_eq!(answer.text().matches(&generated).count(), 1);
    assert!(login_works(server, "bob", &generated));
    assert!(!login_works(server, "bob", PASSWORD));

    // List (extension): every subscriber, by name, as `subscriber list` prints it.
    let list = expect(&api.get("/v1/subscribers"), 200);
    assert_eq!(list, cli_json(server, &["subscriber", "list"]));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    // A password set over HTTP takes effect: the old one fails, the new one works.
    let changed = expect(
        &api.json(
            "PUT",
            &format!("{alice}/password"),
            Some(json!({"password": NEW_PASSWORD})),
        ),
        200,
    );
    assert_eq!(changed, json!({"username": "alice", "has_password": true}));
    assert!(!login_works(server, "alice", PASSWORD));
    assert!(login_works(server, "alice", NEW_PASSWORD));
    assert!(starttls_login_works(server, "alice", NEW_PASSWORD));

    // A generated one too.
    let answer = api.json(
        "PUT",
        &format!("{}/password", user_path("bob")),
        Some(json!({"generate": true})),
    );
    let regenerated = expect(&answer, 200)["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(regenerated, generated);
    assert!(starttls_login_works(server, "bob", &regenerated));
    assert!(!login_works(server, "bob", &generated));

    // Status (extension): disabled refuses logins and pushes; active again restores.
    let disabled = expect(
        &api.json(
            "PUT",
            &format!("{alice}/status"),
            Some(json!({"status": "disabled"})),
        ),
        200,
    );
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(
        cli_json(server, &["subscriber", "show", "alice"])["status"],
        "disabled"
    );
    assert!(!login_works(server, "alice", NEW_PASSWORD));
    assert_eq!(push(server, ALICE_TEL), 403);
    let enabled = expect(
        &api.json(
            "PUT",
            &format!("{alice}/status"),
            Some(json!({"status": "active"})),
        ),
        200,
    );
    assert_eq!(enabled["status"], "active");
    assert!(login_works(server, "alice", NEW_PASSWORD));

    // PSK: given (never echoed), then generated (returned once, as hex).
    let set = expect(
        &api.json(
            "PUT",
            &format!("{alice}/psk"),
            Some(json!({"identity": "alice-phone", "key_hex": KEY})),
        ),
        200,
    );
    assert_eq!(set, json!({"username": "alice", "identity": "alice-phone"}));
    let answer = api.json(
        "PUT",
        &format!("{alice}/psk"),
        Some(json!({"identity": "alice-tablet", "generate": true})),
    );
    let generated_key = expect(&answer, 200)["psk_key_hex"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated_key.len(), 64);
    assert!(generated_key.bytes().all(|b| b.is_ascii_hexdigit()));
    // An account has one PSK: the second replaced the first, identity included.
    assert_eq!(
        expect(&api.get(&alice), 200)["psk_identities"],
        json!(["alice-tablet"])
    );

    // Whitelist: not provisioned, every push accepted.
    let shown = expect(&api.get(&format!("{alice}/whitelist")), 200);
    assert_eq!(shown["provisioned"], false);
    assert_eq!(push(server, ALICE_TEL), 202);

    // loopback-ppg.xml trusts 127.0.0.1: the `whitelist load` document, pushes accepted.
    let loaded = expect(
        &api.load("alice", "", Some("text/xml"), &sample("loopback-ppg.xml")),
        200,
    );
    assert_eq!(loaded["username"], "alice");
    assert_eq!(loaded["context"], "");
    assert_eq!(loaded["count"], 4);
    assert_eq!(loaded["entries"][0]["value"], "127.0.0.1");
    let shown = expect(&api.get(&format!("{alice}/whitelist")), 200);
    assert_eq!(shown, cli_json(server, &["whitelist", "show", "alice"]));
    assert_eq!(shown["provisioned"], true);
    assert_eq!(shown["whitelists"][0]["count"], 4);
    assert_eq!(push(server, ALICE_TEL), 202);

    // seed-example.wbxml does not trust 127.0.0.1: pushes rejected.
    let loaded = expect(
        &api.load("alice", "", Some(WBXML), &sample("seed-example.wbxml")),
        200,
    );
    assert_eq!(loaded["count"], 3);
    assert_eq!(push(server, ALICE_TEL), 403);
    assert_eq!(push(server, "alice"), 403);

    // Check (extension): what the server would decide.
    let checked = expect(
        &api.get(&format!("{alice}/whitelist/check?ppg=215.221.51.5")),
        200,
    );
    assert_eq!(checked["accepted"], true, "{checked}");
    assert_eq!(checked["matched"]["value"], "215.221.51.5");
    let checked = expect(
        &api.get(&format!(
            "{alice}/whitelist/check?sip_pai={}",
            percent_encode("<sip:ppg@ATLANTA.com>")
        )),
        200,
    );
    assert_eq!(checked["accepted"], true, "{checked}");
    let checked = expect(
        &api.get(&format!("{alice}/whitelist/check?ppg=127.0.0.1")),
        200,
    );
    assert_eq!(checked["accepted"], false, "{checked}");

    // Clear: every push accepted again.
    let cleared = expect(
        &api.json("DELETE", &format!("{alice}/whitelist"), None),
        200,
    );
    assert_eq!(cleared, json!({"username": "alice", "cleared": [""]}));
    assert_eq!(push(server, ALICE_TEL), 202);
    assert_eq!(
        expect(&api.get(&format!("{alice}/whitelist")), 200)["provisioned"],
        false
    );

    // Remove: gone for the API, IMAP and push ingress.
    let removed = expect(&api.json("DELETE", &alice, None), 200);
    assert_eq!(removed, json!({"username": "alice", "removed": true}));
    expect_error(&api.get(&alice), 404, "alice");
    assert!(!login_works(server, "alice", NEW_PASSWORD));
    assert_eq!(push(server, ALICE_TEL), 404);
    let list = expect(&api.get("/v1/subscribers"), 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Counted per operation and status, logged once per request, no secret in the log.
    assert_eq!(admin_requests(server, "subscriber_add", 201), 2);
    assert_eq!(admin_requests(server, "subscriber_set_password", 200), 2);
    assert_eq!(admin_requests(server, "whitelist_load", 200), 2);
    assert_eq!(admin_requests(server, "subscriber_remove", 200), 1);
    assert_eq!(admin_requests(server, "subscriber_show", 404), 1);
    let log = server.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"admin request\""))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"operation\":\"subscriber_add\"")
                && l.contains("\"subscriber\":\"alice\"")
                && l.contains("\"status\":201")
                && l.contains("\"peer\":\"127.0.0.1:")),
        "{log}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"operation\":\"subscriber_set_password\""))
            .count(),
        2,
        "{log}"
    );
    for secret in [
        TOKEN,
        PASSWORD,
        NEW_PASSWORD,
        &generated,
        &regenerated,
        KEY,
        &generated_key,
    ] {
        assert!(!log.contains(secret), "the log shows a secret");
    }
}

#[test]
fn every_operation_over_http_on_sqlite() {
    let server = start();
    story(&server);
}

#[test]
fn every_operation_over_http_on_postgres() {
    let Some(admin_url) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin_url, "cpmstore_admin");
    let server = start_with(ServerOptions {
        storage_url: Some(db.url.clone()),
        ..Default::default()
    });
    story(&server);
    let api = Api::of(&server);
    // Conflicts on PostgreSQL too.
    expect(
        &api.add(json!({"username": "carol", "addresses": [ALICE_TEL]})),
        201,
    );
    expect_error(
        &api.add(json!({"username": "dave", "addresses": ["tel:+358 40 1234567"]})),
        409,
        "tel:+358401234567",
    );
    expect_error(&api.add(json!({"username": "carol"})), 409, "carol");
    drop(server);
}

#[test]
fn a_token_is_required_and_must_be_the_right_one() {
    let server = start();
    let api = Api::of(&server);
    let addr = server.http.unwrap();
    expect(
        &api.add(json!({"username": "alice", "password": PASSWORD})),
        201,
    );

    let body = json!({"username": "mallory", "password": PASSWORD}).to_string();
    let wrong = format!("Bearer {TOKEN}x");
    let short = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    let lower = TOKEN.to_ascii_uppercase();
    let upper = format!("Bearer {lower}");
    for auth in [
        None,
        Some("Bearer"),
        Some(wrong.as_str()),
        Some(short.as_str()),
        Some(basic.as_str()),
        Some(upper.as_str()),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        for (method, path, body) in [
            ("POST", "/v1/subscribers", body.as_bytes()),
            ("GET", "/v1/subscribers", b"".as_slice()),
            ("GET", "/v1/subscribers/alice", b""),
            ("DELETE", "/v1/subscribers/alice", b""),
            (
                "PUT",
                "/v1/subscribers/alice/password",
                br#"{"password":"stolen password"}"#,
            ),
            ("DELETE", "/v1/subscribers/alice/whitelist", b""),
            ("PATCH", "/v1/subscribers/alice", b""),
        ] {
            let answer = request(addr, method, path, &headers, body, None);
            expect_error(&answer, 401, "bearer token");
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{}", answer.head);
        }
    }
    // The token goes before the body: a stranger never learns the size limit.
    let answer = request(addr, "POST", "/v1/subscribers", &[], b"", Some(100 << 20));
    expect_error(&answer, 401, "bearer token");

    // Nothing changed.
    let list = expect(&api.get("/v1/subscribers"), 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(login_works(&server, "alice", PASSWORD));
    assert!(!login_works(&server, "alice", "stolen password"));
    assert_eq!(admin_requests(&server, "subscriber_add", 401), 7);
    let log = server.log_text();
    assert!(
        !log.contains(TOKEN) && !log.contains(&lower),
        "the log shows a token"
    );
}

#[test]
fn the_api_is_off_without_a_token_file() {
    let server = Server::start();
    let addr = server.http.unwrap();
    let auth = format!("Bearer {TOKEN}");
    for (method, path) in [
        ("GET", "/v1/subscribers"),
        ("POST", "/v1/subscribers"),
        ("GET", "/v1/subscribers/alice"),
        ("PUT", "/v1/subscribers/alice/password"),
        ("GET", "/v1/subscribers/alice/whitelist"),
        ("PATCH", "/v1/subscribers/alice"),
    ] {
        let answer = request(
            addr,
            method,
            path,
            &[("Authorization", &auth)],
            br#"{"username":"alice","generate_password":true}"#,
            None,
        );
        expect_error(&answer, 404, "admin API is off");
    }
    // Nothing was created; the rest of the HTTP listener works.
    let out = server.cli(&["subscriber", "list"], "");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
    assert_eq!(request(addr, "GET", "/healthz", &[], b"", None).status, 200);
}

#[test]
fn conflicts_are_409_and_change_nothing() {
    let server = start();
    let api = Api::of(&server);
    expect(
        &api.add(json!({"username": "alice", "password": PASSWORD, "addresses": [ALICE_TEL]})),
        201,
    );
    expect(
        &api.add(json!({"username": "bob", "password": PASSWORD})),
        201,
    );

    expect_error(
        &api.add(json!({"username": "alice", "password": NEW_PASSWORD})),
        409,
        "alice",
    );
    assert!(login_works(&server, "alice", PASSWORD));
    // The same address, spelled otherwise.
    expect_error(
        &api.add(json!({"username": "carol", "addresses": ["tel:+358 (40) 123-4567"]})),
        409,
        ALICE_TEL,
    );
    expect_error(&api.get(&user_path("carol")), 404, "carol");

    // A PSK identity of another subscriber.
    let psk = |user: &str, identity: &str| {
        api.json(
            "PUT",
            &format!("{}/psk", user_path(user)),
            Some(json!({"identity": identity, "generate": true})),
        )
    };
    expect(&psk("alice", "shared-id"), 200);
    expect_error(&psk("bob", "shared-id"), 409, "shared-id");
    assert_eq!(
        expect(&api.get(&user_path("bob")), 200)["psk_identities"],
        json!([])
    );
    // Its owner may replace it.
    expect(&psk("alice", "shared-id"), 200);
    assert_eq!(admin_requests(&server, "subscriber_add", 409), 2);
    assert_eq!(admin_requests(&server, "subscriber_set_psk", 409), 1);
}

#[test]
fn an_unknown_subscriber_is_404_on_every_per_user_endpoint() {
    let server = start();
    let api = Api::of(&server);
    let ghost = user_path("ghost");
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", ghost.clone(), None),
        ("DELETE", ghost.clone(), None),
        (
            "PUT",
            format!("{ghost}/password"),
            Some(json!({"password": PASSWORD})),
        ),
        (
            "PUT",
            format!("{ghost}/password"),
            Some(json!({"generate": true})),
        ),
        (
            "PUT",
            format!("{ghost}/psk"),
            Some(json!({"identity": "ghost-id", "key_hex": KEY})),
        ),
        (
            "PUT",
            format!("{ghost}/status"),
            Some(json!({"status": "disabled"})),
        ),
        ("GET", format!("{ghost}/whitelist"), None),
        ("DELETE", format!("{ghost}/whitelist"), None),
        (
            "GET",
            format!("{ghost}/whitelist/check?ppg=127.0.0.1"),
            None,
        ),
    ];
    for (method, path, body) in cases {
        expect_error(&api.json(method, &path, body), 404, "ghost");
    }
    let answer = api.load("ghost", "", Some("text/xml"), &sample("loopback-ppg.xml"));
    expect_error(&answer, 404, "ghost");
    // Nothing was created on the way.
    assert_eq!(expect(&api.get("/v1/subscribers"), 200), json!([]));
}

#[test]
fn invalid_input_is_400_and_changes_nothing() {
    let server = start();
    let api = Api::of(&server);
    expect(
        &api.add(json!({"username": "alice", "password": PASSWORD, "addresses": [ALICE_TEL]})),
        201,
    );
    let add_raw = |body: &str| {
        api.raw(
            "POST",
            "/v1/subscribers",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    // Malformed JSON, wrong shapes and types: the error says what is wrong.
    for (body, hint) in [
        ("{\"username\": \"carol\",", "EOF"),
        ("", "JSON object"),
        ("[\"carol\"]", "JSON object"),
        (
            "{\"username\": \"carol\", \"pasword\": \"x\"}",
            "unknown field `pasword`",
        ),
        (
            "{\"password\": \"long enough\"}",
            "missing field `username`",
        ),
        (
            "{\"username\": \"carol\", \"quota\": \"lots\"}",
            "invalid type",
        ),
        ("{\"username\": \"carol\", \"quota\": -1}", "invalid value"),
        ("{\"username\": 7}", "invalid type"),
        (
            "{\"username\": \"carol\", \"addresses\": \"tel:+1\"}",
            "invalid type",
        ),
    ] {
        expect_error(&add_raw(body), 400, hint);
    }
    // Well-formed, but invalid.
    for (body, hint) in [
        (json!({"username": "al ice"}), "invalid username"),
        (json!({"username": ".hidden"}), "invalid username"),
        (json!({"username": ""}), "invalid username"),
        (
            json!({"username": "carol", "addresses": ["mailto:carol@example.net"]}),
            "invalid address",
        ),
        (
            json!({"username": "carol", "addresses": ["tel:+12ab"]}),
            "invalid address",
        ),
        (json!({"username": "carol", "password": ""}), "empty"),
        (
            json!({"username": "carol", "password": "x y z 1", "generate_password": true}),
            "not both",
        ),
    ] {
        expect_error(&api.add(body), 400, hint);
    }
    let alice = user_path("alice");
    let put = |what: &str, body: Value| api.json("PUT", &format!("{alice}/{what}"), Some(body));
    expect_error(&put("password", json!({"password": ""})), 400, "empty");
    expect_error(&put("password", json!({})), 400, "exactly one");
    expect_error(
        &put("password", json!({"password": "x y z 1", "generate": true})),
        400,
        "exactly one",
    );
    expect_error(
        &put("password", json!({"generate": false})),
        400,
        "exactly one",
    );
    expect_error(&put("password", json!({"pass": "x"})), 400, "unknown field");
    expect_error(
        &put("psk", json!({"identity": "alice-phone", "key_hex": "zz"})),
        400,
        "hex",
    );
    expect_error(
        &put("psk", json!({"identity": "alice-phone", "key_hex": "0011"})),
        400,
        "bytes",
    );
    expect_error(
        &put("psk", json!({"identity": "alice-phone", "key_hex": ""})),
        400,
        "key_hex",
    );
    expect_error(
        &put("psk", json!({"identity": "alice-phone"})),
        400,
        "exactly one",
    );
    expect_error(
        &put("psk", json!({"key_hex": KEY})),
        400,
        "missing field `identity`",
    );
    expect_error(
        &put("status", json!({"status": "gone"})),
        400,
        "unknown variant",
    );

    // Names in the path: bad percent-encoding, bad UTF-8, invalid usernames.
    for path in [
        "/v1/subscribers/%FF",
        "/v1/subscribers/%C3%28/whitelist",
        "/v1/subscribers/al%20ice",
        "/v1/subscribers/%2Ehidden",
        "/v1/subscribers/a%2Fb",
    ] {
        let answer = api.get(path);
        assert_eq!(answer.status, 400, "{path}: {}", answer.text());
        assert!(answer.json()["error"].is_string());
    }
    // Queries: unknown parameters and origins.
    expect_error(
        &api.get(&format!("{alice}/whitelist/check")),
        400,
        "exactly one origin",
    );
    expect_error(
        &api.get(&format!("{alice}/whitelist/check?ppg=1.2.3.4&smsc=%2B358")),
        400,
        "exactly one origin",
    );
    expect_error(
        &api.get(&format!("{alice}/whitelist/check?ppg=ppg.example")),
        400,
        "IP address",
    );
    expect_error(
        &api.json("DELETE", &format!("{alice}/whitelist?contxt=x"), None),
        400,
        "unknown query parameter",
    );

    // Nothing changed.
    let list = expect(&api.get("/v1/subscribers"), 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let shown = expect(&api.get(&alice), 200);
    assert_eq!(shown["psk_identities"], json!([]));
    assert_eq!(shown["status"], "active");
    assert!(login_works(&server, "alice", PASSWORD));
    // A JSON error never reaches the log with the body's values.
    let log = server.log_text();
    assert!(log.contains("the body is not the JSON expected"), "{log}");
    assert!(!log.contains("pasword"), "{log}");
}

#[test]
fn a_bad_document_leaves_the_whitelist_unchanged() {
    let server = start();
    let api = Api::of(&server);
    expect(
        &api.add(json!({"username": "alice", "password": PASSWORD, "addresses": [ALICE_TEL]})),
        201,
    );
    // Without a Content-Type, the first byte tells WBXML from XML (like --format auto).
    let loaded = expect(
        &api.load("alice", "", None, &sample("loopback-ppg.wbxml")),
        200,
    );
    assert_eq!(loaded["count"], 4);
    let before = expect(&api.get(&format!("{}/whitelist", user_path("alice"))), 200);
    assert_eq!(push(&server, ALICE_TEL), 202);

    let good_wbxml = sample("seed-example.wbxml");
    let truncated = &good_wbxml[..good_wbxml.len() / 2];
    let bad: [(&str, Option<&str>, &[u8], &str); 8] = [
        (
            "malformed XML",
            Some("text/xml"),
            &sample("malformed.xml"),
            "unchanged",
        ),
        (
            "dangling TO-PROXY",
            Some("application/xml"),
            &sample("dangling-proxy.xml"),
            "unchanged",
        ),
        ("truncated WBXML", Some(WBXML), truncated, "byte offset"),
        (
            "XML sent as WBXML",
            Some(WBXML),
            &sample("seed-example.xml"),
            "unchanged",
        ),
        (
            "WBXML sent as XML",
            Some("text/vnd.wap.connectivity-xml"),
            &good_wbxml,
            "unchanged",
        ),
        ("truncated WBXML, auto", None, truncated, "unchanged"),
        ("empty body", Some("text/xml"), b"", "unchanged"),
        (
            "octet-stream, malformed",
            Some("application/octet-stream"),
            &sample("malformed.xml"),
            "unchanged",
        ),
    ];
    for (what, content_type, document, hint) in bad {
        let answer = api.load("alice", "", content_type, document);
        assert_eq!(answer.status, 400, "{what}: {}", answer.text());
        expect_error(&answer, 400, hint);
    }
    // A Content-Type that is no provisioning document: 415, naming the right ones.
    for content_type in ["application/json", "application/x-www-form-urlencoded"] {
        let answer = api.load("alice", "", Some(content_type), &sample("seed-example.xml"));
        expect_error(&answer, 415, WBXML);
    }

    let after = expect(&api.get(&format!("{}/whitelist", user_path("alice"))), 200);
    assert_eq!(after, before);
    assert_eq!(push(&server, ALICE_TEL), 202);
    assert_eq!(admin_requests(&server, "whitelist_load", 400), 8);
    assert_eq!(admin_requests(&server, "whitelist_load", 415), 2);
}

#[test]
fn contexts_are_loaded_and_cleared_apart() {
    const PROV: &str = "http://prov.operator.example/push?a=1&b=2";
    let server = start();
    let api = Api::of(&server);
    expect(
        &api.add(json!({"username": "alice", "addresses": [ALICE_TEL]})),
        201,
    );
    let query = format!("?context={}", percent_encode(PROV));
    expect(
        &api.load("alice", "", Some("text/xml"), &sample("loopback-ppg.xml")),
        200,
    );
    let loaded = expect(
        &api.load(
            "alice",
            &query,
            Some("text/xml"),
            &sample("seed-example.xml"),
        ),
        200,
    );
    assert_eq!(loaded["context"], PROV);
    let shown = expect(&api.get(&format!("{}/whitelist", user_path("alice"))), 200);
    let contexts: Vec<&str> = shown["whitelists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["context"].as_str().unwrap())
        .collect();
    assert_eq!(contexts, ["", PROV]);
    // The context decides the push.
    let push_in = |context: &str| {
        request(
            server.http.unwrap(),
            "POST",
            "/v1/push/alice",
            &[("X-Wap-Push-ProvURL", context)],
            b"x",
            None,
        )
        .status
    };
    assert_eq!(push_in(PROV), 403);
    assert_eq!(push(&server, "alice"), 202);
    let checked = expect(
        &api.get(&format!(
            "{}/whitelist/check?ppg=127.0.0.1&context={}",
            user_path("alice"),
            percent_encode(PROV)
        )),
        200,
    );
    assert_eq!(checked["accepted"], false, "{checked}");

    // Clearing one context leaves the other.
    let path = format!("{}/whitelist{query}", user_path("alice"));
    let cleared = expect(&api.json("DELETE", &path, None), 200);
    assert_eq!(cleared["cleared"], json!([PROV]));
    // A context with no whitelist is refused while another context has one, even
    // from an origin the default context trusts.
    assert_eq!(push_in(PROV), 403);
    assert_eq!(push(&server, "alice"), 202);
    let checked = expect(
        &api.get(&format!(
            "{}/whitelist/check?ppg=127.0.0.1&context={}",
            user_path("alice"),
            percent_encode(PROV)
        )),
        200,
    );
    assert_eq!(
        (
            &checked["accepted"],
            &checked["reason"],
            &checked["provisioned"]
        ),
        (&json!(false), &json!("unknown_context"), &json!(false)),
        "{checked}"
    );
    expect_error(&api.json("DELETE", &path, None), 404, "no whitelist");
    let shown = expect(&api.get(&format!("{}/whitelist", user_path("alice"))), 200);
    assert_eq!(shown["whitelists"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["whitelists"][0]["context"], "");
}

#[test]
fn sizes_methods_and_paths() {
    let server = start();
    let api = Api::of(&server);
    let addr = server.http.unwrap();
    let auth = api.auth.clone();
    expect(
        &api.add(json!({"username": "alice", "addresses": [ALICE_TEL]})),
        201,
    );

    // 413 from Content-Length alone (the body is never sent) ...
    for (method, path) in [
        ("POST", "/v1/subscribers".to_owned()),
        ("PUT", format!("{}/password", user_path("alice"))),
        ("PUT", format!("{}/whitelist", user_path("alice"))),
    ] {
        let answer = request(
            addr,
            method,
            &path,
            &[("Authorization", &auth), ("Content-Type", "text/xml")],
            b"",
            Some(10 << 20),
        );
        expect_error(&answer, 413, "larger than");
    }
    // ... and one byte over the limits: 64 KiB of JSON, 1 MiB of document.
    let padding = " ".repeat(64 * 1024);
    let body = format!("{{\"username\": \"carol\"{padding}}}");
    assert!(body.len() > 64 * 1024);
    expect_error(
        &api.raw("POST", "/v1/subscribers", &[], body.as_bytes()),
        413,
        "65536",
    );
    let mut document = sample("loopback-ppg.xml");
    document.resize(1024 * 1024 + 1, b' ');
    expect_error(
        &api.load("alice", "", Some("text/xml"), &document),
        413,
        "1048576",
    );
    // One byte under: trailing whitespace is fine.
    document.truncate(1024 * 1024);
    expect(&api.load("alice", "", Some("text/xml"), &document), 200);
    assert_eq!(
        expect(&api.get("/v1/subscribers"), 200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Wrong method on a known path: 405 with Allow.
    for (method, path, allow) in [
        ("PUT", "/v1/subscribers".to_owned(), "GET, HEAD, POST"),
        ("POST", user_path("alice"), "GET, HEAD, DELETE"),
        ("GET", format!("{}/password", user_path("alice")), "PUT"),
        ("DELETE", format!("{}/psk", user_path("alice")), "PUT"),
        (
            "PATCH",
            format!("{}/whitelist", user_path("alice")),
            "GET, HEAD, PUT, DELETE",
        ),
    ] {
        let answer = api.raw(method, &path, &[], b"");
        expect_error(&answer, 405, allow);
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
    }
    // HEAD wherever GET: the status and headers without the body.
    let answer = api.raw("HEAD", &user_path("alice"), &[], b"");
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(answer.body.is_empty(), "{}", answer.text());
    assert_eq!(api.raw("HEAD", &user_path("ghost"), &[], b"").status, 404);
    // Unknown paths below the tree: 404.
    assert_eq!(
        api.get(&format!("{}/nothing", user_path("alice"))).status,
        404
    );
    assert_eq!(
        api.get("/v1/subscribers/alice/whitelist/nothing").status,
        404
    );
    assert!(admin_requests(&server, "method_not_allowed", 405) >= 5);
}

/// Whether `openssl s_client` with this PSK logs in with SASL EXTERNAL now.
fn psk_login_works(addr: SocketAddr, identity: &str, key: &str) -> bool {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-tls1_3"])
        .args(["-psk", key, "-psk_identity", identity])
        .args(["-brief", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client (scripts/install-test-deps.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"a AUTHENTICATE EXTERNAL =\r\nb LOGOUT\r\n");
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = reader.join().unwrap();
    text.lines().any(|l| l.starts_with("a OK"))
}

/// Waits up to 5 s (the server reloads PSKs every 2 s) for a PSK login to work or not.
fn psk_login_becomes(addr: SocketAddr, identity: &str, key: &str, works: bool) -> bool {
    let start = Instant::now();
    loop {
        if psk_login_works(addr, identity, key) == works {
            return true;
        }
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_psk_set_over_http_works_with_openssl() {
    let server = start_with(ServerOptions {
        psk: true,
        ..Default::default()
    });
    let api = Api::of(&server);
    let addr = server.psk.expect("psk listener");
    expect(&api.add(json!({"username": "alice"})), 201);
    assert!(!psk_login_works(addr, "alice-phone", KEY));

    let psk = format!("{}/psk", user_path("alice"));
    expect(
        &api.json(
            "PUT",
            &psk,
            Some(json!({"identity": "alice-phone", "key_hex": KEY})),
        ),
        200,
    );
    assert!(
        psk_login_becomes(addr, "alice-phone", KEY, true),
        "the PSK set over HTTP did not work within 5 s"
    );
    // A generated key replaces it: the new one works, the old one no longer.
    let answer = api.json(
        "PUT",
        &psk,
        Some(json!({"identity": "alice-phone", "generate": true})),
    );
    let generated = expect(&answer, 200)["psk_key_hex"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(psk_login_becomes(addr, "alice-phone", &generated, true));
    assert!(psk_login_becomes(addr, "alice-phone", KEY, false));
    // Removing the subscriber ends it.
    expect(&api.json("DELETE", &user_path("alice"), None), 200);
    assert!(psk_login_becomes(addr, "alice-phone", &generated, false));
}
