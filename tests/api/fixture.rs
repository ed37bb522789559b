//! A union opened in this process over layers in a temp dir, and the few calls a test
//! makes through it by path. Plain `std` and the union's API only, so it builds on
//! every platform the union builds on.

use layerfuse::overlay::{
    Attr, Caller, Errno, FileKind, HandleId, NewEntry, NodeId, Overlay, OverlayConfig, SysResult,
    oflag,
};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `S_IFREG`: a mode's file type bits, as FUSE's CREATE carries them.
pub const REGULAR: u32 = 0o100_000;

/// Layers `l0` (topmost lower) … `lN`, `upper` and `work` under one temp dir, removed
/// on drop.
pub struct Dirs {
    pub root: PathBuf,
    lowers: usize,
}

impl Dirs {
    pub fn new(lowers: usize) -> Dirs {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "lf-api-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir(&root).expect("temp dir");
        for i in 0..lowers {
            fs::create_dir(root.join(format!("l{i}"))).expect("lower dir");
        }
        fs::create_dir(root.join("upper")).expect("upper dir");
        fs::create_dir(root.join("work")).expect("work dir");
        Dirs { root, lowers }
    }

    pub fn lower(&self, i: usize) -> PathBuf {
        self.root.join(format!("l{i}"))
    }

    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    /// A file in layer `at` (a lower's index, or the upper with `None`), parents made.
    pub fn file(&self, at: Option<usize>, path: &str, data: &[u8]) -> PathBuf {
        let p = self.layer(at).join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("parents");
        fs::write(&p, data).expect("write layer file");
        p
    }

    pub fn dir(&self, at: Option<usize>, path: &str) -> PathBuf {
        let p = self.layer(at).join(path);
        fs::create_dir_all(&p).expect("layer dir");
        p
    }

    fn layer(&self, at: Option<usize>) -> PathBuf {
        match at {
            Some(i) => self.lower(i),
            None => self.upper(),
        }
    }

    pub fn config(&self, userxattr: bool) -> OverlayConfig {
        OverlayConfig {
            lowers: (0..self.lowers).map(|i| self.lower(i)).collect(),
            upper: Some((self.upper(), self.root.join("work"))),
            redirect_dir: true,
            metacopy: false,
            userxattr,
            volatile: true,
            ownership: Default::default(),
            grafts: Vec::new(),
            override_stat: None,
        }
    }

    /// The union over these layers with `user.overlay.*` markers (no privilege needed
    /// for the markers themselves).
    pub fn open(&self) -> Union {
        self.open_with(&self.config(true))
    }

    pub fn open_with(&self, cfg: &OverlayConfig) -> Union {
        let ov = Overlay::new(cfg).unwrap_or_else(|e| panic!("open the union: {e}"));
        let md = fs::metadata(&self.root).expect("temp dir");
        let owner = (md.uid(), md.gid());
        Union { ov, owner }
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The union, reached by path as a mount would reach it by lookups.
pub struct Union {
    pub ov: Overlay,
    owner: (u32, u32),
}

impl Union {
    pub fn caller(&self) -> Caller {
        Caller {
            uid: self.owner.0,
            gid: self.owner.1,
            umask: 0o022,
        }
    }

    /// Look up every component of `path` from the root.
    pub fn stat(&self, path: &str) -> SysResult<Attr> {
        let mut at = self.ov.getattr(NodeId::ROOT, None)?;
        for name in path.split('/').filter(|c| !c.is_empty()) {
            at = self.ov.lookup(at.ino, OsStr::new(name))?.0;
        }
        Ok(at)
    }

    /// The directory holding `path`'s last component, and that component.
    pub fn parent<'p>(&self, path: &'p str) -> SysResult<(NodeId, &'p OsStr)> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        Ok((self.stat(dir)?.ino, OsStr::new(name)))
    }

    pub fn names(&self, path: &str) -> SysResult<Vec<String>> {
        let dir = self.stat(path)?.ino;
        let (fh, _) = self.ov.opendir(dir)?;
        let listed = self.ov.readdir(fh, 0);
        self.ov.releasedir(fh);
        let mut names: Vec<String> = listed?
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn read(&self, path: &str) -> SysResult<Vec<u8>> {
        let fh = self.open(path, oflag::RDONLY)?;
        let data = self.ov.read(fh, 0, 1 << 20);
        self.ov.release(fh);
        data
    }

    pub fn open(&self, path: &str, flags: i32) -> SysResult<HandleId> {
        Ok(self.ov.open(self.stat(path)?.ino, flags)?.0)
    }

    /// Write `data` at `offset` through an open for writing.
    pub fn write(&self, path: &str, offset: u64, data: &[u8]) -> SysResult<()> {
        let fh = self.open(path, oflag::WRONLY)?;
        let written = self.ov.write(fh, offset, data, false);
        self.ov.release(fh);
        if written? as usize != data.len() {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    pub fn create(&self, path: &str, data: &[u8]) -> SysResult<Attr> {
        let (dir, name) = self.parent(path)?;
        let (attr, fh) = self.ov.create(
            dir,
            name,
            REGULAR | 0o644,
            NewEntry::File {
                flags: oflag::WRONLY,
            },
            self.caller(),
        )?;
        if let Some(fh) = fh {
            let written = self.ov.write(fh, 0, data, false);
            self.ov.release(fh);
            written?;
        }
        Ok(attr)
    }

    pub fn mkdir(&self, path: &str) -> SysResult<Attr> {
        let (dir, name) = self.parent(path)?;
        Ok(self
            .ov
            .create(dir, name, 0o755, NewEntry::Dir, self.caller())?
            .0)
    }

    pub fn unlink(&self, path: &str) -> SysResult<()> {
        let (dir, name) = self.parent(path)?;
        self.ov.remove(dir, name, false)
    }

    pub fn rmdir(&self, path: &str) -> SysResult<()> {
        let (dir, name) = self.parent(path)?;
        self.ov.remove(dir, name, true)
    }

    pub fn rename(&self, from: &str, to: &str, flags: u32) -> SysResult<()> {
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = self.parent(to)?;
        self.ov.rename(fd, fname, td, tname, flags)
    }

    pub fn link(&self, from: &str, to: &str) -> SysResult<Attr> {
        let ino = self.stat(from)?.ino;
        let (dir, name) = self.parent(to)?;
        self.ov.link(ino, dir, name)
    }

    /// The names `listxattr` shows, sorted (the Linux marker checks use it).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn xattr_names(&self, path: &str) -> SysResult<Vec<String>> {
        let list = self.ov.listxattr(self.stat(path)?.ino)?;
        let mut names: Vec<String> = list
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Whether the upper holds a whiteout at `path`: the kernel's 0/0 character device
/// on Linux, the OCI `.wh.NAME` file where there are no such devices.
pub fn upper_whiteout(d: &Dirs, path: &str) -> bool {
    let p = d.upper().join(path);
    if cfg!(target_os = "linux") {
        use std::os::unix::fs::FileTypeExt;
        fs::symlink_metadata(&p)
            .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
            .unwrap_or(false)
    } else {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        p.with_file_name(format!(".wh.{name}")).exists()
    }
}

/// Whether something exists at `path` in `dir` (a symlink or whiteout counts).
pub fn exists(dir: &Path, path: &str) -> bool {
    fs::symlink_metadata(dir.join(path)).is_ok()
}

pub fn is_dir(a: &SysResult<Attr>) -> bool {
    matches!(a, Ok(a) if a.kind == FileKind::Directory)
}
