//! Hostile lower layers (docs/reliability.md "Hostile input"): layers written by someone who
//! wants the daemon to crash, hang, or read outside a layer. Each test mounts the layers with
//! kernel overlayfs and with layerfuse and requires the same answers, or (for the race) asserts
//! that nothing outside the layer is ever read through either mount.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Mount the kernel and the implementation under test over copies of `tpl`, each copy first
/// given `prep` (for layer content `cp -a` cannot carry or a template cannot hold); the kernel's
/// copy then gets its OCI markers converted by `to_kernel`. Runs `f` on both, compares the logs,
/// then (if `uppers`) the upper trees. `cleanup` runs on each side's layers after its unmount.
fn differential_with(
    tpl: &Layers,
    prep: impl Fn(&Layers),
    to_kernel: impl Fn(&Layers),
    f: impl Fn(&mut Ctx),
    uppers: bool,
    cleanup: impl Fn(&Layers),
) {
    let opts = Opts::default();
    let kl = tpl.clone_fresh();
    prep(&kl);
    to_kernel(&kl);
    let mut kernel = TestMount::kernel(kl, &opts);
    let ol = tpl.clone_fresh();
    prep(&ol);
    let mut other = TestMount::under_test(ol, &opts);
    let mut k = Ctx::new(&kernel);
    f(&mut k);
    show_kernel_log(&k);
    let mut o = Ctx::new(&other);
    f(&mut o);
    assert_daemon_healthy(&other);
    kernel.unmount();
    other.unmount();
    let result = compare("observations", other.kind, &k.log, &o.log).and_then(|()| {
        if !uppers {
            return Ok(());
        }
        let ks = upper_snapshot(kernel.upper.as_ref().unwrap(), &kernel.layers().lowers);
        let os = upper_snapshot(other.upper.as_ref().unwrap(), &other.layers().lowers);
        compare("upper trees", other.kind, &ks, &os)
    });
    cleanup(kernel.layers());
    cleanup(other.layers());
    if let Err(msg) = result {
        panic!("{msg}");
    }
}

/// The daemon did not panic (its stderr says so if it did; it may also have exited).
fn assert_daemon_healthy(m: &TestMount) {
    let err = m.stderr();
    assert!(
        !err.contains("panicked"),
        "[{:?}] the daemon panicked:\n{err}",
        m.kind
    );
    if m.kind != Impl::Kernel {
        assert!(m.is_mounted(), "[{:?}] the mount went away:\n{err}", m.kind);
    }
}

fn no_prep(_: &Layers) {}

/// LAYERFUSE_TEST_SHOW=1 prints what the kernel did (with --nocapture), as `Pair::check` does.
fn show_kernel_log(k: &Ctx) {
    if std::env::var_os("LAYERFUSE_TEST_SHOW").is_some() {
        eprintln!("kernel log:\n  {}", k.log.join("\n  "));
    }
}

/// A name as a log label: printable ASCII as is, every other byte as `\xNN`.
fn show(name: &[u8]) -> String {
    name.iter()
        .map(|&b| {
            if b.is_ascii_graphic() && b != b'\\' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// A listing with every name escaped, sorted, with d_type.
fn list_bytes(c: &mut Ctx, dir: &Path, label: &str) {
    let s = match read_dir_raw(dir) {
        Ok(mut v) => {
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v.iter()
                .map(|d| format!("{}:{}", show(&d.name), dtype_name(d.dtype)))
                .collect::<Vec<_>>()
                .join(" ")
        }
        Err(e) => format!("Err({})", errno_name(&e)),
    };
    c.log.push(format!("list {label}: [{s}]"));
}

fn openat(
    dir: &OwnedFd,
    name: &[u8],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let c = CString::new(name).unwrap();
    // SAFETY: c is a valid C string; dir is an open fd; the result is a fresh fd we own.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdirat(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let c = CString::new(name).unwrap();
    // SAFETY: valid C string and fd.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_fd(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: buffer pointer/len from a live array; fd is open.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

fn write_fd(fd: &OwnedFd, data: &[u8]) -> io::Result<()> {
    // SAFETY: data pointer/len from a live slice; fd is open.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    assert_eq!(n as usize, data.len(), "short write");
    Ok(())
}

/// A tmpfs of its own (outside every test's temp dir), unmounted and removed on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn new(tag: &str, size: &str) -> Tmpfs {
        let t = TempDir::new();
        let path = t.path.with_file_name(format!(
            "{}-{tag}",
            t.path.file_name().unwrap().to_string_lossy()
        ));
        drop(t);
        fs::create_dir_all(&path).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", path.display());
        Tmpfs { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount_all(&self.path);
        let _ = fs::remove_dir(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Symlink loops
// ---------------------------------------------------------------------------------------------

#[test]
fn symlink_loops_give_eloop_and_never_hang() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0)
        .symlink("self", "self")
        .symlink("a", "b")
        .symlink("b", "a")
        .symlink("d/up", "../d/up")
        .symlink("d/deeper", "../d/deeper/x/y")
        .symlink("dd/back", "..")
        .symlink("dd/abs", "/proc/self/cwd/dd/abs");
    l.lower(1).dir("dd").symlink("dd/loop", "../dd/loop");
    let names = [
        "self", "a", "b", "d/up", "d/deeper", "dd/back", "dd/abs", "dd/loop",
    ];
    differential(&l, |c| {
        for n in names {
            c.stat(n);
            c.read(n);
            let t = fs::read_link(c.p(n)).map(|t| t.display().to_string());
            c.val(&format!("readlink {n}"), t.map_err(|e| errno_name(&e)));
        }
        c.stat("self/x");
        c.read("a/b/c");
        c.list("dd");
        c.list("dd/loop");
        // Copy-up of looping symlinks, and moving them around.
        let r = std::os::unix::fs::lchown(c.p("self"), Some(1), Some(2));
        c.ok("lchown self", r);
        c.ok("rename a", fs::rename(c.p("a"), c.p("d/a2")));
        c.read("d/a2");
        c.ok("rename dd", fs::rename(c.p("dd"), c.p("dd2")));
        c.list("dd2");
        c.stat("dd2/loop");
        let r = std::os::unix::fs::symlink("loop2", c.p("loop2"));
        c.ok("new looping symlink", r);
        c.read("loop2");
    });
}

// ---------------------------------------------------------------------------------------------
// A 10,000-deep tree
// ---------------------------------------------------------------------------------------------

const DEEP: usize = 10_000;

/// `d/d/d/…/d/file` DEEP directories deep under `root` (paths far beyond PATH_MAX: made one
/// level at a time with *at calls).
fn make_deep(root: &Path) {
    let mut fd = open(root, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    mkdirat(&fd, b"d").unwrap();
    for _ in 0..DEEP {
        let next = openat(&fd, b"d", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        fd = next;
        if let Err(e) = mkdirat(&fd, b"d")
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            panic!("mkdirat: {e}");
        }
    }
    let f = openat(&fd, b"file", libc::O_WRONLY | libc::O_CREAT, 0o644).unwrap();
    write_fd(&f, b"at the bottom\n").unwrap();
}

/// Walk `d` `levels` times from `top` (never following a symlink); the fd of the last level, or
/// the level and errno where the walk stopped.
fn walk_down(top: &Path, levels: usize) -> Result<OwnedFd, String> {
    let mut fd = open(top, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| errno_name(&e))?;
    for level in 0..levels {
        fd = openat(
            &fd,
            b"d",
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| format!("level {level}: {}", errno_name(&e)))?;
    }
    Ok(fd)
}

/// Remove a tree of any depth (`rm` walks it with *at calls; std's remove_dir_all may run out of
/// descriptors on 10,000 levels).
fn remove_tree(p: &Path) {
    let _ = Command::new("rm").arg("-rf").arg(p).status();
}

#[test]
fn ten_thousand_deep_tree_reads_copies_up_and_renames() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "x");
    differential_with(
        &l,
        |l| make_deep(&l.lowers[0]),
        no_prep,
        |c| {
            let bottom = match walk_down(&c.p(""), DEEP + 1) {
                Ok(fd) => {
                    c.log.push("walk down: ok".into());
                    Some(fd)
                }
                Err(e) => {
                    c.log.push(format!("walk down: {e}"));
                    None
                }
            };
            if let Some(b) = &bottom {
                let f = openat(b, b"file", libc::O_RDONLY, 0);
                let data = f.and_then(|f| read_fd(&f)).map(|d| describe_bytes(&d));
                c.val("read the bottom file", data.map_err(|e| errno_name(&e)));
                // A write copies up all 10,001 directories above it.
                let w = openat(b, b"file", libc::O_WRONLY | libc::O_APPEND, 0)
                    .and_then(|f| write_fd(&f, b"and more\n"));
                c.ok("append to the bottom file (copy-up)", w);
                let f = openat(b, b"file", libc::O_RDONLY, 0);
                let data = f.and_then(|f| read_fd(&f)).map(|d| describe_bytes(&d));
                c.val("read it back", data.map_err(|e| errno_name(&e)));
                let r = openat(
                    b,
                    b"new",
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                );
                c.ok("create at the bottom", r);
            }
            drop(bottom);
            c.ok("rename the top", fs::rename(c.p("d"), c.p("e")));
            let moved = walk_down(&c.p("e"), DEEP).and_then(|b| {
                let f = openat(&b, b"file", libc::O_RDONLY, 0).map_err(|e| errno_name(&e))?;
                read_fd(&f)
                    .map(|d| describe_bytes(&d))
                    .map_err(|e| errno_name(&e))
            });
            c.val("read through the renamed tree", moved);
            // The upper's copy of the path, one directory per level.
            let up = walk_down(&c.upper.as_ref().unwrap().join("e"), DEEP)
                .and_then(|b| openat(&b, b"file", libc::O_RDONLY, 0).map_err(|e| errno_name(&e)));
            c.val("the upper holds the copied-up path", up.is_ok());
        },
        // upper_snapshot walks by path: not at this depth. The observations above look at it.
        false,
        |l| {
            for d in l.lowers.iter().chain(&l.upper) {
                remove_tree(&d.join("d"));
                remove_tree(&d.join("e"));
            }
            if let Some(w) = &l.work {
                remove_tree(w);
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Names with every byte
// ---------------------------------------------------------------------------------------------

/// Every byte but NUL and '/' as a one-byte name (except `.`), inside a three-byte name, and
/// all of them in one 254-byte name.
fn byte_names() -> Vec<Vec<u8>> {
    let bytes: Vec<u8> = (1..=255u8).filter(|&b| b != b'/').collect();
    let mut names: Vec<Vec<u8>> = bytes
        .iter()
        .filter(|&&b| b != b'.')
        .map(|&b| vec![b])
        .collect();
    names.extend(bytes.iter().map(|&b| vec![b'n', b, b'n']));
    names.push(bytes.clone());
    names.push(bytes.iter().rev().copied().collect());
    names
}

#[test]
fn names_with_every_byte_except_slash_and_nul() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0).dir("top");
    l.lower(1).dir("top").dir("sub");
    differential_with(
        &l,
        |l| {
            for (i, n) in byte_names().iter().enumerate() {
                let name = OsStr::from_bytes(n);
                // Half the names in each layer, some in both (the top one wins).
                let layer = &l.lowers[i % 2];
                fs::write(layer.join("top").join(name), format!("{i}:{}", show(n))).unwrap();
                if i % 3 == 0 {
                    fs::write(l.lowers[1].join("top").join(name), b"hidden").unwrap();
                }
                if i % 7 == 0 {
                    fs::create_dir(l.lowers[1].join("sub").join(name)).unwrap();
                }
            }
        },
        |l| l.oci_to_kernel(),
        |c| {
            let top = c.p("top");
            list_bytes(c, &top, "top");
            let sub = c.p("sub");
            list_bytes(c, &sub, "sub");
            for (i, n) in byte_names().iter().enumerate() {
                let p = top.join(OsStr::from_bytes(n));
                let label = show(n);
                let data = fs::read(&p).map(|d| describe_bytes(&d));
                c.val(&format!("read {label}"), data.map_err(|e| errno_name(&e)));
                if i % 4 == 0 {
                    // Copy-up and a rename to another hostile name.
                    let mut to = n.clone();
                    to.push(b'\n');
                    let r = fs::rename(&p, sub.join(OsStr::from_bytes(&to)));
                    c.ok(&format!("rename {label}"), r);
                } else if i % 4 == 1 {
                    c.ok(&format!("unlink {label}"), fs::remove_file(&p));
                }
                let s = sub.join(OsStr::from_bytes(n));
                let md = fs::symlink_metadata(&s).map(|m| m.is_dir());
                c.val(
                    &format!("sub {label} is a dir"),
                    md.map_err(|e| errno_name(&e)),
                );
            }
            let mut fresh = byte_names().pop().unwrap();
            fresh[0] = b'X';
            let r = fs::write(top.join(OsStr::from_bytes(&fresh)), b"new");
            c.ok("create a 254-byte name", r);
            list_bytes(c, &top, "top after");
            list_bytes(c, &sub, "sub after");
        },
        true,
        no_prep,
    );
}

// ---------------------------------------------------------------------------------------------
// 64 KiB xattrs
// ---------------------------------------------------------------------------------------------

fn big_value(seed: u8) -> Vec<u8> {
    (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect()
}

/// The size getxattr reports for `name` with an empty buffer, and the value's hash.
fn xattr_desc(p: &Path, name: &str) -> String {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings; a null buffer of size 0 asks for the size.
    let size = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return format!("Err({})", errno_name(io::Error::last_os_error()));
    }
    match lgetxattr(p, name) {
        Ok(v) => format!("size={size} value={}", describe_bytes(&v)),
        Err(e) => format!("size={size} value=Err({})", errno_name(&e)),
    }
}

/// Put the lowers (and with `upper_too` the upper and work dir) of `l` on a tmpfs, which holds
/// 64 KiB xattr values (this ext4 does not), and give the lower entries their big xattrs.
fn on_tmpfs(l: &Layers, t: &Tmpfs, upper_too: bool) -> Layers {
    let mut moved = l.clone_fresh();
    let run = |a: &Path, b: &Path| {
        let st = Command::new("cp").arg("-a").arg(a).arg(b).status().unwrap();
        assert!(st.success());
    };
    run(&moved.lowers[0], &t.path);
    moved.lowers[0] = t.path.join("l0");
    if upper_too {
        run(moved.upper.as_ref().unwrap(), &t.path);
        fs::create_dir(t.path.join("w")).unwrap();
        moved.upper = Some(t.path.join("u"));
        moved.work = Some(t.path.join("w"));
    }
    let low = &moved.lowers[0];
    lsetxattr(&low.join("big"), "user.big", &big_value(1)).unwrap();
    lsetxattr(&low.join("big"), "trusted.big", &big_value(2)).unwrap();
    lsetxattr(&low.join("bigdir"), "user.big", &big_value(3)).unwrap();
    // Many names: a listxattr of over 4 KiB.
    for i in 0..200 {
        let name = format!("user.{i:03}-{}", "n".repeat(40));
        lsetxattr(&low.join("many"), &name, format!("{i}").as_bytes()).unwrap();
    }
    moved
}

fn xattr_ops(c: &mut Ctx) {
    for (f, n) in [
        ("big", "user.big"),
        ("big", "trusted.big"),
        ("bigdir", "user.big"),
    ] {
        let d = xattr_desc(&c.p(f), n);
        c.log.push(format!("getxattr {f} {n}: {d}"));
    }
    c.val(
        "listxattr many",
        llistxattr(&c.p("many"))
            .map(|v| v.len())
            .map_err(|e| errno_name(&e)),
    );
    // Copy-ups that must carry the 64 KiB values (or fail as the kernel's do).
    c.ok(
        "chmod big",
        fs::set_permissions(c.p("big"), fs::Permissions::from_mode(0o600)),
    );
    c.ok("create in bigdir", fs::write(c.p("bigdir/new"), b"n"));
    c.ok(
        "chmod many",
        fs::set_permissions(c.p("many"), fs::Permissions::from_mode(0o600)),
    );
    for (f, n) in [
        ("big", "user.big"),
        ("big", "trusted.big"),
        ("bigdir", "user.big"),
    ] {
        let d = xattr_desc(&c.p(f), n);
        c.log.push(format!("after copy-up: getxattr {f} {n}: {d}"));
    }
    c.val(
        "listxattr many after",
        llistxattr(&c.p("many"))
            .map(|v| v.len())
            .map_err(|e| errno_name(&e)),
    );
    let r = lsetxattr(&c.p("small"), "user.new", &big_value(4));
    c.ok("set a 64 KiB xattr through the mount", r);
    let d = xattr_desc(&c.p("small"), "user.new");
    c.log.push(format!("getxattr small user.new: {d}"));
    let mut too_big = big_value(5);
    too_big.push(0);
    c.ok(
        "set a 64 KiB + 1 xattr",
        lsetxattr(&c.p("small"), "user.huge", &too_big),
    );
}

fn xattr_case(upper_on_tmpfs: bool) {
    let l = Layers::new(1);
    l.lower(0)
        .file("big", "b")
        .dir("bigdir")
        .file("many", "m")
        .file("small", "s");
    let (tk, to) = (Tmpfs::new("xk", "8m"), Tmpfs::new("xo", "8m"));
    let kl = on_tmpfs(&l, &tk, upper_on_tmpfs);
    let mut kernel = TestMount::kernel(kl, &Opts::default());
    let ol = on_tmpfs(&l, &to, upper_on_tmpfs);
    let mut other = TestMount::under_test(ol, &Opts::default());
    let mut k = Ctx::new(&kernel);
    xattr_ops(&mut k);
    show_kernel_log(&k);
    let mut o = Ctx::new(&other);
    xattr_ops(&mut o);
    assert_daemon_healthy(&other);
    kernel.unmount();
    other.unmount();
    assert_same("observations", other.kind, &k.log, &o.log);
    let ks = upper_snapshot(kernel.upper.as_ref().unwrap(), &kernel.layers().lowers);
    let os = upper_snapshot(other.upper.as_ref().unwrap(), &other.layers().lowers);
    assert_same("upper trees", other.kind, &ks, &os);
}

#[test]
fn xattrs_of_64k_copy_up_whole() {
    need_root!();
    xattr_case(true);
}

#[test]
fn xattrs_of_64k_on_an_upper_that_cannot_hold_them_fail_like_the_kernel() {
    need_root!();
    xattr_case(false);
}

// ---------------------------------------------------------------------------------------------
// .wh. entries of every shape, and whiteouts of nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn oci_whiteouts_shaped_as_directories_or_symlinks() {
    need_root!();
    let l = Layers::new(2);
    l.lower(1)
        .file("a", "a below")
        .file("b", "b below")
        .file("c", "c below")
        .file("d/x", "dx below")
        .file("e/y", "ey below")
        .file("f", "f below");
    // .wh.a: a directory with content; .wh.b: a symlink to /; .wh.c: a symlink to a file outside.
    l.lower(0)
        .file(".wh.a/inside", "never shown")
        .symlink(".wh.b", "/")
        .symlink(".wh.c", "/etc/passwd")
        // The opaque marker as a directory, and as a symlink.
        .file("d/.wh..wh..opq/z", "never shown")
        .file("d/own", "top d")
        .symlink("e/.wh..wh..opq", "/etc")
        // A whiteout next to the name it deletes, in the same layer: the entry stays.
        .file("f", "f on top")
        .file(".wh.f", "")
        // A bare prefix and aufs metadata, of odd types.
        .dir(".wh.")
        .symlink(".wh..wh.plnk", "/")
        .fifo(".wh..wh.aufs");
    differential_with(
        &l,
        no_prep,
        |l| l.oci_to_kernel(),
        |c| {
            c.list("");
            c.list("d");
            c.list("e");
            for n in [
                "a",
                "b",
                "c",
                "d/x",
                "d/own",
                "e/y",
                "f",
                ".wh.a",
                ".wh.b",
                ".wh.",
                "d/.wh..wh..opq",
            ] {
                c.stat(n);
                c.read(n);
            }
            c.list(".wh.a");
            // Writing where the whiteouts are.
            c.ok("create a", fs::write(c.p("a"), b"new a"));
            c.ok("mkdir b", fs::create_dir(c.p("b")));
            c.list("b");
            c.ok("rmdir d (opaque)", fs::remove_dir(c.p("d")));
            c.ok("unlink d/own", fs::remove_file(c.p("d/own")));
            c.ok("rmdir d", fs::remove_dir(c.p("d")));
            c.ok("rename e", fs::rename(c.p("e"), c.p("e2")));
            c.list("e2");
            c.ok("unlink f", fs::remove_file(c.p("f")));
            c.stat("f");
            c.list("");
        },
        true,
        no_prep,
    );
}

#[test]
fn whiteouts_of_names_that_do_not_exist() {
    need_root!();
    let l = Layers::new(2);
    l.lower(1).file("real", "r").dir("dir");
    l.lower(0)
        .whiteout("ghost")
        .oci_whiteout("ghost2")
        .whiteout("dir/ghost3")
        .oci_whiteout("dir/ghost4")
        .whiteout("nodir/ghost5");
    l.upper().whiteout("ughost").whiteout("dir/ughost2");
    differential(&l, |c| {
        c.list("");
        c.list("dir");
        // Not `nodir`: a directory of one lower layer is listed by the kernel as it is on disk,
        // whiteouts included as char devices (a tolerated kernel quirk, docs/conformance.md).
        for n in [
            "ghost",
            "ghost2",
            "dir/ghost3",
            "dir/ghost4",
            "nodir/ghost5",
            "ughost",
            "dir/ughost2",
        ] {
            c.stat(n);
        }
        c.ok("create ghost", fs::write(c.p("ghost"), b"g"));
        c.ok("mkdir ghost2", fs::create_dir(c.p("ghost2")));
        c.list("ghost2");
        c.ok(
            "symlink ughost",
            std::os::unix::fs::symlink("t", c.p("ughost")),
        );
        c.ok("mkdir dir/ghost3", fs::create_dir(c.p("dir/ghost3")));
        c.ok(
            "rename real over dir/ghost4",
            fs::rename(c.p("real"), c.p("dir/ghost4")),
        );
        c.ok("unlink nodir/ghost5", fs::remove_file(c.p("nodir/ghost5")));
        c.ok("rmdir nodir", fs::remove_dir(c.p("nodir")));
        c.ok("unlink ghost", fs::remove_file(c.p("ghost")));
        c.list("");
        c.list("dir");
    });
}

// ---------------------------------------------------------------------------------------------
// A lower entry swapped for a symlink between lookup and open
// ---------------------------------------------------------------------------------------------

const SECRET: &[u8] = b"SECRET-outside-the-layer";
const SWAPPED: usize = 6;

/// One round on one mount: a thread swaps (RENAME_EXCHANGE) each lower entry with a symlink out
/// of the layer (files: to a secret file; directories: to `/`) while this thread opens, reads,
/// lists and copies up the same names through the mount. Returns what was seen outside the
/// layer (must be nothing) and how many reads saw the layer's own content.
fn swap_race(m: &TestMount, rounds: usize) -> (Vec<String>, usize) {
    let lower = m.layers().lowers[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let lower = lower.clone();
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..SWAPPED {
                    for n in [format!("x{i}"), format!("d{i}")] {
                        let a = lower.join(&n);
                        let b = lower.join(format!("{n}.alt"));
                        if renameat2(&a, &b, libc::RENAME_EXCHANGE).is_ok() {
                            swaps += 1;
                        }
                    }
                }
            }
            swaps
        })
    };
    let mut leaks = Vec::new();
    let mut inside_reads = 0;
    let root_names = ["proc", "sys", "etc"];
    for round in 0..rounds {
        for i in 0..SWAPPED {
            for n in [format!("x{i}"), format!("x{i}.alt")] {
                let p = m.path(&n);
                let flags = if round % 16 == 15 && i % 2 == 0 {
                    // Now and then a copy-up: it must copy the layer's file, never the secret.
                    libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW
                } else {
                    libc::O_RDONLY | libc::O_NOFOLLOW
                };
                if let Ok(fd) = open(&p, flags, 0)
                    && flags & libc::O_WRONLY != 0
                {
                    let _ = write_fd(&fd, b"+");
                }
                if let Ok(fd) = open(&p, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
                    && let Ok(data) = read_fd(&fd)
                {
                    if data.windows(SECRET.len()).any(|w| w == SECRET) {
                        leaks.push(format!("read {n}: {}", describe_bytes(&data)));
                    } else if data.starts_with(b"inside") {
                        inside_reads += 1;
                    }
                }
            }
            for n in [format!("d{i}"), format!("d{i}.alt")] {
                let p = m.path(&n);
                if let Ok(fd) = open(&p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
                    while let Ok(batch) = getdents(&fd, 4096) {
                        if batch.is_empty() {
                            break;
                        }
                        for d in batch {
                            if root_names.iter().any(|r| d.name == r.as_bytes())
                                || d.name.starts_with(b"SECRET")
                            {
                                leaks.push(format!("list {n}: {}", show(&d.name)));
                            }
                        }
                    }
                }
                if let Ok(data) = fs::read(p.join("inside"))
                    && data.windows(SECRET.len()).any(|w| w == SECRET)
                {
                    leaks.push(format!("read {n}/inside: {}", describe_bytes(&data)));
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    assert!(swaps > 0, "the racer never swapped anything");
    // Whatever was copied up is the layer's, never the secret.
    let upper = m.upper.as_ref().unwrap();
    for e in fs::read_dir(upper).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_file() {
            let data = fs::read(&p).unwrap();
            if data.windows(SECRET.len()).any(|w| w == SECRET) {
                leaks.push(format!(
                    "copied up {}: {}",
                    p.display(),
                    describe_bytes(&data)
                ));
            }
        }
    }
    (leaks, inside_reads)
}

#[test]
fn lower_entry_swapped_for_a_symlink_out_of_the_layer_is_never_followed() {
    need_root!();
    let outside = TempDir::new();
    fs::write(outside.path.join("secret"), SECRET).unwrap();
    fs::create_dir(outside.path.join("dir")).unwrap();
    fs::write(outside.path.join("dir/SECRET-name"), SECRET).unwrap();
    let l = Layers::new(1);
    for i in 0..SWAPPED {
        l.lower(0).file(&format!("x{i}"), &format!("inside x{i}"));
        l.lower(0).file(&format!("d{i}/inside"), "inside dir");
        let secret = outside.path.join("secret");
        l.lower(0)
            .symlink(&format!("x{i}.alt"), secret.to_str().unwrap());
        let target = if i % 2 == 0 {
            "/".to_string()
        } else {
            outside.path.join("dir").display().to_string()
        };
        l.lower(0).symlink(&format!("d{i}.alt"), &target);
    }
    let rounds = 300;
    for kind in [Impl::Kernel, impl_under_test()] {
        let m = TestMount::new(kind, l.clone_fresh(), &Opts::default());
        let (leaks, inside) = swap_race(&m, rounds);
        assert_daemon_healthy(&m);
        assert!(
            leaks.is_empty(),
            "[{kind:?}] read outside the layer:\n{}",
            leaks.join("\n")
        );
        // The test is worth something only if reads went through while the racer ran.
        assert!(
            inside > 0,
            "[{kind:?}] no read of the layer's own files succeeded"
        );
        eprintln!("[{kind:?}] {inside} reads of layer content, nothing from outside");
    }
}
