//! Arguments from the wire made into what storage takes: mailbox names (checked as
//! modified UTF-7 where a name is made) and flag lists.

use cpmstore_storage::{Flags, SystemFlags};
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;

use crate::cpm::READ_REPORT_SENT;
use crate::imap::error::{CmdError, CmdResult};
use crate::imap::mutf7;

/// The storage name of a mailbox argument: `INBOX` (any case) or the name as sent,
/// which must be valid modified UTF-7 (`BAD` saying why otherwise). For every command
/// that creates, opens or writes to a mailbox.
pub fn mailbox_name(m: &Mailbox<'_>) -> CmdResult<String> {
    if let Mailbox::Other(other) = m {
        mutf7::validate(other.inner().as_ref())?;
    }
    existing_mailbox_name(m)
}

/// The storage name of a mailbox argument, without the modified UTF-7 check: for the
/// commands that only find or remove a name (DELETE, RENAME's source, UNSUBSCRIBE,
/// LIST's reference), so a name stored before the check existed can still be listed,
/// renamed to a valid one or deleted. Nothing new can be named through them.
pub fn existing_mailbox_name(m: &Mailbox<'_>) -> CmdResult<String> {
    match m {
        Mailbox::Inbox => Ok("INBOX".into()),
        Mailbox::Other(other) => {
            let name = std::str::from_utf8(other.inner().as_ref())
                .map_err(|_| CmdError::bad("Mailbox name is not valid UTF-8 / modified UTF-7."))?;
            // "INBOX/child" keeps INBOX's canonical spelling.
            if name.len() > 6 && name[..6].eq_ignore_ascii_case("INBOX/") {
                return Ok(format!("INBOX/{}", &name[6..]));
            }
            Ok(name.to_string())
        }
    }
}

/// Converts a flag list from the wire; `\Recent` and unknown system flags are refused.
/// The CPM flag `\read-report-sent` (any case) is kept, among the keywords as
/// [`READ_REPORT_SENT`], where `read_report` (`[cpm] read_report_flag`).
pub fn to_flags(list: &[Flag<'_>], read_report: bool) -> CmdResult<Flags> {
    let mut flags = Flags::default();
    for f in list {
        let bit = match f {
            Flag::Extension(_)
                if read_report && f.to_string().eq_ignore_ascii_case(READ_REPORT_SENT) =>
            {
                if !flags.keywords.iter().any(|k| k == READ_REPORT_SENT) {
                    flags.keywords.push(READ_REPORT_SENT.to_owned());
                }
                continue;
            }
            Flag::Seen => SystemFlags::SEEN,
            Flag::Answered => SystemFlags::ANSWERED,
            Flag::Flagged => SystemFlags::FLAGGED,
            Flag::Deleted => SystemFlags::DELETED,
            Flag::Draft => SystemFlags::DRAFT,
            Flag::Keyword(atom) => {
                let kw = atom.inner().to_string();
                if !flags.keywords.iter().any(|k| k.eq_ignore_ascii_case(&kw)) {
                    flags.keywords.push(kw);
                }
                continue;
            }
            Flag::Extension(_) => return Err(CmdError::bad("Invalid system flag.")),
        };
        flags.system.0 |= bit;
    }
    flags.keywords.sort_by_key(|k| k.to_ascii_lowercase());
    Ok(flags)
}
