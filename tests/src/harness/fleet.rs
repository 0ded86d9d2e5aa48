//! A whole Tether installation on loopback: the real `tether-master` (embedded broker) and
//! real `tether-agent` processes, each agent with its own state directory.

use serde_json::{Value, json};

use super::agent::{AgentHome, AgentOptions, AgentProcess};
use super::master_proc::{MasterHome, MasterOptions, MasterProcess};

/// One agent: its home (journal, work dir, logs) and the process running on it, if any.
#[derive(Debug)]
pub struct FleetAgent {
    pub home: AgentHome,
    pub process: Option<AgentProcess>,
}

impl FleetAgent {
    pub fn id(&self) -> &str {
        &self.home.options.id
    }

    pub fn process(&mut self) -> &mut AgentProcess {
        self.process.as_mut().expect("agent process running")
    }
}

/// A master and its agents. Dropping it kills every process (agents first).
#[derive(Debug)]
pub struct Fleet {
    pub agents: Vec<FleetAgent>,
    pub master: Option<MasterProcess>,
    pub master_home: MasterHome,
}

impl Fleet {
    /// Starts a master (heartbeat period `heartbeat_period_ms`) and one agent per id, and waits
    /// until the master counts every agent available.
    pub async fn start(ids: &[&str], heartbeat_period_ms: u64) -> Self {
        let mut master_home = MasterHome::new(MasterOptions {
            heartbeat_period_ms,
            ..MasterOptions::default()
        });
        let master = master_home.start();
        let mut fleet = Self {
            agents: Vec::new(),
            master: Some(master),
            master_home,
        };
        for id in ids {
            let mut options = AgentOptions::new(id, &fleet.master().mqtt);
            fleet.master().provision(&mut options);
            let mut home = AgentHome::new(options);
            let process = Some(home.start());
            fleet.agents.push(FleetAgent { home, process });
        }
        for id in ids {
            fleet.master().wait_available(id).await;
        }
        fleet
    }

    pub fn master(&self) -> &MasterProcess {
        self.master.as_ref().expect("master running")
    }

    pub fn agent(&mut self, id: &str) -> &mut FleetAgent {
        self.agents
            .iter_mut()
            .find(|a| a.home.options.id == id)
            .unwrap_or_else(|| panic!("no agent {id} in the fleet"))
    }

    /// kill -9 of the master, then a new master on the same data directory and MQTT port.
    pub fn restart_master_after_kill9(&mut self) -> &MasterProcess {
        if let Some(mut m) = self.master.take() {
            m.kill9();
        }
        self.master = Some(self.master_home.start());
        self.master()
    }

    /// Defines a cluster (`mode`: `round-robin` or `fixed-priority`).
    pub fn cluster(&self, name: &str, mode: &str, members: &[&str]) {
        self.master().post(
            "/api/clusters",
            &json!({ "name": name, "mode": mode, "members": members }),
        );
    }
}

impl Fleet {
    /// `tetherctl` pointed at this fleet's master with its admin token; add the arguments.
    pub fn tetherctl_command(&self) -> std::process::Command {
        let master = self.master();
        let mut cmd = std::process::Command::new(
            super::bins::binary("tetherctl").unwrap_or_else(|e| panic!("tetherctl: {e}")),
        );
        cmd.env("TETHER_MASTER", format!("http://{}", master.http))
            .env("TETHER_TOKEN", &master.token);
        cmd
    }

    /// Runs `tetherctl ARGS` to its end: its exit code, stdout and stderr.
    pub fn tetherctl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = self
            .tetherctl_command()
            .args(args)
            .output()
            .expect("tetherctl runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Agents first: their logs print (on a panic) before the master's.
        for a in &mut self.agents {
            a.process.take();
        }
        self.master.take();
    }
}

/// A submit body: `argv` to `target` (`{"cluster": ..}` or `{"agent": ..}` fields merged in),
/// with `policy` overrides.
pub fn task(target: Value, argv: &[&str], policy: Value) -> Value {
    let mut body = json!({ "argv": argv, "policy": policy });
    if let (Some(body), Some(target)) = (body.as_object_mut(), target.as_object()) {
        for (k, v) in target {
            body.insert(k.clone(), v.clone());
        }
    }
    body
}

/// The tests' fast policy: heartbeats every second, the peer lost after 3 s; `on_disconnect`
/// as given.
pub fn fast_policy(on_disconnect: &str) -> Value {
    json!({
        "on_disconnect": on_disconnect,
        "heartbeat_period_ms": 1000,
        "heartbeat_timeout_ms": 3000,
    })
}
