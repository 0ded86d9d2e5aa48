//! Authentication in the master core, in virtual time over a real store: what agents publish
//! must carry their own MAC (forgeries, another agent's key, no MAC, unknown agents: dropped
//! and counted, nothing stored); everything the master publishes is signed, from one counter
//! that only grows; keys and the epoch survive restarts.

use tether_core::Duration;
use tether_core::auth::{AgentKey, MasterKeys, SigningKey, Verifier};
use tether_core::message::{AgentHeartbeat, Echo, Event, EventKind, Message, Report, TaskRef};
use tether_core::presence::{Presence, State};
use tether_core::wire::{self, ReceiveError, Refusal, Signer};
use tether_master::core::{Config, Master, RequestError, Submit};
use tether_master::store::{SqliteStore, Store};

use crate::published;
use crate::rig::Rig;

const PI1: AgentKey = [1; 32];
const PI2: AgentKey = [2; 32];

fn signing_key() -> SigningKey {
    SigningKey::from_seed([3; 32]).unwrap()
}

/// A master whose epoch comes from its store, with pi-1's and pi-2's keys provisioned;
/// `insecure_agents` as `--insecure-agents`.
fn rig(insecure_agents: bool) -> Rig {
    Rig::start(
        |store| {
            let epoch = store.next_epoch(0).unwrap();
            let mut config = Config::new("tether", epoch, signing_key());
            config.heartbeat_period = Duration::from_secs(10);
            config.insecure_agents = insecure_agents;
            config
        },
        |rig| {
            rig.m.set_agent_key(rig.now, "pi-1", PI1).unwrap();
            rig.m.set_agent_key(rig.now, "pi-2", PI2).unwrap();
        },
    )
}

impl Rig {
    /// Announces `agent` as its own key says, so it is online and available.
    fn announce(&mut self, agent: &str, key: &AgentKey) {
        let topic = format!("tether/agent/{agent}/presence");
        let text = presence(State::Online, 1).render_signed(&topic, Signer::Agent(key));
        self.deliver(&topic, text.as_bytes());
        let topic = format!("tether/agent/{agent}/heartbeat");
        self.heartbeats += 1;
        let hb = heartbeat(self.heartbeats, published::echo(&self.out, "tether"));
        self.deliver(&topic, &mac(&hb, &topic, key));
    }

    fn available(&self, agent: &str) -> bool {
        self.m
            .agent_views(self.now)
            .iter()
            .any(|v| v.id == agent && v.available)
    }

    fn security(&self, agent: &str) -> (u64, u64) {
        self.m
            .security()
            .get(agent)
            .map_or((0, 0), |c| (c.unauthenticated, c.bad_signature))
    }

    fn acks_to(&self, agent: &str) -> usize {
        let topic = format!("tether/agent/{agent}/cmd");
        self.out.iter().filter(|p| p.topic == topic).count()
    }
}

fn presence(state: State, incarnation: u32) -> Presence {
    Presence { state, incarnation }
}

fn heartbeat(counter: u32, echo: Option<Echo>) -> Message {
    Message::AgentHeartbeat(AgentHeartbeat {
        incarnation: 1,
        journal: 1,
        counter,
        echo,
        last_seq: 0,
        tasks: heapless::Vec::new(),
        more_tasks: false,
        journal_bytes: 0,
    })
}

fn accepted(seq: u64) -> Message {
    Message::Event(Report {
        journal: 1,
        event: Event {
            seq,
            at_unix_ms: 0,
            kind: EventKind::Accepted {
                task: TaskRef {
                    task: 1,
                    attempt: 1,
                },
            },
        },
    })
}

fn mac(msg: &Message, topic: &str, key: &AgentKey) -> Vec<u8> {
    let mut buf = [0u8; wire::MAX_MESSAGE];
    wire::encode_mac(msg, topic, key, &mut buf)
        .unwrap()
        .to_vec()
}

fn plain(msg: &Message) -> Vec<u8> {
    let mut buf = [0u8; wire::MAX_MESSAGE];
    wire::encode(msg, &mut buf).unwrap().to_vec()
}

const PI1_EVENT: &str = "tether/agent/pi-1/event";

#[test]
fn event_forged_by_another_agent_is_dropped_and_counted() {
    let mut rig = rig(false);
    rig.announce("pi-1", &PI1);
    let before = rig.acks_to("pi-1");
    // pi-2 (or anyone holding pi-2's key) speaks for pi-1.
    rig.deliver(PI1_EVENT, &mac(&accepted(1), PI1_EVENT, &PI2));
    // pi-2's own, genuinely MAC'd event, replayed on pi-1's topic.
    let pi2_topic = "tether/agent/pi-2/event";
    rig.deliver(PI1_EVENT, &mac(&accepted(1), pi2_topic, &PI2));
    assert_eq!(rig.security("pi-1"), (0, 2));
    assert!(
        rig.store.events("pi-1").unwrap().is_empty(),
        "nothing stored"
    );
    assert_eq!(rig.acks_to("pi-1"), before, "nothing acknowledged");
    let last = rig.m.security()["pi-1"].last_error.clone().unwrap();
    assert!(last.contains("bad signature"), "{last}");
    // The real one is taken.
    rig.deliver(PI1_EVENT, &mac(&accepted(1), PI1_EVENT, &PI1));
    assert_eq!(rig.store.events("pi-1").unwrap().len(), 1);
}

#[test]
fn unauthenticated_and_unknown_agents_are_refused() {
    let mut rig = rig(false);
    rig.deliver(PI1_EVENT, &plain(&accepted(1)));
    let hb = "tether/agent/pi-1/heartbeat";
    rig.deliver(hb, &plain(&heartbeat(1, None)));
    rig.deliver("tether/agent/pi-1/presence", b"online 00000001");
    assert_eq!(rig.security("pi-1"), (3, 0));
    assert!(!rig.available("pi-1"));
    // An agent nobody provisioned: refused whatever it carries, counted once globally.
    let ghost = "tether/agent/ghost/heartbeat";
    rig.deliver(ghost, &mac(&heartbeat(1, None), ghost, &[7; 32]));
    rig.deliver(ghost, &plain(&heartbeat(1, None)));
    rig.deliver("tether/agent/ghost/presence", b"online 00000001");
    assert_eq!(rig.m.stats().unknown_agent, 3);
    assert!(rig.m.security().get("ghost").is_none(), "no per-name state");
    assert!(rig.m.agent_views(rig.now).iter().all(|v| v.id != "ghost"));
    assert!(rig.store.agents().unwrap().iter().all(|a| a.id != "ghost"));
}

#[test]
fn forged_will_does_not_take_an_agent_offline() {
    let mut rig = rig(false);
    rig.announce("pi-1", &PI1);
    assert!(rig.available("pi-1"));
    let topic = "tether/agent/pi-1/presence";
    let forged = presence(State::Lost, 1).render_signed(topic, Signer::Agent(&PI2));
    rig.deliver(topic, forged.as_bytes());
    rig.deliver(topic, presence(State::Lost, 1).render().as_bytes());
    assert!(rig.available("pi-1"));
    assert_eq!(rig.security("pi-1"), (1, 1));
    let real = presence(State::Lost, 1).render_signed(topic, Signer::Agent(&PI1));
    rig.deliver(topic, real.as_bytes());
    assert!(!rig.available("pi-1"));
}

#[test]
fn a_rotated_key_replaces_the_old_one() {
    let mut rig = rig(false);
    rig.announce("pi-1", &PI1);
    rig.m.set_agent_key(rig.now, "pi-1", [9; 32]).unwrap();
    rig.drain();
    rig.deliver(PI1_EVENT, &mac(&accepted(1), PI1_EVENT, &PI1));
    assert_eq!(rig.security("pi-1"), (0, 1));
    rig.deliver(PI1_EVENT, &mac(&accepted(1), PI1_EVENT, &[9; 32]));
    assert_eq!(rig.store.events("pi-1").unwrap().len(), 1);
    assert!(matches!(
        rig.m.set_agent_key(rig.now, "bad/id", [1; 32]),
        Err(RequestError::InvalidName { what: "agent", .. })
    ));
}

#[test]
fn the_masters_own_broker_user_gets_no_agent_key() {
    let mut rig = rig(false);
    let refused = rig.m.set_agent_key(rig.now, "tether-master", [1; 32]);
    assert!(
        matches!(&refused, Err(RequestError::MasterUser(id)) if id == "tether-master"),
        "{refused:?}"
    );
    assert!(rig.m.agent_key("tether-master").is_none());
}

#[test]
fn insecure_mode_takes_plain_messages_only_from_agents_without_keys() {
    let mut rig = rig(true);
    let topic = "tether/agent/pi-9/heartbeat";
    rig.deliver("tether/agent/pi-9/presence", b"online 00000001");
    let echo = published::echo(&rig.out, "tether");
    rig.deliver(topic, &plain(&heartbeat(1, echo)));
    assert!(rig.available("pi-9"));
    // A provisioned agent still needs its MAC.
    rig.deliver(PI1_EVENT, &plain(&accepted(1)));
    assert_eq!(rig.security("pi-1"), (1, 0));
}

#[test]
fn everything_published_is_signed_with_one_growing_counter() {
    let mut rig = rig(false);
    rig.announce("pi-1", &PI1);
    let id = rig
        .m
        .submit(
            rig.now,
            Submit {
                agent: Some("pi-1".into()),
                cluster: None,
                argv: vec!["true".into()],
                env: vec![],
                cwd: String::new(),
                profile: None,
                policy: Default::default(),
                start_at_ms: None,
            },
        )
        .unwrap();
    rig.drain();
    // Unanswered: the start is retransmitted each period, heartbeats go out meanwhile.
    for _ in 0..3 {
        rig.jump(10);
    }
    let keys = MasterKeys::from_keys(&[signing_key().public_key()]).unwrap();
    let mut counters = Vec::new();
    let mut starts = 0;
    for p in &rig.out {
        if p.topic == "tether/master/presence" {
            assert!(
                Presence::parse_verified(&p.payload, &p.topic, Verifier::Master(&keys)).is_ok()
            );
            continue;
        }
        if p.topic.ends_with("/presence") {
            // The master's verdict on a silent agent: tagged as that agent's own will is.
            assert!(Presence::parse_verified(&p.payload, &p.topic, Verifier::Agent(&PI1)).is_ok());
            continue;
        }
        let msg = wire::decode_verified(&p.payload, &p.topic, Verifier::Master(&keys)).unwrap();
        // Bound to its topic.
        assert_eq!(
            wire::decode_verified(&p.payload, "tether/agent/pi-2/cmd", Verifier::Master(&keys)),
            Err(ReceiveError::Refused(Refusal::BadSignature))
        );
        match msg {
            Message::Command(c) => {
                assert_eq!(c.epoch, 1);
                if matches!(c.body, tether_core::message::CommandBody::Start(ref s) if s.task.task == id)
                {
                    starts += 1;
                }
                counters.push(c.counter);
            }
            Message::MasterHeartbeat(hb) => counters.push(hb.counter),
            other => panic!("{other:?}"),
        }
    }
    assert!(starts >= 3, "retransmitted: {starts}");
    assert!(
        counters.windows(2).all(|w| w[1] > w[0]),
        "one growing counter for commands and heartbeats: {counters:?}"
    );
}

#[test]
fn keys_and_epoch_survive_a_restart() {
    let mut rig = rig(false);
    rig.announce("pi-1", &PI1);
    let snapshot = rig.store.load().unwrap();
    assert!(snapshot.agent_keys.contains(&("pi-1".to_owned(), PI1)));
    let epoch = rig.store.next_epoch(0).unwrap();
    assert_eq!(epoch, 2, "the epoch only grows");
    let mut m = Master::restore(
        Config::new("tether", epoch, signing_key()),
        snapshot,
        rig.now,
    )
    .unwrap();
    assert_eq!(m.agent_key("pi-1"), Some(&PI1));
    m.handle_message(rig.now, PI1_EVENT, &mac(&accepted(1), PI1_EVENT, &PI2));
    assert_eq!(m.security()["pi-1"].bad_signature, 1);
}

#[test]
fn the_epoch_grows_across_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    let mut seen = Vec::new();
    for floor in [0, 0, 100, 50, 0] {
        let store = SqliteStore::open(&path).unwrap();
        seen.push(store.next_epoch(floor).unwrap());
    }
    // One more each time, jumping to a floor above (the clock, for a master that lost its
    // database), never back below.
    assert_eq!(seen, vec![1, 2, 100, 101, 102]);
}
