//! Broker scenarios shared by the embedded-rumqttd and mosquitto tests: real rumqttc clients
//! built with Tether's client options, over real sockets, every wait bounded.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use tether_core::presence::{Presence, State};
use tether_core::topic::{Topic, validate_id};
use tether_master::broker::{BrokerAddr, ClientSettings};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Generous: a loaded 2-core machine, not a timing goal.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A connected client whose event loop runs in a task; what it receives comes out of `rx`.
pub(crate) struct Conn {
    pub(crate) client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: JoinHandle<()>,
}

impl Conn {
    /// Connects as `id` with Tether's options (will on the agent presence topic of `id`) and
    /// waits for CONNACK.
    pub(crate) async fn connect(broker: &BrokerAddr, id: &str, incarnation: u32) -> Conn {
        let settings = ClientSettings {
            client_id: id.to_owned(),
            prefix: "tether".to_owned(),
            presence: Topic::AgentPresence(validate_id(id).unwrap()),
            incarnation,
            heartbeat_period: Duration::from_secs(5),
            credentials: None,
            tls: None,
            will: None,
        };
        let (client, mut eventloop) = settings.connect(broker, 16).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        // Tests want to see a failure, not rumqttc's silent reconnect.
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let mut conn = Conn { client, rx, task };
        conn.expect("CONNACK", |p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await;
        conn
    }

    /// Waits for the first packet `f` accepts, skipping others; panics (failing the test) on a
    /// connection error or after [`WAIT`].
    pub(crate) async fn expect<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Packet) -> Option<T>,
    ) -> T {
        let found = timeout(WAIT, async {
            loop {
                match self.rx.recv().await {
                    Some(Ok(packet)) => {
                        if let Some(v) = f(&packet) {
                            return v;
                        }
                    }
                    Some(Err(e)) => panic!("connection failed while waiting for {what}: {e}"),
                    None => panic!("event loop ended while waiting for {what}"),
                }
            }
        })
        .await;
        match found {
            Ok(v) => v,
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }

    pub(crate) async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.expect("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub(crate) async fn publish(&mut self, topic: &str, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
        self.expect("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await;
    }

    pub(crate) async fn next_publish(&mut self, topic: &str) -> Publish {
        self.expect(&format!("PUBLISH on {topic}"), |p| match p {
            Packet::Publish(p) if p.topic == topic => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Drops the connection without DISCONNECT, like a process killed mid-flight.
    pub(crate) async fn kill(self) {
        self.task.abort();
        // The socket closes when the aborted task's event loop is dropped.
        let _ = self.task.await;
    }
}

/// QoS 1 from one client reaches another's subscription.
pub(crate) async fn publish_reaches_subscriber(broker: &BrokerAddr) {
    let topic = "tether/agent/sub-1/cmd";
    let mut sub = Conn::connect(broker, "sub-1", 1).await;
    sub.subscribe(topic).await;
    let mut publisher = Conn::connect(broker, "pub-1", 2).await;
    publisher.publish(topic, false, b"hello").await;
    let got = sub.next_publish(topic).await;
    assert_eq!(&got.payload[..], b"hello");
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

/// A retained message is delivered to a subscriber that arrives after it.
pub(crate) async fn retained_reaches_late_subscriber(broker: &BrokerAddr) {
    let topic = "tether/master/presence";
    let mut publisher = Conn::connect(broker, "master-1", 3).await;
    publisher.publish(topic, true, b"online 00000003").await;
    let mut late = Conn::connect(broker, "late-1", 4).await;
    late.subscribe(topic).await;
    let got = late.next_publish(topic).await;
    assert_eq!(&got.payload[..], b"online 00000003");
    assert!(
        got.retain,
        "a retained message must arrive flagged retained"
    );
}

/// A client that dies without DISCONNECT gets its will published: to a live watcher at once,
/// and retained for whoever subscribes later.
pub(crate) async fn killed_client_fires_its_will(broker: &BrokerAddr) {
    let topic = "tether/agent/victim-1/presence";
    let incarnation = 0x00c0_ffee;
    let mut watcher = Conn::connect(broker, "watcher-1", 5).await;
    watcher.subscribe(topic).await;

    let mut victim = Conn::connect(broker, "victim-1", incarnation).await;
    let online = Presence {
        state: State::Online,
        incarnation,
    };
    victim
        .publish(topic, true, online.render().as_bytes())
        .await;
    let got = watcher.next_publish(topic).await;
    assert_eq!(Presence::parse(&got.payload), Ok(online));

    victim.kill().await;
    let lost = Presence {
        state: State::Lost,
        incarnation,
    };
    let got = watcher.next_publish(topic).await;
    assert_eq!(Presence::parse(&got.payload), Ok(lost));

    let mut late = Conn::connect(broker, "late-2", 6).await;
    late.subscribe(topic).await;
    let got = late.next_publish(topic).await;
    assert_eq!(
        Presence::parse(&got.payload),
        Ok(lost),
        "the will is retained"
    );
}
