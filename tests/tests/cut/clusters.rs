//! Clusters, fail-over: two agents in a fixed-priority cluster behind cuttable links.
//!
//! kill -9 of the active member while a `kill` task and a `continue` task (with `lost_after`)
//! run on it: the broker fires the member's will, the next task goes to the other member at
//! once, the `kill` task is failed (agent lost) no earlier than its timeout plus the master's
//! delay allowance and is never moved, the `continue` task gets a second attempt on the other
//! member, which decides its outcome. When the member comes back nothing runs again and nothing
//! decided changes, and it is first in the cluster again.
//!
//! A normal stop (SIGTERM) of the active member: it drains (its task finishes and is
//! reported), says `stopped`, the next task goes to the other member, and nothing is recorded
//! as a failure, even past the timeout plus allowance.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tether_tests::cut::observe::unix_ms;
use tether_tests::cut::timeline::{SLACK, Timeline};
use tether_tests::cut::world::{
    DELAY_ALLOWANCE, Layout, Run, Settings, World, attempts, events, master_time, task_for_cluster,
};
use tether_tests::cut_scenario;
use tether_tests::harness::WAIT;
use tether_tests::harness::tempdir::TempDir;

cut_scenario!(
    failover_after_kill9_of_the_active_member,
    failover_after_a_normal_stop_is_not_a_failure
);

/// A script body that runs until `go` exists (the task polls, not the test).
fn until(go: &Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.05; done", go.display())
}

/// A fixed-priority cluster of the world's two agents, in that order.
fn fixed_priority(world: &World, name: &str) -> String {
    let cluster = format!("{name}-{}-{}", world.run.broker, world.run.method);
    let members = [world.agents[0].id.clone(), world.agents[1].id.clone()];
    world.post(
        "/api/clusters",
        &json!({ "name": cluster, "mode": "fixed-priority", "members": members }),
    );
    cluster
}

/// The agents of a task's attempts, in order.
fn attempt_agents(view: &Value) -> Vec<String> {
    attempts(view)
        .iter()
        .filter_map(|a| a["agent_id"].as_str().map(str::to_owned))
        .collect()
}

async fn failover_after_kill9_of_the_active_member(run: Run) {
    let s = Settings::SHORT;
    let Some(mut world) = World::start(run, Layout::new("ck", run, 2)).await else {
        return;
    };
    let (a, b) = (world.agents[0].id.clone(), world.agents[1].id.clone());
    let cluster = fixed_priority(&world, "ck");
    let dir = TempDir::new("ck").expect("temp dir");
    let go = dir.join("go");

    let kill_id = world
        .run_task(&task_for_cluster(
            &cluster,
            &world.marked("kill", &until(&go)),
            "kill",
            s,
        ))
        .await;
    let lost_after = Duration::from_secs(4);
    let mut body = task_for_cluster(
        &cluster,
        &world.marked("continue", &until(&go)),
        "continue",
        s,
    );
    body["policy"]["lost_after_ms"] = json!(lost_after.as_millis() as u64);
    let cont_id = world.run_task(&body).await;
    for id in [kill_id, cont_id] {
        let v = world.task(id);
        assert_eq!(attempt_agents(&v), [a.as_str()], "fixed priority: {v}");
    }

    let mut tl = Timeline::new(format!("cluster fail-over, kill -9 of {a} ({run})"));
    world.agent_proc(0).kill9();
    tl.t0(&format!("{a} killed (kill -9)"), unix_ms());
    // The will: unavailable at once, long before any heartbeat timeout.
    world
        .wait_agent(&a, "lost (its will)", |v| {
            v["presence"] == "lost" && v["available"] == false
        })
        .await;
    let next_id = world.submit(&task_for_cluster(
        &cluster,
        &world.marked("next", "true"),
        "kill",
        s,
    ));
    let next = world.wait_done(next_id).await;
    // The rescheduled `continue` attempt may now finish on the other member.
    std::fs::write(&go, b"").expect("go file");
    let failed = world.wait_done(kill_id).await;
    let moved = world.wait_done(cont_id).await;

    tl.row(
        &format!("master: {a} unavailable"),
        world.unavailable_seen(&a, tl.t0_ms()),
    );
    tl.row("next task recorded done", master_time(&next, "finished"));
    tl.row(
        "kill task failed (agent lost)",
        failed["task"]["updated_ms"].as_u64(),
    );
    tl.row(
        "continue task: second attempt started",
        events(&moved, "started", None)
            .iter()
            .filter_map(|e| e["received_ms"].as_u64())
            .max(),
    );
    tl.row(
        "continue task recorded done",
        master_time(&moved, "finished"),
    );
    tl.print();

    assert_eq!(next["task"]["state"], "succeeded", "{next}");
    assert_eq!(
        attempt_agents(&next),
        [b.as_str()],
        "never to the dead member"
    );

    assert_eq!(failed["task"]["state"], "failed", "{failed}");
    assert_eq!(failed["task"]["outcome"]["kind"], "agent_lost", "{failed}");
    assert_eq!(
        attempt_agents(&failed),
        [a.as_str()],
        "a kill task is not moved (it may have had effects): {failed}"
    );
    // Never before its time: the master heard the member at the latest when it died, and waits
    // the task's timeout plus the allowance from its last contact.
    let lost_delay = (s.timeout + DELAY_ALLOWANCE).as_millis() as u64;
    let started = master_time(&failed, "started").expect("a started event");
    let failed_at = failed["task"]["updated_ms"].as_u64().expect("updated_ms");
    assert!(
        failed_at >= started + lost_delay,
        "failed {} ms after its start, before timeout + allowance",
        failed_at - started
    );
    assert!(
        failed_at <= tl.t0_ms() + lost_delay + SLACK.as_millis() as u64,
        "failed {} ms after the kill",
        failed_at.saturating_sub(tl.t0_ms())
    );

    assert_eq!(moved["task"]["state"], "succeeded", "{moved}");
    assert_eq!(
        attempt_agents(&moved),
        [a.as_str(), b.as_str()],
        "rescheduled once, on the other member: {moved}"
    );
    let second = attempts(&moved)[1]["id"].as_u64();
    assert_eq!(
        moved["task"]["outcome"]["attempt"].as_u64(),
        second,
        "{moved}"
    );

    // Exactly once: one start per attempt; the dead member's runs never completed.
    assert_eq!(world.marks("kill"), (1, 0), "the kill task started once");
    assert_eq!(world.marks("continue"), (2, 1), "one start per attempt");
    assert_eq!(world.marks("next"), (1, 1));

    // The member comes back: its journal reports the attempts it held; nothing runs again,
    // nothing decided changes, and it is first in the cluster again.
    world.start_agent(0);
    world
        .wait_agent(&a, "online and available again", |v| {
            v["presence"] == "online" && v["available"] == true
        })
        .await;
    let after_id = world.submit(&task_for_cluster(
        &cluster,
        &world.marked("after", "true"),
        "kill",
        s,
    ));
    let after = world.wait_done(after_id).await;
    assert_eq!(attempt_agents(&after), [a.as_str()], "{after}");
    let again = world.task(kill_id);
    assert_eq!(again["task"]["state"], "failed", "{again}");
    assert_eq!(again["task"]["outcome"], failed["task"]["outcome"]);
    let again = world.task(cont_id);
    assert_eq!(again["task"]["state"], "succeeded", "{again}");
    assert_eq!(again["task"]["outcome"], moved["task"]["outcome"]);
    assert_eq!(world.marks("kill"), (1, 0), "not started again");
    assert_eq!(world.marks("continue"), (2, 1), "not started again");
}

async fn failover_after_a_normal_stop_is_not_a_failure(run: Run) {
    let s = Settings::SHORT;
    let Some(mut world) = World::start(run, Layout::new("cs", run, 2)).await else {
        return;
    };
    let (a, b) = (world.agents[0].id.clone(), world.agents[1].id.clone());
    let cluster = fixed_priority(&world, "cs");
    let dir = TempDir::new("cs").expect("temp dir");
    let go = dir.join("go");
    let first_id = world
        .run_task(&task_for_cluster(
            &cluster,
            &world.marked("first", &until(&go)),
            "kill",
            s,
        ))
        .await;
    assert_eq!(attempt_agents(&world.task(first_id)), [a.as_str()]);

    let mut tl = Timeline::new(format!("cluster, normal stop of {a} ({run})"));
    world.agent_proc(0).sigterm();
    tl.t0(&format!("{a} stopped (SIGTERM)"), unix_ms());
    // The agent drains: it waits for its task, which ends once `go` exists.
    std::fs::write(&go, b"").expect("go file");
    let status = world.agent_proc(0).wait_exit(WAIT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{a} drains and exits cleanly: {status:?}"
    );
    let exited = unix_ms();
    world
        .wait_agent(&a, "stopped", |v| v["presence"] == "stopped")
        .await;
    let first = world.wait_done(first_id).await;
    let next_id = world.submit(&task_for_cluster(
        &cluster,
        &world.marked("next", "true"),
        "kill",
        s,
    ));
    let next = world.wait_done(next_id).await;

    tl.row("first task recorded done", master_time(&first, "finished"));
    tl.row(&format!("{a} exited"), Some(exited));
    tl.row("next task recorded done", master_time(&next, "finished"));
    tl.print();

    assert_eq!(first["task"]["state"], "succeeded", "{first}");
    assert_eq!(attempt_agents(&first), [a.as_str()], "{first}");
    assert!(
        events(&first, "terminating", None).is_empty(),
        "drained, not killed: {first}"
    );
    assert_eq!(next["task"]["state"], "succeeded", "{next}");
    assert_eq!(attempt_agents(&next), [b.as_str()], "{next}");
    assert_eq!(world.marks("first"), (1, 1), "ran once, to the end");
    let log = world.agent_proc(0).log();
    assert!(
        log.contains("drained"),
        "{a} drained before it stopped:\n{log}"
    );
    assert_eq!(world.marks("next"), (1, 1));

    // A negative check needs time to pass: past the tasks' timeout plus the master's allowance,
    // the member is still `stopped` (not `lost`) and nothing failed. This sleep synchronises
    // nothing; it is the length of the observation.
    tokio::time::sleep(s.timeout + DELAY_ALLOWANCE + Duration::from_secs(1)).await;
    world
        .wait_agent(&a, "still stopped", |v| v["presence"] == "stopped")
        .await;
    for id in [first_id, next_id] {
        let v = world.task(id);
        assert_eq!(v["task"]["state"], "succeeded", "{v}");
    }
}
