//! The routes of schedules: `POST/GET /api/schedules`, `GET/DELETE /api/schedules/{name}`,
//! `POST /api/schedules/{name}/pause` and `/resume`. Each checks its path and query here and
//! sends its request to the loop; the answers are built in [`super::schedule_answers`].

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;

use super::error::ErrorBody;
use super::schedule_answers::{ScheduleAnswer, ScheduleDefined, ScheduleDeleted, SchedulePaused};
use super::{ApiError, ApiRequest, By, Reply, Tx, ask, body, pages};
use crate::core::ScheduleRequest;
use crate::model::Schedule;
use crate::store::Page;

/// Next occurrences a schedule's page shows by default, and at most.
pub(super) const NEXT: (u32, u32) = (10, 100);
/// Recent occurrences a schedule's page shows by default, and at most.
const RECENT: (u32, u32) = (20, 1000);

/// What these routes ask of the master loop.
#[derive(Debug)]
pub enum ScheduleCall {
    /// A new schedule, or the next version of one (same name).
    Put(Box<ScheduleRequest>),
    /// A page of the schedules not deleted, in id order.
    List(Page),
    /// One schedule with its next `next` occurrences, its hand-overs and its `recent` latest
    /// occurrence tasks.
    Show {
        name: String,
        next: usize,
        recent: usize,
    },
    /// Pauses (`paused`) or resumes it.
    Pause {
        name: String,
        paused: bool,
    },
    Delete(String),
}

impl ScheduleCall {
    /// Whether it changes state (its answer waits for the batch's commit).
    pub fn writes(&self) -> bool {
        matches!(self, Self::Put(_) | Self::Pause { .. } | Self::Delete(_))
    }
}

/// `GET /api/schedules/{name}?next=N&recent=M`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ShowQuery {
    /// Next occurrences to list (0 to 100; 10 by default).
    next: Option<u32>,
    /// Latest occurrence tasks to list (0 to 1000; 20 by default).
    recent: Option<u32>,
}

/// `value` (or its default) if it is at most the maximum, else 422.
fn count(what: &str, value: Option<u32>, (default, max): (u32, u32)) -> Result<usize, ApiError> {
    match value.unwrap_or(default) {
        n if n <= max => Ok(n as usize),
        n => Err(ApiError::new(
            422,
            format!("{what} is {n}, outside 0..={max}"),
        )),
    }
}

async fn call(tx: Tx, by: By, req: ScheduleCall, ok: StatusCode) -> Reply {
    let (State(tx), Extension(by)) = (tx, by);
    ask(&tx, by, ApiRequest::Schedule(req), ok).await
}

#[utoipa::path(post, path = "/api/schedules", tag = "schedules",
    description = "Defines a schedule: a task (agent or cluster, argv, env, cwd, profile, policy) started on a calendar, given as exactly one of `cron` (five crontab fields) with `time_zone` (an IANA name, `UTC` by default), `every_ms` (from `start_ms`, or now) or `at_ms` (one-off dates, Unix ms). `missed` says what becomes of occurrences not started within `late_ms` of their time: `skip` (the default), `once` or `all`. A schedule on an agent is handed to that agent ahead of time, which starts its occurrences master or no master; on a cluster the master starts each. Defining an existing name makes its next version; it replaces what agents hold of the previous one.",
    request_body = ScheduleRequest,
    responses((status = 201, description = "The new version, with its next occurrences.", body = ScheduleDefined),
        (status = 422, description = "A calendar the master cannot use (a bad crontab, an unknown time zone, no form or two, an interval under 1 s), an unknown agent, cluster or profile, two targets or none, a bad policy or argv; the message says which and why.", body = ErrorBody<'_>)))]
pub(super) async fn create_schedule(
    tx: Tx,
    by: By,
    req: Result<axum::Json<ScheduleRequest>, JsonRejection>,
) -> Reply {
    let req = ScheduleCall::Put(Box::new(body(req)?));
    call(tx, by, req, StatusCode::CREATED).await
}

#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    params(pages::IdsQuery),
    responses((status = 200, description = "A page of the schedules not deleted, in id order, each at its latest version; the next page starts after the last id.", body = Vec<Schedule>),
        (status = 400, description = "A query that does not parse.", body = ErrorBody<'_>),
        (status = 422, description = "`limit` or `after` out of range.", body = ErrorBody<'_>)))]
pub(super) async fn list_schedules(
    tx: Tx,
    by: By,
    q: Result<Query<pages::IdsQuery>, QueryRejection>,
) -> Reply {
    let page = pages::query(q)?.checked()?;
    call(tx, by, ScheduleCall::List(page), StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name"), ShowQuery),
    responses((status = 200, description = "The schedule at its latest version, its next occurrences (none while paused), the hand-overs agents hold or held, its latest occurrence tasks (each with the version it ran under) and who changed it.", body = ScheduleAnswer),
        (status = 400, description = "A query that does not parse.", body = ErrorBody<'_>),
        (status = 404, description = "No such schedule (or it was deleted).", body = ErrorBody<'_>),
        (status = 422, description = "`next` or `recent` out of range.", body = ErrorBody<'_>)))]
pub(super) async fn show_schedule(
    tx: Tx,
    by: By,
    Path(name): Path<String>,
    q: Result<Query<ShowQuery>, QueryRejection>,
) -> Reply {
    let q = pages::query(q)?;
    let req = ScheduleCall::Show {
        name,
        next: count("next", q.next, NEXT)?,
        recent: count("recent", q.recent, RECENT)?,
    };
    call(tx, by, req, StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/schedules/{name}/pause", tag = "schedules",
    description = "Pauses a schedule: nothing more of it starts, and agents give back what they hold of it. Occurrences due while it is paused are not owed.",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, description = "The schedule is paused (`changed` is false if it was already).", body = SchedulePaused),
        (status = 404, description = "No such schedule.", body = ErrorBody<'_>)))]
pub(super) async fn pause_schedule(tx: Tx, by: By, Path(name): Path<String>) -> Reply {
    let req = ScheduleCall::Pause { name, paused: true };
    call(tx, by, req, StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/schedules/{name}/resume", tag = "schedules",
    description = "Resumes a paused schedule from its next occurrence.",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, description = "The schedule runs again (`changed` is false if it was not paused).", body = SchedulePaused),
        (status = 404, description = "No such schedule.", body = ErrorBody<'_>)))]
pub(super) async fn resume_schedule(tx: Tx, by: By, Path(name): Path<String>) -> Reply {
    let req = ScheduleCall::Pause {
        name,
        paused: false,
    };
    call(tx, by, req, StatusCode::OK).await
}

#[utoipa::path(delete, path = "/api/schedules/{name}", tag = "schedules",
    description = "Deletes a schedule: nothing more of it starts, agents give back what they hold of it; its occurrence tasks stay in the history. The name is free again.",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, description = "The schedule is deleted.", body = ScheduleDeleted),
        (status = 404, description = "No such schedule.", body = ErrorBody<'_>)))]
pub(super) async fn delete_schedule(tx: Tx, by: By, Path(name): Path<String>) -> Reply {
    call(tx, by, ScheduleCall::Delete(name), StatusCode::OK).await
}
