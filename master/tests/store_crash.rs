//! kill -9 while the store is writing loses nothing that was committed.
//!
//! The test re-executes its own binary as a writer (`TETHER_STORE_CRASH_CHILD=<db path>`) that
//! commits batches of the core's changes (task, attempt, event, output, acknowledgement) in a
//! loop through [`Store::apply`], as the runtime does, and prints each committed id after the
//! commit returns. The parent SIGKILLs it mid-stream, reopens the database and checks SQLite's
//! integrity check and that every reported row is there. Runs without libtest's harness
//! (`harness = false`) so the child mode needs no dummy test.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tether_core::message::{Event, EventKind, Stream, TaskRef};
use tether_master::core::Change;
use tether_master::model::{NewTask, Target, TaskPolicy, TaskState};
use tether_master::store::{Page, SqliteStore, Store};

const CHILD_ENV: &str = "TETHER_STORE_CRASH_CHILD";
const AGENT: &str = "pi-crash";
/// Commits the parent waits to see before it kills the writer.
const BEFORE_KILL: usize = 200;
/// The writer stops by itself after this many, so it cannot outlive a dead parent for long.
const WRITER_LIMIT: u64 = 100_000;

fn task() -> NewTask {
    NewTask {
        target: Target::Agent(AGENT.into()),
        argv: vec!["/bin/true".into()],
        env: vec![],
        cwd: String::new(),
        profile: None,
        policy: TaskPolicy::DEFAULT,
        start_at_ms: None,
        order: None,
        occurrence: None,
    }
}

/// One batch as the core would emit it for a task that started at once: `t` and `a` are the
/// ids the core chose.
fn batch(t: u64, a: u64, seq: u64) -> Vec<Change> {
    vec![
        Change::NewTask {
            id: t,
            task: task(),
            state: TaskState::Pending,
        },
        Change::NewAttempt {
            id: a,
            task: t,
            agent: AGENT.into(),
            after: None,
        },
        Change::Event {
            agent: AGENT.into(),
            event: Event {
                seq,
                at_unix_ms: 0,
                kind: EventKind::Started {
                    task: TaskRef {
                        task: t,
                        attempt: a,
                    },
                    pid: 1,
                },
            },
        },
        Change::Output {
            attempt: a,
            stream: Stream::Stdout,
            offset: 0,
            data: seq.to_le_bytes().to_vec(),
        },
        Change::Acked {
            agent: AGENT.into(),
            up_to: seq,
        },
    ]
}

fn writer(path: &str) {
    let store = SqliteStore::open(path).expect("writer opens the store");
    let snapshot = store.load().expect("writer loads the snapshot");
    let (mut t, mut a) = (snapshot.next_task, snapshot.next_attempt);
    let mut out = std::io::stdout().lock();
    for seq in 1..=WRITER_LIMIT {
        store.apply(&batch(t, a, seq)).expect("writer commits");
        // Only after the commit returned: every line is a promise the parent checks.
        if writeln!(out, "{t} {a} {seq}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return; // the parent is gone
        }
        t += 1;
        a += 1;
    }
}

fn kill9_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    // Created (and migrated) before the writer starts, so the kill can only hit data writes.
    drop(SqliteStore::open(&path).unwrap());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("writer process starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });

    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines.len() < BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("writer reported only {} commits before {e:?}", lines.len());
            }
        }
    }
    child.kill().expect("SIGKILL the writer"); // Child::kill is SIGKILL on Unix
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the writer must die by SIGKILL mid-stream, not finish: {status:?}"
    );
    reader.join().unwrap();
    // Lines printed just before the kill are commits too.
    lines.extend(rx.try_iter());

    let store = SqliteStore::open(&path).expect("reopens after kill -9");
    assert_eq!(store.integrity_check().unwrap(), Vec::<String>::new());
    let events = store.events(AGENT).unwrap();
    let mut max_attempt = 0;
    for line in &lines {
        let nums: Vec<u64> = line
            .split(' ')
            .map(|n| n.parse().unwrap_or_else(|_| panic!("bad line {line:?}")))
            .collect();
        let [t, a, seq] = nums[..] else {
            panic!("bad line {line:?}");
        };
        assert!(store.task(t).unwrap().is_some(), "task {t} lost");
        let attempt = store
            .attempts(t)
            .unwrap()
            .into_iter()
            .find(|x| x.id == a)
            .unwrap_or_else(|| panic!("attempt {a} lost"));
        assert_eq!(attempt.task_id, t);
        assert!(
            events.iter().any(|e| e.seq == seq && e.attempt == Some(a)),
            "event {seq} lost"
        );
        assert_eq!(
            store.output(a).unwrap()[0].bytes,
            seq.to_le_bytes(),
            "output of {a} lost"
        );
        max_attempt = max_attempt.max(a);
    }
    let last_seq = lines.len() as u64;
    let agent = store.agents().unwrap().into_iter().find(|x| x.id == AGENT);
    assert!(agent.unwrap().last_seq_acked >= last_seq);
    // A transaction cut by the kill left nothing half-done: every attempt has its event.
    for task in store.tasks(Page::ALL, None).unwrap() {
        let attempts = store.attempts(task.id).unwrap();
        assert_eq!(attempts.len(), 1, "task {} is half-written", task.id);
        assert!(events.iter().any(|e| e.attempt == Some(attempts[0].id)));
    }
    // Ids keep growing after the crash.
    let snapshot = store.load().unwrap();
    assert!(snapshot.next_attempt > max_attempt);
    let next = last_seq + 1_000_000;
    store
        .apply(&batch(snapshot.next_task, snapshot.next_attempt, next))
        .expect("commits after the crash");
    assert!(store.load().unwrap().next_attempt > snapshot.next_attempt);
    println!(
        "kill -9 after {} reported commits ({} stored): nothing lost",
        lines.len(),
        events.len()
    );
}

fn main() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        writer(path.to_str().expect("utf-8 temp path"));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("kill9_loses_nothing_committed: test");
        return;
    }
    kill9_loses_nothing_committed();
    println!("test kill9_loses_nothing_committed ... ok");
}
