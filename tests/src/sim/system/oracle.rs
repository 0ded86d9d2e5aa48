//! The master side's oracle: what the real master core commits and is told, checked against
//! invariants 6 to 8 of [`crate::sim::invariants`], and the store checked at the end of a run.

use std::collections::BTreeMap;

use tether_core::message::{Event, Message, TaskRef};
use tether_core::policy::OnDisconnect;
use tether_core::presence::{Presence, State};
use tether_core::topic::Topic;
use tether_core::wire;
use tether_core::{Duration, Instant};
use tether_master::core::Change;
use tether_master::model::{AttemptState, TaskState};
use tether_master::store::Store;

use super::{AttemptRecord, RealMaster, Seen};
use crate::sim::invariants::{Invariant, TICK, Violation, secs};
use crate::sim::net::Net;
use crate::sim::world::Observed;

impl RealMaster {
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

    /// What the core is about to commit: invariants 7 and 8 at once, 6 at the step's end; the
    /// orders' changes are noted for 10 to 13, checked at the run's end.
    pub(super) fn observe_change(
        &mut self,
        net: &mut Net,
        change: &Change,
        now: Instant,
    ) -> Result<(), Violation> {
        self.orders.observe(change, net.trace_mut(), now);
        match change {
            Change::NewTask { id, task, .. } => {
                self.policies.insert(*id, task.policy);
            }
            Change::NewAttempt {
                id, task, agent, ..
            } => {
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
    pub(super) fn observe_message(&mut self, topic: &str, payload: &[u8], now: Instant) {
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

    /// Invariant 6 at the step's end; 7 and 8 were checked as the changes went by.
    pub(super) fn check_master(
        &mut self,
        agents: &Observed<'_>,
        now: Instant,
    ) -> Result<(), Violation> {
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
}
