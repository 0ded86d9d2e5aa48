//! History retention, a case of the store suite (`store_basics.rs`): finished tasks older
//! than the cutoff go with everything that names them, a bounded number at a time; open
//! tasks, newer ones and unacknowledged events stay; ids are never handed out again.

use tether_core::message::{Event, EventKind, Stream, TaskRef};
use tether_core::wire::Refusal;
use tether_master::core::Change;
use tether_master::model::{AuditEntry, Outcome, TaskState};
use tether_master::store::{Page, Pruned};

use crate::store_basics::{Open, apply, db, new_attempt, new_task, next_ids, output, task_on};

fn finished(id: u64, attempt: u64) -> Change {
    Change::TaskState {
        id,
        state: TaskState::Succeeded,
        outcome: Some(Outcome::Exited {
            attempt,
            exit: tether_core::message::Exit::Code(0),
            cause: None,
        }),
    }
}

fn event(seq: u64, kind: EventKind) -> Change {
    Change::Event {
        agent: "pi-1".into(),
        event: Event {
            seq,
            at_unix_ms: 1,
            kind,
        },
    }
}

pub(crate) fn finished_history_is_pruned(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let (first, attempt) = next_ids(store);
    // Three finished tasks with an attempt, output, an event and an audit entry each; one
    // still pending.
    for n in 0..3 {
        let (id, a) = (first + n, attempt + n);
        apply(
            store,
            &[
                new_task(id, task_on("pi-1")),
                new_attempt(a, id, "pi-1"),
                output(a, Stream::Stdout, 0, b"done\n"),
                event(
                    n + 1,
                    EventKind::Accepted {
                        task: TaskRef {
                            task: id,
                            attempt: a,
                        },
                    },
                ),
                Change::Audit(AuditEntry {
                    at_ms: 1,
                    who: "admin".into(),
                    action: "submit".into(),
                    subject: format!("task/{id}"),
                }),
                finished(id, a),
            ],
        );
    }
    let open_task = first + 3;
    apply(store, &[new_task(open_task, task_on("pi-1"))]);
    // Refused commands name no attempt: one acknowledged, one not yet.
    let refused = |seq| {
        event(
            seq,
            EventKind::BadCommand {
                error: Refusal::BadSignature.into(),
                count: 1,
            },
        )
    };
    apply(
        store,
        &[
            refused(4),
            refused(6),
            Change::Acked {
                agent: "pi-1".into(),
                up_to: 4,
            },
        ],
    );

    // Nothing finished before the cutoff: nothing goes.
    assert_eq!(store.prune_finished(1, 100).unwrap(), Pruned::default());
    // A cutoff after everything, two at a time.
    let later = u64::MAX >> 2;
    let pruned = store.prune_finished(later, 2).unwrap();
    assert_eq!(pruned.tasks, 2);
    assert_eq!(
        pruned.events,
        2 + 1,
        "two attempts' events and the acknowledged refusal"
    );
    let pruned = store.prune_finished(later, 2).unwrap();
    assert_eq!((pruned.tasks, pruned.events), (1, 1));
    assert_eq!(store.prune_finished(later, 2).unwrap(), Pruned::default());

    for id in first..open_task {
        assert!(store.task(id).unwrap().is_none(), "task {id} pruned");
        assert!(store.attempts(id).unwrap().is_empty());
        assert!(store.audit(&format!("task/{id}")).unwrap().is_empty());
    }
    for a in attempt..attempt + 3 {
        assert!(store.output(a).unwrap().is_empty());
        assert!(store.attempt_events(a).unwrap().is_empty());
    }
    let left = store.tasks(Page::first(100), None).unwrap();
    assert_eq!(left.iter().map(|t| t.id).collect::<Vec<_>>(), [open_task]);
    // The unacknowledged refusal stays: the agent may send it again, it must stay a duplicate.
    let snap = store.load().unwrap();
    let (_, above) = snap.agents.iter().find(|(a, _)| a.id == "pi-1").unwrap();
    assert_eq!(above, &[6]);
    // Ids already handed out are not reused.
    assert_eq!(next_ids(store), (open_task + 1, attempt + 3));
}
