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
//! What it decides:
//! - the agent registry from retained presence with incarnations (a will of another
//!   incarnation than the live one is ignored) and from heartbeats; an agent is *available* for
//!   new tasks while it is online and heard within two heartbeat periods plus the delay
//!   allowance;
//! - task life: pending (queued), dispatched, accepted, running, unreachable, then succeeded,
//!   failed, killed or lost, through attempts; start commands retransmitted every heartbeat
//!   period until the agent accepts or rejects; events deduplicated by (agent, seq) and
//!   acknowledged over the contiguous prefix only;
//! - loss: an attempt of a `kill` task is lost once its heartbeat timeout plus the delay
//!   allowance has passed since the agent was last heard (the agent has killed it by then); a
//!   `continue` task shows unreachable and, with `lost_after` and a cluster target, gets a new
//!   attempt elsewhere; the first attempt to finish decides the outcome, a failure defers to
//!   another attempt still open, late results are recorded on their own attempt;
//! - reconciliation: an agent heartbeat lists what it holds; once its events are all stored,
//!   attempts the master thinks accepted or running but not listed are lost, and listed
//!   attempts the master does not know (or gave up) are killed;
//! - clusters: round-robin (cursor persisted) or fixed-priority over available members;
//! - retries: a failed attempt is retried while the task's retry budget lasts;
//! - authentication: everything it publishes is signed ([`Config::signing_key`]) and counted
//!   from one counter per epoch; what an agent publishes must carry that agent's MAC (keys from
//!   [`Master::set_agent_key`]), else it is dropped and counted ([`Master::security`]).

mod liveness;
mod registry;
mod types;

use std::collections::{BTreeMap, VecDeque};

use log::{info, warn};
use tether_core::auth::{AgentKey, KEY_LEN, Verifier};
use tether_core::message::{
    AgentHeartbeat, Command, CommandBody, Event, EventKind, Exit, KillCause, MasterHeartbeat,
    Message, RejectReason, TaskRef,
};
use tether_core::policy::OnDisconnect;
use tether_core::presence::{Presence, State};
use tether_core::topic::{Topic, validate_id, validate_prefix};
use tether_core::wire::{self, DecodeError, Signer};
use tether_core::{Duration, Instant};

use crate::model::{
    AgentPresence, AttemptId, AttemptState, AttemptUpdate, Cluster, ClusterMode, NewTask, Outcome,
    Profile, Target, Task, TaskId, TaskPolicy, TaskState,
};
use crate::passwords::MASTER_USER;
use liveness::SentHeartbeats;
use registry::{AgentEntry, PresenceEffect, Seq};
pub use types::{
    Action, AgentView, Change, ClusterRequest, Config, PolicyOverrides, ProfileRequest, Publish,
    Qos, RequestError, SecurityCounts, Snapshot, Stats, Submit,
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
}

impl AttemptEntry {
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
}

impl Master {
    /// A master with an empty store.
    pub fn new(config: Config, now: Instant) -> Result<Self, RequestError> {
        Self::restore(
            config,
            Snapshot {
                next_task: 1,
                next_attempt: 1,
                ..Snapshot::default()
            },
            now,
        )
    }

    /// Rebuilds the master from what the store holds. Agents count as heard at `now`: the
    /// master gives each a full timeout before it decides anything about its tasks.
    pub fn restore(config: Config, snap: Snapshot, now: Instant) -> Result<Self, RequestError> {
        validate_prefix(&config.prefix)
            .map_err(|e| RequestError::Invalid(format!("prefix '{}': {e}", config.prefix)))?;
        if config.heartbeat_period.as_ticks() == 0 {
            return Err(RequestError::Invalid(
                "heartbeat period must be greater than zero".into(),
            ));
        }
        let mut agents = BTreeMap::new();
        for (a, above) in snap.agents {
            let entry =
                AgentEntry::restored(a.incarnation, a.presence, a.last_seq_acked, above, now);
            agents.insert(a.id, entry);
        }
        let mut tasks = BTreeMap::new();
        for (task, attempts) in snap.tasks {
            let kill_requested = snap.kill_requests.contains(&task.id);
            let newest_open = attempts
                .iter()
                .filter(|a| !a.state.is_terminal())
                .map(|a| a.id)
                .max();
            let attempts = attempts
                .into_iter()
                .map(|a| {
                    agents
                        .entry(a.agent_id.clone())
                        .or_insert_with(|| AgentEntry::new(now));
                    let open = !a.state.is_terminal();
                    AttemptEntry {
                        superseded: open && Some(a.id) != newest_open,
                        failed: a.state == AttemptState::Lost
                            || (a.state == AttemptState::Finished && a.exit != Some(Exit::Code(0))),
                        next_start: now,
                        kill_wanted: open && kill_requested,
                        next_kill: now,
                        id: a.id,
                        agent: a.agent_id,
                        state: a.state,
                    }
                })
                .collect();
            tasks.insert(
                task.id,
                TaskEntry {
                    task,
                    attempts,
                    kill_requested,
                    retry_at: now,
                },
            );
        }
        Ok(Self {
            now,
            connected: false,
            agents,
            clusters: snap
                .clusters
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect(),
            profiles: snap
                .profiles
                .into_iter()
                .map(|p| (p.name, p.policy))
                .collect(),
            tasks,
            next_task: snap.next_task.max(1),
            next_attempt: snap.next_attempt.max(1),
            counter: 0,
            next_heartbeat: now,
            sent_heartbeats: SentHeartbeats::default(),
            actions: VecDeque::new(),
            stats: Stats::default(),
            agent_keys: snap.agent_keys.into_iter().collect(),
            security: BTreeMap::new(),
            config,
        })
    }

    /// Rebuilds the master from the store after a batch could not be committed: the store
    /// holds exactly what was committed, so the core forgets what it decided since. What
    /// already went out under this epoch stays valid: the signing counter only grows (agents
    /// refuse a counter they have seen), and the connection, counters and sent heartbeats
    /// carry over.
    pub fn recover(&mut self, snap: Snapshot, now: Instant) {
        match Self::restore(self.config.clone(), snap, now) {
            Ok(mut fresh) => {
                fresh.counter = self.counter;
                fresh.connected = self.connected;
                fresh.stats = self.stats;
                fresh.security = std::mem::take(&mut self.security);
                fresh.sent_heartbeats = std::mem::take(&mut self.sent_heartbeats);
                fresh.next_heartbeat = self.next_heartbeat;
                *self = fresh;
            }
            // The configuration was accepted at start and does not change.
            Err(e) => log::error!("cannot rebuild the core: {e}"),
        }
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

    /// The heartbeat period in force: the configured one, or shorter if an open attempt's
    /// policy asks for it (an agent judges the master by the task's own timeout).
    pub fn heartbeat_period(&self) -> Duration {
        self.tasks
            .values()
            .flat_map(|t| {
                let period = Duration::from_millis(t.task.policy.heartbeat_period_ms);
                t.attempts
                    .iter()
                    .filter(|a| a.is_open())
                    .map(move |_| period)
            })
            .fold(self.config.heartbeat_period, Duration::min)
    }

    /// How long an online agent may be silent before new tasks avoid it.
    pub fn silence(&self) -> Duration {
        let p = self.heartbeat_period();
        p + p + self.config.delay_allowance
    }

    pub fn agent_views(&self, now: Instant) -> Vec<AgentView> {
        let silence = self.silence();
        self.agents
            .iter()
            .map(|(id, a)| AgentView {
                id: id.clone(),
                incarnation: a.incarnation,
                presence: a.presence,
                available: a.available(now, silence),
                silent_ms: now.saturating_duration_since(a.last_heard).as_millis(),
                acked_seq: a.acked,
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

    // ----- outputs -----

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Master::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let silence = self.silence();
        let mut candidates: Vec<Instant> = Vec::new();
        if self.connected {
            candidates.push(self.next_heartbeat);
        }
        for a in self.agents.values() {
            if a.presence == AgentPresence::Online {
                candidates.push(a.silent_at(silence));
            }
        }
        for t in self.tasks.values() {
            if t.task.state.is_terminal() && !t.has_open() {
                continue;
            }
            if t.current().is_none() && !t.task.state.is_terminal() {
                candidates.push(t.retry_at);
            }
            let policy = &t.task.policy;
            for a in t.attempts.iter().filter(|a| a.is_open()) {
                let heard = self.heard(&a.agent);
                if policy.on_disconnect == OnDisconnect::Kill {
                    candidates.push(heard.saturating_add(self.lost_delay(policy)));
                } else if let Some(after) = self.lost_after(t, a) {
                    candidates.push(heard.saturating_add(after));
                }
                if a.state == AttemptState::Sent && !t.kill_requested {
                    candidates.push(a.next_start);
                }
                if a.kill_wanted {
                    candidates.push(a.next_kill);
                }
            }
        }
        // A deadline already passed was acted on, or waits on a message (an agent coming
        // back), not on time.
        candidates.into_iter().filter(|t| *t > self.now).min()
    }

    // ----- inputs -----

    /// The broker accepted the master's connection (subscriptions are being made).
    pub fn handle_connected(&mut self, now: Instant) {
        self.advance(now);
        self.connected = true;
        let presence = self.presence(State::Online);
        self.publish_presence(presence.as_bytes());
        self.next_heartbeat = now;
        for t in self.tasks.values_mut() {
            for a in &mut t.attempts {
                a.next_start = now;
                a.next_kill = now;
            }
        }
        for a in self.agents.values_mut() {
            a.ack_due = a.acked > 0;
        }
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

    /// A message on a subscribed topic. Anything malformed is counted and dropped.
    pub fn handle_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        self.advance(now);
        match Topic::parse(&self.config.prefix, topic) {
            Ok(Topic::AgentEvent(id)) => match self.decode_from(&id, topic, payload) {
                Ok(Message::Event(event)) => self.handle_event(now, &id, event),
                Ok(_) => self.bad(topic, "not an event"),
                Err(e) => self.unauthentic(&id, topic, e),
            },
            Ok(Topic::AgentHeartbeat(id)) => match self.decode_from(&id, topic, payload) {
                Ok(Message::AgentHeartbeat(hb)) => self.handle_heartbeat(now, &id, &hb),
                Ok(_) => self.bad(topic, "not an agent heartbeat"),
                Err(e) => self.unauthentic(&id, topic, e),
            },
            // An empty retained payload clears the topic: nothing to learn.
            Ok(Topic::AgentPresence(_)) if payload.is_empty() => {}
            Ok(Topic::AgentPresence(id)) => {
                let parsed = self
                    .verifier(&id)
                    .and_then(|v| Presence::parse_verified(payload, topic, v));
                match parsed {
                    Ok(p) => self.handle_presence(now, &id, p),
                    Err(e) => self.unauthentic(&id, topic, e),
                }
            }
            _ => self.stats.foreign_messages += 1,
        }
        self.tick(now);
    }

    /// Sets (provisions or rotates) an agent's MAC key; from now on only messages with its MAC
    /// are taken from that agent.
    pub fn set_agent_key(
        &mut self,
        now: Instant,
        id: &str,
        key: AgentKey,
    ) -> Result<(), RequestError> {
        self.advance(now);
        check_name("agent", id)?;
        if id == MASTER_USER {
            // Brokers that take the user name as client id would let it clash with the master.
            return Err(RequestError::Invalid(format!(
                "agent id '{id}' is the master's own broker user"
            )));
        }
        self.agent_keys.insert(id.to_owned(), key);
        self.persist(Change::AgentKey {
            agent: id.to_owned(),
            key,
        });
        Ok(())
    }

    /// Accepts a task and dispatches it as soon as an agent is available.
    pub fn submit(&mut self, now: Instant, req: Submit) -> Result<TaskId, RequestError> {
        self.advance(now);
        let target = match (req.agent, req.cluster) {
            (Some(agent), None) => {
                check_name("agent", &agent)?;
                if !self.agents.contains_key(&agent) {
                    return Err(RequestError::NotFound(format!(
                        "unknown agent '{agent}': it has never connected to this master"
                    )));
                }
                Target::Agent(agent)
            }
            (None, Some(cluster)) => {
                if !self.clusters.contains_key(&cluster) {
                    return Err(RequestError::NotFound(format!(
                        "unknown cluster '{cluster}'"
                    )));
                }
                Target::Cluster(cluster)
            }
            _ => {
                return Err(RequestError::Invalid(
                    "give exactly one target: an agent or a cluster".into(),
                ));
            }
        };
        let base = match &req.profile {
            Some(name) => *self
                .profiles
                .get(name)
                .ok_or_else(|| RequestError::NotFound(format!("unknown profile '{name}'")))?,
            None => TaskPolicy::DEFAULT,
        };
        let policy = req.policy.apply(base);
        validate_policy(&policy)?;
        let new = NewTask {
            target,
            argv: req.argv,
            env: req.env,
            cwd: req.cwd,
            profile: req.profile,
            policy,
            start_at_ms: req.start_at_ms,
        };
        let id = self.next_task;
        let task = Task {
            id,
            target: new.target.clone(),
            argv: new.argv.clone(),
            env: new.env.clone(),
            cwd: new.cwd.clone(),
            profile: new.profile.clone(),
            policy,
            start_at_ms: new.start_at_ms,
            state: TaskState::Pending,
            outcome: None,
            created_ms: 0,
            updated_ms: 0,
        };
        // The agent's own checks (argv, env, sizes), before anything is stored.
        task.spec(self.next_attempt)
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.next_task += 1;
        self.persist(Change::NewTask {
            id,
            task: new,
            state: TaskState::Pending,
        });
        self.tasks.insert(
            id,
            TaskEntry {
                task,
                attempts: Vec::new(),
                kill_requested: false,
                retry_at: now,
            },
        );
        self.tick(now);
        Ok(id)
    }

    /// Kills a task: at once if no attempt is out, else by kill commands repeated until every
    /// open attempt has finished (or is given up by its policy).
    pub fn kill(&mut self, now: Instant, id: TaskId) -> Result<(), RequestError> {
        self.advance(now);
        let Some(t) = self.tasks.get_mut(&id) else {
            return Err(if id > 0 && id < self.next_task {
                RequestError::Conflict(format!("task {id} has already finished"))
            } else {
                RequestError::NotFound(format!("no task {id}"))
            });
        };
        if t.task.state.is_terminal() {
            return Err(RequestError::Conflict(format!(
                "task {id} has already finished ({})",
                t.task.state
            )));
        }
        if !t.kill_requested {
            t.kill_requested = true;
            for a in t.attempts.iter_mut().filter(|a| a.is_open()) {
                a.kill_wanted = true;
                a.next_kill = now;
            }
            let open = t.has_open();
            self.persist(Change::KillRequested { task: id });
            if !open {
                self.decide(now, id, TaskState::Killed, Outcome::Cancelled);
            }
        }
        self.tick(now);
        Ok(())
    }

    /// Defines (or replaces) a cluster.
    pub fn put_cluster(&mut self, now: Instant, req: ClusterRequest) -> Result<(), RequestError> {
        self.advance(now);
        check_name("cluster", &req.name)?;
        if req.members.is_empty() {
            return Err(RequestError::Invalid(format!(
                "cluster '{}' needs at least one member",
                req.name
            )));
        }
        for (i, m) in req.members.iter().enumerate() {
            check_name("cluster member", m)?;
            if req.members[..i].contains(m) {
                return Err(RequestError::Invalid(format!(
                    "cluster '{}' lists member '{m}' twice",
                    req.name
                )));
            }
        }
        let cluster = Cluster {
            name: req.name,
            mode: req.mode,
            members: req.members,
            cursor: 0,
        };
        self.persist(Change::Cluster(cluster.clone()));
        self.clusters.insert(cluster.name.clone(), cluster);
        self.tick(now);
        Ok(())
    }

    /// Defines (or replaces) a profile: a named policy set tasks are created from.
    pub fn put_profile(&mut self, now: Instant, req: ProfileRequest) -> Result<(), RequestError> {
        self.advance(now);
        check_name("profile", &req.name)?;
        let policy = req.policy.apply(TaskPolicy::DEFAULT);
        validate_policy(&policy)?;
        self.persist(Change::Profile(Profile {
            name: req.name.clone(),
            policy,
        }));
        self.profiles.insert(req.name, policy);
        Ok(())
    }

    // ----- message handling -----

    fn handle_presence(&mut self, now: Instant, id: &str, p: Presence) {
        let entry = self
            .agents
            .entry(id.to_owned())
            .or_insert_with(|| AgentEntry::new(now));
        match entry.presence(p, now) {
            PresenceEffect::Stale => {
                self.stats.stale_wills += 1;
                info!(
                    "agent {id}: ignoring '{}' of an earlier incarnation",
                    p.render()
                );
            }
            PresenceEffect::Unchanged => {}
            PresenceEffect::Changed => {
                info!("agent {id}: {}", p.render());
                if p.state == State::Online {
                    // Its answer, echoing this heartbeat, is what makes it available.
                    self.next_heartbeat = now;
                }
                let change = Change::Agent {
                    id: id.to_owned(),
                    incarnation: entry.incarnation,
                    presence: entry.presence,
                    heard: p.state == State::Online,
                };
                self.persist(change);
            }
        }
    }

    fn handle_heartbeat(&mut self, now: Instant, id: &str, hb: &AgentHeartbeat) {
        let fresh = self.sent_heartbeats.fresh(
            self.config.epoch,
            hb.echo,
            now,
            self.config.delay_allowance,
        );
        let entry = self
            .agents
            .entry(id.to_owned())
            .or_insert_with(|| AgentEntry::new(now));
        if !fresh || !liveness::newer(entry.last_heartbeat, hb) {
            // A recording, or one sent before the agent heard our latest: not a sign of life.
            self.stats.stale_heartbeats += 1;
            return;
        }
        entry.last_heartbeat = Some((hb.incarnation, hb.counter));
        entry.heard(now);
        let acked = entry.acked;
        let stopped_here =
            entry.presence == AgentPresence::Stopped && entry.incarnation == Some(hb.incarnation);
        if !stopped_here
            && (entry.presence != AgentPresence::Online
                || entry.incarnation != Some(hb.incarnation))
        {
            entry.presence = AgentPresence::Online;
            entry.incarnation = Some(hb.incarnation);
            info!(
                "agent {id}: heartbeating (incarnation {:08x})",
                hb.incarnation
            );
            let change = Change::Agent {
                id: id.to_owned(),
                incarnation: entry.incarnation,
                presence: entry.presence,
                heard: true,
            };
            self.persist(change);
        }
        if hb.last_seq < acked {
            self.stats.journal_behind += 1;
            warn!(
                "agent {id}: journal at seq {} but the master stored up to {acked}; \
                 was its state directory wiped?",
                hb.last_seq
            );
            return;
        }
        if hb.last_seq > acked {
            // Its events are still coming: judge what it holds once they are stored.
            return;
        }
        self.reconcile(now, id, hb);
    }

    /// The agent's events are all stored: compare what it holds with what the master expects.
    fn reconcile(&mut self, now: Instant, id: &str, hb: &AgentHeartbeat) {
        let listed = |a: AttemptId| hb.tasks.iter().any(|t| t.attempt == a);
        let mut lost = Vec::new();
        let mut cancelled = Vec::new();
        if !hb.more_tasks {
            for t in self.tasks.values() {
                for a in t.attempts.iter().filter(|a| a.agent == id && a.is_open()) {
                    if listed(a.id) {
                        continue;
                    }
                    match a.state {
                        AttemptState::Accepted | AttemptState::Running => {
                            lost.push((t.task.id, a.id));
                        }
                        // Killed before the start arrived: nothing will run.
                        AttemptState::Sent if a.kill_wanted => cancelled.push((t.task.id, a.id)),
                        _ => {}
                    }
                }
            }
        }
        for (task, attempt) in cancelled {
            self.close_attempt(task, attempt, AttemptState::Cancelled);
            self.after_failure(now, task, TaskState::Killed, Outcome::Cancelled);
        }
        for (task, attempt) in lost {
            warn!("agent {id}: attempt {attempt} of task {task} unknown to it: lost");
            self.close_attempt(task, attempt, AttemptState::Lost);
            self.after_failure(now, task, TaskState::Lost, Outcome::AgentLost { attempt });
        }
        for held in &hb.tasks {
            let known_open = self
                .tasks
                .get(&held.task)
                .and_then(|t| t.attempts.iter().find(|a| a.id == held.attempt))
                .is_some_and(|a| a.is_open());
            if !known_open {
                self.stats.unknown_attempts_killed += 1;
                warn!(
                    "agent {id}: holds attempt {} of task {} that is not open here: killing it",
                    held.attempt, held.task
                );
                self.command(id, CommandBody::Kill { task: *held });
            }
        }
    }

    fn handle_event(&mut self, now: Instant, id: &str, event: Event) {
        let entry = self
            .agents
            .entry(id.to_owned())
            .or_insert_with(|| AgentEntry::new(now));
        let seq = entry.receive(event.seq);
        let up_to = entry.acked;
        match seq {
            Seq::Duplicate => {
                // Not a sign of life either: it may be a recording.
                self.stats.duplicate_events += 1;
                return;
            }
            Seq::New { advanced } => {
                entry.heard(now);
                self.persist(Change::Event {
                    agent: id.to_owned(),
                    event: event.clone(),
                });
                if advanced {
                    self.persist(Change::Acked {
                        agent: id.to_owned(),
                        up_to,
                    });
                }
            }
        }
        let at = (event.at_unix_ms > 0).then_some(event.at_unix_ms);
        let Some(task) = event.kind.task() else {
            if let EventKind::BadCommand { error, count } = event.kind {
                self.stats.bad_commands_reported += count;
                warn!("agent {id} dropped {count} command(s), the last: {error}");
            }
            return;
        };
        let Some(state) = self.attempt_state(task, id) else {
            info!(
                "agent {id}: event for attempt {} of task {} unknown here; stored only",
                task.attempt, task.task
            );
            return;
        };
        match event.kind {
            EventKind::Accepted { .. } if state == AttemptState::Sent => {
                self.update_attempt(task, AttemptUpdate::to(AttemptState::Accepted));
            }
            EventKind::Rejected { reason, .. } if state == AttemptState::Sent => {
                self.update_attempt(task, AttemptUpdate::to(AttemptState::Rejected));
                self.rejected(now, task, reason);
            }
            EventKind::Started { pid, .. }
                if matches!(state, AttemptState::Sent | AttemptState::Accepted) =>
            {
                self.update_attempt(
                    task,
                    AttemptUpdate {
                        pid: Some(pid),
                        started_ms: at,
                        ..AttemptUpdate::to(AttemptState::Running)
                    },
                );
            }
            EventKind::Output {
                stream,
                offset,
                data,
                ..
            } => self.persist(Change::Output {
                attempt: task.attempt,
                stream,
                offset,
                data: data.to_vec(),
            }),
            EventKind::Finished {
                exit,
                cause,
                output_dropped,
                ..
            } if state != AttemptState::Finished => {
                self.update_attempt(
                    task,
                    AttemptUpdate {
                        exit: Some(exit),
                        kill_cause: cause,
                        output_dropped: Some(output_dropped),
                        finished_ms: at,
                        ..AttemptUpdate::to(AttemptState::Finished)
                    },
                );
                self.finished(now, task, exit, cause);
            }
            _ => {}
        }
    }

    fn rejected(&mut self, now: Instant, task: TaskRef, reason: RejectReason) {
        let transient = matches!(
            reason,
            RejectReason::Full | RejectReason::JournalFull | RejectReason::Draining
        );
        let period = self.heartbeat_period();
        let agent = self
            .tasks
            .get(&task.task)
            .and_then(|t| t.attempts.iter().find(|a| a.id == task.attempt))
            .map(|a| a.agent.clone());
        let busy = agent.as_deref().map_or(0, |a| {
            self.open_on(a, |s| {
                matches!(s, AttemptState::Accepted | AttemptState::Running)
            })
        });
        let Some(t) = self.tasks.get_mut(&task.task) else {
            return;
        };
        if t.task.state.is_terminal() || t.has_open() {
            return;
        }
        if t.kill_requested {
            self.decide(now, task.task, TaskState::Killed, Outcome::Cancelled);
        } else if reason == RejectReason::Full && busy > 0 {
            // Not a timer but a free slot decides: the agent's capacity (as many slots as it
            // holds attempts now) gates dispatch in `schedule`, so the task goes out as soon
            // as one of them ends. Waiting a heartbeat period held a busy agent to a few tasks
            // per second. A refusal the master cannot explain (busy == 0: slots taken by what
            // it does not know) keeps the timed retry below, never a tight loop.
            info!("task {}: refused (agent full), will try again", task.task);
            t.retry_at = now;
            if let Some(entry) = agent.and_then(|a| self.agents.get_mut(&a)) {
                entry.learn_capacity(busy);
            }
        } else if transient {
            info!("task {}: refused ({reason:?}), will try again", task.task);
            t.retry_at = now.saturating_add(period);
        } else {
            warn!("task {}: refused by the agent: {reason}", task.task);
            let outcome = Outcome::Rejected {
                attempt: task.attempt,
                reason: reason.to_string(),
            };
            self.decide(now, task.task, TaskState::Failed, outcome);
        }
    }

    fn finished(&mut self, now: Instant, task: TaskRef, exit: Exit, cause: Option<KillCause>) {
        let Some(t) = self.tasks.get_mut(&task.task) else {
            return;
        };
        let success = exit == Exit::Code(0);
        if let Some(a) = t.attempts.iter_mut().find(|a| a.id == task.attempt) {
            a.failed = !success;
        }
        let outcome = Outcome::Exited {
            attempt: task.attempt,
            exit,
            cause,
        };
        if t.task.state.is_terminal() {
            info!(
                "task {}: attempt {} finished after the outcome was decided; recorded on it",
                task.task, task.attempt
            );
            return;
        }
        if success {
            self.decide(now, task.task, TaskState::Succeeded, outcome);
        } else if cause == Some(KillCause::Requested) || exit == Exit::Cancelled {
            self.decide(now, task.task, TaskState::Killed, outcome);
        } else {
            let final_state = if exit == Exit::Lost {
                TaskState::Lost
            } else {
                TaskState::Failed
            };
            self.after_failure(now, task.task, final_state, outcome);
        }
    }

    /// An attempt ended without success: retry, defer to another open attempt, or decide.
    fn after_failure(
        &mut self,
        now: Instant,
        id: TaskId,
        final_state: TaskState,
        outcome: Outcome,
    ) {
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        if t.task.state.is_terminal() || t.has_open() {
            return;
        }
        if t.kill_requested {
            self.decide(now, id, TaskState::Killed, outcome);
            return;
        }
        let failures = t.attempts.iter().filter(|a| a.failed).count() as u64;
        if failures <= u64::from(t.task.policy.retries) {
            info!(
                "task {id}: attempt failed, retrying ({failures} of {} retries)",
                t.task.policy.retries
            );
            t.retry_at = now;
            return;
        }
        let outcome = if t.task.policy.retries > 0 {
            Outcome::RetriesExhausted
        } else {
            outcome
        };
        self.decide(now, id, final_state, outcome);
    }

    /// Sets a task's final state. Other open attempts are cancelled if so configured (or if
    /// the task was killed).
    fn decide(&mut self, now: Instant, id: TaskId, state: TaskState, outcome: Outcome) {
        let cancel = self.config.cancel_duplicates;
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        info!("task {id}: {state}");
        t.task.state = state;
        t.task.outcome = Some(outcome.clone());
        if cancel || t.kill_requested {
            for a in t.attempts.iter_mut().filter(|a| a.is_open()) {
                a.kill_wanted = true;
                a.next_kill = now;
            }
        }
        self.persist(Change::TaskState {
            id,
            state,
            outcome: Some(outcome),
        });
    }

    // ----- the periodic part -----

    fn tick(&mut self, now: Instant) {
        self.agent_silence(now);
        self.attempt_deadlines(now);
        self.schedule(now);
        self.retransmit(now);
        self.derive_task_states();
        self.heartbeat(now);
        self.acknowledge();
        self.tasks.retain(|_, t| !t.is_settled());
    }

    fn agent_silence(&mut self, now: Instant) {
        let silence = self.silence();
        let mut changes = Vec::new();
        for (id, a) in &mut self.agents {
            if a.gone_silent(now, silence) {
                info!(
                    "agent {id}: silent for {} ms, unavailable",
                    silence.as_millis()
                );
                a.presence = AgentPresence::Lost;
                changes.push(Change::Agent {
                    id: id.clone(),
                    incarnation: a.incarnation,
                    presence: a.presence,
                    heard: false,
                });
            }
        }
        for c in changes {
            self.persist(c);
        }
    }

    fn attempt_deadlines(&mut self, now: Instant) {
        let silence = self.silence();
        let mut lost = Vec::new();
        let mut reschedule = Vec::new();
        for t in self.tasks.values() {
            let policy = &t.task.policy;
            for a in t.attempts.iter().filter(|a| a.is_open()) {
                let heard = self.heard(&a.agent);
                if policy.on_disconnect == OnDisconnect::Kill {
                    if now >= heard.saturating_add(self.lost_delay(policy)) {
                        lost.push((t.task.id, a.id));
                    }
                } else if let Some(after) = self.lost_after(t, a) {
                    let available = self
                        .agents
                        .get(&a.agent)
                        .is_some_and(|e| e.available(now, silence));
                    if !available && now >= heard.saturating_add(after) {
                        reschedule.push((t.task.id, a.id));
                    }
                }
            }
        }
        for (task, attempt) in lost {
            warn!("task {task}: agent silent beyond the policy's timeout, attempt {attempt} lost");
            self.close_attempt(task, attempt, AttemptState::Lost);
            self.after_failure(now, task, TaskState::Failed, Outcome::AgentLost { attempt });
        }
        for (task, attempt) in reschedule {
            if let Some(t) = self.tasks.get_mut(&task) {
                info!("task {task}: attempt {attempt} unreachable past lost_after, rescheduling");
                if let Some(a) = t.attempts.iter_mut().find(|a| a.id == attempt) {
                    a.superseded = true;
                }
                t.retry_at = now;
            }
        }
    }

    fn schedule(&mut self, now: Instant) {
        let waiting: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| {
                !t.task.state.is_terminal()
                    && !t.kill_requested
                    && t.current().is_none()
                    && t.retry_at <= now
            })
            .map(|t| t.task.id)
            .collect();
        if waiting.is_empty() {
            return;
        }
        // Open attempts per agent, against the capacities agents taught by refusing.
        let mut open: BTreeMap<String, usize> = BTreeMap::new();
        for a in self.tasks.values().flat_map(|t| &t.attempts) {
            if a.is_open() {
                *open.entry(a.agent.clone()).or_insert(0) += 1;
            }
        }
        for id in waiting {
            let (target, exclude, silence) = {
                let t = &self.tasks[&id];
                let exclude: Vec<String> = t
                    .attempts
                    .iter()
                    .filter(|a| a.is_open())
                    .map(|a| a.agent.clone())
                    .collect();
                // A `kill` attempt to an agent already silent past the task's own loss time
                // would be given up at once (or run unsupervised): such agents do not count.
                let silence = match t.task.policy.on_disconnect {
                    OnDisconnect::Kill => self.silence().min(self.lost_delay(&t.task.policy)),
                    OnDisconnect::Continue => self.silence(),
                };
                (t.task.target.clone(), exclude, silence)
            };
            let Some(agent) = self.pick(now, &target, &exclude, &open, silence) else {
                continue;
            };
            *open.entry(agent.clone()).or_insert(0) += 1;
            let attempt = self.next_attempt;
            self.next_attempt += 1;
            info!("task {id}: attempt {attempt} to agent {agent}");
            self.persist(Change::NewAttempt {
                id: attempt,
                task: id,
                agent: agent.clone(),
            });
            if let Some(t) = self.tasks.get_mut(&id) {
                t.attempts.push(AttemptEntry {
                    id: attempt,
                    agent,
                    state: AttemptState::Sent,
                    superseded: false,
                    failed: false,
                    next_start: now,
                    kill_wanted: false,
                    next_kill: now,
                });
            }
        }
    }

    /// The agent for a new attempt, among the available ones not in `exclude`.
    fn pick(
        &mut self,
        now: Instant,
        target: &Target,
        exclude: &[String],
        open: &BTreeMap<String, usize>,
        silence: Duration,
    ) -> Option<String> {
        let usable = |agents: &BTreeMap<String, AgentEntry>, id: &String| {
            !exclude.contains(id)
                && agents.get(id).is_some_and(|a| {
                    a.available(now, silence) && a.has_room(open.get(id).copied().unwrap_or(0))
                })
        };
        match target {
            Target::Agent(id) => usable(&self.agents, id).then(|| id.clone()),
            Target::Cluster(name) => {
                let cluster = self.clusters.get_mut(name)?;
                let n = cluster.members.len();
                let start = match cluster.mode {
                    ClusterMode::RoundRobin => (cluster.cursor % n.max(1) as u64) as usize,
                    ClusterMode::FixedPriority => 0,
                };
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| usable(&self.agents, &cluster.members[i]))?;
                let chosen = cluster.members[i].clone();
                if cluster.mode == ClusterMode::RoundRobin {
                    cluster.cursor = (i + 1) as u64;
                    let change = Change::ClusterCursor {
                        name: name.clone(),
                        cursor: cluster.cursor,
                    };
                    self.persist(change);
                }
                Some(chosen)
            }
        }
    }

    fn retransmit(&mut self, now: Instant) {
        let silence = self.silence();
        let period = self.heartbeat_period();
        let mut out = Vec::new();
        for t in self.tasks.values_mut() {
            for a in t.attempts.iter_mut().filter(|a| a.is_open()) {
                let available = self
                    .agents
                    .get(&a.agent)
                    .is_some_and(|e| e.available(now, silence));
                if !available {
                    continue;
                }
                if a.state == AttemptState::Sent && !t.kill_requested && a.next_start <= now {
                    a.next_start = now.saturating_add(period);
                    match t.task.spec(a.id) {
                        Ok(spec) => out.push((a.agent.clone(), CommandBody::Start(spec))),
                        Err(e) => warn!("task {}: cannot build its start: {e}", t.task.id),
                    }
                }
                if a.kill_wanted && a.next_kill <= now {
                    a.next_kill = now.saturating_add(period);
                    let task = TaskRef {
                        task: t.task.id,
                        attempt: a.id,
                    };
                    out.push((a.agent.clone(), CommandBody::Kill { task }));
                }
            }
        }
        for (agent, body) in out {
            self.command(&agent, body);
        }
    }

    fn derive_task_states(&mut self) {
        let silence = self.silence();
        let now = self.now;
        let mut changes = Vec::new();
        for t in self.tasks.values_mut() {
            if t.task.state.is_terminal() {
                continue;
            }
            let state = match t.current() {
                None => TaskState::Pending,
                Some(a) => {
                    let available = self
                        .agents
                        .get(&a.agent)
                        .is_some_and(|e| e.available(now, silence));
                    match a.state {
                        _ if !available => TaskState::Unreachable,
                        AttemptState::Sent => TaskState::Dispatched,
                        AttemptState::Accepted => TaskState::Accepted,
                        _ => TaskState::Running,
                    }
                }
            };
            if state != t.task.state {
                t.task.state = state;
                changes.push(Change::TaskState {
                    id: t.task.id,
                    state,
                    outcome: None,
                });
            }
        }
        for c in changes {
            self.persist(c);
        }
    }

    fn heartbeat(&mut self, now: Instant) {
        let period = self.heartbeat_period();
        // A shorter period (a new task asks for it) applies from now, not after the old one.
        self.next_heartbeat = self.next_heartbeat.min(now.saturating_add(period));
        if !self.connected || self.next_heartbeat > now {
            return;
        }
        self.next_heartbeat = now.saturating_add(period);
        // Heartbeats and commands share the counter: an agent takes a heartbeat as contact only
        // when it is newer than everything it accepted.
        self.counter += 1;
        self.sent_heartbeats.prune(now, self.config.delay_allowance);
        self.sent_heartbeats.record(self.counter, now, period);
        let hb = Message::MasterHeartbeat(MasterHeartbeat {
            epoch: self.config.epoch,
            counter: self.counter,
            period_ms: period.as_millis(),
        });
        if let Ok(topic) = Topic::MasterHeartbeat.build(&self.config.prefix) {
            self.publish(topic.as_str(), &hb, Qos::AtMostOnce, false);
        }
    }

    fn acknowledge(&mut self) {
        let due: Vec<(String, u64)> = self
            .agents
            .iter_mut()
            .filter_map(|(id, a)| {
                (std::mem::take(&mut a.ack_due) && a.acked > 0).then(|| (id.clone(), a.acked))
            })
            .collect();
        for (id, up_to) in due {
            self.command(&id, CommandBody::Ack { up_to });
        }
    }

    // ----- helpers -----

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// How many attempts on `agent` are in a state `f` accepts.
    fn open_on(&self, agent: &str, f: impl Fn(AttemptState) -> bool) -> usize {
        self.tasks
            .values()
            .flat_map(|t| &t.attempts)
            .filter(|a| a.agent == agent && f(a.state))
            .count()
    }

    fn heard(&self, agent: &str) -> Instant {
        self.agents.get(agent).map_or(self.now, |a| a.last_heard)
    }

    fn lost_delay(&self, policy: &TaskPolicy) -> Duration {
        Duration::from_millis(policy.heartbeat_timeout_ms) + self.config.delay_allowance
    }

    /// `lost_after` where it applies: a `continue` attempt of a cluster task, not yet replaced.
    fn lost_after(&self, t: &TaskEntry, a: &AttemptEntry) -> Option<Duration> {
        let after = t.task.policy.lost_after_ms?;
        let applies = t.task.policy.on_disconnect == OnDisconnect::Continue
            && matches!(t.task.target, Target::Cluster(_))
            && !a.superseded
            && !t.task.state.is_terminal();
        applies.then(|| Duration::from_millis(after))
    }

    fn attempt_state(&self, task: TaskRef, agent: &str) -> Option<AttemptState> {
        self.tasks
            .get(&task.task)?
            .attempts
            .iter()
            .find(|a| a.id == task.attempt && a.agent == agent)
            .map(|a| a.state)
    }

    fn update_attempt(&mut self, task: TaskRef, update: AttemptUpdate) {
        if let Some(a) = self
            .tasks
            .get_mut(&task.task)
            .and_then(|t| t.attempts.iter_mut().find(|a| a.id == task.attempt))
        {
            a.state = update.state;
            if !a.is_open() {
                a.kill_wanted = false;
            }
            self.persist(Change::Attempt {
                id: task.attempt,
                update,
            });
        }
    }

    fn close_attempt(&mut self, task: TaskId, attempt: AttemptId, state: AttemptState) {
        if let Some(a) = self
            .tasks
            .get_mut(&task)
            .and_then(|t| t.attempts.iter_mut().find(|a| a.id == attempt))
        {
            a.failed = state == AttemptState::Lost;
        }
        self.update_attempt(TaskRef { task, attempt }, AttemptUpdate::to(state));
    }

    fn command(&mut self, agent: &str, body: CommandBody) {
        let Ok(id) = validate_id(agent) else {
            return;
        };
        let Ok(topic) = Topic::AgentCommand(id).build(&self.config.prefix) else {
            return;
        };
        self.counter += 1;
        let msg = Message::Command(Command {
            epoch: self.config.epoch,
            counter: self.counter,
            body,
        });
        self.publish(topic.as_str(), &msg, Qos::AtLeastOnce, false);
    }

    fn publish(&mut self, topic: &str, msg: &Message, qos: Qos, retain: bool) {
        if !self.connected {
            return;
        }
        let mut buf = [0u8; wire::MAX_MESSAGE];
        let signer = Signer::Master(&self.config.signing_key);
        match wire::encode_for(msg, topic, signer, &mut buf) {
            Ok(bytes) => self.actions.push_back(Action::Publish(Publish {
                topic: topic.to_owned(),
                payload: bytes.to_vec(),
                qos,
                retain,
            })),
            Err(e) => warn!("cannot encode a message for {topic}: {e:?}"),
        }
    }

    fn publish_presence(&mut self, text: &[u8]) {
        if let Ok(topic) = Topic::MasterPresence.build(&self.config.prefix) {
            self.actions.push_back(Action::Publish(Publish {
                topic: topic.as_str().to_owned(),
                payload: text.to_vec(),
                qos: Qos::AtLeastOnce,
                retain: true,
            }));
        }
    }

    fn persist(&mut self, change: Change) {
        self.actions.push_back(Action::Persist(change));
    }

    fn bad(&mut self, topic: &str, why: &str) {
        self.stats.bad_messages += 1;
        warn!("dropped a message on {topic}: {why}");
    }

    /// The master's presence text for `state`, signed for its presence topic.
    pub fn presence(&self, state: State) -> String {
        let p = Presence {
            state,
            incarnation: self.config.epoch,
        };
        Topic::MasterPresence
            .build(&self.config.prefix)
            .map(|topic| {
                p.render_signed(&topic, Signer::Master(&self.config.signing_key))
                    .as_str()
                    .to_owned()
            })
            .unwrap_or_default()
    }

    /// How to check what agent `id` publishes: its key; nothing if it has none and the master
    /// is configured to accept that; otherwise it is unknown.
    fn verifier(&self, id: &str) -> Result<Verifier<'_>, DecodeError> {
        match self.agent_keys.get(id) {
            Some(key) => Ok(Verifier::Agent(key)),
            None if self.config.insecure_agents => Ok(Verifier::Insecure),
            None => Err(DecodeError::UnknownAgent),
        }
    }

    fn decode_from(&self, id: &str, topic: &str, payload: &[u8]) -> Result<Message, DecodeError> {
        wire::decode_verified(payload, topic, self.verifier(id)?)
    }

    /// A message on agent `id`'s topic that did not authenticate (or did not parse): dropped,
    /// counted per provisioned agent and reason, logged at powers of two (a flood stays quiet).
    fn unauthentic(&mut self, id: &str, topic: &str, error: DecodeError) {
        let count = match error {
            DecodeError::UnknownAgent => {
                self.stats.unknown_agent += 1;
                self.stats.unknown_agent
            }
            DecodeError::Unauthenticated | DecodeError::BadSignature => {
                let c = self.security.entry(id.to_owned()).or_default();
                let n = if error == DecodeError::BadSignature {
                    c.bad_signature += 1;
                    c.bad_signature
                } else {
                    c.unauthenticated += 1;
                    c.unauthenticated
                };
                c.last_error = Some(error.to_string());
                n
            }
            _ => return self.bad(topic, &error.to_string()),
        };
        if count.is_power_of_two() {
            warn!("dropped a message on {topic} ({count} so far): {error}");
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<(), RequestError> {
    validate_id(name).map(drop).map_err(|_| {
        RequestError::Invalid(format!(
            "{what} name '{name}' must be 1-32 characters of [A-Za-z0-9._-]"
        ))
    })
}

/// The policy rules of the protocol plus the master's own: `lost_after` only for `continue`
/// tasks, and never zero.
pub fn validate_policy(policy: &TaskPolicy) -> Result<(), RequestError> {
    policy
        .validate()
        .map_err(|e| RequestError::Invalid(e.to_string()))?;
    match policy.lost_after_ms {
        Some(0) => Err(RequestError::Invalid(
            "lost_after must be greater than zero (leave it out to never reschedule)".into(),
        )),
        Some(_) if policy.on_disconnect == OnDisconnect::Kill => Err(RequestError::Invalid(
            "lost_after applies only to on_disconnect = continue tasks (a kill task is failed \
             after its heartbeat timeout)"
                .into(),
        )),
        _ => Ok(()),
    }
}
