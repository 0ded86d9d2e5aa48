//! Task slots: an order accepted (or refused), held until its start time (a chained order
//! also until its predecessor ends, see `chain`), spawned once its `Spawning` record is
//! durable, run, terminated and finished, each step a [`Phase`]; and the attempt ids
//! remembered so that none starts twice.

use embassy_time::Instant;
use heapless::{Deque, Vec};

use super::{Action, Agent, Append, Phase, Signal};
use crate::journal::JournalLevel;
use crate::message::{
    After, EventKind, Exit, KillCause, OUTPUT_CHUNK, RejectReason, Stream, TaskRef, TaskSpec,
};
use crate::millis;

#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) spec: TaskSpec,
    pub(super) phase: Phase,
    /// A chained order still waiting for its predecessor to end (held meanwhile, whatever its
    /// start time).
    pub(super) after: Option<After>,
    /// Set once termination began: the cause, and when SIGKILL is due (None once sent).
    pub(super) kill: Option<(KillCause, Option<Instant>)>,
    /// A termination asked for before the process was confirmed.
    pub(super) kill_pending: Option<KillCause>,
    pub(super) reported: u64,
    pub(super) dropped: u64,
    pub(super) offsets: [u64; 2],
}

impl Slot {
    pub(super) fn new(spec: TaskSpec, phase: Phase) -> Self {
        Self {
            spec,
            phase,
            after: None,
            kill: None,
            kill_pending: None,
            reported: 0,
            dropped: 0,
            offsets: [0; 2],
        }
    }
}

/// The attempt ids remembered for exactly-once start: the newest `SEEN`, and the highest one
/// pushed out, at or below which a start is refused as stale (it may have run).
#[derive(Debug)]
pub(super) struct Seen<const SEEN: usize> {
    pub(super) ids: Deque<u64, SEEN>,
    pub(super) forgotten_below: u64,
}

impl<const SEEN: usize> Seen<SEEN> {
    pub(super) fn new() -> Self {
        Self {
            ids: Deque::new(),
            forgotten_below: 0,
        }
    }

    pub(super) fn contains(&self, attempt: u64) -> bool {
        self.ids.iter().any(|&a| a == attempt)
    }

    pub(super) fn remember(&mut self, attempt: u64) {
        if self.contains(attempt) {
            return;
        }
        if self.ids.is_full()
            && let Some(old) = self.ids.pop_front()
        {
            self.forgotten_below = self.forgotten_below.max(old);
        }
        let _ = self.ids.push_back(attempt);
    }
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// The process of an attempt is running.
    pub fn handle_process_started(&mut self, now: Instant, task: TaskRef, pid: u32) {
        let Some(i) = self.slot(task) else { return };
        if self.slots[i].phase != Phase::Spawned {
            return;
        }
        self.slots[i].phase = Phase::Running { pid, started: now };
        self.push_event(now, EventKind::Started { task, pid });
        let late_stop = self.stopping.is_some_and(|d| now >= d);
        let cause = self.slots[i].kill_pending.take();
        if let Some(cause) = cause.or(late_stop.then_some(KillCause::AgentStopping)) {
            self.terminate(now, i, cause);
        }
        self.maybe_stop(now);
    }

    /// The process could not be started (errno).
    pub fn handle_spawn_failed(&mut self, now: Instant, task: TaskRef, errno: i32) {
        if let Some(i) = self.slot(task) {
            self.finish(now, i, Exit::SpawnFailed(errno));
        }
    }

    /// Output of a running attempt. Takes at most [`OUTPUT_CHUNK`] bytes and returns how many it
    /// took: call again with the rest (draining actions in between).
    pub fn handle_output(
        &mut self,
        now: Instant,
        task: TaskRef,
        stream: Stream,
        data: &[u8],
    ) -> usize {
        let take = data.len().min(OUTPUT_CHUNK);
        let Some(i) = self.slot(task) else {
            return data.len();
        };
        let level = self.log.journal_level;
        let slot = &mut self.slots[i];
        let s = usize::from(stream == Stream::Stderr);
        let offset = slot.offsets[s];
        slot.offsets[s] += take as u64;
        let room = slot.spec.policy.output_cap.saturating_sub(slot.reported);
        let keep = if level >= JournalLevel::DropOutput {
            0
        } else {
            (take as u64).min(room) as usize
        };
        slot.dropped += (take - keep) as u64;
        slot.reported += keep as u64;
        if keep > 0 {
            let mut chunk = Vec::new();
            // keep <= OUTPUT_CHUNK, the chunk's capacity.
            let _ = chunk.extend_from_slice(&data[..keep]);
            self.push_event(
                now,
                EventKind::Output {
                    task,
                    stream,
                    offset,
                    data: chunk,
                },
            );
        }
        take
    }

    /// The attempt's process exited (after its output was delivered).
    pub fn handle_process_exited(&mut self, now: Instant, task: TaskRef, exit: Exit) {
        if let Some(i) = self.slot(task) {
            self.finish(now, i, exit);
        }
    }

    /// A start command: accepted into a slot (started now or at its start time), or refused.
    pub(super) fn handle_start(&mut self, now: Instant, spec: TaskSpec) {
        if self.admissible(now, &spec, None, true) {
            let i = self.accept(now, spec, None);
            self.start_if_due(now, i);
        }
    }

    /// The checks and answers every start gets before it is accepted: a retransmission is not
    /// answered twice, and a refusal (`refusal` when no general one applies) is journaled and
    /// its attempt remembered. An order that takes a task slot (`takes_slot`; a schedule
    /// hand-over does not) needs one free. Whether the order may be accepted.
    pub(super) fn admissible(
        &mut self,
        now: Instant,
        spec: &TaskSpec,
        refusal: Option<RejectReason>,
        takes_slot: bool,
    ) -> bool {
        let task = spec.task;
        if self.seen.contains(task.attempt) {
            // A retransmission: the first answer is journaled and is resent until acknowledged.
            self.stats.duplicate_starts += 1;
            return false;
        }
        let refusal = if task.attempt <= self.seen.forgotten_below {
            Some(RejectReason::Stale)
        } else if let Err(reason) = spec.validate() {
            Some(reason)
        } else if !self.allowed(spec) {
            Some(RejectReason::NotAllowed)
        } else if self.stopping.is_some() {
            Some(RejectReason::Draining)
        } else if self.log.journal_level == JournalLevel::Full {
            Some(RejectReason::JournalFull)
        } else if takes_slot && self.slots.len() >= self.max_tasks {
            Some(RejectReason::Full)
        } else {
            refusal
        };
        let Some(reason) = refusal else {
            return true;
        };
        if !self.log.rejection_fits {
            // No room left to answer without taking a result's: not answered and not
            // remembered, so the master's next retransmission is judged again.
            self.stats.unanswered_starts += 1;
            return false;
        }
        self.stats.rejected_starts += 1;
        if reason != RejectReason::Stale {
            self.seen.remember(task.attempt);
        }
        self.push_event(now, EventKind::Rejected { task, reason });
        false
    }

    /// An admissible order accepted into a held slot (waiting for `wait`'s predecessor, if
    /// given), journaled and remembered for exactly-once start. Returns the slot.
    pub(super) fn accept(&mut self, now: Instant, spec: TaskSpec, wait: Option<After>) -> usize {
        let task = spec.task;
        self.seen.remember(task.attempt);
        let mut slot = Slot::new(spec, Phase::Held);
        slot.after = wait;
        // Admissible: there is room.
        let _ = self.slots.push(slot);
        self.append(Append::Order(task));
        if let Some(after) = wait {
            self.append(Append::After { task, after });
        }
        self.push_event(now, EventKind::Accepted { task });
        self.rearm_heartbeat(now);
        self.slots.len() - 1
    }

    /// A held order that waits for nothing starts now if its start time has come (by a
    /// trusted clock); otherwise its start-time deadline starts it. A drain begins no new work:
    /// it stays held.
    pub(super) fn start_if_due(&mut self, now: Instant, i: usize) {
        let slot = &self.slots[i];
        if slot.phase == Phase::Held
            && slot.after.is_none()
            && self.stopping.is_none()
            && self.start_instant(&slot.spec).is_some_and(|at| at <= now)
        {
            self.begin_start(i);
        }
    }

    /// A kill command: what never ran ends at once (a waiting chained order too; the orders
    /// chained after it are then skipped), a process not confirmed yet is terminated once it
    /// is, a running one now; a schedule hand-over is withdrawn.
    pub(super) fn handle_kill(&mut self, now: Instant, task: TaskRef) {
        let Some(i) = self.slot(task) else {
            self.withdraw_handover(now, task);
            return;
        };
        match self.slots[i].phase {
            Phase::Held | Phase::Starting { .. } | Phase::Orphaned => {
                self.slots[i].kill = Some((KillCause::Requested, None));
                self.finish(now, i, Exit::Cancelled);
            }
            Phase::Spawned => self.slots[i].kill_pending = Some(KillCause::Requested),
            Phase::Running { .. } => self.terminate(now, i, KillCause::Requested),
        }
    }

    pub(super) fn begin_start(&mut self, i: usize) {
        let lsn = self.append(Append::Spawning(self.slots[i].spec.task));
        self.slots[i].phase = Phase::Starting { lsn };
    }

    /// Attempts whose `Spawning` record is durable now are spawned: at most once, since the
    /// record outlives a crash and a restored one is never spawned again.
    pub(super) fn spawn_durable(&mut self) {
        for i in 0..self.slots.len() {
            if let Phase::Starting { lsn } = self.slots[i].phase
                && lsn <= self.log.durable_lsn
            {
                self.slots[i].phase = Phase::Spawned;
                self.push(Action::Spawn(self.slots[i].spec.task));
            }
        }
    }

    pub(super) fn terminate(&mut self, now: Instant, i: usize, cause: KillCause) {
        if self.slots[i].kill.is_some() {
            return;
        }
        let task = self.slots[i].spec.task;
        let grace = millis::duration(self.slots[i].spec.policy.grace_ms);
        self.slots[i].kill = Some((cause, Some(now.saturating_add(grace))));
        self.push_event(now, EventKind::Terminating { task, cause });
        self.push(Action::Signal {
            task,
            signal: Signal::Terminate,
        });
    }

    /// The grace time after SIGTERM is over.
    pub(super) fn sigkill(&mut self, i: usize) {
        let Some((cause, Some(_))) = self.slots[i].kill else {
            return;
        };
        self.slots[i].kill = Some((cause, None));
        self.push(Action::Signal {
            task: self.slots[i].spec.task,
            signal: Signal::Kill,
        });
    }

    /// The attempt in slot `i` ended: reported, remembered, and the chained orders waiting for
    /// it decided.
    pub(super) fn finish(&mut self, now: Instant, i: usize, exit: Exit) {
        let task = self.end(now, i, exit);
        self.release_dependents(now, task, exit);
        self.maybe_stop(now);
    }

    /// Frees slot `i` with its `Finished` event, and remembers how it ended.
    pub(super) fn end(&mut self, now: Instant, i: usize, exit: Exit) -> TaskRef {
        let slot = self.slots.remove(i);
        let cause = slot.kill.map(|(c, _)| c);
        let task = slot.spec.task;
        self.push_event(
            now,
            EventKind::Finished {
                task,
                exit,
                cause,
                output_dropped: slot.dropped,
            },
        );
        self.ends.remember(task, exit);
        task
    }

    pub(super) fn allowed(&self, spec: &TaskSpec) -> bool {
        let Some(list) = &self.allowlist else {
            return true;
        };
        matches!(spec.argv.iter().next(), Some(Ok(program)) if list.allows(program))
    }

    pub(super) fn slot(&self, task: TaskRef) -> Option<usize> {
        self.slots.iter().position(|s| s.spec.task == task)
    }
}
