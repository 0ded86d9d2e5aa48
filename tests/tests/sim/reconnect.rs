//! Reconnect: heartbeats both ways with a timeout. A reconnect inside the timeout keeps a
//! `kill` task, which runs exactly once although start commands arrive repeatedly (master
//! retransmission and QoS 1 redelivery); a loss beyond the timeout kills it; long-outage
//! settings (period 120 s, timeout 7200 s) carry a task through a one-hour cut.

use tether_core::message::{Exit, KillCause, TaskRef};
use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_tests::sim::Fault;
use tether_tests::sim::invariants::TICK;
use tether_tests::sim::procs::Program;
use tether_tests::sim::world::{Step, Who, World, WorldConfig, policy};

const REPLAY: &str = "cargo test -p tether-tests --test sim reconnect:: -- --nocapture";

fn s(x: u64) -> Instant {
    Instant::from_secs(x)
}

fn cut(w: &mut World, from: Instant, to: Instant) {
    w.schedule(from, Step::Fault(Who::Agent(0), Fault::BlackHole));
    w.schedule(to, Step::Fault(Who::Agent(0), Fault::Up));
}

fn finished_normally(w: &World, task: TaskRef) {
    let view = w
        .master()
        .attempt(task)
        .expect("the master knows the attempt");
    assert!(view.accepted && view.started.is_some());
    assert_eq!(view.finished, Some((Exit::Code(0), None)));
    assert!(view.terminating.is_empty());
    assert!(w.signals(task).is_empty(), "{:?}", w.signals(task));
    assert_eq!(w.spawns(task).len(), 1);
}

#[test]
fn short_outage_keeps_the_task() {
    let mut w = World::new(WorldConfig::new(1, 1).replay(REPLAY));
    let (period, timeout) = (Duration::from_secs(10), Duration::from_secs(60));
    let program = Program {
        outputs: 4,
        ..Program::new(Duration::from_secs(300))
    };
    // The order goes out while the agent is cut off: it is retransmitted every period and the
    // broker queues every copy for the agent's session.
    cut(&mut w, s(20), s(50));
    let task = w.submit(
        s(25),
        0,
        policy(OnDisconnect::Kill, period, timeout),
        program,
        None,
    );
    cut(&mut w, s(100), s(140));
    cut(&mut w, s(200), s(235));
    w.run_until(s(400));
    w.heal(Duration::from_secs(600));

    finished_normally(&w, task);
    let agent = w.agent(0).unwrap();
    assert!(
        agent.stats().duplicate_starts >= 1,
        "the start arrived more than once: {:?}",
        agent.stats()
    );
    assert!(w.master().stats().start_sends >= 2);
    assert_eq!(w.restarts(0), 0);
}

#[test]
fn long_outage_kills_the_task() {
    let mut w = World::new(WorldConfig::new(2, 1).replay(REPLAY));
    let (period, timeout) = (Duration::from_secs(10), Duration::from_secs(60));
    let task = w.submit(
        s(5),
        0,
        policy(OnDisconnect::Kill, period, timeout),
        Program::new(Duration::from_secs(600)),
        None,
    );
    cut(&mut w, s(100), s(280));
    w.run_until(s(400));
    w.heal(Duration::from_secs(600));

    let sig = w.signals(task);
    assert_eq!(sig.len(), 1, "SIGTERM was enough: {sig:?}");
    assert_eq!(sig[0].cause, Some(KillCause::MasterLost));
    let due = sig[0].last_contact + timeout;
    assert!(sig[0].at >= due && sig[0].at <= due + TICK);
    assert!(
        sig[0].at < s(100) + timeout,
        "the last contact came before the cut"
    );
    let view = w.master().attempt(task).unwrap();
    assert_eq!(view.terminating, vec![KillCause::MasterLost]);
    assert_eq!(
        view.finished,
        Some((Exit::Signal(15), Some(KillCause::MasterLost)))
    );
    assert_eq!(w.spawns(task).len(), 1, "never started again");
}

/// One hour without the master, with the long-outage settings (period 120 s, timeout 7200 s)
/// and with the defaults.
fn one_hour_cut(seed: u64, period_s: u64, timeout_s: u64) -> (World, TaskRef) {
    let mut config = WorldConfig::new(seed, 1).replay(REPLAY);
    config.master_period = Duration::from_secs(period_s);
    let mut w = World::new(config);
    let p = policy(
        OnDisconnect::Kill,
        Duration::from_secs(period_s),
        Duration::from_secs(timeout_s),
    );
    let program = Program {
        outputs: 6,
        ..Program::new(Duration::from_secs(3 * 3_600))
    };
    let task = w.submit(s(30), 0, p, program, None);
    cut(&mut w, s(600), s(600 + 3_600));
    w.run_until(s(4 * 3_600));
    w.heal(Duration::from_secs(3_600));
    (w, task)
}

#[test]
fn long_settings_ride_out_a_long_outage() {
    let (w, task) = one_hour_cut(3, 120, 7_200);
    finished_normally(&w, task);
    let view = w.master().attempt(task).unwrap();
    assert!(view.output_bytes > 0, "its output was replayed");
}

#[test]
fn default_settings_do_not_survive_the_same_cut() {
    let (w, task) = one_hour_cut(4, 10, 60);
    let view = w.master().attempt(task).unwrap();
    assert_eq!(view.terminating, vec![KillCause::MasterLost]);
    assert_eq!(w.spawns(task).len(), 1);
}
