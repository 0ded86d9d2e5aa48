//! Workflows and orders on the real master: a workflow defined, an order started, read and
//! waited for (bounded) until it ends, through [`MasterProcess`]'s HTTP API; and [`Markers`],
//! the lines the tests' steps append to a file so a test sees what ran, in which order, and
//! when, even while the master is frozen.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::WAIT;
use super::master_proc::MasterProcess;

impl MasterProcess {
    /// `POST /api/workflows`: the next version of workflow `name` (each step a
    /// [`super::fleet::task`] body, with `on_failure`, `retry_delay_ms`, `name` as needed);
    /// its answer (`{name, version, steps}`).
    pub fn define_workflow(&self, name: &str, steps: &[Value]) -> Value {
        self.post("/api/workflows", &json!({ "name": name, "steps": steps }))
    }

    /// `POST /api/orders`: an order of `workflow`'s latest version; its id.
    pub fn start_order(&self, workflow: &str) -> u64 {
        let answer = self.post("/api/orders", &json!({ "workflow": workflow }));
        answer["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("order start answered {answer}"))
    }

    /// `GET /api/orders/ID`: `{order, steps, history}`.
    pub fn order(&self, id: u64) -> Value {
        self.get(&format!("/api/orders/{id}"))
    }

    /// Waits (at most [`WAIT`]) until `f` accepts order `id`'s answer.
    pub async fn wait_order<T>(
        &self,
        id: u64,
        what: &str,
        f: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let path = format!("/api/orders/{id}");
        self.wait_for(&format!("order {id}: {what}"), &path, f)
            .await
    }

    /// Waits (at most [`WAIT`]) until order `id` has ended; its answer.
    pub async fn wait_order_ended(&self, id: u64) -> Value {
        self.wait_order(id, "ended", |v| {
            (order_state(v) != "running").then(|| v.clone())
        })
        .await
    }
}

/// `order.state` of a `/api/orders/ID` answer.
pub fn order_state(v: &Value) -> &str {
    v["order"]["state"].as_str().unwrap_or("")
}

/// The attempts of step `i` (from 0) of a `/api/orders/ID` answer, oldest first.
pub fn step_attempts(order: &Value, i: usize) -> &[Value] {
    order["steps"][i]["attempts"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// Per step, the agents of its attempts, oldest first.
pub fn step_agents(order: &Value) -> Vec<Vec<String>> {
    let steps = order["steps"].as_array().map_or(&[][..], Vec::as_slice);
    (0..steps.len())
        .map(|i| {
            step_attempts(order, i)
                .iter()
                .filter_map(|a| a["agent_id"].as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// Per step, its status (`waiting`, `not_run`, or its task's state).
pub fn step_statuses(order: &Value) -> Vec<String> {
    order["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["status"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A file the steps of a test append `NAME UNIX_NS` lines to, one line per mark (a line
/// appended with `O_APPEND` lands whole).
#[derive(Debug, Clone)]
pub struct Markers {
    path: PathBuf,
}

/// One line of [`Markers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    /// Wall clock when the step wrote it, Unix nanoseconds.
    pub at_ns: u128,
}

impl Markers {
    /// Marks in `dir/markers`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("markers"),
        }
    }

    /// Shell text that appends the mark `name` with the time it runs.
    pub fn mark(&self, name: &str) -> String {
        format!(
            "printf '%s %s\\n' {name} \"$(date +%s%N)\" >> {}",
            self.path.display()
        )
    }

    /// The marks so far, in the order they were appended.
    pub fn read(&self) -> Vec<Mark> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (name, at) = l.split_once(' ')?;
                Some(Mark {
                    name: name.to_owned(),
                    at_ns: at.trim().parse().ok()?,
                })
            })
            .collect()
    }

    /// The names of the marks so far, in order.
    pub fn names(&self) -> Vec<String> {
        self.read().into_iter().map(|m| m.name).collect()
    }

    /// Waits (at most [`WAIT`]) until every one of `names` is marked; the marks then. Reads
    /// the file only, so it works while the master is frozen.
    pub async fn wait_for(&self, names: &[&str]) -> Vec<Mark> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let marks = self.read();
            if names.iter().all(|n| marks.iter().any(|m| m.name == *n)) {
                return marks;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no marks {names:?} within {WAIT:?}; marks: {marks:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The wall clock now, Unix nanoseconds (what `date +%s%N` prints).
pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_read_back_in_order() {
        let dir = super::super::tempdir::TempDir::new("markers").unwrap();
        let m = Markers::new(dir.path());
        for name in ["one", "two"] {
            let ok = std::process::Command::new("/bin/sh")
                .args(["-c", &m.mark(name)])
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        let marks = m.read();
        assert_eq!(m.names(), ["one", "two"]);
        assert!(marks[0].at_ns <= marks[1].at_ns && marks[1].at_ns <= unix_ns());
        let order = json!({ "steps": [
            { "status": "succeeded", "attempts": [{ "agent_id": "a" }, { "agent_id": "b" }] },
            { "status": "waiting", "attempts": [] },
        ] });
        assert_eq!(step_agents(&order), [vec!["a", "b"], vec![]]);
        assert_eq!(step_statuses(&order), ["succeeded", "waiting"]);
    }
}
