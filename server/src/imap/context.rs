//! What every IMAP session shares ([`ImapCtx`]: the store, the authenticator, TLS,
//! limits, the per-account session count, the shutdown signal, metrics).

use std::sync::Arc;

use cpmstore_storage::Store;

use crate::auth::login::Authenticator;
use crate::auth::psk_cache::PskCache;
use crate::config::{CpmConfig, LimitsConfig};

/// Limits a session applies.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_command_bytes: u32,
    pub max_literal_bytes: u32,
    pub login_timeout_secs: u64,
    pub max_preauth_command_bytes: u32,
    pub write_timeout_secs: u64,
    pub autologout_secs: u64,
    pub idle_max_secs: u64,
    pub idle_keepalive_secs: u64,
}

impl From<&LimitsConfig> for SessionLimits {
    fn from(l: &LimitsConfig) -> Self {
        SessionLimits {
            max_command_bytes: u32::try_from(l.max_command_bytes).unwrap_or(u32::MAX),
            max_literal_bytes: u32::try_from(l.max_literal_bytes).unwrap_or(u32::MAX),
            login_timeout_secs: l.login_timeout_secs,
            max_preauth_command_bytes: u32::try_from(l.max_preauth_command_bytes)
                .unwrap_or(u32::MAX),
            write_timeout_secs: l.write_timeout_secs,
            autologout_secs: l.autologout_secs,
            idle_max_secs: l.idle_max_secs,
            idle_keepalive_secs: l.idle_keepalive_secs,
        }
    }
}

/// What every IMAP session shares.
pub struct ImapCtx {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
    /// For STARTTLS; `None` when no TLS is configured (then STARTTLS is refused).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// RFC 5929 `tls-server-end-point` data of our certificate, for SCRAM-SHA-256-PLUS
    /// on TLS connections.
    pub tls_end_point: Option<Vec<u8>>,
    /// The PSK table, when the PSK-TLS listener runs (EXTERNAL checks it again).
    pub psk: Option<Arc<PskCache>>,
    pub limits: SessionLimits,
    pub max_failures_per_connection: u32,
    /// Authenticated sessions per account (`limits.max_connections_per_account`).
    pub account_slots: Arc<AccountSlots>,
    /// Flips to true when the server shuts down.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Connection, login and command counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `[cpm]`: the root folder, the folder rules of CREATE/MOVE and whether
    /// `\read-report-sent` is kept (INTERFACES.md 9.1, 9.4).
    pub cpm: CpmConfig,
}

/// Something a connection holds until it logs in (its place among the connections not
/// yet authenticated); dropped at login.
pub type PreAuthGuard = Box<dyn std::any::Any + Send + Sync>;

/// Counts authenticated sessions per account, up to a maximum.
pub struct AccountSlots {
    max: usize,
    sessions: std::sync::Mutex<std::collections::HashMap<cpmstore_storage::AccountId, usize>>,
}

/// One authenticated session's place; given back when dropped.
pub struct AccountSlot {
    slots: Arc<AccountSlots>,
    account: cpmstore_storage::AccountId,
}

impl AccountSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(AccountSlots {
            max,
            sessions: Default::default(),
        })
    }

    /// A place for one more session of `account`, or `None` when it has `max` already.
    pub fn claim(self: &Arc<Self>, account: cpmstore_storage::AccountId) -> Option<AccountSlot> {
        let mut sessions = self.sessions.lock().ok()?;
        let n = sessions.entry(account).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AccountSlot {
            slots: self.clone(),
            account,
        })
    }
}

impl Drop for AccountSlot {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.slots.sessions.lock()
            && let Some(n) = sessions.get_mut(&self.account)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sessions.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpmstore_storage::AccountId;

    #[test]
    fn account_slots_are_bounded_and_given_back() {
        let slots = AccountSlots::new(2);
        let a = slots.claim(AccountId(1));
        let b = slots.claim(AccountId(1));
        assert!(a.is_some() && b.is_some());
        assert!(slots.claim(AccountId(1)).is_none());
        assert!(
            slots.claim(AccountId(2)).is_some(),
            "other accounts are not affected"
        );
        drop(a);
        assert!(slots.claim(AccountId(1)).is_some());
    }
}
