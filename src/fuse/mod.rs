//! The wire: the only module that knows fuser. Each request is unpacked, handed to
//! the union (`crate::overlay`), and its answer or errno sent back. Cache lifetimes
//! are chosen here: every change to the union goes through this mount, so the
//! kernel may keep entries and attributes for long.

mod convert;
mod dirstream;
mod mount;
mod passthrough;

pub use mount::{MountOptions, mount};

use crate::overlay::{Caller, HandleId, NewEntry, NodeId, OpenInfo, Overlay, SetAttr, SysResult};
use convert::{errno, file_attr, file_type, handle, node, time_set};
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, FileHandle, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// How long the kernel may trust an entry or attributes without asking again.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// The same inside a volume or bind mount, whose source the host may change: a
/// change made on the host is seen through the mount within this time.
const SPLICE_TTL: Duration = Duration::from_secs(1);

fn ttl(a: &crate::overlay::Attr) -> &'static Duration {
    if a.volatile { &SPLICE_TTL } else { &TTL }
}

/// The union served over FUSE.
pub struct LayerFs {
    overlay: Arc<Overlay>,
    /// Passthrough was negotiated with the kernel.
    passthrough_on: bool,
    passthrough: passthrough::PassthroughTable,
    /// The kernel opens directories without asking (`FUSE_NO_OPENDIR_SUPPORT`):
    /// listings are read by stream (see `dirstream`).
    no_opendir: bool,
    streams: dirstream::DirStreams,
    /// Set once the session exists: drops the kernel's copy of a splice's listing.
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

impl LayerFs {
    pub fn new(overlay: Arc<Overlay>, notifier: Arc<OnceLock<fuser::Notifier>>) -> LayerFs {
        LayerFs {
            overlay,
            passthrough_on: false,
            passthrough: Default::default(),
            no_opendir: false,
            streams: Default::default(),
            notifier,
        }
    }

    /// The union's directory handle a READDIR reads, and where it goes on.
    fn dir_stream(&self, ino: NodeId, fh: HandleId, offset: u64) -> SysResult<dirstream::Stream> {
        if self.no_opendir {
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
        if !self.no_opendir {
            return;
        }
        self.streams.finish(&self.overlay, stream);
        // The kernel caches every listing when it opens directories itself; a
        // splice's source may change behind the mount, so its copy is dropped now
        // that the last part of it was read (the kernel's pages of earlier parts
        // are already filled; this last, empty part adds none). No page of a
        // listing stays locked while its reader waits for the daemon, so this may
        // be sent from inside the handler.
        if self.overlay.is_volatile(ino)
            && let Some(n) = self.notifier.get()
        {
            let r = n.inval_inode(INodeNo(ino.get()), 0, 0);
            tracing::debug!(
                ino = ino.get(),
                ?r,
                "drop cached listing of a splice directory"
            );
        }
    }

    /// The backing file of a newly opened handle, if the kernel may use it directly.
    fn backing_fd(&self, fh: HandleId) -> Option<Arc<std::os::fd::OwnedFd>> {
        if self.passthrough_on {
            self.overlay.backing_file(fh)
        } else {
            None
        }
    }
}

fn caller(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

/// Every file: no FLUSH round trip at close (writes are never held back, and POSIX
/// locks are the kernel's own); the page cache kept across opens where allowed.
fn open_flags(info: OpenInfo) -> FopenFlags {
    if info.keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
    } else {
        FopenFlags::FOPEN_NOFLUSH
    }
}

impl fuser::Filesystem for LayerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_AUTO_INVAL_DATA
            // Every listing carries attributes (not READDIRPLUS_AUTO, which switches to
            // plain listings after the first reply of a big directory, so a walk then
            // pays a LOOKUP per remaining entry).
            | InitFlags::FUSE_DO_READDIRPLUS;
        let _ = config.add_capabilities(wanted & config.capabilities());
        // Directories are opened by the kernel alone once OPENDIR answers ENOSYS.
        self.no_opendir = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        // Reads and writes of upper files go straight to the backing file. Not with a
        // writeback cache (the two exclude each other), which is not requested.
        if self.overlay.may_passthrough()
            && config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough_on = true;
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.overlay.lookup(node(parent), name) {
            Ok((attr, generation)) => reply.entry_with_ttls(
                ttl(&attr),
                ttl(&attr),
                &file_attr(&attr),
                Generation(generation),
            ),
            // A miss the kernel may remember (node id 0): every create goes through
            // this mount, which replaces the negative entry.
            Err(e) if e == crate::overlay::Errno::ENOENT => {
                let t = if self.overlay.is_volatile(node(parent)) {
                    &SPLICE_TTL
                } else {
                    &TTL
                };
                reply.entry_with_ttls(t, t, &convert::negative_attr(), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.overlay.forget(node(ino), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.overlay.getattr(node(ino), fh.map(handle)) {
            Ok(a) => reply.attr(ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_set(atime),
            mtime: time_set(mtime),
            through_open_file: fh.is_some(),
        };
        match self.overlay.setattr(node(ino), set) {
            Ok(a) => reply.attr(ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.overlay.readlink(node(ino)) {
            Ok(t) => reply.data(t.as_encoded_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let what = if crate::overlay::FileKind::from_mode(mode) == crate::overlay::FileKind::Regular
        {
            NewEntry::File { flags: 0 }
        } else {
            NewEntry::Node { rdev: rdev as u64 }
        };
        match self
            .overlay
            .create(node(parent), name, mode, what, caller(req, umask))
        {
            Ok((attr, fh)) => {
                if let Some(fh) = fh {
                    self.overlay.release(fh);
                }
                reply_entry(reply, &attr)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self
            .overlay
            .create(node(parent), name, mode, NewEntry::Dir, caller(req, umask))
        {
            Ok((attr, _)) => reply_entry(reply, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.overlay.remove(node(parent), name, false))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.overlay.remove(node(parent), name, true))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let what = NewEntry::Symlink {
            target: target.as_os_str(),
        };
        match self
            .overlay
            .create(node(parent), link_name, 0o777, what, caller(req, 0))
        {
            Ok((attr, _)) => reply_entry(reply, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result =
            self.overlay
                .rename(node(parent), name, node(newparent), newname, flags.bits());
        reply_empty(reply, result)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.overlay.link(node(ino), node(newparent), newname) {
            Ok(attr) => reply_entry(reply, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (fh, info) = match self.overlay.open(node(ino), flags.0) {
            Ok(x) => x,
            Err(e) => return reply.error(errno(e)),
        };
        let fd = self.backing_fd(fh);
        let backing = self.passthrough.open(node(ino), fh, || {
            fd.as_deref().and_then(|fd| reply.open_backing(fd).ok())
        });
        match backing {
            Some(b) => {
                reply.opened_passthrough(FileHandle(fh.get()), FopenFlags::FOPEN_NOFLUSH, &b)
            }
            None => reply.opened(FileHandle(fh.get()), open_flags(info)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.overlay.read(handle(fh), offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let from_page_cache = write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        match self
            .overlay
            .write(handle(fh), offset, data, from_page_cache)
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.passthrough.release(handle(fh));
        self.overlay.release(handle(fh));
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.overlay.fsync(handle(fh), datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            // The kernel takes this as "open directories without asking" (and with
            // FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR) for the rest of the mount.
            return reply.error(fuser::Errno::ENOSYS);
        }
        match self.overlay.opendir(node(ino)) {
            // The kernel may keep listings: every change to a directory goes through
            // this mount, and the kernel drops its copy when the directory changes.
            Ok((fh, info)) if info.keep_cache => reply.opened(
                FileHandle(fh.get()),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok((fh, _)) => reply.opened(FileHandle(fh.get()), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let stream = match self.dir_stream(node(ino), handle(fh), offset) {
            Ok(s) => s,
            Err(e) => return reply.error(errno(e)),
        };
        let entries = match self.overlay.readdir(stream.fh, stream.index) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, e) in entries.iter().enumerate().skip(stream.index as usize) {
            let next = stream.offset_after(i);
            if reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name) {
                break;
            }
        }
        if stream.index as usize >= entries.len() {
            self.dir_stream_end(node(ino), &stream);
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let stream = match self.dir_stream(node(ino), handle(fh), offset) {
            Ok(s) => s,
            Err(e) => return reply.error(errno(e)),
        };
        let entries = match self.overlay.readdir(stream.fh, stream.index) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, e) in entries.iter().enumerate().skip(stream.index as usize) {
            let next = stream.offset_after(i);
            // `.` and `..` carry no lookup reference, and the kernel ignores their
            // attributes: only the number and type of the entry are used.
            if e.name == "." || e.name == ".." {
                let attr = convert::dot_attr(e.ino);
                if reply.add(INodeNo(e.ino), next, &e.name, &TTL, &attr, Generation(0)) {
                    break;
                }
                continue;
            }
            let Ok(attr) = self.overlay.entry_attr(stream.fh, &e.name) else {
                // Gone since the listing was taken: leave it out.
                continue;
            };
            if reply.add(
                INodeNo(attr.ino.get()),
                next,
                &e.name,
                ttl(&attr),
                &file_attr(&attr),
                Generation(0),
            ) {
                break;
            }
            self.overlay.count_lookup(attr.ino);
        }
        if stream.index as usize >= entries.len() {
            self.dir_stream_end(node(ino), &stream);
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.overlay.releasedir(handle(fh));
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        if !self.no_opendir {
            return reply_empty(reply, self.overlay.fsync(handle(fh), datasync));
        }
        // No handle of ours: open the directory for the call.
        let result = self.overlay.opendir(node(ino)).and_then(|(fh, _)| {
            let r = self.overlay.fsync(fh, datasync);
            self.overlay.releasedir(fh);
            r
        });
        reply_empty(reply, result)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.overlay.statfs(node(_ino)) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.overlay.setxattr(node(ino), name, value, flags))
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.overlay.getxattr(node(ino), name) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.overlay.listxattr(node(ino)) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.overlay.removexattr(node(ino), name))
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions itself (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.overlay.create(
            node(parent),
            name,
            mode,
            NewEntry::File { flags },
            caller(req, umask),
        ) {
            Ok((attr, Some(fh))) => {
                let fd = self.backing_fd(fh);
                let backing = self.passthrough.open(attr.ino, fh, || {
                    fd.as_deref().and_then(|fd| reply.open_backing(fd).ok())
                });
                match backing {
                    Some(b) => reply.created_passthrough(
                        ttl(&attr),
                        &file_attr(&attr),
                        Generation(0),
                        FileHandle(fh.get()),
                        FopenFlags::FOPEN_NOFLUSH,
                        &b,
                    ),
                    None => reply.created(
                        ttl(&attr),
                        &file_attr(&attr),
                        Generation(0),
                        FileHandle(fh.get()),
                        open_flags(OpenInfo {
                            keep_cache: !attr.volatile,
                        }),
                    ),
                }
            }
            Ok((_, None)) => reply.error(fuser::Errno::EIO),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// No ioctl reaches a file of the union (file attributes and reflinks are not
    /// offered): ENOTTY, the answer of a filesystem without the command, as ext4 gives
    /// for `isatty()` (TCGETS) on a regular file. Said outright, without the library's
    /// "not implemented" warning: programs probe with ioctls all the time (dpkg and
    /// Python ~900 times during `apt-get install`), and each probe logged a line.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(fuser::Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.overlay.fallocate(handle(fh), offset, length, mode),
        )
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.overlay.lseek(handle(fh), offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.overlay.copy_file_range(
            handle(fh_in),
            offset_in,
            handle(fh_out),
            offset_out,
            len,
        ) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// An entry reply with the lifetimes the node's place allows.
fn reply_entry(reply: ReplyEntry, attr: &crate::overlay::Attr) {
    reply.entry_with_ttls(ttl(attr), ttl(attr), &file_attr(attr), Generation(0));
}

fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(fuser::Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// Answer a request that returns nothing but success or an errno.
fn reply_empty(reply: ReplyEmpty, result: crate::overlay::SysResult<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}
