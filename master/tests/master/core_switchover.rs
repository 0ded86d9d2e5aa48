//! Switch-over: an operator disables an agent. It takes nothing new (its clusters use their
//! next member, a task sent to it directly waits), what it runs finishes, nothing of it counts
//! as a failure, and the switch survives a master restart.

use tether_core::message::Exit;
use tether_master::core::{Config, Master, RequestError};
use tether_master::model::{ClusterMode, TaskState};
use tether_master::store::Store;

use crate::played::*;

#[test]
fn a_disabled_agent_finishes_its_task_and_takes_nothing_new() {
    let mut h = rig();
    h.online("a", 1);
    h.online("b", 1);
    cluster(&mut h, "fp", ClusterMode::FixedPriority, &["a", "b"]);
    let running = h.submit(to_cluster("fp"));
    let t = h.starts("a", 0)[0];
    h.accept_and_start("a", 1, t);

    assert!(h.m.set_agent_disabled(h.now, "a", true).unwrap());
    h.drain();
    assert!(!h.m.set_agent_disabled(h.now, "a", true).unwrap(), "again");
    assert!(h.stored_agent("a").disabled);
    let view = |h: &crate::rig::Rig, id: &str| {
        h.m.agent_views(h.now)
            .into_iter()
            .find(|v| v.id == id)
            .unwrap()
    };
    assert!(view(&h, "a").disabled && !view(&h, "a").available);

    // The cluster's next task goes to b; one sent to a directly waits.
    let mark = h.out.len();
    let next = h.submit(to_cluster("fp"));
    let direct = h.submit(to_agent("a", &["true"]));
    assert!(h.starts("a", mark).is_empty());
    assert_eq!(h.starts("b", mark).len(), 1);
    assert_eq!(h.task_state(next), TaskState::Dispatched);
    assert_eq!(h.task_state(direct), TaskState::Pending);

    // What a runs goes on and ends as it ends: no kill, no failure.
    h.secs(30);
    h.heartbeat("a", 1, 2, &[t]);
    assert!(h.kills("a", mark).is_empty());
    h.finish("a", 3, t, Exit::Code(0));
    assert_eq!(h.task_state(running), TaskState::Succeeded);
    assert_eq!(h.task_state(direct), TaskState::Pending);

    // Enabled again: the waiting task goes at once.
    let mark = h.out.len();
    assert!(h.m.set_agent_disabled(h.now, "a", false).unwrap());
    h.drain();
    assert_eq!(h.starts("a", mark).len(), 1);
    assert!(!h.stored_agent("a").disabled);

    // Unknown agents and bad names are refused.
    assert!(matches!(
        h.m.set_agent_disabled(h.now, "ghost", true),
        Err(RequestError::UnknownAgent(_))
    ));
    assert!(matches!(
        h.m.set_agent_disabled(h.now, "no/such", true),
        Err(RequestError::InvalidName { .. })
    ));
}

#[test]
fn the_switch_survives_a_restart_and_covers_provisioned_agents() {
    let mut h = rig();
    h.online("a", 1);
    // Known only by its key: it may be switched over before it first connects.
    h.key("never-seen");
    assert!(h.m.set_agent_disabled(h.now, "never-seen", true).unwrap());
    assert!(h.m.set_agent_disabled(h.now, "a", true).unwrap());
    h.drain();

    let mut config = Config::new(P, 0xabce, master_key());
    config.heartbeat_period = tether_core::Duration::from_secs(10);
    let restored = Master::restore(config, h.store.load().unwrap(), h.now).unwrap();
    let disabled: Vec<String> = restored
        .agent_views(h.now)
        .into_iter()
        .filter(|v| v.disabled)
        .map(|v| v.id)
        .collect();
    assert_eq!(disabled, ["a", "never-seen"]);
}
