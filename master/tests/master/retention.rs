//! History retention in the running master: with `--retain-history 2s` a finished task is
//! gone (404) within its age plus a pass interval, counted in `/metrics`, while an open one
//! stays; a bad age stops the start with the reason.

use std::ffi::OsStr;
use std::process::Command;

use serde_json::json;

use crate::runtime::{FakeAgent, MasterProc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_are_deleted_after_their_age_and_open_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let args = [OsStr::new("--retain-history"), OsStr::new("2s")];
    let master = MasterProc::start_with(dir.path(), &args);
    let mut agent = FakeAgent::online(&master, "pi-1", 0x11).await;

    let (status, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["true"] }));
    assert_eq!(status, 201, "{v}");
    let done = v["id"].as_u64().unwrap();
    let task = agent.start().await.task;
    agent.succeed(1, task).await;
    master.wait_for(&format!("/api/tasks/{done}"), "succeeded", |v| {
        v["task"]["state"] == "succeeded"
    });
    // Sent, never accepted: open, whatever its age.
    let (_, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["true"] }));
    let open = v["id"].as_u64().unwrap();

    master.wait_for(&format!("/api/tasks/{done}"), "deleted", |v| {
        v["code"] == "not_found"
    });
    let (status, v) = master.get(&format!("/api/tasks/{open}"));
    assert_eq!(
        (status, &v["task"]["state"]),
        (200, &json!("dispatched")),
        "{v}"
    );
    let (_, list) = master.get("/api/tasks");
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [open]);
    let (status, text) =
        crate::plain_http::request(&master.http, Some(&master.token), "GET", "/metrics", None)
            .unwrap();
    assert_eq!(status, 200);
    assert!(
        text.lines()
            .any(|l| l == "tether_history_pruned_tasks_total 1"),
        "{text}"
    );
}

#[test]
fn a_bad_age_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether-master"))
        .args(["run", "--config", "/dev/null", "--listen", "127.0.0.1:0"])
        .args(["--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--retain-history", "30x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retain_history: `30x`"), "{err}");
}
