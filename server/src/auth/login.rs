//! Logins: passwords (LOGIN, AUTHENTICATE PLAIN), SCRAM-SHA-256(-PLUS) against the
//! stored secrets, and EXTERNAL on PSK-TLS.
//!
//! Every failure gives the client the same answer, and an unknown account costs the same
//! as a known one: the same storage round trips, argon2 against a dummy hash, SCRAM
//! against a stand-in with a per-username stable salt. Every attempt passes the
//! [`Throttle`] first and reports its outcome to it; every outcome is logged (user,
//! peer, mechanism, outcome; never a secret) and counted in the
//! process's [`Metrics`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cpmstore_storage::{
    Account, AccountId, AccountStatus, CredentialRecord, Error as StoreError, Store,
};

use super::credentials::{Verifier, needs_rehash};
use super::psk_cache::PskPeer;
use super::scram::{self, ClientFirst, Exchange};
use super::secret::Secret;
use super::stats::{Mechanism, Outcome};
use super::throttle::{Gate, Throttle, Ticket};
use crate::metrics::Metrics;

/// Why a login failed. Never shown to the client (which always sees
/// `NO [AUTHENTICATIONFAILED]`); only logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Unknown user, wrong password or proof, malformed exchange, refused authzid.
    BadCredentials,
    /// Right credentials, disabled account.
    Disabled,
    /// The source is locked out; the credentials were not checked.
    Locked,
    /// Storage could not be asked.
    Unavailable,
}

impl LoginFailure {
    pub fn as_str(self) -> &'static str {
        self.outcome().as_str()
    }

    /// The counter this failure goes to.
    pub fn outcome(self) -> Outcome {
        match self {
            LoginFailure::BadCredentials => Outcome::Failed,
            LoginFailure::Disabled => Outcome::Disabled,
            LoginFailure::Locked => Outcome::Locked,
            LoginFailure::Unavailable => Outcome::Unavailable,
        }
    }
}

/// A SCRAM exchange between the server-first and the client-final message.
pub struct ScramAttempt {
    exchange: Exchange,
    ticket: Ticket,
    username: String,
    authzid: Option<String>,
    /// `None` for an unknown user (the exchange runs against a stand-in).
    account: Option<Account>,
    mechanism: Mechanism,
}

impl std::fmt::Debug for ScramAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramAttempt")
            .field("username", &self.username)
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

/// Checks credentials against the provisioned ones.
pub struct Authenticator {
    store: Arc<dyn Store>,
    verifier: Verifier,
    throttle: Arc<Throttle>,
    metrics: Arc<Metrics>,
}

/// An account id no account has: unknown users' credentials are looked up under it, so
/// they cost the same storage round trip as a known user's.
const NO_ACCOUNT: AccountId = AccountId(-1);

impl Authenticator {
    pub fn new(
        store: Arc<dyn Store>,
        verifier: Verifier,
        throttle: Arc<Throttle>,
        metrics: Arc<Metrics>,
    ) -> Self {
        for mechanism in Mechanism::ALL {
            for outcome in Outcome::ALL {
                metrics.prime_login(mechanism.as_str(), outcome.as_str());
            }
        }
        Authenticator {
            store,
            verifier,
            throttle,
            metrics,
        }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }

    /// The account and its credentials; `(None, None)` for an unknown user.
    async fn load(
        &self,
        username: &str,
    ) -> Result<(Option<Account>, Option<CredentialRecord>), StoreError> {
        match self.store.account_by_name(username).await {
            Ok(account) => {
                let record = self.store.credentials(account.id).await?;
                Ok((Some(account), record))
            }
            Err(StoreError::NotFound(_)) => {
                // Same round trips as for a known user; the answer is of no interest.
                let _ = self.store.credentials(NO_ACCOUNT).await;
                Ok((None, None))
            }
            Err(e) => Err(e),
        }
    }

    /// Logs and counts an outcome.
    fn record(
        &self,
        mechanism: Mechanism,
        peer: IpAddr,
        username: &str,
        result: Result<&Account, LoginFailure>,
    ) {
        let mechanism_name = mechanism.as_str();
        match result {
            Ok(account) => {
                self.metrics
                    .login(mechanism_name, Outcome::Success.as_str());
                tracing::info!(%peer, user = %account.username, mechanism = mechanism_name, outcome = "success", "login");
            }
            Err(why) => {
                let outcome = why.outcome();
                self.metrics.login(mechanism_name, outcome.as_str());
                if outcome == Outcome::Unavailable {
                    self.metrics.storage_error("auth");
                }
                tracing::info!(%peer, user = %username, mechanism = mechanism_name, outcome = why.as_str(), "login refused");
            }
        }
    }

    /// Verifies `username`/`password` (LOGIN, AUTHENTICATE PLAIN). argon2 runs for
    /// unknown and disabled accounts too, so the answer's timing tells nothing. After a
    /// success with credentials made under other parameters than the configured ones,
    /// they are derived again and stored (in the background).
    pub async fn login_password(
        &self,
        username: &str,
        password: &Secret,
        peer: IpAddr,
        mechanism: Mechanism,
    ) -> Result<Account, LoginFailure> {
        let ticket = self.throttle.admit(peer, username);
        let result = match ticket.gate() {
            Gate::Locked(wait) => {
                drop(ticket);
                tokio::time::sleep(wait).await;
                Err(LoginFailure::Locked)
            }
            Gate::Open(wait) => {
                pause(wait).await;
                self.check_password(username, password, peer, ticket).await
            }
        };
        self.record(mechanism, peer, username, result.as_ref().map_err(|e| *e));
        result
    }

    async fn check_password(
        &self,
        username: &str,
        password: &Secret,
        peer: IpAddr,
        ticket: Ticket,
    ) -> Result<Account, LoginFailure> {
        let (account, record) = match self.load(username).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "login: storage error");
                return Err(LoginFailure::Unavailable);
            }
        };
        let ok = self
            .verifier
            .verify_password(record.as_ref(), password)
            .await;
        match (account, record) {
            (Some(account), Some(record)) if ok => {
                ticket.succeeded();
                if account.status != AccountStatus::Active {
                    return Err(LoginFailure::Disabled);
                }
                self.maybe_rehash(&account, &record, password);
                Ok(account)
            }
            _ => {
                pause(ticket.failed()).await;
                Err(LoginFailure::BadCredentials)
            }
        }
    }

    /// Stores credentials derived with the configured parameters when `record` was
    /// made with others, unless the password changed meanwhile.
    fn maybe_rehash(&self, account: &Account, record: &CredentialRecord, password: &Secret) {
        if !needs_rehash(record, self.verifier.params()) {
            return;
        }
        let store = self.store.clone();
        let verifier = self.verifier.clone();
        let password = password.clone();
        let verified_phc = record.argon2_phc.clone();
        let id = account.id;
        let username = account.username.clone();
        tokio::spawn(async move {
            let fresh = match verifier.derive(&password).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!(user = %username, error = %e, "rehash failed");
                    return;
                }
            };
            drop(password);
            // A `set-password` between the login and now wins: keep its credentials.
            // (The window left between this read and the write is a few milliseconds.)
            match store.credentials(id).await {
                Ok(Some(current)) if current.argon2_phc == verified_phc => {}
                Ok(_) => {
                    tracing::info!(user = %username, "rehash skipped: the credentials changed meanwhile");
                    return;
                }
                Err(e) => {
                    tracing::warn!(user = %username, error = %e, "rehash failed");
                    return;
                }
            }
            match store.set_credentials(id, fresh).await {
                Ok(()) => tracing::info!(
                    user = %username,
                    "credentials rehashed with the configured parameters"
                ),
                Err(e) => tracing::warn!(user = %username, error = %e, "rehash failed"),
            }
        });
    }

    /// Starts a SCRAM exchange for a parsed client-first-message. Returns the attempt
    /// and the server-first-message. `binding_data` is the channel binding data the
    /// caller negotiated (empty for none). An unknown user, or a locked-out source, gets
    /// a server-first-message of the same shape; the exchange then fails at the proof.
    pub async fn scram_start(
        &self,
        client: &ClientFirst,
        binding_data: &[u8],
        peer: IpAddr,
        mechanism: Mechanism,
    ) -> Result<(ScramAttempt, String), LoginFailure> {
        let ticket = self.throttle.admit(peer, &client.username);
        let (account, record) = match self.load(&client.username).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "login: storage error");
                self.record(
                    mechanism,
                    peer,
                    &client.username,
                    Err(LoginFailure::Unavailable),
                );
                return Err(LoginFailure::Unavailable);
            }
        };
        let stored = record.and_then(|r| {
            scram::Verifier::stored(
                r.scram_salt.clone(),
                r.scram_iterations,
                &r.scram_stored_key,
                &r.scram_server_key,
            )
        });
        let verifier = match stored {
            Some(v) => v,
            None => {
                let (salt, iterations) = self.verifier.dummy_scram_params(&client.username);
                scram::Verifier::dummy(salt, iterations)
            }
        };
        let (exchange, server_first) = Exchange::start(client, verifier, binding_data);
        Ok((
            ScramAttempt {
                exchange,
                ticket,
                username: client.username.clone(),
                authzid: client.authzid.clone(),
                account,
                mechanism,
            },
            server_first,
        ))
    }

    /// Ends a SCRAM exchange with the client-final-message: on success the account
    /// and the server-final-message.
    pub async fn scram_finish(
        &self,
        attempt: ScramAttempt,
        client_final: &[u8],
        peer: IpAddr,
    ) -> Result<(Account, String), LoginFailure> {
        let ScramAttempt {
            exchange,
            ticket,
            username,
            authzid,
            account,
            mechanism,
        } = attempt;
        let mut server_final = String::new();
        let result = match ticket.gate() {
            Gate::Locked(wait) => {
                drop(ticket);
                tokio::time::sleep(wait).await;
                Err(LoginFailure::Locked)
            }
            Gate::Open(wait) => {
                pause(wait).await;
                let checked = exchange.finish(client_final);
                let authz_ok = authzid.as_deref().is_none_or(|a| a == username);
                match (checked, account) {
                    (Ok(message), Some(account)) if authz_ok => {
                        ticket.succeeded();
                        if account.status == AccountStatus::Active {
                            server_final = message;
                            Ok(account)
                        } else {
                            Err(LoginFailure::Disabled)
                        }
                    }
                    (checked, _) => {
                        if let Err(e) = checked {
                            tracing::debug!(%peer, user = %username, error = %e, "SCRAM exchange failed");
                        } else {
                            tracing::debug!(%peer, user = %username, "SCRAM authorisation identity refused");
                        }
                        pause(ticket.failed()).await;
                        Err(LoginFailure::BadCredentials)
                    }
                }
            }
        };
        self.record(mechanism, peer, &username, result.as_ref().map_err(|e| *e));
        result.map(|account| (account, server_final))
    }

    /// Records an attempt refused before credentials could be checked (a malformed
    /// SASL message, a refused channel binding or authorisation identity): it counts
    /// for the throttle as a failure of `username` (when it could be read), waits as a
    /// failure would, and is logged and counted.
    pub async fn refused(
        &self,
        username: Option<&str>,
        peer: IpAddr,
        mechanism: Mechanism,
        why: &(dyn std::fmt::Display + Sync),
    ) {
        let username = username.unwrap_or("");
        tracing::debug!(%peer, user = %username, reason = %why, "authentication exchange refused");
        let ticket = self.throttle.admit(peer, username);
        let result = match ticket.gate() {
            Gate::Locked(wait) => {
                drop(ticket);
                tokio::time::sleep(wait).await;
                Err(LoginFailure::Locked)
            }
            Gate::Open(wait) => {
                pause(wait).await;
                pause(ticket.failed()).await;
                Err(LoginFailure::BadCredentials)
            }
        };
        self.record(mechanism, peer, username, result.as_ref().map_err(|e| *e));
    }

    /// SASL EXTERNAL on PSK-TLS: `psk` is whom the handshake authenticated, `current`
    /// the account its identity maps to now (`None` once it was removed), `authzid` the
    /// client's message (empty: act as the PSK's subscriber; otherwise it must name
    /// that same subscriber).
    pub async fn external(
        &self,
        psk: &PskPeer,
        current: Option<AccountId>,
        authzid: &[u8],
        peer: IpAddr,
    ) -> Result<Account, LoginFailure> {
        let result = self.check_external(psk, current, authzid, peer).await;
        let shown = match &result {
            Ok(account) => account.username.clone(),
            Err(_) => format!("psk:{}", psk.identity),
        };
        self.record(
            Mechanism::External,
            peer,
            &shown,
            result.as_ref().map_err(|e| *e),
        );
        result
    }

    async fn check_external(
        &self,
        psk: &PskPeer,
        current: Option<AccountId>,
        authzid: &[u8],
        peer: IpAddr,
    ) -> Result<Account, LoginFailure> {
        if current != Some(psk.account) {
            tracing::info!(%peer, identity = %psk.identity, "EXTERNAL: the PSK was changed or removed since the handshake");
            return Err(LoginFailure::BadCredentials);
        }
        let account = match self.store.account_by_id(psk.account).await {
            Ok(account) => account,
            Err(StoreError::NotFound(_)) => return Err(LoginFailure::BadCredentials),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "login: storage error");
                return Err(LoginFailure::Unavailable);
            }
        };
        if !authzid.is_empty() && authzid != account.username.as_bytes() {
            tracing::info!(%peer, identity = %psk.identity, "EXTERNAL: authorisation identity names another subscriber");
            return Err(LoginFailure::BadCredentials);
        }
        if account.status != AccountStatus::Active {
            return Err(LoginFailure::Disabled);
        }
        Ok(account)
    }
}

/// Waits `wait` unless it is zero.
async fn pause(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}
