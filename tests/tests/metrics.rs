//! `GET /metrics`, `/healthz` and `/readyz` of a real server (INTERFACES.md 8): the
//! counters move with logins, commands, connections and pushes, read back with a
//! Prometheus text-format parser (`prometheus-parse`), not by matching strings.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use prometheus_parse::{Sample, Scrape, Value};

use cpmstore_tests::http_client::{percent_encode, request};
use cpmstore_tests::imap_client::{Client, quote};
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

const PASSWORD: &str = "metrics password 1";

fn scrape(server: &Server) -> Scrape {
    let answer = request(server.http.unwrap(), "GET", "/metrics", &[], b"", None);
    assert_eq!(answer.status, 200, "{}", answer.head);
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "Prometheus text format content type, got {content_type:?}"
    );
    Scrape::parse(answer.body.lines()).expect("parses as Prometheus text format")
}

fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape.samples.iter().find(|s| {
        s.metric == metric
            && labels
                .iter()
                .all(|(name, value)| s.labels.get(name) == Some(*value))
    })
}

/// The value of a counter or gauge series; 0 when the series is not exported yet.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(other) => panic!("{metric} {labels:?} is not a plain value: {other:?}"),
    }
}

/// The `+Inf` bucket (the observation count) of a histogram series.
fn histogram_count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Histogram(buckets)) => {
            let mut sorted = buckets.clone();
            sorted.sort_by(|a, b| a.less_than.total_cmp(&b.less_than));
            for pair in sorted.windows(2) {
                assert!(
                    pair[0].count <= pair[1].count,
                    "buckets are cumulative: {sorted:?}"
                );
            }
            let last = sorted.last().expect("at least one bucket");
            assert!(last.less_than.is_infinite(), "ends with +Inf: {sorted:?}");
            last.count
        }
        Some(other) => panic!("{metric} {labels:?} is not a histogram: {other:?}"),
    }
}

/// Runs `check` on fresh scrapes until it holds (the counters of a session that just
/// ended move a moment after the client sees its last answer).
fn eventually(server: &Server, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(server);
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not seen in /metrics");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn story(server: &Server) {
    server.add_user("mallory", PASSWORD);
    let before = scrape(server);
    for family in [
        "cpmstore_connections_open",
        "cpmstore_connections_total",
        "cpmstore_logins_total",
        "cpmstore_storage_errors_total",
    ] {
        assert!(
            before.samples.iter().any(|s| s.metric == family),
            "{family} is exported from the start"
        );
    }
    let logins = |s: &Scrape, mechanism: &str, outcome: &str| {
        value(
            s,
            "cpmstore_logins_total",
            &[("mechanism", mechanism), ("outcome", outcome)],
        )
    };
    let commands = |s: &Scrape, command: &str, result: &str| {
        value(
            s,
            "cpmstore_imap_commands_total",
            &[("command", command), ("result", result)],
        )
    };
    let latency = |s: &Scrape, command: &str| {
        histogram_count(
            s,
            "cpmstore_imap_command_duration_seconds",
            &[("command", command)],
        )
    };
    let connections = |s: &Scrape, listener: &str| {
        value(s, "cpmstore_connections_total", &[("listener", listener)])
    };
    let open = |s: &Scrape, listener: &str| {
        value(s, "cpmstore_connections_open", &[("listener", listener)])
    };

    // Two logins that work (LOGIN, AUTHENTICATE PLAIN), one that fails, some commands,
    // one malformed command, on implicit TLS and STARTTLS.
    let mut a = Client::login(server.imaps, "mallory", PASSWORD);
    a.command("SELECT INBOX").ok();
    a.append("INBOX", "", b"Subject: counted\r\n\r\nbody\r\n")
        .ok();
    a.command("FETCH 1 (FLAGS)").ok();
    a.command("NOOP").ok();
    let bad = a.command("FETCH");
    assert!(bad.status.starts_with("BAD"), "{bad:?}");
    let mut b = Client::starttls(server.imap);
    let wrong = b.command(&format!("LOGIN mallory {}", quote("not the password")));
    assert!(wrong.status.starts_with("NO"), "{wrong:?}");
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0mallory\0{PASSWORD}"));
    b.command(&format!("AUTHENTICATE PLAIN {plain}")).ok();

    let during = scrape(server);
    assert!(
        open(&during, "imaps") >= 1.0 && open(&during, "imap") >= 1.0,
        "open connections counted while they are open"
    );
    assert_eq!(
        logins(&during, "login", "success") - logins(&before, "login", "success"),
        1.0
    );
    assert_eq!(
        logins(&during, "login", "failed") - logins(&before, "login", "failed"),
        1.0
    );
    assert_eq!(
        logins(&during, "plain", "success") - logins(&before, "plain", "success"),
        1.0
    );
    for (command, result) in [
        ("SELECT", "ok"),
        ("APPEND", "ok"),
        ("FETCH", "ok"),
        ("NOOP", "ok"),
        ("STARTTLS", "ok"),
        ("LOGIN", "no"),
    ] {
        assert_eq!(
            commands(&during, command, result) - commands(&before, command, result),
            1.0,
            "{command} {result}"
        );
    }
    assert!(
        during
            .samples
            .iter()
            .filter(|s| s.metric == "cpmstore_imap_commands_total")
            .any(|s| s.labels.get("result") == Some("bad")),
        "the malformed command is counted as bad"
    );
    for command in ["SELECT", "APPEND", "FETCH"] {
        assert!(
            latency(&during, command) > latency(&before, command),
            "{command} latency observed"
        );
    }
    assert!(connections(&during, "imaps") - connections(&before, "imaps") >= 1.0);
    assert!(connections(&during, "imap") - connections(&before, "imap") >= 1.0);

    // Pushes: one delivered (no whitelist provisioned: accepted), one for nobody.
    let http = server.http.unwrap();
    let path = format!("/v1/push/{}", percent_encode("mallory"));
    let delivered = request(
        http,
        "POST",
        &path,
        &[("Content-Type", "text/plain")],
        b"hi",
        None,
    );
    assert_eq!(delivered.status, 202, "{}", delivered.text());
    let unknown = request(http, "POST", "/v1/push/nobody", &[], b"hi", None);
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    drop(a);
    drop(b);
    let after = eventually(server, "connections closed", |s| {
        open(s, "imaps") == open(&before, "imaps") && open(s, "imap") == open(&before, "imap")
    });
    let push = |s: &Scrape, outcome: &str| {
        value(
            s,
            "cpmstore_push_decisions_total",
            &[
                ("ingress", "http"),
                ("outcome", outcome),
                ("origin_type", "ppg"),
            ],
        )
    };
    assert_eq!(push(&after, "delivered") - push(&before, "delivered"), 1.0);
    assert_eq!(
        push(&after, "unknown_subscriber") - push(&before, "unknown_subscriber"),
        1.0
    );
    // This scrape's own connection and the push requests went through the HTTP listener.
    assert!(connections(&after, "http") - connections(&before, "http") >= 3.0);
    assert_eq!(
        value(
            &after,
            "cpmstore_storage_errors_total",
            &[("component", "imap")]
        ),
        0.0
    );
}

#[test]
fn metrics_move_with_logins_commands_and_pushes() {
    let server = Server::start();
    story(&server);
}

#[test]
fn metrics_on_postgres() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_metrics");
    let server = Server::start_with(ServerOptions {
        storage_url: Some(db.url.clone()),
        ..Default::default()
    });
    story(&server);
}

#[test]
fn health_and_readiness() {
    let server = Server::start();
    let http = server.http.unwrap();
    let health = request(http, "GET", "/healthz", &[], b"", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let ready = request(http, "GET", "/readyz", &[], b"", None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    let unknown = request(http, "GET", "/nothing-here", &[], b"", None);
    assert_eq!(unknown.status, 404);
}

/// `/readyz` says 503 when the database goes away, while `/healthz` still says 200;
/// the failed check is counted as a storage error.
#[test]
fn readiness_follows_the_database() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let mut db = TempDatabase::create(&admin, "cpmstore_readyz");
    let server = Server::start_with(ServerOptions {
        storage_url: Some(db.url.clone()),
        ..Default::default()
    });
    let http = server.http.unwrap();
    assert_eq!(request(http, "GET", "/readyz", &[], b"", None).status, 200);
    let errors = |s: &Scrape| {
        value(
            s,
            "cpmstore_storage_errors_total",
            &[("component", "health")],
        )
    };
    let before = errors(&scrape(&server));
    db.drop_now();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = request(http, "GET", "/readyz", &[], b"", None);
        if ready.status == 503 {
            assert!(ready.json()["error"].as_str().is_some());
            break;
        }
        assert_eq!(ready.status, 200, "{}", ready.text());
        assert!(
            Instant::now() < deadline,
            "/readyz still 200 after the database was dropped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(request(http, "GET", "/healthz", &[], b"", None).status, 200);
    assert!(errors(&scrape(&server)) > before);
}

#[test]
fn cpm_deposits_and_events_are_counted() {
    const TOKEN: &str = "metrics-cpm-admin-token-0123";
    let server = Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.into()),
        ..Default::default()
    });
    server.add_user("carol", PASSWORD);
    let before = scrape(&server);
    for result in ["created", "repeated"] {
        let labels = [("result", result)];
        assert!(
            find(&before, "cpmstore_cpm_deposits_total", &labels).is_some(),
            "deposits {result} exported from the start"
        );
    }
    let chat = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/cpm/chat-message.eml"
    ))
    .unwrap();
    let post = |path: &str, token: &str, body: &[u8]| {
        let auth = format!("Bearer {token}");
        request(
            server.http.unwrap(),
            "POST",
            path,
            &[("Authorization", &auth)],
            body,
            None,
        )
    };
    let path = "/v1/cpm/carol/conversations/f3c1b7e0-5a2d-4c9e-9b1a-2d7e8c4a6f01/objects";
    assert_eq!(post(path, TOKEN, &chat).status, 201);
    assert_eq!(post(path, TOKEN, &chat).status, 200);
    assert_eq!(post(path, TOKEN, &chat).status, 200);
    assert_eq!(post(path, "wrong-token-wrong-token", &chat).status, 401);
    let events = br#"{"events": [
        {"imdn_message_id": "Xk2mQ7rT0a9LpZ3c", "add": ["\\Seen"]},
        {"imdn_message_id": "no-such-id", "add": ["\\Seen"]}]}"#;
    assert_eq!(post("/v1/cpm/carol/events", TOKEN, events).status, 200);

    let after = scrape(&server);
    let count = |metric: &str, labels: &[(&str, &str)]| value(&after, metric, labels);
    assert_eq!(
        count("cpmstore_cpm_deposits_total", &[("result", "created")]),
        1.0
    );
    assert_eq!(
        count("cpmstore_cpm_deposits_total", &[("result", "repeated")]),
        2.0
    );
    let requests = |operation: &str, status: &str| {
        count(
            "cpmstore_cpm_requests_total",
            &[("operation", operation), ("status", status)],
        )
    };
    assert_eq!(requests("deposit", "201"), 1.0);
    assert_eq!(requests("deposit", "200"), 2.0);
    assert_eq!(requests("deposit", "401"), 1.0);
    assert_eq!(requests("events", "200"), 1.0);
    assert_eq!(
        count("cpmstore_cpm_events_total", &[("result", "applied")]),
        1.0
    );
    assert_eq!(
        count("cpmstore_cpm_events_total", &[("result", "unknown")]),
        1.0
    );
}
