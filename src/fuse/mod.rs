//! The wire: the only module that knows fuser. Each request is unpacked, handed to
//! the union (`crate::overlay`), and its answer or errno sent back. Cache lifetimes
//! are chosen here: every change to the union goes through this mount, so the
//! kernel may keep entries and attributes for long.

mod convert;
mod mount;
mod passthrough;

pub use mount::{MountOptions, mount};

use crate::overlay::{Caller, NewEntry, OpenInfo, Overlay, SetAttr};
use convert::{errno, file_attr, file_type, time_set};
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, FileHandle, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
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
}

impl LayerFs {
    pub fn new(overlay: Arc<Overlay>) -> LayerFs {
        LayerFs {
            overlay,
            passthrough_on: false,
            passthrough: Default::default(),
        }
    }

    /// The backing file of a newly opened handle, if the kernel may use it directly.
    fn backing_fd(&self, fh: u64) -> Option<Arc<std::os::fd::OwnedFd>> {
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

fn open_flags(info: OpenInfo) -> FopenFlags {
    if info.keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
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
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        let _ = config.add_capabilities(wanted & config.capabilities());
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
        match self.overlay.lookup(parent.0, name) {
            Ok((attr, generation)) => reply.entry_with_ttls(
                ttl(&attr),
                ttl(&attr),
                &file_attr(&attr),
                Generation(generation),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.overlay.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.overlay.getattr(ino.0, fh.map(|f| f.0)) {
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
        _fh: Option<FileHandle>,
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
        };
        match self.overlay.setattr(ino.0, set) {
            Ok(a) => reply.attr(ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.overlay.readlink(ino.0) {
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
            .create(parent.0, name, mode, what, caller(req, umask))
        {
            Ok((attr, fh)) => {
                if let Some(fh) = fh {
                    self.overlay.release(fh);
                }
                reply.entry_with_ttls(ttl(&attr), ttl(&attr), &file_attr(&attr), Generation(0))
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
            .create(parent.0, name, mode, NewEntry::Dir, caller(req, umask))
        {
            Ok((attr, _)) => {
                reply.entry_with_ttls(ttl(&attr), ttl(&attr), &file_attr(&attr), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.overlay.remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.overlay.remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
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
            .create(parent.0, link_name, 0o777, what, caller(req, 0))
        {
            Ok((attr, _)) => {
                reply.entry_with_ttls(ttl(&attr), ttl(&attr), &file_attr(&attr), Generation(0))
            }
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
        match self
            .overlay
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.overlay.link(ino.0, newparent.0, newname) {
            Ok(attr) => {
                reply.entry_with_ttls(ttl(&attr), ttl(&attr), &file_attr(&attr), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (fh, info) = match self.overlay.open(ino.0, flags.0) {
            Ok(x) => x,
            Err(e) => return reply.error(errno(e)),
        };
        let fd = self.backing_fd(fh);
        let backing = self.passthrough.open(ino.0, fh, || {
            fd.as_deref().and_then(|fd| reply.open_backing(fd).ok())
        });
        match backing {
            Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
            None => reply.opened(FileHandle(fh), open_flags(info)),
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
        match self.overlay.read(fh.0, offset, size) {
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
        match self.overlay.write(fh.0, offset, data, from_page_cache) {
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
        self.passthrough.release(fh.0);
        self.overlay.release(fh.0);
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
        match self.overlay.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.overlay.opendir(ino.0) {
            // The kernel may keep listings: every change to a directory goes through
            // this mount, and the kernel drops its copy when the directory changes.
            Ok((fh, info)) if info.keep_cache => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok((fh, _)) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.overlay.readdir(fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), (i + 1) as u64, file_type(e.kind), &e.name) {
                break;
            }
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
        let entries = match self.overlay.readdir(fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let next = (i + 1) as u64;
            // `.` and `..` carry no lookup reference; the kernel ignores their attributes.
            let dots = e.name == "." || e.name == "..";
            let attr = if dots {
                self.overlay
                    .getattr(if e.name == "." { ino.0 } else { e.ino }, None)
            } else {
                self.overlay.entry_attr(fh.0, &e.name)
            };
            let Ok(attr) = attr else {
                // Gone since the listing was taken: leave it out.
                continue;
            };
            if reply.add(
                INodeNo(attr.ino),
                next,
                &e.name,
                ttl(&attr),
                &file_attr(&attr),
                Generation(0),
            ) {
                break;
            }
            if !dots {
                self.overlay.count_lookup(attr.ino);
            }
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
        self.overlay.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.overlay.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.overlay.statfs(_ino.0) {
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
        match self.overlay.setxattr(ino.0, name, value, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.overlay.getxattr(ino.0, name) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.overlay.listxattr(ino.0) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.overlay.removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
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
            parent.0,
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
                        FileHandle(fh),
                        FopenFlags::empty(),
                        &b,
                    ),
                    None => reply.created(
                        ttl(&attr),
                        &file_attr(&attr),
                        Generation(0),
                        FileHandle(fh),
                        if attr.volatile {
                            FopenFlags::empty()
                        } else {
                            FopenFlags::FOPEN_KEEP_CACHE
                        },
                    ),
                }
            }
            Ok((_, None)) => reply.error(fuser::Errno::EIO),
            Err(e) => reply.error(errno(e)),
        }
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
        match self.overlay.fallocate(fh.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
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
        match self.overlay.lseek(fh.0, offset, whence) {
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
        match self
            .overlay
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }
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
