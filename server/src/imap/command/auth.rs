//! STARTTLS, LOGIN and AUTHENTICATE.
//!
//! Passwords cross the wire only on a protected channel: before STARTTLS, LOGIN and
//! AUTHENTICATE PLAIN get `NO [PRIVACYREQUIRED]`. Every failure is the same
//! `NO [AUTHENTICATIONFAILED]`, whether the account is unknown, disabled, or the
//! password wrong; three failures on one connection end it.

use std::borrow::Cow;
use std::sync::Arc;

use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::secret::Secret as WireSecret;

use crate::auth::secret::{Secret, SecretBytes};
use crate::imap::codec::AuthLine;
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::session::{Next, Session, State};

const FAILED: &str = "Authentication failed.";

pub fn starttls(s: &mut Session) -> CmdResult {
    if s.is_secure() {
        return Err(CmdError::bad("TLS is already active."));
    }
    if s.ctx.tls.is_none() {
        return Err(CmdError::no("TLS is not available."));
    }
    s.next = Next::StartTls;
    Ok(Done::text("Begin TLS negotiation now."))
}

pub async fn login(
    s: &mut Session,
    username: AString<'static>,
    password: WireSecret<AString<'static>>,
) -> CmdResult {
    if !s.is_secure() {
        return Err(CmdError::no_code(
            "PRIVACYREQUIRED",
            "Plaintext authentication disallowed without TLS; use STARTTLS.",
        ));
    }
    let username = String::from_utf8_lossy(username.as_ref()).into_owned();
    let password = password_secret(password.declassify().as_ref().to_vec());
    password_login(s, "login", &username, &password).await
}

pub async fn authenticate(
    s: &mut Session,
    mechanism: AuthMechanism<'static>,
    initial_response: Option<WireSecret<Cow<'static, [u8]>>>,
) -> CmdResult {
    match mechanism {
        AuthMechanism::Plain => {
            if !s.is_secure() {
                return Err(CmdError::no_code(
                    "PRIVACYREQUIRED",
                    "Plaintext authentication disallowed without TLS; use STARTTLS.",
                ));
            }
            let message = match initial_response {
                Some(ir) => SecretBytes::new(ir.declassify().to_vec()),
                None => match read_response(s, b"+ \r\n").await? {
                    Some(data) => data,
                    None => return Err(CmdError::bad("Authentication cancelled.")),
                },
            };
            let Some((authz, authc, password)) = split_plain(message.expose()) else {
                return fail(s, "plain").await;
            };
            if !authz.is_empty() && authz != authc {
                // We do not let one account act as another.
                return fail(s, "plain").await;
            }
            let password = password_secret(password.to_vec());
            let authc = String::from_utf8_lossy(authc).into_owned();
            password_login(s, "plain", &authc, &password).await
        }
        other => Err(CmdError::no(format!(
            "Unsupported authentication mechanism {}.",
            other.as_ref()
        ))),
    }
}

/// Sends a continuation and reads one line of client data. `None` when cancelled.
async fn read_response(s: &mut Session, prompt: &[u8]) -> CmdResult<Option<SecretBytes>> {
    s.flush().await?;
    s.io.write_all(prompt).await?;
    match s.io.read_auth_line().await? {
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

async fn password_login(
    s: &mut Session,
    mechanism: &'static str,
    username: &str,
    password: &Secret,
) -> CmdResult {
    let peer = s.info.peer.ip();
    match s
        .ctx
        .auth
        .login_password(username, password, peer, mechanism)
        .await
    {
        Ok(account) => {
            tracing::info!(peer = %s.info.peer, user = %account.username, mechanism, "login succeeded");
            s.state = State::Authenticated {
                user: Arc::new(account),
            };
            Ok(Done::with_code(
                format!("CAPABILITY {}", s.capabilities()),
                "Logged in.",
            ))
        }
        Err(_) => fail(s, mechanism).await,
    }
}

async fn fail(s: &mut Session, mechanism: &'static str) -> CmdResult {
    s.auth_failures += 1;
    tracing::info!(peer = %s.info.peer, mechanism, failures = s.auth_failures, "login failed");
    if s.auth_failures >= s.ctx.max_failures_per_connection {
        s.out
            .extend_from_slice(b"* BYE Too many failed logins.\r\n");
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
