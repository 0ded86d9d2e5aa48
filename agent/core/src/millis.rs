//! Milliseconds from the wire as a [`Duration`], never overflowing.
//!
//! `Duration::from_millis` multiplies by the tick rate and overflows (a panic in debug builds,
//! a wrapped, wrong value in release) above about 1.8e16 ms at the default 1 MHz tick. Every
//! time value a message or a journal record carries goes through [`duration`] instead: a value
//! beyond what a `Duration` can hold means "never" and saturates to [`Duration::MAX`].

use embassy_time::Duration;

/// The largest millisecond count `Duration::from_millis` converts without overflow.
const MAX_MS: u64 = Duration::MAX.as_millis();

/// `ms` milliseconds, or [`Duration::MAX`] when that many do not fit.
pub const fn duration(ms: u64) -> Duration {
    if ms > MAX_MS {
        Duration::MAX
    } else {
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_saturate_instead_of_overflowing() {
        assert_eq!(duration(0), Duration::from_ticks(0));
        assert_eq!(duration(1_000).as_millis(), 1_000);
        assert_eq!(duration(MAX_MS).as_millis(), MAX_MS);
        assert_eq!(duration(MAX_MS + 1), Duration::MAX);
        assert_eq!(duration(u64::MAX / 2), Duration::MAX);
        assert_eq!(duration(u64::MAX), Duration::MAX);
    }
}
