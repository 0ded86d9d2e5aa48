//! The master's log lines: plain text; under journald (`$JOURNAL_STREAM` set) each line
//! starts with its syslog priority (`<3>` error … `<7>` debug) so the journal keeps the
//! level; or one JSON object per line for log collectors.

use std::io::Write as _;

use log::Level;

/// How log lines are written (`--log-format`, `TETHER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The exit code of a master whose embedded broker panicked (EX_SOFTWARE).
pub const BROKER_PANIC_EXIT: i32 = 70;

/// Panics go to the log like every other line (with a backtrace when `RUST_BACKTRACE` asks).
/// A panic on one of the embedded broker's threads then stops the master with
/// [`BROKER_PANIC_EXIT`]: its router or listener gone, the master would look alive and reach
/// no agent. systemd starts it again (`Restart=on-failure`, 2 s later) and the agents come back
/// with their jittered back-off. Release builds abort on any panic after this hook.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        if crate::broker::is_broker_thread(name) {
            log::error!(
                "the embedded broker's thread '{name}' {info}; the master stops \
                 (exit {BROKER_PANIC_EXIT}) to be started again with a new broker{backtrace}"
            );
            log::logger().flush();
            std::process::exit(BROKER_PANIC_EXIT);
        }
        log::error!("thread '{name}' {info}{backtrace}");
        log::logger().flush();
    }));
}

/// Installs the logger; `RUST_LOG` filters (default `info`, rumqttd's own logs off).
pub fn init(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rumqttd=off"),
    );
    match format {
        LogFormat::Json => {
            builder.format(|buf, record| {
                let line = serde_json::json!({
                    "ts": buf.timestamp_millis().to_string(),
                    "level": record.level().as_str(),
                    "target": record.target(),
                    "msg": record.args().to_string(),
                });
                writeln!(buf, "{line}")
            });
        }
        // journald stamps each line itself: no time, no colour, the priority in front.
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            builder.format(|buf, record| {
                let priority = syslog_priority(record.level());
                writeln!(buf, "<{priority}>{}: {}", record.target(), record.args())
            });
        }
        LogFormat::Text => {}
    }
    builder.init();
}

/// The sd-daemon prefix of a level (syslog's numbers).
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}
