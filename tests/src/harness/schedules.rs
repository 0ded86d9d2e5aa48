//! Schedules on the real master: defined, read, paused and deleted through
//! [`MasterProcess`]'s HTTP API; an agent's trust in its wall clock read from its log; the
//! marks of an interval schedule's occurrences (see [`super::orders::Markers`]) matched to the
//! slots of its calendar; and the on-time figures of their starts.

use std::time::Duration;

use serde_json::{Value, json};

use super::agent::AgentProcess;
use super::master_proc::MasterProcess;
use super::orders::Mark;
use super::plain_http;

impl MasterProcess {
    /// `POST /api/schedules` (a [`every`] body, or any `ScheduleRequest`); its answer.
    pub fn define_schedule(&self, body: &Value) -> Value {
        self.post("/api/schedules", body)
    }

    /// `GET /api/schedules/NAME` with up to 1,000 of its latest occurrence tasks:
    /// `{schedule, next, handovers, occurrences, history}`.
    pub fn schedule(&self, name: &str) -> Value {
        self.get(&format!("/api/schedules/{name}?recent=1000"))
    }

    /// `POST /api/schedules/NAME/pause`, or `/resume`.
    pub fn pause_schedule(&self, name: &str, paused: bool) -> Value {
        let verb = if paused { "pause" } else { "resume" };
        self.post(&format!("/api/schedules/{name}/{verb}"), &json!({}))
    }

    /// `DELETE /api/schedules/NAME`.
    pub fn delete_schedule(&self, name: &str) -> Value {
        let path = format!("/api/schedules/{name}");
        self.call("DELETE", &path, None)
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}\n{}", self.log()))
    }

    /// Waits (at most [`super::WAIT`]) until an agent holds a hand-over of schedule `name`;
    /// that hand-over.
    pub async fn wait_handover_held(&self, name: &str) -> Value {
        let path = format!("/api/schedules/{name}");
        self.wait_for(&format!("schedule {name} held"), &path, |v| {
            v["handovers"]
                .as_array()?
                .iter()
                .find(|h| h["state"] == "held")
                .cloned()
        })
        .await
    }

    /// Waits (at most [`super::WAIT`]) until schedule `name` has at least `n` occurrence tasks
    /// and every one has ended; those occurrences, oldest first.
    pub async fn wait_occurrences_ended(&self, name: &str, n: usize) -> Vec<Value> {
        let path = format!("/api/schedules/{name}?recent=1000");
        let what = format!("{n} occurrences of {name} ended");
        self.wait_for(&what, &path, |v| {
            let all = v["occurrences"].as_array()?;
            let ended = all.iter().all(|o| {
                let state = o["state"].as_str().unwrap_or("");
                super::master_proc::is_terminal(state)
            });
            (all.len() >= n && ended).then(|| all.clone())
        })
        .await
    }

    /// The value of an unlabelled sample `name` in `GET /metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (status, text) =
            plain_http::request(&self.http, Some(&self.token), "GET", "/metrics", None).ok()?;
        (status == 200).then_some(())?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits (at most [`super::WAIT`]) until sample `name` of `GET /metrics` reads `value`.
    pub async fn wait_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        loop {
            let now = self.metric(name);
            if now == Some(value) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} reads {now:?}, not {value}, after {:?}",
                super::WAIT
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A schedule body: `argv` on `agent` every `every_ms` from `start_ms` (Unix ms), occurrences
/// not started within `late_ms` of their time handled by `missed` (`skip`, `once`, `all`).
pub fn every(
    name: &str,
    agent: &str,
    argv: &[&str],
    (start_ms, every_ms): (u64, u64),
    missed: &str,
    late_ms: u64,
) -> Value {
    json!({
        "name": name,
        "calendar": { "every_ms": every_ms, "start_ms": start_ms },
        "agent": agent,
        "argv": argv,
        "missed": missed,
        "late_ms": late_ms,
    })
}

/// Waits (at most [`super::WAIT`]) until the agent trusts its wall clock: the kernel said NTP
/// synchronised it at the start, or the master's clock confirmed or corrected it since (the
/// agent logs both). A host whose kernel is not synchronised (a container, this CI) trusts
/// only the master's clock, which answers the agent's first fresh heartbeat.
pub async fn wait_clock_trusted(agent: &AgentProcess) {
    let deadline = tokio::time::Instant::now() + super::WAIT;
    loop {
        let log = agent.log();
        let trusted = log.lines().any(|l| {
            l.contains("clock: trusted; start times")
                || l.contains("clock: trusted while NTP has it synchronised (now: synchronised)")
        });
        if trusted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent does not trust its clock after {:?}",
            super::WAIT
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The occurrence times of an interval calendar: `start_ms + k × every_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pub start_ms: u64,
    pub every_ms: u64,
}

impl Slots {
    /// The first slot at least `lead` from now, so a schedule defined now holds all of it.
    pub fn from_now(every_ms: u64, lead: Duration) -> Self {
        let now = super::orders::unix_ns() / 1_000_000;
        let at = now as u64 + lead.as_millis() as u64;
        Self {
            start_ms: at.div_ceil(every_ms) * every_ms,
            every_ms,
        }
    }

    /// Slot `k`'s time, Unix ms.
    pub fn at_ms(&self, k: u64) -> u64 {
        self.start_ms + k * self.every_ms
    }

    /// The slot a start at `at_ns` belongs to (the latest at or before it) and how late it
    /// is; `None` before the first slot.
    pub fn of(&self, at_ns: u128) -> Option<(u64, Duration)> {
        let start_ns = u128::from(self.start_ms) * 1_000_000;
        let since = at_ns.checked_sub(start_ns)?;
        let every_ns = u128::from(self.every_ms) * 1_000_000;
        let k = (since / every_ns) as u64;
        let late = Duration::from_nanos((since % every_ns) as u64);
        Some((k, late))
    }

    /// The slot that is due next at `at_ns` (the first at or after it).
    pub fn next_at(&self, at_ns: u128) -> u64 {
        match self.of(at_ns) {
            Some((k, late)) if late.is_zero() => k,
            Some((k, _)) => k + 1,
            None => 0,
        }
    }

    /// How long from `at_ns` until `phase` into the slot after it (a point between two
    /// occurrences, for a fault that must not fall on one).
    pub fn until_phase(&self, at_ns: u128, phase: Duration) -> Duration {
        let k = self.next_at(at_ns);
        let target = u128::from(self.at_ms(k)) * 1_000_000 + phase.as_nanos();
        Duration::from_nanos((target.saturating_sub(at_ns)) as u64)
    }

    /// Each mark by its slot, with its lateness; panics on a mark before the first slot or
    /// two marks in one slot (an occurrence run twice).
    pub fn by_slot(&self, marks: &[Mark]) -> std::collections::BTreeMap<u64, Duration> {
        let mut out = std::collections::BTreeMap::new();
        for m in marks {
            let (k, late) = self
                .of(m.at_ns)
                .unwrap_or_else(|| panic!("{m:?} before the first slot {}", self.start_ms));
            let twice = out.insert(k, late);
            assert!(
                twice.is_none(),
                "slot {k} ({}) ran twice: {marks:?}",
                self.at_ms(k)
            );
        }
        out
    }
}

/// Lateness figures of a set of starts.
#[derive(Debug, Clone, Default)]
pub struct OnTime(pub Vec<Duration>);

impl OnTime {
    fn at(&self, p: usize) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted
            .get((sorted.len().max(1) - 1) * p / 100)
            .copied()
            .unwrap_or_default()
    }

    pub fn p50(&self) -> Duration {
        self.at(50)
    }

    pub fn p99(&self) -> Duration {
        self.at(99)
    }

    pub fn max(&self) -> Duration {
        self.at(100)
    }
}

impl std::fmt::Display for OnTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{} starts, late by p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.0.len(),
            ms(self.p50()),
            ms(self.p99()),
            ms(self.max())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_fall_in_their_slots() {
        let s = Slots {
            start_ms: 10_000,
            every_ms: 2_000,
        };
        let ns = |ms: u128| ms * 1_000_000;
        assert_eq!(s.of(ns(9_999)), None);
        assert_eq!(s.of(ns(12_500)), Some((1, Duration::from_millis(500))));
        assert_eq!(s.next_at(ns(12_000)), 1);
        assert_eq!(s.next_at(ns(12_001)), 2);
        assert_eq!(
            s.until_phase(ns(12_500), Duration::from_millis(1_000)),
            Duration::from_millis(2_500)
        );
        let mark = |ms: u128| Mark {
            name: "o".into(),
            at_ns: ns(ms),
        };
        let by = s.by_slot(&[mark(10_010), mark(14_030)]);
        assert_eq!(by.keys().copied().collect::<Vec<_>>(), [0, 2]);
        let on_time = OnTime(by.into_values().collect());
        assert_eq!(on_time.max(), Duration::from_millis(30));
        assert_eq!(on_time.p50(), Duration::from_millis(10));
    }
}
