//! The agent side's oracle: checks what one agent's executor did during one input (its
//! [`Deed`]s, with the core in view afterwards) against invariants 1, 3, 4, 5 and 9 of
//! [`super::invariants`], and records spawns, signals and durable records in the [`Ledger`].
//! It drives nothing: the world feeds the executor, the oracle only watches.

use std::collections::{BTreeMap, BTreeSet};

use tether_agent::executor::CoreAgent;
use tether_core::agent::{Phase, Signal};
use tether_core::journal::{self, JournalRecord};
use tether_core::message::{EventKind, KillCause, TaskRef};
use tether_core::policy::{OnDisconnect, Policy};
use tether_core::{Duration, Instant};

use super::agent_host::Deed;
use super::invariants::{Invariant, Ledger, SignalRecord, TICK, Violation, secs};
use super::procs::Procs;
use super::trace::Trace;
use super::world::WALL0_MS;

/// What the oracle remembers of one agent process.
#[derive(Debug, Clone)]
pub struct AgentWatch {
    /// When this agent process started.
    pub up_since: Instant,
    /// When this agent process accepted each order.
    pub accepted_at: BTreeMap<TaskRef, Instant>,
    /// Chained orders seen waiting for their predecessor, and when each wait ended: a step's
    /// start is due from then (invariant 5).
    waiting: BTreeSet<TaskRef>,
    released_at: BTreeMap<TaskRef, Instant>,
    /// The policy of every order its journal has held.
    policies: BTreeMap<TaskRef, Policy>,
}

/// One agent as the oracle sees it after an input.
#[derive(Debug)]
pub struct AgentView<'a> {
    pub index: usize,
    pub id: &'a str,
    pub agent: &'a CoreAgent,
    pub procs: &'a Procs,
}

impl AgentWatch {
    /// A new agent process that replayed `journal`.
    pub fn started<'r>(now: Instant, journal: impl IntoIterator<Item = &'r [u8]>) -> Self {
        let mut watch = Self {
            up_since: now,
            accepted_at: BTreeMap::new(),
            waiting: BTreeSet::new(),
            released_at: BTreeMap::new(),
            policies: BTreeMap::new(),
        };
        for bytes in journal {
            if let Ok(JournalRecord::Order(spec)) = journal::decode(bytes) {
                watch.policies.insert(spec.task, spec.policy);
            }
        }
        watch
    }

    pub fn policy(&self, task: TaskRef) -> Option<Policy> {
        self.policies.get(&task).copied()
    }

    /// Checks and records what the executor did during one input, in order.
    pub fn observe(
        &mut self,
        view: &AgentView<'_>,
        deeds: Vec<Deed>,
        ledger: &mut Ledger,
        trace: &mut Trace,
        now: Instant,
    ) -> Result<(), Violation> {
        let model = |what: String| Violation::new(Invariant::Model, now, what);
        let id = view.id;
        let mut terminating: Option<(TaskRef, KillCause)> = None;
        for deed in deeds {
            match deed {
                Deed::Appended(bytes) => {
                    let record = journal::decode(&bytes)
                        .map_err(|e| model(format!("{id}: appended an undecodable record: {e}")))?;
                    match record {
                        JournalRecord::Order(spec) => {
                            self.accepted_at.insert(spec.task, now);
                            self.policies.insert(spec.task, spec.policy);
                        }
                        JournalRecord::Event(event) => {
                            trace.record(
                                now,
                                format_args!("{id}: journal #{} {:?}", event.seq, event.kind),
                            );
                            if let EventKind::Terminating { task, cause } = event.kind {
                                terminating = Some((task, cause));
                            }
                            self.check_continue_survives(id, &event.kind, now)?;
                        }
                        _ => {}
                    }
                }
                Deed::Rewritten(records) => {
                    for bytes in &records {
                        ledger.on_durable(view.index, bytes, now)?;
                    }
                    trace.record(
                        now,
                        format_args!("{id}: journal compacted to {} records", records.len()),
                    );
                }
                Deed::Spawned(task) => {
                    trace.record(now, format_args!("{id}: spawns {}", task.attempt));
                    ledger.on_spawn(view.index, task, now)?;
                }
                Deed::Signalled(task, signal) => {
                    let cause = terminating.filter(|(t, _)| *t == task).map(|(_, c)| c);
                    trace.record(
                        now,
                        format_args!("{id}: {signal:?} task {} ({cause:?})", task.attempt),
                    );
                    self.check_signal(view, task, signal, cause, ledger, now)?;
                }
            }
        }
        self.note_waits(view.agent, now);
        Ok(())
    }

    /// Which chained orders wait for their predecessor after this input, and which stopped
    /// waiting in it (most inputs of most agents hold none: nothing to do then).
    fn note_waits(&mut self, agent: &CoreAgent, now: Instant) {
        let held = |t: &TaskRef| agent.task_spec(*t).is_some();
        self.released_at.retain(|t, _| held(t));
        for task in std::mem::take(&mut self.waiting) {
            if agent.waiting_for(task).is_some() {
                self.waiting.insert(task);
            } else if held(&task) {
                self.released_at.insert(task, now);
            }
        }
        for (task, phase) in agent.tasks() {
            if phase == Phase::Held && agent.waiting_for(task).is_some() {
                self.waiting.insert(task);
            }
        }
    }

    /// Invariant 4, on the journal: no termination of a `continue` task for a lost master.
    fn check_continue_survives(
        &self,
        id: &str,
        kind: &EventKind,
        now: Instant,
    ) -> Result<(), Violation> {
        let lost = match kind {
            EventKind::Terminating {
                task,
                cause: KillCause::MasterLost,
            }
            | EventKind::Finished {
                task,
                cause: Some(KillCause::MasterLost),
                ..
            } => *task,
            _ => return Ok(()),
        };
        if self
            .policy(lost)
            .is_some_and(|p| p.on_disconnect == OnDisconnect::Continue)
        {
            return Err(Violation::new(
                Invariant::ContinueSurvives,
                now,
                format!(
                    "{id}: continue task {} terminated for a lost master: {kind:?}",
                    lost.attempt
                ),
            ));
        }
        Ok(())
    }

    /// Invariants 3 and 4 on a signal just sent (the process has it already).
    fn check_signal(
        &self,
        view: &AgentView<'_>,
        task: TaskRef,
        signal: Signal,
        cause: Option<KillCause>,
        ledger: &mut Ledger,
        now: Instant,
    ) -> Result<(), Violation> {
        let (id, agent) = (view.id, view.agent);
        let info = view.procs.get(task);
        ledger.on_signal(
            task,
            SignalRecord {
                agent: view.index,
                at: now,
                signal,
                cause,
                last_contact: agent.last_contact(),
                started: info.map(|p| p.started),
            },
        );
        let (Some(policy), Some(info)) = (self.policy(task), info) else {
            return Ok(());
        };
        match signal {
            Signal::Terminate if cause == Some(KillCause::MasterLost) => {
                if policy.on_disconnect == OnDisconnect::Continue {
                    return Err(Violation::new(
                        Invariant::ContinueSurvives,
                        now,
                        format!(
                            "{id}: SIGTERM to continue task {} for a lost master",
                            task.attempt
                        ),
                    ));
                }
                let since = agent.last_contact().max(info.started);
                let due = since.saturating_add(Duration::from_millis(policy.heartbeat_timeout_ms));
                if now < due {
                    return Err(Violation::new(
                        Invariant::KillOnLoss,
                        now,
                        format!(
                            "{id}: SIGTERM to task {} before its timeout: last contact {}, started {}, due {}",
                            task.attempt,
                            secs(agent.last_contact()),
                            secs(info.started),
                            secs(due)
                        ),
                    ));
                }
            }
            Signal::Kill => {
                let term = info.terminated.unwrap_or(now);
                let due = term.saturating_add(Duration::from_millis(policy.grace_ms));
                if now < due {
                    return Err(Violation::new(
                        Invariant::KillOnLoss,
                        now,
                        format!(
                            "{id}: SIGKILL to task {} before its grace: SIGTERM at {}, due {}",
                            task.attempt,
                            secs(term),
                            secs(due)
                        ),
                    ));
                }
            }
            Signal::Terminate => {}
        }
        Ok(())
    }

    /// Invariants 3 and 5: what must have happened by `now`.
    pub fn check_deadlines(
        &self,
        view: &AgentView<'_>,
        disk_max: Duration,
        now: Instant,
    ) -> Result<(), Violation> {
        let (id, agent) = (view.id, view.agent);
        for (task, info) in view.procs.alive() {
            let Some(policy) = self.policy(task) else {
                continue;
            };
            let late = |what: String| {
                Err(Violation::new(
                    Invariant::KillOnLoss,
                    now,
                    format!("{id}: task {} {what}", task.attempt),
                ))
            };
            match (info.terminated, info.killed) {
                (None, _) if policy.on_disconnect == OnDisconnect::Kill => {
                    let since = agent.last_contact().max(info.started);
                    let due =
                        since.saturating_add(Duration::from_millis(policy.heartbeat_timeout_ms));
                    if now > due.saturating_add(TICK) {
                        return late(format!(
                            "not terminated by {} (last contact {}, started {})",
                            secs(due),
                            secs(agent.last_contact()),
                            secs(info.started)
                        ));
                    }
                }
                (Some(term), None) => {
                    let due = term.saturating_add(Duration::from_millis(policy.grace_ms));
                    if now > due.saturating_add(TICK) {
                        return late(format!(
                            "still alive without SIGKILL at {} (SIGTERM at {})",
                            secs(due),
                            secs(term)
                        ));
                    }
                }
                _ => {}
            }
        }
        for (task, phase) in agent.tasks() {
            // A stopping agent starts nothing new: its held orders wait for the next start; a
            // chained order waits for its predecessor.
            let waits =
                phase == Phase::Held && (agent.is_stopping() || agent.waiting_for(task).is_some());
            if waits || !matches!(phase, Phase::Held | Phase::Starting { .. }) {
                continue;
            }
            let Some(spec) = agent.task_spec(task) else {
                continue;
            };
            let start = spec.start_at_unix_ms.map_or(Instant::MIN, |ms| {
                Instant::from_millis(ms.saturating_sub(WALL0_MS))
            });
            let accepted = self
                .accepted_at
                .get(&task)
                .copied()
                .unwrap_or(self.up_since);
            let released = self.released_at.get(&task).copied().unwrap_or(Instant::MIN);
            let due = start
                .max(accepted)
                .max(released)
                .max(self.up_since)
                .saturating_add(disk_max)
                .saturating_add(TICK);
            if now > due {
                return Err(Violation::new(
                    Invariant::StartOnTime,
                    now,
                    format!(
                        "{id}: task {} not spawned by {} (start {}, accepted {}, released {}, agent up since {}, phase {phase:?})",
                        task.attempt,
                        secs(due),
                        secs(start),
                        secs(accepted),
                        secs(released),
                        secs(self.up_since)
                    ),
                ));
            }
        }
        Ok(())
    }
}
