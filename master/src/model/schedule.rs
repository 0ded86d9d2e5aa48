//! Schedules: a task started on a calendar. A schedule on one agent is handed to that agent
//! ahead of time as evenly spaced runs of occurrences (a [`Handover`]), which it starts on its
//! own, master or no master; on a cluster the master starts each occurrence itself. Every
//! occurrence is a task of its own, linked by [`OccurrenceRef`]: at most one task per
//! schedule and occurrence time.

use serde::{Deserialize, Serialize};

use super::{Target, TaskId, TaskPolicy};
use crate::calendar::{CalendarSpec, Run};

pub type ScheduleId = u64;

text_enum! {
    /// What becomes of occurrences not started on time (the agent or the master was down, or
    /// the agent could not trust its clock).
    Missed {
        /// Reported as missed, not run.
        Skip = "skip",
        /// The latest one runs late; the others are reported as missed.
        Once = "once",
        /// Every one runs late, in order.
        All = "all",
    }
}

impl Missed {
    pub const fn to_core(self) -> tether_core::message::Missed {
        match self {
            Self::Skip => tether_core::message::Missed::Skip,
            Self::Once => tether_core::message::Missed::RunOnce,
            Self::All => tether_core::message::Missed::RunAll,
        }
    }
}

/// What each occurrence runs: a task on an agent or a cluster, its policy resolved when the
/// version was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduledTask {
    pub target: Target,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub profile: Option<String>,
    pub policy: TaskPolicy,
}

/// A schedule as it stands: its latest version. Occurrences name the version they ran under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub id: ScheduleId,
    pub name: String,
    /// From 1, one more per change (pausing and resuming are not changes).
    pub version: u32,
    pub calendar: CalendarSpec,
    pub task: ScheduledTask,
    pub missed: Missed,
    /// An occurrence not started within this long after its time counts as missed.
    pub late_ms: u64,
    pub paused: bool,
    /// Deleted: nothing more starts; kept for the history of its occurrences.
    pub deleted: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The occurrence of a schedule a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OccurrenceRef {
    pub schedule: ScheduleId,
    pub version: u32,
    /// The occurrence's time (Unix milliseconds).
    pub at_ms: u64,
}

/// Occurrences of one schedule version handed to one agent: their runs, and the ids reserved
/// for them (occurrence `k` is task `task + 1 + k`, attempt `attempt + 1 + k`; `task` and
/// `attempt` name the hand-over itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Handover {
    pub task: TaskId,
    pub attempt: u64,
    pub schedule: ScheduleId,
    pub version: u32,
    pub agent: String,
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<Run>,
    pub state: HandoverState,
    pub created_ms: u64,
}

impl Handover {
    pub fn occurrences(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.count)).sum()
    }

    /// The time of occurrence `k`.
    pub fn occurrence_at(&self, mut k: u64) -> Option<u64> {
        for run in &self.runs {
            let count = u64::from(run.count);
            if k < count {
                return Some(run.first_ms.saturating_add(run.period_ms.saturating_mul(k)));
            }
            k -= count;
        }
        None
    }

    /// The time of the first occurrence.
    pub fn first_ms(&self) -> u64 {
        self.runs.first().map_or(0, |r| r.first_ms)
    }

    /// The time of the last occurrence.
    pub fn last_ms(&self) -> u64 {
        self.runs.last().map_or(0, Run::last_ms)
    }

    /// Which occurrence task `task` is, if it is one of this hand-over's.
    pub fn occurrence_of(&self, task: TaskId) -> Option<u64> {
        let k = task.checked_sub(self.task + 1)?;
        (k < self.occurrences()).then_some(k)
    }
}

text_enum! {
    HandoverState {
        /// Being sent until the agent answers.
        Sent = "sent",
        /// The agent holds it and starts its occurrences.
        Held = "held",
        /// Withdrawn, replaced, refused, or every occurrence started or missed.
        Ended = "ended",
    }
}
