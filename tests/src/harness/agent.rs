//! A real `tether-agent` process: its own state and work directories, its log (stderr) in a
//! file printed when a test fails, and the ways it can end (SIGTERM, kill -9).
//!
//! An [`AgentHome`] outlives the processes started on it, so a test can kill an agent and start
//! another on the same journal.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::bins;
use super::tempdir::TempDir;

/// How an agent is started; each field becomes a flag.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub id: String,
    /// `host:port` of each broker, tried in turn.
    pub brokers: Vec<String>,
    pub drain_seconds: u64,
    pub journal_max_bytes: Option<u64>,
    pub max_tasks: Option<u32>,
    /// `RUST_LOG` for the agent (the harness's own `RUST_LOG` wins when set).
    pub log_filter: String,
    /// A configuration file's text (e.g. a `[tasks]` table), passed with `--config`; the
    /// flags above still fill and override it.
    pub config_toml: Option<String>,
    /// A command the agent runs under (e.g. `setpriv` with its options), empty for none.
    pub wrapper: Vec<String>,
    /// More flags, as given (TLS files, credentials).
    pub extra_args: Vec<String>,
    /// `--master-key` each (hex); with no `agent_key` either, the agent runs
    /// `--insecure-unauthenticated`.
    pub master_keys: Vec<String>,
    /// `--agent-key` (hex).
    pub agent_key: Option<String>,
}

impl AgentOptions {
    pub fn new(id: &str, broker: &str) -> Self {
        Self {
            id: id.to_owned(),
            brokers: vec![broker.to_owned()],
            drain_seconds: 10,
            journal_max_bytes: None,
            max_tasks: None,
            log_filter: "info,tether_agent=debug".to_owned(),
            config_toml: None,
            wrapper: Vec::new(),
            extra_args: Vec::new(),
            master_keys: vec![crate::keys::master_public_hex()],
            agent_key: Some(crate::keys::agent_hex(id)),
        }
    }
}

/// Where an agent keeps its journal (`state/`), runs tasks (`work/`) and logs (`agent-N.log`),
/// plus room for the test's own files.
#[derive(Debug)]
pub struct AgentHome {
    dir: TempDir,
    pub options: AgentOptions,
    runs: u32,
}

impl AgentHome {
    pub fn new(options: AgentOptions) -> Self {
        let dir = TempDir::new(&format!("agent-{}", options.id)).expect("temp dir");
        for sub in ["state", "work"] {
            std::fs::create_dir(dir.join(sub)).expect("agent dirs");
        }
        Self {
            dir,
            options,
            runs: 0,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The journal file (see `tether_agent::config::Config::journal_path`).
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir().join("journal")
    }

    /// Size of the journal file now (0 when there is none yet).
    pub fn journal_len(&self) -> u64 {
        std::fs::metadata(self.journal_path()).map_or(0, |m| m.len())
    }

    /// Starts an agent process on this home.
    pub fn start(&mut self) -> AgentProcess {
        let bin = bins::binary("tether-agent").unwrap_or_else(|e| panic!("tether-agent: {e}"));
        self.runs += 1;
        let log_path = self.dir.join(&format!("agent-{}.log", self.runs));
        let log = File::create(&log_path).expect("agent log");
        let o = &self.options;
        let mut cmd = match o.wrapper.split_first() {
            Some((wrapper, args)) => {
                let mut cmd = Command::new(wrapper);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        // Always a file: without `--config` the agent reads /etc/tether/agent.toml when it
        // exists (a machine with the package installed), and would run the tests' tasks as
        // that file's task user. A test may name its own (a provisioned one) in `extra_args`.
        if !o.extra_args.iter().any(|a| a == "--config") {
            let path = self.dir.join("agent.toml");
            let text = o.config_toml.as_deref().unwrap_or("");
            std::fs::write(&path, text).expect("agent config");
            cmd.arg("--config").arg(path);
        }
        cmd.arg("--id").arg(&o.id);
        for b in &o.brokers {
            cmd.arg("--broker").arg(b);
        }
        cmd.arg("--state-dir")
            .arg(self.state_dir())
            .arg("--work-dir")
            .arg(self.work_dir())
            .arg("--drain-seconds")
            .arg(o.drain_seconds.to_string());
        if let Some(n) = o.journal_max_bytes {
            cmd.arg("--journal-max-bytes").arg(n.to_string());
        }
        if let Some(n) = o.max_tasks {
            cmd.arg("--max-tasks").arg(n.to_string());
        }
        for key in &o.master_keys {
            cmd.arg("--master-key").arg(key);
        }
        if let Some(key) = &o.agent_key {
            cmd.arg("--agent-key").arg(key);
        }
        if o.master_keys.is_empty() && o.agent_key.is_none() {
            cmd.arg("--insecure-unauthenticated");
        }
        cmd.args(&o.extra_args);
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| o.log_filter.clone());
        cmd.env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("tether-agent starts");
        AgentProcess::new("tether-agent", child, log_path)
    }
}

/// A running (or ended) agent.
pub type AgentProcess = super::child::Spawned;

/// Sends `signal` to one process (not a group).
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; pid > 1 keeps it
    // from addressing a group or every process.
    unsafe { libc::kill(pid, signal) == 0 }
}
