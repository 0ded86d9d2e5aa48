//! Following a task, an order or the fleet over the master's event streams: `logs [-f]`,
//! `watch`, `submit --wait`, `order start --wait`. Output is written as the bytes the task wrote (stdout to stdout, stderr to
//! stderr); a stream that breaks is resumed from the last byte or event received.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::mpsc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use crate::client::{Api, Failure};
use crate::sse::{Next, Subscription};
use crate::table::{list, task_line, text};

const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// Prints the task's stored output (its latest attempt), or follows it until the task ends.
pub(crate) fn logs(api: &Api, id: u64, follow: bool, out: &mut impl Write) -> Result<(), Failure> {
    if follow {
        follow_output(api, id, out)?;
        return Ok(());
    }
    for stream in STREAMS {
        let mut since = 0u64;
        loop {
            let path = format!("/api/tasks/{id}/output?format=raw&stream={stream}&since={since}");
            let (bytes, headers) = api.bytes(&path)?;
            if stream == "stderr" {
                std::io::stderr().write_all(&bytes)?;
            } else {
                out.write_all(&bytes)?;
            }
            let next = headers
                .get("tether-output-next")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .ok_or_else(|| Failure("the master's answer has no Tether-Output-Next".into()))?;
            // A full answer may be followed by more; an empty one is the end.
            if bytes.is_empty() || next <= since {
                break;
            }
            since = next;
        }
    }
    out.flush()?;
    Ok(())
}

/// What the stream readers hand to the writer.
enum Piece {
    Bytes(&'static str, Vec<u8>),
    /// A retry started a new attempt.
    Attempt(u64),
    /// The task ended: `{"state", "outcome"}`.
    End(Value),
    Failed(Failure),
}

/// Follows both streams until the task ends; the `end` event's data.
fn follow_output(api: &Api, id: u64, out: &mut impl Write) -> Result<Value, Failure> {
    let (tx, rx) = mpsc::channel();
    for stream in STREAMS {
        // Opened here, so an unknown task or a refused token is the command's error at once.
        let path = format!("/api/tasks/{id}/output?follow=1&stream={stream}");
        let sub = Subscription::open(api.clone(), &path, None)?;
        let tx = tx.clone();
        std::thread::spawn(move || read_output(sub, stream, &tx));
    }
    drop(tx);
    let mut end = None;
    let mut attempt = None;
    for piece in rx {
        match piece {
            Piece::Bytes("stderr", bytes) => {
                out.flush()?;
                std::io::stderr().write_all(&bytes)?;
            }
            Piece::Bytes(_, bytes) => {
                out.write_all(&bytes)?;
                out.flush()?;
            }
            Piece::Attempt(n) if attempt.is_some_and(|a| a >= n) => {}
            Piece::Attempt(n) => {
                if attempt.is_some() {
                    eprintln!("tetherctl: task {id}: attempt {n} started");
                }
                attempt = Some(n);
            }
            Piece::End(v) => end = end.or(Some(v)),
            Piece::Failed(e) => return Err(e),
        }
    }
    end.ok_or_else(|| {
        Failure(format!(
            "the output of task {id} ended without an end event"
        ))
    })
}

/// Relays one followed stream until its `end` event; runs on a thread of its own.
fn read_output(mut sub: Subscription, stream: &'static str, tx: &mpsc::Sender<Piece>) {
    let mut attempt: Option<u64> = None;
    loop {
        let event = match sub.next() {
            Ok(Next::Event(event)) => event,
            Ok(Next::Gone(_)) => continue,
            Err(e) => {
                let _ = tx.send(Piece::Failed(e));
                return;
            }
        };
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        let piece = match event.kind.as_str() {
            "output" => {
                let this = data["attempt"].as_u64();
                if attempt.is_some() && this != attempt && data["offset"].as_u64() != Some(0) {
                    // Resumed into a newer attempt at an old offset: read it from its start.
                    sub.resume_from(Some("0".into()));
                    attempt = this;
                    continue;
                }
                attempt = this;
                match data["data"].as_str().map(|d| BASE64.decode(d)) {
                    Some(Ok(bytes)) => Piece::Bytes(stream, bytes),
                    _ => Piece::Failed(Failure("an output event is malformed".into())),
                }
            }
            "attempt" => {
                attempt = data["attempt"].as_u64();
                // Its offsets start at 0: a reconnect resumes from there.
                sub.since = Some("0".into());
                match attempt {
                    Some(n) => Piece::Attempt(n),
                    None => continue,
                }
            }
            "end" => Piece::End(data),
            "error" => Piece::Failed(Failure(text(&data["error"]))),
            _ => continue,
        };
        let last = matches!(piece, Piece::End(_) | Piece::Failed(_));
        if tx.send(piece).is_err() || last {
            return;
        }
    }
}

/// Prints agents' and tasks' changes as they happen: the current state first, then each
/// change from `/api/events` (a lagged stream prints the state again).
pub(crate) fn watch(api: &Api, json: bool, out: &mut impl Write) -> Result<(), Failure> {
    let mut seen = Seen::default();
    // Subscribed before the first read, so no change falls between the two.
    let mut sub = Subscription::open(api.clone(), "/api/events", None)?;
    seen.snapshot(api, json, out)?;
    loop {
        let event = match sub.next()? {
            Next::Event(event) => event,
            Next::Gone(why) => {
                eprintln!("tetherctl: {why}; reconnecting");
                continue;
            }
        };
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        match event.kind.as_str() {
            "lagged" => seen.snapshot(api, json, out)?,
            "task" => {
                let id = data["task"].as_u64().unwrap_or(0);
                seen.task(id, &text(&data["state"]), None, json, out)?;
            }
            "attempt_started" if !json => writeln!(
                out,
                "task {}: attempt {} on {}",
                text(&data["task"]),
                text(&data["attempt"]),
                text(&data["agent"])
            )?,
            "agent" => seen.agent(&data, json, out)?,
            _ if json => writeln!(out, "{}", serde_json::json!({ event.kind: data }))?,
            _ => {}
        }
        out.flush()?;
    }
}

/// What was printed last per agent and task, so only changes print.
#[derive(Default)]
struct Seen {
    agents: BTreeMap<String, String>,
    tasks: BTreeMap<u64, String>,
}

impl Seen {
    fn snapshot(&mut self, api: &Api, json: bool, out: &mut impl Write) -> Result<(), Failure> {
        for a in list(&api.get("/api/agents")?) {
            self.agent(&a, json, out)?;
        }
        for t in list(&api.get("/api/tasks")?) {
            let id = t["id"].as_u64().unwrap_or(0);
            self.task(id, &text(&t["state"]), Some(&t), json, out)?;
        }
        out.flush()?;
        Ok(())
    }

    /// An agent row (`id`, `presence`, `available`) or an `agent` event (`agent`, `presence`).
    fn agent(&mut self, a: &Value, json: bool, out: &mut impl Write) -> Result<(), Failure> {
        let id = text(a.get("id").unwrap_or(&a["agent"]));
        let presence = text(&a["presence"]);
        if self.agents.get(&id) == Some(&presence) {
            return Ok(());
        }
        if json {
            writeln!(out, "{}", serde_json::json!({ "agent": a }))?;
        } else {
            let avail = match a["available"].as_bool() {
                Some(true) => " (available)",
                Some(false) => " (unavailable)",
                None => "",
            };
            writeln!(out, "agent {id}: {presence}{avail}")?;
        }
        self.agents.insert(id, presence);
        Ok(())
    }

    fn task(
        &mut self,
        id: u64,
        state: &str,
        row: Option<&Value>,
        json: bool,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        if self.tasks.get(&id).map(String::as_str) == Some(state) {
            return Ok(());
        }
        match (json, row) {
            (true, Some(t)) => writeln!(out, "{}", serde_json::json!({ "task": t }))?,
            (true, None) => writeln!(
                out,
                "{}",
                serde_json::json!({ "task": { "id": id, "state": state } })
            )?,
            (false, Some(t)) => writeln!(out, "task {}", task_line(t).trim_start())?,
            (false, None) => writeln!(out, "task {id}: {state}")?,
        }
        self.tasks.insert(id, state.to_owned());
        Ok(())
    }
}

/// Follows the task's output until it ends; its exit code (0 when it succeeded), or a line
/// on stderr and a non-zero code when it did not run to an exit.
pub(crate) fn wait(api: &Api, id: u64, out: &mut impl Write) -> Result<i32, Failure> {
    let end = follow_output(api, id, out)?;
    out.flush()?;
    Ok(exit_code(id, &text(&end["state"]), &end["outcome"]))
}

/// The code `submit --wait` exits with for a task that ended in `state` with `outcome`.
fn exit_code(id: u64, state: &str, outcome: &Value) -> i32 {
    match (state, outcome["kind"].as_str()) {
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
    }
}

/// Follows an order until it ends: its answer is read again whenever an event may concern it
/// (its own, one of its tasks' or attempts', or a new task while a step waits for one; a
/// stream that lagged or broke), so a quiet stream costs nothing and a missed event at most
/// the stream's silence limit. Prints each step when it changes (with `json`, the ended
/// order's answer); the code `order start --wait` exits with: 0 when it succeeded, else
/// that of its failed step's task as `submit --wait` has it (1 without one), 125 when
/// cancelled.
pub(crate) fn wait_order(
    api: &Api,
    id: u64,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    // Subscribed before the first read, so no change falls between the two.
    let mut sub = Subscription::open(api.clone(), "/api/events", None)?;
    let mut printed: Vec<String> = Vec::new();
    loop {
        let order = api.get(&format!("/api/orders/{id}"))?;
        let steps = list(&order["steps"]);
        if !json {
            for (i, step) in steps.iter().enumerate() {
                let line = crate::workflows::step_line(step);
                if printed.get(i) != Some(&line) {
                    writeln!(out, "{line}")?;
                    printed.resize(printed.len().max(i + 1), String::new());
                    printed[i] = line;
                }
            }
            out.flush()?;
        }
        let state = text(&order["order"]["state"]);
        if state != "running" {
            return order_ended(id, &state, &order, json, out);
        }
        let watched = Watched::of(&steps);
        loop {
            match sub.next()? {
                Next::Event(event) if watched.concerns(id, &event) => break,
                Next::Event(_) => {}
                Next::Gone(_) => break,
            }
        }
    }
}

/// What of an order's events call for reading it again.
struct Watched {
    tasks: BTreeSet<u64>,
    attempts: BTreeSet<u64>,
    /// A step has no task yet: a new task may be its.
    waiting: bool,
}

impl Watched {
    fn of(steps: &[Value]) -> Self {
        Self {
            tasks: steps.iter().filter_map(|s| s["task"].as_u64()).collect(),
            attempts: steps
                .iter()
                .flat_map(|s| list(&s["attempts"]))
                .filter_map(|a| a["id"].as_u64())
                .collect(),
            waiting: steps.iter().any(|s| s["task"].is_null()),
        }
    }

    fn concerns(&self, order: u64, event: &crate::sse::Event) -> bool {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        let task = data["task"].as_u64();
        match event.kind.as_str() {
            "order" => data["order"].as_u64() == Some(order),
            "lagged" => true,
            "task" => task.is_some_and(|t| self.tasks.contains(&t) || self.waiting),
            "attempt_started" => task.is_some_and(|t| self.tasks.contains(&t)),
            "attempt" => {
                task.is_some_and(|t| self.tasks.contains(&t))
                    || data["attempt"]
                        .as_u64()
                        .is_some_and(|a| self.attempts.contains(&a))
            }
            _ => false,
        }
    }
}

/// The ended order told (a line on stderr unless it succeeded) and its exit code.
fn order_ended(
    id: u64,
    state: &str,
    order: &Value,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(order)?)?;
    }
    out.flush()?;
    let reason = order["order"]["reason"].as_str().unwrap_or("");
    if state == "succeeded" {
        if !json {
            writeln!(out, "order {id} succeeded")?;
        }
        return Ok(0);
    }
    eprintln!("tetherctl: order {id} {state}: {reason}");
    if state == "cancelled" {
        return Ok(125);
    }
    // The step that stopped it: the first `stop` step whose task ended unsuccessfully (the
    // steps after it were cancelled because the order ended, which says nothing of them).
    let failed = list(&order["steps"]).into_iter().find(|s| {
        s["on_failure"] == "stop"
            && s["outcome"]["kind"] != "order_ended"
            && matches!(
                s["status"].as_str(),
                Some("failed" | "killed" | "lost" | "cancelled")
            )
    });
    Ok(match failed {
        Some(step) => exit_code(
            step["task"].as_u64().unwrap_or(0),
            &text(&step["status"]),
            &step["outcome"],
        ),
        None => 1,
    })
}
