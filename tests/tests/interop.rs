//! Interop with independent client implementations: Python's imaplib, curl, mbsync.
//! The clients must be installed (`scripts/install-test-deps.sh` does it); a missing
//! client fails the test rather than skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cpmstore_tests::imap_client::Client;
use cpmstore_tests::require;
use cpmstore_tests::server::Server;

const PASSWORD: &str = "interop pass 9";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn python_imaplib() {
    require("python3");
    let server = Server::start();
    server.add_user("alice", PASSWORD);
    let out = Command::new("python3")
        .arg(workspace().join("interop/imaplib_check.py"))
        .env("IMAP_HOST", "127.0.0.1")
        .env("IMAP_PORT", server.imap.port().to_string())
        .env("IMAPS_PORT", server.imaps.port().to_string())
        .env("IMAP_USER", "alice")
        .env("IMAP_PASSWORD", PASSWORD)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}

/// A netrc file keeps the password out of curl's argv.
fn netrc(dir: &Path) -> PathBuf {
    let path = dir.join("netrc");
    std::fs::write(
        &path,
        format!("machine 127.0.0.1 login alice password \"{PASSWORD}\"\n"),
    )
    .expect("netrc");
    path
}

fn curl(netrc: &Path, args: &[&str]) -> Output {
    Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--insecure",
            "--max-time",
            "30",
            "--netrc-file",
        ])
        .arg(netrc)
        .args(args)
        .output()
        .expect("curl")
}

#[test]
fn curl_imaps_list_fetch_append() {
    require("curl");
    let server = Server::start();
    server.add_user("alice", PASSWORD);
    let netrc = netrc(server.dir.path());
    let base = format!("imaps://127.0.0.1:{}", server.imaps.port());

    // LIST
    let out = curl(&netrc, &[&format!("{base}/")]);
    assert!(out.status.success(), "{}", show(&out));
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("INBOX") && list.contains("\\Sent"), "{list}");

    // APPEND (upload)
    let msg = server.dir.path().join("msg.eml");
    std::fs::write(
        &msg,
        "From: curl@example.net\r\nSubject: via curl\r\n\r\nuploaded by curl\r\n",
    )
    .expect("msg");
    let out = curl(
        &netrc,
        &["-T", msg.to_str().expect("path"), &format!("{base}/INBOX")],
    );
    assert!(out.status.success(), "{}", show(&out));

    // FETCH by UID
    let out = curl(&netrc, &[&format!("{base}/INBOX;UID=1")]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "From: curl@example.net\r\nSubject: via curl\r\n\r\nuploaded by curl\r\n"
    );

    // And it is really there for another client.
    let mut c = Client::login(server.imaps, "alice", PASSWORD);
    let r = c.command("STATUS INBOX (MESSAGES)").ok();
    assert!(r.untagged[0].contains("MESSAGES 1"), "{r:?}");
}

fn mbsync(rc: &Path) -> Output {
    Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .arg("-a")
        .output()
        .expect("mbsync")
}

fn maildir_count(dir: &Path) -> usize {
    ["cur", "new"]
        .iter()
        .map(|sub| {
            std::fs::read_dir(dir.join(sub))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn mbsync_two_way_sync_then_nothing_to_do() {
    require("mbsync");
    let server = Server::start();
    server.add_user("alice", PASSWORD);
    let work = server.dir.path();
    let mail = work.join("mail");
    let inbox = mail.join("INBOX");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(inbox.join(sub)).expect("maildir");
    }
    // 200 messages locally, 150 on the server.
    for i in 0..200 {
        let body = format!(
            "From: local@example.net\r\nSubject: local {i}\r\nMessage-ID: <l{i}@example.net>\r\n\r\nlocal body {i}\r\n"
        );
        std::fs::write(inbox.join("cur").join(format!("{i}.local:2,S")), body).expect("write");
    }
    let mut c = Client::login(server.imaps, "alice", PASSWORD);
    for i in 0..150 {
        let body = format!(
            "From: remote@example.net\r\nSubject: remote {i}\r\nMessage-ID: <r{i}@example.net>\r\n\r\nremote body {i}\r\n"
        );
        c.append("INBOX", "", body.as_bytes()).ok();
    }
    let pass = work.join("pass");
    std::fs::write(&pass, PASSWORD).expect("pass");
    let cert = work.join("data/tls/cert.pem");
    let rc = work.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount test\nHost localhost\nPort {port}\nUser alice\nPassCmd \"cat {pass}\"\nSSLType IMAPS\nCertificateFile {cert}\n\n\
             IMAPStore remote\nAccount test\n\n\
             MaildirStore local\nPath {mail}/\nInbox {inbox}\nSubFolders Verbatim\n\n\
             Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Both\nSync All\nSyncState *\n",
            port = server.imaps.port(),
            pass = pass.display(),
            cert = cert.display(),
            mail = mail.display(),
            inbox = inbox.display(),
        ),
    )
    .expect("rc");

    let out = mbsync(&rc);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(maildir_count(&inbox), 350, "local has both sides");
    let r = c.command("STATUS INBOX (MESSAGES)").ok();
    assert!(r.untagged[0].contains("MESSAGES 350"), "{r:?}");
    let state_before = std::fs::read(inbox.join(".mbsyncstate")).unwrap_or_default();

    // A second run has nothing to do.
    let out = mbsync(&rc);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(maildir_count(&inbox), 350);
    let r = c.command("STATUS INBOX (MESSAGES)").ok();
    assert!(r.untagged[0].contains("MESSAGES 350"), "{r:?}");
    let state_after = std::fs::read(inbox.join(".mbsyncstate")).unwrap_or_default();
    let lines = |s: &[u8]| {
        String::from_utf8_lossy(s)
            .lines()
            .filter(|l| !l.starts_with("MaxPulledUid") && !l.starts_with("MaxPushedUid"))
            .count()
    };
    assert_eq!(
        lines(&state_before),
        lines(&state_after),
        "second run changed the sync state"
    );
}
