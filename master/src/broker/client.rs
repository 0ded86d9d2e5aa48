//! How a Tether client reaches a broker: its parsed address and the rumqttc options every
//! Tether connection needs.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, EventLoop, LastWill, MqttOptions, NetworkOptions, QoS, TlsConfiguration, Transport,
};
use tether_core::presence::{Presence, State};
use tether_core::topic::{Topic, TopicError, validate_id};

use super::*;

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
