//! IMAP load benchmark: N concurrent clients doing SELECT / APPEND / FETCH / STORE /
//! EXPUNGE (after LOGIN) for a fixed time against a fresh `cpmstore serve` on SQLite,
//! printing operations per second; then the server's resident memory with 1,000 idle
//! authenticated connections.
//!
//! Then the same load ROUNDS more times, each followed by SETTLE seconds of idle: it
//! exits 1 if the server's RSS after the last is more than twice what it was after the
//! first (memory that does not come back).
//!
//! Usage (build the server in release first):
//!   cargo build --release -p cpmstore-server
//!   cargo run --release -p cpmstore-tests --bin imap-bench -- [CLIENTS] [SECONDS] [IDLE_CONNECTIONS] [ROUNDS] [SETTLE]
//! Defaults: 32 clients, 10 seconds, 1000 idle connections, 3 rounds, 10 seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpmstore_tests::imap_client::tls_config;
use cpmstore_tests::server::{Server, ServerOptions};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const PASSWORD: &str = "bench password";
const MESSAGE: &[u8] = b"From: Bench <bench@example.net>\r\nTo: user@example.net\r\nSubject: benchmark message\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <bench@example.net>\r\nContent-Type: text/plain\r\n\r\nThe quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.\r\nThe quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.\r\n";

/// Operation counters, by command.
#[derive(Default)]
struct Counters {
    login: AtomicU64,
    select: AtomicU64,
    append: AtomicU64,
    fetch: AtomicU64,
    store: AtomicU64,
    expunge: AtomicU64,
}

struct Conn<S> {
    io: BufReader<S>,
    tag: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        loop {
            let n = self.io.read_until(b'\n', &mut buf).await.expect("read");
            assert!(n > 0, "server closed the connection");
            // Skip literals in responses.
            let trimmed = buf.strip_suffix(b"\r\n").unwrap_or(&buf);
            if let Some(open) = trimmed.iter().rposition(|b| *b == b'{')
                && trimmed.ends_with(b"}")
            {
                let len: usize = std::str::from_utf8(&trimmed[open + 1..trimmed.len() - 1])
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut lit = vec![0u8; len];
                self.io.read_exact(&mut lit).await.expect("literal");
                continue;
            }
            return String::from_utf8_lossy(&buf).into_owned();
        }
    }

    /// Sends a command and reads to its tagged status, which must be OK.
    async fn cmd(&mut self, text: &str) {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.io
            .get_mut()
            .write_all(format!("{tag} {text}\r\n").as_bytes())
            .await
            .expect("write");
        self.wait(&tag, text).await;
    }

    async fn wait(&mut self, tag: &str, what: &str) {
        loop {
            let l = self.line().await;
            if let Some(rest) = l.strip_prefix(tag) {
                assert!(rest.starts_with(" OK"), "{what}: {l}");
                return;
            }
        }
    }

    async fn append(&mut self) {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        let w = self.io.get_mut();
        w.write_all(format!("{tag} APPEND INBOX {{{}+}}\r\n", MESSAGE.len()).as_bytes())
            .await
            .expect("write");
        w.write_all(MESSAGE).await.expect("write");
        w.write_all(b"\r\n").await.expect("write");
        self.wait(&tag, "APPEND").await;
    }
}

async fn connect(
    addr: std::net::SocketAddr,
    user: &str,
) -> Conn<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(tls_config())
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    let mut c = Conn {
        io: BufReader::new(tls),
        tag: 0,
    };
    let greeting = c.line().await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    c.cmd(&format!("LOGIN {user} \"{PASSWORD}\"")).await;
    c
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let idle: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(3);
    let settle: u64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(10);

    let server = Server::start_with(ServerOptions {
        extra_config: format!(
            "[limits]\nmax_connections_per_ip = {0}\nmax_connections_per_account = {0}\n\
             max_preauth_connections = {0}\nmax_preauth_connections_per_ip = {0}\n",
            idle + clients + 10
        ),
        ..Default::default()
    });
    for i in 0..clients {
        server.add_user(&format!("user{i}"), PASSWORD);
    }
    server.add_user("idle", PASSWORD);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = server.imaps;
    let counters = Arc::new(Counters::default());

    // Phase 1: throughput.
    let pid = server.pid();
    let at_start = rss_kib(pid);
    let started = Instant::now();
    rt.block_on(load(addr, clients, seconds, counters.clone()));
    let elapsed = started.elapsed().as_secs_f64();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let total = get(&counters.login)
        + get(&counters.select)
        + get(&counters.append)
        + get(&counters.fetch)
        + get(&counters.store)
        + get(&counters.expunge);
    println!("throughput: {clients} clients, {elapsed:.1} s");
    for (name, c) in [
        ("LOGIN", &counters.login),
        ("SELECT", &counters.select),
        ("APPEND", &counters.append),
        ("FETCH", &counters.fetch),
        ("STORE", &counters.store),
        ("EXPUNGE", &counters.expunge),
    ] {
        println!(
            "  {name:<8} {:>8} ops  {:>9.1} ops/s",
            get(c),
            get(c) as f64 / elapsed
        );
    }
    println!(
        "  total    {total:>8} ops  {:>9.1} ops/s",
        total as f64 / elapsed
    );

    // Phase 2: memory with idle authenticated connections.
    let before = rss_kib(pid);
    let conns = rt.block_on(async {
        let mut conns = Vec::with_capacity(idle);
        for chunk in 0..idle.div_ceil(50) {
            let mut batch = Vec::new();
            for _ in 0..50.min(idle - chunk * 50) {
                batch.push(tokio::spawn(async move {
                    let mut c = connect(addr, "idle").await;
                    c.cmd("SELECT INBOX").await;
                    c
                }));
            }
            for b in batch {
                conns.push(b.await.expect("idle connection"));
            }
        }
        conns
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    println!(
        "memory: server RSS {before} KiB before, {after} KiB with {} idle authenticated connections ({:.1} KiB per connection)",
        conns.len(),
        (after.saturating_sub(before)) as f64 / conns.len().max(1) as f64
    );
    drop(conns);

    // Phase 3: memory comes back. The same load again, `rounds` times, each followed by
    // `settle` seconds of idle: the RSS after the last must stay within 2x of the RSS
    // after the first (it grew run after run with glibc's malloc).
    std::thread::sleep(Duration::from_millis(500));
    let mut after_rounds = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        rt.block_on(load(addr, clients, seconds, Arc::new(Counters::default())));
        std::thread::sleep(Duration::from_secs(settle));
        after_rounds.push(rss_kib(pid));
    }
    println!(
        "memory after load: server RSS {at_start} KiB at start, after each of {rounds} load runs and {settle} s idle: {after_rounds:?} KiB"
    );
    if let (Some(&first), Some(&last)) = (after_rounds.first(), after_rounds.last())
        && last > 2 * first
    {
        eprintln!(
            "memory grew run after run: {first} KiB after the first, {last} KiB after the last"
        );
        drop(server); // stops the server: `exit` runs no destructors
        std::process::exit(1);
    }
}

/// `clients` sessions doing SELECT / APPEND / FETCH / STORE / EXPUNGE for `seconds`.
async fn load(addr: std::net::SocketAddr, clients: usize, seconds: u64, counters: Arc<Counters>) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr, &format!("user{i}")).await;
            counters.login.fetch_add(1, Ordering::Relaxed);
            c.cmd("SELECT INBOX").await;
            counters.select.fetch_add(1, Ordering::Relaxed);
            while Instant::now() < deadline {
                for _ in 0..4 {
                    c.append().await;
                    counters.append.fetch_add(1, Ordering::Relaxed);
                }
                c.cmd("NOOP").await;
                c.cmd("FETCH 1:* (FLAGS UID RFC822.SIZE)").await;
                c.cmd("FETCH 1 (BODY.PEEK[] BODYSTRUCTURE ENVELOPE)").await;
                counters.fetch.fetch_add(2, Ordering::Relaxed);
                c.cmd("STORE 1:2 +FLAGS.SILENT (\\Seen \\Deleted)").await;
                counters.store.fetch_add(1, Ordering::Relaxed);
                c.cmd("EXPUNGE").await;
                counters.expunge.fetch_add(1, Ordering::Relaxed);
                c.cmd("SELECT INBOX").await;
                counters.select.fetch_add(1, Ordering::Relaxed);
            }
            c.cmd("LOGOUT").await;
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}
