//! Agents played by the core tests: presence, heartbeats and events encoded with the real
//! wire format and MAC'd with each agent's key, on the [`crate::rig::Rig`], and the requests
//! those tests make.

use tether_core::Duration;
use tether_core::auth::{AgentKey, SigningKey};
use tether_core::message::{
    AgentHeartbeat, Command, CommandBody, Event, EventKind, Exit, Message, Report, TaskRef,
};
use tether_core::policy::OnDisconnect;
use tether_core::presence::{Presence, State};
use tether_core::wire::{self, Signer};
use tether_master::core::{ClusterRequest, Config, PolicyOverrides, Submit};
use tether_master::model::{Agent, Attempt, ClusterMode, Profile, TaskState};
use tether_master::store::Store;

use crate::published;
use crate::rig::Rig;

pub(crate) const P: &str = "tether";

/// A master with these tests' configuration: epoch 0xabcd, heartbeats every 10 s.
pub(crate) fn rig() -> Rig {
    rig_with(|_| {})
}

pub(crate) fn rig_with(f: impl FnOnce(&mut Config)) -> Rig {
    Rig::start(
        |_| {
            let mut config = Config::new(P, 0xabcd, master_key());
            config.heartbeat_period = Duration::from_secs(10);
            f(&mut config);
            config
        },
        |_| {},
    )
}

impl Rig {
    /// The agent's key, provisioned in the core on first use (as `tetherctl provision` does).
    pub(crate) fn key(&mut self, agent: &str) -> AgentKey {
        let key = agent_key(agent);
        if self.m.agent_key(agent) != Some(&key) {
            self.m.set_agent_key(self.now, agent, key).unwrap();
            self.drain();
        }
        key
    }

    /// `msg` as `agent` publishes it on its `leaf` topic: MAC'd with its key.
    pub(crate) fn mac(&mut self, agent: &str, leaf: &str, msg: &Message) -> Vec<u8> {
        let key = self.key(agent);
        let mut buf = [0u8; wire::MAX_MESSAGE];
        wire::encode_mac(msg, &format!("{P}/agent/{agent}/{leaf}"), &key, &mut buf)
            .unwrap()
            .to_vec()
    }

    pub(crate) fn presence(&mut self, agent: &str, state: State, inc: u32) {
        let key = self.key(agent);
        let topic = format!("{P}/agent/{agent}/presence");
        let text = Presence {
            state,
            incarnation: inc,
        }
        .render_signed(&topic, Signer::Agent(&key));
        self.deliver(&topic, text.as_bytes());
    }

    pub(crate) fn heartbeat(&mut self, agent: &str, inc: u32, last_seq: u64, tasks: &[TaskRef]) {
        self.heartbeats += 1;
        let hb = Message::AgentHeartbeat(AgentHeartbeat {
            incarnation: inc,
            journal: self.journal,
            counter: self.heartbeats,
            echo: published::echo(&self.out, P),
            last_seq,
            tasks: heapless::Vec::from_slice(tasks).unwrap(),
            more_tasks: false,
            journal_bytes: 0,
        });
        let bytes = self.mac(agent, "heartbeat", &hb);
        self.deliver(&format!("{P}/agent/{agent}/heartbeat"), &bytes);
    }

    pub(crate) fn event(&mut self, agent: &str, seq: u64, kind: EventKind) {
        let ev = Message::Event(Report {
            journal: self.journal,
            event: Event {
                seq,
                at_unix_ms: 1_700_000_000_000,
                kind,
            },
        });
        let bytes = self.mac(agent, "event", &ev);
        self.deliver(&format!("{P}/agent/{agent}/event"), &bytes);
    }

    /// An agent that announced itself and heartbeats with nothing to report.
    pub(crate) fn online(&mut self, agent: &str, inc: u32) {
        self.presence(agent, State::Online, inc);
        self.heartbeat(agent, inc, 0, &[]);
    }

    pub(crate) fn submit(&mut self, s: Submit) -> u64 {
        let id = self.m.submit(self.now, s).unwrap();
        self.drain();
        id
    }

    /// Commands published to `agent` since `from` (an index into `out`).
    pub(crate) fn commands(&self, agent: &str, from: usize) -> Vec<CommandBody> {
        let topic = format!("{P}/agent/{agent}/cmd");
        self.out[from..]
            .iter()
            .filter(|p| p.topic == topic)
            .map(|p| match wire::decode(&p.payload).unwrap() {
                Message::Command(Command { body, .. }) => body,
                other => panic!("not a command: {other:?}"),
            })
            .collect()
    }

    pub(crate) fn starts(&self, agent: &str, from: usize) -> Vec<TaskRef> {
        self.commands(agent, from)
            .into_iter()
            .filter_map(|c| match c {
                CommandBody::Start(spec) => Some(spec.task),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn acks(&self, agent: &str, from: usize) -> Vec<u64> {
        self.commands(agent, from)
            .into_iter()
            .filter_map(|c| match c {
                CommandBody::Ack { up_to } => Some(up_to),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn kills(&self, agent: &str, from: usize) -> Vec<TaskRef> {
        self.commands(agent, from)
            .into_iter()
            .filter_map(|c| match c {
                CommandBody::Kill { task } => Some(task),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn task_state(&self, id: u64) -> TaskState {
        self.store.task(id).unwrap().unwrap().state
    }

    pub(crate) fn stored_agent(&self, id: &str) -> Agent {
        let agents = self.store.agents().unwrap();
        agents.into_iter().find(|a| a.id == id).unwrap()
    }

    pub(crate) fn stored_attempt(&self, t: TaskRef) -> Attempt {
        let attempts = self.store.attempts(t.task).unwrap();
        attempts.into_iter().find(|a| a.id == t.attempt).unwrap()
    }

    pub(crate) fn stored_profile(&self, name: &str) -> Profile {
        let profiles = self.store.profiles().unwrap();
        profiles.into_iter().find(|p| p.name == name).unwrap()
    }

    /// Plays an agent accepting and starting `task` with events `seq`, `seq + 1`.
    pub(crate) fn accept_and_start(&mut self, agent: &str, seq: u64, task: TaskRef) {
        self.event(agent, seq, EventKind::Accepted { task });
        self.event(agent, seq + 1, EventKind::Started { task, pid: 42 });
    }

    pub(crate) fn finish(&mut self, agent: &str, seq: u64, task: TaskRef, exit: Exit) {
        self.event(
            agent,
            seq,
            EventKind::Finished {
                task,
                exit,
                cause: None,
                output_dropped: 0,
            },
        );
    }
}

pub(crate) fn master_key() -> SigningKey {
    SigningKey::from_seed([3; 32]).unwrap()
}

/// A distinct key per agent name.
pub(crate) fn agent_key(agent: &str) -> AgentKey {
    let mut key = [0x5a; 32];
    for (k, b) in key.iter_mut().zip(agent.bytes()) {
        *k ^= b;
    }
    key
}

pub(crate) fn to_agent(agent: &str, argv: &[&str]) -> Submit {
    Submit {
        agent: Some(agent.into()),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Submit::default()
    }
}

pub(crate) fn to_cluster(cluster: &str) -> Submit {
    Submit {
        cluster: Some(cluster.into()),
        argv: vec!["true".into()],
        ..Submit::default()
    }
}

pub(crate) fn short(on_disconnect: OnDisconnect) -> PolicyOverrides {
    PolicyOverrides {
        on_disconnect: Some(on_disconnect),
        heartbeat_period_ms: Some(1_000),
        heartbeat_timeout_ms: Some(3_000),
        ..PolicyOverrides::default()
    }
}

pub(crate) fn cluster(h: &mut Rig, name: &str, mode: ClusterMode, members: &[&str]) {
    h.m.put_cluster(
        h.now,
        ClusterRequest {
            name: name.into(),
            mode,
            members: members.iter().map(|s| s.to_string()).collect(),
        },
    )
    .unwrap();
    h.drain();
}
