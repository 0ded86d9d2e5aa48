//! The action queue: every publish is signed with the master's key and counted from the one
//! counter of its epoch; every change of the durable state is queued as a `Persist`. Nothing
//! here decides anything; the commit rule (module documentation of `core`) orders the queue.

use log::warn;
use tether_core::message::{Command, CommandBody, Message};
use tether_core::presence::{Presence, State};
use tether_core::topic::{Topic, validate_id};
use tether_core::wire::{self, Signer};

use super::{Action, Change, Master, Publish, Qos};

impl Master {
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The master's presence text for `state`, signed for its presence topic.
    pub fn presence(&self, state: State) -> String {
        let p = Presence {
            state,
            incarnation: self.config.epoch,
        };
        Topic::MasterPresence
            .build(&self.config.prefix)
            .map(|topic| {
                p.render_signed(&topic, Signer::Master(&self.config.signing_key))
                    .as_str()
                    .to_owned()
            })
            .unwrap_or_default()
    }

    /// A command to `agent`, with the next counter value.
    pub(super) fn command(&mut self, agent: &str, body: CommandBody) {
        let Ok(id) = validate_id(agent) else {
            return;
        };
        let Ok(topic) = Topic::AgentCommand(id).build(&self.config.prefix) else {
            return;
        };
        self.counter += 1;
        let journal = self.agents.get(agent).and_then(|a| a.journal).unwrap_or(0);
        let msg = Message::Command(Command {
            epoch: self.config.epoch,
            counter: self.counter,
            journal,
            body,
        });
        self.publish(topic.as_str(), &msg, Qos::AtLeastOnce, false);
    }

    /// Signs and queues a message; nothing while disconnected (it would be stale by the time
    /// it could go out, and what must be repeated is repeated after the reconnect).
    pub(super) fn publish(&mut self, topic: &str, msg: &Message, qos: Qos, retain: bool) {
        if !self.connected {
            return;
        }
        let mut buf = [0u8; wire::MAX_MESSAGE];
        let signer = Signer::Master(&self.config.signing_key);
        match wire::encode_for(msg, topic, signer, &mut buf) {
            Ok(bytes) => self.actions.push_back(Action::Publish(Publish {
                topic: topic.to_owned(),
                payload: bytes.to_vec(),
                qos,
                retain,
            })),
            Err(e) => warn!("cannot encode a message for {topic}: {e:?}"),
        }
    }

    /// Queues the master's (already signed) presence text, retained.
    pub(super) fn publish_presence(&mut self, text: &[u8]) {
        if let Ok(topic) = Topic::MasterPresence.build(&self.config.prefix) {
            self.publish_retained(topic.as_str(), text);
        }
    }

    /// Writes `offline <incarnation> lost` on agent `id`'s retained presence, tagged with that
    /// agent's key as its own will is. A broker may keep a silent agent's session open (rumqttd
    /// enforces the keepalive only while nothing at all crosses the link, and the master's
    /// heartbeats keep crossing it), so the will reaches the topic only when the link returns:
    /// without this, every reader of presence saw a dead board as online. An agent that is in
    /// fact alive reads this on its own presence topic and says again that it is online.
    pub(super) fn publish_lost_verdict(&mut self, id: &str, incarnation: u32) {
        if !self.connected {
            return;
        }
        let Ok(agent) = validate_id(id) else { return };
        let Ok(topic) = Topic::AgentPresence(agent).build(&self.config.prefix) else {
            return;
        };
        let signer = match self.agent_keys.get(id) {
            Some(key) => Signer::Agent(key),
            None if self.config.insecure_agents => Signer::Insecure,
            None => return,
        };
        let verdict = Presence {
            state: State::Lost,
            incarnation,
        }
        .render_signed(topic.as_str(), signer);
        self.publish_retained(topic.as_str(), verdict.as_bytes());
    }

    fn publish_retained(&mut self, topic: &str, payload: &[u8]) {
        self.actions.push_back(Action::Publish(Publish {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos: Qos::AtLeastOnce,
            retain: true,
        }));
    }

    pub(super) fn persist(&mut self, change: Change) {
        self.actions.push_back(Action::Persist(change));
    }
}
