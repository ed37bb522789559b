//! The classic transport: requests read from `/dev/fuse` by fuser, for rootless
//! mounts, kernels without FUSE-over-io_uring, FreeBSD and macOS. Each fuser
//! callback unpacks its arguments, asks the shared [`Policy`] and packs the answer
//! into fuser's reply; nothing is decided here.

use super::convert::{errno, file_attr, file_type, handle, negative_attr, node, time_set};
use super::policy::{self, Entry, Notify, Opened, Policy, Xattr};
use crate::overlay::{Caller, SetAttr, SysResult};
use fuser::{
    AccessFlags, BackingId, BsdFileFlags, CopyFileRangeFlags, FileHandle, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::time::SystemTime;

/// The union served through fuser.
pub struct DevFs {
    policy: std::sync::Arc<Policy<BackingId>>,
}

fn caller(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

impl DevFs {
    /// The errno a request is answered with, counted.
    fn err(&self, e: crate::overlay::Errno) -> fuser::Errno {
        self.policy.counters().error(e.0);
        errno(e)
    }

    fn reply_entry(&self, reply: ReplyEntry, r: SysResult<Entry>) {
        match r {
            Ok(e) => match &e.attr {
                Some(a) => {
                    reply.entry_with_ttls(&e.ttl, &e.ttl, &file_attr(a), Generation(e.generation))
                }
                None => reply.entry_with_ttls(&e.ttl, &e.ttl, &negative_attr(), Generation(0)),
            },
            Err(e) => reply.error(self.err(e)),
        }
    }

    fn reply_attr(
        &self,
        reply: ReplyAttr,
        r: SysResult<(crate::overlay::Attr, std::time::Duration)>,
    ) {
        match r {
            Ok((a, ttl)) => reply.attr(&ttl, &file_attr(&a)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    /// Answer a request that returns nothing but success or an errno.
    fn reply_empty(&self, reply: ReplyEmpty, result: SysResult<()>) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    fn reply_xattr(&self, reply: ReplyXattr, r: SysResult<Xattr>) {
        match r {
            Ok(Xattr::Size(n)) => reply.size(n),
            Ok(Xattr::Data(v)) => reply.data(&v),
            Err(e) => reply.error(self.err(e)),
        }
    }
}

fn fopen(bits: u32) -> FopenFlags {
    FopenFlags::from_bits_truncate(bits)
}

impl fuser::Filesystem for DevFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let offered = config.capabilities().bits();
        let n = self.policy.negotiate(offered, 0);
        let mut flags = InitFlags::from_bits_truncate(n.flags);
        if n.max_stack_depth > 0 && config.set_max_stack_depth(n.max_stack_depth).is_err() {
            flags.remove(InitFlags::FUSE_PASSTHROUGH);
        }
        let _ = config.add_capabilities(flags & config.capabilities());
        let _ = config.set_max_write(n.max_write);
        let _ = config.set_max_readahead(n.max_readahead);
        let _ = config.set_max_background(n.max_background);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(reply, self.policy.lookup(node(parent), name))
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.policy.forget(node(ino), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(reply, self.policy.getattr(node(ino), fh.map(handle)))
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
        // fuser never negotiates FUSE_HANDLE_KILLPRIV_V2: the kernel clears set-id bits itself.
        self.reply_attr(reply, self.policy.setattr(node(ino), set, false))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.policy.readlink(node(ino)) {
            Ok(t) => reply.data(t.as_encoded_bytes()),
            Err(e) => reply.error(self.err(e)),
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
        self.reply_entry(
            reply,
            self.policy
                .mknod(caller(req, umask), node(parent), name, mode, rdev),
        )
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
        self.reply_entry(
            reply,
            self.policy
                .mkdir(caller(req, umask), node(parent), name, mode),
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.reply_empty(reply, self.policy.remove(node(parent), name, false))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.reply_empty(reply, self.policy.remove(node(parent), name, true))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.policy
                .symlink(caller(req, 0), node(parent), link_name, target.as_os_str()),
        )
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
        let r = self
            .policy
            .rename(node(parent), name, node(newparent), newname, flags.bits());
        self.reply_empty(reply, r)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(reply, self.policy.link(node(ino), node(newparent), newname))
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // With FUSE_ATOMIC_O_TRUNC the kernel leaves an open's truncation to the daemon
        // and, without FUSE_HANDLE_KILLPRIV_V2 (which fuser cannot negotiate), never says
        // whether the caller may keep set-id bits: a caller other than root is taken to
        // lack CAP_FSETID, as nearly every one does (the kernel overlayfs clears them).
        let kill = flags.0 & crate::overlay::oflag::TRUNC != 0 && req.uid() != 0;
        let r = self
            .policy
            .open(node(ino), flags.0, kill, |fd| reply.open_backing(fd).ok());
        match r {
            Ok(Opened {
                fh,
                flags,
                backing: Some(b),
            }) => reply.opened_passthrough(
                FileHandle(fh.get()),
                fopen(flags & !policy::fopen::PASSTHROUGH),
                &b,
            ),
            Ok(o) => reply.opened(FileHandle(o.fh.get()), fopen(o.flags)),
            Err(e) => reply.error(self.err(e)),
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
        match self.policy.read(handle(fh), offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.err(e)),
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
            .policy
            .write(handle(fh), offset, data, from_page_cache, None)
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.err(e)),
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
        self.reply_empty(reply, self.policy.flush())
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
        self.policy.release(handle(fh));
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
        self.reply_empty(reply, self.policy.fsync(handle(fh), datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.policy.opendir(node(ino)) {
            Ok(Some((fh, flags))) => reply.opened(FileHandle(fh.get()), fopen(flags)),
            Ok(None) => reply.error(fuser::Errno::ENOSYS),
            Err(e) => reply.error(self.err(e)),
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
        let r = self
            .policy
            .readdir(node(ino), handle(fh), offset, false, |e| {
                !reply.add(INodeNo(e.ino), e.next, file_type(e.kind), e.name)
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self
            .policy
            .readdir(node(ino), handle(fh), offset, true, |e| match &e.attr {
                Some((a, ttl)) => !reply.add(
                    INodeNo(e.ino),
                    e.next,
                    e.name,
                    ttl,
                    &file_attr(a),
                    Generation(0),
                ),
                None => true,
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.policy.releasedir(handle(fh));
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
        self.reply_empty(reply, self.policy.fsyncdir(node(ino), handle(fh), datasync))
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.policy.statfs(node(ino)) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(self.err(e)),
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
        self.reply_empty(reply, self.policy.setxattr(node(ino), name, value, flags))
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.reply_xattr(reply, self.policy.getxattr(node(ino), name, size))
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.reply_xattr(reply, self.policy.listxattr(node(ino), size))
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.reply_empty(reply, self.policy.removexattr(node(ino), name))
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.reply_empty(reply, self.policy.access())
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
        let r = self
            .policy
            .create(caller(req, umask), node(parent), name, mode, flags, |fd| {
                reply.open_backing(fd).ok()
            });
        let (e, o) = match r {
            Ok((
                Entry {
                    attr: Some(a), ttl, ..
                },
                o,
            )) => ((a, ttl), o),
            Ok(_) => return reply.error(fuser::Errno::EIO),
            Err(e) => return reply.error(self.err(e)),
        };
        let ((a, ttl), fh) = (e, FileHandle(o.fh.get()));
        match &o.backing {
            Some(b) => reply.created_passthrough(
                &ttl,
                &file_attr(&a),
                Generation(0),
                fh,
                fopen(o.flags & !policy::fopen::PASSTHROUGH),
                b,
            ),
            None => reply.created(&ttl, &file_attr(&a), Generation(0), fh, fopen(o.flags)),
        }
    }

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
        if let Err(e) = self.policy.ioctl() {
            reply.error(self.err(e));
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
        self.reply_empty(
            reply,
            self.policy.fallocate(handle(fh), offset, length, mode),
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
        match self.policy.lseek(handle(fh), offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(self.err(e)),
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
            .policy
            .copy_file_range(handle(fh_in), offset_in, handle(fh_out), offset_out, len)
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.err(e)),
        }
    }
}

/// The classic transport serving one mount: [`DevServing::run`] serves until the
/// filesystem is unmounted.
pub struct DevServing(fuser::Session<DevFs>);

impl DevServing {
    /// Where invalidations for this mount go (the watcher of live lower layers).
    pub fn notifier(&self) -> std::sync::Arc<dyn Notify> {
        std::sync::Arc::new(FuserNotify(self.0.notifier()))
    }

    /// The session's `/dev/fuse`, for the notifications fuser has no call for.
    #[cfg(target_os = "linux")]
    pub fn device(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.0)
    }

    pub fn run(self) -> std::io::Result<()> {
        self.0.run()
    }
}

/// How fuser mounts (through fusermount3) when the caller cannot mount itself.
pub struct FuserMount<'a> {
    pub fsname: &'a str,
    pub subtype: &'a str,
    pub read_only: bool,
    /// Kernel flags (`nodev`, `noexec`, …).
    pub flags: &'a [String],
}

fn fuser_config(threads: usize) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config.clone_fd = cfg!(target_os = "linux") && threads > 1;
    config
}

/// Serve `overlay` on `dev`, a `/dev/fuse` the caller has already mounted.
pub fn serve_device(
    overlay: std::sync::Arc<crate::overlay::Overlay>,
    dev: std::os::fd::OwnedFd,
    threads: usize,
) -> std::io::Result<DevServing> {
    let (fs, policy) = DevFs::new(overlay);
    let session = fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, fuser_config(threads))?;
    Ok(serving(session, &policy))
}

/// Mount `overlay` at `mountpoint` through fuser (fusermount3) and serve it.
pub fn mount_and_serve(
    overlay: std::sync::Arc<crate::overlay::Overlay>,
    mountpoint: &Path,
    threads: usize,
    how: &FuserMount,
) -> std::io::Result<DevServing> {
    let (fs, policy) = DevFs::new(overlay);
    let mut config = fuser_config(threads);
    config.mount_options = fuser_options(how);
    let session = fuser::Session::new(fs, mountpoint, &config)?;
    Ok(serving(session, &policy))
}

impl DevFs {
    fn new(
        overlay: std::sync::Arc<crate::overlay::Overlay>,
    ) -> (DevFs, std::sync::Arc<Policy<BackingId>>) {
        let policy = std::sync::Arc::new(Policy::new(overlay));
        (
            DevFs {
                policy: policy.clone(),
            },
            policy,
        )
    }
}

fn serving(session: fuser::Session<DevFs>, policy: &Policy<BackingId>) -> DevServing {
    let notifier: std::sync::Arc<dyn Notify> = std::sync::Arc::new(FuserNotify(session.notifier()));
    policy.set_notifier(Box::new(FuserNotify(session.notifier())));
    policy.forward_attr_changes(notifier);
    tracing::info!(transport = "dev", "serving over /dev/fuse");
    DevServing(session)
}

/// The mount options fuser (and so fusermount3) is given.
fn fuser_options(how: &FuserMount) -> Vec<fuser::MountOption> {
    use fuser::MountOption;
    let mut options = vec![
        MountOption::FSName(how.fsname.to_owned()),
        MountOption::Subtype(how.subtype.to_owned()),
        MountOption::DefaultPermissions,
    ];
    // A container root needs device nodes and setuid binaries to work.
    let (mut dev, mut suid) = (true, true);
    for f in how.flags {
        match f.as_str() {
            "nodev" => dev = false,
            "nosuid" => suid = false,
            "noexec" => options.push(MountOption::NoExec),
            "noatime" => options.push(MountOption::NoAtime),
            "sync" => options.push(MountOption::Sync),
            "dirsync" => options.push(MountOption::DirSync),
            _ => {}
        }
    }
    options.push(if dev {
        MountOption::Dev
    } else {
        MountOption::NoDev
    });
    options.push(if suid {
        MountOption::Suid
    } else {
        MountOption::NoSuid
    });
    options.push(if how.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    options
}

/// The invalidations fuser can send. What it has no call for (the epoch) the session
/// writes to the device itself ([`DevServing::device`]).
struct FuserNotify(fuser::Notifier);

impl Notify for FuserNotify {
    fn inval_inode(&self, ino: u64, offset: i64, len: i64) -> std::io::Result<()> {
        self.0.inval_inode(fuser::INodeNo(ino), offset, len)
    }
    fn inval_entry(&self, parent: u64, name: &std::ffi::OsStr) -> std::io::Result<()> {
        self.0.inval_entry(fuser::INodeNo(parent), name)
    }
    fn inc_epoch(&self) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
    }
}
