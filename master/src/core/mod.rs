//! The master's core: every decision the Tether master makes, and nothing else.
//!
//! Sans-IO like the agent's core (and quinn-proto): no clock, no socket, no database. Time comes
//! in as [`tether_core::Instant`] arguments.
//!
//! - Inputs (`handle_*` and the requests): MQTT connected/disconnected, a message received
//!   (agent event, heartbeat or presence), submit, kill, cluster and profile definitions, and
//!   [`Master::handle_timeout`] when [`Master::poll_timeout`] is reached.
//! - Outputs: drain [`Master::poll_action`] after every input. [`Action::Persist`] carries a
//!   [`Change`] of the durable state, [`Action::Publish`] an MQTT message.
//!
//! **The commit rule.** After an input, the runtime drains every action, applies all the
//! `Persist` changes of that batch to the store in ONE transaction, and only after the commit
//! publishes the batch's `Publish` actions, in order. An acknowledgement is therefore never
//! sent for an event that is not stored, and a start command never names an attempt the store
//! does not have. If the commit fails the runtime must not publish and should stop: a restart
//! rebuilds the core from the store ([`Master::restore`]), which is always consistent.
//!
//! What it decides, and which file owns each rule:
//! - `requests.rs`: submit, kill, clusters, profiles, agent keys, and their validation; a
//!   refusal is a [`RequestError`] with one variant per reason;
//! - `registry.rs`: the agent registry from retained presence with incarnations (a will of
//!   another incarnation than the live one is ignored), events deduplicated by (agent, seq)
//!   and acknowledged over the contiguous prefix only;
//! - `liveness.rs`: which agent heartbeats prove life (fresh echo, counting up), the master's
//!   own heartbeat, and marking an online agent lost when it falls silent;
//! - `deadlines.rs`: every time rule, once. An agent is *available* for new tasks while it is
//!   online and heard within two heartbeat periods plus the delay allowance; an attempt of a
//!   `kill` task is lost once its heartbeat timeout plus the delay allowance has passed since
//!   the agent was last heard (the agent has killed it by then); a `continue` task with
//!   `lost_after` and a cluster target gets a new attempt elsewhere once its agent is
//!   unavailable and `lost_after` has passed; start and kill commands are repeated every
//!   heartbeat period until answered. Each rule is one function returning the instant it
//!   fires: [`Master::poll_timeout`] takes their minimum and the code acting on a rule asks
//!   the same function whether it is due, so the timer and the action cannot disagree;
//! - `dispatch.rs`: pending tasks get attempts, start and kill commands go out (and again
//!   after a reconnect), acknowledgements are sent, and the core is rebuilt from a snapshot;
//! - `placement.rs`: which agent takes a new attempt: the named one, or a cluster member by
//!   round-robin (cursor persisted) or fixed priority, among available agents with room;
//! - `outcomes.rs`: events become attempt updates; task life (pending, dispatched, accepted,
//!   running, unreachable, then succeeded, failed, killed or lost); the first attempt to
//!   finish decides the outcome, a failure defers to another attempt still open, a failed
//!   attempt is retried while the task's retry budget lasts, late results are recorded on
//!   their own attempt;
//! - `reconcile.rs`: an agent heartbeat lists what it holds; once its events are all stored,
//!   attempts the master thinks accepted or running but not listed are lost, and listed
//!   attempts the master does not know (or gave up) are killed;
//! - `inbox.rs` and `outbox.rs`: authentication. Everything the master publishes is signed
//!   ([`Config::signing_key`]) and counted from one counter per epoch; what an agent publishes
//!   must carry that agent's MAC (keys from [`Master::set_agent_key`]), else it is dropped and
//!   counted ([`Master::security`]). `outbox.rs` also holds the action queue;
//! - `types.rs`: the values crossing the boundary (configuration, actions, changes, requests,
//!   errors, the snapshot).

mod clock;
mod deadlines;
mod dispatch;
mod handover_reports;
mod inbox;
mod journals;
mod liveness;
mod orders;
mod outbox;
mod outcomes;
mod placement;
mod reconcile;
mod registry;
mod requests;
mod schedules;
mod types;
mod workflows;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tether_core::Instant;
use tether_core::auth::{AgentKey, KEY_LEN};
use tether_core::presence::State;

use crate::model::{
    AttemptId, AttemptState, Cluster, OrderId, Task, TaskId, TaskPolicy, TaskState, Workflow,
};
use liveness::SentHeartbeats;
use registry::AgentEntry;
// The surface: the state machine, its configuration, its outputs, the requests and their
// errors, the snapshot it is restored from. The rule files stay private.
pub use types::{
    Action, AgentView, Change, ClusterRequest, Config, ErrorClass, OrderRequest, PolicyOverrides,
    ProfileRequest, Publish, Qos, RequestError, ScheduleRequest, SecurityCounts, Snapshot, Stats,
    StepRequest, Submit, WorkflowRequest,
};

#[derive(Debug, Clone)]
struct AttemptEntry {
    id: AttemptId,
    agent: String,
    state: AttemptState,
    /// A newer attempt of the task was made while this one was unreachable.
    superseded: bool,
    /// Counts against the task's retry budget.
    failed: bool,
    /// When the start command is due again while the attempt is `sent`.
    next_start: Instant,
    kill_wanted: bool,
    next_kill: Instant,
    /// A chained workflow step: the step before, which the agent waits for.
    after: Option<tether_core::message::After>,
    /// A schedule occurrence the agent started itself: no start command goes out for it.
    self_started: bool,
}

impl AttemptEntry {
    fn new(id: AttemptId, agent: String, now: Instant) -> Self {
        Self {
            after: None,
            self_started: false,
            id,
            agent,
            state: AttemptState::Sent,
            superseded: false,
            failed: false,
            next_start: now,
            kill_wanted: false,
            next_kill: now,
        }
    }

    fn is_open(&self) -> bool {
        matches!(
            self.state,
            AttemptState::Sent | AttemptState::Accepted | AttemptState::Running
        )
    }
}

#[derive(Debug, Clone)]
struct TaskEntry {
    task: Task,
    attempts: Vec<AttemptEntry>,
    kill_requested: bool,
    /// Not dispatched again before this (after a transient refusal).
    retry_at: Instant,
    /// The wait before a retry after a failed attempt (a workflow step's `retry_delay_ms`).
    retry_delay: tether_core::Duration,
}

impl TaskEntry {
    fn current(&self) -> Option<&AttemptEntry> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.is_open() && !a.superseded)
    }

    fn has_open(&self) -> bool {
        self.attempts.iter().any(AttemptEntry::is_open)
    }

    /// Nothing can change any more: finished, and no attempt can still report.
    fn is_settled(&self) -> bool {
        self.task.state.is_terminal()
            && self
                .attempts
                .iter()
                .all(|a| !a.is_open() && a.state != AttemptState::Lost)
    }

    fn attempt_mut(&mut self, id: AttemptId) -> Option<&mut AttemptEntry> {
        self.attempts.iter_mut().find(|a| a.id == id)
    }
}

/// The master state machine. See the module documentation.
#[derive(Debug)]
pub struct Master {
    config: Config,
    now: Instant,
    connected: bool,
    agents: BTreeMap<String, AgentEntry>,
    clusters: BTreeMap<String, Cluster>,
    profiles: BTreeMap<String, TaskPolicy>,
    tasks: BTreeMap<TaskId, TaskEntry>,
    next_task: TaskId,
    next_attempt: AttemptId,
    counter: u64,
    next_heartbeat: Instant,
    sent_heartbeats: SentHeartbeats,
    actions: VecDeque<Action>,
    stats: Stats,
    agent_keys: BTreeMap<String, AgentKey>,
    security: BTreeMap<String, SecurityCounts>,
    /// Every workflow version, oldest first, by name.
    workflows: BTreeMap<String, Vec<Arc<Workflow>>>,
    /// Running orders (ended ones are dropped after the input that ended them).
    orders: BTreeMap<OrderId, orders::OrderEntry>,
    next_order: OrderId,
    /// The runtime's wall clock: `(now, unix_ms)` when it last said.
    wall: Option<(Instant, u64)>,
    schedules: BTreeMap<crate::model::ScheduleId, schedules::ScheduleEntry>,
    /// Live hand-overs by their own task id.
    handovers: BTreeMap<TaskId, schedules::HandoverEntry>,
    /// Hand-overs the master replaced whose agents have not said they ended them: their
    /// occurrences may still report (a replay after an outage).
    retired_handovers: BTreeMap<TaskId, crate::model::Handover>,
    /// Occurrence tasks made from agents' reports, while their hand-over may still report:
    /// a late event of one that settled must not make it again.
    adopted: std::collections::BTreeSet<TaskId>,
    next_schedule: crate::model::ScheduleId,
    /// Per agent: the incarnation and time the master's clock last went to it.
    clock_sent: BTreeMap<String, (u32, Instant)>,
    /// Agents whose latest word was that they do not trust their clock.
    clock_untrusted: std::collections::BTreeSet<String>,
}

impl Master {
    /// A master with an empty store.
    pub fn new(config: Config, now: Instant) -> Result<Self, RequestError> {
        Self::restore(
            config,
            Snapshot {
                next_task: 1,
                next_attempt: 1,
                next_order: 1,
                next_schedule: 1,
                ..Snapshot::default()
            },
            now,
        )
    }

    // ----- getters -----

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The public half of the signing key: what agents are configured with.
    pub fn public_key(&self) -> [u8; KEY_LEN] {
        self.config.signing_key.public_key()
    }

    pub fn agent_key(&self, id: &str) -> Option<&AgentKey> {
        self.agent_keys.get(id)
    }

    /// Messages dropped per provisioned agent because they did not authenticate.
    pub fn security(&self) -> &BTreeMap<String, SecurityCounts> {
        &self.security
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The topic filters the master's connection subscribes to (again after every reconnect).
    pub fn subscriptions(&self) -> Vec<String> {
        ["event", "heartbeat", "presence"]
            .into_iter()
            .filter_map(|leaf| tether_core::topic::all_agents(&self.config.prefix, leaf).ok())
            .map(|t| t.as_str().to_owned())
            .collect()
    }

    pub fn agent_views(&self, now: Instant) -> Vec<AgentView> {
        let silence = self.silence();
        self.agents
            .iter()
            .map(|(id, a)| AgentView {
                id: id.clone(),
                incarnation: a.incarnation,
                presence: a.presence,
                available: !a.disabled && a.available(now, silence),
                disabled: a.disabled,
                silent_ms: now.saturating_duration_since(a.last_heard).as_millis(),
                acked_seq: a.acked,
                journal_seq: a.journal_seq,
                journal: a.journal,
                attempts: self
                    .tasks
                    .values()
                    .flat_map(|t| &t.attempts)
                    .filter(|at| at.is_open() && at.agent == *id)
                    .map(|at| at.id)
                    .collect(),
            })
            .collect()
    }

    /// The state the core holds for a task (`None` once it is settled and dropped).
    pub fn task_state(&self, id: TaskId) -> Option<TaskState> {
        self.tasks.get(&id).map(|t| t.task.state)
    }

    /// The task of an attempt while the core holds it.
    pub fn task_of_attempt(&self, attempt: AttemptId) -> Option<TaskId> {
        self.tasks
            .iter()
            .find(|(_, t)| t.attempts.iter().any(|a| a.id == attempt))
            .map(|(id, _)| *id)
    }

    /// `(attempt, agent, state)` of a task's attempts while the core holds it.
    pub fn attempts(&self, id: TaskId) -> Vec<(AttemptId, String, AttemptState)> {
        self.tasks
            .get(&id)
            .map(|t| {
                t.attempts
                    .iter()
                    .map(|a| (a.id, a.agent.clone(), a.state))
                    .collect()
            })
            .unwrap_or_default()
    }

    // ----- inputs (messages in `inbox.rs`, requests in `requests.rs`) -----

    /// The broker accepted the master's connection (subscriptions are being made).
    pub fn handle_connected(&mut self, now: Instant) {
        self.advance(now);
        self.connected = true;
        let presence = self.presence(State::Online);
        self.publish_presence(presence.as_bytes());
        self.next_heartbeat = now;
        self.resend_all(now);
        self.tick(now);
    }

    pub fn handle_disconnected(&mut self, now: Instant) {
        self.advance(now);
        self.connected = false;
        self.tick(now);
    }

    /// A normal stop: announce `offline <epoch> stopped` (retained) before disconnecting.
    pub fn handle_stop(&mut self, now: Instant) {
        self.advance(now);
        let text = self.presence(State::Stopped);
        self.publish_presence(text.as_bytes());
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.tick(now);
    }

    /// After every input: act on whatever is due, in this order (deadlines first, so that
    /// scheduling sees the attempts they closed, and states derived from the result).
    fn tick(&mut self, now: Instant) {
        self.agent_silence(now);
        self.attempt_deadlines(now);
        self.progress_orders(now);
        self.plan_schedules(now);
        self.schedule(now);
        self.retransmit(now);
        self.derive_task_states();
        self.heartbeat(now);
        self.acknowledge();
        self.tasks.retain(|_, t| !t.is_settled());
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }
}
