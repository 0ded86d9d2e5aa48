//! The real `tether-agent` when things go wrong, over the embedded rumqttd and over mosquitto:
//! the master goes silent, the agent is killed with kill -9 and restarted, the master stops
//! acknowledging, the journal hits its size cap.

use std::time::Duration;

use tether_core::message::{EventKind, Exit, KillCause, RejectReason, Stream};
use tether_core::policy::OnDisconnect;
use tether_tests::both_brokers;
use tether_tests::harness::WAIT;
use tether_tests::harness::agent::{AgentHome, AgentOptions, AgentProcess};
use tether_tests::harness::broker::TestBroker;
use tether_tests::harness::master::{ScriptedMaster, scripted_pair, sh, spec, task_ref};
use tether_tests::harness::procs;

const PERIOD: Duration = Duration::from_secs(1);

/// A master and a connected agent with a fresh home.
async fn setup(
    broker: &TestBroker,
    name: &str,
    tune: impl FnOnce(&mut AgentOptions),
) -> (ScriptedMaster, AgentHome, AgentProcess) {
    scripted_pair(broker, name, PERIOD, tune).await
}

both_brokers!(
    kill_on_loss_and_continue_and_reconcile,
    kill9_restart_no_double_start,
    replay_after_acks_resume,
    journal_cap_keeps_results
);

async fn kill_on_loss_and_continue_and_reconcile(broker: &TestBroker) {
    let (master, home, _agent) = setup(broker, "silent", |_| {}).await;
    let go = home.path().join("go");
    let wait_go = format!(
        "echo up; while [ ! -e {} ]; do sleep 0.05; done; echo done",
        go.display()
    );
    let mut kill = sh(1, &wait_go);
    kill.policy.heartbeat_timeout_ms = 3_000;
    let mut keep = sh(2, &wait_go);
    keep.policy.on_disconnect = OnDisconnect::Continue;
    keep.policy.heartbeat_timeout_ms = 3_000;
    master.start_task(kill);
    master.start_task(keep);
    let pid_keep = master.wait_started(task_ref(2)).await;
    master.wait_started(task_ref(1)).await;

    master.set_silent(true);
    assert_eq!(
        master.wait_finished(task_ref(1)).await,
        (Exit::Signal(libc::SIGTERM), Some(KillCause::MasterLost), 0)
    );
    // Still silent: the `continue` task runs on.
    let seen = master.seen();
    assert!(seen.finished(task_ref(2)).is_none(), "{}", seen.dump());
    assert!(
        !procs::live_group(pid_keep).is_empty(),
        "the continue task died"
    );

    master.set_silent(false);
    std::fs::write(&go, b"").unwrap();
    assert_eq!(
        master.wait_finished(task_ref(2)).await,
        (Exit::Code(0), None, 0)
    );
    let seen = master.seen();
    assert_eq!(seen.output(task_ref(2), Stream::Stdout), b"up\ndone\n");
    assert!(
        !seen
            .of(task_ref(2))
            .iter()
            .any(|k| matches!(k, EventKind::Terminating { .. })),
        "{}",
        seen.dump()
    );
    master.assert_consistent();
}

async fn kill9_restart_no_double_start(broker: &TestBroker) {
    let (master, mut home, mut agent) = setup(broker, "crash", |_| {}).await;
    let side = home.path().join("side-effect");
    // Appends one line per run, then waits as the group's leader (PDEATHSIG reaches the
    // leader only: see `kill9_leaves_no_task_process` for a task with children).
    let script = format!("echo run >> {}; exec sleep 120", side.display());
    // Nothing acknowledged: the restarted agent must replay everything.
    master.set_acking(false);
    master.start_task(sh(1, &script));
    let pgid = master.wait_started(task_ref(1)).await;
    master
        .wait_for("the side effect", |_| {
            std::fs::read_to_string(&side)
                .ok()
                .filter(|s| !s.is_empty())
        })
        .await;
    let before = master.seen();

    let first_inc = before.online_incarnation();
    agent.kill9();
    // PDEATHSIG: the task does not outlive the agent.
    procs::wait_group_gone(pgid).await;

    let _agent2 = home.start();
    master.wait_online(first_inc).await;
    let (exit, _, _) = master.wait_finished(task_ref(1)).await;
    assert_eq!(exit, Exit::Lost);
    // The master resends the start (as if it never heard the answer): seen, not run again.
    master.start_task(sh(1, &script));
    master.set_acking(true);
    master.start_task(spec(2, &["true"]));
    assert_eq!(
        master.wait_finished(task_ref(2)).await,
        (Exit::Code(0), None, 0)
    );
    master
        .wait_for("everything acknowledged", |s| {
            let last = *s.events.keys().next_back()?;
            (s.acked == last).then_some(())
        })
        .await;

    let seen = master.seen();
    assert_eq!(
        std::fs::read_to_string(&side).unwrap(),
        "run\n",
        "started twice"
    );
    assert_eq!(
        seen.count(|k| matches!(k, EventKind::Started { .. })),
        2,
        "{}",
        seen.dump()
    );
    assert_eq!(
        seen.count(|k| matches!(k, EventKind::Accepted { task } if *task == task_ref(1))),
        1
    );
    // The events from before the crash came again, unchanged, under the same numbers.
    for (seq, event) in &before.events {
        assert_eq!(seen.events.get(seq), Some(event));
    }
    assert!(
        seen.duplicates >= before.events.len() as u64,
        "{}",
        seen.dump()
    );
    master.assert_consistent();
}

async fn replay_after_acks_resume(broker: &TestBroker) {
    let (master, home, _agent) = setup(broker, "replay", |_| {}).await;
    master.set_acking(false);
    // ~200 KiB of output: ~800 events, far more than one send window.
    master.start_task(sh(1, "head -c 204800 /dev/zero | tr '\\0' x"));
    master
        .wait_for("the task to end (heartbeat)", |s| {
            let hb = s.last_heartbeat.as_ref()?;
            (hb.tasks.is_empty() && hb.last_seq > 800).then_some(())
        })
        .await;
    let grown = home.journal_len();
    assert!(grown > 200 * 1024, "journal of {grown} bytes");
    let seen = master.seen();
    assert!(
        seen.finished(task_ref(1)).is_none(),
        "sent beyond the window"
    );

    master.set_acking(true);
    let (exit, _, dropped) = master.wait_finished(task_ref(1)).await;
    assert_eq!((exit, dropped), (Exit::Code(0), 0));
    master
        .wait_for("everything acknowledged", |s| {
            let last = *s.events.keys().next_back()?;
            (s.acked == last).then_some(())
        })
        .await;
    let seen = master.seen();
    let out = seen.output(task_ref(1), Stream::Stdout);
    assert_eq!(out.len(), 204_800);
    assert!(out.iter().all(|b| *b == b'x'));
    master.assert_consistent();
    // The acknowledged prefix is compacted away (in steps of at least 64 KiB, so some of it
    // may stay until more is acknowledged).
    let deadline = tokio::time::Instant::now() + WAIT;
    while home.journal_len() > grown / 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "journal still {} of {grown} bytes after every event was acknowledged",
            home.journal_len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `PR_SET_PDEATHSIG` reaches a task's leader only: when the agent is killed with kill -9, a
/// process the task started (here the `sleep` of a shell) is reparented to init. The restarted
/// agent kills the process groups its predecessor recorded (same boot), so nothing survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_leaves_no_task_process() {
    let broker = TestBroker::start(tether_tests::harness::broker::BrokerKind::Rumqttd)
        .await
        .expect("rumqttd");
    let (master, mut home, mut agent) = setup(&broker, "orphan", |_| {}).await;
    master.start_task(sh(1, "sleep 30; true"));
    let pgid = master.wait_started(task_ref(1)).await;
    master
        .wait_for("the shell's child", |_| {
            (procs::live_group(pgid).len() >= 2).then_some(())
        })
        .await;
    let first_inc = master.seen().online_incarnation();
    agent.kill9();
    let _agent2 = home.start();
    master.wait_online(first_inc).await;
    assert_eq!(master.wait_finished(task_ref(1)).await.0, Exit::Lost);
    let survivors = procs::live_group(pgid);
    // Do not leave them behind for the rest of the run.
    for p in &survivors {
        tether_tests::harness::agent::send_signal(p.pid, libc::SIGKILL);
    }
    assert!(
        survivors.is_empty(),
        "task processes survive the agent: {survivors:?}"
    );
}

async fn journal_cap_keeps_results(broker: &TestBroker) {
    const CAP: u64 = 64 * 1024;
    let (master, home, _agent) = setup(broker, "full", |o| {
        o.journal_max_bytes = Some(CAP);
        o.max_tasks = Some(2);
    })
    .await;
    master.set_acking(false);
    // Far more output than the journal holds.
    master.start_task(sh(1, "head -c 409600 /dev/zero | tr '\\0' x"));
    master
        .wait_for("the task to end (heartbeat)", |s| {
            let hb = s.last_heartbeat.as_ref()?;
            (hb.tasks.is_empty() && hb.last_seq > 3).then_some(())
        })
        .await;
    assert!(
        home.journal_len() <= CAP,
        "journal {} bytes",
        home.journal_len()
    );
    // Output was dropped first; the results' room is still there: a new task runs.
    let after_1 = master
        .seen()
        .last_heartbeat
        .as_ref()
        .map_or(0, |hb| hb.last_seq);
    master.start_task(spec(2, &["true"]));
    master
        .wait_for("task 2 to end (heartbeat)", |s| {
            let hb = s.last_heartbeat.as_ref()?;
            (hb.tasks.is_empty() && hb.last_seq >= after_1 + 3).then_some(())
        })
        .await;
    // A burst of starts with nothing acknowledged fills the rest: starts are refused (or, with
    // no room left even for a refusal, left unanswered), results are never lost.
    for n in 3..=150 {
        master.start_task(spec(n, &["true"]));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        home.journal_len() <= CAP,
        "journal {} bytes",
        home.journal_len()
    );
    master.set_acking(true);
    let (exit, cause, dropped) = master.wait_finished(task_ref(1)).await;
    assert_eq!((exit, cause), (Exit::Code(0), None));
    assert_eq!(
        master.wait_finished(task_ref(2)).await,
        (Exit::Code(0), None, 0)
    );
    let seen = master
        .wait_for("a start refused for a full journal", |s| {
            (3..=150)
                .any(|n| {
                    s.of(task_ref(n)).iter().any(|k| {
                        matches!(
                            k,
                            EventKind::Rejected {
                                reason: RejectReason::JournalFull,
                                ..
                            }
                        )
                    })
                })
                .then(|| s.clone())
        })
        .await;
    let kept = seen.output(task_ref(1), Stream::Stdout).len() as u64;
    assert!(dropped > 0, "{}", seen.dump());
    assert_eq!(kept + dropped, 409_600);
    // Every start that was accepted has its result.
    for n in 3..=150 {
        if seen
            .of(task_ref(n))
            .iter()
            .any(|k| matches!(k, EventKind::Accepted { .. }))
        {
            assert_eq!(
                master.wait_finished(task_ref(n)).await.0,
                Exit::Code(0),
                "task {n}"
            );
        }
    }
    // Once the master has everything, the journal has room again.
    master.start_task(spec(151, &["true"]));
    assert_eq!(
        master.wait_finished(task_ref(151)).await,
        (Exit::Code(0), None, 0)
    );
    master.assert_consistent();
}
