//! The wall clock, and whether the agent trusts it. Nothing starts by the clock (a held
//! order's start time, a schedule's occurrence) while the agent does not trust its clock, and
//! nothing is counted missed either: it holds, and reports each change of trust
//! ([`EventKind::Clock`]). A Pi has no battery-backed clock: after a power cut it boots with
//! the time saved at shutdown (or 1970) until NTP answers, which may be never in an outage.
//!
//! The agent trusts its wall clock when one of these holds, and never below the anchor:
//! - **declared**: the runtime's rule is [`ClockRule::Trusted`] (`clock = "trusted"`: a board
//!   with a battery-backed real-time clock; the simulation and most tests): the readings are
//!   believed as they come, steps included;
//! - **synchronised**: the rule is [`ClockRule::Ntp`] (the default) and the runtime's latest
//!   report ([`Agent::handle_clock_synced`]) says the kernel's clock is NTP-synchronised. A
//!   step in the readings (a reading off the previous one plus the monotonic time between them
//!   by more than [`STEP_TOLERANCE_MS`] plus 1 ms per second) voids that report until the next
//!   one: Linux marks its clock unsynchronised whenever it is set, so only a report made after
//!   the step says whether the new time is NTP's;
//! - **the master's word**: a [`CommandBody::Clock`] (authenticated and fresh like every
//!   command) answering one of this incarnation's last [`HEARTBEATS_KEPT`] heartbeats, sent at
//!   most [`CLOCK_MAX_RTT`] before the answer arrived, so the master's time is at most one round
//!   trip old: the master's time at arrival is taken as `unix_ms` plus half that round trip. If
//!   the local reading is within [`CLOCK_TOLERANCE_MS`] (plus the half round trip) of it, the
//!   local clock is *confirmed*: trusted until a step. Otherwise the agent *corrects* its
//!   clock: its wall time follows the master's from that instant on the monotonic clock,
//!   readings aside, until a later Clock finds the readings right again or the readings,
//!   trusted on their own (declared, or synchronised), agree with it within the tolerance
//!   (plus 1 ms per second since the correction), or the agent restarts.
//!
//!   Not only the latest heartbeat: the master's answer to one heartbeat crosses the next when
//!   two go out within a round trip (at connect the agent answers the master's first heartbeat
//!   at once), and the freshness bound comes from when the named heartbeat was sent, which the
//!   agent knows for each of the last few. A Clock of another incarnation, for a heartbeat not
//!   among those, or older than the bound (queued in a broker across a reconnect) is ignored
//!   ([`super::Stats::stale_clocks`]).
//! - **the anchor**: a [`JournalRecord::ClockAnchor`] is written at the first wake-up with a
//!   trusted clock (trust established) and then at the first wake-up an hour
//!   ([`ANCHOR_EVERY_MS`]) of trusted time past the last one: no timer of its own. A time
//!   below the highest anchor is not trusted, whatever else says (the master's included: the
//!   agent then waits until the master's time passes its anchor). A local reading found below
//!   the anchor marks the local clock *set back*: under the declared rule it stays untrusted,
//!   even once it passes the anchor, until the master's Clock confirms or corrects it.
//!
//! Each incarnation reports its trust once at start, then each change, at the wake-up that
//! follows it (a change undone before it is not reported; a report is dropped when the journal
//! has no room left for a rejection). When trust is gained, the time it begins is the start of
//! the catch-up of missed occurrences (see `schedule`); a correction that moves the time by
//! more than the tolerance begins one too.
//!
//! What a step does to schedules: trust that rested on the master's word (the `ntp` rule with
//! an unsynchronised kernel) is withdrawn until the master's next Clock, which corrects the
//! time; the occurrences the step jumped over were neither run nor reported, and run at their
//! times by the master's clock. A synchronised kernel's step is believed once the kernel
//! reports it synchronised after it, a declared clock's at once; either way, unless it goes
//! below the anchor, a step forward makes the occurrences it jumps over late (the missed rule
//! applies, and the master's Clock, correcting it back, runs none of them: they are at or
//! before the watermark) and a step back repeats none (the watermark).
//!
//! [`CommandBody::Clock`]: crate::message::CommandBody::Clock
//! [`JournalRecord::ClockAnchor`]: crate::journal::JournalRecord::ClockAnchor

use embassy_time::{Duration, Instant};
use heapless::Deque;

use super::{Agent, Append};
use crate::message::EventKind;
use crate::millis;

/// How the runtime vouches for its wall clock ([`Agent::set_clock_rule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockRule {
    /// Believed as it reads (a battery-backed real-time clock; simulations, tests), above the
    /// anchor.
    #[default]
    Trusted,
    /// Trusted while the kernel reports it NTP-synchronised, or as the master's Clock confirms
    /// or corrects it.
    Ntp,
}

/// How far the local clock may be from the master's and still be confirmed.
pub const CLOCK_TOLERANCE_MS: u64 = 2_000;
/// A master Clock answering a heartbeat sent longer ago than this is ignored.
pub const CLOCK_MAX_RTT: Duration = Duration::from_secs(10);
/// A new anchor is written once the trusted time is this far past the last.
pub const ANCHOR_EVERY_MS: u64 = 3_600_000;
/// A reading off the expected time by more than this (plus 1 ms per second) is a step.
pub const STEP_TOLERANCE_MS: u64 = 2_000;
/// Heartbeats whose sending time is kept, for the master's Clock answering them.
pub const HEARTBEATS_KEPT: usize = 8;

/// Allowed drift between two times kept apart for `elapsed`: 1 ms per second (1000 ppm, twice
/// the fastest slew NTP makes).
fn drift(elapsed: Duration) -> u64 {
    elapsed.as_millis() / 1_000
}

/// Wall-clock milliseconds at `now` under `mapping` (an instant and its wall time).
fn map(mapping: (Instant, u64), now: Instant) -> u64 {
    let (at, ms) = mapping;
    if now >= at {
        ms.saturating_add((now - at).as_millis())
    } else {
        ms.saturating_sub((at - now).as_millis())
    }
}

#[derive(Debug)]
pub(super) struct WallClock {
    rule: ClockRule,
    /// The runtime's latest reading.
    reading: Option<(Instant, u64)>,
    /// The kernel's latest report (rule `Ntp`), voided by a step.
    synced: bool,
    /// The master's Clock found the readings right, and no step since.
    confirmed: bool,
    /// The master's time, carried on the monotonic clock: in force instead of the readings.
    corrected: Option<(Instant, u64)>,
    /// A reading below the anchor was seen; only the master's Clock clears it.
    set_back: bool,
    /// The highest anchor journaled.
    pub(super) anchor: Option<u64>,
    /// Whether the agent trusts its clock (as last evaluated).
    pub(super) trusted: bool,
    /// What was reported last: `None` until this incarnation's first report.
    reported: Option<bool>,
    /// Wall time at which the current trusted period began.
    pub(super) trusted_since: u64,
    /// Our latest heartbeats: counter and when each was published.
    heartbeats: Deque<(u32, Instant), HEARTBEATS_KEPT>,
}

impl WallClock {
    pub(super) fn new() -> Self {
        Self {
            rule: ClockRule::Trusted,
            reading: None,
            synced: false,
            confirmed: false,
            corrected: None,
            set_back: false,
            anchor: None,
            trusted: false,
            // A fresh agent that is never restored reports changes only.
            reported: Some(true),
            trusted_since: 0,
            heartbeats: Deque::new(),
        }
    }

    /// The mapping in force: the master's correction, or the readings.
    fn mapping(&self) -> Option<(Instant, u64)> {
        self.corrected.or(self.reading)
    }

    /// Whether the local readings are trusted on their own.
    fn readings_trusted(&self) -> bool {
        match self.rule {
            ClockRule::Trusted => !self.set_back,
            ClockRule::Ntp => self.synced,
        }
    }

    /// Whether the agent trusts its time at `now`, ignoring the anchor.
    fn vouched(&self) -> bool {
        self.corrected.is_some() || self.confirmed || self.readings_trusted()
    }

    fn below_anchor(&self, ms: u64) -> bool {
        self.anchor.is_some_and(|a| ms < a)
    }

    pub(super) fn sent_heartbeat(&mut self, counter: u32, now: Instant) {
        if self.heartbeats.is_full() {
            self.heartbeats.pop_front();
        }
        // Room was made above.
        let _ = self.heartbeats.push_back((counter, now));
    }

    /// The restored anchor (the highest wins).
    pub(super) fn restore_anchor(&mut self, unix_ms: u64) {
        self.anchor = Some(self.anchor.map_or(unix_ms, |a| a.max(unix_ms)));
    }

    /// A new incarnation reports its trust once, whatever it is.
    pub(super) fn report_at_start(&mut self) {
        self.reported = None;
    }
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// How the runtime vouches for its clock; call before [`Agent::finish_restore`]. Without a
    /// call the rule is [`ClockRule::Trusted`].
    pub fn set_clock_rule(&mut self, rule: ClockRule) {
        self.clock.rule = rule;
        self.update_trust(self.latest);
    }

    /// The runtime's wall clock at `now`; call at start (before restoring) and at every wake-up
    /// (the clock may have been stepped). Start times and occurrences are wall-clock values.
    pub fn handle_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.saw(now);
        let clock = &mut self.clock;
        if let Some(previous) = clock.reading {
            let elapsed = now.saturating_duration_since(previous.0);
            if unix_ms.abs_diff(map(previous, now)) > STEP_TOLERANCE_MS + drift(elapsed) {
                // Stepped: what vouched for the old readings says nothing of the new ones.
                clock.confirmed = false;
                clock.synced = false;
            }
        }
        clock.reading = Some((now, unix_ms));
        if let Some(corrected) = clock.corrected
            && clock.readings_trusted()
        {
            let elapsed = now.saturating_duration_since(corrected.0);
            if unix_ms.abs_diff(map(corrected, now)) <= CLOCK_TOLERANCE_MS + drift(elapsed) {
                clock.corrected = None;
            }
        }
        self.update_trust(now);
    }

    /// Whether the kernel's clock is NTP-synchronised (rule [`ClockRule::Ntp`]), as the runtime
    /// read it: at start and then now and again (at most once a minute is plenty).
    pub fn handle_clock_synced(&mut self, now: Instant, synced: bool) {
        self.saw(now);
        self.clock.synced = synced;
        self.update_trust(now);
    }

    /// Whether the agent trusts its wall clock now (see the module documentation).
    pub fn clock_trusted(&self) -> bool {
        self.clock.trusted
    }

    /// Wall-clock milliseconds at `now`, as the agent believes them (the master's correction,
    /// or the runtime's readings), if it has any.
    pub fn unix_ms(&self, now: Instant) -> Option<u64> {
        self.clock.mapping().map(|m| map(m, now))
    }

    /// The instant the agent's wall clock reads `unix_ms`, if it has a clock.
    pub(super) fn wall_instant(&self, unix_ms: u64) -> Option<Instant> {
        let (at, ms) = self.clock.mapping()?;
        Some(if unix_ms >= ms {
            at.saturating_add(millis::duration(unix_ms - ms))
        } else {
            at.saturating_sub(millis::duration(ms - unix_ms))
        })
    }

    /// The master's time (`CommandBody::Clock`), authenticated and fresh.
    pub(super) fn handle_master_clock(
        &mut self,
        now: Instant,
        unix_ms: u64,
        incarnation: u32,
        heartbeat: u32,
    ) {
        let sent = (incarnation == self.incarnation)
            .then(|| self.clock.heartbeats.iter().find(|(c, _)| *c == heartbeat))
            .flatten()
            .map(|&(_, at)| at);
        let rtt = sent.map(|at| now.saturating_duration_since(at));
        let Some(rtt) = rtt.filter(|&rtt| rtt <= CLOCK_MAX_RTT) else {
            self.stats.stale_clocks += 1;
            return;
        };
        let half = rtt.as_millis() / 2;
        let master = unix_ms.saturating_add(half);
        let before = self.unix_ms(now);
        let clock = &mut self.clock;
        let local = clock.reading.map(|r| map(r, now));
        clock.set_back = false;
        if local.is_some_and(|l| l.abs_diff(master) <= CLOCK_TOLERANCE_MS + half) {
            clock.corrected = None;
            clock.confirmed = true;
        } else {
            clock.corrected = Some((now, master));
            clock.confirmed = false;
            self.stats.clock_corrections += 1;
        }
        let was = self.clock.trusted;
        self.update_trust(now);
        let moved = before.is_none_or(|b| b.abs_diff(master) > CLOCK_TOLERANCE_MS + half);
        if was && self.clock.trusted && moved {
            // Another time: what it makes late is caught up from now.
            self.clock.trusted_since = master;
        }
    }

    /// Evaluates trust at `now`; a change is reported at the next timeout
    /// ([`Agent::clock_report_due`]).
    pub(super) fn update_trust(&mut self, now: Instant) {
        let clock = &mut self.clock;
        if clock
            .reading
            .is_some_and(|r| clock.below_anchor(map(r, now)))
        {
            clock.set_back = true;
        }
        let clock = &self.clock;
        let trusted = match self.unix_ms(now) {
            Some(ms) => clock.vouched() && !clock.below_anchor(ms),
            None => false,
        };
        if trusted && !self.clock.trusted {
            self.clock.trusted_since = self.unix_ms(now).unwrap_or(0);
        }
        self.clock.trusted = trusted;
    }

    /// A change of trust not reported yet is reported at once.
    pub(super) fn clock_report_due(&self) -> Option<Instant> {
        (self.clock.reported != Some(self.clock.trusted)).then_some(self.latest)
    }

    pub(super) fn report_clock(&mut self, now: Instant) {
        let trusted = self.clock.trusted;
        self.clock.reported = Some(trusted);
        if self.log.rejection_fits {
            self.push_event(now, EventKind::Clock { trusted });
        }
    }

    /// A trusted clock writes an anchor at the first wake-up, then at the first one an hour
    /// past the last (no timer of its own: an agent that holds something by the clock wakes
    /// for it, and one that holds nothing needs no fresh anchor). Not while stopping.
    pub(super) fn anchor_due(&self) -> Option<Instant> {
        if !self.clock.trusted || self.stopping.is_some() {
            return None;
        }
        match self.clock.anchor {
            None => Some(self.latest),
            Some(a) => a
                .checked_add(ANCHOR_EVERY_MS)
                .and_then(|at| self.wall_instant(at)),
        }
    }

    pub(super) fn write_anchor(&mut self, now: Instant) {
        if let Some(unix_ms) = self.unix_ms(now) {
            self.clock.restore_anchor(unix_ms);
            self.append(Append::ClockAnchor { unix_ms });
        }
    }

    /// A clock vouched for but below the anchor is trusted once its time passes the anchor
    /// (the master's time, or a synchronised kernel's).
    pub(super) fn anchor_passed_due(&self) -> Option<Instant> {
        let clock = &self.clock;
        let anchor = clock.anchor?;
        (!clock.trusted && clock.vouched())
            .then(|| self.wall_instant(anchor))
            .flatten()
    }
}
