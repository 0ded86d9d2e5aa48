//! The envelope decoder over arbitrary bytes; whatever decodes must encode to bytes that
//! decode to the same message. (Not to the same bytes: postcard accepts overlong varints,
//! harmless because signatures cover the bytes as sent, never a re-encoding.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::wire::{self, MAX_MESSAGE};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = wire::decode(data) {
        let mut buf = [0u8; MAX_MESSAGE];
        let again = wire::encode(&msg, &mut buf).expect("a decoded message encodes");
        assert_eq!(
            wire::decode(again),
            Ok(msg),
            "re-encoding changed the message"
        );
    }
});
