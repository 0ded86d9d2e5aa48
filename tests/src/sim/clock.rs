//! Virtual time for a step loop: move to the earliest wake-up among several components, as
//! quinn-proto's test `Pair` and str0m's `progress` do, and a timeline for scripted events.

use std::collections::BTreeMap;
use std::fmt;

use tether_core::{Duration, Instant};

/// The loop kept returning the same instant: some component asks to be woken at `now` but
/// never makes progress (a livelock in the model or in the code under test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stuck {
    pub at: Instant,
    pub spins: u32,
}

impl fmt::Display for Stuck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation stuck at {} us after {} steps without time moving",
            self.at.as_micros(),
            self.spins
        )
    }
}

impl std::error::Error for Stuck {}

#[derive(Debug, Clone)]
pub struct Clock {
    now: Instant,
    spins: u32,
    max_spins: u32,
}

impl Clock {
    pub fn new(start: Instant) -> Self {
        Self {
            now: start,
            spins: 0,
            max_spins: 100_000,
        }
    }

    /// How many consecutive steps at one instant count as stuck (default 100 000).
    pub fn with_max_spins(mut self, max_spins: u32) -> Self {
        self.max_spins = max_spins;
        self
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves to the earliest of `wakeups` (never backwards: a wake-up in the past means
    /// "now"). Returns the new now when something is due by `until`; otherwise moves to
    /// `until` and returns `None`, which ends the loop:
    ///
    /// ```text
    /// while let Some(now) = clock.advance([net.poll_timeout(), core.poll_timeout()], until)? {
    ///     net.step(now);
    ///     // feed net events to the owners, let them act, feed their timeouts...
    /// }
    /// ```
    pub fn advance(
        &mut self,
        wakeups: impl IntoIterator<Item = Option<Instant>>,
        until: Instant,
    ) -> Result<Option<Instant>, Stuck> {
        let next = wakeups.into_iter().flatten().min();
        match next {
            Some(t) if t <= until => {
                let t = t.max(self.now);
                if t == self.now {
                    self.spins += 1;
                    if self.spins > self.max_spins {
                        return Err(Stuck {
                            at: t,
                            spins: self.spins,
                        });
                    }
                } else {
                    self.spins = 0;
                }
                self.now = t;
                Ok(Some(t))
            }
            _ => {
                if until > self.now {
                    self.now = until;
                    self.spins = 0;
                }
                Ok(None)
            }
        }
    }

    /// `now + d`, saturating.
    pub fn after(&self, d: Duration) -> Instant {
        self.now.saturating_add(d)
    }
}

/// Events scripted for given instants (fault switches, kills, restarts), popped in time
/// order; equal instants keep insertion order.
#[derive(Debug, Clone)]
pub struct Timeline<T> {
    items: BTreeMap<(Instant, u64), T>,
    seq: u64,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<T> Timeline<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, at: Instant, item: T) {
        self.items.insert((at, self.seq), item);
        self.seq += 1;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.items.keys().next().map(|(at, _)| *at)
    }

    /// The next item due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        let entry = self.items.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let ((at, _), item) = entry.remove_entry();
        Some((at, item))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_to_earliest_and_stops_at_until() {
        let mut c = Clock::new(Instant::from_secs(0));
        let until = Instant::from_secs(10);
        let got = c.advance(
            [
                None,
                Some(Instant::from_secs(3)),
                Some(Instant::from_secs(2)),
            ],
            until,
        );
        assert_eq!(got, Ok(Some(Instant::from_secs(2))));
        // A wake-up in the past is "now", not a step back.
        assert_eq!(
            c.advance([Some(Instant::from_secs(1))], until),
            Ok(Some(Instant::from_secs(2)))
        );
        assert_eq!(c.advance([Some(Instant::from_secs(11))], until), Ok(None));
        assert_eq!(c.now(), until);
        assert_eq!(c.advance([None], until), Ok(None));
    }

    #[test]
    fn detects_a_livelock() {
        let mut c = Clock::new(Instant::from_secs(0)).with_max_spins(3);
        let t = Some(Instant::from_secs(0));
        for _ in 0..3 {
            assert!(c.advance([t], Instant::from_secs(1)).is_ok());
        }
        assert_eq!(
            c.advance([t], Instant::from_secs(1)),
            Err(Stuck {
                at: Instant::from_secs(0),
                spins: 4
            })
        );
    }

    #[test]
    fn timeline_pops_in_order() {
        let mut t = Timeline::new();
        t.push(Instant::from_secs(2), "b");
        t.push(Instant::from_secs(1), "a");
        t.push(Instant::from_secs(2), "c");
        assert_eq!(t.poll_timeout(), Some(Instant::from_secs(1)));
        assert_eq!(t.pop_due(Instant::from_millis(500)), None);
        let all: Vec<_> = std::iter::from_fn(|| t.pop_due(Instant::from_secs(5)))
            .map(|(_, x)| x)
            .collect();
        assert_eq!(all, ["a", "b", "c"]);
        assert!(t.is_empty());
    }
}
