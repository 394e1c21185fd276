//! OTA-SIP push ingress end to end (INTERFACES.md 6.4): `sipp` (scenarios in
//! `tests/sipp/`) sends MESSAGEs over UDP and TCP to the real server; raw UDP/TCP
//! requests check the other answers, the echoed headers, framing and retransmissions.
//!
//! Needs the binary (`cargo build -p cpmstore-server`) and `sipp`
//! (`scripts/install-test-deps.sh`). Linux: 127.0.0.2 is used as a second, untrusted
//! source address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use cpmstore_tests::imap_client::Client;
use cpmstore_tests::require;
use cpmstore_tests::server::{Server, ServerOptions};

const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/provisioning"
);
const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sipp");
const PASSWORD: &str = "correct horse battery";
const ALICE: &str = "sip:alice@ims.example.net";
const WHITELISTED: &str = "<sip:ppg@operator.example>";

/// A server with SIP on, believing P-Asserted-Identity from 127.0.0.1 only; `alice`
/// has `loopback-ppg.xml` (SIP URI `sip:ppg@operator.example`) loaded, `bob` has no
/// whitelist.
fn server(extra_config: &str) -> Server {
    let server = Server::start_with(ServerOptions {
        extra_config: extra_config.into(),
        sip_trusted_peers: Some(vec!["127.0.0.1".into()]),
        ..Default::default()
    });
    for (user, address) in [("alice", ALICE), ("bob", "tel:+358409999999")] {
        let out = server.cli(
            &[
                "subscriber",
                "add",
                user,
                "--password-stdin",
                "--address",
                address,
            ],
            PASSWORD,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = format!("{SAMPLES}/loopback-ppg.xml");
    let out = server.cli(&["whitelist", "load", "alice", &path], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server
}

/// A UDP port free right now on `ip`, for sipp's own socket.
fn free_port(ip: &str) -> u16 {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    let port = socket.local_addr().unwrap().port();
    let tcp = std::net::TcpListener::bind((ip, port));
    drop(tcp);
    port
}

/// Runs one sipp call: `scenario` to `subscriber` with P-Asserted-Identity `pai`, from
/// `source`, over `transport` (`u1` or `t1`). True when the scenario passed.
fn sipp(
    server: &Server,
    scenario: &str,
    transport: &str,
    source: &str,
    subscriber: &str,
    pai: &str,
) -> bool {
    require("sipp");
    let target = server.sip_udp.expect("sip listener");
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new("sipp")
            .current_dir(dir.path())
            .args(["-sf", &format!("{SCENARIOS}/{scenario}")])
            .args(["-t", transport, "-m", "1", "-nostdin"])
            .args(["-i", source, "-p", &free_port(source).to_string()])
            .args(["-key", "subscriber", subscriber, "-key", "pai", pai])
            .args(["-timeout", "15", "-timeout_error", "-trace_err"])
            .arg(target.to_string())
            .output()
            .expect("run sipp")
    };
    // The free port picked for sipp's own socket may be taken by a parallel test before
    // sipp binds it ("Unable to bind main socket"): pick another, a few times.
    let mut out = run();
    for _ in 0..3 {
        // sipp says it on stdout, or in its errors log (-trace_err).
        let log: String = std::fs::read_dir(dir.path())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with("errors.log"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        let said = format!("{}{log}", String::from_utf8_lossy(&out.stdout));
        if out.status.success() || !said.contains("Unable to bind") {
            break;
        }
        out = run();
    }
    if !out.status.success() {
        let errors = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with("errors.log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<String>();
        eprintln!(
            "sipp {scenario} over {transport} from {source} failed ({}):\n{}\n{errors}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    out.status.success()
}

fn inbox(server: &Server, user: &str) -> (u32, Vec<String>) {
    let mut imap = Client::login(server.imaps, user, PASSWORD);
    let reply = imap.command("SELECT INBOX").ok();
    let exists = reply
        .untagged
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS")?.strip_prefix("* ")?.parse().ok())
        .unwrap_or(0);
    let messages = if exists > 0 {
        imap.command("FETCH 1:* BODY.PEEK[]").ok().untagged
    } else {
        Vec::new()
    };
    imap.command("LOGOUT");
    (exists, messages)
}

#[test]
fn sipp_whitelisted_identity_from_a_trusted_peer_is_delivered() {
    let server = server("");
    assert!(sipp(
        &server,
        "message_accepted.xml",
        "u1",
        "127.0.0.1",
        ALICE,
        WHITELISTED
    ));
    assert!(sipp(
        &server,
        "message_accepted.xml",
        "t1",
        "127.0.0.1",
        ALICE,
        WHITELISTED
    ));
    // Two values, name-addr with a display name; the Request-URI with a parameter.
    assert!(sipp(
        &server,
        "message_accepted.xml",
        "u1",
        "127.0.0.1",
        "sip:alice@ims.example.net;transport=udp",
        "\"Operator PPG\" <sip:ppg@OPERATOR.example>, <tel:+358401234567>",
    ));
    let (count, messages) = inbox(&server, "alice");
    assert_eq!(count, 3);
    let all = messages.join("\n");
    assert_eq!(
        all.matches("X-Push-Origin-Type: sip\r\n").count(),
        3,
        "{all}"
    );
    assert!(
        all.contains("X-Push-Origin: <sip:ppg@operator.example>\r\n"),
        "{all}"
    );
    assert!(
        all.contains("From: <sip:ppg@operator.example>\r\n"),
        "{all}"
    );
    assert!(all.contains("To: <sip:alice@ims.example.net>\r\n"), "{all}");
    assert!(all.contains("Subject: Push notification\r\n"), "{all}");
    assert!(all.contains("Content-Type: text/plain\r\n"), "{all}");
    assert!(all.contains("Push from sipp"), "{all}");
    assert!(
        server
            .log_text()
            .lines()
            .any(|l| l.contains("push decision")
                && l.contains("\"ingress\":\"sip\"")
                && l.contains("\"outcome\":\"delivered\""))
    );
}

#[test]
fn sipp_foreign_identity_or_untrusted_peer_is_refused() {
    let server = server("");
    for transport in ["u1", "t1"] {
        // A trusted peer asserting an identity not in the whitelist.
        assert!(sipp(
            &server,
            "message_refused.xml",
            transport,
            "127.0.0.1",
            ALICE,
            "<sip:intruder@elsewhere.example>",
        ));
        // The whitelisted identity, from a peer that is not trusted: not believed.
        assert!(sipp(
            &server,
            "message_refused.xml",
            transport,
            "127.0.0.2",
            ALICE,
            WHITELISTED,
        ));
    }
    assert_eq!(inbox(&server, "alice").0, 0);
    assert!(
        server
            .log_text()
            .lines()
            .any(|l| l.contains("push decision")
                && l.contains("\"ingress\":\"sip\"")
                && l.contains("\"outcome\":\"rejected\""))
    );
}

/// A request; `extra` header lines are added, `body` sent with its Content-Length.
fn request(method: &str, uri: &str, branch: &str, extra: &[&str], body: &str) -> String {
    let mut text = format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:ppg@operator.example>;tag=f1\r\n\
         To: <{uri}>\r\n\
         Call-ID: {branch}@127.0.0.1\r\n\
         CSeq: 7 {method}\r\n"
    );
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

fn udp(server: &Server, text: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .send_to(text.as_bytes(), server.sip_udp.unwrap())
        .unwrap();
    let mut buffer = vec![0u8; 65536];
    let (n, _) = socket.recv_from(&mut buffer).expect("an answer over UDP");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer}"))
}

fn header<'a>(answer: &'a str, name: &str) -> Vec<&'a str> {
    answer
        .split("\r\n")
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

#[test]
fn answers_and_echoed_headers() {
    let server = server("[limits]\nhttp_max_body_bytes = 1024\n");

    // OPTIONS: 200 with Allow; every mandatory header echoed, To tagged.
    let answer = udp(&server, &request("OPTIONS", ALICE, "z9hG4bKopt1", &[], ""));
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(header(&answer, "Allow"), ["MESSAGE, OPTIONS"], "{answer}");
    assert_eq!(
        header(&answer, "Via"),
        ["SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKopt1"],
        "{answer}"
    );
    assert_eq!(
        header(&answer, "From"),
        ["<sip:ppg@operator.example>;tag=f1"]
    );
    let to = header(&answer, "To");
    assert!(to[0].starts_with(&format!("<{ALICE}>;tag=")), "{answer}");
    assert_eq!(header(&answer, "Call-ID"), ["z9hG4bKopt1@127.0.0.1"]);
    assert_eq!(header(&answer, "CSeq"), ["7 OPTIONS"]);
    assert_eq!(header(&answer, "Content-Length"), ["0"]);

    // Other methods: 405 with Allow.
    let answer = udp(&server, &request("INFO", ALICE, "z9hG4bKinfo", &[], ""));
    assert_eq!(status(&answer), 405, "{answer}");
    assert!(answer.starts_with("SIP/2.0 405 Method Not Allowed\r\n"));
    assert_eq!(header(&answer, "Allow"), ["MESSAGE, OPTIONS"], "{answer}");
    assert_eq!(header(&answer, "CSeq"), ["7 INFO"]);

    // Unknown subscriber: 404.
    let answer = udp(
        &server,
        &request(
            "MESSAGE",
            "sip:nobody@ims.example.net",
            "z9hG4bKn",
            &[],
            "x",
        ),
    );
    assert_eq!(status(&answer), 404, "{answer}");

    // Malformed: no Call-ID, CSeq of another method, broken Content-Length: 400.
    let no_call_id = request("MESSAGE", ALICE, "z9hG4bKm1", &[], "x")
        .replace("Call-ID: z9hG4bKm1@127.0.0.1\r\n", "");
    for text in [
        no_call_id,
        request("MESSAGE", ALICE, "z9hG4bKm2", &[], "x")
            .replace("CSeq: 7 MESSAGE", "CSeq: 7 INVITE"),
        request("MESSAGE", ALICE, "z9hG4bKm3", &[], "x")
            .replace("Content-Length: 1", "Content-Length: z"),
    ] {
        let answer = udp(&server, &text);
        assert_eq!(status(&answer), 400, "{text}\n{answer}");
        assert_eq!(
            header(&answer, "Via").len(),
            1,
            "Via echoed even when malformed: {answer}"
        );
    }

    // Too large: 413.
    let big = "x".repeat(1025);
    let answer = udp(&server, &request("MESSAGE", ALICE, "z9hG4bKbig", &[], &big));
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(answer.starts_with("SIP/2.0 413 Request Entity Too Large\r\n"));

    // No verified origin (no P-Asserted-Identity) is refused for alice, who has a
    // whitelist, and accepted for bob, who has none.
    let answer = udp(
        &server,
        &request("MESSAGE", ALICE, "z9hG4bKnopai", &[], "x"),
    );
    assert_eq!(status(&answer), 403, "{answer}");
    let answer = udp(
        &server,
        &request(
            "MESSAGE",
            "tel:+358409999999",
            "z9hG4bKbob",
            &["Content-Type: text/plain"],
            "hi bob",
        ),
    );
    assert_eq!(status(&answer), 200, "{answer}");
    let (count, messages) = inbox(&server, "bob");
    assert_eq!(count, 1);
    assert!(
        messages[0].contains("X-Push-Origin-Type: sip\r\n"),
        "{messages:?}"
    );
    assert!(messages[0].contains("hi bob"), "{messages:?}");
    assert_eq!(inbox(&server, "alice").0, 0);
}

#[test]
fn naming_an_unknown_context_is_refused() {
    let server = server("");
    let pai = format!("P-Asserted-Identity: {WHITELISTED}");
    let other = "X-Wap-Push-ProvURL: http://other/";
    // alice's whitelist (default context) trusts WHITELISTED. Naming a context she
    // has no whitelist for is refused: with no verified origin (the attack), and
    // even with the identity her default context trusts.
    for (branch, extra) in [
        ("z9hG4bKctx1", vec![other]),
        ("z9hG4bKctx2", vec![pai.as_str(), other]),
    ] {
        let answer = udp(&server, &request("MESSAGE", ALICE, branch, &extra, "x"));
        assert_eq!(status(&answer), 403, "{extra:?}: {answer}");
        assert!(answer.starts_with("SIP/2.0 403 Forbidden\r\n"), "{answer}");
    }
    assert_eq!(inbox(&server, "alice").0, 0);
    assert!(
        server
            .log_text()
            .lines()
            .any(|l| l.contains("push decision")
                && l.contains("\"ingress\":\"sip\"")
                && l.contains("\"context\":\"http://other/\"")
                && l.contains("\"reason\":\"unknown_context\"")),
        "{}",
        server.log_text()
    );
    // Without the context, the trusted identity is delivered.
    let answer = udp(
        &server,
        &request("MESSAGE", ALICE, "z9hG4bKctx3", &[&pai], "in"),
    );
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(inbox(&server, "alice").0, 1);
    // bob has no whitelist in any context: a named context changes nothing.
    let answer = udp(
        &server,
        &request(
            "MESSAGE",
            "tel:+358409999999",
            "z9hG4bKctx4",
            &[other],
            "hi",
        ),
    );
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(inbox(&server, "bob").0, 1);
}

#[test]
fn udp_retransmission_is_answered_again_and_stored_once() {
    let server = server("");
    let text = request(
        "MESSAGE",
        ALICE,
        "z9hG4bKretrans1",
        &[&format!("P-Asserted-Identity: {WHITELISTED}")],
        "once",
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let target = server.sip_udp.unwrap();
    let mut answers = Vec::new();
    for _ in 0..3 {
        socket.send_to(text.as_bytes(), target).unwrap();
        let mut buffer = vec![0u8; 65536];
        let (n, _) = socket.recv_from(&mut buffer).unwrap();
        answers.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    assert_eq!(status(&answers[0]), 200, "{}", answers[0]);
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:#?}");
    assert_eq!(inbox(&server, "alice").0, 1);
}

#[test]
fn tcp_messages_are_framed_by_content_length() {
    let server = server("[limits]\nhttp_max_body_bytes = 1024\n");
    let pai = format!("P-Asserted-Identity: {WHITELISTED}");
    let first = request(
        "MESSAGE",
        ALICE,
        "z9hG4bKtcp1",
        &[&pai, "Content-Type: text/plain"],
        "first\r\n\r\nwith a blank line",
    );
    let second = request("OPTIONS", ALICE, "z9hG4bKtcp2", &[], "");
    let third = request("MESSAGE", ALICE, "z9hG4bKtcp3", &[&pai], "third");
    let mut tcp = TcpStream::connect(server.sip_tcp.unwrap()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Two messages in one write, a keep-alive CRLF, then one split in two writes.
    tcp.write_all(format!("{first}{second}\r\n\r\n").as_bytes())
        .unwrap();
    let (head, tail) = third.split_at(third.len() / 2);
    tcp.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    tcp.write_all(tail.as_bytes()).unwrap();
    let mut received = String::new();
    let mut buffer = [0u8; 4096];
    while received.matches("SIP/2.0 ").count() < 3 {
        let n = tcp.read(&mut buffer).expect("three answers");
        assert!(n > 0, "closed early: {received}");
        received.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    let statuses: Vec<&str> = received
        .split("\r\n")
        .filter(|l| l.starts_with("SIP/2.0 "))
        .collect();
    assert_eq!(statuses, ["SIP/2.0 200 OK"; 3], "{received}");
    assert_eq!(
        header(&received, "CSeq"),
        ["7 MESSAGE", "7 OPTIONS", "7 MESSAGE"]
    );
    let (count, messages) = inbox(&server, "alice");
    assert_eq!(count, 2);
    assert!(
        messages[0].contains("first\r\n\r\nwith a blank line"),
        "{messages:?}"
    );

    // No Content-Length on TCP: 400, then the connection closes.
    let text = request("MESSAGE", ALICE, "z9hG4bKtcp4", &[&pai], "");
    let text = text.replace("Content-Length: 0\r\n", "");
    tcp.write_all(text.as_bytes()).unwrap();
    let mut rest = String::new();
    let _ = tcp.read_to_string(&mut rest);
    assert!(rest.starts_with("SIP/2.0 400 "), "{rest}");

    // A body over the limit: 413 at once, from Content-Length.
    let mut tcp = TcpStream::connect(server.sip_tcp.unwrap()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let text = request("MESSAGE", ALICE, "z9hG4bKtcp5", &[&pai], "")
        .replace("Content-Length: 0", "Content-Length: 5000");
    tcp.write_all(text.as_bytes()).unwrap();
    let mut rest = String::new();
    let _ = tcp.read_to_string(&mut rest);
    assert!(rest.starts_with("SIP/2.0 413 "), "{rest}");
    assert_eq!(inbox(&server, "alice").0, 2);
}

#[test]
fn sip_listener_addresses_are_logged() {
    let server = server("");
    let (udp, tcp): (SocketAddr, SocketAddr) = (server.sip_udp.unwrap(), server.sip_tcp.unwrap());
    assert_eq!(udp, tcp, "UDP and TCP share the port");
}
