//! Orders on their way through a workflow version: which step is due, which later steps are
//! handed to an agent ahead of their turn, and what a step's end does to its order.
//!
//! Each step runs as a task. The *cursor* is the first step that has not ended; its task is
//! dispatched like any other. A following step may go out early, chained behind the step
//! before it ([`tether_core::message::CommandBody::StartAfter`]), when both are bound to the
//! same agent (one agent, or one fixed-priority cluster, and the step before has an open
//! attempt there): the agent runs the chain on its own while the master is unreachable. A
//! step on another agent or a round-robin cluster waits for the master. At most
//! [`HANDOVER`] steps beyond the cursor are out at once.
//!
//! When a chained step is skipped by its agent (the step before did not end as its `run_if`
//! requires) its attempt ends without counting against it, and it waits for the cursor again:
//! the step before may still be retried, or the order ends.

use std::sync::Arc;

use log::info;
use tether_core::message::{After, RunIf, TaskRef};
use tether_core::{Duration, Instant};

use super::workflows::step_task;
use super::{Change, Master, TaskEntry};
use crate::model::{
    AttemptId, ClusterMode, HANDOVER, OnFailure, Order, OrderId, OrderState, Outcome, StepRef,
    Target, TaskId, TaskState, Workflow,
};

/// A running order as the core follows it.
#[derive(Debug, Clone)]
pub(super) struct OrderEntry {
    pub(super) order: Order,
    pub(super) workflow: Arc<Workflow>,
    /// Per step: its task, once made.
    pub(super) tasks: Vec<Option<TaskId>>,
    /// Per step: how its task ended, once it has.
    pub(super) ends: Vec<Option<TaskState>>,
    /// The first step that has not ended.
    pub(super) cursor: usize,
    /// The agent of the last step that ended (a round-robin cluster goes on after it).
    pub(super) last_agent: Option<String>,
}

impl OrderEntry {
    pub(super) fn new(order: Order, workflow: Arc<Workflow>) -> Self {
        let n = workflow.steps.len();
        Self {
            order,
            workflow,
            tasks: vec![None; n],
            ends: vec![None; n],
            cursor: 0,
            last_agent: None,
        }
    }
}

/// Whether a step task may get an attempt now, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Gate {
    /// Not a step, or the order's current step: placed like any task.
    Open,
    /// A later step: only behind the step before, on its agent.
    Chained { agent: String, after: After },
    /// Waits for the steps before it (or its order has ended).
    Closed,
}

/// Whether step `next` may be handed to the agent of step `prev` ahead of its turn.
fn chains(prev: &Target, next: &Target, mode: impl Fn(&str) -> Option<ClusterMode>) -> bool {
    match (prev, next) {
        (Target::Agent(a), Target::Agent(b)) => a == b,
        (Target::Cluster(a), Target::Cluster(b)) => {
            a == b && mode(a) == Some(ClusterMode::FixedPriority)
        }
        _ => false,
    }
}

/// Which end of the step before lets a chained step run: its success; or any end for a
/// `continue` step, once it has no retry left (its retries come before `continue`: a step
/// chained behind a failed attempt that will be retried is skipped by its agent and chained
/// again behind the retry).
fn chained_run_if(before: &crate::model::Step) -> RunIf {
    match before.on_failure {
        OnFailure::Continue if before.policy.retries == 0 => RunIf::Finished,
        _ => RunIf::Succeeded,
    }
}

impl Master {
    /// Rebuilds the running orders from the snapshot's workflows, orders and step tasks.
    pub(super) fn restore_orders(
        &mut self,
        snap_orders: Vec<Order>,
        steps: Vec<crate::model::StepTask>,
    ) {
        for order in snap_orders {
            let Some(workflow) = self.workflow_version(&order.workflow, order.version) else {
                log::error!(
                    "order {}: workflow {} version {} is missing; the order is not followed",
                    order.id,
                    order.workflow,
                    order.version
                );
                continue;
            };
            self.orders
                .insert(order.id, OrderEntry::new(order, workflow));
        }
        for s in steps {
            let Some(o) = self.orders.get_mut(&s.step.order) else {
                continue;
            };
            let i = s.step.step as usize;
            if i < o.tasks.len() {
                o.tasks[i] = Some(s.task);
                o.ends[i] = s.state.is_terminal().then_some(s.state);
            }
        }
        // Step tasks get their retry delay back.
        let delays: Vec<(TaskId, Duration)> = self
            .orders
            .values()
            .flat_map(|o| {
                o.tasks.iter().enumerate().filter_map(|(i, t)| {
                    t.map(|t| (t, Duration::from_millis(o.workflow.steps[i].retry_delay_ms)))
                })
            })
            .collect();
        for (task, delay) in delays {
            if let Some(t) = self.tasks.get_mut(&task) {
                t.retry_delay = delay;
            }
        }
    }

    pub(super) fn workflow_version(&self, name: &str, version: u32) -> Option<Arc<Workflow>> {
        self.workflows
            .get(name)?
            .iter()
            .find(|w| w.version == version)
            .cloned()
    }

    /// Every running order moves on as far as its steps' ends allow: ended steps are passed,
    /// the next step's task is made, and so are the tasks of the steps that may be chained
    /// behind it. Runs once per input, after the deadlines (which may end tasks).
    pub(super) fn progress_orders(&mut self, now: Instant) {
        let running: Vec<OrderId> = self
            .orders
            .iter()
            .filter(|(_, o)| !o.order.state.is_terminal())
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            self.progress_order(now, id);
        }
        self.orders.retain(|_, o| !o.order.state.is_terminal());
    }

    fn progress_order(&mut self, now: Instant, id: OrderId) {
        // Ends the core still holds are recorded before settled tasks are dropped.
        let ends: Vec<(usize, TaskState, Option<String>)> = {
            let Some(o) = self.orders.get(&id) else {
                return;
            };
            o.tasks
                .iter()
                .enumerate()
                .filter(|(i, _)| o.ends[*i].is_none())
                .filter_map(|(i, t)| {
                    let t = self.tasks.get(&(*t)?)?;
                    let agent = t.attempts.last().map(|a| a.agent.clone());
                    t.task
                        .state
                        .is_terminal()
                        .then_some((i, t.task.state, agent))
                })
                .collect()
        };
        let Some(o) = self.orders.get_mut(&id) else {
            return;
        };
        for (i, state, agent) in ends {
            o.ends[i] = Some(state);
            if agent.is_some() {
                o.last_agent = agent;
            }
        }
        loop {
            let Some(o) = self.orders.get_mut(&id) else {
                return;
            };
            let i = o.cursor;
            let Some(step) = o.workflow.steps.get(i).cloned() else {
                info!("order {id}: every step has ended");
                self.end_order(now, id, OrderState::Succeeded, "every step ran".into());
                return;
            };
            match o.ends[i] {
                None => break,
                Some(TaskState::Succeeded) => o.cursor += 1,
                Some(_) if step.on_failure == OnFailure::Continue => o.cursor += 1,
                Some(state) => {
                    let reason = format!("step {} ({}) ended {state}", i + 1, step.name);
                    self.end_order(now, id, OrderState::Failed, reason);
                    return;
                }
            }
        }
        self.make_step_tasks(now, id);
    }

    /// The cursor's task, and those of the steps that may be chained behind it, are made.
    fn make_step_tasks(&mut self, now: Instant, id: OrderId) {
        let Some(o) = self.orders.get(&id) else {
            return;
        };
        let steps = &o.workflow.steps;
        let first = o.cursor;
        let mut last = first;
        while last + 1 < steps.len()
            && last < first + HANDOVER
            && chains(&steps[last].target, &steps[last + 1].target, |name| {
                self.clusters.get(name).map(|c| c.mode)
            })
        {
            last += 1;
        }
        let missing: Vec<usize> = (first..=last).filter(|&i| o.tasks[i].is_none()).collect();
        let workflow = Arc::clone(&o.workflow);
        for i in missing {
            let step = &workflow.steps[i];
            let link = StepRef {
                order: id,
                step: i as u32,
            };
            let delay = Duration::from_millis(step.retry_delay_ms);
            match self.add_task(now, step_task(step, Some(link)), delay) {
                Ok(task) => {
                    info!("order {id}: step {} ({}) is task {task}", i + 1, step.name);
                    if let Some(o) = self.orders.get_mut(&id) {
                        o.tasks[i] = Some(task);
                    }
                }
                Err(e) => {
                    // Checked when the version was made; a limit that moved since ends it.
                    let reason = format!("step {} ({}) cannot run: {e}", i + 1, step.name);
                    self.end_order(now, id, OrderState::Failed, reason);
                    return;
                }
            }
        }
    }

    /// Ends an order: its steps that have not ended are killed (open attempts, per their
    /// policy) or cancelled (never started).
    pub(super) fn end_order(
        &mut self,
        now: Instant,
        id: OrderId,
        state: OrderState,
        reason: String,
    ) {
        let Some(o) = self.orders.get_mut(&id) else {
            return;
        };
        info!("order {id}: {state} ({reason})");
        o.order.state = state;
        o.order.reason = Some(reason.clone());
        let open: Vec<TaskId> = o
            .tasks
            .iter()
            .zip(&o.ends)
            .filter(|(_, end)| end.is_none())
            .filter_map(|(t, _)| *t)
            .collect();
        self.persist(Change::OrderState {
            id,
            state,
            reason: Some(reason),
        });
        let (task_state, outcome) = match state {
            OrderState::Cancelled => (TaskState::Killed, Outcome::Cancelled),
            _ => (TaskState::Cancelled, Outcome::OrderEnded { order: id }),
        };
        for task in open {
            self.request_kill(now, task, task_state, outcome.clone());
        }
    }

    /// Whether (and where) step task `t` may get an attempt now.
    pub(super) fn gate(&self, t: &TaskEntry) -> Gate {
        let Some(link) = t.task.order else {
            return Gate::Open;
        };
        let Some(o) = self.orders.get(&link.order) else {
            return Gate::Closed;
        };
        let i = link.step as usize;
        if o.order.state.is_terminal() || i < o.cursor {
            return Gate::Closed;
        }
        if i == o.cursor {
            return Gate::Open;
        }
        let prev = o.tasks[i - 1].and_then(|p| self.tasks.get(&p));
        let Some((prev, attempt)) = prev.and_then(|p| Some((p, p.current()?))) else {
            return Gate::Closed;
        };
        let step = &o.workflow.steps[i];
        let before = &o.workflow.steps[i - 1];
        let bound = match &step.target {
            Target::Agent(a) => *a == attempt.agent,
            Target::Cluster(c) => self
                .clusters
                .get(c)
                .is_some_and(|c| c.members.contains(&attempt.agent)),
        };
        if !bound {
            return Gate::Closed;
        }
        Gate::Chained {
            agent: attempt.agent.clone(),
            after: After {
                task: TaskRef {
                    task: prev.task.id,
                    attempt: attempt.id,
                },
                run_if: chained_run_if(before),
            },
        }
    }

    /// The chained wait of an attempt of task `task` that was handed over behind `after`.
    pub(super) fn after_of(&self, task: TaskId, after: AttemptId) -> Option<After> {
        let t = self.tasks.get(&task)?;
        let link = t.task.order?;
        let o = self.orders.get(&link.order)?;
        let i = (link.step as usize).checked_sub(1)?;
        Some(After {
            task: TaskRef {
                task: o.tasks[i]?,
                attempt: after,
            },
            run_if: chained_run_if(&o.workflow.steps[i]),
        })
    }

    /// For a step on a round-robin cluster: the member of the step before, so the step goes
    /// to the member after it.
    pub(super) fn previous_step_agent(&self, t: &TaskEntry) -> Option<&str> {
        let link = t.task.order?;
        self.orders.get(&link.order)?.last_agent.as_deref()
    }

    /// The running orders, for the API's live view.
    pub fn running_orders(&self) -> impl Iterator<Item = &Order> {
        self.orders.values().map(|o| &o.order)
    }

    /// Every version of every workflow, by name.
    pub fn workflow_versions(&self, name: &str) -> Vec<Arc<Workflow>> {
        self.workflows.get(name).cloned().unwrap_or_default()
    }
}
