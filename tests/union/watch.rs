//! `--watch-lowers`: changes made directly in a lower layer (as a developer edits a
//! checkout kept as a lower) show through the mount within a second: new, changed,
//! removed and renamed files, new directories with files. A name the upper layer holds
//! keeps showing the upper copy. Without the flag no watcher runs. Every wait is a
//! bounded poll that fails with what was seen.

use crate::common::*;
use crate::need_root;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Well above the promised second: a loaded CI machine must not make this flaky.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

fn layers() -> Layers {
    let l = Layers::new(2);
    l.lower(0)
        .file("src/main.rs", "fn main() {}\n")
        .file("README", "old\n");
    l.lower(1).file("src/lib.rs", "// lib\n").dir("docs");
    l
}

fn watched(l: Layers) -> TestMount {
    // Not while another test has the inotify limits lowered: this daemon's queue and
    // watches are set up as it starts.
    let _shared = inotify_sysctl_lock(false);
    TestMount::under_test(
        l,
        &Opts {
            extra_args: vec!["--watch-lowers".into()],
            ..Opts::default()
        },
    )
}

/// Wait until `cond` holds on the mount, or fail naming `what` and what was last seen.
fn until(what: &str, mut cond: impl FnMut() -> bool, seen: impl Fn() -> String) {
    assert!(
        wait_for(SEEN_WITHIN, &mut cond),
        "{what}: not seen through the mount within {SEEN_WITHIN:?}; last seen: {}",
        seen()
    );
}

fn read(p: &Path) -> String {
    match fs::read_to_string(p) {
        Ok(s) => s,
        Err(e) => format!("<{e}>"),
    }
}

fn listing(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The daemon's thread names.
fn threads(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect()
}

#[test]
fn lower_edits_show_through_the_mount() {
    need_root!();
    let l = layers();
    let (low0, low1) = (l.lower(0), l.lower(1));
    let m = watched(l);
    // The kernel caches all of these first (entries, negative entries, content, listings).
    assert_eq!(read(&m.path("README")), "old\n");
    assert_eq!(read(&m.path("src/main.rs")), "fn main() {}\n");
    assert!(!m.path("NEW").exists());
    assert!(!m.path("pkg").exists());
    assert_eq!(listing(&m.path("src")), ["lib.rs", "main.rs"]);

    // A new file.
    fs::write(low0.path("NEW"), "new\n").unwrap();
    until(
        "new file",
        || read(&m.path("NEW")) == "new\n",
        || read(&m.path("NEW")),
    );
    until(
        "new file in listing",
        || listing(&m.path("")).contains(&"NEW".to_string()),
        || format!("{:?}", listing(&m.path(""))),
    );

    // Changed content (same inode, size grows).
    fs::write(low0.path("README"), "changed, longer\n").unwrap();
    until(
        "changed content",
        || read(&m.path("README")) == "changed, longer\n",
        || read(&m.path("README")),
    );

    // A removed file (in the lower layer below, under a merged directory).
    fs::remove_file(low1.path("src/lib.rs")).unwrap();
    until(
        "removed file",
        || !m.path("src/lib.rs").exists() && listing(&m.path("src")) == ["main.rs"],
        || format!("{:?}", listing(&m.path("src"))),
    );

    // A new directory with a file in it.
    fs::create_dir(low1.path("pkg")).unwrap();
    fs::write(low1.path("pkg/mod.rs"), "mod\n").unwrap();
    until(
        "new directory with a file",
        || read(&m.path("pkg/mod.rs")) == "mod\n",
        || format!("{:?} {:?}", listing(&m.path("")), listing(&m.path("pkg"))),
    );
    // A file added later to that new directory (watched since it appeared).
    fs::write(low1.path("pkg/later.rs"), "later\n").unwrap();
    until(
        "file in the new directory",
        || read(&m.path("pkg/later.rs")) == "later\n",
        || format!("{:?}", listing(&m.path("pkg"))),
    );

    // A rename within the layer.
    fs::rename(low0.path("src/main.rs"), low0.path("src/app.rs")).unwrap();
    until(
        "rename",
        || {
            !m.path("src/main.rs").exists()
                && read(&m.path("src/app.rs")) == "fn main() {}\n"
                && listing(&m.path("src")) == ["app.rs"]
        },
        || format!("{:?}", listing(&m.path("src"))),
    );

    // A removed directory tree.
    fs::remove_dir_all(low1.path("pkg")).unwrap();
    until(
        "removed directory",
        || !m.path("pkg").exists(),
        || format!("{:?}", listing(&m.path(""))),
    );
}

#[test]
fn a_copied_up_file_keeps_its_upper_copy() {
    need_root!();
    let l = layers();
    let low0 = l.lower(0);
    let m = watched(l);
    fs::write(m.path("README"), "mine\n").unwrap();
    assert_eq!(read(&m.path("README")), "mine\n");
    // A lower edit of the copied-up name and, as a marker that the watcher has
    // handled the batch, a new file next to it.
    fs::write(low0.path("README"), "host edit\n").unwrap();
    fs::write(low0.path("MARK"), "m\n").unwrap();
    until(
        "marker",
        || m.path("MARK").exists(),
        || format!("{:?}", listing(&m.path(""))),
    );
    assert_eq!(read(&m.path("README")), "mine\n");
    // Removed below: the upper copy stays.
    fs::remove_file(low0.path("README")).unwrap();
    fs::remove_file(low0.path("MARK")).unwrap();
    until(
        "marker removed",
        || !m.path("MARK").exists(),
        || format!("{:?}", listing(&m.path(""))),
    );
    assert_eq!(read(&m.path("README")), "mine\n");
    // A whiteout hides a name the lower makes again.
    fs::remove_file(m.path("src/main.rs")).unwrap();
    fs::write(low0.path("src/main.rs"), "again\n").unwrap();
    fs::write(low0.path("MARK2"), "m\n").unwrap();
    until(
        "marker 2",
        || m.path("MARK2").exists(),
        || format!("{:?}", listing(&m.path(""))),
    );
    assert!(
        !m.path("src/main.rs").exists(),
        "a whiteout hides the lower's new file"
    );
}

/// The daemon's thread names once it has started its session thread (started after
/// the watcher, when there is one).
fn threads_once_started(pid: u32) -> Vec<String> {
    let started = |t: &[String]| t.iter().any(|n| n.starts_with("layerfuse-sess"));
    until(
        "session thread",
        || started(&threads(pid)),
        || format!("{:?}", threads(pid)),
    );
    threads(pid)
}

#[test]
fn the_watcher_runs_only_when_asked() {
    need_root!();
    let plain = TestMount::under_test(layers(), &Opts::default());
    let names = threads_once_started(plain.pid().expect("daemon pid"));
    assert!(
        !names.iter().any(|n| n == "layerfuse-watch"),
        "without --watch-lowers: {names:?}"
    );
    let m = watched(layers());
    let names = threads_once_started(m.pid().expect("daemon pid"));
    assert!(
        names.iter().any(|n| n == "layerfuse-watch"),
        "with --watch-lowers: {names:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Robustness: an inotify queue overflow, the watch limit. Both change machine-wide sysctls
// (`/proc/sys/fs/inotify/*`): they hold a file lock (also against other test binaries and
// checkouts running at once; every other watching mount here takes it shared while its
// daemon starts, so none is set up under the lowered limits), restore the value with a drop guard whatever happens, and keep
// the lowered value only while the daemon starts (a queue's size is fixed when its inotify
// instance is made; watches are added before the mount goes live).
// ---------------------------------------------------------------------------------------------

const MAX_QUEUED_EVENTS: &str = "/proc/sys/fs/inotify/max_queued_events";
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// Held exclusively while a test changes the inotify sysctls, shared while another test's
/// daemon sets up its watches (with the machine's limits).
fn inotify_sysctl_lock(exclusive: bool) -> fs::File {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/layerfuse-tests-inotify-sysctl.lock")
        .expect("open the inotify sysctl lock file");
    if exclusive { f.lock() } else { f.lock_shared() }.expect("lock the inotify sysctl lock file");
    f
}

/// A sysctl set for a while: the old value is written back on drop (also on a panic).
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: u64) -> Sysctl {
        let old = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        fs::write(path, value.to_string())
            .unwrap_or_else(|e| panic!("write {value} to {path}: {e}"));
        Sysctl {
            path,
            old: old.trim().to_owned(),
        }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(self.path, &self.old) {
            eprintln!("restoring {} to {}: {e}", self.path, self.old);
        }
    }
}

/// layerfuse itself (the daemon's log and pid are looked at), with `--watch-lowers`.
fn watched_layerfuse(l: Layers) -> TestMount {
    TestMount::layerfuse(
        l,
        &Opts {
            extra_args: vec!["--watch-lowers".into()],
            ..Opts::default()
        },
    )
}

/// A process stopped with SIGSTOP until dropped (SIGCONT, also on a panic).
struct Stopped(u32);

fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

impl Stopped {
    fn new(pid: u32) -> Stopped {
        assert!(signal(pid, "-STOP"), "SIGSTOP to the daemon {pid}");
        // Stopped once its state says so (every thread).
        until(
            "daemon stopped",
            || {
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('T'))
                })
            },
            || fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
        );
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !signal(self.0, "-CONT") {
            eprintln!("SIGCONT to {} failed", self.0);
        }
    }
}

/// More lower changes than the watcher's queue holds are lost (`IN_Q_OVERFLOW`); the daemon
/// then drops every lower cache, its own and the kernel's, and watches every directory
/// again: each lost change shows through the mount, and directories made or moved meanwhile
/// report later changes at their place.
///
/// Deterministic: the daemon is stopped (SIGSTOP, as a daemon that gets no CPU for a while)
/// while a 16-event queue is filled by 64 new files; the changes checked are made only after
/// that, so every one of them is lost for sure and only the recovery can show them (the
/// kernel otherwise keeps what it cached for a day).
#[test]
fn changes_lost_to_a_queue_overflow_show_through_the_mount() {
    need_root!();
    let _lock = inotify_sysctl_lock(true);
    let l = Layers::new(1);
    l.lower(0)
        .file("README", "old\n")
        .file("gone", "bye\n")
        .file("olddir/in.txt", "in\n")
        .file("src/main.rs", "fn main() {}\n")
        .dir("burst");
    let low = l.lower(0);
    let queued = Sysctl::set(MAX_QUEUED_EVENTS, 16);
    let m = watched_layerfuse(l);
    // The daemon's queue holds 16 events from here on; the machine's default is back.
    drop(queued);

    // The kernel caches all of these (entries, negative entries, content, listings).
    assert_eq!(read(&m.path("README")), "old\n");
    assert_eq!(read(&m.path("gone")), "bye\n");
    assert_eq!(read(&m.path("olddir/in.txt")), "in\n");
    assert!(!m.path("NEW").exists());
    assert!(!m.path("pkg").exists());
    assert!(!m.path("moved").exists());
    assert_eq!(
        listing(&m.path("")),
        ["README", "burst", "gone", "olddir", "src"]
    );
    assert_eq!(listing(&m.path("src")), ["main.rs"]);

    {
        let _stopped = Stopped::new(m.pid().expect("daemon pid"));
        // Four times the queue: it overflows, and everything after is dropped.
        for i in 0..64 {
            fs::write(low.path(&format!("burst/f{i:02}")), "x").unwrap();
        }
        fs::write(low.path("NEW"), "new\n").unwrap();
        // Same size, same inode: only the recovery's inode invalidation shows it.
        fs::write(low.path("README"), "NEW\n").unwrap();
        fs::remove_file(low.path("gone")).unwrap();
        fs::create_dir(low.path("pkg")).unwrap();
        fs::write(low.path("pkg/mod.rs"), "mod\n").unwrap();
        fs::rename(low.path("olddir"), low.path("moved")).unwrap();
        fs::write(low.path("src/lib.rs"), "// lib\n").unwrap();
    }

    until(
        "the overflow in the daemon's log",
        || m.stderr().contains("inotify queue overflow"),
        || m.stderr(),
    );
    for line in m
        .stderr()
        .lines()
        .filter(|l| l.contains("inotify queue overflow"))
    {
        eprintln!("daemon: {line}");
    }
    until(
        "every lost change",
        || {
            read(&m.path("NEW")) == "new\n"
                && read(&m.path("README")) == "NEW\n"
                && !m.path("gone").exists()
                && read(&m.path("pkg/mod.rs")) == "mod\n"
                && read(&m.path("moved/in.txt")) == "in\n"
                && !m.path("olddir").exists()
                && read(&m.path("src/lib.rs")) == "// lib\n"
                && listing(&m.path("")) == ["NEW", "README", "burst", "moved", "pkg", "src"]
                && listing(&m.path("src")) == ["lib.rs", "main.rs"]
                && listing(&m.path("burst")).len() == 64
        },
        || {
            format!(
                "/ {:?}, src {:?}, burst {} entries, README {:?}, NEW {:?}, pkg/mod.rs {:?}, moved/in.txt {:?}",
                listing(&m.path("")),
                listing(&m.path("src")),
                listing(&m.path("burst")).len(),
                read(&m.path("README")),
                read(&m.path("NEW")),
                read(&m.path("pkg/mod.rs")),
                read(&m.path("moved/in.txt")),
            )
        },
    );

    // Watched again: a directory made while changes were lost, and one moved meanwhile
    // (reported at its new place).
    fs::write(low.path("pkg/later.rs"), "later\n").unwrap();
    fs::write(low.path("moved/later.txt"), "moved later\n").unwrap();
    until(
        "changes in the new and the moved directory",
        || {
            read(&m.path("pkg/later.rs")) == "later\n"
                && read(&m.path("moved/later.txt")) == "moved later\n"
        },
        || {
            format!(
                "pkg {:?}, moved {:?}",
                listing(&m.path("pkg")),
                listing(&m.path("moved"))
            )
        },
    );
}

/// Inotify watches in use on the machine: every `inotify wd:` line of every process's fds
/// (an over-count at worst: the limit is per user).
fn watches_in_use() -> u64 {
    let mut n = 0;
    for p in fs::read_dir("/proc").unwrap().flatten() {
        if !p
            .file_name()
            .as_encoded_bytes()
            .iter()
            .all(u8::is_ascii_digit)
        {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(s) = fs::read_to_string(fd.path()) {
                n += s.lines().filter(|l| l.starts_with("inotify wd:")).count() as u64;
            }
        }
    }
    n
}

/// At the watch limit the mount still goes live and serves; the daemon says in one line how
/// many directories it watches, those report changes as always, and the unmount is clean.
#[test]
fn at_the_watch_limit_the_mount_serves_and_watched_directories_report_changes() {
    need_root!();
    const ROOM: u64 = 8;
    const DIRS: usize = 64;
    let _lock = inotify_sysctl_lock(true);
    let l = Layers::new(1);
    l.lower(0).file("README", "old\n");
    for i in 0..DIRS {
        l.lower(0)
            .file(&format!("d{i:02}/file"), "in a directory\n");
    }
    let low = l.lower(0);
    let limit = Sysctl::set(MAX_USER_WATCHES, watches_in_use() + ROOM);
    let mut m = watched_layerfuse(l);
    // Every watch the daemon makes is made before the mount goes live.
    drop(limit);

    let log = m.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("inotify watch limit reached"))
        .collect();
    assert_eq!(lines.len(), 1, "one line about the limit; log:\n{log}");
    let watched: usize = lines[0]
        .split(" lower directories are watched")
        .next()
        .and_then(|r| r.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("how many are watched, in: {}", lines[0]));
    assert!(
        (1..=DIRS).contains(&watched),
        "{watched} of {} directories watched (room for {ROOM}); log:\n{log}",
        DIRS + 1
    );

    // It serves, watched or not.
    assert_eq!(read(&m.path("README")), "old\n");
    assert_eq!(read(&m.path("d00/file")), "in a directory\n");
    assert_eq!(
        read(&m.path(&format!("d{:02}/file", DIRS - 1))),
        "in a directory\n"
    );
    assert_eq!(listing(&m.path("")).len(), DIRS + 1);
    // The root is watched first: a change there shows.
    assert!(!m.path("NEW").exists());
    let t = std::time::Instant::now();
    fs::write(low.path("NEW"), "new\n").unwrap();
    until(
        "a new file in a watched directory",
        || read(&m.path("NEW")) == "new\n",
        || format!("{:?}", listing(&m.path(""))),
    );
    eprintln!(
        "at the watch limit ({watched} watched): a change showed in {:?}",
        t.elapsed()
    );

    let status = m.unmount().expect("the daemon exits after the unmount");
    assert!(
        status.success(),
        "daemon exit: {status:?}; log:\n{}",
        m.stderr()
    );
    assert!(!m.is_mounted());
}
