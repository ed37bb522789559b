//! The test DSL of the differential suite: build layers, mount them with kernel overlayfs and with
//! layerfuse, run the same operations on both and compare what was observed.
//!
//! - [`Layers`]: a temp dir holding `l0..lN` (l0 is the topmost lower), `u` (upper), `w` (work)
//!   and `m` (mountpoint), with helpers to put any kind of entry into any layer, including kernel
//!   and OCI whiteouts and opaque markers. [`Layers::clone_fresh`] makes an identical copy
//!   (`cp -a`: xattrs, devices, owners, times, hard links and holes preserved).
//! - [`TestMount`]: one live mount (kernel overlayfs, layerfuse, or fuse-overlayfs for harness
//!   work) that unmounts, reaps its daemon (by PID) and removes its temp dir on `Drop`, also when
//!   the test panics.
//! - [`Pair`]: the kernel mount and the implementation under test over identical layers;
//!   [`Pair::check`] runs one closure on both and compares the [`Ctx`] logs line by line;
//!   [`Pair::check_uppers`] unmounts both and compares what landed in the upper dirs.
//!
//! The implementation under test is layerfuse unless `LAYERFUSE_TEST_IMPL` says `kernel` (kernel
//! on both sides: validates the harness itself) or `fuse-overlayfs`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a mount may take to appear, or a daemon to exit after its unmount.
pub const DEADLINE: Duration = Duration::from_secs(20);

const LAYERFUSE: &str = env!("CARGO_BIN_EXE_layerfuse");

/// The layerfuse binary: the one cargo built with these tests, or `LAYERFUSE_BIN` (to run the
/// suite against another build without rebuilding the tests).
pub fn layerfuse_bin() -> PathBuf {
    std::env::var_os("LAYERFUSE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(LAYERFUSE))
}

// ---------------------------------------------------------------------------------------------
// Environment checks
// ---------------------------------------------------------------------------------------------

/// True when the tests can run. Under `CI=true` a missing prerequisite is a failure, not a skip:
/// a CI that silently skips every mount test would be green and worthless.
pub fn require_root_and_fuse() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("not running as root");
    }
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse does not exist");
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("\toverlay"))
    {
        // The module may just not be loaded yet.
        let _ = Command::new("modprobe").arg("overlay").status();
        let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !filesystems
            .lines()
            .any(|l| l.trim_end().ends_with("\toverlay"))
        {
            missing.push("kernel overlay filesystem not available");
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("layerfuse tests need: {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: refusing to skip)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Start of every mount test: returns from the test (skip) when outside CI the machine can't run it.
#[macro_export]
macro_rules! need_root {
    () => {
        if !$crate::common::require_root_and_fuse() {
            return;
        }
    };
}

pub mod blocking_lower;
pub mod sys;
#[allow(unused_imports)] // each suite uses some
pub use sys::{
    RawDirent, cpath, errno_name, getdents, lgetxattr, llistxattr, lremovexattr, lsetxattr,
    makedev, mknod, open, read_dir_raw, renameat2, set_times, statfs, umount2, utimens,
};

pub fn dtype_name(t: u8) -> &'static str {
    match t {
        libc::DT_REG => "reg",
        libc::DT_DIR => "dir",
        libc::DT_LNK => "lnk",
        libc::DT_CHR => "chr",
        libc::DT_BLK => "blk",
        libc::DT_FIFO => "fifo",
        libc::DT_SOCK => "sock",
        libc::DT_UNKNOWN => "unknown",
        _ => "?",
    }
}

/// Short printable form of file content: escaped text when small, else length and a hash.
pub fn describe_bytes(b: &[u8]) -> String {
    if b.len() <= 256 {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        // FNV-1a: enough to tell contents apart, no dependency.
        let mut h: u64 = 0xcbf29ce484222325;
        for x in b {
            h ^= *x as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("len={} fnv={h:016x}", b.len())
    }
}

fn file_type_name(ft: fs::FileType) -> &'static str {
    if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "?"
    }
}

/// What `lstat` says about an entry, minus what legitimately differs between two mounts: st_dev
/// and st_ino numbers (compared as relations elsewhere), times (compared explicitly with
/// [`Ctx::mtime`] where a rule fixes them), st_blocks, and the size of directories (an ext4
/// directory's size depends on its history, and no rule fixes it for a merged directory).
pub fn describe_stat(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Err(e) => format!("Err({})", errno_name(&e)),
        Ok(md) => {
            let ft = md.file_type();
            let mut s = format!(
                "{} mode={:o} uid={} gid={} nlink={}",
                file_type_name(ft),
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                md.nlink()
            );
            if !ft.is_dir() {
                write!(s, " size={}", md.size()).unwrap();
            }
            if ft.is_char_device() || ft.is_block_device() {
                write!(
                    s,
                    " rdev={}:{}",
                    libc::major(md.rdev()),
                    libc::minor(md.rdev())
                )
                .unwrap();
            }
            if ft.is_symlink() {
                let t = fs::read_link(p).map(|t| t.display().to_string());
                write!(s, " -> {t:?}").unwrap();
            }
            s
        }
    }
}

/// All xattrs of an entry with their values, sorted by name.
pub fn describe_xattrs(p: &Path) -> String {
    match llistxattr(p) {
        Err(e) => format!("Err({})", errno_name(&e)),
        Ok(names) => names
            .iter()
            .map(|n| match lgetxattr(p, n) {
                Ok(v) => format!("{n}={}", describe_bytes(&v)),
                Err(e) => format!("{n}=Err({})", errno_name(&e)),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

// ---------------------------------------------------------------------------------------------
// Temp dirs and mount table
// ---------------------------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique directory under `/tmp/lft` (short, because unix socket paths are limited to 108 bytes).
/// It lives on the root filesystem (ext4 here): overlay needs upper and work on one filesystem
/// with `trusted.*` xattrs, and tmpfs would be a different filesystem from the lowers.
/// Removed on drop — unless something is still mounted below it, in which case it is left alone
/// (removing through a live mount would delete files in the layers of someone else).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let base = Path::new("/tmp/lft");
        fs::create_dir_all(base).expect("create /tmp/lft");
        fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = base.join(format!("{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).expect("create temp dir");
        // Other uids (the permission tests) must be able to walk in.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let prefix = format!("{}/", self.path.display());
        let busy: Vec<_> = mounts()
            .into_iter()
            .filter(|m| m.mountpoint.starts_with(&prefix) || m.mountpoint == self.path)
            .collect();
        if busy.is_empty() {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            eprintln!(
                "not removing {}: still mounted: {busy:?}",
                self.path.display()
            );
        }
    }
}

#[derive(Debug, Clone)]
pub struct MountInfo {
    pub id: u64,
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
    /// Per-mount options (e.g. `rw,nosuid,nodev,relatime`).
    pub mount_options: String,
    /// Superblock options (e.g. `rw,user_id=0,group_id=0,default_permissions,allow_other`).
    pub options: String,
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount table of this process's namespace.
pub fn mounts() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountInfo {
                id: l.first()?.parse().ok()?,
                mountpoint: unescape_mountinfo(l.get(4)?),
                fstype: r.first()?.to_string(),
                source: unescape_mountinfo(r.get(1)?),
                mount_options: l.get(5)?.to_string(),
                options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

pub fn mounts_at(p: &Path) -> Vec<MountInfo> {
    let p = p.display().to_string();
    mounts().into_iter().filter(|m| m.mountpoint == p).collect()
}

/// Poll `cond` every few milliseconds until it holds or `deadline` passes.
pub fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait (bounded) for a child to exit; kill it by PID if it does not.
pub fn reap(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_for(deadline, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        eprintln!("process {} did not exit in time: killing it", child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// Unmount whatever is mounted at `p` (all stacked mounts), lazily if busy.
pub fn unmount_all(p: &Path) {
    for _ in 0..8 {
        if mounts_at(p).is_empty() {
            return;
        }
        if let Err(e) = umount2(p, 0) {
            if e.raw_os_error() == Some(libc::EBUSY) {
                eprintln!("{} busy: lazy unmount", p.display());
                let _ = umount2(p, libc::MNT_DETACH);
            } else if e.raw_os_error() != Some(libc::EINVAL) {
                eprintln!("umount {}: {e}", p.display());
            }
        }
    }
}

/// PIDs of processes whose command line mentions `needle`.
pub fn pids_with_arg(needle: &Path) -> Vec<i32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(e.path().join("cmdline"))
            && cmd.split(|b| *b == 0).any(|a| a == needle)
        {
            out.push(pid);
        }
    }
    out
}

/// SIGKILL the daemons `pids` serving `mnt`, wait until they are gone and the mount
/// answers ENOTCONN, as a dead FUSE mount does. On io_uring the kernel tears the dead
/// daemon's rings down after the process is gone (io_uring's exit work): a request sent in
/// that window ends with ECANCELED or ECONNABORTED, and after it with ENOTCONN.
pub fn kill_daemons(pids: &[i32], mnt: &Path) {
    for &pid in pids {
        // SAFETY: kill on a daemon the calling test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        wait_for(DEADLINE, || pids.iter().all(|&p| process_gone(p))),
        "daemon did not die"
    );
    let mut last = None;
    let dead = wait_for(DEADLINE, || {
        last = fs::metadata(mnt).err().and_then(|e| e.raw_os_error());
        !matches!(last, Some(libc::ECANCELED | libc::ECONNABORTED))
    });
    assert!(dead, "still {last:?} after {DEADLINE:?}");
    assert_eq!(last, Some(libc::ENOTCONN), "a dead mount answers nothing");
}

/// Whether `pid` has exited (gone, or a zombie).
pub fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie has exited; its parent (not us: it was reparented) reaps it.
        Ok(st) => st
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

/// Cleans up a background daemon found by PID, even if the test fails.
pub struct DaemonGuard {
    pub mnt: PathBuf,
    pub pids: Vec<i32>,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        unmount_all(&self.mnt);
        for &pid in &self.pids {
            if !wait_for(DEADLINE, || process_gone(pid)) {
                // SAFETY: kill on a PID this test started (found by its unique mountpoint).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A tmpfs mounted for one test (e.g. to put a work dir on another filesystem); unmounted on drop.
pub struct TmpfsGuard {
    pub path: PathBuf,
}

impl TmpfsGuard {
    pub fn new(path: &Path) -> TmpfsGuard {
        fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mounting tmpfs at {}", path.display());
        TmpfsGuard {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        unmount_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

/// The directories of one union: lowers (index 0 = topmost), optional upper and work, and a
/// mountpoint. Built once per test as a template, then cloned for each implementation.
pub struct Layers {
    pub root: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub mnt: PathBuf,
    _tmp: Option<TempDir>,
}

impl Layers {
    /// `n` lowers plus upper and work: a writable union.
    pub fn new(n: usize) -> Layers {
        Self::build(n, true)
    }

    /// `n` lowers, no upper: a read-only union (the kernel needs n >= 2 for that).
    pub fn read_only(n: usize) -> Layers {
        Self::build(n, false)
    }

    /// A writable union over lower directories the test made itself (e.g. a FUSE mount of its
    /// own): upper, work and mountpoint in a fresh temp dir, the lowers used where they are.
    pub fn over_lowers(lowers: Vec<PathBuf>) -> Layers {
        let tmp = TempDir::new();
        let mut l = Self::at(&tmp.path, 0, true);
        for d in l.all_dirs() {
            fs::create_dir_all(&d).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        l.lowers = lowers;
        l._tmp = Some(tmp);
        l
    }

    fn build(n: usize, writable: bool) -> Layers {
        let tmp = TempDir::new();
        let mut l = Self::at(&tmp.path, n, writable);
        for d in l.all_dirs() {
            fs::create_dir_all(&d).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        l._tmp = Some(tmp);
        l
    }

    fn at(root: &Path, n: usize, writable: bool) -> Layers {
        Layers {
            root: root.to_path_buf(),
            lowers: (0..n).map(|i| root.join(format!("l{i}"))).collect(),
            upper: writable.then(|| root.join("u")),
            work: writable.then(|| root.join("w")),
            mnt: root.join("m"),
            _tmp: None,
        }
    }

    fn all_dirs(&self) -> Vec<PathBuf> {
        let mut v = self.lowers.clone();
        v.extend(self.upper.clone());
        v.extend(self.work.clone());
        v.push(self.mnt.clone());
        v
    }

    pub fn lower(&self, i: usize) -> LayerDir {
        LayerDir(self.lowers[i].clone())
    }

    pub fn upper(&self) -> LayerDir {
        LayerDir(self.upper.clone().expect("read-only layers have no upper"))
    }

    /// An identical copy of all layers under `dir` (which must exist and be empty). `cp -a`
    /// preserves xattrs (trusted.* as root), device nodes, owners, modes, times, hard links
    /// within the copy, and holes.
    pub fn clone_to(&self, dir: &Path) -> Layers {
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", self.root.display()))
            .arg(dir)
            .status()
            .expect("run cp");
        assert!(
            st.success(),
            "cp -a {} {}",
            self.root.display(),
            dir.display()
        );
        let l = Self::at(dir, self.lowers.len(), self.upper.is_some());
        // The work dir must start empty for every mount; the template's is never used.
        if let Some(w) = &l.work {
            let _ = fs::remove_dir_all(w);
            fs::create_dir(w).unwrap();
        }
        l
    }

    /// Rewrite OCI markers in the lowers into the kernel format, reading them as layerfuse
    /// promises to (src/layer/mod.rs: `.wh.*` names are never entries), whatever the marker's
    /// file type (a file, a directory, a symlink, …): `.wh.NAME` becomes a 0/0 char device NAME
    /// unless NAME is in the same directory, `.wh..wh..opq` becomes `trusted.overlay.opaque=y`
    /// on its directory, and any other `.wh..wh.*` entry (aufs metadata) or a bare `.wh.`
    /// disappears.
    pub fn oci_to_kernel(&self) {
        fn conv(dir: &Path) {
            // Keep the directory's times: the conversion must not be observable.
            let md = fs::symlink_metadata(dir).unwrap();
            let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name();
                let b = name.as_bytes();
                let p = e.path();
                let ft = e.file_type().unwrap();
                if let Some(target) = b.strip_prefix(b".wh.") {
                    if ft.is_dir() {
                        fs::remove_dir_all(&p).unwrap();
                    } else {
                        fs::remove_file(&p).unwrap();
                    }
                    if b == b".wh..wh..opq" {
                        lsetxattr(dir, "trusted.overlay.opaque", b"y").unwrap();
                    } else if !target.is_empty() && !target.starts_with(b".wh.") {
                        let t = dir.join(OsStr::from_bytes(target));
                        if fs::symlink_metadata(&t).is_err() {
                            mknod(&t, libc::S_IFCHR, makedev(0, 0)).unwrap();
                        }
                    }
                } else if ft.is_dir() {
                    conv(&p);
                }
            }
            set_times(
                dir,
                (md.atime(), md.atime_nsec()),
                (md.mtime(), md.mtime_nsec()),
            );
        }
        for l in &self.lowers {
            conv(l);
        }
    }

    /// An identical copy in a fresh temp dir owned by the result.
    pub fn clone_fresh(&self) -> Layers {
        let tmp = TempDir::new();
        let mut l = self.clone_to(&tmp.path);
        l._tmp = Some(tmp);
        l
    }
}

/// One layer's directory, with helpers that create entries inside it (parents created as 0755).
pub struct LayerDir(pub PathBuf);

impl LayerDir {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn parent(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        let parent = p.parent().unwrap().to_path_buf();
        if !parent.exists() {
            fs::create_dir_all(&parent).unwrap();
        }
        p
    }

    pub fn file(&self, rel: &str, content: &str) -> &Self {
        self.file_bytes(rel, content.as_bytes())
    }

    pub fn file_bytes(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.parent(rel);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        self
    }

    pub fn dir(&self, rel: &str) -> &Self {
        let p = self.parent(rel);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let p = self.parent(rel);
        std::os::unix::fs::symlink(target, &p).unwrap();
        self
    }

    pub fn hardlink(&self, rel: &str, existing: &str) -> &Self {
        let p = self.parent(rel);
        fs::hard_link(self.path(existing), &p).unwrap();
        self
    }

    pub fn fifo(&self, rel: &str) -> &Self {
        let p = self.parent(rel);
        mknod(&p, libc::S_IFIFO | 0o644, 0).unwrap();
        self
    }

    pub fn chardev(&self, rel: &str, major: u32, minor: u32) -> &Self {
        let p = self.parent(rel);
        mknod(&p, libc::S_IFCHR | 0o644, makedev(major, minor)).unwrap();
        self
    }

    pub fn chmod(&self, rel: &str, mode: u32) -> &Self {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn chown(&self, rel: &str, uid: u32, gid: u32) -> &Self {
        std::os::unix::fs::lchown(self.path(rel), Some(uid), Some(gid)).unwrap();
        self
    }

    /// Set atime and mtime to a fixed instant (seconds + nanoseconds), without following symlinks.
    pub fn mtime(&self, rel: &str, sec: i64, nsec: i64) -> &Self {
        set_times(&self.path(rel), (sec, nsec), (sec, nsec));
        self
    }

    pub fn xattr(&self, rel: &str, name: &str, value: &[u8]) -> &Self {
        lsetxattr(&self.path(rel), name, value)
            .unwrap_or_else(|e| panic!("setxattr {name} on {rel}: {e}"));
        self
    }

    /// A kernel whiteout: a char device 0/0.
    pub fn whiteout(&self, rel: &str) -> &Self {
        let p = self.parent(rel);
        mknod(&p, libc::S_IFCHR, makedev(0, 0)).unwrap();
        self
    }

    /// A kernel opaque directory (created if missing): `trusted.overlay.opaque=y`.
    pub fn opaque(&self, rel: &str) -> &Self {
        self.dir(rel);
        self.xattr(rel, "trusted.overlay.opaque", b"y")
    }

    /// The "xattr whiteout" format (kernel 6.7+): a zero-size file with `trusted.overlay.whiteout`
    /// inside a directory marked `trusted.overlay.opaque=x`.
    pub fn xattr_whiteout(&self, rel: &str) -> &Self {
        let p = self.parent(rel);
        fs::write(&p, b"").unwrap();
        lsetxattr(&p, "trusted.overlay.whiteout", b"").unwrap();
        lsetxattr(p.parent().unwrap(), "trusted.overlay.opaque", b"x").unwrap();
        self
    }

    /// An OCI/aufs whiteout: an empty regular file `.wh.NAME` next to where NAME would be.
    pub fn oci_whiteout(&self, rel: &str) -> &Self {
        let p = self.path(rel);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let parent = p.parent().unwrap();
        fs::create_dir_all(parent).unwrap();
        fs::write(parent.join(format!(".wh.{name}")), b"").unwrap();
        self
    }

    /// An OCI opaque directory (created if missing): contains `.wh..wh..opq`.
    pub fn oci_opaque(&self, rel: &str) -> &Self {
        self.dir(rel);
        fs::write(self.path(rel).join(".wh..wh..opq"), b"").unwrap();
        self
    }

    /// A sparse file: `size` bytes, with `data` written at each of `at`.
    pub fn sparse(&self, rel: &str, size: u64, at: &[u64], data: &[u8]) -> &Self {
        use std::os::unix::fs::FileExt;
        let p = self.parent(rel);
        let f = fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        for off in at {
            f.write_all_at(data, *off).unwrap();
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Kernel,
    Layerfuse,
    FuseOverlayfs,
}

/// The implementation compared against the kernel: `LAYERFUSE_TEST_IMPL` = `layerfuse` (default),
/// `kernel` (validates the harness: both sides must always agree) or `fuse-overlayfs`.
pub fn impl_under_test() -> Impl {
    match std::env::var("LAYERFUSE_TEST_IMPL").as_deref() {
        Err(_) | Ok("") | Ok("layerfuse") => Impl::Layerfuse,
        Ok("kernel") => Impl::Kernel,
        Ok("fuse-overlayfs") => Impl::FuseOverlayfs,
        Ok(other) => {
            panic!("LAYERFUSE_TEST_IMPL={other}: expected layerfuse, kernel or fuse-overlayfs")
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// `redirect_dir=off` for the kernel, `--redirect-dir off` for layerfuse.
    pub redirect_dir_off: bool,
    /// Metadata-only copy-up: `metacopy=on` for the kernel, `--metacopy on` for layerfuse.
    pub metacopy: bool,
    /// Extra arguments for layerfuse (placed before the mountpoint).
    pub extra_args: Vec<String>,
}

/// One live mount over a [`Layers`]; unmounts and cleans up on drop.
pub struct TestMount {
    pub kind: Impl,
    pub mnt: PathBuf,
    pub upper: Option<PathBuf>,
    mount_id: Option<u64>,
    child: Option<Child>,
    // Dropped after the unmount in `Drop::drop` (fields drop after the body runs).
    layers: Option<Layers>,
}

impl TestMount {
    pub fn new(kind: Impl, layers: Layers, opts: &Opts) -> TestMount {
        match kind {
            Impl::Kernel => Self::kernel(layers, opts),
            Impl::Layerfuse => Self::layerfuse(layers, opts),
            Impl::FuseOverlayfs => Self::fuse_overlayfs(layers, opts),
        }
    }

    pub fn under_test(layers: Layers, opts: &Opts) -> TestMount {
        Self::new(impl_under_test(), layers, opts)
    }

    /// Kernel overlayfs with `redirect_dir=on,index=on` (layerfuse's defaults) unless told otherwise.
    pub fn kernel(layers: Layers, opts: &Opts) -> TestMount {
        let mut data = format!("lowerdir={}", join_lowers(&layers));
        if let (Some(u), Some(w)) = (&layers.upper, &layers.work) {
            write!(
                data,
                ",upperdir={},workdir={},redirect_dir={},index=on",
                u.display(),
                w.display(),
                if opts.redirect_dir_off { "off" } else { "on" }
            )
            .unwrap();
            if opts.metacopy {
                data.push_str(",metacopy=on");
            }
        }
        if let Err(e) = sys::mount("overlay", &layers.mnt, "overlay", &data) {
            panic!("kernel overlay mount -o {data}: {e}");
        }
        let id = mounts_at(&layers.mnt).last().map(|m| m.id);
        TestMount {
            kind: Impl::Kernel,
            mnt: layers.mnt.clone(),
            upper: layers.upper.clone(),
            mount_id: id,
            child: None,
            layers: Some(layers),
        }
    }

    /// The layerfuse command line for these layers (foreground), without spawning it.
    pub fn layerfuse_command(layers: &Layers, opts: &Opts) -> Command {
        let mut cmd = Command::new(layerfuse_bin());
        cmd.arg("mount").arg("--lower").arg(join_lowers(layers));
        if let (Some(u), Some(w)) = (&layers.upper, &layers.work) {
            cmd.arg("--upper").arg(u).arg("--work").arg(w);
        }
        if opts.redirect_dir_off {
            cmd.args(["--redirect-dir", "off"]);
        }
        if opts.metacopy {
            cmd.args(["--metacopy", "on"]);
        }
        cmd.args(&opts.extra_args);
        cmd.arg("-f").arg(&layers.mnt);
        cmd
    }

    /// layerfuse in the foreground; returns once the mount is live (polled in mountinfo).
    pub fn layerfuse(layers: Layers, opts: &Opts) -> TestMount {
        let cmd = Self::layerfuse_command(&layers, opts);
        Self::spawn_fuse(Impl::Layerfuse, cmd, layers)
    }

    /// fuse-overlayfs, only for validating the FUSE side of the harness.
    pub fn fuse_overlayfs(layers: Layers, _opts: &Opts) -> TestMount {
        let mut o = format!("lowerdir={}", join_lowers(&layers));
        if let (Some(u), Some(w)) = (&layers.upper, &layers.work) {
            write!(o, ",upperdir={},workdir={}", u.display(), w.display()).unwrap();
        }
        let mut cmd = Command::new("fuse-overlayfs");
        cmd.arg("-f").arg("-o").arg(o).arg(&layers.mnt);
        Self::spawn_fuse(Impl::FuseOverlayfs, cmd, layers)
    }

    pub fn spawn_fuse(kind: Impl, mut cmd: Command, layers: Layers) -> TestMount {
        let before: Vec<u64> = mounts_at(&layers.mnt).iter().map(|m| m.id).collect();
        // stderr/stdout to files, not pipes: a chatty daemon must never block on a full pipe.
        let err_path = layers.root.join("daemon.stderr");
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(layers.root.join("daemon.stdout")).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut tm = TestMount {
            kind,
            mnt: layers.mnt.clone(),
            upper: layers.upper.clone(),
            mount_id: None,
            child: Some(child),
            layers: Some(layers),
        };
        let mut exited = None;
        let live = wait_for(DEADLINE, || {
            if let Some(m) = mounts_at(&tm.mnt)
                .into_iter()
                .find(|m| m.fstype.starts_with("fuse") && !before.contains(&m.id))
            {
                tm.mount_id = Some(m.id);
                return true;
            }
            exited = tm.child.as_mut().unwrap().try_wait().ok().flatten();
            exited.is_some()
        });
        if !live || exited.is_some() {
            let stderr = fs::read_to_string(&err_path).unwrap_or_default();
            let what = match exited {
                Some(st) => format!("exited with {st} before the mount appeared"),
                None => format!("did not mount within {DEADLINE:?}"),
            };
            // tm's Drop kills the child and cleans up.
            panic!("{kind:?} ({cmd:?}) {what}; stderr:\n{stderr}");
        }
        tm
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mnt.clone()
        } else {
            self.mnt.join(rel)
        }
    }

    pub fn layers(&self) -> &Layers {
        self.layers.as_ref().unwrap()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.layers().root.join("daemon.stderr")).unwrap_or_default()
    }

    /// Whether our mount is still in the mount table.
    pub fn is_mounted(&self) -> bool {
        match self.mount_id {
            Some(id) => mounts().iter().any(|m| m.id == id),
            None => false,
        }
    }

    /// Unmount and reap the daemon (bounded wait, then kill by PID). Returns the daemon's exit
    /// status, if it exited on its own.
    pub fn unmount(&mut self) -> Option<ExitStatus> {
        if self.is_mounted()
            && let Err(e) = umount2(&self.mnt, 0)
        {
            eprintln!("umount {}: {e}; lazy unmount", self.mnt.display());
            let _ = umount2(&self.mnt, libc::MNT_DETACH);
        }
        self.mount_id = None;
        self.child.as_mut().and_then(|c| reap(c, DEADLINE))
    }

    /// Wait (bounded) for the daemon to exit on its own, without unmounting; kill it by PID if
    /// it does not. Drop still unmounts whatever it left.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| reap(c, DEADLINE))
    }

    /// Unmount and hand the layers back (to mount them again, e.g. with another implementation).
    pub fn into_layers(mut self) -> Layers {
        self.unmount();
        self.layers.take().unwrap()
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn join_lowers(l: &Layers) -> String {
    l.lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------------------------
// Observations
// ---------------------------------------------------------------------------------------------

/// What one side observed: a log of `label: value` lines, compared line by line between sides.
/// Record only what must be equal: never raw fds, inode numbers, device numbers or "now" times.
pub struct Ctx {
    pub kind: Impl,
    pub root: PathBuf,
    pub upper: Option<PathBuf>,
    pub log: Vec<String>,
    inos: HashMap<String, u64>,
}

impl Ctx {
    pub fn new(m: &TestMount) -> Ctx {
        Ctx {
            kind: m.kind,
            root: m.mnt.clone(),
            upper: m.upper.clone(),
            log: Vec::new(),
            inos: HashMap::new(),
        }
    }

    /// Absolute path of `rel` in the mount ("" = the mount root).
    pub fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Absolute path of `rel` in this side's upper dir.
    pub fn up(&self, rel: &str) -> PathBuf {
        self.upper.as_ref().expect("no upper").join(rel)
    }

    pub fn val(&mut self, label: &str, v: impl std::fmt::Debug) {
        self.log.push(format!("{label}: {v:?}"));
    }

    /// Record success or the errno of `r`, and hand back the value.
    pub fn ok<T>(&mut self, label: &str, r: io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.log.push(format!("{label}: ok"));
                Some(v)
            }
            Err(e) => {
                self.log.push(format!("{label}: Err({})", errno_name(&e)));
                None
            }
        }
    }

    /// Like [`Ctx::ok`] but the result must be Ok on this side (fails at once otherwise).
    pub fn must<T>(&mut self, label: &str, r: io::Result<T>) -> T {
        match r {
            Ok(v) => {
                self.log.push(format!("{label}: ok"));
                v
            }
            Err(e) => panic!(
                "[{:?}] {label}: {} ({e})\nlog so far:\n{}",
                self.kind,
                errno_name(&e),
                self.log.join("\n")
            ),
        }
    }

    pub fn stat(&mut self, rel: &str) {
        let s = describe_stat(&self.p(rel));
        self.log.push(format!("stat {rel}: {s}"));
    }

    pub fn read(&mut self, rel: &str) {
        let s = match fs::read(self.p(rel)) {
            Ok(b) => describe_bytes(&b),
            Err(e) => format!("Err({})", errno_name(&e)),
        };
        self.log.push(format!("read {rel}: {s}"));
    }

    /// The sorted listing (`.` and `..` included) with each entry's d_type.
    pub fn list(&mut self, rel: &str) {
        let s = match read_dir_raw(&self.p(rel)) {
            Ok(mut v) => {
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v.iter()
                    .map(|d| {
                        format!(
                            "{}:{}",
                            String::from_utf8_lossy(&d.name),
                            dtype_name(d.dtype)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            Err(e) => format!("Err({})", errno_name(&e)),
        };
        self.log.push(format!("list {rel}: [{s}]"));
    }

    pub fn xattrs(&mut self, rel: &str) {
        // The portable path (src/sys/bsd.rs) has no xattrs by design (docs/design.md): the
        // line stays in both logs so the rest of each test is still compared step by step.
        if cfg!(feature = "portable") {
            self.log.push(format!(
                "xattrs {rel}: (not compared: the portable path has none)"
            ));
            return;
        }
        let s = describe_xattrs(&self.p(rel));
        self.log.push(format!("xattrs {rel}: {s}"));
    }

    /// mtime (and atime) to the nanosecond: only for entries whose times a rule fixes.
    pub fn mtime(&mut self, rel: &str) {
        let s = match fs::symlink_metadata(self.p(rel)) {
            Ok(md) => format!("mtime={}.{:09}", md.mtime(), md.mtime_nsec()),
            Err(e) => format!("Err({})", errno_name(&e)),
        };
        self.log.push(format!("mtime {rel}: {s}"));
    }

    pub fn ino(&self, rel: &str) -> Option<u64> {
        fs::symlink_metadata(self.p(rel)).ok().map(|m| m.ino())
    }

    /// Remember the st_ino of `rel` under `key` (not recorded: numbers differ between sides).
    pub fn remember_ino(&mut self, key: &str, rel: &str) {
        let ino = self
            .ino(rel)
            .unwrap_or_else(|| panic!("[{:?}] stat {rel}", self.kind));
        self.inos.insert(key.to_string(), ino);
    }

    /// Record whether `rel` has the st_ino remembered under `key`.
    pub fn same_ino(&mut self, key: &str, rel: &str) {
        let same = self.ino(rel).is_some() && self.ino(rel) == self.inos.get(key).copied();
        self.log
            .push(format!("ino of {rel} == remembered {key}: {same}"));
    }

    /// What the upper dir holds at `rel`: absent, whiteout, or the entry's type.
    pub fn in_upper(&mut self, rel: &str) {
        let s = upper_kind(&self.up(rel));
        self.log.push(format!("upper {rel}: {s}"));
    }

    /// Record whether every listed entry's d_ino equals its st_ino (`.` and `..` excluded: the
    /// kernel does not promise it for `..` of the mount root).
    pub fn dino_matches_stino(&mut self, rel: &str) {
        let dir = self.p(rel);
        let entries = read_dir_raw(&dir).unwrap();
        let mut bad = Vec::new();
        for d in entries {
            if d.name == b"." || d.name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(&d.name);
            let st = fs::symlink_metadata(dir.join(name)).unwrap().ino();
            if st != d.ino {
                bad.push(name.to_string_lossy().into_owned());
            }
        }
        self.log.push(format!("d_ino != st_ino in {rel}: {bad:?}"));
    }

    /// Run `f` on a thread whose credentials are uid/gid (no supplementary groups). The raw
    /// syscalls change only the calling thread (glibc's wrappers would change every thread of
    /// the test process, i.e. all concurrently running tests).
    pub fn as_user<R: Send>(
        &mut self,
        uid: u32,
        gid: u32,
        f: impl FnOnce(&mut Ctx) -> R + Send,
    ) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: raw credential syscalls on this thread only; no memory is touched.
                unsafe {
                    assert_eq!(
                        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                        0
                    );
                    assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
                    assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
                }
                f(self)
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

fn upper_kind(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        // The portable path writes whiteouts in the OCI format (docs/design.md).
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && oci_whiteout_of(p).exists() => {
            "whiteout".into()
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => "absent".into(),
        Err(e) => format!("Err({})", errno_name(&e)),
        Ok(md) if md.file_type().is_char_device() && md.rdev() == 0 => "whiteout".into(),
        Ok(md) => file_type_name(md.file_type()).into(),
    }
}

/// `DIR/.wh.NAME` for `DIR/NAME`.
fn oci_whiteout_of(p: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".wh.");
    name.push(p.file_name().unwrap_or_default());
    p.with_file_name(name)
}

// ---------------------------------------------------------------------------------------------
// Upper tree snapshots
// ---------------------------------------------------------------------------------------------

/// Overlay-internal xattrs whose values legitimately differ between two uppers, or that are
/// bookkeeping of the kernel's implementation rather than the on-disk contract layerfuse shares:
/// - `origin`: a file handle of the lower inode; the two sides have different lower copies.
/// - `impure`: kernel readdir bookkeeping (dir holds copied-up/moved entries) — an optimisation
///   hint, not needed to read the layer correctly.
/// - `nlink`: the kernel's index=on hard-link count bookkeeping (relative to the index).
/// - `uuid`, `upper`: per-mount identity bookkeeping (index/nfs_export).
/// - `metacopy`: an optional optimisation; when present on either side the data comparison for
///   that entry is skipped (the upper holds no data then).
///
/// Everything else under `trusted.overlay.` is compared: `opaque`, `redirect`, `whiteout`, and
/// escaped `trusted.overlay.overlay.*` xattrs set through the mount.
const UPPER_XATTRS_NOT_COMPARED: &[&str] = &[
    "trusted.overlay.origin",
    "trusted.overlay.impure",
    "trusted.overlay.nlink",
    "trusted.overlay.uuid",
    "trusted.overlay.upper",
    "trusted.overlay.metacopy",
];

/// One line per entry of an upper tree, sorted by path: type (whiteout for a 0/0 char device),
/// mode, owner, content of regular files, symlink targets, device numbers and xattrs.
/// Not compared: times (the two mounts ran at different moments), nlink of regular files
/// (index=on keeps extra links in the work dir), directory sizes, and the upper root's own
/// xattrs (the kernel stores per-mount bookkeeping there). The work dir is never compared.
///
/// `opaque=y` on a directory is compared only where some lower has a directory at the same path:
/// elsewhere nothing below could show through, and the kernel sets it on every directory created
/// in a merged parent only "as an optimization" (ovl_create_upper), so its absence changes nothing.
pub fn upper_snapshot(upper: &Path, lowers: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    walk(upper, upper, lowers, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, lowers: &[PathBuf], out: &mut Vec<String>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        // The portable path writes the OCI format (docs/design.md): `.wh.NAME` is the whiteout
        // of NAME; its opaque marker, like every xattr, is not compared there.
        if cfg!(feature = "portable")
            && let Some(hidden) = name.as_encoded_bytes().strip_prefix(b".wh.")
        {
            if hidden != b".wh..opq" {
                let hidden = p.with_file_name(std::ffi::OsStr::from_bytes(hidden));
                let rel = hidden.strip_prefix(root).unwrap().display();
                out.push(format!("{rel}: whiteout"));
            }
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let mut line = if ft.is_char_device() && md.rdev() == 0 {
            format!("{rel}: whiteout")
        } else {
            let mut s = format!(
                "{rel}: {} mode={:o} uid={} gid={}",
                file_type_name(ft),
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            );
            if ft.is_symlink() {
                write!(s, " -> {:?}", fs::read_link(&p).unwrap()).unwrap();
            }
            if ft.is_char_device() || ft.is_block_device() {
                write!(
                    s,
                    " rdev={}:{}",
                    libc::major(md.rdev()),
                    libc::minor(md.rdev())
                )
                .unwrap();
            }
            s
        };
        let xnames = if cfg!(feature = "portable") {
            Vec::new()
        } else {
            llistxattr(&p).unwrap_or_default()
        };
        let metacopy = xnames.iter().any(|n| n == "trusted.overlay.metacopy");
        if ft.is_file() {
            if metacopy {
                line.push_str(" data=<metacopy>");
            } else {
                write!(
                    line,
                    " size={} data={}",
                    md.size(),
                    describe_bytes(&fs::read(&p).unwrap())
                )
                .unwrap();
            }
        }
        for n in xnames {
            if UPPER_XATTRS_NOT_COMPARED.contains(&n.as_str()) {
                continue;
            }
            if n == "trusted.overlay.opaque"
                && !lowers
                    .iter()
                    .any(|l| fs::symlink_metadata(l.join(&rel)).is_ok_and(|m| m.is_dir()))
            {
                continue;
            }
            let v = lgetxattr(&p, &n).unwrap_or_default();
            write!(line, " {n}={}", describe_bytes(&v)).unwrap();
        }
        out.push(line);
        if ft.is_dir() {
            walk(root, &p, lowers, out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pair
// ---------------------------------------------------------------------------------------------

/// Kernel overlayfs and the implementation under test over identical copies of one template.
///
/// A difference found by [`Pair::check`] does not stop the test at once: the test goes on (so
/// [`Pair::check_uppers`] still compares the uppers) and every difference is reported together,
/// at `check_uppers` or when the pair is dropped.
pub struct Pair {
    pub kernel: TestMount,
    pub other: TestMount,
    failures: std::cell::RefCell<Vec<String>>,
}

impl Pair {
    pub fn new(tpl: &Layers) -> Pair {
        Self::with_opts(tpl, &Opts::default())
    }

    pub fn with_opts(tpl: &Layers, opts: &Opts) -> Pair {
        let kl = tpl.clone_fresh();
        // Kernel overlayfs does not read the OCI format: its copy gets the kernel-format
        // equivalent, which is exactly the meaning the OCI markers must have for layerfuse.
        kl.oci_to_kernel();
        let kernel = TestMount::kernel(kl, opts);
        let ol = tpl.clone_fresh();
        if impl_under_test() == Impl::Kernel {
            ol.oci_to_kernel();
        }
        let other = TestMount::under_test(ol, opts);
        Pair {
            kernel,
            other,
            failures: Default::default(),
        }
    }

    /// Run `f` on the kernel mount, then on the other, and require identical logs.
    pub fn check(&self, f: impl Fn(&mut Ctx)) -> &Self {
        let mut k = Ctx::new(&self.kernel);
        f(&mut k);
        // LAYERFUSE_TEST_SHOW=1 prints what the kernel did (with --nocapture): the oracle's log.
        if std::env::var_os("LAYERFUSE_TEST_SHOW").is_some() {
            eprintln!("kernel log:\n  {}", k.log.join("\n  "));
        }
        let mut o = Ctx::new(&self.other);
        f(&mut o);
        if let Err(msg) = compare("observations", self.other.kind, &k.log, &o.log) {
            self.failures.borrow_mut().push(msg);
        }
        self
    }

    /// Unmount both and require the same upper trees.
    pub fn check_uppers(mut self) {
        self.kernel.unmount();
        self.other.unmount();
        let k = upper_snapshot(
            self.kernel.upper.as_ref().unwrap(),
            &self.kernel.layers().lowers,
        );
        let o = upper_snapshot(
            self.other.upper.as_ref().unwrap(),
            &self.other.layers().lowers,
        );
        if let Err(msg) = compare("upper trees", self.other.kind, &k, &o) {
            self.failures.borrow_mut().push(msg);
        }
        let failures = std::mem::take(&mut *self.failures.borrow_mut());
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let failures = std::mem::take(&mut *self.failures.borrow_mut());
        if !failures.is_empty() && !std::thread::panicking() {
            // The mounts (fields) are still dropped, i.e. unmounted, while this unwinds.
            panic!("{}", failures.join("\n"));
        }
    }
}

/// Compare two logs; on a difference, panic with both logs and the differing lines marked.
pub fn assert_same(what: &str, other: Impl, k: &[String], o: &[String]) {
    if let Err(msg) = compare(what, other, k, o) {
        panic!("{msg}");
    }
}

/// Both logs with every differing line marked `>>`, or Ok when they are equal.
pub fn compare(what: &str, other: Impl, k: &[String], o: &[String]) -> Result<(), String> {
    if k == o {
        return Ok(());
    }
    let mut msg = format!("{what} differ between kernel overlayfs and {other:?}:\n");
    for i in 0..k.len().max(o.len()) {
        let a = k.get(i).map(String::as_str).unwrap_or("<none>");
        let b = o.get(i).map(String::as_str).unwrap_or("<none>");
        if a == b {
            writeln!(msg, "     both:   {a}").unwrap();
        } else {
            writeln!(msg, ">> kernel:   {a}").unwrap();
            writeln!(msg, ">> {other:?}: {b}").unwrap();
        }
    }
    Err(msg)
}

/// Shorthand: build nothing, just run `f` on a pair over `tpl` and compare observations and uppers.
pub fn differential(tpl: &Layers, f: impl Fn(&mut Ctx)) {
    let p = Pair::new(tpl);
    p.check(f);
    p.check_uppers();
}
