//! Schedules in the system world: the real master gets the world's wall clock before every
//! input, as the runtime gives it every loop round, and a test defines, pauses and deletes
//! schedules through it ([`ScheduleCall`], scheduled like any other request). What the agents
//! started is read back from the ledger (every spawn the oracle saw) and what the master kept
//! from its store.
//!
//! ```text
//! let mut w = World::system(WorldConfig::new(seed, 3).replay(".."));
//! w.put_schedule(at(10), hourly("hourly-0", 0));
//! w.run_until(at(60));
//! let spawns = w.schedule_spawns(0);           // (attempt, when) of every start on pi-0
//! let tasks = w.occurrence_tasks("hourly-0");  // the store's occurrence tasks
//! ```

use std::collections::BTreeSet;

use tether_core::Instant;
use tether_core::message::TaskRef;
use tether_master::core::{Master, ScheduleRequest};
use tether_master::model::{Handover, Schedule, Task};
use tether_master::store::{Page, Store};

use super::{RealMaster, SystemOrder};
use crate::sim::invariants::{Invariant, Violation};
use crate::sim::world::{Step, World, wall_ms};

/// A schedule request to the real master, taken when its step is due.
#[derive(Debug, Clone)]
pub enum ScheduleCall {
    /// Defines the schedule, or its next version.
    Put(Box<ScheduleRequest>),
    /// Pauses (`true`) or resumes it.
    Pause {
        name: String,
        paused: bool,
    },
    Delete {
        name: String,
    },
}

impl ScheduleCall {
    /// Makes the call on the core: what it did, for the trace, or why the core refused it.
    pub(super) fn take(self, core: &mut Master, now: Instant) -> Result<String, String> {
        match self {
            Self::Put(req) => {
                let name = req.name.clone();
                core.put_schedule(now, *req)
                    .map(|s| format!("schedule {name} is {} version {}", s.id, s.version))
                    .map_err(|e| format!("schedule {name}: {e}"))
            }
            Self::Pause { name, paused } => core
                .pause_schedule(now, &name, paused)
                .map(|_| format!("schedule {name} paused {paused}"))
                .map_err(|e| format!("pause {name}: {e}")),
            Self::Delete { name } => core
                .delete_schedule(now, &name)
                .map(|()| format!("schedule {name} deleted"))
                .map_err(|e| format!("delete {name}: {e}")),
        }
    }
}

/// Tells the core the world's wall clock at `now` (the runtime does it every loop round).
pub(super) fn tell_wall_clock(core: &mut Master, now: Instant) {
    core.handle_wall_clock(now, wall_ms(now));
}

impl World<RealMaster> {
    /// Schedules the definition of a schedule (or of its next version) through the master.
    pub fn put_schedule(&mut self, at: Instant, request: ScheduleRequest) {
        let call = ScheduleCall::Put(Box::new(request));
        self.schedule(at, Step::Order(SystemOrder::Schedule(call)));
    }

    pub fn pause_schedule(&mut self, at: Instant, name: &str, paused: bool) {
        let name = name.to_owned();
        let call = ScheduleCall::Pause { name, paused };
        self.schedule(at, Step::Order(SystemOrder::Schedule(call)));
    }

    pub fn delete_schedule(&mut self, at: Instant, name: &str) {
        let name = name.to_owned();
        self.schedule(
            at,
            Step::Order(SystemOrder::Schedule(ScheduleCall::Delete { name })),
        );
    }

    /// The hand-overs the running master holds (none while it is down).
    pub fn live_handovers(&self) -> Vec<Handover> {
        self.master()
            .core()
            .map(|c| c.handovers().cloned().collect())
            .unwrap_or_default()
    }

    /// The schedule as stored (not deleted).
    pub fn stored_schedule(&self, name: &str) -> Option<Schedule> {
        let db = self.master().db();
        self.expect(Store::schedule(db, name).map_err(|e| model(self.now(), e)))
    }

    /// Every hand-over of the schedule the store holds, ended ones too, oldest first.
    pub fn stored_handovers(&self, name: &str) -> Vec<Handover> {
        let Some(s) = self.stored_schedule(name) else {
            return Vec::new();
        };
        let db = self.master().db();
        let mut all = self.expect(Store::handovers(db, s.id).map_err(|e| model(self.now(), e)));
        all.reverse();
        all
    }

    /// The schedule's occurrence tasks in the store, oldest occurrence first.
    pub fn occurrence_tasks(&self, name: &str) -> Vec<Task> {
        let Some(s) = self.stored_schedule(name) else {
            return Vec::new();
        };
        let db = self.master().db();
        self.expect(Store::occurrence_tasks(db, s.id, Page::ALL).map_err(|e| model(self.now(), e)))
    }

    /// Every attempt agent `i` spawned (as the oracle saw the spawns), with when: each attempt
    /// its journal ever named, looked up in the ledger. An attempt spawned twice appears
    /// twice (the ledger reports it as a violation of invariant 1 first).
    pub fn spawns_of(&self, i: usize) -> Vec<(TaskRef, Instant)> {
        let named: BTreeSet<TaskRef> = self
            .ledger()
            .durable(i)
            .values()
            .filter_map(|e| e.kind.task())
            .collect();
        let mut out: Vec<(TaskRef, Instant)> = named
            .into_iter()
            .flat_map(|t| {
                self.spawns(t)
                    .iter()
                    .filter(|(a, _)| *a == i)
                    .map(move |(_, at)| (t, *at))
            })
            .collect();
        out.sort_by_key(|(_, at)| *at);
        out
    }
}

fn model(at: Instant, e: impl std::fmt::Display) -> Violation {
    Violation::new(
        Invariant::Model,
        at,
        format!("master store unreadable: {e}"),
    )
}
