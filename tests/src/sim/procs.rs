//! An agent's task processes, simulated. What a task does is written in its argv, so a start
//! command fully describes its process: `sim run=<ms> out=<chunks> term=<ms>|ignore [fail]`
//! (`fail`: the executable cannot be started, ENOENT).
//!
//! A spawn is confirmed after a small random delay; the task writes its output chunks spread
//! over its run time and exits with code 0. SIGTERM ends it a little later (or never, for
//! `term=ignore`); SIGKILL ends it at once. The processes die with the agent (systemd kills
//! the whole control group), so a crash simply forgets them.

use std::collections::{BTreeMap, VecDeque};

use tether_core::agent::Signal;
use tether_core::message::{Exit, MAX_ARGV, StrList, Stream, TaskRef};
use tether_core::{Duration, Instant};

use super::rng::Rng;

/// How a task answers SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTerm {
    Exit(Duration),
    Ignore,
}

/// What a simulated task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    pub run: Duration,
    /// Output chunks written, spread over the run.
    pub outputs: u32,
    pub on_term: OnTerm,
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
            on_term: OnTerm::Exit(Duration::from_millis(100)),
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
        let mut items = vec!["sim", run.as_str(), out.as_str(), term.as_str()];
        if self.fails {
            items.push("fail");
        }
        // A few short items always fit MAX_ARGV.
        StrList::from_items(items).unwrap_or_default()
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
                ("term", "ignore") => p.on_term = OnTerm::Ignore,
                ("term", v) => p.on_term = OnTerm::Exit(Duration::from_millis(v.parse().ok()?)),
                _ => return None,
            }
        }
        Some(p)
    }
}

/// What a process tells its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcEvent {
    Started {
        task: TaskRef,
        pid: u32,
    },
    Output {
        task: TaskRef,
        stream: Stream,
        data: Vec<u8>,
    },
    Exited {
        task: TaskRef,
        exit: Exit,
    },
    SpawnFailed {
        task: TaskRef,
        errno: i32,
    },
}

/// The life of one process, for the invariants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub spawned: Instant,
    /// When the agent was told it runs.
    pub started: Option<Instant>,
    pub terminated: Option<Instant>,
    pub killed: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Proc {
    info: ProcInfo,
    program: Program,
    start_due: Instant,
    outputs: VecDeque<Instant>,
    next_chunk: u32,
    exit: Option<(Instant, Exit)>,
}

impl Proc {
    fn next_due(&self) -> Instant {
        if self.info.started.is_none() {
            return self.start_due;
        }
        let exit = self.exit.map_or(Instant::MAX, |(t, _)| t);
        self.outputs.front().map_or(exit, |&t| t.min(exit))
    }
}

#[derive(Debug, Clone)]
pub struct Procs {
    procs: BTreeMap<TaskRef, Proc>,
    spawn_delay: (Duration, Duration),
    next_pid: u32,
    rng: Rng,
}

impl Procs {
    pub fn new(spawn_delay: (Duration, Duration), rng: Rng) -> Self {
        Self {
            procs: BTreeMap::new(),
            spawn_delay,
            next_pid: 100,
            rng,
        }
    }

    pub fn spawn(&mut self, task: TaskRef, program: Program, now: Instant) {
        let delay = self.rng.range_ms(
            self.spawn_delay.0.as_millis(),
            self.spawn_delay.1.as_millis(),
        );
        self.next_pid += 1;
        self.procs.insert(
            task,
            Proc {
                info: ProcInfo {
                    pid: self.next_pid,
                    spawned: now,
                    started: None,
                    terminated: None,
                    killed: None,
                },
                program,
                start_due: now.saturating_add(delay),
                outputs: VecDeque::new(),
                next_chunk: 0,
                exit: None,
            },
        );
    }

    pub fn signal(&mut self, task: TaskRef, signal: Signal, now: Instant) {
        let Some(p) = self.procs.get_mut(&task) else {
            return;
        };
        // A signal before the process runs takes effect as it starts.
        let at = if p.info.started.is_some() {
            now
        } else {
            p.start_due
        };
        let end = match signal {
            Signal::Terminate => {
                p.info.terminated.get_or_insert(now);
                match p.program.on_term {
                    OnTerm::Exit(d) => Some((at.saturating_add(d), Exit::Signal(15))),
                    OnTerm::Ignore => None,
                }
            }
            Signal::Kill => {
                p.info.killed.get_or_insert(now);
                Some((at, Exit::Signal(9)))
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
        if p.info.started.is_none() && p.program.fails {
            self.procs.remove(&task);
            return Some(ProcEvent::SpawnFailed {
                task,
                errno: SPAWN_ERRNO,
            });
        }
        if p.info.started.is_none() {
            // Stepped to exactly its due time, so `now` is when it starts.
            let at = now;
            p.info.started = Some(at);
            let run = p.program.run;
            let n = u64::from(p.program.outputs);
            for k in 1..=n {
                let off = Duration::from_ticks(run.as_ticks() * k / (n + 1));
                p.outputs.push_back(at.saturating_add(off));
            }
            let natural = (at.saturating_add(run), Exit::Code(0));
            p.exit = Some(match p.exit {
                // Signalled before it ran.
                Some((t, e)) if t < natural.0 => (t.max(at), e),
                _ => natural,
            });
            let exit_at = p.exit.map_or(at, |(t, _)| t);
            p.outputs.retain(|&o| o < exit_at);
            return Some(ProcEvent::Started {
                task,
                pid: p.info.pid,
            });
        }
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
            let data = format!("task {} chunk {}\n", task.attempt, p.next_chunk).into_bytes();
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
            on_term: OnTerm::Ignore,
            fails: true,
        };
        assert_eq!(Program::parse(&p.argv()), Some(p));
        assert_eq!(
            Program::parse(&StrList::from_items(["/bin/true"]).unwrap()),
            None
        );
    }

    #[test]
    fn runs_outputs_and_exits() {
        let mut p = Procs::new(
            (Duration::from_millis(5), Duration::from_millis(5)),
            Rng::new(1),
        );
        let prog = Program {
            outputs: 2,
            ..Program::new(Duration::from_secs(3))
        };
        p.spawn(T, prog, Instant::from_secs(0));
        let ev = run_all(&mut p, Instant::from_secs(10));
        assert_eq!(ev.len(), 4);
        assert!(matches!(ev[0].1, ProcEvent::Started { .. }));
        assert_eq!(ev[3].0, Instant::from_millis(3_005));
        assert_eq!(
            ev[3].1,
            ProcEvent::Exited {
                task: T,
                exit: Exit::Code(0)
            }
        );
        assert!(p.is_empty());
    }

    #[test]
    fn ignoring_sigterm_needs_sigkill() {
        let mut p = Procs::new(
            (Duration::from_millis(1), Duration::from_millis(1)),
            Rng::new(1),
        );
        let prog = Program {
            on_term: OnTerm::Ignore,
            ..Program::new(Duration::from_secs(100))
        };
        p.spawn(T, prog, Instant::from_secs(0));
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
