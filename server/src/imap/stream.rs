//! What a session needs of the stream it runs over, beyond reading and writing: what
//! its security is (for the capabilities, SASL mechanisms and channel bindings), and
//! for a plain stream how STARTTLS upgrades it. The session (`session.rs`), the one
//! writer (`connection.rs`) and the framing (`codec.rs`) are generic over it, so a test
//! can run a session over `tokio::io::duplex` and the server over [`Conn`].

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::auth::psk_cache::PskPeer;
use crate::net::Conn;

/// A stream a session can run over.
pub trait SessionStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether the stream is encrypted (TLS or PSK-TLS).
    fn is_secure(&self) -> bool {
        false
    }

    /// Whether it is TLS 1.3 (which offers `tls-exporter`).
    fn is_tls13(&self) -> bool {
        false
    }

    /// The `tls-exporter` channel binding (RFC 9266), on TLS 1.3.
    fn tls_exporter(&self) -> Option<Vec<u8>> {
        None
    }

    /// Whether it is certificate TLS (which offers `tls-server-end-point`).
    fn is_certificate_tls(&self) -> bool {
        false
    }

    /// The PSK identity the peer proved, on PSK-TLS.
    fn psk_peer(&self) -> Option<&PskPeer> {
        None
    }
}

/// A stream that STARTTLS can upgrade: the session hands it over (with whatever the
/// client pipelined discarded, RFC 2595) and goes on over [`StartTls::Upgraded`].
pub trait StartTls: SessionStream + Sized {
    type Upgraded: SessionStream;

    fn start_tls(
        self,
        acceptor: &TlsAcceptor,
    ) -> impl Future<Output = io::Result<Self::Upgraded>> + Send;
}

impl SessionStream for Conn {
    fn is_secure(&self) -> bool {
        Conn::is_secure(self)
    }

    fn is_tls13(&self) -> bool {
        Conn::is_tls13(self)
    }

    fn tls_exporter(&self) -> Option<Vec<u8>> {
        Conn::tls_exporter(self)
    }

    fn is_certificate_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    fn psk_peer(&self) -> Option<&PskPeer> {
        Conn::psk_peer(self)
    }
}

/// [`Conn`] upgrades in place (`Plain` becomes `Tls`, with the handshake limits of
/// `net::tls::accept`), so the session keeps its type.
impl StartTls for Conn {
    type Upgraded = Conn;

    async fn start_tls(mut self, acceptor: &TlsAcceptor) -> io::Result<Conn> {
        Conn::start_tls(&mut self, acceptor).await?;
        Ok(self)
    }
}

/// An in-process plain stream (tests, the fuzz harness).
impl SessionStream for DuplexStream {}

impl StartTls for DuplexStream {
    type Upgraded = TlsStream<DuplexStream>;

    async fn start_tls(self, acceptor: &TlsAcceptor) -> io::Result<TlsStream<DuplexStream>> {
        acceptor.accept(self).await
    }
}

/// Certificate TLS over any stream (rustls).
impl<S> SessionStream for TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn is_secure(&self) -> bool {
        true
    }

    fn is_tls13(&self) -> bool {
        self.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
    }

    fn tls_exporter(&self) -> Option<Vec<u8>> {
        if !self.is_tls13() {
            return None;
        }
        let mut out = vec![0u8; 32];
        self.get_ref()
            .1
            .export_keying_material(&mut out, b"EXPORTER-Channel-Binding", Some(&[]))
            .ok()?;
        Some(out)
    }

    fn is_certificate_tls(&self) -> bool {
        true
    }
}

/// Plain TCP, as the framing tests use it (the server wraps it in [`Conn`]).
impl SessionStream for tokio::net::TcpStream {}
