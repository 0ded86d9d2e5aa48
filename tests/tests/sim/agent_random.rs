//! Random fault schedules over many seeds: link faults, broker restarts, agent crashes, master
//! crashes, kills, orders with and without start times, both policies, random heartbeat
//! settings, disks and brokers. Every invariant is checked at every step; at the end the faults
//! stop and every durable event must reach the master.
//!
//! `TETHER_SIM_SEEDS=n` runs seeds `0..n` (default 1000); `TETHER_SIM_SEED=s` replays one:
//!
//! ```text
//! TETHER_SIM_SEED=1234 cargo test -p tether-tests --test sim agent_random::random_fault -- --nocapture
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};

use tether_core::message::{EventKind, RejectReason, TaskRef};
use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_tests::sim::procs::{ExitCode, OnTerm, Program};
use tether_tests::sim::random_run::{self, Script};
use tether_tests::sim::world::{ScriptOrder, Step, Who, World, WorldConfig, policy};
use tether_tests::sim::{BrokerConfig, Fault, Rng, sweep};

const DEFAULT_SEEDS: u64 = 1_000;
/// Virtual time of the faulty part of a run.
const RUN: Duration = Duration::from_secs(3 * 60);

fn replay(seed: u64) -> String {
    format!(
        "TETHER_SIM_SEED={seed} cargo test -p tether-tests --test sim agent_random::random_fault -- --nocapture"
    )
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    digest: u64,
    spawns: u64,
    kills_on_loss: u64,
    agent_restarts: u64,
    events: u64,
    duplicate_starts: u64,
    duplicate_events: u64,
    steps: u64,
    compactions: u64,
    /// Starts refused for a full journal, and results with output dropped.
    journal_limited: u64,
}

/// One run in ten gives the agents a journal near its limits (a small cap, fewer task
/// slots, chatty tasks), so compaction and the journal-full policy run under the faults.
fn tight_journal(rng: &mut Rng, config: &mut WorldConfig) -> bool {
    if !rng.chance(0.1) {
        return false;
    }
    config.max_tasks = 1 + rng.below(8) as usize;
    config.journal_max_bytes = *rng.pick(&[64u64, 64, 96, 128]).unwrap_or(&64) * 1024;
    true
}

/// Builds one random run from `seed`.
fn world(seed: u64) -> World {
    let mut rng = Rng::new(seed ^ 0x7e7e_7e7e);
    let agents = 1 + rng.below(3) as usize;
    let mut config = WorldConfig::new(seed, agents).replay(replay(seed));
    random_run::config(&mut rng, &mut config, &[2, 5, 10]);
    let tight = tight_journal(&mut rng, &mut config);
    let end = Instant::from_ticks(RUN.as_ticks());
    let mut script = Tasks {
        w: World::new(config),
        tight,
        tasks: Vec::new(),
    };
    random_run::schedule(&mut rng, seed, agents, end, &mut script);
    if tight {
        // A long silence of the master on top: nothing is acknowledged, the journal fills.
        let down = Instant::from_secs(20).saturating_add(rng.range_ms(0, 40_000));
        script.w.schedule(down, Step::MasterDown);
        let up = down.saturating_add(rng.range_ms(60_000, 120_000));
        script.w.schedule(up, Step::MasterUp);
    }
    script.w
}

/// The agent sweep's tasks: orders for one agent with a core policy, chatty on a tight
/// journal.
struct Tasks {
    w: World,
    tight: bool,
    tasks: Vec<TaskRef>,
}

impl Script<ScriptOrder> for Tasks {
    fn task(&mut self, rng: &mut Rng, at: Instant, agent: usize) {
        let on = if rng.chance(0.5) {
            OnDisconnect::Kill
        } else {
            OnDisconnect::Continue
        };
        let p_s = *rng.pick(&[1u64, 2, 5]).unwrap_or(&2);
        let k = *rng.pick(&[2u64, 3, 6]).unwrap_or(&3);
        let mut p = policy(on, Duration::from_secs(p_s), Duration::from_secs(p_s * k));
        p.grace_ms = rng.range_ms(100, 5_000).as_millis();
        if rng.chance(0.1) {
            p.max_run_ms = rng.range_ms(1_000, 60_000).as_millis();
        }
        let program = Program {
            run: rng.range_ms(100, 120_000),
            outputs: if self.tight {
                100 + rng.below(200) as u32
            } else {
                rng.below(5) as u32
            },
            chunk_size: if self.tight { 256 } else { 0 },
            on_term: if rng.chance(0.2) {
                OnTerm::Ignore
            } else {
                OnTerm::Exit(rng.range_ms(0, 3_000))
            },
            code: ExitCode::Zero,
            fails: rng.chance(0.03),
        };
        let start = rng
            .chance(0.4)
            .then(|| at.saturating_add(rng.range_ms(0, 180_000)));
        self.tasks.push(self.w.submit(at, agent, p, program, start));
    }

    fn kill(&mut self, rng: &mut Rng, at: Instant) {
        if let Some(&task) = rng.pick(&self.tasks) {
            self.w.kill(at, task);
        }
    }

    fn schedule(&mut self, at: Instant, step: Step) {
        self.w.schedule(at, step);
    }
}

/// One seed: `Err` is the full failure report.
fn run(seed: u64) -> Result<Tally, String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut w = world(seed);
        let end = Instant::from_ticks(RUN.as_ticks());
        let result = w
            .try_run_until(end)
            .and_then(|()| w.try_heal(Duration::from_secs(20 * 60)))
            .and_then(|_| w.check_delivered());
        match result {
            Err(v) => Err(w.report(&v)),
            Ok(()) => {
                let mut t = Tally {
                    digest: w.digest(),
                    steps: w.steps(),
                    ..Tally::default()
                };
                for task in w.tasks() {
                    t.spawns += w.spawns(task).len() as u64;
                    t.kills_on_loss += w
                        .signals(task)
                        .iter()
                        .filter(|s| s.cause == Some(tether_core::message::KillCause::MasterLost))
                        .count() as u64;
                }
                t.duplicate_events = w.master().stats().duplicate_events;
                for i in 0..w.config().agents {
                    t.duplicate_starts += w.agent(i).map_or(0, |a| a.stats().duplicate_starts);
                    t.agent_restarts += u64::from(w.restarts(i));
                    t.events += w.master().store(i).len() as u64;
                    t.compactions += w.disk(i).stats().compactions;
                    t.journal_limited += w
                        .master()
                        .store(i)
                        .values()
                        .filter(|e| {
                            matches!(
                                e.kind,
                                EventKind::Rejected {
                                    reason: RejectReason::JournalFull,
                                    ..
                                } | EventKind::Finished {
                                    output_dropped: 1..,
                                    ..
                                }
                            )
                        })
                        .count() as u64;
                }
                Ok(t)
            }
        }
    }));
    outcome.unwrap_or_else(|_| {
        Err(format!(
            "seed {seed} panicked\n---- replay ----\n{}",
            replay(seed)
        ))
    })
}

#[test]
fn random_fault_schedules_keep_every_invariant() {
    let seeds = sweep::seeds("TETHER_SIM_SEEDS", DEFAULT_SEEDS);
    let found = sweep::run(&seeds, false, run);
    if let Some((seed, report)) = found.first_failure() {
        eprintln!("{report}");
        panic!("seed {seed} failed; replay: {}", replay(seed));
    }
    let total = found.passed().fold(Tally::default(), |mut acc, t| {
        acc.spawns += t.spawns;
        acc.kills_on_loss += t.kills_on_loss;
        acc.agent_restarts += t.agent_restarts;
        acc.events += t.events;
        acc.steps += t.steps;
        acc.duplicate_starts += t.duplicate_starts;
        acc.duplicate_events += t.duplicate_events;
        acc.compactions += t.compactions;
        acc.journal_limited += t.journal_limited;
        acc
    });
    eprintln!("{}: {total:?}", found.summary());
    // The schedules really exercise what they claim to.
    if found.results.len() >= 50 {
        assert!(total.spawns > 0 && total.kills_on_loss > 0 && total.agent_restarts > 0);
        assert!(total.duplicate_starts > 0 && total.duplicate_events > 0);
        assert!(
            total.compactions > 0 && total.journal_limited > 0,
            "the journal's limits ran"
        );
    }
}

#[test]
fn a_seed_replays_identically() {
    for seed in [7, 42] {
        let a = run(seed).unwrap_or_else(|r| panic!("{r}"));
        let b = run(seed).unwrap_or_else(|r| panic!("{r}"));
        assert_eq!(a.digest, b.digest, "seed {seed}");
    }
    let c = run(8).unwrap_or_else(|r| panic!("{r}"));
    assert_ne!(run(7).map(|t| t.digest), Ok(c.digest));
}

/// One agent, 300 short orders (more attempts than the 256 it remembers), crashes, cuts, master
/// restarts, kills, sometimes on a tight journal.
fn busy(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ 0xb05e);
    let mut config = WorldConfig::new(seed, 1).replay(format!(
        "TETHER_SIM_SEED={seed} cargo test -p tether-tests --test sim agent_random::busy -- --nocapture"
    ));
    config.broker = BrokerConfig::duplicating();
    tight_journal(&mut rng, &mut config);
    let mut w = World::new(config);
    let mut tasks = Vec::new();
    let mut at = Instant::from_secs(1);
    for _ in 0..300 {
        at = at.saturating_add(rng.range_ms(100, 3_000));
        let on = if rng.chance(0.5) {
            OnDisconnect::Kill
        } else {
            OnDisconnect::Continue
        };
        let p = policy(on, Duration::from_secs(1), Duration::from_secs(3));
        let start = rng
            .chance(0.3)
            .then(|| at.saturating_add(rng.range_ms(0, 20_000)));
        let program = Program::new(rng.range_ms(10, 5_000));
        tasks.push(w.submit(at, 0, p, program, start));
        let later = at.saturating_add(rng.range_ms(0, 10_000));
        match rng.below(10) {
            0 => {
                if let Some(&t) = rng.pick(&tasks) {
                    w.kill(later, t);
                }
            }
            1 => {
                w.schedule(at, Step::CrashAgent(0));
                w.schedule(later, Step::RestartAgent(0));
            }
            2 => {
                let fault = Fault::random(&mut rng);
                w.schedule(at, Step::Fault(Who::Agent(0), fault));
                w.schedule(later, Step::Fault(Who::Agent(0), Fault::Up));
            }
            3 => {
                w.schedule(at, Step::MasterDown);
                w.schedule(later, Step::MasterUp);
            }
            _ => {}
        }
    }
    let result = w
        .try_run_until(at.saturating_add(Duration::from_secs(30)))
        .and_then(|()| w.try_heal(Duration::from_secs(20 * 60)))
        .and_then(|_| w.try_run_until(w.now().saturating_add(Duration::from_secs(60))));
    if let Err(v) = result {
        return Err(w.report(&v));
    }
    let left: Vec<_> = w.agent(0).map(|a| a.tasks().collect()).unwrap_or_default();
    if !left.is_empty() {
        return Err(format!("seed {seed}: attempts never end: {left:?}"));
    }
    Ok(())
}

#[test]
fn busy_agent_with_more_attempts_than_it_remembers() {
    let seeds = match std::env::var("TETHER_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("TETHER_SIM_SEED is a u64")],
        Err(_) => (0..8).collect(),
    };
    for seed in seeds {
        if let Err(report) = busy(seed) {
            eprintln!("{report}");
            panic!("busy seed {seed} failed");
        }
    }
}
