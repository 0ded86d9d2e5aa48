//! What both backends share about rows: the column lists the queries select, JSON columns,
//! the word enums as TEXT, and one decoder per table over [`Columns`], which each backend's
//! row type implements. Integers are stored signed (PostgreSQL has no unsigned types) and
//! checked on the way back.

use serde::{Deserialize, Serialize};
use tether_core::message::Stream;

use crate::model::{
    Agent, AgentPresence, ApiToken, Attempt, AttemptState, AuditEntry, Handover, HandoverState,
    Missed, OccurrenceRef, Order, OrderId, OrderState, Profile, Role, Schedule, StepRef, StepTask,
    StoredEvent, Target, Task, TaskPolicy, TaskState, Workflow, parse_on_disconnect,
};
use crate::store::{Result, StoreError};

pub(crate) const TASK_COLUMNS: &str = "id, target_kind, target, argv, env, cwd, profile, on_disconnect, \
    heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap, retries, \
    lost_after_ms, start_at_ms, state, outcome, created_ms, updated_ms, order_id, order_step, \
    occurrence_schedule, occurrence_version, occurrence_at_ms";

pub(crate) const ATTEMPT_COLUMNS: &str = "id, task_id, agent_id, state, pid, exit, kill_cause, \
    output_dropped, created_ms, started_ms, finished_ms, after_attempt";

pub(crate) const AGENT_COLUMNS: &str =
    "id, incarnation, presence, last_heartbeat_ms, last_seq_acked, disabled, journal, seq_base";

pub(crate) const PROFILE_COLUMNS: &str = "name, on_disconnect, heartbeat_period_ms, heartbeat_timeout_ms, \
    grace_ms, max_run_ms, output_cap, retries, lost_after_ms";

pub(crate) const TOKEN_COLUMNS: &str = "name, role, hash, created_ms, created_by, revoked_ms";

pub(crate) const EVENT_COLUMNS: &str = "agent_id, seq, attempt, kind, json, received_ms";

pub(crate) const AUDIT_COLUMNS: &str = "at_ms, who, action, subject";

pub(crate) const WORKFLOW_COLUMNS: &str = "name, version, steps, created_ms";

pub(crate) const ORDER_COLUMNS: &str =
    "id, workflow, version, state, reason, created_ms, updated_ms";

pub(crate) const SCHEDULE_COLUMNS: &str = "id, name, version, calendar, task, missed, late_ms, \
    paused, deleted, created_ms, updated_ms";

pub(crate) const HANDOVER_COLUMNS: &str =
    "task, attempt, schedule_id, version, agent_id, runs, state, created_ms";

/// What [`step_task`] reads, of a task.
pub(crate) const STEP_TASK_COLUMNS: &str = "order_id, order_step, id, state";

/// One result row of either backend, read by column index.
pub(crate) trait Columns {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;

    fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    /// An integer column as the model's type (a negative or too large value is corrupt).
    fn opt_int<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>> {
        self.opt_i64(i)?
            .map(|v| {
                T::try_from(v)
                    .map_err(|_| StoreError::Corrupt(format!("column {i}: {v} out of range")))
            })
            .transpose()
    }

    fn int<T: TryFrom<i64>>(&self, i: usize) -> Result<T> {
        self.opt_int(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.int::<i64>(i)? != 0)
    }

    /// A word enum stored as TEXT.
    fn word<T>(&self, i: usize, what: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
        let text = self.text(i)?;
        parse(&text).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} '{text}'")))
    }
}

/// A model integer as the signed value both backends store.
pub(crate) fn signed(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{v} is out of range")))
}

/// An id or cursor from a request as the signed column type: one above every storable id
/// (matches nothing, or everything below it) rather than an error.
pub(crate) fn key(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("not serializable: {e}")))
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn stream_str(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

pub(crate) fn parse_stream(text: &str) -> Option<Stream> {
    match text {
        "stdout" => Some(Stream::Stdout),
        "stderr" => Some(Stream::Stderr),
        _ => None,
    }
}

pub(crate) fn agent(r: &impl Columns) -> Result<Agent> {
    Ok(Agent {
        id: r.text(0)?,
        incarnation: r.opt_int(1)?,
        presence: r.word(2, "presence", AgentPresence::parse)?,
        last_heartbeat_ms: r.opt_int(3)?,
        last_seq_acked: r.int(4)?,
        disabled: r.flag(5)?,
        journal: r.opt_int(6)?,
        seq_base: r.int(7)?,
    })
}

/// Reads the policy columns starting at `first` (on_disconnect .. lost_after_ms).
fn policy_at(r: &impl Columns, first: usize) -> Result<TaskPolicy> {
    Ok(TaskPolicy {
        on_disconnect: r.word(first, "on_disconnect", parse_on_disconnect)?,
        heartbeat_period_ms: r.int(first + 1)?,
        heartbeat_timeout_ms: r.int(first + 2)?,
        grace_ms: r.int(first + 3)?,
        max_run_ms: r.int(first + 4)?,
        output_cap: r.int(first + 5)?,
        retries: r.int(first + 6)?,
        lost_after_ms: r.opt_int(first + 7)?,
    })
}

pub(crate) fn profile(r: &impl Columns) -> Result<Profile> {
    Ok(Profile {
        name: r.text(0)?,
        policy: policy_at(r, 1)?,
    })
}

pub(crate) fn task(r: &impl Columns) -> Result<Task> {
    let name = r.text(2)?;
    let target = match r.text(1)?.as_str() {
        "agent" => Target::Agent(name),
        "cluster" => Target::Cluster(name),
        other => return Err(StoreError::Corrupt(format!("task target kind '{other}'"))),
    };
    let id = r.int(0)?;
    Ok(Task {
        id,
        target,
        argv: from_json("task argv", &r.text(3)?)?,
        env: from_json("task env", &r.text(4)?)?,
        cwd: r.text(5)?,
        profile: r.opt_text(6)?,
        policy: policy_at(r, 7)?,
        start_at_ms: r.opt_int(15)?,
        state: r.word(16, "task state", TaskState::parse)?,
        outcome: r
            .opt_text(17)?
            .map(|o| from_json("task outcome", &o))
            .transpose()?,
        created_ms: r.int(18)?,
        updated_ms: r.int(19)?,
        order: step_ref(r.opt_int(20)?, r.opt_int(21)?)
            .map_err(|why| StoreError::Corrupt(format!("task {id}: {why}")))?,
        occurrence: occurrence_ref(r.opt_int(22)?, r.opt_int(23)?, r.opt_int(24)?)
            .map_err(|why| StoreError::Corrupt(format!("task {id}: {why}")))?,
    })
}

pub(crate) fn attempt(r: &impl Columns) -> Result<Attempt> {
    Ok(Attempt {
        id: r.int(0)?,
        task_id: r.int(1)?,
        agent_id: r.text(2)?,
        state: r.word(3, "attempt state", AttemptState::parse)?,
        pid: r.opt_int(4)?,
        exit: r
            .opt_text(5)?
            .map(|e| from_json("attempt exit", &e))
            .transpose()?,
        kill_cause: r
            .opt_text(6)?
            .map(|c| from_json("attempt kill cause", &c))
            .transpose()?,
        output_dropped: r.int(7)?,
        created_ms: r.int(8)?,
        started_ms: r.opt_int(9)?,
        finished_ms: r.opt_int(10)?,
        after: r.opt_int(11)?,
    })
}

pub(crate) fn event(r: &impl Columns) -> Result<StoredEvent> {
    Ok(StoredEvent {
        agent_id: r.text(0)?,
        seq: r.int(1)?,
        attempt: r.opt_int(2)?,
        kind: r.text(3)?,
        json: r.text(4)?,
        received_ms: r.int(5)?,
    })
}

pub(crate) fn token(r: &impl Columns) -> Result<ApiToken> {
    Ok(ApiToken {
        name: r.text(0)?,
        role: r.word(1, "token role", Role::parse)?,
        hash: r.text(2)?,
        created_ms: r.int(3)?,
        created_by: r.text(4)?,
        revoked_ms: r.opt_int(5)?,
    })
}

pub(crate) fn audit(r: &impl Columns) -> Result<AuditEntry> {
    Ok(AuditEntry {
        at_ms: r.int(0)?,
        who: r.text(1)?,
        action: r.text(2)?,
        subject: r.text(3)?,
    })
}

/// A task's `order_id` and `order_step`: both or neither.
fn step_ref(order: Option<OrderId>, step: Option<u32>) -> Result<Option<StepRef>, &'static str> {
    match (order, step) {
        (Some(order), Some(step)) => Ok(Some(StepRef { order, step })),
        (None, None) => Ok(None),
        _ => Err("only one of order_id and order_step is set"),
    }
}

/// A task's `occurrence_schedule`, `occurrence_version` and `occurrence_at_ms`: all or none.
fn occurrence_ref(
    schedule: Option<u64>,
    version: Option<u32>,
    at_ms: Option<u64>,
) -> Result<Option<OccurrenceRef>, &'static str> {
    match (schedule, version, at_ms) {
        (Some(schedule), Some(version), Some(at_ms)) => Ok(Some(OccurrenceRef {
            schedule,
            version,
            at_ms,
        })),
        (None, None, None) => Ok(None),
        _ => Err("only some of the occurrence columns are set"),
    }
}

/// A workflow version; steps that do not decode are [`StoreError::Corrupt`].
pub(crate) fn workflow(r: &impl Columns) -> Result<Workflow> {
    let name = r.text(0)?;
    let version = r.int(1)?;
    let steps = from_json(
        &format!("steps of workflow '{name}' version {version}"),
        &r.text(2)?,
    )?;
    Ok(Workflow {
        name,
        version,
        steps,
        created_ms: r.int(3)?,
    })
}

pub(crate) fn order(r: &impl Columns) -> Result<Order> {
    Ok(Order {
        id: r.int(0)?,
        workflow: r.text(1)?,
        version: r.int(2)?,
        state: r.word(3, "order state", OrderState::parse)?,
        reason: r.opt_text(4)?,
        created_ms: r.int(5)?,
        updated_ms: r.int(6)?,
    })
}

pub(crate) fn step_task(r: &impl Columns) -> Result<StepTask> {
    Ok(StepTask {
        step: StepRef {
            order: r.int(0)?,
            step: r.int(1)?,
        },
        task: r.int(2)?,
        state: r.word(3, "task state", TaskState::parse)?,
    })
}

/// A schedule; a calendar or task that does not decode is [`StoreError::Corrupt`].
pub(crate) fn schedule(r: &impl Columns) -> Result<Schedule> {
    let id = r.int(0)?;
    Ok(Schedule {
        id,
        name: r.text(1)?,
        version: r.int(2)?,
        calendar: from_json(&format!("calendar of schedule {id}"), &r.text(3)?)?,
        task: from_json(&format!("task of schedule {id}"), &r.text(4)?)?,
        missed: r.word(5, "missed rule", Missed::parse)?,
        late_ms: r.int(6)?,
        paused: r.flag(7)?,
        deleted: r.flag(8)?,
        created_ms: r.int(9)?,
        updated_ms: r.int(10)?,
    })
}

pub(crate) fn handover(r: &impl Columns) -> Result<Handover> {
    let task = r.int(0)?;
    Ok(Handover {
        task,
        attempt: r.int(1)?,
        schedule: r.int(2)?,
        version: r.int(3)?,
        agent: r.text(4)?,
        runs: from_json(&format!("runs of hand-over {task}"), &r.text(5)?)?,
        state: r.word(6, "hand-over state", HandoverState::parse)?,
        created_ms: r.int(7)?,
    })
}
