//! The real `tether-master` binary: started on free ports, its ready line parsed, its HTTP JSON
//! API polled with a deadline, and ended by SIGTERM or kill -9.
//!
//! A [`MasterHome`] owns the data directory and outlives the processes started on it, so a test
//! can kill a master and start another on the same database. A restart keeps the MQTT port
//! (agents were told `host:port` once, like boards in the field), while the HTTP port is new
//! each run (read from the ready line).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::plain_http;
use serde_json::Value;

use super::WAIT;
use super::bins;
use super::child::Spawned;
use super::tempdir::TempDir;

/// How a master is started; each field becomes a flag.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// `--heartbeat-period-ms`: short in tests so silence is noticed in seconds.
    pub heartbeat_period_ms: u64,
    /// `--broker mqtt://host:port`: an external broker instead of the embedded one.
    pub external_broker: Option<String>,
    /// `RUST_LOG` for the master (the harness's own `RUST_LOG` wins when set).
    pub log_filter: String,
    /// The embedded broker's listen IP: `0.0.0.0` lets agents in a network namespace reach
    /// it over their veth pair (the ready line then says 127.0.0.1).
    pub listen_ip: std::net::IpAddr,
    /// More flags, as given (TLS listener, password file).
    pub extra_args: Vec<String>,
}

impl Default for MasterOptions {
    fn default() -> Self {
        Self {
            heartbeat_period_ms: 1_000,
            external_broker: None,
            log_filter: "info,rumqttd=off".to_owned(),
            listen_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            extra_args: Vec::new(),
        }
    }
}

/// The master's data directory (its SQLite store) and logs, kept across restarts.
#[derive(Debug)]
pub struct MasterHome {
    dir: TempDir,
    pub options: MasterOptions,
    /// The embedded broker's port of the first run, reused by later runs.
    mqtt_port: Option<u16>,
    runs: u32,
}

impl MasterHome {
    pub fn new(options: MasterOptions) -> Self {
        Self {
            dir: TempDir::new("master").expect("temp dir"),
            options,
            mqtt_port: None,
            runs: 0,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts a master on this home and waits (bounded) for its ready line.
    pub fn start(&mut self) -> MasterProcess {
        let bin = bins::binary("tether-master").unwrap_or_else(|e| panic!("tether-master: {e}"));
        self.runs += 1;
        let log_path = self.dir.join(&format!("master-{}.log", self.runs));
        let log = File::create(&log_path).expect("master log");
        let o = &self.options;
        let listen = std::net::SocketAddr::new(o.listen_ip, self.mqtt_port.unwrap_or(0));
        let mut cmd = Command::new(bin);
        // Only the flags here: no installed /etc/tether/master.toml, and not the cut tests'
        // TETHER_BROKER selector (rumqttd|mosquitto|both), which is also --broker's variable.
        cmd.arg("run")
            .args(["--config", "/dev/null"])
            .env_remove("TETHER_BROKER")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", &listen.to_string(), "--http", "127.0.0.1:0"])
            .arg("--heartbeat-period-ms")
            .arg(o.heartbeat_period_ms.to_string());
        if let Some(url) = &o.external_broker {
            cmd.arg("--broker").arg(url);
        }
        cmd.args(&o.extra_args);
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| o.log_filter.clone());
        cmd.env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().expect("tether-master starts");
        let stdout = child.stdout.take().expect("master stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // The ready line is the first line; the rest of stdout is drained so the master never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines {}
        });
        let mut process = MasterProcess {
            process: Spawned::new("tether-master", child, log_path),
            mqtt: String::new(),
            http: String::new(),
            epoch: String::new(),
            mqtts: None,
            public_key: String::new(),
            token: String::new(),
            keys_dir: self.dir.join("agent-keys"),
        };
        let line = match rx.recv_timeout(WAIT) {
            Ok(Some(line)) => line,
            _ => panic!(
                "tether-master printed no ready line within {WAIT:?}:\n{}",
                process.log()
            ),
        };
        let ready = ReadyLine::parse(&line)
            .unwrap_or_else(|| panic!("not a ready line: {line:?}\n{}", process.log()));
        if o.external_broker.is_none() {
            let port = ready
                .mqtt
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok());
            self.mqtt_port = self.mqtt_port.or(port);
        }
        process.mqtt = ready.mqtt;
        process.http = ready.http;
        process.epoch = ready.epoch;
        process.mqtts = ready.mqtts;
        process.public_key = ready.key;
        // Written on the first start, kept for the later ones.
        let token_file = self.data_dir().join("admin.token");
        process.token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|e| panic!("{}: {e}", token_file.display()))
            .trim()
            .to_owned();
        process
    }
}

/// `tether-master ready mqtt=HOST:PORT http=ADDR epoch=HEX [mqtts=HOST:PORT] key=HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyLine {
    pub mqtt: String,
    pub http: String,
    pub epoch: String,
    pub mqtts: Option<String>,
    /// The master's public key (empty from a master that prints none).
    pub key: String,
}

impl ReadyLine {
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix("tether-master ready ")?;
        let field = |key: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_owned)
        };
        Some(Self {
            mqtt: field("mqtt=")?,
            http: field("http=")?,
            epoch: field("epoch=")?,
            mqtts: field("mqtts="),
            key: field("key=").unwrap_or_default(),
        })
    }
}

/// An HTTP call that did not give the expected answer.
#[derive(Debug)]
pub enum ApiError {
    Http(ureq::Error),
    Status(u16, String),
    NotJson(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(e) => write!(f, "{e}"),
            Self::Status(s, body) => write!(f, "HTTP {s}: {body}"),
            Self::NotJson(body) => write!(f, "not JSON: {body}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// A running (or ended) master. Dropping it kills it (SIGKILL) and, during a panic, prints its
/// log.
#[derive(Debug)]
pub struct MasterProcess {
    process: Spawned,
    /// `host:port` of its broker, as `tether-agent --broker` takes it.
    pub mqtt: String,
    /// `host:port` of its HTTP API.
    pub http: String,
    pub epoch: String,
    /// `host:port` of the embedded broker's TLS listener, if it has one.
    pub mqtts: Option<String>,
    /// Its public key (hex), what agents take as `--master-key`.
    pub public_key: String,
    /// The admin API token it wrote on its first start.
    pub token: String,
    /// The agents' keys as provisioning handed them out (the master gives each only once).
    keys_dir: PathBuf,
}

impl MasterProcess {
    /// Gives an agent its keys the way `tetherctl provision` does: its MAC key from the
    /// master's API (which hands a key out only when it makes it, so the harness keeps it for
    /// the agent's next start, as the device keeps its config) and the master's public key.
    pub fn provision(&self, options: &mut super::agent::AgentOptions) {
        let kept = self.keys_dir.join(&options.id);
        let key = match std::fs::read_to_string(&kept) {
            Ok(key) => key,
            Err(_) => {
                let answer = self.post(
                    &format!("/api/agents/{}/key", options.id),
                    &serde_json::json!({}),
                );
                let key = answer["agent_key"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no agent key in {answer}"))
                    .to_owned();
                std::fs::create_dir_all(&self.keys_dir).expect("agent keys dir");
                std::fs::write(&kept, &key).expect("agent key kept");
                key
            }
        };
        options.agent_key = Some(key);
        options.master_keys = vec![self.public_key.clone()];
    }

    /// Starts agent `id` of this master (its keys provisioned) at `broker`, with more flags.
    pub fn start_agent(
        &self,
        id: &str,
        broker: &str,
        extra_args: &[&str],
    ) -> (super::agent::AgentHome, super::agent::AgentProcess) {
        let mut options = super::agent::AgentOptions::new(id, broker);
        self.provision(&mut options);
        options.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        let mut home = super::agent::AgentHome::new(options);
        let process = home.start();
        (home, process)
    }

    /// The key provisioning handed out for `id` (through [`Self::provision`] or recorded with
    /// [`Self::keep_key`]).
    pub fn kept_key(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.keys_dir.join(id)).ok()
    }

    /// Records the key `tetherctl provision` wrote into a device config, for the agent's
    /// later starts through [`Self::provision`].
    pub fn keep_key(&self, id: &str, agent_toml: &Path) {
        let toml = std::fs::read_to_string(agent_toml).expect("provisioned agent.toml");
        let key = toml
            .lines()
            .find_map(|l| l.strip_prefix("agent_key = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no agent_key in {toml}"));
        std::fs::create_dir_all(&self.keys_dir).expect("agent keys dir");
        std::fs::write(self.keys_dir.join(id), key).expect("agent key kept");
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// See [`Spawned::wait_log`].
    pub async fn wait_log(&self, needles: &[&str]) -> String {
        self.process.wait_log(needles).await
    }

    /// One API call; a status outside 2xx is an error carrying the body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        let body = body.map(Value::to_string);
        let (status, text) =
            plain_http::request(&self.http, Some(&self.token), method, path, body.as_deref())
                .map_err(ApiError::Http)?;
        if !(200..300).contains(&status) {
            return Err(ApiError::Status(status, text));
        }
        serde_json::from_str(&text).map_err(|_| ApiError::NotJson(text))
    }

    pub fn get(&self, path: &str) -> Value {
        self.call("GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.call("POST", path, Some(body))
            .unwrap_or_else(|e| panic!("POST {path} {body}: {e}\n{}", self.log()))
    }

    /// Submits a task (`POST /api/tasks`) and returns its id.
    pub fn submit(&self, body: &Value) -> u64 {
        let answer = self.post("/api/tasks", body);
        answer["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("submit answered {answer}"))
    }

    /// `GET /api/tasks/ID`: `{task, attempts, events}`.
    pub fn task(&self, id: u64) -> Value {
        self.get(&format!("/api/tasks/{id}"))
    }

    /// The agent entry of `/api/agents` for `id`, if the master knows it.
    pub fn agent(&self, id: &str) -> Option<Value> {
        find_agent(&self.get("/api/agents"), id)
    }

    /// Polls `GET path` until `f` accepts the answer; panics with `what` and the last answer
    /// after [`WAIT`]. Transient call errors (a master still starting) are retried.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        path: &str,
        mut f: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = match self.call("GET", path, None) {
                Ok(v) => {
                    if let Some(t) = f(&v) {
                        return t;
                    }
                    v.to_string()
                }
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "waited {WAIT:?} for {what} (GET {path}); last answer: {last}\n\
                     ---- tether-master log ----\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the master counts agent `id` as available for new tasks.
    pub async fn wait_available(&self, id: &str) {
        self.wait_for(&format!("agent {id} available"), "/api/agents", |v| {
            find_agent(v, id)
                .filter(|a| a["available"] == true)
                .map(drop)
        })
        .await;
    }

    /// Waits until agent `id`'s presence is `presence` (`online`, `lost`, `stopped`).
    pub async fn wait_presence(&self, id: &str, presence: &str) -> Value {
        self.wait_for(&format!("agent {id} {presence}"), "/api/agents", |v| {
            find_agent(v, id).filter(|a| a["presence"] == presence)
        })
        .await
    }

    /// Waits until task `id` is in a terminal state and returns `{task, attempts, events}`.
    pub async fn wait_finished(&self, id: u64) -> Value {
        self.wait_for(
            &format!("task {id} finished"),
            &format!("/api/tasks/{id}"),
            |v| is_terminal(task_state(v)).then(|| v.clone()),
        )
        .await
    }

    /// Waits until task `id` has state `state` and returns `{task, attempts, events}`.
    pub async fn wait_state(&self, id: u64, state: &str) -> Value {
        self.wait_for(
            &format!("task {id} {state}"),
            &format!("/api/tasks/{id}"),
            |v| (task_state(v) == state).then(|| v.clone()),
        )
        .await
    }

    /// A normal stop (the master announces itself stopped); see [`Self::wait_exit`].
    pub fn sigterm(&self) {
        self.process.sigterm();
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the master and its embedded broker.
    pub fn freeze(&self, frozen: bool) {
        self.process
            .signal(if frozen { libc::SIGSTOP } else { libc::SIGCONT });
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self) -> ExitStatus {
        self.process.kill9()
    }

    /// Waits (at most `bound`) for the master to exit by itself; `None` if it still runs.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(bound).await
    }
}

/// The entry for `id` in an `/api/agents` answer.
pub fn find_agent(agents: &Value, id: &str) -> Option<Value> {
    agents.as_array()?.iter().find(|a| a["id"] == id).cloned()
}

/// `task.state` of a `/api/tasks/ID` answer (or of a task object of `/api/tasks`).
pub fn task_state(v: &Value) -> &str {
    v.get("task")
        .unwrap_or(v)
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "succeeded" | "failed" | "cancelled" | "killed" | "lost"
    )
}

/// The agents of a task's attempts, in attempt order.
pub fn attempt_agents(task: &Value) -> Vec<String> {
    task["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|at| at["agent_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line() {
        let r =
            ReadyLine::parse("tether-master ready mqtt=127.0.0.1:1 http=127.0.0.1:2 epoch=0a\n")
                .unwrap();
        assert_eq!(
            (r.mqtt.as_str(), r.http.as_str(), r.epoch.as_str()),
            ("127.0.0.1:1", "127.0.0.1:2", "0a")
        );
        assert_eq!(r.mqtts, None);
        let tls = ReadyLine::parse("tether-master ready mqtt=a:1 http=b:2 epoch=0a mqtts=c:3");
        assert_eq!(tls.unwrap().mqtts.as_deref(), Some("c:3"));
        assert_eq!(ReadyLine::parse("tether-master ready mqtt=x"), None);
        assert_eq!(ReadyLine::parse("hello"), None);
    }
}
