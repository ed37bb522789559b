//! `layerfuse status`: every live mount, as its daemon tells it over its control socket,
//! checked against what the test did through the mount (copy-ups, whiteouts, errors, mkdirs),
//! who may ask (the socket is root's, 0600 in a 0700 directory), and that a mount of another
//! subtype is still found (status, umount) by its daemon, or, its daemon dead, by the record
//! the daemon left.

use crate::common::*;
use crate::need_root;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// `layerfuse status ARGS --format json`, parsed.
/// `layerfuse status ARGS --format json`, asserting that it succeeds.
pub(crate) fn status_json(args: &[&std::ffi::OsStr]) -> Value {
    let out = Command::new(layerfuse_bin())
        .arg("status")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("layerfuse status");
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn counter(s: &Value, path: &[&str]) -> u64 {
    let mut v = &s["counters"];
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or(0)
}

#[test]
fn status_counts_what_the_mount_did() {
    need_root!();
    const COPIES: usize = 5;
    const REMOVED: usize = 3;
    const FULL_DIRS: usize = 2;
    let l = Layers::new(2);
    let mut size = 0;
    for i in 0..COPIES {
        let body = "x".repeat(100 + i);
        size += body.len() as u64;
        l.lower(1).file(&format!("copy{i}"), &body);
    }
    for i in 0..REMOVED {
        l.lower(0).file(&format!("gone{i}"), "g");
    }
    for i in 0..FULL_DIRS {
        l.lower(0).file(&format!("full{i}/f"), "f");
    }
    let lowers = l.lowers.clone();
    let m = TestMount::layerfuse(l, &Opts::default());
    for i in 0..COPIES {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.path(&format!("copy{i}")))
            .unwrap();
        std::io::Write::write_all(&mut f, b"").unwrap();
    }
    for i in 0..REMOVED {
        fs::remove_file(m.path(&format!("gone{i}"))).unwrap();
    }
    for i in 0..FULL_DIRS {
        let e = fs::remove_dir(m.path(&format!("full{i}"))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    }
    fs::create_dir(m.path("made")).unwrap();

    let s = status_json(&[m.mnt.as_os_str()]);
    assert_eq!(s.as_array().map(Vec::len), Some(1), "{s}");
    let s = &s[0];
    assert_eq!(s["mountpoint"], m.mnt.display().to_string());
    assert_eq!(s["fstype"], "fuse.layerfuse");
    assert_eq!(s["pid"].as_u64(), m.pid().map(u64::from), "{s}");
    let shown: Vec<&str> = s["lowers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let given: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(shown, given);
    // The transport this mount was asked for, or under `auto` the one the kernel offers.
    assert_eq!(s["transport"].as_str(), Some(expected_transport()), "{s}");
    let text = Command::new(layerfuse_bin())
        .arg("status")
        .arg(&m.mnt)
        .output()
        .expect("layerfuse status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains(&format!("transport {}", expected_transport()))),
        "{text}"
    );
    assert_eq!(counter(s, &["copy_ups"]), COPIES as u64, "{s}");
    assert_eq!(counter(s, &["bytes_copied"]), size, "{s}");
    assert_eq!(counter(s, &["whiteouts"]), REMOVED as u64, "{s}");
    assert_eq!(
        counter(s, &["errors_by_errno", "ENOTEMPTY"]),
        FULL_DIRS as u64,
        "{s}"
    );
    assert_eq!(counter(s, &["requests", "mkdir"]), 1, "{s}");
    assert!(counter(s, &["requests", "lookup"]) > 0, "{s}");
    assert!(s["rss_bytes"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["nodes_held"].as_u64().unwrap_or(0) > 0, "{s}");

    // Listed among all mounts too.
    let all = status_json(&[]);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|x| x["mountpoint"] == s["mountpoint"]),
        "{all}"
    );
}

/// The transport a test mount serves on: `$LAYERFUSE_TRANSPORT` when it names one, else
/// (`auto`) io_uring exactly when the kernel's switch is on.
fn expected_transport() -> &'static str {
    match std::env::var("LAYERFUSE_TRANSPORT").as_deref() {
        Ok("uring" | "io_uring") => "uring",
        Ok("dev") => "dev",
        Ok("splice") => "splice",
        _ => match fs::read_to_string("/sys/module/fuse/parameters/enable_uring") {
            Ok(v) if matches!(v.trim(), "Y" | "y" | "1") => "uring",
            _ => "dev",
        },
    }
}

/// PATH of the control socket of daemon `pid`.
fn sockets_of(pid: u32) -> Vec<std::path::PathBuf> {
    fs::read_dir("/run/layerfuse/mounts")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pid}.")))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn only_root_may_ask_and_the_socket_goes_with_the_mount() {
    need_root!();
    let mut m = TestMount::layerfuse(Layers::new(1), &Opts::default());
    let pid = m.pid().unwrap();
    // Its socket and the record of its mount, both root's only. The record is written once
    // the connection is up, which may be just after the mount shows in mountinfo.
    assert!(
        wait_for(DEADLINE, || sockets_of(pid).len() == 2),
        "{:?}",
        sockets_of(pid)
    );
    let files = sockets_of(pid);
    let of_kind = |x: &str| {
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == x))
            .count()
    };
    assert_eq!(
        (files.len(), of_kind("sock"), of_kind("mount")),
        (2, 1, 1),
        "{files:?}"
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(Path::new("/run/layerfuse/mounts")), 0o700);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    // Another user learns nothing of it.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(layerfuse_bin())
        .args(["status", "--format", "json"])
        .env("XDG_RUNTIME_DIR", "/nonexistent")
        .output()
        .expect("setpriv (util-linux)");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        listed,
        Value::Array(vec![]),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.unmount();
    assert!(
        wait_for(DEADLINE, || sockets_of(pid).is_empty()),
        "socket left: {:?}",
        sockets_of(pid)
    );
}

#[test]
fn a_mount_of_another_subtype_is_found_by_its_daemon() {
    need_root!();
    let opts = Opts {
        extra_args: vec!["-o".into(), "subtype=lfother,fsname=other".into()],
        ..Default::default()
    };
    let m = TestMount::layerfuse(Layers::new(1), &opts);
    let s = status_json(&[m.mnt.as_os_str()]);
    assert_eq!(s[0]["fstype"], "fuse.lfother");
    assert_eq!(s[0]["fsname"], "other");
    let st = Command::new(layerfuse_bin())
        .arg("umount")
        .arg(&m.mnt)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "layerfuse umount of a fuse.lfother mount: {st}"
    );
    let left = mounts_at(&m.mnt);
    assert!(left.is_empty(), "{left:?}");
}

/// A mount of another subtype whose daemon was killed (every access: ENOTCONN, no daemon to
/// ask) is still layerfuse's to unmount: the record its daemon left beside its socket says
/// so. A non-layerfuse mount at a path is still refused. Nothing of either stays behind.
#[test]
fn a_dead_mount_of_another_subtype_is_known_by_its_record() {
    need_root!();
    let opts = Opts {
        extra_args: vec!["-o".into(), "subtype=lfdead,fsname=deadone".into()],
        ..Default::default()
    };
    let m = TestMount::layerfuse(Layers::new(1), &opts);
    let pid = m.pid().expect("daemon pid");
    let records = |pid: u32| -> Vec<std::path::PathBuf> {
        sockets_of(pid)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "mount"))
            .collect()
    };
    // Written once the connection is up, which may be just after the mount shows.
    assert!(
        wait_for(DEADLINE, || records(pid).len() == 1),
        "{:?}",
        sockets_of(pid)
    );
    kill_daemons(&[pid as i32], &m.mnt);
    // `layerfuse status` drops the dead socket but keeps the record: the mount is there.
    let _ = status_json(&[]);
    assert_eq!(records(pid).len(), 1, "{:?}", sockets_of(pid));
    let out = Command::new(layerfuse_bin())
        .arg("umount")
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "layerfuse umount of a dead fuse.lfdead mount: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounts_at(&m.mnt).is_empty(), "{:?}", mounts_at(&m.mnt));
    assert!(sockets_of(pid).is_empty(), "left: {:?}", sockets_of(pid));
    // Something else mounted there afterwards is not layerfuse's.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "lf-not-ours"])
        .arg(&m.mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new(layerfuse_bin())
        .arg("umount")
        .arg(&m.mnt)
        .output()
        .unwrap();
    let still = mounts_at(&m.mnt);
    let _ = Command::new("umount").arg(&m.mnt).status();
    assert!(
        !out.status.success(),
        "a tmpfs was unmounted as layerfuse's"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a layerfuse mount"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(still.len(), 1, "{still:?}");
}

/// `status MNT --watch` redraws on a terminal (a pty from script(1)); without one it refuses.
#[test]
fn watch_refreshes_on_a_terminal() {
    need_root!();
    let m = TestMount::layerfuse(Layers::new(1), &Opts::default());
    let out = m.mnt.with_file_name("watch.out");
    let cmd = format!(
        "{} status {} --watch",
        layerfuse_bin().display(),
        m.mnt.display()
    );
    let mut script = Command::new("script")
        .args(["-qfec", &cmd])
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("script (bsdutils)");
    // Two screens: the watch refreshed once at least.
    let redrawn = wait_for(DEADLINE, || {
        fs::read_to_string(&out).is_ok_and(|s| s.matches("\u{1b}[2J").count() >= 2)
    });
    // SAFETY: signal to the script(1) process this test spawned; its pty's hangup ends the watch.
    unsafe { libc::kill(script.id() as i32, libc::SIGTERM) };
    let _ = reap(&mut script, DEADLINE);
    let shown = fs::read_to_string(&out).unwrap_or_default();
    assert!(redrawn, "no second screen:\n{shown}");
    assert!(shown.contains("requests"), "{shown}");

    let piped = Command::new(layerfuse_bin())
        .arg("status")
        .arg(&m.mnt)
        .arg("--watch")
        .output()
        .unwrap();
    assert!(!piped.status.success());
    assert_eq!(String::from_utf8_lossy(&piped.stderr).lines().count(), 1);
}
