//! Workflow orders in the master core, in virtual time on the [`crate::rig::Rig`]: steps in
//! order, same-agent steps handed over together behind each other, cross-agent steps held for
//! the master, failures stopping or continuing, retries with a delay, cancellation, cluster
//! placement, bad definitions, and a restart from the store.

use tether_core::Duration;
use tether_core::message::{After, CommandBody, EventKind, Exit, RunIf, TaskRef};
use tether_master::core::{
    Config, Master, OrderRequest, PolicyOverrides, RequestError, StepRequest, WorkflowRequest,
};
use tether_master::model::{ClusterMode, OnFailure, OrderState, Outcome, TaskState, Workflow};
use tether_master::store::Store;

use crate::played::*;
use crate::rig::Rig;

fn step(agent: &str, argv: &[&str]) -> StepRequest {
    StepRequest {
        agent: Some(agent.into()),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..StepRequest::default()
    }
}

fn on_cluster(cluster: &str) -> StepRequest {
    StepRequest {
        cluster: Some(cluster.into()),
        argv: vec!["true".into()],
        ..StepRequest::default()
    }
}

impl Rig {
    fn workflow(&mut self, name: &str, steps: Vec<StepRequest>) -> Workflow {
        let w = self
            .m
            .put_workflow(
                self.now,
                WorkflowRequest {
                    name: name.into(),
                    steps,
                },
            )
            .unwrap();
        self.drain();
        w
    }

    fn order(&mut self, workflow: &str) -> u64 {
        let id = self
            .m
            .start_order(
                self.now,
                OrderRequest {
                    workflow: workflow.into(),
                    version: None,
                },
            )
            .unwrap();
        self.drain();
        id
    }

    fn order_state(&self, id: u64) -> OrderState {
        self.store.order(id).unwrap().unwrap().state
    }

    /// The step tasks of an order, by step.
    fn step_tasks(&self, id: u64) -> Vec<(u32, u64, TaskState)> {
        let tasks = self.store.order_tasks(id).unwrap();
        tasks
            .iter()
            .map(|t| (t.order.unwrap().step, t.id, t.state))
            .collect()
    }

    /// Chained starts sent to `agent` since `from`: the attempt and what it waits for.
    fn chained(&self, agent: &str, from: usize) -> Vec<(TaskRef, After)> {
        self.commands(agent, from)
            .into_iter()
            .filter_map(|c| match c {
                CommandBody::StartAfter { spec, after } => Some((spec.task, after)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn same_agent_steps_go_out_together_each_behind_the_one_before() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.workflow(
        "build",
        vec![
            step("pi-1", &["true"]),
            step("pi-1", &["true"]),
            StepRequest {
                on_failure: Some(OnFailure::Continue),
                ..step("pi-1", &["true"])
            },
            step("pi-1", &["true"]),
        ],
    );
    let order = h.order("build");
    let first = h.starts("pi-1", 0);
    let chained = h.chained("pi-1", 0);
    assert_eq!(first.len(), 1, "the first step is a plain start");
    assert_eq!(chained.len(), 3, "the rest are handed over behind it");
    assert_eq!(chained[0].1.task, first[0]);
    assert_eq!(chained[1].1.task, chained[0].0);
    assert_eq!(chained[2].1.task, chained[1].0);
    // What the step before must do for the next to run: its own `on_failure` says.
    assert_eq!(chained[0].1.run_if, RunIf::Succeeded);
    assert_eq!(chained[2].1.run_if, RunIf::Finished);
    // The attempts remember what they were chained behind.
    let stored = h.stored_attempt(chained[1].0);
    assert_eq!(stored.after, Some(chained[0].0.attempt));

    // The agent runs them on its own; the master hears the results (in any batch).
    let mut seq = 1;
    for t in std::iter::once(first[0]).chain(chained.iter().map(|c| c.0)) {
        h.accept_and_start("pi-1", seq, t);
        h.finish("pi-1", seq + 2, t, Exit::Code(0));
        seq += 3;
    }
    assert_eq!(h.order_state(order), OrderState::Succeeded);
    let steps = h.step_tasks(order);
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|(_, _, s)| *s == TaskState::Succeeded));
}

#[test]
fn a_step_on_another_agent_waits_for_the_master() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.online("pi-2", 1);
    h.workflow(
        "two",
        vec![
            step("pi-1", &["true"]),
            step("pi-1", &["true"]),
            step("pi-2", &["true"]),
        ],
    );
    let order = h.order("two");
    assert_eq!(h.starts("pi-1", 0).len() + h.chained("pi-1", 0).len(), 2);
    assert!(
        h.commands("pi-2", 0).is_empty(),
        "not before the steps before it"
    );
    assert_eq!(h.step_tasks(order).len(), 2, "step 3 has no task yet");
    let t1 = h.starts("pi-1", 0)[0];
    let t2 = h.chained("pi-1", 0)[0].0;
    h.accept_and_start("pi-1", 1, t1);
    h.finish("pi-1", 3, t1, Exit::Code(0));
    assert!(h.commands("pi-2", 0).is_empty());
    h.accept_and_start("pi-1", 4, t2);
    let mark = h.out.len();
    h.finish("pi-1", 6, t2, Exit::Code(0));
    let t3 = h.starts("pi-2", mark);
    assert_eq!(t3.len(), 1, "step 3 goes out once step 2 has ended");
    h.accept_and_start("pi-2", 1, t3[0]);
    h.finish("pi-2", 3, t3[0], Exit::Code(0));
    assert_eq!(h.order_state(order), OrderState::Succeeded);
}

#[test]
fn a_failed_step_stops_the_order_and_its_skipped_successors_are_cancelled() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.workflow(
        "stop",
        vec![
            step("pi-1", &["false"]),
            step("pi-1", &["true"]),
            step("pi-1", &["true"]),
        ],
    );
    let order = h.order("stop");
    let t1 = h.starts("pi-1", 0)[0];
    let chained = h.chained("pi-1", 0);
    h.accept_and_start("pi-1", 1, t1);
    h.event("pi-1", 3, EventKind::Accepted { task: chained[0].0 });
    h.finish("pi-1", 4, t1, Exit::Code(1));
    assert_eq!(h.order_state(order), OrderState::Failed);
    let reason = h.store.order(order).unwrap().unwrap().reason.unwrap();
    assert!(reason.contains("step 1"), "{reason}");
    // The agent skips what was chained behind the failure; the master has it end as never run.
    h.finish("pi-1", 5, chained[0].0, Exit::Skipped);
    h.finish("pi-1", 6, chained[1].0, Exit::Skipped);
    let steps = h.step_tasks(order);
    assert_eq!(steps[0].2, TaskState::Failed);
    assert_eq!(steps[1].2, TaskState::Cancelled);
    assert_eq!(steps[2].2, TaskState::Cancelled);
    let outcome = h.store.task(steps[1].1).unwrap().unwrap().outcome;
    assert_eq!(outcome, Some(Outcome::OrderEnded { order }));
}

#[test]
fn continue_on_failure_goes_on_and_a_retried_step_waits_its_delay() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.online("pi-2", 1);
    h.workflow(
        "retry",
        vec![
            StepRequest {
                on_failure: Some(OnFailure::Continue),
                ..step("pi-1", &["false"])
            },
            StepRequest {
                policy: PolicyOverrides {
                    retries: Some(1),
                    ..PolicyOverrides::default()
                },
                retry_delay_ms: 30_000,
                ..step("pi-2", &["flaky"])
            },
        ],
    );
    let order = h.order("retry");
    let t1 = h.starts("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, t1);
    let mark = h.out.len();
    h.finish("pi-1", 3, t1, Exit::Code(1));
    let t2 = h.starts("pi-2", mark)[0];
    h.accept_and_start("pi-2", 1, t2);
    let mark = h.out.len();
    h.finish("pi-2", 3, t2, Exit::Code(2));
    assert!(h.starts("pi-2", mark).is_empty(), "not before the delay");
    for _ in 0..3 {
        h.secs(9);
        h.heartbeat("pi-2", 1, 3, &[]);
    }
    assert!(h.starts("pi-2", mark).is_empty(), "27 s: still waiting");
    h.secs(4);
    h.heartbeat("pi-2", 1, 3, &[]);
    let retry = h.starts("pi-2", mark);
    assert_eq!(retry.len(), 1, "the retry after 30 s");
    assert_eq!(retry[0].task, t2.task);
    h.accept_and_start("pi-2", 4, retry[0]);
    h.finish("pi-2", 6, retry[0], Exit::Code(0));
    assert_eq!(h.order_state(order), OrderState::Succeeded);
}

#[test]
fn a_skipped_step_waits_for_the_retry_of_the_step_before() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.workflow(
        "again",
        vec![
            StepRequest {
                policy: PolicyOverrides {
                    retries: Some(1),
                    ..PolicyOverrides::default()
                },
                ..step("pi-1", &["flaky"])
            },
            step("pi-1", &["true"]),
        ],
    );
    let order = h.order("again");
    let t1 = h.starts("pi-1", 0)[0];
    let (t2, _) = h.chained("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, t1);
    h.event("pi-1", 3, EventKind::Accepted { task: t2 });
    let mark = h.out.len();
    h.finish("pi-1", 4, t1, Exit::Code(1));
    h.finish("pi-1", 5, t2, Exit::Skipped);
    assert_eq!(h.order_state(order), OrderState::Running);
    // Step 1 again, and step 2 chained behind the new attempt: a second attempt of step 2,
    // the skipped one not counted against it.
    let retry = h.starts("pi-1", mark);
    let again = h.chained("pi-1", mark);
    assert_eq!(retry.len(), 1);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.task, retry[0]);
    assert_eq!(again[0].0.task, t2.task);
    assert_ne!(again[0].0.attempt, t2.attempt);
    h.accept_and_start("pi-1", 6, retry[0]);
    h.finish("pi-1", 8, retry[0], Exit::Code(0));
    h.accept_and_start("pi-1", 9, again[0].0);
    h.finish("pi-1", 11, again[0].0, Exit::Code(0));
    assert_eq!(h.order_state(order), OrderState::Succeeded);
}

#[test]
fn cancelling_an_order_kills_its_running_step_and_starts_nothing_more() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.online("pi-2", 1);
    h.workflow(
        "long",
        vec![step("pi-1", &["sleep", "100"]), step("pi-2", &["true"])],
    );
    let order = h.order("long");
    let t1 = h.starts("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, t1);
    let mark = h.out.len();
    h.m.cancel_order(h.now, order).unwrap();
    h.drain();
    assert_eq!(h.order_state(order), OrderState::Cancelled);
    assert_eq!(h.kills("pi-1", mark), vec![t1]);
    assert!(matches!(
        h.m.cancel_order(h.now, order),
        Err(RequestError::OrderEnded { .. }) | Err(RequestError::UnknownOrder(_))
    ));
    h.finish("pi-1", 3, t1, Exit::Signal(15));
    h.secs(30);
    assert!(h.commands("pi-2", 0).is_empty());
    assert_eq!(h.step_tasks(order).len(), 1);
    assert!(matches!(
        h.m.cancel_order(h.now, 999),
        Err(RequestError::UnknownOrder(999))
    ));
}

#[test]
fn round_robin_steps_go_to_each_next_member() {
    let mut h = rig();
    for a in ["pi-1", "pi-2", "pi-3"] {
        h.online(a, 1);
    }
    cluster(
        &mut h,
        "rr",
        ClusterMode::RoundRobin,
        &["pi-1", "pi-2", "pi-3"],
    );
    h.workflow(
        "rr",
        vec![on_cluster("rr"), on_cluster("rr"), on_cluster("rr")],
    );
    let order = h.order("rr");
    let mut agents = Vec::new();
    let mut seqs = [1u64; 3];
    for _ in 0..3 {
        let (i, agent, task) = ["pi-1", "pi-2", "pi-3"]
            .iter()
            .enumerate()
            .find_map(|(i, a)| {
                let s = h.starts(a, 0);
                s.iter()
                    .find(|t| {
                        !agents
                            .iter()
                            .any(|(_, done): &(String, TaskRef)| done == *t)
                    })
                    .map(|t| (i, a.to_string(), *t))
            })
            .expect("a step went out");
        assert!(
            h.chained(&agent, 0).is_empty(),
            "round-robin steps are not chained"
        );
        h.accept_and_start(&agent, seqs[i], task);
        h.finish(&agent, seqs[i] + 2, task, Exit::Code(0));
        seqs[i] += 3;
        agents.push((agent, task));
    }
    let names: Vec<&str> = agents.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(
        names[0] != names[1] && names[1] != names[2] && names[0] != names[2],
        "each step on another member: {names:?}"
    );
    assert_eq!(h.order_state(order), OrderState::Succeeded);
}

#[test]
fn bad_workflows_are_refused_with_the_reason_and_leave_nothing() {
    let mut h = rig();
    h.online("pi-1", 1);
    let refuse = |h: &mut Rig, steps: Vec<StepRequest>| {
        let e =
            h.m.put_workflow(
                h.now,
                WorkflowRequest {
                    name: "bad".into(),
                    steps,
                },
            )
            .unwrap_err();
        h.drain();
        e
    };
    assert!(matches!(
        refuse(&mut h, vec![]),
        RequestError::StepCount { steps: 0, .. }
    ));
    assert!(matches!(
        refuse(&mut h, vec![step("pi-1", &["true"]); 33]),
        RequestError::StepCount { steps: 33, .. }
    ));
    let e = refuse(
        &mut h,
        vec![step("pi-1", &["true"]), step("ghost", &["true"])],
    );
    assert!(
        matches!(e, RequestError::InvalidStep { step: 1, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("step 2") && e.to_string().contains("ghost"),
        "{e}"
    );
    let e = refuse(&mut h, vec![step("pi-1", &[])]);
    assert!(
        matches!(e, RequestError::InvalidStep { step: 0, .. }),
        "{e:?}"
    );
    let e = refuse(
        &mut h,
        vec![StepRequest {
            retry_delay_ms: u64::MAX,
            ..step("pi-1", &["true"])
        }],
    );
    assert!(e.to_string().contains("retry_delay_ms"), "{e}");
    assert!(h.store.workflows().unwrap().is_empty(), "nothing half-made");
    let e =
        h.m.start_order(
            h.now,
            OrderRequest {
                workflow: "bad".into(),
                version: None,
            },
        )
        .unwrap_err();
    assert_eq!(e, RequestError::UnknownWorkflow("bad".into()));
    h.workflow("good", vec![step("pi-1", &["true"])]);
    let e =
        h.m.start_order(
            h.now,
            OrderRequest {
                workflow: "good".into(),
                version: Some(2),
            },
        )
        .unwrap_err();
    assert!(matches!(e, RequestError::UnknownVersion { version: 2, .. }));
}

#[test]
fn a_new_version_leaves_running_orders_on_theirs() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.online("pi-2", 1);
    let v1 = h.workflow("w", vec![step("pi-1", &["true"]), step("pi-2", &["v1"])]);
    let order = h.order("w");
    let v2 = h.workflow("w", vec![step("pi-1", &["true"]), step("pi-2", &["v2"])]);
    assert_eq!((v1.version, v2.version), (1, 2));
    let t1 = h.starts("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, t1);
    h.finish("pi-1", 3, t1, Exit::Code(0));
    let tasks = h.store.order_tasks(order).unwrap();
    assert_eq!(tasks[1].argv, vec!["v1".to_string()]);
    assert_eq!(h.store.order(order).unwrap().unwrap().version, 1);
}

#[test]
fn a_restarted_master_goes_on_with_its_orders() {
    let mut h = rig();
    h.online("pi-1", 1);
    h.online("pi-2", 1);
    h.workflow(
        "w",
        vec![
            step("pi-1", &["true"]),
            step("pi-1", &["true"]),
            step("pi-2", &["true"]),
        ],
    );
    let order = h.order("w");
    let t1 = h.starts("pi-1", 0)[0];
    let (t2, after) = h.chained("pi-1", 0)[0];
    h.accept_and_start("pi-1", 1, t1);
    h.finish("pi-1", 3, t1, Exit::Code(0));

    // kill -9: only the store remains.
    let snapshot = h.store.load().unwrap();
    let mut config = Config::new(P, 0xbeef, master_key());
    config.heartbeat_period = Duration::from_secs(10);
    h.m = Master::restore(config, snapshot, h.now).unwrap();
    h.m.handle_connected(h.now);
    let mark = h.out.len();
    h.drain();
    h.secs(1);
    h.heartbeat("pi-1", 1, 3, &[]);
    // The unanswered chained start goes out again exactly as before.
    assert_eq!(h.chained("pi-1", mark), vec![(t2, after)]);
    h.accept_and_start("pi-1", 4, t2);
    h.heartbeat("pi-2", 1, 0, &[]);
    let mark = h.out.len();
    h.finish("pi-1", 6, t2, Exit::Code(0));
    let t3 = h.starts("pi-2", mark);
    assert_eq!(t3.len(), 1);
    h.accept_and_start("pi-2", 1, t3[0]);
    h.finish("pi-2", 3, t3[0], Exit::Code(0));
    assert_eq!(h.order_state(order), OrderState::Succeeded);
    let steps = h.step_tasks(order);
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "one task per step, none made twice"
    );
}
