//! Thousands of random fault schedules: the model never panics nor livelocks, heals once the
//! faults stop, never invents messages, and a seed always replays the same run.
//!
//! `TETHER_NET_SEEDS=n` runs n seeds (default 2000; CI sets `TETHER_SIM_SEEDS` for the agent simulation, not this model test); `TETHER_SIM_SEED=s` replays one.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tether_core::{Duration, Instant};
use tether_tests::sim::{
    BrokerConfig, ClientConfig, ClientEvent, ClientKey, Clock, Fault, LinkConfig, Net, QoS, Rng,
    Timeline, Will,
};

#[derive(Debug, Clone)]
enum Step {
    Fault(ClientKey, Fault),
    Kill(ClientKey),
    Disconnect(ClientKey),
    Start(ClientKey),
    RestartBroker,
    Command(ClientKey),
    Event(ClientKey),
    Heartbeat(ClientKey),
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    digest: u64,
    delivered: u64,
    wills: u64,
}

fn cmd_topic(i: usize) -> String {
    format!("tether/agent/pi-{i}/cmd")
}

/// One run: random broker flavour, a master and three agents on random links, random steps
/// for `minutes`, then every fault lifted and probes sent. `Err` explains a broken invariant.
fn scenario(seed: u64, minutes: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let broker = match rng.below(3) {
        0 => BrokerConfig::rumqttd(),
        1 => BrokerConfig::mosquitto(),
        _ => BrokerConfig::duplicating(),
    };
    let mut net = Net::new(broker, rng.next_u64());
    let link = |rng: &mut Rng| LinkConfig {
        latency: rng.range_ms(0, 50),
        jitter: rng.range_ms(0, 20),
        ..LinkConfig::default()
    };
    let mut master = ClientConfig::new("master");
    master.subscriptions = vec![
        ("tether/agent/+/presence".into(), QoS::AtLeastOnce),
        ("tether/agent/+/event".into(), QoS::AtLeastOnce),
        ("tether/agent/+/heartbeat".into(), QoS::AtMostOnce),
    ];
    let master = net.add_client(master, link(&mut rng));
    let mut agents = Vec::new();
    for i in 0..3 {
        let mut c = ClientConfig::new(format!("pi-{i}"));
        c.keepalive_s = 1 + rng.below(10) as u16;
        c.will = Some(Will::new(
            format!("tether/agent/pi-{i}/presence"),
            &b"offline"[..],
            QoS::AtLeastOnce,
            true,
        ));
        c.subscriptions = vec![(cmd_topic(i), QoS::AtLeastOnce)];
        agents.push(net.add_client(c, link(&mut rng)));
    }
    let everyone: Vec<ClientKey> = net.keys().collect();
    for &k in &everyone {
        net.start(k, Instant::from_secs(0));
    }

    let end = Instant::from_secs(minutes * 60);
    let mut plan = Timeline::new();
    let mut at = Instant::from_secs(0);
    loop {
        at = at.saturating_add(rng.range_ms(100, 20_000));
        if at >= end {
            break;
        }
        let who = *rng.pick(&everyone).unwrap_or(&master);
        let agent = *rng.pick(&agents).unwrap_or(&master);
        let step = match rng.below(20) {
            0..=5 => Step::Fault(who, Fault::random(&mut rng)),
            6 => {
                plan.push(at.saturating_add(rng.range_ms(0, 30_000)), Step::Start(who));
                Step::Kill(who)
            }
            7 => {
                plan.push(at.saturating_add(rng.range_ms(0, 30_000)), Step::Start(who));
                Step::Disconnect(who)
            }
            8 if rng.chance(0.3) => Step::RestartBroker,
            9..=12 => Step::Command(agent),
            13..=16 => Step::Event(agent),
            _ => Step::Heartbeat(agent),
        };
        plan.push(at, step);
    }

    let mut clock = Clock::new(Instant::from_secs(0));
    let mut sent_cmds: Vec<BTreeSet<Vec<u8>>> = vec![BTreeSet::new(); agents.len()];
    let mut received = 0u64;
    let mut n = 0u32;
    let mut check = |net: &mut Net, sent: &[BTreeSet<Vec<u8>>]| -> Result<(), String> {
        while let Some((k, event)) = net.poll_event() {
            if let ClientEvent::Message(p) = event {
                received += 1;
                if let Some(i) = agents.iter().position(|&a| a == k) {
                    if *p.topic != *cmd_topic(i) || !sent[i].contains(&p.payload[..]) {
                        return Err(format!("agent {i} got a message nobody sent: {p}"));
                    }
                }
            }
        }
        Ok(())
    };
    loop {
        let wake = [net.poll_timeout(), plan.poll_timeout()];
        let Some(now) = clock.advance(wake, end).map_err(|e| e.to_string())? else {
            break;
        };
        while let Some((_, step)) = plan.pop_due(now) {
            n += 1;
            match step {
                Step::Fault(k, f) => net.set_fault(k, f, now),
                Step::Kill(k) => net.kill(k, now),
                Step::Disconnect(k) => net.disconnect(k, now),
                Step::Start(k) => net.start(k, now),
                Step::RestartBroker => net.restart_broker(now),
                Step::Command(a) => {
                    let i = a.index() - 1;
                    let payload = format!("cmd {n}").into_bytes();
                    sent_cmds[i].insert(payload.clone());
                    let _ =
                        net.publish(master, cmd_topic(i), payload, QoS::AtLeastOnce, false, now);
                }
                Step::Event(a) => {
                    let topic = format!("tether/agent/pi-{}/event", a.index() - 1);
                    let _ = net.publish(
                        a,
                        topic,
                        format!("ev {n}").into_bytes(),
                        QoS::AtLeastOnce,
                        false,
                        now,
                    );
                }
                Step::Heartbeat(a) => {
                    let topic = format!("tether/agent/pi-{}/heartbeat", a.index() - 1);
                    let _ = net.publish(a, topic, &b"hb"[..], QoS::AtMostOnce, false, now);
                }
            }
        }
        net.step(now);
        check(&mut net, &sent_cmds)?;
    }

    // Heal: every path up, every client started; give stale retransmissions time to land.
    net.set_fault_all(Fault::Up, end);
    for &k in &everyone {
        net.start(k, end);
    }
    // Longer than the RTO cap (120 s) plus a connect timeout and a few keepalives.
    let healed = end.saturating_add(Duration::from_secs(180));
    while let Some(now) = clock
        .advance([net.poll_timeout()], healed)
        .map_err(|e| e.to_string())?
    {
        net.step(now);
        check(&mut net, &sent_cmds)?;
    }
    for &k in &everyone {
        let id = net.client(k).config().client_id.clone();
        if !net.client(k).is_connected() || !net.broker().is_connected(&id) {
            return Err(format!(
                "{id} not connected after healing: {:?}",
                net.client(k).state()
            ));
        }
    }

    // Probes: one command to each agent, one event from each, all through.
    let now = clock.now();
    for (i, &a) in agents.iter().enumerate() {
        sent_cmds[i].insert(b"probe".to_vec());
        net.publish(
            master,
            cmd_topic(i),
            &b"probe"[..],
            QoS::AtLeastOnce,
            false,
            now,
        )
        .map_err(|e| e.to_string())?;
        let topic = format!("tether/agent/pi-{i}/event");
        net.publish(a, topic, &b"probe"[..], QoS::AtLeastOnce, false, now)
            .map_err(|e| e.to_string())?;
    }
    let mut probes = BTreeSet::new();
    let done = now.saturating_add(Duration::from_secs(30));
    while let Some(now) = clock
        .advance([net.poll_timeout()], done)
        .map_err(|e| e.to_string())?
    {
        net.step(now);
        while let Some((k, event)) = net.poll_event() {
            if let ClientEvent::Message(p) = event {
                received += 1;
                if &*p.payload == b"probe" {
                    probes.insert((k, p.topic.to_string()));
                }
            }
        }
    }
    if probes.len() != 2 * agents.len() {
        return Err(format!("probes lost after healing: got {probes:?}"));
    }
    Ok(Outcome {
        digest: net.trace().digest(),
        delivered: received,
        wills: net.broker().stats().wills_published,
    })
}

fn run(seed: u64, minutes: u64) -> Result<Outcome, String> {
    match catch_unwind(AssertUnwindSafe(|| scenario(seed, minutes))) {
        Ok(result) => result.map_err(|e| format!("seed {seed}: {e}")),
        Err(_) => Err(format!(
            "seed {seed} panicked (replay with TETHER_SIM_SEED={seed})"
        )),
    }
}

#[test]
fn random_schedules_never_panic_and_always_heal() {
    let seeds: Vec<u64> = match std::env::var("TETHER_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("TETHER_SIM_SEED is a u64")],
        Err(_) => {
            let n = std::env::var("TETHER_NET_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2_000u64);
            (0..n).collect()
        }
    };
    let mut wills = 0;
    let mut delivered = 0;
    for seed in seeds {
        let outcome = run(seed, 6).unwrap_or_else(|e| panic!("{e}"));
        wills += outcome.wills;
        delivered += outcome.delivered;
    }
    // The schedules really do break things.
    assert!(wills > 0 && delivered > 0);
}

#[test]
fn same_seed_same_trace() {
    for seed in [1, 2, 99, 12_345] {
        let a = run(seed, 20).unwrap();
        let b = run(seed, 20).unwrap();
        assert_eq!(a, b, "seed {seed}");
    }
    assert_ne!(run(1, 20).unwrap().digest, run(2, 20).unwrap().digest);
}
