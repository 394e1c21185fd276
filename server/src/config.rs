//! Configuration: the TOML file of INTERFACES.md 2.1, `CPMSTORE_<SECTION>_<KEY>`
//! environment overrides, and the embedded defaults of INTERFACES.md 2, validated once.
//!
//! How a [`Config`] is built ([`Config::load`]):
//! 1. the file (if any) is parsed into a `toml::Table`, and every key in it is checked
//!    against the known ones, so an unknown key is an error naming it;
//! 2. `CPMSTORE_*` environment variables are laid over that table, each value parsed as
//!    a TOML value when it is one (number, boolean, array, quoted string) and taken as a
//!    plain string otherwise;
//! 3. the result is laid over the embedded defaults (computed for the chosen `data_dir`,
//!    so the SQLite path follows it) and deserialized;
//! 4. [`Config::validate`] checks what types cannot.
//!
//! The set of known keys is the serialized form of the defaults, so a field added to a
//! struct here is known to the file and the environment at once.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "CPMSTORE_";

/// Environment variable naming the config file (same as `--config`).
pub const CONFIG_ENV: &str = "CPMSTORE_CONFIG";

/// Environment variable with a log filter (tracing `EnvFilter` syntax); not a config key.
pub const LOG_ENV: &str = "CPMSTORE_LOG";

/// Prefix of environment variables reserved for the test suites; not config keys.
pub const TEST_ENV_PREFIX: &str = "CPMSTORE_TEST_";

/// The data directory when none is configured.
pub const DEFAULT_DATA_DIR: &str = "./cpmstore-data";

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE: &str = "cpmstore.db";

/// File name of the generated PSK key-encryption key inside the data directory.
pub const PSK_KEK_FILE: &str = "psk.kek";

/// RFC 6154 (and RFC 8457 `Important`) special-use attributes, without the backslash.
pub const SPECIAL_USES: &[&str] = &[
    "All",
    "Archive",
    "Drafts",
    "Flagged",
    "Important",
    "Junk",
    "Sent",
    "Trash",
];

/// Why a configuration could not be loaded. Each message names the key or variable at
/// fault and says how to mend it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error(
        "cannot read config file {}: {source}; check the path given with --config or CPMSTORE_CONFIG",
        path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not TOML.
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// A key that cpmstore does not know.
    #[error("unknown config key `{key}` in {origin}; remove it or fix its spelling")]
    UnknownKey {
        /// Dotted key, e.g. `storage.bogus`.
        key: String,
        /// Where it came from: the file, or an environment variable.
        origin: String,
    },
    /// A `CPMSTORE_*` variable that names no config key.
    #[error("unknown environment variable {name}: {hint}")]
    UnknownEnv {
        /// The variable.
        name: String,
        /// What would be right.
        hint: String,
    },
    /// A value of the wrong type or shape.
    #[error("invalid config value{}: {message}", key.as_deref().map(|k| format!(" for `{k}`")).unwrap_or_default())]
    Type {
        /// Dotted key when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("invalid config value for `{key}`: {message}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

impl ConfigError {
    /// The CLI exit status for this error: 1 when the file cannot be read (I/O), 5 when
    /// its content is invalid.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Read { .. } => 1,
            _ => 5,
        }
    }
}

/// The whole configuration. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data directory (SQLite database, generated TLS certificate, PSK KEK).
    /// Relative paths are relative to the working directory.
    pub data_dir: PathBuf,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[imap]`: cleartext + STARTTLS.
    pub imap: ListenerConfig,
    /// `[imaps]`: implicit TLS.
    pub imaps: ListenerConfig,
    /// `[psk]`: PSK-TLS.
    pub psk: PskConfig,
    /// `[tls]`: certificate and key for STARTTLS and IMAPS.
    pub tls: TlsConfig,
    /// `[http]`: push ingress, admin API, metrics, health.
    pub http: HttpConfig,
    /// `[sip]`: OTA-SIP push ingress.
    pub sip: SipConfig,
    /// `[push]`: push delivery and whitelist.
    pub push: PushConfig,
    /// `[auth]`: password hashing and guessing protection.
    pub auth: AuthConfig,
    /// `[limits]`: sizes, timeouts, connection caps.
    pub limits: LimitsConfig,
    /// `[accounts]`: what a new account gets.
    pub accounts: AccountsConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[cpm]`: the CPM message store (INTERFACES.md 9).
    pub cpm: CpmConfig,
}

/// `[storage]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://PATH` or `postgres://user:pass@host/db`. May hold a password: use
    /// [`StorageConfig::redacted_url`] to show it.
    pub url: String,
}

/// A listener section (`[imap]`, `[imaps]`, `[psk]`): where to listen. Empty = off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Addresses to bind; a string or a list of strings in the file.
    #[serde(deserialize_with = "de_listen")]
    pub listen: Vec<SocketAddr>,
}

/// `[psk]`: the PSK-TLS listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PskConfig {
    /// Addresses to bind; a string or a list of strings in the file.
    #[serde(deserialize_with = "de_listen")]
    pub listen: Vec<SocketAddr>,
    /// Also offer plain PSK key exchange without forward secrecy (TLS 1.2 `PSK-*` suites
    /// of RFC 4279, TLS 1.3 `psk_ke`). Off: only ECDHE-PSK / DHE-PSK and `psk_dhe_ke`.
    pub allow_plain_psk: bool,
    /// Seconds between full reloads of the in-memory PSK table from storage. Changes
    /// are also picked up at once from the change bus; the reload is the safety net for
    /// a change made where no notification reaches this node (a CLI on SQLite, a lost
    /// NOTIFY).
    pub refresh_secs: u64,
}

impl Default for PskConfig {
    fn default() -> Self {
        PskConfig {
            listen: localhost(2993),
            allow_plain_psk: false,
            refresh_secs: 2,
        }
    }
}

/// `[tls]`. Unset: a self-signed certificate is generated into `<data_dir>/tls/`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Addresses to bind.
    #[serde(deserialize_with = "de_listen")]
    pub listen: Vec<SocketAddr>,
    /// File holding the admin API bearer token; unset disables the admin API.
    pub admin_token_file: Option<PathBuf>,
}

/// `[sip]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Addresses to bind (UDP and TCP).
    #[serde(deserialize_with = "de_listen")]
    pub listen: Vec<SocketAddr>,
    /// Peers whose P-Asserted-Identity is believed.
    pub trusted_peers: Vec<IpNet>,
}

/// `[push]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Peers allowed to assert `X-Push-Origin-*`.
    pub trusted_gateways: Vec<IpNet>,
    /// Mailbox that receives accepted pushes.
    pub deliver_to: String,
    /// Most entries one provisioning document may yield (at least 10).
    pub max_whitelist_entries: usize,
    /// Resolve FQDN entries again on every push.
    pub resolve_on_push: bool,
}

/// `[auth]`: password hashing parameters and guessing protection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// argon2id memory cost in KiB.
    pub argon2_m_kib: u32,
    /// argon2id time cost (passes).
    pub argon2_t: u32,
    /// argon2id parallelism (lanes).
    pub argon2_p: u32,
    /// PBKDF2 iterations of new SCRAM-SHA-256 secrets (at least 4096).
    pub scram_iterations: u32,
    /// File with the 32-byte hex key that encrypts PSKs at rest; unset:
    /// `<data_dir>/psk.kek`, generated (mode 0600) on first use.
    pub psk_kek_file: Option<PathBuf>,
    /// Most argon2 computations running at once (each takes `argon2_m_kib` of memory).
    pub max_parallel_hashes: usize,
    /// Failed logins of one (IP, account) pair within `failure_window_secs` before its
    /// attempts are delayed; twice as many lock the pair out. An IP as a whole gets
    /// four times these thresholds; an account across all sources is never locked,
    /// only its failed answers delayed past four times this (`auth::throttle`).
    pub max_failures: u32,
    /// Window over which failures are counted.
    pub failure_window_secs: u64,
    /// How long a locked-out (IP, account) pair or IP is refused.
    pub lockout_secs: u64,
    /// Failed authentications after which a connection is closed.
    pub max_failures_per_connection: u32,
    /// First delay added to answers once a source is over `max_failures`; it doubles
    /// with each further failure.
    pub failure_delay_ms: u64,
    /// Longest such delay (also what a locked-out source waits for its answer).
    pub max_failure_delay_ms: u64,
}

/// `[limits]`: sizes, timeouts and connection caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest command line, literals excluded.
    pub max_command_bytes: usize,
    /// Largest literal (APPEND message).
    pub max_literal_bytes: u64,
    /// Time allowed to log in, counted from the TCP connect (the TLS handshake
    /// included); traffic before login does not extend it.
    pub login_timeout_secs: u64,
    /// Largest command before login, literals included (AUTHENTICATE data lines are
    /// held to the same size).
    pub max_preauth_command_bytes: usize,
    /// Concurrent connections not yet logged in, all listeners together; the rest of
    /// `max_connections` stays for authenticated sessions.
    pub max_preauth_connections: usize,
    /// Concurrent connections not yet logged in from one IP address.
    pub max_preauth_connections_per_ip: usize,
    /// A session whose client reads nothing of a response for this long is closed.
    pub write_timeout_secs: u64,
    /// How long an expunged message stays readable for sessions that have not yet told
    /// their client of the expunge; after it, its content is deleted.
    pub expunged_retention_secs: u64,
    /// Inactivity after which an authenticated session is logged out.
    pub autologout_secs: u64,
    /// Longest IDLE before the server ends it.
    pub idle_max_secs: u64,
    /// Interval of keepalive responses during IDLE.
    pub idle_keepalive_secs: u64,
    /// Concurrent connections, all listeners together.
    pub max_connections: usize,
    /// Concurrent connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Concurrent authenticated sessions of one account.
    pub max_connections_per_account: usize,
    /// Time sessions get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Largest HTTP request body (push, admin API).
    pub http_max_body_bytes: usize,
}

/// `[accounts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    /// Mailboxes created with every new account, besides INBOX.
    pub default_mailboxes: Vec<DefaultMailbox>,
}

/// One entry of `accounts.default_mailboxes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultMailbox {
    /// Mailbox name (`/` separates levels).
    pub name: String,
    /// RFC 6154 attribute without the backslash (`Sent`, `Drafts`...).
    pub special_use: Option<String>,
}

/// `[cpm]`: the CPM message store (INTERFACES.md 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpmConfig {
    /// The root folder of all CPM history (one level, no `/`), created for every
    /// subscriber with the default mailboxes.
    pub root: String,
    /// Refuse `CREATE` outside the root and `MOVE` of single objects out of a
    /// conversation or session history folder (`NO [CANNOT]`).
    pub enforce_folder_rules: bool,
    /// Keep and show the CPM system flag `\read-report-sent`.
    pub read_report_flag: bool,
    /// File holding the deposit API's own bearer token (besides the admin token);
    /// unset: only the admin token may deposit.
    pub deposit_token_file: Option<PathBuf>,
}

impl Default for CpmConfig {
    fn default() -> Self {
        CpmConfig {
            root: "RCSMessageStore".into(),
            enforce_folder_rules: true,
            read_report_flag: true,
            deposit_token_file: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `cpmstore_server=debug,warn`...); unset: `warn` for the
    /// CLI commands, `info` for `serve`. `CPMSTORE_LOG` wins over it.
    pub level: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// An IP network (`10.0.0.0/8`, `::1`). A bare address is a /32 or /128. IPv4-mapped
/// IPv6 addresses are treated as the IPv4 address they map.
///
/// The network itself is the `ipnet` crate's; this type keeps the config syntax (bare
/// addresses, mapped IPv4), its error message, and matching of mapped peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    /// The network address as written (host bits are ignored when matching).
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// Prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 `ip` as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an IP address or CIDR network (e.g. 10.0.0.0/8, ::1)");
        let net = match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr = IpAddr::from_str(addr).map_err(|_| bad())?;
                let prefix = u8::from_str(prefix).map_err(|_| bad())?;
                ipnet::IpNet::new(addr, prefix).map_err(|_| bad())?
            }
            None => ipnet::IpNet::from(IpAddr::from_str(s).map_err(|_| bad())?),
        };
        // An IPv4-mapped IPv6 network with a prefix covering the mapping is the IPv4
        // network; so `::ffff:10.0.0.0/104` matches 10.1.2.3 however the peer shows up.
        if let ipnet::IpNet::V6(v6) = net
            && let Some(v4) = v6.addr().to_ipv4_mapped()
            && let Some(prefix) = v6.prefix_len().checked_sub(96)
        {
            return ipnet::Ipv4Net::new(v4, prefix)
                .map(|v4| IpNet(v4.into()))
                .map_err(|_| bad());
        }
        Ok(IpNet(net))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        IpNet::from_str(&s).map_err(serde::de::Error::custom)
    }
}

/// A `listen` value: one address or a list of them.
fn de_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom(
            "expected an address string like \"127.0.0.1:1143\" or a list of them ([] turns the listener off)",
        )
    })? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    };
    list.iter()
        .map(|s| {
            SocketAddr::from_str(s.trim()).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an IP address with a port (e.g. 127.0.0.1:1143 or [::]:143)"
                ))
            })
        })
        .collect()
}

fn localhost(port: u16) -> Vec<SocketAddr> {
    vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]
}

impl Default for Config {
    fn default() -> Self {
        Config::with_data_dir(PathBuf::from(DEFAULT_DATA_DIR))
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            trusted_gateways: Vec::new(),
            deliver_to: "INBOX".to_owned(),
            max_whitelist_entries: 1000,
            resolve_on_push: false,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            argon2_m_kib: 19456,
            argon2_t: 2,
            argon2_p: 1,
            scram_iterations: 4096,
            psk_kek_file: None,
            max_parallel_hashes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_failures: 5,
            failure_window_secs: 300,
            lockout_secs: 900,
            max_failures_per_connection: 3,
            failure_delay_ms: 250,
            max_failure_delay_ms: 4000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_command_bytes: 65536,
            max_literal_bytes: 52_428_800,
            login_timeout_secs: 60,
            max_preauth_command_bytes: 32768,
            max_preauth_connections: 2500,
            max_preauth_connections_per_ip: 20,
            write_timeout_secs: 60,
            expunged_retention_secs: 900,
            autologout_secs: 1800,
            idle_max_secs: 1800,
            idle_keepalive_secs: 120,
            max_connections: 10000,
            max_connections_per_ip: 100,
            max_connections_per_account: 50,
            shutdown_grace_secs: 10,
            http_max_body_bytes: 1_048_576,
        }
    }
}

impl Default for AccountsConfig {
    fn default() -> Self {
        let mailbox = |name: &str| DefaultMailbox {
            name: name.to_owned(),
            special_use: Some(name.to_owned()),
        };
        AccountsConfig {
            default_mailboxes: ["Drafts", "Sent", "Trash", "Junk", "Archive"]
                .into_iter()
                .map(mailbox)
                .collect(),
        }
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &self.redacted_url())
            .finish()
    }
}

impl StorageConfig {
    /// The SQLite URL of the embedded default for a data directory.
    pub fn sqlite_in(data_dir: &Path) -> StorageConfig {
        StorageConfig {
            url: format!("sqlite://{}", data_dir.join(SQLITE_FILE).display()),
        }
    }

    /// The URL without its password, fit for logs and messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The password in the URL, if any (to scrub it from messages of lower layers).
    pub fn url_password(&self) -> Option<String> {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
            .filter(|p| !p.is_empty())
    }

    /// True for `postgres://` and `postgresql://` URLs.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }

    /// The database file of a `sqlite:` URL (None for other schemes and `:memory:`).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            None
        } else {
            Some(PathBuf::from(path))
        }
    }

    /// Where the storage is, for messages: `PostgreSQL at host H port P, database D` or
    /// `SQLite database PATH`. Never includes the password.
    pub fn describe(&self) -> String {
        if self.is_postgres() {
            match url::Url::parse(&self.url) {
                Ok(u) => {
                    let host = u.host_str().unwrap_or("localhost");
                    let port = u.port().unwrap_or(5432);
                    let db = u.path().trim_start_matches('/');
                    if db.is_empty() {
                        format!("PostgreSQL at host {host} port {port}")
                    } else {
                        format!("PostgreSQL at host {host} port {port}, database {db}")
                    }
                }
                Err(_) => format!("PostgreSQL at {}", self.redacted_url()),
            }
        } else if let Some(path) = self.sqlite_path() {
            format!("SQLite database {}", path.display())
        } else {
            self.redacted_url()
        }
    }
}

/// `url` without the password of its userinfo (`postgres://u:pw@h/db` ->
/// `postgres://u@h/db`); other URLs are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let after = scheme_end + 3;
    let authority_end = url[after..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after + i);
    let authority = &url[after..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{}{}{}", &url[..after], user, &url[after + at..]),
        None => url.to_owned(),
    }
}

impl Config {
    /// The embedded defaults (INTERFACES.md 2) for a data directory: the SQLite database
    /// lives inside it.
    pub fn with_data_dir(data_dir: PathBuf) -> Config {
        Config {
            storage: StorageConfig::sqlite_in(&data_dir),
            data_dir,
            imap: ListenerConfig {
                listen: localhost(1143),
            },
            imaps: ListenerConfig {
                listen: localhost(1993),
            },
            psk: PskConfig::default(),
            tls: TlsConfig::default(),
            http: HttpConfig {
                listen: localhost(8080),
                admin_token_file: None,
            },
            sip: SipConfig {
                listen: localhost(5060),
                trusted_peers: vec![IpNet(IpAddr::V4(Ipv4Addr::LOCALHOST).into())],
            },
            push: PushConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            accounts: AccountsConfig::default(),
            log: LogConfig::default(),
            cpm: CpmConfig::default(),
        }
    }

    /// Loads the file at `path` (or only the defaults), applies the `CPMSTORE_*`
    /// environment overrides of this process and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Config::from_sources(text.as_deref(), path, std::env::vars_os())
    }

    /// [`Config::load`] with the file's text and the environment given, for tests.
    pub fn from_sources(
        text: Option<&str>,
        path: Option<&Path>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Config, ConfigError> {
        let file_name = path.map_or_else(|| PathBuf::from("<config>"), Path::to_owned);
        let mut user = match text {
            Some(text) => parse_document(text, &file_name)?,
            None => toml::Table::new(),
        };
        let schema = Schema::of_defaults()?;
        schema.check_table(&user, &format!("config file {}", file_name.display()))?;
        apply_env(&mut user, &schema, env)?;

        let data_dir = match user.get("data_dir") {
            None => PathBuf::from(DEFAULT_DATA_DIR),
            Some(toml::Value::String(s)) if !s.is_empty() => PathBuf::from(s),
            Some(_) => {
                return Err(ConfigError::Invalid {
                    key: "data_dir".into(),
                    message: "must be a non-empty path string".into(),
                });
            }
        };
        let defaults = Config::with_data_dir(data_dir);
        let mut merged = toml::Table::try_from(&defaults).map_err(|e| ConfigError::Type {
            key: None,
            message: format!("cannot represent the defaults: {e}"),
        })?;
        for (key, value) in user {
            match (merged.get_mut(&key), value) {
                (Some(toml::Value::Table(section)), toml::Value::Table(overrides)) => {
                    section.extend(overrides);
                }
                (_, value) => {
                    merged.insert(key, value);
                }
            }
        }
        let mut config: Config =
            merged
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Type {
                    key: None,
                    message: one_line(&e.to_string()),
                })?;
        config.validate()?;
        config.normalize();
        Ok(config)
    }

    /// Checks what the types cannot: URL schemes, argon2 parameters, lower bounds,
    /// mailbox names. [`Config::load`] calls it; call it again after editing a config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            message,
        };
        let url = &self.storage.url;
        if !(url.starts_with("sqlite:") || self.storage.is_postgres()) {
            return Err(invalid(
                "storage.url",
                format!(
                    "`{}` is neither sqlite://PATH nor postgres://USER:PASS@HOST/DB",
                    self.storage.redacted_url()
                ),
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid(
                "tls",
                "set both `cert` and `key`, or neither (a self-signed certificate is then generated)"
                    .into(),
            ));
        }
        if self.push.deliver_to.trim().is_empty() {
            return Err(invalid(
                "push.deliver_to",
                "must name a mailbox, e.g. \"INBOX\"".into(),
            ));
        }
        if self.push.max_whitelist_entries < 10 {
            return Err(invalid(
                "push.max_whitelist_entries",
                "must be at least 10 (OMA Push requires room for 10 entries)".into(),
            ));
        }
        let a = &self.auth;
        if let Err(e) = argon2::Params::new(a.argon2_m_kib, a.argon2_t, a.argon2_p, None) {
            return Err(invalid(
                "auth.argon2_m_kib/argon2_t/argon2_p",
                format!(
                    "not valid argon2id parameters ({e}); memory must be at least 8 KiB per lane, time at least 1"
                ),
            ));
        }
        if a.scram_iterations < 4096 {
            return Err(invalid(
                "auth.scram_iterations",
                "must be at least 4096 (RFC 7677)".into(),
            ));
        }
        at_least_one("auth.max_parallel_hashes", a.max_parallel_hashes as u64)?;
        at_least_one("auth.max_failures", a.max_failures.into())?;
        at_least_one("auth.failure_window_secs", a.failure_window_secs)?;
        at_least_one(
            "auth.max_failures_per_connection",
            a.max_failures_per_connection.into(),
        )?;
        if a.failure_delay_ms > a.max_failure_delay_ms {
            return Err(invalid(
                "auth.failure_delay_ms",
                format!(
                    "{} is more than auth.max_failure_delay_ms ({}); lower it or raise the maximum",
                    a.failure_delay_ms, a.max_failure_delay_ms
                ),
            ));
        }
        at_least_one("psk.refresh_secs", self.psk.refresh_secs)?;
        let l = &self.limits;
        if l.max_command_bytes < 1024 {
            return Err(invalid(
                "limits.max_command_bytes",
                "must be at least 1024 (IMAP clients send lines of up to 1000 octets)".into(),
            ));
        }
        at_least_one("limits.max_literal_bytes", l.max_literal_bytes)?;
        at_least_one("limits.login_timeout_secs", l.login_timeout_secs)?;
        if l.max_preauth_command_bytes < 1024 || l.max_preauth_command_bytes > l.max_command_bytes {
            return Err(invalid(
                "limits.max_preauth_command_bytes",
                format!(
                    "must be at least 1024 and at most limits.max_command_bytes ({})",
                    l.max_command_bytes
                ),
            ));
        }
        at_least_one(
            "limits.max_preauth_connections",
            l.max_preauth_connections as u64,
        )?;
        at_least_one(
            "limits.max_preauth_connections_per_ip",
            l.max_preauth_connections_per_ip as u64,
        )?;
        at_least_one("limits.write_timeout_secs", l.write_timeout_secs)?;
        at_least_one("limits.autologout_secs", l.autologout_secs)?;
        at_least_one("limits.idle_max_secs", l.idle_max_secs)?;
        at_least_one("limits.idle_keepalive_secs", l.idle_keepalive_secs)?;
        at_least_one("limits.max_connections", l.max_connections as u64)?;
        at_least_one(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip as u64,
        )?;
        at_least_one(
            "limits.max_connections_per_account",
            l.max_connections_per_account as u64,
        )?;
        at_least_one("limits.http_max_body_bytes", l.http_max_body_bytes as u64)?;
        let mut seen = BTreeSet::new();
        for mailbox in &self.accounts.default_mailboxes {
            let key = "accounts.default_mailboxes";
            let name = &mailbox.name;
            if name.is_empty()
                || name.chars().any(char::is_control)
                || name.starts_with('/')
                || name.ends_with('/')
                || name.contains("//")
            {
                return Err(invalid(
                    key,
                    format!("{name:?} is not a usable mailbox name"),
                ));
            }
            if name.eq_ignore_ascii_case("INBOX") {
                return Err(invalid(
                    key,
                    "INBOX is always created; do not list it".into(),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(invalid(key, format!("{name:?} is listed twice")));
            }
            if let Some(use_) = &mailbox.special_use
                && canonical_special_use(use_).is_none()
            {
                return Err(invalid(
                    key,
                    format!(
                        "special_use {use_:?} of {name:?} is not one of {}",
                        SPECIAL_USES.join(", ")
                    ),
                ));
            }
        }
        let root = &self.cpm.root;
        if root.is_empty()
            || root.contains('/')
            || root
                .chars()
                .any(|c| c.is_control() || matches!(c, '*' | '%'))
        {
            return Err(invalid(
                "cpm.root",
                format!(
                    "{root:?} is not a usable root folder name: one level, no `/`, `*`, `%` or control characters, e.g. \"RCSMessageStore\""
                ),
            ));
        }
        if root.eq_ignore_ascii_case("INBOX")
            || self
                .accounts
                .default_mailboxes
                .iter()
                .any(|m| m.name == *root)
        {
            return Err(invalid(
                "cpm.root",
                format!(
                    "{root:?} is INBOX or one of accounts.default_mailboxes; give the CPM root a name of its own"
                ),
            ));
        }
        if let Some(level) = &self.log.level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            return Err(invalid(
                "log.level",
                format!("{level:?} is not a log filter ({e}); try \"info\" or \"debug\""),
            ));
        }
        Ok(())
    }

    /// Puts validated values in canonical form (special-use spelling).
    fn normalize(&mut self) {
        for mailbox in &mut self.accounts.default_mailboxes {
            if let Some(use_) = &mailbox.special_use {
                mailbox.special_use = canonical_special_use(use_).map(str::to_owned);
            }
        }
    }

    /// Where the PSK key-encryption key lives: `auth.psk_kek_file`, else
    /// `<data_dir>/psk.kek`.
    pub fn psk_kek_path(&self) -> PathBuf {
        self.auth
            .psk_kek_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(PSK_KEK_FILE))
    }

    /// A copy with secrets elided (the storage URL's password), fit to print: what
    /// `check-config` shows.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        shown.storage.url = self.storage.redacted_url();
        shown
    }
}

/// `Sent`, `\Sent`, `sent` -> `Sent`; None when not a special use.
fn canonical_special_use(value: &str) -> Option<&'static str> {
    let bare = value.strip_prefix('\\').unwrap_or(value);
    SPECIAL_USES
        .iter()
        .copied()
        .find(|known| known.eq_ignore_ascii_case(bare))
}

fn at_least_one(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::Invalid {
            key: key.to_owned(),
            message: "must be at least 1".into(),
        })
    } else {
        Ok(())
    }
}

/// Parses the file, with a one-line message carrying line and column on failure.
fn parse_document(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let position = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default();
        ConfigError::Syntax {
            path: path.to_owned(),
            message: format!("{position}{}", one_line(e.message())),
        }
    })
}

fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The known keys: the serialized defaults. A section maps to the set of its keys.
struct Schema {
    top: Vec<(String, Option<BTreeSet<String>>)>,
}

impl Schema {
    fn of_defaults() -> Result<Schema, ConfigError> {
        let value = serde_json::to_value(Config::default()).map_err(|e| ConfigError::Type {
            key: None,
            message: format!("cannot represent the defaults: {e}"),
        })?;
        let serde_json::Value::Object(map) = value else {
            return Err(ConfigError::Type {
                key: None,
                message: "defaults are not a table".into(),
            });
        };
        let top = map
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::Object(section) => {
                    (key, Some(section.keys().cloned().collect()))
                }
                _ => (key, None),
            })
            .collect();
        Ok(Schema { top })
    }

    fn section(&self, name: &str) -> Option<&Option<BTreeSet<String>>> {
        self.top.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Every key of `table` must be known; nested section keys too.
    fn check_table(&self, table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
        for (key, value) in table {
            match (self.section(key), value) {
                (None, _) => {
                    return Err(ConfigError::UnknownKey {
                        key: key.clone(),
                        origin: origin.to_owned(),
                    });
                }
                (Some(Some(keys)), toml::Value::Table(section)) => {
                    if let Some(unknown) = section.keys().find(|k| !keys.contains(*k)) {
                        return Err(ConfigError::UnknownKey {
                            key: format!("{key}.{unknown}"),
                            origin: origin.to_owned(),
                        });
                    }
                }
                (Some(Some(_)), _) => {
                    return Err(ConfigError::Type {
                        key: Some(key.clone()),
                        message: format!("`{key}` is a section; write it as [{key}]"),
                    });
                }
                (Some(None), _) => {}
            }
        }
        Ok(())
    }
}

/// Lays `CPMSTORE_<SECTION>_<KEY>` (and `CPMSTORE_<TOPKEY>`) over the file's table.
fn apply_env(
    table: &mut toml::Table,
    schema: &Schema,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, OsString)> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with(ENV_PREFIX).then_some((name, value))
        })
        .filter(|(name, _)| {
            name != CONFIG_ENV && name != LOG_ENV && !name.starts_with(TEST_ENV_PREFIX)
        })
        .collect();
    // Deterministic order, so a conflict is reported the same way every time.
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in vars {
        let value = value.into_string().map_err(|_| ConfigError::Type {
            key: Some(name.clone()),
            message: format!("{name} is not valid UTF-8"),
        })?;
        let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        let parsed = parse_env_value(&value);
        // A section name followed by `_` and a key; section names never prefix each other
        // followed by `_` (imap/imaps differ by `s`), so at most one matches.
        let section_match = schema.top.iter().find_map(|(section, keys)| {
            let keys = keys.as_ref()?;
            let key = rest.strip_prefix(section.as_str())?.strip_prefix('_')?;
            Some((section, keys, key))
        });
        match section_match {
            Some((section, keys, key)) => {
                if !keys.contains(key) {
                    return Err(ConfigError::UnknownEnv {
                        name: name.clone(),
                        hint: format!(
                            "section [{section}] has no key `{key}` (known: {}); unset it or fix its spelling",
                            keys.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(t) => {
                        t.insert(key.to_owned(), parsed);
                    }
                    _ => {
                        return Err(ConfigError::Type {
                            key: Some(section.clone()),
                            message: format!("`{section}` is a section; write it as [{section}]"),
                        });
                    }
                }
            }
            None => match schema.section(&rest) {
                Some(None) => {
                    table.insert(rest, parsed);
                }
                Some(Some(_)) => {
                    return Err(ConfigError::UnknownEnv {
                        name: name.clone(),
                        hint: format!(
                            "[{rest}] is a section; set its keys one by one, e.g. {name}_<KEY>"
                        ),
                    });
                }
                None => {
                    return Err(ConfigError::UnknownEnv {
                        name: name.clone(),
                        hint: "it names no config key; variables are CPMSTORE_<SECTION>_<KEY> \
                               (e.g. CPMSTORE_STORAGE_URL) or CPMSTORE_DATA_DIR; unset it or fix its spelling"
                            .into(),
                    });
                }
            },
        }
    }
    Ok(())
}

/// A TOML value if the text is one (`42`, `true`, `["a", "b"]`, `"quoted"`), else the
/// text as a string (`127.0.0.1:1143`, `postgres://...`, `/var/lib/cpmstore`).
fn parse_env_value(text: &str) -> toml::Value {
    match text.parse::<toml::Value>() {
        Ok(value) => value,
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn load(text: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(
            text,
            Some(Path::new("test.toml")),
            env.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn defaults_without_file() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./cpmstore-data"));
        assert_eq!(c.storage.url, "sqlite://./cpmstore-data/cpmstore.db");
        assert_eq!(c.imap.listen, vec![addr("127.0.0.1:1143")]);
        assert_eq!(c.imaps.listen, vec![addr("127.0.0.1:1993")]);
        assert_eq!(c.psk.listen, vec![addr("127.0.0.1:2993")]);
        assert_eq!(c.http.listen, vec![addr("127.0.0.1:8080")]);
        assert_eq!(c.sip.listen, vec![addr("127.0.0.1:5060")]);
        assert_eq!(
            c.sip.trusted_peers,
            vec!["127.0.0.1".parse::<IpNet>().unwrap()]
        );
        assert!(c.push.trusted_gateways.is_empty());
        assert_eq!(c.push.deliver_to, "INBOX");
        assert_eq!(c.push.max_whitelist_entries, 1000);
        assert!(!c.push.resolve_on_push);
        assert_eq!(c.tls, TlsConfig::default());
        assert_eq!(c.http.admin_token_file, None);
        assert_eq!(c.cpm.root, "RCSMessageStore");
        assert!(c.cpm.enforce_folder_rules);
        assert!(c.cpm.read_report_flag);
        assert_eq!(c.cpm.deposit_token_file, None);
        assert_eq!(c.auth.argon2_m_kib, 19456);
        assert_eq!(c.auth.argon2_t, 2);
        assert_eq!(c.auth.argon2_p, 1);
        assert_eq!(c.auth.scram_iterations, 4096);
        assert!(c.auth.max_parallel_hashes >= 1);
        assert_eq!(
            (
                c.auth.max_failures,
                c.auth.failure_window_secs,
                c.auth.lockout_secs
            ),
            (5, 300, 900)
        );
        assert_eq!(c.auth.max_failures_per_connection, 3);
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.limits.max_literal_bytes, 52_428_800);
        let names: Vec<_> = c
            .accounts
            .default_mailboxes
            .iter()
            .map(|m| (m.name.as_str(), m.special_use.as_deref()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("Drafts", Some("Drafts")),
                ("Sent", Some("Sent")),
                ("Trash", Some("Trash")),
                ("Junk", Some("Junk")),
                ("Archive", Some("Archive")),
            ]
        );
        assert_eq!(c.log.format, LogFormat::Human);
        assert_eq!(c, Config::default());
        assert_eq!(c.psk_kek_path(), PathBuf::from("./cpmstore-data/psk.kek"));
    }

    #[test]
    fn the_interfaces_example_parses() {
        let text = r#"
data_dir = "/var/lib/cpmstore"
[storage]
url = "postgres://cpm:pw@db.example.net/cpm"
[imap]
listen = "0.0.0.0:143"
[imaps]
listen = ["0.0.0.0:993", "[::]:993"]
[psk]
listen = []
[tls]
cert = "/etc/cpmstore/tls/fullchain.pem"
key  = "/etc/cpmstore/tls/privkey.pem"
[http]
listen = "127.0.0.1:8080"
admin_token_file = "/etc/cpmstore/admin.token"
[sip]
listen = "127.0.0.1:5060"
trusted_peers = ["127.0.0.1", "10.0.0.0/8"]
[push]
trusted_gateways = []
deliver_to = "INBOX"
max_whitelist_entries = 1000
resolve_on_push = false
[auth]
[limits]
max_literal_bytes = 1000000
[accounts]
default_mailboxes = [{ name = "Sent", special_use = "\\Sent" }, { name = "Notes" }]
[log]
format = "json"
level = "debug"
"#;
        let c = load(Some(text), &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cpmstore"));
        assert_eq!(c.storage.url, "postgres://cpm:pw@db.example.net/cpm");
        assert_eq!(c.imap.listen, vec![addr("0.0.0.0:143")]);
        assert_eq!(c.imaps.listen, vec![addr("0.0.0.0:993"), addr("[::]:993")]);
        assert!(c.psk.listen.is_empty());
        assert_eq!(
            c.tls.key,
            Some(PathBuf::from("/etc/cpmstore/tls/privkey.pem"))
        );
        assert_eq!(
            c.http.admin_token_file,
            Some(PathBuf::from("/etc/cpmstore/admin.token"))
        );
        assert!(c.sip.trusted_peers[1].contains("10.9.8.7".parse().unwrap()));
        assert_eq!(c.limits.max_literal_bytes, 1_000_000);
        assert_eq!(
            c.limits.max_command_bytes, 65536,
            "unset keys keep defaults"
        );
        assert_eq!(c.accounts.default_mailboxes.len(), 2);
        assert_eq!(
            c.accounts.default_mailboxes[0].special_use.as_deref(),
            Some("Sent")
        );
        assert_eq!(c.accounts.default_mailboxes[1].special_use, None);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(
            format!("{:?}", c.storage),
            "StorageConfig { url: \"postgres://cpm@db.example.net/cpm\" }"
        );
    }

    #[test]
    fn storage_url_follows_data_dir() {
        let c = load(Some("data_dir = \"/srv/x\""), &[]).unwrap();
        assert_eq!(c.storage.url, "sqlite:///srv/x/cpmstore.db");
        assert_eq!(
            c.storage.sqlite_path(),
            Some(PathBuf::from("/srv/x/cpmstore.db"))
        );
        let c = load(None, &[("CPMSTORE_DATA_DIR", "/tmp/d")]).unwrap();
        assert_eq!(c.storage.url, "sqlite:///tmp/d/cpmstore.db");
        // An explicit URL wins.
        let c = load(
            Some("data_dir = \"/srv/x\"\n[storage]\nurl = \"sqlite:///elsewhere.db\""),
            &[],
        )
        .unwrap();
        assert_eq!(c.storage.url, "sqlite:///elsewhere.db");
    }

    #[test]
    fn unknown_keys_are_named() {
        let cases = [
            ("bogus = 1", "`bogus`"),
            (
                "[storage]\nurl = \"sqlite://x\"\nuser = \"x\"",
                "`storage.user`",
            ),
            ("[nosuchsection]\nx = 1", "`nosuchsection`"),
            (
                "[limits]\nmax_literal_byte = 5",
                "`limits.max_literal_byte`",
            ),
        ];
        for (text, named) in cases {
            let err = load(Some(text), &[]).unwrap_err();
            assert!(
                matches!(err, ConfigError::UnknownKey { .. }),
                "{text}: {err}"
            );
            assert!(err.to_string().contains(named), "{text}: {err}");
            assert_eq!(err.exit_code(), 5);
        }
        let err = load(
            Some("[accounts]\ndefault_mailboxes = [{ name = \"X\", colour = \"red\" }]"),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn env_overrides() {
        let c = load(
            Some("[imap]\nlisten = \"127.0.0.1:1\""),
            &[
                ("CPMSTORE_STORAGE_URL", "postgres://u:p@h/db"),
                ("CPMSTORE_IMAP_LISTEN", "0.0.0.0:143"),
                ("CPMSTORE_IMAPS_LISTEN", "[]"),
                ("CPMSTORE_PSK_LISTEN", "[\"127.0.0.1:1\", \"127.0.0.1:2\"]"),
                ("CPMSTORE_LIMITS_MAX_LITERAL_BYTES", "1234"),
                ("CPMSTORE_PUSH_RESOLVE_ON_PUSH", "true"),
                ("CPMSTORE_PUSH_DELIVER_TO", "\"123\""),
                ("CPMSTORE_AUTH_PSK_KEK_FILE", "/etc/kek"),
                ("CPMSTORE_CPM_ROOT", "Store"),
                ("CPMSTORE_CPM_DEPOSIT_TOKEN_FILE", "/etc/deposit.token"),
                ("CPMSTORE_CONFIG", "ignored.toml"),
                ("CPMSTORE_LOG", "debug"),
                ("CPMSTORE_TEST_POSTGRES_URL", "postgres://x"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.storage.url, "postgres://u:p@h/db");
        assert_eq!(
            c.imap.listen,
            vec![addr("0.0.0.0:143")],
            "env wins over the file"
        );
        assert!(c.imaps.listen.is_empty());
        assert_eq!(c.psk.listen.len(), 2);
        assert_eq!(c.limits.max_literal_bytes, 1234);
        assert!(c.push.resolve_on_push);
        assert_eq!(c.push.deliver_to, "123");
        assert_eq!(c.auth.psk_kek_file, Some(PathBuf::from("/etc/kek")));
        assert_eq!(c.cpm.root, "Store");
        assert_eq!(
            c.cpm.deposit_token_file,
            Some(PathBuf::from("/etc/deposit.token"))
        );
        assert_eq!(c.psk_kek_path(), PathBuf::from("/etc/kek"));
    }

    #[test]
    fn unknown_env_is_named() {
        for name in [
            "CPMSTORE_STORAGE_USER",
            "CPMSTORE_NOPE",
            "CPMSTORE_IMAP",
            "CPMSTORE_LIMITS_",
        ] {
            let err = load(None, &[(name, "1")]).unwrap_err();
            assert!(
                matches!(err, ConfigError::UnknownEnv { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn listen_string_or_list() {
        let c = load(Some("[http]\nlisten = \"[::1]:8080\""), &[]).unwrap();
        assert_eq!(c.http.listen, vec![addr("[::1]:8080")]);
        let c = load(
            Some("[http]\nlisten = [\"[::1]:8080\", \"127.0.0.1:80\"]"),
            &[],
        )
        .unwrap();
        assert_eq!(c.http.listen.len(), 2);
        let c = load(Some("[http]\nlisten = []"), &[]).unwrap();
        assert!(c.http.listen.is_empty());
        for bad in [
            "listen = \"localhost\"",
            "listen = 8080",
            "listen = [\"1.2.3.4\"]",
        ] {
            let err = load(Some(&format!("[http]\n{bad}")), &[]).unwrap_err();
            assert!(err.to_string().contains("http.listen"), "{bad}: {err}");
        }
    }

    #[test]
    fn invalid_values_are_rejected() {
        let cases = [
            ("[auth]\nscram_iterations = 4095", "auth.scram_iterations"),
            ("[auth]\nargon2_m_kib = 1", "argon2"),
            (
                "[auth]\nmax_parallel_hashes = 0",
                "auth.max_parallel_hashes",
            ),
            ("[storage]\nurl = \"mysql://x\"", "storage.url"),
            ("[tls]\ncert = \"/x\"", "tls"),
            (
                "[push]\nmax_whitelist_entries = 9",
                "push.max_whitelist_entries",
            ),
            (
                "[limits]\nmax_command_bytes = 10",
                "limits.max_command_bytes",
            ),
            (
                "[limits]\nmax_literal_bytes = \"big\"",
                "limits.max_literal_bytes",
            ),
            (
                "[accounts]\ndefault_mailboxes = [{ name = \"INBOX\" }]",
                "INBOX",
            ),
            (
                "[accounts]\ndefault_mailboxes = [{ name = \"X\", special_use = \"Bin\" }]",
                "Bin",
            ),
            ("[log]\nformat = \"xml\"", "xml"),
            ("[cpm]\nroot = \"\"", "cpm.root"),
            ("[cpm]\nroot = \"a/b\"", "cpm.root"),
            ("[cpm]\nroot = \"inbox\"", "cpm.root"),
            ("[cpm]\nroot = \"Sent\"", "cpm.root"),
            (
                "[cpm]\nenforce_folder_rules = \"yes\"",
                "cpm.enforce_folder_rules",
            ),
            ("[cpm]\ncolour = 1", "colour"),
            ("data_dir = 5", "data_dir"),
            ("storage = 5", "storage"),
            ("[limits\n", "line 1"),
        ];
        for (text, named) in cases {
            let err = load(Some(text), &[]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(named), "{text}: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }

    #[test]
    fn url_redaction() {
        let cases = [
            (
                "postgres://cpm:SeCrEt@db:5432/x",
                "postgres://cpm@db:5432/x",
            ),
            ("postgres://cpm@db/x", "postgres://cpm@db/x"),
            (
                "postgres://db/x?sslmode=require",
                "postgres://db/x?sslmode=require",
            ),
            ("sqlite://./data/cpmstore.db", "sqlite://./data/cpmstore.db"),
            ("postgres://u:p%40ss@h", "postgres://u@h"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want);
        }
        let s = StorageConfig {
            url: "postgres://cpm:SeCrEt@127.0.0.1:1/x".into(),
        };
        assert_eq!(
            s.describe(),
            "PostgreSQL at host 127.0.0.1 port 1, database x"
        );
        assert_eq!(s.url_password().as_deref(), Some("SeCrEt"));
        let c = Config {
            storage: s,
            ..Config::default()
        };
        let shown = serde_json::to_string(&c.redacted()).unwrap();
        assert!(!shown.contains("SeCrEt"), "{shown}");
    }

    #[test]
    fn ip_networks() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "::ffff:192.0.2.1".parse().unwrap();
        assert!(one.contains("192.0.2.1".parse().unwrap()));
        assert_eq!(one.to_string(), "192.0.2.1");
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "x",
            "1.2.3.4/",
            "::/129",
            "::ffff:1.2.3.4/129",
        ] {
            let err = bad.parse::<IpNet>().unwrap_err();
            assert_eq!(
                err,
                format!("`{bad}` is not an IP address or CIDR network (e.g. 10.0.0.0/8, ::1)")
            );
        }
        let mapped: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains("10.1.2.3".parse().unwrap()));
        let written: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(written.to_string(), "10.1.2.3/8");
        assert_eq!(
            (written.addr(), written.prefix()),
            ("10.1.2.3".parse().unwrap(), 8)
        );
        assert!(written.contains("10.200.0.1".parse().unwrap()));
        assert_eq!("::1".parse::<IpNet>().unwrap().to_string(), "::1");
    }
}
