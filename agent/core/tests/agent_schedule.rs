//! Schedule hand-overs: a recurring order the agent starts itself, occurrence by occurrence,
//! with the master silent; each occurrence at most once (the watermark) across restarts,
//! compactions, replacement hand-overs and clock steps; what could not start on time by the
//! hand-over's missed rule; refusals.

mod rig;

use rig::*;
use tether_core::agent::{Phase, SCHEDULES};
use tether_core::journal::{self, JournalRecord};
use tether_core::message::*;
use tether_core::policy::OnDisconnect;

type Big = Rig<32, 64>;

const SCHEDULE: u64 = 7;
const BASE: u64 = 1_000;

/// A week of hourly occurrences from the first hour on.
fn week(missed: Missed) -> ScheduleSpec {
    handover(SCHEDULE, BASE, WALL0 + HOUR, HOUR, 168, missed)
}

/// The occurrence index of each spawn, in order.
fn indices(spec: &ScheduleSpec, spawned: &[(u64, TaskRef)]) -> Vec<u64> {
    spawned
        .iter()
        .map(|(_, task)| {
            let k = task.task - spec.spec.task.task - 1;
            assert_eq!(spec.occurrence_ref(k), *task, "an occurrence's own ids");
            k
        })
        .collect()
}

fn assert_each_once(ks: &[u64]) {
    let mut sorted = ks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        ks.len(),
        "an occurrence started twice: {ks:?}"
    );
}

fn accepted(events: &[EventKind], task: TaskRef) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, EventKind::Accepted { task: t } if *t == task))
        .count()
}

#[test]
fn a_week_of_hourly_occurrences_runs_from_one_handover_with_the_master_silent() {
    let mut rig = Big::sized();
    let spec = week(Missed::Skip);
    rig.schedule(t(0), spec.clone());
    assert_eq!(
        rig.events(),
        vec![EventKind::Accepted {
            task: spec.spec.task
        }]
    );
    assert_eq!(
        rig.agent.tasks().count(),
        0,
        "the hand-over takes no task slot"
    );
    assert_eq!(
        rig.agent.poll_timeout(),
        Some(t(HOUR)),
        "armed for the first"
    );

    // No word from the master from here on; each occurrence runs ten minutes.
    let mut runner = Runner::new(0, 10 * MINUTE);
    runner.run(&mut rig, 170 * HOUR);
    assert_eq!(runner.spawned.len(), 168);
    let ks = indices(&spec, &runner.spawned);
    assert_eq!(ks, (0..168).collect::<Vec<_>>(), "each once, in order");
    for (k, (at, _)) in runner.spawned.iter().enumerate() {
        assert_eq!(*at, (k as u64 + 1) * HOUR, "occurrence {k} on time");
    }
    assert_eq!(runner.most_slots, 1, "one task slot per running occurrence");
    assert!(rig.missed().is_empty());

    let events = rig.events();
    for k in 0..168 {
        assert_eq!(accepted(&events, spec.occurrence_ref(k)), 1);
        assert_eq!(
            rig.end_of(spec.occurrence_ref(k)),
            Some((Exit::Code(0), None))
        );
    }
    assert_eq!(
        rig.end_of(spec.spec.task),
        Some((Exit::Code(0), None)),
        "every occurrence started: the hand-over ends"
    );
    assert_eq!(rig.agent.handovers().count(), 0);
    assert_eq!(rig.agent.watermark(SCHEDULE), Some(WALL0 + 168 * HOUR));
    assert_eq!(rig.agent.poll_timeout(), None);
    assert_eq!(rig.agent.stats().lost_actions, 0);
}

/// Runs the first 80 occurrences (each 45 minutes), restarts the agent five hours later (five
/// occurrences missed, the 80th lost while running), then to the week's end.
fn restart_in_the_week(missed: Missed, max_tasks: usize) -> (ScheduleSpec, Big, Runner) {
    let mut rig = Big::sized();
    let spec = week(missed);
    rig.schedule(t(0), spec.clone());
    let mut runner = Runner::new(0, 45 * MINUTE);
    runner.run(&mut rig, 80 * HOUR + 30 * MINUTE);
    assert_eq!(runner.spawned.len(), 80);

    // Down from 80:30 to 85:30: occurrences 80..=84 (hours 81 to 85) pass.
    let back = 85 * HOUR + 30 * MINUTE;
    let mut next = rig.restart_with(t(back), |agent| agent.set_max_tasks(max_tasks));
    assert_eq!(
        next.end_of(spec.occurrence_ref(79)),
        Some((Exit::Lost, None)),
        "the one running is lost, not run again"
    );
    runner.running.clear();
    runner.now = back;
    runner.run(&mut next, 170 * HOUR);
    (spec, next, runner)
}

#[test]
fn a_restart_with_skip_reports_the_gap_as_one_missed_range() {
    let (spec, rig, runner) = restart_in_the_week(Missed::Skip, 32);
    assert_eq!(rig.missed(), vec![(80, 5)]);
    let ks = indices(&spec, &runner.spawned);
    assert_each_once(&ks);
    let expected: Vec<u64> = (0..80).chain(85..168).collect();
    assert_eq!(ks, expected);
    // After the gap, on time again.
    let (at, _) = runner.spawned[80];
    assert_eq!(at, 86 * HOUR);
    assert_eq!(rig.end_of(spec.spec.task), Some((Exit::Code(0), None)));
}

#[test]
fn a_restart_with_run_once_runs_the_latest_missed_now() {
    let (spec, rig, runner) = restart_in_the_week(Missed::RunOnce, 32);
    assert_eq!(rig.missed(), vec![(80, 4)]);
    let ks = indices(&spec, &runner.spawned);
    assert_each_once(&ks);
    let expected: Vec<u64> = (0..80).chain(84..168).collect();
    assert_eq!(ks, expected);
    assert_eq!(
        runner.spawned[80].0,
        85 * HOUR + 30 * MINUTE,
        "at the restart"
    );
    assert_eq!(runner.spawned[81].0, 86 * HOUR);
}

#[test]
fn a_restart_with_run_all_runs_each_missed_in_order() {
    let (spec, rig, runner) = restart_in_the_week(Missed::RunAll, 32);
    assert!(rig.missed().is_empty());
    let ks = indices(&spec, &runner.spawned);
    assert_eq!(ks, (0..168).collect::<Vec<_>>());
    for (at, _) in &runner.spawned[80..85] {
        assert_eq!(*at, 85 * HOUR + 30 * MINUTE, "the backlog at the restart");
    }
    // The five of the backlog, and the next on time while they still run.
    assert_eq!(runner.most_slots, 6);
}

#[test]
fn run_all_catches_up_as_slots_allow_then_reports_the_rest() {
    // Two slots, 45-minute occurrences: two of the five start, the rest wait `late_ms` and are
    // reported; the next one, due while both slots still run, waits and is reported too.
    let (spec, rig, runner) = restart_in_the_week(Missed::RunAll, 2);
    assert_eq!(rig.missed(), vec![(82, 3), (85, 1)]);
    let ks = indices(&spec, &runner.spawned);
    assert_each_once(&ks);
    let expected: Vec<u64> = (0..82).chain(86..168).collect();
    assert_eq!(ks, expected);
    assert!(runner.most_slots <= 2);
}

#[test]
fn an_occurrence_waits_for_a_slot_until_late_ms_then_is_missed() {
    let mut rig = Rig::new();
    rig.agent.set_max_tasks(1);
    let spec = handover(SCHEDULE, BASE, WALL0 + HOUR, HOUR, 3, Missed::Skip);
    rig.schedule(t(0), spec.clone());
    // A task of the master's holds the only slot over the first occurrence's time...
    let busy = rig::spec(1, OnDisconnect::Continue);
    rig.command(t(HOUR - 1_000), CommandBody::Start(busy.clone()));
    rig.agent
        .handle_process_started(t(HOUR - 1_000), busy.task, 7);
    rig.take_actions();
    rig.run_until(t(HOUR + 10_000));
    assert!(spawns(&rig.take_actions()).is_empty(), "no slot: it waits");
    // ... and frees it within `late_ms` (a minute): the occurrence starts then, late.
    rig.agent
        .handle_process_exited(t(HOUR + 30_000), busy.task, Exit::Code(0));
    rig.drain(t(HOUR + 30_000));
    rig.run_until(t(HOUR + 30_000));
    assert_eq!(spawns(&rig.take_actions()), vec![spec.occurrence_ref(0)]);
    rig.agent
        .handle_process_exited(t(HOUR + 40_000), spec.occurrence_ref(0), Exit::Code(0));
    rig.drain(t(HOUR + 40_000));

    // The second finds the slot taken past `late_ms`: missed.
    let busy = rig::spec(2, OnDisconnect::Continue);
    rig.command(t(2 * HOUR - 1_000), CommandBody::Start(busy.clone()));
    rig.agent
        .handle_process_started(t(2 * HOUR - 1_000), busy.task, 8);
    rig.take_actions();
    rig.run_until(t(2 * HOUR + 2 * MINUTE));
    assert!(spawns(&rig.take_actions()).is_empty());
    assert_eq!(rig.missed(), vec![(1, 1)]);
    assert_eq!(rig.agent.watermark(SCHEDULE), Some(WALL0 + 2 * HOUR));
    assert_eq!(
        rig.agent.poll_timeout(),
        Some(t(3 * HOUR)),
        "the next one is armed"
    );
}

#[test]
fn a_replacement_handover_repeats_nothing_at_or_before_the_watermark() {
    let mut rig = Big::sized();
    let first = handover(SCHEDULE, 100, WALL0 + HOUR, HOUR, 10, Missed::RunAll);
    rig.schedule(t(0), first.clone());
    let mut runner = Runner::new(0, MINUTE);
    runner.run(&mut rig, 3 * HOUR + 5 * MINUTE);
    assert_eq!(indices(&first, &runner.spawned), vec![0, 1, 2]);

    // The master's next hand-over for the schedule, every 20 minutes, starts an hour before the
    // last occurrence started.
    let second = handover(
        SCHEDULE,
        200,
        WALL0 + 2 * HOUR,
        20 * MINUTE,
        20,
        Missed::Skip,
    );
    rig.schedule(t(3 * HOUR + 5 * MINUTE), second.clone());
    assert_eq!(
        rig.end_of(first.spec.task),
        Some((Exit::Cancelled, None)),
        "replaced"
    );
    assert_eq!(
        rig.agent.handovers().collect::<Vec<_>>(),
        vec![(SCHEDULE, second.spec.task)]
    );
    runner.spawned.clear();
    runner.run(&mut rig, 5 * HOUR + 30 * MINUTE);
    // Its occurrences from 2:00 to 3:00 are at or before the first one's last: skipped, and
    // not reported missed either; from 3:20 on, each on time.
    assert_eq!(
        indices(&second, &runner.spawned),
        (4..=10).collect::<Vec<_>>()
    );
    assert_eq!(runner.spawned[0].0, 3 * HOUR + 20 * MINUTE);
    assert!(rig.missed().is_empty());
    assert_eq!(
        rig.agent.watermark(SCHEDULE),
        Some(WALL0 + 5 * HOUR + 20 * MINUTE)
    );

    // The wall clock steps back 25 minutes, to 5:05: above the anchor (5:00, an hour of
    // trusted time), so a declared clock is still believed, and below the watermark (5:20):
    // 5:20 does not run again, 5:40 runs when the stepped clock reads it.
    rig.agent
        .handle_wall_clock(t(5 * HOUR + 30 * MINUTE), WALL0 + 5 * HOUR + 5 * MINUTE);
    assert!(rig.agent.clock_trusted());
    runner.spawned.clear();
    runner.run(&mut rig, 6 * HOUR + 30 * MINUTE);
    assert_eq!(indices(&second, &runner.spawned), vec![11, 12]);
    assert_eq!(runner.spawned[0].0, 6 * HOUR + 5 * MINUTE);
    // Nor across a restart (the clock as stepped), nor for a retransmission of the first
    // hand-over.
    let now = t(6 * HOUR + 30 * MINUTE);
    let mut next = rig.restart_with(now, |a| {
        a.handle_wall_clock(now, WALL0 + 6 * HOUR + 5 * MINUTE)
    });
    next.schedule(t(6 * HOUR + 30 * MINUTE), first.clone());
    assert!(
        next.agent
            .handovers()
            .all(|(_, task)| task == second.spec.task)
    );
    assert_eq!(next.agent.watermark(SCHEDULE), Some(WALL0 + 6 * HOUR));
}

#[test]
fn kill_withdraws_a_handover_and_started_occurrences_run_on() {
    let mut rig = Rig::new();
    let spec = handover(SCHEDULE, BASE, WALL0 + HOUR, HOUR, 24, Missed::Skip);
    rig.schedule(t(0), spec.clone());
    let mut runner = Runner::new(0, 30 * MINUTE);
    runner.run(&mut rig, 2 * HOUR + 10 * MINUTE);
    assert_eq!(runner.spawned.len(), 2);

    rig.command(
        t(2 * HOUR + 10 * MINUTE),
        CommandBody::Kill {
            task: spec.spec.task,
        },
    );
    assert_eq!(
        rig.end_of(spec.spec.task),
        Some((Exit::Cancelled, Some(KillCause::Requested)))
    );
    assert_eq!(rig.agent.handovers().count(), 0);
    let running = spec.occurrence_ref(1);
    assert!(matches!(
        rig.agent.tasks().find(|(t, _)| *t == running),
        Some((_, Phase::Running { .. }))
    ));
    runner.run(&mut rig, 10 * HOUR);
    assert_eq!(runner.spawned.len(), 2, "nothing more starts");
    assert_eq!(rig.end_of(running), Some((Exit::Code(0), None)), "ran on");
    assert!(signals(&rig.take_actions()).is_empty());

    // A retransmission of the withdrawn hand-over is not taken again.
    rig.schedule(t(10 * HOUR), spec.clone());
    assert_eq!(rig.agent.handovers().count(), 0);
    assert_eq!(rig.agent.stats().duplicate_starts, 1);
}

fn rejection(rig: &Rig, task: TaskRef) -> Option<RejectReason> {
    rig.events().into_iter().find_map(|e| match e {
        EventKind::Rejected { task: t, reason } if t == task => Some(reason),
        _ => None,
    })
}

#[test]
fn a_handover_the_agent_cannot_hold_is_refused_bad_schedule() {
    let run = |first, period_ms, count| Run {
        first_unix_ms: first,
        period_ms,
        count,
    };
    let hourly = |first| run(first, HOUR, 3);
    let with_runs = |base: u64, runs: &[Run]| {
        let mut s = handover(SCHEDULE, base, WALL0 + HOUR, HOUR, 1, Missed::Skip);
        s.runs = heapless::Vec::from_slice(runs).unwrap();
        s
    };
    let cases = [
        // Out of order.
        with_runs(10, &[hourly(WALL0 + 10 * HOUR), hourly(WALL0 + HOUR)]),
        // Overlapping: the second run starts before the first's last occurrence.
        with_runs(20, &[hourly(WALL0 + HOUR), hourly(WALL0 + 2 * HOUR)]),
        // Empty, an empty run, several occurrences at one time.
        with_runs(30, &[]),
        with_runs(40, &[run(WALL0, HOUR, 0)]),
        with_runs(50, &[run(WALL0, 0, 2)]),
        // Beyond the end of time.
        with_runs(60, &[run(u64::MAX - 1, HOUR, 2)]),
    ];
    let mut rig = Rig::new();
    for spec in &cases {
        rig.schedule(t(0), spec.clone());
        assert_eq!(
            rejection(&rig, spec.spec.task),
            Some(RejectReason::BadSchedule),
            "{:?}",
            spec.runs
        );
    }
    let mut timed = handover(SCHEDULE, 70, WALL0 + HOUR, HOUR, 3, Missed::Skip);
    timed.spec.start_at_unix_ms = Some(WALL0 + HOUR);
    rig.schedule(t(0), timed.clone());
    assert_eq!(
        rejection(&rig, timed.spec.task),
        Some(RejectReason::BadSchedule)
    );
    // Good runs back to back are fine.
    let good = with_runs(80, &[hourly(WALL0 + HOUR), hourly(WALL0 + 4 * HOUR)]);
    rig.schedule(t(0), good.clone());
    assert_eq!(rejection(&rig, good.spec.task), None);
    assert_eq!(rig.agent.handovers().count(), 1);
    // A refusal is answered once.
    rig.schedule(t(1), cases[0].clone());
    assert_eq!(rig.agent.stats().duplicate_starts, 1);
}

#[test]
fn schedule_slots_are_bounded_and_take_no_task_slot() {
    let mut rig = Rig::new();
    rig.agent.set_max_tasks(1);
    let busy = rig::spec(1, OnDisconnect::Continue);
    rig.command(t(0), CommandBody::Start(busy));
    let n = SCHEDULES as u64;
    for s in 0..n {
        let spec = handover(
            100 + s,
            1_000 * (s + 1),
            WALL0 + HOUR,
            HOUR,
            3,
            Missed::Skip,
        );
        rig.schedule(t(0), spec.clone());
        assert_eq!(
            rejection(&rig, spec.spec.task),
            None,
            "with every task slot taken"
        );
    }
    assert_eq!(rig.agent.handovers().count(), SCHEDULES);
    let one_more = handover(
        100 + n,
        1_000 * (n + 1),
        WALL0 + HOUR,
        HOUR,
        3,
        Missed::Skip,
    );
    rig.schedule(t(0), one_more.clone());
    assert_eq!(
        rejection(&rig, one_more.spec.task),
        Some(RejectReason::BadSchedule),
        "every schedule slot taken"
    );
    // A newer hand-over of a schedule held replaces it: no slot needed.
    let newer = handover(100, 50_000, WALL0 + HOUR, HOUR, 3, Missed::Skip);
    rig.schedule(t(0), newer.clone());
    assert_eq!(rejection(&rig, newer.spec.task), None);
    // An older one than the one held is stale.
    let older = handover(100, 500, WALL0 + HOUR, HOUR, 3, Missed::Skip);
    rig.schedule(t(0), older.clone());
    assert_eq!(rejection(&rig, older.spec.task), Some(RejectReason::Stale));
    assert_eq!(rig.agent.handovers().count(), SCHEDULES);
}

#[test]
fn a_handover_gets_the_refusals_a_start_gets() {
    let mut rig = Rig::new();
    let mut bad = handover(SCHEDULE, 10, WALL0 + HOUR, HOUR, 3, Missed::Skip);
    bad.spec.argv = StrList::new();
    rig.schedule(t(0), bad.clone());
    assert_eq!(
        rejection(&rig, bad.spec.task),
        Some(RejectReason::InvalidSpec(SpecError::EmptyArgv))
    );
    let mut listed = rig.restart_with(t(1), |agent| {
        agent.set_allowlist(tether_core::allowlist::Allowlist::from_entries(["/opt/ok"]).unwrap())
    });
    let other = handover(SCHEDULE, 20, WALL0 + HOUR, HOUR, 3, Missed::Skip);
    listed.schedule(t(1), other.clone());
    assert_eq!(
        rejection(&listed, other.spec.task),
        Some(RejectReason::NotAllowed)
    );
    listed
        .agent
        .handle_stop(t(2), tether_core::Duration::from_secs(30));
    let mut allowed = handover(SCHEDULE, 30, WALL0 + HOUR, HOUR, 3, Missed::Skip);
    allowed.spec.argv = StrList::from_items(["/opt/ok"]).unwrap();
    listed.schedule(t(2), allowed.clone());
    assert_eq!(
        rejection(&listed, allowed.spec.task),
        Some(RejectReason::Draining)
    );
}

#[test]
fn compaction_keeps_the_handover_and_its_watermark() {
    let mut rig = Big::sized();
    let spec = week(Missed::Skip);
    rig.schedule(t(0), spec.clone());
    let mut runner = Runner::new(0, MINUTE);
    runner.run(&mut rig, 5 * HOUR + 30 * MINUTE);
    assert_eq!(runner.spawned.len(), 5);
    rig.agent.handle_connected(t(5 * HOUR + 30 * MINUTE));
    rig.drain(t(5 * HOUR + 30 * MINUTE));
    let last = rig.agent.last_seq();
    rig.command(t(5 * HOUR + 31 * MINUTE), CommandBody::Ack { up_to: last });
    rig.compact();
    let records: Vec<JournalRecord> = rig
        .journal
        .iter()
        .map(|b| journal::decode(b).unwrap())
        .collect();
    assert!(records.contains(&JournalRecord::Handover(spec.clone())));
    assert!(records.contains(&JournalRecord::Fired {
        schedule: SCHEDULE,
        at_unix_ms: WALL0 + 5 * HOUR,
    }));
    assert!(
        records
            .iter()
            .any(|r| matches!(r, JournalRecord::ClockAnchor { .. }))
    );
    assert!(
        !records.iter().any(|r| matches!(r, JournalRecord::Order(_))),
        "no occurrence held: none of their orders is kept"
    );

    let mut next = rig.restart(t(5 * HOUR + 40 * MINUTE));
    assert_eq!(next.agent.watermark(SCHEDULE), Some(WALL0 + 5 * HOUR));
    runner.spawned.clear();
    runner.running.clear();
    runner.run(&mut next, 8 * HOUR + 30 * MINUTE);
    assert_eq!(indices(&spec, &runner.spawned), vec![5, 6, 7]);
    assert!(next.missed().is_empty());
}

#[test]
fn the_schedule_records_are_appended_to_the_journal_format() {
    // Postcard numbers variants by position: the older records keep their encoding.
    let mut buf = [0u8; journal::MAX_RECORD];
    let identity = journal::encode(&JournalRecord::Identity { journal: 1 }, &mut buf).unwrap();
    assert_eq!(identity, [7, 1]);
    let records = [
        (9, JournalRecord::Handover(week(Missed::RunOnce))),
        (
            10,
            JournalRecord::Fired {
                schedule: 3,
                at_unix_ms: WALL0,
            },
        ),
        (11, JournalRecord::ClockAnchor { unix_ms: WALL0 }),
    ];
    for (tag, record) in records {
        let bytes = journal::encode(&record, &mut buf).unwrap().to_vec();
        assert_eq!(bytes[0], tag, "{record:?}");
        assert_eq!(journal::decode(&bytes), Ok(record));
    }
    // The largest hand-over a command carries fits a record.
    let mut big = week(Missed::RunAll);
    big.spec.argv = StrList::from_items(["/x".repeat(255).as_str()]).unwrap();
    big.spec.env = StrList::from_items(["A=".repeat(255).as_str()]).unwrap();
    while big.runs.push(big.runs[0]).is_ok() {}
    assert!(journal::encode(&JournalRecord::Handover(big), &mut buf).is_ok());
}
