//! One of our binaries running as a child process: signals, kill -9, bounded waits for its
//! exit, and its log, printed when a test panics with it alive.

use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use super::agent::send_signal;

/// A running (or ended) process. Dropping it kills it (SIGKILL, which also ends a stopped one)
/// and, during a panic, prints its log.
#[derive(Debug)]
pub struct Spawned {
    name: &'static str,
    child: Option<Child>,
    pid: u32,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Spawned {
    pub fn new(name: &'static str, child: Child, log_path: PathBuf) -> Self {
        Self {
            name,
            pid: child.id(),
            child: Some(child),
            log_path,
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn signal(&self, signal: i32) {
        if self.exit.is_none() {
            send_signal(self.pid, signal);
        }
    }

    /// A normal stop: the process winds down and exits on its own; see [`Self::wait_exit`].
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// kill -9, and reap it: no goodbye (the broker sends the will).
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let mut child = self.child.take().expect("a child not yet reaped");
        let _ = child.kill();
        let status = child.wait().expect("wait for the child");
        self.exit = Some(status);
        status
    }

    /// The exit status if the process has ended (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
            self.child = None;
        }
        self.exit
    }

    /// Waits (at most [`super::WAIT`]) until the log holds a line containing every one of
    /// `needles`, and returns that line; panics with the log otherwise.
    pub async fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        loop {
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} logged no line with {needles:?} within {:?}",
                self.name,
                super::WAIT
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most `bound`) for the process to exit by itself; `None` if it still runs.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log_path.display(),
                self.log()
            );
        }
    }
}
