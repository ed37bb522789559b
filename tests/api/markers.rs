//! The kernel's own markers (Linux): lower whiteouts as 0/0 devices, opaque and
//! redirect xattrs, what the union writes into the upper, and which xattrs it hides.
//! With `userxattr` the markers are `user.overlay.*`, and a 0/0 device is a whiteout
//! any user may make (Linux 5.8+), so these need no privilege, except the
//! `trusted.overlay.*` check (CAP_SYS_ADMIN): without root it fails under `CI=true`
//! and is skipped with a line otherwise.

use crate::common::{lgetxattr, llistxattr, lsetxattr, makedev, mknod};
use crate::fixture::{Dirs, upper_whiteout};
use layerfuse::overlay::Errno;
use std::ffi::OsStr;

fn root_or_skip(what: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root (CI=true: not skipped)"
    );
    eprintln!("skipped: {what} needs root");
    false
}

#[test]
fn a_lower_0_0_device_is_a_whiteout() {
    let d = Dirs::new(2);
    d.file(Some(1), "d/gone", b"below");
    d.file(Some(1), "d/kept", b"below");
    let high = d.dir(Some(0), "d");
    mknod(&high.join("gone"), libc::S_IFCHR | 0o644, makedev(0, 0)).expect("whiteout device");
    let u = d.open();
    assert_eq!(u.stat("d/gone").err(), Some(Errno::ENOENT));
    assert_eq!(u.names("d").expect("list"), ["kept"]);
}

#[test]
fn a_lower_opaque_xattr_hides_the_layers_below() {
    let d = Dirs::new(2);
    d.file(Some(1), "d/below", b"1");
    let dir = d
        .file(Some(0), "d/own", b"2")
        .parent()
        .expect("d")
        .to_path_buf();
    lsetxattr(&dir, "user.overlay.opaque", b"y").expect("opaque xattr");
    let u = d.open();
    assert_eq!(u.names("d").expect("list"), ["own"]);
    assert_eq!(u.stat("d/below").err(), Some(Errno::ENOENT));
}

#[test]
fn a_lower_redirect_xattr_finds_the_directory_under_its_old_name() {
    let d = Dirs::new(2);
    d.file(Some(1), "old/deep", b"1");
    let new = d.dir(Some(0), "new");
    lsetxattr(&new, "user.overlay.redirect", b"old").expect("redirect xattr");
    d.file(Some(0), "new/high", b"2");
    let u = d.open();
    assert_eq!(u.names("new").expect("list"), ["deep", "high"]);
    assert_eq!(u.read("new/deep").expect("deep"), b"1");
}

#[test]
fn a_directory_made_over_a_whiteout_is_marked_opaque_in_the_upper() {
    let d = Dirs::new(1);
    d.file(Some(0), "d/a", b"1");
    let u = d.open();
    u.unlink("d/a").expect("unlink");
    u.rmdir("d").expect("rmdir");
    assert!(upper_whiteout(&d, "d"));
    u.mkdir("d").expect("mkdir");
    assert_eq!(
        lgetxattr(&d.upper().join("d"), "user.overlay.opaque").expect("opaque marker"),
        b"y"
    );
    assert_eq!(u.names("d").expect("list"), Vec::<String>::new());
}

#[test]
fn renaming_a_lower_directory_records_a_redirect_in_the_upper() {
    let d = Dirs::new(1);
    d.file(Some(0), "a/old/f", b"1");
    d.dir(Some(0), "b");
    let u = d.open();
    u.rename("a/old", "b/new", 0).expect("rename");
    let r = lgetxattr(&d.upper().join("b/new"), "user.overlay.redirect").expect("redirect");
    assert_eq!(
        r, b"/a/old",
        "a move to another parent records the path from the root"
    );
    assert_eq!(u.names("b/new").expect("list"), ["f"]);
}

#[test]
fn the_unions_markers_are_hidden_and_its_namespace_is_escaped() {
    let d = Dirs::new(1);
    d.file(Some(0), "d/a", b"1");
    let u = d.open();
    u.unlink("d/a").expect("unlink");
    u.rmdir("d").expect("rmdir");
    u.mkdir("d").expect("mkdir: an opaque dir");
    assert!(
        !u.xattr_names("d")
            .expect("listxattr")
            .iter()
            .any(|n| n.starts_with("user.overlay.")),
        "a marker shows through the union"
    );
    let ino = u.stat("d").expect("d").ino;
    assert_eq!(
        u.ov.getxattr(ino, OsStr::new("user.overlay.opaque")).err(),
        Some(Errno::ENODATA)
    );
    // An xattr in the union's namespace, set through it, is the caller's: stored
    // escaped, shown as set, and it does not make the directory anything.
    u.ov.setxattr(ino, OsStr::new("user.overlay.mine"), b"v", 0)
        .expect("setxattr");
    assert_eq!(
        u.ov.getxattr(ino, OsStr::new("user.overlay.mine"))
            .expect("get"),
        b"v"
    );
    assert_eq!(u.xattr_names("d").expect("list"), ["user.overlay.mine"]);
    let stored = llistxattr(&d.upper().join("d")).expect("upper xattrs");
    assert!(
        stored.contains(&"user.overlay.overlay.mine".to_string()),
        "not stored escaped: {stored:?}"
    );
}

#[test]
fn trusted_markers_are_hidden_and_user_xattrs_copied_up() {
    if !root_or_skip("trusted.overlay.* markers") {
        return;
    }
    let d = Dirs::new(1);
    let f = d.file(Some(0), "d/f", b"1");
    lsetxattr(&f, "user.note", b"kept").expect("user xattr");
    let u = d.open_with(&d.config(false));
    let ino = u.stat("d/f").expect("f").ino;
    u.ov.setxattr(ino, OsStr::new("user.more"), b"2", 0)
        .expect("setxattr copies up");
    let upper = d.upper().join("d/f");
    assert_eq!(lgetxattr(&upper, "user.note").expect("copied"), b"kept");
    let stored = llistxattr(&upper).expect("upper xattrs");
    assert!(
        stored.iter().any(|n| n.starts_with("trusted.overlay.")),
        "the copy carries no trusted.overlay marker (origin): {stored:?}"
    );
    assert_eq!(
        u.xattr_names("d/f").expect("list"),
        ["user.more", "user.note"]
    );
}

/// The layer store keeps one inode per content, hard-linked into every layer that holds
/// it, and records in each directory what the layer's tar said of its files
/// (`.wh..wh..lfmeta`): the union shows the tar's link count, not the shared inode's.
#[test]
fn a_store_record_gives_a_deduplicated_file_its_own_link_count() {
    use layerfuse::layer::storemeta::{RECORD_NAME, StoredFile, encode};
    use layerfuse::overlay::Timespec;
    let d = Dirs::new(2);
    // One object shared by two layers: `a` and its tar hard link `b` in l0, `x` in l1.
    let a = d.file(Some(0), "d/a", b"shared");
    std::fs::hard_link(&a, d.lower(0).join("d/b")).expect("tar hard link");
    d.dir(Some(1), "e");
    std::fs::hard_link(&a, d.lower(1).join("e/x")).expect("other layer's name");
    d.file(Some(0), "d/plain", b"not in the record");
    std::fs::hard_link(d.lower(0).join("d/plain"), d.lower(0).join("d/plain2")).expect("link");
    let entry = |name: &str, nlink| StoredFile {
        name: name.as_bytes().to_vec(),
        mode: 0o100_644,
        uid: 0,
        gid: 0,
        atime: Timespec { sec: 1, nsec: 0 },
        mtime: Timespec { sec: 1, nsec: 0 },
        nlink,
        file: 7,
    };
    std::fs::write(
        d.lower(0).join("d").join(RECORD_NAME),
        encode(&[entry("a", 2), entry("b", 2)]),
    )
    .expect("record");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&a).expect("object").nlink(),
        3,
        "the shared inode's"
    );
    let u = d.open();
    assert_eq!(u.stat("d/a").expect("stat d/a").nlink, 2, "the tar's count");
    assert_eq!(u.stat("d/b").expect("stat d/b").nlink, 2);
    let ino = u.stat("d/a").expect("stat d/a").ino;
    assert_eq!(u.ov.getattr(ino, None).expect("getattr").nlink, 2);
    assert_eq!(
        u.stat("d/plain").expect("stat").nlink,
        2,
        "not in the record"
    );
    assert!(
        !u.names("d")
            .expect("list")
            .iter()
            .any(|n| n.starts_with(".wh.")),
        "the record is never shown"
    );
}
