//! A model MQTT 3.1.1 broker that behaves as rumqttd 0.20 and mosquitto 2.0 were measured to
//! behave: sessions that survive disconnects (`clean_session = false`) but not a restart,
//! QoS 1 with redelivery, offline queues, retained messages, wills, keepalive reaping and
//! takeover by client id.
//!
//! Sans-IO like the cores it tests: packets in with [`Broker::handle_packet`] (or the
//! convenience methods), timers with [`Broker::handle_timeout`] / [`Broker::poll_timeout`],
//! packets and closes out with [`Broker::poll_output`]. It never reads a clock; maps and
//! iteration orders are deterministic (no hashing).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use tether_core::{Duration, Instant};

use super::mqtt::{ConnectCode, Packet, Publish, QoS, Will, matches, valid_filter, valid_topic};
use super::rng::Rng;

/// One network connection as the broker sees it; never reused, not even across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// A connection silent for `keepalive x factor` is dropped and its will published
    /// (rumqttd and the spec: 1.5).
    pub keepalive_factor: f64,
    /// `None`: every connection is checked at its own deadline (rumqttd). `Some(i)`: expiry is
    /// only noticed by a sweep every `i` since time 0 (mosquitto sweeps every few seconds, so
    /// its wills come late).
    pub keepalive_check: Option<Duration>,
    /// Unacknowledged QoS 1 deliveries per session; more wait in the queue.
    pub max_inflight: usize,
    /// Queued QoS 1 messages per session (offline or beyond the window); beyond it the oldest
    /// is dropped and counted.
    pub max_queued: usize,
    /// Resend unacknowledged QoS 1 deliveries (dup) this long after sending, on the same
    /// connection. MQTT 3.1.1 allows it; the real brokers only redeliver on reconnect.
    pub retry_interval: Option<Duration>,
    /// rumqttd delivers at the subscription's QoS even when the publish was QoS 0.
    pub upgrade_qos0: bool,
    /// Chance that a QoS 1 delivery is followed at once by a dup copy: duplicates on demand,
    /// so receivers' dedup is exercised even on a healthy link.
    pub spurious_dup: f64,
    /// rumqttd's quick-reconnect quirk (measured on rumqttd 0.20): when a `clean_session = true` client takes
    /// over its own id, the *new* connection's will is published this long after the takeover
    /// (when rumqttd reaps the old connection) and the new connection is left without a will.
    /// `None` behaves correctly.
    pub will_mixup: Option<Duration>,
}

impl BrokerConfig {
    pub fn rumqttd() -> Self {
        Self {
            keepalive_factor: 1.5,
            keepalive_check: None,
            max_inflight: 100,
            max_queued: 1_000,
            retry_interval: None,
            upgrade_qos0: true,
            spurious_dup: 0.0,
            will_mixup: None,
        }
    }

    /// Late wills (a 5 s sweep), spec QoS downgrade, a smaller window.
    pub fn mosquitto() -> Self {
        Self {
            keepalive_check: Some(Duration::from_secs(5)),
            max_inflight: 20,
            upgrade_qos0: false,
            ..Self::rumqttd()
        }
    }

    /// rumqttd plus every source of duplicates the protocol allows, for simulations that
    /// hunt for dedup bugs.
    pub fn duplicating() -> Self {
        Self {
            retry_interval: Some(Duration::from_secs(2)),
            spurious_dup: 0.05,
            ..Self::rumqttd()
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self::rumqttd()
    }
}

/// What the broker asks its transport to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(ConnId, Packet),
    /// Close the connection (the broker already forgot it).
    Close(ConnId),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    pub connects: u64,
    /// CONNECTs refused (keepalive 0, empty client id).
    pub refused: u64,
    pub takeovers: u64,
    pub wills_published: u64,
    pub keepalive_timeouts: u64,
    pub protocol_errors: u64,
    /// PUBLISHes received from clients.
    pub published: u64,
    /// PUBLISHes sent to clients, first sends only.
    pub delivered: u64,
    /// Dup resends: on reconnect, by retry timer, or spurious.
    pub redelivered: u64,
    /// Queued messages dropped because a session's queue was full.
    pub queue_dropped: u64,
    pub restarts: u64,
}

/// A session as seen from outside, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub connected: bool,
    pub clean_session: bool,
    pub inflight: usize,
    pub queued: usize,
    pub subscriptions: Vec<(String, QoS)>,
}

#[derive(Debug, Clone)]
struct Conn {
    /// `None` until CONNECT.
    client_id: Option<String>,
    keepalive: Duration,
    last_rx: Instant,
    will: Option<Will>,
}

#[derive(Debug, Clone)]
struct Inflight {
    publish: Publish,
    sent: Instant,
}

#[derive(Debug, Clone)]
struct Session {
    clean: bool,
    conn: Option<ConnId>,
    subs: Vec<(String, QoS)>,
    inflight: VecDeque<Inflight>,
    queue: VecDeque<Publish>,
    next_pkid: u16,
}

impl Session {
    fn new(clean: bool) -> Self {
        Self {
            clean,
            conn: None,
            subs: Vec::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            next_pkid: 1,
        }
    }

    fn alloc_pkid(&mut self) -> u16 {
        // The window is far below 65535, so a free id is always found.
        for _ in 0..u16::MAX {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|i| i.publish.pkid == pkid) {
                return pkid;
            }
        }
        self.next_pkid
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What routing needs besides the sessions, borrowed separately.
struct Out<'a> {
    config: &'a BrokerConfig,
    rng: &'a mut Rng,
    out: &'a mut VecDeque<Output>,
    stats: &'a mut BrokerStats,
}

impl Out<'_> {
    fn deliver(&mut self, s: &mut Session, msg: Publish, now: Instant) {
        match s.conn {
            Some(conn) if msg.qos == QoS::AtMostOnce => {
                self.stats.delivered += 1;
                self.out.push_back(Output::Send(conn, Packet::Publish(msg)));
            }
            Some(conn) if s.queue.is_empty() && s.inflight.len() < self.config.max_inflight => {
                self.send_inflight(s, conn, msg, now);
            }
            Some(_) => self.enqueue(s, msg),
            // QoS 0 to an offline client is not kept, by either broker.
            None if !s.clean && msg.qos == QoS::AtLeastOnce => self.enqueue(s, msg),
            None => {}
        }
    }

    fn send_inflight(&mut self, s: &mut Session, conn: ConnId, mut msg: Publish, now: Instant) {
        msg.pkid = s.alloc_pkid();
        msg.dup = false;
        s.inflight.push_back(Inflight {
            publish: msg.clone(),
            sent: now,
        });
        self.stats.delivered += 1;
        let twice = self.rng.chance(self.config.spurious_dup);
        if twice {
            let mut dup = msg.clone();
            dup.dup = true;
            self.out.push_back(Output::Send(conn, Packet::Publish(msg)));
            self.stats.redelivered += 1;
            self.out.push_back(Output::Send(conn, Packet::Publish(dup)));
        } else {
            self.out.push_back(Output::Send(conn, Packet::Publish(msg)));
        }
    }

    fn enqueue(&mut self, s: &mut Session, msg: Publish) {
        if self.config.max_queued == 0 {
            self.stats.queue_dropped += 1;
            return;
        }
        if s.queue.len() >= self.config.max_queued {
            s.queue.pop_front();
            self.stats.queue_dropped += 1;
        }
        s.queue.push_back(msg);
    }

    /// Moves queued messages into the window.
    fn pump(&mut self, s: &mut Session, now: Instant) {
        let Some(conn) = s.conn else { return };
        while s.inflight.len() < self.config.max_inflight {
            let Some(msg) = s.queue.pop_front() else {
                break;
            };
            self.send_inflight(s, conn, msg, now);
        }
    }
}

#[derive(Debug, Clone)]
pub struct Broker {
    config: BrokerConfig,
    rng: Rng,
    next_conn: u64,
    conns: BTreeMap<ConnId, Conn>,
    sessions: BTreeMap<String, Session>,
    retained: BTreeMap<Arc<str>, Publish>,
    /// Wills due later (the rumqttd quirk).
    pending_wills: Vec<(Instant, Will)>,
    out: VecDeque<Output>,
    stats: BrokerStats,
}

impl Broker {
    pub fn new(config: BrokerConfig, rng: Rng) -> Self {
        Self {
            config,
            rng,
            next_conn: 1,
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            retained: BTreeMap::new(),
            pending_wills: Vec::new(),
            out: VecDeque::new(),
            stats: BrokerStats::default(),
        }
    }

    // ---- getters ----

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.stats
    }

    pub fn retained(&self, topic: &str) -> Option<&Publish> {
        self.retained.get(topic)
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    pub fn session(&self, client_id: &str) -> Option<SessionInfo> {
        self.sessions.get(client_id).map(|s| SessionInfo {
            connected: s.conn.is_some(),
            clean_session: s.clean,
            inflight: s.inflight.len(),
            queued: s.queue.len(),
            subscriptions: s.subs.clone(),
        })
    }

    pub fn is_connected(&self, client_id: &str) -> bool {
        self.sessions
            .get(client_id)
            .is_some_and(|s| s.conn.is_some())
    }

    /// The client id a connection CONNECTed with.
    pub fn client_id(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn)?.client_id.as_deref()
    }

    /// Open network connections (CONNECTed or not).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    // ---- inputs ----

    /// A network connection arrives; the client's CONNECT follows as a packet.
    pub fn accept(&mut self, now: Instant) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                client_id: None,
                keepalive: Duration::from_ticks(0),
                last_rx: now,
                will: None,
            },
        );
        id
    }

    /// `accept` and CONNECT in one call.
    pub fn connect(&mut self, connect: super::mqtt::Connect, now: Instant) -> ConnId {
        let id = self.accept(now);
        self.handle_packet(id, Packet::Connect(connect), now);
        id
    }

    /// SUBSCRIBE one filter (packet id 1).
    pub fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS, now: Instant) {
        let filters = vec![(filter.to_owned(), qos)];
        self.handle_packet(conn, Packet::Subscribe { pkid: 1, filters }, now);
    }

    pub fn publish(&mut self, conn: ConnId, publish: Publish, now: Instant) {
        self.handle_packet(conn, Packet::Publish(publish), now);
    }

    pub fn puback(&mut self, conn: ConnId, pkid: u16, now: Instant) {
        self.handle_packet(conn, Packet::PubAck { pkid }, now);
    }

    pub fn ping(&mut self, conn: ConnId, now: Instant) {
        self.handle_packet(conn, Packet::PingReq, now);
    }

    /// A clean DISCONNECT: the will is discarded.
    pub fn disconnect(&mut self, conn: ConnId, now: Instant) {
        self.handle_packet(conn, Packet::Disconnect, now);
    }

    /// The transport saw the connection die (reset, or closed without DISCONNECT): the will
    /// is published at once.
    pub fn connection_lost(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.conns.remove(&conn) {
            self.detach(conn, c, true, now);
        }
    }

    /// A packet from a client. Packets for unknown (closed) connections are ignored.
    pub fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_rx = now;
        let connected = c.client_id.is_some();
        match packet {
            Packet::Connect(connect) if !connected => self.on_connect(conn, connect, now),
            _ if !connected => self.protocol_error(conn, now),
            Packet::Publish(p) => self.on_publish(conn, p, now),
            Packet::PubAck { pkid } => self.on_puback(conn, pkid, now),
            Packet::Subscribe { pkid, filters } => self.on_subscribe(conn, pkid, filters, now),
            Packet::Unsubscribe { pkid, filters } => {
                if let Some(s) = self.session_of(conn) {
                    s.subs.retain(|(f, _)| !filters.contains(f));
                }
                self.out
                    .push_back(Output::Send(conn, Packet::UnsubAck { pkid }));
            }
            Packet::PingReq => self.out.push_back(Output::Send(conn, Packet::PingResp)),
            Packet::Disconnect => {
                if let Some(c) = self.conns.remove(&conn) {
                    self.detach(conn, c, false, now);
                }
                self.out.push_back(Output::Close(conn));
            }
            // A second CONNECT, or a packet only a server sends.
            Packet::Connect(_)
            | Packet::ConnAck { .. }
            | Packet::SubAck { .. }
            | Packet::UnsubAck { .. }
            | Packet::PingResp => self.protocol_error(conn, now),
        }
    }

    /// Keepalive expiry, late wills, QoS 1 retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| self.expiry(c).is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for conn in expired {
            self.stats.keepalive_timeouts += 1;
            if let Some(c) = self.conns.remove(&conn) {
                self.detach(conn, c, true, now);
            }
            self.out.push_back(Output::Close(conn));
        }

        let mut due = Vec::new();
        self.pending_wills.retain(|(at, will)| {
            let ready = *at <= now;
            if ready {
                due.push(will.clone());
            }
            !ready
        });
        for will in due {
            self.publish_will(will, now);
        }

        if let Some(retry) = self.config.retry_interval {
            for s in self.sessions.values_mut() {
                let Some(conn) = s.conn else { continue };
                for i in s.inflight.iter_mut() {
                    if i.sent.saturating_add(retry) <= now {
                        i.sent = now;
                        let mut dup = i.publish.clone();
                        dup.dup = true;
                        self.stats.redelivered += 1;
                        self.out.push_back(Output::Send(conn, Packet::Publish(dup)));
                    }
                }
            }
        }
    }

    /// The earliest instant [`Broker::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Plain loops: this runs at every step of a simulation.
        let mut next = None;
        for c in self.conns.values() {
            next = earliest(next, self.expiry(c));
        }
        for (at, _) in &self.pending_wills {
            next = earliest(next, Some(*at));
        }
        if let Some(retry) = self.config.retry_interval {
            for s in self.sessions.values().filter(|s| s.conn.is_some()) {
                for i in &s.inflight {
                    next = earliest(next, Some(i.sent.saturating_add(retry)));
                }
            }
        }
        next
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The broker process restarts: every connection is closed (no wills: they die with the
    /// process) and sessions, queues and retained messages are gone, as with rumqttd, which
    /// keeps them in memory only.
    pub fn restart(&mut self, _now: Instant) {
        self.stats.restarts += 1;
        let conns = std::mem::take(&mut self.conns);
        self.out.clear();
        for conn in conns.into_keys() {
            self.out.push_back(Output::Close(conn));
        }
        self.sessions.clear();
        self.retained.clear();
        self.pending_wills.clear();
    }

    // ---- internals ----

    fn expiry(&self, c: &Conn) -> Option<Instant> {
        c.client_id.as_ref()?;
        let grace = c.keepalive.as_ticks() as f64 * self.config.keepalive_factor;
        let deadline = c
            .last_rx
            .saturating_add(Duration::from_ticks(grace.round() as u64));
        Some(match self.config.keepalive_check {
            Some(every) if every.as_ticks() > 0 => {
                let every = every.as_ticks();
                Instant::from_ticks(deadline.as_ticks().div_ceil(every).saturating_mul(every))
            }
            _ => deadline,
        })
    }

    fn parts(&mut self) -> (&mut BTreeMap<String, Session>, Out<'_>) {
        (
            &mut self.sessions,
            Out {
                config: &self.config,
                rng: &mut self.rng,
                out: &mut self.out,
                stats: &mut self.stats,
            },
        )
    }

    fn session_of(&mut self, conn: ConnId) -> Option<&mut Session> {
        let id = self.conns.get(&conn)?.client_id.as_ref()?;
        self.sessions.get_mut(id).filter(|s| s.conn == Some(conn))
    }

    fn protocol_error(&mut self, conn: ConnId, now: Instant) {
        self.stats.protocol_errors += 1;
        if let Some(c) = self.conns.remove(&conn) {
            self.detach(conn, c, true, now);
        }
        self.out.push_back(Output::Close(conn));
    }

    /// Unbinds a closed connection from its session, then publishes its will if asked: the
    /// dying client does not receive its own will.
    fn detach(&mut self, conn: ConnId, c: Conn, will: bool, now: Instant) {
        if let Some(id) = &c.client_id {
            let clean = match self.sessions.get_mut(id) {
                Some(s) if s.conn == Some(conn) => {
                    s.conn = None;
                    s.clean
                }
                _ => false,
            };
            if clean {
                self.sessions.remove(id);
            }
        }
        if let (true, Some(w)) = (will, c.will) {
            self.publish_will(w, now);
        }
    }

    fn publish_will(&mut self, will: Will, now: Instant) {
        self.stats.wills_published += 1;
        let msg = Publish::new(will.topic, will.payload, will.qos, will.retain);
        self.route(msg, now);
    }

    fn on_connect(&mut self, conn: ConnId, connect: super::mqtt::Connect, now: Instant) {
        if connect.keepalive_s == 0 || connect.client_id.is_empty() {
            // rumqttd closes a keepalive-0 connection without CONNACK.
            self.stats.refused += 1;
            if connect.keepalive_s != 0 {
                let refused = Packet::ConnAck {
                    session_present: false,
                    code: ConnectCode::IdentifierRejected,
                };
                self.out.push_back(Output::Send(conn, refused));
            }
            self.conns.remove(&conn);
            self.out.push_back(Output::Close(conn));
            return;
        }
        self.stats.connects += 1;
        let id = connect.client_id;
        let mut will = connect.will;

        // Takeover: the old connection is closed. MQTT 3.1.1 does not list a takeover among
        // the will triggers; we follow mosquitto: the old will is published unless the session
        // continues (both connections clean_session = false), which is the case Tether uses
        // and in which rumqttd was measured correct (10 of 10).
        let old = self
            .sessions
            .get(&id)
            .and_then(|s| Some((s.conn?, s.clean)));
        if let Some((old_conn, old_clean)) = old {
            self.stats.takeovers += 1;
            let old_state = self.conns.remove(&old_conn);
            if let Some(s) = self.sessions.get_mut(&id) {
                s.conn = None;
            }
            self.out.push_back(Output::Close(old_conn));
            let continued = !old_clean && !connect.clean_session;
            if let Some(w) = old_state.and_then(|c| c.will).filter(|_| !continued) {
                self.publish_will(w, now);
            }
            if connect.clean_session {
                if let Some(delay) = self.config.will_mixup {
                    // rumqttd quirk: the new session's will fires on the old connection's death.
                    if let Some(w) = will.take() {
                        self.pending_wills.push((now.saturating_add(delay), w));
                    }
                }
            }
        }

        let resumed = !connect.clean_session && self.sessions.get(&id).is_some_and(|s| !s.clean);
        if !resumed {
            self.sessions
                .insert(id.clone(), Session::new(connect.clean_session));
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.client_id = Some(id.clone());
            c.keepalive = Duration::from_secs(u64::from(connect.keepalive_s));
            c.will = will;
        }
        let ack = Packet::ConnAck {
            session_present: resumed,
            code: ConnectCode::Accepted,
        };
        self.out.push_back(Output::Send(conn, ack));

        let (sessions, mut out) = self.parts();
        let Some(s) = sessions.get_mut(&id) else {
            return;
        };
        s.conn = Some(conn);
        if resumed {
            // MQTT 3.1.1 4.4: unacknowledged QoS 1 messages are resent, dup, on resumption.
            for i in s.inflight.iter_mut() {
                i.sent = now;
                let mut dup = i.publish.clone();
                dup.dup = true;
                out.stats.redelivered += 1;
                out.out.push_back(Output::Send(conn, Packet::Publish(dup)));
            }
            out.pump(s, now);
        }
    }

    fn on_publish(&mut self, conn: ConnId, p: Publish, now: Instant) {
        if !valid_topic(&p.topic) {
            self.protocol_error(conn, now);
            return;
        }
        self.stats.published += 1;
        let ack = (p.qos == QoS::AtLeastOnce).then_some(p.pkid);
        let msg = Publish::new(p.topic, p.payload, p.qos, p.retain);
        self.route(msg, now);
        if let Some(pkid) = ack {
            self.out
                .push_back(Output::Send(conn, Packet::PubAck { pkid }));
        }
    }

    /// Stores or clears the retained message, then hands the publish to every matching
    /// session at most once (at the highest QoS among its matching subscriptions).
    fn route(&mut self, msg: Publish, now: Instant) {
        if msg.retain {
            if msg.payload.is_empty() {
                self.retained.remove(&msg.topic);
            } else {
                self.retained.insert(msg.topic.clone(), msg.clone());
            }
        }
        let upgrade = self.config.upgrade_qos0;
        let (sessions, mut out) = self.parts();
        for s in sessions.values_mut() {
            let best = s
                .subs
                .iter()
                .filter(|(f, _)| matches(f, &msg.topic))
                .map(|(_, q)| *q)
                .max();
            let Some(sub_qos) = best else { continue };
            let mut copy = msg.clone();
            copy.retain = false;
            copy.qos = if upgrade {
                sub_qos
            } else {
                sub_qos.min(msg.qos)
            };
            out.deliver(s, copy, now);
        }
    }

    fn on_puback(&mut self, conn: ConnId, pkid: u16, now: Instant) {
        let Some(id) = self.conns.get(&conn).and_then(|c| c.client_id.clone()) else {
            return;
        };
        let (sessions, mut out) = self.parts();
        let Some(s) = sessions.get_mut(&id).filter(|s| s.conn == Some(conn)) else {
            return;
        };
        // An ack for something no longer in flight (a dup acked twice) is ignored.
        s.inflight.retain(|i| i.publish.pkid != pkid);
        out.pump(s, now);
    }

    fn on_subscribe(&mut self, conn: ConnId, pkid: u16, filters: Vec<(String, QoS)>, now: Instant) {
        let Some(id) = self.conns.get(&conn).and_then(|c| c.client_id.clone()) else {
            return;
        };
        let mut granted = Vec::with_capacity(filters.len());
        let mut accepted = Vec::new();
        if let Some(s) = self.sessions.get_mut(&id) {
            for (filter, qos) in filters {
                if !valid_filter(&filter) {
                    granted.push(None);
                    continue;
                }
                match s.subs.iter_mut().find(|(f, _)| *f == filter) {
                    Some(existing) => existing.1 = qos,
                    None => s.subs.push((filter.clone(), qos)),
                }
                granted.push(Some(qos));
                accepted.push((filter, qos));
            }
        }
        self.out
            .push_back(Output::Send(conn, Packet::SubAck { pkid, granted }));
        // Retained messages follow the SUBACK, flagged retain, in topic order.
        let upgrade = self.config.upgrade_qos0;
        let retained: Vec<Publish> = accepted
            .iter()
            .flat_map(|(filter, qos)| {
                self.retained
                    .values()
                    .filter(move |r| matches(filter, &r.topic))
                    .map(move |r| {
                        let mut copy = r.clone();
                        copy.qos = if upgrade { *qos } else { (*qos).min(r.qos) };
                        copy
                    })
            })
            .collect();
        let (sessions, mut out) = self.parts();
        if let Some(s) = sessions.get_mut(&id) {
            for msg in retained {
                out.deliver(s, msg, now);
            }
        }
    }
}
