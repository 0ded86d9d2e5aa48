//! Which agent takes a new attempt: the task's agent, or a member of its cluster, by
//! round-robin (the cursor is persisted, so a restarted master goes on where it was) or fixed
//! priority; only available agents with room, and not those already running an attempt of the
//! same task. A disabled agent takes nothing new (a cluster goes on to its next member).

use std::collections::BTreeMap;

use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};

use super::registry::AgentEntry;
use super::{Change, Master};
use crate::model::{ClusterMode, Target, TaskId};

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
        // A `kill` attempt to an agent already silent past the task's own loss time would be
        // given up at once (or run unsupervised): such agents do not count.
        let silence = match t.task.policy.on_disconnect {
            OnDisconnect::Kill => self.silence().min(self.lost_delay(&t.task.policy)),
            OnDisconnect::Continue => self.silence(),
        };
        let target = t.task.target.clone();
        self.pick(now, &target, &exclude, open, silence)
    }

    /// The agent for a new attempt, among the available ones not in `exclude`.
    fn pick(
        &mut self,
        now: Instant,
        target: &Target,
        exclude: &[String],
        open: &BTreeMap<String, usize>,
        silence: Duration,
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
                let start = match cluster.mode {
                    ClusterMode::RoundRobin => (cluster.cursor % n.max(1) as u64) as usize,
                    ClusterMode::FixedPriority => 0,
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
