//! The session's state, `NotAuthenticated -> Authenticated -> Selected -> Logout`,
//! each holding the data that only it uses. A transition replaces the whole state
//! ([`State::apply`]); commands receive the data of the state they run in, so none of
//! them asks which state it is in.

use std::sync::Arc;

use cpmstore_storage::{Account, AccountId, MailboxId};

use super::connection::{Connection, SessionStream};
use super::context::{AccountSlot, PreAuthGuard};
use super::error::CmdResult;
use super::mailbox_view::{MailboxView, Report};
use super::response::push_highestmodseq;

/// The session's state.
pub enum State {
    NotAuthenticated {
        pre: PreAuth,
    },
    Authenticated {
        login: Login,
    },
    Selected {
        login: Login,
        selected: Box<Selected>,
    },
    Logout,
}

/// A connection that has not logged in.
pub struct PreAuth {
    /// When it is closed (counted from the connect: commands do not extend it).
    pub deadline: tokio::time::Instant,
    /// Failed login attempts on this connection.
    pub failures: u32,
    /// Its place among the connections not logged in; given back (dropped) at login.
    pub guard: Option<PreAuthGuard>,
}

/// A logged-in session (authenticated or selected).
pub struct Login {
    pub user: Arc<Account>,
    /// This session's place among its account's sessions.
    pub slot: Option<AccountSlot>,
    /// CONDSTORE is enabled (RFC 7162 3.1): by ENABLE or any CONDSTORE-enabling
    /// command, for the rest of the connection.
    pub condstore: bool,
    /// QRESYNC is enabled (RFC 7162 3.2), by ENABLE only, for the rest of the
    /// connection; it implies `condstore`. Expunges are then told as `VANISHED`.
    pub qresync: bool,
}

/// A selected mailbox.
pub struct Selected {
    pub view: MailboxView,
    /// Whether a change to the mailbox may have happened since the last catch-up.
    pub dirty: bool,
}

/// A change of state asked by a command, applied by the dispatcher once the command
/// has run.
pub enum Transition {
    Stay,
    /// LOGIN or AUTHENTICATE succeeded.
    LogIn(Login),
    /// SELECT or EXAMINE succeeded.
    Select(Box<Selected>),
    /// CLOSE, UNSELECT, a failed SELECT, or the selected mailbox deleted.
    Unselect,
    Logout,
}

impl State {
    /// A connection that has not logged in, to be closed at `deadline`.
    pub fn new(deadline: tokio::time::Instant) -> Self {
        State::NotAuthenticated {
            pre: PreAuth {
                deadline,
                failures: 0,
                guard: None,
            },
        }
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self, State::Authenticated { .. } | State::Selected { .. })
    }

    /// Replaces the state as `transition` asks; a transition that does not apply to
    /// the current state (leaving a mailbox when none is selected) changes nothing.
    pub fn apply(&mut self, transition: Transition) {
        let current = std::mem::replace(self, State::Logout);
        *self = match (current, transition) {
            (current, Transition::Stay) => current,
            (_, Transition::Logout) => State::Logout,
            (State::NotAuthenticated { .. }, Transition::LogIn(login)) => {
                State::Authenticated { login }
            }
            (
                State::Authenticated { login } | State::Selected { login, .. },
                Transition::Select(selected),
            ) => State::Selected { login, selected },
            (State::Selected { login, .. }, Transition::Unselect) => State::Authenticated { login },
            (current, _) => current,
        };
    }
}

impl Login {
    pub fn new(user: Arc<Account>, slot: Option<AccountSlot>) -> Self {
        Login {
            user,
            slot,
            condstore: false,
            qresync: false,
        }
    }

    /// Makes the session CONDSTORE-aware (RFC 7162 3.1); returns whether it was not yet.
    /// A mailbox selected at that moment (`view`) has its HIGHESTMODSEQ told, as SELECT
    /// would have told it (Dovecot does the same).
    pub fn enable_condstore(&mut self, view: Option<&MailboxView>, out: &mut Vec<u8>) -> bool {
        if self.condstore {
            return false;
        }
        self.condstore = true;
        if let Some(view) = view {
            push_highestmodseq(out, view.modseq, "Highest");
        }
        true
    }

    /// Enables QRESYNC (RFC 7162 3.2), and with it CONDSTORE; returns whether it was
    /// not yet enabled.
    pub fn enable_qresync(&mut self, view: Option<&MailboxView>, out: &mut Vec<u8>) -> bool {
        if self.qresync {
            return false;
        }
        self.enable_condstore(view, out);
        self.qresync = true;
        true
    }

    fn report(&self) -> Report {
        Report {
            condstore: self.condstore,
            qresync: self.qresync,
        }
    }
}

impl Selected {
    pub fn new(view: MailboxView) -> Self {
        Selected { view, dirty: true }
    }

    /// The account and mailbox, as the change bus names them.
    pub fn ids(&self) -> (AccountId, MailboxId) {
        (self.view.mailbox.account, self.view.mailbox.id)
    }

    /// Catches the mailbox up with the store when something may have changed, writing
    /// what the client is to be told into `c.out`.
    pub async fn catch_up<S: SessionStream>(
        &mut self,
        c: &mut Connection<S>,
        login: &Login,
        allow_expunge: bool,
    ) -> CmdResult<()> {
        let (account, mailbox) = self.ids();
        self.dirty |= c.drain_changes(Some((account, mailbox, self.view.modseq)));
        let view = &mut self.view;
        if !self.dirty {
            if allow_expunge {
                view.flush_expunges(login.qresync, &mut c.out);
            }
            tell_deferred_highestmodseq(view, login, &mut c.out);
            return Ok(());
        }
        let store = &c.ctx.store;
        let account = login.user.id;
        let changes = store
            .changes_since(account, view.mailbox.id, view.modseq)
            .await?;
        if view.has_new(&changes) {
            // The first session to see a new message has it as \Recent (RFC 3501
            // 2.3.2): a read-write one claims it; a read-only one only looks.
            let recent = if view.read_only {
                store.unclaimed_recent(account, view.mailbox.id).await?..changes.uidnext
            } else {
                store.claim_recent(account, view.mailbox.id).await?
            };
            view.add_recent(recent);
        }
        view.apply(changes, allow_expunge, login.report(), &mut c.out);
        self.dirty = false;
        tell_deferred_highestmodseq(&self.view, login, &mut c.out);
        Ok(())
    }
}

/// A CONDSTORE client that is shown MODSEQs while expunges are held back (during
/// FETCH, STORE, SEARCH) must not take the highest one it saw as its
/// resynchronisation point: it is told a HIGHESTMODSEQ below the deferred expunges
/// (RFC 7162 3.2).
fn tell_deferred_highestmodseq(view: &MailboxView, login: &Login, out: &mut Vec<u8>) {
    if !login.condstore {
        return;
    }
    if let Some(modseq) = view.deferred_highestmodseq() {
        push_highestmodseq(out, modseq, "Expunges pending.");
    }
}
