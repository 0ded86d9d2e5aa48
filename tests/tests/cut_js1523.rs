//! JS-1523, kill on loss: the agent's cable is pulled while a `kill` task runs. The agent
//! terminates the task once the master has been silent for the task's heartbeat timeout, the
//! master marks the task failed once the same timeout plus its delay allowance has passed, and
//! when the cable is back the agent's account of the kill reaches the master.

use tether_tests::cut::timeline::{SLACK, Timeline};
use tether_tests::cut::world::{
    DELAY_ALLOWANCE, Layout, Run, Settings, World, agent_time, events, master_time, task_for,
};
use tether_tests::cut_scenario;

cut_scenario!(kill_on_loss);

async fn kill_on_loss(run: Run) {
    let s = Settings::SHORT;
    let Some(world) = World::start(run, Layout::new("js1523", run, 1)).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let script = world.marked("task", "exec sleep 60");
    let id = world.submit(&task_for(&agent, &script, "kill", s));
    world
        .wait_task(id, "running", |v| v["task"]["state"] == "running")
        .await;

    let mut tl = Timeline::new(format!("JS-1523 kill on loss ({run})"));
    tl.t0("cut (cable pulled)", world.cut(0));
    let failed = world
        .wait_task(id, "failed by the master", |v| {
            v["task"]["state"] == "failed"
        })
        .await;
    let restored = world.restore(0);
    let view = world
        .wait_task(id, "reported killed", |v| {
            !events(v, "finished", None).is_empty()
        })
        .await;

    let marked_failed = world.state_seen(id, &["failed"], tl.t0_ms());
    tl.row(
        "agent: MQTT connection lost (log)",
        world.log_seen(&agent, "connection lost", tl.t0_ms()),
    );
    let kill_at = agent_time(&view, "terminating");
    tl.row("kill signalled (Terminating, agent clock)", kill_at);
    tl.row(
        "master: agent unavailable",
        world.unavailable_seen(&agent, tl.t0_ms()),
    );
    tl.row("master: task failed", marked_failed);
    tl.row("cable restored", Some(restored));
    tl.row(
        "agent reconnected (log)",
        world.log_seen(&agent, "connected to", restored),
    );
    tl.row(
        "result recorded (Finished stored)",
        master_time(&view, "finished"),
    );
    tl.print();

    // The agent judges the master by the last heartbeat it heard, at most one period before
    // the cut: never earlier than timeout - period, and promptly after the timeout.
    tl.assert_between(
        "kill signalled",
        kill_at,
        s.timeout - s.period,
        s.timeout + SLACK,
    );
    tl.assert_between(
        "master: task failed",
        marked_failed,
        s.timeout + DELAY_ALLOWANCE - s.period,
        s.timeout + DELAY_ALLOWANCE + SLACK,
    );
    assert!(
        kill_at.is_some_and(|k| k < restored),
        "the agent killed on its own, before the cable was back"
    );
    assert_eq!(failed["task"]["outcome"]["kind"], "agent_lost", "{failed}");
    let fin = &events(&view, "finished", None)[0]["event"]["kind"]["Finished"];
    assert_eq!(fin["cause"], "MasterLost", "{view}");
    assert_eq!(
        fin["exit"]["Signal"], 15,
        "SIGTERM ended it within the grace: {view}"
    );
    assert_eq!(world.marks("task"), (1, 0), "started once, never completed");
    assert_eq!(
        view["task"]["state"], "failed",
        "a late report does not revive the task"
    );
}
