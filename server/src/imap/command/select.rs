//! SELECT and EXAMINE, with RFC 7162's `(CONDSTORE)` parameter: a CONDSTORE-aware
//! session is told `OK [HIGHESTMODSEQ n]`; and its `(QRESYNC (uidvalidity modseq
//! [known-uids [seq-match-data]]))` parameter (3.2.5), valid once QRESYNC is enabled:
//! when the UIDVALIDITY matches, the normal answer is followed by `VANISHED (EARLIER)`
//! for the (known) UIDs expunged since that MODSEQ and a FETCH of UID, FLAGS and
//! MODSEQ for each (known) message changed since. Tombstones are never pruned, so
//! the seq-match-data, which only helps a server that forgot some, is ignored.
//!
//! A SELECT or EXAMINE while a mailbox is selected first says `OK [CLOSED]` (RFC 7162
//! 3.2.11, and IMAP4rev2): what follows is about the new mailbox.

use std::num::NonZeroU32;

use futures::TryStreamExt;
use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data};

use cpmstore_storage::UidRange;

use super::args::mailbox_name;
use crate::cpm::READ_REPORT_SENT;
use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::{MailboxView, uid_set_ranges};
use crate::imap::response::{mailbox_flags, permanent_flags, push_highestmodseq, uid_sequence_set};
use crate::imap::state::{Login, Selected, Transition};

/// What a client knew of the mailbox, from the QRESYNC parameter.
struct Known {
    uidvalidity: u32,
    modseq: u64,
    /// The UIDs it knows, as sent (`*` is resolved against the mailbox).
    uids: Option<imap_codec::imap_types::sequence::SequenceSet>,
}

/// What a SELECT or EXAMINE did to the state.
pub enum Selection {
    /// Refused before anything changed: a mailbox selected stays selected.
    Refused(CmdError),
    /// Failed after leaving the mailbox selected before, if any.
    Failed(CmdError),
    Selected(Done, Box<Selected>),
}

impl Selection {
    /// The command's result; the transition it implies goes to `next`.
    pub fn apply(self, next: &mut Transition) -> CmdResult {
        match self {
            Selection::Refused(e) => Err(e),
            Selection::Failed(e) => {
                *next = Transition::Unselect;
                Err(e)
            }
            Selection::Selected(done, selected) => {
                *next = Transition::Select(selected);
                Ok(done)
            }
        }
    }
}

/// SELECT (`read_only` false) or EXAMINE; `was_selected` when a mailbox is.
pub async fn select<S: SessionStream>(
    s: &mut Connection<S>,
    login: &mut Login,
    was_selected: bool,
    mailbox: &Mailbox<'_>,
    parameters: &[SelectParameter],
    read_only: bool,
) -> Selection {
    let mut known = None;
    for parameter in parameters {
        if let SelectParameter::QResync {
            uid_validity,
            mod_sequence_value,
            known_uids,
            seq_match_data: _,
        } = parameter
        {
            // RFC 7162 3.2.5: only after ENABLE QRESYNC.
            if !login.qresync {
                return Selection::Refused(CmdError::bad("QRESYNC is not enabled."));
            }
            known = Some(Known {
                uidvalidity: uid_validity.get(),
                modseq: mod_sequence_value.get(),
                uids: known_uids.clone(),
            });
        }
    }
    // Selecting (even failing to) leaves the previously selected mailbox, without expunge.
    if was_selected {
        s.ok(Some(Code::Closed), "Previous mailbox closed.");
    }
    if parameters.contains(&SelectParameter::CondStore) {
        // Nothing is selected now: SELECT's own answer tells HIGHESTMODSEQ.
        login.enable_condstore(None, &mut s.out);
    }
    match open(s, login, mailbox, read_only, known).await {
        Ok((done, selected)) => Selection::Selected(done, selected),
        Err(e) => Selection::Failed(e),
    }
}

/// Opens the mailbox: its snapshot and what SELECT tells of it.
async fn open<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    mailbox: &Mailbox<'_>,
    read_only: bool,
    known: Option<Known>,
) -> CmdResult<(Done, Box<Selected>)> {
    let user = &login.user;
    let name = mailbox_name(mailbox)?;
    let store = s.ctx.store.clone();
    let mb = match store.mailbox(user.id, &name).await {
        Ok(mb) => mb,
        Err(cpmstore_storage::Error::NotFound(_)) => return Err(CmdError::nonexistent()),
        Err(e) => return Err(e.into()),
    };
    let mut keywords = store.mailbox_keywords(user.id, mb.id).await?;
    // `\read-report-sent` (INTERFACES.md 9.4) is in FLAGS and PERMANENTFLAGS where
    // `[cpm] read_report_flag` is on, and never named where it is off.
    keywords.retain(|k| k != READ_REPORT_SENT);
    if s.ctx.cpm.read_report_flag {
        keywords.insert(0, READ_REPORT_SENT.to_owned());
    }
    // The initial snapshot: every message's UID and flags (no bodies).
    let messages: Vec<_> = store
        .fetch(user.id, mb.id, &[UidRange::all()])
        .try_collect()
        .await?;
    // \Recent after the snapshot: everything in it is below the claimed range's end.
    // EXAMINE shows what nobody has claimed yet and leaves it for the next SELECT.
    let recent = if read_only {
        let end = messages
            .last()
            .map_or(mb.uidnext, |m| m.uid.saturating_add(1).max(mb.uidnext));
        store.unclaimed_recent(user.id, mb.id).await?..end
    } else {
        store.claim_recent(user.id, mb.id).await?
    };
    // Re-read the mailbox so the view's MODSEQ is not older than the snapshot.
    let mut view = MailboxView::new(mb, read_only, messages, recent, keywords);
    s.data(Data::Flags(mailbox_flags(&view.keywords)));
    let permanent = if read_only {
        Vec::new()
    } else {
        permanent_flags(&view.keywords)
    };
    s.ok(Some(Code::PermanentFlags(permanent)), "Flags permitted.");
    s.data(Data::Exists(view.exists()));
    s.data(Data::Recent(view.recent_count()));
    if let Some(unseen) = view.first_unseen().and_then(NonZeroU32::new) {
        s.ok(Some(Code::Unseen(unseen)), "First unseen.");
    }
    let uidnext = view.last_uid().max(view.mailbox.uidnext.saturating_sub(1)) + 1;
    match (
        NonZeroU32::new(view.mailbox.uidvalidity),
        NonZeroU32::new(uidnext),
    ) {
        (Some(uidvalidity), Some(uidnext)) => {
            s.ok(Some(Code::UidValidity(uidvalidity)), "UIDs valid.");
            s.ok(Some(Code::UidNext(uidnext)), "Predicted next UID.");
        }
        // Not reached: UIDVALIDITY and UIDNEXT are never 0, but a store could say so.
        _ => return Err(CmdError::no_code("CANNOT", "Mailbox has no valid UIDs.")),
    }
    // Anything committed between the snapshot and now is picked up by the catch-up
    // that follows every command.
    view.modseq = view.modseq.min(view.mailbox.highestmodseq);
    if login.condstore {
        push_highestmodseq(&mut s.out, view.modseq, "Highest");
    }
    if let Some(known) = known
        && known.uidvalidity == view.mailbox.uidvalidity
    {
        resync(s, &view, &known).await?;
    }
    let done = if read_only {
        Done::with_code(Code::ReadOnly, "Examine completed.")
    } else {
        Done::with_code(Code::ReadWrite, "Select completed.")
    };
    Ok((done, Box::new(Selected::new(view))))
}

/// Tells a QRESYNC client what changed since it last knew the mailbox: the UIDs
/// expunged since (`VANISHED (EARLIER)`), then each message changed since, both
/// limited to its known UIDs when it sent them.
///
/// The view is the snapshot the session now stands on: a UID still in it is not told
/// as vanished (if it goes later, the catch-up says so), one expunged before it is.
async fn resync<S: SessionStream>(
    s: &mut Connection<S>,
    view: &MailboxView,
    known: &Known,
) -> CmdResult<()> {
    let account = view.mailbox.account;
    let max = view.last_uid().max(view.mailbox.uidnext.saturating_sub(1));
    let ranges = known.uids.as_ref().map(|set| uid_set_ranges(set, max));
    let in_known = |uid: u32| {
        ranges
            .as_ref()
            .is_none_or(|r| r.iter().any(|r| r.start <= uid && uid <= r.end))
    };
    let vanished: Vec<u32> = s
        .ctx
        .store
        .expunged_since(account, view.mailbox.id, known.modseq, ranges.as_deref())
        .await?
        .into_iter()
        .filter(|&uid| uid <= max && view.seq_of(uid).is_none())
        .collect();
    if let Some(known_uids) = uid_sequence_set(&vanished) {
        s.data(Data::Vanished {
            earlier: true,
            known_uids,
        });
    }
    for &uid in view.uids() {
        let Some(modseq) = view.modseq_of(uid) else {
            continue;
        };
        if modseq <= known.modseq || !in_known(uid) {
            continue;
        }
        if let Some(data) = view.fetch_flags(uid, true) {
            s.data(data);
        }
        s.maybe_flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn select_condstore_and_qresync() {
        table(
            Start::Authenticated,
            &[
                (
                    &["a SELECT INBOX (CONDSTORE)"],
                    &[
                        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft...",
                        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft... \\*)] Flags permitted.",
                        "* 3 EXISTS",
                        "* 0 RECENT",
                        "* OK [UNSEEN ...",
                        "* OK [UIDVALIDITY ...",
                        "* OK [UIDNEXT 4] Predicted next UID.",
                        "* OK [HIGHESTMODSEQ ...] Highest",
                        "a OK [READ-WRITE] Select completed.",
                    ],
                ),
                (
                    &["a SELECT INBOX (QRESYNC (1 1))", "b EXAMINE \"&AGE-\""],
                    &[
                        "a BAD QRESYNC is not enabled.",
                        "b NO [CANNOT] Invalid mailbox name: malformed modified UTF-7...",
                    ],
                ),
            ],
        )
        .await;
    }
}
