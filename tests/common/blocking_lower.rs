//! A tiny read-only FUSE filesystem to serve as a lower layer whose reads of one file
//! wait until the test lets them go: it shows exactly what else can happen while the
//! union is copying that file's data, without any timing.
//!
//! The tree: a root directory holding `big` (the file whose reads are held) and
//! `other` (a small file read at once). Replies to held reads are kept, not the
//! serving thread: every other request is answered while a read waits.

use fuser::{
    Config, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
    Session,
};
use parking_lot::{Condvar, Mutex};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const ROOT: u64 = 1;
const BIG: u64 = 2;
const OTHER: u64 = 3;

/// Size of `big`: larger than one read, so the copy cannot finish in one request.
pub const BIG_SIZE: u64 = 4 << 20;
/// Content of `other`.
pub const OTHER_DATA: &[u8] = b"other\n";

/// The byte at `offset` of `big`.
pub fn big_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

#[derive(Default)]
struct Held {
    /// Reads of `big` waiting for [`Gate::release`].
    replies: Vec<(ReplyData, u64, u32)>,
    /// Reads of `big` seen so far.
    seen: usize,
    released: bool,
}

/// What the test holds to watch and release the reads of `big`.
#[derive(Clone, Default)]
pub struct Gate {
    held: Arc<(Mutex<Held>, Condvar)>,
}

impl Gate {
    /// Wait until a read of `big` is being held (at most `deadline`).
    pub fn wait_for_read(&self, deadline: Duration) -> bool {
        let (lock, cv) = &*self.held;
        let mut h = lock.lock();
        let end = std::time::Instant::now() + deadline;
        while h.replies.is_empty() && !h.released {
            if cv.wait_until(&mut h, end).timed_out() {
                return !h.replies.is_empty();
            }
        }
        !h.replies.is_empty()
    }

    /// Reads of `big` being held right now.
    pub fn held(&self) -> usize {
        self.held.0.lock().replies.len()
    }

    /// Answer every held read, and every later one at once.
    pub fn release(&self) {
        let replies = {
            let mut h = self.held.0.lock();
            h.released = true;
            std::mem::take(&mut h.replies)
        };
        for (reply, offset, size) in replies {
            reply.data(&big_data(offset, size));
        }
    }
}

fn big_data(offset: u64, size: u32) -> Vec<u8> {
    let end = (offset + u64::from(size)).min(BIG_SIZE);
    (offset.min(end)..end).map(big_byte).collect()
}

struct BlockingFs {
    gate: Gate,
}

fn attr(ino: u64) -> FileAttr {
    let (kind, perm, size, nlink) = match ino {
        ROOT => (FileType::Directory, 0o755, 0, 2),
        BIG => (FileType::RegularFile, 0o644, BIG_SIZE, 1),
        _ => (FileType::RegularFile, 0o644, OTHER_DATA.len() as u64, 1),
    };
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

const TTL: Duration = Duration::from_secs(3600);

impl fuser::Filesystem for BlockingFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match (parent.0, name.to_str()) {
            (ROOT, Some("big")) => BIG,
            (ROOT, Some("other")) => OTHER,
            _ => return reply.error(fuser::Errno::ENOENT),
        };
        reply.entry(&TTL, &attr(ino), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino.0 {
            ROOT | BIG | OTHER => reply.attr(&TTL, &attr(ino.0)),
            _ => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 != BIG {
            let start = (offset as usize).min(OTHER_DATA.len());
            let end = (start + size as usize).min(OTHER_DATA.len());
            return reply.data(&OTHER_DATA[start..end]);
        }
        let (lock, cv) = &*self.gate.held;
        let mut h = lock.lock();
        h.seen += 1;
        if h.released {
            drop(h);
            return reply.data(&big_data(offset, size));
        }
        h.replies.push((reply, offset, size));
        cv.notify_all();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(fuser::Errno::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (BIG, FileType::RegularFile, "big"),
            (OTHER, FileType::RegularFile, "other"),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The filesystem mounted at a directory; unmounted on drop (held reads are answered
/// first, so nothing waits on it).
pub struct Mounted {
    pub gate: Gate,
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    pub fn mount(at: &Path) -> Mounted {
        let gate = Gate::default();
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("lf-blocking-lower".into()),
            MountOption::RO,
        ];
        let session = Session::new(BlockingFs { gate: gate.clone() }, at, &config)
            .expect("mount the blocking lower layer")
            .spawn()
            .expect("serve the blocking lower layer");
        Mounted {
            gate,
            session: Some(session),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.gate.release();
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}
