//! Clusters with the real master core in the simulation: round-robin and fixed-priority order,
//! fail-over when a member's agent crashes (its will arrives), and a member stopped normally
//! (drained: its task succeeds, nothing is failed). Every invariant, agent's and master's, is
//! checked at every step.
//!
//! ```text
//! cargo test -p tether-tests --test sim clusters:: -- --nocapture
//! ```

use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_master::model::{ClusterMode, Outcome, Target, TaskState};
use tether_tests::sim::procs::Program;
use tether_tests::sim::system::{System, overrides};
use tether_tests::sim::world::{Step, World, WorldConfig, policy};

const REPLAY: &str = "cargo test -p tether-tests --test sim clusters:: -- --nocapture";

fn at(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cluster(name: &str) -> Target {
    Target::Cluster(name.into())
}

fn world(seed: u64, agents: usize) -> System {
    World::system(WorldConfig::new(seed, agents).replay(REPLAY))
}

/// `kill` tasks, heartbeat 10 s (the master's period), timeout 30 s.
fn kill_policy() -> tether_master::core::PolicyOverrides {
    overrides(&policy(OnDisconnect::Kill, secs(10), secs(30)))
}

#[test]
fn round_robin_gives_each_next_task_to_the_next_member() {
    let mut w = world(11, 3);
    w.put_cluster(at(1), "pis", ClusterMode::RoundRobin, &[0, 1, 2]);
    let tasks: Vec<usize> = (0..7)
        .map(|k| {
            w.submit(
                at(2 + k),
                cluster("pis"),
                kill_policy(),
                Program::new(secs(3)),
                None,
            )
        })
        .collect();
    w.run_until(at(60));
    assert_eq!(
        w.placements(&tasks),
        vec![
            vec![0],
            vec![1],
            vec![2],
            vec![0],
            vec![1],
            vec![2],
            vec![0]
        ]
    );
    for &t in &tasks {
        assert_eq!(
            w.master().outcome(t).map(|o| o.0),
            Some(TaskState::Succeeded)
        );
    }
    w.heal(secs(300));
    w.expect(w.check_delivered());
    w.expect(w.master().check_store());
}

/// Fixed priority: the first available member always. pi-0 crashes with a `kill` task running
/// (will at once): the next task goes to pi-1 and pi-0's task is failed after its timeout,
/// not before pi-0's death. pi-1 is then stopped normally while its task runs: it drains, the
/// task succeeds, and the next task goes to pi-2. pi-0 restarted is first again.
#[test]
fn failover_after_a_crash_and_after_a_normal_stop() {
    let mut w = world(12, 3);
    w.put_cluster(at(1), "pis", ClusterMode::FixedPriority, &[0, 1, 2]);
    let long = Program::new(secs(600));
    let first = w.submit(at(2), cluster("pis"), kill_policy(), long, None);
    let second = w.submit(
        at(3),
        cluster("pis"),
        kill_policy(),
        Program::new(secs(2)),
        None,
    );
    w.schedule(at(10), Step::CrashAgent(0));
    let failover = w.submit(
        at(11),
        cluster("pis"),
        kill_policy(),
        Program::new(secs(25)),
        None,
    );
    w.schedule(at(20), Step::StopAgent(1, secs(120)));
    let after_stop = w.submit(
        at(60),
        cluster("pis"),
        kill_policy(),
        Program::new(secs(2)),
        None,
    );
    w.schedule(at(70), Step::RestartAgent(0));
    let back = w.submit(
        at(80),
        cluster("pis"),
        kill_policy(),
        Program::new(secs(2)),
        None,
    );
    w.run_until(at(150));

    assert_eq!(
        w.placements(&[first, second, failover, after_stop, back]),
        vec![vec![0], vec![0], vec![1], vec![2], vec![0]]
    );
    let m = w.master();
    let (state, outcome) = m
        .outcome(first)
        .expect("the crashed member's task is decided");
    assert_eq!(state, TaskState::Failed);
    assert!(
        matches!(outcome, Some(Outcome::AgentLost { .. })),
        "{outcome:?}"
    );
    for t in [second, failover, after_stop, back] {
        assert_eq!(
            m.outcome(t).map(|o| o.0),
            Some(TaskState::Succeeded),
            "task #{t}"
        );
    }
    assert!(
        m.stats().lost_marks >= 1,
        "the kill-on-loss rule was exercised"
    );
    assert!(w.agent(1).is_none(), "pi-1 stopped");
    w.schedule(w.now(), Step::RestartAgent(1));
    w.heal(secs(300));
    w.expect(w.check_delivered());
    w.expect(w.master().check_store());
}

/// A restarted agent learns the master's 2 s period from its heartbeats and heartbeats at that
/// period from then on, not at the 10 s it armed at connect; otherwise the master (silence =
/// 2 periods + 2 s = 6 s) would mark it lost and fixed priority would skip the healthy first
/// member.
#[test]
fn a_restarted_member_heartbeats_at_the_master_period() {
    let mut config = WorldConfig::new(12, 2).replay(REPLAY);
    config.master_period = secs(2);
    let mut w = World::system(config);
    w.put_cluster(at(1), "pis", ClusterMode::FixedPriority, &[0, 1]);
    w.schedule(at(10), Step::CrashAgent(0));
    w.schedule(at(20), Step::RestartAgent(0));
    let back = w.submit(
        at(28),
        cluster("pis"),
        kill_policy(),
        Program::new(secs(2)),
        None,
    );
    w.run_until(at(60));
    assert_eq!(w.placements(&[back]), vec![vec![0]]);
}
