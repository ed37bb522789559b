//! FreeBSD and macOS: the same safe API as `linux.rs`, over what these systems have.
//! There is no openat2 (walks go one component at a time with `O_NOFOLLOW`), no
//! `trusted.*` xattr namespace and no unprivileged 0/0 mknod, so whiteouts and opaque
//! markers use the OCI file format there ([`KERNEL_WHITEOUTS`] is false).

use super::{Errno, SysResult, check, cstr};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) const AT_EMPTY_PATH: i32 = 0;

pub mod rename_flag {
    pub const NOREPLACE: u32 = 1;
    pub const EXCHANGE: u32 = 2;
    pub const WHITEOUT: u32 = 4;
}

pub const KERNEL_WHITEOUTS: bool = false;

/// No xattrs here (FreeBSD's extattrs are not wired): no entry ever carries a marker,
/// so none is opened to read one.
pub const XATTRS: bool = false;

/// Open `rel` beneath `root` one component at a time, refusing symlinks and `..`.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let parts: Vec<&[u8]> = rel
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.iter().any(|p| *p == b"..") {
        return Err(Errno::EPERM);
    }
    let Some((last, dirs)) = parts.split_last() else {
        return super::open_at(root, OsStr::new("."), flags, mode);
    };
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let base = cur.as_ref().map(super::borrow).unwrap_or(root);
        cur = Some(super::open_at(
            base,
            OsStr::from_bytes(d),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?);
    }
    let base = cur.as_ref().map(super::borrow).unwrap_or(root);
    super::open_at(base, OsStr::from_bytes(last), flags, mode)
}

/// A handle on one entry to stat, chmod or truncate it, never following a symlink. There
/// is no `O_PATH` on macOS (and FreeBSD's allows no fchmod), so the entry is opened for
/// reading; `O_NONBLOCK` so a FIFO does not wait for a writer. A symlink (ELOOP) is
/// opened as the link itself.
pub fn open_path_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<OwnedFd> {
    match super::open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
        Err(Errno::ELOOP) => super::open_at(dir, name, LINK_ITSELF, 0),
        other => other,
    }
}

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
const LINK_ITSELF: i32 = libc::O_PATH;
#[cfg(target_vendor = "apple")]
const LINK_ITSELF: i32 = libc::O_SYMLINK;

pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: u32,
) -> SysResult<()> {
    if flags & (rename_flag::EXCHANGE | rename_flag::WHITEOUT) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & rename_flag::NOREPLACE != 0 && super::stat_at(new_dir, new).is_ok() {
        return Err(Errno::EEXIST);
    }
    let o = cstr(old.as_bytes())?;
    let n = cstr(new.as_bytes())?;
    // SAFETY: plain syscall on valid fds and C strings.
    check(unsafe {
        libc::renameat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
        )
    })?;
    Ok(())
}

#[allow(dead_code)] // the whole set, used piecemeal
pub mod xattr_flag {
    pub const CREATE: i32 = 1;
    pub const REPLACE: i32 = 2;
}

pub fn get_xattr(_fd: BorrowedFd<'_>, _name: &OsStr) -> SysResult<Vec<u8>> {
    Err(Errno::ENOTSUP)
}

pub fn list_xattr(_fd: BorrowedFd<'_>) -> SysResult<Vec<Vec<u8>>> {
    Ok(Vec::new())
}

pub fn list_xattr_at(_dir: BorrowedFd<'_>, _name: &OsStr) -> SysResult<Vec<Vec<u8>>> {
    Ok(Vec::new())
}

pub fn get_xattr_at(_dir: BorrowedFd<'_>, _name: &OsStr, _xname: &OsStr) -> SysResult<Vec<u8>> {
    Err(Errno::ENOTSUP)
}

pub fn set_xattr(_fd: BorrowedFd<'_>, _name: &OsStr, _value: &[u8], _flags: i32) -> SysResult<()> {
    Err(Errno::ENOTSUP)
}

pub fn remove_xattr(_fd: BorrowedFd<'_>, _name: &OsStr) -> SysResult<()> {
    Err(Errno::ENOTSUP)
}

pub fn clone_file(_src: BorrowedFd<'_>, _dst: BorrowedFd<'_>) -> SysResult<()> {
    Err(Errno::ENOTSUP)
}

pub fn copy_range(
    _src: BorrowedFd<'_>,
    _src_off: u64,
    _dst: BorrowedFd<'_>,
    _dst_off: u64,
    _len: usize,
) -> SysResult<usize> {
    Err(Errno::ENOSYS)
}

pub fn fallocate(_fd: BorrowedFd<'_>, _mode: i32, _offset: u64, _len: u64) -> SysResult<()> {
    Err(Errno::EOPNOTSUPP)
}

pub fn fdatasync(fd: BorrowedFd<'_>) -> SysResult<()> {
    super::fsync(fd)
}

pub fn syncfs(_fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    Ok(())
}

/// Set the size of a file by fd (BSD has no `O_PATH`: the fd is open for writing).
pub fn truncate_path_fd(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    super::truncate_fd(fd, size)
}

/// Set the size of the regular file `name` in `dir`, as truncate(2) would. There is no
/// truncate by fd without write access (and no `truncateat`): the file is opened for
/// writing, never following a symlink (`O_NONBLOCK`: never waiting on a FIFO).
///
/// On FreeBSD and macOS truncate(2) and ftruncate(2) are the same change of the vnode's
/// size (`vn_truncate_locked`, `vnode_setattr`): the filesystem sets the times alike. On
/// Linux (the `portable` build) they differ: ftruncate always sets mtime and ctime,
/// truncate(2) leaves that to the filesystem (tmpfs: not for an empty file truncated to
/// 0), which is what the kernel's overlayfs passes on; so the opened file is truncated
/// through its `/proc/self/fd` name there.
pub fn truncate_at(dir: BorrowedFd<'_>, name: &OsStr, size: u64) -> SysResult<()> {
    let fd = super::open_at(dir, name, libc::O_WRONLY | libc::O_NONBLOCK, 0)?;
    truncate_opened(&fd, size)
}

#[cfg(not(target_os = "linux"))]
fn truncate_opened(fd: &OwnedFd, size: u64) -> SysResult<()> {
    super::truncate_fd(super::borrow(fd), size)
}

#[cfg(target_os = "linux")]
fn truncate_opened(fd: &OwnedFd, size: u64) -> SysResult<()> {
    let path = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    // SAFETY: `path` is a valid C string that outlives the call.
    super::retry(|| check(unsafe { libc::truncate(path.as_ptr(), size as libc::off_t) }))?;
    Ok(())
}

pub fn chmod_path_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    super::chmod_fd(fd, mode)
}

/// chmod of the entry `name` in `dir` by its name, never following a symlink: the
/// entry is not opened (a socket cannot be, and opening a device would run its driver).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: plain syscall on a valid fd and C string.
    check(unsafe {
        libc::fchmodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

pub fn unmount(path: &Path, lazy: bool) -> SysResult<()> {
    let c = cstr(path.as_os_str().as_bytes())?;
    #[cfg(not(target_os = "linux"))]
    {
        let flags = if lazy { libc::MNT_FORCE } else { 0 };
        // SAFETY: `c` is a valid C string.
        check(unsafe { libc::unmount(c.as_ptr(), flags) })?;
    }
    // The `portable` build on Linux: the same code paths above the mount itself.
    #[cfg(target_os = "linux")]
    {
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: `c` is a valid C string.
        check(unsafe { libc::umount2(c.as_ptr(), flags) })?;
    }
    Ok(())
}

pub fn has_admin_capability() -> bool {
    false
}

/// No user namespaces here (a jail keeps the host's ids): an owner 65534 is a real owner
/// (`nobody`), shown as it is stored, not read back as an unmapped id.
pub fn unmapped_ids_read_as_overflow() -> bool {
    false
}

pub fn is_unsupported(e: Errno) -> bool {
    matches!(
        e.0,
        libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::ENOTTY
    )
}

pub fn file_handle(_fd: BorrowedFd<'_>) -> SysResult<(i32, Vec<u8>)> {
    Err(Errno::ENOTSUP)
}

pub fn fs_uuid(_fd: BorrowedFd<'_>) -> Option<[u8; 16]> {
    None
}

pub fn open_by_handle(_mount_fd: BorrowedFd<'_>, _ty: i32, _handle: &[u8]) -> SysResult<OwnedFd> {
    Err(Errno::ENOTSUP)
}

/// The system allocators of FreeBSD and macOS return freed memory themselves.
pub fn release_free_memory() {}

/// Read-ahead hint: not offered here (macOS has no posix_fadvise); reads still work.
pub fn will_need(_fd: BorrowedFd<'_>, _offset: u64, _len: u64) {}

/// No per-mount readahead setting here: the window stays the system's.
pub fn raise_read_ahead_kb(_dev: &str, _kb: u64) -> std::io::Result<u64> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}
