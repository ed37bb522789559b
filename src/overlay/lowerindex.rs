//! A per-directory index of lower layers: each lower directory's listing, read once.
//!
//! Lower layers never change under a mount, so a directory's names can be read once
//! and kept. A lookup then touches only the layers that hold the name: a miss costs no
//! syscall at all, however many layers there are, and a merged listing reuses the
//! same reads. The index is bounded; when full it is dropped and refilled on demand.

use crate::layer::{Listed, RelPath};
use dashmap::DashMap;
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;

/// What one lower directory holds.
#[derive(Debug, Default)]
pub(super) struct DirIndex {
    /// Every entry in listing order, whiteouts included.
    pub list: Vec<Listed>,
    /// Position in `list` by name.
    by_name: HashMap<OsString, usize>,
}

impl DirIndex {
    pub(super) fn new(list: Vec<Listed>) -> DirIndex {
        let mut by_name: HashMap<OsString, usize> = HashMap::with_capacity(list.len());
        for (i, e) in list.iter().enumerate() {
            // A layer's own entry wins over an OCI whiteout of the same name in it
            // (whiteouts apply to the layers below).
            match by_name.get(&e.name) {
                Some(&j) if !list[j].whiteout => {}
                _ => {
                    by_name.insert(e.name.clone(), i);
                }
            }
        }
        DirIndex { list, by_name }
    }

    pub(super) fn get(&self, name: &std::ffi::OsStr) -> Option<&Listed> {
        self.by_name.get(name).and_then(|&i| self.list.get(i))
    }
}

pub(super) struct LowerIndex {
    dirs: DashMap<(usize, RelPath), Arc<DirIndex>>,
    /// Entries (names) kept at most, over all directories.
    budget: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl LowerIndex {
    pub(super) fn new(budget: usize) -> LowerIndex {
        LowerIndex {
            dirs: DashMap::new(),
            budget,
            used: Default::default(),
        }
    }

    pub(super) fn get(&self, layer: usize, path: &[u8]) -> Option<Arc<DirIndex>> {
        self.dirs.get(&(layer, path.to_vec())).map(|d| d.clone())
    }

    pub(super) fn insert(&self, layer: usize, path: &[u8], index: Arc<DirIndex>) {
        use std::sync::atomic::Ordering;
        let n = index.list.len() + 1;
        if self.used.fetch_add(n, Ordering::Relaxed) + n > self.budget {
            self.dirs.clear();
            self.used.store(n, Ordering::Relaxed);
        }
        self.dirs.insert((layer, path.to_vec()), index);
    }
}

/// Names of a whole lower stack: for each, the position of the first layer that
/// holds it. Kept only for stacks of at most `StackNames::MAX_NAMES` entries in all.
#[derive(Debug)]
pub(super) struct StackNames {
    first: HashMap<OsString, usize>,
}

impl StackNames {
    const MAX_NAMES: usize = 200_000;

    /// From the index of each layer of the stack, topmost first (`None`: the directory
    /// is not in that layer). `None` when the stack holds too many names.
    pub(super) fn build(layers: &[Option<Arc<DirIndex>>]) -> Option<StackNames> {
        let total: usize = layers.iter().flatten().map(|d| d.list.len()).sum();
        if total > Self::MAX_NAMES {
            return None;
        }
        let mut first = HashMap::with_capacity(total);
        for (pos, dir) in layers.iter().enumerate() {
            for e in dir.iter().flat_map(|d| d.list.iter()) {
                first.entry(e.name.clone()).or_insert(pos);
            }
        }
        Some(StackNames { first })
    }

    pub(super) fn first(&self, name: &std::ffi::OsStr) -> Option<usize> {
        self.first.get(name).copied()
    }
}
