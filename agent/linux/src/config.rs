//! The agent's configuration: `/etc/tether/agent.toml`, overridden by command-line flags.
//!
//! ```toml
//! id = "pi-kitchen"                 # required: MQTT client id and topic segment
//! brokers = ["mqtts://10.0.0.2:8883", "backup.lan:1883"]   # required, tried in turn
//! prefix = "tether"
//! state_dir = "/var/lib/tether"     # the journal lives here
//! work_dir = "/var/lib/tether/work" # default working directory of tasks
//! journal_max_bytes = 16777216
//! drain_seconds = 30                # on a normal stop: how long to wait for tasks/acks
//! reconnect_min_ms = 500            # first back-off, and the period of the TCP probes between
//!                                   # attempts (crate::probe)
//! reconnect_max_ms = 30000
//! max_tasks = 16                    # attempts held or running at once, chained steps
//!                                   # waiting for their predecessor too (at most 32)
//! clock = "ntp"                     # when the wall clock is trusted (start times, schedules):
//!                                   # "ntp" once the kernel says NTP synchronised it (or the
//!                                   # master's clock confirms it); "trusted" as it reads (a
//!                                   # board with a battery-backed real-time clock)
//! metrics_file = "/var/lib/prometheus/node-exporter/tether-agent.prom"  # optional: figures
//!                                   # for node_exporter's textfile collector (crate::textfile)
//! username = "pi-kitchen"           # optional broker credentials
//! password = "..."
//! tls_ca_file = "/etc/tether/ca.pem"        # required by mqtts:// brokers: the CA that signed
//!                                           # the broker's certificate (no system roots)
//! tls_cert_file = "/etc/tether/client.pem"  # optional client certificate (PEM chain) ...
//! tls_key_file = "/etc/tether/client.key"   # ... and its key, both or neither
//! master_keys = ["3b6a27bc..."]     # required: the master's ed25519 public key(s), hex; up to 4
//!                                   # (old and new while the master's key is rotated)
//! agent_key = "9f86d081..."         # required: this agent's 32-byte MAC key, hex (secret)
//! # insecure_unauthenticated = true # instead of the keys: obey ANY broker client (tests only)
//!
//! [tasks]                           # optional: how tasks run (see crate::confine)
//! user = "tether-task"              # name or uid; needs root or CAP_SETUID/SETGID/KILL
//! group = "tether-task"             # default: the user's primary group
//! groups = ["gpio", "dialout"]      # supplementary groups; default none
//! allow = ["/usr/bin/python3", "/opt/tether/tasks/"]   # programs; `dir/` allows below it
//! max_cpu_seconds = 3600            # RLIMIT_CPU
//! max_memory_bytes = 268435456      # RLIMIT_AS
//! max_open_files = 256              # RLIMIT_NOFILE
//! max_processes = 64                # RLIMIT_NPROC (per task user, all tasks together)
//! ```
//!
//! [`check_config`] reports every problem at once, each with its line, so one edit fixes a
//! file; unknown keys are errors (a misspelt key silently ignored is a default silently used).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tether_core::agent::{Auth, ClockRule};
use tether_core::allowlist::Allowlist;
use tether_core::auth::{AgentKey, KEY_LEN, MasterKeys, parse_hex};
use tether_core::broker_addr::BrokerAddr;
use tether_core::message::AgentId;
use tether_core::topic::{DEFAULT_PREFIX, validate_id, validate_prefix};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::confine::{Principal, TasksConfig};

pub const DEFAULT_PATH: &str = "/etc/tether/agent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tether";
pub const DEFAULT_WORK_DIR: &str = "/var/lib/tether/work";
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Below this a journal cannot hold a useful backlog of results.
pub const MIN_JOURNAL_MAX_BYTES: u64 = 64 * 1024;
// The smallest journal keeps room for the results of the most tasks an agent runs, with
// output dropped first: no `max_tasks` makes a valid journal size useless.
const _: () = assert!(
    MIN_JOURNAL_MAX_BYTES >= tether_core::journal::min_journal_bytes(crate::executor::TASKS)
);
pub const DEFAULT_DRAIN_SECONDS: u64 = 30;
pub const DEFAULT_RECONNECT_MIN_MS: u64 = 500;
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;
pub const DEFAULT_MAX_TASKS: u32 = 16;
/// A Pi has no battery-backed clock: by default it is trusted once NTP has synchronised it.
pub const DEFAULT_CLOCK: ClockRule = ClockRule::Ntp;

/// A broker address, `host:port` or `mqtt://host[:port]` (plain TCP) or `mqtts://host[:port]`
/// (TLS); IPv6 literals in brackets: `[::1]:1883`. Parsed by [`tether_core::broker_addr`], the
/// rules `tetherctl provision` and the master use as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS, verified against `tls_ca_file`.
    pub tls: bool,
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("mqtts://")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Broker {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let a = BrokerAddr::parse(s).map_err(|e| format!("broker `{s}`: {e}"))?;
        Ok(Broker {
            host: a.host.to_string(),
            port: a.port,
            tls: a.tls,
        })
    }
}

/// A valid configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub id: AgentId,
    pub prefix: String,
    pub brokers: Vec<Broker>,
    pub state_dir: PathBuf,
    pub work_dir: PathBuf,
    pub journal_max_bytes: u64,
    pub drain: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Attempts held or running at once, chained steps waiting for their predecessor too.
    pub max_tasks: u32,
    /// Where the figures for node_exporter's textfile collector go, if anywhere.
    pub metrics_file: Option<PathBuf>,
    /// When the wall clock is trusted (`tether_core::agent` documents the rules).
    pub clock: ClockRule,
    pub tasks: TasksConfig,
    /// Set when a broker is `mqtts://`.
    pub tls: Option<Tls>,
    /// The keys that authenticate the master and this agent (or the explicit insecure choice).
    pub auth: Auth,
}

/// The TLS files, checked and loaded when the configuration was.
#[derive(Clone)]
pub struct Tls {
    pub ca_file: PathBuf,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client: Arc<tether_tls::rustls::ClientConfig>,
}

impl PartialEq for Tls {
    // The rustls configuration follows from the files.
    fn eq(&self, other: &Self) -> bool {
        (&self.ca_file, &self.cert_file, &self.key_file)
            == (&other.ca_file, &other.cert_file, &other.key_file)
    }
}

impl Eq for Tls {}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Config {
    // Keeps the password out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("brokers", &self.brokers)
            .field("state_dir", &self.state_dir)
            .field("work_dir", &self.work_dir)
            .field("journal_max_bytes", &self.journal_max_bytes)
            .field("drain", &self.drain)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_tasks", &self.max_tasks)
            .field("metrics_file", &self.metrics_file)
            .field("clock", &self.clock)
            .field("tasks", &self.tasks)
            .field("tls", &self.tls)
            .field(
                "auth",
                &match &self.auth {
                    Auth::Keys { master, .. } => {
                        format!("{} master key(s), agent key ***", master.keys().len())
                    }
                    Auth::Insecure => "INSECURE (unauthenticated)".into(),
                },
            )
            .finish()
    }
}

impl Config {
    /// Where the journal file lives.
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir.join("journal")
    }
}

/// Values from command-line flags; each `Some` replaces the file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub id: Option<String>,
    pub prefix: Option<String>,
    pub brokers: Option<Vec<String>>,
    pub state_dir: Option<PathBuf>,
    pub work_dir: Option<PathBuf>,
    pub journal_max_bytes: Option<u64>,
    pub drain_seconds: Option<u64>,
    pub reconnect_min_ms: Option<u64>,
    pub reconnect_max_ms: Option<u64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub max_tasks: Option<u32>,
    /// `ntp` or `trusted`.
    pub clock: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Hex public keys; replace the file's list.
    pub master_keys: Option<Vec<String>>,
    pub agent_key: Option<String>,
    pub insecure_unauthenticated: Option<bool>,
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line in the file; `None` for a missing key or a bad flag.
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reading a configuration file failed.
#[derive(Debug)]
pub enum LoadError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    Invalid {
        path: PathBuf,
        errors: Vec<ConfigError>,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Invalid { path, errors } => {
                write!(f, "{}: {} error(s)", path.display(), errors.len())?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads and checks the file at `path`, then applies `overrides`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    check_config_with(&text, overrides).map_err(|errors| LoadError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}

/// Checks a configuration text, reporting every error.
pub fn check_config(text: &str) -> Result<Config, Vec<ConfigError>> {
    check_config_with(text, &Overrides::default())
}

/// Checks a configuration text with flag values on top, reporting every error (file errors
/// by line, then flag errors).
pub fn check_config_with(text: &str, overrides: &Overrides) -> Result<Config, Vec<ConfigError>> {
    let lines = LineIndex::new(text);
    let (table, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // Keys of a document that did not parse would only add noise.
        let errors = syntax
            .iter()
            .map(|e| ConfigError {
                line: e.span().map(|s| lines.line(s.start)),
                key: None,
                message: e.message().trim_end().to_string(),
            })
            .collect();
        return Err(errors);
    }
    let mut b = Builder::default();
    let mut errors = Vec::new();
    for (key, value) in table.get_ref() {
        let line = lines.line(key.span().start);
        if key.get_ref() == "tasks" {
            b.tasks = tasks_table(value, &lines, &mut errors);
            continue;
        }
        if let Err(message) = b.set(key.get_ref(), value) {
            errors.push(ConfigError {
                line: Some(line),
                key: Some(key.get_ref().to_string()),
                message,
            });
        }
    }
    errors.sort_by_key(|e| e.line);
    b.apply(overrides, &mut errors);
    b.finish(&lines, errors)
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

/// A value and where it came from: a span in the file, or a flag.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    span: Option<Range<usize>>,
}

#[derive(Debug, Default)]
struct Builder {
    id: Option<At<AgentId>>,
    prefix: Option<At<String>>,
    brokers: Option<At<Vec<Broker>>>,
    state_dir: Option<At<PathBuf>>,
    work_dir: Option<At<PathBuf>>,
    journal_max_bytes: Option<At<u64>>,
    drain_seconds: Option<At<u64>>,
    reconnect_min_ms: Option<At<u64>>,
    reconnect_max_ms: Option<At<u64>>,
    username: Option<At<String>>,
    password: Option<At<String>>,
    max_tasks: Option<At<u32>>,
    metrics_file: Option<At<PathBuf>>,
    clock: Option<At<ClockRule>>,
    tasks: TasksConfig,
    tls_ca_file: Option<At<PathBuf>>,
    tls_cert_file: Option<At<PathBuf>>,
    tls_key_file: Option<At<PathBuf>>,
    master_keys: Option<At<MasterKeys>>,
    agent_key: Option<At<AgentKey>>,
    insecure: Option<At<bool>>,
}

type Value<'i> = Spanned<DeValue<'i>>;

fn at<T>(value: T, v: &Value<'_>) -> Option<At<T>> {
    Some(At {
        value,
        span: Some(v.span()),
    })
}

impl Builder {
    /// Takes one key of the file; the error message names the key.
    fn set(&mut self, key: &str, v: &Value<'_>) -> Result<(), String> {
        match key {
            "id" => self.id = at(id_value(&string(key, v)?, key)?, v),
            "prefix" => self.prefix = at(prefix_value(string(key, v)?, key)?, v),
            "brokers" => {
                let DeValue::Array(items) = v.get_ref() else {
                    return Err(wrong_type(
                        key,
                        "an array of \"host:port\" or \"mqtts://host:port\" strings",
                        v,
                    ));
                };
                let texts = items
                    .iter()
                    .map(|item| string(key, item))
                    .collect::<Result<Vec<_>, _>>()?;
                self.brokers = at(brokers_value(&texts, key)?, v);
            }
            "state_dir" => self.state_dir = at(path_value(string(key, v)?, key)?, v),
            "work_dir" => self.work_dir = at(path_value(string(key, v)?, key)?, v),
            "journal_max_bytes" => {
                self.journal_max_bytes = at(journal_value(integer(key, v)?, key)?, v)
            }
            "drain_seconds" => self.drain_seconds = at(integer(key, v)?, v),
            "reconnect_min_ms" => self.reconnect_min_ms = at(positive(integer(key, v)?, key)?, v),
            "reconnect_max_ms" => self.reconnect_max_ms = at(positive(integer(key, v)?, key)?, v),
            "username" => self.username = at(nonempty(string(key, v)?, key)?, v),
            "password" => self.password = at(string(key, v)?, v),
            "max_tasks" => self.max_tasks = at(max_tasks_value(integer(key, v)?, key)?, v),
            "metrics_file" => self.metrics_file = at(metrics_file_value(string(key, v)?, key)?, v),
            "clock" => self.clock = at(clock_value(&string(key, v)?, key)?, v),
            "tls_ca_file" => self.tls_ca_file = at(path_value(string(key, v)?, key)?, v),
            "tls_cert_file" => self.tls_cert_file = at(path_value(string(key, v)?, key)?, v),
            "tls_key_file" => self.tls_key_file = at(path_value(string(key, v)?, key)?, v),
            "master_keys" => {
                let DeValue::Array(items) = v.get_ref() else {
                    return Err(wrong_type(key, "an array of hex public keys", v));
                };
                let texts = items
                    .iter()
                    .map(|item| string(key, item))
                    .collect::<Result<Vec<_>, _>>()?;
                self.master_keys = at(master_keys_value(&texts, key)?, v);
            }
            "agent_key" => self.agent_key = at(agent_key_value(&string(key, v)?, key)?, v),
            "insecure_unauthenticated" => {
                let DeValue::Boolean(b) = v.get_ref() else {
                    return Err(wrong_type(key, "true or false", v));
                };
                self.insecure = at(*b, v);
            }
            _ => return Err(format!("unknown key `{key}`")),
        }
        Ok(())
    }

    /// Flags replace file values; a bad flag is reported without a line.
    fn apply(&mut self, o: &Overrides, errors: &mut Vec<ConfigError>) {
        fn flag<T>(value: T) -> Option<At<T>> {
            Some(At { value, span: None })
        }
        let mut check = |key: &str, r: Result<(), String>| {
            if let Err(message) = r {
                errors.push(ConfigError {
                    line: None,
                    key: Some(key.to_string()),
                    message: format!("flag --{}: {message}", key.replace('_', "-")),
                });
            }
        };
        if let Some(v) = &o.id {
            check("id", id_value(v, "id").map(|v| self.id = flag(v)));
        }
        if let Some(v) = &o.prefix {
            check(
                "prefix",
                prefix_value(v.clone(), "prefix").map(|v| self.prefix = flag(v)),
            );
        }
        if let Some(v) = &o.brokers {
            check(
                "brokers",
                brokers_value(v, "brokers").map(|v| self.brokers = flag(v)),
            );
        }
        if let Some(v) = &o.state_dir {
            check(
                "state_dir",
                path_value(v.to_string_lossy().into_owned(), "state_dir")
                    .map(|_| self.state_dir = flag(v.clone())),
            );
        }
        if let Some(v) = &o.work_dir {
            check(
                "work_dir",
                path_value(v.to_string_lossy().into_owned(), "work_dir")
                    .map(|_| self.work_dir = flag(v.clone())),
            );
        }
        if let Some(v) = o.journal_max_bytes {
            check(
                "journal_max_bytes",
                journal_value(v, "journal_max_bytes").map(|v| self.journal_max_bytes = flag(v)),
            );
        }
        if let Some(v) = o.drain_seconds {
            self.drain_seconds = flag(v);
        }
        if let Some(v) = o.reconnect_min_ms {
            check(
                "reconnect_min_ms",
                positive(v, "reconnect_min_ms").map(|v| self.reconnect_min_ms = flag(v)),
            );
        }
        if let Some(v) = o.reconnect_max_ms {
            check(
                "reconnect_max_ms",
                positive(v, "reconnect_max_ms").map(|v| self.reconnect_max_ms = flag(v)),
            );
        }
        if let Some(v) = &o.username {
            check(
                "username",
                nonempty(v.clone(), "username").map(|v| self.username = flag(v)),
            );
        }
        if let Some(v) = &o.password {
            self.password = flag(v.clone());
        }
        if let Some(v) = o.max_tasks {
            check(
                "max_tasks",
                max_tasks_value(u64::from(v), "max_tasks").map(|v| self.max_tasks = flag(v)),
            );
        }
        if let Some(v) = &o.clock {
            check(
                "clock",
                clock_value(v, "clock").map(|v| self.clock = flag(v)),
            );
        }
        if let Some(v) = &o.master_keys {
            check(
                "master_keys",
                master_keys_value(v, "master_keys").map(|v| self.master_keys = flag(v)),
            );
        }
        if let Some(v) = &o.agent_key {
            check(
                "agent_key",
                agent_key_value(v, "agent_key").map(|v| self.agent_key = flag(v)),
            );
        }
        if let Some(v) = o.insecure_unauthenticated {
            self.insecure = flag(v);
        }
        for (key, value, slot) in [
            ("tls_ca_file", &o.tls_ca_file, &mut self.tls_ca_file),
            ("tls_cert_file", &o.tls_cert_file, &mut self.tls_cert_file),
            ("tls_key_file", &o.tls_key_file, &mut self.tls_key_file),
        ] {
            if let Some(v) = value {
                check(
                    key,
                    path_value(v.to_string_lossy().into_owned(), key)
                        .map(|_| *slot = flag(v.clone())),
                );
            }
        }
    }

    /// Checks what involves several keys, fills defaults, and builds the config.
    fn finish(
        self,
        lines: &LineIndex,
        mut errors: Vec<ConfigError>,
    ) -> Result<Config, Vec<ConfigError>> {
        let line_of = |span: &Option<Range<usize>>| span.as_ref().map(|s| lines.line(s.start));
        let missing = |key: &str, hint: &str| ConfigError {
            line: None,
            key: Some(key.to_string()),
            message: format!("missing key `{key}` ({hint})"),
        };
        // A key given with a bad value is already reported; "missing" would be noise.
        let reported = |errors: &[ConfigError], key: &str| {
            errors.iter().any(|e| e.key.as_deref() == Some(key))
        };
        if self.id.is_none() && !reported(&errors, "id") {
            errors.push(missing("id", "this agent's id, e.g. id = \"pi-1\""));
        }
        if self.brokers.is_none() && !reported(&errors, "brokers") {
            errors.push(missing("brokers", "e.g. brokers = [\"192.168.1.10:1883\"]"));
        }
        let min = self.reconnect_min_ms.as_ref();
        let max = self.reconnect_max_ms.as_ref();
        let min_ms = min.map_or(DEFAULT_RECONNECT_MIN_MS, |a| a.value);
        let max_ms = max.map_or(DEFAULT_RECONNECT_MAX_MS, |a| a.value);
        if min_ms > max_ms {
            errors.push(ConfigError {
                line: max
                    .and_then(|a| line_of(&a.span))
                    .or_else(|| min.and_then(|a| line_of(&a.span))),
                key: Some("reconnect_min_ms".into()),
                message: format!(
                    "`reconnect_min_ms` ({min_ms}) is above `reconnect_max_ms` ({max_ms})"
                ),
            });
        }
        if let (Some(pw), None) = (&self.password, &self.username) {
            errors.push(ConfigError {
                line: line_of(&pw.span),
                key: Some("password".into()),
                message: "`password` without `username`".into(),
            });
        }
        let tls = self.tls(lines, &mut errors);
        let auth = self.auth(lines, &mut errors);
        let (Some(id), Some(brokers)) = (self.id, self.brokers) else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let value = |a: Option<At<u64>>, default: u64| a.map_or(default, |a| a.value);
        Ok(Config {
            id: id.value,
            prefix: self
                .prefix
                .map_or_else(|| DEFAULT_PREFIX.to_string(), |a| a.value),
            brokers: brokers.value,
            state_dir: self
                .state_dir
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), |a| a.value),
            work_dir: self
                .work_dir
                .map_or_else(|| PathBuf::from(DEFAULT_WORK_DIR), |a| a.value),
            journal_max_bytes: value(self.journal_max_bytes, DEFAULT_JOURNAL_MAX_BYTES),
            drain: Duration::from_secs(value(self.drain_seconds, DEFAULT_DRAIN_SECONDS)),
            reconnect_min: Duration::from_millis(value(
                self.reconnect_min_ms,
                DEFAULT_RECONNECT_MIN_MS,
            )),
            reconnect_max: Duration::from_millis(value(
                self.reconnect_max_ms,
                DEFAULT_RECONNECT_MAX_MS,
            )),
            username: self.username.map(|a| a.value),
            password: self.password.map(|a| a.value),
            max_tasks: self.max_tasks.map_or(DEFAULT_MAX_TASKS, |a| a.value),
            metrics_file: self.metrics_file.map(|a| a.value),
            clock: self.clock.map_or(DEFAULT_CLOCK, |a| a.value),
            tasks: self.tasks,
            tls,
            auth: auth.unwrap_or(Auth::Insecure),
        })
    }

    /// Secure by default: both keys, or an explicit `insecure_unauthenticated = true`, never
    /// both (which one would win is a guess nobody should have to make).
    fn auth(&self, lines: &LineIndex, errors: &mut Vec<ConfigError>) -> Option<Auth> {
        let line_of = |span: &Option<Range<usize>>| span.as_ref().map(|s| lines.line(s.start));
        let reported = |errors: &[ConfigError], key: &str| {
            errors.iter().any(|e| e.key.as_deref() == Some(key))
        };
        let insecure = self.insecure.as_ref().filter(|a| a.value);
        if let Some(insecure) = insecure {
            if self.master_keys.is_some() || self.agent_key.is_some() {
                errors.push(ConfigError {
                    line: line_of(&insecure.span),
                    key: Some("insecure_unauthenticated".into()),
                    message: "`insecure_unauthenticated = true` together with keys: remove one"
                        .into(),
                });
                return None;
            }
            return Some(Auth::Insecure);
        }
        let mut missing = |key: &str, hint: &str| {
            if !reported(errors, key) {
                errors.push(ConfigError {
                    line: None,
                    key: Some(key.to_string()),
                    message: format!(
                        "missing key `{key}` ({hint}; `tetherctl provision` writes it), or set \
                         `insecure_unauthenticated = true` to obey any broker client"
                    ),
                });
            }
        };
        if self.master_keys.is_none() {
            missing("master_keys", "the master's public key(s) in hex");
        }
        if self.agent_key.is_none() {
            missing("agent_key", "this agent's secret MAC key in hex");
        }
        Some(Auth::Keys {
            master: self.master_keys.as_ref()?.value.clone(),
            agent: self.agent_key.as_ref()?.value,
        })
    }

    /// Checks the TLS keys against the brokers and loads the files, so that an unreadable or
    /// invalid PEM file is reported here, under its key, rather than at the first handshake.
    fn tls(&self, lines: &LineIndex, errors: &mut Vec<ConfigError>) -> Option<Tls> {
        let mut error = |key: &str, at: Option<&Option<Range<usize>>>, message: String| {
            errors.push(ConfigError {
                line: at.and_then(|s| s.as_ref()).map(|s| lines.line(s.start)),
                key: Some(key.to_string()),
                message,
            })
        };
        let tls_broker = self
            .brokers
            .as_ref()
            .and_then(|b| b.value.iter().find(|b| b.tls));
        let (cert, key) = (self.tls_cert_file.as_ref(), self.tls_key_file.as_ref());
        if cert.is_some() != key.is_some() {
            let (given, missing) = match cert {
                Some(c) => (("tls_cert_file", &c.span), "tls_key_file"),
                None => (
                    ("tls_key_file", &key.expect("one is set").span),
                    "tls_cert_file",
                ),
            };
            error(
                given.0,
                Some(given.1),
                format!("`{}` needs `{missing}` too", given.0),
            );
            return None;
        }
        let Some(ca) = &self.tls_ca_file else {
            if let Some(b) = tls_broker {
                error(
                    "tls_ca_file",
                    None,
                    format!(
                        "broker `{b}` uses TLS: set `tls_ca_file` to the CA that signed its \
                         certificate"
                    ),
                );
            } else if let Some(c) = cert {
                error(
                    "tls_cert_file",
                    Some(&c.span),
                    "`tls_cert_file` is set but no broker is mqtts://".into(),
                );
            }
            return None;
        };
        if tls_broker.is_none() {
            error(
                "tls_ca_file",
                Some(&ca.span),
                "`tls_ca_file` is set but no broker is mqtts:// (write mqtts://host:port)".into(),
            );
            return None;
        }
        let roots = tether_tls::load_ca(&ca.value)
            .map_err(|e| error("tls_ca_file", Some(&ca.span), format!("`tls_ca_file`: {e}")))
            .ok();
        let identity = match (cert, key) {
            (Some(c), Some(k)) => {
                let certs = tether_tls::load_certs(&c.value)
                    .map_err(|e| {
                        error(
                            "tls_cert_file",
                            Some(&c.span),
                            format!("`tls_cert_file`: {e}"),
                        )
                    })
                    .ok();
                let key = tether_tls::load_key(&k.value)
                    .map_err(|e| {
                        error(
                            "tls_key_file",
                            Some(&k.span),
                            format!("`tls_key_file`: {e}"),
                        )
                    })
                    .ok();
                match (certs, key) {
                    (Some(certs), Some(key)) => Some(Some(tether_tls::Identity { certs, key })),
                    _ => None,
                }
            }
            _ => Some(None),
        };
        let (Some(roots), Some(identity)) = (roots, identity) else {
            return None;
        };
        match tether_tls::client_config(roots, identity) {
            Ok(client) => Some(Tls {
                ca_file: ca.value.clone(),
                cert_file: cert.map(|c| c.value.clone()),
                key_file: key.map(|k| k.value.clone()),
                client: Arc::new(client),
            }),
            Err(e) => {
                error(
                    "tls_cert_file",
                    cert.map(|c| &c.span),
                    format!("`tls_cert_file` and `tls_key_file`: {e}"),
                );
                None
            }
        }
    }
}

fn wrong_type(key: &str, expected: &str, v: &Value<'_>) -> String {
    format!(
        "`{key}` must be {expected}, found {}",
        v.get_ref().type_str()
    )
}

fn string(key: &str, v: &Value<'_>) -> Result<String, String> {
    match v.get_ref() {
        DeValue::String(s) => Ok(s.to_string()),
        _ => Err(wrong_type(key, "a string", v)),
    }
}

fn integer(key: &str, v: &Value<'_>) -> Result<u64, String> {
    let DeValue::Integer(i) = v.get_ref() else {
        return Err(wrong_type(key, "an integer", v));
    };
    let n = i64::from_str_radix(i.as_str(), i.radix())
        .map_err(|_| format!("`{key}`: integer out of range"))?;
    u64::try_from(n).map_err(|_| format!("`{key}` must not be negative"))
}

fn master_keys_value(items: &[String], key: &str) -> Result<MasterKeys, String> {
    if items.is_empty() {
        return Err(format!("`{key}` must list at least one public key"));
    }
    let mut keys = MasterKeys::new();
    for item in items {
        let bytes = parse_hex::<KEY_LEN>(item).map_err(|e| format!("`{key}`: {e}"))?;
        keys.add(bytes)
            .map_err(|e| format!("`{key}`: \"{item}\": {e}"))?;
    }
    Ok(keys)
}

fn agent_key_value(s: &str, key: &str) -> Result<AgentKey, String> {
    // The value is a secret: never echoed.
    parse_hex::<KEY_LEN>(s).map_err(|e| format!("`{key}`: {e}"))
}

fn id_value(s: &str, key: &str) -> Result<AgentId, String> {
    validate_id(s).map_err(|e| format!("`{key}` = \"{s}\": {e}"))
}

fn prefix_value(s: String, key: &str) -> Result<String, String> {
    match validate_prefix(&s) {
        Ok(()) => Ok(s),
        Err(e) => Err(format!("`{key}` = \"{s}\": {e}")),
    }
}

fn brokers_value(items: &[String], key: &str) -> Result<Vec<Broker>, String> {
    if items.is_empty() {
        return Err(format!("`{key}` must list at least one \"host:port\""));
    }
    items
        .iter()
        .map(|s| s.parse::<Broker>().map_err(|e| format!("`{key}`: {e}")))
        .collect()
}

fn path_value(s: String, key: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err(format!("`{key}` must not be empty"));
    }
    Ok(PathBuf::from(s))
}

/// node_exporter's textfile collector reads only `*.prom` files.
fn metrics_file_value(s: String, key: &str) -> Result<PathBuf, String> {
    let path = path_value(s, key)?;
    if path.extension().is_some_and(|e| e == "prom") {
        Ok(path)
    } else {
        Err(format!(
            "`{key}` must name a `.prom` file (node_exporter's textfile collector reads only those)"
        ))
    }
}

fn nonempty(s: String, key: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(format!("`{key}` must not be empty"));
    }
    Ok(s)
}

fn positive(n: u64, key: &str) -> Result<u64, String> {
    if n == 0 {
        return Err(format!("`{key}` must be at least 1"));
    }
    Ok(n)
}

fn journal_value(n: u64, key: &str) -> Result<u64, String> {
    if n < MIN_JOURNAL_MAX_BYTES {
        return Err(format!(
            "`{key}` = {n} is below the minimum of {MIN_JOURNAL_MAX_BYTES}"
        ));
    }
    Ok(n)
}

fn clock_value(s: &str, key: &str) -> Result<ClockRule, String> {
    match s {
        "ntp" => Ok(ClockRule::Ntp),
        "trusted" => Ok(ClockRule::Trusted),
        _ => Err(format!(
            "`{key}` = \"{s}\": \"ntp\" (trusted once NTP has synchronised the kernel's clock) \
             or \"trusted\" (a battery-backed real-time clock)"
        )),
    }
}

fn max_tasks_value(n: u64, key: &str) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("`{key}` must be 1 to {}", u32::MAX))
}

/// The `[tasks]` table; each error carries the line of its own key.
fn tasks_table(v: &Value<'_>, lines: &LineIndex, errors: &mut Vec<ConfigError>) -> TasksConfig {
    let mut tasks = TasksConfig::default();
    let DeValue::Table(table) = v.get_ref() else {
        errors.push(ConfigError {
            line: Some(lines.line(v.span().start)),
            key: Some("tasks".into()),
            message: wrong_type("tasks", "a table ([tasks])", v),
        });
        return tasks;
    };
    let mut user_line = None;
    let mut group_line = None;
    for (key, value) in table.iter() {
        let name = format!("tasks.{}", key.get_ref());
        let line = lines.line(key.span().start);
        let key = name.as_str();
        let limit = |v: &Value<'_>| integer(key, v).and_then(|n| positive(n, key)).map(Some);
        let r = match key {
            "tasks.user" => principal(key, value).map(|p| {
                tasks.user = Some(p);
                user_line = Some(line);
            }),
            "tasks.group" => principal(key, value).map(|p| {
                tasks.group = Some(p);
                group_line = Some(line);
            }),
            "tasks.groups" => match value.get_ref() {
                DeValue::Array(items) => items
                    .iter()
                    .map(|item| principal(key, item))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|g| {
                        tasks.groups = g;
                        group_line = group_line.or(Some(line));
                    }),
                _ => Err(wrong_type(key, "an array of group names or ids", value)),
            },
            "tasks.allow" => allowlist_value(key, value).map(|l| tasks.allow = Some(l)),
            "tasks.max_cpu_seconds" => limit(value).map(|n| tasks.limits.cpu_seconds = n),
            "tasks.max_memory_bytes" => limit(value).map(|n| tasks.limits.memory_bytes = n),
            "tasks.max_open_files" => limit(value).map(|n| tasks.limits.open_files = n),
            "tasks.max_processes" => limit(value).map(|n| tasks.limits.processes = n),
            _ => Err(format!("unknown key `{key}`")),
        };
        if let Err(message) = r {
            errors.push(ConfigError {
                line: Some(line),
                key: Some(name),
                message,
            });
        }
    }
    if let (Some(line), None) = (group_line, user_line) {
        errors.push(ConfigError {
            line: Some(line),
            key: Some("tasks.group".into()),
            message: "`tasks.group` or `tasks.groups` without `tasks.user`".into(),
        });
    }
    tasks
}

/// A user or group: a name, or a numeric id (as an integer).
fn principal(key: &str, v: &Value<'_>) -> Result<Principal, String> {
    match v.get_ref() {
        DeValue::String(s) if s.is_empty() => Err(format!("`{key}` must not be empty")),
        DeValue::String(s) => Ok(Principal::Name(s.to_string())),
        DeValue::Integer(_) => {
            let n = integer(key, v)?;
            u32::try_from(n)
                .map(Principal::Id)
                .map_err(|_| format!("`{key}`: id {n} is out of range"))
        }
        _ => Err(wrong_type(key, "a name or a numeric id", v)),
    }
}

fn allowlist_value(key: &str, v: &Value<'_>) -> Result<Allowlist, String> {
    let DeValue::Array(items) = v.get_ref() else {
        return Err(wrong_type(key, "an array of absolute paths", v));
    };
    if items.is_empty() {
        return Err(format!(
            "`{key}` is empty, which would refuse every task; remove it to allow any program"
        ));
    }
    let mut list = Allowlist::new();
    for item in items {
        let entry = string(key, item)?;
        list.push(&entry)
            .map_err(|e| format!("`{key}`: \"{entry}\" {e}"))?;
    }
    Ok(list)
}
