//! What comes in on a subscribed topic: routed by topic, authenticated with the sending
//! agent's key before anything is parsed, and dropped and counted when it does not verify or
//! carries a number no store can hold ([`crate::limits`]).

use log::warn;
use tether_core::Instant;
use tether_core::auth::Verifier;
use tether_core::message::Message;
use tether_core::presence::Presence;
use tether_core::topic::Topic;
use tether_core::wire::{self, ReceiveError, Refusal};

use super::Master;
use crate::limits;

impl Master {
    /// A message on a subscribed topic. Anything malformed is counted and dropped.
    pub fn handle_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        self.advance(now);
        match Topic::parse(&self.config.prefix, topic) {
            Ok(Topic::AgentEvent(id)) => match self.decode_from(&id, topic, payload) {
                Ok(Message::Event(report)) => match limits::check_event(&report.event) {
                    Ok(()) => self.handle_event(now, &id, report),
                    Err(e) => self.bad(topic, &e.reason),
                },
                Ok(_) => self.bad(topic, "not an event"),
                Err(e) => self.unauthentic(&id, topic, e),
            },
            Ok(Topic::AgentHeartbeat(id)) => match self.decode_from(&id, topic, payload) {
                Ok(Message::AgentHeartbeat(hb)) => match limits::check_heartbeat(&hb) {
                    Ok(()) => self.handle_heartbeat(now, &id, &hb),
                    Err(e) => self.bad(topic, &e.reason),
                },
                Ok(_) => self.bad(topic, "not an agent heartbeat"),
                Err(e) => self.unauthentic(&id, topic, e),
            },
            // An empty retained payload clears the topic: nothing to learn.
            Ok(Topic::AgentPresence(_)) if payload.is_empty() => {}
            Ok(Topic::AgentPresence(id)) => {
                let parsed = self
                    .verifier(&id)
                    .and_then(|v| Presence::parse_verified(payload, topic, v));
                match parsed {
                    Ok(p) => self.handle_presence(now, &id, p),
                    Err(e) => self.unauthentic(&id, topic, e),
                }
            }
            _ => self.stats.foreign_messages += 1,
        }
        self.tick(now);
    }

    /// How to check what agent `id` publishes: its key; nothing if it has none and the master
    /// is configured to accept that; otherwise it is unknown.
    fn verifier(&self, id: &str) -> Result<Verifier<'_>, ReceiveError> {
        match self.agent_keys.get(id) {
            Some(key) => Ok(Verifier::Agent(key)),
            None if self.config.insecure_agents => Ok(Verifier::Insecure),
            None => Err(Refusal::UnknownAgent.into()),
        }
    }

    fn decode_from(&self, id: &str, topic: &str, payload: &[u8]) -> Result<Message, ReceiveError> {
        wire::decode_verified(payload, topic, self.verifier(id)?)
    }

    fn bad(&mut self, topic: &str, why: &str) {
        self.stats.bad_messages += 1;
        warn!("dropped a message on {topic}: {why}");
    }

    /// A message on agent `id`'s topic that did not authenticate (or did not parse): dropped,
    /// counted per provisioned agent and reason, logged at powers of two (a flood stays quiet).
    fn unauthentic(&mut self, id: &str, topic: &str, error: ReceiveError) {
        let count = match error {
            ReceiveError::Refused(Refusal::UnknownAgent) => {
                self.stats.unknown_agent += 1;
                self.stats.unknown_agent
            }
            ReceiveError::Refused(refusal @ (Refusal::Unauthenticated | Refusal::BadSignature)) => {
                let c = self.security.entry(id.to_owned()).or_default();
                let n = if refusal == Refusal::BadSignature {
                    c.bad_signature += 1;
                    c.bad_signature
                } else {
                    c.unauthenticated += 1;
                    c.unauthenticated
                };
                c.last_error = Some(error.to_string());
                n
            }
            _ => return self.bad(topic, &error.to_string()),
        };
        if count.is_power_of_two() {
            warn!("dropped a message on {topic} ({count} so far): {error}");
        }
    }
}
