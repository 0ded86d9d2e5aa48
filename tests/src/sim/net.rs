//! The broker, one link per client and the clients, wired together: what a simulation of
//! Tether drives from its step loop. The owners of the clients (agent cores, a scripted
//! master) stay outside: they read [`Net::poll_event`] and call [`Net::publish`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tether_core::Instant;

use super::broker::{Broker, BrokerConfig, BrokerStats, ConnId, Output};
use super::client::{Client, ClientConfig, ClientError, ClientEvent, ClientOutput};
use super::clock::{Clock, Stuck};
use super::link::{Delivery, Dir, Fault, Link, LinkConfig};
use super::mqtt::{Packet, QoS};
use super::rng::Rng;
use super::trace::Trace;

/// A client of this [`Net`], in the order they were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientKey(usize);

impl ClientKey {
    pub fn index(self) -> usize {
        self.0
    }
}

#[derive(Debug, Clone)]
struct Node {
    /// The client id at creation, for the trace.
    label: Arc<str>,
    client: Client,
    link: Link,
    /// The client's current connection.
    epoch: Option<u64>,
    /// Connections the broker knows, by epoch.
    conns: BTreeMap<u64, ConnId>,
}

/// Bounds the passes of one [`Net::step`]; a model that needs more is livelocked, and the
/// clock's stuck detection reports it.
const MAX_PASSES: usize = 1_000;

#[derive(Debug, Clone)]
pub struct Net {
    broker: Broker,
    nodes: Vec<Node>,
    owners: BTreeMap<ConnId, (usize, u64)>,
    events: VecDeque<(ClientKey, ClientEvent)>,
    rng: Rng,
    trace: Trace,
}

impl Net {
    /// Everything random in the net derives from `seed`. Keeps the last 500 trace lines.
    pub fn new(config: BrokerConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let broker = Broker::new(config, rng.fork());
        Self {
            broker,
            nodes: Vec::new(),
            owners: BTreeMap::new(),
            events: VecDeque::new(),
            rng,
            // TETHER_SIM_TRACE asks for a longer tail in failure reports.
            trace: Trace::new(
                std::env::var("TETHER_SIM_TRACE")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500),
            ),
        }
    }

    /// Adds a stopped client on its own link; [`Net::start`] connects it (set a fault first to
    /// start behind one).
    pub fn add_client(&mut self, config: ClientConfig, link: LinkConfig) -> ClientKey {
        let key = ClientKey(self.nodes.len());
        let link = Link::new(link, self.rng.fork());
        self.nodes.push(Node {
            label: config.client_id.as_str().into(),
            client: Client::new(config),
            link,
            epoch: None,
            conns: BTreeMap::new(),
        });
        key
    }

    pub fn key(&self, client_id: &str) -> Option<ClientKey> {
        self.nodes
            .iter()
            .position(|n| n.client.config().client_id == client_id)
            .map(ClientKey)
    }

    pub fn keys(&self) -> impl Iterator<Item = ClientKey> + use<> {
        (0..self.nodes.len()).map(ClientKey)
    }

    // ---- getters (a key from another Net panics, like a slice index) ----

    pub fn client(&self, k: ClientKey) -> &Client {
        &self.nodes[k.0].client
    }

    /// Direct access; call [`Net::step`] afterwards so that what it sends leaves.
    pub fn client_mut(&mut self, k: ClientKey) -> &mut Client {
        &mut self.nodes[k.0].client
    }

    pub fn link(&self, k: ClientKey) -> &Link {
        &self.nodes[k.0].link
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Direct access; call [`Net::step`] afterwards so that what it sends leaves.
    pub fn broker_mut(&mut self) -> &mut Broker {
        &mut self.broker
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// For the owners' own notes, interleaved with the net's.
    pub fn trace_mut(&mut self) -> &mut Trace {
        &mut self.trace
    }

    // ---- owners' and schedule's requests ----

    pub fn publish(
        &mut self,
        k: ClientKey,
        topic: impl Into<Arc<str>>,
        payload: impl Into<Arc<[u8]>>,
        qos: QoS,
        retain: bool,
        now: Instant,
    ) -> Result<(), ClientError> {
        let result = self.nodes[k.0]
            .client
            .publish(topic, payload, qos, retain, now);
        self.flush_client(k.0, now);
        result
    }

    pub fn subscribe(
        &mut self,
        k: ClientKey,
        filter: &str,
        qos: QoS,
        now: Instant,
    ) -> Result<(), ClientError> {
        let result = self.nodes[k.0].client.subscribe(filter, qos, now);
        self.flush_client(k.0, now);
        result
    }

    /// Clean DISCONNECT; the client stays stopped until [`Net::start`].
    pub fn disconnect(&mut self, k: ClientKey, now: Instant) {
        self.note(k.0, now, "disconnects cleanly");
        self.nodes[k.0].client.disconnect(now);
        self.flush_client(k.0, now);
    }

    /// The client's process dies; [`Net::start`] is its restart.
    pub fn kill(&mut self, k: ClientKey, now: Instant) {
        self.note(k.0, now, "killed");
        self.nodes[k.0].client.kill(now);
        self.flush_client(k.0, now);
    }

    pub fn start(&mut self, k: ClientKey, now: Instant) {
        self.nodes[k.0].client.start(now);
        self.flush_client(k.0, now);
    }

    pub fn set_fault(&mut self, k: ClientKey, fault: Fault, now: Instant) {
        let id = &self.nodes[k.0].label;
        self.trace.record(now, format_args!("link {id}: {fault:?}"));
        self.nodes[k.0].link.set_fault(fault, now);
    }

    pub fn set_fault_all(&mut self, fault: Fault, now: Instant) {
        for k in self.keys() {
            self.set_fault(k, fault, now);
        }
    }

    /// The broker restarts and forgets everything (see [`Broker::restart`]).
    pub fn restart_broker(&mut self, now: Instant) {
        self.trace.record(now, format_args!("broker restarts"));
        self.broker.restart(now);
        self.drain_broker(now);
    }

    // ---- driving ----

    /// Does everything due by `now`: timers, deliveries, and what they trigger, until quiet.
    pub fn step(&mut self, now: Instant) {
        for _ in 0..MAX_PASSES {
            let before = self.broker.stats().clone();
            self.broker.handle_timeout(now);
            let mut moved = self.drain_broker(now);
            self.note_broker(now, &before);
            for i in 0..self.nodes.len() {
                self.nodes[i].client.handle_timeout(now);
                moved |= self.flush_client(i, now);
                moved |= self.deliver(i, now);
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs the net alone (no owners reacting) up to `until`, returning the owners' events
    /// with the instant each happened: for scripted stretches and tests.
    pub fn run_until(
        &mut self,
        clock: &mut Clock,
        until: Instant,
    ) -> Result<Vec<(Instant, ClientKey, ClientEvent)>, Stuck> {
        let start = clock.now();
        let mut events: Vec<_> = std::iter::from_fn(|| self.poll_event())
            .map(|(k, e)| (start, k, e))
            .collect();
        while let Some(now) = clock.advance([self.poll_timeout()], until)? {
            self.step(now);
            events.extend(std::iter::from_fn(|| self.poll_event()).map(|(k, e)| (now, k, e)));
        }
        Ok(events)
    }

    /// What the owners must hear, in the order it happened.
    pub fn poll_event(&mut self) -> Option<(ClientKey, ClientEvent)> {
        self.events.pop_front()
    }

    /// The earliest instant [`Net::step`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.broker.poll_timeout();
        for n in &self.nodes {
            for t in [n.client.poll_timeout(), n.link.poll_timeout()]
                .into_iter()
                .flatten()
            {
                next = Some(next.map_or(t, |x| x.min(t)));
            }
        }
        next
    }

    // ---- internals ----

    fn note(&mut self, i: usize, now: Instant, what: &str) {
        let id = &self.nodes[i].label;
        self.trace.record(now, format_args!("{id}: {what}"));
    }

    fn note_broker(&mut self, now: Instant, before: &BrokerStats) {
        let after = self.broker.stats();
        let reaped = after.keepalive_timeouts - before.keepalive_timeouts;
        let wills = after.wills_published - before.wills_published;
        if reaped + wills > 0 {
            self.trace.record(
                now,
                format_args!("broker: {reaped} keepalive timeouts, {wills} wills"),
            );
        }
    }

    /// Moves the client's outputs onto its link and its events to the owners.
    fn flush_client(&mut self, i: usize, now: Instant) -> bool {
        let mut moved = false;
        let node = &mut self.nodes[i];
        let id = node.label.clone();
        while let Some(out) = node.client.poll_output() {
            moved = true;
            match out {
                ClientOutput::Open => {
                    if let Some(e) = node.epoch.take() {
                        node.link.close(Dir::ToBroker, e, now);
                    }
                    let e = node.link.open(now);
                    node.epoch = Some(e);
                    self.trace
                        .record(now, format_args!("{id}: opens connection {e}"));
                }
                ClientOutput::Send(packet) => {
                    if let Some(e) = node.epoch {
                        node.link.send(Dir::ToBroker, e, packet, now);
                    }
                }
                ClientOutput::Close => {
                    if let Some(e) = node.epoch.take() {
                        node.link.close(Dir::ToBroker, e, now);
                        self.trace
                            .record(now, format_args!("{id}: closes connection {e}"));
                    }
                }
            }
        }
        while let Some(event) = node.client.poll_event() {
            moved = true;
            match &event {
                ClientEvent::Message(p) => {
                    self.trace.record(now, format_args!("{id} <= {p}"));
                }
                other => self.trace.record(now, format_args!("{id}: {other:?}")),
            }
            self.events.push_back((ClientKey(i), event));
        }
        moved
    }

    fn drain_broker(&mut self, now: Instant) -> bool {
        let mut moved = false;
        while let Some(out) = self.broker.poll_output() {
            moved = true;
            match out {
                Output::Send(conn, packet) => {
                    if let Some(&(i, e)) = self.owners.get(&conn) {
                        self.nodes[i].link.send(Dir::ToClient, e, packet, now);
                    }
                }
                Output::Close(conn) => {
                    if let Some((i, e)) = self.owners.remove(&conn) {
                        let node = &mut self.nodes[i];
                        node.conns.remove(&e);
                        node.link.close(Dir::ToClient, e, now);
                        let id = node.label.clone();
                        self.trace
                            .record(now, format_args!("broker closes {id} connection {e}"));
                    }
                }
            }
        }
        moved
    }

    /// Delivers what the link has due, both ways.
    fn deliver(&mut self, i: usize, now: Instant) -> bool {
        let mut moved = false;
        loop {
            let node = &mut self.nodes[i];
            let Some((e, delivery)) = node.link.poll(Dir::ToBroker, now) else {
                break;
            };
            moved = true;
            let id = node.label.clone();
            let before = self.broker.stats().clone();
            match delivery {
                Delivery::Packet(packet) => {
                    self.trace
                        .record(now, format_args!("{id} -> broker [{e}]: {packet}"));
                    let conn = match node.conns.get(&e) {
                        Some(&conn) => conn,
                        None if matches!(packet, Packet::Connect(_)) => {
                            let conn = self.broker.accept(now);
                            node.conns.insert(e, conn);
                            self.owners.insert(conn, (i, e));
                            conn
                        }
                        None => continue,
                    };
                    self.broker.handle_packet(conn, packet, now);
                }
                Delivery::Closed => {
                    self.trace
                        .record(now, format_args!("{id} -> broker [{e}]: closed"));
                    if let Some(conn) = node.conns.remove(&e) {
                        self.owners.remove(&conn);
                        self.broker.connection_lost(conn, now);
                    }
                }
            }
            self.drain_broker(now);
            self.note_broker(now, &before);
        }
        loop {
            let node = &mut self.nodes[i];
            let Some((e, delivery)) = node.link.poll(Dir::ToClient, now) else {
                break;
            };
            moved = true;
            if node.epoch != Some(e) {
                continue;
            }
            let id = node.label.clone();
            match delivery {
                Delivery::Packet(packet) => {
                    if !matches!(packet, Packet::Publish(_)) {
                        self.trace
                            .record(now, format_args!("broker -> {id} [{e}]: {packet}"));
                    }
                    node.client.handle_packet(packet, now);
                }
                Delivery::Closed => {
                    self.trace
                        .record(now, format_args!("broker -> {id} [{e}]: closed"));
                    node.epoch = None;
                    node.client.handle_closed(now);
                }
            }
            self.flush_client(i, now);
        }
        moved
    }
}
