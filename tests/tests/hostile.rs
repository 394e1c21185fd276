//! Hostile clients (issue 10): each test reproduces an attack over real sockets and
//! asserts the fix, while a control client on another source address does LOGIN +
//! SELECT + NOOP over and over; its p99 must stay under 250 ms throughout.
//!
//! Sizes are small by default so CI stays fast; `CPMSTORE_HOSTILE_FULL=1` runs the sizes
//! of the original report (25,600 messages, 50 MB messages, 20 connections × 58 MiB).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpmstore_tests::block_on;
use cpmstore_tests::imap_client::{Client, quote};
use cpmstore_tests::server::{Server, ServerOptions};

const PASSWORD: &str = "hostile-test-password";

fn full() -> bool {
    std::env::var("CPMSTORE_HOSTILE_FULL").is_ok_and(|v| v == "1")
}

/// A TCP connection from a chosen loopback source address.
fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let src: IpAddr = src.parse().expect("source address");
    let tcp = block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(src, 0))?;
        let stream = socket.connect(addr).await?;
        stream.into_std()
    })
    .unwrap_or_else(|e| panic!("connect from {src} to {addr}: {e}"));
    tcp.set_nonblocking(false).expect("blocking");
    tcp
}

/// The server's resident memory in KiB.
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// LOGIN + SELECT + NOOP every 100 ms from 127.0.0.2 until stopped.
struct Control {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Duration>>,
}

impl Control {
    fn start(server: &Server, user: &str) -> Control {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = server.imaps;
        let user = user.to_owned();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let mut c = Client::tls_over(connect_from("127.0.0.2", addr));
                let started = Instant::now();
                c.command(&format!("LOGIN {} {}", quote(&user), quote(PASSWORD)))
                    .ok();
                c.command("SELECT INBOX").ok();
                c.command("NOOP").ok();
                samples.push(started.elapsed());
                c.command("LOGOUT");
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        // At least one round before the attack starts.
        std::thread::sleep(Duration::from_millis(300));
        Control { stop, handle }
    }

    /// Stops the control client and asserts its p99.
    fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = self.handle.join().expect("control client panicked");
        assert!(!samples.is_empty(), "{what}: no control round completed");
        samples.sort();
        let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
        println!(
            "{what}: control LOGIN+SELECT+NOOP n={} median={:?} p99={p99:?}",
            samples.len(),
            samples[samples.len() / 2]
        );
        assert!(
            p99 < Duration::from_millis(250),
            "{what}: control p99 {p99:?} (samples {samples:?})"
        );
    }
}

fn server_with(extra: &str) -> Server {
    let server = Server::start_with(ServerOptions {
        extra_config: extra.to_owned(),
        ..Default::default()
    });
    server.add_user("mallory", PASSWORD);
    server.add_user("carol", PASSWORD);
    server
}

/// Appends `n` small messages with pipelined LITERAL+ APPENDs.
fn fill(c: &mut Client, n: usize) {
    let batch = 200;
    let mut done = 0;
    while done < n {
        let count = batch.min(n - done);
        let mut bytes = Vec::new();
        let mut tags = Vec::new();
        for i in done..done + count {
            let msg = format!("From: a@example.com\r\nSubject: m{i}\r\n\r\nbody {i}\r\n");
            let tag = c.tag();
            bytes
                .extend_from_slice(format!("{tag} APPEND INBOX {{{}+}}\r\n", msg.len()).as_bytes());
            bytes.extend_from_slice(msg.as_bytes());
            bytes.extend_from_slice(b"\r\n");
            tags.push(tag);
        }
        c.send_raw(&bytes);
        for tag in tags {
            c.read_reply(&tag).ok();
        }
        done += count;
    }
}

/// A set of `n` copies of `1:*` (the report's 64 KB line has 16,000).
fn many_ranges(n: usize) -> String {
    vec!["1:*"; n].join(",")
}

#[test]
fn one_command_cannot_freeze_the_server() {
    let messages = if full() { 25_600 } else { 3_000 };
    let server = server_with("");
    let mut m = Client::login(server.imaps, "mallory", PASSWORD);
    fill(&mut m, messages);
    m.command("SELECT INBOX").ok();
    let control = Control::start(&server, "carol");

    let ranges = many_ranges(16_000);
    let limit = Duration::from_secs(if full() { 10 } else { 5 });
    for (command, expect_fetches) in [
        (format!("FETCH {ranges} (FLAGS)"), messages),
        (format!("UID FETCH {ranges} (FLAGS)"), messages),
        (format!("SEARCH {ranges}"), 0),
        (format!("UID SEARCH UID {ranges}"), 0),
        (
            format!("STORE {} +FLAGS.SILENT (\\Seen)", many_ranges(4_000)),
            0,
        ),
    ] {
        let started = Instant::now();
        let reply = m.command(&command).ok();
        let took = started.elapsed();
        let name: String = command.chars().take(12).collect();
        println!("{name}…: {took:?}");
        assert!(took < limit, "{name}… took {took:?}");
        if expect_fetches > 0 {
            assert_eq!(reply.lines_with("FETCH").len(), expect_fetches, "{name}");
        }
        if command.contains("SEARCH") {
            let found = reply.lines_with("SEARCH");
            assert_eq!(found.len(), 1, "{name}");
            assert_eq!(
                found[0].split(' ').count() - 2,
                messages,
                "{name}: every message once"
            );
        }
    }
    // Overlapping, reversed and repeated ranges resolve to each message once, in order.
    let reply = m.command("FETCH 5:3,4,2:3,3 (UID)").ok();
    let seqs: Vec<&str> = reply
        .lines_with("FETCH")
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(seqs, ["2", "3", "4", "5"]);
    control.finish("huge sequence sets");
}

/// Writes as much of `bytes` as the server takes; returns how much it took and what
/// it answered.
fn push_until_closed(tcp: &mut TcpStream, bytes: &[u8]) -> (usize, String) {
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut sent = 0;
    for chunk in bytes.chunks(64 * 1024) {
        match tcp.write_all(chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break,
        }
    }
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    (sent, String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn a_command_before_login_stays_small() {
    let (connections, repeats) = if full() { (20, 960) } else { (5, 40) };
    let server = server_with("");
    let control = Control::start(&server, "carol");
    let before = rss_kib(&server);

    // The report's shape: a NOOP whose zero-length literals extend it forever.
    let mut attack = b"a NOOP ".to_vec();
    for _ in 0..repeats {
        attack.extend(std::iter::repeat_n(b'x', 60_000));
        attack.extend_from_slice(b" {0+}\r\n");
    }
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let addr = server.imap;
            let attack = attack.clone();
            std::thread::spawn(move || {
                let mut tcp = TcpStream::connect(addr).expect("connect");
                let mut greeting = [0u8; 256];
                let _ = tcp.read(&mut greeting);
                push_until_closed(&mut tcp, &attack)
            })
        })
        .collect();
    let mut peak = before;
    while threads.iter().any(|t| !t.is_finished()) {
        peak = peak.max(rss_kib(&server));
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in threads {
        let (sent, answer) = t.join().expect("attacker thread");
        assert!(
            answer.contains("BAD [TOOBIG]") && answer.contains("* BYE"),
            "answer: {answer}"
        );
        // What the kernel's socket buffers took is all the client could send.
        assert!(sent > 0, "nothing sent");
    }
    let grew = peak.saturating_sub(before);
    println!("{connections} connections: RSS {before} KiB, peak +{grew} KiB");
    if std::env::var("HOSTILE_DEBUG").is_ok() {
        println!("{}", server.log_text());
    }
    assert!(grew < 16 * 1024, "RSS grew by {grew} KiB");

    // A synchronising literal too large before login is refused unsent; the connection
    // goes on.
    let mut c = Client::plain(server.imap);
    c.send_raw(b"l1 LOGIN mallory {40000}\r\n");
    let line = c.read_line().expect("answer");
    assert!(line.starts_with("l1 NO [TOOBIG]"), "{line}");
    c.command("NOOP").ok();

    // After login: literals outside APPEND stay within max_command_bytes, zero-length
    // ones included; APPEND takes large literals.
    let mut m = Client::login(server.imaps, "mallory", PASSWORD);
    m.send_raw(b"n1 NOOP {100000}\r\n");
    let line = m.read_line().expect("answer");
    assert!(line.starts_with("n1 NO [TOOBIG]"), "{line}");
    let big = vec![b'y'; 2 * 1024 * 1024];
    let mut message = b"Subject: big\r\n\r\n".to_vec();
    message.extend_from_slice(&big);
    m.append("INBOX", "", &message).ok();
    let mut zero = b"z1 NOOP".to_vec();
    for _ in 0..20_000 {
        zero.extend_from_slice(b" {0+}\r\n");
    }
    zero.extend_from_slice(b"\r\n");
    m.send_raw(&zero);
    let mut answer = String::new();
    while let Ok(line) = m.read_line() {
        answer.push_str(&line);
        answer.push('\n');
    }
    assert!(
        answer.contains("z1 BAD [TOOBIG]") && answer.contains("* BYE"),
        "{answer}"
    );
    control.finish("pre-auth command size");
}

/// Reads until EOF or `limit`; returns what came and how long it took.
fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn the_login_deadline_counts_from_connect() {
    let server = server_with("[limits]\nlogin_timeout_secs = 2\n");
    let control = Control::start(&server, "carol");

    // A NOOP every 400 ms does not keep an unauthenticated connection open.
    let addr = server.imap;
    let nooper = std::thread::spawn(move || {
        let started = Instant::now();
        let mut c = Client::plain(addr);
        let mut said = String::new();
        for i in 0.. {
            std::thread::sleep(Duration::from_millis(400));
            let tag = format!("n{i}");
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c.send_raw(format!("{tag} NOOP\r\n").as_bytes())
            }))
            .is_err()
            {
                break;
            }
            match c.read_line() {
                Ok(line) if line.starts_with("* BYE") => {
                    said = line;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        (said, started.elapsed())
    });

    // An AUTHENTICATE exchange left hanging ends at the deadline too.
    let mut a = Client::tls(server.imaps);
    let started = Instant::now();
    a.send_raw(b"a1 AUTHENTICATE PLAIN\r\n");
    assert!(a.read_line().expect("continuation").starts_with('+'));
    let mut said = String::new();
    while let Ok(line) = a.read_line() {
        said.push_str(&line);
        said.push('\n');
    }
    let took = started.elapsed();
    assert!(said.contains("* BYE Login timeout"), "{said}");
    assert!(
        took < Duration::from_millis(3500),
        "AUTHENTICATE hung {took:?}"
    );

    // A TLS connection that never starts its handshake is closed at the deadline.
    let mut silent = TcpStream::connect(server.imaps).expect("connect");
    let (got, took) = read_to_close(&mut silent, Duration::from_secs(6));
    assert!(got.is_empty(), "cleartext on the TLS port: {got}");
    assert!(
        took < Duration::from_millis(3500),
        "handshake wait {took:?}"
    );

    let (said, took) = nooper.join().expect("nooper");
    assert!(said.starts_with("* BYE Login timeout"), "{said}");
    assert!(
        took < Duration::from_millis(3500),
        "NOOPs kept it open for {took:?}"
    );

    // Once logged in, the deadline no longer applies.
    let mut c = Client::login(server.imaps, "mallory", PASSWORD);
    std::thread::sleep(Duration::from_millis(2500));
    c.command("NOOP").ok();
    control.finish("login deadline");
}

#[test]
fn connections_not_logged_in_are_capped_per_address_and_in_total() {
    let server = server_with(
        "[limits]\nmax_connections = 30\nmax_connections_per_ip = 30\n\
         max_preauth_connections = 8\nmax_preauth_connections_per_ip = 5\n",
    );
    let greet = |src: &str, addr: SocketAddr| {
        let mut tcp = connect_from(src, addr);
        let (got, _) = read_line_raw(&mut tcp);
        (tcp, got)
    };
    let mut held = Vec::new();
    for _ in 0..5 {
        let (tcp, got) = greet("127.0.0.1", server.imap);
        assert!(got.starts_with("* OK"), "{got}");
        held.push(tcp);
    }
    // The sixth from the same address: refused, in cleartext on the cleartext port ...
    let (_, got) = greet("127.0.0.1", server.imap);
    assert!(got.starts_with("* BYE Too many connections"), "{got}");
    // ... and without a cleartext word on the TLS port.
    let mut tls = connect_from("127.0.0.1", server.imaps);
    let (got, _) = read_to_close(&mut tls, Duration::from_secs(3));
    assert!(got.is_empty(), "cleartext on the TLS port: {got:?}");

    // Other addresses fill the rest of the pre-auth slots (8 in all) ...
    for _ in 0..3 {
        let (tcp, got) = greet("127.0.0.3", server.imap);
        assert!(got.starts_with("* OK"), "{got}");
        held.push(tcp);
    }
    let (_, got) = greet("127.0.0.4", server.imap);
    assert!(got.starts_with("* BYE Too many connections"), "{got}");

    // ... but authenticated sessions do not count against them: with one hostile
    // connection gone, clients log in one after another and keep their sessions.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut sessions = Vec::new();
    for _ in 0..15 {
        let mut c = Client::tls_over(connect_from("127.0.0.5", server.imaps));
        c.command(&format!("LOGIN carol {}", quote(PASSWORD))).ok();
        sessions.push(c);
    }
    for c in &mut sessions {
        c.command("NOOP").ok();
    }
    // The hostile ones are still capped.
    let (_kept, got) = greet("127.0.0.4", server.imap);
    assert!(got.starts_with("* OK"), "the freed slot: {got}");
    let (_, got) = greet("127.0.0.4", server.imap);
    assert!(got.starts_with("* BYE Too many connections"), "{got}");
}

/// Reads one line from a raw socket (the greeting).
fn read_line_raw(tcp: &mut TcpStream) -> (String, usize) {
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        match tcp.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    let n = got.len();
    (String::from_utf8_lossy(&got).into_owned(), n)
}

#[test]
fn a_client_that_does_not_read_is_disconnected() {
    let (count, size) = if full() {
        (10, 50_000_000)
    } else {
        (3, 4_000_000)
    };
    let server = server_with("[limits]\nwrite_timeout_secs = 2\n");
    let mut m = Client::login(server.imaps, "mallory", PASSWORD);
    for i in 0..count {
        let mut message = format!("Subject: big {i}\r\n\r\n").into_bytes();
        message.resize(size, b'z');
        m.append("INBOX", "", &message).ok();
    }
    drop(m);
    let control = Control::start(&server, "carol");
    let before = rss_kib(&server);

    // Several clients ask for every body and read nothing.
    let readers = if full() { 10 } else { 3 };
    let mut stalled = Vec::new();
    for _ in 0..readers {
        let mut c = Client::login(server.imaps, "mallory", PASSWORD);
        c.command("SELECT INBOX").ok();
        c.send_raw(b"f1 FETCH 1:* (BODY.PEEK[])\r\n");
        stalled.push(c);
    }
    let started = Instant::now();
    let mut peak = before;
    while started.elapsed() < Duration::from_secs(6) {
        peak = peak.max(rss_kib(&server));
        std::thread::sleep(Duration::from_millis(50));
    }
    let grew = peak.saturating_sub(before);
    println!(
        "{readers} stalled readers of {count} × {size} bytes: RSS {before} KiB, peak +{grew} KiB"
    );
    // Each holds the message it is sending, not a second copy for output; the peak
    // also counts the storage layer's transient copies while loading it.
    let bound = (readers * size * 4 / 1024) as u64 + 16 * 1024;
    assert!(grew < bound, "RSS grew by {grew} KiB (bound {bound} KiB)");
    // The server gave up on them: their connections are closed.
    let log = server.log_text();
    let timeouts = log.matches("write timeout").count();
    assert!(
        timeouts >= readers,
        "expected {readers} sessions ended by the write timeout; log:\n{log}"
    );
    drop(stalled);
    control.finish("stalled readers");
}

#[test]
fn buffers_shrink_after_large_commands() {
    let (sessions, size) = if full() {
        (5, 40_000_000)
    } else {
        (3, 8_000_000)
    };
    // A fixed mmap threshold makes glibc give a freed large buffer back to the system at
    // once, so what a session still holds shows in RSS (with the default dynamic
    // threshold, freed memory may stay in the process and hide the difference).
    let server = Server::start_with(ServerOptions {
        env: vec![("MALLOC_MMAP_THRESHOLD_".into(), "131072".into())],
        ..Default::default()
    });
    server.add_user("mallory", PASSWORD);
    let mut clients: Vec<Client> = (0..sessions)
        .map(|_| Client::login(server.imaps, "mallory", PASSWORD))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut message = format!("Subject: large {i}\r\n\r\n").into_bytes();
        message.resize(size, b'q');
        c.append("INBOX", "", &message).ok();
        c.command("SELECT INBOX").ok();
        c.command("FETCH * (BODY.PEEK[])").ok();
    }
    for c in &mut clients {
        c.command("NOOP").ok();
    }
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(&server);
    for c in &mut clients {
        c.command("LOGOUT");
    }
    drop(clients);
    std::thread::sleep(Duration::from_millis(500));
    let gone = rss_kib(&server);
    let held = idle.saturating_sub(gone);
    println!(
        "{sessions} sessions after APPEND + FETCH of {size} bytes each: RSS {idle} KiB idle, {gone} KiB after LOGOUT (held {held} KiB)"
    );
    // What LOGOUT frees is what the idle sessions held: far less than one message.
    assert!(
        held < (size / 1024 / 4) as u64,
        "{sessions} idle sessions held {held} KiB after APPEND/FETCH of {size} bytes each"
    );
}
