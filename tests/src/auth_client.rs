//! A test client for authentication: implicit TLS (rustls) or PSK-TLS (OpenSSL), from
//! a chosen source address, with a SCRAM-SHA-256(-PLUS) client written from RFC 5802
//! (independently of the server's code) that can compute the RFC 9266 `tls-exporter`
//! binding, which Python's ssl module cannot.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use sha2::{Digest, Sha256};

/// Read timeout of every connection.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `addr` from `local` (any port): Linux routes all of 127/8 to `lo`, so
/// 127.0.0.2 is "another client IP" on one machine.
pub fn tcp_from(local: Option<IpAddr>, addr: SocketAddr) -> io::Result<TcpStream> {
    let tcp = match local {
        None => TcpStream::connect(addr)?,
        Some(local) => crate::block_on(async {
            let socket = match local {
                IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(local, 0))?;
            let stream = socket.connect(addr).await?;
            let std = stream.into_std()?;
            std.set_nonblocking(false)?;
            Ok::<_, io::Error>(std)
        })?,
    };
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

fn rustls_config(tls13_only: bool) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = if tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    }
    .expect("protocol versions");
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::imap_client::AnyCert))
        .with_no_client_auth();
    Arc::new(config)
}

/// The transport under the client.
enum Transport {
    Rustls(Box<StreamOwned<ClientConnection, TcpStream>>),
    OpenSsl(Box<openssl::ssl::SslStream<TcpStream>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Rustls(s) => s.read(buf),
            Transport::OpenSsl(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Rustls(s) => s.write(buf),
            Transport::OpenSsl(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Rustls(s) => s.flush(),
            Transport::OpenSsl(s) => s.flush(),
        }
    }
}

/// A connection that speaks just enough IMAP to authenticate.
pub struct AuthClient {
    reader: BufReader<Transport>,
    next_tag: u32,
    /// The greeting line.
    pub greeting: String,
}

/// Which TLS version to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    V12,
    V13,
}

impl AuthClient {
    fn start(transport: Transport) -> io::Result<AuthClient> {
        let mut client = AuthClient {
            reader: BufReader::new(transport),
            next_tag: 1,
            greeting: String::new(),
        };
        client.greeting = client.read_line()?;
        Ok(client)
    }

    /// Implicit TLS (rustls) from `local`.
    pub fn tls(addr: SocketAddr, local: Option<IpAddr>, version: Tls) -> io::Result<AuthClient> {
        let tcp = tcp_from(local, addr)?;
        let conn = ClientConnection::new(
            rustls_config(version == Tls::V13),
            ServerName::try_from("localhost").expect("name"),
        )
        .map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        AuthClient::start(Transport::Rustls(Box::new(stream)))
    }

    /// PSK-TLS (OpenSSL) with `identity` and `key`. An `Err` is a failed handshake.
    pub fn psk(
        addr: SocketAddr,
        version: Tls,
        identity: &str,
        key: &[u8],
    ) -> io::Result<AuthClient> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
        let tcp = tcp_from(None, addr)?;
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(io::Error::other)?;
        let v = match version {
            Tls::V12 => SslVersion::TLS1_2,
            Tls::V13 => SslVersion::TLS1_3,
        };
        builder
            .set_min_proto_version(Some(v))
            .map_err(io::Error::other)?;
        builder
            .set_max_proto_version(Some(v))
            .map_err(io::Error::other)?;
        builder
            .set_cipher_list("ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES128-GCM-SHA256")
            .map_err(io::Error::other)?;
        builder
            .set_ciphersuites("TLS_AES_128_GCM_SHA256")
            .map_err(io::Error::other)?;
        builder.set_verify(SslVerifyMode::NONE);
        let identity = identity.to_owned();
        let key = key.to_vec();
        builder.set_psk_client_callback(move |_, _hint, id_out, key_out| {
            // NUL-terminated identity.
            let id = identity.as_bytes();
            id_out[..id.len()].copy_from_slice(id);
            id_out[id.len()] = 0;
            key_out[..key.len()].copy_from_slice(&key);
            Ok(key.len())
        });
        let connector = builder.build();
        let mut config = connector.configure().map_err(io::Error::other)?;
        config.set_verify_hostname(false);
        config.set_use_server_name_indication(false);
        let stream = config
            .connect("localhost", tcp)
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
        AuthClient::start(Transport::OpenSsl(Box::new(stream)))
    }

    /// RFC 9266 `tls-exporter` data of this connection (TLS 1.3).
    pub fn tls_exporter(&self) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 32];
        match self.reader.get_ref() {
            Transport::Rustls(s) => {
                if s.conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
                    return None;
                }
                s.conn
                    .export_keying_material(&mut out, b"EXPORTER-Channel-Binding", Some(&[]))
                    .ok()?;
            }
            Transport::OpenSsl(s) => {
                if s.ssl().version2() != Some(openssl::ssl::SslVersion::TLS1_3) {
                    return None;
                }
                s.ssl()
                    .export_keying_material(&mut out, "EXPORTER-Channel-Binding", Some(&[]))
                    .ok()?;
            }
        }
        Some(out)
    }

    /// One line without CRLF.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    fn tag(&mut self) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Sends a command; returns its untagged lines and the tagged status (without the
    /// tag).
    pub fn command(&mut self, command: &str) -> io::Result<(Vec<String>, String)> {
        let tag = self.tag();
        self.send(format!("{tag} {command}\r\n").as_bytes())?;
        self.until_tagged(&tag)
    }

    fn until_tagged(&mut self, tag: &str) -> io::Result<(Vec<String>, String)> {
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line()?;
            if let Some(status) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                return Ok((untagged, status.to_owned()));
            }
            untagged.push(line);
        }
    }

    /// `LOGIN`; returns the tagged status.
    pub fn login(&mut self, user: &str, password: &str) -> io::Result<String> {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        Ok(self
            .command(&format!("LOGIN {} {}", quote(user), quote(password)))?
            .1)
    }

    /// The next continuation's data (`Ok`), or the tagged status (`Err`), skipping
    /// untagged lines.
    fn challenge_or_status(&mut self, tag: &str) -> io::Result<Result<String, String>> {
        loop {
            let line = self.read_line()?;
            if let Some(challenge) = line.strip_prefix("+ ") {
                return Ok(Ok(challenge.to_owned()));
            }
            if let Some(status) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                return Ok(Err(status.to_owned()));
            }
        }
    }

    /// Runs a SCRAM exchange; returns the tagged status and whether the server's
    /// signature was verified.
    pub fn scram(&mut self, options: &Scram<'_>) -> io::Result<(String, bool)> {
        let mechanism = if options.binding.is_some() {
            "SCRAM-SHA-256-PLUS"
        } else {
            "SCRAM-SHA-256"
        };
        let gs2_header = match (&options.binding, options.flag_y) {
            (Some((name, _)), _) => format!("p={name},,"),
            (None, true) => "y,,".to_owned(),
            (None, false) => "n,,".to_owned(),
        };
        let mut nonce_bytes = [0u8; 18];
        openssl::rand::rand_bytes(&mut nonce_bytes).map_err(io::Error::other)?;
        let client_nonce = B64.encode(nonce_bytes);
        let bare = format!(
            "n={},r={client_nonce}",
            options.user.replace('=', "=3D").replace(',', "=2C")
        );
        let first = format!("{gs2_header}{bare}");

        let tag = self.tag();
        // SASL-IR: the client-first-message on the command line.
        self.send(format!("{tag} AUTHENTICATE {mechanism} {}\r\n", B64.encode(&first)).as_bytes())?;
        let challenge = match self.challenge_or_status(&tag)? {
            Ok(challenge) => challenge,
            Err(status) => return Ok((status, false)),
        };
        let server_first = String::from_utf8(B64.decode(challenge).map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
        let fields: Vec<&str> = server_first.split(',').collect();
        let field = |prefix: &str| {
            fields
                .iter()
                .find_map(|f| f.strip_prefix(prefix))
                .ok_or_else(|| io::Error::other(format!("no {prefix} in {server_first}")))
        };
        let nonce = field("r=")?;
        let salt = B64.decode(field("s=")?).map_err(io::Error::other)?;
        let iterations: u32 = field("i=")?.parse().map_err(io::Error::other)?;
        if !nonce.starts_with(&client_nonce) {
            return Err(io::Error::other("server nonce does not extend ours"));
        }

        let mut cbind_input = gs2_header.into_bytes();
        if let Some((_, data)) = &options.binding {
            cbind_input.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(&cbind_input));
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(options.password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        if options.tamper_proof {
            proof[5] ^= 0x40;
        }
        let final_message = format!("{without_proof},p={}", B64.encode(&proof));
        self.send(format!("{}\r\n", B64.encode(final_message)).as_bytes())?;

        let challenge = match self.challenge_or_status(&tag)? {
            Ok(challenge) => challenge,
            Err(status) => return Ok((status, false)),
        };
        let server_final = String::from_utf8(B64.decode(challenge).map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
        let expected = format!(
            "v={}",
            B64.encode(hmac(&server_key, auth_message.as_bytes()))
        );
        let verified = server_final == expected;
        self.send(b"\r\n")?;
        let (_, status) = self.until_tagged(&tag)?;
        Ok((status, verified))
    }
}

/// What [`AuthClient::scram`] does.
#[derive(Debug, Clone, Default)]
pub struct Scram<'a> {
    pub user: &'a str,
    pub password: &'a str,
    /// `Some((type, data))`: SCRAM-SHA-256-PLUS bound to this channel binding.
    pub binding: Option<(&'a str, Vec<u8>)>,
    /// Without binding: send GS2 flag `y` ("I could bind, but you cannot").
    pub flag_y: bool,
    /// Flip a bit of the proof.
    pub tamper_proof: bool,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}
