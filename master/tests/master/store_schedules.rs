//! Schedules, cases of the store suite (`store_basics.rs`): schedules as rows replaced by id
//! (versions, pausing, deleting, one live schedule per name), hand-overs and the ids they
//! reserve, the store's own refusal of a second task for one occurrence, what `load` gives a
//! restarted core, retention, rows that do not decode, and a version 7 database upgraded with
//! its rows.

use tether_master::calendar::{CalendarSpec, Run};
use tether_master::core::Change;
use tether_master::model::{
    Handover, HandoverState, Missed, NewTask, OccurrenceRef, Schedule, ScheduledTask, StepRef,
    Target, TaskPolicy, TaskState,
};
use tether_master::store::{Page, Pruned, StoreError};

use crate::store_basics::{Open, Raw, apply, db, new_attempt, new_task, next_ids, task_on};
use crate::store_orders::{not_found, refused, stamped};

const T0: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
/// A cutoff after everything the tests store.
const LATER: u64 = u64::MAX >> 2;

fn schedule(id: u64, name: &str) -> Schedule {
    Schedule {
        id,
        name: name.into(),
        version: 1,
        calendar: CalendarSpec {
            every_ms: Some(HOUR),
            start_ms: Some(T0),
            ..CalendarSpec::default()
        },
        task: ScheduledTask {
            target: Target::Agent("pi-1".into()),
            argv: vec!["/usr/bin/backup".into(), "--all".into()],
            env: vec!["LANG=C".into()],
            cwd: "/srv".into(),
            profile: None,
            policy: TaskPolicy::DEFAULT,
        },
        missed: Missed::Skip,
        late_ms: MINUTE,
        paused: false,
        deleted: false,
        created_ms: 0,
        updated_ms: 0,
    }
}

fn put(s: &Schedule) -> Change {
    Change::Schedule(s.clone())
}

/// A schedule read back, its stamped times zeroed (as the core makes it).
fn undated(s: Schedule) -> Schedule {
    assert!(
        stamped(s.created_ms) && s.updated_ms >= s.created_ms,
        "{s:?}"
    );
    Schedule {
        created_ms: 0,
        updated_ms: 0,
        ..s
    }
}

fn ids(found: Vec<Schedule>) -> Vec<u64> {
    found.into_iter().map(|s| s.id).collect()
}

/// The task of `schedule`'s (version 1) occurrence at `at_ms`.
fn occurrence(id: u64, schedule: u64, at_ms: u64) -> Change {
    occurrence_of(id, schedule, 1, at_ms)
}

fn occurrence_of(id: u64, schedule: u64, version: u32, at_ms: u64) -> Change {
    new_task(
        id,
        NewTask {
            occurrence: Some(OccurrenceRef {
                schedule,
                version,
                at_ms,
            }),
            ..task_on("pi-1")
        },
    )
}

fn handover(task: u64, attempt: u64, schedule: u64, runs: &[(u64, u64, u32)]) -> Handover {
    Handover {
        task,
        attempt,
        schedule,
        version: 1,
        agent: "pi-1".into(),
        runs: runs
            .iter()
            .map(|&(first_ms, period_ms, count)| Run {
                first_ms,
                period_ms,
                count,
            })
            .collect(),
        state: HandoverState::Sent,
        created_ms: 0,
    }
}

fn in_state(h: &Handover, state: HandoverState) -> Change {
    Change::Handover(Handover { state, ..h.clone() })
}

fn undated_handovers(found: Vec<Handover>) -> Vec<Handover> {
    found
        .into_iter()
        .map(|h| {
            assert!(stamped(h.created_ms), "{h:?}");
            Handover { created_ms: 0, ..h }
        })
        .collect()
}

fn task_ids(found: Vec<tether_master::model::Task>) -> Vec<u64> {
    found.into_iter().map(|t| t.id).collect()
}

fn succeeded(id: u64) -> Change {
    Change::TaskState {
        id,
        state: TaskState::Succeeded,
        outcome: None,
    }
}

pub(crate) fn schedules_round_trip_and_a_new_version_replaces_the_row(open: Open) {
    let (_dir, path) = db();
    let (nightly, hourly) = {
        let store = open(&path).unwrap();
        let store = store.as_ref();
        assert_eq!(store.load().unwrap().next_schedule, 1);
        let mut nightly = schedule(1, "nightly");
        nightly.calendar = CalendarSpec {
            cron: Some("0 3 * * *".into()),
            time_zone: Some("Europe/Paris".into()),
            ..CalendarSpec::default()
        };
        nightly.task.target = Target::Cluster("edge".into());
        nightly.task.profile = Some("batch".into());
        nightly.missed = Missed::Once;
        nightly.late_ms = 5 * MINUTE;
        let mut hourly = schedule(2, "hourly");
        hourly.missed = Missed::All;
        apply(store, &[put(&nightly), put(&hourly)]);

        let first = store.schedule("nightly").unwrap().unwrap();
        assert_eq!(first.created_ms, first.updated_ms, "stamped at the commit");
        assert_eq!(undated(first.clone()), nightly);
        assert_eq!(
            store.schedule_by_id(2).unwrap().map(undated),
            Some(hourly.clone())
        );
        assert_eq!(ids(store.schedules(Page::ALL).unwrap()), [1, 2]);
        assert_eq!(ids(store.schedules(Page::first(1)).unwrap()), [1]);
        assert_eq!(ids(store.schedules(Page::after(1, 5)).unwrap()), [2]);
        assert!(
            store
                .schedules(Page::after(u64::MAX, 5))
                .unwrap()
                .is_empty()
        );
        assert!(store.schedule("nope").unwrap().is_none());
        assert!(store.schedule_by_id(99).unwrap().is_none());
        assert!(store.schedule_by_id(u64::MAX).unwrap().is_none());

        // A new version replaces the row: same id, created when first stored.
        let mut v2 = nightly.clone();
        v2.version = 2;
        v2.calendar = CalendarSpec {
            at_ms: vec![T0, T0 + HOUR],
            ..CalendarSpec::default()
        };
        v2.task.argv.push("--fast".into());
        apply(store, &[put(&v2)]);
        let got = store.schedule("nightly").unwrap().unwrap();
        assert_eq!(got.created_ms, first.created_ms);
        assert!(got.updated_ms >= first.updated_ms);
        assert_eq!(undated(got), v2);
        assert_eq!(ids(store.schedules(Page::ALL).unwrap()), [1, 2], "replaced");

        // What the store refuses, with the reason.
        let bad = |f: fn(&mut Schedule)| {
            let mut s = schedule(3, "bad");
            f(&mut s);
            store.apply(&[put(&s)])
        };
        refused(
            store.apply(&[put(&nightly)]),
            "older than the stored version 2",
        );
        refused(bad(|s| s.id = 0), "schedule id 0");
        refused(bad(|s| s.id = u64::MAX), "schedule id");
        refused(bad(|s| s.name = "no/slash".into()), "schedule name");
        refused(bad(|s| s.version = 0), "version 0");
        refused(bad(|s| s.late_ms = u64::MAX), "late_ms");
        refused(bad(|s| s.task.argv.clear()), "schedule 'bad' task");
        refused(
            bad(|s| s.task.target = Target::Agent("no/slash".into())),
            "agent name",
        );
        assert!(store.schedule_by_id(3).unwrap().is_none());
        (v2, hourly)
    };
    let store = open(&path).unwrap();
    let snapshot = store.load().unwrap();
    let restored: Vec<Schedule> = snapshot.schedules.into_iter().map(undated).collect();
    assert_eq!(restored, [nightly, hourly], "after a reopen, by id");
    assert_eq!(snapshot.next_schedule, 3);
    assert!(snapshot.handovers.is_empty() && snapshot.last_occurrences.is_empty());
}

pub(crate) fn paused_and_deleted_schedules(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let (a, b) = (schedule(1, "a"), schedule(2, "b"));
    apply(store, &[put(&a), put(&b)]);

    // Paused: still followed (and restored), only paused.
    apply(
        store,
        &[put(&Schedule {
            paused: true,
            ..a.clone()
        })],
    );
    assert!(store.schedule("a").unwrap().unwrap().paused);
    let restored = store.load().unwrap().schedules;
    assert_eq!((restored[0].id, restored[0].paused), (1, true));

    // Deleted: gone from the lists and the snapshot, kept by id for its occurrences.
    let gone = Schedule {
        deleted: true,
        ..b.clone()
    };
    apply(store, &[put(&gone)]);
    assert!(store.schedule("b").unwrap().is_none());
    assert_eq!(ids(store.schedules(Page::ALL).unwrap()), [1]);
    assert_eq!(ids(store.load().unwrap().schedules), [1]);
    assert!(store.schedule_by_id(2).unwrap().unwrap().deleted);
    apply(store, &[put(&gone)]);

    // Its name is free again, under a new id; a deleted schedule stays deleted.
    apply(store, &[put(&schedule(3, "b"))]);
    assert_eq!(store.schedule("b").unwrap().unwrap().id, 3);
    refused(store.apply(&[put(&b)]), "stays deleted");
    assert_eq!(store.load().unwrap().next_schedule, 4);
}

pub(crate) fn a_live_name_is_taken_once(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let a = schedule(1, "a");
    apply(store, &[put(&a)]);
    // A second live schedule named "a": refused, with its whole batch.
    refused(
        store.apply(&[put(&schedule(2, "b")), put(&schedule(3, "a"))]),
        "taken by schedule 1",
    );
    assert!(
        store.schedule_by_id(2).unwrap().is_none(),
        "nothing of the batch"
    );
    // Renaming onto a live name too.
    apply(store, &[put(&schedule(2, "b"))]);
    let renamed = Schedule {
        version: 2,
        ..schedule(2, "a")
    };
    refused(store.apply(&[put(&renamed)]), "taken by schedule 1");
    // Deleting the first frees the name, in the same batch.
    apply(
        store,
        &[
            put(&Schedule {
                deleted: true,
                ..a.clone()
            }),
            put(&renamed),
        ],
    );
    assert_eq!(store.schedule("a").unwrap().unwrap().id, 2);
    assert_eq!(store.schedule_by_id(1).unwrap().unwrap().name, "a");
    assert!(store.schedule("b").unwrap().is_none());
}

pub(crate) fn a_handover_reserves_its_ids(open: Open) {
    let (_dir, path) = db();
    let (t2, a2) = {
        let store = open(&path).unwrap();
        let store = store.as_ref();
        apply(store, &[put(&schedule(1, "hourly"))]);
        let (t, a) = next_ids(store);
        // 30 occurrences: tasks t+1..=t+30 and attempts a+1..=a+30, besides t and a.
        let h = handover(t, a, 1, &[(T0, HOUR, 24), (T0 + 30 * HOUR, HOUR, 6)]);
        apply(store, &[Change::Handover(h.clone())]);
        assert_eq!(next_ids(store), (t + 31, a + 31), "past the reserved ids");
        let restored = undated_handovers(store.load().unwrap().handovers);
        assert_eq!(restored, std::slice::from_ref(&h));

        // The agent started occurrence 2 on its own: its rows take the reserved ids.
        let at = h.occurrence_at(2).unwrap();
        apply(
            store,
            &[occurrence(t + 3, 1, at), new_attempt(a + 3, t + 3, "pi-1")],
        );
        assert_eq!(next_ids(store), (t + 31, a + 31));
        assert_eq!(
            store.task(t + 3).unwrap().unwrap().occurrence,
            Some(OccurrenceRef {
                schedule: 1,
                version: 1,
                at_ms: T0 + 2 * HOUR
            })
        );
        assert_eq!(store.attempts(t + 3).unwrap()[0].id, a + 3);

        // A state change replaces the row, created when first stored.
        let created = store.handovers(1).unwrap()[0].created_ms;
        apply(store, &[in_state(&h, HandoverState::Held)]);
        let held = store.handovers(1).unwrap();
        assert_eq!(
            (held[0].state, held[0].created_ms),
            (HandoverState::Held, created)
        );
        assert_eq!(
            store.load().unwrap().handovers[0].state,
            HandoverState::Held
        );

        // A newer one replaces it on the agent: newest first; ended ones are not restored.
        let (t2, a2) = next_ids(store);
        let h2 = handover(t2, a2, 1, &[(T0 + 40 * HOUR, HOUR, 10)]);
        apply(
            store,
            &[
                in_state(&h, HandoverState::Ended),
                Change::Handover(h2.clone()),
            ],
        );
        let all = store.handovers(1).unwrap();
        assert_eq!(all.iter().map(|h| h.task).collect::<Vec<_>>(), [t2, t]);
        assert_eq!(all[1].state, HandoverState::Ended);
        assert_eq!(undated_handovers(store.load().unwrap().handovers), [h2]);
        assert!(store.handovers(99).unwrap().is_empty());

        // What the store refuses, with the reason; nothing is reserved by a refusal.
        let (free, free_attempt) = (t2 + 100, a2 + 100);
        let bad = |f: fn(&mut Handover)| {
            let mut h = handover(free, free_attempt, 1, &[(T0, MINUTE, 3)]);
            f(&mut h);
            store.apply(&[Change::Handover(h)])
        };
        not_found(bad(|h| h.schedule = 99), "schedule");
        refused(bad(|h| h.runs.clear()), "0 runs");
        refused(bad(|h| h.runs = vec![h.runs[0]; 9]), "9 runs");
        refused(bad(|h| h.runs[0].count = 0), "run 1 has no occurrence");
        refused(bad(|h| h.runs[0].period_ms = 0), "period of 0 ms");
        refused(
            bad(|h| h.runs.push(h.runs[0])),
            "run 2 starts before run 1 ends",
        );
        refused(
            bad(|h| h.runs[0].first_ms = u64::MAX - 10),
            "ends out of range",
        );
        refused(bad(|h| h.task = i64::MAX as u64 - 2), "task ids");
        refused(bad(|h| h.attempt = i64::MAX as u64), "attempt ids");
        refused(bad(|h| h.attempt = 0), "hand-over attempt id 0");
        refused(bad(|h| h.version = 0), "version 0");
        refused(bad(|h| h.agent = "no/slash".into()), "agent id");
        // A new hand-over may not reserve ids already stored.
        let over = handover(t + 2, free_attempt, 1, &[(T0, MINUTE, 3)]);
        refused(
            store.apply(&[Change::Handover(over)]),
            &format!("task id {}, which is stored already", t + 3),
        );
        let over = handover(free, a + 1, 1, &[(T0, MINUTE, 3)]);
        refused(
            store.apply(&[Change::Handover(over)]),
            &format!("attempt id {}", a + 3),
        );
        assert_eq!(next_ids(store), (t2 + 11, a2 + 11));
        (t2, a2)
    };
    let store = open(&path).unwrap();
    assert_eq!(
        next_ids(store.as_ref()),
        (t2 + 11, a2 + 11),
        "after a reopen"
    );
}

pub(crate) fn every_occurrence_runs_once(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    apply(store, &[put(&schedule(1, "a")), put(&schedule(2, "b"))]);
    let (t, _) = next_ids(store);

    // Two tasks for one occurrence in one batch: the whole batch is refused.
    refused(
        store.apply(&[occurrence(t, 1, T0), occurrence(t + 1, 1, T0)]),
        "every occurrence runs once",
    );
    assert!(store.task(t).unwrap().is_none(), "nothing half-written");
    apply(store, &[occurrence(t, 1, T0)]);
    refused(
        store.apply(&[new_task(t + 1, task_on("pi-1")), occurrence(t + 2, 1, T0)]),
        &format!("schedule 1 occurrence at {T0} ms has task {t} already"),
    );
    assert!(store.task(t + 1).unwrap().is_none());
    // Under another version it is still the same occurrence.
    refused(store.apply(&[occurrence_of(t + 1, 1, 2, T0)]), "runs once");
    // The same time of another schedule, and the next time, are occurrences of their own.
    apply(
        store,
        &[occurrence(t + 1, 2, T0), occurrence(t + 2, 1, T0 + HOUR)],
    );

    not_found(store.apply(&[occurrence(t + 3, 99, T0)]), "schedule");
    refused(store.apply(&[occurrence(t + 3, 0, T0)]), "schedule id 0");
    refused(store.apply(&[occurrence_of(t + 3, 1, 0, T0)]), "version 0");
    refused(
        store.apply(&[occurrence(t + 3, 1, u64::MAX)]),
        "out of range",
    );
    let both = NewTask {
        order: Some(StepRef { order: 1, step: 0 }),
        occurrence: Some(OccurrenceRef {
            schedule: 1,
            version: 1,
            at_ms: T0 + 2 * HOUR,
        }),
        ..task_on("pi-1")
    };
    refused(store.apply(&[new_task(t + 3, both)]), "both");

    // The API's reads: a schedule's occurrence tasks by id, and counts by state.
    let page = |schedule, p| task_ids(store.occurrence_tasks(schedule, p).unwrap());
    assert_eq!(page(1, Page::ALL), [t, t + 2]);
    assert_eq!(page(2, Page::ALL), [t + 1]);
    assert_eq!(page(1, Page::first(1)), [t]);
    assert_eq!(page(1, Page::after(t, 5)), [t + 2]);
    assert!(page(99, Page::ALL).is_empty());
    let latest = |schedule, n| task_ids(store.latest_occurrence_tasks(schedule, n).unwrap());
    assert_eq!(latest(1, 10), [t + 2, t], "newest first");
    assert_eq!(latest(1, 1), [t + 2]);
    assert!(latest(99, 10).is_empty());
    apply(store, &[succeeded(t), new_task(t + 3, task_on("pi-1"))]);
    assert_eq!(
        store.occurrence_counts().unwrap(),
        [(TaskState::Pending, 2), (TaskState::Succeeded, 1)],
        "tasks of no occurrence left out"
    );
}

pub(crate) fn load_gives_the_last_occurrences(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let b = schedule(2, "b");
    apply(
        store,
        &[put(&schedule(1, "a")), put(&b), put(&schedule(3, "c"))],
    );
    let (t, _) = next_ids(store);
    // An earlier occurrence stored later (an agent reporting late) does not lower it.
    apply(
        store,
        &[
            occurrence(t, 1, T0 + 2 * MINUTE),
            occurrence(t + 1, 1, T0),
            occurrence(t + 2, 2, T0 + 5 * MINUTE),
        ],
    );
    let expected = [(1, T0 + 2 * MINUTE), (2, T0 + 5 * MINUTE)];
    assert_eq!(store.load().unwrap().last_occurrences, expected);

    // Kept when the tasks are pruned; a deleted schedule is left out.
    apply(store, &[succeeded(t), succeeded(t + 1), succeeded(t + 2)]);
    assert_eq!(store.prune_finished(LATER, 100).unwrap().tasks, 3);
    assert!(store.occurrence_tasks(1, Page::ALL).unwrap().is_empty());
    assert_eq!(store.load().unwrap().last_occurrences, expected);
    apply(store, &[put(&Schedule { deleted: true, ..b })]);
    assert_eq!(store.load().unwrap().last_occurrences, [expected[0]]);
}

pub(crate) fn retention_prunes_occurrences_ended_handovers_and_deleted_schedules(open: Open) {
    let (_dir, path) = db();
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let (live, gone, busy) = (
        schedule(1, "live"),
        schedule(2, "gone"),
        schedule(3, "busy"),
    );
    apply(store, &[put(&live), put(&gone), put(&busy)]);
    let (t, a) = next_ids(store);
    // `busy` has an open occurrence task; `live` an ended and a held hand-over; `gone` an ended
    // one, the highest ids reserved.
    let ended = handover(t + 1, a, 1, &[(T0, MINUTE, 3)]);
    let held = handover(t + 5, a + 4, 1, &[(T0 + HOUR, MINUTE, 2)]);
    let last = handover(t + 8, a + 7, 2, &[(T0, MINUTE, 1)]);
    apply(
        store,
        &[
            occurrence(t, 3, T0),
            in_state(&ended, HandoverState::Ended),
            in_state(&held, HandoverState::Held),
            in_state(&last, HandoverState::Ended),
            occurrence(t + 2, 1, T0),
            new_attempt(a + 1, t + 2, "pi-1"),
            succeeded(t + 2),
            occurrence(t + 9, 2, T0),
            new_attempt(a + 8, t + 9, "pi-1"),
            succeeded(t + 9),
            put(&Schedule {
                deleted: true,
                ..gone.clone()
            }),
            put(&Schedule {
                deleted: true,
                ..busy.clone()
            }),
        ],
    );
    assert_eq!(next_ids(store), (t + 10, a + 9));
    assert_eq!(store.prune_finished(1, 100).unwrap(), Pruned::default());

    // One at a time: the limit bounds tasks and hand-overs each.
    let one = store.prune_finished(LATER, 1).unwrap();
    assert_eq!(
        (one.tasks, one.handovers, one.schedules, one.full),
        (1, 1, 0, true)
    );
    // `gone` goes once its last task and hand-over went, in the same batch.
    let two = store.prune_finished(LATER, 100).unwrap();
    assert_eq!(
        (two.tasks, two.handovers, two.schedules, two.full),
        (1, 1, 1, false)
    );
    assert!(store.schedule_by_id(2).unwrap().is_none());
    assert!(store.task(t + 9).unwrap().is_none());
    assert!(store.attempts(t + 9).unwrap().is_empty());
    let kept: Vec<u64> = store.handovers(1).unwrap().iter().map(|h| h.task).collect();
    assert_eq!(kept, [t + 5], "the held one stays");
    assert!(store.handovers(2).unwrap().is_empty());
    assert!(
        store.schedule_by_id(3).unwrap().unwrap().deleted,
        "its task is open"
    );
    assert_eq!(store.schedule("live").unwrap().unwrap().id, 1);
    assert_eq!(
        next_ids(store),
        (t + 10, a + 9),
        "the ids a pruned hand-over reserved stay reserved"
    );

    // Once its task finished, `busy` goes too; schedule ids are not handed out again.
    apply(store, &[succeeded(t)]);
    let three = store.prune_finished(LATER, 100).unwrap();
    assert_eq!((three.tasks, three.handovers, three.schedules), (1, 0, 1));
    assert_eq!(ids(store.schedules(Page::ALL).unwrap()), [1]);
    let reopened = open(&path).unwrap();
    let snapshot = reopened.load().unwrap();
    assert_eq!(snapshot.next_schedule, 4);
    assert_eq!((snapshot.next_task, snapshot.next_attempt), (t + 10, a + 9));
}

pub(crate) fn a_corrupt_schedule_is_an_error_not_a_panic(open: Open, raw: Raw) {
    let (_dir, path) = db();
    {
        let store = open(&path).unwrap();
        let (t, a) = next_ids(store.as_ref());
        apply(
            store.as_ref(),
            &[
                put(&schedule(1, "a")),
                Change::Handover(handover(t, a, 1, &[(T0, MINUTE, 2)])),
            ],
        );
    }
    // Valid JSON that is no calendar, and runs that are no runs.
    raw(
        &path,
        r#"UPDATE schedules SET calendar = '{"cron": 5}';
           UPDATE handovers SET runs = '[{"first_ms": "soon"}]';"#,
    );
    let store = open(&path).unwrap();
    let store = store.as_ref();
    let corrupt = |what: &str, r: Result<(), StoreError>| match r {
        Err(StoreError::Corrupt(why)) => eprintln!("{what}: {why}"),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    };
    corrupt("schedules", store.schedules(Page::ALL).map(drop));
    corrupt("schedule", store.schedule("a").map(drop));
    corrupt("schedule_by_id", store.schedule_by_id(1).map(drop));
    corrupt("handovers", store.handovers(1).map(drop));
    corrupt("load", store.load().map(drop));
}

/// A database at version 7 (`migrations` are the backend's) with a task and an attempt opens
/// upgraded, keeping them; schedules then work in it.
pub(crate) fn a_version_7_database_keeps_its_rows(open: Open, raw: Raw, migrations: &[&str]) {
    let (_dir, path) = db();
    let mut sql = String::from(
        "CREATE TABLE schema_version (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT);
         INSERT INTO schema_version VALUES (1, 7);",
    );
    for m in &migrations[..7] {
        sql.push_str(m);
    }
    sql.push_str(
        r#"INSERT INTO tasks (id, target_kind, target, argv, env, cwd, on_disconnect,
               heartbeat_period_ms, heartbeat_timeout_ms, grace_ms, max_run_ms, output_cap,
               retries, state, created_ms, updated_ms)
           VALUES (7, 'agent', 'pi-1', '["/bin/true"]', '[]', '', 'kill', 1000, 3000, 1000,
               60000, 1024, 0, 'pending', 1, 1);
           INSERT INTO attempts (id, task_id, agent_id, state, created_ms)
               VALUES (9, 7, 'pi-1', 'sent', 1);"#,
    );
    raw(&path, &sql);

    let store = open(&path).unwrap();
    let store = store.as_ref();
    let task = store.task(7).unwrap().unwrap();
    assert_eq!((task.argv.len(), task.occurrence), (1, None));
    assert_eq!(store.attempts(7).unwrap()[0].id, 9);
    let snapshot = store.load().unwrap();
    assert_eq!((snapshot.next_task, snapshot.next_attempt), (8, 10));
    assert_eq!(snapshot.next_schedule, 1);
    assert!(snapshot.schedules.is_empty() && snapshot.handovers.is_empty());
    assert!(store.occurrence_counts().unwrap().is_empty());

    apply(
        store,
        &[
            put(&schedule(1, "a")),
            Change::Handover(handover(8, 10, 1, &[(T0, MINUTE, 2)])),
            occurrence(9, 1, T0),
        ],
    );
    assert_eq!(next_ids(store), (11, 13));
    assert_eq!(store.load().unwrap().last_occurrences, [(1, T0)]);
}
