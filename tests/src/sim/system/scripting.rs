//! What a test asks of a system world: submits, kills and clusters through the real master,
//! and what it looks at afterwards.

use std::collections::BTreeSet;

use tether_core::Instant;
use tether_core::policy::Policy;
use tether_master::core::{ClusterRequest, PolicyOverrides, Submit};
use tether_master::model::{ClusterMode, Target};

use super::{RealMaster, SystemOrder};
use crate::sim::procs::Program;
use crate::sim::world::{Step, World, WorldConfig, wall_ms};

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
            argv: program
                .argv()
                .iter()
                .filter_map(|s| s.ok().map(str::to_owned))
                .collect(),
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
