//! STORE and UID STORE.

use cpmstore_storage::FlagOp;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::SequenceSet;

use super::to_flags;
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::to_ranges;
use crate::imap::response::flag_list;
use crate::imap::session::{Session, State};

pub async fn store(
    s: &mut Session,
    set: &SequenceSet,
    kind: StoreType,
    response: StoreResponse,
    flags: &[Flag<'_>],
    uid: bool,
) -> CmdResult {
    let flags = to_flags(flags)?;
    let (account, mailbox, uids) = match &s.state {
        State::Selected { user, view } => {
            if view.read_only {
                return Err(CmdError::no_code("READ-ONLY", "Mailbox is read-only."));
            }
            let uids = view.resolve(set, uid).map_err(CmdError::bad)?;
            (user.id, view.mailbox.id, uids)
        }
        _ => return Err(CmdError::bad("No mailbox selected.")),
    };
    // Messages expunged by another session but not yet announced can't change.
    let (live, gone): (Vec<u32>, Vec<u32>) = {
        let view = s
            .view()
            .ok_or_else(|| CmdError::bad("No mailbox selected."))?;
        uids.iter().partition(|u| !view.is_expunged(**u))
    };
    if live.is_empty() {
        return finish(gone.is_empty());
    }
    let op = match kind {
        StoreType::Replace => FlagOp::Replace,
        StoreType::Add => FlagOp::Add,
        StoreType::Remove => FlagOp::Remove,
    };
    let changed = s
        .ctx
        .store
        .store_flags(account, mailbox, &to_ranges(&live), op, &flags, None)
        .await?;
    let Some(view) = s.view_mut() else {
        return Err(CmdError::bad("No mailbox selected."));
    };
    for meta in changed {
        view.set_flags(meta.uid, meta.flags);
    }
    // New keywords are announced by the catch-up that follows; announce them there.
    if !flags.keywords.is_empty() {
        s.dirty = true;
    }
    if response == StoreResponse::Answer {
        let view = s
            .view()
            .ok_or_else(|| CmdError::bad("No mailbox selected."))?;
        let mut out = Vec::new();
        for u in &live {
            if let (Some(seq), Some(f)) = (view.seq_of(*u), view.flags_of(*u)) {
                let line = if uid {
                    format!(
                        "* {seq} FETCH (UID {u} FLAGS {})\r\n",
                        flag_list(f, view.is_recent(*u))
                    )
                } else {
                    format!(
                        "* {seq} FETCH (FLAGS {})\r\n",
                        flag_list(f, view.is_recent(*u))
                    )
                };
                out.extend_from_slice(line.as_bytes());
            }
        }
        s.out.extend_from_slice(&out);
    }
    finish(gone.is_empty())
}

fn finish(all_there: bool) -> CmdResult {
    if all_there {
        Ok(Done::text("Store completed."))
    } else {
        Err(CmdError::no_code(
            "EXPUNGEISSUED",
            "Some of the requested messages no longer exist.",
        ))
    }
}
