//! The bridge between the core's [`Change`]s and the [`Store`]: applying a batch in one
//! transaction, and reading back the [`Snapshot`] a restarted core is rebuilt from.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::{Change, Snapshot};
use crate::store::{Store, StoreError};

/// Applies one batch of changes as ONE transaction: all or nothing. Publish the batch's
/// messages only after this returned `Ok` (see [`crate::core`]).
pub fn apply(store: &Store, changes: &[Change]) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let now = unix_ms();
    store.atomically(|s| {
        for change in changes {
            apply_one(s, change, now)?;
        }
        Ok(())
    })
}

fn apply_one(s: &Store, change: &Change, now: u64) -> Result<(), StoreError> {
    match change {
        Change::Agent {
            id,
            incarnation,
            presence,
            heard,
        } => s.set_agent_presence(id, *incarnation, *presence, heard.then_some(now)),
        Change::AgentKey { agent, key } => s.set_agent_key(agent, key),
        Change::Event { agent, event } => s.record_agent_event(agent, event).map(drop),
        Change::Output {
            attempt,
            stream,
            offset,
            data,
        } => s.append_output(*attempt, *stream, *offset, data).map(drop),
        Change::Acked { agent, up_to } => s.set_last_acked_seq(agent, *up_to),
        Change::NewTask { id, task, state } => s.insert_task_with_id(*id, task, *state),
        Change::TaskState { id, state, outcome } => s.set_task_state(*id, *state, outcome.as_ref()),
        Change::NewAttempt { id, task, agent } => s.insert_attempt(*id, *task, agent),
        Change::Attempt { id, update } => s.set_attempt_state(*id, update),
        Change::KillRequested { task } => s.request_kill(*task),
        Change::Cluster(c) => s.put_cluster(c),
        Change::ClusterCursor { name, cursor } => s.set_cluster_cursor(name, *cursor),
        Change::Profile(p) => s.put_profile(p),
    }
}

/// Everything the core needs after a restart.
pub fn load(store: &Store) -> Result<Snapshot, StoreError> {
    let mut agents = Vec::new();
    for agent in store.agents()? {
        let above = store.event_seqs_above(&agent.id, agent.last_seq_acked)?;
        agents.push((agent, above));
    }
    let mut tasks = Vec::new();
    for task in store.tasks_to_restore()? {
        let attempts = store.attempts(task.id)?;
        tasks.push((task, attempts));
    }
    let (next_task, next_attempt) = store.next_ids()?;
    Ok(Snapshot {
        agents,
        clusters: store.clusters()?,
        profiles: store.profiles()?,
        tasks,
        kill_requests: store.kill_requests()?,
        next_task,
        next_attempt,
        agent_keys: store.agent_keys()?,
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
