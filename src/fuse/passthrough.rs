//! FUSE passthrough: the kernel reads and writes an open file's backing fd directly.
//!
//! The kernel allows one backing file per inode, and refuses a passthrough open of an
//! inode that also has files open through the page cache (and the reverse). So an
//! inode's opens are tracked here: passthrough only while no cached open exists, one
//! backing file (of the transport's kind `B`) shared by all passthrough opens of the
//! inode, dropped with the last.
//!
//! The kernel opens the backing file again with each open's own flags, so an open must
//! never share the backing of another file (a writer given a reader's lower backing
//! would write the lower layer). Each backing therefore carries the identity of the
//! file it was made from, and an open of another file is served by the daemon while
//! it lives.

use crate::overlay::{HandleId, NodeId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Which file a backing was made from: (device, inode number).
pub type FileId = (u64, u64);

struct InodeIo<B> {
    cached: u32,
    passthrough: u32,
    /// The live backing and the file it reads and writes.
    backing: Option<(Arc<B>, FileId)>,
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
    /// Decide how handle `fh` of inode `ino` is served. `file`: the file a backing
    /// would be made from, None where passthrough is not allowed; `make` opens a
    /// backing id when one is needed. `None` from it (or a cached open of the inode)
    /// means the daemon serves the file.
    pub fn open(
        &self,
        ino: NodeId,
        fh: HandleId,
        file: Option<FileId>,
        make: impl FnOnce() -> Option<B>,
    ) -> Served<B> {
        let mut inodes = self.inodes.lock();
        let io = inodes.entry(ino).or_default();
        // A file the daemon must serve itself while passthrough opens of its inode are
        // live (their release may still be on its way), or an open of another file than
        // theirs: direct I/O, which the kernel allows beside them, where a cached open
        // would be refused (ETXTBSY). Such an open counts as neither kind, so it is not
        // recorded (its release finds nothing to undo).
        if let Some((_, live)) = &io.backing
            && file != Some(*live)
        {
            return Served::Direct;
        }
        let backing = match file {
            Some(id) if io.cached == 0 => match &io.backing {
                Some((b, _)) => Some((b.clone(), id)),
                None => make().map(|b| (Arc::new(b), id)),
            },
            _ => None,
        };
        let (mode, served) = match backing {
            Some((b, id)) => {
                io.backing = Some((b.clone(), id));
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

    /// The file whose backing passthrough opens of `ino` share, while they live.
    pub fn live_file(&self, ino: NodeId) -> Option<FileId> {
        let inodes = self.inodes.lock();
        inodes.get(&ino)?.backing.as_ref().map(|(_, id)| *id)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn served(s: &Served<u32>) -> &'static str {
        match s {
            Served::Passthrough(_) => "passthrough",
            Served::Cached => "cached",
            Served::Direct => "direct",
        }
    }

    #[test]
    fn opens_of_one_file_share_its_backing() {
        let t = PassthroughTable::<u32>::default();
        let (ino, lower) = (NodeId::new(7), (1, 10));
        let a = t.open(ino, HandleId::new(1), Some(lower), || Some(1));
        let b = t.open(ino, HandleId::new(2), Some(lower), || Some(2));
        match (&a, &b) {
            (Served::Passthrough(x), Served::Passthrough(y)) => assert!(Arc::ptr_eq(x, y)),
            _ => panic!("{} {}", served(&a), served(&b)),
        }
    }

    /// A reader holds the lower file by passthrough; the writer after the copy-up opens
    /// the upper copy: it must not get the reader's backing (it would write the lower
    /// layer), and is served by the daemon until the reader is gone.
    #[test]
    fn an_open_of_another_file_never_gets_the_live_backing() {
        let t = PassthroughTable::<u32>::default();
        let (ino, lower, upper) = (NodeId::new(7), (1, 10), (2, 20));
        let r = t.open(ino, HandleId::new(1), Some(lower), || Some(1));
        assert_eq!(served(&r), "passthrough");
        let w = t.open(ino, HandleId::new(2), Some(upper), || Some(2));
        assert_eq!(served(&w), "direct");
        let n = t.open(ino, HandleId::new(3), None, || Some(3));
        assert_eq!(served(&n), "direct");
        t.release(HandleId::new(1));
        t.release(HandleId::new(2));
        t.release(HandleId::new(3));
        let w = t.open(ino, HandleId::new(4), Some(upper), || Some(4));
        match w {
            Served::Passthrough(b) => assert_eq!(*b, 4, "a backing of the upper file"),
            other => panic!("{}", served(&other)),
        }
    }
}
