//! Workflows and orders: a named, versioned sequence of steps (each a task template with a
//! target and what its failure does), and an order, which runs one version once. A step runs
//! as a task of its own (its attempts, output and history are a task's), linked to its order
//! by [`StepRef`].

use serde::{Deserialize, Serialize};

use super::{Target, TaskId, TaskPolicy, TaskState};

pub type OrderId = u64;

/// Steps one workflow may have: as many as an agent can ever hold at once (tether-core's
/// largest slot count), so a whole chain of same-agent steps can be handed over.
pub const MAX_STEPS: usize = 32;
/// Consecutive same-agent steps handed to an agent ahead of their turn, at most: each takes a
/// task slot there (16 by default), so a long chain leaves room for other work.
pub const HANDOVER: usize = 8;

text_enum! {
    /// What a step's failure (after its retries) does to its order.
    OnFailure {
        /// The order ends `failed`; later steps do not run.
        Stop = "stop",
        /// The order goes on with the next step.
        Continue = "continue",
    }
}

text_enum! {
    OrderState {
        Running = "running",
        /// Every step ran (each succeeded, or failed with `on_failure = continue`).
        Succeeded = "succeeded",
        /// A step failed with `on_failure = stop`.
        Failed = "failed",
        /// Cancelled by an operator: open steps were killed, later ones never started.
        Cancelled = "cancelled",
    }
}

impl OrderState {
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// One step of a workflow, with its policy resolved (profile and overrides) when the workflow
/// version was made: later profile edits do not change a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    pub name: String,
    pub target: Target,
    pub argv: Vec<String>,
    /// `KEY=VALUE` items.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub profile: Option<String>,
    pub policy: TaskPolicy,
    pub on_failure: OnFailure,
    /// Wait before each retry (`policy.retries` of them).
    #[serde(default)]
    pub retry_delay_ms: u64,
}

/// One version of a workflow. Changing a workflow makes the next version; orders keep theirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workflow {
    pub name: String,
    /// From 1, one more per change.
    pub version: u32,
    pub steps: Vec<Step>,
    pub created_ms: u64,
}

/// One run of one workflow version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: OrderId,
    pub workflow: String,
    pub version: u32,
    pub state: OrderState,
    /// Why it ended, for people (the step that stopped it, or who cancelled it).
    pub reason: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The step of an order a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRef {
    pub order: OrderId,
    /// Index into the workflow version's steps, from 0.
    pub step: u32,
}

/// A step's task as a restarted master needs it to rebuild its order's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTask {
    pub step: StepRef,
    pub task: TaskId,
    pub state: TaskState,
}
