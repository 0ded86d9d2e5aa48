//! Schedule hand-overs ([`CommandBody::Schedule`]): a recurring order the agent starts itself,
//! occurrence by occurrence, at their wall-clock times, master or no master, by a clock it
//! trusts (see `clock`).
//!
//! A hand-over is checked like a start (seen or stale ids, the spec, the allowlist, a drain, a
//! full journal; it takes no task slot) and then as a schedule: its runs non-empty, each at
//! least one occurrence, a period when it has several, in time order and not overlapping, no
//! start time, and a schedule slot ([`SCHEDULES`]) free or holding the same schedule; else
//! [`RejectReason::BadSchedule`]. An older hand-over (lower attempt id) than the one held for
//! its schedule is [`RejectReason::Stale`]. Accepted, it is journaled (`Handover` record) and
//! answered `Accepted`; it replaces the hand-over held for its schedule, which ends
//! `Finished { Cancelled }`. A `Kill` of its ids withdraws it the same way (cause
//! `Requested`); the occurrences already started run on. Once every occurrence has been
//! started or reported missed it ends `Finished { Code(0) }`.
//!
//! **Watermark.** Each schedule has one: the time of its latest occurrence started or reported
//! missed. An occurrence starts only above it, so none starts twice, across restarts,
//! replacement hand-overs and wall-clock steps. The record that moves it is the one that says
//! what became of the occurrence: the occurrence's own `Order` (its ids name the hand-over's
//! occurrence, so its replay moves the watermark) or the `Missed` event, so no torn journal
//! tail can keep the watermark without the order or the order without the watermark; a
//! compaction writes the watermarks as `Fired` records. An occurrence starts like an accepted
//! `Start` of its ids ([`ScheduleSpec::occurrence_ref`]): `Order`, `Accepted`, a durable
//! `Spawning`, the spawn. The watermarks of the [`WATERMARKS`] most recently moved schedules
//! are kept (every held hand-over's among them).
//!
//! **On time and missed.** With a trusted clock, the agent running (not stopping) and room in
//! its journal, an occurrence starts at its time when a task slot is free; otherwise it waits
//! for one until `late_ms` after its time (at least [`MIN_LATE_MS`]: the timer wakes a
//! little after the time), then it is *missed*: the agent was down, full, or could not trust
//! its clock. The hand-over's [`Missed`] rule decides:
//! - `Skip`: each contiguous range of missed occurrences is reported as one `Missed` event;
//! - `RunOnce`: the latest missed one runs now (late), the others are reported; none runs if a
//!   newer occurrence is already due on time (it is the run);
//! - `RunAll`: each runs, in order, as task slots allow.
//!
//! A late occurrence that the rule runs may wait for a slot until `late_ms` past the later of
//! the time it became missed and the start of its catch-up (the restart, the return of trust,
//! a clock correction, the hand-over's acceptance); then it is reported missed too. So after
//! an outage the backlog gets `late_ms` to find slots, and an agent that stays full reports
//! what it could not start.
//!
//! One step per hand-over at a time and one step per [`Agent::handle_timeout`]: a start, a
//! missed range, the end; more due steps make [`Agent::poll_timeout`] return at once, so one
//! input never queues more than a step's actions. The due time and the step come from one
//! function (`plan`).
//!
//! [`CommandBody::Schedule`]: crate::message::CommandBody::Schedule

use embassy_time::Instant;
use heapless::Vec;

use super::{Agent, Append};
use crate::journal::JournalLevel;
use crate::message::{
    EventKind, Exit, KillCause, Missed, RejectReason, ScheduleSpec, TaskRef, TaskSpec,
};

/// Schedule hand-overs an agent holds at once: a board runs a handful of recurring jobs, and
/// each held hand-over takes about 1.4 KB (its task spec and runs) in the agent and a record
/// of that size in every compacted journal.
pub const SCHEDULES: usize = 8;
/// Schedules whose watermark is kept: every held hand-over's and the most recently moved
/// others' (a schedule withdrawn, then handed over again). 16 bytes each.
pub const WATERMARKS: usize = 2 * SCHEDULES;
/// The least time an occurrence is on time for, whatever its `late_ms`.
pub const MIN_LATE_MS: u64 = 1_000;

#[derive(Debug, Clone)]
pub(super) struct Handover {
    pub(super) spec: ScheduleSpec,
    /// The trusted wall time it was accepted at (0: not trusted then, or restored).
    accepted_ms: u64,
}

/// The hand-overs held, and the watermarks.
#[derive(Debug)]
pub(super) struct Schedules {
    pub(super) held: Vec<Handover, SCHEDULES>,
    /// `(schedule, watermark)`, least recently moved first.
    pub(super) marks: Vec<(u64, u64), WATERMARKS>,
}

impl Schedules {
    pub(super) fn new() -> Self {
        Self {
            held: Vec::new(),
            marks: Vec::new(),
        }
    }

    pub(super) fn mark(&self, schedule: u64) -> Option<u64> {
        self.marks
            .iter()
            .find(|(s, _)| *s == schedule)
            .map(|&(_, at)| at)
    }

    /// Moves the watermark of `schedule` up to `at` (never down).
    pub(super) fn set_mark(&mut self, schedule: u64, at: u64) {
        let at = match self.marks.iter().position(|(s, _)| *s == schedule) {
            Some(i) => self.marks.remove(i).1.max(at),
            None => at,
        };
        if self.marks.is_full() {
            // More entries than hand-overs: one is not held.
            let held = |s: u64| self.held.iter().any(|h| h.spec.schedule == s);
            if let Some(i) = self.marks.iter().position(|&(s, _)| !held(s)) {
                self.marks.remove(i);
            }
        }
        let _ = self.marks.push((schedule, at));
    }

    pub(super) fn restore(&mut self, spec: &ScheduleSpec) -> bool {
        self.held.retain(|h| h.spec.schedule != spec.schedule);
        let handover = Handover {
            spec: spec.clone(),
            accepted_ms: 0,
        };
        self.held.push(handover).is_ok()
    }

    pub(super) fn index(&self, task: TaskRef) -> Option<usize> {
        self.held.iter().position(|h| h.spec.spec.task == task)
    }
}

/// Whether the runs are non-empty, each of at least one occurrence with a period when it has
/// several, in time order and not overlapping (every occurrence later than the one before).
pub fn runs_valid(spec: &ScheduleSpec) -> bool {
    let mut previous: Option<u64> = None;
    for run in &spec.runs {
        if run.count == 0 || (run.count > 1 && run.period_ms == 0) {
            return false;
        }
        let Some(last) = run
            .period_ms
            .checked_mul(u64::from(run.count) - 1)
            .and_then(|span| run.first_unix_ms.checked_add(span))
        else {
            return false;
        };
        if previous.is_some_and(|p| run.first_unix_ms <= p) {
            return false;
        }
        previous = Some(last);
    }
    previous.is_some()
}

/// How many occurrences are at or before `unix_ms` (they come in time order).
fn count_up_to(spec: &ScheduleSpec, unix_ms: u64) -> u64 {
    spec.runs
        .iter()
        .map(|run| {
            if unix_ms < run.first_unix_ms {
                return 0;
            }
            // A run of one has no period: it counts once.
            (unix_ms - run.first_unix_ms)
                .checked_div(run.period_ms)
                .map_or(1, |n| n + 1)
                .min(u64::from(run.count))
        })
        .sum()
}

/// What a hand-over does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Every occurrence was started or reported missed.
    Finish,
    /// Start occurrence `k` now.
    Start(u64),
    /// Report occurrences `first..=last` missed now.
    Miss { first: u64, last: u64 },
    /// Nothing before this wall time (unless a task slot frees).
    Wait(u64),
}

/// The one rule: what hand-over `spec` does at trusted wall time `now`, past watermark `mark`,
/// with a task slot free or not, its catch-up begun at `since`.
fn plan(spec: &ScheduleSpec, mark: Option<u64>, now: u64, can_start: bool, since: u64) -> Plan {
    let n = spec.occurrences();
    let k = mark.map_or(0, |m| count_up_to(spec, m));
    let at = |j: u64| spec.occurrence_at(j).unwrap_or(u64::MAX);
    if k >= n {
        return Plan::Finish;
    }
    let t = at(k);
    if t > now {
        return Plan::Wait(t);
    }
    let late = spec.late_ms.max(MIN_LATE_MS);
    if t.saturating_add(late) > now {
        return if can_start {
            Plan::Start(k)
        } else {
            Plan::Wait(t.saturating_add(late))
        };
    }
    // Missed: k..=last.
    let last = count_up_to(spec, now.saturating_sub(late)).clamp(k + 1, n) - 1;
    let deadline = |j: u64| at(j).saturating_add(late).max(since).saturating_add(late);
    match spec.missed {
        Missed::Skip => Plan::Miss { first: k, last },
        Missed::RunAll => {
            if deadline(k) <= now {
                let expired = count_up_to(spec, now.saturating_sub(late.saturating_mul(2)));
                let end = expired.clamp(k + 1, last + 1) - 1;
                Plan::Miss {
                    first: k,
                    last: end,
                }
            } else if can_start {
                Plan::Start(k)
            } else {
                Plan::Wait(deadline(k))
            }
        }
        Missed::RunOnce => {
            let superseded = last + 1 < n && at(last + 1) <= now;
            if superseded {
                Plan::Miss { first: k, last }
            } else if last > k {
                Plan::Miss {
                    first: k,
                    last: last - 1,
                }
            } else if deadline(k) <= now {
                Plan::Miss { first: k, last: k }
            } else if can_start {
                Plan::Start(k)
            } else if k + 1 < n {
                Plan::Wait(deadline(k).min(at(k + 1)))
            } else {
                Plan::Wait(deadline(k))
            }
        }
    }
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// The hand-overs held: each one's schedule and ids, in acceptance order.
    pub fn handovers(&self) -> impl Iterator<Item = (u64, TaskRef)> + '_ {
        self.schedules
            .held
            .iter()
            .map(|h| (h.spec.schedule, h.spec.spec.task))
    }

    /// The watermark of `schedule`: no occurrence at or before it starts again.
    pub fn watermark(&self, schedule: u64) -> Option<u64> {
        self.schedules.mark(schedule)
    }

    /// A hand-over: refused, or held in place of the one of its schedule.
    pub(super) fn handle_schedule(&mut self, now: Instant, spec: ScheduleSpec) {
        let held = self
            .schedules
            .held
            .iter()
            .position(|h| h.spec.schedule == spec.schedule);
        let unholdable = !runs_valid(&spec)
            || spec.spec.start_at_unix_ms.is_some()
            || (held.is_none() && self.schedules.held.is_full());
        let refusal = if unholdable {
            Some(RejectReason::BadSchedule)
        } else if held
            .is_some_and(|i| self.schedules.held[i].spec.spec.task.attempt > spec.spec.task.attempt)
        {
            Some(RejectReason::Stale)
        } else {
            None
        };
        if !self.admissible(now, &spec.spec, refusal, false) {
            return;
        }
        if let Some(i) = held {
            self.end_handover(now, i, Exit::Cancelled, None);
        }
        let task = spec.spec.task;
        self.seen.remember(task.attempt);
        let accepted_ms = if self.clock.trusted {
            self.unix_ms(now).unwrap_or(0)
        } else {
            0
        };
        // Room: a free slot, or the one just emptied.
        let _ = self.schedules.held.push(Handover { spec, accepted_ms });
        self.append(Append::Handover(task));
        self.push_event(now, EventKind::Accepted { task });
    }

    /// A `Kill` of a hand-over's ids withdraws it. Whether `task` named one.
    pub(super) fn withdraw_handover(&mut self, now: Instant, task: TaskRef) -> bool {
        let Some(i) = self.schedules.index(task) else {
            return false;
        };
        self.end_handover(now, i, Exit::Cancelled, Some(KillCause::Requested));
        true
    }

    pub(super) fn end_handover(
        &mut self,
        now: Instant,
        i: usize,
        exit: Exit,
        cause: Option<KillCause>,
    ) {
        let task = self.schedules.held.remove(i).spec.spec.task;
        self.push_event(
            now,
            EventKind::Finished {
                task,
                exit,
                cause,
                output_dropped: 0,
            },
        );
    }

    /// Replay of an `Order`: an occurrence of a held hand-over moves its schedule's watermark.
    pub(super) fn replay_occurrence(&mut self, task: TaskRef) {
        let found = self.schedules.held.iter().find_map(|h| {
            let k = task
                .task
                .checked_sub(h.spec.spec.task.task)?
                .checked_sub(1)?;
            let at = h.spec.occurrence_at(k)?;
            (h.spec.occurrence_ref(k) == task).then_some((h.spec.schedule, at))
        });
        if let Some((schedule, at)) = found {
            self.schedules.set_mark(schedule, at);
        }
    }

    /// Replay of a `Missed` event: the watermark covers what it reported.
    pub(super) fn replay_missed(&mut self, handover: TaskRef, first: u64, count: u64) {
        let Some(i) = self.schedules.index(handover) else {
            return;
        };
        let spec = &self.schedules.held[i].spec;
        let last = first.saturating_add(count).saturating_sub(1);
        if let Some(at) = spec.occurrence_at(last) {
            let schedule = spec.schedule;
            self.schedules.set_mark(schedule, at);
        }
    }

    /// Hand-overs act only with a trusted clock, the agent not stopping and room in its
    /// journal; a task slot free lets them start occurrences.
    fn plans(&self, now: Instant) -> impl Iterator<Item = (usize, Plan)> + '_ {
        let active = self.clock.trusted
            && self.stopping.is_none()
            && self.log.journal_level != JournalLevel::Full;
        let wall = self.unix_ms(now).filter(|_| active);
        let can_start = self.slots.len() < self.max_tasks;
        self.schedules
            .held
            .iter()
            .enumerate()
            .filter_map(move |(i, h)| {
                let wall = wall?;
                let mark = self.schedules.mark(h.spec.schedule);
                let since = self.clock.trusted_since.max(h.accepted_ms);
                Some((i, plan(&h.spec, mark, wall, can_start, since)))
            })
    }

    /// When a hand-over has its next step.
    pub(super) fn schedule_due(&self) -> Option<Instant> {
        self.plans(self.latest)
            .filter_map(|(_, plan)| match plan {
                Plan::Wait(at) => self.wall_instant(at),
                _ => Some(self.latest),
            })
            .min()
    }

    /// The first hand-over with a step due takes it.
    pub(super) fn schedule_step(&mut self, now: Instant) {
        let Some((i, plan)) = self
            .plans(now)
            .find(|(_, plan)| !matches!(plan, Plan::Wait(_)))
        else {
            return;
        };
        match plan {
            Plan::Wait(_) => return,
            Plan::Finish => {
                self.end_handover(now, i, Exit::Code(0), None);
                return;
            }
            Plan::Start(k) => self.start_occurrence(now, i, k),
            Plan::Miss { first, last } => {
                let spec = &self.schedules.held[i].spec;
                let (schedule, handover) = (spec.schedule, spec.spec.task);
                if let Some(at) = spec.occurrence_at(last) {
                    self.schedules.set_mark(schedule, at);
                }
                let count = last - first + 1;
                self.push_event(
                    now,
                    EventKind::Missed {
                        handover,
                        first,
                        count,
                    },
                );
            }
        }
        let h = &self.schedules.held[i];
        let mark = self.schedules.mark(h.spec.schedule);
        if mark.is_some_and(|m| count_up_to(&h.spec, m) >= h.spec.occurrences()) {
            self.end_handover(now, i, Exit::Code(0), None);
        }
    }

    /// Occurrence `k` of hand-over `i` starts as an accepted order of its own ids: `Order`
    /// (which moves the watermark), `Accepted` and `Spawning`, like any start.
    fn start_occurrence(&mut self, now: Instant, i: usize, k: u64) {
        let h = &self.schedules.held[i].spec;
        let (schedule, handover) = (h.schedule, h.spec.task);
        let Some(at) = h.occurrence_at(k) else {
            return;
        };
        let spec = TaskSpec {
            task: h.occurrence_ref(k),
            start_at_unix_ms: None,
            ..h.spec.clone()
        };
        self.schedules.set_mark(schedule, at);
        if self.seen.contains(spec.task.attempt) || self.slot(spec.task).is_some() {
            // Ids in use already (never from a sound master): never started twice.
            self.push_event(
                now,
                EventKind::Missed {
                    handover,
                    first: k,
                    count: 1,
                },
            );
            return;
        }
        let slot = self.accept(now, spec, None);
        self.begin_start(slot);
    }
}
