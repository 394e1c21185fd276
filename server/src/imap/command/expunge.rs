//! EXPUNGE, UID EXPUNGE (UIDPLUS), CLOSE and UNSELECT.

use imap_codec::imap_types::sequence::SequenceSet;

use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::to_ranges;
use crate::imap::state::{Login, Selected};

/// Expunges \Deleted messages (within the UID set for UID EXPUNGE). The EXPUNGE
/// responses come from the catch-up that follows the command.
pub async fn expunge<S: SessionStream>(
    c: &mut Connection<S>,
    login: &Login,
    selected: &mut Selected,
    uids: Option<&SequenceSet>,
) -> CmdResult {
    let view = &selected.view;
    if view.read_only {
        return Err(CmdError::no_code("READ-ONLY", "Mailbox is read-only."));
    }
    let ranges = match uids {
        Some(set) => {
            let uids = view.resolve(set, true).map_err(CmdError::bad)?;
            if uids.is_empty() {
                return Ok(Done::text("Expunge completed."));
            }
            Some(to_ranges(&uids))
        }
        None => None,
    };
    c.ctx
        .store
        .expunge(login.user.id, view.mailbox.id, ranges.as_deref())
        .await?;
    selected.dirty = true;
    Ok(Done::text("Expunge completed."))
}

/// CLOSE: expunge silently (read-write only); the dispatcher then leaves the mailbox.
pub async fn close<S: SessionStream>(
    c: &mut Connection<S>,
    login: &Login,
    selected: &Selected,
) -> CmdResult {
    let view = &selected.view;
    if !view.read_only {
        c.ctx
            .store
            .expunge(login.user.id, view.mailbox.id, None)
            .await?;
    }
    Ok(Done::text("Close completed."))
}

/// UNSELECT (RFC 3691): the dispatcher leaves the mailbox, without expunging.
pub fn unselect() -> CmdResult {
    Ok(Done::text("Unselect completed."))
}

#[cfg(test)]
mod tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn expunge_close_unselect() {
        table(
            Start::Selected { read_only: false },
            &[
                (
                    &[
                        "a STORE 2 +FLAGS.SILENT (\\Deleted)",
                        "b EXPUNGE",
                        "c EXPUNGE",
                    ],
                    &[
                        "a OK Store completed.",
                        "* 2 EXPUNGE",
                        "b OK Expunge completed.",
                        "c OK Expunge completed.",
                    ],
                ),
                (
                    &[
                        "a STORE 1:2 +FLAGS.SILENT (\\Deleted)",
                        "b UID EXPUNGE 2",
                        "c CLOSE",
                    ],
                    &[
                        "a OK Store completed.",
                        "* 2 EXPUNGE",
                        "b OK Expunge completed.",
                        "c OK Close completed.",
                    ],
                ),
            ],
        )
        .await;
        table(
            Start::Selected { read_only: true },
            &[(
                &["a EXPUNGE", "b UNSELECT"],
                &[
                    "a NO [READ-ONLY] Mailbox is read-only.",
                    "b OK Unselect completed.",
                ],
            )],
        )
        .await;
    }
}
