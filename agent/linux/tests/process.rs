//! Task processes, for real: exits, signals, output through the bounded channel, process
//! groups, a clean environment and descriptor table, PDEATHSIG, and confinement (another
//! user and group, resource limits).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_agent::confine::{self, Confinement, Identity, Limits};
use tether_agent::process::{
    DEFAULT_PATH, DrainConfig, ProcessEvent, Signal, Supervisor, TaskCommand, signal_group,
};
use tether_core::message::{Exit, Stream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

fn sh(script: &str) -> TaskCommand {
    TaskCommand {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![],
        cwd: PathBuf::from("/"),
    }
}

/// Everything one task produced, collected from the channel.
#[derive(Debug, Default)]
struct Run {
    pid: Option<u32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<Exit>,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Receives until the task's `Exited`, checking the event order on the way.
async fn collect(rx: &mut mpsc::Receiver<ProcessEvent<u32>>, key: u32) -> Run {
    let mut run = Run::default();
    loop {
        let ev = timeout(WAIT, rx.recv())
            .await
            .expect("task events timed out")
            .expect("channel closed");
        assert_eq!(*ev.key(), key);
        match ev {
            ProcessEvent::Started { pid, .. } => {
                assert!(run.pid.is_none(), "second Started");
                run.pid = Some(pid);
            }
            ProcessEvent::Output { stream, data, .. } => {
                assert!(run.pid.is_some(), "Output before Started");
                assert!(!data.is_empty() && data.len() <= 256);
                match stream {
                    Stream::Stdout => run.stdout.extend_from_slice(&data),
                    Stream::Stderr => run.stderr.extend_from_slice(&data),
                }
            }
            ProcessEvent::Exited { exit, .. } => {
                run.exit = Some(exit);
                return run;
            }
        }
    }
}

async fn run_task(cmd: TaskCommand) -> Run {
    run_confined(cmd, Confinement::default()).await
}

async fn run_confined(cmd: TaskCommand, confinement: Confinement) -> Run {
    let (tx, mut rx) = mpsc::channel(8);
    let sup = Supervisor::new(tx).confined(confinement);
    let spawned = sup.spawn(1, &cmd);
    let run = collect(&mut rx, 1).await;
    match spawned {
        Ok(pid) => assert_eq!(run.pid, Some(pid)),
        Err(e) => assert_eq!(run.exit, Some(Exit::SpawnFailed(e.errno))),
    }
    run
}

/// Whether a process is gone (or a zombie nobody needs to wait for any more).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // State is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

async fn wait_dead(pid: u32) {
    timeout(WAIT, async {
        while !dead(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("process {pid} still alive"));
}

async fn read_pids(path: &Path, n: usize) -> Vec<u32> {
    timeout(WAIT, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                let pids: Vec<u32> = text
                    .split_whitespace()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                if pids.len() >= n && text.ends_with('\n') {
                    return pids;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("pid file never written")
}

#[tokio::test(flavor = "current_thread")]
async fn exit_codes_are_reported() {
    for code in [0, 1, 3, 255] {
        let run = run_task(sh(&format!("exit {code}"))).await;
        assert_eq!(run.exit, Some(Exit::Code(code)));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn death_by_signal_is_reported() {
    let run = run_task(sh("kill -USR1 $$; sleep 5")).await;
    assert_eq!(run.exit, Some(Exit::Signal(libc::SIGUSR1)));
}

#[tokio::test(flavor = "current_thread")]
async fn a_megabyte_on_both_streams_arrives_complete_and_in_order() {
    // Numbered lines make loss, duplication and reordering visible. The channel holds 8
    // events: the task is throttled by the receiver, which also sleeps now and then.
    let script = "i=0; while [ $i -lt 40000 ]; do printf 'out %06d\\n' $i; printf 'err %06d\\n' $i >&2; i=$((i+1)); done";
    let (tx, mut rx) = mpsc::channel(8);
    let sup = Supervisor::new(tx);
    sup.spawn(7, &sh(script)).unwrap();
    let mut run = Run::default();
    let mut n = 0u64;
    loop {
        let ev = timeout(WAIT * 3, rx.recv()).await.unwrap().unwrap();
        n += 1;
        if n % 2000 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match ev {
            ProcessEvent::Started { pid, .. } => run.pid = Some(pid),
            ProcessEvent::Output {
                stream: Stream::Stdout,
                data,
                ..
            } => run.stdout.extend_from_slice(&data),
            ProcessEvent::Output {
                stream: Stream::Stderr,
                data,
                ..
            } => run.stderr.extend_from_slice(&data),
            ProcessEvent::Exited { exit, .. } => {
                run.exit = Some(exit);
                break;
            }
        }
    }
    assert_eq!(run.exit, Some(Exit::Code(0)));
    for (name, bytes) in [("out", &run.stdout), ("err", &run.stderr)] {
        assert_eq!(bytes.len(), 40000 * 11, "{name}");
        let expected: String = (0..40000).map(|i| format!("{name} {i:06}\n")).collect();
        assert!(*bytes == expected.as_bytes(), "{name} stream differs");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn group_kill_reaches_grandchildren() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let (tx, mut rx) = mpsc::channel(8);
    let sup = Supervisor::new(tx);
    let script = format!(
        "sleep 100 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; sleep 100",
        p = pids.display()
    );
    let pgid = sup.spawn(2, &sh(&script)).unwrap();
    let found = read_pids(&pids, 2).await;
    let (grandchild, leader) = (found[0], found[1]);
    assert_eq!(leader, pgid);
    assert!(!dead(grandchild));

    assert!(signal_group(pgid, Signal::Kill).unwrap());
    let run = collect(&mut rx, 2).await;
    assert_eq!(run.exit, Some(Exit::Signal(libc::SIGKILL)));
    wait_dead(grandchild).await;
}

#[tokio::test(flavor = "current_thread")]
async fn sigterm_ignoring_task_needs_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let (tx, mut rx) = mpsc::channel(8);
    let sup = Supervisor::new(tx);
    let script = format!(
        "trap '' TERM; echo $$ > {p}.tmp; mv {p}.tmp {p}; while :; do sleep 0.05; done",
        p = ready.display()
    );
    let pgid = sup.spawn(3, &sh(&script)).unwrap();
    read_pids(&ready, 1).await;

    assert!(signal_group(pgid, Signal::Term).unwrap());
    // Still running after SIGTERM: no Exited arrives while it loops.
    let early = timeout(Duration::from_millis(300), async {
        loop {
            if let Some(ProcessEvent::Exited { exit, .. }) = rx.recv().await {
                return exit;
            }
        }
    })
    .await;
    assert!(early.is_err(), "task ended on SIGTERM: {early:?}");
    assert!(!dead(pgid));

    assert!(signal_group(pgid, Signal::Kill).unwrap());
    let exit = timeout(WAIT, async {
        loop {
            if let Some(ProcessEvent::Exited { exit, .. }) = rx.recv().await {
                return exit;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(exit, Exit::Signal(libc::SIGKILL));
}

#[tokio::test(flavor = "current_thread")]
async fn environment_is_clean_except_path_and_task_items() {
    let mut cmd = TaskCommand {
        argv: vec!["env".into()],
        env: vec!["GREETING=hello world".into(), "EQ=a=b".into()],
        cwd: PathBuf::from("/"),
    };
    let run = run_task(cmd.clone()).await;
    assert_eq!(run.exit, Some(Exit::Code(0)));
    let vars: BTreeMap<String, String> = run
        .stdout_text()
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("PATH", DEFAULT_PATH),
        ("GREETING", "hello world"),
        ("EQ", "a=b"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(vars, expected);

    // A task may replace PATH.
    cmd.env = vec!["PATH=/bin".into()];
    let run = run_task(cmd).await;
    assert_eq!(run.stdout_text(), "PATH=/bin\n");
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_env_item_is_a_spawn_failure() {
    let mut cmd = sh("true");
    cmd.env = vec!["NO_EQUALS_SIGN".into()];
    let run = run_task(cmd).await;
    assert_eq!(run.exit, Some(Exit::SpawnFailed(libc::EINVAL)));
    let mut empty = sh("true");
    empty.argv.clear();
    let run = run_task(empty).await;
    assert_eq!(run.exit, Some(Exit::SpawnFailed(libc::EINVAL)));
}

#[tokio::test(flavor = "current_thread")]
async fn working_directory_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = TaskCommand {
        argv: vec!["pwd".into()],
        env: vec![],
        cwd: dir.path().to_path_buf(),
    };
    let run = run_task(cmd.clone()).await;
    assert_eq!(run.exit, Some(Exit::Code(0)));
    let want = dir.path().canonicalize().unwrap();
    assert_eq!(run.stdout_text().trim_end(), want.to_str().unwrap());

    cmd.cwd = dir.path().join("missing");
    let run = run_task(cmd).await;
    assert_eq!(run.exit, Some(Exit::SpawnFailed(libc::ENOENT)));
}

#[tokio::test(flavor = "current_thread")]
async fn missing_binary_is_spawn_failed_enoent() {
    let (tx, mut rx) = mpsc::channel(8);
    let sup = Supervisor::new(tx);
    let cmd = TaskCommand {
        argv: vec!["tether-no-such-binary".into()],
        env: vec![],
        cwd: PathBuf::from("/"),
    };
    let err = sup.spawn(9, &cmd).unwrap_err();
    assert_eq!(err.errno, libc::ENOENT);
    let run = collect(&mut rx, 9).await;
    assert_eq!(run.pid, None);
    assert_eq!(run.exit, Some(Exit::SpawnFailed(libc::ENOENT)));
}

#[tokio::test(flavor = "current_thread")]
async fn child_sees_only_stdio_descriptors() {
    // A descriptor this process holds without O_CLOEXEC, as one inherited from a careless
    // parent would be: it must not reach the task.
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let leaked = dup_without_cloexec(&devnull);
    let (tx, mut rx) = mpsc::channel(8);
    let sup = Supervisor::new(tx);
    let cmd = TaskCommand {
        argv: vec!["sleep".into(), "100".into()],
        env: vec![],
        cwd: PathBuf::from("/"),
    };
    // spawn returns once exec succeeded, but the task's dynamic loader then opens its
    // libraries (as fd 3, seen in a CI run) and closes them again: wait, bounded, for the
    // table a running task keeps. A leaked descriptor never goes away.
    let pid = sup.spawn(8, &cmd).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let fds = loop {
        let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        fds.sort();
        if fds == [0, 1, 2] || std::time::Instant::now() >= deadline {
            break fds;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert!(signal_group(pid, Signal::Kill).unwrap());
    let run = collect(&mut rx, 8).await;
    assert_eq!(run.exit, Some(Exit::Signal(libc::SIGKILL)));
    assert_eq!(fds, [0, 1, 2], "leaked fd was {leaked:?}");
    assert_eq!(stdin, Path::new("/dev/null"));
}

/// A duplicate at or above 100 without FD_CLOEXEC, closed when dropped.
#[allow(unsafe_code)]
fn dup_without_cloexec(file: &std::fs::File) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: F_DUPFD duplicates a descriptor we own and returns a new one (or -1), which
    // nothing else owns, so OwnedFd may close it.
    unsafe {
        let fd = libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, 100);
        assert!(fd >= 100);
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn exit_is_reported_although_a_survivor_holds_the_pipe() {
    let (tx, mut rx) = mpsc::channel(8);
    let drain = DrainConfig {
        idle: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let sup = Supervisor::with_drain(tx, drain);
    // The background sleep inherits stdout and outlives the leader.
    let pgid = sup.spawn(4, &sh("sleep 100 & echo bye")).unwrap();
    let run = collect(&mut rx, 4).await;
    assert_eq!(run.exit, Some(Exit::Code(0)));
    assert_eq!(run.stdout_text(), "bye\n");
    assert!(signal_group(pgid, Signal::Kill).unwrap());
}

#[test]
fn signal_group_refuses_dangerous_groups() {
    for pgid in [0, 1, u32::MAX] {
        let err = signal_group(pgid, Signal::Term).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}

/// A task spawned from a thread keeps running while that thread lives and gets SIGKILL when
/// it ends: PR_SET_PDEATHSIG is tied to the forking thread (why the agent spawns from its
/// main thread).
#[test]
fn pdeathsig_kills_task_when_spawning_thread_exits() {
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, _rx) = mpsc::channel(8);
            let sup = Supervisor::new(tx);
            let pid = sup.spawn(5u32, &sh("exec sleep 100")).unwrap();
            pid_tx.send(pid).unwrap();
        });
        end_rx.recv_timeout(WAIT).ok();
    });
    let pid = pid_rx.recv_timeout(WAIT).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!dead(pid), "task died while its spawning thread lives");
    end_tx.send(()).unwrap();
    thread.join().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !dead(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "task {pid} outlived its spawning thread"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The agent killed with SIGKILL leaves no task behind. This test re-runs its own binary as
/// the "agent" (selected by an environment variable), which spawns a task, prints its pid and
/// waits to be killed.
#[test]
fn pdeathsig_kill9_of_agent_leaves_no_task() {
    if std::env::var_os("TETHER_TEST_PDEATHSIG_AGENT").is_some() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, _rx) = mpsc::channel(8);
            let sup = Supervisor::new(tx);
            let pid = sup.spawn(6u32, &sh("exec sleep 100")).unwrap();
            println!("TASK_PID={pid}");
            tokio::time::sleep(WAIT).await;
        });
        return;
    }
    use std::io::BufRead;
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pdeathsig_kill9_of_agent_leaves_no_task",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TETHER_TEST_PDEATHSIG_AGENT", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = agent.stdout.take().unwrap();
    // Reading is bounded by the agent itself: it exits after WAIT at the latest.
    let task_pid: u32 = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest prints "test <name> ... " on the same line first.
        .find_map(|l| {
            l.split_once("TASK_PID=")
                .and_then(|(_, p)| p.trim().parse().ok())
        })
        .expect("agent did not report its task");
    assert!(!dead(task_pid));
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !dead(task_pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "task {task_pid} outlived the agent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        .unwrap_or(false)
}

/// `nobody`/`nogroup` (Debian; `nobody` elsewhere), or why the test cannot switch users.
fn nobody() -> Result<Identity, &'static str> {
    if !is_root() {
        return Err("not root: cannot switch to another user");
    }
    let (uid, primary) = confine::user_by_name("nobody")
        .ok()
        .flatten()
        .ok_or("no user `nobody`")?;
    let gid = confine::group_by_name("nogroup")
        .ok()
        .flatten()
        .unwrap_or(primary);
    Ok(Identity { uid, gid })
}

/// The `Name:\tvalue` line of /proc/<pid>/status-like text.
fn status_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[tokio::test(flavor = "current_thread")]
async fn task_runs_as_the_configured_user_and_group_without_privileges() {
    let id = match nobody() {
        Ok(id) => id,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(id.uid), Some(id.gid)).unwrap();
    let confinement = Confinement {
        identity: Some(id),
        ..Confinement::default()
    };
    let cmd = TaskCommand {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "id -u; id -g; id -G; touch made; cat /proc/self/status; echo err >&2".into(),
        ],
        env: vec![],
        cwd: dir.path().to_path_buf(),
    };
    let run = run_confined(cmd, confinement).await;
    assert_eq!(run.exit, Some(Exit::Code(0)), "{run:?}");
    let out = run.stdout_text();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(id.uid.to_string().as_str()),
        "uid: {out}"
    );
    assert_eq!(
        lines.next(),
        Some(id.gid.to_string().as_str()),
        "gid: {out}"
    );
    // Supplementary groups cleared: root's are gone.
    assert_eq!(
        lines.next(),
        Some(id.gid.to_string().as_str()),
        "groups: {out}"
    );
    for cap in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(
            status_field(&out, cap),
            Some("0000000000000000"),
            "{cap}: {out}"
        );
    }
    // Both pipes still reach the agent, and the work directory is the task user's.
    assert_eq!(run.stderr, b"err\n");
    let made = std::fs::metadata(dir.path().join("made")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((made.uid(), made.gid()), (id.uid, id.gid));
}

#[tokio::test(flavor = "current_thread")]
async fn the_working_directory_is_entered_as_the_task_user() {
    let id = match nobody() {
        Ok(id) => id,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    // 0700 root: the agent may enter it, the task user may not.
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let cmd = TaskCommand {
        argv: vec!["true".into()],
        env: vec![],
        cwd: dir.path().to_path_buf(),
    };
    let as_nobody = Confinement {
        identity: Some(id),
        ..Confinement::default()
    };
    let run = run_confined(cmd.clone(), as_nobody).await;
    assert_eq!(run.exit, Some(Exit::SpawnFailed(libc::EACCES)));
    assert_eq!(run_task(cmd).await.exit, Some(Exit::Code(0)));
}

#[tokio::test(flavor = "current_thread")]
async fn environment_stays_clean_as_another_user() {
    let id = match nobody() {
        Ok(id) => id,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let cmd = TaskCommand {
        argv: vec!["env".into()],
        env: vec!["ONLY=this".into()],
        cwd: PathBuf::from("/"),
    };
    let confinement = Confinement {
        identity: Some(id),
        ..Confinement::default()
    };
    let run = run_confined(cmd, confinement).await;
    let mut vars: Vec<String> = run.stdout_text().lines().map(str::to_string).collect();
    vars.sort();
    assert_eq!(
        vars,
        ["ONLY=this".to_string(), format!("PATH={DEFAULT_PATH}")],
        "no HOME, USER, LOGNAME or the agent's variables"
    );
}

/// Soft and hard values of one line of /proc/self/limits, e.g. "Max open files".
fn limit_line(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {limits}"));
    let mut fields = line[name.len()..].split_whitespace();
    (
        fields.next().unwrap().to_string(),
        fields.next().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn resource_limits_are_visible_to_the_task() {
    let limits = Limits {
        cpu_seconds: Some(7),
        memory_bytes: Some(1 << 30),
        open_files: Some(64),
        processes: Some(500),
    };
    let confinement = Confinement {
        identity: nobody().ok(),
        groups: vec![],
        limits,
    };
    let run = run_confined(sh("ulimit -n; cat /proc/self/limits"), confinement).await;
    assert_eq!(run.exit, Some(Exit::Code(0)), "{run:?}");
    let out = run.stdout_text();
    assert_eq!(out.lines().next(), Some("64"), "{out}");
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(limit_line(&out, "Max cpu time"), pair("7", "8"));
    assert_eq!(
        limit_line(&out, "Max address space"),
        pair("1073741824", "1073741824")
    );
    assert_eq!(limit_line(&out, "Max open files"), pair("64", "64"));
    assert_eq!(limit_line(&out, "Max processes"), pair("500", "500"));

    // Unset limits are the agent's own.
    let run = run_task(sh("ulimit -n")).await;
    assert_ne!(run.stdout_text().trim(), "64");
}

#[tokio::test(flavor = "current_thread")]
async fn cpu_limit_ends_a_busy_loop() {
    let confinement = Confinement {
        identity: nobody().ok(),
        groups: vec![],
        limits: Limits {
            cpu_seconds: Some(1),
            ..Limits::default()
        },
    };
    let run = run_confined(sh("while :; do :; done"), confinement).await;
    assert!(
        matches!(run.exit, Some(Exit::Signal(libc::SIGXCPU | libc::SIGKILL))),
        "{:?}",
        run.exit
    );
}

#[tokio::test(flavor = "current_thread")]
async fn memory_limit_refuses_a_large_allocation() {
    let confinement = Confinement {
        identity: nobody().ok(),
        groups: vec![],
        limits: Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        },
    };
    // 128 MiB in a shell variable.
    let script = "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo ${#x}";
    let run = run_confined(sh(script), confinement).await;
    assert_ne!(run.exit, Some(Exit::Code(0)), "{run:?}");
    assert!(!run.stdout_text().contains("134217728"));
}

#[tokio::test(flavor = "current_thread")]
async fn supplementary_groups_are_exactly_the_configured_ones() {
    let id = match nobody() {
        Ok(id) => id,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    // Groups 1 and 2 exist or not: the kernel takes any gid.
    let confinement = Confinement {
        identity: Some(id),
        groups: vec![2, 1],
        ..Confinement::default()
    };
    let run = run_confined(sh("id -G"), confinement).await;
    let mut groups: Vec<u32> = run
        .stdout_text()
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort();
    let mut want = vec![1, 2, id.gid];
    want.sort();
    assert_eq!(groups, want);
}
