//! Random fault schedules over many seeds with the real master core and its SQLite store:
//! clusters (round-robin or fixed-priority) and single-agent targets, both policies, retries
//! and `lost_after`, kills, link faults, broker restarts, agent crashes and normal stops,
//! master crashes with restarts from the store; and workflow orders (`orders`: chains on one
//! agent, steps across agents and on the cluster, failing steps with `stop` or `continue`,
//! retries, cancels). Every invariant (agent and master side) is checked at every step; at the
//! end the faults stop, every durable event must reach the master's store, the store must hold
//! what the master decided, and once the orders have ended their invariants (10 to 13) must
//! hold over everything the agents ran.
//!
//! `TETHER_SYSTEM_SEEDS=n` runs seeds `0..n` (default 300); `TETHER_SIM_SEED=s` replays one:
//!
//! ```text
//! TETHER_SIM_SEED=1234 cargo test -p tether-tests --test sim system_random -- --nocapture
//! ```

mod orders;

use std::panic::{AssertUnwindSafe, catch_unwind};

use tether_core::policy::{OnDisconnect, Policy};
use tether_core::{Duration, Instant};
use tether_master::model::{ClusterMode, OrderState, Target};
use tether_tests::sim::invariants::Violation;
use tether_tests::sim::procs::{ExitCode, OnTerm, Program};
use tether_tests::sim::random_run::{self, Script};
use tether_tests::sim::system::{Gap, System, SystemOrder, overrides};
use tether_tests::sim::world::{Step, World, WorldConfig, policy};
use tether_tests::sim::{Rng, sweep};

const DEFAULT_SEEDS: u64 = 300;
/// Virtual time of the faulty part of a run.
const RUN: Duration = Duration::from_secs(3 * 60);
/// Longest wait for everything to arrive once the faults are over.
const HEAL: Duration = Duration::from_secs(20 * 60);
/// Longest wait for the orders to end once healed: more than the longest order takes alone.
const SETTLE: Duration = Duration::from_secs(30 * 60);

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
    orders_succeeded: u64,
    orders_failed: u64,
    orders_cancelled: u64,
    chained: u64,
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

/// Whether a run has workflow orders, and which of the master's known gaps it holds against
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orders {
    /// None: the runs the regression tests pinned to seeds before orders existed replay.
    Off,
    /// With the master's known gaps tolerated ([`Gap`]).
    On,
    Holding(Gap),
}

/// Builds one random run from `seed`.
fn world(seed: u64, periods: Periods, with: Orders) -> System {
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
    let mut w = script.w;
    if with != Orders::Off {
        orders::schedule(&mut w, seed, agents, choices, end);
    }
    if let Orders::Holding(gap) = with {
        w.hold(gap);
    }
    w
}

/// The system sweep's tasks: to the cluster or one agent, with the master's policy overrides.
struct Tasks {
    w: System,
    periods: &'static [u64],
    labels: Vec<usize>,
}

/// A task's policy: either behaviour, one of the run's periods, a timeout of 2, 3 or 6 periods,
/// a grace of 0.1-5 s, now and then a run-time limit.
fn draw_policy(rng: &mut Rng, periods: &[u64]) -> Policy {
    let on = if rng.chance(0.5) {
        OnDisconnect::Kill
    } else {
        OnDisconnect::Continue
    };
    let p_s = *rng.pick(periods).unwrap_or(&5);
    let k = *rng.pick(&[2u64, 3, 6]).unwrap_or(&3);
    let mut p = policy(on, Duration::from_secs(p_s), Duration::from_secs(p_s * k));
    p.grace_ms = rng.range_ms(100, 5_000).as_millis();
    if rng.chance(0.1) {
        p.max_run_ms = rng.range_ms(1_000, 60_000).as_millis();
    }
    p
}

/// A program that runs 0.1 s to `max_run_ms`, with some output, that may ignore SIGTERM or not
/// start at all; it exits 0.
fn draw_program(rng: &mut Rng, max_run_ms: u64) -> Program {
    Program {
        run: rng.range_ms(100, max_run_ms),
        outputs: rng.below(5) as u32,
        chunk_size: 0,
        on_term: if rng.chance(0.2) {
            OnTerm::Ignore
        } else {
            OnTerm::Exit(rng.range_ms(0, 3_000))
        },
        code: ExitCode::Zero,
        fails: rng.chance(0.05),
    }
}

impl Script<SystemOrder> for Tasks {
    fn task(&mut self, rng: &mut Rng, at: Instant, agent: usize) {
        let p = draw_policy(rng, self.periods);
        let mut o = overrides(&p);
        o.retries = Some(rng.below(2) as u32);
        let target = if rng.chance(0.7) {
            if p.on_disconnect == OnDisconnect::Continue && rng.chance(0.3) {
                o.lost_after_ms = Some(rng.range_ms(5_000, 60_000).as_millis());
            }
            Target::Cluster("pis".into())
        } else {
            Target::Agent(format!("pi-{agent}"))
        };
        let program = draw_program(rng, 120_000);
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
/// One seed of the sweep, with orders.
fn run(seed: u64) -> Result<Tally, String> {
    run_with(seed, Periods::Long, Orders::On)
}

/// Once healed, the orders still running are waited for, and what that brought is delivered.
fn settle(w: &mut System) -> Result<(), Violation> {
    if w.master().orders_settled() {
        return Ok(());
    }
    w.try_settle_orders(SETTLE)?;
    w.try_heal(HEAL).map(|_| ())
}

fn run_with(seed: u64, periods: Periods, with: Orders) -> Result<Tally, String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut w = world(seed, periods, with);
        let end = Instant::from_ticks(RUN.as_ticks());
        let result = w
            .try_run_until(end)
            .and_then(|()| w.try_heal(HEAL))
            .and_then(|_| settle(&mut w))
            .and_then(|()| w.check_delivered())
            .and_then(|()| w.master().check_store())
            .and_then(|()| w.check_orders());
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
                t.chained = m.orders().chained() as u64;
                for (_, o) in m.orders().orders() {
                    match o.state() {
                        OrderState::Succeeded => t.orders_succeeded += 1,
                        OrderState::Failed => t.orders_failed += 1,
                        OrderState::Cancelled => t.orders_cancelled += 1,
                        OrderState::Running => {}
                    }
                }
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
                if std::env::var("TMP_FULL").is_ok() {
                    eprintln!("{report}");
                }
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
        acc.orders_succeeded += t.orders_succeeded;
        acc.orders_failed += t.orders_failed;
        acc.orders_cancelled += t.orders_cancelled;
        acc.chained += t.chained;
        acc
    });
    eprintln!("{}: {total:?}", found.summary());
    if found.results.len() >= 50 {
        assert!(total.attempts > 0 && total.lost_marks > 0 && total.master_crashes > 0);
        assert!(total.commits_refused > 0, "store outages met batches");
        assert!(
            total.orders_succeeded > 0 && total.orders_failed > 0 && total.orders_cancelled > 0,
            "orders ended every way"
        );
        assert!(total.chained > 0, "steps were handed over chained");
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
    let mut w = world(1, Periods::Short, Orders::Off);
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
    if let Err(report) = run_with(719, Periods::Long, Orders::Off) {
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
            let mut w = world(seed, Periods::Long, Orders::Off);
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

/// Seeds whose orders break invariant 10 when [`Gap::RetryAfterChainedStep`] is held, smallest
/// first: 48
/// (order 1 step 4 is chained behind attempt 8 of step 3, `continue` with 2 retries, which exits
/// 2 at 95.276 s: pi-0 starts step 4 at 95.280 s, then the master retries step 3, attempt 12 at
/// 96.7 s), 74, 91, 119, 144, 214, 243, 295. The master core chains a step behind a `continue`
/// step with `run_if = finished` whatever retries that step has left; see
/// `tests/sim/workflows.rs`' scripted case.
#[test]
fn a_step_runs_before_the_retry_of_the_step_before_regression() {
    let mut failed = Vec::new();
    for seed in [48, 74, 91, 119, 144, 214, 243, 295] {
        let with = Orders::Holding(Gap::RetryAfterChainedStep);
        if let Err(report) = run_with(seed, Periods::Long, with) {
            eprintln!("{report}");
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "seeds {failed:?} break invariant 10");
}

/// Seeds whose orders break invariant 12 when [`Gap::StrayKillDecidesTask`] is held: 1029 (pi-0
/// crashes at 169.6 s with attempt 21 of order 1's step 2, a `continue` step, not yet started;
/// the master gives it up at 182.6 s, but its MQTT session retransmits the start it published
/// before when it reconnects at 185.7 s, and the restarted pi-0 runs it; the master retries the
/// step (attempt 26) and kills attempt 21 as a stranger once a heartbeat lists it, and that
/// kill's end (SIGTERM, `cause: Requested`) decides the step `killed` at 192.7 s while attempt
/// 26 still runs; the order goes on past a step nobody killed), 1838 (the same in a chain).
#[test]
fn a_stray_attempt_killed_by_the_master_decides_its_step_regression() {
    let mut failed = Vec::new();
    for seed in [1029, 1838] {
        let with = Orders::Holding(Gap::StrayKillDecidesTask);
        if let Err(report) = run_with(seed, Periods::Long, with) {
            eprintln!("{report}");
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "seeds {failed:?} break invariant 12");
}
