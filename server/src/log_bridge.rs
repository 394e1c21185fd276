//! Records of crates that log through the `log` facade (rustls) reach the tracing
//! subscriber through here, as `tracing_log::LogTracer` would pass them, with one
//! change: rustls's warnings are passed at DEBUG.
//!
//! In this process rustls only ever serves clients, so what it warns about is what a
//! client sent: a TLS 1.2 renegotiation attempt ("Sending warning alert
//! NoRenegotiation"), a warning alert, a handshake message out of place. That is a
//! client's misbehaviour, refused by rustls and visible to that client, not something
//! an operator has to act on; at WARN any client could fill the log with it. It stays
//! available with `CPMSTORE_LOG=info,rustls=debug`. rustls's errors keep their level.

use tracing_log::{AsLog as _, LogTracer};

/// The `log` logger of the process: [`LogTracer`] with rustls's warnings lowered.
struct LogBridge(LogTracer);

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let level = level_for(metadata.target(), metadata.level());
        let lowered = log::Metadata::builder()
            .level(level)
            .target(metadata.target())
            .build();
        self.0.enabled(&lowered)
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = level_for(record.target(), record.level());
        if level == record.level() {
            return self.0.log(record);
        }
        self.0.log(
            &log::Record::builder()
                .args(*record.args())
                .level(level)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {}
}

/// The level a `log` record from `target` is passed on at.
fn level_for(target: &str, level: log::Level) -> log::Level {
    let rustls = target == "rustls" || target.starts_with("rustls::");
    if rustls && level == log::Level::Warn {
        log::Level::Debug
    } else {
        level
    }
}

/// Installs the bridge as the `log` logger, passing records up to the level the
/// tracing subscriber just installed as the global default wants. Call it once,
/// after that; an error means another `log` logger was installed first.
pub fn install() -> Result<(), log::SetLoggerError> {
    log::set_boxed_logger(Box::new(LogBridge(LogTracer::new())))?;
    log::set_max_level(tracing::level_filters::LevelFilter::current().as_log());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_warnings_are_lowered_to_debug() {
        use log::Level::{Debug, Error, Info, Trace, Warn};
        for (target, level, passed) in [
            ("rustls::common_state", Warn, Debug),
            ("rustls::check", Warn, Debug),
            ("rustls", Warn, Debug),
            // Errors and the levels below WARN are untouched.
            ("rustls::common_state", Error, Error),
            ("rustls::server::hs", Debug, Debug),
            ("rustls::server::hs", Trace, Trace),
            ("rustls::server::hs", Info, Info),
            // Other crates, including ones whose names only start alike.
            ("rustls_pemfile", Warn, Warn),
            ("rustlsx::y", Warn, Warn),
            ("sqlx::query", Warn, Warn),
            ("cpmstore_server::serve", Warn, Warn),
        ] {
            assert_eq!(level_for(target, level), passed, "{target} {level}");
        }
    }
}
