//! Broker fail-over: the agent is given two broker addresses, two proxy paths to the one broker the
//! master uses (a broker reachable over two routes, e.g. LAN and LTE). The first path is reset
//! and stays refused (its broker "died" for the agent); the agent moves to the second, keeps
//! its task and reports the result there. The master's `--broker` takes one address, so two
//! independent brokers would leave the master behind on the first: the shared broker behind
//! two paths is the realistic setup this binary supports. Proxy method only.

use tether_tests::cut::link::CutMethod;
use tether_tests::cut::timeline::Timeline;
use tether_tests::cut::world::{
    Layout, Run, Settings, World, agent_time, events, master_time, task_for,
};
use tether_tests::cut_scenario;
use tether_tests::proxy::Fault;

cut_scenario!(agent_moves_to_second_broker);

async fn agent_moves_to_second_broker(run: Run) {
    if run.method != CutMethod::Proxy {
        eprintln!("SKIPPED ({run}): broker fail-over uses two proxy paths");
        return;
    }
    let s = Settings::SHORT;
    let mut layout = Layout::new("f004", run, 1);
    layout.paths = 2;
    layout.cut_with = Fault::Reset;
    let Some(world) = World::start(run, layout).await else {
        return;
    };
    let agent = world.agents[0].id.clone();
    let second = world.agents[0].links[1].agent_broker();
    let script = world.marked("task", "sleep 4");
    let id = world.run_task(&task_for(&agent, &script, "kill", s)).await;

    let mut tl = Timeline::new(format!("004 broker fail-over ({run})"));
    tl.t0("first broker path reset (stays down)", world.cut(0));
    let view = world.wait_done(id).await;
    tl.row(
        "agent: connection lost (log)",
        world.log_seen(&agent, "connection lost", tl.t0_ms()),
    );
    tl.row(
        "agent: connected to the second broker (log)",
        world.log_seen(&agent, &format!("connected to {second}"), tl.t0_ms()),
    );
    tl.row("kill signalled", agent_time(&view, "terminating"));
    tl.row("result recorded", master_time(&view, "finished"));
    tl.print();

    assert_eq!(view["task"]["state"], "succeeded", "{view}");
    assert!(events(&view, "terminating", None).is_empty(), "{view}");
    assert_eq!(world.marks("task"), (1, 1), "ran once, to the end");
    assert!(
        world
            .log_seen(&agent, &format!("connected to {second}"), tl.t0_ms())
            .is_some(),
        "the agent moved to {second}"
    );
}
