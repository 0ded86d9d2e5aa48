//! The agent's replay guard against a model: fed any sequence of (epoch, counter) commands and
//! heartbeats, it never accepts a command twice, never one from an epoch older than a word it
//! accepted, and never a heartbeat that is not newer than every word accepted before it; across
//! restarts from its persisted high-water mark as well.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use tether_core::auth::ReplayGuard;

fuzz_target!(|data: &[u8]| {
    let mut guard = ReplayGuard::new();
    let mut accepted = HashSet::new();
    let mut newest = (0u32, 0u64);
    for op in data.chunks_exact(4) {
        let epoch = u32::from(op[1] & 3);
        let counter = u64::from(u16::from_le_bytes([op[2], op[3]]) & 0x3ff);
        if op[0] & 1 == 0 {
            if guard.accept_command(epoch, counter).is_ok() {
                assert!(accepted.insert((epoch, counter)), "command accepted twice");
                assert!(epoch >= newest.0, "command from an older epoch accepted");
                newest = newest.max((epoch, counter));
            }
        } else if guard.accept_heartbeat(epoch, counter).is_ok() {
            assert!((epoch, counter) > newest, "stale heartbeat accepted");
            newest = (epoch, counter);
        }
        if op[0] & 0x80 != 0 {
            // A restart: only the persisted high-water mark survives. (The newest heartbeat
            // is not persisted: one newer than the mark is accepted once more, which delays
            // a kill by at most one timeout.)
            let (epoch, high) = guard.high_water();
            guard = ReplayGuard::restored(epoch, high);
            newest = (epoch, high);
        }
    }
});
