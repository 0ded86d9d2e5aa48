//! The OpenAPI document of the real master: every route of the access table is in it with its
//! methods and the role the master enforces, nothing else is, every documented operation is
//! routed and every other method on its path is 405; and a real validator accepts it.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use super::api_access::ROUTES;
use super::runtime::MasterProc;

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];
/// What the document may list: HEAD too (axum answers it on every GET route, so only the
/// operations that promise it, `/healthz`, list it).
const DOCUMENTED: &[&str] = &["get", "head", "post", "put", "patch", "delete"];

/// Whether a concrete path (`/api/tasks/1`) fits a template (`/api/tasks/{id}`).
fn fits(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

/// `(method, template, x-required-role)` of every documented operation.
fn operations(doc: &Value) -> BTreeSet<(String, String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut ops = BTreeSet::new();
    for (template, item) in paths {
        for m in DOCUMENTED {
            if let Some(op) = item.get(*m) {
                let role = op["x-required-role"].as_str().expect("x-required-role");
                ops.insert((m.to_uppercase(), template.clone(), role.to_owned()));
            }
        }
    }
    ops
}

#[test]
fn the_document_lists_every_route_with_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let (status, doc) = master.get("/api/openapi.json");
    assert_eq!(status, 200, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let documented = operations(&doc);

    // The access table's routes (tested against the master's answers there), as templates.
    // The dashboard's page and files are not part of the JSON API.
    let mut tabled = BTreeSet::new();
    let api = |r: &&(&str, &str, Option<&str>, &str)| r.1 != "/" && !r.1.starts_with("/ui/");
    for (method, path, needs, _) in ROUTES.iter().filter(api) {
        // Query forms of one route (`?follow=1`) are one operation.
        let path = path.split('?').next().unwrap_or(path);
        let template = documented
            .iter()
            .find(|(m, t, _)| m == method && fits(t, path))
            .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
        assert_eq!(
            Some(template.2.as_str()).filter(|r| *r != "public"),
            *needs,
            "{method} {path}: the document says another role"
        );
        tabled.insert(template.clone());
    }
    assert_eq!(
        tabled, documented,
        "the document has operations the access table does not"
    );

    // Every documented operation is routed, every other method on its path is not.
    let paths = doc["paths"].as_object().unwrap();
    for (template, item) in paths {
        let concrete = template
            .split('/')
            .map(|s| if s.starts_with('{') { "1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        // A stream would not end: a bad query shows the route without opening it.
        let concrete = if template == "/api/events" {
            format!("{concrete}?since=x")
        } else {
            concrete
        };
        for m in METHODS {
            let (status, body) = master.call(&m.to_uppercase(), &concrete, Some("{}".into()));
            if item.get(*m).is_some() {
                assert_ne!(status, 405, "{m} {concrete}: {body}");
                assert_ne!(body["error"], "no such route", "{m} {concrete}");
            } else {
                assert_eq!(
                    status, 405,
                    "{m} {concrete} is routed but not documented: {body}"
                );
            }
        }
        // Each operation says its role, its bearer requirement and its errors.
        for m in DOCUMENTED {
            let Some(op) = item.get(*m) else { continue };
            if op["x-required-role"] == "public" {
                assert!(op.get("security").is_none(), "{m} {template}");
                continue;
            }
            assert!(op["security"][0]["bearer"].is_array(), "{m} {template}");
            assert!(op["responses"]["401"].is_object(), "{m} {template}");
            if op.get("requestBody").is_some() {
                for code in ["400", "413", "415", "422"] {
                    assert!(op["responses"][code].is_object(), "{m} {template} {code}");
                }
            }
        }
    }
    let schemes = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["scheme"], "bearer", "{schemes}");

    validate(&doc, dir.path());
}

/// Runs `openapi-spec-validator` (PyPI) on the document: `TETHER_OPENAPI_VALIDATOR` names it,
/// else it is looked up on `PATH`. Absent, the check is skipped with a note, except under CI.
fn validate(doc: &Value, dir: &std::path::Path) {
    let file = dir.join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let tool = std::env::var("TETHER_OPENAPI_VALIDATOR")
        .unwrap_or_else(|_| "openapi-spec-validator".to_owned());
    match Command::new(&tool).arg(&file).output() {
        Ok(out) => assert!(
            out.status.success(),
            "{tool} refused the document:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            let ci = std::env::var("TETHER_CI").is_ok_and(|v| v == "1")
                || std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(!ci, "{tool} cannot run under CI: {e}");
            eprintln!("note: {tool} not found ({e}); the document was not validated");
        }
    }
}
