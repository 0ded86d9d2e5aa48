//! Whether the kernel has the wall clock NTP-synchronised, for the core's clock trust
//! (`tether_core::agent::ClockRule::Ntp`): `adjtimex(2)` with `modes` 0, a read that changes
//! nothing and needs no privilege. Synchronised means `STA_UNSYNC` clear and the state
//! `TIME_OK`, `TIME_INS`, `TIME_DEL` or `TIME_OOP` (a leap second in progress); `TIME_WAIT`
//! and `TIME_ERROR` are not. The kernel sets `STA_UNSYNC` whenever the clock is set, and
//! chrony, ntpd and systemd-timesyncd clear it once they have synchronised it.
//!
//! systemd's `ProtectClock=yes` blocks `adjtimex` altogether (reads too): the packaged unit
//! does without it (the agent holds no `CAP_SYS_TIME` anyway).

use std::io;

/// Reads the kernel's NTP state.
#[allow(unsafe_code)]
pub fn synchronised() -> io::Result<bool> {
    // SAFETY: `timex` is plain data (integers and padding), valid all-zero; with `modes` 0
    // adjtimex only writes the kernel's state into it, and nothing else is touched.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(is_synchronised(state, tx.status))
}

/// The rule, apart from the call.
pub fn is_synchronised(state: i32, status: i32) -> bool {
    status & libc::STA_UNSYNC == 0
        && matches!(
            state,
            libc::TIME_OK | libc::TIME_INS | libc::TIME_DEL | libc::TIME_OOP
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronised_needs_a_good_state_and_no_unsync_flag() {
        assert!(is_synchronised(libc::TIME_OK, 0));
        assert!(is_synchronised(libc::TIME_OOP, libc::STA_PLL));
        assert!(!is_synchronised(libc::TIME_OK, libc::STA_UNSYNC));
        assert!(!is_synchronised(libc::TIME_ERROR, 0));
        assert!(!is_synchronised(libc::TIME_WAIT, 0));
    }

    #[test]
    fn the_kernel_answers() {
        // Whatever the machine's state, reading it works without privilege.
        synchronised().expect("adjtimex with modes 0");
    }
}
