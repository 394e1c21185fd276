//! One file per command or family: build typed arguments from the imap-types
//! `CommandBody`, run them against the `Store`, write untagged responses into
//! `Connection::out`, return the tagged OK's code and text (or an error).
//!
//! [`dispatch`] matches the session's state and the command once; handlers get the
//! data of their state (`state.rs`) and the connection (`connection.rs`), and never
//! the session loop.

pub mod any;
pub mod append;
pub mod args;
pub mod auth;
pub mod copy;
pub mod expunge;
pub mod fetch;
pub mod idle;
pub mod list;
pub mod mailbox;
pub mod metadata;
pub mod search;
pub mod select;
pub mod store;

pub use args::{existing_mailbox_name, mailbox_name, to_flags};

use imap_codec::imap_types::command::CommandBody;

use super::connection::{Connection, SessionStream};
use super::error::{CmdError, CmdResult};
use super::extended_list::ExtendedList;
use super::state::{Login, PreAuth, Selected, State, Transition};

/// A command to run: one imap-codec parsed, or an extended LIST (RFC 5258), which it
/// does not parse ([`crate::imap::extended_list`]).
pub enum Request {
    Imap(CommandBody<'static>),
    ListExtended(Box<ExtendedList>),
}

impl Request {
    /// The command's name, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Imap(body) => body.name(),
            Request::ListExtended(_) => "LIST",
        }
    }
}

/// What became of a command.
pub enum Dispatched {
    /// It ran (successfully or not): the selected mailbox is caught up after it.
    Ran(CmdResult),
    /// The state does not allow it (RFC 3501 section 6): nothing ran.
    Refused(CmdError),
}

/// Runs a command in the session's state: the state and the command are matched here,
/// once; each handler gets the data of the state it runs in, and a transition it asks
/// for replaces the state after it.
///
/// Each command's future is boxed at its own size: a session in IDLE holds IDLE's
/// state, not room for the largest command's (FETCH, SEARCH and the like).
pub async fn dispatch<S: SessionStream>(
    c: &mut Connection<S>,
    state: &mut State,
    request: Request,
) -> Dispatched {
    use CommandBody as C;
    let body = match request {
        Request::Imap(body) => body,
        Request::ListExtended(args) => {
            // LIST's states (authenticated and selected); it changes none.
            return match state {
                State::Logout => Dispatched::Refused(CmdError::bad("Logging out.")),
                State::NotAuthenticated { .. } => {
                    Dispatched::Refused(CmdError::bad("Command not allowed before login."))
                }
                State::Authenticated { login } => {
                    Dispatched::Ran(Box::pin(list::list_extended(c, login, None, &args)).await)
                }
                State::Selected { login, selected } => Dispatched::Ran(
                    Box::pin(list::list_extended(c, login, Some(&selected.view), &args)).await,
                ),
            };
        }
    };
    let mut next = Transition::Stay;
    let authenticated = state.is_authenticated();
    let dispatched = match (&mut *state, body) {
        (State::Logout, _) => Dispatched::Refused(CmdError::bad("Logging out.")),
        // Any state.
        (_, C::Capability) => Dispatched::Ran(any::capability(c, authenticated)),
        (State::Selected { selected, .. }, C::Noop) => Dispatched::Ran(any::noop(Some(selected))),
        (_, C::Noop) => Dispatched::Ran(any::noop(None)),
        (_, C::Logout) => {
            next = Transition::Logout;
            Dispatched::Ran(any::logout(c))
        }
        (_, C::Id { parameters }) => Dispatched::Ran(any::id(c, parameters)),
        (State::NotAuthenticated { pre }, body) => not_authenticated(c, pre, body, &mut next).await,
        (State::Authenticated { login }, body) => {
            authenticated_state(c, login, None, body, &mut next).await
        }
        (State::Selected { login, selected }, body) => {
            selected_state(c, login, selected, body, &mut next).await
        }
    };
    state.apply(next);
    dispatched
}

/// Commands of the not-authenticated state (RFC 3501 6.2).
async fn not_authenticated<S: SessionStream>(
    c: &mut Connection<S>,
    pre: &mut PreAuth,
    body: CommandBody<'static>,
    next: &mut Transition,
) -> Dispatched {
    use CommandBody as C;
    let logged_in = match body {
        C::StartTLS => return Dispatched::Ran(auth::starttls(c)),
        C::Login { username, password } => Box::pin(auth::login(c, pre, username, password)).await,
        C::Authenticate {
            mechanism,
            initial_response,
        } => Box::pin(auth::authenticate(c, pre, mechanism, initial_response)).await,
        _ => {
            return Dispatched::Refused(CmdError::bad("Command not allowed before login."));
        }
    };
    Dispatched::Ran(logged_in.map(|(done, login)| {
        *next = Transition::LogIn(login);
        done
    }))
}

/// Commands of the authenticated state (RFC 3501 6.3), which the selected state also
/// allows; `selected` is the mailbox when one is.
async fn authenticated_state<S: SessionStream>(
    c: &mut Connection<S>,
    login: &mut Login,
    mut selected: Option<&mut Selected>,
    body: CommandBody<'static>,
    next: &mut Transition,
) -> Dispatched {
    use CommandBody as C;
    let view = selected.as_deref().map(|s| &s.view);
    let r = match body {
        C::Enable { capabilities } => any::enable(c, login, view, capabilities),
        C::Namespace => any::namespace(c),
        C::Select {
            mailbox,
            parameters,
        } => {
            let selection = Box::pin(select::select(
                c,
                login,
                view.is_some(),
                &mailbox,
                &parameters,
                false,
            ));
            selection.await.apply(next)
        }
        C::Examine {
            mailbox,
            parameters,
        } => {
            let selection = Box::pin(select::select(
                c,
                login,
                view.is_some(),
                &mailbox,
                &parameters,
                true,
            ));
            selection.await.apply(next)
        }
        C::Create { mailbox } => Box::pin(mailbox::create(c, login, &mailbox)).await,
        C::Delete { mailbox } => match Box::pin(mailbox::delete(c, login, view, &mailbox)).await {
            Ok((done, selected_deleted)) => {
                if selected_deleted {
                    *next = Transition::Unselect;
                }
                Ok(done)
            }
            Err(e) => Err(e),
        },
        C::Rename { from, to } => Box::pin(mailbox::rename(c, login, &from, &to)).await,
        C::Subscribe { mailbox } => Box::pin(mailbox::subscribe(c, login, &mailbox, true)).await,
        C::Unsubscribe { mailbox } => Box::pin(mailbox::subscribe(c, login, &mailbox, false)).await,
        C::List {
            reference,
            mailbox_wildcard,
        } => Box::pin(list::list(c, login, &reference, &mailbox_wildcard, false)).await,
        C::Lsub {
            reference,
            mailbox_wildcard,
        } => Box::pin(list::list(c, login, &reference, &mailbox_wildcard, true)).await,
        C::Status {
            mailbox,
            item_names,
        } => Box::pin(mailbox::status(c, login, view, &mailbox, &item_names)).await,
        C::Append {
            mailbox,
            flags,
            date,
            message,
        } => {
            Box::pin(append::append(
                c,
                login,
                selected.as_deref_mut(),
                &mailbox,
                flags,
                date,
                message,
            ))
            .await
        }
        C::Idle => Box::pin(idle::idle(c, login, selected)).await,
        C::GetMetadata {
            options,
            mailbox,
            entries,
        } => Box::pin(metadata::get(c, login, &options, &mailbox, &entries)).await,
        C::SetMetadata {
            mailbox,
            entry_values,
        } => Box::pin(metadata::set(c, login, &mailbox, &entry_values)).await,
        _ => {
            return Dispatched::Refused(CmdError::bad("Command not allowed in this state."));
        }
    };
    Dispatched::Ran(r)
}

/// Commands of the selected state (RFC 3501 6.4); the others go to
/// [`authenticated_state`].
async fn selected_state<S: SessionStream>(
    c: &mut Connection<S>,
    login: &mut Login,
    selected: &mut Selected,
    body: CommandBody<'static>,
    next: &mut Transition,
) -> Dispatched {
    use CommandBody as C;
    let r = match body {
        C::Check => any::check(selected),
        C::Close => Box::pin(expunge::close(c, login, selected))
            .await
            .inspect(|_| {
                *next = Transition::Unselect;
            }),
        C::Unselect => expunge::unselect().inspect(|_| {
            *next = Transition::Unselect;
        }),
        C::Expunge => Box::pin(expunge::expunge(c, login, selected, None)).await,
        C::ExpungeUid { sequence_set } => {
            Box::pin(expunge::expunge(c, login, selected, Some(&sequence_set))).await
        }
        C::Search {
            charset,
            criteria,
            uid,
        } => Box::pin(search::search(c, login, selected, charset, criteria, uid)).await,
        C::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } => {
            Box::pin(fetch::fetch(
                c,
                login,
                selected,
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
                c,
                login,
                selected,
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
        } => {
            Box::pin(copy::copy(
                c,
                login,
                selected,
                &sequence_set,
                &mailbox,
                uid,
                false,
            ))
            .await
        }
        C::Move {
            sequence_set,
            mailbox,
            uid,
        } => {
            Box::pin(copy::copy(
                c,
                login,
                selected,
                &sequence_set,
                &mailbox,
                uid,
                true,
            ))
            .await
        }
        other => return authenticated_state(c, login, Some(selected), other, next).await,
    };
    Dispatched::Ran(r)
}
