//! `tetherctl workflow create FILE`: a workflow definition file read into the body of
//! `POST /api/workflows`. TOML for files named `*.toml` (top-level `name`, a `[[steps]]` table
//! per step, each with an optional `[steps.policy]` table), JSON otherwise. The master checks
//! the fields (and names the step at fault); here only the syntax is, with its line.

use std::path::Path;

use serde_json::Value;

use crate::client::Failure;

/// The request body the file holds.
pub(crate) fn read(path: &Path) -> Result<Value, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    parse(&text, toml).map_err(|e| Failure(format!("{}: {e}", path.display())))
}

fn parse(text: &str, toml: bool) -> Result<Value, String> {
    let value: Value = if toml {
        toml::from_str(text).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    if !value.is_object() {
        return Err("a workflow is a table (TOML) or an object (JSON)".into());
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
            parse(text, true).unwrap(),
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
        assert_eq!(parse(json, false).unwrap()["steps"][0]["agent"], "a");
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let err = parse("name = \"w\"\n[[steps]\n", true).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse("[1, 2]", false).is_err());
        assert!(parse("{", false).is_err());
    }
}
