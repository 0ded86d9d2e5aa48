//! Kill on loss (the JS-1523 scenario): the agent's cable is pulled while a `kill` task runs. The agent
//! terminates the task once the master has been silent for the task's heartbeat timeout, the
//! master marks the task failed once the same timeout plus its delay allowance has passed, and
//! when the cable is back the agent's account of the kill reaches the master.

use tether_tests::cut::loss::cut_until_failed;
use tether_tests::cut::world::{Layout, Run, Settings, World, events, task_for};
use tether_tests::cut_scenario;

cut_scenario!(agent_cut_off_kills_the_kill_task);

async fn agent_cut_off_kills_the_kill_task(run: Run) {
    let s = Settings::SHORT;
    let Some(world) = World::start(run, Layout::new("js1523", run, 1)).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let script = world.marked("task", "exec sleep 60");
    let id = world.run_task(&task_for(&agent, &script, "kill", s)).await;

    let loss = cut_until_failed(&world, format!("JS-1523 kill on loss ({run})"), 0, id, s).await;
    let (failed, view) = (&loss.failed, &loss.reported);
    assert_eq!(failed["task"]["outcome"]["kind"], "agent_lost", "{failed}");
    let fin = &events(view, "finished", None)[0]["event"]["kind"]["Finished"];
    assert_eq!(fin["cause"], "MasterLost", "{view}");
    assert_eq!(
        fin["exit"]["Signal"], 15,
        "SIGTERM ended it within the grace: {view}"
    );
    assert_eq!(world.marks("task"), (1, 0), "started once, never completed");
    assert_eq!(
        view["task"]["state"], "failed",
        "a late report does not revive the task"
    );
}
