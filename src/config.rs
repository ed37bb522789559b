//! Validated settings: a plain [`MountRequest`] (what a command line or a storage
//! driver asks for) becomes a checked [`MountConfig`] before any work starts, and
//! every bad input becomes one [`SetupError`] line naming the path and the problem.

use crate::error::{SetupError, SetupErrorKind};
use crate::overlay::{IdMap, OverlayConfig, Ownership};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where a graft's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraftSource {
    /// A named volume (made if missing); `None`: a fresh anonymous one.
    Volume(Option<String>),
    /// A host directory or file.
    Bind(PathBuf),
}

/// A `--volume` or `--bind` argument, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraftSpec {
    pub source: GraftSource,
    /// Inside the merged tree, without the leading `/`.
    pub target: PathBuf,
    pub read_only: bool,
    /// Do not fill a new volume with what the layers hold at the target.
    pub nocopy: bool,
}

/// Parse `SOURCE:/target[:OPTS]` (OPTS: `ro`, `rw`, `nocopy`, comma separated).
pub fn parse_graft(spec: &str, volume: bool) -> Result<GraftSpec, SetupError> {
    let bad = |why: &str| SetupError::invalid(format!("{spec}: {why}"));
    let mut parts: Vec<&str> = spec.split(':').collect();
    let mut read_only = false;
    let mut nocopy = false;
    let is_opts = |s: &str| {
        !s.is_empty()
            && s.split(',')
                .all(|o| matches!(o, "ro" | "rw" | "nocopy" | "z" | "Z" | ""))
    };
    if parts.len() >= 3 && parts.last().is_some_and(|l| is_opts(l)) {
        for o in parts.pop().unwrap_or_default().split(',') {
            match o {
                "ro" => read_only = true,
                "rw" => read_only = false,
                "nocopy" => nocopy = true,
                _ => {}
            }
        }
    }
    if parts.len() < 2 {
        return Err(bad("expected SOURCE:/target[:ro]"));
    }
    let target = parts.pop().unwrap_or_default();
    let source = parts.join(":");
    let target = check_target(target).map_err(|w| bad(&w))?;
    let source = if volume {
        if source.is_empty() {
            GraftSource::Volume(None)
        } else {
            crate::volumes::check_name(&source)?;
            GraftSource::Volume(Some(source))
        }
    } else {
        if !source.starts_with('/') {
            return Err(bad("a bind source must be an absolute path"));
        }
        GraftSource::Bind(PathBuf::from(source))
    };
    Ok(GraftSpec {
        source,
        target,
        read_only,
        nocopy,
    })
}

/// A graft target: absolute, no `.` or `..`, not the root. Returns it relative.
fn check_target(t: &str) -> Result<PathBuf, String> {
    if !t.starts_with('/') {
        return Err(format!("target {t:?} must be an absolute path"));
    }
    let comps: Vec<&str> = t.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() {
        return Err("the target cannot be the root of the union".into());
    }
    if comps.iter().any(|c| *c == "." || *c == "..") {
        return Err(format!("target {t:?} must not contain . or .."));
    }
    if comps.iter().any(|c| c.len() > 255) {
        return Err(format!("target {t:?} has a name longer than 255 bytes"));
    }
    Ok(PathBuf::from(comps.join("/")))
}

/// Which channel carries requests between the kernel and the daemon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// io_uring where the kernel offers it (`enable_uring`), else `/dev/fuse`.
    #[default]
    Auto,
    /// FUSE-over-io_uring: per-CPU queues (Linux 6.14+, root, `enable_uring=1`).
    Uring,
    /// The classic `/dev/fuse` read/write loop (every platform, rootless).
    Dev,
    /// `/dev/fuse` served by layerfuse's own threads with READ replies spliced from
    /// the file: no copy through the daemon (Linux, root).
    Splice,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Transport::Auto),
            "uring" | "io_uring" => Ok(Transport::Uring),
            "dev" => Ok(Transport::Dev),
            "splice" => Ok(Transport::Splice),
            other => Err(format!(
                "unknown transport {other:?} (expected auto, uring, dev or splice)"
            )),
        }
    }
}

impl Transport {
    /// `$LAYERFUSE_TRANSPORT` (how test harnesses choose), else auto.
    pub fn from_env() -> Result<Transport, String> {
        match std::env::var("LAYERFUSE_TRANSPORT") {
            Ok(v) => v.parse(),
            Err(_) => Ok(Transport::Auto),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::Uring => "uring",
            Transport::Dev => "dev",
            Transport::Splice => "splice",
        })
    }
}

/// Everything `layerfuse mount` needs, checked.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub overlay: OverlayConfig,
    /// Volumes and binds, checked but not yet made (volumes are made by the daemon).
    pub grafts: Vec<GraftSpec>,
    /// The volume store's root (`--root`).
    pub store_root: Option<PathBuf>,
    pub mountpoint: PathBuf,
    /// Kernel mount flags passed through (`nodev`, `noexec`, …), checked.
    pub flags: Vec<String>,
    /// The mount's source and type as `/proc/self/mountinfo` shows them: `FSNAME`
    /// and `fuse.SUBTYPE` (default `layerfuse`, `fuse.layerfuse`).
    pub fsname: String,
    pub subtype: String,
    pub read_only: bool,
    /// `--transport` / `-o transport=`; None: `$LAYERFUSE_TRANSPORT`, else auto.
    pub transport: Option<Transport>,
    /// The work dir of our own, to be made at mount (the first mount without `--work`).
    pub make_work: Option<PathBuf>,
    /// Show changes made directly in the lower layers (`--watch-lowers`, Linux).
    pub watch_lowers: bool,
}

/// Split a `lowerdir` value on `:`, where `\:` stands for a colon inside a path and
/// `\\` for a backslash.
pub fn split_lowers(s: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ':' => {
                if !cur.is_empty() {
                    out.push(PathBuf::from(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(PathBuf::from(cur));
    }
    out
}

/// Resolve a user-given directory once (symlinks followed) and check it is one.
fn existing_dir(p: &Path) -> Result<PathBuf, SetupError> {
    let canon = std::fs::canonicalize(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing(p),
        _ => SetupError::io(p, "", &e),
    })?;
    let md = std::fs::metadata(&canon).map_err(|e| SetupError::io(p, "", &e))?;
    if !md.is_dir() {
        return Err(SetupError::invalid(format!(
            "{}: not a directory",
            p.display()
        )));
    }
    Ok(canon)
}

fn missing(p: &Path) -> SetupError {
    SetupError::new(
        SetupErrorKind::NotFound,
        format!("{}: no such directory", p.display()),
    )
}

fn twice(p: &Path) -> SetupError {
    SetupError::invalid(format!("{}: given more than once", p.display()))
}

fn inside(inner: &Path, outer: &Path) -> SetupError {
    SetupError::invalid(format!(
        "{}: must not be inside {} (nor contain it)",
        inner.display(),
        outer.display()
    ))
}

/// `a` is `b` or below it.
fn within(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

/// The raw inputs of a mount, before checking: what a command line or a storage
/// driver asks for, in plain values.
#[derive(Clone, Debug, Default)]
pub struct MountRequest {
    /// Lower layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// The writable upper; without it the union is read-only.
    pub upper: Option<PathBuf>,
    /// The work dir; without it (and with an upper) one of our own beside the upper,
    /// see [`default_work_dir`].
    pub work: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub redirect_dir: bool,
    pub metacopy: bool,
    pub userxattr: bool,
    pub volatile: bool,
    pub read_only: bool,
    /// How requests travel (`--transport`, `-o transport=`); None: `$LAYERFUSE_TRANSPORT`,
    /// else auto.
    pub transport: Option<Transport>,
    /// Mount options passed through: kernel flags (`nodev`, `noexec`, …) and
    /// `fsname=`/`subtype=`.
    pub flags: Vec<String>,
    /// Id mappings as `CONTAINER:HOST:COUNT[:CONTAINER:HOST:COUNT…]`.
    pub uid_mapping: Option<String>,
    pub gid_mapping: Option<String>,
    /// Show every owner as this id (fuse-overlayfs's `squash_to_uid`/`_gid`).
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    pub grafts: Vec<GraftSpec>,
    pub store_root: Option<PathBuf>,
    /// fuse-overlayfs's `xattr_permissions`: the xattr that holds owners and modes.
    pub override_stat: Option<String>,
    /// Show changes made directly in the lower layers (`--watch-lowers`, `-o watch_lowers`).
    pub watch_lowers: bool,
}

/// The `-o` options of a mount, sorted out.
#[derive(Debug, Default)]
struct MountFlags {
    kernel: Vec<String>,
    fsname: Option<String>,
    subtype: Option<String>,
    read_only: bool,
}

impl MountFlags {
    fn parse(flags: &[String]) -> Result<MountFlags, SetupError> {
        let mut out = MountFlags::default();
        for f in flags {
            match f.split_once('=') {
                Some(("fsname", v)) => out.fsname = Some(mount_name(f, v, false)?),
                Some(("subtype", v)) => out.subtype = Some(mount_name(f, v, true)?),
                _ => match f.as_str() {
                    "nodev" | "nosuid" | "noexec" | "noatime" | "sync" | "dirsync" => {
                        out.kernel.retain(|k| k != f);
                        out.kernel.push(f.clone())
                    }
                    "dev" | "suid" | "exec" | "atime" | "async" => {
                        out.kernel.retain(|k| k.strip_prefix("no") != Some(f))
                    }
                    "ro" => out.read_only = true,
                    "rw" => out.read_only = false,
                    _ => {
                        return Err(SetupError::invalid(format!(
                            "-o {f}: unknown mount option (known: nodev nosuid noexec noatime sync dirsync ro rw fsname= subtype=)"
                        )));
                    }
                },
            }
        }
        Ok(out)
    }
}

/// A mount's source or subtype: shown in /proc/mounts and handed to fusermount3 in a
/// comma-separated list, so no commas, blanks or control characters; a subtype is a
/// plain name.
fn mount_name(opt: &str, v: &str, plain: bool) -> Result<String, SetupError> {
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.chars().all(|c| {
            if plain {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
            } else {
                !c.is_control() && !c.is_whitespace() && c != ','
            }
        });
    if ok {
        Ok(v.to_owned())
    } else {
        Err(SetupError::invalid(format!(
            "-o {opt}: {}",
            if plain {
                "use letters, digits, '.', '_' and '-'"
            } else {
                "no commas, blanks or control characters"
            }
        )))
    }
}

/// The work dir layerfuse uses when none is given: `UPPER.layerfuse-work` beside the
/// upper (the same filesystem as its parent, so normally as the upper; checked).
pub fn default_work_dir(upper: &Path) -> Option<PathBuf> {
    let name = upper.file_name()?;
    let mut work = name.to_os_string();
    work.push(".layerfuse-work");
    Some(upper.with_file_name(work))
}

impl MountRequest {
    /// Check every path and relation; the first problem found is the answer.
    pub fn validate(&self) -> Result<MountConfig, SetupError> {
        if self.lowers.is_empty() {
            return Err(SetupError::invalid("no lower layer given (--lower A:B:C)"));
        }
        if self.watch_lowers && !cfg!(target_os = "linux") {
            return Err(SetupError::invalid(
                "--watch-lowers needs inotify, which only Linux has",
            ));
        }
        if self.metacopy && !self.redirect_dir {
            // A moved metadata-only copy finds its data through a redirect (the
            // kernel refuses the same pair of options).
            return Err(SetupError::invalid("metacopy=on needs redirect_dir=on"));
        }
        let ownership = self.ownership()?;
        let mut lowers = Vec::new();
        for l in &self.lowers {
            let c = existing_dir(l)?;
            if lowers.contains(&c) {
                return Err(twice(l));
            }
            lowers.push(c);
        }
        let mountpoint = existing_dir(&self.mountpoint)?;
        if is_layerfuse_mount(&mountpoint) {
            return Err(SetupError::new(
                SetupErrorKind::AlreadyExists,
                format!("{}: already a layerfuse mount", self.mountpoint.display()),
            ));
        }
        let mut make_work = None;
        let upper = match (&self.upper, &self.work) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(SetupError::invalid(
                    "--work needs --upper (give both, or neither for a read-only mount)",
                ));
            }
            // Read-only: the upper is not written (nor used), no work dir is needed.
            (Some(u), None) if self.read_only => {
                existing_dir(u)?;
                None
            }
            (Some(u), w) => {
                let cu = existing_dir(u)?;
                let (w, cw) = match w {
                    Some(w) => (w.clone(), existing_dir(w)?),
                    None => {
                        let w = own_work_dir(u, &cu)?;
                        if !w.exists() {
                            make_work = Some(w.clone());
                        }
                        (w.clone(), w)
                    }
                };
                if cu == cw || lowers.contains(&cu) {
                    return Err(twice(u));
                }
                if lowers.contains(&cw) {
                    return Err(twice(&w));
                }
                for (given, c) in [(u, &cu), (&w, &cw)] {
                    for (lg, l) in self.lowers.iter().zip(&lowers) {
                        if within(c, l) || within(l, c) {
                            return Err(inside(given, lg));
                        }
                    }
                    if within(c, &mountpoint) || within(&mountpoint, c) {
                        return Err(inside(given, &self.mountpoint));
                    }
                }
                if within(&cu, &cw) || within(&cw, &cu) {
                    return Err(inside(&w, u));
                }
                let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
                // A work dir still to be made: its parent's filesystem was checked.
                if make_work.is_none() && dev(&cu) != dev(&cw) {
                    return Err(SetupError::invalid(format!(
                        "{}: work dir must be on the same filesystem as the upper dir {}",
                        w.display(),
                        u.display()
                    )));
                }
                Some((cu, cw))
            }
        };
        let opts = MountFlags::parse(&self.flags)?;
        let read_only = self.read_only || opts.read_only || upper.is_none();
        let mut seen = Vec::new();
        for s in &self.grafts {
            if seen.contains(&&s.target) {
                return Err(SetupError::invalid(format!(
                    "/{}: two volumes or binds at the same target",
                    s.target.display()
                )));
            }
            seen.push(&s.target);
            if let GraftSource::Bind(src) = &s.source
                && !src.exists()
            {
                return Err(missing(src));
            }
        }
        Ok(MountConfig {
            grafts: self.grafts.clone(),
            store_root: self.store_root.clone(),
            overlay: OverlayConfig {
                lowers,
                upper: if self.read_only || opts.read_only {
                    None
                } else {
                    upper
                },
                redirect_dir: self.redirect_dir,
                metacopy: self.metacopy,
                userxattr: self.userxattr,
                volatile: self.volatile,
                ownership,
                grafts: Vec::new(),
                override_stat: self.override_stat.clone(),
            },
            mountpoint,
            flags: opts.kernel,
            fsname: opts.fsname.unwrap_or_else(|| "layerfuse".into()),
            subtype: opts.subtype.unwrap_or_else(|| "layerfuse".into()),
            read_only,
            transport: self.transport,
            make_work,
            watch_lowers: self.watch_lowers,
        })
    }

    /// The id mappings and squashing asked for, parsed.
    fn ownership(&self) -> Result<Ownership, SetupError> {
        let map = |ranges: &Option<String>, squash: Option<u32>, what: &str| {
            let mut m = IdMap {
                squash,
                ..IdMap::default()
            };
            if let Some(r) = ranges {
                m.ranges = IdMap::parse_ranges(r)
                    .map_err(|e| SetupError::invalid(format!("{what}: {e}")))?;
            }
            Ok::<_, SetupError>(m)
        };
        Ok(Ownership {
            uids: map(&self.uid_mapping, self.squash_uid, "uid mapping")?,
            gids: map(&self.gid_mapping, self.squash_gid, "gid mapping")?,
        })
    }
}

/// The work dir of our own for `upper` (given as `given`, resolved to `canon`): its
/// parent must be the upper's filesystem.
fn own_work_dir(given: &Path, canon: &Path) -> Result<PathBuf, SetupError> {
    let cant = |why: String| {
        SetupError::invalid(format!(
            "{}: cannot keep a work dir beside it ({why}); give --work DIR on the upper's filesystem",
            given.display()
        ))
    };
    let work = default_work_dir(canon).ok_or_else(|| cant("it has no parent".into()))?;
    let parent = canon.parent().unwrap_or(Path::new("/"));
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
    let (pd, ud) = match (dev(parent), dev(canon)) {
        (Ok(p), Ok(u)) => (p, u),
        (Err(e), _) | (_, Err(e)) => return Err(SetupError::io(parent, "", &e)),
    };
    if pd != ud {
        return Err(cant(format!("{} is another filesystem", parent.display())));
    }
    match std::fs::symlink_metadata(&work) {
        Ok(md) if md.is_dir() => Ok(work),
        Ok(_) => Err(cant(format!("{} is not a directory", work.display()))),
        // Made at mount (the session), where a parent that is not writable shows.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(work),
        Err(e) => Err(SetupError::io(&work, "", &e)),
    }
}

/// Whether `path` is the mount point of a live layerfuse mount.
pub fn is_layerfuse_mount(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|line| mountinfo_is_layerfuse(line, path))
}

/// The device (`MAJ:MIN`, as `/proc/self/mountinfo` gives it) of the mount at `path`,
/// the topmost if several are stacked there. Read without asking the filesystem.
pub fn mount_device(path: &Path) -> Option<String> {
    mount_device_and_type(path).map(|(device, _)| device)
}

/// The device (`MAJ:MIN`) and type of the topmost mount at `path`, read from
/// `/proc/self/mountinfo` without asking the filesystem.
pub fn mount_device_and_type(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .filter_map(MountinfoLine::parse)
        .find(|m| m.is_at(path))
        .map(|m| (m.device.to_string(), m.fstype.to_string()))
}

/// One mountinfo line: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS] - FSTYPE SOURCE SUPER`.
struct MountinfoLine<'a> {
    device: &'a str,
    /// As mountinfo writes it (escaped).
    mountpoint: &'a str,
    fstype: &'a str,
    source: &'a str,
}

impl<'a> MountinfoLine<'a> {
    fn parse(line: &'a str) -> Option<MountinfoLine<'a>> {
        let (left, right) = line.split_once(" - ")?;
        let mut l = left.split(' ');
        let device = l.nth(2)?;
        let mountpoint = l.nth(1)?;
        let mut r = right.split(' ');
        Some(MountinfoLine {
            device,
            mountpoint,
            fstype: r.next().unwrap_or(""),
            source: r.next().unwrap_or(""),
        })
    }

    fn is_at(&self, path: &Path) -> bool {
        unescape_mountinfo(self.mountpoint) == path.as_os_str().to_string_lossy()
    }
}

fn mountinfo_is_layerfuse(line: &str, path: &Path) -> bool {
    MountinfoLine::parse(line).is_some_and(|m| {
        m.is_at(path)
            && (m.fstype == "fuse.layerfuse"
                || (m.fstype.starts_with("fuse") && m.source == "layerfuse"))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_split_on_unescaped_colons() {
        assert_eq!(
            split_lowers("/a:/b\\:c:/d"),
            vec![
                PathBuf::from("/a"),
                PathBuf::from("/b:c"),
                PathBuf::from("/d")
            ]
        );
        assert_eq!(
            split_lowers("/a::/b"),
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(split_lowers("/x\\\\y"), vec![PathBuf::from("/x\\y")]);
    }

    #[test]
    fn mountinfo_lines_are_recognised() {
        let line = "36 35 0:45 / /mnt/a\\040b rw,nosuid - fuse layerfuse rw,user_id=0";
        assert!(mountinfo_is_layerfuse(line, Path::new("/mnt/a b")));
        assert!(!mountinfo_is_layerfuse(line, Path::new("/mnt/a")));
        let other = "36 35 0:45 / /mnt/x rw - fuse.sshfs host: rw";
        assert!(!mountinfo_is_layerfuse(other, Path::new("/mnt/x")));
        let m = MountinfoLine::parse(line).unwrap();
        assert_eq!(
            (m.device, m.fstype, m.source),
            ("0:45", "fuse", "layerfuse")
        );
        assert!(m.is_at(Path::new("/mnt/a b")));
    }

    #[test]
    fn graft_specs_parse_and_bad_ones_are_refused() {
        let v = parse_graft("data:/var/lib/app:ro", true).unwrap();
        assert_eq!(v.source, GraftSource::Volume(Some("data".into())));
        assert_eq!(v.target, PathBuf::from("var/lib/app"));
        assert!(v.read_only);
        let anon = parse_graft(":/data", true).unwrap();
        assert_eq!(anon.source, GraftSource::Volume(None));
        let b = parse_graft("/host/a:b:/etc/x:rw,nocopy", false).unwrap();
        assert_eq!(b.source, GraftSource::Bind(PathBuf::from("/host/a:b")));
        assert!(b.nocopy && !b.read_only);
        for bad in [
            "data:rel",
            "data:/",
            "data:/a/../b",
            "a/b:/x",
            "x",
            "data:/./y",
        ] {
            assert!(parse_graft(bad, true).is_err(), "{bad}");
        }
        assert!(parse_graft("rel/src:/x", false).is_err());
    }

    #[test]
    fn work_without_upper_is_refused() {
        let r = MountRequest {
            lowers: vec![PathBuf::from("/")],
            work: Some(PathBuf::from("/tmp")),
            mountpoint: PathBuf::from("/tmp"),
            ..Default::default()
        };
        assert_eq!(r.validate().unwrap_err().kind(), SetupErrorKind::Invalid);
    }

    #[test]
    fn mount_options_are_sorted_out_and_unknown_ones_refused() {
        let o =
            |v: &[&str]| MountFlags::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let f = o(&[
            "nodev",
            "fsname=img:app",
            "subtype=lf2",
            "noexec",
            "exec",
            "ro",
        ])
        .unwrap();
        assert_eq!(f.kernel, vec!["nodev".to_string()]);
        assert_eq!(f.fsname.as_deref(), Some("img:app"));
        assert_eq!(f.subtype.as_deref(), Some("lf2"));
        assert!(f.read_only);
        for bad in [
            "frob",
            "fsname=",
            "fsname=a b",
            "subtype=a/b",
            "subtype=a,b",
        ] {
            assert!(o(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_work_dir_sits_beside_the_upper() {
        assert_eq!(
            default_work_dir(Path::new("/c/rw")),
            Some(PathBuf::from("/c/rw.layerfuse-work"))
        );
        assert_eq!(default_work_dir(Path::new("/")), None);
    }

    #[test]
    fn metacopy_without_redirect_dir_is_refused() {
        let r = MountRequest {
            lowers: vec![PathBuf::from("/")],
            mountpoint: PathBuf::from("/tmp"),
            metacopy: true,
            redirect_dir: false,
            ..Default::default()
        };
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains("metacopy=on needs redirect_dir=on"), "{err}");
    }
}
