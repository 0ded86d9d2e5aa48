//! A whole Tether deployment in virtual time: the model broker, N agent cores with their disks,
//! processes and MQTT clients, and a master, stepped together and checked against the
//! invariants of [`super::invariants`] at every step.
//!
//! The master is anything that implements [`SimMaster`]: the scripted [`MasterScript`] here
//! (`World::new`), or the real master core with its SQLite store in [`super::system`]
//! (`World::with_master`). The agent side is the same for both.
//!
//! Each agent is tether-agent's own [`Executor`] around the core, with the binary's capacities
//! and defaults, hosted by [`SimHost`] (what stays a model is listed there). The world feeds
//! each executor its inputs (connections, messages, durability, process life, timers) and hands
//! what it did to the [`oracle`](super::oracle), which checks it.
//!
//! ```text
//! let mut w = World::new(WorldConfig::new(seed, 1).replay("TETHER_SIM_SEED={seed} cargo test ..."));
//! let task = w.submit(at(5), 0, policy(OnDisconnect::Kill, 10, 60), Program::new(mins(30)), None);
//! w.schedule(at(60), Step::MasterDown);
//! w.run_until(at(600));                // panics with seed, invariant, trace tail, replay
//! w.heal(Duration::from_secs(900));     // network up, everyone back: invariant 2
//! ```
//!
//! Wall clock: Unix milliseconds are [`WALL0_MS`] plus the virtual time; agents learn it with
//! `handle_wall_clock` at every start.

mod agents;
mod scenario;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tether_agent::executor::{CoreAgent, Executor};
use tether_core::message::{StrList, TaskRef, TaskSpec};
use tether_core::policy::Policy;
use tether_core::{Duration, Instant};

use self::agents::Node;
pub use self::scenario::{
    Observed, Outage, ScriptOrder, SimMaster, Step, Who, WorldConfig, policy, wall_ms,
};
use super::client::ClientConfig;
use super::clock::{Clock, Timeline};
use super::disk::Disk;
use super::invariants::{Invariant, Ledger, SignalRecord, Violation, secs};
use super::link::Fault;
use super::master_script::MasterScript;
use super::mqtt::QoS;
use super::net::{ClientKey, Net};
use super::oracle::AgentWatch;
use super::procs::{Procs, Program};
use super::rng::Rng;

/// Unix milliseconds at virtual time zero.
pub const WALL0_MS: u64 = 1_700_000_000_000;

/// Bounds the passes of one step at one instant (durability and process events that are due
/// at once); beyond it the clock's stuck detection takes over.
const MAX_PASSES: usize = 100;

/// How often [`World::try_heal`] looks whether everything has arrived.
const HEAL_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct World<M: SimMaster = MasterScript> {
    config: WorldConfig,
    net: Net,
    clock: Clock,
    schedule: Timeline<Step<M::Order>>,
    master: M,
    nodes: Vec<Node>,
    ledger: Ledger,
    specs: BTreeMap<TaskRef, TaskSpec>,
    next_attempt: u64,
    rng: Rng,
    steps: u64,
}

impl World {
    /// A world with the scripted master. Everything connects at time zero.
    pub fn new(config: WorldConfig) -> Self {
        Self::with_master(config, |key, config, ids| {
            MasterScript::new(key, &config.prefix, ids, config.master_period)
        })
    }

    pub fn spec(&self, task: TaskRef) -> Option<&TaskSpec> {
        self.specs.get(&task)
    }

    /// Every attempt submitted so far, in attempt order.
    pub fn tasks(&self) -> impl Iterator<Item = TaskRef> + '_ {
        self.specs.keys().copied()
    }

    /// Schedules a start order for agent `agent`, sent at `at` (or once the master is up and
    /// connected). Attempt ids are issued now, in call order.
    pub fn submit(
        &mut self,
        at: Instant,
        agent: usize,
        policy: Policy,
        program: Program,
        start_at: Option<Instant>,
    ) -> TaskRef {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let task = TaskRef {
            task: attempt,
            attempt,
        };
        let spec = TaskSpec {
            task,
            policy,
            start_at_unix_ms: start_at.map(wall_ms),
            argv: program.argv(),
            env: StrList::new(),
            cwd: heapless::String::new(),
        };
        self.specs.insert(task, spec.clone());
        self.schedule(at, Step::Order(ScriptOrder::Submit(agent, Box::new(spec))));
        task
    }

    pub fn kill(&mut self, at: Instant, task: TaskRef) {
        self.schedule(at, Step::Order(ScriptOrder::Kill(task)));
    }
}

impl<M: SimMaster> World<M> {
    /// A world whose master `make` builds from its net client, the config and the agent ids.
    /// Everything connects at time zero.
    pub fn with_master(
        config: WorldConfig,
        make: impl FnOnce(ClientKey, &WorldConfig, Vec<String>) -> M,
    ) -> Self {
        let mut rng = Rng::new(config.seed);
        let mut net = Net::new(config.broker.clone(), rng.next_u64());
        let t0 = Instant::from_ticks(0);
        let ids: Vec<String> = (0..config.agents).map(|i| format!("pi-{i}")).collect();
        let mut mc = ClientConfig::new("master");
        mc.subscriptions = ["event", "heartbeat", "presence"]
            .iter()
            .map(|leaf| {
                let filter = tether_core::topic::all_agents(&config.prefix, leaf)
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default();
                (filter, QoS::AtLeastOnce)
            })
            .collect();
        let master_key = net.add_client(mc, config.link);
        let master = make(master_key, &config, ids.clone());
        let nodes = ids
            .into_iter()
            .map(|id| {
                let key = net.add_client(ClientConfig::new(id.clone()), config.link);
                Node {
                    id,
                    key,
                    exec: None,
                    disk: Disk::new(config.disk_delay.0, config.disk_delay.1, rng.fork())
                        .with_cap(config.journal_max_bytes),
                    procs: Procs::new(),
                    watch: AgentWatch::started(t0, []),
                    restarts: 0,
                }
            })
            .collect();
        let mut world = Self {
            ledger: Ledger::new(config.agents),
            config,
            net,
            clock: Clock::new(t0),
            schedule: Timeline::new(),
            master,
            nodes,
            specs: BTreeMap::new(),
            next_attempt: 1,
            rng,
            steps: 0,
        };
        // A master that cannot start is a broken test setup; it shows at the first check.
        let _ = world.master.start(&mut world.net, t0);
        for i in 0..world.nodes.len() {
            // A fresh agent on an empty disk cannot fail to start but through a bad config,
            // which `WorldConfig` does not allow; the world would report it at the first step.
            let _ = world.start_agent(i, t0);
        }
        world
    }

    // ---- getters ----

    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn net(&self) -> &Net {
        &self.net
    }

    pub fn master(&self) -> &M {
        &self.master
    }

    pub fn master_mut(&mut self) -> &mut M {
        &mut self.master
    }

    /// The agent core, unless it is crashed.
    pub fn agent(&self, i: usize) -> Option<&CoreAgent> {
        self.nodes[i].exec.as_ref().map(Executor::agent)
    }

    /// The agent's executor, unless it is crashed.
    pub fn executor(&self, i: usize) -> Option<&Executor> {
        self.nodes[i].exec.as_ref()
    }

    pub fn disk(&self, i: usize) -> &Disk {
        &self.nodes[i].disk
    }

    pub fn procs(&self, i: usize) -> &Procs {
        &self.nodes[i].procs
    }

    /// Events of agent `i` not acknowledged by the master (its replay backlog).
    pub fn unacked(&self, i: usize) -> usize {
        self.nodes[i].exec.as_ref().map_or(0, Executor::unacked)
    }

    /// How often agent `i` was restarted.
    pub fn restarts(&self, i: usize) -> u32 {
        self.nodes[i].restarts
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Where and when the attempt was spawned (more than one entry breaks invariant 1).
    pub fn spawns(&self, task: TaskRef) -> &[(usize, Instant)] {
        self.ledger.spawns(task)
    }

    pub fn signals(&self, task: TaskRef) -> &[SignalRecord] {
        self.ledger.signals(task)
    }

    /// Steps taken so far (instants at which something happened).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn wall_ms(at: Instant) -> u64 {
        wall_ms(at)
    }

    /// A digest of everything that happened, to show a seed replays identically.
    pub fn digest(&self) -> u64 {
        self.net.trace().digest()
    }

    // ---- scripting ----

    pub fn schedule(&mut self, at: Instant, step: Step<M::Order>) {
        self.schedule.push(at, step);
    }

    // ---- running ----

    /// Steps to `until`, checking the invariants at every step; a violation is reported (see
    /// [`World::expect`]) and panics.
    pub fn run_until(&mut self, until: Instant) {
        let result = self.try_run_until(until);
        self.expect(result)
    }

    /// Ends the faults and waits for invariant 2 (see [`World::try_heal`]); a violation is
    /// reported and panics. Returns when it healed.
    pub fn heal(&mut self, max: Duration) -> Instant {
        let result = self.try_heal(max);
        self.expect(result)
    }

    /// Steps to `until`, checking the invariants at every step.
    pub fn try_run_until(&mut self, until: Instant) -> Result<(), Violation> {
        loop {
            let wake = self.poll_timeout();
            match self.clock.advance(wake, until) {
                Err(stuck) => {
                    return Err(Violation::new(
                        Invariant::Model,
                        stuck.at,
                        stuck.to_string(),
                    ));
                }
                Ok(None) => return self.check_deadlines(self.clock.now()),
                Ok(Some(now)) => self.step(now)?,
            }
        }
    }

    /// Ends the faults: every path up, the master and every agent running, nothing more
    /// scripted. Runs until every agent's durable events are stored by the master and
    /// acknowledged back (invariant 2), or fails once `max` has passed.
    pub fn try_heal(&mut self, max: Duration) -> Result<Instant, Violation> {
        let now = self.now();
        self.net
            .trace_mut()
            .record(now, format_args!("world: healing"));
        let mut rest = Timeline::new();
        while let Some((at, step)) = self.schedule.pop_due(Instant::MAX) {
            // Orders still wait to be sent; faults and crashes are off.
            if matches!(step, Step::Order(_)) {
                rest.push(at, step);
            }
        }
        self.schedule = rest;
        self.net.set_fault_all(Fault::Up, now);
        self.master.set_store_outage(None, &mut self.net, now);
        self.master.start(&mut self.net, now)?;
        for i in 0..self.nodes.len() {
            if self.nodes[i].exec.is_none() {
                self.start_agent(i, now)?;
            }
        }
        let deadline = now.saturating_add(max);
        loop {
            let next = self.now().saturating_add(HEAL_CHECK).min(deadline);
            self.try_run_until(next)?;
            self.restart_exited()?;
            if self.healed() {
                return Ok(self.now());
            }
            if self.now() >= deadline {
                self.check_delivered()?;
                let mut why = format!(
                    "not healed {} after the faults ended: master connected {}, {}",
                    secs(Instant::from_ticks(max.as_ticks())),
                    self.master.is_connected(),
                    self.master.describe()
                );
                for (i, n) in self.nodes.iter().enumerate() {
                    let agent = n.exec.as_ref().map(Executor::agent);
                    let _ = write!(
                        why,
                        "; {}: connected {}, acked {:?}, durable {:?}, master has {}",
                        n.id,
                        agent.is_some_and(CoreAgent::is_connected),
                        agent.map(CoreAgent::acked_seq),
                        agent.map(CoreAgent::durable_seq),
                        self.master.contiguous(i)
                    );
                }
                return Err(Violation::new(Invariant::EventsDelivered, self.now(), why));
            }
        }
    }

    /// An agent that was draining when the faults ended has exited since: back up.
    pub fn restart_exited(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].exec.is_none() {
                self.start_agent(i, self.now())?;
            }
        }
        Ok(())
    }

    /// Invariant 2 now, for every agent.
    pub fn check_delivered(&self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            self.ledger.check_delivered(
                i,
                self.master.store(i),
                self.master.seq_base(i),
                self.now(),
            )?;
        }
        Ok(())
    }

    /// The failure report: seed, invariant, trace tail, replay command.
    pub fn report(&self, v: &Violation) -> String {
        // TETHER_SIM_TRACE=n shows more of the tail (up to what the trace keeps).
        let n = std::env::var("TETHER_SIM_TRACE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(150);
        let lines: Vec<_> = self.net.trace().lines().collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        let mut out = String::new();
        let _ = writeln!(out, "\n==== Tether simulation: invariant violated ====");
        let _ = writeln!(out, "seed: {}", self.config.seed);
        let _ = writeln!(out, "{v}");
        let _ = writeln!(out, "---- last {} trace lines ----", tail.len());
        for line in tail {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "---- replay ----\n{}", self.config.replay);
        out
    }

    /// The value, or the report printed and a panic.
    pub fn expect<T>(&self, result: Result<T, Violation>) -> T {
        match result {
            Ok(t) => t,
            Err(v) => {
                let report = self.report(&v);
                eprintln!("{report}");
                panic!(
                    "seed {}: invariant {} violated (replay: {})",
                    self.config.seed, v.invariant, self.config.replay
                );
            }
        }
    }

    // ---- the step ----

    /// The earliest instant any component has work.
    fn poll_timeout(&self) -> [Option<Instant>; 1] {
        let agents = self.nodes.iter().filter_map(|n| {
            let a = n.exec.as_ref()?;
            [
                a.poll_timeout(),
                n.disk.poll_timeout(),
                n.procs.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
        });
        let next = [
            self.net.poll_timeout(),
            self.schedule.poll_timeout(),
            self.master.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .chain(agents)
        .min();
        [next]
    }

    fn step(&mut self, now: Instant) -> Result<(), Violation> {
        self.steps += 1;
        self.check_deadlines(now)?;
        while let Some((_, step)) = self.schedule.pop_due(now) {
            self.apply(step, now)?;
        }
        self.net.step(now);
        while let Some((k, event)) = self.net.poll_event() {
            if k == self.master.key() {
                self.master.handle_event(&mut self.net, event, now)?;
            } else if let Some(i) = self.nodes.iter().position(|n| n.key == k) {
                self.agent_event(i, event, now)?;
            }
        }
        for i in 0..self.nodes.len() {
            self.agent_local(i, now)?;
        }
        self.master.handle_timeout(&mut self.net, now)?;
        let observed = Observed {
            ledger: &self.ledger,
            agents: self
                .nodes
                .iter()
                .map(|n| n.exec.as_ref().map(Executor::agent))
                .collect(),
            procs: self.nodes.iter().map(|n| &n.procs).collect(),
        };
        self.master.check(&observed, now)?;
        if let Some((_, c)) = self.master.conflicts().first() {
            return Err(Violation::new(Invariant::EventsDelivered, now, c.clone()));
        }
        Ok(())
    }

    fn apply(&mut self, step: Step<M::Order>, now: Instant) -> Result<(), Violation> {
        match step {
            Step::Fault(who, fault) => match who {
                Who::Master => self.net.set_fault(self.master.key(), fault, now),
                Who::Agent(i) => self.net.set_fault(self.nodes[i].key, fault, now),
                Who::Everyone => self.net.set_fault_all(fault, now),
            },
            Step::RestartBroker => self.net.restart_broker(now),
            Step::CrashAgent(i) => self.crash_agent(i, false, now),
            Step::LoseAgentDisk(i) => self.crash_agent(i, true, now),
            Step::RestartAgent(i) => {
                if self.nodes[i].exec.is_none() {
                    self.start_agent(i, now)?;
                }
            }
            Step::StopAgent(i, drain) => {
                if self.nodes[i].exec.is_some() {
                    let id = &self.nodes[i].id;
                    self.net
                        .trace_mut()
                        .record(now, format_args!("{id}: asked to stop"));
                    self.feed(i, now, |e, h| e.handle_stop(h, drain))?;
                }
            }
            Step::MasterDown => {
                self.net
                    .trace_mut()
                    .record(now, format_args!("master: crashes"));
                self.master.crash(&mut self.net, now);
            }
            Step::MasterUp => {
                self.net
                    .trace_mut()
                    .record(now, format_args!("master: starts"));
                self.master.start(&mut self.net, now)?;
            }
            Step::Store(outage) => {
                self.net
                    .trace_mut()
                    .record(now, format_args!("master: store {outage:?}"));
                self.master.set_store_outage(outage, &mut self.net, now);
            }
            Step::Order(order) => self.master.order(&mut self.net, order, now)?,
        }
        Ok(())
    }

    fn healed(&self) -> bool {
        if !self.master.is_connected() {
            return false;
        }
        self.nodes.iter().enumerate().all(|(i, n)| {
            let Some(agent) = n.exec.as_ref().map(Executor::agent) else {
                return false;
            };
            let durable = self.ledger.durable(i);
            let last = durable.last_key_value().map_or(0, |(s, _)| *s);
            let base = self.master.seq_base(i);
            agent.is_connected()
                && self.master.contiguous(i) == base + last
                && self.master.store(i).range(base + 1..).count() == durable.len()
                && agent.acked_seq() >= last
                && agent.durable_seq() == agent.last_seq()
        })
    }
}
