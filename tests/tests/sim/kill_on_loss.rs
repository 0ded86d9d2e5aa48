//! Kill on loss (the JS-1523 scenario): an agent kills its `kill` task when the master's heartbeats stop, so that a
//! restarted master can never see the same task run twice: SIGTERM at the heartbeat timeout
//! (counted from the last contact), SIGKILL after the grace time if the task ignores SIGTERM.
//! A `continue` task beside it runs on.

use tether_core::message::{Exit, KillCause};
use tether_core::policy::OnDisconnect;
use tether_core::{Duration, Instant};
use tether_tests::sim::procs::{OnTerm, Program};
use tether_tests::sim::world::{Step, Who, World, WorldConfig, policy};
use tether_tests::sim::{Fault, invariants::TICK};

const REPLAY: &str = "cargo test -p tether-tests --test sim kill_on_loss:: -- --nocapture";

fn s(x: u64) -> Instant {
    Instant::from_secs(x)
}

/// Master silent from `silent_at` (by `silence`); checks the kill task's signals.
fn kill_on_loss(seed: u64, silence: Step) {
    let mut w = World::new(WorldConfig::new(seed, 1).replay(REPLAY));
    let (period, timeout) = (Duration::from_secs(10), Duration::from_secs(20));
    let stubborn = Program {
        on_term: OnTerm::Ignore,
        ..Program::new(Duration::from_secs(3_600))
    };
    let kill = w.submit(
        s(5),
        0,
        policy(OnDisconnect::Kill, period, timeout),
        stubborn,
        None,
    );
    let cont = w.submit(
        s(5),
        0,
        policy(OnDisconnect::Continue, period, timeout),
        Program::new(Duration::from_secs(600)),
        None,
    );
    w.schedule(s(60), silence);
    w.run_until(s(59));
    let contact_before = w.agent(0).unwrap().last_contact();
    w.run_until(s(300));

    let sig = w.signals(kill);
    assert_eq!(sig.len(), 2, "SIGTERM then SIGKILL: {sig:?}");
    let (term, killsig) = (sig[0], sig[1]);
    assert_eq!(term.cause, Some(KillCause::MasterLost));
    // The last contact is the last heartbeat before the silence.
    assert!(term.last_contact >= contact_before && term.last_contact <= s(60));
    let due = term.last_contact + timeout;
    assert!(
        term.at >= due && term.at <= due + TICK,
        "SIGTERM at {:?}, due {due:?}",
        term.at
    );
    let grace = Duration::from_secs(5);
    assert!(killsig.at >= term.at + grace && killsig.at <= term.at + grace + TICK);
    assert!(
        w.signals(cont).is_empty(),
        "the continue task is never signalled"
    );
    assert!(w.procs(0).get(kill).is_none(), "killed");
    assert!(w.procs(0).get(cont).is_some(), "still running");

    // The master returns and learns the whole story.
    w.heal(Duration::from_secs(900));
    let view = w.master().attempt(kill).unwrap();
    assert_eq!(view.terminating, vec![KillCause::MasterLost]);
    assert_eq!(
        view.finished,
        Some((Exit::Signal(9), Some(KillCause::MasterLost)))
    );
    assert_eq!(w.spawns(kill).len(), 1);
    let delivered = w.check_delivered();
    w.expect(delivered);
}

#[test]
fn master_crash_kills_the_kill_task_at_timeout_then_sigkill_after_grace() {
    kill_on_loss(1523, Step::MasterDown);
}

#[test]
fn agent_cut_off_kills_the_kill_task_at_timeout_then_sigkill_after_grace() {
    kill_on_loss(1524, Step::Fault(Who::Agent(0), Fault::BlackHole));
}
