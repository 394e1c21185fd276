//! `push::decide` throughput with a 1,000-entry whitelist (the default
//! `push.max_whitelist_entries`): decisions per second for each kind of origin, for a
//! match on the first entry, on the last entry, and for no match (every entry looked
//! at).
//!
//! `cargo bench -p cpmstore-server --bench decide [-- SECONDS_PER_CASE]` (default 1 s).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use cpmstore_server::push::whitelist::{ROLE_PPG, ROLE_SMSC};
use cpmstore_server::push::{Origin, Provisioning, decide};
use cpmstore_storage::{WhitelistEntry, WhitelistKind};

const ENTRIES: usize = 1000;

fn entry(kind: WhitelistKind, value: String, role: &str) -> WhitelistEntry {
    WhitelistEntry {
        kind,
        value,
        resolved: Vec::new(),
        role: role.into(),
    }
}

/// 1,000 entries of one kind (what a whitelist of one origin type looks like at the
/// limit).
fn uniform(kind: WhitelistKind) -> Vec<WhitelistEntry> {
    (0..ENTRIES)
        .map(|i| match kind {
            WhitelistKind::Ip if i % 2 == 0 => entry(
                WhitelistKind::Ip,
                Ipv4Addr::new(10, 0, (i / 256) as u8, (i % 256) as u8).to_string(),
                ROLE_PPG,
            ),
            WhitelistKind::Ip => entry(
                WhitelistKind::Ip,
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16).to_string(),
                ROLE_PPG,
            ),
            WhitelistKind::E164 => entry(WhitelistKind::E164, format!("+3584{i:04}"), ROLE_SMSC),
            WhitelistKind::Uri => entry(
                WhitelistKind::Uri,
                format!("sip:ppg{i}@operator{i}.example"),
                ROLE_PPG,
            ),
            WhitelistKind::Fqdn => unreachable!(),
        })
        .collect()
}

/// 1,000 entries mixing every kind (250 each; FQDNs resolved to two addresses).
fn mixed() -> Vec<WhitelistEntry> {
    (0..ENTRIES)
        .map(|i| match i % 4 {
            0 => entry(
                WhitelistKind::Ip,
                Ipv4Addr::new(10, 1, (i / 256) as u8, (i % 256) as u8).to_string(),
                ROLE_PPG,
            ),
            1 => {
                let mut e = entry(
                    WhitelistKind::Fqdn,
                    format!("ppg{i}.operator.example"),
                    ROLE_PPG,
                );
                e.resolved = vec![
                    Ipv4Addr::new(10, 2, (i / 256) as u8, (i % 256) as u8).to_string(),
                    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, i as u16).to_string(),
                ];
                e
            }
            2 => entry(WhitelistKind::E164, format!("+3585{i:04}"), ROLE_SMSC),
            _ => entry(
                WhitelistKind::Uri,
                format!("sip:ppg{i}@operator.example"),
                ROLE_PPG,
            ),
        })
        .collect()
}

/// Runs `decide` on `origin` for `budget`; decisions per second.
fn measure(entries: &[WhitelistEntry], origin: &Origin, expect: bool, budget: Duration) -> f64 {
    let whitelist = Provisioning::Whitelist(entries.to_vec());
    assert_eq!(decide(&whitelist, origin).accepted, expect, "{origin:?}");
    let started = Instant::now();
    let mut done: u64 = 0;
    while started.elapsed() < budget {
        for _ in 0..64 {
            black_box(decide(black_box(&whitelist), black_box(origin)));
        }
        done += 64;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(seconds);
    let ip = |s: &str| Origin::Ppg(s.parse::<IpAddr>().unwrap());
    let smsc = |s: &str| Origin::Smsc {
        address: s.into(),
        ton: None,
        npi: None,
    };
    let sip = |s: &str| Origin::Sip {
        pai: vec![s.into()],
    };

    let ips = uniform(WhitelistKind::Ip);
    let e164 = uniform(WhitelistKind::E164);
    let uris = uniform(WhitelistKind::Uri);
    let mix = mixed();
    let cases: Vec<(&str, &[WhitelistEntry], Origin, bool)> = vec![
        ("ppg IPv4, first entry", &ips, ip("10.0.0.0"), true),
        ("ppg IPv6, last entry", &ips, ip("2001:db8::3e7"), true),
        (
            "ppg IPv4-mapped, no match",
            &ips,
            ip("::ffff:192.0.2.1"),
            false,
        ),
        ("smsc, first entry", &e164, smsc("+358400001234"), true),
        ("smsc, last entry", &e164, smsc("+358409991234"), true),
        ("smsc, no match", &e164, smsc("+4479123456"), false),
        (
            "sip PAI, first entry",
            &uris,
            sip("<sip:ppg0@operator0.example>"),
            true,
        ),
        (
            "sip PAI, last entry",
            &uris,
            sip("<sip:ppg999@OPERATOR999.example>"),
            true,
        ),
        (
            "sip PAI (two values), no match",
            &uris,
            sip("\"X\" <sip:other@elsewhere.example>, <tel:+358401234567>"),
            false,
        ),
        (
            "mixed, ppg via FQDN, last",
            &mix,
            ip("2001:db8:2::3e5"),
            true,
        ),
        ("mixed, smsc, no match", &mix, smsc("+4479123456"), false),
        (
            "mixed, sip PAI, no match",
            &mix,
            sip("<sip:x@y.example>"),
            false,
        ),
    ];
    println!("push::decide, {ENTRIES}-entry whitelists, {seconds} s per case");
    println!("| origin | decisions/s | µs/decision |");
    println!("|---|---:|---:|");
    for (name, entries, origin, expect) in &cases {
        let rate = measure(entries, origin, *expect, budget);
        println!("| {name} | {rate:.0} | {:.2} |", 1e6 / rate);
    }
}
