//! The PostgreSQL backend: connecting, migrations, and the LISTEN/NOTIFY leg of the
//! change bus. Everything else is `sql.rs`.
//!
//! Many nodes share one database. A node NOTIFYs each change inside the transaction that
//! makes it (so it is delivered only on commit) and publishes it on its own bus right
//! after the commit; a [`Relay`] task LISTENs on its own connection and publishes what
//! the other nodes notify. The payload carries the sending node's random id, so that a
//! node does not deliver its own changes twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::AnyConnection;
use sqlx::Connection;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::{PgListener, PgNotification};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::changes::ChangeBus;
use crate::sql::{Backend, Companion, NOTIFY_CHANNEL, Notice, SqlStore};
use crate::{Error, OpenOptions, Result, Store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Longest pause between two attempts to re-establish the LISTEN connection.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Opens the PostgreSQL database named by `url`.
pub(crate) async fn open(url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    sqlx::any::install_default_drivers();
    let target = Target::parse(url)?;

    // One direct connection first: it fails fast (a pool would retry until its acquire
    // timeout) and its error can be reported with the host named.
    let mut conn = tokio::time::timeout(options.busy_timeout, AnyConnection::connect(url))
        .await
        .map_err(|_| {
            Error::Unreachable(format!(
                "{target}: no answer within {:?}",
                options.busy_timeout
            ))
        })?
        .map_err(|e| target.unreachable(&e))?;
    if options.migrate {
        // sqlx takes an advisory lock: nodes starting together migrate one at a time.
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| Error::Database(target.redact(&format!("{target}: migrations: {e}"))))?;
    }
    // The connection was only for checking and migrating; a failure to close it politely
    // changes nothing.
    let _ = conn.close().await;

    let pool = AnyPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .connect_lazy(url)
        .map_err(|e| Error::Invalid(target.redact(&format!("{target}: {e}"))))?;

    let bus = ChangeBus::new();
    let node = format!("{:016x}", rand::random::<u64>());
    let relay = Relay::start(url, node.clone(), bus.clone())
        .await
        .map_err(|e| target.unreachable(&e))?;
    let store = SqlStore::new(
        pool,
        Backend::Postgres,
        bus,
        node,
        target.to_string(),
        Some(Box::new(relay)),
    );
    Ok(Arc::new(store))
}

/// The background task relaying other nodes' notifications into the local bus.
pub(crate) struct Relay {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    /// LISTENs before returning, so that every change committed after `open` returns is
    /// heard.
    async fn start(
        url: &str,
        node: String,
        bus: ChangeBus,
    ) -> std::result::Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(relay(listener, url.to_owned(), node, bus, stopped));
        Ok(Relay {
            stop,
            task: Mutex::new(Some(task)),
        })
    }
}

#[async_trait]
impl Companion for Relay {
    async fn stop(&self) {
        // Dropping the sender would do as well; sending lets us wait for the task.
        let _ = self.stop.send(true);
        let task = match self.task.lock() {
            Ok(mut task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Receives notifications until told to stop (or the store is dropped). A lost
/// connection is re-established by the listener itself (it LISTENs again); notifications
/// sent while it was down are lost, which sessions survive: they catch up from the store
/// by MODSEQ at their next command anyway.
async fn relay(
    mut listener: PgListener,
    url: String,
    node: String,
    bus: ChangeBus,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let received = tokio::select! {
            _ = stopped.changed() => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => {
                backoff = Duration::from_millis(100);
                deliver(&notification, &node, &bus);
            }
            Ok(None) => {
                tracing::warn!(
                    "change bus: LISTEN connection lost and re-established; notifications in between are lost"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "change bus: LISTEN connection failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                match reconnect(&url).await {
                    Ok(fresh) => listener = fresh,
                    Err(e) => {
                        tracing::warn!(error = %e, "change bus: reconnecting the LISTEN connection failed")
                    }
                }
            }
        }
    }
}

async fn reconnect(url: &str) -> std::result::Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

/// Publishes another node's change on the local bus; our own were published at commit.
fn deliver(notification: &PgNotification, node: &str, bus: &ChangeBus) {
    match serde_json::from_str::<Notice>(notification.payload()) {
        Ok(notice) if notice.node == node => {}
        Ok(notice) => bus.publish(notice.change),
        Err(e) => tracing::warn!(error = %e, "change bus: ignoring a malformed notification"),
    }
}

/// The database as it may be named in errors: host, port and database, never the
/// password (which is also scrubbed from any error text).
struct Target {
    host: String,
    port: u16,
    database: String,
    secrets: Vec<String>,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        // The URL is never echoed: it may hold the password.
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Invalid(format!("malformed PostgreSQL URL: {e}")))?;
        let query_host = parsed
            .query_pairs()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.into_owned());
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ => query_host.unwrap_or_else(|| "localhost".to_owned()),
        };
        let mut secrets = Vec::new();
        if let Some(password) = parsed.password().filter(|p| !p.is_empty()) {
            secrets.push(password.to_owned());
            let decoded = percent_decode(password);
            if decoded != password {
                secrets.push(decoded);
            }
        }
        if let Some((_, password)) = parsed
            .query_pairs()
            .find(|(k, v)| k == "password" && !v.is_empty())
        {
            secrets.push(password.into_owned());
        }
        Ok(Target {
            host,
            port: parsed.port().unwrap_or(5432),
            database: parsed.path().trim_start_matches('/').to_owned(),
            secrets,
        })
    }

    /// `text` with every occurrence of the password replaced.
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    fn unreachable(&self, e: &sqlx::Error) -> Error {
        Error::Unreachable(self.redact(&format!("{self}: {e}")))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL at {}:{}", self.host, self.port)?;
        if !self.database.is_empty() {
            write!(f, "/{}", self.database)?;
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes (URL userinfo); anything malformed is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(hi), Some(lo)) = (bytes[i], hex(i + 1), hex(i + 2)) {
            // Two hex digits: at most 0xff.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_host_not_password() -> Result<()> {
        let target = Target::parse("postgres://cpm:s3cr%2Ft@db.example.net:6543/cpm")?;
        assert_eq!(target.to_string(), "PostgreSQL at db.example.net:6543/cpm");
        assert_eq!(
            target.redact("auth s3cr/t and s3cr%2Ft"),
            "auth *** and ***"
        );
        let bare = Target::parse("postgresql:///cpm?host=/run/postgresql")?;
        assert_eq!(bare.to_string(), "PostgreSQL at /run/postgresql:5432/cpm");
        Ok(())
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
