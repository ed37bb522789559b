//! Thin raw-syscall wrappers for the conformance runner. Every call returns the exact errno, so the
//! two sides can be compared errno for errno (std's wrappers sometimes add their own checks).

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub type Sys<T> = Result<T, i32>;

pub fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn cs(s: &str) -> CString {
    CString::new(s).expect("string without NUL")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn check(rc: libc::c_int) -> Sys<()> {
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

fn check_len(rc: isize) -> Sys<usize> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc as usize)
    }
}

/// Symbolic name of an errno, for readable outcomes and reproducers.
pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
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
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::E2BIG => "E2BIG",
        _ => return format!("errno{e}"),
    };
    n.to_string()
}

pub fn lstat(p: &Path) -> Sys<libc::stat> {
    let p = c(p);
    // SAFETY: valid C string and a zeroed out-buffer of the right type.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::lstat(p.as_ptr(), &mut st))?;
        Ok(st)
    }
}

pub fn fstat(fd: i32) -> Sys<libc::stat> {
    // SAFETY: zeroed out-buffer of the right type.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstat(fd, &mut st))?;
        Ok(st)
    }
}

pub fn statfs(p: &Path) -> Sys<libc::statfs> {
    let p = c(p);
    // SAFETY: as lstat.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        check(libc::statfs(p.as_ptr(), &mut st))?;
        Ok(st)
    }
}

pub fn mkdir(p: &Path, mode: u32) -> Sys<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::mkdir(c(p).as_ptr(), mode) })
}

pub fn rmdir(p: &Path) -> Sys<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::rmdir(c(p).as_ptr()) })
}

pub fn unlink(p: &Path) -> Sys<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::unlink(c(p).as_ptr()) })
}

pub fn rename2(a: &Path, b: &Path, flags: u32) -> Sys<()> {
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c(a).as_ptr(),
            libc::AT_FDCWD,
            c(b).as_ptr(),
            flags,
        )
    })
}

pub fn link(a: &Path, b: &Path) -> Sys<()> {
    // SAFETY: valid C strings.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            c(a).as_ptr(),
            libc::AT_FDCWD,
            c(b).as_ptr(),
            0,
        )
    })
}

pub fn symlink(target: &str, p: &Path) -> Sys<()> {
    // SAFETY: valid C strings.
    check(unsafe { libc::symlink(cs(target).as_ptr(), c(p).as_ptr()) })
}

pub fn readlink(p: &Path) -> Sys<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: buffer of the given length.
    let n =
        check_len(unsafe { libc::readlink(c(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub fn mknod(p: &Path, mode: u32, dev: u64) -> Sys<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(c(p).as_ptr(), mode, dev) })
}

pub fn chmod(p: &Path, mode: u32) -> Sys<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(c(p).as_ptr(), mode) })
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> Sys<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(c(p).as_ptr(), uid, gid) })
}

/// `utimensat(AT_SYMLINK_NOFOLLOW)`; `None` means UTIME_NOW.
pub fn lutimes(p: &Path, atime: Option<i64>, mtime: Option<i64>) -> Sys<()> {
    let ts = |t: Option<i64>| libc::timespec {
        tv_sec: t.unwrap_or(0),
        tv_nsec: if t.is_some() { 0 } else { libc::UTIME_NOW },
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(p).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn truncate(p: &Path, size: i64) -> Sys<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(c(p).as_ptr(), size) })
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> Sys<()> {
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe {
        libc::lsetxattr(
            c(p).as_ptr(),
            cs(name).as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

pub fn lgetxattr(p: &Path, name: &str) -> Sys<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer of the given length.
    let n = check_len(unsafe {
        libc::lgetxattr(
            c(p).as_ptr(),
            cs(name).as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn lremovexattr(p: &Path, name: &str) -> Sys<()> {
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(c(p).as_ptr(), cs(name).as_ptr()) })
}

/// Sorted xattr names.
pub fn llistxattr(p: &Path) -> Sys<Vec<String>> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer of the given length.
    let n =
        check_len(unsafe { libc::llistxattr(c(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(n);
    let mut names: Vec<String> = buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn open(p: &Path, flags: i32, mode: u32) -> Sys<i32> {
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c(p).as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 { Err(errno()) } else { Ok(fd) }
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor this module opened.
    unsafe { libc::close(fd) };
}

pub fn pwrite(fd: i32, data: &[u8], off: i64) -> Sys<usize> {
    // SAFETY: buffer of the given length.
    check_len(unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) })
}

/// Reads the whole file from offset 0 with pread (leaves the file offset alone).
pub fn pread_all(fd: i32) -> Sys<Vec<u8>> {
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
pub fn readdir(p: &Path) -> Sys<Vec<DirEnt>> {
    let cp = c(p);
    // SAFETY: valid C string; the DIR pointer is used only while open and closed once.
    unsafe {
        let d = libc::opendir(cp.as_ptr());
        if d.is_null() {
            return Err(errno());
        }
        let mut out = Vec::new();
        loop {
            *libc::__errno_location() = 0;
            let e = libc::readdir64(d);
            if e.is_null() {
                let err = errno();
                libc::closedir(d);
                if err != 0 {
                    return Err(err);
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

pub fn umount(p: &Path, flags: i32) -> Sys<()> {
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(c(p).as_ptr(), flags) })
}

pub fn mount(src: &str, target: &Path, fstype: &str, data: &str) -> Sys<()> {
    // SAFETY: valid C strings.
    check(unsafe {
        libc::mount(
            cs(src).as_ptr(),
            c(target).as_ptr(),
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
