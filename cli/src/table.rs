//! Reading the master's JSON for tables: lists, text fields, one line per task.

use serde_json::Value;

pub(crate) fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

pub(crate) fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

pub(crate) const TASK_HEADER: &str = "    ID STATE        TARGET                 POLICY    COMMAND";

pub(crate) fn task_line(t: &Value) -> String {
    let argv: Vec<String> = list(&t["argv"]).iter().map(text).collect();
    format!(
        "{:>6} {:<12} {:<22} {:<9} {}",
        text(&t["id"]),
        text(&t["state"]),
        format!(
            "{} {}",
            text(&t["target"]["kind"]),
            text(&t["target"]["name"])
        ),
        text(&t["policy"]["on_disconnect"]),
        argv.join(" ")
    )
}
