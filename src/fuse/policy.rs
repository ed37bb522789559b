//! The FUSE request policy, shared by both transports: what the kernel is told to
//! cache and for how long (entries, negative entries, attributes), which features
//! are asked for at INIT, how directory listings are streamed without OPENDIR, when
//! an open file is handed to the kernel for passthrough, which invalidations are
//! sent, and how the union's answers map to replies. No transport's types appear
//! here: the classic `/dev/fuse` transport (fuser, [`super::devfuse`]) and the
//! io_uring transport (`crate::uring`) each turn these plain answers into bytes.

use super::dirstream;
use super::flags::init;
use super::passthrough::{PassthroughTable, Served};
use crate::counters::Op;
use crate::overlay::{
    Attr, Caller, Errno, FileKind, HandleId, NewEntry, NodeId, OpenInfo, Overlay, SetAttr,
    SysResult, oflag,
};
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long the kernel may trust an entry or attributes without asking again.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// The same inside a volume or bind mount, whose source the host may change: a
/// change made on the host is seen through the mount within this time.
pub const GRAFT_TTL: Duration = Duration::from_secs(1);

/// Largest WRITE and READ the kernel sends, and its readahead window.
pub const MAX_WRITE: u32 = 1 << 20;
pub const MAX_READAHEAD: u32 = 1 << 20;
pub const MAX_BACKGROUND: u16 = 64;

/// The mount's own readahead window in KiB, set after mounting (the kernel caps the
/// INIT's `max_readahead` at the 128 KiB default of a new FUSE mount). A sequential
/// reader then has up to eight 1 MiB READs in flight, so the round trips overlap
/// (a cold 1 GiB lower file: 0.79x the kernel with 128 KiB, 1.1x with 8 MiB,
/// docs/benchmarks.md). The daemon reads as far ahead in the lower file (`READ_AHEAD`).
pub const MOUNT_READ_AHEAD_KB: u64 = 8 << 10;

/// `FOPEN_*` bits of an open reply (the kernel's values; fuser's `FopenFlags` has
/// the same bits).
pub use super::flags::fopen;

pub fn ttl(a: &Attr) -> Duration {
    if a.volatile { GRAFT_TTL } else { TTL }
}

/// Sends invalidations to the kernel over the transport's own channel.
pub trait Notify: Send + Sync {
    /// Drop the kernel's attributes of `ino` (and its data from `offset` for `len`
    /// bytes; `len` 0: none, -1: to the end).
    fn inval_inode(&self, ino: u64, offset: i64, len: i64) -> std::io::Result<()>;
    /// Drop the kernel's entry (or negative entry) `name` of directory `parent`. Never
    /// from inside a request handler: the kernel takes the directory's lock.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn inval_entry(&self, parent: u64, name: &std::ffi::OsStr) -> std::io::Result<()>;
    /// Make every entry the kernel holds, positive or negative, invalid at once
    /// (`FUSE_NOTIFY_INC_EPOCH`, Linux 6.16): each is looked up again before use.
    /// Kernels without it answer EINVAL (ENOSYS where notifications are not offered).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn inc_epoch(&self) -> std::io::Result<()>;
}

/// An entry reply: the node (None: a negative entry the kernel may keep).
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub attr: Option<Attr>,
    pub generation: u64,
    pub ttl: Duration,
}

impl Entry {
    fn of(attr: Attr) -> Entry {
        Entry {
            ttl: ttl(&attr),
            attr: Some(attr),
            generation: 0,
        }
    }
}

/// An open reply: the handle, its `FOPEN_*` bits and the backing file when the
/// kernel serves the data itself (passthrough).
pub struct Opened<B> {
    pub fh: HandleId,
    pub flags: u32,
    pub backing: Option<Arc<B>>,
}

/// A GETXATTR/LISTXATTR answer: the size asked for, or the value.
pub enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

/// One entry of a listing, as the transport adds it to its reply.
pub struct DirItem<'a> {
    pub ino: u64,
    /// The offset the kernel passes back to read on after this entry.
    pub next: u64,
    pub kind: FileKind,
    pub name: &'a OsStr,
    /// With READDIRPLUS: the entry's attributes and how long they hold.
    pub attr: Option<(Attr, Duration)>,
}

/// What INIT settles, in the kernel's terms.
#[derive(Clone, Copy, Debug)]
pub struct Negotiated {
    /// `FUSE_*` flags to enable (`flags | flags2 << 32`), a subset of those offered.
    pub flags: u64,
    pub max_write: u32,
    pub max_readahead: u32,
    pub max_background: u16,
    /// 1 with passthrough (the backing files are on a filesystem, not a stack).
    pub max_stack_depth: u32,
}

/// The union served over FUSE, whatever carries the requests.
pub struct Policy<B> {
    overlay: Arc<Overlay>,
    /// Passthrough was negotiated with the kernel.
    passthrough_on: AtomicBool,
    passthrough: PassthroughTable<B>,
    /// The kernel opens directories without asking (`FUSE_NO_OPENDIR_SUPPORT`):
    /// listings are read by stream (see `dirstream`).
    no_opendir: AtomicBool,
    /// `FUSE_HANDLE_KILLPRIV_V2`: the kernel leaves clearing set-id bits on write,
    /// truncate and chown to the daemon and tells it when (kill flags).
    killpriv: AtomicBool,
    streams: dirstream::DirStreams,
    /// Set once the transport is running: drops the kernel's copy of a graft's
    /// listing, and attributes changed behind the kernel's back.
    notifier: OnceLock<Box<dyn Notify>>,
}

impl<B> Policy<B> {
    /// The mount's counters (`layerfuse status`).
    pub fn counters(&self) -> &crate::counters::Counters {
        self.overlay.counters()
    }

    pub fn new(overlay: Arc<Overlay>) -> Policy<B> {
        Policy {
            overlay,
            passthrough_on: AtomicBool::new(false),
            passthrough: PassthroughTable::default(),
            no_opendir: AtomicBool::new(false),
            killpriv: AtomicBool::new(false),
            streams: Default::default(),
            notifier: OnceLock::new(),
        }
    }

    pub fn set_notifier(&self, n: Box<dyn Notify>) {
        let _ = self.notifier.set(n);
    }

    /// Decide INIT from the flags the kernel `offered`. `transport` adds the flags
    /// only this transport can honour (`FUSE_HANDLE_KILLPRIV_V2`,
    /// `FUSE_OVER_IO_URING`, `FUSE_INIT_EXT`), where offered.
    pub fn negotiate(&self, offered: u64, transport: u64) -> Negotiated {
        let wanted = init::ASYNC_READ
            | init::BIG_WRITES
            | init::ATOMIC_O_TRUNC
            | init::PARALLEL_DIROPS
            | init::MAX_PAGES
            | init::CACHE_SYMLINKS
            | init::AUTO_INVAL_DATA
            // Every listing carries attributes (not READDIRPLUS_AUTO, which switches to
            // plain listings after the first reply of a big directory, so a walk then
            // pays a LOOKUP per remaining entry).
            | init::DO_READDIRPLUS
            // Directories are opened by the kernel alone once OPENDIR answers ENOSYS.
            | init::NO_OPENDIR_SUPPORT
            | transport;
        let mut flags = wanted & offered;
        self.no_opendir
            .store(flags & init::NO_OPENDIR_SUPPORT != 0, Relaxed);
        self.killpriv
            .store(flags & init::HANDLE_KILLPRIV_V2 != 0, Relaxed);
        // Reads and writes of upper files go straight to the backing file. Not with a
        // writeback cache (the two exclude each other), which is not requested.
        let mut max_stack_depth = 0;
        if self.overlay.may_passthrough() && offered & init::PASSTHROUGH != 0 {
            flags |= init::PASSTHROUGH;
            max_stack_depth = 1;
            self.passthrough_on.store(true, Relaxed);
        }
        Negotiated {
            flags,
            max_write: MAX_WRITE,
            max_readahead: MAX_READAHEAD,
            max_background: MAX_BACKGROUND,
            max_stack_depth,
        }
    }

    pub fn passthrough_on(&self) -> bool {
        self.passthrough_on.load(Relaxed)
    }

    pub fn killpriv(&self) -> bool {
        self.killpriv.load(Relaxed)
    }

    fn no_opendir(&self) -> bool {
        self.no_opendir.load(Relaxed)
    }

    /// A lookup; a miss is a negative entry the kernel may remember (node id 0):
    /// every create goes through this mount, which replaces the negative entry.
    pub fn lookup(&self, parent: NodeId, name: &OsStr) -> SysResult<Entry> {
        self.overlay.counters().request(Op::Lookup);
        match self.overlay.lookup(parent, name) {
            Ok((attr, generation)) => Ok(Entry {
                generation,
                ..Entry::of(attr)
            }),
            Err(e) if e == Errno::ENOENT => Ok(Entry {
                attr: None,
                generation: 0,
                ttl: if self.overlay.is_volatile(parent) {
                    GRAFT_TTL
                } else {
                    TTL
                },
            }),
            Err(e) => Err(e),
        }
    }

    pub fn forget(&self, ino: NodeId, nlookup: u64) {
        self.overlay.counters().request(Op::Forget);
        self.overlay.forget(ino, nlookup);
    }

    pub fn getattr(&self, ino: NodeId, fh: Option<HandleId>) -> SysResult<(Attr, Duration)> {
        self.overlay.counters().request(Op::Getattr);
        let a = self.overlay.getattr(ino, fh)?;
        Ok((a, ttl(&a)))
    }

    /// `kill`: `FATTR_KILL_SUIDGID` (a chown, or a truncate by a caller without
    /// CAP_FSETID): set-id bits go, as the kernel's VFS drops them.
    pub fn setattr(&self, ino: NodeId, set: SetAttr, kill: bool) -> SysResult<(Attr, Duration)> {
        self.overlay.counters().request(Op::Setattr);
        let mut a = self.overlay.setattr(ino, set)?;
        if kill {
            a = self.kill_suidgid(a)?;
        }
        Ok((a, ttl(&a)))
    }

    /// Clear set-user-id, and set-group-id where the group may execute (without
    /// group execute it marks mandatory locking and stays), as `setattr_should_drop_suidgid`
    /// decides for a caller without CAP_FSETID; directories keep theirs. With
    /// `FUSE_HANDLE_KILLPRIV_V2` the kernel leaves this to the daemon and says when
    /// (kill flags of WRITE, SETATTR, OPEN). Security capabilities go by the upper
    /// filesystem's own rule when the daemon writes or chowns the file.
    fn kill_suidgid(&self, a: Attr) -> SysResult<Attr> {
        let killed = killed_mode(a.perm);
        if a.kind == FileKind::Directory || killed == a.perm {
            return Ok(a);
        }
        let set = SetAttr {
            mode: Some(killed),
            ..SetAttr::default()
        };
        self.overlay.setattr(a.ino, set)
    }

    /// [`kill_suidgid`](Self::kill_suidgid) for a request that answers without
    /// attributes (WRITE, OPEN): the kernel's cached mode is dropped too.
    fn kill_suidgid_of(&self, ino: NodeId, fh: HandleId) -> SysResult<()> {
        let a = self.overlay.getattr(ino, Some(fh))?;
        if killed_mode(a.perm) == a.perm {
            return Ok(());
        }
        self.kill_suidgid(a)?;
        if let Some(n) = self.notifier.get() {
            // Attributes only (negative offset): safe from inside a handler.
            let _ = n.inval_inode(ino.get(), -1, 0);
        }
        Ok(())
    }

    pub fn readlink(&self, ino: NodeId) -> SysResult<OsString> {
        self.overlay.counters().request(Op::Readlink);
        self.overlay.readlink(ino)
    }

    pub fn mknod(
        &self,
        caller: Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> SysResult<Entry> {
        self.overlay.counters().request(Op::Mknod);
        let what = if FileKind::from_mode(mode) == FileKind::Regular {
            NewEntry::File { flags: 0 }
        } else {
            NewEntry::Node { rdev: rdev as u64 }
        };
        let (attr, fh) = self.overlay.create(parent, name, mode, what, caller)?;
        if let Some(fh) = fh {
            self.overlay.release(fh);
        }
        Ok(Entry::of(attr))
    }

    pub fn mkdir(
        &self,
        caller: Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
    ) -> SysResult<Entry> {
        self.overlay.counters().request(Op::Mkdir);
        let (attr, _) = self
            .overlay
            .create(parent, name, mode, NewEntry::Dir, caller)?;
        Ok(Entry::of(attr))
    }

    pub fn symlink(
        &self,
        caller: Caller,
        parent: NodeId,
        name: &OsStr,
        target: &OsStr,
    ) -> SysResult<Entry> {
        self.overlay.counters().request(Op::Symlink);
        let what = NewEntry::Symlink { target };
        let (attr, _) = self.overlay.create(parent, name, 0o777, what, caller)?;
        Ok(Entry::of(attr))
    }

    pub fn link(&self, ino: NodeId, newparent: NodeId, newname: &OsStr) -> SysResult<Entry> {
        self.overlay.counters().request(Op::Link);
        Ok(Entry::of(self.overlay.link(ino, newparent, newname)?))
    }

    pub fn remove(&self, parent: NodeId, name: &OsStr, dir: bool) -> SysResult<()> {
        self.overlay.counters().request(Op::Remove);
        self.overlay.remove(parent, name, dir)
    }

    pub fn rename(
        &self,
        parent: NodeId,
        name: &OsStr,
        newparent: NodeId,
        newname: &OsStr,
        flags: u32,
    ) -> SysResult<()> {
        self.overlay.counters().request(Op::Rename);
        self.overlay.rename(parent, name, newparent, newname, flags)
    }

    /// How handle `fh` of inode `ino` is served: passthrough when negotiated, the
    /// union offers a backing file and no cached open of the inode exists; `make`
    /// registers the backing file with the transport's connection.
    ///
    /// With `FUSE_HANDLE_KILLPRIV_V2`, a set-id file opened for writing is served by
    /// the daemon: a passthrough write would clear nothing (the kernel writes the
    /// backing file with the daemon's credentials, and its kill reaches the daemon
    /// as an empty SETATTR that cannot say what to drop), with direct I/O while
    /// passthrough opens of the inode are still live (a RELEASE may still be on its way).
    fn opened(
        &self,
        ino: NodeId,
        fh: HandleId,
        info: OpenInfo,
        setid_write: bool,
        make: impl FnOnce(&OwnedFd) -> Option<B>,
    ) -> Opened<B> {
        // With the fd, which file a backing would read and write: opens of one inode
        // share a backing only when they name the same file.
        let (fd, mut file) = if self.passthrough_on() {
            self.overlay.backing_file(fh).unzip()
        } else {
            (None, None)
        };
        // A passthrough write runs with the daemon's credentials, so it would keep set-id
        // bits a writer without CAP_FSETID must clear: such a writer is served by the
        // daemon, which clears them at the first write. But while the inode has
        // passthrough opens the kernel refuses any other kind of open (EINVAL), so beside
        // them the writer is passthrough too and the bits go now, at its open.
        if setid_write
            && !(file.is_some()
                && self.passthrough.live_file(ino) == file
                && self.kill_suidgid_of(ino, fh).is_ok())
        {
            file = None;
        }
        match self
            .passthrough
            .open(ino, fh, file, || fd.as_deref().and_then(make))
        {
            Served::Passthrough(b) => Opened {
                fh,
                flags: fopen::NOFLUSH | fopen::PASSTHROUGH,
                backing: Some(b),
            },
            Served::Cached => Opened {
                fh,
                flags: open_flags(info),
                backing: None,
            },
            Served::Direct => Opened {
                fh,
                flags: fopen::NOFLUSH | fopen::DIRECT_IO,
                backing: None,
            },
        }
    }

    /// `kill`: `FUSE_OPEN_KILL_SUIDGID` (O_TRUNC by a caller without CAP_FSETID).
    pub fn open(
        &self,
        ino: NodeId,
        flags: i32,
        kill: bool,
        make: impl FnOnce(&OwnedFd) -> Option<B>,
    ) -> SysResult<Opened<B>> {
        self.overlay.counters().request(Op::Open);
        let (fh, info) = self.overlay.open(ino, flags)?;
        if kill && let Err(e) = self.kill_suidgid_of(ino, fh) {
            self.overlay.release(fh);
            return Err(e);
        }
        // Only decides between passthrough and the daemon (a kill just done leaves no
        // set-id bit to keep passthrough away from): no getattr when it cannot matter.
        let setid_write = self.passthrough_on()
            && self.killpriv()
            && !kill
            && flags & oflag::ACCMODE != oflag::RDONLY
            && self
                .overlay
                .getattr(ino, Some(fh))
                .is_ok_and(|a| killed_mode(a.perm) != a.perm);
        Ok(self.opened(ino, fh, info, setid_write, make))
    }

    pub fn create(
        &self,
        caller: Caller,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        flags: i32,
        make: impl FnOnce(&OwnedFd) -> Option<B>,
    ) -> SysResult<(Entry, Opened<B>)> {
        self.overlay.counters().request(Op::Create);
        let (attr, fh) =
            self.overlay
                .create(parent, name, mode, NewEntry::File { flags }, caller)?;
        let Some(fh) = fh else {
            return Err(Errno::EIO);
        };
        let info = OpenInfo {
            keep_cache: !attr.volatile,
        };
        let setid_write = self.killpriv() && killed_mode(attr.perm) != attr.perm;
        Ok((
            Entry::of(attr),
            self.opened(attr.ino, fh, info, setid_write, make),
        ))
    }

    pub fn read(&self, fh: HandleId, offset: u64, size: u32) -> SysResult<Vec<u8>> {
        self.overlay.counters().request(Op::Read);
        self.overlay.read(fh, offset, size)
    }

    /// The file a READ of `len` bytes at `offset` reads from, for a transport that
    /// moves the bytes itself (splice, Linux only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn read_source(&self, fh: HandleId, offset: u64, len: u64) -> SysResult<Arc<OwnedFd>> {
        self.overlay.counters().request(Op::Read);
        self.overlay.read_source(fh, offset, len)
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    /// A read straight into the reply buffer `buf` (no copy); the bytes read.
    pub fn read_into(&self, fh: HandleId, offset: u64, buf: &mut [u8]) -> SysResult<usize> {
        self.overlay.counters().request(Op::Read);
        self.overlay.read_into(fh, offset, buf)
    }

    /// `from_page_cache`: `FUSE_WRITE_CACHE` (the kernel writing back mmap'd pages).
    pub fn write(
        &self,
        fh: HandleId,
        offset: u64,
        data: &[u8],
        from_page_cache: bool,
        kill: Option<NodeId>,
    ) -> SysResult<u32> {
        self.overlay.counters().request(Op::Write);
        // `kill`: `FUSE_WRITE_KILL_SUIDGID` (a writer without CAP_FSETID), with the node.
        if let Some(ino) = kill {
            self.kill_suidgid_of(ino, fh)?;
        }
        self.overlay.write(fh, offset, data, from_page_cache)
    }

    pub fn release(&self, fh: HandleId) {
        self.overlay.counters().request(Op::Release);
        self.passthrough.release(fh);
        self.overlay.release(fh);
    }

    pub fn fsync(&self, fh: HandleId, datasync: bool) -> SysResult<()> {
        self.overlay.counters().request(Op::Fsync);
        self.overlay.fsync(fh, datasync)
    }

    /// An OPENDIR: None means "answer ENOSYS", which the kernel takes as "open
    /// directories without asking" (and with `FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR`)
    /// for the rest of the mount.
    pub fn opendir(&self, ino: NodeId) -> SysResult<Option<(HandleId, u32)>> {
        self.overlay.counters().request(Op::Opendir);
        if self.no_opendir() {
            return Ok(None);
        }
        // The kernel may keep listings: every change to a directory goes through this
        // mount, and the kernel drops its copy when the directory changes.
        let (fh, info) = self.overlay.opendir(ino)?;
        let flags = if info.keep_cache {
            fopen::CACHE_DIR | fopen::KEEP_CACHE
        } else {
            0
        };
        Ok(Some((fh, flags)))
    }

    /// The union's directory handle a READDIR reads, and where it goes on.
    fn dir_stream(&self, ino: NodeId, fh: HandleId, offset: u64) -> SysResult<dirstream::Stream> {
        if self.no_opendir() {
            self.streams.resume(&self.overlay, ino, offset)
        } else {
            Ok(dirstream::Stream {
                fh,
                id: 0,
                index: offset,
            })
        }
    }

    /// The end of a listing was read.
    fn dir_stream_end(&self, ino: NodeId, stream: &dirstream::Stream) {
        if !self.no_opendir() {
            return;
        }
        self.streams.finish(&self.overlay, stream);
        // The kernel caches every listing when it opens directories itself; a
        // graft's source may change behind the mount, so its copy is dropped now
        // that the last part of it was read (the kernel's pages of earlier parts
        // are already filled; this last, empty part adds none). No page of a
        // listing stays locked while its reader waits for the daemon, so this may
        // be sent from inside the handler.
        if self.overlay.is_volatile(ino)
            && let Some(n) = self.notifier.get()
        {
            let r = n.inval_inode(ino.get(), 0, 0);
            tracing::debug!(%ino, ?r, "drop cached listing of a graft directory");
        }
    }

    /// A READDIR(PLUS) from `offset`: `add` puts one entry into the reply and
    /// returns false when it did not fit (the listing goes on there next time).
    pub fn readdir(
        &self,
        ino: NodeId,
        fh: HandleId,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(DirItem) -> bool,
    ) -> SysResult<()> {
        self.overlay.counters().request(Op::Readdir);
        let stream = self.dir_stream(ino, fh, offset)?;
        let entries = self.overlay.readdir(stream.fh, stream.index)?;
        for (i, e) in entries.iter().enumerate().skip(stream.index as usize) {
            let next = stream.offset_after(i);
            if !plus {
                if !add(DirItem {
                    ino: e.ino,
                    next,
                    kind: e.kind,
                    name: &e.name,
                    attr: None,
                }) {
                    break;
                }
                continue;
            }
            // `.` and `..` carry no lookup reference, and the kernel ignores their
            // attributes: only the number and type of the entry are used.
            if e.name == "." || e.name == ".." {
                if !add(DirItem {
                    ino: e.ino,
                    next,
                    kind: FileKind::Directory,
                    name: &e.name,
                    attr: Some((dot_attr(e.ino), TTL)),
                }) {
                    break;
                }
                continue;
            }
            let Ok(attr) = self.overlay.entry_attr(stream.fh, &e.name) else {
                // Gone since the listing was taken: leave it out.
                continue;
            };
            if !add(DirItem {
                ino: attr.ino.get(),
                next,
                kind: attr.kind,
                name: &e.name,
                attr: Some((attr, ttl(&attr))),
            }) {
                break;
            }
            self.overlay.count_lookup(attr.ino);
        }
        if stream.index as usize >= entries.len() {
            self.dir_stream_end(ino, &stream);
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: HandleId) {
        self.overlay.counters().request(Op::Releasedir);
        self.overlay.releasedir(fh);
    }

    pub fn fsyncdir(&self, ino: NodeId, fh: HandleId, datasync: bool) -> SysResult<()> {
        self.overlay.counters().request(Op::Fsync);
        if !self.no_opendir() {
            return self.overlay.fsync(fh, datasync);
        }
        // No handle of ours: open the directory for the call.
        self.overlay.opendir(ino).and_then(|(fh, _)| {
            let r = self.overlay.fsync(fh, datasync);
            self.overlay.releasedir(fh);
            r
        })
    }

    pub fn statfs(&self, ino: NodeId) -> SysResult<crate::overlay::FsStats> {
        self.overlay.counters().request(Op::Statfs);
        self.overlay.statfs(ino)
    }

    pub fn setxattr(&self, ino: NodeId, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
        self.overlay.counters().request(Op::Xattr);
        self.overlay.setxattr(ino, name, value, flags)
    }

    pub fn getxattr(&self, ino: NodeId, name: &OsStr, size: u32) -> SysResult<Xattr> {
        self.overlay.counters().request(Op::Xattr);
        xattr_answer(self.overlay.getxattr(ino, name)?, size)
    }

    pub fn listxattr(&self, ino: NodeId, size: u32) -> SysResult<Xattr> {
        self.overlay.counters().request(Op::Xattr);
        xattr_answer(self.overlay.listxattr(ino)?, size)
    }

    pub fn removexattr(&self, ino: NodeId, name: &OsStr) -> SysResult<()> {
        self.overlay.counters().request(Op::Xattr);
        self.overlay.removexattr(ino, name)
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    /// syncfs(2) on the mount: the upper filesystem's (the lowers never change).
    pub fn syncfs(&self) -> SysResult<()> {
        self.overlay.syncfs()
    }

    /// The kernel checks permissions itself (`default_permissions`).
    pub fn access(&self) -> SysResult<()> {
        self.overlay.counters().request(Op::Other);
        Ok(())
    }

    /// Nothing is held back at close: writes go to the upper file as they come.
    pub fn flush(&self) -> SysResult<()> {
        self.overlay.counters().request(Op::Flush);
        Ok(())
    }

    /// No ioctl reaches a file of the union (file attributes and reflinks are not
    /// offered): ENOTTY, the answer of a filesystem without the command, as ext4 gives
    /// for `isatty()` (TCGETS) on a regular file. Said outright, without a "not
    /// implemented" warning: programs probe with ioctls all the time (dpkg and Python
    /// ~900 times during `apt-get install`).
    pub fn ioctl(&self) -> SysResult<()> {
        self.overlay.counters().request(Op::Other);
        Err(Errno::ENOTTY)
    }

    pub fn fallocate(&self, fh: HandleId, offset: u64, length: u64, mode: i32) -> SysResult<()> {
        self.overlay.counters().request(Op::Write);
        self.overlay.fallocate(fh, offset, length, mode)
    }

    pub fn lseek(&self, fh: HandleId, offset: i64, whence: i32) -> SysResult<i64> {
        self.overlay.counters().request(Op::Other);
        self.overlay.lseek(fh, offset, whence)
    }

    pub fn copy_file_range(
        &self,
        fh_in: HandleId,
        off_in: u64,
        fh_out: HandleId,
        off_out: u64,
        len: u64,
    ) -> SysResult<u32> {
        self.overlay.counters().request(Op::Write);
        self.overlay
            .copy_file_range(fh_in, off_in, fh_out, off_out, len)
    }

    /// Attribute changes the union makes behind the kernel's back (a copy-up that
    /// changes a hard link's siblings) are sent through `notify`. Attribute
    /// invalidations carry no page-cache range, so the kernel takes no lock that a
    /// request in flight could hold: they can be sent from inside a handler.
    pub fn forward_attr_changes(&self, notify: Arc<dyn Notify>) {
        self.overlay.on_attr_change(Box::new(move |ino| {
            if let Err(e) = notify.inval_inode(ino.get(), -1, 0) {
                tracing::debug!(%ino, error = %e, "attribute invalidation not delivered");
            }
        }));
    }
}

/// Every file: no FLUSH round trip at close (writes are never held back, and POSIX
/// locks are the kernel's own); the page cache kept across opens where allowed.
fn open_flags(info: OpenInfo) -> u32 {
    if info.keep_cache {
        fopen::KEEP_CACHE | fopen::NOFLUSH
    } else {
        fopen::NOFLUSH
    }
}

/// The permission bits a write, truncate or chown leaves (see `kill_suidgid`).
fn killed_mode(perm: u32) -> u32 {
    let mut m = perm & !0o4000;
    if m & 0o2010 == 0o2010 {
        m &= !0o2000;
    }
    m
}

fn xattr_answer(value: Vec<u8>, size: u32) -> SysResult<Xattr> {
    if size == 0 {
        Ok(Xattr::Size(value.len() as u32))
    } else if value.len() > size as usize {
        Err(Errno::ERANGE)
    } else {
        Ok(Xattr::Data(value))
    }
}

/// The attributes sent with `.` and `..` in a listing, which the kernel ignores
/// (it takes only the number and type of those entries).
pub fn dot_attr(ino: u64) -> Attr {
    let zero = crate::overlay::Timespec { sec: 0, nsec: 0 };
    Attr {
        ino: NodeId::new(ino),
        kind: FileKind::Directory,
        perm: 0o755,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        size: 0,
        blocks: 0,
        blksize: 0,
        atime: zero,
        mtime: zero,
        ctime: zero,
        volatile: false,
    }
}
