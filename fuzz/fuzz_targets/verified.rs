//! Authenticated envelopes as an agent and the master receive them. The first byte picks the
//! receiver and topic, the rest is the payload: decode_verified must never panic, and any
//! message, once signed (or MAC'd) for a topic, must verify there, and not on another topic
//! nor with one byte changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::auth::{AgentKey, MasterKeys, SigningKey, Verifier};
use tether_core::wire::{self, MAX_MESSAGE};

const TOPICS: [&str; 3] = [
    "tether/agent/pi-1/cmd",
    "tether/agent/pi-2/cmd",
    "tether/agent/pi-1/event",
];
const AGENT_KEY: AgentKey = [9; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let master = SigningKey::from_seed([7; 32]).expect("a valid seed");
    let keys = MasterKeys::from_keys(&[master.public_key()]).expect("one key");
    let topic = TOPICS[usize::from(pick >> 2) % TOPICS.len()];
    let other = TOPICS[(usize::from(pick >> 2) + 1) % TOPICS.len()];
    let verifier = match pick & 3 {
        0 => Verifier::Master(&keys),
        1 => Verifier::Agent(&AGENT_KEY),
        _ => Verifier::Insecure,
    };
    let _ = wire::decode_verified(payload, topic, verifier);

    // Whatever parses, sealed properly, must verify exactly where it was sealed for.
    let Ok(msg) = wire::decode(payload) else {
        return;
    };
    let mut buf = [0u8; MAX_MESSAGE];
    let sealed = match verifier {
        Verifier::Master(_) => wire::encode_signed(&msg, topic, &master, &mut buf),
        Verifier::Agent(key) => wire::encode_mac(&msg, topic, key, &mut buf),
        Verifier::Insecure => return,
    };
    let Ok(sealed) = sealed else { return };
    assert_eq!(
        wire::decode_verified(sealed, topic, verifier).as_ref(),
        Ok(&msg)
    );
    assert!(
        wire::decode_verified(sealed, other, verifier).is_err(),
        "verified on another topic"
    );
    let mut tampered = sealed.to_vec();
    let at = usize::from(pick) % tampered.len();
    tampered[at] ^= 0x01;
    assert!(
        wire::decode_verified(&tampered, topic, verifier).is_err(),
        "a changed byte at {at} still verified"
    );
});
