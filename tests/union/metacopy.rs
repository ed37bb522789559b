//! Metadata-only copy-up (`--metacopy on`, the kernel's `metacopy=on`): a change of owner,
//! mode, times or xattrs, a rename or a link copies the inode but not the data; the data
//! follows at the first data write. Compared with kernel overlayfs mounted `metacopy=on`:
//! what the mount shows (content, attributes, block count), and the upper tree it leaves
//! (`data=<metacopy>` marks a file whose data is still below, and redirects of moved copies).

use crate::common::*;
use crate::need_root;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn opts() -> Opts {
    Opts {
        metacopy: true,
        ..Default::default()
    }
}

/// A big-enough lower file (several blocks) with metadata a copy must keep, in a merged dir.
fn layers() -> Layers {
    let l = Layers::new(2);
    l.lower(1).file("d/other", "below");
    let top = l.lower(0);
    let data: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    top.file("d/f", &data);
    top.chmod("d/f", 0o640).chown("d/f", 1000, 1000);
    top.xattr("d/f", "user.x", b"ux");
    top.mtime("d/f", 1_500_000_000, 1);
    top.dir("e");
    l
}

/// What the mount shows of `rel`: attributes, block count, data, xattrs.
fn look(c: &mut Ctx, rel: &str) {
    c.stat(rel);
    let blocks = fs::symlink_metadata(c.p(rel)).map(|m| m.blocks());
    c.val(&format!("blocks {rel}"), blocks.map_err(|e| errno_name(&e)));
    c.read(rel);
    c.xattrs(rel);
}

fn append(c: &mut Ctx, rel: &str) {
    let r = fs::OpenOptions::new()
        .append(true)
        .open(c.p(rel))
        .and_then(|mut f| f.write_all(b"+tail"));
    c.must("append", r);
}

/// `op` moves the file from `d/f` to `after`; checked before and after a data write, and
/// the upper tree either way.
fn case(after: &'static str, op: fn(&mut Ctx), then_write: bool) {
    let l = layers();
    let p = Pair::with_opts(&l, &opts());
    p.check(|c| {
        c.remember_ino("f", "d/f");
        op(c);
        look(c, after);
        c.same_ino("f", after);
        c.mtime(after);
        if then_write {
            append(c, after);
            look(c, after);
            c.same_ino("f", after);
        }
        c.list("d");
    });
    p.check_uppers();
}

fn chmod(c: &mut Ctx) {
    let r = fs::set_permissions(c.p("d/f"), fs::Permissions::from_mode(0o600));
    c.must("chmod", r);
}
fn chown(c: &mut Ctx) {
    let r = std::os::unix::fs::lchown(c.p("d/f"), Some(2000), Some(2000));
    c.must("chown", r);
}
fn touch(c: &mut Ctx) {
    let r = utimens(&c.p("d/f"), (1_600_000_000, 5), (1_600_000_000, 7));
    c.must("utimens", r);
}
fn setxattr(c: &mut Ctx) {
    let r = lsetxattr(&c.p("d/f"), "user.y", b"uy");
    c.must("setxattr", r);
}
fn removexattr(c: &mut Ctx) {
    let r = lremovexattr(&c.p("d/f"), "user.x");
    c.must("removexattr", r);
}
fn rename_same_dir(c: &mut Ctx) {
    let r = fs::rename(c.p("d/f"), c.p("d/g"));
    c.must("rename", r);
}
fn rename_other_dir(c: &mut Ctx) {
    let r = fs::rename(c.p("d/f"), c.p("e/g"));
    c.must("rename", r);
}
fn link_other_dir(c: &mut Ctx) {
    let r = fs::hard_link(c.p("d/f"), c.p("e/g"));
    c.must("link", r);
    look(c, "d/f");
}

macro_rules! metacopy_test {
    ($name:ident, $name_w:ident, $after:expr, $op:expr) => {
        #[test]
        fn $name() {
            need_root!();
            case($after, $op, false);
        }
        #[test]
        fn $name_w() {
            need_root!();
            case($after, $op, true);
        }
    };
}

metacopy_test!(metacopy_chmod, metacopy_chmod_then_write, "d/f", chmod);
metacopy_test!(metacopy_chown, metacopy_chown_then_write, "d/f", chown);
metacopy_test!(metacopy_touch, metacopy_touch_then_write, "d/f", touch);
metacopy_test!(
    metacopy_setxattr,
    metacopy_setxattr_then_write,
    "d/f",
    setxattr
);
metacopy_test!(
    metacopy_removexattr,
    metacopy_removexattr_then_write,
    "d/f",
    removexattr
);
metacopy_test!(
    metacopy_rename_same_dir,
    metacopy_rename_same_dir_then_write,
    "d/g",
    rename_same_dir
);
metacopy_test!(
    metacopy_rename_other_dir,
    metacopy_rename_other_dir_then_write,
    "e/g",
    rename_other_dir
);
metacopy_test!(
    metacopy_link_other_dir,
    metacopy_link_other_dir_then_write,
    "e/g",
    link_other_dir
);

/// A reader opened on the lower data before the first write sees the written data after it
/// (the kernel reopens the real file when the data moved up); truncation copies no data.
#[test]
fn metacopy_reader_follows_data_copy_up_and_truncate() {
    need_root!();
    let l = layers();
    let p = Pair::with_opts(&l, &opts());
    p.check(|c| {
        chmod(c);
        let reader = c.must("open reader", fs::File::open(c.p("d/f")));
        append(c, "d/f");
        let mut got = Vec::new();
        let r = std::io::Read::read_to_end(&mut &reader, &mut got);
        c.must("read through the earlier fd", r);
        c.val("earlier fd sees", describe_bytes(&got));
        drop(reader);
        let r = fs::OpenOptions::new()
            .write(true)
            .open(c.p("d/other"))
            .and_then(|f| f.set_len(2));
        c.must("truncate other", r);
        chown(c);
        let r = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(c.p("d/f"));
        c.must("open O_TRUNC", r);
        look(c, "d/f");
        look(c, "d/other");
    });
    p.check_uppers();
}

/// The kernel mounts the upper layerfuse left (metadata-only copies, moved ones among them)
/// and reads every file's data from where the markers say; and layerfuse reads the kernel's.
#[test]
fn metacopy_upper_is_shared_with_the_kernel() {
    need_root!();
    for writer in [Impl::Layerfuse, Impl::Kernel] {
        let reader = if writer == Impl::Kernel {
            Impl::Layerfuse
        } else {
            Impl::Kernel
        };
        let l = layers();
        l.lower(0).file("d/h", "second file");
        let lowers_data = fs::read(l.lower(0).path("d/f")).unwrap();
        let m = TestMount::new(writer, l.clone_fresh(), &opts());
        fs::set_permissions(m.path("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::rename(m.path("d/h"), m.path("e/h")).unwrap();
        let up = m.upper.clone().unwrap();
        let marker = lgetxattr(&up.join("d/f"), "trusted.overlay.metacopy");
        assert!(marker.is_ok(), "{writer:?} made no metadata-only copy");
        let m = TestMount::new(reader, m.into_layers(), &opts());
        assert_eq!(fs::read(m.path("d/f")).unwrap(), lowers_data, "{reader:?}");
        assert_eq!(fs::read(m.path("e/h")).unwrap(), b"second file");
        let md = fs::metadata(m.path("d/f")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600, "{reader:?}");
        assert!(md.blocks() > 0, "{reader:?}: blocks of the data");
    }
}

/// Without metacopy=on, a metadata-only copy in the upper is refused (EPERM), as the kernel
/// refuses to follow it; with it, the data comes from the lower file. (Not compared: the
/// listing, where the kernel still names the refused entry and layerfuse, whose listings
/// carry each entry's attributes, leaves it out; see docs/conformance.md.)
#[test]
fn metacopy_marker_without_the_option_is_refused() {
    need_root!();
    let l = layers();
    let up = l.upper();
    up.file_bytes("d/f", &vec![0u8; 20_000]);
    up.chmod("d/f", 0o600);
    up.xattr("d/f", "trusted.overlay.metacopy", b"");
    for o in [Opts::default(), opts()] {
        let p = Pair::with_opts(&l, &o);
        p.check(|c| look(c, "d/f"));
    }
}
