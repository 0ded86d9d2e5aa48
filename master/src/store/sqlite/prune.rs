//! History retention in SQLite: finished tasks whose last change is older than a cutoff go,
//! with their attempts, output (by the foreign keys' cascade), events and audit entries, and
//! finished orders as old with all their tasks, ended hand-overs and deleted schedules nothing
//! names any more; a bounded number per call so the master's loop is never held long (the
//! budget is `history`'s).

use rusqlite::params;

use super::SqliteStore;
use crate::store::history::{Budget, finished_orders, finished_tasks};
use crate::store::{Pruned, Result};

impl SqliteStore {
    pub(super) fn prune_finished(&self, before_ms: u64, limit: u32) -> Result<Pruned> {
        let tasks = sql_list(&finished_tasks());
        let orders = sql_list(&finished_orders());
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        self.atomically(|s| {
            let mut budget = Budget::new(limit);
            let mut pruned = Pruned::default();
            // Tasks of no order (an order's tasks go with it, below).
            let ids: Vec<i64> = s.collect(
                &format!(
                    "SELECT id FROM tasks WHERE state IN ({tasks}) AND updated_ms < ?1
                         AND order_id IS NULL
                     ORDER BY id LIMIT ?2"
                ),
                params![before, limit],
                |r| r.get(0),
            )?;
            for id in ids {
                s.prune_task(id, &mut pruned)?;
            }
            budget.spend(pruned.tasks);
            // Finished orders whose tasks all finished before the cutoff, whole.
            let candidates: Vec<(i64, u64)> = s.collect(
                &format!(
                    "SELECT o.id, (SELECT count(*) FROM tasks t WHERE t.order_id = o.id)
                     FROM orders o
                     WHERE o.state IN ({orders}) AND o.updated_ms < ?1
                       AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.order_id = o.id
                           AND (t.state NOT IN ({tasks}) OR t.updated_ms >= ?1))
                     ORDER BY o.id LIMIT ?2"
                ),
                params![before, i64::try_from(budget.room()).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for (order, count) in candidates {
                if !budget.take_order(count) {
                    break;
                }
                let ids: Vec<i64> = s.collect(
                    "SELECT id FROM tasks WHERE order_id = ?1 ORDER BY id",
                    [order],
                    |r| r.get(0),
                )?;
                for id in ids {
                    s.prune_task(id, &mut pruned)?;
                }
                s.conn.execute(
                    "DELETE FROM audit WHERE subject = ?1",
                    [format!("order/{order}")],
                )?;
                pruned.orders += s
                    .conn
                    .execute("DELETE FROM orders WHERE id = ?1", [order])?
                    as u64;
            }
            // Ended hand-overs (their ids stay reserved in the sequences), then deleted
            // schedules that no task or hand-over names any more.
            pruned.handovers = s.conn.execute(
                "DELETE FROM handovers WHERE task IN (
                     SELECT task FROM handovers WHERE state = 'ended' AND updated_ms < ?1
                     ORDER BY task LIMIT ?2)",
                params![before, limit],
            )? as u64;
            pruned.schedules = s.conn.execute(
                "DELETE FROM schedules WHERE id IN (
                     SELECT id FROM schedules s WHERE deleted = 1 AND updated_ms < ?1
                       AND NOT EXISTS (SELECT 1 FROM tasks WHERE occurrence_schedule = s.id)
                       AND NOT EXISTS (SELECT 1 FROM handovers WHERE schedule_id = s.id)
                     ORDER BY id LIMIT ?2)",
                params![before, limit],
            )? as u64;
            // Events that name no attempt (refused commands), old and acknowledged.
            pruned.events += s.conn.execute(
                "DELETE FROM events WHERE rowid IN (
                     SELECT e.rowid FROM events e JOIN agents a ON a.id = e.agent_id
                     WHERE e.attempt IS NULL AND e.received_ms < ?1 AND e.seq <= a.last_seq_acked
                     LIMIT ?2)",
                params![before, limit],
            )? as u64;
            Ok(budget.close(pruned))
        })
    }

    /// One task with its attempts and output (by cascade), events and audit entries.
    fn prune_task(&self, id: i64, pruned: &mut Pruned) -> Result<()> {
        pruned.events += self.conn.execute(
            "DELETE FROM events WHERE attempt IN (SELECT id FROM attempts WHERE task_id = ?1)",
            [id],
        )? as u64;
        self.conn.execute(
            "DELETE FROM audit WHERE subject = ?1",
            [format!("task/{id}")],
        )?;
        // Attempts and their output follow by `ON DELETE CASCADE`.
        pruned.tasks += self.conn.execute("DELETE FROM tasks WHERE id = ?1", [id])? as u64;
        Ok(())
    }
}

/// `states` as a SQL list of literals (they are the model's fixed words).
fn sql_list(states: &[&str]) -> String {
    states
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
