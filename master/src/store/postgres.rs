//! [`PostgresStore`]: the [`Store`] on PostgreSQL, for masters that keep their state on an
//! existing database server. Same tables, same semantics as [`super::SqliteStore`]: one
//! transaction per [`Store::apply`], ids that never go back (`id_marks` remembers the highest
//! id pruned), rows decoded by the shared `rows` module.
//!
//! The connection: the synchronous `postgres` client, plain TCP or a unix socket (no TLS to
//! the database this release: keep it on the master's machine or a trusted network). Every
//! call is bounded: connecting by [`CONNECT_TIMEOUT`], each statement by the server's
//! `statement_timeout` ([`STATEMENT_TIMEOUT`]), a dead peer by TCP keepalives. A lost
//! connection fails the call with an error whose [`StoreError::is_unreachable`] is true, and
//! the next call connects again: the master keeps running and retries.
//!
//! Migrations are those of [`super::schema::PG_MIGRATIONS`], applied under a transaction-scoped
//! advisory lock so two masters starting at once migrate one after the other.

use std::cell::RefCell;
use std::time::Duration;

use postgres::{Client, IsolationLevel, NoTls, Row, Transaction};

use crate::core::{Change, Snapshot};
use crate::model::{
    Agent, ApiToken, Attempt, AttemptId, AuditEntry, Cluster, Handover, Order, OrderId, OrderState,
    OutputChunk, Profile, Schedule, ScheduleId, StoredEvent, Task, TaskId, TaskState, Workflow,
};
use crate::store::checks::now_ms;
use crate::store::rows::{self, Columns};
use crate::store::schema::{PG_MIGRATIONS, SCHEMA_VERSION};
use crate::store::{Page, Pruned, Result, Store, StoreError, location};

mod orders;
mod prune;
mod reads;
mod schedules;
mod thread;
mod write;

pub use thread::{CALL_TIMEOUT, PostgresStore};

/// How long connecting may take before the call fails as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one statement may run (or wait for a lock) on the server.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The advisory lock key migrations hold ("tether" in ASCII).
const MIGRATION_LOCK: i64 = 0x7465_7468_6572;

/// One connection, opened again when lost; lives on the store thread ([`PostgresStore`]).
struct Connection {
    config: postgres::Config,
    client: RefCell<Option<Client>>,
}

impl Connection {
    fn open(url: &str) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            StoreError::Invalid(format!(
                "not a PostgreSQL URL ({}): {e}",
                location::redact(url)
            ))
        })?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("tether-master");
        let store = Self {
            config,
            client: RefCell::new(None),
        };
        store.with(migrate)?;
        Ok(store)
    }

    fn connect(&self) -> Result<Client> {
        let mut client = self.config.connect(NoTls)?;
        client.batch_execute(&format!(
            "SET statement_timeout = {}; SET lock_timeout = {}",
            STATEMENT_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis()
        ))?;
        Ok(client)
    }

    /// Runs `f` on the connection, connecting first if there is none (or it was closed);
    /// a call that lost the connection drops it, so the next one connects again.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            *slot = Some(self.connect()?);
        }
        let client = slot.as_mut().expect("connected above");
        let result = f(client);
        if result.as_ref().is_err_and(StoreError::is_unreachable) || client.is_closed() {
            *slot = None;
        }
        result
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back otherwise.
    fn atomically<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let value = f(&mut tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    /// Reads in one snapshot of the database (a consistent view across queries).
    fn reading<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let value = f(&mut tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    fn events(&self, agent: &str) -> Result<Vec<StoredEvent>> {
        self.with(|c| reads::events_of(c, agent))
    }
}

/// Applies the migrations this database lacks, holding the advisory lock.
fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             id      BIGINT PRIMARY KEY CHECK (id = 1),
             version BIGINT NOT NULL
         );
         INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;",
    )?;
    let found: i64 = tx
        .query_one("SELECT version FROM schema_version", &[])?
        .get(0);
    let found =
        u32::try_from(found).map_err(|_| StoreError::Corrupt(format!("schema version {found}")))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE schema_version SET version = $1", &[&(i as i64 + 1)])?;
    }
    tx.commit()?;
    Ok(())
}

impl Columns for Row {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.try_get(i)?)
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
}

/// Decodes every row with one of the shared decoders.
fn decode<T>(rows: Vec<Row>, f: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

impl Store for Connection {
    fn apply(&self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.atomically(|tx| {
            for change in changes {
                write::apply_one(tx, change, now)?;
            }
            Ok(())
        })
    }

    fn load(&self) -> Result<Snapshot> {
        self.reading(|tx| reads::snapshot(tx))
    }

    fn next_epoch(&self, at_least: u32) -> Result<u32> {
        self.atomically(|tx| {
            let epoch: i64 = tx
                .query_one(
                    "UPDATE master_epoch SET epoch = GREATEST(epoch + 1, $1) RETURNING epoch",
                    &[&i64::from(at_least)],
                )?
                .get(0);
            u32::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("epoch {epoch}")))
        })
    }

    fn epoch(&self) -> Result<u32> {
        self.with(|c| {
            let row = c.query_one("SELECT epoch FROM master_epoch", &[])?;
            row.int(0)
        })
    }

    fn probe_write(&self) -> Result<()> {
        self.atomically(|tx| {
            tx.execute("UPDATE master_epoch SET epoch = epoch", &[])?;
            Ok(())
        })
    }

    fn agents(&self) -> Result<Vec<Agent>> {
        self.with(reads::agents)
    }

    fn clusters(&self) -> Result<Vec<Cluster>> {
        self.reading(|tx| reads::clusters(tx))
    }

    fn profiles(&self) -> Result<Vec<Profile>> {
        self.with(reads::profiles)
    }

    fn tasks(&self, page: Page, state: Option<TaskState>) -> Result<Vec<Task>> {
        let after = i64::try_from(page.after.unwrap_or(0)).unwrap_or(i64::MAX);
        let limit = i64::from(page.limit);
        let state = state.map(|s| s.as_str());
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {} FROM tasks WHERE id > $1 AND ($3::TEXT IS NULL OR state = $3)
                     ORDER BY id LIMIT $2",
                    rows::TASK_COLUMNS
                ),
                &[&after, &limit, &state],
            )?;
            decode(rows, rows::task)
        })
    }

    fn task(&self, id: TaskId) -> Result<Option<Task>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.with(|c| {
            let row = c.query_opt(
                &format!("SELECT {} FROM tasks WHERE id = $1", rows::TASK_COLUMNS),
                &[&id],
            )?;
            row.as_ref().map(rows::task).transpose()
        })
    }

    fn task_counts(&self) -> Result<Vec<(TaskState, u64)>> {
        self.with(|c| {
            let rows = c.query(
                r#"SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state COLLATE "C""#,
                &[],
            )?;
            rows.iter()
                .map(|r| Ok((r.word(0, "task state", TaskState::parse)?, r.int(1)?)))
                .collect()
        })
    }

    fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>> {
        self.with(|c| reads::attempts(c, task))
    }

    fn attempt_events(&self, attempt: AttemptId) -> Result<Vec<StoredEvent>> {
        self.with(|c| reads::attempt_events(c, attempt))
    }

    fn output(&self, attempt: AttemptId) -> Result<Vec<OutputChunk>> {
        self.with(|c| reads::output(c, attempt))
    }

    fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    r#"SELECT {} FROM api_tokens ORDER BY name COLLATE "C""#,
                    rows::TOKEN_COLUMNS
                ),
                &[],
            )?;
            decode(rows, rows::token)
        })
    }

    fn audit(&self, subject: &str) -> Result<Vec<AuditEntry>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {} FROM audit WHERE subject = $1 ORDER BY id",
                    rows::AUDIT_COLUMNS
                ),
                &[&subject],
            )?;
            decode(rows, rows::audit)
        })
    }

    fn workflows(&self) -> Result<Vec<Workflow>> {
        self.with(orders::latest_workflows)
    }

    fn workflow(&self, name: &str, version: Option<u32>) -> Result<Option<Workflow>> {
        self.with(|c| orders::workflow(c, name, version))
    }

    fn workflow_versions(&self, name: &str) -> Result<Vec<u32>> {
        self.with(|c| orders::workflow_versions(c, name))
    }

    fn orders(&self, page: Page, state: Option<OrderState>) -> Result<Vec<Order>> {
        self.with(|c| orders::orders(c, page, state))
    }

    fn order(&self, id: OrderId) -> Result<Option<Order>> {
        self.with(|c| orders::order(c, id))
    }

    fn order_tasks(&self, id: OrderId) -> Result<Vec<Task>> {
        self.with(|c| orders::order_tasks(c, id))
    }

    fn order_counts(&self) -> Result<Vec<(OrderState, u64)>> {
        self.with(orders::order_counts)
    }

    fn schedules(&self, page: Page) -> Result<Vec<Schedule>> {
        self.with(|c| schedules::schedules(c, page))
    }

    fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        self.with(|c| schedules::schedule(c, name))
    }

    fn schedule_by_id(&self, id: ScheduleId) -> Result<Option<Schedule>> {
        self.with(|c| schedules::schedule_by_id(c, id))
    }

    fn handovers(&self, schedule: ScheduleId) -> Result<Vec<Handover>> {
        self.with(|c| schedules::handovers(c, schedule))
    }

    fn occurrence_tasks(&self, schedule: ScheduleId, page: Page) -> Result<Vec<Task>> {
        self.with(|c| schedules::occurrence_tasks(c, schedule, page))
    }

    fn latest_occurrence_tasks(&self, schedule: ScheduleId, limit: u32) -> Result<Vec<Task>> {
        self.with(|c| schedules::latest_occurrence_tasks(c, schedule, limit))
    }

    fn occurrence_counts(&self) -> Result<Vec<(TaskState, u64)>> {
        self.with(schedules::occurrence_counts)
    }

    fn prune_finished(&self, before_ms: u64, limit: u32) -> Result<Pruned> {
        self.atomically(|tx| prune::prune_finished(tx, before_ms, limit))
    }
}
