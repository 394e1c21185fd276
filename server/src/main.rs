//! The `cpmstore` binary: the command line of INTERFACES.md section 1.
//!
//! Every `subscriber`, `whitelist` and `cpm` command prints one JSON document on stdout; every failure prints
//! one line `error: ...` on stderr and exits with its class (1 internal, 2 usage,
//! 3 conflict, 4 not found, 5 invalid input). Secrets come only from stdin or are
//! generated, and are printed once, in the JSON.
//!
//! # Layout
//! - [`Cli`] and its subcommands (clap); `main` loads the config, starts logging and
//!   the runtime, and turns a [`CliError`] into its line and exit status.
//! - `serve` hands over to `cpmstore_server::serve`; `migrate` opens storage once.
//! - `subscriber` and `whitelist` call `cpmstore_server::admin` (the same operations
//!   as the HTTP admin API) after `precheck`, which validates what needs no storage.
//! - `cpm deposit` and `cpm event` call `cpmstore_server::cpm` (the same operations as
//!   the CPM HTTP API), reading the object or the report from stdin.
//! - Secrets: `read_stdin_secret` and `password_source`; results printed by `to_json`.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use cpmstore_server::admin::whitelist::OriginQuery;
use cpmstore_server::admin::{self, AddRequest, AdminError, PasswordSource, PskSource};
use cpmstore_server::auth::Secret;
use cpmstore_server::config::{Config, ConfigError, LOG_ENV, LogFormat};
use cpmstore_server::cpm;
use cpmstore_server::push::Format;
use cpmstore_server::validate::{self, InvalidInput};

/// Most bytes read from stdin for a secret (far above the password and PSK limits, so
/// an over-long secret is reported as such rather than cut).
const MAX_STDIN_BYTES: u64 = 64 * 1024;

/// cpmstore: an IMAP message store for OMA CPM services.
#[derive(Debug, Parser)]
#[command(name = "cpmstore", version, about, propagate_version = true)]
struct Cli {
    /// Config file (TOML). Without one, the embedded defaults apply.
    #[arg(long, global = true, env = "CPMSTORE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log line format on stderr (overrides `log.format`).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: IMAP, IMAPS, PSK-TLS, HTTP and SIP listeners.
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Validate the configuration and print it as JSON (secrets elided).
    CheckConfig,
    /// Provision subscribers.
    #[command(subcommand)]
    Subscriber(SubscriberCommand),
    /// Provision push whitelists (OMA Client Provisioning documents).
    #[command(subcommand)]
    Whitelist(WhitelistCommand),
    /// The CPM message store: deposit history objects, apply event reports.
    #[command(subcommand)]
    Cpm(CpmCommand),
}

#[derive(Debug, Subcommand)]
enum CpmCommand {
    /// Deposit one object (an RFC 5322 message read from stdin) into its Conversation
    /// History folder, or with --session into its Session History folder.
    Deposit {
        /// Login name.
        user: String,
        /// The Conversation-ID (the object's header must say the same).
        #[arg(long, value_name = "ID")]
        conversation: String,
        /// The Contribution-ID of the session (the object's header must say the same).
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Flags to store it with, comma-separated or repeated (`\\Seen,$MDNSent`).
        #[arg(long, value_name = "FLAGS", value_delimiter = ',')]
        flags: Vec<String>,
        /// Internal date, RFC 3339 (default: now).
        #[arg(long, value_name = "RFC3339")]
        date: Option<String>,
    },
    /// Apply an event report (JSON read from stdin:
    /// {"events": [{"imdn_message_id", "add", "remove", "expunge"}]}).
    Event {
        /// Login name.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum SubscriberCommand {
    /// Create a subscriber with its addresses and default mailboxes.
    Add {
        /// Login name.
        user: String,
        /// Read the password from stdin (one trailing newline is removed).
        #[arg(long, conflicts_with = "generate_password")]
        password_stdin: bool,
        /// Generate a password and print it once, in the JSON.
        #[arg(long)]
        generate_password: bool,
        /// A public identity (tel:+358401234567, sip:alice@ims.example.net); repeatable.
        #[arg(long = "address", value_name = "URI")]
        addresses: Vec<String>,
        /// Storage quota in bytes (default: unlimited).
        #[arg(long, value_name = "BYTES")]
        quota: Option<u64>,
    },
    /// Replace a subscriber's password.
    SetPassword {
        /// Login name.
        user: String,
        #[command(flatten)]
        source: PasswordChoice,
    },
    /// Set (or replace) a subscriber's PSK for PSK-TLS.
    SetPsk {
        /// Login name.
        user: String,
        /// The PSK identity the client presents.
        #[arg(long, value_name = "ID")]
        identity: String,
        #[command(flatten)]
        source: PskChoice,
    },
    /// Disable a subscriber: no login, no push delivery.
    Disable {
        /// Login name.
        user: String,
    },
    /// Enable a disabled subscriber.
    Enable {
        /// Login name.
        user: String,
    },
    /// Remove a subscriber and all its mail.
    Remove {
        /// Login name.
        user: String,
    },
    /// Print a subscriber as JSON.
    Show {
        /// Login name.
        user: String,
    },
    /// Print every subscriber as a JSON array.
    List,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct PasswordChoice {
    /// Read the password from stdin (one trailing newline is removed).
    #[arg(long)]
    password_stdin: bool,
    /// Generate a password and print it once, in the JSON.
    #[arg(long)]
    generate_password: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct PskChoice {
    /// Read the key as hex from stdin (16 to 64 bytes).
    #[arg(long)]
    key_hex_stdin: bool,
    /// Generate a 32-byte key and print it once, as hex, in the JSON.
    #[arg(long)]
    generate: bool,
}

#[derive(Debug, Subcommand)]
enum WhitelistCommand {
    /// Replace a subscriber's push whitelist with the one a provisioning document gives.
    Load {
        /// Login name.
        user: String,
        /// The document (XML or WBXML); `-` reads stdin.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
        /// The document's encoding; `auto` tells WBXML from XML by its first byte.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// The provisioning context (PROVURL); without it, the default context.
        #[arg(long, value_name = "PROVURL")]
        context: Option<String>,
    },
    /// Print a subscriber's push whitelists (every context) as JSON.
    Show {
        /// Login name.
        user: String,
    },
    /// Remove a subscriber's push whitelist: of one context, or of all without --context
    /// (every push is then accepted).
    Clear {
        /// Login name.
        user: String,
        /// Only this provisioning context (PROVURL).
        #[arg(long, value_name = "PROVURL")]
        context: Option<String>,
    },
    /// Say what the server would decide for a push from an origin, with the matching entry.
    Check {
        /// Login name.
        user: String,
        #[command(flatten)]
        origin: OriginChoice,
        /// The provisioning context (X-Wap-Push-ProvURL); without it, the default context.
        #[arg(long, value_name = "PROVURL")]
        context: Option<String>,
    },
}

/// `--format` of `whitelist load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    Auto,
    Xml,
    Wbxml,
}

impl From<FormatArg> for Format {
    fn from(format: FormatArg) -> Self {
        match format {
            FormatArg::Auto => Format::Auto,
            FormatArg::Xml => Format::Xml,
            FormatArg::Wbxml => Format::Wbxml,
        }
    }
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct OriginChoice {
    /// A PPG by IP address (the TCP peer of an HTTP push, or X-Push-Origin-PPG).
    #[arg(long, value_name = "IP")]
    ppg: Option<String>,
    /// An SMSC address, `ADDR[;ton=N][;npi=N]` (as in X-Push-Origin-SMSC).
    #[arg(long, value_name = "ADDR")]
    smsc: Option<String>,
    /// A P-Asserted-Identity value of an OTA-SIP push from a trusted peer.
    #[arg(long = "sip-pai", value_name = "VALUE")]
    sip_pai: Option<String>,
}

impl OriginChoice {
    /// The one origin given (clap's group makes sure there is exactly one).
    fn query(&self) -> Option<OriginQuery> {
        let OriginChoice { ppg, smsc, sip_pai } = self;
        ppg.clone()
            .map(OriginQuery::Ppg)
            .or_else(|| smsc.clone().map(OriginQuery::Smsc))
            .or_else(|| sip_pai.clone().map(OriginQuery::SipPai))
    }
}

/// A failure: the exit status and the one-line message.
#[derive(Debug)]
struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
}

impl From<AdminError> for CliError {
    fn from(err: AdminError) -> Self {
        CliError::new(err.exit_code(), err.to_string())
    }
}

impl From<InvalidInput> for CliError {
    fn from(err: InvalidInput) -> Self {
        AdminError::from(err).into()
    }
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        CliError::new(err.exit_code(), err.to_string())
    }
}

/// mimalloc rather than glibc's malloc: glibc keeps what a thread freed in that
/// thread's arena (argon2's 19 MiB per login on the blocking pool, SQLite's worker
/// threads), so the RSS after a load stayed at its peak; mimalloc gives freed pages back
/// to the OS (docs/benchmarks.md has the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Usage errors print clap's message and exit 2; --help and --version exit 0.
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&e.into()),
    };
    let serving = matches!(cli.command, Command::Serve);
    init_logging(&config, cli.log_format, serving);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(&CliError::new(
                1,
                format!("cannot start the async runtime: {e}"),
            ));
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `error: ...` as one line and returns the exit status.
fn fail(err: &CliError) -> ExitCode {
    let message = err.message.replace(['\n', '\r'], " ");
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::from(err.code)
}

/// Logs go to stderr: human-readable lines (coloured on a terminal) or JSON. The filter
/// is `CPMSTORE_LOG`, else `log.level`, else `info` for `serve` and `warn` otherwise.
fn init_logging(config: &Config, format: Option<LogFormat>, serving: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serving { "info" } else { "warn" };
    let wanted = std::env::var(LOG_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| config.log.level.clone());
    let (filter, rejected) = match wanted {
        Some(wanted) => match EnvFilter::try_new(&wanted) {
            Ok(filter) => (filter, None),
            Err(_) => (EnvFilter::new(default), Some(wanted)),
        },
        None => (EnvFilter::new(default), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Not `try_init`: it would install tracing-log's own `log` logger, and rustls's
    // records go through `log_bridge` instead (its warnings at DEBUG).
    let installed = match format.unwrap_or(config.log.format) {
        LogFormat::Json => tracing::subscriber::set_global_default(builder.json().finish()),
        LogFormat::Human => tracing::subscriber::set_global_default(
            builder.with_ansi(std::io::stderr().is_terminal()).finish(),
        ),
    };
    if installed.is_ok() {
        let _ = cpmstore_server::log_bridge::install();
    }
    if let Some(rejected) = rejected {
        tracing::warn!(filter = %rejected, "{LOG_ENV} is not a valid log filter; using {default}");
    }
}

/// Dispatches a command. `serve` stays one arm so the server plugs in here.
async fn run(command: Command, config: Config) -> Result<(), CliError> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(&config).await,
        Command::CheckConfig => print_json(&config.redacted()),
        Command::Subscriber(command) => subscriber(command, &config).await,
        Command::Whitelist(command) => whitelist(command, &config).await,
        Command::Cpm(command) => cpm_command(command, &config).await,
    }
}

/// `cpmstore cpm ...`: the operations of the CPM HTTP API, on the store directly.
async fn cpm_command(command: CpmCommand, config: &Config) -> Result<(), CliError> {
    #[derive(Serialize)]
    struct Deposit {
        #[serde(flatten)]
        deposited: cpm::Deposited,
        /// The object was there already; nothing was stored.
        repeated: bool,
    }
    let cpm_error = |e: cpm::CpmError| CliError::new(e.exit_code(), e.to_string());
    let limit = config.limits.max_literal_bytes.saturating_add(1);
    let mut input = Vec::new();
    std::io::stdin()
        .take(limit)
        .read_to_end(&mut input)
        .map_err(|e| CliError::new(1, format!("cannot read stdin: {e}")))?;
    let store = admin::open_store(config).await?;
    let result = match command {
        CpmCommand::Deposit {
            user,
            conversation,
            session,
            flags,
            date,
        } => {
            let request = cpm::DepositRequest {
                user,
                conversation,
                session,
                content: input,
                flags,
                date,
            };
            match cpm::deposit(store.as_ref(), config, request).await {
                Ok(deposited) => print_json(&Deposit {
                    repeated: deposited.repeated,
                    deposited,
                }),
                Err(e) => Err(cpm_error(e)),
            }
        }
        CpmCommand::Event { user } => {
            let applied = async {
                let report = cpm::decode_events(&input)?;
                cpm::apply_events(store.as_ref(), config, &user, &report).await
            }
            .await;
            match applied {
                Ok(applied) => print_json(&applied),
                Err(e) => Err(cpm_error(e)),
            }
        }
    };
    store.close().await;
    result
}

async fn serve(config: Config) -> Result<(), CliError> {
    cpmstore_server::serve::run(config).await.map_err(|e| {
        let message = match &e {
            cpmstore_server::net::ServeError::Storage(_) => format!("{e}; check storage.url"),
            _ => e.to_string(),
        };
        CliError::new(1, message)
    })
}

async fn migrate(config: &Config) -> Result<(), CliError> {
    #[derive(Serialize)]
    struct Migrated {
        migrated: bool,
        url: String,
    }
    let store = admin::open_store(config).await?;
    store.close().await;
    print_json(&Migrated {
        migrated: true,
        url: config.storage.redacted_url(),
    })
}

async fn subscriber(command: SubscriberCommand, config: &Config) -> Result<(), CliError> {
    // Secrets are read before the store is opened, so a bad one fails fast and the
    // order of the messages does not depend on the database.
    let password = match &command {
        SubscriberCommand::Add {
            password_stdin,
            generate_password,
            ..
        } => Some(password_source(*password_stdin, *generate_password)?),
        SubscriberCommand::SetPassword { source, .. } => Some(password_source(
            source.password_stdin,
            source.generate_password,
        )?),
        _ => None,
    };
    let psk = match &command {
        SubscriberCommand::SetPsk { source, .. } if source.key_hex_stdin => {
            Some(PskSource::Hex(read_stdin_secret("PSK")?))
        }
        SubscriberCommand::SetPsk { .. } => Some(PskSource::Generate),
        _ => None,
    };

    precheck(&command, password.as_ref(), psk.as_ref())?;

    let store = admin::open_store(config).await?;
    let store = store.as_ref();
    let result = match command {
        SubscriberCommand::Add {
            user,
            addresses,
            quota,
            ..
        } => {
            let request = AddRequest {
                username: user,
                password: password.unwrap_or(PasswordSource::None),
                addresses,
                quota,
            };
            to_json(admin::add_subscriber(store, config, request).await)
        }
        SubscriberCommand::SetPassword { user, .. } => to_json(
            admin::set_password(
                store,
                config,
                &user,
                password.unwrap_or(PasswordSource::None),
            )
            .await,
        ),
        SubscriberCommand::SetPsk { user, identity, .. } => match psk {
            Some(psk) => to_json(admin::set_psk(store, config, &user, &identity, psk).await),
            None => Err(CliError::new(1, "no PSK source")),
        },
        SubscriberCommand::Disable { user } => to_json(admin::disable(store, &user).await),
        SubscriberCommand::Enable { user } => to_json(admin::enable(store, &user).await),
        SubscriberCommand::Remove { user } => to_json(admin::remove(store, &user).await),
        SubscriberCommand::Show { user } => to_json(admin::show(store, &user).await),
        SubscriberCommand::List => to_json(admin::list(store).await),
    };
    store.close().await;
    // The lower layers' messages may quote the storage URL; never its password.
    let document = result.map_err(|e| CliError::new(e.code, admin::scrub(config, &e.message)))?;
    print_document(&document)
}

async fn whitelist(command: WhitelistCommand, config: &Config) -> Result<(), CliError> {
    use admin::whitelist as wl;
    // Everything about the input is checked before storage is opened: a malformed
    // document is exit 5 even when the database is down, and never touches it.
    let document = match &command {
        WhitelistCommand::Load {
            user,
            file,
            format,
            context,
        } => {
            validate::validate_username(user)?;
            validate::context_name(context.as_deref())?;
            let bytes = read_document(file)?;
            wl::parse_document(config, &bytes, (*format).into())?;
            Some(bytes)
        }
        WhitelistCommand::Show { user } => {
            validate::validate_username(user)?;
            None
        }
        WhitelistCommand::Clear { user, context } => {
            validate::validate_username(user)?;
            if let Some(context) = context {
                validate::context_name(Some(context))?;
            }
            None
        }
        WhitelistCommand::Check {
            user,
            origin,
            context,
        } => {
            validate::validate_username(user)?;
            validate::context_name(context.as_deref())?;
            if let Some(query) = origin.query() {
                query.to_origin()?;
            }
            None
        }
    };

    let store = admin::open_store(config).await?;
    let store = store.as_ref();
    let result = match command {
        WhitelistCommand::Load {
            user,
            format,
            context,
            ..
        } => to_json(
            wl::load(
                store,
                config,
                &user,
                document.as_deref().unwrap_or_default(),
                format.into(),
                context.as_deref(),
            )
            .await,
        ),
        WhitelistCommand::Show { user } => to_json(wl::show(store, &user).await),
        WhitelistCommand::Clear { user, context } => {
            to_json(wl::clear(store, &user, context.as_deref()).await)
        }
        WhitelistCommand::Check {
            user,
            origin,
            context,
        } => match origin.query() {
            Some(query) => {
                to_json(wl::check(store, config, &user, &query, context.as_deref()).await)
            }
            None => Err(CliError::new(
                2,
                "give one origin: --ppg IP, --smsc ADDR or --sip-pai VALUE",
            )),
        },
    };
    store.close().await;
    let document = result.map_err(|e| CliError::new(e.code, admin::scrub(config, &e.message)))?;
    print_document(&document)
}

/// Reads a provisioning document from a file, or from stdin for `-`, refusing one
/// larger than the admin layer accepts (without reading all of it).
fn read_document(file: &std::path::Path) -> Result<Vec<u8>, CliError> {
    let limit = admin::whitelist::MAX_DOCUMENT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| {
        let what = if file.as_os_str() == "-" {
            "stdin".to_owned()
        } else {
            file.display().to_string()
        };
        CliError::new(
            1,
            format!("cannot read the provisioning document from {what}: {e}"),
        )
    })?;
    Ok(bytes)
}

/// Validates what can be validated without storage, so bad input is reported as such
/// (exit 5) even when the database is down. The operations check again.
fn precheck(
    command: &SubscriberCommand,
    password: Option<&PasswordSource>,
    psk: Option<&PskSource>,
) -> Result<(), CliError> {
    let user = match command {
        SubscriberCommand::Add { user, .. }
        | SubscriberCommand::SetPassword { user, .. }
        | SubscriberCommand::SetPsk { user, .. }
        | SubscriberCommand::Disable { user }
        | SubscriberCommand::Enable { user }
        | SubscriberCommand::Remove { user }
        | SubscriberCommand::Show { user } => Some(user),
        SubscriberCommand::List => None,
    };
    if let Some(user) = user {
        validate::validate_username(user)?;
    }
    if let SubscriberCommand::Add { addresses, .. } = command {
        for address in addresses {
            validate::normalize_address(address)?;
        }
    }
    if let SubscriberCommand::SetPsk { identity, .. } = command {
        cpmstore_server::auth::psk::validate_identity(identity).map_err(AdminError::from)?;
    }
    if let Some(PasswordSource::Given(password)) = password {
        cpmstore_server::auth::credentials::check_policy(password).map_err(AdminError::from)?;
    }
    if let Some(PskSource::Hex(hex)) = psk {
        cpmstore_server::auth::psk::parse_key_hex(hex.expose()).map_err(AdminError::from)?;
    }
    Ok(())
}

fn password_source(from_stdin: bool, generate: bool) -> Result<PasswordSource, CliError> {
    Ok(if from_stdin {
        PasswordSource::Given(read_stdin_secret("password")?)
    } else if generate {
        PasswordSource::Generate
    } else {
        PasswordSource::None
    })
}

/// Reads all of stdin as a secret, without one trailing `\n` or `\r\n`.
fn read_stdin_secret(what: &str) -> Result<Secret, CliError> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::new(1, format!("cannot read the {what} from stdin: {e}")))?;
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Secret::new(text)),
        Err(e) => {
            let mut bytes = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut bytes);
            Err(CliError::new(
                5,
                format!("the {what} on stdin is not valid UTF-8; send UTF-8 text"),
            ))
        }
    }
}

/// The JSON text of a result. Pretty-printed: one document, easy for people and
/// scripts alike. The text may hold a generated secret: it goes to stdout only.
fn to_json<T: Serialize>(result: Result<T, AdminError>) -> Result<Secret, CliError> {
    let value = result?;
    serde_json::to_string_pretty(&value)
        .map(Secret::new)
        .map_err(|e| CliError::new(1, format!("cannot encode the result as JSON: {e}")))
}

fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    print_document(&to_json(Ok(value))?)
}

fn print_document(document: &Secret) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", document.expose())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::new(1, format!("cannot write to stdout: {e}")))
}
