//! The values that cross the core's boundary: configuration, actions, store changes, requests
//! and their errors, the snapshot a restarted master is rebuilt from.

use std::fmt;

use serde::{Deserialize, Serialize};
use tether_core::Duration;
use tether_core::auth::{AgentKey, SigningKey};
use tether_core::message::{Event, Stream};
use tether_core::policy::{OnDisconnect, PolicyError};
use tether_core::topic::TopicError;

use crate::calendar::CalendarSpec;
use crate::model::{
    Agent, AgentPresence, ApiToken, Attempt, AttemptId, AttemptUpdate, AuditEntry, Cluster,
    ClusterMode, Handover, Invalid, Missed, NewTask, OnFailure, Order, OrderId, OrderState,
    Outcome, Profile, Schedule, ScheduleId, StepTask, Task, TaskId, TaskPolicy, TaskState,
    Workflow,
};

/// How the master behaves; everything here is the operator's choice.
#[derive(Debug, Clone)]
pub struct Config {
    pub prefix: String,
    /// This master's incarnation: carried by its presence, heartbeats and commands. Grows at
    /// every start (the store keeps it): agents refuse commands of an older epoch.
    pub epoch: u32,
    /// Signs everything the master publishes (commands, heartbeats, presence).
    pub signing_key: SigningKey,
    /// Accept unauthenticated events, heartbeats and presence from agents that have no key.
    /// Off by default: such agents are refused as unknown.
    pub insecure_agents: bool,
    /// The master's heartbeat period when no task asks for a shorter one.
    pub heartbeat_period: Duration,
    /// How far ahead schedules are planned and handed to agents (7 days by default).
    pub schedule_horizon: Duration,
    /// Allowance for delays on top of a task's heartbeat timeout before the master gives an
    /// agent up (2 s by default).
    pub delay_allowance: Duration,
    /// When a rescheduled task's other attempt finishes too: cancel it once the task's outcome
    /// is decided (first finished wins either way).
    pub cancel_duplicates: bool,
}

impl Config {
    pub fn new(prefix: &str, epoch: u32, signing_key: SigningKey) -> Self {
        Self {
            prefix: prefix.to_owned(),
            epoch,
            signing_key,
            insecure_agents: false,
            heartbeat_period: Duration::from_secs(10),
            schedule_horizon: Duration::from_secs(7 * 24 * 3600),
            delay_allowance: Duration::from_secs(2),
            cancel_duplicates: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub retain: bool,
}

/// What the core asks the runtime to do. See the module documentation of [`crate::core`] for
/// the order: every `Persist` of a batch is committed before any `Publish` of it goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
// Actions are drained at once, never stored in bulk: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
pub enum Action {
    Publish(Publish),
    Persist(Change),
}

/// One change of the durable state; the store applies a batch of them in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The agent's presence and incarnation; `heard` stamps its last heartbeat with the wall
    /// clock of the commit.
    Agent {
        id: String,
        incarnation: Option<u32>,
        presence: AgentPresence,
        heard: bool,
    },
    /// An operator disabled (switched over) or enabled an agent.
    AgentDisabled {
        agent: String,
        disabled: bool,
    },
    /// An agent's MAC key, new or rotated.
    AgentKey {
        agent: String,
        key: AgentKey,
    },
    /// An agent event, new by (agent, seq).
    Event {
        agent: String,
        event: Event,
    },
    Output {
        attempt: AttemptId,
        stream: Stream,
        offset: u64,
        data: Vec<u8>,
    },
    /// The agent's events are numbered in `journal` from now on, its sequence `s` stored as
    /// `seq_base + s`; everything up to `seq_base` counts as acknowledged.
    AgentJournal {
        agent: String,
        journal: u32,
        seq_base: u64,
    },
    /// Events up to `up_to` are stored: the acknowledgement may go out.
    Acked {
        agent: String,
        up_to: u64,
    },
    NewTask {
        id: TaskId,
        task: NewTask,
        state: TaskState,
    },
    TaskState {
        id: TaskId,
        state: TaskState,
        outcome: Option<Outcome>,
    },
    NewAttempt {
        id: AttemptId,
        task: TaskId,
        agent: String,
        /// A chained step's predecessor attempt on the same agent ([`Attempt::after`]).
        after: Option<AttemptId>,
    },
    Attempt {
        id: AttemptId,
        update: AttemptUpdate,
    },
    KillRequested {
        task: TaskId,
    },
    Cluster(Cluster),
    ClusterCursor {
        name: String,
        cursor: u64,
    },
    Profile(Profile),
    /// An API token created, replaced or revoked (`revoked_ms` set).
    ApiToken(ApiToken),
    /// Who changed what through the API.
    Audit(AuditEntry),
    /// A new workflow version (versions are never changed or removed while orders use them).
    Workflow(Workflow),
    /// A new order, `running`.
    NewOrder(Order),
    /// An order ended.
    OrderState {
        id: OrderId,
        state: OrderState,
        reason: Option<String>,
    },
    /// A schedule made, changed (a new version), paused, resumed or deleted: the whole row.
    Schedule(Schedule),
    /// A hand-over made or changed (its state): the whole row. Its ids are reserved: the
    /// store's counters move past them.
    Handover(Handover),
}

/// Everything a restarted core needs, as the store loads it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Each agent with the sequence numbers of its events stored above its acknowledged prefix.
    pub agents: Vec<(Agent, Vec<u64>)>,
    pub clusters: Vec<Cluster>,
    pub profiles: Vec<Profile>,
    /// Unfinished tasks, and finished ones with an attempt still open, with their attempts.
    pub tasks: Vec<(Task, Vec<Attempt>)>,
    pub kill_requests: Vec<TaskId>,
    pub next_task: TaskId,
    pub next_attempt: AttemptId,
    /// Every provisioned agent's MAC key.
    pub agent_keys: Vec<(String, AgentKey)>,
    /// Every workflow version.
    pub workflows: Vec<Workflow>,
    /// Running orders.
    pub orders: Vec<Order>,
    /// The step tasks of running orders, finished ones too.
    pub step_tasks: Vec<StepTask>,
    pub next_order: OrderId,
    /// Schedules not deleted.
    pub schedules: Vec<Schedule>,
    /// Hand-overs not ended.
    pub handovers: Vec<Handover>,
    /// Per schedule, the latest occurrence time a task was made for.
    pub last_occurrences: Vec<(ScheduleId, u64)>,
    /// The occurrence tasks within the id ranges of hand-overs not ended (made already: a
    /// late event of one must not make it again).
    pub adopted: Vec<TaskId>,
    pub next_schedule: ScheduleId,
}

/// Policy fields to set on top of a profile (or the defaults); `None` keeps the base value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    #[serde(default, with = "opt_on_disconnect")]
    #[schema(value_type = Option<String>, example = "continue")]
    pub on_disconnect: Option<OnDisconnect>,
    pub heartbeat_period_ms: Option<u64>,
    pub heartbeat_timeout_ms: Option<u64>,
    pub grace_ms: Option<u64>,
    pub max_run_ms: Option<u64>,
    pub output_cap: Option<u64>,
    pub retries: Option<u32>,
    pub lost_after_ms: Option<u64>,
}

impl PolicyOverrides {
    pub fn apply(&self, base: TaskPolicy) -> TaskPolicy {
        TaskPolicy {
            on_disconnect: self.on_disconnect.unwrap_or(base.on_disconnect),
            heartbeat_period_ms: self.heartbeat_period_ms.unwrap_or(base.heartbeat_period_ms),
            heartbeat_timeout_ms: self
                .heartbeat_timeout_ms
                .unwrap_or(base.heartbeat_timeout_ms),
            grace_ms: self.grace_ms.unwrap_or(base.grace_ms),
            max_run_ms: self.max_run_ms.unwrap_or(base.max_run_ms),
            output_cap: self.output_cap.unwrap_or(base.output_cap),
            retries: self.retries.unwrap_or(base.retries),
            lost_after_ms: self.lost_after_ms.or(base.lost_after_ms),
        }
    }
}

mod opt_on_disconnect {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use tether_core::policy::OnDisconnect;

    pub(super) fn serialize<S: Serializer>(
        v: &Option<OnDisconnect>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(OnDisconnect::Kill) => s.serialize_some("kill"),
            Some(OnDisconnect::Continue) => s.serialize_some("continue"),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OnDisconnect>, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None => Ok(None),
            Some("kill") => Ok(Some(OnDisconnect::Kill)),
            Some("continue") => Ok(Some(OnDisconnect::Continue)),
            Some(other) => Err(D::Error::custom(format!(
                "on_disconnect must be \"kill\" or \"continue\", not \"{other}\""
            ))),
        }
    }
}

/// A task as submitted through the API: to one agent or to a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub policy: PolicyOverrides,
    /// Unix milliseconds; the agent holds the order until then, master or no master.
    #[serde(default)]
    pub start_at_ms: Option<u64>,
}

/// A workflow as defined through the API: its steps in order. Defining an existing name makes
/// its next version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    pub name: String,
    pub steps: Vec<StepRequest>,
}

/// One step: a task (as [`Submit`] has it, without a start time) and what its failure does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// Defaults to `step-N` (N from 1).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub profile: Option<String>,
    /// `retries` here retries the step (after `retry_delay_ms`) before `on_failure` applies.
    #[serde(default)]
    pub policy: PolicyOverrides,
    /// `stop` (the default) or `continue`.
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    #[serde(default)]
    pub retry_delay_ms: u64,
}

/// A schedule as defined through the API. Defining an existing name makes its next version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub name: String,
    pub calendar: CalendarSpec,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub policy: PolicyOverrides,
    /// `skip` (the default), `once` or `all`.
    #[serde(default)]
    pub missed: Option<Missed>,
    /// An occurrence not started within this long after its time is missed (60 s by default).
    #[serde(default)]
    pub late_ms: Option<u64>,
}

/// Starts an order of a workflow: its latest version, or the one named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub workflow: String,
    #[serde(default)]
    pub version: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterRequest {
    pub name: String,
    pub mode: ClusterMode,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    pub name: String,
    /// On top of the defaults (period 10 s, timeout 60 s, kill, no retries).
    #[serde(default)]
    pub policy: PolicyOverrides,
}

/// Why a request (or a configuration) was refused: one variant per reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The configured topic prefix is not one the protocol can use.
    InvalidPrefix {
        prefix: String,
        error: TopicError,
    },
    ZeroHeartbeatPeriod,
    /// An agent, cluster, cluster member or profile name that is not a valid id.
    InvalidName {
        what: &'static str,
        name: String,
    },
    /// The agent id is the master's own broker user.
    MasterUser(String),
    /// A task names both an agent and a cluster, or neither.
    NotOneTarget,
    EmptyCluster(String),
    DuplicateMember {
        cluster: String,
        member: String,
    },
    /// The policy breaks a rule of the protocol.
    InvalidPolicy(PolicyError),
    /// A policy field the master cannot hold.
    PolicyField {
        field: &'static str,
        reason: String,
    },
    LostAfterZero,
    /// `lost_after` on an `on_disconnect = kill` task.
    LostAfterWithKill,
    /// A task the agent would refuse (argv, env, cwd, sizes).
    InvalidTask {
        field: &'static str,
        reason: String,
    },
    /// Never connected to this master.
    UnknownAgent(String),
    UnknownCluster(String),
    UnknownProfile(String),
    UnknownTask(TaskId),
    /// Killing a finished task; `state` is `None` once the core dropped it.
    AlreadyFinished {
        task: TaskId,
        state: Option<TaskState>,
    },
    /// A workflow with no steps, or more than [`crate::model::MAX_STEPS`].
    StepCount {
        workflow: String,
        steps: usize,
    },
    /// A step the master refused; `reason` names the step and why.
    InvalidStep {
        step: usize,
        reason: String,
    },
    UnknownWorkflow(String),
    UnknownVersion {
        workflow: String,
        version: u32,
    },
    UnknownOrder(OrderId),
    /// Cancelling an order that has ended.
    OrderEnded {
        order: OrderId,
        state: OrderState,
    },
    /// A calendar the planner cannot use; the reason says why.
    InvalidCalendar(String),
    UnknownSchedule(String),
}

/// What kind of refusal a [`RequestError`] is, for callers that map it (to HTTP statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The input is wrong.
    Invalid,
    /// It names something that does not exist.
    NotFound,
    /// Valid, but not in the current state.
    Conflict,
}

impl RequestError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::UnknownAgent(_)
            | Self::UnknownCluster(_)
            | Self::UnknownProfile(_)
            | Self::UnknownTask(_)
            | Self::UnknownOrder(_)
            | Self::UnknownSchedule(_) => ErrorClass::NotFound,
            Self::AlreadyFinished { .. } | Self::OrderEnded { .. } => ErrorClass::Conflict,
            // Named in a request body: the body is what is wrong (422), not the URL.
            Self::UnknownWorkflow(_) | Self::UnknownVersion { .. } => ErrorClass::Invalid,
            Self::StepCount { .. } | Self::InvalidStep { .. } | Self::InvalidCalendar(_) => {
                ErrorClass::Invalid
            }
            Self::InvalidPrefix { .. }
            | Self::ZeroHeartbeatPeriod
            | Self::InvalidName { .. }
            | Self::MasterUser(_)
            | Self::NotOneTarget
            | Self::EmptyCluster(_)
            | Self::DuplicateMember { .. }
            | Self::InvalidPolicy(_)
            | Self::PolicyField { .. }
            | Self::LostAfterZero
            | Self::LostAfterWithKill
            | Self::InvalidTask { .. } => ErrorClass::Invalid,
        }
    }
}

/// A task the model cannot turn into a start command.
impl From<Invalid> for RequestError {
    fn from(e: Invalid) -> Self {
        Self::InvalidTask {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPrefix { prefix, error } => write!(f, "prefix '{prefix}': {error}"),
            Self::ZeroHeartbeatPeriod => f.write_str("heartbeat period must be greater than zero"),
            Self::InvalidName { what, name } => write!(
                f,
                "{what} name '{name}' must be 1-32 characters of [A-Za-z0-9._-]"
            ),
            Self::MasterUser(id) => write!(f, "agent id '{id}' is the master's own broker user"),
            Self::NotOneTarget => f.write_str("give exactly one target: an agent or a cluster"),
            Self::EmptyCluster(name) => write!(f, "cluster '{name}' needs at least one member"),
            Self::DuplicateMember { cluster, member } => {
                write!(f, "cluster '{cluster}' lists member '{member}' twice")
            }
            Self::InvalidPolicy(e) => write!(f, "invalid policy: {e}"),
            Self::PolicyField { reason, .. } | Self::InvalidTask { reason, .. } => {
                f.write_str(reason)
            }
            Self::LostAfterZero => f.write_str(
                "lost_after must be greater than zero (leave it out to never reschedule)",
            ),
            Self::LostAfterWithKill => f.write_str(
                "lost_after applies only to on_disconnect = continue tasks (a kill task is \
                 failed after its heartbeat timeout)",
            ),
            Self::UnknownAgent(agent) => write!(
                f,
                "unknown agent '{agent}': it has never connected to this master"
            ),
            Self::UnknownCluster(name) => write!(f, "unknown cluster '{name}'"),
            Self::UnknownProfile(name) => write!(f, "unknown profile '{name}'"),
            Self::UnknownTask(id) => write!(f, "no task {id}"),
            Self::AlreadyFinished { task, state: None } => {
                write!(f, "task {task} has already finished")
            }
            Self::AlreadyFinished {
                task,
                state: Some(state),
            } => write!(f, "task {task} has already finished ({state})"),
            Self::StepCount { workflow, steps } => write!(
                f,
                "workflow '{workflow}' has {steps} steps: give 1 to {}",
                crate::model::MAX_STEPS
            ),
            Self::InvalidStep { step, reason } => write!(f, "step {}: {reason}", step + 1),
            Self::UnknownWorkflow(name) => write!(f, "unknown workflow '{name}'"),
            Self::UnknownVersion { workflow, version } => {
                write!(f, "workflow '{workflow}' has no version {version}")
            }
            Self::UnknownOrder(id) => write!(f, "no order {id}"),
            Self::OrderEnded { order, state } => {
                write!(f, "order {order} has already ended ({state})")
            }
            Self::InvalidCalendar(reason) => write!(f, "calendar: {reason}"),
            Self::UnknownSchedule(name) => write!(f, "unknown schedule '{name}'"),
        }
    }
}

impl std::error::Error for RequestError {}

/// The live view of one agent (the store holds what survives a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub incarnation: Option<u32>,
    pub presence: AgentPresence,
    /// Online, heartbeating and not disabled: new tasks may go there.
    pub available: bool,
    /// Switched over by an operator: it finishes what it runs and takes nothing new.
    pub disabled: bool,
    /// Milliseconds since the master last heard from it (since the master started, if not since).
    pub silent_ms: u64,
    pub acked_seq: u64,
    /// The latest sequence in its journal, as its last fresh heartbeat said.
    pub journal_seq: u64,
    /// The identity of its journal (a new one after a re-flash or a wiped state directory).
    pub journal: Option<u32>,
    /// Open attempts on it.
    pub attempts: Vec<AttemptId>,
}

/// Counters of what the core dropped or ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub bad_messages: u64,
    pub foreign_messages: u64,
    pub stale_wills: u64,
    pub duplicate_events: u64,
    pub bad_commands_reported: u64,
    /// Heartbeats whose `last_seq` is below what the master acknowledged in the same journal
    /// (a journal cut short on disk).
    pub journal_behind: u64,
    /// Agents that came back with another journal (wiped, re-flashed, restored).
    pub journals_replaced: u64,
    /// Events naming a journal other than their agent's current one: dropped unacknowledged.
    pub other_journal_events: u64,
    /// Agent heartbeats not taken as a sign of life: recorded ones published again, or ones
    /// sent before the agent heard the master's latest (normal right after an outage).
    pub stale_heartbeats: u64,
    pub unknown_attempts_killed: u64,
    /// Messages on an agent topic whose agent has no key (not counted per agent: anyone can
    /// make up names).
    pub unknown_agent: u64,
    /// Schedule occurrences reported missed (by agents, or skipped by the master itself).
    pub occurrences_missed: u64,
    /// Hand-overs an agent refused.
    pub handovers_refused: u64,
}

/// Messages dropped for one provisioned agent because they did not authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SecurityCounts {
    /// Without a MAC (or with the master's scheme).
    pub unauthenticated: u64,
    /// With a MAC that does not verify under the agent's key (forged, or another agent's).
    pub bad_signature: u64,
    /// The last reason, for the operator.
    pub last_error: Option<String>,
}
