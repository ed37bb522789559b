//! Validated settings: argv becomes a [`MountConfig`] before any work starts, and
//! every bad input becomes one [`ConfigError`] line naming the path and the problem.

use crate::overlay::{OverlayConfig, Ownership};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where a splice's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpliceSource {
    /// A named volume (made if missing); `None`: a fresh anonymous one.
    Volume(Option<String>),
    /// A host directory or file.
    Bind(PathBuf),
}

/// A `--volume` or `--bind` argument, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpliceSpec {
    pub source: SpliceSource,
    /// Inside the merged tree, without the leading `/`.
    pub target: PathBuf,
    pub read_only: bool,
    /// Do not fill a new volume with what the layers hold at the target.
    pub nocopy: bool,
}

/// Parse `SOURCE:/target[:OPTS]` (OPTS: `ro`, `rw`, `nocopy`, comma separated).
pub fn parse_splice(spec: &str, volume: bool) -> Result<SpliceSpec, ConfigError> {
    let bad = |why: &str| ConfigError::Invalid(format!("{spec}: {why}"));
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
            SpliceSource::Volume(None)
        } else {
            crate::volumes::check_name(&source).map_err(ConfigError::Invalid)?;
            SpliceSource::Volume(Some(source))
        }
    } else {
        if !source.starts_with('/') {
            return Err(bad("a bind source must be an absolute path"));
        }
        SpliceSource::Bind(PathBuf::from(source))
    };
    Ok(SpliceSpec {
        source,
        target,
        read_only,
        nocopy,
    })
}

/// A splice target: absolute, no `.` or `..`, not the root. Returns it relative.
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

/// Everything `layerfuse mount` needs, checked.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub overlay: OverlayConfig,
    /// Volumes and binds, checked but not yet made (volumes are made by the daemon).
    pub splices: Vec<SpliceSpec>,
    /// The volume store's root (`--root`).
    pub store_root: Option<PathBuf>,
    pub mountpoint: PathBuf,
    /// Kernel mount flags passed through (`nodev`, `noexec`, …).
    pub flags: Vec<String>,
    pub read_only: bool,
}

/// One problem with the command line, said in one line.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    NoLowers,
    Missing(PathBuf),
    NotADirectory(PathBuf),
    Unreadable(PathBuf, String),
    Twice(PathBuf),
    Inside { inner: PathBuf, outer: PathBuf },
    UpperWithoutWork,
    DifferentFilesystems { upper: PathBuf, work: PathBuf },
    AlreadyMounted(PathBuf),
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoLowers => write!(f, "no lower layer given (--lower A:B:C)"),
            ConfigError::Missing(p) => write!(f, "{}: no such directory", p.display()),
            ConfigError::NotADirectory(p) => write!(f, "{}: not a directory", p.display()),
            ConfigError::Unreadable(p, e) => write!(f, "{}: {e}", p.display()),
            ConfigError::Twice(p) => write!(f, "{}: given more than once", p.display()),
            ConfigError::Inside { inner, outer } => write!(
                f,
                "{}: must not be inside {} (nor contain it)",
                inner.display(),
                outer.display()
            ),
            ConfigError::UpperWithoutWork => {
                write!(
                    f,
                    "--upper and --work go together (give both, or neither for a read-only mount)"
                )
            }
            ConfigError::DifferentFilesystems { upper, work } => write!(
                f,
                "{}: work dir must be on the same filesystem as the upper dir {}",
                work.display(),
                upper.display()
            ),
            ConfigError::AlreadyMounted(p) => {
                write!(f, "{}: already a layerfuse mount", p.display())
            }
            ConfigError::Invalid(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for ConfigError {}

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
fn existing_dir(p: &Path) -> Result<PathBuf, ConfigError> {
    let canon = std::fs::canonicalize(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigError::Missing(p.to_path_buf()),
        _ => ConfigError::Unreadable(p.to_path_buf(), e.to_string()),
    })?;
    let md = std::fs::metadata(&canon)
        .map_err(|e| ConfigError::Unreadable(p.to_path_buf(), e.to_string()))?;
    if !md.is_dir() {
        return Err(ConfigError::NotADirectory(p.to_path_buf()));
    }
    Ok(canon)
}

/// `a` is `b` or below it.
fn within(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

/// The raw inputs of a mount, before checking.
#[derive(Clone, Debug, Default)]
pub struct MountRequest {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub redirect_dir: bool,
    pub metacopy: bool,
    pub userxattr: bool,
    pub volatile: bool,
    pub read_only: bool,
    pub flags: Vec<String>,
    pub ownership: Ownership,
    pub splices: Vec<SpliceSpec>,
    pub store_root: Option<PathBuf>,
    /// fuse-overlayfs's `xattr_permissions`: the xattr that holds owners and modes.
    pub override_stat: Option<String>,
}

impl MountRequest {
    /// Check every path and relation; the first problem found is the answer.
    pub fn validate(&self) -> Result<MountConfig, ConfigError> {
        if self.lowers.is_empty() {
            return Err(ConfigError::NoLowers);
        }
        if self.metacopy && !self.redirect_dir {
            // A moved metadata-only copy finds its data through a redirect (the
            // kernel refuses the same pair of options).
            return Err(ConfigError::Invalid(
                "metacopy=on needs redirect_dir=on".into(),
            ));
        }
        let mut lowers = Vec::new();
        for l in &self.lowers {
            let c = existing_dir(l)?;
            if lowers.contains(&c) {
                return Err(ConfigError::Twice(l.clone()));
            }
            lowers.push(c);
        }
        let mountpoint = existing_dir(&self.mountpoint)?;
        if is_layerfuse_mount(&mountpoint) {
            return Err(ConfigError::AlreadyMounted(self.mountpoint.clone()));
        }
        let upper = match (&self.upper, &self.work) {
            (None, None) => None,
            (Some(u), Some(w)) => {
                let cu = existing_dir(u)?;
                let cw = existing_dir(w)?;
                if cu == cw || lowers.contains(&cu) {
                    return Err(ConfigError::Twice(u.clone()));
                }
                if lowers.contains(&cw) {
                    return Err(ConfigError::Twice(w.clone()));
                }
                for (given, c) in [(u, &cu), (w, &cw)] {
                    for (lg, l) in self.lowers.iter().zip(&lowers) {
                        if within(c, l) || within(l, c) {
                            return Err(ConfigError::Inside {
                                inner: given.clone(),
                                outer: lg.clone(),
                            });
                        }
                    }
                    if within(c, &mountpoint) || within(&mountpoint, c) {
                        return Err(ConfigError::Inside {
                            inner: given.clone(),
                            outer: self.mountpoint.clone(),
                        });
                    }
                }
                if within(&cu, &cw) || within(&cw, &cu) {
                    return Err(ConfigError::Inside {
                        inner: w.clone(),
                        outer: u.clone(),
                    });
                }
                let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
                if dev(&cu) != dev(&cw) {
                    return Err(ConfigError::DifferentFilesystems {
                        upper: u.clone(),
                        work: w.clone(),
                    });
                }
                Some((cu, cw))
            }
            _ => return Err(ConfigError::UpperWithoutWork),
        };
        let read_only = self.read_only || upper.is_none();
        let mut seen = Vec::new();
        for s in &self.splices {
            if seen.contains(&&s.target) {
                return Err(ConfigError::Invalid(format!(
                    "/{}: two volumes or binds at the same target",
                    s.target.display()
                )));
            }
            seen.push(&s.target);
            if let SpliceSource::Bind(src) = &s.source
                && !src.exists()
            {
                return Err(ConfigError::Missing(src.clone()));
            }
        }
        Ok(MountConfig {
            splices: self.splices.clone(),
            store_root: self.store_root.clone(),
            overlay: OverlayConfig {
                lowers,
                upper: if self.read_only { None } else { upper },
                redirect_dir: self.redirect_dir,
                metacopy: self.metacopy,
                userxattr: self.userxattr,
                volatile: self.volatile,
                ownership: self.ownership.clone(),
                splices: Vec::new(),
                override_stat: self.override_stat.clone(),
            },
            mountpoint,
            flags: self.flags.clone(),
            read_only,
        })
    }
}

/// Whether `path` is the mount point of a live layerfuse mount.
pub fn is_layerfuse_mount(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|line| mountinfo_is_layerfuse(line, path))
}

/// One mountinfo line: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS] - FSTYPE SOURCE SUPER`.
fn mountinfo_is_layerfuse(line: &str, path: &Path) -> bool {
    let mut halves = line.splitn(2, " - ");
    let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
        return false;
    };
    let Some(mp) = left.split(' ').nth(4) else {
        return false;
    };
    let mut r = right.split(' ');
    let fstype = r.next().unwrap_or("");
    let source = r.next().unwrap_or("");
    unescape_mountinfo(mp) == path.as_os_str().to_string_lossy()
        && (fstype == "fuse.layerfuse" || (fstype.starts_with("fuse") && source == "layerfuse"))
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
    }

    #[test]
    fn splice_specs_parse_and_bad_ones_are_refused() {
        let v = parse_splice("data:/var/lib/app:ro", true).unwrap();
        assert_eq!(v.source, SpliceSource::Volume(Some("data".into())));
        assert_eq!(v.target, PathBuf::from("var/lib/app"));
        assert!(v.read_only);
        let anon = parse_splice(":/data", true).unwrap();
        assert_eq!(anon.source, SpliceSource::Volume(None));
        let b = parse_splice("/host/a:b:/etc/x:rw,nocopy", false).unwrap();
        assert_eq!(b.source, SpliceSource::Bind(PathBuf::from("/host/a:b")));
        assert!(b.nocopy && !b.read_only);
        for bad in [
            "data:rel",
            "data:/",
            "data:/a/../b",
            "a/b:/x",
            "x",
            "data:/./y",
        ] {
            assert!(parse_splice(bad, true).is_err(), "{bad}");
        }
        assert!(parse_splice("rel/src:/x", false).is_err());
    }

    #[test]
    fn upper_without_work_is_refused() {
        let r = MountRequest {
            lowers: vec![PathBuf::from("/")],
            upper: Some(PathBuf::from("/tmp")),
            mountpoint: PathBuf::from("/tmp"),
            ..Default::default()
        };
        assert_eq!(r.validate().unwrap_err(), ConfigError::UpperWithoutWork);
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
