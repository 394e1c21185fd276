//! Authentication: credential derivation and checks, PSK sealing, secrets.
//!
//! - [`secret`]: `Secret` / `SecretBytes`, values that print as `<redacted>`.
//! - [`credentials`]: argon2id and SCRAM-SHA-256 verifiers, the password policy, and the
//!   bounded, constant-cost [`credentials::Verifier`].
//! - [`psk`]: PSK keys sealed at rest under the key-encryption key.
//! - [`login`]: password logins with one answer for every failure.

pub mod credentials;
pub mod login;
pub mod psk;
pub mod secret;

pub use credentials::{CredentialRecord, HashParams, Verifier, verify_password};
pub use secret::{Secret, SecretBytes};
