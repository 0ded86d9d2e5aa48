//! The Prometheus text exposition format (version 0.0.4), written by hand: a few families of
//! values the master loop reads from the core at scrape time, and two histograms it keeps.
//!
//! No crate: `prometheus-client` writes OpenMetrics (counters typed without their `_total`,
//! `# EOF`) and wants metrics that live and are incremented in a registry, not values read
//! when asked; the `metrics-exporter-prometheus` rumqttd pulls in is an old release built
//! around a process-wide recorder. The format itself is a few lines of text.

use std::fmt::Write as _;
use std::time::Duration;

/// The content type of [`Text`] (every Prometheus version accepts it).
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One exposition being written: a family header, then its samples.
#[derive(Debug, Default)]
pub(super) struct Text {
    out: String,
}

impl Text {
    /// `# HELP` and `# TYPE` of a family; its samples follow.
    pub(super) fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample; label values are escaped.
    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    /// A family of one unlabelled sample.
    pub(super) fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A histogram family: cumulative buckets, `+Inf`, sum and count.
    pub(super) fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> &mut Self {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            self.sample(&bucket, &[("le", &number(*bound))], cumulative as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count as f64)
    }

    pub(super) fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Integers without a fraction, infinities as Prometheus spells them.
fn number(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if v.is_nan() {
        return "NaN".to_owned();
    }
    format!("{v}")
}

/// Bucket bounds in seconds for the loop's latencies: a commit is an fsync (about a
/// millisecond on an SSD, tens on an SD card), a heartbeat waits for its batch's commit.
pub(super) const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A histogram over fixed bounds (the upper bound of each bucket, ascending).
#[derive(Debug, Clone)]
pub(super) struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; values above the last bound count in `count` only.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub(super) fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub(super) fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_escaped_and_histograms_cumulative() {
        let mut h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        let mut t = Text::default();
        t.family("x_total", Kind::Counter, "a\nb")
            .sample("x_total", &[("agent", "p\"i\\1")], 3.0);
        t.histogram("lag_seconds", "lag", &h);
        let text = t.finish();
        assert!(text.contains("# HELP x_total a\\nb\n# TYPE x_total counter\n"));
        assert!(text.contains("x_total{agent=\"p\\\"i\\\\1\"} 3\n"));
        assert!(text.contains("lag_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("lag_seconds_bucket{le=\"0.1\"} 2\n"));
        assert!(text.contains("lag_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("lag_seconds_count 3\n"));
        assert!(text.contains("lag_seconds_sum 3.05"));
    }
}
