//! The commit rule of [`crate::core`] in one place: drain the core's actions, apply every
//! `Persist` change of the batch to the [`Store`] in ONE transaction, and only after that
//! commit hand back the batch's publishes, in order. An acknowledgement therefore never leaves
//! before the event it acknowledges is stored. The runtime, the simulation and the test rigs
//! all drain through here.

use crate::core::{Action, Change, Master, Publish};
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
