//! The tree lock, as types. A node's upper path is computed from its chain of
//! parents and names, which only rename changes: the lock keeps such a path true for
//! as long as it is held. What needs that takes a `&Tree` (the lock held, either way);
//! a path computed with it ([`UpperPath`]) borrows it, so the compiler refuses a path
//! kept across anything that may let go of the lock.
//!
//! - [`TreeRead`]: every operation that turns nodes into upper paths. Taken
//!   recursively (a reader never queues behind a waiting rename, so a rename waiting
//!   for readers never holds up a stat). Copy-up takes it `&mut`: it lets go of the
//!   lock while it copies data and takes it again to put the copy in place, so no data
//!   copy ever runs with the lock held.
//! - [`TreeWrite`]: rename's move, and a removal's change of the name (unlink,
//!   whiteout or move into the work dir, with the node's mark). Nothing that copies
//!   data accepts it: rename copies up its source, and a removal the parent and the
//!   index copy of a lower hard link, before they take the lock; a removal deletes what
//!   it moved into the work dir after it lets go.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::marker::PhantomData;
use std::ops::Deref;

/// The lock itself (one per union).
#[derive(Debug, Default)]
pub(super) struct TreeLock(RwLock<()>);

impl TreeLock {
    pub(super) fn read(&self) -> TreeRead<'_> {
        TreeRead(self.0.read_recursive())
    }

    pub(super) fn write(&self) -> TreeWrite<'_> {
        TreeWrite(self.0.write())
    }
}

/// Proof that the tree lock is held, for reading or writing. Only a guard hands one
/// out, borrowed from itself.
#[derive(Debug)]
pub(super) struct Tree(());

static HELD: Tree = Tree(());

/// The tree lock held for reading.
pub(super) struct TreeRead<'a>(RwLockReadGuard<'a, ()>);

impl TreeRead<'_> {
    /// Run `f` with the lock let go (a data copy), and hold it again after.
    pub(super) fn unlocked<T>(&mut self, f: impl FnOnce() -> T) -> T {
        RwLockReadGuard::unlocked(&mut self.0, f)
    }
}

impl Deref for TreeRead<'_> {
    type Target = Tree;
    fn deref(&self) -> &Tree {
        &HELD
    }
}

/// The tree lock held for writing (rename's move, a removal's change of the name).
pub(super) struct TreeWrite<'a>(#[allow(dead_code)] RwLockWriteGuard<'a, ()>);

impl Deref for TreeWrite<'_> {
    type Target = Tree;
    fn deref(&self) -> &Tree {
        &HELD
    }
}

/// A node's path in the upper layer, true while the lock it was computed under is held.
#[derive(Debug)]
pub(super) struct UpperPath<'t> {
    path: Vec<u8>,
    _held: PhantomData<&'t Tree>,
}

impl UpperPath<'_> {
    pub(super) fn new(_t: &Tree, path: Vec<u8>) -> UpperPath<'_> {
        UpperPath {
            path,
            _held: PhantomData,
        }
    }
}

impl Deref for UpperPath<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.path
    }
}
