//! No request can stop the master: random and extreme request bodies, paths and agent reports
//! thrown at the real `tether-master` binary (its API, its core, its SQLite store). Every
//! answer must be a client error or a success, never a 5xx; the process must stay up; and
//! every task it answered 201 for must be stored. Seeded, so a failure replays with
//! `TETHER_ABUSE_SEED`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tether_core::message::{EventKind, Exit, Stream, TaskRef};

use super::runtime::{FakeAgent, MasterProc};

/// Numbers at every boundary a store or a type could trip on.
const EXTREME: &[i128] = &[
    -1,
    0,
    1,
    99,
    100,
    1_000,
    i32::MAX as i128,
    u32::MAX as i128,
    u32::MAX as i128 + 1,
    (1 << 53) + 1,
    i64::MAX as i128,
    i64::MAX as i128 + 1,
    u64::MAX as i128,
    u64::MAX as i128 + 1,
];

fn number(rng: &mut SmallRng) -> Value {
    match rng.random_range(0..6) {
        0 => json!(rng.random::<f64>() * 1e20),
        1 => json!(rng.random_range(0..100_000u64)),
        2 => json!("12"),
        _ => {
            let n = EXTREME[rng.random_range(0..EXTREME.len())];
            // Beyond u64 is only expressible as raw JSON text: serde_json parses it as a float.
            serde_json::from_str(&n.to_string()).unwrap()
        }
    }
}

fn text(rng: &mut SmallRng) -> Value {
    let pick = [
        "",
        "/",
        "relative/dir",
        "/tmp",
        "pi-1",
        "ghost",
        "a b",
        "\u{0}",
        "é\u{301}",
        "../..",
        "tether-master",
    ];
    match rng.random_range(0..4) {
        0 => json!("x".repeat(rng.random_range(0..5_000))),
        1 => json!(rng.random::<u32>()),
        _ => json!(pick[rng.random_range(0..pick.len())]),
    }
}

fn list(rng: &mut SmallRng) -> Value {
    let n = match rng.random_range(0..4) {
        0 => 0,
        1 => rng.random_range(1..4),
        2 => rng.random_range(60..80),
        _ => rng.random_range(200..300),
    };
    Value::Array((0..n).map(|_| text(rng)).collect())
}

fn policy(rng: &mut SmallRng) -> Value {
    let mut p = serde_json::Map::new();
    for key in [
        "heartbeat_period_ms",
        "heartbeat_timeout_ms",
        "grace_ms",
        "max_run_ms",
        "output_cap",
        "retries",
        "lost_after_ms",
    ] {
        if rng.random_bool(0.4) {
            p.insert(key.into(), number(rng));
        }
    }
    if rng.random_bool(0.3) {
        let v = ["kill", "continue", "explode"][rng.random_range(0..3)];
        p.insert("on_disconnect".into(), json!(v));
    }
    Value::Object(p)
}

/// A submit that is mostly well formed, so most requests reach the core and the store.
fn submit(rng: &mut SmallRng) -> Value {
    let mut s = serde_json::Map::new();
    match rng.random_range(0..5) {
        0 => s.insert("cluster".into(), json!("c1")),
        1 => s.insert("agent".into(), text(rng)),
        _ => s.insert("agent".into(), json!("pi-1")),
    };
    let argv = if rng.random_bool(0.7) {
        json!(["/bin/true"])
    } else {
        list(rng)
    };
    s.insert("argv".into(), argv);
    for (key, p) in [("env", 0.3), ("cwd", 0.4), ("profile", 0.1)] {
        if rng.random_bool(p) {
            let v = if key == "env" { list(rng) } else { text(rng) };
            s.insert(key.into(), v);
        }
    }
    if rng.random_bool(0.5) {
        s.insert("start_at_ms".into(), number(rng));
    }
    if rng.random_bool(0.6) {
        s.insert("policy".into(), policy(rng));
    }
    if rng.random_bool(0.05) {
        s.insert("surprise".into(), json!(true));
    }
    Value::Object(s)
}

/// One request: method, path, raw body.
fn request(rng: &mut SmallRng) -> (&'static str, String, Option<String>) {
    let id = match rng.random_range(0..3) {
        0 => EXTREME[rng.random_range(0..EXTREME.len())].to_string(),
        1 => "abc".to_owned(),
        _ => rng.random_range(1..50u64).to_string(),
    };
    match rng.random_range(0..12) {
        0..=5 => ("POST", "/api/tasks".into(), Some(submit(rng).to_string())),
        6 => {
            let body = json!({ "name": text(rng), "mode": "round-robin", "members": list(rng) });
            ("POST", "/api/clusters".into(), Some(body.to_string()))
        }
        7 => {
            let body = json!({ "name": text(rng), "policy": policy(rng) });
            ("POST", "/api/profiles".into(), Some(body.to_string()))
        }
        8 => ("GET", format!("/api/tasks/{id}"), None),
        9 => ("GET", format!("/api/tasks/{id}/output"), None),
        10 => ("POST", format!("/api/tasks/{id}/kill"), None),
        _ => {
            // Malformed: truncated, wrong types, not JSON at all.
            let mut body = submit(rng).to_string();
            // Cut on a character boundary: the text may hold multi-byte characters.
            let mut cut = rng.random_range(0..body.len().max(1));
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            ("POST", "/api/tasks".into(), Some(body))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_stops_the_master() {
    let seed = std::env::var("TETHER_ABUSE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
    let requests: usize = std::env::var("TETHER_ABUSE_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    let mut master = MasterProc::start(dir.path());
    let agent = FakeAgent::online(&master, "pi-1", 0x21).await;
    let (status, v) = master.post(
        "/api/clusters",
        json!({ "name": "c1", "mode": "round-robin", "members": ["pi-1"] }),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["warnings"], json!([]), "pi-1 is known: {v}");
    let (_, v) = master.post(
        "/api/clusters",
        json!({ "name": "c2", "mode": "round-robin", "members": ["pi-1", "pi-9"] }),
    );
    assert_eq!(
        v["warnings"],
        json!(["member pi-9 has never connected to this master"]),
        "{v}"
    );

    let mut rng = SmallRng::seed_from_u64(seed);
    let mut created = Vec::new();
    for i in 0..requests {
        let (method, path, body) = request(&mut rng);
        let answer = crate::plain_http::request(
            &master.http,
            Some(&master.token),
            method,
            &path,
            body.as_deref(),
        );
        let (status, text) = answer.unwrap_or_else(|e| {
            panic!("seed {seed}, request {i} {method} {path} {body:?}: no answer: {e}")
        });
        assert!(
            status < 500,
            "seed {seed}, request {i}: {method} {path} {body:?} answered {status} {text}"
        );
        if status == 201 && path == "/api/tasks" {
            let v: Value = serde_json::from_str(&text).unwrap();
            created.push(v["id"].as_u64().unwrap());
        }
    }

    // Agent reports at the edges of what a store holds: refused and counted, never fatal.
    let task = TaskRef {
        task: created.first().copied().unwrap_or(1),
        attempt: 1,
    };
    let huge = 1u64 << 63;
    agent.event(huge, EventKind::Accepted { task }).await;
    agent
        .event(
            1,
            EventKind::Output {
                task,
                stream: Stream::Stdout,
                offset: u64::MAX - 1,
                data: heapless::Vec::from_slice(b"x").unwrap(),
            },
        )
        .await;
    agent
        .event(
            2,
            EventKind::Finished {
                task,
                exit: Exit::Code(0),
                cause: None,
                output_dropped: u64::MAX,
            },
        )
        .await;
    agent.heartbeat(huge, &[]).await;

    // Still up, still answering, and every accepted task is there.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        master.child.try_wait().unwrap().is_none(),
        "seed {seed}: the master exited"
    );
    let (status, v) = master.get("/api/status");
    assert_eq!(status, 200, "seed {seed}: {v}");
    // The four out-of-range reports were refused as bad messages, not stored.
    assert!(v["stats"]["bad_messages"].as_u64().unwrap() >= 4, "{v}");
    for id in &created {
        let (status, v) = master.get(&format!("/api/tasks/{id}"));
        assert_eq!(
            status, 200,
            "seed {seed}: task {id} accepted but not stored: {v}"
        );
    }
    eprintln!(
        "seed {seed}: {requests} requests, {} tasks accepted, master up",
        created.len()
    );
}
