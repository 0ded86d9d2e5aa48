//! What a task may do on this board: the user and group it runs as and its resource limits
//! (the `[tasks]` table of the configuration; the allowlist of programs it carries is decided
//! by tether-core). Resolved once at startup, so a board that cannot honour the table refuses
//! to start with one clear error instead of failing every task.
//!
//! Switching to another user takes CAP_SETUID and CAP_SETGID, and signalling the task's
//! process group afterwards CAP_KILL: root has them, the packaged unit grants them to the
//! `tether` user as ambient capabilities. The task itself gets none of them (see
//! [`crate::process`]: every capability set is emptied before exec).

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;

use tether_core::allowlist::Allowlist;

/// A user or group as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Name(String),
    Id(u32),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(f, "\"{n}\""),
            Self::Id(id) => write!(f, "{id}"),
        }
    }
}

/// Resource limits of every task (soft = hard), unset ones inherited from the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_CPU: SIGXCPU at this many CPU seconds, SIGKILL one second later.
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_AS: address space in bytes.
    pub memory_bytes: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_NPROC: processes of the task's (real) user, all of its tasks together.
    pub processes: Option<u64>,
}

impl Limits {
    /// `(resource, soft, hard)` for setrlimit, in a fixed order.
    pub fn rlimits(&self) -> impl Iterator<Item = (Resource, u64, u64)> {
        [
            (
                Resource::Cpu,
                self.cpu_seconds.map(|s| (s, s.saturating_add(1))),
            ),
            (Resource::AddressSpace, self.memory_bytes.map(|b| (b, b))),
            (Resource::OpenFiles, self.open_files.map(|n| (n, n))),
            (Resource::Processes, self.processes.map(|n| (n, n))),
        ]
        .into_iter()
        .filter_map(|(r, v)| v.map(|(soft, hard)| (r, soft, hard)))
    }
}

/// setrlimit's resource type: an enum in glibc, an int in musl.
#[cfg(target_env = "gnu")]
pub type RawResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
pub type RawResource = libc::c_int;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    AddressSpace,
    OpenFiles,
    Processes,
}

impl Resource {
    pub fn raw(self) -> RawResource {
        match self {
            Self::Cpu => libc::RLIMIT_CPU,
            Self::AddressSpace => libc::RLIMIT_AS,
            Self::OpenFiles => libc::RLIMIT_NOFILE,
            Self::Processes => libc::RLIMIT_NPROC,
        }
    }

    /// The configuration key that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Self::Cpu => "tasks.max_cpu_seconds",
            Self::AddressSpace => "tasks.max_memory_bytes",
            Self::OpenFiles => "tasks.max_open_files",
            Self::Processes => "tasks.max_processes",
        }
    }
}

/// The `[tasks]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TasksConfig {
    /// Run tasks as this user; `None` runs them as the agent's own user.
    pub user: Option<Principal>,
    /// Their group; `None` takes the user's primary group.
    pub group: Option<Principal>,
    /// Their supplementary groups (e.g. `gpio`, `dialout` for a board's hardware); none by
    /// default, whatever the user's entries in /etc/group.
    pub groups: Vec<Principal>,
    /// Programs tasks may run; `None` allows any.
    pub allow: Option<Allowlist>,
    pub limits: Limits,
}

/// A uid and gid to switch to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// How the runtime starts every task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Switch to this user and group with exactly `groups` as supplementary groups; `None`
    /// keeps the agent's identity.
    pub identity: Option<Identity>,
    pub groups: Vec<u32>,
    pub limits: Limits,
}

/// The `[tasks]` table cannot be honoured on this board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfineError(pub String);

impl fmt::Display for ConfineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfineError {}

const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SYS_RESOURCE: u32 = 24;

/// The agent's effective capabilities (empty when /proc cannot tell).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Resolves names, and checks that this process may switch to the user and apply the limits.
pub fn prepare(tasks: &TasksConfig) -> Result<Confinement, ConfineError> {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1 << cap) != 0;
    let groups = tasks
        .groups
        .iter()
        .map(|g| group_id(g, "tasks.groups"))
        .collect::<Result<Vec<_>, _>>()?;
    let identity = match &tasks.user {
        None => None,
        Some(user) => {
            let identity = resolve(user, tasks.group.as_ref())?;
            let (euid, egid) = own_ids();
            if identity.uid == euid && identity.gid == egid && groups.is_empty() {
                // Already that user: nothing to switch (the agent's supplementary groups stay).
                None
            } else {
                let mut missing = Vec::new();
                if identity.uid != euid {
                    missing.extend(
                        [(CAP_SETUID, "CAP_SETUID"), (CAP_KILL, "CAP_KILL")]
                            .into_iter()
                            .filter(|(c, _)| !has(*c))
                            .map(|(_, n)| n),
                    );
                }
                if !has(CAP_SETGID) {
                    missing.push("CAP_SETGID");
                }
                if !missing.is_empty() {
                    return Err(ConfineError(format!(
                        "tasks.user = {user} (uid {}, gid {}): the agent runs as uid {euid} \
                         gid {egid} without {}; run it as root, grant it \
                         CAP_SETUID CAP_SETGID CAP_KILL (systemd: AmbientCapabilities=), or \
                         remove tasks.user to run tasks as the agent's user",
                        identity.uid,
                        identity.gid,
                        missing.join(", ")
                    )));
                }
                Some(identity)
            }
        }
    };
    if !has(CAP_SYS_RESOURCE) {
        for (resource, _, hard) in tasks.limits.rlimits() {
            let own = hard_limit(resource);
            if hard > own {
                return Err(ConfineError(format!(
                    "{} needs a hard limit of {hard}, above the agent's own ({own}), which only \
                     CAP_SYS_RESOURCE may raise; lower it or raise the agent's limit \
                     (systemd: Limit*=)",
                    resource.key()
                )));
            }
        }
    }
    Ok(Confinement {
        identity,
        groups,
        limits: tasks.limits,
    })
}

fn resolve(user: &Principal, group: Option<&Principal>) -> Result<Identity, ConfineError> {
    let lookup_failed =
        |what: &str, e: io::Error| ConfineError(format!("cannot look up {what}: {e}"));
    let (uid, primary) = match user {
        Principal::Name(name) => match user_by_name(name).map_err(|e| lookup_failed(name, e))? {
            Some(ids) => (ids.0, Some(ids.1)),
            None => match name.parse::<u32>() {
                Ok(uid) => (uid, user_by_id(uid).map_err(|e| lookup_failed(name, e))?),
                Err(_) => {
                    return Err(ConfineError(format!(
                        "tasks.user = {user}: no such user on this system"
                    )));
                }
            },
        },
        Principal::Id(uid) => (
            *uid,
            user_by_id(*uid).map_err(|e| lookup_failed(&uid.to_string(), e))?,
        ),
    };
    let gid = match group {
        Some(g) => group_id(g, "tasks.group")?,
        None => primary.ok_or_else(|| {
            ConfineError(format!(
                "tasks.user = {user}: uid {uid} has no passwd entry, so no primary group; \
                 set tasks.group"
            ))
        })?,
    };
    Ok(Identity { uid, gid })
}

fn group_id(group: &Principal, key: &str) -> Result<u32, ConfineError> {
    match group {
        Principal::Id(gid) => Ok(*gid),
        Principal::Name(name) => match group_by_name(name) {
            Ok(Some(gid)) => Ok(gid),
            Ok(None) => name
                .parse::<u32>()
                .map_err(|_| ConfineError(format!("{key}: {group}: no such group on this system"))),
            Err(e) => Err(ConfineError(format!("cannot look up {name}: {e}"))),
        },
    }
}

#[allow(unsafe_code)]
fn own_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid take no arguments and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

#[allow(unsafe_code)]
fn hard_limit(resource: Resource) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(resource.raw(), &mut lim) } != 0 {
        return 0;
    }
    // rlim_t is 32 bits on 32-bit ARM.
    #[allow(clippy::useless_conversion)]
    u64::from(lim.rlim_max)
}

/// Calls a `get*_r` function with a buffer that grows while it reports ERANGE; `Ok(false)`
/// when there is no such entry.
fn with_buffer(mut call: impl FnMut(&mut [u8]) -> (libc::c_int, bool)) -> io::Result<bool> {
    let mut buf = vec![0u8; 1024];
    loop {
        match call(&mut buf) {
            (0, found) => return Ok(found),
            (libc::ERANGE, _) if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            (errno, _) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `(uid, primary gid)` of a user name (NSS: /etc/passwd and whatever else is configured).
#[allow(unsafe_code)]
pub fn user_by_name(name: &str) -> io::Result<Option<(u32, u32)>> {
    let name = c_name(name)?;
    // SAFETY: all-zero is a valid passwd (null pointers, zero ids); it is only read after
    // getpwnam_r filled it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let found = with_buffer(|buf| {
        let mut result = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; getpwnam_r writes at most buf.len()
        // bytes into buf and sets result to &pw or null.
        let r = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (r, !result.is_null())
    })?;
    Ok(found.then_some((pw.pw_uid, pw.pw_gid)))
}

/// The primary gid of a uid, if it has a passwd entry.
#[allow(unsafe_code)]
pub fn user_by_id(uid: u32) -> io::Result<Option<u32>> {
    // SAFETY: as in user_by_name.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let found = with_buffer(|buf| {
        let mut result = std::ptr::null_mut();
        // SAFETY: as in user_by_name.
        let r = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (r, !result.is_null())
    })?;
    Ok(found.then_some(pw.pw_gid))
}

/// The gid of a group name.
#[allow(unsafe_code)]
pub fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    let name: CString = c_name(name)?;
    let name: &CStr = &name;
    // SAFETY: all-zero is a valid group; it is only read after getgrnam_r filled it.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let found = with_buffer(|buf| {
        let mut result = std::ptr::null_mut();
        // SAFETY: as in user_by_name, for getgrnam_r.
        let r = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut gr,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (r, !result.is_null())
    })?;
    Ok(found.then_some(gr.gr_gid))
}
