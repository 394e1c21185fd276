//! Listeners and the connection type.
//!
//! Every IMAP session reads and writes one [`Conn`], whatever the transport: a plain
//! TCP stream (which STARTTLS upgrades in place), rustls TLS, OpenSSL PSK-TLS, or (for
//! tests and fuzzing only) an in-memory pipe.

mod listen;
pub mod psk;
pub mod tls;

pub use listen::{ServeError, listen};

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Which listener a connection came in on (for metrics, logs and capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Cleartext with STARTTLS.
    Imap,
    /// Implicit TLS.
    Imaps,
    /// PSK-TLS.
    Psk,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Imap => "imap",
            ListenerKind::Imaps => "imaps",
            ListenerKind::Psk => "psk",
        }
    }
}

/// A client connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<HandshakeLimited>>),
    /// OpenSSL PSK-TLS, with whom the handshake authenticated.
    Psk(Box<psk::PskStream>),
    /// Placeholder while a STARTTLS upgrade owns the stream; never read or written.
    Upgrading,
    /// An in-memory pipe, for tests and fuzzing (`imap::harness`); no listener makes
    /// one. Counted as secure, so LOGIN and AUTHENTICATE are allowed as on TLS, but it
    /// has no channel binding, and STARTTLS on it is refused.
    Mem(tokio::io::DuplexStream),
}

impl Conn {
    /// Whether the channel is protected (TLS or PSK-TLS), so plaintext passwords may cross
    /// it. The in-memory pipe of tests counts as protected.
    pub fn is_secure(&self) -> bool {
        !matches!(self, Conn::Plain(_) | Conn::Upgrading)
    }

    /// Upgrades a plain connection to TLS in place (STARTTLS, RFC 2595).
    /// Any other connection is left as it is and gets an error.
    pub async fn start_tls(&mut self, acceptor: &tokio_rustls::TlsAcceptor) -> io::Result<()> {
        if !matches!(self, Conn::Plain(_)) {
            return Err(io::Error::other(
                "STARTTLS on a connection that is not plain",
            ));
        }
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Upgrading) else {
            return Err(upgrading());
        };
        let tls = tls::accept(acceptor, tcp).await?;
        *self = Conn::Tls(Box::new(tls));
        Ok(())
    }

    /// The PSK identity and account of a PSK-TLS connection.
    pub fn psk_peer(&self) -> Option<&crate::auth::psk_cache::PskPeer> {
        match self {
            Conn::Psk(s) => s.peer.as_ref(),
            _ => None,
        }
    }

    /// Whether the channel is TLS 1.3 (rustls or OpenSSL).
    pub fn is_tls13(&self) -> bool {
        match self {
            Conn::Tls(tls) => {
                tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
            }
            Conn::Psk(s) => s.version() == Some(openssl::ssl::SslVersion::TLS1_3),
            _ => false,
        }
    }

    /// RFC 9266 `tls-exporter` channel binding, when the channel is TLS 1.3.
    pub fn tls_exporter(&self) -> Option<Vec<u8>> {
        match self {
            Conn::Psk(s) => s.tls_exporter(),
            Conn::Tls(tls) => {
                let (_, conn) = tls.get_ref();
                if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
                    return None;
                }
                let mut out = vec![0u8; 32];
                conn.export_keying_material(&mut out, b"EXPORTER-Channel-Binding", Some(&[]))
                    .ok()?;
                Some(out)
            }
            _ => None,
        }
    }
}

fn upgrading() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection is being upgraded")
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Mem(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Psk(s) => Pin::new(&mut s.stream).poll_read(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Mem(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Psk(s) => Pin::new(&mut s.stream).poll_write(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Mem(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Psk(s) => Pin::new(&mut s.stream).poll_flush(cx),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Mem(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Psk(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
            Conn::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

/// The most a client may send during a TLS or PSK-TLS handshake (ClientHello and its
/// later flight together), as much as a command before login
/// (`limits.max_preauth_command_bytes` by default). Real ClientHellos are at most a
/// few KiB (post-quantum key shares included), and this server asks for no client
/// certificate; without a limit rustls joins a ClientHello of up to 64 KiB and OpenSSL
/// one of up to 128 KiB, which a client that never finishes would make every
/// connection hold (with OpenSSL's own ~48 KiB of handshake state on top).
pub const MAX_HANDSHAKE_BYTES: usize = 8 * 1024;

/// A TCP stream from which at most [`MAX_HANDSHAKE_BYTES`] are read until
/// [`HandshakeLimited::lift`] (called once the handshake is done); a client that sends
/// more gets an error, and its handshake fails.
pub struct HandshakeLimited {
    tcp: TcpStream,
    /// Bytes the client may still send; `None` once the handshake is done.
    left: Option<usize>,
}

impl HandshakeLimited {
    pub fn new(tcp: TcpStream) -> Self {
        HandshakeLimited {
            tcp,
            left: Some(MAX_HANDSHAKE_BYTES),
        }
    }

    /// The handshake is done: reads are no longer counted.
    pub fn lift(&mut self) {
        self.left = None;
    }
}

impl AsyncRead for HandshakeLimited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.left == Some(0) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client sent more than a handshake may hold",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let Some(left) = &mut this.left {
            // One read may go past the limit (by at most the reader's buffer); the
            // next one fails.
            *left = left.saturating_sub(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for HandshakeLimited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Waits until the client has sent something (or closed the connection), without
/// consuming it: TLS state is made only then. (A peek, because tokio reports a new
/// socket readable before anything has arrived.)
pub async fn first_bytes(tcp: &TcpStream) -> io::Result<()> {
    let mut byte = [0u8; 1];
    tcp.peek(&mut byte).await?;
    Ok(())
}

/// Peer and listener of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: ListenerKind,
}

/// Accepts the next connection on `listener` (TCP_NODELAY set), retrying with a growing
/// pause when accepting fails (out of file descriptors and the like); `None` once
/// `shutdown` is cancelled. Every listener's accept loop goes through here.
pub async fn accept(
    listener: &TcpListener,
    name: &'static str,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return None,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return Some((tcp, peer));
            }
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}
