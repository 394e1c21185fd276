//! `openssl s_client -psk` driven as an IMAP client over PSK-TLS, for tests.
//!
//! `s_client` takes the key in argv (visible in `ps`): that is the tool's interface,
//! acceptable in tests only because their keys protect nothing. cpmstore itself never
//! takes a key in argv (`--key-hex-stdin`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `openssl s_client` on the PSK-TLS listener, IMAP over its stdin/stdout.
pub struct SClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl SClient {
    pub fn spawn(addr: SocketAddr, version: &str, key: &str, identity: &str) -> SClient {
        crate::require("openssl");
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), version])
            .args(["-psk", key, "-psk_identity", identity])
            .args(["-brief", "-ign_eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl s_client");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line.trim_end().to_owned()).is_err() {
                    break;
                }
            }
        });
        let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr_text.clone();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            sink.lock().unwrap().push_str(&text);
        });
        SClient {
            child,
            stdin,
            lines,
            stderr: stderr_text,
        }
    }

    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The greeting, or None when the handshake failed.
    pub fn greeting(&self) -> Option<String> {
        self.line(Duration::from_secs(10))
            .filter(|l| l.starts_with("* OK"))
    }

    pub fn send_line(&mut self, line: &str) {
        write!(self.stdin, "{line}\r\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line tagged `tag`.
    pub fn tagged(&self, tag: &str) -> String {
        loop {
            let line = self
                .line(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("no answer tagged {tag}"));
            if line.starts_with(&format!("{tag} ")) {
                return line;
            }
        }
    }

    /// Sends a command and returns the tagged status line.
    pub fn command(&mut self, tag: &str, command: &str) -> String {
        self.send_line(&format!("{tag} {command}"));
        self.tagged(tag)
    }

    /// Logs out (if the session is still there), waits for s_client to exit, and
    /// returns its stderr.
    pub fn finish(mut self) -> String {
        let _ = write!(self.stdin, "zz LOGOUT\r\n");
        let _ = self.stdin.flush();
        drop(self.stdin);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        self.stderr.lock().unwrap().clone()
    }
}

/// Whether a PSK-TLS login with `key` works now.
pub fn psk_login_works(addr: SocketAddr, version: &str, key: &str, identity: &str) -> bool {
    let mut s = SClient::spawn(addr, version, key, identity);
    let ok = s.greeting().is_some()
        && s.command("a", "AUTHENTICATE EXTERNAL =")
            .starts_with("a OK");
    s.finish();
    ok
}
