//! The reads of the PostgreSQL store: the snapshot a restarted core is rebuilt from, and the
//! lists the API serves. Text keys are ordered `COLLATE "C"` (byte order, as SQLite orders
//! them), whatever the database's collation.

use postgres::GenericClient;

use crate::core::Snapshot;
use crate::model::{
    Agent, Attempt, AttemptId, Cluster, ClusterMode, OrderState, OutputChunk, Profile, StoredEvent,
    Task, TaskId,
};
use crate::store::rows::{self, Columns, parse_stream, signed};
use crate::store::{Page, Result, StoreError};

use super::{decode, orders, schedules};

pub(super) fn snapshot(c: &mut impl GenericClient) -> Result<Snapshot> {
    let mut agents = Vec::new();
    for agent in self::agents(c)? {
        let above = event_seqs_above(c, &agent.id, agent.last_seq_acked)?;
        agents.push((agent, above));
    }
    let mut tasks = Vec::new();
    for task in tasks_to_restore(c)? {
        let attempts = self::attempts(c, task.id)?;
        tasks.push((task, attempts));
    }
    let kill_requests = c
        .query("SELECT task_id FROM kill_requests ORDER BY task_id", &[])?
        .iter()
        .map(|r| r.int(0))
        .collect::<Result<Vec<TaskId>>>()?;
    Ok(Snapshot {
        agents,
        clusters: clusters(c)?,
        profiles: profiles(c)?,
        tasks,
        kill_requests,
        next_task: next_id(c, "tasks")?,
        next_attempt: next_id(c, "attempts")?,
        agent_keys: agent_keys(c)?,
        workflows: orders::all_workflows(c)?,
        orders: orders::orders(c, Page::ALL, Some(OrderState::Running))?,
        step_tasks: orders::step_tasks(c)?,
        next_order: next_id(c, "orders")?,
        schedules: schedules::schedules(c, Page::ALL)?,
        handovers: schedules::open_handovers(c)?,
        last_occurrences: schedules::last_occurrences(c)?,
        adopted: schedules::adopted(c)?,
        next_schedule: next_id(c, "schedules")?,
    })
}

/// Above every id ever stored in `table` (pruned rows included: their mark stays).
fn next_id(c: &mut impl GenericClient, table: &str) -> Result<u64> {
    let row = c.query_one(
        &format!(
            "SELECT GREATEST((SELECT id FROM id_marks WHERE name = $1),
                             (SELECT COALESCE(max(id), 0) FROM {table}))"
        ),
        &[&table],
    )?;
    Ok(row.int::<u64>(0)? + 1)
}

/// Tasks not finished, and finished ones with an attempt that may still report (as SQLite's).
fn tasks_to_restore(c: &mut impl GenericClient) -> Result<Vec<Task>> {
    let rows = c.query(
        &format!(
            "SELECT {} FROM tasks
             WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'killed', 'lost')
                OR id IN (SELECT task_id FROM attempts
                          WHERE state NOT IN ('rejected', 'finished', 'cancelled'))
             ORDER BY id",
            rows::TASK_COLUMNS
        ),
        &[],
    )?;
    decode(rows, rows::task)
}

fn event_seqs_above(c: &mut impl GenericClient, agent: &str, seq: u64) -> Result<Vec<u64>> {
    c.query(
        "SELECT seq FROM events WHERE agent_id = $1 AND seq > $2 ORDER BY seq",
        &[&agent, &signed(seq)?],
    )?
    .iter()
    .map(|r| r.int(0))
    .collect()
}

fn agent_keys(c: &mut impl GenericClient) -> Result<Vec<(String, [u8; 32])>> {
    c.query(
        r#"SELECT agent_id, key FROM agent_keys ORDER BY agent_id COLLATE "C""#,
        &[],
    )?
    .iter()
    .map(|r| {
        let id: String = r.try_get(0)?;
        let key: Vec<u8> = r.try_get(1)?;
        let key = <[u8; 32]>::try_from(key.as_slice())
            .map_err(|_| StoreError::Invalid(format!("agent key of '{id}' is not 32 bytes")))?;
        Ok((id, key))
    })
    .collect()
}

pub(super) fn agents(c: &mut impl GenericClient) -> Result<Vec<Agent>> {
    let rows = c.query(
        &format!(
            r#"SELECT {} FROM agents ORDER BY id COLLATE "C""#,
            rows::AGENT_COLUMNS
        ),
        &[],
    )?;
    decode(rows, rows::agent)
}

pub(super) fn clusters(c: &mut impl GenericClient) -> Result<Vec<Cluster>> {
    let heads = c.query(
        r#"SELECT name, mode, cursor FROM clusters ORDER BY name COLLATE "C""#,
        &[],
    )?;
    let mut out = Vec::with_capacity(heads.len());
    for head in &heads {
        let name = head.text(0)?;
        let members = c
            .query(
                "SELECT agent_id FROM cluster_members WHERE cluster = $1 ORDER BY position",
                &[&name],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<Vec<_>>>()?;
        out.push(Cluster {
            mode: head.word(1, "cluster mode", ClusterMode::parse)?,
            cursor: head.int(2)?,
            name,
            members,
        });
    }
    Ok(out)
}

pub(super) fn profiles(c: &mut impl GenericClient) -> Result<Vec<Profile>> {
    let rows = c.query(
        &format!(
            r#"SELECT {} FROM profiles ORDER BY name COLLATE "C""#,
            rows::PROFILE_COLUMNS
        ),
        &[],
    )?;
    decode(rows, rows::profile)
}

pub(super) fn attempts(c: &mut impl GenericClient, task: TaskId) -> Result<Vec<Attempt>> {
    let rows = c.query(
        &format!(
            "SELECT {} FROM attempts WHERE task_id = $1 ORDER BY id",
            rows::ATTEMPT_COLUMNS
        ),
        &[&signed(task)?],
    )?;
    decode(rows, rows::attempt)
}

pub(super) fn events_of(c: &mut impl GenericClient, agent: &str) -> Result<Vec<StoredEvent>> {
    let rows = c.query(
        &format!(
            "SELECT {} FROM events WHERE agent_id = $1 ORDER BY seq",
            rows::EVENT_COLUMNS
        ),
        &[&agent],
    )?;
    decode(rows, rows::event)
}

pub(super) fn attempt_events(
    c: &mut impl GenericClient,
    attempt: AttemptId,
) -> Result<Vec<StoredEvent>> {
    let rows = c.query(
        &format!(
            r#"SELECT {} FROM events WHERE attempt = $1 ORDER BY agent_id COLLATE "C", seq"#,
            rows::EVENT_COLUMNS
        ),
        &[&signed(attempt)?],
    )?;
    decode(rows, rows::event)
}

pub(super) fn output(c: &mut impl GenericClient, attempt: AttemptId) -> Result<Vec<OutputChunk>> {
    c.query(
        r#"SELECT attempt_id, stream, "offset", bytes FROM output WHERE attempt_id = $1
           ORDER BY stream COLLATE "C" DESC, "offset""#,
        &[&signed(attempt)?],
    )?
    .iter()
    .map(|r| {
        Ok(OutputChunk {
            attempt: r.int(0)?,
            stream: r.word(1, "stream", parse_stream)?,
            offset: r.int(2)?,
            bytes: r.try_get(3)?,
        })
    })
    .collect()
}
