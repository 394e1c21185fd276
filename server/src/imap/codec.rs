//! Framing: complete commands (literals included), AUTHENTICATE data lines and IDLE
//! `DONE`, read from a [`SessionStream`] with imap-codec's `Fragmentizer`, within limits.
//!
//! Limits are enforced here, before bytes are buffered. What one command may hold,
//! lines and literals together, depends on the phase:
//! - before login, `max_preauth_command_bytes` (a few KiB): a client that has not
//!   authenticated cannot make the server hold more, however it splits its bytes
//!   (zero-length literals included: their lines count);
//! - after login, `max_command_bytes`, except APPEND, whose literals may add up to
//!   `max_literal_bytes` (its lines still within `max_command_bytes`).
//!
//! A command growing past its limit ends the connection (there is no safe way to find
//! the next command boundary in an endless line); a synchronising literal that would
//! take it past is refused with `NO [TOOBIG]` *before* the client sends it (no `+`
//! continuation), and the command is skipped; a non-synchronising literal (LITERAL+)
//! that would gets `BAD [TOOBIG]` and the connection is closed (RFC 7888 section 4),
//! since its bytes are already coming.
//!
//! Memory: a connection waiting for its next command holds no read buffer. Reads go
//! into a buffer of the worker thread ([`SCRATCH`]) and are handed over within the same
//! poll; the fragmentizer is fed one line (at most [`LINE_PIECE`] bytes of it) or one
//! literal's bytes at a time, and whatever else the read brought waits in `unfed`,
//! which is freed once it is used up. Because a command always ends at the end of a
//! piece, nothing is left queued in the fragmentizer when a command completes, so one
//! that has grown (a long line, a literal, an APPEND of 50 MB) is simply rebuilt empty.
//!
//! Every write has a deadline (`write_timeout`): a client that stops reading is
//! disconnected rather than holding what was prepared for it.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use imap_codec::fragmentizer::{
    DecodeMessageError, FragmentInfo, Fragmentizer, LiteralAnnouncement,
};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::auth::AuthenticateData;
use imap_codec::imap_types::command::Command;
use imap_codec::imap_types::core::{LiteralMode, Tag};
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec};
use tokio::io::{AsyncWriteExt, ReadBuf};

use super::extended_list::{self, ExtendedList};
use super::stream::SessionStream;

/// Size limits of the framing layer.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_command_bytes: u32,
    pub max_literal_bytes: u32,
    pub max_preauth_command_bytes: u32,
    pub write_timeout: std::time::Duration,
}

/// What the client sent.
pub enum Incoming {
    Command(Command<'static>),
    /// An extended LIST (RFC 5258), which imap-codec does not parse
    /// ([`extended_list`](super::extended_list)).
    ListExtended {
        tag: Tag<'static>,
        list: Box<ExtendedList>,
    },
    /// Could not be parsed as a command; answer `BAD` (tagged when a tag was readable).
    Malformed {
        tag: Option<Tag<'static>>,
    },
    /// A synchronising literal was refused before it was sent: answer `NO [TOOBIG]`.
    LiteralRefused {
        tag: Option<Tag<'static>>,
    },
    /// A non-synchronising literal or a line too long to accept: answer and close.
    Overflow {
        tag: Option<Tag<'static>>,
    },
    /// The client closed the connection.
    Closed,
}

/// A line of an AUTHENTICATE exchange.
pub enum AuthLine {
    Data(Vec<u8>),
    Cancel,
    Malformed,
    Closed,
}

/// The framed connection.
pub struct Framed<S> {
    conn: S,
    frag: Fragmentizer,
    limits: FrameLimits,
    /// Bytes read but not yet handed to the fragmentizer (`unfed[unfed_at..]`): the rest
    /// of a read that brought more than the next piece. Empty and unallocated while the
    /// client waits for answers.
    unfed: Vec<u8>,
    unfed_at: usize,
    /// Bytes handed to the fragmentizer that are not yet part of a fragment.
    pending: usize,
    /// Bytes of the literal being read that the fragmentizer has not been handed yet.
    literal_left: u64,
    /// The largest piece handed to the fragmentizer since it was built: its queue keeps
    /// that capacity.
    fed_max: usize,
    /// Literal bytes announced and accepted so far for the current command.
    literal_total: u64,
    /// Whether the client has logged in (larger commands allowed).
    authenticated: bool,
    /// Bytes read and written, for metrics.
    pub bytes_in: u64,
}

/// Size of a worker thread's read buffer (a TLS record's worth).
const READ_CHUNK: usize = 16 * 1024;

/// The most of a line handed to the fragmentizer at once (a line is cut at its LF).
const LINE_PIECE: usize = 1024;

/// A fragmentizer whose command or queue grew past this is rebuilt once the command is
/// done, so an idle session does not keep the capacity of its largest command.
const KEEP_AT_MOST: usize = 1024;

thread_local! {
    /// The read buffer of a worker thread, shared by the connections it polls: a read
    /// is handed over before the poll returns, so nothing is left in it between polls.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// Polls one read from `conn` into the thread's scratch buffer and gives what was read
/// to `take` (empty at EOF), within the same poll.
fn poll_read_with<S: SessionStream, R>(
    conn: &mut S,
    cx: &mut Context<'_>,
    take: impl FnOnce(&[u8]) -> R,
) -> Poll<io::Result<R>> {
    let read = |buf: &mut [u8]| {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *conn).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(take(rb.filled()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    };
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => read(&mut buf),
        // Not reentered in practice (a read does not poll another connection); should
        // it ever be, a buffer of its own keeps the read correct.
        Err(_) => read(&mut vec![0u8; READ_CHUNK]),
    })
}

/// How long a closing connection keeps reading what the client still sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// How much a closing connection reads and drops at most.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

impl<S: SessionStream> Framed<S> {
    pub fn new(conn: S, limits: FrameLimits) -> Self {
        Framed {
            conn,
            frag: new_fragmentizer(limits),
            limits,
            unfed: Vec::new(),
            unfed_at: 0,
            pending: 0,
            literal_left: 0,
            fed_max: 0,
            literal_total: 0,
            authenticated: false,
            bytes_in: 0,
        }
    }

    pub fn conn(&self) -> &S {
        &self.conn
    }

    /// The stream, for STARTTLS, and the limits to frame its upgrade with: anything the
    /// client pipelined after STARTTLS is discarded with the rest (RFC 2595).
    pub fn into_inner(self) -> (S, FrameLimits) {
        (self.conn, self.limits)
    }

    /// Says whether the client has logged in: commands may then be larger.
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.authenticated = authenticated;
    }

    /// Writes bytes (responses are buffered by the caller and written in one go), within
    /// the write deadline: a client that reads nothing for that long gets `TimedOut`.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.conn.write_all(bytes).await?;
            self.conn.flush().await
        };
        match tokio::time::timeout(self.limits.write_timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client read nothing within the write timeout",
            )),
        }
    }

    /// Closes the connection: TLS close_notify and FIN, then a lingering close — what
    /// the client still sends (the rest of an abandoned literal, pipelined commands) is
    /// read and dropped for up to [`LINGER`], so the kernel does not answer it with a
    /// reset that could make the client lose the final `* BYE` unread.
    pub async fn shutdown(&mut self) {
        let _ = self.conn.shutdown().await;
        let conn = &mut self.conn;
        let drain = async {
            let mut total = 0usize;
            while total <= LINGER_MAX_BYTES {
                match poll_fn(|cx| poll_read_with(conn, cx, <[u8]>::len)).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Hands the fragmentizer its next piece: `Ok(true)` when there was one (left from
    /// an earlier read, or read now), `Ok(false)` on EOF. Cancel-safe: a read that did
    /// not complete consumed nothing, and one that did is handed over in the same poll.
    async fn read_more(&mut self) -> io::Result<bool> {
        if self.unfed_at < self.unfed.len() {
            let unfed = std::mem::take(&mut self.unfed);
            let fed = self.feed(&unfed[self.unfed_at..]);
            self.unfed_at += fed;
            // Used up: given back, so a waiting connection holds no buffer.
            if self.unfed_at < unfed.len() {
                self.unfed = unfed;
            } else {
                self.unfed_at = 0;
            }
            return Ok(true);
        }
        let read = poll_fn(|cx| {
            let Framed {
                conn,
                frag,
                unfed,
                unfed_at,
                pending,
                literal_left,
                fed_max,
                bytes_in,
                ..
            } = &mut *self;
            poll_read_with(conn, cx, |bytes| {
                if bytes.is_empty() {
                    return false;
                }
                *bytes_in += bytes.len() as u64;
                let fed = feed(frag, pending, literal_left, fed_max, bytes);
                if fed < bytes.len() {
                    unfed.extend_from_slice(&bytes[fed..]);
                    *unfed_at = 0;
                }
                true
            })
        });
        read.await
    }

    /// Hands the fragmentizer the next piece of `bytes`; returns its length.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        feed(
            &mut self.frag,
            &mut self.pending,
            &mut self.literal_left,
            &mut self.fed_max,
            bytes,
        )
    }

    /// The most the current command may hold, lines and accepted literals together.
    fn command_cap(&self) -> u64 {
        if !self.authenticated {
            return u64::from(self.limits.max_preauth_command_bytes);
        }
        u64::from(self.limits.max_command_bytes) + self.literal_total
    }

    /// Whether the command being framed has grown past what it may hold (a line that
    /// does not end, or lines between literals that add up, zero-length ones too).
    fn over_limit(&self) -> bool {
        self.frag.is_max_message_size_exceeded()
            || self.frag.message_bytes().len() as u64 > self.command_cap()
    }

    /// Whether a literal of `length` may follow what the command holds so far.
    fn literal_allowed(&self, length: u32) -> bool {
        let held = self.frag.message_bytes().len() as u64;
        if !self.authenticated {
            return held + u64::from(length) <= u64::from(self.limits.max_preauth_command_bytes);
        }
        if self.is_append() {
            self.literal_total + u64::from(length) <= u64::from(self.limits.max_literal_bytes)
        } else {
            held + u64::from(length) <= u64::from(self.limits.max_command_bytes)
        }
    }

    /// Called when a message is complete.
    fn message_done(&mut self) {
        self.literal_total = 0;
        self.literal_left = 0;
        self.give_back();
    }

    /// A message that grew the fragmentizer (a long line, a literal, an APPEND of
    /// 50 MB) leaves its buffers behind, so the fragmentizer is rebuilt empty once the
    /// message is done. Nothing the client sent after the message is in it (a message
    /// ends where a piece ends), which `pending` proves.
    fn give_back(&mut self) {
        let grown = self.frag.message_bytes().len().max(self.fed_max) > KEEP_AT_MOST;
        if grown && self.pending == 0 {
            self.frag = new_fragmentizer(self.limits);
            self.fed_max = 0;
        }
    }

    /// Reads the next complete command. `literal_plus` says whether LITERAL+ is
    /// advertised (non-synchronising literals accepted without continuation).
    pub async fn read_command(&mut self) -> io::Result<Incoming> {
        loop {
            let Some(info) = self.frag.progress() else {
                if self.over_limit() {
                    return Ok(Incoming::Overflow { tag: self.tag() });
                }
                if !self.read_more().await? {
                    return Ok(Incoming::Closed);
                }
                continue;
            };
            self.pending = self.pending.saturating_sub(info.range().len());
            if self.over_limit() {
                return Ok(Incoming::Overflow { tag: self.tag() });
            }
            if let FragmentInfo::Line {
                announcement: Some(LiteralAnnouncement { mode, length }),
                ..
            } = info
            {
                if !self.literal_allowed(length) {
                    let tag = self.tag();
                    match mode {
                        LiteralMode::Sync => {
                            // Done before skipping: the line's size still shows.
                            self.message_done();
                            self.frag.skip_message();
                            return Ok(Incoming::LiteralRefused { tag });
                        }
                        LiteralMode::NonSync => return Ok(Incoming::Overflow { tag }),
                    }
                }
                self.literal_total += u64::from(length);
                self.literal_left = u64::from(length);
                if mode == LiteralMode::Sync {
                    self.write_all(b"+ Ready for literal data\r\n").await?;
                }
                continue;
            }
            if !self.frag.is_message_complete() {
                continue;
            }
            let decoded = self
                .frag
                .decode_message(&CommandCodec::default())
                .map(IntoStatic::into_static);
            let incoming = match decoded {
                Ok(command) => Incoming::Command(command),
                // Whole but not imap-codec's: an extended LIST, Sony's unclosed
                // SETMETADATA, or malformed.
                Err(DecodeMessageError::DecodingFailure(_))
                | Err(DecodeMessageError::DecodingRemainder { .. }) => {
                    let bytes = self.frag.message_bytes();
                    match (self.tag(), extended_list::parse(bytes)) {
                        (Some(tag), Some(list)) => Incoming::ListExtended {
                            tag,
                            list: Box::new(list),
                        },
                        (tag, _) => match unclosed_setmetadata(bytes) {
                            Some(command) => Incoming::Command(command),
                            None => Incoming::Malformed { tag },
                        },
                    }
                }
                Err(_) => Incoming::Malformed { tag: self.tag() },
            };
            self.message_done();
            return Ok(incoming);
        }
    }

    /// Reads one line of AUTHENTICATE data.
    pub async fn read_auth_line(&mut self) -> io::Result<AuthLine> {
        loop {
            let Some(info) = self.frag.progress() else {
                if self.over_limit() {
                    return Ok(AuthLine::Malformed);
                }
                if !self.read_more().await? {
                    return Ok(AuthLine::Closed);
                }
                continue;
            };
            self.pending = self.pending.saturating_sub(info.range().len());
            if !self.frag.is_message_complete() {
                // A literal in an AUTHENTICATE line is not allowed: refuse it unread.
                self.give_back();
                self.frag.skip_message();
                return Ok(AuthLine::Malformed);
            }
            let line = match self.frag.decode_message(&AuthenticateDataCodec::default()) {
                Ok(AuthenticateData::Continue(data)) => AuthLine::Data(data.declassify().to_vec()),
                Ok(AuthenticateData::Cancel) => AuthLine::Cancel,
                Err(_) => AuthLine::Malformed,
            };
            self.give_back();
            return Ok(line);
        }
    }

    /// Waits for IDLE's `DONE`. Cancel-safe, so it can race change notifications.
    /// Returns Ok(true) on DONE, Ok(false) on anything else or EOF.
    pub async fn read_idle_done(&mut self) -> io::Result<bool> {
        loop {
            let Some(info) = self.frag.progress() else {
                if self.over_limit() {
                    return Ok(false);
                }
                if !self.read_more().await? {
                    return Ok(false);
                }
                continue;
            };
            self.pending = self.pending.saturating_sub(info.range().len());
            if !self.frag.is_message_complete() {
                self.give_back();
                self.frag.skip_message();
                return Ok(false);
            }
            let done = self.frag.decode_message(&IdleDoneCodec::default()).is_ok();
            self.give_back();
            return Ok(done);
        }
    }

    fn tag(&self) -> Option<Tag<'static>> {
        self.frag.decode_tag().map(IntoStatic::into_static)
    }

    /// Whether the command being framed is an APPEND (whose literal may be large).
    fn is_append(&self) -> bool {
        let bytes = self.frag.message_bytes();
        let mut words = bytes.splitn(3, |b| *b == b' ');
        let _tag = words.next();
        matches!(words.next(), Some(name) if name.eq_ignore_ascii_case(b"APPEND"))
    }
}

/// Hands `frag` the next piece of `bytes`: the rest of the literal being read, or else
/// the next line up to its LF (at most [`LINE_PIECE`] bytes of it). Returns its length.
fn feed(
    frag: &mut Fragmentizer,
    pending: &mut usize,
    literal_left: &mut u64,
    fed_max: &mut usize,
    bytes: &[u8],
) -> usize {
    let n = if *literal_left > 0 {
        let n = usize::try_from(*literal_left).map_or(bytes.len(), |left| left.min(bytes.len()));
        *literal_left -= n as u64;
        n
    } else {
        let window = &bytes[..bytes.len().min(LINE_PIECE)];
        window
            .iter()
            .position(|b| *b == b'\n')
            .map_or(window.len(), |lf| lf + 1)
    };
    frag.enqueue_bytes(&bytes[..n]);
    *pending += n;
    *fed_max = (*fed_max).max(n);
    n
}

/// Sony's CPM client (android-rcs/rcsjta, `DefaultImapService.setFolderMetadata`)
/// leaves out the closing parenthesis of SETMETADATA's entry list:
/// `a1 SETMETADATA folder (/private/comment "text"`. A SETMETADATA of one line (no
/// literal) that parses once `)` is added is read so; anything else that does not
/// parse stays malformed.
fn unclosed_setmetadata(message: &[u8]) -> Option<Command<'static>> {
    use imap_codec::decode::Decoder;
    let line = message
        .strip_suffix(b"\r\n")
        .or_else(|| message.strip_suffix(b"\n"))?;
    if line.contains(&b'\n') || line.ends_with(b")") {
        return None;
    }
    let mut words = line.splitn(3, |b| *b == b' ');
    let (_tag, name) = (words.next()?, words.next()?);
    if !name.eq_ignore_ascii_case(b"SETMETADATA") {
        return None;
    }
    let mut closed = line.to_vec();
    closed.extend_from_slice(b")\r\n");
    let (rest, command) = CommandCodec::default().decode(&closed).ok()?;
    rest.is_empty().then(|| command.into_static())
}

fn new_fragmentizer(limits: FrameLimits) -> Fragmentizer {
    // Room for one full-size literal plus the command around it; more is dropped and the
    // command then fails to decode (MessageTooLong), so memory stays bounded.
    let max = limits
        .max_literal_bytes
        .saturating_add(limits.max_command_bytes.saturating_mul(2));
    Fragmentizer::new(max)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_command_bytes: 65536,
        max_literal_bytes: 1_000_000,
        max_preauth_command_bytes: 8192,
        write_timeout: Duration::from_secs(5),
    };

    /// The server's framed side of a loopback connection, and the client's socket.
    async fn pair() -> (Framed<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Framed::new(server, LIMITS), client)
    }

    /// The next command's tag and name, and its APPEND message if it is one.
    async fn next(framed: &mut Framed<TcpStream>) -> (String, &'static str, Option<Vec<u8>>) {
        let Incoming::Command(command) = framed.read_command().await.unwrap() else {
            panic!("not a command");
        };
        let message = match &command.body {
            CommandBody::Append {
                message: LiteralOrLiteral8::Literal(l),
                ..
            } => Some(l.data().to_vec()),
            _ => None,
        };
        (
            command.tag.inner().to_string(),
            command.body.name(),
            message,
        )
    }

    /// Holds nothing for a client that is waiting: no unfed bytes, and a fragmentizer
    /// that has been handed small pieces only.
    fn holds_nothing<S: SessionStream>(framed: &Framed<S>) -> bool {
        framed.unfed.capacity() == 0 && framed.pending == 0 && framed.fed_max <= KEEP_AT_MOST
    }

    #[tokio::test]
    async fn pipelined_commands_are_read_in_order_from_one_write() {
        let (mut framed, mut client) = pair().await;
        framed.set_authenticated(true);
        client
            .write_all(b"a NOOP\r\nb APPEND INBOX {5+}\r\nhe\nlo\r\nc CHECK\r\nd NOOP\r\n")
            .await
            .unwrap();
        assert_eq!(next(&mut framed).await, ("a".into(), "NOOP", None));
        assert_eq!(
            next(&mut framed).await,
            ("b".into(), "APPEND", Some(b"he\nlo".to_vec()))
        );
        assert_eq!(next(&mut framed).await, ("c".into(), "CHECK", None));
        assert_eq!(next(&mut framed).await, ("d".into(), "NOOP", None));
        assert!(holds_nothing(&framed));
    }

    #[tokio::test]
    async fn a_large_command_is_given_back_and_what_follows_it_kept() {
        let (mut framed, mut client) = pair().await;
        framed.set_authenticated(true);
        let size = 200_000;
        let mut bytes = format!("a APPEND INBOX {{{size}+}}\r\n").into_bytes();
        bytes.extend((0..size).map(|i| if i % 70 == 69 { b'\n' } else { b'q' }));
        // What the client pipelined behind it arrives with the literal's last bytes.
        bytes.extend_from_slice(b"\r\nb NOOP\r\nc LOGOUT\r\n");
        let writer = tokio::spawn(async move {
            client.write_all(&bytes).await.unwrap();
            client
        });
        let (tag, name, message) = next(&mut framed).await;
        assert_eq!((tag.as_str(), name), ("a", "APPEND"));
        assert_eq!(message.map(|m| m.len()), Some(size));
        assert_eq!(framed.frag.message_bytes().len(), 0, "rebuilt empty");
        assert_eq!(next(&mut framed).await, ("b".into(), "NOOP", None));
        assert_eq!(next(&mut framed).await, ("c".into(), "LOGOUT", None));
        assert!(holds_nothing(&framed));
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn commands_split_anywhere_are_read_the_same() {
        let (mut framed, mut client) = pair().await;
        client.set_nodelay(true).unwrap();
        let bytes = b"a LOGIN {3+}\r\nbob {4+}\r\npass\r\nb NOOP\r\n".to_vec();
        let writer = tokio::spawn(async move {
            for byte in bytes {
                client.write_all(&[byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            client
        });
        assert_eq!(next(&mut framed).await, ("a".into(), "LOGIN", None));
        assert_eq!(next(&mut framed).await, ("b".into(), "NOOP", None));
        assert!(holds_nothing(&framed));
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn an_unended_line_before_login_is_still_cut_at_the_cap() {
        let (mut framed, mut client) = pair().await;
        let mut line = b"a LOGIN ".to_vec();
        line.resize(20_000, b'x');
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&line).await;
            client
        });
        assert!(matches!(
            framed.read_command().await.unwrap(),
            Incoming::Overflow { .. }
        ));
        // Held no more than the cap and one piece.
        assert!(framed.frag.message_bytes().len() <= 8192 + LINE_PIECE);
        drop(writer.await.unwrap());
    }

    /// Framing over an in-memory pipe: what each input becomes, before login.
    #[tokio::test]
    async fn inputs_over_a_pipe() {
        let cases: &[(&[u8], &str)] = &[
            (b"a NOOP\r\n", "command a"),
            (b"b (\r\n", "malformed b"),
            // imap-codec refuses an extended LIST; the fallback parser takes it, literal
            // (non-synchronising, so no continuation) included.
            (
                b"e LIST \"\" (\"a\" {1+}\r\nb) RETURN (STATUS (MESSAGES))\r\n",
                "list-extended e",
            ),
            (b"f LIST \"\" * RETURN (\r\n", "malformed f"),
            (b"g LIST \"\" *\r\n", "command g"),
            (b"c APPEND INBOX {99999}\r\n", "literal refused c"),
            (b"d APPEND INBOX {99999+}\r\n", "overflow d"),
            (b"", "closed"),
        ];
        for (input, expected) in cases {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let mut framed = Framed::new(server, LIMITS);
            client.write_all(input).await.expect("written");
            if input.is_empty() {
                drop(client);
            }
            let incoming = tokio::time::timeout(Duration::from_secs(10), framed.read_command())
                .await
                .expect("in time")
                .expect("read");
            let tag =
                |t: Option<Tag<'static>>| t.map(|t| t.inner().to_string()).unwrap_or_default();
            let got = match incoming {
                Incoming::Command(c) => format!("command {}", c.tag.inner()),
                Incoming::Malformed { tag: t } => format!("malformed {}", tag(t)),
                Incoming::ListExtended { tag: t, .. } => format!("list-extended {}", t.inner()),
                Incoming::LiteralRefused { tag: t } => format!("literal refused {}", tag(t)),
                Incoming::Overflow { tag: t } => format!("overflow {}", tag(t)),
                Incoming::Closed => "closed".into(),
            };
            assert_eq!(&got, expected, "{:?}", String::from_utf8_lossy(input));
        }
    }
}
