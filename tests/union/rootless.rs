//! Rootless: an unprivileged user mounts layerfuse inside a user namespace
//! (`unshare -Urm`), as rootless container engines do. No CAP_SYS_ADMIN there, so the
//! markers must be the kernel's `userxattr` format (`user.overlay.*`), whiteouts the
//! 0/0 devices a user namespace may make, lower files owned by ids the namespace does
//! not map must stay writable and removable (no EOVERFLOW), and passthrough must fall
//! back to the daemon-served path.

use crate::common::*;
use crate::need_root;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::process::Command;

/// An unprivileged uid with no passwd entry (setpriv does not need one).
const USER: u32 = 64123;

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "checks the kernel's upper format (0/0 whiteouts, user.overlay xattrs), which the portable path does not write"
)]
fn unprivileged_user_in_a_user_namespace_mounts_and_writes() {
    need_root!();
    // The distributions' default; some CI images ship /dev/fuse as 0600.
    let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666));
    let root = TempDir::new();
    let (l, u, w, m) = (
        root.path.join("l"),
        root.path.join("u"),
        root.path.join("w"),
        root.path.join("m"),
    );
    for d in [&l, &u, &w, &m] {
        fs::create_dir(d).unwrap();
    }
    fs::write(l.join("mine"), "lower\n").unwrap();
    chown(l.join("mine"), Some(USER), Some(USER)).unwrap();
    // Owned by host root: unmapped inside the namespace.
    fs::write(l.join("roots"), "root's\n").unwrap();
    fs::set_permissions(l.join("roots"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::create_dir(l.join("d")).unwrap();
    fs::write(l.join("d/x"), "x").unwrap();
    for d in [&u, &w, &m, &root.path.clone()] {
        chown(d, Some(USER), Some(USER)).unwrap();
    }
    // A copy the user can reach: the checkout may sit in a directory only root can enter.
    let bin = root.path.join("layerfuse");
    fs::copy(layerfuse_bin(), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        "set -e
        {bin} mount --lower {l} --upper {u} --work {w} {m}
        trap '{bin} umount {m}' EXIT
        echo more >> {m}/mine
        echo more >> {m}/roots
        rm {m}/d/x
        mkdir {m}/new
        cat {m}/mine {m}/roots
        stat -c '%u:%g %n' {m}/roots",
        bin = bin.display(),
        l = l.display(),
        u = u.display(),
        w = w.display(),
        m = m.display()
    );
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={USER}"),
            &format!("--regid={USER}"),
            "--clear-groups",
            "unshare",
            "-Urm",
            "sh",
            "-c",
            &script,
        ])
        .current_dir("/")
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rootless session failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "lower",
            "more",
            "root's",
            "more",
            // Unmapped owners show as the namespace's root, which may write them.
            &format!("0:0 {}/roots", m.display()),
        ]
    );
    // The upper, read from outside: copies, a 0/0 whiteout, userxattr markers only.
    assert_eq!(fs::read_to_string(u.join("mine")).unwrap(), "lower\nmore\n");
    let wh = fs::symlink_metadata(u.join("d/x")).unwrap();
    assert_eq!((wh.mode() & libc::S_IFMT, wh.rdev()), (libc::S_IFCHR, 0));
    assert!(lgetxattr(&u.join("mine"), "user.overlay.origin").is_ok());
    assert!(lgetxattr(&u.join("mine"), "trusted.overlay.origin").is_err());
    assert!(lgetxattr(&u.join("new"), "user.overlay.opaque").is_ok());
    // Nothing left mounted.
    assert!(mounts_at(&m).is_empty());
}
