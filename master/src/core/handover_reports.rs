//! What agents report of the schedules handed to them: a hand-over's answer and end, missed
//! occurrences, and the occurrences they started themselves, made tasks under the ids the
//! master reserved (whichever of an occurrence's events comes first, and once only, also for
//! a hand-over the master has replaced since: a replay after an outage).

use log::{info, warn};
use tether_core::message::{EventKind, TaskRef};
use tether_core::{Duration, Instant};

use super::schedules::occurrence_task;
use super::{AttemptEntry, Change, Master};
use crate::model::{Handover, HandoverState, NewTask, OccurrenceRef, Task};

/// Replaced hand-overs remembered for their agents' late reports, at most.
const RETIRED: usize = 4_096;

impl Master {
    /// An agent event naming ids the core has no attempt for: a hand-over's answer or end, a
    /// missed-occurrence report, or an occurrence the agent started itself (its task is made
    /// now). Whether the event was one of those.
    pub(super) fn schedule_event(&mut self, now: Instant, agent: &str, kind: &EventKind) -> bool {
        let Some(task) = kind.task() else {
            return false;
        };
        if let Some(h) = self.handovers.get(&task.task) {
            if h.handover.attempt != task.attempt || h.handover.agent != agent {
                return false;
            }
            let mut h = h.handover.clone();
            match kind {
                EventKind::Accepted { .. } => h.state = HandoverState::Held,
                EventKind::Rejected { reason, .. } if h.state == HandoverState::Sent => {
                    warn!("agent {agent} refused hand-over {}: {reason}", task.task);
                    self.stats.handovers_refused += 1;
                    h.state = HandoverState::Ended;
                }
                EventKind::Finished { .. } => h.state = HandoverState::Ended,
                EventKind::Missed { count, .. } => self.stats.occurrences_missed += count,
                _ => return true,
            }
            if h.state == HandoverState::Ended {
                self.handovers.remove(&task.task);
                self.forget_adopted(&h);
            } else if let Some(entry) = self.handovers.get_mut(&task.task) {
                entry.handover = h.clone();
            }
            self.persist(Change::Handover(h));
            return true;
        }
        if let Some(attempt) = self.retired_handovers.get(&task.task).map(|h| h.attempt) {
            if attempt == task.attempt
                && let EventKind::Missed { count, .. } = kind
            {
                self.stats.occurrences_missed += count;
            }
            // A replaced hand-over's end: its occurrences have all been reported before it.
            if attempt == task.attempt && matches!(kind, EventKind::Finished { .. }) {
                if let Some(h) = self.retired_handovers.remove(&task.task) {
                    self.forget_adopted(&h);
                }
            }
            return attempt == task.attempt;
        }
        if self.adopted.contains(&task.task) {
            // Made already and settled since: a late event of it (stored) changes nothing.
            return true;
        }
        // An occurrence the agent started: its task and attempt, under the reserved ids. Any
        // of its events may come first (a replay across a gap), and a replaced hand-over's
        // occurrences still report after the master replaced it.
        let live = self.handovers.values().map(|h| &h.handover);
        let found = live.chain(self.retired_handovers.values()).find_map(|h| {
            (h.agent == agent)
                .then(|| h.occurrence_of(task.task))
                .flatten()
                .filter(|&k| h.attempt + 1 + k == task.attempt)
                .map(|k| (h.clone(), k))
        });
        let Some((handover, k)) = found else {
            return false;
        };
        let Some(s) = self.schedules.get(&handover.schedule) else {
            return false;
        };
        let Some(at_ms) = handover.occurrence_at(k) else {
            return false;
        };
        let occurrence = OccurrenceRef {
            schedule: handover.schedule,
            version: handover.version,
            at_ms,
        };
        let new = occurrence_task(&s.schedule.task, Some(occurrence));
        info!(
            "schedule {}: agent {agent} started the occurrence at {at_ms} as task {}",
            handover.schedule, task.task
        );
        self.adopt_task(now, task, agent, new);
        true
    }

    /// The agent ended hand-over `h`: its occurrences have all reported.
    fn forget_adopted(&mut self, h: &Handover) {
        let last = h.task.saturating_add(h.occurrences());
        let ids: Vec<u64> = self.adopted.range(h.task + 1..=last).copied().collect();
        for id in ids {
            self.adopted.remove(&id);
        }
    }

    /// Keeps a hand-over the master replaced, for the occurrences its agent still reports
    /// (until the agent says it ended it); the oldest go beyond [`RETIRED`].
    pub(super) fn retire(&mut self, h: Handover) {
        self.retired_handovers.insert(h.task, h);
        while self.retired_handovers.len() > RETIRED {
            if let Some((_, h)) = self.retired_handovers.pop_first() {
                self.forget_adopted(&h);
            }
        }
    }

    /// Makes the task and attempt an agent started under ids the master reserved.
    fn adopt_task(&mut self, now: Instant, ids: TaskRef, agent: &str, new: NewTask) {
        self.adopted.insert(ids.task);
        self.persist(Change::NewTask {
            id: ids.task,
            task: new.clone(),
            state: crate::model::TaskState::Pending,
        });
        self.persist(Change::NewAttempt {
            id: ids.attempt,
            task: ids.task,
            agent: agent.to_owned(),
            after: None,
        });
        let mut attempt = AttemptEntry::new(ids.attempt, agent.to_owned(), now);
        attempt.self_started = true;
        self.tasks.insert(
            ids.task,
            super::TaskEntry {
                task: Task::pending(ids.task, new),
                attempts: vec![attempt],
                kill_requested: false,
                retry_at: now,
                retry_delay: Duration::from_ticks(0),
            },
        );
    }
}
