//! The process's metrics, exported at `GET /metrics` in the Prometheus text format
//! (INTERFACES.md 8) by the `prometheus` crate's encoder.
//!
//! One [`Metrics`] is made by `serve` and shared by the listeners, the IMAP sessions, the
//! authenticator and the push service. Label values come from fixed sets (listener
//! kinds, mechanism and outcome names, imap-codec's command names), never from what a
//! client sends, so the number of series is bounded.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpmstore_connections_open` | gauge | `listener` |
//! | `cpmstore_connections_total` | counter | `listener` |
//! | `cpmstore_logins_total` | counter | `mechanism`, `outcome` |
//! | `cpmstore_imap_commands_total` | counter | `command` (`UNPARSED` for a line that is no command), `result` (`ok`, `no`, `bad`, `bye`, `io`) |
//! | `cpmstore_imap_command_duration_seconds` | histogram | `command` |
//! | `cpmstore_push_decisions_total` | counter | `ingress`, `outcome`, `origin_type`, `reason` |
//! | `cpmstore_storage_errors_total` | counter | `component` |
//! | `cpmstore_admin_requests_total` | counter | `operation`, `status` |
//! | `cpmstore_cpm_requests_total` | counter | `operation` (`deposit`, `events`), `status` |
//! | `cpmstore_cpm_deposits_total` | counter | `result` (`created`, `repeated`) |
//! | `cpmstore_cpm_events_total` | counter | `result` (`applied`, `unknown`) |

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets of IMAP commands, in seconds: from a cached FETCH (well under a
/// millisecond) to a large APPEND or SEARCH over a big mailbox.
const COMMAND_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The components that count storage errors; each series is exported from the start
/// (at 0), so a rate over it works before the first error.
const STORAGE_COMPONENTS: [&str; 5] = ["imap", "auth", "push", "admin", "health"];

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    connections_open: IntGaugeVec,
    connections_total: IntCounterVec,
    logins: IntCounterVec,
    commands: IntCounterVec,
    command_seconds: HistogramVec,
    push_decisions: IntCounterVec,
    storage_errors: IntCounterVec,
    admin_requests: IntCounterVec,
    cpm_requests: IntCounterVec,
    cpm_deposits: IntCounterVec,
    cpm_events: IntCounterVec,
}

/// Held by an open connection; the `connections_open` gauge goes down when dropped.
pub struct OpenConnection {
    gauge: prometheus::IntGauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Why the metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Result<Arc<Metrics>, MetricsError> {
        let registry = Registry::new_custom(Some("cpmstore".into()), None)?;
        let connections_open = IntGaugeVec::new(
            Opts::new("connections_open", "Connections open now, by listener."),
            &["listener"],
        )?;
        let connections_total = IntCounterVec::new(
            Opts::new("connections_total", "Connections accepted, by listener."),
            &["listener"],
        )?;
        let logins = IntCounterVec::new(
            Opts::new(
                "logins_total",
                "Login attempts (LOGIN and AUTHENTICATE), by mechanism and outcome.",
            ),
            &["mechanism", "outcome"],
        )?;
        let commands = IntCounterVec::new(
            Opts::new(
                "imap_commands_total",
                "IMAP commands answered, by command name and result (ok, no, bad, bye).",
            ),
            &["command", "result"],
        )?;
        let command_seconds = HistogramVec::new(
            HistogramOpts::new(
                "imap_command_duration_seconds",
                "Time from a command's last byte to its tagged answer, by command name.",
            )
            .buckets(COMMAND_BUCKETS.to_vec()),
            &["command"],
        )?;
        let push_decisions = IntCounterVec::new(
            Opts::new(
                "push_decisions_total",
                "Pushes by ingress (http, sip), outcome, origin type (ppg, smsc, sip, none) and \
                 whitelist reason (not_provisioned, matched, no_match, unknown_context, none).",
            ),
            &["ingress", "outcome", "origin_type", "reason"],
        )?;
        let storage_errors = IntCounterVec::new(
            Opts::new(
                "storage_errors_total",
                "Storage operations that failed, by the component that asked.",
            ),
            &["component"],
        )?;
        let admin_requests = IntCounterVec::new(
            Opts::new(
                "admin_requests_total",
                "HTTP admin API requests, by operation and HTTP status.",
            ),
            &["operation", "status"],
        )?;
        let cpm_requests = IntCounterVec::new(
            Opts::new(
                "cpm_requests_total",
                "CPM deposit and event-report API requests, by operation and HTTP status.",
            ),
            &["operation", "status"],
        )?;
        let cpm_deposits = IntCounterVec::new(
            Opts::new(
                "cpm_deposits_total",
                "CPM objects deposited: created, or repeated (same IMDN-Message-ID, nothing stored).",
            ),
            &["result"],
        )?;
        let cpm_events = IntCounterVec::new(
            Opts::new(
                "cpm_events_total",
                "CPM event-report entries: applied to at least one object, or naming an unknown IMDN-Message-ID.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(commands.clone()))?;
        registry.register(Box::new(command_seconds.clone()))?;
        registry.register(Box::new(push_decisions.clone()))?;
        registry.register(Box::new(storage_errors.clone()))?;
        registry.register(Box::new(admin_requests.clone()))?;
        registry.register(Box::new(cpm_requests.clone()))?;
        registry.register(Box::new(cpm_deposits.clone()))?;
        registry.register(Box::new(cpm_events.clone()))?;
        for result in ["created", "repeated"] {
            cpm_deposits.with_label_values(&[result]);
        }
        for result in ["applied", "unknown"] {
            cpm_events.with_label_values(&[result]);
        }
        for component in STORAGE_COMPONENTS {
            storage_errors.with_label_values(&[component]);
        }
        Ok(Arc::new(Metrics {
            registry,
            connections_open,
            connections_total,
            logins,
            commands,
            command_seconds,
            push_decisions,
            storage_errors,
            admin_requests,
            cpm_requests,
            cpm_deposits,
            cpm_events,
        }))
    }

    /// Counts a connection accepted on `listener`; keep the result while it is open.
    pub fn connection_opened(&self, listener: &str) -> OpenConnection {
        self.connections_total.with_label_values(&[listener]).inc();
        let gauge = self.connections_open.with_label_values(&[listener]);
        gauge.inc();
        OpenConnection { gauge }
    }

    /// Exports the connection series of `listener` at 0 before its first connection.
    pub fn prime_listener(&self, listener: &str) {
        self.connections_total.with_label_values(&[listener]);
        self.connections_open.with_label_values(&[listener]);
    }

    /// Exports a login series at 0 before its first attempt.
    pub fn prime_login(&self, mechanism: &str, outcome: &str) {
        self.logins.with_label_values(&[mechanism, outcome]);
    }

    /// Counts a login attempt.
    pub fn login(&self, mechanism: &str, outcome: &str) {
        self.logins.with_label_values(&[mechanism, outcome]).inc();
    }

    /// Counts an IMAP command answered with `result` after `elapsed`.
    pub fn command(&self, command: &str, result: &str, elapsed: Duration) {
        self.commands.with_label_values(&[command, result]).inc();
        self.command_seconds
            .with_label_values(&[command])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a push decision; `reason` is the whitelist decision's (`none` when the
    /// push never reached it).
    pub fn push_decision(&self, ingress: &str, outcome: &str, origin_type: &str, reason: &str) {
        self.push_decisions
            .with_label_values(&[ingress, outcome, origin_type, reason])
            .inc();
    }

    /// Counts a failed storage operation asked for by `component` (`imap`, `auth`,
    /// `push`, `admin`, `health`).
    pub fn storage_error(&self, component: &str) {
        self.storage_errors.with_label_values(&[component]).inc();
    }

    /// Counts an admin API request.
    pub fn admin_request(&self, operation: &str, status: u16) {
        self.admin_requests
            .with_label_values(&[operation, &status.to_string()])
            .inc();
    }

    /// Counts a CPM API request (`deposit` or `events`) and its HTTP status.
    pub fn cpm_request(&self, operation: &str, status: u16) {
        self.cpm_requests
            .with_label_values(&[operation, &status.to_string()])
            .inc();
    }

    /// Counts a deposit that stored an object (`repeated` false) or found it stored.
    pub fn cpm_deposit(&self, repeated: bool) {
        let result = if repeated { "repeated" } else { "created" };
        self.cpm_deposits.with_label_values(&[result]).inc();
    }

    /// Counts an event report's entries: `applied` found objects, `unknown` did not.
    pub fn cpm_events(&self, applied: usize, unknown: usize) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.cpm_events
            .with_label_values(&["applied"])
            .inc_by(count(applied));
        self.cpm_events
            .with_label_values(&["unknown"])
            .inc_by(count(unknown));
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> Result<Vec<u8>, MetricsError> {
        let mut out = Vec::with_capacity(8192);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new().unwrap();
        {
            let _open = m.connection_opened("imaps");
            m.login("plain", "success");
            m.command("FETCH", "ok", Duration::from_millis(3));
            m.push_decision("http", "delivered", "ppg", "matched");
            m.storage_error("imap");
            m.admin_request("subscriber_add", 201);
            m.cpm_request("deposit", 201);
            m.cpm_deposit(false);
            m.cpm_events(2, 1);
            let text = String::from_utf8(m.render().unwrap()).unwrap();
            assert!(text.contains("cpmstore_connections_open{listener=\"imaps\"} 1"));
        }
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        for family in [
            "cpmstore_connections_open{listener=\"imaps\"} 0",
            "cpmstore_connections_total{listener=\"imaps\"} 1",
            "cpmstore_logins_total{mechanism=\"plain\",outcome=\"success\"} 1",
            "cpmstore_imap_commands_total{command=\"FETCH\",result=\"ok\"} 1",
            "cpmstore_imap_command_duration_seconds_bucket{command=\"FETCH\",le=\"0.005\"} 1",
            "cpmstore_imap_command_duration_seconds_bucket{command=\"FETCH\",le=\"0.0025\"} 0",
            "cpmstore_push_decisions_total{ingress=\"http\",origin_type=\"ppg\",outcome=\"delivered\",reason=\"matched\"} 1",
            "cpmstore_storage_errors_total{component=\"imap\"} 1",
            "cpmstore_admin_requests_total{operation=\"subscriber_add\",status=\"201\"} 1",
            "cpmstore_cpm_requests_total{operation=\"deposit\",status=\"201\"} 1",
            "cpmstore_cpm_deposits_total{result=\"created\"} 1",
            "cpmstore_cpm_deposits_total{result=\"repeated\"} 0",
            "cpmstore_cpm_events_total{result=\"applied\"} 2",
            "cpmstore_cpm_events_total{result=\"unknown\"} 1",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
    }
}
