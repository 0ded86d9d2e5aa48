//! The real master core crashes (kill -9: the core is dropped, its SQLite store stays) and is
//! rebuilt with `Master::restore` while tasks run and finish. Nothing is lost, nothing decided
//! twice, no attempt started twice, and every invariant holds at every step.
//!
//! ```text
//! cargo test -p tether-tests --test sim master_down::system:: -- --nocapture
//! ```

use tether_core::message::{Exit, KillCause};
use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_master::model::{ClusterMode, Outcome, Target, TaskState};
use tether_tests::sim::procs::Program;
use tether_tests::sim::system::{System, overrides};
use tether_tests::sim::world::{Step, World, WorldConfig, policy};

const REPLAY: &str = "cargo test -p tether-tests --test sim master_down::system:: -- --nocapture";

fn at(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn world(seed: u64) -> System {
    let mut w = World::system(WorldConfig::new(seed, 2).replay(REPLAY));
    w.put_cluster(at(1), "pis", ClusterMode::RoundRobin, &[0, 1]);
    w
}

fn cluster() -> Target {
    Target::Cluster("pis".into())
}

/// Down for 30 s, shorter than the tasks' 60 s timeout: the `kill` tasks run on, every task
/// finishes (some while the master is down) and each succeeds once, on its one attempt.
#[test]
fn a_short_master_crash_loses_nothing() {
    let mut w = world(21);
    let kill = overrides(&policy(OnDisconnect::Kill, secs(10), secs(60)));
    let cont = overrides(&policy(OnDisconnect::Continue, secs(10), secs(60)));
    let tasks = [
        w.submit(at(2), cluster(), kill, Program::new(secs(20)), None),
        w.submit(at(3), cluster(), cont, Program::new(secs(25)), None),
        w.submit(at(4), cluster(), kill, Program::new(secs(50)), None),
        w.submit(at(5), cluster(), cont, Program::new(secs(60)), None),
        // Submitted while the master is down: taken when it is back.
        w.submit(at(30), cluster(), kill, Program::new(secs(5)), None),
    ];
    w.schedule(at(15), Step::MasterDown);
    w.schedule(at(45), Step::MasterUp);
    w.run_until(at(180));

    let m = w.master();
    assert_eq!(m.stats().crashes, 1);
    assert_eq!(m.stats().starts, 2);
    for &t in &tasks {
        assert_eq!(
            m.outcome(t).map(|o| o.0),
            Some(TaskState::Succeeded),
            "task #{t}"
        );
        assert_eq!(m.attempts(t).len(), 1, "task #{t} has one attempt");
    }
    for i in 0..2 {
        assert_eq!(w.restarts(i), 0);
    }
    w.heal(secs(300));
    w.expect(w.check_delivered());
    w.expect(w.master().check_store());
}

/// Down for 90 s, longer than the `kill` task's 20 s timeout: its agent kills it for the lost
/// master and the restarted master records that result (failed, killed for a lost master),
/// never marking it lost before; the `continue` task runs on and succeeds. A second crash
/// right after the restart changes nothing decided.
#[test]
fn a_long_master_crash_kills_kill_tasks_and_keeps_continue_tasks() {
    let mut w = world(22);
    let kill = overrides(&policy(OnDisconnect::Kill, secs(5), secs(20)));
    let cont = overrides(&policy(OnDisconnect::Continue, secs(5), secs(20)));
    let killed = w.submit(at(2), cluster(), kill, Program::new(secs(300)), None);
    let survives = w.submit(at(3), cluster(), cont, Program::new(secs(60)), None);
    w.schedule(at(10), Step::MasterDown);
    w.schedule(at(100), Step::MasterUp);
    w.schedule(at(101), Step::MasterDown);
    w.schedule(at(103), Step::MasterUp);
    w.run_until(at(200));

    let m = w.master();
    let (state, outcome) = m.outcome(killed).expect("decided");
    assert_eq!(state, TaskState::Failed);
    assert!(
        matches!(
            outcome,
            Some(Outcome::Exited {
                cause: Some(KillCause::MasterLost),
                ..
            })
        ),
        "{outcome:?}"
    );
    let (state, outcome) = m.outcome(survives).expect("decided");
    assert_eq!(state, TaskState::Succeeded);
    assert!(
        matches!(
            outcome,
            Some(Outcome::Exited {
                exit: Exit::Code(0),
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(m.stats().crashes, 2);
    w.heal(secs(300));
    w.expect(w.check_delivered());
    w.expect(w.master().check_store());
}
