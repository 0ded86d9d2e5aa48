//! What only the SQLite backend promises beyond the [`Store`] suite of `store_basics.rs`:
//! migration from nothing (WAL, every table), refusing a file that is not a database or a
//! schema newer than this binary, and ids of rows deleted by hand never issued again.

use std::path::Path;

use tether_core::message::Stream;
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
