//! Broker, links and clients together: resets, black holes, lost acknowledgements and broker
//! restarts, end to end in virtual time.

use tether_core::{Duration, Instant};
use tether_tests::sim::{
    BrokerConfig, ClientConfig, ClientError, ClientEvent, ClientKey, Clock, Dir, Fault, LinkConfig,
    Net, Path, Publish, QoS, Will,
};

type Log = Vec<(Instant, ClientKey, ClientEvent)>;

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

const PRESENCE: &str = "tether/agent/pi-1/presence";
const CMD: &str = "tether/agent/pi-1/cmd";
const EVENT: &str = "tether/agent/pi-1/event";

struct Sim {
    net: Net,
    clock: Clock,
    log: Log,
    agent: ClientKey,
    master: ClientKey,
}

impl Sim {
    fn new(broker: BrokerConfig, agent_ka: u16) -> Self {
        let mut net = Net::new(broker, 1);
        let mut master = ClientConfig::new("master");
        master.keepalive_s = 60;
        master.subscriptions = vec![
            ("tether/agent/+/presence".into(), QoS::AtLeastOnce),
            ("tether/agent/+/event".into(), QoS::AtLeastOnce),
        ];
        let master = net.add_client(master, LinkConfig::default());
        let mut agent = ClientConfig::new("pi-1");
        agent.keepalive_s = agent_ka;
        agent.will = Some(Will::new(
            PRESENCE,
            &b"offline 00000001 lost"[..],
            QoS::AtLeastOnce,
            true,
        ));
        agent.subscriptions = vec![(CMD.into(), QoS::AtLeastOnce)];
        let agent = net.add_client(agent, LinkConfig::default());
        net.start(master, ms(0));
        net.start(agent, ms(0));
        Self {
            net,
            clock: Clock::new(ms(0)),
            log: Vec::new(),
            agent,
            master,
        }
    }

    fn run(&mut self, until_ms: u64) {
        let events = self
            .net
            .run_until(&mut self.clock, ms(until_ms))
            .expect("not stuck");
        self.log.extend(events);
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn messages(&self, k: ClientKey, topic: &str) -> Vec<(Instant, Publish)> {
        self.log
            .iter()
            .filter_map(|(at, key, e)| match e {
                ClientEvent::Message(p) if *key == k && &*p.topic == topic => {
                    Some((*at, p.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn times(&self, k: ClientKey, event: &ClientEvent) -> Vec<Instant> {
        self.log
            .iter()
            .filter(|(_, key, e)| *key == k && e == event)
            .map(|(at, _, _)| *at)
            .collect()
    }

    fn wills(&self) -> Vec<Instant> {
        self.messages(self.master, PRESENCE)
            .into_iter()
            .filter(|(_, p)| p.payload.starts_with(b"offline"))
            .map(|(at, _)| at)
            .collect()
    }
}

#[test]
fn both_connect_and_subscribe() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 2);
    s.run(100);
    assert!(s.net.client(s.agent).is_connected() && s.net.client(s.master).is_connected());
    assert_eq!(
        s.times(
            s.agent,
            &ClientEvent::Connected {
                session_present: false
            }
        ),
        vec![ms(2)]
    );
    s.net
        .publish(
            s.master,
            CMD,
            &b"start"[..],
            QoS::AtLeastOnce,
            false,
            s.now(),
        )
        .unwrap();
    s.run(200);
    assert_eq!(s.messages(s.agent, CMD).len(), 1);
}

#[test]
fn will_on_reset_arrives_at_once() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 2);
    s.run(1_000);
    s.net.set_fault(s.agent, Fault::Reset, ms(1_000));
    s.run(1_100);
    assert_eq!(s.wills(), vec![ms(1_001)], "{}", s.net.trace());
    assert_eq!(
        s.times(s.agent, &ClientEvent::Disconnected),
        vec![ms(1_000)]
    );
    // Refused while the reset lasts; back once it is lifted.
    s.run(5_000);
    assert!(!s.net.client(s.agent).is_connected());
    assert!(s.net.link(s.agent).stats().refused >= 3);
    s.net.set_fault(s.agent, Fault::Up, s.now());
    s.run(7_000);
    assert!(s.net.client(s.agent).is_connected());
}

#[test]
fn will_after_black_hole_at_one_and_a_half_keepalive() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 2);
    s.run(5_500);
    // Pings leave at 2.002 s and 4.002 s; the broker last heard one at 4.003 s.
    s.net.set_fault(s.agent, Fault::BlackHole, ms(5_500));
    s.net
        .publish(
            s.master,
            CMD,
            &b"during"[..],
            QoS::AtLeastOnce,
            false,
            ms(5_500),
        )
        .unwrap();
    s.run(20_000);
    assert_eq!(s.wills(), vec![ms(7_004)], "{}", s.net.trace());
    // The client notices by itself when its 6.002 s ping is still unanswered at 8.002 s.
    assert_eq!(
        s.times(s.agent, &ClientEvent::Disconnected),
        vec![ms(8_002)]
    );
    assert_eq!(s.net.client(s.agent).stats().ping_timeouts, 1);
    s.net.set_fault(s.agent, Fault::Up, ms(20_000));
    s.run(30_000);
    assert!(s.net.client(s.agent).is_connected());
    assert_eq!(
        s.times(
            s.agent,
            &ClientEvent::Connected {
                session_present: true
            }
        )
        .len(),
        1
    );
    // Queued while it was away, delivered on return.
    assert_eq!(s.messages(s.agent, CMD).len(), 1);
}

#[test]
fn mosquitto_like_broker_publishes_the_will_later() {
    let mut s = Sim::new(BrokerConfig::mosquitto(), 2);
    s.run(5_500);
    s.net.set_fault(s.agent, Fault::BlackHole, ms(5_500));
    s.run(20_000);
    // Expired at 7.003 s, noticed by the 10 s sweep.
    assert_eq!(s.wills(), vec![ms(10_001)]);
}

#[test]
fn no_will_after_clean_disconnect() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 2);
    s.run(1_000);
    s.net.disconnect(s.agent, ms(1_000));
    s.run(60_000);
    assert!(s.wills().is_empty(), "{}", s.net.trace());
    assert_eq!(
        s.times(s.agent, &ClientEvent::Disconnected),
        vec![ms(1_000)]
    );
    let session = s
        .net
        .broker()
        .session("pi-1")
        .expect("persistent session kept");
    assert!(!session.connected);
    assert_eq!(
        s.net
            .publish(s.agent, EVENT, &b"x"[..], QoS::AtLeastOnce, false, s.now()),
        Err(ClientError::Stopped)
    );
}

#[test]
fn short_black_hole_only_delays() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 5);
    s.run(1_000);
    s.net.set_fault(s.agent, Fault::BlackHole, ms(1_000));
    s.net
        .publish(
            s.master,
            CMD,
            &b"during"[..],
            QoS::AtLeastOnce,
            false,
            ms(1_000),
        )
        .unwrap();
    s.net
        .publish(
            s.agent,
            EVENT,
            &b"e1"[..],
            QoS::AtLeastOnce,
            false,
            ms(1_000),
        )
        .unwrap();
    s.run(2_000);
    s.net.set_fault(s.agent, Fault::Up, ms(2_000));
    s.run(30_000);
    assert!(
        s.times(s.agent, &ClientEvent::Disconnected).is_empty(),
        "{}",
        s.net.trace()
    );
    assert!(s.wills().is_empty());
    // The broker sent it at 1.001 s into the hole; TCP retransmits at 1.201, 1.601, 2.401 s:
    // the first after the path is back gets through.
    assert_eq!(
        s.messages(s.agent, CMD)
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>(),
        vec![ms(2_402)]
    );
    assert_eq!(s.messages(s.master, EVENT).len(), 1);
    assert_eq!(s.net.client(s.agent).stats().lost, 0);
}

#[test]
fn lost_puback_means_a_dup_after_reconnect() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 2);
    s.run(1_000);
    // Everything the agent sends from now on this connection is lost, its PUBACK first.
    s.net.set_fault(
        s.agent,
        Fault::OneWay(Dir::ToBroker, Path::Drop(1.0)),
        ms(1_000),
    );
    s.net
        .publish(
            s.master,
            CMD,
            &b"start 1"[..],
            QoS::AtLeastOnce,
            false,
            ms(1_000),
        )
        .unwrap();
    s.run(1_500);
    s.net.set_fault(s.agent, Fault::Up, ms(1_500));
    s.run(20_000);
    let got = s.messages(s.agent, CMD);
    assert_eq!(got.len(), 2, "{}", s.net.trace());
    assert!(!got[0].1.dup && got[1].1.dup);
    assert_eq!(got[0].1.payload, got[1].1.payload);
    assert!(s.net.link(s.agent).stats().stalls >= 1);
    assert_eq!(s.net.broker().session("pi-1").map(|x| x.inflight), Some(0));
}

#[test]
fn offline_messages_are_queued_for_a_persistent_session() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 2);
    s.run(1_000);
    s.net.kill(s.agent, ms(1_000));
    s.run(1_100);
    assert_eq!(s.wills(), vec![ms(1_002)]);
    for i in 0..3u8 {
        s.net
            .publish(s.master, CMD, vec![i], QoS::AtLeastOnce, false, s.now())
            .unwrap();
    }
    s.run(10_000);
    assert_eq!(s.net.broker().session("pi-1").map(|x| x.queued), Some(3));
    s.net.start(s.agent, s.now());
    s.run(11_000);
    let got: Vec<u8> = s
        .messages(s.agent, CMD)
        .iter()
        .map(|(_, p)| p.payload[0])
        .collect();
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(
        s.times(
            s.agent,
            &ClientEvent::Connected {
                session_present: true
            }
        )
        .len(),
        1
    );
}

#[test]
fn broker_restart_loses_everything_even_the_clients_pending_publishes() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 2);
    s.run(1_000);
    s.net
        .publish(
            s.agent,
            PRESENCE,
            &b"online 00000001"[..],
            QoS::AtLeastOnce,
            true,
            s.now(),
        )
        .unwrap();
    s.run(2_000);
    assert!(s.net.broker().retained(PRESENCE).is_some());
    // The agent's event is held by a black hole when the broker restarts.
    s.net.set_fault(s.agent, Fault::BlackHole, ms(2_000));
    s.net
        .publish(
            s.agent,
            EVENT,
            &b"finished"[..],
            QoS::AtLeastOnce,
            false,
            ms(2_000),
        )
        .unwrap();
    s.run(3_000);
    s.net.restart_broker(ms(3_000));
    s.run(4_500);
    assert_eq!(s.net.broker().retained_count(), 0);
    assert_eq!(
        s.times(
            s.master,
            &ClientEvent::Connected {
                session_present: false
            }
        )
        .len(),
        2
    );
    s.net.set_fault(s.agent, Fault::Up, ms(10_000));
    s.run(20_000);
    assert!(s.net.client(s.agent).is_connected());
    assert_eq!(
        s.net.client(s.agent).stats().dropped_pending,
        1,
        "{}",
        s.net.trace()
    );
    assert!(
        s.messages(s.master, EVENT).is_empty(),
        "lost with the session: hence end-to-end acks"
    );
    assert!(s.net.broker().retained(PRESENCE).is_none());
}

#[test]
fn requests_queue_while_disconnected_and_a_full_queue_is_an_error() {
    let mut s = Sim::new(BrokerConfig::rumqttd(), 2);
    s.net.client_mut(s.agent).config_mut().request_cap = 4;
    s.run(1_000);
    s.net.set_fault(s.agent, Fault::BlackHole, ms(1_000));
    s.run(10_000);
    assert!(!s.net.client(s.agent).is_connected());
    for i in 0..4u8 {
        s.net
            .publish(s.agent, EVENT, vec![i], QoS::AtLeastOnce, false, s.now())
            .unwrap();
    }
    assert_eq!(
        s.net
            .publish(s.agent, EVENT, vec![9], QoS::AtLeastOnce, false, s.now()),
        Err(ClientError::Full)
    );
    assert_eq!(
        s.net
            .publish(s.agent, "bad/#", vec![9], QoS::AtLeastOnce, false, s.now()),
        Err(ClientError::InvalidTopic)
    );
    s.net.set_fault(s.agent, Fault::Up, s.now());
    s.run(20_000);
    let got: Vec<u8> = s
        .messages(s.master, EVENT)
        .iter()
        .map(|(_, p)| p.payload[0])
        .collect();
    assert_eq!(got, [0, 1, 2, 3]);
}

#[test]
fn connecting_through_a_black_hole_times_out_then_succeeds() {
    let mut net = Net::new(BrokerConfig::rumqttd(), 3);
    let mut clock = Clock::new(ms(0));
    let k = net.add_client(ClientConfig::new("pi-1"), LinkConfig::default());
    net.set_fault(k, Fault::BlackHole, ms(0));
    net.start(k, ms(0));
    let log = net.run_until(&mut clock, ms(6_500)).unwrap();
    assert!(log.is_empty());
    assert_eq!(net.client(k).stats().failed_connects, 1);
    assert_eq!(net.broker().stats().connects, 0);
    net.set_fault(k, Fault::Up, ms(6_500));
    let log = net.run_until(&mut clock, ms(10_000)).unwrap();
    // Retried at 6 s; its SYN is retransmitted at 7 s, the CONNACK follows.
    assert_eq!(
        log,
        vec![(
            ms(7_002),
            k,
            ClientEvent::Connected {
                session_present: false
            }
        )]
    );
    assert_eq!(
        net.broker().stats().connects,
        1,
        "the aborted attempt never arrived"
    );
}

#[test]
fn an_hour_of_keepalive_on_a_healthy_link() {
    let mut net = Net::new(BrokerConfig::rumqttd(), 4);
    let mut clock = Clock::new(ms(0));
    let mut config = ClientConfig::new("pi-1");
    config.keepalive_s = 1;
    let k = net.add_client(config, LinkConfig::default());
    net.start(k, ms(0));
    let log = net
        .run_until(&mut clock, Instant::from_secs(3_600))
        .unwrap();
    assert_eq!(log.len(), 1);
    let stats = net.client(k).stats();
    assert_eq!(stats.pings, 3_599);
    assert_eq!((stats.lost, stats.ping_timeouts), (0, 0));
    assert_eq!(net.broker().stats().keepalive_timeouts, 0);
    assert!(net.trace().recorded() > 7_000);
    let _ = Duration::from_secs(0);
}
