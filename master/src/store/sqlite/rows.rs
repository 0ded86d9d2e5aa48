//! Model values to and from SQLite rows: the word enums as TEXT, the column lists the
//! queries select, JSON columns, and one decoder per table.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Row, ToSql};
use serde::{Deserialize, Serialize};
use tether_core::message::Stream;

use crate::model::{
    Agent, AgentPresence, Attempt, AttemptState, ClusterMode, Profile, StoredEvent, Target, Task,
    TaskId, TaskPolicy, TaskState, parse_on_disconnect,
};
use crate::store::{Result, StoreError};

/// The model's word enums as TEXT columns.
macro_rules! text_column {
    ($($name:ident),*) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                Self::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} '{text}'", stringify!($name)).into())
                })
            }
        }
    )*};
}

text_column!(AgentPresence, ClusterMode, TaskState, AttemptState);

pub(super) const TASK_COLUMNS: &str = "id, target_kind, target, argv, env, cwd, profile, on_disconnect, \
    heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap, retries, \
    lost_after_ms, start_at_ms, state, outcome, created_ms, updated_ms";

pub(super) const ATTEMPT_COLUMNS: &str = "id, task_id, agent_id, state, pid, exit, kill_cause, \
    output_dropped, created_ms, started_ms, finished_ms";

pub(super) const AGENT_COLUMNS: &str =
    "id, incarnation, presence, last_heartbeat_ms, last_seq_acked, disabled";

pub(super) const PROFILE_COLUMNS: &str = "name, on_disconnect, heartbeat_period_ms, heartbeat_timeout_ms, \
    grace_ms, max_run_ms, output_cap, retries, lost_after_ms";

pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("not serializable: {e}")))
}

pub(super) fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn stream_str(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

pub(super) fn parse_stream(text: &str) -> Option<Stream> {
    match text {
        "stdout" => Some(Stream::Stdout),
        "stderr" => Some(Stream::Stderr),
        _ => None,
    }
}

pub(super) fn agent_row(r: &Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: r.get(0)?,
        incarnation: r.get(1)?,
        presence: r.get(2)?,
        last_heartbeat_ms: r.get(3)?,
        last_seq_acked: r.get(4)?,
        disabled: r.get(5)?,
    })
}

/// Reads the policy columns starting at `first` (on_disconnect .. lost_after_ms).
fn policy_at(r: &Row<'_>, first: usize) -> rusqlite::Result<Result<TaskPolicy>> {
    let text: String = r.get(first)?;
    let Some(on_disconnect) = parse_on_disconnect(&text) else {
        return Ok(Err(StoreError::Corrupt(format!("on_disconnect '{text}'"))));
    };
    Ok(Ok(TaskPolicy {
        on_disconnect,
        heartbeat_period_ms: r.get(first + 1)?,
        heartbeat_timeout_ms: r.get(first + 2)?,
        grace_ms: r.get(first + 3)?,
        max_run_ms: r.get(first + 4)?,
        output_cap: r.get(first + 5)?,
        retries: r.get(first + 6)?,
        lost_after_ms: r.get(first + 7)?,
    }))
}

pub(super) fn profile_row(r: &Row<'_>) -> rusqlite::Result<Result<Profile>> {
    let name: String = r.get(0)?;
    Ok(policy_at(r, 1)?.map(|policy| Profile { name, policy }))
}

pub(super) fn task_row(r: &Row<'_>) -> rusqlite::Result<Result<Task>> {
    let kind: String = r.get(1)?;
    let name: String = r.get(2)?;
    let argv: String = r.get(3)?;
    let env: String = r.get(4)?;
    let outcome: Option<String> = r.get(17)?;
    let policy = policy_at(r, 7)?;
    let id: TaskId = r.get(0)?;
    let cwd: String = r.get(5)?;
    let profile: Option<String> = r.get(6)?;
    let start_at_ms: Option<u64> = r.get(15)?;
    let state: TaskState = r.get(16)?;
    let created_ms: u64 = r.get(18)?;
    let updated_ms: u64 = r.get(19)?;
    Ok((|| {
        let target = match kind.as_str() {
            "agent" => Target::Agent(name),
            "cluster" => Target::Cluster(name),
            other => return Err(StoreError::Corrupt(format!("task target kind '{other}'"))),
        };
        Ok(Task {
            id,
            target,
            argv: from_json("task argv", &argv)?,
            env: from_json("task env", &env)?,
            cwd,
            profile,
            policy: policy?,
            start_at_ms,
            state,
            outcome: outcome.map(|o| from_json("task outcome", &o)).transpose()?,
            created_ms,
            updated_ms,
        })
    })())
}

pub(super) fn attempt_row(r: &Row<'_>) -> rusqlite::Result<Result<Attempt>> {
    let exit: Option<String> = r.get(5)?;
    let cause: Option<String> = r.get(6)?;
    let id = r.get(0)?;
    let task_id = r.get(1)?;
    let agent_id = r.get(2)?;
    let state = r.get(3)?;
    let pid = r.get(4)?;
    let output_dropped = r.get(7)?;
    let created_ms = r.get(8)?;
    let started_ms = r.get(9)?;
    let finished_ms = r.get(10)?;
    Ok((|| {
        Ok(Attempt {
            id,
            task_id,
            agent_id,
            state,
            pid,
            exit: exit.map(|e| from_json("attempt exit", &e)).transpose()?,
            kill_cause: cause
                .map(|c| from_json("attempt kill cause", &c))
                .transpose()?,
            output_dropped,
            created_ms,
            started_ms,
            finished_ms,
        })
    })())
}

pub(super) fn event_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        agent_id: r.get(0)?,
        seq: r.get(1)?,
        attempt: r.get(2)?,
        kind: r.get(3)?,
        json: r.get(4)?,
        received_ms: r.get(5)?,
    })
}
