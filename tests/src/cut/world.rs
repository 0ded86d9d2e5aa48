//! The scenario runner: the real `tether-master` (its embedded rumqttd, or mosquitto), real
//! `tether-agent`s each reaching the broker over cuttable [`Link`]s, and an [`Observer`]
//! recording what the master and the agents say, for the timeline.
//!
//! One [`Run`] is a broker and a cut method; [`runs`] lists those `TETHER_BROKER` and
//! `TETHER_CUT` select, and [`crate::cut_scenario!`] makes one test per broker that plays a
//! scenario with each selected method.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};

use super::link::{CutMethod, Link, in_netns};
use super::observe::{Observer, Seen, unix_ms};
use crate::harness::WAIT;
use crate::harness::agent::{AgentHome, AgentOptions, AgentProcess};
use crate::harness::broker::{BrokerKind, MOSQUITTO, Mosquitto, TestBroker};
use crate::harness::master_proc::{
    MasterHome, MasterOptions, MasterProcess, is_terminal, task_state,
};
use crate::harness::tempdir::TempDir;
use crate::proxy::Fault;

/// The heartbeat settings a task runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub period: Duration,
    pub timeout: Duration,
    /// SIGTERM to SIGKILL.
    pub grace: Duration,
}

impl Settings {
    /// Short settings that keep the suite fast: period 1 s, timeout 3 s.
    pub const SHORT: Settings = Settings {
        period: Duration::from_secs(1),
        timeout: Duration::from_secs(3),
        grace: Duration::from_secs(1),
    };
}

/// The master's allowance for delays on top of a task's timeout before it calls the agent
/// lost (`tether_master::core::Config::delay_allowance`).
pub const DELAY_ALLOWANCE: Duration = Duration::from_secs(2);

/// One way of running a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub broker: BrokerKind,
    pub method: CutMethod,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.broker, self.method)
    }
}

/// Whether `TETHER_BROKER` (`rumqttd|mosquitto|both`, default both) selects `kind`.
pub fn broker_selected(kind: BrokerKind) -> bool {
    match std::env::var("TETHER_BROKER")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("") | Some("both") => true,
        Some(name) => name == kind.to_string(),
    }
}

/// The runs of `kind` this test process should play (empty when the broker is not selected).
pub fn runs(kind: BrokerKind) -> Vec<Run> {
    if !broker_selected(kind) {
        eprintln!("SKIPPED: TETHER_BROKER does not select {kind}");
        return Vec::new();
    }
    let methods = CutMethod::selected().unwrap_or_else(|e| panic!("{e}"));
    methods
        .into_iter()
        .map(|method| Run {
            broker: kind,
            method,
        })
        .collect()
}

/// One test per broker, each playing `async fn scenario(run: Run)` once per selected cut
/// method: `cut_scenario!(kill_on_loss)` gives `kill_on_loss::rumqttd` and
/// `kill_on_loss::mosquitto`.
#[macro_export]
macro_rules! cut_scenario {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use $crate::harness::broker::BrokerKind;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rumqttd() {
                for run in $crate::cut::world::runs(BrokerKind::Rumqttd) {
                    super::$scenario(run).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mosquitto() {
                for run in $crate::cut::world::runs(BrokerKind::Mosquitto) {
                    super::$scenario(run).await;
                }
            }
        }
    )+};
}

/// How the agents of a world are wired.
#[derive(Debug, Clone)]
pub struct Layout {
    pub agents: Vec<String>,
    /// Paths (broker addresses) per agent; more than one is broker fail-over (proxy only).
    pub paths: usize,
    /// What a proxy cut does (a namespace cut is always a pulled cable).
    pub cut_with: Fault,
    pub master_period: Duration,
}

impl Layout {
    /// `n` agents named `NAME-BROKER-METHOD-I`, one path each, black-hole cuts.
    pub fn new(name: &str, run: Run, n: usize) -> Self {
        Self {
            agents: (1..=n)
                .map(|i| format!("{name}-{}-{}-{i}", run.broker, run.method))
                .collect(),
            paths: 1,
            cut_with: Fault::BlackHole,
            master_period: Settings::SHORT.period,
        }
    }
}

/// An agent, its journal and its links.
#[derive(Debug)]
pub struct AgentSlot {
    pub id: String,
    /// Before `home`: the process dies (printing its log on a panic) before its directory goes.
    pub proc: Option<AgentProcess>,
    pub home: AgentHome,
    pub links: Vec<Link>,
}

/// A running scenario world. Fields drop in order: the observer stops polling first, then the
/// agents die, then the master and the broker.
#[derive(Debug)]
pub struct World {
    pub observer: Observer,
    pub agents: Vec<AgentSlot>,
    master: Option<MasterProcess>,
    pub master_home: MasterHome,
    pub external: Option<TestBroker>,
    pub run: Run,
    marks: TempDir,
}

/// An address the host can use for a broker bound to `bind` (unspecified becomes loopback).
fn client_addr(bind: SocketAddr) -> SocketAddr {
    if bind.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bind.port())
    } else {
        bind
    }
}

impl World {
    /// Starts the broker, the master and the agents (each waited for until the master sees it
    /// online). `None` when this run cannot be played here (the reason is printed).
    pub async fn start(run: Run, layout: Layout) -> Option<World> {
        // A namespace's agent reaches the broker over the veth pair: listen everywhere.
        let bind_ip = match run.method {
            CutMethod::Proxy => IpAddr::V4(Ipv4Addr::LOCALHOST),
            CutMethod::Netns => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        if run.method == CutMethod::Netns && layout.paths > 1 {
            eprintln!("SKIPPED ({run}): several broker paths per agent need the proxy method");
            return None;
        }
        let external = match run.broker {
            BrokerKind::Rumqttd => None,
            BrokerKind::Mosquitto => {
                if !std::path::Path::new(MOSQUITTO).exists() {
                    eprintln!("SKIPPED ({run}): {MOSQUITTO} is not installed");
                    return None;
                }
                let m = tokio::task::spawn_blocking(move || Mosquitto::start_on(bind_ip))
                    .await
                    .expect("mosquitto start");
                Some(TestBroker::Mosquitto(m))
            }
        };
        let mut master_home = MasterHome::new(MasterOptions {
            listen_ip: bind_ip,
            external_broker: external
                .as_ref()
                .map(|b| format!("mqtt://{}", client_addr(b.addr()))),
            heartbeat_period_ms: layout.master_period.as_millis() as u64,
            ..MasterOptions::default()
        });
        let master = tokio::task::block_in_place(|| master_home.start());
        let broker: SocketAddr = master.mqtt.parse().expect("mqtt=IP:PORT");
        let observer = Observer::start();
        observer.set_master(Some((master.http.clone(), master.token.clone())));
        let mut agents = Vec::new();
        for id in &layout.agents {
            let mut links = Vec::new();
            for _ in 0..layout.paths {
                links.push(match run.method {
                    CutMethod::Proxy => Link::proxy(broker, layout.cut_with).await,
                    CutMethod::Netns => match Link::netns(broker.port()) {
                        Ok(l) => l,
                        Err(why) => {
                            eprintln!("SKIPPED ({run}): {why}");
                            return None;
                        }
                    },
                });
            }
            let mut options = AgentOptions::new(id, &links[0].agent_broker());
            options.brokers = links.iter().map(Link::agent_broker).collect();
            options.drain_seconds = 5;
            master.provision(&mut options);
            let home = AgentHome::new(options);
            observer.watch_agent(id, home.path().to_path_buf());
            agents.push(AgentSlot {
                id: id.clone(),
                proc: None,
                home,
                links,
            });
        }
        let mut world = World {
            observer,
            agents,
            master: Some(master),
            master_home,
            external,
            run,
            marks: TempDir::new("cut-marks").expect("temp dir"),
        };
        for i in 0..world.agents.len() {
            world.start_agent(i);
        }
        for i in 0..world.agents.len() {
            let id = world.agents[i].id.clone();
            world
                .wait_agent(&id, "online and available", |a| {
                    a["presence"] == "online" && a["available"] == true
                })
                .await;
        }
        Some(world)
    }

    pub fn master(&self) -> &MasterProcess {
        self.master.as_ref().expect("the master runs")
    }

    /// Starts (again) agent `i` on its home, inside its namespace for a netns run.
    pub fn start_agent(&mut self, i: usize) {
        let slot = &mut self.agents[i];
        let home = &mut slot.home;
        let proc = match slot.links[0].namespace() {
            None => home.start(),
            Some(ns) => in_netns(ns, || home.start()).unwrap_or_else(|e| panic!("{e}")),
        };
        slot.proc = Some(proc);
    }

    pub fn agent_proc(&mut self, i: usize) -> &mut AgentProcess {
        self.agents[i].proc.as_mut().expect("agent started")
    }

    /// Cuts agent `i`'s first path; returns when (Unix ms).
    pub fn cut(&self, i: usize) -> u64 {
        self.agents[i].links[0].cut();
        unix_ms()
    }

    pub fn restore(&self, i: usize) -> u64 {
        self.agents[i].links[0].restore();
        unix_ms()
    }

    /// kill -9 of the master process (with it, the embedded broker).
    pub fn kill_master(&mut self) -> u64 {
        self.observer.set_master(None);
        if let Some(mut m) = self.master.take() {
            m.kill9();
        }
        unix_ms()
    }

    /// Starts the master again on the same data directory (and the embedded broker on the
    /// same port, so the agents find it where it was). Returns when the new process was
    /// launched: it may take events before it prints its ready line, so the time after
    /// start() returns is not a lower bound for what it received.
    pub fn restart_master(&mut self) -> u64 {
        assert!(self.master.is_none(), "kill the master first");
        let launched = unix_ms();
        let master = tokio::task::block_in_place(|| self.master_home.start());
        self.observer
            .set_master(Some((master.http.clone(), master.token.clone())));
        self.master = Some(master);
        launched
    }

    /// A blocking API call off the async workers (the proxies run there).
    fn api<T>(&self, f: impl FnOnce(&MasterProcess) -> T) -> T {
        tokio::task::block_in_place(|| f(self.master()))
    }

    pub fn submit(&self, body: &Value) -> u64 {
        self.api(|m| m.submit(body))
    }

    /// Submits a task and waits until the master shows it running.
    pub async fn run_task(&self, body: &Value) -> u64 {
        let id = self.submit(body);
        self.wait_task(id, "running", |v| v["task"]["state"] == "running")
            .await;
        id
    }

    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.api(|m| m.post(path, body))
    }

    /// `GET /api/tasks/ID` (task, attempts, events).
    pub fn task(&self, id: u64) -> Value {
        self.api(|m| m.task(id))
    }

    /// Polls task `id` until `f` accepts it, at most [`WAIT`].
    pub async fn wait_task(&self, id: u64, what: &str, f: impl FnMut(&Value) -> bool) -> Value {
        self.wait_task_within(id, what, WAIT, f).await
    }

    pub async fn wait_task_within(
        &self,
        id: u64,
        what: &str,
        bound: Duration,
        mut f: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let path = format!("/api/tasks/{id}");
            let v = self.api(|m| m.call("GET", &path, None)).ok();
            if let Some(v) = v.filter(|v| f(v)) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: task {id} not {what} within {bound:?}: {}",
                self.run,
                self.api(|m| m.call("GET", &path, None))
                    .map_or_else(|e| e.to_string(), |v| v.to_string())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls agent `id` in `/api/agents` until `f` accepts it, at most [`WAIT`].
    pub async fn wait_agent(&self, id: &str, what: &str, mut f: impl FnMut(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let agents = self.api(|m| m.call("GET", "/api/agents", None)).ok();
            let found = agents
                .as_ref()
                .and_then(Value::as_array)
                .and_then(|l| l.iter().find(|a| a["id"] == id).cloned());
            if found.as_ref().is_some_and(&mut f) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: agent {id} not {what} within {WAIT:?}: {found:?}",
                self.run
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until task `id` is in a terminal state; returns the task view.
    pub async fn wait_done(&self, id: u64) -> Value {
        self.wait_task(id, "settled", |v| is_terminal(task_state(v)))
            .await
    }

    /// A shell script that leaves a mark per start and per end in `tag`'s file, so a test
    /// can count starts and completed runs independently of what the master says.
    pub fn marked(&self, tag: &str, body: &str) -> String {
        let file = self.marks.join(tag);
        let file = file.display();
        format!("echo start >> {file}; {body}; echo end >> {file}")
    }

    /// (starts, ends) marked by [`Self::marked`] scripts of `tag`.
    pub fn marks(&self, tag: &str) -> (usize, usize) {
        let text = std::fs::read_to_string(self.marks.join(tag)).unwrap_or_default();
        let count = |w: &str| text.lines().filter(|l| *l == w).count();
        (count("start"), count("end"))
    }

    /// When the observer first saw agent `agent` log a line containing `text`, at or after
    /// `since` (Unix ms).
    pub fn log_seen(&self, agent: &str, text: &str, since: u64) -> Option<u64> {
        self.observer.first_after(
            since,
            |s| matches!(s, Seen::Log { agent: a, line } if a == agent && line.contains(text)),
        )
    }

    /// When the master's API first showed agent `agent` unavailable, at or after `since`.
    pub fn unavailable_seen(&self, agent: &str, since: u64) -> Option<u64> {
        self.observer.first_after(
            since,
            |s| matches!(s, Seen::Agent { id, available: false, .. } if id == agent),
        )
    }

    /// When the master's API first showed task `task` in one of `states`, at or after `since`.
    pub fn state_seen(&self, task: u64, states: &[&str], since: u64) -> Option<u64> {
        self.observer.first_after(since, |s| {
            matches!(s, Seen::Task { id, state } if *id == task && states.contains(&state.as_str()))
        })
    }
}

/// A task for one agent running `sh -c script` under `settings` and `on_disconnect`.
pub fn task_for(agent: &str, script: &str, on_disconnect: &str, settings: Settings) -> Value {
    json!({
        "agent": agent,
        "argv": ["/bin/sh", "-c", script],
        "policy": policy(on_disconnect, settings),
    })
}

/// The same for a cluster.
pub fn task_for_cluster(cluster: &str, script: &str, on_disconnect: &str, s: Settings) -> Value {
    json!({
        "cluster": cluster,
        "argv": ["/bin/sh", "-c", script],
        "policy": policy(on_disconnect, s),
    })
}

fn policy(on_disconnect: &str, s: Settings) -> Value {
    json!({
        "on_disconnect": on_disconnect,
        "heartbeat_period_ms": s.period.as_millis() as u64,
        "heartbeat_timeout_ms": s.timeout.as_millis() as u64,
        "grace_ms": s.grace.as_millis() as u64,
    })
}

/// The events of kind `kind` in a task view (`GET /api/tasks/ID`), optionally of one attempt.
pub fn events<'a>(view: &'a Value, kind: &str, attempt: Option<u64>) -> Vec<&'a Value> {
    view["events"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|e| e["kind"] == kind)
                .filter(|e| attempt.is_none_or(|a| e["attempt"].as_u64() == Some(a)))
                .collect()
        })
        .unwrap_or_default()
}

/// When the agent recorded the first event of `kind` (its own clock, Unix ms).
pub fn agent_time(view: &Value, kind: &str) -> Option<u64> {
    events(view, kind, None)
        .first()
        .and_then(|e| e["event"]["at_unix_ms"].as_u64())
}

/// When the master stored the first event of `kind` (Unix ms).
pub fn master_time(view: &Value, kind: &str) -> Option<u64> {
    events(view, kind, None)
        .first()
        .and_then(|e| e["received_ms"].as_u64())
}

/// The attempts of a task view.
pub fn attempts(view: &Value) -> Vec<Value> {
    view["attempts"].as_array().cloned().unwrap_or_default()
}
