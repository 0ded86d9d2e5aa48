//! One journal record (what the agent replays at start-up) over arbitrary bytes; whatever
//! decodes must encode to bytes that decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::journal::{self, MAX_RECORD};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = journal::decode(data) {
        let mut buf = [0u8; MAX_RECORD];
        let again = journal::encode(&record, &mut buf).expect("a decoded record encodes");
        assert_eq!(
            journal::decode(again),
            Ok(record),
            "re-encoding changed the record"
        );
    }
});
