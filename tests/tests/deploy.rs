//! The deploy files stay valid: `systemd-analyze verify` accepts the unit, and the
//! example production config passes `cpmstore check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::Command;

use cpmstore_tests::cpmstore_bin;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn systemd_unit_verifies() {
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "systemd-analyze missing; run scripts/install-test-deps.sh"
    );
    let unit = std::fs::read_to_string(deploy("cpmstore.service")).unwrap();
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("NoNewPrivileges=yes"));
    assert!(unit.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"));
    // Point ExecStart at the binary we built, so verify can check it exists.
    let bin = cpmstore_bin();
    let unit = unit.replace("/usr/local/bin/cpmstore", bin.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpmstore.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify warns on stderr without failing for some problems; none are expected.
    assert!(
        !stderr.contains("cpmstore.service"),
        "warnings about the unit:\n{stderr}"
    );
}

#[test]
fn example_production_config_is_valid() {
    let out = Command::new(cpmstore_bin())
        .arg("--config")
        .arg(deploy("cpmstore.toml"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["imap"]["listen"][0], "0.0.0.0:143");
    assert_eq!(json["imaps"]["listen"][0], "0.0.0.0:993");
}
