//! One `cpmstore serve` per SQLite database.
//!
//! With SQLite, changes reach sessions over an in-process bus, so a second server on
//! the same database would store mail that the first one's sessions never hear of.
//! `serve` therefore takes an exclusive OS advisory lock (`File::try_lock`: `flock` on
//! Unix, `LockFileEx` on Windows) on `<data_dir>/serve.lock`, and also on
//! `<database>.serve.lock` when `storage.url` puts the database file outside the data
//! directory, and holds them for its whole life. The OS drops the lock when the
//! process ends, however it ends (`kill -9` included), so a restart after a crash is
//! never refused; the file itself stays behind and is harmless. The holder writes its
//! pid into the file, for the error a second server prints.
//!
//! Only `serve` locks: the CLI (`subscriber`, `whitelist`, `migrate`, `check-config`)
//! runs beside a serving server as before.
//!
//! With PostgreSQL nothing is locked: nodes share the database by design and hear of
//! each other's changes through it, and every node must hold the same PSK key
//! (`psk.kek`), so several nodes on one machine may share a data directory. An
//! in-memory SQLite database is private to its process and needs no lock either.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// Why `serve` may not use its data directory.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another cpmstore serve{} already uses the SQLite data in {dir} (it holds the lock {lock}); \
         stop it first, or give this server a data_dir and storage.url of its own",
        holder(*.pid)
    )]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot lock {lock}: {source}; check that the directory exists and is writable")]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
}

/// The locks a running server holds; dropping it (or the process ending) releases them.
#[derive(Debug)]
pub struct DataLock {
    _files: Vec<File>,
}

/// Takes the locks `serve` needs for `config` (none for PostgreSQL or an in-memory
/// SQLite database; see the module documentation).
pub fn acquire_for(config: &Config) -> Result<DataLock, LockError> {
    let Some(database) = config.storage.sqlite_path() else {
        return Ok(DataLock { _files: Vec::new() });
    };
    let mut files = vec![lock(&config.data_dir, &config.data_dir.join(LOCK_FILE))?];
    let db_dir = match database.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !same_dir(&db_dir, &config.data_dir) {
        let mut name = database.clone().into_os_string();
        name.push(".serve.lock");
        files.push(lock(&db_dir, Path::new(&name))?);
    }
    Ok(DataLock { _files: files })
}

/// Opens (creating `dir` and the file if need be) and locks `path`, then writes this
/// process's pid into it.
fn lock(dir: &Path, path: &Path) -> Result<File, LockError> {
    let io = |source| LockError::Io {
        lock: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // Not truncated on open: the holder's pid must survive a failed attempt.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                lock: path.to_path_buf(),
                pid: read_pid(&mut file),
            });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(file)
}

/// The pid the holder wrote, if it can be read (a holder that has just locked may not
/// have written it yet).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Whether two directories are one (both exist by now; compared canonically so that
/// `./data` and `/srv/x/data` agree).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;

    fn config(data_dir: &Path, url: Option<String>) -> Config {
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            ..Config::default()
        };
        config.storage = match url {
            Some(url) => StorageConfig { url },
            None => StorageConfig::sqlite_in(data_dir),
        };
        config
    }

    #[test]
    fn second_lock_on_a_data_dir_is_refused_with_the_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let first = acquire_for(&config(&data, None)).unwrap();
        let pid = std::fs::read_to_string(data.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());

        // `flock` locks belong to the open file, so a second open in this process
        // conflicts just as another process would.
        let err = acquire_for(&config(&data, None)).unwrap_err();
        match &err {
            LockError::Held { dir, pid, .. } => {
                assert_eq!(dir, &data);
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&data.display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        // The refused attempt left the holder's pid in place.
        assert_eq!(std::fs::read_to_string(data.join(LOCK_FILE)).unwrap(), pid);

        drop(first);
        let again = acquire_for(&config(&data, None));
        assert!(again.is_ok(), "released on drop: {again:?}");
    }

    #[test]
    fn a_database_outside_the_data_dir_is_locked_too() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("shared").join("store.db");
        let url = Some(format!("sqlite://{}", db.display()));
        let _first = acquire_for(&config(&tmp.path().join("a"), url.clone())).unwrap();
        assert!(tmp.path().join("shared/store.db.serve.lock").is_file());
        // Another data directory, the same database: refused, naming its directory.
        let err = acquire_for(&config(&tmp.path().join("b"), url)).unwrap_err();
        assert!(
            matches!(&err, LockError::Held { dir, .. } if dir == &tmp.path().join("shared")),
            "{err:?}"
        );
    }

    #[test]
    fn postgres_and_memory_take_no_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        for url in ["postgres://u@localhost/db", "sqlite::memory:"] {
            let a = acquire_for(&config(&data, Some(url.into()))).unwrap();
            let b = acquire_for(&config(&data, Some(url.into()))).unwrap();
            assert!(a._files.is_empty() && b._files.is_empty(), "{url}");
        }
        assert!(!data.join(LOCK_FILE).exists());
    }
}
