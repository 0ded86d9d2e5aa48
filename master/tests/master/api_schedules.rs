//! Schedules over the real master's HTTP API and through `tetherctl`: a schedule on a fake
//! agent handed over, held, its occurrences reported under each version, a refused hand-over
//! and missed occurrences counted in `/metrics` (checked by promtool); pause, resume and
//! delete; every refusal of a definition with its reason; 404s, pages, roles, the routes in
//! the OpenAPI document. Schedules on a cluster go to `edge`, whose member never connects:
//! the master makes their occurrence tasks, which stay pending.

use serde_json::{Value, json};
use tether_core::message::{CommandBody, EventKind, RejectReason, ScheduleSpec, TaskRef};

use super::api_metrics::{check_with_promtool, promtool, scrape, value};
use super::api_workflows::{call_as, master_with_cluster, post_as, refused, token};
use super::runtime::{FakeAgent, MasterProc, tetherctl, tetherctl_bin};

const HOUR_MS: u64 = 3_600_000;

fn hourly(name: &str, agent: &str, argv: &[&str]) -> Value {
    json!({ "name": name, "agent": agent, "argv": argv,
        "calendar": { "cron": "0 * * * *", "time_zone": "Europe/Berlin" } })
}

/// Every second on the `edge` cluster.
fn every_second(name: &str) -> Value {
    json!({ "name": name, "cluster": "edge", "argv": ["/bin/true"],
        "calendar": { "every_ms": 1000 } })
}

fn show(master: &MasterProc, name: &str) -> Value {
    let (status, v) = master.get(&format!("/api/schedules/{name}"));
    assert_eq!(status, 200, "{v}");
    v
}

/// The fields `keys` of each item of the list `v`, as arrays: what a test compares at once.
fn pluck(v: &Value, keys: &[&str]) -> Value {
    let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|i| keys.iter().map(|k| i[*k].clone()).collect::<Value>())
        .collect()
}

fn accepted(task: TaskRef) -> EventKind {
    EventKind::Accepted { task }
}

/// The ids and time of occurrence `k` of a hand-over.
fn occurrence(spec: &ScheduleSpec, k: u64) -> (TaskRef, u64) {
    let ids = TaskRef {
        task: spec.spec.task.task + 1 + k,
        attempt: spec.spec.task.attempt + 1 + k,
    };
    let mut left = k;
    for run in &spec.runs {
        if left < u64::from(run.count) {
            return (ids, run.first_unix_ms + run.period_ms * left);
        }
        left -= u64::from(run.count);
    }
    panic!("the hand-over has no occurrence {k}: {spec:?}")
}

/// The next hand-over the agent is sent other than `seen`.
async fn handover(agent: &mut FakeAgent, seen: &[&ScheduleSpec]) -> ScheduleSpec {
    let body = agent
        .command("a new hand-over", |c| {
            matches!(c, CommandBody::Schedule(s) if seen.iter().all(|o| o.spec.task != s.spec.task))
        })
        .await;
    match body {
        CommandBody::Schedule(spec) => spec,
        _ => unreachable!("only a Schedule matches"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_on_an_agent_is_handed_over_shown_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let mut agent = FakeAgent::online(&master, "pi-1", 0x31).await;

    let (status, v1) = master.post("/api/schedules", hourly("hourly", "pi-1", &["/bin/backup"]));
    assert_eq!(status, 201, "{v1}");
    let head = pluck(&json!([v1]), &["name", "version", "paused", "missed"]);
    assert_eq!(head, json!([["hourly", 1, false, "skip"]]), "{v1}");
    let target = &v1["task"]["target"];
    assert_eq!(target, &json!({ "kind": "agent", "name": "pi-1" }));
    let next: Vec<u64> = v1["next"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["at_ms"].as_u64())
        .collect();
    assert_eq!(next.len(), 10, "{v1}");
    assert!(
        next.iter().all(|t| t % HOUR_MS == 0),
        "on the hour: {next:?}"
    );
    assert!(next.windows(2).all(|w| w[1] - w[0] == HOUR_MS), "{next:?}");
    assert_eq!(v1["next"][0]["agent"], "pi-1");

    // The agent accepts the hand-over: the next occurrences are held by it.
    let spec1 = handover(&mut agent, &[]).await;
    assert_eq!(spec1.runs[0].first_unix_ms, next[0], "{spec1:?}");
    agent.event(1, accepted(spec1.spec.task)).await;
    let shown = master.wait_for("/api/schedules/hourly", "the hand-over held", |v| {
        v["handovers"][0]["state"] == "held"
    });
    assert_eq!(shown["next"][0]["held"], true, "{shown}");
    let keys = ["task", "agent", "version", "first_ms", "occurrences"];
    let want = json!([[
        spec1.spec.task.task,
        "pi-1",
        1,
        next[0],
        spec1.occurrences()
    ]]);
    assert_eq!(pluck(&shown["handovers"], &keys), want, "{shown}");
    let history = pluck(&shown["history"], &["action", "who"]);
    assert_eq!(history, json!([["schedule defined (version 1)", "admin"]]));

    // It runs its first occurrence on its own: the task is made when it reports it.
    let (occ, at) = occurrence(&spec1, 0);
    agent.succeed(2, occ).await;
    let missed = EventKind::Missed {
        handover: spec1.spec.task,
        first: 1,
        count: 2,
    };
    agent.event(5, missed).await;
    let shown = master.wait_for("/api/schedules/hourly", "the occurrence", |v| {
        v["occurrences"][0]["state"] == "succeeded"
    });
    let keys = ["task", "version", "at_ms", "agent"];
    let want = json!([[occ.task, 1, at, "pi-1"]]);
    assert_eq!(pluck(&shown["occurrences"], &keys), want, "{shown}");
    let (_, t) = master.get(&format!("/api/tasks/{}", occ.task));
    assert_eq!(t["task"]["occurrence"]["at_ms"], at, "{t}");

    // Version 2 replaces the hand-over; the agent refuses the first, takes the next, and runs
    // an occurrence under version 2.
    let argv = ["/bin/backup", "--all"];
    let (status, v2) = master.post("/api/schedules", hourly("hourly", "pi-1", &argv));
    assert_eq!((status, &v2["version"]), (201, &json!(2)), "{v2}");
    let spec2 = handover(&mut agent, &[&spec1]).await;
    let reason = RejectReason::BadSchedule;
    let refusal = EventKind::Rejected {
        task: spec2.spec.task,
        reason,
    };
    agent.event(6, refusal).await;
    let spec3 = handover(&mut agent, &[&spec1, &spec2]).await;
    agent.event(7, accepted(spec3.spec.task)).await;
    // Its first occurrence is the one version 1 ran already: the agent runs the one after.
    let (occ2, at2) = occurrence(&spec3, 1);
    assert!(at2 > at, "{spec3:?}");
    agent.succeed(8, occ2).await;
    let shown = master.wait_for("/api/schedules/hourly", "version 2's occurrence", |v| {
        v["occurrences"][1]["state"] == "succeeded"
    });
    let versions = pluck(&shown["occurrences"], &["task", "version"]);
    assert_eq!(versions, json!([[occ.task, 1], [occ2.task, 2]]));
    let states = pluck(&shown["handovers"], &["task", "state", "version"]);
    let newest = json!([spec3.spec.task.task, "held", 2]);
    assert_eq!(states[0], newest, "newest first: {states}");
    let refused_one = json!([spec2.spec.task.task, "ended", 2]);
    assert!(
        states.as_array().unwrap().contains(&refused_one),
        "{states}"
    );
    assert_eq!(shown["schedule"]["version"], 2);
    assert_eq!(shown["schedule"]["task"]["argv"], json!(argv));
    let (_, latest) = master.get("/api/schedules/hourly?recent=1&next=3");
    let tasks = pluck(&latest["occurrences"], &["task"]);
    assert_eq!(tasks, json!([[occ2.task]]), "{latest}");
    assert_eq!(latest["next"].as_array().unwrap().len(), 3);

    // The metrics: schedules by state, occurrences by state, missed and refused.
    let text = scrape(&master);
    for (series, want) in [
        ("tether_schedules{state=\"active\"}", 1.0),
        ("tether_schedules{state=\"paused\"}", 0.0),
        ("tether_schedule_occurrences{state=\"succeeded\"}", 2.0),
        ("tether_schedule_occurrences{state=\"failed\"}", 0.0),
        ("tether_schedule_occurrences_missed_total", 2.0),
        ("tether_schedule_handovers_refused_total", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    if let Some(promtool) = promtool() {
        check_with_promtool(&promtool, &text);
    }

    // Paused: nothing is next, the agent gives back what it holds; twice changes nothing.
    let (status, v) = master.post("/api/schedules/hourly/pause", json!({}));
    let want = json!({ "name": "hourly", "paused": true, "changed": true });
    assert_eq!((status, &v), (200, &want));
    let withdrawn =
        |c: &CommandBody| matches!(c, CommandBody::Kill { task } if *task == spec3.spec.task);
    agent.command("the hand-over withdrawn", withdrawn).await;
    let (_, v) = master.post("/api/schedules/hourly/pause", json!({}));
    assert_eq!(v["changed"], false, "{v}");
    let shown = show(&master, "hourly");
    assert_eq!(pluck(&json!([shown]), &["next"]), json!([[[]]]), "{shown}");
    assert_eq!(shown["schedule"]["paused"], true);
    let paused = value(&scrape(&master), "tether_schedules{state=\"paused\"}");
    assert_eq!(paused, Some(1.0));
    let (status, v) = master.post("/api/schedules/hourly/resume", json!({}));
    let want = json!({ "name": "hourly", "paused": false, "changed": true });
    assert_eq!((status, &v), (200, &want));
    let shown = show(&master, "hourly");
    assert_eq!(shown["next"].as_array().unwrap().len(), 10);
    let history = pluck(&shown["history"], &["action"]);
    let want = json!([
        ["schedule defined (version 1)"],
        ["schedule defined (version 2)"],
        ["schedule paused"],
        ["schedule resumed"],
    ]);
    assert_eq!(history, want);

    // Deleted: gone from the reads, its occurrence tasks kept; the name is free again.
    let (status, v) = master.call("DELETE", "/api/schedules/hourly", None);
    let want = json!({ "name": "hourly", "deleted": true });
    assert_eq!((status, &v), (200, &want));
    refused(master.get("/api/schedules/hourly"), 404, &["hourly"]);
    let again = master.call("DELETE", "/api/schedules/hourly", None);
    refused(again, 404, &["hourly"]);
    assert_eq!(master.get("/api/schedules").1, json!([]));
    assert_eq!(master.get(&format!("/api/tasks/{}", occ2.task)).0, 200);
    let (status, v) = master.post("/api/schedules", hourly("hourly", "pi-1", &["/bin/true"]));
    assert_eq!((status, &v["version"]), (201, &json!(1)), "{v}");
}

#[test]
fn schedules_are_refused_with_the_reason_listed_in_pages_and_guarded_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let master = master_with_cluster(dir.path());
    let define = |body: Value| master.post("/api/schedules", body);
    // Each refusal: what replaces the fields of a valid schedule (`null` removes one), and
    // words of the reason.
    let cal = |calendar: Value| json!({ "calendar": calendar });
    let refusals: [(Value, &[&str]); 17] = [
        (
            cal(json!({ "cron": "61 * * * *" })),
            &["calendar: cron '61 * * * *'"],
        ),
        (cal(json!({ "cron": "0 * * *" })), &["4 fields"]),
        (
            cal(json!({ "cron": "0 3 * * *", "time_zone": "Mars/Olympus" })),
            &["Mars/Olympus"],
        ),
        (
            cal(json!({ "cron": "0 3 * * *", "every_ms": 60000 })),
            &["exactly one of cron"],
        ),
        (cal(json!({})), &["exactly one of cron"]),
        (cal(json!({ "every_ms": 500 })), &["every_ms 500"]),
        (
            cal(json!({ "every_ms": 1000, "time_zone": "UTC" })),
            &["time_zone"],
        ),
        (cal(json!({ "every": "1h" })), &["unknown field"]),
        (
            json!({ "cluster": null, "agent": "ghost" }),
            &["unknown agent 'ghost'"],
        ),
        (json!({ "cluster": "nowhere" }), &["nowhere"]),
        (json!({ "agent": "pi-7" }), &["exactly one target"]),
        (json!({ "cluster": null }), &["exactly one target"]),
        (json!({ "profile": "nope" }), &["nope"]),
        (
            json!({ "policy": { "heartbeat_period_ms": 1000, "heartbeat_timeout_ms": 1500 } }),
            &["multiple"],
        ),
        (json!({ "missed": "sometimes" }), &["sometimes"]),
        (json!({ "late_ms": 86_400_001u64 }), &["late_ms"]),
        (json!({ "name": "bad/name" }), &["bad/name"]),
    ];
    for (patch, words) in refusals {
        let mut body = json!({ "name": "bad", "cluster": "edge", "argv": ["/bin/true"],
            "calendar": { "every_ms": 60000 } });
        for (k, v) in patch.as_object().unwrap() {
            match v {
                Value::Null => body.as_object_mut().unwrap().remove(k),
                v => body.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
        refused(define(body), 422, words);
    }
    refused(master.get("/api/schedules/bad"), 404, &["bad"]);
    let (_, list) = master.get("/api/schedules");
    assert_eq!(list, json!([]), "nothing of a refusal is kept");

    // On a cluster the master makes each occurrence's task a minute ahead; no agent is named.
    let (status, a) = define(every_second("a"));
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["next"][0]["agent"], Value::Null, "{a}");
    assert_eq!(a["next"][0]["held"], false);
    let (status, b) = define(
        json!({ "name": "b", "cluster": "edge", "argv": ["/bin/true"],
        "calendar": { "at_ms": [4_102_444_800_000u64] }, "missed": "all", "late_ms": 5000 }),
    );
    assert_eq!(status, 201, "{b}");
    assert_eq!(
        b["next"],
        json!([{ "at_ms": 4_102_444_800_000u64, "agent": null, "held": false }])
    );
    let shown = master.wait_for("/api/schedules/a?recent=1000", "occurrence tasks", |v| {
        v["occurrences"].as_array().is_some_and(|o| o.len() >= 30)
    });
    let all = shown["occurrences"].as_array().unwrap();
    assert!(
        all.iter()
            .all(|o| o["state"] == "pending" && o["agent"].is_null() && o["version"] == 1),
        "{shown}"
    );
    let (_, last) = master.get("/api/schedules/a?recent=3");
    let last: Vec<u64> = last["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["task"].as_u64())
        .collect();
    assert_eq!(last.len(), 3);
    assert!(
        last.is_sorted() && last[2] >= all.last().unwrap()["task"].as_u64().unwrap(),
        "the latest, oldest first: {last:?}"
    );
    let (_, default) = master.get("/api/schedules/a");
    assert_eq!(default["occurrences"].as_array().unwrap().len(), 20);

    // Pages in id order; queries checked.
    let (status, list) = master.get("/api/schedules");
    let names = pluck(&list, &["name"]);
    assert_eq!((status, names), (200, json!([["a"], ["b"]])), "{list}");
    let (_, page) = master.get(&format!("/api/schedules?after={}&limit=5", a["id"]));
    assert_eq!(pluck(&page, &["name"]), json!([["b"]]));
    let (_, page) = master.get("/api/schedules?limit=1");
    assert_eq!(pluck(&page, &["name"]), json!([["a"]]));
    for (path, status) in [
        ("/api/schedules?limit=0", 422),
        ("/api/schedules?limit=10001", 422),
        ("/api/schedules?after=x", 400),
        ("/api/schedules?state=paused", 400),
        ("/api/schedules/a?next=101", 422),
        ("/api/schedules/a?recent=1001", 422),
        ("/api/schedules/a?next=x", 400),
        ("/api/schedules/a?version=1", 400),
        ("/api/schedules/a?next=0&recent=0", 200),
    ] {
        assert_eq!(master.get(path).0, status, "{path}");
    }
    for (method, path) in [
        ("POST", "/api/schedules/ghost/pause"),
        ("POST", "/api/schedules/ghost/resume"),
        ("DELETE", "/api/schedules/ghost"),
        ("GET", "/api/schedules/ghost"),
    ] {
        let body = (method == "POST").then(|| "{}".to_owned());
        refused(
            master.call(method, path, body),
            404,
            &["unknown schedule 'ghost'"],
        );
    }

    // Viewers read; operators define, pause, resume and delete, each recorded as who did.
    let viewer = token(&master, "viewer");
    let operator = token(&master, "operator");
    for (method, path, body) in [
        (
            "POST",
            "/api/schedules",
            Some(every_second("v").to_string()),
        ),
        ("POST", "/api/schedules/a/pause", Some("{}".to_owned())),
        ("POST", "/api/schedules/a/resume", Some("{}".to_owned())),
        ("DELETE", "/api/schedules/a", None),
    ] {
        let (status, v) = call_as(&master, &viewer, method, path, body.as_deref());
        assert_eq!(
            (status, v["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(
        call_as(&master, &viewer, "GET", "/api/schedules/a", None).0,
        200
    );
    let (status, v) = post_as(&master, &operator, "/api/schedules", &every_second("ops"));
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        post_as(&master, &operator, "/api/schedules/ops/pause", &json!({})).0,
        200
    );
    let (status, v) = call_as(&master, &operator, "DELETE", "/api/schedules/ops", None);
    assert_eq!(status, 200, "{v}");
    let (status, v) = post_as(&master, &operator, "/api/schedules", &every_second("ops"));
    assert_eq!(status, 201, "{v}");
    let who = pluck(&show(&master, "ops")["history"], &["action", "who"]);
    let want = json!([
        ["schedule defined (version 1)", "operator"],
        ["schedule paused", "operator"],
        ["schedule deleted", "operator"],
        ["schedule defined (version 1)", "operator"],
    ]);
    assert_eq!(who, want, "the name's history goes on");
}

#[test]
fn the_openapi_document_has_the_schedule_routes() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let (status, doc) = master.get("/api/openapi.json");
    assert_eq!(status, 200, "{doc}");
    for (method, path, role, statuses) in [
        (
            "post",
            "/api/schedules",
            "operator",
            &["201", "400", "403", "413", "415", "422", "507"][..],
        ),
        (
            "get",
            "/api/schedules",
            "viewer",
            &["200", "400", "401", "422"],
        ),
        (
            "get",
            "/api/schedules/{name}",
            "viewer",
            &["200", "400", "404", "422"],
        ),
        (
            "delete",
            "/api/schedules/{name}",
            "operator",
            &["200", "403", "404", "507"],
        ),
        (
            "post",
            "/api/schedules/{name}/pause",
            "operator",
            &["200", "404"],
        ),
        (
            "post",
            "/api/schedules/{name}/resume",
            "operator",
            &["200", "404"],
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
        "ScheduleRequest",
        "CalendarSpec",
        "ScheduleAnswer",
        "NextOccurrence",
        "HandoverAnswer",
        "OccurrenceAnswer",
        "Schedule",
    ] {
        assert!(schemas[name].is_object(), "{name}");
    }
}

const DEFINITION: &str = r#"
name = "report"
cluster = "edge"
argv = ["/usr/bin/report", "--daily"]
missed = "once"

[calendar]
cron = "30 6 * * 1-5"
time_zone = "Europe/Berlin"

[policy]
retries = 1
"#;

#[test]
fn tetherctl_defines_schedules_and_shows_them() {
    tetherctl_bin();
    let dir = tempfile::tempdir().unwrap();
    let master = master_with_cluster(dir.path());
    let run = |args: &[&str]| tetherctl(&master, args);
    let file = dir.path().join("report.toml");
    std::fs::write(&file, DEFINITION).unwrap();
    let (ok, out, err) = run(&["schedule", "create", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("schedule report version 1 defined\nnext at "),
        "{out}"
    );
    // The quick form: a name, a calendar, a target and the program after `--`.
    let (ok, out, err) = run(&[
        "schedule",
        "create",
        "tick",
        "--every",
        "1s",
        "--cluster",
        "edge",
        "--missed",
        "all",
        "--",
        "/bin/echo",
        "tick",
    ]);
    assert!(
        ok && out.contains("schedule tick version 1 defined"),
        "{out}{err}"
    );
    let (ok, out, err) = run(&[
        "schedule",
        "create",
        "report",
        "--cron",
        "0 7 * * 1-5",
        "--zone",
        "Europe/Berlin",
        "--cluster",
        "edge",
        "--",
        "/usr/bin/report",
    ]);
    assert!(ok && out.contains("version 2"), "{out}{err}");
    // Refusals: the master's reason, or the file's line; two calendars are one too many.
    let (ok, _, err) = run(&[
        "schedule",
        "create",
        "x",
        "--cron",
        "0 * *",
        "--cluster",
        "edge",
        "--",
        "x",
    ]);
    assert!(
        !ok && err.contains("422") && err.contains("3 fields"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "schedule",
        "create",
        "x",
        "--every",
        "1m",
        "--at",
        "+1h",
        "--cluster",
        "edge",
        "--",
        "x",
    ]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "name = \"x\"\n[calendar\n").unwrap();
    let (ok, _, err) = run(&["schedule", "create", broken.to_str().unwrap()]);
    assert!(
        !ok && err.contains("broken.toml") && err.contains("line 2"),
        "{err}"
    );

    let (ok, out, _) = run(&["schedule", "list"]);
    let report = out
        .lines()
        .find(|l| l.contains(" report "))
        .unwrap_or_default();
    assert!(
        ok && report.contains(" 2 ") && report.contains("cron \"0 7 * * 1-5\" in Europe/Berlin"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(" tick ") && l.contains("every 1 s from")),
        "{out}"
    );
    let (ok, out, err) = run(&["schedule", "show", "report", "--next", "3"]);
    assert!(ok, "{err}");
    for needle in [
        "schedule report  version 2  active",
        "calendar cron \"0 7 * * 1-5\" in Europe/Berlin",
        "runs     cluster edge: /usr/bin/report",
        "schedule defined (version 2) by admin",
        "next on cluster edge (the master picks a member as each starts)",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    let next = out
        .lines()
        .skip_while(|l| !l.starts_with("next on"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .count();
    assert_eq!(next, 3, "{out}");
    let (ok, out, _) = run(&["schedule", "show", "tick"]);
    assert!(
        ok && out.contains("occurrences\n") && out.contains("version 1  pending"),
        "{out}"
    );
    let (ok, out, _) = run(&["-o", "json", "schedule", "show", "report"]);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(
        ok && shown["schedule"]["version"] == 2 && shown["next"].as_array().unwrap().len() == 10,
        "{out}"
    );

    let (ok, out, _) = run(&["schedule", "pause", "report"]);
    assert!(ok && out.trim() == "schedule report: paused", "{out}");
    let (ok, out, _) = run(&["schedule", "pause", "report"]);
    assert!(
        ok && out.trim() == "schedule report: paused (already)",
        "{out}"
    );
    let (ok, out, _) = run(&["schedule", "show", "report"]);
    assert!(
        ok && out.contains("paused") && out.contains("next: none while paused"),
        "{out}"
    );
    let (ok, out, _) = run(&["-o", "json", "schedule", "resume", "report"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        ok && v == json!({ "name": "report", "paused": false, "changed": true }),
        "{out}"
    );
    let (ok, out, _) = run(&["schedule", "delete", "tick"]);
    assert!(ok && out.trim() == "schedule tick deleted", "{out}");
    let (ok, _, err) = run(&["schedule", "delete", "tick"]);
    assert!(
        !ok && err.contains("404") && err.contains("unknown schedule 'tick'"),
        "{err}"
    );
    let (ok, out, _) = run(&["-o", "json", "schedule", "list"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert!(ok && list.as_array().unwrap().len() == 1, "{out}");
}
