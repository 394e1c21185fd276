//! The storage story: one suite written against `Arc<dyn Store>`, run on both backends.
//!
//! - SQLite: a temporary file (in a directory `open` has to create).
//! - PostgreSQL: when `CPMSTORE_TEST_POSTGRES_URL` is set (e.g.
//!   `postgres://postgres@127.0.0.1:5432/test`), every test creates a database of its own
//!   through that URL (`cpmstore_test_<random>`) and drops it at the end, so runs never
//!   interfere. Without the variable the PostgreSQL tests say `SKIPPED` on stderr and pass.
//!
//! Every story is a function taking the environment; `stories!` turns each into one test
//! per backend (`on_sqlite::<story>`, `on_postgres::<story>`).

// Tests: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use cpmstore_storage::{
    AccountId, AccountStatus, Change, ChangeKind, CredentialRecord, Error, FlagOp, Flags,
    MailboxId, MessageMeta, MetadataDepth, MetadataWrite, NewAccount, NewMailbox, NewMessage,
    OpenOptions, Store, SystemFlags, UidRange, WhitelistEntry, WhitelistKind,
};
use futures::TryStreamExt;
use sqlx::{AnyPool, Row};
use tokio::sync::broadcast;

const POSTGRES_ENV: &str = "CPMSTORE_TEST_POSTGRES_URL";

macro_rules! stories {
    ($($story:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $story() {
                    let env = super::Env::sqlite().await;
                    super::$story(&env).await;
                    env.finish().await;
                }
            )*
        }

        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $story() {
                    let Some(env) = super::Env::postgres(stringify!($story)).await else {
                        return;
                    };
                    super::$story(&env).await;
                    env.finish().await;
                }
            )*
        }
    };
}

stories!(
    accounts,
    credentials_and_psks,
    addresses,
    mailboxes,
    subscriptions,
    rename_with_children,
    rename_inbox,
    append_fetch_blob,
    concurrent_appends,
    copy_and_move,
    store_flags,
    conditional_store,
    expunge,
    expunged_since,
    quota,
    claim_recent,
    metadata,
    metadata_entries,
    whitelists,
    remove_account,
    change_bus,
    ping_and_close,
    cpm_header_index,
    cpm_header_index_follows_messages,
    cpm_header_search_and_backfill,
);

// --- the environment -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Env {
    backend: Backend,
    url: String,
    store: Arc<dyn Store>,
    /// Direct access, to look at rows the trait does not show.
    raw: AnyPool,
    _dir: Option<tempfile::TempDir>,
    database: Option<PgDatabase>,
}

impl Env {
    async fn sqlite() -> Env {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: `open` creates it.
        let path = dir.path().join("nested/dir/store.db");
        let url = format!("sqlite://{}", path.display());
        let store = cpmstore_storage::open(&url, &options()).await.unwrap();
        assert!(path.exists(), "open creates the file");
        sqlx::any::install_default_drivers();
        let raw = AnyPool::connect(&url).await.unwrap();
        Env {
            backend: Backend::Sqlite,
            url,
            store,
            raw,
            _dir: Some(dir),
            database: None,
        }
    }

    async fn postgres(story: &str) -> Option<Env> {
        let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {POSTGRES_ENV} not set (on_postgres::{story} did not run)"
            );
            return None;
        };
        sqlx::any::install_default_drivers();
        let name = format!("cpmstore_test_{:016x}", rand::random::<u64>());
        let admin = AnyPool::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        let database = PgDatabase {
            admin_url,
            name,
            dropped: false,
        };
        let store = cpmstore_storage::open(&url, &options()).await.unwrap();
        let raw = AnyPool::connect(&url).await.unwrap();
        Some(Env {
            backend: Backend::Postgres,
            url,
            store,
            raw,
            _dir: None,
            database: Some(database),
        })
    }

    /// Another store on the same database: another node, for PostgreSQL.
    async fn another_store(&self) -> Arc<dyn Store> {
        cpmstore_storage::open(&self.url, &options()).await.unwrap()
    }

    async fn finish(mut self) {
        self.store.close().await;
        self.raw.close().await;
        if let Some(mut database) = self.database.take() {
            database.drop_now().await;
        }
    }

    /// Tables that have an account_id column, from the schema itself.
    async fn account_tables(&self) -> Vec<String> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND p.name = 'account_id' ORDER BY m.name"
            }
            Backend::Postgres => {
                "SELECT CAST(table_name AS TEXT) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND column_name = 'account_id' ORDER BY 1"
            }
        };
        let rows = sqlx::query(sql).fetch_all(&self.raw).await.unwrap();
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).unwrap())
            .collect()
    }

    async fn rows_of(&self, table: &str, account: AccountId) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE account_id = $1");
        let row = sqlx::query(&sql)
            .bind(account.0)
            .fetch_one(&self.raw)
            .await
            .unwrap();
        row.try_get(0).unwrap()
    }

    async fn blob_rows(&self, account: AccountId) -> i64 {
        self.rows_of("blobs", account).await
    }

    async fn blob_exists(&self, account: AccountId, hash: &str) -> bool {
        let row = sqlx::query("SELECT COUNT(*) FROM blobs WHERE account_id = $1 AND hash = $2")
            .bind(account.0)
            .bind(hash)
            .fetch_one(&self.raw)
            .await
            .unwrap();
        row.try_get::<i64, _>(0).unwrap() == 1
    }
}

/// A PostgreSQL database of one test; dropped at the end, or when the test panics.
struct PgDatabase {
    admin_url: String,
    name: String,
    dropped: bool,
}

impl PgDatabase {
    async fn drop_now(&mut self) {
        if let Ok(admin) = AnyPool::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&admin)
            .await;
            admin.close().await;
        }
        self.dropped = true;
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // A panicking test: drop the database best-effort from a thread of its own.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let mut database = PgDatabase {
                    admin_url,
                    name,
                    dropped: true,
                };
                database.drop_now().await;
            });
        })
        .join();
    }
}

fn options() -> OpenOptions {
    OpenOptions {
        max_connections: 8,
        busy_timeout: Duration::from_secs(10),
        migrate: true,
    }
}

// --- helpers -------------------------------------------------------------------------------

fn credentials(tag: u8) -> CredentialRecord {
    CredentialRecord {
        argon2_phc: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${tag}"),
        scram_salt: vec![tag; 16],
        scram_iterations: 4096,
        scram_stored_key: vec![tag.wrapping_add(1); 32],
        scram_server_key: vec![tag.wrapping_add(2); 32],
    }
}

fn account(name: &str, number: u32) -> NewAccount {
    NewAccount {
        username: name.to_owned(),
        quota: None,
        credentials: Some(credentials(1)),
        addresses: vec![
            format!("tel:+35840{number:07}"),
            format!("sip:{name}@example.net"),
        ],
        mailboxes: vec![NewMailbox {
            name: "Sent".into(),
            special_use: Some("Sent".into()),
            subscribed: true,
        }],
    }
}

fn bare_account(name: &str) -> NewAccount {
    NewAccount {
        username: name.to_owned(),
        quota: None,
        credentials: None,
        addresses: Vec::new(),
        mailboxes: Vec::new(),
    }
}

fn folder(name: &str) -> NewMailbox {
    NewMailbox {
        name: name.to_owned(),
        special_use: None,
        subscribed: false,
    }
}

fn message(body: &str) -> NewMessage {
    NewMessage {
        content: format!("Subject: {body}\r\n\r\n{body}\r\n").into_bytes(),
        flags: Flags::default(),
        internal_date: Some(1_700_000_000),
        internal_date_tz: 120,
    }
}

fn flagged(body: &str, system: u8, keywords: &[&str]) -> NewMessage {
    NewMessage {
        flags: flags(system, keywords),
        ..message(body)
    }
}

fn flags(system: u8, keywords: &[&str]) -> Flags {
    Flags {
        system: SystemFlags(system),
        keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
    }
}

async fn inbox(store: &Arc<dyn Store>, account: AccountId) -> MailboxId {
    store.mailbox(account, "INBOX").await.unwrap().id
}

async fn fetch(
    store: &Arc<dyn Store>,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[UidRange],
) -> Vec<MessageMeta> {
    store
        .fetch(account, mailbox, uids)
        .try_collect()
        .await
        .unwrap()
}

async fn fetch_all(
    store: &Arc<dyn Store>,
    account: AccountId,
    mailbox: MailboxId,
) -> Vec<MessageMeta> {
    fetch(store, account, mailbox, &[UidRange::all()]).await
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn uids(metas: &[MessageMeta]) -> Vec<u32> {
    metas.iter().map(|m| m.uid).collect()
}

async fn next_change(rx: &mut broadcast::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a change within 10 s")
        .unwrap()
}

/// No change arrives within a short while.
async fn quiet(rx: &mut broadcast::Receiver<Change>) {
    let waited = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(waited.is_err(), "unexpected change: {waited:?}");
}

macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern)),
        }
    };
}

// --- the stories ---------------------------------------------------------------------------

async fn accounts(env: &Env) {
    let store = &env.store;
    let mut new = account("alice", 1);
    // INBOX given in another case: still one INBOX, never two.
    new.mailboxes.push(NewMailbox {
        name: "inbox".into(),
        special_use: None,
        subscribed: true,
    });
    let alice = store.create_account(new).await.unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.status, AccountStatus::Active);
    assert_eq!(alice.quota, None);
    assert!(alice.created_at > 1_600_000_000);

    let names: Vec<String> = store
        .list_mailboxes(alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["INBOX", "Sent"]);
    let inbox = store.mailbox(alice.id, "INBOX").await.unwrap();
    let sent = store.mailbox(alice.id, "Sent").await.unwrap();
    assert_ne!(inbox.uidvalidity, sent.uidvalidity);
    assert_eq!(
        (inbox.uidnext, sent.special_use.as_deref(), sent.subscribed),
        (1, Some("Sent"), true)
    );

    assert_eq!(store.account_by_name("alice").await.unwrap(), alice);
    assert_eq!(store.account_by_id(alice.id).await.unwrap(), alice);
    assert_eq!(
        store
            .account_by_address("sip:alice@example.net")
            .await
            .unwrap(),
        alice
    );
    assert_eq!(store.list_accounts().await.unwrap(), vec![alice.clone()]);

    // Duplicate username; duplicate address: nothing of the refused account remains.
    assert_err!(
        store.create_account(bare_account("alice")).await,
        Error::AlreadyExists(_)
    );
    let mut bob = account("bob", 2);
    bob.addresses.push("sip:alice@example.net".into());
    assert_err!(store.create_account(bob).await, Error::AlreadyExists(_));
    assert_err!(store.account_by_name("bob").await, Error::NotFound(_));
    assert_err!(
        store.account_by_address("tel:+358400000002").await,
        Error::NotFound(_)
    );
    assert_eq!(store.list_accounts().await.unwrap().len(), 1);
    let bob = store.create_account(account("bob", 2)).await.unwrap();
    assert_ne!(bob.id, alice.id);

    let mut rx = store.changes().subscribe();
    store
        .set_account_status(alice.id, AccountStatus::Disabled)
        .await
        .unwrap();
    let change = next_change(&mut rx).await;
    assert_eq!(
        (change.account, change.mailbox, change.kind),
        (alice.id, None, ChangeKind::Account)
    );
    store.set_quota(alice.id, Some(1_000_000)).await.unwrap();
    let reread = store.account_by_id(alice.id).await.unwrap();
    assert_eq!(
        (reread.status, reread.quota),
        (AccountStatus::Disabled, Some(1_000_000))
    );
    store.set_quota(alice.id, None).await.unwrap();
    store
        .set_account_status(alice.id, AccountStatus::Active)
        .await
        .unwrap();
    assert_eq!(store.account_by_id(alice.id).await.unwrap(), alice);

    let nobody = AccountId(987_654);
    assert_err!(store.account_by_name("nobody").await, Error::NotFound(_));
    assert_err!(store.account_by_id(nobody).await, Error::NotFound(_));
    assert_err!(
        store
            .set_account_status(nobody, AccountStatus::Disabled)
            .await,
        Error::NotFound(_)
    );
    assert_err!(store.set_quota(nobody, Some(1)).await, Error::NotFound(_));
    assert_err!(store.list_mailboxes(nobody).await, Error::NotFound(_));
    assert_err!(
        store.create_account(bare_account("")).await,
        Error::Invalid(_)
    );
}

async fn credentials_and_psks(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let bob = store.create_account(bare_account("bob")).await.unwrap();

    assert_eq!(store.credentials(alice.id).await.unwrap(), None);
    store
        .set_credentials(alice.id, credentials(7))
        .await
        .unwrap();
    assert_eq!(
        store.credentials(alice.id).await.unwrap(),
        Some(credentials(7))
    );
    store
        .set_credentials(alice.id, credentials(9))
        .await
        .unwrap();
    assert_eq!(
        store.credentials(alice.id).await.unwrap(),
        Some(credentials(9))
    );
    assert_eq!(store.credentials(bob.id).await.unwrap(), None);
    assert_err!(
        store.credentials(AccountId(987_654)).await,
        Error::NotFound(_)
    );
    assert_err!(
        store
            .set_credentials(AccountId(987_654), credentials(1))
            .await,
        Error::NotFound(_)
    );

    store
        .set_psk(alice.id, "alice-device", vec![1, 2, 3])
        .await
        .unwrap();
    let psk = store.psk_by_identity("alice-device").await.unwrap();
    assert_eq!(
        (psk.account, psk.sealed_key.as_slice()),
        (alice.id, &[1_u8, 2, 3][..])
    );
    assert!(psk.updated_at > 0);
    assert_eq!(store.psks_of(alice.id).await.unwrap(), vec![psk]);
    // An identity belongs to one account only.
    assert_err!(
        store.set_psk(bob.id, "alice-device", vec![9]).await,
        Error::AlreadyExists(_)
    );
    // Setting again replaces the account's PSK, identity included.
    store
        .set_psk(alice.id, "alice-phone", vec![4, 5])
        .await
        .unwrap();
    let psks = store.psks_of(alice.id).await.unwrap();
    assert_eq!(psks.len(), 1);
    assert_eq!(
        (psks[0].identity.as_str(), psks[0].sealed_key.as_slice()),
        ("alice-phone", &[4_u8, 5][..])
    );
    assert_err!(
        store.psk_by_identity("alice-device").await,
        Error::NotFound(_)
    );
    store
        .set_psk(bob.id, "alice-device", vec![6])
        .await
        .unwrap();
    assert_eq!(
        store.psk_by_identity("alice-device").await.unwrap().account,
        bob.id
    );
    assert_err!(
        store.set_psk(alice.id, "", vec![1]).await,
        Error::Invalid(_)
    );

    let all: Vec<String> = store
        .all_psks()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.identity)
        .collect();
    assert_eq!(all, ["alice-device", "alice-phone"]);
    // Disabled accounts are left out of the PSK cache.
    store
        .set_account_status(bob.id, AccountStatus::Disabled)
        .await
        .unwrap();
    let all: Vec<String> = store
        .all_psks()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.identity)
        .collect();
    assert_eq!(all, ["alice-phone"]);

    store.remove_psk(alice.id).await.unwrap();
    assert!(store.psks_of(alice.id).await.unwrap().is_empty());
    assert_err!(store.remove_psk(alice.id).await, Error::NotFound(_));
    assert_err!(store.psks_of(AccountId(987_654)).await, Error::NotFound(_));
}

async fn addresses(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(account("alice", 1)).await.unwrap();
    let bob = store.create_account(bare_account("bob")).await.unwrap();
    assert_eq!(
        store.addresses(alice.id).await.unwrap(),
        ["sip:alice@example.net", "tel:+358400000001"]
    );
    assert!(store.addresses(bob.id).await.unwrap().is_empty());

    store
        .add_address(bob.id, "tel:+358400000002")
        .await
        .unwrap();
    assert_eq!(
        store
            .account_by_address("tel:+358400000002")
            .await
            .unwrap()
            .id,
        bob.id
    );
    assert_err!(
        store.add_address(bob.id, "tel:+358400000001").await,
        Error::AlreadyExists(_)
    );
    assert_err!(
        store.add_address(bob.id, "tel:+358400000002").await,
        Error::AlreadyExists(_)
    );
    assert_err!(
        store.remove_address(bob.id, "tel:+358400000001").await,
        Error::NotFound(_)
    );
    assert_err!(
        store.add_address(AccountId(987_654), "tel:+1").await,
        Error::NotFound(_)
    );

    store
        .remove_address(alice.id, "tel:+358400000001")
        .await
        .unwrap();
    assert_err!(
        store.account_by_address("tel:+358400000001").await,
        Error::NotFound(_)
    );
    assert_eq!(
        store.addresses(alice.id).await.unwrap(),
        ["sip:alice@example.net"]
    );
    // A freed address can be given to someone else.
    store
        .add_address(bob.id, "tel:+358400000001")
        .await
        .unwrap();
    assert_eq!(
        store
            .account_by_address("tel:+358400000001")
            .await
            .unwrap()
            .id,
        bob.id
    );
    assert_err!(
        store.addresses(AccountId(987_654)).await,
        Error::NotFound(_)
    );
}

async fn mailboxes(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(account("alice", 1)).await.unwrap();
    let bob = store.create_account(bare_account("bob")).await.unwrap();
    let mut rx = store.changes().subscribe();

    let archive = store
        .create_mailbox(
            alice.id,
            NewMailbox {
                name: "Archive/".into(),
                special_use: Some("Archive".into()),
                subscribed: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (archive.name.as_str(), archive.uidnext, archive.subscribed),
        ("Archive", 1, false)
    );
    assert_eq!(archive.special_use.as_deref(), Some("Archive"));
    assert_eq!(
        store.mailbox_by_id(alice.id, archive.id).await.unwrap(),
        archive
    );
    let change = next_change(&mut rx).await;
    assert_eq!(
        (change.mailbox, change.kind),
        (Some(archive.id), ChangeKind::Mailboxes)
    );

    for existing in ["Archive", "INBOX", "inbox", "InBoX"] {
        assert_err!(
            store.create_mailbox(alice.id, folder(existing)).await,
            Error::AlreadyExists(_)
        );
    }
    for bad in ["", "a//b", "/a", "bell\u{7}"] {
        assert_err!(
            store.create_mailbox(alice.id, folder(bad)).await,
            Error::Invalid(_)
        );
    }
    assert_err!(
        store.create_mailbox(AccountId(987_654), folder("X")).await,
        Error::NotFound(_)
    );
    // Names are per account; ids are not shared.
    let bobs = store
        .create_mailbox(bob.id, folder("Archive"))
        .await
        .unwrap();
    assert_err!(
        store.mailbox_by_id(alice.id, bobs.id).await,
        Error::NotFound(_)
    );
    assert_err!(
        store.append(alice.id, bobs.id, message("x")).await,
        Error::NotFound(_)
    );

    assert_eq!(
        store.mailbox(alice.id, "inbox").await.unwrap().name,
        "INBOX"
    );
    assert_err!(store.mailbox(alice.id, "archive").await, Error::NotFound(_));

    // Delete: messages and their blobs go; INBOX cannot be deleted.
    let appended = store
        .append(alice.id, archive.id, message("to be deleted"))
        .await
        .unwrap();
    let hash = fetch_all(store, alice.id, archive.id).await[0].blob.clone();
    assert!(env.blob_exists(alice.id, &hash).await);
    assert_eq!(appended.uidvalidity, archive.uidvalidity);
    assert_err!(
        store.delete_mailbox(alice.id, "inbox").await,
        Error::Invalid(_)
    );
    store.delete_mailbox(alice.id, "Archive").await.unwrap();
    assert_err!(store.mailbox(alice.id, "Archive").await, Error::NotFound(_));
    assert_err!(
        store.mailbox_by_id(alice.id, archive.id).await,
        Error::NotFound(_)
    );
    assert!(!env.blob_exists(alice.id, &hash).await);
    assert_err!(store.blob(alice.id, &hash).await, Error::NotFound(_));
    assert_err!(
        store.delete_mailbox(alice.id, "Archive").await,
        Error::NotFound(_)
    );

    // Created again: a new mailbox, with a new UIDVALIDITY, even within the same second.
    let again = store
        .create_mailbox(alice.id, folder("Archive"))
        .await
        .unwrap();
    assert_ne!(again.id, archive.id);
    assert_ne!(again.uidvalidity, archive.uidvalidity);
    assert_eq!(again.uidnext, 1);
    store.delete_mailbox(alice.id, "Archive").await.unwrap();
    let third = store
        .create_mailbox(alice.id, folder("Archive"))
        .await
        .unwrap();
    assert!(![archive.uidvalidity, again.uidvalidity].contains(&third.uidvalidity));

    // Deleting a parent leaves its children.
    store
        .create_mailbox(alice.id, folder("Archive/2024"))
        .await
        .unwrap();
    store.delete_mailbox(alice.id, "Archive").await.unwrap();
    let names: Vec<String> = store
        .list_mailboxes(alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["Archive/2024", "INBOX", "Sent"]);
    assert_err!(
        store.mailbox_counts(alice.id, archive.id).await,
        Error::NotFound(_)
    );
}

async fn subscriptions(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(account("alice", 1)).await.unwrap();
    assert_eq!(
        store.subscriptions(alice.id).await.unwrap(),
        ["INBOX", "Sent"]
    );

    store
        .create_mailbox(alice.id, folder("Lists"))
        .await
        .unwrap();
    assert!(!store.mailbox(alice.id, "Lists").await.unwrap().subscribed);
    store.set_subscribed(alice.id, "Lists", true).await.unwrap();
    store.set_subscribed(alice.id, "Lists", true).await.unwrap();
    assert!(store.mailbox(alice.id, "Lists").await.unwrap().subscribed);
    // A name that is not (yet) a mailbox may be subscribed to.
    store
        .set_subscribed(alice.id, "Future", true)
        .await
        .unwrap();
    assert_eq!(
        store.subscriptions(alice.id).await.unwrap(),
        ["Future", "INBOX", "Lists", "Sent"]
    );

    // A subscription outlives its mailbox (RFC 3501 6.3.6).
    store.delete_mailbox(alice.id, "Lists").await.unwrap();
    assert_eq!(
        store.subscriptions(alice.id).await.unwrap(),
        ["Future", "INBOX", "Lists", "Sent"]
    );
    store
        .set_subscribed(alice.id, "Lists", false)
        .await
        .unwrap();
    store
        .set_subscribed(alice.id, "Lists", false)
        .await
        .unwrap();
    store
        .set_subscribed(alice.id, "inbox", false)
        .await
        .unwrap();
    assert_eq!(
        store.subscriptions(alice.id).await.unwrap(),
        ["Future", "Sent"]
    );
    assert!(!store.mailbox(alice.id, "INBOX").await.unwrap().subscribed);
    assert_err!(
        store.set_subscribed(AccountId(987_654), "X", true).await,
        Error::NotFound(_)
    );
    assert_err!(
        store.subscriptions(AccountId(987_654)).await,
        Error::NotFound(_)
    );
}

async fn rename_with_children(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    for name in ["Work", "Work/A", "Work/A/B", "Workshop"] {
        store.create_mailbox(alice.id, folder(name)).await.unwrap();
    }
    let a = store.mailbox(alice.id, "Work/A").await.unwrap();
    store.append(alice.id, a.id, message("kept")).await.unwrap();
    store
        .set_subscribed(alice.id, "Work/A", true)
        .await
        .unwrap();

    let mut rx = store.changes().subscribe();
    store.rename_mailbox(alice.id, "Work", "Job").await.unwrap();
    let names: Vec<String> = store
        .list_mailboxes(alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["INBOX", "Job", "Job/A", "Job/A/B", "Workshop"]);
    // Same mailbox, same UIDVALIDITY, same messages; the subscription moved along.
    let renamed = store.mailbox(alice.id, "Job/A").await.unwrap();
    assert_eq!(
        (renamed.id, renamed.uidvalidity, renamed.uidnext),
        (a.id, a.uidvalidity, 2)
    );
    assert!(renamed.subscribed);
    assert_eq!(uids(&fetch_all(store, alice.id, a.id).await), [1]);
    assert_eq!(
        store.subscriptions(alice.id).await.unwrap(),
        ["INBOX", "Job/A"]
    );
    let change = next_change(&mut rx).await;
    assert_eq!(change.kind, ChangeKind::Mailboxes);

    assert_err!(
        store.rename_mailbox(alice.id, "Job", "Workshop").await,
        Error::AlreadyExists(_)
    );
    assert_err!(
        store.rename_mailbox(alice.id, "Job", "INBOX").await,
        Error::AlreadyExists(_)
    );
    assert_err!(
        store.rename_mailbox(alice.id, "Job", "Job").await,
        Error::AlreadyExists(_)
    );
    assert_err!(
        store.rename_mailbox(alice.id, "Job", "Job/A/C").await,
        Error::Invalid(_)
    );
    assert_err!(
        store.rename_mailbox(alice.id, "Nothing", "Else").await,
        Error::NotFound(_)
    );
    // A child's new name taken: nothing is renamed.
    store
        .create_mailbox(alice.id, folder("Task/A"))
        .await
        .unwrap();
    assert_err!(
        store.rename_mailbox(alice.id, "Job", "Task").await,
        Error::AlreadyExists(_)
    );
    assert!(store.mailbox(alice.id, "Job").await.is_ok());
    assert_err!(store.mailbox(alice.id, "Task").await, Error::NotFound(_));

    // A leaf, into a new hierarchy level.
    store
        .rename_mailbox(alice.id, "Workshop", "Job/Shop")
        .await
        .unwrap();
    assert!(store.mailbox(alice.id, "Job/Shop").await.is_ok());
    assert_err!(
        store.mailbox(alice.id, "Workshop").await,
        Error::NotFound(_)
    );
}

async fn rename_inbox(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let inbox_before = store.mailbox(alice.id, "INBOX").await.unwrap();
    for (i, system) in [0, SystemFlags::SEEN, SystemFlags::FLAGGED]
        .into_iter()
        .enumerate()
    {
        store
            .append(
                alice.id,
                inbox_before.id,
                flagged(&format!("m{i}"), system, &["$Label1"]),
            )
            .await
            .unwrap();
    }
    store
        .create_mailbox(alice.id, folder("INBOX/Child"))
        .await
        .unwrap();
    let before = fetch_all(store, alice.id, inbox_before.id).await;
    let modseq_before = store
        .mailbox_by_id(alice.id, inbox_before.id)
        .await
        .unwrap()
        .highestmodseq;

    let mut rx = store.changes().subscribe();
    store
        .rename_mailbox(alice.id, "inbox", "Old Inbox")
        .await
        .unwrap();

    // INBOX: still there, same identity, empty; its UIDs go on from where they were.
    let inbox = store.mailbox(alice.id, "INBOX").await.unwrap();
    assert_eq!(
        (inbox.id, inbox.uidvalidity, inbox.uidnext),
        (inbox_before.id, inbox_before.uidvalidity, 4)
    );
    assert_eq!(
        store
            .mailbox_counts(alice.id, inbox.id)
            .await
            .unwrap()
            .messages,
        0
    );
    assert!(fetch_all(store, alice.id, inbox.id).await.is_empty());
    let caught_up = store
        .changes_since(alice.id, inbox.id, modseq_before)
        .await
        .unwrap();
    assert_eq!(caught_up.expunged, [1, 2, 3]);
    assert!(caught_up.changed.is_empty());
    assert!(caught_up.highestmodseq > modseq_before);

    // The new mailbox has the messages, flags and keywords, under a new UIDVALIDITY.
    let old = store.mailbox(alice.id, "Old Inbox").await.unwrap();
    assert_ne!(old.uidvalidity, inbox.uidvalidity);
    let moved = fetch_all(store, alice.id, old.id).await;
    let flags_of = |metas: &[MessageMeta]| {
        metas
            .iter()
            .map(|m| (m.flags.clone(), m.blob.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(flags_of(&moved), flags_of(&before));
    assert!(
        moved
            .iter()
            .all(|m| m.uid < old.uidnext && m.modseq <= old.highestmodseq)
    );
    assert_eq!(
        store.mailbox_keywords(alice.id, old.id).await.unwrap(),
        ["$Label1"]
    );
    // INBOX's inferiors are unaffected.
    assert!(store.mailbox(alice.id, "INBOX/Child").await.is_ok());
    assert_err!(
        store.mailbox(alice.id, "Old Inbox/Child").await,
        Error::NotFound(_)
    );

    let mut kinds = [
        next_change(&mut rx).await.kind,
        next_change(&mut rx).await.kind,
    ];
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(kinds, [ChangeKind::Expunge, ChangeKind::Mailboxes]);

    let next = store
        .append(alice.id, inbox.id, message("new"))
        .await
        .unwrap();
    assert_eq!(next.uid, 4);
    assert_err!(
        store.rename_mailbox(alice.id, "INBOX", "Old Inbox").await,
        Error::AlreadyExists(_)
    );
    // Once more: INBOX can be renamed again and again.
    store
        .rename_mailbox(alice.id, "INBOX", "Older")
        .await
        .unwrap();
    assert_eq!(
        uids(
            &fetch_all(
                store,
                alice.id,
                store.mailbox(alice.id, "Older").await.unwrap().id
            )
            .await
        ),
        [4]
    );
}

async fn append_fetch_blob(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let bob = store.create_account(bare_account("bob")).await.unwrap();
    let inbox_mb = store.mailbox(alice.id, "INBOX").await.unwrap();
    let inbox_id = inbox_mb.id;

    let mut rx = store.changes().subscribe();
    let first = store
        .append(
            alice.id,
            inbox_id,
            flagged("one", SystemFlags::SEEN, &["$Forwarded", "work"]),
        )
        .await
        .unwrap();
    assert_eq!(
        (first.mailbox, first.uid, first.uidvalidity),
        (inbox_id, 1, inbox_mb.uidvalidity)
    );
    assert!(first.modseq > inbox_mb.highestmodseq);
    let change = next_change(&mut rx).await;
    assert_eq!(
        change,
        Change {
            account: alice.id,
            mailbox: Some(inbox_id),
            modseq: first.modseq,
            kind: ChangeKind::Append,
        }
    );
    let second = store
        .append(alice.id, inbox_id, message("two"))
        .await
        .unwrap();
    let third = store
        .append(
            alice.id,
            inbox_id,
            NewMessage {
                internal_date: None,
                internal_date_tz: -300,
                ..flagged("three", SystemFlags::DRAFT, &["Work"])
            },
        )
        .await
        .unwrap();
    assert_eq!((second.uid, third.uid), (2, 3));
    assert!(first.modseq < second.modseq && second.modseq < third.modseq);

    let all = fetch_all(store, alice.id, inbox_id).await;
    assert_eq!(uids(&all), [1, 2, 3]);
    let one = &all[0];
    assert_eq!(one.modseq, first.modseq);
    assert_eq!(one.flags, flags(SystemFlags::SEEN, &["$Forwarded", "work"]));
    assert_eq!(
        (one.internal_date, one.internal_date_tz),
        (1_700_000_000, 120)
    );
    let content = message("one").content;
    assert_eq!(one.size, content.len() as u64);
    assert_eq!(store.blob(alice.id, &one.blob).await.unwrap(), content);
    assert_eq!(one.blob.len(), 64);
    assert!(
        all[2].internal_date > 1_700_000_000,
        "no internal date given: now"
    );
    assert_eq!(all[2].internal_date_tz, -300);
    // A blob is the account's own.
    assert_err!(store.blob(bob.id, &one.blob).await, Error::NotFound(_));

    // Ranges: any order, reversed, overlapping; rows come in UID order.
    let picked = fetch(
        store,
        alice.id,
        inbox_id,
        &[
            UidRange::one(3),
            UidRange { start: 2, end: 1 },
            UidRange::one(1),
        ],
    )
    .await;
    assert_eq!(uids(&picked), [1, 2, 3]);
    assert_eq!(
        uids(
            &fetch(
                store,
                alice.id,
                inbox_id,
                &[UidRange::one(3), UidRange::one(1)]
            )
            .await
        ),
        [1, 3]
    );
    assert!(
        fetch(store, alice.id, inbox_id, &[UidRange { start: 4, end: 10 }])
            .await
            .is_empty()
    );
    assert!(fetch(store, alice.id, inbox_id, &[]).await.is_empty());
    let missing: Result<Vec<MessageMeta>, Error> = store
        .fetch(alice.id, MailboxId(987_654), &[UidRange::all()])
        .try_collect()
        .await;
    assert_err!(missing, Error::NotFound(_));

    let counts = store.mailbox_counts(alice.id, inbox_id).await.unwrap();
    assert_eq!((counts.messages, counts.unseen), (3, 2));
    assert_eq!(counts.size, all.iter().map(|m| m.size).sum::<u64>());
    assert_eq!(
        store.mailbox_keywords(alice.id, inbox_id).await.unwrap(),
        ["$Forwarded", "work"]
    );

    // Same content twice: one blob.
    let blobs = env.blob_rows(alice.id).await;
    store
        .append(alice.id, inbox_id, message("two"))
        .await
        .unwrap();
    assert_eq!(env.blob_rows(alice.id).await, blobs);
    assert_eq!(blobs, 3);

    // Many messages: streamed in order.
    for i in 0..40 {
        store
            .append(alice.id, inbox_id, message(&format!("bulk {i}")))
            .await
            .unwrap();
    }
    let mut stream = store.fetch(
        alice.id,
        inbox_id,
        &[UidRange {
            start: 5,
            end: u32::MAX,
        }],
    );
    let mut expected = 5;
    while let Some(meta) = stream.try_next().await.unwrap() {
        assert_eq!(meta.uid, expected);
        expected += 1;
    }
    assert_eq!(expected, 45);
    drop(stream);

    assert_err!(
        store
            .append(alice.id, MailboxId(987_654), message("x"))
            .await,
        Error::NotFound(_)
    );
    assert_err!(
        store
            .append(alice.id, inbox_id, flagged("x", 0, &["two words"]))
            .await,
        Error::Invalid(_)
    );
    assert_eq!(store.mailbox(alice.id, "INBOX").await.unwrap().uidnext, 45);
}

async fn concurrent_appends(env: &Env) {
    let alice = env
        .store
        .create_account(bare_account("alice"))
        .await
        .unwrap();
    let inbox_id = inbox(&env.store, alice.id).await;
    // Two stores on one database: two nodes (PostgreSQL), two pools (SQLite).
    let stores = [env.store.clone(), env.another_store().await];
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = stores[i % 2].clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store
                .append(alice.id, inbox_id, message(&format!("racer {i}")))
                .await
        }));
    }
    let mut got = Vec::new();
    for task in tasks {
        got.push(task.await.unwrap().unwrap());
    }
    let mut uids_got: Vec<u32> = got.iter().map(|a| a.uid).collect();
    uids_got.sort_unstable();
    assert_eq!(
        uids_got,
        (1..=8).collect::<Vec<u32>>(),
        "8 distinct UIDs, no gaps"
    );
    let mut modseqs: Vec<u64> = got.iter().map(|a| a.modseq).collect();
    modseqs.sort_unstable();
    modseqs.dedup();
    assert_eq!(modseqs.len(), 8, "8 distinct MODSEQs");

    let mailbox = env.store.mailbox_by_id(alice.id, inbox_id).await.unwrap();
    assert_eq!(mailbox.uidnext, 9);
    assert!(mailbox.highestmodseq >= *modseqs.last().unwrap());
    let all = fetch_all(&stores[1], alice.id, inbox_id).await;
    assert_eq!(uids(&all), (1..=8).collect::<Vec<u32>>());
    stores[1].close().await;
}

async fn copy_and_move(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let inbox_id = inbox(store, alice.id).await;
    let archive = store
        .create_mailbox(alice.id, folder("Archive"))
        .await
        .unwrap();
    store
        .append(
            alice.id,
            inbox_id,
            flagged("a", SystemFlags::SEEN, &["$Done"]),
        )
        .await
        .unwrap();
    store
        .append(alice.id, inbox_id, flagged("b", SystemFlags::ANSWERED, &[]))
        .await
        .unwrap();
    store
        .append(alice.id, inbox_id, message("c"))
        .await
        .unwrap();
    let source = fetch_all(store, alice.id, inbox_id).await;
    let blobs = env.blob_rows(alice.id).await;
    let usage = store.quota_usage(alice.id).await.unwrap();

    let mut rx = store.changes().subscribe();
    let copied = store
        .copy(
            alice.id,
            inbox_id,
            &[UidRange::one(3), UidRange { start: 1, end: 2 }],
            archive.id,
        )
        .await
        .unwrap();
    assert_eq!(copied.uidvalidity, archive.uidvalidity);
    assert_eq!(
        (copied.source_uids.as_slice(), copied.dest_uids.as_slice()),
        (&[1, 2, 3][..], &[1, 2, 3][..])
    );
    assert_eq!(env.blob_rows(alice.id).await, blobs, "COPY adds no blob");
    assert_eq!(store.quota_usage(alice.id).await.unwrap(), usage * 2);
    let dest = fetch_all(store, alice.id, archive.id).await;
    for (s, d) in source.iter().zip(&dest) {
        assert_eq!(
            (&s.flags, &s.blob, s.size, s.internal_date),
            (&d.flags, &d.blob, d.size, d.internal_date)
        );
    }
    assert_eq!(
        store.mailbox_keywords(alice.id, archive.id).await.unwrap(),
        ["$Done"]
    );
    let change = next_change(&mut rx).await;
    assert_eq!(
        (change.mailbox, change.kind),
        (Some(archive.id), ChangeKind::Append)
    );
    let archive_now = store.mailbox_by_id(alice.id, archive.id).await.unwrap();
    assert_eq!(archive_now.uidnext, 4);
    assert!(dest.iter().all(|m| m.modseq <= archive_now.highestmodseq));

    // Nothing in the ranges: nothing copied, nothing changed.
    let none = store
        .copy(
            alice.id,
            inbox_id,
            &[UidRange { start: 50, end: 60 }],
            archive.id,
        )
        .await
        .unwrap();
    assert!(none.source_uids.is_empty() && none.dest_uids.is_empty());
    assert_eq!(
        store.mailbox_by_id(alice.id, archive.id).await.unwrap(),
        archive_now
    );
    assert_err!(
        store
            .copy(alice.id, inbox_id, &[UidRange::all()], MailboxId(987_654))
            .await,
        Error::NotFound(_)
    );

    // MOVE: copy and expunge in one go.
    let inbox_modseq = store
        .mailbox_by_id(alice.id, inbox_id)
        .await
        .unwrap()
        .highestmodseq;
    let moved = store
        .move_messages(alice.id, inbox_id, &[UidRange::one(2)], archive.id)
        .await
        .unwrap();
    assert_eq!(
        (moved.source_uids.as_slice(), moved.dest_uids.as_slice()),
        (&[2][..], &[4][..])
    );
    assert_eq!(uids(&fetch_all(store, alice.id, inbox_id).await), [1, 3]);
    let moved_meta = fetch(store, alice.id, archive.id, &[UidRange::one(4)]).await;
    assert_eq!(moved_meta[0].flags, source[1].flags);
    let since = store
        .changes_since(alice.id, inbox_id, inbox_modseq)
        .await
        .unwrap();
    assert_eq!(since.expunged, [2]);
    // The source's row stays readable for sessions not yet told of the move.
    let kept = store
        .fetch_expunged(alice.id, inbox_id, &[UidRange::all()])
        .await
        .unwrap();
    assert_eq!(
        (uids(&kept), kept[0].blob.as_str(), kept[0].modseq),
        (vec![2], source[1].blob.as_str(), since.highestmodseq)
    );
    assert_eq!(env.blob_rows(alice.id).await, blobs);
    assert_eq!(store.quota_usage(alice.id).await.unwrap(), usage * 2);
    let mut kinds = [next_change(&mut rx).await, next_change(&mut rx).await];
    kinds.sort_by_key(|c| format!("{:?}", c.kind));
    assert_eq!(
        (kinds[0].kind, kinds[0].mailbox),
        (ChangeKind::Append, Some(archive.id))
    );
    assert_eq!(
        (kinds[1].kind, kinds[1].mailbox),
        (ChangeKind::Expunge, Some(inbox_id))
    );

    // MOVE everything back, then within one mailbox.
    let back = store
        .move_messages(alice.id, archive.id, &[UidRange::all()], inbox_id)
        .await
        .unwrap();
    assert_eq!(back.source_uids, [1, 2, 3, 4]);
    assert_eq!(back.dest_uids, [4, 5, 6, 7]);
    assert!(fetch_all(store, alice.id, archive.id).await.is_empty());
    let same = store
        .move_messages(alice.id, inbox_id, &[UidRange::all()], inbox_id)
        .await
        .unwrap();
    assert_eq!(same.dest_uids, [8, 9, 10, 11, 12, 13]);
    assert_eq!(
        uids(&fetch_all(store, alice.id, inbox_id).await),
        [8, 9, 10, 11, 12, 13]
    );
    assert_eq!(env.blob_rows(alice.id).await, blobs);
}

async fn store_flags(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let inbox_id = inbox(store, alice.id).await;
    for body in ["a", "b", "c"] {
        store
            .append(alice.id, inbox_id, message(body))
            .await
            .unwrap();
    }
    let seen = flags(SystemFlags::SEEN, &[]);
    let modseq0 = store
        .mailbox_by_id(alice.id, inbox_id)
        .await
        .unwrap()
        .highestmodseq;

    let mut rx = store.changes().subscribe();
    let changed = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::all()],
            FlagOp::Add,
            &seen,
            None,
        )
        .await
        .unwrap();
    assert_eq!(uids(&changed), [1, 2, 3]);
    assert!(
        changed
            .iter()
            .all(|m| m.flags == seen && m.modseq > modseq0)
    );
    let modseq1 = store
        .mailbox_by_id(alice.id, inbox_id)
        .await
        .unwrap()
        .highestmodseq;
    assert_eq!(changed[0].modseq, modseq1);
    let change = next_change(&mut rx).await;
    assert_eq!((change.kind, change.modseq), (ChangeKind::Flags, modseq1));

    // Changing nothing: nothing returned, nothing bumped, nothing published.
    let again = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::all()],
            FlagOp::Add,
            &seen,
            None,
        )
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(
        store
            .mailbox_by_id(alice.id, inbox_id)
            .await
            .unwrap()
            .highestmodseq,
        modseq1
    );
    quiet(&mut rx).await;

    let unseen = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::one(2)],
            FlagOp::Remove,
            &seen,
            None,
        )
        .await
        .unwrap();
    assert_eq!(uids(&unseen), [2]);
    assert_eq!(unseen[0].flags, Flags::default());
    let _ = next_change(&mut rx).await;

    // Keywords: added, compared case-insensitively, removed; Replace sets exactly.
    let important = flags(0, &["$Important"]);
    let added = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::one(1), UidRange::one(3)],
            FlagOp::Add,
            &important,
            None,
        )
        .await
        .unwrap();
    assert_eq!(uids(&added), [1, 3]);
    assert_eq!(added[0].flags, flags(SystemFlags::SEEN, &["$Important"]));
    let same = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::all()],
            FlagOp::Add,
            &flags(0, &["$IMPORTANT"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(uids(&same), [2], "only the message without it");
    let replaced = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::one(1)],
            FlagOp::Replace,
            &flags(SystemFlags::FLAGGED, &["Work", "$Important"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        replaced[0].flags,
        flags(SystemFlags::FLAGGED, &["$Important", "Work"])
    );
    let removed = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::one(1)],
            FlagOp::Remove,
            &flags(SystemFlags::FLAGGED, &["work"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(removed[0].flags, flags(0, &["$Important"]));
    let mut keywords = store.mailbox_keywords(alice.id, inbox_id).await.unwrap();
    keywords.sort_by_key(|k| k.to_ascii_lowercase());
    assert_eq!(keywords, ["$Important", "Work"]);

    // UNCHANGEDSINCE: messages modified after it are left alone.
    let all = fetch_all(store, alice.id, inbox_id).await;
    let oldest = all.iter().map(|m| m.modseq).min().unwrap();
    let conditional = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::all()],
            FlagOp::Add,
            &flags(SystemFlags::ANSWERED, &[]),
            Some(oldest),
        )
        .await
        .unwrap();
    let expected: Vec<u32> = all
        .iter()
        .filter(|m| m.modseq <= oldest)
        .map(|m| m.uid)
        .collect();
    assert_eq!(uids(&conditional), expected);
    assert!(!expected.is_empty() && expected.len() < 3);
    let none = store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::all()],
            FlagOp::Add,
            &flags(SystemFlags::DRAFT, &[]),
            Some(0),
        )
        .await
        .unwrap();
    assert!(none.is_empty());

    // HIGHESTMODSEQ is never below a message's MODSEQ; catching up sees every change.
    let mailbox = store.mailbox_by_id(alice.id, inbox_id).await.unwrap();
    let all = fetch_all(store, alice.id, inbox_id).await;
    assert!(all.iter().all(|m| m.modseq <= mailbox.highestmodseq));
    let since = store
        .changes_since(alice.id, inbox_id, modseq1)
        .await
        .unwrap();
    assert_eq!(uids(&since.changed), [1, 2, 3]);
    assert_eq!(since.changed, all);
    assert_eq!(
        (since.highestmodseq, since.uidnext),
        (mailbox.highestmodseq, 4)
    );
    let nothing = store
        .changes_since(alice.id, inbox_id, mailbox.highestmodseq)
        .await
        .unwrap();
    assert!(nothing.changed.is_empty() && nothing.expunged.is_empty());

    assert_err!(
        store
            .store_flags(
                alice.id,
                inbox_id,
                &[UidRange::all()],
                FlagOp::Add,
                &flags(0, &["bad(kw"]),
                None
            )
            .await,
        Error::Invalid(_)
    );
    assert_err!(
        store
            .store_flags(
                alice.id,
                MailboxId(987_654),
                &[UidRange::all()],
                FlagOp::Add,
                &seen,
                None
            )
            .await,
        Error::NotFound(_)
    );
}

/// STORE ... (UNCHANGEDSINCE n): the failing messages are listed, left alone, and the
/// test is atomic with the change against concurrent writers.
async fn conditional_store(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let inbox_id = inbox(store, alice.id).await;
    for body in ["a", "b", "c"] {
        store
            .append(alice.id, inbox_id, message(body))
            .await
            .unwrap();
    }
    let before = fetch_all(store, alice.id, inbox_id).await;
    let m3 = before[2].modseq;
    assert!(before[0].modseq < m3 && before[1].modseq <= m3);
    // Message 2 changes after m3.
    store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::one(2)],
            FlagOp::Add,
            &flags(SystemFlags::SEEN, &[]),
            None,
        )
        .await
        .unwrap();
    let mut rx = store.changes().subscribe();
    let flagged = flags(SystemFlags::FLAGGED, &[]);
    let outcome = store
        .store_flags_conditional(
            alice.id,
            inbox_id,
            &[UidRange::all()],
            FlagOp::Add,
            &flagged,
            m3,
        )
        .await
        .unwrap();
    assert_eq!(uids(&outcome.changed), [1, 3]);
    assert_eq!(outcome.modified, [2]);
    let highest = store
        .mailbox_by_id(alice.id, inbox_id)
        .await
        .unwrap()
        .highestmodseq;
    assert!(
        outcome
            .changed
            .iter()
            .all(|m| m.flags == flagged && m.modseq == highest)
    );
    let change = next_change(&mut rx).await;
    assert_eq!((change.kind, change.modseq), (ChangeKind::Flags, highest));
    let after = fetch_all(store, alice.id, inbox_id).await;
    assert_eq!(
        after[1].flags,
        flags(SystemFlags::SEEN, &[]),
        "2 left alone"
    );

    // Nothing to change and nothing modified: no bump, nothing published.
    let noop = store
        .store_flags_conditional(
            alice.id,
            inbox_id,
            &[UidRange::one(1), UidRange::one(3)],
            FlagOp::Add,
            &flagged,
            highest,
        )
        .await
        .unwrap();
    assert!(noop.changed.is_empty() && noop.modified.is_empty());
    quiet(&mut rx).await;
    // UNCHANGEDSINCE 0 fails for every message.
    let zero = store
        .store_flags_conditional(
            alice.id,
            inbox_id,
            &[UidRange::all()],
            FlagOp::Remove,
            &flagged,
            0,
        )
        .await
        .unwrap();
    assert!(zero.changed.is_empty());
    assert_eq!(zero.modified, [1, 2, 3]);
    assert_eq!(
        store
            .mailbox_by_id(alice.id, inbox_id)
            .await
            .unwrap()
            .highestmodseq,
        highest
    );

    // Racing writers with the same UNCHANGEDSINCE: exactly one wins, the others are
    // told the message was modified.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .store_flags_conditional(
                        alice.id,
                        inbox_id,
                        &[UidRange::one(1)],
                        FlagOp::Add,
                        &flags(0, &[&format!("racer{i}")]),
                        highest,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        let outcome = task.await.unwrap();
        if outcome.changed.is_empty() {
            assert_eq!(outcome.modified, [1]);
        } else {
            assert!(outcome.modified.is_empty());
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let one = &fetch_all(store, alice.id, inbox_id).await[0];
    assert_eq!(one.flags.keywords.len(), 1, "{:?}", one.flags);
    assert_err!(
        store
            .store_flags_conditional(
                alice.id,
                MailboxId(987_654),
                &[UidRange::all()],
                FlagOp::Add,
                &flagged,
                1
            )
            .await,
        Error::NotFound(_)
    );
}

async fn expunge(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let inbox_id = inbox(store, alice.id).await;
    let archive = store
        .create_mailbox(alice.id, folder("Archive"))
        .await
        .unwrap();
    // 1 and 4 share their content (one blob); 2 and 3 have their own.
    for body in ["shared", "two", "three", "shared"] {
        store
            .append(alice.id, inbox_id, message(body))
            .await
            .unwrap();
    }
    let metas = fetch_all(store, alice.id, inbox_id).await;
    let (shared, two, three) = (
        metas[0].blob.clone(),
        metas[1].blob.clone(),
        metas[2].blob.clone(),
    );
    assert_eq!(metas[3].blob, shared);

    // Nothing \Deleted: nothing expunged, nothing bumped.
    let modseq0 = store
        .mailbox_by_id(alice.id, inbox_id)
        .await
        .unwrap()
        .highestmodseq;
    assert!(
        store
            .expunge(alice.id, inbox_id, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .mailbox_by_id(alice.id, inbox_id)
            .await
            .unwrap()
            .highestmodseq,
        modseq0
    );

    let deleted = flags(SystemFlags::DELETED, &[]);
    store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange { start: 1, end: 3 }],
            FlagOp::Add,
            &deleted,
            None,
        )
        .await
        .unwrap();
    let modseq1 = store
        .mailbox_by_id(alice.id, inbox_id)
        .await
        .unwrap()
        .highestmodseq;
    let mut rx = store.changes().subscribe();
    // UID EXPUNGE: only within the ranges.
    let gone = store
        .expunge(alice.id, inbox_id, Some(&[UidRange { start: 2, end: 4 }]))
        .await
        .unwrap();
    assert_eq!(gone, [2, 3]);
    assert_eq!(uids(&fetch_all(store, alice.id, inbox_id).await), [1, 4]);
    let change = next_change(&mut rx).await;
    assert_eq!(
        (change.kind, change.mailbox),
        (ChangeKind::Expunge, Some(inbox_id))
    );
    let since = store
        .changes_since(alice.id, inbox_id, modseq1)
        .await
        .unwrap();
    assert_eq!(since.expunged, [2, 3]);
    assert!(since.changed.is_empty());
    assert_eq!(since.highestmodseq, change.modseq);
    assert!(change.modseq > modseq1);

    // Expunged messages stay readable, as they were, for sessions not yet told:
    // rows (flags as at the expunge, the expunge's MODSEQ) and blobs.
    let kept = store
        .fetch_expunged(alice.id, inbox_id, &[UidRange::all()])
        .await
        .unwrap();
    assert_eq!(uids(&kept), [2, 3]);
    assert_eq!(
        (kept[0].blob.as_str(), kept[1].blob.as_str()),
        (two.as_str(), three.as_str())
    );
    assert_eq!(
        (kept[0].size, kept[0].flags.clone()),
        (metas[1].size, deleted.clone())
    );
    assert_eq!(kept[0].modseq, change.modseq);
    assert_eq!(
        (kept[0].internal_date, kept[0].internal_date_tz),
        (metas[1].internal_date, metas[1].internal_date_tz)
    );
    assert!(
        store
            .blob(alice.id, &two)
            .await
            .unwrap()
            .ends_with(b"two\r\n")
    );
    assert!(
        store
            .fetch_expunged(alice.id, inbox_id, &[UidRange::one(1), UidRange::one(4)])
            .await
            .unwrap()
            .is_empty(),
        "live messages are not expunged ones"
    );
    assert!(
        store
            .fetch_expunged(alice.id, archive.id, &[UidRange::all()])
            .await
            .unwrap()
            .is_empty()
    );
    // Kept content is not the subscriber's usage any more.
    assert_eq!(
        store.quota_usage(alice.id).await.unwrap(),
        metas[0].size + metas[3].size
    );
    // Content expunged later than the cut-off stays; purging at or after it, the
    // rows' data and the blobs no message refers to any more go; shared ones stay.
    let expunged_at = now_secs();
    assert_eq!(store.purge_expunged(expunged_at - 3600).await.unwrap(), 0);
    assert!(env.blob_exists(alice.id, &two).await);
    assert_eq!(store.purge_expunged(expunged_at + 1).await.unwrap(), 2);
    assert!(!env.blob_exists(alice.id, &two).await);
    assert!(!env.blob_exists(alice.id, &three).await);
    assert_err!(store.blob(alice.id, &two).await, Error::NotFound(_));
    assert!(env.blob_exists(alice.id, &shared).await);
    assert!(
        store
            .fetch_expunged(alice.id, inbox_id, &[UidRange::all()])
            .await
            .unwrap()
            .is_empty()
    );
    // The tombstones themselves stay (QRESYNC).
    assert_eq!(
        store
            .expunged_since(alice.id, inbox_id, modseq1, None)
            .await
            .unwrap(),
        [2, 3]
    );
    assert_eq!(store.purge_expunged(expunged_at + 1).await.unwrap(), 0);

    assert_eq!(store.expunge(alice.id, inbox_id, None).await.unwrap(), [1]);
    assert!(
        env.blob_exists(alice.id, &shared).await,
        "message 4 still refers to it"
    );
    let from_start = store.changes_since(alice.id, inbox_id, 0).await.unwrap();
    assert_eq!(from_start.expunged, [1, 2, 3]);
    assert_eq!(uids(&from_start.changed), [4]);

    // A copy keeps the blob alive after the original is expunged.
    store
        .copy(alice.id, inbox_id, &[UidRange::one(4)], archive.id)
        .await
        .unwrap();
    store
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::one(4)],
            FlagOp::Add,
            &deleted,
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.expunge(alice.id, inbox_id, None).await.unwrap(), [4]);
    assert!(env.blob_exists(alice.id, &shared).await);
    store
        .store_flags(
            alice.id,
            archive.id,
            &[UidRange::all()],
            FlagOp::Add,
            &deleted,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.expunge(alice.id, archive.id, None).await.unwrap(),
        [1]
    );
    // Kept while the tombstones keep it, for sessions that still show the message.
    assert_eq!(env.blob_rows(alice.id).await, 1);
    assert_eq!(store.purge_expunged(now_secs() + 1).await.unwrap(), 3);
    assert_eq!(env.blob_rows(alice.id).await, 0);
    assert_eq!(
        store.mailbox_counts(alice.id, inbox_id).await.unwrap(),
        Default::default()
    );
    assert_err!(
        store.expunge(alice.id, MailboxId(987_654), None).await,
        Error::NotFound(_)
    );
    assert_err!(
        store.changes_since(alice.id, MailboxId(987_654), 0).await,
        Error::NotFound(_)
    );
}

/// The tombstones QRESYNC reads (`VANISHED (EARLIER)`): every expunge path writes
/// one (EXPUNGE, UID EXPUNGE — CLOSE is the same call — and MOVE), with the MODSEQ
/// of the expunge, and they can be asked for after a MODSEQ and within UID ranges.
async fn expunged_since(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let inbox_id = inbox(store, alice.id).await;
    let archive = store
        .create_mailbox(alice.id, folder("Archive"))
        .await
        .unwrap();
    for n in 1..=8 {
        store
            .append(alice.id, inbox_id, message(&format!("m{n}")))
            .await
            .unwrap();
    }
    let modseq = |store: &Arc<dyn Store>| {
        let store = store.clone();
        async move {
            store
                .mailbox_by_id(alice.id, inbox_id)
                .await
                .unwrap()
                .highestmodseq
        }
    };
    let start = modseq(store).await;
    assert!(
        store
            .expunged_since(alice.id, inbox_id, 0, None)
            .await
            .unwrap()
            .is_empty()
    );
    let deleted = flags(SystemFlags::DELETED, &[]);
    let delete = |uids: Vec<UidRange>| {
        let store = store.clone();
        let deleted = deleted.clone();
        async move {
            store
                .store_flags(alice.id, inbox_id, &uids, FlagOp::Add, &deleted, None)
                .await
                .unwrap();
        }
    };
    // EXPUNGE: 2 and 3.
    delete(vec![UidRange { start: 2, end: 3 }]).await;
    assert_eq!(
        store.expunge(alice.id, inbox_id, None).await.unwrap(),
        [2, 3]
    );
    let after_expunge = modseq(store).await;
    // UID EXPUNGE: 5 only, though 6 is \Deleted too.
    delete(vec![UidRange { start: 5, end: 6 }]).await;
    assert_eq!(
        store
            .expunge(alice.id, inbox_id, Some(&[UidRange::one(5)]))
            .await
            .unwrap(),
        [5]
    );
    let after_uid_expunge = modseq(store).await;
    // MOVE: 7.
    store
        .move_messages(alice.id, inbox_id, &[UidRange::one(7)], archive.id)
        .await
        .unwrap();

    let since = |from: u64, uids: Option<Vec<UidRange>>| {
        let store = store.clone();
        async move {
            store
                .expunged_since(alice.id, inbox_id, from, uids.as_deref())
                .await
                .unwrap()
        }
    };
    assert_eq!(since(start, None).await, [2, 3, 5, 7]);
    assert_eq!(since(0, None).await, [2, 3, 5, 7]);
    assert_eq!(since(after_expunge, None).await, [5, 7]);
    assert_eq!(since(after_uid_expunge, None).await, [7]);
    assert!(since(modseq(store).await, None).await.is_empty());
    // Within UID ranges.
    assert_eq!(
        since(start, Some(vec![UidRange { start: 3, end: 5 }])).await,
        [3, 5]
    );
    assert_eq!(
        since(
            start,
            Some(vec![
                UidRange::one(2),
                UidRange {
                    start: 6,
                    end: u32::MAX
                }
            ])
        )
        .await,
        [2, 7]
    );
    assert!(since(start, Some(vec![UidRange::one(4)])).await.is_empty());
    // The same as what a catching-up session is told.
    assert_eq!(
        store
            .changes_since(alice.id, inbox_id, start)
            .await
            .unwrap()
            .expunged,
        [2, 3, 5, 7]
    );
    // Another mailbox has its own tombstones: the archive has none.
    assert!(
        store
            .expunged_since(alice.id, archive.id, 0, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_err!(
        store
            .expunged_since(alice.id, MailboxId(987_654), 0, None)
            .await,
        Error::NotFound(_)
    );
}

async fn quota(env: &Env) {
    let store = &env.store;
    let mut new = bare_account("alice");
    new.quota = Some(100);
    let alice = store.create_account(new).await.unwrap();
    let inbox_id = inbox(store, alice.id).await;
    let archive = store
        .create_mailbox(alice.id, folder("Archive"))
        .await
        .unwrap();
    let sized = |n: usize| NewMessage {
        content: vec![b'x'; n],
        ..message("")
    };
    assert_eq!(store.quota_usage(alice.id).await.unwrap(), 0);
    store.append(alice.id, inbox_id, sized(60)).await.unwrap();
    assert_eq!(store.quota_usage(alice.id).await.unwrap(), 60);

    let mut rx = store.changes().subscribe();
    assert_err!(
        store.append(alice.id, inbox_id, sized(50)).await,
        Error::OverQuota
    );
    // The refused append left no trace: no UID used, nothing published.
    assert_eq!(
        store
            .mailbox_by_id(alice.id, inbox_id)
            .await
            .unwrap()
            .uidnext,
        2
    );
    assert_eq!(env.blob_rows(alice.id).await, 1);
    quiet(&mut rx).await;
    store.append(alice.id, inbox_id, sized(40)).await.unwrap();
    assert_eq!(store.quota_usage(alice.id).await.unwrap(), 100);
    let _ = next_change(&mut rx).await;

    // COPY counts again; MOVE does not.
    assert_err!(
        store
            .copy(alice.id, inbox_id, &[UidRange::one(1)], archive.id)
            .await,
        Error::OverQuota
    );
    store
        .move_messages(alice.id, inbox_id, &[UidRange::one(1)], archive.id)
        .await
        .unwrap();
    assert_eq!(store.quota_usage(alice.id).await.unwrap(), 100);

    store.set_quota(alice.id, None).await.unwrap();
    store.append(alice.id, inbox_id, sized(50)).await.unwrap();
    assert_eq!(store.quota_usage(alice.id).await.unwrap(), 150);
    store.set_quota(alice.id, Some(150)).await.unwrap();
    assert_err!(
        store.append(alice.id, inbox_id, sized(1)).await,
        Error::OverQuota
    );
    assert_err!(
        store.quota_usage(AccountId(987_654)).await,
        Error::NotFound(_)
    );
}

async fn claim_recent(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let inbox_id = inbox(store, alice.id).await;
    assert_eq!(store.claim_recent(alice.id, inbox_id).await.unwrap(), 1..1);
    store
        .append(alice.id, inbox_id, message("a"))
        .await
        .unwrap();
    store
        .append(alice.id, inbox_id, message("b"))
        .await
        .unwrap();
    // Nobody has claimed them yet: they count as recent, and peeking claims nothing.
    assert_eq!(
        store
            .mailbox_counts(alice.id, inbox_id)
            .await
            .unwrap()
            .recent,
        2
    );
    assert_eq!(store.unclaimed_recent(alice.id, inbox_id).await.unwrap(), 1);
    assert_eq!(store.unclaimed_recent(alice.id, inbox_id).await.unwrap(), 1);
    // The first session sees 1 and 2 as recent; the next one sees none of them.
    assert_eq!(store.claim_recent(alice.id, inbox_id).await.unwrap(), 1..3);
    assert_eq!(store.claim_recent(alice.id, inbox_id).await.unwrap(), 3..3);
    assert_eq!(
        store
            .mailbox_counts(alice.id, inbox_id)
            .await
            .unwrap()
            .recent,
        0
    );
    assert_eq!(store.unclaimed_recent(alice.id, inbox_id).await.unwrap(), 3);
    store
        .append(alice.id, inbox_id, message("c"))
        .await
        .unwrap();
    assert_eq!(store.claim_recent(alice.id, inbox_id).await.unwrap(), 3..4);
    assert_eq!(store.claim_recent(alice.id, inbox_id).await.unwrap(), 4..4);
    assert_err!(
        store.claim_recent(alice.id, MailboxId(987_654)).await,
        Error::NotFound(_)
    );
    assert_err!(
        store.unclaimed_recent(alice.id, MailboxId(987_654)).await,
        Error::NotFound(_)
    );

    // Racing claims: exactly one gets the new message as recent.
    store
        .append(alice.id, inbox_id, message("d"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_recent(alice.id, inbox_id).await.unwrap()
        }));
    }
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.unwrap());
    }
    claims.sort_unstable_by_key(|r| (r.start, r.end));
    assert_eq!(claims, [4..5, 5..5, 5..5, 5..5]);
}

async fn metadata(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let bob = store.create_account(bare_account("bob")).await.unwrap();
    let inbox_mb = store.mailbox(alice.id, "INBOX").await.unwrap();
    let entry = "/private/comment";

    let mut rx = store.changes().subscribe();
    assert_eq!(store.metadata(alice.id, None, entry).await.unwrap(), None);
    store
        .set_metadata(alice.id, None, entry, Some(b"server value"))
        .await
        .unwrap();
    let change = next_change(&mut rx).await;
    assert_eq!((change.kind, change.mailbox), (ChangeKind::Metadata, None));
    store
        .set_metadata(alice.id, Some(inbox_mb.id), entry, Some(b"inbox value"))
        .await
        .unwrap();
    let change = next_change(&mut rx).await;
    assert_eq!(
        (change.kind, change.mailbox),
        (ChangeKind::Metadata, Some(inbox_mb.id))
    );
    let bumped = store
        .mailbox_by_id(alice.id, inbox_mb.id)
        .await
        .unwrap()
        .highestmodseq;
    assert!(bumped > inbox_mb.highestmodseq);
    assert_eq!(change.modseq, bumped);

    // Entry names compare case-insensitively; server and mailbox entries are apart.
    assert_eq!(
        store
            .metadata(alice.id, None, "/PRIVATE/Comment")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"server value"[..])
    );
    assert_eq!(
        store
            .metadata(alice.id, Some(inbox_mb.id), entry)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"inbox value"[..])
    );
    store
        .set_metadata(alice.id, None, entry, Some(b"changed"))
        .await
        .unwrap();
    assert_eq!(
        store
            .metadata(alice.id, None, entry)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"changed"[..])
    );
    assert_eq!(
        store
            .metadata(alice.id, Some(inbox_mb.id), entry)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"inbox value"[..])
    );
    assert_eq!(store.metadata(bob.id, None, entry).await.unwrap(), None);

    store
        .set_metadata(alice.id, None, entry, None)
        .await
        .unwrap();
    assert_eq!(store.metadata(alice.id, None, entry).await.unwrap(), None);
    store
        .set_metadata(alice.id, None, entry, None)
        .await
        .unwrap();
    assert!(
        store
            .metadata(alice.id, Some(inbox_mb.id), entry)
            .await
            .unwrap()
            .is_some()
    );

    let bobs_inbox = inbox(store, bob.id).await;
    assert_err!(
        store
            .set_metadata(alice.id, Some(bobs_inbox), entry, Some(b"x"))
            .await,
        Error::NotFound(_)
    );
    assert_err!(
        store.metadata(alice.id, Some(bobs_inbox), entry).await,
        Error::NotFound(_)
    );
    assert_err!(
        store
            .set_metadata(AccountId(987_654), None, entry, Some(b"x"))
            .await,
        Error::NotFound(_)
    );
}

/// SETMETADATA's storage: several entries at once, all or none; the entry limit;
/// DEPTH; removal with NIL; values as bytes; entries that follow a renamed mailbox and
/// go with a deleted one.
async fn metadata_entries(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let folder_mb = store
        .create_mailbox(alice.id, folder("Conv"))
        .await
        .unwrap();
    let set = |entries: &[(&str, Option<&[u8]>)]| -> Vec<(String, Option<Vec<u8>>)> {
        entries
            .iter()
            .map(|(e, v)| ((*e).to_owned(), v.map(<[u8]>::to_vec)))
            .collect()
    };
    let binary: &[u8] = b"\x00\xff\r\n bytes";
    let mut rx = store.changes().subscribe();
    let written = store
        .set_metadata_entries(
            alice.id,
            Some(folder_mb.id),
            &set(&[
                ("/private/comment", Some(b"hello")),
                ("/private/Vendor/A", Some(binary)),
                ("/private/vendor/a/deep", Some(b"deep")),
                ("/private/vendorx", Some(b"not below vendor")),
            ]),
            4,
        )
        .await
        .unwrap();
    assert_eq!(written, MetadataWrite::Written);
    // One change and one MODSEQ for the whole command.
    let change = next_change(&mut rx).await;
    assert_eq!(change.kind, ChangeKind::Metadata);
    let after = store.mailbox_by_id(alice.id, folder_mb.id).await.unwrap();
    assert_eq!(after.highestmodseq, folder_mb.highestmodseq + 1);
    assert_eq!(change.modseq, after.highestmodseq);
    quiet(&mut rx).await;

    let names = |found: Vec<(String, Vec<u8>)>| -> Vec<String> {
        found.into_iter().map(|(name, _)| name).collect()
    };
    let below = |entry: &'static str, depth| {
        let store = store.clone();
        async move {
            store
                .metadata_below(alice.id, Some(folder_mb.id), entry, depth)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        below("/private/vendor", MetadataDepth::Entry).await,
        Vec::<(String, Vec<u8>)>::new()
    );
    assert_eq!(
        below("/PRIVATE/VENDOR", MetadataDepth::Children).await,
        vec![("/private/vendor/a".to_owned(), binary.to_vec())]
    );
    assert_eq!(
        names(below("/private/vendor", MetadataDepth::All).await),
        ["/private/vendor/a", "/private/vendor/a/deep"]
    );
    assert_eq!(
        names(below("/private", MetadataDepth::All).await),
        [
            "/private/comment",
            "/private/vendor/a",
            "/private/vendor/a/deep",
            "/private/vendorx"
        ]
    );

    // At the limit: a new entry is refused and nothing of the command is written, but
    // replacing and removing still work.
    let too_many = store
        .set_metadata_entries(
            alice.id,
            Some(folder_mb.id),
            &set(&[
                ("/private/comment", Some(b"replaced?")),
                ("/private/new", Some(b"x")),
            ]),
            4,
        )
        .await
        .unwrap();
    assert_eq!(too_many, MetadataWrite::TooMany);
    quiet(&mut rx).await;
    assert_eq!(
        store
            .metadata(alice.id, Some(folder_mb.id), "/private/comment")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
    let swapped = store
        .set_metadata_entries(
            alice.id,
            Some(folder_mb.id),
            &set(&[("/private/vendorx", None), ("/private/new", Some(b"x"))]),
            4,
        )
        .await
        .unwrap();
    assert_eq!(swapped, MetadataWrite::Written);
    // Removing what is not there changes nothing: no MODSEQ, no change.
    let before = store.mailbox_by_id(alice.id, folder_mb.id).await.unwrap();
    let _ = next_change(&mut rx).await;
    store
        .set_metadata_entries(
            alice.id,
            Some(folder_mb.id),
            &set(&[("/private/absent", None)]),
            4,
        )
        .await
        .unwrap();
    quiet(&mut rx).await;
    assert_eq!(
        store
            .mailbox_by_id(alice.id, folder_mb.id)
            .await
            .unwrap()
            .highestmodseq,
        before.highestmodseq
    );

    // Server entries count apart from mailbox entries.
    assert_eq!(
        store
            .set_metadata_entries(
                alice.id,
                None,
                &set(&[
                    ("/shared/comment", Some(b"s")),
                    ("/private/comment", Some(b"p"))
                ]),
                2,
            )
            .await
            .unwrap(),
        MetadataWrite::Written
    );
    assert_eq!(
        names(
            store
                .metadata_below(alice.id, None, "/shared", MetadataDepth::Children)
                .await
                .unwrap()
        ),
        ["/shared/comment"]
    );
    assert_err!(
        store
            .set_metadata_entries(alice.id, None, &set(&[("", Some(b"x"))]), 2)
            .await,
        Error::Invalid(_)
    );

    // RENAME keeps the entries (same id); DELETE takes them.
    store
        .rename_mailbox(alice.id, "Conv", "Renamed")
        .await
        .unwrap();
    let renamed = store.mailbox(alice.id, "Renamed").await.unwrap();
    assert_eq!(renamed.id, folder_mb.id);
    assert_eq!(
        store
            .metadata(alice.id, Some(renamed.id), "/private/comment")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
    store.delete_mailbox(alice.id, "Renamed").await.unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM metadata WHERE account_id = $1 AND mailbox_id IS NOT NULL",
    )
    .bind(alice.id.0)
    .fetch_one(&env.raw)
    .await
    .unwrap();
    assert_eq!(left, 0);
    assert_err!(
        store
            .metadata_below(alice.id, Some(renamed.id), "/private", MetadataDepth::All)
            .await,
        Error::NotFound(_)
    );
    // A new mailbox of the same name starts with none.
    let again = store
        .create_mailbox(alice.id, folder("Renamed"))
        .await
        .unwrap();
    assert_eq!(
        store
            .metadata_below(alice.id, Some(again.id), "/private", MetadataDepth::All)
            .await
            .unwrap(),
        Vec::<(String, Vec<u8>)>::new()
    );
}

async fn whitelists(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let entry = |kind: &str, value: &str, resolved: &[&str], role: &str| WhitelistEntry {
        kind: kind.parse().unwrap(),
        value: value.into(),
        resolved: resolved.iter().map(|r| (*r).to_owned()).collect(),
        role: role.into(),
    };
    let default = vec![
        entry("ip", "192.0.2.1", &[], "ppg"),
        entry(
            "fqdn",
            "push.example.net",
            &["192.0.2.7", "2001:db8::7"],
            "ppg",
        ),
        entry("e164", "+358401234567", &[], "smsc"),
    ];
    let prov = vec![entry("uri", "sip:ppg@example.net", &[], "ppg")];

    assert_eq!(store.whitelist(alice.id, "").await.unwrap(), None);
    assert!(store.whitelists(alice.id).await.unwrap().is_empty());
    assert!(!store.has_whitelist(alice.id).await.unwrap());
    store.set_whitelist(alice.id, "", &default).await.unwrap();
    assert!(store.has_whitelist(alice.id).await.unwrap());
    store
        .set_whitelist(alice.id, "http://prov.example.net/cp", &prov)
        .await
        .unwrap();
    let got = store.whitelist(alice.id, "").await.unwrap().unwrap();
    assert_eq!((got.context.as_str(), &got.entries), ("", &default));
    assert!(got.loaded_at > 1_600_000_000);
    let all = store.whitelists(alice.id).await.unwrap();
    assert_eq!(
        all.iter().map(|w| w.context.as_str()).collect::<Vec<_>>(),
        ["", "http://prov.example.net/cp"]
    );
    assert_eq!(all[1].entries, prov);

    // Replacing: the new entries exactly, none of the old.
    let replacement = vec![entry("ip", "198.51.100.9", &[], "smsc")];
    store
        .set_whitelist(alice.id, "", &replacement)
        .await
        .unwrap();
    assert_eq!(
        store
            .whitelist(alice.id, "")
            .await
            .unwrap()
            .unwrap()
            .entries,
        replacement
    );
    store.set_whitelist(alice.id, "", &[]).await.unwrap();
    assert!(
        store
            .whitelist(alice.id, "")
            .await
            .unwrap()
            .unwrap()
            .entries
            .is_empty()
    );
    // A reader racing replacements sees one whole list or the other.
    let writer = {
        let store = store.clone();
        let (default, replacement) = (default.clone(), replacement.clone());
        tokio::spawn(async move {
            for i in 0..20 {
                let list = if i % 2 == 0 { &default } else { &replacement };
                store.set_whitelist(alice.id, "race", list).await.unwrap();
            }
        })
    };
    while !writer.is_finished() {
        if let Some(list) = store.whitelist(alice.id, "race").await.unwrap() {
            assert!(
                list.entries == default || list.entries == replacement,
                "torn list: {list:?}"
            );
        }
    }
    writer.await.unwrap();

    store
        .clear_whitelist(alice.id, Some("http://prov.example.net/cp"))
        .await
        .unwrap();
    assert_eq!(
        store
            .whitelist(alice.id, "http://prov.example.net/cp")
            .await
            .unwrap(),
        None
    );
    assert_err!(
        store
            .clear_whitelist(alice.id, Some("http://prov.example.net/cp"))
            .await,
        Error::NotFound(_)
    );
    // Only a non-default context left ("race"): still provisioned.
    store.clear_whitelist(alice.id, Some("")).await.unwrap();
    assert_eq!(store.whitelist(alice.id, "").await.unwrap(), None);
    assert!(store.has_whitelist(alice.id).await.unwrap());
    store.clear_whitelist(alice.id, None).await.unwrap();
    assert!(store.whitelists(alice.id).await.unwrap().is_empty());
    assert!(!store.has_whitelist(alice.id).await.unwrap());
    store.clear_whitelist(alice.id, None).await.unwrap();
    // An empty whitelist is a whitelist.
    store.set_whitelist(alice.id, "", &[]).await.unwrap();
    assert!(store.has_whitelist(alice.id).await.unwrap());
    store.clear_whitelist(alice.id, None).await.unwrap();
    assert!(!store.has_whitelist(alice.id).await.unwrap());
    assert!(!store.has_whitelist(AccountId(987_654)).await.unwrap());
    assert_err!(
        store.set_whitelist(AccountId(987_654), "", &default).await,
        Error::NotFound(_)
    );
    assert_err!(
        store.whitelists(AccountId(987_654)).await,
        Error::NotFound(_)
    );
}

/// Puts a row in every table for the account.
async fn populate(store: &Arc<dyn Store>, account: AccountId, tag: &str) {
    store
        .set_psk(account, &format!("{tag}-psk"), vec![1, 2])
        .await
        .unwrap();
    store
        .set_subscribed(account, &format!("{tag}-gone"), true)
        .await
        .unwrap();
    let inbox_id = inbox(store, account).await;
    let archive = store
        .create_mailbox(account, folder("Archive"))
        .await
        .unwrap();
    for i in 0..3 {
        store
            .append(
                account,
                inbox_id,
                flagged(&format!("{tag} {i}"), 0, &["$Tag"]),
            )
            .await
            .unwrap();
    }
    store
        .append(
            account,
            inbox_id,
            cpm_object("c1", Some("s1"), &format!("{tag}-imdn")),
        )
        .await
        .unwrap();
    store
        .copy(account, inbox_id, &[UidRange::one(1)], archive.id)
        .await
        .unwrap();
    store
        .store_flags(
            account,
            inbox_id,
            &[UidRange::one(2)],
            FlagOp::Add,
            &flags(SystemFlags::DELETED, &[]),
            None,
        )
        .await
        .unwrap();
    store.expunge(account, inbox_id, None).await.unwrap();
    store
        .set_metadata(account, None, "/private/comment", Some(b"server"))
        .await
        .unwrap();
    store
        .set_metadata(account, Some(inbox_id), "/private/comment", Some(b"inbox"))
        .await
        .unwrap();
    let entry = WhitelistEntry {
        kind: WhitelistKind::Ip,
        value: "192.0.2.1".into(),
        resolved: Vec::new(),
        role: "ppg".into(),
    };
    store.set_whitelist(account, "", &[entry]).await.unwrap();
}

async fn remove_account(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(account("alice", 1)).await.unwrap();
    let bob = store.create_account(account("bob", 2)).await.unwrap();
    populate(store, alice.id, "alice").await;
    populate(store, bob.id, "bob").await;
    // Rows for the start-up backfill of the CPM header index (only migration 0005
    // writes them): they go with the account too.
    sqlx::query(
        "INSERT INTO cpm_headers_pending (account_id, mailbox_id, uid) \
         SELECT account_id, mailbox_id, uid FROM messages",
    )
    .execute(&env.raw)
    .await
    .unwrap();

    let tables = env.account_tables().await;
    for expected in [
        "accounts",
        "addresses",
        "blobs",
        "credentials",
        "expunged",
        "mailbox_keywords",
        "mailboxes",
        "messages",
        "metadata",
        "psk_identities",
        "subscriptions",
        "whitelist_entries",
        "whitelists",
        "cpm_headers",
        "cpm_headers_pending",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "{expected} has an account_id column"
        );
    }
    let mut bobs = BTreeMap::new();
    for table in &tables {
        let alices = env.rows_of(table, alice.id).await;
        assert!(alices > 0, "the story puts rows of alice in {table}");
        bobs.insert(table.clone(), env.rows_of(table, bob.id).await);
    }

    let mut rx = store.changes().subscribe();
    store.remove_account(alice.id).await.unwrap();
    let change = next_change(&mut rx).await;
    assert_eq!(
        (change.account, change.mailbox, change.kind),
        (alice.id, None, ChangeKind::Account)
    );
    for table in &tables {
        assert_eq!(
            env.rows_of(table, alice.id).await,
            0,
            "a row of the removed account is left in {table}"
        );
        assert_eq!(
            env.rows_of(table, bob.id).await,
            bobs[table],
            "bob's rows in {table} changed"
        );
    }

    assert_err!(store.account_by_id(alice.id).await, Error::NotFound(_));
    assert_err!(store.account_by_name("alice").await, Error::NotFound(_));
    assert_err!(
        store.account_by_address("sip:alice@example.net").await,
        Error::NotFound(_)
    );
    assert_err!(store.psk_by_identity("alice-psk").await, Error::NotFound(_));
    assert_err!(store.remove_account(alice.id).await, Error::NotFound(_));
    assert_eq!(store.list_accounts().await.unwrap(), vec![bob.clone()]);
    // Bob's world is whole.
    let bobs_inbox = inbox(store, bob.id).await;
    let messages = fetch_all(store, bob.id, bobs_inbox).await;
    assert_eq!(uids(&messages), [1, 3, 4]);
    for meta in &messages {
        store.blob(bob.id, &meta.blob).await.unwrap();
    }
    // The name and the addresses are free again; the new account is a new id.
    let again = store.create_account(account("alice", 1)).await.unwrap();
    assert_ne!(again.id, alice.id);
}

async fn change_bus(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    let inbox_id = inbox(store, alice.id).await;
    let mut local = store.changes().subscribe();
    let appended = store
        .append(alice.id, inbox_id, message("hello"))
        .await
        .unwrap();
    let change = next_change(&mut local).await;
    assert_eq!(
        (change.kind, change.modseq),
        (ChangeKind::Append, appended.modseq)
    );
    quiet(&mut local).await;

    if env.backend != Backend::Postgres {
        return;
    }
    // Two nodes: each hears the other's changes once, and its own once.
    let other = env.another_store().await;
    let mut remote = other.changes().subscribe();
    let appended = store
        .append(alice.id, inbox_id, message("across"))
        .await
        .unwrap();
    let heard = next_change(&mut remote).await;
    assert_eq!(
        heard,
        Change {
            account: alice.id,
            mailbox: Some(inbox_id),
            modseq: appended.modseq,
            kind: ChangeKind::Append,
        }
    );
    assert_eq!(next_change(&mut local).await, heard);
    quiet(&mut local).await;
    quiet(&mut remote).await;

    let flagged = other
        .store_flags(
            alice.id,
            inbox_id,
            &[UidRange::all()],
            FlagOp::Add,
            &flags(SystemFlags::SEEN, &[]),
            None,
        )
        .await
        .unwrap();
    let heard = next_change(&mut local).await;
    assert_eq!(
        (heard.kind, heard.modseq),
        (ChangeKind::Flags, flagged[0].modseq)
    );
    assert_eq!(next_change(&mut remote).await, heard);
    quiet(&mut remote).await;
    quiet(&mut local).await;

    // A refused write tells nobody.
    other.set_quota(alice.id, Some(1)).await.unwrap();
    let _ = next_change(&mut local).await;
    let _ = next_change(&mut remote).await;
    assert_err!(
        other.append(alice.id, inbox_id, message("too big")).await,
        Error::OverQuota
    );
    quiet(&mut local).await;
    quiet(&mut remote).await;
    other.close().await;
}

async fn ping_and_close(env: &Env) {
    let store = env.another_store().await;
    store.ping().await.unwrap();
    store.close().await;
    assert_err!(store.ping().await, Error::Unreachable(_));
    env.store.ping().await.unwrap();
}

// --- opening ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_postgres_names_host_not_password() {
    // Port 1 on the loopback: refused at once.
    for url in [
        "postgres://cpmstore:s3cretPassw0rd@127.0.0.1:1/cpmstore",
        "postgresql://cpmstore:s3cret%2FPassw0rd@127.0.0.1:1/cpmstore",
    ] {
        let Err(error) = cpmstore_storage::open(url, &options()).await else {
            panic!("opened a database on port 1");
        };
        let Error::Unreachable(message) = &error else {
            panic!("expected Unreachable, got {error:?}");
        };
        assert!(message.contains("127.0.0.1"), "host named: {message}");
        let shown = error.to_string();
        assert!(
            !shown.contains("s3cret") && !shown.contains("Passw0rd"),
            "password shown: {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_or_unusable_urls() {
    let Err(error) = cpmstore_storage::open("mysql://root:hunter2@db/x", &options()).await else {
        panic!("opened mysql");
    };
    assert!(matches!(&error, Error::Invalid(_)), "{error:?}");
    assert!(!error.to_string().contains("hunter2"));

    // The parent "directory" is a file: it cannot be created.
    let file = tempfile::NamedTempFile::new().unwrap();
    let url = format!("sqlite://{}/store.db", file.path().display());
    let Err(error) = cpmstore_storage::open(&url, &options()).await else {
        panic!("opened a database under a file");
    };
    assert!(matches!(error, Error::Unreachable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_reopens_with_data_and_migrations_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = cpmstore_storage::open(&url, &options()).await.unwrap();
    let alice = store.create_account(bare_account("alice")).await.unwrap();
    store.close().await;
    let store = cpmstore_storage::open(&url, &options()).await.unwrap();
    assert_eq!(store.account_by_name("alice").await.unwrap(), alice);
    store.close().await;

    let raw = AnyPool::connect(&url).await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(mode, "wal");
    raw.close().await;
}

// --- the CPM header index ----------------------------------------------------------------

/// A CPM object with its headers in the top-level block, and the IMDN id once more
/// inside a CPIM part (which is not indexed).
fn cpm_object(conversation: &str, contribution: Option<&str>, imdn: &str) -> NewMessage {
    let contribution = contribution
        .map(|c| format!("Contribution-ID: {c}\r\nInReplyTo-Contribution-ID:\r\n  r-{c}\r\n"))
        .unwrap_or_default();
    NewMessage {
        content: format!(
            "From: <tel:+15550100>\r\nconversation-id: {conversation}\r\n{contribution}\
             IMDN-Message-ID: {imdn}\r\nContent-Type: Message/CPIM\r\n\r\n\
             NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: {imdn}\r\n\r\n\
             IMDN-Message-ID: not-{imdn}\r\n\r\nhello\r\n"
        )
        .into_bytes(),
        flags: Flags::default(),
        internal_date: Some(1_700_000_000),
        internal_date_tz: 0,
    }
}

async fn by_header(
    store: &Arc<dyn Store>,
    a: AccountId,
    m: MailboxId,
    n: &str,
    v: &str,
) -> Vec<u32> {
    store.uids_by_header(a, m, n, v).await.unwrap()
}

async fn cpm_header_index(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(account("alice", 1)).await.unwrap().id;
    let bob = store.create_account(account("bob", 2)).await.unwrap().id;
    let conv = store
        .create_mailbox(alice, folder("RCSMessageStore"))
        .await
        .unwrap();
    let conv = store
        .create_mailbox(alice, folder("RCSMessageStore/c1"))
        .await
        .map(|_| conv)
        .unwrap();
    let c1 = store.mailbox(alice, "RCSMessageStore/c1").await.unwrap().id;
    let _ = conv;
    store
        .append(alice, c1, cpm_object("c1", None, "Id-1"))
        .await
        .unwrap();
    store
        .append(alice, c1, cpm_object("c1", Some("s1"), "Id-2"))
        .await
        .unwrap();
    store.append(alice, c1, message("plain")).await.unwrap();
    let bob_inbox = inbox(store, bob).await;
    store
        .append(bob, bob_inbox, cpm_object("c1", None, "Id-1"))
        .await
        .unwrap();

    // Names and values in any case; the CPIM part's headers are not the message's.
    assert_eq!(
        by_header(store, alice, c1, "IMDN-Message-ID", "Id-1").await,
        vec![1]
    );
    assert_eq!(
        by_header(store, alice, c1, "imdn-message-id", " id-2 ").await,
        vec![2]
    );
    assert!(
        by_header(store, alice, c1, "IMDN-Message-ID", "not-Id-1")
            .await
            .is_empty()
    );
    assert!(
        by_header(store, alice, c1, "IMDN-Message-ID", "Id")
            .await
            .is_empty()
    );
    assert_eq!(
        by_header(store, alice, c1, "Conversation-ID", "C1").await,
        vec![1, 2]
    );
    assert_eq!(
        by_header(store, alice, c1, "Contribution-ID", "s1").await,
        vec![2]
    );
    // A folded header is unfolded.
    assert_eq!(
        by_header(store, alice, c1, "InReplyTo-Contribution-ID", "r-s1").await,
        vec![2]
    );
    assert!(matches!(
        store.uids_by_header(alice, c1, "Subject", "plain").await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .uids_by_header(alice, MailboxId(i64::MAX), "IMDN-Message-ID", "x")
            .await,
        Err(Error::NotFound(_))
    ));
    // Across mailboxes, one account only.
    assert_eq!(
        store.objects_by_imdn(alice, "id-1").await.unwrap(),
        vec![(c1, 1)]
    );
    assert_eq!(
        store.objects_by_imdn(bob, "Id-1").await.unwrap(),
        vec![(bob_inbox, 1)]
    );
    assert!(
        store
            .objects_by_imdn(alice, "none")
            .await
            .unwrap()
            .is_empty()
    );

    // Accounts without a mailbox of a name.
    let missing = store
        .accounts_without_mailbox("RCSMessageStore")
        .await
        .unwrap();
    assert_eq!(missing, vec![bob]);
    assert!(
        store
            .accounts_without_mailbox("INBOX")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn cpm_header_index_follows_messages(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(account("alice", 1)).await.unwrap().id;
    let inbox_id = inbox(store, alice).await;
    let a = store.create_mailbox(alice, folder("A")).await.unwrap().id;
    let b = store.create_mailbox(alice, folder("B")).await.unwrap().id;
    store.append(alice, a, message("plain")).await.unwrap();
    store
        .append(alice, a, cpm_object("c", None, "m1"))
        .await
        .unwrap();
    store
        .append(alice, a, cpm_object("c", None, "m2"))
        .await
        .unwrap();

    // COPY indexes the copies; MOVE the destination and not the source.
    store.copy(alice, a, &[UidRange::all()], b).await.unwrap();
    assert_eq!(
        by_header(store, alice, b, "IMDN-Message-ID", "m1").await,
        vec![2]
    );
    store
        .move_messages(alice, b, &[UidRange::one(3)], a)
        .await
        .unwrap();
    assert_eq!(
        by_header(store, alice, a, "IMDN-Message-ID", "m2").await,
        vec![3, 4]
    );
    assert!(
        by_header(store, alice, b, "IMDN-Message-ID", "m2")
            .await
            .is_empty()
    );
    assert_eq!(
        store.objects_by_imdn(alice, "m1").await.unwrap(),
        vec![(a, 2), (b, 2)]
    );

    // EXPUNGE takes the expunged out of the index.
    store
        .store_flags(
            alice,
            a,
            &[UidRange::one(4)],
            FlagOp::Add,
            &flags(SystemFlags::DELETED, &[]),
            None,
        )
        .await
        .unwrap();
    store.expunge(alice, a, None).await.unwrap();
    assert_eq!(
        by_header(store, alice, a, "IMDN-Message-ID", "m2").await,
        vec![3]
    );
    store.purge_expunged(i64::MAX).await.unwrap();
    assert_eq!(
        by_header(store, alice, a, "IMDN-Message-ID", "m2").await,
        vec![3]
    );

    // The rename of INBOX carries the index to the new mailbox.
    store
        .append(alice, inbox_id, cpm_object("c", None, "m3"))
        .await
        .unwrap();
    store.rename_mailbox(alice, "INBOX", "Old").await.unwrap();
    let old = store.mailbox(alice, "Old").await.unwrap().id;
    assert_eq!(
        by_header(store, alice, old, "IMDN-Message-ID", "m3").await,
        vec![1]
    );
    assert!(
        by_header(store, alice, inbox_id, "IMDN-Message-ID", "m3")
            .await
            .is_empty()
    );

    // A renamed mailbox keeps its id, so its index; a deleted one's goes.
    store.rename_mailbox(alice, "B", "C").await.unwrap();
    assert_eq!(
        by_header(store, alice, b, "IMDN-Message-ID", "m1").await,
        vec![2]
    );
    store.delete_mailbox(alice, "C").await.unwrap();
    assert_eq!(
        store.objects_by_imdn(alice, "m1").await.unwrap(),
        vec![(a, 2)]
    );
    let rows: i64 = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM cpm_headers WHERE account_id = $1 AND mailbox_id = $2",
    )
    .bind(alice.0)
    .bind(b.0)
    .fetch_one(&env.raw)
    .await
    .unwrap()
    .get(0);
    assert_eq!(rows, 0);
    store.remove_account(alice).await.unwrap();
    let rows: i64 =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM cpm_headers WHERE account_id = $1")
            .bind(alice.0)
            .fetch_one(&env.raw)
            .await
            .unwrap()
            .get(0);
    assert_eq!(rows, 0);
}

async fn containing(
    store: &Arc<dyn Store>,
    a: AccountId,
    m: MailboxId,
    n: &str,
    v: &str,
) -> Vec<u32> {
    store.uids_by_header_containing(a, m, n, v).await.unwrap()
}

/// SEARCH HEADER's substring match from the index (equal values by one index, longer
/// ones by the length index), and the start-up backfill of messages the index lacks.
async fn cpm_header_search_and_backfill(env: &Env) {
    let store = &env.store;
    let alice = store.create_account(account("alice", 1)).await.unwrap().id;
    store
        .create_mailbox(alice, folder("RCSMessageStore"))
        .await
        .unwrap();
    let c1 = store
        .create_mailbox(alice, folder("RCSMessageStore/c1"))
        .await
        .unwrap()
        .id;
    let c2 = store
        .create_mailbox(alice, folder("RCSMessageStore/c2"))
        .await
        .unwrap()
        .id;
    for imdn in ["Xk2mQ7rT0a9LpZ3c", "Xk2mQ7rT0a9LpZ3d", "a_b%c\\d", "ab"] {
        store
            .append(alice, c1, cpm_object("c1", None, imdn))
            .await
            .unwrap();
    }
    store.append(alice, c1, message("plain")).await.unwrap();
    store
        .append(alice, c2, cpm_object("c2", None, "Xk2mQ7rT0a9LpZ3c"))
        .await
        .unwrap();
    let imdn = "IMDN-Message-ID";
    let cases: &[(&str, &[u32])] = &[
        ("Xk2mQ7rT0a9LpZ3c", &[1]),
        ("xk2mq7rt0a9lpz3", &[1, 2]),
        ("XK2M", &[1, 2]),
        ("0a9l", &[1, 2]),
        ("3D", &[2]),
        ("Xk2mQ7rT0a9LpZ3cc", &[]),
        ("_", &[3]),
        ("%", &[3]),
        ("\\", &[3]),
        ("b%c", &[3]),
        ("a_b%c\\d", &[3]),
        ("a", &[1, 2, 3, 4]),
        ("ab", &[4]),
        ("not-", &[]),
        ("", &[1, 2, 3, 4]),
    ];
    for (needle, want) in cases {
        assert_eq!(
            &containing(store, alice, c1, imdn, needle).await,
            want,
            "{needle:?}"
        );
    }
    assert_eq!(containing(store, alice, c2, imdn, "xk2m").await, vec![1]);
    assert_eq!(
        containing(store, alice, c1, "conversation-id", "C").await,
        vec![1, 2, 3, 4]
    );
    assert!(matches!(
        store
            .uids_by_header_containing(alice, c1, "Subject", "p")
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .uids_by_header_containing(alice, MailboxId(i64::MAX), imdn, "x")
            .await,
        Err(Error::NotFound(_))
    ));

    // The search of a whole id uses the indexes, not a scan of the table: the
    // store's own statement, with parameters bound as the store binds them; the
    // longer values are a range of the length index (`<expr>>?`), not every value of
    // the header in the mailbox.
    if env.backend == Backend::Sqlite {
        let plan: Vec<String> = sqlx::query(&format!(
            "EXPLAIN QUERY PLAN {}",
            cpmstore_storage::cpm::HEADER_SEARCH_SQL
        ))
        .bind(alice.0)
        .bind(imdn)
        .bind("xk2mq7rt0a9lpz3c")
        .bind(c1.0)
        .bind(16_i32)
        .bind("%xk2mq7rt0a9lpz3c%")
        .fetch_all(&env.raw)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(3))
        .collect();
        assert!(
            plan.iter().any(|l| l.contains("cpm_headers_by_value")),
            "{plan:?}"
        );
        assert!(
            plan.iter()
                .any(|l| l.contains("cpm_headers_by_length") && l.contains("<expr>>?")),
            "{plan:?}"
        );
    }

    // Messages stored before the index: their rows gone, listed for the backfill, as
    // migration 0005 lists them.
    assert_eq!(
        store.backfill_cpm_headers(10).await.unwrap(),
        0,
        "nothing pending"
    );
    sqlx::query("DELETE FROM cpm_headers WHERE account_id = $1 AND mailbox_id = $2")
        .bind(alice.0)
        .bind(c1.0)
        .execute(&env.raw)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cpm_headers_pending (account_id, mailbox_id, uid) \
         SELECT account_id, mailbox_id, uid FROM messages WHERE account_id = $1 AND mailbox_id = $2",
    )
    .bind(alice.0)
    .bind(c1.0)
    .execute(&env.raw)
    .await
    .unwrap();
    assert!(containing(store, alice, c1, imdn, "xk2m").await.is_empty());
    // A listed message expunged meanwhile leaves the list with it.
    store
        .store_flags(
            alice,
            c1,
            &[UidRange::one(4)],
            FlagOp::Add,
            &Flags {
                system: SystemFlags(SystemFlags::DELETED),
                keywords: vec![],
            },
            None,
        )
        .await
        .unwrap();
    store.expunge(alice, c1, None).await.unwrap();
    let mut read = Vec::new();
    loop {
        let n = store.backfill_cpm_headers(2).await.unwrap();
        if n == 0 {
            break;
        }
        read.push(n);
    }
    assert_eq!(
        read,
        vec![2, 2],
        "uids 1-3 and the plain message 5, two at a time"
    );
    for (needle, want) in cases {
        let want: Vec<u32> = want.iter().copied().filter(|u| *u != 4).collect();
        assert_eq!(
            containing(store, alice, c1, imdn, needle).await,
            want,
            "{needle:?}"
        );
    }
    assert_eq!(
        by_header(store, alice, c1, imdn, "Xk2mQ7rT0a9LpZ3c").await,
        vec![1]
    );
    let pending: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM cpm_headers_pending")
        .fetch_one(&env.raw)
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0);
}
