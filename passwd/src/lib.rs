//! Broker passwords as mosquitto's password file stores them, so one file serves a real
//! mosquitto (`password_file`) and the master's embedded broker (`--broker-passwords`).
//!
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512, 64-byte hash (mosquitto 2.x, and what
//!   [`hashed`] writes: 101 iterations and a 12-byte salt, as `mosquitto_passwd` does).
//! - `$6$<salt>$<hash>`: SHA-512(password || salt) (mosquitto 1.x), read only.
//! - Anything else not starting with `$`: the password in clear, read only (mosquitto 2.x does
//!   not take it; the master does, so files from before hashing keep working).
//!
//! Salts and hashes are standard base64 with padding. A `$` form that is not one of these (an
//! unknown scheme, bad base64, a wrong hash length, iterations out of range) is an error rather
//! than a clear password, so a hash from another tool is never taken for the password itself.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::num::NonZeroU32;

use hmac_sha512::Hash;
use ring::pbkdf2;

const PBKDF2: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA512;

/// What `mosquitto_passwd` (2.x) uses and [`hashed`] writes.
pub const ITERATIONS: u32 = 101;
/// The most iterations a stored hash may ask for: 100 times mosquitto's default. The check
/// runs at every CONNECT, and a whole fleet reconnects at once after an outage; at the cap one
/// check costs 5 to 8 ms of a desktop core (more on a small board), so a hostile or mistaken
/// file cannot make each CONNECT cost seconds.
pub const MAX_ITERATIONS: u32 = 10_000;
/// `mosquitto_passwd`'s salt length.
pub const SALT_LEN: usize = 12;
/// The longest salt accepted (mosquitto's own are [`SALT_LEN`]).
const MAX_SALT_LEN: usize = 64;
const HASH_LEN: usize = 64;

/// One user's stored password.
#[derive(Clone, PartialEq, Eq)]
pub enum Stored {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
    /// `$6$`: SHA-512(password || salt).
    Sha512 { salt: Vec<u8>, hash: [u8; HASH_LEN] },
    /// The password in clear.
    Plain(String),
}

/// Neither the clear password nor a hash is printed.
impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pbkdf2 { iterations, .. } => write!(f, "Pbkdf2 {{ iterations: {iterations} }}"),
            Self::Sha512 { .. } => f.write_str("Sha512"),
            Self::Plain(_) => f.write_str("Plain(..)"),
        }
    }
}

/// Why a stored password was refused (the text says which part and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHash(String);

impl fmt::Display for BadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadHash {}

fn bad(why: impl Into<String>) -> BadHash {
    BadHash(why.into())
}

impl Stored {
    /// The part after `user:` in a password file line.
    pub fn parse(text: &str) -> Result<Self, BadHash> {
        let Some(rest) = text.strip_prefix('$') else {
            return Ok(Self::Plain(text.to_owned()));
        };
        let mut fields = rest.split('$');
        let scheme = fields.next().unwrap_or_default();
        let fields: Vec<&str> = fields.collect();
        let wrong_shape = |expected| {
            bad(format!(
                "`${scheme}$` hash with {} fields after it, expected `{expected}`",
                fields.len()
            ))
        };
        match (scheme, fields.as_slice()) {
            ("7", [iterations, salt, hash]) => Ok(Self::Pbkdf2 {
                iterations: parse_iterations(iterations)?,
                salt: parse_salt(salt)?,
                hash: parse_hash(hash)?,
            }),
            ("6", [salt, hash]) => Ok(Self::Sha512 {
                salt: parse_salt(salt)?,
                hash: parse_hash(hash)?,
            }),
            ("7", _) => Err(wrong_shape("$7$iterations$salt$hash")),
            ("6", _) => Err(wrong_shape("$6$salt$hash")),
            _ => Err(bad(format!(
                "unknown hash scheme `${scheme}$` (only mosquitto's `$7$` and `$6$`; a password \
                 in clear cannot start with `$`)"
            ))),
        }
    }

    /// Whether `password` is the stored one; the comparison of the derived hash takes the same
    /// time wherever the bytes differ.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Self::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let Some(iterations) = NonZeroU32::new(*iterations) else {
                    return false;
                };
                // ring compares the derived hash in constant time.
                pbkdf2::verify(PBKDF2, iterations, salt, password.as_bytes(), hash).is_ok()
            }
            Self::Sha512 { salt, hash } => {
                let mut h = Hash::new();
                h.update(password);
                h.update(salt);
                same(&h.finalize(), hash)
            }
            // Hashed first, so neither the content nor the length of the secret shows in the
            // time taken.
            Self::Plain(stored) => same(&Hash::hash(stored), &Hash::hash(password)),
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self, Self::Plain(_))
    }
}

/// `password` as `$7$101$<salt>$<hash>`, what `mosquitto_passwd` writes. `salt` should be
/// [`SALT_LEN`] random bytes.
pub fn hashed(password: &str, salt: &[u8]) -> String {
    const WRITTEN: NonZeroU32 = NonZeroU32::new(ITERATIONS).unwrap();
    let hash = pbkdf2(password.as_bytes(), salt, WRITTEN);
    format!(
        "$7${ITERATIONS}${}${}",
        BASE64.encode(salt),
        BASE64.encode(hash)
    )
}

fn parse_iterations(text: &str) -> Result<u32, BadHash> {
    // Digits only: `u32::from_str` would also take a leading `+`.
    let n = (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u64>().unwrap_or(u64::MAX))
        .ok_or_else(|| bad(format!("iterations `{text}` is not a number")))?;
    match u32::try_from(n) {
        Ok(0) => Err(bad("iterations must be at least 1")),
        Ok(n) if n <= MAX_ITERATIONS => Ok(n),
        _ => Err(bad(format!(
            "iterations {text} above the cap of {MAX_ITERATIONS} (each CONNECT pays them)"
        ))),
    }
}

fn parse_salt(text: &str) -> Result<Vec<u8>, BadHash> {
    let salt = BASE64
        .decode(text)
        .map_err(|e| bad(format!("salt is not base64: {e}")))?;
    if salt.is_empty() || salt.len() > MAX_SALT_LEN {
        return Err(bad(format!(
            "salt of {} bytes, expected 1 to {MAX_SALT_LEN}",
            salt.len()
        )));
    }
    Ok(salt)
}

fn parse_hash(text: &str) -> Result<[u8; HASH_LEN], BadHash> {
    let hash = BASE64
        .decode(text)
        .map_err(|e| bad(format!("hash is not base64: {e}")))?;
    let len = hash.len();
    hash.try_into()
        .map_err(|_| bad(format!("hash of {len} bytes, expected {HASH_LEN}")))
}

/// PBKDF2-HMAC-SHA512 with a 64-byte output, as mosquitto's `$7$`.
fn pbkdf2(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::derive(PBKDF2, iterations, salt, password, &mut out);
    out
}

/// Equal hashes, in a time that does not depend on where they differ.
fn same(a: &[u8; HASH_LEN], b: &[u8; HASH_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests;
