//! History retention in SQLite: finished tasks whose last change is older than a cutoff go,
//! with their attempts, output (by the foreign keys' cascade), events and audit entries, a
//! bounded number per call so the master's loop is never held long.

use rusqlite::params;

use super::SqliteStore;
use crate::model::TaskState;
use crate::store::{Pruned, Result};

impl SqliteStore {
    pub(super) fn prune_finished(&self, before_ms: u64, limit: u32) -> Result<Pruned> {
        let terminal: Vec<&str> = TaskState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        let states = terminal
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        self.atomically(|s| {
            let ids: Vec<i64> = s.collect(
                &format!(
                    "SELECT id FROM tasks WHERE state IN ({states}) AND updated_ms < ?1
                     ORDER BY id LIMIT ?2"
                ),
                params![before_ms as i64, limit],
                |r| r.get(0),
            )?;
            let mut pruned = Pruned::default();
            for id in &ids {
                pruned.events += s.conn.execute(
                    "DELETE FROM events WHERE attempt IN
                         (SELECT id FROM attempts WHERE task_id = ?1)",
                    [id],
                )? as u64;
                s.conn.execute(
                    "DELETE FROM audit WHERE subject = ?1",
                    [format!("task/{id}")],
                )?;
                // Attempts and their output follow by `ON DELETE CASCADE`.
                pruned.tasks += s.conn.execute("DELETE FROM tasks WHERE id = ?1", [id])? as u64;
            }
            // Events that name no attempt (refused commands), old and acknowledged.
            pruned.events += s.conn.execute(
                "DELETE FROM events WHERE rowid IN (
                     SELECT e.rowid FROM events e JOIN agents a ON a.id = e.agent_id
                     WHERE e.attempt IS NULL AND e.received_ms < ?1 AND e.seq <= a.last_seq_acked
                     LIMIT ?2)",
                params![before_ms as i64, limit],
            )? as u64;
            Ok(pruned)
        })
    }
}
