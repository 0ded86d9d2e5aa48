//! The OpenAPI document of the API, derived from the handlers' `#[utoipa::path]` attributes and
//! the typed requests and answers; served at `GET /api/openapi.json`.
//!
//! What every route shares is added here once, from the code that enforces it: the role from
//! [`required_role`] (as `x-required-role`, in the description and as the bearer requirement),
//! and the errors of the token check, the loop and the body extractor.

use axum::http::Method;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::answers::{
    AgentAnswer, AgentKeyAnswer, AgentSwitched, ChunkAnswer, ClusterDefined, Created, EventAnswer,
    KeysAnswer, KillAnswer, Named, OutputAnswer, RevokedAnswer, SecurityAnswer, StatusAnswer,
    TaskAnswer, TokenAnswer, WhoAmI,
};
use super::error::ErrorBody;
use super::schedule_answers::{
    HandoverAnswer, NextOccurrence, OccurrenceAnswer, ScheduleAnswer, ScheduleDefined,
    ScheduleDeleted, SchedulePaused,
};
use super::workflow_answers::{
    OrderAnswer, OrderCancelled, OrderCreated, StepAnswer, WorkflowAnswer, WorkflowDefined,
};
use super::{KeyRequest, TokenRequest, required_role};
use crate::calendar::CalendarSpec;
use crate::core::{
    ClusterRequest, OrderRequest, PolicyOverrides, ProfileRequest, ScheduleRequest, SecurityCounts,
    Stats, StepRequest, Submit, WorkflowRequest,
};
use crate::model::{
    AgentPresence, ApiToken, Attempt, AttemptState, AuditEntry, Cluster, ClusterMode,
    HandoverState, Missed, OccurrenceRef, OnFailure, Order, OrderState, Outcome, Profile, Role,
    Schedule, ScheduledTask, Step, StepRef, Target, Task, TaskPolicy, TaskState, Workflow,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tether master API", description = "Tasks on small Linux boards, over MQTT."),
    paths(
        super::openapi_json,
        super::metrics::metrics,
        super::metrics::healthz,
        super::status,
        super::whoami,
        super::agents,
        super::agent_key,
        super::disable_agent,
        super::enable_agent,
        super::keys,
        super::security,
        super::clusters,
        super::put_cluster,
        super::profiles,
        super::put_profile,
        super::tasks,
        super::submit,
        super::task,
        super::stream::output,
        super::events::events,
        super::kill,
        super::workflows::create,
        super::workflows::list,
        super::workflows::show,
        super::workflows::start,
        super::workflows::orders,
        super::workflows::order,
        super::workflows::cancel,
        super::schedules::create_schedule,
        super::schedules::list_schedules,
        super::schedules::show_schedule,
        super::schedules::pause_schedule,
        super::schedules::resume_schedule,
        super::schedules::delete_schedule,
        super::list_tokens,
        super::create_token,
        super::revoke_token,
    ),
    components(schemas(
        ErrorBody<'_>, StatusAnswer, Stats, AgentAnswer<'_>, SecurityCounts, AgentKeyAnswer, KeyRequest,
        KeysAnswer, SecurityAnswer<'_>, Cluster, ClusterMode, ClusterRequest, ClusterDefined, Profile,
        ProfileRequest, PolicyOverrides, TaskPolicy, Task, Target, TaskState, Outcome, Attempt,
        AttemptState, AgentPresence, EventAnswer, AuditEntry, TaskAnswer, OutputAnswer,
        ChunkAnswer, Submit, Created, KillAnswer, Named, ApiToken, Role, TokenRequest,
        TokenAnswer, RevokedAnswer, AgentSwitched, WhoAmI, super::metrics::HealthAnswer,
        Workflow, Step, OnFailure, Order, OrderState, StepRef, WorkflowRequest, StepRequest,
        OrderRequest, WorkflowAnswer, WorkflowDefined, OrderCreated, OrderCancelled, OrderAnswer, StepAnswer,
        ScheduleRequest, CalendarSpec, Missed, Schedule, ScheduledTask, OccurrenceRef, HandoverState,
        ScheduleDefined, ScheduleAnswer, NextOccurrence, HandoverAnswer, OccurrenceAnswer,
        SchedulePaused, ScheduleDeleted,
    )),
    modifiers(&Shared),
)]
struct ApiDoc;

/// The document (built per request: it is small and rarely asked for).
pub(super) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Adds the bearer scheme, each operation's role and the errors every route shares.
struct Shared;

const BEARER: &str = "bearer";

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            // A concrete path for the access table: every parameter is a plain segment.
            let concrete = concrete(path);
            let ops = [
                (Method::GET, &mut item.get),
                (Method::HEAD, &mut item.head),
                (Method::POST, &mut item.post),
                (Method::DELETE, &mut item.delete),
                (Method::PUT, &mut item.put),
                (Method::PATCH, &mut item.patch),
            ];
            for (method, op) in ops {
                if let Some(op) = op.as_mut() {
                    describe(op, &method, &concrete);
                }
            }
        }
    }
}

/// `/api/tasks/{id}/kill` as `/api/tasks/1/kill`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn describe(op: &mut Operation, method: &Method, path: &str) {
    // One handler serves GET and HEAD; operation ids must still be unique.
    if *method == Method::HEAD {
        op.operation_id = op.operation_id.take().map(|id| format!("{id}_head"));
    }
    let role = required_role(method, path);
    let who = role.map_or("public", |r| r.as_str());
    let line = match role {
        Some(r) => format!("Needs a bearer token of role `{r}` or higher."),
        None => "Public: no token needed.".to_owned(),
    };
    op.description = Some(match op.description.take() {
        Some(d) => format!("{d}\n\n{line}"),
        None => line,
    });
    let ext = op.extensions.get_or_insert_with(Default::default);
    ext.insert("x-required-role".to_owned(), serde_json::json!(who));
    let mut errors: Vec<(u16, &str)> = vec![(503, "The master is stopping.")];
    if role.is_some() {
        op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        errors.push((401, "No valid bearer token."));
        errors.push((
            403,
            "The token's role is too low, or the `Origin` is foreign.",
        ));
    }
    if *method != Method::GET && *method != Method::HEAD {
        errors.push((507, "The master's disk is full: nothing was changed."));
    }
    if op.request_body.is_some() {
        errors.push((400, "Malformed JSON."));
        errors.push((413, "The body is too large."));
        errors.push((415, "The body is not `application/json`."));
        errors.push((422, "The request is not valid."));
    }
    for (status, text) in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error(text).into());
    }
}

/// An error answer: `{"error", "code"}`.
fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}
