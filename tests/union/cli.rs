//! The `layerfuse` command itself: bad input is refused with a non-zero exit, exactly one line on
//! stderr and nothing mounted; and the lifecycle (daemon mode, `layerfuse umount`, SIGTERM/SIGINT,
//! `fusermount3 -u`). These always run the layerfuse binary, whatever LAYERFUSE_TEST_IMPL says.

use crate::common::*;
use crate::need_root;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn s(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

pub(crate) fn all_mount_ids() -> Vec<u64> {
    mounts().iter().map(|m| m.id).collect()
}

/// Mounts made since `before` at `mnt` or below this test's own directory (other tests running
/// in parallel mount elsewhere, and must not count).
pub(crate) fn ours(before: &[u64], mnt: &Path, root: &Path) -> Vec<MountInfo> {
    let (mnt, root) = (mnt.display().to_string(), format!("{}/", root.display()));
    mounts()
        .into_iter()
        .filter(|m| {
            !before.contains(&m.id) && (m.mountpoint == mnt || m.mountpoint.starts_with(&root))
        })
        .collect()
}

/// Run `layerfuse mount ARGS -f MNT` and require a refusal: non-zero exit within the deadline,
/// exactly one non-empty line on stderr, no new mount anywhere.
pub(crate) fn expect_refused(
    what: &str,
    args: &[OsString],
    mnt: &Path,
    work_root: &Path,
) -> String {
    let before = all_mount_ids();
    // `what` may hold '/' (paths in the bad input): not a path here.
    let err = work_root.join(format!(
        "refused-{}.stderr",
        what.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let mut cmd = Command::new(layerfuse_bin());
    cmd.arg("mount").args(args).arg("-f").arg(mnt);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().expect("spawn layerfuse");
    let mut status = None;
    let mut new_mount = None;
    wait_for(DEADLINE, || {
        status = child.try_wait().ok().flatten();
        new_mount = ours(&before, mnt, work_root).into_iter().next();
        status.is_some() || new_mount.is_some()
    });
    if let Some(m) = new_mount {
        let mp = PathBuf::from(&m.mountpoint);
        unmount_all(&mp);
        reap(&mut child, DEADLINE);
        panic!("{what}: layerfuse accepted bad input and mounted {m:?} ({cmd:?})");
    }
    let Some(status) = status else {
        reap(&mut child, Duration::ZERO);
        panic!("{what}: layerfuse neither exited nor mounted within {DEADLINE:?} ({cmd:?})");
    };
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    assert!(
        !status.success(),
        "{what}: exit status {status}, expected failure ({cmd:?})"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected exactly one line on stderr, got:\n{stderr}"
    );
    let after = ours(&before, mnt, work_root);
    assert!(after.is_empty(), "{what}: mounted after refusal: {after:?}");
    lines[0].to_string()
}

use std::time::Duration;

pub(crate) fn base() -> Layers {
    let l = Layers::new(2);
    l.lower(0).file("a", "a");
    l.lower(1).file("b", "b");
    l
}

pub(crate) fn std_args(l: &Layers) -> Vec<OsString> {
    vec![
        "--lower".into(),
        format!("{}:{}", l.lowers[0].display(), l.lowers[1].display()).into(),
        "--upper".into(),
        s(l.upper.as_ref().unwrap()),
        "--work".into(),
        s(l.work.as_ref().unwrap()),
    ]
}

#[test]
fn refuses_missing_lower() {
    need_root!();
    let l = base();
    let mut a = std_args(&l);
    a[1] = format!(
        "{}:{}",
        l.lowers[0].display(),
        l.root.join("nope").display()
    )
    .into();
    expect_refused("missing lower", &a, &l.mnt, &l.root);
}

#[test]
fn refuses_lower_that_is_a_file() {
    need_root!();
    let l = base();
    let mut a = std_args(&l);
    a[1] = format!(
        "{}:{}",
        l.lowers[0].display(),
        l.lowers[0].join("a").display()
    )
    .into();
    expect_refused("lower is a file", &a, &l.mnt, &l.root);
}

#[test]
fn refuses_same_lower_twice() {
    need_root!();
    let l = base();
    let mut a = std_args(&l);
    a[1] = format!("{}:{}", l.lowers[0].display(), l.lowers[0].display()).into();
    expect_refused("same lower twice", &a, &l.mnt, &l.root);
}

#[test]
fn refuses_upper_inside_lower() {
    need_root!();
    let l = base();
    let inner = l.lowers[1].join("u");
    fs::create_dir(&inner).unwrap();
    let mut a = std_args(&l);
    a[3] = s(&inner);
    expect_refused("upper inside lower", &a, &l.mnt, &l.root);
}

#[test]
fn refuses_work_inside_mountpoint() {
    need_root!();
    let l = base();
    let inner = l.mnt.join("w");
    fs::create_dir(&inner).unwrap();
    let mut a = std_args(&l);
    a[5] = s(&inner);
    expect_refused("work inside mountpoint", &a, &l.mnt, &l.root);
}

#[test]
fn refuses_upper_and_work_same_dir() {
    need_root!();
    let l = base();
    let mut a = std_args(&l);
    a[5] = a[3].clone();
    expect_refused("upper equals work", &a, &l.mnt, &l.root);
}

#[test]
fn refuses_upper_and_work_on_different_filesystems() {
    need_root!();
    let l = base();
    let tmpfs = TmpfsGuard::new(&l.root.join("tmpfs"));
    let w = tmpfs.path.join("w");
    fs::create_dir(&w).unwrap();
    let mut a = std_args(&l);
    a[5] = s(&w);
    expect_refused("work on another filesystem", &a, &l.mnt, &l.root);
}

#[test]
fn refuses_work_dir_in_use_by_live_mount() {
    need_root!();
    let l = base();
    let second_mnt = l.root.join("m2");
    fs::create_dir(&second_mnt).unwrap();
    let a = std_args(&l);
    let root = l.root.clone();
    let first = TestMount::layerfuse(l, &Opts::default());
    expect_refused("work dir in use", &a, &second_mnt, &root);
    assert!(first.is_mounted(), "the first mount must survive");
}

#[test]
fn refuses_mountpoint_that_is_not_a_directory() {
    need_root!();
    let l = base();
    let f = l.root.join("file-mnt");
    fs::write(&f, "x").unwrap();
    expect_refused("mountpoint is a file", &std_args(&l), &f, &l.root);
}

#[test]
fn refuses_missing_mountpoint() {
    need_root!();
    let l = base();
    expect_refused(
        "mountpoint missing",
        &std_args(&l),
        &l.root.join("nothing"),
        &l.root,
    );
}

#[test]
fn refuses_mountpoint_already_a_layerfuse_mount() {
    need_root!();
    let l = base();
    let other = base();
    let mnt = l.mnt.clone();
    let root = other.root.clone();
    let first = TestMount::layerfuse(l, &Opts::default());
    expect_refused("mountpoint already mounted", &std_args(&other), &mnt, &root);
    assert!(first.is_mounted(), "the first mount must survive");
}

/// The live mount as the kernel lists it: type fuse.layerfuse, source `layerfuse`, allow_other,
/// default_permissions, and neither nodev nor nosuid.
fn assert_mount_shape(mnt: &Path) {
    let m = mounts_at(mnt);
    let m = m
        .last()
        .unwrap_or_else(|| panic!("{} not mounted", mnt.display()));
    assert_eq!(m.fstype, "fuse.layerfuse", "fstype {m:?}");
    assert_eq!(m.source, "layerfuse", "source {m:?}");
    assert!(
        m.options.contains("allow_other"),
        "allow_other missing: {m:?}"
    );
    assert!(
        m.options.contains("default_permissions"),
        "default_permissions missing: {m:?}"
    );
    assert!(!m.mount_options.contains("nodev"), "mounted nodev: {m:?}");
    assert!(!m.mount_options.contains("nosuid"), "mounted nosuid: {m:?}");
}

#[test]
fn foreground_mount_has_the_promised_shape() {
    need_root!();
    let m = TestMount::layerfuse(base(), &Opts::default());
    assert_mount_shape(&m.mnt);
    assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "a");
}

#[test]
fn daemon_mode_returns_once_live_and_umount_stops_it() {
    need_root!();
    let l = base();
    let err = l.root.join("daemon.stderr");
    let mut cmd = Command::new(layerfuse_bin());
    cmd.arg("mount").args(std_args(&l)).arg(&l.mnt);
    // Files, not pipes: a daemon that keeps inherited pipes open would hang a pipe reader.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut guard = DaemonGuard {
        mnt: l.mnt.clone(),
        pids: Vec::new(),
    };
    let status = reap(&mut child, DEADLINE);
    guard.pids = pids_with_arg(&l.mnt);
    let status = status.expect("layerfuse mount (daemon mode) did not return");
    assert!(
        status.success(),
        "exit {status}; stderr: {}",
        fs::read_to_string(&err).unwrap_or_default()
    );
    // No polling here: the mount must already be live when the command returns.
    assert_mount_shape(&l.mnt);
    assert_eq!(fs::read_to_string(l.mnt.join("b")).unwrap(), "b");
    assert!(!guard.pids.is_empty(), "no background daemon process found");

    let st = Command::new(layerfuse_bin())
        .arg("umount")
        .arg(&l.mnt)
        .status()
        .unwrap();
    assert!(st.success(), "layerfuse umount: {st}");
    assert!(
        mounts_at(&l.mnt).is_empty(),
        "still mounted after layerfuse umount"
    );
    for &pid in &guard.pids {
        assert!(
            wait_for(DEADLINE, || process_gone(pid)),
            "daemon {pid} did not exit after umount"
        );
    }
}

fn foreground_stop(stop: impl FnOnce(&TestMount)) {
    let mut m = TestMount::layerfuse(base(), &Opts::default());
    stop(&m);
    let status = m.wait_exit();
    let status = status.expect("daemon did not exit on its own");
    assert_eq!(
        status.code(),
        Some(0),
        "daemon exit status {status}; stderr: {}",
        m.stderr()
    );
    assert!(mounts_at(&m.mnt).is_empty(), "still mounted");
}

#[test]
fn layerfuse_umount_stops_foreground_daemon() {
    need_root!();
    foreground_stop(|m| {
        let st = Command::new(layerfuse_bin())
            .arg("umount")
            .arg(&m.mnt)
            .status()
            .unwrap();
        assert!(st.success(), "layerfuse umount: {st}");
    });
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    need_root!();
    foreground_stop(|m| {
        // SAFETY: signal to the daemon this test spawned.
        assert_eq!(
            unsafe { libc::kill(m.pid().unwrap() as i32, libc::SIGTERM) },
            0
        );
    });
}

#[test]
fn sigint_unmounts_and_exits_zero() {
    need_root!();
    foreground_stop(|m| {
        // SAFETY: signal to the daemon this test spawned.
        assert_eq!(
            unsafe { libc::kill(m.pid().unwrap() as i32, libc::SIGINT) },
            0
        );
    });
}

#[test]
fn fusermount3_u_stops_daemon() {
    need_root!();
    foreground_stop(|m| {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&m.mnt)
            .status()
            .expect("fusermount3 (package fuse3)");
        assert!(st.success(), "fusermount3 -u: {st}");
    });
}

#[test]
fn umount2_stops_daemon() {
    need_root!();
    foreground_stop(|m| umount2(&m.mnt, 0).expect("umount2"));
}

/// A runtime mounts a layer again the moment it unmounted it (Docker does between two
/// containers), while the departing daemon still holds the work dir's lock: the new mount
/// waits for the lock instead of failing with "work dir is in use". Here the test holds the
/// lock itself and lets go once the new daemon has the work dir open.
#[test]
fn mount_waits_for_a_departing_holder_of_the_work_dir() {
    use std::os::fd::AsRawFd;
    need_root!();
    let l = base();
    let work = l.work.clone().unwrap();
    let holder = fs::File::open(&work).unwrap();
    // SAFETY: plain syscall on an fd the test owns.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut cmd = TestMount::layerfuse_command(&l, &Opts::default());
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(l.root.join("waiter.stderr")).unwrap());
    let mut child = cmd.spawn().expect("spawn layerfuse");
    let pid = child.id();
    // The daemon has opened the work dir (and found it locked) or has already given up.
    let opened = wait_for(DEADLINE, || {
        let has_work = fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == work))
        });
        has_work || child.try_wait().ok().flatten().is_some()
    });
    drop(holder);
    let live = opened
        && wait_for(DEADLINE, || {
            !mounts_at(&l.mnt).is_empty() || child.try_wait().ok().flatten().is_some()
        })
        && !mounts_at(&l.mnt).is_empty();
    if live {
        let _ = umount2(&l.mnt, 0);
    }
    let status = reap(&mut child, DEADLINE);
    assert!(
        live,
        "the mount did not wait for the work dir: {status:?}; stderr: {}",
        fs::read_to_string(l.root.join("waiter.stderr")).unwrap_or_default()
    );
}

/// Processes whose root directory is `root` (daemons started inside a chroot there).
fn pids_rooted_at(root: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fs::read_link(e.path().join("root")).is_ok_and(|r| r == root) && !process_gone(pid) {
            out.push(pid);
        }
    }
    out
}

/// The command line layerfuse is introduced with, exactly as written:
/// `layerfuse mount --lower a:b:c --upper rw /merged` (relative lowers and upper, no --work,
/// daemon mode). It runs in a private mount namespace, chrooted into this test's directory, so
/// `/merged` is the test's own; the script unmounts (lazily, on any failure) before it ends,
/// so the daemon and the namespace end with it. Mounting twice shows the work dir of our own
/// is made beside the upper and reused.
#[test]
fn the_introductory_command_line_works_as_written() {
    need_root!();
    let tmp = TempDir::new();
    let root = tmp.path.clone();
    let script = r#"
set -eu
R="$1"
cd "$R"
mkdir a b c rw merged usr dev proc
echo top >a/top; echo mid >b/mid; echo base >c/base; echo hidden >c/top
ln -s usr/bin bin; ln -s usr/lib lib; ln -s usr/lib64 lib64
mount --rbind /usr usr; mount --rbind /dev dev; mount -t proc proc proc
cp "$2" layerfuse
trap 'umount -l "$R/merged" 2>/dev/null || true' EXIT
for round in 1 2; do
  chroot "$R" /layerfuse mount --lower a:b:c --upper rw /merged
  cat merged/top merged/mid merged/base
  echo "written $round" >merged/new
  chroot "$R" /layerfuse umount /merged
done
"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            script,
            "sh",
        ])
        .arg(&root)
        .arg(layerfuse_bin())
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux)");
    // Nothing may outlive the script: a daemon still rooted there is a leak.
    let left = pids_rooted_at(&root);
    let gone = wait_for(DEADLINE, || pids_rooted_at(&root).is_empty());
    if !gone {
        for pid in pids_rooted_at(&root) {
            // SAFETY: kill on a daemon this test started (rooted in its own directory).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    assert!(
        out.status.success(),
        "{}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "top\nmid\nbase\n".repeat(2)
    );
    assert!(gone, "daemons left after unmount: {left:?}");
    assert_eq!(
        fs::read_to_string(root.join("rw/new")).unwrap(),
        "written 2\n"
    );
    let work = root.join("rw.layerfuse-work");
    assert!(work.is_dir(), "no work dir beside the upper");
    assert_eq!(
        fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("work"))
            .count(),
        1,
        "a second work dir was made instead of reusing the first"
    );
}

/// `std_args` without `--work`.
fn args_without_work(l: &Layers, upper: &Path) -> Vec<OsString> {
    let mut a = std_args(l);
    a.truncate(4);
    a[3] = s(upper);
    a
}

#[test]
fn without_work_an_upper_on_its_own_filesystem_is_refused() {
    need_root!();
    let l = base();
    // The upper is a mount point: its parent, where the work dir would go, is another fs.
    let tmpfs = TmpfsGuard::new(&l.root.join("up"));
    let line = expect_refused(
        "upper is a mount point",
        &args_without_work(&l, &tmpfs.path),
        &l.mnt,
        &l.root,
    );
    assert!(
        line.contains("--work"),
        "the line must say what to do: {line}"
    );
    assert!(!l.root.join("up.layerfuse-work").exists());
}

/// Unmounts the given mount points (innermost first) even if the test fails.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in &self.0 {
            unmount_all(p);
        }
    }
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
}

#[test]
fn without_work_a_read_only_parent_is_refused() {
    need_root!();
    let l = base();
    // parent: a read-only view of `src`; parent/rw: a writable view of src/rw. Same
    // filesystem, so only the parent's being read-only is in the way.
    let (src, parent) = (l.root.join("src"), l.root.join("parent"));
    fs::create_dir_all(src.join("rw")).unwrap();
    fs::create_dir(&parent).unwrap();
    let upper = parent.join("rw");
    let _guard = Unmount(vec![upper.clone(), parent.clone()]);
    run(Command::new("mount").arg("--bind").arg(&src).arg(&parent));
    run(Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&parent));
    run(Command::new("mount")
        .arg("--bind")
        .arg(src.join("rw"))
        .arg(&upper));
    let line = expect_refused(
        "read-only parent",
        &args_without_work(&l, &upper),
        &l.mnt,
        &l.root,
    );
    assert!(line.contains("work dir"), "{line}");
}

/// The mount as /proc/self/mountinfo lists it: (source, type).
fn source_and_type(mnt: &Path) -> (String, String) {
    let m = mounts_at(mnt);
    let m = m
        .last()
        .unwrap_or_else(|| panic!("{} not mounted", mnt.display()));
    (m.source.clone(), m.fstype.clone())
}

#[test]
fn fsname_and_subtype_name_the_mount() {
    need_root!();
    let opts = Opts {
        extra_args: vec!["-o".into(), "nodev,fsname=app-1:rootfs,subtype=lfx".into()],
        ..Default::default()
    };
    let m = TestMount::layerfuse(base(), &opts);
    assert_eq!(
        source_and_type(&m.mnt),
        ("app-1:rootfs".to_string(), "fuse.lfx".to_string())
    );
    let shown = mounts_at(&m.mnt);
    assert!(
        shown
            .last()
            .is_some_and(|i| i.mount_options.contains("nodev")),
        "{shown:?}"
    );
    assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "a");
}

/// mount.fuse3 runs `layerfuse SOURCE MOUNTPOINT -o OPTIONS`: the source it was given is the
/// mount's source, the type is fuse.layerfuse.
#[test]
fn the_source_mount_fuse3_passes_names_the_mount() {
    need_root!();
    let l = base();
    let o = format!(
        "lowerdir={}:{},upperdir={},workdir={},dev,suid",
        l.lowers[0].display(),
        l.lowers[1].display(),
        l.upper.as_ref().unwrap().display(),
        l.work.as_ref().unwrap().display()
    );
    let mut cmd = Command::new(layerfuse_bin());
    cmd.arg("img-42").arg(&l.mnt).arg("-o").arg(o).arg("-f");
    let m = TestMount::spawn_fuse(Impl::Layerfuse, cmd, l);
    assert_eq!(
        source_and_type(&m.mnt),
        ("img-42".to_string(), "fuse.layerfuse".to_string())
    );
}

#[test]
fn refuses_unknown_mount_option() {
    need_root!();
    let l = base();
    let mut a = std_args(&l);
    a.extend(["-o".into(), "nodev,frobnicate".into()]);
    let line = expect_refused("unknown -o", &a, &l.mnt, &l.root);
    assert!(line.contains("frobnicate"), "{line}");
}

/// The man pages and completions come from the command definitions, and install.sh puts them
/// where man(1) and the shells look (staged under DESTDIR here).
#[test]
fn man_pages_and_completions_are_generated_and_installed() {
    let tmp = TempDir::new();
    let man = tmp.path.join("man");
    fs::create_dir(&man).unwrap();
    let st = Command::new(layerfuse_bin())
        .arg("man")
        .arg(&man)
        .status()
        .unwrap();
    assert!(st.success());
    let mount_page = fs::read_to_string(man.join("layerfuse-mount.1")).unwrap();
    assert!(mount_page.starts_with(".ie") || mount_page.contains(".TH"));
    assert!(mount_page.contains("\\-\\-lower"), "{mount_page}");
    assert!(mount_page.contains("fsname"), "the -o text is in the page");
    let top = fs::read_to_string(man.join("layerfuse.1")).unwrap();
    assert!(
        top.contains("lowerdir="),
        "the fuse-overlayfs syntax is in the page"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(layerfuse_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains("status"),
            "{shell}: {script}"
        );
        assert!(script.contains("lower"), "{shell}");
    }

    let stage = tmp.path.join("stage");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh"))
        .arg("--bin")
        .arg(layerfuse_bin())
        .env("DESTDIR", &stage)
        .env("UNITDIR", "/units")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "usr/local/share/man/man1/layerfuse.1",
        "usr/local/share/man/man1/layerfuse-status.1",
        "usr/local/share/bash-completion/completions/layerfuse",
        "usr/local/share/zsh/site-functions/_layerfuse",
        "usr/local/share/fish/vendor_completions.d/layerfuse.fish",
    ] {
        let p = stage.join(f);
        assert!(
            fs::metadata(&p).is_ok_and(|m| m.len() > 0),
            "{f} not installed"
        );
    }
}

/// A volume's first population shows progress on a terminal (script(1) gives one) and says
/// nothing when stderr is not a terminal; both in daemon mode, where the daemon reports and
/// the waiting command draws.
#[test]
fn volume_fill_progress_shows_on_a_terminal_only() {
    need_root!();
    let l = base();
    for i in 0..8 {
        l.lower(1)
            .file_bytes(&format!("img/f{i}"), &vec![b'x'; 1 << 20]);
    }
    let store = l.root.join("store");
    let mount_cmd = |vol: &str| {
        format!(
            "{} mount --lower {}:{} --root {} --volume {vol}:/img {}",
            layerfuse_bin().display(),
            l.lowers[0].display(),
            l.lowers[1].display(),
            store.display(),
            l.mnt.display()
        )
    };
    let guard = Unmount(vec![l.mnt.clone()]);
    let typescript = l.root.join("typescript");
    let st = Command::new("script")
        .args(["-qfec", &mount_cmd("first")])
        .arg(&typescript)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("script (bsdutils)");
    assert!(st.success());
    let shown = fs::read_to_string(&typescript).unwrap_or_default();
    assert!(
        shown.contains("filling new volumes from the image: 8.00 MiB"),
        "{shown}"
    );
    assert_eq!(fs::read(l.mnt.join("img/f7")).unwrap().len(), 1 << 20);
    unmount_all(&l.mnt);

    let err = l.root.join("fill.stderr");
    let st = Command::new("sh")
        .args([
            "-c",
            &format!("{} 2>{}", mount_cmd("second"), err.display()),
        ])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        fs::read_to_string(&err).unwrap(),
        "",
        "not a terminal: quiet"
    );
    drop(guard);
}

/// Start `layerfuse ARGS` in daemon mode (stderr to a file), wait for it to return, and
/// hand back its stderr and the daemons serving `l.mnt` (guarded: unmounted and ended).
fn daemon_mount(l: &Layers, args: &[OsString]) -> (String, DaemonGuard) {
    daemon_mount_by(l, Command::new(layerfuse_bin()), args)
}

/// [`daemon_mount`] through `cmd` (layerfuse itself, or a wrapper that runs it).
fn daemon_mount_by(l: &Layers, mut cmd: Command, args: &[OsString]) -> (String, DaemonGuard) {
    let err = l.root.join("daemon.stderr");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut guard = DaemonGuard {
        mnt: l.mnt.clone(),
        pids: Vec::new(),
    };
    let status = reap(&mut child, DEADLINE);
    guard.pids = pids_with_arg(&l.mnt);
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    let status = status.expect("layerfuse (daemon mode) did not return");
    assert!(status.success(), "exit {status}; stderr: {stderr}");
    assert!(!guard.pids.is_empty(), "no background daemon process found");
    (stderr, guard)
}

/// A daemon started with the usual soft limit of 1,024 open files (a service's default)
/// still serves a caller holding 1,500 files of the union open at once: it raises its
/// own soft limit to the hard one, as the kernel's union has no such limit to hit.
#[test]
fn a_daemon_started_with_1024_open_files_serves_more() {
    need_root!();
    const OPEN: usize = 1500;
    let l = base();
    for i in 0..OPEN {
        l.lower(1).file(&format!("many/f{i}"), "x");
    }
    // This test's own process needs room for them.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process, with a live struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert!(
        lim.rlim_max >= (OPEN + 200) as libc::rlim_t,
        "hard open-file limit {} too low for this test",
        lim.rlim_max
    );
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:", "--"]).arg(layerfuse_bin());
    let mut a: Vec<OsString> = vec!["mount".into()];
    a.extend(std_args(&l));
    a.push(s(&l.mnt));
    let (_, guard) = daemon_mount_by(&l, cmd, &a);
    let limits = fs::read_to_string(format!("/proc/{}/limits", guard.pids[0])).unwrap();
    let soft: Vec<&str> = limits
        .lines()
        .find(|x| x.starts_with("Max open files"))
        .map(|x| x.split_whitespace().skip(3).take(2).collect())
        .unwrap_or_default();
    assert_eq!(soft.first(), soft.get(1), "soft limit not raised: {limits}");
    let mut held = Vec::with_capacity(OPEN);
    for i in 0..OPEN {
        match fs::File::open(l.mnt.join(format!("many/f{i}"))) {
            Ok(f) => held.push(f),
            Err(e) => panic!("open #{i} through the union: {e}"),
        }
    }
    assert_eq!(held.len(), OPEN);
    drop(held);
    drop(guard);
}

/// The fuse-overlayfs syntax warns about an option it ignores once, though both the command
/// and the daemon it starts parse the options.
#[test]
fn an_ignored_compat_option_is_warned_about_once() {
    need_root!();
    let l = base();
    let o = format!(
        "lowerdir={}:{},upperdir={},workdir={},frobnicate",
        l.lowers[0].display(),
        l.lowers[1].display(),
        l.upper.as_ref().unwrap().display(),
        l.work.as_ref().unwrap().display()
    );
    let (stderr, _guard) = daemon_mount(&l, &["-o".into(), o.into(), s(&l.mnt)]);
    assert_eq!(fs::read_to_string(l.mnt.join("b")).unwrap(), "b");
    let warnings = stderr.lines().filter(|l| l.contains("frobnicate")).count();
    assert_eq!(warnings, 1, "stderr: {stderr}");
    // Written to a file, not a terminal: no colour codes in it.
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes in a log file: {stderr:?}"
    );
}

/// A mount whose daemon was killed (every access: ENOTCONN) is unmounted by `layerfuse
/// unmount` as `umount` would, and nothing of it stays in /proc/mounts.
#[test]
fn unmount_of_a_mount_whose_daemon_was_killed() {
    need_root!();
    let l = base();
    let mut a: Vec<OsString> = vec!["mount".into()];
    a.extend(std_args(&l));
    a.push(s(&l.mnt));
    let (_, guard) = daemon_mount(&l, &a);
    kill_daemons(&guard.pids, &l.mnt);
    assert!(!mounts_at(&l.mnt).is_empty());
    let out = Command::new(layerfuse_bin())
        .arg("unmount")
        .arg(&l.mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "layerfuse unmount: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounts_at(&l.mnt).is_empty(), "still in /proc/mounts");
    assert!(fs::metadata(&l.mnt).unwrap().is_dir());
}
