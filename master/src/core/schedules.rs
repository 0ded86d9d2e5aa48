//! Schedules: defining, pausing, resuming and deleting them, and planning their occurrences.
//!
//! A schedule on one agent is handed over ahead of time: the occurrences of the horizon
//! (7 days by default) packed into at most [`SCHEDULE_RUNS`] evenly spaced runs, with ids
//! reserved for each ([`Handover`]). The agent starts them itself, by a clock it trusts, and
//! reports each as the task it reserved; the master makes that task when it first hears of it
//! (its `Accepted`). A new hand-over replaces the agent's previous one of the same schedule
//! (when half the horizon is used up, or a new version was made); the agent never starts an
//! occurrence at or before the last one it started, so none runs twice. Paused and deleted
//! schedules have their hand-overs withdrawn (a `Kill` of the hand-over's ids).
//!
//! A schedule on a cluster is started by the master: each occurrence becomes a task a minute
//! ahead, with the occurrence time as its start time (the member holds it until then).
//! Occurrences due while the master was down follow the schedule's [`Missed`] rule.

use std::collections::BTreeMap;

use log::{info, warn};
use tether_core::message::{CommandBody, Run as CoreRun, SCHEDULE_RUNS, ScheduleSpec, TaskRef};
use tether_core::{Duration, Instant};

use super::{Change, Master, RequestError, ScheduleRequest};
use crate::calendar::{self, Calendar};
use crate::model::{
    Handover, HandoverState, Missed, NewTask, OccurrenceRef, Schedule, ScheduleId, ScheduledTask,
    Target, Task,
};

/// Occurrences one plan looks at, at most (a minutely schedule over a week is 10,080).
const PLAN_LIMIT: usize = 20_000;
/// How long before its time the master makes a cluster occurrence's task.
const LEAD: Duration = Duration::from_secs(60);
/// `late_ms` when a schedule does not say.
const DEFAULT_LATE_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub(super) struct ScheduleEntry {
    pub(super) schedule: Schedule,
    pub(super) calendar: Calendar,
    /// The latest occurrence time a task was made for by the master (cluster schedules).
    pub(super) last_made_ms: u64,
}

#[derive(Debug, Clone)]
pub(super) struct HandoverEntry {
    pub(super) handover: Handover,
    /// When the hand-over (or its withdrawal) goes out again.
    pub(super) next_send: Instant,
    pub(super) withdraw: bool,
}

impl Master {
    /// The runtime's wall clock at `now`: occurrences are planned in wall-clock time.
    pub fn handle_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall = Some((now, unix_ms));
    }

    /// Wall-clock milliseconds at `now`, once the runtime has told the clock.
    pub(super) fn wall_ms(&self, now: Instant) -> Option<u64> {
        self.wall.map(|(at, ms)| {
            if now >= at {
                ms.saturating_add((now - at).as_millis())
            } else {
                ms.saturating_sub((at - now).as_millis())
            }
        })
    }

    /// Defines schedule `req.name`, or its next version.
    pub fn put_schedule(
        &mut self,
        now: Instant,
        req: ScheduleRequest,
    ) -> Result<Schedule, RequestError> {
        self.advance(now);
        super::requests::check_name("schedule", &req.name)?;
        let wall = self.wall_ms(now).unwrap_or(0);
        let mut req = req;
        if req.calendar.every_ms.is_some() && req.calendar.start_ms.is_none() {
            // Anchored now, and stored so: a restart plans the same instants.
            req.calendar.start_ms = Some(wall);
        }
        let calendar = req
            .calendar
            .parse(wall)
            .map_err(|e| RequestError::InvalidCalendar(e.0))?;
        let (target, policy) =
            self.target_and_policy(req.agent, req.cluster, req.profile.as_deref(), &req.policy)?;
        let late_ms = req.late_ms.unwrap_or(DEFAULT_LATE_MS);
        super::requests::check_field(crate::limits::LATE_MS, late_ms)?;
        let task = ScheduledTask {
            target,
            argv: req.argv,
            env: req.env,
            cwd: req.cwd,
            profile: req.profile,
            policy,
        };
        Task::pending(0, occurrence_task(&task, None)).spec(self.next_attempt)?;
        let existing = self
            .schedules
            .values()
            .find(|s| s.schedule.name == req.name)
            .map(|s| (s.schedule.id, s.schedule.version, s.schedule.paused));
        let (id, version, paused) = match existing {
            Some((id, version, paused)) => (id, version + 1, paused),
            None => {
                let id = self.next_schedule;
                self.next_schedule += 1;
                (id, 1, false)
            }
        };
        let schedule = Schedule {
            id,
            name: req.name,
            version,
            calendar: req.calendar,
            task,
            missed: req.missed.unwrap_or(Missed::Skip),
            late_ms,
            paused,
            deleted: false,
            created_ms: 0,
            updated_ms: 0,
        };
        info!("schedule {} ({id}): version {version}", schedule.name);
        self.persist(Change::Schedule(schedule.clone()));
        let last_made_ms = self.schedules.get(&id).map_or(wall, |s| s.last_made_ms);
        self.schedules.insert(
            id,
            ScheduleEntry {
                schedule: schedule.clone(),
                calendar,
                last_made_ms,
            },
        );
        // The old version's hand-overs give way to the new one's.
        self.withdraw_handovers(now, id, |h| h.version != version);
        self.tick(now);
        Ok(schedule)
    }

    /// Pauses (`paused`) or resumes a schedule; a pause withdraws what agents hold of it.
    pub fn pause_schedule(
        &mut self,
        now: Instant,
        name: &str,
        paused: bool,
    ) -> Result<Schedule, RequestError> {
        self.advance(now);
        let wall = self.wall_ms(now).unwrap_or(0);
        let entry = self.schedule_named(name)?;
        entry.schedule.paused = paused;
        if !paused {
            // Occurrences while paused are not owed.
            entry.last_made_ms = entry.last_made_ms.max(wall);
        }
        let schedule = entry.schedule.clone();
        self.persist(Change::Schedule(schedule.clone()));
        if paused {
            self.withdraw_handovers(now, schedule.id, |_| true);
        }
        self.tick(now);
        Ok(schedule)
    }

    /// Deletes a schedule: nothing more of it starts; its occurrences stay in the history.
    pub fn delete_schedule(&mut self, now: Instant, name: &str) -> Result<(), RequestError> {
        self.advance(now);
        let entry = self.schedule_named(name)?;
        entry.schedule.deleted = true;
        let schedule = entry.schedule.clone();
        self.persist(Change::Schedule(schedule.clone()));
        self.withdraw_handovers(now, schedule.id, |_| true);
        self.schedules.remove(&schedule.id);
        self.tick(now);
        Ok(())
    }

    /// The schedules the core follows (not deleted).
    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values().map(|s| &s.schedule)
    }

    /// The next `n` occurrence times of a schedule from `now` (for people).
    pub fn next_occurrences(&self, now: Instant, id: ScheduleId, n: usize) -> Vec<u64> {
        let (Some(s), Some(wall)) = (self.schedules.get(&id), self.wall_ms(now)) else {
            return Vec::new();
        };
        s.calendar.occurrences(wall, u64::MAX, n)
    }

    /// The hand-overs agents hold or are being sent.
    pub fn handovers(&self) -> impl Iterator<Item = &Handover> {
        self.handovers.values().map(|h| &h.handover)
    }

    fn schedule_named(&mut self, name: &str) -> Result<&mut ScheduleEntry, RequestError> {
        self.schedules
            .values_mut()
            .find(|s| s.schedule.name == name)
            .ok_or_else(|| RequestError::UnknownSchedule(name.to_owned()))
    }

    /// Withdraws the live hand-overs of schedule `id` that `which` picks.
    fn withdraw_handovers(
        &mut self,
        now: Instant,
        id: ScheduleId,
        which: impl Fn(&Handover) -> bool,
    ) {
        for h in self.handovers.values_mut() {
            if h.handover.schedule == id && !h.withdraw && which(&h.handover) {
                h.withdraw = true;
                h.next_send = now;
            }
        }
    }

    /// After every input: plans what is due, sends hand-overs and withdrawals.
    pub(super) fn plan_schedules(&mut self, now: Instant) {
        let Some(wall) = self.wall_ms(now) else {
            return;
        };
        let horizon = self.config.schedule_horizon.as_millis();
        let ids: Vec<ScheduleId> = self.schedules.keys().copied().collect();
        for id in ids {
            let Some(s) = self.schedules.get(&id) else {
                continue;
            };
            if s.schedule.paused {
                continue;
            }
            match s.schedule.task.target.clone() {
                Target::Agent(agent) => self.plan_handover(now, id, &agent, wall, horizon),
                Target::Cluster(_) => self.make_due_occurrences(now, id, wall),
            }
        }
        self.send_handovers(now);
    }

    /// A new hand-over for a schedule on `agent` when none holds this version, or the one
    /// held covers less than half the horizon ahead.
    fn plan_handover(
        &mut self,
        now: Instant,
        id: ScheduleId,
        agent: &str,
        wall: u64,
        horizon: u64,
    ) {
        let Some(s) = self.schedules.get(&id) else {
            return;
        };
        let version = s.schedule.version;
        let live = self
            .handovers
            .values()
            .filter(|h| h.handover.schedule == id && !h.withdraw)
            .map(|h| h.handover.last_ms())
            .max();
        let renew_at = self.renew_at(id, horizon);
        if live.is_some() && renew_at.is_some_and(|at| wall < at) {
            return;
        }
        let after = wall.saturating_sub(s.schedule.late_ms);
        let times = s
            .calendar
            .occurrences(after, wall.saturating_add(horizon), PLAN_LIMIT);
        let (runs, covered) = calendar::pack(&times, SCHEDULE_RUNS);
        if covered == 0 {
            return;
        }
        if live.is_some_and(|last| runs.last().is_some_and(|r| r.last_ms() <= last)) {
            // Nothing beyond what the agent holds (a sparse calendar): wait.
            return;
        }
        let count = covered as u64;
        let task = self.next_task;
        let attempt = self.next_attempt;
        self.next_task += count + 1;
        self.next_attempt += count + 1;
        let handover = Handover {
            task,
            attempt,
            schedule: id,
            version,
            agent: agent.to_owned(),
            runs,
            state: HandoverState::Sent,
            created_ms: 0,
        };
        info!(
            "schedule {id}: {count} occurrence(s) handed to {agent} as task ids {}..={}",
            task + 1,
            task + count
        );
        self.persist(Change::Handover(handover.clone()));
        // The agent's newer hand-over replaces this schedule's older ones there.
        for h in self.handovers.values_mut() {
            if h.handover.schedule == id && h.handover.agent == agent && !h.withdraw {
                h.handover.state = HandoverState::Ended;
            }
        }
        let ended: Vec<Handover> = self
            .handovers
            .values()
            .filter(|h| h.handover.schedule == id && h.handover.state == HandoverState::Ended)
            .map(|h| h.handover.clone())
            .collect();
        for h in ended {
            self.handovers.remove(&h.task);
            self.persist(Change::Handover(h.clone()));
            self.retire(h);
        }
        self.handovers.insert(
            task,
            HandoverEntry {
                handover,
                next_send: now,
                withdraw: false,
            },
        );
    }

    /// When schedule `id`'s live hand-over is renewed: once half of what it covers is used up
    /// (half the horizon, or half a plan cut short by [`PLAN_LIMIT`]: a schedule every few
    /// seconds is not re-planned at every occurrence).
    fn renew_at(&self, id: ScheduleId, horizon: u64) -> Option<u64> {
        self.handovers
            .values()
            .filter(|h| h.handover.schedule == id && !h.withdraw)
            .map(|h| {
                let (first, last) = (h.handover.first_ms(), h.handover.last_ms());
                last.saturating_sub(last.saturating_sub(first).min(horizon) / 2)
            })
            .max()
    }

    /// Cluster schedules: a task for each occurrence due within [`LEAD`], started at its time
    /// by the member placement picks; occurrences the master slept through follow `missed`.
    fn make_due_occurrences(&mut self, now: Instant, id: ScheduleId, wall: u64) {
        let Some(s) = self.schedules.get(&id) else {
            return;
        };
        let until = wall.saturating_add(LEAD.as_millis());
        let mut times = s.calendar.occurrences(s.last_made_ms, until, PLAN_LIMIT);
        if times.is_empty() {
            return;
        }
        let late = wall.saturating_sub(s.schedule.late_ms);
        let missed: Vec<u64> = times.iter().copied().filter(|&t| t < late).collect();
        let keep_missed = match s.schedule.missed {
            Missed::Skip => 0,
            Missed::Once => 1.min(missed.len()),
            Missed::All => missed.len(),
        };
        let skipped = missed.len() - keep_missed;
        if skipped > 0 {
            warn!("schedule {id}: {skipped} occurrence(s) missed while the master was away");
            self.stats.occurrences_missed += skipped as u64;
        }
        times.drain(..skipped);
        let schedule = s.schedule.clone();
        let last = times.last().copied();
        for at in times {
            let occurrence = OccurrenceRef {
                schedule: id,
                version: schedule.version,
                at_ms: at,
            };
            let mut new = occurrence_task(&schedule.task, Some(occurrence));
            new.start_at_ms = Some(at.max(late));
            if let Err(e) = self.add_task(now, new, Duration::from_ticks(0)) {
                warn!("schedule {id}: occurrence at {at} cannot run: {e}");
            }
        }
        if let (Some(last), Some(s)) = (last, self.schedules.get_mut(&id)) {
            s.last_made_ms = last;
        }
    }

    /// Hand-overs not yet answered, and withdrawals, go out every heartbeat period to agents
    /// that are available.
    fn send_handovers(&mut self, now: Instant) {
        let silence = self.silence();
        let period = self.heartbeat_period();
        let mut out = Vec::new();
        for h in self.handovers.values_mut() {
            let sending = h.withdraw || h.handover.state == HandoverState::Sent;
            if !sending || h.next_send > now {
                continue;
            }
            let available = self
                .agents
                .get(&h.handover.agent)
                .is_some_and(|a| a.available(now, silence));
            if !available {
                continue;
            }
            h.next_send = now.saturating_add(period);
            let ids = TaskRef {
                task: h.handover.task,
                attempt: h.handover.attempt,
            };
            if h.withdraw {
                out.push((h.handover.agent.clone(), CommandBody::Kill { task: ids }));
            } else if let Some(s) = self.schedules.get(&h.handover.schedule) {
                match handover_spec(&s.schedule, &h.handover) {
                    Ok(spec) => out.push((h.handover.agent.clone(), CommandBody::Schedule(spec))),
                    Err(e) => warn!(
                        "schedule {}: cannot build its hand-over: {e}",
                        s.schedule.id
                    ),
                }
            }
        }
        for (agent, body) in out {
            self.command(&agent, body);
        }
    }

    /// When the next hand-over (or withdrawal) goes out, for `poll_timeout`.
    pub(super) fn handover_due(&self) -> Option<Instant> {
        self.handovers
            .values()
            .filter(|h| h.withdraw || h.handover.state == HandoverState::Sent)
            .map(|h| h.next_send)
            .min()
    }

    /// When a schedule needs the planner next, for `poll_timeout`: a cluster occurrence's
    /// lead time, or half the horizon through an agent's hand-over.
    pub(super) fn planning_due(&self, now: Instant) -> Option<Instant> {
        let wall = self.wall_ms(now)?;
        let horizon = self.config.schedule_horizon.as_millis();
        let mut next: Option<u64> = None;
        for s in self.schedules.values().filter(|s| !s.schedule.paused) {
            let at = match s.schedule.task.target {
                Target::Cluster(_) => s
                    .calendar
                    .occurrences(s.last_made_ms, u64::MAX, 1)
                    .first()
                    .map(|t| t.saturating_sub(LEAD.as_millis())),
                Target::Agent(_) => self.renew_at(s.schedule.id, horizon),
            };
            next = match (next, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        next.map(|at| now.saturating_add(Duration::from_millis(at.saturating_sub(wall))))
    }

    /// Rebuilds the schedules and hand-overs from the snapshot.
    pub(super) fn restore_schedules(
        &mut self,
        schedules: Vec<Schedule>,
        handovers: Vec<Handover>,
        last: Vec<(ScheduleId, u64)>,
    ) {
        let last: BTreeMap<ScheduleId, u64> = last.into_iter().collect();
        for schedule in schedules {
            match schedule.calendar.parse(schedule.created_ms) {
                Ok(calendar) => {
                    let last_made_ms = last
                        .get(&schedule.id)
                        .copied()
                        .unwrap_or(schedule.updated_ms);
                    self.schedules.insert(
                        schedule.id,
                        ScheduleEntry {
                            schedule,
                            calendar,
                            last_made_ms,
                        },
                    );
                }
                Err(e) => log::error!(
                    "schedule {} ({}): its calendar no longer parses ({e}); not followed",
                    schedule.name,
                    schedule.id
                ),
            }
        }
        for handover in handovers {
            let withdraw = self
                .schedules
                .get(&handover.schedule)
                .is_none_or(|s| s.schedule.paused || s.schedule.version != handover.version);
            self.handovers.insert(
                handover.task,
                HandoverEntry {
                    handover,
                    next_send: self.now,
                    withdraw,
                },
            );
        }
    }
}

/// What each occurrence of `task` runs.
pub(super) fn occurrence_task(task: &ScheduledTask, occurrence: Option<OccurrenceRef>) -> NewTask {
    NewTask {
        target: task.target.clone(),
        argv: task.argv.clone(),
        env: task.env.clone(),
        cwd: task.cwd.clone(),
        profile: task.profile.clone(),
        policy: task.policy,
        start_at_ms: None,
        order: None,
        occurrence,
    }
}

/// The hand-over command for `handover` of `schedule`.
fn handover_spec(
    schedule: &Schedule,
    handover: &Handover,
) -> Result<ScheduleSpec, crate::model::Invalid> {
    let spec = Task::pending(handover.task, occurrence_task(&schedule.task, None))
        .spec(handover.attempt)?;
    let runs = handover
        .runs
        .iter()
        .map(|r| CoreRun {
            first_unix_ms: r.first_ms,
            period_ms: r.period_ms,
            count: r.count,
        })
        .collect::<heapless::Vec<_, SCHEDULE_RUNS>>();
    Ok(ScheduleSpec {
        schedule: schedule.id,
        spec,
        runs,
        missed: schedule.missed.to_core(),
        late_ms: schedule.late_ms,
    })
}
