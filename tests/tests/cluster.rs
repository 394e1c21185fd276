//! Two `cpmstore serve` processes on one PostgreSQL behave as one service: what one
//! node's session changes, a session on the other node is told (at its next command, or
//! at once while idling).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use cpmstore_tests::imap_client::Client;
use cpmstore_tests::server::{Server, ServerOptions};
use cpmstore_tests::{TempDatabase, postgres_url_or_skip};

const MSG: &[u8] = b"From: a@example.net\r\nSubject: cross-node\r\n\r\nbody\r\n";

fn two_nodes(db: &TempDatabase) -> (Server, Server) {
    let options = ServerOptions {
        storage_url: Some(db.url.clone()),
        ..Default::default()
    };
    let a = Server::start_with(options.clone());
    let b = Server::start_with(options);
    (a, b)
}

#[test]
fn changes_cross_nodes_and_wake_idle() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_cluster");
    let (node_a, node_b) = two_nodes(&db);
    // Provisioned through node A, logs in on node B at once.
    node_a.add_user("alice", "cluster pw");
    let mut on_a = Client::login(node_a.imaps, "alice", "cluster pw");
    let mut on_b = Client::login(node_b.imaps, "alice", "cluster pw");
    on_a.append("INBOX", "", MSG).ok();
    on_a.command("SELECT INBOX").ok();
    on_b.command("SELECT INBOX").ok();

    // B idles; A appends: B hears EXISTS within a second.
    let tag = on_b.tag();
    on_b.send_raw(format!("{tag} IDLE\r\n").as_bytes());
    assert!(on_b.read_line().unwrap().starts_with('+'));
    let t = Instant::now();
    on_a.append("INBOX", "", MSG).ok();
    loop {
        if on_b.read_line().unwrap() == "* 2 EXISTS" {
            break;
        }
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "cross-node EXISTS took {took:?}"
    );

    // A flags message 1: B (still idling) hears FETCH FLAGS.
    on_a.command("STORE 1 +FLAGS (\\Flagged)").ok();
    loop {
        let l = on_b.read_line().unwrap();
        if l.starts_with("* 1 FETCH") && l.contains("\\Flagged") {
            break;
        }
    }
    // A expunges message 1: B hears EXPUNGE.
    on_a.command("STORE 1 +FLAGS (\\Deleted)").ok();
    on_a.command("EXPUNGE").ok();
    loop {
        if on_b.read_line().unwrap() == "* 1 EXPUNGE" {
            break;
        }
    }
    on_b.send_raw(b"DONE\r\n");
    assert!(on_b.read_reply(&tag).is_ok());

    // Not idling: B is told at its next command, and only then.
    on_a.append("INBOX", "", MSG).ok();
    let r = on_b.command("NOOP").ok();
    assert!(r.untagged.contains(&"* 2 EXISTS".to_string()), "{r:?}");
    let r = on_b.command("UID FETCH 1:* (FLAGS)").ok();
    assert_eq!(r.untagged.len(), 2, "{r:?}");

    // Disabled through node B: node A refuses the next login.
    let out = node_b.cli(&["subscriber", "disable", "alice"], "");
    assert!(out.status.success());
    let mut c = Client::tls(node_a.imaps);
    assert!(
        c.command("LOGIN alice \"cluster pw\"")
            .status
            .starts_with("NO [AUTHENTICATIONFAILED]")
    );
    drop((on_a, on_b, node_a, node_b));
}

#[test]
fn concurrent_appends_on_two_nodes_get_distinct_uids() {
    let Some(admin) = postgres_url_or_skip() else {
        return;
    };
    let db = TempDatabase::create(&admin, "cpmstore_cluster");
    let (node_a, node_b) = two_nodes(&db);
    node_a.add_user("bob", "cluster pw");
    let addrs = [node_a.imaps, node_b.imaps];
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let addr = addrs[i % 2];
            std::thread::spawn(move || {
                let mut c = Client::login(addr, "bob", "cluster pw");
                (0..10)
                    .map(|_| {
                        let r = c.append("INBOX", "", MSG).ok();
                        r.status
                            .split(' ')
                            .nth(3)
                            .unwrap()
                            .trim_end_matches(']')
                            .parse::<u32>()
                            .unwrap()
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut uids: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    uids.sort_unstable();
    assert_eq!(
        uids,
        (1..=40).collect::<Vec<u32>>(),
        "40 distinct UIDs without gaps"
    );
}
