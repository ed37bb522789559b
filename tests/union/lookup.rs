//! Lookup and listing: topmost wins, merging down to the first opaque directory, whiteouts in
//! every format, d_type, nlink, d_ino, statfs, stable listings.

use crate::common::*;
use crate::need_root;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

#[test]
fn topmost_layer_wins() {
    need_root!();
    let l = Layers::new(3);
    l.lower(0).file("a", "top");
    l.lower(1).file("a", "middle").file("b", "middle-b");
    l.lower(2)
        .file("a", "bottom")
        .file("b", "bottom-b")
        .file("c", "bottom-c");
    l.lower(0).file("d", "lower-d").chmod("d", 0o600);
    l.upper().file("d", "upper-d").chmod("d", 0o640);
    differential(&l, |c| {
        for n in ["a", "b", "c", "d", "nope"] {
            c.read(n);
            c.stat(n);
        }
        c.list("");
    });
}

#[test]
fn non_directory_hides_everything_below() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0).file("x", "file over dir");
    l.lower(1).file("x/inside", "hidden");
    l.lower(0).file("y/one", "1");
    l.lower(1).file("y", "file under dir");
    l.lower(0).symlink("z", "x");
    l.lower(1).file("z/inside", "hidden");
    differential(&l, |c| {
        c.stat("x");
        c.read("x");
        c.stat("x/inside");
        c.stat("y");
        c.list("y");
        c.stat("z");
        c.stat("z/inside");
        c.list("");
    });
}

#[test]
fn directories_merge_across_all_layers() {
    need_root!();
    let l = Layers::new(3);
    l.lower(0).file("d/a", "a0").file("d/same", "top");
    l.lower(1)
        .file("d/b", "b1")
        .file("d/same", "mid")
        .file("d/sub/x", "x1");
    l.lower(2).file("d/c", "c2").file("d/sub/y", "y2");
    l.upper().file("d/u", "up");
    differential(&l, |c| {
        c.list("d");
        c.list("d/sub");
        c.read("d/same");
        c.read("d/sub/y");
        c.stat("d");
        c.stat("d/sub");
    });
}

fn opaque_case(mark: impl Fn(&Layers)) {
    let l = Layers::new(3);
    l.lower(0).file("d/a", "a0");
    l.lower(1).file("d/b", "b1");
    l.lower(2)
        .file("d/c", "c2")
        .file("d/b", "b2")
        .file("d/deep/z", "z");
    mark(&l);
    differential(&l, |c| {
        c.list("d");
        c.stat("d/c");
        c.stat("d/deep");
        c.read("d/b");
        c.stat("d");
    });
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "layers in the kernel's xattr format (opaque/whiteout/redirect markers): unread on the portable path"
)]
fn merge_stops_at_kernel_opaque_dir() {
    need_root!();
    opaque_case(|l| {
        l.lower(1).opaque("d");
    });
}

#[test]
fn merge_stops_at_oci_opaque_dir() {
    need_root!();
    opaque_case(|l| {
        l.lower(1).oci_opaque("d");
    });
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "layers in the kernel's xattr format (opaque/whiteout/redirect markers): unread on the portable path"
)]
fn opaque_dir_in_upper_hides_all_lowers() {
    need_root!();
    opaque_case(|l| {
        l.upper().opaque("d").file("d/u", "u");
    });
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "layers in the kernel's xattr format (opaque/whiteout/redirect markers): unread on the portable path"
)]
fn opaque_marker_in_topmost_lower_keeps_own_entries() {
    need_root!();
    opaque_case(|l| {
        l.lower(0).opaque("d");
    });
}

fn whiteout_case(mark: impl Fn(&Layers)) {
    let l = Layers::new(3);
    l.lower(0).file("keep", "k");
    l.lower(1)
        .file("f", "hidden file")
        .file("d/x", "hidden dir content");
    l.lower(1).symlink("s", "keep");
    l.lower(2)
        .file("f", "also hidden")
        .file("g", "hidden by middle");
    l.lower(1).file("sub/gone", "x").file("sub/stays", "y");
    mark(&l);
    differential(&l, |c| {
        for n in ["f", "d", "d/x", "s", "g", "sub/gone", "sub/stays"] {
            c.stat(n);
        }
        c.list("");
        c.list("sub");
        c.ok("open f", open(&c.p("f"), libc::O_RDONLY, 0));
    });
}

#[test]
fn kernel_whiteouts_hide_names() {
    need_root!();
    whiteout_case(|l| {
        l.lower(0)
            .whiteout("f")
            .whiteout("d")
            .whiteout("s")
            .whiteout("sub/gone");
        l.lower(1).whiteout("g");
    });
}

#[test]
fn oci_whiteouts_hide_names() {
    need_root!();
    whiteout_case(|l| {
        l.lower(0)
            .oci_whiteout("f")
            .oci_whiteout("d")
            .oci_whiteout("s")
            .oci_whiteout("sub/gone");
        l.lower(1).oci_whiteout("g");
    });
}

#[test]
fn upper_whiteouts_hide_names() {
    need_root!();
    whiteout_case(|l| {
        l.upper()
            .whiteout("f")
            .whiteout("d")
            .whiteout("s")
            .whiteout("g");
        l.upper().whiteout("sub/gone");
    });
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "layers in the kernel's xattr format (opaque/whiteout/redirect markers): unread on the portable path"
)]
fn xattr_whiteouts_hide_names() {
    need_root!();
    // The kernel 6.7+ format: zero-size file with trusted.overlay.whiteout in an `opaque=x` dir.
    let l = Layers::new(2);
    l.lower(1)
        .file("d/gone", "hidden")
        .file("d/stays", "visible");
    l.lower(0).file("d/mine", "top").xattr_whiteout("d/gone");
    differential(&l, |c| {
        c.list("d");
        c.stat("d/gone");
        c.stat("d/stays");
        c.read("d/mine");
    });
}

#[test]
fn aufs_metadata_names_never_shown() {
    need_root!();
    // `.wh..wh.*` entries (aufs bookkeeping such as .wh..wh.plnk) are never shown, in any layer.
    let l = Layers::new(2);
    l.lower(0)
        .file("d/real", "r")
        .dir("d/.wh..wh.plnk")
        .file("d/.wh..wh.aufs", "");
    l.lower(1)
        .file("d/other", "o")
        .oci_whiteout("d/nothing-below");
    differential(&l, |c| {
        c.list("d");
        c.stat("d/.wh..wh.plnk");
        c.stat("d/.wh..wh.aufs");
        c.stat("d/.wh.nothing-below");
    });
}

#[test]
fn d_type_is_that_of_the_winning_entry() {
    need_root!();
    let l = Layers::new(2);
    l.lower(1)
        .file("was_file_now_dir", "x")
        .dir("was_dir_now_file");
    l.lower(0)
        .dir("was_file_now_dir")
        .file("was_dir_now_file", "f");
    l.lower(0)
        .file("reg", "r")
        .dir("dir")
        .symlink("lnk", "reg")
        .fifo("fifo");
    l.lower(1).chardev("chr", 1, 3);
    l.lower(1).file("lnk2", "x");
    l.upper().symlink("lnk2", "reg");
    differential(&l, |c| {
        c.list("");
        for n in [
            "reg",
            "dir",
            "lnk",
            "fifo",
            "chr",
            "lnk2",
            "was_file_now_dir",
            "was_dir_now_file",
        ] {
            c.stat(n);
        }
    });
}

#[test]
fn merged_dir_nlink_is_one_single_layer_dir_real() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0).dir("merged/a").dir("merged/b");
    l.lower(1).dir("merged/c");
    l.lower(1).dir("single/a").dir("single/b").dir("single/c");
    l.upper().dir("uponly/a").dir("uponly/b");
    differential(&l, |c| {
        c.stat("merged");
        c.stat("single");
        c.stat("uponly");
        c.stat("merged/a");
    });
}

/// d_ino in listings equals st_ino. Asserted on the implementation under test directly: the
/// kernel itself breaks this rule for a merged subdirectory of the root (it lists the lower's
/// d_ino while stat reports another number), so it cannot be the oracle here. The rest of the
/// observations are still compared with the kernel.
#[test]
fn d_ino_equals_st_ino() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0).file("d/a", "a").dir("d/sub").symlink("d/l", "a");
    l.lower(1)
        .file("d/b", "b")
        .dir("d/sub2")
        .file("d/sub/deep", "x");
    l.upper().file("d/u", "u");
    let p = Pair::new(&l);
    let steps = |c: &mut Ctx| {
        c.dino_matches_stino("");
        c.dino_matches_stino("d");
        c.dino_matches_stino("d/sub");
        // After a copy-up the numbers must still agree.
        c.must(
            "chmod d/b",
            fs::set_permissions(
                c.p("d/b"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            ),
        );
        c.dino_matches_stino("d");
    };
    let mut o = Ctx::new(&p.other);
    steps(&mut o);
    let bad: Vec<_> = o
        .log
        .iter()
        .filter(|l| !l.ends_with(": []") && !l.ends_with(": ok"))
        .collect();
    assert!(
        bad.is_empty(),
        "{:?}: d_ino differs from st_ino: {bad:?}",
        p.other.kind
    );
}

#[test]
fn st_dev_is_the_mounts_and_st_ino_unique() {
    need_root!();
    let l = Layers::new(3);
    l.lower(0).file("a", "a").dir("d");
    l.lower(1).file("b", "b").file("d/x", "x");
    l.lower(2).file("c", "c").file("d/y", "y");
    l.upper().file("u", "u");
    let p = Pair::new(&l);
    p.check(|c| {
        let names = ["", "a", "b", "c", "u", "d", "d/x", "d/y"];
        let mds: Vec<_> = names
            .iter()
            .map(|n| fs::symlink_metadata(c.p(n)).unwrap())
            .collect();
        let root_dev = mds[0].dev();
        c.val(
            "all st_dev equal to the root's",
            mds.iter().all(|m| m.dev() == root_dev),
        );
        let mut seen = HashMap::new();
        for (n, m) in names.iter().zip(&mds) {
            seen.entry(m.ino()).or_insert_with(Vec::new).push(*n);
        }
        let dups: Vec<_> = seen.values().filter(|v| v.len() > 1).collect();
        c.val("names sharing an st_ino", dups);
    });
}

#[test]
fn lower_hard_links_keep_their_nlink() {
    need_root!();
    let l = Layers::new(2);
    l.lower(1)
        .file("h1", "linked")
        .hardlink("h2", "h1")
        .hardlink("sub/h3", "h1");
    let p = Pair::new(&l);
    p.check(|c| {
        c.stat("h1");
        c.stat("h2");
        c.remember_ino("h1", "h1");
        c.same_ino("h1", "h2");
        c.same_ino("h1", "sub/h3");
    });
}

#[test]
fn statfs_reports_upper_figures_and_namelen_255() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0).file("a", "a");
    let p = Pair::new(&l);
    p.check(|c| {
        let s = statfs(&c.p("")).unwrap();
        // f_type legitimately differs (overlay vs fuse magic); free counts move with other tests.
        c.val("f_namelen", s.f_namelen);
        c.val("f_bsize", s.f_bsize);
        c.val("f_blocks", s.f_blocks);
        c.val("f_files", s.f_files);
    });
}

#[test]
fn statfs_read_only_mount_reports_top_lower() {
    need_root!();
    let l = Layers::read_only(2);
    l.lower(0).file("a", "a");
    let p = Pair::new(&l);
    p.check(|c| {
        let s = statfs(&c.p("")).unwrap();
        c.val("f_namelen", s.f_namelen);
        c.val("f_bsize", s.f_bsize);
        c.val("f_blocks", s.f_blocks);
    });
}

#[test]
fn symlinks_resolve_through_the_union() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0)
        .symlink("rel", "d/target")
        .symlink("abs", "/nonexistent/x")
        .symlink("dirlink", "d");
    l.lower(1).file("d/target", "through link");
    differential(&l, |c| {
        c.stat("rel");
        c.read("rel");
        c.stat("abs");
        c.read("abs");
        c.list("dirlink");
        c.read("dirlink/target");
    });
}

/// A big merged directory (lower and upper entries) and an upper-only one, both read with a tiny
/// getdents buffer while entries are created and removed through another path. Every entry that
/// existed at open and was not removed must be returned exactly once.
#[test]
fn listing_stable_while_directory_changes() {
    need_root!();
    let l = Layers::new(2);
    for i in 0..120 {
        l.lower(1)
            .file(&format!("merged/lower1-entry-with-a-long-name-{i:03}"), "x");
        l.lower(0)
            .file(&format!("merged/lower0-entry-with-a-long-name-{i:03}"), "x");
    }
    for i in 0..40 {
        l.upper()
            .file(&format!("merged/upper-entry-with-a-long-name-{i:03}"), "x");
    }
    let p = Pair::new(&l);
    p.check(|c| {
        c.must("mkdir plain", fs::create_dir(c.p("plain")));
        for i in 0..200 {
            fs::write(
                c.p(&format!("plain/created-entry-with-a-long-name-{i:03}")),
                b"x",
            )
            .unwrap();
        }
        for dir in ["merged", "plain"] {
            let before: Vec<String> = fs::read_dir(c.p(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let fd = open(&c.p(dir), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
            let mut seen: Vec<String> = Vec::new();
            let mut removed = Vec::new();
            let mut calls = 0;
            loop {
                let batch = getdents(&fd, 600).unwrap();
                if batch.is_empty() {
                    break;
                }
                calls += 1;
                seen.extend(
                    batch
                        .iter()
                        .map(|d| String::from_utf8_lossy(&d.name).into_owned()),
                );
                // Change the directory between calls: add entries, remove one already returned
                // and one not yet returned (sorted listing order is unrelated to readdir order).
                if calls <= 5 {
                    for k in 0..3 {
                        fs::write(c.p(&format!("{dir}/new-{calls}-{k}")), b"n").unwrap();
                    }
                    let victim = before
                        .iter()
                        .find(|n| !removed.contains(*n) && seen.contains(n))
                        .cloned();
                    let not_yet = before
                        .iter()
                        .rev()
                        .find(|n| !removed.contains(*n) && !seen.contains(n))
                        .cloned();
                    for v in victim.into_iter().chain(not_yet) {
                        fs::remove_file(c.p(&format!("{dir}/{v}"))).unwrap();
                        removed.push(v);
                    }
                }
            }
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for n in &seen {
                *counts.entry(n.as_str()).or_default() += 1;
            }
            let mut repeated: Vec<_> = counts
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, _)| *k)
                .collect();
            repeated.sort();
            let mut skipped: Vec<_> = before
                .iter()
                .filter(|n| !removed.contains(n) && !counts.contains_key(n.as_str()))
                .collect();
            skipped.sort();
            c.val(
                &format!("{dir}: listing took several getdents calls"),
                calls > 3,
            );
            c.val(&format!("{dir}: repeated entries"), repeated);
            c.val(&format!("{dir}: skipped unchanged entries"), skipped);
            c.val(
                &format!("{dir}: . and .. returned"),
                counts.contains_key(".") && counts.contains_key(".."),
            );
        }
    });
}

/// telldir/seekdir through libc's DIR stream: after seeking back, the rest of the listing is the
/// same as the first time; rewinddir gives the whole listing again.
#[test]
fn seekdir_telldir_rewinddir() {
    need_root!();
    let l = Layers::new(2);
    for i in 0..60 {
        l.lower(i % 2).file(
            &format!("d/entry-number-{i:03}-with-padding-to-fill-buffers"),
            "x",
        );
    }
    l.upper().file("d/up", "u");
    let p = Pair::new(&l);
    p.check(|c| {
        let path = cpath(&c.p("d"));
        // SAFETY: opendir/readdir/telldir/seekdir/closedir on one DIR* owned by this block;
        // d_name is a NUL-terminated array inside the returned dirent.
        let (first, again, whole1, whole2) = unsafe {
            let dir = libc::opendir(path.as_ptr());
            assert!(!dir.is_null());
            let read_all = |dir: *mut libc::DIR, max: usize| {
                let mut v = Vec::new();
                while v.len() < max {
                    let e = libc::readdir64(dir);
                    if e.is_null() {
                        break;
                    }
                    v.push(
                        std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
                v
            };
            let head = read_all(dir, 17);
            let pos = libc::telldir(dir);
            let first = read_all(dir, usize::MAX);
            libc::seekdir(dir, pos);
            let again = read_all(dir, usize::MAX);
            libc::rewinddir(dir);
            let whole2 = read_all(dir, usize::MAX);
            libc::closedir(dir);
            let mut whole1 = head;
            whole1.extend(first.iter().cloned());
            (first, again, whole1, whole2)
        };
        c.val("entries after telldir position", first.len());
        c.val("seekdir back gives the same rest", first == again);
        c.val("rewinddir gives the same listing", whole1 == whole2);
        c.val("total entries", whole1.len());
    });
}

/// A stack deep enough (12 lowers) that lookups go through the whole-stack name map:
/// names first held at every depth, whiteouts of three formats part-way down, an opaque
/// directory in the middle, a file over a directory, a name only at the bottom.
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "layers in the kernel's xattr format (opaque/whiteout/redirect markers): unread on the portable path"
)]
fn deep_stack_lookups_and_listings() {
    need_root!();
    let n = 12;
    let l = Layers::new(n);
    for i in 0..n {
        l.lower(i)
            .file(&format!("only{i}"), &format!("only in {i}"))
            .file("every", &format!("every {i}"))
            .file(&format!("d/f{i}"), &format!("d {i}"))
            .file("d/shared", &format!("shared {i}"));
    }
    l.lower(3).whiteout("gone-k");
    l.lower(9).file("gone-k", "hidden by a kernel whiteout");
    l.lower(4).xattr_whiteout("x/gone-x");
    l.lower(4).file("x/kept", "kept");
    l.lower(8).file("x/gone-x", "hidden by an xattr whiteout");
    l.lower(5).oci_whiteout("gone-o");
    l.lower(10).file("gone-o", "hidden by an OCI whiteout");
    l.lower(6).opaque("d");
    l.lower(2).file("fod", "file over dir");
    l.lower(7).file("fod/inside", "hidden");
    l.lower(11).file("bottom/deep/leaf", "at the bottom");
    l.upper().file("d/up", "up");
    differential(&l, |c| {
        c.list("");
        c.list("d");
        c.list("x");
        for name in [
            "every",
            "only0",
            "only5",
            "only11",
            "gone-k",
            "gone-o",
            "x/gone-x",
            "x/kept",
            "d/f2",
            "d/f6",
            "d/f7",
            "d/f11",
            "d/shared",
            "d/up",
            "fod",
            "fod/inside",
            "bottom/deep/leaf",
            "nowhere",
        ] {
            c.stat(name);
            c.read(name);
        }
        c.list("bottom/deep");
    });
}
