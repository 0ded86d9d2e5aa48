//! A message in: routed by topic, authenticated before it is parsed, refused when replayed or
//! meant for another journal, then acted on. Bad commands are counted at once and reported
//! coalesced, so junk cannot fill the journal.

use embassy_time::Instant;

use super::{Agent, Append, Auth};
use crate::auth::Verifier;
use crate::journal::JournalLevel;
use crate::message::{Command, CommandBody, EventKind, Message};
use crate::presence::Presence;
use crate::topic::Topic;
use crate::wire::{self, DecodeError, ReceiveError, Refusal};

/// Bad commands not reported yet: the latest error and how many; and when we last reported.
#[derive(Debug)]
pub(super) struct BadCommands {
    pending: Option<(ReceiveError, u64)>,
    reported_at: Option<Instant>,
}

impl BadCommands {
    pub(super) fn new() -> Self {
        Self {
            pending: None,
            reported_at: None,
        }
    }
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// A message arrived on a subscribed topic.
    pub fn handle_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        match Topic::parse(&self.prefix, topic) {
            Ok(Topic::AgentCommand(id)) if id == self.id => {
                match wire::decode_verified(payload, topic, self.verifier()) {
                    Ok(Message::Command(cmd)) if !self.for_this_journal(&cmd) => {
                        self.stats.other_journal += 1;
                        self.bad_command(now, Refusal::OtherJournal);
                    }
                    Ok(Message::Command(cmd)) => {
                        match self.replay.accept_command(cmd.epoch, cmd.counter) {
                            Ok(moved) => {
                                self.persist_high_water(moved);
                                self.handle_command(now, cmd);
                            }
                            Err(_) => self.bad_command(now, Refusal::Replayed),
                        }
                    }
                    Ok(_) => self.bad_command(now, DecodeError::WrongTopic),
                    Err(error) => self.bad_command(now, error),
                }
            }
            Ok(Topic::MasterHeartbeat) => {
                match wire::decode_verified(payload, topic, self.verifier()) {
                    Ok(Message::MasterHeartbeat(hb)) => {
                        let Ok(moved) = self.replay.accept_heartbeat(hb.epoch, hb.counter) else {
                            // Authentic but old: never contact.
                            self.rejected(Refusal::Replayed);
                            return;
                        };
                        self.persist_high_water(moved);
                        self.handle_master_heartbeat(now, &hb);
                    }
                    Ok(_) => self.rejected(DecodeError::WrongTopic),
                    Err(error) => self.rejected(error),
                }
            }
            Ok(Topic::MasterPresence) => {
                match Presence::parse_verified(payload, topic, self.verifier()) {
                    Ok(p) => self.contact.master_presence = Some(p),
                    Err(error) => self.rejected(error),
                }
            }
            Ok(Topic::AgentPresence(id)) if id == self.id => self.check_own_presence(payload),
            _ => self.stats.foreign_messages += 1,
        }
    }

    fn verifier(&self) -> Verifier<'_> {
        match &self.auth {
            Auth::Keys { master, .. } => Verifier::Master(master),
            Auth::Insecure => Verifier::Insecure,
        }
    }

    /// Journals the replay guard's high-water mark when it moved, so a restart keeps refusing
    /// what it refused before.
    fn persist_high_water(&mut self, moved: bool) {
        if moved {
            let (epoch, counter) = self.replay.high_water();
            self.append(Append::MasterCounter { epoch, counter });
        }
    }

    /// Whether a command is meant for this journal. Before the master has heard one (0) it may
    /// start and kill, never acknowledge: an acknowledgement numbers events of one journal.
    fn for_this_journal(&self, cmd: &Command) -> bool {
        cmd.journal == self.journal
            || (cmd.journal == 0 && !matches!(cmd.body, CommandBody::Ack { .. }))
    }

    /// An authentic, fresh command for this journal.
    fn handle_command(&mut self, now: Instant, cmd: Command) {
        self.saw(now);
        self.heard_from_master(now);
        self.contact.master_epoch = Some(cmd.epoch);
        match cmd.body {
            CommandBody::Start(spec) => self.handle_start(now, spec),
            CommandBody::Kill { task } => self.handle_kill(now, task),
            CommandBody::Ack { up_to } => self.handle_ack(now, up_to),
            CommandBody::StartAfter { spec, after } => self.handle_start_after(now, spec, after),
            CommandBody::Schedule(spec) => self.handle_schedule(now, spec),
            CommandBody::Clock {
                unix_ms,
                incarnation,
                heartbeat,
            } => self.handle_master_clock(now, unix_ms, incarnation, heartbeat),
        }
    }

    /// A bad command is counted at once and reported coalesced: the first at once, the rest
    /// with the next heartbeat (at most one event per period), so junk cannot fill the journal.
    fn bad_command(&mut self, now: Instant, error: impl Into<ReceiveError>) {
        let error = error.into();
        self.stats.bad_commands += 1;
        self.count_rejection(error);
        let count = self.bad.pending.map_or(0, |(_, n)| n) + 1;
        self.bad.pending = Some((error, count));
        let quiet = self
            .bad
            .reported_at
            .is_none_or(|t| now >= t.saturating_add(self.heartbeat_period()));
        if quiet {
            self.report_bad_commands(now);
        }
    }

    pub(super) fn report_bad_commands(&mut self, now: Instant) {
        let Some((error, count)) = self.bad.pending.take() else {
            return;
        };
        self.bad.reported_at = Some(now);
        if self.log.journal_level == JournalLevel::Normal {
            self.push_event(now, EventKind::BadCommand { error, count });
        }
    }

    /// A message from the master's heartbeat or presence topic that was dropped.
    fn rejected(&mut self, error: impl Into<ReceiveError>) {
        let error = error.into();
        self.stats.bad_messages += 1;
        self.count_rejection(error);
    }

    fn count_rejection(&mut self, error: ReceiveError) {
        match error {
            ReceiveError::Refused(Refusal::Unauthenticated) => self.stats.unauthenticated += 1,
            ReceiveError::Refused(Refusal::BadSignature) => self.stats.bad_signatures += 1,
            ReceiveError::Refused(Refusal::Replayed) => self.stats.replayed += 1,
            _ => {}
        }
    }
}
