//! Authentication benchmark, against fresh `cpmstore serve` processes on SQLite with the
//! production argon2id parameters (19 MiB, t=2, p=1) and the default guessing
//! protection:
//!
//! 1. the legitimate user's LOGIN latency from 127.0.0.2, first alone, then while an
//!    attacker on 127.0.0.1 sends wrong passwords for the same account over many
//!    parallel connections (median, p99, max; plus how many guesses the server
//!    actually checked);
//! 2. the time to a failure for an unknown user and for a known user with a wrong
//!    password (means, and their difference), with the throttle out of the way.
//!
//! Usage (build the server in release first):
//!   cargo build --release -p cpmstore-server
//!   cargo run --release -p cpmstore-tests --bin auth_bench -- [GUESSES] [ATTACKERS] [SAMPLES]
//! Defaults: 200 guesses over 40 parallel attacker connections, 200 timing samples per
//! case. Linux only (it uses 127.0.0.2 as a second client address).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpmstore_tests::auth_client::{AuthClient, Tls};
use cpmstore_tests::server::{Server, ServerOptions};

const PASSWORD: &str = "the right password";
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LEGIT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn production_argon2() -> Vec<(String, String)> {
    vec![
        ("CPMSTORE_AUTH_ARGON2_M_KIB".into(), "19456".into()),
        ("CPMSTORE_AUTH_ARGON2_T".into(), "2".into()),
        ("CPMSTORE_AUTH_ARGON2_P".into(), "1".into()),
    ]
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map(|a| a.parse().expect("numeric argument"))
        .unwrap_or(default)
}

/// Sorted latencies in milliseconds.
struct Sample(Vec<f64>);

impl Sample {
    fn new(mut values: Vec<Duration>) -> Sample {
        values.sort();
        Sample(values.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
    }
    fn quantile(&self, q: f64) -> f64 {
        let n = self.0.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.0[rank - 1]
    }
    fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len() as f64
    }
    fn summary(&self) -> String {
        format!(
            "n={} median={:.1} ms p99={:.1} ms max={:.1} ms mean={:.1} ms",
            self.0.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.0[self.0.len() - 1],
            self.mean()
        )
    }
}

/// One legitimate login from 127.0.0.2: the LOGIN command's latency (the TLS
/// connection is made first and not counted).
fn legit_login(server: &Server) -> Duration {
    let mut c = AuthClient::tls(server.imaps, Some(LEGIT), Tls::V13).unwrap();
    let start = Instant::now();
    let status = c.login("alice", PASSWORD).unwrap();
    let took = start.elapsed();
    assert!(
        status.starts_with("OK"),
        "legitimate login refused: {status}"
    );
    took
}

fn attack_phase(guesses: usize, attackers: usize) {
    let server = Server::start_with(ServerOptions {
        env: production_argon2(),
        ..Default::default()
    });
    server.add_user("alice", PASSWORD);
    // Warm up (first connections, first hash).
    for _ in 0..3 {
        legit_login(&server);
    }
    let baseline: Vec<Duration> = (0..30).map(|_| legit_login(&server)).collect();
    println!(
        "legitimate LOGIN, no attack:        {}",
        Sample::new(baseline).summary()
    );

    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let imaps = server.imaps;
    let started = Instant::now();
    let workers: Vec<_> = (0..attackers)
        .map(|w| {
            let sent = sent.clone();
            std::thread::spawn(move || {
                'connections: loop {
                    let mut c = AuthClient::tls(imaps, Some(ATTACKER), Tls::V13).unwrap();
                    for _ in 0..3 {
                        let n = sent.fetch_add(1, Ordering::SeqCst);
                        if n >= guesses {
                            break 'connections;
                        }
                        let status = c.login("alice", &format!("guess {w} {n}")).unwrap();
                        assert_eq!(status, "NO [AUTHENTICATIONFAILED] Authentication failed.");
                    }
                }
            })
        })
        .collect();
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            for w in workers {
                w.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut during = Vec::new();
    while !done.load(Ordering::SeqCst) {
        during.push(legit_login(&server));
    }
    watcher.join().unwrap();
    let attack_time = started.elapsed();
    println!(
        "legitimate LOGIN, during the attack: {}",
        Sample::new(during).summary()
    );
    let log = server.log_text();
    let count = |outcome: &str| {
        log.lines()
            .filter(|l| {
                l.contains("\"peer\":\"127.0.0.1\"")
                    && l.contains(&format!("\"outcome\":\"{outcome}\""))
            })
            .count()
    };
    println!(
        "attack: {guesses} wrong passwords over {attackers} parallel connections from 127.0.0.1 \
         in {:.1} s; {} checked (argon2), {} refused unchecked (locked)",
        attack_time.as_secs_f64(),
        count("failed"),
        count("locked"),
    );
}

fn timing_phase(samples: usize) {
    // The throttle out of the way: only the cost of checking is measured.
    let mut env = production_argon2();
    env.push(("CPMSTORE_AUTH_MAX_FAILURES".into(), "100000000".into()));
    env.push((
        "CPMSTORE_AUTH_MAX_FAILURES_PER_CONNECTION".into(),
        "100000000".into(),
    ));
    let server = Server::start_with(ServerOptions {
        env,
        ..Default::default()
    });
    server.add_user("alice", PASSWORD);
    let mut c = AuthClient::tls(server.imaps, None, Tls::V13).unwrap();
    let mut fail = |user: &str| {
        let start = Instant::now();
        let status = c.login(user, "wrong password").unwrap();
        let took = start.elapsed();
        assert_eq!(status, "NO [AUTHENTICATIONFAILED] Authentication failed.");
        took
    };
    for _ in 0..5 {
        fail("alice");
        fail("nobody");
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    // Interleaved, so drift (CPU frequency, other load) hits both alike.
    for i in 0..samples {
        let name = format!("nobody{i}");
        if i % 2 == 0 {
            known.push(fail("alice"));
            unknown.push(fail(&name));
        } else {
            unknown.push(fail(&name));
            known.push(fail("alice"));
        }
    }
    let known = Sample::new(known);
    let unknown = Sample::new(unknown);
    println!("failure, known user, wrong password: {}", known.summary());
    println!("failure, unknown user:               {}", unknown.summary());
    let difference = (unknown.mean() - known.mean()).abs() / known.mean() * 100.0;
    println!("difference of the means: {difference:.2} % (must be < 10 %)");
}

fn main() {
    let guesses = arg(1, 200);
    let attackers = arg(2, 40);
    let samples = arg(3, 200);
    println!("cpmstore auth benchmark (argon2id m=19456 KiB, t=2, p=1)");
    attack_phase(guesses, attackers);
    timing_phase(samples);
}
