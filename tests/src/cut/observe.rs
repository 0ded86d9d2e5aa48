//! A background watcher that records, with the wall-clock time it first saw them, every
//! change of agent presence and task state in the master's API and the agent log lines that
//! matter (connection lost, connected, signals). The timeline is read from this record, so a
//! scenario can wait for one thing while another is noticed meanwhile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How often the API and the logs are looked at: the precision of observed times.
pub const POLL: Duration = Duration::from_millis(100);

/// Agent log lines worth a place in the record.
const LOG_MARKS: [&str; 5] = [
    "connection lost",
    "connected to",
    "to process group",
    "started: pid",
    "exited:",
];

/// Wall-clock milliseconds, comparable with the agent's and the master's own stamps.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Agent {
        id: String,
        presence: String,
        available: bool,
    },
    Task {
        id: u64,
        state: String,
    },
    Log {
        agent: String,
        line: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obs {
    pub at_ms: u64,
    pub what: Seen,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    /// The master's API address and a token to read it with.
    http: Mutex<Option<(String, String)>>,
    logs: Mutex<Vec<(String, PathBuf)>>,
    seen: Mutex<Vec<Obs>>,
}

#[derive(Debug)]
pub struct Observer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Default for Observer {
    fn default() -> Self {
        Self::start()
    }
}

impl Observer {
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("cut-observer".into())
                .spawn(move || watch(&shared))
                .expect("observer thread")
        };
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// Where the master's API is now (`None` while it is down).
    pub fn set_master(&self, http: Option<(String, String)>) {
        *lock(&self.shared.http) = http;
    }

    /// Watch the `agent-*.log` files in `dir` (an agent home) under the name `agent`.
    pub fn watch_agent(&self, agent: &str, dir: PathBuf) {
        lock(&self.shared.logs).push((agent.to_owned(), dir));
    }

    pub fn all(&self) -> Vec<Obs> {
        lock(&self.shared.seen).clone()
    }

    /// The first observation at or after `since_ms` that `f` accepts.
    pub fn first_after(&self, since_ms: u64, mut f: impl FnMut(&Seen) -> bool) -> Option<u64> {
        lock(&self.shared.seen)
            .iter()
            .find(|o| o.at_ms >= since_ms && f(&o.what))
            .map(|o| o.at_ms)
    }

    /// Every task state observed for `task`, in order.
    pub fn task_states(&self, task: u64) -> Vec<String> {
        lock(&self.shared.seen)
            .iter()
            .filter_map(|o| match &o.what {
                Seen::Task { id, state } if *id == task => Some(state.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn watch(shared: &Shared) {
    let mut agents: HashMap<String, (String, bool)> = HashMap::new();
    let mut tasks: HashMap<u64, String> = HashMap::new();
    let mut read: HashMap<PathBuf, usize> = HashMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut new = Vec::new();
        let http = lock(&shared.http).clone();
        if let Some((http, token)) = http {
            // A master that is down or slow is simply not observed this round.
            if let Some(Value::Array(list)) = get(&http, &token, "/api/agents") {
                for a in list {
                    let id = a["id"].as_str().unwrap_or("").to_owned();
                    let now = (
                        a["presence"].as_str().unwrap_or("").to_owned(),
                        a["available"].as_bool() == Some(true),
                    );
                    if agents.get(&id) != Some(&now) {
                        new.push(Seen::Agent {
                            id: id.clone(),
                            presence: now.0.clone(),
                            available: now.1,
                        });
                        agents.insert(id, now);
                    }
                }
            }
            if let Some(Value::Array(list)) = get(&http, &token, "/api/tasks") {
                for t in list {
                    let id = t["id"].as_u64().unwrap_or(0);
                    let state = t["state"].as_str().unwrap_or("").to_owned();
                    if tasks.get(&id) != Some(&state) {
                        new.push(Seen::Task {
                            id,
                            state: state.clone(),
                        });
                        tasks.insert(id, state);
                    }
                }
            }
        }
        let logs = lock(&shared.logs).clone();
        for (agent, dir) in logs {
            for path in log_files(&dir) {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let done = read.entry(path).or_insert(0);
                // Only whole lines: a line being written is read next round.
                let Some(end) = text.rfind('\n') else {
                    continue;
                };
                if end < *done {
                    continue;
                }
                for line in text[*done..end].lines() {
                    if LOG_MARKS.iter().any(|m| line.contains(m)) {
                        new.push(Seen::Log {
                            agent: agent.clone(),
                            line: line.to_owned(),
                        });
                    }
                }
                *done = end + 1;
            }
        }
        if !new.is_empty() {
            let at_ms = unix_ms();
            lock(&shared.seen).extend(new.into_iter().map(|what| Obs { at_ms, what }));
        }
        std::thread::sleep(POLL);
    }
}

fn log_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("agent-") && n.ends_with(".log"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn get(http: &str, token: &str, path: &str) -> Option<Value> {
    let (status, body) =
        crate::harness::plain_http::request(http, Some(token), "GET", path, None).ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}
