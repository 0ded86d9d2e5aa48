//! rumqttd in this process: started on its own threads, ready once it accepts TCP.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

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
        let _ = BROKER_THREADS.set(vec![
            BROKER_THREAD.to_owned(),
            format!("router-{}", rumqttd_config.id),
            config.listener().name.clone(),
        ]);
        let limit = config.max_connections();
        let thread = thread::Builder::new()
            .name(BROKER_THREAD.into())
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
                watch_refusals(limit)?;
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

/// The thread that runs rumqttd's `start`.
const BROKER_THREAD: &str = "tether-broker";

/// The names of the embedded broker's threads: ours, rumqttd's router and its listener (which
/// also runs every connection's task). Set when the broker starts.
static BROKER_THREADS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Whether `name` is one of the embedded broker's threads: a panic there leaves the master
/// without its broker (see the master's panic hook in `logging`).
pub fn is_broker_thread(name: &str) -> bool {
    BROKER_THREADS
        .get()
        .is_some_and(|names| names.iter().any(|n| n == name))
}

/// Connections the embedded broker refused since this process started: its limit reached,
/// or a client id it cannot take (an MQTT wildcard or `/` in it).
pub fn refused_connections() -> u64 {
    rumqttd::refused_connections()
}

/// How often the refusals are summed up in the log: once a minute at most, however many
/// (a fleet reconnecting into a full broker refuses thousands a second).
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// Logs, once per [`REFUSALS_LOGGED_EVERY`], how many connections the broker refused since
/// the last line, if any. A thread of its own: one wake-up a minute, nothing to share.
fn watch_refusals(limit: usize) -> Result<(), BrokerError> {
    thread::Builder::new()
        .name("tether-broker-refusals".into())
        .spawn(move || {
            let mut logged = refused_connections();
            loop {
                thread::sleep(REFUSALS_LOGGED_EVERY);
                let now = refused_connections();
                if now > logged {
                    log::warn!(
                        "the embedded broker refused {} connections in the last {} s: its limit \
                         of {limit} connections (broker_max_connections) was reached, or client \
                         ids held + # / or $",
                        now - logged,
                        REFUSALS_LOGGED_EVERY.as_secs()
                    );
                    logged = now;
                }
            }
        })
        .map(drop)
        .map_err(BrokerError::Spawn)
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

/// A port on `ip` that was free a moment ago, for a listener (rumqttd, mosquitto) that cannot
/// bind port 0 and say which port it got. Picked at random below the kernel's ephemeral range
/// when there is room: a port from that range (what binding port 0 gives) can be taken by any
/// outgoing connection between this check and the real bind, which busy test runs saw happen.
pub fn pick_free_port(ip: IpAddr) -> io::Result<SocketAddr> {
    let low = ephemeral_low().unwrap_or(32768);
    if low > 11024 {
        let span = u64::from(low - 11024);
        for _ in 0..64 {
            let port = 10240 + (random() % span) as u16;
            if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)) {
                return l.local_addr();
            }
        }
    }
    TcpListener::bind(SocketAddr::new(ip, 0))?.local_addr()
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`).
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// A random number from the standard library's per-process hash keys (no crate for this).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
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
