//! A scenario's measured timeline: what happened when, relative to the cut (t0), printed as
//! one table (and appended to `$TETHER_TIMELINE_FILE` when set, so one run's tables can be
//! collected). Bounds on it come from the heartbeat settings, with [`SLACK`] for a busy
//! machine; they are checks of order and of "not before the timeout", not timing goals.

use std::io::Write as _;
use std::time::Duration;

/// Allowance for scheduling, polling and process start on two shared cores.
pub const SLACK: Duration = Duration::from_secs(4);

#[derive(Debug, Clone)]
pub struct Timeline {
    title: String,
    t0_ms: Option<u64>,
    rows: Vec<(String, Option<u64>)>,
}

impl Timeline {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            t0_ms: None,
            rows: Vec::new(),
        }
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    /// Sets t0 (the cut) at `at_ms` and records it as a row.
    pub fn t0(&mut self, label: &str, at_ms: u64) {
        self.t0_ms = Some(at_ms);
        self.rows.push((label.to_owned(), Some(at_ms)));
    }

    pub fn t0_ms(&self) -> u64 {
        self.t0_ms.expect("t0 is set by the cut")
    }

    /// A row; `None` prints as "not seen".
    pub fn row(&mut self, label: &str, at_ms: Option<u64>) {
        self.rows.push((label.to_owned(), at_ms));
    }

    /// `at` relative to t0, in milliseconds (negative before the cut).
    pub fn rel(&self, at_ms: u64) -> i64 {
        at_ms as i64 - self.t0_ms() as i64
    }

    /// Asserts `label` happened, no earlier than `lo` and no later than `hi` after t0.
    pub fn assert_between(&self, label: &str, at_ms: Option<u64>, lo: Duration, hi: Duration) {
        let Some(at) = at_ms else {
            panic!("{label}: not seen\n{}", self.render());
        };
        let rel = self.rel(at);
        assert!(
            rel >= lo.as_millis() as i64 && rel <= hi.as_millis() as i64,
            "{label} at {:+.3}s, expected within [{:.3}s, {:.3}s]\n{}",
            rel as f64 / 1000.0,
            lo.as_secs_f64(),
            hi.as_secs_f64(),
            self.render()
        );
    }

    pub fn render(&self) -> String {
        let mut out = format!("timeline: {}\n", self.title);
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (label, at) in &self.rows {
            let when = match (at, self.t0_ms) {
                (Some(at), Some(t0)) => format!("{:+9.3}s", (*at as i64 - t0 as i64) as f64 / 1e3),
                (Some(_), None) => "   (no t0)".to_owned(),
                (None, _) => "  not seen".to_owned(),
            };
            out.push_str(&format!("  {label:<width$}  {when}\n"));
        }
        out
    }

    /// Prints the table to stderr and appends it to `$TETHER_TIMELINE_FILE`.
    pub fn print(&self) {
        let text = self.render();
        eprintln!("{text}");
        if let Some(path) = std::env::var_os("TETHER_TIMELINE_FILE")
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(f, "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_relative_to_the_cut() {
        let mut t = Timeline::new("x");
        t.row("before", Some(900));
        t.t0("cut", 1_000);
        t.row("kill", Some(4_250));
        t.row("never", None);
        let text = t.render();
        assert!(text.contains("-0.100s"), "{text}");
        assert!(text.contains("+3.250s"), "{text}");
        assert!(text.contains("not seen"), "{text}");
        t.assert_between(
            "kill",
            Some(4_250),
            Duration::from_secs(3),
            Duration::from_secs(4),
        );
        let late = std::panic::catch_unwind(|| {
            t.assert_between("kill", Some(9_000), Duration::ZERO, Duration::from_secs(4))
        });
        assert!(late.is_err());
    }
}
