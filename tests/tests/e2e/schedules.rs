//! Schedules with the real master and real agents on loopback: an agent runs its hand-over
//! on time while the master is frozen, runs no occurrence twice across its own kill -9, and
//! runs by the master's clock when its own is a day off (libfaketime).
//!
//! Every occurrence appends a mark (`NAME UNIX_NS`, the real clock: tasks start from an empty
//! environment, so no `LD_PRELOAD` reaches them) to a file the test reads, so what ran, how
//! often and when is seen without the master. The agents keep the default `clock = "ntp"`:
//! this host's kernel may say the clock is not NTP-synchronised (a container), and then an
//! agent starts nothing by its clock until the master's clock, sent in answer to its first
//! fresh heartbeat, confirms it; each test waits for that trust before it counts.
//!
//! The lateness of each start after its occurrence time is printed (p50/p99/max): figures, not
//! timed assertions (only a loose sanity bound). `TETHER_BENCH_SCHEDULE=SECONDS` sets the
//! master's freeze of the first test (30 s by default; `scripts/bench-schedules.sh` runs 60 s).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tether_tests::harness::agent::{AgentHome, AgentOptions};
use tether_tests::harness::fleet::{Fleet, FleetAgent};
use tether_tests::harness::orders::{Markers, unix_ns};
use tether_tests::harness::schedules::{OnTime, Slots, every, wait_clock_trusted};
use tether_tests::harness::tempdir::TempDir;

const EVERY_MS: u64 = 2_000;
/// The sanity bound on a start's lateness: a start this late is broken, not slow.
const SANE: Duration = Duration::from_secs(10);
const MISSED: &str = "tether_schedule_occurrences_missed_total";

/// How long the first test freezes the master.
fn outage() -> Duration {
    let secs = std::env::var("TETHER_BENCH_SCHEDULE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// `sh -c` appending mark `name`.
fn marking<'a>(marks: &Markers, name: &str, script: &'a mut String) -> [&'a str; 3] {
    *script = marks.mark(name);
    ["/bin/sh", "-c", script.as_str()]
}

/// The marks named `name`, by slot, with their lateness.
fn slots_of(marks: &Markers, name: &str, slots: &Slots) -> BTreeMap<u64, Duration> {
    let mine: Vec<_> = marks
        .read()
        .into_iter()
        .filter(|m| m.name == name)
        .collect();
    slots.by_slot(&mine)
}

/// The slots from 0 to the last that ran and did not.
fn gaps(ran: &BTreeMap<u64, Duration>) -> Vec<u64> {
    let last = ran.keys().next_back().copied().unwrap_or(0);
    (0..=last).filter(|k| !ran.contains_key(k)).collect()
}

/// Pauses schedule `name` and waits until its agent has let its hand-overs go: no occurrence
/// starts after this returns, so the marks are final.
async fn stop(fleet: &Fleet, name: &str) {
    let m = fleet.master();
    m.pause_schedule(name, true);
    let path = format!("/api/schedules/{name}");
    m.wait_for(&format!("{name}: hand-overs ended"), &path, |v| {
        let all = v["handovers"].as_array()?;
        all.iter().all(|h| h["state"] == "ended").then_some(())
    })
    .await;
}

/// Every occurrence that ran (`ran`, by slot) is a succeeded task of schedule `name`, at its
/// slot's time, and there is no other; the agent's own start times, late by how much.
async fn check_stored(fleet: &Fleet, name: &str, slots: &Slots, ran: &BTreeMap<u64, Duration>) {
    let all = fleet.master().wait_occurrences_ended(name, ran.len()).await;
    let mut stored = Vec::new();
    let mut by_agent = OnTime::default();
    for o in &all {
        assert_eq!(o["state"], "succeeded", "{name}: {o}");
        let at = o["at_ms"].as_u64().expect("at_ms");
        stored.push(at);
        if let Some(started) = o["started_ms"].as_u64() {
            by_agent
                .0
                .push(Duration::from_millis(started.saturating_sub(at)));
        }
    }
    let expected: Vec<u64> = ran.keys().map(|&k| slots.at_ms(k)).collect();
    assert_eq!(stored, expected, "{name}: occurrence tasks vs. marks");
    println!("{name}: by the agent's own start times: {by_agent}");
}

/// An `every_ms = 2000` schedule on one agent; once the agent holds it and trusts its clock,
/// the master (and its embedded broker) is frozen with SIGSTOP for 30 s, then thawed. Every
/// 2 s slot from the schedule's start to the end ran exactly once, through the freeze; after
/// the thaw every occurrence is a succeeded task in the master's store, none missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_every_two_seconds_through_a_master_outage() {
    let mut fleet = Fleet::start(&["sch-o"], 1000).await;
    wait_clock_trusted(fleet.agent("sch-o").process()).await;
    let dir = TempDir::new("sch-outage").expect("temp dir");
    let marks = Markers::new(dir.path());
    let slots = Slots::from_now(EVERY_MS, Duration::from_secs(3));
    let mut script = String::new();
    let argv = marking(&marks, "occ", &mut script);
    let m = fleet.master();
    m.define_schedule(&every(
        "two-s",
        "sch-o",
        &argv,
        (slots.start_ms, EVERY_MS),
        "skip",
        60_000,
    ));
    m.wait_handover_held("two-s").await;

    let outage = outage();
    let frozen_at = unix_ns();
    m.freeze(true);
    // The length of the outage: the observation, not a synchronisation.
    tokio::time::sleep(outage).await;
    let thawed_at = unix_ns();
    m.freeze(false);
    let frozen: Vec<u64> = (slots.next_at(frozen_at)..slots.next_at(thawed_at)).collect();
    // Two more occurrences after the thaw, seen in the marks.
    let after = slots.next_at(thawed_at) + 1;
    let mark = format!("occ after slot {after}");
    let deadline = tokio::time::Instant::now() + tether_tests::harness::WAIT;
    while slots_of(&marks, "occ", &slots).keys().next_back() < Some(&after) {
        assert!(tokio::time::Instant::now() < deadline, "no {mark}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(&fleet, "two-s").await;

    let ran = slots_of(&marks, "occ", &slots);
    assert_eq!(gaps(&ran), Vec::<u64>::new(), "every slot ran: {ran:?}");
    assert!(
        frozen.iter().all(|k| ran.contains_key(k)),
        "the {} slots of the freeze ran: {ran:?}",
        frozen.len()
    );
    let during = OnTime(frozen.iter().map(|k| ran[k]).collect());
    let all = OnTime(ran.values().copied().collect());
    println!(
        "bench schedule: every {EVERY_MS} ms, master frozen {outage:?}: during the freeze {during}; \
         all {all}"
    );
    assert!(all.max() < SANE, "a start {:?} late", all.max());
    check_stored(&fleet, "two-s", &slots, &ran).await;
    assert_eq!(fleet.master().metric(MISSED), Some(0.0));
}

/// Two schedules every 2 s on one agent, occurrences late by more than 1 s missed: one skips
/// them, one runs the latest once. The agent is killed with kill -9 between two occurrences
/// and started again on its journal 6.3 s later, 1.3 s into a slot (so the `once` schedule has
/// a missed occurrence it may still run). No slot ran twice; of the three slots it was down
/// for, `skip` ran none and `once` at most the latest, late; every slot not run is counted
/// missed by the master; every one run is a succeeded task. One hand-over per schedule: the
/// master renews a plan this dense (20,000 occurrences, 11 hours) only once half of it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_in_the_middle_of_a_schedule() {
    let mut fleet = Fleet::start(&["sch-r"], 1000).await;
    wait_clock_trusted(fleet.agent("sch-r").process()).await;
    let dir = TempDir::new("sch-restart").expect("temp dir");
    let marks = Markers::new(dir.path());
    let slots = Slots::from_now(EVERY_MS, Duration::from_secs(3));
    let rules = [("skip", "skip-r"), ("once", "once-r")];
    for (rule, name) in rules {
        let mut script = String::new();
        let argv = marking(&marks, rule, &mut script);
        let body = every(
            name,
            "sch-r",
            &argv,
            (slots.start_ms, EVERY_MS),
            rule,
            1_000,
        );
        fleet.master().define_schedule(&body);
        fleet.master().wait_handover_held(name).await;
    }
    // Two slots on, 1 s into the slot: between two occurrences.
    let wait = slots.until_phase(unix_ns(), Duration::from_secs(1)) + Duration::from_secs(2);
    tokio::time::sleep(wait).await;
    for (_, name) in rules {
        let handovers = fleet.master().schedule(name)["handovers"].clone();
        let n = handovers.as_array().map_or(0, Vec::len);
        assert_eq!(
            n, 1,
            "{name}: one hand-over holds 11 hours of occurrences, not re-planned after seconds: \
             {handovers}"
        );
    }
    let killed_at = unix_ns();
    fleet.agent("sch-r").process().kill9();
    tokio::time::sleep(Duration::from_millis(6_300)).await;
    let restarted_at = unix_ns();
    let agent = fleet.agent("sch-r");
    agent.process = Some(agent.home.start());
    wait_clock_trusted(agent.process()).await;
    let down: Vec<u64> = (slots.next_at(killed_at)..slots.next_at(restarted_at)).collect();
    assert_eq!(down.len(), 3, "slots while the agent was down");
    let after = down[2] + 3;
    let deadline = tokio::time::Instant::now() + tether_tests::harness::WAIT;
    while rules
        .iter()
        .any(|(rule, _)| slots_of(&marks, rule, &slots).keys().next_back() < Some(&after))
    {
        assert!(tokio::time::Instant::now() < deadline, "no slot {after}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut missed = 0;
    for (rule, name) in rules {
        stop(&fleet, name).await;
        let ran = slots_of(&marks, rule, &slots);
        let not_run = gaps(&ran);
        let late: Vec<_> = down.iter().filter(|k| ran.contains_key(k)).collect();
        println!(
            "{rule}: down for slots {down:?}, ran {late:?} of them (late by {:?}), not run {not_run:?}",
            late.iter().map(|k| ran[k]).collect::<Vec<_>>()
        );
        assert!(
            not_run.iter().all(|k| down.contains(k)),
            "{rule}: only the slots it was down for are not run: {not_run:?}"
        );
        match rule {
            "skip" => assert!(late.is_empty(), "skip ran {late:?} late"),
            _ => assert!(
                late.len() <= 1 && late.iter().all(|&&k| k == down[2]),
                "once ran {late:?} late (at most the latest of {down:?})"
            ),
        }
        missed += not_run.len();
        check_stored(&fleet, name, &slots, &ran).await;
    }
    fleet.master().wait_metric(MISSED, missed as f64).await;
}

/// libfaketime's preload library, when the `faketime` package is installed.
fn libfaketime() -> Option<String> {
    let found = [
        "x86_64-linux-gnu",
        "aarch64-linux-gnu",
        "arm-linux-gnueabihf",
    ]
    .iter()
    .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketime.so.1"))
    .find(|p| Path::new(p).exists());
    if found.is_none() {
        assert!(
            std::env::var_os("TETHER_CI").is_none(),
            "TETHER_CI is set but libfaketime is not installed (apt-get install faketime)"
        );
        eprintln!("SKIPPED: no libfaketime (apt-get install faketime)");
    }
    found
}

/// Starts agent `id` of the fleet with its wall clock `offset` off (`-1d`, `+1d`), the
/// monotonic clock left alone, and the default `clock = "ntp"`.
fn start_offset_agent(fleet: &mut Fleet, lib: &str, id: &str, offset: &str) {
    let mut options = AgentOptions::new(id, &fleet.master().mqtt);
    fleet.master().provision(&mut options);
    options.wrapper = [
        "env",
        &format!("LD_PRELOAD={lib}"),
        &format!("FAKETIME={offset}"),
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut home = AgentHome::new(options);
    let process = Some(home.start());
    fleet.agents.push(FleetAgent { home, process });
}

/// Two agents whose wall clocks read a day behind and a day ahead (libfaketime), with
/// `clock = "ntp"`: the master's clock, answering each agent's first fresh heartbeat,
/// corrects them, and both run a 2 s schedule at the real times of its occurrences (the marks
/// are written by the real clock): the one behind does not wait a day, the one ahead runs no
/// occurrence early and reports none missed (it would report a day of them had it believed
/// its clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_stepped_back_and_forward() {
    let Some(lib) = libfaketime() else {
        return;
    };
    let mut fleet = Fleet::start(&[], 1000).await;
    let agents = [("sch-behind", "-1d"), ("sch-ahead", "+1d")];
    for (id, offset) in agents {
        start_offset_agent(&mut fleet, &lib, id, offset);
    }
    for (id, _) in agents {
        fleet.master().wait_available(id).await;
        let agent = fleet.agent(id);
        wait_clock_trusted(agent.process()).await;
        // The agent's own log is stamped by its clock: a day off, as asked.
        let line = agent.process().log();
        let first = line.lines().next().unwrap_or("");
        println!("{id}: first log line: {first}");
    }
    let dir = TempDir::new("sch-clock").expect("temp dir");
    let marks = Markers::new(dir.path());
    let slots = Slots::from_now(EVERY_MS, Duration::from_secs(3));
    for (id, _) in agents {
        let mut script = String::new();
        let argv = marking(&marks, id, &mut script);
        let body = every(id, id, &argv, (slots.start_ms, EVERY_MS), "skip", 60_000);
        fleet.master().define_schedule(&body);
        fleet.master().wait_handover_held(id).await;
    }
    let until = slots.next_at(unix_ns()) + 4;
    let deadline = tokio::time::Instant::now() + tether_tests::harness::WAIT;
    while agents
        .iter()
        .any(|(id, _)| slots_of(&marks, id, &slots).keys().next_back() < Some(&until))
    {
        assert!(tokio::time::Instant::now() < deadline, "no slot {until}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, _) in agents {
        stop(&fleet, id).await;
        // A start before its slot would fall in the slot before (or before the first).
        let ran = slots_of(&marks, id, &slots);
        assert_eq!(gaps(&ran), Vec::<u64>::new(), "{id}: every slot ran");
        let on_time = OnTime(ran.values().copied().collect());
        println!("{id}: {on_time}");
        assert!(
            on_time.max() < SANE,
            "{id}: a start {:?} late",
            on_time.max()
        );
        check_stored(&fleet, id, &slots, &ran).await;
    }
    assert_eq!(fleet.master().metric(MISSED), Some(0.0));
}
