//! The answers of the API, built in the master loop from the core and the committed store.
//! Every JSON shape is a typed struct here, so what a route returns is written in one place.

use std::collections::BTreeMap;

use log::info;
use serde::Serialize;
use serde_json::Value;
use tether_core::Instant;
use tether_core::auth::Hex;
use tether_core::message::Stream;

use super::{ApiError, ApiRequest};
use crate::core::{Master, SecurityCounts, Stats};
use crate::keys;
use crate::model::{AgentPresence, Attempt, AttemptId, Task, TaskId, TaskState};
use crate::runtime::Bound;
use crate::store::{Page, Store};

/// What the loop lends the API for one request.
#[allow(missing_debug_implementations)] // the store is a trait object
pub struct Context<'a> {
    pub core: &'a mut Master,
    pub store: &'a dyn Store,
    pub bound: &'a Bound,
    /// Publishes the MQTT client could not queue (commands are retransmitted anyway).
    pub dropped_publishes: u64,
}

#[derive(Debug, Serialize)]
pub struct StatusAnswer {
    pub epoch: String,
    pub mqtt: String,
    pub http: String,
    pub connected: bool,
    pub prefix: String,
    pub heartbeat_period_ms: u64,
    pub stats: Stats,
    pub dropped_publishes: u64,
}

#[derive(Debug, Serialize)]
pub struct KeysAnswer {
    pub master_keys: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct AgentKeyAnswer {
    pub id: String,
    pub agent_key: String,
    pub master_keys: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SecurityAnswer<'a> {
    pub unknown_agent: u64,
    pub agents: &'a BTreeMap<String, SecurityCounts>,
}

#[derive(Debug, Serialize)]
pub struct AgentAnswer<'a> {
    pub id: String,
    pub incarnation: Option<String>,
    pub presence: AgentPresence,
    pub available: bool,
    pub silent_ms: u64,
    pub last_heartbeat_ms: Option<u64>,
    pub acked_seq: u64,
    pub attempts: Vec<AttemptId>,
    pub keyed: bool,
    pub security: Option<&'a SecurityCounts>,
}

#[derive(Debug, Serialize)]
pub struct EventAnswer {
    pub agent: String,
    pub seq: u64,
    pub attempt: Option<AttemptId>,
    pub kind: String,
    pub received_ms: u64,
    pub event: Value,
}

#[derive(Debug, Serialize)]
pub struct TaskAnswer {
    pub task: Task,
    pub attempts: Vec<Attempt>,
    pub events: Vec<EventAnswer>,
}

#[derive(Debug, Serialize)]
pub struct ChunkAnswer {
    pub attempt: AttemptId,
    pub stream: &'static str,
    pub offset: u64,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct OutputAnswer {
    pub task: TaskId,
    pub state: TaskState,
    pub chunks: Vec<ChunkAnswer>,
}

#[derive(Debug, Serialize)]
pub struct Created {
    pub id: TaskId,
}

#[derive(Debug, Serialize)]
pub struct KillAnswer {
    pub id: TaskId,
    pub kill: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Named {
    pub name: String,
}

fn json<T: Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(500, format!("cannot encode: {e}")))
}

fn found<T>(v: Option<T>, id: TaskId) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::new(404, format!("no task {id}")))
}

/// Answers one request: reads come from the store (committed state) and the core's views;
/// writes go through the core, whose changes the loop commits before this answer is sent.
pub fn answer(cx: Context<'_>, now: Instant, req: ApiRequest) -> Result<Value, ApiError> {
    let Context {
        core,
        store: s,
        bound,
        dropped_publishes,
    } = cx;
    let master_keys = vec![Hex(&core.public_key()).to_string()];
    match req {
        ApiRequest::Status => json(&StatusAnswer {
            epoch: format!("{:08x}", bound.epoch),
            mqtt: format!("{}:{}", bound.mqtt.host, bound.mqtt.port),
            http: bound.http.to_string(),
            connected: core.is_connected(),
            prefix: core.config().prefix.clone(),
            heartbeat_period_ms: core.heartbeat_period().as_millis(),
            stats: core.stats(),
            dropped_publishes,
        }),
        ApiRequest::Keys => json(&KeysAnswer { master_keys }),
        ApiRequest::AgentKey { id, rotate } => {
            let key = match core.agent_key(&id) {
                Some(key) if !rotate => *key,
                _ => {
                    let key = keys::new_key()
                        .map_err(|e| ApiError::new(500, format!("no random key: {e}")))?;
                    core.set_agent_key(now, &id, key)?;
                    info!(
                        "agent {id}: MAC key {}",
                        if rotate { "rotated" } else { "set" }
                    );
                    key
                }
            };
            json(&AgentKeyAnswer {
                id,
                agent_key: Hex(&key).to_string(),
                master_keys,
            })
        }
        ApiRequest::Security => json(&SecurityAnswer {
            unknown_agent: core.stats().unknown_agent,
            agents: core.security(),
        }),
        ApiRequest::Agents => {
            let stored = s.agents()?;
            let list: Vec<AgentAnswer<'_>> = core
                .agent_views(now)
                .into_iter()
                .map(|v| AgentAnswer {
                    last_heartbeat_ms: stored
                        .iter()
                        .find(|a| a.id == v.id)
                        .and_then(|a| a.last_heartbeat_ms),
                    keyed: core.agent_key(&v.id).is_some(),
                    security: core.security().get(&v.id),
                    incarnation: v.incarnation.map(|i| format!("{i:08x}")),
                    id: v.id,
                    presence: v.presence,
                    available: v.available,
                    silent_ms: v.silent_ms,
                    acked_seq: v.acked_seq,
                    attempts: v.attempts,
                })
                .collect();
            json(&list)
        }
        ApiRequest::Clusters => json(&s.clusters()?),
        ApiRequest::Profiles => json(&s.profiles()?),
        ApiRequest::Tasks => json(&s.tasks(Page::ALL)?),
        ApiRequest::Task(id) => {
            let task = found(s.task(id)?, id)?;
            let attempts = s.attempts(id)?;
            let mut events = Vec::new();
            for a in &attempts {
                for e in s.attempt_events(a.id)? {
                    events.push(EventAnswer {
                        event: serde_json::from_str(&e.json).unwrap_or(Value::Null),
                        agent: e.agent_id,
                        seq: e.seq,
                        attempt: e.attempt,
                        kind: e.kind,
                        received_ms: e.received_ms,
                    });
                }
            }
            json(&TaskAnswer {
                task,
                attempts,
                events,
            })
        }
        ApiRequest::Output(id) => {
            let task = found(s.task(id)?, id)?;
            let mut chunks = Vec::new();
            for a in s.attempts(id)? {
                for c in s.output(a.id)? {
                    chunks.push(ChunkAnswer {
                        attempt: c.attempt,
                        stream: match c.stream {
                            Stream::Stdout => "stdout",
                            Stream::Stderr => "stderr",
                        },
                        offset: c.offset,
                        text: String::from_utf8_lossy(&c.bytes).into_owned(),
                    });
                }
            }
            json(&OutputAnswer {
                task: id,
                state: task.state,
                chunks,
            })
        }
        ApiRequest::Submit(req) => json(&Created {
            id: core.submit(now, req)?,
        }),
        ApiRequest::Kill(id) => {
            if s.task(id)?.is_none() {
                return Err(ApiError::new(404, format!("no task {id}")));
            }
            core.kill(now, id)?;
            json(&KillAnswer {
                id,
                kill: "requested",
            })
        }
        ApiRequest::PutCluster(req) => {
            let name = req.name.clone();
            core.put_cluster(now, req)?;
            json(&Named { name })
        }
        ApiRequest::PutProfile(req) => {
            let name = req.name.clone();
            core.put_profile(now, req)?;
            json(&Named { name })
        }
    }
}
