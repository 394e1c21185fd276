//! The SQLite backend: the file, its pragmas, the pool and the migrations. Everything
//! else is `sql.rs`. Changes are published on the in-process bus only (one process owns
//! the file).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, Connection, Executor, Row};

use crate::changes::ChangeBus;
use crate::sql::{Backend, SqlStore};
use crate::{Error, OpenOptions, Result, Store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Opens (creating if needed) the SQLite database named by `url`.
pub(crate) async fn open(url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    sqlx::any::install_default_drivers();
    let location = Location::parse(url)?;
    if let Some(dir) = location.parent_dir() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| {
            Error::Unreachable(format!(
                "SQLite database {}: creating {}: {e}",
                location.path,
                dir.display()
            ))
        })?;
    }
    let target = if location.memory {
        "SQLite in-memory database".to_owned()
    } else {
        format!("SQLite database {}", location.path)
    };

    let busy_ms = options.busy_timeout.as_millis().min(i32::MAX as u128);
    // synchronous = NORMAL: in WAL mode a commit is written to the WAL (the OS has it
    // before COMMIT returns) but not fsynced; the WAL is fsynced at each checkpoint. A
    // committed write survives the process being killed (kill -9, a crash), not a power
    // loss or kernel crash, which may take the last commits since the checkpoint
    // (docs/benchmarks.md has the figures; `FULL` fsyncs every commit, ~4 ms here).
    let pragmas = format!(
        "PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;"
    );
    let mut pool = AnyPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        // A SQLite connection is a file handle in this process, not a socket that can
        // break: no round trip to its worker thread to test it at every acquire.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            let pragmas = pragmas.clone();
            Box::pin(async move {
                conn.execute(pragmas.as_str()).await?;
                Ok(())
            })
        });
    if location.memory {
        // Every connection to `:memory:` is a database of its own: keep exactly one.
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    let pool = pool
        .connect_lazy(&location.url)
        .map_err(|e| Error::Invalid(format!("{target}: {e}")))?;

    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| Error::Unreachable(format!("{target}: {e}")))?;
    if !location.memory {
        wal(&mut conn)
            .await
            .map_err(|e| Error::Unreachable(format!("{target}: setting WAL journal mode: {e}")))?;
    }
    if options.migrate {
        // sqlx takes no lock around SQLite migrations: hold the write lock while they
        // run (each migration is a savepoint inside), so that processes opening a new
        // file together migrate it once; the others wait, then find nothing to do.
        let migrate_err =
            |e: &dyn std::fmt::Display| Error::Database(format!("{target}: migrations: {e}"));
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| migrate_err(&e))?;
        MIGRATOR
            .run_direct(&mut *tx)
            .await
            .map_err(|e| migrate_err(&e))?;
        tx.commit().await.map_err(|e| migrate_err(&e))?;
    }
    drop(conn);

    let store = SqlStore::new(
        pool,
        Backend::Sqlite,
        ChangeBus::new(),
        String::new(),
        target,
        None,
    );
    Ok(Arc::new(store))
}

/// Puts the database in WAL mode. The mode is persistent in the file, and changing it
/// needs the database to itself (the busy timeout does not apply), so it is done once
/// here, retried while another opener holds the file, rather than on every connection.
async fn wal(conn: &mut AnyConnection) -> std::result::Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        match sqlx::query("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(row) => {
                let mode: String = row.try_get(0)?;
                if mode.eq_ignore_ascii_case("wal") {
                    return Ok(());
                }
                return Err(sqlx::Error::Protocol(format!(
                    "journal mode stays {mode:?}"
                )));
            }
            Err(sqlx::Error::Database(e))
                if attempt < 50 && e.code().is_some_and(|c| c == "5" || c == "6") =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Where a `sqlite:` URL points.
#[derive(Debug)]
struct Location {
    /// The file as given (relative to the working directory unless absolute).
    path: String,
    memory: bool,
    /// The URL sqlx is given: the file is created if missing.
    url: String,
}

impl Location {
    fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| Error::Invalid("a SQLite URL starts with sqlite:".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let memory = path.is_empty()
            || path == ":memory:"
            || query.is_some_and(|q| q.split('&').any(|p| p == "mode=memory"));
        if path.is_empty() && !memory {
            return Err(Error::Invalid("SQLite URL without a path".into()));
        }
        let url = match query {
            Some(query) if query.split('&').any(|p| p.starts_with("mode=")) => {
                format!("sqlite://{path}?{query}")
            }
            Some(query) => format!("sqlite://{path}?{query}&mode=rwc"),
            None if memory => format!("sqlite://{path}"),
            None => format!("sqlite://{path}?mode=rwc"),
        };
        Ok(Location {
            path: path.to_owned(),
            memory,
            url,
        })
    }

    fn parent_dir(&self) -> Option<&Path> {
        if self.memory {
            return None;
        }
        Path::new(&self.path)
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() -> Result<()> {
        let abs = Location::parse("sqlite:///var/lib/cpmstore/store.db")?;
        assert_eq!(abs.path, "/var/lib/cpmstore/store.db");
        assert_eq!(abs.url, "sqlite:///var/lib/cpmstore/store.db?mode=rwc");
        assert_eq!(abs.parent_dir(), Some(Path::new("/var/lib/cpmstore")));

        let rel = Location::parse("sqlite:data/store.db")?;
        assert_eq!(rel.path, "data/store.db");
        assert_eq!(rel.parent_dir(), Some(Path::new("data")));

        let bare = Location::parse("sqlite://store.db")?;
        assert_eq!(bare.parent_dir(), None);

        let ro = Location::parse("sqlite://store.db?mode=ro")?;
        assert_eq!(ro.url, "sqlite://store.db?mode=ro");

        assert!(Location::parse("sqlite::memory:")?.memory);
        assert!(Location::parse("postgres://x").is_err());
        Ok(())
    }
}
