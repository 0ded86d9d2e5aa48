//! Workflows and orders over the real master's HTTP API and through `tetherctl`: versions,
//! lists and pages, every refusal of a definition (naming the step at fault), orders started,
//! shown step by step, cancelled once (409 the second time), 404s, roles, the routes in the
//! OpenAPI document and the order counts in `/metrics`. Steps go to a cluster whose member
//! never connects, so an order stays running until it is cancelled; running steps on agents
//! is the end-to-end suite's.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::runtime::{MasterProc, tetherctl, tetherctl_command};
use crate::plain_http;

/// A step on the `edge` cluster (defined by [`master_with_cluster`]).
fn step(name: &str) -> Value {
    json!({ "name": name, "cluster": "edge", "argv": ["/bin/true"] })
}

/// A master with the cluster `edge`, whose one member (`pi-7`) never connects: its tasks stay
/// pending.
pub(super) fn master_with_cluster(dir: &std::path::Path) -> MasterProc {
    let master = MasterProc::start(dir);
    let (status, v) = master.post(
        "/api/clusters",
        json!({ "name": "edge", "mode": "round-robin", "members": ["pi-7"] }),
    );
    assert_eq!(status, 201, "{v}");
    master
}

/// A token of `role`; its secret.
pub(super) fn token(master: &MasterProc, role: &str) -> String {
    let (status, v) = master.post("/api/tokens", json!({ "name": role, "role": role }));
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

pub(super) fn post_as(master: &MasterProc, token: &str, path: &str, body: &Value) -> (u16, Value) {
    call_as(master, token, "POST", path, Some(&body.to_string()))
}

/// A request with `token`: the status and the JSON answer.
pub(super) fn call_as(
    master: &MasterProc,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) =
        plain_http::request(&master.http, Some(token), method, path, body).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Asserts a refusal: its status, its code and words of its message.
pub(super) fn refused(answer: (u16, Value), status: u16, words: &[&str]) {
    let (got, v) = answer;
    assert_eq!(got, status, "{v}");
    let code = if status == 422 { "invalid" } else { "" };
    if !code.is_empty() {
        assert_eq!(v["code"], code, "{v}");
    }
    let message = v["error"].as_str().unwrap_or_default();
    for word in words {
        assert!(message.contains(word), "{word:?} not in {message:?}");
    }
}

#[test]
fn workflows_are_versioned_and_bad_steps_refused_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let master = master_with_cluster(dir.path());
    let (status, v1) = master.post(
        "/api/workflows",
        json!({ "name": "deploy", "steps": [step("fetch"), step("install")] }),
    );
    assert_eq!(status, 201, "{v1}");
    assert_eq!(
        (v1["name"].as_str(), v1["version"].as_u64()),
        (Some("deploy"), Some(1))
    );
    assert_eq!(v1["steps"][1]["name"], "install");
    assert_eq!(v1["steps"][0]["on_failure"], "stop", "the default");
    // The same name again is its next version; a step without a name gets one.
    let second = json!({ "name": "deploy", "steps": [
        { "cluster": "edge", "argv": ["/bin/true"], "on_failure": "continue",
          "policy": { "retries": 2 }, "retry_delay_ms": 1000 },
    ] });
    let (status, v2) = master.post("/api/workflows", second);
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["steps"][0]["name"], "step-1");
    assert_eq!(v2["steps"][0]["policy"]["retries"], 2);
    let (status, v) = master.post(
        "/api/workflows",
        json!({ "name": "backup", "steps": [step("dump")] }),
    );
    assert_eq!(status, 201, "{v}");

    // The list: the latest version of each, by name, in pages.
    let (status, list) = master.get("/api/workflows");
    assert_eq!(status, 200, "{list}");
    let names: Vec<(&str, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(names, [("backup", 1), ("deploy", 2)]);
    let (_, page) = master.get("/api/workflows?limit=1&after=backup");
    assert_eq!(page.as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page[0]["name"], "deploy");
    refused(master.get("/api/workflows?limit=0"), 422, &["limit"]);
    refused(master.get("/api/workflows?version=1"), 400, &[]);

    // One workflow: the latest, or the version asked for; its versions; who defined it.
    let (status, shown) = master.get("/api/workflows/deploy");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["workflow"]["version"], 2);
    assert_eq!(shown["versions"], json!([1, 2]));
    assert_eq!(shown["history"][0]["action"], "workflow defined", "{shown}");
    assert_eq!(shown["history"][0]["who"], "admin");
    let (_, first) = master.get("/api/workflows/deploy?version=1");
    assert_eq!(first["workflow"]["version"], 1);
    assert_eq!(
        first["workflow"]["steps"], v1["steps"],
        "a version is kept as it was defined"
    );
    assert!(
        first["workflow"]["created_ms"].as_u64() > Some(0),
        "{first}"
    );
    refused(master.get("/api/workflows/ghost"), 404, &["ghost"]);
    refused(
        master.get("/api/workflows/deploy?version=3"),
        404,
        &["version 3"],
    );
    refused(master.get("/api/workflows/deploy?version=x"), 400, &[]);

    // Every refusal is a 422 that says what, and which step.
    let define =
        |steps: Value| master.post("/api/workflows", json!({ "name": "bad", "steps": steps }));
    refused(define(json!([])), 422, &["0 steps"]);
    let many: Vec<Value> = (0..33).map(|i| step(&format!("s{i}"))).collect();
    refused(define(json!(many)), 422, &["33 steps"]);
    let ghost = json!({ "agent": "ghost", "argv": ["/bin/true"] });
    refused(define(json!([step("a"), ghost])), 422, &["step 2", "ghost"]);
    let no_cluster = json!({ "cluster": "nowhere", "argv": ["/bin/true"] });
    refused(define(json!([no_cluster])), 422, &["step 1", "nowhere"]);
    let no_profile = json!({ "cluster": "edge", "profile": "nope", "argv": ["/bin/true"] });
    refused(
        define(json!([step("a"), step("b"), no_profile])),
        422,
        &["step 3", "nope"],
    );
    let bad_policy = json!({ "cluster": "edge", "argv": ["/bin/true"],
        "policy": { "heartbeat_period_ms": 1000, "heartbeat_timeout_ms": 1500 } });
    refused(define(json!([bad_policy])), 422, &["step 1", "multiple"]);
    let no_argv = json!({ "cluster": "edge", "argv": [] });
    refused(
        define(json!([step("a"), no_argv])),
        422,
        &["step 2", "argv"],
    );
    let two_targets = json!({ "agent": "pi-7", "cluster": "edge", "argv": ["/bin/true"] });
    refused(define(json!([two_targets])), 422, &["step 1"]);
    let bad_end = json!({ "cluster": "edge", "argv": ["/bin/true"], "on_failure": "retry" });
    refused(define(json!([bad_end])), 422, &[]);
    refused(
        master.post(
            "/api/workflows",
            json!({ "name": "bad/name", "steps": [step("a")] }),
        ),
        422,
        &[],
    );
    assert_eq!(
        master.get("/api/workflows/bad").0,
        404,
        "nothing of a refusal is kept"
    );

    // Viewers read; operators define; each is recorded as the one who did.
    let viewer = token(&master, "viewer");
    let (status, v) = post_as(
        &master,
        &viewer,
        "/api/workflows",
        &json!({ "name": "v", "steps": [step("a")] }),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let operator = token(&master, "operator");
    let (status, v) = post_as(
        &master,
        &operator,
        "/api/workflows",
        &json!({ "name": "ops", "steps": [step("a")] }),
    );
    assert_eq!(status, 201, "{v}");
    let (_, shown) = master.get("/api/workflows/ops");
    assert_eq!(shown["history"][0]["who"], "operator", "{shown}");
}

#[test]
fn orders_start_show_their_steps_and_cancel_once() {
    let dir = tempfile::tempdir().unwrap();
    let master = master_with_cluster(dir.path());
    let steps = json!([step("fetch"), step("install")]);
    let (status, v) = master.post(
        "/api/workflows",
        json!({ "name": "deploy", "steps": steps }),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = master.post(
        "/api/workflows",
        json!({ "name": "deploy", "steps": [step("only")] }),
    );
    assert_eq!(status, 201, "{v}");

    let start = |body: Value| master.post("/api/orders", body);
    refused(start(json!({ "workflow": "ghost" })), 422, &["ghost"]);
    refused(
        start(json!({ "workflow": "deploy", "version": 9 })),
        422,
        &["version 9"],
    );
    refused(start(json!({ "workflow": "deploy", "extra": 1 })), 422, &[]);
    let (status, created) = start(json!({ "workflow": "deploy", "version": 1 }));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().unwrap();
    assert_eq!(
        (created["workflow"].as_str(), created["version"].as_u64()),
        (Some("deploy"), Some(1))
    );
    let (status, latest) = start(json!({ "workflow": "deploy" }));
    assert_eq!(status, 201, "{latest}");
    assert_eq!(latest["version"], 2);
    let other = latest["id"].as_u64().unwrap();
    assert!(other > id);

    // The order, and each step of its version: the first has its task, the next waits.
    let (status, shown) = master.get(&format!("/api/orders/{id}"));
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["order"]["state"], "running", "{shown}");
    assert_eq!(shown["order"]["workflow"], "deploy");
    assert_eq!(shown["history"][0]["action"], "order started", "{shown}");
    let first = &shown["steps"][0];
    assert_eq!(
        (first["index"].as_u64(), first["name"].as_str()),
        (Some(0), Some("fetch"))
    );
    assert_eq!(
        first["target"],
        json!({ "kind": "cluster", "name": "edge" })
    );
    assert_eq!(first["on_failure"], "stop");
    let task = first["task"].as_u64().expect("the first step's task");
    assert_eq!(
        first["status"], "pending",
        "no member of edge is online: {shown}"
    );
    assert_eq!(first["attempts"], json!([]));
    let second = &shown["steps"][1];
    assert_eq!(
        (second["status"].as_str(), &second["task"]),
        (Some("waiting"), &Value::Null),
        "{shown}"
    );
    let (_, t) = master.get(&format!("/api/tasks/{task}"));
    assert_eq!(t["task"]["order"], json!({ "order": id, "step": 0 }), "{t}");

    // Lists: in id order, by state, in pages.
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_u64().unwrap())
            .collect()
    };
    let (status, all) = master.get("/api/orders");
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), [id, other]);
    let (_, page) = master.get(&format!("/api/orders?after={id}&limit=5"));
    assert_eq!(ids(&page), [other]);
    let (_, running) = master.get("/api/orders?state=running");
    assert_eq!(ids(&running), [id, other]);
    for (path, status) in [
        ("/api/orders?state=done", 422),
        ("/api/orders?limit=0", 422),
        ("/api/orders?limit=10001", 422),
        ("/api/orders?after=x", 400),
        ("/api/orders?agent=pi-7", 400),
        ("/api/orders/x", 400),
        ("/api/orders/0", 400),
        ("/api/orders/999", 404),
        ("/api/workflows/deploy?version=0", 404),
    ] {
        assert_eq!(master.get(path).0, status, "{path}");
    }

    // Cancelled once: its open step is killed, the next never runs; a second time is 409.
    let operator = token(&master, "operator");
    let viewer = token(&master, "viewer");
    let cancel = format!("/api/orders/{id}/cancel");
    assert_eq!(post_as(&master, &viewer, &cancel, &json!({})).0, 403);
    assert_eq!(
        post_as(
            &master,
            &viewer,
            "/api/orders",
            &json!({ "workflow": "deploy" })
        )
        .0,
        403
    );
    let (status, v) = post_as(&master, &operator, &cancel, &json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({ "id": id, "state": "cancelled" }));
    refused(
        master.post(&cancel, json!({})),
        409,
        &["ended", "cancelled"],
    );
    refused(
        master.post("/api/orders/999/cancel", json!({})),
        404,
        &["999"],
    );
    refused(master.post("/api/orders/x/cancel", json!({})), 400, &[]);
    let shown = master.wait_for(&format!("/api/orders/{id}"), "the step killed", |v| {
        v["steps"][0]["status"] != "pending"
    });
    assert_eq!(shown["order"]["state"], "cancelled", "{shown}");
    assert!(shown["order"]["reason"].is_string(), "{shown}");
    assert_eq!(shown["steps"][1]["status"], "not_run", "{shown}");
    let who: Vec<(&str, &str)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["action"].as_str().unwrap(), h["who"].as_str().unwrap()))
        .collect();
    assert_eq!(
        who,
        [("order started", "admin"), ("order cancelled", "operator")]
    );
    let (_, cancelled) = master.get("/api/orders?state=cancelled");
    assert_eq!(ids(&cancelled), [id]);

    // `/metrics` counts orders by state, every state present.
    let (status, text) =
        plain_http::request(&master.http, Some(&master.token), "GET", "/metrics", None).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("# HELP tether_orders "), "{text}");
    for (state, n) in [
        ("running", 1),
        ("succeeded", 0),
        ("failed", 0),
        ("cancelled", 1),
    ] {
        let sample = format!("tether_orders{{state=\"{state}\"}} {n}\n");
        assert!(text.contains(&sample), "{sample:?} not in:\n{text}");
    }
}

#[test]
fn the_openapi_document_has_the_workflow_and_order_routes() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let (status, doc) = master.get("/api/openapi.json");
    assert_eq!(status, 200, "{doc}");
    for (method, path, role, statuses) in [
        (
            "post",
            "/api/workflows",
            "operator",
            &["201", "422", "403"][..],
        ),
        ("get", "/api/workflows", "viewer", &["200", "400", "422"]),
        (
            "get",
            "/api/workflows/{name}",
            "viewer",
            &["200", "400", "404"],
        ),
        ("post", "/api/orders", "operator", &["201", "422"]),
        ("get", "/api/orders", "viewer", &["200", "400", "422"]),
        ("get", "/api/orders/{id}", "viewer", &["200", "400", "404"]),
        (
            "post",
            "/api/orders/{id}/cancel",
            "operator",
            &["200", "404", "409"],
        ),
    ] {
        let op = &doc["paths"][path][method];
        assert_eq!(op["x-required-role"], role, "{method} {path}: {op}");
        for status in statuses {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} {status}"
            );
        }
    }
    let schemas = &doc["components"]["schemas"];
    for name in [
        "WorkflowRequest",
        "StepRequest",
        "OrderRequest",
        "OrderAnswer",
        "StepAnswer",
    ] {
        assert!(schemas[name].is_object(), "{name}");
    }
}

const DEFINITION: &str = r#"
name = "deploy"

[[steps]]
name = "fetch"
cluster = "edge"
argv = ["/usr/bin/fetch", "--all"]
retry_delay_ms = 500

[steps.policy]
retries = 1

[[steps]]
name = "install"
cluster = "edge"
argv = ["/usr/bin/install"]
on_failure = "continue"
"#;

#[test]
fn tetherctl_defines_workflows_and_follows_orders() {
    let dir = tempfile::tempdir().unwrap();
    let master = master_with_cluster(dir.path());
    let run = |args: &[&str]| tetherctl(&master, args);
    let file = dir.path().join("deploy.toml");
    std::fs::write(&file, DEFINITION).unwrap();
    let (ok, out, err) = run(&["workflow", "create", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "workflow deploy version 1 defined (2 steps)");
    // JSON by any other name: the next version.
    let json_file = dir.path().join("deploy.json");
    let body = json!({ "name": "deploy", "steps": [step("only")] });
    std::fs::write(&json_file, body.to_string()).unwrap();
    let (ok, out, err) = run(&["workflow", "create", json_file.to_str().unwrap()]);
    assert!(ok && out.contains("version 2"), "{out}{err}");
    // A file that does not parse names its line; a refused step its number.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "name = \"x\"\n[[steps]\n").unwrap();
    let (ok, _, err) = run(&["workflow", "create", broken.to_str().unwrap()]);
    assert!(
        !ok && err.contains("broken.toml") && err.contains("line 2"),
        "{err}"
    );
    let ghost = dir.path().join("ghost.json");
    let body = json!({ "name": "g", "steps": [{ "agent": "ghost", "argv": ["x"] }] });
    std::fs::write(&ghost, body.to_string()).unwrap();
    let (ok, _, err) = run(&["workflow", "create", ghost.to_str().unwrap()]);
    assert!(
        !ok && err.contains("step 1") && err.contains("422"),
        "{err}"
    );

    let (ok, out, _) = run(&["workflow", "list"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("deploy") && l.contains(" 2 ")),
        "{out}"
    );
    let (ok, out, err) = run(&["workflow", "show", "deploy", "--version", "1"]);
    assert!(ok, "{err}");
    for needle in [
        "version 1",
        "versions: 1 2",
        "fetch",
        "cluster edge",
        "continue",
        "/usr/bin/fetch --all",
        "workflow defined by admin",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    let (ok, out, _) = run(&["-o", "json", "workflow", "show", "deploy"]);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(ok && shown["workflow"]["version"] == 2, "{out}");

    let (ok, out, err) = run(&["order", "start", "deploy", "--version", "1"]);
    assert!(ok, "{err}");
    let id: u64 = out.trim().parse().unwrap();
    let (ok, out, _) = run(&["order", "list", "--state", "running"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{id} running"))),
        "{out}"
    );
    let (ok, out, err) = run(&["order", "show", &id.to_string()]);
    assert!(ok, "{err}");
    for needle in [
        format!("order {id}  running  workflow deploy version 1"),
        "step 1 fetch  [cluster edge, stop on failure]: pending".into(),
        "step 2 install  [cluster edge, continue on failure]: waiting".into(),
        "order started by admin".into(),
    ] {
        assert!(out.contains(&needle), "{needle:?} not in:\n{out}");
    }
    let (ok, out, _) = run(&["-o", "json", "order", "show", &id.to_string()]);
    assert!(
        ok && serde_json::from_str::<Value>(&out).unwrap()["order"]["id"] == id,
        "{out}"
    );
    let (ok, out, err) = run(&["order", "cancel", &id.to_string()]);
    assert!(
        ok && out.trim() == format!("order {id} cancelled"),
        "{out}{err}"
    );
    let (ok, _, err) = run(&["order", "cancel", &id.to_string()]);
    assert!(!ok && err.contains("409") && err.contains("ended"), "{err}");

    // `--wait` follows the order until it ends; cancelled is not success.
    let mut waiting = tetherctl_command(&master.http, &master.token)
        .args(["order", "start", "deploy", "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let running = master.wait_for("/api/orders?state=running", "the waited order", |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    });
    let waited = running[0]["id"].as_u64().unwrap();
    // Let it print its first step before the order ends.
    std::thread::sleep(Duration::from_millis(300));
    let (status, v) = master.post(&format!("/api/orders/{waited}/cancel"), json!({}));
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = waiting.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "order start --wait did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = waiting.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(code.code(), Some(125), "{stdout}{stderr}");
    assert!(stdout.contains("step 1 only"), "{stdout}");
    assert!(
        stderr.contains(&format!("order {waited} cancelled")),
        "{stderr}"
    );
}
