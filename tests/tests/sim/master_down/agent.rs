//! Master down, agent side: autonomous agents. The master hands out orders for the next 24
//! hours in advance (16, one every 90 minutes: the agent holds at most 16 attempts, and a 17th
//! is refused explicitly), then is down for 24 hours. Every order starts on time (within the
//! journal's fsync delay), every result is journaled, and when the master returns everything
//! is replayed, acknowledged, and the journal shrinks back to a snapshot.

use tether_core::message::{Exit, RejectReason};
use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_tests::sim::invariants::TICK;
use tether_tests::sim::procs::Program;
use tether_tests::sim::world::{Step, World, WorldConfig, policy};

const REPLAY: &str = "cargo test -p tether-tests --test sim master_down::agent:: -- --nocapture";
const HOUR: u64 = 3_600;
const EVERY: u64 = 5_400;

fn s(x: u64) -> Instant {
    Instant::from_secs(x)
}

#[test]
fn orders_run_while_master_down() {
    let mut w = World::new(WorldConfig::new(2, 1).replay(REPLAY));
    let p = policy(
        OnDisconnect::Continue,
        Duration::from_secs(10),
        Duration::from_secs(60),
    );
    let program = Program {
        outputs: 3,
        ..Program::new(Duration::from_secs(600))
    };
    let orders: Vec<_> = (1..=16)
        .map(|k| w.submit(s(60), 0, p, program, Some(s(k * EVERY))))
        .collect();
    let extra = w.submit(s(61), 0, p, program, Some(s(24 * HOUR)));
    w.schedule(s(300), Step::MasterDown);
    w.schedule(s(24 * HOUR + 1_800), Step::MasterUp);
    w.run_until(s(24 * HOUR + 1_799));

    // The master saw only the acceptances; everything else waits in the journal.
    for (k, &task) in (1..=16u64).zip(&orders) {
        let spawns = w.spawns(task);
        assert_eq!(spawns.len(), 1, "order {k}: {spawns:?}");
        let at = spawns[0].1;
        let bound = s(k * EVERY) + w.disk(0).max_delay() + TICK;
        assert!(
            at >= s(k * EVERY) && at <= bound,
            "order {k} spawned at {at:?}"
        );
        let view = w.master().attempt(task).unwrap();
        assert!(view.accepted && view.finished.is_none());
    }
    let refused = w.master().attempt(extra).unwrap();
    assert_eq!(refused.rejected, Some(RejectReason::Full));
    assert!(w.spawns(extra).is_empty());
    assert!(w.procs(0).is_empty(), "all ran to their end");
    let backlog = w.unacked(0);
    assert!(backlog >= 16 * 5, "results wait in the journal: {backlog}");
    let journal_before = w.disk(0).len();

    w.heal(Duration::from_secs(1_800));
    for &task in &orders {
        let view = w.master().attempt(task).unwrap();
        assert_eq!(view.finished, Some((Exit::Code(0), None)));
        assert!(view.output_bytes > 0);
    }
    let agent = w.agent(0).unwrap();
    assert_eq!(w.unacked(0), 0, "the unacknowledged journal is empty");
    assert_eq!(agent.acked_seq(), agent.last_seq());
    // Compaction is the core's choice (by the journal's size, tested in tether-core): a
    // 16 MiB journal holding a few kilobytes is left as it is, acknowledged prefix and all.
    assert!(w.disk(0).len() >= journal_before);
}
