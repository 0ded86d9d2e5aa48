//! A model of rumqttc 0.25's event loop as its owner sees it: it connects, pings every
//! keepalive, notices a dead connection when a PINGRESP is still missing at the next ping, and
//! reconnects after a pause. The owner (an agent core, a scripted master) sees only
//! [`ClientEvent`]s and calls [`Client::publish`] / [`Client::subscribe`].
//!
//! Faithful details that tests rely on:
//! - QoS 1 publishes are kept until PUBACK and resent (dup) after a reconnect, before anything
//!   new; but when the broker answers `session_present = false` (it restarted, or the session
//!   was clean), everything unacknowledged is dropped, as rumqttc does. Hence end-to-end acks.
//! - Incoming QoS 1 publishes are acknowledged on receipt, before the owner sees them, and
//!   duplicates are passed on as they come: receivers must dedup.
//! - Requests go through a bounded queue (rumqttc's request channel); when it is full,
//!   `publish` fails with [`ClientError::Full`] instead of blocking.
//! - The subscriptions are (re)made after every CONNACK, after resending pending publishes.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use tether_core::{Duration, Instant};

use super::mqtt::{Connect, ConnectCode, Packet, Publish, QoS, Will, valid_filter, valid_topic};

#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub client_id: String,
    pub clean_session: bool,
    /// Seconds, as on the wire; 0 means no pings (and rumqttd refuses it).
    pub keepalive_s: u16,
    pub will: Option<Will>,
    /// TCP connect plus CONNACK (rumqttc's default is 5 s).
    pub connect_timeout: Duration,
    /// The owner's pause before polling the event loop again after an error.
    pub reconnect_delay: Duration,
    /// Unacknowledged QoS 1 publishes in flight; more wait in the request queue.
    pub max_inflight: usize,
    /// Capacity of the request queue.
    pub request_cap: usize,
    pub subscriptions: Vec<(String, QoS)>,
}

impl ClientConfig {
    /// Tether's choices: `clean_session = false`, keepalive 5 s, a 1 s reconnect pause.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            clean_session: false,
            keepalive_s: 5,
            will: None,
            connect_timeout: Duration::from_secs(5),
            reconnect_delay: Duration::from_secs(1),
            max_inflight: 100,
            request_cap: 64,
            subscriptions: Vec::new(),
        }
    }
}

/// What the owner hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// CONNACK accepted; subscriptions are on their way.
    Connected {
        session_present: bool,
    },
    Disconnected,
    /// A publish on a subscribed topic (possibly a duplicate).
    Message(Publish),
}

/// What the client asks its transport to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Open a new connection (the previous one, if any, was closed first).
    Open,
    Send(Packet),
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// The client is stopped (killed or disconnected by its owner).
    Stopped,
    /// The request queue is full.
    Full,
    InvalidTopic,
    InvalidFilter,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stopped => "client is stopped",
            Self::Full => "request queue is full",
            Self::InvalidTopic => "invalid topic name",
            Self::InvalidFilter => "invalid topic filter",
        })
    }
}

impl std::error::Error for ClientError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Stopped,
    /// Pausing before the next connection attempt.
    Waiting {
        until: Instant,
    },
    Connecting {
        deadline: Instant,
    },
    Connected,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub connects: u64,
    pub failed_connects: u64,
    /// Established connections that were lost (not counting the owner's disconnects).
    pub lost: u64,
    pub ping_timeouts: u64,
    pub pings: u64,
    pub received: u64,
    pub received_dups: u64,
    pub retransmitted: u64,
    /// Unacknowledged publishes dropped because the broker had no session for us.
    pub dropped_pending: u64,
}

#[derive(Debug, Clone)]
pub struct Client {
    config: ClientConfig,
    state: ClientState,
    /// The owner's requests not sent yet.
    outbox: VecDeque<Publish>,
    /// Left over from the previous connection, resent first.
    pending: VecDeque<Publish>,
    inflight: VecDeque<Publish>,
    next_pkid: u16,
    next_ping: Instant,
    await_pingresp: bool,
    out: VecDeque<ClientOutput>,
    events: VecDeque<ClientEvent>,
    stats: ClientStats,
}

/// Keeps a zero pause from reconnecting forever within one instant.
const MIN_PAUSE: Duration = Duration::from_millis(1);

impl Client {
    /// A stopped client; [`Client::start`] begins connecting.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            state: ClientState::Stopped,
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            inflight: VecDeque::new(),
            next_pkid: 1,
            next_ping: Instant::from_ticks(0),
            await_pingresp: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
        }
    }

    // ---- getters ----

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Changes apply from the next connection attempt (a new will after a restart, say).
    pub fn config_mut(&mut self) -> &mut ClientConfig {
        &mut self.config
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn is_connected(&self) -> bool {
        self.state == ClientState::Connected
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Publishes waiting to be sent (queued, or pending from the last connection).
    pub fn queued(&self) -> usize {
        self.outbox.len() + self.pending.len()
    }

    /// QoS 1 publishes sent and not acknowledged.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    // ---- owner's requests ----

    pub fn start(&mut self, now: Instant) {
        if self.state == ClientState::Stopped {
            self.begin_connect(now);
        }
    }

    pub fn publish(
        &mut self,
        topic: impl Into<Arc<str>>,
        payload: impl Into<Arc<[u8]>>,
        qos: QoS,
        retain: bool,
        _now: Instant,
    ) -> Result<(), ClientError> {
        if self.state == ClientState::Stopped {
            return Err(ClientError::Stopped);
        }
        let msg = Publish::new(topic, payload, qos, retain);
        if !valid_topic(&msg.topic) {
            return Err(ClientError::InvalidTopic);
        }
        if self.is_connected() && self.outbox.is_empty() && self.window_open(qos) {
            self.send_publish(msg);
            return Ok(());
        }
        if self.outbox.len() >= self.config.request_cap {
            return Err(ClientError::Full);
        }
        self.outbox.push_back(msg);
        Ok(())
    }

    /// Adds (or changes) a subscription, kept for every later connection.
    pub fn subscribe(&mut self, filter: &str, qos: QoS, _now: Instant) -> Result<(), ClientError> {
        if !valid_filter(filter) {
            return Err(ClientError::InvalidFilter);
        }
        match self
            .config
            .subscriptions
            .iter_mut()
            .find(|(f, _)| f == filter)
        {
            Some(existing) => existing.1 = qos,
            None => self.config.subscriptions.push((filter.to_owned(), qos)),
        }
        if self.is_connected() {
            let pkid = self.alloc_pkid();
            let filters = vec![(filter.to_owned(), qos)];
            self.send(Packet::Subscribe { pkid, filters });
        }
        Ok(())
    }

    /// A clean DISCONNECT (the broker discards the will); the client stays stopped, keeping
    /// its unacknowledged publishes for a later [`Client::start`].
    pub fn disconnect(&mut self, _now: Instant) {
        match self.state {
            ClientState::Connected => {
                self.send(Packet::Disconnect);
                self.out.push_back(ClientOutput::Close);
                self.park();
                self.events.push_back(ClientEvent::Disconnected);
            }
            ClientState::Connecting { .. } => self.out.push_back(ClientOutput::Close),
            _ => {}
        }
        self.state = ClientState::Stopped;
    }

    /// The process dies: the socket is closed without DISCONNECT (the broker publishes the
    /// will when the close reaches it) and everything in memory is lost.
    pub fn kill(&mut self, _now: Instant) {
        match self.state {
            ClientState::Connected => {
                self.out.push_back(ClientOutput::Close);
                self.events.push_back(ClientEvent::Disconnected);
            }
            ClientState::Connecting { .. } => self.out.push_back(ClientOutput::Close),
            _ => {}
        }
        self.state = ClientState::Stopped;
        self.outbox.clear();
        self.pending.clear();
        self.inflight.clear();
        self.next_pkid = 1;
        self.await_pingresp = false;
    }

    // ---- transport side ----

    /// A packet from the broker on the current connection.
    pub fn handle_packet(&mut self, packet: Packet, now: Instant) {
        match (self.state, packet) {
            (
                ClientState::Connecting { .. },
                Packet::ConnAck {
                    session_present,
                    code,
                },
            ) => {
                if code == ConnectCode::Accepted {
                    self.on_connack(session_present, now);
                } else {
                    self.out.push_back(ClientOutput::Close);
                    self.fail(now);
                }
            }
            (ClientState::Connected, Packet::Publish(p)) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(Packet::PubAck { pkid: p.pkid });
                }
                self.stats.received += 1;
                if p.dup {
                    self.stats.received_dups += 1;
                }
                self.events.push_back(ClientEvent::Message(p));
            }
            (ClientState::Connected, Packet::PubAck { pkid }) => {
                self.inflight.retain(|p| p.pkid != pkid);
                self.flush_outbox();
            }
            (ClientState::Connected, Packet::PingResp) => self.await_pingresp = false,
            // SUBACK and UNSUBACK need no action; nothing else comes before CONNACK.
            _ => {}
        }
    }

    /// The connection closed under us (reset, or the broker closed it).
    pub fn handle_closed(&mut self, now: Instant) {
        match self.state {
            ClientState::Connecting { .. } => self.fail(now),
            ClientState::Connected => self.lose(now),
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            ClientState::Waiting { until } if until <= now => self.begin_connect(now),
            ClientState::Connecting { deadline } if deadline <= now => {
                self.out.push_back(ClientOutput::Close);
                self.fail(now);
            }
            ClientState::Connected if self.config.keepalive_s > 0 && self.next_ping <= now => {
                if self.await_pingresp {
                    // rumqttc's AwaitPingResp: the previous ping was never answered.
                    self.stats.ping_timeouts += 1;
                    self.out.push_back(ClientOutput::Close);
                    self.lose(now);
                } else {
                    self.stats.pings += 1;
                    self.await_pingresp = true;
                    self.next_ping = now.saturating_add(self.keepalive());
                    self.send(Packet::PingReq);
                }
            }
            _ => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ClientState::Stopped => None,
            ClientState::Waiting { until } => Some(until),
            ClientState::Connecting { deadline } => Some(deadline),
            ClientState::Connected if self.config.keepalive_s > 0 => Some(self.next_ping),
            ClientState::Connected => None,
        }
    }

    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    // ---- internals ----

    fn keepalive(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.keepalive_s))
    }

    fn window_open(&self, qos: QoS) -> bool {
        qos == QoS::AtMostOnce || self.inflight.len() < self.config.max_inflight
    }

    fn send(&mut self, packet: Packet) {
        self.out.push_back(ClientOutput::Send(packet));
    }

    fn alloc_pkid(&mut self) -> u16 {
        for _ in 0..u16::MAX {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|p| p.pkid == pkid) {
                return pkid;
            }
        }
        self.next_pkid
    }

    fn send_publish(&mut self, mut msg: Publish) {
        if msg.qos == QoS::AtLeastOnce {
            if msg.pkid == 0 {
                msg.pkid = self.alloc_pkid();
            }
            self.inflight.push_back(msg.clone());
        }
        self.send(Packet::Publish(msg));
    }

    fn flush_outbox(&mut self) {
        while let Some(front) = self.outbox.front() {
            if !self.window_open(front.qos) {
                break;
            }
            if let Some(msg) = self.outbox.pop_front() {
                self.send_publish(msg);
            }
        }
    }

    fn begin_connect(&mut self, now: Instant) {
        self.state = ClientState::Connecting {
            deadline: now.saturating_add(self.config.connect_timeout.max(MIN_PAUSE)),
        };
        self.out.push_back(ClientOutput::Open);
        self.send(Packet::Connect(Connect {
            client_id: self.config.client_id.clone(),
            clean_session: self.config.clean_session,
            keepalive_s: self.config.keepalive_s,
            will: self.config.will.clone(),
        }));
    }

    fn on_connack(&mut self, session_present: bool, now: Instant) {
        self.state = ClientState::Connected;
        self.stats.connects += 1;
        self.await_pingresp = false;
        self.next_ping = now.saturating_add(self.keepalive());
        if !session_present {
            self.stats.dropped_pending += self.pending.len() as u64;
            self.pending.clear();
        }
        self.events
            .push_back(ClientEvent::Connected { session_present });
        // rumqttc sends what is pending first, regardless of the window.
        while let Some(mut msg) = self.pending.pop_front() {
            if msg.qos == QoS::AtLeastOnce {
                msg.dup = true;
                self.stats.retransmitted += 1;
            }
            self.send_publish(msg);
        }
        if !self.config.subscriptions.is_empty() {
            let pkid = self.alloc_pkid();
            let filters = self.config.subscriptions.clone();
            self.send(Packet::Subscribe { pkid, filters });
        }
        self.flush_outbox();
    }

    /// Keeps what was not acknowledged for the next connection (rumqttc's `clean()`).
    fn park(&mut self) {
        self.pending.extend(self.inflight.drain(..));
        self.pending.extend(self.outbox.drain(..));
        self.await_pingresp = false;
    }

    fn fail(&mut self, now: Instant) {
        self.stats.failed_connects += 1;
        self.wait(now);
    }

    fn lose(&mut self, now: Instant) {
        self.stats.lost += 1;
        self.park();
        self.events.push_back(ClientEvent::Disconnected);
        self.wait(now);
    }

    fn wait(&mut self, now: Instant) {
        self.state = ClientState::Waiting {
            until: now.saturating_add(self.config.reconnect_delay.max(MIN_PAUSE)),
        };
    }
}
