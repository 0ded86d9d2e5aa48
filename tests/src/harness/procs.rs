//! What `/proc` says about processes: process groups (a task and everything it started),
//! zombies, and liveness. Linux only, like the agent.

use std::fs;

/// The fields of `/proc/PID/stat` the tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Reads one process's stat line; `None` once the process is gone.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process visible now.
pub fn all() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

/// Processes of process group `pgid` that still run (zombies excluded: they hold nothing but
/// a table slot, and who reaps an orphaned one is up to init).
pub fn live_group(pgid: u32) -> Vec<ProcStat> {
    all()
        .into_iter()
        .filter(|p| p.pgrp == pgid && !p.is_zombie())
        .collect()
}

/// Waits (at most [`super::WAIT`]) until no process of group `pgid` runs any more; panics
/// naming the survivors otherwise.
pub async fn wait_group_gone(pgid: u32) {
    let deadline = tokio::time::Instant::now() + super::WAIT;
    loop {
        let live = live_group(pgid);
        if live.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes of task group {pgid} survive: {live:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Children of `ppid` that exited and were not reaped.
pub fn zombie_children(ppid: u32) -> Vec<ProcStat> {
    all()
        .into_iter()
        .filter(|p| p.ppid == ppid && p.is_zombie())
        .collect()
}

/// A `/proc/PID/status` field as a number (`VmRSS` in kB, `voluntary_ctxt_switches`, ...).
pub fn status_number(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_comm() {
        let s = parse_stat(7, "7 (a) b (c) S 1 7 7 0 -1").unwrap();
        assert_eq!((s.state, s.ppid, s.pgrp), ('S', 1, 7));
        assert_eq!(parse_stat(7, "7 (x"), None);
        let me = stat(std::process::id()).unwrap();
        assert!(!me.is_zombie());
        assert!(status_number(std::process::id(), "VmRSS").unwrap() > 0);
    }
}
