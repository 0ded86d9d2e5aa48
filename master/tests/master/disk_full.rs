//! A full disk does not stop the master: its data directory on a small tmpfs, filled while it
//! runs. Writes are refused with 507 and the reason, reads go on, an agent event that cannot
//! be stored is not lost (stored once the agent sends it again), the master carries on by
//! itself once space is free, and it also starts on a full disk. Needs root (mount); says
//! SKIPPED otherwise.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_core::message::EventKind;

use super::runtime::{FakeAgent, MasterProc};

const WAIT: Duration = Duration::from_secs(20);

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Writes `dir/filler` until the filesystem has no byte left.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // The last partial block too.
    while f.write_all(&[0u8]).is_ok() {}
    let _ = f.sync_all();
}

fn submit(master: &MasterProc, n: u64) -> (u16, Value) {
    master.post(
        "/api/tasks",
        json!({ "agent": "pi-1", "argv": ["/bin/echo", format!("task {n}")] }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_and_loses_nothing() {
    if !nix_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let Some(fs) = Tmpfs::mount("8m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    };
    let data = fs.path().join("data");
    let mut master = MasterProc::start(&data);
    let mut agent = FakeAgent::online(&master, "pi-1", 0x31).await;
    let (status, v) = submit(&master, 0);
    assert_eq!(status, 201, "{v}");
    let first = v["id"].as_u64().unwrap();
    let spec = agent.start().await;

    fill(fs.path());
    // SQLite may still have room in pages it already owns: submit until the disk refuses.
    let mut accepted = vec![first];
    let refusal = loop {
        let (status, v) = submit(&master, accepted.len() as u64);
        match status {
            201 => accepted.push(v["id"].as_u64().unwrap()),
            507 => break v,
            other => panic!("submit on a full disk answered {other}: {v}"),
        }
        assert!(accepted.len() < 5_000, "the disk never filled");
    };
    assert_eq!(refusal["code"], "insufficient_storage", "{refusal}");
    assert!(
        refusal["error"].as_str().unwrap().contains("full"),
        "{refusal}"
    );
    // Refused up front while the store refuses: the same answer at once.
    assert_eq!(submit(&master, 0).0, 507);

    // Reads go on; the master is up.
    let (status, tasks) = master.get("/api/tasks");
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(tasks.as_array().unwrap().len(), accepted.len());
    assert!(
        master.child.try_wait().unwrap().is_none(),
        "the master exited"
    );
    // The metrics count the refused commits (the refusal itself ends as soon as a probe
    // write fits, so it is no steady signal on a full disk).
    let (_, metrics) = master.get("/metrics");
    let metrics = metrics.as_str().unwrap();
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tether_store_commit_failures_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(failures.is_some_and(|n| n >= 1), "{metrics}");

    // An event while the disk is full: either stored (room was left) or not acknowledged, in
    // which case the agent sends it again later, as a real agent's journal does.
    agent
        .event(1, EventKind::Accepted { task: spec.task })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        master.child.try_wait().unwrap().is_none(),
        "the master exited"
    );

    // Space again: the master carries on by itself.
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = submit(&master, 9_999);
        if status == 201 {
            accepted.push(v["id"].as_u64().unwrap());
            break;
        }
        assert_eq!(status, 507, "{v}");
        assert!(
            Instant::now() < deadline,
            "writes still refused after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent
        .event(1, EventKind::Accepted { task: spec.task })
        .await;
    master.wait_for(&format!("/api/tasks/{first}"), "the event stored", |v| {
        v["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "accepted"))
    });
    for id in &accepted {
        assert_eq!(
            master.get(&format!("/api/tasks/{id}")).0,
            200,
            "task {id} lost"
        );
    }

    // A restart on a full disk comes up, serves reads and refuses writes.
    fill(fs.path());
    drop(agent);
    master.kill9();
    let master = MasterProc::start(&data);
    let (status, tasks) = master.get("/api/tasks");
    assert_eq!(status, 200, "{tasks}");
    assert_eq!(tasks.as_array().unwrap().len(), accepted.len());
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = submit(&master, 0);
        if status == 507 {
            break;
        }
        // Pages SQLite already owns may take a few more.
        assert_eq!(status, 201, "{v}");
        assert!(
            Instant::now() < deadline,
            "a full disk never refused a write"
        );
    }
}

fn nix_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
