//! Which agent takes a new attempt: the task's agent, or a member of its cluster, by
//! round-robin (the cursor is persisted, so a restarted master goes on where it was) or fixed
//! priority; only available agents with room, and not those already running an attempt of the
//! same task. A disabled agent takes nothing new (a cluster goes on to its next member).

use std::collections::BTreeMap;

use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};

use super::registry::AgentEntry;
use super::{Change, Master};
use crate::model::{ClusterMode, Target, TaskId, TaskPolicy};

impl Master {
    /// The agent for task `id`'s next attempt, given the open attempts per agent.
    pub(super) fn place(
        &mut self,
        now: Instant,
        id: TaskId,
        open: &BTreeMap<String, usize>,
    ) -> Option<String> {
        let t = self.tasks.get(&id)?;
        let exclude: Vec<String> = t
            .attempts
            .iter()
            .filter(|a| a.is_open())
            .map(|a| a.agent.clone())
            .collect();
        let silence = self.placement_silence(&t.task.policy);
        let target = t.task.target.clone();
        let after = self.previous_step_agent(t).map(str::to_owned);
        self.pick(now, &target, &exclude, open, silence, after.as_deref())
    }

    /// Agent `agent` for task `id`'s next attempt (a workflow step chained behind the step
    /// before, there), if it can take it now.
    pub(super) fn place_on(
        &mut self,
        now: Instant,
        id: TaskId,
        agent: &str,
        open: &BTreeMap<String, usize>,
    ) -> Option<String> {
        let silence = self.placement_silence(&self.tasks.get(&id)?.task.policy);
        let target = Target::Agent(agent.to_owned());
        self.pick(now, &target, &[], open, silence, None)
    }

    /// How long an agent may have been silent and still take a task with `policy`: a `kill`
    /// attempt to an agent already silent past the task's own loss time would be given up at
    /// once (or run unsupervised), so such agents do not count.
    fn placement_silence(&self, policy: &TaskPolicy) -> Duration {
        match policy.on_disconnect {
            OnDisconnect::Kill => self.silence().min(self.lost_delay(policy)),
            OnDisconnect::Continue => self.silence(),
        }
    }

    /// The agent for a new attempt, among the available ones not in `exclude`; on a
    /// round-robin cluster, the member after `after` (the previous step of a workflow order)
    /// if given, else after the cluster's cursor.
    fn pick(
        &mut self,
        now: Instant,
        target: &Target,
        exclude: &[String],
        open: &BTreeMap<String, usize>,
        silence: Duration,
        after: Option<&str>,
    ) -> Option<String> {
        let usable = |agents: &BTreeMap<String, AgentEntry>, id: &String| {
            !exclude.contains(id)
                && agents.get(id).is_some_and(|a| {
                    !a.disabled
                        && a.available(now, silence)
                        && a.has_room(open.get(id).copied().unwrap_or(0))
                })
        };
        match target {
            Target::Agent(id) => usable(&self.agents, id).then(|| id.clone()),
            Target::Cluster(name) => {
                let cluster = self.clusters.get_mut(name)?;
                let n = cluster.members.len();
                let previous = after.and_then(|a| cluster.members.iter().position(|m| m == a));
                let start = match (cluster.mode, previous) {
                    (ClusterMode::RoundRobin, Some(p)) => (p + 1) % n.max(1),
                    (ClusterMode::RoundRobin, None) => (cluster.cursor % n.max(1) as u64) as usize,
                    (ClusterMode::FixedPriority, _) => 0,
                };
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| usable(&self.agents, &cluster.members[i]))?;
                let chosen = cluster.members[i].clone();
                if cluster.mode == ClusterMode::RoundRobin {
                    cluster.cursor = (i + 1) as u64;
                    let change = Change::ClusterCursor {
                        name: name.clone(),
                        cursor: cluster.cursor,
                    };
                    self.persist(change);
                }
                Some(chosen)
            }
        }
    }
}
