//! The agent's MQTT connection: rumqttc options, reconnect pacing and broker fail-over.
//!
//! rumqttc reconnects whenever its event loop is polled again after an error, with no delay
//! and always to the same broker. The connection task here owns the event loop, waits a capped
//! exponential back-off with jitter between attempts, and moves to the next broker of the list
//! after each failed attempt. While it waits, [`crate::probe`] watches for a broker's path
//! coming back and cuts the wait short when one does, so a long outage's grown back-off does
//! not delay the results once the network returns. The agent loop only sees [`NetEvent`]s.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    NetworkOptions, Packet, QoS, StateError, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

use crate::config::{Broker, Config};
use crate::probe::{self, Reach};

/// What the connection task reports to the agent loop.
#[derive(Debug)]
pub enum NetEvent {
    /// CONNACK received from `broker`; subscribe and announce now.
    Connected {
        broker: String,
        session_present: bool,
    },
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    /// The connection failed or dropped; the task waits `retry_in` before the next try (less
    /// when a probe sees a broker come back, up to twice that while none answers them).
    Disconnected {
        error: String,
        retry_in: Duration,
        /// The broker (or its certificate) turned the agent away: retrying will not help
        /// until a configuration changes.
        refused: bool,
    },
}

/// Capped exponential back-off with ±50 % jitter, so a fleet that lost its broker does not
/// come back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    state: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min,
            max: max.max(min),
            failures: 0,
            state: seed | 1,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(self.jitter()).min(self.max)
    }

    /// A factor in 0.5..1.5 (xorshift64: jitter needs no cryptographic quality).
    pub fn jitter(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        0.5 + (self.state % 1000) as f64 / 1000.0
    }

    /// The shortest wait, also the period of the probes between attempts.
    pub fn min(&self) -> Duration {
        self.min
    }
}

/// Identity and liveness settings of the agent's connection.
#[derive(Debug, Clone)]
pub struct Session {
    pub client_id: String,
    pub will_topic: String,
    pub will_payload: String,
    pub keep_alive: Duration,
}

/// MQTT 3.1.1 options for one broker: persistent session (rumqttd mixes up wills of quick
/// clean-session reconnects), the retained will, credentials.
pub fn options(config: &Config, session: &Session, broker: &Broker) -> MqttOptions {
    let mut opts = MqttOptions::new(&session.client_id, &broker.host, broker.port);
    opts.set_clean_session(false)
        .set_keep_alive(session.keep_alive)
        .set_max_packet_size(16 * 1024, 16 * 1024)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_inflight(64)
        .set_last_will(LastWill::new(
            &session.will_topic,
            session.will_payload.as_bytes().to_vec(),
            QoS::AtLeastOnce,
            true,
        ));
    if let (Some(user), Some(pass)) = (&config.username, &config.password) {
        opts.set_credentials(user, pass);
    }
    // The configuration check guarantees the TLS settings for an mqtts:// broker.
    if let (true, Some(tls)) = (broker.tls, &config.tls) {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.client.clone(),
        )));
    }
    opts
}

/// Why an attempt failed, in words for the log, and whether the broker refused the agent
/// (credentials, certificates) rather than being unreachable.
pub fn describe(error: &ConnectionError, acknowledged: bool) -> (String, bool) {
    // Certificate problems surface in the handshake, or on the first read (TLS 1.3 reports a
    // refused client certificate after the client's handshake is done).
    if let Some(tls) = tls_cause(error) {
        return (format!("TLS refused: {tls}"), true);
    }
    match error {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => "wrong username or password",
                ConnectReturnCode::NotAuthorized => "not authorized (username or password)",
                ConnectReturnCode::BadClientId => "client id rejected",
                _ => "connection refused",
            };
            (format!("refused by the broker: {why} ({code:?})"), true)
        }
        ConnectionError::Tls(e) => (format!("TLS refused: {e}"), true),
        ConnectionError::MqttState(StateError::ConnectionAborted) if !acknowledged => {
            // rumqttd answers bad credentials by closing the connection without a CONNACK.
            (
                "the broker closed the connection before accepting it (wrong username or \
                 password?)"
                    .to_owned(),
                true,
            )
        }
        other => (other.to_string(), false),
    }
}

/// The rustls error somewhere in the chain of causes (rumqttc wraps it in I/O errors, at
/// different depths depending on when it happened).
fn tls_cause(error: &ConnectionError) -> Option<&tether_tls::rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<tether_tls::rustls::Error>() {
            return Some(tls);
        }
        // io::Error's `source` skips the error it wraps.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = inner.downcast_ref::<tether_tls::rustls::Error>() {
                return Some(tls);
            }
        }
        next = e.source();
    }
    None
}

/// Requests the agent may queue without waiting: a send window of events plus heartbeats and
/// presence. The agent uses `try_publish`, so a full queue is a dropped (and later resent)
/// publish, never a stalled loop.
pub const REQUEST_CAPACITY: usize = 128;

/// Nagle off: a client that publishes and subscribes otherwise stalls ~40 ms per message.
pub fn network_options() -> NetworkOptions {
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    net
}

/// Starts the connection task; returns the client handle and the event stream.
pub fn connect(
    config: &Config,
    session: Session,
    seed: u64,
) -> (AsyncClient, mpsc::Receiver<NetEvent>) {
    let brokers = config.brokers.clone();
    let first = options(config, &session, &brokers[0]);
    let (client, mut eventloop) = AsyncClient::new(first, REQUEST_CAPACITY);
    eventloop.set_network_options(network_options());
    let (tx, rx) = mpsc::channel(64);
    let backoff = Backoff::new(config.reconnect_min, config.reconnect_max, seed);
    let config = config.clone();
    tokio::spawn(async move {
        drive(&mut eventloop, &config, &session, &brokers, backoff, tx).await;
    });
    (client, rx)
}

async fn drive(
    eventloop: &mut EventLoop,
    config: &Config,
    session: &Session,
    brokers: &[Broker],
    mut backoff: Backoff,
    tx: mpsc::Sender<NetEvent>,
) {
    let mut current = 0usize;
    let mut acknowledged = false;
    let mut reach = Reach::new(brokers.len());
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                acknowledged = true;
                backoff.reset();
                // What the probes learnt belongs to the outage that just ended.
                reach = Reach::new(brokers.len());
                NetEvent::Connected {
                    broker: brokers[current].to_string(),
                    session_present: ack.session_present,
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => NetEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
            },
            Ok(_) => continue,
            Err(rumqttc::ConnectionError::RequestsDone) => return,
            Err(e) => {
                let retry_in = backoff.next_delay();
                let (why, refused) = describe(&e, acknowledged);
                acknowledged = false;
                let error = format!("{}: {why}", brokers[current]);
                // Fail over: the next attempt goes to the next broker of the list, or to the
                // one whose path came back during the wait.
                current = (current + 1) % brokers.len();
                if tx
                    .send(NetEvent::Disconnected {
                        error,
                        retry_in,
                        refused,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let period = backoff.min();
                let back =
                    probe::wait(&mut reach, brokers, retry_in, period, || backoff.jitter()).await;
                if let Some(i) = back {
                    current = i;
                    log::info!("{}: reachable again, connecting now", brokers[i]);
                }
                eventloop.mqtt_options = options(config, session, &brokers[current]);
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_from_unreachable_brokers() {
        let (why, refused) = describe(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            false,
        );
        assert!(
            refused && why.contains("wrong username or password"),
            "{why}"
        );
        let (why, refused) = describe(
            &ConnectionError::MqttState(StateError::ConnectionAborted),
            false,
        );
        assert!(refused && why.contains("before accepting it"), "{why}");
        // The same end of a session that was accepted is a lost connection, not a refusal.
        let (_, refused) = describe(
            &ConnectionError::MqttState(StateError::ConnectionAborted),
            true,
        );
        assert!(!refused);
        // A certificate error wrapped in I/O errors, as rumqttc reports a late TLS alert.
        let tls = tether_tls::rustls::Error::InvalidCertificate(
            tether_tls::rustls::CertificateError::UnknownIssuer,
        );
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let (why, refused) = describe(&ConnectionError::Io(io), true);
        assert!(refused && why.starts_with("TLS refused: ") && why.contains("UnknownIssuer"));
        let unreachable = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let (_, refused) = describe(&ConnectionError::Io(unreachable), false);
        assert!(!refused);
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 42);
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(150));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(
            delays[9] >= Duration::from_secs(1),
            "capped near the maximum: {delays:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(150));
    }
}
