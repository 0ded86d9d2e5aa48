//! Task processes: spawn, stream their output, signal their group, report their end.
//!
//! Every task runs in its own process group (pgid = pid), so the agent can terminate it with
//! everything it started ([`signal_group`]). The child starts from an empty environment (only
//! a default `PATH` and the task's own items), stdin on `/dev/null`, no descriptor beyond 0-2,
//! no capabilities of the agent's, and `PR_SET_PDEATHSIG(SIGKILL)`, so a task leader does not outlive
//! a crashed agent. With a [`Confinement`] it also switches user and group (supplementary
//! groups set to the configured ones, none by default, then setgid, then setuid) and sets its resource limits before exec; it
//! enters its working directory as the task's user, so the directory's permissions apply to
//! the task, not to the agent.
//!
//! Output is read in chunks of at most [`OUTPUT_CHUNK`] bytes and sent through the caller's
//! bounded channel: when the receiver falls behind, reading stops, the pipe fills and the task
//! blocks on write. Nothing is buffered without bound.
//!
//! Per task the channel carries `Started`, then `Output`s, then exactly one `Exited`, sent
//! after both pipes reached end of file, or after a bounded wait when a survivor of the task
//! (a background grandchild) keeps a pipe open. A task that cannot be started gets just one
//! `Exited` with [`Exit::SpawnFailed`].
//!
//! **PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process.**
//! Call [`Supervisor::spawn`] from the agent's main thread, inside a current_thread tokio
//! runtime that lives as long as the agent; spawning from a short-lived worker thread would
//! kill the task when that thread ends. The signal reaches the task leader only; its own
//! children are reached by [`signal_group`] while the agent lives.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tether_core::message::{Exit, OUTPUT_CHUNK, Stream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::confine::{Confinement, RawResource};

/// `PATH` every task starts with; a `PATH=` item of the task replaces it.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCommand {
    /// Program and arguments; the program is looked up in the task's `PATH`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` items added to the otherwise empty environment.
    pub env: Vec<String>,
    pub cwd: PathBuf,
}

/// Output chunk: at most [`OUTPUT_CHUNK`] bytes, the size tether-core's events carry.
pub type Chunk = heapless::Vec<u8, OUTPUT_CHUNK>;

// Output dominates the traffic: boxing its chunk would allocate per 256 bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent<K> {
    /// The process runs; `pid` is also its process group id.
    Started {
        key: K,
        pid: u32,
    },
    Output {
        key: K,
        stream: Stream,
        data: Chunk,
    },
    /// The last event of a task.
    Exited {
        key: K,
        exit: Exit,
    },
}

impl<K> ProcessEvent<K> {
    pub fn key(&self) -> &K {
        match self {
            Self::Started { key, .. } | Self::Output { key, .. } | Self::Exited { key, .. } => key,
        }
    }
}

/// A task could not be started; `errno` is what the OS said (EINVAL for a malformed command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnError {
    pub errno: i32,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task could not be started: {}",
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for SpawnError {}

/// How long to keep reading after the task leader exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainConfig {
    /// Stop when no output arrived for this long (a survivor holds the pipe open silently).
    pub idle: Duration,
    /// Stop this long after the exit at the latest (a survivor keeps writing), not counting
    /// time spent waiting for the channel's receiver.
    pub max: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            idle: Duration::from_millis(500),
            max: Duration::from_secs(5),
        }
    }
}

/// What a pipe may still deliver after the exit: the most a task can leave unread in a pipe
/// (Linux `pipe-max-size` default). More can only come from a survivor.
const DRAIN_MAX_BYTES: usize = 1 << 20;

/// Spawns tasks and feeds their events into one bounded channel.
#[derive(Debug, Clone)]
pub struct Supervisor<K> {
    events: mpsc::Sender<ProcessEvent<K>>,
    drain: DrainConfig,
    confinement: Confinement,
}

impl<K> Supervisor<K>
where
    K: Clone + Send + 'static,
{
    pub fn new(events: mpsc::Sender<ProcessEvent<K>>) -> Self {
        Self::with_drain(events, DrainConfig::default())
    }

    pub fn with_drain(events: mpsc::Sender<ProcessEvent<K>>, drain: DrainConfig) -> Self {
        Self {
            events,
            drain,
            confinement: Confinement::default(),
        }
    }

    /// Runs every task under `confinement` (see [`crate::confine::prepare`], which checks
    /// that this process may apply it).
    pub fn confined(mut self, confinement: Confinement) -> Self {
        self.confinement = confinement;
        self
    }

    /// Starts a task and returns its pid (= process group id).
    ///
    /// Must run inside a tokio runtime, on the thread that lives as long as the agent (see
    /// the module docs on PDEATHSIG). Never blocks on the channel: the events of the task,
    /// including `Exited { SpawnFailed }` when this returns an error, are sent by a tokio task,
    /// so the caller may be the channel's only receiver.
    pub fn spawn(&self, key: K, task: &TaskCommand) -> Result<u32, SpawnError> {
        let started = start(task, &self.confinement).and_then(|child| match child.id() {
            Some(pid) => Ok((child, pid)),
            // Only after the child was reaped, which cannot have happened yet.
            None => Err(SpawnError {
                errno: libc::ECHILD,
            }),
        });
        let events = self.events.clone();
        match started {
            Ok((child, pid)) => {
                tokio::spawn(supervise(key, child, pid, events, self.drain));
                Ok(pid)
            }
            Err(err) => {
                tokio::spawn(async move {
                    let exit = Exit::SpawnFailed(err.errno);
                    let _ = events.send(ProcessEvent::Exited { key, exit }).await;
                });
                Err(err)
            }
        }
    }
}

fn start(task: &TaskCommand, confinement: &Confinement) -> Result<Child, SpawnError> {
    let einval = SpawnError {
        errno: libc::EINVAL,
    };
    let (program, args) = task.argv.split_first().ok_or(einval)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The supervisor always waits; dropping a handle must not kill a `continue` task.
        .kill_on_drop(false);
    for item in &task.env {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                cmd.env(k, v);
            }
            _ => return Err(einval),
        }
    }
    let cwd = CString::new(task.cwd.as_os_str().as_bytes()).map_err(|_| einval)?;
    let limits = confinement
        .limits
        .rlimits()
        .map(|(resource, soft, hard)| {
            // A 32-bit rlim_t cannot hold more than "unlimited" anyway.
            let raw = |v: u64| libc::rlim_t::try_from(v).unwrap_or(libc::RLIM_INFINITY);
            (
                resource.raw(),
                libc::rlimit {
                    rlim_cur: raw(soft),
                    rlim_max: raw(hard),
                },
            )
        })
        .collect();
    configure_child(
        &mut cmd,
        ChildSetup {
            identity: confinement.identity.map(|i| (i.uid, i.gid)),
            groups: confinement.groups.clone(),
            cwd,
            limits,
        },
    );
    cmd.spawn().map_err(|e| SpawnError {
        // Errors without an errno (e.g. a NUL inside an argument) are malformed input.
        errno: e.raw_os_error().unwrap_or(libc::EINVAL),
    })
}

/// capset(2)'s header (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// capset(2)'s data, one per 32 capabilities.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// What the child applies to itself between fork and exec, prepared before the fork (the
/// child must not allocate).
struct ChildSetup {
    /// `(uid, gid)` to switch to.
    identity: Option<(libc::uid_t, libc::gid_t)>,
    /// Supplementary groups with the identity.
    groups: Vec<libc::gid_t>,
    cwd: CString,
    limits: heapless::Vec<(RawResource, libc::rlimit), 4>,
}

/// Sets up the forked child before exec: identity, working directory, parent-death signal, no
/// capabilities, no inherited descriptors, resource limits.
#[allow(unsafe_code)]
fn configure_child(cmd: &mut Command, setup: ChildSetup) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // async-signal-safe system calls (setgroups, setgid, setuid, chdir, prctl, getppid,
    // capget, capset, setrlimit, close_range/getrlimit/fcntl) on data prepared before the fork, takes no
    // locks and allocates nothing (io::Error::last_os_error only reads errno).
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = setup.identity {
                // Groups first: after setuid the process may no longer change them.
                if libc::setgroups(setup.groups.len(), setup.groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            // As the task's user: its own permissions decide whether it may work there.
            if libc::chdir(setup.cwd.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // After the identity switch, which clears the parent-death signal.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The agent may have died between fork and prctl: then nobody will send the
            // signal, so do not start the task at all.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // No capability of the agent's (it may hold CAP_SETUID and friends as ambient
            // ones to switch users) passes to the task through exec: empty the inheritable
            // set, which empties the ambient one. Permitted and effective stay: exec
            // recomputes them, and raising them there (root regaining its bounding set)
            // would clear the parent-death signal again.
            let header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let mut data = [CapData::default(); 2];
            if libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for d in &mut data {
                d.inheritable = 0;
            }
            if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            // std and tokio open everything O_CLOEXEC, but descriptors inherited by the agent
            // itself (from a shell, a test harness, a service manager) are not. Mark them
            // close-on-exec rather than closing them: std reports exec failures through one.
            let r = libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            );
            if r != 0 {
                // Kernels before 5.11: walk the descriptor table up to the limit.
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur.min(1 << 20) as libc::c_int
                } else {
                    1024
                };
                for fd in 3..max {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            // Last: a low RLIMIT_NOFILE must not shorten the walk above.
            for (resource, limit) in &setup.limits {
                if libc::setrlimit(*resource, limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Signals a whole process group. Returns `Ok(false)` when no such group exists (any more).
///
/// `pgid` must be a task's pid (> 1): 0 and 1 would address the agent's own group or every
/// process, so they are refused.
#[allow(unsafe_code)]
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<bool> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a task process group"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(-pgid, signal.number()) };
    if r == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The signals the agent sends to tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Asks the task to stop (first step of a kill).
    Term,
    /// Ends it (after the grace time).
    Kill,
}

impl Signal {
    pub fn number(self) -> i32 {
        match self {
            Self::Term => libc::SIGTERM,
            Self::Kill => libc::SIGKILL,
        }
    }
}

/// Turns a wait status into the protocol's exit.
pub fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        // wait(2) reports only exits and deaths by signal; keep a value anyway.
        (None, None) => Exit::Lost,
    }
}

async fn supervise<K: Clone>(
    key: K,
    mut child: Child,
    pid: u32,
    events: mpsc::Sender<ProcessEvent<K>>,
    drain: DrainConfig,
) {
    // If the receiver is gone the agent is shutting down; still wait so no zombie is left.
    let _ = events
        .send(ProcessEvent::Started {
            key: key.clone(),
            pid,
        })
        .await;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (exited_tx, exited_rx) = watch::channel(None);
    let waiter = async {
        let status = child.wait().await;
        let _ = exited_tx.send(Some(Instant::now()));
        status
    };
    let (status, (), ()) = tokio::join!(
        waiter,
        pump(
            stdout,
            key.clone(),
            Stream::Stdout,
            &events,
            exited_rx.clone(),
            drain
        ),
        pump(
            stderr,
            key.clone(),
            Stream::Stderr,
            &events,
            exited_rx,
            drain
        ),
    );
    let exit = match status {
        Ok(status) => exit_of(status),
        // Only if someone else reaped our child: its end is unknown.
        Err(_) => Exit::Lost,
    };
    let _ = events.send(ProcessEvent::Exited { key, exit }).await;
}

/// Forwards one pipe until end of file, or until the drain limits after the exit.
async fn pump<R, K>(
    pipe: Option<R>,
    key: K,
    stream: Stream,
    events: &mpsc::Sender<ProcessEvent<K>>,
    mut exited: watch::Receiver<Option<Instant>>,
    drain: DrainConfig,
) where
    R: AsyncRead + Unpin,
    K: Clone,
{
    let Some(mut pipe) = pipe else { return };
    let mut buf = [0u8; OUTPUT_CHUNK];
    // After the exit: time spent waiting for the receiver, which does not count against
    // `drain.max` (a slow receiver must not cost output the task wrote before it exited),
    // and bytes read, capped because a survivor could otherwise keep writing at the
    // receiver's pace for ever.
    let mut blocked = Duration::ZERO;
    let mut late_bytes = 0usize;
    loop {
        let exited_at = *exited.borrow_and_update();
        let read = match exited_at {
            None => tokio::select! {
                r = pipe.read(&mut buf) => r,
                changed = exited.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            },
            Some(at) => {
                let deadline = at + drain.max + blocked;
                let now = Instant::now();
                if late_bytes >= DRAIN_MAX_BYTES || now >= deadline {
                    return;
                }
                let limit = (now + drain.idle).min(deadline);
                match tokio::time::timeout_at(limit, pipe.read(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
        };
        match read {
            Ok(0) => return,
            Ok(n) => {
                let Ok(data) = Chunk::from_slice(&buf[..n]) else {
                    return;
                };
                let event = ProcessEvent::Output {
                    key: key.clone(),
                    stream,
                    data,
                };
                let before = Instant::now();
                if events.send(event).await.is_err() {
                    return;
                }
                if exited_at.is_some() {
                    late_bytes += n;
                    blocked += before.elapsed();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
