//! One file per command or family: build typed arguments from the imap-types
//! `CommandBody`, run them against the `Store`, write untagged responses into
//! `Session::out`, return the tagged OK's code and text (or an error).

pub mod any;
pub mod append;
pub mod auth;
pub mod copy;
pub mod expunge;
pub mod fetch;
pub mod idle;
pub mod list;
pub mod mailbox;
pub mod search;
pub mod select;
pub mod store;

use cpmstore_storage::{Flags, SystemFlags};
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;

use super::error::{CmdError, CmdResult};
use super::mutf7;
use super::session::Session;

/// Runs a command that the session's state allows.
///
/// Each command's future is boxed at its own size: a session in IDLE holds IDLE's
/// state, not room for the largest command's (FETCH, SEARCH and the like).
pub async fn dispatch(s: &mut Session, tag: &str, body: CommandBody<'static>) -> CmdResult {
    use CommandBody as C;
    match body {
        C::Capability => any::capability(s),
        C::Noop => any::noop(s),
        C::Logout => any::logout(s),
        C::Id { parameters } => any::id(s, parameters),
        C::Enable { capabilities } => any::enable(s, capabilities),
        C::Namespace => any::namespace(s),
        C::StartTLS => auth::starttls(s),
        C::Login { username, password } => Box::pin(auth::login(s, username, password)).await,
        C::Authenticate {
            mechanism,
            initial_response,
        } => Box::pin(auth::authenticate(s, mechanism, initial_response)).await,
        C::Select {
            mailbox,
            parameters,
        } => Box::pin(select::select(s, &mailbox, &parameters, false)).await,
        C::Examine {
            mailbox,
            parameters,
        } => Box::pin(select::select(s, &mailbox, &parameters, true)).await,
        C::Create { mailbox } => Box::pin(mailbox::create(s, &mailbox)).await,
        C::Delete { mailbox } => Box::pin(mailbox::delete(s, &mailbox)).await,
        C::Rename { from, to } => Box::pin(mailbox::rename(s, &from, &to)).await,
        C::Subscribe { mailbox } => Box::pin(mailbox::subscribe(s, &mailbox, true)).await,
        C::Unsubscribe { mailbox } => Box::pin(mailbox::subscribe(s, &mailbox, false)).await,
        C::List {
            reference,
            mailbox_wildcard,
        } => Box::pin(list::list(s, &reference, &mailbox_wildcard, false)).await,
        C::Lsub {
            reference,
            mailbox_wildcard,
        } => Box::pin(list::list(s, &reference, &mailbox_wildcard, true)).await,
        C::Status {
            mailbox,
            item_names,
        } => Box::pin(mailbox::status(s, &mailbox, &item_names)).await,
        C::Append {
            mailbox,
            flags,
            date,
            message,
        } => Box::pin(append::append(s, &mailbox, flags, date, message)).await,
        C::Idle => Box::pin(idle::idle(s)).await,
        C::Check => any::check(s),
        C::Close => Box::pin(expunge::close(s)).await,
        C::Unselect => expunge::unselect(s),
        C::Expunge => Box::pin(expunge::expunge(s, None)).await,
        C::ExpungeUid { sequence_set } => Box::pin(expunge::expunge(s, Some(&sequence_set))).await,
        C::Search {
            charset,
            criteria,
            uid,
        } => Box::pin(search::search(s, charset, criteria, uid)).await,
        C::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } => {
            Box::pin(fetch::fetch(
                s,
                &sequence_set,
                macro_or_item_names,
                uid,
                &modifiers,
            ))
            .await
        }
        C::Store {
            sequence_set,
            kind,
            response,
            flags,
            uid,
            modifiers,
        } => {
            Box::pin(store::store(
                s,
                &sequence_set,
                kind,
                response,
                &flags,
                uid,
                &modifiers,
            ))
            .await
        }
        C::Copy {
            sequence_set,
            mailbox,
            uid,
        } => Box::pin(copy::copy(s, &sequence_set, &mailbox, uid, false)).await,
        C::Move {
            sequence_set,
            mailbox,
            uid,
        } => Box::pin(copy::copy(s, &sequence_set, &mailbox, uid, true)).await,
        other => {
            let _ = tag;
            Err(CmdError::bad(format!(
                "Unsupported command {}.",
                other.name()
            )))
        }
    }
}

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
pub fn to_flags(list: &[Flag<'_>]) -> CmdResult<Flags> {
    let mut flags = Flags::default();
    for f in list {
        let bit = match f {
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
