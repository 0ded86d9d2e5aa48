//! Master down: orders given in advance (`start_at`) run on time while the master process
//! is dead (kill -9; with the embedded broker, the broker dies with it); when it comes back on
//! the same data directory the agent reports every result, and nothing is left unacknowledged
//! in its journal.

use std::time::Duration;

use serde_json::json;
use tether_tests::cut::observe::unix_ms;
use tether_tests::cut::timeline::Timeline;
use tether_tests::cut::world::{Layout, Run, Settings, World, agent_time, master_time, task_for};
use tether_tests::cut_scenario;
use tether_tests::harness::WAIT;

cut_scenario!(orders_run_while_master_down);

const ORDERS: u64 = 3;

async fn orders_run_while_master_down(run: Run) {
    let s = Settings::SHORT;
    let Some(mut world) = World::start(run, Layout::new("m002", run, 1)).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let base = unix_ms() + 3_000;
    let mut ids = Vec::new();
    for n in 0..ORDERS {
        let mut body = task_for(
            &agent,
            &world.marked(&format!("order{n}"), "echo ran; sleep 0.5"),
            "continue",
            s,
        );
        body["start_at_ms"] = json!(base + n * 1_000);
        ids.push(world.submit(&body));
    }
    for &id in &ids {
        world
            .wait_task(id, "accepted", |v| v["task"]["state"] == "accepted")
            .await;
    }

    let mut tl = Timeline::new(format!("002 master down, orders in advance ({run})"));
    tl.t0("master killed (kill -9)", world.kill_master());
    // The orders run on the agent alone; bounded by their start times plus slack.
    let deadline = tokio::time::Instant::now() + WAIT;
    while (0..ORDERS).any(|n| world.marks(&format!("order{n}")) != (1, 1)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders did not run while the master was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ran = unix_ms();
    let back = world.restart_master();
    let mut views = Vec::new();
    for &id in &ids {
        views.push(world.wait_done(id).await);
    }

    tl.row(
        "agent: MQTT connection lost (log)",
        world.log_seen(&agent, "connection lost", tl.t0_ms()),
    );
    tl.row(
        "first order started (agent clock)",
        agent_time(&views[0], "started"),
    );
    tl.row(
        "last order finished (agent clock)",
        agent_time(&views[views.len() - 1], "finished"),
    );
    tl.row("all orders seen done by the test", Some(all_ran));
    tl.row("master restarted (same data dir)", Some(back));
    tl.row(
        "agent reconnected (log)",
        world.log_seen(&agent, "connected to", back),
    );
    let recorded = views
        .iter()
        .map(|v| master_time(v, "finished"))
        .max()
        .flatten();
    tl.row("all results recorded", recorded);

    for (n, v) in views.iter().enumerate() {
        assert_eq!(v["task"]["state"], "succeeded", "{v}");
        let started = agent_time(v, "started").expect("started event");
        let at = base + n as u64 * 1_000;
        assert!(started >= at, "order {n} started before its time: {v}");
        assert!(
            started < back,
            "order {n} ran while the master was down: {v}"
        );
        assert!(
            master_time(v, "finished").is_some_and(|r| r >= back),
            "its result reached the master after it came back"
        );
    }
    // Every event acknowledged: the agent stops with nothing left to report.
    let acked_up = unix_ms();
    let proc = world.agent_proc(0);
    proc.sigterm();
    assert!(
        proc.wait_exit(WAIT).await.is_some(),
        "agent drains and exits"
    );
    let log = proc.log();
    tl.row("agent stopped, journal checked", Some(acked_up));
    tl.print();
    assert!(
        log.contains("stopped: 0 events left unacknowledged"),
        "journal back to empty:\n{log}"
    );
}
