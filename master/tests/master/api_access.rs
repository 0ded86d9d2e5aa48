//! Only operators command the fleet: every route of the real master against no token, a
//! wrong token, a revoked token and each role; a DNS-rebinding `Host`; a cross-site POST; a
//! form POST; and an agent key read twice. Raw HTTP, so every header is the test's own.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};

use super::runtime::MasterProc;

/// One request with exactly these headers; the status and the body.
fn raw(http: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(http).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Every route, what it needs, and a body that is valid enough to get past the check.
pub(super) const ROUTES: &[(&str, &str, Option<&str>, &str)] = &[
    ("GET", "/api/openapi.json", Some("viewer"), ""),
    ("GET", "/metrics", Some("viewer"), ""),
    // For load balancers: public, and it tells only ok and a fixed reason.
    ("GET", "/healthz", None, ""),
    ("HEAD", "/healthz", None, ""),
    ("GET", "/api/status", Some("viewer"), ""),
    // Who the token is: the dashboard shows operators' controls to operators only.
    ("GET", "/api/whoami", Some("viewer"), ""),
    ("GET", "/api/agents", Some("viewer"), ""),
    ("GET", "/api/keys", Some("viewer"), ""),
    ("GET", "/api/security", Some("viewer"), ""),
    ("GET", "/api/clusters", Some("viewer"), ""),
    ("GET", "/api/profiles", Some("viewer"), ""),
    ("GET", "/api/tasks", Some("viewer"), ""),
    ("GET", "/api/tasks/1", Some("viewer"), ""),
    ("GET", "/api/tasks/1/output", Some("viewer"), ""),
    // The streams: answers that end (no task 1; a bad `since`), past the role check.
    ("GET", "/api/tasks/1/output?follow=1", Some("viewer"), ""),
    ("GET", "/api/tasks/1/output?format=raw", Some("viewer"), ""),
    ("GET", "/api/events?since=x", Some("viewer"), ""),
    (
        "POST",
        "/api/tasks",
        Some("operator"),
        r#"{"agent":"ghost","argv":["/bin/true"]}"#,
    ),
    ("POST", "/api/tasks/1/kill", Some("operator"), "{}"),
    // Workflows and orders: read by viewers, defined, started and cancelled by operators.
    ("GET", "/api/workflows", Some("viewer"), ""),
    ("GET", "/api/workflows/w", Some("viewer"), ""),
    (
        "POST",
        "/api/workflows",
        Some("operator"),
        r#"{"name":"w","steps":[]}"#,
    ),
    ("GET", "/api/orders", Some("viewer"), ""),
    ("GET", "/api/orders/1", Some("viewer"), ""),
    (
        "POST",
        "/api/orders",
        Some("operator"),
        r#"{"workflow":"ghost"}"#,
    ),
    ("POST", "/api/orders/1/cancel", Some("operator"), "{}"),
    // Schedules: read by viewers, defined, paused, resumed and deleted by operators.
    ("GET", "/api/schedules", Some("viewer"), ""),
    ("GET", "/api/schedules/s", Some("viewer"), ""),
    (
        "POST",
        "/api/schedules",
        Some("operator"),
        r#"{"name":"s","agent":"ghost","argv":["/bin/true"],"calendar":{"every_ms":60000}}"#,
    ),
    ("POST", "/api/schedules/s/pause", Some("operator"), "{}"),
    ("POST", "/api/schedules/s/resume", Some("operator"), "{}"),
    ("DELETE", "/api/schedules/s", Some("operator"), ""),
    ("POST", "/api/agents/pi-7/key", Some("admin"), "{}"),
    ("POST", "/api/agents/ghost/disable", Some("operator"), "{}"),
    ("POST", "/api/agents/ghost/enable", Some("operator"), "{}"),
    (
        "POST",
        "/api/clusters",
        Some("admin"),
        r#"{"name":"c","mode":"round-robin","members":["pi-7"]}"#,
    ),
    (
        "POST",
        "/api/profiles",
        Some("admin"),
        r#"{"name":"p","policy":{}}"#,
    ),
    ("GET", "/api/tokens", Some("admin"), ""),
    (
        "POST",
        "/api/tokens",
        Some("admin"),
        r#"{"name":"x","role":"viewer"}"#,
    ),
    ("DELETE", "/api/tokens/nobody", Some("admin"), ""),
    // The dashboard: fixed files, no data (the page asks for a token).
    ("GET", "/", None, ""),
    ("GET", "/ui/app.js", None, ""),
    ("GET", "/ui/style.css", None, ""),
];

const ROLES: &[&str] = &["viewer", "operator", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap()
}

#[test]
fn every_route_checks_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let host = ("Host", "127.0.0.1");
    let json_type = ("Content-Type", "application/json");
    let mut secrets = vec![];
    for role in ["viewer", "operator"] {
        let (status, v) = master.post("/api/tokens", json!({ "name": role, "role": role }));
        assert_eq!(status, 201, "{v}");
        assert!(v["token"].as_str().unwrap().starts_with("tether_"));
        secrets.push((role, v["token"].as_str().unwrap().to_owned()));
    }
    secrets.push(("admin", master.token.clone()));

    for (method, path, needs, body) in ROUTES {
        let call = |auth: Option<&str>| {
            let bearer = auth.map(|t| format!("Bearer {t}"));
            let mut h = vec![host, json_type];
            if let Some(b) = &bearer {
                h.push(("Authorization", b));
            }
            raw(&master.http, method, path, &h, body)
        };
        let Some(needs) = needs else {
            assert_eq!(call(None).0, 200, "{method} {path} is public");
            continue;
        };
        let (status, v) = call(None);
        assert_eq!(
            (status, &v["code"]),
            (401, &json!("unauthorized")),
            "{method} {path}"
        );
        let wrong = format!("tether_{}", "0".repeat(64));
        assert_eq!(call(Some(&wrong)).0, 401, "{method} {path} wrong token");
        for (role, secret) in &secrets {
            let (status, v) = call(Some(secret));
            if rank(role) < rank(needs) {
                assert_eq!(status, 403, "{method} {path} as {role}: {v}");
                assert_eq!(v["code"], "forbidden");
            } else {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role}: {status} {v}"
                );
            }
        }
    }

    // Revocation takes effect at once; the list shows it, never a secret.
    let operator = &secrets[1].1;
    let auth = format!("Bearer {operator}");
    let as_operator = [host, json_type, ("Authorization", auth.as_str())];
    assert_eq!(
        raw(&master.http, "GET", "/api/tasks", &as_operator, "").0,
        200
    );
    let (status, v) = raw(
        &master.http,
        "DELETE",
        "/api/tokens/operator",
        &[
            host,
            json_type,
            ("Authorization", &format!("Bearer {}", master.token)),
        ],
        "",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        raw(&master.http, "GET", "/api/tasks", &as_operator, "").0,
        401
    );
    let (_, list) = master.get("/api/tokens");
    let text = list.to_string();
    assert!(
        !text.contains("tether_") && !text.contains("hash"),
        "{text}"
    );
    let op = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "operator")
        .unwrap();
    assert!(op["revoked_ms"].is_u64(), "{op}");
}

#[test]
fn browsers_cannot_reach_the_api_from_another_site() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let auth = format!("Bearer {}", master.token);
    let submit = r#"{"agent":"ghost","argv":["/bin/true"]}"#;
    let json_type = ("Content-Type", "application/json");

    // DNS rebinding: the attacker's name resolves to the master, the Host header tells.
    let rebound = [
        ("Host", "evil.example:8080"),
        ("Authorization", auth.as_str()),
    ];
    let (status, v) = raw(&master.http, "GET", "/api/tasks", &rebound, "");
    assert_eq!(
        (status, &v["code"]),
        (421, &json!("misdirected_request")),
        "{v}"
    );
    // The loopback names and IPs pass.
    for name in ["localhost:1", "127.0.0.1", "[::1]:8080"] {
        let ok = [("Host", name), ("Authorization", auth.as_str())];
        assert_eq!(
            raw(&master.http, "GET", "/api/tasks", &ok, "").0,
            200,
            "{name}"
        );
    }

    // A page elsewhere posting with the operator's token (if it had it) is refused.
    let cross = [
        ("Host", "127.0.0.1"),
        json_type,
        ("Origin", "https://evil.example"),
        ("Authorization", auth.as_str()),
    ];
    let (status, v) = raw(&master.http, "POST", "/api/tasks", &cross, submit);
    assert_eq!((status, &v["code"]), (403, &json!("forbidden")), "{v}");
    // A form post (no preflight in browsers) is not JSON: refused before anything runs.
    let form = [
        ("Host", "127.0.0.1"),
        ("Content-Type", "text/plain"),
        ("Authorization", auth.as_str()),
    ];
    let (status, v) = raw(&master.http, "POST", "/api/tasks", &form, submit);
    assert_eq!(
        (status, &v["code"]),
        (415, &json!("unsupported_media_type")),
        "{v}"
    );
    // Wrong methods answer JSON.
    let get = [("Host", "127.0.0.1"), ("Authorization", auth.as_str())];
    let (status, v) = raw(&master.http, "GET", "/api/tasks/1/kill", &get, "");
    assert_eq!(
        (status, &v["code"]),
        (405, &json!("method_not_allowed")),
        "{v}"
    );
    // Too large a body.
    let huge = format!(r#"{{"agent":"x","argv":["{}"]}}"#, "a".repeat(3 << 20));
    let mut big = cross.to_vec();
    big.truncate(2);
    big.push(("Authorization", auth.as_str()));
    assert_eq!(raw(&master.http, "POST", "/api/tasks", &big, &huge).0, 413);
}

#[test]
fn an_agent_key_leaves_the_master_once() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let (status, first) = master.post("/api/agents/pi-7/key", json!({}));
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["agent_key"].as_str().unwrap().len(), 64);
    // Asked again: no secret, whoever asks.
    let (status, v) = master.post("/api/agents/pi-7/key", json!({}));
    assert_eq!((status, &v["code"]), (409, &json!("conflict")), "{v}");
    assert!(v.get("agent_key").is_none());
    // An operator cannot even ask.
    let (_, op) = master.post("/api/tokens", json!({ "name": "ops", "role": "operator" }));
    let auth = format!("Bearer {}", op["token"].as_str().unwrap());
    let headers = [
        ("Host", "127.0.0.1"),
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let body = r#"{"rotate":true}"#;
    let (status, _) = raw(&master.http, "POST", "/api/agents/pi-7/key", &headers, body);
    assert_eq!(status, 403);
    // Rotation gives a new one, to an admin.
    let (status, rotated) = master.post("/api/agents/pi-7/key", json!({ "rotate": true }));
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["agent_key"], first["agent_key"]);
}
