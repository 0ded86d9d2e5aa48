//! The command line: every command, flag and argument (the man page and the completions are
//! generated from these definitions).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "tetherctl", version, about = "Control a Tether master")]
pub struct Cli {
    /// The master's HTTP API, `http[s]://HOST[:PORT][/PATH]`; repeat (or separate with commas
    /// in TETHER_MASTER) for several masters: each is tried in turn until one answers as the
    /// active master. Default: `masters` in ~/.config/tether/tetherctl.toml, else
    /// http://127.0.0.1:8080.
    #[arg(
        long = "master",
        env = "TETHER_MASTER",
        global = true,
        value_delimiter = ','
    )]
    pub masters: Vec<String>,
    /// A file holding the API token (the master writes its first admin token to
    /// DATA_DIR/admin.token). TETHER_TOKEN, if set, is the token itself.
    #[arg(long, env = "TETHER_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The CA (PEM) that signed an https:// master's certificate.
    #[arg(long, env = "TETHER_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for a master that asks for one; with --client-key.
    #[arg(
        long,
        env = "TETHER_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    #[arg(
        long,
        env = "TETHER_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// `table` for people, `json` for scripts (the master's answers as they are).
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// The master: epoch, broker, connection, counts.
    Status,
    /// List agents with presence and availability, in id order (pages: `--after LAST_ID`).
    Agents {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<String>,
        /// Only agents with this presence (unknown, online, lost, stopped).
        #[arg(long)]
        presence: Option<String>,
        /// Only agents that can take tasks now (`true`) or cannot (`false`).
        #[arg(long)]
        available: Option<bool>,
    },
    /// Switch-over: `tetherctl agent disable pi-1` (no new tasks; what it runs finishes),
    /// `tetherctl agent enable pi-1`.
    Agent {
        #[command(subcommand)]
        command: AgentCmd,
    },
    /// List clusters.
    Clusters,
    /// Define clusters.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// List profiles (named policy sets).
    Profiles,
    /// Define profiles (named policy sets).
    Profile {
        #[command(subcommand)]
        command: ProfileCmd,
    },
    /// Submit a task: `tetherctl submit --agent pi-1 -- /bin/echo hi`.
    Submit(SubmitArgs),
    /// List tasks (in id order; `--after ID` for the next page).
    Tasks {
        /// Only tasks in this state (pending, running, succeeded, failed, ...).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<u64>,
    },
    /// A task with its attempts and events.
    Show {
        id: u64,
        /// The master's JSON as it is, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Workflows: named sequences of steps, each a task with a target and what its failure
    /// does; defining a name again makes its next version.
    Workflow {
        #[command(subcommand)]
        command: WorkflowCmd,
    },
    /// Orders: one run of a workflow version, its steps one after the other.
    Order {
        #[command(subcommand)]
        command: OrderCmd,
    },
    /// Schedules: a task started on a calendar (crontab with a time zone, an interval, dates);
    /// on an agent, handed to it ahead of time so it runs them with the master away.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCmd,
    },
    /// A task's output; `-f` follows it until the task ends.
    Logs {
        id: u64,
        #[arg(short, long)]
        follow: bool,
    },
    /// Kill a task.
    Kill { id: u64 },
    /// Print agent and task changes as they happen (Ctrl-C to stop).
    Watch,
    /// Write what a new device needs (agent config with its keys from the master, broker
    /// credentials) to a folder or tarball.
    Provision {
        /// The device's agent id.
        id: String,
        /// Broker address `HOST:PORT` (or `mqtts://HOST[:PORT]` for TLS, with --ca) as the
        /// device reaches it; repeat for fail-over brokers.
        #[arg(long = "broker", required = true)]
        brokers: Vec<String>,
        /// CA (PEM) that signed the mqtts:// brokers' certificates: copied into the folder as
        /// etc/tether/ca.pem, the agent's `tls_ca_file`.
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long, default_value = "tether")]
        prefix: String,
        /// Generate a broker user (the agent id) and password: the password goes into the
        /// agent's config, its mosquitto hash (`$7$`) into broker/passwd-entry.
        #[arg(long)]
        credentials: bool,
        /// Folder to write (default: ./provision-ID).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also pack the folder into this .tar.gz.
        #[arg(long)]
        tar: Option<PathBuf>,
        /// Give the agent a new MAC key (the old one stops working at once).
        #[arg(long)]
        rotate: bool,
    },
    /// Messages the master dropped because they did not authenticate, per agent and reason.
    Security,
    /// The master's public keys (what agents list as `master_keys`).
    Keys,
    /// List API tokens (names and roles, never secrets).
    Tokens {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<String>,
    },
    /// Create or revoke API tokens (admin).
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Print a shell completion script: `tetherctl completions bash > /etc/bash_completion.d/tetherctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `tetherctl man | man -l -`; `--dir D` writes tetherctl.1
    /// and a page per subcommand (tetherctl-submit.1, ...) into D, as the packages install them.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Decode `mosquitto_sub -F '%t %x'` lines from stdin into JSON lines.
    Decode {
        #[arg(long, default_value = "tether")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCmd {
    /// Define a workflow (or its next version) from a file: TOML (`.toml`) or JSON (any other
    /// name). TOML: `name = "deploy"`, then one `[[steps]]` table per step with `argv` and
    /// `agent` or `cluster`, and optionally `name`, `env`, `cwd`, `profile`, `on_failure`
    /// (`stop`, the default, or `continue`), `retry_delay_ms` and a `[steps.policy]` table
    /// (`retries`, `heartbeat_period_ms`, ... as profiles have them).
    Create { file: PathBuf },
    /// A workflow's steps: its latest version, or `--version N`.
    Show {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// List workflows at their latest version, in name order (pages: `--after LAST_NAME`).
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrderCmd {
    /// Start an order of a workflow (its latest version, or `--version N`); prints its id.
    Start {
        workflow: String,
        #[arg(long)]
        version: Option<u32>,
        /// Follow the order until it ends, printing its steps as they change; exit 0 only if
        /// it succeeded (a failed order exits as `submit --wait` would for the task of the
        /// step that stopped it, a cancelled one with 125).
        #[arg(long)]
        wait: bool,
    },
    /// An order with each step: its task, agent, times and exit.
    Show { id: u64 },
    /// List orders in id order (`--after ID` for the next page).
    List {
        /// Only orders in this state (running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<u64>,
    },
    /// Cancel a running order: its open steps are killed, later steps never start.
    Cancel { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Define a schedule (or its next version) from a file, or from flags: `tetherctl
    /// schedule create backup --cron "0 3 * * *" --zone Europe/Berlin --agent pi-1 --
    /// /usr/local/bin/backup`.
    Create(Box<ScheduleCreate>),
    /// A schedule: its calendar, its next occurrences, the hand-overs its agent holds, its
    /// latest occurrences with the version each ran under, and who changed it.
    Show {
        name: String,
        /// Next occurrences to show (0 to 100).
        #[arg(long, default_value_t = 10)]
        next: u32,
        /// Latest occurrences to show (0 to 1000).
        #[arg(long, default_value_t = 20)]
        recent: u32,
    },
    /// List schedules in id order (`--after ID` for the next page).
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<u64>,
    },
    /// Pause a schedule: nothing more starts; its agent gives back what it holds.
    Pause { name: String },
    /// Resume a paused schedule from its next occurrence.
    Resume { name: String },
    /// Delete a schedule; its occurrences stay in the history.
    Delete { name: String },
}

/// `schedule create FILE`, or `schedule create NAME` with a calendar flag, a target and the
/// program after `--`.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("calendar").args(["cron", "every", "at"]).requires("argv")))]
#[command(group(
    ArgGroup::new("task_flags")
        .multiple(true)
        .args([
            "agent", "cluster", "profile", "env", "cwd", "on_disconnect", "heartbeat_period",
            "heartbeat_timeout", "grace", "max_run", "retries", "lost_after", "output_cap",
            "missed", "late", "argv",
        ])
        .requires("calendar")
))]
pub struct ScheduleCreate {
    /// A definition file, TOML (`*.toml`) or JSON (any other name): `name`, `agent` or
    /// `cluster`, `argv`, optionally `env`, `cwd`, `profile`, `missed`, `late_ms`, a
    /// `[calendar]` table (`cron` with `time_zone`, `every_ms` with `start_ms`, or `at_ms`)
    /// and a `[policy]` table. With --cron, --every or --at: the schedule's name.
    #[arg(value_name = "FILE|NAME")]
    pub file_or_name: String,
    /// Five crontab fields: minute hour day-of-month month day-of-week.
    #[arg(long)]
    pub cron: Option<String>,
    /// The IANA time zone --cron is read in (UTC by default).
    #[arg(long, requires = "cron")]
    pub zone: Option<String>,
    /// A fixed interval (`30s`, `15m`, `1h`; at least 1 s).
    #[arg(long, value_parser = parse_ms)]
    pub every: Option<u64>,
    /// When the interval starts (now by default): `+DURATION`, Unix seconds or RFC 3339.
    #[arg(long, requires = "every", value_parser = parse_when)]
    pub start: Option<u64>,
    /// A one-off date (`+DURATION`, Unix seconds or RFC 3339); repeatable.
    #[arg(long, value_parser = parse_when)]
    pub at: Vec<u64>,
    /// Occurrences not started on time: skip them (the default), run the latest once, or all.
    #[arg(long, value_enum)]
    pub missed: Option<MissedArg>,
    /// How late an occurrence may still start (60s by default).
    #[arg(long, value_parser = parse_ms)]
    pub late: Option<u64>,
    #[command(flatten)]
    pub task: TaskArgs,
    /// The program and its arguments, after `--`.
    #[arg(last = true)]
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MissedArg {
    Skip,
    Once,
    All,
}

impl ScheduleCreate {
    /// The `POST /api/schedules` body of the flags; `None` when the positional is a file.
    pub fn to_json(&self) -> Option<Value> {
        let mut calendar = serde_json::Map::new();
        if let Some(cron) = &self.cron {
            calendar.insert("cron".into(), cron.as_str().into());
        }
        if let Some(zone) = &self.zone {
            calendar.insert("time_zone".into(), zone.as_str().into());
        }
        if let Some(every) = self.every {
            calendar.insert("every_ms".into(), every.into());
        }
        if let Some(start) = self.start {
            calendar.insert("start_ms".into(), start.into());
        }
        if !self.at.is_empty() {
            calendar.insert("at_ms".into(), self.at.clone().into());
        }
        if calendar.is_empty() {
            return None;
        }
        let mut body = self.task.to_json(&self.argv);
        body["name"] = self.file_or_name.as_str().into();
        body["calendar"] = Value::Object(calendar);
        if let Some(missed) = self.missed {
            body["missed"] = match missed {
                MissedArg::Skip => "skip",
                MissedArg::Once => "once",
                MissedArg::All => "all",
            }
            .into();
        }
        if let Some(late) = self.late {
            body["late_ms"] = late.into();
        }
        Some(body)
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a token (or a new secret for an existing name); the secret is printed once.
    Create {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Revoke a token at once.
    Revoke { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// No new tasks for the agent (its clusters use the next member); what it runs finishes.
    Disable { id: String },
    /// The agent takes new tasks again.
    Enable { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create or replace a cluster: `tetherctl cluster create edge --mode round-robin pi-1 pi-2`.
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "round-robin")]
        mode: Mode,
        #[arg(required = true)]
        members: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// Create or replace a profile from the defaults and the given policy options.
    Create {
        name: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    RoundRobin,
    FixedPriority,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnDisconnect {
    Kill,
    Continue,
}

/// Durations take a unit: `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[arg(long, value_enum)]
    pub on_disconnect: Option<OnDisconnect>,
    #[arg(long, value_parser = parse_ms)]
    pub heartbeat_period: Option<u64>,
    #[arg(long, value_parser = parse_ms)]
    pub heartbeat_timeout: Option<u64>,
    #[arg(long, value_parser = parse_ms)]
    pub grace: Option<u64>,
    #[arg(long, value_parser = parse_ms)]
    pub max_run: Option<u64>,
    #[arg(long)]
    pub retries: Option<u32>,
    /// For `continue` tasks in a cluster: run it elsewhere after this long unreachable.
    #[arg(long, value_parser = parse_ms)]
    pub lost_after: Option<u64>,
    /// Output bytes reported at most.
    #[arg(long)]
    pub output_cap: Option<u64>,
}

impl PolicyArgs {
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put(
            "on_disconnect",
            self.on_disconnect.map(|o| {
                json!(match o {
                    OnDisconnect::Kill => "kill",
                    OnDisconnect::Continue => "continue",
                })
            }),
        );
        put(
            "heartbeat_period_ms",
            self.heartbeat_period.map(Value::from),
        );
        put(
            "heartbeat_timeout_ms",
            self.heartbeat_timeout.map(Value::from),
        );
        put("grace_ms", self.grace.map(Value::from));
        put("max_run_ms", self.max_run.map(Value::from));
        put("retries", self.retries.map(Value::from));
        put("lost_after_ms", self.lost_after.map(Value::from));
        put("output_cap", self.output_cap.map(Value::from));
        Value::Object(m)
    }
}

/// What a task runs and where: `submit` and `schedule create` take the same flags.
#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    #[arg(long, conflicts_with = "cluster")]
    pub agent: Option<String>,
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// `KEY=VALUE`, repeatable.
    #[arg(long = "env")]
    pub env: Vec<String>,
    #[arg(long, default_value = "")]
    pub cwd: String,
}

impl TaskArgs {
    /// The task's part of a request body, with `argv` (given after `--`).
    pub fn to_json(&self, argv: &[String]) -> Value {
        let mut body = json!({
            "argv": argv, "env": self.env, "cwd": self.cwd, "policy": self.policy.to_json(),
        });
        for (key, value) in [
            ("agent", &self.agent),
            ("cluster", &self.cluster),
            ("profile", &self.profile),
        ] {
            if let Some(v) = value {
                body[key] = v.as_str().into();
            }
        }
        body
    }
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").args(["agent", "cluster"]).required(true)))]
pub struct SubmitArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// When to start: `+30s` from now, Unix seconds, or an RFC 3339 time. The agent holds the
    /// order until then.
    #[arg(long, value_parser = parse_when)]
    pub start_at: Option<u64>,
    /// Follow the output until the task ends and exit with its exit code (non-zero with a
    /// line on stderr when it was killed, lost, refused or cancelled).
    #[arg(long)]
    pub wait: bool,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

pub fn parse_ms(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 500ms, 10s, 2m"))?;
    let factor = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit '{unit}' (use ms, s, m or h)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too long"))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A point in time, as Unix milliseconds: `+DURATION` from now, Unix seconds, or RFC 3339
/// (`2026-04-01T03:00:00+02:00`).
pub fn parse_when(text: &str) -> Result<u64, String> {
    if let Some(rel) = text.strip_prefix('+') {
        return Ok(now_ms() + parse_ms(rel)?);
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs.saturating_mul(1_000));
    }
    text.parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| u64::try_from(t.as_millisecond()).ok())
        .ok_or_else(|| format!("'{text}' is neither +DURATION, Unix seconds nor an RFC 3339 time"))
}
