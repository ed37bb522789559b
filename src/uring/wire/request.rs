//! Requests: each opcode's fixed argument and variable part, parsed without copying.

use super::{
    FSYNC_FDATASYNC, GETATTR_FH, IN_HEADER_LEN, InHeader, Malformed, Reader, op_in_size, opcode,
};
use std::ffi::OsStr;

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
