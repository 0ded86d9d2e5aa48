//! The agent state machine: every decision a Tether agent makes, and nothing else.
//!
//! Sans-IO in the style of quinn-proto: the runtime feeds inputs (`handle_*`, each with the
//! current `now`), then drains [`Agent::poll_action`] until it returns `None` and sleeps until
//! [`Agent::poll_timeout`], when it calls [`Agent::handle_timeout`]. Drain the actions after
//! every input: the queue is sized for the actions one input can cause.
//!
//! Inputs: MQTT connected/disconnected, a message received (commands, master heartbeats and
//! presence, the agent's own retained presence), process started/failed/output/exited, journal
//! writes made durable, timers, the wall clock, the journal's fill level, a normal stop.
//! Outputs ([`Action`]): publish, append to the journal, send journaled events, record an
//! acknowledgement, spawn, signal, stopped.
//!
//! The guarantees it keeps (checked by the simulation in `tests/`):
//! - an attempt is spawned at most once: its id is remembered (also across restarts, through
//!   the journal), and a `Spawning` record is durable before the spawn;
//! - an event is appended to the journal, and sent only once durable; it is resent after every
//!   reconnect and after an acknowledgement timeout until the master acknowledges it;
//! - a `kill` task is sent SIGTERM once the master has been silent for the task's heartbeat
//!   timeout (counted from the later of the last contact and the task's start) and SIGKILL a
//!   grace time later; a `continue` task is never terminated for a lost master;
//! - an order with a start time starts at that time, master or no master;
//! - with keys ([`Auth::Keys`]), nothing the master did not sign is acted on, nothing is acted on
//!   twice (epoch and counter, [`ReplayGuard`], persisted through the journal), only a fresh
//!   authentic master heartbeat counts as contact, and everything the agent publishes carries
//!   its MAC.

use embassy_time::{Duration, Instant};
use heapless::{Deque, String, Vec};

use crate::allowlist::Allowlist;
use crate::auth::{AgentKey, MasterKeys, ReplayGuard, Verifier};
use crate::journal::{JournalLevel, JournalRecord, JournalUsage};
use crate::message::{
    AgentHeartbeat, AgentId, Command, CommandBody, Echo, Event, EventKind, Exit, HEARTBEAT_TASKS,
    KillCause, Message, OUTPUT_CHUNK, RejectReason, Report, Stream, TaskRef, TaskSpec,
};
use crate::millis;
use crate::policy::OnDisconnect;
use crate::presence::{MAX_PRESENCE, Presence, State};
use crate::topic::{MAX_PREFIX, QoS, Topic, TopicBuf, TopicError, validate_id, validate_prefix};
use crate::wire::{self, DecodeError, EncodeError, Signer};

/// Actions one input can cause, at most (see the const assertion in [`Agent::new`]).
pub const ACTION_QUEUE: usize = 80;
/// Events sent and not yet acknowledged, at most: a long backlog replays in windows.
pub const SEND_WINDOW: u64 = 32;
/// Largest payload the agent publishes itself (heartbeats, presence).
pub const PUBLISH_MAX: usize = 400;
/// Journaled events are published at this QoS ([`Action::Send`]).
pub const EVENT_QOS: QoS = QoS::AtLeastOnce;
/// The MQTT keepalive is this many heartbeat periods, within these bounds (see
/// [`Agent::keepalive`]).
const KEEPALIVE_PERIODS: u32 = 2;
const KEEPALIVE_MIN: Duration = Duration::from_secs(5);
const KEEPALIVE_MAX: Duration = Duration::from_secs(600);
/// Heartbeat period before the master has announced its own.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
const MIN_PERIOD: Duration = millis::duration(100);
/// How long after a gap in contact the master's heartbeats are answered early, and how soon.
const REJOIN_WINDOW: Duration = Duration::from_secs(2);
const REJOIN_ANSWER_DELAY: Duration = millis::duration(100);
/// Linux EACCES: a held order whose program the allowlist no longer allows ends as a spawn
/// failure with it (the protocol's spawn failures carry Linux errno values).
const EACCES: i32 = 13;

/// Who the agent is.
#[derive(Debug, Clone)]
pub struct Config<'a> {
    pub id: &'a str,
    pub prefix: &'a str,
    /// New at every process start (random); tells a stale will from the live connection.
    pub incarnation: u32,
    /// The identity a new journal gets (random, not 0). A journal that has one keeps it: its
    /// `Identity` record, restored, replaces this.
    pub journal: u32,
    pub auth: Auth,
}

/// The agent's keys, or the explicit choice to run without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Commands, master heartbeats and master presence must be signed by one of `master`;
    /// everything the agent publishes is MAC'd with `agent`.
    Keys { master: MasterKeys, agent: AgentKey },
    /// Accept anything and authenticate nothing: any broker client can command this agent.
    Insecure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Kill,
}

/// A journal append; the runtime encodes it with [`Agent::encode_append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Append {
    Order(TaskRef),
    Spawning(TaskRef),
    Event(Event),
    /// The master's command high-water mark moved (replay protection across restarts).
    MasterCounter {
        epoch: u32,
        counter: u64,
    },
    /// The journal's identity, written once when it had none.
    Identity {
        journal: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Publish {
        topic: TopicBuf,
        payload: Vec<u8, PUBLISH_MAX>,
        qos: QoS,
        retain: bool,
    },
    /// Append to the journal; call [`Agent::handle_journaled`] with `lsn` (or a later one) once
    /// it is durable (fsync). Appends are numbered in order; group commit is welcome.
    Append { lsn: u64, record: Append },
    /// Publish the journaled events `from..=to` ([`EVENT_QOS`]) on the event topic.
    Send { from: u64, to: u64 },
    /// The master has every event up to `up_to`: the runtime forgets them (a later
    /// [`Action::Compact`] drops them from the journal).
    Acked { up_to: u64 },
    /// Rewrite the journal as [`Agent::snapshot`] plus the unacknowledged events, then report
    /// the new size with [`Agent::handle_journal_usage`].
    Compact,
    /// Start the attempt's process ([`Agent::task_spec`] has argv, env, cwd); report with
    /// `handle_process_started` or `handle_spawn_failed`.
    Spawn(TaskRef),
    /// Signal the attempt's whole process group.
    Signal { task: TaskRef, signal: Signal },
    /// A normal stop is complete: disconnect and exit.
    Stopped,
}

/// Where an attempt is in its life on this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its start time.
    Held,
    /// `Spawning` appended, spawned once durable.
    Starting {
        lsn: u64,
    },
    /// Spawn requested, process not confirmed yet.
    Spawned,
    Running {
        pid: u32,
        started: Instant,
    },
    /// Restored from the journal: it may have run before the agent restarted.
    Orphaned,
}

#[derive(Debug, Clone)]
struct Slot {
    spec: TaskSpec,
    phase: Phase,
    /// Set once termination began: the cause, and when SIGKILL is due (None once sent).
    kill: Option<(KillCause, Option<Instant>)>,
    /// A termination asked for before the process was confirmed.
    kill_pending: Option<KillCause>,
    reported: u64,
    dropped: u64,
    offsets: [u64; 2],
}

/// Counters of things dropped or repaired, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bad_commands: u64,
    pub bad_messages: u64,
    pub foreign_messages: u64,
    pub duplicate_starts: u64,
    pub rejected_starts: u64,
    pub presence_repairs: u64,
    /// Messages from the master's topics (commands, heartbeats, presence) without the
    /// required authentication.
    pub unauthenticated: u64,
    /// ... whose signature did not verify (forged, wrong key, or made for another topic).
    pub bad_signatures: u64,
    /// Authentic commands and heartbeats refused as replays (counter seen, epoch too old).
    pub replayed: u64,
    /// Actions that did not fit the queue because the runtime did not drain it; always 0 in a
    /// correct runtime.
    pub lost_actions: u64,
    /// Journaled orders that did not fit `TASKS` at restore (only if `TASKS` shrank).
    pub unrestored_orders: u64,
    /// Authentic commands dropped because they named another journal of this agent.
    pub other_journal: u64,
}

#[derive(Debug, Clone)]
struct Topics {
    cmd: TopicBuf,
    event: TopicBuf,
    heartbeat: TopicBuf,
    presence: TopicBuf,
    master_heartbeat: TopicBuf,
    master_presence: TopicBuf,
}

/// The agent. `TASKS` bounds attempts held or running at once (at most 32, see
/// [`ACTION_QUEUE`]); `SEEN` bounds the attempt ids remembered for exactly-once start.
#[derive(Debug)]
pub struct Agent<const TASKS: usize, const SEEN: usize> {
    id: AgentId,
    prefix: String<MAX_PREFIX>,
    incarnation: u32,
    journal: u32,
    /// The journal had its identity: restored from it, or appended at restore.
    journal_named: bool,
    topics: Topics,
    auth: Auth,
    replay: ReplayGuard,
    /// Bad commands not reported yet: the latest error and how many.
    bad_pending: Option<(DecodeError, u64)>,
    bad_reported_at: Option<Instant>,

    connected: bool,
    last_contact: Instant,
    master_epoch: Option<u32>,
    master_period: Duration,
    master_presence: Option<Presence>,
    next_heartbeat: Option<Instant>,
    /// Until when master heartbeats are answered early ([`Agent::rejoining`]).
    rejoin_until: Option<Instant>,
    /// Our heartbeats so far (this incarnation), and the master heartbeat they echo.
    heartbeats: u32,
    echo: Option<Echo>,
    /// The master has not seen a fresh echo from this connection (or of its current epoch):
    /// answer its next heartbeat at once, so it counts us as alive without waiting a period.
    echo_owed: bool,
    wall: Option<(Instant, u64)>,

    slots: Vec<Slot, TASKS>,
    /// Attempts accepted at once, at most `TASKS` (a runtime setting).
    max_tasks: usize,
    /// Programs tasks may run; `None` allows every program.
    allowlist: Option<Allowlist>,
    seen: Deque<u64, SEEN>,
    forgotten_below: u64,

    next_lsn: u64,
    durable_lsn: u64,
    /// The newest event appended: (lsn, seq).
    last_event: (u64, u64),
    next_seq: u64,
    durable_seq: u64,
    sent_seq: u64,
    acked_seq: u64,
    ack_deadline: Option<Instant>,
    journal_level: JournalLevel,
    journal_bytes: u64,
    /// `acked_seq` at the last compaction asked for: compacting again only pays off once the
    /// master has acknowledged more.
    compacted_at: Option<u64>,

    stopping: Option<Instant>,
    /// The drain deadline passed: what remains waits on processes, not on time.
    drain_expired: bool,
    stopped: bool,

    actions: Deque<Action, ACTION_QUEUE>,
    stats: Stats,
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    const FITS: () = assert!(
        2 * TASKS + 16 <= ACTION_QUEUE && SEEN >= TASKS,
        "TASKS must be at most 32 and SEEN at least TASKS"
    );

    pub fn new(config: Config<'_>, now: Instant) -> Result<Self, TopicError> {
        let () = Self::FITS;
        validate_prefix(config.prefix)?;
        let id = validate_id(config.id)?;
        let p = config.prefix;
        let topics = Topics {
            cmd: Topic::AgentCommand(id.clone()).build(p)?,
            event: Topic::AgentEvent(id.clone()).build(p)?,
            heartbeat: Topic::AgentHeartbeat(id.clone()).build(p)?,
            presence: Topic::AgentPresence(id.clone()).build(p)?,
            master_heartbeat: Topic::MasterHeartbeat.build(p)?,
            master_presence: Topic::MasterPresence.build(p)?,
        };
        Ok(Self {
            id,
            prefix: String::try_from(p).map_err(|_| TopicError::InvalidPrefix)?,
            incarnation: config.incarnation,
            journal: config.journal.max(1),
            journal_named: false,
            topics,
            auth: config.auth,
            replay: ReplayGuard::new(),
            bad_pending: None,
            bad_reported_at: None,
            connected: false,
            last_contact: now,
            master_epoch: None,
            master_period: DEFAULT_PERIOD,
            master_presence: None,
            next_heartbeat: None,
            rejoin_until: None,
            heartbeats: 0,
            echo: None,
            echo_owed: true,
            wall: None,
            slots: Vec::new(),
            max_tasks: TASKS,
            allowlist: None,
            seen: Deque::new(),
            forgotten_below: 0,
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
            compacted_at: None,
            stopping: None,
            drain_expired: false,
            stopped: false,
            actions: Deque::new(),
            stats: Stats::default(),
        })
    }

    // ----- getters -----

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The identity of the journal this agent's events are numbered in.
    pub fn journal(&self) -> u32 {
        self.journal
    }

    /// Topics to subscribe to after every connect, with their QoS. The master's heartbeats are
    /// QoS 0: one a broker queued while the agent was away is stale and must not count as
    /// contact with the master.
    pub fn subscriptions(&self) -> [(&str, QoS); 4] {
        [
            (&self.topics.cmd, QoS::AtLeastOnce),
            (&self.topics.master_heartbeat, QoS::AtMostOnce),
            (&self.topics.master_presence, QoS::AtLeastOnce),
            (&self.topics.presence, QoS::AtLeastOnce),
        ]
    }

    /// The MQTT keepalive to connect with: two heartbeat periods, so heartbeats keep the link
    /// busy and pings are rare (the client's timer wakes the board only every other period),
    /// while the broker still fires the will three periods into a silent link. The agent's own
    /// heartbeat timeouts, not the keepalive, decide what happens to tasks.
    pub fn keepalive(&self) -> Duration {
        (self.heartbeat_period() * KEEPALIVE_PERIODS).clamp(KEEPALIVE_MIN, KEEPALIVE_MAX)
    }

    pub fn event_topic(&self) -> &str {
        &self.topics.event
    }

    /// The last will to register at connect: retained `offline <inc> lost <mac>` on our
    /// presence topic.
    pub fn will(&self) -> (&str, String<MAX_PRESENCE>) {
        let will = Presence {
            state: State::Lost,
            incarnation: self.incarnation,
        };
        let topic = &self.topics.presence;
        (topic, will.render_signed(topic, self.signer()))
    }

    /// The master's command high-water mark accepted so far: (epoch, counter).
    pub fn master_counter(&self) -> (u32, u64) {
        self.replay.high_water()
    }

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

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    pub fn last_contact(&self) -> Instant {
        self.last_contact
    }

    pub fn master_presence(&self) -> Option<Presence> {
        self.master_presence
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Highest sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn task_spec(&self, task: TaskRef) -> Option<&TaskSpec> {
        self.slot(task).map(|i| &self.slots[i].spec)
    }

    /// Attempts held or running, in acceptance order.
    pub fn tasks(&self) -> impl Iterator<Item = (TaskRef, Phase)> + '_ {
        self.slots.iter().map(|s| (s.spec.task, s.phase))
    }

    /// The heartbeat period in force: the master's, or shorter if a task asks for it.
    pub fn heartbeat_period(&self) -> Duration {
        self.slots
            .iter()
            .map(|s| millis::duration(s.spec.policy.heartbeat_period_ms))
            .fold(self.master_period, Duration::min)
            .max(MIN_PERIOD)
    }

    /// Wall-clock milliseconds at `now`, if the runtime has told the clock.
    pub fn unix_ms(&self, now: Instant) -> Option<u64> {
        self.wall.map(|(at, ms)| {
            if now >= at {
                ms.saturating_add((now - at).as_millis())
            } else {
                ms.saturating_sub((at - now).as_millis())
            }
        })
    }

    // ----- outputs -----

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next instant at which [`Agent::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.next_heartbeat);
        if self.sent_seq > self.acked_seq {
            consider(self.ack_deadline);
        }
        consider(
            self.stopping
                .filter(|_| !self.stopped && !self.drain_expired),
        );
        for slot in &self.slots {
            consider(self.slot_deadline(slot));
        }
        next
    }

    /// Encodes a journal append as its on-disk record.
    pub fn encode_append<'b>(
        &self,
        append: &Append,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], DecodeError> {
        let record = match append {
            Append::Order(task) => {
                let i = self.slot(*task).ok_or(DecodeError::Malformed)?;
                JournalRecord::Order(self.slots[i].spec.clone())
            }
            Append::Spawning(task) => JournalRecord::Spawning(*task),
            Append::Event(event) => JournalRecord::Event(event.clone()),
            Append::MasterCounter { epoch, counter } => JournalRecord::MasterCounter {
                epoch: *epoch,
                counter: *counter,
            },
            Append::Identity { journal } => JournalRecord::Identity { journal: *journal },
        };
        crate::journal::encode(&record, buf)
    }

    /// The records that rebuild this agent's state, for compaction: write these, then every
    /// journaled event with a sequence above [`Agent::acked_seq`], in order.
    pub fn snapshot(&self, mut emit: impl FnMut(&JournalRecord)) {
        emit(&JournalRecord::Identity {
            journal: self.journal,
        });
        emit(&JournalRecord::Acked {
            up_to: self.acked_seq,
        });
        if self.forgotten_below > 0 {
            emit(&JournalRecord::Forgotten {
                below: self.forgotten_below,
            });
        }
        for &attempt in &self.seen {
            emit(&JournalRecord::Seen { attempt });
        }
        let (epoch, counter) = self.replay.high_water();
        if (epoch, counter) != (0, 0) {
            emit(&JournalRecord::MasterCounter { epoch, counter });
        }
        for slot in &self.slots {
            emit(&JournalRecord::Order(slot.spec.clone()));
            if slot.phase != Phase::Held {
                emit(&JournalRecord::Spawning(slot.spec.task));
            }
        }
    }

    // ----- inputs -----

    /// Lowers the number of attempts held or running at once (never above `TASKS`).
    pub fn set_max_tasks(&mut self, max: usize) {
        self.max_tasks = max.clamp(1, TASKS);
    }

    /// Restricts the programs tasks may run (the runtime's configuration; an empty list allows
    /// nothing). Call before [`Agent::finish_restore`]: held orders restored from the journal
    /// are checked against it there.
    pub fn set_allowlist(&mut self, allowlist: Allowlist) {
        self.allowlist = Some(allowlist);
    }

    /// The runtime's wall clock at `now`; call at start (before restoring) and whenever it may
    /// have been stepped. Start times are wall-clock values.
    pub fn handle_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall = Some((now, unix_ms));
    }

    /// Replays one journal record at start-up, oldest first; then call
    /// [`Agent::finish_restore`].
    pub fn restore(&mut self, record: &JournalRecord) {
        match record {
            JournalRecord::Order(spec) => {
                self.remember(spec.task.attempt);
                if self.slot(spec.task).is_none() {
                    let slot = Slot::new(spec.clone(), Phase::Held);
                    if self.slots.push(slot).is_err() {
                        self.stats.unrestored_orders += 1;
                    }
                }
            }
            JournalRecord::Spawning(task) => {
                if let Some(i) = self.slot(*task) {
                    self.slots[i].phase = Phase::Orphaned;
                }
            }
            JournalRecord::Event(event) => {
                self.next_seq = self.next_seq.max(event.seq + 1);
                match &event.kind {
                    EventKind::Accepted { task } | EventKind::Rejected { task, .. } => {
                        self.remember(task.attempt);
                    }
                    EventKind::Finished { task, .. } => {
                        if let Some(i) = self.slot(*task) {
                            self.slots.remove(i);
                        }
                    }
                    _ => {}
                }
            }
            JournalRecord::Acked { up_to } => {
                self.acked_seq = self.acked_seq.max(*up_to);
                self.next_seq = self.next_seq.max(up_to + 1);
            }
            JournalRecord::Seen { attempt } => self.remember(*attempt),
            JournalRecord::Forgotten { below } => {
                self.forgotten_below = self.forgotten_below.max(*below);
            }
            JournalRecord::MasterCounter { epoch, counter } => {
                if (*epoch, *counter) > self.replay.high_water() {
                    self.replay = ReplayGuard::restored(*epoch, *counter);
                }
            }
            JournalRecord::Identity { journal } => {
                if !self.journal_named && *journal != 0 {
                    self.journal = *journal;
                    self.journal_named = true;
                }
            }
        }
    }

    /// Ends the replay: attempts that may have been running when the agent went down are
    /// reported lost (never started again); held orders wait for their time, unless the
    /// allowlist no longer allows their program (then they end as a spawn failure, EACCES).
    pub fn finish_restore(&mut self, now: Instant) {
        if !core::mem::replace(&mut self.journal_named, true) {
            // A new journal (or one from before identities): named before anything else lands.
            let journal = self.journal;
            self.append(Append::Identity { journal });
        }
        self.durable_seq = self.next_seq - 1;
        self.sent_seq = self.acked_seq;
        self.last_event = (0, self.durable_seq);
        self.last_contact = now;
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].phase == Phase::Orphaned {
                self.finish(now, i, Exit::Lost);
            } else if !self.allowed(&self.slots[i].spec) {
                // Accepted under an earlier allowlist: it must not start under this one.
                self.finish(now, i, Exit::SpawnFailed(EACCES));
            } else {
                i += 1;
            }
        }
        self.handle_timeout(now);
    }

    /// The broker accepted our connection (CONNACK) and subscriptions are being made.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        self.connected = true;
        self.sent_seq = self.acked_seq;
        self.ack_deadline = None;
        self.echo_owed = true;
        self.publish_presence(State::Online);
        self.publish_heartbeat(now);
        self.maybe_send(now);
    }

    pub fn handle_disconnected(&mut self, _now: Instant) {
        self.connected = false;
        self.next_heartbeat = None;
        self.ack_deadline = None;
    }

    /// Journals the replay guard's high-water mark when it moved, so a restart keeps refusing
    /// what it refused before.
    fn persist_high_water(&mut self, moved: bool) {
        if moved {
            let (epoch, counter) = self.replay.high_water();
            self.append(Append::MasterCounter { epoch, counter });
        }
    }

    /// A message arrived on a subscribed topic.
    pub fn handle_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        match Topic::parse(&self.prefix, topic) {
            Ok(Topic::AgentCommand(id)) if id == self.id => {
                match wire::decode_verified(payload, topic, self.verifier()) {
                    Ok(Message::Command(cmd)) if !self.for_this_journal(&cmd) => {
                        self.stats.other_journal += 1;
                        self.bad_command(now, DecodeError::OtherJournal);
                    }
                    Ok(Message::Command(cmd)) => {
                        match self.replay.accept_command(cmd.epoch, cmd.counter) {
                            Ok(moved) => {
                                self.persist_high_water(moved);
                                self.handle_command(now, cmd);
                            }
                            Err(_) => self.bad_command(now, DecodeError::Replayed),
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
                            self.rejected(DecodeError::Replayed);
                            return;
                        };
                        self.persist_high_water(moved);
                        let rejoining = self.rejoining(now);
                        self.contact(now);
                        if self.master_epoch != Some(hb.epoch) {
                            self.echo_owed = true;
                        }
                        self.master_epoch = Some(hb.epoch);
                        self.echo = Some(hb.echo());
                        self.master_period = millis::duration(hb.period_ms).max(MIN_PERIOD);
                        self.rearm_heartbeat(now);
                        // Answer in the same wake-up when ours is due within half a period: an
                        // idle agent then wakes about once per period, not twice.
                        let half = self.heartbeat_period() / 2;
                        if rejoining {
                            self.echo_owed = false;
                            let answer = now.saturating_add(REJOIN_ANSWER_DELAY);
                            self.next_heartbeat =
                                Some(self.next_heartbeat.map_or(answer, |t| t.min(answer)));
                        } else if core::mem::take(&mut self.echo_owed)
                            || self
                                .next_heartbeat
                                .is_some_and(|t| t <= now.saturating_add(half))
                        {
                            self.publish_heartbeat(now);
                        }
                    }
                    Ok(_) => self.rejected(DecodeError::WrongTopic),
                    Err(error) => self.rejected(error),
                }
            }
            Ok(Topic::MasterPresence) => {
                match Presence::parse_verified(payload, topic, self.verifier()) {
                    Ok(p) => self.master_presence = Some(p),
                    Err(error) => self.rejected(error),
                }
            }
            Ok(Topic::AgentPresence(id)) if id == self.id => self.check_own_presence(payload),
            _ => self.stats.foreign_messages += 1,
        }
    }

    /// The process of an attempt is running.
    pub fn handle_process_started(&mut self, now: Instant, task: TaskRef, pid: u32) {
        let Some(i) = self.slot(task) else { return };
        if self.slots[i].phase != Phase::Spawned {
            return;
        }
        self.slots[i].phase = Phase::Running { pid, started: now };
        self.push_event(now, EventKind::Started { task, pid });
        let late_stop = self.stopping.is_some_and(|d| now >= d);
        let cause = self.slots[i].kill_pending.take();
        if let Some(cause) = cause.or(late_stop.then_some(KillCause::AgentStopping)) {
            self.terminate(now, i, cause);
        }
        self.maybe_stop(now);
    }

    /// The process could not be started (errno).
    pub fn handle_spawn_failed(&mut self, now: Instant, task: TaskRef, errno: i32) {
        if let Some(i) = self.slot(task) {
            self.finish(now, i, Exit::SpawnFailed(errno));
        }
    }

    /// Output of a running attempt. Takes at most [`OUTPUT_CHUNK`] bytes and returns how many it
    /// took: call again with the rest (draining actions in between).
    pub fn handle_output(
        &mut self,
        now: Instant,
        task: TaskRef,
        stream: Stream,
        data: &[u8],
    ) -> usize {
        let take = data.len().min(OUTPUT_CHUNK);
        let Some(i) = self.slot(task) else {
            return data.len();
        };
        let level = self.journal_level;
        let slot = &mut self.slots[i];
        let s = usize::from(stream == Stream::Stderr);
        let offset = slot.offsets[s];
        slot.offsets[s] += take as u64;
        let room = slot.spec.policy.output_cap.saturating_sub(slot.reported);
        let keep = if level >= JournalLevel::DropOutput {
            0
        } else {
            (take as u64).min(room) as usize
        };
        slot.dropped += (take - keep) as u64;
        slot.reported += keep as u64;
        if keep > 0 {
            let mut chunk = Vec::new();
            // keep <= OUTPUT_CHUNK, the chunk's capacity.
            let _ = chunk.extend_from_slice(&data[..keep]);
            self.push_event(
                now,
                EventKind::Output {
                    task,
                    stream,
                    offset,
                    data: chunk,
                },
            );
        }
        take
    }

    /// The attempt's process exited (after its output was delivered).
    pub fn handle_process_exited(&mut self, now: Instant, task: TaskRef, exit: Exit) {
        if let Some(i) = self.slot(task) {
            self.finish(now, i, exit);
        }
    }

    /// Appends through `lsn` are durable.
    pub fn handle_journaled(&mut self, now: Instant, lsn: u64) {
        self.durable_lsn = self.durable_lsn.max(lsn);
        if self.durable_lsn >= self.last_event.0 {
            self.durable_seq = self.durable_seq.max(self.last_event.1);
        }
        for i in 0..self.slots.len() {
            if let Phase::Starting { lsn } = self.slots[i].phase
                && lsn <= self.durable_lsn
            {
                self.slots[i].phase = Phase::Spawned;
                self.push(Action::Spawn(self.slots[i].spec.task));
            }
        }
        self.maybe_send(now);
        self.maybe_stop(now);
    }

    /// The journal's size after appends, syncs and compactions: sets the level (drop output,
    /// refuse starts) and asks for a compaction ([`Action::Compact`]) when one pays off.
    pub fn handle_journal_usage(&mut self, usage: JournalUsage) {
        self.journal_level = usage.level(self.max_tasks);
        self.journal_bytes = usage.bytes;
        if usage.worth_compacting(self.journal_level) && self.compacted_at < Some(self.acked_seq) {
            self.compacted_at = Some(self.acked_seq);
            self.push(Action::Compact);
        }
    }

    /// The journal level in force.
    pub fn journal_level(&self) -> JournalLevel {
        self.journal_level
    }

    /// A normal stop: refuse new tasks, let running ones finish for up to `drain`, then
    /// terminate them, announce `offline ... stopped` and emit [`Action::Stopped`].
    pub fn handle_stop(&mut self, now: Instant, drain: Duration) {
        if self.stopping.is_none() {
            self.stopping = Some(now.saturating_add(drain));
        }
        self.maybe_stop(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let Some(due) = self.slot_deadline(slot) else {
                continue;
            };
            if due > now {
                continue;
            }
            let task = slot.spec.task;
            let max_run_due = self.max_run_deadline(slot).is_some_and(|d| d <= now);
            match (slot.phase, slot.kill) {
                (Phase::Held, _) => self.begin_start(i),
                (_, Some((cause, Some(_)))) => {
                    self.slots[i].kill = Some((cause, None));
                    self.push(Action::Signal {
                        task,
                        signal: Signal::Kill,
                    });
                }
                (Phase::Running { .. }, None) => {
                    let cause = if max_run_due {
                        KillCause::MaxRunTime
                    } else if self.stopping.is_some_and(|d| d <= now) {
                        KillCause::AgentStopping
                    } else {
                        KillCause::MasterLost
                    };
                    self.terminate(now, i, cause);
                }
                _ => {}
            }
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            self.publish_heartbeat(now);
        }
        if self.ack_deadline.is_some_and(|t| t <= now) && self.sent_seq > self.acked_seq {
            // No acknowledgement in time: send the unacknowledged events again.
            self.sent_seq = self.acked_seq;
            self.ack_deadline = None;
            self.maybe_send(now);
        }
        if self.stopping.is_some_and(|d| d <= now) {
            self.drain_expired = true;
        }
        self.maybe_stop(now);
    }

    // ----- command handling -----

    fn handle_command(&mut self, now: Instant, cmd: Command) {
        self.contact(now);
        self.master_epoch = Some(cmd.epoch);
        match cmd.body {
            CommandBody::Start(spec) => self.handle_start(now, spec),
            CommandBody::Kill { task } => {
                let Some(i) = self.slot(task) else { return };
                match self.slots[i].phase {
                    Phase::Held | Phase::Starting { .. } | Phase::Orphaned => {
                        self.slots[i].kill = Some((KillCause::Requested, None));
                        self.finish(now, i, Exit::Cancelled);
                    }
                    Phase::Spawned => self.slots[i].kill_pending = Some(KillCause::Requested),
                    Phase::Running { .. } => self.terminate(now, i, KillCause::Requested),
                }
            }
            CommandBody::Ack { up_to } => {
                // Never beyond what was sent: a master cannot acknowledge the unseen.
                let up_to = up_to.min(self.sent_seq.max(self.acked_seq));
                if up_to > self.acked_seq {
                    self.acked_seq = up_to;
                    self.push(Action::Acked { up_to });
                    self.ack_deadline = (self.sent_seq > self.acked_seq)
                        .then(|| now.saturating_add(self.heartbeat_period()));
                    self.maybe_send(now);
                }
            }
        }
    }

    fn handle_start(&mut self, now: Instant, spec: TaskSpec) {
        let task = spec.task;
        if self.seen.iter().any(|&a| a == task.attempt) {
            // A retransmission: the first answer is journaled and is resent until acknowledged.
            self.stats.duplicate_starts += 1;
            return;
        }
        let refusal = if task.attempt <= self.forgotten_below {
            Some(RejectReason::Stale)
        } else if let Err(reason) = spec.validate() {
            Some(reason)
        } else if !self.allowed(&spec) {
            Some(RejectReason::NotAllowed)
        } else if self.stopping.is_some() {
            Some(RejectReason::Draining)
        } else if self.journal_level == JournalLevel::Full {
            Some(RejectReason::JournalFull)
        } else if self.slots.len() >= self.max_tasks {
            Some(RejectReason::Full)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.stats.rejected_starts += 1;
            if reason != RejectReason::Stale {
                self.remember(task.attempt);
            }
            self.push_event(now, EventKind::Rejected { task, reason });
            return;
        }
        self.remember(task.attempt);
        let due_now = self.start_instant(&spec) <= now;
        // Checked above: there is room.
        let _ = self.slots.push(Slot::new(spec, Phase::Held));
        let i = self.slots.len() - 1;
        self.append(Append::Order(task));
        self.push_event(now, EventKind::Accepted { task });
        self.rearm_heartbeat(now);
        if due_now {
            self.begin_start(i);
        }
    }

    /// A bad command is counted at once and reported coalesced: the first at once, the rest
    /// with the next heartbeat (at most one event per period), so junk cannot fill the journal.
    /// Whether a command is meant for this journal. Before the master has heard one (0) it may
    /// start and kill, never acknowledge: an acknowledgement numbers events of one journal.
    fn for_this_journal(&self, cmd: &Command) -> bool {
        cmd.journal == self.journal
            || (cmd.journal == 0 && !matches!(cmd.body, CommandBody::Ack { .. }))
    }

    fn bad_command(&mut self, now: Instant, error: DecodeError) {
        self.stats.bad_commands += 1;
        self.count_rejection(error);
        let count = self.bad_pending.map_or(0, |(_, n)| n) + 1;
        self.bad_pending = Some((error, count));
        let quiet = self
            .bad_reported_at
            .is_none_or(|t| now >= t.saturating_add(self.heartbeat_period()));
        if quiet {
            self.report_bad_commands(now);
        }
    }

    fn report_bad_commands(&mut self, now: Instant) {
        let Some((error, count)) = self.bad_pending.take() else {
            return;
        };
        self.bad_reported_at = Some(now);
        if self.journal_level == JournalLevel::Normal {
            self.push_event(now, EventKind::BadCommand { error, count });
        }
    }

    /// A message from the master's heartbeat or presence topic that was dropped.
    fn rejected(&mut self, error: DecodeError) {
        self.stats.bad_messages += 1;
        self.count_rejection(error);
    }

    fn count_rejection(&mut self, error: DecodeError) {
        match error {
            DecodeError::Unauthenticated => self.stats.unauthenticated += 1,
            DecodeError::BadSignature => self.stats.bad_signatures += 1,
            DecodeError::Replayed => self.stats.replayed += 1,
            _ => {}
        }
    }

    fn verifier(&self) -> Verifier<'_> {
        match &self.auth {
            Auth::Keys { master, .. } => Verifier::Master(master),
            Auth::Insecure => Verifier::Insecure,
        }
    }

    fn signer(&self) -> Signer<'_> {
        match &self.auth {
            Auth::Keys { agent, .. } => Signer::Agent(agent),
            Auth::Insecure => Signer::Insecure,
        }
    }

    fn check_own_presence(&mut self, payload: &[u8]) {
        let own = match &self.auth {
            Auth::Keys { agent, .. } => Verifier::Agent(agent),
            Auth::Insecure => Verifier::Insecure,
        };
        let ours = Presence::parse_verified(payload, &self.topics.presence, own)
            .is_ok_and(|p| p.state == State::Online && p.incarnation == self.incarnation);
        // The broker may have fired a stale will over our live session (rumqttd quick-reconnect
        // quirk): say again that we are here.
        if !ours && self.connected && self.stopping.is_none() {
            self.stats.presence_repairs += 1;
            self.publish_presence(State::Online);
        }
    }

    // ----- task life -----

    fn begin_start(&mut self, i: usize) {
        let lsn = self.append(Append::Spawning(self.slots[i].spec.task));
        self.slots[i].phase = Phase::Starting { lsn };
    }

    fn terminate(&mut self, now: Instant, i: usize, cause: KillCause) {
        if self.slots[i].kill.is_some() {
            return;
        }
        let task = self.slots[i].spec.task;
        let grace = millis::duration(self.slots[i].spec.policy.grace_ms);
        self.slots[i].kill = Some((cause, Some(now.saturating_add(grace))));
        self.push_event(now, EventKind::Terminating { task, cause });
        self.push(Action::Signal {
            task,
            signal: Signal::Terminate,
        });
    }

    fn finish(&mut self, now: Instant, i: usize, exit: Exit) {
        let slot = self.slots.remove(i);
        let cause = slot.kill.map(|(c, _)| c);
        let task = slot.spec.task;
        self.push_event(
            now,
            EventKind::Finished {
                task,
                exit,
                cause,
                output_dropped: slot.dropped,
            },
        );
        self.maybe_stop(now);
    }

    fn slot_deadline(&self, slot: &Slot) -> Option<Instant> {
        match (slot.phase, slot.kill) {
            (Phase::Held, _) => Some(self.start_instant(&slot.spec)),
            (_, Some((_, sigkill))) => sigkill,
            (Phase::Running { started, .. }, None) => {
                let policy = &slot.spec.policy;
                let lost = (policy.on_disconnect == OnDisconnect::Kill).then(|| {
                    let since = self.last_contact.max(started);
                    since.saturating_add(millis::duration(policy.heartbeat_timeout_ms))
                });
                [lost, self.max_run_deadline(slot), self.stopping]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => None,
        }
    }

    fn max_run_deadline(&self, slot: &Slot) -> Option<Instant> {
        let Phase::Running { started, .. } = slot.phase else {
            return None;
        };
        let max_run = slot.spec.policy.max_run_ms;
        (max_run > 0).then(|| started.saturating_add(millis::duration(max_run)))
    }

    /// When the attempt should start, on the monotonic clock (at once without a start time or
    /// a known wall clock).
    fn start_instant(&self, spec: &TaskSpec) -> Instant {
        let (Some(start), Some((at, ms))) = (spec.start_at_unix_ms, self.wall) else {
            return Instant::MIN;
        };
        if start >= ms {
            at.saturating_add(millis::duration(start - ms))
        } else {
            at.saturating_sub(millis::duration(ms - start))
        }
    }

    // ----- journal and sending -----

    fn append(&mut self, record: Append) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        self.push(Action::Append { lsn, record });
        lsn
    }

    fn push_event(&mut self, now: Instant, kind: EventKind) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let at_unix_ms = self.unix_ms(now).unwrap_or(0);
        let lsn = self.append(Append::Event(Event {
            seq,
            at_unix_ms,
            kind,
        }));
        self.last_event = (lsn, seq);
    }

    fn maybe_send(&mut self, now: Instant) {
        if !self.connected || self.sent_seq >= self.durable_seq {
            return;
        }
        let window_end = self.acked_seq + SEND_WINDOW;
        if self.sent_seq >= window_end {
            return;
        }
        let to = self.durable_seq.min(window_end);
        self.push(Action::Send {
            from: self.sent_seq + 1,
            to,
        });
        self.sent_seq = to;
        if self.ack_deadline.is_none() {
            self.ack_deadline = Some(now.saturating_add(self.heartbeat_period()));
        }
    }

    // ----- liveness -----

    /// Back from a gap in contact (a freeze, a cut, the master away), the master's heartbeats
    /// are answered shortly, not at our next period, for a little while: the master then sees
    /// within a round trip that we are here. Shortly, not at once: a backlog of heartbeats
    /// queued during a freeze drains first, and the answer echoes the newest (the master
    /// answers a stale echo with an early heartbeat of its own, which we answer too).
    fn rejoining(&mut self, now: Instant) -> bool {
        let expected = self.master_period.max(self.heartbeat_period());
        if now > self.last_contact.saturating_add(expected + expected / 2) {
            self.rejoin_until = Some(now.saturating_add(REJOIN_WINDOW));
        }
        self.rejoin_until.is_some_and(|t| now <= t)
    }

    fn contact(&mut self, now: Instant) {
        self.last_contact = self.last_contact.max(now);
    }

    fn publish_presence(&mut self, state: State) {
        let text = Presence {
            state,
            incarnation: self.incarnation,
        }
        .render_signed(&self.topics.presence, self.signer());
        let mut payload = Vec::new();
        let _ = payload.extend_from_slice(text.as_bytes());
        let topic = self.topics.presence.clone();
        self.push(Action::Publish {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: true,
        });
    }

    fn publish_heartbeat(&mut self, now: Instant) {
        let mut tasks = Vec::new();
        for slot in &self.slots {
            if tasks.push(slot.spec.task).is_err() {
                break;
            }
        }
        self.heartbeats = self.heartbeats.saturating_add(1);
        let hb = AgentHeartbeat {
            incarnation: self.incarnation,
            journal: self.journal,
            counter: self.heartbeats,
            echo: self.echo,
            last_seq: self.next_seq - 1,
            more_tasks: self.slots.len() > HEARTBEAT_TASKS,
            tasks,
            journal_bytes: self.journal_bytes,
        };
        let mut buf = [0u8; PUBLISH_MAX];
        let msg = Message::AgentHeartbeat(hb);
        if let Ok(bytes) = wire::encode_for(&msg, &self.topics.heartbeat, self.signer(), &mut buf)
            && let Ok(payload) = Vec::from_slice(bytes)
        {
            let topic = self.topics.heartbeat.clone();
            self.push(Action::Publish {
                topic,
                payload,
                qos: QoS::AtMostOnce,
                retain: false,
            });
        }
        self.next_heartbeat = Some(now.saturating_add(self.heartbeat_period()));
        self.report_bad_commands(now);
    }

    /// A shorter period (announced by the master or asked by a new task) applies from now, not
    /// from the next heartbeat armed under the old one.
    fn rearm_heartbeat(&mut self, now: Instant) {
        let due = now.saturating_add(self.heartbeat_period());
        if self.next_heartbeat.is_some_and(|t| t > due) {
            self.next_heartbeat = Some(due);
        }
    }

    fn maybe_stop(&mut self, now: Instant) {
        let Some(deadline) = self.stopping else {
            return;
        };
        if self.stopped {
            return;
        }
        let busy = self.slots.iter().any(|s| !matches!(s.phase, Phase::Held));
        // Every event durable (and handed to `Send`) before the goodbye; acknowledged too, unless
        // the drain time is up.
        let durable = self.durable_seq + 1 >= self.next_seq;
        let acked = self.acked_seq >= self.durable_seq;
        if busy || !durable || (self.connected && !acked && now < deadline) {
            return;
        }
        if self.connected {
            self.publish_presence(State::Stopped);
        }
        self.stopped = true;
        self.next_heartbeat = None;
        self.push(Action::Stopped);
    }

    // ----- small helpers -----

    fn allowed(&self, spec: &TaskSpec) -> bool {
        let Some(list) = &self.allowlist else {
            return true;
        };
        matches!(spec.argv.iter().next(), Some(Ok(program)) if list.allows(program))
    }

    fn slot(&self, task: TaskRef) -> Option<usize> {
        self.slots.iter().position(|s| s.spec.task == task)
    }

    fn remember(&mut self, attempt: u64) {
        if self.seen.iter().any(|&a| a == attempt) {
            return;
        }
        if self.seen.is_full()
            && let Some(old) = self.seen.pop_front()
        {
            self.forgotten_below = self.forgotten_below.max(old);
        }
        let _ = self.seen.push_back(attempt);
    }

    fn push(&mut self, action: Action) {
        if self.actions.push_back(action).is_err() {
            self.stats.lost_actions += 1;
        }
    }
}

impl Slot {
    fn new(spec: TaskSpec, phase: Phase) -> Self {
        Self {
            spec,
            phase,
            kill: None,
            kill_pending: None,
            reported: 0,
            dropped: 0,
            offsets: [0; 2],
        }
    }
}
