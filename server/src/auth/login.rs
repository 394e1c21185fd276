//! Password logins (LOGIN, AUTHENTICATE PLAIN): one answer for every failure, the same
//! cost whether or not the account exists.

use std::net::IpAddr;

use cpmstore_storage::{Account, AccountStatus, Error as StoreError, Store};
use std::sync::Arc;

use super::credentials::Verifier;
use super::secret::Secret;

/// Why a login failed. Never shown to the client (which always sees
/// `NO [AUTHENTICATIONFAILED]`); only logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Unknown user, wrong password, or no password set.
    BadCredentials,
    Disabled,
    /// Storage could not be asked.
    Unavailable,
}

impl LoginFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginFailure::BadCredentials => "bad_credentials",
            LoginFailure::Disabled => "disabled",
            LoginFailure::Unavailable => "unavailable",
        }
    }
}

/// Checks passwords against the provisioned credentials.
pub struct Authenticator {
    store: Arc<dyn Store>,
    verifier: Verifier,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, verifier: Verifier) -> Self {
        Authenticator { store, verifier }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies `username`/`password`. argon2 runs for unknown and disabled accounts too,
    /// so the answer's timing tells nothing.
    pub async fn login_password(
        &self,
        username: &str,
        password: &Secret,
        peer: IpAddr,
        mechanism: &'static str,
    ) -> Result<Account, LoginFailure> {
        let account = match self.store.account_by_name(username).await {
            Ok(a) => Some(a),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "login: storage error");
                return Err(LoginFailure::Unavailable);
            }
        };
        let record = match &account {
            Some(a) => match self.store.credentials(a.id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "login: storage error");
                    return Err(LoginFailure::Unavailable);
                }
            },
            None => None,
        };
        let ok = self
            .verifier
            .verify_password(record.as_ref(), password)
            .await;
        let outcome = match account {
            Some(a) if ok && a.status == AccountStatus::Active => Ok(a),
            Some(a) if ok => {
                let _ = a;
                Err(LoginFailure::Disabled)
            }
            _ => Err(LoginFailure::BadCredentials),
        };
        if let Err(why) = &outcome {
            tracing::info!(%peer, mechanism, outcome = why.as_str(), "login refused");
        }
        outcome
    }
}
