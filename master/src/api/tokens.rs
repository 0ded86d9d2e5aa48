//! API tokens: who may call the API, and with which role.
//!
//! A token is `tether_` and 64 hex digits from the kernel's random pool. The master keeps only
//! a hash of it (SHA-512, first 32 bytes: a token has 256 bits of entropy, so a fast hash is
//! enough and a stolen database reveals no usable token) and compares hashes in constant time,
//! against every token, so the time of an answer says nothing about which token came close.

use tether_core::auth::Hex;

use crate::model::{ApiToken, Role};

/// The bytes the master keeps of a token.
pub(super) type TokenHash = [u8; 32];

/// Who is calling: the token's name (recorded with what it does) and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

const PREFIX: &str = "tether_";

/// A new secret: `tether_` and 64 hex digits.
pub fn new_secret() -> std::io::Result<String> {
    let bytes: [u8; 32] = crate::keys::random_bytes()?;
    Ok(format!("{PREFIX}{}", Hex(&bytes)))
}

pub(super) fn hash(secret: &str) -> TokenHash {
    let full = hmac_sha512::Hash::hash(secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&full[..32]);
    out
}

pub fn hash_hex(secret: &str) -> String {
    Hex(&hash(secret)).to_string()
}

/// The tokens the API accepts, kept in memory beside the store (which is the truth) so every
/// request is checked without a database read; a revocation changes it at once.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(TokenHash, Caller)>,
}

impl Tokens {
    pub fn new(tokens: &[ApiToken]) -> Self {
        let mut t = Self::default();
        for token in tokens {
            t.insert(token);
        }
        t
    }

    /// Adds (or replaces, by name) a token; a revoked one is only removed.
    pub fn insert(&mut self, token: &ApiToken) {
        self.entries.retain(|(_, c)| c.name != token.name);
        if token.revoked_ms.is_some() {
            return;
        }
        let Ok(hash) = tether_core::auth::parse_hex::<32>(&token.hash) else {
            log::warn!("API token '{}': unreadable hash, ignored", token.name);
            return;
        };
        self.entries.push((
            hash,
            Caller {
                name: token.name.clone(),
                role: token.role,
            },
        ));
    }

    pub fn revoke(&mut self, name: &str) {
        self.entries.retain(|(_, c)| c.name != name);
    }

    /// Whether a token of this name is live.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(_, c)| c.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller a presented secret belongs to. Every stored hash is compared, in constant
    /// time, whatever matches first.
    pub fn authenticate(&self, secret: &str) -> Option<Caller> {
        let presented = hash(secret);
        let mut found = None;
        for (stored, caller) in &self.entries {
            let diff = stored
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role, secret: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            role,
            hash: hash_hex(secret),
            created_ms: 0,
            created_by: "test".into(),
            revoked_ms: None,
        }
    }

    #[test]
    fn secrets_authenticate_to_their_role_until_revoked() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert!(a.starts_with("tether_") && a.len() == 7 + 64 && a != b);
        let mut t = Tokens::new(&[
            token("ops", Role::Operator, &a),
            token("ro", Role::Viewer, &b),
        ]);
        assert_eq!(t.authenticate(&a).unwrap().role, Role::Operator);
        assert_eq!(t.authenticate(&b).unwrap().name, "ro");
        assert_eq!(t.authenticate("tether_00"), None);
        assert_eq!(t.authenticate(""), None);
        t.revoke("ops");
        assert_eq!(t.authenticate(&a), None);
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
