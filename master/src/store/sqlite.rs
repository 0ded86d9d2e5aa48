//! [`SqliteStore`]: the [`Store`] on SQLite (agents, clusters, profiles, tasks, attempts, agent
//! events and task output). The master's core decides; this backend only stores and reads
//! back.
//!
//! Durability: WAL journal with `synchronous = FULL`. The master acknowledges an agent's event
//! only after storing it, and the agent then deletes it from its journal; with `NORMAL` a power
//! cut could roll back transactions that were already acknowledged, and those events would be
//! lost on both sides. FULL costs one fsync of the WAL per commit, which a batch of changes
//! shares ([`Store::apply`] is one transaction).
//!
//! Ids of tasks, attempts, orders and schedules never go back: the core chooses them above
//! [`Snapshot::next_task`], [`Snapshot::next_attempt`], [`Snapshot::next_order`] and
//! [`Snapshot::next_schedule`], which count `AUTOINCREMENT`'s sequence too, so ids of deleted
//! rows (and ids a schedule hand-over reserved) are not issued again. Agents tell a new
//! attempt from a forgotten old one by its id.
//!
//! The values are the [`crate::model`]'s; the `rows` module maps them to rows, `write` applies
//! each change, `orders` keeps workflows and orders, `schedules` schedules, hand-overs and
//! occurrences, `access` tokens and the audit trail, `prune` deletes old history.

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::core::{Change, Snapshot};
use crate::model::{
    Agent, ApiToken, Attempt, AttemptId, AuditEntry, Cluster, ClusterMode, Handover, Order,
    OrderId, OrderState, OutputChunk, Profile, Schedule, ScheduleId, StoredEvent, Task, TaskId,
    TaskState, Workflow,
};
use crate::store::checks::now_ms;
use crate::store::schema::{MIGRATIONS, SCHEMA_VERSION};
use crate::store::{Page, Pruned, Result, Store, StoreError};

mod access;
mod orders;
mod prune;
mod rows;
mod schedules;
mod write;

use crate::store::rows::{
    AGENT_COLUMNS, ATTEMPT_COLUMNS, AUDIT_COLUMNS, EVENT_COLUMNS, PROFILE_COLUMNS, TASK_COLUMNS,
    TOKEN_COLUMNS, parse_stream,
};
use rows::{agent_row, attempt_row, audit_row, event_row, profile_row, task_row, token_row};

/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The master's SQLite database. One connection; `Send` but not `Sync`: share it behind a
/// mutex or own it in one task.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// Nesting depth of [`SqliteStore::atomically`], for savepoint names.
    depth: Cell<u32>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::setup(Connection::open(path)?)
    }

    /// A private in-memory database (no WAL, nothing survives): for tests of other parts.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // journal_mode answers with the mode in effect ("memory" for in-memory databases).
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let store = Self {
            conn,
            depth: Cell::new(0),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        // IMMEDIATE: two masters opening one file at once migrate one after the other.
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Result<()> {
            self.conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (
                     id      INTEGER PRIMARY KEY CHECK (id = 1),
                     version INTEGER NOT NULL
                 );
                 INSERT OR IGNORE INTO schema_version (id, version) VALUES (1, 0);",
            )?;
            let found: u32 =
                self.conn
                    .query_row("SELECT version FROM schema_version", [], |r| r.get(0))?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                self.conn.execute_batch(sql)?;
                self.conn
                    .execute("UPDATE schema_version SET version = ?1", [i as u32 + 1])?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs `f` as one transaction: everything it stores is committed together, or nothing if
    /// it returns an error (or panics). Nests (as savepoints). [`Store::apply`] runs a whole
    /// batch in one, so a redelivered duplicate cannot find an event stored but its effect
    /// missing.
    fn atomically<T>(&self, f: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        let depth = self.depth.get();
        let name = format!("tether_{depth}");
        self.conn.execute_batch(&format!("SAVEPOINT {name}"))?;
        self.depth.set(depth + 1);
        let mut guard = Rollback {
            store: self,
            name: &name,
            armed: true,
        };
        // The outermost RELEASE is the COMMIT: if it fails, the guard rolls back.
        let value = f(self)?;
        self.conn.execute_batch(&format!("RELEASE {name}"))?;
        guard.armed = false;
        self.depth.set(depth);
        Ok(value)
    }

    /// SQLite's `integrity_check`: the problems found, empty when the database is sound.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    /// One agent's stored events in sequence order: what the simulation checks against
    /// what the master was seen to commit.
    pub fn events(&self, agent: &str) -> Result<Vec<StoredEvent>> {
        self.collect(
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE agent_id = ?1 ORDER BY seq"),
            [agent],
            event_row,
        )?
        .into_iter()
        .collect()
    }

    // --- reads for the snapshot ---

    fn agent_keys(&self) -> Result<Vec<(String, [u8; 32])>> {
        let rows = self.collect(
            "SELECT agent_id, key FROM agent_keys ORDER BY agent_id",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        rows.into_iter()
            .map(|(id, key)| {
                let key = <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
                    StoreError::Invalid(format!("agent key of '{id}' is not 32 bytes"))
                })?;
                Ok((id, key))
            })
            .collect()
    }

    fn cluster(&self, name: &str) -> Result<Option<Cluster>> {
        let head = self
            .conn
            .query_row(
                "SELECT mode, cursor FROM clusters WHERE name = ?1",
                [name],
                |r| Ok((r.get::<_, ClusterMode>(0)?, r.get::<_, u64>(1)?)),
            )
            .optional()?;
        let Some((mode, cursor)) = head else {
            return Ok(None);
        };
        let members = self.collect(
            "SELECT agent_id FROM cluster_members WHERE cluster = ?1 ORDER BY position",
            [name],
            |r| r.get(0),
        )?;
        Ok(Some(Cluster {
            name: name.to_owned(),
            mode,
            members,
            cursor,
        }))
    }

    /// The next id of `table` (tasks, attempts, orders, schedules): above every id ever issued (deleted
    /// rows included), so a core that assigns ids itself keeps them increasing across
    /// restarts.
    fn next_id(&self, table: &str) -> Result<u64> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()?;
        let max: Option<i64> =
            self.conn
                .query_row(&format!("SELECT max(id) FROM {table}"), [], |r| r.get(0))?;
        Ok(row_id(seq.unwrap_or(0).max(max.unwrap_or(0)))? + 1)
    }

    /// Tasks a restarted master must hold in memory: those not finished, and finished ones
    /// with an attempt that may still report (open, or given up as lost: a late result must
    /// still be attributed to its attempt).
    fn tasks_to_restore(&self) -> Result<Vec<Task>> {
        self.collect(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'killed', 'lost')
                    OR id IN (SELECT task_id FROM attempts
                              WHERE state NOT IN ('rejected', 'finished', 'cancelled'))
                 ORDER BY id"
            ),
            [],
            task_row,
        )?
        .into_iter()
        .collect()
    }

    /// Sequence numbers of `agent`'s stored events above `seq` (received out of order and not
    /// yet acknowledged): a restarted master must not apply them twice.
    fn event_seqs_above(&self, agent: &str, seq: u64) -> Result<Vec<u64>> {
        self.collect(
            "SELECT seq FROM events WHERE agent_id = ?1 AND seq > ?2 ORDER BY seq",
            params![agent, seq],
            |r| r.get(0),
        )
    }

    /// Tasks with a kill request, in id order.
    fn kill_requests(&self) -> Result<Vec<TaskId>> {
        self.collect(
            "SELECT task_id FROM kill_requests ORDER BY task_id",
            [],
            |r| r.get(0),
        )
    }

    /// Whether the `SELECT EXISTS` query finds a row for `key`.
    fn exists(&self, sql: &str, key: u64) -> Result<bool> {
        Ok(self.conn.query_row(sql, [key], |r| r.get(0))?)
    }

    fn collect<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, f)?;
        Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
    }
}

impl Store for SqliteStore {
    fn apply(&self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.atomically(|s| {
            for change in changes {
                s.apply_one(change, now)?;
            }
            Ok(())
        })
    }

    fn load(&self) -> Result<Snapshot> {
        let mut agents = Vec::new();
        for agent in self.agents()? {
            let above = self.event_seqs_above(&agent.id, agent.last_seq_acked)?;
            agents.push((agent, above));
        }
        let mut tasks = Vec::new();
        for task in self.tasks_to_restore()? {
            let attempts = self.attempts(task.id)?;
            tasks.push((task, attempts));
        }
        Ok(Snapshot {
            agents,
            clusters: self.clusters()?,
            profiles: self.profiles()?,
            tasks,
            kill_requests: self.kill_requests()?,
            next_task: self.next_id("tasks")?,
            next_attempt: self.next_id("attempts")?,
            agent_keys: self.agent_keys()?,
            workflows: orders::all_workflows(self)?,
            orders: orders::running_orders(self)?,
            step_tasks: orders::step_tasks(self)?,
            next_order: self.next_id("orders")?,
            schedules: schedules::schedules(self, Page::ALL)?,
            handovers: schedules::open_handovers(self)?,
            last_occurrences: schedules::last_occurrences(self)?,
            adopted: schedules::adopted(self)?,
            next_schedule: self.next_id("schedules")?,
        })
    }

    /// Counted in the `master_epoch` row. (The runtime passes the wall clock's seconds, so a
    /// master that lost its database still starts above the epochs its agents remember.)
    fn next_epoch(&self, at_least: u32) -> Result<u32> {
        self.atomically(|s| {
            let epoch: u32 = s.conn.query_row(
                "UPDATE master_epoch SET epoch = max(epoch + 1, ?1) RETURNING epoch",
                [at_least],
                |r| r.get(0),
            )?;
            Ok(epoch)
        })
    }

    fn epoch(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("SELECT epoch FROM master_epoch", [], |r| r.get(0))?)
    }

    fn probe_write(&self) -> Result<()> {
        self.atomically(|s| {
            s.conn
                .execute("UPDATE master_epoch SET epoch = epoch", [])?;
            Ok(())
        })
    }

    fn agents(&self) -> Result<Vec<Agent>> {
        self.collect(
            &format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY id"),
            [],
            agent_row,
        )?
        .into_iter()
        .collect()
    }

    fn clusters(&self) -> Result<Vec<Cluster>> {
        let names: Vec<String> =
            self.collect("SELECT name FROM clusters ORDER BY name", [], |r| r.get(0))?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.extend(self.cluster(&name)?);
        }
        Ok(out)
    }

    fn profiles(&self) -> Result<Vec<Profile>> {
        self.collect(
            &format!("SELECT {PROFILE_COLUMNS} FROM profiles ORDER BY name"),
            [],
            profile_row,
        )?
        .into_iter()
        .collect()
    }

    /// Every task, oldest first.
    fn task_counts(&self) -> Result<Vec<(TaskState, u64)>> {
        // `tasks_by_state` makes this an index walk, not a table scan.
        self.collect(
            "SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn tasks(&self, page: Page, state: Option<TaskState>) -> Result<Vec<Task>> {
        let after = i64::try_from(page.after.unwrap_or(0)).unwrap_or(i64::MAX);
        self.collect(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id > ?1 AND (?3 IS NULL OR state = ?3)
                 ORDER BY id LIMIT ?2"
            ),
            params![after, page.limit, state],
            task_row,
        )?
        .into_iter()
        .collect()
    }

    fn task(&self, id: TaskId) -> Result<Option<Task>> {
        self.conn
            .query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                [id],
                task_row,
            )
            .optional()?
            .transpose()
    }

    /// The attempts of one task, in id order.
    fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>> {
        self.collect(
            &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1 ORDER BY id"),
            [task],
            attempt_row,
        )?
        .into_iter()
        .collect()
    }

    /// The events naming one attempt, by agent and sequence.
    fn attempt_events(&self, attempt: AttemptId) -> Result<Vec<StoredEvent>> {
        self.collect(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE attempt = ?1 ORDER BY agent_id, seq"
            ),
            [attempt],
            event_row,
        )?
        .into_iter()
        .collect()
    }

    /// An attempt's output chunks: stdout first, each stream in offset order.
    fn output(&self, attempt: AttemptId) -> Result<Vec<OutputChunk>> {
        self.collect(
            "SELECT attempt_id, stream, offset, bytes FROM output WHERE attempt_id = ?1
             ORDER BY stream DESC, offset",
            [attempt],
            |r| {
                let text: String = r.get(1)?;
                let stream = parse_stream(&text).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        format!("unknown stream '{text}'").into(),
                    )
                })?;
                Ok(OutputChunk {
                    attempt: r.get(0)?,
                    stream,
                    offset: r.get(2)?,
                    bytes: r.get(3)?,
                })
            },
        )
    }

    fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.collect(
            &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name"),
            [],
            token_row,
        )?
        .into_iter()
        .collect()
    }

    fn workflows(&self) -> Result<Vec<Workflow>> {
        orders::latest_workflows(self)
    }

    fn workflow(&self, name: &str, version: Option<u32>) -> Result<Option<Workflow>> {
        orders::workflow(self, name, version)
    }

    fn workflow_versions(&self, name: &str) -> Result<Vec<u32>> {
        orders::workflow_versions(self, name)
    }

    fn orders(&self, page: Page, state: Option<OrderState>) -> Result<Vec<Order>> {
        orders::orders(self, page, state)
    }

    fn order(&self, id: OrderId) -> Result<Option<Order>> {
        orders::order(self, id)
    }

    fn order_tasks(&self, id: OrderId) -> Result<Vec<Task>> {
        orders::order_tasks(self, id)
    }

    fn order_counts(&self) -> Result<Vec<(OrderState, u64)>> {
        orders::order_counts(self)
    }

    fn schedules(&self, page: Page) -> Result<Vec<Schedule>> {
        schedules::schedules(self, page)
    }

    fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        schedules::schedule(self, name)
    }

    fn schedule_by_id(&self, id: ScheduleId) -> Result<Option<Schedule>> {
        schedules::schedule_by_id(self, id)
    }

    fn handovers(&self, schedule: ScheduleId) -> Result<Vec<Handover>> {
        schedules::handovers(self, schedule)
    }

    fn occurrence_tasks(&self, schedule: ScheduleId, page: Page) -> Result<Vec<Task>> {
        schedules::occurrence_tasks(self, schedule, page)
    }

    fn latest_occurrence_tasks(&self, schedule: ScheduleId, limit: u32) -> Result<Vec<Task>> {
        schedules::latest_occurrence_tasks(self, schedule, limit)
    }

    fn occurrence_counts(&self) -> Result<Vec<(TaskState, u64)>> {
        schedules::occurrence_counts(self)
    }

    fn prune_finished(&self, before_ms: u64, limit: u32) -> Result<Pruned> {
        SqliteStore::prune_finished(self, before_ms, limit)
    }

    fn audit(&self, subject: &str) -> Result<Vec<AuditEntry>> {
        self.collect(
            &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE subject = ?1 ORDER BY id"),
            [subject],
            audit_row,
        )?
        .into_iter()
        .collect()
    }
}

/// Rolls a savepoint back if [`SqliteStore::atomically`]'s closure failed or panicked.
struct Rollback<'a> {
    store: &'a SqliteStore,
    name: &'a str,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            let name = self.name;
            // Nothing better to do if this fails: the connection reports it on next use.
            let _ = self
                .store
                .conn
                .execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"));
            self.store
                .depth
                .set(self.store.depth.get().saturating_sub(1));
        }
    }
}

fn row_id(rowid: i64) -> Result<u64> {
    u64::try_from(rowid).map_err(|_| StoreError::Corrupt(format!("negative row id {rowid}")))
}
