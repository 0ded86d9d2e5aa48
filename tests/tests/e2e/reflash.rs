//! A real agent re-flashed (its state directory wiped, keys and id kept) or restored from an
//! older backup of its state, under the real master: its next tasks run and are stored at once,
//! the attempts it had open end as `lost` (journal replaced), and nothing starts twice.

use std::path::Path;

use serde_json::{Value, json};
use tether_tests::harness::fleet::{Fleet, fast_policy, task};
use tether_tests::harness::master_proc::{MasterProcess, attempt_agents, task_state};
use tether_tests::harness::tempdir::TempDir;

const AGENT: &str = "rf-a";

/// The journal the master holds for the agent.
fn journal_of(m: &MasterProcess) -> Option<String> {
    m.agent(AGENT)
        .and_then(|a| a["journal"].as_str().map(str::to_owned))
}

/// A shell task that records each start in `runs`, then waits for `go`.
fn held_task(dir: &Path, name: &str) -> String {
    let runs = dir.join(format!("{name}.runs"));
    let pid = dir.join(format!("{name}.pid"));
    let go = dir.join("go");
    format!(
        "echo run >> {runs}; echo $$ > {pid}; while [ ! -e {go} ]; do sleep 0.02; done",
        runs = runs.display(),
        pid = pid.display(),
        go = go.display()
    )
}

fn runs(dir: &Path, name: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{name}.runs")))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Submits `script` to the agent and waits until it runs.
async fn running(m: &MasterProcess, script: &str, policy: Value) -> u64 {
    let id = m.submit(&task(
        json!({ "agent": AGENT }),
        &["/bin/sh", "-c", script],
        policy,
    ));
    m.wait_state(id, "running").await;
    id
}

/// A task runs on the agent and succeeds with `text` as its output.
async fn echo_succeeds(m: &MasterProcess, text: &str) -> u64 {
    let id = m.submit(&task(json!({ "agent": AGENT }), &["echo", text], json!({})));
    let t = m.wait_finished(id).await;
    assert_eq!(task_state(&t), "succeeded", "{t}");
    assert_eq!(attempt_agents(&t).len(), 1, "{t}");
    let output = m.get(&format!("/api/tasks/{id}/output"));
    let got: String = output["chunks"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(got, format!("{text}\n"), "{output}");
    id
}

/// The board loses power: the agent and the task processes it ran end with no goodbye.
fn power_off(fleet: &mut Fleet, dir: &Path, tasks: &[&str]) {
    fleet.agent(AGENT).process.take().expect("agent").kill9();
    for name in tasks {
        let pid: i32 = std::fs::read_to_string(dir.join(format!("{name}.pid")))
            .expect("task pid file")
            .trim()
            .parse()
            .expect("a pid");
        tether_tests::harness::agent::send_signal(pid as u32, libc::SIGKILL);
    }
}

fn wipe(state: &Path) {
    std::fs::remove_dir_all(state).expect("wipe state");
    std::fs::create_dir(state).expect("empty state");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("backup dir");
    for entry in std::fs::read_dir(from).expect("state dir") {
        let entry = entry.expect("state entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy state file");
        }
    }
}

/// Waits until the master holds another journal than `old` for the agent.
async fn journal_replaced(m: &MasterProcess, old: Option<String>) {
    m.wait_for("the agent's journal replaced", "/api/agents", |_| {
        journal_of(m).filter(|j| Some(j) != old.as_ref())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflashed_between_tasks_and_while_tasks_run() {
    let mut fleet = Fleet::start(&[AGENT], 1000).await;
    let tmp = TempDir::new("reflash").expect("temp dir");
    let dir = tmp.path();
    let m = fleet.master();
    for n in 0..3 {
        echo_succeeds(m, &format!("before {n}")).await;
    }

    // Re-flashed between tasks: the next tasks run and are stored at once.
    let first = journal_of(fleet.master());
    assert!(
        first.is_some(),
        "the master names the journal in /api/agents"
    );
    fleet.agent(AGENT).process.take().expect("agent").kill9();
    // Re-flashing takes longer than the broker takes to publish the board's will.
    fleet.master().wait_presence(AGENT, "lost").await;
    wipe(&fleet.agent(AGENT).home.state_dir());
    let agent = fleet.agent(AGENT);
    agent.process = Some(agent.home.start());
    let m = fleet.master();
    // Available again only once a heartbeat of the new process named its journal.
    m.wait_available(AGENT).await;
    assert_ne!(journal_of(m), first, "{:?}", m.agent(AGENT));
    for n in 0..3 {
        echo_succeeds(m, &format!("after {n}")).await;
    }

    // Re-flashed while tasks run: the one without a retry ends lost, the one with a retry runs
    // again as a new attempt; neither starts again on its own.
    let lone = running(m, &held_task(dir, "lone"), fast_policy("continue")).await;
    let mut retried_policy = fast_policy("continue");
    retried_policy["retries"] = json!(1);
    let retried = running(m, &held_task(dir, "retried"), retried_policy).await;
    let second = journal_of(m);
    power_off(&mut fleet, dir, &["lone", "retried"]);
    wipe(&fleet.agent(AGENT).home.state_dir());
    let agent = fleet.agent(AGENT);
    agent.process = Some(agent.home.start());
    let m = fleet.master();
    journal_replaced(m, second).await;

    let t = m.wait_finished(lone).await;
    assert_eq!(task_state(&t), "lost", "{t}");
    assert_eq!(t["task"]["outcome"]["kind"], "journal_replaced", "{t}");
    m.wait_state(retried, "running").await;
    std::fs::write(dir.join("go"), b"").expect("go file");
    let t = m.wait_finished(retried).await;
    assert_eq!(task_state(&t), "succeeded", "{t}");
    assert_eq!(attempt_agents(&t).len(), 2, "{t}");
    echo_succeeds(m, "last").await;
    assert_eq!(runs(dir, "lone"), 1, "the lost task did not start again");
    assert_eq!(runs(dir, "retried"), 2, "the retry, and only it");
    let t = m.task(lone);
    assert_eq!(task_state(&t), "lost", "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_from_an_older_backup() {
    let mut fleet = Fleet::start(&[AGENT], 1000).await;
    let tmp = TempDir::new("restore").expect("temp dir");
    let dir = tmp.path();
    let m = fleet.master();
    echo_succeeds(m, "before backup").await;

    // A backup of the card, taken with the agent stopped, then more work on it.
    let state = fleet.agent(AGENT).home.state_dir();
    let backup = dir.join("backup");
    let agent = fleet.agent(AGENT);
    let mut stopped = agent.process.take().expect("agent");
    stopped.sigterm();
    stopped
        .wait_exit(std::time::Duration::from_secs(10))
        .await
        .expect("agent stops");
    copy_dir(&state, &backup);
    agent.process = Some(agent.home.start());
    let m = fleet.master();
    m.wait_available(AGENT).await;
    let kept = vec![
        echo_succeeds(m, "after backup 1").await,
        echo_succeeds(m, "after backup 2").await,
    ];
    let held = running(m, &held_task(dir, "held"), fast_policy("continue")).await;

    // The board dies and the backup goes back on it.
    power_off(&mut fleet, dir, &["held"]);
    wipe(&state);
    copy_dir(&backup, &state);
    let agent = fleet.agent(AGENT);
    agent.process = Some(agent.home.start());
    let m = fleet.master();

    let t = m.wait_finished(held).await;
    assert_eq!(task_state(&t), "lost", "{t}");
    assert_eq!(t["task"]["outcome"]["kind"], "journal_replaced", "{t}");
    m.wait_available(AGENT).await;
    echo_succeeds(m, "on the restored card").await;
    // What the master stored after the backup stays as it was.
    for id in kept {
        let t = m.task(id);
        assert_eq!(task_state(&t), "succeeded", "{t}");
        assert_eq!(attempt_agents(&t).len(), 1, "{t}");
    }
    assert_eq!(runs(dir, "held"), 1, "the lost task did not start again");
}
