//! Commands valid in any state: CAPABILITY, NOOP, LOGOUT, ID; and ENABLE, NAMESPACE.

use imap_codec::imap_types::core::{IString, NString, Quoted, QuotedChar, Vec1};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::namespace::Namespace;
use imap_codec::imap_types::response::Data;

use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdResult, Done};
use crate::imap::mailbox_view::MailboxView;
use crate::imap::state::{Login, Selected};

pub fn capability<S: SessionStream>(c: &mut Connection<S>, authenticated: bool) -> CmdResult {
    // Raw escape: imap-types' `Capability` writes IMAP4rev1 as `IMAP4REV1`; the
    // bytes clients have always seen are kept (see `Connection::capability_data`).
    let line = c.capability_data(authenticated);
    c.raw(&line);
    Ok(Done::text("Capability completed."))
}

/// NOOP: the session catches up after every command, which is all NOOP is for. NOOP
/// (and CHECK) is how a client polls: the catch-up reads the store itself rather than
/// waiting to be told, so a change committed on another node of a PostgreSQL cluster
/// is seen even before its notification arrives.
pub fn noop(selected: Option<&mut Selected>) -> CmdResult {
    if let Some(selected) = selected {
        selected.dirty = true;
    }
    Ok(Done::text("NOOP completed."))
}

/// CHECK (RFC 3501 6.4.1): nothing to flush (every change is committed when answered);
/// it syncs like NOOP.
pub fn check(selected: &mut Selected) -> CmdResult {
    selected.dirty = true;
    Ok(Done::text("Check completed."))
}

/// LOGOUT: the dispatcher makes the state `Logout`.
pub fn logout<S: SessionStream>(c: &mut Connection<S>) -> CmdResult {
    c.bye("Logging out.");
    Ok(Done::text("Logout completed."))
}

/// RFC 2971 ID: the client's fields are only logged (never secrets: ID carries none).
pub fn id<S: SessionStream>(
    c: &mut Connection<S>,
    parameters: Option<Vec<(IString<'static>, NString<'static>)>>,
) -> CmdResult {
    if let Some(params) = parameters {
        let fields: Vec<String> = params
            .iter()
            .take(30)
            .map(|(k, v)| {
                let v =
                    v.0.as_ref()
                        .map(|v| String::from_utf8_lossy(v.as_ref()).into_owned());
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k.as_ref()),
                    v.unwrap_or_else(|| "NIL".into())
                )
            })
            .collect();
        tracing::debug!(peer = %c.info.peer, client = fields.join(", "), "ID");
    }
    // Quoted strings, as always sent (imap-codec would otherwise pick atoms' form).
    let quoted = |s: &'static str| Quoted::try_from(s).map(IString::Quoted);
    if let (Ok(name), Ok(ours), Ok(version), Ok(number)) = (
        quoted("name"),
        quoted("cpmstore"),
        quoted("version"),
        quoted(env!("CARGO_PKG_VERSION")),
    ) {
        c.data(Data::Id {
            parameters: Some(vec![
                (name, NString(Some(ours))),
                (version, NString(Some(number))),
            ]),
        });
    }
    Ok(Done::text("ID completed."))
}

/// RFC 5161 ENABLE: CONDSTORE and QRESYNC are the capabilities we advertise that can
/// be enabled. ENABLED lists those this command enabled (not those that already
/// were), and nothing else. QRESYNC implies CONDSTORE (RFC 7162 3.2.3) but ENABLED
/// names CONDSTORE only when the client asked for it too.
pub fn enable<S: SessionStream>(
    c: &mut Connection<S>,
    login: &mut Login,
    view: Option<&MailboxView>,
    capabilities: Vec1<CapabilityEnable<'static>>,
) -> CmdResult {
    let condstore_before = login.condstore;
    let mut condstore_asked = false;
    let mut qresync_enabled = false;
    for capability in capabilities.as_ref() {
        match capability {
            CapabilityEnable::CondStore => condstore_asked = true,
            other @ CapabilityEnable::Other(_)
                if other.to_string().eq_ignore_ascii_case("QRESYNC") =>
            {
                qresync_enabled |= login.enable_qresync(view, &mut c.out);
            }
            _ => {}
        }
    }
    if condstore_asked {
        login.enable_condstore(view, &mut c.out);
    }
    let mut enabled = Vec::new();
    if condstore_asked && !condstore_before {
        enabled.push(CapabilityEnable::CondStore);
    }
    if qresync_enabled && let Ok(qresync) = CapabilityEnable::try_from("QRESYNC") {
        enabled.push(qresync);
    }
    c.data(Data::Enabled {
        capabilities: enabled,
    });
    Ok(Done::text("Enabled."))
}

/// RFC 2342: one personal namespace, `/` separated.
pub fn namespace<S: SessionStream>(c: &mut Connection<S>) -> CmdResult {
    if let (Ok(prefix), Ok(delimiter)) = (Quoted::try_from(""), QuotedChar::try_from('/')) {
        c.data(Data::Namespace {
            personal: vec![Namespace::new(IString::Quoted(prefix), Some(delimiter))],
            other: Vec::new(),
            shared: Vec::new(),
        });
    }
    Ok(Done::text("Namespace completed."))
}

#[cfg(test)]
mod tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn any_state_commands() {
        table(
            Start::NotAuthenticated,
            &[
                (
                    &["a CAPABILITY"],
                    &[
                        "* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN AUTH=SCRAM-SHA-256",
                        "a OK Capability completed.",
                    ],
                ),
                (&["a NOOP"], &["a OK NOOP completed."]),
                (
                    &["a ID NIL"],
                    &[
                        "* ID (\"name\" \"cpmstore\" \"version\" \"...",
                        "a OK ID completed.",
                    ],
                ),
                (
                    &["a LOGOUT"],
                    &["* BYE Logging out.", "a OK Logout completed."],
                ),
                (
                    &["a ENABLE CONDSTORE"],
                    &["a BAD Command not allowed before login."],
                ),
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn authenticated_commands() {
        table(
            Start::Authenticated,
            &[
                (
                    &["a CAPABILITY"],
                    &[
                        "* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS \
                         UNSELECT CHILDREN SPECIAL-USE MOVE CONDSTORE QRESYNC LIST-EXTENDED LIST-STATUS METADATA APPENDLIMIT=...",
                        "a OK Capability completed.",
                    ],
                ),
                (
                    &["a ENABLE CONDSTORE QRESYNC", "b ENABLE CONDSTORE"],
                    &[
                        "* ENABLED CONDSTORE QRESYNC",
                        "a OK Enabled.",
                        "* ENABLED",
                        "b OK Enabled.",
                    ],
                ),
                (
                    &["a NAMESPACE"],
                    &[
                        "* NAMESPACE ((\"\" \"/\")) NIL NIL",
                        "a OK Namespace completed.",
                    ],
                ),
            ],
        )
        .await;
    }

    /// What imap-codec's `ext_status_size` and `ext_within` now parse is not
    /// implemented (nor advertised): BAD, as when it did not parse.
    #[tokio::test]
    async fn parsed_extensions_we_do_not_serve_are_bad() {
        table(
            Start::Selected { read_only: false },
            &[(
                &[
                    "c STATUS INBOX (SIZE)",
                    "d SEARCH OLDER 60",
                    "e SEARCH YOUNGER 60",
                ],
                &["c BAD...", "d BAD...", "e BAD..."],
            )],
        )
        .await;
    }
}
