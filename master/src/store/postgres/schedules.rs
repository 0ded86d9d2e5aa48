//! Schedules, hand-overs and occurrence tasks on PostgreSQL, as SQLite's: their writes
//! (inside [`Store::apply`]'s transaction, times from the commit's clock), the reads the HTTP
//! API makes, and their part of the snapshot. A hand-over's ids are reserved in `id_marks` as
//! it is stored.
//!
//! [`Store::apply`]: crate::store::Store::apply

use postgres::GenericClient;

use crate::model::{Handover, OccurrenceRef, Schedule, ScheduleId, Task, TaskState};
use crate::store::checks::{
    check_handover, check_schedule, check_schedule_over, ids_taken, name_taken, not_found,
    occurrence_taken,
};
use crate::store::rows::{
    self, Columns, HANDOVER_COLUMNS, SCHEDULE_COLUMNS, TASK_COLUMNS, key, signed, to_json,
};
use crate::store::{Page, Result};

use super::decode;

/// Inserts or replaces (by id) a schedule, stamped `now`. Refused: a live name another live
/// schedule has, an older version than stored, undeleting.
pub(super) fn put_schedule(c: &mut impl GenericClient, s: &Schedule, now: u64) -> Result<()> {
    check_schedule(s)?;
    let id = signed(s.id)?;
    if let Some(row) = c.query_opt(
        "SELECT version, deleted FROM schedules WHERE id = $1",
        &[&id],
    )? {
        check_schedule_over(s, row.int(0)?, row.flag(1)?)?;
    }
    if !s.deleted {
        if let Some(row) = c.query_opt(
            "SELECT id FROM schedules WHERE name = $1 AND deleted = 0 AND id <> $2",
            &[&s.name, &id],
        )? {
            return Err(name_taken(s, row.int(0)?));
        }
    }
    c.execute(
        &format!(
            "INSERT INTO schedules ({SCHEDULE_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 version = excluded.version, calendar = excluded.calendar,
                 task = excluded.task, missed = excluded.missed,
                 late_ms = excluded.late_ms, paused = excluded.paused,
                 deleted = excluded.deleted, updated_ms = excluded.updated_ms"
        ),
        &[
            &id,
            &s.name,
            &i64::from(s.version),
            &to_json(&s.calendar)?,
            &to_json(&s.task)?,
            &s.missed.as_str(),
            &signed(s.late_ms)?,
            &i64::from(s.paused),
            &i64::from(s.deleted),
            &signed(now)?,
        ],
    )?;
    Ok(())
}

/// Inserts or replaces (by task id) a hand-over, stamped `now`, and reserves its ids in
/// `id_marks`. A new one's ids must be free.
pub(super) fn put_handover(c: &mut impl GenericClient, h: &Handover, now: u64) -> Result<()> {
    let (top_task, top_attempt) = check_handover(h)?;
    if !schedule_exists(c, h.schedule)? {
        return Err(not_found("schedule", h.schedule));
    }
    let task = signed(h.task)?;
    let stored = c
        .query_opt("SELECT 1 FROM handovers WHERE task = $1", &[&task])?
        .is_some();
    if !stored {
        let ranges = [
            ("tasks", "task", h.task, top_task),
            ("attempts", "attempt", h.attempt, top_attempt),
        ];
        for (table, what, first, top) in ranges {
            let row = c.query_one(
                &format!("SELECT min(id) FROM {table} WHERE id BETWEEN $1 AND $2"),
                &[&signed(first)?, &signed(top)?],
            )?;
            if let Some(id) = row.opt_int::<u64>(0)? {
                return Err(ids_taken(h, what, id));
            }
        }
    }
    c.execute(
        &format!(
            "INSERT INTO handovers ({HANDOVER_COLUMNS}, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (task) DO UPDATE SET attempt = excluded.attempt,
                 schedule_id = excluded.schedule_id, version = excluded.version,
                 agent_id = excluded.agent_id, runs = excluded.runs,
                 state = excluded.state, updated_ms = excluded.updated_ms"
        ),
        &[
            &task,
            &signed(h.attempt)?,
            &signed(h.schedule)?,
            &i64::from(h.version),
            &h.agent,
            &to_json(&h.runs)?,
            &h.state.as_str(),
            &signed(now)?,
        ],
    )?;
    for (name, top) in [("tasks", top_task), ("attempts", top_attempt)] {
        c.execute(
            "UPDATE id_marks SET id = GREATEST(id, $2) WHERE name = $1",
            &[&name, &signed(top)?],
        )?;
    }
    Ok(())
}

/// What a new task running occurrence `o` needs: a stored schedule, and no task for the
/// occurrence yet (every occurrence runs once; the unique index holds it too). Records the
/// occurrence as its schedule's latest if it is.
pub(super) fn claim_occurrence(c: &mut impl GenericClient, o: OccurrenceRef) -> Result<()> {
    if !schedule_exists(c, o.schedule)? {
        return Err(not_found("schedule", o.schedule));
    }
    let (schedule, at_ms) = (signed(o.schedule)?, signed(o.at_ms)?);
    if let Some(row) = c.query_opt(
        "SELECT id FROM tasks WHERE occurrence_schedule = $1 AND occurrence_at_ms = $2",
        &[&schedule, &at_ms],
    )? {
        return Err(occurrence_taken(o, row.int(0)?));
    }
    c.execute(
        "UPDATE schedules SET last_occurrence_ms = GREATEST(last_occurrence_ms, $2)
         WHERE id = $1",
        &[&schedule, &at_ms],
    )?;
    Ok(())
}

fn schedule_exists(c: &mut impl GenericClient, id: ScheduleId) -> Result<bool> {
    let row = c.query_one(
        "SELECT EXISTS (SELECT 1 FROM schedules WHERE id = $1)",
        &[&key(id)],
    )?;
    Ok(row.try_get(0)?)
}

// --- reads ---

pub(super) fn schedules(c: &mut impl GenericClient, page: Page) -> Result<Vec<Schedule>> {
    let rows = c.query(
        &format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE deleted = 0 AND id > $1
             ORDER BY id LIMIT $2"
        ),
        &[&key(page.after.unwrap_or(0)), &i64::from(page.limit)],
    )?;
    decode(rows, rows::schedule)
}

pub(super) fn schedule(c: &mut impl GenericClient, name: &str) -> Result<Option<Schedule>> {
    let row = c.query_opt(
        &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = $1 AND deleted = 0"),
        &[&name],
    )?;
    row.as_ref().map(rows::schedule).transpose()
}

pub(super) fn schedule_by_id(
    c: &mut impl GenericClient,
    id: ScheduleId,
) -> Result<Option<Schedule>> {
    let row = c.query_opt(
        &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1"),
        &[&key(id)],
    )?;
    row.as_ref().map(rows::schedule).transpose()
}

pub(super) fn handovers(c: &mut impl GenericClient, schedule: ScheduleId) -> Result<Vec<Handover>> {
    let rows = c.query(
        &format!(
            "SELECT {HANDOVER_COLUMNS} FROM handovers WHERE schedule_id = $1 ORDER BY task DESC"
        ),
        &[&key(schedule)],
    )?;
    decode(rows, rows::handover)
}

/// The hand-overs not ended, by task id.
pub(super) fn open_handovers(c: &mut impl GenericClient) -> Result<Vec<Handover>> {
    let rows = c.query(
        &format!("SELECT {HANDOVER_COLUMNS} FROM handovers WHERE state <> 'ended' ORDER BY task"),
        &[],
    )?;
    decode(rows, rows::handover)
}

pub(super) fn occurrence_tasks(
    c: &mut impl GenericClient,
    schedule: ScheduleId,
    page: Page,
) -> Result<Vec<Task>> {
    let rows = c.query(
        &format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE occurrence_schedule = $1 AND id > $2
             ORDER BY id LIMIT $3"
        ),
        &[
            &key(schedule),
            &key(page.after.unwrap_or(0)),
            &i64::from(page.limit),
        ],
    )?;
    decode(rows, rows::task)
}

pub(super) fn latest_occurrence_tasks(
    c: &mut impl GenericClient,
    schedule: ScheduleId,
    limit: u32,
) -> Result<Vec<Task>> {
    let rows = c.query(
        &format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE occurrence_schedule = $1
             ORDER BY id DESC LIMIT $2"
        ),
        &[&key(schedule), &i64::from(limit)],
    )?;
    decode(rows, rows::task)
}

pub(super) fn occurrence_counts(c: &mut impl GenericClient) -> Result<Vec<(TaskState, u64)>> {
    c.query(
        r#"SELECT state, COUNT(*) FROM tasks WHERE occurrence_schedule IS NOT NULL
           GROUP BY state ORDER BY state COLLATE "C""#,
        &[],
    )?
    .iter()
    .map(|r| Ok((r.word(0, "task state", TaskState::parse)?, r.int(1)?)))
    .collect()
}

/// The occurrence tasks above the lowest id of a hand-over not ended.
pub(super) fn adopted(c: &mut impl GenericClient) -> Result<Vec<u64>> {
    c.query(
        "SELECT id FROM tasks WHERE occurrence_schedule IS NOT NULL
         AND id > (SELECT MIN(task) FROM handovers WHERE state <> 'ended') ORDER BY id",
        &[],
    )?
    .iter()
    .map(|r| r.int(0))
    .collect()
}

/// Per schedule not deleted, the latest occurrence a task was stored for.
pub(super) fn last_occurrences(c: &mut impl GenericClient) -> Result<Vec<(ScheduleId, u64)>> {
    c.query(
        "SELECT id, last_occurrence_ms FROM schedules
         WHERE deleted = 0 AND last_occurrence_ms IS NOT NULL ORDER BY id",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.int(1)?)))
    .collect()
}
