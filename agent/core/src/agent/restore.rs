//! The journal as the agent's memory: the record each append writes, the snapshot a compaction
//! writes, and the replay at start-up that rebuilds the agent from them (chained orders' waits
//! included, see `chain`).

use embassy_time::Instant;

use super::slots::Slot;
use super::{Agent, Append, EncodeAppendError, Phase};
use crate::auth::ReplayGuard;
use crate::journal::JournalRecord;
use crate::message::{EventKind, Exit};

/// Linux EACCES: a held order whose program the allowlist no longer allows ends as a spawn
/// failure with it (the protocol's spawn failures carry Linux errno values).
const EACCES: i32 = 13;

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// Encodes a journal append as its on-disk record.
    pub fn encode_append<'b>(
        &self,
        append: &Append,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], EncodeAppendError> {
        let record = match append {
            Append::Order(task) => {
                let i = self
                    .slot(*task)
                    .ok_or(EncodeAppendError::MissingSlot(*task))?;
                JournalRecord::Order(self.slots[i].spec.clone())
            }
            Append::After { task, after } => JournalRecord::After {
                task: *task,
                after: *after,
            },
            Append::Spawning(task) => JournalRecord::Spawning(*task),
            Append::Event(event) => JournalRecord::Event(event.clone()),
            Append::MasterCounter { epoch, counter } => JournalRecord::MasterCounter {
                epoch: *epoch,
                counter: *counter,
            },
            Append::Identity { journal } => JournalRecord::Identity { journal: *journal },
        };
        crate::journal::encode(&record, buf).map_err(EncodeAppendError::Record)
    }

    /// The records that rebuild this agent's state, for compaction: write these, then every
    /// journaled event with a sequence above [`Agent::acked_seq`], in order.
    pub fn snapshot(&self, mut emit: impl FnMut(&JournalRecord)) {
        emit(&JournalRecord::Identity {
            journal: self.journal,
        });
        emit(&JournalRecord::Acked {
            up_to: self.log.acked_seq,
        });
        if self.seen.forgotten_below > 0 {
            emit(&JournalRecord::Forgotten {
                below: self.seen.forgotten_below,
            });
        }
        for &attempt in &self.seen.ids {
            emit(&JournalRecord::Seen { attempt });
        }
        let (epoch, counter) = self.replay.high_water();
        if (epoch, counter) != (0, 0) {
            emit(&JournalRecord::MasterCounter { epoch, counter });
        }
        for slot in &self.slots {
            emit(&JournalRecord::Order(slot.spec.clone()));
            if let Some(after) = slot.after {
                emit(&JournalRecord::After {
                    task: slot.spec.task,
                    after,
                });
            }
            if slot.phase != Phase::Held {
                emit(&JournalRecord::Spawning(slot.spec.task));
            }
        }
    }

    /// Replays one journal record at start-up, oldest first; then call
    /// [`Agent::finish_restore`].
    pub fn restore(&mut self, record: &JournalRecord) {
        match record {
            JournalRecord::Order(spec) => {
                self.seen.remember(spec.task.attempt);
                if self.slot(spec.task).is_none() {
                    let slot = Slot::new(spec.clone(), Phase::Held);
                    if self.slots.push(slot).is_err() {
                        self.stats.unrestored_orders += 1;
                    }
                }
            }
            JournalRecord::After { task, after } => {
                if let Some(i) = self.slot(*task) {
                    self.slots[i].after = Some(*after);
                }
            }
            JournalRecord::Spawning(task) => {
                if let Some(i) = self.slot(*task) {
                    // Past any wait: it was started.
                    self.slots[i].after = None;
                    self.slots[i].phase = Phase::Orphaned;
                }
            }
            JournalRecord::Event(event) => {
                self.log.next_seq = self.log.next_seq.max(event.seq + 1);
                match &event.kind {
                    EventKind::Accepted { task } | EventKind::Rejected { task, .. } => {
                        self.seen.remember(task.attempt);
                    }
                    EventKind::Finished { task, exit, .. } => {
                        if let Some(i) = self.slot(*task) {
                            self.slots.remove(i);
                        }
                        self.replay_end(*task, *exit);
                    }
                    _ => {}
                }
            }
            JournalRecord::Acked { up_to } => {
                self.log.acked_seq = self.log.acked_seq.max(*up_to);
                self.log.next_seq = self.log.next_seq.max(up_to + 1);
            }
            JournalRecord::Seen { attempt } => self.seen.remember(*attempt),
            JournalRecord::Forgotten { below } => {
                self.seen.forgotten_below = self.seen.forgotten_below.max(*below);
            }
            JournalRecord::MasterCounter { epoch, counter } => {
                if (*epoch, *counter) > self.replay.high_water() {
                    self.replay = ReplayGuard::restored(*epoch, *counter);
                }
            }
            JournalRecord::Identity { journal } => {
                if !self.journal_named && *journal != 0 {
                    self.journal = *journal;
                    self.journal_named = true;
                }
            }
        }
    }

    /// Ends the replay: attempts that may have been running when the agent went down are
    /// reported lost (never started again; the orders chained after them are decided by that
    /// end); held orders wait for their time, unless the allowlist no longer allows their
    /// program (then they end as a spawn failure, EACCES); a chained order whose predecessor is
    /// no longer held is decided by its remembered end, or skipped if that is not known.
    pub fn finish_restore(&mut self, now: Instant) {
        if !core::mem::replace(&mut self.journal_named, true) {
            // A new journal (or one from before identities): named before anything else lands.
            let journal = self.journal;
            self.append(Append::Identity { journal });
        }
        self.log.durable_seq = self.log.next_seq - 1;
        self.log.sent_seq = self.log.acked_seq;
        self.log.last_event = (0, self.log.durable_seq);
        self.contact.last_contact = now;
        let mut i = 0;
        while i < self.slots.len() {
            let ended = if self.slots[i].phase == Phase::Orphaned {
                self.finish(now, i, Exit::Lost);
                true
            } else if !self.allowed(&self.slots[i].spec) {
                // Accepted under an earlier allowlist: it must not start under this one.
                self.finish(now, i, Exit::SpawnFailed(EACCES));
                true
            } else {
                self.settle_restored_wait(now, i)
            };
            // An end decides the orders chained after it, wherever they are: scan them again.
            i = if ended { 0 } else { i + 1 };
        }
        self.handle_timeout(now);
    }
}
