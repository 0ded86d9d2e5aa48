//! The HTTP JSON API (axum). Handlers do not touch the core or the store: each sends a
//! [`ApiRequest`] to the master's single loop ([`crate::runtime`]) and waits for its answer, so
//! every request sees committed state and every write goes through the core.
//!
//! Every request first passes the [`Guard`] (`Host`, `Origin`, content type). Errors are
//! `{"error": "...", "code": "..."}` ([`ApiError`]): 400 malformed, 403 foreign origin, 404
//! unknown, 405 wrong method, 409 wrong state, 413 too large, 415 not JSON, 421 unknown host,
//! 422 invalid, 500 store failure, 503 master stopping.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::core::{ClusterRequest, ProfileRequest, Submit};
use crate::model::{Role, TaskId, TaskState};
use crate::store::Page;
use error::ErrorBody;

mod access;
pub mod answers;
mod dashboard;
mod error;
pub mod events;
mod exposition;
mod guard;
mod metrics;
mod openapi;
mod pages;
mod schedule_answers;
mod schedules;
mod stream;
mod tokens;
mod workflow_answers;
mod workflows;

pub use access::{SharedTokens, required_role};
pub use answers::{Context, answer};
pub use error::ApiError;
pub use events::Hub;
pub use guard::Guard;
pub use metrics::Observed;
pub use pages::NamePage;
pub use schedules::ScheduleCall;
pub use tokens::{Caller, Tokens, hash_hex, new_secret};
pub use workflows::FlowRequest;

/// What the API asks of the master loop.
#[derive(Debug)]
pub enum ApiRequest {
    Status,
    /// A page of agents in id order, optionally of one presence and availability.
    Agents {
        page: NamePage,
        presence: Option<crate::model::AgentPresence>,
        available: Option<bool>,
    },
    Clusters,
    Profiles,
    /// A page of tasks in id order, optionally in one state.
    Tasks {
        page: Page,
        state: Option<TaskState>,
    },
    Task(TaskId),
    Output(TaskId),
    /// At most `max` bytes of one stream of the task's latest attempt, from `since`.
    OutputFrom {
        id: TaskId,
        stream: tether_core::message::Stream,
        since: u64,
        max: usize,
    },
    Submit(Submit),
    Kill(TaskId),
    PutCluster(ClusterRequest),
    PutProfile(ProfileRequest),
    /// The master's public key(s), for agents' `master_keys`.
    Keys,
    /// An agent's MAC key: the stored one, or a new one if there is none or `rotate`.
    AgentKey {
        id: String,
        rotate: bool,
    },
    /// Switch-over: no new work for the agent (`disabled`), or again.
    SetAgentDisabled {
        id: String,
        disabled: bool,
    },
    /// Messages dropped because they did not authenticate.
    Security,
    /// A page of the API tokens in name order (never their secrets).
    Tokens(NamePage),
    /// A new token (or a new secret for an existing name); the secret is in this answer only.
    CreateToken(TokenRequest),
    RevokeToken(String),
    /// Workflows and orders.
    Flow(FlowRequest),
    /// Schedules.
    Schedule(ScheduleCall),
    /// `GET /metrics`: the Prometheus exposition, as one JSON string.
    Metrics,
    /// `GET /healthz`: store and broker connection.
    Health,
}

/// `POST /api/tokens` body.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub name: String,
    pub role: Role,
}

impl ApiRequest {
    /// Whether the answer depends on the batch's commit (it changes state).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Self::Submit(_)
                | Self::Kill(_)
                | Self::PutCluster(_)
                | Self::PutProfile(_)
                | Self::AgentKey { .. }
                | Self::SetAgentDisabled { .. }
                | Self::CreateToken(_)
                | Self::RevokeToken(_)
        ) || matches!(self, Self::Flow(f) if f.writes())
            || matches!(self, Self::Schedule(s) if s.writes())
    }
}

/// `POST /api/agents/{id}/key` body; an empty body keeps an existing key.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    #[serde(default)]
    pub rotate: bool,
}

/// A request, who asks, and where its answer goes.
#[derive(Debug)]
pub struct Asked {
    pub req: ApiRequest,
    pub by: Caller,
    pub reply: oneshot::Sender<Result<Value, ApiError>>,
}

pub type Envelope = Asked;

type Reply = Result<(StatusCode, axum::Json<Value>), ApiError>;

/// The router; `tx` reaches the master loop, `guard` says which names and origins it answers,
/// `hub` carries the committed changes to the event streams.
pub fn router(tx: mpsc::Sender<Envelope>, guard: Guard, tokens: SharedTokens, hub: Hub) -> Router {
    let guard = std::sync::Arc::new(guard);
    Router::new()
        .route("/", get(dashboard::index))
        .route("/ui/{file}", get(dashboard::file))
        .route("/api/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(metrics::healthz))
        .route("/api/status", get(status))
        .route("/api/whoami", get(whoami))
        .route("/api/agents", get(agents))
        .route("/api/agents/{id}/key", post(agent_key))
        .route("/api/agents/{id}/disable", post(disable_agent))
        .route("/api/agents/{id}/enable", post(enable_agent))
        .route("/api/keys", get(keys))
        .route("/api/security", get(security))
        .route("/api/clusters", get(clusters).post(put_cluster))
        .route("/api/profiles", get(profiles).post(put_profile))
        .route("/api/tasks", get(tasks).post(submit))
        .route("/api/tasks/{id}", get(task))
        .route("/api/tasks/{id}/output", get(stream::output))
        .route("/api/events", get(events::events))
        .route("/api/tasks/{id}/kill", post(kill))
        .route(
            "/api/workflows",
            get(workflows::list).post(workflows::create),
        )
        .route("/api/workflows/{name}", get(workflows::show))
        .route("/api/orders", get(workflows::orders).post(workflows::start))
        .route("/api/orders/{id}", get(workflows::order))
        .route("/api/orders/{id}/cancel", post(workflows::cancel))
        .route(
            "/api/schedules",
            get(schedules::list_schedules).post(schedules::create_schedule),
        )
        .route(
            "/api/schedules/{name}",
            get(schedules::show_schedule).delete(schedules::delete_schedule),
        )
        .route(
            "/api/schedules/{name}/pause",
            post(schedules::pause_schedule),
        )
        .route(
            "/api/schedules/{name}/resume",
            post(schedules::resume_schedule),
        )
        .route("/api/tokens", get(list_tokens).post(create_token))
        .route("/api/tokens/{name}", delete(revoke_token))
        .fallback(|| async { ApiError::new(404, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(405, "this route does not take that method")
        })
        .with_state(tx)
        .layer(Extension(hub))
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            access::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
}

async fn ask(tx: &mpsc::Sender<Envelope>, by: Caller, req: ApiRequest, ok: StatusCode) -> Reply {
    let (reply, answer) = oneshot::channel();
    tx.send(Asked { req, by, reply })
        .await
        .map_err(|_| ApiError::new(503, "the master is stopping"))?;
    let value = answer
        .await
        .map_err(|_| ApiError::new(503, "the master is stopping"))??;
    Ok((ok, axum::Json(value)))
}

/// An id in a URL (`what` is `task id`, `order id`): a number in the ids' range, or 400.
fn path_id(what: &'static str, text: &str) -> Result<u64, ApiError> {
    let id = text
        .parse()
        .map_err(|_| ApiError::new(400, format!("{what} '{text}' is not a number")))?;
    crate::limits::check_id(what, id).map_err(|e| ApiError::new(400, e.reason))
}

fn task_id(text: &str) -> Result<TaskId, ApiError> {
    path_id("task id", text)
}

fn body<T>(body: Result<axum::Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|axum::Json(v)| v).map_err(|e| ApiError::body(&e))
}

type Tx = State<mpsc::Sender<Envelope>>;
/// The caller, put there by the token check.
type By = Extension<Caller>;

/// `GET /api/whoami`: the calling token's name and role, so the dashboard shows an operator's
/// controls only to operators (the routes refuse them to viewers anyway).
#[utoipa::path(get, path = "/api/whoami", tag = "master",
    responses((status = 200, description = "The calling token's name and role.", body = answers::WhoAmI)))]
async fn whoami(Extension(by): By) -> axum::Json<answers::WhoAmI> {
    axum::Json(answers::WhoAmI {
        name: by.name,
        role: by.role,
    })
}

/// `GET /api/openapi.json`: this API described, derived from the handlers and their types.
#[utoipa::path(get, path = "/api/openapi.json", tag = "master",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)))]
async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi::document())
}

#[utoipa::path(get, path = "/api/status", tag = "master",
    responses((status = 200, description = "The master's status and counters.", body = answers::StatusAnswer)))]
async fn status(State(tx): Tx, Extension(by): By) -> Reply {
    ask(&tx, by, ApiRequest::Status, StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/agents", tag = "agents",
    params(pages::AgentsQuery),
    responses((status = 400, description = "A query that does not parse.", body = ErrorBody<'_>),
        (status = 422, description = "`limit` or `presence` out of range.", body = ErrorBody<'_>),
        (status = 200, description = "Every agent the master knows, live view.", body = Vec<answers::AgentAnswer<'_>>)))]
async fn agents(
    State(tx): Tx,
    Extension(by): By,
    q: Result<Query<pages::AgentsQuery>, QueryRejection>,
) -> Reply {
    let (page, presence, available) = pages::query(q)?.checked()?;
    let req = ApiRequest::Agents {
        page,
        presence,
        available,
    };
    ask(&tx, by, req, StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/keys", tag = "agents",
    responses((status = 200, description = "The master's public key(s), for agents' `master_keys`.", body = answers::KeysAnswer)))]
async fn keys(State(tx): Tx, Extension(by): By) -> Reply {
    ask(&tx, by, ApiRequest::Keys, StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/security", tag = "agents",
    responses((status = 200, description = "Messages dropped because they did not authenticate.", body = answers::SecurityAnswer<'_>)))]
async fn security(State(tx): Tx, Extension(by): By) -> Reply {
    ask(&tx, by, ApiRequest::Security, StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/agents/{id}/key", tag = "agents",
    description = "The agent's MAC key: the stored one, or a new one if there is none or `rotate`. An empty body keeps an existing key.",
    params(("id" = String, Path, description = "The agent id")),
    request_body(content = KeyRequest, description = "Optional"),
    responses((status = 200, description = "The key, with the master's public keys.", body = answers::AgentKeyAnswer)))]
async fn agent_key(
    State(tx): Tx,
    Extension(by): By,
    Path(id): Path<String>,
    req: Result<axum::Json<KeyRequest>, JsonRejection>,
) -> Reply {
    // No body (or no JSON content type) means the defaults.
    let rotate = match req {
        Ok(axum::Json(r)) => r.rotate,
        Err(JsonRejection::MissingJsonContentType(_)) => false,
        Err(e) => return Err(ApiError::body(&e)),
    };
    ask(&tx, by, ApiRequest::AgentKey { id, rotate }, StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/agents/{id}/disable", tag = "agents",
    description = "Switch-over: the agent gets no new tasks (its clusters use the next member); what it runs finishes. Not a failure.",
    params(("id" = String, Path, description = "The agent id")),
    responses((status = 200, description = "The agent is disabled.", body = answers::AgentSwitched),
        (status = 404, description = "No such agent.", body = ErrorBody<'_>)))]
async fn disable_agent(State(tx): Tx, Extension(by): By, Path(id): Path<String>) -> Reply {
    let req = ApiRequest::SetAgentDisabled { id, disabled: true };
    ask(&tx, by, req, StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/agents/{id}/enable", tag = "agents",
    description = "Ends a switch-over: the agent takes new tasks again.",
    params(("id" = String, Path, description = "The agent id")),
    responses((status = 200, description = "The agent is enabled.", body = answers::AgentSwitched),
        (status = 404, description = "No such agent.", body = ErrorBody<'_>)))]
async fn enable_agent(State(tx): Tx, Extension(by): By, Path(id): Path<String>) -> Reply {
    let req = ApiRequest::SetAgentDisabled {
        id,
        disabled: false,
    };
    ask(&tx, by, req, StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/clusters", tag = "clusters",
    responses((status = 200, description = "Every cluster, by name.", body = Vec<crate::model::Cluster>)))]
async fn clusters(State(tx): Tx, Extension(by): By) -> Reply {
    ask(&tx, by, ApiRequest::Clusters, StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/profiles", tag = "profiles",
    responses((status = 200, description = "Every profile, by name.", body = Vec<crate::model::Profile>)))]
async fn profiles(State(tx): Tx, Extension(by): By) -> Reply {
    ask(&tx, by, ApiRequest::Profiles, StatusCode::OK).await
}

/// `GET /api/tasks?limit=N&after=ID&state=S`: at most `limit` tasks (default and maximum
/// [`MAX_PAGE`]) with ids above `after`, in id order; the next page starts after the last id.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TasksQuery {
    /// At most this many (1 to 10000, the default).
    limit: Option<u32>,
    /// Only ids above this one.
    after: Option<u64>,
    /// Only tasks in this state (`pending`, `running`, `finished`, ...).
    state: Option<String>,
}

/// The most tasks one answer holds.
pub const MAX_PAGE: u32 = 10_000;

#[utoipa::path(get, path = "/api/tasks", tag = "tasks",
    params(TasksQuery),
    responses((status = 200, description = "A page of tasks in id order; the next page starts after the last id.", body = Vec<crate::model::Task>),
        (status = 400, description = "A query that does not parse.", body = ErrorBody<'_>),
        (status = 422, description = "`limit`, `after` or `state` out of range.", body = ErrorBody<'_>)))]
async fn tasks(
    State(tx): Tx,
    Extension(by): By,
    query: Result<Query<TasksQuery>, QueryRejection>,
) -> Reply {
    let q = pages::query(query)?;
    let page = pages::id_page(q.limit, q.after)?;
    let state = pages::state(q.state.as_deref(), "a task state", TaskState::parse)?;
    ask(&tx, by, ApiRequest::Tasks { page, state }, StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = u64, Path, description = "The task id")),
    responses((status = 200, description = "The task, its attempts, events and history.", body = answers::TaskAnswer),
        (status = 400, description = "The id is not a number.", body = ErrorBody<'_>),
        (status = 404, description = "No such task.", body = ErrorBody<'_>)))]
async fn task(State(tx): Tx, Extension(by): By, Path(id): Path<String>) -> Reply {
    ask(&tx, by, ApiRequest::Task(task_id(&id)?), StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/tasks/{id}/kill", tag = "tasks",
    params(("id" = u64, Path, description = "The task id")),
    responses((status = 202, description = "The kill is on its way.", body = answers::KillAnswer),
        (status = 400, description = "The id is not a number.", body = ErrorBody<'_>),
        (status = 404, description = "No such task.", body = ErrorBody<'_>),
        (status = 409, description = "The task has already finished.", body = ErrorBody<'_>)))]
async fn kill(State(tx): Tx, Extension(by): By, Path(id): Path<String>) -> Reply {
    ask(
        &tx,
        by,
        ApiRequest::Kill(task_id(&id)?),
        StatusCode::ACCEPTED,
    )
    .await
}

#[utoipa::path(post, path = "/api/tasks", tag = "tasks",
    request_body = Submit,
    responses((status = 201, description = "The task was created.", body = answers::Created),
        (status = 404, description = "No such agent, cluster or profile.", body = ErrorBody<'_>)))]
async fn submit(
    State(tx): Tx,
    Extension(by): By,
    req: Result<axum::Json<Submit>, JsonRejection>,
) -> Reply {
    ask(&tx, by, ApiRequest::Submit(body(req)?), StatusCode::CREATED).await
}

#[utoipa::path(post, path = "/api/clusters", tag = "clusters",
    request_body = ClusterRequest,
    responses((status = 201, description = "The cluster is defined (members never seen are warned about).", body = answers::ClusterDefined)))]
async fn put_cluster(
    State(tx): Tx,
    Extension(by): By,
    req: Result<axum::Json<ClusterRequest>, JsonRejection>,
) -> Reply {
    ask(
        &tx,
        by,
        ApiRequest::PutCluster(body(req)?),
        StatusCode::CREATED,
    )
    .await
}

#[utoipa::path(post, path = "/api/profiles", tag = "profiles",
    request_body = ProfileRequest,
    responses((status = 201, description = "The profile is defined.", body = answers::Named)))]
async fn put_profile(
    State(tx): Tx,
    Extension(by): By,
    req: Result<axum::Json<ProfileRequest>, JsonRejection>,
) -> Reply {
    ask(
        &tx,
        by,
        ApiRequest::PutProfile(body(req)?),
        StatusCode::CREATED,
    )
    .await
}

#[utoipa::path(get, path = "/api/tokens", tag = "tokens",
    params(pages::NamesQuery),
    responses((status = 400, description = "A query that does not parse.", body = ErrorBody<'_>),
        (status = 422, description = "`limit` out of range.", body = ErrorBody<'_>),
        (status = 200, description = "The API tokens, never their secrets.", body = Vec<crate::model::ApiToken>)))]
async fn list_tokens(
    State(tx): Tx,
    Extension(by): By,
    q: Result<Query<pages::NamesQuery>, QueryRejection>,
) -> Reply {
    let page = pages::query(q)?.checked()?;
    ask(&tx, by, ApiRequest::Tokens(page), StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/tokens", tag = "tokens",
    request_body = TokenRequest,
    responses((status = 201, description = "A new token, or a new secret for an existing name; the secret is in this answer only.", body = answers::TokenAnswer),
        (status = 409, description = "That would leave no live admin token.", body = ErrorBody<'_>)))]
async fn create_token(
    State(tx): Tx,
    Extension(by): By,
    req: Result<axum::Json<TokenRequest>, JsonRejection>,
) -> Reply {
    ask(
        &tx,
        by,
        ApiRequest::CreateToken(body(req)?),
        StatusCode::CREATED,
    )
    .await
}

#[utoipa::path(delete, path = "/api/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "The token's name")),
    responses((status = 200, description = "The token is revoked.", body = answers::RevokedAnswer),
        (status = 404, description = "No live token of that name.", body = ErrorBody<'_>)))]
async fn revoke_token(State(tx): Tx, Extension(by): By, Path(name): Path<String>) -> Reply {
    ask(&tx, by, ApiRequest::RevokeToken(name), StatusCode::OK).await
}
