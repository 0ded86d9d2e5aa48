//! The master's wall clock for agents: sent in answer to a fresh heartbeat, so an agent can
//! trust (or correct) its own before it starts anything by it.

use log::info;
use tether_core::message::CommandBody;
use tether_core::{Duration, Instant};

use super::Master;

/// Every agent gets the master's clock this often (and at every new incarnation's first
/// heartbeat, and after it said it does not trust its own).
const CLOCK_EVERY: Duration = Duration::from_secs(600);

impl Master {
    /// Every agent gets the master's clock in answer to a fresh heartbeat: at its
    /// incarnation's first, every [`CLOCK_EVERY`], and at once after it reported that it does
    /// not trust its own (held start times and schedule occurrences wait for that trust). The
    /// agent takes it only as the answer to a recent heartbeat, so a copy a broker delivers
    /// late sets nothing.
    pub(super) fn answer_clock(
        &mut self,
        now: Instant,
        agent: &str,
        incarnation: u32,
        heartbeat: u32,
    ) {
        let Some(unix_ms) = self.wall_ms(now) else {
            return;
        };
        let untrusted = self.clock_untrusted.remove(agent);
        let due = untrusted
            || match self.clock_sent.get(agent) {
                Some(&(inc, at)) => inc != incarnation || now >= at.saturating_add(CLOCK_EVERY),
                None => true,
            };
        if due {
            self.clock_sent.insert(agent.to_owned(), (incarnation, now));
            let body = CommandBody::Clock {
                unix_ms,
                incarnation,
                heartbeat,
            };
            self.command(agent, body);
        }
    }

    /// An agent said whether it trusts its clock.
    pub(super) fn clock_reported(&mut self, agent: &str, trusted: bool) {
        if trusted {
            self.clock_untrusted.remove(agent);
        } else {
            info!("agent {agent} does not trust its clock: the master's goes with the next answer");
            self.clock_untrusted.insert(agent.to_owned());
        }
    }
}
