//! The answers of the API, built in the master loop from the core and the committed store.
//! Every JSON shape is a typed struct here, so what a route returns is written in one place.

use std::collections::BTreeMap;

use log::info;
use serde::Serialize;
use serde_json::Value;
use tether_core::Instant;
use tether_core::auth::Hex;
use tether_core::message::Stream;

use super::tokens::{Caller, Tokens, hash_hex, new_secret};
use super::{ApiError, ApiRequest};
use crate::core::{Master, SecurityCounts, Stats};
use crate::keys;
use crate::model::{
    AgentPresence, ApiToken, Attempt, AttemptId, AuditEntry, Role, Task, TaskId, TaskState,
};
use crate::runtime::Bound;
use crate::store::Store;

/// What the loop lends the API for one request.
#[allow(missing_debug_implementations)] // the store is a trait object
pub struct Context<'a> {
    pub core: &'a mut Master,
    pub store: &'a dyn Store,
    pub bound: &'a Bound,
    /// Publishes the MQTT client could not queue (commands are retransmitted anyway).
    pub dropped_publishes: u64,
    /// Who asks: recorded with every change.
    pub by: &'a Caller,
    /// The live tokens, for the token routes' checks.
    pub tokens: &'a Tokens,
    /// What the loop measured, for `/metrics`.
    pub observed: &'a super::Observed,
    /// Whether the store refuses writes (since a failed commit).
    pub refusing: bool,
}

/// An answer, and the token change that takes effect once its batch is committed.
#[derive(Debug)]
pub struct Answered {
    pub value: Value,
    pub token: Option<ApiToken>,
}

impl From<Value> for Answered {
    fn from(value: Value) -> Self {
        Self { value, token: None }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenAnswer {
    pub name: String,
    pub role: Role,
    /// The secret: shown in this answer only, never stored.
    pub token: String,
}

/// `GET /api/whoami`: who the caller's token is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevokedAnswer {
    pub name: String,
    pub revoked: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeysAnswer {
    pub master_keys: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentKeyAnswer {
    pub id: String,
    pub agent_key: String,
    pub master_keys: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecurityAnswer<'a> {
    pub unknown_agent: u64,
    #[schema(value_type = BTreeMap<String, SecurityCounts>)]
    pub agents: &'a BTreeMap<String, SecurityCounts>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentAnswer<'a> {
    pub id: String,
    pub incarnation: Option<String>,
    /// The journal its events are numbered in (hex); another one after a re-flash or restore.
    pub journal: Option<String>,
    pub presence: AgentPresence,
    pub available: bool,
    pub disabled: bool,
    pub silent_ms: u64,
    pub last_heartbeat_ms: Option<u64>,
    pub acked_seq: u64,
    pub attempts: Vec<AttemptId>,
    pub keyed: bool,
    #[schema(value_type = Option<SecurityCounts>)]
    pub security: Option<&'a SecurityCounts>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventAnswer {
    pub agent: String,
    pub seq: u64,
    pub attempt: Option<AttemptId>,
    pub kind: String,
    pub received_ms: u64,
    /// The agent's event as it arrived.
    #[schema(value_type = Object)]
    pub event: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskAnswer {
    pub task: Task,
    pub attempts: Vec<Attempt>,
    pub events: Vec<EventAnswer>,
    /// Who submitted and killed it, when.
    pub history: Vec<AuditEntry>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChunkAnswer {
    pub attempt: AttemptId,
    #[schema(value_type = String, example = "stdout")]
    pub stream: &'static str,
    pub offset: u64,
    pub text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutputAnswer {
    pub task: TaskId,
    pub state: TaskState,
    pub chunks: Vec<ChunkAnswer>,
}

/// The bytes of one stream from an offset, base64; `next` is the offset after them.
#[derive(Debug, Serialize)]
pub struct OutputFromAnswer {
    pub task: TaskId,
    pub state: TaskState,
    pub finished: bool,
    pub outcome: Option<crate::model::Outcome>,
    pub attempt: Option<AttemptId>,
    pub next: u64,
    pub data: String,
}

/// Appends the part of `c` at `*next` and after (contiguous only, at most `max` in all).
fn bytes_from(c: &crate::model::OutputChunk, next: &mut u64, out: &mut Vec<u8>, max: usize) {
    let end = c.offset + c.bytes.len() as u64;
    if c.offset > *next || end <= *next {
        return;
    }
    let skip = usize::try_from(*next - c.offset).unwrap_or(usize::MAX);
    let room = max.saturating_sub(out.len());
    let part = &c.bytes[skip.min(c.bytes.len())..];
    let part = &part[..part.len().min(room)];
    out.extend_from_slice(part);
    *next += part.len() as u64;
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: TaskId,
    /// Why the task may wait (its agent is disabled); absent when there is nothing to say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The answer to a disable or enable.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentSwitched {
    pub id: String,
    pub disabled: bool,
    /// False when it was so already.
    pub changed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KillAnswer {
    pub id: TaskId,
    #[schema(value_type = String)]
    pub kill: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Named {
    pub name: String,
}

/// A cluster as defined, with what the operator should know about it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterDefined {
    pub name: String,
    /// Members that have never connected to this master: accepted (a board may be flashed
    /// later), but no task goes to them until they do.
    pub warnings: Vec<String>,
}

/// Records who changed what (`subject`: `task/7`, `order/3`) in the audit trail.
pub(super) fn audit(core: &mut Master, by: &Caller, action: &str, subject: String) {
    core.audit(AuditEntry {
        at_ms: unix_ms(),
        who: by.name.clone(),
        action: action.to_owned(),
        subject,
    });
}

pub(super) fn json<T: Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(500, format!("cannot encode: {e}")))
}

fn found<T>(v: Option<T>, id: TaskId) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::new(404, format!("no task {id}")))
}

/// Answers one request: reads come from the store (committed state) and the core's views;
/// writes go through the core, whose changes the loop commits before this answer is sent.
pub fn answer(cx: Context<'_>, now: Instant, req: ApiRequest) -> Result<Answered, ApiError> {
    let Context {
        core,
        store: s,
        bound,
        dropped_publishes,
        by,
        tokens,
        observed,
        refusing,
    } = cx;
    let audit = |core: &mut Master, action: &str, subject: String| audit(core, by, action, subject);
    let master_keys = vec![Hex(&core.public_key()).to_string()];
    let value = match req {
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
        ApiRequest::Metrics => {
            let scrape = super::metrics::Scrape {
                core,
                store: s,
                observed,
                dropped_publishes,
                refusing,
            };
            Ok(Value::String(super::metrics::render(scrape, now)?))
        }
        ApiRequest::Health => json(&super::metrics::health(core, s, refusing)),
        ApiRequest::AgentKey { id, rotate } => {
            // A secret leaves the master only when it is made: once, to an admin.
            if core.agent_key(&id).is_some() && !rotate {
                return Err(ApiError::new(
                    409,
                    format!(
                        "agent {id} already has a key; ask with \"rotate\": true for a new one"
                    ),
                ));
            }
            let key =
                keys::new_key().map_err(|e| ApiError::new(500, format!("no random key: {e}")))?;
            core.set_agent_key(now, &id, key)?;
            let action = if rotate { "key rotated" } else { "key set" };
            info!("agent {id}: MAC {action} by {}", by.name);
            audit(core, action, format!("agent/{id}"));
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
        ApiRequest::Agents {
            page,
            presence,
            available,
        } => {
            let stored = s.agents()?;
            // Filtered first, so a page holds `limit` matching agents.
            let views: Vec<_> = core
                .agent_views(now)
                .into_iter()
                .filter(|v| presence.is_none_or(|p| v.presence == p))
                .filter(|v| available.is_none_or(|a| v.available == a))
                .collect();
            let list: Vec<AgentAnswer<'_>> = page
                .take(views, |v| v.id.as_str())
                .into_iter()
                .map(|v| AgentAnswer {
                    last_heartbeat_ms: stored
                        .iter()
                        .find(|a| a.id == v.id)
                        .and_then(|a| a.last_heartbeat_ms),
                    keyed: core.agent_key(&v.id).is_some(),
                    security: core.security().get(&v.id),
                    incarnation: v.incarnation.map(|i| format!("{i:08x}")),
                    journal: v.journal.map(|j| format!("{j:08x}")),
                    id: v.id,
                    presence: v.presence,
                    available: v.available,
                    disabled: v.disabled,
                    silent_ms: v.silent_ms,
                    acked_seq: v.acked_seq,
                    attempts: v.attempts,
                })
                .collect();
            json(&list)
        }
        ApiRequest::Clusters => json(&s.clusters()?),
        ApiRequest::Profiles => json(&s.profiles()?),
        ApiRequest::Tasks { page, state } => json(&s.tasks(page, state)?),
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
                history: s.audit(&format!("task/{id}"))?,
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
        ApiRequest::OutputFrom {
            id,
            stream,
            since,
            max,
        } => {
            let task = found(s.task(id)?, id)?;
            let attempt = s.attempts(id)?.into_iter().map(|a| a.id).max();
            let mut bytes = Vec::new();
            let mut next = since;
            if let Some(a) = attempt {
                for c in s.output(a)?.into_iter().filter(|c| c.stream == stream) {
                    bytes_from(&c, &mut next, &mut bytes, max);
                }
            }
            json(&OutputFromAnswer {
                task: id,
                state: task.state,
                finished: task.state.is_terminal(),
                outcome: task.outcome,
                attempt,
                next,
                data: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes),
            })
        }
        ApiRequest::Submit(req) => {
            let disabled = req.agent.clone().filter(|a| core.agent_disabled(a));
            let id = core.submit(now, req)?;
            audit(core, "submit", format!("task/{id}"));
            let warnings = disabled
                .map(|a| format!("agent {a} is disabled: the task waits until it is enabled"))
                .into_iter()
                .collect();
            json(&Created { id, warnings })
        }
        ApiRequest::SetAgentDisabled { id, disabled } => {
            let changed = core.set_agent_disabled(now, &id, disabled)?;
            if changed {
                let action = if disabled {
                    "agent disabled"
                } else {
                    "agent enabled"
                };
                info!("{action}: {id} by {}", by.name);
                audit(core, action, format!("agent/{id}"));
            }
            json(&AgentSwitched {
                id,
                disabled,
                changed,
            })
        }
        ApiRequest::Kill(id) => {
            if s.task(id)?.is_none() {
                return Err(ApiError::new(404, format!("no task {id}")));
            }
            core.kill(now, id)?;
            audit(core, "kill", format!("task/{id}"));
            json(&KillAnswer {
                id,
                kill: "requested",
            })
        }
        ApiRequest::PutCluster(req) => {
            let name = req.name.clone();
            let known: Vec<String> = core
                .agent_views(now)
                .into_iter()
                .filter(|v| v.presence != AgentPresence::Unknown)
                .map(|v| v.id)
                .collect();
            let warnings = req
                .members
                .iter()
                .filter(|m| !known.contains(m))
                .map(|m| format!("member {m} has never connected to this master"))
                .collect();
            core.put_cluster(now, req)?;
            audit(core, "cluster defined", format!("cluster/{name}"));
            json(&ClusterDefined { name, warnings })
        }
        ApiRequest::PutProfile(req) => {
            let name = req.name.clone();
            core.put_profile(now, req)?;
            audit(core, "profile defined", format!("profile/{name}"));
            json(&Named { name })
        }
        ApiRequest::Flow(req) => super::workflow_answers::answer(core, s, by, now, req),
        ApiRequest::Schedule(req) => super::schedule_answers::answer(core, s, by, now, req),
        ApiRequest::Tokens(page) => json(&page.take(s.tokens()?, |t| t.name.as_str())),
        ApiRequest::CreateToken(req) => {
            let secret =
                new_secret().map_err(|e| ApiError::new(500, format!("no random token: {e}")))?;
            let token = ApiToken {
                name: req.name.clone(),
                role: req.role,
                hash: hash_hex(&secret),
                created_ms: unix_ms(),
                created_by: by.name.clone(),
                revoked_ms: None,
            };
            core.put_token(token.clone())?;
            audit(core, "token created", format!("token/{}", req.name));
            let value = json(&TokenAnswer {
                name: req.name,
                role: req.role,
                token: secret,
            })?;
            return Ok(Answered {
                value,
                token: Some(token),
            });
        }
        ApiRequest::RevokeToken(name) => {
            if !tokens.contains(&name) {
                return Err(ApiError::new(404, format!("no live token '{name}'")));
            }
            let mut token = s
                .tokens()?
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| ApiError::new(404, format!("no token '{name}'")))?;
            token.revoked_ms = Some(unix_ms());
            core.put_token(token.clone())?;
            audit(core, "token revoked", format!("token/{name}"));
            let value = json(&RevokedAnswer {
                name,
                revoked: true,
            })?;
            return Ok(Answered {
                value,
                token: Some(token),
            });
        }
    }?;
    Ok(value.into())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
