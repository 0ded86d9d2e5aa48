//! The master's SQLite store on real files: migration, round trips, idempotent events,
//! never-reused ids, reopening, and typed refusals of bad input.

use tether_core::message::{EventKind, Exit, KillCause, Stream, TaskRef};
use tether_core::policy::OnDisconnect;
use tether_master::model::{
    Agent, AgentPresence, AttemptState, AttemptUpdate, Cluster, ClusterMode, NewTask, Outcome,
    Profile, Target, TaskPolicy, TaskState,
};
use tether_master::store::{SCHEMA_VERSION, Store, StoreError};

fn db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    (dir, path)
}

fn task_on(agent: &str) -> NewTask {
    NewTask {
        target: Target::Agent(agent.into()),
        argv: vec!["/bin/echo".into(), "hello world".into()],
        env: vec!["LANG=C".into()],
        cwd: "/tmp".into(),
        profile: None,
        policy: TaskPolicy::DEFAULT,
        start_at_ms: None,
    }
}

#[test]
fn open_migrates_from_nothing() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.integrity_check().unwrap().is_empty());
    assert!(store.tasks().unwrap().is_empty());
    drop(store);

    let raw = rusqlite::Connection::open(&path).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    for table in [
        "agents",
        "clusters",
        "cluster_members",
        "profiles",
        "tasks",
        "attempts",
        "events",
        "output",
    ] {
        let n: i64 = raw
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "table {table}");
    }
}

#[test]
fn a_file_that_is_not_a_database_is_an_error() {
    let (_dir, path) = db();
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    match Store::open(&path) {
        Err(StoreError::Sqlite(e)) => assert!(e.to_string().contains("not a database"), "{e}"),
        other => panic!("expected a database error, got {other:?}"),
    }
}

#[test]
fn newer_schema_is_refused() {
    let (_dir, path) = db();
    drop(Store::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    drop(raw);
    match Store::open(&path) {
        Err(StoreError::NewerSchema { found: 99, known }) => assert_eq!(known, SCHEMA_VERSION),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn tasks_and_attempts_round_trip() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    let mut new = task_on("pi-1");
    new.policy.on_disconnect = OnDisconnect::Continue;
    new.policy.retries = 2;
    new.policy.lost_after_ms = Some(3_600_000);
    new.profile = Some("batch".into());
    new.start_at_ms = Some(1_700_000_000_000);
    let id = store.insert_task(&new).unwrap();

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

    let attempt = store.new_attempt(id, "pi-1").unwrap();
    let spec = task.spec(attempt).unwrap();
    assert_eq!(spec.task, TaskRef { task: id, attempt });
    assert_eq!(spec.policy, new.policy.to_core());

    let a = store.attempt(attempt).unwrap().unwrap();
    assert_eq!(
        (a.task_id, a.agent_id.as_str(), a.state),
        (id, "pi-1", AttemptState::Sent)
    );

    store
        .set_attempt_state(
            attempt,
            &AttemptUpdate {
                pid: Some(4242),
                started_ms: Some(10),
                ..AttemptUpdate::to(AttemptState::Running)
            },
        )
        .unwrap();
    assert_eq!(store.open_attempts_on("pi-1").unwrap().len(), 1);
    store
        .set_attempt_state(
            attempt,
            &AttemptUpdate {
                exit: Some(Exit::Signal(15)),
                kill_cause: Some(KillCause::MasterLost),
                output_dropped: Some(7),
                finished_ms: Some(20),
                ..AttemptUpdate::to(AttemptState::Finished)
            },
        )
        .unwrap();
    let a = store.attempt(attempt).unwrap().unwrap();
    assert_eq!(a.state, AttemptState::Finished);
    assert!(store.open_attempts_on("pi-1").unwrap().is_empty());
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
    store
        .set_task_state(id, TaskState::Failed, Some(&outcome))
        .unwrap();
    let task = store.task(id).unwrap().unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.outcome, Some(outcome));
    assert_eq!(store.tasks_in_state(TaskState::Failed).unwrap().len(), 1);
    assert!(store.tasks_in_state(TaskState::Pending).unwrap().is_empty());
    assert_eq!(store.attempts(id).unwrap().len(), 1);

    assert!(
        store
            .append_output(attempt, Stream::Stderr, 0, b"oops")
            .unwrap()
    );
    assert!(
        store
            .append_output(attempt, Stream::Stdout, 5, b"world")
            .unwrap()
    );
    assert!(
        store
            .append_output(attempt, Stream::Stdout, 0, b"hello")
            .unwrap()
    );
    assert!(
        !store
            .append_output(attempt, Stream::Stdout, 0, b"other")
            .unwrap(),
        "a repeated chunk is a duplicate"
    );
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

#[test]
fn agents_clusters_profiles_round_trip() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();

    assert_eq!(store.last_acked_seq("pi-1").unwrap(), None);
    let agent = Agent {
        incarnation: Some(0xdead_beef),
        presence: AgentPresence::Online,
        last_heartbeat_ms: Some(123),
        ..Agent::new("pi-1")
    };
    store.upsert_agent(&agent).unwrap();
    assert_eq!(store.agent("pi-1").unwrap(), Some(agent.clone()));
    store.set_last_acked_seq("pi-1", 10).unwrap();
    store.set_last_acked_seq("pi-1", 4).unwrap();
    assert_eq!(
        store.last_acked_seq("pi-1").unwrap(),
        Some(10),
        "never moves back"
    );
    store.set_last_acked_seq("pi-2", 3).unwrap();
    assert_eq!(store.agents().unwrap().len(), 2);
    assert!(store.delete_agent("pi-2").unwrap());
    assert!(!store.delete_agent("pi-2").unwrap());

    let cluster = Cluster {
        name: "edge".into(),
        mode: ClusterMode::RoundRobin,
        members: vec!["pi-3".into(), "pi-1".into(), "pi-2".into()],
        cursor: 0,
    };
    store.put_cluster(&cluster).unwrap();
    assert_eq!(store.cluster("edge").unwrap(), Some(cluster.clone()));
    store.set_cluster_cursor("edge", 2).unwrap();
    let reordered = Cluster {
        mode: ClusterMode::FixedPriority,
        members: vec!["pi-2".into(), "pi-3".into()],
        cursor: 2,
        ..cluster
    };
    store.put_cluster(&reordered).unwrap();
    assert_eq!(store.clusters().unwrap(), vec![reordered]);
    assert!(matches!(
        store.set_cluster_cursor("nope", 1),
        Err(StoreError::NotFound {
            what: "cluster",
            ..
        })
    ));
    assert!(store.delete_cluster("edge").unwrap());
    assert!(store.cluster("edge").unwrap().is_none());

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
    store.put_profile(&profile).unwrap();
    assert_eq!(store.profile("long-batch").unwrap(), Some(profile.clone()));
    assert_eq!(store.profiles().unwrap(), vec![profile]);
    assert!(store.delete_profile("long-batch").unwrap());
    assert!(store.profile("long-batch").unwrap().is_none());
}

#[test]
fn duplicate_event_returns_false_and_changes_nothing() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    assert!(
        store
            .record_event("pi-1", 7, Some(3), "started", r#"{"pid":1}"#)
            .unwrap()
    );
    assert!(
        !store
            .record_event("pi-1", 7, Some(4), "finished", r#"{"pid":2}"#)
            .unwrap()
    );
    // Same sequence from another agent is another event.
    assert!(
        store
            .record_event("pi-2", 7, None, "accepted", "{}")
            .unwrap()
    );
    let events = store.events("pi-1").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].seq,
            events[0].attempt,
            events[0].kind.as_str(),
            events[0].json.as_str()
        ),
        (7, Some(3), "started", r#"{"pid":1}"#)
    );

    let event = tether_core::message::Event {
        seq: 8,
        at_unix_ms: 99,
        kind: EventKind::Finished {
            task: TaskRef {
                task: 1,
                attempt: 3,
            },
            exit: Exit::Code(0),
            cause: None,
            output_dropped: 0,
        },
    };
    assert!(store.record_agent_event("pi-1", &event).unwrap());
    assert!(!store.record_agent_event("pi-1", &event).unwrap());
    let by_attempt = store.attempt_events(3).unwrap();
    assert_eq!(
        by_attempt
            .iter()
            .map(|e| (e.seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [(7, "started"), (8, "finished")]
    );
}

#[test]
fn attempt_and_task_ids_grow_even_after_deletes() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    let t1 = store.insert_task(&task_on("pi-1")).unwrap();
    let a1 = store.new_attempt(t1, "pi-1").unwrap();
    let a2 = store.new_attempt(t1, "pi-1").unwrap();
    assert!(a2 > a1);
    store.append_output(a2, Stream::Stdout, 0, b"x").unwrap();
    // Deleting the newest rows must not let their ids be issued again.
    assert!(store.delete_task(t1).unwrap());
    assert!(
        store.attempt(a2).unwrap().is_none(),
        "attempts go with their task"
    );
    assert!(store.output(a2).unwrap().is_empty(), "and their output");
    let t2 = store.insert_task(&task_on("pi-1")).unwrap();
    let a3 = store.new_attempt(t2, "pi-1").unwrap();
    assert!(t2 > t1);
    assert!(a3 > a2);
    drop(store);

    let store = Store::open(&path).unwrap();
    let a4 = store.new_attempt(t2, "pi-1").unwrap();
    assert!(a4 > a3, "also across a reopen");
}

#[test]
fn everything_survives_a_reopen() {
    let (_dir, path) = db();
    let (task, attempt) = {
        let store = Store::open(&path).unwrap();
        let task = store.insert_task(&task_on("pi-1")).unwrap();
        let attempt = store.new_attempt(task, "pi-1").unwrap();
        store
            .record_event("pi-1", 1, Some(attempt), "accepted", "{}")
            .unwrap();
        store
            .append_output(attempt, Stream::Stdout, 0, b"out")
            .unwrap();
        store.set_last_acked_seq("pi-1", 1).unwrap();
        (task, attempt)
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.task(task).unwrap().unwrap().argv, task_on("x").argv);
    assert_eq!(store.attempt(attempt).unwrap().unwrap().task_id, task);
    assert_eq!(store.events("pi-1").unwrap().len(), 1);
    assert_eq!(store.output(attempt).unwrap()[0].bytes, b"out");
    assert_eq!(store.last_acked_seq("pi-1").unwrap(), Some(1));
    assert!(
        !store
            .record_event("pi-1", 1, None, "accepted", "{}")
            .unwrap()
    );
}

#[test]
fn atomically_commits_all_or_nothing() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    let task = store.insert_task(&task_on("pi-1")).unwrap();
    let failed: Result<(), StoreError> = store.atomically(|s| {
        let attempt = s.new_attempt(task, "pi-1")?;
        assert!(s.record_event("pi-1", 1, Some(attempt), "accepted", "{}")?);
        s.set_attempt_state(attempt + 100, &AttemptUpdate::to(AttemptState::Accepted))
    });
    assert!(matches!(
        failed,
        Err(StoreError::NotFound {
            what: "attempt",
            ..
        })
    ));
    assert!(store.attempts(task).unwrap().is_empty());
    assert!(
        store.events("pi-1").unwrap().is_empty(),
        "the event was rolled back too"
    );

    let attempt = store
        .atomically(|s| {
            let attempt = s.new_attempt(task, "pi-1")?;
            s.record_event("pi-1", 1, Some(attempt), "accepted", "{}")?;
            s.set_attempt_state(attempt, &AttemptUpdate::to(AttemptState::Accepted))?;
            Ok(attempt)
        })
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.attempt(attempt).unwrap().unwrap().state,
        AttemptState::Accepted
    );
    assert_eq!(store.events("pi-1").unwrap().len(), 1);
}

fn invalid<T: std::fmt::Debug>(r: Result<T, StoreError>, needle: &str) {
    match r {
        Err(StoreError::Invalid(why)) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let (_dir, path) = db();
    let store = Store::open(&path).unwrap();
    invalid(
        store.insert_task(&NewTask {
            argv: vec![],
            ..task_on("pi-1")
        }),
        "argv",
    );
    invalid(store.insert_task(&task_on("no/slash")), "agent name");
    invalid(
        store.insert_task(&NewTask {
            env: vec!["NOEQUALS".into()],
            ..task_on("pi-1")
        }),
        "EnvWithoutEquals",
    );
    invalid(
        store.insert_task(&NewTask {
            argv: vec!["x".repeat(600)],
            ..task_on("pi-1")
        }),
        "TooLong",
    );
    invalid(
        store.insert_task(&NewTask {
            cwd: "/".repeat(200),
            ..task_on("pi-1")
        }),
        "cwd",
    );
    let mut bad_policy = task_on("pi-1");
    bad_policy.policy.heartbeat_timeout_ms = bad_policy.policy.heartbeat_period_ms;
    invalid(
        store.insert_task(&bad_policy),
        "at least two heartbeat periods",
    );
    invalid(
        store.put_profile(&Profile {
            name: "p".into(),
            policy: TaskPolicy {
                grace_ms: 0,
                ..TaskPolicy::DEFAULT
            },
        }),
        "grace",
    );
    invalid(
        store.put_cluster(&Cluster {
            name: "c".into(),
            mode: ClusterMode::RoundRobin,
            members: vec!["a".into(), "a".into()],
            cursor: 0,
        }),
        "twice",
    );
    invalid(
        store.record_event("pi-1", 1, None, "x", "{not json"),
        "JSON",
    );
    invalid(store.record_event("", 1, None, "x", "{}"), "agent id");
    assert!(matches!(
        store.new_attempt(999, "pi-1"),
        Err(StoreError::NotFound { what: "task", .. })
    ));
    assert!(matches!(
        store.append_output(999, Stream::Stdout, 0, b""),
        Err(StoreError::NotFound {
            what: "attempt",
            ..
        })
    ));
    assert!(matches!(
        store.set_task_state(999, TaskState::Cancelled, Some(&Outcome::Cancelled)),
        Err(StoreError::NotFound { what: "task", .. })
    ));
    assert!(
        store.tasks().unwrap().is_empty(),
        "nothing refused was stored"
    );
}
