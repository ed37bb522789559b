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
