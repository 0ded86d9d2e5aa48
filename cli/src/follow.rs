//! Following a task or the fleet by polling the API: `logs -f`, `watch`, `submit --wait`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use crate::client::{Api, Failure};
use crate::table::{list, task_line, text};

pub(crate) const TERMINAL: [&str; 5] = ["succeeded", "failed", "cancelled", "killed", "lost"];

pub(crate) fn logs(api: &Api, id: u64, follow: bool, out: &mut impl Write) -> Result<(), Failure> {
    let mut seen: BTreeSet<(u64, String, u64)> = BTreeSet::new();
    loop {
        let v = api.get(&format!("/api/tasks/{id}/output"))?;
        let mut chunks = list(&v["chunks"]);
        chunks.sort_by_key(|c| (c["attempt"].as_u64(), c["offset"].as_u64()));
        for c in chunks {
            let key = (
                c["attempt"].as_u64().unwrap_or(0),
                text(&c["stream"]),
                c["offset"].as_u64().unwrap_or(0),
            );
            if seen.insert(key.clone()) {
                let chunk = text(&c["text"]);
                if key.1 == "stderr" {
                    eprint!("{chunk}");
                } else {
                    write!(out, "{chunk}")?;
                }
            }
        }
        out.flush()?;
        let done = TERMINAL.contains(&text(&v["state"]).as_str());
        if !follow || done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub(crate) fn watch(api: &Api, json: bool, out: &mut impl Write) -> Result<(), Failure> {
    let mut agents: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut tasks: BTreeMap<u64, String> = BTreeMap::new();
    loop {
        for a in list(&api.get("/api/agents")?) {
            let id = text(&a["id"]);
            let now = (text(&a["presence"]), a["available"].as_bool() == Some(true));
            if agents.get(&id) != Some(&now) {
                let avail = if now.1 { "available" } else { "unavailable" };
                if json {
                    writeln!(out, "{}", serde_json::json!({ "agent": a }))?;
                } else {
                    writeln!(out, "agent {id}: {} ({avail})", now.0)?;
                }
                agents.insert(id, now);
            }
        }
        for t in list(&api.get("/api/tasks")?) {
            let id = t["id"].as_u64().unwrap_or(0);
            let state = text(&t["state"]);
            if tasks.get(&id) != Some(&state) {
                if json {
                    writeln!(out, "{}", serde_json::json!({ "task": t }))?;
                } else {
                    writeln!(out, "task {}", task_line(&t).trim_start())?;
                }
                tasks.insert(id, state);
            }
        }
        out.flush()?;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Follows the task's output until it ends; its exit code (0 when it succeeded), or a line
/// on stderr and a non-zero code when it did not run to an exit.
pub(crate) fn wait(api: &Api, id: u64, out: &mut impl Write) -> Result<i32, Failure> {
    logs(api, id, true, out)?;
    let v = api.get(&format!("/api/tasks/{id}"))?;
    let task = &v["task"];
    let state = text(&task["state"]);
    let outcome = &task["outcome"];
    let code = match (state.as_str(), outcome["kind"].as_str()) {
        ("succeeded", _) => 0,
        (_, Some("exited")) if outcome["exit"]["Code"].is_i64() => {
            let code = outcome["exit"]["Code"].as_i64().unwrap_or(1);
            eprintln!("tetherctl: task {id} {state}: exit {code}");
            i32::try_from(code).unwrap_or(1).clamp(1, 255)
        }
        _ => {
            let why = match outcome["exit"]["Signal"].as_i64() {
                Some(sig) => format!("(signal {sig})"),
                None => outcome["reason"]
                    .as_str()
                    .or(outcome["kind"].as_str())
                    .unwrap_or("")
                    .replace('_', " "),
            };
            eprintln!("tetherctl: task {id} {state} {why}");
            // Like a shell's 128 + signal: the task did not end by itself.
            if state == "killed" { 137 } else { 125 }
        }
    };
    out.flush()?;
    Ok(code)
}
