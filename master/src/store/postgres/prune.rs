//! History retention on PostgreSQL, as SQLite's: a bounded number of old finished tasks per
//! call, with their attempts and output (cascade), events and audit entries, old finished
//! orders whole, with all their tasks (the budget is `history`'s), ended hand-overs and
//! deleted schedules nothing names any more. The highest ids go to `id_marks` first, so the
//! ids of pruned rows are never handed out again.

use postgres::Transaction;

use crate::store::history::{Budget, finished_orders, finished_tasks};
use crate::store::rows::{Columns, key};
use crate::store::{Pruned, Result};

pub(super) fn prune_finished(
    tx: &mut Transaction<'_>,
    before_ms: u64,
    limit: u32,
) -> Result<Pruned> {
    let tasks = finished_tasks();
    let orders = finished_orders();
    let before = key(before_ms);
    tx.batch_execute(
        "UPDATE id_marks SET id = GREATEST(id, (SELECT COALESCE(max(id), 0) FROM tasks))
             WHERE name = 'tasks';
         UPDATE id_marks SET id = GREATEST(id, (SELECT COALESCE(max(id), 0) FROM attempts))
             WHERE name = 'attempts';
         UPDATE id_marks SET id = GREATEST(id, (SELECT COALESCE(max(id), 0) FROM orders))
             WHERE name = 'orders';
         UPDATE id_marks SET id = GREATEST(id, (SELECT COALESCE(max(id), 0) FROM schedules))
             WHERE name = 'schedules';",
    )?;
    let mut budget = Budget::new(limit);
    let mut pruned = Pruned::default();
    // Tasks of no order (an order's tasks go with it, below).
    let ids: Vec<i64> = tx
        .query(
            "SELECT id FROM tasks WHERE state = ANY($1) AND updated_ms < $2
                 AND order_id IS NULL
             ORDER BY id LIMIT $3",
            &[&tasks, &before, &i64::from(limit)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in &ids {
        prune_task(tx, *id, &mut pruned)?;
    }
    budget.spend(pruned.tasks);
    // Finished orders whose tasks all finished before the cutoff, whole.
    let candidates = tx.query(
        "SELECT o.id, (SELECT count(*) FROM tasks t WHERE t.order_id = o.id)
         FROM orders o
         WHERE o.state = ANY($1) AND o.updated_ms < $2
           AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.order_id = o.id
               AND (t.state <> ALL($3) OR t.updated_ms >= $2))
         ORDER BY o.id LIMIT $4",
        &[&orders, &before, &tasks, &key(budget.room())],
    )?;
    for row in &candidates {
        let order: i64 = row.try_get(0)?;
        if !budget.take_order(row.int(1)?) {
            break;
        }
        let ids: Vec<i64> = tx
            .query(
                "SELECT id FROM tasks WHERE order_id = $1 ORDER BY id",
                &[&order],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in &ids {
            prune_task(tx, *id, &mut pruned)?;
        }
        tx.execute(
            "DELETE FROM audit WHERE subject = $1",
            &[&format!("order/{order}")],
        )?;
        pruned.orders += tx.execute("DELETE FROM orders WHERE id = $1", &[&order])?;
    }
    // Ended hand-overs (their ids stay reserved in `id_marks`), then deleted schedules that no
    // task or hand-over names any more.
    pruned.handovers = tx.execute(
        "DELETE FROM handovers WHERE task IN (
             SELECT task FROM handovers WHERE state = 'ended' AND updated_ms < $1
             ORDER BY task LIMIT $2)",
        &[&before, &i64::from(limit)],
    )?;
    pruned.schedules = tx.execute(
        "DELETE FROM schedules WHERE id IN (
             SELECT id FROM schedules s WHERE deleted = 1 AND updated_ms < $1
               AND NOT EXISTS (SELECT 1 FROM tasks WHERE occurrence_schedule = s.id)
               AND NOT EXISTS (SELECT 1 FROM handovers WHERE schedule_id = s.id)
             ORDER BY id LIMIT $2)",
        &[&before, &i64::from(limit)],
    )?;
    // Events that name no attempt (refused commands), old and acknowledged.
    pruned.events += tx.execute(
        "DELETE FROM events WHERE ctid IN (
             SELECT e.ctid FROM events e JOIN agents a ON a.id = e.agent_id
             WHERE e.attempt IS NULL AND e.received_ms < $1 AND e.seq <= a.last_seq_acked
             LIMIT $2)",
        &[&before, &i64::from(limit)],
    )?;
    Ok(budget.close(pruned))
}

/// One task with its attempts and output (by cascade), events and audit entries.
fn prune_task(tx: &mut Transaction<'_>, id: i64, pruned: &mut Pruned) -> Result<()> {
    pruned.events += tx.execute(
        "DELETE FROM events WHERE attempt IN (SELECT id FROM attempts WHERE task_id = $1)",
        &[&id],
    )?;
    tx.execute(
        "DELETE FROM audit WHERE subject = $1",
        &[&format!("task/{id}")],
    )?;
    // Attempts and their output follow by `ON DELETE CASCADE`.
    pruned.tasks += tx.execute("DELETE FROM tasks WHERE id = $1", &[&id])?;
    Ok(())
}
