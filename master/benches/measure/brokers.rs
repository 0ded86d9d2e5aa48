//! 1. QoS 1, 1 KiB messages through the embedded broker and through mosquitto: rate with a
//!    bounded window, latency one at a time and under load, and what an unbounded flood loses.

use super::*;

/// Messages per run: the full counts, or a few for the smoke.
struct Counts {
    latency: u64,
    rate: u64,
    flood: u64,
}

impl Counts {
    fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                latency: 50,
                rate: 500,
                flood: 500,
            }
        } else {
            Self {
                latency: 2_000,
                rate: 20_000,
                flood: 20_000,
            }
        }
    }
}

/// Figures for one broker.
struct BrokerFigures {
    rate: f64,
    windowed_lost: u64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    over_40ms: usize,
    /// Which samples (message numbers) took longer than 40 ms.
    over_40ms_at: Vec<usize>,
    load_p50: Duration,
    load_p99: Duration,
    flood_sent: u64,
    flood_received: u64,
}

pub(super) async fn brokers(dir: &Path, smoke: bool, table: &mut Vec<(String, String, String)>) {
    let n = Counts::new(smoke);
    let master = Master::start(dir, "broker-master");
    let mqtt: SocketAddr = master.mqtt.parse().expect("mqtt addr");
    let rumqttd = broker_figures(mqtt, "embedded rumqttd", &n).await;
    let Some(mosq) = start_mosquitto(dir) else {
        return;
    };
    let mosquitto = broker_figures(mosq.addr, "mosquitto", &n).await;
    drop(mosq.proc);
    drop(master);
    let rows = [
        (
            "QoS 1 1 KiB msgs/s (window 64, rumqttd)",
            format!("{:.0}/s", rumqttd.rate),
            format!(
                "mosquitto {:.0}/s, ratio {:.2}x (goal >= 3x)",
                mosquitto.rate,
                rumqttd.rate / mosquitto.rate
            ),
        ),
        (
            "  lost in that run (rumqttd / mosquitto)",
            format!("{} / {}", rumqttd.windowed_lost, mosquitto.windowed_lost),
            String::new(),
        ),
        (
            "latency one at a time p50 / p99 (rumqttd)",
            format!("{} / {}", ms(rumqttd.p50), ms(rumqttd.p99)),
            format!(
                "mosquitto {} / {} (goal p99 <= 1 ms)",
                ms(mosquitto.p50),
                ms(mosquitto.p99)
            ),
        ),
        (
            "latency max, samples > 40 ms [which] (rumqttd)",
            format!(
                "{}, {} {:?}",
                ms(rumqttd.max),
                rumqttd.over_40ms,
                rumqttd.over_40ms_at
            ),
            format!(
                "mosquitto {}, {} {:?} (goal: no 40 ms stalls)",
                ms(mosquitto.max),
                mosquitto.over_40ms,
                mosquitto.over_40ms_at
            ),
        ),
        (
            "latency under load p50 / p99 (rumqttd)",
            format!("{} / {}", ms(rumqttd.load_p50), ms(rumqttd.load_p99)),
            format!(
                "mosquitto {} / {}",
                ms(mosquitto.load_p50),
                ms(mosquitto.load_p99)
            ),
        ),
        (
            "unbounded flood: received / sent (rumqttd)",
            format!("{} / {}", rumqttd.flood_received, rumqttd.flood_sent),
            format!(
                "mosquitto {} / {}",
                mosquitto.flood_received, mosquitto.flood_sent
            ),
        ),
    ];
    for (a, b, c) in rows {
        table.push((a.into(), b, c));
    }
}

/// A connected client: its handle and what its event loop receives (seq, send time).
struct Client {
    client: AsyncClient,
    received: mpsc::UnboundedReceiver<(u64, u64)>,
}

async fn connect(addr: SocketAddr, id: &str, subscribe: Option<&str>) -> Client {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(64 << 10, 64 << 10)
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let want_suback = subscribe.is_some();
    if let Some(topic) = subscribe {
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) if !want_suback => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.payload.len() >= 16 => {
                    let seq = u64::from_be_bytes(p.payload[..8].try_into().expect("8 bytes"));
                    let sent = u64::from_be_bytes(p.payload[8..16].try_into().expect("8 bytes"));
                    if tx.send((seq, sent)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // The broker went away at the end of a section.
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("connected in time")
        .expect("event loop alive");
    Client {
        client,
        received: rx,
    }
}

fn payload(seq: u64, base: Instant) -> Vec<u8> {
    let mut p = vec![0x5a; PAYLOAD];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
    p
}

async fn broker_figures(addr: SocketAddr, name: &str, n: &Counts) -> BrokerFigures {
    eprintln!("measuring {name} at {addr}");
    let base = Instant::now();
    let since = move |sent_ns: u64| base.elapsed().saturating_sub(Duration::from_nanos(sent_ns));

    // Latency, one message at a time.
    let mut sub = connect(addr, "bench-lat-sub", Some("bench/lat")).await;
    let publ = connect(addr, "bench-lat-pub", None).await;
    let mut lat = Vec::new();
    for seq in 0..n.latency {
        publ.client
            .publish("bench/lat", QoS::AtLeastOnce, false, payload(seq, base))
            .await
            .expect("publish");
        loop {
            let (got, sent) = tokio::time::timeout(WAIT, sub.received.recv())
                .await
                .expect("delivered in time")
                .expect("subscriber alive");
            if got == seq {
                lat.push(since(sent));
                break;
            }
        }
    }
    let over_40ms_at: Vec<usize> = lat
        .iter()
        .enumerate()
        .filter(|(_, d)| **d > Duration::from_millis(40))
        .map(|(i, _)| i)
        .collect();
    lat.sort();

    // Throughput with at most WINDOW messages published and not yet delivered.
    const WINDOW: usize = 64;
    let rate_n = n.rate;
    let mut sub = connect(addr, "bench-rate-sub", Some("bench/rate")).await;
    let publ = connect(addr, "bench-rate-pub", None).await;
    let window = Arc::new(Semaphore::new(WINDOW));
    let received = Arc::new(AtomicU64::new(0));
    let last_seq = Arc::new(AtomicU64::new(0));
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel();
    let consumer = {
        let window = window.clone();
        let received = received.clone();
        let last_seq = last_seq.clone();
        tokio::spawn(async move {
            while let Ok(Some((seq, sent))) =
                tokio::time::timeout(Duration::from_secs(2), sub.received.recv()).await
            {
                received.fetch_add(1, Ordering::Relaxed);
                last_seq.store(seq, Ordering::Relaxed);
                let _ = lat_tx.send(since(sent));
                window.add_permits(1);
                if seq == rate_n - 1 {
                    break;
                }
            }
        })
    };
    let start = Instant::now();
    for seq in 0..rate_n {
        // A lost message never returns its permit: wait at most briefly and go on.
        if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(500), window.acquire()).await
        {
            p.forget();
        }
        publ.client
            .publish("bench/rate", QoS::AtLeastOnce, false, payload(seq, base))
            .await
            .expect("publish");
    }
    let _ = consumer.await;
    let elapsed = start.elapsed();
    let got = received.load(Ordering::Relaxed);
    let mut load = Vec::new();
    while let Ok(d) = lat_rx.try_recv() {
        load.push(d);
    }
    load.sort();

    // An unbounded flood: the publisher does not wait for the subscriber.
    let flood = n.flood;
    let mut sub = connect(addr, "bench-flood-sub", Some("bench/flood")).await;
    let publ = connect(addr, "bench-flood-pub", None).await;
    for seq in 0..flood {
        publ.client
            .publish("bench/flood", QoS::AtLeastOnce, false, payload(seq, base))
            .await
            .expect("publish");
    }
    let mut flood_received = 0;
    while let Ok(Some((seq, _))) =
        tokio::time::timeout(Duration::from_secs(2), sub.received.recv()).await
    {
        flood_received += 1;
        if seq == flood - 1 {
            break;
        }
    }

    BrokerFigures {
        rate: got as f64 / elapsed.as_secs_f64(),
        windowed_lost: rate_n - got,
        p50: pct(&lat, 0.50),
        p99: pct(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
        over_40ms: over_40ms_at.len(),
        over_40ms_at,
        load_p50: pct(&load, 0.50),
        load_p99: pct(&load, 0.99),
        flood_sent: flood,
        flood_received,
    }
}
