//! Presence payloads: retained, readable in `mosquitto_sub`, and also each owner's last will.
//!
//! `online <incarnation>`, `offline <incarnation> lost` (the will), or
//! `offline <incarnation> stopped` (a normal stop, which is not a failure). The incarnation
//! (8 hex digits, new at every process start) lets a reader ignore a stale will from an earlier
//! connection.

use core::fmt::Write;

use heapless::String;

pub const MAX_PRESENCE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Online,
    /// The will: the connection dropped without a goodbye.
    Lost,
    /// A normal stop: drained, not a failure.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    pub state: State,
    pub incarnation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceError;

impl core::fmt::Display for PresenceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("presence must read 'online <hex>' or 'offline <hex> lost|stopped'")
    }
}

impl core::error::Error for PresenceError {}

impl Presence {
    pub fn render(&self) -> String<MAX_PRESENCE> {
        let mut s = String::new();
        let inc = self.incarnation;
        // 8 hex digits and a few words always fit MAX_PRESENCE.
        let _ = match self.state {
            State::Online => write!(s, "online {inc:08x}"),
            State::Lost => write!(s, "offline {inc:08x} lost"),
            State::Stopped => write!(s, "offline {inc:08x} stopped"),
        };
        s
    }

    pub fn parse(payload: &[u8]) -> Result<Self, PresenceError> {
        let text = core::str::from_utf8(payload).map_err(|_| PresenceError)?;
        let mut words = text.split(' ');
        let word = words.next();
        let inc = words
            .next()
            .filter(|w| w.len() == 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .ok_or(PresenceError)?;
        let state = match (word, words.next()) {
            (Some("online"), None) => State::Online,
            (Some("offline"), Some("lost")) => State::Lost,
            (Some("offline"), Some("stopped")) => State::Stopped,
            _ => return Err(PresenceError),
        };
        if words.next().is_some() {
            return Err(PresenceError);
        }
        Ok(Self {
            state,
            incarnation: inc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_readable() {
        for state in [State::Online, State::Lost, State::Stopped] {
            let p = Presence {
                state,
                incarnation: 0x00ab_cdef,
            };
            assert_eq!(Presence::parse(p.render().as_bytes()), Ok(p));
        }
        let p = Presence {
            state: State::Lost,
            incarnation: 0x1234_abcd,
        };
        assert_eq!(p.render(), "offline 1234abcd lost");
    }

    #[test]
    fn rejects_junk() {
        for junk in [
            "",
            "online",
            "online 12",
            "online 1234abcd x",
            "offline 1234abcd",
            "\u{ff}",
        ] {
            assert_eq!(
                Presence::parse(junk.as_bytes()),
                Err(PresenceError),
                "{junk:?}"
            );
        }
    }
}
