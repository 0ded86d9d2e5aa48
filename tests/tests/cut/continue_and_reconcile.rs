//! Continue and reconcile: a `continue` task in a fixed-priority cluster with `lost_after`; its
//! agent's cable is pulled, the master runs it again on the other member, and when the cable
//! is back the first agent's result arrives too: both kept, each on its own attempt, and the
//! outcome names one of them.

use std::time::Duration;

use serde_json::json;
use tether_tests::cut::timeline::Timeline;
use tether_tests::cut::world::{Layout, Run, Settings, World, attempts, events, task_for_cluster};
use tether_tests::cut_scenario;

cut_scenario!(rescheduled_duplicate_kept);

async fn rescheduled_duplicate_kept(run: Run) {
    let s = Settings::SHORT;
    let Some(world) = World::start(run, Layout::new("d004", run, 2)).await else {
        return;
    };
    let (a, b) = (world.agents[0].id.clone(), world.agents[1].id.clone());
    let cluster = format!("dup-{}-{}", run.broker, run.method);
    world.post(
        "/api/clusters",
        &json!({ "name": cluster, "mode": "fixed-priority", "members": [a, b] }),
    );
    let lost_after = Duration::from_secs(4);
    let mut body = task_for_cluster(&cluster, &world.marked("dup", "sleep 6"), "continue", s);
    body["policy"]["lost_after_ms"] = json!(lost_after.as_millis() as u64);
    let id = world.run_task(&body).await;
    let first = world.task(id);
    assert_eq!(
        first["attempts"][0]["agent_id"], a,
        "fixed priority: {first}"
    );

    let mut tl = Timeline::new(format!("004 rescheduled duplicate ({run})"));
    tl.t0(&format!("{a} cable pulled"), world.cut(0));
    let second = world
        .wait_task(id, "rescheduled and finished on the other member", |v| {
            attempts(v)
                .iter()
                .any(|at| at["agent_id"] == b && at["state"] == "finished")
        })
        .await;
    let restored = world.restore(0);
    let both = world
        .wait_task(id, "reported by both attempts", |v| {
            attempts(v).len() == 2 && attempts(v).iter().all(|at| at["state"] == "finished")
        })
        .await;

    let ats = attempts(&both);
    let attempt_of = |agent: &str| {
        ats.iter()
            .find(|at| at["agent_id"] == agent)
            .and_then(|at| at["id"].as_u64())
            .expect("attempt")
    };
    let (att_a, att_b) = (attempt_of(&a), attempt_of(&b));
    let ev_time = |kind: &str, attempt: u64, field: &str| {
        events(&both, kind, Some(attempt))
            .first()
            .and_then(|e| e[field].as_u64().or_else(|| e["event"][field].as_u64()))
    };
    tl.row(
        &format!("master: {a} unavailable"),
        world.unavailable_seen(&a, tl.t0_ms()),
    );
    tl.row(
        "master: task unreachable",
        world.state_seen(id, &["unreachable"], tl.t0_ms()),
    );
    tl.row(
        &format!("attempt {att_b} started on {b} (agent clock)"),
        ev_time("started", att_b, "at_unix_ms"),
    );
    tl.row(
        &format!("attempt {att_a} finished on {a} (agent clock, cut off)"),
        ev_time("finished", att_a, "at_unix_ms"),
    );
    tl.row(
        &format!("attempt {att_b} result recorded"),
        ev_time("finished", att_b, "received_ms"),
    );
    tl.row("cable restored", Some(restored));
    tl.row(
        &format!("{a} reconnected (log)"),
        world.log_seen(&a, "connected to", restored),
    );
    tl.row(
        &format!("attempt {att_a} result recorded"),
        ev_time("finished", att_a, "received_ms"),
    );
    tl.print();

    assert_ne!(att_a, att_b);
    assert!(second["attempts"].as_array().is_some_and(|l| l.len() == 2));
    for at in [att_a, att_b] {
        let fin = events(&both, "finished", Some(at));
        assert_eq!(fin.len(), 1, "one result per attempt: {both}");
        assert_eq!(fin[0]["event"]["kind"]["Finished"]["exit"]["Code"], 0);
    }
    assert_eq!(
        world.marks("dup"),
        (2, 2),
        "one run per attempt, both completed"
    );
    assert_eq!(both["task"]["state"], "succeeded", "{both}");
    let decided = both["task"]["outcome"]["attempt"].as_u64();
    assert!(
        decided == Some(att_a) || decided == Some(att_b),
        "the outcome names one of the attempts: {both}"
    );
}
