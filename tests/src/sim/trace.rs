//! The recent steps of a simulation, to print when an invariant fails, and a digest of every
//! step ever recorded, to prove that a seed replays identically.

use std::collections::VecDeque;
use std::fmt::{self, Write};

use tether_core::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    pub at: Instant,
    pub seq: u64,
    pub text: String,
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.at.as_micros();
        write!(
            f,
            "{:>7}.{:06}s #{:<6} {}",
            us / 1_000_000,
            us % 1_000_000,
            self.seq,
            self.text
        )
    }
}

#[derive(Debug, Clone)]
pub struct Trace {
    lines: VecDeque<TraceLine>,
    capacity: usize,
    seq: u64,
    digest: u64,
    scratch: String,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

impl Trace {
    /// Keeps the last `capacity` lines (0 keeps none but still digests).
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(capacity.min(4_096)),
            capacity,
            seq: 0,
            digest: FNV_OFFSET,
            scratch: String::new(),
        }
    }

    pub fn record(&mut self, at: Instant, args: fmt::Arguments<'_>) {
        self.scratch.clear();
        // Writing to a String cannot fail.
        let _ = self.scratch.write_fmt(args);
        self.digest = fnv(self.digest, &at.as_ticks().to_le_bytes());
        self.digest = fnv(self.digest, self.scratch.as_bytes());
        self.digest = fnv(self.digest, &[0xff]);
        self.seq += 1;
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(TraceLine {
            at,
            seq: self.seq,
            text: self.scratch.clone(),
        });
    }

    /// A hash of every line ever recorded, with its time.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// How many lines were ever recorded.
    pub fn recorded(&self) -> u64 {
        self.seq
    }

    pub fn lines(&self) -> impl Iterator<Item = &TraceLine> {
        self.lines.iter()
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.lines.len() as u64;
        if self.seq > shown {
            writeln!(f, "... {} earlier steps not kept", self.seq - shown)?;
        }
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_and_digests_everything() {
        let mut a = Trace::new(2);
        let mut b = Trace::new(0);
        for i in 0..5 {
            a.record(Instant::from_millis(i), format_args!("step {i}"));
            b.record(Instant::from_millis(i), format_args!("step {i}"));
        }
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.recorded(), 5);
        let texts: Vec<_> = a.lines().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["step 3", "step 4"]);
        let shown = a.to_string();
        assert!(
            shown.starts_with("... 3 earlier steps not kept\n"),
            "{shown}"
        );
        assert!(shown.contains("0.004000s #5      step 4"), "{shown}");
        b.record(Instant::from_millis(9), format_args!("x"));
        assert_ne!(a.digest(), b.digest());
    }
}
