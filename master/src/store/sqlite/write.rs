//! How each of the core's [`Change`]s becomes rows: one method per change, run inside the
//! transaction of [`Store::apply`](crate::store::Store::apply). Every write checks its input
//! first and refuses it with a typed [`StoreError`](crate::store::StoreError).

use rusqlite::params;
use tether_core::message::Stream;

use super::SqliteStore;
use crate::core::Change;
use crate::model::{
    AgentPresence, AttemptId, AttemptState, AttemptUpdate, Cluster, NewTask, Outcome, Profile,
    TaskId, TaskState, event_kind, on_disconnect_str,
};
use crate::store::Result;
use crate::store::checks::{
    check_attempt, check_cluster, check_id, check_task, found, not_found, now_ms,
};
use crate::store::rows::{PROFILE_COLUMNS, stream_str, to_json};

impl SqliteStore {
    /// One change of a batch; `now` stamps what the change does not time itself.
    pub(super) fn apply_one(&self, change: &Change, now: u64) -> Result<()> {
        match change {
            Change::Agent {
                id,
                incarnation,
                presence,
                heard,
            } => self.set_agent_presence(id, *incarnation, *presence, heard.then_some(now)),
            Change::AgentKey { agent, key } => self.set_agent_key(agent, key),
            Change::Event { agent, event } => self.record_agent_event(agent, event),
            Change::Output {
                attempt,
                stream,
                offset,
                data,
            } => self.append_output(*attempt, *stream, *offset, data),
            Change::Acked { agent, up_to } => self.set_last_acked_seq(agent, *up_to),
            Change::AgentJournal {
                agent,
                journal,
                seq_base,
            } => self.set_agent_journal(agent, *journal, *seq_base),
            Change::AgentDisabled { agent, disabled } => self.set_agent_disabled(agent, *disabled),
            Change::NewTask { id, task, state } => self.insert_task_with_id(*id, task, *state),
            Change::TaskState { id, state, outcome } => {
                self.set_task_state(*id, *state, outcome.as_ref())
            }
            Change::NewAttempt {
                id,
                task,
                agent,
                after,
            } => self.insert_attempt(*id, *task, agent, *after),
            Change::Attempt { id, update } => self.set_attempt_state(*id, update),
            Change::KillRequested { task } => self.request_kill(*task),
            Change::Cluster(c) => self.put_cluster(c),
            Change::ClusterCursor { name, cursor } => self.set_cluster_cursor(name, *cursor),
            Change::Profile(p) => self.put_profile(p),
            Change::ApiToken(t) => self.put_token(t),
            Change::Audit(e) => self.append_audit(e),
            Change::Workflow(w) => self.insert_workflow(w, now),
            Change::NewOrder(o) => self.insert_order(o, now),
            Change::OrderState { id, state, reason } => {
                self.set_order_state(*id, *state, reason.as_deref(), now)
            }
            Change::Schedule(s) => self.put_schedule(s, now),
            Change::Handover(h) => self.put_handover(h, now),
        }
    }

    /// Sets an agent's presence and incarnation (creating its row), keeping its acknowledged
    /// sequence; `heard_ms` stamps its last heartbeat when given.
    fn set_agent_presence(
        &self,
        id: &str,
        incarnation: Option<u32>,
        presence: AgentPresence,
        heard_ms: Option<u64>,
    ) -> Result<()> {
        check_id("agent id", id)?;
        self.conn.execute(
            "INSERT INTO agents (id, incarnation, presence, last_heartbeat_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET incarnation = excluded.incarnation,
                 presence = excluded.presence,
                 last_heartbeat_ms = COALESCE(excluded.last_heartbeat_ms, last_heartbeat_ms)",
            params![id, incarnation, presence, heard_ms],
        )?;
        Ok(())
    }

    /// Records that events up to `seq` were acknowledged to `agent`. Never moves backwards;
    /// creates the agent's row if needed.
    fn set_last_acked_seq(&self, agent: &str, seq: u64) -> Result<()> {
        check_id("agent id", agent)?;
        self.conn.execute(
            "INSERT INTO agents (id, last_seq_acked) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE
                 SET last_seq_acked = max(last_seq_acked, excluded.last_seq_acked)",
            params![agent, seq],
        )?;
        Ok(())
    }

    /// Records the journal `agent`'s events are numbered in from now on.
    fn set_agent_journal(&self, agent: &str, journal: u32, seq_base: u64) -> Result<()> {
        check_id("agent id", agent)?;
        self.conn.execute(
            "INSERT INTO agents (id, journal, seq_base, last_seq_acked) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(id) DO UPDATE SET journal = excluded.journal,
                 seq_base = excluded.seq_base,
                 last_seq_acked = max(last_seq_acked, excluded.seq_base)",
            params![agent, journal, seq_base],
        )?;
        Ok(())
    }

    fn set_agent_disabled(&self, agent: &str, disabled: bool) -> Result<()> {
        check_id("agent id", agent)?;
        self.conn.execute(
            "INSERT INTO agents (id, disabled) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET disabled = excluded.disabled",
            params![agent, disabled],
        )?;
        Ok(())
    }

    /// Sets (or replaces) an agent's MAC key.
    fn set_agent_key(&self, agent: &str, key: &[u8; 32]) -> Result<()> {
        check_id("agent id", agent)?;
        self.conn.execute(
            "INSERT INTO agent_keys (agent_id, key, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(agent_id) DO UPDATE SET key = excluded.key,
                 created_ms = excluded.created_ms",
            params![agent, key.as_slice(), now_ms()],
        )?;
        Ok(())
    }

    /// Inserts or replaces a cluster, members in the given order.
    fn put_cluster(&self, cluster: &Cluster) -> Result<()> {
        check_cluster(cluster)?;
        self.atomically(|s| {
            s.conn.execute(
                "INSERT INTO clusters (name, mode, cursor) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET mode = excluded.mode, cursor = excluded.cursor",
                params![cluster.name, cluster.mode, cluster.cursor],
            )?;
            s.conn.execute(
                "DELETE FROM cluster_members WHERE cluster = ?1",
                [&cluster.name],
            )?;
            let mut insert = s.conn.prepare_cached(
                "INSERT INTO cluster_members (cluster, position, agent_id) VALUES (?1, ?2, ?3)",
            )?;
            for (position, member) in cluster.members.iter().enumerate() {
                insert.execute(params![cluster.name, position as u64, member])?;
            }
            Ok(())
        })
    }

    fn set_cluster_cursor(&self, name: &str, cursor: u64) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE clusters SET cursor = ?2 WHERE name = ?1",
            params![name, cursor],
        )?;
        found(n, "cluster", name)
    }

    fn put_profile(&self, profile: &Profile) -> Result<()> {
        check_id("profile name", &profile.name)?;
        profile.policy.validate()?;
        let p = &profile.policy;
        self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO profiles ({PROFILE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                profile.name,
                on_disconnect_str(p.on_disconnect),
                p.heartbeat_period_ms,
                p.heartbeat_timeout_ms,
                p.grace_ms,
                p.max_run_ms,
                p.output_cap,
                p.retries,
                p.lost_after_ms
            ],
        )?;
        Ok(())
    }

    /// Stores a new task under the id the core chose (above every id issued, from
    /// [`crate::core::Snapshot::next_task`]), in `state`. Refuses what no agent would accept
    /// (the agent's own `TaskSpec::validate` rules and the wire's size limits).
    /// A step's task names a stored order; an occurrence's task a stored schedule, and an
    /// occurrence no other task runs. The id may be one a hand-over reserved (below the
    /// sequence, but free).
    fn insert_task_with_id(&self, id: TaskId, task: &NewTask, state: TaskState) -> Result<()> {
        check_task(id, task)?;
        if let Some(step) = task.order {
            if !self.order_exists(step.order)? {
                return Err(not_found("order", step.order));
            }
        }
        if let Some(occurrence) = task.occurrence {
            self.claim_occurrence(occurrence)?;
        }
        let now = now_ms();
        let p = &task.policy;
        self.conn.execute(
            "INSERT INTO tasks (id, target_kind, target, argv, env, cwd, profile, on_disconnect,
                 heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap,
                 retries, lost_after_ms, start_at_ms, state, outcome, created_ms, updated_ms,
                 order_id, order_step, occurrence_schedule, occurrence_version, occurrence_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, NULL, ?18, ?18, ?19, ?20, ?21, ?22, ?23)",
            params![
                id,
                task.target.kind(),
                task.target.name(),
                to_json(&task.argv)?,
                to_json(&task.env)?,
                task.cwd,
                task.profile,
                on_disconnect_str(p.on_disconnect),
                p.heartbeat_period_ms,
                p.heartbeat_timeout_ms,
                p.grace_ms,
                p.max_run_ms,
                p.output_cap,
                p.retries,
                p.lost_after_ms,
                task.start_at_ms,
                state,
                now,
                task.order.map(|s| s.order),
                task.order.map(|s| s.step),
                task.occurrence.map(|o| o.schedule),
                task.occurrence.map(|o| o.version),
                task.occurrence.map(|o| o.at_ms)
            ],
        )?;
        Ok(())
    }

    /// Sets a task's state; `outcome` replaces the stored one when given.
    fn set_task_state(
        &self,
        id: TaskId,
        state: TaskState,
        outcome: Option<&Outcome>,
    ) -> Result<()> {
        let outcome = outcome.map(to_json).transpose()?;
        let n = self.conn.execute(
            "UPDATE tasks SET state = ?2, outcome = COALESCE(?3, outcome), updated_ms = ?4
             WHERE id = ?1",
            params![id, state, outcome, now_ms()],
        )?;
        found(n, "task", id)
    }

    /// A new attempt under an id the caller chose, in state `sent`, behind `after` (a chained
    /// step's predecessor) if given. An unknown task is [`NotFound`](crate::store::StoreError::NotFound), not a bare
    /// foreign-key failure.
    fn insert_attempt(
        &self,
        id: AttemptId,
        task: TaskId,
        agent: &str,
        after: Option<AttemptId>,
    ) -> Result<()> {
        check_attempt(id, agent, after)?;
        if !self.exists("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)", task)? {
            return Err(not_found("task", task));
        }
        self.conn.execute(
            "INSERT INTO attempts (id, task_id, agent_id, state, created_ms, after_attempt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, task, agent, AttemptState::Sent, now_ms(), after],
        )?;
        Ok(())
    }

    fn set_attempt_state(&self, id: AttemptId, update: &AttemptUpdate) -> Result<()> {
        let exit = update.exit.as_ref().map(to_json).transpose()?;
        let cause = update.kill_cause.as_ref().map(to_json).transpose()?;
        let n = self.conn.execute(
            "UPDATE attempts SET state = ?2,
                 pid = COALESCE(?3, pid),
                 exit = COALESCE(?4, exit),
                 kill_cause = COALESCE(?5, kill_cause),
                 output_dropped = COALESCE(?6, output_dropped),
                 started_ms = COALESCE(?7, started_ms),
                 finished_ms = COALESCE(?8, finished_ms)
             WHERE id = ?1",
            params![
                id,
                update.state,
                update.pid,
                exit,
                cause,
                update.output_dropped,
                update.started_ms,
                update.finished_ms
            ],
        )?;
        found(n, "attempt", id)
    }

    /// Stores an agent event unless `(agent, seq)` is already stored (a redelivered duplicate
    /// changes nothing): kind from its variant, attempt from its task reference, JSON from
    /// serde.
    fn record_agent_event(&self, agent: &str, event: &tether_core::message::Event) -> Result<()> {
        check_id("agent id", agent)?;
        let attempt = event.kind.task().map(|t| t.attempt);
        self.conn.execute(
            "INSERT INTO events (agent_id, seq, attempt, kind, json, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(agent_id, seq) DO NOTHING",
            params![
                agent,
                event.seq,
                attempt,
                event_kind(&event.kind),
                to_json(event)?,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// Stores one chunk of an attempt's output unless a chunk at that stream and offset is
    /// stored already (a duplicate changes nothing).
    fn append_output(
        &self,
        attempt: AttemptId,
        stream: Stream,
        offset: u64,
        bytes: &[u8],
    ) -> Result<()> {
        if !self.exists(
            "SELECT EXISTS (SELECT 1 FROM attempts WHERE id = ?1)",
            attempt,
        )? {
            return Err(not_found("attempt", attempt));
        }
        self.conn.execute(
            "INSERT INTO output (attempt_id, stream, offset, bytes) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(attempt_id, stream, offset) DO NOTHING",
            params![attempt, stream_str(stream), offset, bytes],
        )?;
        Ok(())
    }

    /// Records that `task` is to be killed (idempotent).
    fn request_kill(&self, task: TaskId) -> Result<()> {
        let n = self.conn.execute(
            "INSERT INTO kill_requests (task_id) SELECT id FROM tasks WHERE id = ?1
             ON CONFLICT(task_id) DO NOTHING",
            [task],
        )?;
        if n == 0 && !self.exists("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)", task)? {
            return Err(not_found("task", task));
        }
        Ok(())
    }
}
