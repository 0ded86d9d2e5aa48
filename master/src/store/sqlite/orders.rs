//! Workflows and orders in SQLite: their writes (inside [`Store::apply`]'s transaction), the
//! reads the HTTP API makes, and their part of the snapshot.
//!
//! Their times are the commit's wall clock, as a task's are: a new version's `created_ms`, a
//! new order's `created_ms` and `updated_ms`, an order's `updated_ms` when its state changes
//! (the times in the core's values are not read).
//!
//! [`Store::apply`]: crate::store::Store::apply

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::rows::{order_row, step_task_row, task_row, workflow_row};
use crate::model::{Order, OrderId, OrderState, StepTask, Task, Workflow};
use crate::store::checks::{check_order, check_workflow, found, not_found, version_exists};
use crate::store::rows::{
    ORDER_COLUMNS, STEP_TASK_COLUMNS, TASK_COLUMNS, WORKFLOW_COLUMNS, key, to_json,
};
use crate::store::{Page, Result};

impl SqliteStore {
    /// Stores a new workflow version, created `now` (the commit's clock); one already stored
    /// is refused (versions never change).
    pub(super) fn insert_workflow(&self, w: &Workflow, now: u64) -> Result<()> {
        check_workflow(w)?;
        let n = self.conn.execute(
            "INSERT INTO workflows (name, version, steps, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name, version) DO NOTHING",
            params![w.name, w.version, to_json(&w.steps)?, now],
        )?;
        if n == 0 {
            return Err(version_exists(w));
        }
        Ok(())
    }

    /// Stores a new order under the id the core chose, created and updated `now` (the
    /// commit's clock); its workflow version must be stored.
    pub(super) fn insert_order(&self, o: &Order, now: u64) -> Result<()> {
        check_order(o)?;
        let known: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM workflows WHERE name = ?1 AND version = ?2)",
            params![o.workflow, o.version],
            |r| r.get(0),
        )?;
        if !known {
            return Err(not_found(
                "workflow version",
                format!("{} v{}", o.workflow, o.version),
            ));
        }
        self.conn.execute(
            &format!("INSERT INTO orders ({ORDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![o.id, o.workflow, o.version, o.state, o.reason, now, now],
        )?;
        Ok(())
    }

    /// Sets an order's state and reason, stamped `now` (the commit's clock).
    pub(super) fn set_order_state(
        &self,
        id: OrderId,
        state: OrderState,
        reason: Option<&str>,
        now: u64,
    ) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE orders SET state = ?2, reason = ?3, updated_ms = ?4 WHERE id = ?1",
            params![key(id), state, reason, now],
        )?;
        found(n, "order", id)
    }

    /// Whether order `id` is stored (a step's task must name a stored order).
    pub(super) fn order_exists(&self, id: OrderId) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT 1 FROM orders WHERE id = ?1)", id)
    }
}

// --- reads ---

pub(super) fn all_workflows(s: &SqliteStore) -> Result<Vec<Workflow>> {
    s.collect(
        &format!("SELECT {WORKFLOW_COLUMNS} FROM workflows ORDER BY name, version"),
        [],
        workflow_row,
    )?
    .into_iter()
    .collect()
}

pub(super) fn latest_workflows(s: &SqliteStore) -> Result<Vec<Workflow>> {
    s.collect(
        &format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows w
             WHERE version = (SELECT max(version) FROM workflows WHERE name = w.name)
             ORDER BY name"
        ),
        [],
        workflow_row,
    )?
    .into_iter()
    .collect()
}

pub(super) fn workflow(
    s: &SqliteStore,
    name: &str,
    version: Option<u32>,
) -> Result<Option<Workflow>> {
    s.conn
        .prepare_cached(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows
             WHERE name = ?1 AND (?2 IS NULL OR version = ?2)
             ORDER BY version DESC LIMIT 1"
        ))?
        .query_row(params![name, version], workflow_row)
        .optional()?
        .transpose()
}

pub(super) fn workflow_versions(s: &SqliteStore, name: &str) -> Result<Vec<u32>> {
    s.collect(
        "SELECT version FROM workflows WHERE name = ?1 ORDER BY version",
        [name],
        |r| r.get(0),
    )
}

pub(super) fn orders(s: &SqliteStore, page: Page, state: Option<OrderState>) -> Result<Vec<Order>> {
    s.collect(
        &format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id > ?1 AND (?3 IS NULL OR state = ?3)
             ORDER BY id LIMIT ?2"
        ),
        params![key(page.after.unwrap_or(0)), page.limit, state],
        order_row,
    )?
    .into_iter()
    .collect()
}

pub(super) fn running_orders(s: &SqliteStore) -> Result<Vec<Order>> {
    orders(s, Page::ALL, Some(OrderState::Running))
}

pub(super) fn order(s: &SqliteStore, id: OrderId) -> Result<Option<Order>> {
    s.conn
        .prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))?
        .query_row([key(id)], order_row)
        .optional()?
        .transpose()
}

pub(super) fn order_tasks(s: &SqliteStore, id: OrderId) -> Result<Vec<Task>> {
    s.collect(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE order_id = ?1 ORDER BY order_step, id"),
        [key(id)],
        task_row,
    )?
    .into_iter()
    .collect()
}

pub(super) fn order_counts(s: &SqliteStore) -> Result<Vec<(OrderState, u64)>> {
    s.collect(
        "SELECT state, COUNT(*) FROM orders GROUP BY state ORDER BY state",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Every task of a running order, finished ones too, by order, step and id.
pub(super) fn step_tasks(s: &SqliteStore) -> Result<Vec<StepTask>> {
    s.collect(
        &format!(
            "SELECT {STEP_TASK_COLUMNS} FROM tasks
             WHERE order_id IN (SELECT id FROM orders WHERE state = 'running')
             ORDER BY order_id, order_step, id"
        ),
        [],
        step_task_row,
    )?
    .into_iter()
    .collect()
}
