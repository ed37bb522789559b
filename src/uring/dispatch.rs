//! One request to the shared policy and its answer back into bytes: the io_uring
//! transport's counterpart of the fuser callbacks (`crate::fuse::devfuse`).

use super::UPolicy;
use super::wire::{self, InHeader, Out, Request};
use crate::fuse::policy::{self, DirItem, Entry, Opened, Xattr};
use crate::overlay::{Attr, Caller, Errno, HandleId, NodeId, SetAttr, TimeSet, Timespec};
use crate::sys::uring::BackingFile;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// An answer, owned (the request's buffer is reused for the reply), or the work to
/// do straight into the reply buffer (reads and listings).
pub(super) enum Answer {
    NoReply,
    Err(Errno),
    Empty,
    Entry(Entry),
    Attr(Attr, Duration),
    Open(Opened<BackingFile>),
    Create(Entry, Opened<BackingFile>),
    Written(u32),
    Data(Vec<u8>),
    Statfs(crate::overlay::FsStats),
    XattrSize(u32),
    Lseek(i64),
    Read {
        fh: HandleId,
        offset: u64,
        size: u32,
    },
    Readdir {
        fh: HandleId,
        offset: u64,
        size: u32,
        plus: bool,
    },
}

fn from<T>(r: Result<T, Errno>, f: impl FnOnce(T) -> Answer) -> Answer {
    match r {
        Ok(v) => f(v),
        Err(e) => Answer::Err(e),
    }
}

fn time_set(valid: u32, now_bit: u32, set_bit: u32, sec: u64, nsec: u32) -> Option<TimeSet> {
    if valid & now_bit != 0 {
        Some(TimeSet::Now)
    } else if valid & set_bit != 0 {
        Some(TimeSet::At(Timespec {
            sec: sec as i64,
            nsec: nsec as i64,
        }))
    } else {
        None
    }
}

pub(super) fn handle(policy: &UPolicy, dev: &Arc<OwnedFd>, h: &InHeader, req: Request) -> Answer {
    let ino = NodeId::new(h.nodeid);
    let hid = HandleId::new;
    let caller = |umask: u32| Caller {
        uid: h.uid,
        gid: h.gid,
        umask,
    };
    let backing = |fd: &OwnedFd| BackingFile::open(dev, fd.as_fd()).ok();
    match req {
        Request::Init { .. } => Answer::Err(Errno::EIO),
        Request::Destroy => Answer::Empty,
        Request::Forget { nlookup } => {
            policy.forget(ino, nlookup);
            Answer::NoReply
        }
        Request::BatchForget { forgets } => {
            for f in forgets {
                policy.forget(NodeId::new(f.nodeid), f.nlookup);
            }
            Answer::NoReply
        }
        // Requests finish quickly or not at all; an interrupt changes nothing.
        Request::Interrupt { .. } => Answer::NoReply,
        Request::Lookup { name } => from(policy.lookup(ino, name), Answer::Entry),
        Request::Getattr { fh } => from(policy.getattr(ino, fh.map(hid)), |(a, t)| {
            Answer::Attr(a, t)
        }),
        Request::Setattr(s) => {
            let v = s.valid;
            let set = SetAttr {
                mode: (v & wire::fattr::MODE != 0).then_some(s.mode),
                uid: (v & wire::fattr::UID != 0).then_some(s.uid),
                gid: (v & wire::fattr::GID != 0).then_some(s.gid),
                size: (v & wire::fattr::SIZE != 0).then_some(s.size),
                atime: time_set(
                    v,
                    wire::fattr::ATIME_NOW,
                    wire::fattr::ATIME,
                    s.atime,
                    s.atimensec,
                ),
                mtime: time_set(
                    v,
                    wire::fattr::MTIME_NOW,
                    wire::fattr::MTIME,
                    s.mtime,
                    s.mtimensec,
                ),
                through_open_file: v & wire::fattr::FH != 0,
            };
            let kill = v & wire::fattr::KILL_SUIDGID != 0;
            from(policy.setattr(ino, set, kill), |(a, t)| Answer::Attr(a, t))
        }
        Request::Readlink => from(policy.readlink(ino), |t| {
            Answer::Data(t.into_encoded_bytes())
        }),
        Request::Symlink { name, target } => {
            from(policy.symlink(caller(0), ino, name, target), Answer::Entry)
        }
        Request::Mknod {
            mode,
            rdev,
            umask,
            name,
        } => from(
            policy.mknod(caller(umask), ino, name, mode, rdev),
            Answer::Entry,
        ),
        Request::Mkdir { mode, umask, name } => {
            from(policy.mkdir(caller(umask), ino, name, mode), Answer::Entry)
        }
        Request::Unlink { name } => from(policy.remove(ino, name, false), |_| Answer::Empty),
        Request::Rmdir { name } => from(policy.remove(ino, name, true), |_| Answer::Empty),
        Request::Rename {
            newdir,
            flags,
            name,
            newname,
        } => from(
            policy.rename(ino, name, NodeId::new(newdir), newname, flags),
            |_| Answer::Empty,
        ),
        Request::Link { oldnodeid, newname } => from(
            policy.link(NodeId::new(oldnodeid), ino, newname),
            Answer::Entry,
        ),
        Request::Open { flags, open_flags } => {
            let kill = open_flags & wire::OPEN_KILL_SUIDGID != 0;
            from(policy.open(ino, flags as i32, kill, backing), Answer::Open)
        }
        Request::Read { fh, offset, size } => Answer::Read {
            fh: hid(fh),
            offset,
            size,
        },
        Request::Write {
            fh,
            offset,
            write_flags,
            data,
        } => {
            let from_cache = write_flags & wire::WRITE_CACHE != 0;
            let kill = (write_flags & wire::WRITE_KILL_SUIDGID != 0).then_some(ino);
            from(
                policy.write(hid(fh), offset, data, from_cache, kill),
                Answer::Written,
            )
        }
        Request::Statfs => from(policy.statfs(ino), Answer::Statfs),
        Request::Release { fh } => {
            policy.release(hid(fh));
            Answer::Empty
        }
        Request::Fsync { fh, datasync } => from(policy.fsync(hid(fh), datasync), |_| Answer::Empty),
        Request::Setxattr { flags, name, value } => {
            from(policy.setxattr(ino, name, value, flags as i32), |_| {
                Answer::Empty
            })
        }
        Request::Getxattr { size, name } => from(policy.getxattr(ino, name, size), xattr),
        Request::Listxattr { size } => from(policy.listxattr(ino, size), xattr),
        Request::Removexattr { name } => from(policy.removexattr(ino, name), |_| Answer::Empty),
        Request::Flush { .. } => from(policy.flush(), |_| Answer::Empty),
        Request::Opendir { .. } => match policy.opendir(ino) {
            Ok(Some((fh, flags))) => Answer::Open(Opened {
                fh,
                flags,
                backing: None,
            }),
            Ok(None) => Answer::Err(Errno::ENOSYS),
            Err(e) => Answer::Err(e),
        },
        Request::Readdir {
            fh,
            offset,
            size,
            plus,
        } => Answer::Readdir {
            fh: hid(fh),
            offset,
            size,
            plus,
        },
        Request::Releasedir { fh } => {
            policy.releasedir(hid(fh));
            Answer::Empty
        }
        Request::Fsyncdir { fh, datasync } => {
            from(policy.fsyncdir(ino, hid(fh), datasync), |_| Answer::Empty)
        }
        Request::Access { .. } => from(policy.access(), |_| Answer::Empty),
        Request::Create {
            flags,
            mode,
            umask,
            name,
            ..
        } => from(
            policy.create(caller(umask), ino, name, mode, flags as i32, backing),
            |(e, o)| Answer::Create(e, o),
        ),
        Request::Ioctl => from(policy.ioctl(), |_| Answer::Empty),
        Request::Syncfs => from(policy.syncfs(), |_| Answer::Empty),
        Request::Fallocate {
            fh,
            offset,
            length,
            mode,
        } => from(
            policy.fallocate(hid(fh), offset, length, mode as i32),
            |_| Answer::Empty,
        ),
        Request::Lseek { fh, offset, whence } => from(
            policy.lseek(hid(fh), offset as i64, whence as i32),
            Answer::Lseek,
        ),
        Request::CopyFileRange {
            fh_in,
            off_in,
            fh_out,
            off_out,
            len,
        } => from(
            policy.copy_file_range(hid(fh_in), off_in, hid(fh_out), off_out, len),
            Answer::Written,
        ),
        Request::Other(op) => {
            tracing::debug!(opcode = op, "not served: ENOSYS");
            Answer::Err(Errno::ENOSYS)
        }
    }
}

fn xattr(x: Xattr) -> Answer {
    match x {
        Xattr::Size(n) => Answer::XattrSize(n),
        Xattr::Data(v) => Answer::Data(v),
    }
}

fn put_open(out: &mut Out, o: &Opened<BackingFile>) -> bool {
    match &o.backing {
        Some(b) => wire::put_open(out, o.fh.get(), o.flags, b.id()),
        None => wire::put_open(out, o.fh.get(), o.flags & !policy::fopen::PASSTHROUGH, 0),
    }
}

/// Write the reply of `answer` into `out`; returns the error (0, or -errno).
pub(super) fn encode(policy: &UPolicy, h: &InHeader, answer: Answer, out: &mut Out) -> i32 {
    let ok = match answer {
        Answer::NoReply | Answer::Empty => true,
        Answer::Err(e) => return -e.0,
        Answer::Entry(e) => wire::put_entry(out, e.attr.as_ref(), e.generation, e.ttl),
        Answer::Attr(a, t) => wire::put_attr_out(out, &a, t),
        Answer::Open(o) => put_open(out, &o),
        Answer::Create(e, o) => {
            wire::put_entry(out, e.attr.as_ref(), e.generation, e.ttl) && put_open(out, &o)
        }
        Answer::Written(n) => wire::put_write(out, n),
        Answer::Data(v) => out.put(&v),
        Answer::Statfs(s) => wire::put_statfs(out, &s),
        Answer::XattrSize(n) => wire::put_xattr_size(out, n),
        Answer::Lseek(o) => wire::put_lseek(out, o),
        Answer::Read { fh, offset, size } => {
            let spare = out.spare();
            let want = (size as usize).min(spare.len());
            match policy.read_into(fh, offset, &mut spare[..want]) {
                Ok(n) => {
                    out.commit(n);
                    true
                }
                Err(e) => return -e.0,
            }
        }
        Answer::Readdir {
            fh,
            offset,
            size,
            plus,
        } => {
            let cap = (size as usize).min(out.remaining());
            let spare = out.spare();
            let mut o = Out::new(&mut spare[..cap]);
            let r = policy.readdir(
                NodeId::new(h.nodeid),
                fh,
                offset,
                plus,
                |e: DirItem| match (&e.attr, plus) {
                    (Some((a, ttl)), true) => wire::put_direntplus(&mut o, a, e.next, e.name, *ttl),
                    _ => wire::put_dirent(&mut o, e.ino, e.next, e.kind, e.name),
                },
            );
            if let Err(e) = r {
                return -e.0;
            }
            let n = o.len();
            out.commit(n);
            true
        }
    };
    if ok { 0 } else { -Errno::ERANGE.0 }
}
