//! The API's streams against the real master: a task's output as raw bytes and followed over
//! server-sent events (a UTF-8 character split across two chunks arrives whole, `since`
//! resumes, `end` carries the exit code), and `/api/events` with the task's states in order
//! and resumption by `Last-Event-ID`. Raw HTTP/1.0 over loopback, every read bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tether_core::message::{EventKind, Exit, Stream};

use super::runtime::{FakeAgent, MasterProc};

const WAIT: Duration = Duration::from_secs(20);

/// One request; the status line, the headers (lower-case names) and the socket after them.
fn open(
    master: &MasterProc,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(&master.http).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    // HTTP/1.0: the body ends with the connection, no chunked framing to undo.
    let mut head = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n",
        master.token
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line[9..12].parse().unwrap();
    let mut headers = vec![];
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
    }
    (status, headers, r)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `GET path` read to the end: status, headers, body bytes.
fn raw(master: &MasterProc, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (status, headers, mut r) = open(master, path, &[]);
    let mut body = vec![];
    r.read_to_end(&mut body).unwrap();
    (status, headers, body)
}

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// An SSE stream read on its own thread; `next` waits at most [`WAIT`].
struct Events {
    rx: std_mpsc::Receiver<Sse>,
    socket: TcpStream,
}

impl Drop for Events {
    /// Hangs up, as a client that leaves does.
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Events {
    fn open(master: &MasterProc, path: &str, extra: &[(&str, &str)]) -> Self {
        let (status, headers, r) = open(master, path, extra);
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), Some("text/event-stream"));
        let socket = r.get_ref().try_clone().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            let (mut event, mut id, mut data) = (String::new(), None, String::new());
            for line in r.lines() {
                let Ok(line) = line else { return };
                if line.is_empty() {
                    if !data.is_empty() || !event.is_empty() {
                        let e = Sse {
                            event: std::mem::take(&mut event),
                            id: id.take(),
                            data: serde_json::from_str(&data).unwrap_or(Value::Null),
                        };
                        data.clear();
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
        });
        Self { rx, socket }
    }

    fn next(&self) -> Sse {
        tokio::task::block_in_place(|| self.rx.recv_timeout(WAIT).expect("an event in time"))
    }

    /// Events until one named `until`, that one included.
    fn until(&self, until: &str) -> Vec<Sse> {
        let mut seen = vec![];
        loop {
            let e = self.next();
            let last = e.event == until;
            seen.push(e);
            if last {
                return seen;
            }
        }
    }
}

fn decoded(events: &[Sse]) -> Vec<u8> {
    events
        .iter()
        .filter(|e| e.event == "output")
        .flat_map(|e| BASE64.decode(e.data["data"].as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_follows_as_bytes_and_events_show_the_states_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let agent = FakeAgent::online(&master, "pi-1", 0x11).await;
    let changes = Events::open(&master, "/api/events", &[]);

    let (status, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["echo"] }));
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    let mut agent = agent;
    let spec = agent.start().await;
    let task = spec.task;
    let follow = Events::open(&master, &format!("/api/tasks/{id}/output?follow=1"), &[]);
    agent.event(1, EventKind::Accepted { task }).await;
    agent.event(2, EventKind::Started { task, pid: 9 }).await;
    // "é" is C3 A9: its two bytes in two chunks.
    let chunks: [&[u8]; 2] = [b"a\xC3", b"\xA9b\n"];
    let mut offset = 0;
    for (seq, data) in (3..).zip(chunks) {
        let output = EventKind::Output {
            task,
            stream: Stream::Stdout,
            offset,
            data: heapless::Vec::from_slice(data).unwrap(),
        };
        agent.event(seq, output).await;
        offset += data.len() as u64;
    }
    let err = EventKind::Output {
        task,
        stream: Stream::Stderr,
        offset: 0,
        data: heapless::Vec::from_slice(b"oops").unwrap(),
    };
    agent.event(5, err).await;
    let finished = EventKind::Finished {
        task,
        exit: Exit::Code(3),
        cause: None,
        output_dropped: 0,
    };
    agent.event(6, finished).await;

    let followed = follow.until("end");
    assert_eq!(decoded(&followed), "aéb\n".as_bytes(), "{followed:?}");
    let last_output = followed.iter().rfind(|e| e.event == "output").unwrap();
    assert_eq!(last_output.id.as_deref(), Some("5"));
    let end = followed.last().unwrap();
    assert_eq!(end.data["state"], "failed", "{end:?}");
    assert_eq!(end.data["outcome"]["exit"], json!({ "Code": 3 }), "{end:?}");

    // The raw bytes, whole, with the next offset; `since` starts inside the character.
    let (status, headers, body) = raw(&master, &format!("/api/tasks/{id}/output?format=raw"));
    assert_eq!(status, 200);
    assert_eq!(body, "aéb\n".as_bytes());
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(header(&headers, "tether-output-next"), Some("5"));
    let (_, headers, body) = raw(
        &master,
        &format!("/api/tasks/{id}/output?format=raw&since=2"),
    );
    assert_eq!(body, b"\xA9b\n");
    assert_eq!(header(&headers, "tether-output-next"), Some("5"));
    let (_, _, body) = raw(
        &master,
        &format!("/api/tasks/{id}/output?format=raw&stream=stderr"),
    );
    assert_eq!(body, b"oops");
    let (status, _, _) = raw(
        &master,
        &format!("/api/tasks/{id}/output?format=raw&stream=fd3"),
    );
    assert_eq!(status, 422);
    // The JSON answer the CLI reads is unchanged.
    let (status, v) = master.get(&format!("/api/tasks/{id}/output"));
    assert_eq!(status, 200);
    assert_eq!(v["chunks"].as_array().unwrap().len(), 3, "{v}");

    // A follow resumed at offset 2 (as after a drop) gets the rest, then the end.
    let resumed = Events::open(
        &master,
        &format!("/api/tasks/{id}/output?follow=1"),
        &[("Last-Event-ID", "2")],
    )
    .until("end");
    assert_eq!(decoded(&resumed), b"\xA9b\n");
    assert_eq!(resumed[0].data["offset"], 2);

    // The task's states in order, one event per change, ids growing.
    let seen = changes.until("attempt");
    let mut states = vec![];
    let mut last_id = 0;
    let mut all = seen.clone();
    loop {
        let e = changes.next();
        all.push(e.clone());
        if e.event == "task" && e.data["state"] == "failed" {
            break;
        }
    }
    for e in &all {
        let n: u64 = e.id.as_deref().unwrap().parse().unwrap();
        assert!(n > last_id, "{all:?}");
        last_id = n;
        if e.event == "task" && e.data["task"] == id {
            states.push(e.data["state"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        states.first().map(String::as_str),
        Some("pending"),
        "{all:?}"
    );
    assert_eq!(states.last().map(String::as_str), Some("failed"), "{all:?}");
    assert!(
        all.iter()
            .any(|e| e.event == "attempt_started" && e.data["task"] == id)
    );
    let outputs: Vec<_> = all.iter().filter(|e| e.event == "output").collect();
    assert_eq!(outputs.len(), 3, "{all:?}");
    assert_eq!(outputs[0].data["len"], 2);
    assert_eq!(outputs[2].data["stream"], "stderr");

    // Resuming after the first notice replays the rest from the kept ones, in order.
    let first = all[0].id.clone().unwrap();
    let replay = Events::open(&master, "/api/events", &[("Last-Event-ID", &first)]);
    let again = replay.next();
    assert_eq!(again.id, all[1].id, "{again:?}");
    let (status, _, _) = raw(&master, "/api/events?since=nope");
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_the_kept_notices_is_told_lagged_and_streams_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let mut agent = FakeAgent::online(&master, "pi-1", 0x11).await;
    let (status, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["yes"] }));
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    let spec = agent.start().await;
    let task = spec.task;
    agent.event(1, EventKind::Accepted { task }).await;
    // More output notices than the master keeps (1024), one byte each.
    const CHUNKS: u64 = 1100;
    for i in 0..CHUNKS {
        let output = EventKind::Output {
            task,
            stream: Stream::Stdout,
            offset: i,
            data: heapless::Vec::from_slice(b"y").unwrap(),
        };
        agent.event(2 + i, output).await;
    }
    master.wait_for(&format!("/api/tasks/{id}"), "every chunk stored", |v| {
        v["events"].as_array().unwrap().len() as u64 == 1 + CHUNKS
    });
    // From the very start: the oldest are gone, so `lagged` comes first, then what is kept.
    let behind = Events::open(&master, "/api/events?since=0", &[]);
    let first = behind.next();
    assert_eq!(first.event, "lagged", "{first:?}");
    assert!(first.data["missed"].as_u64().unwrap() > 0, "{first:?}");
    let kept = behind.next();
    assert!(kept.id.is_some() && kept.event != "lagged", "{kept:?}");

    // Streams are capped: the 64 open ones hold every slot, the next is refused.
    let mut open = vec![behind];
    while open.len() < 64 {
        open.push(Events::open(&master, "/api/events", &[]));
    }
    let (status, _, body) = raw(&master, "/api/events");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "unavailable", "{v}");
    // A slot is free again once a client leaves.
    drop(open.pop());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, headers) = open_and_close(&master);
        if status == 200 {
            assert_eq!(header(&headers, "content-type"), Some("text/event-stream"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no slot freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /api/events`, the status and headers only, then hangs up.
fn open_and_close(master: &MasterProc) -> (u16, Vec<(String, String)>) {
    let (status, headers, _) = open(master, "/api/events", &[]);
    (status, headers)
}
