//! The `cpmstore` command line, black-box: exit statuses, JSON on stdout, one `error:`
//! line on stderr, secrets printed once and never logged.
//!
//! Needs the binary: `cargo build -p cpmstore-server` before `cargo test -p
//! cpmstore-tests` (see `cpmstore_tests::cpmstore_bin`). The subscriber session runs on
//! SQLite, and again on PostgreSQL when `CPMSTORE_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

use cpmstore_server::auth::credentials::{HashParams, Verifier};
use cpmstore_server::auth::secret::Secret;
use cpmstore_tests::{CliEnv, CliOutput, TempDatabase, block_on, postgres_url_or_skip};

/// Exit statuses of INTERFACES.md section 1.
const INTERNAL: i32 = 1;
const USAGE: i32 = 2;
const CONFLICT: i32 = 3;
const NOT_FOUND: i32 = 4;
const INVALID: i32 = 5;

/// Cheap argon2 parameters through the environment: fast debug-build tests, and proof
/// that `[auth]` reaches the stored credentials.
fn session_env(env: CliEnv) -> CliEnv {
    env.env("CPMSTORE_AUTH_ARGON2_M_KIB", "1024")
        .env("CPMSTORE_AUTH_ARGON2_T", "1")
}

fn strings(value: &Value) -> Vec<String> {
    let mut out: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string: {v}"))
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

/// Checks that a secret printed in the JSON appears exactly once in everything the
/// command wrote, and never on stderr (the log).
fn printed_once(out: &CliOutput, secret: &str) {
    let everything = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(
        everything.matches(secret).count(),
        1,
        "secret printed once:\n{out}"
    );
    assert!(!out.stderr.contains(secret), "secret on stderr:\n{out}");
}

/// Opens the store the commands used and checks a password against the stored
/// credentials with the server's own verifier.
fn stored_password_verifies(env: &CliEnv, user: &str, password: &str) -> bool {
    let url = env.storage_url();
    block_on(async move {
        let options = cpmstore_storage::OpenOptions {
            migrate: false,
            ..Default::default()
        };
        let store = cpmstore_storage::open(&url, &options).await.unwrap();
        let account = store.account_by_name(user).await.unwrap();
        let record = store.credentials(account.id).await.unwrap();
        let record = record.expect("a password is set");
        assert!(
            record
                .argon2_phc
                .starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "[auth] parameters reach the credentials"
        );
        let verifier = Verifier::new(HashParams::default(), 1);
        let ok = verifier
            .verify_password(Some(&record), &Secret::from(password))
            .await;
        store.close().await;
        ok
    })
}

/// The scripted provisioning session of a subscription system, on whatever storage
/// `env` points at.
fn subscriber_session(env: &CliEnv) {
    // add with a generated password and two addresses, written sloppily.
    // Logging at trace level, to catch a secret in the log.
    let out = env.run_with(
        &[
            "subscriber",
            "add",
            "alice",
            "--generate-password",
            "--address",
            "tel:+358-40-123 4567",
            "--address",
            "SIP:alice@IMS.Example.NET",
        ],
        None,
        &[("CPMSTORE_LOG", "trace")],
    );
    out.assert_code(0);
    let added = out.json();
    let password = added["password"]
        .as_str()
        .expect("generated password")
        .to_owned();
    assert_eq!(password.len(), 24, "{added}");
    printed_once(&out, &password);
    assert_eq!(added["username"], "alice");
    assert_eq!(added["status"], "active");
    assert_eq!(added["has_password"], true);
    assert_eq!(added["quota"], Value::Null);
    assert_eq!(
        strings(&added["addresses"]),
        ["sip:alice@ims.example.net", "tel:+358401234567"]
    );
    assert_eq!(
        strings(&added["mailboxes"]),
        [
            "Archive",
            "Drafts",
            "INBOX",
            "Junk",
            "RCSMessageStore",
            "Sent",
            "Trash"
        ]
    );
    assert!(stored_password_verifies(env, "alice", &password));

    // show: the same, without any secret.
    let out = env.run(&["subscriber", "show", "alice"]);
    out.assert_code(0);
    let shown = out.json();
    assert!(shown.get("password").is_none(), "{shown}");
    assert!(!out.stdout.contains(&password));
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["has_password"], true);
    assert_eq!(shown["psk_identities"], serde_json::json!([]));
    assert_eq!(shown["usage_bytes"], 0);
    assert_eq!(strings(&shown["addresses"]), strings(&added["addresses"]));

    // A subscriber without password, with a quota.
    let out = env.run(&["subscriber", "add", "bob", "--quota", "1000000"]);
    out.assert_code(0);
    let bob = out.json();
    assert_eq!(bob["has_password"], false);
    assert_eq!(bob["quota"], 1_000_000);
    assert!(bob.get("password").is_none());

    // Conflicts: the same name again; an address someone has.
    env.run(&["subscriber", "add", "alice"])
        .assert_error(CONFLICT);
    env.run(&[
        "subscriber",
        "add",
        "carol",
        "--address",
        "tel:+358401234567",
    ])
    .assert_error(CONFLICT);
    env.run(&["subscriber", "show", "carol"])
        .assert_error(NOT_FOUND);

    // set-password from stdin: one trailing CRLF is not part of it.
    let out = env.run_stdin(
        &["subscriber", "set-password", "alice", "--password-stdin"],
        b"correct horse battery\r\n",
    );
    out.assert_code(0);
    let changed = out.json();
    assert_eq!(changed["username"], "alice");
    assert_eq!(changed["has_password"], true);
    assert!(
        changed.get("password").is_none(),
        "a given password is not echoed"
    );
    assert!(!out.stdout.contains("correct horse") && !out.stderr.contains("correct horse"));
    assert!(stored_password_verifies(
        env,
        "alice",
        "correct horse battery"
    ));
    assert!(!stored_password_verifies(
        env,
        "alice",
        "correct horse battery\r"
    ));
    assert!(
        !stored_password_verifies(env, "alice", &password),
        "old password replaced"
    );
    assert_eq!(
        env.run(&["subscriber", "show", "alice"]).json()["has_password"],
        true
    );

    // set-password generated, for bob who had none.
    let out = env.run(&["subscriber", "set-password", "bob", "--generate-password"]);
    out.assert_code(0);
    let bob_password = out.json()["password"].as_str().unwrap().to_owned();
    printed_once(&out, &bob_password);
    assert_eq!(
        env.run(&["subscriber", "show", "bob"]).json()["has_password"],
        true
    );

    // set-psk generated, then given as hex on stdin (replacing it).
    let out = env.run(&[
        "subscriber",
        "set-psk",
        "alice",
        "--identity",
        "alice-phone",
        "--generate",
    ]);
    out.assert_code(0);
    let psk = out.json();
    let key = psk["psk_key_hex"]
        .as_str()
        .expect("generated key")
        .to_owned();
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    printed_once(&out, &key);
    assert_eq!(psk["identity"], "alice-phone");
    assert!(
        env.data_dir().join("psk.kek").is_file(),
        "KEK generated into data_dir"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(env.data_dir().join("psk.kek"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let shown = env.run(&["subscriber", "show", "alice"]).json();
    assert!(
        strings(&shown["psk_identities"]).contains(&"alice-phone".to_owned()),
        "{shown}"
    );

    let out = env.run_stdin(
        &[
            "subscriber",
            "set-psk",
            "alice",
            "--identity",
            "alice-tablet",
            "--key-hex-stdin",
        ],
        b"00112233445566778899aabbccddeeff\n",
    );
    out.assert_code(0);
    assert!(
        out.json().get("psk_key_hex").is_none(),
        "a given key is not echoed"
    );
    assert!(!out.stdout.contains("00112233445566778899aabbccddeeff"));
    let shown = env.run(&["subscriber", "show", "alice"]).json();
    assert!(
        strings(&shown["psk_identities"]).contains(&"alice-tablet".to_owned()),
        "{shown}"
    );

    // An identity belongs to one subscriber.
    env.run(&[
        "subscriber",
        "set-psk",
        "bob",
        "--identity",
        "alice-tablet",
        "--generate",
    ])
    .assert_error(CONFLICT);
    // A malformed key.
    env.run_stdin(
        &[
            "subscriber",
            "set-psk",
            "alice",
            "--identity",
            "x",
            "--key-hex-stdin",
        ],
        b"not hex",
    )
    .assert_error(INVALID);
    env.run_stdin(
        &[
            "subscriber",
            "set-psk",
            "alice",
            "--identity",
            "x",
            "--key-hex-stdin",
        ],
        b"0011",
    )
    .assert_error(INVALID);

    // disable / enable.
    let out = env.run(&["subscriber", "disable", "alice"]);
    out.assert_code(0);
    assert_eq!(out.json()["status"], "disabled");
    assert_eq!(
        env.run(&["subscriber", "show", "alice"]).json()["status"],
        "disabled"
    );
    let out = env.run(&["subscriber", "enable", "alice"]);
    out.assert_code(0);
    assert_eq!(out.json()["status"], "active");
    assert_eq!(
        env.run(&["subscriber", "show", "alice"]).json()["status"],
        "active"
    );

    // list: an array, by name.
    let out = env.run(&["subscriber", "list"]);
    out.assert_code(0);
    let list = out.json();
    let names: Vec<&str> = list
        .as_array()
        .expect("list is an array")
        .iter()
        .map(|s| s["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(list[1]["quota"], 1_000_000);

    // remove, then it is gone.
    let out = env.run(&["subscriber", "remove", "bob"]);
    out.assert_code(0);
    assert_eq!(
        out.json(),
        serde_json::json!({"username": "bob", "removed": true})
    );
    env.run(&["subscriber", "show", "bob"])
        .assert_error(NOT_FOUND);
    env.run(&["subscriber", "remove", "bob"])
        .assert_error(NOT_FOUND);
    // alice's address is still taken.
    env.run(&[
        "subscriber",
        "add",
        "bob",
        "--address",
        "sip:alice@ims.example.net",
    ])
    .assert_error(CONFLICT);

    // Unknown users.
    for args in [
        &["subscriber", "show", "nobody"][..],
        &["subscriber", "disable", "nobody"],
        &["subscriber", "enable", "nobody"],
        &["subscriber", "remove", "nobody"],
        &[
            "subscriber",
            "set-password",
            "nobody",
            "--generate-password",
        ],
        &[
            "subscriber",
            "set-psk",
            "nobody",
            "--identity",
            "n",
            "--generate",
        ],
    ] {
        let out = env.run(args);
        out.assert_error(NOT_FOUND);
        assert!(out.stderr.contains("nobody"), "{out}");
    }

    // Invalid input: usernames, passwords, addresses. Nothing is created.
    let long = "u".repeat(256);
    for user in ["", long.as_str(), "a\u{1}b", "a/b", "a b", ".dot"] {
        env.run(&["subscriber", "add", user, "--generate-password"])
            .assert_error(INVALID);
        env.run(&["subscriber", "show", user]).assert_error(INVALID);
    }
    env.run(&["subscriber", "add", &"u".repeat(255)])
        .assert_code(0);
    for empty in [&b""[..], b"\n", b"\r\n"] {
        env.run_stdin(&["subscriber", "add", "dave", "--password-stdin"], empty)
            .assert_error(INVALID);
    }
    env.run_stdin(
        &["subscriber", "set-password", "alice", "--password-stdin"],
        b"nul\0inside",
    )
    .assert_error(INVALID);
    env.run_stdin(
        &["subscriber", "set-password", "alice", "--password-stdin"],
        &[0xff, 0xfe],
    )
    .assert_error(INVALID);
    for address in [
        "mailto:dave@example.net",
        "tel:+358-40-abc",
        "sip:ims.example.net",
        "dave",
    ] {
        env.run(&["subscriber", "add", "dave", "--address", address])
            .assert_error(INVALID);
    }
    env.run(&["subscriber", "show", "dave"])
        .assert_error(NOT_FOUND);
    // alice still logs in with the password set above.
    assert!(stored_password_verifies(
        env,
        "alice",
        "correct horse battery"
    ));

    // remove alice: list shows who is left.
    env.run(&["subscriber", "remove", "alice"]).assert_code(0);
    env.run(&["subscriber", "show", "alice"])
        .assert_error(NOT_FOUND);
    let list = env.run(&["subscriber", "list"]).json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[test]
fn subscriber_session_sqlite() {
    let env = session_env(CliEnv::new());
    subscriber_session(&env);
    assert!(
        env.data_dir().join("cpmstore.db").is_file(),
        "database inside data_dir"
    );
}

#[test]
fn subscriber_session_postgres() {
    let Some(admin_url) = postgres_url_or_skip() else {
        return;
    };
    let mut db = TempDatabase::create(&admin_url, "cpmstore_cli");
    let env = session_env(CliEnv::new()).env("CPMSTORE_STORAGE_URL", &db.url);
    let out = env.run(&["migrate"]);
    out.assert_code(0);
    assert_eq!(out.json()["migrated"], true);
    subscriber_session(&env);
    db.drop_now();
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let env = CliEnv::new();
    let out = env.run(&["migrate"]);
    out.assert_code(0);
    let json = out.json();
    assert_eq!(json["migrated"], true);
    let url = json["url"].as_str().unwrap();
    assert!(
        url.starts_with("sqlite://") && url.ends_with("cpmstore.db"),
        "{json}"
    );
    assert!(env.data_dir().join("cpmstore.db").is_file());
    // Idempotent.
    env.run(&["migrate"]).assert_code(0);
}

#[test]
fn unreachable_postgres_names_the_host_and_hides_the_password() {
    let env = CliEnv::new().env(
        "CPMSTORE_STORAGE_URL",
        "postgres://cpm:SeCrEtPw@127.0.0.1:1/x",
    );
    for args in [
        &["subscriber", "list"][..],
        &["subscriber", "show", "alice"],
        &["subscriber", "add", "alice", "--generate-password"],
        &["migrate"],
    ] {
        let out = env.run(args);
        out.assert_error(INTERNAL);
        assert!(out.stderr.contains("127.0.0.1"), "names the host:\n{out}");
        assert!(
            !out.stderr.contains("SeCrEtPw"),
            "hides the password:\n{out}"
        );
    }
    // Invalid input is reported as such even when storage is down.
    env.run(&["subscriber", "show", "a/b"])
        .assert_error(INVALID);
}

#[test]
fn check_config_shows_the_effective_config_without_secrets() {
    let env = CliEnv::new()
        .env(
            "CPMSTORE_STORAGE_URL",
            "postgres://cpm:SeCrEtPw@db.example.net/cpm",
        )
        .env("CPMSTORE_LIMITS_MAX_LITERAL_BYTES", "1234")
        .env("CPMSTORE_IMAP_LISTEN", "[]");
    let config = env.write_file(
        "c.toml",
        "[imaps]\nlisten = [\"127.0.0.1:9993\", \"[::1]:9993\"]\n",
    );
    let out = env.run(&["--config", config.to_str().unwrap(), "check-config"]);
    out.assert_code(0);
    assert!(!out.stdout.contains("SeCrEtPw"), "{out}");
    let json = out.json();
    assert_eq!(json["storage"]["url"], "postgres://cpm@db.example.net/cpm");
    assert_eq!(json["limits"]["max_literal_bytes"], 1234);
    assert_eq!(json["imap"]["listen"], serde_json::json!([]));
    assert_eq!(
        json["imaps"]["listen"],
        serde_json::json!(["127.0.0.1:9993", "[::1]:9993"])
    );
    assert_eq!(json["psk"]["listen"], serde_json::json!(["127.0.0.1:2993"]));

    // Defaults without any config: SQLite inside the data directory.
    let env = CliEnv::new();
    let json = env.run(&["check-config"]).json();
    let url = json["storage"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("sqlite://") && url.contains("data"),
        "{json}"
    );
    // CPMSTORE_CONFIG works like --config.
    let config = env.write_file("c.toml", "[push]\ndeliver_to = \"Pushes\"\n");
    let json = env
        .run_with(
            &["check-config"],
            None,
            &[("CPMSTORE_CONFIG", config.to_str().unwrap())],
        )
        .json();
    assert_eq!(json["push"]["deliver_to"], "Pushes");
}

#[test]
fn unknown_config_keys_are_named() {
    let env = CliEnv::new();
    let config = env.write_file("bad.toml", "[storage]\nbogus_key = 1\n");
    let out = env.run(&["--config", config.to_str().unwrap(), "check-config"]);
    out.assert_error(INVALID);
    assert!(out.stderr.contains("storage.bogus_key"), "{out}");

    let config = env.write_file("bad2.toml", "colour = \"red\"\n");
    let out = env.run(&["--config", config.to_str().unwrap(), "subscriber", "list"]);
    out.assert_error(INVALID);
    assert!(out.stderr.contains("colour"), "{out}");

    let out = env.run_with(
        &["check-config"],
        None,
        &[("CPMSTORE_IMAP_LISTN", "127.0.0.1:1")],
    );
    out.assert_error(INVALID);
    assert!(out.stderr.contains("CPMSTORE_IMAP_LISTN"), "{out}");

    let out = env.run(&["--config", "/nonexistent/cpmstore.toml", "check-config"]);
    out.assert_error(INTERNAL);
    assert!(out.stderr.contains("/nonexistent/cpmstore.toml"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let env = CliEnv::new();
    for args in [
        &[][..],
        &["bogus"],
        &["subscriber"],
        &["subscriber", "add"],
        &["subscriber", "add", "alice", "--bogus"],
        &[
            "subscriber",
            "add",
            "alice",
            "--password-stdin",
            "--generate-password",
        ],
        &["subscriber", "add", "alice", "--quota", "lots"],
        &["subscriber", "add", "alice", "--password", "secret"],
        &["subscriber", "set-password", "alice"],
        &["subscriber", "set-psk", "alice", "--generate"],
        &["subscriber", "set-psk", "alice", "--identity", "i"],
        &[
            "subscriber",
            "set-psk",
            "alice",
            "--identity",
            "i",
            "--generate",
            "--key-hex-stdin",
        ],
        &["--log-format", "xml", "check-config"],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, USAGE, "{args:?}:\n{out}");
        assert!(out.stdout.is_empty(), "{args:?}:\n{out}");
    }
    let out = env.run(&["--help"]);
    out.assert_code(0);
    assert!(out.stdout.contains("subscriber"));
    env.run(&["subscriber", "add", "--help"]).assert_code(0);
}

#[test]
fn serve_is_wired() {
    // Until the server lands, `serve` says so; afterwards this only checks that a bad
    // config stops it before it binds anything.
    let env = CliEnv::new();
    let config = env.write_file("bad.toml", "[imap]\nlisten = \"nowhere\"\n");
    let out = env.run(&["--config", config.to_str().unwrap(), "serve"]);
    out.assert_error(INVALID);
    assert!(out.stderr.contains("imap.listen"), "{out}");
}
