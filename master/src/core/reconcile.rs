//! An agent heartbeat lists the attempts the agent holds. Once every event the agent sent is
//! stored (its `last_seq` is what the master acknowledged), the list is the truth: attempts the
//! master thinks accepted or running but not listed are lost, attempts killed before their
//! start arrived are cancelled, and listed attempts the master does not know (or gave up) are
//! killed.

use log::{info, warn};
use tether_core::Instant;
use tether_core::message::{AgentHeartbeat, CommandBody};

use super::registry::AgentEntry;
use super::{Change, Master, liveness};
use crate::model::{AgentPresence, AttemptId, AttemptState, Outcome, TaskState};

impl Master {
    pub(super) fn handle_heartbeat(&mut self, now: Instant, id: &str, hb: &AgentHeartbeat) {
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
        let newer = liveness::newer(entry.last_heartbeat, hb);
        if !fresh || !newer {
            // A recording, or one sent before the agent heard our latest: not a sign of life.
            self.stats.stale_heartbeats += 1;
            if newer {
                // An agent back from a freeze or a cut echoes an old heartbeat: a new one now
                // lets it prove it is alive within a round trip, not a period.
                self.heartbeat_soon(now);
            }
            return;
        }
        entry.last_heartbeat = Some((hb.incarnation, hb.counter));
        entry.proven = Some(hb.incarnation);
        entry.heard(now);
        self.answer_clock(now, id, hb.incarnation, hb.counter);
        self.heartbeat_journal(now, id, hb.journal);
        let Some(entry) = self.agents.get_mut(id) else {
            return;
        };
        let last_seq = entry.stored_seq(hb.last_seq);
        entry.journal_seq = last_seq;
        let acked = entry.acked;
        let acked_here = entry.agent_seq(acked);
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
        if last_seq < acked {
            self.stats.journal_behind += 1;
            warn!(
                "agent {id}: journal at seq {} but the master stored up to {}; \
                 was it cut short on disk?",
                hb.last_seq, acked_here
            );
            // Rewound or not, the next heartbeat reconciles.
            self.journal_behind(now, id, hb);
            return;
        }
        if let Some(entry) = self.agents.get_mut(id) {
            entry.behind_since = None;
        }
        if last_seq > acked {
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
}
