//! The benchmark programs still run: each is started with tiny arguments and must exit
//! 0 and print its figures. (The numbers themselves are measured by hand on a release
//! build and recorded in docs/benchmarks.md; this only keeps the programs from rotting,
//! as happened once when the per-account connection cap (50) made `imap-bench` fail:
//! 60 idle connections of one account here would show it again.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

fn run(exe: &str, args: &[&str]) -> String {
    let out = Command::new(exe)
        .args(args)
        .env("CPMSTORE_TEST_BIN", cpmstore_tests::cpmstore_bin())
        .output()
        .unwrap_or_else(|e| panic!("run {exe}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{exe} {args:?} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn imap_bench_runs() {
    let out = run(
        env!("CARGO_BIN_EXE_imap-bench"),
        &["2", "1", "60", "2", "1"],
    );
    assert!(out.contains("APPEND"), "{out}");
    assert!(out.contains("memory after load: server RSS"), "{out}");
    assert!(
        out.contains("memory: server RSS") && out.contains("60 idle authenticated"),
        "{out}"
    );
}

#[test]
fn push_bench_runs() {
    let out = run(env!("CARGO_BIN_EXE_push-bench"), &["2", "1", "2"]);
    assert!(!out.trim().is_empty(), "prints its figures");
}

#[test]
fn auth_bench_runs() {
    let out = run(env!("CARGO_BIN_EXE_auth_bench"), &["10", "2", "5"]);
    assert!(!out.trim().is_empty(), "prints its figures");
}

#[test]
fn conn_mem_bench_runs() {
    let out = run(env!("CARGO_BIN_EXE_conn-mem-bench"), &["20", "10"]);
    for shape in [
        "session",
        "session-idle",
        "plain-idle",
        "plain-partial",
        "tls-no-handshake",
        "tls-hello",
        "tls-big-hello",
        "tls-long-hello",
        "tls-partial",
        "starttls-idle",
        "psk-no-handshake",
        "psk-hello",
        "psk-big-hello",
        "psk-long-hello",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{shape} ")) && l.contains("KiB per connection"))
            .unwrap_or_else(|| panic!("{shape} measured: {out}"));
        // Only a handshake larger than the server's limit is refused.
        let closed = if shape.ends_with("big-hello") {
            "10 closed"
        } else {
            "0 closed"
        };
        assert!(line.contains(closed), "{closed} expected: {line}");
    }
}

#[test]
fn cpm_bench_runs() {
    let out = run(env!("CARGO_BIN_EXE_cpm-bench"), &["30", "5", "2", "10"]);
    assert!(
        out.contains("deposits/s")
            && out.contains("UID SEARCH HEADER IMDN-Message-ID <id>, 5 searches: median"),
        "{out}"
    );
}
