//! Password verifiers: an argon2id PHC string for LOGIN / AUTHENTICATE PLAIN, and
//! SCRAM-SHA-256 secrets (RFC 5802, RFC 7677) for AUTHENTICATE SCRAM-SHA-256(-PLUS).
//! The password itself is never stored.
//!
//! argon2 is deliberately slow and memory-hungry: [`Verifier`] runs it on tokio's
//! blocking pool, at most `auth.max_parallel_hashes` at once, and spends the same work on
//! an unknown user (against a dummy hash) as on a known one.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

pub use cpmstore_storage::CredentialRecord;

use crate::auth::secret::{Secret, SecretBytes};
use crate::config::AuthConfig;

/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Length of a new SCRAM salt, in bytes.
pub const SCRAM_SALT_BYTES: usize = 16;

/// Smallest SCRAM iteration count accepted (RFC 7677 section 4).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;

/// Length of an argon2 salt, in bytes.
const ARGON2_SALT_BYTES: usize = 16;

/// The cost parameters of new credentials (from `[auth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// argon2id memory cost in KiB.
    pub argon2_m_kib: u32,
    /// argon2id time cost.
    pub argon2_t: u32,
    /// argon2id parallelism.
    pub argon2_p: u32,
    /// PBKDF2 iterations of the SCRAM secrets.
    pub scram_iterations: u32,
}

impl HashParams {
    /// The parameters configured in `[auth]`.
    pub fn from_config(auth: &AuthConfig) -> Self {
        HashParams {
            argon2_m_kib: auth.argon2_m_kib,
            argon2_t: auth.argon2_t,
            argon2_p: auth.argon2_p,
            scram_iterations: auth.scram_iterations,
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>, CredentialError> {
        let params = Params::new(self.argon2_m_kib, self.argon2_t, self.argon2_p, None)
            .map_err(|e| CredentialError::Params(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams::from_config(&AuthConfig::default())
    }
}

/// A password that the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Zero length.
    #[error("the password is empty; supply a non-empty password, or have one generated")]
    Empty,
    /// Longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password is {0} bytes long; at most {MAX_PASSWORD_BYTES} bytes are accepted")]
    TooLong(usize),
    /// Contains a NUL character (SASL PLAIN could not carry it).
    #[error("the password contains a NUL character, which SASL cannot carry; remove it")]
    Nul,
}

/// Failure to derive credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The password breaks the policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The hashing parameters are unusable.
    #[error("invalid password hashing parameters: {0}; check the [auth] section")]
    Params(String),
    /// The hash computation failed (or its task was lost).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Checks the password policy: non-empty, at most 1024 bytes, no NUL.
pub fn check_policy(password: &Secret) -> Result<(), PolicyError> {
    let value = password.expose();
    if value.is_empty() {
        Err(PolicyError::Empty)
    } else if value.len() > MAX_PASSWORD_BYTES {
        Err(PolicyError::TooLong(value.len()))
    } else if value.contains('\0') {
        Err(PolicyError::Nul)
    } else {
        Ok(())
    }
}

/// Derives the verifiers of a password: an argon2id PHC string and SCRAM-SHA-256
/// secrets with a fresh random salt. CPU-heavy: call it on a blocking thread (or use
/// [`Verifier::derive`]).
pub fn derive(password: &Secret, params: &HashParams) -> Result<CredentialRecord, CredentialError> {
    check_policy(password)?;
    if params.scram_iterations < MIN_SCRAM_ITERATIONS {
        return Err(CredentialError::Params(format!(
            "scram_iterations {} is below {MIN_SCRAM_ITERATIONS}",
            params.scram_iterations
        )));
    }
    let argon2 = params.argon2()?;
    let mut argon2_salt = [0u8; ARGON2_SALT_BYTES];
    OsRng.fill_bytes(&mut argon2_salt);
    let salt =
        SaltString::encode_b64(&argon2_salt).map_err(|e| CredentialError::Hash(e.to_string()))?;
    let phc = argon2
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(|e| CredentialError::Hash(e.to_string()))?
        .to_string();

    let mut scram_salt = vec![0u8; SCRAM_SALT_BYTES];
    OsRng.fill_bytes(&mut scram_salt);
    let secrets = scram_secrets(
        scram_password(password).expose(),
        &scram_salt,
        params.scram_iterations,
    );
    Ok(CredentialRecord {
        argon2_phc: phc,
        scram_salt,
        scram_iterations: params.scram_iterations,
        scram_stored_key: secrets.stored_key.to_vec(),
        scram_server_key: secrets.server_key.to_vec(),
    })
}

/// The SCRAM-SHA-256 secrets of a password (RFC 5802 section 3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecrets {
    /// `H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSecrets(<redacted>)")
    }
}

/// `SaltedPassword = Hi(password, salt, i)` (PBKDF2-HMAC-SHA-256), then
/// `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
/// `ServerKey = HMAC(SaltedPassword, "Server Key")`. `password` is the already
/// prepared (SASLprep) password, see [`scram_password`].
pub fn scram_secrets(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecrets {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let server_key = hmac_sha256(&salted, b"Server Key");
    let stored_key = sha256(&client_key);
    zeroize::Zeroize::zeroize(&mut salted);
    ScramSecrets {
        stored_key,
        server_key,
    }
}

/// The password as SCRAM hashes it: SASLprep (RFC 4013) applied, as clients do. A
/// password that SASLprep refuses (unassigned or prohibited code points) is used as it
/// is, so it still works with clients that skip the preparation.
pub fn scram_password(password: &Secret) -> SecretBytes {
    match stringprep::saslprep(password.expose()) {
        Ok(prepared) => SecretBytes::new(prepared.as_bytes().to_vec()),
        Err(_) => SecretBytes::new(password.expose().as_bytes().to_vec()),
    }
}

/// HMAC-SHA-256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC is defined for keys of any length (long keys are hashed, short ones padded),
    // so `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Whether a stored record was made with other parameters than `params` (or is not
/// argon2id / SCRAM-SHA-256 at all) and should be derived again at the next successful
/// login.
pub fn needs_rehash(record: &CredentialRecord, params: &HashParams) -> bool {
    let Ok(hash) = PasswordHash::new(&record.argon2_phc) else {
        return true;
    };
    if hash.algorithm != Algorithm::Argon2id.ident() || hash.version != Some(0x13) {
        return true;
    }
    let Ok(stored) = Params::try_from(&hash) else {
        return true;
    };
    stored.m_cost() != params.argon2_m_kib
        || stored.t_cost() != params.argon2_t
        || stored.p_cost() != params.argon2_p
        || record.scram_iterations != params.scram_iterations
        || record.scram_salt.len() < SCRAM_SALT_BYTES
        || record.scram_stored_key.len() != 32
        || record.scram_server_key.len() != 32
}

/// Verifies an argon2 PHC string; false for a malformed one.
fn verify_phc(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        // The parameters come from the PHC string itself; the comparison of the outputs
        // is constant-time.
        Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
        Err(_) => false,
    }
}

/// Runs argon2 off the async reactor, bounded in parallelism, with equal cost for
/// unknown users. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    params: HashParams,
    permits: Arc<Semaphore>,
    /// A PHC string of a random password with the configured parameters, made on first
    /// need; unknown users are checked against it.
    dummy: OnceLock<String>,
    /// Per-process random key from which unknown users' SCRAM salts are derived.
    scram_dummy_key: SecretBytes,
}

impl VerifierInner {
    fn dummy(&self) -> &str {
        self.dummy.get_or_init(|| {
            let random = crate::auth::secret::generate_password();
            // Only fails for invalid parameters, which `Config::validate` excludes; an
            // empty dummy then merely fails fast.
            derive(&random, &self.params)
                .map(|record| record.argon2_phc)
                .unwrap_or_default()
        })
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("params", &self.inner.params)
            .field("available", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier that runs at most `max_parallel` hashes at once (at least one).
    pub fn new(params: HashParams, max_parallel: usize) -> Self {
        Verifier {
            inner: Arc::new(VerifierInner {
                params,
                permits: Arc::new(Semaphore::new(max_parallel.max(1))),
                dummy: OnceLock::new(),
                scram_dummy_key: SecretBytes::random(32),
            }),
        }
    }

    /// A verifier with the `[auth]` parameters and `max_parallel_hashes`.
    pub fn from_config(auth: &AuthConfig) -> Self {
        Verifier::new(HashParams::from_config(auth), auth.max_parallel_hashes)
    }

    /// The parameters of new credentials.
    pub fn params(&self) -> &HashParams {
        &self.inner.params
    }

    /// SCRAM parameters (salt, iterations) to announce for a user that does not exist or
    /// has no password, so the server-first-message looks like a real one: the salt is
    /// derived from the username under a per-process random key (the same on repeated
    /// attempts), the iterations are the configured ones. The exchange then fails at
    /// the proof, like a wrong password.
    pub fn dummy_scram_params(&self, username: &str) -> (Vec<u8>, u32) {
        let mac = hmac_sha256(self.inner.scram_dummy_key.expose(), username.as_bytes());
        (
            mac[..SCRAM_SALT_BYTES].to_vec(),
            self.inner.params.scram_iterations,
        )
    }

    /// Computes the dummy hash now, so the first unknown user costs no more than the
    /// others. Call once at start-up.
    pub async fn warm_up(&self) {
        self.run_blocking(|inner| {
            inner.dummy();
        })
        .await;
    }

    /// True when `password` matches `record`. `None` (unknown user, or no password set)
    /// is checked against a dummy hash with the same cost and is always false; so is a
    /// password that breaks the policy.
    pub async fn verify_password(
        &self,
        record: Option<&CredentialRecord>,
        password: &Secret,
    ) -> bool {
        let phc = record.map(|r| r.argon2_phc.clone());
        let policy_ok = check_policy(password).is_ok();
        let password = password.clone();
        self.run_blocking(move |inner| match (phc, policy_ok) {
            (Some(phc), true) => verify_phc(&phc, password.expose().as_bytes()),
            _ => {
                let _ = verify_phc(inner.dummy(), password.expose().as_bytes());
                false
            }
        })
        .await
        .unwrap_or(false)
    }

    /// [`derive`] on the blocking pool, within the parallelism bound.
    pub async fn derive(&self, password: &Secret) -> Result<CredentialRecord, CredentialError> {
        let password = password.clone();
        self.run_blocking(move |inner| derive(&password, &inner.params))
            .await
            .unwrap_or_else(|| Err(CredentialError::Hash("the hashing task was lost".into())))
    }

    /// Runs `f` on the blocking pool holding a permit; None if the task panicked or the
    /// semaphore was closed.
    async fn run_blocking<T, F>(&self, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&VerifierInner) -> T + Send + 'static,
    {
        let permit = self.inner.permits.clone().acquire_owned().await.ok()?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&inner)
        })
        .await
        .ok()
    }
}

/// True when `password` matches `record`; see [`Verifier::verify_password`].
pub async fn verify_password(
    verifier: &Verifier,
    record: Option<&CredentialRecord>,
    password: &Secret,
) -> bool {
    verifier.verify_password(record, password).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    use super::*;

    /// Cheap parameters so debug-build tests stay fast.
    fn cheap() -> HashParams {
        HashParams {
            argon2_m_kib: 64,
            argon2_t: 1,
            argon2_p: 1,
            scram_iterations: 4096,
        }
    }

    #[test]
    fn policy() {
        assert_eq!(check_policy(&Secret::from("")), Err(PolicyError::Empty));
        assert_eq!(check_policy(&Secret::from("a\0b")), Err(PolicyError::Nul));
        assert_eq!(
            check_policy(&Secret::new("x".repeat(1025))),
            Err(PolicyError::TooLong(1025))
        );
        assert_eq!(check_policy(&Secret::new("x".repeat(1024))), Ok(()));
        assert_eq!(check_policy(&Secret::from("pencil")), Ok(()));
    }

    #[tokio::test]
    async fn derive_then_verify() {
        let params = cheap();
        let record = derive(&Secret::from("correct horse"), &params).unwrap();
        assert!(
            record
                .argon2_phc
                .starts_with("$argon2id$v=19$m=64,t=1,p=1$")
        );
        assert_eq!(record.scram_salt.len(), SCRAM_SALT_BYTES);
        assert_eq!(record.scram_iterations, 4096);
        assert!(!format!("{record:?}").contains("argon2"));

        let verifier = Verifier::new(params, 2);
        assert!(verify_password(&verifier, Some(&record), &Secret::from("correct horse")).await);
        assert!(
            !verifier
                .verify_password(Some(&record), &Secret::from("correct horsE"))
                .await
        );
        assert!(
            !verifier
                .verify_password(Some(&record), &Secret::from(""))
                .await
        );
        assert!(
            !verifier
                .verify_password(None, &Secret::from("correct horse"))
                .await
        );

        let again = verifier
            .derive(&Secret::from("correct horse"))
            .await
            .unwrap();
        assert_ne!(again.scram_salt, record.scram_salt, "fresh salt each time");
        assert_ne!(again.argon2_phc, record.argon2_phc);

        // SCRAM secrets match the password.
        let s = scram_secrets(b"correct horse", &record.scram_salt, 4096);
        assert_eq!(s.stored_key.to_vec(), record.scram_stored_key);
        assert_eq!(s.server_key.to_vec(), record.scram_server_key);
    }

    #[test]
    fn dummy_scram_params_are_stable_per_user() {
        let verifier = Verifier::new(cheap(), 1);
        let (salt, iterations) = verifier.dummy_scram_params("ghost");
        assert_eq!(salt.len(), SCRAM_SALT_BYTES);
        assert_eq!(iterations, 4096);
        assert_eq!(verifier.dummy_scram_params("ghost").0, salt);
        assert_ne!(verifier.dummy_scram_params("ghost2").0, salt);
    }

    #[test]
    fn derive_refuses_bad_input() {
        assert!(matches!(
            derive(&Secret::from(""), &cheap()),
            Err(CredentialError::Policy(PolicyError::Empty))
        ));
        let low = HashParams {
            scram_iterations: 4095,
            ..cheap()
        };
        assert!(matches!(
            derive(&Secret::from("x"), &low),
            Err(CredentialError::Params(_))
        ));
        let bad = HashParams {
            argon2_m_kib: 1,
            ..cheap()
        };
        assert!(matches!(
            derive(&Secret::from("x"), &bad),
            Err(CredentialError::Params(_))
        ));
    }

    #[test]
    fn rehash_when_parameters_change() {
        let params = cheap();
        let record = derive(&Secret::from("pw"), &params).unwrap();
        assert!(!needs_rehash(&record, &params));
        assert!(needs_rehash(
            &record,
            &HashParams {
                argon2_t: 2,
                ..params
            }
        ));
        assert!(needs_rehash(
            &record,
            &HashParams {
                argon2_m_kib: 128,
                ..params
            }
        ));
        assert!(needs_rehash(
            &record,
            &HashParams {
                scram_iterations: 8192,
                ..params
            }
        ));
        let mut broken = record.clone();
        broken.argon2_phc = "$2b$10$notargon".into();
        assert!(needs_rehash(&broken, &params));
    }

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn scram_sha256_rfc7677_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let password = scram_password(&Secret::from("pencil"));
        let secrets = scram_secrets(password.expose(), &salt, 4096);

        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final_without_proof =
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message =
            format!("{client_first_bare},{server_first},{client_final_without_proof}");

        // The server signature the RFC's server sends.
        let server_signature = hmac_sha256(&secrets.server_key, auth_message.as_bytes());
        assert_eq!(
            B64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );

        // The RFC's client proof verifies against StoredKey.
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let client_signature = hmac_sha256(&secrets.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.iter())
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(sha256(&client_key), secrets.stored_key);
    }

    #[test]
    fn saslprep_applies() {
        // U+00A0 NO-BREAK SPACE maps to SPACE (RFC 4013 section 2.1).
        assert_eq!(scram_password(&Secret::from("a\u{a0}b")).expose(), b"a b");
        // U+00AD SOFT HYPHEN maps to nothing.
        assert_eq!(scram_password(&Secret::from("I\u{ad}X")).expose(), b"IX");
    }
}
