//! Permissions as another uid (1000): with allow_other and default_permissions the kernel checks
//! modes for every caller, and copy-up must not let a caller do more than the modes allow.
//! Creation gives the caller's uid/gid (or a setgid directory's gid); suid/sgid are cleared on
//! write and chown by non-root.

use crate::common::*;
use crate::need_root;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

const U: u32 = 1000;

fn perm_layers() -> Layers {
    let l = Layers::new(2);
    let b = l.lower(1);
    b.file("ro_root", "root only writes")
        .chmod("ro_root", 0o644);
    b.file("secret", "no read").chmod("secret", 0o600);
    b.file("mine", "owned by 1000")
        .chown("mine", U, U)
        .chmod("mine", 0o644);
    b.file("suid", "suid file")
        .chown("suid", U, U)
        .chmod("suid", 0o6777);
    b.file("sgid_other", "x")
        .chown("sgid_other", U, U)
        .chmod("sgid_other", 0o2775);
    b.dir("closed").file("closed/f", "f").chmod("closed", 0o755);
    b.dir("open").file("open/theirs", "t").chmod("open", 0o777);
    b.dir("sticky")
        .file("sticky/rootfile", "r")
        .chmod("sticky", 0o1777);
    b.dir("setgid")
        .chown("setgid", 0, 1001)
        .chmod("setgid", 0o2777);
    b.dir("noexec").file("noexec/f", "f").chmod("noexec", 0o644);
    l.lower(0)
        .file("top_ro", "t")
        .chmod("top_ro", 0o444)
        .chown("top_ro", U, U);
    l
}

#[test]
fn access_checks_as_unprivileged_user() {
    need_root!();
    let p = Pair::new(&perm_layers());
    p.check(|c| {
        c.as_user(U, U, |c| {
            c.ok(
                "open ro_root O_WRONLY",
                open(&c.p("ro_root"), libc::O_WRONLY, 0),
            );
            c.ok(
                "open ro_root O_RDONLY",
                open(&c.p("ro_root"), libc::O_RDONLY, 0),
            );
            c.ok(
                "open secret O_RDONLY",
                open(&c.p("secret"), libc::O_RDONLY, 0),
            );
            c.ok(
                "truncate ro_root",
                fs::OpenOptions::new()
                    .write(true)
                    .open(c.p("ro_root"))
                    .and_then(|f| f.set_len(0)),
            );
            c.ok(
                "chmod ro_root (not owner)",
                fs::set_permissions(c.p("ro_root"), fs::Permissions::from_mode(0o777)),
            );
            c.ok(
                "chown mine to root",
                std::os::unix::fs::lchown(c.p("mine"), Some(0), None),
            );
            c.ok(
                "utimes explicit on ro_root",
                utimens(&c.p("ro_root"), (1, 1), (1, 1)),
            );
            c.ok(
                "utimes now on ro_root",
                utimens(&c.p("ro_root"), (0, libc::UTIME_NOW), (0, libc::UTIME_NOW)),
            );
            c.ok(
                "setxattr user on ro_root",
                lsetxattr(&c.p("ro_root"), "user.x", b"1"),
            );
            c.ok(
                "setxattr trusted on mine",
                lsetxattr(&c.p("mine"), "trusted.x", b"1"),
            );
            c.ok("create in closed dir", fs::write(c.p("closed/new"), "x"));
            c.ok("unlink in closed dir", fs::remove_file(c.p("closed/f")));
            c.ok(
                "rename out of closed dir",
                fs::rename(c.p("closed/f"), c.p("open/f")),
            );
            c.ok("mkdir in closed dir", fs::create_dir(c.p("closed/d")));
            c.ok(
                "unlink other's file in sticky dir",
                fs::remove_file(c.p("sticky/rootfile")),
            );
            c.ok(
                "stat through non-searchable dir",
                fs::symlink_metadata(c.p("noexec/f")).map(drop),
            );
            c.ok(
                "list non-searchable dir",
                fs::read_dir(c.p("noexec")).map(drop),
            );
            c.ok(
                "write top_ro (0444, owner)",
                open(&c.p("top_ro"), libc::O_WRONLY, 0),
            );
            c.ok(
                "chmod own file",
                fs::set_permissions(c.p("top_ro"), fs::Permissions::from_mode(0o644)),
            );
            c.ok(
                "write own file after chmod",
                fs::OpenOptions::new()
                    .append(true)
                    .open(c.p("top_ro"))
                    .and_then(|mut f| f.write_all(b"+")),
            );
            let cp = cpath(&c.p("ro_root"));
            // SAFETY: access() on a valid C string.
            c.val(
                "access W_OK ro_root",
                unsafe { libc::access(cp.as_ptr(), libc::W_OK) } == 0,
            );
        });
        // Refused operations copied nothing up.
        for n in [
            "ro_root",
            "secret",
            "closed",
            "closed/f",
            "sticky/rootfile",
            "top_ro",
        ] {
            c.in_upper(n);
            c.stat(n);
        }
        c.read("ro_root");
        c.read("top_ro");
    });
    p.check_uppers();
}

#[test]
fn created_entries_get_caller_owner_and_setgid_group() {
    need_root!();
    let p = Pair::new(&perm_layers());
    p.check(|c| {
        c.as_user(U, U, |c| {
            c.ok("create in open dir", fs::write(c.p("open/mine"), "m"));
            c.ok("mkdir in open dir", fs::create_dir(c.p("open/mydir")));
            c.ok(
                "create 0777 (umask applies)",
                open(&c.p("open/m777"), libc::O_CREAT | libc::O_WRONLY, 0o777),
            );
            c.ok(
                "symlink in open dir",
                std::os::unix::fs::symlink("x", c.p("open/sl")),
            );
            c.ok(
                "mkfifo in open dir",
                mknod(&c.p("open/fifo"), libc::S_IFIFO | 0o666, 0),
            );
            c.ok("create in setgid dir", fs::write(c.p("setgid/f"), "g"));
            c.ok("mkdir in setgid dir", fs::create_dir(c.p("setgid/d")));
            c.ok(
                "create own file in sticky dir",
                fs::write(c.p("sticky/mine"), "s"),
            );
            c.ok(
                "unlink own file in sticky dir",
                fs::remove_file(c.p("sticky/mine")),
            );
            c.ok(
                "rename into open dir",
                fs::rename(c.p("open/theirs"), c.p("open/renamed")),
            );
        });
        for n in [
            "open/mine",
            "open/mydir",
            "open/m777",
            "open/sl",
            "open/fifo",
            "setgid/f",
            "setgid/d",
            "open/renamed",
            "open",
        ] {
            c.stat(n);
        }
    });
    p.check_uppers();
}

#[test]
fn suid_sgid_cleared_on_write_and_chown_by_non_root() {
    need_root!();
    let p = Pair::new(&perm_layers());
    p.check(|c| {
        c.as_user(U, U, |c| {
            c.ok(
                "write suid file",
                fs::OpenOptions::new()
                    .write(true)
                    .open(c.p("suid"))
                    .and_then(|mut f| f.write_all(b"W")),
            );
            c.ok(
                "chown sgid_other to own gid",
                std::os::unix::fs::lchown(c.p("sgid_other"), None, Some(U)),
            );
        });
        c.stat("suid");
        c.stat("sgid_other");
        c.read("suid");
        // Root writing does not clear them on a file root made setuid.
        c.must(
            "root chmod",
            fs::set_permissions(c.p("mine"), fs::Permissions::from_mode(0o4755)),
        );
        c.must(
            "root write",
            fs::OpenOptions::new()
                .write(true)
                .open(c.p("mine"))
                .and_then(|mut f| f.write_all(b"R")),
        );
        c.stat("mine");
    });
    p.check_uppers();
}

/// A set-uid file of the upper held open for reading by root (served by FUSE passthrough)
/// and appended to by its owner: the append succeeds, the bits go, and the reader reads the
/// appended byte, as on the kernel. (The kernel refuses every non-passthrough open of an
/// inode with passthrough opens, and a passthrough write keeps set-id bits: layerfuse
/// clears them at such a writer's open.)
#[test]
fn a_write_beside_an_open_reader_clears_set_id_bits() {
    need_root!();
    let p = Pair::new(&perm_layers());
    p.check(|c| {
        // Its owner's chmod copies it up; the bits stay (the owner set them).
        c.as_user(U, U, |c| {
            c.ok(
                "owner sets set-id bits",
                fs::set_permissions(c.p("suid"), fs::Permissions::from_mode(0o6777)),
            );
        });
        c.in_upper("suid");
        let reader = c.must("root opens a reader", fs::File::open(c.p("suid")));
        c.as_user(U, U, |c| {
            c.ok(
                "owner appends",
                fs::OpenOptions::new()
                    .append(true)
                    .open(c.p("suid"))
                    .and_then(|mut f| f.write_all(b"+")),
            );
        });
        c.stat("suid");
        let mut buf = [0u8; 64];
        let n = std::os::unix::fs::FileExt::read_at(&reader, &mut buf, 0);
        c.val("reader reads", n.map(|n| buf[..n].to_vec()).ok());
        drop(reader);
        c.read("suid");
    });
    p.check_uppers();
}

/// Set-id bits go on every write, truncate and O_TRUNC open by a caller without
/// CAP_FSETID, not only the first: with FUSE_HANDLE_KILLPRIV_V2 (the io_uring
/// transport) the kernel stops checking after a file's first write and leaves the
/// clearing to the daemon, which must do it exactly as the kernel's VFS does
/// (set-group-id only where the group may execute).
#[test]
fn suid_sgid_cleared_on_every_write_truncate_and_trunc_open() {
    need_root!();
    let p = Pair::new(&perm_layers());
    p.check(|c| {
        c.as_user(U, U, |c| {
            let setid = |c: &mut Ctx, mode: u32| {
                c.ok(
                    "owner sets set-id bits",
                    fs::set_permissions(c.p("suid"), fs::Permissions::from_mode(mode)),
                );
            };
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(c.p("suid"))
                .unwrap();
            c.ok("first write", f.write_all(b"1"));
            c.stat("suid");
            setid(c, 0o6777);
            c.ok("second write, same open file", f.write_all(b"2"));
            c.stat("suid");
            setid(c, 0o6777);
            c.ok("truncate", f.set_len(1));
            c.stat("suid");
            drop(f);
            setid(c, 0o6777);
            c.ok(
                "open O_TRUNC",
                fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(c.p("suid"))
                    .map(drop),
            );
            c.stat("suid");
            // Set-group-id without group execute marks mandatory locking: it stays.
            setid(c, 0o6745);
            c.ok(
                "write without group execute",
                fs::OpenOptions::new()
                    .append(true)
                    .open(c.p("suid"))
                    .and_then(|mut f| f.write_all(b"3")),
            );
            c.stat("suid");
        });
        c.read("suid");
    });
    p.check_uppers();
}
