//! What both backends check before they write, and small helpers of their writes: ids,
//! a task no agent would accept, a cluster listing a member twice, a workflow without steps,
//! a hand-over's runs and the ids it reserves, rows that were not there or already are.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tether_core::message::{SCHEDULE_RUNS, TaskRef};
use tether_core::topic::validate_id;

use crate::model::{
    AttemptId, Cluster, Handover, MAX_STEPS, NewTask, OccurrenceRef, Order, Schedule, ScheduleId,
    StepRef, Target, TaskId, TaskPolicy, Workflow, build_spec,
};
use crate::store::{Result, StoreError};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn check_id(what: &str, id: &str) -> Result<()> {
    validate_id(id)
        .map(drop)
        .map_err(|_| StoreError::Invalid(format!("{what} '{id}': {}", IdRule)))
}

pub(crate) struct IdRule;

impl fmt::Display for IdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("must be 1-32 characters of [A-Za-z0-9._-]")
    }
}

pub(crate) fn found(changed: usize, what: &'static str, key: impl fmt::Display) -> Result<()> {
    if changed == 0 {
        Err(not_found(what, key))
    } else {
        Ok(())
    }
}

/// A workflow version that is stored already: versions never change.
pub(crate) fn version_exists(w: &Workflow) -> StoreError {
    StoreError::Invalid(format!(
        "workflow '{}' version {} is stored already",
        w.name, w.version
    ))
}

pub(crate) fn not_found(what: &'static str, key: impl fmt::Display) -> StoreError {
    StoreError::NotFound {
        what,
        key: key.to_string(),
    }
}

/// An id the core chose: from 1, and one the database can hold (a signed 64-bit integer).
pub(crate) fn check_row_id(what: &str, id: u64) -> Result<()> {
    if id == 0 || i64::try_from(id).is_err() {
        return Err(StoreError::Invalid(format!("{what} id {id} out of range")));
    }
    Ok(())
}

/// Refuses what no agent would accept (the agent's own `TaskSpec::validate` rules and the
/// wire's size limits), and ids a database cannot hold.
pub(crate) fn check_task(id: TaskId, task: &NewTask) -> Result<()> {
    check_row_id("task", id)?;
    if let Some(step) = task.order {
        check_step_ref(step)?;
    }
    if let Some(occurrence) = task.occurrence {
        if task.order.is_some() {
            return Err(StoreError::Invalid(format!(
                "task {id} names both an order step and a schedule occurrence"
            )));
        }
        check_occurrence(occurrence)?;
    }
    check_spec(
        id,
        &task.target,
        &task.argv,
        &task.env,
        &task.cwd,
        &task.policy,
        task.start_at_ms,
    )
}

fn check_step_ref(step: StepRef) -> Result<()> {
    check_row_id("order", step.order)?;
    if step.step as usize >= MAX_STEPS {
        return Err(StoreError::Invalid(format!(
            "order {} step {} out of range (at most {MAX_STEPS} steps)",
            step.order, step.step
        )));
    }
    Ok(())
}

/// What an agent checks of a task it is given, with the target's name.
fn check_spec(
    id: TaskId,
    target: &Target,
    argv: &[String],
    env: &[String],
    cwd: &str,
    policy: &TaskPolicy,
    start_at_ms: Option<u64>,
) -> Result<()> {
    check_id(&format!("{} name", target.kind()), target.name())?;
    policy.validate()?;
    build_spec(
        TaskRef {
            task: id,
            attempt: 0,
        },
        argv,
        env,
        cwd,
        policy,
        start_at_ms,
    )?;
    Ok(())
}

fn check_occurrence(o: OccurrenceRef) -> Result<()> {
    check_row_id("schedule", o.schedule)?;
    check_version("schedule", o.schedule, o.version)?;
    if i64::try_from(o.at_ms).is_err() {
        return Err(StoreError::Invalid(format!(
            "schedule {} occurrence at {} ms is out of range",
            o.schedule, o.at_ms
        )));
    }
    Ok(())
}

fn check_version(what: &str, id: ScheduleId, version: u32) -> Result<()> {
    if version == 0 {
        return Err(StoreError::Invalid(format!(
            "{what} {id} version 0: versions count from 1"
        )));
    }
    Ok(())
}

pub(crate) fn check_attempt(id: AttemptId, agent: &str, after: Option<AttemptId>) -> Result<()> {
    check_id("agent id", agent)?;
    check_row_id("attempt", id)?;
    if let Some(after) = after {
        check_row_id("predecessor attempt", after)?;
    }
    Ok(())
}

/// A workflow version: a name like an agent's, a version from 1, 1 to [`MAX_STEPS`] steps, and
/// each step a task an agent would accept (the store keeps what its orders will run).
pub(crate) fn check_workflow(w: &Workflow) -> Result<()> {
    check_id("workflow name", &w.name)?;
    if w.version == 0 {
        return Err(StoreError::Invalid(format!(
            "workflow '{}' version 0: versions count from 1",
            w.name
        )));
    }
    if w.steps.is_empty() || w.steps.len() > MAX_STEPS {
        return Err(StoreError::Invalid(format!(
            "workflow '{}' has {} steps: 1 to {MAX_STEPS} are stored",
            w.name,
            w.steps.len()
        )));
    }
    for (i, step) in w.steps.iter().enumerate() {
        check_spec(
            1,
            &step.target,
            &step.argv,
            &step.env,
            &step.cwd,
            &step.policy,
            None,
        )
        .map_err(|e| StoreError::Invalid(format!("workflow '{}' step {}: {e}", w.name, i + 1)))?;
    }
    Ok(())
}

/// A schedule: a name like an agent's, a version from 1, a late allowance the database can
/// hold, and a task an agent would accept. (Its calendar is the core's to judge: stored as
/// given.)
pub(crate) fn check_schedule(s: &Schedule) -> Result<()> {
    check_row_id("schedule", s.id)?;
    check_id("schedule name", &s.name)?;
    check_version("schedule", s.id, s.version)?;
    if i64::try_from(s.late_ms).is_err() {
        return Err(StoreError::Invalid(format!(
            "schedule '{}' late_ms {} out of range",
            s.name, s.late_ms
        )));
    }
    let t = &s.task;
    check_spec(1, &t.target, &t.argv, &t.env, &t.cwd, &t.policy, None)
        .map_err(|e| StoreError::Invalid(format!("schedule '{}' task: {e}", s.name)))
}

/// The name of a live schedule taken by another.
pub(crate) fn name_taken(s: &Schedule, other: ScheduleId) -> StoreError {
    StoreError::Invalid(format!(
        "schedule name '{}' is taken by schedule {other}: one live schedule per name",
        s.name
    ))
}

/// A write that would take a stored schedule back: an older version, or out of deletion.
pub(crate) fn check_schedule_over(s: &Schedule, stored_version: u32, deleted: bool) -> Result<()> {
    if s.version < stored_version {
        return Err(StoreError::Invalid(format!(
            "schedule {} version {} is older than the stored version {stored_version}",
            s.id, s.version
        )));
    }
    if deleted && !s.deleted {
        return Err(StoreError::Invalid(format!(
            "schedule {} is deleted: a deleted schedule stays deleted",
            s.id
        )));
    }
    Ok(())
}

/// The highest task and attempt ids a hand-over reserves, checked: it reserves `task` and
/// `attempt` themselves and one of each per occurrence (`task + 1 + k` for occurrence `k`),
/// all ids the database can hold. Its runs: 1 to [`SCHEDULE_RUNS`], each of at least one
/// occurrence, spaced by at least 1 ms, in order and within the signed range.
pub(crate) fn check_handover(h: &Handover) -> Result<(TaskId, AttemptId)> {
    check_row_id("hand-over task", h.task)?;
    check_row_id("hand-over attempt", h.attempt)?;
    check_row_id("schedule", h.schedule)?;
    check_version("schedule", h.schedule, h.version)?;
    check_id("agent id", &h.agent)?;
    let bad = |why: String| StoreError::Invalid(format!("hand-over {}: {why}", h.task));
    if h.runs.is_empty() || h.runs.len() > SCHEDULE_RUNS {
        return Err(bad(format!(
            "{} runs: 1 to {SCHEDULE_RUNS} are stored",
            h.runs.len()
        )));
    }
    let mut count: u64 = 0;
    let mut after: Option<u64> = None;
    for (i, run) in h.runs.iter().enumerate() {
        let steps = u64::from(run.count)
            .checked_sub(1)
            .ok_or_else(|| bad(format!("run {} has no occurrence", i + 1)))?;
        if steps > 0 && run.period_ms == 0 {
            return Err(bad(format!("run {} has a period of 0 ms", i + 1)));
        }
        let last = run
            .period_ms
            .checked_mul(steps)
            .and_then(|d| run.first_ms.checked_add(d))
            .filter(|&last| i64::try_from(last).is_ok())
            .ok_or_else(|| bad(format!("run {} ends out of range", i + 1)))?;
        if after.is_some_and(|prev| run.first_ms <= prev) {
            return Err(bad(format!("run {} starts before run {} ends", i + 1, i)));
        }
        after = Some(last);
        count += u64::from(run.count);
    }
    let top = |first: u64, what: &str| {
        first
            .checked_add(count)
            .filter(|&top| i64::try_from(top).is_ok())
            .ok_or_else(|| bad(format!("{what} ids {first}..={first}+{count} out of range")))
    };
    Ok((top(h.task, "task")?, top(h.attempt, "attempt")?))
}

/// A stored task or attempt inside the ids a new hand-over would reserve.
pub(crate) fn ids_taken(h: &Handover, what: &str, id: u64) -> StoreError {
    StoreError::Invalid(format!(
        "hand-over {} would reserve {what} id {id}, which is stored already",
        h.task
    ))
}

/// A second task for one occurrence: every occurrence runs once.
pub(crate) fn occurrence_taken(o: OccurrenceRef, task: TaskId) -> StoreError {
    StoreError::Invalid(format!(
        "schedule {} occurrence at {} ms has task {task} already: every occurrence runs once",
        o.schedule, o.at_ms
    ))
}

pub(crate) fn check_order(o: &Order) -> Result<()> {
    check_row_id("order", o.id)?;
    check_id("workflow name", &o.workflow)
}

pub(crate) fn check_cluster(cluster: &Cluster) -> Result<()> {
    check_id("cluster name", &cluster.name)?;
    for (i, member) in cluster.members.iter().enumerate() {
        check_id("cluster member", member)?;
        if cluster.members[..i].contains(member) {
            return Err(StoreError::Invalid(format!(
                "cluster '{}' lists member '{member}' twice",
                cluster.name
            )));
        }
    }
    Ok(())
}
