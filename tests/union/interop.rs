//! Interoperability of the upper format: an upper written by the implementation under test,
//! then mounted by kernel overlayfs, must show the same tree as an upper written by the kernel
//! (and the other way round).

use crate::common::*;
use crate::need_root;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

fn interop_layers() -> Layers {
    let l = Layers::new(2);
    l.lower(1)
        .file("keep/a", "a")
        .file("keep/b", "b")
        .file("gone_file", "g")
        .file("gone_dir/x", "x");
    l.lower(1)
        .file("moved_dir/inner", "i")
        .file("moved_dir/sub/deep", "d")
        .file("replaced/old", "o");
    l.lower(0)
        .file("edit", "lower edit")
        .file("keep/c", "c")
        .file("chmod_me", "m");
    l.lower(0)
        .file("hl1", "linked")
        .hardlink("hl2", "hl1")
        .dir("target_parent");
    l.lower(0).xattr("edit", "user.kept", b"yes");
    l
}

/// Changes that exercise every upper-format feature: copy-up, whiteouts, opaque dirs,
/// redirects (same parent and other parent), escaped overlay xattrs, new entries, hard links.
fn script(c: &mut Ctx) {
    c.must(
        "append to edit",
        fs::OpenOptions::new()
            .append(true)
            .open(c.p("edit"))
            .and_then(|mut f| f.write_all(b"+more")),
    );
    c.must("unlink gone_file", fs::remove_file(c.p("gone_file")));
    c.must("rm gone_dir", fs::remove_dir_all(c.p("gone_dir")));
    c.must(
        "rename moved_dir",
        fs::rename(c.p("moved_dir"), c.p("moved_here")),
    );
    c.must(
        "rename keep into target_parent",
        fs::rename(c.p("keep"), c.p("target_parent/keep2")),
    );
    c.must("rm replaced", fs::remove_dir_all(c.p("replaced")));
    c.must("mkdir replaced (opaque)", fs::create_dir(c.p("replaced")));
    c.must("create replaced/new", fs::write(c.p("replaced/new"), "new"));
    c.must(
        "chmod",
        fs::set_permissions(c.p("chmod_me"), fs::Permissions::from_mode(0o600)),
    );
    c.must(
        "nested overlay xattr",
        lsetxattr(&c.p("edit"), "trusted.overlay.nested", b"inner"),
    );
    c.must("write through hl1", fs::write(c.p("hl1"), "changed"));
    c.must("new file", fs::write(c.p("brand_new"), "bn"));
    c.must("new symlink", std::os::unix::fs::symlink("edit", c.p("sl")));
    c.must(
        "unlink in moved dir",
        fs::remove_file(c.p("moved_here/inner")),
    );
}

/// Everything visible in the mount: listings, stats, contents, xattrs.
fn observe(c: &mut Ctx, rel: &str) {
    c.list(rel);
    let dir = c.p(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let child = if rel.is_empty() {
            n.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", n.to_string_lossy())
        };
        c.stat(&child);
        c.xattrs(&child);
        let md = fs::symlink_metadata(c.p(&child)).unwrap();
        if md.is_dir() {
            observe(c, &child);
        } else if md.is_file() {
            c.read(&child);
        }
    }
}

fn run(writer: Impl, reader: Impl) -> Vec<String> {
    let tpl = interop_layers();
    let opts = Opts::default();
    let m = TestMount::new(writer, tpl.clone_fresh(), &opts);
    let mut c = Ctx::new(&m);
    script(&mut c);
    let layers = m.into_layers();
    let m = TestMount::new(reader, layers, &opts);
    let mut c = Ctx::new(&m);
    observe(&mut c, "");
    c.log
}

#[test]
fn upper_written_by_layerfuse_reads_same_in_kernel() {
    need_root!();
    let oracle = run(Impl::Kernel, Impl::Kernel);
    let subject = run(impl_under_test(), Impl::Kernel);
    assert_same(
        "kernel's view of the upper",
        impl_under_test(),
        &oracle,
        &subject,
    );
}

#[test]
fn upper_written_by_kernel_reads_same_in_layerfuse() {
    need_root!();
    let oracle = run(Impl::Kernel, Impl::Kernel);
    let subject = run(Impl::Kernel, impl_under_test());
    assert_same(
        "view of a kernel-written upper",
        impl_under_test(),
        &oracle,
        &subject,
    );
}
