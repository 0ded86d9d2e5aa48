//! Chained orders (workflow steps, [`CommandBody::StartAfter`]): a step waits in its slot, held,
//! until its predecessor on this agent ends; that end decides it by the step's
//! [`After::run_if`]: the wait ends (the step starts now, or at its start time), or the step
//! ends as [`Exit::Skipped`], which no `run_if` allows, so the rest of the chain is skipped in
//! the same input. An agent carries a whole chain while the master is unreachable.
//!
//! The ends of the most recent attempts are remembered ([`RECENT_ENDS`]), so a step that arrives
//! after its predecessor ended is decided at once; a step whose predecessor the agent neither
//! holds nor remembers is refused ([`RejectReason::PredecessorUnknown`]): the master decides it
//! from the result it has.
//!
//! A wait survives restarts: its `After` record follows the order's, and the predecessor's
//! `Finished` event, replayed, ends it again.
//!
//! [`CommandBody::StartAfter`]: crate::message::CommandBody::StartAfter

use embassy_time::Instant;
use heapless::{Deque, Vec};

use super::Agent;
use crate::message::{After, EventKind, Exit, RejectReason, TaskRef, TaskSpec};

/// Ends of attempts remembered for the chained orders that arrive after their predecessor
/// ended: as many as the most attempts an agent holds at once (`TASKS` is at most 32), so a
/// master that sends a step as soon as it hears of the previous one's end is always answered.
pub const RECENT_ENDS: usize = 32;

/// How the most recent attempts ended, oldest first: the newest [`RECENT_ENDS`] are kept,
/// from the agent's own finishes and from the `Finished` events a restart replays.
#[derive(Debug)]
pub(super) struct RecentEnds {
    ends: Deque<(TaskRef, Exit), RECENT_ENDS>,
}

impl RecentEnds {
    pub(super) fn new() -> Self {
        Self { ends: Deque::new() }
    }

    pub(super) fn remember(&mut self, task: TaskRef, exit: Exit) {
        if self.ends.is_full() {
            self.ends.pop_front();
        }
        // Room was made above.
        let _ = self.ends.push_back((task, exit));
    }

    pub(super) fn exit_of(&self, task: TaskRef) -> Option<Exit> {
        self.ends
            .iter()
            .rev()
            .find(|(t, _)| *t == task)
            .map(|&(_, exit)| exit)
    }
}

/// What this agent knows of a chained order's predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Predecessor {
    /// Held or running here: the order waits for its end.
    Held,
    Ended(Exit),
    Unknown,
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// A chained start: checked and answered as a start; accepted, it waits for a predecessor
    /// held here, or is decided at once by a predecessor's remembered end.
    pub(super) fn handle_start_after(&mut self, now: Instant, spec: TaskSpec, after: After) {
        let predecessor = self.predecessor(after.task);
        let unknown =
            (predecessor == Predecessor::Unknown).then_some(RejectReason::PredecessorUnknown);
        if !self.admissible(now, &spec, unknown, true) {
            return;
        }
        match predecessor {
            Predecessor::Held => {
                self.accept(now, spec, Some(after));
            }
            Predecessor::Ended(exit) if after.run_if.allows(exit) => {
                let i = self.accept(now, spec, None);
                self.start_if_due(now, i);
            }
            _ => self.skip_at_once(now, spec.task),
        }
    }

    /// The attempt `task` ended with `exit`: every order waiting for it is decided, and every
    /// order skipped for it decides its own dependents, in this same input. Each slot ends at
    /// most once, so a cascade over every slot appends one record per slot.
    pub(super) fn release_dependents(&mut self, now: Instant, task: TaskRef, exit: Exit) {
        let mut ended: Vec<(TaskRef, Exit), TASKS> = Vec::new();
        let mut next = Some((task, exit));
        while let Some((task, exit)) = next {
            let mut i = 0;
            while i < self.slots.len() {
                match self.slots[i].after {
                    Some(after) if after.task == task => {
                        if after.run_if.allows(exit) {
                            self.slots[i].after = None;
                            self.start_if_due(now, i);
                            i += 1;
                        } else {
                            let skipped = self.end(now, i, Exit::Skipped);
                            // At most one entry per slot there was: never full.
                            let _ = ended.push((skipped, Exit::Skipped));
                        }
                    }
                    _ => i += 1,
                }
            }
            next = ended.pop();
        }
    }

    /// Replay of a `Finished` event: the orders waiting for `task` whose `run_if` its end
    /// allows no longer wait (they were released before the restart). The others keep their
    /// wait, so [`Agent::finish_restore`] skips them if their own end was not journaled.
    pub(super) fn replay_end(&mut self, task: TaskRef, exit: Exit) {
        self.ends.remember(task, exit);
        for slot in &mut self.slots {
            if slot
                .after
                .is_some_and(|a| a.task == task && a.run_if.allows(exit))
            {
                slot.after = None;
            }
        }
    }

    /// At the end of a restore, a restored order still waiting for a predecessor that is no
    /// longer held is decided by its remembered end, or skipped when that end is not known
    /// (it may have been compacted away, or the predecessor's order was not restored). Returns
    /// whether slot `i` ended.
    pub(super) fn settle_restored_wait(&mut self, now: Instant, i: usize) -> bool {
        let Some(after) = self.slots[i].after else {
            return false;
        };
        match self.predecessor(after.task) {
            Predecessor::Held => false,
            Predecessor::Ended(exit) if after.run_if.allows(exit) => {
                self.slots[i].after = None;
                false
            }
            Predecessor::Ended(_) | Predecessor::Unknown => {
                self.finish(now, i, Exit::Skipped);
                true
            }
        }
    }

    /// A chained order whose predecessor's remembered end does not let it run: accepted and
    /// skipped, without a slot or an `Order` record (its `Accepted` event keeps it seen).
    fn skip_at_once(&mut self, now: Instant, task: TaskRef) {
        self.seen.remember(task.attempt);
        self.push_event(now, EventKind::Accepted { task });
        self.push_event(
            now,
            EventKind::Finished {
                task,
                exit: Exit::Skipped,
                cause: None,
                output_dropped: 0,
            },
        );
        self.ends.remember(task, Exit::Skipped);
    }

    fn predecessor(&self, task: TaskRef) -> Predecessor {
        if self.slot(task).is_some() {
            Predecessor::Held
        } else {
            self.ends
                .exit_of(task)
                .map_or(Predecessor::Unknown, Predecessor::Ended)
        }
    }
}
