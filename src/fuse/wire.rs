//! The FUSE protocol bytes that layerfuse reads and writes itself (the io_uring
//! transport; the classic transport goes through fuser). Layouts are those of the
//! kernel's `include/uapi/linux/fuse.h` at protocol 7.42 (little-endian, as every
//! Linux port that has FUSE-over-io_uring): each request's fixed argument (`op_in` of
//! a ring entry, the start of the body on `/dev/fuse`) and its variable part (names,
//! data), and each reply. Parsing never panics: a short or malformed message is an
//! error (EINVAL to the kernel). The layouts are tested below without mounting.

use crate::overlay::{Attr, FileKind, Timespec};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

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

/// INIT flags, `flags | flags2 << 32` (`FUSE_*` of fuse.h).
pub mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const AUTO_INVAL_DATA: u64 = 1 << 12;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const NO_OPENDIR_SUPPORT: u64 = 1 << 24;
    pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const OVER_IO_URING: u64 = 1 << 41;
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

/// `fuse_open_out.open_flags`.
pub mod fopen {
    pub const KEEP_CACHE: u32 = 1 << 1;
    pub const CACHE_DIR: u32 = 1 << 3;
    pub const NOFLUSH: u32 = 1 << 5;
    pub const PASSTHROUGH: u32 = 1 << 7;
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

/// `fuse_setattr_in`, as far as the union uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetattrIn {
    pub valid: u32,
    pub fh: u64,
    pub size: u64,
    pub atime: u64,
    pub mtime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One forget of `BATCH_FORGET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForgetOne {
    pub nodeid: u64,
    pub nlookup: u64,
}

/// A request, parsed. Names and data borrow from the message buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Init {
        major: u32,
        minor: u32,
        max_readahead: u32,
        flags: u64,
    },
    Destroy,
    Lookup {
        name: &'a OsStr,
    },
    Forget {
        nlookup: u64,
    },
    BatchForget {
        forgets: Vec<ForgetOne>,
    },
    Interrupt {
        unique: u64,
    },
    Getattr {
        fh: Option<u64>,
    },
    Setattr(SetattrIn),
    Readlink,
    Symlink {
        name: &'a OsStr,
        target: &'a OsStr,
    },
    Mknod {
        mode: u32,
        rdev: u32,
        umask: u32,
        name: &'a OsStr,
    },
    Mkdir {
        mode: u32,
        umask: u32,
        name: &'a OsStr,
    },
    Unlink {
        name: &'a OsStr,
    },
    Rmdir {
        name: &'a OsStr,
    },
    Rename {
        newdir: u64,
        flags: u32,
        name: &'a OsStr,
        newname: &'a OsStr,
    },
    Link {
        oldnodeid: u64,
        newname: &'a OsStr,
    },
    Open {
        flags: u32,
        open_flags: u32,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Write {
        fh: u64,
        offset: u64,
        write_flags: u32,
        data: &'a [u8],
    },
    Statfs,
    Release {
        fh: u64,
    },
    Fsync {
        fh: u64,
        datasync: bool,
    },
    Setxattr {
        flags: u32,
        name: &'a OsStr,
        value: &'a [u8],
    },
    Getxattr {
        size: u32,
        name: &'a OsStr,
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a OsStr,
    },
    Flush {
        fh: u64,
    },
    Opendir {
        flags: u32,
    },
    Readdir {
        fh: u64,
        offset: u64,
        size: u32,
        plus: bool,
    },
    Releasedir {
        fh: u64,
    },
    Fsyncdir {
        fh: u64,
        datasync: bool,
    },
    Access {
        mask: u32,
    },
    Create {
        flags: u32,
        mode: u32,
        umask: u32,
        open_flags: u32,
        name: &'a OsStr,
    },
    Ioctl,
    Syncfs,
    Fallocate {
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    },
    Lseek {
        fh: u64,
        offset: u64,
        whence: u32,
    },
    CopyFileRange {
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    },
    /// An opcode the union does not serve: answered ENOSYS.
    Other(u32),
}

/// Parse a request from its fixed argument (`arg`, at least [`op_in_size`] bytes)
/// and its variable part (`payload`).
pub fn parse<'a>(code: u32, arg: &'a [u8], payload: &'a [u8]) -> Result<Request<'a>, Malformed> {
    use self::opcode as op;
    let opcode = code;
    let mut a = Reader::new(arg);
    let mut p = Reader::new(payload);
    Ok(match opcode {
        op::INIT => {
            let major = a.u32()?;
            let minor = a.u32()?;
            let max_readahead = a.u32()?;
            let flags = a.u32()? as u64;
            // flags2 exists from 7.36 on; an older kernel sends a shorter message.
            let flags2 = a.u32().unwrap_or(0) as u64;
            Request::Init {
                major,
                minor,
                max_readahead,
                flags: flags | flags2 << 32,
            }
        }
        op::DESTROY => Request::Destroy,
        op::LOOKUP => Request::Lookup { name: p.name()? },
        op::FORGET => Request::Forget { nlookup: a.u64()? },
        op::BATCH_FORGET => {
            let count = a.u32()? as usize;
            let mut forgets = Vec::with_capacity(count.min(payload.len() / 16));
            for _ in 0..count {
                forgets.push(ForgetOne {
                    nodeid: p.u64()?,
                    nlookup: p.u64()?,
                });
            }
            Request::BatchForget { forgets }
        }
        op::INTERRUPT => Request::Interrupt { unique: a.u64()? },
        op::GETATTR => {
            let flags = a.u32()?;
            a.u32()?;
            let fh = a.u64()?;
            Request::Getattr {
                fh: (flags & GETATTR_FH != 0).then_some(fh),
            }
        }
        op::SETATTR => {
            let valid = a.u32()?;
            a.u32()?;
            let fh = a.u64()?;
            let size = a.u64()?;
            let _lock_owner = a.u64()?;
            let atime = a.u64()?;
            let mtime = a.u64()?;
            let _ctime = a.u64()?;
            let atimensec = a.u32()?;
            let mtimensec = a.u32()?;
            let _ctimensec = a.u32()?;
            let mode = a.u32()?;
            a.u32()?;
            let uid = a.u32()?;
            let gid = a.u32()?;
            Request::Setattr(SetattrIn {
                valid,
                fh,
                size,
                atime,
                mtime,
                atimensec,
                mtimensec,
                mode,
                uid,
                gid,
            })
        }
        op::READLINK => Request::Readlink,
        op::SYMLINK => Request::Symlink {
            name: p.name()?,
            target: p.name()?,
        },
        op::MKNOD => {
            let mode = a.u32()?;
            let rdev = a.u32()?;
            let umask = a.u32()?;
            Request::Mknod {
                mode,
                rdev,
                umask,
                name: p.name()?,
            }
        }
        op::MKDIR => {
            let mode = a.u32()?;
            let umask = a.u32()?;
            Request::Mkdir {
                mode,
                umask,
                name: p.name()?,
            }
        }
        op::UNLINK => Request::Unlink { name: p.name()? },
        op::RMDIR => Request::Rmdir { name: p.name()? },
        op::RENAME => {
            let newdir = a.u64()?;
            Request::Rename {
                newdir,
                flags: 0,
                name: p.name()?,
                newname: p.name()?,
            }
        }
        op::RENAME2 => {
            let newdir = a.u64()?;
            let flags = a.u32()?;
            Request::Rename {
                newdir,
                flags,
                name: p.name()?,
                newname: p.name()?,
            }
        }
        op::LINK => Request::Link {
            oldnodeid: a.u64()?,
            newname: p.name()?,
        },
        op::OPEN => Request::Open {
            flags: a.u32()?,
            open_flags: a.u32()?,
        },
        op::READ => {
            let fh = a.u64()?;
            let offset = a.u64()?;
            let size = a.u32()?;
            Request::Read { fh, offset, size }
        }
        op::WRITE => {
            let fh = a.u64()?;
            let offset = a.u64()?;
            let size = a.u32()? as usize;
            let write_flags = a.u32()?;
            let data = p.take(size)?;
            Request::Write {
                fh,
                offset,
                write_flags,
                data,
            }
        }
        op::STATFS => Request::Statfs,
        op::RELEASE => Request::Release { fh: a.u64()? },
        op::FSYNC | op::FSYNCDIR => {
            let fh = a.u64()?;
            let datasync = a.u32()? & FSYNC_FDATASYNC != 0;
            if opcode == op::FSYNC {
                Request::Fsync { fh, datasync }
            } else {
                Request::Fsyncdir { fh, datasync }
            }
        }
        op::SETXATTR => {
            let size = a.u32()? as usize;
            let flags = a.u32()?;
            let name = p.name()?;
            Request::Setxattr {
                flags,
                name,
                value: p.take(size)?,
            }
        }
        op::GETXATTR => {
            let size = a.u32()?;
            Request::Getxattr {
                size,
                name: p.name()?,
            }
        }
        op::LISTXATTR => Request::Listxattr { size: a.u32()? },
        op::REMOVEXATTR => Request::Removexattr { name: p.name()? },
        op::FLUSH => Request::Flush { fh: a.u64()? },
        op::OPENDIR => Request::Opendir { flags: a.u32()? },
        op::READDIR | op::READDIRPLUS => {
            let fh = a.u64()?;
            let offset = a.u64()?;
            let size = a.u32()?;
            Request::Readdir {
                fh,
                offset,
                size,
                plus: opcode == op::READDIRPLUS,
            }
        }
        op::RELEASEDIR => Request::Releasedir { fh: a.u64()? },
        op::ACCESS => Request::Access { mask: a.u32()? },
        op::CREATE => {
            let flags = a.u32()?;
            let mode = a.u32()?;
            let umask = a.u32()?;
            let open_flags = a.u32()?;
            Request::Create {
                flags,
                mode,
                umask,
                open_flags,
                name: p.name()?,
            }
        }
        op::IOCTL => Request::Ioctl,
        op::SYNCFS => Request::Syncfs,
        op::FALLOCATE => {
            let fh = a.u64()?;
            let offset = a.u64()?;
            let length = a.u64()?;
            let mode = a.u32()?;
            Request::Fallocate {
                fh,
                offset,
                length,
                mode,
            }
        }
        op::LSEEK => {
            let fh = a.u64()?;
            let offset = a.u64()?;
            let whence = a.u32()?;
            Request::Lseek { fh, offset, whence }
        }
        op::COPY_FILE_RANGE => {
            let fh_in = a.u64()?;
            let off_in = a.u64()?;
            let _nodeid_out = a.u64()?;
            let fh_out = a.u64()?;
            let off_out = a.u64()?;
            let len = a.u64()?;
            Request::CopyFileRange {
                fh_in,
                off_in,
                fh_out,
                off_out,
                len,
            }
        }
        other => Request::Other(other),
    })
}

/// Parse a whole `/dev/fuse` message: header, fixed argument, variable part.
pub fn parse_message(msg: &[u8]) -> Result<(InHeader, Request<'_>), Malformed> {
    let h = InHeader::parse(msg)?;
    let body = msg
        .get(IN_HEADER_LEN..(h.len as usize).min(msg.len()))
        .ok_or(Malformed)?;
    let split = op_in_size(h.opcode).min(body.len());
    let (arg, payload) = body.split_at(split);
    Ok((h, parse(h.opcode, arg, payload)?))
}

/// A reply being built in a buffer of fixed capacity (a ring entry's payload, or
/// the buffer of a `/dev/fuse` write after the header).
pub struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Out<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out { buf, len: 0 }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }
    /// Append bytes; false (nothing written) when they do not fit.
    pub fn put(&mut self, b: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(self.len..self.len + b.len()) else {
            return false;
        };
        dst.copy_from_slice(b);
        self.len += b.len();
        true
    }
    fn u32(&mut self, v: u32) -> bool {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> bool {
        self.put(&v.to_le_bytes())
    }
    /// The free space, for data read straight into the reply; `commit(n)` adds `n`.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }
    pub fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }
}

/// `S_IF*` of a kind.
pub fn kind_bits(k: FileKind) -> u32 {
    match k {
        FileKind::Regular => 0o100000,
        FileKind::Directory => 0o040000,
        FileKind::Symlink => 0o120000,
        FileKind::Fifo => 0o010000,
        FileKind::Socket => 0o140000,
        FileKind::CharDevice => 0o020000,
        FileKind::BlockDevice => 0o060000,
    }
}

/// `DT_*` of a kind (a listing entry's type).
pub fn dirent_type(k: FileKind) -> u32 {
    kind_bits(k) >> 12
}

fn secs(t: Timespec) -> (u64, u32) {
    (t.sec as u64, t.nsec.clamp(0, 999_999_999) as u32)
}

/// `struct fuse_attr` (88 bytes).
pub fn put_attr(o: &mut Out, a: &Attr) -> bool {
    let (at, atn) = secs(a.atime);
    let (mt, mtn) = secs(a.mtime);
    let (ct, ctn) = secs(a.ctime);
    let mut b = [0u8; 88];
    let fields64 = [a.ino.get(), a.size, a.blocks, at, mt, ct];
    for (i, v) in fields64.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    let fields32 = [
        atn,
        mtn,
        ctn,
        kind_bits(a.kind) | (a.perm & 0o7777),
        a.nlink,
        a.uid,
        a.gid,
        a.rdev as u32,
        a.blksize,
        0,
    ];
    for (i, v) in fields32.iter().enumerate() {
        b[48 + i * 4..52 + i * 4].copy_from_slice(&v.to_le_bytes());
    }
    o.put(&b)
}

fn put_valid(o: &mut Out, ttl: Duration) -> bool {
    o.u64(ttl.as_secs())
}

/// `struct fuse_entry_out` (128 bytes); `attr` None is a negative entry (node 0).
pub fn put_entry(o: &mut Out, attr: Option<&Attr>, generation: u64, ttl: Duration) -> bool {
    let ok = o.u64(attr.map_or(0, |a| a.ino.get()))
        && o.u64(generation)
        && put_valid(o, ttl)
        && put_valid(o, ttl)
        && o.u32(ttl.subsec_nanos())
        && o.u32(ttl.subsec_nanos());
    ok && match attr {
        Some(a) => put_attr(o, a),
        None => o.put(&[0u8; 88]),
    }
}

/// `struct fuse_attr_out` (104 bytes).
pub fn put_attr_out(o: &mut Out, a: &Attr, ttl: Duration) -> bool {
    put_valid(o, ttl) && o.u32(ttl.subsec_nanos()) && o.u32(0) && put_attr(o, a)
}

/// `struct fuse_open_out` (16 bytes).
pub fn put_open(o: &mut Out, fh: u64, open_flags: u32, backing_id: u32) -> bool {
    o.u64(fh) && o.u32(open_flags) && o.u32(backing_id)
}

/// `struct fuse_write_out` (8 bytes).
pub fn put_write(o: &mut Out, size: u32) -> bool {
    o.u32(size) && o.u32(0)
}

/// `struct fuse_getxattr_out` (8 bytes).
pub fn put_xattr_size(o: &mut Out, size: u32) -> bool {
    o.u32(size) && o.u32(0)
}

/// `struct fuse_lseek_out`.
pub fn put_lseek(o: &mut Out, offset: i64) -> bool {
    o.u64(offset as u64)
}

/// `struct fuse_statfs_out` (80 bytes).
pub fn put_statfs(o: &mut Out, s: &crate::overlay::FsStats) -> bool {
    o.u64(s.blocks)
        && o.u64(s.bfree)
        && o.u64(s.bavail)
        && o.u64(s.files)
        && o.u64(s.ffree)
        && o.u32(s.bsize)
        && o.u32(s.namelen)
        && o.u32(s.frsize)
        && o.put(&[0u8; 28])
}

fn dirent_len(name: &OsStr) -> usize {
    (24 + name.len()).next_multiple_of(8)
}

/// `struct fuse_dirent`, padded to 8 bytes; false (nothing written) when full.
pub fn put_dirent(o: &mut Out, ino: u64, next_offset: u64, kind: FileKind, name: &OsStr) -> bool {
    let len = dirent_len(name);
    if o.remaining() < len {
        return false;
    }
    let start = o.len;
    let _ = o.u64(ino)
        && o.u64(next_offset)
        && o.u32(name.len() as u32)
        && o.u32(dirent_type(kind))
        && o.put(name.as_bytes());
    o.buf[o.len..start + len].fill(0);
    o.len = start + len;
    true
}

/// `struct fuse_direntplus` (entry + dirent); false (nothing written) when full.
pub fn put_direntplus(
    o: &mut Out,
    attr: &Attr,
    next_offset: u64,
    name: &OsStr,
    ttl: Duration,
) -> bool {
    if o.remaining() < 128 + dirent_len(name) {
        return false;
    }
    put_entry(o, Some(attr), 0, ttl) && put_dirent(o, attr.ino.get(), next_offset, attr.kind, name)
}

/// `struct fuse_out_header`.
pub fn out_header(len: u32, error: i32, unique: u64) -> [u8; OUT_HEADER_LEN] {
    let mut h = [0u8; OUT_HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&error.to_le_bytes());
    h[8..16].copy_from_slice(&unique.to_le_bytes());
    h
}

/// What the daemon answers to INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOut {
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u64,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub max_pages: u16,
    pub max_stack_depth: u32,
}

/// `struct fuse_init_out` (64 bytes).
pub fn put_init(o: &mut Out, i: &InitOut) -> bool {
    o.u32(KERNEL_VERSION)
        && o.u32(i.minor)
        && o.u32(i.max_readahead)
        && o.u32(i.flags as u32)
        && o.put(&i.max_background.to_le_bytes())
        && o.put(&i.congestion_threshold.to_le_bytes())
        && o.u32(i.max_write)
        && o.u32(1) // time_gran: nanoseconds
        && o.put(&i.max_pages.to_le_bytes())
        && o.put(&0u16.to_le_bytes()) // map_alignment
        && o.u32((i.flags >> 32) as u32)
        && o.u32(i.max_stack_depth)
        && o.put(&[0u8; 24])
}

/// A `FUSE_NOTIFY_INVAL_INODE` message (header and body): drop cached attributes
/// (and data in `[offset, offset+len)`; `len` 0 means none, -1 to the end).
pub fn notify_inval_inode(ino: u64, offset: i64, len: i64) -> [u8; OUT_HEADER_LEN + 24] {
    let mut m = [0u8; OUT_HEADER_LEN + 24];
    m[..OUT_HEADER_LEN].copy_from_slice(&out_header(40, NOTIFY_INVAL_INODE, 0));
    m[16..24].copy_from_slice(&ino.to_le_bytes());
    m[24..32].copy_from_slice(&offset.to_le_bytes());
    m[32..40].copy_from_slice(&len.to_le_bytes());
    m
}

#[cfg(test)]
mod tests {
    //! Byte layouts against `include/uapi/linux/fuse.h` (7.42): the offsets below are
    //! those of the C structs, written out by hand from the header.
    use super::*;

    fn header(opcode: u32, len: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&opcode.to_le_bytes());
        h.extend_from_slice(&77u64.to_le_bytes()); // unique
        h.extend_from_slice(&5u64.to_le_bytes()); // nodeid
        h.extend_from_slice(&1000u32.to_le_bytes());
        h.extend_from_slice(&100u32.to_le_bytes());
        h.extend_from_slice(&4242u32.to_le_bytes());
        h.extend_from_slice(&[0u8; 4]); // total_extlen, padding
        h
    }

    fn msg(opcode: u32, arg: &[u8], payload: &[u8]) -> Vec<u8> {
        let len = (IN_HEADER_LEN + arg.len() + payload.len()) as u32;
        let mut m = header(opcode, len);
        m.extend_from_slice(arg);
        m.extend_from_slice(payload);
        m
    }

    fn le(fields: &[(u64, usize)]) -> Vec<u8> {
        let mut v = Vec::new();
        for &(x, n) in fields {
            v.extend_from_slice(&x.to_le_bytes()[..n]);
        }
        v
    }

    #[test]
    fn in_header_layout() {
        let m = header(opcode::LOOKUP, 45);
        assert_eq!(m.len(), IN_HEADER_LEN);
        let h = InHeader::parse(&m).unwrap();
        assert_eq!(
            h,
            InHeader {
                len: 45,
                opcode: 1,
                unique: 77,
                nodeid: 5,
                uid: 1000,
                gid: 100,
                pid: 4242,
                total_extlen: 0
            }
        );
        assert_eq!(InHeader::parse(&m[..39]), Err(Malformed));
    }

    #[test]
    fn lookup_has_no_fixed_argument() {
        let m = msg(opcode::LOOKUP, &[], b"name\0");
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::Lookup {
                name: OsStr::new("name")
            }
        );
        // Without the NUL the name is malformed, not read past the end.
        let m = msg(opcode::LOOKUP, &[], b"name");
        assert_eq!(parse_message(&m).err(), Some(Malformed));
    }

    #[test]
    fn setattr_in_layout() {
        // valid, padding, fh, size, lock_owner, atime, mtime, ctime, atimensec,
        // mtimensec, ctimensec, mode, unused4, uid, gid, unused5
        let arg = le(&[
            (
                fattr::MODE as u64 | fattr::SIZE as u64 | fattr::KILL_SUIDGID as u64,
                4,
            ),
            (0, 4),
            (9, 8),
            (4096, 8),
            (0, 8),
            (11, 8),
            (12, 8),
            (13, 8),
            (21, 4),
            (22, 4),
            (23, 4),
            (0o104755, 4),
            (0, 4),
            (1001, 4),
            (1002, 4),
            (0, 4),
        ]);
        assert_eq!(arg.len(), op_in_size(opcode::SETATTR));
        let m = msg(opcode::SETATTR, &arg, &[]);
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::Setattr(SetattrIn {
                valid: fattr::MODE | fattr::SIZE | fattr::KILL_SUIDGID,
                fh: 9,
                size: 4096,
                atime: 11,
                mtime: 12,
                atimensec: 21,
                mtimensec: 22,
                mode: 0o104755,
                uid: 1001,
                gid: 1002,
            })
        );
    }

    #[test]
    fn write_in_layout_and_data() {
        // fh, offset, size, write_flags, lock_owner, flags, padding
        let arg = le(&[
            (3, 8),
            (8192, 8),
            (5, 4),
            (WRITE_KILL_SUIDGID as u64, 4),
            (0, 8),
            (2, 4),
            (0, 4),
        ]);
        assert_eq!(arg.len(), op_in_size(opcode::WRITE));
        let m = msg(opcode::WRITE, &arg, b"hello");
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::Write {
                fh: 3,
                offset: 8192,
                write_flags: WRITE_KILL_SUIDGID,
                data: b"hello"
            }
        );
        // A size beyond the data is malformed.
        let arg = le(&[(3, 8), (0, 8), (6, 4), (0, 4), (0, 8), (0, 4), (0, 4)]);
        assert!(parse_message(&msg(opcode::WRITE, &arg, b"hello")).is_err());
    }

    #[test]
    fn create_open_rename_layouts() {
        let arg = le(&[
            (0o101, 4),
            (0o100644, 4),
            (0o022, 4),
            (OPEN_KILL_SUIDGID as u64, 4),
        ]);
        assert_eq!(arg.len(), op_in_size(opcode::CREATE));
        let m = msg(opcode::CREATE, &arg, b"f\0");
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::Create {
                flags: 0o101,
                mode: 0o100644,
                umask: 0o022,
                open_flags: OPEN_KILL_SUIDGID,
                name: OsStr::new("f")
            }
        );
        let arg = le(&[(0o1002, 4), (OPEN_KILL_SUIDGID as u64, 4)]);
        let m = msg(opcode::OPEN, &arg, &[]);
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::Open {
                flags: 0o1002,
                open_flags: OPEN_KILL_SUIDGID
            }
        );
        let arg = le(&[(7, 8), (1, 4), (0, 4)]);
        let m = msg(opcode::RENAME2, &arg, b"a\0b\0");
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::Rename {
                newdir: 7,
                flags: 1,
                name: OsStr::new("a"),
                newname: OsStr::new("b")
            }
        );
        let m = msg(opcode::SYMLINK, &[], b"l\0/t\0");
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::Symlink {
                name: OsStr::new("l"),
                target: OsStr::new("/t")
            }
        );
    }

    #[test]
    fn init_in_layout() {
        // major, minor, max_readahead, flags, flags2, unused[11]
        let mut arg = le(&[(7, 4), (45, 4), (131072, 4), (1 << 30 | 1, 4), (1 << 9, 4)]);
        arg.extend_from_slice(&[0u8; 44]);
        assert_eq!(arg.len(), op_in_size(opcode::INIT));
        let m = msg(opcode::INIT, &arg, &[]);
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::Init {
                major: 7,
                minor: 45,
                max_readahead: 131072,
                flags: init::INIT_EXT | init::ASYNC_READ | init::OVER_IO_URING
            }
        );
    }

    #[test]
    fn batch_forget_layout() {
        let arg = le(&[(2, 4), (0, 4)]);
        let payload = le(&[(10, 8), (1, 8), (11, 8), (3, 8)]);
        let m = msg(opcode::BATCH_FORGET, &arg, &payload);
        let (_, r) = parse_message(&m).unwrap();
        assert_eq!(
            r,
            Request::BatchForget {
                forgets: vec![
                    ForgetOne {
                        nodeid: 10,
                        nlookup: 1
                    },
                    ForgetOne {
                        nodeid: 11,
                        nlookup: 3
                    }
                ]
            }
        );
        // A count beyond the message is malformed.
        let arg = le(&[(3, 4), (0, 4)]);
        assert!(parse_message(&msg(opcode::BATCH_FORGET, &arg, &payload)).is_err());
    }

    fn attr() -> Attr {
        Attr {
            ino: crate::overlay::NodeId::new(42),
            kind: FileKind::Regular,
            perm: 0o4755,
            nlink: 2,
            uid: 1000,
            gid: 100,
            rdev: 0,
            size: 12345,
            blocks: 24,
            blksize: 4096,
            atime: Timespec { sec: 1, nsec: 2 },
            mtime: Timespec { sec: 3, nsec: 4 },
            ctime: Timespec { sec: 5, nsec: 6 },
            volatile: false,
        }
    }

    #[test]
    fn entry_out_layout() {
        let mut buf = [0u8; 256];
        let mut o = Out::new(&mut buf);
        assert!(put_entry(&mut o, Some(&attr()), 9, Duration::new(86400, 5)));
        assert_eq!(o.len(), 128);
        let expect = le(&[
            (42, 8),
            (9, 8),
            (86400, 8),
            (86400, 8),
            (5, 4),
            (5, 4),
            // fuse_attr: ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec,
            // ctimensec, mode, nlink, uid, gid, rdev, blksize, flags
            (42, 8),
            (12345, 8),
            (24, 8),
            (1, 8),
            (3, 8),
            (5, 8),
            (2, 4),
            (4, 4),
            (6, 4),
            (0o104755, 4),
            (2, 4),
            (1000, 4),
            (100, 4),
            (0, 4),
            (4096, 4),
            (0, 4),
        ]);
        assert_eq!(&buf[..128], &expect[..]);
    }

    #[test]
    fn attr_open_write_statfs_init_sizes() {
        let mut buf = [0u8; 256];
        let mut o = Out::new(&mut buf);
        assert!(put_attr_out(&mut o, &attr(), Duration::from_secs(1)));
        assert_eq!(o.len(), 104);
        let mut o = Out::new(&mut buf);
        assert!(put_open(&mut o, 7, fopen::PASSTHROUGH, 3));
        assert_eq!(o.len(), 16);
        assert_eq!(&buf[..16], &le(&[(7, 8), (128, 4), (3, 4)])[..]);
        let mut o = Out::new(&mut buf);
        assert!(put_write(&mut o, 5));
        assert_eq!(o.len(), 8);
        let mut o = Out::new(&mut buf);
        let s = crate::overlay::FsStats {
            blocks: 1,
            bfree: 2,
            bavail: 3,
            files: 4,
            ffree: 5,
            bsize: 6,
            namelen: 7,
            frsize: 8,
        };
        assert!(put_statfs(&mut o, &s));
        assert_eq!(o.len(), 80);
        let mut o = Out::new(&mut buf);
        let i = InitOut {
            minor: 42,
            max_readahead: 1 << 20,
            flags: init::INIT_EXT | init::OVER_IO_URING | init::ASYNC_READ,
            max_background: 64,
            congestion_threshold: 48,
            max_write: 1 << 20,
            max_pages: 256,
            max_stack_depth: 1,
        };
        assert!(put_init(&mut o, &i));
        assert_eq!(o.len(), 64);
        // flags at 12, max_background at 16, max_write at 20, max_pages at 28,
        // flags2 at 32, max_stack_depth at 36.
        assert_eq!(&buf[12..16], &((1u32 << 30) | 1).to_le_bytes());
        assert_eq!(&buf[16..18], &64u16.to_le_bytes());
        assert_eq!(&buf[20..24], &(1u32 << 20).to_le_bytes());
        assert_eq!(&buf[28..30], &256u16.to_le_bytes());
        assert_eq!(&buf[32..36], &(1u32 << 9).to_le_bytes());
        assert_eq!(&buf[36..40], &1u32.to_le_bytes());
    }

    #[test]
    fn dirents_are_padded_and_never_overflow() {
        let mut buf = [0xffu8; 64];
        let mut o = Out::new(&mut buf);
        assert!(put_dirent(
            &mut o,
            5,
            1,
            FileKind::Directory,
            OsStr::new("abc")
        ));
        assert_eq!(o.len(), 32);
        assert!(!put_dirent(
            &mut o,
            6,
            2,
            FileKind::Regular,
            OsStr::new("0123456789")
        ));
        assert_eq!(o.len(), 32);
        assert_eq!(
            &buf[..32],
            &[
                le(&[(5, 8), (1, 8), (3, 4), (4, 4)]),
                b"abc\0\0\0\0\0".to_vec()
            ]
            .concat()[..]
        );
        let mut buf = [0u8; 150];
        let mut o = Out::new(&mut buf);
        assert!(!put_direntplus(
            &mut o,
            &attr(),
            1,
            OsStr::new("x"),
            Duration::ZERO
        ));
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn ring_header_and_command_layout() {
        assert_eq!(ring::REQ_HEADER_SZ, 288);
        let c = ring::cmd_req(0x1122, 1);
        assert_eq!(&c[..8], &[0u8; 8]);
        assert_eq!(&c[8..16], &0x1122u64.to_le_bytes());
        assert_eq!(&c[16..18], &1u16.to_le_bytes());
        let mut h = [0u8; ring::REQ_HEADER_SZ];
        ring::set_payload_sz(&mut h, 99, 4096);
        assert_eq!(ring::ent_in(&h), Some((99, 4096)));
        assert_eq!(&h[256 + 8..256 + 16], &99u64.to_le_bytes());
        assert_eq!(&h[256 + 16..256 + 20], &4096u32.to_le_bytes());
    }

    #[test]
    fn notify_inval_inode_layout() {
        let m = notify_inval_inode(8, 0, -1);
        assert_eq!(&m[..16], &out_header(40, 2, 0));
        assert_eq!(&m[16..40], &le(&[(8, 8), (0, 8), (u64::MAX, 8)])[..]);
    }
}
