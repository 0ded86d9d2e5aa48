//! The commit rule in one place: drain the core's actions, apply the batch's changes to the
//! store in one transaction, and only then hand back what may be published, in order. Used by
//! the runtime, the system simulation and the test rigs.

use crate::core::{Action, Master, Publish};
use crate::persist;
use crate::store::{Store, StoreError};

/// Commits what the core has queued since the last call. On `Err` nothing of the batch may be
/// published (the core has moved past the store: rebuild it with `Master::recover`).
pub fn commit(core: &mut Master, store: &Store) -> Result<Vec<Publish>, StoreError> {
    let mut changes = Vec::new();
    let mut publishes = Vec::new();
    while let Some(action) = core.poll_action() {
        match action {
            Action::Persist(c) => changes.push(c),
            Action::Publish(p) => publishes.push(p),
        }
    }
    persist::apply(store, &changes)?;
    Ok(publishes)
}
