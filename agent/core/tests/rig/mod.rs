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
