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
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod client;
mod config;
mod embedded;

pub use client::*;
pub use config::*;
pub use embedded::*;
/// The broker configuration shipped in `broker-config/rumqttd.toml`.
pub const BUILTIN_CONFIG: &str = include_str!("../../../broker-config/rumqttd.toml");

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

#[cfg(test)]
mod tests {
    use rumqttc::QoS;
    use tether_core::topic::Topic;

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
