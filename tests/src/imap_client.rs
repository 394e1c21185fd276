//! A small, strict IMAP client for tests: sends commands, collects responses (with
//! literals inlined) up to the tagged status. Speaks plain TCP, STARTTLS and TLS
//! (certificate verification off: the test server's certificate is self-signed).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// Trusts any certificate (tests only).
#[derive(Debug)]
pub struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client configuration that accepts any certificate (tests and benches only:
/// the test server's certificate is self-signed).
pub fn tls_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    Arc::new(config)
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
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

/// A test client connection.
pub struct Client {
    reader: BufReader<Stream>,
    next_tag: u32,
    /// The greeting line.
    pub greeting: String,
}

/// The responses to one command.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Untagged and continuation lines, literals inlined.
    pub untagged: Vec<String>,
    /// The tagged status line without the tag: `OK ...`, `NO ...`, `BAD ...`.
    pub status: String,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        self.status.starts_with("OK")
    }
    /// Panics with the whole reply unless OK.
    pub fn ok(self) -> Reply {
        assert!(self.is_ok(), "expected OK, got {self:#?}");
        self
    }
    /// Untagged lines starting with `* <word>` or `* <n> <word>`.
    pub fn lines_with(&self, word: &str) -> Vec<&String> {
        self.untagged
            .iter()
            .filter(|l| l.split(' ').take(3).any(|w| w.eq_ignore_ascii_case(word)))
            .collect()
    }
    pub fn all_text(&self) -> String {
        let mut s = self.untagged.join("\n");
        s.push('\n');
        s.push_str(&self.status);
        s
    }
}

impl Client {
    fn from_stream(stream: Stream) -> Client {
        let mut c = Client {
            reader: BufReader::new(stream),
            next_tag: 1,
            greeting: String::new(),
        };
        c.greeting = c.read_line().expect("greeting");
        c
    }

    /// Cleartext connection (before STARTTLS).
    pub fn plain(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client::from_stream(Stream::Plain(tcp))
    }

    /// Implicit TLS.
    pub fn tls(addr: SocketAddr) -> Client {
        Client::tls_over(TcpStream::connect(addr).expect("connect"))
    }

    /// Cleartext connection over a connected socket (e.g. from another source address).
    pub fn plain_over(tcp: TcpStream) -> Client {
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client::from_stream(Stream::Plain(tcp))
    }

    /// Implicit TLS over a connected socket.
    pub fn tls_over(tcp: TcpStream) -> Client {
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let conn = ClientConnection::new(
            tls_config(),
            ServerName::try_from("localhost").expect("name"),
        )
        .expect("tls client");
        Client::from_stream(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// Plain connection upgraded with STARTTLS.
    pub fn starttls(addr: SocketAddr) -> Client {
        let mut c = Client::plain(addr);
        c.command("STARTTLS").ok();
        let Stream::Plain(tcp) = std::mem::replace(
            c.reader.get_mut(),
            Stream::Plain(TcpStream::connect(addr).expect("x")),
        ) else {
            panic!("already TLS")
        };
        let conn = ClientConnection::new(
            tls_config(),
            ServerName::try_from("localhost").expect("name"),
        )
        .expect("tls client");
        let greeting = std::mem::take(&mut c.greeting);
        Client {
            reader: BufReader::new(Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))),
            next_tag: c.next_tag,
            greeting,
        }
    }

    /// TLS + LOGIN.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Client {
        let mut c = Client::tls(addr);
        c.command(&format!("LOGIN {} {}", quote(user), quote(password)))
            .ok();
        c
    }

    pub fn set_timeout(&mut self, d: Duration) {
        match self.reader.get_ref() {
            Stream::Plain(s) => s.set_read_timeout(Some(d)).expect("timeout"),
            Stream::Tls(s) => s.get_ref().set_read_timeout(Some(d)).expect("timeout"),
        }
    }

    /// Reads one line with literals inlined (CRLF stripped).
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        loop {
            let mut part = Vec::new();
            let n = self.reader.read_until(b'\n', &mut part)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            line.extend_from_slice(&part);
            let trimmed = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(&line)
                .to_vec();
            if let Some(len) = literal_len(&trimmed) {
                line = trimmed;
                line.extend_from_slice(b"\r\n");
                let mut lit = vec![0u8; len];
                self.reader.read_exact(&mut lit)?;
                line.extend_from_slice(&lit);
                continue;
            }
            return Ok(String::from_utf8_lossy(&trimmed).into_owned());
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.reader.get_mut();
        w.write_all(bytes).expect("write");
        w.flush().expect("flush");
    }

    /// Allocates the next tag.
    pub fn tag(&mut self) -> String {
        let t = format!("t{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Reads until the tagged status for `tag`.
    pub fn read_reply(&mut self, tag: &str) -> Reply {
        let mut untagged = Vec::new();
        loop {
            let line = self
                .read_line()
                .unwrap_or_else(|e| panic!("reading reply to {tag}: {e}; so far {untagged:#?}"));
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return Reply {
                    untagged,
                    status: rest.to_string(),
                };
            }
            untagged.push(line);
        }
    }

    /// Sends `TAG command` and reads its reply.
    pub fn command(&mut self, command: &str) -> Reply {
        let tag = self.tag();
        self.send_raw(format!("{tag} {command}\r\n").as_bytes());
        self.read_reply(&tag)
    }

    /// APPEND with a synchronising literal.
    pub fn append(&mut self, mailbox: &str, flags: &str, message: &[u8]) -> Reply {
        let tag = self.tag();
        self.send_raw(
            format!(
                "{tag} APPEND {} ({flags}) {{{}}}\r\n",
                quote(mailbox),
                message.len()
            )
            .as_bytes(),
        );
        let cont = self.read_line().expect("continuation");
        assert!(cont.starts_with('+'), "expected continuation, got {cont}");
        self.send_raw(message);
        self.send_raw(b"\r\n");
        self.read_reply(&tag)
    }
}

/// `{N}` or `{N+}` at the end of a line.
fn literal_len(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|b| *b == b'{')?;
    let digits = &line[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An IMAP quoted string.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
