//! The push listeners: HTTP (`http.listen`: push ingress and health) and SIP
//! (`sip.listen`, UDP and TCP), over one [`PushService`]. `serve` starts them all with
//! one call to [`start`].

use std::sync::Arc;

use cpmstore_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http;
use crate::push::ingress::PushService;
use crate::serve::ServeError;

/// Binds every push listener (logging `listening` with `listener` and `addr`, as the
/// IMAP listeners do) and spawns its accept loop. Connections hold a clone of `alive`
/// while they run; every loop stops when `shutdown` turns true.
pub async fn start(
    config: &Config,
    store: Arc<dyn Store>,
    alive: Arc<()>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let service = Arc::new(PushService::new(store, Arc::new(config.clone())));
    let mut tasks = Vec::new();
    let router = http::router(service.clone());
    for addr in &config.http.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: *addr,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: *addr,
            source,
        })?;
        tracing::info!(listener = "http", addr = %local, "listening");
        tasks.push(tokio::spawn(http::serve(
            listener,
            router.clone(),
            config.limits.max_connections,
            alive.clone(),
            shutdown.clone(),
        )));
    }
    tasks.extend(
        crate::sip::spawn(
            service,
            &config.sip.listen,
            config.limits.max_connections,
            alive,
            shutdown,
        )
        .await?,
    );
    Ok(tasks)
}
