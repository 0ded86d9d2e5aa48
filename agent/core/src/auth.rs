//! Who may say what: the keys that authenticate Tether's messages and the checks on them.
//!
//! Any MQTT client can publish on any topic (rumqttd has no topic ACLs), so messages carry their
//! own proof. The master signs what it publishes with ed25519 (one signing key; agents hold a
//! set of up to [`MAX_MASTER_KEYS`] public keys, for rotation). Each agent MACs what it publishes
//! with HMAC-SHA-512 truncated to 16 bytes under its own 32-byte secret, which only it and the
//! master know. Both cover [`CONTEXT`], the topic and the bytes, so a signature is bound to the
//! topic it was made for: a command for one agent is useless on another's topic, and a heartbeat
//! cannot pass as a command.
//!
//! Replay is a separate question, answered by [`ReplayGuard`] (master epoch and counter).

use core::fmt::Write;

use ed25519_compact::{KeyPair, PublicKey, Seed, Signature};
use hmac_sha512::HMAC;

use crate::topic::MAX_TOPIC;
use crate::wire::MAX_MESSAGE;

/// Bytes of an agent's MAC key, of a master signing seed and of a master public key.
pub const KEY_LEN: usize = 32;
/// Bytes of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of a truncated HMAC-SHA-512 tag.
pub const MAC_LEN: usize = 16;
/// Master public keys an agent accepts at once (old and new during a rotation).
pub const MAX_MASTER_KEYS: usize = 4;
/// Prefixed to everything authenticated: a domain separator and a version.
pub const CONTEXT: &[u8] = b"tether/1\0";
/// Largest authenticated input: context, topic, NUL and a whole payload.
const MAX_SIGNED: usize = CONTEXT.len() + MAX_TOPIC + 1 + MAX_MESSAGE;

/// An agent's secret: the MAC key of everything it publishes.
pub type AgentKey = [u8; KEY_LEN];

/// A key that could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not exactly the expected number of hex digits, or a non-hex character.
    BadHex,
    /// Not a valid ed25519 public key, or an all-zero seed.
    Invalid,
    /// More than [`MAX_MASTER_KEYS`] master keys.
    TooMany,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadHex => write!(f, "a key must be {} hex digits", 2 * KEY_LEN),
            Self::Invalid => f.write_str("not a valid ed25519 key"),
            Self::TooMany => write!(f, "at most {MAX_MASTER_KEYS} master keys"),
        }
    }
}

impl core::error::Error for KeyError {}

/// The master's ed25519 key pair, made from a 32-byte seed.
#[derive(Clone)]
pub struct SigningKey(KeyPair);

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the secret.
        f.debug_tuple("SigningKey")
            .field(&Hex(&self.public_key()))
            .finish()
    }
}

impl SigningKey {
    pub fn from_seed(seed: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        KeyPair::try_from_seed(Seed::new(seed))
            .map(Self)
            .map_err(|_| KeyError::Invalid)
    }

    pub fn public_key(&self) -> [u8; KEY_LEN] {
        *self.0.pk
    }

    /// Signs `bytes` as published on `topic` (deterministic: same input, same signature).
    pub fn sign(&self, topic: &str, bytes: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut buf = [0u8; MAX_SIGNED];
        let input = signed_input(topic, bytes, &mut buf);
        *self.0.sk.sign(input, None)
    }
}

/// The master public keys an agent trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterKeys(heapless::Vec<[u8; KEY_LEN], MAX_MASTER_KEYS>);

impl MasterKeys {
    pub const fn new() -> Self {
        Self(heapless::Vec::new())
    }

    /// Adds a key; a point that is not a valid public key is refused here, not at first use.
    pub fn add(&mut self, key: [u8; KEY_LEN]) -> Result<(), KeyError> {
        PublicKey::new(key)
            .validate()
            .map_err(|_| KeyError::Invalid)?;
        if self.0.contains(&key) {
            return Ok(());
        }
        self.0.push(key).map_err(|_| KeyError::TooMany)
    }

    pub fn from_keys(keys: &[[u8; KEY_LEN]]) -> Result<Self, KeyError> {
        let mut set = Self::new();
        for key in keys {
            set.add(*key)?;
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> &[[u8; KEY_LEN]] {
        &self.0
    }

    /// True when one of the keys signed `bytes` for `topic`.
    pub fn verify(&self, topic: &str, bytes: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.0.iter().any(|key| {
            PublicKey::new(*key)
                .verify_incremental(&signature)
                .is_ok_and(|mut state| {
                    state.absorb(CONTEXT);
                    state.absorb(topic.as_bytes());
                    state.absorb([0u8]);
                    state.absorb(bytes);
                    state.verify().is_ok()
                })
        })
    }
}

/// The agent's tag over `bytes` as published on `topic`.
pub fn mac(key: &AgentKey, topic: &str, bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut h = HMAC::new(key);
    h.update(CONTEXT);
    h.update(topic.as_bytes());
    h.update([0u8]);
    h.update(bytes);
    let full = h.finalize();
    let mut tag = [0u8; MAC_LEN];
    tag.copy_from_slice(&full[..MAC_LEN]);
    tag
}

/// Checks a tag in constant time.
pub fn mac_matches(key: &AgentKey, topic: &str, bytes: &[u8], tag: &[u8]) -> bool {
    let expected = mac(key, topic, bytes);
    tag.len() == MAC_LEN
        && expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a receiver checks an incoming payload against.
#[derive(Debug, Clone, Copy)]
pub enum Verifier<'a> {
    /// Signed by one of the master's keys (what agents receive).
    Master(&'a MasterKeys),
    /// MAC'd with this agent's key (what the master receives from that agent).
    Agent(&'a AgentKey),
    /// Nothing checked: an explicit, insecure configuration, or a tool that only reads.
    Insecure,
}

/// Lowercase hex of some bytes, for `Display`.
#[derive(Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl core::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

/// Parses exactly `2 * N` hex digits (either case).
pub fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], KeyError> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return Err(KeyError::BadHex);
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).ok_or(KeyError::BadHex);
        out[i] =
            u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).map_err(|_| KeyError::BadHex)?;
    }
    Ok(out)
}

/// Appends lowercase hex of `bytes` to `out`.
pub fn write_hex<const N: usize>(out: &mut heapless::String<N>, bytes: &[u8]) -> core::fmt::Result {
    write!(out, "{}", Hex(bytes))
}

fn signed_input<'b>(topic: &str, bytes: &[u8], buf: &'b mut [u8; MAX_SIGNED]) -> &'b [u8] {
    let parts: [&[u8]; 4] = [CONTEXT, topic.as_bytes(), &[0], bytes];
    let mut len = 0;
    for part in parts {
        // Topics are at most MAX_TOPIC and payloads at most MAX_MESSAGE: callers bound both;
        // anything longer is cut, which only makes the signature fail to verify.
        let take = part.len().min(MAX_SIGNED - len);
        buf[len..len + take].copy_from_slice(&part[..take]);
        len += take;
    }
    &buf[..len]
}

/// Replay protection for what the master sends an agent.
///
/// The master's epoch grows at every master start and its counter grows with every signed
/// message within an epoch (commands and heartbeats share it). A command is fresh if its epoch is
/// newer, or it is the same epoch and its counter was not seen within a sliding window of 64 below
/// the highest (as IPsec does: QoS 1 redelivery may reorder, exact copies are refused). A
/// heartbeat is fresh only if newer than the last accepted heartbeat and above the command
/// high-water mark: an old heartbeat replayed must never count as contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayGuard {
    epoch: u32,
    high: u64,
    /// Bit i set: counter `high - i` was accepted.
    window: u64,
    heartbeat: (u32, u64),
}

/// Counters within this distance below the highest are still accepted once.
pub const REPLAY_WINDOW: u64 = 64;

impl ReplayGuard {
    pub const fn new() -> Self {
        Self {
            epoch: 0,
            high: 0,
            window: 0,
            heartbeat: (0, 0),
        }
    }

    /// The guard after a restart from a persisted high-water mark: everything at or below it
    /// counts as seen (the master retransmits whatever was lost in between with new counters).
    pub const fn restored(epoch: u32, high: u64) -> Self {
        Self {
            epoch,
            high,
            window: u64::MAX,
            heartbeat: (epoch, high),
        }
    }

    /// The command high-water mark: (epoch, highest counter accepted).
    pub const fn high_water(&self) -> (u32, u64) {
        (self.epoch, self.high)
    }

    /// Accepts a command's (epoch, counter) once; returns whether the high-water mark moved.
    pub fn accept_command(&mut self, epoch: u32, counter: u64) -> Result<bool, Replay> {
        if epoch < self.epoch {
            return Err(Replay::OldEpoch);
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.high = counter;
            self.window = 1;
            return Ok(true);
        }
        if counter > self.high {
            let shift = counter - self.high;
            self.window = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.window << shift
            } | 1;
            self.high = counter;
            return Ok(true);
        }
        let behind = self.high - counter;
        if behind >= REPLAY_WINDOW {
            return Err(Replay::TooOld);
        }
        let bit = 1u64 << behind;
        if self.window & bit != 0 {
            return Err(Replay::Seen);
        }
        self.window |= bit;
        Ok(false)
    }

    /// Accepts a master heartbeat's (epoch, counter) if it is the newest word from the master;
    /// returns whether the high-water mark moved (a newer epoch: the master restarted, so
    /// commands of its earlier epochs are replays from now on, and that must be persisted).
    pub fn accept_heartbeat(&mut self, epoch: u32, counter: u64) -> Result<bool, Replay> {
        let fresh = (epoch, counter) > self.heartbeat && (epoch, counter) > (self.epoch, self.high);
        if !fresh {
            return Err(if epoch < self.epoch.max(self.heartbeat.0) {
                Replay::OldEpoch
            } else {
                Replay::Seen
            });
        }
        self.heartbeat = (epoch, counter);
        if epoch > self.epoch {
            self.epoch = epoch;
            self.high = 0;
            self.window = 0;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Why an (epoch, counter) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// From an earlier master epoch.
    OldEpoch,
    /// Already accepted (or, for a heartbeat, not newer than what was).
    Seen,
    /// Below the sliding window.
    TooOld,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let key = [0xabu8; KEY_LEN];
        let mut s = heapless::String::<64>::new();
        write_hex(&mut s, &key).unwrap();
        assert_eq!(parse_hex::<KEY_LEN>(&s), Ok(key));
        assert_eq!(parse_hex::<2>("ABcd"), Ok([0xab, 0xcd]));
        assert_eq!(parse_hex::<2>("abc"), Err(KeyError::BadHex));
        assert_eq!(parse_hex::<2>("zz00"), Err(KeyError::BadHex));
        assert_eq!(parse_hex::<1>("+f"), Err(KeyError::BadHex));
    }

    #[test]
    fn window_accepts_reordered_once_and_refuses_copies() {
        let mut g = ReplayGuard::new();
        assert_eq!(g.accept_command(1, 10), Ok(true));
        assert_eq!(g.accept_command(1, 8), Ok(false));
        assert_eq!(g.accept_command(1, 8), Err(Replay::Seen));
        assert_eq!(g.accept_command(1, 10), Err(Replay::Seen));
        assert_eq!(g.accept_command(1, 100), Ok(true));
        assert_eq!(g.accept_command(1, 36), Err(Replay::TooOld));
        assert_eq!(g.accept_command(1, 37), Ok(false));
        assert_eq!(g.accept_command(0, 1000), Err(Replay::OldEpoch));
        assert_eq!(g.accept_command(2, 1), Ok(true));
        assert_eq!(g.high_water(), (2, 1));
        let mut r = ReplayGuard::restored(2, 50);
        assert_eq!(r.accept_command(2, 49), Err(Replay::Seen));
        assert_eq!(r.accept_command(2, 51), Ok(true));
    }

    #[test]
    fn heartbeats_must_be_newest() {
        let mut g = ReplayGuard::new();
        assert_eq!(g.accept_heartbeat(1, 1), Ok(true));
        assert_eq!(g.accept_heartbeat(1, 1), Err(Replay::Seen));
        assert_eq!(g.accept_command(1, 5), Ok(true));
        assert_eq!(g.accept_heartbeat(1, 4), Err(Replay::Seen));
        assert_eq!(g.accept_heartbeat(1, 6), Ok(false));
        assert_eq!(g.accept_heartbeat(2, 1), Ok(true));
        assert_eq!(g.accept_heartbeat(1, 99), Err(Replay::OldEpoch));
    }

    #[test]
    fn a_newer_epoch_in_a_heartbeat_retires_the_older_epochs_commands() {
        let mut g = ReplayGuard::new();
        assert_eq!(g.accept_command(1, 5), Ok(true));
        assert_eq!(g.accept_heartbeat(2, 40), Ok(true));
        // Captured before the master restarted and never delivered: a replay now.
        assert_eq!(g.accept_command(1, 6), Err(Replay::OldEpoch));
        // The new epoch's commands sent before that heartbeat may still arrive after it.
        assert_eq!(g.accept_command(2, 39), Ok(true));
        // What is persisted keeps the rule across a restart.
        let (epoch, high) = g.high_water();
        let mut r = ReplayGuard::restored(epoch, high);
        assert_eq!(r.accept_command(1, 7), Err(Replay::OldEpoch));
    }
}
