//! The master on PostgreSQL (`--store postgres://...`) losing its database: while the server
//! is stopped the API answers 503 (writes, and reads that need the store) and `/healthz` says
//! 503; started again, the master reconnects by itself, and a task accepted before the outage
//! finishes with one attempt and its result stored.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::pg_cluster::{self, PgCluster};
use crate::runtime::{FakeAgent, MasterProc};

/// Polls `path` until it answers `status`; bounded.
fn wait_status(master: &MasterProc, path: &str, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, v) = master.get(path);
        if got == status {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {got} {v}, not {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_and_recovers_without_losing_a_task() {
    if !pg_cluster::available() {
        return;
    }
    let cluster = PgCluster::start(true);
    let url = cluster.database("outage");
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(dir.path(), &[OsStr::new("--store"), OsStr::new(&url)]);
    let mut agent = FakeAgent::online(&master, "pi-1", 0x21).await;

    let (status, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["true"] }));
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    let task = agent.start().await.task;
    wait_status(&master, "/healthz", 200);

    cluster.pg_ctl_stop();
    // The result arrives while nothing can be stored: not acknowledged, so resent below.
    agent.succeed(1, task).await;
    let health = wait_status(&master, "/healthz", 503);
    assert_eq!(health["ok"], json!(false), "{health}");
    let (status, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["true"] }));
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("store"),
        "{v}"
    );
    let (status, v) = master.get(&format!("/api/tasks/{id}"));
    assert_eq!(status, 503, "{v}");

    cluster.pg_ctl_start();
    wait_status(&master, "/healthz", 200);
    // A real agent resends what was not acknowledged; the fake one does it by hand.
    agent.succeed(1, task).await;
    let v = master.wait_for(&format!("/api/tasks/{id}"), "succeeded", |v| {
        v["task"]["state"] == "succeeded"
    });
    assert_eq!(v["attempts"].as_array().map(Vec::len), Some(1), "{v}");
    let (status, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["true"] }));
    assert_eq!(status, 201, "writes are taken again: {v}");
}
