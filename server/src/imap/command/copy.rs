//! COPY, MOVE (RFC 6851) and their UID forms, with COPYUID (UIDPLUS).

use cpmstore_storage::Error as StoreError;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;

use super::args::mailbox_name;
use crate::imap::connection::Connection;
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::{to_ranges, uid_set_string};
use crate::imap::state::{Login, Selected};

pub async fn copy(
    s: &mut Connection,
    login: &Login,
    selected: &mut Selected,
    set: &SequenceSet,
    target: &Mailbox<'_>,
    uid: bool,
    mv: bool,
) -> CmdResult {
    let view = &selected.view;
    let (account, source, read_only) = (login.user.id, view.mailbox.id, view.read_only);
    let uids: Vec<u32> = view
        .resolve(set, uid)
        .map_err(CmdError::bad)?
        .into_iter()
        .filter(|u| !view.is_expunged(*u))
        .collect();
    if mv && read_only {
        return Err(CmdError::no_code("READ-ONLY", "Mailbox is read-only."));
    }
    let name = mailbox_name(target)?;
    let dest = match s.ctx.store.mailbox(account, &name).await {
        Ok(mb) => mb,
        Err(StoreError::NotFound(_)) => {
            return Err(CmdError::no_code("TRYCREATE", "Mailbox doesn't exist."));
        }
        Err(e) => return Err(e.into()),
    };
    let word = if mv { "Move" } else { "Copy" };
    if uids.is_empty() {
        return Ok(Done::text(format!(
            "No messages matched; {} completed.",
            word.to_lowercase()
        )));
    }
    let ranges = to_ranges(&uids);
    let copied = if mv {
        s.ctx
            .store
            .move_messages(account, source, &ranges, dest.id)
            .await?
    } else {
        s.ctx.store.copy(account, source, &ranges, dest.id).await?
    };
    if dest.id == source || mv {
        selected.dirty = true;
    }
    let code = format!(
        "COPYUID {} {} {}",
        copied.uidvalidity,
        uid_set_string(&copied.source_uids),
        uid_set_string(&copied.dest_uids)
    );
    if mv {
        // RFC 6851: COPYUID goes in an untagged OK before the EXPUNGEs.
        s.out
            .extend_from_slice(format!("* OK [{code}] Moved UIDs.\r\n").as_bytes());
        return Ok(Done::text("Move completed."));
    }
    Ok(Done::with_code(code, "Copy completed."))
}

#[cfg(test)]
mod tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn copy_and_move() {
        table(
            Start::Selected { read_only: false },
            &[
                (
                    &[
                        "a COPY 1:2 Archive",
                        "b COPY 1 Nope",
                        "c UID COPY 99 Archive",
                    ],
                    &[
                        "a OK [COPYUID ... 1:2 ...] Copy completed.",
                        "b NO [TRYCREATE] Mailbox doesn't exist.",
                        "c OK No messages matched; copy completed.",
                    ],
                ),
                (
                    &["a MOVE 1 Archive"],
                    &[
                        "* OK [COPYUID ... 1 ...] Moved UIDs.",
                        "* 1 EXPUNGE",
                        "a OK Move completed.",
                    ],
                ),
            ],
        )
        .await;
    }
}
