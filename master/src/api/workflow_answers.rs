//! The answers of the workflow and order routes: writes go through the core (each recorded
//! in the audit trail under `workflow/NAME/VERSION` or `order/ID`), reads come from the
//! committed store.

use serde::Serialize;
use serde_json::Value;
use tether_core::Instant;

use super::ApiError;
use super::answers::{audit, json};
use super::tokens::Caller;
use super::workflows::FlowRequest;
use crate::core::{Master, RequestError};
use crate::model::{
    Attempt, AuditEntry, OnFailure, Order, OrderId, OrderState, Outcome, Step, Target, TaskId,
    Workflow,
};
use crate::store::Store;

/// `GET /api/workflows/{name}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WorkflowAnswer {
    pub workflow: Workflow,
    /// Every version of the workflow, ascending.
    pub versions: Vec<u32>,
    /// Who defined this version, when.
    pub history: Vec<AuditEntry>,
}

/// `POST /api/workflows`: the version defined (its time is the commit's: in the reads).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct WorkflowDefined {
    pub name: String,
    pub version: u32,
    /// Its steps, each policy resolved (profile and overrides).
    pub steps: Vec<Step>,
}

/// `POST /api/orders`: the new order and the version it runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct OrderCreated {
    pub id: OrderId,
    pub workflow: String,
    pub version: u32,
    pub state: OrderState,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct OrderCancelled {
    pub id: OrderId,
    pub state: OrderState,
}

/// One step of an order: the workflow version's step, its task and that task's attempts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct StepAnswer {
    /// From 0, as a step task's `order.step`.
    pub index: u32,
    pub name: String,
    pub target: Target,
    pub on_failure: OnFailure,
    /// The step's task, once made.
    pub task: Option<TaskId>,
    /// `waiting` while the step has no task yet (it waits for the steps before it, or for
    /// the master when it runs on another agent than the step before); `not_run` when the
    /// order ended before it got one; else its task's state.
    #[schema(example = "waiting")]
    pub status: String,
    /// How its task ended.
    pub outcome: Option<Outcome>,
    /// Its task's attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

/// `GET /api/orders/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct OrderAnswer {
    pub order: Order,
    pub steps: Vec<StepAnswer>,
    /// Who started and cancelled it, when.
    pub history: Vec<AuditEntry>,
}

/// The audit subject of one workflow version.
fn version_subject(name: &str, version: u32) -> String {
    format!("workflow/{name}/{version}")
}

/// Answers one workflow or order request.
pub(super) fn answer(
    core: &mut Master,
    s: &dyn Store,
    by: &Caller,
    now: Instant,
    req: FlowRequest,
) -> Result<Value, ApiError> {
    match req {
        FlowRequest::PutWorkflow(req) => {
            let w = core.put_workflow(now, req)?;
            let subject = version_subject(&w.name, w.version);
            audit(core, by, "workflow defined", subject);
            json(&WorkflowDefined {
                name: w.name,
                version: w.version,
                steps: w.steps,
            })
        }
        FlowRequest::Workflows(page) => json(&page.take(s.workflows()?, |w| w.name.as_str())),
        FlowRequest::Workflow { name, version } => {
            let Some(workflow) = s.workflow(&name, version)? else {
                let why = match version {
                    Some(v) => format!("workflow '{name}' has no version {v}"),
                    None => format!("no workflow '{name}'"),
                };
                return Err(ApiError::new(404, why));
            };
            json(&WorkflowAnswer {
                versions: s.workflow_versions(&name)?,
                history: s.audit(&version_subject(&name, workflow.version))?,
                workflow,
            })
        }
        FlowRequest::StartOrder(req) => {
            // The core's versions: one defined in this batch is not stored yet.
            let latest = core
                .workflow_versions(&req.workflow)
                .last()
                .map(|w| w.version);
            let version = req.version.or(latest).unwrap_or(0);
            let workflow = req.workflow.clone();
            let id = core.start_order(now, req)?;
            audit(core, by, "order started", format!("order/{id}"));
            json(&OrderCreated {
                id,
                workflow,
                version,
                state: OrderState::Running,
            })
        }
        FlowRequest::Orders { page, state } => json(&s.orders(page, state)?),
        FlowRequest::Order(id) => json(&order(s, id)?),
        FlowRequest::CancelOrder(id) => {
            cancel(core, s, now, id)?;
            audit(core, by, "order cancelled", format!("order/{id}"));
            json(&OrderCancelled {
                id,
                state: OrderState::Cancelled,
            })
        }
    }
}

/// Cancels through the core, which follows running orders only: an order it does not know
/// is either ended (the store has it: 409) or unknown (404).
fn cancel(core: &mut Master, s: &dyn Store, now: Instant, id: OrderId) -> Result<(), ApiError> {
    match core.cancel_order(now, id) {
        Err(RequestError::UnknownOrder(_)) => Err(match s.order(id)? {
            Some(o) if o.state.is_terminal() => RequestError::OrderEnded {
                order: id,
                state: o.state,
            }
            .into(),
            // Ended in a batch not yet committed.
            Some(_) => ApiError::new(409, format!("order {id} has already ended")),
            None => RequestError::UnknownOrder(id).into(),
        }),
        done => Ok(done?),
    }
}

/// The order with each step of its workflow version, from the store.
fn order(s: &dyn Store, id: OrderId) -> Result<OrderAnswer, ApiError> {
    let order = s.order(id)?.ok_or(RequestError::UnknownOrder(id))?;
    let workflow = s
        .workflow(&order.workflow, Some(order.version))?
        .ok_or_else(|| {
            ApiError::new(
                500,
                format!(
                    "order {id}: workflow '{}' version {} is missing",
                    order.workflow, order.version
                ),
            )
        })?;
    let tasks = s.order_tasks(id)?;
    let mut steps = Vec::with_capacity(workflow.steps.len());
    for (index, step) in (0u32..).zip(workflow.steps) {
        // A step has one task; the latest, should it ever have had more.
        let task = tasks
            .iter()
            .filter(|t| t.order.is_some_and(|r| r.step == index))
            .max_by_key(|t| t.id);
        let (status, attempts) = match task {
            Some(t) => (t.state.as_str(), s.attempts(t.id)?),
            None if order.state.is_terminal() => ("not_run", Vec::new()),
            None => ("waiting", Vec::new()),
        };
        steps.push(StepAnswer {
            index,
            name: step.name,
            target: step.target,
            on_failure: step.on_failure,
            task: task.map(|t| t.id),
            status: status.to_owned(),
            outcome: task.and_then(|t| t.outcome.clone()),
            attempts,
        });
    }
    Ok(OrderAnswer {
        history: s.audit(&format!("order/{id}"))?,
        order,
        steps,
    })
}
