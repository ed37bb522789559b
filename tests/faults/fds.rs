//! The daemon out of file descriptors: started with RLIMIT_NOFILE lowered (`prlimit`), it
//! serves lookups and stats of ten times as many files as it may hold fds (no fd per inode),
//! answers EMFILE/ENFILE when callers hold more open files than it can back, keeps serving
//! meanwhile, and works again as soon as they close them.

use crate::common::*;
use crate::need_root;
use crate::support::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

const LIMIT: usize = 128;
const MANY: usize = 10 * LIMIT;

#[test]
fn out_of_fds_errors_reach_callers_and_recovery_follows() {
    need_root!();
    let l = Layers::new(1);
    for i in 0..MANY {
        l.lower(0).file(&format!("many/f{i}"), &format!("{i}\n"));
    }
    l.lower(0).file("keep", "keep\n");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg(format!("--nofile={LIMIT}:{LIMIT}"))
        .arg("--")
        .arg(layerfuse_bin())
        .arg("mount")
        .arg("--lower")
        .arg(&l.lowers[0])
        .arg("--upper")
        .arg(l.upper.as_ref().unwrap())
        .arg("--work")
        .arg(l.work.as_ref().unwrap())
        .arg("-f")
        .arg(&l.mnt);
    let m = Live::start(cmd, &l.mnt).unwrap_or_else(|e| panic!("mount under prlimit: {e}"));
    let pid = m.pid();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|x| x.starts_with("Max open files") && x.contains(&format!(" {LIMIT} "))),
        "the daemon does not run with the lowered limit:\n{limits}"
    );

    // Ten times the limit, looked up and stat'ed (the kernel keeps every inode), then read
    // one at a time, and a merged listing of all of them.
    for i in 0..MANY {
        let md = fs::metadata(m.path(&format!("many/f{i}"))).unwrap();
        assert_eq!(md.size(), format!("{i}\n").len() as u64);
    }
    for i in (0..MANY).step_by(7) {
        assert_eq!(
            fs::read_to_string(m.path(&format!("many/f{i}"))).unwrap(),
            format!("{i}\n")
        );
    }
    assert_eq!(fs::read_dir(m.path("many")).unwrap().count(), MANY);
    let held_fds = fd_count(pid);
    assert!(held_fds < LIMIT, "daemon holds {held_fds} fds");

    // Callers hold more files open than the daemon may back: some opens fail with
    // EMFILE/ENFILE, none with anything else.
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for i in 0..2 * LIMIT {
        // A lower file (daemon-served) and an upper one (passthrough: the daemon opens the
        // backing file too).
        let p = if i % 2 == 0 {
            m.path(&format!("many/f{i}"))
        } else {
            m.path(&format!("new{i}"))
        };
        let r = if i % 2 == 0 {
            fs::File::open(&p)
        } else {
            fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&p)
        };
        match r {
            Ok(f) => held.push(f),
            Err(e) => refused.push(e.raw_os_error().unwrap_or(0)),
        }
    }
    assert!(
        !refused.is_empty(),
        "no open was refused: the limit did not bite"
    );
    refused.sort();
    refused.dedup();
    assert!(
        refused
            .iter()
            .all(|e| *e == libc::EMFILE || *e == libc::ENFILE),
        "opens refused with errnos {refused:?} (expected EMFILE {}/ENFILE {})",
        libc::EMFILE,
        libc::ENFILE
    );
    // Meanwhile the daemon serves what needs no new fd, and stays up.
    assert!(fs::metadata(m.path("many/f1")).is_ok());
    assert!(alive(pid) && m.is_mounted(), "daemon gone: {}", m.stderr());

    // Fds free up: everything works again without a remount.
    drop(held);
    let free = wait_for(DEADLINE, || fd_count(pid) < LIMIT / 2);
    assert!(
        free,
        "daemon still holds {} fds after every close",
        fd_count(pid)
    );
    assert_eq!(fs::read_to_string(m.path("keep")).unwrap(), "keep\n");
    fs::write(m.path("keep"), b"copied up\n").expect("copy-up after recovery");
    assert_eq!(fs::read_to_string(m.path("keep")).unwrap(), "copied up\n");
    fs::create_dir(m.path("dir-after")).expect("mkdir after recovery");
    let mut again = Vec::new();
    for i in 0..LIMIT / 4 {
        again.push(fs::File::open(m.path(&format!("many/f{i}"))).expect("open after recovery"));
    }
    drop(again);
    assert!(alive(pid) && m.is_mounted(), "daemon gone: {}", m.stderr());
}
