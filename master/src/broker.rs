//! Where the master's MQTT broker is: embedded (rumqttd in this process) or external
//! (`mqtt://host:port`), and how a Tether client connects to it.
//!
//! - [`BrokerConfig`]: a checked rumqttd configuration (the built-in copy of
//!   `broker-config/rumqttd.toml`, or a file), with its one MQTT 3.1.1 listener.
//! - [`EmbeddedBroker::start`]: runs rumqttd on its own threads and returns once it accepts TCP
//!   connections. rumqttd has no shutdown: the broker lives as long as the process.
//! - [`BrokerAddr`]: a parsed broker address (`mqtt://`, `mqtts://` or `host:port`, by the
//!   rules of [`tether_core::broker_addr`]), for the master pointed at an external broker.
//! - [`ClientSettings`]: rumqttc options every Tether connection needs (MQTT 3.1.1,
//!   `clean_session = false`, keepalive from the heartbeat period, `TCP_NODELAY`, presence will).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, EventLoop, LastWill, MqttOptions, NetworkOptions, QoS, TlsConfiguration, Transport,
};
use tether_core::presence::{Presence, State};
use tether_core::topic::{Topic, TopicError, validate_id};

/// The broker configuration shipped in `broker-config/rumqttd.toml`.
pub const BUILTIN_CONFIG: &str = include_str!("../../broker-config/rumqttd.toml");

/// How long [`EmbeddedBroker::start`] waits for the listener by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest MQTT packet a Tether client accepts. Above the brokers' own 8 KiB limit
/// (`broker-config/`) so that whatever a broker forwards is read, checked and dropped by the
/// application with a log line, rather than breaking the connection.
pub const MAX_CLIENT_PACKET: usize = 16 * 1024;

/// The port of a `mqtt://host` URL without one.
pub const DEFAULT_MQTT_PORT: u16 = tether_core::broker_addr::DEFAULT_PORT;
/// The port of a `mqtts://host` URL without one.
pub const DEFAULT_MQTTS_PORT: u16 = tether_core::broker_addr::DEFAULT_TLS_PORT;

/// Why the embedded broker could not be configured or started.
#[derive(Debug)]
pub enum BrokerError {
    /// The configuration file could not be read.
    Read { path: PathBuf, source: io::Error },
    /// Not valid TOML, or not the shape rumqttd expects (the message names line and field).
    Parse {
        origin: String,
        source: Box<toml::de::Error>,
    },
    /// Valid rumqttd syntax that Tether refuses; the text says what to change.
    Invalid { origin: String, reason: String },
    /// The listen address cannot be bound (in use, not local, no permission).
    Bind { addr: SocketAddr, source: io::Error },
    /// rumqttd stopped before it listened.
    Exited { addr: SocketAddr, reason: String },
    /// Nothing accepted connections on the listen address within the time allowed.
    NotListening { addr: SocketAddr, waited: Duration },
    /// A thread for the broker could not be spawned.
    Spawn(io::Error),
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => {
                write!(f, "cannot read broker config {}: {source}", path.display())
            }
            Self::Parse { origin, source } => {
                write!(f, "broker config {origin} is not valid: {source}")
            }
            Self::Invalid { origin, reason } => write!(f, "broker config {origin}: {reason}"),
            Self::Bind { addr, source } => {
                write!(f, "embedded broker cannot listen on {addr}: {source}")
            }
            Self::Exited { addr, reason } => {
                write!(f, "embedded broker on {addr} stopped at start: {reason}")
            }
            Self::NotListening { addr, waited } => write!(
                f,
                "embedded broker did not accept connections on {addr} within {waited:?}"
            ),
            Self::Spawn(e) => write!(f, "cannot spawn the embedded broker thread: {e}"),
        }
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } | Self::Bind { source, .. } => Some(source),
            Self::Parse { source, .. } => Some(source.as_ref()),
            Self::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// A rumqttd configuration that Tether has checked: exactly one plain-TCP MQTT 3.1.1 listener,
/// dynamic filters on, segment sizes rumqttd accepts (it panics in its router thread on
/// segments under 1 KiB).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Everything but the listener (`v4` is `None` here).
    rest: rumqttd::Config,
    /// The single `[v4.*]` listener and its key.
    key: String,
    listener: rumqttd::ServerSettings,
}

impl BrokerConfig {
    /// The built-in copy of `broker-config/rumqttd.toml`.
    pub fn builtin() -> Result<Self, BrokerError> {
        Self::parse_from(BUILTIN_CONFIG, "(built-in rumqttd.toml)")
    }

    /// Reads and checks a rumqttd TOML file.
    pub fn from_path(path: &Path) -> Result<Self, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|source| BrokerError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_from(&text, &path.display().to_string())
    }

    /// Parses and checks rumqttd TOML text.
    pub fn parse(text: &str) -> Result<Self, BrokerError> {
        Self::parse_from(text, "(text)")
    }

    fn parse_from(text: &str, origin: &str) -> Result<Self, BrokerError> {
        let mut rest: rumqttd::Config = toml::from_str(text).map_err(|e| BrokerError::Parse {
            origin: origin.to_owned(),
            source: Box::new(e),
        })?;
        let invalid = |reason| BrokerError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        // rumqttd ignores keys it does not know; a misspelt one would silently do nothing.
        if let (Ok(source), Ok(known)) = (
            toml::from_str::<toml::Table>(text),
            toml::Table::try_from(&rest),
        ) {
            let mut unknown = Vec::new();
            unknown_keys(&source, &known, "", &mut unknown);
            if !unknown.is_empty() {
                return Err(invalid(format!(
                    "unknown key(s) {} (misspelt?)",
                    unknown.join(", ")
                )));
            }
        }
        check(&rest).map_err(invalid)?;
        let (key, listener) = rest
            .v4
            .take()
            .and_then(|v4| v4.into_iter().next())
            .ok_or_else(|| invalid("needs exactly one [v4.*] listener (MQTT 3.1.1)".into()))?;
        Ok(Self {
            rest,
            key,
            listener,
        })
    }

    /// The address the listener binds.
    pub fn listen(&self) -> SocketAddr {
        self.listener.listen
    }

    /// Replaces the listener's address (the master's `--listen`, or a test's free port).
    pub fn set_listen(&mut self, addr: SocketAddr) {
        self.listener.listen = addr;
    }

    /// Decides who may connect (rumqttd calls it with client id, user name and password).
    pub fn set_auth_handler<F, O>(&mut self, auth: F)
    where
        F: Fn(String, String, String) -> O + Send + Sync + 'static,
        O: std::future::IntoFuture<Output = bool> + 'static,
        O::IntoFuture: Send,
    {
        self.listener.set_auth_handler(auth);
    }

    /// The listener's settings as rumqttd reads them.
    pub fn listener(&self) -> &rumqttd::ServerSettings {
        &self.listener
    }

    /// The whole configuration as rumqttd takes it.
    pub fn to_rumqttd(&self) -> rumqttd::Config {
        let mut config = self.rest.clone();
        config.v4 = Some([(self.key.clone(), self.listener.clone())].into());
        config
    }
}

/// Collects the dotted paths of keys in `source` that `known` (the parsed configuration
/// serialized back) does not have.
fn unknown_keys(source: &toml::Table, known: &toml::Table, path: &str, out: &mut Vec<String>) {
    for (key, value) in source {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match (value, known.get(key)) {
            (_, None) => out.push(here),
            (toml::Value::Table(s), Some(toml::Value::Table(k))) => unknown_keys(s, k, &here, out),
            _ => {}
        }
    }
}

/// What Tether refuses in a rumqttd configuration, in words that say what to change.
fn check(config: &rumqttd::Config) -> Result<(), String> {
    let v4 = config.v4.as_ref().map(|m| m.len()).unwrap_or(0);
    if v4 != 1 {
        return Err(format!(
            "needs exactly one [v4.*] listener (MQTT 3.1.1), found {v4}"
        ));
    }
    if config.v5.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(
            "[v5.*] listeners are not supported: Tether speaks MQTT 3.1.1 and rumqttd's \
                    MQTT 5 is incomplete; remove them"
                .into(),
        );
    }
    if config.ws.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err("[ws.*] listeners are not built into the embedded broker; remove them".into());
    }
    if config.cluster.is_some() {
        return Err("[cluster] is not implemented by rumqttd 0.20; remove it".into());
    }
    let router = &config.router;
    if router.max_connections == 0 {
        return Err("router.max_connections must be at least 1".into());
    }
    check_segments("router", router.max_segment_size, router.max_segment_count)?;
    for (filter, seg) in router.custom_segment.iter().flatten() {
        check_segments(
            &format!("router.custom_segment.'{filter}'"),
            seg.max_segment_size,
            seg.max_segment_count,
        )?;
    }
    let Some((key, server)) = config.v4.iter().flatten().next() else {
        return Err("needs exactly one [v4.*] listener (MQTT 3.1.1), found 0".into());
    };
    if server.tls.is_some() {
        // rumqttd 0.20 runs each TLS handshake inside its accept loop, without a timeout: one
        // client that stalls mid-handshake stops every new connection.
        return Err(format!(
            "[v4.{key}.tls] is not used: give tether-master --tls-listen, --tls-cert and \
             --tls-key instead (its own TLS listener in front of this one)"
        ));
    }
    if server.connections.auth.is_some() {
        return Err(format!(
            "[v4.{key}.connections.auth] is not used: give tether-master --broker-passwords FILE \
             (`user:password` lines, the format `tetherctl provision --credentials` writes)"
        ));
    }
    let conn = &server.connections;
    if conn.connection_timeout_ms == 0 {
        return Err(format!(
            "v4.{key}.connections.connection_timeout_ms must be greater than 0"
        ));
    }
    if conn.max_payload_size < 1024 {
        return Err(format!(
            "v4.{key}.connections.max_payload_size must be at least 1024 (Tether messages are up \
             to {} bytes)",
            tether_core::wire::MAX_MESSAGE
        ));
    }
    if conn.max_inflight_count == 0 {
        return Err(format!(
            "v4.{key}.connections.max_inflight_count must be at least 1"
        ));
    }
    if !conn.dynamic_filters {
        return Err(format!(
            "v4.{key}.connections.dynamic_filters must be true: without it rumqttd disconnects \
             a client that publishes to a topic nobody subscribes to yet"
        ));
    }
    Ok(())
}

fn check_segments(section: &str, size: usize, count: usize) -> Result<(), String> {
    if size < 1024 {
        return Err(format!(
            "{section}.max_segment_size must be at least 1024 bytes, found {size}"
        ));
    }
    if count == 0 {
        return Err(format!("{section}.max_segment_count must be at least 1"));
    }
    Ok(())
}

/// rumqttd running in this process.
///
/// rumqttd cannot report a port it bound itself, so a listen port of 0 is resolved first:
/// [`EmbeddedBroker::start`] binds `ip:0`, notes the port, releases it and hands it to rumqttd.
/// Between release and rumqttd's bind another process could take the port; the start then
/// fails with [`BrokerError::Exited`] or [`BrokerError::Bind`] and the caller may retry.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// Where the broker accepts MQTT 3.1.1 connections.
    pub addr: SocketAddr,
    thread: thread::JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts rumqttd with `config` and waits (blocking, at most [`DEFAULT_START_TIMEOUT`])
    /// until it accepts TCP connections. Call it before entering async code or from
    /// `spawn_blocking`.
    pub fn start(config: BrokerConfig) -> Result<Self, BrokerError> {
        Self::start_with_timeout(config, DEFAULT_START_TIMEOUT)
    }

    /// The built-in configuration on a free port of 127.0.0.1: for tests and local runs.
    pub fn start_local() -> Result<Self, BrokerError> {
        let mut config = BrokerConfig::builtin()?;
        config.set_listen(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0));
        Self::start(config)
    }

    pub fn start_with_timeout(
        mut config: BrokerConfig,
        timeout: Duration,
    ) -> Result<Self, BrokerError> {
        let wanted = config.listen();
        let addr = if wanted.port() == 0 {
            pick_free_port(wanted.ip()).map_err(|source| BrokerError::Bind {
                addr: wanted,
                source,
            })?
        } else {
            // rumqttd only logs a failed bind; find it here so the error is typed and clear.
            // A listener already on the port would otherwise answer our readiness probe.
            drop(
                TcpListener::bind(wanted).map_err(|source| BrokerError::Bind {
                    addr: wanted,
                    source,
                })?,
            );
            wanted
        };
        config.set_listen(addr);

        let (done_tx, done_rx) = mpsc::channel::<String>();
        let rumqttd_config = config.to_rumqttd();
        let thread = thread::Builder::new()
            .name("tether-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(rumqttd_config);
                // `start` blocks while its listener threads run; it returns when they all end,
                // which only happens when the listener failed.
                let reason = match broker.start() {
                    Ok(()) => "the listener ended (its port may have been taken)".to_owned(),
                    Err(e) => e.to_string(),
                };
                let _ = done_tx.send(reason);
            })
            .map_err(BrokerError::Spawn)?;

        let exited = |reason: String| BrokerError::Exited { addr, reason };
        let deadline = Instant::now() + timeout;
        loop {
            match done_rx.try_recv() {
                Ok(reason) => return Err(exited(reason)),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(exited("the broker thread panicked".into()));
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if probe(addr) {
                return Ok(Self { addr, thread });
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::NotListening {
                    addr,
                    waited: timeout,
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The address as a [`BrokerAddr`] for clients (an unspecified listen IP becomes loopback).
    pub fn broker_addr(&self) -> BrokerAddr {
        let ip = if self.addr.ip().is_unspecified() {
            match self.addr {
                SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                SocketAddr::V6(_) => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            }
        } else {
            self.addr.ip()
        };
        BrokerAddr::from(SocketAddr::new(ip, self.addr.port()))
    }

    /// False once rumqttd's listener has stopped.
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

fn probe(addr: SocketAddr) -> bool {
    let target = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::from([127, 0, 0, 1]), addr.port()),
            SocketAddr::V6(_) => {
                SocketAddr::new(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), addr.port())
            }
        }
    } else {
        addr
    };
    TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
}

/// A port on `ip` that was free a moment ago (bound to port 0, then released).
pub fn pick_free_port(ip: IpAddr) -> io::Result<SocketAddr> {
    TcpListener::bind(SocketAddr::new(ip, 0))?.local_addr()
}

/// Waits until something accepts TCP connections on `addr`, at most `timeout`. Returns
/// whether it did.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe(addr) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// An MQTT broker address, from `mqtt://host[:port]` (or `tcp://`), default port 1883, or
/// `mqtts://host[:port]` (or `ssl://`) for TLS, default port 8883.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddr {
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// TLS (`mqtts://`); the host is the name checked in the broker's certificate.
    pub tls: bool,
}

/// Why a broker URL was refused: tether-core's error, shared with the agent and provisioning.
pub use tether_core::broker_addr::BrokerAddrError;

impl BrokerAddr {
    /// The rules of [`tether_core::broker_addr`], as the agent applies them to its `brokers`.
    pub fn parse(url: &str) -> Result<Self, BrokerAddrError<'_>> {
        let a = tether_core::broker_addr::BrokerAddr::parse(url)?;
        Ok(Self {
            host: a.host.to_owned(),
            port: a.port,
            tls: a.tls,
        })
    }
}

impl FromStr for BrokerAddr {
    /// The message: an owned error cannot borrow the text it came from.
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).map_err(|e| e.to_string())
    }
}

impl From<SocketAddr> for BrokerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
            tls: false,
        }
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Why client options could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// MQTT client ids double as agent ids and file names: `[A-Za-z0-9._-]{1,32}`.
    InvalidClientId(String),
    InvalidPrefix(TopicError),
    /// The will must be a presence topic (`Topic::MasterPresence` or `Topic::AgentPresence`).
    NotAPresenceTopic,
    ZeroHeartbeatPeriod,
    /// An `mqtts://` broker and no TLS settings (no CA to verify it with).
    TlsWithoutCa,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidClientId(id) => write!(
                f,
                "MQTT client id '{id}' must be 1-32 characters of [A-Za-z0-9._-]"
            ),
            Self::InvalidPrefix(e) => write!(f, "{e}"),
            Self::NotAPresenceTopic => {
                f.write_str("the last will must go to a presence topic (master or agent)")
            }
            Self::ZeroHeartbeatPeriod => f.write_str("heartbeat period must be greater than zero"),
            Self::TlsWithoutCa => {
                f.write_str("an mqtts:// broker needs a CA file to verify its certificate")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// What every Tether MQTT connection needs; [`ClientSettings::options`] turns it into rumqttc
/// options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    pub client_id: String,
    /// Topic prefix (`tether` by default).
    pub prefix: String,
    /// Whose presence the will announces: [`Topic::MasterPresence`] for the master.
    pub presence: Topic,
    /// This process's incarnation, carried by the will so a stale will is recognised.
    pub incarnation: u32,
    /// The owner's heartbeat period; the MQTT keepalive follows it.
    pub heartbeat_period: Duration,
    /// User name and password for brokers that require them.
    pub credentials: Option<(String, String)>,
    /// How `mqtts://` brokers are verified (and the client certificate, if any).
    pub tls: Option<ClientTls>,
    /// The will's payload (signed by its owner); `None` is a plain `offline <inc> lost`.
    pub will: Option<String>,
}

/// A rustls client configuration ([`tether_tls::client_config`]); compared by identity.
#[derive(Debug, Clone)]
pub struct ClientTls(pub Arc<tether_tls::rustls::ClientConfig>);

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ClientTls {}

impl ClientSettings {
    /// Settings for the master's own connection.
    pub fn master(
        client_id: &str,
        prefix: &str,
        incarnation: u32,
        heartbeat_period: Duration,
    ) -> Self {
        Self {
            client_id: client_id.to_owned(),
            prefix: prefix.to_owned(),
            presence: Topic::MasterPresence,
            incarnation,
            heartbeat_period,
            credentials: None,
            tls: None,
            will: None,
        }
    }

    /// rumqttc options: MQTT 3.1.1, `clean_session = false` (rumqttd mixed up wills of quick
    /// reconnects with clean sessions), keepalive from the heartbeat period (rumqttd refuses
    /// 0), the retained QoS 1 presence will, and `TCP_NODELAY` (neither broker sets it; without
    /// it a client that publishes and subscribes stalls ~40 ms per message). The
    /// [`NetworkOptions`] go to [`EventLoop::set_network_options`]; [`Self::connect`] does it.
    pub fn options(
        &self,
        broker: &BrokerAddr,
    ) -> Result<(MqttOptions, NetworkOptions), ClientError> {
        validate_id(&self.client_id)
            .map_err(|_| ClientError::InvalidClientId(self.client_id.clone()))?;
        if self.heartbeat_period.is_zero() {
            return Err(ClientError::ZeroHeartbeatPeriod);
        }
        if !matches!(
            self.presence,
            Topic::MasterPresence | Topic::AgentPresence(_)
        ) {
            return Err(ClientError::NotAPresenceTopic);
        }
        let will_topic = self
            .presence
            .build(&self.prefix)
            .map_err(ClientError::InvalidPrefix)?;
        let will = self.will.clone().unwrap_or_else(|| {
            Presence {
                state: State::Lost,
                incarnation: self.incarnation,
            }
            .render()
            .as_str()
            .to_owned()
        });

        let mut mqtt = MqttOptions::new(self.client_id.clone(), broker.host.clone(), broker.port);
        mqtt.set_keep_alive(keep_alive_for(self.heartbeat_period))
            .set_clean_session(false)
            .set_max_packet_size(MAX_CLIENT_PACKET, MAX_CLIENT_PACKET)
            .set_last_will(LastWill::new(
                will_topic.as_str(),
                will.as_bytes(),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some((user, pass)) = &self.credentials {
            mqtt.set_credentials(user.clone(), pass.clone());
        }
        if broker.tls {
            let tls = self.tls.as_ref().ok_or(ClientError::TlsWithoutCa)?;
            mqtt.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.0.clone(),
            )));
        }
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        Ok((mqtt, net))
    }

    /// A client and its event loop with [`Self::options`] applied. Nothing connects until the
    /// event loop is polled.
    pub fn connect(
        &self,
        broker: &BrokerAddr,
        request_capacity: usize,
    ) -> Result<(AsyncClient, EventLoop), ClientError> {
        let (mqtt, net) = self.options(broker)?;
        let (client, mut eventloop) = AsyncClient::new(mqtt, request_capacity);
        eventloop.set_network_options(net);
        Ok((client, eventloop))
    }
}

/// MQTT keepalive for a heartbeat period: the period in whole seconds, rounded up, within the
/// protocol's 1..=65535 s. The broker then notices a dead link (and publishes the will) about
/// 1.5 periods after the last packet; the heartbeat timeout, not the broker, decides.
pub fn keep_alive_for(heartbeat_period: Duration) -> Duration {
    let secs = heartbeat_period
        .as_secs()
        .saturating_add(u64::from(heartbeat_period.subsec_nanos() > 0));
    Duration::from_secs(secs.clamp(1, u64::from(u16::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_config_is_valid_and_bounded() {
        let config = BrokerConfig::builtin().unwrap();
        let c = config.to_rumqttd();
        assert!(c.console.is_none() && c.prometheus.is_none() && c.v5.is_none());
        // Far below the stock 100 MB x 10 per log.
        assert!(c.router.max_segment_size * (c.router.max_segment_count + 1) <= 1 << 20);
        for seg in c.router.custom_segment.iter().flat_map(|m| m.values()) {
            assert!(seg.max_segment_size * (seg.max_segment_count + 1) <= 64 << 10);
        }
        assert_eq!(config.listen().port(), 1883);
    }

    #[test]
    fn broker_urls() {
        let ok = |s: &str| BrokerAddr::parse(s).unwrap();
        assert_eq!(
            ok("mqtt://localhost:1884"),
            BrokerAddr {
                host: "localhost".into(),
                port: 1884,
                tls: false
            }
        );
        assert_eq!(ok("tcp://10.0.0.2").port, 1883);
        assert_eq!(ok("mqtt://broker.lan/").host, "broker.lan");
        assert_eq!(ok("mqtt://[::1]:1883").host, "::1");
        assert_eq!(ok("mqtt://[::1]:1883").to_string(), "mqtt://[::1]:1883");
        assert_eq!(ok("MQTT://h:1").to_string(), "mqtt://h:1");

        let err = |s: &'static str| BrokerAddr::parse(s).unwrap_err();
        assert_eq!(err(""), BrokerAddrError::Empty);
        // The agent's rules: no scheme is plain MQTT, and then the port must be given.
        assert_eq!(ok("localhost:1883").to_string(), "mqtt://localhost:1883");
        assert_eq!(err("localhost"), BrokerAddrError::MissingPort);
        assert!(ok("mqtts://h:8884").tls && ok("ssl://h").tls);
        assert_eq!(ok("mqtts://h").port, 8883);
        assert_eq!(ok("MQTTS://h:1").to_string(), "mqtts://h:1");
        assert!(matches!(
            err("wss://h:8883"),
            BrokerAddrError::UnsupportedScheme(_)
        ));
        assert!(matches!(err("http://h"), BrokerAddrError::UnknownScheme(_)));
        assert_eq!(err("mqtt://:1883"), BrokerAddrError::MissingHost);
        assert_eq!(err("mqtt://h:0"), BrokerAddrError::InvalidPort("0"));
        assert_eq!(err("mqtt://h:65536"), BrokerAddrError::InvalidPort("65536"));
        assert_eq!(err("mqtt://h:+1"), BrokerAddrError::InvalidPort("+1"));
        assert_eq!(err("mqtt://u:p@h"), BrokerAddrError::CredentialsInUrl);
        assert!(matches!(
            err("mqtt://h:1/x"),
            BrokerAddrError::TrailingPart(_)
        ));
        assert!(matches!(
            err("mqtt://::1:1883"),
            BrokerAddrError::InvalidHost(_)
        ));
        assert!(matches!(err("mqtt://a b"), BrokerAddrError::InvalidHost(_)));
        assert!(matches!(
            err("mqtt://[zz]:1"),
            BrokerAddrError::InvalidHost(_)
        ));
        assert!(err("nope").to_string().contains("mqtt://host:port"));
    }

    #[test]
    fn keepalive_follows_heartbeat() {
        assert_eq!(
            keep_alive_for(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            keep_alive_for(Duration::from_millis(1500)),
            Duration::from_secs(2)
        );
        assert_eq!(
            keep_alive_for(Duration::from_millis(200)),
            Duration::from_secs(1)
        );
        assert_eq!(
            keep_alive_for(Duration::from_secs(1 << 20)),
            Duration::from_secs(65535)
        );
    }

    #[test]
    fn client_options() {
        let s = ClientSettings::master("tether-master", "tether", 0xab, Duration::from_secs(10));
        let broker = BrokerAddr::parse("mqtt://127.0.0.1:1").unwrap();
        let (mqtt, _net) = s.options(&broker).unwrap();
        assert!(!mqtt.clean_session());
        assert_eq!(mqtt.keep_alive(), Duration::from_secs(10));
        let will = mqtt.last_will().unwrap();
        assert_eq!(will.topic, "tether/master/presence");
        assert_eq!(&will.message[..], b"offline 000000ab lost");
        assert!(will.retain);
        assert_eq!(will.qos, QoS::AtLeastOnce);

        let bad = |f: &dyn Fn(&mut ClientSettings)| {
            let mut s = s.clone();
            f(&mut s);
            match s.options(&broker) {
                Err(e) => e,
                Ok(_) => panic!("accepted {s:?}"),
            }
        };
        assert!(matches!(
            bad(&|s| s.client_id = String::new()),
            ClientError::InvalidClientId(_)
        ));
        assert!(matches!(
            bad(&|s| s.client_id = "a/b".into()),
            ClientError::InvalidClientId(_)
        ));
        assert!(matches!(
            bad(&|s| s.prefix = "a/#".into()),
            ClientError::InvalidPrefix(_)
        ));
        assert_eq!(
            bad(&|s| s.heartbeat_period = Duration::ZERO),
            ClientError::ZeroHeartbeatPeriod
        );
        assert_eq!(
            bad(&|s| s.presence = Topic::MasterHeartbeat),
            ClientError::NotAPresenceTopic
        );
        let tls_broker = BrokerAddr::parse("mqtts://127.0.0.1:1").unwrap();
        assert!(matches!(
            s.options(&tls_broker),
            Err(ClientError::TlsWithoutCa)
        ));
    }

    #[test]
    fn broker_tls_and_auth_tables_point_to_the_flags() {
        let base = BUILTIN_CONFIG.replace(
            "    dynamic_filters = true\n",
            "    dynamic_filters = true\n    [v4.1.connections.auth]\n    a = \"b\"\n",
        );
        let err = BrokerConfig::parse(&base).unwrap_err().to_string();
        assert!(err.contains("--broker-passwords"), "{err}");
        let tls = BUILTIN_CONFIG.replace(
            "next_connection_delay_ms = 1\n",
            "next_connection_delay_ms = 1\n[v4.1.tls]\ncertpath = \"c\"\nkeypath = \"k\"\n",
        );
        let err = BrokerConfig::parse(&tls).unwrap_err().to_string();
        assert!(err.contains("--tls-listen"), "{err}");
    }
}
