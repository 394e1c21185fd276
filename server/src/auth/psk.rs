//! PSK keys at rest: sealed with XChaCha20-Poly1305 under a 32-byte key-encryption key
//! (KEK), with the PSK identity as associated data, so a sealed key moved to another
//! identity no longer opens. Stored form: `nonce (24 bytes) || ciphertext+tag`.
//!
//! The KEK comes from `auth.psk_kek_file` (64 hex digits), or is generated into
//! `<data_dir>/psk.kek` (mode 0600) on first use. Losing it loses every PSK.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;

use crate::auth::secret::SecretBytes;
use crate::config::Config;

/// Length of the key-encryption key.
pub const KEK_BYTES: usize = 32;

/// Length of the XChaCha20 nonce at the start of a sealed key.
pub const NONCE_BYTES: usize = 24;

/// Length of the Poly1305 tag.
const TAG_BYTES: usize = 16;

/// Shortest PSK accepted, in bytes.
pub const MIN_PSK_BYTES: usize = 16;

/// Longest PSK accepted, in bytes.
pub const MAX_PSK_BYTES: usize = 64;

/// Length of a generated PSK, in bytes.
pub const GENERATED_PSK_BYTES: usize = 32;

/// Longest PSK identity, in bytes (RFC 4279 section 5.3 recommends at least 128).
pub const MAX_IDENTITY_BYTES: usize = 128;

/// Errors of PSK handling.
#[derive(Debug, thiserror::Error)]
pub enum PskError {
    /// The PSK given is not hex of an acceptable length.
    #[error("{0}")]
    InvalidKey(String),
    /// The identity is not acceptable.
    #[error("{0}")]
    InvalidIdentity(String),
    /// The KEK file could not be read or written.
    #[error("PSK key-encryption key {}: {message}", path.display())]
    Kek {
        /// The KEK file.
        path: PathBuf,
        /// What went wrong and how to mend it.
        message: String,
    },
    /// Sealing failed (should not happen with a valid key).
    #[error("sealing the PSK failed")]
    Seal,
    /// The sealed key is malformed, was sealed under another KEK, or for another
    /// identity, or was tampered with.
    #[error(
        "the stored PSK cannot be opened (wrong key-encryption key, wrong identity or tampered data)"
    )]
    Open,
}

/// Parses a PSK given as hex (surrounding whitespace ignored): 16..=64 bytes.
pub fn parse_key_hex(text: &str) -> Result<SecretBytes, PskError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(PskError::InvalidKey(
            "no PSK given; write the key as hex on stdin, or use --generate".into(),
        ));
    }
    let bytes = SecretBytes::new(hex::decode(text).map_err(|_| {
        PskError::InvalidKey(
            "the PSK is not valid hex; give an even number of hex digits (0-9, a-f)".into(),
        )
    })?);
    if !(MIN_PSK_BYTES..=MAX_PSK_BYTES).contains(&bytes.len()) {
        return Err(PskError::InvalidKey(format!(
            "the PSK is {} bytes long; it must be {MIN_PSK_BYTES} to {MAX_PSK_BYTES} bytes ({} to {} hex digits)",
            bytes.len(),
            MIN_PSK_BYTES * 2,
            MAX_PSK_BYTES * 2
        )));
    }
    Ok(bytes)
}

/// A new random PSK of [`GENERATED_PSK_BYTES`].
pub fn generate_key() -> SecretBytes {
    SecretBytes::random(GENERATED_PSK_BYTES)
}

/// Checks a PSK identity: 1..=128 bytes, no whitespace or control characters.
pub fn validate_identity(identity: &str) -> Result<(), PskError> {
    if identity.is_empty()
        || identity.len() > MAX_IDENTITY_BYTES
        || identity
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(PskError::InvalidIdentity(format!(
            "invalid PSK identity {identity:?}: it must be 1 to {MAX_IDENTITY_BYTES} bytes without whitespace or control characters"
        )));
    }
    Ok(())
}

/// The key-encryption key.
pub struct Kek(SecretBytes);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    /// A KEK from raw bytes.
    pub fn from_bytes(bytes: [u8; KEK_BYTES]) -> Kek {
        Kek(SecretBytes::new(bytes.to_vec()))
    }

    /// The configured KEK: `auth.psk_kek_file` (which must exist), or
    /// `<data_dir>/psk.kek`, generated with mode 0600 if absent.
    pub fn load_or_create(config: &Config) -> Result<Kek, PskError> {
        match &config.auth.psk_kek_file {
            Some(path) => Kek::read(path).map_err(|message| PskError::Kek {
                path: path.clone(),
                message: format!(
                    "{message}; auth.psk_kek_file must name a file holding 64 hex digits"
                ),
            }),
            None => Kek::read_or_generate(&config.data_dir.join(crate::config::PSK_KEK_FILE)),
        }
    }

    /// Reads the KEK at `path`, generating it first if the file does not exist. Safe
    /// against a concurrent generator: the file appears complete or not at all.
    pub fn read_or_generate(path: &Path) -> Result<Kek, PskError> {
        let kek_error = |message: String| PskError::Kek {
            path: path.to_owned(),
            message,
        };
        if !path.exists() {
            generate_file(path).map_err(|e| kek_error(format!("cannot create it: {e}")))?;
        }
        Kek::read(path).map_err(kek_error)
    }

    fn read(path: &Path) -> Result<Kek, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        warn_if_readable_by_others(path);
        let bytes = SecretBytes::new(
            hex::decode(text.trim()).map_err(|_| "it does not hold hex digits".to_owned())?,
        );
        let bytes: [u8; KEK_BYTES] = bytes
            .expose()
            .try_into()
            .map_err(|_| format!("it holds {} bytes, not {KEK_BYTES}", bytes.len()))?;
        let kek = Kek::from_bytes(bytes);
        let mut bytes = bytes;
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(kek)
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, PskError> {
        XChaCha20Poly1305::new_from_slice(self.0.expose()).map_err(|_| PskError::Seal)
    }

    /// Seals `key` for `identity`: `nonce || ciphertext+tag`.
    pub fn seal(&self, identity: &str, key: &SecretBytes) -> Result<Vec<u8>, PskError> {
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()?
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: key.expose(),
                    aad: identity.as_bytes(),
                },
            )
            .map_err(|_| PskError::Seal)?;
        let mut sealed = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens what [`Kek::seal`] sealed for the same identity.
    pub fn open(&self, identity: &str, sealed: &[u8]) -> Result<SecretBytes, PskError> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return Err(PskError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.cipher()?
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: identity.as_bytes(),
                },
            )
            .map(SecretBytes::new)
            .map_err(|_| PskError::Open)
    }
}

/// Writes a fresh KEK to `path` atomically: a private temporary file in the same
/// directory, then a hard link to the final name, which fails if another process won
/// the race (its key is then used).
fn generate_file(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".psk.kek.{}.tmp", hex::encode(suffix)));
    let key = SecretBytes::random(KEK_BYTES);
    let result = (|| {
        let mut file = private_file(&tmp)?;
        file.write_all(key.to_hex().expose().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    if result.is_ok() {
        tracing::info!(path = %path.display(), "generated a new PSK key-encryption key; back it up");
    }
    result
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the PSK key-encryption key is accessible to group or others; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let kek = Kek::from_bytes([7; KEK_BYTES]);
        let key = generate_key();
        assert_eq!(key.len(), GENERATED_PSK_BYTES);
        let sealed = kek.seal("alice-phone", &key).unwrap();
        assert_eq!(sealed.len(), NONCE_BYTES + GENERATED_PSK_BYTES + TAG_BYTES);
        assert_eq!(
            kek.open("alice-phone", &sealed).unwrap().expose(),
            key.expose()
        );
        // A fresh nonce each time.
        assert_ne!(kek.seal("alice-phone", &key).unwrap(), sealed);
    }

    #[test]
    fn tampering_is_detected() {
        let kek = Kek::from_bytes([7; KEK_BYTES]);
        let sealed = kek.seal("id", &SecretBytes::new(vec![1; 16])).unwrap();
        for i in [0, NONCE_BYTES, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                matches!(kek.open("id", &bad), Err(PskError::Open)),
                "byte {i}"
            );
        }
        assert!(matches!(kek.open("other-id", &sealed), Err(PskError::Open)));
        assert!(matches!(kek.open("id", &sealed[..20]), Err(PskError::Open)));
        let other = Kek::from_bytes([8; KEK_BYTES]);
        assert!(matches!(other.open("id", &sealed), Err(PskError::Open)));
    }

    #[test]
    fn key_hex_parsing() {
        assert_eq!(
            parse_key_hex(" 00112233445566778899aabbccddeeff\n")
                .unwrap()
                .len(),
            16
        );
        assert_eq!(parse_key_hex(&"AB".repeat(64)).unwrap().len(), 64);
        for bad in ["", "  \n", "xyz", "001", &"00".repeat(15), &"00".repeat(65)] {
            assert!(
                matches!(parse_key_hex(bad), Err(PskError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn identities() {
        for good in ["alice", "alice@example.net", "device-42", &"x".repeat(128)] {
            assert!(validate_identity(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a\tb", "a\u{1}b", &"x".repeat(129)] {
            assert!(validate_identity(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kek_file_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("psk.kek");
        let kek = Kek::read_or_generate(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), KEK_BYTES * 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The same key on the next load.
        let sealed = kek.seal("id", &generate_key()).unwrap();
        let again = Kek::read_or_generate(&path).unwrap();
        assert!(again.open("id", &sealed).is_ok());
        // No temporary files left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn configured_kek_file_must_exist_and_be_valid() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_data_dir(dir.path().to_owned());
        config.auth.psk_kek_file = Some(dir.path().join("missing.kek"));
        let err = Kek::load_or_create(&config).unwrap_err();
        assert!(err.to_string().contains("missing.kek"), "{err}");
        let path = dir.path().join("short.kek");
        std::fs::write(&path, "abcd").unwrap();
        config.auth.psk_kek_file = Some(path);
        let err = Kek::load_or_create(&config).unwrap_err();
        assert!(err.to_string().contains("2 bytes"), "{err}");
        config.auth.psk_kek_file = None;
        Kek::load_or_create(&config).unwrap();
        assert!(dir.path().join("psk.kek").exists());
    }
}
