//! Two `cpmstore serve` nodes on one PostgreSQL behave as one service for the
//! operator (issue 6, point 5): a subscriber provisioned through one node's admin API
//! logs in on the other at once; password and PSK changes made through either node are
//! honoured on both; a whitelist loaded through one node decides pushes on the other;
//! a push accepted on one node wakes an IDLE session on the other.
//!
//! Needs `CPMSTORE_TEST_POSTGRES_URL` (CI sets it); without it the test says it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use cpmstore_tests::http_client::{Answer, percent_encode, request};
use cpmstore_tests::imap_client::{Client, quote};
use cpmstore_tests::psk_client::psk_login_works;
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

const TOKEN: &str = "cluster-ops-admin-token-0123456789";
const CAROL_TEL: &str = "tel:+358401110000";
// Throwaway PSKs (see psk_client on keys in argv).
const KEY_1: &str = "00112233445566778899aabbccddeeff";
const KEY_2: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff";
const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/provisioning"
);

fn admin(node: &Server, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let bearer = format!("Bearer {TOKEN}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    let bytes = match body {
        Some(body) => {
            headers.push(("Content-Type", "application/json"));
            serde_json::to_vec(body).unwrap()
        }
        None => Vec::new(),
    };
    request(node.http.unwrap(), method, path, &headers, &bytes, None)
}

fn login_works(node: &Server, user: &str, password: &str) -> bool {
    let mut c = Client::tls(node.imaps);
    let reply = c.command(&format!("LOGIN {} {}", quote(user), quote(password)));
    reply.is_ok()
}

/// Polls until `check` holds, up to `limit`; returns how long it took.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn two_nodes(db: &TempDatabase) -> (Server, Server) {
    let options = ServerOptions {
        storage_url: Some(db.url.clone()),
        psk: true,
        admin_token: Some(TOKEN.into()),
        ..Default::default()
    };
    let a = Server::start_with(options.clone());
    // The nodes share the key that seals PSKs at rest, as a deployment must.
    let kek = a.dir.path().join("data").join("psk.kek");
    let b = Server::start_with(ServerOptions {
        env: vec![(
            "CPMSTORE_AUTH_PSK_KEK_FILE".into(),
            kek.display().to_string(),
        )],
        ..options
    });
    (a, b)
}

#[test]
fn provisioning_through_one_node_is_honoured_by_the_other() {
    let Some(admin_url) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin_url, "cpmstore_ops");
    let (a, b) = two_nodes(&db);

    // Created on A, logs in on B at once (no retry).
    let created = admin(
        &a,
        "POST",
        "/v1/subscribers",
        Some(&json!({
            "username": "carol",
            "password": "first password 1",
            "addresses": [CAROL_TEL],
        })),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(login_works(&b, "carol", "first password 1"));
    // B's admin API sees what A created.
    let shown = admin(&b, "GET", "/v1/subscribers/carol", None);
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert_eq!(shown.json()["addresses"], json!([CAROL_TEL]));
    // A duplicate through the other node is a conflict.
    let again = admin(
        &b,
        "POST",
        "/v1/subscribers",
        Some(&json!({"username": "carol", "password": "whatever 123"})),
    );
    assert_eq!(again.status, 409, "{}", again.text());

    // Password changed on B: at once, the old one fails and the new one works on A.
    let changed = admin(
        &b,
        "PUT",
        "/v1/subscribers/carol/password",
        Some(&json!({"password": "second password 2"})),
    );
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert!(!login_works(&a, "carol", "first password 1"));
    assert!(login_works(&a, "carol", "second password 2"));
    assert!(login_works(&b, "carol", "second password 2"));

    // PSK set on A: usable on both nodes within seconds (cache reload by notification).
    let set = admin(
        &a,
        "PUT",
        "/v1/subscribers/carol/psk",
        Some(&json!({"identity": "carol-phone", "key_hex": KEY_1})),
    );
    assert_eq!(set.status, 200, "{}", set.text());
    for node in [&a, &b] {
        let took = within(Duration::from_secs(5), "PSK on every node", || {
            psk_login_works(node.psk.unwrap(), "-tls1_3", KEY_1, "carol-phone")
        });
        eprintln!("PSK usable after {took:?}");
    }
    // Replaced on B: the old key stops working on A, the new one works there.
    let replaced = admin(
        &b,
        "PUT",
        "/v1/subscribers/carol/psk",
        Some(&json!({"identity": "carol-phone", "key_hex": KEY_2})),
    );
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    within(Duration::from_secs(5), "new PSK on node A", || {
        psk_login_works(a.psk.unwrap(), "-tls1_2", KEY_2, "carol-phone")
    });
    assert!(!psk_login_works(
        a.psk.unwrap(),
        "-tls1_2",
        KEY_1,
        "carol-phone"
    ));

    // A whitelist loaded through A decides pushes arriving at B: it trusts
    // 215.221.51.5 and two other origins, not 127.0.0.1.
    let document = std::fs::read(format!("{SAMPLES}/seed-example.xml")).unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let loaded = request(
        a.http.unwrap(),
        "PUT",
        "/v1/subscribers/carol/whitelist",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/vnd.wap.connectivity+xml"),
        ],
        &document,
        None,
    );
    assert_eq!(loaded.status, 200, "{}", loaded.text());
    let push_path = format!("/v1/push/{}", percent_encode(CAROL_TEL));
    let refused = request(b.http.unwrap(), "POST", &push_path, &[], b"spam", None);
    assert_eq!(refused.status, 403, "{}", refused.text());
    // Cleared through B: pushes from anywhere are accepted again, on A.
    let cleared = admin(&b, "DELETE", "/v1/subscribers/carol/whitelist", None);
    assert_eq!(cleared.status, 200, "{}", cleared.text());

    // A push accepted on A wakes carol's IDLE session on B.
    let mut idle = Client::login(b.imaps, "carol", "second password 2");
    idle.command("SELECT INBOX").ok();
    let tag = idle.tag();
    idle.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    assert!(idle.read_line().unwrap().starts_with('+'));
    let sent = Instant::now();
    let pushed = request(
        a.http.unwrap(),
        "POST",
        &push_path,
        &[("Content-Type", "text/plain")],
        b"wake up",
        None,
    );
    assert_eq!(pushed.status, 202, "{}", pushed.text());
    assert_eq!(pushed.json()["uid"], 1);
    idle.set_timeout(Duration::from_secs(5));
    loop {
        let line = idle.read_line().expect("EXISTS from the other node");
        if line.contains("EXISTS") {
            assert!(line.starts_with("* 1 EXISTS"), "{line}");
            break;
        }
    }
    let waited = sent.elapsed();
    eprintln!("IDLE on B woke {waited:?} after the push to A");
    assert!(waited < Duration::from_secs(2), "EXISTS after {waited:?}");
    idle.send_raw(b"DONE\r\n");
    assert!(idle.read_reply(&tag).is_ok());
    drop(idle);

    // Disabled through A: B refuses the login at once; enabled again through B.
    let disabled = admin(
        &a,
        "PUT",
        "/v1/subscribers/carol/status",
        Some(&json!({"status": "disabled"})),
    );
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert!(!login_works(&b, "carol", "second password 2"));
    let enabled = admin(
        &b,
        "PUT",
        "/v1/subscribers/carol/status",
        Some(&json!({"status": "active"})),
    );
    assert_eq!(enabled.status, 200, "{}", enabled.text());
    assert!(login_works(&a, "carol", "second password 2"));

    // Removed on B: A refuses the login at once, and its push ingress no longer
    // knows the address.
    let removed = admin(&b, "DELETE", "/v1/subscribers/carol", None);
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert!(!login_works(&a, "carol", "second password 2"));
    let gone = request(a.http.unwrap(), "POST", &push_path, &[], b"late", None);
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert_eq!(admin(&a, "GET", "/v1/subscribers/carol", None).status, 404);
}
