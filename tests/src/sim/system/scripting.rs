//! What a test asks of a system world: submits, kills, clusters, workflows and orders through
//! the real master, and what it looks at afterwards.

use std::collections::BTreeSet;

use tether_core::message::TaskRef;
use tether_core::policy::Policy;
use tether_core::{Duration, Instant};
use tether_master::core::{ClusterRequest, OrderRequest, PolicyOverrides, Submit, WorkflowRequest};
use tether_master::model::{ClusterMode, OrderState, Target, TaskId};

use super::{Gap, OrderCall, RealMaster, SystemOrder};
use crate::sim::invariants::Violation;
use crate::sim::procs::Program;
use crate::sim::world::{Step, World, WorldConfig, wall_ms};

/// How often [`World::try_settle_orders`] looks whether the orders have ended.
const SETTLE_CHECK: Duration = Duration::from_secs(1);

/// The world with the real master.
pub type System = World<RealMaster>;

impl World<RealMaster> {
    /// Agents `pi-0..` and the real master over a fresh store; everything connects at zero.
    pub fn system(config: WorldConfig) -> Self {
        World::with_master(config, RealMaster::new)
    }

    /// Schedules a submit; returns the label that names the task in [`RealMaster`]'s getters.
    pub fn submit(
        &mut self,
        at: Instant,
        target: Target,
        policy: PolicyOverrides,
        program: Program,
        start_at: Option<Instant>,
    ) -> usize {
        let master = self.master_mut();
        let label = master.next_label;
        master.next_label += 1;
        let (agent, cluster) = match target {
            Target::Agent(a) => (Some(a), None),
            Target::Cluster(c) => (None, Some(c)),
        };
        let request = Submit {
            agent,
            cluster,
            argv: program.args(),
            policy,
            start_at_ms: start_at.map(wall_ms),
            ..Submit::default()
        };
        self.schedule(
            at,
            Step::Order(SystemOrder::Submit {
                label,
                request: Box::new(request),
            }),
        );
        label
    }

    pub fn kill(&mut self, at: Instant, label: usize) {
        self.schedule(at, Step::Order(SystemOrder::Kill { label }));
    }

    /// Defines a cluster of agents `members` (indices, in priority order).
    pub fn put_cluster(&mut self, at: Instant, name: &str, mode: ClusterMode, members: &[usize]) {
        let req = ClusterRequest {
            name: name.to_owned(),
            mode,
            members: members.iter().map(|i| format!("pi-{i}")).collect(),
        };
        self.schedule(at, Step::Order(SystemOrder::Cluster(req)));
    }

    /// Defines the next version of a workflow.
    pub fn put_workflow(&mut self, at: Instant, request: WorkflowRequest) {
        let call = OrderCall::PutWorkflow(request);
        self.schedule(at, Step::Order(SystemOrder::Orders(call)));
    }

    /// Schedules an order of the latest version of `workflow`; returns the label that names
    /// the order in [`World::cancel_order`] and the getters.
    pub fn start_order(&mut self, at: Instant, workflow: &str) -> usize {
        let label = self.master_mut().orders.label();
        let request = OrderRequest {
            workflow: workflow.to_owned(),
            version: None,
        };
        let call = OrderCall::Start { label, request };
        self.schedule(at, Step::Order(SystemOrder::Orders(call)));
        label
    }

    pub fn cancel_order(&mut self, at: Instant, label: usize) {
        let call = OrderCall::Cancel { label };
        self.schedule(at, Step::Order(SystemOrder::Orders(call)));
    }

    /// Holds the master's known gap `gap` against it too (see [`Gap`]).
    pub fn hold(&mut self, gap: Gap) {
        self.master_mut().orders.hold(gap);
    }

    /// The order's state as the master committed it, once the master took it.
    pub fn order_state(&self, label: usize) -> Option<OrderState> {
        let orders = &self.master().orders;
        orders.order(orders.id(label)?).map(|o| o.state())
    }

    /// The task of step `step` (from 0) of the order, once made.
    pub fn step_task(&self, label: usize, step: usize) -> Option<TaskId> {
        let orders = &self.master().orders;
        *orders.order(orders.id(label)?)?.steps.get(step)?
    }

    /// Where and when the step's attempts were spawned, in attempt order.
    pub fn step_runs(&self, label: usize, step: usize) -> Vec<(usize, Instant)> {
        let Some(task) = self.step_task(label, step) else {
            return Vec::new();
        };
        self.master()
            .all_attempts()
            .filter(|(_, a)| a.task == task)
            .flat_map(|(id, _)| self.spawns(TaskRef { task, attempt: *id }).to_vec())
            .collect()
    }

    /// Runs on (after [`World::try_heal`]: no faults, an agent that exits after its stop is
    /// started again) until every order the master took has ended and its step tasks are
    /// decided, or `max` has passed (invariants 12 and 13 then report what did not settle).
    pub fn try_settle_orders(&mut self, max: Duration) -> Result<(), Violation> {
        let deadline = self.now().saturating_add(max);
        while !self.master().orders_settled() && self.now() < deadline {
            let next = self.now().saturating_add(SETTLE_CHECK).min(deadline);
            self.try_run_until(next)?;
            self.restart_exited()?;
        }
        Ok(())
    }

    /// Invariants 10 to 13 over every order, now (see [`World::try_settle_orders`]).
    pub fn check_orders(&self) -> Result<(), Violation> {
        self.master().check_orders(self.ledger(), self.now())
    }

    /// The attempts' agents of the tasks `labels`, in task order then attempt order.
    pub fn placements(&self, labels: &[usize]) -> Vec<Vec<usize>> {
        labels
            .iter()
            .map(|&l| {
                self.master()
                    .attempts(l)
                    .into_iter()
                    .map(|(_, a)| a.agent)
                    .collect()
            })
            .collect()
    }

    /// Every attempt of a decided task is closed, and no task is left undecided.
    pub fn undecided_tasks(&self) -> BTreeSet<usize> {
        let m = self.master();
        m.labels
            .iter()
            .filter(|(_, id)| !m.decided.contains_key(id))
            .map(|(l, _)| *l)
            .collect()
    }
}

/// The master-side policy of a simulation [`Policy`] (no retries, no `lost_after`).
pub fn overrides(p: &Policy) -> PolicyOverrides {
    PolicyOverrides {
        on_disconnect: Some(p.on_disconnect),
        heartbeat_period_ms: Some(p.heartbeat_period_ms),
        heartbeat_timeout_ms: Some(p.heartbeat_timeout_ms),
        grace_ms: Some(p.grace_ms),
        max_run_ms: Some(p.max_run_ms),
        output_cap: Some(p.output_cap),
        retries: Some(0),
        lost_after_ms: None,
    }
}
