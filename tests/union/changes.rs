//! Changes through the mount: create/mkdir/mknod/symlink/link, whiteouts left by unlink/rmdir,
//! rename (flags, directories, redirect_dir), setattr, xattrs, names and path lengths, EROFS.

use crate::common::*;
use crate::need_root;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;

fn base_layers() -> Layers {
    let l = Layers::new(2);
    l.lower(1)
        .file("lower_file", "lf")
        .file("d/in_lower", "x")
        .file("merged/bottom", "b");
    l.lower(0)
        .file("merged/top", "t")
        .dir("lower_dir/sub")
        .file("lower_dir/sub/f", "f");
    l.upper().file("upper_file", "uf").dir("upper_dir");
    l
}

#[test]
fn create_entries_of_every_type() {
    need_root!();
    let l = base_layers();
    differential(&l, |c| {
        c.must("create file", fs::write(c.p("new_file"), "new"));
        c.must("create in merged", fs::write(c.p("merged/new"), "n"));
        c.must(
            "create in lower-only dir",
            fs::write(c.p("lower_dir/sub/new"), "n"),
        );
        c.must("mkdir", fs::create_dir(c.p("new_dir")));
        c.must("mkdir in lower dir", fs::create_dir(c.p("d/newsub")));
        c.must("mkfifo", mknod(&c.p("fifo"), libc::S_IFIFO | 0o640, 0));
        c.must(
            "mknod chr 1:3",
            mknod(&c.p("null"), libc::S_IFCHR | 0o666, makedev(1, 3)),
        );
        c.must(
            "mknod regular",
            mknod(&c.p("regnod"), libc::S_IFREG | 0o600, 0),
        );
        c.must(
            "symlink",
            std::os::unix::fs::symlink("merged/top", c.p("sym")),
        );
        c.must(
            "link upper file",
            fs::hard_link(c.p("upper_file"), c.p("upper_link")),
        );
        c.must(
            "link lower file",
            fs::hard_link(c.p("lower_file"), c.p("d/lower_link")),
        );
        let sock = UnixListener::bind(c.p("sock"));
        let _sock = c.ok("bind unix socket", sock);
        for n in [
            "new_file",
            "merged/new",
            "lower_dir/sub/new",
            "new_dir",
            "d/newsub",
            "fifo",
            "null",
            "regnod",
            "sym",
            "upper_link",
            "upper_file",
            "d/lower_link",
            "lower_file",
            "sock",
        ] {
            c.stat(n);
        }
        c.remember_ino("u", "upper_file");
        c.same_ino("u", "upper_link");
        c.remember_ino("l", "lower_file");
        c.same_ino("l", "d/lower_link");
        c.read("sym");
        c.list("");
        c.list("merged");
        c.list("lower_dir/sub");
        c.ok(
            "create existing (O_EXCL)",
            open(
                &c.p("merged/bottom"),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            ),
        );
        c.ok("mkdir existing lower dir", fs::create_dir(c.p("lower_dir")));
        c.ok(
            "symlink over lower file",
            std::os::unix::fs::symlink("x", c.p("lower_file")),
        );
        c.ok(
            "link over existing",
            fs::hard_link(c.p("upper_file"), c.p("merged/top")),
        );
        c.ok("link a directory", fs::hard_link(c.p("d"), c.p("dlink")));
    });
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "a kernel 0/0 whiteout in the upper is replaced with RENAME_EXCHANGE (no renameat2 on the portable path)"
)]
fn create_over_whiteout_replaces_it() {
    need_root!();
    let l = Layers::new(2);
    l.lower(1)
        .file("f", "old")
        .file("s", "old")
        .file("p", "old");
    l.lower(0).whiteout("f").oci_whiteout("s").whiteout("p");
    l.upper().whiteout("u");
    l.lower(1).file("u", "old u");
    differential(&l, |c| {
        c.must("create f", fs::write(c.p("f"), "new f"));
        c.must("symlink s", std::os::unix::fs::symlink("f", c.p("s")));
        c.must("mkfifo p", mknod(&c.p("p"), libc::S_IFIFO | 0o644, 0));
        c.must("create u (upper whiteout)", fs::write(c.p("u"), "new u"));
        for n in ["f", "s", "p", "u"] {
            c.stat(n);
            c.in_upper(n);
        }
        c.read("f");
        c.read("u");
        c.list("");
    });
}

fn mkdir_over_whiteout(mark: impl Fn(&Layers)) {
    let l = Layers::new(2);
    l.lower(1)
        .file("d/old", "must not show")
        .file("d/sub/x", "x");
    mark(&l);
    differential(&l, |c| {
        c.must("mkdir d", fs::create_dir(c.p("d")));
        c.list("d");
        c.stat("d/old");
        c.stat("d");
        c.must("create d/new", fs::write(c.p("d/new"), "n"));
        c.list("d");
    });
}

#[test]
fn mkdir_over_kernel_whiteout_is_opaque() {
    need_root!();
    mkdir_over_whiteout(|l| {
        l.lower(0).whiteout("d");
    });
}

#[test]
fn mkdir_over_oci_whiteout_is_opaque() {
    need_root!();
    mkdir_over_whiteout(|l| {
        l.lower(0).oci_whiteout("d");
    });
}

#[test]
fn mkdir_after_rmdir_is_opaque() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("d/old", "x");
    differential(&l, |c| {
        c.must("unlink d/old", fs::remove_file(c.p("d/old")));
        c.must("rmdir d", fs::remove_dir(c.p("d")));
        c.in_upper("d");
        c.must("mkdir d", fs::create_dir(c.p("d")));
        c.list("d");
    });
}

#[test]
fn unlink_leaves_whiteout_only_where_a_lower_has_the_name() {
    need_root!();
    let l = base_layers();
    l.upper().file("merged/top", "upper copy over lower");
    differential(&l, |c| {
        c.must(
            "create then unlink",
            fs::write(c.p("tmp"), "t").and_then(|_| fs::remove_file(c.p("tmp"))),
        );
        for n in [
            "lower_file",
            "upper_file",
            "merged/top",
            "merged/bottom",
            "d/in_lower",
        ] {
            c.must(&format!("unlink {n}"), fs::remove_file(c.p(n)));
            c.stat(n);
        }
        c.ok("unlink missing", fs::remove_file(c.p("missing")));
        c.ok("unlink dir", fs::remove_file(c.p("d")));
        for n in [
            "tmp",
            "lower_file",
            "upper_file",
            "merged/top",
            "merged/bottom",
            "d/in_lower",
        ] {
            c.in_upper(n);
        }
        c.list("");
        c.list("merged");
    });
}

#[test]
fn rmdir_of_lower_and_merged_dirs() {
    need_root!();
    let l = Layers::new(2);
    // "looks_empty": merged, every lower entry hidden by a whiteout.
    l.lower(1)
        .file("looks_empty/a", "a")
        .file("looks_empty/b", "b");
    l.lower(0)
        .whiteout("looks_empty/a")
        .oci_whiteout("looks_empty/b");
    l.upper().whiteout("looks_empty/c");
    l.lower(1).file("looks_empty/c", "c");
    l.lower(1).file("not_empty/a", "a");
    l.lower(0).dir("not_empty");
    l.lower(0).dir("lower_empty");
    l.upper().dir("upper_empty");
    l.lower(1).file("opaque_over/x", "hidden");
    // In the format the union reads in a lower layer: the portable path reads no
    // xattrs (docs/design.md), so its opaque marker is the OCI one.
    if cfg!(feature = "portable") {
        l.lower(0).oci_opaque("opaque_over");
    } else {
        l.lower(0).opaque("opaque_over");
    }
    differential(&l, |c| {
        for n in [
            "looks_empty",
            "not_empty",
            "lower_empty",
            "upper_empty",
            "opaque_over",
        ] {
            c.ok(&format!("rmdir {n}"), fs::remove_dir(c.p(n)));
            c.stat(n);
            c.in_upper(n);
        }
        c.ok("rmdir a file", fs::remove_dir(c.p("not_empty/a")));
        c.list("");
        c.must("unlink not_empty/a", fs::remove_file(c.p("not_empty/a")));
        c.ok("rmdir not_empty now", fs::remove_dir(c.p("not_empty")));
        c.in_upper("not_empty");
    });
}

#[test]
fn rename_files() {
    need_root!();
    let l = base_layers();
    differential(&l, |c| {
        c.must(
            "rename lower file",
            fs::rename(c.p("lower_file"), c.p("renamed")),
        );
        c.must(
            "rename upper file into merged",
            fs::rename(c.p("upper_file"), c.p("merged/from_upper")),
        );
        c.must(
            "rename over lower file",
            fs::rename(c.p("merged/top"), c.p("merged/bottom")),
        );
        c.must(
            "rename across dirs",
            fs::rename(c.p("d/in_lower"), c.p("lower_dir/sub/moved")),
        );
        for n in [
            "lower_file",
            "renamed",
            "upper_file",
            "merged/from_upper",
            "merged/top",
            "merged/bottom",
            "d/in_lower",
            "lower_dir/sub/moved",
        ] {
            c.stat(n);
            c.in_upper(n);
        }
        c.read("merged/bottom");
        c.list("merged");
        c.ok("rename missing", fs::rename(c.p("missing"), c.p("x")));
        c.ok("rename file over dir", fs::rename(c.p("renamed"), c.p("d")));
        c.ok(
            "rename dir over file",
            fs::rename(c.p("upper_dir"), c.p("renamed")),
        );
        c.ok(
            "rename dir over non-empty merged dir",
            fs::rename(c.p("upper_dir"), c.p("merged")),
        );
    });
}

/// A rename onto a name removed before (a whiteout in the upper, in the kernel's format or
/// the portable path's OCI one): the entry takes the name and the whiteout goes, or moves to
/// the old name where a lower layer still has that one.
#[test]
fn rename_onto_a_removed_name() {
    need_root!();
    let l = base_layers();
    differential(&l, |c| {
        c.must("unlink lower file", fs::remove_file(c.p("lower_file")));
        c.must(
            "unlink merged/bottom",
            fs::remove_file(c.p("merged/bottom")),
        );
        c.must(
            "rename upper file onto the removed name",
            fs::rename(c.p("upper_file"), c.p("lower_file")),
        );
        c.must(
            "rename lower file onto the removed name",
            fs::rename(c.p("merged/top"), c.p("merged/bottom")),
        );
        for n in ["lower_file", "upper_file", "merged/top", "merged/bottom"] {
            c.stat(n);
            c.in_upper(n);
        }
        c.read("lower_file");
        c.read("merged/bottom");
        c.list("");
        c.list("merged");
    });
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "RENAME_EXCHANGE: FreeBSD and macOS have no renameat2, the portable path refuses it (EINVAL)"
)]
fn rename_noreplace_and_exchange() {
    need_root!();
    let l = base_layers();
    l.lower(0).file("x1", "x one").file("x2", "x two");
    differential(&l, |c| {
        let nr = libc::RENAME_NOREPLACE;
        c.ok(
            "noreplace onto lower-only name",
            renameat2(&c.p("upper_file"), &c.p("lower_file"), nr),
        );
        c.ok(
            "noreplace onto upper name",
            renameat2(&c.p("lower_file"), &c.p("upper_file"), nr),
        );
        c.ok(
            "noreplace onto lower dir",
            renameat2(&c.p("upper_file"), &c.p("d"), nr),
        );
        c.ok(
            "noreplace onto free name",
            renameat2(&c.p("lower_file"), &c.p("fresh"), nr),
        );
        c.ok(
            "exchange two lower files",
            renameat2(&c.p("x1"), &c.p("x2"), libc::RENAME_EXCHANGE),
        );
        c.read("x1");
        c.read("x2");
        c.in_upper("x1");
        c.in_upper("x2");
        c.ok(
            "exchange with missing",
            renameat2(&c.p("x1"), &c.p("nothing"), libc::RENAME_EXCHANGE),
        );
        c.ok(
            "exchange file and upper dir",
            renameat2(&c.p("upper_file"), &c.p("upper_dir"), libc::RENAME_EXCHANGE),
        );
        c.stat("upper_file");
        c.stat("upper_dir");
        c.stat("lower_file");
        c.stat("fresh");
        c.list("");
    });
}

#[test]
fn rename_whiteout_flag_is_einval() {
    need_root!();
    let l = base_layers();
    differential(&l, |c| {
        c.ok(
            "RENAME_WHITEOUT",
            renameat2(&c.p("upper_file"), &c.p("other"), libc::RENAME_WHITEOUT),
        );
        c.ok(
            "RENAME_WHITEOUT lower",
            renameat2(&c.p("lower_file"), &c.p("other"), libc::RENAME_WHITEOUT),
        );
        c.stat("upper_file");
        c.stat("other");
    });
}

/// Renaming a lower (or merged) directory: moved as a whole, upper gets overlay.redirect (bare
/// name in the same parent, absolute path otherwise) and a whiteout at the old name.
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "a renamed lower directory's redirect is an xattr: EXDEV on the portable path (redirect_dir=off)"
)]
fn rename_lower_directory_sets_redirect() {
    need_root!();
    let l = Layers::new(2);
    l.lower(1).file("dir/a", "a").file("dir/sub/deep", "deep");
    l.lower(0).file("dir/b", "b");
    l.lower(0).file("other/keep", "k");
    l.lower(1).file("dir2/x", "x");
    differential(&l, |c| {
        c.must("rename dir in place", fs::rename(c.p("dir"), c.p("moved")));
        c.must(
            "rename dir2 into other",
            fs::rename(c.p("dir2"), c.p("other/dir2")),
        );
        c.stat("dir");
        c.list("moved");
        c.list("moved/sub");
        c.read("moved/sub/deep");
        c.list("other/dir2");
        for n in ["dir", "moved", "moved/a", "other/dir2", "dir2"] {
            c.in_upper(n);
        }
        c.must("rename back", fs::rename(c.p("moved"), c.p("dir")));
        c.list("dir");
        c.must("write in moved dir", fs::write(c.p("other/dir2/new"), "n"));
        c.list("other/dir2");
    });
}

#[test]
fn rename_lower_directory_with_redirect_dir_off_is_exdev() {
    need_root!();
    let l = Layers::new(2);
    l.lower(1).file("dir/a", "a");
    l.lower(0).file("dir/b", "b").file("single/c", "c");
    let p = Pair::with_opts(
        &l,
        &Opts {
            redirect_dir_off: true,
            ..Opts::default()
        },
    );
    p.check(|c| {
        c.ok("rename merged dir", fs::rename(c.p("dir"), c.p("moved")));
        c.ok("rename lower dir", fs::rename(c.p("single"), c.p("moved2")));
        c.must("mkdir new", fs::create_dir(c.p("new")));
        c.must("create in new", fs::write(c.p("new/f"), "f"));
        c.ok("rename upper-only dir", fs::rename(c.p("new"), c.p("new2")));
        c.ok(
            "rename lower file still works",
            fs::rename(c.p("dir/a"), c.p("a")),
        );
        c.list("");
    });
    p.check_uppers();
}

#[test]
fn setattr_on_lower_and_upper_files() {
    need_root!();
    let l = base_layers();
    differential(&l, |c| {
        for n in ["lower_file", "upper_file", "lower_dir", "merged"] {
            c.must(
                &format!("chmod {n}"),
                fs::set_permissions(c.p(n), fs::Permissions::from_mode(0o711)),
            );
            c.must(
                &format!("chown {n}"),
                std::os::unix::fs::lchown(c.p(n), Some(1000), Some(1001)),
            );
            c.must(
                &format!("utimes {n}"),
                utimens(&c.p(n), (1_000_000_000, 10), (1_000_000_001, 20)),
            );
            c.stat(n);
            c.mtime(n);
        }
        c.must(
            "truncate grow",
            fs::OpenOptions::new()
                .write(true)
                .open(c.p("lower_file"))
                .and_then(|f| f.set_len(10)),
        );
        c.read("lower_file");
        c.must(
            "truncate shrink",
            fs::OpenOptions::new()
                .write(true)
                .open(c.p("upper_file"))
                .and_then(|f| f.set_len(1)),
        );
        c.read("upper_file");
        c.must(
            "symlink lchown",
            std::os::unix::fs::symlink("x", c.p("sl"))
                .and_then(|_| std::os::unix::fs::lchown(c.p("sl"), Some(5), Some(6))),
        );
        c.stat("sl");
        c.must(
            "chmod setuid+setgid+sticky",
            fs::set_permissions(c.p("upper_file"), fs::Permissions::from_mode(0o7755)),
        );
        c.stat("upper_file");
    });
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "xattrs: the portable path has none (docs/design.md)"
)]
fn xattrs_through_the_mount_and_hidden_overlay_xattrs() {
    need_root!();
    let l = Layers::new(2);
    l.lower(1)
        .file("d/f", "f")
        .xattr("d/f", "user.lower", b"from lower");
    l.lower(0).opaque("d2").file("d2/g", "g");
    l.lower(0)
        .file("esc", "e")
        .xattr("esc", "trusted.overlay.overlay.nested", b"escaped in layer");
    l.lower(1).xattr("d", "trusted.overlay.impure", b"y");
    differential(&l, |c| {
        c.xattrs("d/f");
        c.xattrs("d2");
        c.xattrs("d");
        c.xattrs("esc");
        c.ok(
            "get hidden opaque",
            lgetxattr(&c.p("d2"), "trusted.overlay.opaque"),
        );
        c.ok(
            "get escaped as overlay.nested",
            lgetxattr(&c.p("esc"), "trusted.overlay.nested")
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .map(|v| assert_eq!(v, "escaped in layer")),
        );
        c.ok("set user.a", lsetxattr(&c.p("d/f"), "user.a", b"1"));
        c.ok("set trusted.b", lsetxattr(&c.p("d/f"), "trusted.b", b"2"));
        c.ok(
            "set trusted.overlay.foo",
            lsetxattr(&c.p("d/f"), "trusted.overlay.foo", b"nested"),
        );
        c.ok(
            "set trusted.overlay.opaque on dir",
            lsetxattr(&c.p("d"), "trusted.overlay.opaque", b"y"),
        );
        c.xattrs("d/f");
        c.xattrs("d");
        c.list("d");
        c.ok("remove user.lower", lremovexattr(&c.p("d/f"), "user.lower"));
        c.ok("remove missing", lremovexattr(&c.p("d/f"), "user.none"));
        c.ok("get missing", lgetxattr(&c.p("d/f"), "user.none"));
        c.ok(
            "remove trusted.overlay.foo",
            lremovexattr(&c.p("d/f"), "trusted.overlay.foo"),
        );
        c.ok(
            "set trusted.overlay.bar",
            lsetxattr(&c.p("d/f"), "trusted.overlay.bar", b"kept"),
        );
        c.xattrs("d/f");
        c.ok(
            "user xattr on symlink",
            std::os::unix::fs::symlink("x", c.p("sl"))
                .and_then(|_| lsetxattr(&c.p("sl"), "user.x", b"1")),
        );
    });
}

#[test]
fn fstat_after_unlink_reports_nlink_zero() {
    need_root!();
    let l = base_layers();
    differential(&l, |c| {
        fs::write(c.p("new"), "n").unwrap();
        for n in ["new", "upper_file", "lower_file"] {
            let f = c.must(
                &format!("open {n}"),
                fs::OpenOptions::new().read(true).write(true).open(c.p(n)),
            );
            c.must(&format!("unlink {n}"), fs::remove_file(c.p(n)));
            let md = f.metadata();
            c.val(
                &format!("fstat {n} nlink"),
                md.as_ref().map(|m| m.nlink()).map_err(errno_name),
            );
            c.val(
                &format!("fstat {n} size"),
                md.as_ref().map(|m| m.size()).map_err(errno_name),
            );
            let mut f = f;
            c.ok(
                &format!("write to unlinked {n}"),
                f.write_all(b"still writable"),
            );
        }
    });
}

#[test]
fn mknod_whiteout_is_eperm() {
    need_root!();
    let l = base_layers();
    differential(&l, |c| {
        c.ok(
            "mknod c 0 0 new",
            mknod(&c.p("wh"), libc::S_IFCHR | 0o644, makedev(0, 0)),
        );
        c.ok(
            "mknod c 0 0 in merged",
            mknod(&c.p("merged/wh"), libc::S_IFCHR, makedev(0, 0)),
        );
        c.stat("wh");
        c.in_upper("wh");
    });
}

/// O_TMPFILE is a documented difference (docs/design.md): fuser 0.18 does not carry the
/// FUSE_TMPFILE request, so the kernel answers EOPNOTSUPP for it, as it does on any
/// filesystem without O_TMPFILE. The kernel's overlayfs supports it. Check that layerfuse
/// fails with exactly that errno (what applications test for) and that their usual
/// fallback — a named temporary file renamed into place — works there.
#[test]
fn o_tmpfile_is_refused_cleanly() {
    need_root!();
    let l = base_layers();
    let m = TestMount::layerfuse(l.clone_fresh(), &Opts::default());
    for dir in ["upper_dir", "merged"] {
        let r = open(&m.path(dir), libc::O_TMPFILE | libc::O_RDWR, 0o640);
        assert_eq!(
            r.map(|_| ()).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EOPNOTSUPP)),
            "O_TMPFILE in {dir}"
        );
        let named = m.path(&format!("{dir}/.tmp-fallback"));
        fs::write(&named, "anonymous").unwrap();
        fs::rename(&named, m.path(&format!("{dir}/linked"))).unwrap();
        assert_eq!(
            fs::read_to_string(m.path(&format!("{dir}/linked"))).unwrap(),
            "anonymous"
        );
    }
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "an OCI whiteout of a 252+ byte name (.wh.NAME) exceeds NAME_MAX: ENAMETOOLONG on the portable path"
)]
fn name_length_limits() {
    need_root!();
    let l = base_layers();
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    l.lower(0)
        .file(&format!("merged/{}", "l".repeat(255)), "long lower");
    differential(&l, |c| {
        c.ok("create 255", fs::write(c.p(&n255), "ok"));
        c.ok("create 256", fs::write(c.p(&n256), "no"));
        c.ok("mkdir 256", fs::create_dir(c.p(&format!("merged/{n256}"))));
        c.ok(
            "mkdir 255 in merged",
            fs::create_dir(c.p(&format!("merged/{n255}"))),
        );
        c.stat(&n255);
        c.stat(&n256);
        c.ok("rename to 256", fs::rename(c.p(&n255), c.p(&n256)));
        c.ok(
            "copy up 255-byte lower name",
            fs::set_permissions(
                c.p(&format!("merged/{}", "l".repeat(255))),
                fs::Permissions::from_mode(0o600),
            ),
        );
        c.ok(
            "unlink 255-byte lower name",
            fs::remove_file(c.p(&format!("merged/{}", "l".repeat(255)))),
        );
        c.list("merged");
    });
}

/// A path of about 4000 bytes (nested 200-byte names), created, stat'ed, renamed and removed;
/// and a deep lower path copied up.
#[test]
fn path_of_4000_bytes() {
    need_root!();
    let comp = |i: usize| format!("{i:02}{}", "p".repeat(198));
    let rel: Vec<String> = (0..20).map(comp).collect();
    let deep = rel.join("/");
    assert!(deep.len() > 4000);
    let l = Layers::new(1);
    l.lower(0)
        .file(&format!("lowerdeep/{deep}/f"), "deep lower");
    differential(&l, |c| {
        let mut p = String::from("deep");
        c.must("mkdir top", fs::create_dir(c.p(&p)));
        let mut ok = true;
        for r in &rel {
            p = format!("{p}/{r}");
            ok &= fs::create_dir(c.p(&p)).is_ok();
        }
        c.val("mkdir chain", ok);
        c.val("path length over 4000 bytes", p.len() > 4000);
        c.ok(
            "create file at depth",
            fs::write(c.p(&format!("{p}/f")), "deep"),
        );
        c.stat(&format!("{p}/f"));
        c.read(&format!("{p}/f"));
        c.ok(
            "rename at depth",
            fs::rename(c.p(&format!("{p}/f")), c.p(&format!("{p}/g"))),
        );
        c.stat(&format!("{p}/g"));
        c.ok("unlink at depth", fs::remove_file(c.p(&format!("{p}/g"))));
        let lf = format!("lowerdeep/{deep}/f");
        c.ok(
            "copy-up deep lower file",
            fs::OpenOptions::new()
                .append(true)
                .open(c.p(&lf))
                .and_then(|mut f| f.write_all(b"+")),
        );
        c.read(&lf);
        c.ok("remove deep tree", fs::remove_dir_all(c.p("deep")));
        c.stat("deep");
    });
}

/// Without an upper every modification fails with EROFS.
#[test]
fn read_only_mount_refuses_every_write() {
    need_root!();
    let l = Layers::read_only(2);
    l.lower(0).file("f", "f").dir("d");
    l.lower(1).file("d/g", "g").file("d/empty_later", "");
    let p = Pair::new(&l);
    p.check(|c| {
        let f = c.p("f");
        c.ok("create", fs::write(c.p("new"), "x"));
        c.ok("open O_WRONLY", open(&f, libc::O_WRONLY, 0));
        c.ok("open O_RDWR", open(&f, libc::O_RDWR, 0));
        c.ok("open O_TRUNC", open(&f, libc::O_WRONLY | libc::O_TRUNC, 0));
        c.ok("mkdir", fs::create_dir(c.p("nd")));
        c.ok("mknod fifo", mknod(&c.p("fifo"), libc::S_IFIFO | 0o644, 0));
        c.ok("symlink", std::os::unix::fs::symlink("f", c.p("sl")));
        c.ok("link", fs::hard_link(&f, c.p("hl")));
        c.ok("unlink", fs::remove_file(&f));
        c.ok("rmdir", fs::remove_dir(c.p("d")));
        c.ok("rename", fs::rename(&f, c.p("f2")));
        c.ok(
            "chmod",
            fs::set_permissions(&f, fs::Permissions::from_mode(0o600)),
        );
        c.ok("chown", std::os::unix::fs::lchown(&f, Some(1), Some(1)));
        c.ok("utimes", utimens(&f, (1, 1), (1, 1)));
        c.ok(
            "truncate",
            fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .and_then(|f| f.set_len(0)),
        );
        c.ok("setxattr", lsetxattr(&f, "user.x", b"1"));
        c.ok("removexattr", lremovexattr(&f, "user.x"));
        c.ok("open O_RDONLY", open(&f, libc::O_RDONLY, 0));
        c.read("f");
        c.list("d");
    });
}

/// fchmod, fchown, futimens and ftruncate through an fd whose file was unlinked, and whose
/// name was taken by a new entry of another type: the change goes to the open (orphan) file,
/// never to what now has its name.
#[test]
fn attribute_changes_through_fd_of_unlinked_file() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("d/f", "lower data");
    differential(&l, |c| {
        use std::os::fd::AsRawFd;
        let f = c.must(
            "open",
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(c.p("d/f")),
        );
        c.must("unlink", fs::remove_file(c.p("d/f")));
        c.must("mkdir at the old name", fs::create_dir(c.p("d/f")));
        let fd = f.as_raw_fd();
        // SAFETY: plain syscalls on an fd this closure owns.
        let r = unsafe { libc::fchmod(fd, 0o600) };
        c.val("fchmod", r);
        let r = unsafe { libc::fchown(fd, 1000, 1000) };
        c.val("fchown", r);
        let r = unsafe { libc::ftruncate(fd, 3) };
        c.val("ftruncate", r);
        let md = f.metadata().map(|m| {
            (
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.nlink(),
                m.len(),
                m.is_file(),
            )
        });
        c.val("fstat", md.map_err(|e| errno_name(&e)));
        c.stat("d/f");
        drop(f);
    });
}
