//! A small fault-injecting FUSE filesystem for the tests: a passthrough to a backing
//! directory (data, modes, owners, times, xattrs — `trusted.*` included — device nodes,
//! whiteout renames) that answers EIO to the operations and paths the test switches on at
//! runtime. Files are opened with direct I/O, so every read and write reaches it.

use crate::common::*;
use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, SessionACL, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The operations a fault can be put on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Fsync,
    Rename,
}

/// One fault: EIO for an operation on any path containing the bytes.
type Fault = (Op, Vec<u8>);

/// What fails: `(op, name)` answers EIO for `op` on any path containing `name`.
#[derive(Clone, Default)]
pub struct Faults {
    on: Arc<Mutex<Vec<Fault>>>,
    /// EIO answers given so far.
    pub hits: Arc<AtomicU64>,
}

impl Faults {
    pub fn set(&self, op: Op, name: &str) {
        self.on.lock().push((op, name.as_bytes().to_vec()));
    }

    pub fn clear(&self) {
        self.on.lock().clear();
    }

    fn fails(&self, op: Op, path: &Path) -> bool {
        let p = path.as_os_str().as_bytes();
        let hit = self
            .on
            .lock()
            .iter()
            .any(|(o, n)| *o == op && p.windows(n.len()).any(|w| w == n.as_slice()));
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }
}

struct FaultFs {
    back: PathBuf,
    faults: Faults,
    /// Inode number (the backing one; 1 for the root) to its path below `back`.
    paths: Mutex<HashMap<u64, PathBuf>>,
    files: Mutex<HashMap<u64, (fs::File, PathBuf)>>,
    next_fh: AtomicU64,
}

const TTL: Duration = Duration::from_secs(0);

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH
    }
}

fn kind(md: &fs::Metadata) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_socket() {
        FileType::Socket
    } else {
        FileType::RegularFile
    }
}

impl FaultFs {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.lock().get(&ino.0).cloned().ok_or(Errno::ESTALE)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn attr(&self, p: &Path) -> Result<FileAttr, Errno> {
        let md = fs::symlink_metadata(p).map_err(errno)?;
        let ino = if p == self.back { 1 } else { md.ino() };
        self.paths.lock().insert(ino, p.to_path_buf());
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: md.size(),
            blocks: md.blocks(),
            atime: time(md.atime(), md.atime_nsec()),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind(&md),
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev() as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entry(&self, p: &Path, reply: ReplyEntry) {
        match self.attr(p) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn done(&self, r: io::Result<()>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn file(&self, fh: FileHandle) -> Option<(fs::File, PathBuf)> {
        let files = self.files.lock();
        let (f, p) = files.get(&fh.0)?;
        Some((f.try_clone().ok()?, p.clone()))
    }

    fn open_file(&self, p: &Path, flags: i32, mode: Option<u32>) -> io::Result<u64> {
        let acc = flags & libc::O_ACCMODE;
        let mut o = fs::OpenOptions::new();
        o.read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
            .custom_flags(
                flags & (libc::O_TRUNC | libc::O_APPEND | libc::O_EXCL | libc::O_NOFOLLOW),
            );
        if let Some(m) = mode {
            o.create(true).mode(m);
        }
        let f = o.open(p)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().insert(fh, (f, p.to_path_buf()));
        Ok(fh)
    }
}

fn xattr_reply(size: u32, r: io::Result<Vec<u8>>, reply: ReplyXattr) {
    match r {
        Err(e) => reply.error(errno(e)),
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
    }
}

fn get_xattr(p: &Path, name: Option<&OsStr>) -> io::Result<Vec<u8>> {
    let c = cstr(p);
    let n = name.map(|n| CString::new(n.as_bytes()).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings; the buffer pointer/length come from a live Vec.
    let len = unsafe {
        match &n {
            Some(n) => libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
            None => libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
        }
    };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name) {
            Ok(p) => self.entry(&p, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path(ino).and_then(|p| self.attr(&p)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
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
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let p = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let c = cstr(&p);
        let r = (|| -> io::Result<()> {
            if let Some(m) = mode {
                // SAFETY: valid C string.
                check(unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), m & 0o7777, 0) })?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&p, uid, gid)?;
            }
            if let Some(s) = size {
                if self.faults.fails(Op::Write, &p) {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                match fh.and_then(|h| self.file(h)) {
                    Some((f, _)) => f.set_len(s)?,
                    None => fs::OpenOptions::new().write(true).open(&p)?.set_len(s)?,
                }
            }
            if atime.is_some() || mtime.is_some() {
                let ts = |t: Option<TimeOrNow>| match t {
                    None => libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_OMIT,
                    },
                    Some(TimeOrNow::Now) => libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_NOW,
                    },
                    Some(TimeOrNow::SpecificTime(t)) => {
                        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                        libc::timespec {
                            tv_sec: d.as_secs() as i64,
                            tv_nsec: d.subsec_nanos() as i64,
                        }
                    }
                };
                let times = [ts(atime), ts(mtime)];
                // SAFETY: valid C string and a two-element timespec array.
                check(unsafe {
                    libc::utimensat(
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        times.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
            }
            Ok(())
        })();
        match r.map_err(errno).and_then(|()| self.attr(&p)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.path(ino).and_then(|p| fs::read_link(p).map_err(errno)) {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let p = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let c = cstr(&p);
        // SAFETY: valid C string.
        match check(unsafe { libc::mknod(c.as_ptr(), mode, rdev as libc::dev_t) }) {
            Ok(()) => self.entry(&p, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let p = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match fs::DirBuilder::new().mode(mode).create(&p) {
            Ok(()) => self.entry(&p, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.child(parent, name) {
            Ok(p) => self.done(fs::remove_file(p), reply),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.child(parent, name) {
            Ok(p) => self.done(fs::remove_dir(p), reply),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let p = match self.child(parent, link_name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match std::os::unix::fs::symlink(target, &p) {
            Ok(()) => self.entry(&p, reply),
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
        let (from, to) = match (self.child(parent, name), self.child(newparent, newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if self.faults.fails(Op::Rename, &from) || self.faults.fails(Op::Rename, &to) {
            return reply.error(Errno::EIO);
        }
        let (a, b) = (cstr(&from), cstr(&to));
        // SAFETY: valid C strings.
        let r = check(unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                flags.bits(),
            )
        });
        if r.is_ok() {
            // Keep the moved entry's inode (and everything below it) reachable.
            let mut paths = self.paths.lock();
            for p in paths.values_mut() {
                if let Ok(rest) = p.strip_prefix(&from) {
                    *p = if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    };
                }
            }
        }
        self.done(r, reply)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (from, to) = match (self.path(ino), self.child(newparent, newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        match fs::hard_link(&from, &to) {
            Ok(()) => self.entry(&to, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self
            .path(ino)
            .and_then(|p| self.open_file(&p, flags.0, None).map_err(errno))
        {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let p = match self.child(parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self
            .open_file(&p, flags, Some(mode))
            .map_err(errno)
            .and_then(|fh| Ok((fh, self.attr(&p)?)))
        {
            Ok((fh, a)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
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
        let Some((f, p)) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        if self.faults.fails(Op::Read, &p) {
            return reply.error(Errno::EIO);
        }
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..n]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some((f, p)) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        if self.faults.fails(Op::Write, &p) {
            return reply.error(Errno::EIO);
        }
        match f.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
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
        self.files.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some((f, p)) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        if self.faults.fails(Op::Fsync, &p) {
            return reply.error(Errno::EIO);
        }
        self.done(f.sync_all(), reply)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.path(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let p = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let mut entries: Vec<(OsString, u64, FileType)> = vec![
            (".".into(), ino.0, FileType::Directory),
            ("..".into(), 1, FileType::Directory),
        ];
        match fs::read_dir(&p) {
            Ok(rd) => {
                for e in rd.flatten() {
                    if let Ok(md) = e.metadata() {
                        entries.push((e.file_name(), md.ino(), kind(&md)));
                    }
                }
            }
            Err(e) => return reply.error(errno(e)),
        }
        for (i, (name, ino, k)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, k, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let c = cstr(&self.back);
        // SAFETY: zeroed statvfs is a valid out-buffer; valid C string.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        match check(unsafe { libc::statvfs(c.as_ptr(), &mut s) }) {
            Ok(()) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
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
        let p = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let (c, n) = (cstr(&p), CString::new(name.as_bytes()).unwrap());
        // SAFETY: valid C strings; value pointer/length from a slice.
        let r = check(unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        });
        self.done(r, reply)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.path(ino) {
            Ok(p) => xattr_reply(size, get_xattr(&p, Some(name)), reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.path(ino) {
            Ok(p) => xattr_reply(size, get_xattr(&p, None), reply),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let p = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let (c, n) = (cstr(&p), CString::new(name.as_bytes()).unwrap());
        // SAFETY: valid C strings.
        let r = check(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) });
        self.done(r, reply)
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// The fault filesystem mounted at `mnt` over `back`, served by threads of this process;
/// unmounted on drop.
pub struct FaultMount {
    pub mnt: PathBuf,
    pub faults: Faults,
    session: Option<fuser::BackgroundSession>,
}

impl FaultMount {
    pub fn new(back: &Path, mnt: &Path) -> FaultMount {
        let faults = Faults::default();
        let back = fs::canonicalize(back).unwrap();
        let fs = FaultFs {
            back: back.clone(),
            faults: faults.clone(),
            paths: Mutex::new(HashMap::from([(1, back)])),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        };
        let mut config = Config::default();
        config.acl = SessionACL::All;
        config.n_threads = Some(2);
        config.mount_options = vec![
            MountOption::FSName("faultfs".into()),
            MountOption::Dev,
            MountOption::Suid,
            MountOption::RW,
        ];
        let session = fuser::Session::new(fs, mnt, &config)
            .and_then(|s| s.spawn())
            .unwrap_or_else(|e| panic!("mount the fault filesystem at {}: {e}", mnt.display()));
        assert!(
            wait_for(DEADLINE, || !mounts_at(mnt).is_empty()),
            "the fault filesystem did not mount"
        );
        FaultMount {
            mnt: mnt.to_path_buf(),
            faults,
            session: Some(session),
        }
    }
}

impl Drop for FaultMount {
    fn drop(&mut self) {
        unmount_all(&self.mnt);
        drop(self.session.take());
    }
}
