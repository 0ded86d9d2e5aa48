//! The journal as the agent's memory: the record each append writes, the snapshot a compaction
//! writes, and the replay at start-up that rebuilds the agent from them (chained orders' waits
//! included, see `chain`; schedule hand-overs and watermarks, see `schedule`; the clock's
//! anchor, see `clock`).

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
            Append::Handover(task) => {
                let i = self
                    .schedules
                    .index(*task)
                    .ok_or(EncodeAppendError::MissingSlot(*task))?;
                JournalRecord::Handover(self.schedules.held[i].spec.clone())
            }
            Append::ClockAnchor { unix_ms } => JournalRecord::ClockAnchor { unix_ms: *unix_ms },
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
        for h in &self.schedules.held {
            emit(&JournalRecord::Handover(h.spec.clone()));
        }
        for &(schedule, at_unix_ms) in &self.schedules.marks {
            emit(&JournalRecord::Fired {
                schedule,
                at_unix_ms,
            });
        }
        if let Some(unix_ms) = self.clock.anchor {
            emit(&JournalRecord::ClockAnchor { unix_ms });
        }
    }

    /// Replays one journal record at start-up, oldest first; then call
    /// [`Agent::finish_restore`].
    pub fn restore(&mut self, record: &JournalRecord) {
        match record {
            JournalRecord::Order(spec) => {
                self.seen.remember(spec.task.attempt);
                self.replay_occurrence(spec.task);
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
                        if let Some(i) = self.schedules.index(*task) {
                            // A hand-over's end is not a step's: no chained order waits for it.
                            self.schedules.held.remove(i);
                        } else {
                            self.replay_end(*task, *exit);
                        }
                    }
                    EventKind::Missed {
                        handover,
                        first,
                        count,
                    } => self.replay_missed(*handover, *first, *count),
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
            JournalRecord::Handover(spec) => {
                self.seen.remember(spec.spec.task.attempt);
                if !self.schedules.restore(spec) {
                    self.stats.unrestored_handovers += 1;
                }
            }
            JournalRecord::Fired {
                schedule,
                at_unix_ms,
            } => self.schedules.set_mark(*schedule, *at_unix_ms),
            JournalRecord::ClockAnchor { unix_ms } => self.clock.restore_anchor(*unix_ms),
        }
    }

    /// Ends the replay: attempts that may have been running when the agent went down are
    /// reported lost (never started again; the orders chained after them are decided by that
    /// end); held orders wait for their time, unless the allowlist no longer allows their
    /// program (then they end as a spawn failure, EACCES); a chained order whose predecessor is
    /// no longer held is decided by its remembered end, or skipped if that is not known. Held
    /// hand-overs whose program the allowlist no longer allows end the same way; the others
    /// go on from their schedule's watermark, what the gap made late by their missed rule.
    /// The clock is judged again (the anchor restored) and the agent's trust reported.
    pub fn finish_restore(&mut self, now: Instant) {
        self.saw(now);
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
        let mut i = 0;
        while i < self.schedules.held.len() {
            if self.allowed(&self.schedules.held[i].spec.spec) {
                i += 1;
            } else {
                self.end_handover(now, i, Exit::SpawnFailed(EACCES), None);
            }
        }
        self.update_trust(now);
        if self.clock.trusted {
            // A restart begins a catch-up: what the gap made late is judged from now.
            self.clock.trusted_since = self.unix_ms(now).unwrap_or(0);
        }
        self.clock.report_at_start();
        self.handle_timeout(now);
    }
}
