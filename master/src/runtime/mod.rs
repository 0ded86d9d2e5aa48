//! The master's runtime: binds the [`crate::core::Master`] core to tokio, rumqttc, the
//! embedded broker, the store and the HTTP API. It decides nothing.
//!
//! - [`run`] = `setup` (`setup.rs`: the store, the broker, the MQTT client, the HTTP listener,
//!   the core restored from the store) then `serve` (`serve.rs`: the one loop).
//! - One loop owns the core and the store and waits on three things: MQTT events (from the
//!   event-loop task), API requests (from axum through a channel), and the core's
//!   `poll_timeout`. After each input it drains the core's actions, commits their changes in
//!   one transaction, and only then publishes (the commit rule of [`crate::core`]).
//! - A failed commit publishes nothing of its batch and stops nothing: the core is rebuilt
//!   from the store (which holds exactly what was committed), the batch's API requests are
//!   answered with the reason (507 when the disk is full), agents resend the events that were
//!   not acknowledged, and while the store refuses writes the API refuses them up front and
//!   keeps serving reads. The first commit that succeeds ends that by itself.

mod retention;
mod serve;
mod setup;

pub use retention::parse_age;
pub use setup::ADMIN_TOKEN_FILE;

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use tether_core::auth::Hex;
use tokio::time::Instant as TokioInstant;

use crate::api;
use crate::api_tls::ApiTls;
use crate::broker::{BrokerAddr, BrokerError};
use crate::store::{StoreError, StoreLocation};
use crate::tls_listener::TlsListen;

/// How `tether-master run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub data_dir: PathBuf,
    /// The store (default: `master.db` in the data directory).
    pub store: StoreLocation,
    /// Where the embedded broker listens (port 0: a free port).
    pub listen: SocketAddr,
    pub http: SocketAddr,
    /// An external broker instead of the embedded one.
    pub broker: Option<BrokerAddr>,
    /// A rumqttd configuration file instead of the built-in one.
    pub broker_config: Option<PathBuf>,
    /// The embedded broker's connection limit, over its configuration's.
    pub broker_max_connections: Option<usize>,
    pub prefix: String,
    pub heartbeat_period: StdDuration,
    /// How far ahead schedules are planned (7 days by default).
    pub schedule_horizon: StdDuration,
    pub cancel_duplicates: bool,
    /// The embedded broker's TLS listener, beside the plain one.
    pub tls_listen: Option<TlsListen>,
    /// The embedded broker admits only the users of this password file (`user:secret` lines,
    /// the secrets mosquitto hashes or, with a warning, clear passwords).
    pub broker_passwords: Option<PathBuf>,
    /// The master's own client to an external broker: its credentials, and for `mqtts://` the
    /// CA (and optionally a client certificate and key).
    pub client_credentials: Option<(String, String)>,
    pub client_tls: Option<ClientTlsFiles>,
    /// The signing key file (default `<data_dir>/master.key`, created if missing).
    pub signing_key: Option<PathBuf>,
    /// Take unauthenticated messages from agents that have no key (insecure).
    pub insecure_agents: bool,
    /// The host names and origins the HTTP API accepts.
    pub api_guard: api::Guard,
    /// HTTPS for the API (the listener then speaks only TLS).
    pub api_tls: Option<ApiTls>,
    /// Finished tasks older than this are deleted with their history (`None`: kept forever).
    pub retain_history: Option<StdDuration>,
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
    /// The API speaks HTTPS only: the ready line says `https=ADDR` instead of `http=ADDR`.
    pub https: bool,
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
            "tether-master ready mqtt={}:{} {}={} epoch={:08x}",
            self.mqtt.host,
            self.mqtt.port,
            if self.https { "https" } else { "http" },
            self.http,
            self.epoch
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

/// The wall clock in Unix milliseconds (0 if it is before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

/// What the MQTT event-loop task hands the loop.
enum MqttInput {
    /// With when it came off the connection (a heartbeat's lag is measured from there).
    Event(rumqttc::Event, TokioInstant),
    Down(rumqttc::ConnectionError),
}

/// Runs the master until SIGINT/SIGTERM. `on_ready` gets the bound addresses once the broker
/// and the HTTP listener are up.
pub async fn run(config: RunConfig, on_ready: impl FnOnce(&Bound)) -> Result<(), RunError> {
    let master = setup::setup(config).await?;
    on_ready(&master.bound);
    serve::serve(master).await
}

/// Prints the ready line on stdout and flushes it, for scripts and tests that parse it.
pub fn print_ready(bound: &Bound) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{bound}");
    let _ = out.flush();
}
