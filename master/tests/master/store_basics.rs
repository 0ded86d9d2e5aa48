//! The store on real files, through the [`Store`] trait on the production path: batches of the
//! core's [`Change`]s applied, the snapshot loaded, and the reads the HTTP API makes. Round
//! trips, idempotent events by (agent, seq), ids that never go back, reopening, all-or-nothing
//! batches, paging, typed refusals of bad input and history retention (`store_retention.rs`)
//! are one suite generic over the backend
//! ([`suite!`]: a backend runs it by adding one line). Migration, the newer-schema refusal and
//! deleted rows are SQLite's own (`store_sqlite.rs`). Workflows and orders are cases of the
//! suite too (`store_orders.rs`), and so are schedules (`store_schedules.rs`, with the
//! migration from version 7 on both backends). The PostgreSQL backend runs the same suite on a throwaway
//! cluster (`pg_cluster.rs`).

use std::path::Path;

use tether_core::message::{Event, EventKind, Exit, KillCause, Stream, TaskRef};
use tether_core::policy::OnDisconnect;
use tether_master::core::Change;
use tether_master::model::{
    AgentPresence, AttemptState, AttemptUpdate, Cluster, ClusterMode, NewTask, Outcome, Profile,
    Target, TaskPolicy, TaskState,
};
use tether_master::store::{Page, SqliteStore, Store, StoreError};

use crate::store_orders::*;
use crate::store_retention::finished_history_is_pruned;
use crate::store_schedules::*;

/// Opens (creating if needed) the backend's database at a place named by `path`.
pub(crate) type Open = fn(&Path) -> Result<Box<dyn Store>, StoreError>;

/// Runs SQL on the backend's database named by `path`, behind the store's back (rows the
/// store would never write).
pub(crate) type Raw = fn(&Path, &str);

fn sqlite(path: &Path) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(SqliteStore::open(path)?))
}

fn sqlite_raw(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// One `#[test]` per case of the suite, in a module per backend; `$runs` says whether the
/// backend can run here (and why not). The `raw` cases also write behind the store's back;
/// the `migration` cases build an older database from the backend's `$migrations`.
macro_rules! suite {
    ($($backend:ident => $open:expr, $raw:expr, $migrations:expr, if $runs:expr),* $(,)?) => {$(
        mod $backend {
            suite!(@raw_cases $open, $raw, $runs;
                a_corrupt_row_is_an_error_not_a_panic,
                a_corrupt_schedule_is_an_error_not_a_panic,
            );
            suite!(@migration_cases $open, $raw, $migrations, $runs;
                a_version_7_database_keeps_its_rows,
            );
            suite!(@cases $open, $runs;
                fresh_store_is_empty,
                tasks_and_attempts_round_trip,
                agents_clusters_profiles_round_trip,
                duplicate_events_change_nothing,
                ids_never_go_back,
                everything_survives_a_reopen,
                a_batch_commits_all_or_nothing,
                tasks_are_paged_by_id,
                the_epoch_only_grows,
                bad_input_is_a_typed_error,
                finished_history_is_pruned,
                workflow_versions_round_trip,
                an_order_and_its_steps_come_back_with_load,
                attempt_after_round_trips,
                orders_are_paged_and_counted,
                pruning_keeps_running_orders_and_removes_old_finished_ones,
                schedules_round_trip_and_a_new_version_replaces_the_row,
                paused_and_deleted_schedules,
                a_live_name_is_taken_once,
                a_handover_reserves_its_ids,
                every_occurrence_runs_once,
                load_gives_the_last_occurrences,
                retention_prunes_occurrences_ended_handovers_and_deleted_schedules,
            );
        }
    )*};
    (@migration_cases $open:expr, $raw:expr, $migrations:expr, $runs:expr;
        $($case:ident),* $(,)?) => {$(
        #[test]
        fn $case() {
            if $runs() {
                super::$case($open, $raw, $migrations);
            }
        }
    )*};
    (@raw_cases $open:expr, $raw:expr, $runs:expr; $($case:ident),* $(,)?) => {$(
        #[test]
        fn $case() {
            if $runs() {
                super::$case($open, $raw);
            }
        }
    )*};
    (@cases $open:expr, $runs:expr; $($case:ident),* $(,)?) => {$(
        #[test]
        fn $case() {
            if $runs() {
                super::$case($open);
            }
        }
    )*};
}

suite!(
    sqlite => super::sqlite, super::sqlite_raw, tether_master::store::schema::MIGRATIONS,
        if || true,
    postgres => crate::pg_cluster::open, crate::pg_cluster::execute,
        tether_master::store::schema::PG_MIGRATIONS, if crate::pg_cluster::available,
);

pub(crate) fn db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    (dir, path)
}

pub(crate) fn task_on(agent: &str) -> NewTask {
    NewTask {
        target: Target::Agent(agent.into()),
        argv: vec!["/bin/echo".into(), "hello world".into()],
        env: vec!["LANG=C".into()],
        cwd: "/tmp".into(),
        profile: None,
        policy: TaskPolicy::DEFAULT,
        start_at_ms: None,
        order: None,
        occurrence: None,
    }
}

pub(crate) fn new_task(id: u64, task: NewTask) -> Change {
    Change::NewTask {
        id,
        task,
        state: TaskState::Pending,
    }
}

pub(crate) fn new_attempt(id: u64, task: u64, agent: &str) -> Change {
    Change::NewAttempt {
        id,
        task,
        agent: agent.into(),
        after: None,
    }
}

fn event(agent: &str, seq: u64, kind: EventKind) -> Change {
    Change::Event {
        agent: agent.into(),
        event: Event {
            seq,
            at_unix_ms: 1_700_000_000_000,
            kind,
        },
    }
}

fn accepted(task: u64, attempt: u64) -> EventKind {
    EventKind::Accepted {
        task: TaskRef { task, attempt },
    }
}

pub(crate) fn output(attempt: u64, stream: Stream, offset: u64, data: &[u8]) -> Change {
    Change::Output {
        attempt,
        stream,
        offset,
        data: data.to_vec(),
    }
}

fn acked(agent: &str, up_to: u64) -> Change {
    Change::Acked {
        agent: agent.into(),
        up_to,
    }
}

pub(crate) fn apply(store: &dyn Store, changes: &[Change]) {
    store.apply(changes).unwrap();
}

/// The ids the core would choose next.
pub(crate) fn next_ids(store: &dyn Store) -> (u64, u64) {
    let snapshot = store.load().unwrap();
    (snapshot.next_task, snapshot.next_attempt)
}

fn fresh_store_is_empty(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let snapshot = store.load().unwrap();
    assert!(snapshot.agents.is_empty() && snapshot.tasks.is_empty());
    assert!(snapshot.clusters.is_empty() && snapshot.profiles.is_empty());
    assert!(snapshot.kill_requests.is_empty() && snapshot.agent_keys.is_empty());
    assert_eq!((snapshot.next_task, snapshot.next_attempt), (1, 1));
    assert!(snapshot.workflows.is_empty() && snapshot.orders.is_empty());
    assert!(snapshot.step_tasks.is_empty());
    assert_eq!(snapshot.next_order, 1);
    assert!(snapshot.schedules.is_empty() && snapshot.handovers.is_empty());
    assert!(snapshot.last_occurrences.is_empty());
    assert_eq!(snapshot.next_schedule, 1);
    assert!(store.schedules(Page::ALL).unwrap().is_empty());
    assert!(store.occurrence_counts().unwrap().is_empty());
    assert!(store.workflows().unwrap().is_empty());
    assert!(store.orders(Page::ALL, None).unwrap().is_empty());
    assert!(store.order_counts().unwrap().is_empty());
    assert!(store.tasks(Page::ALL, None).unwrap().is_empty());
    assert!(store.agents().unwrap().is_empty());
}

fn tasks_and_attempts_round_trip(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let mut new = task_on("pi-1");
    new.policy.on_disconnect = OnDisconnect::Continue;
    new.policy.retries = 2;
    new.policy.lost_after_ms = Some(3_600_000);
    new.profile = Some("batch".into());
    new.start_at_ms = Some(1_700_000_000_000);
    let (id, attempt) = next_ids(store);
    apply(store, &[new_task(id, new.clone())]);

    let task = store.task(id).unwrap().unwrap();
    assert_eq!(task.id, id);
    assert_eq!(task.target, new.target);
    assert_eq!(task.argv, new.argv);
    assert_eq!(task.env, new.env);
    assert_eq!(task.cwd, new.cwd);
    assert_eq!(task.profile, new.profile);
    assert_eq!(task.policy, new.policy);
    assert_eq!(task.start_at_ms, new.start_at_ms);
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.outcome, None);
    assert!(store.task(id + 1000).unwrap().is_none());

    apply(store, &[new_attempt(attempt, id, "pi-1")]);
    let spec = task.spec(attempt).unwrap();
    assert_eq!(spec.task, TaskRef { task: id, attempt });
    assert_eq!(spec.policy, new.policy.to_core());

    let a = &store.attempts(id).unwrap()[0];
    assert_eq!(
        (a.id, a.task_id, a.agent_id.as_str(), a.state),
        (attempt, id, "pi-1", AttemptState::Sent)
    );

    apply(
        store,
        &[Change::Attempt {
            id: attempt,
            update: AttemptUpdate {
                pid: Some(4242),
                started_ms: Some(10),
                ..AttemptUpdate::to(AttemptState::Running)
            },
        }],
    );
    assert_eq!(store.attempts(id).unwrap()[0].state, AttemptState::Running);
    apply(
        store,
        &[Change::Attempt {
            id: attempt,
            update: AttemptUpdate {
                exit: Some(Exit::Signal(15)),
                kill_cause: Some(KillCause::MasterLost),
                output_dropped: Some(7),
                finished_ms: Some(20),
                ..AttemptUpdate::to(AttemptState::Finished)
            },
        }],
    );
    let a = &store.attempts(id).unwrap()[0];
    assert_eq!(a.state, AttemptState::Finished);
    assert_eq!(a.pid, Some(4242), "kept from the earlier update");
    assert_eq!(a.exit, Some(Exit::Signal(15)));
    assert_eq!(a.kill_cause, Some(KillCause::MasterLost));
    assert_eq!(
        (a.output_dropped, a.started_ms, a.finished_ms),
        (7, Some(10), Some(20))
    );

    let outcome = Outcome::Exited {
        attempt,
        exit: Exit::Signal(15),
        cause: Some(KillCause::MasterLost),
    };
    apply(
        store,
        &[Change::TaskState {
            id,
            state: TaskState::Failed,
            outcome: Some(outcome.clone()),
        }],
    );
    let task = store.task(id).unwrap().unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.outcome, Some(outcome));
    let tasks = store.tasks(Page::ALL, None).unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0], task);
    assert_eq!(store.attempts(id).unwrap().len(), 1);
    assert!(
        store.load().unwrap().tasks.is_empty(),
        "a decided task whose attempt finished is not restored"
    );

    apply(
        store,
        &[
            output(attempt, Stream::Stderr, 0, b"oops"),
            output(attempt, Stream::Stdout, 5, b"world"),
            output(attempt, Stream::Stdout, 0, b"hello"),
        ],
    );
    // A repeated chunk is a duplicate: it changes nothing.
    apply(store, &[output(attempt, Stream::Stdout, 0, b"other")]);
    let out = store.output(attempt).unwrap();
    let seen: Vec<_> = out
        .iter()
        .map(|c| (c.stream, c.offset, &c.bytes[..]))
        .collect();
    assert_eq!(
        seen,
        [
            (Stream::Stdout, 0, &b"hello"[..]),
            (Stream::Stdout, 5, b"world"),
            (Stream::Stderr, 0, b"oops"),
        ]
    );

    // Plain structs that serialize for the HTTP API.
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(json["policy"]["on_disconnect"], "continue");
    assert_eq!(json["state"], "failed");
    assert_eq!(json["target"]["kind"], "agent");
}

fn agents_clusters_profiles_round_trip(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let agent = |id: &str| store.agents().unwrap().into_iter().find(|a| a.id == id);

    assert_eq!(agent("pi-1"), None);
    apply(
        store,
        &[Change::Agent {
            id: "pi-1".into(),
            incarnation: Some(0xdead_beef),
            presence: AgentPresence::Online,
            heard: true,
        }],
    );
    let a = agent("pi-1").unwrap();
    assert_eq!(
        (a.incarnation, a.presence, a.last_seq_acked),
        (Some(0xdead_beef), AgentPresence::Online, 0)
    );
    let heard = a.last_heartbeat_ms;
    assert!(heard.is_some(), "stamped by the commit");
    apply(store, &[acked("pi-1", 10)]);
    apply(store, &[acked("pi-1", 4)]);
    assert_eq!(
        agent("pi-1").unwrap().last_seq_acked,
        10,
        "never moves back"
    );
    apply(
        store,
        &[Change::Agent {
            id: "pi-1".into(),
            incarnation: Some(7),
            presence: AgentPresence::Lost,
            heard: false,
        }],
    );
    let a = agent("pi-1").unwrap();
    assert_eq!((a.incarnation, a.presence), (Some(7), AgentPresence::Lost));
    assert_eq!(
        (a.last_heartbeat_ms, a.last_seq_acked),
        (heard, 10),
        "a presence change keeps the last heartbeat and the acknowledged sequence"
    );
    apply(store, &[acked("pi-2", 3)]);
    assert_eq!(store.agents().unwrap().len(), 2);

    let cluster = Cluster {
        name: "edge".into(),
        mode: ClusterMode::RoundRobin,
        members: vec!["pi-3".into(), "pi-1".into(), "pi-2".into()],
        cursor: 0,
    };
    apply(store, &[Change::Cluster(cluster.clone())]);
    assert_eq!(store.clusters().unwrap(), vec![cluster.clone()]);
    apply(
        store,
        &[Change::ClusterCursor {
            name: "edge".into(),
            cursor: 2,
        }],
    );
    assert_eq!(store.clusters().unwrap()[0].cursor, 2);
    let reordered = Cluster {
        mode: ClusterMode::FixedPriority,
        members: vec!["pi-2".into(), "pi-3".into()],
        cursor: 2,
        ..cluster
    };
    apply(store, &[Change::Cluster(reordered.clone())]);
    assert_eq!(store.clusters().unwrap(), vec![reordered.clone()]);
    assert!(matches!(
        store.apply(&[Change::ClusterCursor {
            name: "nope".into(),
            cursor: 1
        }]),
        Err(StoreError::NotFound {
            what: "cluster",
            ..
        })
    ));

    let profile = Profile {
        name: "long-batch".into(),
        policy: TaskPolicy {
            on_disconnect: OnDisconnect::Continue,
            heartbeat_period_ms: 120_000,
            heartbeat_timeout_ms: 7_200_000,
            lost_after_ms: Some(86_400_000),
            retries: 1,
            ..TaskPolicy::DEFAULT
        },
    };
    apply(store, &[Change::Profile(profile.clone())]);
    assert_eq!(store.profiles().unwrap(), vec![profile.clone()]);

    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.clusters, vec![reordered]);
    assert_eq!(snapshot.profiles, vec![profile]);
    assert_eq!(snapshot.agents.len(), 2);
}

fn duplicate_events_change_nothing(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let started = EventKind::Started {
        task: TaskRef {
            task: 1,
            attempt: 3,
        },
        pid: 1,
    };
    let first = event("pi-1", 7, started);
    apply(store, std::slice::from_ref(&first));
    // The same (agent, seq) again, with other content: a duplicate, ignored.
    apply(store, &[event("pi-1", 7, accepted(1, 4))]);
    // The same sequence from another agent is another event.
    apply(store, &[event("pi-2", 7, accepted(1, 3))]);
    let events = store.attempt_events(3).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.agent_id.as_str(), e.seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [("pi-1", 7, "started"), ("pi-2", 7, "accepted")]
    );
    let Change::Event { event: sent, .. } = &first else {
        unreachable!()
    };
    assert_eq!(
        serde_json::from_str::<Event>(&events[0].json).unwrap(),
        *sent
    );
    assert!(store.attempt_events(4).unwrap().is_empty());

    let finished = event(
        "pi-1",
        8,
        EventKind::Finished {
            task: TaskRef {
                task: 1,
                attempt: 3,
            },
            exit: Exit::Code(0),
            cause: None,
            output_dropped: 0,
        },
    );
    apply(store, std::slice::from_ref(&finished));
    apply(store, &[finished]);
    let by_attempt = store.attempt_events(3).unwrap();
    assert_eq!(
        by_attempt
            .iter()
            .map(|e| (e.agent_id.as_str(), e.seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [
            ("pi-1", 7, "started"),
            ("pi-1", 8, "finished"),
            ("pi-2", 7, "accepted")
        ]
    );
}

fn ids_never_go_back(open: Open) {
    let (_dir, path) = db();
    let (t1, a2) = {
        let store = open(&path).unwrap();
        let store = store.as_ref();
        let (t1, a1) = next_ids(store);
        apply(
            store,
            &[
                new_task(t1, task_on("pi-1")),
                new_attempt(a1, t1, "pi-1"),
                new_attempt(a1 + 1, t1, "pi-1"),
            ],
        );
        let (t2, a3) = next_ids(store);
        assert!(t2 > t1);
        assert!(a3 > a1 + 1);
        // The core may leave gaps; the next ids are above the highest one.
        apply(store, &[new_task(t2 + 10, task_on("pi-1"))]);
        assert_eq!(next_ids(store).0, t2 + 11);
        (t2 + 10, a1 + 1)
    };
    let store = open(&path).unwrap();
    let (t, a) = next_ids(store.as_ref());
    assert!(t > t1 && a > a2, "also across a reopen");
}

fn everything_survives_a_reopen(open: Open) {
    let (_dir, path) = db();
    let (task, attempt) = {
        let store = open(&path).unwrap();
        let (task, attempt) = next_ids(store.as_ref());
        apply(
            store.as_ref(),
            &[
                new_task(task, task_on("pi-1")),
                new_attempt(attempt, task, "pi-1"),
                event("pi-1", 1, accepted(task, attempt)),
                output(attempt, Stream::Stdout, 0, b"out"),
                acked("pi-1", 1),
            ],
        );
        (task, attempt)
    };
    let store = open(&path).unwrap();
    let store = store.as_ref();
    assert_eq!(store.task(task).unwrap().unwrap().argv, task_on("x").argv);
    assert_eq!(store.attempts(task).unwrap()[0].id, attempt);
    assert_eq!(store.attempt_events(attempt).unwrap().len(), 1);
    assert_eq!(store.output(attempt).unwrap()[0].bytes, b"out");
    assert_eq!(store.agents().unwrap()[0].last_seq_acked, 1);
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.tasks.len(), 1);
    assert_eq!(snapshot.tasks[0].1[0].id, attempt);
    // Redelivered after the restart: still one event.
    apply(store, &[event("pi-1", 1, accepted(task, attempt))]);
    assert_eq!(store.attempt_events(attempt).unwrap().len(), 1);
}

fn a_batch_commits_all_or_nothing(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let (task, attempt) = next_ids(store.as_ref());
    apply(store.as_ref(), &[new_task(task, task_on("pi-1"))]);
    let failed = store.apply(&[
        new_attempt(attempt, task, "pi-1"),
        event("pi-1", 1, accepted(task, attempt)),
        Change::Attempt {
            id: attempt + 100,
            update: AttemptUpdate::to(AttemptState::Accepted),
        },
    ]);
    assert!(matches!(
        failed,
        Err(StoreError::NotFound {
            what: "attempt",
            ..
        })
    ));
    assert!(store.attempts(task).unwrap().is_empty());
    assert!(
        store.attempt_events(attempt).unwrap().is_empty(),
        "the event was rolled back too"
    );

    apply(
        store.as_ref(),
        &[
            new_attempt(attempt, task, "pi-1"),
            event("pi-1", 1, accepted(task, attempt)),
            Change::Attempt {
                id: attempt,
                update: AttemptUpdate::to(AttemptState::Accepted),
            },
        ],
    );
    drop(store);
    let store = open(&path).unwrap();
    assert_eq!(
        store.attempts(task).unwrap()[0].state,
        AttemptState::Accepted
    );
    assert_eq!(store.attempt_events(attempt).unwrap().len(), 1);
}

fn tasks_are_paged_by_id(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let (first, _) = next_ids(store);
    let ids: Vec<u64> = (first..first + 5).collect();
    let batch: Vec<Change> = ids
        .iter()
        .map(|&id| new_task(id, task_on("pi-1")))
        .collect();
    apply(store, &batch);
    let page = |p: Page| -> Vec<u64> {
        store
            .tasks(p, None)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect()
    };
    assert_eq!(page(Page::ALL), ids);
    assert_eq!(page(Page::default()), ids, "the default is everything");
    assert_eq!(page(Page::first(2)), ids[..2]);
    assert_eq!(page(Page::after(ids[1], 2)), ids[2..4]);
    assert_eq!(page(Page::after(ids[3], 2)), ids[4..]);
    assert!(page(Page::after(ids[4], 2)).is_empty());
    assert!(page(Page::first(0)).is_empty());
}

fn the_epoch_only_grows(open: Open) {
    let (_dir, path) = db();
    let mut seen = Vec::new();
    for floor in [0, 0, 100, 50, 0] {
        let store = open(&path).unwrap();
        seen.push(store.next_epoch(floor).unwrap());
    }
    // One more each time, jumping to a floor above, never back below.
    assert_eq!(seen, vec![1, 2, 100, 101, 102]);
}

fn invalid(r: Result<(), StoreError>, needle: &str) {
    match r {
        Err(StoreError::Invalid(why)) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

fn bad_input_is_a_typed_error(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let (id, _) = next_ids(store.as_ref());
    let insert = |task: NewTask| store.apply(&[new_task(id, task)]);
    invalid(
        insert(NewTask {
            argv: vec![],
            ..task_on("pi-1")
        }),
        "argv",
    );
    invalid(insert(task_on("no/slash")), "agent name");
    invalid(
        insert(NewTask {
            env: vec!["NOEQUALS".into()],
            ..task_on("pi-1")
        }),
        "EnvWithoutEquals",
    );
    invalid(
        insert(NewTask {
            argv: vec!["x".repeat(600)],
            ..task_on("pi-1")
        }),
        "TooLong",
    );
    invalid(
        insert(NewTask {
            cwd: "/".repeat(200),
            ..task_on("pi-1")
        }),
        "cwd",
    );
    let mut bad_policy = task_on("pi-1");
    bad_policy.policy.heartbeat_timeout_ms = bad_policy.policy.heartbeat_period_ms;
    invalid(insert(bad_policy), "at least two heartbeat periods");
    invalid(
        store.apply(&[Change::Profile(Profile {
            name: "p".into(),
            policy: TaskPolicy {
                grace_ms: 0,
                ..TaskPolicy::DEFAULT
            },
        })]),
        "grace",
    );
    invalid(
        store.apply(&[Change::Cluster(Cluster {
            name: "c".into(),
            mode: ClusterMode::RoundRobin,
            members: vec!["a".into(), "a".into()],
            cursor: 0,
        })]),
        "twice",
    );
    invalid(store.apply(&[event("", 1, accepted(1, 1))]), "agent id");
    invalid(store.apply(&[acked("no/slash", 1)]), "agent id");
    assert!(matches!(
        store.apply(&[new_attempt(999, 999, "pi-1")]),
        Err(StoreError::NotFound { what: "task", .. })
    ));
    assert!(matches!(
        store.apply(&[output(999, Stream::Stdout, 0, b"")]),
        Err(StoreError::NotFound {
            what: "attempt",
            ..
        })
    ));
    assert!(matches!(
        store.apply(&[Change::TaskState {
            id: 999,
            state: TaskState::Cancelled,
            outcome: Some(Outcome::Cancelled)
        }]),
        Err(StoreError::NotFound { what: "task", .. })
    ));
    assert!(
        store.tasks(Page::ALL, None).unwrap().is_empty(),
        "nothing refused was stored"
    );
    assert!(store.load().unwrap().profiles.is_empty());
    assert!(store.load().unwrap().clusters.is_empty());
}
