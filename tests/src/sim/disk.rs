//! An agent's journal on a simulated disk. Appends reach the platter in order (one fsync
//! stream) after a random small delay; a crash keeps only the durable prefix; a compaction is a
//! rewrite to a new file, fsynced and renamed over the old one, so it is durable at once.
//!
//! Log sequence numbers belong to one agent process: a restarted agent numbers its appends
//! from 1 again, so a crash forgets the numbers of the records it keeps.

use tether_core::{Duration, Instant};

use super::rng::Rng;

#[derive(Debug, Clone)]
struct Entry {
    bytes: Vec<u8>,
    /// The append's number in the current agent process; `None` for older records.
    lsn: Option<u64>,
    /// When the fsync covering it completes.
    due: Instant,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub appends: u64,
    pub compactions: u64,
    pub crashes: u64,
    /// Records that were written but not durable when the agent crashed.
    pub torn: u64,
}

#[derive(Debug, Clone)]
pub struct Disk {
    entries: Vec<Entry>,
    /// `entries[..durable]` survive a crash.
    durable: usize,
    delay: (Duration, Duration),
    /// The fsync stream is ordered: no append is durable before an earlier one.
    last_due: Instant,
    rng: Rng,
    stats: DiskStats,
}

impl Disk {
    /// Each append becomes durable `min..=max` after it is written (and never before an
    /// earlier one), so `max` bounds how long any append waits.
    pub fn new(min: Duration, max: Duration, rng: Rng) -> Self {
        Self {
            entries: Vec::new(),
            durable: 0,
            delay: (min, max.max(min)),
            last_due: Instant::from_ticks(0),
            rng,
            stats: DiskStats::default(),
        }
    }

    pub fn max_delay(&self) -> Duration {
        self.delay.1
    }

    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// Every record written, durable or not, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|e| e.bytes.as_slice())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes.len() as u64).sum()
    }

    pub fn append(&mut self, lsn: u64, bytes: Vec<u8>, now: Instant) {
        let delay = self
            .rng
            .range_ms(self.delay.0.as_millis(), self.delay.1.as_millis());
        let due = now.saturating_add(delay).max(self.last_due);
        self.last_due = due;
        self.stats.appends += 1;
        self.entries.push(Entry {
            bytes,
            lsn: Some(lsn),
            due,
        });
    }

    /// When the next pending append becomes durable.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.get(self.durable).map(|e| e.due)
    }

    /// Makes durable every append due by `now`, handing each to `on_durable`; returns the
    /// highest lsn now durable, if this call made any durable.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        mut on_durable: impl FnMut(&[u8]),
    ) -> Option<u64> {
        let mut lsn = None;
        while let Some(e) = self.entries.get(self.durable) {
            if e.due > now {
                break;
            }
            on_durable(&e.bytes);
            lsn = e.lsn.or(lsn);
            self.durable += 1;
        }
        lsn
    }

    /// Replaces the whole journal with `records`, durably and atomically. Returns the highest lsn
    /// this agent process has appended, all of which the rewrite made durable.
    pub fn rewrite(&mut self, records: Vec<Vec<u8>>, now: Instant) -> Option<u64> {
        let lsn = self.entries.iter().filter_map(|e| e.lsn).max();
        self.stats.compactions += 1;
        self.entries = records
            .into_iter()
            .map(|bytes| Entry {
                bytes,
                lsn: None,
                due: now,
            })
            .collect();
        self.durable = self.entries.len();
        self.last_due = now;
        lsn
    }

    /// The agent process died (kill -9 or power loss): what was not durable is gone.
    pub fn crash(&mut self) {
        self.stats.crashes += 1;
        self.stats.torn += (self.entries.len() - self.durable) as u64;
        self.entries.truncate(self.durable);
        for e in &mut self.entries {
            e.lsn = None;
        }
    }

    /// The storage itself is gone (a new SD card): nothing survives.
    pub fn lose(&mut self) {
        self.crash();
        self.entries.clear();
        self.durable = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Instant {
        Instant::from_millis(x)
    }

    #[test]
    fn durable_in_order_and_crash_keeps_the_prefix() {
        let mut d = Disk::new(
            Duration::from_millis(1),
            Duration::from_millis(50),
            Rng::new(5),
        );
        for lsn in 1..=20 {
            d.append(lsn, vec![lsn as u8], ms(lsn));
        }
        let mut seen = Vec::new();
        let mut last = None;
        let mut t = 0;
        while let Some(due) = d.poll_timeout() {
            assert!(due.as_millis() >= t, "in order");
            t = due.as_millis();
            if t > 40 {
                break;
            }
            last = d.handle_timeout(due, |b| seen.push(b[0])).or(last);
        }
        assert!(!seen.is_empty() && seen.len() < 20, "{seen:?}");
        assert_eq!(last, Some(seen.len() as u64));
        assert!(seen.windows(2).all(|w| w[0] + 1 == w[1]));
        d.crash();
        assert_eq!(d.len(), seen.len());
        assert_eq!(d.poll_timeout(), None);
        // A restarted agent numbers from 1 again; old records carry no lsn.
        d.append(1, vec![99], ms(100));
        assert_eq!(d.handle_timeout(ms(1_000), |_| {}), Some(1));
    }

    #[test]
    fn rewrite_is_durable_at_once() {
        let mut d = Disk::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
            Rng::new(1),
        );
        d.append(1, vec![1], ms(0));
        d.append(2, vec![2], ms(0));
        assert_eq!(d.rewrite(vec![vec![7]], ms(1)), Some(2));
        assert_eq!(d.poll_timeout(), None);
        d.crash();
        assert_eq!(d.records().collect::<Vec<_>>(), vec![&[7u8][..]]);
        d.lose();
        assert!(d.is_empty());
    }
}
