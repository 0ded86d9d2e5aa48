//! `tetherctl schedule ...`: what each asks of the master and how the answer reads for people
//! (a table, a schedule's page: calendar, next occurrences per agent, hand-overs, latest
//! occurrences), or with `--output json` the master's JSON as it is.

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::args::ScheduleCmd;
use crate::client::{Api, Failure};
use crate::commands::{percent, print, with_query};
use crate::definition_file;
use crate::show::{at, duration, outcome, policy, s};
use crate::table::list;
use crate::workflows::target;

pub(crate) fn schedule(
    api: &Api,
    command: ScheduleCmd,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match command {
        ScheduleCmd::Create(create) => {
            let body = match create.to_json() {
                Some(body) => body,
                None => definition_file::read(create.file_or_name.as_ref(), "schedule")?,
            };
            let answer = api.post("/api/schedules", &body)?;
            print(out, json, &answer, &|out, v| {
                writeln!(
                    out,
                    "schedule {} version {} defined{}",
                    s(&v["name"]),
                    s(&v["version"]),
                    if v["paused"] == true { " (paused)" } else { "" }
                )?;
                if let Some(first) = list(&v["next"]).first() {
                    writeln!(out, "next at {}", at(&first["at_ms"]))?;
                }
                Ok(())
            })
        }
        ScheduleCmd::Show { name, next, recent } => {
            let query = [
                ("next", Some(next.to_string())),
                ("recent", Some(recent.to_string())),
            ];
            let path = with_query(&format!("/api/schedules/{}", percent(&name)), &query);
            print(out, json, &api.get(&path)?, &|out, v| {
                write!(out, "{}", schedule_page(v))
            })
        }
        ScheduleCmd::List { limit, after } => {
            let query = [
                ("limit", limit.map(|l| l.to_string())),
                ("after", after.map(|a| a.to_string())),
            ];
            let path = with_query("/api/schedules", &query);
            print(out, json, &api.get(&path)?, &schedules_table)
        }
        ScheduleCmd::Pause { name } => switch(api, &name, "pause", json, out),
        ScheduleCmd::Resume { name } => switch(api, &name, "resume", json, out),
        ScheduleCmd::Delete { name } => {
            let answer = api.delete(&format!("/api/schedules/{}", percent(&name)))?;
            print(out, json, &answer, &|out, _| {
                writeln!(out, "schedule {name} deleted")
            })
        }
    }
}

/// `pause` or `resume`.
fn switch(
    api: &Api,
    name: &str,
    verb: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let path = format!("/api/schedules/{}/{verb}", percent(name));
    let answer = api.post(&path, &json!({}))?;
    print(out, json, &answer, &|out, v| {
        let now = if v["paused"] == true {
            "paused"
        } else {
            "active"
        };
        let was = if v["changed"] == true {
            ""
        } else {
            " (already)"
        };
        writeln!(out, "schedule {name}: {now}{was}")
    })
}

fn state(schedule: &Value) -> &'static str {
    if schedule["paused"] == true {
        "paused"
    } else {
        "active"
    }
}

fn schedules_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(
        out,
        "{:>6} {:<24} {:>7} {:<7} {:<24} CALENDAR",
        "ID", "SCHEDULE", "VERSION", "STATE", "TARGET"
    )?;
    for sc in list(v) {
        writeln!(
            out,
            "{:>6} {:<24} {:>7} {:<7} {:<24} {}",
            s(&sc["id"]),
            s(&sc["name"]),
            s(&sc["version"]),
            state(&sc),
            target(&sc["task"]["target"]),
            calendar(&sc["calendar"])
        )?;
    }
    Ok(())
}

/// A calendar for people: `cron "0 3 * * *" in Europe/Berlin`, `every 15 min from ...`,
/// `at ...`.
fn calendar(c: &Value) -> String {
    if let Some(cron) = c["cron"].as_str() {
        let zone = c["time_zone"].as_str().unwrap_or("UTC");
        format!("cron \"{cron}\" in {zone}")
    } else if let Some(every) = c["every_ms"].as_u64() {
        format!("every {} from {}", duration(every), at(&c["start_ms"]))
    } else {
        let dates: Vec<String> = list(&c["at_ms"]).iter().map(at).collect();
        format!("at {}", dates.join(", "))
    }
}

/// `tetherctl schedule show NAME`: the schedule, who changed it, its next occurrences per
/// agent, the hand-overs and the latest occurrences with the version each ran under; times as
/// `tetherctl show` prints them.
pub(crate) fn schedule_page(v: &Value) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let sc = &v["schedule"];
    let task = &sc["task"];
    line(format!(
        "schedule {}  version {}  {}  (id {})",
        s(&sc["name"]),
        s(&sc["version"]),
        state(sc),
        s(&sc["id"])
    ));
    line(format!("  calendar {}", calendar(&sc["calendar"])));
    let argv: Vec<String> = list(&task["argv"]).iter().map(s).collect();
    line(format!(
        "  runs     {}: {}",
        target(&task["target"]),
        argv.join(" ")
    ));
    line(format!("  policy   {}", policy(&task["policy"])));
    line(format!(
        "  missed   {} (an occurrence not started within {} of its time)",
        s(&sc["missed"]),
        duration(sc["late_ms"].as_u64().unwrap_or(0))
    ));
    line(format!("  created  {}", at(&sc["created_ms"])));
    line(format!("  updated  {}", at(&sc["updated_ms"])));
    line("history".into());
    for h in list(&v["history"]) {
        line(format!(
            "  {}  {} by {}",
            at(&h["at_ms"]),
            s(&h["action"]),
            s(&h["who"])
        ));
    }
    let next = list(&v["next"]);
    if sc["paused"] == true {
        line("next: none while paused".into());
    } else if next.is_empty() {
        line("next: none".into());
    }
    // Per agent: a schedule on an agent runs there; a cluster's member is picked later.
    let mut agents: Vec<Value> = next.iter().map(|n| n["agent"].clone()).collect();
    agents.dedup();
    for agent in agents {
        line(match agent.as_str() {
            Some(a) => format!("next on agent {a}"),
            None => format!(
                "next on {} (the master picks a member as each starts)",
                target(&task["target"])
            ),
        });
        for n in next.iter().filter(|n| n["agent"] == agent) {
            let held = if n["held"] == true {
                "  held by the agent"
            } else {
                ""
            };
            line(format!("  {}{held}", at(&n["at_ms"])));
        }
    }
    let handovers = list(&v["handovers"]);
    if !handovers.is_empty() {
        line("hand-overs".into());
    }
    for h in handovers {
        line(format!(
            "  task {} to {}  version {}  {}  {} occurrence(s) {} .. {}",
            s(&h["task"]),
            s(&h["agent"]),
            s(&h["version"]),
            s(&h["state"]),
            s(&h["occurrences"]),
            at(&h["first_ms"]),
            at(&h["last_ms"])
        ));
    }
    let occurrences = list(&v["occurrences"]);
    if !occurrences.is_empty() {
        line("occurrences".into());
    }
    for o in occurrences {
        let agent = o["agent"]
            .as_str()
            .map(|a| format!(" on {a}"))
            .unwrap_or_default();
        let how = if o["outcome"].is_null() {
            String::new()
        } else {
            format!("  {}", outcome(&o["outcome"]))
        };
        line(format!(
            "  {}  task {}  version {}  {}{agent}{how}",
            at(&o["at_ms"]),
            s(&o["task"]),
            s(&o["version"]),
            s(&o["state"])
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::show::rfc3339;

    #[test]
    fn a_schedule_page_shows_next_occurrences_hand_overs_and_versions() {
        let page = schedule_page(&json!({
            "schedule": { "id": 3, "name": "backup", "version": 2, "paused": false,
                "calendar": { "cron": "0 3 * * *", "time_zone": "Europe/Berlin" },
                "task": { "target": { "kind": "agent", "name": "pi-1" },
                    "argv": ["/usr/local/bin/backup", "--all"],
                    "policy": { "on_disconnect": "continue", "heartbeat_period_ms": 10000,
                        "heartbeat_timeout_ms": 60000, "grace_ms": 5000, "retries": 0 } },
                "missed": "once", "late_ms": 60000, "created_ms": 1000, "updated_ms": 2000 },
            "next": [{ "at_ms": 10000, "agent": "pi-1", "held": true },
                     { "at_ms": 20000, "agent": "pi-1", "held": false }],
            "handovers": [{ "task": 40, "agent": "pi-1", "version": 2, "state": "held",
                "first_ms": 10000, "last_ms": 90000, "occurrences": 7, "created_ms": 2000 }],
            "occurrences": [{ "task": 12, "version": 1, "at_ms": 5000, "state": "succeeded",
                "agent": "pi-1", "started_ms": 5001, "finished_ms": 5002,
                "outcome": { "kind": "exited", "attempt": 12, "exit": { "Code": 0 },
                    "cause": null } }],
            "history": [{ "at_ms": 1000, "who": "ci", "action": "schedule defined (version 1)",
                "subject": "schedule/backup" }],
        }));
        for needle in [
            "schedule backup  version 2  active  (id 3)".to_owned(),
            "calendar cron \"0 3 * * *\" in Europe/Berlin".into(),
            "runs     agent pi-1: /usr/local/bin/backup --all".into(),
            "missed   once (an occurrence not started within 1 min of its time)".into(),
            "schedule defined (version 1) by ci".into(),
            "next on agent pi-1".into(),
            format!(
                "  {}  held by the agent\n  {}\n",
                rfc3339(10000),
                rfc3339(20000)
            ),
            "task 40 to pi-1  version 2  held  7 occurrence(s)".into(),
            format!(
                "  {}  task 12  version 1  succeeded on pi-1  attempt 12: exit 0",
                rfc3339(5000)
            ),
        ] {
            assert!(page.contains(&needle), "{needle:?} not in:\n{page}");
        }
    }

    #[test]
    fn a_cluster_schedule_names_no_agent_and_a_paused_one_no_next() {
        let cluster = json!({
            "schedule": { "paused": false, "calendar": { "every_ms": 900000, "start_ms": 0 },
                "task": { "target": { "kind": "cluster", "name": "edge" } } },
            "next": [{ "at_ms": 900000, "agent": null, "held": false }],
        });
        let page = schedule_page(&cluster);
        assert!(page.contains("every 15 min from"), "{page}");
        assert!(
            page.contains("next on cluster edge (the master picks a member"),
            "{page}"
        );
        let paused = json!({ "schedule": { "paused": true, "calendar": { "at_ms": [1000] } },
            "next": [] });
        let page = schedule_page(&paused);
        assert!(page.contains("paused") && page.contains("next: none while paused"));
        assert!(page.contains(&format!("at {}", rfc3339(1000))), "{page}");
    }
}
