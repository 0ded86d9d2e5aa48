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
