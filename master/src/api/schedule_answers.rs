//! The answers of the schedule routes: writes go through the core (each recorded in the audit
//! trail under `schedule/NAME`), reads come from the committed store; the next occurrences are
//! the core's, from the schedule's calendar and the master's wall clock.

use serde::Serialize;
use serde_json::Value;
use tether_core::Instant;

use super::ApiError;
use super::answers::{audit, json};
use super::schedules::{NEXT, ScheduleCall};
use super::tokens::Caller;
use crate::calendar::CalendarSpec;
use crate::core::{Master, RequestError};
use crate::model::{
    AuditEntry, Handover, HandoverState, Missed, Outcome, Schedule, ScheduleId, ScheduledTask,
    Target, TaskId, TaskState,
};
use crate::store::Store;

/// One of a schedule's next occurrences.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct NextOccurrence {
    /// When it falls (Unix milliseconds).
    pub at_ms: u64,
    /// The agent it starts on; none on a cluster (the master picks a member as it starts it).
    pub agent: Option<String>,
    /// The agent holds it already (a hand-over it accepted): it starts then, master or not.
    pub held: bool,
}

/// `POST /api/schedules`: the version defined (its times are the commit's: in the reads).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ScheduleDefined {
    pub id: ScheduleId,
    pub name: String,
    pub version: u32,
    pub calendar: CalendarSpec,
    /// What each occurrence runs, its policy resolved (profile and overrides).
    pub task: ScheduledTask,
    pub missed: Missed,
    pub late_ms: u64,
    /// A new version of a paused schedule stays paused.
    pub paused: bool,
    /// Its next occurrences (none while paused).
    pub next: Vec<NextOccurrence>,
}

/// Occurrences handed to an agent ahead of time, which it starts on its own.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HandoverAnswer {
    /// The id it reserves from: its occurrences are the task ids after it, in order.
    pub task: TaskId,
    pub agent: String,
    /// The schedule version it runs.
    pub version: u32,
    /// `sent` until the agent answers, `held` while the agent keeps it, then `ended`.
    pub state: HandoverState,
    /// Its first and last occurrence (Unix milliseconds), and how many it holds.
    pub first_ms: u64,
    pub last_ms: u64,
    pub occurrences: u64,
    pub created_ms: u64,
}

/// One occurrence that has a task: the version it ran under and how it went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct OccurrenceAnswer {
    pub task: TaskId,
    pub version: u32,
    /// The occurrence's time (Unix milliseconds).
    pub at_ms: u64,
    pub state: TaskState,
    /// The agent of its latest attempt; none before one.
    pub agent: Option<String>,
    /// When its latest attempt started and ended, by the agent's clock.
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub outcome: Option<Outcome>,
}

/// `GET /api/schedules/{name}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ScheduleAnswer {
    pub schedule: Schedule,
    /// Its next occurrences (none while paused).
    pub next: Vec<NextOccurrence>,
    /// Its hand-overs, newest first (ended ones until history retention removes them).
    pub handovers: Vec<HandoverAnswer>,
    /// Its latest occurrence tasks, oldest first (a cluster's are made a minute ahead).
    pub occurrences: Vec<OccurrenceAnswer>,
    /// Who defined, paused, resumed it, when.
    pub history: Vec<AuditEntry>,
}

/// The answer to a pause or resume.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct SchedulePaused {
    pub name: String,
    pub paused: bool,
    /// False when it was so already.
    pub changed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ScheduleDeleted {
    pub name: String,
    pub deleted: bool,
}

/// The audit subject of a schedule.
fn subject(name: &str) -> String {
    format!("schedule/{name}")
}

/// Answers one schedule request.
pub(super) fn answer(
    core: &mut Master,
    s: &dyn Store,
    by: &Caller,
    now: Instant,
    req: ScheduleCall,
) -> Result<Value, ApiError> {
    match req {
        ScheduleCall::Put(req) => {
            let d = core.put_schedule(now, *req).map_err(ApiError::in_body)?;
            let action = format!("schedule defined (version {})", d.version);
            audit(core, by, &action, subject(&d.name));
            let next = next_occurrences(core, now, &d, NEXT.0 as usize, core.handovers());
            json(&ScheduleDefined {
                id: d.id,
                name: d.name,
                version: d.version,
                calendar: d.calendar,
                task: d.task,
                missed: d.missed,
                late_ms: d.late_ms,
                paused: d.paused,
                next,
            })
        }
        ScheduleCall::List(page) => json(&s.schedules(page)?),
        ScheduleCall::Show { name, next, recent } => {
            let schedule = s
                .schedule(&name)?
                .ok_or_else(|| RequestError::UnknownSchedule(name.clone()))?;
            let handovers = s.handovers(schedule.id)?;
            json(&ScheduleAnswer {
                next: next_occurrences(core, now, &schedule, next, handovers.iter()),
                handovers: handovers.iter().map(handover).collect(),
                occurrences: latest_occurrences(s, schedule.id, recent)?,
                history: s.audit(&subject(&name))?,
                schedule,
            })
        }
        ScheduleCall::Pause { name, paused } => {
            let was = core
                .schedules()
                .find(|x| x.name == name)
                .map(|x| x.paused)
                .ok_or_else(|| RequestError::UnknownSchedule(name.clone()))?;
            let changed = was != paused;
            if changed {
                core.pause_schedule(now, &name, paused)?;
                let action = if paused {
                    "schedule paused"
                } else {
                    "schedule resumed"
                };
                audit(core, by, action, subject(&name));
            }
            json(&SchedulePaused {
                name,
                paused,
                changed,
            })
        }
        ScheduleCall::Delete(name) => {
            core.delete_schedule(now, &name)?;
            audit(core, by, "schedule deleted", subject(&name));
            json(&ScheduleDeleted {
                name,
                deleted: true,
            })
        }
    }
}

/// The next `n` occurrences of `schedule` (none while paused), each marked `held` when one of
/// `handovers` the agent accepted for this version holds it.
fn next_occurrences<'a>(
    core: &Master,
    now: Instant,
    schedule: &Schedule,
    n: usize,
    handovers: impl Iterator<Item = &'a Handover>,
) -> Vec<NextOccurrence> {
    if schedule.paused || n == 0 {
        return Vec::new();
    }
    let agent = match &schedule.task.target {
        Target::Agent(agent) => Some(agent.clone()),
        Target::Cluster(_) => None,
    };
    let held: Vec<&Handover> = handovers
        .filter(|h| h.schedule == schedule.id && h.version == schedule.version)
        .filter(|h| h.state == HandoverState::Held)
        .collect();
    core.next_occurrences(now, schedule.id, n)
        .into_iter()
        .map(|at_ms| NextOccurrence {
            at_ms,
            agent: agent.clone(),
            held: held.iter().any(|h| holds(h, at_ms)),
        })
        .collect()
}

/// Whether one of the hand-over's runs falls on `at`.
fn holds(h: &Handover, at: u64) -> bool {
    h.runs.iter().any(|r| {
        (r.first_ms..=r.last_ms()).contains(&at)
            && (r.period_ms == 0 || (at - r.first_ms) % r.period_ms == 0)
    })
}

fn handover(h: &Handover) -> HandoverAnswer {
    HandoverAnswer {
        task: h.task,
        agent: h.agent.clone(),
        version: h.version,
        state: h.state,
        first_ms: h.runs.first().map_or(0, |r| r.first_ms),
        last_ms: h.last_ms(),
        occurrences: h.occurrences(),
        created_ms: h.created_ms,
    }
}

/// The latest `n` occurrence tasks of a schedule, oldest first, each with its latest attempt.
fn latest_occurrences(
    s: &dyn Store,
    id: ScheduleId,
    n: usize,
) -> Result<Vec<OccurrenceAnswer>, ApiError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut latest = s.latest_occurrence_tasks(id, u32::try_from(n).unwrap_or(u32::MAX))?;
    latest.reverse();
    let mut out = Vec::with_capacity(latest.len());
    for task in latest {
        let Some(occurrence) = task.occurrence else {
            continue;
        };
        let attempt = s.attempts(task.id)?.into_iter().max_by_key(|a| a.id);
        out.push(OccurrenceAnswer {
            task: task.id,
            version: occurrence.version,
            at_ms: occurrence.at_ms,
            state: task.state,
            started_ms: attempt.as_ref().and_then(|a| a.started_ms),
            finished_ms: attempt.as_ref().and_then(|a| a.finished_ms),
            agent: attempt.map(|a| a.agent_id),
            outcome: task.outcome,
        });
    }
    Ok(out)
}
