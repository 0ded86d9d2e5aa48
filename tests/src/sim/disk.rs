//! An agent's journal on a simulated disk. Appends reach the platter in order (one fsync
//! stream) after a random small delay; a crash keeps only the durable prefix; a compaction is a
//! rewrite to a new file, fsynced and renamed over the old one, so it is durable at once. The
//! journal has the agent's cap and framing: an append that does not fit is refused.
//!
//! Log sequence numbers belong to one agent process: a restarted agent numbers its appends
//! from 1 again, so a crash forgets the numbers of the records it keeps.

use tether_agent::journal::{HEADER_LEN, frame_len};
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
    /// Appends refused for want of room.
    pub full: u64,
}

/// The journal is at its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Debug, Clone)]
pub struct Disk {
    entries: Vec<Entry>,
    /// `entries[..durable]` survive a crash.
    durable: usize,
    /// Bytes the journal file holds, header and framing included, and its cap.
    bytes: u64,
    max_bytes: u64,
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
            bytes: HEADER_LEN,
            max_bytes: u64::MAX,
            delay: (min, max.max(min)),
            last_due: Instant::from_ticks(0),
            rng,
            stats: DiskStats::default(),
        }
    }

    /// Caps the journal at `max_bytes` (the agent's `journal_max_bytes`).
    pub fn with_cap(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
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

    /// Bytes the journal file holds, header and framing included.
    pub fn len_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn append(&mut self, lsn: u64, bytes: Vec<u8>, now: Instant) -> Result<(), Full> {
        let len = frame_len(bytes.len());
        if self.bytes + len > self.max_bytes {
            self.stats.full += 1;
            return Err(Full);
        }
        self.bytes += len;
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
        Ok(())
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
        self.bytes = HEADER_LEN + records.iter().map(|r| frame_len(r.len())).sum::<u64>();
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
        self.bytes = HEADER_LEN
            + self
                .entries
                .iter()
                .map(|e| frame_len(e.bytes.len()))
                .sum::<u64>();
        for e in &mut self.entries {
            e.lsn = None;
        }
    }

    /// The storage itself is gone (a new SD card): nothing survives.
    pub fn lose(&mut self) {
        self.crash();
        self.entries.clear();
        self.durable = 0;
        self.bytes = HEADER_LEN;
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
            d.append(lsn, vec![lsn as u8], ms(lsn)).unwrap();
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
        d.append(1, vec![99], ms(100)).unwrap();
        assert_eq!(d.handle_timeout(ms(1_000), |_| {}), Some(1));
    }

    #[test]
    fn rewrite_is_durable_at_once() {
        let mut d = Disk::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
            Rng::new(1),
        );
        d.append(1, vec![1], ms(0)).unwrap();
        d.append(2, vec![2], ms(0)).unwrap();
        assert_eq!(d.rewrite(vec![vec![7]], ms(1)), Some(2));
        assert_eq!(d.poll_timeout(), None);
        d.crash();
        assert_eq!(d.records().collect::<Vec<_>>(), vec![&[7u8][..]]);
        d.lose();
        assert!(d.is_empty());
    }

    #[test]
    fn an_append_beyond_the_cap_is_refused() {
        let mut d = Disk::new(
            Duration::from_millis(1),
            Duration::from_millis(1),
            Rng::new(1),
        )
        .with_cap(HEADER_LEN + frame_len(10));
        assert_eq!(d.append(1, vec![0; 10], ms(0)), Ok(()));
        assert_eq!(d.append(2, vec![0; 1], ms(0)), Err(Full));
        assert_eq!(d.len_bytes(), d.max_bytes());
        d.rewrite(Vec::new(), ms(1));
        assert_eq!(d.append(3, vec![0; 1], ms(1)), Ok(()));
    }
}
