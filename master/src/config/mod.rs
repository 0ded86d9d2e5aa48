//! `tether-master run`'s settings from three places: `/etc/tether/master.toml`, `TETHER_*`
//! environment variables and flags. One struct, [`Settings`], is both the flags (clap, whose
//! `env` attribute reads the variables: flag over variable) and the file (serde, every key the
//! flag's name in snake_case, unknown keys refused). [`Layered`] puts the flags over the file,
//! and [`Layered::resolve`] applies the defaults and checks every value, naming the key and,
//! for a value from the file, its line.
//!
//! [`parse_file`] reports every error of a file at once (each key is read on its own), so one
//! edit fixes them all; `tether-master check-config` prints them.

mod resolve;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// Where the configuration is read from when `--config` is not given (a missing file there
/// is no error: the flags may say everything).
pub const DEFAULT_PATH: &str = "/etc/tether/master.toml";

/// Every setting of `tether-master run`; `None` (or an empty list) is "not given here".
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The configuration file [default: /etc/tether/master.toml, when it exists].
    #[arg(long, env = "TETHER_CONFIG", value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where the database lives (created if missing).
    #[arg(long, env = "TETHER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store: a SQLite file path, or postgres://user[:password]@host[:port]/db (or
    /// postgres:///db?host=/run/postgresql for a unix socket) [default: <data_dir>/master.db].
    #[arg(long, env = "TETHER_STORE", value_name = "PATH|URL")]
    pub store: Option<String>,
    /// Address of the embedded MQTT broker (port 0: any free port) [default: 127.0.0.1:1883].
    #[arg(long, env = "TETHER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the HTTP API (port 0: any free port) [default: 127.0.0.1:8080].
    #[arg(long, env = "TETHER_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Use this broker (mqtt://host[:port] or host:port, or mqtts://host[:port] with
    /// --broker-ca) instead of the embedded one.
    #[arg(long, env = "TETHER_BROKER", value_name = "ADDR")]
    pub broker: Option<String>,
    /// CA (PEM) that signed the external mqtts:// broker's certificate.
    #[arg(long, env = "TETHER_BROKER_CA", value_name = "PATH")]
    pub broker_ca: Option<PathBuf>,
    /// Client certificate (PEM chain) for the external broker, with --broker-key.
    #[arg(long, env = "TETHER_BROKER_CERT", value_name = "PATH")]
    pub broker_cert: Option<PathBuf>,
    /// The private key (PEM) of --broker-cert.
    #[arg(long, env = "TETHER_BROKER_KEY", value_name = "PATH")]
    pub broker_key: Option<PathBuf>,
    /// User name at the external broker; the password comes from TETHER_BROKER_PASSWORD.
    #[arg(long, env = "TETHER_BROKER_USERNAME", value_name = "NAME")]
    pub broker_username: Option<String>,
    /// The embedded broker admits only the users of this file: mosquitto's password file
    /// (`user:$7$...` lines, what `tetherctl provision --credentials` and mosquitto_passwd
    /// write; `$6$` and, with a warning, clear passwords are read too), re-read when it
    /// changes. A client's id must be its user name.
    #[arg(long, env = "TETHER_BROKER_PASSWORDS", value_name = "PATH")]
    pub broker_passwords: Option<PathBuf>,
    /// A TLS listener for the embedded broker beside the plain --listen (keep that one on
    /// loopback); port 0: any free port. Needs --tls-cert and --tls-key.
    #[arg(long, env = "TETHER_TLS_LISTEN", value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// The TLS listener's certificate chain (PEM, leaf first).
    #[arg(long, env = "TETHER_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS listener's private key (PEM).
    #[arg(long, env = "TETHER_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on the TLS listener.
    #[arg(long, env = "TETHER_TLS_CLIENT_CA", value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,
    /// rumqttd configuration for the embedded broker (default: the built-in
    /// broker-config/rumqttd.toml).
    #[arg(long, env = "TETHER_BROKER_CONFIG", value_name = "PATH")]
    pub broker_config: Option<PathBuf>,
    /// Most MQTT connections the embedded broker holds at once (agents, the master's own,
    /// tetherctl and debugging clients); a connection beyond it is closed before its CONNACK
    /// and the agent retries with back-off [default: the broker config's
    /// router.max_connections, 10000 built in].
    #[arg(long, env = "TETHER_BROKER_MAX_CONNECTIONS", value_name = "N")]
    pub broker_max_connections: Option<usize>,
    /// Topic prefix [default: tether].
    #[arg(long, env = "TETHER_PREFIX")]
    pub prefix: Option<String>,
    /// The master's heartbeat period in milliseconds (shorter while a task asks for it)
    /// [default: 10000].
    #[arg(long, env = "TETHER_HEARTBEAT_PERIOD_MS", value_name = "MS")]
    pub heartbeat_period_ms: Option<u64>,
    /// How far ahead schedules are planned and handed to agents: a number with s, m, h or d
    /// (`14d`); agents run that long on their own [default: 7d].
    #[arg(long, env = "TETHER_SCHEDULE_HORIZON", value_name = "AGE")]
    pub schedule_horizon: Option<String>,
    /// How long finished tasks are kept, with their attempts, output and events: a number
    /// with s, m, h or d (`90d`), or 0 to keep everything [default: 30d].
    #[arg(long, env = "TETHER_RETAIN_HISTORY", value_name = "AGE")]
    pub retain_history: Option<String>,
    /// When a rescheduled task's outcome is decided, cancel its other attempt.
    // `=false` lets a flag or variable turn off what the file turned on.
    #[arg(long, env = "TETHER_CANCEL_DUPLICATES", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_name = "BOOL")]
    pub cancel_duplicates: Option<bool>,
    /// The ed25519 signing seed (64 hex digits) that signs commands, heartbeats and
    /// presence (default: DATA_DIR/master.key, created on first start).
    #[arg(long, env = "TETHER_SIGNING_KEY", value_name = "PATH")]
    pub signing_key: Option<PathBuf>,
    /// INSECURE: take unauthenticated messages from agents that have no key
    /// (`tetherctl provision` gives each agent one).
    #[arg(long, env = "TETHER_INSECURE_AGENTS", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_name = "BOOL")]
    pub insecure_agents: Option<bool>,
    /// A host name the HTTP API answers to besides localhost and IP addresses (repeat for
    /// more; the variable separates them with commas); any other `Host` is refused, which
    /// stops DNS-rebinding pages.
    #[arg(
        long,
        env = "TETHER_API_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub api_host: Option<Vec<String>>,
    /// An origin (`https://dash.example`) whose pages may send state-changing requests,
    /// besides the API's own (repeat for more).
    #[arg(
        long,
        env = "TETHER_API_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub api_origin: Option<Vec<String>>,
    /// Serve the HTTP API over HTTPS only, with this certificate chain (PEM, leaf first);
    /// needs --api-tls-key.
    #[arg(long, env = "TETHER_API_TLS_CERT", value_name = "PATH")]
    pub api_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --api-tls-cert.
    #[arg(long, env = "TETHER_API_TLS_KEY", value_name = "PATH")]
    pub api_tls_key: Option<PathBuf>,
    /// Require API clients to present a certificate signed by this CA (PEM), besides their
    /// bearer token; needs --api-tls-cert.
    #[arg(long, env = "TETHER_API_CLIENT_CA", value_name = "PATH")]
    pub api_client_ca: Option<PathBuf>,
}

/// One problem with the settings: its key, its line when it is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line in the file; `None` for a flag, a variable or a missing key.
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A file's settings and the line of each key it set.
#[derive(Debug, Clone, Default)]
pub struct FileSettings {
    pub settings: Settings,
    lines: HashMap<String, usize>,
}

/// Reads a configuration text, reporting every error at once (sorted by line).
pub fn parse_file(text: &str) -> Result<FileSettings, Vec<ConfigError>> {
    let (file, errors) = parse_file_partly(text);
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

/// The keys of a text that could be read, and the errors of the others (sorted by line), so
/// the values read can still be checked.
pub fn parse_file_partly(text: &str) -> (FileSettings, Vec<ConfigError>) {
    let index = LineIndex::new(text);
    let (table, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // The keys of a document that did not parse would only add noise.
        let errors = syntax
            .iter()
            .map(|e| ConfigError {
                line: e.span().map(|s| index.line(s.start)),
                key: None,
                message: e.message().trim_end().to_string(),
            })
            .collect();
        return (FileSettings::default(), errors);
    }
    let span = table.span();
    let mut good = DeTable::new();
    let mut lines = HashMap::new();
    let mut errors = Vec::new();
    for (key, value) in table.into_inner() {
        let line = index.line(key.span().start);
        // Each key read alone, through the same serde rules, so every bad one is reported.
        let mut one = DeTable::new();
        one.insert(key.clone(), value.clone());
        match deserialize(one, span.clone()) {
            Ok(_) => {
                lines.insert(key.get_ref().to_string(), line);
                good.insert(key, value);
            }
            Err(e) => errors.push(ConfigError {
                line: Some(line),
                key: Some(key.get_ref().to_string()),
                message: e.message().trim_end().to_string(),
            }),
        }
    }
    errors.sort_by_key(|e| e.line);
    // Every key of `good` was read alone, so reading them together cannot fail.
    let settings = deserialize(good, span).unwrap_or_default();
    (FileSettings { settings, lines }, errors)
}

fn deserialize(
    table: DeTable<'_>,
    span: std::ops::Range<usize>,
) -> Result<Settings, toml::de::Error> {
    Settings::deserialize(ValueDeserializer::from(Spanned::new(
        span,
        DeValue::Table(table),
    )))
}

/// Which file to read: `--config` (it must exist), else [`DEFAULT_PATH`] when it exists.
pub fn read_file(explicit: Option<&Path>) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError {
            line: None,
            key: None,
            message: format!("cannot read {}: {e}", path.display()),
        }),
    }
}

/// The flags (with their variables) over a file's settings.
#[derive(Debug, Clone)]
pub struct Layered {
    settings: Settings,
    /// The line of each value that came from the file (not overridden).
    lines: HashMap<String, usize>,
}

impl Layered {
    pub fn new(flags: Settings, file: Option<FileSettings>) -> Self {
        let FileSettings {
            settings: mut merged,
            mut lines,
        } = file.unwrap_or_default();
        let mut top = flags;
        // A value given on top replaces the file's, and the file's line no longer applies.
        macro_rules! overlay {
            ($($field:ident),* $(,)?) => {
                // Every setting is listed: one left out is a compile error here, not a flag
                // that silently loses to the file.
                let Settings { $($field: _),* } = &top;
                $(
                    if let Some(v) = top.$field.take() {
                        merged.$field = Some(v);
                        lines.remove(stringify!($field));
                    }
                )*
            };
        }
        overlay!(
            config,
            data_dir,
            store,
            listen,
            http,
            broker,
            broker_ca,
            broker_cert,
            broker_key,
            broker_username,
            broker_passwords,
            tls_listen,
            tls_cert,
            tls_key,
            tls_client_ca,
            broker_config,
            broker_max_connections,
            prefix,
            heartbeat_period_ms,
            schedule_horizon,
            retain_history,
            cancel_duplicates,
            signing_key,
            insecure_agents,
            api_host,
            api_origin,
            api_tls_cert,
            api_tls_key,
            api_client_ca,
        );
        Self {
            settings: merged,
            lines,
        }
    }

    /// An error about `key`, at its line when the file gave it.
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: self.lines.get(key).copied(),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

/// Maps byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}
