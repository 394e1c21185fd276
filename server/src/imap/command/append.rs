//! APPEND with UIDPLUS (APPENDUID). The literal's size was bounded by the framing layer
//! (APPENDLIMIT) before it was read; the message is acknowledged only after commit.

use cpmstore_storage::{Error as StoreError, NewMessage};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;

use super::{mailbox_name, to_flags};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::session::Session;

pub async fn append(
    s: &mut Session,
    mailbox: &Mailbox<'_>,
    flags: Vec<Flag<'_>>,
    date: Option<DateTime>,
    message: LiteralOrLiteral8<'_>,
) -> CmdResult {
    let account = s
        .user()
        .map(|u| u.id)
        .ok_or_else(|| CmdError::bad("Not logged in."))?;
    let name = mailbox_name(mailbox)?;
    let flags = to_flags(&flags)?;
    let content = match message {
        LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
        LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
    };
    if content.is_empty() {
        return Err(CmdError::no("Can't save an empty message."));
    }
    let (internal_date, internal_date_tz) = match date {
        Some(d) => {
            let d = d.as_ref();
            (Some(d.timestamp()), d.offset().local_minus_utc() / 60)
        }
        None => (None, 0),
    };
    let mb = match s.ctx.store.mailbox(account, &name).await {
        Ok(mb) => mb,
        Err(StoreError::NotFound(_)) => {
            return Err(CmdError::no_code("TRYCREATE", "Mailbox doesn't exist."));
        }
        Err(e) => return Err(e.into()),
    };
    let appended = s
        .ctx
        .store
        .append(
            account,
            mb.id,
            NewMessage {
                content,
                flags,
                internal_date,
                internal_date_tz,
            },
        )
        .await?;
    if s.selected_ids().map(|(_, m)| m) == Some(mb.id) {
        s.dirty = true;
    }
    Ok(Done::with_code(
        format!("APPENDUID {} {}", appended.uidvalidity, appended.uid),
        "Append completed.",
    ))
}
