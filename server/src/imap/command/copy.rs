//! COPY, MOVE (RFC 6851) and their UID forms, with COPYUID (UIDPLUS).

use std::num::NonZeroU32;

use cpmstore_storage::Error as StoreError;
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::sequence::SequenceSet;

use super::args::mailbox_name;
use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::to_ranges;
use crate::imap::state::{Login, Selected};

pub async fn copy<S: SessionStream>(
    s: &mut Connection<S>,
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
    // INTERFACES.md 9.1: objects leave a history folder only by COPY (or with the
    // whole folder, by RENAME or DELETE).
    let cpm = &s.ctx.cpm;
    if mv
        && cpm.enforce_folder_rules
        && dest.id != source
        && super::mailbox::is_history_folder(&cpm.root, &view.mailbox.name)
    {
        return Err(CmdError::cpm_move_refused());
    }
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
    let code = match (
        NonZeroU32::new(copied.uidvalidity),
        uid_set(&copied.source_uids),
        uid_set(&copied.dest_uids),
    ) {
        (Some(uid_validity), Some(source), Some(destination)) => Some(Code::CopyUid {
            uid_validity,
            source,
            destination,
        }),
        // Not reached: something was copied, to a mailbox with a UIDVALIDITY.
        _ => None,
    };
    if mv {
        // RFC 6851: COPYUID goes in an untagged OK before the EXPUNGEs.
        s.ok(code, "Moved UIDs.");
        return Ok(Done::text("Move completed."));
    }
    Ok(match code {
        Some(code) => Done::with_code(code, "Copy completed."),
        None => Done::text("Copy completed."),
    })
}

/// UIDs as UIDPLUS's `uid-set`, in their shortest form; `None` when there are none.
fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let elements: Vec<UidElement> = to_ranges(uids)
        .iter()
        .filter_map(|r| {
            let (start, end) = (NonZeroU32::new(r.start)?, NonZeroU32::new(r.end)?);
            Some(if start == end {
                UidElement::Single(start)
            } else {
                UidElement::Range(start, end)
            })
        })
        .collect();
    Vec1::try_from(elements).ok().map(UidSet)
}

#[cfg(test)]
mod tests {
    use crate::config::CpmConfig;
    use crate::imap::harness::Start;
    use crate::imap::testing::{table, table_cpm};

    /// `[cpm] enforce_folder_rules`: objects leave a Conversation or Session History
    /// folder by COPY only (MOVE and UID MOVE refused, nothing moved); moving into one,
    /// and out of any other folder, is allowed; without the rules MOVE works.
    #[tokio::test]
    async fn cpm_history_folders_keep_their_objects() {
        const WHY: &str = "NO [CANNOT] Objects of a CPM Conversation or Session History folder \
                           are not moved one by one; COPY them, or RENAME or DELETE the whole \
                           folder.";
        let select = [
            "* OK [CLOSED] Previous mailbox closed.",
            "* FLAGS (...",
            "* OK [PERMANENTFLAGS (...",
            "* 2 EXISTS",
            "* 2 RECENT",
            "* OK [UNSEEN ...",
            "* OK [UIDVALIDITY ...",
            "* OK [UIDNEXT 3] Predicted next UID.",
            "e OK [READ-WRITE] Select completed.",
        ];
        let mut expected = vec![
            "a OK Create completed.",
            "b OK [COPYUID ... 1 1] Copy completed.",
            "* OK [COPYUID ... 3 2] Moved UIDs.",
            "* 3 EXPUNGE",
            "c OK Move completed.",
            "d OK Create completed.",
        ];
        expected.extend(select);
        let refused = [format!("f {WHY}"), format!("g {WHY}")];
        expected.extend(refused.iter().map(String::as_str));
        expected.extend([
            "h OK [COPYUID ... 1:2 ...] Copy completed.",
            "* SEARCH 1 2",
            "i OK Search completed.",
        ]);
        table_cpm(
            CpmConfig::default(),
            Start::Selected { read_only: false },
            &[(
                &[
                    "a CREATE RCSMessageStore/conv-1",
                    "b COPY 1 RCSMessageStore/conv-1",
                    "c MOVE 3 RCSMessageStore/conv-1",
                    "d CREATE RCSMessageStore/conv-2",
                    "e SELECT RCSMessageStore/conv-1",
                    "f MOVE 1 INBOX",
                    "g UID MOVE 1:* RCSMessageStore/conv-2",
                    "h COPY 1:2 Archive",
                    "i UID SEARCH ALL",
                ],
                &expected,
            )],
        )
        .await;
        let off = CpmConfig {
            enforce_folder_rules: false,
            ..CpmConfig::default()
        };
        table_cpm(
            off,
            Start::Authenticated,
            &[(
                &[
                    "a CREATE RCSMessageStore/conv-1",
                    "b APPEND RCSMessageStore/conv-1 {3+}\r\nx\r\n",
                    "c SELECT RCSMessageStore/conv-1",
                    "d MOVE 1 INBOX",
                ],
                &[
                    "a OK Create completed.",
                    "b OK [APPENDUID ... 1] Append completed.",
                    "* FLAGS (...",
                    "* OK [PERMANENTFLAGS (...",
                    "* 1 EXISTS",
                    "* 1 RECENT",
                    "* OK [UNSEEN 1] First unseen.",
                    "* OK [UIDVALIDITY ...",
                    "* OK [UIDNEXT 2] Predicted next UID.",
                    "c OK [READ-WRITE] Select completed.",
                    "* OK [COPYUID ... 1 ...] Moved UIDs.",
                    "* 1 EXPUNGE",
                    "* 0 RECENT",
                    "d OK Move completed.",
                ],
            )],
        )
        .await;
    }

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
