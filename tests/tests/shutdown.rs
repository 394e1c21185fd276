//! Graceful shutdown (INTERFACES.md 8): on SIGTERM or SIGINT the server stops
//! accepting, tells every IMAP session `* BYE`, lets the commands in flight finish,
//! closes storage and exits 0 within `limits.shutdown_grace_secs`. And a SIGKILL in the
//! middle of a load loses no acknowledged APPEND.
//!
//! What a connection is doing at the signal decides what it sees:
//! - waiting for its next command (logged in or not, cleartext, STARTTLS or implicit
//!   TLS), in IDLE, or in the middle of an AUTHENTICATE exchange: `* BYE`, then the
//!   server closes the connection (the clients here never close first);
//! - executing a command: the command completes and its tagged OK is sent, then `* BYE`;
//! - sending the literal of an APPEND (it got `+` and sent half the message): the
//!   command is abandoned unanswered, as Dovecot abandons it at shutdown: `* BYE`, no
//!   tagged response, and the message is not stored. Waiting for the rest would put the
//!   shutdown at the client's pace; a client that got no tagged OK knows it must
//!   append again, and finds no partial or duplicate message when it does;
//! - in a TLS handshake (implicit TLS, or after STARTTLS): closed; there is no IMAP
//!   session yet to say BYE to;
//! - HTTP: an idle kept-alive connection is closed; a request being received is
//!   completed and answered, then the connection closes.
//!
//! Needs the binary: `cargo build -p cpmstore-server` before `cargo test -p
//! cpmstore-tests`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpmstore_tests::imap_client::{Client, tls_config};
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
/// `limits.shutdown_grace_secs` of the main stories: long enough that a loaded machine
/// never reaches it, so reaching it means a session was not told to go.
const GRACE_SECS: u64 = 20;
/// What the exit may take beyond the grace (process teardown on a loaded machine).
const SLACK: Duration = Duration::from_secs(5);
/// How long a client waits for the server to say something before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// What every IMAP session hears last.
const BYE: &[u8] = b"* BYE Server shutting down.\r\n";
/// Messages sent in a loop, each by its own session, right up to the signal.
const LOOPERS: usize = 4;
/// Big messages fetched all at once: far more than the socket buffers hold, so the
/// FETCH is still writing when the signal comes.
const BIG_COUNT: usize = 8;
const BIG_BYTES: usize = 4 * 1024 * 1024;

// --- A client that never panics on the wire ---------------------------------------------

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) if s.conn.is_handshaking() => s.read(buf),
            // Once connected, only read: rustls' own `read` first writes what it still
            // holds to send, and would report the broken pipe of an APPEND the server
            // stopped reading instead of the BYE waiting in the socket.
            Stream::Tls(s) => loop {
                match s.conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if s.conn.read_tls(&mut s.sock)? == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "closed without close_notify",
                            ));
                        }
                        s.conn.process_new_packets().map_err(io::Error::other)?;
                    }
                    r => return r,
                }
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// An IMAP connection that reports wire errors instead of panicking, keeps every byte
/// it received, and never closes first (dropping it closes it, at the end of a test).
struct Wire {
    stream: Stream,
    /// Everything received so far.
    seen: Vec<u8>,
    /// Received but not consumed yet.
    pending: Vec<u8>,
    next_tag: u32,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// EOF or reset: the server closed it.
    Closed,
    /// Nothing came for [`READ_TIMEOUT`], or another error.
    Open(String),
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    tcp
}

fn tls_over(tcp: TcpStream) -> Stream {
    let conn = ClientConnection::new(
        tls_config(),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("tls client");
    Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))
}

impl Wire {
    /// A connection that has not said or heard anything yet.
    fn raw(addr: SocketAddr) -> Wire {
        Wire::over(Stream::Plain(tcp(addr)))
    }

    fn over(stream: Stream) -> Wire {
        Wire {
            stream,
            seen: Vec::new(),
            pending: Vec::new(),
            next_tag: 1,
        }
    }

    fn greeted(stream: Stream) -> Wire {
        let mut w = Wire::over(stream);
        let greeting = w.line().expect("greeting");
        assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
        w
    }

    /// Cleartext, not logged in.
    fn plain(addr: SocketAddr) -> Wire {
        Wire::greeted(Stream::Plain(tcp(addr)))
    }

    /// Implicit TLS, not logged in.
    fn tls(addr: SocketAddr) -> Wire {
        Wire::greeted(tls_over(tcp(addr)))
    }

    /// Cleartext upgraded with STARTTLS, not logged in.
    fn starttls(addr: SocketAddr) -> Wire {
        let mut w = Wire::plain(addr);
        w.command("STARTTLS");
        let Stream::Plain(tcp) = w.stream else {
            unreachable!("a plain connection")
        };
        let Stream::Tls(mut tls) = tls_over(tcp) else {
            unreachable!("a TLS connection")
        };
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .expect("STARTTLS handshake");
        }
        w.stream = Stream::Tls(tls);
        w
    }

    fn login(mut self) -> Wire {
        self.command(&format!("LOGIN {USER} \"{PASSWORD}\""));
        self
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64 * 1024];
        let n = self.stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF"));
        }
        self.seen.extend_from_slice(&buf[..n]);
        self.pending.extend_from_slice(&buf[..n]);
        Ok(())
    }

    /// One line, CRLF removed.
    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(at) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..at + 2).take(at).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            self.fill()?;
        }
    }

    /// The next `n` bytes (a literal).
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.pending.len() < n {
            self.fill()?;
        }
        Ok(self.pending.drain(..n).collect())
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn tag(&mut self) -> String {
        let tag = format!("w{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Reads up to the tagged response of `tag`: its status (`OK ...`) and the
    /// literals that came before it.
    fn reply(&mut self, tag: &str) -> io::Result<(String, Vec<Vec<u8>>)> {
        let mut literals = Vec::new();
        loop {
            let line = self.line()?;
            if let Some(n) = literal_len(&line) {
                literals.push(self.take(n)?);
                continue;
            }
            if let Some(status) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                return Ok((status.to_owned(), literals));
            }
        }
    }

    /// Sends a command during setup; panics unless it succeeds.
    fn command(&mut self, command: &str) {
        let tag = self.tag();
        self.send(format!("{tag} {command}\r\n").as_bytes())
            .expect("send");
        let (status, _) = self.reply(&tag).expect("reply");
        assert!(status.starts_with("OK"), "{command}: {status}");
    }

    /// Reads until the server closes the connection.
    fn drain(&mut self) -> End {
        loop {
            match self.fill() {
                Ok(()) => self.pending.clear(),
                Err(e) => {
                    return match e.kind() {
                        io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe => End::Closed,
                        _ => End::Open(e.to_string()),
                    };
                }
            }
        }
    }

    fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Asserts the server's last words were `* BYE` and it then closed the connection.
    fn assert_bye_then_closed(&mut self, what: &str) {
        let end = self.drain();
        assert_eq!(end, End::Closed, "{what}: not closed by the server");
        assert!(
            self.seen.ends_with(BYE),
            "{what}: the last thing said is not `* BYE Server shutting down.`:\n{}",
            tail(&self.transcript())
        );
    }
}

/// `{N}` or `{N+}` at the end of a line.
fn literal_len(line: &str) -> Option<usize> {
    let inner = line.strip_suffix('}')?;
    let digits = &inner[inner.rfind('{')? + 1..];
    digits.strip_suffix('+').unwrap_or(digits).parse().ok()
}

fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(2000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

// --- Messages ---------------------------------------------------------------------------

/// A message whose Message-ID is `<ID@cpmstore.test>`, of a size that depends on `lines`.
fn message(id: &str, lines: usize) -> Vec<u8> {
    let mut m = format!(
        "From: loop@example.net\r\nTo: {USER}@example.net\r\nSubject: {id}\r\n\
         Message-ID: <{id}@cpmstore.test>\r\n\r\n"
    );
    for i in 0..lines {
        m.push_str(&format!(
            "{id} line {i:04} of the body, padded to a length\r\n"
        ));
    }
    m.into_bytes()
}

fn looper_id(looper: usize, n: u32) -> String {
    format!("shutdown-{looper}-{n}")
}

fn looper_message(looper: usize, n: u32) -> Vec<u8> {
    message(&looper_id(looper, n), 1 + (n as usize * 7 + looper) % 50)
}

fn big_message() -> Vec<u8> {
    let mut m = message("shutdown-big", 0);
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n";
    while m.len() + line.len() <= BIG_BYTES {
        m.extend_from_slice(line);
    }
    m
}

// --- Sessions that append in a loop -----------------------------------------------------

/// A session appending to INBOX in a loop until the server says BYE or goes away.
struct Looper {
    /// The numbers of the messages the server acknowledged with a tagged OK.
    acked: Arc<Mutex<Vec<u32>>>,
    handle: JoinHandle<LooperEnd>,
}

struct LooperEnd {
    wire: Wire,
    /// Tagged responses other than OK.
    refused: Vec<String>,
    end: End,
}

/// Starts a session that appends `looper_message(looper, 1, 2, ...)` one after the
/// other, with synchronising literals or LITERAL+.
fn start_looper(addr: SocketAddr, looper: usize, literal_plus: bool) -> Looper {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let record = acked.clone();
    let mut wire = Wire::tls(addr).login();
    let handle = std::thread::spawn(move || {
        let mut refused = Vec::new();
        for n in 1.. {
            let msg = looper_message(looper, n);
            let tag = wire.tag();
            let plus = if literal_plus { "+" } else { "" };
            if wire
                .send(format!("{tag} APPEND INBOX {{{}{plus}}}\r\n", msg.len()).as_bytes())
                .is_err()
            {
                break;
            }
            if !literal_plus {
                match wire.line() {
                    Ok(line) if line.starts_with('+') => {}
                    _ => break,
                }
            }
            let mut literal = msg;
            literal.extend_from_slice(b"\r\n");
            if wire.send(&literal).is_err() {
                break;
            }
            match wire.reply(&tag) {
                Ok((status, _)) if status.starts_with("OK") => record.lock().unwrap().push(n),
                Ok((status, _)) => {
                    refused.push(status);
                    break;
                }
                Err(_) => break,
            }
        }
        let end = wire.drain();
        LooperEnd { wire, refused, end }
    });
    Looper { acked, handle }
}

fn start_loopers(addr: SocketAddr) -> Vec<Looper> {
    (0..LOOPERS)
        .map(|looper| start_looper(addr, looper, looper % 2 == 1))
        .collect()
}

/// Waits until every looper has had `n` APPENDs acknowledged.
fn wait_for_acks(loopers: &[Looper], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while loopers.iter().any(|l| l.acked.lock().unwrap().len() < n) {
        assert!(
            loopers.iter().all(|l| !l.handle.is_finished()),
            "a looper stopped before the signal"
        );
        assert!(
            Instant::now() < deadline,
            "the loopers did not get {n} APPENDs each acknowledged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --- The server -------------------------------------------------------------------------

fn start(options: ServerOptions, grace_secs: u64) -> Server {
    let server = Server::start_with(ServerOptions {
        // Sessions not logged in wait through the whole setup: no autologout meanwhile.
        extra_config: format!(
            "[limits]\nshutdown_grace_secs = {grace_secs}\nlogin_timeout_secs = 600\n"
        ),
        ..options
    });
    server.add_user(USER, PASSWORD);
    server
}

/// Waits until the server's log has a line with `message`.
fn wait_for_log(server: &Server, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.log_text().contains(message) {
        assert!(
            Instant::now() < deadline,
            "no `{message}` in the log:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the process to exit 0 after a signal sent at `since`; returns how long it
/// took. Fails when the process outlives `grace_secs` plus [`SLACK`].
fn wait_for_exit(server: &mut Server, since: Instant, grace_secs: u64) -> Duration {
    let limit = Duration::from_secs(grace_secs) + SLACK;
    let status = server
        .wait_exit(limit.saturating_sub(since.elapsed()))
        .unwrap_or_else(|| {
            panic!(
                "still running {limit:?} after the signal:\n{}",
                server.log_text()
            )
        });
    let took = since.elapsed();
    assert!(
        status.success(),
        "exit status {status} after the signal:\n{}",
        server.log_text()
    );
    took
}

/// Message-ID (without `<@cpmstore.test>`) or Subject -> the sizes of the messages
/// that carry it, in a mailbox.
fn contents(server: &Server, mailbox: &str) -> HashMap<String, Vec<usize>> {
    let mut c = Client::login(server.imaps, USER, PASSWORD);
    let selected = c.command(&format!("SELECT {mailbox}")).ok();
    let mut found: HashMap<String, Vec<usize>> = HashMap::new();
    if selected
        .lines_with("EXISTS")
        .iter()
        .any(|l| *l == "* 0 EXISTS")
    {
        return found;
    }
    let reply = c
        .command("FETCH 1:* (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])")
        .ok();
    for line in reply.lines_with("FETCH") {
        let size: usize = line
            .split("RFC822.SIZE ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ')']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no RFC822.SIZE in {line}"));
        let header = |name: &str| {
            line.split("\r\n").find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let key = match header("Message-ID") {
            Some(id) if id.ends_with("@cpmstore.test>") => id
                .trim_start_matches('<')
                .trim_end_matches("@cpmstore.test>")
                .to_owned(),
            _ => header("Subject").unwrap_or_else(|| panic!("no Subject in {line}")),
        };
        found.entry(key).or_default().push(size);
    }
    c.command("LOGOUT");
    found
}

/// Every acknowledged looper message is stored exactly once and whole. With
/// `graceful`, nothing else of theirs is; otherwise (SIGKILL) the one APPEND each had
/// in flight may be stored unacknowledged, but never twice or in part.
fn assert_acknowledged_stored(
    stored: &HashMap<String, Vec<usize>>,
    acked: &[(usize, Vec<u32>)],
    graceful: bool,
) {
    let mut expected_ids = HashSet::new();
    for (looper, numbers) in acked {
        for &n in numbers {
            let id = looper_id(*looper, n);
            let size = looper_message(*looper, n).len();
            assert_eq!(
                stored.get(&id),
                Some(&vec![size]),
                "acknowledged APPEND {id} ({size} bytes) is not stored exactly once, whole"
            );
            expected_ids.insert(id);
        }
        let next = numbers.iter().max().copied().unwrap_or(0) + 1;
        let in_flight = looper_id(*looper, next);
        if let Some(sizes) = stored.get(&in_flight) {
            assert!(
                !graceful,
                "{in_flight} is stored but its APPEND was never acknowledged"
            );
            assert_eq!(
                sizes,
                &vec![looper_message(*looper, next).len()],
                "{in_flight} stored twice or in part"
            );
            expected_ids.insert(in_flight);
        }
    }
    let strays: Vec<&String> = stored
        .keys()
        .filter(|id| id.starts_with("shutdown-") && !expected_ids.contains(*id))
        .collect();
    assert!(
        strays.is_empty(),
        "stored but never acknowledged (nor in flight): {strays:?}"
    );
}

/// Polls until connecting to `addr` is refused; a connection still accepted meanwhile
/// must be told BYE (or closed at once).
fn assert_stops_accepting(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return,
            Err(e) => panic!("connect to {addr}: {e}"),
            Ok(tcp) => {
                tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                let mut w = Wire::over(Stream::Plain(tcp));
                assert_eq!(
                    w.drain(),
                    End::Closed,
                    "accepted after the signal, not closed"
                );
                assert!(
                    w.seen.is_empty() || w.seen.ends_with(BYE),
                    "accepted after the signal: {}",
                    w.transcript()
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections after the signal"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP/1.1 request head on a kept-alive connection.
fn http_head(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: cpmstore.test\r\n{extra}\r\n")
}

// --- The story --------------------------------------------------------------------------

/// The PostgreSQL part of the story: an APPEND held up by a row lock the test takes on
/// the Drafts mailbox, so that it is certainly executing when the signal comes.
struct HeldAppend {
    runtime: tokio::runtime::Runtime,
    lock: sqlx::PgConnection,
    wire: Wire,
    tag: String,
}

const HELD_ID: &str = "shutdown-held";

impl HeldAppend {
    fn start(server: &Server, db_url: &str) -> HeldAppend {
        use sqlx::Connection as _;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut lock = runtime.block_on(async {
            let mut lock = sqlx::PgConnection::connect(db_url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
            let rows = sqlx::query("SELECT id FROM mailboxes WHERE name = 'Drafts' FOR UPDATE")
                .fetch_all(&mut lock)
                .await
                .unwrap();
            assert_eq!(rows.len(), 1, "one Drafts mailbox");
            lock
        });
        let mut wire = Wire::tls(server.imaps).login();
        let tag = wire.tag();
        let msg = message(HELD_ID, 3);
        wire.send(format!("{tag} APPEND Drafts {{{}+}}\r\n", msg.len()).as_bytes())
            .unwrap();
        wire.send(&msg).unwrap();
        wire.send(b"\r\n").unwrap();
        // The APPEND is executing once its UPDATE of the Drafts row waits for this lock
        // (the loopers' APPENDs may wait for each other's, on INBOX).
        let deadline = Instant::now() + Duration::from_secs(60);
        runtime.block_on(async {
            loop {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE pg_backend_pid() = ANY (pg_blocking_pids(pid))",
                )
                .fetch_one(&mut lock)
                .await
                .unwrap();
                if waiting > 0 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the APPEND never waited for the lock"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        HeldAppend {
            runtime,
            lock,
            wire,
            tag,
        }
    }

    /// Lets the APPEND go on; it must then be acknowledged, and the session told BYE.
    fn release_and_check(mut self) {
        self.runtime.block_on(async {
            sqlx::query("ROLLBACK")
                .execute(&mut self.lock)
                .await
                .unwrap();
        });
        let (status, _) = self
            .wire
            .reply(&self.tag)
            .unwrap_or_else(|e| panic!("the held APPEND got no tagged response: {e}"));
        assert!(
            status.starts_with("OK [APPENDUID"),
            "the held APPEND: {status}"
        );
        self.wire
            .assert_bye_then_closed("the session whose APPEND was held");
    }
}

/// Twenty IMAP sessions in every state, HTTP connections, loopers appending up to the
/// signal; SIGTERM; every session hears BYE, the server exits 0 well within the grace,
/// and on restart exactly the acknowledged APPENDs are stored.
fn graceful_story(options: ServerOptions, db_url: Option<&str>) {
    let mut server = start(options, GRACE_SECS);
    let big = big_message();
    {
        let mut setup = Client::login(server.imaps, USER, PASSWORD);
        for _ in 0..BIG_COUNT {
            setup.append("Archive", "", &big).ok();
        }
        setup.command("LOGOUT");
    }

    // Sessions waiting for their next command: selected, logged in, not logged in.
    let mut waiting: Vec<(String, Wire)> = Vec::new();
    for i in 0..3 {
        let mut w = Wire::tls(server.imaps).login();
        w.command("SELECT INBOX");
        waiting.push((format!("TLS session {i}, selected"), w));
    }
    let mut w = Wire::starttls(server.imap).login();
    w.command("SELECT INBOX");
    waiting.push(("STARTTLS session, selected".into(), w));
    let mut w = Wire::plain(server.imap);
    w.command("CAPABILITY");
    waiting.push(("cleartext session, not logged in".into(), w));
    waiting.push((
        "second cleartext session, not logged in".into(),
        Wire::plain(server.imap),
    ));
    waiting.push(("TLS session, not logged in".into(), Wire::tls(server.imaps)));
    waiting.push((
        "STARTTLS session, not logged in".into(),
        Wire::starttls(server.imap),
    ));
    waiting.push((
        "TLS session, logged in, nothing selected".into(),
        Wire::tls(server.imaps).login(),
    ));
    // In IDLE.
    for i in 0..4 {
        let mut w = Wire::tls(server.imaps).login();
        w.command(if i % 2 == 0 {
            "SELECT INBOX"
        } else {
            "EXAMINE INBOX"
        });
        let tag = w.tag();
        w.send(format!("{tag} IDLE\r\n").as_bytes()).unwrap();
        assert!(w.line().unwrap().starts_with('+'), "IDLE continuation");
        waiting.push((format!("session {i} in IDLE"), w));
    }
    // In the middle of an AUTHENTICATE exchange.
    let mut w = Wire::tls(server.imaps);
    let tag = w.tag();
    w.send(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes())
        .unwrap();
    assert!(
        w.line().unwrap().starts_with('+'),
        "AUTHENTICATE continuation"
    );
    waiting.push(("session in an AUTHENTICATE exchange".into(), w));

    // Half-way through an APPEND literal.
    let half_sent = message("shutdown-half", 40);
    let mut half = Wire::tls(server.imaps).login();
    let half_tag = half.tag();
    half.send(format!("{half_tag} APPEND INBOX {{{}}}\r\n", half_sent.len()).as_bytes())
        .unwrap();
    assert!(half.line().unwrap().starts_with('+'), "APPEND continuation");
    half.send(&half_sent[..half_sent.len() / 2]).unwrap();

    // A FETCH still writing: its client read the first line and stopped reading.
    let mut fetch = Wire::tls(server.imaps).login();
    fetch.command("EXAMINE Archive");
    let fetch_tag = fetch.tag();
    fetch
        .send(format!("{fetch_tag} FETCH 1:* BODY.PEEK[]\r\n").as_bytes())
        .unwrap();
    let first = fetch.line().unwrap();
    assert!(
        first.starts_with("* 1 FETCH") && literal_len(&first) == Some(big.len()),
        "{first}"
    );

    // TLS handshakes the client never finishes.
    let mut no_handshake = Wire::raw(server.imaps);
    let mut w = Wire::plain(server.imap);
    w.command("STARTTLS");
    let mut stalled_starttls = w;

    let loopers = start_loopers(server.imaps);
    wait_for_acks(&loopers, 3);
    let held = db_url.map(|url| HeldAppend::start(&server, url));

    // HTTP: a kept-alive connection between requests, and a push half received.
    let http = server.http.expect("http listener");
    let mut http_idle = Wire::raw(http);
    http_idle
        .send(http_head("GET", "/healthz", "").as_bytes())
        .unwrap();
    while !http_idle.transcript().contains("{\"status\":\"ok\"}") {
        http_idle.fill().expect("the /healthz answer");
    }
    let push_body = b"pushed while the server was shutting down\r\n".repeat(20);
    let mut http_push = Wire::raw(http);
    http_push
        .send(
            http_head(
                "POST",
                &format!("/v1/push/{USER}"),
                &format!(
                    "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                    push_body.len()
                ),
            )
            .as_bytes(),
        )
        .unwrap();
    http_push.send(&push_body[..push_body.len() / 2]).unwrap();

    let sessions = waiting.len() + LOOPERS + 2 + usize::from(held.is_some());
    assert!(sessions >= 20, "{sessions} IMAP sessions");

    let signalled = Instant::now();
    server.signal("TERM");
    wait_for_log(&server, "shutdown requested");

    // Everything that waits reads until the server closes the connection, in parallel.
    let drains: Vec<JoinHandle<(String, Wire)>> = waiting
        .into_iter()
        .map(|(what, mut w)| {
            std::thread::spawn(move || {
                w.assert_bye_then_closed(&what);
                (what, w)
            })
        })
        .collect();
    let fetch_done = std::thread::spawn(move || {
        let rest = fetch.take(big.len()).expect("the first message");
        assert!(rest == big, "the first message came back different");
        let (status, literals) = fetch
            .reply(&fetch_tag)
            .unwrap_or_else(|e| panic!("the FETCH in flight was cut: {e}"));
        assert!(status.starts_with("OK"), "FETCH: {status}");
        assert_eq!(literals.len(), BIG_COUNT - 1, "messages after the first");
        assert!(
            literals.iter().all(|l| *l == big),
            "a message came back different"
        );
        fetch.assert_bye_then_closed("the session whose FETCH was in flight");
    });
    let tls_closed = std::thread::spawn(move || {
        assert_eq!(
            no_handshake.drain(),
            End::Closed,
            "TLS handshake never begun"
        );
        assert!(no_handshake.seen.is_empty());
        let before = stalled_starttls.seen.len();
        assert_eq!(stalled_starttls.drain(), End::Closed, "STARTTLS handshake");
        assert_eq!(
            stalled_starttls.seen.len(),
            before,
            "cleartext after STARTTLS"
        );
    });
    let http_done = std::thread::spawn(move || {
        let started = Instant::now();
        assert_eq!(http_idle.drain(), End::Closed, "idle HTTP connection");
        // Sooner than hyper's own 10-second idle limit would have closed it.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "idle HTTP connection"
        );
        http_push
            .send(&push_body[push_body.len() / 2..])
            .expect("the rest of the push body");
        assert_eq!(http_push.drain(), End::Closed, "HTTP push connection");
        let answer = http_push.transcript();
        assert!(answer.starts_with("HTTP/1.1 202"), "push answer: {answer}");
    });

    // The half-sent APPEND: BYE, and nothing for its tag, even when the rest comes.
    let line = half.line().expect("BYE to the half-sent APPEND");
    assert_eq!(line.as_bytes(), &BYE[..BYE.len() - 2]);
    let _ = half.send(&half_sent[half_sent.len() / 2..]);
    let _ = half.send(b"\r\n");
    half.assert_bye_then_closed("the session half-way through an APPEND literal");

    if let Some(held) = held {
        held.release_and_check();
    }
    for drain in drains {
        drain.join().expect("a session");
    }
    fetch_done.join().expect("the FETCH in flight");
    tls_closed.join().expect("the TLS handshakes");
    http_done.join().expect("HTTP");
    let mut acked = Vec::new();
    for (looper, l) in loopers.into_iter().enumerate() {
        let end = l.handle.join().expect("looper");
        assert!(end.refused.is_empty(), "looper {looper}: {:?}", end.refused);
        assert_eq!(end.end, End::Closed, "looper {looper}");
        assert!(
            end.wire.seen.ends_with(BYE),
            "looper {looper}: {}",
            tail(&end.wire.transcript())
        );
        acked.push((looper, l.acked.lock().unwrap().clone()));
    }
    assert_stops_accepting(server.imap);
    assert_stops_accepting(server.imaps);

    let took = wait_for_exit(&mut server, signalled, GRACE_SECS);
    eprintln!("SIGTERM to exit: {took:?} (grace {GRACE_SECS} s)");
    let log = server.log_text();
    assert!(log.contains("\"stopped\""), "{log}");
    assert!(
        !log.contains("grace period over") && !log.contains("storage did not close"),
        "a session outlived its BYE:\n{log}"
    );
    assert!(took < Duration::from_secs(GRACE_SECS), "exit took {took:?}");
    if db_url.is_none() {
        // A clean close checkpoints SQLite's write-ahead log and removes it.
        let wal = server.dir.path().join("data/cpmstore.db-wal");
        assert!(
            std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
            "{} left behind: storage was not closed",
            wal.display()
        );
    }

    server.restart();
    let stored = contents(&server, "INBOX");
    assert_acknowledged_stored(&stored, &acked, true);
    assert!(
        !stored.contains_key("shutdown-half"),
        "the half-sent APPEND was stored"
    );
    assert_eq!(
        stored.get("Push notification").map(Vec::len),
        Some(1),
        "the push completed during the shutdown"
    );
    if db_url.is_some() {
        let drafts = contents(&server, "Drafts");
        assert_eq!(drafts.get(HELD_ID), Some(&vec![message(HELD_ID, 3).len()]));
    }
    let total: usize = acked.iter().map(|(_, n)| n.len()).sum();
    eprintln!("{total} acknowledged APPENDs, all stored once");
}

#[test]
fn sigterm_says_bye_finishes_commands_and_exits_0() {
    graceful_story(ServerOptions::default(), None);
}

#[test]
fn sigterm_on_postgres() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_shutdown");
    graceful_story(
        ServerOptions {
            storage_url: Some(db.url.clone()),
            ..Default::default()
        },
        Some(&db.url),
    );
}

#[test]
fn sigint_exits_0_too() {
    let mut server = start(ServerOptions::default(), GRACE_SECS);
    let mut selected = Wire::tls(server.imaps).login();
    selected.command("SELECT INBOX");
    let mut anonymous = Wire::plain(server.imap);
    let signalled = Instant::now();
    server.signal("INT");
    selected.assert_bye_then_closed("selected session");
    anonymous.assert_bye_then_closed("cleartext session");
    let took = wait_for_exit(&mut server, signalled, GRACE_SECS);
    eprintln!("SIGINT to exit: {took:?}");
    assert!(server.log_text().contains("shutdown requested"));
}

/// A client that stops reading in the middle of a long FETCH holds its command in
/// flight: the server waits for it the whole grace, no longer, and still exits 0.
#[test]
fn a_client_that_stops_reading_cannot_hold_the_exit_past_the_grace() {
    const GRACE: u64 = 5;
    let mut server = start(ServerOptions::default(), GRACE);
    let big = big_message();
    let mut setup = Client::login(server.imaps, USER, PASSWORD);
    for _ in 0..BIG_COUNT {
        setup.append("Archive", "", &big).ok();
    }
    setup.command("LOGOUT");

    let mut stuck = Wire::tls(server.imaps).login();
    stuck.command("EXAMINE Archive");
    stuck.send(b"s1 FETCH 1:* BODY.PEEK[]\r\n").unwrap();
    assert!(stuck.line().unwrap().starts_with("* 1 FETCH"));
    let mut other = Wire::tls(server.imaps).login();

    let signalled = Instant::now();
    server.signal("TERM");
    other.assert_bye_then_closed("a session waiting for its next command");
    let told = signalled.elapsed();
    assert!(
        told < Duration::from_secs(GRACE),
        "BYE came {told:?} after the signal"
    );
    let took = wait_for_exit(&mut server, signalled, GRACE);
    eprintln!("SIGTERM to exit with a stuck client: {took:?} (grace {GRACE} s)");
    assert!(
        took >= Duration::from_secs(GRACE),
        "exited after {took:?}, before the FETCH in flight had its grace"
    );
    let log = server.log_text();
    assert!(log.contains("grace period over"), "{log}");
    assert!(log.contains("\"stopped\""), "{log}");
    // The FETCH never completed: no tagged OK reached the client.
    let _ = stuck.drain();
    assert!(!stuck.transcript().contains("\r\ns1 OK"));
}

/// SIGKILL in the middle of a load: what was acknowledged is stored, once and whole;
/// the APPEND each session had in flight is stored whole or not at all; a half-sent
/// literal is not stored.
#[test]
fn sigkill_mid_load_keeps_every_acknowledged_append() {
    let mut server = start(ServerOptions::default(), GRACE_SECS);
    let half_sent = message("shutdown-half", 40);
    let mut half = Wire::tls(server.imaps).login();
    half.send(format!("h1 APPEND INBOX {{{}}}\r\n", half_sent.len()).as_bytes())
        .unwrap();
    assert!(half.line().unwrap().starts_with('+'));
    half.send(&half_sent[..half_sent.len() / 2]).unwrap();

    let loopers = start_loopers(server.imaps);
    wait_for_acks(&loopers, 5);
    server.signal("KILL");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("SIGKILL ends the process");
    assert!(!status.success());
    let mut acked = Vec::new();
    for (looper, l) in loopers.into_iter().enumerate() {
        let end = l.handle.join().expect("looper");
        assert!(end.refused.is_empty(), "looper {looper}: {:?}", end.refused);
        assert_eq!(end.end, End::Closed, "looper {looper}");
        acked.push((looper, l.acked.lock().unwrap().clone()));
    }
    let _ = half.drain();

    server.restart();
    let stored = contents(&server, "INBOX");
    assert_acknowledged_stored(&stored, &acked, false);
    assert!(!stored.contains_key("shutdown-half"));
    let total: usize = acked.iter().map(|(_, n)| n.len()).sum();
    eprintln!("{total} acknowledged APPENDs survived SIGKILL");
}
