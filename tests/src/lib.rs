//! Helpers shared by the black-box tests: find the binary, run the CLI, start a server,
//! speak to it.
//!
//! # The binary
//! These tests run the real `cpmstore` binary. Cargo builds a package's binaries only
//! for that package's own integration tests, so build it first:
//!
//! ```text
//! cargo build -p cpmstore-server && cargo test -p cpmstore-tests
//! ```
//!
//! (`cargo build --workspace` does too.) The binary is looked up next to the test
//! executable (`target/<profile>/deps/cli-<hash>` -> `target/<profile>/cpmstore`);
//! `CPMSTORE_TEST_BIN` names another one.
//!
//! # Layout
//! - this file: [`cpmstore_bin`] and [`CliEnv`], running CLI commands in a temp dir;
//! - `server`: start `cpmstore serve` on ephemeral ports;
//! - `imap_client`: a small blocking IMAP client over plain TCP or TLS;
//! - `auth_client`: TLS and PSK-TLS from a chosen source address, and a SCRAM client;
//! - `http_client`: one HTTP/1.1 request per connection (push, admin API, metrics);
//! - `psk_client`: `openssl s_client -psk` driven as an IMAP client;
//! - `modseq`: what the CONDSTORE and QRESYNC tests share.

// Test support: a panic with a message is how a test reports a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod auth_client;
pub mod http_client;
pub mod imap_client;
pub mod modseq;
pub mod psk_client;
pub mod server;

/// Environment variable naming the binary under test, instead of the one in `target/`.
pub const BIN_ENV: &str = "CPMSTORE_TEST_BIN";

/// Environment variable with a PostgreSQL URL (a superuser or a role that may create
/// databases); tests that need PostgreSQL are skipped without it.
pub const POSTGRES_ENV: &str = "CPMSTORE_TEST_POSTGRES_URL";

/// How long one CLI command may take before the test kills it.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// The `cpmstore` binary under test. Panics with how to build it when it is missing.
pub fn cpmstore_bin() -> PathBuf {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        return PathBuf::from(path);
    }
    let exe =
        std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test executable: {e}"));
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("cpmstore{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the cpmstore binary is missing at {}: run `cargo build -p cpmstore-server` \
         (same profile) before `cargo test -p cpmstore-tests`, or set {BIN_ENV}",
        bin.display()
    );
    bin
}

/// What a CLI command did.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Exit status; -1 when killed by a signal.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Stdout parsed as one JSON document; panics with the whole output otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self}"))
    }

    /// Asserts the exit status, showing the output when it differs.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit status:\n{self}");
        self
    }

    /// Asserts a failure of class `code` reported as one `error: ` line on stderr, with
    /// nothing on stdout.
    pub fn assert_error(&self, code: i32) -> &Self {
        self.assert_code(code);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(lines.len(), 1, "expected one `error:` line:\n{self}");
        assert!(self.stdout.trim().is_empty(), "expected no stdout:\n{self}");
        self
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A temporary working directory to run CLI commands in, with its own data directory
/// (`CPMSTORE_DATA_DIR=<tmp>/data`) and environment. No `CPMSTORE_*` or `RUST_LOG`
/// variable of the test process leaks into the commands.
pub struct CliEnv {
    /// The working directory of every command (removed on drop).
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Default for CliEnv {
    fn default() -> Self {
        CliEnv::new()
    }
}

impl CliEnv {
    /// A fresh directory on SQLite (the embedded default inside it).
    pub fn new() -> CliEnv {
        let dir = tempfile::Builder::new()
            .prefix("cpmstore-cli-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let data = dir.path().join("data");
        CliEnv {
            env: vec![("CPMSTORE_DATA_DIR".into(), data.display().to_string())],
            dir,
        }
    }

    /// Adds (or replaces) an environment variable of the commands.
    pub fn env(mut self, key: &str, value: &str) -> CliEnv {
        self.set_env(key, value);
        self
    }

    /// Adds (or replaces) an environment variable of the commands.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The storage URL the commands use: `CPMSTORE_STORAGE_URL` if set, else the SQLite
    /// default inside the data directory.
    pub fn storage_url(&self) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == "CPMSTORE_STORAGE_URL")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                format!("sqlite://{}", self.data_dir().join("cpmstore.db").display())
            })
    }

    /// Writes a file into the working directory and returns its path.
    pub fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Runs `cpmstore ARGS` with stdin closed.
    pub fn run(&self, args: &[&str]) -> CliOutput {
        self.run_with(args, None, &[])
    }

    /// Runs `cpmstore ARGS` feeding `stdin`.
    pub fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> CliOutput {
        self.run_with(args, Some(stdin), &[])
    }

    /// Runs `cpmstore ARGS` feeding `stdin` (closed when None), with extra environment
    /// variables for this command only.
    pub fn run_with(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        extra_env: &[(&str, &str)],
    ) -> CliOutput {
        let mut cmd = Command::new(cpmstore_bin());
        cmd.args(args).current_dir(self.dir.path());
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("CPMSTORE_") || name == "RUST_LOG" {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.envs(extra_env.iter().copied());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cpmstore_bin().display()));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // The command may exit before reading (a usage error): a broken pipe is fine.
            let _ = pipe.write_all(input);
        }
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut text);
                }
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let stdout = read_all(stdout.map(|p| Box::new(p) as _));
        let stderr = read_all(stderr.map(|p| Box::new(p) as _));
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("cpmstore {args:?} did not finish within {CLI_TIMEOUT:?}");
                }
                Err(e) => panic!("cannot wait for cpmstore {args:?}: {e}"),
            }
        };
        let join = |handle: std::thread::JoinHandle<String>| {
            handle
                .join()
                .unwrap_or_else(|_| panic!("reader thread panicked"))
        };
        CliOutput {
            code: status.code().unwrap_or(-1),
            stdout: join(stdout),
            stderr: join(stderr),
        }
    }
}

/// The PostgreSQL URL of the test environment, or None after printing why the caller
/// skips.
pub fn postgres_url_or_skip() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED: {POSTGRES_ENV} not set");
            None
        }
    }
}

/// A fresh PostgreSQL database for one test, dropped again by [`TempDatabase::drop_now`]
/// (or on drop).
pub struct TempDatabase {
    admin_url: String,
    name: String,
    /// URL of the new database (same credentials as the admin URL).
    pub url: String,
    dropped: bool,
}

impl TempDatabase {
    /// Creates `<prefix>_<unique>` through the server at `admin_url`.
    pub fn create(admin_url: &str, prefix: &str) -> TempDatabase {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("{prefix}_{}_{nanos}", std::process::id());
        let mut url = url::Url::parse(admin_url)
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is not a URL: {e}"));
        block_on(async {
            let mut conn = connect(admin_url).await;
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        });
        url.set_path(&format!("/{name}"));
        TempDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
            dropped: false,
        }
    }

    /// Drops the database (terminating leftover connections).
    pub fn drop_now(&mut self) {
        if self.dropped {
            return;
        }
        self.dropped = true;
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        block_on(async move {
            let mut conn = connect(&admin_url).await;
            if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await
            {
                eprintln!("warning: cannot drop test database {name}: {e}");
            }
        });
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        self.drop_now();
    }
}

async fn connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}: {e}"))
}

/// Runs a future on a fresh current-thread runtime (for synchronous tests).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"))
        .block_on(future)
}

/// Fails the test, naming the installer, when `tool` is not on the PATH.
pub fn require(tool: &str) {
    use std::process::Command;
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success());
    assert!(
        matches!(found, Ok(true)),
        "{tool} is not installed; run scripts/install-test-deps.sh (scripts/test.sh does)"
    );
}
