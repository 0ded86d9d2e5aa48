//! Chained orders (workflow steps): `StartAfter` held until its predecessor ends on this agent,
//! then started or skipped by its `run_if`, with the master silent, across restarts and
//! compactions.

mod rig;

use rig::*;
use tether_core::Duration;
use tether_core::agent::Phase;
use tether_core::journal::{self, JournalRecord};
use tether_core::message::*;
use tether_core::policy::OnDisconnect;

/// Wall-clock milliseconds of the rig's `t(0)`.
const WALL0: u64 = 1_000_000;

fn step(attempt: u64) -> TaskSpec {
    spec(attempt, OnDisconnect::Continue)
}

fn task(attempt: u64) -> TaskRef {
    step(attempt).task
}

fn start<const T: usize, const S: usize>(rig: &mut Rig<T, S>, now: u64, spec: TaskSpec) {
    rig.command(t(now), CommandBody::Start(spec));
}

/// Sends `spec` as a step after attempt `predecessor`.
fn start_after<const T: usize, const S: usize>(
    rig: &mut Rig<T, S>,
    now: u64,
    spec: TaskSpec,
    predecessor: u64,
    run_if: RunIf,
) {
    let after = After {
        task: task(predecessor),
        run_if,
    };
    rig.command(t(now), CommandBody::StartAfter { spec, after });
}

/// The process of `attempt` starts and ends with `exit` at `now`.
fn run<const T: usize, const S: usize>(rig: &mut Rig<T, S>, now: u64, attempt: u64, exit: Exit) {
    rig.agent.handle_process_started(t(now), task(attempt), 100);
    rig.agent.handle_process_exited(t(now), task(attempt), exit);
    rig.drain(t(now));
}

/// The attempts spawned since the last look, in order.
fn spawned<const T: usize, const S: usize>(rig: &mut Rig<T, S>) -> Vec<u64> {
    spawns(&rig.take_actions())
        .into_iter()
        .map(|t| t.attempt)
        .collect()
}

/// Every `Finished` event journaled: (attempt, exit), in order.
fn ends<const T: usize, const S: usize>(rig: &Rig<T, S>) -> Vec<(u64, Exit)> {
    rig.events()
        .into_iter()
        .filter_map(|e| match e {
            EventKind::Finished { task, exit, .. } => Some((task.attempt, exit)),
            _ => None,
        })
        .collect()
}

fn phase(rig: &Rig, attempt: u64) -> Option<Phase> {
    rig.agent
        .tasks()
        .find(|(t, _)| t.attempt == attempt)
        .map(|(_, p)| p)
}

#[test]
fn a_three_step_chain_runs_in_order_with_the_master_silent() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    start_after(&mut rig, 0, step(2), 1, RunIf::Succeeded);
    start_after(&mut rig, 0, step(3), 2, RunIf::Succeeded);
    assert_eq!(spawned(&mut rig), vec![1]);
    // Waiting steps are held, listed, and armed for nothing.
    assert_eq!(phase(&rig, 2), Some(Phase::Held));
    assert_eq!(
        rig.agent.waiting_for(task(3)).map(|a| a.task),
        Some(task(2))
    );
    let accepted = |rig: &Rig| {
        rig.events()
            .iter()
            .filter(|e| matches!(e, EventKind::Accepted { .. }))
            .count()
    };
    assert_eq!(accepted(&rig), 3);

    // No word from the master from here on.
    rig.run_until(t(60_000));
    assert!(spawned(&mut rig).is_empty());
    run(&mut rig, 60_000, 1, Exit::Code(0));
    assert_eq!(
        spawned(&mut rig),
        vec![2],
        "the next step starts in the same input"
    );
    assert_eq!(rig.agent.waiting_for(task(2)), None);
    run(&mut rig, 70_000, 2, Exit::Code(0));
    assert_eq!(spawned(&mut rig), vec![3]);
    run(&mut rig, 80_000, 3, Exit::Code(0));
    assert_eq!(
        ends(&rig),
        vec![(1, Exit::Code(0)), (2, Exit::Code(0)), (3, Exit::Code(0))]
    );
    assert_eq!(rig.agent.tasks().count(), 0);
}

#[test]
fn a_waiting_step_ignores_its_start_time_until_its_predecessor_ends() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    let mut due_soon = step(2);
    due_soon.start_at_unix_ms = Some(WALL0 + 1_000);
    start_after(&mut rig, 0, due_soon, 1, RunIf::Succeeded);
    let mut due_later = step(3);
    due_later.start_at_unix_ms = Some(WALL0 + 100_000);
    start_after(&mut rig, 0, due_later, 2, RunIf::Succeeded);
    rig.take_actions();
    rig.run_until(t(10_000));
    assert!(
        spawned(&mut rig).is_empty(),
        "not started by its start time"
    );

    // Released after its start time: at once. Released before it: at its start time.
    run(&mut rig, 10_000, 1, Exit::Code(0));
    assert_eq!(spawned(&mut rig), vec![2]);
    run(&mut rig, 20_000, 2, Exit::Code(0));
    assert!(spawned(&mut rig).is_empty());
    assert_eq!(rig.agent.poll_timeout(), Some(t(100_000)));
    rig.run_until(t(100_000));
    assert_eq!(spawned(&mut rig), vec![3]);
}

#[test]
fn a_failed_step_skips_the_steps_that_need_its_success() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    start_after(&mut rig, 0, step(2), 1, RunIf::Succeeded);
    // A skipped step satisfies no `run_if`, not even `Finished`.
    start_after(&mut rig, 0, step(3), 2, RunIf::Finished);
    rig.take_actions();
    run(&mut rig, 10, 1, Exit::Code(1));
    assert!(spawned(&mut rig).is_empty());
    assert_eq!(
        ends(&rig),
        vec![(1, Exit::Code(1)), (2, Exit::Skipped), (3, Exit::Skipped)]
    );
    assert!(rig.events().contains(&EventKind::Finished {
        task: task(2),
        exit: Exit::Skipped,
        cause: None,
        output_dropped: 0,
    }));
    assert_eq!(rig.agent.tasks().count(), 0);
}

#[test]
fn a_failed_step_runs_the_steps_that_need_it_finished() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    start_after(&mut rig, 0, step(2), 1, RunIf::Finished);
    start_after(&mut rig, 0, step(3), 1, RunIf::Succeeded);
    rig.take_actions();
    run(&mut rig, 10, 1, Exit::Signal(9));
    assert_eq!(spawned(&mut rig), vec![2]);
    assert_eq!(
        ends(&rig),
        vec![(1, Exit::Signal(9)), (3, Exit::Skipped)],
        "the step that needed success is skipped"
    );
}

#[test]
fn a_step_after_an_unknown_predecessor_is_rejected_once() {
    let mut rig = Rig::new();
    start_after(&mut rig, 0, step(2), 1, RunIf::Finished);
    start_after(&mut rig, 10, step(2), 1, RunIf::Finished);
    assert_eq!(
        rig.events(),
        vec![EventKind::Rejected {
            task: task(2),
            reason: RejectReason::PredecessorUnknown,
        }]
    );
    assert_eq!(rig.agent.stats().rejected_starts, 1);
    assert_eq!(rig.agent.stats().duplicate_starts, 1);
    assert!(spawned(&mut rig).is_empty());
    assert_eq!(rig.agent.tasks().count(), 0);
}

#[test]
fn a_step_after_a_remembered_end_is_decided_at_once() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    start(&mut rig, 0, step(2));
    run(&mut rig, 10, 1, Exit::Code(0));
    run(&mut rig, 10, 2, Exit::Code(3));
    rig.take_actions();

    start_after(&mut rig, 20, step(3), 1, RunIf::Succeeded);
    assert_eq!(spawned(&mut rig), vec![3]);
    start_after(&mut rig, 20, step(4), 2, RunIf::Succeeded);
    // The skip is remembered in turn.
    start_after(&mut rig, 20, step(5), 4, RunIf::Finished);
    assert!(spawned(&mut rig).is_empty());
    let events = rig.events();
    for skipped in [4, 5] {
        assert!(events.contains(&EventKind::Accepted {
            task: task(skipped)
        }));
    }
    assert_eq!(
        ends(&rig)[2..],
        [(4, Exit::Skipped), (5, Exit::Skipped)],
        "skipped when they arrive"
    );

    // A remembered end that allows the step: a start time is kept as for any held order.
    let mut later = step(6);
    later.start_at_unix_ms = Some(WALL0 + 5_000);
    start_after(&mut rig, 30, later, 1, RunIf::Finished);
    assert!(spawned(&mut rig).is_empty());
    assert_eq!(rig.agent.waiting_for(task(6)), None);
    rig.run_until(t(5_000));
    assert_eq!(spawned(&mut rig), vec![6]);
}

#[test]
fn a_retransmitted_step_is_answered_once() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    start_after(&mut rig, 0, step(2), 1, RunIf::Succeeded);
    start_after(&mut rig, 5, step(2), 1, RunIf::Succeeded);
    run(&mut rig, 10, 1, Exit::Code(0));
    start_after(&mut rig, 15, step(2), 1, RunIf::Succeeded);
    let answers = rig
        .events()
        .iter()
        .filter(|e| {
            matches!(e, EventKind::Accepted { task: t } | EventKind::Rejected { task: t, .. }
                if t.attempt == 2)
        })
        .count();
    assert_eq!(answers, 1);
    assert_eq!(rig.agent.stats().duplicate_starts, 2);
    assert_eq!(spawned(&mut rig), vec![1, 2], "started once");
}

#[test]
fn killing_a_waiting_step_cancels_it_and_skips_its_dependents() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    start_after(&mut rig, 0, step(2), 1, RunIf::Succeeded);
    start_after(&mut rig, 0, step(3), 2, RunIf::Finished);
    rig.take_actions();
    rig.command(t(5), CommandBody::Kill { task: task(2) });
    assert!(rig.events().contains(&EventKind::Finished {
        task: task(2),
        exit: Exit::Cancelled,
        cause: Some(KillCause::Requested),
        output_dropped: 0,
    }));
    assert_eq!(ends(&rig), vec![(2, Exit::Cancelled), (3, Exit::Skipped)]);
    run(&mut rig, 10, 1, Exit::Code(0));
    assert!(spawned(&mut rig).is_empty());
    assert_eq!(rig.agent.tasks().count(), 0);
}

#[test]
fn a_step_released_during_a_stop_waits_for_the_next_start() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    start_after(&mut rig, 0, step(2), 1, RunIf::Succeeded);
    rig.agent.handle_process_started(t(1), task(1), 100);
    rig.agent.handle_stop(t(2), Duration::from_millis(60_000));
    rig.drain(t(2));
    assert!(!rig.agent.is_stopped(), "the running step holds the stop");
    rig.take_actions();
    rig.agent
        .handle_process_exited(t(3), task(1), Exit::Code(0));
    rig.drain(t(3));
    assert!(spawned(&mut rig).is_empty(), "a drain begins no new work");
    assert!(rig.agent.is_stopped(), "a held step does not hold the stop");

    let mut next = rig.restart(t(10));
    assert_eq!(spawned(&mut next), vec![2]);
}

#[test]
fn a_restart_loses_the_running_step_and_decides_its_dependents() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    start_after(&mut rig, 0, step(2), 1, RunIf::Succeeded);
    start_after(&mut rig, 0, step(3), 2, RunIf::Finished);
    start_after(&mut rig, 0, step(4), 1, RunIf::Finished);
    rig.agent.handle_process_started(t(1), task(1), 100);
    rig.drain(t(1));

    let mut next = rig.restart(t(5));
    assert_eq!(
        ends(&next),
        vec![(1, Exit::Lost), (2, Exit::Skipped), (3, Exit::Skipped)]
    );
    assert_eq!(spawned(&mut next), vec![4], "a lost step has finished");
    // Retransmissions of any of them are not answered again.
    start_after(&mut next, 6, step(2), 1, RunIf::Succeeded);
    start(&mut next, 6, step(1));
    assert_eq!(next.agent.stats().duplicate_starts, 2);
}

#[test]
fn a_restart_resumes_a_chain_whose_predecessor_ended_durably() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    let mut timed = step(2);
    timed.start_at_unix_ms = Some(WALL0 + 50_000);
    start_after(&mut rig, 0, timed, 1, RunIf::Succeeded);
    start_after(&mut rig, 0, step(3), 2, RunIf::Succeeded);
    run(&mut rig, 10, 1, Exit::Code(0));
    rig.take_actions();

    let mut next = rig.restart(t(20));
    assert!(spawned(&mut next).is_empty());
    assert_eq!(next.agent.waiting_for(task(2)), None, "released before");
    assert_eq!(
        next.agent.waiting_for(task(3)).map(|a| a.task),
        Some(task(2))
    );
    next.run_until(t(50_000));
    assert_eq!(spawned(&mut next), vec![2]);
    run(&mut next, 60_000, 2, Exit::Code(0));
    assert_eq!(spawned(&mut next), vec![3]);
}

#[test]
fn a_released_step_survives_a_restart_after_its_predecessors_end_is_forgotten() {
    let mut rig = Rig::new();
    start(&mut rig, 0, step(1));
    let mut timed = step(2);
    timed.start_at_unix_ms = Some(WALL0 + 500_000);
    start_after(&mut rig, 0, timed, 1, RunIf::Succeeded);
    run(&mut rig, 10, 1, Exit::Code(0));
    // More attempts end than the agent remembers ends of.
    let others = tether_core::agent::RECENT_ENDS as u64 + 1;
    for attempt in 10..10 + others {
        start(&mut rig, 20, step(attempt));
        run(&mut rig, 20, attempt, Exit::Code(0));
    }
    rig.take_actions();

    let mut next = rig.restart(t(100));
    assert!(!ends(&next).contains(&(2, Exit::Skipped)));
    next.run_until(t(500_000));
    assert_eq!(spawned(&mut next), vec![2]);
}

#[test]
fn compaction_keeps_a_wait_and_drops_an_ended_one() {
    let mut rig = Rig::new();
    let mut first = step(1);
    first.start_at_unix_ms = Some(WALL0 + 10_000);
    start(&mut rig, 0, first);
    start_after(&mut rig, 0, step(2), 1, RunIf::Succeeded);
    let mut timed = step(4);
    timed.start_at_unix_ms = Some(WALL0 + 20_000);
    start(&mut rig, 0, step(3));
    start_after(&mut rig, 0, timed, 3, RunIf::Succeeded);
    run(&mut rig, 5, 3, Exit::Code(0));
    // The master has every event: the compaction keeps none of them.
    rig.agent.handle_connected(t(6));
    rig.drain(t(6));
    let last = rig.agent.last_seq();
    rig.command(t(7), CommandBody::Ack { up_to: last });
    rig.take_actions();
    rig.compact();
    let waits: Vec<_> = rig
        .journal
        .iter()
        .filter_map(|bytes| match journal::decode(bytes).unwrap() {
            JournalRecord::After { task, after } => Some((task.attempt, after.task.attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![(2, 1)], "only the step still waiting");

    let mut next = rig.restart(t(8));
    assert!(ends(&next).is_empty(), "nothing decided at restart");
    assert_eq!(
        next.agent.waiting_for(task(2)).map(|a| a.task),
        Some(task(1))
    );
    next.run_until(t(10_000));
    assert_eq!(spawned(&mut next), vec![1]);
    run(&mut next, 11_000, 1, Exit::Code(0));
    assert_eq!(spawned(&mut next), vec![2]);
    next.run_until(t(20_000));
    assert_eq!(spawned(&mut next), vec![4]);
}

/// At the most slots an agent may hold, a whole chain decided in one input fits the action
/// queue, whether by a failed first step or by a restart that lost it.
#[test]
fn a_cascade_over_32_slots_loses_no_action() {
    const TASKS: usize = 32;
    let mut rig = Rig::<TASKS, 64>::sized();
    start(&mut rig, 0, step(1));
    for attempt in 2..=TASKS as u64 {
        start_after(&mut rig, 0, step(attempt), attempt - 1, RunIf::Succeeded);
    }
    assert_eq!(rig.agent.tasks().count(), TASKS);
    rig.agent.handle_process_started(t(1), task(1), 100);
    rig.drain(t(1));

    let restarted = rig.restart(t(2));
    assert_eq!(restarted.agent.stats().lost_actions, 0);
    assert_eq!(ends(&restarted).len(), TASKS);
    assert_eq!(restarted.agent.tasks().count(), 0);

    rig.agent.handle_connected(t(3));
    rig.agent
        .handle_process_exited(t(3), task(1), Exit::Code(1));
    rig.drain(t(3));
    assert_eq!(rig.agent.stats().lost_actions, 0);
    let ends = ends(&rig);
    assert_eq!(ends.len(), TASKS);
    assert!(ends[1..].iter().all(|&(_, exit)| exit == Exit::Skipped));
    assert_eq!(rig.agent.tasks().count(), 0);
}

#[test]
fn the_after_record_is_appended_to_the_journal_format() {
    // Postcard numbers variants by position: the older records keep their encoding.
    let mut buf = [0u8; journal::MAX_RECORD];
    let identity = journal::encode(&JournalRecord::Identity { journal: 1 }, &mut buf).unwrap();
    assert_eq!(identity, [7, 1]);
    let record = JournalRecord::After {
        task: task(2),
        after: After {
            task: task(1),
            run_if: RunIf::Finished,
        },
    };
    let bytes = journal::encode(&record, &mut buf).unwrap().to_vec();
    assert_eq!(bytes[0], 8);
    assert_eq!(journal::decode(&bytes), Ok(record));
}
