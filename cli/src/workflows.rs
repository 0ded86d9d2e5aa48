//! `tetherctl workflow ...` and `tetherctl order ...`: what each asks of the master and how
//! the answer reads for people (a table, a workflow's steps, an order's steps with their
//! attempts), or with `--output json` the master's JSON as it is.

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::args::{OrderCmd, WorkflowCmd};
use crate::client::{Api, Failure};
use crate::commands::{percent, print, with_query};
use crate::definition_file;
use crate::follow;
use crate::show::{at, exit, s};
use crate::table::list;

pub(crate) fn workflow(
    api: &Api,
    command: WorkflowCmd,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match command {
        WorkflowCmd::Create { file } => {
            let answer = api.post("/api/workflows", &definition_file::read(&file, "workflow")?)?;
            print(out, json, &answer, &|out, v| {
                let steps = list(&v["steps"]).len();
                writeln!(
                    out,
                    "workflow {} version {} defined ({steps} steps)",
                    s(&v["name"]),
                    s(&v["version"])
                )
            })
        }
        WorkflowCmd::Show { name, version } => {
            let query = [("version", version.map(|v| v.to_string()))];
            let path = with_query(&format!("/api/workflows/{}", percent(&name)), &query);
            print(out, json, &api.get(&path)?, &workflow_page)
        }
        WorkflowCmd::List { limit, after } => {
            let query = [("limit", limit.map(|l| l.to_string())), ("after", after)];
            let path = with_query("/api/workflows", &query);
            print(out, json, &api.get(&path)?, &workflows_table)
        }
    }
}

pub(crate) fn order(
    api: &Api,
    command: OrderCmd,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match command {
        OrderCmd::Start {
            workflow,
            version,
            wait,
        } => {
            let mut body = json!({ "workflow": workflow });
            if let Some(v) = version {
                body["version"] = v.into();
            }
            let answer = api.post("/api/orders", &body)?;
            let id = answer["id"].as_u64().unwrap_or(0);
            if !wait {
                return print(out, json, &answer, &|out, _| writeln!(out, "{id}"));
            }
            let code = follow::wait_order(api, id, json, out)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        OrderCmd::Show { id } => print(
            out,
            json,
            &api.get(&format!("/api/orders/{id}"))?,
            &|out, v| write!(out, "{}", order_page(v)),
        ),
        OrderCmd::List {
            state,
            limit,
            after,
        } => {
            let query = [
                ("state", state),
                ("limit", limit.map(|l| l.to_string())),
                ("after", after.map(|a| a.to_string())),
            ];
            let path = with_query("/api/orders", &query);
            print(out, json, &api.get(&path)?, &orders_table)
        }
        OrderCmd::Cancel { id } => {
            let answer = api.post(&format!("/api/orders/{id}/cancel"), &json!({}))?;
            print(out, json, &answer, &|out, _| {
                writeln!(out, "order {id} cancelled")
            })
        }
    }
}

fn workflows_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(
        out,
        "{:<24} {:>7} {:>5}  DEFINED",
        "WORKFLOW", "VERSION", "STEPS"
    )?;
    for w in list(v) {
        writeln!(
            out,
            "{:<24} {:>7} {:>5}  {}",
            s(&w["name"]),
            s(&w["version"]),
            list(&w["steps"]).len(),
            at(&w["created_ms"])
        )?;
    }
    Ok(())
}

/// `GET /api/workflows/{name}`: the version, who defined it, one line per step.
fn workflow_page(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    let w = &v["workflow"];
    let versions: Vec<String> = list(&v["versions"]).iter().map(s).collect();
    writeln!(
        out,
        "workflow {}  version {}  (versions: {})",
        s(&w["name"]),
        s(&w["version"]),
        versions.join(" ")
    )?;
    for h in list(&v["history"]) {
        writeln!(
            out,
            "  {}  {} by {}",
            at(&h["at_ms"]),
            s(&h["action"]),
            s(&h["who"])
        )?;
    }
    writeln!(
        out,
        "{:>4} {:<16} {:<24} {:<10} {:>7}  COMMAND",
        "STEP", "NAME", "TARGET", "ON FAILURE", "RETRIES"
    )?;
    for (i, step) in list(&w["steps"]).iter().enumerate() {
        let argv: Vec<String> = list(&step["argv"]).iter().map(s).collect();
        writeln!(
            out,
            "{:>4} {:<16} {:<24} {:<10} {:>7}  {}",
            i + 1,
            s(&step["name"]),
            target(&step["target"]),
            s(&step["on_failure"]),
            s(&step["policy"]["retries"]),
            argv.join(" ")
        )?;
    }
    Ok(())
}

fn orders_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(
        out,
        "{:>6} {:<10} {:<24} {:>7}  {:<29}  REASON",
        "ID", "STATE", "WORKFLOW", "VERSION", "CREATED"
    )?;
    for o in list(v) {
        writeln!(
            out,
            "{:>6} {:<10} {:<24} {:>7}  {:<29}  {}",
            s(&o["id"]),
            s(&o["state"]),
            s(&o["workflow"]),
            s(&o["version"]),
            at(&o["created_ms"]),
            o["reason"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

pub(crate) fn target(t: &Value) -> String {
    format!("{} {}", s(&t["kind"]), s(&t["name"]))
}

/// One step of `GET /api/orders/{id}` on one line: number, name, target, status, task.
pub(crate) fn step_line(step: &Value) -> String {
    let number = step["index"].as_u64().map_or(0, |i| i + 1);
    let task = match step["task"].as_u64() {
        Some(t) => format!("  (task {t})"),
        None => String::new(),
    };
    let agent = match list(&step["attempts"]).last() {
        Some(a) => format!(" on {}", s(&a["agent_id"])),
        None => String::new(),
    };
    format!(
        "step {number} {}  [{}, {} on failure]: {}{agent}{task}",
        s(&step["name"]),
        target(&step["target"]),
        s(&step["on_failure"]),
        s(&step["status"]),
    )
}

/// `tetherctl order show ID`: the order, who started (or cancelled) it, and each step with
/// its attempts: agent, times as `tetherctl show` prints them, exit.
pub(crate) fn order_page(v: &Value) -> String {
    let mut out = String::new();
    let o = &v["order"];
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "order {}  {}  workflow {} version {}",
        s(&o["id"]),
        s(&o["state"]),
        s(&o["workflow"]),
        s(&o["version"])
    ));
    line(format!("  created  {}", at(&o["created_ms"])));
    if o["state"] != "running" {
        line(format!("  ended    {}", at(&o["updated_ms"])));
    }
    if let Some(reason) = o["reason"].as_str() {
        line(format!("  reason   {reason}"));
    }
    line("history".into());
    for h in list(&v["history"]) {
        line(format!(
            "  {}  {} by {}",
            at(&h["at_ms"]),
            s(&h["action"]),
            s(&h["who"])
        ));
    }
    for step in list(&v["steps"]) {
        line(step_line(&step));
        for a in list(&step["attempts"]) {
            let after = match a["after"].as_u64() {
                Some(p) => format!("  (handed over behind attempt {p})"),
                None => String::new(),
            };
            line(format!(
                "  attempt {} on {}: {}{after}",
                s(&a["id"]),
                s(&a["agent_id"]),
                s(&a["state"])
            ));
            if !a["started_ms"].is_null() {
                line(format!("    started  {}", at(&a["started_ms"])));
            }
            if !a["finished_ms"].is_null() {
                let cause = a["kill_cause"]
                    .as_str()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                line(format!(
                    "    finished {}  {}{cause}",
                    at(&a["finished_ms"]),
                    exit(&a["exit"])
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_page_shows_each_step_with_its_attempts() {
        let order = json!({
            "order": { "id": 3, "workflow": "deploy", "version": 2, "state": "failed",
                "reason": "step 2 (test) ended failed", "created_ms": 1000, "updated_ms": 9000 },
            "history": [{ "at_ms": 1000, "who": "ci", "action": "order started",
                "subject": "order/3" }],
            "steps": [
                { "index": 0, "name": "build", "target": { "kind": "agent", "name": "pi-1" },
                  "on_failure": "stop", "task": 12, "status": "succeeded", "outcome": null,
                  "attempts": [{ "id": 20, "agent_id": "pi-1", "state": "finished",
                      "started_ms": 2000, "finished_ms": 3000, "exit": { "Code": 0 },
                      "kill_cause": null, "after": null }] },
                { "index": 1, "name": "test", "target": { "kind": "agent", "name": "pi-1" },
                  "on_failure": "stop", "task": 13, "status": "failed", "outcome": null,
                  "attempts": [{ "id": 21, "agent_id": "pi-1", "state": "finished",
                      "started_ms": 3000, "finished_ms": 4000, "exit": { "Code": 3 },
                      "kill_cause": null, "after": 20 }] },
                { "index": 2, "name": "ship", "target": { "kind": "cluster", "name": "edge" },
                  "on_failure": "continue", "task": null, "status": "not_run",
                  "outcome": null, "attempts": [] },
            ]
        });
        let page = order_page(&order);
        for needle in [
            "order 3  failed  workflow deploy version 2",
            "reason   step 2 (test) ended failed",
            "order started by ci",
            "step 1 build  [agent pi-1, stop on failure]: succeeded on pi-1  (task 12)",
            "  attempt 21 on pi-1: finished  (handed over behind attempt 20)",
            "exit 3",
            "step 3 ship  [cluster edge, continue on failure]: not_run",
        ] {
            assert!(page.contains(needle), "{needle:?} not in:\n{page}");
        }
        let started = format!("    started  {}", crate::show::rfc3339(3000));
        assert!(page.contains(&started), "{page}");
    }
}
