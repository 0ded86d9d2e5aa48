//! The agent's configuration file (hand-edited on the board) over arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = tether_agent::config::check_config(text);
    }
});
