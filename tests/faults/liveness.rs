//! A mount goes live or fails with a clear message within its wait, under load: remount
//! cycles (unmount, then at once a mount of the same upper and work dir, as runtimes do)
//! while other threads keep the CPUs busy, write and fsync files on the same filesystem,
//! call sync(2), and keep using the mount itself (so some unmounts find it busy and the
//! departing daemon lingers). Each `layerfuse mount` must end within [`DEADLINE`] (the
//! work dir's 5 s wait for a departing mount, plus slack for the load): live, or refused in
//! one line. A hung mount fails the test with the kernel stacks of its threads.
//! `LAYERFUSE_LIVENESS_CYCLES` sets the number of cycles (default 24).

use crate::common::*;
use crate::need_root;
use crate::support::*;
use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Load for as long as it lives: CPU spinners, a writer that fsyncs, sync(2) callers, and a
/// client of the mountpoint.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(scratch: &std::path::Path, mnt: &std::path::Path) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for _ in 0..2 {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                }
            }));
        }
        {
            let (stop, dir) = (stop.clone(), scratch.to_path_buf());
            threads.push(std::thread::spawn(move || {
                let chunk = vec![7u8; 1024 * 1024];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let p = dir.join(format!("load{}", i % 4));
                    if let Ok(mut f) = fs::File::create(&p) {
                        for _ in 0..16 {
                            let _ = f.write_all(&chunk);
                        }
                        let _ = f.sync_all();
                    }
                    i += 1;
                }
            }));
        }
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: sync(2) has no preconditions.
                    unsafe { libc::sync() };
                }
            }));
        }
        {
            let (stop, mnt) = (stop.clone(), mnt.to_path_buf());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Whatever is there (the union, or the bare dir between mounts).
                    let _ = fs::read_dir(&mnt).map(|d| d.count());
                    if let Ok(f) = fs::File::open(mnt.join("f1")) {
                        let _ = fs::read(mnt.join("f2"));
                        drop(f);
                    }
                }
            }));
        }
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn remount_cycles_under_load_go_live_or_fail_clearly_in_time() {
    need_root!();
    let cycles = env_number("LAYERFUSE_LIVENESS_CYCLES", 24);
    let l = Layers::new(1);
    for i in 0..200 {
        l.lower(0).file(&format!("f{i}"), &format!("{i}\n"));
    }
    let scratch = l.root.join("scratch");
    fs::create_dir(&scratch).unwrap();
    let (u, w) = (l.upper.clone().unwrap(), l.work.clone().unwrap());
    let load = Load::start(&scratch, &l.mnt);
    // The departing foreground daemons' unmount threads, and the background daemons (guarded:
    // unmounted and ended by PID also when a cycle panics).
    let mut unmounts = Vec::new();
    let mut daemons = Vec::new();
    let (mut live, mut refused, mut slowest) = (0, Vec::new(), std::time::Duration::ZERO);
    for cycle in 0..cycles {
        let start = Instant::now();
        if cycle % 2 == 0 {
            // Foreground, as the test harness and supervisors run it.
            match Live::start(layerfuse_cmd(&l.lowers, &u, &w, &l.mnt, &[]), &l.mnt) {
                Ok(mut m) => {
                    live += 1;
                    slowest = slowest.max(start.elapsed());
                    fs::write(m.path(&format!("f{}", cycle % 200)), b"x\n").unwrap();
                    // Unmount and do not wait for the daemon to go: the next mount starts now.
                    if umount2(&m.mnt, 0).is_err() {
                        let _ = umount2(&m.mnt, libc::MNT_DETACH);
                    }
                    unmounts.push(std::thread::spawn(move || {
                        let _ = m.unmount();
                    }));
                }
                Err(e) => {
                    assert!(
                        e.starts_with("exited with") && e.contains("stderr: layerfuse: "),
                        "cycle {cycle}: {e}"
                    );
                    refused.push(e);
                }
            }
        } else {
            // Daemon mode: the command itself returns once live, or fails.
            let err = l.root.join("mount.stderr");
            // Departing daemons of earlier cycles also name this mountpoint: not this one's.
            let before = pids_with_arg(&l.mnt);
            let mut child = Command::new(layerfuse_bin())
                .arg("mount")
                .arg("--lower")
                .arg(&l.lowers[0])
                .arg("--upper")
                .arg(&u)
                .arg("--work")
                .arg(&w)
                .arg(&l.mnt)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&err).unwrap())
                .spawn()
                .unwrap();
            let mut guard = DaemonGuard {
                mnt: l.mnt.clone(),
                pids: Vec::new(),
            };
            let st = reap(&mut child, DEADLINE);
            guard.pids = pids_with_arg(&l.mnt);
            guard.pids.retain(|p| !before.contains(p));
            daemons.push(guard);
            let text = fs::read_to_string(&err).unwrap_or_default();
            let Some(st) = st else {
                unmount_all(&l.mnt);
                panic!(
                    "cycle {cycle}: `layerfuse mount` neither returned nor failed within {DEADLINE:?}; stderr: {text}"
                );
            };
            slowest = slowest.max(start.elapsed());
            if st.success() {
                assert!(
                    !mounts_at(&l.mnt).is_empty(),
                    "cycle {cycle}: returned 0, not mounted"
                );
                live += 1;
                let st = Command::new(layerfuse_bin())
                    .arg("umount")
                    .arg(&l.mnt)
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                if !st.success() {
                    let _ = umount2(&l.mnt, libc::MNT_DETACH);
                }
            } else {
                assert!(
                    text.trim().lines().count() == 1 && text.starts_with("layerfuse: "),
                    "cycle {cycle}: failed without one clear line: {text:?}"
                );
                assert!(
                    mounts_at(&l.mnt).is_empty(),
                    "cycle {cycle}: failed but mounted"
                );
                refused.push(text);
            }
        }
    }
    drop(load);
    for t in unmounts {
        t.join().expect("an unmount thread panicked");
    }
    unmount_all(&l.mnt);
    // Departing daemons end by themselves once their mount is gone; the guards wait for that
    // (and kill by PID what does not).
    drop(daemons);
    eprintln!(
        "{cycles} remount cycles under load: {live} live, {} refused, slowest {slowest:?}",
        refused.len()
    );
    for r in &refused {
        eprintln!("  refused: {}", r.trim());
    }
    assert!(live > 0, "no cycle went live");
}
