//! Authentication end to end: PSK-TLS with `openssl s_client` (LOGIN and SASL
//! EXTERNAL, wrong keys, keys changed while running), SCRAM-SHA-256(-PLUS) with
//! Python's scramp and with a Rust client for `tls-exporter`, where passwords may travel,
//! guessing protection, and rehash on login. `scripts/install-test-deps.sh` installs
//! openssl and scramp; a missing tool fails the test rather than skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cpmstore_tests::auth_client::{AuthClient, Scram, Tls};
use cpmstore_tests::imap_client::Client;
use cpmstore_tests::psk_client::{SClient, psk_login_works};
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip, require};

const PASSWORD: &str = "auth pass 7";

// Throwaway test keys. `openssl s_client -psk` takes the key in argv (visible in `ps`):
// that is the tool's interface, acceptable here only because these keys protect
// nothing. cpmstore itself never takes a key in argv (`--key-hex-stdin`).
const KEY_A: &str = "00112233445566778899aabbccddeeff";
const KEY_B: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

fn psk_server() -> Server {
    psk_server_with(ServerOptions::default())
}

fn psk_server_with(options: ServerOptions) -> Server {
    let server = Server::start_with(ServerOptions {
        psk: true,
        ..options
    });
    server.add_user("alice", PASSWORD);
    server.add_user("bob", "bob's password");
    set_psk(&server, "alice", "alice-phone", KEY_A);
    // The CLI is another process: the server notices at its next reload (2 s).
    let start = Instant::now();
    while !psk_login_works(server.psk.unwrap(), "-tls1_3", KEY_A, "alice-phone") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "PSK not loaded within 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn set_psk(server: &Server, user: &str, identity: &str, key: &str) {
    let out = server.cli(
        &[
            "subscriber",
            "set-psk",
            user,
            "--identity",
            identity,
            "--key-hex-stdin",
        ],
        key,
    );
    assert!(
        out.status.success(),
        "set-psk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cli_ok(server: &Server, args: &[&str]) {
    let out = server.cli(args, "");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// No password or key in the server's log.
fn assert_no_secrets(server: &Server, secrets: &[&str]) {
    let log = server.log_text();
    for secret in secrets {
        assert!(!log.contains(secret), "the log shows a secret");
    }
}

#[test]
fn psk_s_client_tls12_and_tls13_login_and_external() {
    let server = psk_server();
    let addr = server.psk.expect("psk listener");
    for version in ["-tls1_2", "-tls1_3"] {
        // AUTHENTICATE EXTERNAL: the PSK names the subscriber.
        let mut s = SClient::spawn(addr, version, KEY_A, "alice-phone");
        let greeting = s.greeting().expect("greeting over PSK-TLS");
        assert!(greeting.contains("AUTH=EXTERNAL"), "{greeting}");
        assert!(greeting.contains("AUTH=PLAIN"), "{greeting}");
        assert!(!greeting.contains("LOGINDISABLED"), "{greeting}");
        assert_eq!(
            greeting.contains("AUTH=SCRAM-SHA-256-PLUS"),
            version == "-tls1_3",
            "-PLUS only where tls-exporter exists: {greeting}"
        );
        let ok = s.command("a", "AUTHENTICATE EXTERNAL =");
        assert!(ok.starts_with("a OK"), "{version}: {ok}");
        let select = s.command("b", "SELECT INBOX");
        assert!(select.starts_with("b OK"), "{select}");
        s.command("c", "LOGOUT");
        let stderr = s.finish();
        let expected = if version == "-tls1_2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            !stderr.contains("Ciphersuite: PSK-"),
            "plain PSK is off: {stderr}"
        );

        // EXTERNAL with the subscriber's own name as authzid, after a continuation.
        let mut s = SClient::spawn(addr, version, KEY_A, "alice-phone");
        s.greeting().unwrap();
        s.send_line("a AUTHENTICATE EXTERNAL");
        assert_eq!(s.line(Duration::from_secs(10)).as_deref(), Some("+"));
        s.send_line("YWxpY2U="); // base64("alice")
        let ok = s.tagged("a");
        assert!(ok.starts_with("a OK"), "{ok}");
        s.finish();

        // An authzid naming anyone else is refused.
        let mut s = SClient::spawn(addr, version, KEY_A, "alice-phone");
        s.greeting().unwrap();
        let no = s.command("a", "AUTHENTICATE EXTERNAL Ym9i"); // base64("bob")
        assert_eq!(no, "a NO [AUTHENTICATIONFAILED] Authentication failed.");
        s.finish();

        // LOGIN and PLAIN are allowed: the channel is protected.
        let mut s = SClient::spawn(addr, version, KEY_A, "alice-phone");
        s.greeting().unwrap();
        let ok = s.command("a", &format!("LOGIN alice \"{PASSWORD}\""));
        assert!(ok.starts_with("a OK"), "{ok}");
        s.finish();
        let mut s = SClient::spawn(addr, version, KEY_A, "alice-phone");
        s.greeting().unwrap();
        let plain = base64_encode(b"\0bob\0bob's password");
        let ok = s.command("a", &format!("AUTHENTICATE PLAIN {plain}"));
        assert!(ok.starts_with("a OK"), "{ok}");
        s.finish();
    }
    assert_no_secrets(&server, &[PASSWORD, KEY_A, "bob's password"]);
}

#[test]
fn psk_wrong_key_or_unknown_identity_fail_the_handshake_alike() {
    let server = psk_server();
    let addr = server.psk.unwrap();
    let wrong_key = "00112233445566778899aabbccddeefe";
    for version in ["-tls1_2", "-tls1_3"] {
        let alert = |key: &str, identity: &str| {
            let s = SClient::spawn(addr, version, key, identity);
            assert_eq!(s.greeting(), None, "{version} {identity}: no greeting");
            let stderr = s.finish();
            // "...:SSL routines:...:tlsv1 alert decrypt error:..." minus the
            // per-process prefix.
            let alert = stderr
                .lines()
                .find(|l| l.contains("alert"))
                .unwrap_or_else(|| panic!("no TLS alert in {stderr}"));
            alert
                .split_once(":error:")
                .map_or(alert, |(_, r)| r)
                .to_owned()
        };
        let wrong = alert(wrong_key, "alice-phone");
        let unknown = alert(KEY_A, "nobody-phone");
        assert_eq!(
            wrong, unknown,
            "{version}: the client cannot tell which it was"
        );
    }
    assert!(psk_login_works(addr, "-tls1_3", KEY_A, "alice-phone"));
}

#[test]
fn psk_changes_take_effect_on_the_running_server_within_5s() {
    let server = psk_server();
    let addr = server.psk.unwrap();
    assert!(psk_login_works(addr, "-tls1_2", KEY_A, "alice-phone"));

    // A new key with the CLI (another process: on SQLite only the periodic reload
    // can notice it).
    set_psk(&server, "alice", "alice-phone", KEY_B);
    let changed = Instant::now();
    while !psk_login_works(addr, "-tls1_3", KEY_B, "alice-phone") {
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "new key not honoured within 5 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("new PSK honoured after {:?}", changed.elapsed());
    assert!(
        !psk_login_works(addr, "-tls1_2", KEY_A, "alice-phone"),
        "old key still works"
    );
    assert!(
        !psk_login_works(addr, "-tls1_3", KEY_A, "alice-phone"),
        "old key still works"
    );

    // A disabled subscriber's PSK stops working; enabled again, it works again.
    cli_ok(&server, &["subscriber", "disable", "alice"]);
    let disabled = Instant::now();
    while psk_login_works(addr, "-tls1_2", KEY_B, "alice-phone") {
        assert!(
            disabled.elapsed() < Duration::from_secs(5),
            "disabled PSK still works after 5 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cli_ok(&server, &["subscriber", "enable", "alice"]);
    let enabled = Instant::now();
    while !psk_login_works(addr, "-tls1_2", KEY_B, "alice-phone") {
        assert!(
            enabled.elapsed() < Duration::from_secs(5),
            "re-enabled PSK not honoured"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_no_secrets(&server, &[KEY_A, KEY_B]);
}

#[test]
fn psk_change_reaches_every_node_on_postgres() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_psk");
    let options = ServerOptions {
        storage_url: Some(db.url.clone()),
        psk: true,
        ..Default::default()
    };
    let a = Server::start_with(options.clone());
    // Both nodes must share the key-encryption key.
    let kek = a.dir.path().join("data").join("psk.kek");
    let b = Server::start_with(ServerOptions {
        env: vec![(
            "CPMSTORE_AUTH_PSK_KEK_FILE".into(),
            kek.display().to_string(),
        )],
        ..options
    });
    a.add_user("alice", PASSWORD);
    set_psk(&a, "alice", "alice-phone", KEY_A);
    let start = Instant::now();
    for node in [&a, &b] {
        let addr = node.psk.unwrap();
        while !psk_login_works(addr, "-tls1_3", KEY_A, "alice-phone") {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "PSK not on every node within 5 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!("PSK on both nodes after {:?}", start.elapsed());
    cli_ok(&a, &["subscriber", "disable", "alice"]);
    let start = Instant::now();
    for node in [&a, &b] {
        let addr = node.psk.unwrap();
        while psk_login_works(addr, "-tls1_3", KEY_A, "alice-phone") {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "disable not on every node within 5 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn passwords_only_after_starttls_or_on_tls_and_psk() {
    let server = psk_server();

    // Cleartext: no AUTH= at all, LOGINDISABLED, and every attempt PRIVACYREQUIRED.
    let mut c = Client::plain(server.imap);
    let caps = c.command("CAPABILITY").ok().all_text();
    assert!(
        caps.contains("STARTTLS") && caps.contains("LOGINDISABLED"),
        "{caps}"
    );
    assert!(!caps.contains("AUTH="), "{caps}");
    let plain = base64_encode(format!("\0alice\0{PASSWORD}").as_bytes());
    for command in [
        format!("LOGIN alice \"{PASSWORD}\""),
        format!("AUTHENTICATE PLAIN {plain}"),
        "AUTHENTICATE SCRAM-SHA-256 biwsbj1hbGljZSxyPWFiYw==".to_owned(),
        "AUTHENTICATE EXTERNAL =".to_owned(),
    ] {
        let reply = c.command(&command);
        assert!(
            reply.status.starts_with("NO [PRIVACYREQUIRED]"),
            "{command}: {reply:?}"
        );
    }

    // After STARTTLS: advertised and accepted.
    let mut c = Client::starttls(server.imap);
    let caps = c.command("CAPABILITY").ok().all_text();
    for mechanism in [
        "AUTH=PLAIN",
        "AUTH=SCRAM-SHA-256",
        "AUTH=SCRAM-SHA-256-PLUS",
    ] {
        assert!(caps.contains(mechanism), "{mechanism}: {caps}");
    }
    assert!(
        !caps.contains("LOGINDISABLED") && !caps.contains("AUTH=EXTERNAL"),
        "{caps}"
    );
    c.command(&format!("LOGIN alice \"{PASSWORD}\"")).ok();
    let mut c = Client::starttls(server.imap);
    c.command(&format!("AUTHENTICATE PLAIN {plain}")).ok();

    // Implicit TLS.
    let mut c = Client::tls(server.imaps);
    let reply = c.command("AUTHENTICATE EXTERNAL =");
    assert!(
        reply.status.starts_with("NO"),
        "EXTERNAL is for PSK-TLS only: {reply:?}"
    );
    c.command(&format!("LOGIN alice \"{PASSWORD}\"")).ok();
    let mut c = Client::tls(server.imaps);
    c.command(&format!("AUTHENTICATE PLAIN {plain}")).ok();

    // PSK-TLS, from a Rust OpenSSL client this time.
    let key = hex(KEY_A);
    for version in [Tls::V12, Tls::V13] {
        let mut c = AuthClient::psk(server.psk.unwrap(), version, "alice-phone", &key).unwrap();
        assert!(c.login("alice", PASSWORD).unwrap().starts_with("OK"));
        let mut c = AuthClient::psk(server.psk.unwrap(), version, "alice-phone", &key).unwrap();
        let (_, status) = c.command(&format!("AUTHENTICATE PLAIN {plain}")).unwrap();
        assert!(status.starts_with("OK"), "{status}");
    }
    assert_no_secrets(&server, &[PASSWORD]);
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn scram_interop_with_python_scramp() {
    require("python3");
    let server = Server::start();
    server.add_user("alice", PASSWORD);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/scram_check.py");
    let out = Command::new("python3")
        .arg(script)
        .env("IMAP_HOST", "127.0.0.1")
        .env("IMAPS_PORT", server.imaps.port().to_string())
        .env("IMAP_USER", "alice")
        .env("IMAP_PASSWORD", PASSWORD)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "status {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secrets(&server, &[PASSWORD]);
}

#[test]
fn scram_plus_with_tls_exporter() {
    let server = psk_server();
    let ok = |c: &mut AuthClient, options: &Scram<'_>| {
        let (status, verified) = c.scram(options).unwrap();
        assert!(status.starts_with("OK"), "{status}");
        assert!(verified, "server signature");
    };
    let refused = |c: &mut AuthClient, options: &Scram<'_>| {
        let (status, _) = c.scram(options).unwrap();
        assert_eq!(status, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    };
    let alice = |binding| Scram {
        user: "alice",
        password: PASSWORD,
        binding,
        ..Default::default()
    };

    // Implicit TLS 1.3 (rustls on both sides) and PSK-TLS 1.3 (OpenSSL on both sides).
    let key = hex(KEY_A);
    let connect13: [&dyn Fn() -> AuthClient; 2] = [
        &|| AuthClient::tls(server.imaps, None, Tls::V13).unwrap(),
        &|| AuthClient::psk(server.psk.unwrap(), Tls::V13, "alice-phone", &key).unwrap(),
    ];
    for connect in connect13 {
        let mut c = connect();
        assert!(
            c.greeting.contains("AUTH=SCRAM-SHA-256-PLUS"),
            "{}",
            c.greeting
        );
        let exporter = c.tls_exporter().expect("TLS 1.3 exporter");
        ok(&mut c, &alice(Some(("tls-exporter", exporter))));

        // The binding of another channel (a man in the middle relaying SCRAM).
        let mut c = connect();
        refused(&mut c, &alice(Some(("tls-exporter", vec![0u8; 32]))));
        // A binding type the server does not have.
        let mut c = connect();
        let exporter = c.tls_exporter().unwrap();
        refused(&mut c, &alice(Some(("tls-unique", exporter))));
        // Downgrade: flag y while the server offers -PLUS.
        let mut c = connect();
        refused(
            &mut c,
            &Scram {
                flag_y: true,
                ..alice(None)
            },
        );
        // Tampered proof.
        let mut c = connect();
        let exporter = c.tls_exporter().unwrap();
        refused(
            &mut c,
            &Scram {
                tamper_proof: true,
                ..alice(Some(("tls-exporter", exporter)))
            },
        );
        // Plain SCRAM-SHA-256 still works.
        let mut c = connect();
        ok(&mut c, &alice(None));
    }

    // TLS 1.2: no tls-exporter (RFC 9266 needs TLS 1.3 or EMS).
    let mut c = AuthClient::tls(server.imaps, None, Tls::V12).unwrap();
    assert!(c.tls_exporter().is_none());
    refused(&mut c, &alice(Some(("tls-exporter", vec![1u8; 32]))));
    // On PSK-TLS 1.2 nothing binds, so -PLUS is not offered and flag y is fine.
    let mut c = AuthClient::psk(server.psk.unwrap(), Tls::V12, "alice-phone", &key).unwrap();
    assert!(
        !c.greeting.contains("AUTH=SCRAM-SHA-256-PLUS"),
        "{}",
        c.greeting
    );
    ok(
        &mut c,
        &Scram {
            flag_y: true,
            ..alice(None)
        },
    );
    assert_no_secrets(&server, &[PASSWORD]);
}

/// Whether every answer is the one failure answer.
fn all_failed_alike(statuses: &[String]) -> bool {
    statuses
        .iter()
        .all(|s| s == "NO [AUTHENTICATIONFAILED] Authentication failed.")
}

#[test]
fn guessing_is_throttled_and_locked_while_the_user_still_logs_in() {
    let server = Server::start_with(ServerOptions {
        env: vec![
            ("CPMSTORE_AUTH_MAX_FAILURES".into(), "5".into()),
            ("CPMSTORE_AUTH_FAILURE_DELAY_MS".into(), "20".into()),
            ("CPMSTORE_AUTH_MAX_FAILURE_DELAY_MS".into(), "150".into()),
            ("CPMSTORE_AUTH_LOCKOUT_SECS".into(), "600".into()),
        ],
        ..Default::default()
    });
    server.add_user("alice", PASSWORD);
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let legit = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let imaps = server.imaps;

    // 200 wrong passwords for alice from one IP, 10 connections at a time, 3 guesses
    // per connection (the third closes it).
    let attack = std::thread::spawn(move || {
        let handles: Vec<_> = (0..10)
            .map(|worker| {
                std::thread::spawn(move || {
                    let mut statuses = Vec::new();
                    let mut n = 0;
                    while n < 20 {
                        let mut c = AuthClient::tls(imaps, Some(attacker), Tls::V13).unwrap();
                        for _ in 0..3 {
                            if n == 20 {
                                break;
                            }
                            statuses
                                .push(c.login("alice", &format!("guess-{worker}-{n}")).unwrap());
                            n += 1;
                        }
                    }
                    statuses
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });

    // Meanwhile the real alice logs in from another address, every time, promptly.
    let mut legit_logins = 0;
    while !attack.is_finished() || legit_logins < 3 {
        let mut c = AuthClient::tls(imaps, Some(legit), Tls::V13).unwrap();
        let started = Instant::now();
        let status = c.login("alice", PASSWORD).unwrap();
        assert!(
            status.starts_with("OK"),
            "legit login during the attack: {status}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "legit login took {:?}",
            started.elapsed()
        );
        legit_logins += 1;
    }
    let statuses = attack.join().unwrap();
    assert_eq!(statuses.len(), 200);
    assert!(all_failed_alike(&statuses), "every failure looks the same");

    // At most 2 x max_failures guesses were checked; the rest were refused unchecked.
    let log = server.log_text();
    let from_attacker = |outcome: &str| {
        log.lines()
            .filter(|l| {
                l.contains("\"peer\":\"127.0.0.1\"")
                    && l.contains(&format!("\"outcome\":\"{outcome}\""))
            })
            .count()
    };
    let checked = from_attacker("failed");
    let locked = from_attacker("locked");
    assert!(checked <= 10, "{checked} guesses were checked");
    assert_eq!(checked + locked, 200, "{checked} checked + {locked} locked");
    assert!(log.contains("login lockout"), "the lockout is logged");

    // Locked: even the right password fails from the attacker's address, with the same
    // answer, while the other address is fine.
    let mut c = AuthClient::tls(imaps, Some(attacker), Tls::V13).unwrap();
    assert!(all_failed_alike(&[c.login("alice", PASSWORD).unwrap()]));
    let mut c = AuthClient::tls(imaps, Some(legit), Tls::V13).unwrap();
    assert!(c.login("alice", PASSWORD).unwrap().starts_with("OK"));

    // Spraying many accounts from a third address locks that address as a whole.
    let sprayer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut statuses = Vec::new();
    for n in 0..45 {
        let mut c = AuthClient::tls(imaps, Some(sprayer), Tls::V13).unwrap();
        statuses.push(c.login(&format!("user{n}"), "guess").unwrap());
    }
    assert!(all_failed_alike(&statuses));
    let log = server.log_text();
    assert!(
        log.lines().any(|l| l.contains("login lockout")
            && l.contains("127.0.0.3")
            && l.contains("\"scope\":\"ip\"")),
        "IP-wide lockout of the sprayer"
    );
    assert_no_secrets(&server, &[PASSWORD]);
}

#[test]
fn three_failures_close_the_connection() {
    let server = Server::start();
    server.add_user("alice", PASSWORD);
    let mut c = AuthClient::tls(server.imaps, None, Tls::V13).unwrap();
    for _ in 0..2 {
        assert!(all_failed_alike(&[c.login("alice", "nope").unwrap()]));
    }
    let (untagged, status) = c.command("LOGIN alice nope").unwrap();
    assert!(all_failed_alike(&[status]));
    assert!(
        untagged.iter().any(|l| l.starts_with("* BYE")),
        "{untagged:?}"
    );
    assert!(c.read_line().is_err(), "closed");
}

#[test]
fn password_login_rehashes_with_the_configured_parameters() {
    let server = Server::start();
    // Provision with other argon2 parameters than the server's (t=2 instead of 1).
    let env: Vec<(String, String)> = vec![("CPMSTORE_AUTH_ARGON2_T".into(), "2".into())];
    let out = cpmstore_tests::server::run_cli(
        &server.config,
        server.dir.path(),
        &env,
        &["subscriber", "add", "alice", "--password-stdin"],
        PASSWORD,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = server.dir.path().join("data").join("cpmstore.db");
    let phc = || stored_phc(&db, "alice");
    assert!(phc().contains("t=2"), "{}", phc());

    // SCRAM cannot rehash (no password); LOGIN can.
    let mut c = AuthClient::tls(server.imaps, None, Tls::V13).unwrap();
    let (status, _) = c
        .scram(&Scram {
            user: "alice",
            password: PASSWORD,
            ..Default::default()
        })
        .unwrap();
    assert!(status.starts_with("OK"), "{status}");
    assert!(phc().contains("t=2"));
    let mut c = AuthClient::tls(server.imaps, None, Tls::V13).unwrap();
    assert!(c.login("alice", PASSWORD).unwrap().starts_with("OK"));
    let start = Instant::now();
    while !phc().contains("t=1") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not rehashed: {}",
            phc()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.log_text().contains("credentials rehashed"));

    // The new credentials work for both mechanisms, and no second rehash happens.
    let mut c = AuthClient::tls(server.imaps, None, Tls::V13).unwrap();
    assert!(c.login("alice", PASSWORD).unwrap().starts_with("OK"));
    let mut c = AuthClient::tls(server.imaps, None, Tls::V13).unwrap();
    let (status, verified) = c
        .scram(&Scram {
            user: "alice",
            password: PASSWORD,
            ..Default::default()
        })
        .unwrap();
    assert!(status.starts_with("OK") && verified, "{status}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.log_text().matches("credentials rehashed").count(), 1);
    assert_no_secrets(&server, &[PASSWORD]);
}

/// The argon2 PHC string stored for `user` in the server's SQLite database.
fn stored_phc(db: &Path, user: &str) -> String {
    use sqlx::Row as _;
    let url = format!("sqlite://{}?mode=ro", db.display());
    cpmstore_tests::block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let row = sqlx::query(
            "SELECT c.argon2_phc FROM credentials c JOIN accounts a ON a.account_id = c.account_id \
             WHERE a.username = $1",
        )
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
        let phc: String = row.try_get(0).unwrap();
        pool.close().await;
        phc
    })
}
