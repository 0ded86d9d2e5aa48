//! The agent state machine driven by hand, shared by the test binaries: a rig whose disk is
//! instant, the test fleet's keys and task specs.
#![allow(dead_code)]

use tether_core::Instant;
use tether_core::agent::{Action, Agent, Auth, Config, Signal};
use tether_core::auth::{Hex, MasterKeys, SigningKey, mac};
use tether_core::journal::{self, JournalRecord};
use tether_core::message::*;
use tether_core::policy::{OnDisconnect, Policy};
use tether_core::wire;

pub(crate) type TestAgent = Agent<4, 8>;

pub(crate) const CMD: &str = "tether/agent/pi-1/cmd";

pub(crate) fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

pub(crate) fn master_key() -> SigningKey {
    SigningKey::from_seed([7; 32]).unwrap()
}

/// A presence text as the agent publishes it: with its MAC.
pub(crate) fn own_presence(text: &str) -> Vec<u8> {
    let tag = mac(&[9; 32], PRESENCE, text.as_bytes());
    format!("{text} {}", Hex(&tag)).into_bytes()
}

pub(crate) const PRESENCE: &str = "tether/agent/pi-1/presence";
/// The identity of the rig agent's journal; commands name it.
pub(crate) const JOURNAL: u32 = 0x7e57;

pub(crate) fn config(incarnation: u32) -> Config<'static> {
    Config {
        id: "pi-1",
        prefix: "tether",
        incarnation,
        journal: JOURNAL,
        auth: Auth::Keys {
            master: MasterKeys::from_keys(&[master_key().public_key()]).unwrap(),
            agent: [9; 32],
        },
    }
}

/// Drives an agent like a runtime whose disk is instant: appends become durable at once.
/// `TASKS` and `SEEN` are the agent's capacities ([`TestAgent`]'s by default).
pub(crate) struct Rig<const TASKS: usize = 4, const SEEN: usize = 8> {
    pub(crate) agent: Agent<TASKS, SEEN>,
    pub(crate) journal: Vec<Vec<u8>>,
    pub(crate) actions: Vec<Action>,
    pub(crate) counter: u64,
}

impl Rig {
    pub(crate) fn new() -> Self {
        Self::sized()
    }
}

impl<const TASKS: usize, const SEEN: usize> Rig<TASKS, SEEN> {
    /// A rig for an agent of other capacities: `Rig::<32, 64>::sized()`.
    pub(crate) fn sized() -> Self {
        Self::with_agent(0xabcd, t(0), Vec::new(), 0)
    }

    fn with_agent(incarnation: u32, now: Instant, journal: Vec<Vec<u8>>, counter: u64) -> Self {
        let mut agent = Agent::new(config(incarnation), now).unwrap();
        agent.handle_wall_clock(t(0), 1_000_000);
        Self {
            agent,
            journal,
            actions: Vec::new(),
            counter,
        }
    }

    /// A new agent process that replays this one's journal, restored and drained at `now`; it
    /// keeps writing to the same journal, and the master goes on counting.
    pub(crate) fn restart(&self, now: Instant) -> Self {
        self.restart_with(now, |_| {})
    }

    /// [`Rig::restart`], with `setup` applied to the new agent before it replays the journal
    /// (the runtime's settings: allowlist, `max_tasks`).
    pub(crate) fn restart_with(
        &self,
        now: Instant,
        setup: impl FnOnce(&mut Agent<TASKS, SEEN>),
    ) -> Self {
        let mut fresh = Self::with_agent(0xabce, now, self.journal.clone(), self.counter);
        setup(&mut fresh.agent);
        for bytes in &self.journal {
            fresh.agent.restore(&journal::decode(bytes).unwrap());
        }
        fresh.agent.finish_restore(now);
        fresh.drain(now);
        fresh
    }

    /// Rewrites the journal as a compaction does: the agent's snapshot, then the events the
    /// master has not acknowledged.
    pub(crate) fn compact(&mut self) {
        let encode = |record: &JournalRecord| {
            let mut buf = [0u8; journal::MAX_RECORD];
            journal::encode(record, &mut buf).unwrap().to_vec()
        };
        let mut compacted = Vec::new();
        self.agent.snapshot(|record| compacted.push(encode(record)));
        let acked = self.agent.acked_seq();
        compacted.extend(self.journal.iter().filter_map(|bytes| {
            match journal::decode(bytes).unwrap() {
                JournalRecord::Event(e) if e.seq > acked => Some(bytes.clone()),
                _ => None,
            }
        }));
        self.journal = compacted;
    }

    pub(crate) fn drain(&mut self, now: Instant) {
        loop {
            let mut last_lsn = None;
            while let Some(action) = self.agent.poll_action() {
                if let Action::Append { lsn, record } = &action {
                    let mut buf = [0u8; journal::MAX_RECORD];
                    let bytes = self.agent.encode_append(record, &mut buf).unwrap();
                    self.journal.push(bytes.to_vec());
                    last_lsn = Some(*lsn);
                }
                self.actions.push(action);
            }
            match last_lsn {
                Some(lsn) => self.agent.handle_journaled(now, lsn),
                None => break,
            }
        }
    }

    pub(crate) fn command(&mut self, now: Instant, body: CommandBody) {
        self.counter += 1;
        let msg = Message::Command(Command {
            epoch: 1,
            counter: self.counter,
            journal: JOURNAL,
            body,
        });
        let mut buf = [0u8; wire::MAX_MESSAGE];
        let bytes = wire::encode_signed(&msg, CMD, &master_key(), &mut buf).unwrap();
        self.agent.handle_message(now, CMD, bytes);
        self.drain(now);
    }

    pub(crate) fn master_heartbeat(&mut self, now: Instant) {
        self.counter += 1;
        let msg = Message::MasterHeartbeat(MasterHeartbeat {
            epoch: 1,
            counter: self.counter,
            period_ms: 1_000,
        });
        let topic = "tether/master/heartbeat";
        let mut buf = [0u8; 128];
        let bytes = wire::encode_signed(&msg, topic, &master_key(), &mut buf).unwrap();
        self.agent.handle_message(now, topic, bytes);
        self.drain(now);
    }

    /// Runs timers up to `until`, stepping to each wake-up.
    pub(crate) fn run_until(&mut self, until: Instant) {
        while let Some(next) = self.agent.poll_timeout() {
            if next > until {
                break;
            }
            self.agent.handle_timeout(next);
            self.drain(next);
        }
    }

    pub(crate) fn events(&self) -> Vec<EventKind> {
        self.journal
            .iter()
            .filter_map(|r| match journal::decode(r).unwrap() {
                JournalRecord::Event(e) => Some(e.kind),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}

pub(crate) fn spec(attempt: u64, on_disconnect: OnDisconnect) -> TaskSpec {
    TaskSpec {
        task: TaskRef {
            task: attempt,
            attempt,
        },
        policy: Policy {
            on_disconnect,
            heartbeat_period_ms: 1_000,
            heartbeat_timeout_ms: 3_000,
            grace_ms: 500,
            max_run_ms: 0,
            output_cap: 10,
        },
        start_at_unix_ms: None,
        argv: StrList::from_items(["/bin/true"]).unwrap(),
        env: StrList::new(),
        cwd: heapless::String::new(),
    }
}

pub(crate) fn spawns(actions: &[Action]) -> Vec<TaskRef> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Spawn(t) = a {
                Some(*t)
            } else {
                None
            }
        })
        .collect()
}

pub(crate) fn signals(actions: &[Action]) -> Vec<Signal> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Signal { signal, .. } = a {
                Some(*signal)
            } else {
                None
            }
        })
        .collect()
}

/// Wall-clock milliseconds of the rig's `t(0)`.
pub(crate) const WALL0: u64 = 1_000_000;
pub(crate) const MINUTE: u64 = 60_000;
pub(crate) const HOUR: u64 = 3_600_000;
pub(crate) const DAY: u64 = 24 * HOUR;

/// The monotonic instant at which the rig's wall clock (as set at `t(0)`) reads `unix_ms`.
pub(crate) fn at_wall(unix_ms: u64) -> Instant {
    t(unix_ms - WALL0)
}

/// Drives a rig like a runtime whose task processes each run `run_ms`: timers at their time,
/// exits when due, every spawn recorded with the instant (ms) it happened at.
#[derive(Debug, Default)]
pub(crate) struct Runner {
    pub(crate) now: u64,
    pub(crate) run_ms: u64,
    /// (exit at, attempt)
    pub(crate) running: Vec<(u64, TaskRef)>,
    /// (spawned at, attempt)
    pub(crate) spawned: Vec<(u64, TaskRef)>,
    /// The most task slots held at once.
    pub(crate) most_slots: usize,
    /// The latest heartbeat the agent published: (incarnation, counter).
    pub(crate) heartbeat: Option<(u32, u32)>,
}

impl Runner {
    pub(crate) fn new(now: u64, run_ms: u64) -> Self {
        Self {
            now,
            run_ms,
            ..Self::default()
        }
    }

    /// Runs timers and exits up to `until` (ms of the monotonic clock).
    pub(crate) fn run<const T: usize, const S: usize>(&mut self, rig: &mut Rig<T, S>, until: u64) {
        for _ in 0..1_000_000 {
            self.take_spawns(rig);
            let timer = rig.agent.poll_timeout().map(|i| i.as_millis());
            let exit = self.running.iter().map(|r| r.0).min();
            let next = match (timer, exit) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(n) => n,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            if exit.is_some_and(|e| e <= now) {
                let (done, left): (Vec<_>, Vec<_>) =
                    self.running.drain(..).partition(|(e, _)| *e <= now);
                self.running = left;
                for (_, task) in done {
                    rig.agent.handle_process_exited(t(now), task, Exit::Code(0));
                    rig.drain(t(now));
                }
            } else {
                rig.agent.handle_timeout(t(now));
                rig.drain(t(now));
            }
        }
        self.take_spawns(rig);
        self.now = self.now.max(until);
    }

    /// Spawns asked for become running processes now.
    pub(crate) fn take_spawns<const T: usize, const S: usize>(&mut self, rig: &mut Rig<T, S>) {
        let now = self.now;
        for action in rig.take_actions() {
            if let Action::Publish { payload, .. } = &action
                && let Ok(Message::AgentHeartbeat(hb)) = wire::decode(payload)
            {
                self.heartbeat = Some((hb.incarnation, hb.counter));
            }
            if let Action::Spawn(task) = action {
                rig.agent.handle_process_started(t(now), task, 100);
                rig.drain(t(now));
                self.running.push((now + self.run_ms, task));
                self.spawned.push((now, task));
                self.most_slots = self.most_slots.max(rig.agent.tasks().count());
            }
        }
    }
}

/// A hand-over of `schedule` under ids `base` (occurrence k runs as task and attempt
/// `base + 1 + k`), `count` occurrences every `period_ms` from `first`.
pub(crate) fn handover(
    schedule: u64,
    base: u64,
    first: u64,
    period_ms: u64,
    count: u32,
    missed: Missed,
) -> ScheduleSpec {
    let mut runs = heapless::Vec::new();
    runs.push(Run {
        first_unix_ms: first,
        period_ms,
        count,
    })
    .unwrap();
    ScheduleSpec {
        schedule,
        spec: spec(base, OnDisconnect::Continue),
        runs,
        missed,
        late_ms: MINUTE,
    }
}

impl<const TASKS: usize, const SEEN: usize> Rig<TASKS, SEEN> {
    pub(crate) fn schedule(&mut self, now: Instant, spec: ScheduleSpec) {
        self.command(now, CommandBody::Schedule(spec));
    }

    /// Every `Missed` event journaled: (first, count).
    pub(crate) fn missed(&self) -> Vec<(u64, u64)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                EventKind::Missed { first, count, .. } => Some((first, count)),
                _ => None,
            })
            .collect()
    }

    /// Every `Clock` event journaled.
    pub(crate) fn clock_reports(&self) -> Vec<bool> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                EventKind::Clock { trusted } => Some(trusted),
                _ => None,
            })
            .collect()
    }

    /// How `task` ended, if it did.
    pub(crate) fn end_of(&self, task: TaskRef) -> Option<(Exit, Option<KillCause>)> {
        self.events().into_iter().find_map(|e| match e {
            EventKind::Finished {
                task: t,
                exit,
                cause,
                ..
            } if t == task => Some((exit, cause)),
            _ => None,
        })
    }

    /// The latest heartbeat the agent published: (incarnation, counter).
    pub(crate) fn last_heartbeat(&self) -> Option<(u32, u32)> {
        self.actions.iter().rev().find_map(|a| match a {
            Action::Publish { payload, .. } => match wire::decode(payload) {
                Ok(Message::AgentHeartbeat(hb)) => Some((hb.incarnation, hb.counter)),
                _ => None,
            },
            _ => None,
        })
    }

    /// The master's clock, `unix_ms`, answering heartbeat `heartbeat` of `incarnation`.
    pub(crate) fn master_clock(
        &mut self,
        now: Instant,
        unix_ms: u64,
        (incarnation, heartbeat): (u32, u32),
    ) {
        self.command(
            now,
            CommandBody::Clock {
                unix_ms,
                incarnation,
                heartbeat,
            },
        );
    }
}
