//! `GET /metrics` (Prometheus text format, viewer token) and `GET /healthz` (public).
//!
//! Both are answered by the master loop like every other route: the values are read from the
//! core and the store when asked. Only what no one else keeps lives in [`Observed`], owned by
//! the loop: the two latency histograms, the broker's message counts and the attempts
//! started and ended since this master started (counted from committed changes).

use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tether_core::Instant;

use super::exposition::{self, Histogram, Kind, Text};
use super::{ApiError, ApiRequest, By, Tx, ask};
use crate::core::{Change, Master};
use crate::model::{AgentPresence, AttemptState, OrderState, Role, TaskState};
use crate::store::Store;

const PRESENCES: [AgentPresence; 4] = [
    AgentPresence::Unknown,
    AgentPresence::Online,
    AgentPresence::Lost,
    AgentPresence::Stopped,
];

const TASK_STATES: [TaskState; 10] = [
    TaskState::Pending,
    TaskState::Dispatched,
    TaskState::Accepted,
    TaskState::Running,
    TaskState::Unreachable,
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::Cancelled,
    TaskState::Killed,
    TaskState::Lost,
];

/// What the loop measures itself for `/metrics` (it has no other reader: no sharing).
#[derive(Debug, Clone)]
pub struct Observed {
    commit: Histogram,
    heartbeat_lag: Histogram,
    received: u64,
    sent: u64,
    attempts_started: u64,
    attempts_finished: u64,
    attempts_lost: u64,
    commit_failures: u64,
    history_pruned: u64,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            commit: Histogram::new(exposition::LATENCY_BUCKETS),
            heartbeat_lag: Histogram::new(exposition::LATENCY_BUCKETS),
            received: 0,
            sent: 0,
            attempts_started: 0,
            attempts_finished: 0,
            attempts_lost: 0,
            commit_failures: 0,
            history_pruned: 0,
        }
    }
}

impl Observed {
    /// One store transaction (a batch's commit), however long it took.
    pub fn commit_took(&mut self, d: Duration) {
        self.commit.observe(d);
    }

    /// A batch the store refused (nothing of it was published).
    pub fn commit_failed(&mut self) {
        self.commit_failures += 1;
    }

    /// An agent heartbeat, from its arrival off the broker connection to its batch's commit.
    pub fn heartbeat_waited(&mut self, d: Duration) {
        self.heartbeat_lag.observe(d);
    }

    /// Finished tasks deleted by history retention.
    pub fn pruned(&mut self, tasks: u64) {
        self.history_pruned += tasks;
    }

    /// A message from the broker (any topic the master subscribes to).
    pub fn received(&mut self) {
        self.received += 1;
    }

    /// A publish handed to the MQTT client.
    pub fn sent(&mut self) {
        self.sent += 1;
    }

    /// Counts the attempts a committed batch started and ended.
    pub fn committed(&mut self, changes: &[Change]) {
        for c in changes {
            match c {
                Change::NewAttempt { .. } => self.attempts_started += 1,
                Change::Attempt { update, .. } if update.state == AttemptState::Finished => {
                    self.attempts_finished += 1;
                }
                Change::Attempt { update, .. } if update.state == AttemptState::Lost => {
                    self.attempts_lost += 1;
                }
                _ => {}
            }
        }
    }
}

/// What a scrape reads.
pub(super) struct Scrape<'a> {
    pub core: &'a Master,
    pub store: &'a dyn Store,
    pub observed: &'a Observed,
    pub dropped_publishes: u64,
    /// Whether the store refuses writes (after a failed commit).
    pub refusing: bool,
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The exposition, from the core's views and counters, the store's task counts and what the
/// loop observed.
pub(super) fn render(s: Scrape<'_>, now: Instant) -> Result<String, ApiError> {
    let mut t = Text::default();
    let version = env!("CARGO_PKG_VERSION");
    t.family("tether_build_info", Kind::Gauge, "The master's version.")
        .sample("tether_build_info", &[("version", version)], 1.0);
    t.single(
        "tether_broker_connected",
        Kind::Gauge,
        "1 while the master's MQTT client is connected to its broker.",
        flag(s.core.is_connected()),
    );
    t.single(
        "tether_store_refusing_writes",
        Kind::Gauge,
        "1 while the store refuses writes (a full disk): API writes get 507 or 503.",
        flag(s.refusing),
    );
    agents(&mut t, s.core, now);
    let tasks = s.store.task_counts()?;
    let help = "Tasks in the store, by state.";
    by_state(
        &mut t,
        "tether_tasks",
        help,
        &TASK_STATES,
        &tasks,
        TaskState::as_str,
    );
    let orders = s.store.order_counts()?;
    let help = "Orders (runs of a workflow version) in the store, by state.";
    by_state(
        &mut t,
        "tether_orders",
        help,
        OrderState::ALL,
        &orders,
        OrderState::as_str,
    );
    schedules(&mut t, s.core, s.store)?;
    let o = s.observed;
    let counters = [
        (
            "tether_attempts_started_total",
            "Attempts created since the master started.",
            o.attempts_started,
        ),
        (
            "tether_attempts_finished_total",
            "Attempts whose process ended (any exit) since the master started.",
            o.attempts_finished,
        ),
        (
            "tether_attempts_lost_total",
            "Attempts given up since the master started (agent lost beyond the policy).",
            o.attempts_lost,
        ),
        (
            "tether_store_commit_failures_total",
            "Batches the store refused (a full disk, a lost database): nothing of them was published.",
            o.commit_failures,
        ),
        (
            "tether_history_pruned_tasks_total",
            "Finished tasks deleted by history retention (--retain-history) since the master started.",
            o.history_pruned,
        ),
        (
            "tether_broker_messages_received_total",
            "MQTT messages the master received from its broker.",
            o.received,
        ),
        (
            "tether_broker_messages_sent_total",
            "MQTT messages the master handed to its client for the broker.",
            o.sent,
        ),
        (
            "tether_broker_refused_connections_total",
            "Connections the embedded broker refused (its limit, broker_max_connections, reached; or a client id it cannot take); 0 with an external broker.",
            crate::broker::refused_connections(),
        ),
        (
            "tether_publishes_dropped_total",
            "Publishes the MQTT client could not queue (commands are retransmitted).",
            s.dropped_publishes,
        ),
    ];
    for (name, help, v) in counters {
        t.single(name, Kind::Counter, help, v as f64);
    }
    core_counters(&mut t, s.core);
    t.histogram(
        "tether_heartbeat_lag_seconds",
        "From an agent heartbeat's arrival to the commit of the batch that handled it.",
        &o.heartbeat_lag,
    );
    t.histogram(
        "tether_store_commit_duration_seconds",
        "One store transaction: a batch's changes, committed (fsync included).",
        &o.commit,
    );
    Ok(t.finish())
}

/// Schedules: the live ones (not deleted) by state, their occurrence tasks by state, and the
/// core's counts of missed occurrences and refused hand-overs.
fn schedules(t: &mut Text, core: &Master, store: &dyn Store) -> Result<(), ApiError> {
    let name = "tether_schedules";
    t.family(
        name,
        Kind::Gauge,
        "Schedules not deleted, by state (active, paused).",
    );
    let paused = core.schedules().filter(|s| s.paused).count();
    let active = core.schedules().count() - paused;
    for (state, n) in [("active", active), ("paused", paused)] {
        t.sample(name, &[("state", state)], n as f64);
    }
    let occurrences = store.occurrence_counts()?;
    by_state(
        t,
        "tether_schedule_occurrences",
        "Tasks in the store that run a schedule occurrence, by state.",
        &TASK_STATES,
        &occurrences,
        TaskState::as_str,
    );
    let stats = core.stats();
    t.single(
        "tether_schedule_occurrences_missed_total",
        Kind::Counter,
        "Schedule occurrences not run on time and not run late (their schedule's missed rule), as agents reported them or the master skipped them, since the master started.",
        stats.occurrences_missed as f64,
    );
    t.single(
        "tether_schedule_handovers_refused_total",
        Kind::Counter,
        "Hand-overs of a schedule's occurrences an agent refused, since the master started.",
        stats.handovers_refused as f64,
    );
    Ok(())
}

/// A gauge family of the store's counts by state: every state, 0 when it has none.
fn by_state<S: Copy + PartialEq>(
    t: &mut Text,
    name: &str,
    help: &str,
    states: &[S],
    counts: &[(S, u64)],
    label: fn(S) -> &'static str,
) {
    t.family(name, Kind::Gauge, help);
    for &state in states {
        let n = counts
            .iter()
            .find(|(st, _)| *st == state)
            .map_or(0, |c| c.1);
        t.sample(name, &[("state", label(state))], n as f64);
    }
}

/// One value of an agent's view.
type PerAgent = fn(&crate::core::AgentView) -> f64;

/// The fleet by presence and availability, then each agent.
fn agents(t: &mut Text, core: &Master, now: Instant) {
    let views = core.agent_views(now);
    t.family(
        "tether_agents",
        Kind::Gauge,
        "Agents by presence and by availability (online, heartbeating, not disabled).",
    );
    for p in PRESENCES {
        for available in [true, false] {
            let n = views
                .iter()
                .filter(|v| v.presence == p && v.available == available)
                .count();
            let a = if available { "true" } else { "false" };
            let labels = [("presence", p.as_str()), ("available", a)];
            t.sample("tether_agents", &labels, n as f64);
        }
    }
    let per_agent: [(&str, &str, PerAgent); 5] = [
        (
            "tether_agent_available",
            "1 if new tasks may go to the agent.",
            |v| flag(v.available),
        ),
        (
            "tether_agent_silent_seconds",
            "Seconds since the master last heard a sign of life from the agent.",
            |v| v.silent_ms as f64 / 1000.0,
        ),
        (
            "tether_agent_acked_seq",
            "The agent's events stored and acknowledged up to this sequence.",
            |v| v.acked_seq as f64,
        ),
        (
            "tether_agent_journal_backlog_events",
            "Events the agent's last heartbeat said it holds beyond what the master stored.",
            |v| v.journal_seq.saturating_sub(v.acked_seq) as f64,
        ),
        (
            "tether_agent_open_attempts",
            "Attempts open on the agent.",
            |v| v.attempts.len() as f64,
        ),
    ];
    t.family(
        "tether_agent_presence",
        Kind::Gauge,
        "1 for each agent's current presence.",
    );
    for v in &views {
        for p in PRESENCES {
            let labels = [("agent", v.id.as_str()), ("presence", p.as_str())];
            t.sample("tether_agent_presence", &labels, flag(v.presence == p));
        }
    }
    for (name, help, value) in per_agent {
        t.family(name, Kind::Gauge, help);
        for v in &views {
            t.sample(name, &[("agent", v.id.as_str())], value(v));
        }
    }
}

/// The core's counters: refusals by reason, dropped messages by reason, the rest alone.
fn core_counters(t: &mut Text, core: &Master) {
    let stats = core.stats();
    let (mut unauthenticated, mut bad_signature) = (0, 0);
    for c in core.security().values() {
        unauthenticated += c.unauthenticated;
        bad_signature += c.bad_signature;
    }
    let name = "tether_security_refusals_total";
    t.family(
        name,
        Kind::Counter,
        "Agent messages dropped because they did not authenticate, by reason.",
    );
    for (reason, n) in [
        ("unauthenticated", unauthenticated),
        ("bad_signature", bad_signature),
        ("unknown_agent", stats.unknown_agent),
    ] {
        t.sample(name, &[("reason", reason)], n as f64);
    }
    let name = "tether_messages_dropped_total";
    t.family(
        name,
        Kind::Counter,
        "Agent messages the core dropped or ignored, by reason.",
    );
    for (reason, n) in [
        ("bad", stats.bad_messages),
        ("foreign", stats.foreign_messages),
        ("stale_will", stats.stale_wills),
        ("duplicate_event", stats.duplicate_events),
        ("stale_heartbeat", stats.stale_heartbeats),
    ] {
        t.sample(name, &[("reason", reason)], n as f64);
    }
    for (name, help, n) in [
        (
            "tether_journal_behind_total",
            "Heartbeats whose journal is behind what the master stored of it (cut short on disk).",
            stats.journal_behind,
        ),
        (
            "tether_journals_replaced_total",
            "Agents that came back with another journal (state wiped, re-flashed, restored).",
            stats.journals_replaced,
        ),
        (
            "tether_other_journal_events_total",
            "Events naming a journal other than their agent's current one, dropped unacknowledged.",
            stats.other_journal_events,
        ),
        (
            "tether_bad_commands_reported_total",
            "Commands agents reported they could not decode.",
            stats.bad_commands_reported,
        ),
        (
            "tether_unknown_attempts_killed_total",
            "Attempts agents held that the master did not know, killed.",
            stats.unknown_attempts_killed,
        ),
    ] {
        t.single(name, Kind::Counter, help, n as f64);
    }
}

/// The answer of `/healthz`: nothing beyond whether the master works and, if not, why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HealthAnswer {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Healthy: connected to the broker, and the store takes writes: the loop has no refusal
/// from its last commit, and the probe (a write that changes nothing, one small transaction)
/// succeeds. The reasons are fixed words: a public route tells no addresses or errors.
pub(super) fn health(core: &Master, store: &dyn Store, refusing: bool) -> HealthAnswer {
    let store_ok = !refusing && store.probe_write().is_ok();
    let reason = if !store_ok {
        Some("the store does not take writes")
    } else if !core.is_connected() {
        Some("not connected to the broker")
    } else {
        None
    };
    HealthAnswer {
        ok: reason.is_none(),
        reason,
    }
}

#[utoipa::path(get, path = "/metrics", tag = "master",
    description = "Prometheus text format (0.0.4). Prometheus sends the viewer token with `authorization: {credentials_file: ...}` in its scrape config.",
    responses((status = 200, description = "The master's metrics.", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(tx): Tx, Extension(by): By) -> Response {
    match ask(&tx, by, ApiRequest::Metrics, StatusCode::OK).await {
        Ok((_, axum::Json(serde_json::Value::String(text)))) => {
            ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], text).into_response()
        }
        Ok(_) => ApiError::new(500, "the metrics are not text").into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(method(get, head), path = "/healthz", tag = "master",
    description = "For load balancers and service checks: 200 when the master has its store and its broker connection.",
    responses((status = 200, description = "`{\"ok\": true}`", body = HealthAnswer),
        (status = 503, description = "`{\"ok\": false, \"reason\": ...}`, or the master is stopping.", body = HealthAnswer)))]
pub(super) async fn healthz(State(tx): Tx) -> Response {
    // A public route has no caller; the loop records none for a read.
    let by = super::Caller {
        name: "healthz".to_owned(),
        role: Role::Viewer,
    };
    match ask(&tx, by, ApiRequest::Health, StatusCode::OK).await {
        Ok((_, body)) => {
            let ok = body.0.get("ok") == Some(&serde_json::Value::Bool(true));
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, body).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttemptUpdate;

    #[test]
    fn attempts_are_counted_from_committed_changes() {
        let mut o = Observed::default();
        let attempt = |id, state| Change::Attempt {
            id,
            update: AttemptUpdate::to(state),
        };
        o.committed(&[
            Change::NewAttempt {
                id: 1,
                task: 1,
                agent: "pi-1".into(),
                after: None,
            },
            attempt(1, AttemptState::Running),
            attempt(1, AttemptState::Finished),
            attempt(2, AttemptState::Lost),
            attempt(3, AttemptState::Rejected),
        ]);
        assert_eq!(
            (o.attempts_started, o.attempts_finished, o.attempts_lost),
            (1, 1, 1)
        );
    }
}
