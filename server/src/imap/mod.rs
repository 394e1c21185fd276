//! The IMAP protocol: framing (`codec`), the per-connection loop (`session`), the
//! state machine and each state's data (`state`), what a connection holds in every
//! state (`connection`, the one writer), the stream a session runs over (`stream`:
//! `Session<S>` is generic over it; STARTTLS upgrades it), typed response building and
//! encoding (`response`), one file per command family (`command/`), what a selected
//! session knows (`mailbox_view`), message structure (`mime`), mailbox-name spelling
//! (`mutf7`), the extended LIST syntax imap-codec lacks (`extended_list`, a leaf the
//! codec and `command/list.rs` use), and the one error mapping (`error`).
//!
//! The arrows point one way: `session -> command -> state -> connection -> codec`,
//! and all of them to `context` (what sessions share); this file only wires them.

pub mod codec;
pub mod command;
pub mod connection;
pub mod context;
pub mod error;
pub mod extended_list;
pub mod harness;
pub mod mailbox_view;
pub mod mime;
pub mod mutf7;
pub mod response;
pub mod seqset;
pub mod session;
pub mod state;
pub mod stream;
#[cfg(test)]
pub mod testing;

use std::sync::Arc;

use crate::net::{Conn, ConnInfo};
use codec::{FrameLimits, Framed};

pub use context::{AccountSlot, AccountSlots, ImapCtx, PreAuthGuard, SessionLimits};

/// Serves one accepted connection to its end. `login_deadline` is when a connection
/// that has not logged in is closed (counted from the connect).
///
/// The session's future is boxed here, once, at its own size: the task that awaits it
/// (which also did the handshake) then holds a pointer instead of a second copy of its
/// state.
pub fn serve_connection(
    ctx: Arc<ImapCtx>,
    conn: Conn,
    info: ConnInfo,
    login_deadline: tokio::time::Instant,
    preauth: PreAuthGuard,
) -> impl Future<Output = ()> + Send + 'static {
    let limits = FrameLimits {
        max_command_bytes: ctx.limits.max_command_bytes,
        max_literal_bytes: ctx.limits.max_literal_bytes,
        max_preauth_command_bytes: ctx.limits.max_preauth_command_bytes,
        write_timeout: std::time::Duration::from_secs(ctx.limits.write_timeout_secs),
    };
    let mut session = session::Session::new(ctx, Framed::new(conn, limits), info);
    session.state = state::State::NotAuthenticated {
        pre: state::PreAuth {
            deadline: login_deadline,
            failures: 0,
            guard: Some(preauth),
        },
    };
    Box::pin(session::run(session))
}
