//! Login counters by mechanism and outcome, for logs now and `/metrics` later.

use std::sync::atomic::{AtomicU64, Ordering};

/// How a client authenticated (or tried to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// IMAP `LOGIN`.
    Login,
    /// SASL PLAIN.
    Plain,
    /// SASL SCRAM-SHA-256.
    ScramSha256,
    /// SASL SCRAM-SHA-256-PLUS.
    ScramSha256Plus,
    /// SASL EXTERNAL on PSK-TLS.
    External,
}

impl Mechanism {
    /// Every mechanism, in a fixed order.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Login,
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha256Plus,
        Mechanism::External,
    ];

    /// The name used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Login => "login",
            Mechanism::Plain => "plain",
            Mechanism::ScramSha256 => "scram-sha-256",
            Mechanism::ScramSha256Plus => "scram-sha-256-plus",
            Mechanism::External => "external",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How an attempt ended. The client sees `OK` for `Success` and the same
/// `NO [AUTHENTICATIONFAILED]` for every other outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    /// Unknown user, wrong password or proof, malformed exchange, refused authzid.
    Failed,
    /// Right credentials, disabled account.
    Disabled,
    /// Refused unchecked: the source is locked out.
    Locked,
    /// Storage could not be asked.
    Unavailable,
}

impl Outcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Failed,
        Outcome::Disabled,
        Outcome::Locked,
        Outcome::Unavailable,
    ];

    /// The name used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Disabled => "disabled",
            Outcome::Locked => "locked",
            Outcome::Unavailable => "unavailable",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts of login attempts by mechanism and outcome.
#[derive(Debug, Default)]
pub struct AuthStats {
    counts: [[AtomicU64; Outcome::ALL.len()]; Mechanism::ALL.len()],
}

impl AuthStats {
    /// Counts one attempt.
    pub fn record(&self, mechanism: Mechanism, outcome: Outcome) {
        self.counts[mechanism.index()][outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self, mechanism: Mechanism, outcome: Outcome) -> u64 {
        self.counts[mechanism.index()][outcome.index()].load(Ordering::Relaxed)
    }

    /// Every (mechanism, outcome, count), zeros included.
    pub fn snapshot(&self) -> Vec<(Mechanism, Outcome, u64)> {
        Mechanism::ALL
            .iter()
            .flat_map(|m| Outcome::ALL.iter().map(move |o| (*m, *o, self.get(*m, *o))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let stats = AuthStats::default();
        stats.record(Mechanism::Login, Outcome::Failed);
        stats.record(Mechanism::Login, Outcome::Failed);
        stats.record(Mechanism::External, Outcome::Success);
        assert_eq!(stats.get(Mechanism::Login, Outcome::Failed), 2);
        assert_eq!(stats.get(Mechanism::External, Outcome::Success), 1);
        assert_eq!(stats.get(Mechanism::Plain, Outcome::Success), 0);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.len(), 25);
        assert_eq!(snapshot.iter().map(|(_, _, n)| n).sum::<u64>(), 3);
    }
}
