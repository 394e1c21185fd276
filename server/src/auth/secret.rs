//! Secrets typed so that they cannot be logged by accident.
//!
//! [`Secret`] holds text (a password), [`SecretBytes`] holds bytes (a PSK). Both print as
//! `<redacted>` through `Debug` and `Display`, and wipe their memory when dropped. The
//! only way to the value is the explicit [`Secret::expose`] / [`SecretBytes::expose`].

use std::fmt;

use rand::Rng;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroize;

/// What `Debug` and `Display` print instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Length of a generated password, in characters.
pub const GENERATED_PASSWORD_LEN: usize = 24;

/// The alphabet of generated passwords: letters and digits without the look-alikes
/// `0 O o 1 l I`, so a password read aloud or off paper survives. 56 symbols, so 24 of
/// them carry about 139 bits.
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";

/// A secret string (a password). Zeroized on drop.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a string that must not be logged.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself. Call sites of this are the places to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A secret byte string (a PSK, a key-encryption key). Zeroized on drop.
#[derive(Clone, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes that must not be logged.
    pub fn new(value: Vec<u8>) -> Self {
        SecretBytes(value)
    }

    /// `len` bytes from the operating system's random source.
    pub fn random(len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        OsRng.fill_bytes(&mut bytes);
        SecretBytes(bytes)
    }

    /// The secret itself. Call sites of this are the places to audit.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Lowercase hex, itself a secret.
    pub fn to_hex(&self) -> Secret {
        Secret(hex::encode(&self.0))
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(value: Vec<u8>) -> Self {
        SecretBytes(value)
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A new random password of [`GENERATED_PASSWORD_LEN`] characters from an alphabet
/// without look-alike characters, drawn from the operating system's random source.
pub fn generate_password() -> Secret {
    let mut rng = OsRng;
    let value: String = (0..GENERATED_PASSWORD_LEN)
        .map(|_| char::from(PASSWORD_ALPHABET[rng.gen_range(0..PASSWORD_ALPHABET.len())]))
        .collect();
    Secret(value)
}

/// `serialize_with` helper: writes an optional secret's value. For the one place where a
/// secret must leave the process on purpose (a generated password in the CLI's JSON).
pub fn serialize_exposed<S>(value: &Option<Secret>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
{
    match value {
        Some(secret) => serializer.serialize_some(secret.expose()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(s.expose(), "hunter2");
        let b = SecretBytes::new(vec![1, 2, 3]);
        assert_eq!(format!("{b:?} {b}"), format!("{REDACTED} {REDACTED}"));
        assert_eq!(b.to_hex().expose(), "010203");
    }

    #[test]
    fn generated_passwords_use_the_alphabet() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), GENERATED_PASSWORD_LEN);
        assert!(a.expose().bytes().all(|c| PASSWORD_ALPHABET.contains(&c)));
        assert_ne!(a.expose(), b.expose());
        for c in [b'0', b'O', b'o', b'1', b'l', b'I'] {
            assert!(!PASSWORD_ALPHABET.contains(&c));
        }
    }
}
