//! The agent's figures for Prometheus, as a node_exporter textfile-collector file
//! (`metrics_file` in the configuration, off by default).
//!
//! A file, not a listener: the boards that are monitored already run node_exporter, which
//! serves `*.prom` files from its textfile directory; the agent then opens no port (nothing
//! more to secure), runs no HTTP server (binary size, memory) and needs no timer of its own:
//! the file is rewritten in wake-ups the agent has anyway, when a figure changed, at most once
//! a second unless the connection came or went (an idle agent's figures are at most a
//! heartbeat period old). Written whole to a temporary file and renamed, so a reader never
//! sees half a file.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::warn;
use tether_core::agent::Stats;

/// The soonest a changed figure is written after the last write (a busy task's output would
/// otherwise rewrite the file for every line).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What the agent exposes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub connected: bool,
    pub journal_bytes: u64,
    pub journal_max_bytes: u64,
    /// Events journaled and not yet acknowledged by the master.
    pub backlog: u64,
    pub tasks_held: usize,
    pub tasks_starting: usize,
    pub tasks_running: usize,
    pub stats: Stats,
}

impl Figures {
    /// The Prometheus text format, every series labelled with the agent's id.
    pub fn render(&self, agent: &str) -> String {
        let label = format!("agent=\"{}\"", escape(agent));
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (extra, value) in rows {
                let sep = if extra.is_empty() { "" } else { "," };
                let _ = writeln!(out, "{name}{{{label}{sep}{extra}}} {value}");
            }
        };
        let build = format!(
            "version=\"{}\",arch=\"{}\"",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        );
        family(
            "tether_agent_info",
            "gauge",
            "The agent's build: 1, with its version and architecture as labels.",
            &[(&build, 1)],
        );
        family(
            "tether_agent_connected",
            "gauge",
            "Whether the agent's MQTT connection is up (1) or not (0).",
            &[("", u64::from(self.connected))],
        );
        family(
            "tether_agent_journal_bytes",
            "gauge",
            "Bytes in the agent's journal.",
            &[("", self.journal_bytes)],
        );
        family(
            "tether_agent_journal_max_bytes",
            "gauge",
            "The journal's configured size limit in bytes.",
            &[("", self.journal_max_bytes)],
        );
        family(
            "tether_agent_journal_backlog_events",
            "gauge",
            "Events journaled and not yet acknowledged by the master.",
            &[("", self.backlog)],
        );
        family(
            "tether_agent_tasks",
            "gauge",
            "Attempts the agent holds, by phase.",
            &[
                ("phase=\"held\"", self.tasks_held as u64),
                ("phase=\"starting\"", self.tasks_starting as u64),
                ("phase=\"running\"", self.tasks_running as u64),
            ],
        );
        let s = &self.stats;
        family(
            "tether_agent_security_refusals_total",
            "counter",
            "Messages on the master's topics refused since the agent started, by reason.",
            &[
                ("reason=\"unauthenticated\"", s.unauthenticated),
                ("reason=\"bad_signature\"", s.bad_signatures),
                ("reason=\"replayed\"", s.replayed),
            ],
        );
        family(
            "tether_agent_bad_commands_total",
            "counter",
            "Commands that did not decode or verify since the agent started.",
            &[("", s.bad_commands)],
        );
        family(
            "tether_agent_rejected_starts_total",
            "counter",
            "Start orders the agent refused since it started (full, draining, not allowed).",
            &[("", s.rejected_starts)],
        );
        family(
            "tether_agent_presence_repairs_total",
            "counter",
            "Times the agent said again that it is online (a stale will or a verdict on its presence).",
            &[("", s.presence_repairs)],
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format asks.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The file and what was last written to it.
#[derive(Debug)]
pub struct Textfile {
    path: PathBuf,
    agent: String,
    written: Option<(Instant, Figures)>,
    failures: u64,
}

impl Textfile {
    pub fn new(path: PathBuf, agent: &str) -> Self {
        Self {
            path,
            agent: agent.to_owned(),
            written: None,
            failures: 0,
        }
    }

    /// Writes `figures` when they changed and the interval allows (a change of connection
    /// state always). A failure (full disk, missing directory) is logged at powers of two and
    /// retried at the next change; it never stops the agent.
    pub fn update(&mut self, now: Instant, figures: &Figures) {
        if let Some((at, last)) = &self.written {
            let unchanged = last == figures;
            let soon =
                now.duration_since(*at) < MIN_INTERVAL && last.connected == figures.connected;
            if unchanged || soon {
                return;
            }
        }
        match write_atomically(&self.path, figures.render(&self.agent).as_bytes()) {
            Ok(()) => self.written = Some((now, figures.clone())),
            Err(e) => {
                self.failures += 1;
                if self.failures.is_power_of_two() {
                    warn!(
                        "metrics file {}: {e} ({} failures so far)",
                        self.path.display(),
                        self.failures
                    );
                }
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // node_exporter reads only `*.prom`: the temporary name is never read half-written.
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_type_and_the_agent_label() {
        let f = Figures {
            connected: true,
            journal_bytes: 4096,
            backlog: 3,
            tasks_running: 2,
            ..Figures::default()
        };
        let text = f.render("pi-\"1\"");
        assert!(text.contains("tether_agent_connected{agent=\"pi-\\\"1\\\"\"} 1\n"));
        assert!(text.contains("tether_agent_journal_backlog_events{agent=\"pi-\\\"1\\\"\"} 3\n"));
        assert!(text.contains(",phase=\"running\"} 2\n"));
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(
            families,
            text.lines().filter(|l| l.starts_with("# HELP")).count()
        );
        assert_eq!(families, 10);
    }

    #[test]
    fn writes_on_change_at_most_once_a_second_but_at_once_on_connection_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether-agent.prom");
        let mut file = Textfile::new(path.clone(), "pi-1");
        let t0 = Instant::now();
        let mut f = Figures::default();
        file.update(t0, &f);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("connected{agent=\"pi-1\"} 0")
        );
        f.journal_bytes = 10;
        file.update(t0 + Duration::from_millis(500), &f);
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains("journal_bytes{agent=\"pi-1\"} 10")
        );
        f.connected = true;
        file.update(t0 + Duration::from_millis(600), &f);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("connected{agent=\"pi-1\"} 1")
                && text.contains("bytes{agent=\"pi-1\"} 10")
        );
        f.backlog = 1;
        file.update(t0 + Duration::from_millis(1_700), &f);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("backlog_events{agent=\"pi-1\"} 1")
        );
        assert!(!dir.path().join("tether-agent.prom.tmp").exists());
    }

    #[test]
    fn an_unwritable_file_is_counted_not_fatal() {
        let mut file = Textfile::new(PathBuf::from("/nonexistent-dir/x.prom"), "pi-1");
        file.update(Instant::now(), &Figures::default());
        file.update(
            Instant::now(),
            &Figures {
                connected: true,
                ..Figures::default()
            },
        );
        assert_eq!(file.failures, 2);
    }
}
