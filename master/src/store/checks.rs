//! What both backends check before they write, and small helpers of their writes: ids,
//! a task no agent would accept, a cluster listing a member twice, a workflow without steps,
//! rows that were not there.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tether_core::message::TaskRef;
use tether_core::topic::validate_id;

use crate::model::{
    AttemptId, Cluster, MAX_STEPS, NewTask, Order, StepRef, Target, TaskId, TaskPolicy, Workflow,
    build_spec,
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
