//! The master's domain model: agents, clusters, profiles, tasks, attempts, events, outcomes and
//! policies, as the core decides about them and the store keeps them. Plain values with serde
//! (the HTTP API returns them as JSON); no storage crate: the store maps them to its tables.

use std::fmt;

use serde::{Deserialize, Serialize};
use tether_core::message::{
    EventKind, Exit, KillCause, MAX_ARGV, MAX_CWD, MAX_ENV, StrList, Stream, TaskRef, TaskSpec,
};
use tether_core::policy::{OnDisconnect, Policy};

/// A value the model cannot hold: which field, and why (for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Invalid {}

pub type TaskId = u64;
pub type AttemptId = u64;

/// Enums with one readable word per variant: the same word in JSON and in the store.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[Self] = &[$(Self::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mod access;
mod schedule;
mod workflow;

pub use access::{ApiToken, AuditEntry, Role};
pub use schedule::{
    Handover, HandoverState, Missed, OccurrenceRef, Schedule, ScheduleId, ScheduledTask,
};
pub use workflow::{
    HANDOVER, MAX_STEPS, OnFailure, Order, OrderId, OrderState, Step, StepRef, StepTask, Workflow,
};

text_enum! {
    /// What the master last learned about an agent's connection.
    AgentPresence {
        /// Never heard from since the agent was registered.
        Unknown = "unknown",
        Online = "online",
        /// Its will arrived or its heartbeats stopped.
        Lost = "lost",
        /// Stopped normally (drained); not a failure.
        Stopped = "stopped",
    }
}

text_enum! {
    ClusterMode {
        /// Each next task to the next available member.
        RoundRobin = "round-robin",
        /// Always the first available member in order.
        FixedPriority = "fixed-priority",
    }
}

text_enum! {
    TaskState {
        /// Waiting for its start time, an available agent or a retry.
        Pending = "pending",
        /// An attempt was sent; the agent has not accepted it yet.
        Dispatched = "dispatched",
        /// The agent accepted the attempt (and may hold it until its start time).
        Accepted = "accepted",
        Running = "running",
        /// Running on an agent the master cannot reach (`on_disconnect = continue`).
        Unreachable = "unreachable",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        /// Ended by a kill request.
        Killed = "killed",
        /// Its agent was lost beyond the policy's time, or restarted not knowing the attempt,
        /// and no retry was left.
        Lost = "lost",
    }
}

impl TaskState {
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Killed | Self::Lost
        )
    }
}

text_enum! {
    AttemptState {
        /// Created; the start command is being sent until the agent acknowledges it.
        Sent = "sent",
        Accepted = "accepted",
        Rejected = "rejected",
        Running = "running",
        Finished = "finished",
        /// Given up by the master (agent lost beyond the policy's time).
        Lost = "lost",
        Cancelled = "cancelled",
    }
}

impl AttemptState {
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Finished | Self::Lost | Self::Cancelled
        )
    }
}

/// Where a task runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Target {
    Agent(String),
    Cluster(String),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Agent(_) => "agent",
            Self::Cluster(_) => "cluster",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Agent(n) | Self::Cluster(n) => n,
        }
    }
}

/// A task's policy as the master configures it: what travels to the agent
/// ([`TaskPolicy::to_core`]) plus what only the master uses (retries, `lost_after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskPolicy {
    #[serde(with = "on_disconnect_text")]
    #[schema(value_type = String, example = "kill")]
    pub on_disconnect: OnDisconnect,
    pub heartbeat_period_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub grace_ms: u64,
    /// 0 means no limit.
    pub max_run_ms: u64,
    pub output_cap: u64,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// For `continue` tasks: reschedule after the agent has been unreachable this long.
    pub lost_after_ms: Option<u64>,
}

impl TaskPolicy {
    /// The protocol's default policy (`Policy::DEFAULT`), no retries, never rescheduled.
    pub const DEFAULT: TaskPolicy = TaskPolicy::from_core(Policy::DEFAULT, 0, None);

    pub const fn from_core(policy: Policy, retries: u32, lost_after_ms: Option<u64>) -> Self {
        Self {
            on_disconnect: policy.on_disconnect,
            heartbeat_period_ms: policy.heartbeat_period_ms,
            heartbeat_timeout_ms: policy.heartbeat_timeout_ms,
            grace_ms: policy.grace_ms,
            max_run_ms: policy.max_run_ms,
            output_cap: policy.output_cap,
            retries,
            lost_after_ms,
        }
    }

    /// The part the agent receives with every start command.
    pub const fn to_core(&self) -> Policy {
        Policy {
            on_disconnect: self.on_disconnect,
            heartbeat_period_ms: self.heartbeat_period_ms,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            grace_ms: self.grace_ms,
            max_run_ms: self.max_run_ms,
            output_cap: self.output_cap,
        }
    }

    /// The protocol's rules (the agent's own check) and the master's ranges
    /// ([`crate::limits`]), so nothing a store cannot hold or a fleet should not run gets in.
    pub fn validate(&self) -> Result<(), Invalid> {
        use crate::limits::{
            GRACE_MS, HEARTBEAT_PERIOD_MS, HEARTBEAT_TIMEOUT_MS, LOST_AFTER_MS, MAX_RUN_MS,
            OUTPUT_CAP, RETRIES,
        };
        self.to_core()
            .validate()
            .map_err(|e| Invalid::new("policy", format!("invalid policy: {e}")))?;
        HEARTBEAT_PERIOD_MS.check(self.heartbeat_period_ms)?;
        HEARTBEAT_TIMEOUT_MS.check(self.heartbeat_timeout_ms)?;
        GRACE_MS.check(self.grace_ms)?;
        MAX_RUN_MS.check(self.max_run_ms)?;
        OUTPUT_CAP.check(self.output_cap)?;
        RETRIES.check(u64::from(self.retries))?;
        if let Some(v) = self.lost_after_ms {
            LOST_AFTER_MS.check(v)?;
        }
        Ok(())
    }
}

impl Default for TaskPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

pub(crate) fn on_disconnect_str(v: OnDisconnect) -> &'static str {
    match v {
        OnDisconnect::Kill => "kill",
        OnDisconnect::Continue => "continue",
    }
}

pub(crate) fn parse_on_disconnect(text: &str) -> Option<OnDisconnect> {
    match text {
        "kill" => Some(OnDisconnect::Kill),
        "continue" => Some(OnDisconnect::Continue),
        _ => None,
    }
}

/// `on_disconnect` as `"kill"` / `"continue"` in JSON, the words of the configuration.
mod on_disconnect_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use tether_core::policy::OnDisconnect;

    pub(super) fn serialize<S: Serializer>(v: &OnDisconnect, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::on_disconnect_str(*v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OnDisconnect, D::Error> {
        let text = <&str>::deserialize(d)?;
        super::parse_on_disconnect(text)
            .ok_or_else(|| D::Error::custom("on_disconnect must be \"kill\" or \"continue\""))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    /// Incarnation from the agent's last presence or heartbeat.
    pub incarnation: Option<u32>,
    pub presence: AgentPresence,
    /// When the master last heard a heartbeat (Unix milliseconds).
    pub last_heartbeat_ms: Option<u64>,
    /// Highest event sequence acknowledged to the agent.
    pub last_seq_acked: u64,
    /// Switched over by an operator: no new work; what it runs finishes.
    pub disabled: bool,
    /// The identity of the agent's journal, once heard.
    pub journal: Option<u32>,
    /// The master's event number for that journal's sequence 0 (the master numbers an agent's
    /// events in one sequence across its journals).
    pub seq_base: u64,
}

impl Agent {
    /// An agent the master has not heard from yet.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            incarnation: None,
            presence: AgentPresence::Unknown,
            last_heartbeat_ms: None,
            last_seq_acked: 0,
            disabled: false,
            journal: None,
            seq_base: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cluster {
    pub name: String,
    pub mode: ClusterMode,
    /// Agent ids in priority order.
    pub members: Vec<String>,
    /// Round-robin position: the core's to interpret (e.g. index of the next member).
    pub cursor: u64,
}

/// Named policy that tasks are created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Profile {
    pub name: String,
    pub policy: TaskPolicy,
}

/// A task as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub target: Target,
    pub argv: Vec<String>,
    /// `KEY=VALUE` items.
    #[serde(default)]
    pub env: Vec<String>,
    /// An absolute path; empty means the agent's work directory.
    #[serde(default)]
    pub cwd: String,
    /// The profile the policy was taken from, kept for display; the policy is copied so later
    /// profile edits do not change submitted tasks.
    #[serde(default)]
    pub profile: Option<String>,
    pub policy: TaskPolicy,
    /// Unix milliseconds; `None` starts at once.
    #[serde(default)]
    pub start_at_ms: Option<u64>,
    /// The order step this task runs, if it is one.
    #[serde(default)]
    pub order: Option<StepRef>,
    /// The schedule occurrence this task runs, if it is one.
    #[serde(default)]
    pub occurrence: Option<OccurrenceRef>,
}

/// How a task ended; set with its terminal state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The deciding attempt's process ended (successfully or not; `exit` says).
    Exited {
        attempt: AttemptId,
        #[schema(value_type = Object)]
        exit: Exit,
        #[schema(value_type = Option<Object>)]
        cause: Option<KillCause>,
    },
    /// The agent was lost longer than the policy allows.
    AgentLost {
        attempt: AttemptId,
    },
    /// The agent came back with another journal (its state directory wiped, a re-flash, a
    /// restored backup) while the attempt was open: the attempt's process ended with the agent
    /// that ran it, and the new journal knows nothing of it.
    JournalReplaced {
        attempt: AttemptId,
    },
    /// Refused by the agent; `reason` is for people.
    Rejected {
        attempt: AttemptId,
        reason: String,
    },
    /// Attempts used up without a success.
    RetriesExhausted,
    /// No agent could take it (unknown agent, empty cluster).
    NoAgent,
    Cancelled,
    /// Its order ended (a step before it failed, or the order was cancelled) before it ran.
    OrderEnded {
        order: OrderId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    pub id: TaskId,
    pub target: Target,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub profile: Option<String>,
    pub policy: TaskPolicy,
    pub start_at_ms: Option<u64>,
    pub state: TaskState,
    pub outcome: Option<Outcome>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The order step this task runs, if it is one.
    #[serde(default)]
    pub order: Option<StepRef>,
    /// The schedule occurrence this task runs, if it is one.
    #[serde(default)]
    pub occurrence: Option<OccurrenceRef>,
}

impl Task {
    /// A task as submitted, pending, with its id.
    pub fn pending(id: TaskId, new: NewTask) -> Self {
        Self {
            id,
            target: new.target,
            argv: new.argv,
            env: new.env,
            cwd: new.cwd,
            profile: new.profile,
            policy: new.policy,
            start_at_ms: new.start_at_ms,
            state: TaskState::Pending,
            outcome: None,
            created_ms: 0,
            updated_ms: 0,
            order: new.order,
            occurrence: new.occurrence,
        }
    }

    /// The start command's payload for one attempt of this task.
    pub fn spec(&self, attempt: AttemptId) -> Result<TaskSpec, Invalid> {
        build_spec(
            TaskRef {
                task: self.id,
                attempt,
            },
            &self.argv,
            &self.env,
            &self.cwd,
            &self.policy,
            self.start_at_ms,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: AttemptId,
    pub task_id: TaskId,
    pub agent_id: String,
    pub state: AttemptState,
    pub pid: Option<u32>,
    #[schema(value_type = Option<Object>)]
    pub exit: Option<Exit>,
    #[schema(value_type = Option<Object>)]
    pub kill_cause: Option<KillCause>,
    /// Output bytes the agent dropped beyond the cap.
    pub output_dropped: u64,
    pub created_ms: u64,
    /// Agent-reported times (Unix milliseconds).
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// A chained workflow step: the attempt of the step before, on the same agent, that this
    /// one was handed over behind (the agent starts it once that one has ended).
    #[serde(default)]
    pub after: Option<AttemptId>,
}

/// A change of an attempt: the new state, and whichever facts came with it (`None` keeps the
/// stored value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptUpdate {
    pub state: AttemptState,
    pub pid: Option<u32>,
    pub exit: Option<Exit>,
    pub kill_cause: Option<KillCause>,
    pub output_dropped: Option<u64>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

impl AttemptUpdate {
    /// Only the state changes.
    pub const fn to(state: AttemptState) -> Self {
        Self {
            state,
            pid: None,
            exit: None,
            kill_cause: None,
            output_dropped: None,
            started_ms: None,
            finished_ms: None,
        }
    }
}

/// An agent event as received, deduplicated by `(agent_id, seq)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub agent_id: String,
    pub seq: u64,
    pub attempt: Option<AttemptId>,
    pub kind: String,
    /// The event as JSON text.
    pub json: String,
    pub received_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    pub attempt: AttemptId,
    pub stream: Stream,
    /// Byte offset of this chunk in its stream.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// The event kind's name as stored in `events.kind`.
pub fn event_kind(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Accepted { .. } => "accepted",
        EventKind::Rejected { .. } => "rejected",
        EventKind::Started { .. } => "started",
        EventKind::Output { .. } => "output",
        EventKind::Terminating { .. } => "terminating",
        EventKind::Finished { .. } => "finished",
        EventKind::BadCommand { .. } => "bad_command",
        EventKind::Missed { .. } => "missed",
        EventKind::Clock { .. } => "clock",
    }
}

pub(crate) fn build_spec(
    task: TaskRef,
    argv: &[String],
    env: &[String],
    cwd: &str,
    policy: &TaskPolicy,
    start_at_unix_ms: Option<u64>,
) -> Result<TaskSpec, Invalid> {
    let spec_err = |field: &'static str, e| Invalid::new(field, format!("task {field}: {e:?}"));
    if argv.first().is_none_or(|a| a.is_empty()) {
        return Err(Invalid::new(
            "argv",
            "task argv: the program (argv[0]) is missing",
        ));
    }
    if let Some(at) = start_at_unix_ms {
        crate::limits::START_AT_MS.check(at)?;
    }
    // The agent resolves a relative directory against wherever it runs: refused here, where
    // the operator still sees why, not later as a spawn failure on the board.
    if !cwd.is_empty() && !cwd.starts_with('/') {
        return Err(Invalid::new(
            "cwd",
            format!(
                "task cwd '{cwd}' is not an absolute path (leave it out for the agent's work directory)"
            ),
        ));
    }
    let spec = TaskSpec {
        task,
        policy: policy.to_core(),
        start_at_unix_ms,
        argv: StrList::<MAX_ARGV>::from_items(argv.iter().map(String::as_str))
            .map_err(|e| spec_err("argv", e))?,
        env: StrList::<MAX_ENV>::from_items(env.iter().map(String::as_str))
            .map_err(|e| spec_err("env", e))?,
        cwd: heapless::String::<MAX_CWD>::try_from(cwd)
            .map_err(|_| Invalid::new("cwd", format!("task cwd is longer than {MAX_CWD} bytes")))?,
    };
    spec.validate()
        .map_err(|e| Invalid::new("task", format!("task refused: {e:?}")))?;
    Ok(spec)
}
