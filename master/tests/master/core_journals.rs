//! An agent that comes back with another journal (re-flashed, a new SD card, its state wiped)
//! or with its journal rewound (an older backup restored): its new events are stored at once,
//! the attempts the master had open there end as lost, and nothing starts twice.

use tether_core::message::{EventKind, Exit, TaskRef};
use tether_core::policy::OnDisconnect;
use tether_master::core::{PolicyOverrides, Submit};
use tether_master::model::{AttemptState, Outcome, TaskState};
use tether_master::store::Store;

use crate::played::*;
use crate::rig::Rig;

/// Submits `argv` to pi-1 (`retries` further attempts) and returns its first start.
fn started_task(h: &mut Rig, argv: &[&str], retries: u32) -> (u64, TaskRef) {
    let mark = h.out.len();
    let id = h.submit(Submit {
        policy: PolicyOverrides {
            retries: Some(retries),
            ..short(OnDisconnect::Continue)
        },
        ..to_agent("pi-1", argv)
    });
    let starts = h.starts("pi-1", mark);
    assert_eq!(starts.len(), 1, "one start for task {id}");
    (id, starts[0])
}

/// pi-1 runs a task to its end with events 1..=3 of its journal.
fn one_task_done(h: &mut Rig) -> u64 {
    let (id, t) = started_task(h, &["true"], 0);
    h.accept_and_start("pi-1", 1, t);
    h.finish("pi-1", 3, t, Exit::Code(0));
    h.heartbeat("pi-1", 1, 3, &[]);
    assert_eq!(h.task_state(id), TaskState::Succeeded);
    id
}

/// pi-1 re-flashed: a new incarnation naming a new journal, empty.
fn reflash(h: &mut Rig) {
    h.journal += 1;
    h.presence("pi-1", tether_core::presence::State::Online, 2);
    h.heartbeat("pi-1", 2, 0, &[]);
}

#[test]
fn a_reflashed_agent_takes_new_work_at_once() {
    let mut h = rig();
    h.online("pi-1", 1);
    one_task_done(&mut h);
    reflash(&mut h);
    assert_eq!(h.m.stats().journals_replaced, 1);
    assert_eq!(h.stored_agent("pi-1").journal, Some(h.journal));

    // The new journal numbers from 1 again; its events are stored, not taken for duplicates.
    let (id, t) = started_task(&mut h, &["echo", "after"], 0);
    let mark = h.out.len();
    h.accept_and_start("pi-1", 1, t);
    assert_eq!(h.task_state(id), TaskState::Running);
    h.finish("pi-1", 3, t, Exit::Code(0));
    assert_eq!(h.task_state(id), TaskState::Succeeded);
    assert_eq!(h.m.stats().duplicate_events, 0);
    // Acknowledged in the new journal's numbers.
    assert_eq!(h.acks("pi-1", mark).last(), Some(&3));
    // Stored after the first journal's three, in one sequence.
    assert_eq!(h.stored_agent("pi-1").last_seq_acked, 6);
    assert_eq!(h.stored_agent("pi-1").seq_base, 3);
}

#[test]
fn attempts_open_on_a_reflashed_agent_end_as_lost_and_nothing_starts_again() {
    let mut h = rig();
    h.online("pi-1", 1);
    let (running, r) = started_task(&mut h, &["sleep", "600"], 0);
    h.accept_and_start("pi-1", 1, r);
    let (unaccepted, u) = started_task(&mut h, &["sleep", "600"], 0);
    let (retried, x) = started_task(&mut h, &["sleep", "600"], 1);
    h.accept_and_start("pi-1", 3, x);
    let mark = h.out.len();
    reflash(&mut h);

    for (id, t) in [(running, r), (unaccepted, u)] {
        assert_eq!(h.task_state(id), TaskState::Lost, "task {id}");
        let task = h.store.task(id).unwrap().unwrap();
        assert_eq!(
            task.outcome,
            Some(Outcome::JournalReplaced { attempt: t.attempt })
        );
        assert_eq!(h.stored_attempt(t).state, AttemptState::Lost);
    }
    // Only the task with a retry left runs again, as a new attempt.
    let starts = h.starts("pi-1", mark);
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].task, retried);
    assert_ne!(starts[0].attempt, x.attempt);
    // The old journal's attempts are not killed on the new one: it never heard of them.
    assert!(h.kills("pi-1", mark).is_empty());
}

#[test]
fn events_of_an_unproven_journal_wait_for_its_heartbeat() {
    let mut h = rig();
    h.online("pi-1", 1);
    one_task_done(&mut h);
    let (id, t) = started_task(&mut h, &["true"], 0);
    // Re-flashed, and its first events arrive before its first heartbeat.
    h.journal += 1;
    let mark = h.out.len();
    h.event("pi-1", 1, EventKind::Accepted { task: t });
    assert_eq!(h.m.stats().other_journal_events, 1);
    assert!(h.acks("pi-1", mark).is_empty(), "not acknowledged");
    assert_eq!(h.task_state(id), TaskState::Dispatched);
    // Its heartbeat proves it: the open attempt is lost; the agent's resend is stored, late.
    h.heartbeat("pi-1", 2, 1, &[]);
    assert_eq!(h.task_state(id), TaskState::Lost);
    h.event("pi-1", 1, EventKind::Accepted { task: t });
    assert_eq!(h.acks("pi-1", mark).last(), Some(&1));
    assert_eq!(h.stored_agent("pi-1").last_seq_acked, 4);
}

#[test]
fn a_rewound_journal_is_renumbered_once_a_second_heartbeat_confirms_it() {
    let mut h = rig();
    h.online("pi-1", 1);
    one_task_done(&mut h);
    let (id, t) = started_task(&mut h, &["sleep", "600"], 0);
    h.accept_and_start("pi-1", 4, t);
    h.heartbeat("pi-1", 1, 5, &[t]);
    assert_eq!(h.task_state(id), TaskState::Running);

    // Restored from a backup taken after the first task: same journal, at sequence 3.
    h.presence("pi-1", tether_core::presence::State::Online, 2);
    h.heartbeat("pi-1", 2, 3, &[]);
    assert_eq!(
        h.task_state(id),
        TaskState::Running,
        "one heartbeat is not proof"
    );
    // The master asks for another at once (within its early gap), not a period later.
    let mark = h.out.len();
    h.secs(2);
    assert!(
        h.out[mark..]
            .iter()
            .any(|p| p.topic == "tether/master/heartbeat"),
        "an early master heartbeat"
    );
    h.heartbeat("pi-1", 2, 3, &[]);
    assert_eq!(h.task_state(id), TaskState::Lost);
    assert_eq!(h.m.stats().journals_replaced, 1);

    // Its next event (sequence 4 again, but a new one) is stored, above the old 4 and 5.
    let (next, n) = started_task(&mut h, &["true"], 0);
    let mark = h.out.len();
    h.event("pi-1", 4, EventKind::Accepted { task: n });
    assert_eq!(h.task_state(next), TaskState::Accepted);
    assert_eq!(h.acks("pi-1", mark).last(), Some(&4));
    assert_eq!(h.stored_agent("pi-1").last_seq_acked, 6);
}

#[test]
fn a_heartbeat_overtaken_by_its_agents_events_loses_nothing() {
    let mut h = rig();
    h.online("pi-1", 1);
    let (id, t) = started_task(&mut h, &["sleep", "600"], 0);
    h.accept_and_start("pi-1", 1, t);
    // Built before the agent wrote event 2, delivered after it.
    h.heartbeat("pi-1", 1, 1, &[t]);
    // Its next heartbeat is not behind: nothing was rewound.
    h.secs(2);
    h.heartbeat("pi-1", 1, 2, &[t]);
    h.secs(30);
    h.heartbeat("pi-1", 1, 2, &[t]);
    assert_eq!(h.task_state(id), TaskState::Running);
    assert_eq!(h.m.stats().journals_replaced, 0);
}

#[test]
fn a_restarted_agent_gets_work_once_its_heartbeat_named_its_journal() {
    let mut h = rig();
    h.online("pi-1", 1);
    one_task_done(&mut h);
    // Re-flashed and back online: its presence alone does not say which journal it keeps.
    h.journal += 1;
    h.presence("pi-1", tether_core::presence::State::Online, 2);
    let mark = h.out.len();
    let id = h.submit(to_agent("pi-1", &["true"]));
    assert!(
        h.starts("pi-1", mark).is_empty(),
        "no start before its heartbeat"
    );
    assert_eq!(h.task_state(id), TaskState::Pending);
    // Its heartbeat names the new journal; the start goes out for that journal.
    h.heartbeat("pi-1", 2, 0, &[]);
    let starts = h.starts("pi-1", mark);
    assert_eq!(starts.len(), 1, "{starts:?}");
    let journals: Vec<u32> = h.out[mark..]
        .iter()
        .filter_map(|p| match tether_core::wire::decode(&p.payload) {
            Ok(tether_core::message::Message::Command(c)) => Some(c.journal),
            _ => None,
        })
        .collect();
    assert!(journals.iter().all(|&j| j == h.journal), "{journals:?}");
    assert_eq!(h.m.stats().journals_replaced, 1);
}
