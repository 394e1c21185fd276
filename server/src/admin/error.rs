//! The one error type of the provisioning operations, with its CLI exit status and its
//! HTTP status in one place.

use cpmstore_storage::Error as StorageError;

use crate::auth::credentials::{CredentialError, PolicyError};
use crate::auth::psk::PskError;
use crate::validate::InvalidInput;

/// What went wrong in a provisioning operation. The message says what and how to mend
/// it; it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Bad input: username, address, password policy, PSK format (exit 5, HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Already exists (exit 3, HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// No such subscriber (exit 4, HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// Storage unreachable (exit 1, HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: database or I/O failure (exit 1, HTTP 500).
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// The CLI exit status (INTERFACES.md 1): 1 internal, 3 conflict, 4 not found,
    /// 5 invalid input.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Invalid(_) => 5,
            AdminError::Conflict(_) => 3,
            AdminError::NotFound(_) => 4,
            AdminError::Unavailable(_) | AdminError::Internal(_) => 1,
        }
    }

    /// The HTTP status of the admin API (INTERFACES.md 7).
    pub fn http_status(&self) -> u16 {
        match self {
            AdminError::Invalid(_) => 400,
            AdminError::Conflict(_) => 409,
            AdminError::NotFound(_) => 404,
            AdminError::Unavailable(_) => 503,
            AdminError::Internal(_) => 500,
        }
    }

    /// The "no such subscriber" error.
    pub fn no_subscriber(username: &str) -> AdminError {
        AdminError::NotFound(format!(
            "no subscriber named {username:?}; check the name (`subscriber list` shows the existing ones)"
        ))
    }
}

impl From<StorageError> for AdminError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(what) => AdminError::NotFound(format!("not found: {what}")),
            StorageError::AlreadyExists(what) => {
                AdminError::Conflict(format!("already exists: {what}"))
            }
            StorageError::Invalid(what) => AdminError::Invalid(format!("invalid: {what}")),
            StorageError::OverQuota => {
                AdminError::Invalid("over quota; raise the quota or free space first".into())
            }
            StorageError::Unreachable(why) => AdminError::Unavailable(format!(
                "storage unreachable: {why}; check that the database is running and that storage.url is right"
            )),
            StorageError::Database(why) => AdminError::Internal(format!("storage error: {why}")),
        }
    }
}

impl From<InvalidInput> for AdminError {
    fn from(err: InvalidInput) -> Self {
        AdminError::Invalid(err.0)
    }
}

impl From<PolicyError> for AdminError {
    fn from(err: PolicyError) -> Self {
        AdminError::Invalid(err.to_string())
    }
}

impl From<CredentialError> for AdminError {
    fn from(err: CredentialError) -> Self {
        match err {
            CredentialError::Policy(policy) => policy.into(),
            other => AdminError::Internal(other.to_string()),
        }
    }
}

impl From<PskError> for AdminError {
    fn from(err: PskError) -> Self {
        match err {
            PskError::InvalidKey(_) | PskError::InvalidIdentity(_) => {
                AdminError::Invalid(err.to_string())
            }
            PskError::Kek { .. } | PskError::Seal | PskError::Open => {
                AdminError::Internal(err.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let cases = [
            (AdminError::Invalid(String::new()), 5, 400),
            (AdminError::Conflict(String::new()), 3, 409),
            (AdminError::NotFound(String::new()), 4, 404),
            (AdminError::Unavailable(String::new()), 1, 503),
            (AdminError::Internal(String::new()), 1, 500),
        ];
        for (err, exit, http) in cases {
            assert_eq!(
                (err.exit_code(), err.http_status()),
                (exit, http),
                "{err:?}"
            );
        }
        assert_eq!(
            AdminError::from(StorageError::Unreachable("x".into())).exit_code(),
            1
        );
        assert_eq!(
            AdminError::from(StorageError::AlreadyExists("x".into())).exit_code(),
            3
        );
        assert_eq!(
            AdminError::from(StorageError::NotFound("x".into())).exit_code(),
            4
        );
        assert_eq!(AdminError::from(PolicyError::Empty).exit_code(), 5);
    }
}
