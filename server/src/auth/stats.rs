//! The mechanism and outcome names of login attempts, as logs and `/metrics` label them.

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
}
