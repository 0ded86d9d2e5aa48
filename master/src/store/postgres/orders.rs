//! Workflows and orders on PostgreSQL, as SQLite's: their writes (inside
//! [`Store::apply`]'s transaction, times from the commit's clock), the reads the HTTP API
//! makes, and their part of the snapshot.
//!
//! [`Store::apply`]: crate::store::Store::apply

use postgres::GenericClient;

use crate::model::{Order, OrderId, OrderState, StepTask, Task, Workflow};
use crate::store::checks::{check_order, check_workflow, found, not_found, version_exists};
use crate::store::rows::{
    self, Columns, ORDER_COLUMNS, STEP_TASK_COLUMNS, TASK_COLUMNS, WORKFLOW_COLUMNS, key, signed,
    to_json,
};
use crate::store::{Page, Result};

use super::decode;

/// Stores a new workflow version, created `now` (the commit's clock); one already stored is
/// refused (versions never change).
pub(super) fn insert_workflow(c: &mut impl GenericClient, w: &Workflow, now: u64) -> Result<()> {
    check_workflow(w)?;
    let n = c.execute(
        "INSERT INTO workflows (name, version, steps, created_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name, version) DO NOTHING",
        &[
            &w.name,
            &i64::from(w.version),
            &to_json(&w.steps)?,
            &signed(now)?,
        ],
    )?;
    if n == 0 {
        return Err(version_exists(w));
    }
    Ok(())
}

/// Stores a new order under the id the core chose, created and updated `now` (the commit's
/// clock); its workflow version must be stored.
pub(super) fn insert_order(c: &mut impl GenericClient, o: &Order, now: u64) -> Result<()> {
    check_order(o)?;
    let known: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM workflows WHERE name = $1 AND version = $2)",
            &[&o.workflow, &i64::from(o.version)],
        )?
        .try_get(0)?;
    if !known {
        return Err(not_found(
            "workflow version",
            format!("{} v{}", o.workflow, o.version),
        ));
    }
    c.execute(
        &format!("INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &signed(o.id)?,
            &o.workflow,
            &i64::from(o.version),
            &o.state.as_str(),
            &o.reason,
            &signed(now)?,
            &signed(now)?,
        ],
    )?;
    Ok(())
}

/// Sets an order's state and reason, stamped `now` (the commit's clock).
pub(super) fn set_order_state(
    c: &mut impl GenericClient,
    id: OrderId,
    state: OrderState,
    reason: Option<&str>,
    now: u64,
) -> Result<()> {
    let n = c.execute(
        "UPDATE orders SET state = $2, reason = $3, updated_ms = $4 WHERE id = $1",
        &[&key(id), &state.as_str(), &reason, &signed(now)?],
    )?;
    found(n as usize, "order", id)
}

// --- reads ---

pub(super) fn all_workflows(c: &mut impl GenericClient) -> Result<Vec<Workflow>> {
    let rows = c.query(
        &format!(r#"SELECT {WORKFLOW_COLUMNS} FROM workflows ORDER BY name COLLATE "C", version"#),
        &[],
    )?;
    decode(rows, rows::workflow)
}

pub(super) fn latest_workflows(c: &mut impl GenericClient) -> Result<Vec<Workflow>> {
    let rows = c.query(
        &format!(
            r#"SELECT {WORKFLOW_COLUMNS} FROM workflows w
               WHERE version = (SELECT max(version) FROM workflows WHERE name = w.name)
               ORDER BY name COLLATE "C""#
        ),
        &[],
    )?;
    decode(rows, rows::workflow)
}

pub(super) fn workflow(
    c: &mut impl GenericClient,
    name: &str,
    version: Option<u32>,
) -> Result<Option<Workflow>> {
    let row = c.query_opt(
        &format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows
             WHERE name = $1 AND ($2::BIGINT IS NULL OR version = $2)
             ORDER BY version DESC LIMIT 1"
        ),
        &[&name, &version.map(i64::from)],
    )?;
    row.as_ref().map(rows::workflow).transpose()
}

pub(super) fn workflow_versions(c: &mut impl GenericClient, name: &str) -> Result<Vec<u32>> {
    c.query(
        "SELECT version FROM workflows WHERE name = $1 ORDER BY version",
        &[&name],
    )?
    .iter()
    .map(|r| r.int(0))
    .collect()
}

pub(super) fn orders(
    c: &mut impl GenericClient,
    page: Page,
    state: Option<OrderState>,
) -> Result<Vec<Order>> {
    let rows = c.query(
        &format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id > $1 AND ($3::TEXT IS NULL OR state = $3)
             ORDER BY id LIMIT $2"
        ),
        &[
            &key(page.after.unwrap_or(0)),
            &i64::from(page.limit),
            &state.map(OrderState::as_str),
        ],
    )?;
    decode(rows, rows::order)
}

pub(super) fn order(c: &mut impl GenericClient, id: OrderId) -> Result<Option<Order>> {
    let row = c.query_opt(
        &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"),
        &[&key(id)],
    )?;
    row.as_ref().map(rows::order).transpose()
}

pub(super) fn order_tasks(c: &mut impl GenericClient, id: OrderId) -> Result<Vec<Task>> {
    let rows = c.query(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE order_id = $1 ORDER BY order_step, id"),
        &[&key(id)],
    )?;
    decode(rows, rows::task)
}

pub(super) fn order_counts(c: &mut impl GenericClient) -> Result<Vec<(OrderState, u64)>> {
    c.query(
        r#"SELECT state, COUNT(*) FROM orders GROUP BY state ORDER BY state COLLATE "C""#,
        &[],
    )?
    .iter()
    .map(|r| Ok((r.word(0, "order state", OrderState::parse)?, r.int(1)?)))
    .collect()
}

/// Every task of a running order, finished ones too, by order, step and id.
pub(super) fn step_tasks(c: &mut impl GenericClient) -> Result<Vec<StepTask>> {
    let rows = c.query(
        &format!(
            "SELECT {STEP_TASK_COLUMNS} FROM tasks
             WHERE order_id IN (SELECT id FROM orders WHERE state = 'running')
             ORDER BY order_id, order_step, id"
        ),
        &[],
    )?;
    decode(rows, rows::step_task)
}
