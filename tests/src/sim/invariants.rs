//! What the agent simulation checks, and the ledger that remembers across agent crashes what
//! the checks need: every spawn, every event ever made durable, every signal.
//!
//! Time-based bounds allow one [`TICK`]: the world steps to the exact instant any component
//! asks for, so a tick only absorbs rounding.
//!
//! 1. An attempt is spawned at most once, across agent crashes and restarts.
//! 2. Every event an agent journaled durably reaches the master exactly once in effect: after
//!    healing, the master's store (deduplicated by agent and sequence) equals the ledger's
//!    durable events of that agent's current journal, gap-free from 1, numbered from the
//!    master's base for that journal. Never an event that was not durable, never two different
//!    events under one sequence. An agent whose disk was lost starts a new journal: what it
//!    journals after the loss is held to the same rule (what was on the lost disk is gone).
//! 3. A `kill` task gets SIGTERM (cause `MasterLost`) no earlier than its heartbeat timeout
//!    after the later of the agent's last master contact and the task's start, and no later
//!    than that plus a tick; a terminated task that is still alive gets SIGKILL no earlier than
//!    grace after SIGTERM and no later than that plus a tick.
//! 4. A `continue` task is never terminated because the master was lost.
//! 5. An order starts on time: an accepted attempt is spawned by
//!    `max(start time, acceptance, agent start) + max disk delay + tick`, master or no master;
//!    a chained order (a workflow step) from when its predecessor's end released it.
//!    The disk delay is there because the agent spawns only once its `Spawning` record is
//!    durable (fsync), which the simulated disk delays by at most its maximum.
//!
//! With the real master ([`super::system`]) the master's side too:
//!
//! 6. A `kill` attempt is marked failed (lost) no earlier than its agent killed it (SIGTERM
//!    sent, process gone, or the agent dead; and never spawned after) and no later than its
//!    heartbeat timeout plus the delay allowance plus a tick after the master last heard the
//!    agent.
//! 7. A task's outcome is decided once: never reported succeeded twice, never changed after.
//! 8. A new attempt never goes to an agent whose latest presence (of its latest incarnation)
//!    is its will, or its stop.
//!
//! And for the journal, whatever its cap:
//!
//! 9. No record is lost to a full journal: output is dropped first, then new starts are
//!    refused, so results always fit.
//!
//! For workflow orders, with the real master, checked at the end of a run once everything has
//! settled ([`super::system`]'s order oracle). An attempt the master *gave up* (closed as lost
//! or cancelled without hearing its end, or superseded by a new attempt while open) may still
//! run on its agent, as invariant 6's lower bound allows (`RealMaster::strict`): what that stray
//! run does is not held against a step. The master core's known gaps (`system::Gap`) are
//! tolerated unless a test holds them, each named by an ignored regression test.
//!
//! 10. A step starts only after the step before it ended: a chained attempt after the attempt
//!     it waits for ended on its agent as its `run_if` allows (succeeded, for a `stop` step),
//!     durably; any other attempt only after the master decided the step before (succeeded, for
//!     `stop`); and no attempt of the step before that the master kept runs after it.
//! 11. A step succeeds at most once: at most one attempt of its task that the master did not
//!     give up exits 0.
//! 12. Every order ends, in the state its steps give: `succeeded` when every step succeeded or
//!     failed with `continue`; `failed` when a `stop` step failed after the steps before it
//!     passed, and no later step started after that failure was decided (but behind an attempt
//!     the master gave up); `cancelled` only when the test cancelled it.
//! 13. Every step task is decided once its order has ended, and no two tasks run one step.

use std::collections::BTreeMap;
use std::fmt;

use tether_core::agent::Signal;
use tether_core::journal::{self, JournalRecord};
use tether_core::message::{Event, EventKind, Exit, KillCause, TaskRef};
use tether_core::{Duration, Instant};

/// The slack of every time bound.
pub const TICK: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    SpawnOnce,
    EventsDelivered,
    KillOnLoss,
    ContinueSurvives,
    StartOnTime,
    KillMarkedFailed,
    OneOutcome,
    FailoverSkipsLost,
    JournalKeepsResults,
    StepAfterPredecessor,
    StepSucceedsOnce,
    OrderAgreesWithSteps,
    StepsSettle,
    /// The simulation itself misbehaved (stuck clock, undecodable record, lost action): not an
    /// agent guarantee, but a run that cannot be trusted.
    Model,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SpawnOnce => "1: a task attempt is never started twice",
            Self::EventsDelivered => {
                "2: every durably journaled event reaches the master exactly once"
            }
            Self::KillOnLoss => {
                "3: a kill task is terminated at the heartbeat timeout, killed after grace"
            }
            Self::ContinueSurvives => "4: a continue task is never terminated for a lost master",
            Self::StartOnTime => "5: an order starts on time, master or no master",
            Self::KillMarkedFailed => {
                "6: a kill task is marked failed once its agent killed it, by timeout + allowance"
            }
            Self::OneOutcome => "7: a task's outcome is decided once",
            Self::FailoverSkipsLost => {
                "8: fail-over never dispatches to an agent whose will arrived"
            }
            Self::JournalKeepsResults => {
                "9: a full journal drops output and refuses starts, never loses a record"
            }
            Self::StepAfterPredecessor => {
                "10: an order step starts only after the step before it ended as its failure rule asks"
            }
            Self::StepSucceedsOnce => "11: an order step succeeds at most once",
            Self::OrderAgreesWithSteps => {
                "12: every order ends, in the state its steps' ends give"
            }
            Self::StepsSettle => "13: every step task is decided once its order has ended",
            Self::Model => "model: the simulation itself",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub at: Instant,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: Invariant, at: Instant, detail: impl Into<String>) -> Self {
        Self {
            invariant,
            at,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant {} violated at {}: {}",
            self.invariant,
            secs(self.at),
            self.detail
        )
    }
}

/// An instant as seconds with milliseconds, for messages.
pub fn secs(t: Instant) -> String {
    let ms = t.as_millis();
    format!("{}.{:03}s", ms / 1_000, ms % 1_000)
}

/// A signal an agent sent, with what it knew when it sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalRecord {
    pub agent: usize,
    pub at: Instant,
    pub signal: Signal,
    /// The cause of the `Terminating` event that came with a SIGTERM.
    pub cause: Option<KillCause>,
    pub last_contact: Instant,
    pub started: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    spawns: BTreeMap<TaskRef, Vec<(usize, Instant)>>,
    /// Per agent, the events of its current journal.
    durable: Vec<BTreeMap<u64, Event>>,
    /// Agents that lost a disk: invariant 1 does not hold their earlier spawns against them.
    excluded: Vec<bool>,
    signals: BTreeMap<TaskRef, Vec<SignalRecord>>,
    /// Every attempt's `Finished` events, by agent, when each first became durable.
    ends: BTreeMap<TaskRef, Vec<(usize, Instant, Exit)>>,
    /// Every process exit, by agent.
    exits: BTreeMap<TaskRef, Vec<(usize, Instant, Exit)>>,
}

impl Ledger {
    pub fn new(agents: usize) -> Self {
        Self {
            spawns: BTreeMap::new(),
            durable: vec![BTreeMap::new(); agents],
            excluded: vec![false; agents],
            signals: BTreeMap::new(),
            ends: BTreeMap::new(),
            exits: BTreeMap::new(),
        }
    }

    /// Agent `i` lost its disk: its next journal is a new one, and invariant 1 no longer
    /// holds its spawns against each other.
    pub fn lose_journal(&mut self, i: usize) {
        self.excluded[i] = true;
        self.durable[i].clear();
    }

    pub fn is_excluded(&self, i: usize) -> bool {
        self.excluded[i]
    }

    pub fn spawns(&self, task: TaskRef) -> &[(usize, Instant)] {
        self.spawns.get(&task).map_or(&[], Vec::as_slice)
    }

    pub fn signals(&self, task: TaskRef) -> &[SignalRecord] {
        self.signals.get(&task).map_or(&[], Vec::as_slice)
    }

    /// The attempt's ends as its agents journaled them durably: agent, when, exit.
    pub fn ends(&self, task: TaskRef) -> &[(usize, Instant, Exit)] {
        self.ends.get(&task).map_or(&[], Vec::as_slice)
    }

    /// The attempt's process exits: agent, when, exit.
    pub fn exits(&self, task: TaskRef) -> &[(usize, Instant, Exit)] {
        self.exits.get(&task).map_or(&[], Vec::as_slice)
    }

    /// Every attempt with a process exit, and its exits.
    pub fn all_exits(&self) -> impl Iterator<Item = (&TaskRef, &Vec<(usize, Instant, Exit)>)> {
        self.exits.iter()
    }

    pub fn on_exit(&mut self, agent: usize, task: TaskRef, exit: Exit, now: Instant) {
        self.exits.entry(task).or_default().push((agent, now, exit));
    }

    /// Every event agent `i` made durable in its current journal, by sequence.
    pub fn durable(&self, i: usize) -> &BTreeMap<u64, Event> {
        &self.durable[i]
    }

    /// Invariant 1.
    pub fn on_spawn(&mut self, agent: usize, task: TaskRef, now: Instant) -> Result<(), Violation> {
        let list = self.spawns.entry(task).or_default();
        let earlier = list.iter().any(|&(a, _)| !self.excluded[a]);
        list.push((agent, now));
        if earlier && !self.excluded[agent] {
            return Err(Violation::new(
                Invariant::SpawnOnce,
                now,
                format!(
                    "attempt {}/{} spawned again by agent {agent}; spawns so far: {:?}",
                    task.task,
                    task.attempt,
                    list.iter()
                        .map(|(a, t)| format!("agent {a} at {}", secs(*t)))
                        .collect::<Vec<_>>()
                ),
            ));
        }
        Ok(())
    }

    /// A journal record of agent `i` became durable (part of invariant 2: one sequence, one
    /// event, forever); an attempt's end is noted for invariant 10.
    pub fn on_durable(&mut self, i: usize, bytes: &[u8], now: Instant) -> Result<(), Violation> {
        let record = journal::decode(bytes).map_err(|e| {
            Violation::new(
                Invariant::Model,
                now,
                format!("agent {i}: undecodable journal record: {e}"),
            )
        })?;
        let JournalRecord::Event(event) = record else {
            return Ok(());
        };
        if let EventKind::Finished { task, exit, .. } = event.kind {
            let ends = self.ends.entry(task).or_default();
            // A compaction rewrites what was durable already: the first time counts.
            if !ends.iter().any(|&(a, _, e)| a == i && e == exit) {
                ends.push((i, now, exit));
            }
        }
        match self.durable[i].get(&event.seq) {
            Some(old) if *old != event => Err(Violation::new(
                Invariant::EventsDelivered,
                now,
                format!(
                    "agent {i} made two different events durable under seq {}: {old:?} then {event:?}",
                    event.seq
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.durable[i].insert(event.seq, event);
                Ok(())
            }
        }
    }

    pub fn on_signal(&mut self, task: TaskRef, record: SignalRecord) {
        self.signals.entry(task).or_default().push(record);
    }

    /// Invariant 2 for agent `i`: `store` is what the master holds, and the current journal's
    /// sequence `s` is its `base + s` (events at or below `base` are of earlier journals).
    pub fn check_delivered(
        &self,
        i: usize,
        store: &BTreeMap<u64, Event>,
        base: u64,
        now: Instant,
    ) -> Result<(), Violation> {
        let durable = &self.durable[i];
        let fail = |detail: String| Err(Violation::new(Invariant::EventsDelivered, now, detail));
        let store: BTreeMap<u64, Event> = store
            .range(base + 1..)
            .map(|(&s, e)| {
                let mut e = e.clone();
                e.seq = s - base;
                (s - base, e)
            })
            .collect();
        let store = &store;
        for (seq, event) in store {
            match durable.get(seq) {
                None => {
                    return fail(format!(
                        "agent {i}: the master holds seq {seq}, which the agent never made durable: {event:?}"
                    ));
                }
                Some(d) if d != event => {
                    return fail(format!(
                        "agent {i} seq {seq}: the master holds {event:?}, the journal had {d:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some((seq, event)) = durable.iter().find(|(s, _)| !store.contains_key(s)) {
            return fail(format!(
                "agent {i}: durable event seq {seq} never reached the master ({} of {} stored): {event:?}",
                store.len(),
                durable.len()
            ));
        }
        if let Some((&last, _)) = durable.last_key_value()
            && last != durable.len() as u64
        {
            return fail(format!(
                "agent {i}: durable sequences have gaps ({} events, last seq {last})",
                durable.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TaskRef = TaskRef {
        task: 1,
        attempt: 1,
    };

    fn event(seq: u64, kind: EventKind) -> (Event, Vec<u8>) {
        let e = Event {
            seq,
            at_unix_ms: 0,
            kind,
        };
        let mut buf = [0u8; journal::MAX_RECORD];
        let bytes = journal::encode(&JournalRecord::Event(e.clone()), &mut buf)
            .unwrap()
            .to_vec();
        (e, bytes)
    }

    #[test]
    fn a_second_spawn_is_a_violation_unless_the_disk_was_lost() {
        let mut l = Ledger::new(2);
        let t0 = Instant::from_secs(1);
        assert!(l.on_spawn(0, T, t0).is_ok());
        let v = l.on_spawn(0, T, t0).unwrap_err();
        assert_eq!(v.invariant, Invariant::SpawnOnce);
        let other = TaskRef {
            task: 2,
            attempt: 2,
        };
        assert!(l.on_spawn(1, other, t0).is_ok());
        l.lose_journal(1);
        assert!(l.on_spawn(1, other, t0).is_ok());
        assert_eq!(l.spawns(other).len(), 2);
    }

    #[test]
    fn one_sequence_one_event() {
        let mut l = Ledger::new(1);
        let now = Instant::from_secs(1);
        let (_, a) = event(1, EventKind::Accepted { task: T });
        let (_, b) = event(1, EventKind::Started { task: T, pid: 3 });
        assert!(l.on_durable(0, &a, now).is_ok());
        assert!(l.on_durable(0, &a, now).is_ok(), "idempotent");
        let v = l.on_durable(0, &b, now).unwrap_err();
        assert_eq!(v.invariant, Invariant::EventsDelivered);
        assert_eq!(
            l.on_durable(0, &[0xff, 0xff], now).unwrap_err().invariant,
            Invariant::Model
        );
    }

    #[test]
    fn delivery_needs_every_durable_event_and_nothing_else() {
        let mut l = Ledger::new(1);
        let now = Instant::from_secs(1);
        let (e1, b1) = event(1, EventKind::Accepted { task: T });
        let (e2, b2) = event(2, EventKind::Started { task: T, pid: 3 });
        l.on_durable(0, &b1, now).unwrap();
        l.on_durable(0, &b2, now).unwrap();
        let mut store = BTreeMap::from([(1, e1.clone())]);
        assert!(
            l.check_delivered(0, &store, 0, now).is_err(),
            "seq 2 missing"
        );
        store.insert(2, e2.clone());
        assert!(l.check_delivered(0, &store, 0, now).is_ok());
        let (e3, _) = event(3, EventKind::Accepted { task: T });
        store.insert(3, e3);
        assert!(
            l.check_delivered(0, &store, 0, now).is_err(),
            "never durable, yet at the master"
        );
        store.remove(&3);
        store.insert(2, e1.clone());
        assert!(
            l.check_delivered(0, &store, 0, now).is_err(),
            "wrong content"
        );
        store.insert(2, e2.clone());

        // The disk is lost: the new journal counts from 1 again, stored above the base.
        l.lose_journal(0);
        assert!(
            l.check_delivered(0, &store, 2, now).is_ok(),
            "nothing new yet"
        );
        l.on_durable(0, &b1, now).unwrap();
        assert!(
            l.check_delivered(0, &store, 2, now).is_err(),
            "written after the loss, not at the master"
        );
        let mut renumbered = e1;
        renumbered.seq = 3;
        store.insert(3, renumbered);
        assert!(l.check_delivered(0, &store, 2, now).is_ok());
    }
}
