//! Layers changed or removed under a live mount (undefined for kernel overlayfs, which only
//! promises not to crash): every call gets an answer, success or a clear errno (ENOENT,
//! ESTALE, EIO), never a hang or a crash; what succeeded is there (a file created reads
//! back); the rest of the union keeps working, and the unmount is clean (the daemon exits 0).

use crate::common::*;
use crate::need_root;
use crate::support::*;
use std::fs;
use std::io;
use std::path::Path;

/// Success or one of the errnos a vanished layer entry may give.
#[track_caller]
fn clear<T>(what: &str, r: io::Result<T>, log: &mut Vec<String>) {
    let s = outcome(&r);
    assert!(
        matches!(s.as_str(), "ok" | "ENOENT" | "ESTALE" | "EIO"),
        "{what}: {s} (expected ok, ENOENT, ESTALE or EIO)"
    );
    log.push(format!("{what}: {s}"));
}

/// Everything a program may try in a directory that vanished from under the union.
fn poke(m: &Path, dir: &str, log: &mut Vec<String>) {
    let p = |r: &str| m.join(dir).join(r);
    clear("stat dir", fs::symlink_metadata(m.join(dir)), log);
    clear(
        "list dir",
        fs::read_dir(m.join(dir)).map(|d| d.count()),
        log,
    );
    clear("stat file", fs::symlink_metadata(p("f")), log);
    clear("read file", fs::read(p("f")), log);
    clear(
        "open file for write",
        fs::OpenOptions::new().write(true).open(p("f")),
        log,
    );
    created(
        "create",
        &p("new"),
        fs::write(p("new"), b"n"),
        Some(b"n".as_slice()),
        log,
    );
    created(
        "mkdir",
        &p("newdir"),
        fs::create_dir(p("newdir")),
        None,
        log,
    );
    clear("rename file", fs::rename(p("f"), p("g")), log);
    clear("unlink file", fs::remove_file(p("g")), log);
    clear(
        "rename dir",
        fs::rename(m.join(dir), m.join(format!("{dir}.moved"))),
        log,
    );
    let r = fs::remove_dir_all(m.join(dir));
    if r.as_ref().err().and_then(io::Error::raw_os_error) == Some(libc::ENOTEMPTY) {
        // Only true if something is still listed there (the lower part of a merged dir whose
        // upper part vanished, say).
        let left: Vec<_> = fs::read_dir(m.join(dir))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !left.is_empty(),
            "rmdir {dir}: ENOTEMPTY but nothing listed"
        );
        log.push(format!("rmdir: ENOTEMPTY, listed {left:?}"));
    } else {
        clear("rmdir", r, log);
    }
}

fn union_still_serves(m: &Live) {
    served(m);
    assert_eq!(fs::read_to_string(m.path("keep")).unwrap(), "keep\n");
    fs::write(m.path("after"), b"after\n").expect("write a new file after the change");
    assert_eq!(fs::read_to_string(m.path("after")).unwrap(), "after\n");
    fs::remove_file(m.path("after")).unwrap();
}

/// After the upper itself was changed from outside the daemon's view of it may be stale:
/// new files at the root must still get an answer, success or a clear errno.
fn union_still_answers(m: &Live, log: &mut Vec<String>) {
    served(m);
    clear("read a lower file", fs::read(m.path("keep")), log);
    let at = m.path("after");
    let r = fs::write(&at, b"after\n");
    if created("create at root", &at, r, Some(b"after\n".as_slice()), log) {
        let r = fs::remove_file(&at);
        assert!(r.is_ok(), "remove the file just created: {}", outcome(&r));
        let r = fs::symlink_metadata(&at);
        assert_eq!(outcome(&r), "ENOENT", "stat after the remove");
    }
}

/// Something made at `path` (a file holding `data`, or a directory): success or a clear
/// errno, and once it succeeded it is there, as made, whatever else was changed from
/// outside (a create once succeeded and the file read back ENOENT). Returns whether it
/// was made.
#[track_caller]
fn created(
    what: &str,
    path: &Path,
    r: io::Result<()>,
    data: Option<&[u8]>,
    log: &mut Vec<String>,
) -> bool {
    let made = r.is_ok();
    clear(what, r, log);
    if !made {
        return false;
    }
    let st = fs::symlink_metadata(path);
    assert!(
        st.as_ref()
            .is_ok_and(|m| m.is_dir() == data.is_none() && m.is_file() == data.is_some()),
        "{what} succeeded, then stat {}: {}",
        path.display(),
        match &st {
            Ok(m) => format!("{:?}", m.file_type()),
            Err(_) => outcome(&st),
        }
    );
    if let Some(data) = data {
        let back = fs::read(path);
        assert!(
            back.as_ref().is_ok_and(|b| b == data),
            "{what} succeeded, then reading {} back: {}",
            path.display(),
            match &back {
                Ok(b) => format!("{} bytes", b.len()),
                Err(_) => outcome(&back),
            }
        );
    }
    true
}

fn served(m: &Live) {
    assert!(
        m.is_mounted(),
        "the mount went away; stderr:\n{}",
        m.stderr()
    );
    assert!(alive(m.pid()), "the daemon died; stderr:\n{}", m.stderr());
}

fn clean_unmount(mut m: Live) {
    let st = m.unmount().expect("daemon did not exit after the unmount");
    assert!(st.success(), "daemon exit {st}; stderr:\n{}", m.stderr());
    assert!(mounts_at(&m.mnt).is_empty(), "still mounted");
}

fn setup() -> Layers {
    let l = Layers::new(2);
    l.lower(0).file("keep", "keep\n").file("ld/f", "f\n");
    l.lower(1).file("ld/below", "below\n").file("gone/f", "f\n");
    l
}

fn mount(l: &Layers) -> Live {
    layerfuse_on(
        &l.lowers,
        l.upper.as_ref().unwrap(),
        l.work.as_ref().unwrap(),
        &l.mnt,
        &[],
    )
}

#[test]
fn lower_dir_deleted_under_a_live_mount() {
    need_root!();
    let l = setup();
    let m = mount(&l);
    // Known to the kernel and the daemon before it goes (looked up, listed, opened).
    let held = fs::File::open(m.path("ld/f")).unwrap();
    assert_eq!(fs::read_dir(m.path("ld")).unwrap().count(), 2);
    assert!(m.path("gone/f").exists());
    fs::remove_dir_all(l.lowers[0].join("ld")).unwrap();
    fs::remove_dir_all(l.lowers[1].join("gone")).unwrap();
    let mut log = Vec::new();
    poke(&m.mnt, "ld", &mut log);
    poke(&m.mnt, "gone", &mut log);
    drop(held);
    union_still_serves(&m);
    // A lower layer's whole root removed.
    fs::remove_dir_all(&l.lowers[1]).unwrap();
    clear(
        "stat below",
        fs::symlink_metadata(m.path("ld/below")),
        &mut log,
    );
    clear(
        "list root",
        fs::read_dir(&m.mnt).map(|d| d.count()),
        &mut log,
    );
    union_still_serves(&m);
    eprintln!("{}", log.join("\n"));
    clean_unmount(m);
}

#[test]
fn upper_dir_removed_under_a_live_mount() {
    need_root!();
    let l = setup();
    let m = mount(&l);
    fs::create_dir(m.path("ud")).unwrap();
    fs::write(m.path("ud/f"), b"f\n").unwrap();
    // A copied-up lower dir, and the upper's part of a merged one.
    fs::write(m.path("ld/f"), b"changed\n").unwrap();
    let held = fs::OpenOptions::new()
        .append(true)
        .open(m.path("ud/f"))
        .unwrap();
    let upper = l.upper.clone().unwrap();
    fs::remove_dir_all(upper.join("ud")).unwrap();
    fs::remove_dir_all(upper.join("ld")).unwrap();
    let mut log = Vec::new();
    clear("write to a held file", write_more(&held), &mut log);
    drop(held);
    poke(&m.mnt, "ud", &mut log);
    poke(&m.mnt, "ld", &mut log);
    union_still_answers(&m, &mut log);
    // The whole upper dir removed: writes fail clearly, reads of the lowers go on.
    fs::remove_dir_all(&upper).unwrap();
    let (x, xd) = (m.path("x"), m.path("xd"));
    created(
        "create at root",
        &x,
        fs::write(&x, b"x"),
        Some(b"x".as_slice()),
        &mut log,
    );
    created("mkdir at root", &xd, fs::create_dir(&xd), None, &mut log);
    clear("copy-up", fs::write(m.path("keep"), b"k"), &mut log);
    assert!(alive(m.pid()), "the daemon died; stderr:\n{}", m.stderr());
    assert_eq!(
        fs::read_to_string(l.lowers[0].join("keep")).unwrap(),
        "keep\n"
    );
    eprintln!("{}", log.join("\n"));
    // Put an upper dir back so the mount can be used again: it is not required to, but the
    // unmount must be clean either way.
    fs::create_dir(&upper).unwrap();
    clean_unmount(m);
}

/// Appends a line to a held file and syncs it.
fn write_more(mut f: &fs::File) -> io::Result<()> {
    use std::io::Write;
    f.write_all(b"more\n")?;
    f.sync_all()
}
