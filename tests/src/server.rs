//! Starts the real `cpmstore` binary on a temporary data directory with every listener on
//! an ephemeral loopback port, and finds the ports from its JSON log.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cpmstore_bin;

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    /// The PSK-TLS listener, when [`ServerOptions::psk`] turned it on.
    pub psk: Option<SocketAddr>,
    /// The HTTP listener (push ingress, health), found in the log.
    pub http: Option<SocketAddr>,
    /// The SIP listeners (UDP and TCP share the port), when
    /// [`ServerOptions::sip_trusted_peers`] turned them on.
    pub sip_udp: Option<SocketAddr>,
    pub sip_tcp: Option<SocketAddr>,
    /// Every line the server logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Set when the log reader saw the end of the process's stderr.
    log_eof: Arc<std::sync::atomic::AtomicBool>,
    /// The admin API's bearer token, when [`ServerOptions::admin_token`] set one.
    pub admin_token: Option<String>,
    env: Vec<(String, String)>,
    /// What [`Server::restart`] waits for besides the IMAP listeners.
    want_psk: bool,
    want_sip: bool,
}

/// Options for [`Server::start_with`].
#[derive(Default, Clone)]
pub struct ServerOptions {
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    /// `storage.url`; SQLite in the temp dir when `None`.
    pub storage_url: Option<String>,
    /// Extra environment variables for the server and the CLI.
    pub env: Vec<(String, String)>,
    /// Use this data directory's config instead of making a new one (second node).
    pub reuse_dir: Option<PathBuf>,
    /// Turn the PSK-TLS listener on (an ephemeral port, in [`Server::psk`]).
    pub psk: bool,
    /// Turn the SIP listeners on (an ephemeral port), believing P-Asserted-Identity
    /// from these peers (`sip.trusted_peers`).
    pub sip_trusted_peers: Option<Vec<String>>,
    /// Turn the HTTP admin API on with this bearer token (written to a file in the
    /// temp dir, named by `http.admin_token_file`).
    pub admin_token: Option<String>,
}

/// `[cpm]` for the tests of IMAP in general: the CPM folder rules (on by default,
/// INTERFACES.md 9.1) off, so that a test may create top-level mailboxes and move
/// messages anywhere, as on any IMAP server. The rules have their own tests
/// (tests/cpm.rs, and the in-process tables).
pub const GENERIC_IMAP: &str = "[cpm]\nenforce_folder_rules = false\n";

impl Server {
    /// A server on SQLite with the embedded defaults but ephemeral ports.
    pub fn start() -> Server {
        Server::start_with(ServerOptions::default())
    }

    /// [`Server::start`] with [`GENERIC_IMAP`]: for tests that create top-level
    /// mailboxes.
    pub fn start_generic() -> Server {
        Server::start_with(ServerOptions {
            extra_config: GENERIC_IMAP.into(),
            ..ServerOptions::default()
        })
    }

    pub fn start_with(options: ServerOptions) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let storage = match &options.storage_url {
            Some(url) => format!("[storage]\nurl = \"{url}\"\n"),
            None => String::new(),
        };
        let config = dir.path().join("cpmstore.toml");
        let psk = if options.psk { "\"127.0.0.1:0\"" } else { "[]" };
        let sip = match &options.sip_trusted_peers {
            Some(peers) => format!(
                "listen = \"127.0.0.1:0\"\ntrusted_peers = [{}]",
                peers
                    .iter()
                    .map(|p| format!("\"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "listen = []".to_owned(),
        };
        let admin = match &options.admin_token {
            Some(token) => {
                let path = dir.path().join("admin.token");
                std::fs::write(&path, format!("{token}\n")).expect("write the admin token");
                format!("admin_token_file = \"{}\"\n", path.display())
            }
            None => String::new(),
        };
        let text = format!(
            "data_dir = \"{}\"\n{storage}\n[imap]\nlisten = \"127.0.0.1:0\"\n[imaps]\nlisten = \"127.0.0.1:0\"\n\
             [psk]\nlisten = {psk}\n[http]\nlisten = \"127.0.0.1:0\"\n{admin}[sip]\n{sip}\n\
             [auth]\nargon2_m_kib = 1024\nargon2_t = 1\n[log]\nformat = \"json\"\nlevel = \"info\"\n{}\n",
            data.display(),
            options.extra_config
        );
        std::fs::write(&config, text).expect("write config");
        let mut server = Server::spawn(
            dir,
            config,
            options.env,
            options.psk,
            options.sip_trusted_peers.is_some(),
        );
        server.admin_token = options.admin_token;
        server
    }

    fn spawn(
        dir: tempfile::TempDir,
        config: PathBuf,
        env: Vec<(String, String)>,
        want_psk: bool,
        want_sip: bool,
    ) -> Server {
        let launched = launch(dir.path(), &config, &env, want_psk, want_sip);
        Server {
            child: launched.child,
            dir,
            config,
            imap: launched.imap,
            imaps: launched.imaps,
            psk: launched.psk,
            http: launched.http,
            sip_udp: launched.sip_udp,
            sip_tcp: launched.sip_tcp,
            log: launched.log,
            log_eof: launched.log_eof,
            admin_token: None,
            env,
            want_psk,
            want_sip,
        }
    }

    /// Runs `cpmstore --config <this server's config> ARGS`, feeding `stdin`.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        run_cli(&self.config, self.dir.path(), &self.env, args, stdin)
    }

    /// Provisions a subscriber with a password.
    pub fn add_user(&self, user: &str, password: &str) {
        let out = self.cli(&["subscriber", "add", user, "--password-stdin"], password);
        assert!(
            out.status.success(),
            "subscriber add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server's log so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`...) to the server process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit: its status, or `None` while it
    /// still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for cpmstore serve") {
                // The process is gone; let the reader take in its last log lines.
                let read_all = Instant::now() + Duration::from_secs(5);
                while !self.log_eof.load(std::sync::atomic::Ordering::SeqCst)
                    && Instant::now() < read_all
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the server again on the same config, data directory and storage, after
    /// the previous process exited (it is killed first if it still runs). The
    /// listeners' ports change; [`Server::log`] holds the new process's lines only.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let launched = launch(
            self.dir.path(),
            &self.config,
            &self.env,
            self.want_psk,
            self.want_sip,
        );
        self.child = launched.child;
        self.imap = launched.imap;
        self.imaps = launched.imaps;
        self.psk = launched.psk;
        self.http = launched.http;
        self.sip_udp = launched.sip_udp;
        self.sip_tcp = launched.sip_tcp;
        self.log = launched.log;
        self.log_eof = launched.log_eof;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI against a config file.
pub fn run_cli(
    config: &Path,
    cwd: &Path,
    env: &[(String, String)],
    args: &[&str],
    stdin: &str,
) -> Output {
    let mut cmd = Command::new(cpmstore_bin());
    cmd.arg("--config").arg(config).args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cpmstore");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("cpmstore output")
}

/// A started `cpmstore serve` process and the addresses it logged.
struct Launched {
    child: Child,
    imap: SocketAddr,
    imaps: SocketAddr,
    psk: Option<SocketAddr>,
    http: Option<SocketAddr>,
    sip_udp: Option<SocketAddr>,
    sip_tcp: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    log_eof: Arc<std::sync::atomic::AtomicBool>,
}

/// Starts `cpmstore --config CONFIG serve` in `dir` and waits until it is ready.
fn launch(
    dir: &Path,
    config: &Path,
    env: &[(String, String)],
    want_psk: bool,
    want_sip: bool,
) -> Launched {
    let mut cmd = Command::new(cpmstore_bin());
    cmd.arg("--config")
        .arg(config)
        .arg("serve")
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cpmstore serve");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let log_eof = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let eof = log_eof.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("CPMSTORE_TEST_ECHO_LOG").is_some() {
                eprintln!("server: {line}");
            }
            sink.lock().expect("log").push(line);
        }
        eof.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut imap, mut imaps, mut psk, mut http) = (None, None, None, None);
    let (mut sip_udp, mut sip_tcp) = (None, None);
    loop {
        for line in log.lock().expect("log").iter() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let fields = &v["fields"];
            if fields["message"] == "listening" {
                let addr: Option<SocketAddr> = fields["addr"].as_str().and_then(|a| a.parse().ok());
                match fields["listener"].as_str() {
                    Some("imap") => imap = addr,
                    Some("imaps") => imaps = addr,
                    Some("psk") => psk = addr,
                    Some("http") => http = addr,
                    Some("sip-udp") => sip_udp = addr,
                    Some("sip-tcp") => sip_tcp = addr,
                    _ => {}
                }
            }
        }
        if let (Some(imap), Some(imaps), true) = (
            imap,
            imaps,
            (psk.is_some() || !want_psk) && (sip_tcp.is_some() || !want_sip),
        ) {
            let ready = log
                .lock()
                .expect("log")
                .iter()
                .any(|l| l.contains("cpmstore ready"));
            if ready {
                return Launched {
                    child,
                    imap,
                    imaps,
                    psk,
                    http,
                    sip_udp,
                    sip_tcp,
                    log,
                    log_eof,
                };
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "cpmstore serve exited with {status}:\n{}",
                log.lock().expect("log").join("\n")
            );
        }
        if Instant::now() > deadline {
            panic!(
                "cpmstore serve did not start:\n{}",
                log.lock().expect("log").join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
