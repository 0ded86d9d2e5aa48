//! Master down: kill -9 of the real master and a restart on the same data directory lose
//! nothing. Tasks that finished while it was down are recorded after the restart, task ids keep
//! growing, and no task is reported succeeded twice (one attempt, one `finished` event each).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tether_tests::harness::fleet::{Fleet, task};
use tether_tests::harness::master_proc::{MasterProcess, attempt_agents, task_state};
use tether_tests::harness::tempdir::TempDir;

fn wait_for_file(go: &std::path::Path) -> String {
    format!(
        "while [ ! -e {} ]; do sleep 0.02; done; echo done",
        go.display()
    )
}

/// Each task's attempts and `finished` events: exactly one of each, and the task succeeded.
fn assert_succeeded_once(m: &MasterProcess, id: u64) -> Value {
    let t = m.task(id);
    assert_eq!(task_state(&t), "succeeded", "{t}");
    assert_eq!(attempt_agents(&t).len(), 1, "one attempt: {t}");
    let finished = t["events"].as_array().map_or(0, |evs| {
        evs.iter().filter(|e| e["kind"] == "finished").count()
    });
    assert_eq!(finished, 1, "one finished event: {t}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_kill9_and_restart_loses_nothing() {
    let mut fleet = Fleet::start(&["mr-a", "mr-b"], 1000).await;
    fleet.cluster("mr", "round-robin", &["mr-a", "mr-b"]);
    let dir = TempDir::new("mr").expect("temp dir");
    let go = dir.join("go");
    // `continue`: the tasks outlive the master's absence whatever its length.
    let policy = json!({
        "on_disconnect": "continue",
        "heartbeat_period_ms": 1000,
        "heartbeat_timeout_ms": 3000,
    });
    let m = fleet.master();
    let before = m.submit(&task(json!({ "cluster": "mr" }), &["true"], json!({})));
    m.wait_finished(before).await;
    let held: Vec<u64> = (0..4)
        .map(|_| {
            m.submit(&task(
                json!({ "cluster": "mr" }),
                &["/bin/sh", "-c", &wait_for_file(&go)],
                policy.clone(),
            ))
        })
        .collect();
    for &id in &held {
        m.wait_state(id, "running").await;
    }
    let epoch = m.epoch.clone();

    // kill -9 of the master (and its embedded broker); the tasks finish while it is down.
    fleet.master.take().expect("master").kill9();
    std::fs::write(&go, b"").expect("go file");
    let m = fleet.restart_master_after_kill9();
    assert_ne!(m.epoch, epoch, "a new incarnation");

    for &id in &held {
        m.wait_finished(id).await;
    }
    for &id in held.iter().chain([&before]) {
        assert_succeeded_once(m, id);
    }
    let output = m.get(&format!("/api/tasks/{}/output", held[0]));
    let text: String = output["chunks"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(text, "done\n", "{output}");

    // New tasks get new ids, above every id the first run gave.
    let after = m.submit(&task(json!({ "cluster": "mr" }), &["true"], json!({})));
    assert!(
        after > *held.iter().max().expect("held"),
        "id {after} reused"
    );
    m.wait_finished(after).await;
    assert_succeeded_once(m, after);

    // Another kill -9 right after, with nothing running: the restarted master has everything.
    let m = fleet.restart_master_after_kill9();
    let tasks = m.get("/api/tasks");
    let tasks = tasks.as_array().expect("task list");
    let ids: BTreeSet<u64> = tasks.iter().filter_map(|t| t["id"].as_u64()).collect();
    let expected: BTreeSet<u64> = held.iter().copied().chain([before, after]).collect();
    assert_eq!(ids, expected);
    for &id in &expected {
        assert_succeeded_once(m, id);
    }
    // Both agents are back and take work.
    m.wait_available("mr-a").await;
    m.wait_available("mr-b").await;
    let last = m.submit(&task(json!({ "cluster": "mr" }), &["true"], json!({})));
    assert!(last > after);
    let t = m.wait_finished(last).await;
    assert_eq!(task_state(&t), "succeeded", "{t}");
}
