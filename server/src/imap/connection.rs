//! What a session holds whatever its state: the framed stream, the shared context,
//! the responses waiting to be written, the change bus receiver, and what the loop is
//! to do after the command. Commands get it next to their state's data
//! (`state.rs`); neither knows the loop (`session.rs`) that drives them.
//!
//! It is also the one writer: commands hand it typed responses ([`Connection::data`],
//! [`Connection::status`], [`Connection::continuation`]), which it encodes with
//! imap-codec into the output buffer and writes at [`Connection::flush`]. Bytes go
//! to the stream only from here and from FETCH's streamed literals.

use std::sync::Arc;

use cpmstore_storage::{AccountId, Change, MailboxId};
use imap_codec::imap_types::response::{Code, CommandContinuationRequest, Data, Response, Status};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;

use super::codec::{FrameLimits, Framed};
use super::context::ImapCtx;
pub use super::stream::SessionStream;
use crate::net::ConnInfo;

/// What a command asks of the loop after its tagged response.
pub enum Next {
    Continue,
    /// STARTTLS: upgrade the connection now.
    StartTls,
    Close,
}

/// Flush `out` to the socket once it holds this much, so a large FETCH streams.
pub const FLUSH_AT: usize = 64 * 1024;

/// The most the output buffer keeps between the flushes of one command's responses;
/// after the command it is given back altogether (an idle session holds none).
const OUT_KEEP: usize = 2 * FLUSH_AT;

/// One IMAP connection, apart from its state, over a stream `S`.
pub struct Connection<S> {
    pub ctx: Arc<ImapCtx>,
    pub io: Framed<S>,
    pub info: ConnInfo,
    /// Untagged responses waiting to be written.
    pub out: Vec<u8>,
    pub changes: broadcast::Receiver<Change>,
    /// What the loop does after the current command's tagged response.
    pub next: Next,
}

/// A connection whose stream has been taken for STARTTLS: what it goes on with over
/// the upgraded stream ([`Parked::resume`]).
pub struct Parked {
    ctx: Arc<ImapCtx>,
    info: ConnInfo,
    changes: broadcast::Receiver<Change>,
    limits: FrameLimits,
}

impl Parked {
    /// The connection over `stream`, framed afresh.
    pub fn resume<T: SessionStream>(self, stream: T) -> Connection<T> {
        Connection {
            ctx: self.ctx,
            io: Framed::new(stream, self.limits),
            info: self.info,
            out: Vec::new(),
            changes: self.changes,
            next: Next::Continue,
        }
    }
}

impl<S: SessionStream> Connection<S> {
    /// Takes the stream away (for STARTTLS): what was read and not yet handled, and
    /// any response not yet written, are dropped.
    pub fn park(self) -> (S, Parked) {
        let (stream, limits) = self.io.into_inner();
        let parked = Parked {
            ctx: self.ctx,
            info: self.info,
            changes: self.changes,
            limits,
        };
        (stream, parked)
    }

    pub fn new(ctx: Arc<ImapCtx>, io: Framed<S>, info: ConnInfo) -> Self {
        let changes = ctx.store.changes().subscribe();
        Connection {
            ctx,
            io,
            info,
            out: Vec::new(),
            changes,
            next: Next::Continue,
        }
    }

    pub fn is_secure(&self) -> bool {
        self.io.conn().is_secure()
    }

    /// Queues an untagged data response.
    pub fn data(&mut self, data: Data<'_>) {
        self.encode(&Response::Data(data));
    }

    /// Queues a status response (untagged `OK`/`NO`/`BAD`, or `BYE`).
    pub fn status(&mut self, status: Status<'_>) {
        self.encode(&Response::Status(status));
    }

    /// Queues a command continuation request (`+ ...`).
    pub fn continuation(&mut self, request: CommandContinuationRequest<'_>) {
        self.encode(&Response::CommandContinuationRequest(request));
    }

    /// Queues `* OK [code] text`. `text` is ours (a constant, or numbers we format):
    /// should it ever be empty or hold CR/LF, it is said without them.
    pub fn ok(&mut self, code: Option<Code<'_>>, text: &str) {
        super::response::push_ok(&mut self.out, code, text);
    }

    /// Queues `* BYE text` (see [`Connection::ok`] for the text).
    pub fn bye(&mut self, text: &str) {
        self.out.extend_from_slice(&super::response::bye(text));
    }

    /// Queues bytes encoded elsewhere: only for responses imap-types has no type for
    /// (each caller names the missing type) and for what the fallbacks above say.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn encode(&mut self, response: &Response<'_>) {
        super::response::push(&mut self.out, response);
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

    /// Takes what the change bus carried; returns whether any of it may concern
    /// `selected` (account, mailbox, and the MODSEQ its view has caught up to), or the
    /// bus lagged. A change of the mailbox at or below that MODSEQ is already in the
    /// view (a catch-up reads everything up to the HIGHESTMODSEQ it read, and a
    /// session's own write, applied to its view, moves it): it needs no re-read.
    pub fn drain_changes(&mut self, selected: Option<(AccountId, MailboxId, u64)>) -> bool {
        let mut relevant = false;
        loop {
            match self.changes.try_recv() {
                Ok(change) => {
                    if let Some((account, mailbox, known)) = selected
                        && change.account == account
                        && match change.mailbox {
                            None => true,
                            Some(m) => m == mailbox && change.modseq > known,
                        }
                    {
                        relevant = true;
                    }
                }
                Err(TryRecvError::Lagged(_)) => relevant = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        relevant
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
        if conn.is_certificate_tls() && self.ctx.tls_end_point.is_some() {
            types.push(TLS_SERVER_END_POINT);
        }
        types
    }

    /// The data of a channel binding type offered by
    /// [`Connection::channel_binding_types`].
    pub fn channel_binding_data(&self, name: &str) -> Option<Vec<u8>> {
        use crate::auth::scram::{TLS_EXPORTER, TLS_SERVER_END_POINT};
        match name {
            TLS_EXPORTER => self.io.conn().tls_exporter(),
            TLS_SERVER_END_POINT if self.io.conn().is_certificate_tls() => {
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

    /// `* CAPABILITY ...` as bytes. Raw escape: imap-types' `Data::Capability` would
    /// write `IMAP4rev1` as `IMAP4REV1` (its `Capability::Imap4Rev1` keeps no case);
    /// the bytes clients have always seen are kept.
    pub fn capability_data(&self, authenticated: bool) -> Vec<u8> {
        format!("* CAPABILITY {}\r\n", self.capabilities(authenticated)).into_bytes()
    }

    /// The CAPABILITY list before (`authenticated` false) or after login.
    pub fn capabilities(&self, authenticated: bool) -> String {
        let mut caps = vec!["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"];
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
            "LIST-EXTENDED",
            "LIST-STATUS",
            "METADATA",
        ]);
        let mut s = caps.join(" ");
        s.push_str(&format!(
            " APPENDLIMIT={}",
            self.ctx.limits.max_literal_bytes
        ));
        s
    }
}
