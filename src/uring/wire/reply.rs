//! Replies and notifications, written into a buffer of fixed capacity.

use super::{
    KERNEL_VERSION, NOTIFY_INC_EPOCH, NOTIFY_INVAL_ENTRY, NOTIFY_INVAL_INODE, OUT_HEADER_LEN,
};
use crate::overlay::{Attr, FileKind, Timespec};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

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

/// A `FUSE_NOTIFY_INC_EPOCH` message (a header, no body): every entry the kernel has
/// cached, positive or negative, must be looked up again before it is used.
pub fn notify_inc_epoch() -> [u8; OUT_HEADER_LEN] {
    out_header(OUT_HEADER_LEN as u32, NOTIFY_INC_EPOCH, 0)
}

/// A `FUSE_NOTIFY_INVAL_ENTRY` message: drop the kernel's (possibly negative) entry
/// `name` of directory `parent` (`fuse_notify_inval_entry_out`, then the name and a NUL).
pub fn notify_inval_entry(parent: u64, name: &[u8]) -> Vec<u8> {
    let len = OUT_HEADER_LEN + 16 + name.len() + 1;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&out_header(len as u32, NOTIFY_INVAL_ENTRY, 0));
    m.extend_from_slice(&parent.to_le_bytes());
    m.extend_from_slice(&(name.len() as u32).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(name);
    m.push(0);
    m
}
