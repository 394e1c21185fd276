//! STARTTLS, LOGIN and AUTHENTICATE (PLAIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS,
//! EXTERNAL), with SASL-IR (RFC 4959) and `*` cancellation.
//!
//! Nothing authenticates before TLS: there LOGIN and every AUTHENTICATE get
//! `NO [PRIVACYREQUIRED]`, and the capability list shows `LOGINDISABLED` and no AUTH=.
//! On TLS and PSK-TLS, LOGIN and PLAIN are fine (the channel is protected); -PLUS is
//! offered where a channel binding exists, EXTERNAL on PSK-TLS only. Every failure is
//! the same `NO [AUTHENTICATIONFAILED]`, whether the account is unknown, disabled,
//! locked out, or the secret wrong; three failures on one connection end it.

use std::borrow::Cow;
use std::sync::Arc;

use cpmstore_storage::Account;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::response::CommandContinuationRequest;
use imap_codec::imap_types::secret::Secret as WireSecret;

use crate::auth::scram::{self, ClientFirst, Variant};
use crate::auth::secret::{Secret, SecretBytes};
use crate::auth::stats::Mechanism;
use crate::imap::codec::AuthLine;
use crate::imap::connection::{Connection, Next, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::response::raw_code;
use crate::imap::state::{Login, PreAuth};

const FAILED: &str = "Authentication failed.";

/// A successful login: the tagged OK, and the state's data from now on.
type LoggedIn = CmdResult<(Done, Login)>;

pub fn starttls<S: SessionStream>(s: &mut Connection<S>) -> CmdResult {
    if s.is_secure() {
        return Err(CmdError::bad("TLS is already active."));
    }
    if s.ctx.tls.is_none() {
        return Err(CmdError::no("TLS is not available."));
    }
    s.next = Next::StartTls;
    Ok(Done::text("Begin TLS negotiation now."))
}

fn privacy_required() -> CmdError {
    CmdError::no_code(
        "PRIVACYREQUIRED",
        "Authentication disallowed without TLS; use STARTTLS.",
    )
}

fn cancelled() -> CmdError {
    CmdError::bad("Authentication cancelled.")
}

pub async fn login<S: SessionStream>(
    s: &mut Connection<S>,
    pre: &mut PreAuth,
    username: AString<'static>,
    password: WireSecret<AString<'static>>,
) -> LoggedIn {
    if !s.is_secure() {
        return Err(privacy_required());
    }
    let username = String::from_utf8_lossy(username.as_ref()).into_owned();
    let password = password_secret(password.declassify().as_ref().to_vec());
    password_login(s, pre, Mechanism::Login, &username, &password).await
}

pub async fn authenticate<S: SessionStream>(
    s: &mut Connection<S>,
    pre: &mut PreAuth,
    mechanism: AuthMechanism<'static>,
    initial_response: Option<WireSecret<Cow<'static, [u8]>>>,
) -> LoggedIn {
    if !s.is_secure() {
        return Err(privacy_required());
    }
    let initial = initial_response.map(|ir| SecretBytes::new(ir.declassify().to_vec()));
    let external_usable =
        mechanism.as_ref().eq_ignore_ascii_case("EXTERNAL") && s.io.conn().psk_peer().is_some();
    match mechanism {
        AuthMechanism::Plain => plain(s, pre, initial).await,
        AuthMechanism::ScramSha256 => scram(s, pre, Variant::Sha256, initial).await,
        AuthMechanism::ScramSha256Plus if !s.channel_binding_types().is_empty() => {
            scram(s, pre, Variant::Sha256Plus, initial).await
        }
        AuthMechanism::Other(_) if external_usable => external(s, pre, initial).await,
        other => Err(CmdError::no(format!(
            "Unsupported authentication mechanism {}.",
            other.as_ref()
        ))),
    }
}

/// The initial response, or the client's answer to an empty challenge. `None` when
/// the client cancelled.
async fn first_message<S: SessionStream>(
    s: &mut Connection<S>,
    pre: &PreAuth,
    initial: Option<SecretBytes>,
) -> CmdResult<Option<SecretBytes>> {
    match initial {
        Some(ir) => Ok(Some(ir)),
        // An empty challenge: `+ ` and nothing after it.
        None => read_response(s, pre, CommandContinuationRequest::base64(&[][..])).await,
    }
}

async fn plain<S: SessionStream>(
    s: &mut Connection<S>,
    pre: &mut PreAuth,
    initial: Option<SecretBytes>,
) -> LoggedIn {
    let Some(message) = first_message(s, pre, initial).await? else {
        return Err(cancelled());
    };
    let peer = s.info.peer.ip();
    let Some((authz, authc, password)) = split_plain(message.expose()) else {
        s.ctx
            .auth
            .refused(None, peer, Mechanism::Plain, &"malformed PLAIN message")
            .await;
        return fail(s, pre);
    };
    let authc_text = String::from_utf8_lossy(authc).into_owned();
    if !authz.is_empty() && authz != authc {
        // We do not let one account act as another.
        s.ctx
            .auth
            .refused(
                Some(&authc_text),
                peer,
                Mechanism::Plain,
                &"authorisation identity names another account",
            )
            .await;
        return fail(s, pre);
    }
    let password = password_secret(password.to_vec());
    password_login(s, pre, Mechanism::Plain, &authc_text, &password).await
}

/// SCRAM-SHA-256(-PLUS): client-first (initial response or after `+ `), server-first
/// in a continuation, client-final, then the server-final in a continuation that the
/// client acknowledges with an empty line (IMAP4rev1 has no data on the tagged OK).
async fn scram<S: SessionStream>(
    s: &mut Connection<S>,
    pre: &mut PreAuth,
    variant: Variant,
    initial: Option<SecretBytes>,
) -> LoggedIn {
    let mechanism = match variant {
        Variant::Sha256 => Mechanism::ScramSha256,
        Variant::Sha256Plus => Mechanism::ScramSha256Plus,
    };
    let peer = s.info.peer.ip();
    let Some(first) = first_message(s, pre, initial).await? else {
        return Err(cancelled());
    };
    let client = match ClientFirst::parse(first.expose()) {
        Ok(client) => client,
        Err(e) => {
            s.ctx.auth.refused(None, peer, mechanism, &e).await;
            return fail(s, pre);
        }
    };
    let offered = s.channel_binding_types();
    let negotiated =
        scram::negotiate_binding(&client.flag, variant, &offered).and_then(|name| match name {
            None => Ok(Vec::new()),
            Some(name) => s
                .channel_binding_data(name)
                .ok_or(scram::ScramError::UnsupportedBinding),
        });
    let binding_data = match negotiated {
        Ok(data) => data,
        Err(e) => {
            tracing::info!(peer = %s.info.peer, user = %client.username, reason = %e, "SCRAM channel binding refused");
            s.ctx
                .auth
                .refused(Some(&client.username), peer, mechanism, &e)
                .await;
            return fail(s, pre);
        }
    };
    let (attempt, server_first) = match s
        .ctx
        .auth
        .scram_start(&client, &binding_data, peer, mechanism)
        .await
    {
        Ok(started) => started,
        Err(_) => return fail(s, pre),
    };
    let prompt = CommandContinuationRequest::base64(server_first.into_bytes());
    let Some(client_final) = read_response(s, pre, prompt).await? else {
        return Err(cancelled());
    };
    let (account, server_final) = match s
        .ctx
        .auth
        .scram_finish(attempt, client_final.expose(), peer)
        .await
    {
        Ok(done) => done,
        Err(_) => return fail(s, pre),
    };
    let prompt = CommandContinuationRequest::base64(server_final.into_bytes());
    match read_response(s, pre, prompt).await? {
        Some(ack) if ack.is_empty() => logged_in(s, account),
        Some(_) => Err(CmdError::bad(
            "Expected an empty response after the server's final message.",
        )),
        None => Err(cancelled()),
    }
}

/// EXTERNAL on PSK-TLS: the handshake's PSK names the subscriber; the message is the
/// authorisation identity, empty or that same subscriber.
async fn external<S: SessionStream>(
    s: &mut Connection<S>,
    pre: &mut PreAuth,
    initial: Option<SecretBytes>,
) -> LoggedIn {
    let Some(psk) = s.io.conn().psk_peer().cloned() else {
        return Err(CmdError::no(
            "Unsupported authentication mechanism EXTERNAL.",
        ));
    };
    let Some(authzid) = first_message(s, pre, initial).await? else {
        return Err(cancelled());
    };
    let current = s
        .ctx
        .psk
        .as_ref()
        .and_then(|cache| cache.account_of(&psk.identity));
    let peer = s.info.peer.ip();
    match s
        .ctx
        .auth
        .external(&psk, current, authzid.expose(), peer)
        .await
    {
        Ok(account) => logged_in(s, account),
        Err(_) => fail(s, pre),
    }
}

/// Sends a continuation and reads one line of client data. `None` when cancelled.
async fn read_response<S: SessionStream>(
    s: &mut Connection<S>,
    pre: &PreAuth,
    prompt: CommandContinuationRequest<'_>,
) -> CmdResult<Option<SecretBytes>> {
    s.continuation(prompt);
    s.flush().await?;
    // The exchange is part of logging in: it ends at the login deadline too.
    let line = tokio::time::timeout_at(pre.deadline, s.io.read_auth_line())
        .await
        .map_err(|_| CmdError::Bye("Login timeout; log in sooner.".into()))?;
    match line? {
        AuthLine::Data(data) => Ok(Some(SecretBytes::new(data))),
        AuthLine::Cancel => Ok(None),
        AuthLine::Malformed => Err(CmdError::bad("Invalid base64 in authentication data.")),
        AuthLine::Closed => Err(CmdError::Io(std::io::Error::from(
            std::io::ErrorKind::UnexpectedEof,
        ))),
    }
}

/// A password from the wire. Not UTF-8 cannot match a provisioned password; it becomes
/// the empty password, which fails verification at the same cost as any other.
fn password_secret(bytes: Vec<u8>) -> Secret {
    Secret::new(String::from_utf8(bytes).unwrap_or_default())
}

/// `authzid NUL authcid NUL passwd` (RFC 4616).
fn split_plain(message: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut parts = message.splitn(3, |b| *b == 0);
    let authz = parts.next()?;
    let authc = parts.next()?;
    let password = parts.next()?;
    if authc.is_empty() || password.contains(&0) {
        return None;
    }
    Some((authz, authc, password))
}

async fn password_login<S: SessionStream>(
    s: &mut Connection<S>,
    pre: &mut PreAuth,
    mechanism: Mechanism,
    username: &str,
    password: &Secret,
) -> LoggedIn {
    let peer = s.info.peer.ip();
    match s
        .ctx
        .auth
        .login_password(username, password, peer, mechanism)
        .await
    {
        Ok(account) => logged_in(s, account),
        Err(_) => fail(s, pre),
    }
}

/// The authenticated state's data; the OK carries the new capabilities. An account
/// with `limits.max_connections_per_account` sessions already gets `NO [LIMIT]`.
fn logged_in<S: SessionStream>(s: &mut Connection<S>, account: Account) -> LoggedIn {
    let Some(slot) = s.ctx.account_slots.claim(account.id) else {
        tracing::info!(peer = %s.info.peer, user = %account.username, "login refused: too many sessions for the account");
        return Err(CmdError::no_code(
            "LIMIT",
            "Too many connections for this account.",
        ));
    };
    let login = Login::new(Arc::new(account), Some(slot));
    let done = Done::with_code(
        // Raw escape: imap-types' `Capability` writes IMAP4rev1 as `IMAP4REV1`.
        raw_code(&format!("CAPABILITY {}", s.capabilities(true))),
        "Logged in.",
    );
    Ok((done, login))
}

/// One more failure on this connection; the third ends it.
fn fail<T, S: SessionStream>(s: &mut Connection<S>, pre: &mut PreAuth) -> CmdResult<T> {
    pre.failures += 1;
    if pre.failures >= s.ctx.max_failures_per_connection {
        tracing::info!(peer = %s.info.peer, failures = pre.failures, "closing the connection after failed logins");
        s.bye("Too many failed logins.");
        s.next = Next::Close;
    }
    Err(CmdError::no_code("AUTHENTICATIONFAILED", FAILED))
}

#[cfg(test)]
mod tests {
    use super::split_plain;

    #[test]
    fn plain_messages() {
        assert_eq!(
            split_plain(b"\0alice\0pw"),
            Some((&b""[..], &b"alice"[..], &b"pw"[..]))
        );
        assert_eq!(
            split_plain(b"alice\0alice\0pw"),
            Some((&b"alice"[..], &b"alice"[..], &b"pw"[..]))
        );
        assert_eq!(split_plain(b"alice\0pw"), None);
        assert_eq!(split_plain(b"\0\0pw"), None);
        assert_eq!(split_plain(b"\0a\0p\0w"), None);
    }
}

#[cfg(test)]
mod table_tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    use crate::imap::harness::{PASSWORD, Start, USERNAME};
    use crate::imap::testing::table;

    #[tokio::test]
    async fn authenticate_plain_and_failures() {
        let plain = B64.encode(format!("\0{USERNAME}\0{PASSWORD}"));
        let wrong = B64.encode(format!("\0{USERNAME}\0nope"));
        let ir = format!("a AUTHENTICATE PLAIN {plain}");
        let wrong_ir = format!("a AUTHENTICATE PLAIN {wrong}");
        table(
            Start::NotAuthenticated,
            &[
                (
                    &["a AUTHENTICATE PLAIN", &plain],
                    &["+ ", "a OK [CAPABILITY IMAP4rev1 ...] Logged in."],
                ),
                (&[&ir], &["a OK [CAPABILITY IMAP4rev1 ...] Logged in."]),
                (
                    &["a AUTHENTICATE PLAIN", "*"],
                    &["+ ", "a BAD Authentication cancelled."],
                ),
                (
                    &["a AUTHENTICATE CRAM-MD5"],
                    &["a NO Unsupported authentication mechanism CRAM-MD5."],
                ),
                (
                    &[&wrong_ir, &wrong_ir, &wrong_ir],
                    &[
                        "a NO [AUTHENTICATIONFAILED] Authentication failed.",
                        "a NO [AUTHENTICATIONFAILED] Authentication failed.",
                        "* BYE Too many failed logins.",
                        "a NO [AUTHENTICATIONFAILED] Authentication failed.",
                    ],
                ),
            ],
        )
        .await;
    }
}
