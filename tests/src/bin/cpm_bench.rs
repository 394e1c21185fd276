//! CPM message store benchmark (INTERFACES.md 9.2, 9.4): deposits N objects into one
//! Conversation History folder through the HTTP deposit API and reports deposits per
//! second (first one connection at a time, then the rest over several connections in
//! parallel); then times `UID SEARCH HEADER IMDN-Message-ID <id>` in that folder over
//! IMAP (median, p99 and max of S searches for ids picked across the folder, each
//! checked to find exactly its one object). On SQLite, and on PostgreSQL too when
//! `CPMSTORE_TEST_POSTGRES_URL` is set (a temporary database).
//!
//! Usage (build the server in release first):
//!   cargo build --release -p cpmstore-server -p cpmstore-tests
//!   target/release/cpm-bench [OBJECTS] [SEARCHES] [CONNECTIONS] [SEQUENTIAL]
//! Defaults: 100000 objects, 50 searches, 8 parallel deposit connections, the first
//! 2000 deposits one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpmstore_tests::http_client::request;
use cpmstore_tests::imap_client::Client;
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

const TOKEN: &str = "cpm-bench-token-0123456789";
const PASSWORD: &str = "bench password";
const CONVERSATION: &str = "f3c1b7e0-5a2d-4c9e-9b1a-2d7e8c4a6f01";

/// Object `i`'s IMDN-Message-ID: 16 characters, like the ids RCS clients make.
fn imdn_id(i: usize) -> String {
    // splitmix64, so that neighbouring objects share no prefix.
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("{z:016x}")
}

/// A stand-alone chat message (Message/CPIM), as the network deposits it.
fn object(i: usize) -> Vec<u8> {
    let id = imdn_id(i);
    format!(
        "From: <tel:+15550100>\r\nTo: <tel:+15550101>\r\nDate: Thu, 3 Dec 2026 09:15:00 +0000\r\n\
         Conversation-ID: {CONVERSATION}\r\nContribution-ID: c-{i}\r\nIMDN-Message-ID: {id}\r\n\
         Message-Direction: received\r\nMessage-Context: pager-message\r\nContent-Type: Message/CPIM\r\n\r\n\
         From: <tel:+15550100>\r\nTo: <tel:+15550101>\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
         imdn.Message-ID: {id}\r\nDateTime: 2026-12-03T09:15:00Z\r\n\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nMessage number {i} of the benchmark.\r\n"
    )
    .into_bytes()
}

fn deposit(http: SocketAddr, i: usize) {
    let path = format!("/v1/cpm/alice/conversations/{CONVERSATION}/objects");
    let auth = format!("Bearer {TOKEN}");
    let a = request(
        http,
        "POST",
        &path,
        &[("Authorization", &auth)],
        &object(i),
        None,
    );
    assert_eq!(a.status, 201, "deposit {i}: {}", a.text());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn bench(
    backend: &str,
    storage_url: Option<String>,
    n: usize,
    searches: usize,
    conns: usize,
    seq: usize,
) {
    let server = Server::start_with(ServerOptions {
        admin_token: Some(TOKEN.into()),
        storage_url,
        extra_config: format!(
            "[limits]\nmax_connections_per_ip = {0}\nmax_connections = {0}\n",
            conns * 4 + 100
        ),
        ..Default::default()
    });
    server.add_user("alice", PASSWORD);
    let http = server.http.expect("the HTTP listener");
    println!("cpm-bench on {backend}: {n} objects into one conversation folder");

    // One connection at a time: the rate a single network function sees.
    let seq = seq.min(n);
    let start = Instant::now();
    for i in 0..seq {
        deposit(http, i);
    }
    let seq_time = start.elapsed();
    if seq > 0 {
        println!(
            "deposit, one connection: {seq} in {:.2} s = {:.0} deposits/s",
            seq_time.as_secs_f64(),
            seq as f64 / seq_time.as_secs_f64()
        );
    }
    // The rest over `conns` connections at once.
    let rest = n - seq;
    if rest > 0 {
        let next = Arc::new(AtomicUsize::new(seq));
        let start = Instant::now();
        let workers: Vec<_> = (0..conns.max(1))
            .map(|_| {
                let next = next.clone();
                std::thread::spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        deposit(http, i);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a deposit thread");
        }
        let par_time = start.elapsed();
        println!(
            "deposit, {conns} connections: {rest} in {:.2} s = {:.0} deposits/s",
            par_time.as_secs_f64(),
            rest as f64 / par_time.as_secs_f64()
        );
    }

    let mut c = Client::login(server.imaps, "alice", PASSWORD);
    let start = Instant::now();
    let r = c
        .command(&format!("SELECT \"RCSMessageStore/{CONVERSATION}\""))
        .ok();
    let select = start.elapsed();
    assert!(
        r.untagged.iter().any(|l| *l == format!("* {n} EXISTS")),
        "{:?}",
        &r.untagged[..r.untagged.len().min(5)]
    );
    println!("SELECT of the folder ({n} EXISTS): {}", ms(select));

    // Searches for ids spread over the folder, each found exactly once.
    let mut times = Vec::with_capacity(searches);
    for k in 0..searches {
        let i = (k * 7919 + 13) % n;
        let start = Instant::now();
        let r = c
            .command(&format!("UID SEARCH HEADER IMDN-Message-ID {}", imdn_id(i)))
            .ok();
        times.push(start.elapsed());
        // Exactly one object, and the right one (deposited in parallel, UIDs are not
        // in deposit order).
        let uids: Vec<&str> = r
            .untagged
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH "))
            .collect();
        assert_eq!(uids.len(), 1, "object {i}: {:?}", r.untagged);
        let uid = uids[0];
        assert!(uid.parse::<u32>().is_ok(), "object {i}: {uid}");
        let header = c
            .command(&format!(
                "UID FETCH {uid} BODY.PEEK[HEADER.FIELDS (IMDN-Message-ID)]"
            ))
            .ok()
            .all_text();
        assert!(header.contains(&imdn_id(i)), "object {i}: {header}");
    }
    times.sort();
    println!(
        "UID SEARCH HEADER IMDN-Message-ID <id>, {searches} searches: median {}, p99 {}, max {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().expect("at least one search"))
    );
    // The same session's round trip for a command that does nothing: what the machine
    // (TLS, scheduling under load) adds to every command.
    let mut noops = Vec::with_capacity(searches);
    for _ in 0..searches {
        let start = Instant::now();
        c.command("NOOP").ok();
        noops.push(start.elapsed());
    }
    noops.sort();
    println!(
        "NOOP, {searches} commands (the round trip alone): median {}, p99 {}",
        ms(percentile(&noops, 0.5)),
        ms(percentile(&noops, 0.99))
    );
    // For comparison: a substring that is not a whole id, and an id that is not there.
    for (what, needle) in [
        ("a 6-character infix", &imdn_id(n / 2)[5..11]),
        ("an unknown id", "0000000000000000x"),
    ] {
        let start = Instant::now();
        c.command(&format!("UID SEARCH HEADER IMDN-Message-ID {needle}"))
            .ok();
        println!(
            "UID SEARCH HEADER IMDN-Message-ID <{what}>: {}",
            ms(start.elapsed())
        );
    }
    c.command("LOGOUT");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, searches, conns, seq) = (arg(1, 100_000), arg(2, 50), arg(3, 8), arg(4, 2000));
    assert!(
        n > 0 && searches > 0,
        "OBJECTS and SEARCHES must be at least 1"
    );
    bench("SQLite", None, n, searches, conns, seq);
    if let Some(admin) = postgres_url_or_skip() {
        let mut db = TempDatabase::create(&admin, "cpmstore_cpm_bench");
        bench("PostgreSQL", Some(db.url.clone()), n, searches, conns, seq);
        db.drop_now();
    }
}
