//! One agent as the master knows it: presence with incarnation, last contact, and the
//! deduplication of its events by sequence number.

use std::collections::BTreeSet;

use tether_core::Instant;
use tether_core::presence::{Presence, State};

use log::info;

use super::liveness::LastHeartbeat;
use super::{Change, Master};
use crate::model::AgentPresence;

/// What an event's sequence number means for the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seq {
    /// Stored already (a redelivery or replay): acknowledge again, apply nothing.
    Duplicate,
    /// New; `acked` is the contiguous prefix after it, to acknowledge once stored.
    New { advanced: bool },
}

#[derive(Debug, Clone)]
pub(super) struct AgentEntry {
    pub(super) incarnation: Option<u32>,
    pub(super) presence: AgentPresence,
    /// The last proof of life: a fresh heartbeat or a new event (or the master's start, after
    /// a restore). Presence is not one: a recorded `online` can be published again.
    pub(super) last_heard: Instant,
    /// When presence last turned online: the agent has a silence from then to prove it.
    pub(super) online_since: Instant,
    pub(super) last_heartbeat: LastHeartbeat,
    /// The incarnation a fresh heartbeat proved (none after a restore). A new incarnation
    /// is not given work on its presence alone: its first heartbeat names its journal, and a
    /// start sent before would name the journal of the process that went away.
    pub(super) proven: Option<u32>,
    /// Every event up to here is stored; acknowledged cumulatively.
    pub(super) acked: u64,
    /// The agent's latest event sequence, as its last fresh heartbeat said (0 until one):
    /// above `acked`, events wait in its journal.
    pub(super) journal_seq: u64,
    /// Stored events above `acked` (received across a gap).
    above: BTreeSet<u64>,
    /// An acknowledgement should go out after this input.
    pub(super) ack_due: bool,
    /// Task slots learned from a `Full` refusal, for the incarnation that refused (a restarted
    /// agent may be configured differently). Soft state: learned again after a master restart.
    capacity: Option<(Option<u32>, usize)>,
    /// Switched over by an operator: no new attempts go there (persisted).
    pub(super) disabled: bool,
    /// The journal its events are numbered in, once named ([`super::journals`]).
    pub(super) journal: Option<u32>,
    /// The master's number for that journal's sequence 0.
    pub(super) seq_base: u64,
    /// The master's heartbeat counter when a fresh heartbeat first said the journal is behind
    /// what was stored: a heartbeat answering a later one and still behind proves a rewound
    /// journal ([`super::journals`]).
    pub(super) behind_since: Option<u64>,
}

/// What a presence message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PresenceEffect {
    /// The presence or incarnation changed.
    Changed,
    Unchanged,
    /// A will (or stop) of an earlier incarnation: ignored.
    Stale,
}

impl AgentEntry {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            incarnation: None,
            presence: AgentPresence::Unknown,
            last_heard: now,
            online_since: now,
            last_heartbeat: None,
            proven: None,
            acked: 0,
            journal_seq: 0,
            above: BTreeSet::new(),
            ack_due: false,
            capacity: None,
            disabled: false,
            journal: None,
            seq_base: 0,
            behind_since: None,
        }
    }

    pub(super) fn restored(
        stored: &crate::model::Agent,
        above: impl IntoIterator<Item = u64>,
        now: Instant,
    ) -> Self {
        let acked = stored.last_seq_acked;
        let mut entry = Self {
            incarnation: stored.incarnation,
            presence: stored.presence,
            last_heard: now,
            online_since: now,
            last_heartbeat: None,
            // Not the stored incarnation: what the store says of the agent may be older than
            // what the broker has (a will the master received and never stored before it went
            // down). New work waits for a fresh heartbeat, at most a period after the start.
            proven: None,
            acked,
            journal_seq: 0,
            above: above.into_iter().filter(|&s| s > acked).collect(),
            ack_due: false,
            capacity: None,
            disabled: stored.disabled,
            journal: stored.journal,
            seq_base: stored.seq_base,
            behind_since: None,
        };
        entry.advance();
        entry
    }

    /// The agent refused a task for lack of slots while `busy` of its attempts were accepted
    /// or running: that is how many it holds.
    pub(super) fn learn_capacity(&mut self, busy: usize) {
        self.capacity = Some((self.incarnation, busy.max(1)));
    }

    /// Whether a new attempt fits next to `open` ones (always, until a refusal taught a limit).
    pub(super) fn has_room(&self, open: usize) -> bool {
        match self.capacity {
            Some((inc, slots)) if inc == self.incarnation => open < slots,
            _ => true,
        }
    }

    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// Applies a presence message. A will or stop naming another incarnation than the live
    /// one is stale (rumqttd may fire an old session's will late) and changes nothing.
    pub(super) fn presence(&mut self, p: Presence, now: Instant) -> PresenceEffect {
        let before = (self.presence, self.incarnation);
        match p.state {
            State::Online => {
                if before != (AgentPresence::Online, Some(p.incarnation)) {
                    self.online_since = now;
                }
                self.incarnation = Some(p.incarnation);
                self.presence = AgentPresence::Online;
            }
            State::Lost | State::Stopped => {
                if self.incarnation.is_some_and(|inc| inc != p.incarnation) {
                    return PresenceEffect::Stale;
                }
                self.incarnation = Some(p.incarnation);
                self.presence = if p.state == State::Lost {
                    AgentPresence::Lost
                } else {
                    AgentPresence::Stopped
                };
            }
        }
        if before == (self.presence, self.incarnation) {
            PresenceEffect::Unchanged
        } else {
            PresenceEffect::Changed
        }
    }

    /// Classifies an event's sequence number and records it as stored. Sequence 0 is never
    /// issued by an agent; it is treated as a duplicate so it changes nothing.
    pub(super) fn receive(&mut self, seq: u64) -> Seq {
        self.ack_due = true;
        if seq == 0 || seq <= self.acked || !self.above.insert(seq) {
            return Seq::Duplicate;
        }
        let before = self.acked;
        self.advance();
        Seq::New {
            advanced: self.acked > before,
        }
    }

    /// Numbers `journal`'s events after its sequence `carried` above everything stored from
    /// now on (the sequences up to `carried` are copies of stored events); returns the new base.
    pub(super) fn start_journal(&mut self, journal: u32, carried: u64) -> u64 {
        let top = self.above.last().copied().unwrap_or(0).max(self.acked);
        let base = top.saturating_sub(carried);
        self.journal = Some(journal);
        self.seq_base = base;
        self.acked = top;
        self.journal_seq = top;
        self.above.clear();
        self.ack_due = false;
        self.behind_since = None;
        base
    }

    fn advance(&mut self) {
        while self.above.remove(&(self.acked + 1)) {
            self.acked += 1;
        }
    }
}

impl Master {
    /// An agent's retained presence (or will): registers the agent, records its incarnation.
    pub(super) fn handle_presence(&mut self, now: Instant, id: &str, p: Presence) {
        let entry = self
            .agents
            .entry(id.to_owned())
            .or_insert_with(|| AgentEntry::new(now));
        match entry.presence(p, now) {
            PresenceEffect::Stale => {
                self.stats.stale_wills += 1;
                info!(
                    "agent {id}: ignoring '{}' of an earlier incarnation",
                    p.render()
                );
            }
            PresenceEffect::Unchanged => {}
            PresenceEffect::Changed => {
                info!("agent {id}: {}", p.render());
                let change = Change::Agent {
                    id: id.to_owned(),
                    incarnation: entry.incarnation,
                    presence: entry.presence,
                    heard: p.state == State::Online,
                };
                self.persist(change);
                if p.state == State::Online {
                    // Its answer, echoing this heartbeat, is what makes it available.
                    self.heartbeat_soon(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(state: State, incarnation: u32) -> Presence {
        Presence { state, incarnation }
    }

    #[test]
    fn cumulative_ack_only_over_the_contiguous_prefix() {
        let now = Instant::from_secs(1);
        let mut a = AgentEntry::new(now);
        assert_eq!(a.receive(1), Seq::New { advanced: true });
        assert_eq!(a.receive(3), Seq::New { advanced: false });
        assert_eq!(a.acked, 1);
        assert_eq!(a.receive(3), Seq::Duplicate);
        assert_eq!(a.receive(2), Seq::New { advanced: true });
        assert_eq!(a.acked, 3);
        assert_eq!(a.receive(1), Seq::Duplicate);
        assert_eq!(a.receive(0), Seq::Duplicate);
    }

    #[test]
    fn a_new_journal_is_numbered_above_everything_stored() {
        let mut a = AgentEntry::new(Instant::MIN);
        for seq in [1, 2, 5] {
            a.receive(seq);
        }
        assert_eq!(a.acked, 2);
        assert_eq!(a.start_journal(0xbeef, 0), 5);
        assert_eq!((a.acked, a.journal, a.seq_base), (5, Some(0xbeef), 5));
        assert_eq!(a.receive(a.stored_seq(1)), Seq::New { advanced: true });
        assert_eq!(a.acked, 6);
        assert_eq!(a.agent_seq(a.acked), 1);
        assert_eq!(
            a.receive(5),
            Seq::Duplicate,
            "the old journal's numbers stay taken"
        );
    }

    #[test]
    fn a_rewound_journal_continues_above_everything_stored() {
        let mut a = AgentEntry::new(Instant::MIN);
        for seq in 1..=9 {
            a.receive(seq);
        }
        // Restored from a backup taken at its sequence 4: 1..=4 are stored already.
        assert_eq!(a.start_journal(0xbeef, 4), 5);
        assert_eq!(a.agent_seq(a.acked), 4);
        assert_eq!(a.receive(a.stored_seq(3)), Seq::Duplicate);
        assert_eq!(a.receive(a.stored_seq(5)), Seq::New { advanced: true });
        assert_eq!(a.acked, 10);
    }

    #[test]
    fn restored_gap_is_kept() {
        let stored = crate::model::Agent {
            last_seq_acked: 4,
            ..crate::model::Agent::new("pi-1")
        };
        let a = AgentEntry::restored(&stored, [6, 7, 3], Instant::MIN);
        assert_eq!(a.acked, 4);
        let mut a = a;
        assert_eq!(a.receive(6), Seq::Duplicate);
        assert_eq!(a.receive(5), Seq::New { advanced: true });
        assert_eq!(a.acked, 7);
    }

    #[test]
    fn capacity_gates_only_the_incarnation_that_taught_it() {
        let now = Instant::from_secs(1);
        let mut a = AgentEntry::new(now);
        a.presence(p(State::Online, 1), now);
        assert!(a.has_room(1000), "no limit before a refusal");
        a.learn_capacity(2);
        assert!(a.has_room(1) && !a.has_room(2));
        a.learn_capacity(0);
        assert!(a.has_room(0) && !a.has_room(1), "at least one slot");
        a.presence(p(State::Online, 2), now);
        assert!(a.has_room(1000), "a restarted agent may have more slots");
    }

    #[test]
    fn stale_will_never_marks_a_live_agent_offline() {
        let now = Instant::from_secs(1);
        let mut a = AgentEntry::new(now);
        assert_eq!(
            a.presence(p(State::Online, 1), now),
            PresenceEffect::Changed
        );
        assert_eq!(
            a.presence(p(State::Online, 2), now),
            PresenceEffect::Changed
        );
        assert_eq!(a.presence(p(State::Lost, 1), now), PresenceEffect::Stale);
        assert_eq!(a.presence, AgentPresence::Online);
        assert_eq!(a.presence(p(State::Lost, 2), now), PresenceEffect::Changed);
        assert_eq!(a.presence, AgentPresence::Lost);
        assert_eq!(
            a.presence(p(State::Lost, 2), now),
            PresenceEffect::Unchanged
        );
    }
}
