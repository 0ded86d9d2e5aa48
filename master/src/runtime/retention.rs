//! History retention: finished tasks (with their attempts, output, events and audit entries)
//! whose last change is older than the configured age are deleted in the background, a
//! bounded batch at a time, so the store stays bounded and the loop is never held long.
//! Open tasks are never touched. SQLite reuses the freed pages: the file stops growing at its
//! peak instead of shrinking (no VACUUM, which would hold the database for seconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use tokio::time::Instant;

use crate::store::Store;

/// Tasks deleted per batch (one short transaction).
const BATCH: u32 = 500;
/// The first pass, soon after the start.
const FIRST: Duration = Duration::from_secs(1);
/// Between passes once nothing was left, at most (and at most half the age, so nothing stays
/// past 1.5 times it); a full batch is followed at once (after `AGAIN`).
const EVERY: Duration = Duration::from_secs(600);
const AGAIN: Duration = Duration::from_secs(1);
/// The longest age accepted: a century.
const MAX_AGE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `--retain-history`: `0` or `forever` keeps everything; otherwise a number with a unit,
/// `s`, `m`, `h` or `d` (`30d`, the default; `12h`).
pub fn parse_age(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "0" || text.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}`: expected a number with s, m, h or d (30d), or 0"
            ));
        }
    };
    let age = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(Duration::from_secs)
        .filter(|age| !age.is_zero() && *age <= MAX_AGE)
        .ok_or_else(|| format!("`{text}`: between 1s and 100 years, or 0 to keep everything"))?;
    Ok(Some(age))
}

/// When the next pass runs, and what the passes deleted.
#[derive(Debug)]
pub(super) struct Retention {
    age: Option<Duration>,
    next: Instant,
}

impl Retention {
    pub(super) fn new(age: Option<Duration>) -> Self {
        Self {
            age,
            next: Instant::now() + FIRST,
        }
    }

    /// When the next pass is due; `None` when everything is kept.
    pub(super) fn due(&self) -> Option<Instant> {
        self.age.map(|_| self.next)
    }

    /// One batch; how many tasks it deleted. A store that fails is tried again at the next
    /// pass.
    pub(super) fn pass(&mut self, store: &dyn Store) -> u64 {
        let Some(age) = self.age else { return 0 };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let before = now_ms.saturating_sub(age.as_millis() as u64);
        let mut deleted = 0;
        let wait = match store.prune_finished(before, BATCH) {
            Ok(p) => {
                if p.tasks + p.events + p.orders + p.handovers + p.schedules > 0 {
                    info!(
                        "history: deleted {} finished task(s), {} order(s), {} event(s), {} \
                         ended hand-over(s) and {} deleted schedule(s) older than {}",
                        p.tasks,
                        p.orders,
                        p.events,
                        p.handovers,
                        p.schedules,
                        humanize(age)
                    );
                }
                deleted = p.tasks;
                if p.full { AGAIN } else { every(age) }
            }
            Err(e) => {
                warn!("history retention: {e}; trying again later");
                every(age)
            }
        };
        self.next = Instant::now() + wait;
        deleted
    }
}

fn every(age: Duration) -> Duration {
    EVERY.min(age / 2).max(AGAIN)
}

fn humanize(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_age("0"), Ok(None));
        assert_eq!(parse_age("forever"), Ok(None));
        assert_eq!(parse_age("30d"), Ok(Some(Duration::from_secs(30 * 86_400))));
        assert_eq!(parse_age("12h"), Ok(Some(Duration::from_secs(43_200))));
        assert_eq!(parse_age("2s"), Ok(Some(Duration::from_secs(2))));
        for bad in [
            "",
            "30",
            "d",
            "-1d",
            "1.5h",
            "0s",
            "99999999999999999999d",
            "1w",
        ] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
        assert_eq!(humanize(Duration::from_secs(86_400 * 30)), "30d");
        assert_eq!(humanize(Duration::from_secs(90)), "90s");
    }
}
