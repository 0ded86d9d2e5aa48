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
//! presence is its will.
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

use std::collections::{BTreeMap, BTreeSet};

use tether_core::message::{CommandBody, Event, Message, TaskRef, TaskSpec};
use tether_core::policy::{OnDisconnect, Policy};
use tether_core::presence::{Presence, State};
use tether_core::topic::Topic;
use tether_core::wire;
use tether_core::{Duration, Instant};
use tether_master::commit::{self, Committer, Durable, Flushed};
use tether_master::core::Snapshot;
use tether_master::core::{Change, ClusterRequest, Config, Master, PolicyOverrides, Qos, Submit};
use tether_master::model::{
    AttemptId, AttemptState, ClusterMode, Outcome, Target, TaskId, TaskPolicy, TaskState,
};
use tether_master::store::{SqliteStore, Store, StoreError};

use super::client::ClientEvent;
use super::invariants::{Invariant, TICK, Violation, secs};
use super::master_script::keepalive_s;
use super::mqtt::{QoS, Will};
use super::net::{ClientKey, Net};
use super::procs::Program;
use super::world::{Observed, Outage, SimMaster, Step, World, WorldConfig, wall_ms};

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

    /// The store holds what the master was seen to commit: every agent's events, and every
    /// decided task in its decided state. For the end of a run.
    pub fn check_store(&self) -> Result<(), Violation> {
        let at = self.heard.iter().copied().max().unwrap_or(Instant::MIN);
        let model = |what: String| Violation::new(Invariant::Model, at, what);
        for (i, id) in self.agents.iter().enumerate() {
            let rows = self
                .store
                .db
                .events(id)
                .map_err(|e| model(format!("{id}: events unreadable: {e}")))?;
            let mut db = BTreeMap::new();
            for row in rows {
                let event: Event = serde_json::from_str(&row.json)
                    .map_err(|e| model(format!("{id}: stored event unreadable: {e}")))?;
                db.insert(row.seq, event);
            }
            if db != self.stored[i] {
                return Err(Violation::new(
                    Invariant::EventsDelivered,
                    at,
                    format!(
                        "{id}: the store holds {} events, the master committed {}",
                        db.len(),
                        self.stored[i].len()
                    ),
                ));
            }
        }
        for (id, (state, outcome, _)) in &self.decided {
            let task = self
                .store
                .db
                .task(*id)
                .map_err(|e| model(format!("task {id} unreadable: {e}")))?;
            let Some(task) = task else {
                return Err(model(format!("task {id} was decided but is not stored")));
            };
            if task.state != *state || task.outcome != *outcome {
                return Err(Violation::new(
                    Invariant::OneOutcome,
                    at,
                    format!(
                        "task {id}: decided {state} {outcome:?}, stored {} {:?}",
                        task.state, task.outcome
                    ),
                ));
            }
        }
        Ok(())
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
                && let CommandBody::Start(spec) = cmd.body
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

    /// What the core is about to commit: invariants 7 and 8 at once, 6 at the step's end.
    fn observe_change(
        &mut self,
        net: &mut Net,
        change: &Change,
        now: Instant,
    ) -> Result<(), Violation> {
        match change {
            Change::NewTask { id, task, .. } => {
                self.policies.insert(*id, task.policy);
            }
            Change::NewAttempt { id, task, agent } => {
                let Some(i) = self.index(agent) else {
                    return Err(Violation::new(
                        Invariant::Model,
                        now,
                        format!("master: attempt {id} to unknown agent {agent}"),
                    ));
                };
                self.stats.attempts += 1;
                net.trace_mut().record(
                    now,
                    format_args!("master: task {task} attempt {id} to {agent}"),
                );
                if let Some((inc, seen)) = self.seen[i]
                    && seen != Seen::Online
                {
                    return Err(Violation::new(
                        Invariant::FailoverSkipsLost,
                        now,
                        format!(
                            "task {task}: attempt {id} dispatched to {agent}, whose latest presence is \
                             {seen:?} (incarnation {inc:08x})"
                        ),
                    ));
                }
                self.attempts.insert(
                    *id,
                    AttemptRecord {
                        task: *task,
                        agent: i,
                        state: AttemptState::Sent,
                        created: now,
                    },
                );
            }
            Change::Attempt { id, update } => {
                let Some(a) = self.attempts.get_mut(id) else {
                    return Ok(());
                };
                a.state = update.state;
                let a = *a;
                net.trace_mut()
                    .record(now, format_args!("master: attempt {id} {}", update.state));
                let kill = self
                    .policies
                    .get(&a.task)
                    .is_some_and(|p| p.on_disconnect == OnDisconnect::Kill);
                if update.state == AttemptState::Lost && kill {
                    self.stats.lost_marks += 1;
                    let task = TaskRef {
                        task: a.task,
                        attempt: *id,
                    };
                    self.lost_now.push((task, a.agent));
                    self.lost_at.insert(task, now);
                }
            }
            Change::TaskState { id, state, outcome } => {
                if let Some((was, was_outcome, at)) = self.decided.get(id) {
                    let what = if *was == TaskState::Succeeded && *state == TaskState::Succeeded {
                        "reported succeeded twice"
                    } else {
                        "changed after it was decided"
                    };
                    return Err(Violation::new(
                        Invariant::OneOutcome,
                        now,
                        format!(
                            "task {id} {what}: {was} {was_outcome:?} at {}, now {state} {outcome:?}",
                            secs(*at)
                        ),
                    ));
                }
                if state.is_terminal() {
                    net.trace_mut()
                        .record(now, format_args!("master: task {id} {state} {outcome:?}"));
                    self.decided.insert(*id, (*state, outcome.clone(), now));
                }
            }
            Change::Agent { id, presence, .. } => {
                net.trace_mut()
                    .record(now, format_args!("master: agent {id} {presence}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Notes what a message tells the master about its sender, as the core counts it.
    fn observe_message(&mut self, topic: &str, payload: &[u8], now: Instant) {
        let Ok(parsed) = Topic::parse(&self.prefix, topic) else {
            return;
        };
        match parsed {
            Topic::AgentEvent(id) => {
                let Some(i) = self.index(id.as_str()) else {
                    return;
                };
                let Ok(Message::Event(report)) = wire::decode(payload) else {
                    return;
                };
                self.heard[i] = self.heard[i].max(now);
                let (journal, base) = self.journals[i];
                let mut event = report.event;
                event.seq += base;
                if report.journal == journal
                    && let Some(old) = self.stored[i].get(&event.seq)
                    && *old != event
                {
                    let what = format!(
                        "agent {i} seq {}: stored {old:?}, received {event:?}",
                        event.seq
                    );
                    self.conflicts.push((i, what));
                }
            }
            Topic::AgentHeartbeat(id) => {
                let Some(i) = self.index(id.as_str()) else {
                    return;
                };
                let Ok(Message::AgentHeartbeat(hb)) = wire::decode(payload) else {
                    return;
                };
                self.heard[i] = self.heard[i].max(now);
                // A heartbeat is the agent alive, unless that incarnation stopped (drained).
                if self.seen[i] != Some((hb.incarnation, Seen::Stopped)) {
                    self.seen[i] = Some((hb.incarnation, Seen::Online));
                }
            }
            Topic::AgentPresence(id) => {
                let Some(i) = self.index(id.as_str()) else {
                    return;
                };
                let Ok(p) = Presence::parse(payload) else {
                    return;
                };
                let state = match p.state {
                    State::Online => {
                        self.heard[i] = self.heard[i].max(now);
                        Seen::Online
                    }
                    State::Lost => Seen::Lost,
                    State::Stopped => Seen::Stopped,
                };
                let stale = state != Seen::Online
                    && self.seen[i].is_some_and(|(inc, _)| inc != p.incarnation);
                if !stale {
                    self.seen[i] = Some((p.incarnation, state));
                }
            }
            _ => {}
        }
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
        let submitted = match &order {
            SystemOrder::Submit { label, .. } => Some(*label),
            _ => None,
        };
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
        };
        if let Some(why) = refused {
            self.stats.refused += 1;
            net.trace_mut()
                .record(now, format_args!("master: refused {why}"));
        }
        if !self.drain(net, now)? {
            // The API would have answered with the store's refusal: the task does not exist.
            if let Some(label) = submitted
                && self.labels.remove(&label).is_some()
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
            core.handle_timeout(now);
        }
        self.drain(net, now).map(|_| ())
    }

    fn set_store_outage(&mut self, outage: Option<Outage>, _net: &mut Net, _now: Instant) {
        self.store.outage = outage;
    }

    /// Invariant 6; 7 and 8 were checked as the changes went by.
    fn check(&mut self, agents: &Observed<'_>, now: Instant) -> Result<(), Violation> {
        let fail = |what: String| Err(Violation::new(Invariant::KillMarkedFailed, now, what));
        let lost_now = std::mem::take(&mut self.lost_now);
        for (task, i) in lost_now.into_iter().filter(|_| self.strict) {
            let Some(info) = agents.procs[i].get(task) else {
                continue;
            };
            if info.terminated.is_none() && info.killed.is_none() {
                let contact = agents.agents[i].map(|a| secs(a.last_contact()));
                return fail(format!(
                    "attempt {} of task {} marked failed while pi-{i} runs it untouched \
                     (started {}, the master last heard pi-{i} at {}, pi-{i} last heard the master at {contact:?})",
                    task.attempt,
                    task.task,
                    secs(info.started),
                    secs(self.heard[i]),
                ));
            }
        }
        for (task, at) in self.lost_at.iter().filter(|_| self.strict) {
            if let Some((a, spawned)) = agents.ledger.spawns(*task).iter().find(|(_, t)| *t > *at) {
                return fail(format!(
                    "attempt {} of task {} marked failed at {}, spawned by pi-{a} at {}",
                    task.attempt,
                    task.task,
                    secs(*at),
                    secs(*spawned)
                ));
            }
        }
        // A master that is down, or whose core waits to be rebuilt from an unreachable store,
        // decides nothing.
        if self.core.is_none() || self.committer.is_stale() {
            return Ok(());
        }
        for (id, a) in &self.attempts {
            if !matches!(
                a.state,
                AttemptState::Sent | AttemptState::Accepted | AttemptState::Running
            ) {
                continue;
            }
            let Some(policy) = self.policies.get(&a.task) else {
                continue;
            };
            if policy.on_disconnect != OnDisconnect::Kill {
                continue;
            }
            let due = self.heard[a.agent]
                .saturating_add(Duration::from_millis(policy.heartbeat_timeout_ms))
                .saturating_add(self.allowance);
            if now > due.saturating_add(TICK) {
                return fail(format!(
                    "attempt {id} of task {} on pi-{} still {} at {}: last heard {}, due {}",
                    a.task,
                    a.agent,
                    a.state,
                    secs(now),
                    secs(self.heard[a.agent]),
                    secs(due)
                ));
            }
        }
        Ok(())
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

/// The world with the real master.
pub type System = World<RealMaster>;

impl World<RealMaster> {
    /// Agents `pi-0..` and the real master over a fresh store; everything connects at zero.
    pub fn system(config: WorldConfig) -> Self {
        World::with_master(config, RealMaster::new)
    }

    /// Schedules a submit; returns the label that names the task in [`RealMaster`]'s getters.
    pub fn submit(
        &mut self,
        at: Instant,
        target: Target,
        policy: PolicyOverrides,
        program: Program,
        start_at: Option<Instant>,
    ) -> usize {
        let master = self.master_mut();
        let label = master.next_label;
        master.next_label += 1;
        let (agent, cluster) = match target {
            Target::Agent(a) => (Some(a), None),
            Target::Cluster(c) => (None, Some(c)),
        };
        let request = Submit {
            agent,
            cluster,
            argv: program
                .argv()
                .iter()
                .filter_map(|s| s.ok().map(str::to_owned))
                .collect(),
            policy,
            start_at_ms: start_at.map(wall_ms),
            ..Submit::default()
        };
        self.schedule(
            at,
            Step::Order(SystemOrder::Submit {
                label,
                request: Box::new(request),
            }),
        );
        label
    }

    pub fn kill(&mut self, at: Instant, label: usize) {
        self.schedule(at, Step::Order(SystemOrder::Kill { label }));
    }

    /// Defines a cluster of agents `members` (indices, in priority order).
    pub fn put_cluster(&mut self, at: Instant, name: &str, mode: ClusterMode, members: &[usize]) {
        let req = ClusterRequest {
            name: name.to_owned(),
            mode,
            members: members.iter().map(|i| format!("pi-{i}")).collect(),
        };
        self.schedule(at, Step::Order(SystemOrder::Cluster(req)));
    }

    /// The attempts' agents of the tasks `labels`, in task order then attempt order.
    pub fn placements(&self, labels: &[usize]) -> Vec<Vec<usize>> {
        labels
            .iter()
            .map(|&l| {
                self.master()
                    .attempts(l)
                    .into_iter()
                    .map(|(_, a)| a.agent)
                    .collect()
            })
            .collect()
    }

    /// Every attempt of a decided task is closed, and no task is left undecided.
    pub fn undecided_tasks(&self) -> BTreeSet<usize> {
        let m = self.master();
        m.labels
            .iter()
            .filter(|(_, id)| !m.decided.contains_key(id))
            .map(|(l, _)| *l)
            .collect()
    }
}

/// The master-side policy of a simulation [`Policy`] (no retries, no `lost_after`).
pub fn overrides(p: &Policy) -> PolicyOverrides {
    PolicyOverrides {
        on_disconnect: Some(p.on_disconnect),
        heartbeat_period_ms: Some(p.heartbeat_period_ms),
        heartbeat_timeout_ms: Some(p.heartbeat_timeout_ms),
        grace_ms: Some(p.grace_ms),
        max_run_ms: Some(p.max_run_ms),
        output_cap: Some(p.output_cap),
        retries: Some(0),
        lost_after_ms: None,
    }
}
