//! A client's TLS 1.2 renegotiation attempt on the implicit-TLS port (issue 10, item
//! 8): rustls refuses it with a `no_renegotiation` warning alert, and the server logs
//! that at DEBUG, never at WARN: a client's misbehaviour is not an operator's warning.
//! Driven by `openssl s_client`, whose `R` line asks for a renegotiation.
//!
//! Needs the binary: `cargo build -p cpmstore-server` before `cargo test -p
//! cpmstore-tests`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cpmstore_tests::imap_client::Client;
use cpmstore_tests::require;
use cpmstore_tests::server::{Server, ServerOptions};
use serde_json::Value;

/// Connects with `openssl s_client -tls1_2`, waits for the IMAP greeting, asks for a
/// renegotiation (`R`), and waits until the client reports it asked. The client then
/// waits for a handshake that never comes: the caller kills it.
fn attempt_renegotiation(server: &Server) -> Child {
    require("openssl");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &server.imaps.to_string(), "-tls1_2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    // The IMAP greeting comes on stdout, s_client's own RENEGOTIATING on stderr.
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let readers: [Box<dyn std::io::Read + Send>; 2] = [Box::new(stdout), Box::new(stderr)];
    for reader in readers {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let wait_for = |wanted: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    assert!(wait_for("* OK"), "no IMAP greeting over TLS 1.2");
    stdin.write_all(b"R\n").unwrap();
    stdin.flush().unwrap();
    assert!(wait_for("RENEGOTIATING"), "s_client did not renegotiate");
    child
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The server's log lines as JSON objects.
fn log_lines(server: &Server) -> Vec<Value> {
    server
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn mentions_renegotiation(line: &Value) -> bool {
    line["fields"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("NoRenegotiation"))
}

fn rustls_warning(line: &Value) -> bool {
    line["level"] == "WARN"
        && line["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("rustls"))
}

#[test]
fn renegotiation_attempt_is_logged_at_debug_not_warn() {
    // With rustls at debug, the refusal is there, at DEBUG.
    let server = Server::start_with(ServerOptions {
        env: vec![("CPMSTORE_LOG".into(), "info,rustls=debug".into())],
        ..Default::default()
    });
    let client = attempt_renegotiation(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        if let Some(line) = log_lines(&server).into_iter().find(mentions_renegotiation) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line about the refused renegotiation:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stop(client);
    assert_eq!(refusal["level"], "DEBUG", "{refusal}");
    assert_eq!(refusal["target"], "rustls::common_state", "{refusal}");
    // The server still serves, and nothing from rustls was logged at WARN.
    let mut client = Client::tls(server.imaps);
    assert!(client.greeting.starts_with("* OK"), "{}", client.greeting);
    assert!(client.command("NOOP").is_ok());
    let lines = log_lines(&server);
    assert!(!lines.iter().any(rustls_warning), "{}", server.log_text());

    // At the default level (info), nothing about it at all.
    // Nothing at info level tells when the server has refused, so give it a second
    // (the run above shows it takes milliseconds) before the client goes.
    let server = Server::start();
    let client = attempt_renegotiation(&server);
    std::thread::sleep(Duration::from_secs(1));
    stop(client);
    // The connection's close is logged after the refusal would have been.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_lines(&server)
        .iter()
        .any(|l| l["fields"]["message"] == "connection closed")
    {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = log_lines(&server);
    assert!(
        !lines.iter().any(mentions_renegotiation),
        "{}",
        server.log_text()
    );
    assert!(!lines.iter().any(rustls_warning), "{}", server.log_text());
}
