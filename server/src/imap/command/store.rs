//! STORE and UID STORE, with RFC 7162's `(UNCHANGEDSINCE n)` modifier: messages changed
//! after `n` are left alone and listed in `OK [MODIFIED set]`.

use std::collections::HashMap;

use cpmstore_storage::FlagOp;
use imap_codec::imap_types::command::StoreModifier;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::SequenceSet;

use super::args::to_flags;
use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::{nz, to_ranges};
use crate::imap::response::{flags_item, modseq_item, uid_sequence_set};
use crate::imap::state::{Login, Selected};

#[allow(clippy::too_many_arguments)]
pub async fn store<S: SessionStream>(
    s: &mut Connection<S>,
    login: &mut Login,
    selected: &mut Selected,
    set: &SequenceSet,
    kind: StoreType,
    response: StoreResponse,
    flags: &[Flag<'_>],
    uid: bool,
    modifiers: &[StoreModifier],
) -> CmdResult {
    let flags = to_flags(flags, s.ctx.cpm.read_report_flag)?;
    let unchanged_since = modifiers
        .iter()
        .map(|m| match m {
            StoreModifier::UnchangedSince(n) => *n,
        })
        .min();
    if unchanged_since.is_some() {
        // A CONDSTORE-enabling command (RFC 7162 3.1).
        login.enable_condstore(Some(&selected.view), &mut s.out);
    }
    let view = &selected.view;
    if view.read_only {
        return Err(CmdError::no_code("READ-ONLY", "Mailbox is read-only."));
    }
    let (account, mailbox) = (login.user.id, view.mailbox.id);
    // Messages expunged by another session but not yet announced can't change: they
    // are left alone, and the STORE is still OK (as in Dovecot).
    let live: Vec<u32> = view
        .resolve(set, uid)
        .map_err(CmdError::bad)?
        .into_iter()
        .filter(|u| !view.is_expunged(*u))
        .collect();
    if live.is_empty() {
        return finish(&[]);
    }
    let op = match kind {
        StoreType::Replace => FlagOp::Replace,
        StoreType::Add => FlagOp::Add,
        StoreType::Remove => FlagOp::Remove,
    };
    let ranges = to_ranges(&live);
    let (changed, modified) = match unchanged_since {
        None => (
            s.ctx
                .store
                .store_flags(account, mailbox, &ranges, op, &flags, None)
                .await?,
            Vec::new(),
        ),
        Some(limit) => {
            let outcome = s
                .ctx
                .store
                .store_flags_conditional(account, mailbox, &ranges, op, &flags, limit)
                .await?;
            (outcome.changed, outcome.modified)
        }
    };
    let condstore = login.condstore;
    let view = &mut selected.view;
    let mut changed_modseq = HashMap::with_capacity(changed.len());
    // The MODSEQ this write took (all its rows share it); none if nothing changed.
    let written = changed.first().map(|m| m.modseq);
    for meta in changed {
        changed_modseq.insert(meta.uid, meta.modseq);
        view.set_flags(meta.uid, meta.flags, meta.modseq);
    }
    // Catch up before answering: new keywords are announced (FLAGS, PERMANENTFLAGS)
    // before a FETCH shows them, and a message expunged meanwhile by another session
    // (now pending) gets no FETCH. If the write took the MODSEQ right after the one the
    // view holds, nobody else wrote in between and the view now holds everything up to
    // it: the store is not read again for this session's own change.
    match written {
        Some(modseq) if modseq == view.modseq + 1 => {
            view.modseq = modseq;
            view.announce_keywords(&mut s.out);
        }
        _ => selected.dirty = true,
    }
    selected.catch_up(s, login, false).await?;
    let view = &selected.view;
    let mut responses = Vec::new();
    for &u in &live {
        if modified.binary_search(&u).is_ok() || view.is_expunged(u) {
            // Not changed: the client learns its flags by fetching them.
            continue;
        }
        let (Some(seq), Some(f), Some(uid_nz)) = (view.seq_of(u), view.flags_of(u), nz(u)) else {
            continue;
        };
        let modseq = view
            .modseq_of(u)
            .filter(|_| condstore)
            .and_then(modseq_item);
        let items = if response == StoreResponse::Answer {
            let mut items = Vec::with_capacity(3);
            if uid || condstore {
                items.push(MessageDataItem::Uid(uid_nz));
            }
            items.push(flags_item(f, view.is_recent(u)));
            items.extend(modseq);
            items
        } else if condstore && changed_modseq.contains_key(&u) {
            // .SILENT still tells a CONDSTORE client the new MODSEQ (RFC 7162 3.1.3).
            let mut items = vec![MessageDataItem::Uid(uid_nz)];
            items.extend(modseq);
            items
        } else {
            continue;
        };
        if let Ok(data) = Data::fetch(seq, items) {
            responses.push(data);
        }
    }
    // MODIFIED lists sequence numbers for STORE, UIDs for UID STORE.
    let modified = if uid {
        modified
    } else {
        modified
            .iter()
            .filter_map(|u| view.seq_of(*u))
            .collect::<Vec<u32>>()
    };
    for data in responses {
        s.data(data);
    }
    finish(&modified)
}

/// The tagged answer: `OK [MODIFIED set]` when messages failed UNCHANGEDSINCE, else OK.
fn finish(modified: &[u32]) -> CmdResult {
    match uid_sequence_set(modified) {
        None => Ok(Done::text("Store completed.")),
        Some(set) => Ok(Done::with_code(
            Code::Modified(set),
            "Conditional STORE failed.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::CpmConfig;
    use crate::imap::harness::Start;
    use crate::imap::testing::{table, table_cpm};

    /// `\read-report-sent` (`[cpm] read_report_flag`, on by default) is kept like any
    /// flag and named in FLAGS / PERMANENTFLAGS; where it is off it is refused and never
    /// named.
    #[tokio::test]
    async fn read_report_sent() {
        table_cpm(
            CpmConfig::default(),
            Start::Selected { read_only: false },
            &[(
                &[
                    "a STORE 1 +FLAGS (\\Read-Report-Sent)",
                    "b FETCH 1 (FLAGS)",
                    "c UID STORE 2 FLAGS.SILENT (\\read-report-sent $MDNSent)",
                    "d SELECT INBOX",
                    "e FETCH 1:2 (FLAGS)",
                ],
                &[
                    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important \\read-report-sent)",
                    "* OK [PERMANENTFLAGS (...\\read-report-sent \\*)] Flags permitted.",
                    "* 1 FETCH (FLAGS (\\Seen \\read-report-sent))",
                    "a OK Store completed.",
                    "* 1 FETCH (FLAGS (\\Seen \\read-report-sent))",
                    "b OK Fetch completed.",
                    "* FLAGS (...$MDNSent)",
                    "* OK [PERMANENTFLAGS (...",
                    "c OK Store completed.",
                    "* OK [CLOSED] Previous mailbox closed.",
                    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\read-report-sent $Important $MDNSent)",
                    "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\read-report-sent $Important $MDNSent \\*)] Flags permitted.",
                    "* 3 EXISTS",
                    "* 0 RECENT",
                    "* OK [UNSEEN ...",
                    "* OK [UIDVALIDITY ...",
                    "* OK [UIDNEXT 4] Predicted next UID.",
                    "d OK [READ-WRITE] Select completed.",
                    "* 1 FETCH (FLAGS (\\Seen \\read-report-sent))",
                    "* 2 FETCH (FLAGS ($MDNSent \\read-report-sent))",
                    "e OK Fetch completed.",
                ],
            )],
        )
        .await;
        let off = CpmConfig {
            read_report_flag: false,
            ..CpmConfig::default()
        };
        table_cpm(
            off,
            Start::Authenticated,
            &[(
                &["a SELECT INBOX", "b STORE 1 +FLAGS (\\read-report-sent)"],
                &[
                    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)",
                    "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important \\*)] Flags permitted.",
                    "* 3 EXISTS",
                    "* 0 RECENT",
                    "* OK [UNSEEN ...",
                    "* OK [UIDVALIDITY ...",
                    "* OK [UIDNEXT 4] Predicted next UID.",
                    "a OK [READ-WRITE] Select completed.",
                    "b BAD Invalid system flag.",
                ],
            )],
        )
        .await;
    }

    #[tokio::test]
    async fn store_flags() {
        table(
            Start::Selected { read_only: false },
            &[(
                &[
                    "a STORE 1 FLAGS (\\Seen $Work)",
                    "b UID STORE 1 -FLAGS.SILENT ($Work)",
                    "c STORE 1 +FLAGS (\\Recent)",
                ],
                &[
                    "* FLAGS (...",
                    "* OK [PERMANENTFLAGS (...",
                    "* 1 FETCH (FLAGS (\\Seen $Work))",
                    "a OK Store completed.",
                    "b OK Store completed.",
                    "c BAD...",
                ],
            )],
        )
        .await;
        table(
            Start::Selected { read_only: true },
            &[(
                &["a STORE 1 +FLAGS (\\Seen)"],
                &["a NO [READ-ONLY] Mailbox is read-only."],
            )],
        )
        .await;
    }
}
