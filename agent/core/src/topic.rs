//! Topic names, built and parsed. One subtree per agent and one for the master, under a
//! configurable prefix (default `tether`):
//!
//! ```text
//! {prefix}/agent/{id}/cmd         master -> agent   commands (QoS 1)
//! {prefix}/agent/{id}/event       agent -> master   journaled events (QoS 1)
//! {prefix}/agent/{id}/heartbeat   agent -> master   heartbeats
//! {prefix}/agent/{id}/presence    agent, retained   "online <inc>" / will "offline <inc> lost"
//! {prefix}/master/heartbeat       master -> agents  heartbeats
//! {prefix}/master/presence        master, retained  presence and will
//! ```

use core::fmt::Write;

use heapless::String;

use crate::message::{AgentId, MAX_ID};

/// Longest prefix.
pub const MAX_PREFIX: usize = 32;
/// Longest topic this protocol builds.
pub const MAX_TOPIC: usize = MAX_PREFIX + MAX_ID + 24;
pub const DEFAULT_PREFIX: &str = "tether";

pub type TopicBuf = String<MAX_TOPIC>;

/// The MQTT delivery guarantee a publish or subscription asks for. Commands, events and
/// presence need QoS 1 (at least once; exactly-once is the protocol's own, by attempt ids and
/// sequence numbers); heartbeats are QoS 0, since a late heartbeat is worse than none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoS {
    AtMostOnce,
    AtLeastOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Empty, too long, or containing `+`, `#`, NUL or (in an id) `/`.
    InvalidPrefix,
    InvalidId,
    /// Not under the prefix, or not a topic this protocol uses.
    Foreign,
}

impl core::fmt::Display for TopicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::InvalidPrefix => {
                "topic prefix must be 1-32 bytes without '+', '#', NUL or a leading/trailing '/'"
            }
            Self::InvalidId => "agent id must be 1-32 bytes of [A-Za-z0-9._-]",
            Self::Foreign => "not a Tether topic",
        })
    }
}

impl core::error::Error for TopicError {}

/// What a topic is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    AgentCommand(AgentId),
    AgentEvent(AgentId),
    AgentHeartbeat(AgentId),
    AgentPresence(AgentId),
    MasterHeartbeat,
    MasterPresence,
}

pub fn validate_prefix(prefix: &str) -> Result<(), TopicError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && !prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.bytes().any(|b| matches!(b, b'+' | b'#' | 0));
    if ok {
        Ok(())
    } else {
        Err(TopicError::InvalidPrefix)
    }
}

/// The master's own MQTT client id and broker user name: no agent may take it.
pub const MASTER_CLIENT_ID: &str = "tether-master";

/// Agent ids are also MQTT client ids and file names: keep them to a safe alphabet.
pub fn validate_id(id: &str) -> Result<AgentId, TopicError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(TopicError::InvalidId);
    }
    AgentId::try_from(id).map_err(|_| TopicError::InvalidId)
}

impl Topic {
    /// The topic string under `prefix`.
    pub fn build(&self, prefix: &str) -> Result<TopicBuf, TopicError> {
        validate_prefix(prefix)?;
        let mut out = TopicBuf::new();
        let written = match self {
            Self::AgentCommand(id) => write!(out, "{prefix}/agent/{id}/cmd"),
            Self::AgentEvent(id) => write!(out, "{prefix}/agent/{id}/event"),
            Self::AgentHeartbeat(id) => write!(out, "{prefix}/agent/{id}/heartbeat"),
            Self::AgentPresence(id) => write!(out, "{prefix}/agent/{id}/presence"),
            Self::MasterHeartbeat => write!(out, "{prefix}/master/heartbeat"),
            Self::MasterPresence => write!(out, "{prefix}/master/presence"),
        };
        // Capacities make this unreachable for a valid prefix and id; still an error, not a panic.
        written.map_err(|_| TopicError::InvalidId)?;
        Ok(out)
    }

    pub fn parse(prefix: &str, topic: &str) -> Result<Self, TopicError> {
        validate_prefix(prefix)?;
        let rest = topic
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(TopicError::Foreign)?;
        let mut parts = rest.split('/');
        let parsed = match (parts.next(), parts.next(), parts.next()) {
            (Some("master"), Some("heartbeat"), None) => Self::MasterHeartbeat,
            (Some("master"), Some("presence"), None) => Self::MasterPresence,
            (Some("agent"), Some(id), Some(leaf)) => {
                let id = validate_id(id)?;
                match leaf {
                    "cmd" => Self::AgentCommand(id),
                    "event" => Self::AgentEvent(id),
                    "heartbeat" => Self::AgentHeartbeat(id),
                    "presence" => Self::AgentPresence(id),
                    _ => return Err(TopicError::Foreign),
                }
            }
            _ => return Err(TopicError::Foreign),
        };
        if parts.next().is_some() {
            return Err(TopicError::Foreign);
        }
        Ok(parsed)
    }
}

/// The subscription filter a master uses for one leaf of every agent (`{prefix}/agent/+/{leaf}`).
pub fn all_agents(prefix: &str, leaf: &str) -> Result<TopicBuf, TopicError> {
    validate_prefix(prefix)?;
    let mut out = TopicBuf::new();
    write!(out, "{prefix}/agent/+/{leaf}").map_err(|_| TopicError::InvalidPrefix)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AgentId {
        validate_id(s).unwrap()
    }

    #[test]
    fn build_and_parse_round_trip() {
        let all = [
            Topic::AgentCommand(id("pi-1")),
            Topic::AgentEvent(id("pi-1")),
            Topic::AgentHeartbeat(id("pi-1")),
            Topic::AgentPresence(id("pi-1")),
            Topic::MasterHeartbeat,
            Topic::MasterPresence,
        ];
        for t in all {
            for prefix in ["tether", "site/a"] {
                let s = t.build(prefix).unwrap();
                assert_eq!(Topic::parse(prefix, &s), Ok(t.clone()), "{s}");
            }
        }
        assert_eq!(
            Topic::AgentCommand(id("pi-1")).build("tether").unwrap(),
            "tether/agent/pi-1/cmd"
        );
    }

    #[test]
    fn rejects_foreign_and_invalid() {
        assert_eq!(
            Topic::parse("tether", "other/agent/a/cmd"),
            Err(TopicError::Foreign)
        );
        assert_eq!(
            Topic::parse("tether", "tether/agent/a/cmd/x"),
            Err(TopicError::Foreign)
        );
        assert_eq!(
            Topic::parse("tether", "tether/agent/a/nope"),
            Err(TopicError::Foreign)
        );
        assert_eq!(
            Topic::parse("tether", "tether/agent/a+b/cmd"),
            Err(TopicError::InvalidId)
        );
        assert_eq!(
            Topic::parse("tether", "tetherx/master/presence"),
            Err(TopicError::Foreign)
        );
        assert_eq!(validate_prefix("a/#"), Err(TopicError::InvalidPrefix));
        assert_eq!(validate_prefix("/a"), Err(TopicError::InvalidPrefix));
        assert_eq!(validate_id(&"x".repeat(33)), Err(TopicError::InvalidId));
        assert_eq!(validate_id(""), Err(TopicError::InvalidId));
        assert_eq!(
            all_agents("tether", "event").unwrap(),
            "tether/agent/+/event"
        );
    }
}
