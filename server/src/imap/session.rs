//! The per-connection loop and the state machine
//! `NotAuthenticated -> Authenticated -> Selected -> Logout`.
//!
//! One function ([`allowed`]) decides whether a command may run in the current state,
//! before dispatch; the commands live in `command/`, one file per family.

use std::sync::Arc;
use std::time::Duration;

use cpmstore_storage::{Account, Change, MailboxId};
use imap_codec::imap_types::command::{Command, CommandBody};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

use super::ImapCtx;
use super::codec::{Framed, Incoming};
use super::command;
use super::error::{CmdError, CmdResult, status_line};
use super::mailbox_view::{MailboxView, Report};
use crate::net::ConnInfo;

/// The session's state; each transition replaces the whole state.
pub enum State {
    NotAuthenticated,
    Authenticated {
        user: Arc<Account>,
    },
    Selected {
        user: Arc<Account>,
        view: Box<MailboxView>,
    },
    Logout,
}

/// What a command handler asks of the loop after its tagged response.
pub enum Next {
    Continue,
    /// STARTTLS: upgrade the connection now.
    StartTls,
    Close,
}

/// One IMAP connection.
pub struct Session {
    pub ctx: Arc<ImapCtx>,
    pub io: Framed,
    pub info: ConnInfo,
    pub state: State,
    /// Untagged responses waiting to be written.
    pub out: Vec<u8>,
    pub changes: broadcast::Receiver<Change>,
    /// Whether a change to the selected mailbox may have happened since the last catch-up.
    pub dirty: bool,
    /// Failed login attempts on this connection.
    pub auth_failures: u32,
    /// This session's place among its account's sessions, once authenticated.
    pub account_slot: Option<super::AccountSlot>,
    /// Next handler result asked by a command (STARTTLS, LOGOUT).
    pub next: Next,
    /// CONDSTORE is enabled (RFC 7162 3.1): by ENABLE or any CONDSTORE-enabling
    /// command, for the rest of the connection.
    pub condstore: bool,
    /// QRESYNC is enabled (RFC 7162 3.2), by ENABLE only, for the rest of the
    /// connection; it implies `condstore`. Expunges are then told as `VANISHED`.
    pub qresync: bool,
    /// When a session that has not logged in is closed (counted from the connect:
    /// commands do not extend it).
    pub login_deadline: tokio::time::Instant,
    /// The connection's place among those not logged in; given back at login.
    pub preauth: Option<super::PreAuthGuard>,
}

/// Flush `out` to the socket once it holds this much, so a large FETCH streams.
pub const FLUSH_AT: usize = 64 * 1024;

/// The most the output buffer keeps between the flushes of one command's responses;
/// after the command it is given back altogether (an idle session holds none).
const OUT_KEEP: usize = 2 * FLUSH_AT;

/// What a session is told when the server shuts down.
const SHUTDOWN_TEXT: &str = "Server shutting down.";
const SHUTDOWN_BYE: &[u8] = b"* BYE Server shutting down.\r\n";

impl Session {
    pub fn new(ctx: Arc<ImapCtx>, io: Framed, info: ConnInfo) -> Self {
        let changes = ctx.store.changes().subscribe();
        let login_deadline =
            tokio::time::Instant::now() + Duration::from_secs(ctx.limits.login_timeout_secs);
        Session {
            ctx,
            io,
            info,
            state: State::NotAuthenticated,
            out: Vec::new(),
            changes,
            dirty: false,
            auth_failures: 0,
            account_slot: None,
            next: Next::Continue,
            condstore: false,
            qresync: false,
            login_deadline,
            preauth: None,
        }
    }

    pub fn is_secure(&self) -> bool {
        self.io.conn().is_secure()
    }

    /// The account of an authenticated session.
    pub fn user(&self) -> Option<&Arc<Account>> {
        match &self.state {
            State::Authenticated { user } | State::Selected { user, .. } => Some(user),
            _ => None,
        }
    }

    pub fn view(&self) -> Option<&MailboxView> {
        match &self.state {
            State::Selected { view, .. } => Some(view),
            _ => None,
        }
    }

    pub fn view_mut(&mut self) -> Option<&mut MailboxView> {
        match &mut self.state {
            State::Selected { view, .. } => Some(view),
            _ => None,
        }
    }

    /// Writes pending responses if there are many, so memory stays bounded.
    pub async fn maybe_flush(&mut self) -> std::io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let mut out = std::mem::take(&mut self.out);
            self.io.write_all(&out).await?;
            out.clear();
            // A large response leaves no large buffer behind.
            if out.capacity() > OUT_KEEP {
                out = Vec::new();
            }
            self.out = out;
        }
        Ok(())
    }

    /// The channel binding types this connection offers for SCRAM-SHA-256-PLUS:
    /// `tls-exporter` on TLS 1.3 (rustls or PSK-TLS), `tls-server-end-point` on
    /// certificate TLS. Empty: -PLUS is not advertised.
    pub fn channel_binding_types(&self) -> Vec<&'static str> {
        use crate::auth::scram::{TLS_EXPORTER, TLS_SERVER_END_POINT};
        let conn = self.io.conn();
        let mut types = Vec::new();
        if conn.is_tls13() {
            types.push(TLS_EXPORTER);
        }
        if matches!(conn, crate::net::Conn::Tls(_)) && self.ctx.tls_end_point.is_some() {
            types.push(TLS_SERVER_END_POINT);
        }
        types
    }

    /// The data of a channel binding type offered by [`Session::channel_binding_types`].
    pub fn channel_binding_data(&self, name: &str) -> Option<Vec<u8>> {
        use crate::auth::scram::{TLS_EXPORTER, TLS_SERVER_END_POINT};
        match name {
            TLS_EXPORTER => self.io.conn().tls_exporter(),
            TLS_SERVER_END_POINT if matches!(self.io.conn(), crate::net::Conn::Tls(_)) => {
                self.ctx.tls_end_point.clone()
            }
            _ => None,
        }
    }

    /// The SASL mechanisms usable now: none before TLS (plaintext and SCRAM alike wait
    /// for STARTTLS); PLAIN and SCRAM-SHA-256 on TLS and PSK-TLS; -PLUS where a channel
    /// binding exists; EXTERNAL on PSK-TLS.
    pub fn mechanisms(&self) -> Vec<&'static str> {
        if !self.is_secure() {
            return Vec::new();
        }
        let mut mechanisms = vec!["PLAIN", "SCRAM-SHA-256"];
        if !self.channel_binding_types().is_empty() {
            mechanisms.push("SCRAM-SHA-256-PLUS");
        }
        if self.io.conn().psk_peer().is_some() {
            mechanisms.push("EXTERNAL");
        }
        mechanisms
    }

    /// The CAPABILITY list for the current state.
    pub fn capabilities(&self) -> String {
        let mut caps = vec!["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"];
        let authenticated = self.user().is_some();
        if !authenticated {
            if !self.is_secure() {
                caps.push("STARTTLS");
                caps.push("LOGINDISABLED");
            }
            let mut s = caps.join(" ");
            for mechanism in self.mechanisms() {
                s.push_str(" AUTH=");
                s.push_str(mechanism);
            }
            return s;
        }
        caps.extend([
            "NAMESPACE",
            "UIDPLUS",
            "UNSELECT",
            "CHILDREN",
            "SPECIAL-USE",
            "MOVE",
            "CONDSTORE",
            "QRESYNC",
        ]);
        let mut s = caps.join(" ");
        s.push_str(&format!(
            " APPENDLIMIT={}",
            self.ctx.limits.max_literal_bytes
        ));
        s
    }

    /// Makes the session CONDSTORE-aware (RFC 7162 3.1); returns whether it was not yet.
    /// A mailbox selected at that moment has its HIGHESTMODSEQ told, as SELECT would
    /// have told it (Dovecot does the same).
    pub fn enable_condstore(&mut self) -> bool {
        if self.condstore {
            return false;
        }
        self.condstore = true;
        if let Some(view) = self.view() {
            let line = format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", view.modseq);
            self.out.extend_from_slice(line.as_bytes());
        }
        true
    }

    /// Enables QRESYNC (RFC 7162 3.2), and with it CONDSTORE; returns whether it was
    /// not yet enabled.
    pub fn enable_qresync(&mut self) -> bool {
        if self.qresync {
            return false;
        }
        self.enable_condstore();
        self.qresync = true;
        true
    }

    /// Catches the selected mailbox up with the store when something may have changed.
    pub async fn catch_up(&mut self, allow_expunge: bool) -> CmdResult<()> {
        self.drain_changes();
        let State::Selected { user, view } = &mut self.state else {
            return Ok(());
        };
        if !self.dirty {
            if allow_expunge {
                view.flush_expunges(self.qresync, &mut self.out);
            }
            self.tell_deferred_highestmodseq();
            return Ok(());
        }
        let store = &self.ctx.store;
        let changes = store
            .changes_since(user.id, view.mailbox.id, view.modseq)
            .await?;
        if view.has_new(&changes) {
            // The first session to see a new message has it as \Recent (RFC 3501
            // 2.3.2): a read-write one claims it; a read-only one only looks.
            let recent = if view.read_only {
                store.unclaimed_recent(user.id, view.mailbox.id).await?..changes.uidnext
            } else {
                store.claim_recent(user.id, view.mailbox.id).await?
            };
            view.add_recent(recent);
        }
        let report = Report {
            condstore: self.condstore,
            qresync: self.qresync,
        };
        view.apply(changes, allow_expunge, report, &mut self.out);
        self.dirty = false;
        self.tell_deferred_highestmodseq();
        Ok(())
    }

    /// A CONDSTORE client that is shown MODSEQs while expunges are held back (during
    /// FETCH, STORE, SEARCH) must not take the highest one it saw as its
    /// resynchronisation point: it is told a HIGHESTMODSEQ below the deferred expunges
    /// (RFC 7162 3.2).
    fn tell_deferred_highestmodseq(&mut self) {
        if !self.condstore {
            return;
        }
        if let Some(modseq) = self.view().and_then(MailboxView::deferred_highestmodseq) {
            self.out.extend_from_slice(
                format!("* OK [HIGHESTMODSEQ {modseq}] Expunges pending.\r\n").as_bytes(),
            );
        }
    }

    /// Notes whether the change bus carried anything for the selected mailbox.
    pub fn drain_changes(&mut self) {
        let selected = self.selected_ids();
        loop {
            match self.changes.try_recv() {
                Ok(change) => {
                    if let Some((account, mailbox)) = selected
                        && change.account == account
                        && change.mailbox.is_none_or(|m| m == mailbox)
                    {
                        self.dirty = true;
                    }
                }
                Err(TryRecvError::Lagged(_)) => self.dirty = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    pub fn selected_ids(&self) -> Option<(cpmstore_storage::AccountId, MailboxId)> {
        match &self.state {
            State::Selected { user, view } => Some((user.id, view.mailbox.id)),
            _ => None,
        }
    }
}

/// Whether a command may run in a state (RFC 3501 section 6).
fn allowed(state: &State, body: &CommandBody<'_>) -> bool {
    use CommandBody as C;
    match body {
        C::Capability | C::Noop | C::Logout | C::Id { .. } => true,
        C::StartTLS | C::Authenticate { .. } | C::Login { .. } => {
            matches!(state, State::NotAuthenticated)
        }
        C::Select { .. }
        | C::Examine { .. }
        | C::Create { .. }
        | C::Delete { .. }
        | C::Rename { .. }
        | C::Subscribe { .. }
        | C::Unsubscribe { .. }
        | C::List { .. }
        | C::Lsub { .. }
        | C::Status { .. }
        | C::Append { .. }
        | C::Idle
        | C::Enable { .. }
        | C::Namespace => matches!(state, State::Authenticated { .. } | State::Selected { .. }),
        C::Check
        | C::Close
        | C::Unselect
        | C::Expunge
        | C::ExpungeUid { .. }
        | C::Search { .. }
        | C::Fetch { .. }
        | C::Store { .. }
        | C::Copy { .. }
        | C::Move { .. } => matches!(state, State::Selected { .. }),
        _ => false,
    }
}

/// Whether EXPUNGE responses may be sent while answering this command.
fn expunge_allowed(body: &CommandBody<'_>) -> bool {
    match body {
        CommandBody::Fetch { uid, .. }
        | CommandBody::Store { uid, .. }
        | CommandBody::Search { uid, .. } => *uid,
        _ => true,
    }
}

/// Completes once the server is shutting down (at once if it already is).
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone: the server is stopping all the same.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs a connection to its end.
pub async fn run(mut s: Session) {
    let peer = s.info.peer;
    let greeting = format!("* OK [CAPABILITY {}] cpmstore ready.\r\n", s.capabilities());
    if s.io.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut shutdown = s.ctx.shutdown.clone();
    loop {
        let authenticated = s.user().is_some();
        s.io.set_authenticated(authenticated);
        if authenticated {
            // Logged in: the place among unauthenticated connections is given back.
            s.preauth = None;
        }
        let deadline = if authenticated {
            tokio::time::Instant::now() + Duration::from_secs(s.ctx.limits.autologout_secs)
        } else {
            s.login_deadline
        };
        // Biased: once the server shuts down no new command starts, even one the client
        // has already sent. A command whose literal is still arriving is abandoned
        // unanswered (as Dovecot does): its message is not stored.
        let incoming = tokio::select! {
            biased;
            _ = stopping(&mut shutdown) => {
                let _ = s.io.write_all(SHUTDOWN_BYE).await;
                break;
            }
            r = tokio::time::timeout_at(deadline, s.io.read_command()) => r,
        };
        let incoming = match incoming {
            Err(_) => {
                let bye: &[u8] = if authenticated {
                    b"* BYE Autologout; idle for too long.\r\n"
                } else {
                    b"* BYE Login timeout; log in sooner.\r\n"
                };
                let _ = s.io.write_all(bye).await;
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "read failed");
                break;
            }
            Ok(Ok(incoming)) => incoming,
        };
        let command = match incoming {
            Incoming::Command(command) => command,
            Incoming::Closed => break,
            Incoming::Malformed { tag } => {
                // Counted under a name of its own: what it was is not known.
                s.ctx.metrics.command("UNPARSED", "bad", Duration::ZERO);
                let line = match tag {
                    Some(tag) => format!(
                        "{} BAD Error in IMAP command: could not parse it.\r\n",
                        tag.inner()
                    ),
                    None => "* BAD Error in IMAP command: could not parse it.\r\n".to_string(),
                };
                if s.io.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                continue;
            }
            Incoming::LiteralRefused { tag } => {
                let tag = tag
                    .map(|t| t.inner().to_string())
                    .unwrap_or_else(|| "*".into());
                let line = format!("{tag} NO [TOOBIG] Literal larger than allowed.\r\n");
                if s.io.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                continue;
            }
            Incoming::Overflow { tag } => {
                let tag = tag
                    .map(|t| t.inner().to_string())
                    .unwrap_or_else(|| "*".into());
                let line = format!(
                    "{tag} BAD [TOOBIG] Command or literal larger than allowed.\r\n* BYE Too much data.\r\n"
                );
                let _ = s.io.write_all(line.as_bytes()).await;
                break;
            }
        };
        // Boxed: a command's future (the largest of them all) is allocated while it
        // runs, not kept in every idle session's task.
        match Box::pin(execute(&mut s, command)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::info!(%peer, "write timeout: the client read nothing; closing");
                break;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "write failed");
                break;
            }
        }
        match std::mem::replace(&mut s.next, Next::Continue) {
            Next::Continue => {}
            Next::Close => break,
            Next::StartTls => {
                let Some(acceptor) = s.ctx.tls.clone() else {
                    break;
                };
                // The handshake ends at the login deadline, and at shutdown (no BYE
                // can be said in the middle of a handshake).
                let handshake =
                    tokio::time::timeout_at(s.login_deadline, s.io.start_tls(&acceptor));
                let result = tokio::select! {
                    r = handshake => r,
                    _ = stopping(&mut shutdown) => break,
                };
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "STARTTLS handshake failed");
                        break;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "STARTTLS handshake timed out");
                        break;
                    }
                }
            }
        }
        if matches!(s.state, State::Logout) {
            break;
        }
    }
    s.io.shutdown().await;
}

/// Runs one command and writes its responses and tagged status.
async fn execute(s: &mut Session, command: Command<'static>) -> std::io::Result<()> {
    let tag = command.tag.inner().to_string();
    let name = command.body.name();
    let started = std::time::Instant::now();
    let result = if !allowed(&s.state, &command.body) {
        Err(match s.state {
            State::NotAuthenticated => CmdError::bad("Command not allowed before login."),
            State::Logout => CmdError::bad("Logging out."),
            _ => CmdError::bad("Command not allowed in this state."),
        })
    } else {
        let allow_expunge = expunge_allowed(&command.body);
        let r = if matches!(command.body, CommandBody::Authenticate { .. }) {
            // An AUTHENTICATE exchange waits for the client's lines: a shutdown ends it
            // as it ends the wait for a command. Nothing is stored by it.
            let mut shutdown = s.ctx.shutdown.clone();
            tokio::select! {
                r = command::dispatch(s, &tag, command.body) => r,
                _ = stopping(&mut shutdown) => {
                    Err(CmdError::Bye(SHUTDOWN_TEXT.into()))
                }
            }
        } else {
            command::dispatch(s, &tag, command.body).await
        };
        // Logged in: the place among unauthenticated connections is given back
        // before the client hears OK (it may connect again at once).
        if s.preauth.is_some() && s.user().is_some() {
            s.preauth = None;
        }
        // Every command ends by telling the client what changed meanwhile.
        match (r, s.catch_up(allow_expunge).await) {
            (Ok(done), Ok(())) => Ok(done),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        }
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(CmdError::Io(_)) => "io",
        Err(CmdError::Bye(_)) => "bye",
        Err(CmdError::Bad(_)) => "bad",
        Err(CmdError::No { .. } | CmdError::Store(_)) => "no",
    };
    s.ctx.metrics.command(name, outcome, started.elapsed());
    let line = match &result {
        Ok(done) => match &done.code {
            Some(code) => format!(
                "{tag} OK [{code}] {}\r\n",
                super::response::text(&done.text)
            ),
            None => format!("{tag} OK {}\r\n", super::response::text(&done.text)),
        },
        Err(CmdError::Io(e)) => return Err(std::io::Error::new(e.kind(), e.to_string())),
        Err(CmdError::Bye(text)) => {
            s.next = Next::Close;
            format!("* BYE {}\r\n", super::response::text(text))
        }
        Err(e) => {
            if let CmdError::Store(err) = e {
                s.ctx.metrics.storage_error("imap");
                tracing::warn!(peer = %s.info.peer, command = name, error = %err, "storage error");
            }
            status_line(&tag, e)
        }
    };
    s.out.extend_from_slice(line.as_bytes());
    s.flush().await?;
    // Between commands the session holds no output buffer.
    s.out = Vec::new();
    Ok(())
}
