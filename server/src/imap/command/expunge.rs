//! EXPUNGE, UID EXPUNGE (UIDPLUS), CLOSE and UNSELECT.

use imap_codec::imap_types::sequence::SequenceSet;

use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::to_ranges;
use crate::imap::session::{Session, State};

fn selected(
    s: &Session,
) -> CmdResult<(
    cpmstore_storage::AccountId,
    cpmstore_storage::MailboxId,
    bool,
)> {
    match &s.state {
        State::Selected { user, view } => Ok((user.id, view.mailbox.id, view.read_only)),
        _ => Err(CmdError::bad("No mailbox selected.")),
    }
}

/// Expunges \Deleted messages (within the UID set for UID EXPUNGE). The EXPUNGE
/// responses come from the catch-up that follows the command.
pub async fn expunge(s: &mut Session, uids: Option<&SequenceSet>) -> CmdResult {
    let (account, mailbox, read_only) = selected(s)?;
    if read_only {
        return Err(CmdError::no_code("READ-ONLY", "Mailbox is read-only."));
    }
    let ranges = match uids {
        Some(set) => {
            let view = s
                .view()
                .ok_or_else(|| CmdError::bad("No mailbox selected."))?;
            let uids = view.resolve(set, true).map_err(CmdError::bad)?;
            if uids.is_empty() {
                return Ok(Done::text("Expunge completed."));
            }
            Some(to_ranges(&uids))
        }
        None => None,
    };
    s.ctx
        .store
        .expunge(account, mailbox, ranges.as_deref())
        .await?;
    s.dirty = true;
    Ok(Done::text("Expunge completed."))
}

/// CLOSE: expunge silently (read-write only), then leave the mailbox.
pub async fn close(s: &mut Session) -> CmdResult {
    let (account, mailbox, read_only) = selected(s)?;
    if !read_only {
        s.ctx.store.expunge(account, mailbox, None).await?;
    }
    leave(s);
    Ok(Done::text("Close completed."))
}

/// UNSELECT (RFC 3691): leave without expunging.
pub fn unselect(s: &mut Session) -> CmdResult {
    selected(s)?;
    leave(s);
    Ok(Done::text("Unselect completed."))
}

fn leave(s: &mut Session) {
    if let Some(user) = s.user().cloned() {
        s.state = State::Authenticated { user };
    }
    s.dirty = false;
}
