//! What operators ask for: submit, kill, clusters, profiles, agent keys. Each request is
//! validated completely before anything is persisted; a refusal is a [`RequestError`] naming
//! its reason.

use tether_core::auth::AgentKey;
use tether_core::policy::OnDisconnect;
use tether_core::topic::validate_id;
use tether_core::{Duration, Instant};

use super::registry::AgentEntry;
use super::{Change, ClusterRequest, Master, ProfileRequest, RequestError, Submit, TaskEntry};
use crate::model::{
    ApiToken, AuditEntry, Cluster, NewTask, Outcome, Profile, Task, TaskId, TaskPolicy, TaskState,
};
use crate::passwords::MASTER_USER;

impl Master {
    /// Sets (provisions or rotates) an agent's MAC key; from now on only messages with its MAC
    /// are taken from that agent.
    pub fn set_agent_key(
        &mut self,
        now: Instant,
        id: &str,
        key: AgentKey,
    ) -> Result<(), RequestError> {
        self.advance(now);
        check_name("agent", id)?;
        if id == MASTER_USER {
            // Brokers that take the user name as client id would let it clash with the master.
            return Err(RequestError::MasterUser(id.to_owned()));
        }
        self.agent_keys.insert(id.to_owned(), key);
        self.persist(Change::AgentKey {
            agent: id.to_owned(),
            key,
        });
        Ok(())
    }

    /// Accepts a task and dispatches it as soon as an agent is available.
    pub fn submit(&mut self, now: Instant, req: Submit) -> Result<TaskId, RequestError> {
        self.advance(now);
        let (target, policy) =
            self.target_and_policy(req.agent, req.cluster, req.profile.as_deref(), &req.policy)?;
        let new = NewTask {
            target,
            argv: req.argv,
            env: req.env,
            cwd: req.cwd,
            profile: req.profile,
            policy,
            start_at_ms: req.start_at_ms,
            order: None,
            occurrence: None,
        };
        let id = self.add_task(now, new, Duration::from_ticks(0))?;
        self.tick(now);
        Ok(id)
    }

    /// Stores a new pending task and holds it for dispatch; `retry_delay` is the wait before
    /// each retry.
    pub(super) fn add_task(
        &mut self,
        now: Instant,
        new: NewTask,
        retry_delay: Duration,
    ) -> Result<TaskId, RequestError> {
        let id = self.next_task;
        let task = Task::pending(id, new.clone());
        // The agent's own checks (argv, env, sizes), before anything is stored.
        task.spec(self.next_attempt)?;
        self.next_task += 1;
        self.persist(Change::NewTask {
            id,
            task: new,
            state: TaskState::Pending,
        });
        self.tasks.insert(
            id,
            TaskEntry {
                task,
                attempts: Vec::new(),
                kill_requested: false,
                retry_at: now,
                retry_delay,
            },
        );
        Ok(id)
    }

    /// Kills a task: at once if no attempt is out, else by kill commands repeated until every
    /// open attempt has finished (or is given up by its policy).
    pub fn kill(&mut self, now: Instant, id: TaskId) -> Result<(), RequestError> {
        self.advance(now);
        let Some(t) = self.tasks.get_mut(&id) else {
            // Ids are handed out in order: one below the next was a task, settled since.
            return Err(if id > 0 && id < self.next_task {
                RequestError::AlreadyFinished {
                    task: id,
                    state: None,
                }
            } else {
                RequestError::UnknownTask(id)
            });
        };
        if t.task.state.is_terminal() {
            return Err(RequestError::AlreadyFinished {
                task: id,
                state: Some(t.task.state),
            });
        }
        self.request_kill(now, id, TaskState::Killed, Outcome::Cancelled);
        self.tick(now);
        Ok(())
    }

    /// Marks an unfinished task for killing: decided at once as `state` with `outcome` if no
    /// attempt is out, else by kill commands until each open attempt has ended.
    pub(super) fn request_kill(
        &mut self,
        now: Instant,
        id: TaskId,
        state: TaskState,
        outcome: Outcome,
    ) {
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        if t.kill_requested || t.task.state.is_terminal() {
            return;
        }
        t.kill_requested = true;
        for a in t.attempts.iter_mut().filter(|a| a.is_open()) {
            a.kill_wanted = true;
            a.next_kill = now;
        }
        let open = t.has_open();
        self.persist(Change::KillRequested { task: id });
        if !open {
            self.decide(now, id, state, outcome);
        }
    }

    /// Switches agent `id` over (`disabled`) or back. A disabled agent gets no new attempts
    /// (its clusters use their next member) and what it runs goes on; none of it is a failure.
    /// Any agent with a key or ever heard from may be switched. Whether anything changed.
    pub fn set_agent_disabled(
        &mut self,
        now: Instant,
        id: &str,
        disabled: bool,
    ) -> Result<bool, RequestError> {
        self.advance(now);
        check_name("agent", id)?;
        if !self.agents.contains_key(id) && !self.agent_keys.contains_key(id) {
            return Err(RequestError::UnknownAgent(id.to_owned()));
        }
        let entry = self
            .agents
            .entry(id.to_owned())
            .or_insert_with(|| AgentEntry::new(now));
        if entry.disabled == disabled {
            return Ok(false);
        }
        entry.disabled = disabled;
        self.persist(Change::AgentDisabled {
            agent: id.to_owned(),
            disabled,
        });
        // Enabled: what waited for it may go now.
        self.tick(now);
        Ok(true)
    }

    /// Whether agent `id` is disabled (unknown agents are not).
    pub fn agent_disabled(&self, id: &str) -> bool {
        self.agents.get(id).is_some_and(|a| a.disabled)
    }

    /// Defines (or replaces) a cluster.
    pub fn put_cluster(&mut self, now: Instant, req: ClusterRequest) -> Result<(), RequestError> {
        self.advance(now);
        check_name("cluster", &req.name)?;
        if req.members.is_empty() {
            return Err(RequestError::EmptyCluster(req.name));
        }
        for (i, m) in req.members.iter().enumerate() {
            check_name("cluster member", m)?;
            if req.members[..i].contains(m) {
                return Err(RequestError::DuplicateMember {
                    cluster: req.name.clone(),
                    member: m.clone(),
                });
            }
        }
        let cluster = Cluster {
            name: req.name,
            mode: req.mode,
            members: req.members,
            cursor: 0,
        };
        self.persist(Change::Cluster(cluster.clone()));
        self.clusters.insert(cluster.name.clone(), cluster);
        self.tick(now);
        Ok(())
    }

    /// Defines (or replaces) a profile: a named policy set tasks are created from.
    pub fn put_profile(&mut self, now: Instant, req: ProfileRequest) -> Result<(), RequestError> {
        self.advance(now);
        check_name("profile", &req.name)?;
        let policy = req.policy.apply(TaskPolicy::DEFAULT);
        validate_policy(&policy)?;
        self.persist(Change::Profile(Profile {
            name: req.name.clone(),
            policy,
        }));
        self.profiles.insert(req.name, policy);
        Ok(())
    }
}

impl Master {
    /// Stores an API token (new, replaced or revoked). The API keeps the live ones; the core
    /// only checks the name and queues the change, so it commits with the rest of its batch.
    pub fn put_token(&mut self, token: ApiToken) -> Result<(), RequestError> {
        check_name("token", &token.name)?;
        self.persist(Change::ApiToken(token));
        Ok(())
    }

    /// Records who changed what through the API, in the batch of the change itself.
    pub fn audit(&mut self, entry: AuditEntry) {
        self.persist(Change::Audit(entry));
    }
}

/// A number of a request in its range ([`crate::limits`]), refused as a policy field.
pub(super) fn check_field(range: crate::limits::Range, value: u64) -> Result<(), RequestError> {
    range
        .check(value)
        .map(drop)
        .map_err(|e| RequestError::PolicyField {
            field: e.field,
            reason: e.reason,
        })
}

pub(super) fn check_name(what: &'static str, name: &str) -> Result<(), RequestError> {
    validate_id(name)
        .map(drop)
        .map_err(|_| RequestError::InvalidName {
            what,
            name: name.to_owned(),
        })
}

/// The policy rules of the protocol plus the master's own: `lost_after` only for `continue`
/// tasks, and never zero.
pub(super) fn validate_policy(policy: &TaskPolicy) -> Result<(), RequestError> {
    // The protocol's rules first, so that their refusal keeps its reason.
    policy
        .to_core()
        .validate()
        .map_err(RequestError::InvalidPolicy)?;
    policy.validate().map_err(|e| RequestError::PolicyField {
        field: e.field,
        reason: e.reason,
    })?;
    match policy.lost_after_ms {
        Some(0) => Err(RequestError::LostAfterZero),
        Some(_) if policy.on_disconnect == OnDisconnect::Kill => {
            Err(RequestError::LostAfterWithKill)
        }
        _ => Ok(()),
    }
}
