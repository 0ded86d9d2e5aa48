//! The HTTP JSON API (axum). Handlers do not touch the core or the store: each sends a
//! [`ApiRequest`] to the master's single loop ([`crate::runtime`]) and waits for its answer, so
//! every request sees committed state and every write goes through the core.
//!
//! Errors are `{"error": "..."}` with a fitting status: 400 bad input, 404 unknown, 409 wrong
//! state, 500 store failure, 503 master stopping.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::core::{ClusterRequest, ErrorClass, ProfileRequest, RequestError, Submit};
use crate::model::TaskId;
use crate::store::StoreError;

/// What the API asks of the master loop.
#[derive(Debug)]
pub enum ApiRequest {
    Status,
    Agents,
    Clusters,
    Profiles,
    Tasks,
    Task(TaskId),
    Output(TaskId),
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
    /// Messages dropped because they did not authenticate.
    Security,
}

/// `POST /api/agents/{id}/key` body; an empty body keeps an existing key.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    #[serde(default)]
    pub rotate: bool,
}

/// A request and where its answer goes.
pub type Envelope = (ApiRequest, oneshot::Sender<Result<Value, ApiError>>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let status = match e.class() {
            ErrorClass::Invalid => 400,
            ErrorClass::NotFound => 404,
            ErrorClass::Conflict => 409,
        };
        Self::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound { .. } => 404,
            StoreError::Invalid(_) => 400,
            _ => 500,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

type Reply = Result<(StatusCode, axum::Json<Value>), ApiError>;

/// The router; `tx` reaches the master loop.
pub fn router(tx: mpsc::Sender<Envelope>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/status", get(status))
        .route("/api/agents", get(agents))
        .route("/api/agents/{id}/key", post(agent_key))
        .route("/api/keys", get(keys))
        .route("/api/security", get(security))
        .route("/api/clusters", get(clusters).post(put_cluster))
        .route("/api/profiles", get(profiles).post(put_profile))
        .route("/api/tasks", get(tasks).post(submit))
        .route("/api/tasks/{id}", get(task))
        .route("/api/tasks/{id}/output", get(output))
        .route("/api/tasks/{id}/kill", post(kill))
        .fallback(|| async { ApiError::new(404, "no such route") })
        .with_state(tx)
}

async fn ask(tx: &mpsc::Sender<Envelope>, req: ApiRequest, ok: StatusCode) -> Reply {
    let (reply, answer) = oneshot::channel();
    tx.send((req, reply))
        .await
        .map_err(|_| ApiError::new(503, "the master is stopping"))?;
    let value = answer
        .await
        .map_err(|_| ApiError::new(503, "the master is stopping"))??;
    Ok((ok, axum::Json(value)))
}

fn task_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::new(400, format!("task id '{text}' is not a number")))
}

fn body<T>(body: Result<axum::Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|axum::Json(v)| v)
        .map_err(|e| ApiError::new(400, format!("bad request body: {}", e.body_text())))
}

type Tx = State<mpsc::Sender<Envelope>>;

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../static/index.html"))
}

async fn status(State(tx): Tx) -> Reply {
    ask(&tx, ApiRequest::Status, StatusCode::OK).await
}

async fn agents(State(tx): Tx) -> Reply {
    ask(&tx, ApiRequest::Agents, StatusCode::OK).await
}

async fn keys(State(tx): Tx) -> Reply {
    ask(&tx, ApiRequest::Keys, StatusCode::OK).await
}

async fn security(State(tx): Tx) -> Reply {
    ask(&tx, ApiRequest::Security, StatusCode::OK).await
}

async fn agent_key(
    State(tx): Tx,
    Path(id): Path<String>,
    req: Result<axum::Json<KeyRequest>, JsonRejection>,
) -> Reply {
    // No body (or no JSON content type) means the defaults.
    let rotate = match req {
        Ok(axum::Json(r)) => r.rotate,
        Err(JsonRejection::MissingJsonContentType(_)) => false,
        Err(e) => {
            return Err(ApiError::new(
                400,
                format!("bad request body: {}", e.body_text()),
            ));
        }
    };
    ask(&tx, ApiRequest::AgentKey { id, rotate }, StatusCode::OK).await
}

async fn clusters(State(tx): Tx) -> Reply {
    ask(&tx, ApiRequest::Clusters, StatusCode::OK).await
}

async fn profiles(State(tx): Tx) -> Reply {
    ask(&tx, ApiRequest::Profiles, StatusCode::OK).await
}

async fn tasks(State(tx): Tx) -> Reply {
    ask(&tx, ApiRequest::Tasks, StatusCode::OK).await
}

async fn task(State(tx): Tx, Path(id): Path<String>) -> Reply {
    ask(&tx, ApiRequest::Task(task_id(&id)?), StatusCode::OK).await
}

async fn output(State(tx): Tx, Path(id): Path<String>) -> Reply {
    ask(&tx, ApiRequest::Output(task_id(&id)?), StatusCode::OK).await
}

async fn kill(State(tx): Tx, Path(id): Path<String>) -> Reply {
    ask(&tx, ApiRequest::Kill(task_id(&id)?), StatusCode::ACCEPTED).await
}

async fn submit(State(tx): Tx, req: Result<axum::Json<Submit>, JsonRejection>) -> Reply {
    ask(&tx, ApiRequest::Submit(body(req)?), StatusCode::CREATED).await
}

async fn put_cluster(
    State(tx): Tx,
    req: Result<axum::Json<ClusterRequest>, JsonRejection>,
) -> Reply {
    ask(&tx, ApiRequest::PutCluster(body(req)?), StatusCode::CREATED).await
}

async fn put_profile(
    State(tx): Tx,
    req: Result<axum::Json<ProfileRequest>, JsonRejection>,
) -> Reply {
    ask(&tx, ApiRequest::PutProfile(body(req)?), StatusCode::CREATED).await
}
