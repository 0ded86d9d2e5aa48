//! The agents of a [`World`]: each one tether-agent's executor around the core, fed its inputs
//! through a [`SimHost`] and watched by the [`oracle`](crate::sim::oracle); crashes, disk loss,
//! restarts and the normal stop.

use std::convert::Infallible;

use tether_agent::executor::{Executor, Settings};
use tether_core::Instant;
use tether_core::agent::Config;

use super::{MAX_PASSES, SimMaster, World};
use crate::sim::agent_host::SimHost;
use crate::sim::client::ClientEvent;
use crate::sim::disk::Disk;
use crate::sim::invariants::{Invariant, Violation};
use crate::sim::mqtt::{QoS, Will};
use crate::sim::net::ClientKey;
use crate::sim::oracle::{AgentView, AgentWatch};
use crate::sim::procs::{ProcEvent, Procs};

#[derive(Debug)]
pub(super) struct Node {
    pub(super) id: String,
    pub(super) key: ClientKey,
    /// The agent process, unless crashed or stopped.
    pub(super) exec: Option<Executor>,
    pub(super) disk: Disk,
    pub(super) procs: Procs,
    pub(super) watch: AgentWatch,
    pub(super) restarts: u32,
}

impl<M: SimMaster> World<M> {
    pub(super) fn agent_event(
        &mut self,
        i: usize,
        event: ClientEvent,
        now: Instant,
    ) -> Result<(), Violation> {
        match event {
            ClientEvent::Connected { .. } => self.feed(i, now, |e, h| e.handle_connected(h)),
            ClientEvent::Disconnected => self.feed(i, now, |e, h| e.handle_disconnected(h)),
            ClientEvent::Message(p) => {
                self.feed(i, now, |e, h| e.handle_message(h, &p.topic, &p.payload))
            }
        }
    }

    /// The agent's own clocks: durability, processes, timers.
    pub(super) fn agent_local(&mut self, i: usize, now: Instant) -> Result<(), Violation> {
        for _ in 0..MAX_PASSES {
            if self.nodes[i].exec.is_none() {
                return Ok(());
            }
            let mut moved = false;
            let Self { nodes, ledger, .. } = self;
            let mut bad = None;
            let lsn = nodes[i].disk.handle_timeout(now, |bytes| {
                if let Err(v) = ledger.on_durable(i, bytes, now) {
                    bad.get_or_insert(v);
                }
            });
            if let Some(v) = bad {
                return Err(v);
            }
            if let Some(lsn) = lsn {
                self.feed(i, now, |e, h| e.handle_durable(h, lsn))?;
                moved = true;
            }
            while let Some(event) = self.nodes[i].procs.poll_event(now) {
                moved = true;
                match event {
                    ProcEvent::Output { task, stream, data } => {
                        self.feed(i, now, |e, h| e.handle_output(h, task, stream, &data))?;
                    }
                    ProcEvent::Exited { task, exit } => {
                        self.ledger.on_exit(i, task, exit, now);
                        let id = &self.nodes[i].id;
                        self.net.trace_mut().record(
                            now,
                            format_args!("{id}: task {} exits {exit:?}", task.attempt),
                        );
                        self.feed(i, now, |e, h| e.handle_exited(h, task, exit))?;
                    }
                }
            }
            if self.nodes[i]
                .exec
                .as_ref()
                .and_then(Executor::poll_timeout)
                .is_some_and(|t| t <= now)
            {
                self.feed(i, now, |e, h| e.handle_timeout(h))?;
                moved = true;
            }
            if !moved {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Gives agent `i`'s executor one input through its host, flushes, and has the oracle check
    /// what it did. An agent that has completed a normal stop exits.
    pub(super) fn feed(
        &mut self,
        i: usize,
        now: Instant,
        input: impl FnOnce(&mut Executor, &mut SimHost<'_>) -> Result<(), Infallible>,
    ) -> Result<(), Violation> {
        let Self {
            nodes,
            net,
            rng,
            ledger,
            ..
        } = self;
        let node = &mut nodes[i];
        let Some(exec) = node.exec.as_mut() else {
            return Ok(());
        };
        let mut host = SimHost::new(now, node.key, net, &mut node.disk, &mut node.procs, rng);
        let Ok(()) = input(exec, &mut host).and_then(|()| exec.flush(&mut host));
        let deeds = host.deeds;
        let view = AgentView {
            index: i,
            id: &node.id,
            agent: exec.agent(),
            procs: &node.procs,
        };
        node.watch
            .observe(&view, deeds, ledger, net.trace_mut(), now)?;
        if exec.agent().stats().lost_actions > 0 {
            return Err(Violation::new(
                Invariant::Model,
                now,
                format!("{}: the core dropped actions", node.id),
            ));
        }
        if exec.stats().lost_records > 0 {
            return Err(Violation::new(
                Invariant::JournalKeepsResults,
                now,
                format!(
                    "{}: {} journal records lost to a full journal ({} of {} bytes)",
                    node.id,
                    exec.stats().lost_records,
                    node.disk.len_bytes(),
                    node.disk.max_bytes()
                ),
            ));
        }
        if exec.agent().is_stopped() {
            self.exit_agent(i, now);
        }
        Ok(())
    }

    /// The agent process ends after a normal stop: a clean DISCONNECT (no will), its journal
    /// complete on disk.
    pub(super) fn exit_agent(&mut self, i: usize, now: Instant) {
        let node = &mut self.nodes[i];
        if node.exec.take().is_none() {
            return;
        }
        self.net
            .trace_mut()
            .record(now, format_args!("{}: stopped, exits", node.id));
        self.net.disconnect(node.key, now);
    }

    /// Invariants 3 and 5: what must have happened by `now`.
    pub(super) fn check_deadlines(&self, now: Instant) -> Result<(), Violation> {
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(exec) = &node.exec else { continue };
            let view = AgentView {
                index: i,
                id: &node.id,
                agent: exec.agent(),
                procs: &node.procs,
            };
            node.watch
                .check_deadlines(&view, node.disk.max_delay(), now)?;
        }
        Ok(())
    }

    // ---- agent processes ----

    pub(super) fn crash_agent(&mut self, i: usize, lose_disk: bool, now: Instant) {
        let node = &mut self.nodes[i];
        if node.exec.take().is_none() && !lose_disk {
            return;
        }
        let id = node.id.clone();
        self.net.trace_mut().record(
            now,
            format_args!(
                "{id}: crashes{}",
                if lose_disk { ", disk lost" } else { "" }
            ),
        );
        self.net.kill(node.key, now);
        node.procs.crash();
        if lose_disk {
            node.disk.lose();
            self.ledger.lose_journal(i);
        } else {
            node.disk.crash();
        }
    }

    /// A new agent process: the executor replays the durable journal, then it connects with
    /// the keepalive and will the core gives, as the binary does.
    pub(super) fn start_agent(&mut self, i: usize, now: Instant) -> Result<(), Violation> {
        let incarnation = self.rng.next_u64() as u32;
        let journal = self.rng.next_u64() as u32;
        let Self {
            nodes, net, rng, ..
        } = self;
        let node = &mut nodes[i];
        let config = Config {
            id: &node.id,
            prefix: &self.config.prefix,
            incarnation,
            journal,
            auth: crate::keys::agent_auth(&node.id),
        };
        let settings = Settings {
            max_tasks: self.config.max_tasks,
            allowlist: None,
        };
        let records: Vec<Vec<u8>> = node.disk.records().map(<[u8]>::to_vec).collect();
        let mut host = SimHost::new(now, node.key, net, &mut node.disk, &mut node.procs, rng);
        let exec = Executor::start(&mut host, config, settings, records).map_err(|e| {
            Violation::new(
                Invariant::Model,
                now,
                format!("{}: agent does not start: {e}", node.id),
            )
        })?;
        if exec.stats().undecodable > 0 {
            return Err(Violation::new(
                Invariant::Model,
                now,
                format!("{}: journal records unreadable", node.id),
            ));
        }
        node.watch = AgentWatch::started(now, node.disk.records());
        let (keepalive, topic, will) = exec.session();
        let client = self.net.client_mut(node.key).config_mut();
        client.will = Some(Will::new(topic, will.as_bytes(), QoS::AtLeastOnce, true));
        client.keepalive_s = u16::try_from(keepalive.as_secs()).unwrap_or(u16::MAX);
        let first = node.restarts == 0 && node.disk.is_empty();
        if !first {
            node.restarts += 1;
        }
        node.exec = Some(exec);
        let id = node.id.clone();
        self.net.trace_mut().record(
            now,
            format_args!("{id}: starts, incarnation {incarnation:08x}"),
        );
        self.net.start(self.nodes[i].key, now);
        self.feed(i, now, |_, _| Ok(()))
    }
}
