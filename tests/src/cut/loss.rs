//! The kill-on-loss sequence shared by the scenarios that cut a running `kill` task beyond its
//! timeout: cut, wait for the master to fail the task, restore, wait for the agent's report,
//! print the timeline and check it against the heartbeat settings.

use serde_json::Value;

use super::timeline::{SLACK, Timeline};
use super::world::{DELAY_ALLOWANCE, Settings, World, agent_time, events, master_time};

/// What [`cut_until_failed`] measured.
#[derive(Debug, Clone)]
pub struct Loss {
    pub timeline: Timeline,
    /// The task as the master showed it when it failed it (before the agent's report).
    pub failed: Value,
    /// The task once the agent's report (its `Finished`) is stored.
    pub reported: Value,
    pub kill_at: Option<u64>,
    pub restored: u64,
}

/// Cuts agent `agent` while task `id` (a running `kill` task with settings `s`) runs, keeps the
/// cut until the master fails the task, restores it and waits for the agent's report. Asserts
/// that the agent signalled the kill no earlier than its timeout allows (it judges the master
/// by the last heartbeat heard, at most a period before the cut) and promptly after, before
/// the cut was restored, and that the master failed the task within its timeout plus delay
/// allowance.
pub async fn cut_until_failed(
    world: &World,
    title: String,
    agent: usize,
    id: u64,
    s: Settings,
) -> Loss {
    let name = world.agents[agent].id.clone();
    let mut tl = Timeline::new(title);
    tl.t0("cut", world.cut(agent));
    let failed = world
        .wait_task(id, "failed by the master", |v| {
            v["task"]["state"] == "failed"
        })
        .await;
    let restored = world.restore(agent);
    let reported = world
        .wait_task(id, "reported by the agent", |v| {
            !events(v, "finished", None).is_empty()
        })
        .await;

    let kill_at = agent_time(&reported, "terminating");
    let failed_at = world.state_seen(id, &["failed"], tl.t0_ms());
    tl.row(
        "agent: MQTT connection lost (log)",
        world.log_seen(&name, "connection lost", tl.t0_ms()),
    );
    tl.row("kill signalled (Terminating, agent clock)", kill_at);
    tl.row(
        "master: agent unavailable",
        world.unavailable_seen(&name, tl.t0_ms()),
    );
    tl.row("master: task failed", failed_at);
    tl.row("cut restored", Some(restored));
    tl.row(
        "agent reconnected (log)",
        world.log_seen(&name, "connected to", restored),
    );
    tl.row(
        "result recorded (Finished stored)",
        master_time(&reported, "finished"),
    );
    tl.print();

    tl.assert_between(
        "kill signalled",
        kill_at,
        s.timeout - s.period,
        s.timeout + SLACK,
    );
    tl.assert_between(
        "master: task failed",
        failed_at,
        s.timeout + DELAY_ALLOWANCE - s.period,
        s.timeout + DELAY_ALLOWANCE + SLACK,
    );
    assert!(
        kill_at.is_some_and(|k| k < restored),
        "the agent killed on its own, before the cut was restored"
    );
    Loss {
        timeline: tl,
        failed,
        reported,
        kill_at,
        restored,
    }
}
