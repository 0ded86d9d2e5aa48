//! Presence text (retained, readable by anyone with mosquitto_sub) over arbitrary bytes;
//! whatever parses must render back to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::presence::Presence;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Presence::parse(data) {
        let text = p.render();
        assert_eq!(Presence::parse(text.as_bytes()), Ok(p));
    }
});
