//! `cpmstore serve`: open storage, bind the listeners, run sessions until SIGTERM or
//! SIGINT, then shut down gracefully (stop accepting, `* BYE` to every session, let
//! in-flight commands finish, close storage) within `limits.shutdown_grace_secs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpmstore_storage::{OpenOptions, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::credentials::Verifier;
use crate::auth::login::Authenticator;
use crate::auth::psk::Kek;
use crate::auth::psk_cache::PskCache;
use crate::auth::throttle::{Throttle, ThrottleConfig};
use crate::config::Config;
use crate::imap::{self, ImapCtx, SessionLimits};
use crate::metrics::Metrics;
use crate::net::psk::PskAcceptor;
use crate::net::tls::{CertSource, server_config};
use crate::net::{Conn, ConnInfo, ListenerKind, ServeError, listen};

/// Counts connections overall and per client IP, and among them those not yet logged
/// in (overall and per IP): a flood of connections that never log in can take at most
/// `max_preauth` of the `total` slots, so authenticated sessions keep the rest.
struct ConnLimits {
    total: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    preauth: Arc<Semaphore>,
    preauth_per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_preauth_per_ip: usize,
}

/// One count in a per-IP map, given back when dropped.
struct IpCount {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
    preauth: bool,
}

impl Drop for IpCount {
    fn drop(&mut self) {
        let map = if self.preauth {
            &self.limits.preauth_per_ip
        } else {
            &self.limits.per_ip
        };
        if let Ok(mut map) = map.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Held by a connection; releases its slot when dropped.
struct ConnSlot {
    _ip: IpCount,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Held by a connection until it logs in.
struct PreAuthSlot {
    _ip: IpCount,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerIp,
    PreAuth,
    PreAuthPerIp,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "connections",
            Refusal::PerIp => "connections per IP",
            Refusal::PreAuth => "connections not logged in",
            Refusal::PreAuthPerIp => "connections not logged in per IP",
        }
    }
}

impl ConnLimits {
    fn new(l: &crate::config::LimitsConfig) -> Arc<Self> {
        Arc::new(ConnLimits {
            total: Arc::new(Semaphore::new(l.max_connections)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: l.max_connections_per_ip,
            preauth: Arc::new(Semaphore::new(l.max_preauth_connections)),
            preauth_per_ip: Mutex::new(HashMap::new()),
            max_preauth_per_ip: l.max_preauth_connections_per_ip,
        })
    }

    fn count(self: &Arc<Self>, ip: IpAddr, preauth: bool, max: usize) -> Option<IpCount> {
        let map = if preauth {
            &self.preauth_per_ip
        } else {
            &self.per_ip
        };
        let mut map = map.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpCount {
            limits: self.clone(),
            ip,
            preauth,
        })
    }

    /// A slot for a new connection and its place among those not logged in yet.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(ConnSlot, PreAuthSlot), Refusal> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Total)?;
        let preauth_permit = self
            .preauth
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::PreAuth)?;
        let ip_count = self
            .count(ip, false, self.max_per_ip)
            .ok_or(Refusal::PerIp)?;
        let preauth_count = self
            .count(ip, true, self.max_preauth_per_ip)
            .ok_or(Refusal::PreAuthPerIp)?;
        Ok((
            ConnSlot {
                _ip: ip_count,
                _permit: permit,
            },
            PreAuthSlot {
                _ip: preauth_count,
                _permit: preauth_permit,
            },
        ))
    }
}

/// Runs the server until a signal arrives.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let signal = async {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
    };
    run_until(config, signal).await
}

/// Deletes the content of messages expunged longer than `retention` ago, once a minute:
/// until then, sessions that still show them can read them (`Store::fetch_expunged`).
/// With several nodes on one PostgreSQL, each node purges; the work is idempotent.
async fn purge_expunged(store: Arc<dyn Store>, retention: Duration, shutdown: CancellationToken) {
    let every = Duration::from_secs(60).min(retention.max(Duration::from_secs(1)));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let before = i64::try_from(now.saturating_sub(retention).as_secs()).unwrap_or(0);
        match store.purge_expunged(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(messages = n, "expunged content deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting expunged content failed; will retry"),
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs until `signal` completes (tests pass their own).
///
/// Shutdown: one [`CancellationToken`] stops every accept loop and background task and
/// tells every connection; every connection runs on one [`TaskTracker`], which the
/// server waits on for at most `limits.shutdown_grace_secs`.
pub async fn run_until(
    config: Config,
    signal: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let shutdown = CancellationToken::new();
    let connections = TaskTracker::new();
    // Background tasks stop however this returns, an early error included.
    let _stop_on_return = shutdown.clone().drop_guard();
    // One server per SQLite database, held until this returns (see data_lock.rs).
    let _data_lock =
        crate::data_lock::acquire_for(&config).map_err(|e| ServeError::Other(e.to_string()))?;
    let store = cpmstore_storage::open(&config.storage.url, &OpenOptions::default()).await?;
    // Subscribers added before the CPM root existed (or before `[cpm] root` changed)
    // get it now; see `cpm::ensure_roots` for why this is a start-up step.
    crate::cpm::ensure_roots(store.as_ref(), &config)
        .await
        .map_err(|e| ServeError::Other(format!("cannot create the CPM root folders: {e}")))?;
    crate::cpm::backfill_index(store.as_ref())
        .await
        .map_err(|e| ServeError::Other(format!("cannot fill the CPM header index: {e}")))?;

    let tls_dir = config.data_dir.join("tls");
    let source = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => CertSource::Files { cert, key },
        (None, None) => CertSource::SelfSigned { dir: &tls_dir },
        _ => {
            return Err(ServeError::Other(
                "tls.cert and tls.key must be set together".into(),
            ));
        }
    };
    let self_signed = matches!(source, CertSource::SelfSigned { .. });
    let tls_setup = server_config(source)?;
    if self_signed {
        tracing::warn!(
            dir = %tls_dir.display(),
            generated = tls_setup.generated,
            "no TLS certificate configured: using a self-signed one; set tls.cert and tls.key for production"
        );
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_setup.config);

    // PSK-TLS: the key table, kept current from storage, and the OpenSSL acceptor.
    let psk = if config.psk.listen.is_empty() {
        None
    } else {
        let kek = Kek::load_or_create(&config).map_err(|e| ServeError::Psk(e.to_string()))?;
        let cache = PskCache::new(kek);
        let loaded = cache.reload(store.as_ref()).await?;
        tracing::info!(identities = loaded, "PSK table loaded");
        tokio::spawn(cache.clone().run_refresher(
            store.clone(),
            Duration::from_secs(config.psk.refresh_secs),
            shutdown.clone(),
        ));
        let acceptor = PskAcceptor::new(cache.clone(), config.psk.allow_plain_psk)
            .map_err(|e| ServeError::Psk(format!("cannot set up OpenSSL: {e}")))?;
        Some((cache, Arc::new(acceptor)))
    };

    tokio::spawn(purge_expunged(
        store.clone(),
        Duration::from_secs(config.limits.expunged_retention_secs),
        shutdown.clone(),
    ));

    let metrics = Metrics::new().map_err(|e| ServeError::Other(e.to_string()))?;
    let verifier = Verifier::from_config(&config.auth);
    verifier.warm_up().await;
    let throttle = Throttle::new(ThrottleConfig::from(&config.auth));
    let auth = Arc::new(Authenticator::new(
        store.clone(),
        verifier,
        throttle,
        metrics.clone(),
    ));
    let ctx = Arc::new(ImapCtx {
        store: store.clone(),
        auth,
        tls: Some(acceptor.clone()),
        tls_end_point: tls_setup.end_point,
        psk: psk.as_ref().map(|(cache, _)| cache.clone()),
        limits: SessionLimits::from(&config.limits),
        max_failures_per_connection: config.auth.max_failures_per_connection,
        account_slots: crate::imap::AccountSlots::new(config.limits.max_connections_per_account),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        cpm: config.cpm.clone(),
    });
    let limits = ConnLimits::new(&config.limits);

    let mut accept_loops = Vec::new();
    for (kind, addrs) in [
        (ListenerKind::Imap, &config.imap.listen),
        (ListenerKind::Imaps, &config.imaps.listen),
        (ListenerKind::Psk, &config.psk.listen),
    ] {
        for addr in addrs {
            let listener = listen(*addr, kind.as_str(), &metrics).await?;
            let tls = match kind {
                ListenerKind::Imap => Handshake::None,
                ListenerKind::Imaps => Handshake::Tls(acceptor.clone()),
                ListenerKind::Psk => match &psk {
                    Some((_, acceptor)) => Handshake::Psk(acceptor.clone()),
                    None => continue,
                },
            };
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                kind,
                tls,
                ctx.clone(),
                limits.clone(),
                connections.clone(),
                shutdown.clone(),
            )));
        }
    }
    accept_loops.extend(
        crate::ingress::start(
            &config,
            store.clone(),
            metrics.clone(),
            connections.clone(),
            shutdown.clone(),
        )
        .await?,
    );
    tracing::info!("cpmstore ready");

    signal.await;
    shutdown.cancel();
    for handle in accept_loops {
        handle.abort();
    }
    connections.close();
    let grace = Duration::from_secs(config.limits.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    let _ = tokio::time::timeout_at(deadline, connections.wait()).await;
    let left = connections.len();
    if left > 0 {
        tracing::warn!(
            sessions = left,
            "grace period over; closing remaining sessions"
        );
    }
    // A session still running may hold a storage connection, which closing waits for:
    // storage gets what is left of the grace, and a moment at least.
    let close_within = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    if tokio::time::timeout(close_within, store.close())
        .await
        .is_err()
    {
        tracing::warn!("storage did not close in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// What a listener does with a new connection before IMAP starts.
#[derive(Clone)]
enum Handshake {
    /// Nothing: cleartext (STARTTLS may follow).
    None,
    /// A rustls handshake (implicit TLS).
    Tls(tokio_rustls::TlsAcceptor),
    /// An OpenSSL PSK-TLS handshake.
    Psk(Arc<PskAcceptor>),
}

impl Handshake {
    /// Runs the handshake; `Err` carries what to log.
    async fn run(self, tcp: TcpStream) -> Result<Conn, String> {
        match self {
            Handshake::None => Ok(Conn::Plain(tcp)),
            Handshake::Tls(acceptor) => crate::net::tls::accept(&acceptor, tcp)
                .await
                .map(|stream| Conn::Tls(Box::new(stream)))
                .map_err(|e| format!("TLS handshake failed: {e}")),
            Handshake::Psk(acceptor) => acceptor
                .accept(tcp)
                .await
                .map(|stream| Conn::Psk(Box::new(stream)))
                .map_err(|e| format!("PSK-TLS handshake failed: {e}")),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    tls: Handshake,
    ctx: Arc<ImapCtx>,
    limits: Arc<ConnLimits>,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let Some((tcp, peer)) = crate::net::accept(&listener, kind.as_str(), &shutdown).await
        else {
            return;
        };
        let accepted = tokio::time::Instant::now();
        let (slot, preauth) = match limits.admit(peer.ip()) {
            Ok(slots) => slots,
            Err(why) => {
                tracing::info!(%peer, listener = kind.as_str(), limit = why.as_str(), "connection refused: limit reached");
                // On a TLS port a cleartext BYE would only confuse the client's TLS
                // stack (WRONG_VERSION_NUMBER): close without a word there.
                let cleartext = matches!(tls, Handshake::None);
                tokio::spawn(refuse(tcp, cleartext));
                continue;
            }
        };
        let local = tcp.local_addr().unwrap_or(peer);
        let info = ConnInfo {
            peer,
            local,
            listener: kind,
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _open = ctx.metrics.connection_opened(kind.as_str());
            tracing::info!(%peer, listener = kind.as_str(), "connection opened");
            // The handshake counts against the login deadline, which runs from here.
            let login_deadline = accepted + Duration::from_secs(ctx.limits.login_timeout_secs);
            // A handshake still waiting for the client when the server stops is dropped:
            // there is no session yet to say BYE to.
            let handshake = tokio::select! {
                r = tokio::time::timeout_at(login_deadline, tls.run(tcp)) => r,
                _ = shutdown.cancelled() => {
                    tracing::info!(%peer, listener = kind.as_str(), "handshake abandoned: shutting down");
                    return;
                }
            };
            let conn = match handshake {
                Ok(Ok(conn)) => conn,
                Ok(Err(why)) => {
                    // Server-side only: the client is told nothing about why.
                    tracing::info!(%peer, listener = kind.as_str(), error = %why, "handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, listener = kind.as_str(), "handshake timed out");
                    return;
                }
            };
            if let Some(psk) = conn.psk_peer() {
                tracing::info!(%peer, identity = %psk.identity, "PSK-TLS session established");
            }
            imap::serve_connection(ctx, conn, info, login_deadline, Box::new(preauth)).await;
            tracing::info!(%peer, listener = kind.as_str(), "connection closed");
        });
    }
}

async fn refuse(mut tcp: TcpStream, cleartext: bool) {
    use tokio::io::AsyncWriteExt;
    if cleartext {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tcp.write_all(b"* BYE Too many connections.\r\n"),
        )
        .await;
    }
    let _ = tcp.shutdown().await;
}
