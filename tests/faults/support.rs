//! What the fault tests share: small filesystems to fill, layerfuse and kernel overlayfs
//! mounts over upper/work dirs placed anywhere, and snapshots of trees (to show a lower
//! layer untouched, or a file either before or after a change).
#![allow(dead_code)]

use crate::common::*;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs of `size` bytes and `inodes` inodes in a temp dir of its own; unmounted on drop.
/// tmpfs keeps `trusted.*` xattrs, whiteouts (RENAME_WHITEOUT) and file handles, so kernel
/// overlayfs accepts it as an upper too.
pub struct SmallFs {
    pub path: PathBuf,
    _tmp: TempDir,
}

impl SmallFs {
    pub fn new(size: u64, inodes: u64) -> SmallFs {
        let tmp = TempDir::new();
        let path = tmp.path.join("fs");
        fs::create_dir(&path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},nr_inodes={inodes},mode=755"))
            .arg("tmpfs")
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs at {}", path.display());
        SmallFs { path, _tmp: tmp }
    }

    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Use up every data block: a file written until ENOSPC. Returns it (remove it to free).
    pub fn fill_blocks(&self) -> PathBuf {
        let p = self.path.join("filler.blocks");
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", p.display()),
            }
        }
        // A page-sized tail may still fit: write single bytes until the last one is refused.
        while f.write(&[0x5a]).is_ok_and(|n| n == 1) {}
        p
    }

    /// Use up every inode: empty files until ENOSPC. Returns their dir (remove it to free).
    pub fn fill_inodes(&self) -> PathBuf {
        let d = self.path.join("filler.inodes");
        let _ = fs::create_dir(&d);
        for i in 0.. {
            match fs::File::create(d.join(format!("{i}"))) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling inodes in {}: {e}", d.display()),
            }
        }
        d
    }

    /// Give back everything the fillers took.
    pub fn free(&self) {
        let _ = fs::remove_file(self.path.join("filler.blocks"));
        let _ = fs::remove_dir_all(self.path.join("filler.inodes"));
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        unmount_all(&self.path);
    }
}

/// The layerfuse command (foreground) over `lowers` (topmost first) with the upper and work
/// dirs given (anywhere, e.g. on a [`SmallFs`]) and `extra` arguments.
pub fn layerfuse_cmd(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    mnt: &Path,
    extra: &[String],
) -> Command {
    let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let mut cmd = Command::new(layerfuse_bin());
    cmd.arg("mount")
        .arg("--lower")
        .arg(lowers.join(":"))
        .arg("--upper")
        .arg(upper)
        .arg("--work")
        .arg(work)
        .args(extra)
        .arg("-f")
        .arg(mnt);
    cmd
}

/// A foreground daemon and its mount: unmounted (lazily if busy) and reaped by PID on drop.
pub struct Live {
    pub mnt: PathBuf,
    child: Option<std::process::Child>,
    mount_id: Option<u64>,
    stderr: PathBuf,
}

impl Live {
    /// Start `cmd` (a foreground mount at `mnt`) and wait until its mount shows, or it exits
    /// (Err with its stderr), or [`DEADLINE`] passes (Err: it is killed).
    pub fn start(mut cmd: Command, mnt: &Path) -> Result<Live, String> {
        let before: Vec<u64> = mounts_at(mnt).iter().map(|m| m.id).collect();
        let stderr = tempfile_path("daemon");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut live = Live {
            mnt: mnt.to_path_buf(),
            child: Some(child),
            mount_id: None,
            stderr,
        };
        let mut exited = None;
        let up = wait_for(DEADLINE, || {
            if let Some(m) = mounts_at(mnt)
                .into_iter()
                .find(|m| m.fstype.starts_with("fuse") && !before.contains(&m.id))
            {
                live.mount_id = Some(m.id);
                return true;
            }
            exited = live.child.as_mut().unwrap().try_wait().ok().flatten();
            exited.is_some()
        });
        if up && exited.is_none() {
            return Ok(live);
        }
        let what = match exited {
            Some(st) => format!("exited with {st} before the mount appeared"),
            None => format!(
                "neither mounted nor exited within {DEADLINE:?}; where its threads wait:\n{}",
                thread_stacks(live.pid())
            ),
        };
        // Gone now, by PID, and whatever it mounted meanwhile with it.
        live.kill();
        for m in mounts_at(mnt) {
            if !before.contains(&m.id) {
                unmount_all(mnt);
            }
        }
        Err(format!("{what}; stderr: {}", live.stderr()))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn is_mounted(&self) -> bool {
        self.mount_id
            .is_some_and(|id| mounts().iter().any(|m| m.id == id))
    }

    /// Unmount (lazily if busy) and reap the daemon; its exit status if it exited by itself.
    pub fn unmount(&mut self) -> Option<std::process::ExitStatus> {
        if self.is_mounted() && umount2(&self.mnt, 0).is_err() {
            let _ = umount2(&self.mnt, libc::MNT_DETACH);
        }
        self.mount_id = None;
        let st = self.child.as_mut().and_then(|c| reap(c, DEADLINE));
        self.child = None;
        st
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.unmount();
        let _ = fs::remove_file(&self.stderr);
    }
}

/// layerfuse over `lowers` with the upper and work dirs given; returns once live.
pub fn layerfuse_on(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    mnt: &Path,
    extra: &[String],
) -> Live {
    Live::start(layerfuse_cmd(lowers, upper, work, mnt, extra), mnt)
        .unwrap_or_else(|e| panic!("layerfuse mount at {}: {e}", mnt.display()))
}

/// Kernel overlayfs (`redirect_dir=on,index=on`, as layerfuse defaults) over `lowers` with
/// the upper and work dirs given; unmounted on drop.
pub struct KernelOverlay {
    pub mnt: PathBuf,
}

impl KernelOverlay {
    pub fn new(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> KernelOverlay {
        let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=on,index=on",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        let d = CString::new(data.clone()).unwrap();
        let m = cpath(mnt);
        // SAFETY: valid NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                m.as_ptr(),
                c"overlay".as_ptr(),
                0,
                d.as_ptr().cast(),
            )
        };
        assert_eq!(
            r,
            0,
            "kernel overlay mount -o {data}: {}",
            io::Error::last_os_error()
        );
        KernelOverlay {
            mnt: mnt.to_path_buf(),
        }
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        unmount_all(&self.mnt);
    }
}

/// `Ok` or the errno's name.
pub fn outcome<T>(r: &io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => errno_name(e),
    }
}

/// Entries left in the scratch area of a work dir (`W/work`).
pub fn work_leftovers(work: &Path) -> Vec<String> {
    match fs::read_dir(work.join("work")) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// One line per entry below `root` (sorted): type, mode, size and a digest of the content,
/// symlink targets, and xattrs. Two equal snapshots: nothing under `root` changed.
pub fn tree_snapshot(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = md.file_type();
            let mut line = format!("{rel}: mode={:o} uid={}", md.mode(), md.uid());
            if ft.is_file() {
                let data = fs::read(&p).unwrap_or_default();
                line.push_str(&format!(" {}", describe_bytes(&data)));
            } else if ft.is_symlink() {
                line.push_str(&format!(" -> {:?}", fs::read_link(&p).ok()));
            } else if ft.is_char_device() {
                line.push_str(&format!(" rdev={}", md.rdev()));
            }
            line.push_str(&format!(" [{}]", describe_xattrs(&p)));
            out.push(line);
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Run `layerfuse` with `args` to its end (bounded by [`DEADLINE`]): exit status and stderr.
pub fn run_layerfuse(args: &[std::ffi::OsString]) -> (Option<std::process::ExitStatus>, String) {
    let err = tempfile_path("stderr");
    let mut child = Command::new(layerfuse_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn layerfuse");
    let st = reap(&mut child, DEADLINE);
    let text = fs::read_to_string(&err).unwrap_or_default();
    let _ = fs::remove_file(&err);
    (st, text)
}

fn tempfile_path(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let _ = fs::create_dir_all("/tmp/lft");
    PathBuf::from(format!(
        "/tmp/lft/{}-faults-{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// Number of fds the process `pid` holds.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether process `pid` is still running (not exited, not a zombie).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(st) => !st
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

impl Live {
    /// SIGKILL the daemon (std's `Child::kill`) and reap it; the mount stays behind, dead
    /// (ENOTCONN), until [`Live::unmount`] or drop.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so a failing round can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Each thread of process `pid`: its name, where it waits in the kernel, and its kernel stack
/// (for a hang's report).
pub fn thread_stacks(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| fs::read_to_string(p.join(f)).unwrap_or_default();
        out.push_str(&format!(
            "  {} {} wchan={}\n{}",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan"),
            read("stack")
                .lines()
                .take(12)
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        ));
    }
    out
}
