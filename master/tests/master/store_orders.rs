//! Workflows and orders, cases of the store suite (`store_basics.rs`): workflow versions, an
//! order's steps as tasks (what `load` gives a restarted core), chained attempts, the API's
//! order lists and counts, retention of orders whole, and stored rows that do not decode.

use tether_core::message::{EventKind, Exit, Stream, TaskRef};
use tether_master::core::Change;
use tether_master::model::{
    AttemptState, AttemptUpdate, AuditEntry, NewTask, OnFailure, Order, OrderState, Outcome, Step,
    StepRef, StepTask, Target, TaskPolicy, TaskState, Workflow,
};
use tether_master::store::{Page, Pruned, Store, StoreError};

use crate::store_basics::{Open, Raw, apply, db, new_attempt, new_task, next_ids, output, task_on};

fn step(name: &str, agent: &str) -> Step {
    Step {
        name: name.into(),
        target: Target::Agent(agent.into()),
        argv: vec!["/bin/true".into()],
        env: vec!["LANG=C".into()],
        cwd: "/tmp".into(),
        profile: None,
        policy: TaskPolicy::DEFAULT,
        on_failure: OnFailure::Stop,
        retry_delay_ms: 0,
    }
}

fn workflow(name: &str, version: u32, steps: usize) -> Workflow {
    Workflow {
        name: name.into(),
        version,
        steps: (0..steps).map(|i| step(&format!("s{i}"), "pi-1")).collect(),
        created_ms: 0,
    }
}

fn order(id: u64, workflow: &str, version: u32) -> Order {
    Order {
        id,
        workflow: workflow.into(),
        version,
        state: OrderState::Running,
        reason: None,
        created_ms: 0,
        updated_ms: 0,
    }
}

/// A time the store stamped: the commit's wall clock (after this test was written).
pub(crate) fn stamped(ms: u64) -> bool {
    ms > 1_750_000_000_000
}

/// Workflow versions read back, their stamped times zeroed (as the core makes them).
fn undated(found: impl IntoIterator<Item = Workflow>) -> Vec<Workflow> {
    found
        .into_iter()
        .map(|w| {
            assert!(stamped(w.created_ms), "{}: {}", w.name, w.created_ms);
            Workflow { created_ms: 0, ..w }
        })
        .collect()
}

fn ended(id: u64, state: OrderState, reason: &str) -> Change {
    Change::OrderState {
        id,
        state,
        reason: Some(reason.into()),
    }
}

/// A step's task (as the core makes it from the step).
fn step_task(id: u64, order: u64, step: u32) -> Change {
    new_task(
        id,
        NewTask {
            order: Some(StepRef { order, step }),
            ..task_on("pi-1")
        },
    )
}

fn task_state(id: u64, state: TaskState) -> Change {
    Change::TaskState {
        id,
        state,
        outcome: None,
    }
}

fn next_order(store: &dyn Store) -> u64 {
    store.load().unwrap().next_order
}

pub(crate) fn refused(r: Result<(), StoreError>, needle: &str) {
    match r {
        Err(StoreError::Invalid(why)) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

pub(crate) fn not_found(r: Result<(), StoreError>, thing: &str) {
    match r {
        Err(StoreError::NotFound { what, .. }) => assert_eq!(what, thing),
        other => panic!("expected NotFound({thing}), got {other:?}"),
    }
}

pub(crate) fn workflow_versions_round_trip(open: Open) {
    let (_dir, path) = db();
    {
        let store = open(&path).unwrap();
        let store = store.as_ref();
        let mut build2 = workflow("build", 2, 3);
        build2.steps[1].on_failure = OnFailure::Continue;
        build2.steps[1].retry_delay_ms = 5_000;
        build2.steps[2].target = Target::Cluster("edge".into());
        build2.steps[2].profile = Some("batch".into());
        apply(
            store,
            &[
                Change::Workflow(workflow("deploy", 1, 1)),
                Change::Workflow(workflow("build", 1, 2)),
                Change::Workflow(build2.clone()),
            ],
        );
        assert_eq!(
            undated(store.workflows().unwrap()),
            [build2.clone(), workflow("deploy", 1, 1)],
            "the latest version of each, by name"
        );
        assert_eq!(
            undated(store.workflow("build", None).unwrap()),
            [build2.clone()]
        );
        assert_eq!(
            undated(store.workflow("build", Some(1)).unwrap()),
            [workflow("build", 1, 2)]
        );
        assert_eq!(store.workflow("build", Some(3)).unwrap(), None);
        assert_eq!(store.workflow("nope", None).unwrap(), None);
        assert_eq!(store.workflow_versions("build").unwrap(), [1, 2]);
        assert!(store.workflow_versions("nope").unwrap().is_empty());

        // A stored version never changes; bad versions are refused with the reason.
        refused(
            store.apply(&[Change::Workflow(workflow("build", 2, 1))]),
            "stored already",
        );
        refused(
            store.apply(&[Change::Workflow(workflow("build", 0, 1))]),
            "version 0",
        );
        refused(
            store.apply(&[Change::Workflow(workflow("empty", 1, 0))]),
            "0 steps",
        );
        refused(
            store.apply(&[Change::Workflow(workflow("huge", 1, 33))]),
            "33 steps",
        );
        refused(
            store.apply(&[Change::Workflow(workflow("no/slash", 1, 1))]),
            "workflow name",
        );
        let mut bad = workflow("bad", 1, 2);
        bad.steps[1].argv.clear();
        refused(store.apply(&[Change::Workflow(bad)]), "step 2");
        let mut bad = workflow("bad", 1, 1);
        bad.steps[0].target = Target::Agent("no/slash".into());
        refused(store.apply(&[Change::Workflow(bad)]), "agent name");
        assert_eq!(store.workflow_versions("build").unwrap(), [1, 2]);
        assert!(store.workflow("bad", None).unwrap().is_none());
    }
    let store = open(&path).unwrap();
    let all = store.load().unwrap().workflows;
    let keys: Vec<_> = all.iter().map(|w| (w.name.as_str(), w.version)).collect();
    assert_eq!(
        keys,
        [("build", 1), ("build", 2), ("deploy", 1)],
        "every version, after a reopen"
    );
    assert_eq!(all[1].steps[1].retry_delay_ms, 5_000);
    assert_eq!(all[1].steps[2].target, Target::Cluster("edge".into()));
}

pub(crate) fn an_order_and_its_steps_come_back_with_load(open: Open) {
    let (_dir, path) = db();
    let (running, done, t) = {
        let store = open(&path).unwrap();
        let store = store.as_ref();
        apply(store, &[Change::Workflow(workflow("build", 1, 3))]);
        let running = next_order(store);
        assert_eq!(running, 1);
        let done = running + 1;
        let (t, _) = next_ids(store);
        apply(
            store,
            &[
                Change::NewOrder(order(running, "build", 1)),
                // Step 1's task has the lower id: tasks come by step, then id.
                step_task(t, running, 1),
                step_task(t + 1, running, 0),
                task_state(t + 1, TaskState::Succeeded),
                Change::NewOrder(order(done, "build", 1)),
                step_task(t + 2, done, 0),
                task_state(t + 2, TaskState::Failed),
                ended(done, OrderState::Failed, "step s0 failed"),
            ],
        );
        (running, done, t)
    };
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let snapshot = store.load().unwrap();
    let restored: Vec<Order> = snapshot
        .orders
        .iter()
        .map(|o| {
            assert!(stamped(o.created_ms) && o.updated_ms == o.created_ms);
            Order {
                created_ms: 0,
                updated_ms: 0,
                ..o.clone()
            }
        })
        .collect();
    assert_eq!(restored, [order(running, "build", 1)], "running ones");
    assert_eq!(
        snapshot.step_tasks,
        [
            StepTask {
                step: StepRef {
                    order: running,
                    step: 0
                },
                task: t + 1,
                state: TaskState::Succeeded,
            },
            StepTask {
                step: StepRef {
                    order: running,
                    step: 1
                },
                task: t,
                state: TaskState::Pending,
            },
        ],
        "every task of a running order, its finished one too; none of an ended order"
    );
    assert_eq!(snapshot.next_order, done + 1);
    assert_eq!(undated(snapshot.workflows), [workflow("build", 1, 3)]);
    assert!(
        snapshot.tasks.iter().any(|(task, _)| task.id == t),
        "an open step's task is restored as any task is"
    );

    let task = store.task(t).unwrap().unwrap();
    assert_eq!(
        task.order,
        Some(StepRef {
            order: running,
            step: 1
        })
    );
    assert_eq!(
        store.task(t + 2).unwrap().unwrap().order.unwrap().order,
        done
    );
    let ids: Vec<u64> = store
        .order_tasks(running)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, [t + 1, t]);
    assert!(store.order_tasks(999).unwrap().is_empty());

    let failed = store.order(done).unwrap().unwrap();
    assert_eq!(failed.state, OrderState::Failed);
    assert_eq!(failed.reason.as_deref(), Some("step s0 failed"));
    assert!(
        stamped(failed.created_ms) && failed.updated_ms >= failed.created_ms,
        "stamped with the commits' clock"
    );

    // Ids the core skipped are not handed out again either.
    apply(store, &[Change::NewOrder(order(done + 10, "build", 1))]);
    assert_eq!(next_order(store), done + 11);

    // References to what is not stored are typed refusals.
    let (free, _) = next_ids(store);
    not_found(store.apply(&[step_task(free, 999, 0)]), "order");
    not_found(
        store.apply(&[Change::NewOrder(order(done + 11, "build", 2))]),
        "workflow version",
    );
    not_found(
        store.apply(&[ended(999, OrderState::Cancelled, "x")]),
        "order",
    );
    refused(store.apply(&[step_task(free, running, 32)]), "step 32");
    refused(
        store.apply(&[Change::NewOrder(order(0, "build", 1))]),
        "order id",
    );
    refused(
        store.apply(&[Change::NewOrder(order(u64::MAX, "build", 1))]),
        "order id",
    );
    assert!(store.task(free).unwrap().is_none());
}

pub(crate) fn attempt_after_round_trips(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let (t, a) = next_ids(store);
    apply(
        store,
        &[
            new_task(t, task_on("pi-1")),
            new_task(t + 1, task_on("pi-1")),
            new_attempt(a, t, "pi-1"),
            Change::NewAttempt {
                id: a + 1,
                task: t + 1,
                agent: "pi-1".into(),
                after: Some(a),
            },
        ],
    );
    assert_eq!(store.attempts(t).unwrap()[0].after, None);
    let chained = &store.attempts(t + 1).unwrap()[0];
    assert_eq!((chained.id, chained.after), (a + 1, Some(a)));
    let restored = store.load().unwrap();
    let (_, attempts) = restored
        .tasks
        .iter()
        .find(|(task, _)| task.id == t + 1)
        .unwrap();
    assert_eq!(attempts[0].after, Some(a), "and in the snapshot");
    refused(
        store.apply(&[Change::NewAttempt {
            id: a + 2,
            task: t,
            agent: "pi-1".into(),
            after: Some(0),
        }]),
        "predecessor attempt id 0",
    );
}

pub(crate) fn orders_are_paged_and_counted(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    apply(store, &[Change::Workflow(workflow("build", 1, 1))]);
    let first = next_order(store);
    let ids: Vec<u64> = (first..first + 5).collect();
    let mut batch: Vec<Change> = ids
        .iter()
        .map(|&id| Change::NewOrder(order(id, "build", 1)))
        .collect();
    batch.push(ended(ids[1], OrderState::Succeeded, "done"));
    batch.push(ended(ids[2], OrderState::Cancelled, "by admin"));
    batch.push(ended(ids[4], OrderState::Succeeded, "done"));
    apply(store, &batch);
    let page = |p: Page, state: Option<OrderState>| -> Vec<u64> {
        store
            .orders(p, state)
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect()
    };
    assert_eq!(page(Page::ALL, None), ids);
    assert_eq!(page(Page::first(2), None), ids[..2]);
    assert_eq!(page(Page::after(ids[1], 2), None), ids[2..4]);
    assert_eq!(page(Page::after(ids[3], 2), None), ids[4..]);
    assert!(page(Page::after(u64::MAX, 2), None).is_empty());
    assert!(page(Page::first(0), None).is_empty());
    let succeeded = Some(OrderState::Succeeded);
    assert_eq!(page(Page::ALL, succeeded), [ids[1], ids[4]]);
    assert_eq!(page(Page::first(1), succeeded), [ids[1]]);
    assert_eq!(page(Page::after(ids[1], 1), succeeded), [ids[4]]);
    assert_eq!(page(Page::ALL, Some(OrderState::Running)), [ids[0], ids[3]]);
    assert!(page(Page::ALL, Some(OrderState::Failed)).is_empty());
    assert_eq!(
        store.order(ids[2]).unwrap().unwrap().reason.as_deref(),
        Some("by admin")
    );
    assert!(store.order(first + 100).unwrap().is_none());
    assert!(store.order(u64::MAX).unwrap().is_none());
    assert_eq!(
        store.order_counts().unwrap(),
        [
            (OrderState::Cancelled, 1),
            (OrderState::Running, 2),
            (OrderState::Succeeded, 2),
        ]
    );
}

/// Task `id` made by `new`, finished, with an attempt, output, an event and an audit entry.
fn finished(new: Change, id: u64, attempt: u64, seq: u64) -> Vec<Change> {
    vec![
        new,
        new_attempt(attempt, id, "pi-1"),
        output(attempt, Stream::Stdout, 0, b"ok\n"),
        Change::Event {
            agent: "pi-1".into(),
            event: tether_core::message::Event {
                seq,
                at_unix_ms: 1,
                kind: EventKind::Accepted {
                    task: TaskRef { task: id, attempt },
                },
            },
        },
        Change::Audit(AuditEntry {
            at_ms: 1,
            who: "admin".into(),
            action: "kill".into(),
            subject: format!("task/{id}"),
        }),
        Change::Attempt {
            id: attempt,
            update: AttemptUpdate {
                exit: Some(Exit::Code(0)),
                ..AttemptUpdate::to(AttemptState::Finished)
            },
        },
        Change::TaskState {
            id,
            state: TaskState::Succeeded,
            outcome: Some(Outcome::Exited {
                attempt,
                exit: Exit::Code(0),
                cause: None,
            }),
        },
    ]
}

pub(crate) fn pruning_keeps_running_orders_and_removes_old_finished_ones(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    apply(store, &[Change::Workflow(workflow("build", 1, 2))]);
    let first = next_order(store);
    // `running`: step 0 finished, step 1 still pending. `open_step`: ended, but a task of it
    // is still pending (its kill not yet answered). `old`: ended with both steps finished;
    // the highest order id.
    let (running, open_step, old) = (first, first + 1, first + 2);
    let (t, a) = next_ids(store);
    let mut batch = vec![
        Change::NewOrder(order(running, "build", 1)),
        Change::NewOrder(order(open_step, "build", 1)),
        Change::NewOrder(order(old, "build", 1)),
        Change::Audit(AuditEntry {
            at_ms: 1,
            who: "admin".into(),
            action: "order".into(),
            subject: format!("order/{old}"),
        }),
    ];
    batch.extend(finished(step_task(t, running, 0), t, a, 1));
    batch.push(step_task(t + 1, running, 1));
    batch.extend(finished(step_task(t + 2, open_step, 0), t + 2, a + 2, 3));
    batch.push(step_task(t + 3, open_step, 1));
    batch.extend(finished(step_task(t + 4, old, 0), t + 4, a + 4, 5));
    batch.extend(finished(step_task(t + 5, old, 1), t + 5, a + 5, 6));
    batch.push(ended(open_step, OrderState::Cancelled, "by admin"));
    batch.push(ended(old, OrderState::Succeeded, "done"));
    // A finished task of no order.
    batch.extend(finished(new_task(t + 6, task_on("pi-1")), t + 6, a + 6, 7));
    apply(store, &batch);

    assert_eq!(store.prune_finished(1, 100).unwrap(), Pruned::default());
    let later = u64::MAX >> 2;
    // One task at a time: the task of no order first, then the old order whole (two tasks:
    // an order is never split).
    let one = store.prune_finished(later, 1).unwrap();
    assert_eq!((one.tasks, one.orders, one.full), (1, 0, true));
    assert!(store.task(t + 6).unwrap().is_none());
    let two = store.prune_finished(later, 1).unwrap();
    assert_eq!((two.tasks, two.orders, two.full), (2, 1, true));
    assert_eq!(two.events, 2, "the events of both steps' attempts");
    let none = store.prune_finished(later, 1).unwrap();
    assert_eq!((none.tasks, none.orders, none.full), (0, 0, false));

    assert!(store.order(old).unwrap().is_none());
    assert!(store.order_tasks(old).unwrap().is_empty());
    for (id, attempt) in [(t + 4, a + 4), (t + 5, a + 5)] {
        assert!(store.task(id).unwrap().is_none());
        assert!(store.attempts(id).unwrap().is_empty());
        assert!(store.output(attempt).unwrap().is_empty());
        assert!(store.attempt_events(attempt).unwrap().is_empty());
        assert!(store.audit(&format!("task/{id}")).unwrap().is_empty());
    }
    assert!(store.audit(&format!("order/{old}")).unwrap().is_empty());

    // The running order keeps its finished step; the ended one with an open task is kept whole.
    let ids = |order| -> Vec<u64> {
        store
            .order_tasks(order)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect()
    };
    assert_eq!(ids(running), [t, t + 1]);
    assert_eq!(ids(open_step), [t + 2, t + 3]);
    assert_eq!(store.output(a).unwrap().len(), 1);
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.step_tasks.len(), 2);
    assert_eq!(snapshot.step_tasks[0].state, TaskState::Succeeded);
    // Its ids are not handed out again; workflow versions are kept.
    assert_eq!(snapshot.next_order, old + 1);
    assert_eq!(snapshot.workflows.len(), 1);
    assert_eq!(next_ids(store).0, t + 7);

    // Once the pending task ends, its order goes too.
    apply(store, &[task_state(t + 3, TaskState::Cancelled)]);
    let last = store.prune_finished(later, 100).unwrap();
    assert_eq!((last.tasks, last.orders, last.full), (2, 1, false));
    assert_eq!(
        store
            .orders(Page::ALL, None)
            .unwrap()
            .iter()
            .map(|o| o.id)
            .collect::<Vec<_>>(),
        [running]
    );
    let reopened = open(&path).unwrap();
    assert_eq!(
        next_order(reopened.as_ref()),
        old + 1,
        "also after a reopen"
    );
}

pub(crate) fn a_corrupt_row_is_an_error_not_a_panic(open: Open, raw: Raw) {
    let (_dir, path) = db();
    let t = {
        let store = open(&path).unwrap();
        let store = store.as_ref();
        apply(store, &[Change::Workflow(workflow("build", 1, 1))]);
        let (t, _) = next_ids(store);
        apply(
            store,
            &[Change::NewOrder(order(1, "build", 1)), step_task(t, 1, 0)],
        );
        t
    };
    // Valid JSON that is no list of steps, and a step reference cut in half.
    raw(
        &path,
        &format!(
            "UPDATE workflows SET steps = '[{{\"name\": 5}}]';
             UPDATE tasks SET order_step = NULL WHERE id = {t};"
        ),
    );
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let corrupt = |what: &str, r: Result<(), StoreError>| match r {
        Err(StoreError::Corrupt(why)) => eprintln!("{what}: {why}"),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    };
    corrupt("workflows", store.workflows().map(drop));
    corrupt("workflow", store.workflow("build", None).map(drop));
    corrupt("load", store.load().map(drop));
    corrupt("task", store.task(t).map(drop));
    corrupt("order_tasks", store.order_tasks(1).map(drop));
    assert_eq!(store.workflow_versions("build").unwrap(), [1]);
    assert_eq!(store.order(1).unwrap().unwrap().state, OrderState::Running);
}
