//! IMAP sessions over an in-memory pipe, for tests and fuzzing; `serve` never uses this.
//!
//! A [`Harness`] holds what sessions share ([`ImapCtx`], with no TLS and cheap argon2)
//! and one subscriber with a known mailbox, [`USERNAME`] / [`PASSWORD`]: INBOX holds a
//! plain message, a multipart one with an attachment and one with raw 8-bit headers;
//! Archive holds one more. [`Harness::converse`] runs one session, started in any
//! state, over [`tokio::io::duplex`]: it writes the client's bytes, closes the client's
//! side and reads everything the server says until it closes. [`Harness::restore`] puts
//! the subscriber back as it was when a conversation changed it, so that any number
//! of conversations leave the store no bigger than one. [`check_transcript`] checks
//! what the server said.
//!
//! The fuzz target `imap_session` (`server/fuzz`) drives it with arbitrary bytes; the
//! tests below replay its seed corpus.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cpmstore_storage::{
    Account, Change, CredentialRecord, Flags, Mailbox, MessageMeta, NewAccount, NewMailbox,
    NewMessage, Store, SystemFlags, UidRange,
};
use futures::TryStreamExt;
use imap_codec::decode::{Decoder, GreetingDecodeError, ResponseDecodeError};
use imap_codec::{GreetingCodec, ResponseCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::broadcast;

use super::codec::{FrameLimits, Framed};
use super::context::{AccountSlots, ImapCtx, SessionLimits};
use super::mailbox_view::MailboxView;
use super::session::{self, Session};
use super::state::{Login, Selected, State};
use crate::auth::credentials::Verifier;
use crate::auth::login::Authenticator;
use crate::auth::throttle::{Throttle, ThrottleConfig};
use crate::config::{AuthConfig, CpmConfig, LimitsConfig};
use crate::net::{Conn, ConnInfo, ListenerKind};

/// The harness subscriber's username.
pub const USERNAME: &str = "fuzz";

/// The harness subscriber's password.
pub const PASSWORD: &str = "fuzz-secret";

/// The harness subscriber's quota, in bytes: bounds what a conversation can add
/// (APPEND, and COPY, which would otherwise double the mailbox with every command).
pub const QUOTA: u64 = 16 * 1024;

/// Bytes the in-memory pipe buffers in each direction.
const PIPE_BYTES: usize = 64 * 1024;

/// Where a conversation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Just connected: the client must log in.
    NotAuthenticated,
    /// Logged in as [`USERNAME`].
    Authenticated,
    /// Logged in, INBOX selected (read-only: as after EXAMINE).
    Selected { read_only: bool },
}

/// How a conversation starts: the state, and what the session has enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub start: Start,
    /// CONDSTORE enabled (as after `ENABLE CONDSTORE`).
    pub condstore: bool,
    /// QRESYNC enabled (as after `ENABLE QRESYNC`; implies CONDSTORE).
    pub qresync: bool,
}

impl Opening {
    /// An opening in `start` with nothing enabled.
    pub fn new(start: Start) -> Self {
        Opening {
            start,
            condstore: false,
            qresync: false,
        }
    }

    /// The opening a fuzz input's first byte picks: bits 0-1 the state (0 not
    /// authenticated, 1 authenticated, 2 INBOX selected, 3 INBOX examined), bit 2
    /// CONDSTORE, bit 3 QRESYNC.
    pub fn from_byte(b: u8) -> Self {
        let start = match b & 3 {
            0 => Start::NotAuthenticated,
            1 => Start::Authenticated,
            2 => Start::Selected { read_only: false },
            _ => Start::Selected { read_only: true },
        };
        let qresync = b & 8 != 0;
        Opening {
            start,
            condstore: b & 4 != 0 || qresync,
            qresync,
        }
    }
}

/// Why a conversation did not end properly.
#[derive(Debug, thiserror::Error)]
pub enum ConverseError {
    /// The session had not ended this long after the client closed its side.
    #[error("the session did not end within {0:?}")]
    TimedOut(Duration),
    /// The server said more than the caller allowed.
    #[error("the server wrote {0} bytes, more than allowed")]
    TooMuchOutput(usize),
}

/// `[auth]` for harness sessions: argon2 at its cheapest (8 KiB, one pass), SCRAM at
/// the minimum 4096 iterations, and throttling that never delays or locks (a fuzzer
/// fails to log in millions of times).
pub fn auth_config() -> AuthConfig {
    AuthConfig {
        argon2_m_kib: 8,
        argon2_t: 1,
        argon2_p: 1,
        scram_iterations: 4096,
        max_parallel_hashes: 1,
        max_failures: u32::MAX,
        failure_window_secs: 1,
        lockout_secs: 1,
        failure_delay_ms: 0,
        max_failure_delay_ms: 0,
        ..AuthConfig::default()
    }
}

/// `[cpm]` for harness sessions by default: the server's defaults but without the
/// folder rules, so fuzz inputs and the generic command tables may create top-level
/// mailboxes and move messages anywhere, as on a plain IMAP server. The CPM tables ask
/// for the rules with [`Harness::with_cpm`].
pub fn generic_cpm() -> CpmConfig {
    CpmConfig {
        enforce_folder_rules: false,
        ..CpmConfig::default()
    }
}

/// One message of the fixture: where it goes, its content and flags.
struct FixtureMessage {
    mailbox: &'static str,
    content: &'static [u8],
    system: u8,
    keywords: &'static [&'static str],
}

const PLAIN: &[u8] = b"Return-Path: <alice@example.com>\r\n\
From: Alice Example <alice@example.com>\r\n\
To: Bob <bob@example.net>, team: carol@example.org, dave@example.org;\r\n\
Cc: \"Eve, Q.\" <eve@example.com>\r\n\
Subject: Lunch on Friday?\r\n\
Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\
Message-ID: <lunch.1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
Shall we meet at noon, at the usual place?\r\n\
\r\n\
-- \r\n\
Alice\r\n";

const MULTIPART: &[u8] = b"From: Bob <bob@example.net>\r\n\
To: Alice Example <alice@example.com>\r\n\
Subject: =?UTF-8?Q?Report_=E2=80=94_Q3?=\r\n\
Date: Tue, 8 Feb 1994 09:00:00 +0100\r\n\
Message-ID: <report.2@example.net>\r\n\
In-Reply-To: <lunch.1@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
This is a multi-part message in MIME format.\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
The report is attached =E2=80=94 see page 2.\r\n\
--inner\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>The report is attached.</p>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: application/pdf; name=\"report.pdf\"\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoKdHJhaWxlcgo8\r\n\
PC9Sb290IDEgMCBSPj4KJSVFT0YK\r\n\
--outer\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: Carol <carol@example.org>\r\n\
Subject: Forwarded\r\n\
\r\n\
The forwarded text.\r\n\
--outer--\r\n";

const EIGHT_BIT: &[u8] = "From: Jürgen Müller <juergen@example.de>\r\n\
To: Zoë <zoe@example.com>\r\n\
Subject: Grüße aus Köln\r\n\
Date: Wed, 9 Feb 1994 12:30:00 +0100\r\n\
Message-ID: <gruesse.3@example.de>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Schöne Grüße — bis bald!\r\n"
    .as_bytes();

const ARCHIVED: &[u8] = b"From: sip:+15551234567@example.com\r\n\
To: tel:+15557654321\r\n\
Subject: Chat history\r\n\
Date: Thu, 10 Feb 1994 08:00:00 +0000\r\n\
Message-ID: <cpm.4@example.com>\r\n\
Content-Type: Message/CPIM\r\n\
\r\n\
From: <sip:+15551234567@example.com>\r\n\
To: <tel:+15557654321>\r\n\
DateTime: 1994-02-10T08:00:00Z\r\n\
\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hello!\r\n";

const FIXTURE: &[FixtureMessage] = &[
    FixtureMessage {
        mailbox: "INBOX",
        content: PLAIN,
        system: SystemFlags::SEEN,
        keywords: &[],
    },
    FixtureMessage {
        mailbox: "INBOX",
        content: MULTIPART,
        system: SystemFlags::FLAGGED | SystemFlags::ANSWERED,
        keywords: &["$Important"],
    },
    FixtureMessage {
        mailbox: "INBOX",
        content: EIGHT_BIT,
        system: 0,
        keywords: &[],
    },
    FixtureMessage {
        mailbox: "Archive",
        content: ARCHIVED,
        system: SystemFlags::SEEN,
        keywords: &["$Label1"],
    },
];

/// The subscriber as created, and INBOX as a session selecting it would see it.
struct Fixture {
    account: Arc<Account>,
    inbox: Mailbox,
    inbox_messages: Vec<MessageMeta>,
    inbox_keywords: Vec<String>,
    /// Every mailbox's name, UIDNEXT, MODSEQ and subscription, and the subscriptions,
    /// to notice changes nobody published.
    mailboxes: Vec<(String, u32, u64, bool)>,
}

/// Sessions over in-memory pipes against one store and one subscriber.
pub struct Harness {
    ctx: Arc<ImapCtx>,
    /// The subscriber's credentials, derived once.
    credentials: CredentialRecord,
    fixture: Fixture,
    /// Everything the store commits: a conversation that changed something is undone.
    changes: broadcast::Receiver<Change>,
    /// Something was committed since the fixture was made: the store may differ from it.
    stale: bool,
}

impl Harness {
    /// A harness on `store` (a fresh database, or one a harness used before), with
    /// `limits`; creates the subscriber, replacing one of the same name.
    pub async fn new(store: Arc<dyn Store>, limits: &LimitsConfig) -> Result<Harness, String> {
        Harness::with_cpm(store, limits, generic_cpm()).await
    }

    /// A harness whose sessions apply `cpm` (the folder rules, `\read-report-sent`).
    pub async fn with_cpm(
        store: Arc<dyn Store>,
        limits: &LimitsConfig,
        cpm: CpmConfig,
    ) -> Result<Harness, String> {
        let auth = auth_config();
        let metrics = crate::metrics::Metrics::new().map_err(|e| e.to_string())?;
        let verifier = Verifier::from_config(&auth);
        let credentials = verifier
            .derive(&PASSWORD.into())
            .await
            .map_err(|e| e.to_string())?;
        let authenticator = Authenticator::new(
            store.clone(),
            verifier,
            Throttle::new(ThrottleConfig::from(&auth)),
            metrics.clone(),
        );
        let changes = store.changes().subscribe();
        let ctx = Arc::new(ImapCtx {
            store,
            auth: Arc::new(authenticator),
            tls: None,
            tls_end_point: None,
            psk: None,
            limits: SessionLimits::from(limits),
            max_failures_per_connection: auth.max_failures_per_connection,
            account_slots: AccountSlots::new(limits.max_connections_per_account),
            shutdown: tokio_util::sync::CancellationToken::new(),
            metrics,
            cpm,
        });
        if let Ok(old) = ctx.store.account_by_name(USERNAME).await {
            ctx.store
                .remove_account(old.id)
                .await
                .map_err(|e| e.to_string())?;
        }
        let fixture = create_fixture(ctx.store.as_ref(), &credentials).await?;
        let mut harness = Harness {
            ctx,
            credentials,
            fixture,
            changes,
            stale: false,
        };
        harness.drain_changes();
        Ok(harness)
    }

    /// What the harness's sessions share.
    pub fn ctx(&self) -> &Arc<ImapCtx> {
        &self.ctx
    }

    /// The subscriber as it is now.
    pub fn account(&self) -> &Arc<Account> {
        &self.fixture.account
    }

    /// `input` with every `%UV` replaced by INBOX's UIDVALIDITY (which the store takes
    /// from the clock), so that a fixed input can reach QRESYNC's resynchronisation.
    pub fn with_uidvalidity(&self, input: &[u8]) -> Vec<u8> {
        const MARK: &[u8] = b"%UV";
        let value = self.fixture.inbox.uidvalidity.to_string();
        let mut out = Vec::with_capacity(input.len());
        let mut rest = input;
        while let Some(at) = rest.windows(MARK.len()).position(|w| w == MARK) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(value.as_bytes());
            rest = &rest[at + MARK.len()..];
        }
        out.extend_from_slice(rest);
        out
    }

    /// A session not logged in over a plain `conn` (no [`Conn`] around it: its own
    /// [`SessionStream`](crate::imap::stream::SessionStream) says it is not secure),
    /// whose STARTTLS upgrades with `tls`.
    #[cfg(test)]
    pub(crate) fn plain_session(
        &self,
        conn: DuplexStream,
        tls: tokio_rustls::TlsAcceptor,
    ) -> Session<DuplexStream> {
        let c = &self.ctx;
        let ctx = Arc::new(ImapCtx {
            store: c.store.clone(),
            auth: c.auth.clone(),
            tls: Some(tls),
            tls_end_point: None,
            psk: c.psk.clone(),
            limits: c.limits.clone(),
            max_failures_per_connection: c.max_failures_per_connection,
            account_slots: c.account_slots.clone(),
            shutdown: c.shutdown.clone(),
            metrics: c.metrics.clone(),
            cpm: c.cpm.clone(),
        });
        let limits = FrameLimits {
            max_command_bytes: c.limits.max_command_bytes,
            max_literal_bytes: c.limits.max_literal_bytes,
            max_preauth_command_bytes: c.limits.max_preauth_command_bytes,
            write_timeout: std::time::Duration::from_secs(c.limits.write_timeout_secs),
        };
        let info = ConnInfo {
            peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 50143),
            local: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 143),
            listener: ListenerKind::Imap,
        };
        Session::new(ctx, Framed::new(conn, limits), info)
    }

    /// A session over `conn` (the server's end of a pipe), in the state `opening` asks.
    ///
    /// A selected session's view is the fixture's INBOX. If the store has changed since
    /// (no [`Harness::restore`] after a conversation that changed it), the session is
    /// told so, as if another session had changed the mailbox meanwhile, and catches
    /// up after its first command.
    pub fn session(&mut self, opening: Opening, conn: DuplexStream) -> Session<Conn> {
        self.stale |= self.drain_changes();
        let limits = FrameLimits {
            max_command_bytes: self.ctx.limits.max_command_bytes,
            max_literal_bytes: self.ctx.limits.max_literal_bytes,
            max_preauth_command_bytes: self.ctx.limits.max_preauth_command_bytes,
            write_timeout: std::time::Duration::from_secs(self.ctx.limits.write_timeout_secs),
        };
        let info = ConnInfo {
            peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 50143),
            local: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 993),
            listener: ListenerKind::Imaps,
        };
        let mut s = Session::new(self.ctx.clone(), Framed::new(Conn::Mem(conn), limits), info);
        let mut login = Login::new(self.fixture.account.clone(), None);
        if opening.qresync {
            login.enable_qresync(None, &mut Vec::new());
        } else if opening.condstore {
            login.enable_condstore(None, &mut Vec::new());
        }
        s.state = match opening.start {
            Start::NotAuthenticated => s.state,
            Start::Authenticated => State::Authenticated { login },
            Start::Selected { read_only } => {
                let f = &self.fixture;
                // \Recent was claimed when the fixture was made: nothing is recent.
                let next = f.inbox.uidnext;
                let view = MailboxView::new(
                    f.inbox.clone(),
                    read_only,
                    f.inbox_messages.clone(),
                    next..next,
                    f.inbox_keywords.clone(),
                );
                let mut selected = Selected::new(view);
                selected.dirty = self.stale;
                State::Selected {
                    login,
                    selected: Box::new(selected),
                }
            }
        };
        s
    }

    /// Runs one session to its end: the client writes `input`, closes its side and
    /// reads until the server closes. Returns what the server wrote (the greeting
    /// first), at most `max_output` bytes; more is [`ConverseError::TooMuchOutput`].
    /// The session must end within `within`.
    pub async fn converse(
        &mut self,
        opening: Opening,
        input: &[u8],
        max_output: usize,
        within: Duration,
    ) -> Result<Vec<u8>, ConverseError> {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let session = self.session(opening, server);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let write = async move {
            // The server may close before it has read everything: that is its right.
            let _ = to_server.write_all(input).await;
            let _ = to_server.shutdown().await;
        };
        let read = async move {
            let mut out = Vec::new();
            let mut total = 0usize;
            let mut chunk = vec![0u8; 16 * 1024];
            // Read to the end even past the limit, so the server is never stuck on a
            // full pipe.
            while let Ok(n) = from_server.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                total += n;
                if total <= max_output {
                    out.extend_from_slice(&chunk[..n]);
                }
            }
            (out, total)
        };
        let conversation = async {
            let ((), (), read) = tokio::join!(session::run(session), write, read);
            read
        };
        let (out, total) = tokio::time::timeout(within, conversation)
            .await
            .map_err(|_| ConverseError::TimedOut(within))?;
        if total > max_output {
            return Err(ConverseError::TooMuchOutput(total));
        }
        Ok(out)
    }

    /// Puts the subscriber back as created if a conversation changed anything it
    /// published on the change bus (every write a client could see is), or, when
    /// `thorough`, anything in its mailboxes or subscriptions (which are not published;
    /// two queries). Returns whether it did. Mailboxes and messages a
    /// conversation made go with the subscriber (blobs too), so the store does not grow
    /// with the number of conversations.
    pub async fn restore(&mut self, thorough: bool) -> Result<bool, String> {
        let mut changed = self.stale | self.drain_changes();
        if !changed && thorough {
            changed = mailbox_summary(self.ctx.store.as_ref(), &self.fixture.account).await?
                != self.fixture.mailboxes;
        }
        if !changed {
            return Ok(false);
        }
        let store = self.ctx.store.clone();
        store
            .remove_account(self.fixture.account.id)
            .await
            .map_err(|e| format!("removing the subscriber: {e}"))?;
        self.fixture = create_fixture(store.as_ref(), &self.credentials).await?;
        self.drain_changes();
        self.stale = false;
        Ok(true)
    }

    /// Whether the store published anything since the last call.
    fn drain_changes(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.changes.try_recv() {
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => any = true,
                Err(_) => return any,
            }
        }
    }
}

async fn mailbox_summary(
    store: &dyn Store,
    account: &Account,
) -> Result<Vec<(String, u32, u64, bool)>, String> {
    let mailboxes = store
        .list_mailboxes(account.id)
        .await
        .map_err(|e| e.to_string())?;
    let mut summary: Vec<_> = mailboxes
        .into_iter()
        .map(|m| (m.name, m.uidnext, m.highestmodseq, m.subscribed))
        .collect();
    for name in store
        .subscriptions(account.id)
        .await
        .map_err(|e| e.to_string())?
    {
        summary.push((name, 0, 0, true));
    }
    Ok(summary)
}

/// Creates the subscriber with the fixture's mailboxes and messages, all of them
/// claimed as \Recent (so sessions start alike however many came before).
async fn create_fixture(
    store: &dyn Store,
    credentials: &CredentialRecord,
) -> Result<Fixture, String> {
    let err = |what: &str, e: cpmstore_storage::Error| format!("fixture: {what}: {e}");
    let mailboxes = crate::config::AccountsConfig::default()
        .default_mailboxes
        .into_iter()
        .map(|m| NewMailbox {
            name: m.name,
            special_use: m.special_use,
            subscribed: true,
        })
        .collect();
    let account = store
        .create_account(NewAccount {
            username: USERNAME.into(),
            quota: Some(QUOTA),
            credentials: Some(credentials.clone()),
            addresses: vec!["tel:+15550000001".into()],
            mailboxes,
        })
        .await
        .map_err(|e| err("creating the subscriber", e))?;
    for (i, m) in FIXTURE.iter().enumerate() {
        let mailbox = store
            .mailbox(account.id, m.mailbox)
            .await
            .map_err(|e| err(m.mailbox, e))?;
        let message = NewMessage {
            content: m.content.to_vec(),
            flags: Flags {
                system: SystemFlags(m.system),
                keywords: m.keywords.iter().map(|k| (*k).to_owned()).collect(),
            },
            // 1994-02-10 plus a minute per message.
            internal_date: Some(760_838_400 + 60 * i as i64),
            internal_date_tz: 60,
        };
        store
            .append(account.id, mailbox.id, message)
            .await
            .map_err(|e| err("appending", e))?;
    }
    for name in ["INBOX", "Archive"] {
        let mailbox = store
            .mailbox(account.id, name)
            .await
            .map_err(|e| err(name, e))?;
        store
            .claim_recent(account.id, mailbox.id)
            .await
            .map_err(|e| err("claiming \\Recent", e))?;
    }
    let inbox = store
        .mailbox(account.id, "INBOX")
        .await
        .map_err(|e| err("INBOX", e))?;
    let inbox_messages: Vec<MessageMeta> = store
        .fetch(account.id, inbox.id, &[UidRange::all()])
        .try_collect()
        .await
        .map_err(|e| err("reading INBOX", e))?;
    let inbox_keywords = store
        .mailbox_keywords(account.id, inbox.id)
        .await
        .map_err(|e| err("INBOX keywords", e))?;
    let mailboxes = mailbox_summary(store, &account).await?;
    Ok(Fixture {
        account: Arc::new(account),
        inbox,
        inbox_messages,
        inbox_keywords,
        mailboxes,
    })
}

/// Checks what a server wrote (`output`, greeting first) in answer to a client's
/// `input`:
/// - it is a sequence of whole responses, each line ending in CRLF, with no CR or LF
///   anywhere else outside literals, and each response decodes with imap-codec (the
///   greeting as a greeting);
/// - every tagged status answers a tag the client could have sent (a word that starts
///   a line of `input`), and there are no more tagged statuses, nor continuation
///   requests, than lines in `input`;
/// - after `* BYE` comes at most one tagged status (LOGOUT's), and nothing else.
pub fn check_transcript(input: &[u8], output: &[u8]) -> Result<(), String> {
    check_transcript_except(input, output, &|_| false)
}

/// [`check_transcript`], except that responses for which `known` is true are not
/// decoded: a known finding awaiting its fix, so that a long fuzzing run can go on
/// past it. Every other rule still applies to them.
pub fn check_transcript_except(
    input: &[u8],
    output: &[u8],
    known: &dyn Fn(&[u8]) -> bool,
) -> Result<(), String> {
    let tags = client_tags(input);
    let lines_in = input.split(|&b| b == b'\n').count();
    let mut pos = 0;
    let mut tagged = 0usize;
    let mut continuations = 0usize;
    let mut after_bye: Option<usize> = None;
    let mut first = true;
    while pos < output.len() {
        let len = response_len(&output[pos..]).map_err(|e| format!("at byte {pos}: {e}"))?;
        let response = &output[pos..pos + len];
        let shown = || String::from_utf8_lossy(&response[..response.len().min(200)]).into_owned();
        if first {
            match GreetingCodec::default().decode(response) {
                Ok(([], _)) => {}
                Ok(_) | Err(GreetingDecodeError::Incomplete | GreetingDecodeError::Failed) => {
                    return Err(format!("the greeting does not decode: {:?}", shown()));
                }
            }
            first = false;
            pos += len;
            continue;
        }
        match ResponseCodec::default().decode(response) {
            Ok(([], _)) => {}
            _ if known(response) => {}
            Ok(_)
            | Err(
                ResponseDecodeError::Incomplete
                | ResponseDecodeError::LiteralFound { .. }
                | ResponseDecodeError::Failed,
            ) => {
                return Err(format!(
                    "response at byte {pos} does not decode: {:?}",
                    shown()
                ));
            }
        }
        if let Some(n) = after_bye.as_mut() {
            *n += 1;
        }
        if response.starts_with(b"* ") {
            if response[2..].starts_with(b"BYE ") && after_bye.is_none() {
                after_bye = Some(0);
            } else if after_bye.is_some() {
                return Err(format!("untagged response after BYE: {:?}", shown()));
            }
        } else if response.starts_with(b"+") {
            continuations += 1;
            if after_bye.is_some() {
                return Err(format!("continuation request after BYE: {:?}", shown()));
            }
        } else {
            let tag = response.split(|&b| b == b' ').next().unwrap_or_default();
            if !tags.contains(&tag) {
                return Err(format!("tagged status for a tag never sent: {:?}", shown()));
            }
            tagged += 1;
            if after_bye.is_some_and(|n| n > 1) {
                return Err(format!("more than one status after BYE: {:?}", shown()));
            }
        }
        pos += len;
    }
    if first {
        return Err("no greeting".into());
    }
    if tagged > lines_in {
        return Err(format!(
            "{tagged} tagged statuses for {lines_in} lines of input"
        ));
    }
    if continuations > lines_in {
        return Err(format!(
            "{continuations} continuation requests for {lines_in} lines of input"
        ));
    }
    Ok(())
}

/// The words that start the lines of `input`: every tag the client may have sent.
fn client_tags(input: &[u8]) -> Vec<&[u8]> {
    let mut tags: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .map(|line| {
            line.split(|&b| b == b' ' || b == b'\r')
                .next()
                .unwrap_or_default()
        })
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// The length of the response at the start of `out`: lines up to a CRLF not
/// preceded by a literal announcement `{n}`, with the literals' bytes.
fn response_len(out: &[u8]) -> Result<usize, String> {
    let mut pos = 0;
    loop {
        let line = &out[pos..];
        let Some(lf) = line.iter().position(|&b| b == b'\n') else {
            return Err("the output ends without CRLF".into());
        };
        if lf == 0 || line[lf - 1] != b'\r' {
            return Err(format!(
                "bare LF in {:?}",
                String::from_utf8_lossy(&line[..lf.min(200)])
            ));
        }
        let text = &line[..lf - 1];
        if text.contains(&b'\r') {
            return Err(format!(
                "bare CR in {:?}",
                String::from_utf8_lossy(&text[..text.len().min(200)])
            ));
        }
        pos += lf + 1;
        match literal_length(text) {
            Some(n) => {
                if out.len() - pos < n {
                    return Err(format!("literal of {n} bytes cut short"));
                }
                pos += n;
            }
            None => return Ok(pos),
        }
    }
}

/// The length a line announces with a trailing `{n}` (or `~{n}`), if it does.
fn literal_length(text: &[u8]) -> Option<usize> {
    let body = text.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn harness() -> (tempfile::TempDir, Harness) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = cpmstore_storage::open(&url, &Default::default())
            .await
            .expect("a store");
        let harness = Harness::new(store, &LimitsConfig::default())
            .await
            .expect("a harness");
        (dir, harness)
    }

    const WITHIN: Duration = Duration::from_secs(10);
    const MAX_OUTPUT: usize = 1 << 20;

    #[tokio::test]
    async fn a_session_over_a_pipe_logs_in_selects_and_fetches() {
        let (_dir, mut h) = harness().await;
        let input = format!(
            "a CAPABILITY\r\nb LOGIN {USERNAME} {PASSWORD}\r\nc SELECT INBOX\r\n\
             d FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\ne STARTTLS\r\nf LOGOUT\r\n"
        );
        let out = h
            .converse(
                Opening::new(Start::NotAuthenticated),
                input.as_bytes(),
                MAX_OUTPUT,
                WITHIN,
            )
            .await
            .expect("the session ends");
        check_transcript(input.as_bytes(), &out).expect("a well-formed transcript");
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("AUTH=PLAIN"), "{out}");
        assert!(!out.contains("STARTTLS"), "{out}");
        assert!(out.contains("b OK"), "{out}");
        assert!(out.contains("* 3 EXISTS"), "{out}");
        assert!(out.contains("Subject: Grüße aus Köln"), "{out}");
        assert!(
            out.contains("e BAD"),
            "STARTTLS is refused on the pipe: {out}"
        );
        assert!(out.ends_with("f OK Logout completed.\r\n"), "{out}");
    }

    #[tokio::test]
    async fn sessions_start_in_the_state_asked_for_and_end_when_the_client_closes() {
        let (_dir, mut h) = harness().await;
        let input = b"x FETCH 2 (UID FLAGS MODSEQ)\r\n";
        let out = h
            .converse(Opening::from_byte(2 | 4), input, MAX_OUTPUT, WITHIN)
            .await
            .expect("the session ends");
        check_transcript(input, &out).expect("a well-formed transcript");
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.contains("* 2 FETCH (UID 2 FLAGS (\\Answered \\Flagged $Important) MODSEQ ("),
            "{out}"
        );
        assert!(out.ends_with("x OK Fetch completed.\r\n"), "{out}");
    }

    #[tokio::test]
    async fn restore_undoes_what_a_conversation_changed() {
        let (_dir, mut h) = harness().await;
        assert!(!h.restore(true).await.expect("restored"));
        let before = h.account().id;
        let input = b"a CREATE Scratch\r\nb APPEND INBOX {5+}\r\nhello\r\nc DELETE Sent\r\n";
        let out = h
            .converse(Opening::from_byte(1), input, MAX_OUTPUT, WITHIN)
            .await
            .expect("the session ends");
        check_transcript(input, &out).expect("a well-formed transcript");
        assert!(h.restore(true).await.expect("restored"));
        assert_ne!(h.account().id, before);
        let names: Vec<String> = h
            .ctx()
            .store
            .list_mailboxes(h.account().id)
            .await
            .expect("mailboxes")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(names.contains(&"Sent".to_string()) && !names.contains(&"Scratch".to_string()));
        let usage = h
            .ctx()
            .store
            .quota_usage(h.account().id)
            .await
            .expect("usage");
        let fixture: usize = FIXTURE.iter().map(|m| m.content.len()).sum();
        assert_eq!(usage, fixture as u64);
    }

    #[tokio::test]
    async fn a_selected_session_after_an_unrestored_change_catches_up() {
        let (_dir, mut h) = harness().await;
        let input = b"a STORE 1 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n";
        let out = h
            .converse(Opening::from_byte(2), input, MAX_OUTPUT, WITHIN)
            .await
            .expect("the session ends");
        check_transcript(input, &out).expect("a well-formed transcript");
        // Not restored: the next session's view (the fixture's) is behind the store.
        let input = b"c NOOP\r\n";
        let out = h
            .converse(Opening::from_byte(2), input, MAX_OUTPUT, WITHIN)
            .await
            .expect("the session ends");
        check_transcript(input, &out).expect("a well-formed transcript");
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("* 1 EXPUNGE\r\nc OK"), "{out}");
        assert!(h.restore(false).await.expect("restored"));
    }

    #[test]
    fn transcripts_that_break_the_rules_are_refused() {
        let greeting = "* OK [CAPABILITY IMAP4rev1] ready\r\n";
        let input = b"a NOOP\r\nb LOGOUT\r\n";
        let good = format!("{greeting}a OK NOOP completed.\r\n* BYE bye\r\nb OK done\r\n");
        check_transcript(input, good.as_bytes()).expect("good");
        let literal = format!("{greeting}* 1 FETCH (BODY[] {{4}}\r\na\r\nb)\r\na OK done\r\n");
        check_transcript(input, literal.as_bytes()).expect("a literal may hold CRLF");
        for bad in [
            format!("{greeting}a OK NOOP completed.\n"),
            format!("{greeting}a OK NOOP\rcompleted.\r\n"),
            format!("{greeting}c OK NOOP completed.\r\n"),
            format!("{greeting}a OK NOOP completed."),
            format!("{greeting}* BYE bye\r\n* 1 EXISTS\r\n"),
            format!("{greeting}* 1 FETCH (BODY[] {{9}}\r\nab)\r\n"),
            format!("{greeting}a WHAT\r\n"),
            "a OK no greeting\r\n".to_string(),
        ] {
            assert!(check_transcript(input, bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    /// The fuzz target's seeds, replayed: each is the opening byte then the client's
    /// bytes (`server/fuzz/corpus/imap_session`).
    #[tokio::test]
    async fn the_fuzz_seeds_replay_cleanly() {
        let (_dir, mut h) = harness().await;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/imap_session");
        // Only the committed seeds: a fuzzing run adds its own files beside them.
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .expect("the seed corpus")
            .map(|e| e.expect("an entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            })
            .collect();
        seeds.sort();
        assert!(seeds.len() >= 10, "seeds in {}", dir.display());
        for path in seeds {
            let data = std::fs::read(&path).expect("a seed");
            let Some((&first, input)) = data.split_first() else {
                continue;
            };
            let input = &h.with_uidvalidity(input);
            let out = h
                .converse(Opening::from_byte(first), input, MAX_OUTPUT, WITHIN)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Err(e) = check_transcript(input, &out) {
                panic!(
                    "{}: {e}\n--- output:\n{}",
                    path.display(),
                    String::from_utf8_lossy(&out)
                );
            }
            h.restore(true).await.expect("restored");
        }
    }
}
