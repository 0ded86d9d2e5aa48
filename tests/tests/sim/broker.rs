//! The model broker alone, driven packet by packet: each test is one behaviour measured on the
//! real brokers (rumqttd 0.20, mosquitto 2.0).

use tether_core::{Duration, Instant};
use tether_tests::sim::{
    Broker, BrokerConfig, ConnId, Connect, ConnectCode, Output, Packet, Publish, QoS, Rng, Will,
};

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn broker(config: BrokerConfig) -> Broker {
    Broker::new(config, Rng::new(7))
}

fn connect(
    b: &mut Broker,
    id: &str,
    clean: bool,
    ka: u16,
    will: Option<Will>,
    now: Instant,
) -> ConnId {
    b.connect(
        Connect {
            client_id: id.into(),
            clean_session: clean,
            keepalive_s: ka,
            will,
        },
        now,
    )
}

fn presence_will(id: &str) -> Option<Will> {
    Some(Will::new(
        format!("tether/agent/{id}/presence"),
        &b"offline 00000001 lost"[..],
        QoS::AtLeastOnce,
        true,
    ))
}

fn drain(b: &mut Broker) -> Vec<Output> {
    std::iter::from_fn(|| b.poll_output()).collect()
}

/// The publishes sent to `conn` among `outs`.
fn publishes(outs: &[Output], conn: ConnId) -> Vec<Publish> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(c, Packet::Publish(p)) if *c == conn => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn closed(outs: &[Output], conn: ConnId) -> bool {
    outs.contains(&Output::Close(conn))
}

fn msg(topic: &str, payload: &[u8], qos: QoS, retain: bool, pkid: u16) -> Publish {
    let mut p = Publish::new(topic, payload, qos, retain);
    p.pkid = pkid;
    p
}

#[test]
fn routes_by_wildcard_filters_once_per_client() {
    let mut b = broker(BrokerConfig::rumqttd());
    let master = connect(&mut b, "master", false, 10, None, ms(0));
    let agent = connect(&mut b, "pi-1", false, 10, None, ms(0));
    b.subscribe(master, "tether/agent/+/event", QoS::AtLeastOnce, ms(0));
    b.subscribe(master, "tether/#", QoS::AtMostOnce, ms(0));
    drain(&mut b);
    b.publish(
        agent,
        msg("tether/agent/pi-1/event", b"e1", QoS::AtLeastOnce, false, 1),
        ms(1),
    );
    b.publish(
        agent,
        msg("tether/master/heartbeat", b"hb", QoS::AtMostOnce, false, 0),
        ms(1),
    );
    b.publish(
        agent,
        msg("other/x", b"no", QoS::AtMostOnce, false, 0),
        ms(1),
    );
    let outs = drain(&mut b);
    let got = publishes(&outs, master);
    assert_eq!(got.len(), 2, "{outs:?}");
    // Two matching subscriptions, one delivery, at the higher QoS.
    assert_eq!(&*got[0].topic, "tether/agent/pi-1/event");
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(&*got[1].topic, "tether/master/heartbeat");
    assert!(outs.contains(&Output::Send(agent, Packet::PubAck { pkid: 1 })));
}

#[test]
fn retained_delivered_on_subscribe_and_cleared_by_empty_payload() {
    let mut b = broker(BrokerConfig::rumqttd());
    let a = connect(&mut b, "pi-1", false, 10, None, ms(0));
    b.publish(
        a,
        msg(
            "tether/agent/pi-1/presence",
            b"online 00000001",
            QoS::AtLeastOnce,
            true,
            1,
        ),
        ms(0),
    );
    b.publish(
        a,
        msg(
            "tether/agent/pi-2/presence",
            b"online 00000002",
            QoS::AtLeastOnce,
            true,
            2,
        ),
        ms(0),
    );
    let m = connect(&mut b, "master", false, 10, None, ms(1));
    drain(&mut b);
    b.subscribe(m, "tether/agent/+/presence", QoS::AtLeastOnce, ms(2));
    let outs = drain(&mut b);
    assert!(
        matches!(outs[0], Output::Send(_, Packet::SubAck { ref granted, .. }) if granted == &[Some(QoS::AtLeastOnce)])
    );
    let got = publishes(&outs, m);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|p| p.retain),
        "retained copies carry the flag: {got:?}"
    );
    assert_eq!(&*got[0].payload, b"online 00000001");
    // Live traffic is not flagged retain, even when it was published retained.
    b.publish(
        a,
        msg(
            "tether/agent/pi-1/presence",
            b"online 00000003",
            QoS::AtLeastOnce,
            true,
            3,
        ),
        ms(3),
    );
    let live = publishes(&drain(&mut b), m);
    assert_eq!(live.len(), 1);
    assert!(!live[0].retain);
    // Empty payload clears.
    b.publish(
        a,
        msg("tether/agent/pi-1/presence", b"", QoS::AtLeastOnce, true, 4),
        ms(4),
    );
    assert!(b.retained("tether/agent/pi-1/presence").is_none());
    assert_eq!(b.retained_count(), 1);
}

#[test]
fn qos0_upgraded_by_rumqttd_not_by_mosquitto() {
    for (config, expected) in [
        (BrokerConfig::rumqttd(), QoS::AtLeastOnce),
        (BrokerConfig::mosquitto(), QoS::AtMostOnce),
    ] {
        let mut b = broker(config);
        let s = connect(&mut b, "s", false, 10, None, ms(0));
        b.subscribe(s, "t", QoS::AtLeastOnce, ms(0));
        let p = connect(&mut b, "p", false, 10, None, ms(0));
        drain(&mut b);
        b.publish(p, msg("t", b"x", QoS::AtMostOnce, false, 0), ms(1));
        let got = publishes(&drain(&mut b), s);
        assert_eq!(got[0].qos, expected);
    }
}

fn watcher(b: &mut Broker) -> ConnId {
    let w = connect(b, "watcher", false, 60, None, ms(0));
    b.subscribe(w, "tether/agent/+/presence", QoS::AtLeastOnce, ms(0));
    drain(b);
    w
}

#[test]
fn will_published_at_once_when_connection_is_lost() {
    let mut b = broker(BrokerConfig::rumqttd());
    let w = watcher(&mut b);
    let a = connect(&mut b, "pi-1", false, 2, presence_will("pi-1"), ms(0));
    drain(&mut b);
    b.connection_lost(a, ms(100));
    let outs = drain(&mut b);
    let got = publishes(&outs, w);
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].payload, b"offline 00000001 lost");
    assert!(!closed(&outs, a), "the transport already knows it is gone");
    assert_eq!(
        b.retained("tether/agent/pi-1/presence")
            .map(|p| &*p.payload),
        Some(&b"offline 00000001 lost"[..])
    );
    assert!(!b.is_connected("pi-1"));
    assert!(
        b.session("pi-1").is_some(),
        "clean_session=false keeps the session"
    );
}

#[test]
fn will_after_one_and_a_half_keepalive_of_silence() {
    let mut b = broker(BrokerConfig::rumqttd());
    let w = watcher(&mut b);
    let a = connect(&mut b, "pi-1", false, 2, presence_will("pi-1"), ms(0));
    b.ping(a, ms(1_000));
    drain(&mut b);
    assert_eq!(b.poll_timeout(), Some(ms(4_000)));
    b.handle_timeout(ms(3_999));
    assert!(publishes(&drain(&mut b), w).is_empty());
    b.handle_timeout(ms(4_000));
    let outs = drain(&mut b);
    assert_eq!(publishes(&outs, w).len(), 1);
    assert!(closed(&outs, a));
    assert_eq!(b.stats().keepalive_timeouts, 1);
}

#[test]
fn mosquitto_like_sweep_publishes_wills_late() {
    let mut b = broker(BrokerConfig::mosquitto());
    let w = watcher(&mut b);
    let a = connect(&mut b, "pi-1", false, 2, presence_will("pi-1"), ms(0));
    b.ping(a, ms(3_000));
    drain(&mut b);
    // Silent since 3 s: expired at 6 s, noticed by the sweep at 10 s.
    assert_eq!(b.poll_timeout(), Some(ms(10_000)));
    b.handle_timeout(ms(9_999));
    assert!(publishes(&drain(&mut b), w).is_empty());
    b.handle_timeout(ms(10_000));
    assert_eq!(publishes(&drain(&mut b), w).len(), 1);
}

#[test]
fn no_will_after_clean_disconnect() {
    let mut b = broker(BrokerConfig::rumqttd());
    let w = watcher(&mut b);
    let a = connect(&mut b, "pi-1", false, 2, presence_will("pi-1"), ms(0));
    drain(&mut b);
    b.disconnect(a, ms(10));
    let outs = drain(&mut b);
    assert!(publishes(&outs, w).is_empty());
    assert!(closed(&outs, a));
    b.connection_lost(a, ms(11));
    b.handle_timeout(ms(60_000));
    assert!(publishes(&drain(&mut b), w).is_empty());
    assert_eq!(b.stats().wills_published, 0);
}

#[test]
fn keepalive_zero_and_empty_id_refused() {
    let mut b = broker(BrokerConfig::rumqttd());
    let a = connect(&mut b, "pi-1", false, 0, None, ms(0));
    let outs = drain(&mut b);
    assert_eq!(outs, vec![Output::Close(a)], "no CONNACK at all");
    let e = connect(&mut b, "", false, 5, None, ms(0));
    let outs = drain(&mut b);
    assert_eq!(
        outs,
        vec![
            Output::Send(
                e,
                Packet::ConnAck {
                    session_present: false,
                    code: ConnectCode::IdentifierRejected
                }
            ),
            Output::Close(e)
        ]
    );
    assert_eq!(b.stats().refused, 2);
    assert_eq!(b.connection_count(), 0);
}

#[test]
fn protocol_errors_close_the_connection_and_fire_the_will() {
    let mut b = broker(BrokerConfig::rumqttd());
    let w = watcher(&mut b);
    let early = b.accept(ms(0));
    b.ping(early, ms(0));
    assert_eq!(drain(&mut b), vec![Output::Close(early)]);
    let a = connect(&mut b, "pi-1", false, 5, presence_will("pi-1"), ms(0));
    b.subscribe(a, "a/#/b", QoS::AtLeastOnce, ms(0));
    let outs = drain(&mut b);
    assert!(outs.contains(&Output::Send(
        a,
        Packet::SubAck {
            pkid: 1,
            granted: vec![None]
        }
    )));
    b.publish(a, msg("a/+", b"x", QoS::AtMostOnce, false, 0), ms(1));
    let outs = drain(&mut b);
    assert!(closed(&outs, a));
    assert_eq!(publishes(&outs, w).len(), 1, "the will");
    assert_eq!(b.stats().protocol_errors, 2);
}

#[test]
fn qos1_redelivered_with_dup_after_reconnect() {
    let mut b = broker(BrokerConfig::rumqttd());
    let s = connect(&mut b, "pi-1", false, 5, None, ms(0));
    b.subscribe(s, "tether/agent/pi-1/cmd", QoS::AtLeastOnce, ms(0));
    let m = connect(&mut b, "master", false, 5, None, ms(0));
    drain(&mut b);
    b.publish(
        m,
        msg(
            "tether/agent/pi-1/cmd",
            b"start 1",
            QoS::AtLeastOnce,
            false,
            1,
        ),
        ms(1),
    );
    let first = publishes(&drain(&mut b), s);
    assert_eq!(first.len(), 1);
    assert!(!first[0].dup);
    // The PUBACK never made it: the connection died.
    b.connection_lost(s, ms(2));
    assert_eq!(b.session("pi-1").map(|s| s.inflight), Some(1));
    let s2 = connect(&mut b, "pi-1", false, 5, None, ms(3));
    let outs = drain(&mut b);
    assert_eq!(
        outs[0],
        Output::Send(
            s2,
            Packet::ConnAck {
                session_present: true,
                code: ConnectCode::Accepted
            }
        )
    );
    let again = publishes(&outs, s2);
    assert_eq!(again.len(), 1);
    assert!(again[0].dup);
    assert_eq!(again[0].pkid, first[0].pkid);
    assert_eq!(again[0].payload, first[0].payload);
    b.puback(s2, again[0].pkid, ms(4));
    assert_eq!(b.session("pi-1").map(|s| s.inflight), Some(0));
    assert_eq!(b.stats().redelivered, 1);
}

#[test]
fn retry_interval_and_spurious_dups_make_duplicates_on_a_live_connection() {
    let mut b = broker(BrokerConfig {
        spurious_dup: 1.0,
        ..BrokerConfig::duplicating()
    });
    let s = connect(&mut b, "s", false, 60, None, ms(0));
    b.subscribe(s, "t", QoS::AtLeastOnce, ms(0));
    drain(&mut b);
    b.publish(s, msg("t", b"x", QoS::AtLeastOnce, false, 1), ms(0));
    let got = publishes(&drain(&mut b), s);
    assert_eq!(got.iter().map(|p| p.dup).collect::<Vec<_>>(), [false, true]);
    assert_eq!(b.poll_timeout(), Some(ms(2_000)));
    b.handle_timeout(ms(2_000));
    let retried = publishes(&drain(&mut b), s);
    assert_eq!(retried.len(), 1);
    assert!(retried[0].dup);
    b.puback(s, retried[0].pkid, ms(2_001));
    b.handle_timeout(ms(10_000));
    assert!(publishes(&drain(&mut b), s).is_empty());
}

#[test]
fn offline_queue_delivers_on_reconnect_and_drops_oldest_beyond_bound() {
    let mut b = broker(BrokerConfig {
        max_queued: 3,
        ..BrokerConfig::rumqttd()
    });
    let s = connect(&mut b, "pi-1", false, 5, None, ms(0));
    b.subscribe(s, "cmd", QoS::AtLeastOnce, ms(0));
    b.disconnect(s, ms(1));
    let m = connect(&mut b, "master", false, 5, None, ms(1));
    drain(&mut b);
    for i in 0..5u8 {
        b.publish(
            m,
            msg("cmd", &[i], QoS::AtLeastOnce, false, u16::from(i) + 1),
            ms(2),
        );
    }
    // QoS 0 for an offline client is not kept (rumqttd upgrades to the subscription's QoS 1,
    // so use the mosquitto behaviour to check it separately below).
    assert_eq!(b.session("pi-1").map(|s| s.queued), Some(3));
    assert_eq!(b.stats().queue_dropped, 2);
    let s2 = connect(&mut b, "pi-1", false, 5, None, ms(3));
    let got = publishes(&drain(&mut b), s2);
    assert_eq!(
        got.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        [2, 3, 4]
    );

    let mut b = broker(BrokerConfig::mosquitto());
    let s = connect(&mut b, "pi-1", false, 5, None, ms(0));
    b.subscribe(s, "cmd", QoS::AtLeastOnce, ms(0));
    b.connection_lost(s, ms(1));
    let m = connect(&mut b, "master", false, 5, None, ms(1));
    b.publish(m, msg("cmd", b"q0", QoS::AtMostOnce, false, 0), ms(2));
    assert_eq!(b.session("pi-1").map(|s| s.queued), Some(0));
}

#[test]
fn inflight_window_holds_the_rest_until_acked() {
    let mut b = broker(BrokerConfig {
        max_inflight: 2,
        ..BrokerConfig::rumqttd()
    });
    let s = connect(&mut b, "s", false, 60, None, ms(0));
    b.subscribe(s, "t", QoS::AtLeastOnce, ms(0));
    drain(&mut b);
    for i in 0..4u8 {
        b.publish(
            s,
            msg("t", &[i], QoS::AtLeastOnce, false, u16::from(i) + 1),
            ms(0),
        );
    }
    let first = publishes(&drain(&mut b), s);
    assert_eq!(
        first.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        [0, 1]
    );
    b.puback(s, first[0].pkid, ms(1));
    let next = publishes(&drain(&mut b), s);
    assert_eq!(next.iter().map(|p| p.payload[0]).collect::<Vec<_>>(), [2]);
}

#[test]
fn clean_session_is_forgotten_on_disconnect() {
    let mut b = broker(BrokerConfig::rumqttd());
    let s = connect(&mut b, "tool", true, 5, None, ms(0));
    b.subscribe(s, "t", QoS::AtLeastOnce, ms(0));
    b.connection_lost(s, ms(1));
    assert!(b.session("tool").is_none());
    let p = connect(&mut b, "p", false, 5, None, ms(1));
    b.publish(p, msg("t", b"x", QoS::AtLeastOnce, false, 1), ms(2));
    let s2 = connect(&mut b, "tool", false, 5, None, ms(3));
    let outs = drain(&mut b);
    assert!(outs.contains(&Output::Send(
        s2,
        Packet::ConnAck {
            session_present: false,
            code: ConnectCode::Accepted
        }
    )));
    assert!(publishes(&outs, s2).is_empty());
}

#[test]
fn takeover_by_persistent_session_keeps_quiet() {
    let mut b = broker(BrokerConfig::rumqttd());
    let w = watcher(&mut b);
    let old = connect(&mut b, "pi-1", false, 5, presence_will("pi-1"), ms(0));
    drain(&mut b);
    let new = connect(&mut b, "pi-1", false, 5, presence_will("pi-1"), ms(10));
    let outs = drain(&mut b);
    assert!(closed(&outs, old));
    assert!(publishes(&outs, w).is_empty(), "{outs:?}");
    assert!(outs.contains(&Output::Send(
        new,
        Packet::ConnAck {
            session_present: true,
            code: ConnectCode::Accepted
        }
    )));
    assert_eq!(b.stats().takeovers, 1);
    // Packets still arriving on the old connection are ignored.
    b.disconnect(old, ms(11));
    assert!(b.is_connected("pi-1"));
    // The new connection's will is intact.
    b.connection_lost(new, ms(12));
    assert_eq!(publishes(&drain(&mut b), w).len(), 1);
}

#[test]
fn takeover_by_clean_session_publishes_the_old_will() {
    let mut b = broker(BrokerConfig::rumqttd());
    let w = watcher(&mut b);
    let old = connect(&mut b, "pi-1", false, 5, presence_will("pi-1"), ms(0));
    drain(&mut b);
    let new = connect(&mut b, "pi-1", true, 5, None, ms(10));
    let outs = drain(&mut b);
    assert!(closed(&outs, old));
    assert_eq!(publishes(&outs, w).len(), 1);
    assert!(outs.contains(&Output::Send(
        new,
        Packet::ConnAck {
            session_present: false,
            code: ConnectCode::Accepted
        }
    )));
}

#[test]
fn rumqttd_will_mixup_fires_the_new_will_and_leaves_none() {
    let mut b = broker(BrokerConfig {
        will_mixup: Some(Duration::from_millis(50)),
        ..BrokerConfig::rumqttd()
    });
    let w = watcher(&mut b);
    let _old = connect(&mut b, "pi-1", true, 5, None, ms(0));
    drain(&mut b);
    let new = connect(&mut b, "pi-1", true, 5, presence_will("pi-1"), ms(10));
    b.publish(
        new,
        msg(
            "tether/agent/pi-1/presence",
            b"online 00000001",
            QoS::AtLeastOnce,
            true,
            1,
        ),
        ms(11),
    );
    drain(&mut b);
    b.handle_timeout(ms(60));
    assert_eq!(publishes(&drain(&mut b), w).len(), 1);
    // Offline retained while the client is connected: what agents must repair.
    assert!(b.is_connected("pi-1"));
    assert_eq!(
        b.retained("tether/agent/pi-1/presence")
            .map(|p| &*p.payload),
        Some(&b"offline 00000001 lost"[..])
    );
    b.connection_lost(new, ms(100));
    assert!(publishes(&drain(&mut b), w).is_empty(), "no will left");
}

#[test]
fn restart_loses_sessions_queues_and_retained() {
    let mut b = broker(BrokerConfig::rumqttd());
    let s = connect(&mut b, "pi-1", false, 5, presence_will("pi-1"), ms(0));
    b.subscribe(s, "cmd", QoS::AtLeastOnce, ms(0));
    b.publish(
        s,
        msg(
            "tether/agent/pi-1/presence",
            b"online 00000001",
            QoS::AtLeastOnce,
            true,
            1,
        ),
        ms(0),
    );
    let m = connect(&mut b, "master", false, 5, None, ms(0));
    b.connection_lost(s, ms(1));
    b.publish(m, msg("cmd", b"queued", QoS::AtLeastOnce, false, 1), ms(2));
    drain(&mut b);
    assert_eq!(b.session("pi-1").map(|s| s.queued), Some(1));
    b.restart(ms(3));
    let outs = drain(&mut b);
    assert_eq!(outs, vec![Output::Close(m)]);
    assert_eq!(b.retained_count(), 0);
    assert!(b.session("pi-1").is_none() && b.session("master").is_none());
    assert_eq!(b.connection_count(), 0);
    assert_eq!(b.poll_timeout(), None);
    let s2 = connect(&mut b, "pi-1", false, 5, None, ms(4));
    let outs = drain(&mut b);
    assert_eq!(
        outs,
        vec![Output::Send(
            s2,
            Packet::ConnAck {
                session_present: false,
                code: ConnectCode::Accepted
            }
        )]
    );
}
