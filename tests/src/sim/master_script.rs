//! A scripted master: just enough of the master's side of the protocol to drive agents in the
//! simulation, with nothing clever that could hide an agent's bug.
//!
//! It heartbeats every period, keeps its retained presence (and a will), sends start commands
//! and retransmits each one every period until the agent answers with `Accepted` or `Rejected`
//! for that attempt, sends kill commands until the attempt's `Finished` arrives, stores events
//! deduplicated by (agent, seq), acknowledges the contiguous prefix it has stored, and records
//! what it learned about each attempt. What it stores survives its crashes (its database).
//! An agent's events are numbered in one sequence across its journals, as the master does: a
//! new journal's events are stored above everything stored before, and the orders and kills
//! of the journal it replaced are given up (they died with it).

use std::collections::{BTreeMap, BTreeSet};

use tether_core::auth::{SigningKey, Verifier};
use tether_core::message::{
    Command, CommandBody, Event, EventKind, Exit, KillCause, MasterHeartbeat, Message,
    RejectReason, TaskRef, TaskSpec,
};
use tether_core::presence::{Presence, State};
use tether_core::topic::Topic;
use tether_core::wire::{self, Signer};
use tether_core::{Duration, Instant};

use super::client::ClientEvent;
use super::invariants::Violation;
use super::mqtt::{QoS, Will};
use super::net::{ClientKey, Net};
use super::world::{ScriptOrder, SimMaster};

/// What the master knows about one attempt, from the agent's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptView {
    pub agent: usize,
    pub accepted: bool,
    pub rejected: Option<RejectReason>,
    pub started: Option<u32>,
    pub terminating: Vec<KillCause>,
    pub finished: Option<(Exit, Option<KillCause>)>,
    pub output_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MasterStats {
    pub start_sends: u64,
    pub kill_sends: u64,
    pub acks_sent: u64,
    pub heartbeats: u64,
    pub events: u64,
    pub duplicate_events: u64,
    pub bad_messages: u64,
    pub crashes: u64,
}

#[derive(Debug, Clone)]
struct Order {
    agent: usize,
    spec: TaskSpec,
    answered: bool,
}

#[derive(Debug, Clone)]
pub struct MasterScript {
    key: ClientKey,
    prefix: String,
    agents: Vec<String>,
    period: Duration,
    up: bool,
    connected: bool,
    epoch: u32,
    counter: u64,
    signing_key: SigningKey,
    next_tick: Option<Instant>,
    orders: Vec<Order>,
    kills: Vec<(usize, TaskRef)>,
    stores: Vec<BTreeMap<u64, Event>>,
    contiguous: Vec<u64>,
    /// Per agent: its current journal (0 before one was heard) and the store's sequence for
    /// that journal's event 0; journals it replaced.
    journals: Vec<u32>,
    bases: Vec<u64>,
    retired: BTreeSet<(usize, u32)>,
    ack_due: BTreeSet<usize>,
    attempts: BTreeMap<TaskRef, AttemptView>,
    conflicts: Vec<(usize, String)>,
    stats: MasterStats,
}

impl MasterScript {
    /// A master that is down until [`MasterScript::start`].
    pub fn new(key: ClientKey, prefix: &str, agents: Vec<String>, period: Duration) -> Self {
        let n = agents.len();
        Self {
            key,
            prefix: prefix.into(),
            agents,
            period,
            up: false,
            connected: false,
            epoch: 0,
            counter: 0,
            signing_key: crate::keys::master(),
            next_tick: None,
            orders: Vec::new(),
            kills: Vec::new(),
            stores: vec![BTreeMap::new(); n],
            contiguous: vec![0; n],
            journals: vec![0; n],
            bases: vec![0; n],
            retired: BTreeSet::new(),
            ack_due: BTreeSet::new(),
            attempts: BTreeMap::new(),
            conflicts: Vec::new(),
            stats: MasterStats::default(),
        }
    }

    // ---- getters ----

    pub fn key(&self) -> ClientKey {
        self.key
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn stats(&self) -> MasterStats {
        self.stats
    }

    /// Events stored for agent `i`, by sequence.
    pub fn store(&self, i: usize) -> &BTreeMap<u64, Event> {
        &self.stores[i]
    }

    /// The store's sequence for event 0 of agent `i`'s current journal.
    pub fn seq_base(&self, i: usize) -> u64 {
        self.bases[i]
    }

    /// The highest sequence up to which agent `i`'s events are stored without a gap.
    pub fn contiguous(&self, i: usize) -> u64 {
        self.contiguous[i]
    }

    pub fn attempt(&self, task: TaskRef) -> Option<&AttemptView> {
        self.attempts.get(&task)
    }

    pub fn attempts(&self) -> impl Iterator<Item = (&TaskRef, &AttemptView)> {
        self.attempts.iter()
    }

    /// Start commands not answered yet.
    pub fn unanswered(&self) -> usize {
        self.orders.iter().filter(|o| !o.answered).count()
    }

    /// Two different events received under one (agent, seq), with the agent: never allowed
    /// (unless that agent lost its disk and numbers its events from 1 again).
    pub fn conflicts(&self) -> &[(usize, String)] {
        &self.conflicts
    }

    // ---- the script's requests ----

    /// The master process starts (again): a new epoch, a will, and a connection.
    pub fn start(&mut self, net: &mut Net, now: Instant) {
        if self.up {
            return;
        }
        self.up = true;
        self.epoch += 1;
        let topic = self.topic(Topic::MasterPresence);
        let will = Presence {
            state: State::Lost,
            incarnation: self.epoch,
        }
        .render_signed(&topic, Signer::Master(&crate::keys::master()));
        let config = net.client_mut(self.key).config_mut();
        config.will = Some(Will::new(topic, will.as_bytes(), QoS::AtLeastOnce, true));
        config.keepalive_s = keepalive_s(self.period);
        net.start(self.key, now);
        self.next_tick = Some(now.saturating_add(self.period));
    }

    /// The master process dies: its will fires, everything in memory is gone, its store stays.
    pub fn crash(&mut self, net: &mut Net, now: Instant) {
        if !self.up {
            return;
        }
        self.stats.crashes += 1;
        self.up = false;
        self.connected = false;
        self.next_tick = None;
        self.ack_due.clear();
        net.kill(self.key, now);
    }

    /// Records a start order for agent `agent` (sent now if connected, else when it can be).
    pub fn submit(&mut self, net: &mut Net, agent: usize, spec: TaskSpec, now: Instant) {
        self.attempts.entry(spec.task).or_insert(AttemptView {
            agent,
            ..AttemptView::default()
        });
        self.orders.push(Order {
            agent,
            spec: spec.clone(),
            answered: false,
        });
        if self.connected {
            self.send_start(net, agent, spec, now);
        }
    }

    /// Asks the attempt's agent to kill it, until its `Finished` arrives.
    pub fn kill(&mut self, net: &mut Net, task: TaskRef, now: Instant) {
        let Some(view) = self.attempts.get(&task) else {
            return;
        };
        let agent = view.agent;
        if view.finished.is_some() || view.rejected.is_some() {
            return;
        }
        self.kills.push((agent, task));
        if self.connected {
            self.send_command(net, agent, CommandBody::Kill { task }, now);
            self.stats.kill_sends += 1;
        }
    }

    // ---- inputs and timers ----

    pub fn handle_event(&mut self, net: &mut Net, event: ClientEvent, now: Instant) {
        if !self.up {
            return;
        }
        match event {
            ClientEvent::Connected { .. } => {
                self.connected = true;
                let topic = self.topic(Topic::MasterPresence);
                let online = Presence {
                    state: State::Online,
                    incarnation: self.epoch,
                }
                .render_signed(&topic, Signer::Master(&self.signing_key));
                let _ = net.publish(
                    self.key,
                    topic,
                    online.as_bytes(),
                    QoS::AtLeastOnce,
                    true,
                    now,
                );
                self.tick(net, now);
                // Acknowledgements may have died with a broker or an earlier connection.
                self.ack_due.extend(0..self.agents.len());
            }
            ClientEvent::Disconnected => self.connected = false,
            ClientEvent::Message(p) => self.handle_message(&p.topic, &p.payload),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    pub fn handle_timeout(&mut self, net: &mut Net, now: Instant) {
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = Some(now.saturating_add(self.period));
            if self.connected {
                self.tick(net, now);
            }
        }
    }

    /// Sends the acknowledgements the events received since the last call call for.
    pub fn flush(&mut self, net: &mut Net, now: Instant) {
        if !self.connected {
            return;
        }
        for agent in std::mem::take(&mut self.ack_due) {
            let up_to = self.contiguous[agent] - self.bases[agent];
            if up_to > 0 {
                self.stats.acks_sent += 1;
                self.send_command(net, agent, CommandBody::Ack { up_to }, now);
            }
        }
    }

    // ---- internals ----

    fn tick(&mut self, net: &mut Net, now: Instant) {
        self.counter += 1;
        let hb = Message::MasterHeartbeat(MasterHeartbeat {
            epoch: self.epoch,
            counter: self.counter,
            period_ms: self.period.as_millis(),
        });
        let mut buf = [0u8; wire::MAX_MESSAGE];
        let topic = self.topic(Topic::MasterHeartbeat);
        if let Ok(bytes) = wire::encode_signed(&hb, &topic, &self.signing_key, &mut buf) {
            self.stats.heartbeats += 1;
            let _ = net.publish(self.key, topic, bytes, QoS::AtMostOnce, false, now);
        }
        let pending: Vec<(usize, TaskSpec)> = self
            .orders
            .iter()
            .filter(|o| !o.answered)
            .map(|o| (o.agent, o.spec.clone()))
            .collect();
        for (agent, spec) in pending {
            self.send_start(net, agent, spec, now);
        }
        let kills: Vec<(usize, TaskRef)> = self
            .kills
            .iter()
            .copied()
            .filter(|(_, t)| self.attempts.get(t).is_none_or(|v| v.finished.is_none()))
            .collect();
        for (agent, task) in kills {
            self.stats.kill_sends += 1;
            self.send_command(net, agent, CommandBody::Kill { task }, now);
        }
    }

    fn send_start(&mut self, net: &mut Net, agent: usize, spec: TaskSpec, now: Instant) {
        self.stats.start_sends += 1;
        self.send_command(net, agent, CommandBody::Start(spec), now);
    }

    fn send_command(&mut self, net: &mut Net, agent: usize, body: CommandBody, now: Instant) {
        self.counter += 1;
        let cmd = Message::Command(Command {
            epoch: self.epoch,
            counter: self.counter,
            journal: self.journals[agent],
            body,
        });
        let Ok(id) = tether_core::topic::validate_id(&self.agents[agent]) else {
            return;
        };
        let topic = self.topic(Topic::AgentCommand(id));
        let mut buf = [0u8; wire::MAX_MESSAGE];
        let Ok(bytes) = wire::encode_signed(&cmd, &topic, &self.signing_key, &mut buf) else {
            return;
        };
        // A full request queue is like a lost publish: retransmission covers it.
        let _ = net.publish(self.key, topic, bytes, QoS::AtLeastOnce, false, now);
    }

    fn handle_message(&mut self, topic: &str, payload: &[u8]) {
        let (Ok(Topic::AgentEvent(id)) | Ok(Topic::AgentHeartbeat(id))) =
            Topic::parse(&self.prefix, topic)
        else {
            // Presence: nothing the script needs.
            return;
        };
        let Some(agent) = self.agents.iter().position(|a| *a == id.as_str()) else {
            self.stats.bad_messages += 1;
            return;
        };
        let key = crate::keys::agent(&self.agents[agent]);
        let report = match wire::decode_verified(payload, topic, Verifier::Agent(&key)) {
            Ok(Message::Event(report)) => report,
            // A heartbeat names the agent's journal, as the master's does: a re-flashed agent
            // that sends no event is still known to count in a new journal.
            Ok(Message::AgentHeartbeat(hb)) => {
                if self.journals[agent] != hb.journal
                    && !self.retired.contains(&(agent, hb.journal))
                {
                    self.new_journal(agent, hb.journal);
                }
                return;
            }
            _ => {
                self.stats.bad_messages += 1;
                return;
            }
        };
        if self.retired.contains(&(agent, report.journal)) {
            return;
        }
        if self.journals[agent] != report.journal {
            self.new_journal(agent, report.journal);
        }
        let mut event = report.event;
        event.seq += self.bases[agent];
        self.stats.events += 1;
        self.ack_due.insert(agent);
        if let Some(old) = self.stores[agent].get(&event.seq) {
            self.stats.duplicate_events += 1;
            if *old != event {
                let what = format!(
                    "agent {agent} seq {}: stored {old:?}, received {event:?}",
                    event.seq
                );
                self.conflicts.push((agent, what));
            }
            return;
        }
        self.learn(agent, &event);
        self.stores[agent].insert(event.seq, event);
        let store = &self.stores[agent];
        let mut c = self.contiguous[agent];
        while store.contains_key(&(c + 1)) {
            c += 1;
        }
        self.contiguous[agent] = c;
    }

    /// Agent `agent` names another journal: number its events above everything stored, give up
    /// what was sent to the one it replaced.
    fn new_journal(&mut self, agent: usize, journal: u32) {
        let old = std::mem::replace(&mut self.journals[agent], journal);
        if old == 0 {
            return;
        }
        self.retired.insert((agent, old));
        let last = self.stores[agent].last_key_value().map_or(0, |(s, _)| *s);
        let base = last.max(self.contiguous[agent]);
        self.bases[agent] = base;
        self.contiguous[agent] = base;
        for o in self.orders.iter_mut().filter(|o| o.agent == agent) {
            o.answered = true;
        }
        self.kills.retain(|(a, _)| *a != agent);
    }

    fn learn(&mut self, agent: usize, event: &Event) {
        let Some(task) = event.kind.task() else {
            return;
        };
        let view = self.attempts.entry(task).or_insert(AttemptView {
            agent,
            ..AttemptView::default()
        });
        match &event.kind {
            EventKind::Accepted { .. } => view.accepted = true,
            EventKind::Rejected { reason, .. } => view.rejected = Some(*reason),
            EventKind::Started { pid, .. } => view.started = Some(*pid),
            EventKind::Output { data, .. } => view.output_bytes += data.len() as u64,
            EventKind::Terminating { cause, .. } => view.terminating.push(*cause),
            EventKind::Finished { exit, cause, .. } => view.finished = Some((*exit, *cause)),
            EventKind::BadCommand { .. } | EventKind::Missed { .. } | EventKind::Clock { .. } => {}
        }
        if matches!(
            event.kind,
            EventKind::Accepted { .. } | EventKind::Rejected { .. }
        ) {
            for o in &mut self.orders {
                if o.spec.task == task {
                    o.answered = true;
                }
            }
        }
    }

    fn topic(&self, topic: Topic) -> String {
        topic
            .build(&self.prefix)
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default()
    }
}

/// MQTT keepalive for a heartbeat period: the period in whole seconds, at least 1 s (rumqttd
/// refuses 0).
pub fn keepalive_s(period: Duration) -> u16 {
    u16::try_from(period.as_millis().div_ceil(1_000))
        .unwrap_or(u16::MAX)
        .max(1)
}

impl SimMaster for MasterScript {
    type Order = ScriptOrder;

    fn key(&self) -> ClientKey {
        self.key
    }

    fn is_connected(&self) -> bool {
        self.connected
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    fn start(&mut self, net: &mut Net, now: Instant) -> Result<(), Violation> {
        MasterScript::start(self, net, now);
        Ok(())
    }

    fn crash(&mut self, net: &mut Net, now: Instant) {
        MasterScript::crash(self, net, now);
    }

    fn order(&mut self, net: &mut Net, order: ScriptOrder, now: Instant) -> Result<(), Violation> {
        match order {
            ScriptOrder::Submit(agent, spec) => {
                net.trace_mut().record(
                    now,
                    format_args!(
                        "master: order {} for pi-{agent} ({:?}, start {:?})",
                        spec.task.attempt, spec.policy.on_disconnect, spec.start_at_unix_ms
                    ),
                );
                self.submit(net, agent, *spec, now);
            }
            ScriptOrder::Kill(task) => {
                net.trace_mut()
                    .record(now, format_args!("master: kill {}", task.attempt));
                self.kill(net, task, now);
            }
        }
        Ok(())
    }

    fn handle_event(
        &mut self,
        net: &mut Net,
        event: ClientEvent,
        now: Instant,
    ) -> Result<(), Violation> {
        MasterScript::handle_event(self, net, event, now);
        Ok(())
    }

    fn handle_timeout(&mut self, net: &mut Net, now: Instant) -> Result<(), Violation> {
        MasterScript::handle_timeout(self, net, now);
        self.flush(net, now);
        Ok(())
    }

    fn store(&self, i: usize) -> &BTreeMap<u64, Event> {
        &self.stores[i]
    }

    fn seq_base(&self, i: usize) -> u64 {
        self.bases[i]
    }

    fn contiguous(&self, i: usize) -> u64 {
        self.contiguous[i]
    }

    fn conflicts(&self) -> &[(usize, String)] {
        &self.conflicts
    }

    fn describe(&self) -> String {
        format!("unanswered orders {}", self.unanswered())
    }
}
