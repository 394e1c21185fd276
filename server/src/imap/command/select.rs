//! SELECT and EXAMINE, with RFC 7162's `(CONDSTORE)` parameter: a CONDSTORE-aware
//! session is told `OK [HIGHESTMODSEQ n]`.

use futures::TryStreamExt;
use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::mailbox::Mailbox;

use cpmstore_storage::UidRange;

use super::mailbox_name;
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::MailboxView;
use crate::imap::session::{Session, State};

pub async fn select(
    s: &mut Session,
    mailbox: &Mailbox<'_>,
    parameters: &[SelectParameter],
    read_only: bool,
) -> CmdResult {
    let Some(user) = s.user().cloned() else {
        return Err(CmdError::bad("Not logged in."));
    };
    // QRESYNC is not advertised, so its parameter is not valid here.
    if parameters
        .iter()
        .any(|p| matches!(p, SelectParameter::QResync { .. }))
    {
        return Err(CmdError::bad("QRESYNC is not enabled."));
    }
    // Selecting (even failing to) leaves the previously selected mailbox, without expunge.
    s.state = State::Authenticated { user: user.clone() };
    if parameters.contains(&SelectParameter::CondStore) {
        // Nothing is selected now: SELECT's own answer tells HIGHESTMODSEQ.
        s.enable_condstore();
    }
    let name = mailbox_name(mailbox)?;
    let store = s.ctx.store.clone();
    let mb = match store.mailbox(user.id, &name).await {
        Ok(mb) => mb,
        Err(cpmstore_storage::Error::NotFound(_)) => return Err(CmdError::nonexistent()),
        Err(e) => return Err(e.into()),
    };
    let keywords = store.mailbox_keywords(user.id, mb.id).await?;
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
    let flags = view.flags_line();
    let mut lines = format!("* FLAGS {flags}\r\n");
    let permanent = if read_only {
        "()".to_string()
    } else {
        format!("{} \\*)", flags.trim_end_matches(')'))
    };
    lines.push_str(&format!(
        "* OK [PERMANENTFLAGS {permanent}] Flags permitted.\r\n"
    ));
    lines.push_str(&format!(
        "* {} EXISTS\r\n* {} RECENT\r\n",
        view.exists(),
        view.recent_count()
    ));
    if let Some(unseen) = view.first_unseen() {
        lines.push_str(&format!("* OK [UNSEEN {unseen}] First unseen.\r\n"));
    }
    lines.push_str(&format!(
        "* OK [UIDVALIDITY {}] UIDs valid.\r\n",
        view.mailbox.uidvalidity
    ));
    lines.push_str(&format!(
        "* OK [UIDNEXT {}] Predicted next UID.\r\n",
        view.last_uid().max(view.mailbox.uidnext.saturating_sub(1)) + 1
    ));
    // Anything committed between the snapshot and now is picked up by the catch-up
    // that follows every command.
    view.modseq = view.modseq.min(view.mailbox.highestmodseq);
    if s.condstore {
        lines.push_str(&format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", view.modseq));
    }
    s.out.extend_from_slice(lines.as_bytes());
    s.state = State::Selected {
        user,
        view: Box::new(view),
    };
    s.dirty = true;
    Ok(if read_only {
        Done::with_code("READ-ONLY", "Examine completed.")
    } else {
        Done::with_code("READ-WRITE", "Select completed.")
    })
}
