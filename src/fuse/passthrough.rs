//! FUSE passthrough: the kernel reads and writes an open file's backing fd directly.
//!
//! The kernel allows one backing file per inode, and refuses a passthrough open of an
//! inode that also has files open through the page cache (and the reverse). So an
//! inode's opens are tracked here: passthrough only while no cached open exists, one
//! backing file (of the transport's kind `B`) shared by all passthrough opens of the
//! inode, dropped with the last.

use crate::overlay::{HandleId, NodeId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

struct InodeIo<B> {
    cached: u32,
    passthrough: u32,
    backing: Option<Arc<B>>,
}

impl<B> Default for InodeIo<B> {
    fn default() -> Self {
        InodeIo {
            cached: 0,
            passthrough: 0,
            backing: None,
        }
    }
}

/// How one open file is served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cached,
    Passthrough,
}

/// What [`PassthroughTable::open`] decided for one open file.
pub enum Served<B> {
    Passthrough(Arc<B>),
    /// Through the page cache, by the daemon.
    Cached,
    /// By the daemon, direct I/O (the inode has passthrough opens).
    Direct,
}

pub struct PassthroughTable<B> {
    inodes: Mutex<HashMap<NodeId, InodeIo<B>>>,
    handles: Mutex<HashMap<HandleId, (NodeId, Mode)>>,
}

impl<B> Default for PassthroughTable<B> {
    fn default() -> Self {
        PassthroughTable {
            inodes: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
        }
    }
}

impl<B> PassthroughTable<B> {
    /// Decide how handle `fh` of inode `ino` is served. `make` opens a backing id
    /// when one is needed; `None` from it (or a cached open of the inode) means the
    /// daemon serves the file.
    pub fn open(
        &self,
        ino: NodeId,
        fh: HandleId,
        may_pass: bool,
        make: impl FnOnce() -> Option<B>,
    ) -> Served<B> {
        let mut inodes = self.inodes.lock();
        let io = inodes.entry(ino).or_default();
        // A file the daemon must serve itself while passthrough opens of its inode are
        // live (their release may still be on its way): direct I/O, which the kernel
        // allows beside them, where a cached open would be refused (ETXTBSY).
        // Such an open counts as neither kind, so it is not recorded (its release finds
        // nothing to undo).
        if !may_pass && io.backing.is_some() {
            return Served::Direct;
        }
        let backing = if io.cached == 0 && may_pass {
            match &io.backing {
                Some(b) => Some(b.clone()),
                None => make().map(Arc::new),
            }
        } else {
            None
        };
        let (mode, served) = match backing {
            Some(b) => {
                io.backing = Some(b.clone());
                io.passthrough += 1;
                (Mode::Passthrough, Served::Passthrough(b))
            }
            None => {
                io.cached += 1;
                (Mode::Cached, Served::Cached)
            }
        };
        drop(inodes);
        self.handles.lock().insert(fh, (ino, mode));
        served
    }

    /// Handle `fh` was released.
    pub fn release(&self, fh: HandleId) {
        let Some((ino, mode)) = self.handles.lock().remove(&fh) else {
            return;
        };
        let mut inodes = self.inodes.lock();
        if let Some(io) = inodes.get_mut(&ino) {
            match mode {
                Mode::Cached => io.cached = io.cached.saturating_sub(1),
                Mode::Passthrough => io.passthrough = io.passthrough.saturating_sub(1),
            }
            if io.passthrough == 0 {
                io.backing = None;
            }
            if io.cached == 0 && io.passthrough == 0 {
                inodes.remove(&ino);
            }
        }
    }
}
