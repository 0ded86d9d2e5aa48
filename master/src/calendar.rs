//! When a schedule's occurrences fall: a crontab with a time zone, a fixed interval, or one-off
//! dates, all as wall-clock Unix milliseconds; and occurrences packed into evenly spaced runs,
//! the form an agent keeps them in (a week of hourly runs is one run, not 168 entries).
//!
//! Pure computation over the time zone database: no clock is read here (the core passes the
//! wall clock in), so the planner is tested at any date, DST changes included.

use std::fmt;

use cronexpr::{Crontab, MakeTimestamp};
use serde::{Deserialize, Serialize};

/// The shortest interval an `every` calendar may have.
pub const MIN_EVERY_MS: u64 = 1_000;
/// One-off dates one calendar may list.
pub const MAX_DATES: usize = 64;

/// A schedule's calendar as defined: exactly one of the three forms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// Five crontab fields (minute hour day-of-month month day-of-week), as in crontab(5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone the crontab is read in (`UTC` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A fixed interval in milliseconds, from `start_ms` (or the schedule's creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// One-off dates, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_ms: Vec<u64>,
}

/// A calendar that parsed: what the planner walks.
#[derive(Debug, Clone)]
pub enum Calendar {
    Cron(Box<Crontab>),
    Every { start_ms: u64, every_ms: u64 },
    Dates(Vec<u64>),
}

/// Why a calendar was refused, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarError(pub String);

impl fmt::Display for CalendarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CalendarError {}

fn refuse(reason: impl Into<String>) -> CalendarError {
    CalendarError(reason.into())
}

impl CalendarSpec {
    /// Parses and checks the calendar; `created_ms` anchors an interval without a start.
    pub fn parse(&self, created_ms: u64) -> Result<Calendar, CalendarError> {
        let forms = usize::from(self.cron.is_some())
            + usize::from(self.every_ms.is_some())
            + usize::from(!self.at_ms.is_empty());
        if forms != 1 {
            return Err(refuse(
                "give exactly one of cron (with time_zone), every_ms or at_ms",
            ));
        }
        if self.time_zone.is_some() && self.cron.is_none() {
            return Err(refuse("time_zone applies to cron only"));
        }
        if self.start_ms.is_some() && self.every_ms.is_none() {
            return Err(refuse("start_ms applies to every_ms only"));
        }
        if let Some(cron) = &self.cron {
            let zone = self.time_zone.as_deref().unwrap_or("UTC");
            let fields = cron.split_ascii_whitespace().count();
            if fields != 5 {
                return Err(refuse(format!(
                    "cron '{cron}' has {fields} fields: give five (minute hour day-of-month \
                     month day-of-week) and the zone in time_zone"
                )));
            }
            if zone.split_ascii_whitespace().count() != 1 {
                return Err(refuse(format!("time zone '{zone}' is not one IANA name")));
            }
            let crontab = cronexpr::parse_crontab(&format!("{cron} {zone}"))
                .map_err(|e| refuse(format!("cron '{cron}' in {zone}: {e}")))?;
            // An expression that never matches (Feb 30) is refused now, not at planning.
            let now = MakeTimestamp::from_millisecond(created_ms as i64)
                .map_err(|e| refuse(e.to_string()))?;
            crontab
                .find_next(now)
                .map_err(|e| refuse(format!("cron '{cron}' never matches: {e}")))?;
            return Ok(Calendar::Cron(Box::new(crontab)));
        }
        if let Some(every_ms) = self.every_ms {
            if !(MIN_EVERY_MS..=crate::limits::DAY_MS * 366).contains(&every_ms) {
                return Err(refuse(format!(
                    "every_ms {every_ms} is out of range: {MIN_EVERY_MS} to one year"
                )));
            }
            let start_ms = self.start_ms.unwrap_or(created_ms);
            crate::limits::START_AT_MS
                .check(start_ms)
                .map_err(|e| refuse(e.reason))?;
            return Ok(Calendar::Every { start_ms, every_ms });
        }
        if self.at_ms.len() > MAX_DATES {
            return Err(refuse(format!(
                "{} dates: give at most {MAX_DATES}",
                self.at_ms.len()
            )));
        }
        let mut dates = self.at_ms.clone();
        for &at in &dates {
            crate::limits::START_AT_MS
                .check(at)
                .map_err(|e| refuse(e.reason))?;
        }
        dates.sort_unstable();
        dates.dedup();
        Ok(Calendar::Dates(dates))
    }
}

impl Calendar {
    /// Occurrences after `after_ms` up to and including `until_ms`, at most `limit`, in order.
    pub fn occurrences(&self, after_ms: u64, until_ms: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        match self {
            Self::Cron(crontab) => {
                let Ok(start) = MakeTimestamp::from_millisecond(after_ms as i64) else {
                    return out;
                };
                let Ok(times) = crontab.iter_after(start) else {
                    return out;
                };
                for t in times {
                    let Ok(t) = t else { break };
                    let ms = t.timestamp().as_millisecond();
                    if ms < 0 || ms as u64 > until_ms || out.len() >= limit {
                        break;
                    }
                    out.push(ms as u64);
                }
            }
            Self::Every { start_ms, every_ms } => {
                let first = if after_ms < *start_ms {
                    *start_ms
                } else {
                    let k = (after_ms - start_ms) / every_ms + 1;
                    start_ms.saturating_add(k.saturating_mul(*every_ms))
                };
                let mut t = first;
                while t <= until_ms && out.len() < limit {
                    out.push(t);
                    t = t.saturating_add(*every_ms);
                }
            }
            Self::Dates(dates) => out.extend(
                dates
                    .iter()
                    .copied()
                    .filter(|&d| d > after_ms && d <= until_ms)
                    .take(limit),
            ),
        }
        out
    }
}

/// Evenly spaced occurrences: `first_ms`, then every `period_ms`, `count` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub first_ms: u64,
    pub period_ms: u64,
    pub count: u32,
}

impl Run {
    pub fn last_ms(&self) -> u64 {
        self.first_ms
            .saturating_add(self.period_ms.saturating_mul(u64::from(self.count) - 1))
    }
}

/// Packs sorted occurrences into at most `max_runs` runs, greedily (each run as long as the
/// spacing holds). Returns the runs and how many occurrences they cover: those beyond are
/// handed over later, once the agent has run the first ones.
pub fn pack(times: &[u64], max_runs: usize) -> (Vec<Run>, usize) {
    let mut runs: Vec<Run> = Vec::new();
    let mut covered = 0;
    for &t in times {
        if let Some(run) = runs.last_mut() {
            let last = run.last_ms();
            let fits = if run.count == 1 {
                t > last
            } else {
                t == last.saturating_add(run.period_ms)
            };
            if fits && run.count < u32::MAX {
                if run.count == 1 {
                    run.period_ms = t - last;
                }
                run.count += 1;
                covered += 1;
                continue;
            }
        }
        if runs.len() == max_runs {
            break;
        }
        runs.push(Run {
            first_ms: t,
            period_ms: 0,
            count: 1,
        });
        covered += 1;
    }
    (runs, covered)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    /// 2026-03-28T00:00:00Z, the Saturday before Europe's switch to summer time.
    const SAT: u64 = 1_774_656_000_000;

    fn cron(expr: &str, zone: &str) -> Calendar {
        CalendarSpec {
            cron: Some(expr.into()),
            time_zone: Some(zone.into()),
            ..CalendarSpec::default()
        }
        .parse(SAT)
        .unwrap()
    }

    #[test]
    fn a_week_of_hourly_runs_is_one_run() {
        let hourly = cron("0 * * * *", "Europe/Berlin");
        let times = hourly.occurrences(SAT, SAT + 7 * 24 * HOUR, 1_000);
        assert_eq!(
            times.len(),
            7 * 24,
            "every hour; the skipped local hour is an UTC hour"
        );
        let (runs, covered) = pack(&times, 8);
        assert_eq!(covered, times.len());
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].period_ms, HOUR);
    }

    #[test]
    fn daily_in_a_zone_follows_its_summer_time() {
        let daily = cron("30 9 * * *", "Europe/Berlin");
        let times = daily.occurrences(SAT, SAT + 7 * 24 * HOUR, 100);
        assert_eq!(times.len(), 7);
        // 09:30 CET is 08:30Z; from Sunday 09:30 CEST is 07:30Z.
        assert_eq!(times[0], SAT + 8 * HOUR + HOUR / 2);
        assert_eq!(times[1], SAT + 24 * HOUR + 7 * HOUR + HOUR / 2);
        let (runs, covered) = pack(&times, 8);
        assert_eq!((runs.len(), covered), (2, 7), "{runs:?}");
    }

    #[test]
    fn bad_calendars_are_refused_with_the_reason() {
        let refuse = |spec: CalendarSpec| spec.parse(SAT).unwrap_err().0;
        let with = |expr: &str, zone: &str| CalendarSpec {
            cron: Some(expr.into()),
            time_zone: Some(zone.into()),
            ..CalendarSpec::default()
        };
        assert!(refuse(with("0 * * *", "UTC")).contains("five"));
        assert!(refuse(with("61 * * * *", "UTC")).contains("61"));
        assert!(refuse(with("0 * * * *", "Mars/Olympus")).contains("Mars/Olympus"));
        assert!(refuse(with("0 0 30 2 *", "UTC")).contains("never"));
        assert!(refuse(CalendarSpec::default()).contains("exactly one"));
        let every = |ms| CalendarSpec {
            every_ms: Some(ms),
            ..CalendarSpec::default()
        };
        assert!(refuse(every(10)).contains("every_ms"));
        assert!(every(2_000).parse(SAT).is_ok());
        let dates = CalendarSpec {
            at_ms: vec![SAT; MAX_DATES + 1],
            ..CalendarSpec::default()
        };
        assert!(refuse(dates).contains("dates"));
    }

    #[test]
    fn intervals_and_dates_plan_what_falls_in_the_window() {
        let every = Calendar::Every {
            start_ms: 1_000,
            every_ms: 2_000,
        };
        assert_eq!(
            every.occurrences(0, 7_000, 10),
            vec![1_000, 3_000, 5_000, 7_000]
        );
        assert_eq!(every.occurrences(3_000, 9_000, 2), vec![5_000, 7_000]);
        let dates = Calendar::Dates(vec![5, 10, 20]);
        assert_eq!(dates.occurrences(5, 20, 10), vec![10, 20]);
    }

    #[test]
    fn packing_stops_at_the_run_limit_and_says_how_far_it_got() {
        let times = [0, 10, 20, 25, 30, 100, 200, 250];
        let (runs, covered) = pack(&times, 2);
        assert_eq!(covered, 5, "{runs:?}");
        assert_eq!(
            runs[0],
            Run {
                first_ms: 0,
                period_ms: 10,
                count: 3
            }
        );
        assert_eq!(
            runs[1],
            Run {
                first_ms: 25,
                period_ms: 5,
                count: 2
            }
        );
    }
}
