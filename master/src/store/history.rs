//! What both backends' history retention ([`Store::prune_finished`]) shares: which states are
//! finished, and the batch's budget (tasks of no order first, then whole orders while room is
//! left; ended hand-overs and deleted schedules are bounded by the limit each).
//!
//! [`Store::prune_finished`]: crate::store::Store::prune_finished

use crate::model::{OrderState, TaskState};
use crate::store::Pruned;

/// The task states that are final, as stored.
pub(crate) fn finished_tasks() -> Vec<&'static str> {
    TaskState::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect()
}

/// The order states that are final, as stored.
pub(crate) fn finished_orders() -> Vec<&'static str> {
    OrderState::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect()
}

/// One batch's count against its limit.
pub(crate) struct Budget {
    limit: u64,
    spent: u64,
}

impl Budget {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit: u64::from(limit),
            spent: 0,
        }
    }

    /// What is left of the limit.
    pub(crate) fn room(&self) -> u64 {
        self.limit.saturating_sub(self.spent)
    }

    /// Counts tasks of no order that were deleted.
    pub(crate) fn spend(&mut self, tasks: u64) {
        self.spent += tasks;
    }

    /// Whether a whole order of `tasks` tasks is taken: while any room is left (so an order
    /// larger than the limit still goes, alone), counting at least one.
    pub(crate) fn take_order(&mut self, tasks: u64) -> bool {
        if self.room() == 0 {
            return false;
        }
        self.spent += tasks.max(1);
        true
    }

    /// Marks `pruned` full when the limit was reached, by tasks or by the hand-overs or
    /// schedules deleted (never for a limit of 0).
    pub(crate) fn close(&self, mut pruned: Pruned) -> Pruned {
        let reached = |n: u64| n >= self.limit;
        pruned.full = self.limit > 0
            && (self.room() == 0 || reached(pruned.handovers) || reached(pruned.schedules));
        pruned
    }
}
