//! The one place that maps errors to IMAP answers.

use cpmstore_storage::Error as StoreError;
use imap_codec::imap_types::extensions::metadata::MetadataCode;
use imap_codec::imap_types::response::{Code, StatusKind};

/// Why a command did not complete.
#[derive(Debug)]
pub enum CmdError {
    /// `NO` with an optional response code.
    No {
        code: Option<&'static str>,
        text: String,
    },
    /// `NO` with a typed response code that carries values, e.g. RFC 5464's
    /// `[METADATA MAXSIZE n]`.
    NoTyped { code: Code<'static>, text: String },
    /// `BAD`: the command is malformed or not allowed in this state.
    Bad(String),
    /// Storage failed.
    Store(StoreError),
    /// The connection must end (after `* BYE`).
    Bye(String),
    /// I/O on the connection failed: nothing more can be said.
    Io(std::io::Error),
}

pub type CmdResult<T = Done> = Result<T, CmdError>;

/// A command's successful completion: the tagged OK's code and text.
#[derive(Debug, Default)]
pub struct Done {
    pub code: Option<Code<'static>>,
    pub text: String,
}

impl Done {
    pub fn text(text: impl Into<String>) -> Self {
        Done {
            code: None,
            text: text.into(),
        }
    }
    pub fn with_code(code: Code<'static>, text: impl Into<String>) -> Self {
        Done {
            code: Some(code),
            text: text.into(),
        }
    }
}

impl CmdError {
    pub fn no(text: impl Into<String>) -> Self {
        CmdError::No {
            code: None,
            text: text.into(),
        }
    }
    pub fn no_code(code: &'static str, text: impl Into<String>) -> Self {
        CmdError::No {
            code: Some(code),
            text: text.into(),
        }
    }
    pub fn bad(text: impl Into<String>) -> Self {
        CmdError::Bad(text.into())
    }
    /// `NO [METADATA ...]` (RFC 5464 4.3).
    pub fn metadata(code: MetadataCode, text: impl Into<String>) -> Self {
        CmdError::NoTyped {
            code: Code::Metadata(code),
            text: text.into(),
        }
    }
    pub fn nonexistent() -> Self {
        CmdError::no_code("NONEXISTENT", "Mailbox doesn't exist")
    }
    /// CREATE outside the CPM root under `[cpm] enforce_folder_rules` (INTERFACES.md
    /// 9.1): `NO [CANNOT]`, naming where clients may create folders.
    pub fn outside_cpm_root(root: &str) -> Self {
        CmdError::no_code(
            "CANNOT",
            format!(
                "Clients may create folders only under {root} (CPM message store folder rules); \
                 try {root}/<name>."
            ),
        )
    }
    /// MOVE out of a Conversation or Session History folder under `[cpm]
    /// enforce_folder_rules` (INTERFACES.md 9.1): `NO [CANNOT]`, saying what is allowed.
    pub fn cpm_move_refused() -> Self {
        CmdError::no_code(
            "CANNOT",
            "Objects of a CPM Conversation or Session History folder are not moved one by one; \
             COPY them, or RENAME or DELETE the whole folder.",
        )
    }
}

impl From<StoreError> for CmdError {
    fn from(e: StoreError) -> Self {
        CmdError::Store(e)
    }
}

/// A mailbox name that is not modified UTF-7: `NO [CANNOT]`, saying why. (NO, not
/// BAD: the command is well formed, the name is one no mailbox can have; clients and
/// ImapTest treat BAD as a broken session.)
impl From<super::mutf7::Invalid> for CmdError {
    fn from(e: super::mutf7::Invalid) -> Self {
        CmdError::no_code(
            "CANNOT",
            format!("Invalid mailbox name: malformed modified UTF-7 (RFC 3501 5.1.3): {e}."),
        )
    }
}

impl From<std::io::Error> for CmdError {
    fn from(e: std::io::Error) -> Self {
        CmdError::Io(e)
    }
}

/// The tagged status line for an error, e.g. `a1 NO [NONEXISTENT] Mailbox doesn't exist`.
/// Storage failures are logged by the caller; the client gets no internal detail.
/// The typed response code of a NO: imap-types has types for the RFC 3501 and a few
/// later codes; the RFC 5530 ones it lacks (`NONEXISTENT`, `CANNOT`, ...) are
/// [`raw_code`](super::response::raw_code)s.
fn code_of(code: &'static str) -> Code<'static> {
    match code {
        "READ-ONLY" => Code::ReadOnly,
        "READ-WRITE" => Code::ReadWrite,
        "TRYCREATE" => Code::TryCreate,
        "OVERQUOTA" => Code::OverQuota,
        "TOOBIG" => Code::TooBig,
        other => super::response::raw_code(other),
    }
}

pub fn status_line(tag: &str, err: &CmdError) -> String {
    if let CmdError::NoTyped { code, text } = err {
        let mut out = Vec::new();
        super::response::push_status(
            &mut out,
            Some(tag),
            StatusKind::No,
            Some(code.clone()),
            text,
        );
        return String::from_utf8_lossy(&out).into_owned();
    }
    let (kind, code, text): (StatusKind, Option<&str>, String) = match err {
        CmdError::No { code, text } => (StatusKind::No, *code, text.clone()),
        CmdError::NoTyped { text, .. } => (StatusKind::No, None, text.clone()),
        CmdError::Bad(text) => (StatusKind::Bad, None, text.clone()),
        CmdError::Store(e) => match e {
            StoreError::NotFound(_) => (
                StatusKind::No,
                Some("NONEXISTENT"),
                "No such mailbox or message".into(),
            ),
            StoreError::AlreadyExists(_) => (
                StatusKind::No,
                Some("ALREADYEXISTS"),
                "Already exists".into(),
            ),
            StoreError::Invalid(what) => (StatusKind::No, Some("CANNOT"), what.clone()),
            StoreError::OverQuota => (StatusKind::No, Some("OVERQUOTA"), "Quota exceeded".into()),
            StoreError::Unreachable(_) | StoreError::Database(_) => (
                StatusKind::No,
                Some("UNAVAILABLE"),
                "Temporary storage failure, try again later".into(),
            ),
        },
        CmdError::Bye(text) => (StatusKind::Bad, None, text.clone()),
        CmdError::Io(_) => (StatusKind::Bad, None, "I/O error".into()),
    };
    let mut out = Vec::new();
    super::response::push_status(&mut out, Some(tag), kind, code.map(code_of), &text);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let cases = [
            (
                CmdError::Store(StoreError::NotFound("x".into())),
                "a NO [NONEXISTENT] No such mailbox or message\r\n",
            ),
            (
                CmdError::Store(StoreError::AlreadyExists("x".into())),
                "a NO [ALREADYEXISTS] Already exists\r\n",
            ),
            (
                CmdError::Store(StoreError::OverQuota),
                "a NO [OVERQUOTA] Quota exceeded\r\n",
            ),
            (
                CmdError::metadata(MetadataCode::MaxSize(65536), "Value too large"),
                "a NO [METADATA MAXSIZE 65536] Value too large\r\n",
            ),
            (
                CmdError::metadata(MetadataCode::TooMany, "Too many entries"),
                "a NO [METADATA TOOMANY] Too many entries\r\n",
            ),
            (
                CmdError::outside_cpm_root("RCSMessageStore"),
                "a NO [CANNOT] Clients may create folders only under RCSMessageStore (CPM \
                 message store folder rules); try RCSMessageStore/<name>.\r\n",
            ),
            (
                CmdError::cpm_move_refused(),
                "a NO [CANNOT] Objects of a CPM Conversation or Session History folder are not \
                 moved one by one; COPY them, or RENAME or DELETE the whole folder.\r\n",
            ),
            (
                CmdError::bad("Unknown command"),
                "a BAD Unknown command\r\n",
            ),
            (
                CmdError::no_code("PRIVACYREQUIRED", "TLS first"),
                "a NO [PRIVACYREQUIRED] TLS first\r\n",
            ),
            (
                CmdError::from(crate::imap::mutf7::Invalid::EncodedAscii { at: 0 }),
                "a NO [CANNOT] Invalid mailbox name: malformed modified UTF-7 (RFC 3501 5.1.3): \
                 the shift sequence at byte 0 encodes printable US-ASCII, which must be \
                 written as itself.\r\n",
            ),
        ];
        for (err, line) in cases {
            assert_eq!(status_line("a", &err), line);
        }
        // Internal details never reach the client.
        let line = status_line(
            "a",
            &CmdError::Store(StoreError::Database("secret table detail".into())),
        );
        assert!(!line.contains("secret"));
    }
}
