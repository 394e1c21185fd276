//! cpmstore's server: CLI, config, IMAP, authentication, push ingress, admin.
//!
//! # Layout
//! - `config`: the TOML file and `CPMSTORE_*` overrides, validated once.
//! - `data_lock`: one `serve` per SQLite database.
//! - `validate`: usernames, subscriber addresses and whitelist contexts, as both
//!   provisioning and push ingress check them.
//! - `admin`: provisioning operations shared by the CLI and the HTTP admin API.
//! - `cpm`: the CPM message store's operations (root folder, deposit, event reports),
//!   shared by the CLI and the HTTP API.
//! - `auth`: credential derivation and checks, PSK sealing, throttling.
//! - `net`: binding listeners (`net::listen`, `ServeError`), accepting, and the
//!   connection type; `imap`: the protocol.
//! - `push`: provisioning documents, the whitelist decision, delivery.
//! - `http`, `sip`, `ingress`: the HTTP listener (push ingress, admin API, metrics,
//!   health), the OTA-SIP ingress, and the start of both.
//! - `serve`: `cpmstore serve`: storage, listeners, connection limits, and the graceful
//!   shutdown (one `CancellationToken`, one `TaskTracker` of connections).
//! - `metrics`: the Prometheus metrics every part counts into.
//! - `message`: what every way in does to a message before storing it (CRLF).
//! - `log_bridge`: records of `log`-facade crates (rustls) into tracing.
//!
//! Arrows point one way: `main -> serve -> imap/ingress/http/sip -> push/admin ->
//! validate/auth/net/config -> storage`; no module imports one that imports it back
//! (`tests/tests/arrows.rs` checks). `docs/architecture.md` follows a command and a
//! push through these modules.

pub mod admin;
pub mod auth;
pub mod config;
pub mod cpm;
pub mod data_lock;
pub mod http;
pub mod imap;
pub mod ingress;
pub mod log_bridge;
pub mod message;
pub mod metrics;
pub mod net;
pub mod push;
pub mod serve;
pub mod sip;
pub mod validate;
