//! What both backends check before they write, and small helpers of their writes: ids,
//! a task no agent would accept, a cluster listing a member twice, rows that were not there.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tether_core::message::TaskRef;
use tether_core::topic::validate_id;

use crate::model::{Cluster, NewTask, TaskId, build_spec};
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

pub(crate) fn not_found(what: &'static str, key: impl fmt::Display) -> StoreError {
    StoreError::NotFound {
        what,
        key: key.to_string(),
    }
}

/// Refuses what no agent would accept (the agent's own `TaskSpec::validate` rules and the
/// wire's size limits), and ids a database cannot hold.
pub(crate) fn check_task(id: TaskId, task: &NewTask) -> Result<()> {
    if id == 0 || i64::try_from(id).is_err() {
        return Err(StoreError::Invalid(format!("task id {id} out of range")));
    }
    check_id(&format!("{} name", task.target.kind()), task.target.name())?;
    task.policy.validate()?;
    build_spec(
        TaskRef {
            task: id,
            attempt: 0,
        },
        &task.argv,
        &task.env,
        &task.cwd,
        &task.policy,
        task.start_at_ms,
    )?;
    Ok(())
}

pub(crate) fn check_attempt(id: u64, agent: &str) -> Result<()> {
    check_id("agent id", agent)?;
    if id == 0 || i64::try_from(id).is_err() {
        return Err(StoreError::Invalid(format!("attempt id {id} out of range")));
    }
    Ok(())
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
