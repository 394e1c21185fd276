//! One `cpmstore serve` per SQLite data directory: a second one is refused with an
//! error naming the directory and the holder's pid, the CLI still runs beside the
//! server, and after `kill -9` a new server starts. With PostgreSQL, nodes may share a
//! data directory (and its PSK key) on one machine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpmstore_tests::imap_client::Client;
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, cpmstore_bin, postgres_url_or_skip};

/// A `cpmstore serve` started by hand beside a [`Server`], on the same config.
struct Second {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Second {
    fn start(config: &Path, cwd: &Path) -> Second {
        let mut child = Command::new(cpmstore_bin())
            .arg("--config")
            .arg(config)
            .arg("serve")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a second cpmstore serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().expect("stderr");
                text.push_str(&line);
                text.push('\n');
            }
        });
        Second { child, stderr }
    }

    /// Waits until the process exits (its status) or logs `cpmstore ready` (None),
    /// whichever comes first; panics after a minute of neither.
    fn exit_or_ready(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader take in the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return Some(status);
            }
            if self.stderr().contains("cpmstore ready") {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "second serve neither exited nor started:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid written into `<data>/serve.lock`.
fn lock_pid(server: &Server) -> u32 {
    let path = server.dir.path().join("data").join("serve.lock");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.trim().parse().unwrap_or_else(|_| panic!("{text:?}"))
}

#[test]
fn a_second_serve_on_one_sqlite_data_dir_is_refused_and_kill_9_frees_it() {
    let mut server = Server::start();
    let data = server.dir.path().join("data");
    assert_eq!(lock_pid(&server), server.pid());

    let mut second = Second::start(&server.config, server.dir.path());
    let status = second.exit_or_ready().unwrap_or_else(|| {
        panic!(
            "a second serve started on the same data directory:\n{}",
            second.stderr()
        )
    });
    let stderr = second.stderr();
    assert!(!status.success(), "{status}:\n{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line:\n{stderr}"));
    assert!(
        error.contains(&data.display().to_string()),
        "names the data directory: {error}"
    );
    assert!(
        error.contains(&format!("pid {}", server.pid())),
        "names the holder: {error}"
    );
    assert!(error.contains("another cpmstore serve"), "{error}");
    // The refused server did not take over the lock file.
    assert_eq!(lock_pid(&server), server.pid());

    // The CLI runs beside the server, and the server sees what it wrote.
    server.add_user("lena", "lock test password");
    let listed = server.cli(&["subscriber", "list"], "");
    assert!(listed.status.success(), "{listed:?}");
    Client::login(server.imaps, "lena", "lock test password")
        .command("SELECT INBOX")
        .ok();

    // kill -9: the OS releases the lock, so a restart is not refused.
    let old_pid = server.pid();
    server.signal("KILL");
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    server.restart();
    assert_ne!(server.pid(), old_pid);
    assert_eq!(lock_pid(&server), server.pid());
    Client::login(server.imaps, "lena", "lock test password")
        .command("SELECT INBOX")
        .ok();
}

#[test]
fn postgres_nodes_on_one_machine_may_share_a_data_dir() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_lock");
    let server = Server::start_with(ServerOptions {
        storage_url: Some(db.url.clone()),
        ..Default::default()
    });
    let mut second = Second::start(&server.config, server.dir.path());
    assert_eq!(
        second.exit_or_ready(),
        None,
        "a second PostgreSQL node on the same data directory must start:\n{}",
        second.stderr()
    );
    assert!(!server.dir.path().join("data").join("serve.lock").exists());
}
