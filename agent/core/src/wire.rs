//! The envelope every binary payload travels in, and its strict decoder.
//!
//! Layout: `[version: u8][auth scheme: u8][postcard(Message)][auth trailer]`. The scheme byte
//! names the trailer: none, an ed25519 signature by the master, or an agent's truncated
//! HMAC-SHA-512 (see [`crate::auth`]). Both cover the topic and every byte before the trailer.
//! The decoder accepts exactly one message and nothing else: oversized, truncated,
//! unknown-version, unknown-scheme and trailing bytes are typed errors, never a panic.
//! [`decode`] only parses (for tools); receivers use [`decode_verified`].
//!
//! A payload that does not parse is a [`DecodeError`]; a well-formed message that is not taken
//! (not authentic, replayed, not for us) is a [`Refusal`]. Receivers, which meet both, get a
//! [`ReceiveError`].

use serde::{Deserialize, Serialize};

use crate::auth::{self, AgentKey, MAC_LEN, SIGNATURE_LEN, SigningKey, Verifier};
use crate::message::Message;

/// The one version this build speaks.
pub const PROTOCOL_VERSION: u8 = 3;
/// Largest payload accepted or produced, envelope included.
pub const MAX_MESSAGE: usize = 2048;
const HEADER: usize = 2;

/// How a payload is authenticated; the value is the envelope's second byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum AuthScheme {
    /// No trailer: refused by any receiver that has keys.
    None = 0,
    /// A 64-byte ed25519 signature by the master.
    Ed25519 = 1,
    /// HMAC-SHA-512 truncated to 16 bytes, keyed with the publishing agent's secret.
    HmacSha512_128 = 2,
}

impl AuthScheme {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::None),
            1 => Some(Self::Ed25519),
            2 => Some(Self::HmacSha512_128),
            _ => None,
        }
    }

    pub const fn trailer_len(self) -> usize {
        match self {
            Self::None => 0,
            Self::Ed25519 => SIGNATURE_LEN,
            Self::HmacSha512_128 => MAC_LEN,
        }
    }
}

/// Why a payload is not a message, or not one for the topic it came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecodeError {
    Empty,
    Oversized {
        len: u32,
    },
    UnknownVersion(u8),
    UnknownAuthScheme(u8),
    /// The input ended inside the message.
    Truncated,
    /// The bytes are not a valid message (bad tag, bad varint, a bound exceeded, bad text).
    Malformed,
    /// Bytes left over after the message and its trailer.
    TrailingBytes {
        extra: u32,
    },
    /// A valid message of a kind that does not belong on the topic it came on.
    WrongTopic,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => f.write_str("empty payload"),
            Self::Oversized { len } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the {MAX_MESSAGE}-byte limit"
                )
            }
            Self::UnknownVersion(v) => {
                write!(
                    f,
                    "protocol version {v} not supported (this build speaks {PROTOCOL_VERSION})"
                )
            }
            Self::UnknownAuthScheme(s) => write!(f, "unknown authentication scheme {s}"),
            Self::Truncated => f.write_str("payload truncated"),
            Self::Malformed => f.write_str("malformed payload"),
            Self::TrailingBytes { extra } => {
                write!(f, "{extra} unexpected bytes after the message")
            }
            Self::WrongTopic => f.write_str("message kind does not belong on this topic"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a well-formed message is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No authentication, or not the scheme the sender on this topic must use.
    Unauthenticated,
    /// The signature or MAC does not verify under any configured key (forged, wrong key, or
    /// made for another topic).
    BadSignature,
    /// Authentic, but already seen or from an earlier master epoch.
    Replayed,
    /// The master holds no key for the agent named by the topic.
    UnknownAgent,
    /// Authentic, but for another journal of this agent (one that was wiped or replaced).
    OtherJournal,
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unauthenticated => f.write_str(
                "unauthenticated: not signed (or MAC'd) with the scheme this topic requires",
            ),
            Self::BadSignature => {
                f.write_str("bad signature: no configured key verifies it for this topic")
            }
            Self::Replayed => f.write_str("replayed: counter already seen or epoch too old"),
            Self::UnknownAgent => f.write_str("unknown agent: no key is provisioned for it"),
            Self::OtherJournal => {
                f.write_str("for another journal of this agent (its state was wiped or restored)")
            }
        }
    }
}

impl core::error::Error for Refusal {}

/// Why a received payload was dropped: it did not decode, or it was refused. Agents report it
/// in `BadCommand` events, which journals and the master's store keep: it is serialized as the
/// one flat enum it was before the two were told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Flat", into = "Flat")]
pub enum ReceiveError {
    Decode(DecodeError),
    Refused(Refusal),
}

impl From<DecodeError> for ReceiveError {
    fn from(error: DecodeError) -> Self {
        Self::Decode(error)
    }
}

impl From<Refusal> for ReceiveError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl core::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Decode(e) => e.fmt(f),
            Self::Refused(r) => r.fmt(f),
        }
    }
}

impl core::error::Error for ReceiveError {}

/// [`ReceiveError`] as it is serialized: the single enum it was before parse errors and
/// refusals were told apart. Journals, the wire and the master's store hold `BadCommand`
/// events in this form (postcard tags by variant order, JSON by variant name), so its variants
/// keep their order and names.
#[derive(Serialize, Deserialize)]
#[serde(rename = "DecodeError")]
enum Flat {
    Empty,
    Oversized { len: u32 },
    UnknownVersion(u8),
    UnknownAuthScheme(u8),
    Truncated,
    Malformed,
    TrailingBytes { extra: u32 },
    WrongTopic,
    Unauthenticated,
    BadSignature,
    Replayed,
    UnknownAgent,
    OtherJournal,
}

impl From<Flat> for ReceiveError {
    fn from(flat: Flat) -> Self {
        match flat {
            Flat::Empty => DecodeError::Empty.into(),
            Flat::Oversized { len } => DecodeError::Oversized { len }.into(),
            Flat::UnknownVersion(v) => DecodeError::UnknownVersion(v).into(),
            Flat::UnknownAuthScheme(s) => DecodeError::UnknownAuthScheme(s).into(),
            Flat::Truncated => DecodeError::Truncated.into(),
            Flat::Malformed => DecodeError::Malformed.into(),
            Flat::TrailingBytes { extra } => DecodeError::TrailingBytes { extra }.into(),
            Flat::WrongTopic => DecodeError::WrongTopic.into(),
            Flat::Unauthenticated => Refusal::Unauthenticated.into(),
            Flat::BadSignature => Refusal::BadSignature.into(),
            Flat::Replayed => Refusal::Replayed.into(),
            Flat::UnknownAgent => Refusal::UnknownAgent.into(),
            Flat::OtherJournal => Refusal::OtherJournal.into(),
        }
    }
}

impl From<ReceiveError> for Flat {
    fn from(error: ReceiveError) -> Self {
        match error {
            ReceiveError::Decode(e) => match e {
                DecodeError::Empty => Self::Empty,
                DecodeError::Oversized { len } => Self::Oversized { len },
                DecodeError::UnknownVersion(v) => Self::UnknownVersion(v),
                DecodeError::UnknownAuthScheme(s) => Self::UnknownAuthScheme(s),
                DecodeError::Truncated => Self::Truncated,
                DecodeError::Malformed => Self::Malformed,
                DecodeError::TrailingBytes { extra } => Self::TrailingBytes { extra },
                DecodeError::WrongTopic => Self::WrongTopic,
            },
            ReceiveError::Refused(r) => match r {
                Refusal::Unauthenticated => Self::Unauthenticated,
                Refusal::BadSignature => Self::BadSignature,
                Refusal::Replayed => Self::Replayed,
                Refusal::UnknownAgent => Self::UnknownAgent,
                Refusal::OtherJournal => Self::OtherJournal,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The message does not fit the buffer (or [`MAX_MESSAGE`]).
    TooLarge,
}

/// Encodes `msg` without authentication into `buf` and returns the used prefix.
pub fn encode<'b>(msg: &Message, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
    encode_with(msg, AuthScheme::None, buf, |_| {})
}

/// Encodes `msg` signed by the master for `topic`.
pub fn encode_signed<'b>(
    msg: &Message,
    topic: &str,
    key: &SigningKey,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    encode_with(msg, AuthScheme::Ed25519, buf, |b| {
        let (signed, trailer) = b.split_at_mut(b.len() - SIGNATURE_LEN);
        trailer.copy_from_slice(&key.sign(topic, signed));
    })
}

/// Encodes `msg` MAC'd with an agent's key for `topic`.
pub fn encode_mac<'b>(
    msg: &Message,
    topic: &str,
    key: &AgentKey,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    encode_with(msg, AuthScheme::HmacSha512_128, buf, |b| {
        let (signed, trailer) = b.split_at_mut(b.len() - MAC_LEN);
        trailer.copy_from_slice(&auth::mac(key, topic, signed));
    })
}

/// Encodes `msg` for `topic` as the sender's keys say: signed, MAC'd or (insecure) plain.
pub fn encode_for<'b>(
    msg: &Message,
    topic: &str,
    signer: Signer<'_>,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    match signer {
        Signer::Master(key) => encode_signed(msg, topic, key, buf),
        Signer::Agent(key) => encode_mac(msg, topic, key, buf),
        Signer::Insecure => encode(msg, buf),
    }
}

/// How a sender authenticates what it publishes.
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    Master(&'a SigningKey),
    Agent(&'a AgentKey),
    Insecure,
}

fn encode_with<'b>(
    msg: &Message,
    scheme: AuthScheme,
    buf: &'b mut [u8],
    seal: impl FnOnce(&mut [u8]),
) -> Result<&'b [u8], EncodeError> {
    let limit = buf.len().min(MAX_MESSAGE);
    let buf = &mut buf[..limit];
    let trailer = scheme.trailer_len();
    if buf.len() < HEADER + trailer {
        return Err(EncodeError::TooLarge);
    }
    buf[0] = PROTOCOL_VERSION;
    buf[1] = scheme as u8;
    let room = buf.len() - trailer;
    let body =
        postcard::to_slice(msg, &mut buf[HEADER..room]).map_err(|_| EncodeError::TooLarge)?;
    let len = HEADER + body.len() + trailer;
    seal(&mut buf[..len]);
    Ok(&buf[..len])
}

/// Encodes into a bounded vector.
pub fn encode_vec<const N: usize>(msg: &Message) -> Result<heapless::Vec<u8, N>, EncodeError> {
    let mut buf = [0u8; MAX_MESSAGE];
    let bytes = encode(msg, &mut buf)?;
    heapless::Vec::from_slice(bytes).map_err(|_| EncodeError::TooLarge)
}

/// Decodes exactly one message without checking its authentication (tools, tests).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode_envelope(bytes).map(|(msg, _)| msg)
}

/// Decodes exactly one message and names its scheme, without checking the trailer.
pub fn decode_envelope(bytes: &[u8]) -> Result<(Message, AuthScheme), DecodeError> {
    let scheme = header(bytes)?;
    let (msg, rest) =
        postcard::take_from_bytes::<Message>(&bytes[HEADER..]).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
            _ => DecodeError::Malformed,
        })?;
    let trailer = scheme.trailer_len();
    if rest.len() < trailer {
        return Err(DecodeError::Truncated);
    }
    if rest.len() > trailer {
        let extra = u32::try_from(rest.len() - trailer).unwrap_or(u32::MAX);
        return Err(DecodeError::TrailingBytes { extra });
    }
    Ok((msg, scheme))
}

/// Checks the payload's authentication for `topic` first, then decodes it: nothing
/// unauthenticated reaches the message parser.
pub fn decode_verified(
    bytes: &[u8],
    topic: &str,
    verifier: Verifier<'_>,
) -> Result<Message, ReceiveError> {
    let scheme = header(bytes)?;
    let authentic = |trailer: usize, check: &dyn Fn(&[u8], &[u8]) -> bool| {
        if bytes.len() < HEADER + trailer {
            return Err(ReceiveError::from(DecodeError::Truncated));
        }
        let (signed, tag) = bytes.split_at(bytes.len() - trailer);
        if check(signed, tag) {
            Ok(())
        } else {
            Err(Refusal::BadSignature.into())
        }
    };
    match (verifier, scheme) {
        (Verifier::Insecure, _) => {}
        (Verifier::Master(keys), AuthScheme::Ed25519) => {
            authentic(SIGNATURE_LEN, &|signed, tag| {
                keys.verify(topic, signed, tag)
            })?;
        }
        (Verifier::Agent(key), AuthScheme::HmacSha512_128) => {
            authentic(MAC_LEN, &|signed, tag| {
                auth::mac_matches(key, topic, signed, tag)
            })?;
        }
        _ => return Err(Refusal::Unauthenticated.into()),
    }
    Ok(decode(bytes)?)
}

fn header(bytes: &[u8]) -> Result<AuthScheme, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError::Oversized {
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        });
    }
    if bytes[0] != PROTOCOL_VERSION {
        return Err(DecodeError::UnknownVersion(bytes[0]));
    }
    let Some(&scheme) = bytes.get(1) else {
        return Err(DecodeError::Truncated);
    };
    AuthScheme::from_byte(scheme).ok_or(DecodeError::UnknownAuthScheme(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use crate::policy::Policy;

    fn start() -> Message {
        Message::Command(Command {
            epoch: 7,
            counter: 42,
            journal: 0x5eed,
            body: CommandBody::Start(TaskSpec {
                task: TaskRef {
                    task: 3,
                    attempt: 9,
                },
                policy: Policy::DEFAULT,
                start_at_unix_ms: Some(1_700_000_000_000),
                argv: StrList::from_items(["/bin/sh", "-c", "echo hi"]).unwrap(),
                env: StrList::from_items(["A=1"]).unwrap(),
                cwd: heapless::String::try_from("/tmp").unwrap(),
            }),
        })
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; MAX_MESSAGE];
        let bytes = encode(&start(), &mut buf).unwrap();
        assert_eq!(decode(bytes), Ok(start()));
    }

    #[test]
    fn signed_and_maced_round_trip_and_every_cut_fails() {
        use crate::auth::{MasterKeys, SigningKey, Verifier};
        let key = SigningKey::from_seed([1; 32]).unwrap();
        let keys = MasterKeys::from_keys(&[key.public_key()]).unwrap();
        let topic = "tether/agent/a/cmd";
        let mut buf = [0u8; MAX_MESSAGE];
        let signed = encode_signed(&start(), topic, &key, &mut buf).unwrap();
        assert_eq!(signed[1], AuthScheme::Ed25519 as u8);
        assert_eq!(
            decode_verified(signed, topic, Verifier::Master(&keys)),
            Ok(start())
        );
        assert_eq!(decode_envelope(signed).unwrap().1, AuthScheme::Ed25519);
        for len in 0..signed.len() {
            assert!(decode_verified(&signed[..len], topic, Verifier::Master(&keys)).is_err());
        }
        let mut buf2 = [0u8; MAX_MESSAGE];
        let maced = encode_mac(&start(), topic, &[3; 32], &mut buf2).unwrap();
        assert_eq!(maced.len(), signed.len() - SIGNATURE_LEN + MAC_LEN);
        assert_eq!(
            decode_verified(maced, topic, Verifier::Agent(&[3; 32])),
            Ok(start())
        );
        assert_eq!(
            decode_verified(maced, topic, Verifier::Master(&keys)),
            Err(ReceiveError::Refused(Refusal::Unauthenticated))
        );
        for len in 0..maced.len() {
            assert!(decode_verified(&maced[..len], topic, Verifier::Agent(&[3; 32])).is_err());
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = [0u8; MAX_MESSAGE];
        let bytes = encode(&start(), &mut buf).unwrap();
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::Empty | DecodeError::Truncated | DecodeError::Malformed
                ),
                "len {len}: {err:?}"
            );
        }
    }

    #[test]
    fn trailing_garbage_version_scheme_and_size() {
        let mut buf = [0u8; MAX_MESSAGE];
        let len = encode(&start(), &mut buf).unwrap().len();
        buf[len] = 0xAA;
        assert_eq!(
            decode(&buf[..=len]),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
        let mut wrong = buf;
        wrong[0] = 1;
        assert_eq!(decode(&wrong[..len]), Err(DecodeError::UnknownVersion(1)));
        wrong = buf;
        wrong[1] = 9;
        assert_eq!(
            decode(&wrong[..len]),
            Err(DecodeError::UnknownAuthScheme(9))
        );
        let big = [1u8; MAX_MESSAGE + 1];
        assert_eq!(
            decode(&big),
            Err(DecodeError::Oversized {
                len: MAX_MESSAGE as u32 + 1
            })
        );
    }

    #[test]
    fn receive_errors_serialize_as_the_single_enum_they_were() {
        // Journals and the master's store hold `BadCommand` events written before the split.
        let cases: [(ReceiveError, &[u8]); 13] = [
            (DecodeError::Empty.into(), &[0]),
            (DecodeError::Oversized { len: 5000 }.into(), &[1, 136, 39]),
            (DecodeError::UnknownVersion(9).into(), &[2, 9]),
            (DecodeError::UnknownAuthScheme(7).into(), &[3, 7]),
            (DecodeError::Truncated.into(), &[4]),
            (DecodeError::Malformed.into(), &[5]),
            (DecodeError::TrailingBytes { extra: 3 }.into(), &[6, 3]),
            (DecodeError::WrongTopic.into(), &[7]),
            (Refusal::Unauthenticated.into(), &[8]),
            (Refusal::BadSignature.into(), &[9]),
            (Refusal::Replayed.into(), &[10]),
            (Refusal::UnknownAgent.into(), &[11]),
            (Refusal::OtherJournal.into(), &[12]),
        ];
        for (error, bytes) in cases {
            let mut buf = [0u8; 8];
            let encoded = postcard::to_slice(&error, &mut buf).unwrap();
            assert_eq!(&*encoded, bytes, "{error:?}");
            assert_eq!(postcard::from_bytes::<ReceiveError>(bytes).unwrap(), error);
        }
    }

    #[test]
    fn oversized_bounded_field_is_rejected() {
        // A hand-made Output event (journal 5) whose data claims more than OUTPUT_CHUNK bytes.
        let mut bytes = heapless::Vec::<u8, 1024>::new();
        bytes
            .extend_from_slice(&[PROTOCOL_VERSION, 0, 2, 5, 1, 0, 3, 1, 1, 0, 0])
            .unwrap();
        bytes.extend_from_slice(&[0xA0, 0x04]).unwrap(); // varint 544 > OUTPUT_CHUNK
        bytes.extend_from_slice(&[0u8; 544]).unwrap();
        assert_eq!(decode(&bytes), Err(DecodeError::Malformed));
    }
}
