//! The orders' invariants, 10 to 13 of [`crate::sim::invariants`], checked at the end of a run
//! once the orders have settled: what the agents ran (the ledger's spawns, durable ends and
//! process exits, in virtual time) against each order's steps as the master committed them
//! ([`super::OrderLog`]) and decided them.

use tether_core::Instant;
use tether_core::message::{Exit, KillCause, RunIf, TaskRef};
use tether_master::model::{
    AttemptId, OnFailure, OrderId, OrderState, Outcome, Step, TaskId, TaskState, Workflow,
};
use tether_master::store::Store;

use super::orders::{Gap, OrderRecord};
use super::{AttemptRecord, RealMaster};
use crate::sim::invariants::{Invariant, Ledger, Violation, secs};

/// What the end of the step before must be for a chained step to run (the master's rule).
fn run_if(rule: OnFailure) -> RunIf {
    match rule {
        OnFailure::Stop => RunIf::Succeeded,
        OnFailure::Continue => RunIf::Finished,
    }
}

/// Attempt `attempt` of task `task`.
fn attempt_of(task: TaskId, attempt: AttemptId) -> TaskRef {
    TaskRef { task, attempt }
}

/// A step task's end that lets its order go on under `rule` (other than succeeding).
fn passes(rule: OnFailure, state: TaskState) -> bool {
    state == TaskState::Succeeded
        || (rule == OnFailure::Continue && matches!(state, TaskState::Failed | TaskState::Lost))
}

impl RealMaster {
    /// Every order the master took has ended and every step task it made is decided.
    pub fn orders_settled(&self) -> bool {
        self.orders.orders().all(|(_, o)| {
            o.state().is_terminal()
                && o.steps
                    .iter()
                    .flatten()
                    .all(|t| self.decided.contains_key(t))
        })
    }

    /// Invariants 10 to 13 over every order, with what the agents did in `ledger`; for the end
    /// of a run, after [`crate::sim::system::System::try_settle_orders`].
    pub fn check_orders(&self, ledger: &Ledger, now: Instant) -> Result<(), Violation> {
        if let Some((step, first, second)) = self.orders.twice().first() {
            return Err(Violation::new(
                Invariant::StepsSettle,
                now,
                format!(
                    "order {} step {} got a second task {second} (first {first})",
                    step.order,
                    step.step + 1
                ),
            ));
        }
        for (label, id) in self.orders.labels() {
            if self.orders.order(*id).is_none() {
                return Err(Violation::new(
                    Invariant::Model,
                    now,
                    format!("order #{label} (order {id}) was taken but never committed"),
                ));
            }
        }
        for (&id, order) in self.orders.orders() {
            let Some(workflow) = &order.workflow else {
                return Err(Violation::new(
                    Invariant::Model,
                    order.started,
                    format!("order {id} runs a workflow version never committed"),
                ));
            };
            for (i, task) in order.steps.iter().enumerate() {
                let Some(task) = *task else { continue };
                if i > 0 {
                    let Some(prev) = order.steps[i - 1] else {
                        return Err(Violation::new(
                            Invariant::StepAfterPredecessor,
                            now,
                            format!("order {id}: step {} has task {task}, step {i} none", i + 1),
                        ));
                    };
                    let before = &workflow.steps[i - 1];
                    self.check_step_start(ledger, (id, i), before, prev, task)?;
                }
                self.check_step_once(ledger, (id, i), task)?;
            }
            self.check_order_end(ledger, id, order, workflow, now)?;
        }
        Ok(())
    }

    /// The task's attempts, in creation order.
    fn attempts_of(&self, task: TaskId) -> impl Iterator<Item = (AttemptId, AttemptRecord)> + '_ {
        self.attempts
            .iter()
            .filter(move |(_, a)| a.task == task)
            .map(|(id, a)| (*id, *a))
    }

    /// Every spawn of the task's attempts: attempt, agent, when.
    fn spawns_of(&self, ledger: &Ledger, task: TaskId) -> Vec<(AttemptId, usize, Instant)> {
        self.attempts_of(task)
            .flat_map(|(id, _)| {
                ledger
                    .spawns(attempt_of(task, id))
                    .iter()
                    .map(move |&(agent, at)| (id, agent, at))
            })
            .collect()
    }

    /// Attempt `b` of `task` may run beside another as the task-level rules allow: the master
    /// gave it up, or made it to replace one it gave up (a lost or superseded attempt), so
    /// either of the two may be the one that ends the task.
    fn is_duplicate(&self, task: TaskId, b: AttemptId) -> bool {
        if self.orders.given_up(b).is_some() {
            return true;
        }
        let Some(created) = self.attempts.get(&b).map(|a| a.created) else {
            return false;
        };
        self.attempts_of(task)
            .any(|(x, _)| x != b && self.orders.given_up(x).is_some_and(|g| g <= created))
    }

    /// Invariant 10 for step `step.1` of order `step.0` (task `task`), after `prev`'s task (of
    /// step `before`): every start of the step, chained or not, came after the step before
    /// ended as its rule asks, and nothing of the step before ran after it.
    fn check_step_start(
        &self,
        ledger: &Ledger,
        step: (OrderId, usize),
        before: &Step,
        prev: TaskId,
        task: TaskId,
    ) -> Result<(), Violation> {
        let (order, i) = step;
        for (attempt, agent, at) in self.spawns_of(ledger, task) {
            let waited_for = self.orders.after(attempt);
            let why = match waited_for {
                Some(a) => self.chained_start(ledger, before, attempt_of(prev, a), agent, at),
                None => self.dispatched_start(before, prev, attempt),
            }
            .or_else(|| self.ran_after(ledger, before, prev, waited_for, agent, at));
            if let Some(why) = why {
                return Err(Violation::new(
                    Invariant::StepAfterPredecessor,
                    at,
                    format!(
                        "order {order} step {} (task {task}) attempt {attempt} started on pi-{agent} at {}: {why}",
                        i + 1,
                        secs(at)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A chained start on `agent` at `at`: the attempt it waited for ended there by then, as
    /// `run_if` allows. What is wrong, if anything.
    fn chained_start(
        &self,
        ledger: &Ledger,
        before: &Step,
        pred: TaskRef,
        agent: usize,
        at: Instant,
    ) -> Option<String> {
        let rule = before.on_failure;
        let allowed = ledger
            .ends(pred)
            .iter()
            .any(|&(x, e, exit)| x == agent && e <= at && run_if(rule).allows(exit));
        (!allowed).then(|| {
            format!(
                "chained behind attempt {} of the step before ({rule}), whose ends were {:?}",
                pred.attempt,
                ends(ledger, pred)
            )
        })
    }

    /// An attempt the master made without a chain: the step before was decided by then
    /// (succeeded, for `stop`).
    fn dispatched_start(&self, before: &Step, prev: TaskId, attempt: AttemptId) -> Option<String> {
        let rule = before.on_failure;
        let created = self.attempts.get(&attempt).map(|a| a.created);
        match self.decided.get(&prev) {
            Some((state, _, d))
                if created.is_some_and(|c| *d <= c)
                    && (rule == OnFailure::Continue || *state == TaskState::Succeeded) =>
            {
                None
            }
            decided => Some(format!(
                "dispatched at {:?} without a chain, and the step before ({rule}) was decided {:?}",
                created.map(secs),
                decided.map(|(s, _, d)| (s, secs(*d)))
            )),
        }
    }

    /// No attempt of the step before (but the one waited for, and duplicates) still ran at
    /// `at` or started after it.
    fn ran_after(
        &self,
        ledger: &Ledger,
        before: &Step,
        prev: TaskId,
        waited_for: Option<AttemptId>,
        agent: usize,
        at: Instant,
    ) -> Option<String> {
        // Tolerated unless held: the step ran behind a failed attempt of a `continue` step with
        // retries left, which the master then retried.
        let retried_after = waited_for.filter(|&a| {
            !self.orders.holds(Gap::RetryAfterChainedStep)
                && before.on_failure == OnFailure::Continue
                && before.policy.retries > 0
                && ledger
                    .ends(attempt_of(prev, a))
                    .iter()
                    .any(|&(x, _, exit)| x == agent && exit != Exit::Code(0))
        });
        self.spawns_of(ledger, prev)
            .into_iter()
            .filter(|&(b, _, _)| Some(b) != waited_for && !self.is_duplicate(prev, b))
            .filter(|&(b, _, _)| retried_after.is_none_or(|a| b < a))
            .find_map(|(b, pa, pt)| {
                let ended = ledger
                    .ends(attempt_of(prev, b))
                    .iter()
                    .filter(|(x, _, _)| *x == pa)
                    .map(|(_, e, _)| *e)
                    .min();
                ended.is_none_or(|e| e > at).then(|| {
                    let how = match waited_for {
                        Some(a) => format!(
                            "chained behind attempt {a} (ends {:?})",
                            ends(ledger, attempt_of(prev, a))
                        ),
                        None => "dispatched once the step before was decided".to_owned(),
                    };
                    format!(
                        "{how}; attempt {b} of the step before ({}, {} retries) started on pi-{pa} at {}, ended {:?}",
                        before.on_failure,
                        before.policy.retries,
                        secs(pt),
                        ended.map(secs)
                    )
                })
            })
    }

    /// Invariant 11: at most one attempt the master did not give up exits 0.
    fn check_step_once(
        &self,
        ledger: &Ledger,
        step: (OrderId, usize),
        task: TaskId,
    ) -> Result<(), Violation> {
        let succeeded: Vec<(AttemptId, usize, Instant)> = self
            .attempts_of(task)
            .filter(|(id, _)| self.orders.given_up(*id).is_none())
            .filter_map(|(id, _)| {
                let exits = ledger.exits(attempt_of(task, id));
                exits
                    .iter()
                    .find(|(_, _, exit)| *exit == Exit::Code(0))
                    .map(|&(agent, at, _)| (id, agent, at))
            })
            .collect();
        if let [_, (_, _, at), ..] = succeeded.as_slice() {
            return Err(Violation::new(
                Invariant::StepSucceedsOnce,
                *at,
                format!(
                    "order {} step {} (task {task}) succeeded {} times, by attempts the master kept: {:?}",
                    step.0,
                    step.1 + 1,
                    succeeded.len(),
                    succeeded
                        .iter()
                        .map(|(a, agent, at)| format!("{a} on pi-{agent} at {}", secs(*at)))
                        .collect::<Vec<_>>()
                ),
            ));
        }
        Ok(())
    }

    /// How a step task was decided, and when; a kill of an attempt the master gave up that
    /// decided it (see [`Gap::StrayKillDecidesTask`]) counts as the failure the master's
    /// order took it for.
    fn step_end(&self, task: TaskId) -> Option<(TaskState, Instant)> {
        let (state, _, at) = self.decided.get(&task)?;
        match self.stray_kill(task) {
            Some(_) => Some((TaskState::Failed, *at)),
            None => Some((*state, *at)),
        }
    }

    /// The task was decided `killed` by the end of an attempt the master had given up (and
    /// killed as a stranger): the attempt.
    fn stray_kill(&self, task: TaskId) -> Option<(TaskId, AttemptId)> {
        match self.decided.get(&task)? {
            (
                TaskState::Killed,
                Some(Outcome::Exited {
                    attempt,
                    cause: Some(KillCause::Requested),
                    ..
                }),
                _,
            ) if self.orders.given_up(*attempt).is_some() => Some((task, *attempt)),
            _ => None,
        }
    }

    /// Invariants 12 and 13 for one order, and the store agrees with it.
    fn check_order_end(
        &self,
        ledger: &Ledger,
        id: OrderId,
        order: &OrderRecord,
        workflow: &Workflow,
        now: Instant,
    ) -> Result<(), Violation> {
        let fail = |at: Instant, what: String| {
            Err(Violation::new(
                Invariant::OrderAgreesWithSteps,
                at,
                format!(
                    "order {id} ({} v{}): {what}",
                    workflow.name, workflow.version
                ),
            ))
        };
        let decided = |i: usize| order.steps[i].and_then(|t| self.step_end(t));
        let steps: Vec<_> = (0..order.steps.len())
            .map(|i| (order.steps[i], decided(i).map(|(s, at)| (s, secs(at)))))
            .collect();
        let stray = order
            .steps
            .iter()
            .flatten()
            .find_map(|&t| self.stray_kill(t));
        if let Some((task, attempt)) = stray
            && self.orders.holds(Gap::StrayKillDecidesTask)
        {
            return fail(
                now,
                format!(
                    "its step task {task} was decided killed by the end of attempt {attempt}, which \
                     the master gave up and then killed: nobody killed the step; {steps:?}"
                ),
            );
        }
        let (state, ended) = match order.ends.as_slice() {
            [] => {
                return fail(
                    now,
                    format!("never ended; steps (task, decided): {steps:?}"),
                );
            }
            [end] => *end,
            more => return fail(now, format!("ended more than once: {more:?}")),
        };
        match state {
            OrderState::Succeeded => {
                for (i, step) in workflow.steps.iter().enumerate() {
                    if !decided(i).is_some_and(|(s, _)| passes(step.on_failure, s)) {
                        return fail(
                            ended,
                            format!(
                                "succeeded, but step {} ({}) did not pass: {steps:?}",
                                i + 1,
                                step.on_failure
                            ),
                        );
                    }
                }
            }
            OrderState::Failed => {
                let mut failure = None;
                for (i, step) in workflow.steps.iter().enumerate() {
                    match decided(i) {
                        Some((s, _)) if passes(step.on_failure, s) => {}
                        Some((s, at))
                            if step.on_failure == OnFailure::Stop
                                && matches!(
                                    s,
                                    TaskState::Failed | TaskState::Lost | TaskState::Killed
                                ) =>
                        {
                            failure = Some((i, at));
                            break;
                        }
                        _ => break,
                    }
                }
                let Some((k, at)) = failure else {
                    return fail(
                        ended,
                        format!(
                            "failed, but no stop step failed after the steps before it passed: {steps:?}"
                        ),
                    );
                };
                for (j, task) in order.steps.iter().enumerate().skip(k + 1) {
                    let Some(task) = *task else { continue };
                    let late = self
                        .spawns_of(ledger, task)
                        .into_iter()
                        .find(|&(a, _, t)| t > at && !self.orders.is_stray(a));
                    if let Some((a, agent, t)) = late {
                        return fail(
                            t,
                            format!(
                                "step {} failed (decided at {}), yet step {} attempt {a} started on pi-{agent} at {}",
                                k + 1,
                                secs(at),
                                j + 1,
                                secs(t)
                            ),
                        );
                    }
                }
            }
            OrderState::Cancelled if !self.orders.was_cancelled(id) => {
                return fail(
                    ended,
                    "cancelled, though the test never cancelled it".into(),
                );
            }
            OrderState::Cancelled | OrderState::Running => {}
        }
        if let Some(i) = order
            .steps
            .iter()
            .position(|t| t.is_some_and(|t| !self.decided.contains_key(&t)))
        {
            return Err(Violation::new(
                Invariant::StepsSettle,
                now,
                format!(
                    "order {id} ended {state} at {}, its step {} is still open: {steps:?}",
                    secs(ended),
                    i + 1
                ),
            ));
        }
        let stored = self.store.db.order(id).ok().flatten().map(|o| o.state);
        if stored != Some(state) {
            return fail(now, format!("ended {state}, the store holds {stored:?}"));
        }
        Ok(())
    }
}

/// An attempt's durable ends, for messages.
fn ends(ledger: &Ledger, task: TaskRef) -> Vec<String> {
    ledger
        .ends(task)
        .iter()
        .map(|(agent, at, exit)| format!("{exit:?} on pi-{agent} at {}", secs(*at)))
        .collect()
}
