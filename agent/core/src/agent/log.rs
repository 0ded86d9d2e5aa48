//! The event log: appends numbered (lsn) and events numbered (seq), events sent only once
//! durable and at most [`SEND_WINDOW`] ahead of the master's acknowledgement, resent after a
//! reconnect or an acknowledgement timeout; and the journal's fill level.

use embassy_time::Instant;

use super::{Action, Agent, Append, SEND_WINDOW};
use crate::journal::{JournalLevel, JournalUsage};
use crate::message::{Event, EventKind, Message, Report};
use crate::wire::{self, EncodeError};

#[derive(Debug)]
pub(super) struct EventLog {
    pub(super) next_lsn: u64,
    pub(super) durable_lsn: u64,
    /// The newest event appended: (lsn, seq).
    pub(super) last_event: (u64, u64),
    pub(super) next_seq: u64,
    pub(super) durable_seq: u64,
    pub(super) sent_seq: u64,
    pub(super) acked_seq: u64,
    pub(super) ack_deadline: Option<Instant>,
    pub(super) journal_level: JournalLevel,
    pub(super) journal_bytes: u64,
    /// A rejection may still be journaled (see [`JournalUsage::rejection_fits`]).
    pub(super) rejection_fits: bool,
    /// `acked_seq` at the last compaction asked for: compacting again only pays off once the
    /// master has acknowledged more.
    pub(super) compacted_at: Option<u64>,
}

impl EventLog {
    pub(super) fn new() -> Self {
        Self {
            next_lsn: 1,
            durable_lsn: 0,
            last_event: (0, 0),
            next_seq: 1,
            durable_seq: 0,
            sent_seq: 0,
            acked_seq: 0,
            ack_deadline: None,
            journal_level: JournalLevel::Normal,
            journal_bytes: 0,
            rejection_fits: true,
            compacted_at: None,
        }
    }
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// Encodes a journaled event for the event topic, MAC'd with the agent's key.
    pub fn encode_event<'b>(
        &self,
        event: &Event,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], EncodeError> {
        let report = Report {
            journal: self.journal,
            event: event.clone(),
        };
        wire::encode_for(
            &Message::Event(report),
            &self.topics.event,
            self.signer(),
            buf,
        )
    }

    /// Appends through `lsn` are durable.
    pub fn handle_journaled(&mut self, now: Instant, lsn: u64) {
        let log = &mut self.log;
        log.durable_lsn = log.durable_lsn.max(lsn);
        if log.durable_lsn >= log.last_event.0 {
            log.durable_seq = log.durable_seq.max(log.last_event.1);
        }
        self.spawn_durable();
        self.maybe_send(now);
        self.maybe_stop(now);
    }

    /// The journal's size after appends, syncs and compactions: sets the level (drop output,
    /// refuse starts) and asks for a compaction ([`Action::Compact`]) when one pays off.
    pub fn handle_journal_usage(&mut self, usage: JournalUsage) {
        let log = &mut self.log;
        log.journal_level = usage.level(self.max_tasks);
        log.journal_bytes = usage.bytes;
        log.rejection_fits = usage.rejection_fits(self.max_tasks);
        if usage.worth_compacting(log.journal_level) && log.compacted_at < Some(log.acked_seq) {
            log.compacted_at = Some(log.acked_seq);
            self.push(Action::Compact);
        }
    }

    /// The journal level in force.
    pub fn journal_level(&self) -> JournalLevel {
        self.log.journal_level
    }

    pub(super) fn append(&mut self, record: Append) -> u64 {
        let lsn = self.log.next_lsn;
        self.log.next_lsn += 1;
        self.push(Action::Append { lsn, record });
        lsn
    }

    pub(super) fn push_event(&mut self, now: Instant, kind: EventKind) {
        let seq = self.log.next_seq;
        self.log.next_seq += 1;
        let at_unix_ms = self.unix_ms(now).unwrap_or(0);
        let lsn = self.append(Append::Event(Event {
            seq,
            at_unix_ms,
            kind,
        }));
        self.log.last_event = (lsn, seq);
    }

    pub(super) fn maybe_send(&mut self, now: Instant) {
        let log = &self.log;
        if !self.contact.connected || log.sent_seq >= log.durable_seq {
            return;
        }
        let window_end = log.acked_seq + SEND_WINDOW;
        if log.sent_seq >= window_end {
            return;
        }
        let to = log.durable_seq.min(window_end);
        let from = log.sent_seq + 1;
        self.push(Action::Send { from, to });
        self.log.sent_seq = to;
        if self.log.ack_deadline.is_none() {
            self.log.ack_deadline = Some(now.saturating_add(self.heartbeat_period()));
        }
    }

    /// The master's acknowledgement of every event up to `up_to`.
    pub(super) fn handle_ack(&mut self, now: Instant, up_to: u64) {
        // Never beyond what was sent: a master cannot acknowledge the unseen.
        let up_to = up_to.min(self.log.sent_seq.max(self.log.acked_seq));
        if up_to > self.log.acked_seq {
            self.log.acked_seq = up_to;
            self.push(Action::Acked { up_to });
            self.log.ack_deadline = (self.log.sent_seq > self.log.acked_seq)
                .then(|| now.saturating_add(self.heartbeat_period()));
            self.maybe_send(now);
        }
    }

    /// No acknowledgement in time: send the unacknowledged events again.
    pub(super) fn resend_unacked(&mut self, now: Instant) {
        self.log.sent_seq = self.log.acked_seq;
        self.log.ack_deadline = None;
        self.maybe_send(now);
    }
}
