//! What each command asks of the master and how it prints the answer: a table for people, or
//! with `--output json` the master's JSON as it is.

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::args::{AgentCmd, ClusterCmd, Cmd, Mode, Output, ProfileCmd, TokenCmd};
use crate::client::{Api, Failure};
use crate::follow;
use crate::provision::{self, AgentKeys, Request};
use crate::show;
use crate::table::{TASK_HEADER, list, task_line, text};
use crate::{schedules, workflows};

pub(crate) fn run(api: &Api, command: Cmd, output: Output) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    let json = output == Output::Json;
    let mut show_answer = |value: &Value, table: &Table<'_>| -> Result<(), Failure> {
        print(&mut out, json, value, table)
    };
    match command {
        Cmd::Status => show_answer(&api.get("/api/status")?, &status_table)?,
        Cmd::Agents {
            limit,
            after,
            presence,
            available,
        } => {
            let path = with_query(
                "/api/agents",
                &[
                    ("limit", limit.map(|l| l.to_string())),
                    ("after", after),
                    ("presence", presence),
                    ("available", available.map(|a| a.to_string())),
                ],
            );
            show_answer(&api.get(&path)?, &agents_table)?;
        }
        Cmd::Agent { command } => {
            let (id, verb) = match &command {
                AgentCmd::Disable { id } => (id, "disable"),
                AgentCmd::Enable { id } => (id, "enable"),
            };
            let answer = api.post(&format!("/api/agents/{id}/{verb}"), &json!({}))?;
            show_answer(&answer, &|out, v| {
                let now = if v["disabled"] == true {
                    "disabled"
                } else {
                    "enabled"
                };
                let was = if v["changed"] == true {
                    ""
                } else {
                    " (already)"
                };
                writeln!(out, "agent {id}: {now}{was}")
            })?;
        }
        Cmd::Clusters => show_answer(&api.get("/api/clusters")?, &clusters_table)?,
        Cmd::Profiles => show_answer(&api.get("/api/profiles")?, &profiles_table)?,
        Cmd::Security => show_answer(&api.get("/api/security")?, &security_table)?,
        Cmd::Keys => show_answer(&api.get("/api/keys")?, &|out, v| {
            for key in list(&v["master_keys"]) {
                writeln!(out, "{}", text(&key))?;
            }
            Ok(())
        })?,
        Cmd::Tokens { limit, after } => {
            let query = [("limit", limit.map(|l| l.to_string())), ("after", after)];
            show_answer(&api.get(&with_query("/api/tokens", &query))?, &tokens_table)?;
        }
        Cmd::Token {
            command: TokenCmd::Create { name, role },
        } => {
            let answer = api.post(
                "/api/tokens",
                &json!({ "name": name, "role": role.as_str() }),
            )?;
            show_answer(&answer, &|out, v| {
                writeln!(out, "{}", text(&v["token"]))?;
                eprintln!(
                    "token {} ({}): shown once, keep it in a 0600 file",
                    text(&v["name"]),
                    text(&v["role"])
                );
                Ok(())
            })?;
        }
        Cmd::Token {
            command: TokenCmd::Revoke { name },
        } => {
            let answer = api.delete(&format!("/api/tokens/{name}"))?;
            show_answer(&answer, &|out, _| writeln!(out, "token {name} revoked"))?;
        }
        Cmd::Cluster {
            command:
                ClusterCmd::Create {
                    name,
                    mode,
                    members,
                },
        } => {
            let mode = match mode {
                Mode::RoundRobin => "round-robin",
                Mode::FixedPriority => "fixed-priority",
            };
            let answer = api.post(
                "/api/clusters",
                &json!({ "name": name, "mode": mode, "members": members }),
            )?;
            show_answer(&answer, &|out, v| {
                for warning in list(&v["warnings"]) {
                    eprintln!("tetherctl: warning: {}", text(&warning));
                }
                writeln!(out, "cluster {name} ({mode}) defined")
            })?;
        }
        Cmd::Profile {
            command: ProfileCmd::Create { name, policy },
        } => {
            let answer = api.post(
                "/api/profiles",
                &json!({ "name": name, "policy": policy.to_json() }),
            )?;
            show_answer(&answer, &|out, _| writeln!(out, "profile {name} defined"))?;
        }
        Cmd::Submit(s) => {
            let mut body = s.task.to_json(&s.argv);
            if let Some(at) = s.start_at {
                body["start_at_ms"] = at.into();
            }
            let answer = api.post("/api/tasks", &body)?;
            let id = answer["id"].as_u64().unwrap_or(0);
            if s.wait {
                let code = follow::wait(api, id, &mut out)?;
                if code != 0 {
                    std::process::exit(code);
                }
            } else {
                show_answer(&answer, &|out, _| writeln!(out, "{id}"))?;
            }
        }
        Cmd::Tasks {
            state,
            limit,
            after,
        } => {
            let query = [
                ("state", state),
                ("limit", limit.map(|l| l.to_string())),
                ("after", after.map(|a| a.to_string())),
            ];
            let path = with_query("/api/tasks", &query);
            show_answer(&api.get(&path)?, &|out, v| {
                writeln!(out, "{TASK_HEADER}")?;
                for t in list(v) {
                    writeln!(out, "{}", task_line(&t))?;
                }
                Ok(())
            })?;
        }
        Cmd::Show { id, json: raw } => {
            let v = api.get(&format!("/api/tasks/{id}"))?;
            if json || raw {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let output = api.get(&format!("/api/tasks/{id}/output"))?;
                let agents = api.get("/api/agents")?;
                write!(
                    out,
                    "{}",
                    show::render(&v, &output, &agents, crate::args::now_ms())
                )?;
            }
        }
        Cmd::Logs { id, follow } => {
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&api.get(&format!("/api/tasks/{id}/output"))?)?
                )?;
            } else {
                follow::logs(api, id, follow, &mut out)?;
            }
        }
        Cmd::Kill { id } => {
            let answer = api.post(&format!("/api/tasks/{id}/kill"), &json!({}))?;
            show_answer(&answer, &|out, _| {
                writeln!(out, "kill of task {id} requested")
            })?;
        }
        Cmd::Watch => follow::watch(api, json, &mut out)?,
        Cmd::Workflow { command } => workflows::workflow(api, command, json, &mut out)?,
        Cmd::Order { command } => workflows::order(api, command, json, &mut out)?,
        Cmd::Schedule { command } => schedules::schedule(api, command, json, &mut out)?,
        Cmd::Provision {
            id,
            brokers,
            ca,
            prefix,
            credentials,
            out: dir,
            tar,
            rotate,
        } => {
            tether_core::topic::validate_id(&id)
                .map_err(|e| Failure(format!("agent id `{id}`: {e}")))?;
            // Bad brokers or a missing CA are told before the master hands out (or rotates) keys.
            provision::check_brokers(&brokers, ca.as_deref())
                .map_err(|e| Failure(e.to_string()))?;
            let keys = api.post(
                &format!("/api/agents/{id}/key"),
                &json!({ "rotate": rotate }),
            )?;
            let hex = |v: &Value| v.as_str().map(str::to_owned);
            let keys = AgentKeys {
                agent_key: hex(&keys["agent_key"])
                    .ok_or_else(|| Failure("the master returned no agent key".into()))?,
                master_keys: list(&keys["master_keys"]).iter().filter_map(hex).collect(),
            };
            let request = Request {
                id,
                brokers,
                ca,
                prefix,
                credentials,
                keys,
            };
            let written = provision::write_folder(&request, dir, tar)?;
            show_answer(&written, &|out, v| {
                for file in list(&v["files"]) {
                    writeln!(out, "wrote {}", text(&file))?;
                }
                if v["broker_user"].is_string() {
                    writeln!(
                        out,
                        "broker user {}: append broker/passwd-entry (hashed, as mosquitto_passwd writes) \
                         to the broker's password file (mosquitto's password_file or \
                         tether-master --broker-passwords)",
                        text(&v["broker_user"])
                    )?;
                }
                Ok(())
            })?;
        }
        Cmd::Decode { .. } | Cmd::Completions { .. } | Cmd::Man { .. } => {
            unreachable!("handled without the API")
        }
    }
    Ok(())
}

/// How an answer reads for people.
pub(crate) type Table<'a> = dyn Fn(&mut dyn Write, &Value) -> io::Result<()> + 'a;

/// Prints an answer: as JSON when asked (the master's answer as it is), else with `table`.
pub(crate) fn print(
    out: &mut dyn Write,
    json: bool,
    value: &Value,
    table: &Table<'_>,
) -> Result<(), Failure> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    } else {
        table(out, value)?;
    }
    Ok(())
}

fn yes(v: &Value) -> &'static str {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
}

fn status_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(out, "epoch      {}", text(&v["epoch"]))?;
    writeln!(
        out,
        "broker     {} (connected: {})",
        text(&v["mqtt"]),
        yes(&v["connected"])
    )?;
    writeln!(out, "api        {}", text(&v["http"]))?;
    writeln!(out, "prefix     {}", text(&v["prefix"]))?;
    writeln!(out, "heartbeat  {} ms", text(&v["heartbeat_period_ms"]))?;
    if let Some(stats) = v["stats"].as_object() {
        for (k, n) in stats {
            writeln!(out, "{:<10} {}", k.replace('_', " "), text(n))?;
        }
    }
    writeln!(
        out,
        "dropped    {} publishes",
        text(&v["dropped_publishes"])
    )
}

fn agents_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<9} {:<9} {:<8} {:<8} {:>9}  ATTEMPTS",
        "AGENT", "PRESENCE", "AVAILABLE", "DISABLED", "JOURNAL", "SILENT"
    )?;
    for a in list(v) {
        writeln!(
            out,
            "{:<20} {:<9} {:<9} {:<8} {:<8} {:>8.1}s  {}",
            text(&a["id"]),
            text(&a["presence"]),
            yes(&a["available"]),
            yes(&a["disabled"]),
            a["journal"].as_str().unwrap_or("-"),
            a["silent_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            a["attempts"]
        )?;
    }
    Ok(())
}

fn clusters_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(out, "{:<20} {:<15} MEMBERS", "CLUSTER", "MODE")?;
    for c in list(v) {
        let members: Vec<String> = list(&c["members"]).iter().map(text).collect();
        writeln!(
            out,
            "{:<20} {:<15} {}",
            text(&c["name"]),
            text(&c["mode"]),
            members.join(" ")
        )?;
    }
    Ok(())
}

fn profiles_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<9} {:>10} {:>10} {:>8}",
        "PROFILE", "POLICY", "PERIOD", "TIMEOUT", "RETRIES"
    )?;
    for p in list(v) {
        let policy = &p["policy"];
        writeln!(
            out,
            "{:<20} {:<9} {:>8}ms {:>8}ms {:>8}",
            text(&p["name"]),
            text(&policy["on_disconnect"]),
            text(&policy["heartbeat_period_ms"]),
            text(&policy["heartbeat_timeout_ms"]),
            text(&policy["retries"])
        )?;
    }
    Ok(())
}

fn security_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(
        out,
        "messages from unknown agents: {}",
        text(&v["unknown_agent"])
    )?;
    writeln!(out, "{:<20} {:<24} {:>8}", "AGENT", "REASON", "DROPPED")?;
    if let Some(agents) = v["agents"].as_object() {
        for (agent, counts) in agents {
            for (reason, n) in counts.as_object().into_iter().flatten() {
                writeln!(
                    out,
                    "{agent:<20} {:<24} {:>8}",
                    reason.replace('_', " "),
                    text(n)
                )?;
            }
        }
    }
    Ok(())
}

fn tokens_table(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<9} {:<29} {:<20} REVOKED",
        "TOKEN", "ROLE", "CREATED", "BY"
    )?;
    for t in list(v) {
        let time = |v: &Value| v.as_u64().map_or_else(|| "-".to_owned(), show::rfc3339);
        writeln!(
            out,
            "{:<24} {:<9} {:<29} {:<20} {}",
            text(&t["name"]),
            text(&t["role"]),
            time(&t["created_ms"]),
            text(&t["created_by"]),
            time(&t["revoked_ms"])
        )?;
    }
    Ok(())
}

/// `path?k=v&...` of the parameters that are set, each value percent-encoded.
pub(crate) fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", percent(v.as_deref()?))))
        .collect();
    if set.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", set.join("&"))
    }
}

/// Every byte but the URL's unreserved characters as `%XX`.
pub(crate) fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_carry_only_what_is_set_and_encode_it() {
        assert_eq!(with_query("/api/agents", &[("after", None)]), "/api/agents");
        assert_eq!(
            with_query(
                "/api/agents",
                &[("limit", Some("5".into())), ("after", Some("a&b c".into()))]
            ),
            "/api/agents?limit=5&after=a%26b%20c"
        );
    }
}
