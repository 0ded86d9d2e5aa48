//! Benchmark, not a timing assertion: when an agent's retained presence reads offline after
//! its cable is pulled (a network namespace's link down) and after its process is frozen
//! (SIGSTOP), on the embedded rumqttd and on mosquitto, as `mosquitto_sub` shows it; and how
//! soon after SIGCONT the master counts the agent available again. Each figure is printed next
//! to its same-run references: the agent's MQTT keepalive x 1.5 (when a broker that enforces
//! keepalive fires the will) and the master's own silence rule (2 periods + allowance).
//!
//! rumqttd (0.20) enforces keepalive only while nothing crosses the link at all, and the
//! master's heartbeats keep crossing it: a silent agent's session stays open and its will is
//! not published until the link returns. The master therefore writes its own verdict,
//! `offline <incarnation> lost` tagged with the agent's key, on the presence topic when its
//! silence rule marks the agent lost (`tether_master::core`).
//!
//! `TETHER_BENCH_PRESENCE=full` runs the case on both brokers: a 10 s heartbeat period
//! (a 20 s keepalive), a 40 s cut and a 65 s freeze. Unset, the smoke CI runs: a 1 s period,
//! 8 s of each, the embedded broker only. `scripts/bench-presence.sh` runs the full set.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_tests::cut::link::CutMethod;
use tether_tests::cut::observe::unix_ms;
use tether_tests::cut::timeline::Timeline;
use tether_tests::cut::world::{DELAY_ALLOWANCE, Layout, Run, World};
use tether_tests::harness::broker::BrokerKind;

/// The scenario's period, cut and freeze, and whether this is the smoke run.
struct Plan {
    period: Duration,
    cut: Duration,
    freeze: Duration,
    smoke: bool,
}

fn plan() -> Plan {
    match std::env::var("TETHER_BENCH_PRESENCE").as_deref() {
        Ok("full") => Plan {
            period: Duration::from_secs(10),
            cut: Duration::from_secs(40),
            freeze: Duration::from_secs(65),
            smoke: false,
        },
        Ok(other) if !other.is_empty() => {
            panic!("TETHER_BENCH_PRESENCE={other}: expected `full` or nothing")
        }
        _ => Plan {
            period: Duration::from_secs(1),
            cut: Duration::from_secs(8),
            freeze: Duration::from_secs(8),
            smoke: true,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttd() {
    bench(BrokerKind::Rumqttd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto() {
    if plan().smoke {
        eprintln!("SKIPPED: the smoke run measures the embedded broker only");
        return;
    }
    bench(BrokerKind::Mosquitto).await;
}

/// `mosquitto_sub` on one topic, every line it printed with when (Unix ms).
struct Watcher {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<(u64, String)>>>,
}

impl Watcher {
    fn start(broker: SocketAddr, topic: &str) -> Option<Self> {
        let child = Command::new("mosquitto_sub")
            .args([
                "-h",
                &broker.ip().to_string(),
                "-p",
                &broker.port().to_string(),
            ])
            .args(["-i", "presence-bench", "-t", topic])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var_os("TETHER_CI").is_none(),
                    "TETHER_CI is set but mosquitto_sub cannot run: {e}"
                );
                eprintln!("SKIPPED: mosquitto_sub: {e} (apt-get install mosquitto-clients)");
                return None;
            }
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((unix_ms(), line));
            }
        });
        Some(Self { child, lines })
    }

    /// When a line starting with `prefix` was first printed at or after `since`.
    fn first(&self, since: u64, prefix: &str) -> Option<u64> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .find(|(at, l)| *at >= since && l.starts_with(prefix))
            .map(|(at, _)| *at)
    }

    /// Through a silence of `length` that began at `since`: when the presence read offline
    /// (waited for at most the longer of the silence and `bound`), once the silence is over.
    async fn ride_out(&self, since: u64, length: Duration, bound: Duration) -> Option<u64> {
        let offline = self.wait(since, "offline", bound.max(length)).await;
        let elapsed = Duration::from_millis(unix_ms().saturating_sub(since));
        tokio::time::sleep(length.saturating_sub(elapsed)).await;
        offline
    }

    /// Waits (bounded) for such a line.
    async fn wait(&self, since: u64, prefix: &str, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(at) = self.first(since, prefix) {
                return Some(at);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// The timeline of a silence that began at `start`: when the master and the retained presence
/// said the agent was gone.
fn silenced(world: &World, title: &str, start: (&str, u64), offline: Option<u64>) -> Timeline {
    let mut tl = Timeline::new(title);
    tl.t0(start.0, start.1);
    let agent = &world.agents[0].id;
    tl.row(
        "master: agent unavailable",
        world.unavailable_seen(agent, start.1),
    );
    tl.row("retained presence offline (mosquitto_sub)", offline);
    tl
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bench(broker: BrokerKind) {
    let plan = plan();
    let run = Run {
        broker,
        method: CutMethod::Netns,
    };
    let mut layout = Layout::new("pb", run, 1);
    layout.master_period = plan.period;
    let Some(mut world) = World::start(run, layout).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let mut addr: SocketAddr = world.master().mqtt.parse().expect("mqtt=IP:PORT");
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let Some(watcher) = Watcher::start(addr, &format!("tether/agent/{agent}/presence")) else {
        return;
    };
    // The agent's keepalive is 2 periods, at least 5 s; a broker enforcing it waits 1.5 x.
    let keepalive = (plan.period * 2).max(Duration::from_secs(5));
    let will_due = keepalive * 3 / 2;
    let silence = plan.period * 2 + DELAY_ALLOWANCE;
    let bound = will_due + Duration::from_secs(10);
    let secs = |at: Option<u64>, from: u64| {
        at.map_or("never".to_owned(), |at| {
            format!("{:+.2}s", (at as f64 - from as f64) / 1e3)
        })
    };

    // A pulled cable.
    let cut = world.cut(0);
    let offline = watcher.ride_out(cut, plan.cut, bound).await;
    let restored = world.restore(0);
    let back = watcher
        .wait(restored, "online", Duration::from_secs(60))
        .await;
    world
        .wait_agent(&agent, "available after the cut", |a| {
            a["available"] == true
        })
        .await;
    let title = format!("presence after a {:?} cut ({run})", plan.cut);
    let mut tl = silenced(&world, &title, ("cable pulled", cut), offline);
    tl.row("cable plugged back", Some(restored));
    tl.row("retained presence online again", back);
    tl.print();

    // A frozen process.
    let frozen = unix_ms();
    world.agent_proc(0).signal(libc::SIGSTOP);
    let frozen_offline = watcher.ride_out(frozen, plan.freeze, bound).await;
    let resumed = unix_ms();
    world.agent_proc(0).signal(libc::SIGCONT);
    // Polled here (every 100 ms), not through the observer, whose round may lag the answer.
    let mut available = None;
    world
        .wait_agent(&agent, "available after the freeze", |a| {
            let yes = a["presence"] == "online" && a["available"] == true;
            if yes {
                available = Some(unix_ms());
            }
            yes
        })
        .await;
    let online_again = watcher
        .wait(resumed, "online", Duration::from_secs(30))
        .await;
    let title = format!("presence after a {:?} freeze ({run})", plan.freeze);
    let mut tl = silenced(&world, &title, ("SIGSTOP", frozen), frozen_offline);
    tl.row("SIGCONT", Some(resumed));
    tl.row("retained presence online again", online_again);
    tl.row("master: agent available again", available);
    tl.print();

    eprintln!(
        "bench presence ({run}, period {:?}): cut -> offline {}; freeze -> offline {}; \
         SIGCONT -> available {} (API polled every 100 ms) \
         (references: keepalive x 1.5 = {:.1}s, master silence rule = {:.1}s)",
        plan.period,
        secs(offline, cut),
        secs(frozen_offline, frozen),
        secs(available, resumed),
        will_due.as_secs_f64(),
        silence.as_secs_f64(),
    );
    assert!(
        offline.is_some(),
        "{run}: presence never read offline after the cut"
    );
    assert!(
        frozen_offline.is_some(),
        "{run}: presence never read offline during the freeze"
    );
    assert!(
        back.is_some() && online_again.is_some(),
        "{run}: never online again"
    );
}
