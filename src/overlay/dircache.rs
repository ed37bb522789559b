//! A bounded cache of open directory fds, keyed by (layer, path).
//!
//! Resolving a name opens its parent directory in every layer; listing a directory
//! and looking up each of its entries would reopen the same parents thousands of
//! times. Lower paths never change under a mount, so their fds stay valid; upper
//! paths change on rename and rmdir, and the union drops every upper entry then.
//! The bound keeps the daemon far from the open-file limit.

use super::ids::LayerIndex;
use crate::layer::RelPath;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Which layer a cached directory belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum LayerId {
    Upper,
    Lower(LayerIndex),
}

struct Entry {
    fd: Arc<OwnedFd>,
    last_used: u64,
}

pub(super) struct DirCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    map: HashMap<(LayerId, RelPath), Entry>,
    clock: u64,
}

impl DirCache {
    pub(super) fn new(capacity: usize) -> DirCache {
        DirCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                clock: 0,
            }),
            capacity: capacity.max(4),
        }
    }

    pub(super) fn get(&self, layer: LayerId, path: &[u8]) -> Option<Arc<OwnedFd>> {
        let mut g = self.inner.lock();
        g.clock += 1;
        let now = g.clock;
        // Borrowing a (LayerId, &[u8]) key needs an owned tuple; the copy is small
        // next to the syscalls it saves.
        let e = g.map.get_mut(&(layer, path.to_vec()))?;
        e.last_used = now;
        Some(e.fd.clone())
    }

    pub(super) fn insert(&self, layer: LayerId, path: &[u8], fd: Arc<OwnedFd>) {
        let mut g = self.inner.lock();
        g.clock += 1;
        let now = g.clock;
        if g.map.len() >= self.capacity {
            // Drop the least recently used quarter in one pass.
            let mut ages: Vec<u64> = g.map.values().map(|e| e.last_used).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 4];
            g.map.retain(|_, e| e.last_used > cutoff);
        }
        g.map
            .insert((layer, path.to_vec()), Entry { fd, last_used: now });
    }

    /// Forget every upper directory (their paths may have changed).
    pub(super) fn drop_upper(&self) {
        self.inner
            .lock()
            .map
            .retain(|(l, _), _| *l != LayerId::Upper);
    }

    /// Forget every lower directory (live lower layers changed in ways not reported).
    pub(super) fn drop_lower(&self) {
        self.inner
            .lock()
            .map
            .retain(|(l, _), _| *l == LayerId::Upper);
    }

    /// Forget `path` of `layer` and every directory below it (a live lower layer
    /// removed or moved it).
    pub(super) fn remove_below(&self, layer: LayerId, path: &[u8]) {
        self.inner
            .lock()
            .map
            .retain(|(l, p), _| *l != layer || !crate::layer::is_at_or_below(p, path));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Arc<OwnedFd> {
        Arc::new(OwnedFd::from(std::fs::File::open("/").unwrap()))
    }

    #[test]
    fn stays_bounded_and_forgets_upper() {
        let c = DirCache::new(8);
        for i in 0..20u8 {
            c.insert(LayerId::Lower(LayerIndex::for_test(0)), &[i], fd());
        }
        assert!(c.len() <= 8);
        c.insert(LayerId::Upper, b"a", fd());
        assert!(c.get(LayerId::Upper, b"a").is_some());
        c.drop_upper();
        assert!(c.get(LayerId::Upper, b"a").is_none());
        assert!(
            c.get(LayerId::Lower(LayerIndex::for_test(0)), &[19])
                .is_some()
        );
    }
}
