//! Volumes and bind mounts grafted into the union (`--volume`, `--bind`) and the volume
//! store (`layerfuse volume …`). Kernel overlayfs has no such thing, so there is no oracle:
//! every test asserts the rule itself, through a real mount, and looks at the sources on
//! the host side to see where each operation landed.
//!
//! Every test uses its own volume store (`--root` in a temp dir), never the default one.

use crate::cli::{all_mount_ids, base, expect_refused, ours, std_args};
use crate::common::*;
use crate::need_root;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Entries and attributes inside a graft may be cached for 1 s: a change made on the host
/// must show through the mount within that. The 500 ms on top is scheduling slack on a
/// loaded machine, not part of the rule.
const HOST_SEEN: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Host-side directories of one test: bind sources, the volume store, "outside" dirs.
struct Host {
    tmp: TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            tmp: TempDir::new(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path.join(rel)
    }

    /// The volume store of this test (`--root`).
    fn store(&self) -> PathBuf {
        self.p("store")
    }

    fn root_arg(&self) -> String {
        format!("--root={}", self.store().display())
    }

    /// Where the store keeps a volume's data.
    fn vol(&self, name: &str) -> PathBuf {
        self.store().join("volumes").join(name).join("_data")
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.p(rel);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    /// `layerfuse volume --root STORE ARGS…`
    fn volume(&self, args: &[&str]) -> Output {
        Command::new(layerfuse_bin())
            .arg("volume")
            .arg("--root")
            .arg(self.store())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run layerfuse volume")
    }

    /// `layerfuse volume …`, required to succeed; its stdout.
    #[track_caller]
    fn volume_ok(&self, args: &[&str]) -> String {
        let out = self.volume(args);
        assert!(
            out.status.success(),
            "layerfuse volume {args:?}: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.volume_ok(&["inspect", name, "--format", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect json: {e}\n{out}"))
    }

    fn volume_names(&self) -> Vec<String> {
        let out = self.volume_ok(&["ls", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut names: Vec<String> = v
            .as_array()
            .unwrap_or_else(|| panic!("ls json is not an array: {out}"))
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

fn mount(l: Layers, args: &[String]) -> TestMount {
    TestMount::layerfuse(
        l,
        &Opts {
            extra_args: args.to_vec(),
            ..Default::default()
        },
    )
}

fn bind(src: &Path, target: &str) -> String {
    format!("--bind={}:{target}", src.display())
}

fn volume(spec: &str) -> String {
    format!("--volume={spec}")
}

fn errno_str(n: i32) -> String {
    errno_name(io::Error::from_raw_os_error(n))
}

fn outcome<T>(r: &io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => errno_name(e),
    }
}

/// Collects rule violations, so one run reports all of them.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    /// `r` must fail with one of `want`.
    fn errno<T>(&mut self, what: &str, r: io::Result<T>, want: &[i32]) {
        let ok = matches!(&r, Err(e) if e.raw_os_error().is_some_and(|n| want.contains(&n)));
        if !ok {
            let want: Vec<String> = want.iter().map(|n| errno_str(*n)).collect();
            self.0.push(format!(
                "{what}: got {}, expected {}",
                outcome(&r),
                want.join(" or ")
            ));
        }
    }

    fn check(&mut self, what: &str, cond: bool) {
        if !cond {
            self.0.push(what.to_string());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.0
                .push(format!("{what}: got {got:?}, expected {want:?}"));
        }
    }

    #[track_caller]
    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} rule violation(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

fn ok0(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn link(old: &Path, new: &Path) -> io::Result<()> {
    let (o, n) = (cpath(old), cpath(new));
    // SAFETY: valid C strings.
    ok0(unsafe { libc::link(o.as_ptr(), n.as_ptr()) })
}

fn truncate(p: &Path, len: i64) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok0(unsafe { libc::truncate(c.as_ptr(), len) })
}

fn cname(name: &str) -> std::ffi::CString {
    std::ffi::CString::new(name).unwrap()
}

fn open_at(dir: &OwnedFd, name: &str, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let c = cname(name);
    // SAFETY: valid fd and C string; the returned fd is ours.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdir_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cname(name);
    // SAFETY: valid fd and C string.
    ok0(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) })
}

fn unlink_at(dir: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<()> {
    let c = cname(name);
    // SAFETY: valid fd and C string.
    ok0(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

fn symlink_at(target: &str, dir: &OwnedFd, name: &str) -> io::Result<()> {
    let (t, c) = (cname(target), cname(name));
    // SAFETY: valid fd and C strings.
    ok0(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
}

fn chmod_at(dir: &OwnedFd, name: &str, mode: u32) -> io::Result<()> {
    let c = cname(name);
    // SAFETY: valid fd and C string.
    ok0(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) })
}

fn rename_at(dir: &OwnedFd, old: &str, new: &str) -> io::Result<()> {
    let (o, n) = (cname(old), cname(new));
    // SAFETY: valid fd and C strings.
    ok0(unsafe { libc::renameat(dir.as_raw_fd(), o.as_ptr(), dir.as_raw_fd(), n.as_ptr()) })
}

fn mkfifo(p: &Path) -> io::Result<()> {
    mknod(p, libc::S_IFIFO | 0o644, 0)
}

/// Sorted names in a directory (without `.` and `..`).
fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("Err({})", errno_name(&e)),
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A recursive description of a host directory (type, mode, owner, content, link target,
/// xattrs): to show that nothing outside a source changed.
fn tree(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = fs::symlink_metadata(&p).unwrap();
            let mut line = format!("{rel}: {}", describe_stat(&p));
            if md.is_file() {
                line.push_str(&format!(" data={:?}", read(&p)));
            }
            line.push_str(&format!(
                " mtime={}.{} xattrs=[{}]",
                md.mtime(),
                md.mtime_nsec(),
                describe_xattrs(&p)
            ));
            out.push(line);
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(p, p, &mut out);
    out
}

/// Poll `cond` until `since + HOST_SEEN`.
fn seen_within(since: Instant, mut cond: impl FnMut() -> bool) -> bool {
    let left = (since + HOST_SEEN).saturating_duration_since(Instant::now());
    wait_for(left, &mut cond) || cond()
}

fn upper_lines(m: &TestMount) -> Vec<String> {
    upper_snapshot(m.upper.as_ref().unwrap(), &m.layers().lowers)
}

// ---------------------------------------------------------------------------------------------
// Inside a graft: straight to the source
// ---------------------------------------------------------------------------------------------

#[test]
fn every_op_inside_a_graft_lands_in_the_source_and_nothing_in_the_upper() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0)
        .file("data/old", "layer-old")
        .file("data/keep", "layer-keep")
        .file("top", "t");
    let h = Host::new();
    let src = h.dir("src");
    h.file("src/keep", "host-keep");
    h.file("src/sub/x", "x");
    // What would be whiteouts in a layer is plain content in a source.
    h.file("src/.wh.old", "");
    mknod(&src.join("dev00"), libc::S_IFCHR | 0o644, makedev(0, 0)).unwrap();
    let m = mount(l.clone_fresh(), &[bind(&src, "/data")]);
    let before = upper_lines(&m);
    let d = m.path("data");
    let mut f = Findings::default();

    f.eq(
        "listing of the graft: the source's entries as they are, none of the layers'",
        names(&d),
        vec![
            ".wh.old".into(),
            "dev00".into(),
            "keep".into(),
            "sub".into(),
        ],
    );
    f.eq("read data/keep", read(&d.join("keep")), "host-keep".into());
    f.errno(
        "stat data/old (only in the layers)",
        fs::symlink_metadata(d.join("old")),
        &[libc::ENOENT],
    );
    f.check(
        "data/dev00 shows as the char device 0/0 it is",
        fs::symlink_metadata(d.join("dev00")).is_ok_and(|m| m.file_type().is_char_device()),
    );

    fs::write(d.join("new"), "n").unwrap();
    f.eq("create+write → source", read(&src.join("new")), "n".into());
    fs::OpenOptions::new()
        .append(true)
        .open(d.join("keep"))
        .unwrap()
        .write_all(b"+more")
        .unwrap();
    f.eq(
        "append → source",
        read(&src.join("keep")),
        "host-keep+more".into(),
    );
    fs::create_dir(d.join("dir")).unwrap();
    f.check("mkdir → source", src.join("dir").is_dir());
    symlink("some/target", d.join("ln")).unwrap();
    f.eq(
        "symlink → source",
        fs::read_link(src.join("ln")).ok(),
        Some(PathBuf::from("some/target")),
    );
    mkfifo(&d.join("fifo")).unwrap();
    f.check(
        "mknod fifo → source",
        fs::symlink_metadata(src.join("fifo")).is_ok_and(|m| m.file_type().is_fifo()),
    );
    link(&d.join("new"), &d.join("new2")).unwrap();
    f.eq(
        "link → source (same inode)",
        fs::metadata(src.join("new2")).map(|m| m.ino()).ok(),
        fs::metadata(src.join("new")).map(|m| m.ino()).ok(),
    );
    renameat2(&d.join("new2"), &d.join("dir/moved"), 0).unwrap();
    f.check(
        "rename → source",
        src.join("dir/moved").is_file() && !src.join("new2").exists(),
    );
    fs::set_permissions(d.join("new"), fs::Permissions::from_mode(0o600)).unwrap();
    f.eq("chmod → source", mode(&src.join("new")), 0o600);
    lchown(d.join("new"), Some(1000), Some(1001)).unwrap();
    let md = fs::metadata(src.join("new")).unwrap();
    f.eq("chown → source", (md.uid(), md.gid()), (1000, 1001));
    truncate(&d.join("keep"), 3).unwrap();
    f.eq("truncate → source", read(&src.join("keep")), "hos".into());
    utimens(&d.join("new"), (1_000_000_000, 5), (1_000_000_000, 7)).unwrap();
    let md = fs::metadata(src.join("new")).unwrap();
    f.eq(
        "utimens → source",
        (md.mtime(), md.mtime_nsec()),
        (1_000_000_000, 7),
    );
    if cfg!(feature = "portable") {
        // xattrs: the portable path has none, in a graft too (docs/design.md)
        f.errno(
            "setxattr (no xattrs on the portable path)",
            lsetxattr(&d.join("new"), "user.k", b"v"),
            &[libc::ENOTSUP],
        );
    } else {
        lsetxattr(&d.join("new"), "user.k", b"v").unwrap();
        f.eq(
            "setxattr → source",
            lgetxattr(&src.join("new"), "user.k").ok(),
            Some(b"v".to_vec()),
        );
    }
    fs::remove_file(d.join("sub/x")).unwrap();
    fs::remove_dir(d.join("sub")).unwrap();
    f.check("unlink+rmdir → source", !src.join("sub").exists());
    // The source's "keep" shadowed the layers' "keep": removing it shows nothing below.
    fs::remove_file(d.join("keep")).unwrap();
    f.check("unlink keep → source", !src.join("keep").exists());
    f.errno(
        "stat data/keep after unlink (the layers' file must not show)",
        fs::symlink_metadata(d.join("keep")),
        &[libc::ENOENT],
    );
    fs::write(d.join("old"), "mine").unwrap();
    f.eq(
        "create over a name only the layers hold → source",
        read(&src.join("old")),
        "mine".into(),
    );
    // The rest of the union still behaves as a union.
    fs::write(m.path("top"), "t2").unwrap();

    let after = upper_lines(&m);
    let mut expected = before.clone();
    expected.extend(after.iter().filter(|l| l.starts_with("top:")).cloned());
    expected.sort();
    f.eq(
        "upper: nothing but the copy-up of /top (no data/*, no whiteouts)",
        after.clone(),
        expected,
    );
    f.check(
        "upper holds nothing below the graft target",
        !after.iter().any(|l| l.starts_with("data/")),
    );
    drop(m);
    f.assert_none();
}

#[test]
fn a_graft_over_an_existing_directory_hides_what_the_layers_hold_there() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0).file("opt/a", "a0").dir("opt/sub");
    l.lower(1).file("opt/b", "b1").file("opt/sub/deep", "d");
    l.upper().file("opt/u", "u");
    let h = Host::new();
    let src = h.dir("src");
    h.file("src/c", "c");
    let m = mount(l.clone_fresh(), &[bind(&src, "/opt")]);
    let mut f = Findings::default();
    f.eq("listing of /opt", names(&m.path("opt")), vec!["c".into()]);
    for hidden in ["opt/a", "opt/b", "opt/u", "opt/sub", "opt/sub/deep"] {
        f.errno(
            &format!("stat {hidden}"),
            fs::symlink_metadata(m.path(hidden)),
            &[libc::ENOENT],
        );
    }
    fs::write(m.path("opt/a"), "new-a").unwrap();
    f.eq(
        "create opt/a → source",
        read(&src.join("a")),
        "new-a".into(),
    );
    f.eq(
        "the layer's opt/a is untouched",
        read(&m.layers().lower(0).path("opt/a")),
        "a0".into(),
    );
    f.eq(
        "the upper's opt/u is untouched",
        read(&m.upper.as_ref().unwrap().join("opt/u")),
        "u".into(),
    );
    f.check(
        "no opt/a in the upper",
        !m.upper.as_ref().unwrap().join("opt/a").exists(),
    );
    drop(m);
    f.assert_none();
}

#[test]
fn a_single_file_bind_sits_beside_the_layers_files() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0)
        .file("etc/hosts", "layer-hosts")
        .file("etc/passwd", "root:x");
    let h = Host::new();
    let resolv = h.file("resolv.conf", "nameserver 1.1.1.1\n");
    let hosts = h.file("hosts", "host-hosts");
    let m = mount(
        l.clone_fresh(),
        &[
            bind(&resolv, "/etc/resolv.conf"),
            bind(&hosts, "/etc/hosts"),
        ],
    );
    let mut f = Findings::default();
    f.eq(
        "listing of /etc",
        names(&m.path("etc")),
        vec!["hosts".into(), "passwd".into(), "resolv.conf".into()],
    );
    f.eq(
        "/etc/resolv.conf",
        read(&m.path("etc/resolv.conf")),
        "nameserver 1.1.1.1\n".into(),
    );
    f.eq(
        "/etc/hosts (bound over the layers' file)",
        read(&m.path("etc/hosts")),
        "host-hosts".into(),
    );
    f.eq("/etc/passwd", read(&m.path("etc/passwd")), "root:x".into());
    fs::write(m.path("etc/resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
    f.eq(
        "write through the mount → host file",
        read(&resolv),
        "nameserver 9.9.9.9\n".into(),
    );
    f.errno(
        "unlink of a file bind target",
        fs::remove_file(m.path("etc/resolv.conf")),
        &[libc::EBUSY],
    );
    f.errno(
        "rename of a file bind target",
        renameat2(&m.path("etc/hosts"), &m.path("etc/h2"), 0),
        &[libc::EBUSY],
    );
    f.errno(
        "rename onto a file bind target",
        renameat2(&m.path("etc/passwd"), &m.path("etc/hosts"), 0),
        &[libc::EBUSY, libc::EXDEV],
    );
    f.errno(
        "mkdir inside a file bind",
        fs::create_dir(m.path("etc/hosts/x")),
        &[libc::ENOTDIR],
    );
    fs::write(m.path("etc/new"), "n").unwrap();
    f.check(
        "host files still there",
        resolv.is_file() && hosts.is_file(),
    );
    f.eq("host hosts", read(&hosts), "host-hosts".into());
    let upper = m.upper.clone().unwrap();
    f.check(
        "a new file beside the binds goes to the upper",
        upper.join("etc/new").is_file(),
    );
    f.check(
        "nothing at the bind targets in the upper",
        !upper.join("etc/resolv.conf").exists() && !upper.join("etc/hosts").exists(),
    );
    drop(m);
    f.assert_none();
}

#[test]
fn missing_parents_of_a_target_are_made_in_the_upper() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).dir("srv").file("srv/readme", "r");
    let h = Host::new();
    let src = h.dir("src");
    let m = mount(
        l.clone_fresh(),
        &[
            h.root_arg(),
            volume("appdata:/srv/app/data"),
            bind(&src, "/x/y/z"),
        ],
    );
    let mut f = Findings::default();
    let upper = m.upper.clone().unwrap();
    for d in ["srv/app", "x", "x/y"] {
        f.check(
            &format!("/{d} is a directory in the mount"),
            m.path(d).is_dir(),
        );
        f.check(
            &format!("{d} is a directory in the upper"),
            upper.join(d).is_dir(),
        );
    }
    f.eq(
        "listing of /srv/app",
        names(&m.path("srv/app")),
        vec!["data".into()],
    );
    f.eq("listing of /x/y", names(&m.path("x/y")), vec!["z".into()]);
    f.check(
        "the target itself is the volume",
        fs::write(m.path("srv/app/data/f"), "f").is_ok() && h.vol("appdata").join("f").is_file(),
    );
    // A directory whose listing shows a graft target is not empty.
    f.errno(
        "rmdir of a made parent that holds only a target",
        fs::remove_dir(m.path("x/y")),
        &[libc::ENOTEMPTY, libc::EBUSY],
    );
    f.check("/x/y/z still reachable", m.path("x/y/z").is_dir());
    drop(m);
    f.assert_none();
}

#[test]
fn a_read_only_graft_refuses_every_write_with_erofs() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    let ro = h.dir("ro");
    h.file("ro/f", "ro-file");
    h.file("ro/d/g", "g");
    h.dir("ro/empty");
    lsetxattr(&ro.join("f"), "user.k", b"v").unwrap();
    let rw = h.dir("rw");
    let rofile = h.file("rofile", "rof");
    let m = mount(
        l.clone_fresh(),
        &[
            h.root_arg(),
            bind(&ro, "/ro:ro"),
            bind(&rw, "/rw"),
            bind(&rofile, "/etc/rofile:ro"),
            volume("rovol:/rovol:ro"),
        ],
    );
    let before = tree(&ro);
    let rofile_before = (read(&rofile), mode(&rofile));
    let p = |r: &str| m.path(r);
    let mut f = Findings::default();
    f.eq("read ro/f", read(&p("ro/f")), "ro-file".into());
    let e = &[libc::EROFS];
    let opt = |flags: libc::c_int| move |q: &Path| open(q, flags, 0o644);
    for (what, flags) in [
        ("open O_WRONLY", libc::O_WRONLY),
        ("open O_RDWR", libc::O_RDWR),
        ("open O_RDONLY|O_TRUNC", libc::O_RDONLY | libc::O_TRUNC),
        ("open O_WRONLY|O_APPEND", libc::O_WRONLY | libc::O_APPEND),
    ] {
        f.errno(&format!("{what} ro/f"), opt(flags)(&p("ro/f")), e);
        f.errno(
            &format!("{what} etc/rofile"),
            opt(flags)(&p("etc/rofile")),
            e,
        );
    }
    f.errno(
        "create ro/new",
        open(&p("ro/new"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        e,
    );
    f.errno(
        "create rovol/new",
        open(&p("rovol/new"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        e,
    );
    f.errno("mkdir ro/nd", fs::create_dir(p("ro/nd")), e);
    f.errno("mknod ro/fifo", mkfifo(&p("ro/fifo")), e);
    f.errno("symlink ro/sl", symlink("x", p("ro/sl")), e);
    f.errno("link ro/f ro/f2", link(&p("ro/f"), &p("ro/f2")), e);
    f.errno(
        "rename ro/f ro/f3",
        renameat2(&p("ro/f"), &p("ro/f3"), 0),
        e,
    );
    f.errno(
        "rename ro/d/g ro/g",
        renameat2(&p("ro/d/g"), &p("ro/g"), 0),
        e,
    );
    f.errno(
        "exchange ro/f ro/d",
        renameat2(&p("ro/f"), &p("ro/d"), libc::RENAME_EXCHANGE),
        e,
    );
    f.errno("unlink ro/f", fs::remove_file(p("ro/f")), e);
    f.errno("rmdir ro/empty", fs::remove_dir(p("ro/empty")), e);
    f.errno(
        "chmod ro/f",
        fs::set_permissions(p("ro/f"), fs::Permissions::from_mode(0o600)),
        e,
    );
    f.errno(
        "chmod ro (the target itself)",
        fs::set_permissions(p("ro"), fs::Permissions::from_mode(0o700)),
        e,
    );
    f.errno("chown ro/f", lchown(p("ro/f"), Some(1000), Some(1000)), e);
    f.errno("truncate ro/f", truncate(&p("ro/f"), 0), e);
    f.errno("utimens ro/f", utimens(&p("ro/f"), (1, 0), (1, 0)), e);
    f.errno("setxattr ro/f", lsetxattr(&p("ro/f"), "user.n", b"x"), e);
    f.errno("removexattr ro/f", lremovexattr(&p("ro/f"), "user.k"), e);
    f.errno("truncate etc/rofile", truncate(&p("etc/rofile"), 0), e);
    f.errno(
        "chmod etc/rofile",
        fs::set_permissions(p("etc/rofile"), fs::Permissions::from_mode(0o600)),
        e,
    );
    f.eq("ro source unchanged", tree(&ro), before);
    f.eq(
        "ro file bind unchanged",
        (read(&rofile), mode(&rofile)),
        rofile_before,
    );
    f.check("ro volume still empty", names(&h.vol("rovol")).is_empty());
    // The rest of the tree stays writable.
    f.check(
        "write into a rw bind",
        fs::write(p("rw/x"), "x").is_ok() && rw.join("x").is_file(),
    );
    f.check("write in the union", fs::write(p("top"), "t2").is_ok());
    f.check("mkdir in the union", fs::create_dir(p("newdir")).is_ok());
    f.check(
        "write beside the ro file bind",
        fs::write(p("etc/other"), "o").is_ok(),
    );
    drop(m);
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Boundaries: nesting, EXDEV, EBUSY
// ---------------------------------------------------------------------------------------------

#[test]
fn nested_grafts_work_and_crossing_a_boundary_is_exdev() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0)
        .file("top", "t")
        .dir("topdir")
        .file("data/layer", "l");
    let h = Host::new();
    let cache = h.dir("cache");
    h.file("cache/c", "c");
    let m = mount(
        l.clone_fresh(),
        &[
            h.root_arg(),
            volume("data:/data:nocopy"),
            bind(&cache, "/data/cache"),
        ],
    );
    let vol = h.vol("data");
    let p = |r: &str| m.path(r);
    let mut f = Findings::default();
    f.eq("listing of /data", names(&p("data")), vec!["cache".into()]);
    f.eq("read /data/cache/c", read(&p("data/cache/c")), "c".into());
    fs::write(p("data/f"), "f").unwrap();
    fs::write(p("data/cache/g"), "g").unwrap();
    f.check("data/f → volume", vol.join("f").is_file());
    f.check("data/cache/g → bind source", cache.join("g").is_file());
    f.check(
        "the volume holds no cache entry",
        !vol.join("cache").exists() && !vol.join("g").exists(),
    );
    f.eq(
        "listing of /data after writes",
        names(&p("data")),
        vec!["cache".into(), "f".into()],
    );

    let x = &[libc::EXDEV];
    f.errno(
        "rename volume → nested bind",
        renameat2(&p("data/f"), &p("data/cache/f"), 0),
        x,
    );
    f.errno(
        "rename nested bind → volume",
        renameat2(&p("data/cache/g"), &p("data/g"), 0),
        x,
    );
    f.errno(
        "rename NOREPLACE volume → nested bind",
        renameat2(&p("data/f"), &p("data/cache/f"), libc::RENAME_NOREPLACE),
        x,
    );
    f.errno(
        "exchange across the nested boundary",
        renameat2(&p("data/f"), &p("data/cache/g"), libc::RENAME_EXCHANGE),
        x,
    );
    f.errno(
        "rename volume → union",
        renameat2(&p("data/f"), &p("f"), 0),
        x,
    );
    f.errno(
        "rename union file → volume",
        renameat2(&p("top"), &p("data/top"), 0),
        x,
    );
    f.errno(
        "rename union dir → volume",
        renameat2(&p("topdir"), &p("data/topdir"), 0),
        x,
    );
    f.errno(
        "exchange union ↔ volume",
        renameat2(&p("top"), &p("data/f"), libc::RENAME_EXCHANGE),
        x,
    );
    f.errno(
        "link volume → nested bind",
        link(&p("data/f"), &p("data/cache/f")),
        x,
    );
    f.errno("link union → volume", link(&p("top"), &p("data/top")), x);
    f.errno("link volume → union", link(&p("data/f"), &p("f2")), x);

    let b = &[libc::EBUSY];
    f.errno(
        "rmdir of the nested target",
        fs::remove_dir(p("data/cache")),
        b,
    );
    f.errno("rmdir of the outer target", fs::remove_dir(p("data")), b);
    f.errno(
        "rename of the nested target",
        renameat2(&p("data/cache"), &p("data/c2"), 0),
        b,
    );
    f.errno(
        "rename of the outer target",
        renameat2(&p("data"), &p("d2"), 0),
        b,
    );
    f.errno(
        "exchange with the outer target",
        renameat2(&p("topdir"), &p("data"), libc::RENAME_EXCHANGE),
        b,
    );
    f.errno(
        "rename a union dir onto the outer target",
        renameat2(&p("topdir"), &p("data"), 0),
        &[libc::EBUSY, libc::EXDEV],
    );

    // Inside one graft, rename and link work.
    f.check(
        "rename within the volume",
        renameat2(&p("data/f"), &p("data/f2"), 0).is_ok() && vol.join("f2").is_file(),
    );
    f.check(
        "link within the volume",
        link(&p("data/f2"), &p("data/f3")).is_ok() && vol.join("f3").is_file(),
    );
    f.check(
        "rename within the nested bind",
        renameat2(&p("data/cache/g"), &p("data/cache/g2"), 0).is_ok() && cache.join("g2").is_file(),
    );
    f.eq(
        "bind source at the end",
        names(&cache),
        vec!["c".into(), "g2".into()],
    );
    f.eq(
        "volume at the end",
        names(&vol),
        vec!["f2".into(), "f3".into()],
    );
    f.check(
        "union /top intact",
        read(&p("top")) == "t" && p("topdir").is_dir(),
    );
    let upper = upper_lines(&m);
    f.check(
        &format!("nothing below /data in the upper: {upper:?}"),
        !upper.iter().any(|l| l.starts_with("data")),
    );
    drop(m);
    f.assert_none();
}

/// A nested target whose name also exists in the outer graft's source: the nested graft
/// hides that entry, and removing the target must not remove the hidden entry of the outer
/// source (nor anything else): EBUSY, as for any mount point.
#[test]
fn removing_a_nested_target_is_ebusy_and_never_touches_the_outer_source() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    h.volume_ok(&["create", "data"]);
    let vol = h.vol("data");
    fs::create_dir(vol.join("cache")).unwrap();
    fs::write(vol.join("cfg"), "volume's own cfg").unwrap();
    fs::write(vol.join("keep"), "k").unwrap();
    let cache = h.dir("cache");
    let cfg = h.file("cfg", "bound cfg");
    let nocache = h.dir("nocache");
    let m = mount(
        l.clone_fresh(),
        &[
            h.root_arg(),
            volume("data:/data"),
            bind(&cache, "/data/cache"),
            bind(&cfg, "/data/cfg"),
            bind(&nocache, "/data/only-nested"),
        ],
    );
    let p = |r: &str| m.path(r);
    let mut f = Findings::default();
    f.eq(
        "read /data/cfg (the nested bind hides the volume's cfg)",
        read(&p("data/cfg")),
        "bound cfg".into(),
    );
    f.errno(
        "rmdir /data/cache (volume also has an empty cache dir)",
        fs::remove_dir(p("data/cache")),
        &[libc::EBUSY],
    );
    f.check(
        "the volume's hidden cache dir still exists",
        vol.join("cache").is_dir(),
    );
    f.errno(
        "unlink /data/cfg (volume also has a cfg file)",
        fs::remove_file(p("data/cfg")),
        &[libc::EBUSY],
    );
    f.eq(
        "the volume's hidden cfg",
        read(&vol.join("cfg")),
        "volume's own cfg".into(),
    );
    f.check("the bound cfg still exists", cfg.is_file());
    f.errno(
        "rmdir /data/only-nested (no such name in the volume)",
        fs::remove_dir(p("data/only-nested")),
        &[libc::EBUSY],
    );
    f.check("/data/cache still reachable", p("data/cache").is_dir());
    f.check(
        "/data/only-nested still reachable",
        p("data/only-nested").is_dir(),
    );
    drop(m);
    f.assert_none();
}

#[test]
fn statfs_inside_a_graft_reports_the_source_filesystem() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    let t = TmpfsGuard::new(&h.p("tmpfs"));
    let src = t.path.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    let one = t.path.join("one");
    fs::write(&one, "1").unwrap();
    let m = mount(
        l.clone_fresh(),
        &[
            h.root_arg(),
            bind(&src, "/t"),
            bind(&one, "/one"),
            volume("vol:/v"),
        ],
    );
    let fig = |p: &Path| {
        let s = statfs(p).unwrap_or_else(|e| panic!("statfs {}: {e}", p.display()));
        (s.f_blocks, s.f_bsize, s.f_type)
    };
    let mut f = Findings::default();
    let tmpfs = fig(&src);
    let root = fig(&m.path(""));
    f.check(
        &format!("test setup: the tmpfs differs from the union's figures ({tmpfs:?} vs {root:?})"),
        tmpfs.0 != root.0,
    );
    let without_type = |x: (u64, i64, i64)| (x.0, x.1);
    f.eq(
        "statfs of the graft target (blocks, bsize)",
        without_type(fig(&m.path("t"))),
        without_type(tmpfs),
    );
    f.eq(
        "statfs of a file inside the graft",
        without_type(fig(&m.path("t/f"))),
        without_type(tmpfs),
    );
    f.eq(
        "statfs of a single-file bind",
        without_type(fig(&m.path("one"))),
        without_type(tmpfs),
    );
    f.eq(
        "statfs of a volume (the store's filesystem)",
        without_type(fig(&m.path("v"))),
        without_type(fig(&h.store())),
    );
    // Free space moves with the source.
    fs::write(m.path("t/big"), vec![7u8; 1 << 20]).unwrap();
    let (a, b) = (statfs(&m.path("t")).unwrap(), statfs(&src).unwrap());
    f.eq(
        "f_bfree inside the graft after writing 1 MiB",
        a.f_bfree,
        b.f_bfree,
    );
    f.check(
        "f_bfree dropped on the tmpfs",
        statfs(&src).unwrap().f_bfree < fig(&src).0,
    );
    drop(m);
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Host and mount see each other's changes
// ---------------------------------------------------------------------------------------------

#[test]
fn host_side_changes_show_through_the_mount_within_one_second() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    let src = h.dir("src");
    h.file("src/same", "aaaa");
    h.file("src/grow", "1");
    h.file("src/gone", "g");
    h.file("src/old-name", "o");
    h.file("src/d/x", "x");
    let hf = h.file("hostfile", "host1");
    let m = mount(l.clone_fresh(), &[bind(&src, "/data"), bind(&hf, "/hf")]);
    let p = |r: &str| m.path(r);
    // Let the kernel cache everything it may: contents, attributes, entries, a listing,
    // and a failed lookup.
    assert_eq!(read(&p("data/same")), "aaaa");
    assert_eq!(read(&p("data/grow")), "1");
    assert_eq!(mode(&p("data/grow")), 0o644);
    assert!(p("data/gone").is_file());
    assert!(p("data/old-name").is_file());
    assert_eq!(names(&p("data/d")), vec!["x".to_string()]);
    assert!(!p("data/new").exists());
    assert_eq!(read(&p("hf")), "host1");

    fs::write(src.join("same"), "bbbb").unwrap();
    fs::write(src.join("grow"), "22222").unwrap();
    fs::set_permissions(src.join("grow"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("gone")).unwrap();
    fs::rename(src.join("old-name"), src.join("new-name")).unwrap();
    fs::write(src.join("d/y"), "y").unwrap();
    fs::write(src.join("new"), "new").unwrap();
    fs::write(&hf, "host2").unwrap();
    let since = Instant::now();

    let mut f = Findings::default();
    let mut want = |what: &str, cond: &dyn Fn() -> bool| {
        f.check(
            &format!("{what}: not seen within {HOST_SEEN:?}"),
            seen_within(since, cond),
        );
    };
    want("same-size rewrite", &|| read(&p("data/same")) == "bbbb");
    want("size change", &|| read(&p("data/grow")) == "22222");
    want("chmod", &|| mode(&p("data/grow")) == 0o600);
    want("removal", &|| !p("data/gone").exists());
    want("rename (old name gone)", &|| !p("data/old-name").exists());
    want("rename (new name there)", &|| {
        read(&p("data/new-name")) == "o"
    });
    want("new file in a listed dir", &|| {
        names(&p("data/d")) == ["x".to_string(), "y".to_string()]
    });
    want("new file after a failed lookup", &|| {
        read(&p("data/new")) == "new"
    });
    want("single-file bind rewrite", &|| read(&p("hf")) == "host2");
    drop(m);
    f.assert_none();
}

#[test]
fn mount_side_changes_show_on_the_host_at_once() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    let src = h.dir("src");
    h.file("src/f", "f");
    h.file("src/r", "r");
    let hf = h.file("hostfile", "host1");
    let m = mount(l.clone_fresh(), &[bind(&src, "/data"), bind(&hf, "/hf")]);
    let p = |r: &str| m.path(r);
    let mut f = Findings::default();
    // Written and still open: no close, no fsync.
    let mut w = fs::File::create(p("data/w")).unwrap();
    w.write_all(b"hello").unwrap();
    f.eq(
        "write(2) without close",
        read(&src.join("w")),
        "hello".into(),
    );
    let mut w2 = fs::OpenOptions::new().write(true).open(p("hf")).unwrap();
    w2.write_all(b"HOST").unwrap();
    f.eq("write(2) into a file bind", read(&hf), "HOST1".into());
    fs::create_dir(p("data/nd")).unwrap();
    f.check("mkdir", src.join("nd").is_dir());
    fs::remove_file(p("data/f")).unwrap();
    f.check("unlink", !src.join("f").exists());
    fs::set_permissions(p("data/r"), fs::Permissions::from_mode(0o640)).unwrap();
    f.eq("chmod", mode(&src.join("r")), 0o640);
    fs::rename(p("data/r"), p("data/nd/r")).unwrap();
    f.check(
        "rename",
        src.join("nd/r").is_file() && !src.join("r").exists(),
    );
    drop((w, w2));
    drop(m);
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Filling new volumes
// ---------------------------------------------------------------------------------------------

fn state_layers() -> Layers {
    let l = Layers::new(2);
    l.lower(1)
        .file("app/state/a", "a-data")
        .chown("app/state/a", 1234, 5678)
        .chmod("app/state/a", 0o640)
        .mtime("app/state/a", 1_500_000_000, 123)
        .file("app/state/sub/b", "b")
        .file("app/state/gone", "g")
        .symlink("app/state/link", "a")
        .file("elsewhere/z", "z");
    l.lower(0)
        .whiteout("app/state/gone")
        .file("app/state/top0", "t0");
    l.upper().file("app/state/up", "u");
    l
}

#[test]
fn a_new_empty_volume_is_first_filled_with_what_the_layers_hold() {
    need_root!();
    let tpl = state_layers();
    let h = Host::new();
    // Made by `volume create` and still empty counts as new, as made by the mount itself.
    h.volume_ok(&["create", "pre"]);
    let l = tpl.clone_fresh();
    let upper_before = upper_snapshot(l.upper.as_ref().unwrap(), &l.lowers);
    let m = mount(
        l,
        &[
            h.root_arg(),
            volume("st:/app/state"),
            volume("pre:/elsewhere"),
        ],
    );
    let vol = h.vol("st");
    let visible: Vec<String> = ["a", "link", "sub", "top0", "up"]
        .map(String::from)
        .to_vec();
    let mut f = Findings::default();
    f.eq(
        "volume content (what the union shows)",
        names(&vol),
        visible.clone(),
    );
    f.eq("through the mount", names(&m.path("app/state")), visible);
    let md = fs::symlink_metadata(vol.join("a")).unwrap();
    f.eq("a: content", read(&vol.join("a")), "a-data".into());
    f.eq("a: owner", (md.uid(), md.gid()), (1234, 5678));
    f.eq("a: mode", md.mode() & 0o7777, 0o640);
    f.eq(
        "a: mtime",
        (md.mtime(), md.mtime_nsec()),
        (1_500_000_000, 123),
    );
    f.eq(
        "link: a symlink to a",
        fs::read_link(vol.join("link")).ok(),
        Some(PathBuf::from("a")),
    );
    f.eq("sub/b", read(&vol.join("sub/b")), "b".into());
    f.eq("up (from the upper)", read(&vol.join("up")), "u".into());
    f.eq(
        "pre-created volume filled",
        names(&h.vol("pre")),
        vec!["z".into()],
    );
    // Filling reads the layers; it writes nothing into them.
    f.eq("upper after filling", upper_lines(&m), upper_before);
    drop(m);
    f.assert_none();
}

#[test]
fn nocopy_leaves_a_new_volume_empty() {
    need_root!();
    let tpl = state_layers();
    let h = Host::new();
    let m = mount(
        tpl.clone_fresh(),
        &[
            h.root_arg(),
            volume("nc:/app/state:nocopy"),
            volume("nc2:/elsewhere:ro,nocopy"),
        ],
    );
    let mut f = Findings::default();
    f.check("volume nc empty", names(&h.vol("nc")).is_empty());
    f.check("volume nc2 empty", names(&h.vol("nc2")).is_empty());
    f.check("/app/state empty", names(&m.path("app/state")).is_empty());
    f.check("/elsewhere empty", names(&m.path("elsewhere")).is_empty());
    f.errno(
        "nc2 is read-only",
        fs::write(m.path("elsewhere/x"), "x"),
        &[libc::EROFS],
    );
    drop(m);
    f.assert_none();
}

#[test]
fn a_volume_with_content_is_used_as_is() {
    need_root!();
    let tpl = state_layers();
    let h = Host::new();
    h.volume_ok(&["create", "full"]);
    fs::write(h.vol("full").join("mine"), "mine").unwrap();
    let m = mount(
        tpl.clone_fresh(),
        &[h.root_arg(), volume("full:/app/state")],
    );
    let mut f = Findings::default();
    f.eq(
        "through the mount",
        names(&m.path("app/state")),
        vec!["mine".into()],
    );
    f.eq("volume", names(&h.vol("full")), vec!["mine".into()]);
    drop(m);
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Volumes outlive mounts and uppers
// ---------------------------------------------------------------------------------------------

#[test]
fn volume_data_survives_unmount_a_fresh_upper_and_removal_of_the_old_one() {
    need_root!();
    let tpl = Layers::new(1);
    tpl.lower(0)
        .file("app/state/seed", "seed")
        .file("app/bin", "b");
    let h = Host::new();
    let args = [h.root_arg(), volume("appdata:/app/state")];

    let m1 = mount(tpl.clone_fresh(), &args);
    fs::write(m1.path("app/state/db"), "v1").unwrap();
    fs::write(m1.path("app/notvol"), "in the upper").unwrap();
    let l1 = m1.into_layers();
    let old_upper = l1.upper.clone().unwrap();
    assert!(old_upper.join("app/notvol").is_file(), "test setup");
    fs::remove_dir_all(&old_upper).unwrap();
    drop(l1);

    let m2 = mount(tpl.clone_fresh(), &args);
    let mut f = Findings::default();
    f.eq(
        "db after a new upper",
        read(&m2.path("app/state/db")),
        "v1".into(),
    );
    f.eq(
        "seed after a new upper",
        read(&m2.path("app/state/seed")),
        "seed".into(),
    );
    f.errno(
        "notvol (was in the removed upper)",
        fs::symlink_metadata(m2.path("app/notvol")),
        &[libc::ENOENT],
    );
    fs::write(m2.path("app/state/db"), "v2").unwrap();
    drop(m2);
    f.eq(
        "db on the host",
        read(&h.vol("appdata").join("db")),
        "v2".into(),
    );

    // Gone only when the volume is removed.
    h.volume_ok(&["rm", "appdata"]);
    f.check(
        "volume dir removed",
        !h.store().join("volumes/appdata").exists(),
    );
    f.check("not listed", !h.volume_names().contains(&"appdata".into()));
    let m3 = mount(tpl.clone_fresh(), &args);
    f.errno(
        "db after volume rm",
        fs::symlink_metadata(m3.path("app/state/db")),
        &[libc::ENOENT],
    );
    f.eq(
        "a new volume of that name is filled again",
        read(&m3.path("app/state/seed")),
        "seed".into(),
    );
    drop(m3);
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// The volume store
// ---------------------------------------------------------------------------------------------

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn volume_create_ls_inspect_rm_prune() {
    need_root!();
    let h = Host::new();
    let mut f = Findings::default();
    f.eq(
        "create prints the name",
        h.volume_ok(&["create", "appdata"]),
        "appdata\n".into(),
    );
    let anon = h.volume_ok(&["create"]).trim().to_string();
    f.check(
        &format!("anonymous id is 64 hex: {anon:?}"),
        is_hex64(&anon),
    );
    let out = h.volume(&["create", "appdata"]);
    f.check("create of an existing name fails", !out.status.success());
    f.eq("ls --format json", h.volume_names(), {
        let mut v = vec!["appdata".to_string(), anon.clone()];
        v.sort();
        v
    });
    let text = h.volume_ok(&["ls"]);
    f.check(
        &format!("ls (text) names both: {text}"),
        text.lines().any(|l| l.contains("appdata")) && text.lines().any(|l| l.contains(&anon)),
    );
    fs::write(h.vol("appdata").join("blob"), vec![0u8; 1000]).unwrap();
    let i = h.inspect("appdata");
    f.eq("inspect name", i["name"].as_str(), Some("appdata"));
    f.eq("inspect anonymous", i["anonymous"].as_bool(), Some(false));
    f.eq(
        "inspect path",
        i["path"].as_str().map(PathBuf::from),
        Some(h.vol("appdata")),
    );
    f.check(
        "inspect created is a number",
        i["created"].as_u64().is_some_and(|c| c > 1_600_000_000),
    );
    f.eq("inspect size", i["size"].as_u64(), Some(1000));
    f.eq(
        "inspect mounts",
        i["mounts"].as_array().map(Vec::len),
        Some(0),
    );
    f.eq(
        "inspect anonymous of the anonymous one",
        h.inspect(&anon)["anonymous"].as_bool(),
        Some(true),
    );
    let out = h.volume(&["inspect", "nope"]);
    f.check("inspect of a missing volume fails", !out.status.success());
    h.volume_ok(&["rm", "appdata"]);
    f.check("rm removes the data", !h.vol("appdata").exists());
    f.eq("after rm", h.volume_names(), vec![anon.clone()]);
    let out = h.volume(&["rm", "appdata"]);
    f.check("rm of a missing volume fails", !out.status.success());
    h.volume_ok(&["create", "p1"]);
    let pruned = h.volume_ok(&["prune"]);
    f.check(
        &format!("prune names what it removed: {pruned:?}"),
        pruned.contains("p1") && pruned.contains(&anon),
    );
    f.check(
        "prune removed everything unused",
        h.volume_names().is_empty(),
    );
    f.assert_none();
}

#[test]
fn a_volume_in_use_is_not_removed_without_force_and_not_pruned() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    h.volume_ok(&["create", "unused"]);
    let m = mount(
        l.clone_fresh(),
        &[h.root_arg(), volume("busy:/busy"), volume("forced:/forced")],
    );
    fs::write(m.path("busy/x"), "x").unwrap();
    let mut f = Findings::default();
    let i = h.inspect("busy");
    let mounts = i["mounts"].as_array().cloned().unwrap_or_default();
    f.eq("inspect: one live mount", mounts.len(), 1);
    if let Some(u) = mounts.first() {
        f.eq("inspect: pid", u["pid"].as_u64(), m.pid().map(u64::from));
        f.eq(
            "inspect: mountpoint",
            u["mountpoint"].as_str().map(PathBuf::from),
            Some(m.mnt.clone()),
        );
    }
    let out = h.volume(&["rm", "busy"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    f.check("rm of a volume in use fails", !out.status.success());
    f.eq(
        &format!("rm refusal: one line on stderr ({err:?})"),
        err.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
    );
    f.check(
        "the volume's data is intact",
        h.vol("busy").join("x").is_file(),
    );
    f.eq(
        "still readable through the mount",
        read(&m.path("busy/x")),
        "x".into(),
    );
    let pruned = h.volume_ok(&["prune"]);
    f.eq(
        "prune removes only the unused one",
        pruned.trim().to_string(),
        "unused".to_string(),
    );
    f.eq(
        "volumes left after prune",
        h.volume_names(),
        vec!["busy".to_string(), "forced".to_string()],
    );
    let out = h.volume(&["rm", "--force", "forced"]);
    f.check(
        "rm --force of a volume in use succeeds",
        out.status.success(),
    );
    f.check(
        "rm --force removed the data",
        !h.store().join("volumes/forced").exists(),
    );
    drop(m);
    h.volume_ok(&["rm", "busy"]);
    f.check("rm after unmount", h.volume_names().is_empty());
    f.assert_none();
}

#[test]
fn an_anonymous_volume_is_fresh_for_every_mount() {
    need_root!();
    let tpl = Layers::new(1);
    tpl.lower(0).file("cache/seed", "s");
    let h = Host::new();
    let args = [h.root_arg(), volume(":/cache")];
    let m1 = mount(tpl.clone_fresh(), &args);
    fs::write(m1.path("cache/one"), "1").unwrap();
    let m2 = mount(tpl.clone_fresh(), &args);
    let mut f = Findings::default();
    let names_now = h.volume_names();
    f.eq("two anonymous volumes", names_now.len(), 2);
    for n in &names_now {
        f.check(&format!("{n}: 64 hex"), is_hex64(n));
        let i = h.inspect(n);
        f.eq(
            &format!("{n}: anonymous"),
            i["anonymous"].as_bool(),
            Some(true),
        );
        f.eq(
            &format!("{n}: one mount"),
            i["mounts"].as_array().map(Vec::len),
            Some(1),
        );
    }
    f.errno(
        "the second mount does not see the first one's file",
        fs::symlink_metadata(m2.path("cache/one")),
        &[libc::ENOENT],
    );
    f.eq(
        "filled like any new volume",
        read(&m2.path("cache/seed")),
        "s".into(),
    );
    drop((m1, m2));
    f.assert_none();
}

#[test]
fn two_mounts_share_a_named_volume() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    let args = [h.root_arg(), volume("shared:/s")];
    let a = mount(l.clone_fresh(), &args);
    let b = mount(l.clone_fresh(), &args);
    let mut f = Findings::default();
    let i = h.inspect("shared");
    let mut got: Vec<(Option<u64>, Option<String>)> = i["mounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|u| {
            (
                u["pid"].as_u64(),
                u["mountpoint"].as_str().map(String::from),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(Option<u64>, Option<String>)> = [&a, &b]
        .iter()
        .map(|m| (m.pid().map(u64::from), Some(m.mnt.display().to_string())))
        .collect();
    want.sort();
    f.eq("inspect lists both mounts", got, want);
    assert!(!b.path("s/x").exists());
    fs::write(a.path("s/x"), "from a").unwrap();
    let since = Instant::now();
    f.check(
        "a file written through one mount shows through the other within 1 s",
        seen_within(since, || read(&b.path("s/x")) == "from a"),
    );
    drop((a, b));
    f.assert_none();
}

// ---------------------------------------------------------------------------------------------
// Symlinks in a source are never followed by the daemon
// ---------------------------------------------------------------------------------------------

/// The kernel looked a directory up through the mount; then, on the host, the directory is
/// replaced by a symlink. Requests the kernel sends for the stale directory (here through an
/// fd opened before the swap, so the kernel never re-resolves the name itself) reach the
/// daemon, which walks the source: it must not follow the symlink, whatever it points at.
#[test]
fn a_directory_swapped_for_a_symlink_on_the_host_is_never_followed() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    let src = h.dir("src");
    let outside = h.dir("outside");
    h.file("outside/victim", "precious");
    h.file("outside/e/inner", "precious too");
    // In-source target: even that is not followed.
    h.file("src/other/victim", "in-source");
    for name in ["abs", "rel", "insrc", "anc"] {
        h.file(&format!("src/{name}/victim"), "mine");
        h.dir(&format!("src/{name}/e"));
    }
    let m = mount(l.clone_fresh(), &[bind(&src, "/data")]);
    let dirfd = |rel: &str| open(&m.path(rel), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    let fds = [
        ("abs", dirfd("data/abs")),
        ("rel", dirfd("data/rel")),
        ("insrc", dirfd("data/insrc")),
        ("anc", dirfd("data/anc/e")),
    ];
    // A victim looked up (and cached) before the swap, too.
    assert!(m.path("data/abs/victim").is_file());
    let outside_before = tree(&outside);
    let other_before = tree(&src.join("other"));
    let swap = |name: &str, target: &Path| {
        fs::remove_dir_all(src.join(name)).unwrap();
        symlink(target, src.join(name)).unwrap();
    };
    swap("abs", &outside);
    swap("rel", Path::new("../outside"));
    swap("insrc", Path::new("other"));
    swap("anc", &outside); // outside/e exists: the ancestor of the open dir is swapped
    let mut f = Findings::default();
    for (name, fd) in &fds {
        let mut bad = |what: &str, r: io::Result<()>| {
            if r.is_ok() {
                f.0.push(format!("{name}: {what} through the stale dir succeeded"));
            }
        };
        bad(
            "create",
            open_at(fd, "evil", libc::O_CREAT | libc::O_WRONLY, 0o644).map(drop),
        );
        bad("mkdir", mkdir_at(fd, "evildir"));
        bad("symlink", symlink_at("x", fd, "evillink"));
        bad(
            "open victim O_WRONLY|O_TRUNC",
            open_at(fd, "victim", libc::O_WRONLY | libc::O_TRUNC, 0).map(drop),
        );
        bad("chmod victim", chmod_at(fd, "victim", 0o777));
        bad("unlink victim", unlink_at(fd, "victim", 0));
        bad("rename victim", rename_at(fd, "victim", "renamed"));
        bad("rmdir e", unlink_at(fd, "e", libc::AT_REMOVEDIR));
        bad("unlink inner", unlink_at(fd, "inner", 0));
    }
    f.errno(
        "write to data/abs/victim (cached before the swap)",
        fs::write(m.path("data/abs/victim"), "pwned"),
        // Either the daemon refuses (stale entry) or, after the 1 s entry TTL, the kernel
        // itself follows the absolute link out of the mount: only the first is expected here
        // because the write happens within milliseconds of the swap.
        &[
            libc::ELOOP,
            libc::ENOENT,
            libc::ENOTDIR,
            libc::ESTALE,
            libc::EIO,
        ],
    );
    f.eq(
        "outside the source: unchanged",
        tree(&outside),
        outside_before,
    );
    f.eq(
        "the in-source link target: unchanged",
        tree(&src.join("other")),
        other_before,
    );
    drop(fds);
    drop(m);
    f.assert_none();
}

/// The last component: a file looked up through the mount, then replaced on the host by a
/// symlink to a file outside the source. Every request for the (stale) file — reopened
/// through /proc/self/fd, so the kernel does not resolve the name again — must not reach
/// the outside file.
#[test]
fn a_file_swapped_for_a_symlink_on_the_host_is_never_followed() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("top", "t");
    let h = Host::new();
    let src = h.dir("src");
    h.file("src/f", "mine");
    let outside = h.dir("outside");
    let victim = h.file("outside/victim", "precious");
    lsetxattr(&victim, "user.keep", b"1").unwrap();
    let single = h.file("single/conf", "conf");
    let m = mount(
        l.clone_fresh(),
        &[bind(&src, "/data"), bind(&single, "/conf")],
    );
    let pathfd = |rel: &str| open(&m.path(rel), libc::O_PATH, 0).unwrap();
    let fds = [("data/f", pathfd("data/f")), ("conf", pathfd("conf"))];
    let before = tree(&outside);
    fs::remove_file(src.join("f")).unwrap();
    symlink(&victim, src.join("f")).unwrap();
    fs::remove_file(&single).unwrap();
    symlink(&victim, &single).unwrap();
    let mut f = Findings::default();
    for (name, fd) in &fds {
        let proc = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let mut bad = |what: &str, r: io::Result<()>| {
            if r.is_ok() {
                f.0.push(format!("{name}: {what} of the stale file succeeded"));
            }
        };
        bad(
            "open O_WRONLY|O_TRUNC",
            open(&proc, libc::O_WRONLY | libc::O_TRUNC, 0).map(drop),
        );
        bad("open O_RDWR", open(&proc, libc::O_RDWR, 0).map(drop));
        bad("truncate", truncate(&proc, 0));
        bad(
            "chmod",
            fs::set_permissions(&proc, fs::Permissions::from_mode(0o777)),
        );
        bad("setxattr", {
            let (c, n) = (cpath(&proc), cname("user.evil"));
            // SAFETY: valid C strings and buffer; follows the /proc magic link.
            ok0(unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), b"x".as_ptr().cast(), 1, 0) })
        });
        bad("removexattr", {
            let (c, n) = (cpath(&proc), cname("user.keep"));
            // SAFETY: valid C strings; follows the /proc magic link.
            ok0(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) })
        });
        // Reading the outside file would leak it: not allowed either.
        let r = open(&proc, libc::O_RDONLY, 0).and_then(|fd| {
            let mut s = String::new();
            io::Read::read_to_string(&mut fs::File::from(fd), &mut s).map(|_| s)
        });
        bad(
            "reading the outside file through it",
            match r {
                Ok(s) if s.contains("precious") => Ok(()),
                _ => Err(io::Error::from_raw_os_error(libc::ELOOP)),
            },
        );
        // Last: its reply (the symlink's attributes) makes the kernel mark the inode bad,
        // after which nothing reaches the daemon any more.
        bad("utimens", {
            let c = cpath(&proc);
            let ts = [libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            }; 2];
            // SAFETY: valid C string, two timespecs; follows the /proc magic link.
            ok0(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) })
        });
    }
    f.eq("outside file: unchanged", tree(&outside), before);
    drop(fds);
    drop(m);
    f.assert_none();
}

/// Links inside a source are the kernel's to resolve, in the union's namespace (as for any
/// bind mount): a `..` link resolves from its place in the union, not from the source's place
/// on the host; the daemon hands back link targets verbatim and walks none of them.
#[test]
fn links_in_a_source_resolve_in_the_union_not_on_the_host() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("secret/f", "union secret");
    let h = Host::new();
    let src = h.dir("src");
    let host_secret = h.dir("secret");
    h.file("secret/f", "host secret");
    symlink("../secret", src.join("esc")).unwrap();
    symlink("/", src.join("abs")).unwrap();
    symlink("../../../../../../../..", src.join("up")).unwrap();
    h.dir("src/a/b");
    symlink("../../esc", src.join("a/b/deep")).unwrap();
    let m = mount(l.clone_fresh(), &[bind(&src, "/data")]);
    let p = |r: &str| m.path(r);
    let mut f = Findings::default();
    for (name, target) in [
        ("esc", "../secret"),
        ("abs", "/"),
        ("up", "../../../../../../../.."),
        ("a/b/deep", "../../esc"),
    ] {
        f.eq(
            &format!("readlink data/{name}"),
            fs::read_link(p(&format!("data/{name}"))).ok(),
            Some(PathBuf::from(target)),
        );
        f.check(
            &format!("lstat data/{name} is a symlink"),
            fs::symlink_metadata(p(&format!("data/{name}"))).is_ok_and(|m| m.is_symlink()),
        );
    }
    f.eq(
        "data/esc/f resolves in the union",
        read(&p("data/esc/f")),
        "union secret".into(),
    );
    f.eq(
        "data/a/b/deep/f resolves in the union",
        read(&p("data/a/b/deep/f")),
        "union secret".into(),
    );
    fs::write(p("data/esc/new"), "n").unwrap();
    f.check(
        "a file made through data/esc lands in the union's upper",
        m.upper.as_ref().unwrap().join("secret/new").is_file(),
    );
    f.eq(
        "host dir next to the source: untouched",
        names(&host_secret),
        vec!["f".into()],
    );
    f.eq(
        "host secret",
        read(&host_secret.join("f")),
        "host secret".into(),
    );
    drop(m);
    f.assert_none();
}

/// A target below a symlink in the layers: the daemon makes missing parents, and must never
/// make them by following a link (absolute or `..`) out of the union.
#[test]
fn a_target_below_a_symlink_in_the_layers_makes_nothing_outside() {
    need_root!();
    let h = Host::new();
    let outside = h.dir("outside");
    let src = h.dir("src");
    for (i, link) in [
        outside.display().to_string(),
        "../../../../../../../../..".into(),
    ]
    .iter()
    .enumerate()
    {
        let l = Layers::new(1);
        l.lower(0).symlink("etc", link);
        let l = l.clone_fresh();
        let mnt = l.mnt.clone();
        let root = l.root.clone();
        let before = all_mount_ids();
        let mut cmd = TestMount::layerfuse_command(
            &l,
            &Opts {
                extra_args: vec![bind(&src, "/etc/app/conf")],
                ..Default::default()
            },
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut status = None;
        wait_for(DEADLINE, || {
            status = child.try_wait().ok().flatten();
            status.is_some() || !ours(&before, &mnt, &root).is_empty()
        });
        let mounted = !ours(&before, &mnt, &root).is_empty();
        if mounted {
            unmount_all(&mnt);
        }
        reap(&mut child, DEADLINE);
        assert!(
            names(&outside).is_empty(),
            "case {i} (etc -> {link}): made {:?} outside the union (mounted: {mounted})",
            names(&outside)
        );
        let fsroot: Vec<_> = ["app", "conf"]
            .iter()
            .filter(|n| Path::new("/").join(n).exists())
            .collect();
        assert!(fsroot.is_empty(), "case {i}: made {fsroot:?} in /");
        drop(l);
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// `layerfuse mount` with the standard layers plus `extra` must be refused: one line on
/// stderr naming `needle`, non-zero exit, nothing mounted; and no volume made.
fn refused(what: &str, extra: &[String], needle: &str) {
    let l = base();
    let h = Host::new();
    let mut args = std_args(&l);
    args.push(h.root_arg().into());
    args.extend(extra.iter().map(OsString::from));
    let line = expect_refused(what, &args, &l.mnt, &l.root);
    assert!(
        line.contains(needle),
        "{what}: the refusal should name {needle:?}: {line:?}"
    );
    let vols = if h.store().join("volumes").exists() {
        names(&h.store().join("volumes"))
    } else {
        Vec::new()
    };
    assert!(
        vols.is_empty(),
        "{what}: refused, but made volumes {vols:?}"
    );
}

/// Bad volume and bind specs: each is refused with one line naming the culprit.
#[test]
fn refuses_bad_graft_specs() {
    need_root!();
    let h = Host::new();
    let src = h.dir("src");
    let missing = h.p("no/such/dir");
    // (what, extra mount arguments, what the refusal must name)
    let mut cases: Vec<(String, Vec<String>, String)> = [
        // Targets: absolute, no `..`, not the root.
        ("relative volume target", vec![volume("v1:data")], "data"),
        ("relative bind target", vec![bind(&src, "data")], "data"),
        ("volume target a/../b", vec![volume("v1:/a/../b")], ".."),
        ("bind target /..", vec![bind(&src, "/..")], ".."),
        ("volume target /x/..", vec![volume("v1:/x/..:ro")], ".."),
        ("volume at /", vec![volume("v1:/")], "root"),
        ("bind at //", vec![bind(&src, "//")], "root"),
        ("anonymous volume at /", vec![volume(":/:ro")], "root"),
        // Sources.
        (
            "missing bind source",
            vec![volume("good:/good"), bind(&missing, "/data")],
            "no/such/dir",
        ),
        // Two grafts at one target.
        (
            "two volumes at /data",
            vec![volume("v1:/data"), volume("v2:/data")],
            "/data",
        ),
        (
            "volume at /data and bind at /data/",
            vec![volume("v1:/data"), bind(&src, "/data/")],
            "/data",
        ),
        (
            "binds at /data and //data",
            vec![bind(&src, "/data"), bind(&src, "//data:ro")],
            "/data",
        ),
    ]
    .into_iter()
    .map(|(what, extra, needle)| (what.to_string(), extra, needle.to_string()))
    .collect();
    for bad in ["a/b", "sp ace", "-x", ".hidden", "x", "a$b", "é1"] {
        cases.push((
            format!("volume name {bad:?}"),
            vec![volume("good:/good"), volume(&format!("{bad}:/data"))],
            bad.to_string(),
        ));
    }
    for (what, extra, needle) in &cases {
        refused(what, extra, needle);
    }
}

#[test]
fn refuses_a_file_bind_onto_a_directory_target() {
    need_root!();
    let h = Host::new();
    let file = h.file("hosts", "h");
    // base() has the file /a and the root dir; make a directory target in the layers.
    let l = base();
    fs::create_dir(l.lowers[0].join("etc")).unwrap();
    let mut args = std_args(&l);
    args.push(h.root_arg().into());
    args.push(bind(&file, "/etc").into());
    let line = expect_refused("file bind onto /etc", &args, &l.mnt, &l.root);
    assert!(
        line.contains("/etc"),
        "the refusal should name /etc: {line:?}"
    );
    assert!(
        fs::read_dir(l.upper.as_ref().unwrap())
            .unwrap()
            .next()
            .is_none(),
        "refused, but wrote into the upper"
    );
}

#[test]
fn refuses_a_directory_bind_onto_a_file_target() {
    need_root!();
    let h = Host::new();
    let src = h.dir("src");
    let l = base();
    let mut args = std_args(&l);
    args.push(bind(&src, "/a").into());
    let line = expect_refused("dir bind onto the file /a", &args, &l.mnt, &l.root);
    assert!(line.contains("/a"), "the refusal should name /a: {line:?}");
}

/// The default (daemon) mode: the refusal found by the daemon reaches the caller as one line.
#[test]
fn refuses_a_file_bind_onto_a_directory_in_daemon_mode_with_one_line() {
    need_root!();
    let h = Host::new();
    let file = h.file("hosts", "h");
    let l = base();
    fs::create_dir(l.lowers[0].join("etc")).unwrap();
    let before = all_mount_ids();
    let out = Command::new(layerfuse_bin())
        .arg("mount")
        .args(std_args(&l))
        .arg(h.root_arg())
        .arg(bind(&file, "/etc"))
        .arg(&l.mnt)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mounted = ours(&before, &l.mnt, &l.root);
    if !mounted.is_empty() {
        unmount_all(&l.mnt);
    }
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(mounted.is_empty(), "mounted despite bad input: {mounted:?}");
    assert!(!out.status.success(), "exit status {}", out.status);
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got:\n{err}"
    );
    assert!(
        lines[0].contains("/etc"),
        "the refusal should name /etc: {err:?}"
    );
}

/// A bind source is a path the user gives, like a lower: a symlink in it (the usual
/// `/etc/resolv.conf -> ../run/…` of a systemd host) is resolved once, at mount. Only links
/// *inside* a source are never followed.
#[test]
fn a_bind_source_given_through_a_symlink_is_resolved_at_mount() {
    need_root!();
    let l = Layers::new(1);
    l.lower(0).file("etc/passwd", "root:x");
    let h = Host::new();
    h.file("run/real.conf", "nameserver 10.0.0.1\n");
    symlink("run/real.conf", h.p("etc-resolv.conf")).unwrap();
    h.file("realdir/f", "f");
    symlink(h.p("realdir"), h.p("dirlink")).unwrap();
    let m = mount(
        l.clone_fresh(),
        &[
            bind(&h.p("etc-resolv.conf"), "/etc/resolv.conf"),
            bind(&h.p("dirlink"), "/data"),
        ],
    );
    let mut f = Findings::default();
    let st = describe_stat(&m.path("etc/resolv.conf"));
    f.check(
        &format!("/etc/resolv.conf is a regular file, not the link itself: {st}"),
        st.starts_with("file "),
    );
    f.eq(
        "/etc/resolv.conf",
        read(&m.path("etc/resolv.conf")),
        "nameserver 10.0.0.1\n".into(),
    );
    f.check(
        "/data is a directory",
        fs::symlink_metadata(m.path("data")).is_ok_and(|m| m.is_dir()),
    );
    f.eq("/data/f", read(&m.path("data/f")), "f".into());
    drop(m);
    f.assert_none();
}
