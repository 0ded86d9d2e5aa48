//! Workflow orders with the real master core, its store and the agents' own executor: a chain
//! of same-agent steps is handed to the agent at once and runs there while the master is down;
//! a step on another agent waits for the master. Every invariant holds at every step, and at
//! the end the orders' (10 to 13), in full.
//!
//! ```text
//! cargo test -p tether-tests --test sim workflows:: -- --nocapture
//! ```

use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_master::core::{StepRequest, WorkflowRequest};
use tether_master::model::{OnFailure, OrderState};
use tether_tests::sim::procs::{ExitCode, Program};
use tether_tests::sim::system::{Gap, System, overrides};
use tether_tests::sim::world::{Step, World, WorldConfig, policy};

const REPLAY: &str = "cargo test -p tether-tests --test sim workflows:: -- --nocapture";

fn at(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn world(seed: u64, agents: usize) -> System {
    let mut w = World::system(WorldConfig::new(seed, agents).replay(REPLAY));
    w.hold(Gap::RetryAfterChainedStep);
    w.hold(Gap::StrayKillDecidesTask);
    w
}

/// A step on agent `agent` that runs `program`; `continue` tasks, so a long silence of the
/// master does not end them.
fn step(agent: usize, program: Program) -> StepRequest {
    let p = policy(OnDisconnect::Continue, secs(10), secs(60));
    StepRequest {
        agent: Some(format!("pi-{agent}")),
        argv: program.args(),
        policy: overrides(&p),
        ..StepRequest::default()
    }
}

fn workflow(name: &str, steps: Vec<StepRequest>) -> WorkflowRequest {
    WorkflowRequest {
        name: name.into(),
        steps,
    }
}

/// The faults are over: everything the agents journaled reaches the store, which holds what
/// the master decided, and the orders' invariants hold over what ran.
fn settle(w: &mut System) {
    w.heal(secs(300));
    let settled = w.try_settle_orders(secs(600));
    w.expect(settled);
    w.expect(w.check_delivered());
    w.expect(w.master().check_store());
    w.expect(w.check_orders());
}

/// Three 30 s steps on pi-0; the master crashes a second after the order starts (the whole
/// chain handed over) and is down for 10 minutes: pi-0 runs the three steps on its own, in
/// order, each once, and the restarted master finds the order done.
#[test]
fn a_same_agent_chain_runs_on_while_the_master_is_down() {
    let mut w = world(31, 1);
    let run = Program::new(secs(30));
    w.put_workflow(at(1), workflow("build", vec![step(0, run); 3]));
    let order = w.start_order(at(5), "build");
    w.schedule(at(6), Step::MasterDown);
    w.schedule(at(606), Step::MasterUp);
    w.run_until(at(605));

    let runs: Vec<_> = (0..3).map(|i| w.step_runs(order, i)).collect();
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.len(), 1, "step {} ran once: {runs:?}", i + 1);
        assert_eq!(r[0].0, 0, "on pi-0");
    }
    for i in 1..3 {
        assert!(
            runs[i][0].1 >= runs[i - 1][0].1.saturating_add(secs(30)),
            "step {} after step {}: {runs:?}",
            i + 1,
            i
        );
    }
    assert!(
        runs[2][0].1 < at(200),
        "all while the master was down: {runs:?}"
    );
    assert_eq!(w.order_state(order), Some(OrderState::Running));

    w.run_until(at(700));
    assert_eq!(w.order_state(order), Some(OrderState::Succeeded));
    assert_eq!(w.master().stats().crashes, 1);
    settle(&mut w);
}

/// pi-0, pi-0, pi-1: the master crashes after handing pi-0 its two steps; pi-0 runs them, and
/// the step on pi-1 waits until the master is back.
#[test]
fn a_step_on_another_agent_waits_for_the_master() {
    let mut w = world(32, 2);
    let run = Program::new(secs(20));
    w.put_workflow(
        at(1),
        workflow("relay", vec![step(0, run), step(0, run), step(1, run)]),
    );
    let order = w.start_order(at(5), "relay");
    w.schedule(at(6), Step::MasterDown);
    w.schedule(at(606), Step::MasterUp);
    w.run_until(at(605));

    assert_eq!(w.step_runs(order, 0).len(), 1);
    assert_eq!(w.step_runs(order, 1).len(), 1);
    assert!(w.step_task(order, 2).is_none(), "step 3 not even made");
    assert!(w.step_runs(order, 2).is_empty());

    w.run_until(at(700));
    let third = w.step_runs(order, 2);
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(third[0].0, 1, "on pi-1");
    assert!(
        third[0].1 >= at(606),
        "after the master was back: {third:?}"
    );
    assert_eq!(w.order_state(order), Some(OrderState::Succeeded));
    settle(&mut w);
}

/// A failing `stop` step ends the order `failed`: the step chained behind it is skipped by the
/// agent and never runs; a failing `continue` step lets the next run.
#[test]
fn a_failed_stop_step_ends_the_order_and_a_continue_step_goes_on() {
    let mut w = world(33, 1);
    let ok = Program::new(secs(5));
    let fails = Program {
        code: ExitCode::Always(3),
        ..ok
    };
    let go_on = StepRequest {
        on_failure: Some(OnFailure::Continue),
        ..step(0, fails)
    };
    w.put_workflow(at(1), workflow("stops", vec![step(0, fails), step(0, ok)]));
    w.put_workflow(at(1), workflow("goes-on", vec![go_on, step(0, ok)]));
    let stopped = w.start_order(at(5), "stops");
    let went_on = w.start_order(at(5), "goes-on");
    w.run_until(at(60));

    assert_eq!(w.order_state(stopped), Some(OrderState::Failed));
    assert!(
        w.step_runs(stopped, 1).is_empty(),
        "skipped behind the failure"
    );
    assert_eq!(w.order_state(went_on), Some(OrderState::Succeeded));
    assert_eq!(w.step_runs(went_on, 1).len(), 1);
    settle(&mut w);
}

/// A `continue` step with a retry left, chained behind: the master hands the next step to the
/// agent with `run_if = finished`, so when the step's first attempt fails the agent starts the
/// next step at once, and the master retries the step before it afterwards. The next step
/// should wait for the retry (retries come before `on_failure`).
#[test]
fn a_step_waits_for_the_retries_of_a_continue_step_regression() {
    let mut w = world(34, 1);
    let ok = Program::new(secs(5));
    let fails = Program {
        code: ExitCode::Always(1),
        ..ok
    };
    let mut retried = StepRequest {
        on_failure: Some(OnFailure::Continue),
        ..step(0, fails)
    };
    retried.policy.retries = Some(1);
    w.put_workflow(at(1), workflow("retried", vec![retried, step(0, ok)]));
    let order = w.start_order(at(5), "retried");
    w.run_until(at(120));

    let before = w.step_runs(order, 0);
    let after = w.step_runs(order, 1);
    assert_eq!(before.len(), 2, "the step and its retry: {before:?}");
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0].1 > before[1].1,
        "the next step after the retry: {before:?} then {after:?}"
    );
    settle(&mut w);
}
