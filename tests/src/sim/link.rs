//! The network path between one client and the broker, carrying one TCP connection at a time
//! (more while an old one is still being torn down), with faults a schedule switches at will.
//!
//! What TCP guarantees shapes the model. A connection never reorders, duplicates or skips
//! bytes, so each connection ("epoch") is FIFO per direction. Loss therefore never shows up as
//! a missing packet with later ones arriving; it shows up as delay or as a stall:
//!
//! - A **black hole** (pulled cable, dropped Wi-Fi) holds every segment. Nobody is told. When
//!   the path comes back, TCP's retransmission (RTO doubling from `rto_min` up to `rto_max`,
//!   measured from when each held segment was first sent) delivers the held segments in order,
//!   so a short outage only delays, exactly as on a real link. If the outage outlasts an
//!   application timeout (broker keepalive, client ping), that side closes the connection and
//!   the held data dies with it. A connection attempted during a black hole completes its
//!   handshake only when the path returns (SYN retransmission from 1 s); if the client gives up
//!   first, nothing of it ever reaches the broker.
//! - **Drop(p)** is the loss that matters to an application: each segment has chance `p` to be
//!   the one at which this connection's direction silently stalls for good; it and every later
//!   segment of the same connection in that direction are lost, and the connection ends by a
//!   keepalive timeout on one side. Loss that TCP repairs is just delay, which `Delay` models.
//!   Stalling instead of skipping keeps TCP's promise that what is delivered is a prefix.
//! - **Reset** tears every connection down at once (both sides are told) and refuses new ones
//!   (the client learns after one latency), like a killed process, a firewall REJECT or a
//!   broker that is down.
//!
//! Closing is a FIN segment that travels like data (a closed peer behind a black hole is not
//! noticed). Segments that arrive for a connection the receiver already closed are discarded
//! (a real stack would answer with RST; the sender's own timeouts cover that case).

use std::collections::{BTreeMap, VecDeque};

use tether_core::{Duration, Instant};

use super::mqtt::Packet;
use super::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToBroker,
    ToClient,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Self::ToBroker => 0,
            Self::ToClient => 1,
        }
    }
}

/// What one direction of the path does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Path {
    Up,
    /// Extra one-way latency on top of the link's own.
    Delay(Duration),
    /// Chance per segment that the connection stalls in this direction (see module docs).
    Drop(f64),
    BlackHole,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Up,
    Delay(Duration),
    Drop(f64),
    BlackHole,
    Reset,
    /// Only one direction is faulty; the other is up.
    OneWay(Dir, Path),
}

impl Fault {
    /// What `dir` does under this fault; `None` under `Reset`.
    pub fn path(&self, dir: Dir) -> Option<Path> {
        Some(match *self {
            Self::Up => Path::Up,
            Self::Delay(d) => Path::Delay(d),
            Self::Drop(p) => Path::Drop(p),
            Self::BlackHole => Path::BlackHole,
            Self::Reset => return None,
            Self::OneWay(d, path) if d == dir => path,
            Self::OneWay(..) => Path::Up,
        })
    }

    /// A fault for random schedules: mostly healthy, every kind represented.
    pub fn random(rng: &mut Rng) -> Fault {
        let path = |rng: &mut Rng| match rng.below(3) {
            0 => Path::Delay(rng.range_ms(5, 3_000)),
            1 => Path::Drop(*rng.pick(&[0.001, 0.01, 0.05, 0.3]).unwrap_or(&0.01)),
            _ => Path::BlackHole,
        };
        match rng.below(20) {
            0..=6 => Fault::Up,
            7..=9 => Fault::Delay(rng.range_ms(5, 3_000)),
            10..=11 => Fault::Drop(*rng.pick(&[0.001, 0.01, 0.05, 0.3]).unwrap_or(&0.01)),
            12..=14 => Fault::BlackHole,
            15..=16 => Fault::Reset,
            17 => Fault::OneWay(Dir::ToBroker, path(rng)),
            _ => Fault::OneWay(Dir::ToClient, path(rng)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// One-way latency of a healthy path.
    pub latency: Duration,
    /// Uniform extra latency in `[0, jitter]` per segment (FIFO still holds).
    pub jitter: Duration,
    /// TCP retransmission timeout: first interval, and the cap of its doubling.
    pub rto_min: Duration,
    pub rto_max: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(0),
            // Linux: TCP_RTO_MIN 200 ms, TCP_RTO_MAX 120 s.
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(120),
        }
    }
}

/// Linux's initial SYN retransmission timeout.
const SYN_RTO: Duration = Duration::from_secs(1);

/// What a side receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Packet(Packet),
    /// The peer closed the connection or it was reset.
    Closed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Per direction, indexed `[to broker, to client]`.
    pub delivered: [u64; 2],
    /// Segments that vanished: sent into a stall, a Reset, or a closed connection.
    pub lost: [u64; 2],
    pub stalls: u64,
    pub resets: u64,
    pub refused: u64,
}

#[derive(Debug, Clone)]
enum Body {
    Packet(Packet),
    Fin,
}

#[derive(Debug, Clone)]
struct Segment {
    /// `None` while held by a black hole or an unfinished handshake.
    due: Option<Instant>,
    sent: Instant,
    body: Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerSide {
    /// Nothing of this connection has reached the broker yet.
    Unseen,
    Open,
    Closed,
}

#[derive(Debug, Clone)]
struct Conn {
    opened: Instant,
    established: bool,
    /// When the handshake completed (or will, by SYN retransmission).
    ready: Instant,
    client_open: bool,
    broker: BrokerSide,
    stalled: [bool; 2],
    /// Delivery time of the last segment per direction: FIFO within the connection.
    last_due: [Instant; 2],
}

#[derive(Debug, Clone)]
pub struct Link {
    config: LinkConfig,
    rng: Rng,
    fault: Fault,
    next_epoch: u64,
    conns: BTreeMap<u64, Conn>,
    /// Per direction, one FIFO per connection.
    queues: [BTreeMap<u64, VecDeque<Segment>>; 2],
    stats: LinkStats,
}

/// When a segment first sent at `sent` gets through a path that is back at `now`: the first
/// retransmission at or after `now`, intervals doubling from `first` up to `cap`.
fn retransmit_at(sent: Instant, now: Instant, first: Duration, cap: Duration) -> Instant {
    let mut t = sent;
    let mut rto = first.max(Duration::from_micros(1));
    loop {
        t = t.saturating_add(rto);
        if t >= now {
            return t;
        }
        rto = rto.checked_mul(2).unwrap_or(cap).min(cap.max(first));
    }
}

impl Link {
    pub fn new(config: LinkConfig, rng: Rng) -> Self {
        Self {
            config,
            rng,
            fault: Fault::Up,
            next_epoch: 1,
            conns: BTreeMap::new(),
            queues: [BTreeMap::new(), BTreeMap::new()],
            stats: LinkStats::default(),
        }
    }

    pub fn fault(&self) -> Fault {
        self.fault
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Segments on their way (or held) in `dir`.
    pub fn in_flight(&self, dir: Dir) -> usize {
        self.queues[dir.index()].values().map(VecDeque::len).sum()
    }

    fn blackholed(&self, dir: Dir) -> bool {
        matches!(self.fault.path(dir), Some(Path::BlackHole))
    }

    /// The client opens a connection; returns its epoch, which tags everything sent on it.
    /// Under `Reset` the attempt is refused: the client receives `Closed` after one latency.
    pub fn open(&mut self, now: Instant) -> u64 {
        self.gc();
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let refused = self.fault == Fault::Reset;
        let established =
            !refused && !self.blackholed(Dir::ToBroker) && !self.blackholed(Dir::ToClient);
        self.conns.insert(
            epoch,
            Conn {
                opened: now,
                established,
                ready: now,
                client_open: true,
                broker: if refused {
                    BrokerSide::Closed
                } else {
                    BrokerSide::Unseen
                },
                stalled: [false; 2],
                last_due: [now; 2],
            },
        );
        if refused {
            self.stats.refused += 1;
            let due = self.next_due(Dir::ToClient, epoch, now, Duration::from_ticks(0));
            self.push(Dir::ToClient, epoch, Some(due), now, Body::Fin);
        }
        epoch
    }

    /// Sends `packet` in `dir` on connection `epoch`. It may be delayed, held or lost; the
    /// sender is never told.
    pub fn send(&mut self, dir: Dir, epoch: u64, packet: Packet, now: Instant) {
        let open = self.conns.get(&epoch).is_some_and(|c| match dir {
            Dir::ToBroker => c.client_open,
            Dir::ToClient => c.broker == BrokerSide::Open,
        });
        if open {
            self.enqueue(dir, epoch, Body::Packet(packet), now);
        } else {
            self.stats.lost[dir.index()] += 1;
        }
    }

    /// The sending side of `dir` closes connection `epoch`.
    pub fn close(&mut self, dir: Dir, epoch: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(&epoch) else {
            return;
        };
        match dir {
            Dir::ToBroker if conn.client_open => conn.client_open = false,
            Dir::ToClient if conn.broker == BrokerSide::Open => conn.broker = BrokerSide::Closed,
            _ => return,
        }
        if !conn.established || now < conn.ready {
            // SYN_SENT aborted: nothing of this connection ever reaches the broker.
            conn.broker = BrokerSide::Closed;
            for q in &mut self.queues {
                q.remove(&epoch);
            }
            return;
        }
        self.enqueue(dir, epoch, Body::Fin, now);
    }

    fn enqueue(&mut self, dir: Dir, epoch: u64, body: Body, now: Instant) {
        let d = dir.index();
        let path = self.fault.path(dir);
        let Some(conn) = self.conns.get_mut(&epoch) else {
            return;
        };
        if conn.stalled[d] {
            self.stats.lost[d] += 1;
            return;
        }
        let extra = match path {
            None => {
                self.stats.lost[d] += 1;
                return;
            }
            Some(Path::BlackHole) => None,
            Some(_) if !conn.established => None,
            Some(Path::Drop(p)) => {
                if self.rng.chance(p) {
                    conn.stalled[d] = true;
                    self.stats.stalls += 1;
                    self.stats.lost[d] += 1;
                    return;
                }
                Some(Duration::from_ticks(0))
            }
            Some(Path::Up) => Some(Duration::from_ticks(0)),
            Some(Path::Delay(x)) => Some(x),
        };
        let due = extra.map(|x| self.next_due(dir, epoch, now, x));
        self.push(dir, epoch, due, now, body);
    }

    fn next_due(&mut self, dir: Dir, epoch: u64, earliest: Instant, extra: Duration) -> Instant {
        let jitter = self.config.jitter.as_ticks();
        let jitter = if jitter == 0 {
            0
        } else {
            self.rng.below(jitter + 1)
        };
        let due = earliest
            .saturating_add(self.config.latency)
            .saturating_add(Duration::from_ticks(jitter))
            .saturating_add(extra);
        match self.conns.get_mut(&epoch) {
            Some(conn) => {
                let due = due.max(conn.last_due[dir.index()]);
                conn.last_due[dir.index()] = due;
                due
            }
            None => due,
        }
    }

    fn push(&mut self, dir: Dir, epoch: u64, due: Option<Instant>, now: Instant, body: Body) {
        self.queues[dir.index()]
            .entry(epoch)
            .or_default()
            .push_back(Segment {
                due,
                sent: now,
                body,
            });
    }

    /// Switches the fault. Leaving a black hole schedules the held segments by TCP
    /// retransmission; entering one holds what is still on the wire; `Reset` tears down
    /// every connection and tells both sides now.
    pub fn set_fault(&mut self, fault: Fault, now: Instant) {
        self.fault = fault;
        if fault == Fault::Reset {
            self.stats.resets += 1;
            for q in &mut self.queues {
                q.clear();
            }
            let mut notices = Vec::new();
            for (&epoch, conn) in &mut self.conns {
                conn.established = false;
                if conn.client_open {
                    notices.push((Dir::ToClient, epoch));
                }
                match conn.broker {
                    BrokerSide::Open => notices.push((Dir::ToBroker, epoch)),
                    BrokerSide::Unseen => conn.broker = BrokerSide::Closed,
                    BrokerSide::Closed => {}
                }
            }
            for (dir, epoch) in notices {
                self.push(dir, epoch, Some(now), now, Body::Fin);
            }
            return;
        }
        let both_pass = !self.blackholed(Dir::ToBroker) && !self.blackholed(Dir::ToClient);
        if both_pass {
            for conn in self.conns.values_mut() {
                if !conn.established && conn.client_open && conn.broker == BrokerSide::Unseen {
                    conn.established = true;
                    conn.ready = retransmit_at(conn.opened, now, SYN_RTO, self.config.rto_max);
                }
            }
        }
        for dir in [Dir::ToBroker, Dir::ToClient] {
            let d = dir.index();
            match fault.path(dir) {
                Some(Path::BlackHole) => {
                    for seg in self.queues[d].values_mut().flatten() {
                        if seg.due.is_some_and(|t| t > now) {
                            seg.due = None;
                        }
                    }
                }
                Some(path) => {
                    let extra = match path {
                        Path::Delay(x) => x,
                        _ => Duration::from_ticks(0),
                    };
                    let (rto_min, rto_max) = (self.config.rto_min, self.config.rto_max);
                    let epochs: Vec<u64> = self.queues[d].keys().copied().collect();
                    for epoch in epochs {
                        let Some(ready) = self
                            .conns
                            .get(&epoch)
                            .filter(|c| c.established)
                            .map(|c| c.ready)
                        else {
                            continue;
                        };
                        let len = self.queues[d].get(&epoch).map_or(0, VecDeque::len);
                        for i in 0..len {
                            let Some(sent) = self.queues[d]
                                .get(&epoch)
                                .and_then(|q| q.get(i))
                                .filter(|s| s.due.is_none())
                                .map(|s| s.sent)
                            else {
                                continue;
                            };
                            let data = retransmit_at(sent, now, rto_min, rto_max);
                            let due = self.next_due(dir, epoch, data.max(ready), extra);
                            if let Some(seg) =
                                self.queues[d].get_mut(&epoch).and_then(|q| q.get_mut(i))
                            {
                                seg.due = Some(due);
                            }
                        }
                    }
                }
                None => {}
            }
        }
    }

    /// The next segment due in `dir` by `now`, per-connection FIFO. `Closed` is delivered once
    /// per connection and side; what arrives for a side that already closed is discarded.
    pub fn poll(&mut self, dir: Dir, now: Instant) -> Option<(u64, Delivery)> {
        let d = dir.index();
        loop {
            // The earliest due head among the connections (ties: the older connection).
            let mut best: Option<(Instant, u64)> = None;
            for (&epoch, q) in &self.queues[d] {
                if let Some(due) = q.front().and_then(|s| s.due).filter(|&t| t <= now) {
                    if best.is_none_or(|(t, _)| due < t) {
                        best = Some((due, epoch));
                    }
                }
            }
            let (_, epoch) = best?;
            let q = self.queues[d].get_mut(&epoch)?;
            let seg = q.pop_front()?;
            if q.is_empty() {
                self.queues[d].remove(&epoch);
            }
            let Some(conn) = self.conns.get_mut(&epoch) else {
                continue;
            };
            let delivery = match (dir, seg.body) {
                (Dir::ToBroker, body) => match (conn.broker, body) {
                    (BrokerSide::Closed, _) => None,
                    (BrokerSide::Unseen, Body::Fin) => {
                        conn.broker = BrokerSide::Closed;
                        None
                    }
                    (_, Body::Fin) => {
                        conn.broker = BrokerSide::Closed;
                        Some(Delivery::Closed)
                    }
                    (_, Body::Packet(p)) => {
                        conn.broker = BrokerSide::Open;
                        Some(Delivery::Packet(p))
                    }
                },
                (Dir::ToClient, _) if !conn.client_open => None,
                (Dir::ToClient, Body::Fin) => {
                    conn.client_open = false;
                    Some(Delivery::Closed)
                }
                (Dir::ToClient, Body::Packet(p)) => Some(Delivery::Packet(p)),
            };
            match delivery {
                Some(delivery) => {
                    self.stats.delivered[d] += 1;
                    return Some((epoch, delivery));
                }
                None => self.stats.lost[d] += 1,
            }
        }
    }

    /// When the next segment is due in either direction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Due times are monotone within a connection: the heads suffice.
        let mut next: Option<Instant> = None;
        for q in self.queues.iter().flat_map(BTreeMap::values) {
            if let Some(t) = q.front().and_then(|s| s.due) {
                next = Some(next.map_or(t, |x| x.min(t)));
            }
        }
        next
    }

    /// Forgets connections that neither side can hear from any more.
    fn gc(&mut self) {
        let queues = &self.queues;
        self.conns.retain(|epoch, c| {
            c.client_open
                || c.broker == BrokerSide::Open
                || queues.iter().any(|q| q.contains_key(epoch))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn link() -> Link {
        Link::new(LinkConfig::default(), Rng::new(1))
    }

    fn drain(link: &mut Link, dir: Dir, now: Instant) -> Vec<(u64, Delivery)> {
        std::iter::from_fn(|| link.poll(dir, now)).collect()
    }

    #[test]
    fn delivers_in_order_after_latency() {
        let mut l = link();
        let e = l.open(ms(0));
        l.send(Dir::ToBroker, e, Packet::PingReq, ms(0));
        l.set_fault(Fault::Delay(Duration::from_millis(50)), ms(0));
        l.send(Dir::ToBroker, e, Packet::Disconnect, ms(0));
        l.set_fault(Fault::Up, ms(0));
        l.send(Dir::ToBroker, e, Packet::PingResp, ms(0));
        assert_eq!(l.poll_timeout(), Some(ms(1)));
        assert_eq!(drain(&mut l, Dir::ToBroker, ms(1)).len(), 1);
        // The undelayed third packet waits for the delayed second one: FIFO.
        let rest = drain(&mut l, Dir::ToBroker, ms(51));
        assert_eq!(
            rest,
            vec![
                (e, Delivery::Packet(Packet::Disconnect)),
                (e, Delivery::Packet(Packet::PingResp))
            ]
        );
    }

    #[test]
    fn short_black_hole_delays_by_retransmission() {
        let mut l = link();
        let e = l.open(ms(0));
        l.set_fault(Fault::BlackHole, ms(0));
        l.send(Dir::ToBroker, e, Packet::PingReq, ms(0));
        assert_eq!(l.poll_timeout(), None);
        assert!(drain(&mut l, Dir::ToBroker, ms(10_000)).is_empty());
        l.set_fault(Fault::Up, ms(1_000));
        // Retransmissions at 200, 600, 1400 ms: the first after the path is back wins.
        assert_eq!(l.poll_timeout(), Some(ms(1_401)));
        assert_eq!(drain(&mut l, Dir::ToBroker, ms(1_401)).len(), 1);
    }

    #[test]
    fn black_hole_catches_segments_on_the_wire() {
        let mut l = link();
        let e = l.open(ms(0));
        l.set_fault(Fault::Delay(Duration::from_millis(100)), ms(0));
        l.send(Dir::ToClient, e, Packet::PingResp, ms(0)); // broker side unseen: lost
        l.send(Dir::ToBroker, e, Packet::PingReq, ms(0));
        l.set_fault(Fault::BlackHole, ms(50));
        assert!(drain(&mut l, Dir::ToBroker, ms(200)).is_empty());
        assert_eq!(l.stats().lost, [0, 1]);
    }

    #[test]
    fn drop_stalls_the_connection_not_the_next_one() {
        let mut l = link();
        let e = l.open(ms(0));
        l.set_fault(Fault::OneWay(Dir::ToBroker, Path::Drop(1.0)), ms(0));
        l.send(Dir::ToBroker, e, Packet::PingReq, ms(0));
        l.set_fault(Fault::Up, ms(1));
        l.send(Dir::ToBroker, e, Packet::PingReq, ms(1));
        assert!(drain(&mut l, Dir::ToBroker, ms(100)).is_empty());
        assert_eq!(l.stats().stalls, 1);
        let e2 = l.open(ms(100));
        l.send(Dir::ToBroker, e2, Packet::PingReq, ms(100));
        assert_eq!(drain(&mut l, Dir::ToBroker, ms(101)).len(), 1);
    }

    #[test]
    fn reset_tells_both_sides_and_refuses() {
        let mut l = link();
        let e = l.open(ms(0));
        l.send(Dir::ToBroker, e, Packet::PingReq, ms(0));
        assert_eq!(drain(&mut l, Dir::ToBroker, ms(1)).len(), 1);
        l.send(Dir::ToClient, e, Packet::PingResp, ms(1));
        l.set_fault(Fault::Reset, ms(1));
        assert_eq!(
            drain(&mut l, Dir::ToBroker, ms(1)),
            vec![(e, Delivery::Closed)]
        );
        assert_eq!(
            drain(&mut l, Dir::ToClient, ms(1)),
            vec![(e, Delivery::Closed)]
        );
        let e2 = l.open(ms(5));
        l.send(Dir::ToBroker, e2, Packet::PingReq, ms(5));
        assert_eq!(
            drain(&mut l, Dir::ToClient, ms(6)),
            vec![(e2, Delivery::Closed)]
        );
        assert!(drain(&mut l, Dir::ToBroker, ms(100)).is_empty());
        assert_eq!(l.stats().refused, 1);
    }

    #[test]
    fn aborted_handshake_never_reaches_the_broker() {
        let mut l = link();
        l.set_fault(Fault::BlackHole, ms(0));
        let e = l.open(ms(0));
        l.send(Dir::ToBroker, e, Packet::PingReq, ms(0));
        l.close(Dir::ToBroker, e, ms(5_000));
        l.set_fault(Fault::Up, ms(6_000));
        assert!(drain(&mut l, Dir::ToBroker, ms(60_000)).is_empty());
        // One that the client kept completes when the path is back.
        l.set_fault(Fault::BlackHole, ms(60_000));
        let e2 = l.open(ms(60_000));
        l.send(Dir::ToBroker, e2, Packet::PingReq, ms(60_000));
        l.set_fault(Fault::Up, ms(62_000));
        // SYN retransmissions at 61 s, 63 s.
        assert_eq!(l.poll_timeout(), Some(ms(63_001)));
        assert_eq!(drain(&mut l, Dir::ToBroker, ms(63_001)).len(), 1);
    }

    #[test]
    fn close_travels_behind_data() {
        let mut l = link();
        let e = l.open(ms(0));
        l.send(Dir::ToBroker, e, Packet::Disconnect, ms(0));
        l.close(Dir::ToBroker, e, ms(0));
        l.send(Dir::ToBroker, e, Packet::PingReq, ms(0)); // after close: not sent
        assert_eq!(
            drain(&mut l, Dir::ToBroker, ms(1)),
            vec![
                (e, Delivery::Packet(Packet::Disconnect)),
                (e, Delivery::Closed)
            ]
        );
    }
}
