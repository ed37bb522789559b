//! A per-directory index of lower layers: each lower directory's listing, read once.
//!
//! Lower layers never change under a mount, so a directory's names can be read once
//! and kept. A lookup then touches only the layers that hold the name: a miss costs no
//! syscall at all, however many layers there are, and a merged listing reuses the
//! same reads. The index is bounded; when full it is dropped and refilled on demand.

use super::ids::LayerIndex;
use crate::layer::storemeta::StoredFile;
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
    /// Positions in `list` sorted by name, one per name (a name is not stored twice:
    /// the index is kept for large trees).
    by_name: Vec<u32>,
    /// The layer store's record of this directory's deduplicated files: what the
    /// layer's tar said of them (see `layer::storemeta`).
    pub record: Option<Vec<StoredFile>>,
}

impl DirIndex {
    pub(super) fn new(list: Vec<Listed>, record: Option<Vec<StoredFile>>) -> DirIndex {
        let mut by_name: Vec<u32> = (0..list.len() as u32).collect();
        // A layer's own entry wins over an OCI whiteout of the same name in it
        // (whiteouts apply to the layers below); else the first listed.
        by_name.sort_by(|&a, &b| {
            let (x, y) = (&list[a as usize], &list[b as usize]);
            x.name
                .cmp(&y.name)
                .then(x.whiteout.cmp(&y.whiteout))
                .then(a.cmp(&b))
        });
        by_name.dedup_by(|b, a| list[*a as usize].name == list[*b as usize].name);
        by_name.shrink_to_fit();
        DirIndex {
            list,
            by_name,
            record,
        }
    }

    pub(super) fn get(&self, name: &std::ffi::OsStr) -> Option<&Listed> {
        let i = self
            .by_name
            .binary_search_by(|&i| self.list[i as usize].name.as_os_str().cmp(name))
            .ok()?;
        self.list.get(self.by_name[i] as usize)
    }
}

pub(super) struct LowerIndex {
    dirs: DashMap<(LayerIndex, RelPath), Arc<DirIndex>>,
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

    pub(super) fn get(&self, layer: LayerIndex, path: &[u8]) -> Option<Arc<DirIndex>> {
        self.dirs.get(&(layer, path.to_vec())).map(|d| d.clone())
    }

    /// Forget the listing of `path` (a live lower layer changed it).
    pub(super) fn remove(&self, layer: LayerIndex, path: &[u8]) {
        self.dirs.remove(&(layer, path.to_vec()));
    }

    /// Forget the listings of `path` and every directory below it.
    pub(super) fn remove_below(&self, layer: LayerIndex, path: &[u8]) {
        self.dirs
            .retain(|(l, p), _| *l != layer || !crate::layer::is_at_or_below(p, path));
    }

    /// Forget every listing (a live lower layer changed in ways not reported).
    pub(super) fn clear(&self) {
        self.dirs.clear();
        self.used.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn insert(&self, layer: LayerIndex, path: &[u8], index: Arc<DirIndex>) {
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
