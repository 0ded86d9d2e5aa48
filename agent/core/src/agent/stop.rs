//! A normal stop: new tasks refused, running ones given the drain time, then the goodbye
//! (`offline ... stopped`) and [`Action::Stopped`] once every event is durable (and
//! acknowledged, unless the drain time is up).

use embassy_time::{Duration, Instant};

use super::{Action, Agent, Phase};
use crate::presence::State;

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// A normal stop: refuse new tasks, let running ones finish for up to `drain`, then
    /// terminate them, announce `offline ... stopped` and emit [`Action::Stopped`].
    pub fn handle_stop(&mut self, now: Instant, drain: Duration) {
        if self.stopping.is_none() {
            self.stopping = Some(now.saturating_add(drain));
        }
        self.maybe_stop(now);
    }

    pub(super) fn maybe_stop(&mut self, now: Instant) {
        let Some(deadline) = self.stopping else {
            return;
        };
        if self.stopped {
            return;
        }
        // Held orders do not hold the stop up: they stay journaled for the next start.
        let busy = self.slots.iter().any(|s| !matches!(s.phase, Phase::Held));
        // Every event durable (and handed to `Send`) before the goodbye; acknowledged too, unless
        // the drain time is up.
        let log = &self.log;
        let durable = log.durable_seq + 1 >= log.next_seq;
        let acked = log.acked_seq >= log.durable_seq;
        if busy || !durable || (self.contact.connected && !acked && now < deadline) {
            return;
        }
        if self.contact.connected {
            self.publish_presence(State::Stopped);
        }
        self.stopped = true;
        self.contact.next_heartbeat = None;
        self.push(Action::Stopped);
    }
}
