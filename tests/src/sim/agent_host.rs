//! The simulation as the host of tether-agent's executor: the same executor the agent binary
//! runs, carrying out the same core's actions over the simulated disk, network and processes.
//!
//! What stays a model, on purpose (the one list of it):
//! - **the disk**: each append is durable a random `disk_delay` after it is written, in order,
//!   whatever the sync calls (a sync answers "later"); a crash keeps the durable prefix; a
//!   rewrite is durable at once. The journal's cap and framing are the agent's own.
//! - **the network**: the model broker and client of [`super::net`]; the model client makes its
//!   subscriptions again at every CONNACK, where rumqttc makes them when the executor asks after
//!   the connect; the reconnect back-off is the model client's, not the agent's jittered one
//!   with TCP probes (their timing belongs to the network model).
//! - **processes**: programs described by their argv ([`super::procs`]), started at once.
//! - **time**: virtual; the wall clock is [`super::world::WALL0_MS`] plus virtual time.
//!
//! The host records what the executor did through it ([`Deed`]) for the oracle, which checks
//! it after each input with the core in view.

use std::convert::Infallible;

use tether_agent::executor::{AppendError, Durability, Host};
use tether_core::agent::Signal;
use tether_core::message::{TaskRef, TaskSpec};
use tether_core::topic::QoS as CoreQoS;
use tether_core::{Duration, Instant};

use super::disk::Disk;
use super::mqtt::QoS;
use super::net::{ClientKey, Net};
use super::procs::{Procs, Program};
use super::rng::Rng;
use super::world::wall_ms;

/// Something the executor did through the host during one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deed {
    /// A journal record written (durable later).
    Appended(Vec<u8>),
    /// The journal replaced by these records, durable at once (a compaction).
    Rewritten(Vec<Vec<u8>>),
    /// An attempt's process asked for (started or not).
    Spawned(TaskRef),
    Signalled(TaskRef, Signal),
}

/// One agent's machine for the length of one input.
#[derive(Debug)]
pub struct SimHost<'a> {
    pub now: Instant,
    pub key: ClientKey,
    pub net: &'a mut Net,
    pub disk: &'a mut Disk,
    pub procs: &'a mut Procs,
    /// For the run time of a task whose argv is not a simulated program.
    pub rng: &'a mut Rng,
    pub deeds: Vec<Deed>,
}

impl<'a> SimHost<'a> {
    /// Agent `key`'s machine at `now`: the shared network, its own disk and processes.
    pub fn new(
        now: Instant,
        key: ClientKey,
        net: &'a mut Net,
        disk: &'a mut Disk,
        procs: &'a mut Procs,
        rng: &'a mut Rng,
    ) -> Self {
        Self {
            now,
            key,
            net,
            disk,
            procs,
            rng,
            deeds: Vec::new(),
        }
    }
}

fn qos(q: CoreQoS) -> QoS {
    match q {
        CoreQoS::AtMostOnce => QoS::AtMostOnce,
        CoreQoS::AtLeastOnce => QoS::AtLeastOnce,
    }
}

impl Host for SimHost<'_> {
    type Error = Infallible;

    fn now(&self) -> Instant {
        self.now
    }

    fn unix_ms(&self) -> u64 {
        wall_ms(self.now)
    }

    fn append(&mut self, lsn: u64, record: &[u8]) -> Result<(), AppendError<Infallible>> {
        self.disk
            .append(lsn, record.to_vec(), self.now)
            .map_err(|_| AppendError::Full)?;
        self.deeds.push(Deed::Appended(record.to_vec()));
        Ok(())
    }

    fn sync(&mut self, _lsn: u64) -> Result<Durability, Infallible> {
        Ok(Durability::Later)
    }

    fn rewrite(&mut self, records: Vec<Vec<u8>>) -> Result<(), Infallible> {
        self.deeds.push(Deed::Rewritten(records.clone()));
        self.disk.rewrite(records, self.now);
        Ok(())
    }

    fn journal_bytes(&self) -> u64 {
        self.disk.len_bytes()
    }

    fn journal_max_bytes(&self) -> u64 {
        self.disk.max_bytes()
    }

    fn frame_len(&self, len: usize) -> u64 {
        tether_agent::journal::frame_len(len)
    }

    fn subscribe(&mut self, filters: &[(&str, CoreQoS)]) {
        for &(filter, q) in filters {
            let known = self
                .net
                .client(self.key)
                .config()
                .subscriptions
                .iter()
                .any(|(f, k)| f == filter && *k == qos(q));
            if !known {
                // A valid filter: the core built it.
                let _ = self.net.subscribe(self.key, filter, qos(q), self.now);
            }
        }
    }

    fn publish(&mut self, topic: &str, payload: &[u8], q: CoreQoS, retain: bool) -> bool {
        self.net
            .publish(
                self.key,
                topic.to_owned(),
                payload.to_vec(),
                qos(q),
                retain,
                self.now,
            )
            .is_ok()
    }

    fn spawn(&mut self, task: TaskRef, spec: &TaskSpec) -> Result<u32, i32> {
        self.deeds.push(Deed::Spawned(task));
        let program = Program::parse(&spec.argv).unwrap_or_else(|| {
            let run: Duration = self.rng.range_ms(1_000, 60_000);
            Program::new(run)
        });
        self.procs.spawn(task, program, self.now)
    }

    fn signal(&mut self, task: TaskRef, _pgid: u32, signal: Signal) {
        self.deeds.push(Deed::Signalled(task, signal));
        self.procs.signal(task, signal, self.now);
    }
}
