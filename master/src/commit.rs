//! The commit rule of [`crate::core`] in one place: drain the core's actions, apply every
//! `Persist` change of the batch to the [`Store`] in ONE transaction, and only after that
//! commit hand back the batch's publishes, in order. An acknowledgement therefore never leaves
//! before the event it acknowledges is stored. The runtime, the simulation and the test rigs
//! all drain through here, and the runtime and the system simulation handle a store that fails
//! with the same [`Committer`].

use log::{error, info, warn};

use crate::api::ApiError;
use tether_core::Instant;

use crate::core::{Action, Change, Master, Publish, Snapshot};
use crate::store::{Store, StoreError};

/// One drained batch: its changes, and the publishes held back until they are committed.
#[derive(Debug, Default)]
pub struct Batch {
    changes: Vec<Change>,
    publishes: Vec<Publish>,
}

impl Batch {
    /// Takes every action the core has queued, keeping the publishes' order.
    pub fn drain(core: &mut Master) -> Self {
        let mut batch = Self::default();
        while let Some(action) = core.poll_action() {
            match action {
                Action::Persist(c) => batch.changes.push(c),
                Action::Publish(p) => batch.publishes.push(p),
            }
        }
        batch
    }

    /// The batch's changes, for observers that look before (or after) the commit.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Commits the changes in one transaction; on success, the publishes that may now go out.
    /// On failure nothing of the batch is stored and nothing may be published: the caller stops
    /// the core, and a restart resumes from what was committed before.
    pub fn commit(&mut self, store: &dyn Store) -> Result<Vec<Publish>, StoreError> {
        store.apply(&self.changes)?;
        Ok(std::mem::take(&mut self.publishes))
    }
}

/// Drains `core` and commits the batch to `store`: the publishes that may now go out.
pub fn commit(core: &mut Master, store: &dyn Store) -> Result<Vec<Publish>, StoreError> {
    Batch::drain(core).commit(store)
}

/// The store as the commit rule needs it: one transaction, a full read, a write probe. Every
/// [`Store`] is one; the system simulation puts a store that can be taken down in front of its
/// SQLite store through this.
pub trait Durable {
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError>;
    fn load(&self) -> Result<Snapshot, StoreError>;
    fn probe_write(&self) -> Result<(), StoreError>;
}

impl<S: Store + ?Sized> Durable for S {
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        Store::apply(self, changes)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Store::load(self)
    }

    fn probe_write(&self) -> Result<(), StoreError> {
        Store::probe_write(self)
    }
}

/// What became of a batch.
#[derive(Debug)]
pub enum Flushed {
    /// Stored: the publishes that may now go out, in order.
    Committed(Vec<Publish>),
    /// Not stored, nothing published: the core is rebuilt from the store (or stale until the
    /// store can be read); the batch's write requests get this.
    Refused(ApiError),
    /// The core was stale and the store still cannot be read: what the core decided rests on
    /// changes that were never stored, so the batch is dropped (agents resend what was not
    /// acknowledged).
    Dropped,
}

/// The master's handling of a store that fails, shared by the runtime and the system
/// simulation: a batch that does not commit is dropped whole, the core is rebuilt from the
/// store (which is always consistent), and API writes are refused while the store refuses
/// them. Only a store that cannot be read for another reason than being unreachable stops the
/// master (the `Err` of each call).
#[derive(Debug, Default)]
pub struct Committer {
    /// Why the store refuses writes, while it does: write requests get this at once.
    refusing: Option<ApiError>,
    /// The core holds changes the store did not take and could not be rebuilt from it (the
    /// database was unreachable): nothing it makes is committed or published until it is.
    stale: bool,
    /// The core was rebuilt since [`Committer::take_rebuilt`] last answered yes.
    rebuilt: bool,
    /// How often the core was rebuilt.
    rebuilds: u64,
}

impl Committer {
    /// Whether the core was rebuilt from the store since the last yes, now that the store takes
    /// writes again. A rebuilt core forgot what arrived after the last commit: the runtime then
    /// subscribes again, so the broker sends the agents' retained presence anew (their events
    /// come again, unacknowledged as they are). Not while the store still refuses: what the
    /// resubscription brings would fail to commit and rebuild the core again, in a loop.
    pub fn take_rebuilt(&mut self) -> bool {
        let healthy = self.refusing.is_none() && !self.stale;
        healthy && std::mem::take(&mut self.rebuilt)
    }

    /// How often the core was rebuilt from the store.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Why API writes are refused, while they are.
    pub fn refusing(&self) -> Option<&ApiError> {
        self.refusing.as_ref()
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Commits a drained batch (see [`Flushed`]).
    pub fn flush<S: Durable + ?Sized>(
        &mut self,
        core: &mut Master,
        batch: &mut Batch,
        store: &S,
        now: Instant,
    ) -> Result<Flushed, StoreError> {
        if self.stale && !self.rebuild(core, store, now)? {
            return Ok(Flushed::Dropped);
        }
        match store.apply(&batch.changes) {
            Ok(()) => {
                // An empty batch wrote nothing: it proves nothing about the store.
                if !batch.changes.is_empty()
                    && let Some(e) = self.refusing.take()
                {
                    info!("the store takes writes again (it refused: {})", e.message);
                }
                Ok(Flushed::Committed(std::mem::take(&mut batch.publishes)))
            }
            Err(e) => {
                let refusal = refusal(&e);
                error!(
                    "cannot commit to the store: {e}; nothing of the batch is published, \
                     the core is rebuilt from the store, agents resend what was not acknowledged"
                );
                self.stale = true;
                self.rebuild(core, store, now)?;
                if e.is_database() {
                    if self.refusing.is_none() {
                        warn!("refusing API writes until the store takes them again");
                    }
                    self.refusing = Some(refusal.clone());
                }
                Ok(Flushed::Refused(refusal))
            }
        }
    }

    /// Tries a write while the store refuses them, so the master carries on by itself once
    /// the store takes writes again even when nothing else writes.
    pub fn probe<S: Durable + ?Sized>(
        &mut self,
        core: &mut Master,
        store: &S,
        now: Instant,
    ) -> Result<(), StoreError> {
        if self.stale && !self.rebuild(core, store, now)? {
            return Ok(());
        }
        if store.probe_write().is_ok()
            && let Some(e) = self.refusing.take()
        {
            info!("the store takes writes again (it refused: {})", e.message);
        }
        Ok(())
    }

    /// Rebuilds a stale core from the store. `Ok(false)` while the store is unreachable
    /// (tried again by the next flush or probe).
    fn rebuild<S: Durable + ?Sized>(
        &mut self,
        core: &mut Master,
        store: &S,
        now: Instant,
    ) -> Result<bool, StoreError> {
        match store.load() {
            Ok(snapshot) => {
                core.recover(snapshot, now);
                self.rebuilt = true;
                self.rebuilds += 1;
                if std::mem::take(&mut self.stale) {
                    info!("the store is reachable again: the core is rebuilt from it");
                }
                Ok(true)
            }
            Err(e) if e.is_unreachable() => {
                if self.refusing.is_none() {
                    warn!("the store is unreachable ({e}); retrying");
                }
                self.refusing = Some(ApiError::new(
                    503,
                    format!("the store is unreachable; nothing was changed ({e})"),
                ));
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// What API write requests get for a store error.
fn refusal(e: &StoreError) -> ApiError {
    let (status, what) = if e.is_unreachable() {
        (503, "the store is unreachable")
    } else if e.is_full() {
        (507, "the master's disk is full")
    } else if e.is_database() {
        (503, "the store refuses writes")
    } else {
        (500, "the store refused the change")
    };
    ApiError::new(status, format!("{what}; nothing was changed ({e})"))
}
