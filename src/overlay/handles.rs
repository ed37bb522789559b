//! Open files and directories: the fd behind each FUSE file handle, and reads and
//! writes through it.

use super::dir::DirEntry;
use super::ids::{HandleId, NodeId};
use super::node::Node;
use super::place::Place;
use super::tree::Tree;
use super::{Overlay, copyup::Data};
use crate::sys::{self, Errno, FileKind, Stat, SysResult, oflag};
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the kernel should treat an opened file.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenInfo {
    /// The content cannot have changed behind the kernel's page cache.
    pub keep_cache: bool,
}

/// One open file.
#[derive(Debug)]
pub(super) struct FileHandle {
    node: Arc<Node>,
    /// The fd reads and writes go to. Swapped for the upper file when a handle that
    /// was opened on a lower file sees the node copied up (so it reads new data, as
    /// the kernel's overlayfs does).
    fd: RwLock<Arc<OwnedFd>>,
    on_lower: std::sync::atomic::AtomicBool,
    /// For a metadata-only copy read through its lower data file: the upper file
    /// (`O_PATH`), whose owner, mode and times are the node's.
    meta: Option<OwnedFd>,
    /// The file's `security.capability`, if it had one when opened for writing:
    /// writes from the page cache (mmap) must not strip it, but the upper
    /// filesystem strips it on every write the daemon makes.
    capability: Option<Vec<u8>>,
    /// Sequential reads: where the last read ended, and how far the file is already
    /// being read ahead (see `read_ahead`).
    next_read: AtomicU64,
    ahead: AtomicU64,
}

const CAPABILITY: &str = "security.capability";

/// How far ahead of a sequential reader the daemon asks the disk to read. The kernel
/// reads a FUSE file ahead in windows of its default 128 KiB (a FUSE mount's bdi
/// never gets a bigger one), so without this each READ was one 128 KiB read from a
/// cold disk, waited for in turn: the disk idled during every round trip. Kernel
/// overlayfs reads the real file with the lower filesystem's window instead.
const READ_AHEAD: u64 = 8 << 20;

/// One open directory: a snapshot of its merged listing, taken when reading starts
/// at offset 0, so offsets stay valid while the directory changes.
#[derive(Debug)]
pub(super) struct DirHandle {
    node: Arc<Node>,
    pub(super) snapshot: Mutex<Option<Arc<Vec<DirEntry>>>>,
}

#[derive(Debug)]
pub(super) enum Handle {
    File(FileHandle),
    Dir(DirHandle),
}

#[derive(Debug, Default)]
pub(super) struct HandleTable {
    handles: DashMap<HandleId, Arc<Handle>>,
    next: AtomicU64,
}

impl HandleTable {
    pub(super) fn len(&self) -> usize {
        self.handles.len()
    }

    fn insert(&self, h: Handle) -> HandleId {
        let fh = HandleId::new(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.handles.insert(fh, Arc::new(h));
        fh
    }

    fn get(&self, fh: HandleId) -> SysResult<Arc<Handle>> {
        self.handles.get(&fh).map(|h| h.clone()).ok_or(Errno::EBADF)
    }

    fn remove(&self, fh: HandleId) {
        self.handles.remove(&fh);
    }

    /// The open files of `node` still reading its lower data.
    fn on_lower_of(&self, node: &Arc<Node>) -> Vec<Arc<Handle>> {
        self.handles
            .iter()
            .filter(|h| match &**h.value() {
                Handle::File(f) => Arc::ptr_eq(&f.node, node) && f.on_lower.load(Ordering::Acquire),
                Handle::Dir(_) => false,
            })
            .map(|h| h.value().clone())
            .collect()
    }

    /// The first answer `f` gives for an open file.
    fn find_file<T>(&self, mut f: impl FnMut(&FileHandle) -> Option<T>) -> Option<T> {
        self.handles.iter().find_map(|h| match &**h.value() {
            Handle::File(file) => f(file),
            Handle::Dir(_) => None,
        })
    }

    /// The fd of an open file of `node` that reaches its upper object.
    pub(super) fn upper_fd_of(&self, node: &Arc<Node>) -> Option<Arc<OwnedFd>> {
        self.find_file(|f| {
            (Arc::ptr_eq(&f.node, node) && !f.on_lower.load(Ordering::Acquire))
                .then(|| f.fd.read().clone())
        })
    }

    /// fstat through any open file of node `ino` (the kernel asks getattr without a
    /// handle even for fstat; after the last unlink only an open fd still reaches it).
    pub(super) fn fstat_any_of(&self, ino: NodeId) -> Option<Stat> {
        self.find_file(|f| if f.node.ino == ino { f.stat() } else { None })
    }

    /// fstat through an open file handle (sees nlink 0 after the last unlink).
    pub(super) fn fstat(&self, fh: HandleId) -> Option<Stat> {
        match &*self.get(fh).ok()? {
            Handle::File(f) => f.stat(),
            Handle::Dir(_) => None,
        }
    }
}

impl FileHandle {
    /// The file's attributes: the upper file's for a metadata-only copy still read
    /// through its lower data.
    fn stat(&self) -> Option<Stat> {
        match &self.meta {
            Some(m) if self.on_lower.load(Ordering::Acquire) => sys::stat_fd(sys::borrow(m)).ok(),
            _ => sys::stat_fd(sys::borrow(&self.fd.read())).ok(),
        }
    }
}

fn wants_write(flags: i32) -> bool {
    flags & oflag::ACCMODE != oflag::RDONLY || flags & oflag::TRUNC != 0
}

/// Flags the backing open keeps: the kernel already handled creation, and the
/// daemon writes at the offsets the kernel gives (O_APPEND would override them).
fn backing_flags(flags: i32) -> i32 {
    (flags & (oflag::ACCMODE | oflag::SYNC | oflag::NONBLOCK | oflag::TRUNC))
        & !(oflag::CREAT | oflag::EXCL)
}

impl Overlay {
    /// Open a file: copy it up first if the open may write.
    pub fn open(&self, ino: NodeId, flags: i32) -> SysResult<(HandleId, OpenInfo)> {
        let node = self.node(ino)?;
        if node.kind() == FileKind::Directory {
            return Err(Errno::EISDIR);
        }
        let write = wants_write(flags);
        if let Place::Graft(at) = self.place(&node) {
            let g = self.graft(&at)?;
            if write {
                g.writable()?;
            }
            let (layer, path) = g.entry(&at.path)?;
            let fd = layer.open_file(&path, backing_flags(flags))?;
            let fh = self.insert_file_handle(node.clone(), fd);
            // The host may change a grafted file: no page cache kept across opens.
            return Ok((fh, OpenInfo { keep_cache: false }));
        }
        if write && self.upper.is_none() {
            return Err(Errno::EROFS);
        }
        let mut t = self.tree.read();
        if write {
            let data = if flags & oflag::TRUNC != 0 {
                Data::Empty
            } else {
                Data::Full
            };
            self.copy_up(&mut t, &node, data)?;
        }
        // A removal through the union marks the node in the same step (see `remove`), so
        // its path never holds the whiteout it left; an upper changed from outside can
        // still put one (a char device 0/0, whose open says ENXIO) at a file's name:
        // never an answer for a file, which is gone from there.
        let fd = self
            .open_backing(&t, &node, backing_flags(flags))
            .map_err(|e| match (e, node.kind()) {
                (Errno::ENXIO, FileKind::Regular | FileKind::Symlink) => Errno::ENOENT,
                (e, _) => e,
            })?;
        let (on_lower, metacopy) = {
            let s = node.state.read();
            (!s.data_upper(), s.metacopy)
        };
        let meta = if metacopy {
            let (dir, name) = self.upper_object(&t, &node)?;
            Some(sys::open_path_at(sys::borrow(&dir), &name)?)
        } else {
            None
        };
        let capability = if write {
            sys::get_xattr(sys::borrow(&fd), std::ffi::OsStr::new(CAPABILITY)).ok()
        } else {
            None
        };
        let fh = self.handles.insert(Handle::File(FileHandle {
            node,
            fd: RwLock::new(Arc::new(fd)),
            on_lower: on_lower.into(),
            meta,
            capability,
            next_read: AtomicU64::new(0),
            ahead: AtomicU64::new(0),
        }));
        Ok((fh, OpenInfo { keep_cache: true }))
    }

    /// Open the file whose data a node shows now (the lower file of a metadata-only
    /// copy).
    pub(super) fn open_backing(&self, t: &Tree, node: &Node, flags: i32) -> SysResult<OwnedFd> {
        let upper = node.state.read().data_upper();
        let lower = if upper { None } else { self.first_lower(node) };
        if upper {
            let (dir, name) = self.upper_object(t, node)?;
            sys::open_at(sys::borrow(&dir), &name, flags, 0)
        } else {
            let l = lower.ok_or(Errno::ENOENT)?;
            self.lowers[l.layer].open_file(&l.path, flags & !oflag::TRUNC)
        }
    }

    /// `node`'s data was just copied up: its files open on the lower data move to the
    /// copy now, while its name still leads to it (a rename over that name may follow
    /// before their next read).
    pub(super) fn follow_copy_up(&self, t: &Tree, node: &Arc<Node>) {
        if node.kind() != FileKind::Regular || !node.state.read().data_upper() {
            return;
        }
        for h in self.handles.on_lower_of(node) {
            let Handle::File(f) = &*h else { continue };
            if let Ok(fd) = self.open_backing(t, node, oflag::RDONLY) {
                *f.fd.write() = Arc::new(fd);
                f.on_lower.store(false, Ordering::Release);
            }
        }
    }

    /// Register an fd opened by `create`.
    pub(super) fn insert_file_handle(&self, node: Arc<Node>, fd: OwnedFd) -> HandleId {
        self.handles.insert(Handle::File(FileHandle {
            node,
            fd: RwLock::new(Arc::new(fd)),
            on_lower: false.into(),
            meta: None,
            capability: None,
            next_read: AtomicU64::new(0),
            ahead: AtomicU64::new(0),
        }))
    }

    fn file(&self, fh: HandleId) -> SysResult<Arc<Handle>> {
        let h = self.handles.get(fh)?;
        match &*h {
            Handle::File(_) => Ok(h),
            Handle::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// The fd of a file handle, switched to the upper copy if the node was copied up
    /// since the handle was opened on its lower file.
    fn file_fd(&self, fh: HandleId) -> SysResult<Arc<OwnedFd>> {
        let h = self.file(fh)?;
        let Handle::File(f) = &*h else {
            return Err(Errno::EBADF);
        };
        if f.on_lower.load(Ordering::Acquire) && f.node.state.read().data_upper() {
            let t = self.tree.read();
            let fd = self.open_backing(&t, &f.node, oflag::RDONLY)?;
            *f.fd.write() = Arc::new(fd);
            f.on_lower.store(false, Ordering::Release);
        }
        Ok(f.fd.read().clone())
    }

    pub fn read(&self, fh: HandleId, offset: u64, size: u32) -> SysResult<Vec<u8>> {
        let fd = self.file_fd(fh)?;
        let data = sys::read_exact_at(sys::borrow(&fd), size as usize, offset)?;
        self.read_ahead(fh, &fd, offset, data.len() as u64);
        Ok(data)
    }

    /// A read of `len` bytes at `offset` was served: if it continues the previous one,
    /// keep the disk reading up to [`READ_AHEAD`] beyond it (refilled when half of it
    /// was consumed), so the next READs find the pages in memory. Only a hint: pages
    /// the file no longer needs are the page cache's to drop.
    fn read_ahead(&self, fh: HandleId, fd: &OwnedFd, offset: u64, len: u64) {
        let Ok(h) = self.file(fh) else { return };
        let Handle::File(f) = &*h else { return };
        let end = offset + len;
        let sequential = f.next_read.swap(end, Ordering::Relaxed) == offset && len > 0;
        if !sequential {
            return;
        }
        let ahead = f.ahead.load(Ordering::Relaxed).max(end);
        if ahead >= end + READ_AHEAD / 2 {
            return;
        }
        let until = end + READ_AHEAD;
        f.ahead.store(until, Ordering::Relaxed);
        sys::will_need(sys::borrow(fd), ahead, until - ahead);
    }

    /// The file a read of `len` bytes at `offset` of `fh` reads (a transport that
    /// moves the bytes itself), the daemon's readahead of it started.
    pub fn read_source(&self, fh: HandleId, offset: u64, len: u64) -> SysResult<Arc<OwnedFd>> {
        let fd = self.file_fd(fh)?;
        self.read_ahead(fh, &fd, offset, len);
        Ok(fd)
    }

    /// Read at `offset` into `buf` (a transport's reply buffer), up to its length or
    /// the end of the file; the bytes read.
    pub fn read_into(&self, fh: HandleId, offset: u64, buf: &mut [u8]) -> SysResult<usize> {
        let fd = self.file_fd(fh)?;
        let mut done = 0;
        while done < buf.len() {
            let n = sys::pread(sys::borrow(&fd), &mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        self.read_ahead(fh, &fd, offset, done as u64);
        Ok(done)
    }

    /// Write at `offset`. `from_page_cache`: the kernel is writing back pages (mmap),
    /// which never strips privileges.
    pub fn write(
        &self,
        fh: HandleId,
        offset: u64,
        data: &[u8],
        from_page_cache: bool,
    ) -> SysResult<u32> {
        let fd = self.file_fd(fh)?;
        let keep_cap = if from_page_cache {
            match &*self.handles.get(fh)? {
                Handle::File(f) => f.capability.clone(),
                Handle::Dir(_) => None,
            }
        } else {
            None
        };
        let mut done = 0;
        while done < data.len() {
            let n = sys::pwrite(sys::borrow(&fd), &data[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        if let Some(cap) = keep_cap {
            let _ = sys::set_xattr(sys::borrow(&fd), std::ffi::OsStr::new(CAPABILITY), &cap, 0);
        }
        Ok(done as u32)
    }

    pub fn fsync(&self, fh: HandleId, datasync: bool) -> SysResult<()> {
        if self.volatile {
            return Ok(());
        }
        let h = self.handles.get(fh)?;
        match &*h {
            Handle::File(f) => {
                let fd = f.fd.read().clone();
                if datasync {
                    sys::fdatasync(sys::borrow(&fd))
                } else {
                    sys::fsync(sys::borrow(&fd))
                }
            }
            Handle::Dir(d) => {
                let t = self.tree.read();
                let fd = match self.place(&d.node) {
                    Place::Graft(at) => {
                        let (layer, path) = self.graft(&at)?.entry(&at.path)?;
                        layer.open_dir(&path)?
                    }
                    Place::Upper => self
                        .upper()?
                        .layer
                        .open_dir(&self.upper_path(&t, &d.node))?,
                    // Nothing of it is the union's to make durable.
                    Place::Lower => return Ok(()),
                };
                sys::fsync(sys::borrow(&fd))
            }
        }
    }

    /// The fd the kernel may read and write directly (FUSE passthrough) for an open
    /// file: a regular file in the upper layer or in a graft. A lower file is served
    /// by the daemon, so that a reader opened before a copy-up can move to the copy,
    /// as on kernel overlayfs — except in a union without an upper, where no copy-up
    /// can ever reach it: there the kernel reads the lower (data) file itself.
    /// With the fd, the identity (device, inode number) of the file it opens.
    pub fn backing_file(&self, fh: HandleId) -> Option<(Arc<OwnedFd>, (u64, u64))> {
        let h = self.handles.get(fh).ok()?;
        let Handle::File(f) = &*h else { return None };
        let never_copied_up = self.is_read_only();
        let eligible = f.node.kind() == FileKind::Regular
            && (never_copied_up
                || (self.place(&f.node) != Place::Lower && !f.on_lower.load(Ordering::Acquire)));
        if !eligible {
            return None;
        }
        let fd = f.fd.read().clone();
        let st = sys::stat_fd(sys::borrow(&fd)).ok()?;
        Some((fd, (st.dev, st.ino)))
    }

    /// The inode number of the node an open file handle belongs to.
    pub fn handle_ino(&self, fh: HandleId) -> Option<NodeId> {
        match &*self.handles.get(fh).ok()? {
            Handle::File(f) => Some(f.node.ino),
            Handle::Dir(d) => Some(d.node.ino),
        }
    }

    pub fn release(&self, fh: HandleId) {
        self.handles.remove(fh);
    }

    pub fn fallocate(&self, fh: HandleId, offset: u64, len: u64, mode: i32) -> SysResult<()> {
        let fd = self.file_fd(fh)?;
        sys::fallocate(sys::borrow(&fd), mode, offset, len)
    }

    pub fn lseek(&self, fh: HandleId, offset: i64, whence: i32) -> SysResult<i64> {
        let fd = self.file_fd(fh)?;
        sys::lseek(sys::borrow(&fd), offset, whence)
    }

    pub fn copy_file_range(
        &self,
        fh_in: HandleId,
        off_in: u64,
        fh_out: HandleId,
        off_out: u64,
        len: u64,
    ) -> SysResult<u32> {
        let src = self.file_fd(fh_in)?;
        let dst = self.file_fd(fh_out)?;
        let len = len.min(u32::MAX as u64 & !0xfff) as usize;
        let n = sys::copy_range(sys::borrow(&src), off_in, sys::borrow(&dst), off_out, len)?;
        Ok(n as u32)
    }

    /// Open a directory; `keep_cache` says whether the kernel may keep its listing.
    pub fn opendir(&self, ino: NodeId) -> SysResult<(HandleId, OpenInfo)> {
        let node = self.node(ino)?;
        if node.kind() != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let info = OpenInfo {
            keep_cache: !matches!(self.place(&node), Place::Graft(_)),
        };
        let fh = self.handles.insert(Handle::Dir(DirHandle {
            node,
            snapshot: Mutex::new(None),
        }));
        Ok((fh, info))
    }

    /// Entries of an open directory from `offset` on (the offset of an entry is its
    /// index + 1). Reading from 0 takes a fresh snapshot (opendir and rewinddir).
    pub fn readdir(&self, fh: HandleId, offset: u64) -> SysResult<Arc<Vec<DirEntry>>> {
        let h = self.handles.get(fh)?;
        let Handle::Dir(d) = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let mut snap = d.snapshot.lock();
        if offset == 0 || snap.is_none() {
            let t = self.tree.read();
            *snap = Some(Arc::new(self.list_dir(&t, &d.node)?));
        }
        Ok(snap.clone().unwrap_or_default())
    }

    /// Attributes of one entry of an open directory, for a listing that carries them
    /// (readdirplus). Does not count a kernel reference: call [`Overlay::count_lookup`]
    /// for each entry actually handed to the kernel.
    pub fn entry_attr(&self, dir_fh: HandleId, name: &std::ffi::OsStr) -> SysResult<super::Attr> {
        let h = self.handles.get(dir_fh)?;
        let Handle::Dir(d) = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let t = self.tree.read();
        let (node, st) = self.lookup_node(&t, &d.node, name, false)?;
        Ok(self.attr_of(&t, &node, &st))
    }

    /// Count one kernel reference to a node handed out by [`Overlay::entry_attr`].
    pub fn count_lookup(&self, ino: NodeId) {
        if let Some(n) = self.nodes.get(ino) {
            self.nodes.count_lookup(&n);
        }
    }

    pub fn releasedir(&self, fh: HandleId) {
        self.handles.remove(fh);
    }
}
