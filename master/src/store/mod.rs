//! The master's durable state behind one trait: [`Store`] is what the runtime asks of a
//! database (apply the core's changes atomically, load the snapshot a restarted core is rebuilt
//! from, count epochs, and the reads the HTTP API serves). [`StoreError`] is every backend's
//! failure.
//!
//! - [`location`]: where the store is, [`StoreLocation`] (a file or a `postgres://` URL);
//! - [`sqlite`]: the SQLite backend, [`SqliteStore`] (the default);
//! - [`postgres`]: the PostgreSQL backend, [`PostgresStore`];
//! - [`schema`]: both backends' tables and migrations, version for version;
//! - `rows`: the column lists and row decoders both share; `checks`: the input checks both run;
//!   `history`: what both backends' retention shares.

use std::fmt;

use crate::core::{Change, Snapshot};
use crate::model::{
    Agent, ApiToken, Attempt, AttemptId, AuditEntry, Cluster, Handover, Invalid, Order, OrderId,
    OrderState, OutputChunk, Profile, Schedule, ScheduleId, StoredEvent, Task, TaskId, TaskState,
    Workflow,
};

mod checks;
mod history;
pub mod location;
pub mod postgres;
mod rows;
pub mod schema;
pub mod sqlite;

pub use location::StoreLocation;
pub use postgres::PostgresStore;
pub use schema::SCHEMA_VERSION;
pub use sqlite::SqliteStore;

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    Sqlite(rusqlite::Error),
    Postgres(::postgres::Error),
    /// The database did not answer in time (or its thread is gone): treated as unreachable.
    Unanswered(String),
    /// The database was written by a newer Tether; this binary knows schema versions up to
    /// `known`.
    NewerSchema {
        found: u32,
        known: u32,
    },
    /// A row the operation needs does not exist.
    NotFound {
        what: &'static str,
        key: String,
    },
    /// The input was refused; the text says which field and why.
    Invalid(String),
    /// A stored value this binary cannot read (edited by hand, or written by a newer version).
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(e) => write!(f, "database error: {e}"),
            Self::Postgres(e) => match e.as_db_error() {
                // The server's message without its detail lines (they may quote row values).
                Some(db) => write!(f, "PostgreSQL error {}: {}", db.code().code(), db.message()),
                None => write!(f, "PostgreSQL unreachable: {e}"),
            },
            Self::Unanswered(why) => write!(f, "PostgreSQL unreachable: {why}"),
            Self::NewerSchema { found, known } => write!(
                f,
                "database schema version {found} is newer than this master knows ({known}); \
                 upgrade the master"
            ),
            Self::NotFound { what, key } => write!(f, "no {what} '{key}'"),
            Self::Invalid(why) => f.write_str(why),
            Self::Corrupt(why) => write!(f, "unreadable stored value: {why}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Sqlite(e) => Some(e),
            Self::Postgres(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

impl StoreError {
    /// The disk (or the database's size limit) is full: writes fail until space is freed.
    pub fn is_full(&self) -> bool {
        match self {
            Self::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            Self::Postgres(e) => e.code() == Some(&::postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }

    /// The database server cannot be reached (not started, stopped, connection lost): the
    /// store reconnects by itself, and the same call may succeed later.
    pub fn is_unreachable(&self) -> bool {
        let e = match self {
            Self::Postgres(e) => e,
            Self::Unanswered(_) => return true,
            _ => return false,
        };
        match e.code() {
            // Class 08 is "connection exception"; 57P0x are shutdowns and start-ups.
            Some(code) => code.code().starts_with("08") || code.code().starts_with("57P0"),
            None => {
                use std::error::Error as _;
                e.is_closed()
                    || e.source().is_some_and(|s| s.is::<std::io::Error>())
                    || e.to_string().contains("timeout")
            }
        }
    }

    /// The database itself failed (not the input): the master refuses writes meanwhile and
    /// retries, as opposed to a refusal of one change.
    pub fn is_database(&self) -> bool {
        matches!(
            self,
            Self::Sqlite(_) | Self::Postgres(_) | Self::Unanswered(_)
        )
    }
}

impl From<Invalid> for StoreError {
    fn from(e: Invalid) -> Self {
        Self::Invalid(e.reason)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One page of a list, in id order: at most `limit` rows with ids above `after`. The next page
/// starts after the last id of this one, so rows inserted meanwhile neither repeat nor shift
/// the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only ids greater than this; `None` from the first.
    pub after: Option<u64>,
    pub limit: u32,
}

impl Page {
    /// Everything from the first row (what the list routes answer until they take a cursor).
    pub const ALL: Self = Self {
        after: None,
        limit: u32::MAX,
    };

    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }

    pub fn after(after: u64, limit: u32) -> Self {
        Self {
            after: Some(after),
            limit,
        }
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::ALL
    }
}

/// A database the master can run on. Methods take `&self`: one owner (the runtime's loop)
/// calls them one at a time; a backend that needs exclusive access keeps it inside.
pub trait Store: Send {
    /// Applies one batch of the core's changes as ONE transaction: all or nothing. The
    /// batch's publishes may go out only after this returned `Ok` (see [`crate::commit`]).
    fn apply(&self, changes: &[Change]) -> Result<()>;

    /// Everything a restarted core needs ([`crate::core::Master::restore`]). Of workflows
    /// and orders: every workflow version (by name, then version), the running orders (by
    /// id), every task of a running order, finished ones too (`step_tasks`, by order, step,
    /// then task id; its open tasks are also in `tasks` as any task is), and `next_order`,
    /// above every order id ever stored (pruned ones included). Of schedules: those not
    /// deleted (by id), the hand-overs not ended (by task id), `last_occurrences` (by schedule
    /// id, schedules not deleted that ever had an occurrence task: the latest occurrence time
    /// a task was stored for, pruned tasks included), and `next_schedule`, above every
    /// schedule id ever stored. `next_task` and `next_attempt` are above every id a hand-over
    /// ever stored reserves (ended and pruned ones included).
    fn load(&self) -> Result<Snapshot>;

    /// The next master epoch: one more than any before and at least `at_least`, committed
    /// before it is returned. Called once per master start; agents refuse older epochs.
    fn next_epoch(&self, at_least: u32) -> Result<u32>;

    /// The last epoch [`Store::next_epoch`] committed (read only: a master that cannot write
    /// starts above it without storing its own).
    fn epoch(&self) -> Result<u32>;

    /// A real write that changes nothing: whether the store takes writes again after it
    /// refused some (a full disk).
    fn probe_write(&self) -> Result<()>;

    /// Every agent the store knows, by id.
    fn agents(&self) -> Result<Vec<Agent>>;

    /// Every cluster, by name, members in their order.
    fn clusters(&self) -> Result<Vec<Cluster>>;

    /// Every profile, by name.
    fn profiles(&self) -> Result<Vec<Profile>>;

    /// One page of tasks, oldest first.
    fn tasks(&self, page: Page, state: Option<TaskState>) -> Result<Vec<Task>>;

    fn task(&self, id: TaskId) -> Result<Option<Task>>;

    /// How many tasks are in each state (states with none left out), for `GET /metrics`.
    fn task_counts(&self) -> Result<Vec<(TaskState, u64)>>;

    /// The attempts of one task, in id order.
    fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>>;

    /// The events naming one attempt, by agent and sequence.
    fn attempt_events(&self, attempt: AttemptId) -> Result<Vec<StoredEvent>>;

    /// An attempt's output chunks: stdout first, each stream in offset order.
    fn output(&self, attempt: AttemptId) -> Result<Vec<OutputChunk>>;

    /// Every API token (revoked ones too), by name.
    fn tokens(&self) -> Result<Vec<ApiToken>>;

    /// What was changed through the API on `subject` (`task/7`), oldest first.
    fn audit(&self, subject: &str) -> Result<Vec<AuditEntry>>;

    /// The latest version of each workflow, by name.
    fn workflows(&self) -> Result<Vec<Workflow>>;

    /// One version of a workflow; `None` asks for its latest.
    fn workflow(&self, name: &str, version: Option<u32>) -> Result<Option<Workflow>>;

    /// The versions of a workflow, ascending (empty for an unknown name).
    fn workflow_versions(&self, name: &str) -> Result<Vec<u32>>;

    /// One page of orders, oldest first, those in `state` only when given.
    fn orders(&self, page: Page, state: Option<OrderState>) -> Result<Vec<Order>>;

    fn order(&self, id: OrderId) -> Result<Option<Order>>;

    /// The tasks of one order's steps, by step, then by id.
    fn order_tasks(&self, id: OrderId) -> Result<Vec<Task>>;

    /// How many orders are in each state (states with none left out), for `GET /metrics`.
    fn order_counts(&self) -> Result<Vec<(OrderState, u64)>>;

    /// One page of the schedules not deleted, by id.
    fn schedules(&self, page: Page) -> Result<Vec<Schedule>>;

    /// The schedule not deleted named `name` (at most one is).
    fn schedule(&self, name: &str) -> Result<Option<Schedule>>;

    /// One schedule by id, deleted or not (occurrence tasks name it by id).
    fn schedule_by_id(&self, id: ScheduleId) -> Result<Option<Schedule>>;

    /// Every stored hand-over of a schedule, ended ones too (until pruned), newest first
    /// (by task id, descending).
    fn handovers(&self, schedule: ScheduleId) -> Result<Vec<Handover>>;

    /// One page of a schedule's occurrence tasks, by task id (as every [`Page`]; the core
    /// hands occurrence ids out in occurrence order, so oldest occurrence first).
    fn occurrence_tasks(&self, schedule: ScheduleId, page: Page) -> Result<Vec<Task>>;

    /// A schedule's latest `limit` occurrence tasks, newest first (an index read: a schedule
    /// every second keeps millions).
    fn latest_occurrence_tasks(&self, schedule: ScheduleId, limit: u32) -> Result<Vec<Task>>;

    /// How many tasks that run a schedule occurrence are in each state (states with none
    /// left out), for `GET /metrics`.
    fn occurrence_counts(&self) -> Result<Vec<(TaskState, u64)>>;

    /// History retention, one transaction, oldest first:
    /// - finished tasks of no order last changed before `before_ms` (Unix ms), with their
    ///   attempts, output, events and audit entries;
    /// - finished orders last changed before `before_ms` whose tasks all finished before it,
    ///   each whole: with all its tasks (as above) and its audit entries. The tasks of an
    ///   order go only with it, so a running order keeps all of its tasks.
    ///
    /// `limit` bounds the tasks deleted: tasks of no order first, then whole orders while
    /// fewer than `limit` tasks went (an order is never split, so the last one may take the
    /// count past `limit` by its own tasks; an order of no task counts as one);
    /// [`Pruned::full`] says the batch reached it and more may be left. Also as many old
    /// acknowledged events that name no attempt. Task, attempt and order ids are never handed
    /// out again. Workflow versions are kept: they are small, and a version is what the kept
    /// and future orders run.
    ///
    /// Schedules: their finished occurrence tasks go as tasks of no order do (above); ended
    /// hand-overs last changed before `before_ms` go (at most `limit`; the ids they reserved
    /// are never handed out again); a deleted schedule last changed before `before_ms` goes
    /// once no task and no hand-over names it (at most `limit`; its id is never handed out
    /// again). Schedules not deleted are kept, and so is each one's latest occurrence time.
    fn prune_finished(&self, before_ms: u64, limit: u32) -> Result<Pruned>;
}

/// What one [`Store::prune_finished`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Tasks, those of the orders included.
    pub tasks: u64,
    pub events: u64,
    pub orders: u64,
    /// Ended hand-overs.
    pub handovers: u64,
    /// Deleted schedules nothing named any more.
    pub schedules: u64,
    /// The batch reached its limit: another may find more to delete.
    pub full: bool,
}
