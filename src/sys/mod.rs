//! The operating system, behind safe functions.
//!
//! This is the only module that names `libc` and the only one with `unsafe`.
//! Everything above it works with owned fds, byte-string names and [`Errno`].
//! Every entry is reached as (directory fd, one name) with `O_NOFOLLOW`, or
//! through [`open_beneath`], which cannot leave the root it is given.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

// The code path is chosen by `portable` as well as by the target: a Linux build with
// `--features portable` runs the FreeBSD/macOS module, so CI can mount and test it.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod linux;
#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub use linux::*;
#[cfg(target_os = "linux")]
pub mod uring;

#[cfg(any(not(target_os = "linux"), feature = "portable"))]
mod bsd;
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
pub use bsd::*;

/// An OS error code, kept from the syscall to the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EXDEV: Errno = Errno(libc::EXDEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ELOOP: Errno = Errno(libc::ELOOP);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EMLINK: Errno = Errno(libc::EMLINK);
    pub const EOVERFLOW: Errno = Errno(libc::EOVERFLOW);
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    pub const ENOTTY: Errno = Errno(libc::ENOTTY);
    pub const ENOTCONN: Errno = Errno(libc::ENOTCONN);
    #[cfg(target_os = "linux")]
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    #[cfg(not(target_os = "linux"))]
    pub const ENODATA: Errno = Errno(libc::ENOATTR);

    /// The errno of the last failed call on this thread.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<std::ffi::NulError> for Errno {
    fn from(_: std::ffi::NulError) -> Self {
        Errno::EINVAL
    }
}

pub type SysResult<T> = Result<T, Errno>;

/// Turn a `-1` return into the thread's errno.
fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> SysResult<usize> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// Retry a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> SysResult<T>) -> SysResult<T> {
    loop {
        match f() {
            Err(Errno(libc::EINTR)) => continue,
            other => return other,
        }
    }
}

pub(crate) fn cstr(bytes: &[u8]) -> SysResult<CString> {
    Ok(CString::new(bytes)?)
}

/// The kind of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

// `mode_t` is u16 on macOS and u32 elsewhere: the casts are needed there.
#[allow(clippy::unnecessary_cast)]
impl FileKind {
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT as u32 {
            m if m == libc::S_IFDIR as u32 => FileKind::Directory,
            m if m == libc::S_IFLNK as u32 => FileKind::Symlink,
            m if m == libc::S_IFIFO as u32 => FileKind::Fifo,
            m if m == libc::S_IFSOCK as u32 => FileKind::Socket,
            m if m == libc::S_IFCHR as u32 => FileKind::CharDevice,
            m if m == libc::S_IFBLK as u32 => FileKind::BlockDevice,
            _ => FileKind::Regular,
        }
    }

    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        (match self {
            FileKind::Regular => libc::S_IFREG,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
        }) as u32
    }
}

/// A timestamp as the kernel keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

/// What `stat` says of one entry, in plain integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

impl Stat {
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    /// A whiteout in the kernel's format: a character device 0/0.
    pub fn is_whiteout_device(&self) -> bool {
        self.kind() == FileKind::CharDevice && self.rdev == 0
    }

    #[allow(clippy::unnecessary_cast)]
    fn from_libc(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u64,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            blksize: st.st_blksize as u32,
            atime: Timespec {
                sec: st.st_atime as i64,
                nsec: st.st_atime_nsec as i64,
            },
            mtime: Timespec {
                sec: st.st_mtime as i64,
                nsec: st.st_mtime_nsec as i64,
            },
            ctime: Timespec {
                sec: st.st_ctime as i64,
                nsec: st.st_ctime_nsec as i64,
            },
        }
    }
}

/// Filesystem figures for `statfs`.
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub frsize: u32,
    pub namelen: u32,
}

/// A new timestamp for `set_times`.
#[derive(Clone, Copy, Debug)]
pub enum TimeSet {
    Omit,
    Now,
    At(Timespec),
}

impl TimeSet {
    fn to_libc(self) -> libc::timespec {
        match self {
            TimeSet::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            TimeSet::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            TimeSet::At(t) => libc::timespec {
                tv_sec: t.sec as libc::time_t,
                tv_nsec: t.nsec as _,
            },
        }
    }
}

/// One entry read from a directory.
#[derive(Clone, Debug)]
pub struct RawDirEntry {
    pub name: OsString,
    pub ino: u64,
    /// `None` where the filesystem does not fill `d_type`.
    pub kind: Option<FileKind>,
}

/// Open flags the upper layers may ask for (the whole set, used piecemeal).
#[allow(dead_code)]
pub mod oflag {
    pub const RDONLY: i32 = libc::O_RDONLY;
    pub const WRONLY: i32 = libc::O_WRONLY;
    pub const RDWR: i32 = libc::O_RDWR;
    pub const ACCMODE: i32 = libc::O_ACCMODE;
    pub const APPEND: i32 = libc::O_APPEND;
    pub const TRUNC: i32 = libc::O_TRUNC;
    pub const CREAT: i32 = libc::O_CREAT;
    pub const EXCL: i32 = libc::O_EXCL;
    pub const DIRECTORY: i32 = libc::O_DIRECTORY;
    pub const NOFOLLOW: i32 = libc::O_NOFOLLOW;
    pub const NONBLOCK: i32 = libc::O_NONBLOCK;
    pub const SYNC: i32 = libc::O_SYNC;
    #[cfg(target_os = "linux")]
    pub const DIRECT: i32 = libc::O_DIRECT;
    #[cfg(not(target_os = "linux"))]
    pub const DIRECT: i32 = 0;
    #[cfg(target_os = "linux")]
    pub const NOATIME: i32 = libc::O_NOATIME;
    #[cfg(not(target_os = "linux"))]
    pub const NOATIME: i32 = 0;
}

/// Open a directory by an absolute path given by the user (symlinks are followed once,
/// here, at mount time).
pub fn open_dir_path(path: &Path) -> SysResult<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let fd = retry(|| {
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        check(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })
    })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    if name.is_empty() && AT_EMPTY_PATH == 0 {
        // No AT_EMPTY_PATH in the portable module: fstat the fd itself.
        // SAFETY: `st` is a valid out-pointer of the right type.
        check(unsafe { libc::fstat(dir.as_raw_fd(), st.as_mut_ptr()) })?;
        // SAFETY: fstat succeeded, so it filled `st`.
        return Ok(Stat::from_libc(&unsafe { st.assume_init() }));
    }
    let (c, flags) = if name.is_empty() {
        (
            CString::default(),
            libc::AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH,
        )
    } else {
        (cstr(name.as_bytes())?, libc::AT_SYMLINK_NOFOLLOW)
    };
    // SAFETY: `st` is a valid out-pointer of the right type; `c` outlives the call.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(Stat::from_libc(&st))
}

/// `fstat` of an open fd.
pub fn stat_fd(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    stat_at(fd, OsStr::new(""))
}

/// Open one entry of `dir` by name, never following a symlink in it.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let c = cstr(name.as_bytes())?;
    let fd = retry(|| {
        // SAFETY: `c` is a valid C string; the flags and mode are plain integers.
        check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })
    })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: plain syscall on a valid fd and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: plain syscall on a valid fd and C string.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })?;
    Ok(())
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    let t = cstr(target.as_bytes())?;
    let c = cstr(name.as_bytes())?;
    // SAFETY: plain syscall on a valid fd and C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })?;
    Ok(())
}

pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
) -> SysResult<()> {
    let o = cstr(old.as_bytes())?;
    let n = cstr(new.as_bytes())?;
    // SAFETY: plain syscall on valid fds and C strings; flags 0 never follows symlinks.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> SysResult<()> {
    let c = cstr(name.as_bytes())?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: plain syscall on a valid fd and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
}

pub fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<OsString> {
    let c = cstr(name.as_bytes())?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let n = check_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`; `u32::MAX` leaves an id unchanged.
pub fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> SysResult<()> {
    if name.is_empty() && AT_EMPTY_PATH == 0 {
        return chown_fd(dir, uid, gid);
    }
    let (c, flags) = if name.is_empty() {
        (
            CString::default(),
            libc::AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH,
        )
    } else {
        (cstr(name.as_bytes())?, libc::AT_SYMLINK_NOFOLLOW)
    };
    // SAFETY: plain syscall on a valid fd and C string.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, flags) })?;
    Ok(())
}

/// Set access and modification times of `name` in `dir`, never following a symlink.
pub fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: TimeSet,
    mtime: TimeSet,
) -> SysResult<()> {
    let c = cstr(name.as_bytes())?;
    let times = [atime.to_libc(), mtime.to_libc()];
    // SAFETY: `times` is an array of two timespecs as utimensat requires.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Set times of an open file.
pub fn set_times_fd(fd: BorrowedFd<'_>, atime: TimeSet, mtime: TimeSet) -> SysResult<()> {
    let times = [atime.to_libc(), mtime.to_libc()];
    // SAFETY: `times` is an array of two timespecs as futimens requires.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })?;
    Ok(())
}

pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    Ok(())
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    retry(|| {
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        check_size(unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        })
    })
}

/// Read up to `len` bytes at `offset`, looping over short reads until EOF.
pub fn read_exact_at(fd: BorrowedFd<'_>, len: usize, offset: u64) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = pread(fd, &mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> SysResult<usize> {
    retry(|| {
        // SAFETY: `buf` is readable for `buf.len()` bytes.
        check_size(unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        })
    })
}

pub fn fsync(fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    retry(|| check(unsafe { libc::fsync(fd.as_raw_fd()) }))?;
    Ok(())
}

pub fn truncate_fd(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    retry(|| check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }))?;
    Ok(())
}

/// `lseek`; `whence` is one of the [`seek`] constants.
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as i64)
    }
}

#[allow(dead_code)] // the whole set, used piecemeal
pub mod seek {
    pub const SET: i32 = libc::SEEK_SET;
    pub const END: i32 = libc::SEEK_END;
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    pub const DATA: i32 = libc::SEEK_DATA;
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    pub const HOLE: i32 = libc::SEEK_HOLE;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    pub const DATA: i32 = 3;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    pub const HOLE: i32 = 4;
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> SysResult<FsStats> {
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `s` is a valid out-pointer of the right type.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), s.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so it filled `s`.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Ok(FsStats {
        blocks: s.f_blocks as u64,
        bfree: s.f_bfree as u64,
        bavail: s.f_bavail as u64,
        files: s.f_files as u64,
        ffree: s.f_ffree as u64,
        bsize: s.f_bsize as u32,
        frsize: s.f_frsize as u32,
        namelen: s.f_namemax as u32,
    })
}

/// Read every entry of the directory open at `fd` (`.` and `..` left out).
pub fn read_dir(fd: BorrowedFd<'_>) -> SysResult<Vec<RawDirEntry>> {
    // fdopendir takes ownership of its fd, so give it a duplicate opened afresh
    // (a dup would share the offset with the caller's fd).
    let own = open_at(fd, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let raw = own.as_raw_fd();
    // SAFETY: `raw` is a valid directory fd; on success fdopendir owns it.
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        return Err(Errno::last());
    }
    std::mem::forget(own);
    let mut out = Vec::new();
    loop {
        // SAFETY: `dir` is a valid DIR*; readdir returns NULL at the end or on error.
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            break;
        }
        // SAFETY: `ent` points to a valid dirent until the next readdir call on `dir`.
        let ent = unsafe { &*ent };
        // SAFETY: d_name is NUL-terminated within the dirent.
        let name = unsafe { CStr::from_ptr(ent.d_name.as_ptr()) }.to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match ent.d_type {
            libc::DT_REG => Some(FileKind::Regular),
            libc::DT_DIR => Some(FileKind::Directory),
            libc::DT_LNK => Some(FileKind::Symlink),
            libc::DT_FIFO => Some(FileKind::Fifo),
            libc::DT_SOCK => Some(FileKind::Socket),
            libc::DT_CHR => Some(FileKind::CharDevice),
            libc::DT_BLK => Some(FileKind::BlockDevice),
            _ => None,
        };
        #[cfg(target_os = "freebsd")]
        let ino = ent.d_fileno;
        #[cfg(not(target_os = "freebsd"))]
        let ino = ent.d_ino;
        #[allow(clippy::unnecessary_cast)]
        out.push(RawDirEntry {
            name: OsStr::from_bytes(name).to_owned(),
            ino: ino as u64,
            kind,
        });
    }
    // SAFETY: `dir` is valid and closed exactly once here.
    unsafe { libc::closedir(dir) };
    Ok(out)
}

/// Put an advisory lock on a whole file (used to claim a work dir).
pub fn flock_exclusive_nonblocking(fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })?;
    Ok(())
}

/// Set the process umask; the daemon runs with 0 and applies each caller's own.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: getegid cannot fail.
    unsafe { libc::getegid() }
}

/// Raise this process's soft limit on open files to its hard limit (macOS: to at most
/// `OPEN_MAX`, which it enforces). A serving daemon holds an fd for every file a caller has
/// open in the union, and the usual soft limit (1024) would turn the thousandth open file
/// into EMFILE for every caller. Returns the limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 here, i64 on the BSDs
pub fn raise_open_file_limit() -> SysResult<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which is live.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur >= lim.rlim_max {
        return Ok(lim.rlim_cur as u64);
    }
    let want = lim.rlim_max;
    for cur in [want, want.min(10240)] {
        let new = libc::rlimit {
            rlim_cur: cur,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which is live.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return Ok(cur as u64);
        }
    }
    Ok(lim.rlim_cur as u64)
}

pub fn getpid() -> u32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// Duplicate a descriptor (close-on-exec).
pub fn dup(fd: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    Ok(fd.try_clone_to_owned()?)
}

/// Borrow helper so callers need not import `AsFd`.
pub fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    fd.as_fd()
}

/// Wait until `fd` is readable or `timeout_ms` passes; true when readable (POSIX poll,
/// the same on every platform: the portable build's lower watcher uses it too; the
/// watcher, its only user, is Linux-only).
#[cfg(target_os = "linux")]
pub fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout_ms: i32) -> SysResult<bool> {
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    match n {
        -1 if Errno::last() == Errno(libc::EINTR) => Ok(false),
        -1 => Err(Errno::last()),
        n => Ok(n > 0),
    }
}
