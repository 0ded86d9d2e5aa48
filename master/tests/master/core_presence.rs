//! Retained presence that tells the truth, and an agent back from silence made available
//! within a round trip: the master's verdict on a silent agent's presence topic, and its early
//! heartbeat for an agent whose heartbeat echoes an old one.

use tether_core::Duration;
use tether_core::auth::Verifier;
use tether_core::message::{AgentHeartbeat, Message};
use tether_core::presence::{Presence, State};
use tether_master::core::Qos;
use tether_master::model::AgentPresence;

use crate::played::*;
use crate::published;
use crate::rig::Rig;

const PRESENCE: &str = "tether/agent/pi-1/presence";

fn verdicts(h: &Rig, from: usize) -> Vec<Vec<u8>> {
    h.out[from..]
        .iter()
        .filter(|p| p.topic == PRESENCE)
        .inspect(|p| assert!(p.retain && p.qos == Qos::AtLeastOnce))
        .map(|p| p.payload.clone())
        .collect()
}

/// How many master heartbeats were published from `from`.
fn master_beats(h: &Rig, from: usize) -> usize {
    h.out[from..]
        .iter()
        .filter(|p| p.topic == "tether/master/heartbeat")
        .count()
}

/// A heartbeat of `pi-1` echoing `echo` (an old one, as after a freeze).
fn heartbeat_echoing(h: &mut Rig, echo: Option<tether_core::message::Echo>) {
    h.heartbeats += 1;
    let hb = Message::AgentHeartbeat(AgentHeartbeat {
        incarnation: 1,
        journal: h.journal,
        counter: h.heartbeats,
        echo,
        last_seq: 0,
        tasks: heapless::Vec::new(),
        more_tasks: false,
        journal_bytes: 0,
    });
    let bytes = h.mac("pi-1", "heartbeat", &hb);
    h.deliver("tether/agent/pi-1/heartbeat", &bytes);
}

#[test]
fn a_silent_agent_reads_offline_on_its_retained_presence() {
    let mut h = rig();
    h.online("pi-1", 1);
    let mark = h.out.len();
    // Silent (its session kept open by the broker, so no will): lost after 2 periods + 2 s.
    h.secs(21);
    assert!(verdicts(&h, mark).is_empty());
    h.secs(2);
    assert_eq!(h.stored_agent("pi-1").presence, AgentPresence::Lost);
    let said = verdicts(&h, mark);
    assert_eq!(said.len(), 1, "said once");
    // Readable in mosquitto_sub, and authentic as the agent's own will would be.
    assert!(said[0].starts_with(b"offline 00000001 lost "));
    let key = h.key("pi-1");
    assert_eq!(
        Presence::parse_verified(&said[0], PRESENCE, Verifier::Agent(&key)),
        Ok(Presence {
            state: State::Lost,
            incarnation: 1
        })
    );
    // The broker hands it back to the master: nothing changes, nothing is said again.
    let mark = h.out.len();
    h.deliver(PRESENCE, &said[0].clone());
    h.secs(60);
    assert!(verdicts(&h, mark).is_empty());
    assert_eq!(h.stored_agent("pi-1").presence, AgentPresence::Lost);
    // An agent that was alive says so again, and is online.
    h.online("pi-1", 1);
    assert_eq!(h.stored_agent("pi-1").presence, AgentPresence::Online);
}

#[test]
fn an_agent_echoing_an_old_heartbeat_gets_an_early_one_at_most_twice_a_second() {
    let mut h = rig();
    h.online("pi-1", 1);
    let old = published::echo(&h.out, P);
    // Frozen for a minute, then back: its heartbeat echoes what it heard before.
    h.secs(61);
    assert_eq!(h.stored_agent("pi-1").presence, AgentPresence::Lost);
    h.advance(Duration::from_millis(4_000));
    let mark = h.out.len();
    heartbeat_echoing(&mut h, old);
    heartbeat_echoing(&mut h, old);
    assert_eq!(h.stored_agent("pi-1").presence, AgentPresence::Lost);
    // The next heartbeat goes out at once (the last was 5 s ago), not at the period.
    assert_eq!(master_beats(&h, mark), 1);
    // Another stale one 100 ms later waits for the 500 ms gap.
    h.advance(Duration::from_millis(100));
    let mark = h.out.len();
    heartbeat_echoing(&mut h, old);
    h.advance(Duration::from_millis(300));
    assert_eq!(master_beats(&h, mark), 0);
    h.advance(Duration::from_millis(100));
    assert_eq!(master_beats(&h, mark), 1);
    // Its answer, echoing that heartbeat, makes it available again.
    h.heartbeat("pi-1", 1, 0, &[]);
    assert_eq!(h.stored_agent("pi-1").presence, AgentPresence::Online);
    // Replays of what was already accepted pull nothing forward.
    let mark = h.out.len();
    let accepted = h.heartbeats;
    h.heartbeats = accepted - 1;
    heartbeat_echoing(&mut h, old);
    h.advance(Duration::from_millis(600));
    assert_eq!(master_beats(&h, mark), 0);
}
