//! Workflows and orders with the real master and real agents on loopback: consecutive steps on
//! one agent handed over together and run by that agent alone while the master is frozen, a
//! step on another agent waiting for the master; round-robin steps on each next member; kill -9
//! of the agent in the middle of its chain; `tetherctl workflow` and `order start --wait`.
//!
//! Every step appends a mark (`NAME UNIX_NS`) to a file the test reads, so what ran, how often,
//! in which order and when is seen without the master. Every wait is bounded.

use serde_json::{Value, json};
use tether_tests::harness::fleet::{Fleet, fast_policy, task};
use tether_tests::harness::orders::{
    Markers, order_state, step_agents, step_attempts, step_statuses, unix_ns,
};
use tether_tests::harness::procs;
use tether_tests::harness::tempdir::TempDir;

/// A step running `script` under `sh -c` on agent `agent`, `continue` on disconnect (so its
/// agent runs it without the master).
fn on_agent(agent: &str, script: &str) -> Value {
    task(
        json!({ "agent": agent }),
        &["/bin/sh", "-c", script],
        fast_policy("continue"),
    )
}

/// Shell text that waits until `go` exists (the step polls, not the test).
fn wait_for_file(go: &std::path::Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.02; done", go.display())
}

/// Step 2 of an order answer has been handed over (an attempt chained behind step 1's,
/// accepted by its agent): the agent holds it.
fn second_step_held(order: &Value) -> Option<Value> {
    let first = step_attempts(order, 0).first()?;
    let second = step_attempts(order, 1).first()?;
    (second["after"] == first["id"] && second["state"] == "accepted").then(|| second.clone())
}

/// Steps 1 and 2 on agent A, step 3 on agent B. Step 2 is handed to A behind step 1 while
/// step 1 runs; then the master (and its embedded broker) is frozen with SIGSTOP. A ends step
/// 1 and starts step 2 on its own, both marks appear while the master cannot answer anyone;
/// step 3, on another agent, cannot start without the master and does not. Thawed, the master
/// hears both ends, gives step 3 to B, and the order succeeds with each mark once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_over_two_agents_with_the_master_frozen_between_steps() {
    let fleet = Fleet::start(&["wf-a", "wf-b"], 1000).await;
    let dir = TempDir::new("wf-frozen").expect("temp dir");
    let marks = Markers::new(dir.path());
    let go = dir.join("go");
    let m = fleet.master();
    let first = format!("{}; {}", wait_for_file(&go), marks.mark("step-1"));
    m.define_workflow(
        "frozen",
        &[
            on_agent("wf-a", &first),
            on_agent("wf-a", &marks.mark("step-2")),
            on_agent("wf-b", &marks.mark("step-3")),
        ],
    );
    let id = m.start_order("frozen");
    let held = m
        .wait_order(id, "step 2 held on wf-a", second_step_held)
        .await;
    assert_eq!(held["agent_id"], "wf-a", "{held}");
    let before = m.order(id);
    assert_eq!(step_statuses(&before)[2], "waiting", "{before}");

    let frozen_at = unix_ns();
    m.freeze(true);
    std::fs::write(&go, b"").expect("go file");
    let seen = marks.wait_for(&["step-1", "step-2"]).await;
    // A negative check needs time to pass: a second more of the freeze, and still no step 3.
    // This sleep synchronises nothing; it is the length of the observation.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let during = marks.names();
    let thawed_at = unix_ns();
    m.freeze(false);
    assert_eq!(during, ["step-1", "step-2"], "while frozen");
    for mark in &seen {
        assert!(
            (frozen_at..thawed_at).contains(&mark.at_ns),
            "{mark:?} not written while the master was frozen ({frozen_at}..{thawed_at})"
        );
    }

    let done = m.wait_order_ended(id).await;
    assert_eq!(order_state(&done), "succeeded", "{done}");
    assert_eq!(marks.names(), ["step-1", "step-2", "step-3"], "each once");
    let last = marks.read();
    assert!(
        last[2].at_ns >= thawed_at,
        "step 3 after the thaw: {last:?}"
    );
    assert_eq!(
        step_agents(&done),
        [vec!["wf-a"], vec!["wf-a"], vec!["wf-b"]],
        "{done}"
    );
    for i in 0..3 {
        let a = &step_attempts(&done, i)[0];
        assert_eq!(
            (a["state"].as_str(), &a["exit"]),
            (Some("finished"), &json!({ "Code": 0 })),
            "step {}: {done}",
            i + 1
        );
    }
    // Step 3 waited for the master: not handed over behind anything.
    assert_eq!(step_attempts(&done, 2)[0]["after"], Value::Null, "{done}");
}

/// A round-robin cluster's steps are not chained (no one member is bound to the next step):
/// each waits for the master, which gives it to the member after the one of the step before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_steps_on_a_round_robin_cluster_each_on_another_member() {
    let members = ["wfrr-1", "wfrr-2", "wfrr-3"];
    let fleet = Fleet::start(&members, 1000).await;
    fleet.cluster("wfrr", "round-robin", &members);
    let m = fleet.master();
    let step = task(json!({ "cluster": "wfrr" }), &["true"], json!({}));
    m.define_workflow("spread", &[step.clone(), step.clone(), step]);
    let id = m.start_order("spread");
    let done = m.wait_order_ended(id).await;
    assert_eq!(order_state(&done), "succeeded", "{done}");
    let agents = step_agents(&done);
    assert!(
        agents.iter().all(|a| a.len() == 1),
        "one attempt each: {done}"
    );
    let agents: Vec<&str> = agents.iter().map(|a| a[0].as_str()).collect();
    // Each step on the member after the previous step's, in the cluster's order.
    let next = |a: &str| members[(members.iter().position(|m| *m == a).unwrap() + 1) % 3];
    assert_eq!(agents[1], next(agents[0]), "{agents:?}");
    assert_eq!(agents[2], next(agents[1]), "{agents:?}");
    for i in 0..3 {
        assert_eq!(step_attempts(&done, i)[0]["after"], Value::Null, "{done}");
    }
    // One after the other: each started once the one before had finished.
    for i in 1..3 {
        let (before, this) = (&step_attempts(&done, i - 1)[0], &step_attempts(&done, i)[0]);
        assert!(
            this["started_ms"].as_u64() >= before["finished_ms"].as_u64(),
            "step {} overlaps the step before: {done}",
            i + 1
        );
    }
}

/// A chain of three steps on one agent, all handed over; step 2 (one retry) runs until the
/// test lets it go, and the agent is killed with kill -9 while it runs (step 3 held behind
/// it). Restarted on the same state directory, the agent reports step 2's attempt lost (its
/// end is unknown) and skips step 3, whose condition (step 2 succeeded) did not hold; the
/// master retries step 2, hands step 3 over behind the retry, and the order succeeds.
///
/// Marks: step 1 once, step 3 once, after step 2's end. Step 2 is marked twice at its start
/// and once at its end: its first attempt was killed midway (a partial run, which a real
/// step must tolerate: a retry runs it again from the start), its retry ran whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_agent_in_the_middle_of_a_same_agent_chain() {
    let mut fleet = Fleet::start(&["wf-k"], 1000).await;
    let dir = TempDir::new("wf-kill9").expect("temp dir");
    let marks = Markers::new(dir.path());
    let go = dir.join("go");
    let m = fleet.master();
    let second = format!(
        "{}; {}; {}",
        marks.mark("step-2-start"),
        wait_for_file(&go),
        marks.mark("step-2-end")
    );
    let mut retried = on_agent("wf-k", &second);
    retried["policy"]["retries"] = json!(1);
    m.define_workflow(
        "crash",
        &[
            on_agent("wf-k", &marks.mark("step-1")),
            retried,
            on_agent("wf-k", &marks.mark("step-3")),
        ],
    );
    let id = m.start_order("crash");
    marks.wait_for(&["step-1", "step-2-start"]).await;
    let running = m
        .wait_order(id, "step 2 running, step 3 held behind it", |o| {
            let second = step_attempts(o, 1).first()?;
            let third = step_attempts(o, 2).first()?;
            (second["state"] == "running"
                && third["after"] == second["id"]
                && third["state"] == "accepted")
                .then(|| second.clone())
        })
        .await;
    let pgid = running["pid"].as_u64().expect("step 2's pid") as u32;

    let agent = fleet.agent("wf-k");
    agent.process().kill9();
    // PDEATHSIG: step 2's process does not outlive its agent (so it never sees `go`).
    procs::wait_group_gone(pgid).await;
    std::fs::write(&go, b"").expect("go file");
    agent.process = Some(agent.home.start());

    let m = fleet.master();
    let done = m.wait_order_ended(id).await;
    assert_eq!(order_state(&done), "succeeded", "{done}");
    assert_eq!(
        marks.names(),
        [
            "step-1",
            "step-2-start",
            "step-2-start",
            "step-2-end",
            "step-3"
        ],
        "{done}"
    );
    assert_eq!(step_attempts(&done, 0).len(), 1, "step 1 once: {done}");
    let second = step_attempts(&done, 1);
    assert_eq!(second.len(), 2, "step 2 and its one retry: {done}");
    // `continue`: the master does not give the attempt up; the restarted agent reports it
    // lost (its end unknown).
    assert_eq!(
        (second[0]["state"].as_str(), &second[0]["exit"]),
        (Some("finished"), &json!("Lost")),
        "the killed attempt: {done}"
    );
    assert_eq!(second[1]["exit"], json!({ "Code": 0 }), "{done}");
    // Step 3: skipped behind the lost attempt (not a run), then run once behind the retry.
    let third = step_attempts(&done, 2);
    let (ran, skipped): (Vec<&Value>, Vec<&Value>) =
        third.iter().partition(|a| a["exit"] != "Skipped");
    assert_eq!(ran.len(), 1, "step 3 ran once: {done}");
    assert_eq!(ran[0]["exit"], json!({ "Code": 0 }), "{done}");
    assert_eq!(ran[0]["after"], second[1]["id"], "behind the retry: {done}");
    assert!(
        skipped.iter().all(|a| a["after"] == second[0]["id"]),
        "{done}"
    );
    assert_eq!(step_statuses(&done), ["succeeded"; 3], "{done}");
}

const DEFINITION: &str = r#"
name = "NAME"

[[steps]]
name = "hello"
agent = "wf-cli"
argv = ["/bin/sh", "-c", "echo hello"]

[[steps]]
name = "second"
agent = "wf-cli"
argv = ["/bin/sh", "-c", "SECOND"]

[[steps]]
name = "last"
agent = "wf-cli"
argv = ["/bin/true"]
"#;

/// `tetherctl workflow create FILE.toml` then `tetherctl order start NAME --wait`: exit 0 and
/// the order printed step by step when it succeeds; the failing step's exit code, and the
/// steps after it not run, when a step fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tetherctl_workflow_create_and_order_start_wait() {
    let fleet = Fleet::start(&["wf-cli"], 1000).await;
    let dir = TempDir::new("wf-cli").expect("temp dir");
    let define = |name: &str, second: &str| {
        let file = dir.join(&format!("{name}.toml"));
        let text = DEFINITION.replace("NAME", name).replace("SECOND", second);
        std::fs::write(&file, text).expect("workflow file");
        let (code, out, err) =
            fleet.tetherctl(&["workflow", "create", file.to_str().expect("utf-8 path")]);
        assert_eq!(code, Some(0), "{out}{err}");
        assert_eq!(
            out.trim(),
            format!("workflow {name} version 1 defined (3 steps)")
        );
    };
    define("fine", "true");
    define("breaks", "exit 3");

    let (code, out, err) = fleet.tetherctl(&["order", "start", "fine", "--wait"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("order ")?.strip_suffix(" succeeded"))
        .unwrap_or_else(|| panic!("no `order N succeeded` line:\n{out}"));
    for step in ["step 1 hello", "step 2 second", "step 3 last"] {
        let line = out
            .lines()
            .rfind(|l| l.starts_with(step))
            .unwrap_or_else(|| panic!("no {step:?} line:\n{out}"));
        assert!(line.contains(": succeeded on wf-cli"), "{line}\n{out}");
    }
    let shown = fleet.master().order(id.parse().expect("order id"));
    assert_eq!(order_state(&shown), "succeeded", "{shown}");

    let (code, out, err) = fleet.tetherctl(&["-o", "json", "order", "start", "breaks", "--wait"]);
    assert_eq!(code, Some(3), "the failing step's code: {out}{err}");
    let failed: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(order_state(&failed), "failed", "{failed}");
    assert_eq!(
        step_attempts(&failed, 1)[0]["exit"],
        json!({ "Code": 3 }),
        "{failed}"
    );
    let id = failed["order"]["id"].as_u64().expect("order id");
    assert!(
        err.contains(&format!("order {id} failed")) && err.contains("step 2"),
        "{err}"
    );
    let statuses = step_statuses(&failed);
    assert_eq!(statuses[..2], ["succeeded", "failed"], "{failed}");
    assert_ne!(statuses[2], "succeeded", "{failed}");
    // Step 3 was handed over behind step 2: its agent skips it, the master cancels it.
    fleet
        .master()
        .wait_order(id, "step 3 cancelled", |o| {
            (step_statuses(o)[2] == "cancelled").then_some(())
        })
        .await;
}
