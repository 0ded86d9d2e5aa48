//! The system sweep's workflow orders: three workflows over the run's agents (a chain on one
//! agent, a relay across agents through the cluster, a mix), defined at the run's start if
//! they get orders, whose steps run short programs that may fail by exit code, fail on odd
//! attempts only (so a retry succeeds) or not start, each step with `stop` or `continue` and
//! now and then retries with a delay; then orders of them at random times, now and then one
//! cancelled. Everything here is drawn from a stream of its own, so every other draw of a seed
//! stays as it was (a run without orders is the run it was before orders existed).

use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_master::core::{StepRequest, WorkflowRequest};
use tether_master::model::OnFailure;
use tether_tests::sim::Rng;
use tether_tests::sim::procs::ExitCode;
use tether_tests::sim::system::{System, overrides};

use super::{draw_policy, draw_program};

/// The workflows' names, by kind.
const WORKFLOWS: [&str; 3] = ["chain", "relay", "mix"];

/// When the workflows are defined: after the cluster, before the schedule's first draw.
const DEFINED_AT: Instant = Instant::from_millis(1_000);

/// Where a step of a workflow being drawn runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Agent(usize),
    Cluster,
}

/// How long before the end of the faults the last order may start: most orders end during the
/// faults, the rest soon after (the run waits for them).
const LAST_START: Duration = Duration::from_secs(90);

/// Defines the run's workflows and schedules its orders, every 25-180 s until [`LAST_START`]
/// before `end`, now and then one cancelled a while after its start.
pub(super) fn schedule(w: &mut System, seed: u64, agents: usize, periods: &[u64], end: Instant) {
    let mut rng = Rng::new(seed ^ 0x0de2_5eed);
    let mut workflows: Vec<Option<WorkflowRequest>> = WORKFLOWS
        .iter()
        .map(|name| {
            let places = places(&mut rng, name, agents);
            let steps = places
                .into_iter()
                .map(|place| step(&mut rng, place, periods))
                .collect();
            let name = (*name).to_owned();
            Some(WorkflowRequest { name, steps })
        })
        .collect();
    let mut at = DEFINED_AT;
    let last = Instant::from_ticks(end.as_ticks().saturating_sub(LAST_START.as_ticks()));
    loop {
        at = at.saturating_add(rng.range_ms(25_000, 170_000));
        if at >= last {
            return;
        }
        let k = rng.below(WORKFLOWS.len() as u64) as usize;
        // Only the workflows that get orders are defined: every other run stays as it was.
        if let Some(workflow) = workflows[k].take() {
            w.put_workflow(DEFINED_AT, workflow);
        }
        let label = w.start_order(at, WORKFLOWS[k]);
        if rng.chance(0.15) {
            w.cancel_order(at.saturating_add(rng.range_ms(500, 40_000)), label);
        }
    }
}

/// Where each step of workflow `name` runs: 2 to 4 steps.
fn places(rng: &mut Rng, name: &str, agents: usize) -> Vec<Place> {
    let n = 2 + rng.below(3) as usize;
    let home = rng.below(agents as u64) as usize;
    let mut places = Vec::with_capacity(n);
    let mut last = home;
    for i in 0..n {
        let place = match name {
            // One agent throughout: handed over as one chain.
            "chain" => Place::Agent(home),
            // Each step on the next agent, one step on the cluster.
            "relay" if i == n / 2 => Place::Cluster,
            "relay" => Place::Agent((home + i) % agents),
            _ => match rng.below(10) {
                0..=4 => Place::Agent(last),
                5..=7 => Place::Agent(rng.below(agents as u64) as usize),
                _ => Place::Cluster,
            },
        };
        if let Place::Agent(a) = place {
            last = a;
        }
        places.push(place);
    }
    places
}

/// One step: a task's policy, a short program that may fail, `stop` or `continue`, now and
/// then retries with a delay.
fn step(rng: &mut Rng, place: Place, periods: &[u64]) -> StepRequest {
    let p = draw_policy(rng, periods);
    let mut program = draw_program(rng, 10_000);
    program.code = match rng.below(20) {
        0..=2 => ExitCode::Always(1 + rng.below(3) as i32),
        3..=5 => ExitCode::OddAttempts(1),
        _ => ExitCode::Zero,
    };
    let mut policy = overrides(&p);
    let retries = rng.chance(0.3).then(|| 1 + rng.below(2) as u32);
    policy.retries = Some(retries.unwrap_or(0));
    let retry_delay_ms = retries.map_or(0, |_| rng.range_ms(0, 5_000).as_millis());
    let on_failure = if rng.chance(0.6) {
        OnFailure::Stop
    } else {
        OnFailure::Continue
    };
    let (agent, cluster) = match place {
        Place::Agent(a) => (Some(format!("pi-{a}")), None),
        Place::Cluster => {
            // As for tasks: given up on after a while unheard, and run again elsewhere.
            if p.on_disconnect == OnDisconnect::Continue && rng.chance(0.3) {
                policy.lost_after_ms = Some(rng.range_ms(5_000, 60_000).as_millis());
            }
            (None, Some("pis".to_owned()))
        }
    };
    StepRequest {
        agent,
        cluster,
        argv: program.args(),
        policy,
        on_failure: Some(on_failure),
        retry_delay_ms,
        ..StepRequest::default()
    }
}
