//! Guessing protection: failed logins counted per client IP, per (IP, account) and per
//! account, within `auth.failure_window_secs`.
//!
//! The policy, in the manner of Dovecot's auth penalty and Stalwart's fail2ban:
//!
//! - **(IP, account)**: after `max_failures` failures each further attempt waits a
//!   growing delay (`failure_delay_ms`, doubling, at most `max_failure_delay_ms`)
//!   before it is checked; at `2 × max_failures` the pair is locked for
//!   `lockout_secs`. This is what stops guessing one account's password.
//! - **IP**: the same, with thresholds [`IP_FACTOR`] times higher (a NAT hides many
//!   honest users): stops one source spraying many accounts.
//! - **Account** (all sources together): never locks, so an attacker cannot lock the
//!   real user out; past `IP_FACTOR × max_failures` it only delays *failed* answers, so
//!   a guesser that waits for its answers is slowed while the real user's successful
//!   login from elsewhere is not.
//!
//! A locked attempt is not checked at all: it waits `max_failure_delay_ms` and gets the
//! same `NO [AUTHENTICATIONFAILED]` as any failure. Attempts still running count
//! against the thresholds (as if they were failures until they end), so opening many
//! connections at once buys no extra guesses.
//!
//! Memory is bounded: entries expire with their window (or lock), and at most
//! [`MAX_ENTRIES`] keys per table are tracked; beyond that new keys go untracked until
//! old ones expire (with a warning), rather than the server growing without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::AuthConfig;

/// How much higher the per-IP thresholds are than the per-(IP, account) ones.
pub const IP_FACTOR: u32 = 4;

/// Most keys tracked per table.
pub const MAX_ENTRIES: usize = 100_000;

/// Longest username kept as a key (longer ones are cut; no real username is that long).
const MAX_KEY_BYTES: usize = 256;

/// Purge expired entries every this many updates.
const PURGE_EVERY: u64 = 4096;

/// The throttle's settings (from `[auth]`).
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl From<&AuthConfig> for ThrottleConfig {
    fn from(a: &AuthConfig) -> Self {
        ThrottleConfig {
            max_failures: a.max_failures.max(1),
            window: Duration::from_secs(a.failure_window_secs),
            lockout: Duration::from_secs(a.lockout_secs),
            base_delay: Duration::from_millis(a.failure_delay_ms),
            max_delay: Duration::from_millis(a.max_failure_delay_ms),
        }
    }
}

/// A client address as the throttle sees it: IPv4 as is (IPv4-mapped IPv6 too), IPv6
/// by its /64, since one host usually holds a whole /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let masked = u128::from(v6) & (u128::MAX << 64);
                Source(IpAddr::V6(masked.into()))
            }
            v4 => Source(v4),
        }
    }
}

/// What the throttle says about an attempt about to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check it, after waiting this long.
    Open(Duration),
    /// Do not check it: wait this long, then fail it.
    Locked(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    /// Attempts admitted and not yet finished.
    pending: u32,
    locked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            window_start: now,
            failures: 0,
            pending: 0,
            locked_until: None,
        }
    }

    /// Forgets what is older than the window or a lock that has run out.
    fn refresh(&mut self, now: Instant, window: Duration) {
        if let Some(until) = self.locked_until {
            if now < until {
                return;
            }
            self.locked_until = None;
            self.failures = 0;
            self.window_start = now;
        }
        if now.duration_since(self.window_start) >= window {
            self.failures = 0;
            self.window_start = now;
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    fn expired(&self, now: Instant, window: Duration) -> bool {
        self.pending == 0 && !self.locked(now) && now.duration_since(self.window_start) >= window
    }

    /// What the next attempt is judged by: failures, plus the attempts in flight once
    /// there has been a failure in the window. A clean record lets a client open many
    /// connections at once (mail clients do); once guessing has started, parallel
    /// connections buy no extra guesses. The first wave is bounded by
    /// `limits.max_connections_per_ip`.
    fn load(&self) -> u32 {
        if self.failures == 0 {
            return 0;
        }
        self.failures.saturating_add(self.pending)
    }
}

struct Table<K> {
    map: HashMap<K, Entry>,
    /// Whether the "table full" warning was given since the table last had room.
    warned: bool,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            map: HashMap::new(),
            warned: false,
        }
    }
}

impl<K: Hash + Eq + Clone> Table<K> {
    /// The entry for `key`, created if there is room.
    fn entry(&mut self, key: &K, now: Instant, window: Duration, name: &str) -> Option<&mut Entry> {
        if !self.map.contains_key(key) {
            if self.map.len() >= MAX_ENTRIES {
                self.map.retain(|_, e| !e.expired(now, window));
            }
            if self.map.len() >= MAX_ENTRIES {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        table = name,
                        entries = self.map.len(),
                        "login throttle table full: new sources are not tracked until old ones expire"
                    );
                }
                return None;
            }
            self.warned = false;
            self.map.insert(key.clone(), Entry::new(now));
        }
        let entry = self.map.get_mut(key)?;
        entry.refresh(now, window);
        Some(entry)
    }

    fn purge(&mut self, now: Instant, window: Duration) {
        self.map.retain(|_, e| !e.expired(now, window));
    }
}

#[derive(Default)]
struct State {
    ip: Table<Source>,
    pair: Table<(Source, String)>,
    account: Table<String>,
    updates: u64,
}

/// Failed-login bookkeeping shared by every session of the process.
pub struct Throttle {
    config: ThrottleConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An admitted attempt. Report how it ended with [`Ticket::failed`] or
/// [`Ticket::succeeded`]; dropped unreported (the client went away before the check
/// finished) it only stops counting as in flight.
#[must_use = "report the outcome of the attempt"]
pub struct Ticket {
    throttle: Arc<Throttle>,
    source: Source,
    account: String,
    gate: Gate,
    open: bool,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("source", &self.source)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// What the throttle said when the attempt was admitted.
    pub fn gate(&self) -> Gate {
        self.gate
    }

    /// The attempt failed (wrong password, unknown user, bad proof). Returns how long
    /// to wait before answering (the per-account delay).
    pub fn failed(mut self) -> Duration {
        self.open = false;
        self.throttle.finish(self.source, &self.account, false)
    }

    /// The attempt succeeded: the (IP, account) failures are forgotten. The IP's are
    /// not, so an attacker's own valid account does not reset its IP's count.
    pub fn succeeded(mut self) {
        self.open = false;
        self.throttle.finish(self.source, &self.account, true);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.open {
            self.throttle.release(self.source, &self.account);
        }
    }
}

/// `base × 2^(over − 1)`, at most `max`; zero when `over` is zero.
fn backoff(over: u32, base: Duration, max: Duration) -> Duration {
    if over == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (over - 1).min(20);
    base.saturating_mul(factor).min(max)
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Arc<Throttle> {
        Arc::new(Throttle {
            config,
            state: Mutex::new(State::default()),
        })
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// The username as a key: lowercased (so case variants share one count) and cut.
    fn account_key(username: &str) -> String {
        let mut key = username.to_lowercase();
        if key.len() > MAX_KEY_BYTES {
            let mut cut = MAX_KEY_BYTES;
            while !key.is_char_boundary(cut) {
                cut -= 1;
            }
            key.truncate(cut);
        }
        key
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, nothing inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits an attempt by `ip` on `username` and says whether (and after what delay)
    /// it may be checked.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, username: &str) -> Ticket {
        let source = Source::from(ip);
        let account = Self::account_key(username);
        let c = self.config;
        let now = Instant::now();
        let mut guard = self.lock_state();
        let state = &mut *guard;
        state.updates += 1;
        if state.updates >= PURGE_EVERY {
            state.updates = 0;
            state.ip.purge(now, c.window);
            state.pair.purge(now, c.window);
            state.account.purge(now, c.window);
        }

        let pair_max = c.max_failures;
        let ip_max = c.max_failures.saturating_mul(IP_FACTOR);
        let mut locked = false;
        let mut delay = Duration::ZERO;
        let pair_key = (source, account.clone());
        for (entry, max) in [
            (
                state.pair.entry(&pair_key, now, c.window, "ip_account"),
                pair_max,
            ),
            (state.ip.entry(&source, now, c.window, "ip"), ip_max),
        ] {
            let Some(entry) = entry else { continue };
            let load = entry.load();
            locked |= entry.locked(now) || load >= max.saturating_mul(2);
            // The attempt after `max` failures is the first to wait.
            delay = delay.max(backoff(
                load.saturating_add(1).saturating_sub(max),
                c.base_delay,
                c.max_delay,
            ));
            entry.pending = entry.pending.saturating_add(1);
        }
        drop(guard);
        let gate = if locked {
            Gate::Locked(c.max_delay)
        } else {
            Gate::Open(delay)
        };
        Ticket {
            throttle: self.clone(),
            source,
            account,
            gate,
            open: true,
        }
    }

    /// Ends an attempt; returns the delay before a failure's answer.
    fn finish(&self, source: Source, account: &str, success: bool) -> Duration {
        let c = self.config;
        let now = Instant::now();
        let mut guard = self.lock_state();
        let state = &mut *guard;
        let pair_key = (source, account.to_owned());
        let mut post = Duration::ZERO;
        for (entry, max, is_pair) in [
            (
                state.pair.entry(&pair_key, now, c.window, "ip_account"),
                c.max_failures,
                true,
            ),
            (
                state.ip.entry(&source, now, c.window, "ip"),
                c.max_failures.saturating_mul(IP_FACTOR),
                false,
            ),
        ] {
            let Some(entry) = entry else { continue };
            entry.pending = entry.pending.saturating_sub(1);
            if success {
                if is_pair {
                    entry.failures = 0;
                }
                continue;
            }
            entry.failures = entry.failures.saturating_add(1);
            if entry.failures >= max.saturating_mul(2) && !entry.locked(now) {
                entry.locked_until = Some(now + c.lockout);
                tracing::warn!(
                    ip = %source.0,
                    scope = if is_pair { "ip_account" } else { "ip" },
                    failures = entry.failures,
                    lockout_secs = c.lockout.as_secs(),
                    "login lockout"
                );
            }
        }
        if !success
            && let Some(entry) = state
                .account
                .entry(&account.to_owned(), now, c.window, "account")
        {
            entry.failures = entry.failures.saturating_add(1);
            let max = c.max_failures.saturating_mul(IP_FACTOR);
            post = backoff(
                entry.failures.saturating_sub(max),
                c.base_delay,
                c.max_delay,
            );
        }
        post
    }

    /// An attempt that ended without an outcome.
    fn release(&self, source: Source, account: &str) {
        let c = self.config;
        let now = Instant::now();
        let mut guard = self.lock_state();
        let state = &mut *guard;
        let pair_key = (source, account.to_owned());
        if let Some(entry) = state.pair.entry(&pair_key, now, c.window, "ip_account") {
            entry.pending = entry.pending.saturating_sub(1);
        }
        if let Some(entry) = state.ip.entry(&source, now, c.window, "ip") {
            entry.pending = entry.pending.saturating_sub(1);
        }
    }

    /// Whether `ip` (as a whole, or for `username`) is locked out now. For tests and
    /// diagnostics.
    pub fn is_locked(&self, ip: IpAddr, username: &str) -> bool {
        let source = Source::from(ip);
        let now = Instant::now();
        let state = self.lock_state();
        let pair = (source, Self::account_key(username));
        state.ip.map.get(&source).is_some_and(|e| e.locked(now))
            || state.pair.map.get(&pair).is_some_and(|e| e.locked(now))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(120),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn backoff_grows_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        assert_eq!(backoff(0, base, max), Duration::ZERO);
        assert_eq!(backoff(1, base, max), base);
        assert_eq!(backoff(2, base, max), base * 2);
        assert_eq!(backoff(3, base, max), base * 4);
        assert_eq!(backoff(5, base, max), max);
        assert_eq!(backoff(u32::MAX, base, max), max);
    }

    #[test]
    fn sources() {
        assert_eq!(Source::from(ip("10.1.2.3")), Source(ip("10.1.2.3")));
        assert_eq!(Source::from(ip("::ffff:10.1.2.3")), Source(ip("10.1.2.3")));
        assert_eq!(
            Source::from(ip("2001:db8:1:2:aaaa::1")),
            Source::from(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Source::from(ip("2001:db8:1:2::1")),
            Source::from(ip("2001:db8:1:3::1"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pair_delays_then_locks_then_expires() {
        let t = Throttle::new(config());
        let attacker = ip("192.0.2.1");
        let mut gates = Vec::new();
        for _ in 0..8 {
            let ticket = t.admit(attacker, "alice");
            gates.push(ticket.gate());
            if let Gate::Open(_) = ticket.gate() {
                let _ = ticket.failed();
            }
        }
        let ms = |n| Gate::Open(Duration::from_millis(n));
        assert_eq!(
            gates,
            vec![
                ms(0),
                ms(0),
                ms(0),
                ms(100),
                ms(200),
                ms(400),
                Gate::Locked(Duration::from_millis(1000)),
                Gate::Locked(Duration::from_millis(1000)),
            ]
        );
        assert!(
            t.is_locked(attacker, "ALICE"),
            "case variants share the count"
        );

        // Another account from the same IP is not locked (the IP's own threshold is
        // higher), nor is the same account from another IP.
        assert_eq!(t.admit(attacker, "bob").gate(), Gate::Open(Duration::ZERO));
        let legit = t.admit(ip("198.51.100.7"), "alice");
        assert_eq!(legit.gate(), Gate::Open(Duration::ZERO));
        legit.succeeded();

        // The lock runs out.
        tokio::time::advance(Duration::from_secs(121)).await;
        assert!(!t.is_locked(attacker, "alice"));
        assert_eq!(
            t.admit(attacker, "alice").gate(),
            Gate::Open(Duration::ZERO)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn spraying_locks_the_ip() {
        let t = Throttle::new(config());
        let attacker = ip("192.0.2.1");
        // Thresholds per IP: delay after 12, lock at 24.
        for n in 0..24 {
            let ticket = t.admit(attacker, &format!("user{n}"));
            assert!(matches!(ticket.gate(), Gate::Open(_)), "attempt {n}");
            let _ = ticket.failed();
        }
        assert!(matches!(
            t.admit(attacker, "someone-new").gate(),
            Gate::Locked(_)
        ));
        assert!(matches!(
            t.admit(ip("192.0.2.2"), "someone-new").gate(),
            Gate::Open(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_pair_and_window_forgets() {
        let t = Throttle::new(config());
        let user = ip("192.0.2.9");
        for _ in 0..3 {
            let _ = t.admit(user, "alice").failed();
        }
        assert_eq!(
            t.admit(user, "alice").gate(),
            Gate::Open(Duration::from_millis(100))
        );
        t.admit(user, "alice").succeeded();
        assert_eq!(t.admit(user, "alice").gate(), Gate::Open(Duration::ZERO));

        for _ in 0..3 {
            let _ = t.admit(user, "bob").failed();
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.admit(user, "bob").gate(), Gate::Open(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_attempts_count_while_in_flight() {
        let t = Throttle::new(config());
        let attacker = ip("192.0.2.1");
        // A clean record: a burst of parallel logins (a mail client opening several
        // connections) is neither delayed nor refused.
        let burst: Vec<Ticket> = (0..10).map(|_| t.admit(attacker, "alice")).collect();
        assert!(burst.iter().all(|t| t.gate() == Gate::Open(Duration::ZERO)));
        drop(burst);
        // Once a guess has failed, attempts in flight count.
        let _ = t.admit(attacker, "alice").failed();
        let tickets: Vec<Ticket> = (0..10).map(|_| t.admit(attacker, "alice")).collect();
        let open = tickets
            .iter()
            .filter(|t| matches!(t.gate(), Gate::Open(_)))
            .count();
        assert_eq!(
            open, 5,
            "only 2 x max_failures may be failed or in flight at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn account_wide_failures_only_delay_failures() {
        let t = Throttle::new(config());
        // 12 sources, one failure each: no pair or IP threshold is reached.
        let mut last = Duration::ZERO;
        for n in 0..14 {
            let ticket = t.admit(ip(&format!("203.0.113.{n}")), "alice");
            assert_eq!(ticket.gate(), Gate::Open(Duration::ZERO));
            last = ticket.failed();
        }
        // Past IP_FACTOR x max_failures = 12 account-wide failures, failures wait.
        assert_eq!(last, Duration::from_millis(200));
        // The real user from yet another address is admitted at once.
        let ticket = t.admit(ip("198.51.100.1"), "alice");
        assert_eq!(ticket.gate(), Gate::Open(Duration::ZERO));
        ticket.succeeded();
    }
}
