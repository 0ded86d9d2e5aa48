//! Schedules, hand-overs and occurrence tasks in SQLite: their writes (inside
//! [`Store::apply`]'s transaction), the reads the HTTP API makes, and their part of the
//! snapshot.
//!
//! Times are the commit's wall clock: a schedule's and a hand-over's `created_ms` when first
//! stored (kept when replaced), `updated_ms` at every write (the times in the core's values
//! are not read). A hand-over's ids are reserved in `sqlite_sequence` as it is stored, so
//! `load` hands out ids above them whether or not their tasks and attempts were ever stored.
//!
//! [`Store::apply`]: crate::store::Store::apply

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::rows::{handover_row, schedule_row, task_row};
use crate::model::{Handover, OccurrenceRef, Schedule, ScheduleId, Task, TaskId, TaskState};
use crate::store::checks::{
    check_handover, check_schedule, check_schedule_over, ids_taken, name_taken, not_found,
    occurrence_taken,
};
use crate::store::rows::{HANDOVER_COLUMNS, SCHEDULE_COLUMNS, TASK_COLUMNS, key, to_json};
use crate::store::{Page, Result};

impl SqliteStore {
    /// Inserts or replaces (by id) a schedule. Refused: a live name another live schedule
    /// has, an older version than stored, undeleting.
    pub(super) fn put_schedule(&self, s: &Schedule, now: u64) -> Result<()> {
        check_schedule(s)?;
        let stored: Option<(u32, bool)> = self
            .conn
            .query_row(
                "SELECT version, deleted FROM schedules WHERE id = ?1",
                [key(s.id)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((version, deleted)) = stored {
            check_schedule_over(s, version, deleted)?;
        }
        if !s.deleted {
            let other: Option<ScheduleId> = self
                .conn
                .query_row(
                    "SELECT id FROM schedules WHERE name = ?1 AND deleted = 0 AND id <> ?2",
                    params![s.name, key(s.id)],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = other {
                return Err(name_taken(s, other));
            }
        }
        self.conn.execute(
            &format!(
                "INSERT INTO schedules ({SCHEDULE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                     version = excluded.version, calendar = excluded.calendar,
                     task = excluded.task, missed = excluded.missed,
                     late_ms = excluded.late_ms, paused = excluded.paused,
                     deleted = excluded.deleted, updated_ms = excluded.updated_ms"
            ),
            params![
                s.id,
                s.name,
                s.version,
                to_json(&s.calendar)?,
                to_json(&s.task)?,
                s.missed,
                s.late_ms,
                s.paused,
                s.deleted,
                now
            ],
        )?;
        Ok(())
    }

    /// Inserts or replaces (by task id) a hand-over, and reserves its ids: the sequences of
    /// tasks and attempts move past them. A new one's ids must be free.
    pub(super) fn put_handover(&self, h: &Handover, now: u64) -> Result<()> {
        let (top_task, top_attempt) = check_handover(h)?;
        if !self.schedule_exists(h.schedule)? {
            return Err(not_found("schedule", h.schedule));
        }
        let stored = self.exists(
            "SELECT EXISTS (SELECT 1 FROM handovers WHERE task = ?1)",
            h.task,
        )?;
        if !stored {
            let ranges = [
                ("tasks", "task", h.task, top_task),
                ("attempts", "attempt", h.attempt, top_attempt),
            ];
            for (table, what, first, top) in ranges {
                let taken: Option<u64> = self.conn.query_row(
                    &format!("SELECT min(id) FROM {table} WHERE id BETWEEN ?1 AND ?2"),
                    params![first, top],
                    |r| r.get(0),
                )?;
                if let Some(id) = taken {
                    return Err(ids_taken(h, what, id));
                }
            }
        }
        self.conn.execute(
            &format!(
                "INSERT INTO handovers ({HANDOVER_COLUMNS}, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (task) DO UPDATE SET attempt = excluded.attempt,
                     schedule_id = excluded.schedule_id, version = excluded.version,
                     agent_id = excluded.agent_id, runs = excluded.runs,
                     state = excluded.state, updated_ms = excluded.updated_ms"
            ),
            params![
                h.task,
                h.attempt,
                h.schedule,
                h.version,
                h.agent,
                to_json(&h.runs)?,
                h.state,
                now
            ],
        )?;
        self.reserve("tasks", top_task)?;
        self.reserve("attempts", top_attempt)
    }

    /// Moves `table`'s `AUTOINCREMENT` sequence to at least `id` (ids up to it are free to
    /// insert explicitly later, and are never issued by `load`).
    fn reserve(&self, table: &str, id: u64) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?2) WHERE name = ?1",
            params![table, id],
        )?;
        if n == 0 {
            self.conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                params![table, id],
            )?;
        }
        Ok(())
    }

    /// What a new task running occurrence `o` needs: a stored schedule, and no task for the
    /// occurrence yet (every occurrence runs once; the unique index holds it too). Records
    /// the occurrence as its schedule's latest if it is.
    pub(super) fn claim_occurrence(&self, o: OccurrenceRef) -> Result<()> {
        if !self.schedule_exists(o.schedule)? {
            return Err(not_found("schedule", o.schedule));
        }
        let task: Option<TaskId> = self
            .conn
            .query_row(
                "SELECT id FROM tasks WHERE occurrence_schedule = ?1 AND occurrence_at_ms = ?2",
                params![o.schedule, o.at_ms],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(task) = task {
            return Err(occurrence_taken(o, task));
        }
        self.conn.execute(
            "UPDATE schedules SET last_occurrence_ms = max(COALESCE(last_occurrence_ms, ?2), ?2)
             WHERE id = ?1",
            params![o.schedule, o.at_ms],
        )?;
        Ok(())
    }

    fn schedule_exists(&self, id: ScheduleId) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT 1 FROM schedules WHERE id = ?1)", id)
    }
}

// --- reads ---

pub(super) fn schedules(s: &SqliteStore, page: Page) -> Result<Vec<Schedule>> {
    s.collect(
        &format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE deleted = 0 AND id > ?1
             ORDER BY id LIMIT ?2"
        ),
        params![key(page.after.unwrap_or(0)), page.limit],
        schedule_row,
    )?
    .into_iter()
    .collect()
}

pub(super) fn schedule(s: &SqliteStore, name: &str) -> Result<Option<Schedule>> {
    s.conn
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?1 AND deleted = 0"
        ))?
        .query_row([name], schedule_row)
        .optional()?
        .transpose()
}

pub(super) fn schedule_by_id(s: &SqliteStore, id: ScheduleId) -> Result<Option<Schedule>> {
    s.conn
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1"
        ))?
        .query_row([key(id)], schedule_row)
        .optional()?
        .transpose()
}

pub(super) fn handovers(s: &SqliteStore, schedule: ScheduleId) -> Result<Vec<Handover>> {
    s.collect(
        &format!(
            "SELECT {HANDOVER_COLUMNS} FROM handovers WHERE schedule_id = ?1 ORDER BY task DESC"
        ),
        [key(schedule)],
        handover_row,
    )?
    .into_iter()
    .collect()
}

/// The hand-overs not ended, by task id.
pub(super) fn open_handovers(s: &SqliteStore) -> Result<Vec<Handover>> {
    s.collect(
        &format!("SELECT {HANDOVER_COLUMNS} FROM handovers WHERE state <> 'ended' ORDER BY task"),
        [],
        handover_row,
    )?
    .into_iter()
    .collect()
}

pub(super) fn occurrence_tasks(
    s: &SqliteStore,
    schedule: ScheduleId,
    page: Page,
) -> Result<Vec<Task>> {
    s.collect(
        &format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE occurrence_schedule = ?1 AND id > ?2
             ORDER BY id LIMIT ?3"
        ),
        params![key(schedule), key(page.after.unwrap_or(0)), page.limit],
        task_row,
    )?
    .into_iter()
    .collect()
}

pub(super) fn latest_occurrence_tasks(
    s: &SqliteStore,
    schedule: ScheduleId,
    limit: u32,
) -> Result<Vec<Task>> {
    s.collect(
        &format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE occurrence_schedule = ?1
             ORDER BY id DESC LIMIT ?2"
        ),
        params![key(schedule), limit],
        task_row,
    )?
    .into_iter()
    .collect()
}

pub(super) fn occurrence_counts(s: &SqliteStore) -> Result<Vec<(TaskState, u64)>> {
    s.collect(
        "SELECT state, COUNT(*) FROM tasks WHERE occurrence_schedule IS NOT NULL
         GROUP BY state ORDER BY state",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// The occurrence tasks above the lowest id of a hand-over not ended.
pub(super) fn adopted(s: &SqliteStore) -> Result<Vec<u64>> {
    s.collect(
        "SELECT id FROM tasks WHERE occurrence_schedule IS NOT NULL
         AND id > (SELECT MIN(task) FROM handovers WHERE state <> 'ended') ORDER BY id",
        [],
        |r| r.get(0),
    )
}

/// Per schedule not deleted, the latest occurrence a task was stored for.
pub(super) fn last_occurrences(s: &SqliteStore) -> Result<Vec<(ScheduleId, u64)>> {
    s.collect(
        "SELECT id, last_occurrence_ms FROM schedules
         WHERE deleted = 0 AND last_occurrence_ms IS NOT NULL ORDER BY id",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}
