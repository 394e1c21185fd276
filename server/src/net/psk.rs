//! PSK-TLS with OpenSSL (rustls has no external PSK): TLS 1.2 ECDHE-PSK / DHE-PSK
//! suites (RFC 5489, RFC 4279; plain PSK only with `psk.allow_plain_psk`), and TLS 1.3
//! with an external PSK (`psk_dhe_ke`; `psk_ke` too with `allow_plain_psk`).
//!
//! OpenSSL's PSK server callback asks the synchronous [`PskCache`] for the client's
//! identity. The key it returns is tied to a hash function in TLS 1.3 (SHA-256 for keys
//! from this callback), so only the SHA-256 TLS 1.3 suites are enabled.
//!
//! An unknown identity gets a random key: the handshake then fails at the Finished
//! message (TLS 1.2) or the binder (TLS 1.3) exactly as with a wrong key, so the client
//! learns nothing about which it was. No session tickets and no session cache: every
//! connection proves the current key again, so a changed or removed key is never
//! bypassed by resumption.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use openssl::bn::BigNum;
use openssl::dh::Dh;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef,
    SslSessionCacheMode, SslVersion,
};
use rand::RngCore;
use rand::rngs::OsRng;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::auth::psk_cache::{PskCache, PskPeer};

/// TLS 1.2 suites with forward secrecy, strongest first.
const TLS12_FS_SUITES: &str = "ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:\
DHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES128-GCM-SHA256:ECDHE-PSK-AES256-CBC-SHA384:\
ECDHE-PSK-AES128-CBC-SHA256";

/// RFC 4279 plain PSK suites (no forward secrecy), only with `psk.allow_plain_psk`.
const TLS12_PLAIN_SUITES: &str =
    "PSK-CHACHA20-POLY1305:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256";

/// TLS 1.3 suites whose hash is SHA-256, the hash of a callback-provided PSK.
const TLS13_SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";

/// OpenSSL's `SSL_OP_ALLOW_NO_DHE_KEX` (`SSL_OP_BIT(10)` since OpenSSL 1.1.1), which
/// the openssl crate does not name: lets TLS 1.3 use `psk_ke` (no ephemeral DH).
const ALLOW_NO_DHE_KEX: SslOptions = SslOptions::from_bits_retain(1 << 10);

/// Length of the stand-in key for an unknown identity.
const DECOY_KEY_BYTES: usize = 32;

/// A PSK-TLS stream and whom its handshake authenticated.
pub struct PskStream {
    pub stream: SslStream<super::HandshakeLimited>,
    /// The identity and account whose key the client proved; `None` only if the
    /// handshake somehow completed without our callback choosing a key.
    pub peer: Option<PskPeer>,
}

impl PskStream {
    /// The negotiated protocol version.
    pub fn version(&self) -> Option<SslVersion> {
        self.stream.ssl().version2()
    }

    /// RFC 9266 `tls-exporter` channel binding (TLS 1.3 only).
    pub fn tls_exporter(&self) -> Option<Vec<u8>> {
        if self.version() != Some(SslVersion::TLS1_3) {
            return None;
        }
        let mut out = vec![0u8; 32];
        self.stream
            .ssl()
            .export_keying_material(&mut out, "EXPORTER-Channel-Binding", Some(&[]))
            .ok()?;
        Some(out)
    }
}

/// Accepts PSK-TLS connections.
pub struct PskAcceptor {
    context: SslContext,
    peer_index: Index<Ssl, PskPeer>,
}

impl std::fmt::Debug for PskAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskAcceptor").finish_non_exhaustive()
    }
}

impl PskAcceptor {
    /// A PSK-TLS server reading keys from `cache`.
    pub fn new(cache: Arc<PskCache>, allow_plain_psk: bool) -> Result<PskAcceptor, ErrorStack> {
        let peer_index = Ssl::new_ex_index::<PskPeer>()?;
        let mut builder = SslContextBuilder::new(SslMethod::tls_server())?;
        builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        let suites = if allow_plain_psk {
            format!("{TLS12_FS_SUITES}:{TLS12_PLAIN_SUITES}")
        } else {
            TLS12_FS_SUITES.to_owned()
        };
        builder.set_cipher_list(&suites)?;
        builder.set_ciphersuites(TLS13_SUITES)?;
        let mut options = SslOptions::NO_TICKET
            | SslOptions::NO_COMPRESSION
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::CIPHER_SERVER_PREFERENCE;
        if allow_plain_psk {
            options |= ALLOW_NO_DHE_KEX;
        }
        builder.set_options(options);
        // Read and write buffers are freed whenever they are empty, so an idle PSK-TLS
        // session does not keep ~34 KiB of them.
        builder.set_mode(SslMode::RELEASE_BUFFERS);
        builder.set_num_tickets(0)?;
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
        // DHE-PSK: the 2048-bit MODP group of RFC 3526 (a safe prime, generator 2).
        let dh = Dh::from_pqg(
            BigNum::get_rfc3526_prime_2048()?,
            None,
            BigNum::from_u32(2)?,
        )?;
        builder.set_tmp_dh(&dh)?;
        builder.set_psk_server_callback(move |ssl: &mut SslRef, identity, out| {
            Ok(choose_key(&cache, peer_index, ssl, identity, out))
        });
        Ok(PskAcceptor {
            context: builder.build(),
            peer_index,
        })
    }

    /// Runs the server handshake on `tcp`.
    ///
    /// OpenSSL's state is made once the client has sent something: a connection that
    /// never starts its handshake holds only its socket. The client may send at most
    /// [`super::MAX_HANDSHAKE_BYTES`] before the handshake is done (OpenSSL would join
    /// a ClientHello of up to 128 KiB).
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<PskStream> {
        super::first_bytes(&tcp).await?;
        let ssl = Ssl::new(&self.context).map_err(io::Error::other)?;
        let limited = super::HandshakeLimited::new(tcp);
        let mut stream = SslStream::new(ssl, limited).map_err(io::Error::other)?;
        Pin::new(&mut stream)
            .accept()
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        stream.get_mut().lift();
        let peer = stream.ssl().ex_data(self.peer_index).cloned();
        Ok(PskStream { stream, peer })
    }
}

/// The PSK callback: the identity's key, or a random one for an unknown identity.
fn choose_key(
    cache: &PskCache,
    peer_index: Index<Ssl, PskPeer>,
    ssl: &mut SslRef,
    identity: Option<&[u8]>,
    out: &mut [u8],
) -> usize {
    let found = identity
        .and_then(|id| std::str::from_utf8(id).ok())
        .and_then(|id| cache.key_into(id, out));
    match found {
        Some((peer, len)) => {
            ssl.set_ex_data(peer_index, peer);
            len
        }
        None => {
            let len = DECOY_KEY_BYTES.min(out.len());
            OsRng.fill_bytes(&mut out[..len]);
            len
        }
    }
}
