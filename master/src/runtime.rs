//! The master's runtime: binds the [`Master`] core to tokio, rumqttc, the embedded broker,
//! SQLite and the HTTP API. It decides nothing.
//!
//! One loop owns the core and the store and waits on three things: MQTT events (from the
//! event-loop task), API requests (from axum through a channel), and the core's
//! `poll_timeout`. After each input it drains the core's actions, commits their changes in one
//! transaction, and only then publishes (the commit rule of [`crate::core`]). A failed commit
//! stops the master: a restart rebuilds the core from the store.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use log::{error, info, warn};
use rumqttc::{AsyncClient, ConnectionError, Event as MqttEvent, Packet, QoS};
use serde_json::{Value, json};
use tether_core::auth::Hex;
use tether_core::presence::State;
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;

use crate::api::{self, ApiError, ApiRequest, Envelope};
use crate::broker::{
    BrokerAddr, BrokerConfig, BrokerError, ClientSettings, ClientTls, EmbeddedBroker,
};
use crate::commit;
use crate::core::{Config, Master, Qos};
use crate::keys;
use crate::model::TaskId;
use crate::passwords::{self, Passwords, Verdict};
use crate::store::{Page, SqliteStore, Store, StoreError};
use crate::tls_listener::{self, TlsListen};

/// How `tether-master run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub data_dir: PathBuf,
    /// Where the embedded broker listens (port 0: a free port).
    pub listen: SocketAddr,
    pub http: SocketAddr,
    /// An external broker instead of the embedded one.
    pub broker: Option<BrokerAddr>,
    /// A rumqttd configuration file instead of the built-in one.
    pub broker_config: Option<PathBuf>,
    pub prefix: String,
    pub heartbeat_period: StdDuration,
    pub cancel_duplicates: bool,
    /// The embedded broker's TLS listener, beside the plain one.
    pub tls_listen: Option<TlsListen>,
    /// The embedded broker admits only the users of this `user:password` file.
    pub broker_passwords: Option<PathBuf>,
    /// The master's own client to an external broker: its credentials, and for `mqtts://` the
    /// CA (and optionally a client certificate and key).
    pub client_credentials: Option<(String, String)>,
    pub client_tls: Option<ClientTlsFiles>,
    /// The signing key file (default `<data_dir>/master.key`, created if missing).
    pub signing_key: Option<PathBuf>,
    /// Take unauthenticated messages from agents that have no key (insecure).
    pub insecure_agents: bool,
}

/// The PEM files of the master's own TLS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug)]
pub enum RunError {
    Io(String, io::Error),
    Store(StoreError),
    Broker(BrokerError),
    Config(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(what, e) => write!(f, "{what}: {e}"),
            Self::Store(e) => write!(f, "store: {e}"),
            Self::Broker(e) => write!(f, "broker: {e}"),
            Self::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RunError {}

/// The addresses the master actually uses, printed at start as one parsable line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub mqtt: BrokerAddr,
    pub http: SocketAddr,
    pub epoch: u32,
    /// The embedded broker's TLS listener, when there is one.
    pub mqtts: Option<SocketAddr>,
    /// The master's public key (agents' `master_keys`).
    pub public_key: [u8; 32],
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tether-master ready mqtt={}:{} http={} epoch={:08x}",
            self.mqtt.host, self.mqtt.port, self.http, self.epoch
        )?;
        if let Some(tls) = self.mqtts {
            write!(f, " mqtts={tls}")?;
        }
        write!(f, " key={}", Hex(&self.public_key))
    }
}

/// The wall clock in seconds (0 if it is before 1970): a floor for the epoch.
fn unix_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// The core's clock: microseconds since the runtime started.
#[derive(Debug, Clone, Copy)]
struct Clock(TokioInstant);

impl Clock {
    fn now(&self) -> tether_core::Instant {
        tether_core::Instant::from_micros(self.0.elapsed().as_micros() as u64)
    }

    fn at(&self, t: tether_core::Instant) -> TokioInstant {
        self.0 + StdDuration::from_micros(t.as_micros())
    }
}

enum MqttInput {
    Event(MqttEvent),
    Down(ConnectionError),
}

/// Runs the master until SIGINT/SIGTERM. `on_ready` gets the bound addresses once the broker
/// and the HTTP listener are up.
pub async fn run(config: RunConfig, on_ready: impl FnOnce(&Bound)) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| RunError::Io(format!("creating {}", config.data_dir.display()), e))?;
    let store: Box<dyn Store> =
        Box::new(SqliteStore::open(config.data_dir.join("master.db")).map_err(RunError::Store)?);
    let snapshot = store.load().map_err(RunError::Store)?;

    let embedded_only = |what: &str| {
        RunError::Config(format!(
            "{what} configures the embedded broker; it does not apply with --broker"
        ))
    };
    let mut credentials = config.client_credentials.clone();
    // The embedded broker lives as long as the process (rumqttd has no shutdown).
    let (mqtt_addr, _broker, mqtts) = match &config.broker {
        Some(addr) => {
            if config.tls_listen.is_some() {
                return Err(embedded_only("--tls-listen"));
            }
            if config.broker_passwords.is_some() {
                return Err(embedded_only("--broker-passwords"));
            }
            (addr.clone(), None, None)
        }
        None => {
            let mut broker_config = match &config.broker_config {
                Some(path) => BrokerConfig::from_path(path),
                None => BrokerConfig::builtin(),
            }
            .map_err(RunError::Broker)?;
            broker_config.set_listen(config.listen);
            if let Some(path) = &config.broker_passwords {
                let passwords = Arc::new(
                    Passwords::load(path)
                        .map_err(|e| RunError::Config(format!("--broker-passwords: {e}")))?,
                );
                credentials = Some(passwords.master_credentials());
                broker_config.set_auth_handler(move |client_id, user, password| {
                    let verdict = passwords.check(&client_id, &user, &password);
                    if verdict != Verdict::Accepted {
                        warn!("broker refused client `{client_id}` (user `{user}`): {verdict}");
                    }
                    std::future::ready(verdict == Verdict::Accepted)
                });
            }
            let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(broker_config))
                .await
                .map_err(|e| RunError::Config(format!("broker start: {e}")))?
                .map_err(RunError::Broker)?;
            let plain = broker.broker_addr();
            let mqtts = match &config.tls_listen {
                Some(listen) => {
                    let upstream = SocketAddr::new(
                        plain.host.parse().map_err(|_| {
                            RunError::Config(format!("broker address {plain} is not an IP"))
                        })?,
                        plain.port,
                    );
                    Some(
                        tls_listener::start(listen, upstream)
                            .await
                            .map_err(|e| RunError::Config(format!("--tls-listen: {e}")))?,
                    )
                }
                None => None,
            };
            (plain, Some(broker), mqtts)
        }
    };
    let client_tls = match &config.client_tls {
        Some(files) => Some(ClientTls(Arc::new(
            tether_tls::client_config_from_files(
                &files.ca,
                files
                    .identity
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .map_err(|e| RunError::Config(format!("broker TLS: {e}")))?,
        ))),
        None => None,
    };

    let key_path = config
        .signing_key
        .clone()
        .unwrap_or_else(|| config.data_dir.join("master.key"));
    let signing_key = keys::load_or_create(&key_path).map_err(RunError::Config)?;
    let public_key = signing_key.public_key();
    if config.insecure_agents {
        warn!(
            "INSECURE: agents without a key are trusted; any broker client can speak for them \
             (--insecure-agents)"
        );
    }
    // Committed before anything is published under it: agents refuse every older epoch.
    let epoch = store.next_epoch(unix_secs()).map_err(RunError::Store)?;
    let clock = Clock(TokioInstant::now());
    let period = tether_core::Duration::from_millis(config.heartbeat_period.as_millis() as u64);
    let mut core_config = Config::new(&config.prefix, epoch, signing_key);
    core_config.heartbeat_period = period;
    core_config.cancel_duplicates = config.cancel_duplicates;
    core_config.insecure_agents = config.insecure_agents;
    let mut core = Master::restore(core_config, snapshot, clock.now())
        .map_err(|e| RunError::Config(e.to_string()))?;

    let mut settings = ClientSettings::master(
        passwords::MASTER_USER,
        &config.prefix,
        epoch,
        config.heartbeat_period,
    );
    settings.credentials = credentials;
    settings.tls = client_tls;
    settings.will = Some(core.presence(State::Lost));
    let (client, mut eventloop) = settings
        .connect(&mqtt_addr, 1024)
        .map_err(|e| RunError::Config(e.to_string()))?;
    let (mqtt_tx, mut mqtt_rx) = mpsc::channel::<MqttInput>(1024);
    tokio::spawn(async move {
        loop {
            let input = match eventloop.poll().await {
                Ok(ev) => MqttInput::Event(ev),
                Err(e) => MqttInput::Down(e),
            };
            let down = matches!(input, MqttInput::Down(_));
            if mqtt_tx.send(input).await.is_err() {
                return;
            }
            if down {
                // rumqttc reconnects on the next poll without pausing: pace it.
                tokio::time::sleep(StdDuration::from_millis(500)).await;
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|e| RunError::Io(format!("binding HTTP on {}", config.http), e))?;
    let http = listener
        .local_addr()
        .map_err(|e| RunError::Io("HTTP listener address".into(), e))?;
    let (api_tx, mut api_rx) = mpsc::channel::<Envelope>(64);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, api::router(api_tx)).await {
            error!("HTTP server stopped: {e}");
        }
    });

    let bound = Bound {
        mqtt: mqtt_addr.clone(),
        http,
        epoch,
        mqtts,
        public_key,
    };
    info!("{bound}");
    on_ready(&bound);

    let mut ctx = Ctx {
        store,
        client,
        bound,
        dropped_publishes: 0,
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| RunError::Io("installing the SIGTERM handler".into(), e))?;
    // API answers wait for the commit of the batch that made them true.
    let mut replies = Vec::new();
    loop {
        let wake = core.poll_timeout().map(|t| clock.at(t));
        tokio::select! {
            input = mqtt_rx.recv() => {
                let Some(input) = input else { break };
                ctx.mqtt(&mut core, clock.now(), input);
            }
            req = api_rx.recv() => {
                let Some((req, reply)) = req else { break };
                replies.push((reply, ctx.api(&mut core, clock.now(), req)));
            }
            () = sleep_until(wake) => core.handle_timeout(clock.now()),
            _ = tokio::signal::ctrl_c() => { stop(&mut ctx, &mut core, clock).await?; break }
            _ = sigterm.recv() => { stop(&mut ctx, &mut core, clock).await?; break }
        }
        // Group commit: what is already waiting joins this batch, so a burst of events or
        // submissions costs one transaction (one fsync), not one each.
        for _ in 0..BURST {
            if let Ok(input) = mqtt_rx.try_recv() {
                ctx.mqtt(&mut core, clock.now(), input);
            } else if let Ok((req, reply)) = api_rx.try_recv() {
                replies.push((reply, ctx.api(&mut core, clock.now(), req)));
            } else {
                break;
            }
        }
        ctx.flush(&mut core)?;
        for (reply, answer) in replies.drain(..) {
            let _ = reply.send(answer);
        }
    }
    Ok(())
}

/// Inputs handled in one batch, at most (bounds the latency a burst adds to its first input).
const BURST: usize = 256;

async fn sleep_until(wake: Option<TokioInstant>) {
    match wake {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A normal stop: `offline <epoch> stopped`, then a clean disconnect.
async fn stop(ctx: &mut Ctx, core: &mut Master, clock: Clock) -> Result<(), RunError> {
    info!("stopping");
    core.handle_stop(clock.now());
    ctx.flush(core)?;
    let _ = ctx.client.disconnect().await;
    // Give the event loop a moment to send what is queued; bounded.
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    Ok(())
}

struct Ctx {
    store: Box<dyn Store>,
    client: AsyncClient,
    bound: Bound,
    dropped_publishes: u64,
}

impl Ctx {
    fn mqtt(&mut self, core: &mut Master, now: tether_core::Instant, input: MqttInput) {
        match input {
            MqttInput::Event(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                info!("connected to the broker at {}", self.bound.mqtt);
                for filter in core.subscriptions() {
                    if let Err(e) = self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        error!("cannot subscribe to {filter}: {e}");
                    }
                }
                core.handle_connected(now);
            }
            MqttInput::Event(MqttEvent::Incoming(Packet::Publish(p))) => {
                core.handle_message(now, &p.topic, &p.payload);
            }
            MqttInput::Event(_) => {}
            MqttInput::Down(e) => {
                if core.is_connected() {
                    warn!("broker connection lost: {e}");
                } else if matches!(
                    e,
                    ConnectionError::ConnectionRefused(_) | ConnectionError::Tls(_)
                ) {
                    warn!("the broker at {} refused the master: {e}", self.bound.mqtt);
                }
                core.handle_disconnected(now);
            }
        }
    }

    /// Drains the core: commits the batch's changes, then publishes. A failed commit is fatal.
    fn flush(&mut self, core: &mut Master) -> Result<(), RunError> {
        let publishes = commit::commit(core, self.store.as_ref()).map_err(|e| {
            error!("cannot commit to the store, stopping (a restart resumes from it): {e}");
            RunError::Store(e)
        })?;
        for p in publishes {
            let qos = match p.qos {
                Qos::AtMostOnce => QoS::AtMostOnce,
                Qos::AtLeastOnce => QoS::AtLeastOnce,
            };
            if let Err(e) = self
                .client
                .try_publish(p.topic.clone(), qos, p.retain, p.payload)
            {
                // Commands are retransmitted by the core; nothing is lost by dropping here.
                self.dropped_publishes += 1;
                warn!("publish to {} dropped: {e}", p.topic);
            }
        }
        Ok(())
    }

    fn api(
        &mut self,
        core: &mut Master,
        now: tether_core::Instant,
        req: ApiRequest,
    ) -> Result<Value, ApiError> {
        let s = self.store.as_ref();
        Ok(match req {
            ApiRequest::Status => json!({
                "epoch": format!("{:08x}", self.bound.epoch),
                "mqtt": format!("{}:{}", self.bound.mqtt.host, self.bound.mqtt.port),
                "http": self.bound.http.to_string(),
                "connected": core.is_connected(),
                "prefix": core.config().prefix,
                "heartbeat_period_ms": core.heartbeat_period().as_millis(),
                "stats": core.stats(),
                "dropped_publishes": self.dropped_publishes,
            }),
            ApiRequest::Keys => json!({ "master_keys": [Hex(&core.public_key()).to_string()] }),
            ApiRequest::AgentKey { id, rotate } => {
                let key = match core.agent_key(&id) {
                    Some(key) if !rotate => *key,
                    _ => {
                        let key = keys::new_key()
                            .map_err(|e| ApiError::new(500, format!("no random key: {e}")))?;
                        core.set_agent_key(now, &id, key)?;
                        info!(
                            "agent {id}: MAC key {}",
                            if rotate { "rotated" } else { "set" }
                        );
                        key
                    }
                };
                json!({
                    "id": id,
                    "agent_key": Hex(&key).to_string(),
                    "master_keys": [Hex(&core.public_key()).to_string()],
                })
            }
            ApiRequest::Security => json!({
                "unknown_agent": core.stats().unknown_agent,
                "agents": core.security(),
            }),
            ApiRequest::Agents => {
                let stored = s.agents()?;
                let views = core.agent_views(now);
                let list: Vec<Value> = views
                    .into_iter()
                    .map(|v| {
                        let heard = stored
                            .iter()
                            .find(|a| a.id == v.id)
                            .and_then(|a| a.last_heartbeat_ms);
                        json!({
                            "id": v.id,
                            "incarnation": v.incarnation.map(|i| format!("{i:08x}")),
                            "presence": v.presence,
                            "available": v.available,
                            "silent_ms": v.silent_ms,
                            "last_heartbeat_ms": heard,
                            "acked_seq": v.acked_seq,
                            "attempts": v.attempts,
                            "keyed": core.agent_key(&v.id).is_some(),
                            "security": core.security().get(&v.id),
                        })
                    })
                    .collect();
                Value::Array(list)
            }
            ApiRequest::Clusters => to_value(&s.clusters()?)?,
            ApiRequest::Profiles => to_value(&s.profiles()?)?,
            ApiRequest::Tasks => to_value(&s.tasks(Page::ALL)?)?,
            ApiRequest::Task(id) => {
                let task = found(s.task(id)?, id)?;
                let attempts = s.attempts(id)?;
                let mut events = Vec::new();
                for a in &attempts {
                    for e in s.attempt_events(a.id)? {
                        let event: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
                        events.push(json!({
                            "agent": e.agent_id, "seq": e.seq, "attempt": e.attempt,
                            "kind": e.kind, "received_ms": e.received_ms, "event": event,
                        }));
                    }
                }
                json!({ "task": task, "attempts": attempts, "events": events })
            }
            ApiRequest::Output(id) => {
                let task = found(s.task(id)?, id)?;
                let mut chunks = Vec::new();
                for a in s.attempts(id)? {
                    for c in s.output(a.id)? {
                        chunks.push(json!({
                            "attempt": c.attempt,
                            "stream": match c.stream {
                                tether_core::message::Stream::Stdout => "stdout",
                                tether_core::message::Stream::Stderr => "stderr",
                            },
                            "offset": c.offset,
                            "text": String::from_utf8_lossy(&c.bytes),
                        }));
                    }
                }
                json!({ "task": id, "state": task.state, "chunks": chunks })
            }
            ApiRequest::Submit(req) => {
                let id = core.submit(now, req)?;
                json!({ "id": id })
            }
            ApiRequest::Kill(id) => {
                if s.task(id)?.is_none() {
                    return Err(ApiError::new(404, format!("no task {id}")));
                }
                core.kill(now, id)?;
                json!({ "id": id, "kill": "requested" })
            }
            ApiRequest::PutCluster(req) => {
                let name = req.name.clone();
                core.put_cluster(now, req)?;
                json!({ "name": name })
            }
            ApiRequest::PutProfile(req) => {
                let name = req.name.clone();
                core.put_profile(now, req)?;
                json!({ "name": name })
            }
        })
    }
}

fn found<T>(v: Option<T>, id: TaskId) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::new(404, format!("no task {id}")))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(500, format!("cannot encode: {e}")))
}

/// Prints the ready line on stdout and flushes it, for scripts and tests that parse it.
pub fn print_ready(bound: &Bound) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{bound}");
    let _ = out.flush();
}
