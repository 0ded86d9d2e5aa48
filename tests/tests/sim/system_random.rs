//! Random fault schedules over many seeds with the real master core and its SQLite store:
//! clusters (round-robin or fixed-priority) and single-agent targets, both policies, retries
//! and `lost_after`, kills, link faults, broker restarts, agent crashes and normal stops,
//! master crashes with restarts from the store. Every invariant (agent and master side) is
//! checked at every step; at the end the faults stop, every durable event must reach the
//! master's store and the store must hold what the master decided.
//!
//! `TETHER_SYSTEM_SEEDS=n` runs seeds `0..n` (default 300); `TETHER_SIM_SEED=s` replays one:
//!
//! ```text
//! TETHER_SIM_SEED=1234 cargo test -p tether-tests --test sim system_random -- --nocapture
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};

use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_master::model::{ClusterMode, Target};
use tether_tests::sim::procs::{OnTerm, Program};
use tether_tests::sim::random_run::{self, Script};
use tether_tests::sim::system::{System, SystemOrder, overrides};
use tether_tests::sim::world::{Step, World, WorldConfig, policy};
use tether_tests::sim::{Rng, sweep};

const DEFAULT_SEEDS: u64 = 300;
/// Virtual time of the faulty part of a run.
const RUN: Duration = Duration::from_secs(3 * 60);

fn replay(seed: u64) -> String {
    format!(
        "TETHER_SIM_SEED={seed} cargo test -p tether-tests --test sim system_random -- --nocapture"
    )
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    digest: u64,
    attempts: u64,
    lost_marks: u64,
    master_crashes: u64,
    decided: u64,
    events: u64,
    steps: u64,
    commits_refused: u64,
}

/// Heartbeat periods of the schedules. `Short` (1-5 s) trips tether-core's agent bug kept in
/// [`short_periods_regression`]: an agent (re)connecting arms its next heartbeat 10 s ahead
/// (its default period) and keeps that timer after learning a shorter one, so the master,
/// expecting one per period, gives it up. `Long` (5-10 s) stays clear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Periods {
    Short,
    Long,
}

/// Builds one random run from `seed`.
fn world(seed: u64, periods: Periods) -> System {
    let mut rng = Rng::new(seed ^ 0x0051_57e3);
    let agents = 1 + rng.below(3) as usize;
    let mut config = WorldConfig::new(seed, agents).replay(replay(seed));
    let choices: &[u64] = match periods {
        Periods::Short => &[1, 2, 5],
        Periods::Long => &[5, 10],
    };
    random_run::config(&mut rng, &mut config, choices);
    let mut w = World::system(config);
    let mode = if rng.chance(0.5) {
        ClusterMode::RoundRobin
    } else {
        ClusterMode::FixedPriority
    };
    let members: Vec<usize> = (0..agents).collect();
    w.put_cluster(Instant::from_millis(500), "pis", mode, &members);
    let end = Instant::from_ticks(RUN.as_ticks());
    let mut script = Tasks {
        w,
        periods: choices,
        labels: Vec::new(),
    };
    random_run::schedule(&mut rng, seed, agents, end, &mut script);
    script.w
}

/// The system sweep's tasks: to the cluster or one agent, with the master's policy overrides.
struct Tasks {
    w: System,
    periods: &'static [u64],
    labels: Vec<usize>,
}

impl Script<SystemOrder> for Tasks {
    fn task(&mut self, rng: &mut Rng, at: Instant, agent: usize) {
        let on = if rng.chance(0.5) {
            OnDisconnect::Kill
        } else {
            OnDisconnect::Continue
        };
        let p_s = *rng.pick(self.periods).unwrap_or(&5);
        let k = *rng.pick(&[2u64, 3, 6]).unwrap_or(&3);
        let mut p = policy(on, Duration::from_secs(p_s), Duration::from_secs(p_s * k));
        p.grace_ms = rng.range_ms(100, 5_000).as_millis();
        if rng.chance(0.1) {
            p.max_run_ms = rng.range_ms(1_000, 60_000).as_millis();
        }
        let mut o = overrides(&p);
        o.retries = Some(rng.below(2) as u32);
        let target = if rng.chance(0.7) {
            if on == OnDisconnect::Continue && rng.chance(0.3) {
                o.lost_after_ms = Some(rng.range_ms(5_000, 60_000).as_millis());
            }
            Target::Cluster("pis".into())
        } else {
            Target::Agent(format!("pi-{agent}"))
        };
        let program = Program {
            run: rng.range_ms(100, 120_000),
            outputs: rng.below(5) as u32,
            chunk_size: 0,
            on_term: if rng.chance(0.2) {
                OnTerm::Ignore
            } else {
                OnTerm::Exit(rng.range_ms(0, 3_000))
            },
            fails: rng.chance(0.05),
        };
        let start = rng
            .chance(0.3)
            .then(|| at.saturating_add(rng.range_ms(0, 120_000)));
        self.labels
            .push(self.w.submit(at, target, o, program, start));
    }

    fn kill(&mut self, rng: &mut Rng, at: Instant) {
        if let Some(&label) = rng.pick(&self.labels) {
            self.w.kill(at, label);
        }
    }

    fn schedule(&mut self, at: Instant, step: Step<SystemOrder>) {
        self.w.schedule(at, step);
    }
}

/// One seed: `Err` is the full failure report.
fn run(seed: u64) -> Result<Tally, String> {
    run_with(seed, Periods::Long)
}

fn run_with(seed: u64, periods: Periods) -> Result<Tally, String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut w = world(seed, periods);
        let end = Instant::from_ticks(RUN.as_ticks());
        let result = w
            .try_run_until(end)
            .and_then(|()| w.try_heal(Duration::from_secs(20 * 60)))
            .and_then(|_| w.check_delivered())
            .and_then(|()| w.master().check_store());
        match result {
            Err(v) => Err(w.report(&v)),
            Ok(()) => {
                let m = w.master();
                let mut t = Tally {
                    digest: w.digest(),
                    steps: w.steps(),
                    attempts: m.stats().attempts,
                    lost_marks: m.stats().lost_marks,
                    master_crashes: m.stats().crashes,
                    commits_refused: m.stats().commits_refused,
                    ..Tally::default()
                };
                t.decided = (m.submitted() - m.undecided()) as u64;
                for i in 0..w.config().agents {
                    t.events += tether_tests::sim::world::SimMaster::store(m, i).len() as u64;
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
fn random_system_schedules_keep_every_invariant() {
    let seeds = sweep::seeds("TETHER_SYSTEM_SEEDS", DEFAULT_SEEDS);
    let keep_going = std::env::var("TETHER_SIM_ALL").is_ok();
    let found = sweep::run(&seeds, keep_going, run);
    let failed = found.failed();
    if keep_going {
        // Every failing seed's violation, one line each, to sort failures into causes.
        for (seed, r) in &found.results {
            if let Err(report) = r {
                let line = report
                    .lines()
                    .find(|l| l.starts_with("invariant"))
                    .unwrap_or("panicked");
                eprintln!("seed {seed}: {line}");
            }
        }
    }
    if let Some((seed, report)) = found.first_failure() {
        eprintln!("{report}");
        panic!(
            "seed {seed} failed ({} failing: {failed:?}); replay: {}",
            failed.len(),
            replay(seed)
        );
    }
    let total = found.passed().fold(Tally::default(), |mut acc, t| {
        acc.attempts += t.attempts;
        acc.lost_marks += t.lost_marks;
        acc.master_crashes += t.master_crashes;
        acc.decided += t.decided;
        acc.events += t.events;
        acc.steps += t.steps;
        acc.commits_refused += t.commits_refused;
        acc
    });
    eprintln!("{}: {total:?}", found.summary());
    if found.results.len() >= 50 {
        assert!(total.attempts > 0 && total.lost_marks > 0 && total.master_crashes > 0);
        assert!(total.commits_refused > 0, "store outages met batches");
    }
}

#[test]
fn a_system_seed_replays_identically() {
    for seed in [7, 42] {
        let a = run(seed).unwrap_or_else(|r| panic!("{r}"));
        let b = run(seed).unwrap_or_else(|r| panic!("{r}"));
        assert_eq!(a.digest, b.digest, "seed {seed}");
    }
}

/// Seed 1 with 1-5 s periods: pi-0 restarted at 151 s and used to heartbeat once at connect and
/// then not for 10 s although the master and its tasks ask for 1 s; the master marks its `kill`
/// attempt 7 lost at 156.9 s (2 s timeout + 2 s allowance after it last heard pi-0) while pi-0,
/// hearing the master every second, runs it untouched: invariant 6. Fixed in tether-core: a
/// shorter period re-arms the agent's heartbeat timer at once.
#[test]
fn short_periods_regression() {
    let mut w = world(1, Periods::Short);
    w.master_mut().strict(true);
    let result = w.try_run_until(Instant::from_ticks(RUN.as_ticks()));
    if let Err(v) = result {
        panic!("{}", w.report(&v));
    }
}

/// Seed 719: the master's link black-holes at 32.4 s (it still thinks it is connected); at
/// 42.6 s it dispatches a new `kill` attempt (timeout 10 s) to pi-0, last heard at 21.5 s:
/// available by the master-wide silence (2 x 10 s + 2 s) but already past the task's own
/// loss deadline (21.5 + 10 + 2 = 33.5 s). The attempt is created after `attempt_deadlines`
/// in the same tick and `poll_timeout` drops deadlines already passed, so nothing marks it
/// lost until some other input arrives: invariant 6's upper bound. Fixed in the master core:
/// for a `kill` task, `Master::pick` skips agents silent beyond the task's loss delay.
#[test]
fn dispatch_past_the_loss_deadline_regression() {
    if let Err(report) = run(719) {
        panic!("{report}");
    }
}

/// Seeds that break the lower bound of invariant 6 (see `RealMaster::strict`): 38 (a task
/// started after the agent last heard the master: the agent counts from the start, the
/// master from when it last heard the agent), 143 (agent-to-master loss only: the agent hears
/// the master and never kills). An agent restarted while the master cannot hear it breaks it
/// too: its restart counts as contact.
#[test]
#[ignore = "the protocol's loss rules differ between agent and master (design gap, reported)"]
fn kill_marked_failed_before_the_agent_killed_it_regression() {
    let mut failed = Vec::new();
    for seed in [38, 143] {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut w = world(seed, Periods::Long);
            w.master_mut().strict(true);
            let end = Instant::from_ticks(RUN.as_ticks());
            w.try_run_until(end).map_err(|v| w.report(&v))
        }));
        if !matches!(outcome, Ok(Ok(()))) {
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "seeds {failed:?} break invariant 6's lower bound"
    );
}
