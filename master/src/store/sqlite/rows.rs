//! Model values to and from SQLite rows: the word enums as TEXT parameters, and the shared
//! decoders of [`crate::store::rows`] over rusqlite's rows.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Row, ToSql};

use crate::model::{
    Agent, AgentPresence, ApiToken, Attempt, AttemptState, AuditEntry, ClusterMode, Handover,
    HandoverState, Missed, Order, OrderState, Profile, Schedule, StepTask, StoredEvent, Task,
    TaskState, Workflow,
};
use crate::store::Result;
use crate::store::rows::{self, Columns};

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

text_column!(
    AgentPresence,
    ClusterMode,
    TaskState,
    AttemptState,
    OrderState,
    Missed,
    HandoverState
);

impl Columns for Row<'_> {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.get(i)?)
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i)?)
    }
}

/// The shared decoders as `query_map` callbacks: a bad value is the inner error.
macro_rules! row_fn {
    ($($name:ident => $decode:ident: $ty:ty),*) => {$(
        pub(super) fn $name(r: &Row<'_>) -> rusqlite::Result<Result<$ty>> {
            Ok(rows::$decode(r))
        }
    )*};
}

row_fn!(
    agent_row => agent: Agent,
    profile_row => profile: Profile,
    task_row => task: Task,
    attempt_row => attempt: Attempt,
    event_row => event: StoredEvent,
    token_row => token: ApiToken,
    audit_row => audit: AuditEntry,
    workflow_row => workflow: Workflow,
    order_row => order: Order,
    step_task_row => step_task: StepTask,
    schedule_row => schedule: Schedule,
    handover_row => handover: Handover
);
