//! The FUSE protocol bytes that layerfuse reads and writes itself (the io_uring
//! transport; the classic transport goes through fuser). Layouts are those of the
//! kernel's `include/uapi/linux/fuse.h` at protocol 7.42 (little-endian, as every
//! Linux port that has FUSE-over-io_uring): each request's fixed argument (`op_in` of
//! a ring entry, the start of the body on `/dev/fuse`) and its variable part (names,
//! data) in [`request`], each reply in [`reply`]. Parsing never panics: a short or
//! malformed message is an error (EINVAL to the kernel). The layouts are tested
//! without mounting (`tests.rs`). The flag bits the shared policy decides on (INIT,
//! open replies) are the policy's: `crate::fuse::flags`.

mod reply;
mod request;
#[cfg(test)]
mod tests;

pub use crate::fuse::flags::init;
pub use reply::*;
pub use request::*;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

pub const KERNEL_VERSION: u32 = 7;
/// The protocol minor we speak: FUSE-over-io_uring arrived in 7.42.
pub const KERNEL_MINOR_VERSION: u32 = 42;

/// `struct fuse_in_header`.
pub const IN_HEADER_LEN: usize = 40;
/// `struct fuse_out_header`.
pub const OUT_HEADER_LEN: usize = 16;

/// Every opcode of the 7.42 protocol, served or not (a table of the ABI).
#[allow(dead_code)]
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const BMAP: u32 = 37;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const NOTIFY_REPLY: u32 = 41;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const SYNCFS: u32 = 50;
    pub const TMPFILE: u32 = 51;
    pub const STATX: u32 = 52;
}

/// `fuse_setattr_in.valid`.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    pub const KILL_SUIDGID: u32 = 1 << 11;
}

/// `fuse_open_in.open_flags` / `fuse_create_in.open_flags`.
pub const OPEN_KILL_SUIDGID: u32 = 1 << 0;
/// `fuse_write_in.write_flags`.
pub const WRITE_CACHE: u32 = 1 << 0;
pub const WRITE_KILL_SUIDGID: u32 = 1 << 2;
/// `fuse_getattr_in.getattr_flags`.
pub const GETATTR_FH: u32 = 1 << 0;
/// `fuse_fsync_in.fsync_flags`.
pub const FSYNC_FDATASYNC: u32 = 1 << 0;
/// `fuse_notify_code`.
pub const NOTIFY_INVAL_INODE: i32 = 2;
pub const NOTIFY_INVAL_ENTRY: i32 = 3;
/// Every dentry the kernel holds of the connection is invalid from now on (Linux 6.16,
/// protocol 7.44; older kernels answer EINVAL).
pub const NOTIFY_INC_EPOCH: i32 = 8;

/// FUSE-over-io_uring (`fuse_uring_req_header`): the fuse_in/out_header area, the
/// per-opcode argument area, then `fuse_uring_ent_in_out`.
pub mod ring {
    pub const IN_OUT_HEADER_SZ: usize = 128;
    pub const OP_IN_OUT_SZ: usize = 128;
    /// `struct fuse_uring_ent_in_out`: flags, commit_id, payload_sz, padding, reserved.
    pub const ENT_IN_OUT_SZ: usize = 32;
    pub const ENT_IN_OUT_OFFSET: usize = IN_OUT_HEADER_SZ + OP_IN_OUT_SZ;
    pub const REQ_HEADER_SZ: usize = ENT_IN_OUT_OFFSET + ENT_IN_OUT_SZ;
    /// `enum fuse_uring_cmd`.
    pub const CMD_REGISTER: u32 = 1;
    pub const CMD_COMMIT_AND_FETCH: u32 = 2;

    /// `struct fuse_uring_cmd_req` in the 80-byte command area of a 128-byte SQE.
    pub fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
        let mut c = [0u8; 80];
        // flags (u64) at 0 stays zero.
        c[8..16].copy_from_slice(&commit_id.to_le_bytes());
        c[16..18].copy_from_slice(&qid.to_le_bytes());
        c
    }

    /// `commit_id` and `payload_sz` of the entry trailer the kernel wrote.
    pub fn ent_in(header: &[u8]) -> Option<(u64, u32)> {
        let t = header.get(ENT_IN_OUT_OFFSET..REQ_HEADER_SZ)?;
        let id = u64::from_le_bytes(t.get(8..16)?.try_into().ok()?);
        let sz = u32::from_le_bytes(t.get(16..20)?.try_into().ok()?);
        Some((id, sz))
    }

    /// Write the trailer of a commit: the reply's payload size.
    pub fn set_payload_sz(header: &mut [u8], commit_id: u64, payload_sz: u32) {
        if let Some(t) = header.get_mut(ENT_IN_OUT_OFFSET..REQ_HEADER_SZ) {
            t.fill(0);
            t[8..16].copy_from_slice(&commit_id.to_le_bytes());
            t[16..20].copy_from_slice(&payload_sz.to_le_bytes());
        }
    }
}

/// A message the kernel sent that layerfuse cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Little-endian reads from a byte slice, never past its end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A NUL-terminated name (the NUL is consumed, not returned).
    fn name(&mut self) -> Result<&'a OsStr, Malformed> {
        let end = self.buf.iter().position(|&c| c == 0).ok_or(Malformed)?;
        let n = self.take(end)?;
        self.take(1)?;
        Ok(OsStr::from_bytes(n))
    }
}

/// `struct fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
}

impl InHeader {
    pub fn parse(buf: &[u8]) -> Result<InHeader, Malformed> {
        let mut r = Reader::new(buf);
        let h = InHeader {
            len: r.u32()?,
            opcode: r.u32()?,
            unique: r.u64()?,
            nodeid: r.u64()?,
            uid: r.u32()?,
            gid: r.u32()?,
            pid: r.u32()?,
            total_extlen: r.u16()?,
        };
        r.u16()?;
        Ok(h)
    }
}

/// The size of an opcode's fixed argument (`in_args[0]`): on a ring entry it is in
/// the `op_in` area, on `/dev/fuse` it starts the body. 0 for the opcodes whose first
/// argument is a name (the kernel gives those an empty first argument since 6.14).
pub fn op_in_size(opcode: u32) -> usize {
    use opcode::*;
    match opcode {
        FORGET | INTERRUPT | MKDIR | RENAME | LINK | OPEN | OPENDIR | SETXATTR | GETXATTR
        | LISTXATTR | ACCESS | BATCH_FORGET | SYNCFS => 8,
        GETATTR | MKNOD | FSYNC | FSYNCDIR | CREATE | RENAME2 | BMAP => 16,
        RELEASE | RELEASEDIR | FLUSH | LSEEK | POLL | STATX => 24,
        IOCTL | FALLOCATE => 32,
        READ | READDIR | READDIRPLUS | WRITE => 40,
        COPY_FILE_RANGE => 56,
        INIT => 64,
        SETATTR => 88,
        GETLK | SETLK | SETLKW => 48,
        _ => 0,
    }
}
