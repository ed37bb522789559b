//! The FUSE device without a library: `/dev/fuse` opened and mounted by us, its
//! messages read and written, passthrough backing ids, and FUSE-over-io_uring — one
//! ring per queue (128-byte SQEs, `IORING_OP_URING_CMD` on the device fd) with the
//! header and payload buffers the kernel writes requests into and reads replies from.
//!
//! The buffers of a ring entry belong to the kernel from the moment its REGISTER or
//! COMMIT_AND_FETCH is submitted until its completion is reaped; [`QueueRing`] hands
//! out slices of an entry only in between, so no Rust reference ever aliases memory
//! the kernel may write.

use super::{Errno, SysResult, check, check_size, cstr, retry};
use io_uring::{IoUring, cqueue, squeue};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `/sys/module/fuse/parameters/enable_uring`: Some(true) when the administrator
/// allowed FUSE-over-io_uring, None when this kernel has no such switch.
pub fn fuse_uring_enabled() -> Option<bool> {
    let v = std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring").ok()?;
    Some(matches!(v.trim(), "Y" | "y" | "1"))
}

/// The kernel makes one queue per possible CPU (`num_possible_cpus()`).
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// "0-3,5" → 5 (highest + 1).
fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut max = None;
    for part in s.split(',') {
        let hi = part.rsplit('-').next()?.trim().parse::<usize>().ok()?;
        max = Some(max.map_or(hi, |m: usize| m.max(hi)));
    }
    max.map(|m| m + 1)
}

/// Run the calling thread on `cpu` only.
pub fn pin_to_cpu(cpu: usize) -> SysResult<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: `cpu` is within the set (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 is this thread.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(())
}

/// Open `/dev/fuse` for a mount of our own.
pub fn open_fuse_device() -> SysResult<OwnedFd> {
    let path = cstr(b"/dev/fuse")?;
    // SAFETY: `path` is a valid C string.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Mount flags for [`mount_fuse`].
pub mod mount_flag {
    pub const RDONLY: u64 = libc::MS_RDONLY;
    pub const NOSUID: u64 = libc::MS_NOSUID;
    pub const NODEV: u64 = libc::MS_NODEV;
    pub const NOEXEC: u64 = libc::MS_NOEXEC;
    pub const NOATIME: u64 = libc::MS_NOATIME;
    pub const SYNCHRONOUS: u64 = libc::MS_SYNCHRONOUS;
    pub const DIRSYNC: u64 = libc::MS_DIRSYNC;
}

/// mount(2) a FUSE filesystem served through an open device (`data` carries `fd=N`).
pub fn mount_fuse(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: u64,
    data: &str,
) -> SysResult<()> {
    let src = cstr(source.as_bytes())?;
    let tgt = cstr(target.as_os_str().as_bytes())?;
    let ty = cstr(fstype.as_bytes())?;
    let data = cstr(data.as_bytes())?;
    // SAFETY: all four are valid C strings that outlive the call.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ptr(),
            flags as libc::c_ulong,
            data.as_ptr().cast(),
        )
    })?;
    Ok(())
}

/// Read one message from the device. ENOENT (a request interrupted before it was
/// read) is retried; ENODEV means the filesystem was unmounted.
pub fn dev_read(dev: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is writable for its length.
        let r =
            check_size(unsafe { libc::read(dev.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) });
        match r {
            Err(Errno(libc::EINTR)) | Err(Errno(libc::ENOENT)) | Err(Errno(libc::EAGAIN)) => {
                continue;
            }
            other => return other,
        }
    }
}

/// A clone of the FUSE device fd `dev` (`FUSE_DEV_IOC_CLONE`): requests read from it
/// are answered on it, so threads with clones of their own serve in parallel.
pub fn dev_clone(dev: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    let fd = open_fuse_device()?;
    let src: u32 = dev.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 through the pointer, which is live.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FUSE_DEV_IOC_CLONE, &src) })?;
    Ok(fd)
}

/// `_IOR(229, 0, uint32_t)`.
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;

/// Write one message (a reply or a notification) made of `parts`, in one writev.
pub fn dev_write(dev: BorrowedFd<'_>, parts: &[&[u8]]) -> SysResult<usize> {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    retry(|| {
        // SAFETY: every iovec points at a live slice of its length; the kernel only reads.
        check_size(unsafe { libc::writev(dev.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) })
    })
}

/// `_IOW(229, 1, struct fuse_backing_map)` and `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// `struct fuse_backing_map`.
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

/// A file the kernel reads and writes directly for passthrough opens; the id is
/// closed with the last holder.
#[derive(Debug)]
pub struct BackingFile {
    dev: std::sync::Weak<OwnedFd>,
    id: u32,
}

impl BackingFile {
    /// Register `file` with the connection of `dev` (needs CAP_SYS_ADMIN).
    pub fn open(dev: &std::sync::Arc<OwnedFd>, file: BorrowedFd<'_>) -> SysResult<BackingFile> {
        let map = BackingMap {
            fd: file.as_raw_fd(),
            flags: 0,
            padding: 0,
        };
        // SAFETY: `map` is a valid fuse_backing_map that outlives the call.
        let id = check(unsafe { libc::ioctl(dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_OPEN, &map) })?;
        Ok(BackingFile {
            dev: std::sync::Arc::downgrade(dev),
            id: id as u32,
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for BackingFile {
    fn drop(&mut self) {
        if let Some(dev) = self.dev.upgrade() {
            let id = self.id;
            // SAFETY: `id` is a plain u32 that outlives the call.
            let _ = unsafe { libc::ioctl(dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &id) };
        }
    }
}

/// Memory the kernel and this process share for one ring entry: the request header
/// (`struct fuse_uring_req_header`) and the payload, page-aligned, from mmap.
struct EntryMem {
    ptr: *mut u8,
    len: usize,
    header_len: usize,
    /// iov[0] = header, iov[1] = payload: the kernel reads this array at REGISTER.
    iov: Box<[libc::iovec; 2]>,
    /// Submitted and not yet completed: the kernel may write the buffers.
    in_kernel: bool,
}

// SAFETY: the mapping is owned by this value alone and is plain memory; the raw
// pointers are only turned into slices by the owning QueueRing (see module docs).
unsafe impl Send for EntryMem {}

impl EntryMem {
    fn new(header_len: usize, payload_len: usize) -> SysResult<EntryMem> {
        let page = 4096;
        let hdr = header_len.next_multiple_of(page);
        let len = hdr + payload_len.next_multiple_of(page);
        // SAFETY: anonymous private mapping, no fd; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let ptr = ptr.cast::<u8>();
        let iov = Box::new([
            libc::iovec {
                iov_base: ptr.cast(),
                iov_len: header_len,
            },
            libc::iovec {
                // SAFETY: `hdr` < `len`: within the mapping.
                iov_base: unsafe { ptr.add(hdr) }.cast(),
                iov_len: payload_len,
            },
        ]);
        Ok(EntryMem {
            ptr,
            len,
            header_len: hdr,
            iov,
            in_kernel: false,
        })
    }
}

impl Drop for EntryMem {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length and is unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A 128-byte SQE of `IORING_OP_URING_CMD` on `fd`, with `addr`/`len` (the iovec
/// array of a REGISTER) and the 80-byte command area.
fn uring_cmd(
    fd: RawFd,
    cmd_op: u32,
    addr: u64,
    len: u32,
    user_data: u64,
    cmd: &[u8; 80],
) -> squeue::Entry128 {
    let mut b = [0u8; 128];
    b[0] = io_uring::opcode::UringCmd80::CODE;
    b[4..8].copy_from_slice(&fd.to_ne_bytes());
    b[8..12].copy_from_slice(&cmd_op.to_ne_bytes());
    b[16..24].copy_from_slice(&addr.to_ne_bytes());
    b[24..28].copy_from_slice(&len.to_ne_bytes());
    b[32..40].copy_from_slice(&user_data.to_ne_bytes());
    b[48..128].copy_from_slice(cmd);
    // SAFETY: Entry128 is #[repr(C)] of a 64-byte io_uring_sqe (integers and unions
    // of integers) and 64 command bytes: exactly 128 bytes, every bit pattern valid.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(b) }
}

/// One queue of FUSE-over-io_uring: its own ring and `depth` entries.
pub struct QueueRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    dev: RawFd,
    entries: Vec<EntryMem>,
    /// SQEs pushed since the last submit.
    pending: usize,
}

/// A completed entry: its index and the kernel's result (0, or -errno).
pub type Completion = (usize, i32);

impl QueueRing {
    /// A ring of `depth` entries for the connection on `dev` (which must outlive it),
    /// each with a header buffer of `header_len` and a payload of `payload_len` bytes.
    pub fn new(
        dev: BorrowedFd<'_>,
        depth: usize,
        header_len: usize,
        payload_len: usize,
    ) -> SysResult<QueueRing> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build((depth as u32).next_power_of_two().max(2))?;
        let mut entries = Vec::with_capacity(depth);
        for _ in 0..depth {
            entries.push(EntryMem::new(header_len, payload_len)?);
        }
        Ok(QueueRing {
            ring,
            dev: dev.as_raw_fd(),
            entries,
            pending: 0,
        })
    }

    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    fn push(&mut self, sqe: &squeue::Entry128) -> SysResult<()> {
        // SAFETY: the SQE's addr points at an iovec array in a Box owned by an entry
        // of this ring, which lives as long as the ring; the buffers it names are
        // marked in_kernel by the caller until the completion is reaped.
        while unsafe { self.ring.submission().push(sqe) }.is_err() {
            self.ring.submit()?;
            self.pending = 0;
        }
        self.pending += 1;
        Ok(())
    }

    /// Hand every entry's buffers to the kernel (`cmd_op`, the command area `cmd`:
    /// FUSE_IO_URING_CMD_REGISTER) and submit.
    pub fn register_all(&mut self, cmd_op: u32, cmd: &[u8; 80]) -> SysResult<()> {
        for i in 0..self.entries.len() {
            let addr = self.entries[i].iov.as_ptr() as u64;
            let sqe = uring_cmd(self.dev, cmd_op, addr, 2, i as u64, cmd);
            self.entries[i].in_kernel = true;
            self.push(&sqe)?;
        }
        self.ring.submit()?;
        self.pending = 0;
        Ok(())
    }

    /// Give entry `idx` back with its reply written (`cmd_op`/`cmd`:
    /// COMMIT_AND_FETCH); submitted with the next [`wait`](Self::wait).
    pub fn commit(&mut self, idx: usize, cmd_op: u32, cmd: &[u8; 80]) -> SysResult<()> {
        let Some(e) = self.entries.get_mut(idx) else {
            return Err(Errno::EINVAL);
        };
        e.in_kernel = true;
        let sqe = uring_cmd(self.dev, cmd_op, 0, 0, idx as u64, cmd);
        self.push(&sqe)
    }

    /// Submit what is pending and wait for at least one completion: one syscall.
    pub fn wait(&mut self, out: &mut Vec<Completion>) -> SysResult<()> {
        out.clear();
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.pending = 0;
        for cqe in self.ring.completion() {
            let idx = cqe.user_data() as usize;
            if let Some(e) = self.entries.get_mut(idx) {
                e.in_kernel = false;
                out.push((idx, cqe.result()));
            }
        }
        Ok(())
    }

    /// The header and payload of entry `idx`, which the kernel filled with a request;
    /// None while the entry is with the kernel.
    pub fn buffers(&mut self, idx: usize) -> Option<(&mut [u8], &mut [u8])> {
        let e = self.entries.get_mut(idx)?;
        if e.in_kernel {
            return None;
        }
        // SAFETY: the entry is not with the kernel (in_kernel is false: its completion
        // was reaped and no new command submitted), so nothing else writes the
        // mapping; the two ranges do not overlap and lie within it; the borrow of
        // `self` keeps them from outliving the mapping or being handed out twice.
        unsafe {
            let header = std::slice::from_raw_parts_mut(e.ptr, e.iov[0].iov_len);
            let payload = std::slice::from_raw_parts_mut(e.ptr.add(e.header_len), e.iov[1].iov_len);
            Some((header, payload))
        }
    }
}

/// A non-blocking pipe for splicing, its capacity raised to at least `size` bytes where the
/// system allows it (`fs.pipe-max-size` caps it without CAP_SYS_RESOURCE); returns
/// (read end, write end, capacity in bytes).
pub fn pipe_for_splice(size: usize) -> SysResult<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: both are new fds nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 20);
    let mut cap = 0;
    for want in [size, max.min(size)] {
        // SAFETY: fcntl on a pipe we own; it returns the new capacity.
        match check(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, want as libc::c_int) })
        {
            Ok(c) => {
                cap = c as usize;
                break;
            }
            Err(_) => continue,
        }
    }
    if cap == 0 {
        // SAFETY: fcntl on a pipe we own.
        cap = check(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) })? as usize;
    }
    Ok((r, w, cap))
}

/// Move up to `len` bytes from `from` (at `offset`, or its own position) into `to`
/// without copying them through user memory (splice(2)); the bytes moved, 0 at the
/// end of the file.
pub fn splice(
    from: BorrowedFd<'_>,
    offset: Option<u64>,
    to: BorrowedFd<'_>,
    len: usize,
) -> SysResult<usize> {
    retry(|| {
        let mut o = offset.unwrap_or(0) as libc::loff_t;
        let po: *mut libc::loff_t = if offset.is_some() {
            &mut o
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: `po` is null or points at `o`, which outlives the call.
        check_size(unsafe {
            libc::splice(
                from.as_raw_fd(),
                po,
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        })
    })
}

/// write(2) of all of `data` in one call (a pipe takes up to a page atomically).
pub fn write_once(fd: BorrowedFd<'_>, data: &[u8]) -> SysResult<()> {
    // SAFETY: `data` is readable for its length.
    let n = retry(|| {
        check_size(unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) })
    })?;
    if n != data.len() {
        return Err(Errno::EIO);
    }
    Ok(())
}

/// read(2) into `buf`; the bytes read.
pub fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: `buf` is writable for its length.
    retry(|| check_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-9"), Some(10));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn uring_cmd_sqe_layout() {
        // struct io_uring_sqe: opcode u8 @0, fd i32 @4, cmd_op u32 @8 (union with off),
        // addr u64 @16, len u32 @24, user_data u64 @32, cmd[80] @48 (SQE128).
        let mut cmd = [0u8; 80];
        cmd[8] = 0xab;
        let sqe = uring_cmd(7, 2, 0x1000, 2, 99, &cmd);
        // SAFETY: test only: reading the 128 bytes of a repr(C) plain-data value.
        let b: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        assert_eq!(b[0], 46); // IORING_OP_URING_CMD
        assert_eq!(&b[4..8], &7i32.to_ne_bytes());
        assert_eq!(&b[8..12], &2u32.to_ne_bytes());
        assert_eq!(&b[16..24], &0x1000u64.to_ne_bytes());
        assert_eq!(&b[24..28], &2u32.to_ne_bytes());
        assert_eq!(&b[32..40], &99u64.to_ne_bytes());
        assert_eq!(b[48 + 8], 0xab);
    }
}
