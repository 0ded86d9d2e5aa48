//! Which journal an agent's events are numbered in.
//!
//! An agent names its journal (a random identity made with the journal, kept by compaction) in
//! every event and heartbeat. The master numbers each agent's events in one sequence across its
//! journals: sequence `s` of the current journal is stored as `seq_base + s`, so the store's
//! (agent, seq) stays unique and acknowledgements stay cumulative.
//!
//! Another journal than the known one (a re-flashed board, a new SD card, a restored backup)
//! replaces it as soon as a fresh heartbeat names it: its numbering starts above everything
//! stored, and the attempts open on that agent end as lost with `JournalReplaced`, since their
//! processes ended with the agent that ran them and the new journal knows nothing of them.
//! Events naming a journal that is neither known nor proven by a fresh heartbeat are dropped
//! unacknowledged (the agent sends them again): an old recording cannot replace a journal.
//!
//! A journal with the known identity whose heartbeats stay behind what the master stored was
//! rewound (an older backup of the same card restored, a disk that lost acknowledged writes):
//! it is renumbered the same way, its sequences up to the heartbeat's being copies of stored
//! events.

use log::warn;
use tether_core::Instant;
use tether_core::message::AgentHeartbeat;

use super::registry::AgentEntry;
use super::{Change, Master};
use crate::model::{AttemptState, Outcome, TaskState};

/// What a journal named in an event means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Named {
    /// The current journal (or the first one heard): its events count.
    Current,
    /// Not the current journal, and no fresh heartbeat has said it is: ignore the event.
    Other,
}

impl AgentEntry {
    /// The master's number for sequence `seq` of the current journal.
    pub(super) fn stored_seq(&self, seq: u64) -> u64 {
        self.seq_base.saturating_add(seq)
    }

    /// The current journal's number for the master's `stored` (0 below its first event).
    pub(super) fn agent_seq(&self, stored: u64) -> u64 {
        stored.saturating_sub(self.seq_base)
    }
}

impl Master {
    /// The journal an authentic event of `id` was numbered in.
    pub(super) fn event_journal(&mut self, now: Instant, id: &str, journal: u32) -> Named {
        let entry = self
            .agents
            .entry(id.to_owned())
            .or_insert_with(|| AgentEntry::new(now));
        match entry.journal {
            Some(known) if known == journal => Named::Current,
            None => {
                self.adopt_journal(id, journal);
                Named::Current
            }
            Some(_) => {
                self.stats.other_journal_events += 1;
                if self.stats.other_journal_events.is_power_of_two() {
                    warn!(
                        "agent {id}: event of journal {journal:08x}, not its current one; \
                         waiting for a heartbeat to name it ({} so far)",
                        self.stats.other_journal_events
                    );
                }
                Named::Other
            }
        }
    }

    /// The journal a fresh heartbeat of `id` names: adopted, kept, or replacing the known one.
    pub(super) fn heartbeat_journal(&mut self, now: Instant, id: &str, journal: u32) {
        let Some(entry) = self.agents.get(id) else {
            return;
        };
        match entry.journal {
            Some(known) if known == journal => {}
            None => self.adopt_journal(id, journal),
            Some(known) => self.replace_journal(now, id, known, journal),
        }
    }

    /// The first journal heard of an agent (new, or known from before journals had names):
    /// its numbering continues the master's.
    fn adopt_journal(&mut self, id: &str, journal: u32) {
        let Some(entry) = self.agents.get_mut(id) else {
            return;
        };
        entry.journal = Some(journal);
        let seq_base = entry.seq_base;
        self.persist(Change::AgentJournal {
            agent: id.to_owned(),
            journal,
            seq_base,
        });
    }

    /// A fresh heartbeat of `id`'s current journal says it is at `last_seq`, behind what the
    /// master stored of it. Once a heartbeat answering a later master heartbeat says so too
    /// (so it cannot be one overtaken by the agent's own events), the journal was rewound: a
    /// restored backup or a disk that lost what it had acknowledged.
    pub(super) fn journal_behind(&mut self, now: Instant, id: &str, hb: &AgentHeartbeat) {
        let counter = self.counter;
        let Some(entry) = self.agents.get_mut(id) else {
            return;
        };
        let answered = hb.echo.map(|e| e.counter);
        match entry.behind_since {
            Some(since) if answered > Some(since) => {}
            Some(_) => return,
            None => {
                entry.behind_since = Some(counter);
                self.heartbeat_soon(now);
                return;
            }
        }
        self.renumber(
            now,
            id,
            hb.journal,
            hb.last_seq,
            "was rewound (a restored backup?)",
        );
    }

    fn replace_journal(&mut self, now: Instant, id: &str, old: u32, journal: u32) {
        self.renumber(
            now,
            id,
            journal,
            0,
            &format!("replaces {old:08x} (state wiped, re-flashed or restored)"),
        );
    }

    /// Numbers `journal`'s events after its `carried` above everything stored and ends the
    /// attempts open on `id`: their processes ended with the agent that ran them.
    fn renumber(&mut self, now: Instant, id: &str, journal: u32, carried: u64, what: &str) {
        let Some(entry) = self.agents.get_mut(id) else {
            return;
        };
        let seq_base = entry.start_journal(journal, carried);
        self.stats.journals_replaced += 1;
        warn!(
            "agent {id}: journal {journal:08x} {what}; its attempts open here are lost, its \
             events after {carried} are numbered after {}",
            seq_base + carried
        );
        self.persist(Change::AgentJournal {
            agent: id.to_owned(),
            journal,
            seq_base,
        });
        let mut lost = Vec::new();
        let mut cancelled = Vec::new();
        for t in self.tasks.values() {
            for a in t.attempts.iter().filter(|a| a.agent == id && a.is_open()) {
                if a.state == AttemptState::Sent && a.kill_wanted {
                    cancelled.push((t.task.id, a.id));
                } else {
                    lost.push((t.task.id, a.id));
                }
            }
        }
        for (task, attempt) in cancelled {
            self.close_attempt(task, attempt, AttemptState::Cancelled);
            self.after_failure(now, task, TaskState::Killed, Outcome::Cancelled);
        }
        for (task, attempt) in lost {
            warn!("agent {id}: attempt {attempt} of task {task} lost with the replaced journal");
            self.close_attempt(task, attempt, AttemptState::Lost);
            self.after_failure(
                now,
                task,
                TaskState::Lost,
                Outcome::JournalReplaced { attempt },
            );
        }
    }
}
