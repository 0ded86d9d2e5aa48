//! Every timing rule, one function each. [`Agent::poll_timeout`] is the earliest instant any
//! rule gives; [`Agent::handle_timeout`] acts on the rules that are due, asking the same
//! functions, so the wake-up the runtime is asked for and the work done at it cannot disagree.
//! A rule due "now" names the latest instant an input brought, which may be past: the runtime
//! wakes at once. The clock's rules (a change of trust reported, the anchor passed; the anchor
//! itself is written at wake-ups, never one of its own) are in `clock`, the schedules' (their
//! next step) in `schedule`.

use embassy_time::Instant;

use super::slots::Slot;
use super::{Agent, Phase};
use crate::message::{KillCause, TaskSpec};
use crate::millis;
use crate::policy::OnDisconnect;

/// The rules with a deadline per slot. A slot has at most one due at a time, except a running
/// one: several of its rules may be due at one late wake-up, and the first in this order names
/// the termination's cause.
#[derive(Debug, Clone, Copy)]
enum SlotRule {
    /// A held order's start time.
    Start,
    /// SIGKILL, a grace time after SIGTERM.
    Sigkill,
    /// A running attempt's maximum run time.
    MaxRun,
    /// The end of a normal stop's drain time.
    Drain,
    /// A `kill` attempt's heartbeat timeout, the master silent.
    MasterLost,
}

impl SlotRule {
    const ALL: [Self; 5] = [
        Self::Start,
        Self::Sigkill,
        Self::MaxRun,
        Self::Drain,
        Self::MasterLost,
    ];
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// The next instant at which [`Agent::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let slots = self.slots.iter().flat_map(|slot| {
            SlotRule::ALL
                .into_iter()
                .filter_map(move |rule| self.slot_due(slot, rule))
        });
        [
            self.heartbeat_due(),
            self.ack_due(),
            self.drain_end_due(),
            self.clock_report_due(),
            self.anchor_passed_due(),
            self.schedule_due(),
        ]
        .into_iter()
        .flatten()
        .chain(slots)
        .min()
    }

    /// The instant [`Agent::poll_timeout`] named (or a later one) has come: act on every rule
    /// due by `now` (never earlier than an input already brought).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.saw(now);
        let now = self.latest;
        let is_due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        // The anchor passed: trust may have come with time alone.
        self.update_trust(now);
        if is_due(self.clock_report_due()) {
            self.report_clock(now);
        }
        // No wake-up of its own: written at the ones the agent has.
        if is_due(self.anchor_due()) {
            self.write_anchor(now);
        }
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let Some(rule) = SlotRule::ALL
                .into_iter()
                .find(|&rule| is_due(self.slot_due(slot, rule)))
            else {
                continue;
            };
            match rule {
                SlotRule::Start => self.begin_start(i),
                SlotRule::Sigkill => self.sigkill(i),
                SlotRule::MaxRun => self.terminate(now, i, KillCause::MaxRunTime),
                SlotRule::Drain => self.terminate(now, i, KillCause::AgentStopping),
                SlotRule::MasterLost => self.terminate(now, i, KillCause::MasterLost),
            }
        }
        if is_due(self.schedule_due()) {
            self.schedule_step(now);
        }
        if is_due(self.heartbeat_due()) {
            self.publish_heartbeat(now);
        }
        if is_due(self.ack_due()) {
            self.resend_unacked(now);
        }
        if is_due(self.drain_end_due()) {
            self.drain_expired = true;
        }
        self.maybe_stop(now);
    }

    /// When the attempt should start, on the monotonic clock: at once without a start time;
    /// with one, only by a wall clock the agent trusts (`None` until then: held).
    pub(super) fn start_instant(&self, spec: &TaskSpec) -> Option<Instant> {
        match spec.start_at_unix_ms {
            None => Some(Instant::MIN),
            Some(start) => self
                .clock
                .trusted
                .then(|| self.wall_instant(start))
                .flatten(),
        }
    }

    fn slot_due(&self, slot: &Slot, rule: SlotRule) -> Option<Instant> {
        match rule {
            SlotRule::Start => self.start_due(slot),
            SlotRule::Sigkill => sigkill_due(slot),
            SlotRule::MaxRun => max_run_due(slot),
            SlotRule::Drain => self.drain_due(slot),
            SlotRule::MasterLost => self.master_lost_due(slot),
        }
    }

    /// A held order starts at its start time, unless the agent is stopping: then it stays
    /// journaled and starts after the next start (a drain must not begin new work). A chained
    /// order waiting for its predecessor has no start time yet: the predecessor's end starts it.
    fn start_due(&self, slot: &Slot) -> Option<Instant> {
        (slot.phase == Phase::Held && slot.after.is_none() && self.stopping.is_none())
            .then(|| self.start_instant(&slot.spec))
            .flatten()
    }

    /// A running attempt is terminated at the end of a stop's drain time.
    fn drain_due(&self, slot: &Slot) -> Option<Instant> {
        running_since(slot).and(self.stopping)
    }

    /// A `kill` attempt is terminated once the master has been silent for its heartbeat
    /// timeout, counted from the later of the last contact and its start.
    fn master_lost_due(&self, slot: &Slot) -> Option<Instant> {
        let started = running_since(slot)?;
        let policy = &slot.spec.policy;
        (policy.on_disconnect == OnDisconnect::Kill).then(|| {
            let since = self.contact.last_contact.max(started);
            since.saturating_add(millis::duration(policy.heartbeat_timeout_ms))
        })
    }

    fn heartbeat_due(&self) -> Option<Instant> {
        self.contact.next_heartbeat
    }

    /// Events sent and not acknowledged in time are sent again.
    fn ack_due(&self) -> Option<Instant> {
        self.log
            .ack_deadline
            .filter(|_| self.log.sent_seq > self.log.acked_seq)
    }

    /// Past a stop's drain time, what remains waits on processes and no longer on time.
    fn drain_end_due(&self) -> Option<Instant> {
        self.stopping
            .filter(|_| !self.stopped && !self.drain_expired)
    }
}

/// The start of a running attempt that no termination has begun for: the rules that end a run
/// apply to it.
fn running_since(slot: &Slot) -> Option<Instant> {
    match (slot.phase, slot.kill) {
        (Phase::Running { started, .. }, None) => Some(started),
        _ => None,
    }
}

/// SIGTERM sent (a held order never is: a kill cancels it at once).
fn sigkill_due(slot: &Slot) -> Option<Instant> {
    match (slot.phase, slot.kill) {
        (Phase::Held, _) | (_, None) => None,
        (_, Some((_, sigkill))) => sigkill,
    }
}

fn max_run_due(slot: &Slot) -> Option<Instant> {
    let started = running_since(slot)?;
    let max_run = slot.spec.policy.max_run_ms;
    (max_run > 0).then(|| started.saturating_add(millis::duration(max_run)))
}
