//! Every rule of time, once. Each function below says when its rule fires next (`None`: it
//! cannot fire in the current state). [`Master::poll_timeout`] is the minimum of them all, and
//! the code that acts on a rule asks the same function with [`due`], so the timer the runtime
//! arms and the action taken when it expires are the same computation.

use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};

use super::registry::AgentEntry;
use super::{AttemptEntry, Master, TaskEntry};
use crate::model::{AgentPresence, AttemptState, Target, TaskPolicy};

/// Whether a deadline has come.
pub(super) fn due(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|at| at <= now)
}

impl AgentEntry {
    /// When an online agent stops being available for new tasks: `silence` after it was last
    /// heard. An incarnation no fresh heartbeat has proven yet is not available.
    pub(super) fn unavailable_at(&self, silence: Duration) -> Option<Instant> {
        (self.presence == AgentPresence::Online && self.proven == self.incarnation)
            .then(|| self.last_heard.saturating_add(silence))
    }

    /// Online, proven by a heartbeat, and heard from within `silence`.
    pub(super) fn available(&self, now: Instant, silence: Duration) -> bool {
        self.unavailable_at(silence).is_some_and(|at| now < at)
    }

    /// When an online agent without proof of life is marked lost: `silence` after it was last
    /// heard, counted from when it came online at the earliest (a reconnected agent answers
    /// the master's next heartbeat first).
    pub(super) fn silence_deadline(&self, silence: Duration) -> Option<Instant> {
        (self.presence == AgentPresence::Online).then(|| {
            self.last_heard
                .max(self.online_since)
                .saturating_add(silence)
        })
    }
}

/// When a task without a current attempt is dispatched (again): at once, or after a transient
/// refusal, at its `retry_at`.
pub(super) fn start_at(t: &TaskEntry) -> Option<Instant> {
    let waiting = !t.task.state.is_terminal() && !t.kill_requested && t.current().is_none();
    waiting.then_some(t.retry_at)
}

/// When an attempt's start command goes out (again): while it is `sent`, every heartbeat
/// period until the agent accepts or rejects it, unless the task is being killed.
pub(super) fn retransmit_start_at(a: &AttemptEntry, kill_requested: bool) -> Option<Instant> {
    let sending = a.is_open() && a.state == AttemptState::Sent && !a.self_started;
    (sending && !kill_requested).then_some(a.next_start)
}

/// When an attempt's kill command goes out (again): every heartbeat period until it ends.
pub(super) fn retransmit_kill_at(a: &AttemptEntry) -> Option<Instant> {
    (a.is_open() && a.kill_wanted).then_some(a.next_kill)
}

impl Master {
    /// The heartbeat period in force: the configured one, or shorter if an open attempt's
    /// policy asks for it (an agent judges the master by the task's own timeout).
    pub fn heartbeat_period(&self) -> Duration {
        self.tasks
            .values()
            .flat_map(|t| {
                let period = Duration::from_millis(t.task.policy.heartbeat_period_ms);
                t.attempts
                    .iter()
                    .filter(|a| a.is_open())
                    .map(move |_| period)
            })
            .fold(self.config.heartbeat_period, Duration::min)
    }

    /// How long an online agent may be silent before new tasks avoid it.
    pub(super) fn silence(&self) -> Duration {
        let p = self.heartbeat_period();
        p + p + self.config.delay_allowance
    }

    /// When the master's next heartbeat goes out, while it is connected.
    pub(super) fn heartbeat_due(&self) -> Option<Instant> {
        self.connected.then_some(self.next_heartbeat)
    }

    /// When an open attempt of a `kill` task is lost: its heartbeat timeout plus the delay
    /// allowance after its agent was last heard (the agent has killed it by then).
    pub(super) fn attempt_lost_at(&self, t: &TaskEntry, a: &AttemptEntry) -> Option<Instant> {
        let policy = &t.task.policy;
        (a.is_open() && policy.on_disconnect == OnDisconnect::Kill)
            .then(|| self.heard(&a.agent).saturating_add(self.lost_delay(policy)))
    }

    /// When an open attempt of a `continue` cluster task is replaced by one elsewhere: once
    /// its agent is unavailable and `lost_after` has passed since it was last heard.
    pub(super) fn reschedule_at(
        &self,
        t: &TaskEntry,
        a: &AttemptEntry,
        silence: Duration,
    ) -> Option<Instant> {
        let after = t.task.policy.lost_after_ms?;
        let applies = a.is_open()
            && t.task.policy.on_disconnect == OnDisconnect::Continue
            && matches!(t.task.target, Target::Cluster(_))
            && !a.superseded
            && !t.task.state.is_terminal();
        if !applies {
            return None;
        }
        let at = self
            .heard(&a.agent)
            .saturating_add(Duration::from_millis(after));
        let unavailable = self
            .agents
            .get(&a.agent)
            .and_then(|e| e.unavailable_at(silence));
        Some(unavailable.map_or(at, |u| at.max(u)))
    }

    /// When [`Master::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let silence = self.silence();
        let agents = self
            .agents
            .values()
            .flat_map(|a| [a.unavailable_at(silence), a.silence_deadline(silence)]);
        let tasks = self.tasks.values().flat_map(|t| {
            let attempts = t.attempts.iter().flat_map(move |a| {
                [
                    self.attempt_lost_at(t, a),
                    self.reschedule_at(t, a, silence),
                    retransmit_start_at(a, t.kill_requested),
                    retransmit_kill_at(a),
                ]
            });
            std::iter::once(start_at(t)).chain(attempts)
        });
        // A deadline already passed was acted on, or waits on a message (an agent coming
        // back), not on time.
        let schedules = [self.handover_due(), self.planning_due(self.now)];
        std::iter::once(self.heartbeat_due())
            .chain(schedules)
            .chain(agents)
            .chain(tasks)
            .flatten()
            .filter(|t| *t > self.now)
            .min()
    }

    /// When `agent` was last heard (now, for an agent the master does not know).
    pub(super) fn heard(&self, agent: &str) -> Instant {
        self.agents.get(agent).map_or(self.now, |a| a.last_heard)
    }

    /// How long a `kill` task's agent may be silent before its attempt is lost.
    pub(super) fn lost_delay(&self, policy: &TaskPolicy) -> Duration {
        Duration::from_millis(policy.heartbeat_timeout_ms) + self.config.delay_allowance
    }
}

#[cfg(test)]
mod tests {
    use tether_core::auth::SigningKey;
    use tether_core::presence::{Presence, State};

    use super::super::{Action, Change, Config};
    use super::*;

    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn master() -> Master {
        let mut config = Config::new("t", 1, SigningKey::from_seed([7; 32]).unwrap());
        config.insecure_agents = true;
        let mut m = Master::new(config, secs(0)).unwrap();
        m.handle_connected(secs(0));
        m
    }

    fn presence(m: &mut Master, at: u64, state: State) {
        let text = Presence {
            state,
            incarnation: 1,
        }
        .render();
        m.handle_message(secs(at), "t/agent/pi/presence", text.as_bytes());
    }

    /// Drives the master by its own timer up to `until`: when it first marked an agent lost.
    fn marked_lost(m: &mut Master, until: Instant) -> Option<Instant> {
        let mut lost = None;
        while let Some(at) = m.poll_timeout().filter(|&at| at <= until) {
            m.handle_timeout(at);
            while let Some(action) = m.poll_action() {
                let to_lost = matches!(
                    action,
                    Action::Persist(Change::Agent {
                        presence: AgentPresence::Lost,
                        ..
                    })
                );
                if to_lost {
                    lost.get_or_insert(at);
                }
            }
        }
        lost
    }

    #[test]
    fn a_silent_agent_is_marked_lost_at_the_instant_its_deadline_names() {
        let mut m = master();
        presence(&mut m, 0, State::Online);
        presence(&mut m, 1, State::Lost);
        presence(&mut m, 5, State::Online);
        while m.poll_action().is_some() {}
        // Heard at 0 (first seen) but online again since 5: its silence counts from 5, and is
        // two heartbeat periods plus the allowance. The timer names that instant, not the next
        // heartbeat's (30).
        let deadline = m.agents["pi"].silence_deadline(m.silence());
        assert_eq!(deadline, Some(secs(27)));
        assert_eq!(marked_lost(&mut m, secs(60)), deadline);
    }

    #[test]
    fn no_deadline_fires_for_an_agent_that_is_not_online() {
        let mut m = master();
        presence(&mut m, 0, State::Online);
        presence(&mut m, 1, State::Stopped);
        while m.poll_action().is_some() {}
        let a = &m.agents["pi"];
        assert_eq!(a.silence_deadline(m.silence()), None);
        assert_eq!(a.unavailable_at(m.silence()), None);
        assert_eq!(marked_lost(&mut m, secs(120)), None);
    }
}
