//! Which agent heartbeats prove that the agent is alive now.
//!
//! Anyone on the broker can record an agent's authentic heartbeat and publish it again. So an
//! agent heartbeat names (echoes) the newest master heartbeat the agent heard, and counts its
//! own heartbeats: it is evidence of life only when that master heartbeat was sent recently
//! and the count is above the last one accepted from the same incarnation.
//!
//! Here too: the master's own heartbeat (what agents echo), and an online agent marked lost
//! once it has been silent too long.

use std::collections::VecDeque;

use log::info;
use tether_core::message::{AgentHeartbeat, Echo, MasterHeartbeat, Message};
use tether_core::topic::Topic;
use tether_core::{Duration, Instant};

use super::deadlines::due;
use super::{Change, Master, Qos};
use crate::model::AgentPresence;

/// Bounds the memory of a master whose period is tiny; far above what the window needs at the
/// shortest period an agent accepts.
const MAX_REMEMBERED: usize = 1024;

/// The soonest a heartbeat pulled forward by an agent's news follows the previous one: a
/// fleet coming back at once causes at most two broadcasts a second.
const EARLY_HEARTBEAT_GAP: Duration = Duration::from_millis(500);

/// The master heartbeats sent recently, with when and at which period.
#[derive(Debug, Default)]
pub(super) struct SentHeartbeats {
    sent: VecDeque<(u64, Instant, Duration)>,
}

impl SentHeartbeats {
    pub(super) fn record(&mut self, counter: u64, now: Instant, period: Duration) {
        if self.sent.len() == MAX_REMEMBERED {
            self.sent.pop_front();
        }
        self.sent.push_back((counter, now, period));
    }

    fn last_sent(&self) -> Option<Instant> {
        self.sent.back().map(|&(_, at, _)| at)
    }

    /// Forgets heartbeats no echo can still make fresh.
    pub(super) fn prune(&mut self, now: Instant, allowance: Duration) {
        while self
            .sent
            .front()
            .is_some_and(|&(_, at, period)| now > expiry(at, period, allowance))
        {
            self.sent.pop_front();
        }
    }

    /// Whether `echo` names a heartbeat of this `epoch` sent within two of its periods plus the
    /// delay allowance (the silence after which the master stops counting on an agent).
    pub(super) fn fresh(
        &self,
        epoch: u32,
        echo: Option<Echo>,
        now: Instant,
        allowance: Duration,
    ) -> bool {
        let Some(echo) = echo.filter(|e| e.epoch == epoch) else {
            return false;
        };
        self.sent
            .iter()
            .rev()
            .find(|&&(counter, ..)| counter == echo.counter)
            .is_some_and(|&(_, at, period)| now <= expiry(at, period, allowance))
    }
}

fn expiry(at: Instant, period: Duration, allowance: Duration) -> Instant {
    at.saturating_add(period + period + allowance)
}

/// The last heartbeat accepted from an agent: `(incarnation, counter)`.
pub(super) type LastHeartbeat = Option<(u32, u32)>;

/// Whether `hb` is newer than `last` (a heartbeat of another incarnation always is; the echo
/// decides whether it is recent).
pub(super) fn newer(last: LastHeartbeat, hb: &AgentHeartbeat) -> bool {
    last.is_none_or(|(incarnation, counter)| incarnation != hb.incarnation || hb.counter > counter)
}

impl Master {
    /// Sends the master's heartbeat when it is due.
    pub(super) fn heartbeat(&mut self, now: Instant) {
        let period = self.heartbeat_period();
        // A shorter period (a new task asks for it) applies from now, not after the old one.
        self.next_heartbeat = self.next_heartbeat.min(now.saturating_add(period));
        if !due(self.heartbeat_due(), now) {
            return;
        }
        self.next_heartbeat = now.saturating_add(period);
        // Heartbeats and commands share the counter: an agent takes a heartbeat as contact only
        // when it is newer than everything it accepted.
        self.counter += 1;
        self.sent_heartbeats.prune(now, self.config.delay_allowance);
        self.sent_heartbeats.record(self.counter, now, period);
        let hb = Message::MasterHeartbeat(MasterHeartbeat {
            epoch: self.config.epoch,
            counter: self.counter,
            period_ms: period.as_millis(),
        });
        if let Ok(topic) = Topic::MasterHeartbeat.build(&self.config.prefix) {
            self.publish(topic.as_str(), &hb, Qos::AtMostOnce, false);
        }
    }

    /// Online agents silent past their deadline are lost.
    pub(super) fn agent_silence(&mut self, now: Instant) {
        let silence = self.silence();
        let mut changes = Vec::new();
        let mut verdicts = Vec::new();
        for (id, a) in &mut self.agents {
            if due(a.silence_deadline(silence), now) {
                info!(
                    "agent {id}: silent for {} ms, unavailable",
                    silence.as_millis()
                );
                a.presence = AgentPresence::Lost;
                verdicts.extend(a.incarnation.map(|inc| (id.clone(), inc)));
                changes.push(Change::Agent {
                    id: id.clone(),
                    incarnation: a.incarnation,
                    presence: a.presence,
                    heard: false,
                });
            }
        }
        for c in changes {
            self.persist(c);
        }
        for (id, incarnation) in verdicts {
            self.publish_lost_verdict(&id, incarnation);
        }
    }

    /// Sends the next heartbeat as soon as the gap allows: an agent heard from again answers
    /// it at once, and that answer is what makes the agent available.
    pub(super) fn heartbeat_soon(&mut self, now: Instant) {
        let earliest = self
            .sent_heartbeats
            .last_sent()
            .map_or(now, |at| at.saturating_add(EARLY_HEARTBEAT_GAP))
            .max(now);
        self.next_heartbeat = self.next_heartbeat.min(earliest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWANCE: Duration = Duration::from_secs(2);

    fn at(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    fn echo(epoch: u32, counter: u64) -> Option<Echo> {
        Some(Echo { epoch, counter })
    }

    #[test]
    fn an_echo_is_fresh_for_two_periods_and_the_allowance() {
        let mut sent = SentHeartbeats::default();
        sent.record(7, at(100), Duration::from_secs(1));
        assert!(sent.fresh(3, echo(3, 7), at(104), ALLOWANCE));
        assert!(!sent.fresh(3, echo(3, 7), at(105), ALLOWANCE));
        sent.prune(at(105), ALLOWANCE);
        assert!(!sent.fresh(3, echo(3, 7), at(100), ALLOWANCE));
    }

    #[test]
    fn unknown_absent_or_other_epoch_echoes_are_not_fresh() {
        let mut sent = SentHeartbeats::default();
        sent.record(7, at(100), Duration::from_secs(10));
        assert!(!sent.fresh(3, None, at(100), ALLOWANCE));
        assert!(!sent.fresh(3, echo(2, 7), at(100), ALLOWANCE));
        assert!(!sent.fresh(3, echo(3, 8), at(100), ALLOWANCE));
        assert!(!sent.fresh(3, echo(3, 6), at(100), ALLOWANCE));
    }

    #[test]
    fn heartbeats_must_count_up_within_an_incarnation() {
        let hb = |incarnation, counter| AgentHeartbeat {
            incarnation,
            journal: 1,
            counter,
            echo: None,
            last_seq: 0,
            tasks: heapless::Vec::new(),
            more_tasks: false,
            journal_bytes: 0,
        };
        assert!(newer(None, &hb(1, 1)));
        assert!(newer(Some((1, 4)), &hb(1, 5)));
        assert!(!newer(Some((1, 4)), &hb(1, 4)));
        assert!(!newer(Some((1, 4)), &hb(1, 3)));
        assert!(newer(Some((1, 4)), &hb(2, 1)));
    }
}
