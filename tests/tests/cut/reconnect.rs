//! Reconnect: an outage shorter than the heartbeat timeout changes nothing (the task runs
//! once and succeeds); one beyond it kills a `kill` task and the master marks it failed; the
//! long-outage settings (larger period and timeout) carry a task through a cut far longer than
//! the default timeout, while a default-settings task beside it is killed by the same cut.

use std::time::Duration;

use tether_tests::cut::loss::cut_until_failed;
use tether_tests::cut::timeline::Timeline;
use tether_tests::cut::world::{
    DELAY_ALLOWANCE, Layout, Run, Settings, World, agent_time, events, master_time, task_for,
};
use tether_tests::cut_scenario;
use tether_tests::proxy::Fault;

cut_scenario!(
    short_outage_keeps_the_task,
    long_outage_kills_the_task,
    long_settings_ride_out_a_long_outage
);

/// Settings with room for a real reconnect (reset, back-off, resubscribe, next heartbeat)
/// inside the timeout.
const ROOMY: Settings = Settings {
    period: Duration::from_secs(1),
    timeout: Duration::from_secs(5),
    grace: Duration::from_secs(1),
};

/// The long-outage settings, scaled down: 2 s / 20 s against the default 1 s / 3 s.
const LONG: Settings = Settings {
    period: Duration::from_secs(2),
    timeout: Duration::from_secs(20),
    grace: Duration::from_secs(1),
};

async fn short_outage_keeps_the_task(run: Run) {
    let s = ROOMY;
    // Reset, not black hole: the connection really drops and the agent reconnects.
    let mut layout = Layout::new("r001s", run, 1);
    layout.cut_with = Fault::Reset;
    let Some(world) = World::start(run, layout).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let go = world.agents[0].home.path().join("go");
    let script = world.marked(
        "task",
        &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
    );
    let id = world.run_task(&task_for(&agent, &script, "kill", s)).await;

    let mut tl = Timeline::new(format!("001 short outage keeps the task ({run})"));
    tl.t0("cut", world.cut(0));
    // Well inside the timeout: cut + back-off + a heartbeat period still fits.
    let outage = s.timeout - 4 * s.period;
    tokio::time::sleep(outage).await;
    let restored = world.restore(0);
    // Let the task outlive the timeout counted from the cut, so a missed reconnect would
    // have killed it.
    let until = tokio::time::Instant::now() + s.timeout + s.period;
    while tokio::time::Instant::now() < until {
        let v = world.task(id);
        assert!(
            events(&v, "terminating", None).is_empty(),
            "killed though contact came back within the timeout: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&go, b"").expect("go");
    let view = world.wait_done(id).await;

    tl.row(
        "agent: MQTT connection lost (log)",
        world.log_seen(&agent, "connection lost", tl.t0_ms()),
    );
    tl.row("cut restored", Some(restored));
    tl.row(
        "agent reconnected (log)",
        world.log_seen(&agent, "connected to", restored),
    );
    tl.row("kill signalled", agent_time(&view, "terminating"));
    tl.row(
        "master: task failed",
        world.state_seen(id, &["failed"], tl.t0_ms()),
    );
    tl.row(
        "result recorded (Finished stored)",
        master_time(&view, "finished"),
    );
    tl.print();

    assert_eq!(view["task"]["state"], "succeeded", "{view}");
    assert_eq!(world.marks("task"), (1, 1), "ran once, to the end");
    assert_eq!(events(&view, "started", None).len(), 1, "{view}");
    assert_eq!(view["attempts"].as_array().map(Vec::len), Some(1));
}

async fn long_outage_kills_the_task(run: Run) {
    let s = Settings::SHORT;
    let mut layout = Layout::new("r001l", run, 1);
    layout.cut_with = Fault::Reset;
    let Some(world) = World::start(run, layout).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let script = world.marked("task", "exec sleep 60");
    let id = world.run_task(&task_for(&agent, &script, "kill", s)).await;

    let title = format!("001 long outage kills ({run})");
    let view = cut_until_failed(&world, title, 0, id, s).await.reported;
    let fin = &events(&view, "finished", None)[0]["event"]["kind"]["Finished"];
    assert_eq!(fin["cause"], "MasterLost", "{view}");
    assert_eq!(world.marks("task"), (1, 0), "started once, killed");
    assert_eq!(view["task"]["state"], "failed");
    assert_eq!(view["task"]["outcome"]["kind"], "agent_lost");
}

async fn long_settings_ride_out_a_long_outage(run: Run) {
    let Some(world) = World::start(run, Layout::new("r001x", run, 1)).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let cut_for = Duration::from_secs(8);
    assert!(cut_for > Settings::SHORT.timeout + DELAY_ALLOWANCE && cut_for < LONG.timeout);
    let go = world.agents[0].home.path().join("go");
    let wait_go = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
    let long = world.submit(&task_for(
        &agent,
        &world.marked("long", &wait_go),
        "kill",
        LONG,
    ));
    let short = world.submit(&task_for(
        &agent,
        &world.marked("short", "exec sleep 60"),
        "kill",
        Settings::SHORT,
    ));
    for id in [long, short] {
        world
            .wait_task(id, "running", |v| v["task"]["state"] == "running")
            .await;
    }

    let mut tl = Timeline::new(format!(
        "001 long-outage settings ride out an 8 s cut ({run})"
    ));
    tl.t0("cut (8 s)", world.cut(0));
    tokio::time::sleep(cut_for).await;
    let restored = world.restore(0);
    // Past the reconnect: the long task must still be running, then finishes when told.
    let short_view = world
        .wait_task(short, "reported killed", |v| {
            !events(v, "finished", None).is_empty()
        })
        .await;
    // Back in contact: the master shows it running again, and nothing killed it.
    let long_view = world
        .wait_task(long, "running again", |v| v["task"]["state"] == "running")
        .await;
    assert!(
        events(&long_view, "terminating", None).is_empty(),
        "{long_view}"
    );
    std::fs::write(&go, b"").expect("go");
    let long_view = world.wait_done(long).await;

    tl.row(
        "default task: kill signalled",
        agent_time(&short_view, "terminating"),
    );
    tl.row(
        "default task: master marked failed",
        world.state_seen(short, &["failed"], tl.t0_ms()),
    );
    tl.row("cut restored", Some(restored));
    tl.row(
        "agent reconnected (log)",
        world.log_seen(&agent, "connected to", restored),
    );
    tl.row(
        "default task: kill recorded",
        master_time(&short_view, "finished"),
    );
    tl.row(
        "long task: result recorded",
        master_time(&long_view, "finished"),
    );
    tl.print();

    assert_eq!(long_view["task"]["state"], "succeeded", "{long_view}");
    assert!(events(&long_view, "terminating", None).is_empty());
    assert_eq!(
        world.marks("long"),
        (1, 1),
        "the long task ran once, to the end"
    );
    assert_eq!(world.marks("short"), (1, 0), "the default task was killed");
    assert_eq!(short_view["task"]["state"], "failed", "{short_view}");
}
