//! IDLE (RFC 2177): changes by other sessions or nodes reach the client at once; a
//! keepalive `* OK` every `idle_keepalive_secs`; IDLE ends with BYE after `idle_max_secs`.

use std::time::Duration;

use imap_codec::imap_types::response::CommandContinuationRequest;
use tokio::sync::broadcast::error::RecvError;

use crate::imap::connection::{Connection, Next, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::state::{Login, Selected};

pub async fn idle<S: SessionStream>(
    c: &mut Connection<S>,
    login: &Login,
    mut selected: Option<&mut Selected>,
) -> CmdResult {
    if let Ok(go_on) = CommandContinuationRequest::basic(None, "idling") {
        c.continuation(go_on);
    }
    c.flush().await?;
    let keepalive = Duration::from_secs(c.ctx.limits.idle_keepalive_secs.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(c.ctx.limits.idle_max_secs);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let shutdown = c.ctx.shutdown.clone();
    // Anything that happened before IDLE began is told first (read from the store: a
    // change on another node may not have been announced yet).
    if let Some(selected) = selected.as_deref_mut() {
        selected.dirty = true;
        selected.catch_up(c, login, true).await?;
    }
    c.flush().await?;
    loop {
        tokio::select! {
            done = c.io.read_idle_done() => {
                return match done? {
                    true => Ok(Done::text("Idle completed.")),
                    false => Err(CmdError::bad("Expected DONE.")),
                };
            }
            change = c.changes.recv() => {
                let Some(selected) = selected.as_deref_mut() else {
                    continue;
                };
                let relevant = match change {
                    Ok(change) => {
                        let (account, mailbox) = selected.ids();
                        change.account == account && change.mailbox.is_none_or(|m| m == mailbox)
                    }
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => false,
                };
                if relevant {
                    selected.dirty = true;
                    selected.catch_up(c, login, true).await?;
                    c.flush().await?;
                }
            }
            _ = ticker.tick() => {
                c.ok(None, "Still here");
                c.flush().await?;
            }
            _ = tokio::time::sleep_until(deadline) => {
                c.next = Next::Close;
                return Err(CmdError::Bye("IDLE for too long; disconnecting.".into()));
            }
            _ = shutdown.cancelled() => {
                c.next = Next::Close;
                return Err(CmdError::Bye("Server shutting down.".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::imap::harness::{Opening, Start};
    use crate::imap::testing::{Client, harness, table};

    #[tokio::test]
    async fn idle_until_done() {
        table(
            Start::Selected { read_only: false },
            &[(
                &["a IDLE", "DONE", "b NOOP"],
                &["+ idling", "a OK Idle completed.", "b OK NOOP completed."],
            )],
        )
        .await;
        table(
            Start::Authenticated,
            &[(&["a IDLE", "DONE"], &["+ idling", "a OK Idle completed."])],
        )
        .await;
    }

    /// A change committed by another session reaches an idling one at once.
    #[tokio::test]
    async fn changes_are_told_while_idling() {
        let (_dir, mut h) = harness().await;
        let (mut idler, _) =
            Client::start(&mut h, Opening::new(Start::Selected { read_only: false })).await;
        let (mut other, _) =
            Client::start(&mut h, Opening::new(Start::Selected { read_only: false })).await;
        idler.send("a IDLE").await;
        assert_eq!(idler.line().await.as_deref(), Some("+ idling"));
        other.send("b STORE 1 +FLAGS.SILENT (\\Flagged)").await;
        assert_eq!(
            other.until_answer("b").await.last().map(String::as_str),
            Some("b OK Store completed.")
        );
        let told = idler.line().await.expect("a FETCH");
        assert!(
            told.starts_with("* 1 FETCH (UID 1 FLAGS (") && told.contains("\\Flagged"),
            "{told}"
        );
        idler.send("DONE").await;
        assert_eq!(idler.line().await.as_deref(), Some("a OK Idle completed."));
        idler.close().await;
        other.close().await;
    }
}
