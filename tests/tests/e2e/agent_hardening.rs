//! The real `tether-agent` confines its tasks: programs off the allowlist are refused and never
//! run, tasks run as the configured user with the configured limits, and an agent that could
//! not switch users refuses to start. Switching users needs root: those parts print why they
//! are skipped elsewhere.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tether_core::message::{EventKind, Exit, KillCause, RejectReason, Stream};
use tether_tests::harness::WAIT;
use tether_tests::harness::agent::{AgentHome, AgentOptions};
use tether_tests::harness::broker::{BrokerKind, TestBroker};
use tether_tests::harness::master::{ScriptedMaster, scripted_pair, sh, spec, task_ref};
use tether_tests::harness::tempdir::TempDir;

const PERIOD: Duration = Duration::from_secs(1);

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn has_setpriv() -> bool {
    std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn rumqttd() -> TestBroker {
    TestBroker::start(BrokerKind::Rumqttd)
        .await
        .expect("rumqttd")
}

/// Waits for the attempt's refusal and returns its reason.
async fn wait_rejected(master: &ScriptedMaster, task: u64) -> RejectReason {
    master
        .wait_for(&format!("task {task} answered"), |s| {
            s.of(task_ref(task)).iter().find_map(|k| match k {
                EventKind::Rejected { reason, .. } => Some(*reason),
                _ => None,
            })
        })
        .await
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_off_the_allowlist_is_rejected_and_never_runs() {
    let broker = rumqttd().await;
    // The config names the allowed directory before the agent's home exists: its own.
    let tools = TempDir::new("allowed").unwrap();
    let bin = tools.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = bin.join("mark");
    std::fs::write(&script, "#!/bin/sh\necho ran > \"$1\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "[tasks]\nallow = [\"{}/\", \"/usr/bin/id\"]\n",
        bin.display()
    );
    let (master, home, _agent) =
        scripted_pair(&broker, "allow", PERIOD, |o| o.config_toml = Some(config)).await;
    let marker = |n: u64| home.path().join(format!("marker-{n}"));
    let m = |n: u64| marker(n).to_str().unwrap().to_owned();
    let climb = format!("{}/../../../../../../usr/bin/touch", bin.display());
    let refused: [(u64, Vec<String>); 5] = [
        (2, vec!["/usr/bin/touch".into(), m(2)]),
        // A bare name: the task's own PATH could lead anywhere.
        (3, vec!["touch".into(), m(3)]),
        // `..` out of the allowed directory.
        (4, vec![climb, m(4)]),
        // The allowed directory itself, and a sibling sharing its prefix.
        (5, vec![bin.display().to_string(), m(5)]),
        (6, vec![format!("{}-other/mark", bin.display()), m(6)]),
    ];
    master.start_task(spec(1, &[script.to_str().unwrap(), &m(1)]));
    for (task, argv) in &refused {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        master.start_task(spec(*task, &argv));
    }
    master.start_task(spec(7, &["/usr/bin/id", "-u"]));

    assert_eq!(
        master.wait_finished(task_ref(1)).await,
        (Exit::Code(0), None, 0)
    );
    assert_eq!(std::fs::read_to_string(marker(1)).unwrap(), "ran\n");
    assert_eq!(
        master.wait_finished(task_ref(7)).await,
        (Exit::Code(0), None, 0)
    );
    for (task, _) in &refused {
        assert_eq!(
            wait_rejected(&master, *task).await,
            RejectReason::NotAllowed
        );
        let events = master.seen();
        let events = events.of(task_ref(*task));
        assert_eq!(events.len(), 1, "only the refusal: {events:?}");
        assert!(!marker(*task).exists(), "task {task} ran");
    }
    master.assert_consistent();
}

/// The numeric field `field` of `name`'s entry in a `getent` database.
fn getent(db: &str, name: &str, field: usize) -> Option<u32> {
    let out = std::process::Command::new("getent")
        .args([db, name])
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    line.trim_end().split(':').nth(field)?.parse().ok()
}

/// `(uid, primary gid)` of a user.
fn user(name: &str) -> (u32, u32) {
    let ids = getent("passwd", name, 2).zip(getent("passwd", name, 3));
    ids.unwrap_or_else(|| panic!("no user {name}"))
}

/// The identity tasks switch to in these tests: nobody, in nogroup where it exists.
fn nobody() -> (u32, u32) {
    let (uid, gid) = user("nobody");
    (uid, getent("group", "nogroup", 2).unwrap_or(gid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_the_configured_user_with_their_limits() {
    if !is_root() {
        return eprintln!("skipped: not root, cannot run tasks as another user");
    }
    let broker = rumqttd().await;
    let (uid, gid) = nobody();
    let config = format!(
        "[tasks]\nuser = \"nobody\"\ngroup = {gid}\nmax_open_files = 50\nmax_processes = 300\n"
    );
    let (master, home, _agent) =
        scripted_pair(&broker, "user", PERIOD, |o| o.config_toml = Some(config)).await;
    // The default work directory the harness made is root's; the task user needs its own.
    chown(&home.work_dir(), uid, gid);
    master.start_task(sh(1, "id -u; id -g; id -G; ulimit -n; touch made; env"));
    assert_eq!(
        master.wait_finished(task_ref(1)).await,
        (Exit::Code(0), None, 0)
    );
    let out = String::from_utf8(master.seen().output(task_ref(1), Stream::Stdout)).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        [
            uid.to_string(),
            gid.to_string(),
            gid.to_string(),
            "50".to_string()
        ],
        "{out}"
    );
    // PWD is the shell's own.
    let env: Vec<&str> = lines[4..]
        .iter()
        .copied()
        .filter(|l| !l.starts_with("PWD="))
        .collect();
    assert_eq!(
        env,
        ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "a clean environment: {out}"
    );
    let made = std::fs::metadata(home.work_dir().join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (uid, gid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_switch_users_refuses_to_start() {
    if !is_root() || !has_setpriv() {
        return eprintln!("skipped: needs root and setpriv to start an agent as nobody");
    }
    let (uid, gid) = nobody();
    let mut options = AgentOptions::new("refuse", "127.0.0.1:9");
    options.config_toml = Some("[tasks]\nuser = \"root\"\n".into());
    options.wrapper = [
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
    ]
    .map(String::from)
    .to_vec();
    let mut home = AgentHome::new(options);
    // The agent (as nobody) must be able to read its config.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut agent = home.start();
    let status = agent.wait_exit(WAIT).await.expect("the agent exits");
    assert!(!status.success());
    let log = agent.log();
    assert!(
        log.contains("tasks.user = \"root\"") && log.contains("without CAP_SETUID"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_agent_with_capabilities_runs_and_kills_tasks_as_nobody() {
    if !is_root() || !has_setpriv() {
        return eprintln!("skipped: needs root and setpriv to start an agent as another user");
    }
    let broker = rumqttd().await;
    let (uid, gid) = nobody();
    // As the packaged unit runs it: its own user (here `daemon`), with CAP_SETUID,
    // CAP_SETGID and CAP_KILL as ambient capabilities.
    let (agent_uid, agent_gid) = user("daemon");
    let caps = "+setuid,+setgid,+kill";
    let wrapper = vec![
        "setpriv".to_string(),
        format!("--reuid={agent_uid}"),
        format!("--regid={agent_gid}"),
        "--clear-groups".into(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
    ];
    let id = "caps-rumqttd";
    let master = ScriptedMaster::start(broker.addr(), id, PERIOD).await;
    let mut options = AgentOptions::new(id, &broker.host_port());
    options.config_toml = Some("[tasks]\nuser = \"nobody\"\n".into());
    options.wrapper = wrapper;
    let mut home = AgentHome::new(options);
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(&home.state_dir(), agent_uid, agent_gid);
    chown(&home.work_dir(), uid, gid);
    let _agent = home.start();
    master.wait_online(None).await;

    master.start_task(sh(1, "cat /proc/self/status"));
    assert_eq!(
        master.wait_finished(task_ref(1)).await,
        (Exit::Code(0), None, 0)
    );
    let status = String::from_utf8(master.seen().output(task_ref(1), Stream::Stdout)).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name}: {status}"))
            .to_owned()
    };
    assert_eq!(field("Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(field("Gid"), format!("{gid}\t{gid}\t{gid}\t{gid}"));
    // The agent's capabilities stay with the agent.
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }

    // CAP_KILL: the agent can still end the task it no longer shares a user with.
    master.start_task(sh(2, "sleep 60"));
    master.wait_started(task_ref(2)).await;
    master.kill_task(task_ref(2));
    assert_eq!(
        master.wait_finished(task_ref(2)).await,
        (Exit::Signal(libc::SIGTERM), Some(KillCause::Requested), 0)
    );
}
