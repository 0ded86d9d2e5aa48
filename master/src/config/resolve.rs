//! The layered settings checked and turned into the runtime's [`RunConfig`]: defaults applied,
//! every value and every pair of settings that go together checked, all errors reported.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Layered};
use crate::api::Guard;
use crate::api_tls::ApiTls;
use crate::broker::BrokerAddr;
use crate::limits::HEARTBEAT_PERIOD_MS;
use crate::runtime::{ClientTlsFiles, RunConfig, parse_age};
use crate::store::StoreLocation;
use crate::tls_listener::TlsListen;

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1883);
const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
const DEFAULT_PREFIX: &str = "tether";
const DEFAULT_HEARTBEAT_PERIOD_MS: u64 = 10_000;
const DEFAULT_RETAIN_HISTORY: &str = "30d";
const DEFAULT_SCHEDULE_HORIZON: &str = "7d";
/// The embedded broker's connection limit: room for the master's own connection and one
/// more, and at most what rumqttd's router preallocates without a second thought (its slots
/// are reserved up front: about 1 KB of address space each, touched only when used).
const MIN_BROKER_CONNECTIONS: usize = 2;
const MAX_BROKER_CONNECTIONS: usize = 200_000;

impl Layered {
    /// The configuration to run with, or every problem. `broker_password` is
    /// `TETHER_BROKER_PASSWORD` (a secret stays out of the file and the command line).
    pub fn resolve(&self, broker_password: Option<String>) -> Result<RunConfig, Vec<ConfigError>> {
        let s = &self.settings;
        let mut errors = Vec::new();
        // `key` needs `other`: said in both directions' terms, for file keys and flags alike.
        let (broker, cert, key, ca) = (
            s.broker.is_some(),
            s.broker_cert.is_some(),
            s.broker_key.is_some(),
            s.broker_ca.is_some(),
        );
        let (user, password) = (s.broker_username.is_some(), broker_password.is_some());
        let (listen, tls_cert, tls_key) = (
            s.tls_listen.is_some(),
            s.tls_cert.is_some(),
            s.tls_key.is_some(),
        );
        let (api_cert, api_key) = (s.api_tls_cert.is_some(), s.api_tls_key.is_some());
        // (key, given, the key it needs, that one given)
        let needs = [
            ("broker_ca", ca, "broker", broker),
            ("broker_cert", cert, "broker_key", key),
            ("broker_key", key, "broker_cert", cert),
            ("broker_cert", cert, "broker_ca", ca),
            ("broker_username", user, "broker", broker),
            ("broker_username", user, "TETHER_BROKER_PASSWORD", password),
            ("tls_listen", listen, "tls_cert", tls_cert),
            ("tls_listen", listen, "tls_key", tls_key),
            ("tls_cert", tls_cert, "tls_listen", listen),
            ("tls_key", tls_key, "tls_listen", listen),
            (
                "tls_client_ca",
                s.tls_client_ca.is_some(),
                "tls_listen",
                listen,
            ),
            ("api_tls_cert", api_cert, "api_tls_key", api_key),
            ("api_tls_key", api_key, "api_tls_cert", api_cert),
            (
                "api_client_ca",
                s.api_client_ca.is_some(),
                "api_tls_cert",
                api_cert,
            ),
        ];
        for (key, given, other, present) in needs {
            if given && !present {
                errors.push(self.error(key, format!("needs {other}")));
            }
        }

        let data_dir = s.data_dir.clone();
        if data_dir.is_none() {
            errors.push(self.error(
                "data_dir",
                "not set (data_dir in the config file, --data-dir or TETHER_DATA_DIR)",
            ));
        }
        if data_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            errors.push(self.error("data_dir", "is empty"));
        }
        let store = match s.store.as_deref().map(StoreLocation::parse).transpose() {
            Ok(store) => store,
            Err(e) => {
                errors.push(self.error("store", e));
                None
            }
        };
        let broker = match s.broker.as_deref().map(BrokerAddr::parse).transpose() {
            Ok(b) => b,
            Err(e) => {
                let given = s.broker.as_deref().unwrap_or_default();
                errors.push(self.error("broker", format!("`{given}`: {e}")));
                None
            }
        };
        if broker.as_ref().is_some_and(|b| b.tls) && s.broker_ca.is_none() {
            errors.push(self.error("broker", "an mqtts:// broker needs broker_ca"));
        }
        if broker.as_ref().is_some_and(|b| !b.tls) && s.broker_ca.is_some() {
            errors.push(self.error("broker_ca", "is for an mqtts:// broker only"));
        }
        if let Some(n) = s.broker_max_connections {
            if !(MIN_BROKER_CONNECTIONS..=MAX_BROKER_CONNECTIONS).contains(&n) {
                errors.push(self.error(
                    "broker_max_connections",
                    format!(
                        "must be from {MIN_BROKER_CONNECTIONS} (the master's own connection and \
                         one more) to {MAX_BROKER_CONNECTIONS}, found {n}"
                    ),
                ));
            }
            if broker.is_some() {
                errors.push(self.error(
                    "broker_max_connections",
                    "is for the embedded broker: an external broker sets its own limit",
                ));
            }
        }
        let prefix = s.prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.into());
        if prefix.is_empty() {
            errors.push(self.error("prefix", "is empty"));
        }
        let period = s.heartbeat_period_ms.unwrap_or(DEFAULT_HEARTBEAT_PERIOD_MS);
        if let Err(e) = HEARTBEAT_PERIOD_MS.check(period) {
            errors.push(self.error("heartbeat_period_ms", e.to_string()));
        }
        let retain = s
            .retain_history
            .as_deref()
            .unwrap_or(DEFAULT_RETAIN_HISTORY);
        let retain_history = parse_age(retain).unwrap_or_else(|e| {
            errors.push(self.error("retain_history", e));
            None
        });
        let horizon = s
            .schedule_horizon
            .as_deref()
            .unwrap_or(DEFAULT_SCHEDULE_HORIZON);
        let schedule_horizon = match parse_age(horizon) {
            Ok(Some(age)) if age >= Duration::from_secs(60) => age,
            Ok(_) => {
                errors.push(self.error("schedule_horizon", "must be a minute or more"));
                Duration::ZERO
            }
            Err(e) => {
                errors.push(self.error("schedule_horizon", e));
                Duration::ZERO
            }
        };
        if !errors.is_empty() {
            errors.sort_by_key(|e| (e.line.is_none(), e.line));
            return Err(errors);
        }
        let data_dir = data_dir.unwrap_or_default();
        Ok(RunConfig {
            store: store.unwrap_or_else(|| StoreLocation::in_data_dir(&data_dir)),
            data_dir,
            listen: s.listen.unwrap_or(DEFAULT_LISTEN),
            http: s.http.unwrap_or(DEFAULT_HTTP),
            broker,
            broker_config: s.broker_config.clone(),
            broker_max_connections: s.broker_max_connections,
            prefix,
            heartbeat_period: Duration::from_millis(period),
            schedule_horizon,
            cancel_duplicates: s.cancel_duplicates.unwrap_or(false),
            tls_listen: pair(&s.tls_cert, &s.tls_key).and_then(|(cert, key)| {
                Some(TlsListen {
                    addr: s.tls_listen?,
                    cert,
                    key,
                    client_ca: s.tls_client_ca.clone(),
                })
            }),
            broker_passwords: s.broker_passwords.clone(),
            client_credentials: s.broker_username.clone().zip(broker_password),
            client_tls: s.broker_ca.clone().map(|ca| ClientTlsFiles {
                ca,
                identity: pair(&s.broker_cert, &s.broker_key),
            }),
            signing_key: s.signing_key.clone(),
            insecure_agents: s.insecure_agents.unwrap_or(false),
            api_guard: Guard {
                hosts: s.api_host.clone().unwrap_or_default(),
                origins: s.api_origin.clone().unwrap_or_default(),
            },
            api_tls: pair(&s.api_tls_cert, &s.api_tls_key).map(|(cert, key)| ApiTls {
                cert,
                key,
                client_ca: s.api_client_ca.clone(),
            }),
            retain_history,
        })
    }
}

fn pair(a: &Option<PathBuf>, b: &Option<PathBuf>) -> Option<(PathBuf, PathBuf)> {
    a.clone().zip(b.clone())
}
