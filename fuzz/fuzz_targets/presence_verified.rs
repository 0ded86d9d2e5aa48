//! Tagged presence text as agents and the master receive it: never a panic, and a presence
//! tagged for a topic verifies there and nowhere else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::auth::{AgentKey, MasterKeys, SigningKey, Verifier};
use tether_core::presence::Presence;
use tether_core::wire::Signer;

const TOPIC: &str = "tether/agent/pi-1/presence";
const OTHER: &str = "tether/agent/pi-2/presence";
const AGENT_KEY: AgentKey = [9; 32];

fuzz_target!(|data: &[u8]| {
    let master = SigningKey::from_seed([7; 32]).expect("a valid seed");
    let keys = MasterKeys::from_keys(&[master.public_key()]).expect("one key");
    for verifier in [Verifier::Master(&keys), Verifier::Agent(&AGENT_KEY)] {
        let _ = Presence::parse_verified(data, TOPIC, verifier);
    }
    let Ok(presence) = Presence::parse(data) else {
        return;
    };
    for (signer, verifier) in [
        (Signer::Master(&master), Verifier::Master(&keys)),
        (Signer::Agent(&AGENT_KEY), Verifier::Agent(&AGENT_KEY)),
    ] {
        let text = presence.render_signed(TOPIC, signer);
        assert_eq!(
            Presence::parse_verified(text.as_bytes(), TOPIC, verifier),
            Ok(presence)
        );
        assert!(Presence::parse_verified(text.as_bytes(), OTHER, verifier).is_err());
    }
});
