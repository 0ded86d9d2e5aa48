//! History retention on PostgreSQL, as SQLite's: a bounded number of old finished tasks per
//! call, with their attempts and output (cascade), events and audit entries. The highest ids
//! go to `id_marks` first, so the ids of pruned rows are never handed out again.

use postgres::Transaction;

use crate::model::TaskState;
use crate::store::rows::signed;
use crate::store::{Pruned, Result};

pub(super) fn prune_finished(
    tx: &mut Transaction<'_>,
    before_ms: u64,
    limit: u32,
) -> Result<Pruned> {
    let terminal: Vec<&str> = TaskState::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect();
    let before = signed(before_ms)?;
    let limit = i64::from(limit);
    tx.batch_execute(
        "UPDATE id_marks SET id = GREATEST(id, (SELECT COALESCE(max(id), 0) FROM tasks))
             WHERE name = 'tasks';
         UPDATE id_marks SET id = GREATEST(id, (SELECT COALESCE(max(id), 0) FROM attempts))
             WHERE name = 'attempts';",
    )?;
    let ids: Vec<i64> = tx
        .query(
            "SELECT id FROM tasks WHERE state = ANY($1) AND updated_ms < $2
             ORDER BY id LIMIT $3",
            &[&terminal, &before, &limit],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut pruned = Pruned::default();
    for id in &ids {
        pruned.events += tx.execute(
            "DELETE FROM events WHERE attempt IN (SELECT id FROM attempts WHERE task_id = $1)",
            &[id],
        )?;
        tx.execute(
            "DELETE FROM audit WHERE subject = $1",
            &[&format!("task/{id}")],
        )?;
        // Attempts and their output follow by `ON DELETE CASCADE`.
        pruned.tasks += tx.execute("DELETE FROM tasks WHERE id = $1", &[id])?;
    }
    // Events that name no attempt (refused commands), old and acknowledged.
    pruned.events += tx.execute(
        "DELETE FROM events WHERE ctid IN (
             SELECT e.ctid FROM events e JOIN agents a ON a.id = e.agent_id
             WHERE e.attempt IS NULL AND e.received_ms < $1 AND e.seq <= a.last_seq_acked
             LIMIT $2)",
        &[&before, &limit],
    )?;
    Ok(pruned)
}
