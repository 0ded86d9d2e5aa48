//! The master's durable state in SQLite: agents, clusters, profiles, tasks, attempts, agent
//! events and task output. The master's core decides; this module only stores and reads back.
//!
//! Durability: WAL journal with `synchronous = FULL`. The master acknowledges an agent's event
//! only after storing it, and the agent then deletes it from its journal; with `NORMAL` a power
//! cut could roll back transactions that were already acknowledged, and those events would be
//! lost on both sides. FULL costs one fsync of the WAL per commit; group writes with
//! [`Store::atomically`] to share it.
//!
//! Ids of tasks and attempts come from `AUTOINCREMENT`, so they grow and are never reused, even
//! after rows are deleted: agents tell a new attempt from a forgotten old one by its id.
//!
//! The values are the [`crate::model`]'s; this module maps them to rows.

use std::cell::Cell;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};
use serde::{Deserialize, Serialize};
use tether_core::message::{Stream, TaskRef};
use tether_core::topic::validate_id;

use crate::model::{
    Agent, AgentPresence, Attempt, AttemptId, AttemptState, AttemptUpdate, Cluster, ClusterMode,
    Invalid, NewTask, Outcome, OutputChunk, Profile, StoredEvent, Target, Task, TaskId, TaskPolicy,
    TaskState, build_spec, event_kind, on_disconnect_str, parse_on_disconnect,
};

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    Sqlite(rusqlite::Error),
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
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl StoreError {
    /// The disk (or the database's size limit) is full: writes fail until space is freed.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
    }
}

impl From<Invalid> for StoreError {
    fn from(e: Invalid) -> Self {
        Self::Invalid(e.reason)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// Schema migrations; version N means the first N have been applied.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE agents (
        id                TEXT PRIMARY KEY NOT NULL,
        incarnation       INTEGER,
        presence          TEXT NOT NULL DEFAULT 'unknown',
        last_heartbeat_ms INTEGER,
        last_seq_acked    INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE clusters (
        name   TEXT PRIMARY KEY NOT NULL,
        mode   TEXT NOT NULL CHECK (mode IN ('round-robin', 'fixed-priority')),
        cursor INTEGER NOT NULL DEFAULT 0
    );
    -- Members need not be known agents yet: a cluster may be configured before its boards
    -- first connect.
    CREATE TABLE cluster_members (
        cluster  TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        agent_id TEXT NOT NULL,
        PRIMARY KEY (cluster, position),
        UNIQUE (cluster, agent_id)
    );
    CREATE TABLE profiles (
        name                 TEXT PRIMARY KEY NOT NULL,
        on_disconnect        TEXT NOT NULL CHECK (on_disconnect IN ('kill', 'continue')),
        heartbeat_period_ms  INTEGER NOT NULL,
        heartbeat_timeout_ms INTEGER NOT NULL,
        grace_ms             INTEGER NOT NULL,
        max_run_ms           INTEGER NOT NULL,
        output_cap           INTEGER NOT NULL,
        retries              INTEGER NOT NULL,
        lost_after_ms        INTEGER
    );
    CREATE TABLE tasks (
        id                   INTEGER PRIMARY KEY AUTOINCREMENT,
        target_kind          TEXT NOT NULL CHECK (target_kind IN ('agent', 'cluster')),
        target               TEXT NOT NULL,
        argv                 TEXT NOT NULL CHECK (json_valid(argv)),
        env                  TEXT NOT NULL CHECK (json_valid(env)),
        cwd                  TEXT NOT NULL,
        profile              TEXT,
        on_disconnect        TEXT NOT NULL CHECK (on_disconnect IN ('kill', 'continue')),
        heartbeat_period_ms  INTEGER NOT NULL,
        heartbeat_timeout_ms INTEGER NOT NULL,
        grace_ms             INTEGER NOT NULL,
        max_run_ms           INTEGER NOT NULL,
        output_cap           INTEGER NOT NULL,
        retries              INTEGER NOT NULL,
        lost_after_ms        INTEGER,
        start_at_ms          INTEGER,
        state                TEXT NOT NULL,
        outcome              TEXT CHECK (outcome IS NULL OR json_valid(outcome)),
        created_ms           INTEGER NOT NULL,
        updated_ms           INTEGER NOT NULL
    );
    CREATE INDEX tasks_by_state ON tasks(state);
    CREATE TABLE attempts (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id        INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        agent_id       TEXT NOT NULL,
        state          TEXT NOT NULL,
        pid            INTEGER,
        exit           TEXT CHECK (exit IS NULL OR json_valid(exit)),
        kill_cause     TEXT CHECK (kill_cause IS NULL OR json_valid(kill_cause)),
        output_dropped INTEGER NOT NULL DEFAULT 0,
        created_ms     INTEGER NOT NULL,
        started_ms     INTEGER,
        finished_ms    INTEGER
    );
    CREATE INDEX attempts_by_task ON attempts(task_id);
    CREATE INDEX attempts_by_agent ON attempts(agent_id);
    -- No foreign key to attempts: an event is recorded even when it names an attempt this
    -- database does not know (it is evidence, not a reference).
    CREATE TABLE events (
        agent_id    TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        attempt     INTEGER,
        kind        TEXT NOT NULL,
        json        TEXT NOT NULL CHECK (json_valid(json)),
        received_ms INTEGER NOT NULL,
        UNIQUE (agent_id, seq)
    );
    CREATE INDEX events_by_attempt ON events(attempt);
    CREATE TABLE output (
        attempt_id INTEGER NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
        stream     TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
        offset     INTEGER NOT NULL,
        bytes      BLOB NOT NULL,
        PRIMARY KEY (attempt_id, stream, offset)
    );
    ",
    // 2: kill requests outlive a master restart (the agent may be unreachable for days).
    "
    CREATE TABLE kill_requests (
        task_id INTEGER PRIMARY KEY NOT NULL REFERENCES tasks(id) ON DELETE CASCADE
    );
    ",
    // 3: authentication. The master's epoch only grows (agents refuse older epochs), and each
    // agent's MAC key.
    "
    CREATE TABLE master_epoch (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        epoch INTEGER NOT NULL
    );
    INSERT INTO master_epoch (id, epoch) VALUES (1, 0);
    CREATE TABLE agent_keys (
        agent_id   TEXT PRIMARY KEY NOT NULL,
        key        BLOB NOT NULL CHECK (length(key) = 32),
        created_ms INTEGER NOT NULL
    );
    ",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const TASK_COLUMNS: &str = "id, target_kind, target, argv, env, cwd, profile, on_disconnect, \
    heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap, retries, \
    lost_after_ms, start_at_ms, state, outcome, created_ms, updated_ms";

const ATTEMPT_COLUMNS: &str = "id, task_id, agent_id, state, pid, exit, kill_cause, \
    output_dropped, created_ms, started_ms, finished_ms";

const AGENT_COLUMNS: &str = "id, incarnation, presence, last_heartbeat_ms, last_seq_acked";

const PROFILE_COLUMNS: &str = "name, on_disconnect, heartbeat_period_ms, heartbeat_timeout_ms, \
    grace_ms, max_run_ms, output_cap, retries, lost_after_ms";

/// The master's SQLite database. One connection; `Send` but not `Sync`: share it behind a
/// mutex or own it in one task.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// Nesting depth of [`Store::atomically`], for savepoint names.
    depth: Cell<u32>,
}

impl Store {
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

    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))?)
    }

    /// Runs `f` as one transaction: everything it stores is committed together, or nothing if
    /// it returns an error (or panics). Nests. Use it to record an event together with its
    /// effect, so a redelivered duplicate cannot find the event stored but the effect missing.
    pub fn atomically<T>(&self, f: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
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

    // --- agents ---

    /// Inserts or replaces an agent's row.
    pub fn upsert_agent(&self, agent: &Agent) -> Result<()> {
        check_id("agent id", &agent.id)?;
        self.conn.execute(
            "INSERT INTO agents (id, incarnation, presence, last_heartbeat_ms, last_seq_acked)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET incarnation = excluded.incarnation,
                 presence = excluded.presence, last_heartbeat_ms = excluded.last_heartbeat_ms,
                 last_seq_acked = excluded.last_seq_acked",
            params![
                agent.id,
                agent.incarnation,
                agent.presence,
                agent.last_heartbeat_ms,
                agent.last_seq_acked
            ],
        )?;
        Ok(())
    }

    pub fn agent(&self, id: &str) -> Result<Option<Agent>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"),
                [id],
                agent_row,
            )
            .optional()?)
    }

    pub fn agents(&self) -> Result<Vec<Agent>> {
        self.collect(
            &format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY id"),
            [],
            agent_row,
        )
    }

    /// Returns whether the agent existed. Its attempts and events stay (history).
    pub fn delete_agent(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM agents WHERE id = ?1", [id])?
            == 1)
    }

    /// Sets an agent's presence and incarnation (creating its row), keeping its acknowledged
    /// sequence; `heard_ms` stamps its last heartbeat when given.
    pub fn set_agent_presence(
        &self,
        id: &str,
        incarnation: Option<u32>,
        presence: AgentPresence,
        heard_ms: Option<u64>,
    ) -> Result<()> {
        check_id("agent id", id)?;
        self.conn.execute(
            "INSERT INTO agents (id, incarnation, presence, last_heartbeat_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET incarnation = excluded.incarnation,
                 presence = excluded.presence,
                 last_heartbeat_ms = COALESCE(excluded.last_heartbeat_ms, last_heartbeat_ms)",
            params![id, incarnation, presence, heard_ms],
        )?;
        Ok(())
    }

    /// Records that events up to `seq` were acknowledged to `agent`. Never moves backwards;
    /// creates the agent's row if needed.
    pub fn set_last_acked_seq(&self, agent: &str, seq: u64) -> Result<()> {
        check_id("agent id", agent)?;
        self.conn.execute(
            "INSERT INTO agents (id, last_seq_acked) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE
                 SET last_seq_acked = max(last_seq_acked, excluded.last_seq_acked)",
            params![agent, seq],
        )?;
        Ok(())
    }

    /// `None` for an agent the store does not know.
    pub fn last_acked_seq(&self, agent: &str) -> Result<Option<u64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_seq_acked FROM agents WHERE id = ?1",
                [agent],
                |r| r.get(0),
            )
            .optional()?)
    }

    // --- authentication ---

    /// The next master epoch, counted in the store: one more than any before and at least
    /// `at_least`, committed before it is returned. Call once per master start. (The runtime
    /// passes the wall clock's seconds, so a master that lost its database still starts above
    /// the epochs its agents remember.)
    /// A real write that changes nothing: whether the store takes writes again.
    pub fn probe_write(&self) -> Result<()> {
        self.atomically(|s| {
            s.conn
                .execute("UPDATE master_epoch SET epoch = epoch", [])?;
            Ok(())
        })
    }

    /// The last stored epoch.
    pub fn epoch(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("SELECT epoch FROM master_epoch", [], |r| r.get(0))?)
    }

    pub fn next_epoch(&self, at_least: u32) -> Result<u32> {
        self.atomically(|s| {
            let epoch: u32 = s.conn.query_row(
                "UPDATE master_epoch SET epoch = max(epoch + 1, ?1) RETURNING epoch",
                [at_least],
                |r| r.get(0),
            )?;
            Ok(epoch)
        })
    }

    /// Sets (or replaces) an agent's MAC key.
    pub fn set_agent_key(&self, agent: &str, key: &[u8; 32]) -> Result<()> {
        check_id("agent id", agent)?;
        self.conn.execute(
            "INSERT INTO agent_keys (agent_id, key, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(agent_id) DO UPDATE SET key = excluded.key,
                 created_ms = excluded.created_ms",
            params![agent, key.as_slice(), now_ms()],
        )?;
        Ok(())
    }

    pub fn agent_keys(&self) -> Result<Vec<(String, [u8; 32])>> {
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

    // --- clusters ---

    /// Inserts or replaces a cluster, members in the given order.
    pub fn put_cluster(&self, cluster: &Cluster) -> Result<()> {
        check_id("cluster name", &cluster.name)?;
        for (i, member) in cluster.members.iter().enumerate() {
            check_id("cluster member", member)?;
            if cluster.members[..i].contains(member) {
                return Err(StoreError::Invalid(format!(
                    "cluster '{}' lists member '{member}' twice",
                    cluster.name
                )));
            }
        }
        self.atomically(|s| {
            s.conn.execute(
                "INSERT INTO clusters (name, mode, cursor) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET mode = excluded.mode, cursor = excluded.cursor",
                params![cluster.name, cluster.mode, cluster.cursor],
            )?;
            s.conn.execute(
                "DELETE FROM cluster_members WHERE cluster = ?1",
                [&cluster.name],
            )?;
            let mut insert = s.conn.prepare_cached(
                "INSERT INTO cluster_members (cluster, position, agent_id) VALUES (?1, ?2, ?3)",
            )?;
            for (position, member) in cluster.members.iter().enumerate() {
                insert.execute(params![cluster.name, position as u64, member])?;
            }
            Ok(())
        })
    }

    pub fn cluster(&self, name: &str) -> Result<Option<Cluster>> {
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

    pub fn clusters(&self) -> Result<Vec<Cluster>> {
        let names: Vec<String> =
            self.collect("SELECT name FROM clusters ORDER BY name", [], |r| r.get(0))?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.extend(self.cluster(&name)?);
        }
        Ok(out)
    }

    pub fn delete_cluster(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM clusters WHERE name = ?1", [name])?
            == 1)
    }

    pub fn set_cluster_cursor(&self, name: &str, cursor: u64) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE clusters SET cursor = ?2 WHERE name = ?1",
            params![name, cursor],
        )?;
        found(n, "cluster", name)
    }

    // --- profiles ---

    pub fn put_profile(&self, profile: &Profile) -> Result<()> {
        check_id("profile name", &profile.name)?;
        profile.policy.validate()?;
        let p = &profile.policy;
        self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO profiles ({PROFILE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                profile.name,
                on_disconnect_str(p.on_disconnect),
                p.heartbeat_period_ms,
                p.heartbeat_timeout_ms,
                p.grace_ms,
                p.max_run_ms,
                p.output_cap,
                p.retries,
                p.lost_after_ms
            ],
        )?;
        Ok(())
    }

    pub fn profile(&self, name: &str) -> Result<Option<Profile>> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE name = ?1"),
                [name],
                profile_row,
            )
            .optional()?;
        row.transpose()
    }

    pub fn profiles(&self) -> Result<Vec<Profile>> {
        self.collect(
            &format!("SELECT {PROFILE_COLUMNS} FROM profiles ORDER BY name"),
            [],
            profile_row,
        )?
        .into_iter()
        .collect()
    }

    pub fn delete_profile(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM profiles WHERE name = ?1", [name])?
            == 1)
    }

    // --- tasks ---

    /// Stores a new task in state `pending`. Refuses what no agent would accept (the agent's
    /// own [`TaskSpec::validate`] rules and the wire's size limits).
    pub fn insert_task(&self, task: &NewTask) -> Result<TaskId> {
        check_id(&format!("{} name", task.target.kind()), task.target.name())?;
        task.policy.validate()?;
        build_spec(
            TaskRef {
                task: 0,
                attempt: 0,
            },
            &task.argv,
            &task.env,
            &task.cwd,
            &task.policy,
            task.start_at_ms,
        )?;
        let now = now_ms();
        let p = &task.policy;
        self.conn.execute(
            "INSERT INTO tasks (target_kind, target, argv, env, cwd, profile, on_disconnect,
                 heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap,
                 retries, lost_after_ms, start_at_ms, state, outcome, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 NULL, ?17, ?17)",
            params![
                task.target.kind(),
                task.target.name(),
                to_json(&task.argv)?,
                to_json(&task.env)?,
                task.cwd,
                task.profile,
                on_disconnect_str(p.on_disconnect),
                p.heartbeat_period_ms,
                p.heartbeat_timeout_ms,
                p.grace_ms,
                p.max_run_ms,
                p.output_cap,
                p.retries,
                p.lost_after_ms,
                task.start_at_ms,
                TaskState::Pending,
                now
            ],
        )?;
        row_id(self.conn.last_insert_rowid())
    }

    pub fn task(&self, id: TaskId) -> Result<Option<Task>> {
        self.conn
            .query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                [id],
                task_row,
            )
            .optional()?
            .transpose()
    }

    /// Every task, oldest first.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        self.collect(
            &format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"),
            [],
            task_row,
        )?
        .into_iter()
        .collect()
    }

    /// Tasks in one state, oldest first (e.g. the pending ones at start-up).
    pub fn tasks_in_state(&self, state: TaskState) -> Result<Vec<Task>> {
        self.collect(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE state = ?1 ORDER BY id"),
            [state],
            task_row,
        )?
        .into_iter()
        .collect()
    }

    /// Sets a task's state; `outcome` replaces the stored one when given.
    pub fn set_task_state(
        &self,
        id: TaskId,
        state: TaskState,
        outcome: Option<&Outcome>,
    ) -> Result<()> {
        let outcome = outcome.map(to_json).transpose()?;
        let n = self.conn.execute(
            "UPDATE tasks SET state = ?2, outcome = COALESCE(?3, outcome), updated_ms = ?4
             WHERE id = ?1",
            params![id, state, outcome, now_ms()],
        )?;
        found(n, "task", id)
    }

    /// Deletes a task with its attempts and their output (retention). Returns whether it
    /// existed. Its ids are never issued again.
    pub fn delete_task(&self, id: TaskId) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM tasks WHERE id = ?1", [id])? == 1)
    }

    // --- attempts ---

    /// A new attempt of `task` on `agent`, in state `sent`. Its id is greater than every
    /// attempt id issued before.
    pub fn new_attempt(&self, task: TaskId, agent: &str) -> Result<AttemptId> {
        check_id("agent id", agent)?;
        self.atomically(|s| {
            let exists: bool = s.conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)",
                [task],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(not_found("task", task));
            }
            s.conn.execute(
                "INSERT INTO attempts (task_id, agent_id, state, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![task, agent, AttemptState::Sent, now_ms()],
            )?;
            row_id(s.conn.last_insert_rowid())
        })
    }

    pub fn attempt(&self, id: AttemptId) -> Result<Option<Attempt>> {
        self.conn
            .query_row(
                &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = ?1"),
                [id],
                attempt_row,
            )
            .optional()?
            .transpose()
    }

    /// The attempts of one task, in id order.
    pub fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>> {
        self.collect(
            &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1 ORDER BY id"),
            [task],
            attempt_row,
        )?
        .into_iter()
        .collect()
    }

    /// Attempts on one agent that are not in a terminal state (for reconciliation).
    pub fn open_attempts_on(&self, agent: &str) -> Result<Vec<Attempt>> {
        self.collect(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts
                 WHERE agent_id = ?1 AND state NOT IN ('rejected', 'finished', 'lost', 'cancelled')
                 ORDER BY id"
            ),
            [agent],
            attempt_row,
        )?
        .into_iter()
        .collect()
    }

    pub fn set_attempt_state(&self, id: AttemptId, update: &AttemptUpdate) -> Result<()> {
        let exit = update.exit.as_ref().map(to_json).transpose()?;
        let cause = update.kill_cause.as_ref().map(to_json).transpose()?;
        let n = self.conn.execute(
            "UPDATE attempts SET state = ?2,
                 pid = COALESCE(?3, pid),
                 exit = COALESCE(?4, exit),
                 kill_cause = COALESCE(?5, kill_cause),
                 output_dropped = COALESCE(?6, output_dropped),
                 started_ms = COALESCE(?7, started_ms),
                 finished_ms = COALESCE(?8, finished_ms)
             WHERE id = ?1",
            params![
                id,
                update.state,
                update.pid,
                exit,
                cause,
                update.output_dropped,
                update.started_ms,
                update.finished_ms
            ],
        )?;
        found(n, "attempt", id)
    }

    // --- events ---

    /// Stores an agent event unless `(agent, seq)` is already stored. Returns `true` if it was
    /// new, `false` for a duplicate (which changes nothing). `json` must be valid JSON.
    pub fn record_event(
        &self,
        agent: &str,
        seq: u64,
        attempt: Option<AttemptId>,
        kind: &str,
        json: &str,
    ) -> Result<bool> {
        check_id("agent id", agent)?;
        if kind.is_empty() {
            return Err(StoreError::Invalid("event kind is empty".into()));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(json)
            .map_err(|e| StoreError::Invalid(format!("event json is not valid JSON: {e}")))?;
        let n = self.conn.execute(
            "INSERT INTO events (agent_id, seq, attempt, kind, json, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(agent_id, seq) DO NOTHING",
            params![agent, seq, attempt, kind, json, now_ms()],
        )?;
        Ok(n == 1)
    }

    /// [`Self::record_event`] for a decoded protocol event: kind from its variant, attempt from
    /// its task reference, JSON from serde.
    pub fn record_agent_event(
        &self,
        agent: &str,
        event: &tether_core::message::Event,
    ) -> Result<bool> {
        let attempt = event.kind.task().map(|t| t.attempt);
        let json = to_json(event)?;
        self.record_event(agent, event.seq, attempt, event_kind(&event.kind), &json)
    }

    /// One agent's stored events in sequence order.
    pub fn events(&self, agent: &str) -> Result<Vec<StoredEvent>> {
        self.collect(
            "SELECT agent_id, seq, attempt, kind, json, received_ms FROM events
             WHERE agent_id = ?1 ORDER BY seq",
            [agent],
            event_row,
        )
    }

    /// The events naming one attempt, by agent and sequence.
    pub fn attempt_events(&self, attempt: AttemptId) -> Result<Vec<StoredEvent>> {
        self.collect(
            "SELECT agent_id, seq, attempt, kind, json, received_ms FROM events
             WHERE attempt = ?1 ORDER BY agent_id, seq",
            [attempt],
            event_row,
        )
    }

    // --- output ---

    /// Stores one chunk of an attempt's output unless a chunk at that stream and offset is
    /// stored already. Returns whether it was new.
    pub fn append_output(
        &self,
        attempt: AttemptId,
        stream: Stream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<bool> {
        self.atomically(|s| {
            let exists: bool = s.conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM attempts WHERE id = ?1)",
                [attempt],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(not_found("attempt", attempt));
            }
            let n = s.conn.execute(
                "INSERT INTO output (attempt_id, stream, offset, bytes) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(attempt_id, stream, offset) DO NOTHING",
                params![attempt, stream_str(stream), offset, bytes],
            )?;
            Ok(n == 1)
        })
    }

    /// An attempt's output chunks: stdout first, each stream in offset order.
    pub fn output(&self, attempt: AttemptId) -> Result<Vec<OutputChunk>> {
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

    // --- ids chosen by the master core ---

    /// The next task and attempt ids: above every id ever issued (deleted rows included), so
    /// a core that assigns ids itself keeps them increasing across restarts.
    pub fn next_ids(&self) -> Result<(TaskId, AttemptId)> {
        let next = |table: &str| -> Result<u64> {
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
        };
        Ok((next("tasks")?, next("attempts")?))
    }

    /// Stores a new task under an id the caller chose (greater than every id issued, see
    /// [`Self::next_ids`]), in `state`. Same checks as [`Self::insert_task`].
    pub fn insert_task_with_id(&self, id: TaskId, task: &NewTask, state: TaskState) -> Result<()> {
        if id == 0 || i64::try_from(id).is_err() {
            return Err(StoreError::Invalid(format!("task id {id} out of range")));
        }
        check_id(&format!("{} name", task.target.kind()), task.target.name())?;
        task.policy.validate()?;
        build_spec(
            TaskRef {
                task: id,
                attempt: 0,
            },
            &task.argv,
            &task.env,
            &task.cwd,
            &task.policy,
            task.start_at_ms,
        )?;
        let now = now_ms();
        let p = &task.policy;
        self.conn.execute(
            "INSERT INTO tasks (id, target_kind, target, argv, env, cwd, profile, on_disconnect,
                 heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap,
                 retries, lost_after_ms, start_at_ms, state, outcome, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, NULL, ?18, ?18)",
            params![
                id,
                task.target.kind(),
                task.target.name(),
                to_json(&task.argv)?,
                to_json(&task.env)?,
                task.cwd,
                task.profile,
                on_disconnect_str(p.on_disconnect),
                p.heartbeat_period_ms,
                p.heartbeat_timeout_ms,
                p.grace_ms,
                p.max_run_ms,
                p.output_cap,
                p.retries,
                p.lost_after_ms,
                task.start_at_ms,
                state,
                now
            ],
        )?;
        Ok(())
    }

    /// A new attempt under an id the caller chose, in state `sent`.
    pub fn insert_attempt(&self, id: AttemptId, task: TaskId, agent: &str) -> Result<()> {
        check_id("agent id", agent)?;
        if id == 0 || i64::try_from(id).is_err() {
            return Err(StoreError::Invalid(format!("attempt id {id} out of range")));
        }
        self.conn.execute(
            "INSERT INTO attempts (id, task_id, agent_id, state, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, task, agent, AttemptState::Sent, now_ms()],
        )?;
        Ok(())
    }

    /// Tasks a restarted master must hold in memory: those not finished, and finished ones
    /// with an attempt that may still report (open, or given up as lost: a late result must
    /// still be attributed to its attempt).
    pub fn tasks_to_restore(&self) -> Result<Vec<Task>> {
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
    pub fn event_seqs_above(&self, agent: &str, seq: u64) -> Result<Vec<u64>> {
        self.collect(
            "SELECT seq FROM events WHERE agent_id = ?1 AND seq > ?2 ORDER BY seq",
            params![agent, seq],
            |r| r.get(0),
        )
    }

    /// Records that `task` is to be killed (idempotent).
    pub fn request_kill(&self, task: TaskId) -> Result<()> {
        let n = self.conn.execute(
            "INSERT INTO kill_requests (task_id) SELECT id FROM tasks WHERE id = ?1
             ON CONFLICT(task_id) DO NOTHING",
            [task],
        )?;
        if n == 0 && self.task(task)?.is_none() {
            return Err(not_found("task", task));
        }
        Ok(())
    }

    /// Tasks with a kill request, in id order.
    pub fn kill_requests(&self) -> Result<Vec<TaskId>> {
        self.collect(
            "SELECT task_id FROM kill_requests ORDER BY task_id",
            [],
            |r| r.get(0),
        )
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

/// Rolls a savepoint back if [`Store::atomically`]'s closure failed or panicked.
struct Rollback<'a> {
    store: &'a Store,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn check_id(what: &str, id: &str) -> Result<()> {
    validate_id(id)
        .map(drop)
        .map_err(|_| StoreError::Invalid(format!("{what} '{id}': {}", IdRule)))
}

struct IdRule;

impl fmt::Display for IdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("must be 1-32 characters of [A-Za-z0-9._-]")
    }
}

fn found(changed: usize, what: &'static str, key: impl fmt::Display) -> Result<()> {
    if changed == 0 {
        Err(not_found(what, key))
    } else {
        Ok(())
    }
}

fn not_found(what: &'static str, key: impl fmt::Display) -> StoreError {
    StoreError::NotFound {
        what,
        key: key.to_string(),
    }
}

fn row_id(rowid: i64) -> Result<u64> {
    u64::try_from(rowid).map_err(|_| StoreError::Corrupt(format!("negative row id {rowid}")))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("not serializable: {e}")))
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn stream_str(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

fn parse_stream(text: &str) -> Option<Stream> {
    match text {
        "stdout" => Some(Stream::Stdout),
        "stderr" => Some(Stream::Stderr),
        _ => None,
    }
}

fn agent_row(r: &Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        id: r.get(0)?,
        incarnation: r.get(1)?,
        presence: r.get(2)?,
        last_heartbeat_ms: r.get(3)?,
        last_seq_acked: r.get(4)?,
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

fn profile_row(r: &Row<'_>) -> rusqlite::Result<Result<Profile>> {
    let name: String = r.get(0)?;
    Ok(policy_at(r, 1)?.map(|policy| Profile { name, policy }))
}

fn task_row(r: &Row<'_>) -> rusqlite::Result<Result<Task>> {
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

fn attempt_row(r: &Row<'_>) -> rusqlite::Result<Result<Attempt>> {
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

fn event_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        agent_id: r.get(0)?,
        seq: r.get(1)?,
        attempt: r.get(2)?,
        kind: r.get(3)?,
        json: r.get(4)?,
        received_ms: r.get(5)?,
    })
}
