//! The messages of the protocol: what the master tells an agent and what an agent reports.
//!
//! Every collection is bounded (heapless) so a message has a known maximum size and decoding
//! never allocates. Field order is part of the wire format (postcard is positional): append new
//! fields only behind a new [`crate::wire::PROTOCOL_VERSION`].

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// Largest agent id, in bytes.
pub const MAX_ID: usize = 32;
/// Bytes of argv (NUL-separated) a task may carry.
pub const MAX_ARGV: usize = 512;
/// Bytes of environment (`KEY=VALUE`, NUL-separated) a task may carry.
pub const MAX_ENV: usize = 512;
/// Largest working directory path.
pub const MAX_CWD: usize = 128;
/// Bytes of process output one output event carries.
pub const OUTPUT_CHUNK: usize = 256;
/// Running tasks an agent heartbeat lists (the rest are reported by their events).
pub const HEARTBEAT_TASKS: usize = 16;

/// An agent's id: also its MQTT client id and its topic segment.
pub type AgentId = String<MAX_ID>;

/// One attempt at a task. Attempt ids are issued by the master in increasing order, so an agent
/// can tell an old attempt it has forgotten from a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub task: u64,
    pub attempt: u64,
}

/// A list of strings packed as NUL-separated bytes: compact on the wire and in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrList<const N: usize>(Vec<u8, N>);

/// A [`StrList`] or task field did not fit its bound or was not valid text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecError {
    TooLong,
    InteriorNul,
    NotUtf8,
    EmptyArgv,
    EnvWithoutEquals,
}

impl<const N: usize> StrList<N> {
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(&mut self, item: &str) -> Result<(), SpecError> {
        if item.as_bytes().contains(&0) {
            return Err(SpecError::InteriorNul);
        }
        let sep = usize::from(!self.0.is_empty());
        if self.0.len() + sep + item.len() > N {
            return Err(SpecError::TooLong);
        }
        if sep == 1 {
            self.0.push(0).map_err(|_| SpecError::TooLong)?;
        }
        self.0
            .extend_from_slice(item.as_bytes())
            .map_err(|_| SpecError::TooLong)
    }

    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, SpecError> {
        let mut list = Self::new();
        for item in items {
            list.push(item)?;
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The items; an item that is not UTF-8 (only possible from a hostile peer) is yielded as an
    /// error so callers can reject the whole list.
    pub fn iter(&self) -> impl Iterator<Item = Result<&str, SpecError>> {
        let bytes = self.0.as_slice();
        let mut parts = bytes.split(|b| *b == 0);
        let mut done = bytes.is_empty();
        core::iter::from_fn(move || {
            if done {
                return None;
            }
            match parts.next() {
                Some(part) => Some(core::str::from_utf8(part).map_err(|_| SpecError::NotUtf8)),
                None => {
                    done = true;
                    None
                }
            }
        })
    }
}

/// Everything an agent needs to run one attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task: TaskRef,
    pub policy: Policy,
    /// Wall-clock start time (Unix milliseconds); `None` starts at once.
    pub start_at_unix_ms: Option<u64>,
    pub argv: StrList<MAX_ARGV>,
    /// `KEY=VALUE` items, added to the task's (otherwise clean) environment.
    pub env: StrList<MAX_ENV>,
    /// Working directory; empty means the agent's work directory.
    pub cwd: String<MAX_CWD>,
}

impl TaskSpec {
    /// Checks what the type cannot: argv present, text valid, env items well formed, policy sane.
    pub fn validate(&self) -> Result<(), RejectReason> {
        self.policy
            .validate()
            .map_err(RejectReason::InvalidPolicy)?;
        if self.argv.is_empty() {
            return Err(RejectReason::InvalidSpec(SpecError::EmptyArgv));
        }
        for arg in self.argv.iter() {
            arg.map_err(RejectReason::InvalidSpec)?;
        }
        for var in self.env.iter() {
            let var = var.map_err(RejectReason::InvalidSpec)?;
            if !var.contains('=') {
                return Err(RejectReason::InvalidSpec(SpecError::EnvWithoutEquals));
            }
        }
        Ok(())
    }
}

/// Master to one agent, on the agent's command topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The master's incarnation; with `counter` it orders commands (replay protection rests on it).
    pub epoch: u32,
    pub counter: u64,
    /// The agent journal the master believes it is talking to ([`Report::journal`]; 0 before
    /// it has heard one). An agent drops a command for another journal: a start or an
    /// acknowledgement meant for a wiped journal must not act on its successor.
    pub journal: u32,
    pub body: CommandBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    /// Start (or hold until its start time) one attempt. Retransmitted until acknowledged by an
    /// `Accepted` or `Rejected` event.
    Start(TaskSpec),
    /// Terminate an attempt (SIGTERM, then SIGKILL after its grace time).
    Kill { task: TaskRef },
    /// Every agent event with a sequence number up to and including `up_to` is stored by the
    /// master: the agent may forget it.
    Ack { up_to: u64 },
    /// Start one attempt of a chained order (a workflow step): held until `after`'s attempt,
    /// held or running on this agent, has finished, then started if that end satisfies
    /// `after.run_if` and finished as [`Exit::Skipped`] if not. So an agent carries a chain of
    /// steps on its own while the master is unreachable. Retransmitted like `Start`.
    StartAfter { spec: TaskSpec, after: After },
    /// Hand over a recurring order: the agent starts each occurrence itself at its time, master
    /// or no master, by a wall clock it trusts. Retransmitted until answered like `Start` (an
    /// `Accepted` or `Rejected` of the hand-over's own ids, [`ScheduleSpec::spec`]); a `Kill` of
    /// those ids withdraws it.
    Schedule(ScheduleSpec),
    /// The master's wall clock when it answered heartbeat `heartbeat` of incarnation
    /// `incarnation`: an agent takes it only as the answer to its latest heartbeat, so a command
    /// delayed in a broker's queue cannot set its clock.
    Clock {
        unix_ms: u64,
        incarnation: u32,
        heartbeat: u32,
    },
}

/// Runs one schedule hand-over holds at most: a week of hourly occurrences is one run, a
/// weekday-only daily one a run per week, a daily one across a summer-time change two.
pub const SCHEDULE_RUNS: usize = 8;

/// Evenly spaced occurrences: `first_unix_ms`, then every `period_ms`, `count` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub first_unix_ms: u64,
    pub period_ms: u64,
    pub count: u32,
}

/// What an agent does with occurrences it could not start on time (it was down, full, or
/// could not trust its clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Missed {
    /// Reported as missed, not run.
    Skip,
    /// The latest one runs (late); the others are reported as missed.
    RunOnce,
    /// Every one runs, late, in order.
    RunAll,
}

/// A recurring order handed to one agent ([`CommandBody::Schedule`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// The master's schedule; one hand-over per schedule at a time on an agent: a newer one
    /// replaces it (the older ends `Cancelled`). Occurrences at or before the last one the
    /// agent started or reported missed for this schedule are never started again, whatever
    /// the hand-over.
    pub schedule: u64,
    /// What each occurrence runs, with `spec.task` naming the hand-over itself (no start time).
    /// Occurrence `k` (from 0, over the runs in order) runs as task `spec.task.task + 1 + k`,
    /// attempt `spec.task.attempt + 1 + k`: the master reserved those ids.
    pub spec: TaskSpec,
    /// In time order, not overlapping.
    pub runs: Vec<Run, SCHEDULE_RUNS>,
    pub missed: Missed,
    /// An occurrence not started within this long after its time counts as missed.
    pub late_ms: u64,
}

impl ScheduleSpec {
    /// Occurrences in all.
    pub fn occurrences(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.count)).sum()
    }

    /// The time of occurrence `k`, if there is one.
    pub fn occurrence_at(&self, mut k: u64) -> Option<u64> {
        for run in &self.runs {
            let count = u64::from(run.count);
            if k < count {
                return Some(
                    run.first_unix_ms
                        .saturating_add(run.period_ms.saturating_mul(k)),
                );
            }
            k -= count;
        }
        None
    }

    /// The ids occurrence `k` runs under.
    pub fn occurrence_ref(&self, k: u64) -> TaskRef {
        TaskRef {
            task: self.spec.task.task.saturating_add(1 + k),
            attempt: self.spec.task.attempt.saturating_add(1 + k),
        }
    }
}

/// The step a chained order waits for, and which of its ends lets it run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct After {
    pub task: TaskRef,
    pub run_if: RunIf,
}

/// Which end of its predecessor lets a chained order run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunIf {
    /// The predecessor exited with code 0.
    Succeeded,
    /// The predecessor ran and ended, however (not skipped, not cancelled before it ran).
    Finished,
}

impl RunIf {
    /// Whether a predecessor that ended with `exit` lets the chained order run.
    pub const fn allows(self, exit: Exit) -> bool {
        match self {
            Self::Succeeded => matches!(exit, Exit::Code(0)),
            Self::Finished => !matches!(exit, Exit::Skipped | Exit::Cancelled),
        }
    }
}

/// Master to every agent, every heartbeat period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterHeartbeat {
    pub epoch: u32,
    /// From the same counter as commands: an agent counts only a heartbeat newer than every
    /// word it accepted before as contact (a replayed one must not keep a task alive).
    pub counter: u64,
    /// The period at which the master expects agent heartbeats when an agent runs nothing.
    pub period_ms: u64,
}

impl MasterHeartbeat {
    /// How an agent that counted this heartbeat names it in its own.
    pub const fn echo(&self) -> Echo {
        Echo {
            epoch: self.epoch,
            counter: self.counter,
        }
    }
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The process could not be started (errno).
    SpawnFailed(i32),
    /// The agent restarted while the attempt was (possibly) running: its end is unknown.
    Lost,
    /// Cancelled by a `Kill` command before its process started.
    Cancelled,
    /// A chained order ([`CommandBody::StartAfter`]) never started: its predecessor did not end
    /// as the order's `run_if` requires. Not a failure of the step itself.
    Skipped,
}

/// Why the agent terminated a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillCause {
    /// A `Kill` command.
    Requested,
    /// `on_disconnect = kill` and no word from the master for the heartbeat timeout.
    MasterLost,
    /// The policy's maximum run time passed.
    MaxRunTime,
    /// The agent was stopped and the drain time passed.
    AgentStopping,
}

/// Why a start command was refused. Nothing was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// Every task slot is taken.
    Full,
    /// The journal cannot take the task's result any more.
    JournalFull,
    /// The agent is stopping.
    Draining,
    /// An attempt id older than every one the agent still remembers.
    Stale,
    InvalidPolicy(crate::policy::PolicyError),
    InvalidSpec(SpecError),
    /// The program is not on the agent's allowlist of executables (or is not an absolute
    /// path while the agent has one).
    NotAllowed,
    /// A chained order whose predecessor this agent neither holds nor remembers the end of:
    /// the master decides it from the predecessor's result instead.
    PredecessorUnknown,
    /// A schedule hand-over the agent cannot hold: every schedule slot is taken, its runs are
    /// out of order or empty, or it carries a start time.
    BadSchedule,
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full => f.write_str("Full: every task slot of the agent is taken"),
            Self::JournalFull => f.write_str("JournalFull: the agent's journal is full"),
            Self::Draining => f.write_str("Draining: the agent is stopping"),
            Self::Stale => f.write_str("Stale: an attempt older than the agent remembers"),
            Self::InvalidPolicy(e) => write!(f, "InvalidPolicy: {e}"),
            Self::InvalidSpec(e) => write!(f, "InvalidSpec: {e:?}"),
            Self::NotAllowed => f.write_str(
                "NotAllowed: the program is not on the agent's allowlist of executables \
                 (with an allowlist, argv[0] must be an absolute path)",
            ),
            Self::BadSchedule => f.write_str(
                "BadSchedule: the agent cannot hold this schedule (no schedule slot free, or \
                 its runs are empty or out of order)",
            ),
            Self::PredecessorUnknown => f.write_str(
                "PredecessorUnknown: the agent neither holds the step this one follows nor \
                 remembers how it ended",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Agent to master: one journaled event, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The identity of the journal that numbered the event (random, never 0, made when the
    /// journal was): a re-flashed board or a restored backup starts another journal, and its
    /// sequence numbers mean nothing next to the old one's.
    pub journal: u32,
    pub event: Event,
}

/// One journaled event, numbered by the agent's journal sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Wall-clock time the agent recorded it (Unix milliseconds; 0 if the clock was unknown).
    pub at_unix_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Accepted {
        task: TaskRef,
    },
    Rejected {
        task: TaskRef,
        reason: RejectReason,
    },
    Started {
        task: TaskRef,
        pid: u32,
    },
    Output {
        task: TaskRef,
        stream: Stream,
        offset: u64,
        data: Vec<u8, OUTPUT_CHUNK>,
    },
    /// Termination was signalled (SIGTERM); `Finished` follows.
    Terminating {
        task: TaskRef,
        cause: KillCause,
    },
    Finished {
        task: TaskRef,
        exit: Exit,
        cause: Option<KillCause>,
        output_dropped: u64,
    },
    /// Messages on the command topic could not be decoded, verified or were replayed; they
    /// were dropped. Coalesced: `count` bad commands since the last such event, `error` the
    /// latest one's.
    BadCommand {
        error: crate::wire::ReceiveError,
        count: u64,
    },
    // Appended (postcard numbers variants by position).
    /// Occurrences `first..first + count` of a schedule hand-over (named by its ids) were not
    /// started: the agent was down, full, or could not trust its clock, and the schedule's
    /// [`Missed`] rule skipped them.
    Missed {
        handover: TaskRef,
        first: u64,
        count: u64,
    },
    /// Whether the agent trusts its wall clock changed; while it does not, nothing is started
    /// by the clock (start times, schedules).
    Clock {
        trusted: bool,
    },
}

impl EventKind {
    pub fn task(&self) -> Option<TaskRef> {
        match self {
            Self::Accepted { task }
            | Self::Rejected { task, .. }
            | Self::Started { task, .. }
            | Self::Output { task, .. }
            | Self::Terminating { task, .. }
            | Self::Finished { task, .. } => Some(*task),
            Self::Missed { handover, .. } => Some(*handover),
            Self::BadCommand { .. } | Self::Clock { .. } => None,
        }
    }
}

/// A master heartbeat an agent counted as contact, named by its `(epoch, counter)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    pub epoch: u32,
    pub counter: u64,
}

/// Agent to master, every heartbeat period while connected.
///
/// Only fresh heartbeats count as the agent being alive, so a recorded one published again
/// cannot make a dead agent look alive: `counter` must grow within an incarnation, and `echo`
/// must name a master heartbeat sent recently (which nobody can know in advance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    pub incarnation: u32,
    /// The journal `last_seq` counts in ([`Report::journal`]).
    pub journal: u32,
    /// This incarnation's heartbeats, counted from 1.
    pub counter: u32,
    /// The newest master heartbeat this agent counted as contact (none yet: `None`).
    pub echo: Option<Echo>,
    /// Highest event sequence the agent has journaled (the master sees what it still misses).
    pub last_seq: u64,
    /// Attempts the agent is running or holding, for reconciliation.
    pub tasks: Vec<TaskRef, HEARTBEAT_TASKS>,
    /// True when more tasks exist than `tasks` lists.
    pub more_tasks: bool,
    pub journal_bytes: u64,
}

/// Every message that travels as a binary payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Command(Command),
    MasterHeartbeat(MasterHeartbeat),
    Event(Report),
    AgentHeartbeat(AgentHeartbeat),
}
