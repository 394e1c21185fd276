//! Authentication: credential derivation and checks, SASL, PSKs, guessing protection.
//!
//! - [`secret`]: `Secret` / `SecretBytes`, values that print as `<redacted>`.
//! - [`credentials`]: argon2id and SCRAM-SHA-256 verifiers, the password policy, and the
//!   bounded, constant-cost [`credentials::Verifier`].
//! - [`scram`]: the SCRAM-SHA-256(-PLUS) server exchange against stored secrets.
//! - [`psk`]: PSK keys sealed at rest under the key-encryption key.
//! - [`psk_cache`]: the in-memory identity -> key table the PSK-TLS handshake reads.
//! - [`throttle`]: failed-login counting, delays and lockouts per IP and account.
//! - [`stats`]: login mechanism and outcome names (metrics labels).
//! - [`login`]: the [`login::Authenticator`] that ties them together, with one answer
//!   for every failure.

pub mod credentials;
pub mod login;
pub mod psk;
pub mod psk_cache;
pub mod scram;
pub mod secret;
pub mod stats;
pub mod throttle;

pub use credentials::{CredentialRecord, HashParams, Verifier, verify_password};
pub use secret::{Secret, SecretBytes};
