//! APPEND with UIDPLUS (APPENDUID). The literal's size was bounded by the framing layer
//! (APPENDLIMIT) before it was read; the message is acknowledged only after commit.
//!
//! A message sent with bare LF line ends is stored with CRLF, as IMAP serves messages
//! (RFC 3501 and RFC 5322 lines end in CRLF) and as Dovecot stores them:
//! RFC822.SIZE then counts what FETCH sends.

use std::num::NonZeroU32;

use cpmstore_storage::{Error as StoreError, NewMessage};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;

use super::args::{mailbox_name, to_flags};
use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::state::{Login, Selected};

/// APPEND; `selected` is the selected mailbox, if any (it is caught up after an
/// APPEND into it).
pub async fn append<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    selected: Option<&mut Selected>,
    mailbox: &Mailbox<'_>,
    flags: Vec<Flag<'_>>,
    date: Option<DateTime>,
    message: LiteralOrLiteral8<'_>,
) -> CmdResult {
    let account = login.user.id;
    let name = mailbox_name(mailbox)?;
    let flags = to_flags(&flags, s.ctx.cpm.read_report_flag)?;
    let content = crate::message::crlf(match message {
        LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
        LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
    });
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
    if let Some(selected) = selected
        && selected.view.mailbox.id == mb.id
    {
        selected.dirty = true;
    }
    match (
        NonZeroU32::new(appended.uidvalidity),
        NonZeroU32::new(appended.uid),
    ) {
        (Some(uid_validity), Some(uid)) => Ok(Done::with_code(
            Code::AppendUid { uid_validity, uid },
            "Append completed.",
        )),
        // Not reached: a stored message has a UID, its mailbox a UIDVALIDITY.
        _ => Ok(Done::text("Append completed.")),
    }
}

#[cfg(test)]
mod table_tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn append() {
        table(
            Start::Selected { read_only: false },
            &[(
                &[
                    "a APPEND INBOX (\\Seen) {11+}\r\nHello world",
                    "b APPEND Nope {2+}\r\nHi",
                    "c APPEND INBOX {0+}\r\n",
                ],
                &[
                    "* 4 EXISTS",
                    "* 1 RECENT",
                    "a OK [APPENDUID ... 4] Append completed.",
                    "b NO [TRYCREATE] Mailbox doesn't exist.",
                    "c NO Can't save an empty message.",
                ],
            )],
        )
        .await;
    }
}
