//! IDLE (RFC 2177): changes by other sessions or nodes reach the client at once; a
//! keepalive `* OK` every `idle_keepalive_secs`; IDLE ends with BYE after `idle_max_secs`.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::session::{Next, Session};

pub async fn idle(s: &mut Session) -> CmdResult {
    s.flush().await?;
    s.io.write_all(b"+ idling\r\n").await?;
    let keepalive = Duration::from_secs(s.ctx.limits.idle_keepalive_secs.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(s.ctx.limits.idle_max_secs);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let mut shutdown = s.ctx.shutdown.clone();
    // Anything that happened before IDLE began is told first (read from the store: a
    // change on another node may not have been announced yet).
    s.dirty = true;
    s.catch_up(true).await?;
    s.flush().await?;
    loop {
        tokio::select! {
            done = s.io.read_idle_done() => {
                return match done? {
                    true => Ok(Done::text("Idle completed.")),
                    false => Err(CmdError::bad("Expected DONE.")),
                };
            }
            change = s.changes.recv() => {
                let relevant = match change {
                    Ok(change) => s.selected_ids().is_some_and(|(a, m)| {
                        change.account == a && change.mailbox.is_none_or(|cm| cm == m)
                    }),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => false,
                };
                if relevant {
                    s.dirty = true;
                    s.catch_up(true).await?;
                    s.flush().await?;
                }
            }
            _ = ticker.tick() => {
                s.io.write_all(b"* OK Still here\r\n").await?;
            }
            _ = tokio::time::sleep_until(deadline) => {
                s.next = Next::Close;
                return Err(CmdError::Bye("IDLE for too long; disconnecting.".into()));
            }
            _ = shutdown.changed() => {
                s.next = Next::Close;
                return Err(CmdError::Bye("Server shutting down.".into()));
            }
        }
    }
}
