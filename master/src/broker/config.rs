//! A checked rumqttd configuration: the built-in one or a file, bounded memory per topic,
//! its one MQTT 3.1.1 listener.

use std::net::SocketAddr;
use std::path::Path;

use super::*;

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

    /// The router's connection limit (`router.max_connections`): a connection beyond it is
    /// closed before its CONNACK.
    pub fn set_max_connections(&mut self, n: usize) {
        self.rest.router.max_connections = n;
    }

    /// The router's connection limit.
    pub fn max_connections(&self) -> usize {
        self.rest.router.max_connections
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
             (mosquitto's password file format, what `tetherctl provision --credentials` and \
             mosquitto_passwd write)"
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
