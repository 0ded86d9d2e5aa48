//! Schedules in the master core, in virtual time on the [`crate::rig::Rig`]: a schedule on an
//! agent is handed over as runs of occurrences with reserved ids, re-planned as the horizon
//! rolls, replaced by a new version and withdrawn when paused; occurrences the agent starts
//! become tasks when it reports them; a schedule on a cluster is started by the master; bad
//! calendars are refused with the reason.

use tether_core::Duration;
use tether_core::message::{
    CommandBody, EventKind, Exit, Missed as CoreMissed, ScheduleSpec, TaskRef,
};
use tether_master::calendar::CalendarSpec;
use tether_master::core::{Config, Master, RequestError, ScheduleRequest};
use tether_master::model::{ClusterMode, HandoverState, Missed, TaskState};
use tether_master::store::Store;

use crate::played::*;
use crate::rig::Rig;

const HOUR_MS: u64 = 3_600_000;
/// The rig's wall clock at its start: 2026-03-28T00:00:00Z.
const WALL: u64 = 1_774_656_000_000;

fn hourly(name: &str, agent: &str) -> ScheduleRequest {
    ScheduleRequest {
        name: name.into(),
        calendar: CalendarSpec {
            cron: Some("0 * * * *".into()),
            time_zone: Some("Europe/Berlin".into()),
            ..CalendarSpec::default()
        },
        agent: Some(agent.into()),
        argv: vec!["true".into()],
        ..ScheduleRequest::default()
    }
}

impl Rig {
    fn wall(&mut self) {
        let at = WALL + (self.now - tether_core::Instant::from_secs(100)).as_millis();
        self.m.handle_wall_clock(self.now, at);
    }

    fn put_schedule(&mut self, req: ScheduleRequest) -> tether_master::model::Schedule {
        self.wall();
        let s = self.m.put_schedule(self.now, req).unwrap();
        self.drain();
        s
    }

    /// Hand-overs sent to `agent` since `from`.
    fn handovers_to(&self, agent: &str, from: usize) -> Vec<ScheduleSpec> {
        self.commands(agent, from)
            .into_iter()
            .filter_map(|c| match c {
                CommandBody::Schedule(spec) => Some(spec),
                _ => None,
            })
            .collect()
    }
}

fn scheduled_rig() -> Rig {
    let mut h = rig();
    h.wall();
    h.online("pi-1", 1);
    h
}

#[test]
fn a_week_of_hourly_occurrences_goes_to_the_agent_as_one_run() {
    let mut h = scheduled_rig();
    let s = h.put_schedule(hourly("hourly", "pi-1"));
    let sent = h.handovers_to("pi-1", 0);
    assert_eq!(sent.len(), 1);
    let spec = &sent[0];
    assert_eq!(spec.schedule, s.id);
    assert_eq!(spec.runs.len(), 1, "{:?}", spec.runs);
    assert_eq!(spec.runs[0].period_ms, HOUR_MS);
    assert_eq!(
        spec.occurrences(),
        7 * 24 + 1,
        "from now through the horizon, 7 days"
    );
    assert_eq!(spec.missed, CoreMissed::Skip);
    // Retransmitted until answered, then not.
    h.secs(10);
    h.heartbeat("pi-1", 1, 0, &[]);
    assert_eq!(h.handovers_to("pi-1", 0).len(), 2);
    h.event(
        "pi-1",
        1,
        EventKind::Accepted {
            task: spec.spec.task,
        },
    );
    let mark = h.out.len();
    h.secs(30);
    h.heartbeat("pi-1", 1, 1, &[]);
    assert!(h.handovers_to("pi-1", mark).is_empty());
    let stored = h.store.handovers(s.id).unwrap();
    assert_eq!(stored[0].state, HandoverState::Held);
}

#[test]
fn an_occurrence_the_agent_started_becomes_its_task_once() {
    let mut h = scheduled_rig();
    let s = h.put_schedule(hourly("hourly", "pi-1"));
    let spec = h.handovers_to("pi-1", 0).remove(0);
    h.event(
        "pi-1",
        1,
        EventKind::Accepted {
            task: spec.spec.task,
        },
    );
    // The agent starts occurrence 0 on its own, under the reserved ids.
    let occ = spec.occurrence_ref(0);
    h.accept_and_start("pi-1", 2, occ);
    h.finish("pi-1", 4, occ, Exit::Code(0));
    let task = h
        .store
        .task(occ.task)
        .unwrap()
        .expect("the occurrence's task");
    assert_eq!(task.state, TaskState::Succeeded);
    let occurrence = task.occurrence.unwrap();
    assert_eq!((occurrence.schedule, occurrence.version), (s.id, 1));
    assert_eq!(Some(occurrence.at_ms), spec.occurrence_at(0));
    // No start command ever goes out for it.
    assert!(h.starts("pi-1", 0).is_empty());
    // A replay of its events changes nothing.
    h.event("pi-1", 2, EventKind::Accepted { task: occ });
    assert_eq!(
        h.store
            .occurrence_tasks(s.id, Default::default())
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_plan_rolls_on_as_the_horizon_is_used_up() {
    let mut h = scheduled_rig();
    h.put_schedule(hourly("hourly", "pi-1"));
    let first = h.handovers_to("pi-1", 0).remove(0);
    h.event(
        "pi-1",
        1,
        EventKind::Accepted {
            task: first.spec.task,
        },
    );
    let mark = h.out.len();
    // Three days on: still more than half the horizon ahead.
    for _ in 0..(3 * 24 * 6) {
        h.secs(600);
        h.wall();
        h.heartbeat("pi-1", 1, 1, &[]);
    }
    assert!(h.handovers_to("pi-1", mark).is_empty());
    for _ in 0..(24 * 6) {
        h.secs(600);
        h.wall();
        h.heartbeat("pi-1", 1, 1, &[]);
    }
    let next = h.handovers_to("pi-1", mark);
    assert!(!next.is_empty(), "re-planned after half the horizon");
    assert!(next[0].spec.task.task > first.spec.task.task + first.occurrences());
    assert_eq!(next[0].schedule, first.schedule);
}

#[test]
fn a_new_version_replaces_the_hand_over_and_a_pause_withdraws_it() {
    let mut h = scheduled_rig();
    h.put_schedule(hourly("hourly", "pi-1"));
    let v1 = h.handovers_to("pi-1", 0).remove(0);
    h.event("pi-1", 1, EventKind::Accepted { task: v1.spec.task });
    let mark = h.out.len();
    let mut changed = hourly("hourly", "pi-1");
    changed.argv = vec!["echo".into(), "v2".into()];
    let s2 = h.put_schedule(changed);
    assert_eq!(s2.version, 2);
    let v2 = h.handovers_to("pi-1", mark);
    assert_eq!(v2.len(), 1);
    assert_eq!(v2[0].spec.argv.iter().nth(1), Some(Ok("v2")));
    assert!(
        h.kills("pi-1", mark).contains(&v1.spec.task),
        "the old one withdrawn"
    );
    h.finish("pi-1", 2, v1.spec.task, Exit::Cancelled);
    h.event(
        "pi-1",
        3,
        EventKind::Accepted {
            task: v2[0].spec.task,
        },
    );
    let mark = h.out.len();
    h.wall();
    h.m.pause_schedule(h.now, "hourly", true).unwrap();
    h.drain();
    assert_eq!(h.kills("pi-1", mark), vec![v2[0].spec.task]);
    assert!(h.store.schedule("hourly").unwrap().unwrap().paused);
    let mark = h.out.len();
    h.m.pause_schedule(h.now, "hourly", false).unwrap();
    h.drain();
    assert_eq!(
        h.handovers_to("pi-1", mark).len(),
        1,
        "resumed: handed over again"
    );
}

#[test]
fn missed_reports_are_counted_and_a_refused_hand_over_ends() {
    let mut h = scheduled_rig();
    h.put_schedule(ScheduleRequest {
        missed: Some(Missed::Once),
        ..hourly("hourly", "pi-1")
    });
    let spec = h.handovers_to("pi-1", 0).remove(0);
    assert_eq!(spec.missed, CoreMissed::RunOnce);
    h.event(
        "pi-1",
        1,
        EventKind::Accepted {
            task: spec.spec.task,
        },
    );
    h.event(
        "pi-1",
        2,
        EventKind::Missed {
            handover: spec.spec.task,
            first: 0,
            count: 3,
        },
    );
    assert_eq!(h.m.stats().occurrences_missed, 3);
    h.event(
        "pi-1",
        3,
        EventKind::Rejected {
            task: TaskRef {
                task: spec.spec.task.task,
                attempt: spec.spec.task.attempt,
            },
            reason: tether_core::message::RejectReason::BadSchedule,
        },
    );
    assert_eq!(
        h.m.stats().handovers_refused,
        0,
        "an answer after Accepted changes nothing"
    );
}

#[test]
fn the_master_clock_answers_fresh_heartbeats_now_and_then_and_when_untrusted() {
    let mut h = scheduled_rig();
    let clocks = |h: &Rig, from: usize| {
        h.commands("pi-1", from)
            .into_iter()
            .filter_map(|c| match c {
                CommandBody::Clock {
                    unix_ms,
                    incarnation,
                    heartbeat,
                } => Some((unix_ms, incarnation, heartbeat)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The first fresh heartbeat of the incarnation: answered, naming it.
    let first = clocks(&h, 0);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, WALL, "the master's wall clock");
    assert_eq!(first[0].1, 1);
    let mark = h.out.len();
    h.secs(10);
    h.heartbeat("pi-1", 1, 0, &[]);
    assert!(clocks(&h, mark).is_empty(), "not again within ten minutes");
    h.event("pi-1", 1, EventKind::Clock { trusted: false });
    h.secs(1);
    h.heartbeat("pi-1", 1, 1, &[]);
    assert_eq!(
        clocks(&h, mark).len(),
        1,
        "an untrusting agent gets it at once"
    );
    let mark = h.out.len();
    h.heartbeat("pi-1", 2, 1, &[]);
    assert_eq!(
        clocks(&h, mark).len(),
        1,
        "a new incarnation gets it at once"
    );
    for _ in 0..61 {
        h.secs(10);
        h.wall();
        h.heartbeat("pi-1", 2, 1, &[]);
    }
    assert_eq!(clocks(&h, mark).len(), 2, "and every ten minutes");
}

#[test]
fn a_cluster_schedule_is_started_by_the_master_at_each_occurrence() {
    let mut h = scheduled_rig();
    h.online("pi-2", 1);
    cluster(&mut h, "c", ClusterMode::FixedPriority, &["pi-1", "pi-2"]);
    let s = h.put_schedule(ScheduleRequest {
        agent: None,
        cluster: Some("c".into()),
        calendar: CalendarSpec {
            every_ms: Some(120_000),
            start_ms: Some(WALL + 60_000),
            ..CalendarSpec::default()
        },
        ..hourly("two-minutes", "pi-1")
    });
    assert!(
        h.handovers_to("pi-1", 0).is_empty(),
        "a cluster's is not handed over"
    );
    let starts = h.starts("pi-1", 0);
    assert_eq!(starts.len(), 1, "the first occurrence, a minute ahead");
    let task = h.store.task(starts[0].task).unwrap().unwrap();
    assert_eq!(task.start_at_ms, Some(WALL + 60_000));
    assert_eq!(task.occurrence.unwrap().schedule, s.id);
    for _ in 0..6 {
        h.secs(20);
        h.wall();
        h.heartbeat("pi-1", 1, 0, &[]);
    }
    assert_eq!(
        h.starts("pi-1", 0)
            .iter()
            .map(|t| t.task)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2
    );
}

#[test]
fn bad_schedules_are_refused_with_the_reason() {
    let mut h = scheduled_rig();
    h.wall();
    let mut bad = hourly("bad", "pi-1");
    bad.calendar.cron = Some("0 * * *".into());
    let e = h.m.put_schedule(h.now, bad).unwrap_err();
    assert!(matches!(e, RequestError::InvalidCalendar(_)), "{e:?}");
    assert!(e.to_string().contains("five"), "{e}");
    let mut bad = hourly("bad", "pi-1");
    bad.calendar.time_zone = Some("Mars/Olympus".into());
    let e = h.m.put_schedule(h.now, bad).unwrap_err();
    assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    let e = h.m.put_schedule(h.now, hourly("bad", "ghost")).unwrap_err();
    assert_eq!(e, RequestError::UnknownAgent("ghost".into()));
    let e = h.m.pause_schedule(h.now, "nope", true).unwrap_err();
    assert_eq!(e, RequestError::UnknownSchedule("nope".into()));
    h.drain();
    assert!(h.store.schedules(Default::default()).unwrap().is_empty());
}

#[test]
fn a_restarted_master_keeps_its_schedules_and_hand_overs() {
    let mut h = scheduled_rig();
    let s = h.put_schedule(hourly("hourly", "pi-1"));
    let spec = h.handovers_to("pi-1", 0).remove(0);
    h.event(
        "pi-1",
        1,
        EventKind::Accepted {
            task: spec.spec.task,
        },
    );
    let snapshot = h.store.load().unwrap();
    assert!(snapshot.next_task > spec.spec.task.task + spec.occurrences());
    let mut config = Config::new(P, 0xbeef, master_key());
    config.heartbeat_period = Duration::from_secs(10);
    h.m = Master::restore(config, snapshot, h.now).unwrap();
    h.wall();
    h.m.handle_connected(h.now);
    let mark = h.out.len();
    h.drain();
    h.secs(1);
    h.heartbeat("pi-1", 1, 1, &[]);
    assert!(
        h.handovers_to("pi-1", mark).is_empty(),
        "held already: not sent again"
    );
    // An occurrence started while the master was away is adopted after the restart.
    let occ = spec.occurrence_ref(2);
    h.accept_and_start("pi-1", 2, occ);
    let task = h.store.task(occ.task).unwrap().unwrap();
    assert_eq!(task.occurrence.unwrap().schedule, s.id);
    assert_eq!(task.state, TaskState::Running);
    h.finish("pi-1", 4, occ, Exit::Code(0));

    // Restarted again: an event of that settled occurrence that comes late (a replay across a
    // gap) is stored and changes nothing; the task is not made twice (the store would refuse
    // the batch, and every batch after it).
    let snapshot = h.store.load().unwrap();
    assert!(snapshot.adopted.contains(&occ.task));
    let mut config = Config::new(P, 0xbeef + 1, master_key());
    config.heartbeat_period = Duration::from_secs(10);
    h.m = Master::restore(config, snapshot, h.now).unwrap();
    h.wall();
    h.m.handle_connected(h.now);
    h.drain();
    h.event("pi-1", 5, EventKind::Started { task: occ, pid: 7 });
    assert_eq!(
        h.store.task(occ.task).unwrap().unwrap().state,
        TaskState::Succeeded
    );
}

#[test]
fn a_schedule_every_two_seconds_is_not_handed_over_again_at_every_occurrence() {
    let mut h = scheduled_rig();
    h.put_schedule(ScheduleRequest {
        calendar: CalendarSpec {
            every_ms: Some(2_000),
            ..CalendarSpec::default()
        },
        ..hourly("often", "pi-1")
    });
    let first = h.handovers_to("pi-1", 0).remove(0);
    h.event(
        "pi-1",
        1,
        EventKind::Accepted {
            task: first.spec.task,
        },
    );
    let span_ms = first.runs[0].period_ms * (u64::from(first.runs[0].count) - 1);
    assert!(
        span_ms < 7 * 24 * HOUR_MS,
        "cut short by the plan's limit: {span_ms} ms"
    );
    let mark = h.out.len();
    // Ten minutes of occurrences: the plan covers hours, so nothing new goes out.
    for _ in 0..60 {
        h.secs(10);
        h.wall();
        h.heartbeat("pi-1", 1, 1, &[]);
    }
    assert!(h.handovers_to("pi-1", mark).is_empty());
    assert_eq!(h.store.handovers(first.schedule).unwrap().len(), 1);
}
