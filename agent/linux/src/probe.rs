//! Noticing that a broker's path came back while the agent waits out its back-off.
//!
//! After a long outage the back-off between full connection attempts is near its cap (30 s by
//! default), so without help results would reach the master up to that long after the network
//! returns. Netlink would only see this board's own links and routes, not a broker that went
//! away or a link cut further along, so the agent probes instead: while it waits, a plain TCP
//! connect to each broker, closed at once, every `reconnect_min` (jittered). A SYN that gets no
//! answer or an RST costs the broker's host nothing like a TLS handshake and an MQTT CONNECT.
//!
//! The decision ([`Reach`]) is edge-triggered so that a reachable broker that turns the agent
//! away (credentials, certificates, a proxy that accepts and drops) is not hammered: only a
//! probe that connects after a probe of the same broker failed cuts the wait short, and a
//! broker that answered once is not probed again until the next attempt. When the back-off
//! ends while every broker's last probe failed, the probes go on for up to one more back-off
//! instead of an attempt: a blind attempt would sit in SYN retransmissions (1 s, then 3 s
//! apart) for its 5 s connect timeout and could miss the path's return by up to 2 s. A TCP
//! probe sees as
//! far as the first host that accepts the connection: behind a TCP proxy or a load balancer
//! that accepts while its upstream is down, the back-off alone paces the attempts.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Broker;

/// How long one probe may take: above a Linux SYN's first retransmission (1 s), so a probe
/// in flight when the path returns still connects.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1_500);

/// What the last probe of a broker said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Not probed since the last attempt.
    Unknown,
    /// The last probe could not connect.
    Down,
    /// Connected since the last attempt: nothing more to learn until the next one.
    Up,
}

/// The probe decisions for a list of brokers, without I/O.
#[derive(Debug, Clone)]
pub struct Reach {
    seen: Vec<Seen>,
}

impl Reach {
    pub fn new(brokers: usize) -> Self {
        Self {
            seen: vec![Seen::Unknown; brokers],
        }
    }

    /// A new wait begins (an attempt just failed): brokers that answered are probed once
    /// more; a broker still down stays down, so its return during this wait is an edge.
    pub fn begin_wait(&mut self) {
        for s in &mut self.seen {
            if *s == Seen::Up {
                *s = Seen::Unknown;
            }
        }
    }

    /// Every broker's last probe failed: an attempt now would only time out.
    pub fn all_down(&self) -> bool {
        self.seen.iter().all(|s| *s == Seen::Down)
    }

    /// The brokers worth probing now.
    pub fn to_probe(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.seen.len()).filter(|&i| self.seen[i] != Seen::Up)
    }

    /// Records a probe of broker `i`; `true` when the agent should attempt it now (it
    /// connected after failing).
    pub fn probed(&mut self, i: usize, connected: bool) -> bool {
        let was = std::mem::replace(
            &mut self.seen[i],
            if connected { Seen::Up } else { Seen::Down },
        );
        connected && was == Seen::Down
    }
}

/// Waits `delay` (up to twice that while every broker is down), probing the brokers every
/// `period` (times `jitter()`, 0.5..1.5); returns the broker whose path came back, if one did.
pub async fn wait(
    reach: &mut Reach,
    brokers: &[Broker],
    delay: Duration,
    period: Duration,
    mut jitter: impl FnMut() -> f64,
) -> Option<usize> {
    let end = Instant::now() + delay;
    let hard_end = end + delay;
    reach.begin_wait();
    loop {
        let round = Instant::now();
        if round >= hard_end || (round >= end && !reach.all_down()) {
            return None;
        }
        let mut probes = JoinSet::new();
        for i in reach.to_probe() {
            let (host, port) = (brokers[i].host.clone(), brokers[i].port);
            probes.spawn(async move {
                let connect = TcpStream::connect((host.as_str(), port));
                let left = hard_end.saturating_duration_since(Instant::now());
                let timeout = PROBE_TIMEOUT.min(left);
                (
                    i,
                    matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_))),
                )
            });
        }
        while let Some(done) = probes.join_next().await {
            if let Ok((i, connected)) = done
                && reach.probed(i, connected)
            {
                // The probes still running are aborted when the set drops.
                return Some(i);
            }
        }
        let next = round + period.mul_f64(jitter());
        let next = if reach.all_down() {
            next.min(hard_end)
        } else {
            next.min(end)
        };
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_return_after_a_failure_cuts_the_wait() {
        let mut r = Reach::new(2);
        r.begin_wait();
        // Reachable from the start (a broker that refuses the agent): no early attempt, and
        // no more probes of it in this wait.
        assert!(!r.probed(0, true));
        assert_eq!(r.to_probe().collect::<Vec<_>>(), vec![1]);
        // Down, then back: attempt now.
        assert!(!r.probed(1, false));
        assert!(!r.all_down(), "broker 0 answered");
        assert!(!r.probed(1, false));
        assert!(r.probed(1, true));
        assert!(r.to_probe().next().is_none());
    }

    #[test]
    fn a_broker_still_down_at_the_next_wait_keeps_its_edge() {
        let mut r = Reach::new(1);
        r.begin_wait();
        assert!(!r.probed(0, false));
        assert!(r.all_down());
        // The attempt failed; in the next wait the first probe connects: that is the return.
        r.begin_wait();
        assert!(r.probed(0, true));
        // The attempt after it failed too, though the path was up: probed once, no edge.
        r.begin_wait();
        assert_eq!(r.to_probe().collect::<Vec<_>>(), vec![0]);
        assert!(!r.probed(0, true));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_listener_appearing_ends_the_wait_early() {
        // A port with nothing listening (bound, then closed), which then listens.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let broker = Broker {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        };
        let brokers = [broker];
        let mut reach = Reach::new(1);
        let listen = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tokio::net::TcpListener::bind(("127.0.0.1", port)).await
        });
        let start = Instant::now();
        let back = wait(
            &mut reach,
            &brokers,
            Duration::from_secs(20),
            Duration::from_millis(50),
            || 1.0,
        )
        .await;
        let _listener = listen.await.expect("join");
        assert_eq!(back, Some(0));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // Reachable from the start: the whole delay is waited.
        let start = Instant::now();
        let back = wait(
            &mut reach,
            &brokers,
            Duration::from_millis(300),
            Duration::from_millis(50),
            || 1.0,
        )
        .await;
        assert_eq!(back, None);
        assert!(start.elapsed() >= Duration::from_millis(300));
    }
}
