//! The tests' one set of syscall helpers (libc, paths as bytes), shared by every suite:
//! each call returns the exact errno the kernel gave (std's wrappers sometimes add checks
//! of their own), so two filesystems can be compared errno for errno.
#![allow(dead_code)]

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a helper returns: the result, or the exact errno as an `io::Error`.
pub type Sys<T> = io::Result<T>;

fn cs(s: &str) -> CString {
    CString::new(s).expect("string without NUL")
}

fn check(rc: libc::c_int) -> io::Result<()> {
    cvt(rc).map(drop)
}

fn check_len(rc: isize) -> io::Result<usize> {
    cvt_ssize(rc)
}

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_ssize(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// An errno as a test sees it: a raw number or the `io::Error` a helper returned.
pub trait ErrnoOf {
    /// The errno, or None for an error that is not the OS's (shown by its message).
    fn errno(&self) -> Result<i32, String>;
}

impl ErrnoOf for i32 {
    fn errno(&self) -> Result<i32, String> {
        Ok(*self)
    }
}

impl ErrnoOf for io::Error {
    fn errno(&self) -> Result<i32, String> {
        self.raw_os_error().ok_or_else(|| self.to_string())
    }
}

impl ErrnoOf for &io::Error {
    fn errno(&self) -> Result<i32, String> {
        (*self).errno()
    }
}

/// Symbolic name of an errno (`ENOENT`), for readable outcomes and reproducers.
pub fn errno_name(e: impl ErrnoOf) -> String {
    let n = match e.errno() {
        Ok(n) => n,
        Err(message) => return message,
    };
    let name = match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        _ => return format!("errno {n}"),
    };
    name.to_string()
}

pub fn open(p: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let c = cpath(p);
    // SAFETY: c is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::mknod(c.as_ptr(), mode, dev) }).map(drop)
}

pub fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

pub fn renameat2(old: &Path, new: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (o, n) = (cpath(old), cpath(new));
    // SAFETY: valid C strings; AT_FDCWD with absolute paths.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            o.as_ptr(),
            libc::AT_FDCWD,
            n.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    lsetxattr_flags(p, name, value, 0)
}

/// `lsetxattr` with `XATTR_CREATE`/`XATTR_REPLACE`.
pub fn lsetxattr_flags(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings, value pointer/len from a slice.
    cvt(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn lremovexattr(p: &Path, name: &str) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    cvt(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) }).map(drop)
}

pub fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer pointer/len from a live Vec.
    let len = cvt_ssize(unsafe {
        libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    buf.truncate(len);
    Ok(buf)
}

pub fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer pointer/len from a live Vec.
    let len =
        cvt_ssize(unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(len);
    let mut names: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn umount2(p: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::umount2(c.as_ptr(), flags) }).map(drop)
}

pub fn statfs(p: &Path) -> io::Result<libc::statfs> {
    let c = cpath(p);
    // SAFETY: zeroed statfs is a valid out-buffer.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut s) })?;
    Ok(s)
}

/// utimensat without following symlinks; panics on failure (test setup only).
pub fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    utimens(p, atime, mtime).unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

pub fn utimens(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// One directory entry as the kernel returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirent {
    pub name: Vec<u8>,
    pub ino: u64,
    pub dtype: u8,
    pub off: i64,
}

/// `getdents64` with a small buffer, so a listing takes several calls; returns one call's entries
/// (empty at the end).
pub fn getdents(fd: &OwnedFd, bufsize: usize) -> io::Result<Vec<RawDirent>> {
    let mut buf = vec![0u8; bufsize];
    // SAFETY: buffer pointer/len from a live Vec; fd is open.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < n as usize {
        let ino = u64::from_ne_bytes(buf[pos..pos + 8].try_into().unwrap());
        let off = i64::from_ne_bytes(buf[pos + 8..pos + 16].try_into().unwrap());
        let reclen = u16::from_ne_bytes(buf[pos + 16..pos + 18].try_into().unwrap()) as usize;
        let dtype = buf[pos + 18];
        let name_bytes = &buf[pos + 19..pos + reclen];
        let end = name_bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_bytes.len());
        out.push(RawDirent {
            name: name_bytes[..end].to_vec(),
            ino,
            dtype,
            off,
        });
        pos += reclen;
    }
    Ok(out)
}

/// The whole listing of a directory (including `.` and `..`), in the order returned.
pub fn read_dir_raw(p: &Path) -> io::Result<Vec<RawDirent>> {
    let fd = open(p, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut all = Vec::new();
    loop {
        let batch = getdents(&fd, 32768)?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

pub fn lstat(p: &Path) -> io::Result<libc::stat> {
    let p = cpath(p);
    // SAFETY: valid C string and a zeroed out-buffer of the right type.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::lstat(p.as_ptr(), &mut st))?;
        Ok(st)
    }
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed out-buffer of the right type.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstat(fd, &mut st))?;
        Ok(st)
    }
}

pub fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::mkdir(cpath(p).as_ptr(), mode) })
}

pub fn rmdir(p: &Path) -> io::Result<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::rmdir(cpath(p).as_ptr()) })
}

pub fn unlink(p: &Path) -> io::Result<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::unlink(cpath(p).as_ptr()) })
}

pub fn link(a: &Path, b: &Path) -> io::Result<()> {
    // SAFETY: valid C strings.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            cpath(a).as_ptr(),
            libc::AT_FDCWD,
            cpath(b).as_ptr(),
            0,
        )
    })
}

pub fn symlink(target: &str, p: &Path) -> io::Result<()> {
    // SAFETY: valid C strings.
    check(unsafe { libc::symlink(cs(target).as_ptr(), cpath(p).as_ptr()) })
}

pub fn readlink(p: &Path) -> io::Result<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: buffer of the given length.
    let n = check_len(unsafe {
        libc::readlink(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(cpath(p).as_ptr(), mode) })
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(cpath(p).as_ptr(), uid, gid) })
}

/// `utimensat(AT_SYMLINK_NOFOLLOW)`; `None` means UTIME_NOW.
pub fn lutimes(p: &Path, atime: Option<i64>, mtime: Option<i64>) -> io::Result<()> {
    let ts = |t: Option<i64>| libc::timespec {
        tv_sec: t.unwrap_or(0),
        tv_nsec: if t.is_some() { 0 } else { libc::UTIME_NOW },
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(p).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn truncate(p: &Path, size: i64) -> io::Result<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(cpath(p).as_ptr(), size) })
}

pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this module opened.
    unsafe { libc::close(fd) };
}

pub fn pwrite(fd: RawFd, data: &[u8], off: i64) -> io::Result<usize> {
    // SAFETY: buffer of the given length.
    check_len(unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) })
}

/// Reads the whole file from offset 0 with pread (leaves the file offset alone).
pub fn pread_all(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buffer of the given length.
        let n = check_len(unsafe {
            libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), out.len() as i64)
        })?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// One directory entry: name, d_type, d_ino.
pub struct DirEnt {
    pub name: String,
    pub dtype: u8,
    pub ino: u64,
}

/// Full listing of a directory without `.` and `..`, sorted by name.
pub fn readdir(p: &Path) -> io::Result<Vec<DirEnt>> {
    let cp = cpath(p);
    // SAFETY: valid C string; the DIR pointer is used only while open and closed once.
    unsafe {
        let d = libc::opendir(cp.as_ptr());
        if d.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        loop {
            *libc::__errno_location() = 0;
            let e = libc::readdir64(d);
            if e.is_null() {
                let err = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                libc::closedir(d);
                if err != 0 {
                    return Err(io::Error::from_raw_os_error(err));
                }
                break;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr());
            let name = OsStr::from_bytes(name.to_bytes())
                .to_string_lossy()
                .into_owned();
            if name == "." || name == ".." {
                continue;
            }
            out.push(DirEnt {
                name,
                dtype: (*e).d_type,
                ino: (*e).d_ino,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

pub fn mount(src: &str, target: &Path, fstype: &str, data: &str) -> io::Result<()> {
    // SAFETY: valid C strings.
    check(unsafe {
        libc::mount(
            cs(src).as_ptr(),
            cpath(target).as_ptr(),
            cs(fstype).as_ptr(),
            0,
            cs(data).as_ptr().cast(),
        )
    })
}

pub fn set_umask(m: u32) {
    // SAFETY: no pointers.
    unsafe { libc::umask(m) };
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling a child this process spawned, by its PID.
    unsafe { libc::kill(pid as i32, sig) };
}
