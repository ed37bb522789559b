//! Directory listings without OPENDIR.
//!
//! When the kernel supports `FUSE_NO_OPENDIR_SUPPORT` the daemon answers the first
//! OPENDIR with ENOSYS; from then on the kernel opens directories by itself (no
//! OPENDIR, no RELEASEDIR: two round trips fewer per directory walked) and keeps every
//! listing in its page cache (`FOPEN_CACHE_DIR`), dropping it when the directory
//! changes through the mount. READDIR then arrives with file handle 0, so the daemon
//! keeps the stream of each listing itself: an offset carries the stream's id in its
//! high bits and the entry's position in its low bits, and a stream holds one snapshot
//! of the listing (an open directory handle of the union), so telldir/seekdir stay
//! valid while the directory changes, as with a handle per open directory.
//!
//! A stream ends when its end is read. Streams left unfinished (a reader that stopped
//! early) are bounded: the least recently used one is dropped; an offset of a dropped
//! stream continues at the same position of a fresh snapshot.

use crate::overlay::{HandleId, NodeId, Overlay, SysResult};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of an offset that hold the position (index + 1) within the listing.
const INDEX_BITS: u32 = 32;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// Stream ids stay below 2^31, so an offset stays below 2^63 (a positive loff_t).
const ID_MASK: u64 = (1 << 31) - 1;
/// Unfinished streams kept at most.
const CAPACITY: usize = 256;

struct Open {
    ino: NodeId,
    /// The union's directory handle holding the snapshot.
    fh: HandleId,
    used: u64,
}

/// A listing being read: the union's directory handle and where to go on.
pub struct Stream {
    pub fh: HandleId,
    pub id: u64,
    /// Entries already read (the index of the next one).
    pub index: u64,
}

impl Stream {
    /// The offset the kernel passes back to read on after entry `index`.
    pub fn offset_after(&self, index: usize) -> u64 {
        (self.id << INDEX_BITS) | ((index as u64 + 1) & INDEX_MASK)
    }
}

#[derive(Default)]
pub struct DirStreams {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

impl DirStreams {
    fn new_id(&self) -> u64 {
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & ID_MASK;
            if id != 0 {
                return id;
            }
        }
    }

    /// The stream a READDIR of `ino` at `offset` reads: offset 0 starts a new one.
    pub fn resume(&self, overlay: &Overlay, ino: NodeId, offset: u64) -> SysResult<Stream> {
        let id = offset >> INDEX_BITS;
        let index = offset & INDEX_MASK;
        let tick = self.next.load(Ordering::Relaxed);
        if offset != 0 && id != 0 {
            let mut open = self.open.lock();
            if let Some(o) = open.get_mut(&id)
                && o.ino == ino
            {
                o.used = tick;
                return Ok(Stream {
                    fh: o.fh,
                    id,
                    index,
                });
            }
        }
        // A new listing, or an offset of a stream no longer held: a fresh snapshot
        // (taken by the first read of the new handle), read on at the same position.
        let (fh, _) = overlay.opendir(ino)?;
        let id = if offset == 0 || id == 0 {
            self.new_id()
        } else {
            id
        };
        let dropped = {
            let mut open = self.open.lock();
            let mut dropped = open
                .insert(
                    id,
                    Open {
                        ino,
                        fh,
                        used: tick,
                    },
                )
                .map(|o| o.fh);
            if dropped.is_none() && open.len() > CAPACITY {
                let oldest = open
                    .iter()
                    .filter(|(k, _)| **k != id)
                    .min_by_key(|(_, o)| o.used)
                    .map(|(k, _)| *k);
                dropped = oldest.and_then(|k| open.remove(&k)).map(|o| o.fh);
            }
            dropped
        };
        if let Some(old) = dropped {
            overlay.releasedir(old);
        }
        Ok(Stream { fh, id, index })
    }

    /// The end of the listing was read: drop its snapshot.
    pub fn finish(&self, overlay: &Overlay, stream: &Stream) {
        let removed = {
            let mut open = self.open.lock();
            match open.get(&stream.id) {
                Some(o) if o.fh == stream.fh => open.remove(&stream.id),
                _ => None,
            }
        };
        if let Some(o) = removed {
            overlay.releasedir(o.fh);
        }
    }
}
