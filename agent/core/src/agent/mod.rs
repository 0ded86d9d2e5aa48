//! The agent state machine: every decision a Tether agent makes, and nothing else.
//!
//! Sans-IO in the style of quinn-proto: the runtime feeds inputs (`handle_*`, each with the
//! current `now`), then drains [`Agent::poll_action`] until it returns `None` and sleeps until
//! [`Agent::poll_timeout`], when it calls [`Agent::handle_timeout`]. Drain the actions after
//! every input: the queue is sized for the actions one input can cause.
//!
//! Inputs: MQTT connected/disconnected, a message received (commands, master heartbeats and
//! presence, the agent's own retained presence), process started/failed/output/exited, journal
//! writes made durable, timers, the wall clock and whether the kernel has it synchronised, the
//! journal's fill level, a normal stop.
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
//! - an order with a start time starts at that time, master or no master, by a wall clock the
//!   agent trusts (until it does, it holds);
//! - a schedule hand-over starts each of its occurrences at its time, master or no master, by
//!   a clock it trusts, each at most once (a journaled watermark per schedule), and what it
//!   could not start in time follows the hand-over's missed rule;
//! - a chained order (a workflow step) starts only once its predecessor on this agent has
//!   ended as its `run_if` asks, and is skipped ([`Exit::Skipped`]) otherwise, master or no
//!   master; the rest of its chain follows in the same input;
//! - with keys ([`Auth::Keys`]), nothing the master did not sign is acted on, nothing is acted on
//!   twice (epoch and counter, [`ReplayGuard`], persisted through the journal), only a fresh
//!   authentic master heartbeat counts as contact, and everything the agent publishes carries
//!   its MAC.
//!
//! One [`Agent`], its methods in parts of one idea each:
//! - here: the public types, the struct, its constructor and getters;
//! - `inbox`: a message in: routing by topic, authentication, the replay guard, coalesced
//!   bad-command reports, commands;
//! - `slots`: task slots, from an accepted order through its [`Phase`]s to `Finished`, and the
//!   attempt ids remembered for exactly-once start;
//! - `chain`: chained orders: the wait for a predecessor, what its end decides, and the ends of
//!   recent attempts ([`RECENT_ENDS`]);
//! - `log`: the event log: sequence numbers, journal appends, durability, the send window,
//!   acknowledgements;
//! - `restore`: the journal as the agent's memory: records, the snapshot a compaction writes,
//!   the replay at start-up;
//! - `contact`: the broker and the master: connection, heartbeats both ways, presence, rejoin;
//! - `schedule`: schedule hand-overs, their occurrences, the watermarks and the missed rules;
//! - `clock`: the wall clock, whether the agent trusts it, the master's correction and the
//!   anchor;
//! - `deadlines`: every timing rule as one function, read by both [`Agent::poll_timeout`] and
//!   [`Agent::handle_timeout`], so the two cannot disagree;
//! - `stop`: a normal stop, from draining to [`Action::Stopped`].
//!
//! [`Exit::Skipped`]: crate::message::Exit::Skipped

mod chain;
mod clock;
mod contact;
mod deadlines;
mod inbox;
mod log;
mod restore;
mod schedule;
mod slots;
mod stop;

use embassy_time::{Duration, Instant};
use heapless::{Deque, String, Vec};

use crate::allowlist::Allowlist;
use crate::auth::{AgentKey, MasterKeys, ReplayGuard};
use crate::message::{After, AgentId, Event, TaskRef, TaskSpec};
use crate::presence::Presence;
use crate::topic::{MAX_PREFIX, QoS, Topic, TopicBuf, TopicError, validate_id, validate_prefix};
use crate::wire::{DecodeError, Signer};

pub use self::chain::RECENT_ENDS;
pub use self::clock::{
    ANCHOR_EVERY_MS, CLOCK_MAX_RTT, CLOCK_TOLERANCE_MS, ClockRule, HEARTBEATS_KEPT,
    STEP_TOLERANCE_MS,
};
pub use self::schedule::{MIN_LATE_MS, SCHEDULES, WATERMARKS, runs_valid};

use self::chain::RecentEnds;
use self::clock::WallClock;
use self::contact::Contact;
use self::inbox::BadCommands;
use self::log::EventLog;
use self::schedule::Schedules;
use self::slots::{Seen, Slot};

/// Actions one input can cause, at most (see the const assertion in [`Agent::new`]): a timeout
/// takes two per slot (SIGTERM's event and signal), a clock report and an anchor, one schedule
/// step (a missed range, or an occurrence's `Order`, `Accepted` and `Spawning`, then the
/// hand-over's end), a heartbeat with its bad-command report, a resend and the goodbye.
pub const ACTION_QUEUE: usize = 80;
/// Events sent and not yet acknowledged, at most: a long backlog replays in windows.
pub const SEND_WINDOW: u64 = 32;
/// Largest payload the agent publishes itself (heartbeats, presence).
pub const PUBLISH_MAX: usize = 400;
/// Journaled events are published at this QoS ([`Action::Send`]).
pub const EVENT_QOS: QoS = QoS::AtLeastOnce;
/// Heartbeat period before the master has announced its own.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

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
    /// The order of `task` waits for `after`'s attempt to end (right after its `Order`).
    After {
        task: TaskRef,
        after: After,
    },
    Spawning(TaskRef),
    Event(Event),
    /// A schedule hand-over accepted (the held one of these ids).
    Handover(TaskRef),
    /// A time the agent trusts: no clock below it is trusted after a restart.
    ClockAnchor {
        unix_ms: u64,
    },
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
    /// Waiting for its start time; a chained order also for its predecessor to end
    /// ([`Agent::waiting_for`]).
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

/// Why [`Agent::encode_append`] gave no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeAppendError {
    /// The order's attempt is no longer held: its append was encoded after the attempt ended
    /// (the runtime did not drain the actions after each input).
    MissingSlot(TaskRef),
    /// The record does not fit ([`crate::journal::encode`]).
    Record(DecodeError),
}

impl core::fmt::Display for EncodeAppendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::MissingSlot(task) => write!(
                f,
                "the order of task {} attempt {} is no longer held",
                task.task, task.attempt
            ),
            Self::Record(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for EncodeAppendError {}

/// Counters of things dropped or repaired, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bad_commands: u64,
    pub bad_messages: u64,
    pub foreign_messages: u64,
    pub duplicate_starts: u64,
    pub rejected_starts: u64,
    /// Starts left unanswered because a full journal had no room left for a rejection (the
    /// master sends them again).
    pub unanswered_starts: u64,
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
    /// Master clocks ignored: another incarnation's, or answering a heartbeat not among the
    /// recent ones or sent longer than [`CLOCK_MAX_RTT`] before.
    pub stale_clocks: u64,
    /// Master clocks that corrected the agent's wall clock (it was off by more than
    /// [`CLOCK_TOLERANCE_MS`]).
    pub clock_corrections: u64,
    /// Journaled hand-overs that did not fit [`SCHEDULES`] at restore (only if it shrank).
    pub unrestored_handovers: u64,
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
/// [`ACTION_QUEUE`]), chained orders waiting for their predecessor included; `SEEN` bounds the
/// attempt ids remembered for exactly-once start. Schedule hand-overs take no task slot:
/// [`SCHEDULES`] of them, and [`WATERMARKS`] watermarks, are held besides.
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
    bad: BadCommands,
    contact: Contact,
    clock: WallClock,
    /// The latest instant an input brought: time never runs back for the agent.
    latest: Instant,

    slots: Vec<Slot, TASKS>,
    /// Attempts accepted at once, at most `TASKS` (a runtime setting).
    max_tasks: usize,
    /// Programs tasks may run; `None` allows every program.
    allowlist: Option<Allowlist>,
    seen: Seen<SEEN>,
    /// How recent attempts ended, for chained orders that arrive after their predecessor.
    ends: RecentEnds,
    /// Schedule hand-overs held, and the schedules' watermarks.
    schedules: Schedules,

    log: EventLog,

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
            bad: BadCommands::new(),
            contact: Contact::new(now),
            clock: WallClock::new(),
            latest: now,
            slots: Vec::new(),
            max_tasks: TASKS,
            allowlist: None,
            seen: Seen::new(),
            ends: RecentEnds::new(),
            schedules: Schedules::new(),
            log: EventLog::new(),
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

    pub fn event_topic(&self) -> &str {
        &self.topics.event
    }

    /// The master's command high-water mark accepted so far: (epoch, counter).
    pub fn master_counter(&self) -> (u32, u64) {
        self.replay.high_water()
    }

    pub fn is_connected(&self) -> bool {
        self.contact.connected
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// A normal stop was asked for (draining, or done).
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    pub fn last_contact(&self) -> Instant {
        self.contact.last_contact
    }

    pub fn master_presence(&self) -> Option<Presence> {
        self.contact.master_presence
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn acked_seq(&self) -> u64 {
        self.log.acked_seq
    }

    pub fn durable_seq(&self) -> u64 {
        self.log.durable_seq
    }

    /// Highest sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.log.next_seq - 1
    }

    pub fn task_spec(&self, task: TaskRef) -> Option<&TaskSpec> {
        self.slot(task).map(|i| &self.slots[i].spec)
    }

    /// Attempts held or running, in acceptance order (chained orders waiting for their
    /// predecessor are [`Phase::Held`]).
    pub fn tasks(&self) -> impl Iterator<Item = (TaskRef, Phase)> + '_ {
        self.slots.iter().map(|s| (s.spec.task, s.phase))
    }

    /// The predecessor a held chained order still waits for: until it ends, the order does not
    /// start, whatever its start time.
    pub fn waiting_for(&self, task: TaskRef) -> Option<After> {
        self.slot(task).and_then(|i| self.slots[i].after)
    }

    // ----- outputs -----

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- settings -----

    /// Lowers the number of attempts held or running at once, chained orders waiting for their
    /// predecessor included (never above `TASKS`).
    pub fn set_max_tasks(&mut self, max: usize) {
        self.max_tasks = max.clamp(1, TASKS);
    }

    /// Restricts the programs tasks may run (the runtime's configuration; an empty list allows
    /// nothing). Call before [`Agent::finish_restore`]: held orders restored from the journal
    /// are checked against it there.
    pub fn set_allowlist(&mut self, allowlist: Allowlist) {
        self.allowlist = Some(allowlist);
    }

    // ----- shared helpers -----

    /// An input at `now`: the agent's present moves on (never back).
    fn saw(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
    }

    fn push(&mut self, action: Action) {
        if self.actions.push_back(action).is_err() {
            self.stats.lost_actions += 1;
        }
    }

    fn signer(&self) -> Signer<'_> {
        match &self.auth {
            Auth::Keys { agent, .. } => Signer::Agent(agent),
            Auth::Insecure => Signer::Insecure,
        }
    }
}
