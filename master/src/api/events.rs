//! `GET /api/events`: server-sent events of committed changes.
//!
//! The master loop publishes a [`Notice`] for each change of a batch only after the batch is
//! committed ([`Hub::publish_committed`]); a batch that failed to commit publishes nothing.
//!
//! Wire format (SSE, `text/event-stream`):
//! - each change is `event: <kind>`, `id: <n>` (n grows by one per notice), `data: <JSON>`;
//!   kinds and their data: `task` `{"task", "state"}`, `attempt_started` `{"task", "attempt",
//!   "agent"}`, `attempt` `{"attempt", "state", "exit"}`, `agent` `{"agent", "presence"}`,
//!   `output` `{"task", "attempt", "stream", "offset", "len"}`, `order` `{"order", "state"}`;
//! - `Last-Event-ID: n` (or `?since=n`) resumes after notice n while it is among the last
//!   [`RECENT`] kept; older ones are gone and a `lagged` event says so first;
//! - a client that reads too slowly gets `event: lagged` (`{"missed": k}`) and the stream
//!   ends: reconnect with `Last-Event-ID`; when the master stops, `event: closing` ends it;
//! - `: keep-alive` comments every 15 s.
//!
//! At most [`MAX_STREAMS`] streams (events and output follows together) are open at once;
//! beyond that the answer is 503 (`unavailable`, "... streams are open already").

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, Query};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::ApiError;
use crate::core::{Change, Master};
use crate::model::TaskId;

/// Notices kept for clients that resume.
pub const RECENT: usize = 1024;
/// Notices a client may fall behind before it is told `lagged`.
const CAPACITY: usize = 1024;
/// Open streams at most.
pub const MAX_STREAMS: usize = 64;
/// Events queued for one client's socket.
const PER_CLIENT: usize = 16;
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One committed change, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub id: u64,
    pub kind: &'static str,
    /// The task it concerns, if any (output follows listen for it).
    #[serde(skip)]
    pub task: Option<TaskId>,
    pub data: Value,
}

impl Notice {
    pub(super) fn event(&self) -> Event {
        Event::default()
            .event(self.kind)
            .id(self.id.to_string())
            .data(self.data.to_string())
    }
}

#[derive(Debug)]
struct Recent {
    next: u64,
    kept: VecDeque<Arc<Notice>>,
}

/// What the loop publishes to and the API's streams subscribe to.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Notice>>,
    recent: Arc<Mutex<Recent>>,
    streams: Arc<Semaphore>,
    stopping: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            recent: Arc::new(Mutex::new(Recent {
                next: 1,
                kept: VecDeque::with_capacity(RECENT),
            })),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            stopping: watch::channel(false).0,
        }
    }
}

/// A subscription: what was kept after `since`, then the live notices.
pub(super) struct Subscription {
    pub backlog: Vec<Arc<Notice>>,
    /// Notices after `since` that are no longer kept.
    pub missed: u64,
    pub rx: broadcast::Receiver<Arc<Notice>>,
}

impl Hub {
    /// Publishes a notice for each change of a batch that was committed.
    pub fn publish_committed(&self, changes: &[Change], core: &Master) {
        let mut recent = self.lock();
        for change in changes {
            let Some((kind, task, data)) = summary(change, core) else {
                continue;
            };
            let notice = Arc::new(Notice {
                id: recent.next,
                kind,
                task,
                data,
            });
            recent.next += 1;
            if recent.kept.len() == RECENT {
                recent.kept.pop_front();
            }
            recent.kept.push_back(notice.clone());
            // No subscriber is not an error.
            let _ = self.tx.send(notice);
        }
    }

    /// Ends every stream (the master stops).
    pub fn close(&self) {
        self.stopping.send_replace(true);
    }

    pub(super) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// A stream slot, or 503 when all are taken.
    pub(super) fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                503,
                format!("{MAX_STREAMS} event streams are open already; try again later"),
            )
        })
    }

    /// Subscribes under the lock publishers hold, so nothing falls between backlog and live.
    pub(super) fn subscribe(&self, since: Option<u64>) -> Subscription {
        let recent = self.lock();
        let rx = self.tx.subscribe();
        let Some(since) = since else {
            return Subscription {
                backlog: Vec::new(),
                missed: 0,
                rx,
            };
        };
        let oldest = recent.kept.front().map_or(recent.next, |n| n.id);
        let missed = oldest.saturating_sub(since.saturating_add(1));
        let backlog = recent
            .kept
            .iter()
            .filter(|n| n.id > since)
            .cloned()
            .collect();
        Subscription {
            backlog,
            missed,
            rx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The summary clients see of one change; `None` for changes they do not need.
fn summary(change: &Change, core: &Master) -> Option<(&'static str, Option<TaskId>, Value)> {
    Some(match change {
        Change::NewTask { id, state, .. } | Change::TaskState { id, state, .. } => (
            "task",
            Some(*id),
            json!({ "task": id, "state": state.as_str() }),
        ),
        Change::NewAttempt {
            id, task, agent, ..
        } => (
            "attempt_started",
            Some(*task),
            json!({ "task": task, "attempt": id, "agent": agent }),
        ),
        Change::Attempt { id, update } => {
            let task = core.task_of_attempt(*id);
            (
                "attempt",
                task,
                json!({ "task": task, "attempt": id, "state": update.state.as_str(),
                        "exit": update.exit }),
            )
        }
        Change::Agent { id, presence, .. } => (
            "agent",
            None,
            json!({ "agent": id, "presence": presence.as_str() }),
        ),
        Change::Output {
            attempt,
            stream,
            offset,
            data,
        } => {
            let task = core.task_of_attempt(*attempt);
            (
                "output",
                task,
                json!({ "task": task, "attempt": attempt, "stream": super::stream::name(*stream),
                        "offset": offset, "len": data.len() }),
            )
        }
        Change::NewOrder(order) => (
            "order",
            None,
            json!({ "order": order.id, "state": order.state.as_str() }),
        ),
        Change::OrderState { id, state, .. } => (
            "order",
            None,
            json!({ "order": id, "state": state.as_str() }),
        ),
        _ => return None,
    })
}

/// `?since=n`, the same as `Last-Event-ID: n`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    since: Option<u64>,
}

/// The `Last-Event-ID` a reconnecting SSE client sends, if any.
pub(super) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::new(400, "Last-Event-ID is not a number"))
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/events", tag = "events",
    params(("since" = Option<u64>, Query, description = "Resume after this event id (as `Last-Event-ID`)")),
    responses((status = 200, description = "Server-sent events: `task`, `attempt_started`, `attempt`, `agent`, `output`, `lagged`, `closing`; JSON data, growing ids.", content_type = "text/event-stream"),
        (status = 400, description = "The query is malformed.", body = super::error::ErrorBody<'_>)))]
pub(super) async fn events(
    Extension(hub): Extension<Hub>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::new(400, format!("bad query: {}", e.body_text())))?;
    let since = last_event_id(&headers)?.or(q.since);
    let slot = hub.slot()?;
    let sub = hub.subscribe(since);
    let stopping = hub.stopping();
    let (tx, rx) = mpsc::channel(PER_CLIENT);
    tokio::spawn(relay(sub, stopping, tx, slot));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Copies notices to one client until it leaves, lags or the master stops.
async fn relay(
    mut sub: Subscription,
    mut stopping: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    _slot: OwnedSemaphorePermit,
) {
    let lagged = |missed: u64| {
        Ok(Event::default()
            .event("lagged")
            .data(json!({ "missed": missed }).to_string()))
    };
    if sub.missed > 0 && tx.send(lagged(sub.missed)).await.is_err() {
        return;
    }
    for n in std::mem::take(&mut sub.backlog) {
        if tx.send(Ok(n.event())).await.is_err() {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            n = sub.rx.recv() => n,
            () = stopped(&mut stopping) => {
                let _ = tx.send(Ok(Event::default().event("closing").data("{}"))).await;
                return;
            }
            () = tx.closed() => return,
        };
        match next {
            Ok(n) => {
                if tx.send(Ok(n.event())).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(k)) => {
                let _ = tx.send(lagged(k)).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Returns once the master stops (the guard `wait_for` gives is not held across an await).
pub(super) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
