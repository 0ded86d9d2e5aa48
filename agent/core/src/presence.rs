//! Presence payloads: retained, readable in `mosquitto_sub`, and also each owner's last will.
//!
//! `online <incarnation>`, `offline <incarnation> lost` (the will), or
//! `offline <incarnation> stopped` (a normal stop, which is not a failure). The incarnation
//! (8 hex digits, new at every process start) lets a reader ignore a stale will from an earlier
//! connection.
//!
//! Authenticated presence appends a hex tag over the topic and the text before it: an agent's
//! MAC (32 digits) or the master's signature (128 digits), e.g. `online 1a2b3c4d 9f0e...`. The
//! text stays readable; [`Presence::parse`] reads it with or without a tag (tools), while
//! receivers use [`Presence::parse_verified`].

use core::fmt::Write;

use heapless::String;

use crate::auth::{self, MAC_LEN, SIGNATURE_LEN, Verifier, parse_hex, write_hex};
use crate::wire::{DecodeError, ReceiveError, Refusal, Signer};

/// Longest presence payload: the longest text, a space and a signature in hex.
pub const MAX_PRESENCE: usize = 32 + 1 + 2 * SIGNATURE_LEN;

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

    /// Renders the text with the tag `signer` makes over `topic` and the text.
    pub fn render_signed(&self, topic: &str, signer: Signer<'_>) -> String<MAX_PRESENCE> {
        let mut s = self.render();
        let text = s.clone();
        // The text and a tag of at most 128 digits always fit MAX_PRESENCE.
        let _ = match signer {
            Signer::Master(key) => s
                .push(' ')
                .map_err(|_| core::fmt::Error)
                .and_then(|()| write_hex(&mut s, &key.sign(topic, text.as_bytes()))),
            Signer::Agent(key) => s
                .push(' ')
                .map_err(|_| core::fmt::Error)
                .and_then(|()| write_hex(&mut s, &auth::mac(key, topic, text.as_bytes()))),
            Signer::Insecure => Ok(()),
        };
        s
    }

    /// Parses a presence published on `topic` and checks its tag: no tag is
    /// `Unauthenticated`, a tag that does not verify `BadSignature`, bad text `Malformed`.
    pub fn parse_verified(
        payload: &[u8],
        topic: &str,
        verifier: Verifier<'_>,
    ) -> Result<Self, ReceiveError> {
        let text = core::str::from_utf8(payload).map_err(|_| DecodeError::Malformed)?;
        let (head, tag) = split_tag(text);
        let presence = Self::parse_text(head).map_err(|_| DecodeError::Malformed)?;
        let authentic = match (verifier, tag) {
            (Verifier::Insecure, _) => true,
            (Verifier::Master(keys), Some(tag)) if tag.len() == 2 * SIGNATURE_LEN => {
                parse_hex::<SIGNATURE_LEN>(tag)
                    .is_ok_and(|sig| keys.verify(topic, head.as_bytes(), &sig))
            }
            (Verifier::Agent(key), Some(tag)) if tag.len() == 2 * MAC_LEN => {
                parse_hex::<MAC_LEN>(tag)
                    .is_ok_and(|mac| auth::mac_matches(key, topic, head.as_bytes(), &mac))
            }
            _ => return Err(Refusal::Unauthenticated.into()),
        };
        if authentic {
            Ok(presence)
        } else {
            Err(Refusal::BadSignature.into())
        }
    }

    /// Reads a presence, tagged or not, without checking the tag (tools, displays).
    pub fn parse(payload: &[u8]) -> Result<Self, PresenceError> {
        let text = core::str::from_utf8(payload).map_err(|_| PresenceError)?;
        Self::parse_text(split_tag(text).0)
    }

    fn parse_text(text: &str) -> Result<Self, PresenceError> {
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

/// Splits off a trailing tag: a last word of 32 or 128 hex digits (an incarnation has 8).
fn split_tag(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once(' ') {
        Some((head, tag))
            if (tag.len() == 2 * MAC_LEN || tag.len() == 2 * SIGNATURE_LEN)
                && tag.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            (head, Some(tag))
        }
        _ => (text, None),
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
