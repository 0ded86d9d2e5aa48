//! What a [`World`](super::World) is made of and told: its configuration, the scripted steps,
//! and the master side's interface ([`SimMaster`]), which the scripted master and the real
//! master core both implement.

use std::collections::BTreeMap;
use std::fmt;

use tether_agent::config::{DEFAULT_JOURNAL_MAX_BYTES, DEFAULT_MAX_TASKS};
use tether_agent::executor::CoreAgent;
use tether_core::message::{Event, TaskRef, TaskSpec};
use tether_core::policy::{OnDisconnect, Policy};
use tether_core::{Duration, Instant};

use super::WALL0_MS;
use crate::sim::broker::BrokerConfig;
use crate::sim::client::ClientEvent;
use crate::sim::invariants::{Ledger, Violation};
use crate::sim::link::{Fault, LinkConfig};
use crate::sim::net::{ClientKey, Net};
use crate::sim::procs::Procs;

#[derive(Debug, Clone)]
pub struct WorldConfig {
    pub seed: u64,
    pub agents: usize,
    pub prefix: String,
    pub broker: BrokerConfig,
    pub link: LinkConfig,
    pub master_period: Duration,
    /// Each journal append is durable `min..=max` after it is written.
    pub disk_delay: (Duration, Duration),
    /// The agents' `journal_max_bytes` and `max_tasks` (the binary's defaults unless set).
    pub journal_max_bytes: u64,
    pub max_tasks: usize,
    /// The command that replays this run, printed with every violation.
    pub replay: String,
}

impl WorldConfig {
    /// `agents` agents (`pi-0`, `pi-1`, ...), rumqttd, a 5 ms link, master period 10 s.
    pub fn new(seed: u64, agents: usize) -> Self {
        Self {
            seed,
            agents,
            prefix: "tether".into(),
            broker: BrokerConfig::rumqttd(),
            link: LinkConfig {
                latency: Duration::from_millis(5),
                ..LinkConfig::default()
            },
            master_period: Duration::from_secs(10),
            disk_delay: (Duration::from_millis(1), Duration::from_millis(20)),
            journal_max_bytes: DEFAULT_JOURNAL_MAX_BYTES,
            max_tasks: DEFAULT_MAX_TASKS as usize,
            replay: format!("TETHER_SIM_SEED={seed} cargo test -p tether-tests -- --nocapture"),
        }
    }

    pub fn replay(mut self, command: impl Into<String>) -> Self {
        self.replay = command.into();
        self
    }
}

/// Whose network path a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Master,
    Agent(usize),
    Everyone,
}

/// Something scripted for an instant; `O` is what the master takes as orders
/// ([`SimMaster::Order`]).
#[derive(Debug, Clone)]
pub enum Step<O = ScriptOrder> {
    Fault(Who, Fault),
    /// The broker restarts and forgets sessions, queues and retained messages (a switch to a
    /// fresh broker looks the same to its clients).
    RestartBroker,
    /// kill -9 or power loss: only the durable prefix of the journal survives.
    CrashAgent(usize),
    /// The agent's storage is gone too; invariants 1 and 2 exclude it from then on.
    LoseAgentDisk(usize),
    /// A new agent process: new incarnation, journal replayed.
    RestartAgent(usize),
    /// A normal stop (`handle_stop` with this drain time): the agent drains, announces
    /// `offline ... stopped` and disconnects cleanly; [`Step::RestartAgent`] starts it again.
    StopAgent(usize, Duration),
    MasterDown,
    MasterUp,
    /// The master's store fails (`Some`) or works again (`None`); only a master with a store
    /// (the real master core) minds.
    Store(Option<Outage>),
    /// A request to the master (submit, kill, ...), taken when the step is due.
    Order(O),
}

/// How the master's store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Nothing answers (the database server is down or cut off): no write, no read.
    Unreachable,
    /// Reads work, writes fail (a full disk, a read-only database).
    RefusesWrites,
}

/// What the scripted master is asked to do.
#[derive(Debug, Clone)]
pub enum ScriptOrder {
    Submit(usize, Box<TaskSpec>),
    Kill(TaskRef),
}

/// The master side of a [`World`]: its connection is the net client [`SimMaster::key`]; the
/// world feeds it that client's events and its timers, and asks it what it stored.
pub trait SimMaster {
    type Order: fmt::Debug + Clone;

    fn key(&self) -> ClientKey;
    fn is_connected(&self) -> bool;
    fn poll_timeout(&self) -> Option<Instant>;
    /// The master process starts (again); nothing if it is up.
    fn start(&mut self, net: &mut Net, now: Instant) -> Result<(), Violation>;
    /// kill -9: memory gone, the store stays.
    fn crash(&mut self, net: &mut Net, now: Instant);
    fn order(&mut self, net: &mut Net, order: Self::Order, now: Instant) -> Result<(), Violation>;
    fn handle_event(
        &mut self,
        net: &mut Net,
        event: ClientEvent,
        now: Instant,
    ) -> Result<(), Violation>;
    /// Timers due by `now`, then whatever the step's inputs left to send.
    fn handle_timeout(&mut self, net: &mut Net, now: Instant) -> Result<(), Violation>;
    /// Master-side invariants after a step, knowing what the agents did.
    fn check(&mut self, _agents: &Observed<'_>, _now: Instant) -> Result<(), Violation> {
        Ok(())
    }
    /// Events stored for agent `i`, by the master's sequence.
    fn store(&self, i: usize) -> &BTreeMap<u64, Event>;
    /// The master's sequence for event 0 of agent `i`'s current journal.
    fn seq_base(&self, i: usize) -> u64;
    /// Agent `i`'s events are stored without a gap up to here.
    fn contiguous(&self, i: usize) -> u64;
    /// Two different events received under one (agent, seq), with the agent.
    fn conflicts(&self) -> &[(usize, String)];
    /// The attempt's order as the master sent it, if the world did not script it.
    fn spec(&self, _task: TaskRef) -> Option<&TaskSpec> {
        None
    }
    /// A line on why the world has not healed yet.
    fn describe(&self) -> String;
    /// The store fails or works again (see [`Step::Store`]).
    fn set_store_outage(&mut self, _outage: Option<Outage>, _net: &mut Net, _now: Instant) {}
}

/// What the agents did, for the master's checks.
#[derive(Debug)]
pub struct Observed<'a> {
    pub ledger: &'a Ledger,
    /// Per agent: its core, unless crashed or stopped.
    pub agents: Vec<Option<&'a CoreAgent>>,
    pub procs: Vec<&'a Procs>,
}

/// Unix milliseconds of a virtual instant.
pub fn wall_ms(at: Instant) -> u64 {
    WALL0_MS + at.as_millis()
}

/// A policy with the given behaviour and heartbeat settings (grace 5 s, no run limit).
pub fn policy(on_disconnect: OnDisconnect, period: Duration, timeout: Duration) -> Policy {
    Policy {
        on_disconnect,
        heartbeat_period_ms: period.as_millis(),
        heartbeat_timeout_ms: timeout.as_millis(),
        grace_ms: 5_000,
        max_run_ms: 0,
        output_cap: 1 << 20,
    }
}
