//! The dashboard in a real headless Chromium (Debian's `chromium`): signed in with a token
//! (the `#token=` fragment), it shows the agents and tasks the API gives; without a token it
//! asks for one and shows nothing. Skipped with the reason when Chromium is missing, unless
//! `TETHER_CI=1` (CI installs it), then it fails.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::runtime::{FakeAgent, MasterProc};

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("TETHER_CI").is_none(),
            "TETHER_CI is set but chromium is not installed"
        );
        eprintln!("SKIPPED: no chromium (apt-get install chromium)");
    }
    found
}

/// The page's DOM after its scripts ran for a few (virtual) seconds.
fn render(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_and_shows_the_fleet() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let mut agent = FakeAgent::online(&master, "pi-1", 0x11).await;
    let (status, v) = master.post(
        "/api/tasks",
        json!({ "agent": "pi-1", "argv": ["echo", "<b>not markup</b>"] }),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    let task = agent.start().await.task;
    agent.succeed(1, task).await;
    master.wait_for(&format!("/api/tasks/{id}"), "succeeded", |v| {
        v["task"]["state"] == "succeeded"
    });
    // Keep the agent heartbeating while the browser looks.
    let beat = tokio::spawn(async move {
        loop {
            agent.heartbeat(3, &[]).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    let url = format!("http://{}/#token={}", master.http, master.token);
    let dom = tokio::task::spawn_blocking(move || render(browser, &url))
        .await
        .unwrap();
    for needle in [
        &format!("id=\"task-{id}\""),
        "class=\"succeeded\">succeeded<",
        "id=\"agent-pi-1\"",
        "class=\"online\">online<",
        "&lt;b&gt;not markup&lt;/b&gt;",
        "· live",
    ] {
        assert!(dom.contains(needle), "{needle:?} not in the page:\n{dom}");
    }

    // No token: the sign-in form, and no data.
    let url = format!("http://{}/", master.http);
    let dom = tokio::task::spawn_blocking(move || render(browser, &url))
        .await
        .unwrap();
    assert!(dom.contains("sign in with an API token"), "{dom}");
    assert!(!dom.contains("id=\"agent-pi-1\""), "{dom}");
    beat.abort();
}
