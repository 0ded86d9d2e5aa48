//! What only the SQLite backend promises beyond the [`Store`] suite of `store_basics.rs`:
//! migration from nothing (WAL, every table) and from an older version with rows in it,
//! refusing a file that is not a database or a schema newer than this binary, and ids of rows
//! deleted by hand never issued again.

use std::path::Path;

use tether_core::message::Stream;
use tether_master::store::schema::MIGRATIONS;
use tether_master::store::{Page, SCHEMA_VERSION, SqliteStore, Store, StoreError};

use crate::store_basics::{apply, db, new_attempt, new_task, next_ids, output, task_on};

fn schema_version(path: &Path) -> u32 {
    let raw = rusqlite::Connection::open(path).unwrap();
    raw.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn sqlite_open_migrates_from_nothing() {
    let (_dir, path) = db();
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.integrity_check().unwrap().is_empty());
    assert!(store.tasks(Page::ALL, None).unwrap().is_empty());
    drop(store);
    assert_eq!(schema_version(&path), SCHEMA_VERSION);

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
        "kill_requests",
        "master_epoch",
        "agent_keys",
        "workflows",
        "orders",
        "schedules",
        "handovers",
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
    drop(raw);
    // Reopening an up-to-date database migrates nothing.
    drop(SqliteStore::open(&path).unwrap());
    assert_eq!(schema_version(&path), SCHEMA_VERSION);
}

#[test]
fn sqlite_a_version_6_database_keeps_its_rows() {
    let (_dir, path) = db();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER);
         INSERT INTO schema_version VALUES (1, 6);",
    )
    .unwrap();
    for sql in &MIGRATIONS[..6] {
        raw.execute_batch(sql).unwrap();
    }
    raw.execute_batch(
        "INSERT INTO tasks (id, target_kind, target, argv, env, cwd, on_disconnect,
             heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap,
             retries, state, created_ms, updated_ms)
         VALUES (7, 'agent', 'pi-1', '[\"/bin/true\"]', '[]', '', 'kill', 1000, 3000, 1000,
             60000, 1024, 0, 'pending', 1, 1);
         INSERT INTO attempts (id, task_id, agent_id, state, created_ms)
             VALUES (9, 7, 'pi-1', 'sent', 1);",
    )
    .unwrap();
    drop(raw);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(schema_version(&path), SCHEMA_VERSION);
    let task = store.task(7).unwrap().unwrap();
    assert_eq!((task.argv.len(), task.order), (1, None));
    let attempts = store.attempts(7).unwrap();
    assert_eq!((attempts[0].id, attempts[0].after), (9, None));
    let snapshot = store.load().unwrap();
    assert_eq!((snapshot.next_task, snapshot.next_order), (8, 1));
    assert!(snapshot.step_tasks.is_empty());
}

#[test]
fn sqlite_a_file_that_is_not_a_database_is_an_error() {
    let (_dir, path) = db();
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::Sqlite(e)) => assert!(e.to_string().contains("not a database"), "{e}"),
        other => panic!("expected a database error, got {other:?}"),
    }
}

#[test]
fn sqlite_newer_schema_is_refused() {
    let (_dir, path) = db();
    drop(SqliteStore::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    drop(raw);
    match SqliteStore::open(&path) {
        Err(StoreError::NewerSchema { found: 99, known }) => assert_eq!(known, SCHEMA_VERSION),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn sqlite_ids_of_deleted_rows_are_not_issued_again() {
    let (_dir, path) = db();
    let store = SqliteStore::open(&path).unwrap();
    let (t1, a1) = next_ids(&store);
    apply(
        &store,
        &[
            new_task(t1, task_on("pi-1")),
            new_attempt(a1, t1, "pi-1"),
            new_attempt(a1 + 1, t1, "pi-1"),
            output(a1 + 1, Stream::Stdout, 0, b"x"),
        ],
    );
    drop(store);
    // Retention deletes the newest rows (by hand here, as there is no such change yet).
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    assert_eq!(
        raw.execute("DELETE FROM tasks WHERE id = ?1", [t1])
            .unwrap(),
        1
    );
    drop(raw);

    let store = SqliteStore::open(&path).unwrap();
    assert!(
        store.attempts(t1).unwrap().is_empty(),
        "attempts go with their task"
    );
    assert!(store.output(a1 + 1).unwrap().is_empty(), "and their output");
    let (t2, a3) = next_ids(&store);
    assert!(t2 > t1);
    assert!(a3 > a1 + 1, "deleted ids are not issued again");
}
