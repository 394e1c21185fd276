//! No secret in any log (INTERFACES.md 1 and 8): one story against a server and a CLI
//! logging at `trace`, with distinctive passwords, PSKs, tokens and message bodies;
//! then none of them (nor their base64 or hex forms) appears in anything the server or
//! the CLI wrote, except a generated secret, once, in the JSON of the command that
//! generated it. And the log does say what happened: every IMAP connection opened and
//! closed with its peer address, every login attempt with its outcome, so the test
//! cannot pass by logging nothing.
//!
//! Each IMAP connection comes from its own loopback address (127.0.0.N), so the log's
//! `peer` names it.
//!
//! Needs the binary: `cargo build -p cpmstore-server` before `cargo test -p
//! cpmstore-tests`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cpmstore_tests::auth_client::{AuthClient, Scram, Tls};
use cpmstore_tests::http_client::{Answer, request};
use cpmstore_tests::server::{Server, ServerOptions};
use serde_json::{Value, json};

const PASSWORD: &str = "Pw-first-LOGSECRET-7f3a61";
const NEW_PASSWORD: &str = "Pw-second-LOGSECRET-55d1e0";
const WRONG_PASSWORD: &str = "Pw-wrong-LOGSECRET-91c2b7";
const ADMIN_PASSWORD: &str = "Pw-admin-LOGSECRET-c0de42";
const KEY_HEX: &str = "5ec7e75ec7e7a11ce0000000000000000000000000000000000000000000beef";
const ADMIN_KEY_HEX: &str = "ad31ad31ad31ad31ad31ad31ad31ad31ad31ad31ad31ad31ad31ad31ad31f00d";
const TOKEN: &str = "token-LOGSECRET-0123456789abcdef0123";
const WRONG_TOKEN: &str = "token-wrong-LOGSECRET-fedcba987654";
const BODY_MARKER: &str = "body-marker-LOGSECRET-appended-3e9d";
const PUSH_MARKER: &str = "push-marker-LOGSECRET-http-8a1f";

/// A login attempt: user, mechanism (as the log names it), success.
type Attempt = (&'static str, &'static str, bool);

/// What the story did, to check the log against.
#[derive(Default)]
struct Story {
    /// Everything the CLI wrote: (args, output).
    cli: Vec<(String, Output)>,
    /// Secrets no output may hold.
    secrets: Vec<(String, String)>,
    /// Secrets the CLI generated: (label, value, index in `cli` of the command that printed it).
    generated: Vec<(String, String, usize)>,
    /// Each IMAP connection's source address and its login attempts.
    connections: Vec<(IpAddr, Vec<Attempt>)>,
}

impl Story {
    fn secret(&mut self, label: &str, value: &str) {
        self.secrets.push((label.to_owned(), value.to_owned()));
    }

    fn cli(&mut self, server: &Server, args: &[&str], stdin: &str) -> Value {
        let out = server.cli(args, stdin);
        assert!(
            out.status.success(),
            "cpmstore {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let value: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cpmstore {args:?} stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        self.cli.push((args.join(" "), out));
        value
    }

    /// The last CLI command printed `value`, a generated secret.
    fn generated(&mut self, label: &str, value: &str) {
        assert!(value.len() >= 16, "{label}: {value:?}");
        self.generated
            .push((label.to_owned(), value.to_owned(), self.cli.len() - 1));
    }

    /// A new IMAP connection over TLS from its own loopback address.
    fn connect(&mut self, server: &Server) -> (AuthClient, usize) {
        let n = self.connections.len();
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20 + u8::try_from(n).unwrap()));
        let client = AuthClient::tls(server.imaps, Some(ip), Tls::V13).expect("connect");
        self.connections.push((ip, Vec::new()));
        (client, n)
    }

    fn attempt(
        &mut self,
        connection: usize,
        user: &'static str,
        mechanism: &'static str,
        ok: bool,
    ) {
        self.connections[connection].1.push((user, mechanism, ok));
    }
}

fn sasl_plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

fn admin(server: &Server, token: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request(
        server.http.expect("http listener"),
        method,
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
        None,
    )
}

fn expect(answer: &Answer, status: u16) -> Value {
    assert_eq!(answer.status, status, "{} {}", answer.head, answer.text());
    answer.json()
}

fn run_story(server: &Server, story: &mut Story) {
    // --- The CLI: given and generated passwords, given and generated PSKs.
    story.secret("password (stdin)", PASSWORD);
    story.cli(
        server,
        &[
            "subscriber",
            "add",
            "alice",
            "--password-stdin",
            "--address",
            "tel:+358401234567",
        ],
        &format!("{PASSWORD}\n"),
    );
    let bob = story.cli(
        server,
        &["subscriber", "add", "bob", "--generate-password"],
        "",
    );
    story.generated(
        "generated password (add)",
        bob["password"].as_str().unwrap(),
    );
    story.secret("new password (stdin)", NEW_PASSWORD);
    story.cli(
        server,
        &["subscriber", "set-password", "alice", "--password-stdin"],
        NEW_PASSWORD,
    );
    let bob = story.cli(
        server,
        &["subscriber", "set-password", "bob", "--generate-password"],
        "",
    );
    let bob_password = bob["password"].as_str().unwrap().to_owned();
    story.generated("generated password (set-password)", &bob_password);
    let psk = story.cli(
        server,
        &[
            "subscriber",
            "set-psk",
            "alice",
            "--identity",
            "alice-phone",
            "--generate",
        ],
        "",
    );
    story.generated("generated PSK", psk["psk_key_hex"].as_str().unwrap());
    story.secret("PSK (stdin)", KEY_HEX);
    story.cli(
        server,
        &[
            "subscriber",
            "set-psk",
            "bob",
            "--identity",
            "bob-phone",
            "--key-hex-stdin",
        ],
        KEY_HEX,
    );
    story.cli(server, &["subscriber", "show", "alice"], "");
    story.cli(server, &["subscriber", "list"], "");

    // --- IMAP: LOGIN right and wrong, AUTHENTICATE PLAIN with and without an initial
    // response, right and wrong, SCRAM, APPEND and FETCH of a marked body.
    story.secret("wrong password", WRONG_PASSWORD);
    story.secret("old password", PASSWORD);
    let (mut c, n) = story.connect(server);
    let status = c.login("alice", NEW_PASSWORD).unwrap();
    assert!(status.starts_with("OK"), "{status}");
    story.attempt(n, "alice", "login", true);
    let message = format!("From: a@example.net\r\nSubject: log test\r\n\r\n{BODY_MARKER}\r\n");
    story.secret("message body", BODY_MARKER);
    let (_, status) = c
        .command(&format!("APPEND INBOX {{{}+}}\r\n{message}", message.len()))
        .unwrap();
    assert!(status.starts_with("OK"), "{status}");
    c.command("SELECT INBOX").unwrap();
    let (lines, status) = c.command("FETCH 1 BODY[]").unwrap();
    assert!(status.starts_with("OK"), "{status}");
    assert!(lines.iter().any(|l| l.contains(BODY_MARKER)), "{lines:?}");
    c.command("LOGOUT").unwrap();

    for (user, password) in [("alice", WRONG_PASSWORD), ("alice", PASSWORD)] {
        let (mut c, n) = story.connect(server);
        let status = c.login(user, password).unwrap();
        assert!(status.starts_with("NO"), "{status}");
        story.attempt(n, "alice", "login", false);
        c.command("LOGOUT").unwrap();
    }

    let right = sasl_plain("alice", NEW_PASSWORD);
    story.secret("AUTHENTICATE PLAIN (right)", &right);
    let (mut c, n) = story.connect(server);
    let (_, status) = c.command(&format!("AUTHENTICATE PLAIN {right}")).unwrap();
    assert!(status.starts_with("OK"), "{status}");
    story.attempt(n, "alice", "plain", true);
    c.command("LOGOUT").unwrap();

    let wrong = sasl_plain("alice", WRONG_PASSWORD);
    story.secret("AUTHENTICATE PLAIN (wrong)", &wrong);
    let (mut c, n) = story.connect(server);
    c.send(b"p1 AUTHENTICATE PLAIN\r\n").unwrap();
    assert!(c.read_line().unwrap().starts_with('+'));
    c.send(format!("{wrong}\r\n").as_bytes()).unwrap();
    let status = loop {
        let line = c.read_line().unwrap();
        if let Some(status) = line.strip_prefix("p1 ") {
            break status.to_owned();
        }
    };
    assert!(status.starts_with("NO"), "{status}");
    story.attempt(n, "alice", "plain", false);
    c.command("LOGOUT").unwrap();

    let bob_plain = sasl_plain("bob", &bob_password);
    story.secret("AUTHENTICATE PLAIN (generated password)", &bob_plain);
    let (mut c, n) = story.connect(server);
    let (_, status) = c
        .command(&format!("AUTHENTICATE PLAIN {bob_plain}"))
        .unwrap();
    assert!(status.starts_with("OK"), "{status}");
    story.attempt(n, "bob", "plain", true);
    c.command("LOGOUT").unwrap();

    let (mut c, n) = story.connect(server);
    let (status, verified) = c
        .scram(&Scram {
            user: "alice",
            password: NEW_PASSWORD,
            ..Default::default()
        })
        .unwrap();
    assert!(status.starts_with("OK") && verified, "{status}");
    story.attempt(n, "alice", "scram-sha-256", true);
    c.command("LOGOUT").unwrap();

    // --- A push over HTTP with a marked body (alice has no whitelist: accepted).
    story.secret("push body", PUSH_MARKER);
    let answer = request(
        server.http.expect("http listener"),
        "POST",
        "/v1/push/alice",
        &[("Content-Type", "text/plain")],
        format!("{PUSH_MARKER}\n").as_bytes(),
        None,
    );
    assert_eq!(answer.status, 202, "{}", answer.text());

    // --- The admin API: a distinctive token, right and wrong.
    story.secret("admin token", TOKEN);
    story.secret("wrong admin token", WRONG_TOKEN);
    story.secret("password (admin API)", ADMIN_PASSWORD);
    story.secret("PSK (admin API)", ADMIN_KEY_HEX);
    expect(
        &admin(
            server,
            TOKEN,
            "POST",
            "/v1/subscribers",
            Some(json!({"username": "carol", "password": ADMIN_PASSWORD})),
        ),
        201,
    );
    let dave = expect(
        &admin(
            server,
            TOKEN,
            "POST",
            "/v1/subscribers",
            Some(json!({"username": "dave", "generate_password": true})),
        ),
        201,
    );
    story.secret(
        "generated password (admin API)",
        dave["password"].as_str().unwrap(),
    );
    let changed = expect(
        &admin(
            server,
            TOKEN,
            "PUT",
            "/v1/subscribers/carol/password",
            Some(json!({"generate": true})),
        ),
        200,
    );
    story.secret(
        "generated password (admin API, set)",
        changed["password"].as_str().unwrap(),
    );
    expect(
        &admin(
            server,
            TOKEN,
            "PUT",
            "/v1/subscribers/carol/psk",
            Some(json!({"identity": "carol-phone", "key_hex": ADMIN_KEY_HEX})),
        ),
        200,
    );
    let psk = expect(
        &admin(
            server,
            TOKEN,
            "PUT",
            "/v1/subscribers/dave/psk",
            Some(json!({"identity": "dave-phone", "generate": true})),
        ),
        200,
    );
    story.secret(
        "generated PSK (admin API)",
        psk["psk_key_hex"].as_str().unwrap(),
    );
    let refused = admin(server, WRONG_TOKEN, "GET", "/v1/subscribers/carol", None);
    assert_eq!(refused.status, 401, "{}", refused.text());
    let refused = admin(
        server,
        WRONG_TOKEN,
        "PUT",
        "/v1/subscribers/carol/password",
        Some(json!({"password": ADMIN_PASSWORD})),
    );
    assert_eq!(refused.status, 401, "{}", refused.text());
}

/// The forms a secret could leak in: as given, hex in either case (keys), and base64.
fn forms(value: &str) -> Vec<String> {
    let mut forms = vec![
        value.to_owned(),
        value.to_ascii_uppercase(),
        value.to_ascii_lowercase(),
        B64.encode(value),
    ];
    if value.len().is_multiple_of(2) && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes: Vec<u8> = (0..value.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&value[i..i + 2], 16).unwrap())
            .collect();
        forms.push(B64.encode(&bytes));
        forms.push(format!("{bytes:?}"));
    }
    forms
}

/// The log's lines as JSON: (message, peer) of each.
fn events(log: &[String]) -> Vec<(String, String, Value)> {
    log.iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|v| {
            let fields = &v["fields"];
            (
                fields["message"].as_str().unwrap_or("").to_owned(),
                fields["peer"].as_str().unwrap_or("").to_owned(),
                fields.clone(),
            )
        })
        .collect()
}

#[test]
fn no_secret_in_any_log_at_trace_level() {
    let mut server = Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.to_owned()),
        env: vec![("CPMSTORE_LOG".into(), "trace".into())],
        ..Default::default()
    });
    let mut story = Story::default();
    run_story(&server, &mut story);

    // Stop the server, so that every connection's last lines are written.
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(60))
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "{status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log_text().contains("\"stopped\"") {
        assert!(Instant::now() < deadline, "no `stopped` in the log");
        std::thread::sleep(Duration::from_millis(10));
    }
    let log: Vec<String> = server.log.lock().unwrap().clone();

    // Trace level really is on, in the server and in the CLI.
    assert!(
        log.iter()
            .any(|l| l.contains("\"level\":\"TRACE\"") || l.contains("\"level\":\"DEBUG\"")),
        "the server did not log below info"
    );

    // Everything written, with where it came from.
    let mut outputs: Vec<(String, String)> = vec![("server log".into(), log.join("\n"))];
    for (args, out) in &story.cli {
        outputs.push((
            format!("stderr of `{args}`"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
        outputs.push((
            format!("stdout of `{args}`"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    let bytes: usize = outputs.iter().map(|(_, text)| text.len()).sum();
    eprintln!(
        "{} server log lines, {} CLI commands, {bytes} bytes checked",
        log.len(),
        story.cli.len()
    );

    for (label, secret) in &story.secrets {
        for form in forms(secret) {
            for (place, text) in &outputs {
                assert!(
                    !text.contains(&form),
                    "{label} ({form}) appears in the {place}"
                );
            }
        }
    }
    for (label, secret, printed_by) in &story.generated {
        let own = format!("stdout of `{}`", story.cli[*printed_by].0);
        for form in forms(secret) {
            for (place, text) in &outputs {
                let expected = usize::from(*place == own && form == *secret);
                assert_eq!(
                    text.matches(&form).count(),
                    expected,
                    "{label} ({form}) in the {place}"
                );
            }
        }
    }

    // The log tells the story: each IMAP connection opened and closed once, with its
    // peer address; each login attempt once, with its user, mechanism and outcome.
    let events = events(&log);
    for (ip, attempts) in &story.connections {
        let prefix = format!("{ip}:");
        let count = |message: &str| {
            events
                .iter()
                .filter(|(m, peer, _)| m == message && peer.starts_with(&prefix))
                .count()
        };
        assert_eq!(count("connection opened"), 1, "connection from {ip} opened");
        assert_eq!(count("connection closed"), 1, "connection from {ip} closed");
        let logins: Vec<&Value> = events
            .iter()
            .filter(|(m, peer, _)| {
                (m == "login" || m == "login refused") && *peer == ip.to_string()
            })
            .map(|(_, _, fields)| fields)
            .collect();
        assert_eq!(
            logins.len(),
            attempts.len(),
            "login lines from {ip}: {logins:#?}"
        );
        let mut expected: HashMap<(String, String, bool), usize> = HashMap::new();
        for (user, mechanism, ok) in attempts {
            *expected
                .entry((user.to_string(), mechanism.to_string(), *ok))
                .or_default() += 1;
        }
        let mut seen: HashMap<(String, String, bool), usize> = HashMap::new();
        for fields in logins {
            let key = (
                fields["user"].as_str().unwrap_or("").to_owned(),
                fields["mechanism"].as_str().unwrap_or("").to_owned(),
                fields["outcome"] == "success",
            );
            assert!(
                fields["outcome"].is_string(),
                "a login line without outcome: {fields}"
            );
            *seen.entry(key).or_default() += 1;
        }
        assert_eq!(seen, expected, "login lines from {ip}");
    }
    // The push and the admin calls are logged too, without their secrets.
    assert!(
        events
            .iter()
            .any(|(m, _, f)| m == "push decision" && f["outcome"] == "delivered"),
        "no push decision in the log"
    );
    let admin_statuses: Vec<u64> = events
        .iter()
        .filter(|(m, _, _)| m == "admin request")
        .filter_map(|(_, _, f)| f["status"].as_u64())
        .collect();
    assert_eq!(
        admin_statuses.iter().filter(|s| **s == 401).count(),
        2,
        "admin requests: {admin_statuses:?}"
    );
    assert_eq!(
        admin_statuses.len(),
        7,
        "admin requests: {admin_statuses:?}"
    );
}
