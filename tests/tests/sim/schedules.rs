//! Schedules without the master: the real master core hands each of three agents an hourly
//! schedule (crontab `0 * * * *`, UTC) for its horizon (7 days), goes down as soon as the
//! hand-overs are held, and comes back days of virtual time later. Every occurrence of the
//! outage runs exactly once on its agent, on time; an agent crash-restarted in the middle
//! reports the hours it was down as missed (skip rule) and runs none of them late or twice;
//! once the master is back and the world has settled, every occurrence that ran is a task in
//! its store with its result, and every missed one is counted.
//!
//! ```text
//! cargo test -p tether-tests --test sim schedules:: -- --nocapture
//! ```

use std::collections::BTreeMap;

use tether_core::message::EventKind;
use tether_core::{Duration, Instant};
use tether_master::calendar::CalendarSpec;
use tether_master::core::{PolicyOverrides, ScheduleRequest};
use tether_master::model::{HandoverState, Missed, TaskState};
use tether_tests::sim::procs::Program;
use tether_tests::sim::system::System;
use tether_tests::sim::world::{Step, World, WorldConfig, wall_ms};

const REPLAY: &str = "cargo test -p tether-tests --test sim schedules:: -- --nocapture";
const AGENTS: usize = 3;
const HOUR_MS: u64 = 3_600_000;
const DAY: Duration = Duration::from_secs(24 * 3600);
/// How long after its time an occurrence may start and still count as on time. In virtual
/// time the agent's timer fires at the occurrence's time and the spawn waits only for its
/// durable journal record (the simulated disk's delay, at most 20 ms): the runs measure that.
const ON_TIME: Duration = Duration::from_secs(5);

fn at(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Three agents; the master heartbeats every 10 minutes and the agents follow its period, also
/// while it is away. With the default 10 s the agents' heartbeats and their retransmitted
/// unacknowledged events (a window of 32, every period) make a week about 40 times slower to
/// simulate, and test nothing more here.
fn world(seed: u64) -> System {
    let mut config = WorldConfig::new(seed, AGENTS).replay(REPLAY);
    config.master_period = secs(600);
    World::system(config)
}

fn name(i: usize) -> String {
    format!("hourly-{i}")
}

/// On the hour, on agent `pi-i`: a 2 s task; occurrences missed while the agent was down are
/// skipped.
fn hourly(i: usize) -> ScheduleRequest {
    ScheduleRequest {
        name: name(i),
        calendar: CalendarSpec {
            cron: Some("0 * * * *".into()),
            time_zone: Some("UTC".into()),
            ..CalendarSpec::default()
        },
        agent: Some(format!("pi-{i}")),
        argv: Program::new(secs(2))
            .argv()
            .iter()
            .filter_map(|s| s.ok().map(str::to_owned))
            .collect(),
        policy: PolicyOverrides::default(),
        missed: Some(Missed::Skip),
        ..ScheduleRequest::default()
    }
}

/// A crash of one agent during the outage: which, when, for how long.
struct Crash {
    agent: usize,
    at: Instant,
    down: Duration,
}

/// What a run saw: the outage, and per agent the lateness of each start by its hour.
struct Outage {
    down: Instant,
    up: Instant,
    ran: Vec<BTreeMap<u64, Duration>>,
}

/// The three schedules defined at 10 s; the master goes down the moment every hand-over is
/// held and comes back `outage` later; `crash` kills and restarts an agent meanwhile. Runs to
/// the master's return and checks the starts (each hour of the outage once on every agent,
/// but those a crashed agent was down for), then lets the world settle.
fn hourly_through_an_outage(seed: u64, outage: Duration, crash: Option<Crash>) -> (System, Outage) {
    let started = std::time::Instant::now();
    let mut w = world(seed);
    for i in 0..AGENTS {
        w.put_schedule(at(10), hourly(i));
    }
    let mut down = at(11);
    let all_held = |w: &System| {
        let held = w.live_handovers();
        held.len() == AGENTS && held.iter().all(|h| h.state == HandoverState::Held)
    };
    while !all_held(&w) {
        assert!(
            down < at(120),
            "hand-overs not held: {:?}",
            w.live_handovers()
        );
        down = down.saturating_add(Duration::from_millis(100));
        w.run_until(down);
    }
    for h in w.live_handovers() {
        // Planned at 22:13:30 UTC: from 23:00 that day to 22:00 seven days on.
        assert_eq!(h.occurrences(), 7 * 24, "{h:?}");
    }
    let up = down.saturating_add(outage);
    w.schedule(down, Step::MasterDown);
    w.schedule(up, Step::MasterUp);
    if let Some(c) = &crash {
        w.schedule(c.at, Step::CrashAgent(c.agent));
        w.schedule(c.at.saturating_add(c.down), Step::RestartAgent(c.agent));
    }
    w.run_until(up);
    let ran: Vec<BTreeMap<u64, Duration>> = (0..AGENTS)
        .map(|i| {
            let by_hour = starts_by_hour(&w, i);
            let mut expected = hours_between(down, up);
            if let Some(c) = crash.as_ref().filter(|c| c.agent == i) {
                let gap = hours_between(c.at, c.at.saturating_add(c.down));
                expected.retain(|h| !gap.contains(h));
            }
            let hours: Vec<u64> = by_hour.keys().copied().collect();
            assert_eq!(hours, expected, "pi-{i}: each hour it was up started once");
            by_hour
        })
        .collect();
    let mut lateness: Vec<Duration> = ran.iter().flat_map(|r| r.values().copied()).collect();
    let hours = outage.as_secs() / 3600;
    report(&format!("{hours} h without the master"), &mut lateness);
    w.heal(secs(600));
    w.expect(w.check_delivered());
    w.expect(w.master().check_store());
    println!(
        "{hours} h of virtual time simulated in {:.1?} ({} steps)",
        started.elapsed(),
        w.steps()
    );
    (w, Outage { down, up, ran })
}

/// The hours in `(from, to]`, as wall-clock milliseconds (the occurrence times).
fn hours_between(from: Instant, to: Instant) -> Vec<u64> {
    let first = wall_ms(from).div_ceil(HOUR_MS);
    let last = wall_ms(to) / HOUR_MS;
    (first..=last).map(|h| h * HOUR_MS).collect()
}

/// Agent `i`'s starts by hour: each start belongs to the latest hour at or before it and is at
/// most [`ON_TIME`] after it; no hour has two. The lateness of each start.
fn starts_by_hour(w: &System, i: usize) -> BTreeMap<u64, Duration> {
    let mut by_hour = BTreeMap::new();
    for (task, when) in w.spawns_of(i) {
        let ms = wall_ms(when);
        let hour = ms / HOUR_MS * HOUR_MS;
        let late = Duration::from_millis(ms - hour);
        assert!(
            late <= ON_TIME,
            "pi-{i}: attempt {} started {late:?} after its hour",
            task.attempt
        );
        let twice = by_hour.insert(hour, late);
        assert!(twice.is_none(), "pi-{i}: the hour {hour} started twice");
    }
    by_hour
}

/// Every occurrence agent `i` ran is one succeeded task in the store, its occurrence time the
/// hour its agent started it in, and there is no other.
fn check_stored(w: &System, i: usize, ran: &BTreeMap<u64, Duration>) {
    let mut stored = BTreeMap::new();
    for t in w.occurrence_tasks(&name(i)) {
        let o = t
            .occurrence
            .expect("an occurrence task names its occurrence");
        assert_eq!(t.state, TaskState::Succeeded, "pi-{i}: {t:?}");
        let twice = stored.insert(o.at_ms, t.id);
        assert!(twice.is_none(), "pi-{i}: two tasks for {}", o.at_ms);
    }
    let stored: Vec<u64> = stored.into_keys().collect();
    let ran: Vec<u64> = ran.keys().copied().collect();
    assert_eq!(
        stored, ran,
        "pi-{i}: occurrence tasks stored vs. hours started"
    );
}

fn report(label: &str, lateness: &mut [Duration]) {
    lateness.sort();
    let at = |p: usize| lateness[(lateness.len() - 1) * p / 100].as_millis();
    println!(
        "{label}: {} starts, late by p50 {} ms, p99 {} ms, max {} ms",
        lateness.len(),
        at(50),
        at(99),
        at(100)
    );
}

/// Down 3 hours: back, the master stores the 3 × 3 occurrences that ran as succeeded tasks.
#[test]
fn a_three_hour_master_outage_with_hourly_schedules() {
    let (w, run) = hourly_through_an_outage(59, secs(3 * 3600), None);
    for (i, ran) in run.ran.iter().enumerate() {
        assert_eq!(ran.len(), 3);
        check_stored(&w, i, ran);
    }
}

/// Down 3 days, less than half the horizon: back, the master still follows the hand-overs
/// it made and stores the 3 × 72 occurrences that ran.
///
/// The agents resend their unacknowledged events every heartbeat period while the master is
/// away, and the broker's queue for the master's session keeps the newest 1,000: the master
/// gets some occurrences' `Started` and `Finished` before their `Accepted`, and must still
/// make each one task, succeeded.
#[test]
fn a_master_outage_shorter_than_half_the_horizon() {
    let (w, run) = hourly_through_an_outage(60, 3 * DAY, None);
    for (i, ran) in run.ran.iter().enumerate() {
        assert_eq!(ran.len(), 3 * 24);
        check_stored(&w, i, ran);
    }
}

/// Three agents, one hourly schedule each, the master down for the 7 days the hand-overs
/// cover: 3 × 168 starts, each on time, none twice; back, the master stores all 504 as
/// succeeded tasks.
///
/// Back after more than half the horizon, the master re-plans each schedule at once: the new
/// hand-over replaces the one the agent ran the outage on before the agent's replay arrives,
/// and that replay must still make the outage's occurrences tasks.
#[test]
fn a_week_long_master_outage_with_hourly_schedules_on_three_agents() {
    let (w, run) = hourly_through_an_outage(61, 7 * DAY, None);
    assert_eq!(hours_between(run.down, run.up).len(), 7 * 24);
    for (i, ran) in run.ran.iter().enumerate() {
        assert_eq!(ran.len(), 7 * 24);
        check_stored(&w, i, ran);
    }
    let core = w.master().core().expect("the master is up");
    assert_eq!(core.stats().occurrences_missed, 0);
}

/// The same week, `pi-1` killed at 00:10 UTC on the fourth night and started again 3 h 20 min
/// later: the three hours it was down are reported missed in one `Missed` event and never
/// run; the others run once, on time; the master, back, counts the three missed and stores
/// the 165 that ran, though the hand-over that reported them was replaced by then.
#[test]
fn an_agent_restarted_in_the_middle_of_the_week_skips_the_hours_it_was_down() {
    // The virtual clock starts at 22:13:20 UTC: 1 h 56 min 40 s later it is 00:10.
    let crash = Crash {
        agent: 1,
        at: at(3 * 24 * 3600 + 7000),
        down: secs(3 * 3600 + 20 * 60),
    };
    let gap = hours_between(crash.at, crash.at.saturating_add(crash.down));
    assert_eq!(gap.len(), 3);
    let (w, run) = hourly_through_an_outage(62, 7 * DAY, Some(crash));
    let missed: Vec<(u64, u64)> = w
        .ledger()
        .durable(1)
        .values()
        .filter_map(|e| match e.kind {
            EventKind::Missed { first, count, .. } => Some((first, count)),
            _ => None,
        })
        .collect();
    assert_eq!(missed.len(), 1, "one report of the gap: {missed:?}");
    assert_eq!(missed[0].1, 3, "{missed:?}");
    for (i, ran) in run.ran.iter().enumerate() {
        check_stored(&w, i, ran);
    }
    assert_eq!(run.ran[1].len(), 7 * 24 - 3);
    let core = w.master().core().expect("the master is up");
    assert_eq!(core.stats().occurrences_missed, 3);
}
