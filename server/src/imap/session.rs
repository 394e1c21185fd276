//! The per-connection loop: greet, read a command within the deadline of the state,
//! have it dispatched (`command::dispatch` matches the state and the command once),
//! catch the selected mailbox up, write the tagged status, and act on what the
//! command asked (STARTTLS, close). Commands do not know this module.

use std::sync::Arc;
use std::time::Duration;

use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::{Code, StatusKind};

use super::codec::{Framed, Incoming};
use super::command::{self, Dispatched, Request};
use super::connection::{Connection, Next, SessionStream};
use super::context::ImapCtx;
use super::error::{CmdError, status_line};
use super::response;
use super::state::State;
use super::stream::StartTls;
use crate::net::ConnInfo;

/// What a session is told when the server shuts down.
const SHUTDOWN_TEXT: &str = "Server shutting down.";

/// One IMAP connection over a stream `S`: what it holds in every state, and its state.
pub struct Session<S> {
    pub conn: Connection<S>,
    pub state: State,
}

impl<S: SessionStream> Session<S> {
    /// A connection not yet logged in, closed `login_timeout_secs` from now unless
    /// the caller sets another deadline.
    pub fn new(ctx: Arc<ImapCtx>, io: Framed<S>, info: ConnInfo) -> Self {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(ctx.limits.login_timeout_secs);
        Session {
            conn: Connection::new(ctx, io, info),
            state: State::new(deadline),
        }
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
async fn stopping(shutdown: &tokio_util::sync::CancellationToken) {
    shutdown.cancelled().await;
}

/// How [`serve`] ended.
pub enum Ended<S> {
    /// The client logged out, went away or was sent away.
    Closed(Session<S>),
    /// The client asked for STARTTLS, and was told to begin: the stream is to be
    /// upgraded and the session to go on over it.
    StartTls(Session<S>),
}

/// Runs a connection to its end: greets it, serves it, and when it asks for STARTTLS
/// hands its stream to the TLS acceptor and goes on over the upgraded stream.
pub async fn run<S: StartTls>(s: Session<S>) {
    let greeting = response::greeting(&s.conn.capabilities(s.state.is_authenticated()));
    let mut s = s;
    if s.conn.io.write_all(&greeting).await.is_err() {
        return;
    }
    match serve(s).await {
        Ended::Closed(mut s) => s.conn.io.shutdown().await,
        Ended::StartTls(s) => {
            let Some(s) = start_tls(s).await else {
                return;
            };
            match serve(s).await {
                // STARTTLS is refused once TLS is active, so is not asked twice.
                Ended::Closed(mut s) | Ended::StartTls(mut s) => s.conn.io.shutdown().await,
            }
        }
    }
}

/// Upgrades the session's stream to TLS. `None`: the handshake failed, timed out (it
/// ends at the login deadline) or was cut by shutdown (no BYE can be said in the
/// middle of a handshake); the stream is then dropped.
async fn start_tls<S: StartTls>(s: Session<S>) -> Option<Session<S::Upgraded>> {
    let Session { conn, state } = s;
    let peer = conn.info.peer;
    // STARTTLS is only dispatched before login.
    let (Some(acceptor), State::NotAuthenticated { pre }) = (conn.ctx.tls.clone(), &state) else {
        return None;
    };
    let deadline = pre.deadline;
    let shutdown = conn.ctx.shutdown.clone();
    let (stream, parked) = conn.park();
    let handshake = tokio::time::timeout_at(deadline, stream.start_tls(&acceptor));
    let result = tokio::select! {
        r = handshake => r,
        _ = stopping(&shutdown) => return None,
    };
    match result {
        Ok(Ok(stream)) => Some(Session {
            conn: parked.resume(stream),
            state,
        }),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "STARTTLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "STARTTLS handshake timed out");
            None
        }
    }
}

/// Serves commands until the session ends or asks for STARTTLS (the greeting has been
/// written).
pub async fn serve<S: SessionStream>(mut s: Session<S>) -> Ended<S> {
    let c = &mut s.conn;
    let peer = c.info.peer;
    let shutdown = c.ctx.shutdown.clone();
    loop {
        let c = &mut s.conn;
        // Logged in: a command may be larger, and the deadline is the autologout's.
        let deadline = match &s.state {
            State::NotAuthenticated { pre } => {
                c.io.set_authenticated(false);
                pre.deadline
            }
            _ => {
                c.io.set_authenticated(true);
                tokio::time::Instant::now() + Duration::from_secs(c.ctx.limits.autologout_secs)
            }
        };
        let authenticated = s.state.is_authenticated();
        // Biased: once the server shuts down no new command starts, even one the client
        // has already sent. A command whose literal is still arriving is abandoned
        // unanswered (as Dovecot does): its message is not stored.
        let incoming = tokio::select! {
            biased;
            _ = stopping(&shutdown) => {
                let _ = c.io.write_all(&response::bye(SHUTDOWN_TEXT)).await;
                break;
            }
            r = tokio::time::timeout_at(deadline, c.io.read_command()) => r,
        };
        let incoming = match incoming {
            Err(_) => {
                let bye = if authenticated {
                    "Autologout; idle for too long."
                } else {
                    "Login timeout; log in sooner."
                };
                let _ = c.io.write_all(&response::bye(bye)).await;
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "read failed");
                break;
            }
            Ok(Ok(incoming)) => incoming,
        };
        let (tag, request) = match incoming {
            Incoming::Command(command) => (command.tag, Request::Imap(command.body)),
            Incoming::ListExtended { tag, list } => (tag, Request::ListExtended(list)),
            Incoming::Closed => break,
            Incoming::Malformed { tag } => {
                // Counted under a name of its own: what it was is not known.
                c.ctx.metrics.command("UNPARSED", "bad", Duration::ZERO);
                let mut line = Vec::new();
                response::push_status(
                    &mut line,
                    tag.as_ref().map(|t| t.inner()),
                    StatusKind::Bad,
                    None,
                    "Error in IMAP command: could not parse it.",
                );
                if c.io.write_all(&line).await.is_err() {
                    break;
                }
                continue;
            }
            Incoming::LiteralRefused { tag } => {
                let mut line = Vec::new();
                response::push_status(
                    &mut line,
                    tag.as_ref().map(|t| t.inner()),
                    StatusKind::No,
                    Some(Code::TooBig),
                    "Literal larger than allowed.",
                );
                if c.io.write_all(&line).await.is_err() {
                    break;
                }
                continue;
            }
            Incoming::Overflow { tag } => {
                let mut line = Vec::new();
                response::push_status(
                    &mut line,
                    tag.as_ref().map(|t| t.inner()),
                    StatusKind::Bad,
                    Some(Code::TooBig),
                    "Command or literal larger than allowed.",
                );
                line.extend_from_slice(&response::bye("Too much data."));
                let _ = c.io.write_all(&line).await;
                break;
            }
        };
        // Boxed: a command's future (the largest of them all) is allocated while it
        // runs, not kept in every idle session's task.
        match Box::pin(execute(&mut s, tag, request)).await {
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
        let c = &mut s.conn;
        match std::mem::replace(&mut c.next, Next::Continue) {
            Next::Continue => {}
            Next::Close => break,
            Next::StartTls => return Ended::StartTls(s),
        }
        if matches!(s.state, State::Logout) {
            break;
        }
    }
    Ended::Closed(s)
}

/// Runs one command and writes its responses and tagged status.
async fn execute<S: SessionStream>(
    s: &mut Session<S>,
    tag: Tag<'static>,
    request: Request,
) -> std::io::Result<()> {
    let tag = tag.inner().to_string();
    let name = request.name();
    let started = std::time::Instant::now();
    let allow_expunge = match &request {
        Request::Imap(body) => expunge_allowed(body),
        Request::ListExtended(_) => true,
    };
    let dispatched = if matches!(request, Request::Imap(CommandBody::Authenticate { .. })) {
        // An AUTHENTICATE exchange waits for the client's lines: a shutdown ends it
        // as it ends the wait for a command. Nothing is stored by it.
        let shutdown = s.conn.ctx.shutdown.clone();
        tokio::select! {
            r = command::dispatch(&mut s.conn, &mut s.state, request) => r,
            _ = stopping(&shutdown) => {
                Dispatched::Ran(Err(CmdError::Bye(SHUTDOWN_TEXT.into())))
            }
        }
    } else {
        command::dispatch(&mut s.conn, &mut s.state, request).await
    };
    let c = &mut s.conn;
    let result = match dispatched {
        // Refused in this state: nothing ran, nothing is caught up.
        Dispatched::Refused(e) => Err(e),
        Dispatched::Ran(r) => {
            // Every command ends by telling the client what changed meanwhile.
            let caught_up = match &mut s.state {
                State::Selected { login, selected } => {
                    selected.catch_up(c, login, allow_expunge).await
                }
                _ => {
                    c.drain_changes(None);
                    Ok(())
                }
            };
            match (r, caught_up) {
                (Ok(done), Ok(())) => Ok(done),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            }
        }
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(CmdError::Io(_)) => "io",
        Err(CmdError::Bye(_)) => "bye",
        Err(CmdError::Bad(_)) => "bad",
        Err(CmdError::No { .. } | CmdError::NoTyped { .. } | CmdError::Store(_)) => "no",
    };
    c.ctx.metrics.command(name, outcome, started.elapsed());
    match &result {
        Ok(done) => response::push_status(
            &mut c.out,
            Some(&tag),
            StatusKind::Ok,
            done.code.clone(),
            &done.text,
        ),
        Err(CmdError::Io(e)) => return Err(std::io::Error::new(e.kind(), e.to_string())),
        Err(CmdError::Bye(text)) => {
            c.next = Next::Close;
            c.bye(text);
        }
        Err(e) => {
            if let CmdError::Store(err) = e {
                c.ctx.metrics.storage_error("imap");
                tracing::warn!(peer = %c.info.peer, command = name, error = %err, "storage error");
            }
            c.out.extend_from_slice(status_line(&tag, e).as_bytes());
        }
    };
    c.flush().await?;
    // Between commands the session holds no output buffer.
    c.out = Vec::new();
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::imap::harness::{Opening, PASSWORD, Start, USERNAME};
    use crate::imap::testing::{Client, harness, line_matches, table};

    /// The greeting tells the capabilities of the state the session starts in.
    #[tokio::test]
    async fn greeting() {
        let (_dir, mut h) = harness().await;
        let (c, greeting) = Client::start(&mut h, Opening::new(Start::NotAuthenticated)).await;
        assert_eq!(
            greeting,
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN \
             AUTH=SCRAM-SHA-256] cpmstore ready."
        );
        assert_eq!(c.close().await, "");
    }

    #[tokio::test]
    async fn login_moves_to_authenticated() {
        table(
            Start::NotAuthenticated,
            &[(
                &[
                    "a SELECT INBOX",
                    &format!("b LOGIN {USERNAME} wrong"),
                    &format!("c LOGIN {USERNAME} {PASSWORD}"),
                    "d LOGIN again please",
                    "e STATUS INBOX (MESSAGES)",
                ],
                &[
                    "a BAD Command not allowed before login.",
                    "b NO [AUTHENTICATIONFAILED] Authentication failed.",
                    "c OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE ...",
                    "d BAD Command not allowed in this state.",
                    "* STATUS INBOX (MESSAGES 3)",
                    "e OK Status completed.",
                ],
            )],
        )
        .await;
    }

    /// STARTTLS on a channel already protected is refused, and the state stays
    /// not authenticated. (The upgrade itself is tested end to end, over TCP.)
    #[tokio::test]
    async fn starttls_keeps_the_state() {
        table(
            Start::NotAuthenticated,
            &[(
                &["a STARTTLS", "b NAMESPACE"],
                &[
                    "a BAD TLS is already active.",
                    "b BAD Command not allowed before login.",
                ],
            )],
        )
        .await;
    }

    #[tokio::test]
    async fn select_moves_to_selected_and_close_unselect_back() {
        table(
            Start::Authenticated,
            &[
                (
                    &["a FETCH 1 (UID)", "b EXAMINE INBOX", "c FETCH 1 (UID)"],
                    &[
                        "a BAD Command not allowed in this state.",
                        "* FLAGS (...",
                        "* OK [PERMANENTFLAGS ()] Flags permitted.",
                        "* 3 EXISTS",
                        "* 0 RECENT",
                        "* OK [UNSEEN ...",
                        "* OK [UIDVALIDITY ...",
                        "* OK [UIDNEXT 4] Predicted next UID.",
                        "b OK [READ-ONLY] Examine completed.",
                        "* 1 FETCH (UID 1)",
                        "c OK Fetch completed.",
                    ],
                ),
                (
                    &[
                        "a SELECT Nope",
                        "b SELECT INBOX",
                        "c SELECT Nope",
                        "d UID FETCH 1 (UID)",
                    ],
                    &[
                        "a NO [NONEXISTENT] Mailbox doesn't exist",
                        "* FLAGS (...",
                        "* OK [PERMANENTFLAGS (...",
                        "* 3 EXISTS",
                        "* 0 RECENT",
                        "* OK [UNSEEN ...",
                        "* OK [UIDVALIDITY ...",
                        "* OK [UIDNEXT 4] Predicted next UID.",
                        "b OK [READ-WRITE] Select completed.",
                        "* OK [CLOSED] Previous mailbox closed.",
                        "c NO [NONEXISTENT] Mailbox doesn't exist",
                        "d BAD Command not allowed in this state.",
                    ],
                ),
            ],
        )
        .await;
        table(
            Start::Selected { read_only: false },
            &[
                (
                    &["a CLOSE", "b FETCH 1 (UID)", "c NOOP"],
                    &[
                        "a OK Close completed.",
                        "b BAD Command not allowed in this state.",
                        "c OK NOOP completed.",
                    ],
                ),
                (
                    &["a UNSELECT", "b UNSELECT"],
                    &[
                        "a OK Unselect completed.",
                        "b BAD Command not allowed in this state.",
                    ],
                ),
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn logout_ends_the_session() {
        let (_dir, mut h) = harness().await;
        for start in [Start::NotAuthenticated, Start::Selected { read_only: true }] {
            let (mut c, _) = Client::start(&mut h, Opening::new(start)).await;
            c.send("a LOGOUT").await;
            assert_eq!(c.line().await.as_deref(), Some("* BYE Logging out."));
            assert_eq!(c.line().await.as_deref(), Some("a OK Logout completed."));
            assert_eq!(c.line().await, None, "the server closes");
            c.close().await;
        }
    }

    /// IDLE says it is still there every `idle_keepalive_secs`, and ends after
    /// `idle_max_secs` (virtual time).
    #[tokio::test]
    async fn idle_keepalive_and_limit() {
        let (_dir, mut h) = harness().await;
        let (mut c, _) = Client::start(&mut h, Opening::new(Start::Authenticated)).await;
        c.send("a IDLE").await;
        assert_eq!(c.line().await.as_deref(), Some("+ idling"));
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        let keepalive = h.ctx().limits.idle_keepalive_secs;
        let max = h.ctx().limits.idle_max_secs;
        let mut keepalives = 0;
        loop {
            let line = c.line().await.expect("a line");
            if line == "* OK Still here" {
                keepalives += 1;
                continue;
            }
            assert_eq!(line, "* BYE IDLE for too long; disconnecting.");
            break;
        }
        assert_eq!(started.elapsed().as_secs(), max);
        // A keepalive due at the very end may or may not come before the BYE.
        let k = keepalive.max(1);
        assert!(
            (max - 1) / k <= keepalives && keepalives <= max / k,
            "{keepalives}"
        );
        assert_eq!(c.line().await, None);
        c.close().await;
    }

    /// A session that does not log in in time is told so and closed; one that is
    /// idle too long after login too (virtual time).
    #[tokio::test]
    async fn login_timeout_and_autologout() {
        let (_dir, mut h) = harness().await;
        let cases = [
            (
                Start::NotAuthenticated,
                "* BYE Login timeout; log in sooner.",
            ),
            (Start::Authenticated, "* BYE Autologout; idle for too long."),
        ];
        for (start, bye) in cases {
            let (mut c, _) = Client::start(&mut h, Opening::new(start)).await;
            tokio::time::pause();
            let line = c.line().await.expect("a BYE");
            assert!(line_matches(&line, bye), "{line}");
            assert_eq!(c.line().await, None);
            c.close().await;
            tokio::time::resume();
        }
    }

    #[tokio::test]
    async fn unparsable_commands_are_bad() {
        table(
            Start::Authenticated,
            &[(
                &["a FROBNICATE", "b NOOP"],
                &[
                    "a BAD Error in IMAP command: could not parse it.",
                    "b OK NOOP completed.",
                ],
            )],
        )
        .await;
    }

    /// STARTTLS over a plain in-process stream: the session hands its
    /// `tokio::io::DuplexStream` to the acceptor and goes on over
    /// `TlsStream<DuplexStream>`, where it is secure (no STARTTLS, AUTH=PLAIN offered).
    #[tokio::test]
    async fn starttls_upgrades_a_plain_duplex_stream() {
        use std::sync::Arc;

        use rustls::pki_types::{PrivateKeyDer, ServerName};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

        let (_dir, h) = crate::imap::testing::harness().await;
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let session = tokio::spawn(super::run(h.plain_session(server, acceptor)));

        async fn line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            line.trim_end().to_string()
        }
        let mut plain = BufReader::new(client);
        let greeting = line(&mut plain).await;
        assert!(
            greeting.contains(" STARTTLS LOGINDISABLED]") && !greeting.contains("AUTH="),
            "{greeting}"
        );
        plain.get_mut().write_all(b"a STARTTLS\r\n").await.unwrap();
        assert_eq!(line(&mut plain).await, "a OK Begin TLS negotiation now.");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, plain.into_inner()).await.unwrap();
        let mut tls = BufReader::new(tls);
        tls.get_mut().write_all(b"b CAPABILITY\r\n").await.unwrap();
        let caps = line(&mut tls).await;
        assert!(
            caps.starts_with("* CAPABILITY IMAP4rev1 ")
                && caps.contains(" AUTH=PLAIN")
                && !caps.contains("STARTTLS"),
            "{caps}"
        );
        assert_eq!(line(&mut tls).await, "b OK Capability completed.");
        tls.get_mut().write_all(b"c STARTTLS\r\n").await.unwrap();
        assert_eq!(line(&mut tls).await, "c BAD TLS is already active.");
        tls.get_mut().write_all(b"d LOGOUT\r\n").await.unwrap();
        assert_eq!(line(&mut tls).await, "* BYE Logging out.");
        assert_eq!(line(&mut tls).await, "d OK Logout completed.");
        session.await.unwrap();
    }
}
