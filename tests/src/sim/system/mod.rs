//! The whole system in virtual time: the real master core ([`tether_master::core::Master`])
//! with its SQLite store, driven as the master runtime drives it, in a [`World`] of agent
//! cores, disks, processes and the model broker.
//!
//! [`RealMaster`] is the master's runtime in the simulation: after every input it drains the
//! core's actions, commits the batch's changes to the store in one transaction and only then
//! publishes (the runtime's own [`commit::Batch`]); a crash drops the core, and a restart
//! rebuilds it with [`Master::restore`] from [`Store::load`] of the same store.
//!
//! On top of the agent-side invariants of the world it checks the master's, at every step
//! (see [`super::invariants`], 6 to 8): a `kill` attempt is marked failed no earlier than its
//! agent killed it and no later than timeout + delay allowance + tick after the agent was last
//! heard; a task's outcome is decided once; a new attempt never goes to an agent whose latest
//! presence is its will. Workflows and orders (`orders.rs`) are checked at the end of a run,
//! once they have settled (10 to 13, `order_oracle.rs`).
//!
//! ```text
//! let mut w = World::system(WorldConfig::new(seed, 3).replay("TETHER_SIM_SEED=.."));
//! w.put_cluster(at(1), "pis", ClusterMode::RoundRobin, &[0, 1, 2]);
//! let t = w.submit(at(2), Target::Cluster("pis".into()), overrides(&p), Program::new(mins(1)), None);
//! w.schedule(at(30), Step::MasterDown);
//! w.schedule(at(40), Step::MasterUp);
//! w.run_until(at(600));
//! w.heal(Duration::from_secs(900));
//! w.expect(w.master().check_store());
//! ```

mod oracle;
mod order_oracle;
mod orders;
mod schedules;
mod scripting;

pub use self::orders::{Gap, OrderCall, OrderLog, OrderRecord};
pub use self::schedules::ScheduleCall;
pub use self::scripting::{System, overrides};

use std::collections::BTreeMap;

use tether_core::message::{CommandBody, Event, Message, TaskRef, TaskSpec};
use tether_core::presence::{Presence, State};
use tether_core::topic::Topic;
use tether_core::wire;
use tether_core::{Duration, Instant};
use tether_master::commit::{self, Committer, Durable, Flushed};
use tether_master::core::Snapshot;
use tether_master::core::{Change, ClusterRequest, Config, Master, Qos, Submit};
use tether_master::model::{AttemptId, AttemptState, Outcome, TaskId, TaskPolicy, TaskState};
use tether_master::store::{SqliteStore, Store, StoreError};

use super::client::ClientEvent;
use super::invariants::{Invariant, Violation};
use super::master_script::keepalive_s;
use super::mqtt::{QoS, Will};
use super::net::{ClientKey, Net};
use super::world::{Observed, Outage, SimMaster, WorldConfig};

/// The master's SQLite store behind a switch that can make it fail as a database server does
/// (see [`Outage`]); the master handles it with the runtime's own [`Committer`].
#[derive(Debug)]
pub struct FlakyStore {
    db: SqliteStore,
    outage: Option<Outage>,
}

impl FlakyStore {
    fn fails(&self, reads: bool) -> Result<(), StoreError> {
        match self.outage {
            Some(Outage::Unreachable) => Err(StoreError::Unanswered("simulated outage".into())),
            Some(Outage::RefusesWrites) if !reads => {
                Err(StoreError::Unanswered("simulated write failure".into()))
            }
            _ => Ok(()),
        }
    }
}

impl Durable for FlakyStore {
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.fails(false)?;
        Store::apply(&self.db, changes)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        self.fails(true)?;
        Store::load(&self.db)
    }

    fn probe_write(&self) -> Result<(), StoreError> {
        self.fails(false)?;
        Store::probe_write(&self.db)
    }
}

/// How soon a master that could not start is started again (systemd's `RestartSec`), and how
/// often a store that refuses writes is probed (the runtime's probe).
const RETRY: Duration = Duration::from_secs(1);

/// A request to the master, taken when its step is due (or when the master is next up).
#[derive(Debug, Clone)]
pub enum SystemOrder {
    /// `label` names the task in later orders and getters (the master picks its id).
    Submit {
        label: usize,
        request: Box<Submit>,
    },
    Kill {
        label: usize,
    },
    Cluster(ClusterRequest),
    Schedule(ScheduleCall),
    /// Workflows and orders ([`OrderCall`]).
    Orders(OrderCall),
}

/// What the master's runtime did, for tests that want to see a scenario really happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemStats {
    pub commits: u64,
    pub publishes: u64,
    pub starts: u64,
    pub crashes: u64,
    pub attempts: u64,
    pub lost_marks: u64,
    pub refused: u64,
    /// Batches the store did not take (the core was rebuilt from it).
    pub commits_refused: u64,
    /// Starts that failed because the store could not be read.
    pub failed_starts: u64,
}

/// One attempt as the store was told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRecord {
    pub task: TaskId,
    pub agent: usize,
    pub state: AttemptState,
    pub created: Instant,
}

/// The latest presence of an agent's latest incarnation, as delivered to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Online,
    Lost,
    Stopped,
}

#[derive(Debug)]
pub struct RealMaster {
    key: ClientKey,
    prefix: String,
    agents: Vec<String>,
    period: Duration,
    allowance: Duration,
    /// Survives master crashes, as the database does.
    store: FlakyStore,
    core: Option<Master>,
    committer: Committer,
    /// The committer's rebuilds the observer has accounted for.
    rebuilds_seen: u64,
    /// When a master that is down is started again (it could not read its store) or a store
    /// that refuses writes is probed.
    retry_at: Option<Instant>,
    connected: bool,
    epoch: u32,
    deferred: Vec<SystemOrder>,
    next_label: usize,
    labels: BTreeMap<usize, TaskId>,
    orders: OrderLog,
    // ---- what the master was told and decided (the observer's memory, across crashes) ----
    policies: BTreeMap<TaskId, TaskPolicy>,
    attempts: BTreeMap<AttemptId, AttemptRecord>,
    decided: BTreeMap<TaskId, (TaskState, Option<Outcome>, Instant)>,
    stored: Vec<BTreeMap<u64, Event>>,
    contiguous: Vec<u64>,
    /// Per agent, the journal the master numbers its events in, and that journal's base (as
    /// the master committed them).
    journals: Vec<(u32, u64)>,
    conflicts: Vec<(usize, String)>,
    /// When the master core last heard from each agent (its restart counts, as in the core), at
    /// the latest: the core counts only fresh heartbeats and new events, this every message.
    heard: Vec<Instant>,
    seen: Vec<Option<(u32, Seen)>>,
    /// `kill` attempts marked lost in this step, checked against the agents at its end.
    lost_now: Vec<(TaskRef, usize)>,
    lost_at: BTreeMap<TaskRef, Instant>,
    specs: BTreeMap<TaskRef, TaskSpec>,
    /// Also fail when an attempt marked lost is spawned later (see [`RealMaster::strict`]).
    strict: bool,
    stats: SystemStats,
}

impl RealMaster {
    /// A master (down until the world starts it) over a fresh in-memory store: the store
    /// object outlives every crash of the core, like the database file of the real master.
    pub fn new(key: ClientKey, config: &WorldConfig, agents: Vec<String>) -> Self {
        let n = agents.len();
        // Only a broken SQLite build fails here; nothing in the simulation could go on.
        let store = SqliteStore::open_in_memory().expect("an in-memory SQLite store opens");
        // Provisioned before the master first starts, as `tetherctl provision` does.
        let keys: Vec<Change> = agents
            .iter()
            .map(|id| Change::AgentKey {
                agent: id.clone(),
                key: crate::keys::agent(id),
            })
            .collect();
        Store::apply(&store, &keys).expect("the agent keys are stored");
        Self {
            key,
            prefix: config.prefix.clone(),
            agents,
            period: config.master_period,
            allowance: Duration::from_secs(2),
            store: FlakyStore {
                db: store,
                outage: None,
            },
            core: None,
            committer: Committer::default(),
            rebuilds_seen: 0,
            retry_at: None,
            connected: false,
            epoch: (config.seed as u32).wrapping_mul(0x9e37_79b9) & 0x7fff_0000,
            deferred: Vec::new(),
            next_label: 0,
            labels: BTreeMap::new(),
            orders: OrderLog::default(),
            policies: BTreeMap::new(),
            attempts: BTreeMap::new(),
            decided: BTreeMap::new(),
            stored: vec![BTreeMap::new(); n],
            contiguous: vec![0; n],
            journals: vec![(0, 0); n],
            conflicts: Vec::new(),
            heard: vec![Instant::MIN; n],
            seen: vec![None; n],
            lost_now: Vec::new(),
            lost_at: BTreeMap::new(),
            specs: BTreeMap::new(),
            strict: false,
            stats: SystemStats::default(),
        }
    }

    /// Checks the lower bound of invariant 6 too: no attempt is marked lost while its agent
    /// runs it untouched, or spawned after. Off by default, because the protocol does not
    /// give it (the regression tests in `tests/sim/system_random.rs` turn it on):
    /// - the agent counts its timeout from the later of its last contact and the task's start
    ///   (and from its own restart), the master from when it last heard the agent;
    /// - with agent-to-master loss only, the agent still hears the master and never kills;
    /// - a start command the broker queued for an absent agent reaches it after the master
    ///   gave the attempt up, and the agent starts it (the master kills it once a heartbeat
    ///   lists it).
    pub fn strict(&mut self, on: bool) {
        self.strict = on;
    }

    // ---- getters ----

    /// The core, while the master is up.
    pub fn core(&self) -> Option<&Master> {
        self.core.as_ref()
    }

    pub fn db(&self) -> &SqliteStore {
        &self.store.db
    }

    pub fn stats(&self) -> SystemStats {
        self.stats
    }

    pub fn delay_allowance(&self) -> Duration {
        self.allowance
    }

    /// The task id the master gave the task submitted under `label`.
    pub fn task_id(&self, label: usize) -> Option<TaskId> {
        self.labels.get(&label).copied()
    }

    /// The task's attempts in creation order.
    pub fn attempts(&self, label: usize) -> Vec<(AttemptId, AttemptRecord)> {
        let Some(id) = self.task_id(label) else {
            return Vec::new();
        };
        self.attempts
            .iter()
            .filter(|(_, a)| a.task == id)
            .map(|(k, a)| (*k, *a))
            .collect()
    }

    /// Every attempt in creation order.
    pub fn all_attempts(&self) -> impl Iterator<Item = (&AttemptId, &AttemptRecord)> {
        self.attempts.iter()
    }

    /// The task's final state and outcome, once decided.
    pub fn outcome(&self, label: usize) -> Option<(TaskState, Option<Outcome>)> {
        let id = self.task_id(label)?;
        self.decided.get(&id).map(|(s, o, _)| (*s, o.clone()))
    }

    /// Tasks the master accepted.
    pub fn submitted(&self) -> usize {
        self.labels.len()
    }

    /// Tasks submitted and not decided.
    pub fn undecided(&self) -> usize {
        self.labels
            .values()
            .filter(|id| !self.decided.contains_key(id))
            .count()
    }

    // ---- the runtime ----

    /// After the committer's calls: a core rebuilt from the store counts every agent as heard
    /// then, as at a start; once the store takes writes again, the runtime subscribes again
    /// for the retained presence.
    fn rebuilt(&mut self, net: &mut Net, now: Instant) {
        if self.committer.rebuilds() > self.rebuilds_seen {
            self.rebuilds_seen = self.committer.rebuilds();
            for h in &mut self.heard {
                *h = now;
            }
        }
        if !self.committer.take_rebuilt() {
            return;
        }
        if let Some(core) = self.core.as_ref()
            && self.connected
        {
            for filter in core.subscriptions() {
                let _ = net.subscribe(self.key, &filter, QoS::AtLeastOnce, now);
            }
        }
    }

    fn index(&self, agent: &str) -> Option<usize> {
        self.agents.iter().position(|a| a == agent)
    }

    /// Drains one batch: commit (through the runtime's [`Committer`]), observe what was
    /// committed, then publish. `false` if the store did not take it.
    fn drain(&mut self, net: &mut Net, now: Instant) -> Result<bool, Violation> {
        let Some(core) = self.core.as_mut() else {
            return Ok(false);
        };
        let mut batch = commit::Batch::drain(core);
        let flushed = self
            .committer
            .flush(core, &mut batch, &self.store, now)
            .map_err(|e| {
                Violation::new(
                    Invariant::Model,
                    now,
                    format!("master: store unreadable: {e}"),
                )
            })?;
        self.rebuilt(net, now);
        let publishes = match flushed {
            Flushed::Committed(publishes) => publishes,
            Flushed::Refused(e) => {
                self.stats.commits_refused += 1;
                net.trace_mut().record(
                    now,
                    format_args!(
                        "master: batch of {} changes refused: {}",
                        batch.changes().len(),
                        e.message
                    ),
                );
                self.retry_at.get_or_insert(now.saturating_add(RETRY));
                return Ok(false);
            }
            Flushed::Dropped => {
                self.retry_at.get_or_insert(now.saturating_add(RETRY));
                return Ok(false);
            }
        };
        for change in batch.changes() {
            self.observe_change(net, change, now)?;
        }
        if !batch.changes().is_empty() {
            self.stats.commits += 1;
        }
        for change in batch.changes() {
            if let Change::AgentJournal {
                agent,
                journal,
                seq_base,
            } = change
                && let Some(i) = self.index(agent)
            {
                self.journals[i] = (*journal, *seq_base);
                self.contiguous[i] = self.contiguous[i].max(*seq_base);
            }
            if let Change::Event { agent, event } = change
                && let Some(i) = self.index(agent)
            {
                self.stored[i].insert(event.seq, event.clone());
                let mut c = self.contiguous[i];
                while self.stored[i].contains_key(&(c + 1)) {
                    c += 1;
                }
                self.contiguous[i] = c;
            }
        }
        for p in publishes {
            if let Ok(Message::Command(cmd)) = wire::decode(&p.payload)
                && let CommandBody::Start(spec) | CommandBody::StartAfter { spec, .. } = cmd.body
            {
                self.specs.entry(spec.task).or_insert(spec);
            }
            let qos = match p.qos {
                Qos::AtMostOnce => QoS::AtMostOnce,
                Qos::AtLeastOnce => QoS::AtLeastOnce,
            };
            self.stats.publishes += 1;
            // A full request queue is a lost publish: the core retransmits what matters.
            let _ = net.publish(self.key, p.topic, p.payload, qos, p.retain, now);
        }
        Ok(true)
    }

    fn take(&mut self, net: &mut Net, order: SystemOrder, now: Instant) -> Result<(), Violation> {
        let Some(core) = self.core.as_mut() else {
            self.deferred.push(order);
            return Ok(());
        };
        // As the API: while the store refuses writes, a write request is refused at once.
        if let Some(e) = self.committer.refusing() {
            self.stats.refused += 1;
            net.trace_mut().record(
                now,
                format_args!("master: refused {order:?}: {}", e.message),
            );
            return Ok(());
        }
        schedules::tell_wall_clock(core, now);
        let submitted = match &order {
            SystemOrder::Submit { label, .. } => Some(*label),
            _ => None,
        };
        let call = order.order_call().cloned();
        let refused = match order {
            SystemOrder::Submit { label, request } => match core.submit(now, *request) {
                Ok(id) => {
                    net.trace_mut()
                        .record(now, format_args!("master: submit #{label} is task {id}"));
                    self.labels.insert(label, id);
                    None
                }
                Err(e) => Some(format!("submit #{label}: {e}")),
            },
            SystemOrder::Kill { label } => match self.labels.get(&label) {
                Some(&id) => {
                    net.trace_mut()
                        .record(now, format_args!("master: kill task {id}"));
                    core.kill(now, id)
                        .err()
                        .map(|e| format!("kill task {id}: {e}"))
                }
                None => Some(format!("kill #{label}: never submitted")),
            },
            SystemOrder::Cluster(req) => {
                let name = req.name.clone();
                core.put_cluster(now, req)
                    .err()
                    .map(|e| format!("cluster {name}: {e}"))
            }
            SystemOrder::Schedule(call) => call.take(core, now).map_or_else(Some, |done| {
                net.trace_mut().record(now, format_args!("master: {done}"));
                None
            }),
            SystemOrder::Orders(c) => self.orders.take(core, c, now).map_or_else(Some, |done| {
                net.trace_mut().record(now, format_args!("master: {done}"));
                None
            }),
        };
        if let Some(why) = refused {
            self.stats.refused += 1;
            net.trace_mut()
                .record(now, format_args!("master: refused {why}"));
        }
        if !self.drain(net, now)? {
            // The API would have answered with the store's refusal: the task does not exist.
            let order_refused = call.is_some_and(|c| self.orders.refused_by_store(&c));
            if order_refused || submitted.is_some_and(|label| self.labels.remove(&label).is_some())
            {
                self.stats.refused += 1;
            }
        }
        Ok(())
    }
}

impl SimMaster for RealMaster {
    type Order = SystemOrder;

    fn key(&self) -> ClientKey {
        self.key
    }

    fn is_connected(&self) -> bool {
        self.connected
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let core = self.core.as_ref().and_then(Master::poll_timeout);
        [core, self.retry_at].into_iter().flatten().min()
    }

    fn start(&mut self, net: &mut Net, now: Instant) -> Result<(), Violation> {
        if self.core.is_some() {
            return Ok(());
        }
        let model = |what: String| Violation::new(Invariant::Model, now, what);
        let snapshot = match self.store.load() {
            Ok(snapshot) => snapshot,
            // The real master exits and systemd starts it again a second later.
            Err(e) if e.is_unreachable() => {
                self.stats.failed_starts += 1;
                net.trace_mut()
                    .record(now, format_args!("master: cannot start: {e}"));
                self.retry_at = Some(now.saturating_add(RETRY));
                return Ok(());
            }
            Err(e) => return Err(model(format!("master: store unreadable: {e}"))),
        };
        self.retry_at = None;
        self.committer = Committer::default();
        self.rebuilds_seen = 0;
        self.epoch = self.epoch.wrapping_add(1);
        let mut config = Config::new(&self.prefix, self.epoch, crate::keys::master());
        config.heartbeat_period = self.period;
        config.delay_allowance = self.allowance;
        let core = Master::restore(config, snapshot, now)
            .map_err(|e| model(format!("master: does not restore: {e}")))?;
        // The core counts every agent as heard at its start.
        for h in &mut self.heard {
            *h = now;
        }
        let will = Presence {
            state: State::Lost,
            incarnation: self.epoch,
        }
        .render();
        let topic = Topic::MasterPresence
            .build(&self.prefix)
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        let client = net.client_mut(self.key).config_mut();
        client.will = Some(Will::new(topic, will.as_bytes(), QoS::AtLeastOnce, true));
        client.keepalive_s = keepalive_s(self.period);
        client.subscriptions = core
            .subscriptions()
            .into_iter()
            .map(|f| (f, QoS::AtLeastOnce))
            .collect();
        self.core = Some(core);
        self.stats.starts += 1;
        net.start(self.key, now);
        for order in std::mem::take(&mut self.deferred) {
            self.take(net, order, now)?;
        }
        Ok(())
    }

    fn crash(&mut self, net: &mut Net, now: Instant) {
        self.retry_at = None;
        if self.core.take().is_none() {
            return;
        }
        self.stats.crashes += 1;
        self.connected = false;
        net.kill(self.key, now);
    }

    fn order(&mut self, net: &mut Net, order: SystemOrder, now: Instant) -> Result<(), Violation> {
        self.take(net, order, now)
    }

    fn handle_event(
        &mut self,
        net: &mut Net,
        event: ClientEvent,
        now: Instant,
    ) -> Result<(), Violation> {
        if self.core.is_none() {
            return Ok(());
        }
        if let ClientEvent::Message(p) = &event {
            self.observe_message(&p.topic, &p.payload, now);
        }
        let Some(core) = self.core.as_mut() else {
            return Ok(());
        };
        schedules::tell_wall_clock(core, now);
        match event {
            ClientEvent::Connected { .. } => {
                self.connected = true;
                core.handle_connected(now);
            }
            ClientEvent::Disconnected => {
                self.connected = false;
                core.handle_disconnected(now);
            }
            ClientEvent::Message(p) => core.handle_message(now, &p.topic, &p.payload),
        }
        self.drain(net, now).map(|_| ())
    }

    fn handle_timeout(&mut self, net: &mut Net, now: Instant) -> Result<(), Violation> {
        let retry = self.retry_at.filter(|t| *t <= now);
        let Some(core) = self.core.as_mut() else {
            if retry.is_some() {
                self.start(net, now)?;
            }
            return Ok(());
        };
        if retry.is_some() {
            self.retry_at = None;
            self.committer.probe(core, &self.store, now).map_err(|e| {
                Violation::new(
                    Invariant::Model,
                    now,
                    format!("master: store unreadable: {e}"),
                )
            })?;
            if self.committer.refusing().is_some() || self.committer.is_stale() {
                self.retry_at = Some(now.saturating_add(RETRY));
            }
            self.rebuilt(net, now);
        }
        if let Some(core) = self.core.as_mut()
            && core.poll_timeout().is_some_and(|t| t <= now)
        {
            schedules::tell_wall_clock(core, now);
            core.handle_timeout(now);
        }
        self.drain(net, now).map(|_| ())
    }

    fn set_store_outage(&mut self, outage: Option<Outage>, _net: &mut Net, _now: Instant) {
        self.store.outage = outage;
    }

    /// Invariant 6 (see the oracle); 7 and 8 were checked as the changes went by.
    fn check(&mut self, agents: &Observed<'_>, now: Instant) -> Result<(), Violation> {
        self.check_master(agents, now)
    }

    fn store(&self, i: usize) -> &BTreeMap<u64, Event> {
        &self.stored[i]
    }

    fn contiguous(&self, i: usize) -> u64 {
        self.contiguous[i]
    }

    fn seq_base(&self, i: usize) -> u64 {
        self.journals[i].1
    }

    fn conflicts(&self) -> &[(usize, String)] {
        &self.conflicts
    }

    fn spec(&self, task: TaskRef) -> Option<&TaskSpec> {
        self.specs.get(&task)
    }

    fn describe(&self) -> String {
        format!(
            "tasks undecided {}, orders deferred {}, open attempts {:?}",
            self.undecided(),
            self.deferred.len(),
            self.attempts
                .iter()
                .filter(|(_, a)| !a.state.is_terminal())
                .map(|(id, a)| (*id, a.agent, a.state))
                .collect::<Vec<_>>()
        )
    }
}
