//! Binding a listener, and the error of starting the server.
//!
//! Every listener (IMAP, IMAPS, PSK-TLS, HTTP, SIP) is bound through here, so `serve`,
//! the push ingress and SIP share one error without importing each other.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("storage: {0}")]
    Storage(#[from] cpmstore_storage::Error),
    #[error("TLS: {0}")]
    Tls(#[from] super::tls::TlsError),
    #[error("PSK-TLS: {0}")]
    Psk(String),
    #[error("cannot listen on {addr}: {source}; is another server using the port?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Binds a TCP listener, logs `listening` with its name and actual address (tests and
/// operators read the port of a `:0` address there), and exports its connection
/// metrics at 0.
pub async fn listen(
    addr: SocketAddr,
    name: &str,
    metrics: &Metrics,
) -> Result<TcpListener, ServeError> {
    let bind_error = |source| ServeError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    tracing::info!(listener = name, addr = %local, "listening");
    metrics.prime_listener(name);
    Ok(listener)
}
