//! Broker fail-over: a task keeps working while its agent cannot reach a broker, and its result reaches
//! the master once a broker is back. The "other broker" is a restart that loses every session,
//! queued message and retained presence, with a stretch in which no broker answers at all.

use tether_core::message::Exit;
use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_tests::sim::Fault;
use tether_tests::sim::procs::Program;
use tether_tests::sim::world::{Step, Who, World, WorldConfig, policy};

const REPLAY: &str = "cargo test -p tether-tests --test sim broker_failover:: -- --nocapture";

fn s(x: u64) -> Instant {
    Instant::from_secs(x)
}

#[test]
fn task_survives_broker_switches_and_its_result_arrives() {
    let mut w = World::new(WorldConfig::new(4, 2).replay(REPLAY));
    let (period, timeout) = (Duration::from_secs(10), Duration::from_secs(60));
    let program = Program {
        outputs: 5,
        ..Program::new(Duration::from_secs(240))
    };
    let kill = w.submit(
        s(5),
        0,
        policy(OnDisconnect::Kill, period, timeout),
        program,
        None,
    );
    let cont = w.submit(
        s(5),
        1,
        policy(OnDisconnect::Continue, period, timeout),
        program,
        None,
    );
    // The first broker dies; for 25 s nothing answers; then a fresh, empty broker.
    w.schedule(s(60), Step::RestartBroker);
    w.schedule(s(60), Step::Fault(Who::Everyone, Fault::Reset));
    w.schedule(s(85), Step::Fault(Who::Everyone, Fault::Up));
    // And once more without a pause, while results are being sent.
    w.schedule(s(245), Step::RestartBroker);
    w.run_until(s(400));
    w.heal(Duration::from_secs(600));

    for task in [kill, cont] {
        assert!(w.signals(task).is_empty(), "{:?}", w.signals(task));
        assert_eq!(w.spawns(task).len(), 1);
        let view = w.master().attempt(task).unwrap();
        assert_eq!(view.finished, Some((Exit::Code(0), None)));
        assert!(view.output_bytes > 0);
    }
    assert!(w.net().broker().stats().restarts == 2);
    // The master's retained presence was restored on the new broker.
    let presence = w.net().broker().retained("tether/master/presence").unwrap();
    assert!(presence.payload.starts_with(b"online"));
}
