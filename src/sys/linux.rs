//! Linux-only system calls: openat2 containment, renameat2, xattrs, in-kernel copies.

use super::{Errno, SysResult, check, check_size, cstr, retry};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) const AT_EMPTY_PATH: i32 = libc::AT_EMPTY_PATH;

/// Flags for [`rename_at`].
pub mod rename_flag {
    pub const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
    pub const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
    pub const WHITEOUT: u32 = libc::RENAME_WHITEOUT;
}

/// Whether this platform can create kernel-format whiteouts (0/0 char devices) and
/// has the `trusted.*` xattr namespace.
pub const KERNEL_WHITEOUTS: bool = true;

/// Whether this module reads and writes xattrs (the union's markers among them).
pub const XATTRS: bool = true;

/// Open `rel` (a relative path of several components) beneath `root`: symlinks,
/// `..` and magic links can never lead outside `root` (`RESOLVE_IN_ROOT |
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`). The last component is not followed.
/// An empty `rel` opens `root` itself.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    // openat2 refuses paths of PATH_MAX and beyond; walk long paths in pieces, each
    // piece still contained beneath the directory reached so far.
    const PIECE: usize = 3072;
    if rel.len() >= PIECE {
        let cut = rel[..PIECE]
            .iter()
            .rposition(|&b| b == b'/')
            .ok_or(Errno::ENAMETOOLONG)?;
        let dir = openat2(root, &rel[..cut], libc::O_PATH | libc::O_DIRECTORY, 0)?;
        return open_beneath(super::borrow(&dir), &rel[cut + 1..], flags, mode);
    }
    openat2(root, rel, flags, mode)
}

fn openat2(root: BorrowedFd<'_>, rel: &[u8], flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let c = cstr(rel)?;
    let mut how: libc::open_how = {
        // SAFETY: open_how is a plain C struct for which all-zero is valid.
        unsafe { std::mem::zeroed() }
    };
    how.flags = (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let fd = retry(|| {
        // SAFETY: `how` is a valid open_how of the size passed; `c` outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        check(r as libc::c_int)
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `O_PATH` handle on one entry, never following a symlink.
pub fn open_path_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<OwnedFd> {
    super::open_at(dir, name, libc::O_PATH, 0)
}

/// `renameat2` with [`rename_flag`] flags.
pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: u32,
) -> SysResult<()> {
    let o = cstr(old.as_bytes())?;
    let n = cstr(new.as_bytes())?;
    // SAFETY: plain syscall on valid fds and C strings.
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

/// The `/proc/self/fd/N` name of an fd: xattr calls through it reach the very inode
/// the fd holds (even a symlink opened with `O_PATH`), with no path walk to race.
fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    // A formatted integer never holds a NUL byte.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Read the xattr `name` of the inode behind `fd` (any fd, `O_PATH` too).
pub fn get_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> SysResult<Vec<u8>> {
    let path = proc_fd_path(fd);
    let n = cstr(name.as_bytes())?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is writable for its length; strings outlive the call.
        let r = unsafe {
            libc::getxattr(
                path.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        match check_size(r) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(Errno::ERANGE) => {
                // SAFETY: a size query with a null buffer.
                let need =
                    unsafe { libc::getxattr(path.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
                let need = check_size(need)?;
                buf = vec![0u8; need.max(buf.len() * 2)];
            }
            Err(e) => return Err(e),
        }
    }
}

/// List the xattr names of the inode behind `fd`.
pub fn list_xattr(fd: BorrowedFd<'_>) -> SysResult<Vec<Vec<u8>>> {
    let path = proc_fd_path(fd);
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `buf` is writable for its length.
        let r = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check_size(r) {
            Ok(len) => break len,
            Err(Errno::ERANGE) => {
                // SAFETY: a size query with a null buffer.
                let need =
                    check_size(unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) })?;
                buf = vec![0u8; need.max(buf.len() * 2)];
            }
            Err(e) => return Err(e),
        }
    };
    Ok(split_names(&buf[..len]))
}

/// listxattrat(2) and getxattrat(2) (Linux 6.13): the xattrs of a name in a directory
/// in one call, with no fd opened and closed for it. The numbers are the shared table's
/// (the same on these architectures; libc does not name them yet). Elsewhere, or on an
/// older kernel (ENOSYS, remembered), the entry is opened `O_PATH` instead.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SYS_XATTRAT: Option<(libc::c_long, libc::c_long)> = Some((464, 465));
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYS_XATTRAT: Option<(libc::c_long, libc::c_long)> = None;

static NO_XATTRAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `struct xattr_args` of `linux/xattr.h`.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Call an `*xattrat` syscall on `name` of `dir` (not following a symlink) with a
/// buffer grown until the answer fits; `None` where the kernel lacks the call.
fn xattrat_sized(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    call: impl Fn(libc::c_int, *const libc::c_char, &mut [u8]) -> libc::c_long,
) -> Option<SysResult<Vec<u8>>> {
    if NO_XATTRAT.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let n = match cstr(name.as_bytes()) {
        Ok(n) => n,
        Err(e) => return Some(Err(e)),
    };
    let mut buf = vec![0u8; 256];
    loop {
        match check_size(call(dir.as_raw_fd(), n.as_ptr(), &mut buf) as isize) {
            Ok(len) => {
                buf.truncate(len);
                return Some(Ok(buf));
            }
            Err(Errno::ERANGE) if buf.len() < 1 << 20 => buf = vec![0u8; buf.len() * 4],
            Err(Errno::ENOSYS) => {
                NO_XATTRAT.store(true, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// List the xattr names of the entry `name` of `dir` (a symlink's own).
pub fn list_xattr_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Vec<Vec<u8>>> {
    if let Some((_, list)) = SYS_XATTRAT {
        let got = xattrat_sized(dir, name, |d, n, buf| {
            // SAFETY: listxattrat(dfd, path, at_flags, list, size): the path is a live C
            // string and `buf` is writable for its length.
            unsafe {
                libc::syscall(
                    list,
                    d,
                    n,
                    libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            }
        });
        if let Some(r) = got {
            return r.map(|b| split_names(&b));
        }
    }
    let fd = open_path_at(dir, name)?;
    list_xattr(fd.as_fd())
}

/// Read the xattr `xname` of the entry `name` of `dir` (a symlink's own).
pub fn get_xattr_at(dir: BorrowedFd<'_>, name: &OsStr, xname: &OsStr) -> SysResult<Vec<u8>> {
    if let Some((get, _)) = SYS_XATTRAT {
        let x = cstr(xname.as_bytes())?;
        let got = xattrat_sized(dir, name, |d, n, buf| {
            let mut args = XattrArgs {
                value: buf.as_mut_ptr() as u64,
                size: buf.len() as u32,
                flags: 0,
            };
            // SAFETY: getxattrat(dfd, path, at_flags, name, args, args_size): the strings
            // are live, `args` is the kernel's struct and points at `buf`, writable for
            // the size it gives.
            unsafe {
                libc::syscall(
                    get,
                    d,
                    n,
                    libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                    x.as_ptr(),
                    &mut args as *mut XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            }
        });
        if let Some(r) = got {
            return r;
        }
    }
    let fd = open_path_at(dir, name)?;
    get_xattr(fd.as_fd(), xname)
}

/// The names of a listxattr answer (NUL-separated).
fn split_names(buf: &[u8]) -> Vec<Vec<u8>> {
    buf.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_vec())
        .collect()
}

/// Flags for [`set_xattr`] (the whole set, used piecemeal).
#[allow(dead_code)]
pub mod xattr_flag {
    pub const CREATE: i32 = libc::XATTR_CREATE;
    pub const REPLACE: i32 = libc::XATTR_REPLACE;
}

pub fn set_xattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
    let path = proc_fd_path(fd);
    let n = cstr(name.as_bytes())?;
    // SAFETY: `value` is readable for its length; strings outlive the call.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

pub fn remove_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    let path = proc_fd_path(fd);
    let n = cstr(name.as_bytes())?;
    // SAFETY: strings outlive the call.
    check(unsafe { libc::removexattr(path.as_ptr(), n.as_ptr()) })?;
    Ok(())
}

/// Make `dst` share `src`'s blocks (reflink); fails where the filesystem cannot.
pub fn clone_file(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: FICLONE takes the source fd as its argument.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) })?;
    Ok(())
}

/// Copy `len` bytes inside the kernel; returns how many were copied (0 at EOF).
pub fn copy_range(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> SysResult<usize> {
    let mut si = src_off as libc::off64_t;
    let mut di = dst_off as libc::off64_t;
    retry(|| {
        // SAFETY: the offsets are valid in/out pointers; flags must be 0.
        check_size(unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut si, dst.as_raw_fd(), &mut di, len, 0)
        })
    })
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    retry(|| {
        check(unsafe {
            libc::fallocate(
                fd.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        })
    })?;
    Ok(())
}

pub fn fdatasync(fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    retry(|| check(unsafe { libc::fdatasync(fd.as_raw_fd()) }))?;
    Ok(())
}

pub fn syncfs(fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })?;
    Ok(())
}

/// Set the size of the file an `O_PATH` fd names the way truncate(2) does: unlike
/// ftruncate(2) it leaves the times to the filesystem when the size does not change.
pub fn truncate_path_fd(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    let path = proc_fd_path(fd);
    // SAFETY: `path` is a valid C string that outlives the call.
    super::retry(|| check(unsafe { libc::truncate(path.as_ptr(), size as libc::off_t) }))?;
    Ok(())
}

/// Set the size of the entry `name` in `dir` as truncate(2) does, through an `O_PATH`
/// handle (never following a symlink, never opening the file itself).
pub fn truncate_at(dir: BorrowedFd<'_>, name: &OsStr, size: u64) -> SysResult<()> {
    let fd = open_path_at(dir, name)?;
    truncate_path_fd(super::borrow(&fd), size)
}

/// chmod of the entry `name` in `dir`, never following a symlink, through an `O_PATH`
/// handle (a device's driver is never run, a socket needs no opening).
/// One fchmodat2(2) call with `AT_SYMLINK_NOFOLLOW` where the kernel has it (6.6).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: plain syscall; the name outlives it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            n.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(r as libc::c_int) {
        Err(Errno::ENOSYS) => {
            let fd = open_path_at(dir, name)?;
            chmod_path_fd(super::borrow(&fd), mode)
        }
        other => other.map(|_| ()),
    }
}

/// chmod that also works on `O_PATH` fds (the kernel's fchmodat2 with AT_EMPTY_PATH,
/// falling back to the fd's /proc name).
pub fn chmod_path_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    let empty = CString::default();
    // SAFETY: plain syscall; the empty string outlives it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            empty.as_ptr(),
            mode as libc::mode_t,
            libc::AT_EMPTY_PATH,
        )
    };
    match check(r as libc::c_int) {
        Ok(_) => Ok(()),
        Err(Errno::ENOSYS) | Err(Errno::EINVAL) => {
            let path = proc_fd_path(fd);
            // SAFETY: `path` is a valid C string.
            check(unsafe { libc::chmod(path.as_ptr(), mode as libc::mode_t) })?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Unmount; with `lazy`, detach even if busy.
pub fn unmount(path: &Path, lazy: bool) -> SysResult<()> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::umount2(c.as_ptr(), flags) })?;
    Ok(())
}

/// Whether the caller may use features that need CAP_SYS_ADMIN in the initial
/// namespace (trusted.* xattrs, FUSE passthrough): root outside a user namespace.
pub fn has_admin_capability() -> bool {
    if super::geteuid() != 0 {
        return false;
    }
    // In a user namespace uid_map is not the identity map of the whole range.
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            map.split_whitespace()
                .collect::<Vec<_>>()
                .starts_with(&["0", "0", "4294967295"])
        }
        Err(_) => true,
    }
}

/// Whether files owned by ids this process's user namespace does not map read back as
/// the overflow id (65534) rather than as their owner: anywhere the caller lacks
/// [`has_admin_capability`] (a user namespace, or no root), as the union then shows them
/// as the caller's own ids (`IdMap::unmapped_as`).
pub fn unmapped_ids_read_as_overflow() -> bool {
    !has_admin_capability()
}

/// Open `O_TMPFILE` unsupported? Report whether the error means so.
pub fn is_unsupported(e: Errno) -> bool {
    matches!(
        e.0,
        libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::ENOTTY
    )
}

/// The kernel's file handle of the inode behind `fd` (`name_to_handle_at` with
/// `AT_EMPTY_PATH`): its type and bytes.
pub fn file_handle(fd: BorrowedFd<'_>) -> SysResult<(i32, Vec<u8>)> {
    const MAX_HANDLE_SZ: usize = 128;
    const HEADER: usize = std::mem::size_of::<libc::file_handle>();
    // u64 storage keeps the struct's alignment.
    let mut buf = vec![0u64; (HEADER + MAX_HANDLE_SZ).div_ceil(8)];
    let fh = buf.as_mut_ptr().cast::<libc::file_handle>();
    let mut mount_id: libc::c_int = 0;
    let empty = CString::default();
    // SAFETY: `buf` is large enough for the header plus MAX_HANDLE_SZ bytes, and
    // handle_bytes tells the kernel how many it may write.
    unsafe { (*fh).handle_bytes = MAX_HANDLE_SZ as libc::c_uint };
    // SAFETY: all pointers are valid for the duration of the call.
    check(unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            empty.as_ptr(),
            fh,
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    })?;
    // SAFETY: the kernel filled the header; `handle_bytes` ≤ MAX_HANDLE_SZ bytes
    // follow it inside `buf`.
    let (ty, len) = unsafe { ((*fh).handle_type, (*fh).handle_bytes as usize) };
    // SAFETY: the bytes were written by the kernel, within `buf`.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            buf.as_ptr().cast::<u8>().add(HEADER),
            len.min(MAX_HANDLE_SZ),
        )
    };
    Ok((ty, bytes.to_vec()))
}

/// The UUID of the filesystem holding `fd` (`FS_IOC_GETFSUUID`), as the kernel keeps
/// it in the superblock; `None` where the filesystem has none.
pub fn fs_uuid(fd: BorrowedFd<'_>) -> Option<[u8; 16]> {
    #[repr(C)]
    struct FsUuid2 {
        len: u8,
        uuid: [u8; 16],
    }
    // _IOR(0x15, 0, struct fsuuid2)
    const FS_IOC_GETFSUUID: libc::c_ulong = (2 << 30) | (17 << 16) | (0x15 << 8);
    let mut out = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    // SAFETY: `out` matches struct fsuuid2 (17 bytes) as the ioctl expects.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFSUUID as _, &mut out) };
    if r == 0 && out.len == 16 {
        Some(out.uuid)
    } else {
        None
    }
}

/// Open the inode a file handle names, on the filesystem `mount_fd` belongs to
/// (`open_by_handle_at`, as `O_PATH`). Needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, ty: i32, handle: &[u8]) -> SysResult<OwnedFd> {
    const HEADER: usize = std::mem::size_of::<libc::file_handle>();
    let mut buf = vec![0u64; (HEADER + handle.len()).div_ceil(8)];
    let fh = buf.as_mut_ptr().cast::<libc::file_handle>();
    // SAFETY: `buf` holds the header plus `handle.len()` bytes, written here.
    unsafe {
        (*fh).handle_bytes = handle.len() as libc::c_uint;
        (*fh).handle_type = ty;
        std::ptr::copy_nonoverlapping(
            handle.as_ptr(),
            buf.as_mut_ptr().cast::<u8>().add(HEADER),
            handle.len(),
        );
    }
    // SAFETY: `fh` points to a complete file_handle inside `buf`.
    let fd = check(unsafe {
        libc::open_by_handle_at(mount_fd.as_raw_fd(), fh, libc::O_PATH | libc::O_CLOEXEC)
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Give the memory the allocator holds freed back to the OS (glibc keeps freed heap
/// pages otherwise, so a daemon that dropped a million nodes would not shrink).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Set the readahead window of the backing device `dev` (`MAJ:MIN`, e.g. a FUSE
/// mount's `0:N`) to at least `kb` KiB: `/sys/class/bdi/DEV/read_ahead_kb`, a
/// setting of that one device. Root only; a window already as large stays.
pub fn raise_read_ahead_kb(dev: &str, kb: u64) -> std::io::Result<u64> {
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    let now: u64 = std::fs::read_to_string(&path)?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    if now >= kb {
        return Ok(now);
    }
    std::fs::write(&path, kb.to_string())?;
    Ok(kb)
}

/// Ask the kernel to start reading `[offset, offset+len)` of `fd` into the page cache
/// now (POSIX_FADV_WILLNEED: asynchronous, a hint; errors are of no consequence).
pub fn will_need(fd: BorrowedFd<'_>, offset: u64, len: u64) {
    // SAFETY: plain syscall on a valid fd; no memory is passed.
    let _ = unsafe {
        libc::posix_fadvise(
            fd.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The by-name reads (listxattrat/getxattrat, or their fallback) see what the fd-based
    /// ones see: a file's own xattrs, a symlink's own (never its target's), a value
    /// larger than the first buffer, and ENODATA / ENOENT as errors.
    #[test]
    fn xattrs_read_by_name_match_the_fd_reads() {
        let root = std::env::temp_dir().join(format!("lf-xattrat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", root.join("l")).unwrap();
        let dir = super::super::open_dir_path(&root).unwrap();
        let d = dir.as_fd();
        let f = open_path_at(d, OsStr::new("f")).unwrap();
        let big = vec![7u8; 3000];
        // user.* needs no privilege on a file; a symlink can carry only trusted.* (root).
        set_xattr(f.as_fd(), OsStr::new("user.lf.small"), b"v", 0).unwrap();
        set_xattr(f.as_fd(), OsStr::new("user.lf.big"), &big, 0).unwrap();
        let mut by_name = list_xattr_at(d, OsStr::new("f")).unwrap();
        let mut by_fd = list_xattr(f.as_fd()).unwrap();
        by_name.sort();
        by_fd.sort();
        assert_eq!(by_name, by_fd);
        assert!(by_name.iter().any(|n| n.as_slice() == b"user.lf.big"));
        assert_eq!(
            get_xattr_at(d, OsStr::new("f"), OsStr::new("user.lf.big")).unwrap(),
            big
        );
        assert_eq!(
            get_xattr_at(d, OsStr::new("f"), OsStr::new("user.lf.none")),
            Err(Errno::ENODATA)
        );
        assert_eq!(list_xattr_at(d, OsStr::new("gone")), Err(Errno::ENOENT));
        if super::super::geteuid() == 0 {
            let l = open_path_at(d, OsStr::new("l")).unwrap();
            set_xattr(l.as_fd(), OsStr::new("trusted.lf.link"), b"own", 0).unwrap();
            let names = list_xattr_at(d, OsStr::new("l")).unwrap();
            assert!(names.iter().any(|n| n.as_slice() == b"trusted.lf.link"));
            assert!(!names.iter().any(|n| n.as_slice() == b"user.lf.small"));
            assert_eq!(
                get_xattr_at(d, OsStr::new("l"), OsStr::new("trusted.lf.link")).unwrap(),
                b"own"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
