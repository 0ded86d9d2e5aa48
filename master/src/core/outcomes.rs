//! What happened to attempts, and what it means for their task. Events become attempt
//! updates (accepted, started, output, finished, rejected); the task's state is derived from
//! its current attempt; and the outcome rule: the first attempt to finish decides, a failure
//! defers to another attempt still open, a failed attempt is retried while the task's retry
//! budget lasts, late results are recorded on their own attempt only.

use log::{info, warn};
use tether_core::Instant;
use tether_core::message::{EventKind, Exit, KillCause, RejectReason, Report, TaskRef};

use super::deadlines::due;
use super::journals::Named;
use super::registry::Seq;
use super::{Change, Master};
use crate::model::{AttemptId, AttemptState, AttemptUpdate, Outcome, TaskId, TaskState};

impl Master {
    /// An agent event: stored once by (agent, seq), then applied to its attempt. Its sequence
    /// is renumbered into the master's sequence for the agent ([`super::journals`]).
    pub(super) fn handle_event(&mut self, now: Instant, id: &str, report: Report) {
        if self.event_journal(now, id, report.journal) == Named::Other {
            return;
        }
        let Some(entry) = self.agents.get_mut(id) else {
            return;
        };
        let mut event = report.event;
        event.seq = entry.stored_seq(event.seq);
        if let Err(e) = crate::limits::storable("seq", event.seq) {
            self.stats.bad_messages += 1;
            warn!("agent {id}: event dropped: {}", e.reason);
            return;
        }
        let Some(entry) = self.agents.get_mut(id) else {
            return;
        };
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
            if let EventKind::Clock { trusted } = event.kind {
                self.clock_reported(id, trusted);
            }
            if let EventKind::BadCommand { error, count } = event.kind {
                self.stats.bad_commands_reported += count;
                warn!("agent {id} dropped {count} command(s), the last: {error}");
            }
            return;
        };
        if self.attempt_state(task, id).is_none() && self.schedule_event(now, id, &event.kind) {
            // A hand-over's answer or end, a missed report: done. An occurrence the agent
            // started: its attempt exists now, and the event applies to it below.
            if self.attempt_state(task, id).is_none() {
                return;
            }
        }
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
                exit: Exit::Skipped,
                ..
            } if state != AttemptState::Finished => self.skipped(now, task, at),
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

    /// A chained step its agent did not start, because the step before did not end as the
    /// chain required: not a failure of this step. It waits for its turn again
    /// ([`super::orders`] decides whether it runs).
    fn skipped(&mut self, now: Instant, task: TaskRef, at: Option<u64>) {
        self.update_attempt(
            task,
            AttemptUpdate {
                exit: Some(Exit::Skipped),
                finished_ms: at,
                ..AttemptUpdate::to(AttemptState::Finished)
            },
        );
        let Some(t) = self.tasks.get_mut(&task.task) else {
            return;
        };
        info!(
            "task {}: attempt {} skipped by its agent (the step before did not succeed)",
            task.task, task.attempt
        );
        if !(t.kill_requested && !t.has_open() && !t.task.state.is_terminal()) {
            t.retry_at = now;
            return;
        }
        // Never ran: its order ended before it, or an operator killed it.
        let ended = t
            .task
            .order
            .filter(|link| !self.orders.contains_key(&link.order));
        match ended {
            Some(link) => {
                let outcome = Outcome::OrderEnded { order: link.order };
                self.decide(now, task.task, TaskState::Cancelled, outcome);
            }
            None => self.decide(now, task.task, TaskState::Killed, Outcome::Cancelled),
        }
    }

    fn rejected(&mut self, now: Instant, task: TaskRef, reason: RejectReason) {
        let transient = matches!(
            reason,
            RejectReason::Full
                | RejectReason::JournalFull
                | RejectReason::Draining
                | RejectReason::PredecessorUnknown
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
            // holds attempts now) gates placement (`placement.rs`), so the task goes out as soon
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
        } else if t.kill_requested
            && (cause == Some(KillCause::Requested) || exit == Exit::Cancelled)
        {
            // Killed because someone asked; the master's kill of an attempt it had given up
            // (a stray a returning agent still ran) says nothing of the task.
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
    pub(super) fn after_failure(
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
            t.retry_at = now.saturating_add(t.retry_delay);
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
    pub(super) fn decide(&mut self, now: Instant, id: TaskId, state: TaskState, outcome: Outcome) {
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

    /// Attempts past their loss deadline are lost; `continue` attempts past `lost_after` are
    /// superseded, so that their task is dispatched again.
    pub(super) fn attempt_deadlines(&mut self, now: Instant) {
        let silence = self.silence();
        let mut lost = Vec::new();
        let mut reschedule = Vec::new();
        for t in self.tasks.values() {
            for a in t.attempts.iter().filter(|a| a.is_open()) {
                if due(self.attempt_lost_at(t, a), now) {
                    lost.push((t.task.id, a.id));
                } else if due(self.reschedule_at(t, a, silence), now) {
                    reschedule.push((t.task.id, a.id));
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
                if let Some(a) = t.attempt_mut(attempt) {
                    a.superseded = true;
                }
                t.retry_at = now;
            }
        }
    }

    /// Each unfinished task's state from its current attempt and that attempt's agent.
    pub(super) fn derive_task_states(&mut self) {
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

    /// How many attempts on `agent` are in a state `f` accepts.
    fn open_on(&self, agent: &str, f: impl Fn(AttemptState) -> bool) -> usize {
        self.tasks
            .values()
            .flat_map(|t| &t.attempts)
            .filter(|a| a.agent == agent && f(a.state))
            .count()
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

    pub(super) fn close_attempt(&mut self, task: TaskId, attempt: AttemptId, state: AttemptState) {
        if let Some(a) = self
            .tasks
            .get_mut(&task)
            .and_then(|t| t.attempts.iter_mut().find(|a| a.id == attempt))
        {
            a.failed = state == AttemptState::Lost;
        }
        self.update_attempt(TaskRef { task, attempt }, AttemptUpdate::to(state));
    }
}
