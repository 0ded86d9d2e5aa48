//! Tasks go out: pending tasks get an attempt on the agent placement picks, start and kill
//! commands are sent and repeated until answered (and all again after a reconnect), and
//! acknowledgements follow stored events. A restarted master is rebuilt here from what the
//! store holds.

use std::collections::{BTreeMap, VecDeque};

use log::{info, warn};
use std::sync::Arc;

use tether_core::message::{CommandBody, Exit, TaskRef};
use tether_core::topic::validate_prefix;
use tether_core::{Duration, Instant};

use super::deadlines::{due, retransmit_kill_at, retransmit_start_at, start_at};
use super::liveness::SentHeartbeats;
use super::orders::Gate;
use super::registry::AgentEntry;
use super::{AttemptEntry, Change, Config, Master, RequestError, Snapshot, Stats, TaskEntry};
use crate::model::{AttemptId, AttemptState, TaskId};

impl Master {
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
                fresh.wall = self.wall;
                fresh.clock_sent = std::mem::take(&mut self.clock_sent);
                fresh.clock_untrusted = std::mem::take(&mut self.clock_untrusted);
                fresh.retired_handovers = std::mem::take(&mut self.retired_handovers);
                fresh.adopted = std::mem::take(&mut self.adopted);
                *self = fresh;
            }
            // The configuration was accepted at start and does not change.
            Err(e) => log::error!("cannot rebuild the core: {e}"),
        }
    }

    /// Rebuilds the master from what the store holds. Agents count as heard at `now`: the
    /// master gives each a full timeout before it decides anything about its tasks.
    pub fn restore(config: Config, snap: Snapshot, now: Instant) -> Result<Self, RequestError> {
        validate_prefix(&config.prefix).map_err(|error| RequestError::InvalidPrefix {
            prefix: config.prefix.clone(),
            error,
        })?;
        if config.heartbeat_period.as_ticks() == 0 {
            return Err(RequestError::ZeroHeartbeatPeriod);
        }
        let mut agents = BTreeMap::new();
        for (a, above) in snap.agents {
            let entry = AgentEntry::restored(&a, above, now);
            agents.insert(a.id, entry);
        }
        let mut tasks = BTreeMap::new();
        // (task, attempt, the attempt it was chained behind): resolved once orders are back.
        let mut afters = Vec::new();
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
                    afters.push((task.id, a.id, a.after));
                    AttemptEntry {
                        superseded: open && Some(a.id) != newest_open,
                        failed: a.state == AttemptState::Lost
                            || (a.state == AttemptState::Finished && a.exit != Some(Exit::Code(0))),
                        next_start: now,
                        kill_wanted: open && kill_requested,
                        next_kill: now,
                        // Filled in below, once the orders are back.
                        after: None,
                        self_started: false,
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
                    retry_delay: Duration::from_ticks(0),
                },
            );
        }
        let mut master = Self {
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
            workflows: BTreeMap::new(),
            orders: BTreeMap::new(),
            next_order: snap.next_order.max(1),
            wall: None,
            schedules: BTreeMap::new(),
            handovers: BTreeMap::new(),
            retired_handovers: BTreeMap::new(),
            adopted: Default::default(),
            next_schedule: snap.next_schedule.max(1),
            clock_sent: BTreeMap::new(),
            clock_untrusted: Default::default(),
            config,
        };
        for w in snap.workflows {
            let versions = master.workflows.entry(w.name.clone()).or_default();
            versions.push(Arc::new(w));
            versions.sort_by_key(|w| w.version);
        }
        master.restore_orders(snap.orders, snap.step_tasks);
        master.restore_schedules(snap.schedules, snap.handovers, snap.last_occurrences);
        master.adopted = snap.adopted.into_iter().collect();
        // Occurrences agents started themselves get no start command.
        let handed: Vec<TaskId> = master
            .tasks
            .values()
            .filter(|t| {
                t.task.occurrence.is_some()
                    && matches!(t.task.target, crate::model::Target::Agent(_))
            })
            .map(|t| t.task.id)
            .collect();
        for id in handed {
            if let Some(t) = master.tasks.get_mut(&id) {
                for a in &mut t.attempts {
                    a.self_started = true;
                }
            }
        }
        let chained: Vec<(TaskId, AttemptId, AttemptId)> = afters
            .into_iter()
            .filter_map(|(task, attempt, after)| Some((task, attempt, after?)))
            .collect();
        for (task, attempt, after) in chained {
            let after = master.after_of(task, after);
            if let Some(a) = master
                .tasks
                .get_mut(&task)
                .and_then(|t| t.attempt_mut(attempt))
            {
                a.after = after;
            }
        }
        Ok(master)
    }

    /// Every task waiting for an attempt gets one, where placement finds room. Tasks are
    /// taken in id order, so a chain of workflow steps goes out in one pass, each step behind
    /// the one before ([`super::orders`]).
    pub(super) fn schedule(&mut self, now: Instant) {
        let waiting: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| due(start_at(t), now))
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
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            let (agent, after) = match self.gate(t) {
                Gate::Closed => continue,
                Gate::Open => (self.place(now, id, &open), None),
                Gate::Chained { agent, after } => {
                    (self.place_on(now, id, &agent, &open), Some(after))
                }
            };
            let Some(agent) = agent else {
                continue;
            };
            *open.entry(agent.clone()).or_insert(0) += 1;
            let attempt = self.next_attempt;
            self.next_attempt += 1;
            match after {
                Some(a) => info!(
                    "task {id}: attempt {attempt} to agent {agent}, after attempt {}",
                    a.task.attempt
                ),
                None => info!("task {id}: attempt {attempt} to agent {agent}"),
            }
            self.persist(Change::NewAttempt {
                id: attempt,
                task: id,
                agent: agent.clone(),
                after: after.map(|a| a.task.attempt),
            });
            if let Some(t) = self.tasks.get_mut(&id) {
                let mut entry = AttemptEntry::new(attempt, agent, now);
                entry.after = after;
                t.attempts.push(entry);
            }
        }
    }

    /// After a reconnect, every start and kill still wanted goes out at once.
    pub(super) fn resend_all(&mut self, now: Instant) {
        for t in self.tasks.values_mut() {
            for a in &mut t.attempts {
                a.next_start = now;
                a.next_kill = now;
            }
        }
        for a in self.agents.values_mut() {
            a.ack_due = a.acked > 0;
        }
    }

    /// Start and kill commands due to available agents.
    pub(super) fn retransmit(&mut self, now: Instant) {
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
                if due(retransmit_start_at(a, t.kill_requested), now) {
                    a.next_start = now.saturating_add(period);
                    match t.task.spec(a.id) {
                        Ok(spec) => out.push((
                            a.agent.clone(),
                            match a.after {
                                Some(after) => CommandBody::StartAfter { spec, after },
                                None => CommandBody::Start(spec),
                            },
                        )),
                        Err(e) => warn!("task {}: cannot build its start: {e}", t.task.id),
                    }
                }
                if due(retransmit_kill_at(a), now) {
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

    /// Acknowledges, per agent, the stored prefix of its events after an input that brought
    /// some (duplicates too: the agent may have missed the last acknowledgement).
    pub(super) fn acknowledge(&mut self) {
        let owed: Vec<(String, u64)> = self
            .agents
            .iter_mut()
            .filter_map(|(id, a)| {
                let up_to = a.agent_seq(a.acked);
                (std::mem::take(&mut a.ack_due) && up_to > 0).then(|| (id.clone(), up_to))
            })
            .collect();
        for (id, up_to) in owed {
            self.command(&id, CommandBody::Ack { up_to });
        }
    }
}
