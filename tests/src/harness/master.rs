//! [`ScriptedMaster`]: the master side of the protocol for one agent, and nothing else.
//!
//! A rumqttc client (Tether's client options: `TCP_NODELAY`, `clean_session = false`, a
//! presence will) that
//! - subscribes to the agent's event, heartbeat and presence topics (again after every
//!   reconnect);
//! - publishes a [`MasterHeartbeat`] every period while not [silent](ScriptedMaster::set_silent);
//! - sends `Start` and retransmits it every period until the agent answers with `Accepted` or
//!   `Rejected` for that attempt, and sends `Kill` and raw payloads on request;
//! - keeps the agent's events by sequence number (a redelivery is counted, and a redelivery
//!   with different content is recorded as a conflict), and acknowledges the contiguous prefix
//!   while [acking](ScriptedMaster::set_acking);
//! - lets a test wait, bounded, for a condition on all it has received ([`ScriptedMaster::wait_for`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, Packet, QoS, SubscribeFilter};
use tether_core::auth::{AgentKey, SigningKey, Verifier};
use tether_core::message::{
    AgentHeartbeat, Command, CommandBody, Event, EventKind, Exit, KillCause, MasterHeartbeat,
    Message, StrList, Stream, TaskRef, TaskSpec,
};
use tether_core::policy::{OnDisconnect, Policy};
use tether_core::presence::{Presence, State};
use tether_core::topic::{Topic, validate_id};
use tether_core::wire::{self, Signer};
use tether_master::broker::{BrokerAddr, ClientSettings};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::WAIT;

/// A policy for tests: heartbeats every second, the master lost after 10 s, 1 s of grace.
pub const TEST_POLICY: Policy = Policy {
    on_disconnect: OnDisconnect::Kill,
    heartbeat_period_ms: 1_000,
    heartbeat_timeout_ms: 10_000,
    grace_ms: 1_000,
    max_run_ms: 0,
    output_cap: 1 << 20,
};

/// A start of attempt `task`/1 running `argv` under [`TEST_POLICY`].
pub fn spec(task: u64, argv: &[&str]) -> TaskSpec {
    TaskSpec {
        task: TaskRef {
            task,
            attempt: task,
        },
        policy: TEST_POLICY,
        start_at_unix_ms: None,
        argv: StrList::from_items(argv.iter().copied()).expect("argv fits"),
        env: StrList::new(),
        cwd: heapless::String::new(),
    }
}

/// `sh -c SCRIPT`.
pub fn sh(task: u64, script: &str) -> TaskSpec {
    spec(task, &["/bin/sh", "-c", script])
}

/// The attempt [`spec`] and [`sh`] give task `task`.
pub fn task_ref(task: u64) -> TaskRef {
    TaskRef {
        task,
        attempt: task,
    }
}

/// Everything the master received from its agent.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Events by sequence number.
    pub events: BTreeMap<u64, Event>,
    /// Events received again with the same content (retransmissions, replays).
    pub duplicates: u64,
    /// A sequence number received twice with different content: always a bug.
    pub conflicts: Vec<(Event, Event)>,
    pub heartbeats: u64,
    pub last_heartbeat: Option<AgentHeartbeat>,
    /// Every presence payload with a valid MAC, in order (retained ones included), as its text
    /// without the tag.
    pub presence: Vec<String>,
    /// Payloads on the event, heartbeat or presence topic that did not decode or verify.
    pub undecodable: u64,
    /// Highest `Ack { up_to }` sent.
    pub acked: u64,
    first_seq: Option<u64>,
    /// Starts not answered yet: sent again (with a new counter) every period.
    pending_starts: BTreeMap<TaskRef, TaskSpec>,
}

impl Seen {
    /// Highest `n` such that every event from the first one received up to `n` is here.
    pub fn contiguous(&self) -> u64 {
        let Some(first) = self.first_seq else {
            return 0;
        };
        let mut n = first - 1;
        while self.events.contains_key(&(n + 1)) {
            n += 1;
        }
        n
    }

    /// The events about `task`, in sequence order.
    pub fn of(&self, task: TaskRef) -> Vec<&EventKind> {
        self.events
            .values()
            .map(|e| &e.kind)
            .filter(|k| k.task() == Some(task))
            .collect()
    }

    pub fn any(&self, mut f: impl FnMut(&EventKind) -> bool) -> bool {
        self.events.values().any(|e| f(&e.kind))
    }

    /// Commands the agent reported dropping (its reports are coalesced: the sum of counts).
    pub fn bad_commands(&self) -> u64 {
        self.events
            .values()
            .map(|e| match e.kind {
                EventKind::BadCommand { count, .. } => count,
                _ => 0,
            })
            .sum()
    }

    pub fn count(&self, mut f: impl FnMut(&EventKind) -> bool) -> usize {
        self.events.values().filter(|e| f(&e.kind)).count()
    }

    /// `(exit, cause, output_dropped)` of the attempt, once finished.
    pub fn finished(&self, task: TaskRef) -> Option<(Exit, Option<KillCause>, u64)> {
        self.events.values().find_map(|e| match e.kind {
            EventKind::Finished {
                task: t,
                exit,
                cause,
                output_dropped,
            } if t == task => Some((exit, cause, output_dropped)),
            _ => None,
        })
    }

    /// The pid of the attempt's process, once started.
    pub fn started(&self, task: TaskRef) -> Option<u32> {
        self.events.values().find_map(|e| match e.kind {
            EventKind::Started { task: t, pid } if t == task => Some(pid),
            _ => None,
        })
    }

    /// Output of one stream of the attempt, assembled by offset; panics on a gap or overlap,
    /// which would mean lost or repeated output.
    pub fn output(&self, task: TaskRef, stream: Stream) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.events.values() {
            if let EventKind::Output {
                task: t,
                stream: s,
                offset,
                data,
            } = &e.kind
                && *t == task
                && *s == stream
            {
                assert_eq!(*offset, out.len() as u64, "output of {task:?} has a gap");
                out.extend_from_slice(data);
            }
        }
        out
    }

    /// The incarnation of the latest `online` presence.
    pub fn online_incarnation(&self) -> Option<u32> {
        self.presence.iter().rev().find_map(|p| {
            Presence::parse(p.as_bytes())
                .ok()
                .filter(|p| p.state == State::Online)
                .map(|p| p.incarnation)
        })
    }

    /// A readable dump for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for e in self.events.values() {
            s.push_str(&format!("  #{} {:?}\n", e.seq, short(&e.kind)));
        }
        s.push_str(&format!(
            "  duplicates {} conflicts {} heartbeats {} acked {} presence {:?}\n  last heartbeat {:?}\n",
            self.duplicates,
            self.conflicts.len(),
            self.heartbeats,
            self.acked,
            self.presence,
            self.last_heartbeat
        ));
        s
    }
}

/// An event without the bulk of its output, for dumps.
fn short(kind: &EventKind) -> String {
    match kind {
        EventKind::Output {
            task,
            stream,
            offset,
            data,
        } => format!(
            "Output {{ {}/{} {stream:?} @{offset} {} bytes }}",
            task.task,
            task.attempt,
            data.len()
        ),
        other => format!("{other:?}"),
    }
}

#[derive(Debug)]
struct Shared {
    seen: Mutex<Seen>,
    changed: watch::Sender<u64>,
    silent: AtomicBool,
    acking: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

#[derive(Debug)]
struct Topics {
    cmd: String,
    event: String,
    heartbeat: String,
    presence: String,
    master_heartbeat: String,
}

#[derive(Debug)]
struct Sender {
    client: AsyncClient,
    topics: Topics,
    epoch: u32,
    counter: AtomicU64,
    /// The agent's journal, as its latest heartbeat or event named it (0 before one).
    journal: AtomicU32,
    period: Duration,
    key: SigningKey,
    agent_key: AgentKey,
}

impl Sender {
    /// A command signed for the agent's command topic, with the next counter.
    fn command(&self, body: CommandBody) -> Vec<u8> {
        let msg = Message::Command(Command {
            epoch: self.epoch,
            counter: self.counter.fetch_add(1, Ordering::Relaxed),
            journal: self.journal.load(Ordering::Relaxed),
            body,
        });
        self.sign(&msg, &self.topics.cmd)
    }

    fn sign(&self, msg: &Message, topic: &str) -> Vec<u8> {
        let mut buf = [0u8; wire::MAX_MESSAGE];
        wire::encode_signed(msg, topic, &self.key, &mut buf)
            .expect("message fits")
            .to_vec()
    }

    /// Only what the agent MAC'd for the topic counts; the rest is undecodable.
    fn verified(&self, topic: &str, payload: &[u8]) -> Option<Message> {
        wire::decode_verified(payload, topic, Verifier::Agent(&self.agent_key)).ok()
    }

    fn publish_cmd(&self, payload: Vec<u8>) -> bool {
        self.client
            .try_publish(&self.topics.cmd, QoS::AtLeastOnce, false, payload)
            .is_ok()
    }

    /// Acknowledges the contiguous prefix if it grew (and acking is on).
    fn maybe_ack(&self, shared: &Shared) {
        if shared.silent.load(Ordering::SeqCst) || !shared.acking.load(Ordering::SeqCst) {
            return;
        }
        let mut seen = shared.lock();
        let up_to = seen.contiguous();
        if up_to > seen.acked && self.publish_cmd(self.command(CommandBody::Ack { up_to })) {
            seen.acked = up_to;
        }
    }

    fn tick(&self, shared: &Shared) {
        if shared.silent.load(Ordering::SeqCst) {
            return;
        }
        let hb = Message::MasterHeartbeat(MasterHeartbeat {
            epoch: self.epoch,
            counter: self.counter.fetch_add(1, Ordering::Relaxed),
            period_ms: self.period.as_millis() as u64,
        });
        let payload = self.sign(&hb, &self.topics.master_heartbeat);
        let _ = self.client.try_publish(
            &self.topics.master_heartbeat,
            QoS::AtMostOnce,
            false,
            payload,
        );
        let pending: Vec<TaskSpec> = shared.lock().pending_starts.values().cloned().collect();
        for spec in pending {
            self.publish_cmd(self.command(CommandBody::Start(spec)));
        }
        self.maybe_ack(shared);
    }

    fn on_publish(&self, shared: &Shared, topic: &str, payload: &[u8]) {
        if topic == self.topics.presence && payload.is_empty() {
            // A cleared retained value says nothing.
            return;
        } else if topic == self.topics.presence {
            // Kept as its text without the MAC tag, and only if the MAC is the agent's.
            let verified =
                Presence::parse_verified(payload, topic, Verifier::Agent(&self.agent_key));
            let mut seen = shared.lock();
            match verified {
                Ok(p) => seen.presence.push(p.render().to_string()),
                Err(_) => seen.undecodable += 1,
            }
        } else if topic == self.topics.heartbeat {
            let mut seen = shared.lock();
            match self.verified(topic, payload) {
                Some(Message::AgentHeartbeat(hb)) => {
                    self.journal.store(hb.journal, Ordering::Relaxed);
                    seen.heartbeats += 1;
                    seen.last_heartbeat = Some(hb);
                }
                _ => seen.undecodable += 1,
            }
        } else if topic == self.topics.event {
            {
                let mut seen = shared.lock();
                match self.verified(topic, payload) {
                    Some(Message::Event(report)) => {
                        self.journal.store(report.journal, Ordering::Relaxed);
                        let event = report.event;
                        if let EventKind::Accepted { task } | EventKind::Rejected { task, .. } =
                            event.kind
                        {
                            seen.pending_starts.remove(&task);
                        }
                        if seen.first_seq.is_none_or(|f| event.seq < f) {
                            seen.first_seq = Some(event.seq);
                        }
                        match seen.events.get(&event.seq) {
                            Some(old) if *old == event => seen.duplicates += 1,
                            Some(old) => {
                                let old = old.clone();
                                seen.conflicts.push((old, event));
                            }
                            None => {
                                seen.events.insert(event.seq, event);
                            }
                        }
                    }
                    _ => seen.undecodable += 1,
                }
            }
            self.maybe_ack(shared);
        } else {
            return;
        }
        shared.bump();
    }
}

/// See the module docs. Dropping it stops its tasks (the connection closes without a goodbye).
#[derive(Debug)]
pub struct ScriptedMaster {
    sender: Arc<Sender>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl ScriptedMaster {
    /// Connects to `broker` as the master of agent `agent_id` (prefix `tether`), heartbeating
    /// every `period`, and waits (bounded) until it is subscribed.
    pub async fn start(broker: std::net::SocketAddr, agent_id: &str, period: Duration) -> Self {
        let prefix = tether_core::topic::DEFAULT_PREFIX;
        let id = validate_id(agent_id).expect("valid agent id");
        let build = |t: Topic| t.build(prefix).expect("topic").to_string();
        let topics = Topics {
            cmd: build(Topic::AgentCommand(id.clone())),
            event: build(Topic::AgentEvent(id.clone())),
            heartbeat: build(Topic::AgentHeartbeat(id.clone())),
            presence: build(Topic::AgentPresence(id.clone())),
            master_heartbeat: build(Topic::MasterHeartbeat),
        };
        let epoch = next_epoch();
        let client_id = format!("m-{agent_id}");
        let client_id: String = client_id.chars().take(32).collect();
        let mut settings = ClientSettings::master(&client_id, prefix, epoch, period);
        let will = Presence {
            state: State::Lost,
            incarnation: epoch,
        };
        let presence_topic = build(Topic::MasterPresence);
        let signing_key = crate::keys::master();
        settings.will = Some(
            will.render_signed(&presence_topic, Signer::Master(&signing_key))
                .as_str()
                .to_owned(),
        );
        let (client, mut eventloop) = settings
            .connect(&BrokerAddr::from(broker), 1024)
            .expect("master client options");
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            changed,
            silent: AtomicBool::new(false),
            acking: AtomicBool::new(true),
        });
        let sender = Arc::new(Sender {
            client,
            topics,
            epoch,
            counter: AtomicU64::new(1),
            journal: AtomicU32::new(0),
            period,
            key: crate::keys::master(),
            agent_key: crate::keys::agent(agent_id),
        });
        let (subscribed_tx, mut subscribed_rx) = watch::channel(false);
        let net = {
            let sender = sender.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                            let t = &sender.topics;
                            let filters = [&t.event, &t.heartbeat, &t.presence]
                                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                            let _ = sender.client.try_subscribe_many(filters);
                        }
                        Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                            let _ = subscribed_tx.send(true);
                        }
                        Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                            sender.on_publish(&shared, &p.topic, &p.payload);
                        }
                        Ok(_) => {}
                        // rumqttc reconnects on the next poll; pace it (a broker restart).
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        };
        let ticker = {
            let sender = sender.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(period);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    sender.tick(&shared);
                }
            })
        };
        let master = Self {
            sender,
            shared,
            tasks: vec![net, ticker],
        };
        let ok = tokio::time::timeout(WAIT, subscribed_rx.wait_for(|s| *s)).await;
        assert!(
            matches!(ok, Ok(Ok(_))),
            "scripted master not subscribed within {WAIT:?}"
        );
        master
    }

    /// Stops every publication (heartbeats, acks, start retransmissions, commands) while
    /// staying connected and subscribed: to the agent, the master has gone quiet.
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
        if !silent {
            self.sender.tick(&self.shared);
        }
    }

    /// Stops or resumes acknowledging events (they are still received and kept).
    pub fn set_acking(&self, acking: bool) {
        self.shared.acking.store(acking, Ordering::SeqCst);
        self.sender.maybe_ack(&self.shared);
    }

    /// Sends `Start` now and every period until the agent accepts or rejects it.
    pub fn start_task(&self, spec: TaskSpec) {
        let task = spec.task;
        let payload = self.sender.command(CommandBody::Start(spec.clone()));
        self.shared.lock().pending_starts.insert(task, spec);
        if !self.shared.silent.load(Ordering::SeqCst) {
            self.sender.publish_cmd(payload);
        }
    }

    /// Sends `Kill` once (QoS 1).
    pub fn kill_task(&self, task: TaskRef) {
        let payload = self.sender.command(CommandBody::Kill { task });
        assert!(self.sender.publish_cmd(payload), "kill queued");
    }

    /// Publishes `payload` as is on the agent's command topic (QoS 1).
    pub fn publish_raw_command(&self, payload: Vec<u8>) {
        assert!(self.sender.publish_cmd(payload), "raw command queued");
    }

    /// An encoded command with this master's epoch and next counter, signed (to mangle in
    /// tests).
    pub fn encode_command(&self, body: CommandBody) -> Vec<u8> {
        self.sender.command(body)
    }

    /// `msg` signed by this master for the agent's command topic, whatever it is.
    pub fn sign_for_command_topic(&self, msg: &Message) -> Vec<u8> {
        self.sender.sign(msg, &self.sender.topics.cmd)
    }

    /// `bytes` (an envelope without its trailer, scheme 1) with this master's signature for the
    /// command topic appended: a valid signature over whatever the bytes say.
    pub fn seal_for_command_topic(&self, bytes: &[u8]) -> Vec<u8> {
        let mut sealed = bytes.to_vec();
        sealed.extend_from_slice(&self.sender.key.sign(&self.sender.topics.cmd, bytes));
        sealed
    }

    /// A copy of everything received so far.
    pub fn seen(&self) -> Seen {
        self.shared.lock().clone()
    }

    /// Waits until `f` finds what it looks for in what was received, at most [`WAIT`];
    /// panics (with a dump) otherwise.
    pub async fn wait_for<T>(&self, what: &str, f: impl FnMut(&Seen) -> Option<T>) -> T {
        match self.wait_within(WAIT, f).await {
            Some(v) => v,
            None => panic!(
                "waited {WAIT:?} for {what}; the master saw:\n{}",
                self.shared.lock().dump()
            ),
        }
    }

    /// Like [`Self::wait_for`] with another bound, `None` when it passed.
    pub async fn wait_within<T>(
        &self,
        bound: Duration,
        mut f: impl FnMut(&Seen) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            rx.borrow_and_update();
            if let Some(v) = f(&self.shared.lock()) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Waits for the agent's `online` presence and a heartbeat of that incarnation (it has
    /// subscribed by then: its subscriptions go out before its first heartbeat); returns the
    /// incarnation. `after` skips incarnations seen before (a restarted agent).
    pub async fn wait_online(&self, after: Option<u32>) -> u32 {
        self.wait_for("the agent online", |s| {
            let inc = s.online_incarnation().filter(|i| Some(*i) != after)?;
            s.last_heartbeat
                .as_ref()
                .filter(|hb| hb.incarnation == inc)
                .map(|_| inc)
        })
        .await
    }

    /// Waits for the attempt's `Finished`.
    pub async fn wait_finished(&self, task: TaskRef) -> (Exit, Option<KillCause>, u64) {
        self.wait_for(&format!("Finished of {task:?}"), |s| s.finished(task))
            .await
    }

    /// Waits for the attempt's `Started`; returns its pid (= process group).
    pub async fn wait_started(&self, task: TaskRef) -> u32 {
        self.wait_for(&format!("Started of {task:?}"), |s| s.started(task))
            .await
    }

    /// Asserts what must hold whatever the test: no sequence number reused with other content,
    /// every payload decodable, events contiguous from the first.
    pub fn assert_consistent(&self) {
        let seen = self.seen();
        assert!(
            seen.conflicts.is_empty(),
            "conflicting events:\n{}",
            seen.dump()
        );
        assert_eq!(
            seen.undecodable,
            0,
            "undecodable payloads:\n{}",
            seen.dump()
        );
        let last = seen.events.keys().next_back().copied().unwrap_or(0);
        assert_eq!(
            seen.contiguous(),
            last,
            "a gap in the events:\n{}",
            seen.dump()
        );
    }
}

impl Drop for ScriptedMaster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A new epoch for each scripted master: larger than any before it, also across test processes
/// (agents keep the highest they saw in their journal and refuse older ones).
fn next_epoch() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    let mut current = NEXT.load(Ordering::SeqCst);
    loop {
        let next = current.max(now) + 1;
        match NEXT.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(seen) => current = seen,
        }
    }
}

/// A scripted master (heartbeats every `period`) and a connected agent with a fresh home, the
/// agent's id being `{name}-{broker kind}` so tests on both brokers never share one.
pub async fn scripted_pair(
    broker: &super::broker::TestBroker,
    name: &str,
    period: Duration,
    tune: impl FnOnce(&mut super::agent::AgentOptions),
) -> (
    ScriptedMaster,
    super::agent::AgentHome,
    super::agent::AgentProcess,
) {
    let id = format!("{name}-{}", broker.kind());
    let mut options = super::agent::AgentOptions::new(&id, &broker.host_port());
    tune(&mut options);
    let master = ScriptedMaster::start(broker.addr(), &id, period).await;
    let mut home = super::agent::AgentHome::new(options);
    let agent = home.start();
    master.wait_online(None).await;
    (master, home, agent)
}
