//! The real master with real agents on loopback: cluster scheduling (round-robin and
//! fixed-priority), fail-over when the active member is killed with kill -9, and a normal stop
//! that is not a failure, and switch-over (disable/enable) of a member.
//!
//! Every wait polls the master's HTTP API with a deadline; nothing sleeps to synchronise.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tether_tests::harness::WAIT;
use tether_tests::harness::fleet::{Fleet, fast_policy, task};
use tether_tests::harness::master_proc::{attempt_agents, find_agent, task_state};
use tether_tests::harness::tempdir::TempDir;

/// A task that runs until `go` exists (the task polls, not the test).
fn wait_for_file(go: &Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.02; done", go.display())
}

fn cluster(name: &str) -> Value {
    json!({ "cluster": name })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_visits_members_in_order() {
    let fleet = Fleet::start(&["rr-a", "rr-b", "rr-c"], 1000).await;
    fleet.cluster("rr", "round-robin", &["rr-a", "rr-b", "rr-c"]);
    let m = fleet.master();
    // Submitted one after another, each finished before the next: the order is the cluster's,
    // not an accident of concurrent dispatch.
    let mut order = Vec::new();
    for _ in 0..7 {
        let id = m.submit(&task(cluster("rr"), &["true"], json!({})));
        let done = m.wait_finished(id).await;
        assert_eq!(task_state(&done), "succeeded", "{done}");
        order.extend(attempt_agents(&done));
    }
    assert_eq!(
        order,
        ["rr-a", "rr-b", "rr-c", "rr-a", "rr-b", "rr-c", "rr-a"],
        "one attempt per task, members in turn"
    );
    // A burst dispatched at once keeps the turn too.
    let burst: Vec<u64> = (0..3)
        .map(|_| m.submit(&task(cluster("rr"), &["true"], json!({}))))
        .collect();
    let mut agents = Vec::new();
    for id in burst {
        agents.extend(attempt_agents(&m.wait_finished(id).await));
    }
    assert_eq!(agents, ["rr-b", "rr-c", "rr-a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_priority_always_takes_the_first_available() {
    let mut fleet = Fleet::start(&["fp-a", "fp-b", "fp-c"], 1000).await;
    // Priority is the list's order, not the names'.
    fleet.cluster("fp", "fixed-priority", &["fp-b", "fp-a", "fp-c"]);
    let m = fleet.master();
    let ids: Vec<u64> = (0..4)
        .map(|_| m.submit(&task(cluster("fp"), &["true"], json!({}))))
        .collect();
    for id in ids {
        let done = m.wait_finished(id).await;
        assert_eq!(task_state(&done), "succeeded", "{done}");
        assert_eq!(attempt_agents(&done), ["fp-b"], "{done}");
    }
    // With the first member gone, the second in the list (not the first by name).
    fleet.agent("fp-b").process().sigterm();
    assert!(
        fleet
            .agent("fp-b")
            .process()
            .wait_exit(WAIT)
            .await
            .is_some(),
        "fp-b stops"
    );
    let m = fleet.master();
    m.wait_presence("fp-b", "stopped").await;
    let id = m.submit(&task(cluster("fp"), &["true"], json!({})));
    assert_eq!(attempt_agents(&m.wait_finished(id).await), ["fp-a"]);
    // Back in the cluster, the first member takes the next task again.
    let b = fleet.agent("fp-b");
    b.process = Some(b.home.start());
    let m = fleet.master();
    m.wait_available("fp-b").await;
    let id = m.submit(&task(cluster("fp"), &["true"], json!({})));
    assert_eq!(attempt_agents(&m.wait_finished(id).await), ["fp-b"]);
}

/// kill -9 of the member running a `kill` task: the broker fires the agent's will, the master
/// skips the member for the next task at once, and gives the running task up as failed
/// (agent lost) once the task's heartbeat timeout plus the 2 s allowance has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_kill9_of_the_active_member() {
    let mut fleet = Fleet::start(&["ko-a", "ko-b"], 1000).await;
    fleet.cluster("ko", "fixed-priority", &["ko-a", "ko-b"]);
    let dir = TempDir::new("ko").expect("temp dir");
    let go = dir.join("go");
    let m = fleet.master();
    let long = m.submit(&task(
        cluster("ko"),
        &["/bin/sh", "-c", &wait_for_file(&go)],
        fast_policy("kill"),
    ));
    let running = m.wait_state(long, "running").await;
    assert_eq!(attempt_agents(&running), ["ko-a"]);

    fleet.agent("ko-a").process().kill9();
    let m = fleet.master();
    // The will: unavailable at once, long before any heartbeat timeout.
    m.wait_presence("ko-a", "lost").await;
    let next = m.submit(&task(cluster("ko"), &["true"], fast_policy("kill")));
    let done = m.wait_finished(next).await;
    assert_eq!(task_state(&done), "succeeded", "{done}");
    assert_eq!(
        attempt_agents(&done),
        ["ko-b"],
        "never dispatched to the dead member"
    );

    let failed = m.wait_finished(long).await;
    assert_eq!(task_state(&failed), "failed", "{failed}");
    assert_eq!(failed["task"]["outcome"]["kind"], "agent_lost", "{failed}");
    assert_eq!(failed["attempts"][0]["state"], "lost", "{failed}");
    // Never before its time, a lower bound that load cannot break: the master heard the agent
    // at least when its `started` event arrived, and waits the task's heartbeat timeout plus
    // the 2 s allowance from its last contact.
    let started_at = failed["events"]
        .as_array()
        .and_then(|evs| evs.iter().find(|e| e["kind"] == "started"))
        .and_then(|e| e["received_ms"].as_u64())
        .expect("a started event");
    let failed_at = failed["task"]["updated_ms"].as_u64().expect("updated_ms");
    assert!(
        failed_at >= started_at + 3000 + 2000,
        "failed {} ms after the last contact, before timeout + allowance",
        failed_at.saturating_sub(started_at)
    );
    // Only one attempt: a kill task is not moved elsewhere (it may have had effects).
    assert_eq!(attempt_agents(&failed), ["ko-a"]);

    // The member comes back: its journal says the attempt was running when it died; the
    // master keeps the task failed (decided once) and the member takes new tasks again.
    let a = fleet.agent("ko-a");
    a.process = Some(a.home.start());
    let m = fleet.master();
    m.wait_available("ko-a").await;
    let id = m.submit(&task(cluster("ko"), &["true"], json!({})));
    assert_eq!(attempt_agents(&m.wait_finished(id).await), ["ko-a"]);
    let again = m.task(long);
    assert_eq!(task_state(&again), "failed", "{again}");
    assert_eq!(again["task"]["outcome"], failed["task"]["outcome"]);
}

/// SIGTERM of the member running a task: it drains (the task finishes and is reported), says
/// `stopped`, and nothing is recorded as a failure; the next task goes to the other member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_a_normal_stop_is_not_a_failure() {
    let mut fleet = Fleet::start(&["ns-a", "ns-b"], 1000).await;
    fleet.cluster("ns", "fixed-priority", &["ns-a", "ns-b"]);
    let dir = TempDir::new("ns").expect("temp dir");
    let go = dir.join("go");
    let m = fleet.master();
    let first = m.submit(&task(
        cluster("ns"),
        &["/bin/sh", "-c", &wait_for_file(&go)],
        fast_policy("kill"),
    ));
    m.wait_state(first, "running").await;

    fleet.agent("ns-a").process().sigterm();
    // The agent drains: it waits for its task, which ends once `go` exists.
    std::fs::write(&go, b"").expect("go file");
    let status = fleet.agent("ns-a").process().wait_exit(WAIT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "ns-a drains and exits cleanly: {status:?}"
    );
    let m = fleet.master();
    m.wait_presence("ns-a", "stopped").await;
    let done = m.wait_finished(first).await;
    assert_eq!(task_state(&done), "succeeded", "{done}");

    let next = m.submit(&task(cluster("ns"), &["true"], fast_policy("kill")));
    let done = m.wait_finished(next).await;
    assert_eq!(attempt_agents(&done), ["ns-b"], "{done}");

    // A negative check needs time to pass: past the tasks' heartbeat timeout plus the master's
    // allowance (3 s + 2 s), ns-a is still `stopped` (not `lost`) and nothing failed. This
    // sleep synchronises nothing; it is the length of the observation.
    tokio::time::sleep(Duration::from_millis(3000 + 2000 + 1000)).await;
    let a = find_agent(&m.get("/api/agents"), "ns-a").expect("ns-a known");
    assert_eq!(a["presence"], "stopped", "{a}");
    let tasks = m.get("/api/tasks");
    for t in tasks.as_array().expect("task list") {
        assert_eq!(t["state"], "succeeded", "{t}");
    }
}

/// Switch-over with `tetherctl agent disable|enable`: the disabled member finishes what it
/// runs (succeeded, not failed), the cluster's next task goes to the next member, and once
/// enabled the first member takes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_over_a_member_with_tetherctl() {
    let fleet = Fleet::start(&["sw-a", "sw-b"], 1000).await;
    fleet.cluster("sw", "fixed-priority", &["sw-a", "sw-b"]);
    let m = fleet.master();
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(
            tether_tests::harness::bins::binary("tetherctl").expect("tetherctl"),
        )
        .env("TETHER_MASTER", format!("http://{}", m.http))
        .env("TETHER_TOKEN", &m.token)
        .args(args)
        .output()
        .expect("tetherctl runs");
        assert!(out.status.success(), "tetherctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir = TempDir::new("switch-over").expect("temp dir");
    let go = dir.path().join("go");
    let long = m.submit(&task(
        cluster("sw"),
        &["sh", "-c", &wait_for_file(&go)],
        json!({}),
    ));
    m.wait_state(long, "running").await;

    assert_eq!(ctl(&["agent", "disable", "sw-a"]), "agent sw-a: disabled\n");
    assert_eq!(
        ctl(&["agent", "disable", "sw-a"]),
        "agent sw-a: disabled (already)\n"
    );
    let table = ctl(&["agents"]);
    let row = table.lines().find(|l| l.starts_with("sw-a")).unwrap();
    assert!(row.contains(" no ") && row.contains(" yes "), "{table}");
    let page = ctl(&["agents", "--available", "true", "--limit", "5"]);
    assert!(
        page.contains("sw-b") && !page.contains("sw-a"),
        "a disabled agent is not available:\n{page}"
    );
    let next = m.submit(&task(cluster("sw"), &["true"], json!({})));
    assert_eq!(attempt_agents(&m.wait_finished(next).await), ["sw-b"]);

    std::fs::write(&go, "").unwrap();
    let done = m.wait_finished(long).await;
    assert_eq!(task_state(&done), "succeeded", "{done}");
    assert_eq!(attempt_agents(&done), ["sw-a"]);

    ctl(&["agent", "enable", "sw-a"]);
    m.wait_available("sw-a").await;
    let back = m.submit(&task(cluster("sw"), &["true"], json!({})));
    assert_eq!(attempt_agents(&m.wait_finished(back).await), ["sw-a"]);
    assert_eq!(
        find_agent(&m.get("/api/agents"), "sw-a").unwrap()["disabled"],
        false
    );
}
