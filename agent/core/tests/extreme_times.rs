//! Time values at the edges of `u64` (start times, policy durations, the wall clock) are held
//! or saturated, never a panic: a `Duration` built from them used to overflow.

mod rig;

use rig::*;
use tether_core::message::{CommandBody, EventKind};
use tether_core::policy::OnDisconnect;

const EXTREMES: [u64; 4] = [0, u64::MAX / 2, u64::MAX / 2 + 1, u64::MAX];

#[test]
fn extreme_start_times_never_panic() {
    for start in EXTREMES {
        let mut rig = Rig::new();
        let mut s = spec(1, OnDisconnect::Continue);
        s.start_at_unix_ms = Some(start);
        rig.command(t(0), CommandBody::Start(s.clone()));
        rig.run_until(t(10_000_000));
        let spawned = spawns(&rig.take_actions());
        if start == 0 {
            // Long past: starts at once.
            assert_eq!(spawned, vec![s.task], "start {start}");
        } else {
            // Millennia ahead: held, accepted, and still cancellable.
            assert!(spawned.is_empty(), "start {start}");
            assert!(rig.agent.poll_timeout().is_some());
            rig.command(t(10_000_001), CommandBody::Kill { task: s.task });
        }
        assert!(
            rig.events()
                .iter()
                .any(|e| matches!(e, EventKind::Accepted { .. })),
            "start {start}: {:?}",
            rig.events()
        );
    }
}

#[test]
fn extreme_policy_durations_never_panic() {
    for ms in EXTREMES.into_iter().filter(|&ms| ms > 0) {
        let mut rig = Rig::new();
        rig.master_heartbeat(t(0));
        let mut s = spec(1, OnDisconnect::Kill);
        s.policy.heartbeat_period_ms = ms / 2 + 1;
        s.policy.heartbeat_timeout_ms = s.policy.heartbeat_period_ms.saturating_mul(2);
        s.policy.grace_ms = ms;
        s.policy.max_run_ms = ms;
        rig.command(t(1), CommandBody::Start(s.clone()));
        let _ = rig.agent.heartbeat_period();
        rig.run_until(t(10_000_000));
        rig.command(t(10_000_001), CommandBody::Kill { task: s.task });
        rig.run_until(t(20_000_000));
        let _ = rig.agent.poll_timeout();
    }
}

#[test]
fn extreme_wall_clocks_never_panic() {
    for wall in EXTREMES {
        for start in EXTREMES {
            let mut rig = Rig::new();
            rig.agent.handle_wall_clock(t(5), wall);
            let mut s = spec(1, OnDisconnect::Continue);
            s.start_at_unix_ms = Some(start);
            rig.command(t(5), CommandBody::Start(s));
            rig.run_until(t(1_000_000));
            let _ = rig.agent.unix_ms(t(1_000_000));
            let _ = rig.agent.poll_timeout();
        }
    }
}
