//! The dashboard in a real headless Chromium (Debian's `chromium`, driven by its
//! `chromium-driver` over WebDriver), against the real master with the test playing the agents:
//! signed in through the form, each page shown; a task submitted on the Submit page runs, its
//! page shows the output, the timeline and what happens if contact is lost, and then its
//! success; an agent going offline shows on the Fleet page; a viewer sees no operator's
//! controls; every page fits a phone's width. A PNG of each page at desktop and phone width
//! goes to `$TETHER_SCREENSHOTS`, else `target/dashboard-screenshots/`.
//!
//! Skipped with the reason when Chromium or chromedriver is missing, unless `TETHER_CI` is set
//! (CI installs both), then it fails. The files' types and security headers are checked
//! without a browser.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tether_core::message::{EventKind, Exit, Stream};
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::runtime::{FakeAgent, MasterProc};
use crate::webdriver::Browser;

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);
const OUTPUT: &str = "hello from the dashboard\n";

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("TETHER_SCREENSHOTS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `GET path` without a token: status, headers (lower-case names) and body.
fn fetch(http: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(http).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

#[test]
fn the_dashboard_files_have_their_types_and_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let files = [
        ("/", "text/html"),
        ("/ui/style.css", "text/css"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/api.js", "text/javascript"),
        ("/ui/fleet.js", "text/javascript"),
        ("/ui/tasks.js", "text/javascript"),
        ("/ui/task.js", "text/javascript"),
        ("/ui/timeline.js", "text/javascript"),
        ("/ui/submit.js", "text/javascript"),
    ];
    for (path, ty) in files {
        let (status, headers, body) = fetch(&master.http, path);
        assert_eq!(status, 200, "{path}");
        let h = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{path}: no {k} in {headers:?}"))
        };
        assert!(h("content-type").starts_with(ty), "{path}: {headers:?}");
        let csp = h("content-security-policy");
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert!(!body.is_empty(), "{path}");
        if path == "/" {
            // Scripts are files: the policy allows no inline script, and the page has none.
            for script in body.split("<script").skip(1) {
                assert!(
                    script.trim_start().starts_with("type=\"module\" src="),
                    "{script}"
                );
            }
            assert!(body.contains("name=\"viewport\""), "{body}");
        }
        // Every module the page imports is served.
        for import in body.split("from './").skip(1) {
            let name = import.split('\'').next().unwrap();
            assert!(
                files.iter().any(|(p, _)| *p == format!("/ui/{name}")),
                "{path} imports {name}"
            );
        }
    }
    assert_eq!(fetch(&master.http, "/ui/nothing.js").0, 404);
}

/// The browser and its driver; `None` (with the reason printed) when either is missing.
fn browser() -> Option<(PathBuf, PathBuf)> {
    match crate::webdriver::find() {
        Ok(found) => Some(found),
        Err(why) => {
            assert!(
                std::env::var_os("TETHER_CI").is_none(),
                "TETHER_CI is set but {why}"
            );
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

fn unix_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(now.unwrap().as_millis()).unwrap()
}

/// pi-1 for the rest of the test: heartbeats, and the task the Submit page sends run as far
/// as output; then, on `finish`, its success.
async fn play_pi1(mut agent: FakeAgent, finish: oneshot::Receiver<()>) {
    let beat = Duration::from_millis(300);
    let spec = loop {
        if let Ok(spec) = timeout(beat, agent.start()).await {
            break spec;
        }
        agent.heartbeat(3, &[]).await;
    };
    let task = spec.task;
    agent.event(4, EventKind::Accepted { task }).await;
    // Reports from the journal after an outage: the start 30 s ago by the agent's clock.
    let started = EventKind::Started { task, pid: 42 };
    agent.event_at(5, unix_ms() - 30_000, started).await;
    let output = EventKind::Output {
        task,
        stream: Stream::Stdout,
        offset: 0,
        data: heapless::Vec::from_slice(OUTPUT.as_bytes()).unwrap(),
    };
    agent.event(6, output).await;
    let mut finish = finish;
    loop {
        agent.heartbeat(6, &[task]).await;
        if timeout(beat, &mut finish).await.is_ok() {
            break;
        }
    }
    let finished = EventKind::Finished {
        task,
        exit: Exit::Code(0),
        cause: None,
        output_dropped: 0,
    };
    agent.event_at(7, unix_ms() - 10_000, finished).await;
    loop {
        agent.heartbeat(7, &[]).await;
        tokio::time::sleep(beat).await;
    }
}

/// pi-2: heartbeats until `stop`, then says it stopped.
async fn play_pi2(agent: FakeAgent, mut stop: oneshot::Receiver<()>) {
    loop {
        agent.heartbeat(0, &[]).await;
        if timeout(Duration::from_millis(300), &mut stop).await.is_ok() {
            break;
        }
    }
    agent.stop().await;
    // Kept connected (its will unsent) until the test ends.
    std::future::pending::<()>().await;
}

fn token(master: &MasterProc, name: &str, role: &str) -> String {
    let (status, v) = master.post("/api/tokens", json!({ "name": name, "role": role }));
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_a_task_follows_the_fleet_and_fits_a_phone() {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let begun = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let mut pi1 = FakeAgent::online(&master, "pi-1", 0x11).await;
    let pi2 = FakeAgent::online(&master, "pi-2", 0x22).await;
    let (status, v) = master.post(
        "/api/clusters",
        json!({ "name": "pair", "mode": "fixed-priority", "members": ["pi-1", "pi-2"] }),
    );
    assert_eq!(status, 201, "{v}");
    let operator = token(&master, "ops", "operator");
    let viewer = token(&master, "watcher", "viewer");

    // A task already done, whose argv must show as text.
    let (status, v) = master.post(
        "/api/tasks",
        json!({ "agent": "pi-1", "argv": ["echo", "<b>not markup</b>"] }),
    );
    assert_eq!(status, 201, "{v}");
    let first = v["id"].as_u64().unwrap();
    let task = pi1.start().await.task;
    pi1.succeed(1, task).await;
    master.wait_for(&format!("/api/tasks/{first}"), "succeeded", |v| {
        v["task"]["state"] == "succeeded"
    });

    let (finish, finish_rx) = oneshot::channel();
    let (stop, stop_rx) = oneshot::channel();
    let agents = [
        tokio::spawn(play_pi1(pi1, finish_rx)),
        tokio::spawn(play_pi2(pi2, stop_rx)),
    ];
    let setup = Setup {
        http: master.http.clone(),
        admin: master.token.clone(),
        operator,
        viewer,
        first,
    };
    let looked =
        tokio::task::spawn_blocking(move || browse(&chromium, &driver, &setup, finish, stop)).await;
    for a in agents {
        a.abort();
    }
    let submitted = looked.expect("the browser part");
    let (_, v) = master.get(&format!("/api/tasks/{submitted}"));
    assert_eq!(
        v["task"]["argv"],
        json!(["echo", "hello from the dashboard"]),
        "{v}"
    );
    assert_eq!(v["task"]["policy"]["on_disconnect"], "kill", "{v}");
    println!("dashboard test: {:.1} s", begun.elapsed().as_secs_f64());
}

const DOCUMENT_FITS: &str = "return document.documentElement.scrollWidth <= window.innerWidth ? true : \
     'scrollWidth ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth";

/// A task for pi-2, which has stopped: it waits. Its id.
fn submit_waiting(http: &str, admin: &str) -> u64 {
    let body = r#"{"agent":"pi-2","argv":["/bin/true"]}"#;
    let (status, text) =
        crate::plain_http::request(http, Some(admin), "POST", "/api/tasks", Some(body)).unwrap();
    assert_eq!(status, 201, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["id"].as_u64().unwrap()
}

/// The deadlines the task page predicts, from the page's own module, against the figures
/// `tetherctl show` prints for the same policy and silence (the browser runs in UTC).
fn predictions_match_tetherctl_show(b: &Browser) {
    let v = b.run_async(
        "const done = arguments[arguments.length - 1];
         import('/ui/timeline.js').then(m => {
           const now = 1700000000000, agent = { silent_ms: 5000 };
           const policy = (on_disconnect, lost_after_ms) =>
             ({ on_disconnect, heartbeat_timeout_ms: 60000, lost_after_ms });
           done([m.predict(policy('kill', null), agent, now).text,
                 m.predict(policy('continue', 120000), agent, now).text,
                 m.predict(policy('continue', null), agent, now).text,
                 m.predict(policy('kill', null), undefined, now)]);
         }, e => done(String(e)));",
    );
    assert_eq!(
        v,
        json!([
            "if contact does not return: its agent kills it at 2023-11-14T22:14:15.000+00:00, \
             the master declares it lost at 2023-11-14T22:14:17.000+00:00",
            "if contact does not return: it runs on; started elsewhere at \
             2023-11-14T22:15:15.000+00:00",
            "if contact does not return: it runs on, its result waits in the agent's journal",
            null,
        ])
    );
}

/// What the browser's part is given: the master, its tokens, the task already done.
struct Setup {
    http: String,
    admin: String,
    operator: String,
    viewer: String,
    first: u64,
}

/// The browser's part; the id of the task it submitted.
fn browse(
    chromium: &std::path::Path,
    driver: &std::path::Path,
    setup: &Setup,
    finish: oneshot::Sender<()>,
    stop: oneshot::Sender<()>,
) -> u64 {
    let Setup {
        http,
        admin,
        operator,
        viewer,
        first,
    } = setup;
    let first = *first;
    let shots = screenshots();
    let b = Browser::start(chromium, driver);
    let base = format!("http://{http}/");

    // No token: the form, and no data. A wrong token is refused.
    b.go(&base);
    b.wait(
        "the sign-in form",
        "return !document.getElementById('signin').hidden",
    );
    assert_eq!(
        b.run(
            "return document.querySelectorAll('#main *').length",
            json!([])
        ),
        0
    );
    b.screenshot(&shots, "signin-desktop");
    b.type_into("#token", &format!("tether_{}", "0".repeat(64)));
    b.click("#signin-button");
    b.wait_text("#status", "the token was refused");

    // Sign in as an operator through the form.
    b.type_into("#token", operator);
    b.click("#signin-button");
    b.wait_text("#who", "ops (operator)");
    b.wait(
        "Submit in the menu",
        "return !document.getElementById('nav-submit').hidden",
    );

    // Fleet: both agents online, the cluster with its members.
    b.wait_text("#agent-pi-1", "online");
    b.wait_text("#agent-pi-2", "online");
    b.wait_text("#cluster-pair", "fixed-priority");
    b.wait_text("#status", "live");
    b.screenshot(&shots, "fleet-desktop");

    // Tasks: the first task, its argv as text, not markup.
    b.go(&format!("{base}#/tasks"));
    b.wait_text(&format!("#task-{first}"), "succeeded");
    let argv = b.run(
        &format!("return document.querySelector('#task-{first} code').innerHTML"),
        json!([]),
    );
    assert_eq!(argv, "echo &lt;b&gt;not markup&lt;/b&gt;");
    assert_eq!(
        b.run(
            "return document.querySelectorAll('#tasks b').length",
            json!([])
        ),
        0
    );
    b.screenshot(&shots, "tasks-desktop");

    // Submit: two arguments, one with spaces, to pi-1, killed if contact is lost.
    b.go(&format!("{base}#/submit"));
    b.type_into("#submit-argv", "echo\nhello from the dashboard");
    b.type_into("#submit-target", "pi-1");
    b.click("#submit-disconnect option[value=kill]");
    b.screenshot(&shots, "submit-desktop");
    b.click("#submit-button");
    let id = b.wait(
        "the new task's page",
        "const m = location.hash.match(/^#\\/task\\/(\\d+)$/); return m && Number(m[1])",
    );
    let id = id.as_u64().unwrap();
    assert!(id > first, "{id}");

    // Its page: the output as it arrives, the running attempt's deadlines, Kill for operators.
    b.wait_text("#stdout", OUTPUT.trim());
    b.wait_text("#task-state", "running");
    b.wait_text("#timeline", "started (pid 42)");
    b.wait_text("#timeline", "heard started (happened on the agent at ");
    b.wait_text("#timeline", ", came back 30 s later)");
    b.wait_text(
        "#timeline",
        "if contact does not return: its agent kills it at ",
    );
    b.wait_text("#timeline", ", the master declares it lost at ");
    b.wait(
        "Kill for operators",
        "return !document.getElementById('task-kill-bar').hidden",
    );
    b.screenshot(&shots, "task-running-desktop");
    finish.send(()).unwrap();
    b.wait_text("#task-state", "succeeded");
    b.wait_text("#timeline", "finished exit 0");
    b.wait_text("#timeline", "came back 10 s later");
    b.wait_text("#output-state", "complete");
    b.wait(
        "no Kill once finished",
        "return document.getElementById('task-kill-bar').hidden",
    );
    assert_eq!(
        b.run(
            "return document.querySelectorAll('.predict').length",
            json!([])
        ),
        0
    );
    b.screenshot(&shots, "task-desktop");

    predictions_match_tetherctl_show(&b);

    // Fleet, live: pi-2 stops.
    b.go(&format!("{base}#/fleet"));
    b.wait_text("#agent-pi-2", "online");
    stop.send(()).unwrap();
    b.wait_text("#agent-pi-2", "stopped");
    b.wait_text("#agent-pi-1", "online");
    b.screenshot(&shots, "fleet-offline-desktop");
    // Tasks for the stopped agent wait: one the operator kills from its page, one a viewer
    // must not be offered to kill.
    let doomed = submit_waiting(http, admin);
    let waiting = submit_waiting(http, admin);
    b.go(&format!("{base}#/task/{doomed}"));
    b.wait_text("#task-state", "pending");
    b.click("#kill-button");
    b.accept_dialog();
    b.wait(
        "the kill",
        "return /cancelled|killed/.test(document.getElementById('task-state').textContent)",
    );
    b.wait(
        "no Kill once ended",
        "return document.getElementById('task-kill-bar').hidden",
    );

    // Phone width: no page scrolls sideways.
    b.size(PHONE.0, PHONE.1);
    b.wait(
        "the phone's width",
        &format!("return window.innerWidth <= {}", PHONE.0),
    );
    for (page, ready, name) in [
        ("#/fleet", "#agent-pi-2", "fleet-phone"),
        ("#/tasks", &*format!("#task-{id}"), "tasks-phone"),
        (&*format!("#/task/{id}"), "#task-argv", "task-phone"),
        ("#/submit", "#submit-form", "submit-phone"),
    ] {
        b.go(&format!("{base}{page}"));
        b.wait(
            &format!("{page} drawn"),
            &format!("return !!document.querySelector({})", json!(ready)),
        );
        assert_eq!(
            b.run(DOCUMENT_FITS, json!([])),
            true,
            "{page} at phone width"
        );
        b.screenshot(&shots, name);
    }
    b.size(DESKTOP.0, DESKTOP.1);

    // A viewer: no Submit, no Kill; the Submit page says why.
    b.click("#signout");
    b.wait(
        "signed out",
        "return !document.getElementById('signin').hidden",
    );
    b.type_into("#token", viewer);
    b.click("#signin-button");
    b.wait_text("#who", "watcher (viewer)");
    assert_eq!(
        b.run(
            "return document.getElementById('nav-submit').hidden",
            json!([])
        ),
        true
    );
    b.go(&format!("{base}#/task/{waiting}"));
    b.wait_text("#task-state", "pending");
    assert_eq!(
        b.run(
            "return document.getElementById('task-kill-bar').hidden",
            json!([])
        ),
        true
    );
    b.screenshot(&shots, "task-viewer-desktop");
    b.go(&format!("{base}#/submit"));
    b.wait_text("#submit-refused", "needs an operator token");
    assert_eq!(
        b.run("return !!document.getElementById('submit-form')", json!([])),
        false
    );
    b.screenshot(&shots, "submit-viewer-desktop");
    id
}
