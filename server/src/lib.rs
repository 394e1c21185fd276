//! cpmstore's server: CLI, config, IMAP, authentication, push ingress, admin.
//!
//! # Layout
//! - `config`: the TOML file and `CPMSTORE_*` overrides, validated once.
//! - `data_lock`: one `serve` per SQLite database.
//! - `admin`: provisioning operations shared by the CLI and the HTTP admin API.
//! - `auth`: credential derivation and checks, PSK sealing, throttling.
//! - `net`, `imap`: listeners and the protocol.
//! - `push`: provisioning documents, the whitelist decision, delivery.
//! - `http`, `sip`, `ingress`: the HTTP listener (push ingress, admin API, metrics,
//!   health), the OTA-SIP ingress, and the start of both.
//! - `metrics`: the Prometheus metrics every part counts into.
//! - `log_bridge`: records of `log`-facade crates (rustls) into tracing.
//!
//! Arrows point one way: `main -> imap/push/admin/http -> auth -> storage`.

pub mod admin;
pub mod auth;
pub mod config;
pub mod data_lock;
pub mod http;
pub mod imap;
pub mod ingress;
pub mod log_bridge;
pub mod metrics;
pub mod net;
pub mod push;
pub mod serve;
pub mod sip;
pub mod validate;
