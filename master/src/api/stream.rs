//! `GET /api/tasks/{id}/output`: the task's output as JSON (the default, each chunk as lossy
//! text), as the raw bytes, or followed over server-sent events.
//!
//! Query: `stream=stdout|stderr` (default stdout), `since=N` (byte offset, default 0),
//! `format=raw` or `follow=1`. Offsets count bytes of one stream of the task's latest attempt.
//!
//! - `format=raw`: `200`, `Content-Type: application/octet-stream`, the bytes from `since` as
//!   the task wrote them (at most [`MAX_ANSWER`]); headers `Tether-Output-Next` (the offset to
//!   ask from next), `Tether-Attempt` (absent before the first attempt), `Tether-Task-State`.
//! - `follow=1`: SSE. `event: output`, `id: <offset after the bytes>`, `data: {"attempt",
//!   "stream", "offset", "data"}` where `data` is the base64 (standard, padded) of the raw
//!   bytes starting at `offset` (SSE is text; base64 keeps a UTF-8 character split across
//!   chunks intact). A resumed follow passes the last id as `since` (or `Last-Event-ID`). When a
//!   retry starts a new attempt, `event: attempt` (`{"attempt"}`) comes first and offsets start
//!   again at 0. Once the task is finished and every stored byte is sent: `event: end`,
//!   `data: {"state", "outcome"}` (`outcome` as in `GET /api/tasks/{id}`, with `exit`), and the
//!   stream ends. `event: closing` ends it when the master stops. Keep-alive comments every
//!   15 s. Follows count against the same cap as `/api/events`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tether_core::message::Stream;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::events::{Hub, KEEP_ALIVE, last_event_id};
use super::{ApiError, ApiRequest, By, Envelope, Tx, ask, task_id};
use crate::model::TaskId;

/// The most bytes one raw answer or one output event carries.
pub(super) const MAX_ANSWER: usize = 256 * 1024;
/// A follow asks again at least this often, even when no notice came (a lagged hub).
const POLL: Duration = Duration::from_secs(2);

pub(super) fn name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputQuery {
    follow: Option<String>,
    since: Option<u64>,
    stream: Option<String>,
    format: Option<String>,
}

#[utoipa::path(get, path = "/api/tasks/{id}/output", tag = "tasks",
    params(("id" = u64, Path, description = "The task id"),
        ("follow" = Option<String>, Query, description = "`1`: server-sent events, `output` events with base64 data, then `end` with the outcome"),
        ("format" = Option<String>, Query, description = "`raw`: the bytes as written (application/octet-stream), `Tether-Output-Next` header"),
        ("since" = Option<u64>, Query, description = "Byte offset to start from (raw or follow)"),
        ("stream" = Option<String>, Query, description = "`stdout` (default) or `stderr` (raw or follow)")),
    responses((status = 200, description = "The task's output: JSON chunks, raw bytes or an event stream.", body = super::answers::OutputAnswer),
        (status = 400, description = "The id or query is malformed.", body = super::error::ErrorBody<'_>),
        (status = 404, description = "No such task.", body = super::error::ErrorBody<'_>)))]
pub(super) async fn output(
    State(tx): Tx,
    Extension(by): By,
    Extension(hub): Extension<Hub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<OutputQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let Query(q) =
        query.map_err(|e| ApiError::new(400, format!("bad query: {}", e.body_text())))?;
    let stream = match q.stream.as_deref() {
        None | Some("stdout") => Stream::Stdout,
        Some("stderr") => Stream::Stderr,
        Some(s) => {
            return Err(ApiError::new(
                422,
                format!("stream '{s}' is not stdout or stderr"),
            ));
        }
    };
    let follow = match q.follow.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(f) => return Err(ApiError::new(422, format!("follow '{f}' is not 1 or 0"))),
    };
    let raw = match q.format.as_deref() {
        None | Some("json") => false,
        Some("raw") => true,
        Some(f) => {
            return Err(ApiError::new(
                422,
                format!("format '{f}' is not raw or json"),
            ));
        }
    };
    let since = last_event_id(&headers)?.or(q.since).unwrap_or(0);
    if follow {
        let slot = hub.slot()?;
        // Subscribed before the first ask, so no change falls between the two.
        let sub = hub.subscribe(None).rx;
        // Ask once first, so an unknown task is a 404, not an empty stream.
        let first = fetch(&tx, &by, id, stream, since).await?;
        let (out, rx) = mpsc::channel(4);
        let follower = Follower {
            tx: tx.clone(),
            by,
            id,
            stream,
            since,
            attempt: first.attempt,
        };
        tokio::spawn(follower.run(first, sub, hub.stopping(), out, slot));
        let sse =
            Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
        return Ok(sse.into_response());
    }
    if raw {
        let f = fetch(&tx, &by, id, stream, since).await?;
        let mut answer = Response::new(Body::from(f.bytes));
        let h = answer.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            "application/octet-stream"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        h.insert("tether-output-next", f.next.into());
        if let Some(a) = f.attempt {
            h.insert("tether-attempt", a.into());
        }
        if let Ok(v) = f.state.parse() {
            h.insert("tether-task-state", v);
        }
        return Ok(answer);
    }
    if q.since.is_some() || q.stream.is_some() {
        return Err(ApiError::new(
            422,
            "since and stream need format=raw or follow=1",
        ));
    }
    let (status, body) = ask(&tx, by, ApiRequest::Output(id), StatusCode::OK).await?;
    Ok((status, body).into_response())
}

/// One answer of [`ApiRequest::OutputFrom`].
struct Fetched {
    attempt: Option<u64>,
    bytes: Vec<u8>,
    next: u64,
    state: String,
    finished: bool,
    outcome: Value,
}

async fn fetch(
    tx: &mpsc::Sender<Envelope>,
    by: &super::Caller,
    id: TaskId,
    stream: Stream,
    since: u64,
) -> Result<Fetched, ApiError> {
    let req = ApiRequest::OutputFrom {
        id,
        stream,
        since,
        max: MAX_ANSWER,
    };
    let (_, axum::Json(v)) = ask(tx, by.clone(), req, StatusCode::OK).await?;
    let bad = || ApiError::new(500, "the output answer is malformed");
    let bytes = BASE64
        .decode(v["data"].as_str().ok_or_else(bad)?)
        .map_err(|_| bad())?;
    Ok(Fetched {
        attempt: v["attempt"].as_u64(),
        bytes,
        next: v["next"].as_u64().ok_or_else(bad)?,
        state: v["state"].as_str().ok_or_else(bad)?.to_owned(),
        finished: v["finished"].as_bool().ok_or_else(bad)?,
        outcome: v["outcome"].clone(),
    })
}

struct Follower {
    tx: mpsc::Sender<Envelope>,
    by: super::Caller,
    id: TaskId,
    stream: Stream,
    since: u64,
    attempt: Option<u64>,
}

type Out = mpsc::Sender<Result<Event, Infallible>>;

impl Follower {
    async fn run(
        mut self,
        first: Fetched,
        mut notices: broadcast::Receiver<std::sync::Arc<super::events::Notice>>,
        mut stopping: watch::Receiver<bool>,
        out: Out,
        _slot: OwnedSemaphorePermit,
    ) {
        let mut fetched = first;
        loop {
            // More may be stored already: a full answer, a finished task, a new attempt.
            let again = fetched.bytes.len() >= MAX_ANSWER
                || fetched.finished
                || fetched.attempt != self.attempt;
            match self.send(fetched, &out).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(()) => return,
            }
            if !again {
                // Wait for a notice about this task, the poll interval, or the stop.
                let deadline = tokio::time::sleep(POLL);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        n = notices.recv() => match n {
                            Ok(n) if n.task == Some(self.id) => break,
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        () = &mut deadline => break,
                        () = super::events::stopped(&mut stopping) => {
                            let _ = out.send(Ok(Event::default().event("closing").data("{}"))).await;
                            return;
                        }
                        () = out.closed() => return,
                    }
                }
            }
            fetched = match fetch(&self.tx, &self.by, self.id, self.stream, self.since).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = out
                        .send(Ok(Event::default().event("error").data(
                            json!({ "error": e.message, "code": e.code() }).to_string(),
                        )))
                        .await;
                    return;
                }
            };
        }
    }

    /// Sends what was fetched; `Ok(true)` once the `end` event is sent.
    async fn send(&mut self, f: Fetched, out: &Out) -> Result<bool, ()> {
        if f.attempt != self.attempt {
            // A new attempt: its offsets start at 0; ask again from there.
            self.attempt = f.attempt;
            self.since = 0;
            let event = Event::default()
                .event("attempt")
                .data(json!({ "attempt": f.attempt }).to_string());
            out.send(Ok(event)).await.map_err(|_| ())?;
            return Ok(false);
        }
        let done = f.finished && f.bytes.is_empty();
        if !f.bytes.is_empty() {
            let event = Event::default()
                .event("output")
                .id(f.next.to_string())
                .data(
                    json!({
                        "attempt": f.attempt,
                        "stream": name(self.stream),
                        "offset": self.since,
                        "data": BASE64.encode(&f.bytes),
                    })
                    .to_string(),
                );
            self.since = f.next;
            out.send(Ok(event)).await.map_err(|_| ())?;
        }
        if done {
            let event = Event::default()
                .event("end")
                .data(json!({ "state": f.state, "outcome": f.outcome }).to_string());
            out.send(Ok(event)).await.map_err(|_| ())?;
        }
        Ok(done)
    }
}
