//! `tetherctl`: the Tether master's command line, over its HTTP API, plus `decode` for
//! `mosquitto_sub -F '%t %x'` output. Errors print one line and exit non-zero.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tether_core::presence::Presence;
use tether_core::topic::Topic;
use tether_core::wire;
use tether_master::http;
use tether_master::provision::Request;

mod follow;
mod show;

use follow::{logs, watch};

#[derive(Debug, Parser)]
#[command(name = "tetherctl", version, about = "Control a Tether master")]
struct Cli {
    /// The master's HTTP API (default: `master` in ~/.config/tether/tetherctl.toml, else
    /// http://127.0.0.1:8080).
    #[arg(long, env = "TETHER_MASTER", global = true)]
    master: Option<String>,
    /// A file holding the API token (the master writes its first admin token to
    /// DATA_DIR/admin.token). TETHER_TOKEN, if set, is the token itself.
    #[arg(long, env = "TETHER_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List agents with presence and availability.
    Agents,
    /// List clusters.
    Clusters,
    /// Define clusters.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
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
        ca: Option<std::path::PathBuf>,
        #[arg(long, default_value = "tether")]
        prefix: String,
        /// Generate a broker user (the agent id) and password.
        #[arg(long)]
        credentials: bool,
        /// Folder to write (default: ./provision-ID).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Also pack the folder into this .tar.gz.
        #[arg(long)]
        tar: Option<std::path::PathBuf>,
        /// Give the agent a new MAC key (the old one stops working at once).
        #[arg(long)]
        rotate: bool,
    },
    /// Decode `mosquitto_sub -F '%t %x'` lines from stdin into JSON lines.
    Decode {
        #[arg(long, default_value = "tether")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
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
enum ProfileCmd {
    /// Create or replace a profile from the defaults and the given policy options.
    Create {
        name: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    RoundRobin,
    FixedPriority,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnDisconnect {
    Kill,
    Continue,
}

/// Durations take a unit: `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
#[derive(Debug, clap::Args)]
struct PolicyArgs {
    #[arg(long, value_enum)]
    on_disconnect: Option<OnDisconnect>,
    #[arg(long, value_parser = parse_ms)]
    heartbeat_period: Option<u64>,
    #[arg(long, value_parser = parse_ms)]
    heartbeat_timeout: Option<u64>,
    #[arg(long, value_parser = parse_ms)]
    grace: Option<u64>,
    #[arg(long, value_parser = parse_ms)]
    max_run: Option<u64>,
    #[arg(long)]
    retries: Option<u32>,
    /// For `continue` tasks in a cluster: run it elsewhere after this long unreachable.
    #[arg(long, value_parser = parse_ms)]
    lost_after: Option<u64>,
    /// Output bytes reported at most.
    #[arg(long)]
    output_cap: Option<u64>,
}

impl PolicyArgs {
    fn to_json(&self) -> Value {
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

#[derive(Debug, clap::Args)]
struct SubmitArgs {
    #[arg(long, conflicts_with = "cluster", required_unless_present = "cluster")]
    agent: Option<String>,
    #[arg(long)]
    cluster: Option<String>,
    #[arg(long)]
    profile: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// `KEY=VALUE`, repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    #[arg(long, default_value = "")]
    cwd: String,
    /// When to start: `+30s` from now, or Unix seconds. The agent holds the order until then.
    #[arg(long, value_parser = parse_start_at)]
    start_at: Option<u64>,
    /// Follow the output until the task ends and exit with its exit code (non-zero with a
    /// line on stderr when it was killed, lost, refused or cancelled).
    #[arg(long)]
    wait: bool,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    argv: Vec<String>,
}

fn parse_ms(text: &str) -> Result<u64, String> {
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_start_at(text: &str) -> Result<u64, String> {
    match text.strip_prefix('+') {
        Some(rel) => Ok(now_ms() + parse_ms(rel)?),
        None => text
            .parse::<u64>()
            .map(|s| s.saturating_mul(1_000))
            .map_err(|_| format!("'{text}' is neither +DURATION nor Unix seconds")),
    }
}

/// One line for the user; the exit code says it failed.
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

struct Api {
    authority: String,
    token: Option<String>,
}

/// `~/.config/tether/tetherctl.toml`: `master = "http://…"`, `token_file = "…"` or
/// `token = "tether_…"` (keep that file 0600).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    master: Option<String>,
    token: Option<String>,
    token_file: Option<std::path::PathBuf>,
}

fn settings() -> Result<Settings, Failure> {
    let Some(home) = std::env::var_os("HOME") else {
        return Ok(Settings::default());
    };
    let path = std::path::Path::new(&home).join(".config/tether/tetherctl.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| Failure(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(Failure(format!("{}: {e}", path.display()))),
    }
}

/// The API client from the flags, the environment and the settings file, in that order.
fn api(master: Option<&str>, token_file: Option<&std::path::Path>) -> Result<Api, Failure> {
    let settings = settings()?;
    let master = master
        .map(str::to_owned)
        .or(settings.master)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| Failure(format!("token file {}: {e}", path.display())))
    };
    let token = match (std::env::var("TETHER_TOKEN").ok(), token_file) {
        (Some(t), _) if !t.is_empty() => Some(t),
        (_, Some(path)) => Some(read(path)?),
        _ => match (settings.token, settings.token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(read(&path)?),
            (None, None) => None,
        },
    };
    Ok(Api {
        authority: http::authority(&master)?,
        token,
    })
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let body = body.map(Value::to_string);
        let (status, text) = http::request(
            &self.authority,
            self.token.as_deref(),
            method,
            path,
            body.as_deref(),
        )?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            Failure(format!(
                "the master answered HTTP {status} with something that is not JSON"
            ))
        })?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let msg = value["error"].as_str().unwrap_or("unknown error");
            Err(Failure(format!("{msg} (HTTP {status})")))
        }
    }

    fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call("GET", path, None)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.call("POST", path, Some(body))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Decode { prefix } => decode(&prefix),
        command => {
            api(cli.master.as_deref(), cli.token_file.as_deref()).and_then(|api| run(&api, command))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("tetherctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(api: &Api, command: Cmd) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match command {
        Cmd::Agents => {
            writeln!(
                out,
                "{:<20} {:<9} {:<9} {:>9}  ATTEMPTS",
                "AGENT", "PRESENCE", "AVAILABLE", "SILENT"
            )?;
            for a in list(&api.get("/api/agents")?) {
                writeln!(
                    out,
                    "{:<20} {:<9} {:<9} {:>8.1}s  {}",
                    text(&a["id"]),
                    text(&a["presence"]),
                    if a["available"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    a["silent_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                    a["attempts"]
                )?;
            }
        }
        Cmd::Clusters => {
            writeln!(out, "{:<20} {:<15} MEMBERS", "CLUSTER", "MODE")?;
            for c in list(&api.get("/api/clusters")?) {
                let members: Vec<String> = list(&c["members"]).iter().map(text).collect();
                writeln!(
                    out,
                    "{:<20} {:<15} {}",
                    text(&c["name"]),
                    text(&c["mode"]),
                    members.join(" ")
                )?;
            }
        }
        Cmd::Cluster {
            command:
                ClusterCmd::Create {
                    name,
                    mode,
                    members,
                },
        } => {
            let mode = match mode {
                Mode::RoundRobin => "round-robin",
                Mode::FixedPriority => "fixed-priority",
            };
            api.post(
                "/api/clusters",
                &json!({ "name": name, "mode": mode, "members": members }),
            )?;
            writeln!(out, "cluster {name} ({mode}) defined")?;
        }
        Cmd::Profile {
            command: ProfileCmd::Create { name, policy },
        } => {
            api.post(
                "/api/profiles",
                &json!({ "name": name, "policy": policy.to_json() }),
            )?;
            writeln!(out, "profile {name} defined")?;
        }
        Cmd::Submit(s) => {
            let mut body = json!({
                "argv": s.argv, "env": s.env, "cwd": s.cwd,
                "policy": s.policy.to_json(),
            });
            let put = |body: &mut Value, k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    body[k] = v;
                }
            };
            put(&mut body, "agent", s.agent.map(Value::from));
            put(&mut body, "cluster", s.cluster.map(Value::from));
            put(&mut body, "profile", s.profile.map(Value::from));
            put(&mut body, "start_at_ms", s.start_at.map(Value::from));
            let answer = api.post("/api/tasks", &body)?;
            let id = answer["id"].as_u64().unwrap_or(0);
            if s.wait {
                let code = follow::wait(api, id, &mut out)?;
                if code != 0 {
                    std::process::exit(code);
                }
            } else {
                writeln!(out, "{id}")?;
            }
        }
        Cmd::Tasks {
            state,
            limit,
            after,
        } => {
            let mut query = Vec::new();
            if let Some(state) = state {
                query.push(format!("state={state}"));
            }
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(after) = after {
                query.push(format!("after={after}"));
            }
            let path = if query.is_empty() {
                "/api/tasks".to_owned()
            } else {
                format!("/api/tasks?{}", query.join("&"))
            };
            writeln!(
                out,
                "{:>6} {:<12} {:<22} {:<9} COMMAND",
                "ID", "STATE", "TARGET", "POLICY"
            )?;
            for t in list(&api.get(&path)?) {
                writeln!(out, "{}", task_line(&t))?;
            }
        }
        Cmd::Show { id, json } => {
            let v = api.get(&format!("/api/tasks/{id}"))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let output = api.get(&format!("/api/tasks/{id}/output"))?;
                let agents = api.get("/api/agents")?;
                write!(out, "{}", show::render(&v, &output, &agents, now_ms()))?;
            }
        }
        Cmd::Logs { id, follow } => logs(api, id, follow, &mut out)?,
        Cmd::Kill { id } => {
            api.post(&format!("/api/tasks/{id}/kill"), &json!({}))?;
            writeln!(out, "kill of task {id} requested")?;
        }
        Cmd::Watch => watch(api, &mut out)?,
        Cmd::Provision {
            id,
            brokers,
            ca,
            prefix,
            credentials,
            out,
            tar,
            rotate,
        } => {
            tether_core::topic::validate_id(&id)
                .map_err(|e| Failure(format!("agent id `{id}`: {e}")))?;
            // Bad brokers or a missing CA are told before the master hands out (or rotates) keys.
            tether_master::provision::check_brokers(&brokers, ca.as_deref())
                .map_err(|e| Failure(e.to_string()))?;
            let keys = api.post(
                &format!("/api/agents/{id}/key"),
                &json!({ "rotate": rotate }),
            )?;
            let hex = |v: &Value| v.as_str().map(str::to_owned);
            let keys = tether_master::provision::AgentKeys {
                agent_key: hex(&keys["agent_key"])
                    .ok_or_else(|| Failure("the master returned no agent key".into()))?,
                master_keys: list(&keys["master_keys"]).iter().filter_map(hex).collect(),
            };
            provision(
                Request {
                    id,
                    brokers,
                    ca,
                    prefix,
                    credentials,
                    keys,
                },
                out,
                tar,
            )?;
        }
        Cmd::Decode { .. } => unreachable!("handled without the API"),
    }
    Ok(())
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn task_line(t: &Value) -> String {
    let argv: Vec<String> = list(&t["argv"]).iter().map(text).collect();
    format!(
        "{:>6} {:<12} {:<22} {:<9} {}",
        text(&t["id"]),
        text(&t["state"]),
        format!(
            "{} {}",
            text(&t["target"]["kind"]),
            text(&t["target"]["name"])
        ),
        text(&t["policy"]["on_disconnect"]),
        argv.join(" ")
    )
}

/// One `mosquitto_sub -F '%t %x'` line as JSON.
fn decode_line(prefix: &str, line: &str) -> Value {
    let (topic, hex) = line.split_once(' ').unwrap_or((line, ""));
    let hex = hex.trim();
    let payload = match unhex(hex) {
        Some(p) => p,
        None => return json!({ "topic": topic, "error": "payload is not hex (use -F '%t %x')" }),
    };
    match Topic::parse(prefix, topic) {
        Ok(Topic::AgentPresence(_) | Topic::MasterPresence) => {
            let text = String::from_utf8_lossy(&payload).into_owned();
            match Presence::parse(&payload) {
                Ok(p) => json!({
                    "topic": topic,
                    "presence": text,
                    "state": match p.state {
                        tether_core::presence::State::Online => "online",
                        tether_core::presence::State::Lost => "lost",
                        tether_core::presence::State::Stopped => "stopped",
                    },
                    "incarnation": format!("{:08x}", p.incarnation),
                    "tagged": text.split(' ').next_back().is_some_and(|w| w.len() >= 32),
                }),
                Err(e) if payload.is_empty() => {
                    json!({ "topic": topic, "presence": "", "note": format!("cleared ({e})") })
                }
                Err(e) => json!({ "topic": topic, "presence": text, "error": e.to_string() }),
            }
        }
        _ => match wire::decode_envelope(&payload) {
            Ok((msg, scheme)) => match serde_json::to_value(&msg) {
                // The trailer is shown, not checked: decode reads, it does not trust.
                Ok(m) => json!({ "topic": topic, "auth": format!("{scheme:?}"), "message": m }),
                Err(e) => json!({ "topic": topic, "error": e.to_string() }),
            },
            Err(e) => json!({ "topic": topic, "error": e.to_string(), "bytes": payload.len() }),
        },
    }
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn decode(prefix: &str) -> Result<(), Failure> {
    tether_core::topic::validate_prefix(prefix).map_err(|e| Failure(format!("--prefix: {e}")))?;
    let stdin = io::stdin().lock();
    let mut out = io::stdout().lock();
    for line in stdin.lines() {
        let line = line?;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        writeln!(out, "{}", decode_line(prefix, line))?;
        // One line per message as it arrives: a pipe from mosquitto_sub is read live.
        out.flush()?;
    }
    Ok(())
}

fn provision(
    request: Request,
    out: Option<std::path::PathBuf>,
    tar: Option<std::path::PathBuf>,
) -> Result<(), Failure> {
    let dir = out.unwrap_or_else(|| format!("provision-{}", request.id).into());
    let done =
        tether_master::provision::write(&dir, &request).map_err(|e| Failure(e.to_string()))?;
    for file in &done.files {
        println!("wrote {}", file.display());
    }
    if done.password.is_some() {
        println!(
            "broker user {}: add broker/passwd-entry to the broker's password file",
            request.id
        );
    }
    if let Some(tar) = tar {
        let status = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&tar)
            .arg("-C")
            .arg(&dir)
            .arg(".")
            .status()
            .map_err(|e| Failure(format!("cannot run tar: {e}")))?;
        if !status.success() {
            return Err(Failure(format!("tar failed ({status})")));
        }
        println!("wrote {}", tar.display());
    }
    Ok(())
}
