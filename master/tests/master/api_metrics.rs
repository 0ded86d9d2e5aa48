//! `GET /metrics` and `GET /healthz` of the real master: values that follow a task run by a
//! fake agent, the text checked by Prometheus' own parser (`promtool check metrics`), the
//! alert rules checked by `promtool check rules`, every metric the rules and the Grafana
//! dashboard name present in a real scrape; and `/healthz` turning 503 when the external
//! broker (a real mosquitto) is gone.
//!
//! Without `promtool` (Debian package `prometheus`) its checks are skipped with a note,
//! except under CI (`TETHER_CI=1`), where that is a failure.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::plain_http as http;
use serde_json::json;
use tether_core::message::CommandBody;

use super::broker_mosquitto::Mosquitto;
use super::runtime::{FakeAgent, MasterProc};

const WAIT: Duration = Duration::from_secs(20);

/// The value of the sample `series` (name and labels exactly as written), if present.
pub(super) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub(super) fn scrape(master: &MasterProc) -> String {
    let (status, text) =
        http::request(&master.http, Some(&master.token), "GET", "/metrics", None).unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

/// `promtool`, or `None` (with a note) where it is not installed and this is not CI.
pub(super) fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("TETHER_CI").is_ok_and(|v| v == "1");
        assert!(
            !ci,
            "promtool is not installed (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: promtool checks (apt-get install prometheus)");
    }
    found
}

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// Every `tether_...` name in a file.
fn names_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("tether_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// `promtool check metrics` on a scrape, and `promtool check rules` on the alert rules.
pub(super) fn check_with_promtool(promtool: &Path, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = deploy("prometheus/alerts.yml");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_task_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let mut agent = FakeAgent::online(&master, "pi-1", 0x21).await;

    let before = scrape(&master);
    let build = format!(
        "tether_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&before, &build), Some(1.0), "{before}");
    assert_eq!(value(&before, "tether_broker_connected"), Some(1.0));
    let online = "tether_agents{presence=\"online\",available=\"true\"}";
    assert_eq!(value(&before, online), Some(1.0), "{before}");
    let succeeded = "tether_tasks{state=\"succeeded\"}";
    assert_eq!(value(&before, succeeded), Some(0.0), "{before}");
    assert_eq!(value(&before, "tether_attempts_started_total"), Some(0.0));

    let (status, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["true"] }));
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    let CommandBody::Start(spec) = agent
        .command("Start", |c| matches!(c, CommandBody::Start(_)))
        .await
    else {
        unreachable!()
    };
    let task = spec.task;
    let pending = scrape(&master);
    assert_eq!(value(&pending, succeeded), Some(0.0), "{pending}");
    assert_eq!(value(&pending, "tether_attempts_started_total"), Some(1.0));
    agent.succeed(1, task).await;
    agent
        .command("Ack 3", |c| matches!(c, CommandBody::Ack { up_to: 3 }))
        .await;
    master.wait_for(&format!("/api/tasks/{id}"), "succeeded", |v| {
        v["task"]["state"] == "succeeded"
    });
    agent.heartbeat(3, &[]).await;

    // The heartbeat is counted once its batch is committed: poll for it, bounded.
    let deadline = std::time::Instant::now() + WAIT;
    let after = loop {
        let text = scrape(&master);
        if value(&text, "tether_heartbeat_lag_seconds_count").unwrap_or(0.0) >= 2.0 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(value(&after, succeeded), Some(1.0), "{after}");
    assert_eq!(value(&after, "tether_tasks{state=\"pending\"}"), Some(0.0));
    assert_eq!(value(&after, "tether_attempts_finished_total"), Some(1.0));
    assert_eq!(value(&after, "tether_attempts_lost_total"), Some(0.0));
    let agent_series = |name: &str| format!("{name}{{agent=\"pi-1\"}}");
    assert_eq!(
        value(&after, &agent_series("tether_agent_acked_seq")),
        Some(3.0)
    );
    assert_eq!(
        value(&after, &agent_series("tether_agent_journal_backlog_events")),
        Some(0.0)
    );
    let lost = "tether_agent_presence{agent=\"pi-1\",presence=\"lost\"}";
    assert_eq!(value(&after, lost), Some(0.0), "{after}");
    assert!(value(&after, "tether_store_commit_duration_seconds_count").unwrap() >= 1.0);
    assert!(value(&after, "tether_broker_messages_received_total").unwrap() >= 5.0);
    assert!(value(&after, "tether_broker_messages_sent_total").unwrap() >= 2.0);
    let refusals = "tether_security_refusals_total{reason=\"bad_signature\"}";
    assert_eq!(value(&after, refusals), Some(0.0), "{after}");

    // Everything the alert rules and the dashboard name is in a real scrape.
    for file in ["prometheus/alerts.yml", "grafana/tether.json"] {
        for name in names_in(&deploy(file)) {
            // A sample, or a family (a histogram's name has only `_bucket`... samples).
            let family = format!("# TYPE {name} ");
            let present = after.lines().any(|l| {
                l.starts_with(&family)
                    || l.strip_prefix(name.as_str())
                        .is_some_and(|r| r.starts_with([' ', '{']))
            });
            assert!(
                present,
                "{file} names {name}, which the master does not export"
            );
        }
    }
    if let Some(promtool) = promtool() {
        check_with_promtool(&promtool, &after);
    }

    // Without a token, /metrics is refused; /healthz needs none.
    let (status, _) = http::request(&master.http, None, "GET", "/metrics", None).unwrap();
    assert_eq!(status, 401);
    let (status, body) = http::request(&master.http, None, "GET", "/healthz", None).unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
}

#[tokio::test]
async fn healthz_is_503_once_the_broker_is_gone() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://{}", broker.addr);
    let master = MasterProc::start_with(dir.path(), &["--broker".as_ref(), url.as_ref()]);
    let health = || http::request(&master.http, None, "GET", "/healthz", None).unwrap();
    let wait_for = |want: u16| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (status, body) = health();
            if status == want {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "{status} {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(wait_for(200), r#"{"ok":true}"#);
    drop(broker);
    let body = wait_for(503);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], false, "{body}");
    assert_eq!(v["reason"], "not connected to the broker", "{body}");
    // The metrics say the same.
    assert_eq!(
        value(&scrape(&master), "tether_broker_connected"),
        Some(0.0)
    );
}
