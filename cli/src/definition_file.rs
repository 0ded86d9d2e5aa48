//! `tetherctl workflow create FILE` and `tetherctl schedule create FILE`: a definition file
//! read into the request body (`POST /api/workflows`, `POST /api/schedules`). TOML for files
//! named `*.toml`, JSON otherwise: a workflow has a top-level `name` and a `[[steps]]` table per
//! step, each with an optional `[steps.policy]` table; a schedule has its task's fields at the
//! top level with `[calendar]` and `[policy]` tables. The master checks the fields (and names
//! what is at fault); here only the syntax is, with its line.

use std::path::Path;

use serde_json::Value;

use crate::client::Failure;

/// The request body the file holds; `what` (`workflow`, `schedule`) names it in errors.
pub(crate) fn read(path: &Path, what: &str) -> Result<Value, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    parse(&text, toml, what).map_err(|e| Failure(format!("{}: {e}", path.display())))
}

fn parse(text: &str, toml: bool, what: &str) -> Result<Value, String> {
    let value: Value = if toml {
        toml::from_str(text).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    if !value.is_object() {
        return Err(format!("a {what} is a table (TOML) or an object (JSON)"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn toml_steps_and_their_policy_tables_become_the_request() {
        let text = r#"
name = "deploy"

[[steps]]
name = "fetch"
agent = "pi-1"
argv = ["/usr/bin/fetch", "--all"]
env = ["A=1"]
retry_delay_ms = 500

[steps.policy]
retries = 2
on_disconnect = "continue"

[[steps]]
cluster = "edge"
argv = ["/bin/true"]
on_failure = "continue"
"#;
        assert_eq!(
            parse(text, true, "workflow").unwrap(),
            json!({
                "name": "deploy",
                "steps": [
                    { "name": "fetch", "agent": "pi-1", "argv": ["/usr/bin/fetch", "--all"],
                      "env": ["A=1"], "retry_delay_ms": 500,
                      "policy": { "retries": 2, "on_disconnect": "continue" } },
                    { "cluster": "edge", "argv": ["/bin/true"], "on_failure": "continue" },
                ]
            })
        );
        let json = r#"{"name": "w", "steps": [{"agent": "a", "argv": ["x"]}]}"#;
        assert_eq!(
            parse(json, false, "workflow").unwrap()["steps"][0]["agent"],
            "a"
        );
    }

    #[test]
    fn a_schedule_file_has_its_calendar_and_policy_tables() {
        let text = r#"
name = "backup"
agent = "pi-1"
argv = ["/usr/local/bin/backup"]
missed = "once"

[calendar]
cron = "0 3 * * *"
time_zone = "Europe/Berlin"

[policy]
max_run_ms = 3600000
"#;
        assert_eq!(
            parse(text, true, "schedule").unwrap(),
            json!({
                "name": "backup", "agent": "pi-1", "argv": ["/usr/local/bin/backup"],
                "missed": "once",
                "calendar": { "cron": "0 3 * * *", "time_zone": "Europe/Berlin" },
                "policy": { "max_run_ms": 3600000 },
            })
        );
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let err = parse("name = \"w\"\n[[steps]\n", true, "workflow").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err = parse("[1, 2]", false, "schedule").unwrap_err();
        assert!(err.contains("a schedule is"), "{err}");
        assert!(parse("{", false, "workflow").is_err());
    }
}
