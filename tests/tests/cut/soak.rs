//! Soak (not in default CI): N cut/restore cycles (`TETHER_SOAK=N`, default 100) with random
//! cut durations around the heartbeat timeout, random black-hole or reset cuts, one `kill` and
//! one `continue` task per cycle, counting double starts and lost results. Both must be 0.
//!
//! `TETHER_SOAK=100 cargo test -p tether-tests --test cut soak -- --ignored --nocapture`
//! (the broker from `TETHER_BROKER`, rumqttd when both; the proxy method).

use std::time::Duration;

use rand::{Rng, SeedableRng};
use tether_tests::cut::link::{CutMethod, Link};
use tether_tests::cut::world::{Layout, Run, Settings, World, events, task_for};
use tether_tests::harness::WAIT;
use tether_tests::harness::broker::BrokerKind;
use tether_tests::proxy::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: minutes per 100 cycles; run with --ignored"]
async fn soak_cut_restore_cycles() {
    let cycles: u32 = std::env::var("TETHER_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("TETHER_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()));
    let broker = if std::env::var("TETHER_BROKER").as_deref() == Ok("mosquitto") {
        BrokerKind::Mosquitto
    } else {
        BrokerKind::Rumqttd
    };
    let run = Run {
        broker,
        method: CutMethod::Proxy,
    };
    eprintln!("soak: {cycles} cycles, seed {seed} (TETHER_SOAK_SEED), {run}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let s = Settings::SHORT;
    let Some(world) = World::start(run, Layout::new("soak", run, 1)).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let (mut double_starts, mut lost_results) = (0u32, 0u32);
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for cycle in 0..cycles {
        let run_ms = rng.random_range(1_500..6_000);
        let script = |tag: &str| world.marked(tag, &format!("sleep {}", run_ms as f64 / 1e3));
        let (kt, ct) = (format!("k{cycle}"), format!("c{cycle}"));
        let k = world.submit(&task_for(&agent, &script(&kt), "kill", s));
        let c = world.submit(&task_for(&agent, &script(&ct), "continue", s));
        for id in [k, c] {
            world
                .wait_task(id, "running", |v| v["task"]["state"] == "running")
                .await;
        }
        // Around the timeout: half of it to one and a half times it, plus the master's
        // allowance sometimes.
        let cut = Duration::from_millis(rng.random_range(
            s.timeout.as_millis() as u64 / 2..s.timeout.as_millis() as u64 * 2 + 2_000,
        ));
        let fault = if rng.random_bool(0.5) {
            Fault::BlackHole
        } else {
            Fault::Reset
        };
        if let Link::Proxy { proxy, .. } = &world.agents[0].links[0] {
            proxy.set(fault);
        }
        tokio::time::sleep(cut).await;
        world.restore(0);
        for (id, tag) in [(k, &kt), (c, &ct)] {
            let view = world.wait_done(id).await;
            // A started attempt's Finished must reach the master, even after the outcome;
            // not there within the bound, it counts as lost.
            let deadline = tokio::time::Instant::now() + WAIT * 2;
            let reported = loop {
                let v = world.task(id);
                if !events(&v, "finished", None).is_empty()
                    || tokio::time::Instant::now() >= deadline
                {
                    break v;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let (starts, _ends) = world.marks(tag);
            let started_events = events(&reported, "started", None).len();
            if starts > 1 || started_events > 1 {
                double_starts += 1;
                eprintln!("cycle {cycle}: task {id} started {starts} times: {reported}");
            }
            if events(&reported, "finished", None).is_empty() {
                lost_results += 1;
                eprintln!("cycle {cycle}: task {id} result lost: {reported}");
            }
            let state = view["task"]["state"].as_str().unwrap_or("?").to_owned();
            let policy = if tag.starts_with('k') {
                "kill"
            } else {
                "continue"
            };
            *outcomes.entry(format!("{policy}:{state}")).or_default() += 1;
        }
        if cycle % 10 == 9 {
            eprintln!("soak: {} cycles, outcomes {outcomes:?}", cycle + 1);
        }
    }
    eprintln!(
        "soak result: {cycles} cycles, double starts {double_starts}, lost results \
         {lost_results}, outcomes {outcomes:?}"
    );
    assert_eq!(double_starts, 0);
    assert_eq!(lost_results, 0);
}
