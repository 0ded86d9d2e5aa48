//! Process groups a killed agent left behind.
//!
//! PR_SET_PDEATHSIG reaches only a task's leader; its children stay in the task's process group
//! when the agent is killed with SIGKILL. The agent therefore keeps the groups of its live tasks
//! in a small file next to the journal, tagged with the kernel's boot id, and at start kills
//! the groups listed by an earlier run of the same boot (after a reboot every one of them is
//! gone and the numbers may belong to someone else, so they are left alone).

use std::io;
use std::path::{Path, PathBuf};

use log::{info, warn};

use crate::process::{Signal, signal_group};

#[derive(Debug)]
pub struct Leftovers {
    path: PathBuf,
    boot: String,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Leftovers {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("groups"),
            boot: boot_id(),
        }
    }

    /// Kills the groups an earlier run of this boot left, then forgets them. Returns how many
    /// groups still existed.
    pub fn reap(&self) -> usize {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return 0;
        };
        let mut lines = text.lines();
        let mut killed = 0;
        if !self.boot.is_empty() && lines.next() == Some(self.boot.as_str()) {
            for pgid in lines.filter_map(|l| l.parse::<u32>().ok()) {
                match signal_group(pgid, Signal::Kill) {
                    Ok(true) => {
                        info!("killed process group {pgid} left by an earlier run");
                        killed += 1;
                    }
                    Ok(false) => {}
                    Err(e) => warn!("process group {pgid} left by an earlier run: {e}"),
                }
            }
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn!("{}: {e}", self.path.display());
        }
        killed
    }

    /// Records the groups of the live tasks (replacing the previous list).
    pub fn record(&self, groups: impl IntoIterator<Item = u32>) -> io::Result<()> {
        let mut text = self.boot.clone();
        for pgid in groups {
            text.push('\n');
            text.push_str(&pgid.to_string());
        }
        text.push('\n');
        // Written whole and renamed: a crash leaves the old list or the new one. No fsync: after
        // a power loss there are no processes left to kill.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_boots_are_left_alone() {
        let dir = std::env::temp_dir().join(format!("tether-leftovers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let l = Leftovers::new(&dir);
        // A list from another boot: never signalled (pid 2^22-1 would be refused anyway).
        std::fs::write(dir.join("groups"), "not-this-boot\n4194303\n").unwrap();
        assert_eq!(l.reap(), 0);
        assert!(!dir.join("groups").exists());
        l.record([12345, 678]).unwrap();
        let text = std::fs::read_to_string(dir.join("groups")).unwrap();
        assert!(text.ends_with("\n12345\n678\n"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
