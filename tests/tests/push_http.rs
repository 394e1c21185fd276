//! HTTP push ingress end to end (INTERFACES.md 6.3, 6.5): the real server, a whitelist
//! loaded through the CLI, pushes over raw HTTP/1.1 from 127.0.0.1, an IMAP client in
//! IDLE that must hear of a delivered push at once.
//!
//! Needs the binary: `cargo build -p cpmstore-server` before `cargo test -p
//! cpmstore-tests`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cpmstore_tests::http_client::{Answer, percent_encode, request};
use cpmstore_tests::imap_client::Client;
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/provisioning"
);
const PASSWORD: &str = "correct horse battery";
const ALICE_TEL: &str = "tel:+358401234567";

fn push(server: &Server, address: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let path = format!("/v1/push/{}", percent_encode(address));
    request(
        server.http.expect("http listener"),
        "POST",
        &path,
        headers,
        body,
        None,
    )
}

fn start(extra_config: &str) -> Server {
    Server::start_with(ServerOptions {
        extra_config: extra_config.into(),
        ..Default::default()
    })
}

/// Adds a subscriber with a password and addresses.
fn add(server: &Server, user: &str, addresses: &[&str]) {
    let mut args = vec!["subscriber", "add", user, "--password-stdin"];
    for address in addresses {
        args.extend(["--address", address]);
    }
    let out = server.cli(&args, PASSWORD);
    assert!(
        out.status.success(),
        "subscriber add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn load_whitelist(server: &Server, user: &str, sample: &str, extra: &[&str]) {
    let path = format!("{SAMPLES}/{sample}");
    let mut args = vec!["whitelist", "load", user, path.as_str()];
    args.extend_from_slice(extra);
    let out = server.cli(&args, "");
    assert!(
        out.status.success(),
        "whitelist load {sample}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Messages in a subscriber's INBOX, asked over IMAP.
fn inbox_count(server: &Server, user: &str) -> u32 {
    let mut imap = Client::login(server.imaps, user, PASSWORD);
    let reply = imap.command("STATUS INBOX (MESSAGES)").ok();
    let line = reply.lines_with("STATUS")[0].clone();
    let count = line
        .split("MESSAGES ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(')').split(')').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MESSAGES in {line}"));
    imap.command("LOGOUT");
    count
}

/// The whole message UID `uid` of INBOX.
fn fetch_message(server: &Server, user: &str, uid: u32) -> String {
    let mut imap = Client::login(server.imaps, user, PASSWORD);
    imap.command("SELECT INBOX").ok();
    let reply = imap.command(&format!("UID FETCH {uid} BODY.PEEK[]")).ok();
    let text = reply.untagged.join("\n");
    imap.command("LOGOUT");
    text
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn whitelisted_push_reaches_an_idle_client_at_once() {
    let server = start("");
    add(&server, "alice", &[ALICE_TEL]);
    load_whitelist(&server, "alice", "loopback-ppg.xml", &[]);

    let mut idle = Client::login(server.imaps, "alice", PASSWORD);
    idle.command("SELECT INBOX").ok();
    let tag = idle.tag();
    idle.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    assert!(idle.read_line().unwrap().starts_with('+'));

    let sent = Instant::now();
    let answer = push(
        &server,
        "alice",
        &[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Wap-Application-Id", "x-wap-application:push.sia"),
        ],
        "Hello from the PPG\nsecond line".as_bytes(),
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(
        answer.json(),
        serde_json::json!({"mailbox": "INBOX", "uid": 1})
    );
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    idle.set_timeout(Duration::from_secs(5));
    loop {
        let line = idle.read_line().expect("EXISTS while idling");
        if line == "* 1 EXISTS" {
            break;
        }
    }
    let waited = sent.elapsed();
    assert!(waited < Duration::from_secs(1), "EXISTS after {waited:?}");
    idle.send_raw(b"DONE\r\n");
    assert!(idle.read_reply(&tag).is_ok());

    let message = fetch_message(&server, "alice", 1);
    assert_eq!(
        header(&message, "Subject"),
        Some("Push notification"),
        "{message}"
    );
    assert_eq!(
        header(&message, "X-Push-Origin-Type"),
        Some("ppg"),
        "{message}"
    );
    assert_eq!(
        header(&message, "X-Push-Origin"),
        Some("127.0.0.1"),
        "{message}"
    );
    assert_eq!(
        header(&message, "To"),
        Some("<tel:+358401234567>"),
        "{message}"
    );
    assert!(
        header(&message, "From").unwrap().contains("127.0.0.1"),
        "{message}"
    );
    assert!(header(&message, "Date").is_some(), "{message}");
    assert!(
        header(&message, "Message-ID").unwrap().starts_with('<'),
        "{message}"
    );
    assert_eq!(
        header(&message, "Content-Type"),
        Some("text/plain; charset=utf-8"),
        "{message}"
    );
    assert_eq!(
        header(&message, "X-Wap-Application-Id"),
        Some("x-wap-application:push.sia")
    );
    assert!(
        message.contains("\r\n\r\nHello from the PPG\r\nsecond line"),
        "{message}"
    );

    // By subscriber URI (percent-encoded), binary content: base64.
    let body: Vec<u8> = (0u8..=255).collect();
    let answer = push(
        &server,
        "TEL:+358 40 123 4567",
        &[("Content-Type", "application/vnd.wap.sic")],
        &body,
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.json()["uid"], 2);
    let message = fetch_message(&server, "alice", 2);
    assert_eq!(
        header(&message, "Content-Transfer-Encoding"),
        Some("base64")
    );
    assert_eq!(
        header(&message, "Content-Type"),
        Some("application/vnd.wap.sic")
    );

    // Decisions are logged with subscriber, origin and outcome.
    let log = server.log_text();
    assert!(
        log.lines().any(|l| l.contains("push decision")
            && l.contains("\"subscriber\":\"alice\"")
            && l.contains("\"origin\":\"127.0.0.1\"")
            && l.contains("\"outcome\":\"delivered\"")),
        "{log}"
    );
}

#[test]
fn origin_not_in_the_whitelist_is_refused_and_nothing_stored() {
    let server = start("");
    add(&server, "alice", &[ALICE_TEL]);
    // Trusts 215.221.51.5, +35809503401 and sip:ppg@atlanta.com only.
    load_whitelist(&server, "alice", "seed-example.xml", &[]);
    let answer = push(&server, "alice", &[("Content-Type", "text/plain")], b"spam");
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.json()["error"].is_string());
    // Origin headers from a peer that is not a trusted gateway are ignored.
    let answer = push(
        &server,
        ALICE_TEL,
        &[("X-Push-Origin-PPG", "215.221.51.5")],
        b"spam",
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = push(
        &server,
        "alice",
        &[("X-Push-Origin-SMSC", "+35809503401")],
        b"spam",
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(inbox_count(&server, "alice"), 0);
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("push decision") && l.contains("\"outcome\":\"rejected\"")),
        "{log}"
    );

    // An empty whitelist refuses everyone, 127.0.0.1 included.
    add(&server, "carol", &[]);
    load_whitelist(&server, "carol", "empty-whitelist.xml", &[]);
    assert_eq!(push(&server, "carol", &[], b"x").status, 403);
    assert_eq!(inbox_count(&server, "carol"), 0);
}

#[test]
fn trusted_gateway_may_assert_the_origin() {
    let server = start("[push]\ntrusted_gateways = [\"127.0.0.0/8\"]\n");
    add(&server, "alice", &[ALICE_TEL]);
    load_whitelist(&server, "alice", "seed-example.wbxml", &[]);
    let answer = push(
        &server,
        "alice",
        &[("X-Push-Origin-PPG", "215.221.51.5")],
        b"a",
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    let answer = push(
        &server,
        "alice",
        &[("X-Push-Origin-SMSC", "+35809503401;ton=1;npi=1")],
        b"b",
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    let message = fetch_message(&server, "alice", 2);
    assert_eq!(
        header(&message, "X-Push-Origin-Type"),
        Some("smsc"),
        "{message}"
    );
    assert_eq!(
        header(&message, "X-Push-Origin"),
        Some("+35809503401;ton=1;npi=1")
    );
    // Asserted origins not in the whitelist, and the gateway itself, are refused.
    let answer = push(
        &server,
        "alice",
        &[("X-Push-Origin-PPG", "215.221.51.6")],
        b"c",
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(push(&server, "alice", &[], b"d").status, 403);
    let answer = push(
        &server,
        "alice",
        &[("X-Push-Origin-PPG", "not-an-ip")],
        b"e",
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(inbox_count(&server, "alice"), 2);
}

#[test]
fn provisioning_context_selects_the_whitelist() {
    const PROV: &str = "http://prov.operator.example/push";
    let server = start("");
    add(&server, "alice", &[ALICE_TEL]);
    load_whitelist(&server, "alice", "loopback-ppg.xml", &[]);
    load_whitelist(&server, "alice", "seed-example.xml", &["--context", PROV]);
    assert_eq!(push(&server, "alice", &[], b"default").status, 202);
    let answer = push(&server, "alice", &[("X-Wap-Push-ProvURL", PROV)], b"ctx");
    assert_eq!(answer.status, 403, "{answer:?}");
    // A context nothing was provisioned for is refused, even from an origin the
    // default context trusts: naming a context cannot widen the whitelist.
    let answer = push(
        &server,
        "alice",
        &[("X-Wap-Push-ProvURL", "http://elsewhere.example/")],
        b"other",
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    // A blank ProvURL is the default context.
    let answer = push(&server, "alice", &[("X-Wap-Push-ProvURL", " ")], b"blank");
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(inbox_count(&server, "alice"), 2);
    assert!(
        server
            .log_text()
            .lines()
            .any(|l| l.contains("push decision")
                && l.contains("\"context\":\"http://elsewhere.example/\"")
                && l.contains("\"reason\":\"unknown_context\"")
                && l.contains("\"outcome\":\"rejected\"")),
        "{}",
        server.log_text()
    );

    // Only a named context provisioned: a push naming no context matches none of it
    // and is refused; the named context still decides its own pushes.
    add(&server, "carol", &[]);
    load_whitelist(&server, "carol", "loopback-ppg.xml", &["--context", PROV]);
    let answer = push(&server, "carol", &[], b"no context");
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = push(&server, "carol", &[("X-Wap-Push-ProvURL", PROV)], b"ctx");
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(inbox_count(&server, "carol"), 1);
}

/// A whitelist that trusts one PPG, 192.0.2.1 (TEST-NET-1: never this machine).
const TRUSTS_192_0_2_1: &str = r#"<?xml version="1.0"?>
<wap-provisioningdoc version="1.1">
  <characteristic type="PXLOGICAL">
    <parm name="PROXY-ID" value="ppg.operator.example"/>
    <characteristic type="PXPHYSICAL">
      <parm name="PHYSICAL-PROXY-ID" value="P1"/>
      <parm name="PXADDR" value="192.0.2.1"/>
      <parm name="PXADDRTYPE" value="IPV4"/>
    </characteristic>
  </characteristic>
  <characteristic type="APPLICATION">
    <parm name="APPID" value="urn:oma:mo:oma-push:1.0"/>
    <parm name="TO-PROXY" value="ppg.operator.example"/>
  </characteristic>
</wap-provisioningdoc>
"#;

/// Issue 10, item 5: bob's whitelist trusts only 192.0.2.1; a push from 127.0.0.1
/// naming a context bob has no whitelist for used to be stored (`not_provisioned`).
fn unknown_context_cannot_widen_the_whitelist(server: &Server) {
    add(server, "bob", &["sip:bob@ims.example.net"]);
    let document = server.dir.path().join("trusts-192.0.2.1.xml");
    std::fs::write(&document, TRUSTS_192_0_2_1).unwrap();
    let out = server.cli(
        &["whitelist", "load", "bob", document.to_str().unwrap()],
        "",
    );
    assert!(
        out.status.success(),
        "whitelist load: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let plain = push(server, "bob", &[("Content-Type", "text/plain")], b"spam");
    assert_eq!(plain.status, 403, "{plain:?}");
    for (address, context) in [
        ("bob", "http://other/"),
        (
            "sip:bob@ims.example.net",
            "http://prov.operator.example/push",
        ),
    ] {
        let answer = push(
            server,
            address,
            &[
                ("Content-Type", "text/plain"),
                ("X-Wap-Push-ProvURL", context),
            ],
            b"spam",
        );
        assert_eq!(answer.status, 403, "{context}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{answer:?}");
    }
    // Nothing stored.
    assert_eq!(inbox_count(server, "bob"), 0);

    // Logged and counted with the reason.
    let log = server.log_text();
    assert!(
        log.lines().any(|l| l.contains("push decision")
            && l.contains("\"subscriber\":\"bob\"")
            && l.contains("\"context\":\"http://other/\"")
            && l.contains("\"reason\":\"unknown_context\"")
            && l.contains("\"outcome\":\"rejected\"")),
        "{log}"
    );
    let metrics = request(server.http.unwrap(), "GET", "/metrics", &[], b"", None);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    let series = "cpmstore_push_decisions_total{ingress=\"http\",origin_type=\"ppg\",\
                  outcome=\"rejected\",reason=\"unknown_context\"} 2";
    assert!(metrics.text().contains(series), "{}", metrics.text());
    let series = "cpmstore_push_decisions_total{ingress=\"http\",origin_type=\"ppg\",\
                  outcome=\"rejected\",reason=\"no_match\"} 1";
    assert!(metrics.text().contains(series), "{}", metrics.text());
}

#[test]
fn unknown_context_cannot_widen_the_whitelist_on_sqlite() {
    unknown_context_cannot_widen_the_whitelist(&start(""));
}

#[test]
fn unknown_context_cannot_widen_the_whitelist_on_postgres() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let mut db = TempDatabase::create(&admin, "push_context");
    let mut server = Server::start_with(ServerOptions {
        storage_url: Some(db.url.clone()),
        ..Default::default()
    });
    unknown_context_cannot_widen_the_whitelist(&server);
    server.terminate();
    db.drop_now();
}

#[test]
fn not_provisioned_subscriber_accepts_and_errors_have_their_codes() {
    let server = start("[limits]\nhttp_max_body_bytes = 1024\n");
    add(&server, "bob", &["sip:bob@ims.example.net"]);
    let addr = server.http.unwrap();

    // No whitelist: accepted.
    let answer = push(&server, "sip:bob@IMS.example.net", &[], b"hi");
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(
        answer.json(),
        serde_json::json!({"mailbox": "INBOX", "uid": 1})
    );
    let message = fetch_message(&server, "bob", 1);
    assert_eq!(header(&message, "To"), Some("<sip:bob@ims.example.net>"));
    assert_eq!(
        header(&message, "Content-Type"),
        Some("application/octet-stream")
    );

    // Unknown subscriber: 404, by name and by address.
    assert_eq!(push(&server, "nobody", &[], b"x").status, 404);
    assert_eq!(push(&server, "tel:+15550000", &[], b"x").status, 404);

    // Too large: 413, at once from Content-Length (the body is never sent) ...
    let answer = request(
        addr,
        "POST",
        "/v1/push/bob",
        &[],
        b"",
        Some(10 * 1024 * 1024),
    );
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.json()["error"].as_str().unwrap().contains("1024"));
    // ... and one byte over the limit.
    assert_eq!(push(&server, "bob", &[], &[b'x'; 1025]).status, 413);
    assert_eq!(push(&server, "bob", &[], &[b'x'; 1024]).status, 202);

    // Malformed: 400.
    let long_context = format!("http://prov.example/{}", "x".repeat(1100));
    for (address, headers) in [
        ("tel:not-a-number", vec![]),
        ("bob", vec![("Content-Type", "not a type")]),
        ("bob", vec![("X-Wap-Push-ProvURL", long_context.as_str())]),
    ] {
        let answer = push(&server, address, &headers, b"x");
        assert_eq!(answer.status, 400, "{address} {headers:?}: {answer:?}");
        assert!(answer.json()["error"].is_string());
    }

    // Other paths and methods.
    let answer = request(addr, "GET", "/healthz", &[], b"", None);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["status"], "ok");
    assert_eq!(
        request(addr, "GET", "/nothing-here", &[], b"", None).status,
        404
    );
    assert_eq!(
        request(addr, "GET", "/v1/push/bob", &[], b"", None).status,
        405
    );

    assert_eq!(inbox_count(&server, "bob"), 2);
}

#[test]
fn disabled_subscriber_gets_no_pushes() {
    let server = start("");
    add(&server, "dave", &[]);
    let out = server.cli(&["subscriber", "disable", "dave"], "");
    assert!(out.status.success());
    let answer = push(&server, "dave", &[], b"x");
    assert_eq!(answer.status, 403, "{answer:?}");
    let out = server.cli(&["subscriber", "enable", "dave"], "");
    assert!(out.status.success());
    assert_eq!(push(&server, "dave", &[], b"x").status, 202);
}
