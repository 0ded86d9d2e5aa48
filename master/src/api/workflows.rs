//! The routes of workflows and orders: `POST/GET /api/workflows`, `GET /api/workflows/{name}`,
//! `POST/GET /api/orders`, `GET /api/orders/{id}`, `POST /api/orders/{id}/cancel`. Each checks
//! its path and query here and sends its request to the loop; the answers are built in
//! [`super::workflow_answers`].

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;

use super::error::ErrorBody;
use super::workflow_answers::{
    OrderAnswer, OrderCancelled, OrderCreated, WorkflowAnswer, WorkflowDefined,
};
use super::{ApiRequest, By, NamePage, Reply, Tx, ask, body, pages, path_id};
use crate::core::{OrderRequest, WorkflowRequest};
use crate::model::{Order, OrderId, OrderState, Workflow};
use crate::store::Page;

/// What these routes ask of the master loop.
#[derive(Debug)]
pub enum FlowRequest {
    /// A new version of a workflow (version 1 of a new name).
    PutWorkflow(WorkflowRequest),
    /// A page of workflows in name order, each at its latest version.
    Workflows(NamePage),
    /// One version of a workflow (its latest if `None`), with the list of its versions.
    Workflow {
        name: String,
        version: Option<u32>,
    },
    StartOrder(OrderRequest),
    /// A page of orders in id order, optionally in one state.
    Orders {
        page: Page,
        state: Option<OrderState>,
    },
    /// An order with its steps, their tasks and attempts.
    Order(OrderId),
    CancelOrder(OrderId),
}

impl FlowRequest {
    /// Whether it changes state (its answer waits for the batch's commit).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Self::PutWorkflow(_) | Self::StartOrder(_) | Self::CancelOrder(_)
        )
    }
}

/// `GET /api/workflows/{name}?version=N`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct VersionQuery {
    /// This version (from 1); the latest when absent.
    version: Option<u32>,
}

/// `GET /api/orders?limit=N&after=ID&state=S`: at most `limit` orders (default and maximum
/// 10000) with ids above `after`, in id order; the next page starts after the last id.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct OrdersQuery {
    /// At most this many (1 to 10000, the default).
    limit: Option<u32>,
    /// Only ids above this one.
    after: Option<u64>,
    /// Only orders in this state (`running`, `succeeded`, `failed`, `cancelled`).
    state: Option<String>,
}

#[utoipa::path(post, path = "/api/workflows", tag = "workflows",
    description = "Defines a workflow: its steps in order, each a task (agent or cluster, argv, env, cwd, profile, policy) with what its failure does (`on_failure`: `stop`, the default, or `continue`) and the wait before each of its retries. Defining an existing name makes its next version; orders keep the version they started with.",
    request_body = WorkflowRequest,
    responses((status = 201, description = "The new version.", body = WorkflowDefined),
        (status = 422, description = "No steps or too many (32 at most), or a step the master refuses (unknown agent, cluster or profile, a bad policy or argv); the message names the step.", body = ErrorBody<'_>)))]
pub(super) async fn create(
    State(tx): Tx,
    Extension(by): By,
    req: Result<axum::Json<WorkflowRequest>, JsonRejection>,
) -> Reply {
    let req = FlowRequest::PutWorkflow(body(req)?);
    ask(&tx, by, ApiRequest::Flow(req), StatusCode::CREATED).await
}

#[utoipa::path(get, path = "/api/workflows", tag = "workflows",
    params(pages::NamesQuery),
    responses((status = 200, description = "A page of workflows in name order, each at its latest version.", body = Vec<Workflow>),
        (status = 400, description = "A query that does not parse.", body = ErrorBody<'_>),
        (status = 422, description = "`limit` out of range.", body = ErrorBody<'_>)))]
pub(super) async fn list(
    State(tx): Tx,
    Extension(by): By,
    q: Result<Query<pages::NamesQuery>, QueryRejection>,
) -> Reply {
    let page = pages::query(q)?.checked()?;
    let req = FlowRequest::Workflows(page);
    ask(&tx, by, ApiRequest::Flow(req), StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "The workflow's name"), VersionQuery),
    responses((status = 200, description = "The version asked for (the latest by default), the list of its versions and who defined it.", body = WorkflowAnswer),
        (status = 400, description = "A query that does not parse.", body = ErrorBody<'_>),
        (status = 404, description = "No such workflow, or no such version of it.", body = ErrorBody<'_>)))]
pub(super) async fn show(
    State(tx): Tx,
    Extension(by): By,
    Path(name): Path<String>,
    q: Result<Query<VersionQuery>, QueryRejection>,
) -> Reply {
    let version = pages::query(q)?.version;
    let req = FlowRequest::Workflow { name, version };
    ask(&tx, by, ApiRequest::Flow(req), StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/orders", tag = "orders",
    description = "Starts an order: one run of a workflow version (the latest unless `version` is given). Its steps run one after the other, each as a task.",
    request_body = OrderRequest,
    responses((status = 201, description = "The order is running.", body = OrderCreated),
        (status = 422, description = "No such workflow, or no such version of it.", body = ErrorBody<'_>)))]
pub(super) async fn start(
    State(tx): Tx,
    Extension(by): By,
    req: Result<axum::Json<OrderRequest>, JsonRejection>,
) -> Reply {
    let req = FlowRequest::StartOrder(body(req)?);
    ask(&tx, by, ApiRequest::Flow(req), StatusCode::CREATED).await
}

#[utoipa::path(get, path = "/api/orders", tag = "orders",
    params(OrdersQuery),
    responses((status = 200, description = "A page of orders in id order; the next page starts after the last id.", body = Vec<Order>),
        (status = 400, description = "A query that does not parse.", body = ErrorBody<'_>),
        (status = 422, description = "`limit`, `after` or `state` out of range.", body = ErrorBody<'_>)))]
pub(super) async fn orders(
    State(tx): Tx,
    Extension(by): By,
    q: Result<Query<OrdersQuery>, QueryRejection>,
) -> Reply {
    let q = pages::query(q)?;
    let page = pages::id_page(q.limit, q.after)?;
    let state = pages::state(q.state.as_deref(), "an order state", OrderState::parse)?;
    let req = FlowRequest::Orders { page, state };
    ask(&tx, by, ApiRequest::Flow(req), StatusCode::OK).await
}

#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = u64, Path, description = "The order id")),
    responses((status = 200, description = "The order and each step of its workflow version: its task (none while it waits) and that task's attempts.", body = OrderAnswer),
        (status = 400, description = "The id is not a number.", body = ErrorBody<'_>),
        (status = 404, description = "No such order.", body = ErrorBody<'_>)))]
pub(super) async fn order(State(tx): Tx, Extension(by): By, Path(id): Path<String>) -> Reply {
    let req = FlowRequest::Order(path_id("order id", &id)?);
    ask(&tx, by, ApiRequest::Flow(req), StatusCode::OK).await
}

#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders",
    description = "Cancels a running order: the attempts of its open steps are killed (each as its policy says), later steps never start.",
    params(("id" = u64, Path, description = "The order id")),
    responses((status = 200, description = "The order is cancelled.", body = OrderCancelled),
        (status = 400, description = "The id is not a number.", body = ErrorBody<'_>),
        (status = 404, description = "No such order.", body = ErrorBody<'_>),
        (status = 409, description = "The order has already ended.", body = ErrorBody<'_>)))]
pub(super) async fn cancel(State(tx): Tx, Extension(by): By, Path(id): Path<String>) -> Reply {
    let req = FlowRequest::CancelOrder(path_id("order id", &id)?);
    ask(&tx, by, ApiRequest::Flow(req), StatusCode::OK).await
}
