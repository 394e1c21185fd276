//! The push listeners: HTTP (`http.listen`: push ingress and health) and SIP
//! (`sip.listen`, UDP and TCP), over one [`PushService`]. `serve` starts them all with
//! one call to [`start`].

use std::sync::Arc;

use cpmstore_storage::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::secret::Secret;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::net::{self, ServeError};
use crate::push::ingress::PushService;

/// Binds every push listener (logging `listening` with `listener` and `addr`, as the
/// IMAP listeners do) and spawns its accept loop. Connections run on `tracker`; every
/// loop stops when `shutdown` is cancelled.
pub async fn start(
    config: &Config,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let shared_config = Arc::new(config.clone());
    let service = Arc::new(PushService::new(
        store.clone(),
        shared_config.clone(),
        metrics.clone(),
    ));
    let admin_token = match &config.http.admin_token_file {
        Some(path) => Some(Arc::new(read_token(path, "http.admin_token_file")?)),
        None => None,
    };
    let deposit_token = match &config.cpm.deposit_token_file {
        Some(path) => Some(Arc::new(read_token(path, "cpm.deposit_token_file")?)),
        None => None,
    };
    if admin_token.is_none() && !config.http.listen.is_empty() {
        tracing::info!("http.admin_token_file is not set: the admin API is off");
    }
    let mut tasks = Vec::new();
    let router = http::router(AppState {
        push: service.clone(),
        store,
        config: shared_config,
        admin_token,
        deposit_token,
        metrics: metrics.clone(),
        max_body: config.limits.http_max_body_bytes,
    });
    for addr in &config.http.listen {
        let listener = net::listen(*addr, "http", &metrics).await?;
        tasks.push(tokio::spawn(http::serve(
            listener,
            router.clone(),
            metrics.clone(),
            config.limits.max_connections,
            tracker.clone(),
            shutdown.clone(),
        )));
    }
    tasks.extend(
        crate::sip::spawn(
            service,
            &config.sip.listen,
            config.limits.max_connections,
            tracker,
            shutdown,
        )
        .await?,
    );
    Ok(tasks)
}

/// Reads a bearer token (`key` names its config key): the file's content without
/// surrounding whitespace. An unreadable or empty file stops the start (never silently
/// open).
fn read_token(path: &std::path::Path, key: &str) -> Result<Secret, ServeError> {
    let mut text = std::fs::read_to_string(path).map_err(|e| {
        ServeError::Other(format!(
            "cannot read {key} {}: {e}; create it (one line, the token) \
             or unset the key to turn off what it guards",
            path.display()
        ))
    })?;
    let token = Secret::new(text.trim().to_owned());
    zeroize::Zeroize::zeroize(&mut text);
    if token.len() < 16 {
        return Err(ServeError::Other(format!(
            "{key} {} holds fewer than 16 characters; \
             put a long random token in it (e.g. `openssl rand -hex 32`)",
            path.display()
        )));
    }
    Ok(token)
}
