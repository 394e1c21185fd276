//! OTA-SIP push ingress (INTERFACES.md 6.4): `MESSAGE` over UDP and TCP.
//!
//! # Layout
//! - [`message`]: parsing, stream framing, responses (no I/O).
//! - this file: what a request gets ([`SipIngress::answer`]) and the UDP and TCP loops.
//!
//! A `MESSAGE` whose Request-URI is a subscriber address is a push. Its origin is the
//! `P-Asserted-Identity` when the peer is in `sip.trusted_peers`; from anyone else the
//! header is ignored and the push has no verified origin (accepted only for a
//! subscriber with no whitelist in any context). An `X-Wap-Push-ProvURL` header field
//! names the provisioning context, judged as over HTTP: a context the subscriber has
//! no whitelist for, once it has one in any context, is rejected
//! ([`crate::push::decide`]). Answers: 200 delivered, 403 rejected (or subscriber
//! disabled), 404 unknown subscriber, 400 malformed, 413 too large, 405 with `Allow`
//! for methods other than MESSAGE and OPTIONS, 200 for OPTIONS; ACK gets nothing.
//!
//! Over UDP a retransmitted request (same Via branch, sent-by and method, RFC 3261
//! 17.2.3) gets the answer already sent, or nothing while the first copy is still being
//! handled, so a push is never stored twice. Over TCP messages are framed by
//! `Content-Length`; a connection is closed after an idle minute or when a message
//! takes too long to arrive.

pub mod message;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::IpNet;
use crate::push::ingress::{Ingress, Outcome, PushRequest, PushResult, PushService};
use crate::push::{Origin, ip};
use message::{Message, ParseError, Request};

/// What `Allow` lists.
pub const ALLOW: &str = "MESSAGE, OPTIONS";

/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 65_535;

/// How long a TCP connection may stay idle between messages.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a message may take to arrive whole once it started, and a response to be
/// written.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a UDP answer is kept for retransmissions (64*T1, RFC 3261 17.2.1 Timer J).
const TRANSACTION_LIFETIME: Duration = Duration::from_secs(32);

/// Most UDP requests handled at once; more are dropped (the sender retransmits).
const MAX_UDP_IN_FLIGHT: usize = 256;

/// The SIP ingress: shared by the UDP and TCP loops.
pub struct SipIngress {
    push: Arc<PushService>,
    trusted_peers: Vec<IpNet>,
    max_body: usize,
    transactions: Mutex<Transactions>,
}

/// What to send back for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response bytes; `None` sends nothing (ACK, responses).
    pub bytes: Option<Vec<u8>>,
    /// The status code sent, for logs and tests.
    pub code: Option<u16>,
}

impl SipIngress {
    /// An ingress over a push service; trusted peers and limits from its config.
    pub fn new(push: Arc<PushService>) -> SipIngress {
        let config = push.config();
        SipIngress {
            trusted_peers: config.sip.trusted_peers.clone(),
            max_body: config.limits.http_max_body_bytes,
            push,
            transactions: Mutex::new(Transactions::default()),
        }
    }

    /// Whether `P-Asserted-Identity` from `peer` is believed.
    fn trusted(&self, peer: IpAddr) -> bool {
        self.trusted_peers.iter().any(|net| net.contains(peer))
    }

    /// The answer to one message from `peer`.
    pub async fn answer(&self, input: &[u8], peer: SocketAddr) -> Answer {
        let request = match message::parse(input, self.max_body) {
            Ok(Message::Request(request)) => request,
            Ok(Message::Response) => return Answer::none(),
            Err(e) => return self.unparsable(input, peer, &e),
        };
        if request.method == "ACK" {
            return Answer::none();
        }
        if let Err(e) = request.check_mandatory() {
            return self.refuse(&request, peer, 400, Outcome::Malformed, &e.to_string());
        }
        match request.method.as_str() {
            "MESSAGE" => self.message(&request, peer).await,
            "OPTIONS" => Answer::code(
                200,
                message::response(
                    &request,
                    200,
                    peer,
                    &to_tag(),
                    &[("Allow", ALLOW), ("Accept", "*/*")],
                ),
            ),
            _ => Answer::code(
                405,
                message::response(&request, 405, peer, &to_tag(), &[("Allow", ALLOW)]),
            ),
        }
    }

    async fn message(&self, request: &Request, peer: SocketAddr) -> Answer {
        let peer_ip = ip::canonical(peer.ip());
        let pai: Vec<String> = request
            .all("P-Asserted-Identity")
            .map(str::to_owned)
            .collect();
        let origin = if pai.is_empty() {
            Origin::Unverified
        } else if self.trusted(peer_ip) {
            Origin::Sip { pai }
        } else {
            tracing::debug!(%peer, "P-Asserted-Identity from a peer not in sip.trusted_peers: ignored");
            Origin::Unverified
        };
        let address = subscriber_address(&request.uri);
        let result = self
            .push
            .push(PushRequest {
                ingress: Ingress::Sip,
                peer,
                address: &address,
                origin,
                context: request.header("X-Wap-Push-ProvURL"),
                content_type: request.header("Content-Type"),
                application_id: request.header("X-Wap-Application-Id"),
                body: &request.body,
            })
            .await;
        let code = match result {
            PushResult::Delivered(_) => 200,
            PushResult::Rejected | PushResult::Disabled => 403,
            PushResult::UnknownSubscriber => 404,
            PushResult::Malformed(_) => 400,
            PushResult::OverQuota => 480,
            PushResult::Failed => 500,
        };
        Answer::code(code, message::response(request, code, peer, &to_tag(), &[]))
    }

    fn refuse(
        &self,
        request: &Request,
        peer: SocketAddr,
        code: u16,
        outcome: Outcome,
        why: &str,
    ) -> Answer {
        self.push
            .refused(Ingress::Sip, peer, &request.uri, outcome, why);
        Answer::code(code, message::response(request, code, peer, &to_tag(), &[]))
    }

    /// A message that did not parse: answered when its headers can be read at all
    /// (413 and 505 always can; a malformed one when it looks like a request).
    fn unparsable(&self, input: &[u8], peer: SocketAddr, error: &ParseError) -> Answer {
        let (code, outcome) = match error {
            ParseError::TooLarge { .. } => (413, Outcome::TooLarge),
            ParseError::Version(_) => (505, Outcome::Malformed),
            ParseError::Malformed(_) => (400, Outcome::Malformed),
        };
        self.push
            .refused(Ingress::Sip, peer, "", outcome, &error.to_string());
        match salvage(input) {
            Some(request) => Answer::code(
                code,
                message::response(&request, code, peer, &to_tag(), &[]),
            ),
            None => Answer::none(),
        }
    }

    /// The UDP answer for `input`, through the transaction table: a retransmission gets
    /// the first answer again (or nothing while the first is in progress).
    async fn answer_udp(&self, input: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let key = match message::parse(input, self.max_body) {
            Ok(Message::Request(request)) if request.method != "ACK" => transaction_key(&request),
            _ => None,
        };
        let Some(key) = key else {
            return self.answer(input, peer).await.bytes;
        };
        {
            let mut table = self.transactions.lock().ok()?;
            table.expire();
            match table.entries.get(&key) {
                Some((_, Some(bytes))) => return Some(bytes.clone()),
                Some((_, None)) => return None,
                None => {
                    table.entries.insert(key.clone(), (Instant::now(), None));
                }
            }
        }
        let answer = self.answer(input, peer).await.bytes;
        if let Ok(mut table) = self.transactions.lock() {
            table.entries.insert(key, (Instant::now(), answer.clone()));
        }
        answer
    }
}

impl Answer {
    fn none() -> Answer {
        Answer {
            bytes: None,
            code: None,
        }
    }

    fn code(code: u16, bytes: Vec<u8>) -> Answer {
        Answer {
            bytes: Some(bytes),
            code: Some(code),
        }
    }
}

/// Server transactions seen over UDP: key → (when, answer once sent).
#[derive(Default)]
struct Transactions {
    entries: HashMap<String, (Instant, Option<Vec<u8>>)>,
}

impl Transactions {
    fn expire(&mut self) {
        self.entries
            .retain(|_, (at, _)| at.elapsed() < TRANSACTION_LIFETIME);
    }
}

/// The RFC 3261 17.2.3 key of a request: top Via branch (with the magic cookie),
/// sent-by and method; `None` for an RFC 2543 branch (no retransmission matching).
fn transaction_key(request: &Request) -> Option<String> {
    let top = request.header("Via")?.split(',').next()?.trim();
    let mut params = top.split(';');
    let sent_by = params
        .next()?
        .split_whitespace()
        .nth(1)?
        .to_ascii_lowercase();
    let branch = params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| value.trim().to_owned())
    })?;
    branch
        .starts_with("z9hG4bK")
        .then(|| format!("{branch} {sent_by} {}", request.method))
}

/// The subscriber address of a Request-URI: the URI without its parameters and
/// headers (`sip:alice@ims.example.net;transport=udp` → `sip:alice@ims.example.net`).
fn subscriber_address(uri: &str) -> String {
    let lower = uri.to_ascii_lowercase();
    let end = if lower.starts_with("tel:") {
        uri.find(';').unwrap_or(uri.len())
    } else {
        // In sip/sips URIs, ';' and '?' after the host start parameters and headers;
        // the user part may hold ';' too, so look after '@'.
        let host_start = uri.rfind('@').map_or(0, |at| at + 1);
        uri[host_start..]
            .find([';', '?'])
            .map_or(uri.len(), |i| host_start + i)
    };
    uri[..end].to_owned()
}

/// A fresh To tag.
fn to_tag() -> String {
    let mut bytes = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The header fields of a request that did not parse whole (for echoing them in a 400,
/// 413 or 505), when its head can be read.
fn salvage(input: &[u8]) -> Option<Request> {
    let end = input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(input.len().min(message::MAX_HEAD_BYTES));
    let head = String::from_utf8_lossy(input.get(..end)?);
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let method = start.split(' ').next()?.to_owned();
    if start.starts_with("SIP/") || method.is_empty() {
        return None;
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = message::canonical_name(name.trim());
            ["Via", "From", "To", "Call-ID", "CSeq"]
                .contains(&name.as_str())
                .then(|| (name, value.trim().replace(|c: char| c.is_control(), " ")))
        })
        .collect();
    let request = Request {
        method,
        uri: String::new(),
        headers,
        body: Vec::new(),
    };
    // Without Via there is no one to answer to (RFC 3261 8.2.6: a response copies it).
    request.header("Via")?;
    Some(request)
}

/// Binds the SIP listeners (UDP and TCP on every `sip.listen` address, logging
/// `listening` with `listener` `sip-udp` / `sip-tcp`) and spawns their loops.
pub async fn spawn(
    push: Arc<PushService>,
    addrs: &[SocketAddr],
    max_connections: usize,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, crate::net::ServeError> {
    let ingress = Arc::new(SipIngress::new(push));
    let mut tasks = Vec::new();
    for addr in addrs {
        let (udp, tcp) = bind_pair(*addr).await?;
        let bind_error = |source| crate::net::ServeError::Bind {
            addr: *addr,
            source,
        };
        let udp_local = udp.local_addr().map_err(bind_error)?;
        let tcp_local = tcp.local_addr().map_err(bind_error)?;
        tracing::info!(listener = "sip-udp", addr = %udp_local, "listening");
        tracing::info!(listener = "sip-tcp", addr = %tcp_local, "listening");
        tasks.push(tokio::spawn(serve_udp(
            Arc::new(udp),
            ingress.clone(),
            tracker.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(serve_tcp(
            tcp,
            ingress.clone(),
            max_connections,
            tracker.clone(),
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}

/// A UDP socket and a TCP listener on the same address and port. For port 0, the
/// port UDP got is tried for TCP, a few times over if another program holds it.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), crate::net::ServeError> {
    let bind_error = |source| crate::net::ServeError::Bind { addr, source };
    let attempts = if addr.port() == 0 { 10 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr).await.map_err(bind_error)?;
        let local = udp.local_addr().map_err(bind_error)?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(bind_error(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no port free for UDP and TCP",
        )
    })))
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    ingress: Arc<SipIngress>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_UDP_IN_FLIGHT));
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buffer) => r,
            _ = shutdown.cancelled() => return,
        };
        let (len, peer) = match received {
            Ok(x) => x,
            Err(e) => {
                // ICMP port unreachable from an earlier send and the like.
                tracing::debug!(listener = "sip-udp", error = %e, "receive failed");
                continue;
            }
        };
        let datagram = buffer[..len].to_vec();
        if datagram.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keep-alive
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tracing::warn!(%peer, listener = "sip-udp", "too many requests in flight: dropped");
            continue;
        };
        let socket = socket.clone();
        let ingress = ingress.clone();
        tracker.spawn(async move {
            let _permit = permit;
            if let Some(answer) = ingress.answer_udp(&datagram, peer).await
                && let Err(e) = socket.send_to(&answer, peer).await
            {
                tracing::debug!(%peer, listener = "sip-udp", error = %e, "send failed");
            }
        });
    }
}

async fn serve_tcp(
    listener: TcpListener,
    ingress: Arc<SipIngress>,
    max_connections: usize,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let Some((tcp, peer)) = crate::net::accept(&listener, "sip-tcp", &shutdown).await else {
            return;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::info!(%peer, listener = "sip-tcp", "connection refused: limit reached");
            continue;
        };
        let ingress = ingress.clone();
        let shutdown = shutdown.clone();
        let open = ingress.push.metrics().connection_opened("sip-tcp");
        tracker.spawn(async move {
            let _slot = slot;
            let _open = open;
            serve_tcp_connection(tcp, peer, &ingress, shutdown).await;
        });
    }
}

/// Reads `Content-Length`-framed messages and answers each, until the peer closes, a
/// timeout passes, the stream breaks, or the server shuts down.
async fn serve_tcp_connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    ingress: &SipIngress,
    shutdown: CancellationToken,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut started: Option<Instant> = None;
    loop {
        // Keep-alive CRLFs between messages.
        let blank = buffer
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        buffer.drain(..blank);
        match message::frame(&buffer, ingress.max_body) {
            Ok(Some((head, body))) => {
                let whole: Vec<u8> = buffer.drain(..head + body).collect();
                started = None;
                let answer = ingress.answer(&whole, peer).await;
                if let Some(bytes) = answer.bytes {
                    let written =
                        tokio::time::timeout(MESSAGE_TIMEOUT, tcp.write_all(&bytes)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        return;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                // The stream cannot be resynchronised: answer if possible, then close.
                let answer = ingress.unparsable(&buffer, peer, &e);
                if let Some(bytes) = answer.bytes {
                    let _ = tokio::time::timeout(MESSAGE_TIMEOUT, tcp.write_all(&bytes)).await;
                }
                let _ = tcp.shutdown().await;
                return;
            }
        }
        if !buffer.is_empty() && started.is_none() {
            started = Some(Instant::now());
        }
        let wait = match started {
            Some(at) => MESSAGE_TIMEOUT.saturating_sub(at.elapsed()),
            None => IDLE_TIMEOUT,
        };
        let read = tokio::select! {
            r = tokio::time::timeout(wait, tcp.read(&mut chunk)) => r,
            _ = shutdown.cancelled(), if buffer.is_empty() => return,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
            Err(_) => {
                tracing::debug!(%peer, listener = "sip-tcp", "connection timed out");
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn request_uri_to_address() {
        for (uri, address) in [
            ("sip:alice@ims.example.net", "sip:alice@ims.example.net"),
            (
                "sip:alice@ims.example.net;transport=udp",
                "sip:alice@ims.example.net",
            ),
            (
                "sip:alice@ims.example.net:5060?subject=x",
                "sip:alice@ims.example.net:5060",
            ),
            ("sip:a;b@ims.example.net;lr", "sip:a;b@ims.example.net"),
            ("tel:+358401234567;phone-context=x", "tel:+358401234567"),
            ("TEL:+358401234567", "TEL:+358401234567"),
        ] {
            assert_eq!(subscriber_address(uri), address, "{uri}");
        }
    }

    #[test]
    fn transaction_keys() {
        let request = |via: &str, method: &str| Request {
            method: method.into(),
            uri: "sip:a@b".into(),
            headers: vec![("Via".into(), via.into())],
            body: vec![],
        };
        let a = transaction_key(&request("SIP/2.0/UDP h:5060;branch=z9hG4bK1", "MESSAGE"));
        assert_eq!(a.as_deref(), Some("z9hG4bK1 h:5060 MESSAGE"));
        assert_ne!(
            a,
            transaction_key(&request("SIP/2.0/UDP h:5060;branch=z9hG4bK1", "OPTIONS"))
        );
        assert_eq!(
            transaction_key(&request("SIP/2.0/UDP h;branch=1", "MESSAGE")),
            None
        );
        assert_eq!(transaction_key(&request("SIP/2.0/UDP h", "MESSAGE")), None);
    }

    #[test]
    fn salvaged_headers() {
        let input = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:x@y>;tag=1\r\nBroken\r\n\r\n";
        let request = salvage(input).unwrap();
        assert_eq!(request.header("From"), Some("<sip:x@y>;tag=1"));
        assert!(salvage(b"MESSAGE sip:a@b SIP/2.0\r\nf: x\r\n\r\n").is_none());
        assert!(salvage(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
    }
}
