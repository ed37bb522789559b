//! Ownership options of the fuse-overlayfs command line (`uidmapping=`, `gidmapping=`,
//! `squash_to_root`): no kernel overlayfs equivalent, so these check layerfuse against
//! the rule itself — what the mount shows is the mapped id, what lands on disk is the
//! id mapped back.

use crate::common::*;
use crate::need_root;
use std::fs;
use std::os::unix::fs::{MetadataExt, lchown};

fn owner(p: &std::path::Path) -> (u32, u32) {
    let md = fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid())
}

#[test]
fn id_mappings_show_mapped_owners_and_store_them_mapped_back() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0)
        .file("mapped", "m")
        .chown("mapped", 100005, 100007)
        .file("unmapped", "u")
        .chown("unmapped", 5, 5);
    let opts = Opts {
        extra_args: [
            "--uidmapping",
            ":0:100000:65536",
            "--gidmapping",
            "0:100000:65536",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let m = TestMount::layerfuse(l.clone_fresh(), &opts);
    let upper = m.upper.clone().unwrap();
    assert_eq!(owner(&m.path("mapped")), (5, 7));
    // Ids outside every range show as the overflow id, as in a user namespace.
    assert_eq!(owner(&m.path("unmapped")), (65534, 65534));
    // Created by root (0 through the mount) → stored as 100000.
    fs::write(m.path("new"), "n").unwrap();
    assert_eq!(owner(&m.path("new")), (0, 0));
    assert_eq!(owner(&upper.join("new")), (100000, 100000));
    // chown through the mount stores the mapped ids (and copies up).
    lchown(m.path("mapped"), Some(10), Some(20)).unwrap();
    assert_eq!(owner(&m.path("mapped")), (10, 20));
    assert_eq!(owner(&upper.join("mapped")), (100010, 100020));
    // An id no range covers cannot be stored.
    let err = lchown(m.path("mapped"), Some(70000), None).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn squash_to_root_shows_every_owner_as_root_through_the_compat_command_line() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("f", "x").chown("f", 1234, 4321);
    let l = l.clone_fresh();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},squash_to_root",
        l.lower(0).0.display(),
        l.upper.as_ref().unwrap().display(),
        l.work.as_ref().unwrap().display()
    );
    let mut cmd = std::process::Command::new(layerfuse_bin());
    cmd.args(["-f", "-o", &opts]).arg(&l.mnt);
    let m = TestMount::spawn_fuse(Impl::Layerfuse, cmd, l);
    assert_eq!(owner(&m.path("f")), (0, 0));
    // The layer keeps the real owner.
    assert_eq!(owner(&m.layers().lower(0).path("f")), (1234, 4321));
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "xattrs: the portable path has none (docs/design.md)"
)]
fn xattr_permissions_keeps_owner_and_mode_in_the_override_xattr() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("f", "x");
    let l = l.clone_fresh();
    let upper = l.upper.clone().unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},xattr_permissions=2",
        l.lower(0).0.display(),
        upper.display(),
        l.work.as_ref().unwrap().display()
    );
    let mut cmd = std::process::Command::new(layerfuse_bin());
    cmd.args(["-f", "-o", &opts]).arg(&l.mnt);
    let m = TestMount::spawn_fuse(Impl::Layerfuse, cmd, l);
    lchown(m.path("f"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(
        m.path("f"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4711),
    )
    .unwrap();
    let md = fs::symlink_metadata(m.path("f")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o4711)
    );
    // On disk: the real owner and mode stay, the override holds what the mount showed.
    let real = fs::symlink_metadata(upper.join("f")).unwrap();
    assert_eq!(
        (real.uid(), real.gid(), real.mode() & 0o7777),
        (0, 0, 0o644)
    );
    assert_eq!(
        lgetxattr(&upper.join("f"), "user.containers.override_stat").unwrap(),
        b"1234:5678:0104711"
    );
    // The record itself is not shown through the mount.
    assert!(
        !llistxattr(&m.path("f"))
            .unwrap()
            .iter()
            .any(|n| n.contains("override_stat"))
    );
}
