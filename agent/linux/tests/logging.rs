//! The agent's log lines under journald: with `$JOURNAL_STREAM` set (systemd sets it for a
//! unit's output) each line starts with its syslog priority, so the journal keeps the level.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn lines_carry_syslog_priorities_under_journald() {
    let state = tempfile::tempdir().unwrap();
    // No broker listens on port 1: the agent starts, warns that it runs without keys, and
    // keeps retrying; it is stopped after its first lines.
    let mut agent = Command::new(env!("CARGO_BIN_EXE_tether-agent"))
        .args([
            "--config",
            "/dev/null",
            "--id",
            "log-test",
            "--broker",
            "127.0.0.1:1",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--work-dir")
        .arg(state.path())
        .arg("--insecure-unauthenticated")
        .env("JOURNAL_STREAM", "8:1234")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tether-agent runs");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && agent.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.kill();
    let out = agent.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("INSECURE")),
        "the warning with priority 4:\n{err}"
    );
    assert!(
        lines.iter().all(|l| ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .any(|p| l.starts_with(p))),
        "every line with its priority:\n{err}"
    );
}
