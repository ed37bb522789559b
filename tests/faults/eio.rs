//! The upper failing: upper and work dir on the fault-injecting FUSE filesystem
//! (`faultfs.rs`), which answers EIO to reads, writes, fsyncs or renames of the paths the test
//! names, switched on and off while the union is mounted. The caller gets EIO, in bounded
//! time (no hang), the daemon keeps serving, nothing half-made shows, the lower is never
//! touched, and once the fault is gone the same mount works again.

use crate::common::*;
use crate::faultfs::{FaultMount, Op};
use crate::need_root;
use crate::support::*;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

/// Run `f` on a thread of its own and wait for it (bounded): a hung request fails the test
/// instead of hanging it.
#[track_caller]
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what}: no answer within {DEADLINE:?} (hung)"))
}

fn errno_of<T>(r: &io::Result<T>) -> Option<i32> {
    r.as_ref().err().and_then(io::Error::raw_os_error)
}

#[test]
fn upper_failing_with_eio_reaches_callers_and_the_mount_recovers() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0)
        .file("lower-copied", "lower content\n")
        .file("lower-renamed", "lower renamed\n")
        .file("keep", "keep\n");
    let lower_before = tree_snapshot(&l.lowers[0]);
    let back = l.root.join("back");
    let fmnt = l.root.join("fault");
    fs::create_dir_all(back.join("u")).unwrap();
    fs::create_dir_all(back.join("w")).unwrap();
    fs::create_dir_all(&fmnt).unwrap();
    // Files of the upper written before the union exists: their first read goes to the disk.
    for f in ["read-me", "write-me", "sync-me", "rename-me"] {
        fs::write(back.join("u").join(f), format!("{f}\n")).unwrap();
    }
    let fault = FaultMount::new(&back, &fmnt);
    let faults = fault.faults.clone();
    let (u, w) = (fmnt.join("u"), fmnt.join("w"));
    let mut m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &[]);
    let mnt = m.mnt.clone();
    let p = move |r: &str| mnt.join(r);

    // read
    faults.set(Op::Read, "read-me");
    let path = p("read-me");
    let r = bounded("read", move || fs::read(path));
    assert_eq!(errno_of(&r), Some(libc::EIO), "read: {r:?}");
    faults.clear();
    assert_eq!(
        fs::read(p("read-me")).unwrap(),
        b"read-me\n",
        "read after the fault"
    );

    // write: EIO at the write, or at the latest at fsync
    faults.set(Op::Write, "write-me");
    let path = p("write-me");
    let (wr, sync) = bounded("write", move || {
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        let wr = f.write_all_at(b"WRITE", 0);
        (wr, f.sync_all())
    });
    assert!(
        errno_of(&wr) == Some(libc::EIO) || errno_of(&sync) == Some(libc::EIO),
        "write: {wr:?}, fsync: {sync:?}"
    );
    faults.clear();
    fs::OpenOptions::new()
        .write(true)
        .open(p("write-me"))
        .and_then(|f| f.write_all_at(b"W", 0).and_then(|()| f.sync_all()))
        .expect("write after the fault");

    // fsync
    faults.set(Op::Fsync, "sync-me");
    let path = p("sync-me");
    let r = bounded("fsync", move || {
        let mut f = fs::OpenOptions::new().append(true).open(path)?;
        f.write_all(b"more\n")?;
        f.sync_all()
    });
    assert_eq!(errno_of(&r), Some(libc::EIO), "fsync: {r:?}");
    faults.clear();
    fs::File::open(p("sync-me"))
        .and_then(|f| f.sync_all())
        .expect("fsync after the fault");

    // rename of an upper file: EIO, both names as before
    faults.set(Op::Rename, "rename-me");
    let (a, b) = (p("rename-me"), p("renamed"));
    let r = bounded("rename", move || fs::rename(a, b));
    assert_eq!(errno_of(&r), Some(libc::EIO), "rename: {r:?}");
    assert_eq!(fs::read(p("rename-me")).unwrap(), b"rename-me\n");
    assert!(
        !p("renamed").exists(),
        "the new name shows after a failed rename"
    );
    faults.clear();
    fs::rename(p("rename-me"), p("renamed")).expect("rename after the fault");

    // copy-up whose final rename into the upper fails: the lower file stays as it was
    faults.set(Op::Rename, "lower-copied");
    let path = p("lower-copied");
    let r = bounded("copy-up", move || {
        fs::OpenOptions::new()
            .append(true)
            .open(path)?
            .write_all(b"x")
    });
    assert_eq!(errno_of(&r), Some(libc::EIO), "copy-up: {r:?}");
    assert_eq!(fs::read(p("lower-copied")).unwrap(), b"lower content\n");
    // copy-up whose data write fails (the copy is built in the work dir)
    faults.clear();
    faults.set(Op::Write, "/w/");
    let path = p("lower-renamed");
    let r = bounded("copy-up data", move || {
        fs::OpenOptions::new()
            .append(true)
            .open(path)?
            .write_all(b"x")
    });
    faults.clear();
    // The copy is built in the work dir, so its data write meets the fault: EIO, and the lower
    // file shows as it was.
    assert_eq!(errno_of(&r), Some(libc::EIO), "copy-up data: {r:?}");
    assert_eq!(fs::read(p("lower-renamed")).unwrap(), b"lower renamed\n");
    // rename of a lower file (copy-up, then rename) with every rename failing
    faults.set(Op::Rename, "/u/");
    let (a, b) = (p("keep"), p("kept"));
    let r = bounded("rename with copy-up", move || fs::rename(a, b));
    assert_eq!(errno_of(&r), Some(libc::EIO), "rename with copy-up: {r:?}");
    assert_eq!(fs::read(p("keep")).unwrap(), b"keep\n");
    assert!(!p("kept").exists());
    faults.clear();

    // Served throughout; everything works again on the same mount.
    assert!(
        alive(m.pid()) && m.is_mounted(),
        "daemon gone: {}",
        m.stderr()
    );
    let mut s = String::new();
    fs::File::open(p("lower-copied"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "lower content\n");
    fs::OpenOptions::new()
        .append(true)
        .open(p("lower-copied"))
        .and_then(|mut f| f.write_all(b"appended\n"))
        .expect("copy-up after the faults");
    fs::rename(p("keep"), p("kept")).expect("rename with copy-up after the faults");
    assert!(faults.hits.load(std::sync::atomic::Ordering::Relaxed) >= 6);
    let st = m.unmount().expect("daemon did not exit after the unmount");
    assert!(st.success(), "daemon exit {st}; stderr:\n{}", m.stderr());
    drop(m);

    // The next mount: no leftovers, the changes that succeeded kept, the lower untouched.
    let m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &[]);
    assert_eq!(
        work_leftovers(&w),
        Vec::<String>::new(),
        "work dir leftovers"
    );
    assert_eq!(
        fs::read(m.path("lower-copied")).unwrap(),
        b"lower content\nappended\n"
    );
    assert_eq!(fs::read(m.path("renamed")).unwrap(), b"rename-me\n");
    drop(m);
    assert_eq!(tree_snapshot(&l.lowers[0]), lower_before, "lower changed");
    drop(fault);
}
