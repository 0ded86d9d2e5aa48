//! Workflow and order requests: defining a workflow version (every step checked as a task
//! would be, its policy resolved), starting an order of a version, cancelling one. Nothing is
//! persisted before the whole request is valid.

use std::sync::Arc;

use tether_core::Instant;

use super::orders::OrderEntry;
use super::{Change, Master, OrderRequest, RequestError, StepRequest, WorkflowRequest};
use crate::model::{
    MAX_STEPS, NewTask, OnFailure, Order, OrderId, OrderState, Step, StepRef, Target, Task,
    TaskPolicy, Workflow,
};

impl Master {
    /// Defines the next version of workflow `req.name` (version 1 for a new name).
    pub fn put_workflow(
        &mut self,
        now: Instant,
        req: WorkflowRequest,
    ) -> Result<Workflow, RequestError> {
        self.advance(now);
        super::requests::check_name("workflow", &req.name)?;
        if req.steps.is_empty() || req.steps.len() > MAX_STEPS {
            return Err(RequestError::StepCount {
                workflow: req.name,
                steps: req.steps.len(),
            });
        }
        let steps = req
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                self.step(i, s).map_err(|e| RequestError::InvalidStep {
                    step: i,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let version = self
            .workflows
            .get(&req.name)
            .and_then(|v| v.last())
            .map_or(1, |w| w.version + 1);
        let workflow = Workflow {
            name: req.name.clone(),
            version,
            steps,
            created_ms: 0,
        };
        self.persist(Change::Workflow(workflow.clone()));
        self.workflows
            .entry(req.name)
            .or_default()
            .push(Arc::new(workflow.clone()));
        Ok(workflow)
    }

    /// One step of a workflow being defined: its target known, its policy resolved and its
    /// task one an agent would accept.
    fn step(&self, i: usize, req: StepRequest) -> Result<Step, RequestError> {
        let (target, policy) =
            self.target_and_policy(req.agent, req.cluster, req.profile.as_deref(), &req.policy)?;
        super::requests::check_field(crate::limits::RETRY_DELAY_MS, req.retry_delay_ms)?;
        let step = Step {
            name: req.name.unwrap_or_else(|| format!("step-{}", i + 1)),
            target,
            argv: req.argv,
            env: req.env,
            cwd: req.cwd,
            profile: req.profile,
            policy,
            on_failure: req.on_failure.unwrap_or(OnFailure::Stop),
            retry_delay_ms: req.retry_delay_ms,
        };
        if step.name.is_empty() || step.name.len() > 64 {
            return Err(RequestError::InvalidTask {
                field: "name",
                reason: "a step name is 1 to 64 bytes".to_owned(),
            });
        }
        // The agent's own checks (argv, env, sizes), as a submitted task gets them.
        Task::pending(0, step_task(&step, None)).spec(self.next_attempt)?;
        Ok(step)
    }

    /// Starts an order of a workflow version (the latest if none is named).
    pub fn start_order(
        &mut self,
        now: Instant,
        req: OrderRequest,
    ) -> Result<OrderId, RequestError> {
        self.advance(now);
        let versions = self
            .workflows
            .get(&req.workflow)
            .ok_or_else(|| RequestError::UnknownWorkflow(req.workflow.clone()))?;
        let workflow = match req.version {
            None => versions.last(),
            Some(v) => versions.iter().find(|w| w.version == v),
        }
        .cloned()
        .ok_or(RequestError::UnknownVersion {
            workflow: req.workflow,
            version: req.version.unwrap_or(0),
        })?;
        let id = self.next_order;
        self.next_order += 1;
        let order = Order {
            id,
            workflow: workflow.name.clone(),
            version: workflow.version,
            state: OrderState::Running,
            reason: None,
            created_ms: 0,
            updated_ms: 0,
        };
        self.persist(Change::NewOrder(order.clone()));
        self.orders.insert(id, OrderEntry::new(order, workflow));
        self.tick(now);
        Ok(id)
    }

    /// Cancels a running order: its open steps are killed (each per its policy), later steps
    /// never start.
    pub fn cancel_order(&mut self, now: Instant, id: OrderId) -> Result<(), RequestError> {
        self.advance(now);
        let Some(o) = self.orders.get(&id) else {
            return Err(RequestError::UnknownOrder(id));
        };
        if o.order.state.is_terminal() {
            return Err(RequestError::OrderEnded {
                order: id,
                state: o.order.state,
            });
        }
        self.end_order(
            now,
            id,
            OrderState::Cancelled,
            "cancelled by an operator".into(),
        );
        self.tick(now);
        Ok(())
    }

    /// A task's target from an agent or a cluster name (exactly one, known).
    fn target(
        &self,
        agent: Option<String>,
        cluster: Option<String>,
    ) -> Result<Target, RequestError> {
        match (agent, cluster) {
            (Some(agent), None) => {
                super::requests::check_name("agent", &agent)?;
                if !self.agents.contains_key(&agent) {
                    return Err(RequestError::UnknownAgent(agent));
                }
                Ok(Target::Agent(agent))
            }
            (None, Some(cluster)) => {
                if !self.clusters.contains_key(&cluster) {
                    return Err(RequestError::UnknownCluster(cluster));
                }
                Ok(Target::Cluster(cluster))
            }
            _ => Err(RequestError::NotOneTarget),
        }
    }

    /// A task request's target (known) and policy: its profile's (or the defaults) with the
    /// request's overrides on top, checked.
    pub(super) fn target_and_policy(
        &self,
        agent: Option<String>,
        cluster: Option<String>,
        profile: Option<&str>,
        overrides: &super::PolicyOverrides,
    ) -> Result<(Target, TaskPolicy), RequestError> {
        let target = self.target(agent, cluster)?;
        let base = match profile {
            Some(name) => self
                .profiles
                .get(name)
                .copied()
                .ok_or_else(|| RequestError::UnknownProfile(name.to_owned()))?,
            None => TaskPolicy::DEFAULT,
        };
        let policy = overrides.apply(base);
        super::requests::validate_policy(&policy)?;
        Ok((target, policy))
    }
}

/// The task that runs `step` (`order` links it to its order step).
pub(super) fn step_task(step: &Step, order: Option<StepRef>) -> NewTask {
    NewTask {
        target: step.target.clone(),
        argv: step.argv.clone(),
        env: step.env.clone(),
        cwd: step.cwd.clone(),
        profile: step.profile.clone(),
        policy: step.policy,
        start_at_ms: None,
        order,
        occurrence: None,
    }
}
