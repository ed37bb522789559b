//! Mounting kernel overlayfs and layerfuse, with guards that clean up on drop, even on panic:
//! umount, then lazy detach; a daemon is reaped, or killed by its PID; scratch dirs removed.

use super::sys;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Impl {
    Kernel,
    Layerfuse,
}

impl Impl {
    /// The implementation under test: `LAYERFUSE_FUZZ_IMPL=kernel` runs kernel overlayfs on
    /// both sides, which must give zero mismatches (it checks the runner itself).
    /// `LAYERFUSE_TEST_IMPL` (the shared harness's switch) is honoured when this one is unset.
    pub fn from_env() -> Impl {
        let v =
            std::env::var("LAYERFUSE_FUZZ_IMPL").or_else(|_| std::env::var("LAYERFUSE_TEST_IMPL"));
        match v.as_deref() {
            Ok("kernel") => Impl::Kernel,
            _ => Impl::Layerfuse,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Impl::Kernel => "kernel",
            Impl::Layerfuse => "layerfuse",
        }
    }
}

/// Missing root, /dev/fuse or overlay support: fail under `CI=true`, else skip with a message
/// (the shared harness's check, so both suites agree on what CI demands).
pub fn environment_ok() -> bool {
    crate::common::require_root_and_fuse()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A private tmpfs for one case: every layer of both sides lives on it, so the kernel keeps lower
/// inode numbers (one filesystem) and numbers are never reused (tmpfs counts up).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // under /tmp/lft like the shared harness's dirs, so .ci/run's cleanup finds them too
        let dir = PathBuf::from(format!("/tmp/lft/conf-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        sys::mount("lf-conf", &dir, "tmpfs", "mode=0755,size=512m").expect("mount scratch tmpfs");
        Scratch { dir }
    }
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(&p).expect("mkdir in scratch");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if sys::umount2(&self.dir, 0).is_err() {
            let _ = sys::umount2(&self.dir, libc::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

pub struct Layers<'a> {
    pub lowers: &'a [PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
    pub redirect_dir: bool,
    pub metacopy: bool,
}

pub struct Mounted {
    pub mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    unmounted: bool,
}

fn is_mounted(mnt: &Path, source: Option<&str>) -> bool {
    crate::common::mounts_at(mnt)
        .iter()
        .any(|m| m.fstype.starts_with("fuse") && source.is_none_or(|s| m.source == s))
}

/// The daemon to run: layerfuse, or a stand-in with the same command line named by
/// `LAYERFUSE_FUZZ_BIN` (e.g. `scripts/fuse-overlayfs-as-layerfuse.sh`, to check the harness's
/// FUSE path or measure a peer); a stand-in's mount may show any FUSE source.
pub fn layerfuse_bin() -> (String, bool) {
    match std::env::var("LAYERFUSE_FUZZ_BIN") {
        Ok(b) if !b.is_empty() => (b, true),
        _ => (env!("CARGO_BIN_EXE_layerfuse").to_string(), false),
    }
}

impl Mounted {
    pub fn mount(which: Impl, l: &Layers, mnt: &Path) -> Result<Mounted, String> {
        std::fs::create_dir_all(mnt).map_err(|e| e.to_string())?;
        let lower = l
            .lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let log = mnt.with_extension("log");
        match which {
            Impl::Kernel => {
                let opts = format!(
                    "lowerdir={lower},upperdir={},workdir={},redirect_dir={},index=on,metacopy={}",
                    l.upper.display(),
                    l.work.display(),
                    if l.redirect_dir { "on" } else { "off" },
                    if l.metacopy { "on" } else { "off" }
                );
                sys::mount("overlay", mnt, "overlay", &opts).map_err(|e| {
                    format!("kernel overlay mount ({opts}): {}", sys::errno_name(e))
                })?;
                Ok(Mounted {
                    mnt: mnt.to_path_buf(),
                    child: None,
                    log,
                    unmounted: false,
                })
            }
            Impl::Layerfuse => {
                let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
                let (bin, stand_in) = layerfuse_bin();
                let child = Command::new(bin)
                    .arg("mount")
                    .arg("--lower")
                    .arg(&lower)
                    .arg("--upper")
                    .arg(l.upper)
                    .arg("--work")
                    .arg(l.work)
                    .arg("--redirect-dir")
                    .arg(if l.redirect_dir { "on" } else { "off" })
                    .arg("--metacopy")
                    .arg(if l.metacopy { "on" } else { "off" })
                    .arg("-f")
                    .arg(mnt)
                    .stdin(Stdio::null())
                    .stdout(logf.try_clone().map_err(|e| e.to_string())?)
                    .stderr(logf)
                    .spawn()
                    .map_err(|e| format!("spawn layerfuse: {e}"))?;
                let mut m = Mounted {
                    mnt: mnt.to_path_buf(),
                    child: Some(child),
                    log,
                    unmounted: false,
                };
                let start = Instant::now();
                loop {
                    if is_mounted(mnt, (!stand_in).then_some("layerfuse")) {
                        return Ok(m);
                    }
                    if let Some(st) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                        m.child = None;
                        m.unmounted = true;
                        return Err(format!(
                            "layerfuse exited before mounting ({st}): {}",
                            m.log_tail()
                        ));
                    }
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err(format!(
                            "layerfuse did not mount within 10 s: {}",
                            m.log_tail()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// A guard of nothing (already unmounted): holds a place while a side is remounted.
    pub fn none() -> Mounted {
        Mounted {
            mnt: PathBuf::new(),
            child: None,
            log: PathBuf::new(),
            unmounted: true,
        }
    }

    /// The daemon's PID (None for the kernel).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Unmounts and waits for the daemon. Err if the unmount was refused or the daemon crashed,
    /// hung, or exited non-zero.
    pub fn unmount(mut self) -> Result<(), String> {
        self.unmounted = true;
        let mut problems = Vec::new();
        if let Err(e) = sys::umount2(&self.mnt, 0) {
            problems.push(format!("umount: {}", sys::errno_name(e)));
            let _ = sys::umount2(&self.mnt, libc::MNT_DETACH);
        }
        if let Some(mut child) = self.child.take() {
            // reaps, or kills by PID after the deadline
            match crate::common::reap(&mut child, crate::common::DEADLINE) {
                Some(st) if st.success() => {}
                Some(st) => problems.push(format!("daemon exited with {st}: {}", self.log_tail())),
                None => problems.push(format!(
                    "daemon still running {:?} after unmount",
                    crate::common::DEADLINE
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.unmounted && sys::umount2(&self.mnt, 0).is_err() {
            let _ = sys::umount2(&self.mnt, libc::MNT_DETACH);
        }
        if let Some(mut child) = self.child.take() {
            crate::common::reap(&mut child, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = std::fs::remove_file(&self.log);
    }
}
