//! The test fleet's keys, in one place: a fixed master signing key and one MAC key per agent id,
//! derived so that every part of a test (scripted master, simulated cores, agent processes)
//! agrees without passing keys around. A real `tether-master` makes its own key and hands out
//! agent keys through its API; see `harness::master_proc::MasterProcess::provision`.

use tether_core::agent::Auth;
use tether_core::auth::{self, AgentKey, Hex, MasterKeys, SigningKey};

const MASTER_SEED: [u8; 32] = *b"tether test master signing seed!";
const AGENT_SEED: [u8; 32] = *b"tether test agent key derivation";

/// The test master's signing key.
pub fn master() -> SigningKey {
    SigningKey::from_seed(MASTER_SEED).expect("a non-zero seed")
}

pub fn master_keys() -> MasterKeys {
    MasterKeys::from_keys(&[master().public_key()]).expect("a valid key")
}

/// The test master's public key, as `--master-key` takes it.
pub fn master_public_hex() -> String {
    Hex(&master().public_key()).to_string()
}

/// The MAC key of test agent `id`.
pub fn agent(id: &str) -> AgentKey {
    let mut key = [0u8; 32];
    let (a, b) = key.split_at_mut(16);
    a.copy_from_slice(&auth::mac(&AGENT_SEED, id, b"0"));
    b.copy_from_slice(&auth::mac(&AGENT_SEED, id, b"1"));
    key
}

pub fn agent_hex(id: &str) -> String {
    Hex(&agent(id)).to_string()
}

/// What a simulated agent core `id` is configured with.
pub fn agent_auth(id: &str) -> Auth {
    Auth::Keys {
        master: master_keys(),
        agent: agent(id),
    }
}
