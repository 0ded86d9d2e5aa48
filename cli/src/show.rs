//! `tetherctl show ID` for people: the task, who did what, its attempts as a timeline, and
//! for an attempt still out, what will happen when if contact does not return.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;

/// The master's allowance on top of a task's heartbeat timeout before it declares an attempt
/// lost (the master's default).
const DELAY_ALLOWANCE_MS: u64 = 2_000;

/// Unix milliseconds as RFC 3339 in the local time zone (`TZ`, else /etc/localtime), to the
/// millisecond, with its offset.
pub(crate) fn rfc3339(ms: u64) -> String {
    static ZONE: std::sync::OnceLock<TimeZone> = std::sync::OnceLock::new();
    time_in(ms, ZONE.get_or_init(TimeZone::system))
}

fn time_in(ms: u64, zone: &TimeZone) -> String {
    match i64::try_from(ms).map(Timestamp::from_millisecond) {
        Ok(Ok(t)) => t
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
        _ => format!("{ms} ms after 1970"),
    }
}

pub(crate) fn duration(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 && ms > 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 && ms > 0 => format!("{} min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// A JSON value as text: strings as they are, `null` as `-`.
pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Unix milliseconds as [`rfc3339`], `-` when absent.
pub(crate) fn at(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), rfc3339)
}

/// The whole page. `task` is `GET /api/tasks/ID`, `output` `GET /api/tasks/ID/output`,
/// `agents` `GET /api/agents`; `now_ms` is the wall clock.
pub(crate) fn render(task: &Value, output: &Value, agents: &Value, now_ms: u64) -> String {
    let mut out = String::new();
    let t = &task["task"];
    let p = &t["policy"];
    let target = format!("{} {}", s(&t["target"]["kind"]), s(&t["target"]["name"]));
    let _ = writeln!(out, "task {}  {}  on {target}", s(&t["id"]), s(&t["state"]));
    let argv: Vec<String> = t["argv"].as_array().into_iter().flatten().map(s).collect();
    let _ = writeln!(out, "  argv     {}", argv.join(" "));
    if let Some(cwd) = t["cwd"].as_str().filter(|c| !c.is_empty()) {
        let _ = writeln!(out, "  cwd      {cwd}");
    }
    let _ = writeln!(out, "  policy   {}", policy(p));
    if let Some(start) = t["start_at_ms"].as_u64() {
        let _ = writeln!(out, "  starts   {}", rfc3339(start));
    }
    if !t["outcome"].is_null() {
        let _ = writeln!(out, "  outcome  {}", outcome(&t["outcome"]));
    }
    let _ = writeln!(out, "history");
    for h in task["history"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {}  {} by {}",
            at(&h["at_ms"]),
            s(&h["action"]),
            s(&h["who"])
        );
    }
    for a in task["attempts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "attempt {} on {}: {}",
            s(&a["id"]),
            s(&a["agent_id"]),
            s(&a["state"])
        );
        let _ = writeln!(out, "  created  {}", at(&a["created_ms"]));
        if !a["started_ms"].is_null() {
            let _ = writeln!(
                out,
                "  started  {}  (pid {})",
                at(&a["started_ms"]),
                s(&a["pid"])
            );
        }
        if !a["finished_ms"].is_null() {
            let exit = exit(&a["exit"]);
            let _ = writeln!(out, "  finished {}  {exit}", at(&a["finished_ms"]));
        }
        for e in task["events"].as_array().into_iter().flatten() {
            if e["attempt"] == a["id"] {
                let _ = writeln!(
                    out,
                    "  heard    {}  {}",
                    at(&e["received_ms"]),
                    s(&e["kind"])
                );
            }
        }
        if matches!(a["state"].as_str(), Some("running" | "accepted" | "sent")) {
            predict(&mut out, p, agent(agents, &a["agent_id"]), now_ms);
        }
    }
    let chunks = output["chunks"].as_array().cloned().unwrap_or_default();
    if !chunks.is_empty() {
        let _ = writeln!(out, "output");
        for c in chunks {
            let text = s(&c["text"]);
            for line in text.lines() {
                let stream = if c["stream"] == "stderr" { "!" } else { " " };
                let _ = writeln!(out, " {stream} {line}");
            }
        }
    }
    out
}

/// A task policy on one line.
pub(crate) fn policy(p: &Value) -> String {
    format!(
        "{} on disconnect, heartbeat {} (timeout {}), grace {}, retries {}",
        s(&p["on_disconnect"]),
        duration(p["heartbeat_period_ms"].as_u64().unwrap_or(0)),
        duration(p["heartbeat_timeout_ms"].as_u64().unwrap_or(0)),
        duration(p["grace_ms"].as_u64().unwrap_or(0)),
        s(&p["retries"]),
    )
}

fn agent<'a>(agents: &'a Value, id: &Value) -> Option<&'a Value> {
    agents.as_array()?.iter().find(|a| a["id"] == *id)
}

/// What happens to an attempt still out if its agent stays silent, from the task's policy and
/// the agent's last contact.
fn predict(out: &mut String, policy: &Value, agent: Option<&Value>, now_ms: u64) {
    let Some(agent) = agent else { return };
    let silent = agent["silent_ms"].as_u64().unwrap_or(0);
    let heard = now_ms.saturating_sub(silent);
    let timeout = policy["heartbeat_timeout_ms"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "  last contact {}  ({} ago)",
        rfc3339(heard),
        duration(silent / 1000 * 1000)
    );
    if policy["on_disconnect"] == "kill" {
        let _ = writeln!(
            out,
            "  if contact does not return: its agent kills it at {}, the master declares it lost at {}",
            rfc3339(heard + timeout),
            rfc3339(heard + timeout + DELAY_ALLOWANCE_MS)
        );
    } else if let Some(after) = policy["lost_after_ms"].as_u64() {
        let _ = writeln!(
            out,
            "  if contact does not return: it runs on; the master starts it elsewhere at {}",
            rfc3339(heard + after)
        );
    } else {
        let _ = writeln!(
            out,
            "  if contact does not return: it runs on, its result waits in the agent's journal"
        );
    }
}

/// An attempt's exit for people.
pub(crate) fn exit(v: &Value) -> String {
    if v == "Skipped" {
        "skipped (the step before did not end as this one needs)".into()
    } else if let Some(code) = v.get("Code") {
        format!("exit {}", s(code))
    } else if let Some(sig) = v.get("Signal") {
        format!("killed by signal {}", s(sig))
    } else if let Some(errno) = v.get("SpawnFailed") {
        format!("could not start (errno {})", s(errno))
    } else {
        s(v)
    }
}

/// A task's outcome for people.
pub(crate) fn outcome(v: &Value) -> String {
    match v["kind"].as_str() {
        Some("exited") => {
            let cause = v["cause"]
                .as_str()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            format!("attempt {}: {}{cause}", s(&v["attempt"]), exit(&v["exit"]))
        }
        Some("agent_lost") => format!("attempt {}: its agent was lost", s(&v["attempt"])),
        Some("rejected") => format!("attempt {} refused: {}", s(&v["attempt"]), s(&v["reason"])),
        Some(kind) => kind.replace('_', " "),
        None => s(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_are_rfc3339_with_the_zones_offset() {
        let utc = TimeZone::UTC;
        assert_eq!(time_in(0, &utc), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(
            time_in(951_782_400_123, &utc),
            "2000-02-29T00:00:00.123+00:00"
        );
        let plus_one = TimeZone::fixed(jiff::tz::offset(1));
        assert_eq!(
            time_in(1_796_169_161_091, &plus_one),
            "2026-12-02T00:52:41.091+01:00"
        );
        assert_eq!(
            time_in(u64::MAX, &utc),
            format!("{} ms after 1970", u64::MAX)
        );
    }

    #[test]
    fn a_running_kill_task_shows_its_deadlines_and_output_as_text() {
        let task = json!({
            "task": { "id": 7, "state": "running", "target": {"kind": "agent", "name": "pi-1"},
                "argv": ["/bin/echo", "hi"], "cwd": "", "start_at_ms": null, "outcome": null,
                "policy": { "on_disconnect": "kill", "heartbeat_period_ms": 10000,
                    "heartbeat_timeout_ms": 60000, "grace_ms": 5000, "retries": 0 } },
            "history": [{ "at_ms": 1000, "who": "ci", "action": "submit", "subject": "task/7" }],
            "attempts": [{ "id": 3, "agent_id": "pi-1", "state": "running", "created_ms": 1000,
                "started_ms": 2000, "pid": 42, "finished_ms": null, "exit": null }],
            "events": [],
        });
        let output = json!({ "chunks": [{ "stream": "stdout", "text": "hé\n" }] });
        let agents = json!([{ "id": "pi-1", "silent_ms": 4000 }]);
        let page = render(&task, &output, &agents, 10_000);
        assert!(page.contains("task 7  running  on agent pi-1"), "{page}");
        assert!(page.contains("submit by ci"), "{page}");
        let kills = format!("kills it at {}", rfc3339(66_000));
        assert!(page.contains(&kills), "{page}");
        let lost = format!("lost at {}", rfc3339(68_000));
        assert!(page.contains(&lost), "{page}");
        assert!(page.contains("   hé"), "{page}");
    }
}
