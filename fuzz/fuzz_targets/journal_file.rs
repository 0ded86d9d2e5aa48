//! A whole journal file as the agent reads it at start-up (a disk can hand back anything):
//! frames are recovered up to the first bad one, each record then decoded as restore does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_agent::journal::read_frames;

fuzz_target!(|data: &[u8]| {
    if let Ok((records, good)) = read_frames(data, data.len() as u64) {
        assert!(good <= data.len() as u64);
        for record in records {
            let _ = tether_core::journal::decode(&record);
        }
    }
});
