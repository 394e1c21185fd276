//! `cpmstore whitelist load|show|clear|check`, black-box through the real binary
//! (INTERFACES.md 1 and 6.1-6.2): every provisioning sample through XML and WBXML,
//! accepted and rejected origins, malformed documents rejected whole (exit 5) with the
//! previous whitelist untouched, contexts, clear.
//!
//! Needs the binary: `cargo build -p cpmstore-server` before `cargo test -p
//! cpmstore-tests`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

use cpmstore_tests::{CliEnv, CliOutput};

/// The shared samples, with their expected results in the README beside them.
const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/provisioning"
);
/// WBXML of the same samples made by another encoder (libwbxml's xml2wbxml, with a
/// string table).
const LIBWBXML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../server/src/push/testdata");

const NOT_FOUND: i32 = 4;
const INVALID: i32 = 5;

fn sample(name: &str) -> String {
    let path = format!("{SAMPLES}/{name}");
    assert!(
        std::path::Path::new(&path).is_file(),
        "missing sample {path}"
    );
    path
}

fn libwbxml(name: &str) -> String {
    let path = format!("{LIBWBXML}/{name}");
    assert!(std::path::Path::new(&path).is_file(), "missing {path}");
    path
}

/// A fresh data directory with subscriber `alice`.
fn env_with_alice() -> CliEnv {
    let env = CliEnv::new()
        .env("CPMSTORE_AUTH_ARGON2_M_KIB", "1024")
        .env("CPMSTORE_AUTH_ARGON2_T", "1");
    env.run(&[
        "subscriber",
        "add",
        "alice",
        "--address",
        "tel:+358401234567",
    ])
    .assert_code(0);
    env
}

fn load(env: &CliEnv, file: &str, extra: &[&str]) -> CliOutput {
    let mut args = vec!["whitelist", "load", "alice", file];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// `whitelist check alice FLAG VALUE [extra]`, asserting exit 0; the JSON.
fn check(env: &CliEnv, flag: &str, value: &str, extra: &[&str]) -> Value {
    let mut args = vec!["whitelist", "check", "alice", flag, value];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    out.assert_code(0);
    out.json()
}

/// Asserts the decision for one origin: accepted or not, and the value of the entry
/// that matched.
fn assert_decision(env: &CliEnv, flag: &str, value: &str, matched: Option<&str>) {
    let v = check(env, flag, value, &[]);
    assert_eq!(v["provisioned"], true, "{flag} {value}: {v}");
    match matched {
        Some(entry) => {
            assert_eq!(v["accepted"], true, "{flag} {value} accepted: {v}");
            assert_eq!(v["reason"], "matched", "{v}");
            assert_eq!(v["matched"]["value"], entry, "{flag} {value}: {v}");
        }
        None => {
            assert_eq!(v["accepted"], false, "{flag} {value} rejected: {v}");
            assert_eq!(v["reason"], "no_match", "{v}");
            assert_eq!(v["matched"], Value::Null, "{v}");
        }
    }
}

/// The entries of the default context as `(kind, value, role)`, in stored order.
fn shown_entries(env: &CliEnv) -> Vec<(String, String, String)> {
    let out = env.run(&["whitelist", "show", "alice"]);
    out.assert_code(0);
    let v = out.json();
    let Some(default) = v["whitelists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["context"] == "")
    else {
        return Vec::new();
    };
    default["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (s("kind"), s("value"), s("role"))
        })
        .collect()
}

fn triple(kind: &str, value: &str, role: &str) -> (String, String, String) {
    (kind.into(), value.into(), role.into())
}

/// Loads `file` (asserting success and the entry count) and returns the load's JSON.
fn load_ok(env: &CliEnv, file: &str, extra: &[&str], count: usize) -> Value {
    let out = load(env, file, extra);
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["username"], "alice", "{v}");
    assert_eq!(v["count"], count, "{v}");
    assert_eq!(v["entries"].as_array().unwrap().len(), count, "{v}");
    v
}

#[test]
fn seed_example_via_xml_and_wbxml() {
    for (file, format) in [
        (sample("seed-example.xml"), "auto"),
        (sample("seed-example.xml"), "xml"),
        (sample("seed-example.wbxml"), "auto"),
        (sample("seed-example.wbxml"), "wbxml"),
        (libwbxml("seed-example.strtab.wbxml"), "wbxml"),
        (libwbxml("seed-example.ws-v11.wbxml"), "auto"),
    ] {
        let env = env_with_alice();
        load_ok(&env, &file, &["--format", format], 3);
        let mut entries = shown_entries(&env);
        entries.sort();
        assert_eq!(
            entries,
            [
                triple("e164", "+35809503401", "smsc"),
                triple("ip", "215.221.51.5", "ppg"),
                triple("uri", "sip:ppg@atlanta.com", "ppg"),
            ],
            "{file}"
        );
        assert_decision(&env, "--ppg", "215.221.51.5", Some("215.221.51.5"));
        assert_decision(&env, "--ppg", "::ffff:215.221.51.5", Some("215.221.51.5"));
        assert_decision(&env, "--ppg", "215.221.51.6", None);
        assert_decision(&env, "--smsc", "+35809503401", Some("+35809503401"));
        assert_decision(&env, "--smsc", "+3580950340", None);
        assert_decision(
            &env,
            "--sip-pai",
            "\"PPG\" <sip:ppg@ATLANTA.com>",
            Some("sip:ppg@atlanta.com"),
        );
        assert_decision(&env, "--sip-pai", "<sip:other@atlanta.com>", None);
    }
}

#[test]
fn loopback_ppg_via_xml_and_wbxml() {
    for file in [
        sample("loopback-ppg.xml"),
        sample("loopback-ppg.wbxml"),
        libwbxml("loopback-ppg.strtab.wbxml"),
    ] {
        let env = env_with_alice();
        let v = load_ok(&env, &file, &[], 4);
        // localhost resolved at load: 127.0.0.1 at least (::1 where /etc/hosts has it).
        let fqdn = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "fqdn")
            .unwrap_or_else(|| panic!("no fqdn entry: {v}"));
        assert_eq!(fqdn["value"], "localhost");
        assert!(
            fqdn["resolved"]
                .as_array()
                .unwrap()
                .contains(&Value::from("127.0.0.1")),
            "{v}"
        );
        assert_eq!(v["unresolved"], Value::Array(vec![]), "{v}");
        assert_eq!(
            shown_entries(&env),
            [
                triple("ip", "127.0.0.1", "ppg"),
                triple("fqdn", "localhost", "ppg"),
                triple("e164", "+358", "smsc"),
                triple("uri", "sip:ppg@operator.example", "ppg"),
            ],
            "{file}"
        );
        assert_decision(&env, "--ppg", "127.0.0.1", Some("127.0.0.1"));
        assert_decision(&env, "--ppg", "::ffff:127.0.0.1", Some("127.0.0.1"));
        assert_decision(&env, "--ppg", "10.1.2.3", None);
        assert_decision(&env, "--smsc", "+358401234567", Some("+358"));
        assert_decision(&env, "--smsc", "358401234567;ton=1;npi=1", Some("+358"));
        assert_decision(&env, "--smsc", "+4479123", None);
        assert_decision(
            &env,
            "--sip-pai",
            "<sip:ppg@operator.example>, <tel:+358401234567>",
            Some("sip:ppg@operator.example"),
        );
        assert_decision(&env, "--sip-pai", "<sip:ppg@elsewhere.example>", None);
    }
}

#[test]
fn twelve_entries_via_xml_and_wbxml() {
    for file in [
        sample("twelve-entries.xml"),
        sample("twelve-entries.wbxml"),
        libwbxml("twelve-entries.strtab.wbxml"),
    ] {
        let env = env_with_alice();
        load_ok(&env, &file, &[], 14);
        let entries = shown_entries(&env);
        let ips: Vec<&str> = entries
            .iter()
            .filter(|(k, _, r)| k == "ip" && r == "ppg")
            .map(|(_, v, _)| v.as_str())
            .collect();
        assert_eq!(ips.len(), 12, "{file}: {entries:?}");
        assert_eq!(ips.iter().filter(|ip| ip.contains(':')).count(), 4);
        let smscs: Vec<&str> = entries
            .iter()
            .filter(|(k, _, r)| k == "e164" && r == "smsc")
            .map(|(_, v, _)| v.as_str())
            .collect();
        assert_eq!(smscs, ["+4479", "+35840"], "{file}");
        for i in 1..=8 {
            let ip = format!("192.0.2.{i}");
            assert_decision(&env, "--ppg", &ip, Some(&ip));
        }
        for i in 1..=4 {
            let ip = format!("2001:db8::{i}");
            assert_decision(&env, "--ppg", &ip, Some(&ip));
        }
        assert_decision(
            &env,
            "--ppg",
            "2001:0db8:0000:0000:0000:0000:0000:0003",
            Some("2001:db8::3"),
        );
        assert_decision(&env, "--ppg", "192.0.2.9", None);
        assert_decision(&env, "--ppg", "2001:db8::5", None);
        assert_decision(&env, "--smsc", "+447911123456", Some("+4479"));
        assert_decision(&env, "--smsc", "+358401234567", Some("+35840"));
        assert_decision(&env, "--smsc", "+358501234567", None);
        assert_decision(&env, "--sip-pai", "<sip:ppg@operator.example>", None);
    }
}

#[test]
fn empty_whitelist_rejects_everything() {
    for file in [
        sample("empty-whitelist.xml"),
        libwbxml("empty-whitelist.strtab.wbxml"),
    ] {
        let env = env_with_alice();
        load_ok(&env, &file, &[], 0);
        let out = env.run(&["whitelist", "show", "alice"]);
        out.assert_code(0);
        let v = out.json();
        assert_eq!(v["provisioned"], true, "{v}");
        assert_eq!(v["whitelists"][0]["context"], "", "{v}");
        assert_eq!(v["whitelists"][0]["count"], 0, "{v}");
        assert_decision(&env, "--ppg", "127.0.0.1", None);
        assert_decision(&env, "--smsc", "+358401234567", None);
        assert_decision(&env, "--sip-pai", "<sip:ppg@operator.example>", None);
    }
}

#[test]
fn not_provisioned_accepts_everything() {
    let env = env_with_alice();
    let out = env.run(&["whitelist", "show", "alice"]);
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["provisioned"], false, "{v}");
    assert_eq!(v["whitelists"], Value::Array(vec![]), "{v}");
    for (flag, value) in [
        ("--ppg", "203.0.113.9"),
        ("--smsc", "+15551234"),
        ("--sip-pai", "<sip:anyone@anywhere.example>"),
    ] {
        let v = check(&env, flag, value, &[]);
        assert_eq!(v["accepted"], true, "{v}");
        assert_eq!(v["provisioned"], false, "{v}");
        assert_eq!(v["reason"], "not_provisioned", "{v}");
        assert_eq!(v["matched"], Value::Null, "{v}");
    }
    let v = check(&env, "--ppg", "203.0.113.9", &[]);
    assert_eq!(v["origin"]["type"], "ppg", "{v}");
    assert_eq!(v["origin"]["value"], "203.0.113.9", "{v}");
}

/// Loads the loopback whitelist, then tries to replace it with `bad`; the load must
/// fail with exit 5 and a message containing `expected`, and the loopback entries
/// must still be there.
fn rejected_whole(bad: &str, extra_env: &[(&str, &str)], expected: &str) {
    let env = env_with_alice();
    load_ok(&env, &sample("loopback-ppg.xml"), &[], 4);
    let before = shown_entries(&env);
    let out = env.run_with(&["whitelist", "load", "alice", bad], None, extra_env);
    out.assert_error(INVALID);
    assert!(
        out.stderr.contains(expected),
        "message names the problem ({expected}):\n{out}"
    );
    assert_eq!(shown_entries(&env), before, "previous whitelist untouched");
    assert_decision(&env, "--ppg", "127.0.0.1", Some("127.0.0.1"));
}

#[test]
fn malformed_xml_is_rejected_whole() {
    rejected_whole(&sample("malformed.xml"), &[], "line 4");
}

#[test]
fn dangling_proxy_is_rejected_whole() {
    rejected_whole(&sample("dangling-proxy.xml"), &[], "missing.proxy");
}

#[test]
fn too_many_entries_is_rejected_whole() {
    rejected_whole(
        &sample("twelve-entries.xml"),
        &[("CPMSTORE_PUSH_MAX_WHITELIST_ENTRIES", "10")],
        "max_whitelist_entries",
    );
}

#[test]
fn malformed_wbxml_is_rejected_whole() {
    let env = CliEnv::new();
    let good = std::fs::read(sample("loopback-ppg.wbxml")).unwrap();
    let truncated = env.dir.path().join("truncated.wbxml");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    rejected_whole(truncated.to_str().unwrap(), &[], "byte offset");
    // XML read as WBXML and the other way round.
    let env = env_with_alice();
    load(&env, &sample("loopback-ppg.xml"), &["--format", "wbxml"]).assert_error(INVALID);
    load(&env, &sample("loopback-ppg.wbxml"), &["--format", "xml"]).assert_error(INVALID);
    assert_eq!(shown_entries(&env), []);
}

#[test]
fn document_from_stdin() {
    let env = env_with_alice();
    let document = std::fs::read(sample("loopback-ppg.wbxml")).unwrap();
    let out = env.run_stdin(&["whitelist", "load", "alice", "-"], &document);
    out.assert_code(0);
    assert_eq!(out.json()["count"], 4, "{out}");
    let document = std::fs::read(sample("seed-example.xml")).unwrap();
    let out = env.run_stdin(
        &["whitelist", "load", "alice", "-", "--format", "xml"],
        &document,
    );
    out.assert_code(0);
    assert_eq!(out.json()["count"], 3, "{out}");
    assert_decision(&env, "--ppg", "127.0.0.1", None);
    assert_decision(&env, "--ppg", "215.221.51.5", Some("215.221.51.5"));
}

#[test]
fn contexts_are_separate_and_clear_removes_them() {
    const PROV: &str = "http://prov.operator.example/push";
    let env = env_with_alice();
    load_ok(&env, &sample("loopback-ppg.xml"), &[], 4);
    let v = load_ok(&env, &sample("seed-example.wbxml"), &["--context", PROV], 3);
    assert_eq!(v["context"], PROV, "{v}");

    // Each context is judged by its own whitelist.
    assert_decision(&env, "--ppg", "127.0.0.1", Some("127.0.0.1"));
    assert_decision(&env, "--ppg", "215.221.51.5", None);
    let v = check(&env, "--ppg", "215.221.51.5", &["--context", PROV]);
    assert_eq!(
        (&v["accepted"], &v["context"]),
        (&Value::from(true), &Value::from(PROV))
    );
    let v = check(&env, "--ppg", "127.0.0.1", &["--context", PROV]);
    assert_eq!(v["accepted"], false, "{v}");
    // A context with nothing provisioned is refused, even for an origin another
    // context trusts: alice is provisioned, and no whitelist of hers lets it in.
    for origin in ["192.0.2.99", "127.0.0.1", "215.221.51.5"] {
        let v = check(
            &env,
            "--ppg",
            origin,
            &["--context", "http://other.example/"],
        );
        assert_eq!(
            (&v["accepted"], &v["reason"], &v["provisioned"]),
            (
                &Value::from(false),
                &Value::from("unknown_context"),
                &Value::from(false)
            ),
            "{origin}: {v}"
        );
    }

    let out = env.run(&["whitelist", "show", "alice"]);
    let v = out.json();
    let contexts: Vec<&str> = v["whitelists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["context"].as_str().unwrap())
        .collect();
    assert_eq!(contexts, ["", PROV], "{v}");

    // Clearing one context leaves the other.
    let out = env.run(&["whitelist", "clear", "alice", "--context", PROV]);
    out.assert_code(0);
    assert_eq!(out.json()["cleared"], serde_json::json!([PROV]), "{out}");
    let v = check(&env, "--ppg", "127.0.0.1", &["--context", PROV]);
    assert_eq!(
        (&v["accepted"], &v["reason"]),
        (&Value::from(false), &Value::from("unknown_context")),
        "{v}"
    );
    assert_decision(&env, "--ppg", "10.9.9.9", None);
    env.run(&["whitelist", "clear", "alice", "--context", PROV])
        .assert_error(NOT_FOUND);

    // Reloading replaces; clearing all makes the subscriber not provisioned.
    load_ok(
        &env,
        &sample("twelve-entries.xml"),
        &["--context", PROV],
        14,
    );
    let out = env.run(&["whitelist", "clear", "alice"]);
    out.assert_code(0);
    assert_eq!(
        out.json()["cleared"],
        serde_json::json!(["", PROV]),
        "{out}"
    );
    let out = env.run(&["whitelist", "show", "alice"]);
    assert_eq!(out.json()["provisioned"], false, "{out}");
    let v = check(&env, "--ppg", "10.9.9.9", &[]);
    assert_eq!(
        (&v["accepted"], &v["reason"]),
        (&Value::from(true), &Value::from("not_provisioned"))
    );
    // Clearing nothing is fine.
    let out = env.run(&["whitelist", "clear", "alice"]);
    out.assert_code(0);
    assert_eq!(out.json()["cleared"], serde_json::json!([]), "{out}");
}

#[test]
fn only_a_named_context_refuses_pushes_naming_none() {
    const PROV: &str = "http://prov.operator.example/push";
    let env = env_with_alice();
    load_ok(
        &env,
        &sample("twelve-entries.xml"),
        &["--context", PROV],
        14,
    );
    // The named context decides its own pushes.
    let v = check(&env, "--ppg", "192.0.2.1", &["--context", PROV]);
    assert_eq!(
        (&v["accepted"], &v["reason"], &v["provisioned"]),
        (
            &Value::from(true),
            &Value::from("matched"),
            &Value::from(true)
        ),
        "{v}"
    );
    // No context named: the default context has no whitelist, alice has one
    // elsewhere, and this push matches none of her provisioning.
    let v = check(&env, "--ppg", "192.0.2.1", &[]);
    assert_eq!(
        (&v["accepted"], &v["reason"], &v["provisioned"]),
        (
            &Value::from(false),
            &Value::from("unknown_context"),
            &Value::from(false)
        ),
        "{v}"
    );
    assert_eq!(v["context"], "", "{v}");
    // Cleared: not provisioned anywhere, every push accepted again.
    env.run(&["whitelist", "clear", "alice"]).assert_code(0);
    let v = check(&env, "--ppg", "192.0.2.1", &["--context", PROV]);
    assert_eq!(
        (&v["accepted"], &v["reason"]),
        (&Value::from(true), &Value::from("not_provisioned")),
        "{v}"
    );
}

#[test]
fn errors_and_exit_classes() {
    let env = env_with_alice();
    let loopback = sample("loopback-ppg.xml");
    // Unknown subscriber: 4, for every command.
    for args in [
        vec!["whitelist", "load", "bob", loopback.as_str()],
        vec!["whitelist", "show", "bob"],
        vec!["whitelist", "clear", "bob"],
        vec!["whitelist", "check", "bob", "--ppg", "127.0.0.1"],
    ] {
        env.run(&args).assert_error(NOT_FOUND);
    }
    // The document is judged before the subscriber: a bad one is 5 even for bob.
    env.run(&["whitelist", "load", "bob", &sample("malformed.xml")])
        .assert_error(INVALID);
    // Bad origins: 5.
    for (flag, value) in [
        ("--ppg", "ppg.example"),
        ("--smsc", "+358;colour=blue"),
        ("--smsc", "not-a-number"),
        ("--sip-pai", "mailto:x@example.com"),
    ] {
        env.run(&["whitelist", "check", "alice", flag, value])
            .assert_error(INVALID);
    }
    // Usage: 2 (no origin, two origins, unknown format).
    for args in [
        vec!["whitelist", "check", "alice"],
        vec![
            "whitelist",
            "check",
            "alice",
            "--ppg",
            "127.0.0.1",
            "--smsc",
            "+358",
        ],
        vec![
            "whitelist",
            "load",
            "alice",
            loopback.as_str(),
            "--format",
            "json",
        ],
    ] {
        let out = env.run(&args);
        out.assert_code(2);
    }
    // A missing file: an I/O failure, 1.
    env.run(&["whitelist", "load", "alice", "/nonexistent/doc.xml"])
        .assert_error(1);
    // Nothing was loaded by any of this.
    assert_eq!(
        env.run(&["whitelist", "show", "alice"]).json()["provisioned"],
        false
    );
}
