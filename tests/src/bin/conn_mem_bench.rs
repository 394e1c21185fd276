//! Server memory per connection: starts a release `cpmstore serve` on a temporary SQLite
//! data directory for each connection shape, holds N connections of that shape open and
//! reports how much the server's resident memory (VmRSS, /proc/PID/status) grew, per
//! connection. Only the server process is measured; the client is this program.
//!
//! Shapes:
//! - `session`: implicit TLS, LOGIN + SELECT INBOX, then silent (an idle mail client);
//! - `session-idle`: the same, then IDLE (a client waiting for push);
//! - `plain-idle`: cleartext port, greeting read, then silent;
//! - `plain-partial`: cleartext port, 32,000 bytes of a command line without its CRLF
//!   (under `limits.max_preauth_command_bytes`, 32 KiB, so the server keeps waiting);
//! - `tls-no-handshake`: implicit-TLS port, TCP connected, no ClientHello;
//! - `tls-hello`: implicit-TLS port, a ClientHello sent and nothing more (the server
//!   has answered and waits for the client's Finished);
//! - `tls-big-hello`: implicit-TLS port, 60,000 bytes of a ClientHello that announces
//!   64 KiB (the most rustls joins across records), in 16 KiB records;
//! - `tls-long-hello`: the same with 7,500 bytes, under the server's 8 KiB limit on
//!   what a client may send during a handshake (the most it can make a handshake hold);
//! - `tls-partial`: implicit TLS, handshake done, greeting read, then 32,000 bytes of a
//!   command line without its CRLF;
//! - `starttls-idle`: cleartext port, STARTTLS and its handshake, then silent;
//! - `psk-no-handshake`: PSK-TLS port (OpenSSL), TCP connected, nothing sent;
//! - `psk-hello`: PSK-TLS port, a TLS 1.2 PSK ClientHello sent and nothing more (the
//!   server has answered and waits for the client's key exchange; a TLS 1.3 one with an
//!   unknown identity is refused at once, on its binder);
//! - `psk-big-hello`: PSK-TLS port, 60,000 bytes of a ClientHello that announces 128 KiB
//!   (OpenSSL accepts ClientHellos up to 131,396 bytes);
//! - `psk-long-hello`: the same with 7,500 bytes.
//!
//! Connections the server closed during the measurement are counted and reported (the
//! big hellos are refused since the handshake limit); they are still in N.
//!
//! Usage (build the server in release first):
//!   cargo build --release -p cpmstore-server -p cpmstore-tests --bins
//!   target/release/conn-mem-bench [SESSIONS] [HOSTILE] [SHAPE...]
//! Defaults: 10000 idle sessions, 1000 connections of every hostile shape, all shapes.
//!
//! Each shape gets a fresh server whose connection limits are raised to fit (and whose
//! login deadline is an hour, so hostile connections stay for the measurement). A few
//! connections of the shape are opened first and kept, so that what the first ones
//! cost once (thread arenas, lazy statics) is in the baseline. Clients connect from
//! 127.0.0.1 to 127.0.0.16 (Linux routes 127/8 to `lo`) so the ephemeral ports of one
//! address are not exhausted. The open-files limit must fit every connection at once,
//! in this process and in the server (it inherits it): `ulimit -n 65536` if it is low.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpmstore_tests::imap_client::tls_config;
use cpmstore_tests::server::{Server, ServerOptions};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const PASSWORD: &str = "bench password";
/// Accounts the idle sessions are spread over.
const USERS: usize = 10;
/// Connections of a shape opened before the baseline is read.
const WARM_UP: usize = 16;
/// Connections being set up at once.
const PARALLEL: usize = 32;
/// Source addresses 127.0.0.1 ..= 127.0.0.SOURCES.
const SOURCES: u8 = 16;
/// A command line that never ends, under the 32 KiB pre-auth cap.
const PARTIAL_BYTES: usize = 32_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Session,
    SessionIdle,
    PlainIdle,
    PlainPartial,
    TlsNoHandshake,
    TlsHello,
    TlsBigHello,
    TlsLongHello,
    TlsPartial,
    StartTlsIdle,
    PskNoHandshake,
    PskHello,
    PskBigHello,
    PskLongHello,
}

const SHAPES: [Shape; 14] = [
    Shape::Session,
    Shape::SessionIdle,
    Shape::PlainIdle,
    Shape::PlainPartial,
    Shape::TlsNoHandshake,
    Shape::TlsHello,
    Shape::TlsBigHello,
    Shape::TlsLongHello,
    Shape::TlsPartial,
    Shape::StartTlsIdle,
    Shape::PskNoHandshake,
    Shape::PskHello,
    Shape::PskBigHello,
    Shape::PskLongHello,
];

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Session => "session",
            Shape::SessionIdle => "session-idle",
            Shape::PlainIdle => "plain-idle",
            Shape::PlainPartial => "plain-partial",
            Shape::TlsNoHandshake => "tls-no-handshake",
            Shape::TlsHello => "tls-hello",
            Shape::TlsBigHello => "tls-big-hello",
            Shape::TlsLongHello => "tls-long-hello",
            Shape::TlsPartial => "tls-partial",
            Shape::StartTlsIdle => "starttls-idle",
            Shape::PskNoHandshake => "psk-no-handshake",
            Shape::PskHello => "psk-hello",
            Shape::PskBigHello => "psk-big-hello",
            Shape::PskLongHello => "psk-long-hello",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Shape::Session => "idle authenticated TLS sessions (LOGIN + SELECT INBOX)",
            Shape::SessionIdle => "authenticated TLS sessions in IDLE (LOGIN + SELECT + IDLE)",
            Shape::PlainIdle => "cleartext connections idle after the greeting",
            Shape::PlainPartial => "cleartext connections with 32,000 bytes of an unended line",
            Shape::TlsNoHandshake => "implicit-TLS connections that never send a ClientHello",
            Shape::TlsHello => "implicit-TLS connections that sent a ClientHello only",
            Shape::TlsBigHello => "TLS connections with 60,000 bytes of a 64 KiB ClientHello",
            Shape::TlsLongHello => "TLS connections with 7,500 bytes of a 64 KiB ClientHello",
            Shape::TlsPartial => "TLS connections with 32,000 bytes of an unended line",
            Shape::StartTlsIdle => "STARTTLS connections idle after the handshake",
            Shape::PskNoHandshake => "PSK-TLS connections that never start the handshake",
            Shape::PskHello => "PSK-TLS connections that sent a ClientHello only",
            Shape::PskBigHello => "PSK-TLS connections with 60,000 bytes of a 128 KiB ClientHello",
            Shape::PskLongHello => "PSK-TLS connections with 7,500 bytes of a 128 KiB ClientHello",
        }
    }
}

/// What the client keeps open.
#[allow(dead_code)] // held, never read
enum Held {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Hello(TcpStream, Box<rustls::ClientConnection>),
}

struct Target {
    imap: SocketAddr,
    imaps: SocketAddr,
    psk: Option<SocketAddr>,
}

fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (i % usize::from(SOURCES)) as u8,
    ))
}

async fn tcp(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads until the data ends with a line starting with `tag` (or any line, if `tag` is
/// empty); returns that line.
async fn read_to<S: AsyncRead + Unpin>(s: &mut S, tag: &str) -> io::Result<String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "server closed; read so far: {}",
                    String::from_utf8_lossy(&got)
                ),
            ));
        }
        got.extend_from_slice(&chunk[..n]);
        if !got.ends_with(b"\r\n") {
            continue;
        }
        let text = String::from_utf8_lossy(&got);
        if let Some(line) = text.lines().find(|l| l.starts_with(tag)) {
            return Ok(line.to_owned());
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    tag: &str,
    text: &str,
) -> io::Result<()> {
    s.write_all(format!("{tag} {text}\r\n").as_bytes()).await?;
    let line = read_to(s, &format!("{tag} ")).await?;
    if !line.starts_with(&format!("{tag} OK")) {
        return Err(io::Error::other(format!("{text}: {line}")));
    }
    Ok(())
}

async fn tls_connect(tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(tls_config()).connect(name, tcp).await
}

fn partial_line() -> Vec<u8> {
    let mut line = b"a LOGIN ".to_vec();
    line.resize(PARTIAL_BYTES, b'x');
    line
}

async fn open(shape: Shape, i: usize, to: &Target) -> io::Result<Held> {
    let from = source(i);
    match shape {
        Shape::Session | Shape::SessionIdle => {
            let mut s = tls_connect(tcp(from, to.imaps).await?).await?;
            read_to(&mut s, "* OK").await?;
            let user = format!("idle{}", i % USERS);
            command(&mut s, "a", &format!("LOGIN {user} \"{PASSWORD}\"")).await?;
            command(&mut s, "b", "SELECT INBOX").await?;
            if shape == Shape::SessionIdle {
                s.write_all(b"c IDLE\r\n").await?;
                read_to(&mut s, "+").await?;
            }
            Ok(Held::Tls(Box::new(s)))
        }
        Shape::PlainIdle => {
            let mut s = tcp(from, to.imap).await?;
            read_to(&mut s, "* OK").await?;
            Ok(Held::Tcp(s))
        }
        Shape::PlainPartial => {
            let mut s = tcp(from, to.imap).await?;
            read_to(&mut s, "* OK").await?;
            s.write_all(&partial_line()).await?;
            Ok(Held::Tcp(s))
        }
        Shape::TlsNoHandshake => Ok(Held::Tcp(tcp(from, to.imaps).await?)),
        Shape::TlsHello => {
            let mut s = tcp(from, to.imaps).await?;
            let name = ServerName::try_from("localhost").expect("name");
            let mut conn =
                rustls::ClientConnection::new(tls_config(), name).map_err(io::Error::other)?;
            let mut hello = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut hello)?;
            }
            s.write_all(&hello).await?;
            // Wait for the server's flight, so it is holding the handshake state.
            let mut first = [0u8; 1];
            s.peek(&mut first).await?;
            Ok(Held::Hello(s, Box::new(conn)))
        }
        Shape::TlsBigHello | Shape::TlsLongHello => {
            let mut s = tcp(from, to.imaps).await?;
            let sent = if shape == Shape::TlsBigHello {
                60_000
            } else {
                7_500
            };
            s.write_all(&big_hello(0xffff, sent)).await?;
            Ok(Held::Tcp(s))
        }
        Shape::TlsPartial => {
            let mut s = tls_connect(tcp(from, to.imaps).await?).await?;
            read_to(&mut s, "* OK").await?;
            s.write_all(&partial_line()).await?;
            s.flush().await?;
            Ok(Held::Tls(Box::new(s)))
        }
        Shape::StartTlsIdle => {
            let mut s = tcp(from, to.imap).await?;
            read_to(&mut s, "* OK").await?;
            command(&mut s, "a", "STARTTLS").await?;
            let mut s = tls_connect(s).await?;
            // A round trip inside TLS: the server has finished the handshake.
            command(&mut s, "b", "NOOP").await?;
            Ok(Held::Tls(Box::new(s)))
        }
        Shape::PskNoHandshake => {
            let psk = to.psk.expect("the PSK listener runs");
            Ok(Held::Tcp(tcp(from, psk).await?))
        }
        Shape::PskBigHello | Shape::PskLongHello => {
            let psk = to.psk.expect("the PSK listener runs");
            let mut s = tcp(from, psk).await?;
            let sent = if shape == Shape::PskBigHello {
                60_000
            } else {
                7_500
            };
            s.write_all(&big_hello(131_000, sent)).await?;
            Ok(Held::Tcp(s))
        }
        Shape::PskHello => {
            let psk = to.psk.expect("the PSK listener runs");
            let mut s = tcp(from, psk).await?;
            s.write_all(&psk_client_hello()?).await?;
            let mut first = [0u8; 1];
            s.peek(&mut first).await?;
            Ok(Held::Tcp(s))
        }
    }
}

/// `sent` bytes of a ClientHello announcing `length` bytes, in TLS records of 16 KiB.
fn big_hello(length: u32, sent: usize) -> Vec<u8> {
    let mut message = vec![1u8]; // ClientHello
    message.extend_from_slice(&length.to_be_bytes()[1..]);
    message.extend_from_slice(&[3, 3]); // legacy_version
    message.resize(sent, 0x5a);
    let mut records = Vec::new();
    for chunk in message.chunks(16_384) {
        records.extend_from_slice(&[22, 3, 1]);
        records.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        records.extend_from_slice(chunk);
    }
    records
}

/// Collects what OpenSSL writes; has nothing to read.
struct Capture(Vec<u8>);

impl io::Read for Capture {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The ClientHello of an OpenSSL PSK client (identity `bench`), as the server's PSK
/// port expects one.
fn psk_client_hello() -> io::Result<Vec<u8>> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(io::Error::other)?;
    builder
        .set_max_proto_version(Some(SslVersion::TLS1_2))
        .map_err(io::Error::other)?;
    builder
        .set_cipher_list("ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES128-GCM-SHA256")
        .map_err(io::Error::other)?;
    builder
        .set_ciphersuites("TLS_AES_128_GCM_SHA256")
        .map_err(io::Error::other)?;
    builder.set_verify(SslVerifyMode::NONE);
    builder.set_psk_client_callback(|_, _hint, id, key| {
        id[..6].copy_from_slice(b"bench\0");
        key[..32].fill(7);
        Ok(32)
    });
    let mut config = builder.build().configure().map_err(io::Error::other)?;
    config.set_verify_hostname(false);
    config.set_use_server_name_indication(false);
    let ssl = config.into_ssl("localhost").map_err(io::Error::other)?;
    let mut stream =
        openssl::ssl::SslStream::new(ssl, Capture(Vec::new())).map_err(io::Error::other)?;
    // Stops wanting to read the server's answer, the ClientHello written.
    let _ = stream.connect();
    Ok(std::mem::take(&mut stream.get_mut().0))
}

/// Opens `n` connections of `shape`, at most [`PARALLEL`] being set up at once.
async fn open_many(shape: Shape, first: usize, n: usize, to: &Arc<Target>) -> Vec<Held> {
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = Vec::with_capacity(n);
    for i in first..first + n {
        let gate = gate.clone();
        let to = to.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            open(shape, i, &to).await
        }));
    }
    let mut held = Vec::with_capacity(n);
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("connection task") {
            Ok(h) => held.push(h),
            Err(e) => panic!("{} connection {i}: {e}", shape.name()),
        }
    }
    held
}

/// Whether the server has closed this connection (what it sent is not read).
fn closed_by_server(held: &Held) -> bool {
    let tcp = match held {
        Held::Tcp(s) | Held::Hello(s, _) => s,
        Held::Tls(s) => s.get_ref().0,
    };
    let mut buf = [0u8; 4096];
    loop {
        match tcp.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            // Reset: closed with what this client sent unread.
            Err(_) => return true,
        }
    }
}

/// The server's VmRSS in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// RSS once it has stopped moving (the server finishes what the last clients sent).
fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss_kib(pid);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// This process's soft limit on open files.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn measure(shape: Shape, n: usize, rt: &tokio::runtime::Runtime) -> f64 {
    let total = n + WARM_UP;
    let limits = format!(
        "[limits]\nmax_connections = {c}\nmax_connections_per_ip = {c}\n\
         max_connections_per_account = {c}\nmax_preauth_connections = {c}\n\
         max_preauth_connections_per_ip = {c}\nlogin_timeout_secs = 3600\n",
        c = total + 10
    );
    let server = Server::start_with(ServerOptions {
        extra_config: limits,
        psk: matches!(
            shape,
            Shape::PskNoHandshake | Shape::PskHello | Shape::PskBigHello | Shape::PskLongHello
        ),
        ..Default::default()
    });
    if matches!(shape, Shape::Session | Shape::SessionIdle) {
        for u in 0..USERS {
            server.add_user(&format!("idle{u}"), PASSWORD);
        }
    }
    let target = Arc::new(Target {
        imap: server.imap,
        imaps: server.imaps,
        psk: server.psk,
    });
    let pid = server.pid();
    let warm = rt.block_on(open_many(shape, 0, WARM_UP, &target));
    let before = settled_rss(pid);
    let started = Instant::now();
    let held = rt.block_on(open_many(shape, WARM_UP, n, &target));
    let opened = started.elapsed();
    let after = settled_rss(pid);
    let closed = rt.block_on(async { held.iter().filter(|h| closed_by_server(h)).count() });
    let per = after.saturating_sub(before) as f64 / n.max(1) as f64;
    println!(
        "{:<17} {n:>6} {}: server RSS {before} KiB before, {after} KiB after, {:.1} MiB for {n} ({per:.1} KiB per connection; opened in {:.1} s; {closed} closed by the server)",
        shape.name(),
        shape.what(),
        after.saturating_sub(before) as f64 / 1024.0,
        opened.as_secs_f64()
    );
    drop(held);
    drop(warm);
    drop(server);
    per
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sessions: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let hostile: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let chosen: Vec<Shape> = if args.len() > 3 {
        args[3..]
            .iter()
            .map(|a| {
                *SHAPES
                    .iter()
                    .find(|s| s.name() == a)
                    .unwrap_or_else(|| panic!("unknown shape {a}"))
            })
            .collect()
    } else {
        SHAPES.to_vec()
    };
    let most = sessions.max(hostile) + WARM_UP + 64;
    if let Some(limit) = open_files_limit()
        && limit < most as u64
    {
        eprintln!(
            "conn-mem-bench: the open-files limit is {limit}, {most} are needed; raise it (ulimit -n 65536)"
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("conn-mem-bench: {sessions} sessions, {hostile} hostile connections per shape");
    let mut worst_hostile: f64 = 0.0;
    for shape in chosen {
        let session = matches!(shape, Shape::Session | Shape::SessionIdle);
        let n = if session { sessions } else { hostile };
        let per = measure(shape, n, &rt);
        if !session {
            worst_hostile = worst_hostile.max(per);
        }
    }
    if worst_hostile > 0.0 {
        println!(
            "worst hostile shape: {worst_hostile:.1} KiB per connection, {:.1} MiB per 1,000",
            worst_hostile * 1000.0 / 1024.0
        );
    }
}
