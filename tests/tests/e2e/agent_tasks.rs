//! The real `tether-agent` runs tasks for a scripted master, over the embedded rumqttd and over
//! mosquitto: exit codes, output and its cap, kill by command, bad commands, a normal stop.

use std::time::Duration;

use tether_core::message::{CommandBody, EventKind, Exit, KillCause, RejectReason, Stream};
use tether_core::presence::{Presence, State};
use tether_core::wire::{self, DecodeError, ReceiveError, Refusal};
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
    exit_codes_and_output,
    kill_by_command,
    output_cap,
    bad_commands_are_reported,
    normal_stop_drains
);

async fn exit_codes_and_output(broker: &TestBroker) {
    let (master, _home, agent) = setup(broker, "exit", |_| {}).await;
    master.start_task(sh(1, "echo out; echo err >&2; exit 0"));
    master.start_task(sh(2, "exit 3"));
    master.start_task(sh(3, "kill -USR1 $$"));
    master.start_task(spec(4, &["/nonexistent/program"]));
    master.start_task(spec(5, &["true"]));

    assert_eq!(
        master.wait_finished(task_ref(1)).await,
        (Exit::Code(0), None, 0)
    );
    assert_eq!(
        master.wait_finished(task_ref(2)).await,
        (Exit::Code(3), None, 0)
    );
    assert_eq!(
        master.wait_finished(task_ref(3)).await,
        (Exit::Signal(libc::SIGUSR1), None, 0)
    );
    assert_eq!(
        master.wait_finished(task_ref(4)).await,
        (Exit::SpawnFailed(libc::ENOENT), None, 0)
    );
    assert_eq!(
        master.wait_finished(task_ref(5)).await,
        (Exit::Code(0), None, 0)
    );

    let seen = master.seen();
    assert_eq!(seen.output(task_ref(1), Stream::Stdout), b"out\n");
    assert_eq!(seen.output(task_ref(1), Stream::Stderr), b"err\n");
    // Accepted, Started, Finished in that order for a task that ran.
    let kinds: Vec<&str> = seen
        .of(task_ref(2))
        .iter()
        .map(|k| match k {
            EventKind::Accepted { .. } => "accepted",
            EventKind::Started { .. } => "started",
            EventKind::Finished { .. } => "finished",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["accepted", "started", "finished"]);
    // Every event acknowledged, nothing reaped late.
    master.assert_consistent();
    assert!(
        procs::zombie_children(agent.pid()).is_empty(),
        "the agent left zombies"
    );
}

async fn kill_by_command(broker: &TestBroker) {
    let (master, _home, agent) = setup(broker, "kill", |_| {}).await;
    // One task that dies of SIGTERM, one that ignores it (and so does its child) and needs the
    // SIGKILL after the grace time.
    master.start_task(sh(1, "sleep 60"));
    master.start_task(sh(
        2,
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
    ));
    let pid1 = master.wait_started(task_ref(1)).await;
    let pid2 = master.wait_started(task_ref(2)).await;
    master
        .wait_for("task 2 ready", |s| {
            (s.output(task_ref(2), Stream::Stdout) == b"ready\n").then_some(())
        })
        .await;

    master.kill_task(task_ref(1));
    master.kill_task(task_ref(2));
    assert_eq!(
        master.wait_finished(task_ref(1)).await,
        (Exit::Signal(libc::SIGTERM), Some(KillCause::Requested), 0)
    );
    assert_eq!(
        master.wait_finished(task_ref(2)).await,
        (Exit::Signal(libc::SIGKILL), Some(KillCause::Requested), 0)
    );
    let seen = master.seen();
    for task in [task_ref(1), task_ref(2)] {
        assert!(
            seen.of(task).iter().any(|k| matches!(
                k,
                EventKind::Terminating {
                    cause: KillCause::Requested,
                    ..
                }
            )),
            "no Terminating for {task:?}:\n{}",
            seen.dump()
        );
    }
    // The whole group went, the shell's children included.
    for pgid in [pid1, pid2] {
        assert!(procs::live_group(pgid).is_empty(), "group {pgid} survives");
    }
    // A kill for an attempt the agent does not have is harmless.
    master.kill_task(task_ref(99));
    master.start_task(spec(3, &["true"]));
    assert_eq!(
        master.wait_finished(task_ref(3)).await,
        (Exit::Code(0), None, 0)
    );
    master.assert_consistent();
    assert!(procs::zombie_children(agent.pid()).is_empty());
}

async fn output_cap(broker: &TestBroker) {
    let (master, _home, _agent) = setup(broker, "cap", |_| {}).await;
    let mut capped = sh(1, "head -c 10000 /dev/zero; head -c 500 /dev/zero >&2");
    capped.policy.output_cap = 1000;
    master.start_task(capped);
    let (exit, cause, dropped) = master.wait_finished(task_ref(1)).await;
    assert_eq!((exit, cause), (Exit::Code(0), None));
    let seen = master.seen();
    let out = seen.output(task_ref(1), Stream::Stdout);
    let err = seen.output(task_ref(1), Stream::Stderr);
    // The cap counts both streams; what is beyond it is counted, not sent.
    assert_eq!(out.len() + err.len(), 1000, "{}", seen.dump());
    assert_eq!(dropped, 10_500 - 1000);
    assert!(out.iter().chain(&err).all(|b| *b == 0));
    master.assert_consistent();
}

async fn bad_commands_are_reported(broker: &TestBroker) {
    let (master, _home, _agent) = setup(broker, "bad", |_| {}).await;
    let good = master.encode_command(CommandBody::Start(sh(50, "true")));
    let mut unknown_version = good.clone();
    unknown_version[0] = 9;
    let mut unknown_scheme = good.clone();
    unknown_scheme[1] = 7;
    let mut trailing = good.clone();
    trailing.push(0);
    let mut flipped = good.clone();
    flipped[4] ^= 1;
    let mut unsigned = [0u8; wire::MAX_MESSAGE];
    let unsigned = wire::encode(&wire::decode(&good).unwrap(), &mut unsigned)
        .unwrap()
        .to_vec();
    let hb =
        tether_core::message::Message::MasterHeartbeat(tether_core::message::MasterHeartbeat {
            epoch: 1,
            counter: 1,
            period_ms: 1000,
        });
    let wrong_topic = master.sign_for_command_topic(&hb);
    // Validly signed garbage: message tag 9 does not exist.
    let malformed = master.seal_for_command_topic(&[wire::PROTOCOL_VERSION, 1, 9, 0, 0, 0]);
    let cases: Vec<(Vec<u8>, ReceiveError)> = vec![
        (Vec::new(), DecodeError::Empty.into()),
        (malformed, DecodeError::Malformed.into()),
        (
            good[..good.len() - 1].to_vec(),
            Refusal::BadSignature.into(),
        ),
        (unknown_version, DecodeError::UnknownVersion(9).into()),
        (unknown_scheme, DecodeError::UnknownAuthScheme(7).into()),
        (trailing, Refusal::BadSignature.into()),
        (flipped, Refusal::BadSignature.into()),
        (unsigned, Refusal::Unauthenticated.into()),
        (wrong_topic, DecodeError::WrongTopic.into()),
        // Over the protocol's limit, under the brokers' packet limit (8 KiB).
        (
            vec![wire::PROTOCOL_VERSION; 3000],
            DecodeError::Oversized { len: 3000 }.into(),
        ),
    ];
    // One at a time: reports are coalesced (one event per heartbeat period), so each case is
    // reported alone once the previous one was.
    for (i, (payload, expected)) in cases.iter().enumerate() {
        master.publish_raw_command(payload.clone());
        master
            .wait_for(&format!("BadCommand {expected:?}"), |s| {
                (s.bad_commands() > i as u64).then_some(())
            })
            .await;
        let seen = master.seen();
        assert!(
            seen.any(|k| matches!(k, EventKind::BadCommand { error, .. } if error == expected)),
            "{expected:?}: {}",
            seen.dump()
        );
    }
    // The agent still works, and the start hidden in the mangled copies never ran.
    master.start_task(sh(1, "echo alive"));
    assert_eq!(
        master.wait_finished(task_ref(1)).await,
        (Exit::Code(0), None, 0)
    );
    let seen = master.seen();
    assert_eq!(seen.output(task_ref(1), Stream::Stdout), b"alive\n");
    assert!(seen.of(task_ref(50)).is_empty(), "{}", seen.dump());
    assert_eq!(seen.bad_commands(), cases.len() as u64);
    master.assert_consistent();
}

async fn normal_stop_drains(broker: &TestBroker) {
    let (master, home, mut agent) = setup(broker, "stop", |o| o.drain_seconds = 20).await;
    let go = home.path().join("go");
    let script = format!(
        "echo waiting; while [ ! -e {} ]; do sleep 0.05; done; echo done",
        go.display()
    );
    master.start_task(sh(1, &script));
    master
        .wait_for("task 1 waiting", |s| {
            (s.output(task_ref(1), Stream::Stdout) == b"waiting\n").then_some(())
        })
        .await;
    let inc = master.seen().online_incarnation().unwrap();

    agent.sigterm();
    // Only once the agent has taken the signal: a command sent sooner may be handled first
    // (slow under qemu or a loaded machine) and rightly accepted.
    agent.wait_log(&["stop requested: draining"]).await;
    // Draining: new work is refused, the running task is left alone.
    master.start_task(sh(2, "true"));
    master
        .wait_for("task 2 rejected", |s| {
            s.of(task_ref(2))
                .iter()
                .any(|k| {
                    matches!(
                        k,
                        EventKind::Rejected {
                            reason: RejectReason::Draining,
                            ..
                        }
                    )
                })
                .then_some(())
        })
        .await;
    assert!(agent.try_exit().is_none(), "the agent quit before its task");
    std::fs::write(&go, b"").unwrap();

    assert_eq!(
        master.wait_finished(task_ref(1)).await,
        (Exit::Code(0), None, 0)
    );
    let stopped = Presence {
        state: State::Stopped,
        incarnation: inc,
    }
    .render()
    .to_string();
    master
        .wait_for("offline stopped presence", |s| {
            s.presence.contains(&stopped).then_some(())
        })
        .await;
    let status = agent.wait_exit(WAIT).await.expect("the agent exits");
    assert!(status.success(), "a normal stop exits 0, got {status}");
    let seen = master.seen();
    assert_eq!(seen.output(task_ref(1), Stream::Stdout), b"waiting\ndone\n");
    // A normal stop is not a failure: no `lost` will after the goodbye.
    let last = seen.presence.last().unwrap();
    assert_eq!(last, &stopped, "{:?}", seen.presence);
    master.assert_consistent();
}
