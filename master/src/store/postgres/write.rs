//! How each of the core's [`Change`]s becomes rows on PostgreSQL, inside the transaction of
//! [`Store::apply`](crate::store::Store::apply); the same checks as SQLite's (`checks`), the
//! same upserts in PostgreSQL's words.

use postgres::Transaction;
use tether_core::message::{Event, Stream};

use super::{orders, schedules};
use crate::core::Change;
use crate::model::{
    AgentPresence, AttemptId, AttemptState, AttemptUpdate, Cluster, NewTask, Outcome, Profile,
    TaskId, TaskState, event_kind, on_disconnect_str,
};
use crate::store::Result;
use crate::store::checks::{
    check_attempt, check_cluster, check_id, check_task, found, not_found, now_ms,
};
use crate::store::rows::{PROFILE_COLUMNS, signed, stream_str, to_json};

type Tx<'a, 'b> = &'a mut Transaction<'b>;

/// One change of a batch; `now` stamps what the change does not time itself.
pub(super) fn apply_one(tx: Tx<'_, '_>, change: &Change, now: u64) -> Result<()> {
    match change {
        Change::Agent {
            id,
            incarnation,
            presence,
            heard,
        } => set_agent_presence(tx, id, *incarnation, *presence, heard.then_some(now)),
        Change::AgentKey { agent, key } => {
            check_id("agent id", agent)?;
            tx.execute(
                "INSERT INTO agent_keys (agent_id, key, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (agent_id) DO UPDATE SET key = excluded.key,
                     created_ms = excluded.created_ms",
                &[agent, &key.as_slice(), &signed(now_ms())?],
            )?;
            Ok(())
        }
        Change::Event { agent, event } => record_agent_event(tx, agent, event),
        Change::Output {
            attempt,
            stream,
            offset,
            data,
        } => append_output(tx, *attempt, *stream, *offset, data),
        Change::Acked { agent, up_to } => {
            check_id("agent id", agent)?;
            tx.execute(
                "INSERT INTO agents (id, last_seq_acked) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE
                     SET last_seq_acked = GREATEST(agents.last_seq_acked, excluded.last_seq_acked)",
                &[agent, &signed(*up_to)?],
            )?;
            Ok(())
        }
        Change::AgentJournal {
            agent,
            journal,
            seq_base,
        } => {
            check_id("agent id", agent)?;
            tx.execute(
                "INSERT INTO agents (id, journal, seq_base, last_seq_acked) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (id) DO UPDATE SET journal = excluded.journal,
                     seq_base = excluded.seq_base,
                     last_seq_acked = GREATEST(agents.last_seq_acked, excluded.seq_base)",
                &[agent, &i64::from(*journal), &signed(*seq_base)?],
            )?;
            Ok(())
        }
        Change::AgentDisabled { agent, disabled } => {
            check_id("agent id", agent)?;
            tx.execute(
                "INSERT INTO agents (id, disabled) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET disabled = excluded.disabled",
                &[agent, &i64::from(*disabled)],
            )?;
            Ok(())
        }
        Change::NewTask { id, task, state } => insert_task(tx, *id, task, *state),
        Change::TaskState { id, state, outcome } => {
            set_task_state(tx, *id, *state, outcome.as_ref())
        }
        Change::NewAttempt {
            id,
            task,
            agent,
            after,
        } => insert_attempt(tx, *id, *task, agent, *after),
        Change::Attempt { id, update } => set_attempt_state(tx, *id, update),
        Change::KillRequested { task } => request_kill(tx, *task),
        Change::Cluster(c) => put_cluster(tx, c),
        Change::ClusterCursor { name, cursor } => {
            let n = tx.execute(
                "UPDATE clusters SET cursor = $2 WHERE name = $1",
                &[name, &signed(*cursor)?],
            )?;
            found(n as usize, "cluster", name)
        }
        Change::Profile(p) => put_profile(tx, p),
        Change::ApiToken(t) => {
            check_id("token name", &t.name)?;
            tx.execute(
                "INSERT INTO api_tokens (name, role, hash, created_ms, created_by, revoked_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role, hash = excluded.hash,
                     created_ms = excluded.created_ms, created_by = excluded.created_by,
                     revoked_ms = excluded.revoked_ms",
                &[
                    &t.name,
                    &t.role.as_str(),
                    &t.hash,
                    &signed(t.created_ms)?,
                    &t.created_by,
                    &t.revoked_ms.map(signed).transpose()?,
                ],
            )?;
            Ok(())
        }
        Change::Audit(e) => {
            tx.execute(
                "INSERT INTO audit (at_ms, who, action, subject) VALUES ($1, $2, $3, $4)",
                &[&signed(e.at_ms)?, &e.who, &e.action, &e.subject],
            )?;
            Ok(())
        }
        Change::Workflow(w) => orders::insert_workflow(tx, w, now),
        Change::NewOrder(o) => orders::insert_order(tx, o, now),
        Change::OrderState { id, state, reason } => {
            orders::set_order_state(tx, *id, *state, reason.as_deref(), now)
        }
        Change::Schedule(s) => schedules::put_schedule(tx, s, now),
        Change::Handover(h) => schedules::put_handover(tx, h, now),
    }
}

fn set_agent_presence(
    tx: Tx<'_, '_>,
    id: &str,
    incarnation: Option<u32>,
    presence: AgentPresence,
    heard_ms: Option<u64>,
) -> Result<()> {
    check_id("agent id", id)?;
    tx.execute(
        "INSERT INTO agents (id, incarnation, presence, last_heartbeat_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET incarnation = excluded.incarnation,
             presence = excluded.presence,
             last_heartbeat_ms = COALESCE(excluded.last_heartbeat_ms, agents.last_heartbeat_ms)",
        &[
            &id,
            &incarnation.map(i64::from),
            &presence.as_str(),
            &heard_ms.map(signed).transpose()?,
        ],
    )?;
    Ok(())
}

fn put_cluster(tx: Tx<'_, '_>, cluster: &Cluster) -> Result<()> {
    check_cluster(cluster)?;
    tx.execute(
        "INSERT INTO clusters (name, mode, cursor) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET mode = excluded.mode, cursor = excluded.cursor",
        &[
            &cluster.name,
            &cluster.mode.as_str(),
            &signed(cluster.cursor)?,
        ],
    )?;
    tx.execute(
        "DELETE FROM cluster_members WHERE cluster = $1",
        &[&cluster.name],
    )?;
    let insert = tx
        .prepare("INSERT INTO cluster_members (cluster, position, agent_id) VALUES ($1, $2, $3)")?;
    for (position, member) in cluster.members.iter().enumerate() {
        tx.execute(&insert, &[&cluster.name, &(position as i64), member])?;
    }
    Ok(())
}

fn put_profile(tx: Tx<'_, '_>, profile: &Profile) -> Result<()> {
    check_id("profile name", &profile.name)?;
    profile.policy.validate()?;
    let p = &profile.policy;
    tx.execute(
        &format!(
            "INSERT INTO profiles ({PROFILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (name) DO UPDATE SET on_disconnect = excluded.on_disconnect,
                 heartbeat_period_ms = excluded.heartbeat_period_ms,
                 heartbeat_timeout_ms = excluded.heartbeat_timeout_ms,
                 grace_ms = excluded.grace_ms, max_run_ms = excluded.max_run_ms,
                 output_cap = excluded.output_cap, retries = excluded.retries,
                 lost_after_ms = excluded.lost_after_ms"
        ),
        &[
            &profile.name,
            &on_disconnect_str(p.on_disconnect),
            &signed(p.heartbeat_period_ms)?,
            &signed(p.heartbeat_timeout_ms)?,
            &signed(p.grace_ms)?,
            &signed(p.max_run_ms)?,
            &signed(p.output_cap)?,
            &i64::from(p.retries),
            &p.lost_after_ms.map(signed).transpose()?,
        ],
    )?;
    Ok(())
}

/// A step's task names a stored order; an occurrence's task a stored schedule, and an
/// occurrence no other task runs. The id may be one a hand-over reserved (below the mark, but
/// free).
fn insert_task(tx: Tx<'_, '_>, id: TaskId, task: &NewTask, state: TaskState) -> Result<()> {
    check_task(id, task)?;
    if let Some(step) = task.order {
        if !exists(tx, "orders", step.order)? {
            return Err(not_found("order", step.order));
        }
    }
    if let Some(occurrence) = task.occurrence {
        schedules::claim_occurrence(tx, occurrence)?;
    }
    let now = signed(now_ms())?;
    let p = &task.policy;
    tx.execute(
        "INSERT INTO tasks (id, target_kind, target, argv, env, cwd, profile, on_disconnect,
             heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap,
             retries, lost_after_ms, start_at_ms, state, outcome, created_ms, updated_ms,
             order_id, order_step, occurrence_schedule, occurrence_version, occurrence_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
             $17, NULL, $18, $18, $19, $20, $21, $22, $23)",
        &[
            &signed(id)?,
            &task.target.kind(),
            &task.target.name(),
            &to_json(&task.argv)?,
            &to_json(&task.env)?,
            &task.cwd,
            &task.profile,
            &on_disconnect_str(p.on_disconnect),
            &signed(p.heartbeat_period_ms)?,
            &signed(p.heartbeat_timeout_ms)?,
            &signed(p.grace_ms)?,
            &signed(p.max_run_ms)?,
            &signed(p.output_cap)?,
            &i64::from(p.retries),
            &p.lost_after_ms.map(signed).transpose()?,
            &task.start_at_ms.map(signed).transpose()?,
            &state.as_str(),
            &now,
            &task.order.map(|s| signed(s.order)).transpose()?,
            &task.order.map(|s| i64::from(s.step)),
            &task.occurrence.map(|o| signed(o.schedule)).transpose()?,
            &task.occurrence.map(|o| i64::from(o.version)),
            &task.occurrence.map(|o| signed(o.at_ms)).transpose()?,
        ],
    )?;
    Ok(())
}

fn set_task_state(
    tx: Tx<'_, '_>,
    id: TaskId,
    state: TaskState,
    outcome: Option<&Outcome>,
) -> Result<()> {
    let outcome = outcome.map(to_json).transpose()?;
    let n = tx.execute(
        "UPDATE tasks SET state = $2, outcome = COALESCE($3, outcome), updated_ms = $4
         WHERE id = $1",
        &[&signed(id)?, &state.as_str(), &outcome, &signed(now_ms())?],
    )?;
    found(n as usize, "task", id)
}

fn exists(tx: Tx<'_, '_>, table: &str, id: u64) -> Result<bool> {
    let row = tx.query_one(
        &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)"),
        &[&signed(id)?],
    )?;
    Ok(row.try_get(0)?)
}

/// A new attempt in state `sent`, behind `after` (a chained step's predecessor) if given.
fn insert_attempt(
    tx: Tx<'_, '_>,
    id: AttemptId,
    task: TaskId,
    agent: &str,
    after: Option<AttemptId>,
) -> Result<()> {
    check_attempt(id, agent, after)?;
    if !exists(tx, "tasks", task)? {
        return Err(not_found("task", task));
    }
    tx.execute(
        "INSERT INTO attempts (id, task_id, agent_id, state, created_ms, after_attempt)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &signed(id)?,
            &signed(task)?,
            &agent,
            &AttemptState::Sent.as_str(),
            &signed(now_ms())?,
            &after.map(signed).transpose()?,
        ],
    )?;
    Ok(())
}

fn set_attempt_state(tx: Tx<'_, '_>, id: AttemptId, update: &AttemptUpdate) -> Result<()> {
    let exit = update.exit.as_ref().map(to_json).transpose()?;
    let cause = update.kill_cause.as_ref().map(to_json).transpose()?;
    let n = tx.execute(
        "UPDATE attempts SET state = $2,
             pid = COALESCE($3, pid),
             exit = COALESCE($4, exit),
             kill_cause = COALESCE($5, kill_cause),
             output_dropped = COALESCE($6, output_dropped),
             started_ms = COALESCE($7, started_ms),
             finished_ms = COALESCE($8, finished_ms)
         WHERE id = $1",
        &[
            &signed(id)?,
            &update.state.as_str(),
            &update.pid.map(i64::from),
            &exit,
            &cause,
            &update.output_dropped.map(signed).transpose()?,
            &update.started_ms.map(signed).transpose()?,
            &update.finished_ms.map(signed).transpose()?,
        ],
    )?;
    found(n as usize, "attempt", id)
}

/// Stores an agent event unless `(agent, seq)` is stored already (a duplicate changes
/// nothing).
fn record_agent_event(tx: Tx<'_, '_>, agent: &str, event: &Event) -> Result<()> {
    check_id("agent id", agent)?;
    let attempt = event.kind.task().map(|t| signed(t.attempt)).transpose()?;
    tx.execute(
        "INSERT INTO events (agent_id, seq, attempt, kind, json, received_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (agent_id, seq) DO NOTHING",
        &[
            &agent,
            &signed(event.seq)?,
            &attempt,
            &event_kind(&event.kind),
            &to_json(event)?,
            &signed(now_ms())?,
        ],
    )?;
    Ok(())
}

fn append_output(
    tx: Tx<'_, '_>,
    attempt: AttemptId,
    stream: Stream,
    offset: u64,
    bytes: &[u8],
) -> Result<()> {
    if !exists(tx, "attempts", attempt)? {
        return Err(not_found("attempt", attempt));
    }
    tx.execute(
        r#"INSERT INTO output (attempt_id, stream, "offset", bytes) VALUES ($1, $2, $3, $4)
           ON CONFLICT (attempt_id, stream, "offset") DO NOTHING"#,
        &[
            &signed(attempt)?,
            &stream_str(stream),
            &signed(offset)?,
            &bytes,
        ],
    )?;
    Ok(())
}

fn request_kill(tx: Tx<'_, '_>, task: TaskId) -> Result<()> {
    if !exists(tx, "tasks", task)? {
        return Err(not_found("task", task));
    }
    tx.execute(
        "INSERT INTO kill_requests (task_id) VALUES ($1) ON CONFLICT (task_id) DO NOTHING",
        &[&signed(task)?],
    )?;
    Ok(())
}
