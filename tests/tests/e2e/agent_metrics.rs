//! The real `tether-agent` writes its figures for node_exporter's textfile collector
//! (`metrics_file`): valid for `promtool check metrics` (Debian's `prometheus` package), the
//! connection, tasks and backlog as they are. Skipped with the reason without promtool,
//! except under `TETHER_CI=1` (CI installs it), then it fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_core::message::Exit;
use tether_tests::harness::broker::{BrokerKind, TestBroker};
use tether_tests::harness::master::{scripted_pair, sh, task_ref};
use tether_tests::harness::tempdir::TempDir;

fn promtool() -> Option<&'static str> {
    let found = Path::new("/usr/bin/promtool").exists();
    if !found {
        assert!(
            std::env::var_os("TETHER_CI").is_none(),
            "TETHER_CI is set but promtool is not installed (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: no promtool (apt-get install prometheus)");
    }
    found.then_some("/usr/bin/promtool")
}

/// The file's text once `f` accepts it, polling every 50 ms for at most 20 s.
async fn wait_text(path: &Path, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if f(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics file never showed {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_for_node_exporter_pass_promtool_and_follow_the_agent() {
    let Some(promtool) = promtool() else { return };
    // mosquitto: dropping it stops it, so the agent's lost connection shows too.
    let Some(broker) = TestBroker::start(BrokerKind::Mosquitto).await else {
        return;
    };
    let dir = TempDir::new("agent-metrics").unwrap();
    let path = dir.join("tether-agent.prom");
    let config = format!("metrics_file = \"{}\"\n", path.display());
    let (master, _home, agent) = scripted_pair(&broker, "metrics", Duration::from_secs(1), |o| {
        o.config_toml = Some(config)
    })
    .await;
    let id = format!("metrics-{}", broker.kind());
    let connected = format!("tether_agent_connected{{agent=\"{id}\"}} 1");
    let text = wait_text(&path, "connected", |t| t.contains(&connected)).await;
    let check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for family in [
        "tether_agent_info",
        "tether_agent_journal_bytes",
        "tether_agent_journal_backlog_events",
        "tether_agent_tasks",
        "tether_agent_security_refusals_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
    // A running task shows, and is gone once it finished.
    let running = format!("tether_agent_tasks{{agent=\"{id}\",phase=\"running\"}} 1");
    master.start_task(sh(1, "sleep 2"));
    wait_text(&path, "a running task", |t| t.contains(&running)).await;
    assert_eq!(master.wait_finished(task_ref(1)).await.0, Exit::Code(0));
    let idle = format!("tether_agent_tasks{{agent=\"{id}\",phase=\"running\"}} 0");
    wait_text(&path, "no running task", |t| t.contains(&idle)).await;
    // The broker gone: the next write says so.
    drop(broker);
    let disconnected = format!("tether_agent_connected{{agent=\"{id}\"}} 0");
    wait_text(&path, "disconnected", |t| t.contains(&disconnected)).await;
    agent.sigterm();
}
