//! The envelope every binary payload travels in, and its strict decoder.
//!
//! Layout: `[version: u8][auth scheme: u8][postcard(Message)][auth trailer]`. The scheme byte
//! names the trailer (none yet; an ed25519 signature over topic, header and body comes later)
//! so authentication arrives without a format break. The decoder accepts exactly one message
//! and nothing else: oversized, truncated, unknown-version, unknown-scheme and trailing bytes
//! are typed errors, never a panic.

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// The one version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest payload accepted or produced, envelope included.
pub const MAX_MESSAGE: usize = 2048;
const HEADER: usize = 2;

/// How a payload is authenticated; the value is the envelope's second byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum AuthScheme {
    /// No trailer.
    None = 0,
}

impl AuthScheme {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::None),
            _ => None,
        }
    }

    const fn trailer_len(self) -> usize {
        match self {
            Self::None => 0,
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The message does not fit the buffer (or [`MAX_MESSAGE`]).
    TooLarge,
}

/// Encodes `msg` into `buf` and returns the used prefix.
pub fn encode<'b>(msg: &Message, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
    let limit = buf.len().min(MAX_MESSAGE);
    let buf = &mut buf[..limit];
    if buf.len() < HEADER {
        return Err(EncodeError::TooLarge);
    }
    buf[0] = PROTOCOL_VERSION;
    buf[1] = AuthScheme::None as u8;
    let body = postcard::to_slice(msg, &mut buf[HEADER..]).map_err(|_| EncodeError::TooLarge)?;
    let len = HEADER + body.len();
    Ok(&buf[..len])
}

/// Encodes into a bounded vector.
pub fn encode_vec<const N: usize>(msg: &Message) -> Result<heapless::Vec<u8, N>, EncodeError> {
    let mut buf = [0u8; MAX_MESSAGE];
    let bytes = encode(msg, &mut buf)?;
    heapless::Vec::from_slice(bytes).map_err(|_| EncodeError::TooLarge)
}

/// Decodes exactly one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
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
    let scheme = AuthScheme::from_byte(scheme).ok_or(DecodeError::UnknownAuthScheme(scheme))?;
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
    Ok(msg)
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
        wrong[0] = 2;
        assert_eq!(decode(&wrong[..len]), Err(DecodeError::UnknownVersion(2)));
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
    fn oversized_bounded_field_is_rejected() {
        // A hand-made Output event whose data claims more than OUTPUT_CHUNK bytes.
        let mut bytes = heapless::Vec::<u8, 1024>::new();
        bytes
            .extend_from_slice(&[PROTOCOL_VERSION, 0, 2, 1, 0, 3, 1, 1, 0, 0])
            .unwrap();
        bytes.extend_from_slice(&[0xA0, 0x04]).unwrap(); // varint 544 > OUTPUT_CHUNK
        bytes.extend_from_slice(&[0u8; 544]).unwrap();
        assert_eq!(decode(&bytes), Err(DecodeError::Malformed));
    }
}
