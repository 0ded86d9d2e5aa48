//! Reading the master's server-sent event streams (`/api/events`, a followed task output):
//! a line parser for `text/event-stream` and a subscription that resumes where it left off.
//!
//! The parser is the format's few rules (fields `event`, `data`, `id`; comments; a blank line
//! ends an event) over a blocking reader: the SSE crates are built on async streams, which
//! would bring an async runtime into a CLI that makes blocking calls.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::client::{Api, Failure};

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// `event:`; `message` when the field is absent.
    pub(crate) kind: String,
    pub(crate) id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
}

/// Collects fields until a blank line completes an event.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    kind: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Takes one line (without its line end); the event it completes, if any.
    pub(crate) fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(Event {
                kind: self.kind.take().unwrap_or_else(|| "message".into()),
                id: self.id.take(),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.kind = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// What [`Subscription::next`] gives.
#[derive(Debug)]
pub(crate) enum Next {
    Event(Event),
    /// The stream ended, went quiet past the keep-alives, or the master said it stops; the
    /// subscription reconnects on the next call.
    Gone(String),
}

/// The master sends a keep-alive every 15 s: this much silence means the connection is dead
/// (a host that vanished sends no reset).
const SILENCE: Duration = Duration::from_secs(40);
/// How long reconnecting may fail before the command gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

/// An event stream that reconnects, passing the last event id (`since`) to resume.
pub(crate) struct Subscription {
    api: Api,
    /// The route; `since=<last id>` is appended on a reconnect.
    path: String,
    pub(crate) since: Option<String>,
    events: Option<mpsc::Receiver<Result<Event, String>>>,
}

impl Subscription {
    /// Connects at once, so a refused route (404, 403, 503) is the command's error.
    pub(crate) fn open(api: Api, path: &str, since: Option<String>) -> Result<Self, Failure> {
        let mut s = Self {
            api,
            path: path.to_owned(),
            since,
            events: None,
        };
        s.connect()?;
        Ok(s)
    }

    /// Drops the connection; the next [`Self::next`] reconnects from `since`.
    pub(crate) fn resume_from(&mut self, since: Option<String>) {
        self.since = since;
        self.events = None;
    }

    fn connect(&mut self) -> Result<(), Failure> {
        let path = match &self.since {
            Some(id) => {
                let sep = if self.path.contains('?') { '&' } else { '?' };
                format!("{}{sep}since={id}", self.path)
            }
            None => self.path.clone(),
        };
        let body = self.api.stream(&path, "text/event-stream")?;
        self.events = Some(read_events(body));
        Ok(())
    }

    /// The next event, reconnecting as needed; an error once the master stayed unreachable for
    /// [`GIVE_UP`].
    pub(crate) fn next(&mut self) -> Result<Next, Failure> {
        let mut failing_since: Option<Instant> = None;
        loop {
            let Some(events) = &self.events else {
                match self.connect() {
                    Ok(()) => continue,
                    Err(e) => {
                        let first = *failing_since.get_or_insert_with(Instant::now);
                        if first.elapsed() > GIVE_UP {
                            return Err(Failure(format!("lost the master: {}", e.0)));
                        }
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            };
            let gone = match events.recv_timeout(SILENCE) {
                Ok(Ok(event)) if event.kind == "closing" => "the master is stopping".to_owned(),
                Ok(Ok(event)) => {
                    if let Some(id) = &event.id {
                        self.since = Some(id.clone());
                    }
                    return Ok(Next::Event(event));
                }
                Ok(Err(e)) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => "the stream went quiet".into(),
                Err(mpsc::RecvTimeoutError::Disconnected) => "the stream ended".into(),
            };
            // The reader thread of a quiet stream may stay blocked; it ends with the process.
            self.events = None;
            return Ok(Next::Gone(gone));
        }
    }
}

/// Parses `body` on a thread of its own, so a silent connection can be given up on.
fn read_events(body: impl Read + Send + 'static) -> mpsc::Receiver<Result<Event, String>> {
    let (tx, rx) = mpsc::sync_channel(16);
    std::thread::spawn(move || {
        let mut parser = Parser::default();
        let mut reader = BufReader::new(body);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    let trimmed = line.trim_end_matches(['\n', '\r']);
                    if let Some(event) = parser.line(trimmed)
                        && tx.send(Ok(event)).is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("reading the stream: {e}")));
                    return;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Event> {
        let mut p = Parser::default();
        text.split('\n').filter_map(|l| p.line(l)).collect()
    }

    #[test]
    fn fields_comments_and_multi_line_data() {
        let events = parse(
            ": keep-alive\n\nevent: task\nid: 7\ndata: {\"a\":1}\n\ndata:x\ndata: y\nretry: 5\n\n",
        );
        assert_eq!(
            events,
            [
                Event {
                    kind: "task".into(),
                    id: Some("7".into()),
                    data: "{\"a\":1}".into()
                },
                Event {
                    kind: "message".into(),
                    id: None,
                    data: "x\ny".into()
                },
            ]
        );
        // A comment alone, or fields without data, dispatch nothing.
        assert!(parse(": x\n\nevent: end\n\n").is_empty());
    }
}
