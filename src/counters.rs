//! Live counters of one mount, for `layerfuse status`: requests by kind and the
//! errors answered (counted by the request policy both transports share), copy-ups,
//! bytes copied and whiteouts written (counted by the union). Counting is a relaxed
//! add on a shard of the counting thread's own, so serving threads never contend on
//! one cache line; a snapshot sums the shards.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// The kinds of request counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Symlink,
    Link,
    Remove,
    Rename,
    Open,
    Create,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Releasedir,
    Statfs,
    Xattr,
    Other,
}

impl Op {
    const ALL: [Op; 24] = [
        Op::Lookup,
        Op::Forget,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Mknod,
        Op::Mkdir,
        Op::Symlink,
        Op::Link,
        Op::Remove,
        Op::Rename,
        Op::Open,
        Op::Create,
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Release,
        Op::Fsync,
        Op::Opendir,
        Op::Readdir,
        Op::Releasedir,
        Op::Statfs,
        Op::Xattr,
        Op::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Forget => "forget",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Symlink => "symlink",
            Op::Link => "link",
            Op::Remove => "remove",
            Op::Rename => "rename",
            Op::Open => "open",
            Op::Create => "create",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Releasedir => "releasedir",
            Op::Statfs => "statfs",
            Op::Xattr => "xattr",
            Op::Other => "other",
        }
    }
}

const OPS: usize = Op::ALL.len();
/// Errnos counted one by one; larger ones share the last slot.
const ERRNOS: usize = 134;
const SHARDS: usize = 8;

/// One thread's share, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    requests: [AtomicU64; OPS],
    errors: [AtomicU64; ERRNOS],
    copy_ups: AtomicU64,
    bytes_copied: AtomicU64,
    whiteouts: AtomicU64,
    filled: AtomicU64,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            copy_ups: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            whiteouts: AtomicU64::new(0),
            filled: AtomicU64::new(0),
        }
    }
}

/// The counters of one mount.
pub struct Counters {
    shards: Box<[Shard; SHARDS]>,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            shards: Box::new(std::array::from_fn(|_| Shard::default())),
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

/// This thread's shard number, given out in turn.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    MINE.with(|s| *s)
}

impl Counters {
    fn mine(&self) -> &Shard {
        &self.shards[shard()]
    }

    pub fn request(&self, op: Op) {
        self.mine().requests[op as usize].fetch_add(1, Relaxed);
    }

    /// A request answered with `errno`.
    pub fn error(&self, errno: i32) {
        let slot = (errno.max(0) as usize).min(ERRNOS - 1);
        self.mine().errors[slot].fetch_add(1, Relaxed);
    }

    /// `n` entries copied up to the upper layer.
    pub fn copied_up(&self, n: u64) {
        self.mine().copy_ups.fetch_add(n, Relaxed);
    }

    pub fn bytes_copied(&self, n: u64) {
        self.mine().bytes_copied.fetch_add(n, Relaxed);
    }

    /// `n` whiteouts written (0 or 1 where a flag decides).
    pub fn whiteouts(&self, n: u64) {
        self.mine().whiteouts.fetch_add(n, Relaxed);
    }

    /// `n` bytes copied into a new volume from the layers (its first population).
    pub fn filled(&self, n: u64) {
        self.mine().filled.fetch_add(n, Relaxed);
    }

    /// Bytes copied into new volumes so far (cheap: for progress while filling).
    pub fn bytes_filled(&self) -> u64 {
        self.shards.iter().map(|s| s.filled.load(Relaxed)).sum()
    }

    pub fn snapshot(&self) -> Snapshot {
        let sum = |f: &dyn Fn(&Shard) -> &AtomicU64| -> u64 {
            self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
        };
        let mut requests = BTreeMap::new();
        for op in Op::ALL {
            let n = sum(&|s| &s.requests[op as usize]);
            if n > 0 {
                requests.insert(op.name().to_string(), n);
            }
        }
        let mut errors_by_errno = BTreeMap::new();
        for e in 0..ERRNOS {
            let n = sum(&|s| &s.errors[e]);
            if n > 0 {
                errors_by_errno.insert(errno_name(e as i32), n);
            }
        }
        Snapshot {
            requests_total: requests.values().sum(),
            requests,
            errors: errors_by_errno.values().sum(),
            errors_by_errno,
            copy_ups: sum(&|s| &s.copy_ups),
            bytes_copied: sum(&|s| &s.bytes_copied),
            whiteouts: sum(&|s| &s.whiteouts),
            volume_bytes_filled: sum(&|s| &s.filled),
        }
    }
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub requests_total: u64,
    /// By kind (only kinds seen).
    pub requests: BTreeMap<String, u64>,
    /// Requests answered with an error.
    pub errors: u64,
    pub errors_by_errno: BTreeMap<String, u64>,
    pub copy_ups: u64,
    pub bytes_copied: u64,
    pub whiteouts: u64,
    /// Bytes copied into new volumes from the layers at mount.
    pub volume_bytes_filled: u64,
}

/// The symbolic name of the errnos a union answers with; others by number.
fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENXIO => "ENXIO",
        libc::EFBIG => "EFBIG",
        #[cfg(target_os = "linux")]
        libc::ENODATA => "ENODATA",
        #[cfg(not(target_os = "linux"))]
        libc::ENOATTR => "ENOATTR",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = std::sync::Arc::new(Counters::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.request(Op::Lookup);
                    }
                    c.error(libc::ENOTEMPTY);
                    c.copied_up(2);
                    c.bytes_copied(10);
                    c.whiteouts(1);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = c.snapshot();
        assert_eq!(s.requests.get("lookup"), Some(&12_000));
        assert_eq!(s.requests_total, 12_000);
        assert_eq!(s.errors_by_errno.get("ENOTEMPTY"), Some(&12));
        assert_eq!((s.copy_ups, s.bytes_copied, s.whiteouts), (24, 120, 12));
    }
}
