//! 7. An order of 10 same-agent steps of `true`, from its start (`POST /api/orders`) to the
//!    order read back `succeeded`, next to the same 10 runs of `true` as single tasks to the
//!    same agent: submitted one after the other (each once the one before has finished) and
//!    all 10 at once. Same master, same agent, rounds interleaved; every state polled every
//!    2 ms from one HTTP client, so each figure carries the same polling error (at most one
//!    period). With `--smoke` one round (`scripts/test.sh`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Master, ms, start_agent};

const STEPS: usize = 10;
const AGENT: &str = "bench-orders";
const POLL: Duration = Duration::from_millis(2);

pub(super) fn orders(dir: &Path, smoke: bool, table: &mut Vec<(String, String, String)>) {
    let rounds = if smoke { 1 } else { 7 };
    eprintln!("measuring an order of {STEPS} steps against {STEPS} tasks ({rounds} rounds)");
    let master = Master::start(dir, "orders-master");
    let _agent = start_agent(dir, AGENT, &master.mqtt);
    master.wait_available(AGENT);
    let step = json!({ "agent": AGENT, "argv": ["true"] });
    let steps: Vec<Value> = (0..STEPS).map(|_| step.clone()).collect();
    master.call(
        "POST",
        "/api/workflows",
        Some(&json!({ "name": "bench-steps", "steps": steps })),
    );
    // One of each first, unmeasured: the agent's and the store's first-use costs.
    order(&master);
    one_after_another(&master, &step);
    at_once(&master, &step);
    let (mut o, mut seq, mut burst) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        o.push(order(&master));
        seq.push(one_after_another(&master, &step));
        burst.push(at_once(&master, &step));
    }
    let (o, seq, burst) = (Figure::of(o), Figure::of(seq), Figure::of(burst));
    table.push((
        format!("order: {STEPS} same-agent steps of true, start to end"),
        o.show(),
        format!(
            "{:.0} % of {STEPS} single tasks one after the other, {:.0} % of {STEPS} at once",
            100.0 * o.median.as_secs_f64() / seq.median.as_secs_f64(),
            100.0 * o.median.as_secs_f64() / burst.median.as_secs_f64(),
        ),
    ));
    table.push((
        format!("  {STEPS} tasks of true, each after the one before"),
        seq.show(),
        "(same master and agent, same run)".into(),
    ));
    table.push((
        format!("  {STEPS} tasks of true submitted at once"),
        burst.show(),
        "(same master and agent, same run)".into(),
    ));
}

/// The rounds' median and fastest.
struct Figure {
    median: Duration,
    min: Duration,
    rounds: usize,
}

impl Figure {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        Self {
            median: times[times.len() / 2],
            min: times[0],
            rounds: times.len(),
        }
    }

    fn show(&self) -> String {
        match self.rounds {
            1 => ms(self.median),
            n => format!("{} (min {}, {n} rounds)", ms(self.median), ms(self.min)),
        }
    }
}

/// Polls `path` every [`POLL`] until `state` (read from the answer) is an end, of an order or
/// of a task; that end.
fn ended(master: &Master, path: &str, state: impl Fn(&Value) -> &Value) -> String {
    master.poll("the end", path, POLL, |v| {
        let s = state(v).as_str()?;
        matches!(s, "succeeded" | "failed" | "cancelled" | "killed" | "lost").then(|| s.to_owned())
    })
}

fn order(master: &Master) -> Duration {
    let start = Instant::now();
    let created = master.call(
        "POST",
        "/api/orders",
        Some(&json!({ "workflow": "bench-steps" })),
    );
    let id = created["id"].as_u64().expect("order id");
    let state = ended(
        master,
        &format!("/api/orders/{id}"),
        |v| &v["order"]["state"],
    );
    assert_eq!(state, "succeeded", "order {id}");
    start.elapsed()
}

fn one_after_another(master: &Master, body: &Value) -> Duration {
    let start = Instant::now();
    for _ in 0..STEPS {
        task_ended(master, master.submit(body));
    }
    start.elapsed()
}

fn at_once(master: &Master, body: &Value) -> Duration {
    let start = Instant::now();
    let ids: Vec<u64> = (0..STEPS).map(|_| master.submit(body)).collect();
    for id in ids {
        task_ended(master, id);
    }
    start.elapsed()
}

fn task_ended(master: &Master, id: u64) {
    let state = ended(master, &format!("/api/tasks/{id}"), |v| &v["task"]["state"]);
    assert_eq!(state, "succeeded", "task {id}");
}
