//! The agent state machine driven by hand: one behaviour per test, time as plain values.

mod rig;

use rig::*;
use tether_core::Duration;
use tether_core::agent::{Action, Append, Phase, Signal};
use tether_core::allowlist::Allowlist;
use tether_core::journal::{self, JournalLevel, JournalUsage};
use tether_core::message::*;
use tether_core::policy::{OnDisconnect, PolicyError};
use tether_core::wire;

#[test]
fn start_runs_once_and_reports_in_order() {
    let mut rig = Rig::new();
    let s = spec(1, OnDisconnect::Continue);
    rig.command(t(10), CommandBody::Start(s.clone()));
    rig.command(t(20), CommandBody::Start(s.clone()));
    let actions = rig.take_actions();
    assert_eq!(spawns(&actions), vec![s.task], "spawned exactly once");
    // The order is durable before the spawn.
    let spawn_at = actions
        .iter()
        .position(|a| matches!(a, Action::Spawn(_)))
        .unwrap();
    assert!(actions[..spawn_at].iter().any(|a| matches!(
        a,
        Action::Append {
            record: Append::Spawning(_),
            ..
        }
    )));
    assert_eq!(rig.agent.stats().duplicate_starts, 1);

    rig.agent.handle_process_started(t(30), s.task, 77);
    assert_eq!(
        rig.agent
            .handle_output(t(31), s.task, Stream::Stdout, b"hello world!"),
        12
    );
    rig.agent
        .handle_process_exited(t(40), s.task, Exit::Code(0));
    rig.drain(t(40));
    let events = rig.events();
    assert_eq!(events[0], EventKind::Accepted { task: s.task });
    assert_eq!(
        events[1],
        EventKind::Started {
            task: s.task,
            pid: 77
        }
    );
    // Output beyond the cap (10 bytes) is counted, not kept.
    assert!(
        matches!(&events[2], EventKind::Output { data, .. } if data.as_slice() == b"hello worl")
    );
    assert_eq!(
        events[3],
        EventKind::Finished {
            task: s.task,
            exit: Exit::Code(0),
            cause: None,
            output_dropped: 2
        }
    );
}

#[test]
fn events_are_sent_when_connected_and_resent_until_acked() {
    let mut rig = Rig::new();
    let s = spec(1, OnDisconnect::Continue);
    rig.command(t(10), CommandBody::Start(s));
    assert!(
        !rig.take_actions()
            .iter()
            .any(|a| matches!(a, Action::Send { .. })),
        "offline: nothing sent"
    );
    rig.agent.handle_connected(t(20));
    rig.drain(t(20));
    let sends: Vec<_> = rig
        .take_actions()
        .into_iter()
        .filter(|a| matches!(a, Action::Send { .. }))
        .collect();
    assert_eq!(sends, vec![Action::Send { from: 1, to: 1 }]);
    // No ack within a heartbeat period: sent again.
    rig.run_until(t(20 + 1_000));
    assert!(
        rig.take_actions()
            .contains(&Action::Send { from: 1, to: 1 })
    );
    rig.command(t(1_100), CommandBody::Ack { up_to: 1 });
    assert!(rig.take_actions().contains(&Action::Acked { up_to: 1 }));
    assert_eq!(rig.agent.acked_seq(), 1);
    // Reconnect: nothing unacknowledged, nothing resent.
    rig.agent.handle_disconnected(t(1_200));
    rig.agent.handle_connected(t(1_300));
    rig.drain(t(1_300));
    assert!(
        !rig.take_actions()
            .iter()
            .any(|a| matches!(a, Action::Send { .. }))
    );
}

#[test]
fn kill_policy_terminates_at_timeout_then_kills_after_grace() {
    let mut rig = Rig::new();
    let s = spec(1, OnDisconnect::Kill);
    rig.command(t(0), CommandBody::Start(s.clone()));
    rig.agent.handle_process_started(t(0), s.task, 5);
    rig.master_heartbeat(t(1_000));
    rig.take_actions();
    rig.run_until(t(3_999));
    assert!(
        signals(&rig.take_actions()).is_empty(),
        "not before the timeout"
    );
    rig.run_until(t(4_000));
    assert_eq!(signals(&rig.take_actions()), vec![Signal::Terminate]);
    rig.run_until(t(4_499));
    assert!(signals(&rig.take_actions()).is_empty());
    rig.run_until(t(4_500));
    assert_eq!(signals(&rig.take_actions()), vec![Signal::Kill]);
    rig.agent
        .handle_process_exited(t(4_600), s.task, Exit::Signal(9));
    rig.drain(t(4_600));
    assert!(rig.events().contains(&EventKind::Finished {
        task: s.task,
        exit: Exit::Signal(9),
        cause: Some(KillCause::MasterLost),
        output_dropped: 0
    }));
}

#[test]
fn contact_inside_the_timeout_keeps_the_task() {
    let mut rig = Rig::new();
    let s = spec(1, OnDisconnect::Kill);
    rig.command(t(0), CommandBody::Start(s.clone()));
    rig.agent.handle_process_started(t(0), s.task, 5);
    for ms in [2_900, 5_800, 8_700] {
        rig.run_until(t(ms));
        rig.master_heartbeat(t(ms));
    }
    rig.run_until(t(11_000));
    assert!(signals(&rig.take_actions()).is_empty());
}

#[test]
fn continue_policy_survives_any_silence() {
    let mut rig = Rig::new();
    let s = spec(1, OnDisconnect::Continue);
    rig.command(t(0), CommandBody::Start(s.clone()));
    rig.agent.handle_process_started(t(0), s.task, 5);
    rig.run_until(t(24 * 3_600_000));
    assert!(signals(&rig.take_actions()).is_empty());
}

#[test]
fn order_in_advance_starts_on_time_without_master() {
    let mut rig = Rig::new();
    let mut s = spec(1, OnDisconnect::Continue);
    s.start_at_unix_ms = Some(1_000_000 + 3_600_000);
    rig.command(t(0), CommandBody::Start(s.clone()));
    assert!(spawns(&rig.take_actions()).is_empty());
    assert_eq!(rig.agent.poll_timeout(), Some(t(3_600_000)));
    rig.run_until(t(3_599_999));
    assert!(spawns(&rig.take_actions()).is_empty());
    rig.run_until(t(3_600_000));
    assert_eq!(spawns(&rig.take_actions()), vec![s.task]);
}

#[test]
fn an_order_due_during_a_stop_waits_for_the_next_start() {
    let mut rig = Rig::new();
    let mut s = spec(1, OnDisconnect::Continue);
    s.start_at_unix_ms = Some(1_000_000 + 5_000);
    rig.command(t(0), CommandBody::Start(s.clone()));
    rig.agent
        .handle_stop(t(1_000), Duration::from_millis(60_000));
    rig.drain(t(1_000));
    // Nothing holds the stop up, and nothing is armed for the held order.
    assert!(rig.agent.is_stopped());
    assert_eq!(rig.agent.poll_timeout(), None);
    rig.run_until(t(10_000));
    assert!(spawns(&rig.take_actions()).is_empty());
    assert!(
        rig.agent
            .tasks()
            .any(|(task, phase)| task == s.task && phase == Phase::Held)
    );
}

#[test]
fn restart_remembers_attempts_and_reports_the_possibly_running_as_lost() {
    let mut rig = Rig::new();
    let running = spec(1, OnDisconnect::Continue);
    let mut held = spec(2, OnDisconnect::Continue);
    held.start_at_unix_ms = Some(1_000_000 + 60_000);
    rig.command(t(0), CommandBody::Start(running.clone()));
    rig.command(t(0), CommandBody::Start(held.clone()));
    rig.agent.handle_process_started(t(1), running.task, 9);
    rig.drain(t(1));

    // A new process reads the journal back; the master's retransmissions carry new counters.
    let mut fresh = rig.restart(t(5));
    fresh.journal.clear();
    fresh.command(t(6), CommandBody::Start(running.clone()));
    fresh.command(t(6), CommandBody::Start(held.clone()));
    let actions = fresh.take_actions();
    assert!(
        spawns(&actions).is_empty(),
        "never started twice: {actions:?}"
    );
    assert_eq!(fresh.agent.stats().duplicate_starts, 2);
    let lost = actions.iter().any(|a| {
        matches!(
            a,
            Action::Append {
                record: Append::Event(Event {
                    kind: EventKind::Finished {
                        exit: Exit::Lost,
                        ..
                    },
                    ..
                }),
                ..
            }
        )
    });
    assert!(lost, "the running attempt is reported lost");
    assert_eq!(
        fresh.agent.tasks().collect::<Vec<_>>(),
        vec![(held.task, Phase::Held)]
    );
    fresh.run_until(t(60_000));
    assert_eq!(
        spawns(&fresh.take_actions()),
        vec![held.task],
        "held order still starts on time"
    );
}

#[test]
fn refusals_are_explicit_events() {
    let mut rig = Rig::new();
    for attempt in 1..=4 {
        rig.command(t(0), CommandBody::Start(spec(attempt, OnDisconnect::Kill)));
    }
    rig.command(t(0), CommandBody::Start(spec(5, OnDisconnect::Kill)));
    let mut bad = spec(6, OnDisconnect::Kill);
    bad.policy.heartbeat_timeout_ms = 1_500;
    rig.command(t(0), CommandBody::Start(bad));
    rig.agent.handle_journal_usage(JournalUsage {
        bytes: 1 << 20,
        max_bytes: 1 << 20,
        unacked_bytes: 1 << 20,
    });
    let events = rig.events();
    assert!(events.contains(&EventKind::Rejected {
        task: spec(5, OnDisconnect::Kill).task,
        reason: RejectReason::Full
    }));
    assert!(events.contains(&EventKind::Rejected {
        task: spec(6, OnDisconnect::Kill).task,
        reason: RejectReason::InvalidPolicy(PolicyError::TimeoutNotMultipleOfPeriod)
    }));
}

#[test]
fn garbage_on_the_command_topic_is_reported_not_fatal() {
    let mut rig = Rig::new();
    let v = wire::PROTOCOL_VERSION;
    rig.agent.handle_message(t(0), CMD, &[v, 1, 0xff, 0xff]);
    rig.agent.handle_message(t(0), CMD, &[v, 0, 9]);
    rig.agent.handle_message(t(0), CMD, &[]);
    rig.agent.handle_message(t(0), CMD, &[1, 0, 9]);
    rig.agent.handle_message(t(0), CMD, &[9; 5000]);
    rig.agent
        .handle_message(t(0), "tether/agent/other/cmd", &[1, 2, 3]);
    rig.drain(t(0));
    assert_eq!(rig.agent.stats().bad_commands, 5);
    assert_eq!(rig.agent.stats().unauthenticated, 1);
    assert_eq!(rig.agent.stats().foreign_messages, 1);
    // The first is reported at once, the rest coalesced into one event at the next heartbeat.
    rig.agent.handle_connected(t(1));
    rig.drain(t(1));
    assert_eq!(
        rig.events(),
        vec![
            EventKind::BadCommand {
                error: wire::DecodeError::Truncated.into(),
                count: 1,
            },
            EventKind::BadCommand {
                error: wire::DecodeError::Oversized { len: 5000 }.into(),
                count: 4,
            },
        ]
    );
}

#[test]
fn own_stale_will_is_repaired() {
    let mut rig = Rig::new();
    rig.agent.handle_connected(t(0));
    rig.drain(t(0));
    rig.take_actions();
    rig.agent
        .handle_message(t(1), PRESENCE, &own_presence("offline 0000abcd lost"));
    rig.drain(t(1));
    let online = own_presence("online 0000abcd");
    let republished = rig.take_actions().iter().any(|a| matches!(a, Action::Publish { payload, retain: true, .. } if payload.as_slice() == online));
    assert!(republished);
    // A forged `online` (no valid MAC) is repaired as well; the real one is left alone.
    rig.agent.handle_message(t(2), PRESENCE, b"online 0000abcd");
    rig.drain(t(2));
    assert_eq!(rig.take_actions().len(), 1);
    rig.agent.handle_message(t(2), PRESENCE, &online);
    rig.drain(t(2));
    assert!(rig.take_actions().is_empty());
}

#[test]
fn normal_stop_drains_then_announces() {
    let mut rig = Rig::new();
    let s = spec(1, OnDisconnect::Continue);
    rig.agent.handle_connected(t(0));
    rig.command(t(0), CommandBody::Start(s.clone()));
    rig.agent.handle_process_started(t(1), s.task, 3);
    rig.agent.handle_stop(t(2), Duration::from_millis(1_000));
    rig.drain(t(2));
    rig.command(t(3), CommandBody::Start(spec(2, OnDisconnect::Continue)));
    assert!(rig.events().contains(&EventKind::Rejected {
        task: spec(2, OnDisconnect::Continue).task,
        reason: RejectReason::Draining
    }));
    rig.run_until(t(1_002));
    assert_eq!(signals(&rig.take_actions()), vec![Signal::Terminate]);
    rig.agent
        .handle_process_exited(t(1_100), s.task, Exit::Signal(15));
    rig.drain(t(1_100));
    let actions = rig.take_actions();
    let stopped = own_presence("offline 0000abcd stopped");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Publish { payload, .. } if payload.as_slice() == stopped))
    );
    assert_eq!(actions.last(), Some(&Action::Stopped));
    assert!(rig.agent.is_stopped());
}

#[test]
fn maximum_run_time_terminates_whatever_the_policy() {
    let mut rig = Rig::new();
    let mut s = spec(1, OnDisconnect::Continue);
    s.policy.max_run_ms = 2_000;
    rig.command(t(0), CommandBody::Start(s.clone()));
    rig.agent.handle_process_started(t(100), s.task, 5);
    rig.take_actions();
    rig.run_until(t(2_099));
    assert!(signals(&rig.take_actions()).is_empty());
    rig.run_until(t(2_100));
    assert_eq!(signals(&rig.take_actions()), vec![Signal::Terminate]);
    assert!(rig.events().contains(&EventKind::Terminating {
        task: s.task,
        cause: KillCause::MaxRunTime
    }));
}

#[test]
fn kill_command_terminates_running_and_cancels_held() {
    let mut rig = Rig::new();
    let running = spec(1, OnDisconnect::Continue);
    let mut held = spec(2, OnDisconnect::Continue);
    held.start_at_unix_ms = Some(2_000_000);
    rig.command(t(0), CommandBody::Start(running.clone()));
    rig.command(t(0), CommandBody::Start(held.clone()));
    rig.agent.handle_process_started(t(1), running.task, 5);
    rig.take_actions();
    rig.command(t(2), CommandBody::Kill { task: running.task });
    rig.command(t(2), CommandBody::Kill { task: held.task });
    assert_eq!(signals(&rig.take_actions()), vec![Signal::Terminate]);
    assert!(rig.events().contains(&EventKind::Finished {
        task: held.task,
        exit: Exit::Cancelled,
        cause: Some(KillCause::Requested),
        output_dropped: 0
    }));
    rig.run_until(t(2 + 500));
    assert_eq!(
        signals(&rig.take_actions()),
        vec![Signal::Kill],
        "SIGKILL after the grace time"
    );
    rig.run_until(t(10_000_000));
    assert!(
        spawns(&rig.take_actions()).is_empty(),
        "the cancelled order never starts"
    );
}

#[test]
fn nothing_is_spawned_or_sent_before_it_is_durable() {
    let mut agent = TestAgent::new(config(1), t(0)).unwrap();
    agent.handle_connected(t(0));
    let s = spec(1, OnDisconnect::Kill);
    let msg = Message::Command(Command {
        epoch: 1,
        counter: 1,
        journal: rig::JOURNAL,
        body: CommandBody::Start(s.clone()),
    });
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let bytes = wire::encode_signed(&msg, CMD, &master_key(), &mut buf).unwrap();
    agent.handle_message(t(1), CMD, bytes);
    let mut last = 0;
    while let Some(action) = agent.poll_action() {
        assert!(
            !matches!(action, Action::Spawn(_) | Action::Send { .. }),
            "{action:?} before fsync"
        );
        if let Action::Append { lsn, .. } = action {
            last = lsn;
        }
    }
    agent.handle_journaled(t(2), last);
    let after: Vec<_> = std::iter::from_fn(|| agent.poll_action()).collect();
    assert!(after.contains(&Action::Spawn(s.task)));
    assert!(after.contains(&Action::Send { from: 1, to: 1 }));
}

#[test]
fn a_shorter_period_applies_at_once() {
    let mut rig = Rig::new();
    rig.agent.handle_connected(t(0));
    rig.drain(t(0));
    assert_eq!(rig.agent.poll_timeout(), Some(t(10_000)), "default period");
    rig.master_heartbeat(t(100));
    assert_eq!(
        rig.agent.poll_timeout(),
        Some(t(1_100)),
        "the master's 1 s period from now"
    );
}

fn with_program(attempt: u64, program: &str) -> TaskSpec {
    let mut s = spec(attempt, OnDisconnect::Kill);
    s.argv = StrList::from_items([program, "arg"]).unwrap();
    s
}

#[test]
fn a_program_off_the_allowlist_is_rejected_before_anything_is_accepted() {
    let mut rig = Rig::new();
    rig.agent
        .set_allowlist(Allowlist::from_entries(["/bin/true", "/opt/tasks/"]).unwrap());
    let allowed = [
        with_program(1, "/bin/true"),
        with_program(2, "/opt/tasks/a"),
    ];
    let refused = [
        with_program(3, "/bin/sh"),
        with_program(4, "true"),
        with_program(5, "/opt/tasks/../../bin/sh"),
        with_program(6, "/opt/tasks"),
    ];
    for s in allowed.iter().chain(&refused) {
        rig.command(t(0), CommandBody::Start(s.clone()));
    }
    let actions = rig.take_actions();
    assert_eq!(
        spawns(&actions),
        allowed.iter().map(|s| s.task).collect::<Vec<_>>()
    );
    let events = rig.events();
    for s in &refused {
        assert!(events.contains(&EventKind::Rejected {
            task: s.task,
            reason: RejectReason::NotAllowed
        }));
        assert!(
            !events.contains(&EventKind::Accepted { task: s.task }),
            "nothing accepted for {:?}",
            s.task
        );
        assert!(rig.agent.task_spec(s.task).is_none());
    }
    assert!(!actions.iter().any(|a| matches!(
        a,
        Action::Append { record: Append::Order(t), .. } if refused.iter().any(|s| s.task == *t)
    )));
    assert_eq!(rig.agent.stats().rejected_starts, refused.len() as u64);
    // A retransmission of a refused start is answered by the journaled refusal, not again.
    rig.command(t(1), CommandBody::Start(refused[0].clone()));
    assert_eq!(rig.agent.stats().duplicate_starts, 1);
}

#[test]
fn without_an_allowlist_every_program_is_accepted() {
    let mut rig = Rig::new();
    rig.command(t(0), CommandBody::Start(with_program(1, "sh")));
    assert_eq!(spawns(&rig.take_actions()).len(), 1);
}

#[test]
fn a_held_order_no_longer_allowed_after_a_restart_never_starts() {
    let mut rig = Rig::new();
    let mut kept = with_program(1, "/opt/tasks/keep");
    let mut dropped = with_program(2, "/opt/tasks/drop");
    for s in [&mut kept, &mut dropped] {
        s.start_at_unix_ms = Some(1_000_000 + 60_000);
        s.policy.on_disconnect = OnDisconnect::Continue;
    }
    rig.command(t(0), CommandBody::Start(kept.clone()));
    rig.command(t(0), CommandBody::Start(dropped.clone()));

    // The board's configuration tightened while the agent was down.
    let mut fresh = rig.restart_with(t(5), |agent| {
        agent.set_allowlist(Allowlist::from_entries(["/opt/tasks/keep"]).unwrap());
    });
    assert!(fresh.events().contains(&EventKind::Finished {
        task: dropped.task,
        exit: Exit::SpawnFailed(13),
        cause: None,
        output_dropped: 0,
    }));
    fresh.run_until(t(60_000));
    assert_eq!(spawns(&fresh.take_actions()), vec![kept.task]);
}

/// The heartbeats the agent published among `actions`, with the master counter each echoes.
fn echoed(actions: &[Action]) -> Vec<Option<u64>> {
    let key = [9; 32];
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish { topic, payload, .. } if topic.ends_with("/heartbeat") => {
                match wire::decode_verified(
                    payload,
                    topic,
                    tether_core::auth::Verifier::Agent(&key),
                ) {
                    Ok(Message::AgentHeartbeat(hb)) => Some(hb.echo.map(|e| e.counter)),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[test]
fn after_a_gap_in_contact_the_newest_master_heartbeat_is_answered_shortly() {
    let mut rig = Rig::new();
    rig.agent.handle_connected(t(0));
    // In step with the master (both at 1 s): one heartbeat of ours per period.
    for i in 0..=10 {
        rig.master_heartbeat(t(i * 1_000 + 300));
        rig.run_until(t(i * 1_000 + 1_299));
    }
    assert!(echoed(&rig.take_actions()).len() <= 12);
    // Frozen for a minute: a backlog of two heartbeats arrives at once on resuming; the answer
    // comes 100 ms later and echoes the newest, whatever our own timer said.
    rig.agent.handle_timeout(t(70_000));
    rig.drain(t(70_000));
    rig.take_actions();
    rig.master_heartbeat(t(70_000));
    rig.master_heartbeat(t(70_001));
    let newest = rig.counter;
    rig.run_until(t(70_099));
    assert_eq!(echoed(&rig.take_actions()), vec![]);
    rig.run_until(t(70_101));
    assert_eq!(echoed(&rig.take_actions()), vec![Some(newest)]);
    // The master's early answer to a stale echo is answered shortly too, within the window.
    rig.master_heartbeat(t(70_600));
    rig.run_until(t(70_700));
    assert_eq!(echoed(&rig.take_actions()), vec![Some(rig.counter)]);
}

#[test]
fn journal_usage_sets_the_level_and_asks_for_compaction_once_per_acknowledgement() {
    let mut rig = Rig::new();
    let max = 4 << 20;
    let usage = |bytes, unacked_bytes| JournalUsage {
        bytes,
        max_bytes: max,
        unacked_bytes,
    };
    let compacts = |rig: &mut Rig| {
        rig.drain(t(1_000));
        rig.take_actions()
            .iter()
            .filter(|a| matches!(a, Action::Compact))
            .count()
    };
    // Small and all live: nothing to do.
    rig.agent.handle_journal_usage(usage(100 << 10, 100 << 10));
    assert_eq!(rig.agent.journal_level(), JournalLevel::Normal);
    assert_eq!(compacts(&mut rig), 0);
    // Mostly acknowledged and large enough: one compaction, not one per report.
    rig.agent.handle_journal_usage(usage(1 << 20, 10 << 10));
    assert_eq!(compacts(&mut rig), 1);
    rig.agent.handle_journal_usage(usage(1 << 20, 10 << 10));
    assert_eq!(compacts(&mut rig), 0, "nothing newly acknowledged");
    // Beyond three quarters: output is dropped; at the reserve: starts are refused.
    rig.agent
        .handle_journal_usage(usage(max * 7 / 8, max * 7 / 8));
    assert_eq!(rig.agent.journal_level(), JournalLevel::DropOutput);
    rig.agent
        .handle_journal_usage(usage(max - 1024, max - 1024));
    assert_eq!(rig.agent.journal_level(), JournalLevel::Full);
    // With no room left even for a rejection, a start is not answered (nor remembered: the
    // master's retransmission is judged again once there is room).
    let s = spec(1, OnDisconnect::Continue);
    rig.command(t(10), CommandBody::Start(s.clone()));
    assert!(rig.events().is_empty());
    assert_eq!(rig.agent.stats().unanswered_starts, 1);
    // Under pressure (output dropped) an eighth of the cap reclaimable is enough, once the
    // master acknowledged more.
    rig.agent
        .handle_journal_usage(usage(max * 7 / 8, max * 7 / 8));
    rig.command(t(20), CommandBody::Start(s));
    rig.agent.handle_connected(t(20));
    rig.run_until(t(200));
    rig.command(t(300), CommandBody::Ack { up_to: 1 });
    rig.take_actions();
    rig.agent
        .handle_journal_usage(usage(max * 7 / 8, max * 7 / 8 - max / 8));
    assert_eq!(compacts(&mut rig), 1);
}

#[test]
fn the_largest_result_record_fits_its_reserve() {
    let task = TaskRef {
        task: u64::MAX,
        attempt: u64::MAX,
    };
    let largest = [
        EventKind::Finished {
            task,
            exit: Exit::Code(i32::MIN),
            cause: Some(KillCause::AgentStopping),
            output_dropped: u64::MAX,
        },
        EventKind::Terminating {
            task,
            cause: KillCause::AgentStopping,
        },
    ];
    // The agent's journal frames a record with 8 bytes (length and checksum).
    for kind in largest {
        let record = journal::JournalRecord::Event(tether_core::message::Event {
            seq: u64::MAX,
            at_unix_ms: u64::MAX,
            kind,
        });
        let mut buf = [0u8; journal::MAX_RECORD];
        let len = journal::encode(&record, &mut buf).unwrap().len() as u64;
        assert!(len + 8 <= journal::RESULT_RECORD, "{len} bytes");
    }
}
