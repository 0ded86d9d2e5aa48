//! An agent's task processes, simulated. What a task does is written in its argv, so a start
//! command fully describes its process:
//! `sim run=<ms> out=<chunks> [size=<bytes>] term=<ms>|ignore [code=<n>|flaky=<n>] [fail]`
//! (`size`: each chunk at least that long, up to the 256 bytes the agent reads at once; `code`:
//! the exit code, `flaky`: that code for odd attempt ids and 0 for even ones; `fail`: the
//! executable cannot be started, ENOENT).
//!
//! A spawn answers at once, as fork/exec does: a pid, or the errno for `fail`. The task writes
//! its output chunks spread over its run time and exits with its code (0 unless `code` or
//! `flaky` says). SIGTERM ends it a little later (or never, for
//! `term=ignore`); SIGKILL ends it at once. The processes die with the agent (systemd kills
//! the whole control group), so a crash simply forgets them.

use std::collections::{BTreeMap, VecDeque};

use tether_core::agent::Signal;
use tether_core::message::{Exit, MAX_ARGV, OUTPUT_CHUNK, StrList, Stream, TaskRef};
use tether_core::{Duration, Instant};

/// How a task answers SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTerm {
    Exit(Duration),
    Ignore,
}

/// The code a simulated task exits with at the end of its run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExitCode {
    #[default]
    Zero,
    Always(i32),
    /// The code for odd attempt ids, 0 for even ones: a retry may succeed, and a seed replays.
    OddAttempts(i32),
}

impl ExitCode {
    fn of(self, task: TaskRef) -> i32 {
        match self {
            Self::Zero => 0,
            Self::Always(code) => code,
            Self::OddAttempts(code) if task.attempt % 2 == 1 => code,
            Self::OddAttempts(_) => 0,
        }
    }
}

/// What a simulated task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    pub run: Duration,
    /// Output chunks written, spread over the run.
    pub outputs: u32,
    /// Each output chunk is padded to at least this many bytes (at most [`OUTPUT_CHUNK`]).
    pub chunk_size: u16,
    pub on_term: OnTerm,
    pub code: ExitCode,
    /// The spawn fails (ENOENT).
    pub fails: bool,
}

/// The errno of a failed spawn.
pub const SPAWN_ERRNO: i32 = 2;

impl Program {
    pub fn new(run: Duration) -> Self {
        Self {
            run,
            outputs: 0,
            chunk_size: 0,
            on_term: OnTerm::Exit(Duration::from_millis(100)),
            code: ExitCode::Zero,
            fails: false,
        }
    }

    pub fn argv(&self) -> StrList<MAX_ARGV> {
        let term = match self.on_term {
            OnTerm::Exit(d) => d.as_millis().to_string(),
            OnTerm::Ignore => "ignore".into(),
        };
        let run = format!("run={}", self.run.as_millis());
        let out = format!("out={}", self.outputs);
        let term = format!("term={term}");
        let size = format!("size={}", self.chunk_size);
        let code = match self.code {
            ExitCode::Zero => String::new(),
            ExitCode::Always(c) => format!("code={c}"),
            ExitCode::OddAttempts(c) => format!("flaky={c}"),
        };
        let mut items = vec!["sim", run.as_str(), out.as_str()];
        if self.chunk_size > 0 {
            items.push(size.as_str());
        }
        items.push(term.as_str());
        if !code.is_empty() {
            items.push(code.as_str());
        }
        if self.fails {
            items.push("fail");
        }
        // A few short items always fit MAX_ARGV.
        StrList::from_items(items).unwrap_or_default()
    }

    /// The argv as the master's requests take it.
    pub fn args(&self) -> Vec<String> {
        self.argv()
            .iter()
            .filter_map(|s| s.ok().map(str::to_owned))
            .collect()
    }

    /// Reads a program back from argv; `None` if it is not one of ours.
    pub fn parse(argv: &StrList<MAX_ARGV>) -> Option<Self> {
        let mut items = argv.iter();
        if items.next()?.ok()? != "sim" {
            return None;
        }
        let mut p = Self::new(Duration::from_secs(1));
        for item in items {
            let item = item.ok()?;
            if item == "fail" {
                p.fails = true;
                continue;
            }
            let (k, v) = item.split_once('=')?;
            match (k, v) {
                ("run", v) => p.run = Duration::from_millis(v.parse().ok()?),
                ("out", v) => p.outputs = v.parse().ok()?,
                ("size", v) => p.chunk_size = v.parse().ok()?,
                ("term", "ignore") => p.on_term = OnTerm::Ignore,
                ("term", v) => p.on_term = OnTerm::Exit(Duration::from_millis(v.parse().ok()?)),
                ("code", v) => p.code = ExitCode::Always(v.parse().ok()?),
                ("flaky", v) => p.code = ExitCode::OddAttempts(v.parse().ok()?),
                _ => return None,
            }
        }
        Some(p)
    }
}

/// What a process tells its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcEvent {
    Output {
        task: TaskRef,
        stream: Stream,
        data: Vec<u8>,
    },
    Exited {
        task: TaskRef,
        exit: Exit,
    },
}

/// The life of one process, for the invariants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    /// When it was spawned (and the agent told it runs).
    pub started: Instant,
    pub terminated: Option<Instant>,
    pub killed: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Proc {
    info: ProcInfo,
    program: Program,
    outputs: VecDeque<Instant>,
    next_chunk: u32,
    exit: Option<(Instant, Exit)>,
}

impl Proc {
    fn next_due(&self) -> Instant {
        let exit = self.exit.map_or(Instant::MAX, |(t, _)| t);
        self.outputs.front().map_or(exit, |&t| t.min(exit))
    }
}

#[derive(Debug, Clone)]
pub struct Procs {
    procs: BTreeMap<TaskRef, Proc>,
    next_pid: u32,
}

impl Default for Procs {
    fn default() -> Self {
        Self::new()
    }
}

impl Procs {
    pub fn new() -> Self {
        Self {
            procs: BTreeMap::new(),
            next_pid: 100,
        }
    }

    /// Starts the program now: its pid, or the errno it cannot be started with.
    pub fn spawn(&mut self, task: TaskRef, program: Program, now: Instant) -> Result<u32, i32> {
        if program.fails {
            return Err(SPAWN_ERRNO);
        }
        self.next_pid += 1;
        let run = program.run;
        let n = u64::from(program.outputs);
        let outputs = (1..=n)
            .map(|k| now.saturating_add(Duration::from_ticks(run.as_ticks() * k / (n + 1))))
            .collect();
        self.procs.insert(
            task,
            Proc {
                info: ProcInfo {
                    pid: self.next_pid,
                    started: now,
                    terminated: None,
                    killed: None,
                },
                program,
                outputs,
                next_chunk: 0,
                exit: Some((now.saturating_add(run), Exit::Code(program.code.of(task)))),
            },
        );
        Ok(self.next_pid)
    }

    pub fn signal(&mut self, task: TaskRef, signal: Signal, now: Instant) {
        let Some(p) = self.procs.get_mut(&task) else {
            return;
        };
        let end = match signal {
            Signal::Terminate => {
                p.info.terminated.get_or_insert(now);
                match p.program.on_term {
                    OnTerm::Exit(d) => Some((now.saturating_add(d), Exit::Signal(15))),
                    OnTerm::Ignore => None,
                }
            }
            Signal::Kill => {
                p.info.killed.get_or_insert(now);
                Some((now, Exit::Signal(9)))
            }
        };
        if let Some((t, exit)) = end
            && p.exit.is_none_or(|(old, _)| t < old)
        {
            p.exit = Some((t, exit));
            p.outputs.retain(|&o| o < t);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.procs.values().map(Proc::next_due).min()
    }

    /// The next thing a process does by `now`, earliest first.
    pub fn poll_event(&mut self, now: Instant) -> Option<ProcEvent> {
        let (&task, p) = self
            .procs
            .iter_mut()
            .filter(|(_, p)| p.next_due() <= now)
            .min_by_key(|(_, p)| p.next_due())?;
        if let Some(&t) = p.outputs.front()
            && p.exit.is_none_or(|(e, _)| t <= e)
        {
            p.outputs.pop_front();
            p.next_chunk += 1;
            let stream = if p.next_chunk % 3 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            let mut data = format!("task {} chunk {}\n", task.attempt, p.next_chunk).into_bytes();
            let size = usize::from(p.program.chunk_size).min(OUTPUT_CHUNK);
            if data.len() < size {
                data.resize(size, b'.');
            }
            return Some(ProcEvent::Output { task, stream, data });
        }
        let (_, exit) = p.exit?;
        self.procs.remove(&task);
        Some(ProcEvent::Exited { task, exit })
    }

    /// Processes alive (spawned, not exited).
    pub fn alive(&self) -> impl Iterator<Item = (TaskRef, ProcInfo)> + '_ {
        self.procs.iter().map(|(t, p)| (*t, p.info))
    }

    pub fn get(&self, task: TaskRef) -> Option<ProcInfo> {
        self.procs.get(&task).map(|p| p.info)
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// The agent died and its control group with it.
    pub fn crash(&mut self) {
        self.procs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TaskRef = TaskRef {
        task: 1,
        attempt: 1,
    };

    fn run_all(p: &mut Procs, until: Instant) -> Vec<(Instant, ProcEvent)> {
        let mut out = Vec::new();
        while let Some(t) = p.poll_timeout() {
            if t > until {
                break;
            }
            while let Some(e) = p.poll_event(t) {
                out.push((t, e));
            }
        }
        out
    }

    #[test]
    fn argv_round_trips() {
        let p = Program {
            run: Duration::from_secs(7),
            outputs: 3,
            chunk_size: 200,
            on_term: OnTerm::Ignore,
            code: ExitCode::Always(3),
            fails: true,
        };
        assert_eq!(Program::parse(&p.argv()), Some(p));
        let flaky = Program {
            code: ExitCode::OddAttempts(1),
            ..Program::new(Duration::from_secs(1))
        };
        assert_eq!(Program::parse(&flaky.argv()), Some(flaky));
        assert_eq!(
            Program::parse(&StrList::from_items(["/bin/true"]).unwrap()),
            None
        );
    }

    #[test]
    fn runs_outputs_and_exits() {
        let mut p = Procs::new();
        let prog = Program {
            outputs: 2,
            ..Program::new(Duration::from_secs(3))
        };
        assert_eq!(p.spawn(T, prog, Instant::from_secs(0)), Ok(101));
        let ev = run_all(&mut p, Instant::from_secs(10));
        assert_eq!(ev.len(), 3);
        assert!(matches!(ev[0].1, ProcEvent::Output { .. }));
        assert_eq!(ev[2].0, Instant::from_millis(3_000));
        assert_eq!(
            ev[2].1,
            ProcEvent::Exited {
                task: T,
                exit: Exit::Code(0)
            }
        );
        assert!(p.is_empty());
    }

    #[test]
    fn a_flaky_program_fails_on_odd_attempts_only() {
        let mut p = Procs::new();
        let flaky = Program {
            code: ExitCode::OddAttempts(4),
            ..Program::new(Duration::from_secs(1))
        };
        let even = TaskRef {
            task: 1,
            attempt: 2,
        };
        p.spawn(T, flaky, Instant::from_secs(0)).unwrap();
        p.spawn(even, flaky, Instant::from_secs(0)).unwrap();
        let exits: Vec<_> = run_all(&mut p, Instant::from_secs(5))
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        assert_eq!(
            exits,
            vec![
                ProcEvent::Exited {
                    task: T,
                    exit: Exit::Code(4)
                },
                ProcEvent::Exited {
                    task: even,
                    exit: Exit::Code(0)
                },
            ]
        );
    }

    #[test]
    fn ignoring_sigterm_needs_sigkill() {
        let mut p = Procs::new();
        let prog = Program {
            on_term: OnTerm::Ignore,
            ..Program::new(Duration::from_secs(100))
        };
        assert!(p.spawn(T, prog, Instant::from_secs(0)).is_ok());
        let failing = Program {
            fails: true,
            ..prog
        };
        let other = TaskRef {
            task: 2,
            attempt: 2,
        };
        assert_eq!(
            p.spawn(other, failing, Instant::from_secs(0)),
            Err(SPAWN_ERRNO)
        );
        run_all(&mut p, Instant::from_secs(1));
        p.signal(T, Signal::Terminate, Instant::from_secs(2));
        assert!(run_all(&mut p, Instant::from_secs(50)).is_empty());
        p.signal(T, Signal::Kill, Instant::from_secs(50));
        let ev = run_all(&mut p, Instant::from_secs(50));
        assert_eq!(
            ev,
            vec![(
                Instant::from_secs(50),
                ProcEvent::Exited {
                    task: T,
                    exit: Exit::Signal(9)
                }
            )]
        );
    }
}
