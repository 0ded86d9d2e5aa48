//! [`PostgresStore`]: the handle the master holds. The `postgres` client runs its own async
//! runtime inside, which may not be entered from the master's; so the connection lives on a
//! thread of its own, and each [`Store`] call is a job sent there and answered within
//! [`CALL_TIMEOUT`] (past it the call fails as unreachable: the master never hangs on the
//! database).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use super::Connection;
use crate::core::{Change, Snapshot};
use crate::model::{
    Agent, ApiToken, Attempt, AttemptId, AuditEntry, Cluster, Handover, Order, OrderId, OrderState,
    OutputChunk, Profile, Schedule, ScheduleId, StoredEvent, Task, TaskId, TaskState, Workflow,
};
use crate::store::{Page, Pruned, Result, Store, StoreError, location};

/// The longest a call waits for the store thread: a statement's own limit, plus connecting.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(40);

type Job = Box<dyn FnOnce(&Connection) + Send>;

/// The master's PostgreSQL database, behind its store thread. `Send`, not `Sync`, like
/// [`crate::store::SqliteStore`].
pub struct PostgresStore {
    jobs: Sender<Job>,
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresStore({})", self.shown)
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db`, or
    /// `postgres:///db?host=/run/postgresql` for a unix socket) and migrates it.
    pub fn open(url: &str) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, answer) = mpsc::channel();
        let owned = url.to_owned();
        std::thread::Builder::new()
            .name("pg-store".into())
            .spawn(move || serve(&owned, &opened, &queue))
            .map_err(|e| StoreError::Invalid(format!("cannot start the store thread: {e}")))?;
        let store = Self {
            jobs,
            shown: location::redact(url),
        };
        wait(&answer)??;
        Ok(store)
    }

    /// Runs `f` on the store thread and waits (bounded) for its answer.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unanswered("the store thread has stopped".into()))?;
        wait(&rx)?
    }

    /// One agent's stored events in sequence order (as [`crate::store::SqliteStore::events`]).
    pub fn events(&self, agent: &str) -> Result<Vec<StoredEvent>> {
        let agent = agent.to_owned();
        self.call(move |c| c.events(&agent))
    }
}

fn wait<T>(rx: &Receiver<T>) -> Result<T> {
    rx.recv_timeout(CALL_TIMEOUT).map_err(|e| {
        StoreError::Unanswered(match e {
            RecvTimeoutError::Timeout => format!("no answer from the database in {CALL_TIMEOUT:?}"),
            RecvTimeoutError::Disconnected => "the store thread has stopped".into(),
        })
    })
}

/// The store thread: opens the connection, then runs jobs until the handle is dropped.
fn serve(url: &str, opened: &Sender<Result<()>>, jobs: &Receiver<Job>) {
    let conn = match Connection::open(url) {
        Ok(c) => {
            let _ = opened.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    for job in jobs {
        job(&conn);
    }
}

impl Store for PostgresStore {
    fn apply(&self, changes: &[Change]) -> Result<()> {
        let changes = changes.to_vec();
        self.call(move |c| c.apply(&changes))
    }

    fn load(&self) -> Result<Snapshot> {
        self.call(|c| c.load())
    }

    fn next_epoch(&self, at_least: u32) -> Result<u32> {
        self.call(move |c| c.next_epoch(at_least))
    }

    fn epoch(&self) -> Result<u32> {
        self.call(|c| c.epoch())
    }

    fn probe_write(&self) -> Result<()> {
        self.call(|c| c.probe_write())
    }

    fn agents(&self) -> Result<Vec<Agent>> {
        self.call(|c| c.agents())
    }

    fn clusters(&self) -> Result<Vec<Cluster>> {
        self.call(|c| c.clusters())
    }

    fn profiles(&self) -> Result<Vec<Profile>> {
        self.call(|c| c.profiles())
    }

    fn tasks(&self, page: Page, state: Option<TaskState>) -> Result<Vec<Task>> {
        self.call(move |c| c.tasks(page, state))
    }

    fn task(&self, id: TaskId) -> Result<Option<Task>> {
        self.call(move |c| c.task(id))
    }

    fn task_counts(&self) -> Result<Vec<(TaskState, u64)>> {
        self.call(|c| c.task_counts())
    }

    fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>> {
        self.call(move |c| c.attempts(task))
    }

    fn attempt_events(&self, attempt: AttemptId) -> Result<Vec<StoredEvent>> {
        self.call(move |c| c.attempt_events(attempt))
    }

    fn output(&self, attempt: AttemptId) -> Result<Vec<OutputChunk>> {
        self.call(move |c| c.output(attempt))
    }

    fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.call(|c| c.tokens())
    }

    fn audit(&self, subject: &str) -> Result<Vec<AuditEntry>> {
        let subject = subject.to_owned();
        self.call(move |c| c.audit(&subject))
    }

    fn workflows(&self) -> Result<Vec<Workflow>> {
        self.call(|c| c.workflows())
    }

    fn workflow(&self, name: &str, version: Option<u32>) -> Result<Option<Workflow>> {
        let name = name.to_owned();
        self.call(move |c| c.workflow(&name, version))
    }

    fn workflow_versions(&self, name: &str) -> Result<Vec<u32>> {
        let name = name.to_owned();
        self.call(move |c| c.workflow_versions(&name))
    }

    fn orders(&self, page: Page, state: Option<OrderState>) -> Result<Vec<Order>> {
        self.call(move |c| c.orders(page, state))
    }

    fn order(&self, id: OrderId) -> Result<Option<Order>> {
        self.call(move |c| c.order(id))
    }

    fn order_tasks(&self, id: OrderId) -> Result<Vec<Task>> {
        self.call(move |c| c.order_tasks(id))
    }

    fn order_counts(&self) -> Result<Vec<(OrderState, u64)>> {
        self.call(|c| c.order_counts())
    }

    fn schedules(&self, page: Page) -> Result<Vec<Schedule>> {
        self.call(move |c| c.schedules(page))
    }

    fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        let name = name.to_owned();
        self.call(move |c| c.schedule(&name))
    }

    fn schedule_by_id(&self, id: ScheduleId) -> Result<Option<Schedule>> {
        self.call(move |c| c.schedule_by_id(id))
    }

    fn handovers(&self, schedule: ScheduleId) -> Result<Vec<Handover>> {
        self.call(move |c| c.handovers(schedule))
    }

    fn occurrence_tasks(&self, schedule: ScheduleId, page: Page) -> Result<Vec<Task>> {
        self.call(move |c| c.occurrence_tasks(schedule, page))
    }

    fn latest_occurrence_tasks(&self, schedule: ScheduleId, limit: u32) -> Result<Vec<Task>> {
        self.call(move |c| c.latest_occurrence_tasks(schedule, limit))
    }

    fn occurrence_counts(&self) -> Result<Vec<(TaskState, u64)>> {
        self.call(|c| c.occurrence_counts())
    }

    fn prune_finished(&self, before_ms: u64, limit: u32) -> Result<Pruned> {
        self.call(move |c| c.prune_finished(before_ms, limit))
    }
}
