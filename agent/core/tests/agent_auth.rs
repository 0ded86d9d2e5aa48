//! Authentication and replay protection in the agent core: every way a command, a master
//! heartbeat or master presence can be forged or replayed is refused with its reason, counted,
//! reported, and never acted on; what the agent publishes carries its MAC.

use tether_core::Instant;
use tether_core::agent::{Action, Agent, Auth, Config};
use tether_core::auth::{self, MasterKeys, SigningKey, Verifier};
use tether_core::journal::{self, JournalRecord};
use tether_core::message::*;
use tether_core::policy::{OnDisconnect, Policy};
use tether_core::presence::{Presence, State};
use tether_core::wire::{self, ReceiveError, Refusal, Signer};

type TestAgent = Agent<4, 8>;

const CMD: &str = "tether/agent/pi-1/cmd";
const OTHER_CMD: &str = "tether/agent/pi-2/cmd";
const HB: &str = "tether/master/heartbeat";
const MASTER_PRESENCE: &str = "tether/master/presence";
const AGENT_KEY: [u8; 32] = [9; 32];
/// The identity of the test agent's journal; the master's commands name it.
const JOURNAL: u32 = 0x7e57;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn master() -> SigningKey {
    SigningKey::from_seed([7; 32]).unwrap()
}

fn impostor() -> SigningKey {
    SigningKey::from_seed([8; 32]).unwrap()
}

fn keys() -> Auth {
    Auth::Keys {
        master: MasterKeys::from_keys(&[master().public_key()]).unwrap(),
        agent: AGENT_KEY,
    }
}

/// An agent whose appends are durable at once, with its journal and published actions.
struct Rig {
    agent: TestAgent,
    journal: Vec<JournalRecord>,
    actions: Vec<Action>,
}

impl Rig {
    fn new(auth: Auth) -> Self {
        let config = Config {
            id: "pi-1",
            prefix: "tether",
            incarnation: 0xabcd,
            journal: JOURNAL,
            auth,
        };
        let mut agent = TestAgent::new(config, t(0)).unwrap();
        agent.handle_wall_clock(t(0), 1_000_000);
        agent.finish_restore(t(0));
        let mut rig = Self {
            agent,
            journal: Vec::new(),
            actions: Vec::new(),
        };
        rig.agent.handle_connected(t(0));
        rig.drain(t(0));
        rig
    }

    /// A new agent process over the journal of this one.
    fn restart(&self, now: Instant) -> Self {
        let config = Config {
            id: "pi-1",
            prefix: "tether",
            incarnation: 0xabce,
            journal: JOURNAL + 1,
            auth: keys(),
        };
        let mut agent = TestAgent::new(config, now).unwrap();
        for record in &self.journal {
            agent.restore(record);
        }
        agent.finish_restore(now);
        let mut rig = Self {
            agent,
            journal: self.journal.clone(),
            actions: Vec::new(),
        };
        rig.drain(now);
        rig
    }

    fn drain(&mut self, now: Instant) {
        loop {
            let mut last = None;
            while let Some(action) = self.agent.poll_action() {
                if let Action::Append { lsn, record } = &action {
                    let mut buf = [0u8; journal::MAX_RECORD];
                    let bytes = self.agent.encode_append(record, &mut buf).unwrap();
                    self.journal.push(journal::decode(bytes).unwrap());
                    last = Some(*lsn);
                }
                self.actions.push(action);
            }
            match last {
                Some(lsn) => self.agent.handle_journaled(now, lsn),
                None => break,
            }
        }
    }

    fn deliver(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        self.agent.handle_message(now, topic, payload);
        self.drain(now);
    }

    fn events(&self) -> Vec<EventKind> {
        self.journal
            .iter()
            .filter_map(|r| match r {
                JournalRecord::Event(e) => Some(e.kind.clone()),
                _ => None,
            })
            .collect()
    }

    fn spawned(&self) -> bool {
        self.actions.iter().any(|a| matches!(a, Action::Spawn(_)))
    }

    fn accepted(&self) -> usize {
        self.events()
            .iter()
            .filter(|k| matches!(k, EventKind::Accepted { .. }))
            .count()
    }

    fn bad_reports(&self) -> Vec<(ReceiveError, u64)> {
        self.events()
            .iter()
            .filter_map(|k| match k {
                EventKind::BadCommand { error, count } => Some((*error, *count)),
                _ => None,
            })
            .collect()
    }
}

fn spec(attempt: u64, on_disconnect: OnDisconnect) -> TaskSpec {
    TaskSpec {
        task: TaskRef {
            task: attempt,
            attempt,
        },
        policy: Policy {
            on_disconnect,
            heartbeat_period_ms: 1_000,
            heartbeat_timeout_ms: 3_000,
            ..Policy::DEFAULT
        },
        start_at_unix_ms: None,
        argv: StrList::from_items(["/bin/true"]).unwrap(),
        env: StrList::new(),
        cwd: heapless::String::new(),
    }
}

fn start(epoch: u32, counter: u64, attempt: u64) -> Message {
    Message::Command(Command {
        epoch,
        counter,
        journal: JOURNAL,
        body: CommandBody::Start(spec(attempt, OnDisconnect::Kill)),
    })
}

fn signed(msg: &Message, topic: &str, key: &SigningKey) -> Vec<u8> {
    let mut buf = [0u8; wire::MAX_MESSAGE];
    wire::encode_signed(msg, topic, key, &mut buf)
        .unwrap()
        .to_vec()
}

fn heartbeat(epoch: u32, counter: u64) -> Vec<u8> {
    let msg = Message::MasterHeartbeat(MasterHeartbeat {
        epoch,
        counter,
        period_ms: 1_000,
    });
    signed(&msg, HB, &master())
}

/// Asserts the command was refused for `reason`, counted and reported, and nothing ran.
fn assert_refused(rig: &Rig, reason: Refusal) {
    assert!(!rig.spawned(), "nothing may run");
    assert_eq!(rig.accepted(), 0, "nothing may be accepted");
    assert_eq!(rig.agent.stats().bad_commands, 1);
    assert_eq!(rig.bad_reports(), vec![(ReceiveError::Refused(reason), 1)]);
    assert!(rig.agent.tasks().next().is_none());
}

#[test]
fn a_signed_command_runs() {
    let mut rig = Rig::new(keys());
    rig.deliver(t(1), CMD, &signed(&start(1, 1, 1), CMD, &master()));
    assert!(rig.spawned());
    assert_eq!(rig.agent.master_counter(), (1, 1));
    assert!(rig.journal.contains(&JournalRecord::MasterCounter {
        epoch: 1,
        counter: 1
    }));
}

#[test]
fn forged_signature_is_refused() {
    let mut rig = Rig::new(keys());
    let mut bytes = signed(&start(1, 1, 1), CMD, &master());
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    rig.deliver(t(1), CMD, &bytes);
    assert_refused(&rig, Refusal::BadSignature);
    assert_eq!(rig.agent.stats().bad_signatures, 1);

    // The body altered under a valid signature: the same.
    let mut rig = Rig::new(keys());
    let mut bytes = signed(&start(1, 1, 1), CMD, &master());
    bytes[4] ^= 1;
    rig.deliver(t(1), CMD, &bytes);
    assert_refused(&rig, Refusal::BadSignature);
}

#[test]
fn signature_by_another_key_is_refused() {
    let mut rig = Rig::new(keys());
    rig.deliver(t(1), CMD, &signed(&start(1, 1, 1), CMD, &impostor()));
    assert_refused(&rig, Refusal::BadSignature);
}

#[test]
fn command_signed_for_another_agent_is_refused() {
    let mut rig = Rig::new(keys());
    rig.deliver(t(1), CMD, &signed(&start(1, 1, 1), OTHER_CMD, &master()));
    assert_refused(&rig, Refusal::BadSignature);
    // A heartbeat's signature does not make a command either.
    let mut rig = Rig::new(keys());
    rig.deliver(t(1), CMD, &signed(&start(1, 1, 1), HB, &master()));
    assert_refused(&rig, Refusal::BadSignature);
}

#[test]
fn unsigned_or_mac_only_command_is_unauthenticated() {
    let mut rig = Rig::new(keys());
    let mut buf = [0u8; wire::MAX_MESSAGE];
    rig.deliver(t(1), CMD, wire::encode(&start(1, 1, 1), &mut buf).unwrap());
    assert_refused(&rig, Refusal::Unauthenticated);
    assert_eq!(rig.agent.stats().unauthenticated, 1);

    // Even with the agent's own key: an agent's MAC never commands.
    let mut rig = Rig::new(keys());
    let bytes = wire::encode_mac(&start(1, 1, 1), CMD, &AGENT_KEY, &mut buf).unwrap();
    rig.deliver(t(1), CMD, bytes);
    assert_refused(&rig, Refusal::Unauthenticated);
}

#[test]
fn replayed_command_is_refused() {
    let mut rig = Rig::new(keys());
    let first = signed(&start(1, 5, 1), CMD, &master());
    rig.deliver(t(1), CMD, &first);
    // A Kill captured on the wire and published again.
    let kill = Message::Command(Command {
        epoch: 1,
        counter: 6,
        journal: JOURNAL,
        body: CommandBody::Kill {
            task: spec(1, OnDisconnect::Kill).task,
        },
    });
    let kill = signed(&kill, CMD, &master());
    rig.agent
        .handle_process_started(t(2), spec(1, OnDisconnect::Kill).task, 42);
    rig.drain(t(2));
    rig.deliver(t(3), CMD, &kill);
    let terminating = |rig: &Rig| {
        rig.events()
            .iter()
            .filter(|k| matches!(k, EventKind::Terminating { .. }))
            .count()
    };
    assert_eq!(terminating(&rig), 1);
    rig.deliver(t(4), CMD, &kill);
    rig.deliver(t(4), CMD, &first);
    assert_eq!(terminating(&rig), 1, "the replayed kill did nothing");
    assert_eq!(rig.agent.stats().replayed, 2);
    assert_eq!(
        rig.agent.stats().duplicate_starts,
        0,
        "refused before the start logic"
    );
    assert_eq!(
        rig.bad_reports(),
        vec![(ReceiveError::Refused(Refusal::Replayed), 1)]
    );
}

#[test]
fn command_from_an_older_epoch_is_refused() {
    let mut rig = Rig::new(keys());
    rig.deliver(t(1), CMD, &signed(&start(2, 1, 1), CMD, &master()));
    assert!(rig.spawned());
    rig.actions.clear();
    // Signed by the master all right, but in its previous life.
    rig.deliver(t(2), CMD, &signed(&start(1, 100, 2), CMD, &master()));
    assert!(!rig.spawned());
    assert_eq!(rig.agent.stats().replayed, 1);
    assert_eq!(rig.accepted(), 1);
}

#[test]
fn reordered_redelivery_within_the_window_is_accepted_once() {
    let mut rig = Rig::new(keys());
    rig.deliver(t(1), CMD, &signed(&start(1, 10, 2), CMD, &master()));
    rig.deliver(t(1), CMD, &signed(&start(1, 9, 1), CMD, &master()));
    assert_eq!(rig.accepted(), 2);
    rig.deliver(t(1), CMD, &signed(&start(1, 9, 1), CMD, &master()));
    assert_eq!(rig.agent.stats().replayed, 1);
}

#[test]
fn flood_of_junk_is_coalesced_into_one_report_per_period() {
    let mut rig = Rig::new(keys());
    let junk = signed(&start(1, 1, 1), CMD, &impostor());
    for i in 0..500 {
        rig.deliver(t(1 + i), CMD, &junk);
    }
    assert_eq!(rig.agent.stats().bad_commands, 500);
    assert_eq!(rig.bad_reports().len(), 1);
    // The rest goes with the next heartbeat, as one event.
    let next = rig.agent.poll_timeout().unwrap();
    rig.agent.handle_timeout(next);
    rig.drain(next);
    assert_eq!(
        rig.bad_reports(),
        vec![
            (ReceiveError::Refused(Refusal::BadSignature), 1),
            (ReceiveError::Refused(Refusal::BadSignature), 499)
        ]
    );
}

#[test]
fn replayed_master_heartbeat_is_not_contact() {
    let mut rig = Rig::new(keys());
    rig.deliver(t(0), HB, &heartbeat(1, 1));
    let task = spec(1, OnDisconnect::Kill);
    rig.deliver(t(0), CMD, &signed(&start(1, 2, 1), CMD, &master()));
    rig.agent.handle_process_started(t(0), task.task, 7);
    rig.drain(t(0));
    let captured = heartbeat(1, 3);
    rig.deliver(t(1_000), HB, &captured);
    assert_eq!(rig.agent.last_contact(), t(1_000));
    // The master falls silent; an attacker replays the captured heartbeat and an older one.
    for at in [2_000, 2_500, 3_000, 3_500] {
        rig.deliver(t(at), HB, &captured);
        rig.deliver(t(at), HB, &heartbeat(1, 1));
    }
    assert_eq!(
        rig.agent.last_contact(),
        t(1_000),
        "replays are not contact"
    );
    assert_eq!(rig.agent.stats().replayed, 8);
    // A forged heartbeat is not contact either.
    let forged = signed(
        &Message::MasterHeartbeat(MasterHeartbeat {
            epoch: 1,
            counter: 99,
            period_ms: 1_000,
        }),
        HB,
        &impostor(),
    );
    rig.deliver(t(3_600), HB, &forged);
    assert_eq!(rig.agent.stats().bad_signatures, 1);
    // So the kill-policy task is terminated 3 s after the last real contact.
    while let Some(next) = rig.agent.poll_timeout().filter(|n| *n <= t(4_000)) {
        rig.agent.handle_timeout(next);
        rig.drain(next);
    }
    assert!(rig.events().contains(&EventKind::Terminating {
        task: task.task,
        cause: KillCause::MasterLost
    }));
}

#[test]
fn signed_command_runs_after_agent_restart_and_replays_stay_refused() {
    let mut rig = Rig::new(keys());
    let old = signed(&start(1, 7, 1), CMD, &master());
    rig.deliver(t(1), CMD, &old);
    let mut after = rig.restart(t(10));
    assert_eq!(after.agent.master_counter(), (1, 7));
    after.actions.clear();
    after.deliver(t(11), CMD, &old);
    // Below the high-water mark after a restart: refused (not just deduplicated).
    assert_eq!(after.agent.stats().replayed, 1);
    after.deliver(t(12), CMD, &signed(&start(1, 8, 2), CMD, &master()));
    assert!(
        after.spawned(),
        "a fresh command still runs: {:?}",
        after.actions
    );
    // Compaction keeps the mark.
    let mut snapshot = Vec::new();
    after.agent.snapshot(|r| snapshot.push(r.clone()));
    assert!(snapshot.contains(&JournalRecord::MasterCounter {
        epoch: 1,
        counter: 8
    }));
}

#[test]
fn signed_command_runs_after_master_restart() {
    let mut rig = Rig::new(keys());
    rig.deliver(t(1), CMD, &signed(&start(1, 500, 1), CMD, &master()));
    // The master restarted: a new epoch, its counter from 1.
    rig.deliver(t(2), HB, &heartbeat(2, 1));
    assert_eq!(rig.agent.last_contact(), t(2));
    rig.deliver(t(3), CMD, &signed(&start(2, 2, 2), CMD, &master()));
    assert_eq!(rig.accepted(), 2);
    assert_eq!(rig.agent.master_counter(), (2, 2));
}

#[test]
fn any_configured_master_key_is_accepted() {
    let auth = Auth::Keys {
        master: MasterKeys::from_keys(&[impostor().public_key(), master().public_key()]).unwrap(),
        agent: AGENT_KEY,
    };
    let mut rig = Rig::new(auth);
    rig.deliver(t(1), CMD, &signed(&start(1, 1, 1), CMD, &master()));
    rig.deliver(t(1), CMD, &signed(&start(1, 2, 2), CMD, &impostor()));
    assert_eq!(rig.accepted(), 2);
    assert_eq!(
        MasterKeys::from_keys(
            &[[1; 32], [2; 32], [3; 32], [4; 32], [5; 32]]
                .map(|s| { SigningKey::from_seed(s).unwrap().public_key() })
        ),
        Err(auth::KeyError::TooMany)
    );
}

#[test]
fn master_presence_must_be_signed() {
    let mut rig = Rig::new(keys());
    let online = Presence {
        state: State::Online,
        incarnation: 5,
    };
    rig.deliver(t(1), MASTER_PRESENCE, online.render().as_bytes());
    let forged = online.render_signed(MASTER_PRESENCE, Signer::Master(&impostor()));
    rig.deliver(t(1), MASTER_PRESENCE, forged.as_bytes());
    assert_eq!(rig.agent.master_presence(), None);
    assert_eq!(rig.agent.stats().unauthenticated, 1);
    assert_eq!(rig.agent.stats().bad_signatures, 1);
    let real = online.render_signed(MASTER_PRESENCE, Signer::Master(&master()));
    assert!(real.starts_with("online 00000005 "), "{real}");
    rig.deliver(t(1), MASTER_PRESENCE, real.as_bytes());
    assert_eq!(rig.agent.master_presence(), Some(online));
}

#[test]
fn what_the_agent_publishes_carries_its_mac() {
    let mut rig = Rig::new(keys());
    rig.deliver(t(1), CMD, &signed(&start(1, 1, 1), CMD, &master()));
    let key = AGENT_KEY;
    let other = [10u8; 32];
    let mut heartbeats = 0;
    for action in &rig.actions {
        let Action::Publish { topic, payload, .. } = action else {
            continue;
        };
        if topic.ends_with("/heartbeat") {
            heartbeats += 1;
            assert!(wire::decode_verified(payload, topic, Verifier::Agent(&key)).is_ok());
            assert_eq!(
                wire::decode_verified(payload, topic, Verifier::Agent(&other)),
                Err(ReceiveError::Refused(Refusal::BadSignature))
            );
        } else {
            assert!(Presence::parse_verified(payload, topic, Verifier::Agent(&key)).is_ok());
            assert_eq!(
                Presence::parse_verified(payload, topic, Verifier::Agent(&other)),
                Err(ReceiveError::Refused(Refusal::BadSignature))
            );
        }
    }
    assert_eq!(heartbeats, 1);
    let (topic, will) = rig.agent.will();
    let will = Presence::parse_verified(will.as_bytes(), topic, Verifier::Agent(&key)).unwrap();
    assert_eq!(will.state, State::Lost);
    // Events, as the runtime sends them.
    let event = rig
        .journal
        .iter()
        .find_map(|r| match r {
            JournalRecord::Event(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let bytes = rig.agent.encode_event(&event, &mut buf).unwrap();
    let topic = rig.agent.event_topic();
    assert_eq!(
        wire::decode_verified(bytes, topic, Verifier::Agent(&key)),
        Ok(Message::Event(Report {
            journal: JOURNAL,
            event
        }))
    );
    // Bound to its topic: the same bytes do not verify as another agent's event.
    assert_eq!(
        wire::decode_verified(bytes, "tether/agent/pi-2/event", Verifier::Agent(&key)),
        Err(ReceiveError::Refused(Refusal::BadSignature))
    );
}

#[test]
fn insecure_agent_takes_plain_commands_and_publishes_plain() {
    let mut rig = Rig::new(Auth::Insecure);
    let mut buf = [0u8; wire::MAX_MESSAGE];
    rig.deliver(t(1), CMD, wire::encode(&start(1, 1, 1), &mut buf).unwrap());
    assert!(rig.spawned());
    let presence = rig.actions.iter().find_map(|a| match a {
        Action::Publish {
            payload,
            retain: true,
            ..
        } => Some(payload.clone()),
        _ => None,
    });
    assert_eq!(presence.unwrap().as_slice(), b"online 0000abcd");
    // Still no replays.
    rig.deliver(t(2), CMD, wire::encode(&start(1, 1, 1), &mut buf).unwrap());
    assert_eq!(rig.agent.stats().replayed, 1);
}

/// The agent heartbeats published so far, decoded.
fn published_heartbeats(rig: &Rig) -> Vec<AgentHeartbeat> {
    rig.actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish { topic, payload, .. } if topic.ends_with("/heartbeat") => {
                match wire::decode(payload) {
                    Ok(Message::AgentHeartbeat(hb)) => Some(hb),
                    other => panic!("on {topic}: {other:?}"),
                }
            }
            _ => None,
        })
        .collect()
}

#[test]
fn heartbeats_count_up_and_echo_the_masters_newest() {
    let mut rig = Rig::new(keys());
    // Connected, before any master heartbeat: nothing to echo.
    let first = published_heartbeats(&rig);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].counter, first[0].echo), (1, None));
    // The first master heartbeat of a connection is answered at once, echoing it, although
    // the agent's own is not due for a period.
    rig.deliver(t(10), HB, &heartbeat(1, 5));
    let hbs = published_heartbeats(&rig);
    assert_eq!(hbs.len(), 2);
    assert_eq!(hbs[1].counter, 2);
    assert_eq!(
        hbs[1].echo,
        Some(Echo {
            epoch: 1,
            counter: 5
        })
    );
    // Later ones are answered on the agent's own schedule, with the newest echo.
    rig.deliver(t(20), HB, &heartbeat(1, 6));
    assert_eq!(published_heartbeats(&rig).len(), 2);
    rig.agent.handle_timeout(t(1_050));
    rig.drain(t(1_050));
    let hbs = published_heartbeats(&rig);
    assert_eq!(hbs.len(), 3);
    assert_eq!(
        (hbs[2].counter, hbs[2].echo.map(|e| e.counter)),
        (3, Some(6))
    );
    // A restarted master (new epoch) is answered at once again.
    rig.deliver(t(1_100), HB, &heartbeat(2, 1));
    let hbs = published_heartbeats(&rig);
    assert_eq!(hbs.len(), 4);
    assert_eq!(
        hbs[3].echo,
        Some(Echo {
            epoch: 2,
            counter: 1
        })
    );
    // A replayed master heartbeat is not contact, so it is not echoed either.
    rig.deliver(t(1_200), HB, &heartbeat(1, 6));
    rig.agent.handle_timeout(t(2_200));
    rig.drain(t(2_200));
    let hbs = published_heartbeats(&rig);
    assert_eq!(hbs.last().unwrap().echo.map(|e| e.epoch), Some(2));
}
