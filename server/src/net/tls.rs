//! rustls server configuration: the configured certificate, or a self-signed one
//! generated into `<data_dir>/tls/` on first start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the certificate comes from.
pub enum CertSource<'a> {
    Files {
        cert: &'a Path,
        key: &'a Path,
    },
    /// Generate (once) and keep in this directory.
    SelfSigned {
        dir: &'a Path,
    },
}

/// The server's TLS setup.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// Whether a self-signed certificate was generated just now.
    pub generated: bool,
    /// RFC 5929 `tls-server-end-point` channel binding data of the certificate, when
    /// its signature algorithm defines one.
    pub end_point: Option<Vec<u8>>,
}

/// Builds the rustls configuration (TLS 1.2 and 1.3 only).
pub fn server_config(source: CertSource<'_>) -> Result<ServerTls, TlsError> {
    let (cert_path, key_path, generated) = match source {
        CertSource::Files { cert, key } => (cert.to_path_buf(), key.to_path_buf(), false),
        CertSource::SelfSigned { dir } => {
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            let generated = if cert.exists() && key.exists() {
                false
            } else {
                generate_self_signed(dir, &cert, &key)?;
                true
            };
            (cert, key, generated)
        }
    };
    let certs = load_certs(&cert_path)?;
    let end_point = certs
        .first()
        .and_then(|leaf| server_end_point(leaf.as_ref()));
    let key = load_key(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"imap".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        generated,
        end_point,
    })
}

/// Runs the server side of a TLS handshake on `tcp`, once the client has sent
/// something: a connection that never starts its handshake holds no TLS state, only its
/// socket. The client may send at most [`super::MAX_HANDSHAKE_BYTES`] before the
/// handshake is done. The handshake's state is boxed, allocated while it runs and not
/// kept in the connection's future afterwards.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<super::HandshakeLimited>> {
    super::first_bytes(&tcp).await?;
    let mut tls = Box::pin(acceptor.accept(super::HandshakeLimited::new(tcp))).await?;
    tls.get_mut().0.lift();
    Ok(tls)
}

/// RFC 5929 section 4.1: the hash of the DER certificate, with the hash function of
/// its signature algorithm (SHA-256 instead of MD5 or SHA-1). `None` when the
/// algorithm has no single hash function (Ed25519) or the certificate does not parse.
pub fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    use openssl::hash::{MessageDigest, hash};
    use openssl::nid::Nid;
    let cert = openssl::x509::X509::from_der(der).ok()?;
    let algorithms = cert
        .signature_algorithm()
        .object()
        .nid()
        .signature_algorithms()?;
    let digest = match algorithms.digest {
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        Nid::UNDEF => return None,
        other => MessageDigest::from_nid(other)?,
    };
    hash(digest, der).ok().map(|d| d.to_vec())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey { path: path.into() })
}

fn generate_self_signed(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.into(),
        source,
    })?;
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, certified.cert.pem()).map_err(|source| TlsError::Write {
        path: cert_path.into(),
        source,
    })?;
    Ok(())
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| TlsError::Write {
        path: path.into(),
        source,
    })?;
    file.write_all(bytes).map_err(|source| TlsError::Write {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let setup = server_config(CertSource::SelfSigned { dir: &tls }).unwrap();
        assert!(setup.generated);
        // rcgen signs with ECDSA P-256 / SHA-256: a 32-byte end-point hash.
        assert_eq!(setup.end_point.map(|e| e.len()), Some(32));
        let first = std::fs::read(tls.join("cert.pem")).unwrap();
        let setup = server_config(CertSource::SelfSigned { dir: &tls }).unwrap();
        assert!(!setup.generated);
        assert_eq!(first, std::fs::read(tls.join("cert.pem")).unwrap());
    }

    #[test]
    fn missing_files_are_named() {
        let err = server_config(CertSource::Files {
            cert: Path::new("/nonexistent/c.pem"),
            key: Path::new("/nonexistent/k.pem"),
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/c.pem"));
    }
}
