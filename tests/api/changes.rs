//! Changes to lower entries: copy-up (data, metadata), rename (files, directories
//! with a redirect), hard links (kept one inode through copy-up).

use crate::fixture::{Dirs, exists, upper_whiteout};
use layerfuse::overlay::{Errno, SetAttr, oflag, rename_flag};
use std::fs;

#[test]
fn writing_a_lower_file_copies_it_up_whole_and_leaves_the_lower_alone() {
    let d = Dirs::new(1);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let lower = d.file(Some(0), "dir/f", &data);
    let u = d.open();
    let before = u.stat("dir/f").expect("stat").ino;
    u.write("dir/f", 10, b"XY").expect("write");
    let mut want = data.clone();
    want[10..12].copy_from_slice(b"XY");
    assert_eq!(fs::read(d.upper().join("dir/f")).expect("upper copy"), want);
    assert_eq!(u.read("dir/f").expect("read back"), want);
    assert_eq!(fs::read(lower).expect("lower"), data);
    // The copy keeps the lower file's inode number (its origin is recorded).
    assert_eq!(u.stat("dir/f").expect("stat").ino, before);
}

#[test]
fn opening_a_lower_file_for_reading_copies_nothing() {
    let d = Dirs::new(1);
    d.file(Some(0), "dir/f", b"data");
    let u = d.open();
    let fh = u.open("dir/f", oflag::RDONLY).expect("open");
    u.ov.release(fh);
    assert!(!exists(&d.upper(), "dir"), "a read-only open copied up");
}

#[test]
fn truncating_through_open_copies_no_data() {
    let d = Dirs::new(1);
    d.file(Some(0), "f", b"old contents");
    let u = d.open();
    let fh = u
        .open("f", oflag::WRONLY | oflag::TRUNC)
        .expect("open O_TRUNC");
    u.ov.release(fh);
    assert_eq!(fs::read(d.upper().join("f")).expect("upper"), b"");
    assert_eq!(u.stat("f").expect("stat").size, 0);
}

#[test]
fn chmod_of_a_lower_file_copies_it_up_with_the_new_mode() {
    let d = Dirs::new(1);
    d.file(Some(0), "f", b"data");
    let u = d.open();
    let ino = u.stat("f").expect("stat").ino;
    let a =
        u.ov.setattr(
            ino,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .expect("chmod");
    assert_eq!(a.perm & 0o7777, 0o600);
    use std::os::unix::fs::PermissionsExt;
    let md = fs::metadata(d.upper().join("f")).expect("copied up");
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    assert_eq!(fs::read(d.upper().join("f")).expect("upper"), b"data");
}

#[test]
fn renaming_a_lower_file_moves_its_copy_and_whites_out_the_old_name() {
    let d = Dirs::new(1);
    d.file(Some(0), "a/f", b"moved data");
    d.dir(Some(0), "b");
    let u = d.open();
    u.rename("a/f", "b/g", 0).expect("rename");
    assert_eq!(u.stat("a/f").err(), Some(Errno::ENOENT));
    assert_eq!(u.read("b/g").expect("b/g"), b"moved data");
    assert!(upper_whiteout(&d, "a/f"));
    assert_eq!(u.names("a").expect("list a"), Vec::<String>::new());
}

#[test]
fn rename_noreplace_refuses_an_existing_target() {
    let d = Dirs::new(1);
    d.file(Some(0), "x", b"x");
    d.file(Some(0), "y", b"y");
    let u = d.open();
    assert_eq!(
        u.rename("x", "y", rename_flag::NOREPLACE).err(),
        Some(Errno::EEXIST)
    );
    assert_eq!(u.read("y").expect("y"), b"y");
    assert_eq!(u.read("x").expect("x"), b"x");
}

/// renameat2's EXCHANGE (Linux only).
#[cfg(target_os = "linux")]
#[test]
fn rename_exchange_swaps_two_lower_files() {
    let d = Dirs::new(1);
    d.file(Some(0), "x", b"x");
    d.file(Some(0), "y", b"y");
    let u = d.open();
    u.rename("x", "y", rename_flag::EXCHANGE).expect("exchange");
    assert_eq!(u.read("x").expect("x"), b"y");
    assert_eq!(u.read("y").expect("y"), b"x");
}

#[test]
fn renaming_a_lower_directory_keeps_its_lower_content_under_the_new_name() {
    let d = Dirs::new(2);
    d.file(Some(1), "old/deep", b"1");
    d.file(Some(0), "old/high", b"2");
    let u = d.open();
    u.rename("old", "new", 0).expect("rename dir");
    assert_eq!(u.stat("old").err(), Some(Errno::ENOENT));
    assert_eq!(u.names("new").expect("list new"), ["deep", "high"]);
    assert_eq!(u.read("new/deep").expect("deep"), b"1");
    assert!(upper_whiteout(&d, "old"));
}

#[test]
fn renaming_a_lower_directory_without_redirects_is_exdev() {
    let d = Dirs::new(1);
    d.file(Some(0), "old/f", b"1");
    let mut cfg = d.config(true);
    cfg.redirect_dir = false;
    let u = d.open_with(&cfg);
    assert_eq!(u.rename("old", "new", 0).err(), Some(Errno::EXDEV));
    assert_eq!(u.names("old").expect("still there"), ["f"]);
}

#[test]
fn a_hard_link_through_the_union_is_one_inode_under_two_names() {
    let d = Dirs::new(1);
    d.dir(Some(0), "d");
    let u = d.open();
    let a = u.create("d/a", b"linked").expect("create");
    let b = u.link("d/a", "d/b").expect("link");
    assert_eq!(a.ino, b.ino);
    assert_eq!(u.stat("d/a").expect("a").nlink, 2);
    u.write("d/b", 0, b"L").expect("write through b");
    assert_eq!(u.read("d/a").expect("a"), b"Linked");
}

#[test]
fn lower_hard_links_stay_one_inode_through_a_copy_up() {
    let d = Dirs::new(1);
    let first = d.file(Some(0), "one", b"shared");
    fs::hard_link(&first, d.lower(0).join("two")).expect("lower hard link");
    let u = d.open();
    let (one, two) = (u.stat("one").expect("one"), u.stat("two").expect("two"));
    assert_eq!(one.ino, two.ino);
    assert_eq!(one.nlink, 2);
    u.write("one", 0, b"S").expect("write through one");
    assert_eq!(u.read("two").expect("two"), b"Shared");
    assert_eq!(u.stat("two").expect("two").ino, one.ino);
    assert_eq!(fs::read(first).expect("lower"), b"shared");
}

#[test]
fn linking_a_lower_file_copies_it_up_first() {
    let d = Dirs::new(1);
    let lower = d.file(Some(0), "f", b"data");
    let u = d.open();
    let l = u.link("f", "g").expect("link");
    assert_eq!(l.nlink, 2);
    assert_eq!(u.read("g").expect("g"), b"data");
    assert!(exists(&d.upper(), "f") && exists(&d.upper(), "g"));
    assert_eq!(fs::read(lower).expect("lower"), b"data");
}
