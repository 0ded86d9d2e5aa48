//! MQTT 3.1.1 control packets as the simulation exchanges them (already parsed: the sim tests
//! behaviour, not the codec), and the topic rules a broker applies.

use std::fmt;
use std::sync::Arc;

/// QoS 2 is not modelled: Tether uses 0 and 1 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce,
    AtLeastOnce,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: Arc<str>,
    pub payload: Arc<[u8]>,
    pub qos: QoS,
    pub retain: bool,
}

impl Will {
    pub fn new(
        topic: impl Into<Arc<str>>,
        payload: impl Into<Arc<[u8]>>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub client_id: String,
    pub clean_session: bool,
    /// Seconds, as on the wire. 0 is refused by rumqttd (and so by the model).
    pub keepalive_s: u16,
    pub will: Option<Will>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: Arc<str>,
    pub payload: Arc<[u8]>,
    pub qos: QoS,
    pub retain: bool,
    /// Set on a QoS 1 redelivery.
    pub dup: bool,
    /// 0 for QoS 0.
    pub pkid: u16,
}

impl Publish {
    pub fn new(
        topic: impl Into<Arc<str>>,
        payload: impl Into<Arc<[u8]>>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            dup: false,
            pkid: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    Accepted,
    IdentifierRejected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck {
        session_present: bool,
        code: ConnectCode,
    },
    Publish(Publish),
    PubAck {
        pkid: u16,
    },
    Subscribe {
        pkid: u16,
        filters: Vec<(String, QoS)>,
    },
    /// One entry per filter; `None` is the 0x80 failure return code.
    SubAck {
        pkid: u16,
        granted: Vec<Option<QoS>>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    UnsubAck {
        pkid: u16,
    },
    PingReq,
    PingResp,
    Disconnect,
}

impl fmt::Display for QoS {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AtMostOnce => "q0",
            Self::AtLeastOnce => "q1",
        })
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PUBLISH {} {}", self.topic, self.qos)?;
        if self.qos == QoS::AtLeastOnce {
            write!(f, " #{}", self.pkid)?;
        }
        if self.retain {
            f.write_str(" retain")?;
        }
        if self.dup {
            f.write_str(" dup")?;
        }
        match std::str::from_utf8(&self.payload) {
            Ok(text) if text.len() <= 40 && !text.contains(char::is_control) => {
                write!(f, " {text:?}")
            }
            _ => write!(f, " ({} B)", self.payload.len()),
        }
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(c) => write!(
                f,
                "CONNECT {} clean={} ka={}s will={}",
                c.client_id,
                c.clean_session,
                c.keepalive_s,
                c.will.as_ref().map_or("-", |w| &w.topic)
            ),
            Self::ConnAck {
                session_present,
                code,
            } => write!(f, "CONNACK {code:?} session_present={session_present}"),
            Self::Publish(p) => p.fmt(f),
            Self::PubAck { pkid } => write!(f, "PUBACK #{pkid}"),
            Self::Subscribe { pkid, filters } => write!(f, "SUBSCRIBE #{pkid} {filters:?}"),
            Self::SubAck { pkid, granted } => write!(f, "SUBACK #{pkid} {granted:?}"),
            Self::Unsubscribe { pkid, filters } => write!(f, "UNSUBSCRIBE #{pkid} {filters:?}"),
            Self::UnsubAck { pkid } => write!(f, "UNSUBACK #{pkid}"),
            Self::PingReq => f.write_str("PINGREQ"),
            Self::PingResp => f.write_str("PINGRESP"),
            Self::Disconnect => f.write_str("DISCONNECT"),
        }
    }
}

/// A topic name a client may publish to: not empty, no wildcard, no NUL.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// A subscription filter: `+` only as a whole level, `#` only as the whole last level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether `filter` matches `topic` (MQTT 3.1.1 section 4.7): `a/#` also matches `a`, and a
/// filter starting with a wildcard never matches a `$` topic.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        let yes = [
            ("a/b/c", "a/b/c"),
            ("a/+/c", "a/b/c"),
            ("a/+/c", "a//c"),
            ("+/+/+", "a/b/c"),
            ("a/#", "a"),
            ("a/#", "a/b"),
            ("a/#", "a/b/c/d"),
            ("#", "a/b"),
            ("#", "/"),
            ("+", ""),
            ("/+", "/a"),
            ("tether/agent/+/event", "tether/agent/pi-1/event"),
            ("$SYS/#", "$SYS/uptime"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f} should match {t}");
        }
        let no = [
            ("a/b/c", "a/b"),
            ("a/b", "a/b/c"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("+/+", "a"),
            ("a/#", "b"),
            ("a/b/#", "a/c"),
            ("+", "/a"),
            ("#", "$SYS/uptime"),
            ("+/uptime", "$SYS/uptime"),
            ("tether/agent/+/event", "tether/agent/pi-1/cmd"),
        ];
        for (f, t) in no {
            assert!(!matches(f, t), "{f} should not match {t}");
        }
    }

    #[test]
    fn filter_and_topic_validation() {
        for f in ["a", "a/+/b", "#", "a/#", "+", "+/+", "/", "a//b"] {
            assert!(valid_filter(f), "{f}");
        }
        for f in ["", "a#", "a/#/b", "a+/b", "a/b+", "##", "a\0"] {
            assert!(!valid_filter(f), "{f}");
        }
        assert!(valid_topic("a/b"));
        assert!(valid_topic("/"));
        for t in ["", "a/+", "a/#", "+", "a\0b"] {
            assert!(!valid_topic(t), "{t}");
        }
    }
}
