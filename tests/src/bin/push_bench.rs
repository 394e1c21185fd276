//! HTTP push ingress benchmark, end to end: a fresh release `cpmstore serve` on SQLite,
//! subscribers with `loopback-ppg.xml` loaded, and N clients on kept-alive connections
//! POSTing `/v1/push/{user}` from 127.0.0.1 for a fixed time. Each push is decided with
//! the whitelist and stored in INBOX (one committed append per push). Prints
//! deliveries per second and latency percentiles, then the same for pushes the
//! whitelist rejects (no write).
//!
//! Usage (build the server in release first):
//!   cargo build --release -p cpmstore-server
//!   cargo run --release -p cpmstore-tests --bin push-bench -- [CLIENTS] [SECONDS] [SUBSCRIBERS]
//! Defaults: 16 clients, 10 seconds, 16 subscribers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cpmstore_tests::server::{Server, ServerOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/provisioning"
);
const BODY: &[u8] = b"<?xml version=\"1.0\"?><si><indication href=\"http://operator.example/msg/42\">You have a new message</indication></si>";

/// One kept-alive HTTP/1.1 connection.
struct Conn {
    io: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        Conn {
            io: BufReader::new(tcp),
        }
    }

    /// POSTs one push; the status code.
    async fn push(&mut self, user: &str) -> u16 {
        let head = format!(
            "POST /v1/push/{user} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/vnd.wap.sic\r\n\
             X-Wap-Application-Id: x-wap-application:push.sia\r\nContent-Length: {}\r\n\r\n",
            BODY.len()
        );
        let stream = self.io.get_mut();
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(BODY).await.expect("write");
        let mut line = String::new();
        self.io.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut length = 0usize;
        loop {
            line.clear();
            self.io.read_line(&mut line).await.expect("header");
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        self.io.read_exact(&mut body).await.expect("body");
        status
    }
}

/// Runs `clients` connections pushing to the users in turn for `seconds`; the
/// per-push latencies of the answers with `expect` status.
async fn run(
    addr: SocketAddr,
    clients: usize,
    seconds: u64,
    users: &[String],
    expect: u16,
) -> (Vec<Duration>, Duration) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let users = users.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut latencies = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let user = &users[i % users.len()];
                i += 1;
                let t = Instant::now();
                let status = conn.push(user).await;
                assert_eq!(status, expect, "push to {user}");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all, started.elapsed())
}

fn report(what: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
    latencies.sort();
    let n = latencies.len();
    let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)];
    let mean = latencies.iter().sum::<Duration>() / n as u32;
    println!(
        "| {what} | {n} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
        n as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let subscribers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);

    let server = Server::start_with(ServerOptions {
        extra_config: "[limits]\nmax_connections = 10000\n".into(),
        ..Default::default()
    });
    let addr = server.http.expect("http listener");
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for i in 0..subscribers {
        for (prefix, sample, list) in [
            ("ok", "loopback-ppg.xml", &mut accepted),
            ("no", "seed-example.xml", &mut rejected),
        ] {
            let user = format!("{prefix}{i}");
            let out = server.cli(&["subscriber", "add", &user], "");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = format!("{SAMPLES}/{sample}");
            let out = server.cli(&["whitelist", "load", &user, &path], "");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            list.push(user);
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "HTTP push ingress: {clients} clients, {seconds} s, {subscribers} subscribers per case, SQLite"
    );
    println!("| pushes | n | per second | median | p99 | mean |");
    println!("|---|---:|---:|---:|---:|---:|");
    let (latencies, elapsed) = runtime.block_on(run(addr, clients, seconds, &accepted, 202));
    report("accepted (202, stored)", latencies, elapsed);
    let (latencies, elapsed) = runtime.block_on(run(addr, clients, seconds, &rejected, 403));
    report("rejected (403)", latencies, elapsed);
}
