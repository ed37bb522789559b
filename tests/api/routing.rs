//! Where a name is found: the upper before the lowers, a higher lower before a deeper
//! one, whiteouts and opaque directories hiding what is below, merged listings.
//! The lowers here use the OCI markers (`.wh.NAME`, `.wh..wh..opq`), plain files any
//! platform can hold; the kernel's own lower markers are in `markers.rs`.

use crate::fixture::{Dirs, exists, is_dir, upper_whiteout};
use layerfuse::overlay::Errno;

#[test]
fn the_upper_wins_over_the_lowers_and_a_higher_lower_over_a_deeper_one() {
    let d = Dirs::new(2);
    d.file(Some(1), "a", b"deep a");
    d.file(Some(0), "a", b"high a");
    d.file(Some(1), "b", b"deep b");
    d.file(None, "b", b"upper b");
    d.file(Some(1), "c", b"deep c");
    let u = d.open();
    assert_eq!(u.read("a").expect("a"), b"high a");
    assert_eq!(u.read("b").expect("b"), b"upper b");
    assert_eq!(u.read("c").expect("c"), b"deep c");
    assert_eq!(u.stat("missing").err(), Some(Errno::ENOENT));
}

#[test]
fn a_directory_in_several_layers_lists_the_union_of_their_names() {
    let d = Dirs::new(2);
    d.file(Some(1), "d/deep", b"1");
    d.file(Some(1), "d/both", b"deep");
    d.file(Some(0), "d/both", b"high");
    d.file(Some(0), "d/high", b"2");
    d.file(None, "d/up", b"3");
    let u = d.open();
    assert_eq!(
        u.names("d").expect("list d"),
        ["both", "deep", "high", "up"]
    );
    assert_eq!(u.read("d/both").expect("both"), b"high");
}

#[test]
fn a_lower_whiteout_hides_the_name_below_and_is_never_shown() {
    let d = Dirs::new(2);
    d.file(Some(1), "d/gone", b"below");
    d.file(Some(1), "d/kept", b"below");
    d.file(Some(0), "d/.wh.gone", b"");
    let u = d.open();
    assert_eq!(u.stat("d/gone").err(), Some(Errno::ENOENT));
    assert_eq!(u.names("d").expect("list d"), ["kept"]);
    assert_eq!(u.stat("d/.wh.gone").err(), Some(Errno::ENOENT));
}

#[test]
fn an_opaque_lower_directory_hides_everything_below_it() {
    let d = Dirs::new(2);
    d.file(Some(1), "d/below", b"1");
    d.file(Some(0), "d/.wh..wh..opq", b"");
    d.file(Some(0), "d/own", b"2");
    let u = d.open();
    assert_eq!(u.names("d").expect("list d"), ["own"]);
    assert_eq!(u.stat("d/below").err(), Some(Errno::ENOENT));
}

#[test]
fn a_file_above_a_directory_hides_the_directory() {
    let d = Dirs::new(2);
    d.file(Some(1), "x/inside", b"1");
    d.file(Some(0), "x", b"a file");
    let u = d.open();
    assert!(!is_dir(&u.stat("x")));
    assert_eq!(u.read("x").expect("x"), b"a file");
    assert_eq!(u.stat("x/inside").err(), Some(Errno::ENOTDIR));
}

#[test]
fn removing_a_lower_file_leaves_a_whiteout_in_the_upper_and_the_lower_untouched() {
    let d = Dirs::new(1);
    let lower = d.file(Some(0), "d/f", b"lower");
    d.file(Some(0), "d/other", b"o");
    let u = d.open();
    u.unlink("d/f").expect("unlink");
    assert_eq!(u.stat("d/f").err(), Some(Errno::ENOENT));
    assert_eq!(u.names("d").expect("list d"), ["other"]);
    assert!(upper_whiteout(&d, "d/f"), "no whiteout in the upper");
    assert_eq!(std::fs::read(lower).expect("lower file"), b"lower");
    // A new file of that name replaces the whiteout.
    u.create("d/f", b"new").expect("create over the whiteout");
    assert_eq!(u.read("d/f").expect("d/f"), b"new");
    assert!(!upper_whiteout(&d, "d/f"));
}

#[test]
fn removing_an_upper_only_file_leaves_no_whiteout() {
    let d = Dirs::new(1);
    d.dir(Some(0), "d");
    let u = d.open();
    u.create("d/f", b"x").expect("create");
    u.unlink("d/f").expect("unlink");
    assert!(!exists(&d.upper(), "d/f"), "something left in the upper");
    assert!(!upper_whiteout(&d, "d/f"));
}

#[test]
fn a_directory_made_again_over_a_removed_lower_one_is_opaque() {
    let d = Dirs::new(1);
    d.file(Some(0), "d/a", b"1");
    d.file(Some(0), "d/b", b"2");
    let u = d.open();
    assert_eq!(u.rmdir("d").err(), Some(Errno::ENOTEMPTY));
    u.unlink("d/a").expect("unlink a");
    u.unlink("d/b").expect("unlink b");
    u.rmdir("d").expect("rmdir");
    assert_eq!(u.stat("d").err(), Some(Errno::ENOENT));
    assert!(upper_whiteout(&d, "d"));
    u.mkdir("d").expect("mkdir again");
    assert_eq!(u.names("d").expect("list d"), Vec::<String>::new());
    assert_eq!(u.stat("d/a").err(), Some(Errno::ENOENT));
}

#[test]
fn a_new_entry_in_a_lower_directory_makes_its_parents_in_the_upper_with_their_modes() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dirs::new(1);
    let dir = d.dir(Some(0), "a/b");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let u = d.open();
    u.create("a/b/new", b"n").expect("create");
    let made = std::fs::metadata(d.upper().join("a/b")).expect("parent copied up");
    assert_eq!(made.permissions().mode() & 0o7777, 0o750);
    assert_eq!(u.names("a/b").expect("list"), ["new"]);
}
