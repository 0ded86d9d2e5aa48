//! The wall clock the agent trusts: nothing starts by the clock (start times, schedule
//! occurrences) until it does: a synchronised kernel, the master's fresh Clock, or a declared
//! clock, never below the anchor; steps, corrections and restarts.

mod rig;

use rig::*;
use tether_core::agent::{CLOCK_MAX_RTT, ClockRule};
use tether_core::journal::{self, JournalRecord};
use tether_core::message::*;
use tether_core::policy::OnDisconnect;

/// The wall clock at `t(0)` in these tests: ten days after the epoch, so a day back is a time.
const W: u64 = 10 * DAY;
const SCHEDULE: u64 = 3;
const BASE: u64 = 500;

/// A rig whose wall clock reads `W` at `t(0)`, under `rule`.
fn rig(rule: ClockRule) -> Rig {
    let mut rig = Rig::new();
    rig.agent.set_clock_rule(rule);
    rig.agent.handle_wall_clock(t(0), W);
    rig
}

/// Hourly occurrences from `W + HOUR`, a day of them.
fn hourly(missed: Missed) -> ScheduleSpec {
    handover(SCHEDULE, BASE, W + HOUR, HOUR, 24, missed)
}

fn at_hour(h: u64) -> u64 {
    h * HOUR
}

/// The occurrence index of each spawn of `spec`'s occurrences.
fn occurrences(spec: &ScheduleSpec, spawned: &[(u64, TaskRef)]) -> Vec<(u64, u64)> {
    spawned
        .iter()
        .filter(|(_, task)| task.task > spec.spec.task.task)
        .map(|&(at, task)| (task.task - spec.spec.task.task - 1, at))
        .collect()
}

fn anchors(rig: &Rig) -> Vec<u64> {
    rig.journal
        .iter()
        .filter_map(|b| match journal::decode(b).unwrap() {
            JournalRecord::ClockAnchor { unix_ms } => Some(unix_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn an_untrusted_clock_holds_start_times_and_occurrences_until_the_kernel_syncs() {
    let mut rig = rig(ClockRule::Ntp);
    assert!(
        !rig.agent.clock_trusted(),
        "ntp: not before the kernel says so"
    );
    let mut timed = spec(1, OnDisconnect::Continue);
    timed.start_at_unix_ms = Some(W + 10 * MINUTE);
    rig.command(t(0), CommandBody::Start(timed.clone()));
    let now_start = spec(2, OnDisconnect::Continue);
    rig.command(t(0), CommandBody::Start(now_start.clone()));
    let schedule = handover(SCHEDULE, BASE, W + 30 * MINUTE, HOUR, 5, Missed::Skip);
    rig.schedule(t(0), schedule.clone());

    let mut runner = Runner::new(0, MINUTE);
    runner.run(&mut rig, at_hour(2));
    assert_eq!(
        runner.spawned.iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![now_start.task],
        "an order without a start time does not need the clock"
    );
    assert_eq!(rig.clock_reports(), vec![false], "reported once");
    assert!(
        rig.missed().is_empty(),
        "nothing counted missed by a clock not trusted"
    );
    assert_eq!(rig.agent.poll_timeout(), None, "nothing armed by it either");
    assert!(anchors(&rig).is_empty());

    // NTP answers at 2:00: the order given in advance starts now, the occurrences of 0:30 and
    // 1:30 are past `late_ms` (Skip), 2:30 runs on time.
    rig.agent.handle_clock_synced(t(at_hour(2)), true);
    runner.run(&mut rig, at_hour(3));
    assert_eq!(rig.clock_reports(), vec![false, true]);
    assert_eq!(runner.spawned[1], (at_hour(2), timed.task));
    assert_eq!(rig.missed(), vec![(0, 2)]);
    assert_eq!(
        occurrences(&schedule, &runner.spawned),
        vec![(2, at_hour(2) + 30 * MINUTE)]
    );
    assert_eq!(anchors(&rig), vec![W + at_hour(2)], "trust established");

    // The kernel loses its synchronisation: held again.
    rig.agent.handle_clock_synced(t(at_hour(3)), false);
    runner.run(&mut rig, at_hour(5));
    assert_eq!(rig.clock_reports(), vec![false, true, false]);
    assert_eq!(occurrences(&schedule, &runner.spawned).len(), 1);
}

#[test]
fn each_start_reports_whether_the_clock_is_trusted() {
    let mut rig = rig(ClockRule::Trusted);
    rig.run_until(t(10));
    assert!(rig.clock_reports().is_empty(), "no change, nothing to say");
    let next = rig.restart(t(20));
    assert_eq!(next.clock_reports(), vec![true]);
    let ntp = next.restart_with(t(30), |a| a.set_clock_rule(ClockRule::Ntp));
    assert_eq!(ntp.clock_reports(), vec![true, false]);
}

#[test]
fn a_fresh_master_clock_trusts_the_clock_and_a_stale_one_is_ignored() {
    let mut rig = rig(ClockRule::Ntp);
    rig.agent.handle_connected(t(0));
    rig.drain(t(0));
    let first = rig.last_heartbeat().unwrap();
    assert_eq!(first.1, 1);

    // Another incarnation's, a heartbeat never sent: ignored.
    rig.master_clock(t(100), W + 100, (first.0 + 1, first.1));
    rig.master_clock(t(100), W + 100, (first.0, 7));
    assert_eq!(rig.agent.stats().stale_clocks, 2);
    assert!(!rig.agent.clock_trusted());

    // An answer to a heartbeat sent longer ago than a round trip may be: ignored (it waited in
    // a broker's queue, say).
    rig.run_until(t(30_000));
    let late = CLOCK_MAX_RTT.as_millis() + 1;
    rig.master_clock(t(late), W + late, first);
    assert_eq!(rig.agent.stats().stale_clocks, 3);
    assert!(!rig.agent.clock_trusted());

    // The answer to a recent one, not only the latest (the next crossed it): within 2 s of the
    // local clock, which it confirms.
    let older = rig.last_heartbeat().unwrap();
    rig.master_heartbeat(t(30_100));
    rig.run_until(t(30_200));
    let latest = rig.last_heartbeat().unwrap();
    assert!(latest.1 > older.1, "answered: {older:?} {latest:?}");
    rig.master_clock(t(30_250), W + 30_250 - 1_500, older);
    assert!(rig.agent.clock_trusted());
    assert_eq!(
        rig.agent.unix_ms(t(30_250)),
        Some(W + 30_250),
        "kept: within tolerance"
    );
    assert_eq!(rig.agent.stats().clock_corrections, 0);
    rig.run_until(t(30_300));
    assert_eq!(rig.clock_reports(), vec![false, true]);
}

#[test]
fn a_clock_set_back_below_the_anchor_stays_untrusted_until_the_master_corrects_it() {
    let mut rig = rig(ClockRule::Trusted);
    let spec = hourly(Missed::Skip);
    rig.schedule(t(0), spec.clone());
    let mut runner = Runner::new(0, MINUTE);
    runner.run(&mut rig, at_hour(5) + 30 * MINUTE);
    assert_eq!(occurrences(&spec, &runner.spawned).len(), 5);
    assert_eq!(
        anchors(&rig).last(),
        Some(&(W + at_hour(5))),
        "hourly, at wake-ups"
    );

    // A power cut; the board boots at 6:00 with its clock a day back.
    let boot = at_hour(6);
    let mut next = rig.restart_with(t(boot), |a| a.handle_wall_clock(t(boot), W + boot - DAY));
    assert!(!next.agent.clock_trusted());
    assert_eq!(next.clock_reports(), vec![false]);
    runner.running.clear();
    runner.spawned.clear();
    runner.now = boot;
    // Two days: the clock passes the anchor after one, and stays untrusted (it was set back).
    runner.run(&mut next, boot + 2 * DAY);
    assert!(runner.spawned.is_empty(), "nothing by a clock set back");
    assert!(next.missed().is_empty());
    assert_eq!(next.clock_reports(), vec![false]);

    // The master is back: its Clock corrects the agent's; the day's occurrences are past, the
    // rest of the hand-over (none left) reported missed, and the hand-over ends.
    let back = boot + 2 * DAY;
    next.agent.handle_connected(t(back));
    next.drain(t(back));
    let hb = next.last_heartbeat().unwrap();
    next.master_clock(t(back), W + back, hb);
    assert!(next.agent.clock_trusted());
    assert_eq!(next.agent.unix_ms(t(back)), Some(W + back));
    assert_eq!(next.agent.stats().clock_corrections, 1);
    next.run_until(t(back + 1_000));
    assert_eq!(next.clock_reports(), vec![false, true]);
    assert_eq!(next.missed(), vec![(5, 19)]);
    assert_eq!(next.end_of(spec.spec.task), Some((Exit::Code(0), None)));
}

#[test]
fn a_synchronised_clock_below_the_anchor_is_not_trusted_until_past_it() {
    let mut rig = rig(ClockRule::Ntp);
    rig.agent.handle_clock_synced(t(0), true);
    // The anchor is written at a wake-up (a heartbeat, an occurrence...).
    rig.agent.handle_timeout(t(0));
    rig.drain(t(0));
    assert_eq!(anchors(&rig), vec![W]);
    let boot = 2 * HOUR;
    let mut next = rig.restart_with(t(boot), |a| {
        a.set_clock_rule(ClockRule::Ntp);
        a.handle_wall_clock(t(boot), W - HOUR);
        a.handle_clock_synced(t(boot), true);
    });
    assert!(!next.agent.clock_trusted(), "whatever NTP says");
    assert_eq!(
        next.agent.poll_timeout(),
        Some(t(boot + HOUR)),
        "the anchor passed"
    );
    next.run_until(t(boot + HOUR));
    assert!(next.agent.clock_trusted());
    assert_eq!(next.clock_reports(), vec![false, true]);
}

/// The agent runs the hourly hand-over with its clock confirmed by the master (`ntp`, kernel
/// not synchronised), connected to a master that sends nothing else.
fn confirmed_then_stepped_forward(rule: ClockRule) -> (Rig, Runner, ScheduleSpec) {
    let mut rig = rig(rule);
    rig.agent.handle_connected(t(0));
    rig.drain(t(0));
    let hb = rig.last_heartbeat().unwrap();
    rig.master_clock(t(10), W + 10, hb);
    assert!(rig.agent.clock_trusted());
    let spec = hourly(Missed::Skip);
    rig.schedule(t(20), spec.clone());
    let mut runner = Runner::new(20, MINUTE);
    runner.run(&mut rig, at_hour(2) + 30 * MINUTE);
    assert_eq!(
        occurrences(&spec, &runner.spawned),
        vec![(0, at_hour(1)), (1, at_hour(2))]
    );
    // Something sets the clock a day ahead.
    let now = at_hour(2) + 30 * MINUTE;
    rig.agent.handle_wall_clock(t(now), W + now + DAY);
    (rig, runner, spec)
}

#[test]
fn a_clock_stepped_forward_a_day_waits_for_the_masters_clock() {
    let (mut rig, mut runner, spec) = confirmed_then_stepped_forward(ClockRule::Ntp);
    // The step voids the master's confirmation: nothing runs, nothing is counted missed.
    assert!(!rig.agent.clock_trusted());
    let stepped = at_hour(2) + 30 * MINUTE;
    runner.run(&mut rig, stepped + 5 * MINUTE);
    // (Trusted from before the first wake-up: no report of the untrusted start.)
    assert_eq!(rig.clock_reports(), vec![false]);
    assert_eq!(runner.spawned.len(), 2);
    assert!(rig.missed().is_empty());

    // The master's next Clock: the agent follows the master's time, a day behind its kernel's,
    // and the day the step jumped over runs at its times: 3:00 at 3:00, none early or twice.
    let now = stepped + 5 * MINUTE;
    rig.master_clock(t(now), W + now, runner.heartbeat.unwrap());
    assert!(rig.agent.clock_trusted());
    assert_eq!(rig.agent.unix_ms(t(now)), Some(W + now));
    runner.run(&mut rig, at_hour(6));
    assert_eq!(
        occurrences(&spec, &runner.spawned),
        vec![
            (0, at_hour(1)),
            (1, at_hour(2)),
            (2, at_hour(3)),
            (3, at_hour(4)),
            (4, at_hour(5)),
            (5, at_hour(6)),
        ]
    );
    assert!(rig.missed().is_empty());
    assert_eq!(rig.clock_reports(), vec![false, true]);
}

#[test]
fn a_declared_clock_stepped_forward_a_day_is_believed_until_the_master_corrects_it() {
    // `clock = "trusted"`: the step is believed. The day it jumps over is late at once and
    // reported missed (Skip); the master's Clock sets the time back, and those occurrences,
    // at or before the watermark, never run; the next runs at its time by the master's clock.
    let (mut rig, mut runner, spec) = confirmed_then_stepped_forward(ClockRule::Trusted);
    assert!(rig.agent.clock_trusted());
    let stepped = at_hour(2) + 30 * MINUTE;
    runner.run(&mut rig, stepped + 5 * MINUTE);
    assert_eq!(
        rig.missed(),
        vec![(2, 22)],
        "3:00 to the day's last, by the stepped clock"
    );
    assert_eq!(rig.end_of(spec.spec.task), Some((Exit::Code(0), None)));
    let now = stepped + 5 * MINUTE;
    rig.master_clock(t(now), W + now, runner.heartbeat.unwrap());
    assert_eq!(rig.agent.unix_ms(t(now)), Some(W + now));
    runner.run(&mut rig, at_hour(30));
    assert_eq!(runner.spawned.len(), 2, "none of the day runs");
}

/// Occurrences held while the clock is not trusted belong to the hand-over that held them: a
/// replacement hand-over (the master's next plan, from its own clock on) must not make them
/// vanish. They should be reported missed (or run, by the rule) once trust returns.
#[test]
#[ignore = "agent bug: a replacement hand-over drops the occurrences its predecessor held \
            while the clock was not trusted (neither reported missed nor run)"]
fn a_replacement_keeps_the_occurrences_held_for_an_untrusted_clock_regression() {
    let mut rig = rig(ClockRule::Ntp);
    let first = handover(SCHEDULE, BASE, W + 30 * MINUTE, HOUR, 5, Missed::Skip);
    rig.schedule(t(0), first.clone());
    let mut runner = Runner::new(0, MINUTE);
    runner.run(&mut rig, at_hour(2));
    assert!(runner.spawned.is_empty(), "held: the clock is not trusted");
    // The master's next plan, from 2:30 on, replaces it before trust returns.
    let second = handover(
        SCHEDULE,
        BASE + 100,
        W + at_hour(2) + 30 * MINUTE,
        HOUR,
        3,
        Missed::Skip,
    );
    rig.schedule(t(at_hour(2)), second);
    rig.agent.handle_clock_synced(t(at_hour(2) + MINUTE), true);
    runner.run(&mut rig, at_hour(3));
    assert_eq!(
        rig.missed(),
        vec![(0, 2)],
        "0:30 and 1:30 of the first hand-over"
    );
}
