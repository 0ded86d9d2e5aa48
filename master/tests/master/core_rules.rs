//! The master core's rules, driven in virtual time. Agents are played by the test (presence,
//! heartbeats and events encoded with the real wire format) on the [`crate::rig::Rig`]: every
//! batch of changes is committed to a real SQLite store, the way the runtime does it.

use tether_core::Duration;
use tether_core::auth::{MasterKeys, Verifier};
use tether_core::message::{
    Event, EventKind, Exit, KillCause, Message, RejectReason, Report, TaskRef,
};
use tether_core::policy::{OnDisconnect, PolicyError};
use tether_core::presence::{Presence, State};
use tether_core::wire;
use tether_master::core::{
    Action, Config, Master, PolicyOverrides, ProfileRequest, Qos, RequestError, Submit,
};
use tether_master::model::{AgentPresence, AttemptState, ClusterMode, Outcome, TaskState};
use tether_master::store::Store;

use crate::played::*;

#[test]
fn master_announces_presence_and_heartbeats_every_period() {
    let mut h = rig();
    let presence = h
        .out
        .iter()
        .find(|p| p.topic == "tether/master/presence")
        .unwrap();
    // Readable, and signed for its topic.
    let keys = MasterKeys::from_keys(&[master_key().public_key()]).unwrap();
    assert!(presence.payload.starts_with(b"online 0000abcd "));
    assert_eq!(
        Presence::parse_verified(&presence.payload, &presence.topic, Verifier::Master(&keys)),
        Ok(Presence {
            state: State::Online,
            incarnation: 0xabcd
        })
    );
    assert!(presence.retain && presence.qos == Qos::AtLeastOnce);
    h.secs(35);
    let beats = h
        .out
        .iter()
        .filter(|p| p.topic == "tether/master/heartbeat")
        .map(|p| {
            match wire::decode_verified(&p.payload, &p.topic, Verifier::Master(&keys)).unwrap() {
                Message::MasterHeartbeat(hb) => hb,
                other => panic!("{other:?}"),
            }
        })
        .collect::<Vec<_>>();
    assert_eq!(beats.len(), 4, "at 0, 10, 20, 30 s");
    assert!(
        beats.windows(2).all(|w| w[1].counter > w[0].counter),
        "each heartbeat newer than the last: {beats:?}"
    );
    assert!(
        beats
            .iter()
            .all(|b| b.epoch == 0xabcd && b.period_ms == 10_000)
    );
}

#[test]
fn stale_will_never_marks_a_live_agent_offline() {
    let mut h = rig();
    h.online("pi-1", 1);
    // Restarted quickly: the new incarnation is online, then the old session's will arrives.
    h.online("pi-1", 2);
    h.presence("pi-1", State::Lost, 1);
    assert_eq!(h.m.stats().stale_wills, 1);
    assert_eq!(h.stored_agent("pi-1").presence, AgentPresence::Online);
    let id = h.submit(to_agent("pi-1", &["true"]));
    assert_eq!(h.starts("pi-1", 0).len(), 1);
    assert_eq!(h.task_state(id), TaskState::Dispatched);
    // The live incarnation's will counts.
    h.presence("pi-1", State::Lost, 2);
    assert_eq!(h.stored_agent("pi-1").presence, AgentPresence::Lost);
    assert_eq!(h.task_state(id), TaskState::Unreachable);
}

#[test]
fn start_is_retransmitted_every_period_until_accepted() {
    let mut h = rig();
    h.online("pi-1", 1);
    let id = h.submit(to_agent("pi-1", &["true"]));
    for _ in 0..3 {
        h.secs(10);
        h.heartbeat("pi-1", 1, 0, &[]);
    }
    let starts = h.starts("pi-1", 0);
    assert_eq!(starts.len(), 4, "at 0, 10, 20, 30 s: {starts:?}");
    assert!(starts.iter().all(|t| t.task == id));
    let task = starts[0];
    h.event("pi-1", 1, EventKind::Accepted { task });
    assert_eq!(h.task_state(id), TaskState::Accepted);
    let mark = h.out.len();
    h.secs(30);
    assert!(h.starts("pi-1", mark).is_empty());
}

#[test]
fn rejected_start_fails_the_task_or_retries_when_transient() {
    let mut h = rig();
    h.online("pi-1", 1);
    let id = h.submit(to_agent("pi-1", &["true"]));
    let task = h.starts("pi-1", 0)[0];
    h.event(
        "pi-1",
        1,
        EventKind::Rejected {
            task,
            reason: RejectReason::Full,
        },
    );
    assert_eq!(h.task_state(id), TaskState::Pending);
    let mark = h.out.len();
    h.secs(10);
    h.heartbeat("pi-1", 1, 1, &[]);
    let again = h.starts("pi-1", mark);
    assert_eq!(again.len(), 1);
    assert!(again[0].attempt > task.attempt, "a new attempt id");
    h.event(
        "pi-1",
        2,
        EventKind::Rejected {
            task: again[0],
            reason: RejectReason::InvalidSpec(tether_core::message::SpecError::EmptyArgv),
        },
    );
    let t = h.store.task(id).unwrap().unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(matches!(t.outcome, Some(Outcome::Rejected { .. })));
}

#[test]
fn events_are_deduplicated_and_acknowledged_over_the_contiguous_prefix_only() {
    let mut h = rig();
    h.online("pi-1", 1);
    let id = h.submit(to_agent("pi-1", &["echo", "hi"]));
    let task = h.starts("pi-1", 0)[0];
    let mark = h.out.len();
    h.event("pi-1", 1, EventKind::Accepted { task });
    h.event("pi-1", 3, EventKind::Started { task, pid: 7 });
    assert_eq!(h.acks("pi-1", mark), vec![1, 1], "3 is above a gap");
    h.event("pi-1", 1, EventKind::Accepted { task });
    assert_eq!(
        h.acks("pi-1", mark),
        vec![1, 1, 1],
        "a duplicate is acknowledged again"
    );
    assert_eq!(h.m.stats().duplicate_events, 1);
    h.event(
        "pi-1",
        2,
        EventKind::Output {
            task,
            stream: tether_core::message::Stream::Stdout,
            offset: 0,
            data: heapless::Vec::from_slice(b"hi\n").unwrap(),
        },
    );
    assert_eq!(*h.acks("pi-1", mark).last().unwrap(), 3);
    h.event("pi-1", 3, EventKind::Started { task, pid: 7 });
    assert_eq!(h.store.events("pi-1").unwrap().len(), 3);
    assert_eq!(h.stored_agent("pi-1").last_seq_acked, 3);
    assert_eq!(h.store.output(task.attempt).unwrap()[0].bytes, b"hi\n");
    assert_eq!(h.task_state(id), TaskState::Running);
    h.finish("pi-1", 4, task, Exit::Code(0));
    assert_eq!(h.task_state(id), TaskState::Succeeded);
}

#[test]
fn an_ack_follows_the_persisted_event_in_its_batch() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.submit(to_agent("pi-1", &["true"]));
    let task = h.starts("pi-1", 0)[0];
    let ev = h.mac(
        "pi-1",
        "event",
        &Message::Event(Report {
            journal: h.journal,
            event: Event {
                seq: 1,
                at_unix_ms: 0,
                kind: EventKind::Accepted { task },
            },
        }),
    );
    h.m.handle_message(h.now, "tether/agent/pi-1/event", &ev);
    let batch: Vec<Action> = std::iter::from_fn(|| h.m.poll_action()).collect();
    let ack_at = batch
        .iter()
        .position(|a| matches!(a, Action::Publish(p) if p.topic.ends_with("/cmd")))
        .expect("an ack");
    let event_at = batch
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Persist(tether_master::core::Change::Event { .. })
            )
        })
        .expect("the event is persisted");
    assert!(event_at < ack_at);
}

#[test]
fn kill_task_fails_once_timeout_plus_allowance_passed_since_last_heard() {
    let mut h = rig();
    h.online("pi-1", 1);
    let id = h.submit(Submit {
        policy: short(OnDisconnect::Kill),
        ..to_agent("pi-1", &["sleep", "100"])
    });
    let task = h.starts("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, task);
    // The master heartbeats at the task's 1 s period.
    let mark = h.out.len();
    h.secs(3);
    let beats = h.out[mark..]
        .iter()
        .filter(|p| p.topic == "tether/master/heartbeat")
        .count();
    assert!(beats >= 3, "{beats}");
    h.heartbeat("pi-1", 1, 2, &[task]);
    // Silent from here: lost at timeout 3 s + allowance 2 s.
    h.advance(Duration::from_millis(4_999));
    assert_eq!(h.task_state(id), TaskState::Unreachable);
    h.advance(Duration::from_millis(1));
    let t = h.store.task(id).unwrap().unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(
        t.outcome,
        Some(Outcome::AgentLost {
            attempt: task.attempt
        })
    );
    assert_eq!(h.stored_attempt(task).state, AttemptState::Lost);
}

#[test]
fn kill_task_survives_an_outage_shorter_than_its_timeout() {
    let mut h = rig();
    h.online("pi-1", 1);
    let id = h.submit(Submit {
        policy: short(OnDisconnect::Kill),
        ..to_agent("pi-1", &["sleep", "100"])
    });
    let task = h.starts("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, task);
    h.presence("pi-1", State::Lost, 1);
    h.secs(4);
    assert_eq!(h.task_state(id), TaskState::Unreachable);
    h.presence("pi-1", State::Online, 1);
    h.heartbeat("pi-1", 1, 2, &[task]);
    assert_eq!(h.task_state(id), TaskState::Running);
    h.finish("pi-1", 3, task, Exit::Code(0));
    assert_eq!(h.task_state(id), TaskState::Succeeded);
}

#[test]
fn continue_task_is_unreachable_then_rescheduled_and_first_finished_wins() {
    for cancel in [false, true] {
        let mut h = rig_with(|c| c.cancel_duplicates = cancel);
        h.online("a", 1);
        h.online("b", 1);
        cluster(&mut h, "c", ClusterMode::FixedPriority, &["a", "b"]);
        let id = h.submit(Submit {
            policy: PolicyOverrides {
                lost_after_ms: Some(20_000),
                ..short(OnDisconnect::Continue)
            },
            ..to_cluster("c")
        });
        let first = h.starts("a", 0)[0];
        h.accept_and_start("a", 1, first);
        // a goes silent; b keeps heartbeating.
        let mut waited = 0;
        while waited < 19 {
            h.secs(1);
            h.heartbeat("b", 1, 0, &[]);
            waited += 1;
        }
        assert_eq!(h.task_state(id), TaskState::Unreachable);
        assert!(h.starts("b", 0).is_empty());
        h.secs(1);
        h.heartbeat("b", 1, 0, &[]);
        let second = h.starts("b", 0)[0];
        assert_eq!(second.task, id);
        assert!(second.attempt > first.attempt);
        h.accept_and_start("b", 1, second);
        assert_eq!(h.task_state(id), TaskState::Running);
        // The first attempt finishes first (reported when a is back): it decides.
        let mark = h.out.len();
        h.online("a", 1);
        h.finish("a", 3, first, Exit::Code(0));
        let t = h.store.task(id).unwrap().unwrap();
        assert_eq!(t.state, TaskState::Succeeded);
        assert!(
            matches!(t.outcome, Some(Outcome::Exited { attempt, .. }) if attempt == first.attempt)
        );
        h.secs(1);
        assert_eq!(!h.kills("b", mark).is_empty(), cancel, "cancel = {cancel}");
        // The duplicate result is kept on its own attempt; the outcome stays.
        h.finish("b", 3, second, Exit::Code(1));
        let t = h.store.task(id).unwrap().unwrap();
        assert!(
            matches!(t.outcome, Some(Outcome::Exited { attempt, .. }) if attempt == first.attempt)
        );
        let b = h.stored_attempt(second);
        assert_eq!(
            (b.state, b.exit),
            (AttemptState::Finished, Some(Exit::Code(1)))
        );
    }
}

#[test]
fn returning_agent_is_reconciled_after_its_replay() {
    let mut h = rig();
    h.online("pi-1", 1);
    let done = h.submit(to_agent("pi-1", &["true"]));
    let gone = h.submit(to_agent("pi-1", &["true"]));
    let kept = h.submit(to_agent("pi-1", &["true"]));
    let starts = h.starts("pi-1", 0);
    let [t1, t2, t3] = [starts[0], starts[1], starts[2]];
    h.accept_and_start("pi-1", 1, t1);
    h.accept_and_start("pi-1", 3, t2);
    h.accept_and_start("pi-1", 5, t3);
    h.presence("pi-1", State::Lost, 1);
    h.secs(15);
    // Back as a new process, with events still to replay: nothing is judged yet.
    h.presence("pi-1", State::Online, 2);
    h.heartbeat("pi-1", 2, 8, &[t3]);
    assert_eq!(h.task_state(gone), TaskState::Running);
    h.finish("pi-1", 7, t1, Exit::Code(0));
    h.event(
        "pi-1",
        8,
        EventKind::Terminating {
            task: t3,
            cause: KillCause::MaxRunTime,
        },
    );
    let mark = h.out.len();
    // Replay complete; it also holds an attempt the master does not know.
    let stray = TaskRef {
        task: 999,
        attempt: 999,
    };
    h.heartbeat("pi-1", 2, 8, &[t3, stray]);
    assert_eq!(h.task_state(done), TaskState::Succeeded);
    assert_eq!(h.task_state(gone), TaskState::Lost);
    assert_eq!(h.task_state(kept), TaskState::Running);
    assert_eq!(h.kills("pi-1", mark), vec![stray]);
}

#[test]
fn round_robin_and_fixed_priority_with_fail_over() {
    let mut h = rig();
    for a in ["a", "b", "c"] {
        h.online(a, 1);
    }
    cluster(&mut h, "rr", ClusterMode::RoundRobin, &["a", "b", "c"]);
    cluster(&mut h, "fp", ClusterMode::FixedPriority, &["a", "b", "c"]);
    let mut order = Vec::new();
    for _ in 0..4 {
        let mark = h.out.len();
        h.submit(to_cluster("rr"));
        for a in ["a", "b", "c"] {
            if !h.starts(a, mark).is_empty() {
                order.push(a);
            }
        }
    }
    assert_eq!(order, ["a", "b", "c", "a"]);
    // Fixed priority: always the first available; a's will moves new tasks to b at once.
    let mark = h.out.len();
    h.submit(to_cluster("fp"));
    h.submit(to_cluster("fp"));
    assert_eq!(h.starts("a", mark).len(), 2);
    h.presence("a", State::Lost, 1);
    let mark = h.out.len();
    h.submit(to_cluster("fp"));
    assert_eq!(h.starts("b", mark).len(), 1);
    // Round robin skips a as well.
    let mark = h.out.len();
    h.submit(to_cluster("rr"));
    h.submit(to_cluster("rr"));
    assert_eq!(
        (h.starts("b", mark).len(), h.starts("c", mark).len()),
        (1, 1)
    );
}

#[test]
fn silent_member_is_skipped_and_drained_member_is_not_failed() {
    let mut h = rig();
    h.online("a", 1);
    h.online("b", 1);
    cluster(&mut h, "fp", ClusterMode::FixedPriority, &["a", "b"]);
    // a stops normally after its task finished.
    let id = h.submit(to_cluster("fp"));
    let t = h.starts("a", 0)[0];
    h.accept_and_start("a", 1, t);
    h.finish("a", 3, t, Exit::Code(0));
    h.presence("a", State::Stopped, 1);
    assert_eq!(h.task_state(id), TaskState::Succeeded);
    assert_eq!(h.stored_agent("a").presence, AgentPresence::Stopped);
    let mark = h.out.len();
    h.submit(to_cluster("fp"));
    assert_eq!(h.starts("b", mark).len(), 1);
    // b's heartbeats stop (no will, e.g. a black-holed link): skipped after 2 periods + 2 s.
    h.online("a", 2);
    cluster(&mut h, "ba", ClusterMode::FixedPriority, &["b", "a"]);
    h.secs(21);
    h.heartbeat("a", 2, 0, &[]);
    let mark = h.out.len();
    h.submit(to_cluster("ba"));
    assert_eq!(h.starts("b", mark).len(), 1, "still within 22 s");
    h.secs(1);
    h.heartbeat("a", 2, 0, &[]);
    let mark = h.out.len();
    h.submit(to_cluster("ba"));
    assert_eq!(h.starts("a", mark).len(), 1);
    assert!(h.starts("b", mark).is_empty());
}

#[test]
fn profiles_are_validated_and_applied() {
    let mut h = rig();
    h.online("pi-1", 1);
    let bad = |period, timeout| ProfileRequest {
        name: "p".into(),
        policy: PolicyOverrides {
            heartbeat_period_ms: Some(period),
            heartbeat_timeout_ms: Some(timeout),
            ..PolicyOverrides::default()
        },
    };
    let err = h.m.put_profile(h.now, bad(10_000, 25_000)).unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::InvalidPolicy(PolicyError::TimeoutNotMultipleOfPeriod)
        ),
        "{err}"
    );
    let err = h.m.put_profile(h.now, bad(10_000, 10_000)).unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::InvalidPolicy(PolicyError::TimeoutBelowTwoPeriods)
        ),
        "{err}"
    );
    let err =
        h.m.put_profile(
            h.now,
            ProfileRequest {
                name: "p".into(),
                policy: PolicyOverrides {
                    lost_after_ms: Some(1_000),
                    ..PolicyOverrides::default()
                },
            },
        )
        .unwrap_err();
    assert!(matches!(err, RequestError::LostAfterWithKill), "{err}");
    let err =
        h.m.put_profile(
            h.now,
            ProfileRequest {
                name: "no/slash".into(),
                policy: PolicyOverrides::default(),
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        RequestError::InvalidName {
            what: "profile",
            ..
        }
    ));
    h.m.put_profile(
        h.now,
        ProfileRequest {
            name: "camera".into(),
            policy: PolicyOverrides {
                retries: Some(2),
                ..short(OnDisconnect::Continue)
            },
        },
    )
    .unwrap();
    h.drain();
    assert_eq!(h.stored_profile("camera").policy.retries, 2);
    let id = h.submit(Submit {
        profile: Some("camera".into()),
        policy: PolicyOverrides {
            heartbeat_timeout_ms: Some(5_000),
            ..PolicyOverrides::default()
        },
        ..to_agent("pi-1", &["true"])
    });
    let p = h.store.task(id).unwrap().unwrap().policy;
    assert_eq!(
        (p.on_disconnect, p.heartbeat_timeout_ms, p.retries),
        (OnDisconnect::Continue, 5_000, 2)
    );
    let mut refused = |s: Submit| h.m.submit(h.now, s).unwrap_err();
    let err = refused(Submit {
        profile: Some("nope".into()),
        ..to_agent("pi-1", &["true"])
    });
    assert!(
        matches!(&err, RequestError::UnknownProfile(p) if p == "nope"),
        "{err:?}"
    );
    let err = refused(to_agent("ghost", &["true"]));
    assert!(
        matches!(&err, RequestError::UnknownAgent(a) if a == "ghost"),
        "{err:?}"
    );
    let err = refused(to_cluster("nope"));
    assert!(
        matches!(&err, RequestError::UnknownCluster(c) if c == "nope"),
        "{err:?}"
    );
    let err = refused(to_agent("pi-1", &[]));
    assert!(
        matches!(err, RequestError::InvalidTask { field: "argv", .. }),
        "{err:?}"
    );
    let err = refused(Submit {
        cluster: Some("x".into()),
        ..to_agent("pi-1", &["true"])
    });
    assert!(matches!(err, RequestError::NotOneTarget), "{err:?}");
}

#[test]
fn retries_budget_then_failure() {
    let mut h = rig();
    h.online("pi-1", 1);
    let id = h.submit(Submit {
        policy: PolicyOverrides {
            retries: Some(1),
            ..PolicyOverrides::default()
        },
        ..to_agent("pi-1", &["false"])
    });
    let first = h.starts("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, first);
    let mark = h.out.len();
    h.finish("pi-1", 3, first, Exit::Code(1));
    let second = h.starts("pi-1", mark)[0];
    assert_eq!(second.task, id);
    assert_ne!(second.attempt, first.attempt);
    assert_eq!(h.task_state(id), TaskState::Dispatched);
    h.accept_and_start("pi-1", 4, second);
    h.finish("pi-1", 6, second, Exit::Code(1));
    let t = h.store.task(id).unwrap().unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.outcome, Some(Outcome::RetriesExhausted));
    assert_eq!(h.store.attempts(id).unwrap().len(), 2);
}

#[test]
fn kill_request_pending_and_running() {
    let mut h = rig();
    h.online("pi-1", 1);
    cluster(&mut h, "empty", ClusterMode::RoundRobin, &["nobody"]);
    let queued = h.submit(to_cluster("empty"));
    assert_eq!(h.task_state(queued), TaskState::Pending);
    h.m.kill(h.now, queued).unwrap();
    h.drain();
    assert_eq!(h.task_state(queued), TaskState::Killed);
    assert!(matches!(
        h.m.kill(h.now, queued),
        Err(RequestError::AlreadyFinished { task, .. }) if task == queued
    ));
    assert!(matches!(
        h.m.kill(h.now, 777),
        Err(RequestError::UnknownTask(777))
    ));

    let id = h.submit(to_agent("pi-1", &["sleep", "100"]));
    let t = h.starts("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, t);
    let mark = h.out.len();
    h.m.kill(h.now, id).unwrap();
    h.drain();
    h.secs(10);
    h.heartbeat("pi-1", 1, 2, &[t]);
    h.secs(10);
    assert!(h.kills("pi-1", mark).len() >= 2, "repeated until finished");
    assert_eq!(h.store.load().unwrap().kill_requests, vec![queued, id]);
    h.event(
        "pi-1",
        3,
        EventKind::Finished {
            task: t,
            exit: Exit::Signal(15),
            cause: Some(KillCause::Requested),
            output_dropped: 0,
        },
    );
    assert_eq!(h.task_state(id), TaskState::Killed);
    let mark = h.out.len();
    h.secs(20);
    assert!(h.kills("pi-1", mark).is_empty());
}

#[test]
fn restart_from_the_store_keeps_everything() {
    let mut h = rig();
    h.online("pi-1", 1);
    cluster(&mut h, "rr", ClusterMode::RoundRobin, &["pi-1"]);
    let running = h.submit(to_agent("pi-1", &["sleep", "100"]));
    let unsent = h.submit(to_agent("pi-1", &["true"]));
    let starts = h.starts("pi-1", 0);
    let (t1, t2) = (starts[0], starts[1]);
    h.accept_and_start("pi-1", 1, t1);
    // Seq 4 arrives across a gap (3 missing) before the crash.
    h.event(
        "pi-1",
        4,
        EventKind::Terminating {
            task: t1,
            cause: KillCause::MaxRunTime,
        },
    );

    // kill -9: the core is gone; only the store remains.
    let snapshot = h.store.load().unwrap();
    let mut config = Config::new(P, 0xbeef, master_key());
    config.heartbeat_period = Duration::from_secs(10);
    h.m = Master::restore(config, snapshot, h.now).unwrap();
    h.m.handle_connected(h.now);
    let mark = h.out.len();
    h.drain();
    // Nothing new goes to an agent before it is heard: what the store says of it may be older
    // than what the broker has.
    assert!(h.starts("pi-1", mark).is_empty());
    h.secs(1);
    h.heartbeat("pi-1", 1, 4, &[t1]);
    // The unaccepted start goes out again, under the same attempt id.
    assert_eq!(h.starts("pi-1", mark), vec![t2]);
    // The agent replays 3 and 4: 4 is stored already and is not applied twice.
    h.event("pi-1", 3, EventKind::Accepted { task: t2 });
    h.event(
        "pi-1",
        4,
        EventKind::Terminating {
            task: t1,
            cause: KillCause::MaxRunTime,
        },
    );
    assert_eq!(*h.acks("pi-1", mark).last().unwrap(), 4);
    assert_eq!(h.store.events("pi-1").unwrap().len(), 4);
    assert_eq!(h.task_state(running), TaskState::Running);
    assert_eq!(h.task_state(unsent), TaskState::Accepted);
    // New ids stay above the old ones.
    let next = h.submit(to_cluster("rr"));
    assert!(next > unsent);
    let t3 = h
        .starts("pi-1", mark)
        .into_iter()
        .find(|t| t.task == next)
        .unwrap();
    assert!(t3.attempt > t2.attempt);
    h.finish("pi-1", 5, t1, Exit::Code(0));
    assert_eq!(h.task_state(running), TaskState::Succeeded);
}

#[test]
fn malformed_messages_are_counted_not_fatal() {
    let mut h = rig();
    h.key("pi-1");
    h.deliver("tether/agent/pi-1/event", b"\x01\x00\xff\xff");
    h.deliver("tether/agent/pi-1/heartbeat", b"");
    h.deliver("tether/agent/pi-1/presence", b"hello");
    h.deliver("tether/agent/bad+id/presence", b"online 00000001");
    h.deliver("other/topic", b"x");
    let hb = h.mac(
        "pi-1",
        "event",
        &Message::MasterHeartbeat(tether_core::message::MasterHeartbeat {
            epoch: 1,
            counter: 1,
            period_ms: 1,
        }),
    );
    h.deliver("tether/agent/pi-1/event", &hb);
    let s = h.m.stats();
    assert_eq!((s.bad_messages, s.foreign_messages), (4, 2));
    assert!(h.store.agents().unwrap().is_empty());
}
