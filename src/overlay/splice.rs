//! Splices: volumes and bind mounts joined into the union at a target path.
//!
//! Inside a splice every operation goes straight to the source directory (or the one
//! source file): no copy-up, no whiteouts, nothing in the upper. A splice hides what
//! the layers hold at its target. Walks stay beneath the source root exactly as in a
//! layer (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`), so no link inside a
//! source leads the daemon out of it. Crossing a splice boundary (rename, link) gives
//! EXDEV, as between two mounts; removing a splice target gives EBUSY. The source may
//! change on the host side at any time, so the kernel may cache splice entries and
//! attributes only briefly (see `SPLICE_TTL` in `crate::fuse`).

use super::node::{Node, NodeState};
use super::tree::Tree;
use super::{Attr, Caller, Overlay, SetAttr, check_name};
use crate::layer::{self, RelPath};
use crate::sys::{self, Errno, FileKind, FsStats, Stat, SysResult, oflag};
use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

/// A splice as the mount is asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpliceConfig {
    /// Path inside the merged tree, relative (no leading `/`), never empty.
    pub target: RelPath,
    /// The host directory or file.
    pub source: PathBuf,
    pub read_only: bool,
}

/// An open splice.
#[derive(Debug)]
pub(super) struct Splice {
    pub target: RelPath,
    /// The source directory, or for a single-file bind the directory holding it.
    root: OwnedFd,
    /// For a single-file bind: the file's name in `root`.
    file: Option<OsString>,
    pub read_only: bool,
}

/// Where a node lives inside a splice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpliceAt {
    /// Index into the mount's splices.
    pub id: usize,
    /// Path below the splice's source (empty: the source itself).
    pub path: RelPath,
}

impl Splice {
    pub(super) fn open(cfg: &SpliceConfig) -> SysResult<Splice> {
        // The source path is the user's: symlinks in it are resolved once, here (as
        // for lower layers); nothing inside the source is ever followed afterwards.
        let source = std::fs::canonicalize(&cfg.source).map_err(Errno::from)?;
        let st = std::fs::metadata(&source).map_err(Errno::from)?;
        if st.is_dir() {
            Ok(Splice {
                target: cfg.target.clone(),
                root: sys::open_dir_path(&source)?,
                file: None,
                read_only: cfg.read_only,
            })
        } else {
            let parent = source.parent().ok_or(Errno::EINVAL)?;
            let name = source.file_name().ok_or(Errno::EINVAL)?;
            Ok(Splice {
                target: cfg.target.clone(),
                root: sys::open_dir_path(parent)?,
                file: Some(name.to_owned()),
                read_only: cfg.read_only,
            })
        }
    }

    /// The directory holding the entry at `path` and the entry's name in it.
    /// `None` as the name: `path` is the (directory) source itself.
    fn locate(&self, path: &[u8]) -> SysResult<(OwnedFd, Option<OsString>)> {
        if let Some(f) = &self.file {
            if !path.is_empty() {
                return Err(Errno::ENOTDIR);
            }
            return Ok((sys::dup(sys::borrow(&self.root))?, Some(f.clone())));
        }
        match layer::split_last(path) {
            Some((dir, name)) => Ok((
                sys::open_beneath(
                    sys::borrow(&self.root),
                    dir,
                    oflag::RDONLY | oflag::DIRECTORY,
                    0,
                )?,
                Some(name.to_owned()),
            )),
            None => Ok((sys::dup(sys::borrow(&self.root))?, None)),
        }
    }

    fn stat(&self, path: &[u8]) -> SysResult<Stat> {
        let (dir, name) = self.locate(path)?;
        match name {
            Some(n) => sys::stat_at(sys::borrow(&dir), &n),
            None => sys::stat_fd(sys::borrow(&dir)),
        }
    }

    /// An open directory of the source (for `*at` calls and listings).
    fn dir(&self, path: &[u8]) -> SysResult<OwnedFd> {
        if self.file.is_some() {
            return Err(Errno::ENOTDIR);
        }
        sys::open_beneath(
            sys::borrow(&self.root),
            path,
            oflag::RDONLY | oflag::DIRECTORY,
            0,
        )
    }

    fn writable(&self) -> SysResult<()> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }
}

impl Overlay {
    pub(super) fn splice(&self, at: &SpliceAt) -> SysResult<&Splice> {
        self.splices.get(at.id).ok_or(Errno::EIO)
    }

    /// The splice whose target is `name` in the union directory `parent`, if any.
    pub(super) fn splice_target(&self, t: &Tree, parent: &Node, name: &OsStr) -> Option<usize> {
        if self.splices.is_empty() {
            return None;
        }
        let path = layer::join(&self.upper_path(t, parent), name);
        self.splices.iter().position(|s| s.target == path)
    }

    /// Whether a splice target lies below `dir` (such a directory cannot move: its
    /// splices are joined at fixed paths).
    pub(super) fn holds_splice_target(&self, t: &Tree, dir: &Node) -> bool {
        if self.splices.is_empty() || dir.kind() != FileKind::Directory {
            return false;
        }
        let mut p = self.upper_path(t, dir).to_vec();
        p.push(b'/');
        self.splices.iter().any(|s| s.target.starts_with(&p))
    }

    /// Splice targets directly inside the union directory `dir`, with their names.
    pub(super) fn splice_targets_in(&self, t: &Tree, dir: &Node) -> Vec<(OsString, usize)> {
        if self.splices.is_empty() {
            return Vec::new();
        }
        let dpath = self.upper_path(t, dir);
        self.splices
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (p, n) = layer::split_last(&s.target)?;
                (p == &*dpath).then(|| (n.to_owned(), i))
            })
            .collect()
    }

    /// Inode numbers of a splice live in their own space (bits 56–62 = 64 + splice).
    pub(super) fn splice_ino(&self, id: usize, ino: u64) -> u64 {
        if ino >> 56 == 0 && id < 63 {
            ((64 + id as u64) << 56) | ino
        } else {
            0
        }
    }

    /// Resolve `name` in `parent` when a splice decides it: `parent` is inside a
    /// splice, or `name` is a splice target. `None`: the union decides.
    pub(super) fn splice_lookup(
        &self,
        t: &Tree,
        parent: &Arc<Node>,
        name: &OsStr,
        count: bool,
    ) -> SysResult<Option<(Arc<Node>, Stat)>> {
        // A target first: splices may nest (`/data` and `/data/cache`).
        let at = match self.splice_target(t, parent, name) {
            Some(id) => SpliceAt {
                id,
                path: RelPath::new(),
            },
            None => match parent.state.read().splice().cloned() {
                Some(p) => SpliceAt {
                    id: p.id,
                    path: layer::join(&p.path, name),
                },
                None => return Ok(None),
            },
        };
        let st = self.splice(&at)?.stat(&at.path)?;
        Ok(Some((self.splice_node(parent, name, at, &st, count), st)))
    }

    fn splice_node(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        at: SpliceAt,
        st: &Stat,
        count: bool,
    ) -> Arc<Node> {
        let kind = st.kind();
        let ino = self.splice_ino(at.id, st.ino);
        let node = self.nodes.get_or_insert(
            ino,
            count,
            |n| {
                let s = n.state.read();
                !s.unlinked && s.kind == kind && s.splice().is_some_and(|a| a.id == at.id)
            },
            |ino| {
                Node::new(ino, {
                    let mut s = NodeState::new(Some(parent.clone()), name.to_owned(), kind, false);
                    s.set_splice(at.clone());
                    s
                })
            },
        );
        let mut s = node.state.write();
        s.parent = Some(parent.clone());
        s.name = name.into();
        s.set_splice(at);
        drop(s);
        node
    }

    pub(super) fn splice_stat(&self, at: &SpliceAt) -> SysResult<Stat> {
        self.splice(at)?.stat(&at.path)
    }

    /// Listing of a directory inside a splice: the source's own entries, as they are.
    pub(super) fn splice_list(
        &self,
        t: &Tree,
        node: &Node,
        at: &SpliceAt,
    ) -> SysResult<Vec<super::DirEntry>> {
        let dir = self.splice(at)?.dir(&at.path)?;
        let parent_ino = node.parent().map_or(node.ino, |p| p.ino).get();
        let mut out = vec![
            super::DirEntry {
                name: ".".into(),
                ino: node.ino.get(),
                kind: FileKind::Directory,
            },
            super::DirEntry {
                name: "..".into(),
                ino: parent_ino,
                kind: FileKind::Directory,
            },
        ];
        let nested = self.splice_targets_in(t, node);
        for (name, id) in &nested {
            let root = SpliceAt {
                id: *id,
                path: RelPath::new(),
            };
            if let Ok(st) = self.splice_stat(&root) {
                out.push(super::DirEntry {
                    name: name.clone(),
                    ino: self.splice_ino(*id, st.ino),
                    kind: st.kind(),
                });
            }
        }
        for e in sys::read_dir(sys::borrow(&dir))? {
            if nested.iter().any(|(n, _)| *n == e.name) {
                continue;
            }
            let kind = match e.kind {
                Some(k) => k,
                None => sys::stat_at(sys::borrow(&dir), &e.name)?.kind(),
            };
            out.push(super::DirEntry {
                ino: self.splice_ino(at.id, e.ino),
                name: e.name,
                kind,
            });
        }
        Ok(out)
    }

    pub(super) fn splice_open(&self, at: &SpliceAt, flags: i32) -> SysResult<OwnedFd> {
        let sp = self.splice(at)?;
        let write = flags & oflag::ACCMODE != oflag::RDONLY || flags & oflag::TRUNC != 0;
        if write {
            sp.writable()?;
        }
        let (dir, name) = sp.locate(&at.path)?;
        let name = name.unwrap_or_else(|| ".".into());
        sys::open_at(sys::borrow(&dir), &name, flags, 0)
    }

    pub(super) fn splice_readlink(&self, at: &SpliceAt) -> SysResult<OsString> {
        let (dir, name) = self.splice(at)?.locate(&at.path)?;
        sys::readlink_at(sys::borrow(&dir), &name.ok_or(Errno::EINVAL)?)
    }

    pub(super) fn splice_statfs(&self, at: &SpliceAt) -> SysResult<FsStats> {
        sys::fstatvfs(sys::borrow(&self.splice(at)?.root))
    }

    /// Create an entry inside a spliced directory.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn splice_create(
        &self,
        t: &Tree,
        parent: &Arc<Node>,
        at: &SpliceAt,
        name: &OsStr,
        mode: u32,
        what: super::NewEntry<'_>,
        caller: Caller,
    ) -> SysResult<(Attr, Option<super::HandleId>)> {
        check_name(name)?;
        let sp = self.splice(at)?;
        sp.writable()?;
        let dir = sp.dir(&at.path)?;
        let d = sys::borrow(&dir);
        let perm = mode & 0o7777 & !caller.umask;
        let mut opened = None;
        let is_symlink = matches!(what, super::NewEntry::Symlink { .. });
        match what {
            super::NewEntry::File { flags } => {
                opened = Some(sys::open_at(
                    d,
                    name,
                    (flags & (oflag::ACCMODE | oflag::SYNC | oflag::NONBLOCK))
                        | oflag::CREAT
                        | oflag::EXCL,
                    0o600,
                )?);
            }
            super::NewEntry::Dir => sys::mkdir_at(d, name, 0o700)?,
            super::NewEntry::Node { rdev } => {
                sys::mknod_at(d, name, FileKind::from_mode(mode).mode_bits() | 0o600, rdev)?
            }
            super::NewEntry::Symlink { target } => sys::symlink_at(target, d, name)?,
        }
        let pst = sys::stat_fd(d)?;
        let gid = if pst.mode & 0o2000 != 0 {
            u32::MAX
        } else {
            caller.gid
        };
        sys::chown_at(d, name, caller.uid, gid)?;
        if !is_symlink {
            let fd = sys::open_path_at(d, name)?;
            sys::chmod_path_fd(sys::borrow(&fd), perm)?;
        }
        let st = sys::stat_at(d, name)?;
        let child = SpliceAt {
            id: at.id,
            path: layer::join(&at.path, name),
        };
        let node = self.splice_node(parent, name, child, &st, true);
        let attr = self.attr_of(t, &node, &st);
        let fh = opened.map(|fd| self.insert_file_handle(node, fd));
        Ok((attr, fh))
    }

    pub(super) fn splice_remove(&self, at: &SpliceAt, name: &OsStr, dir: bool) -> SysResult<()> {
        let sp = self.splice(at)?;
        sp.writable()?;
        let d = sp.dir(&at.path)?;
        sys::unlink_at(sys::borrow(&d), name, dir)
    }

    pub(super) fn splice_rename(
        &self,
        from: &SpliceAt,
        name: &OsStr,
        to: &SpliceAt,
        newname: &OsStr,
        flags: u32,
    ) -> SysResult<()> {
        if from.id != to.id {
            return Err(Errno::EXDEV);
        }
        let sp = self.splice(from)?;
        sp.writable()?;
        let a = sp.dir(&from.path)?;
        let b = sp.dir(&to.path)?;
        sys::rename_at(sys::borrow(&a), name, sys::borrow(&b), newname, flags)
    }

    /// Before mounting: make every splice target's parent directories, refuse a file
    /// bound onto a directory (or a directory onto a file), and fill each volume
    /// marked `populate` with what the layers hold at its target (as Docker fills a
    /// new volume from the image).
    pub fn prepare_splices(&self, populate: &[bool]) -> Result<(), String> {
        let root = self.nodes.get(super::NodeId::ROOT).ok_or("no root node")?;
        let admin = Caller {
            uid: self.ownership.uids.stored(0).unwrap_or(0),
            gid: self.ownership.gids.stored(0).unwrap_or(0),
            umask: 0o022,
        };
        let show = |p: &[u8]| format!("/{}", String::from_utf8_lossy(p));
        for (i, sp) in self.splices.iter().enumerate() {
            let (parent_path, leaf) =
                layer::split_last(&sp.target).ok_or("a splice target names the root")?;
            // Parents, made where missing.
            let mut dir = root.clone();
            for comp in parent_path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
                let name = OsStr::from_bytes(comp);
                let t = self.tree.read();
                dir = match self.lookup_node(&t, &dir, name, false) {
                    Ok((n, _)) => n,
                    Err(Errno::ENOENT) => {
                        drop(t);
                        self.create(dir.ino, name, 0o755, super::NewEntry::Dir, admin)
                            .map_err(|e| {
                                format!("{}: cannot make splice target: {e}", show(&sp.target))
                            })?;
                        let t = self.tree.read();
                        self.lookup_node(&t, &dir, name, false)
                            .map_err(|e| format!("{}: {e}", show(&sp.target)))?
                            .0
                    }
                    Err(e) => return Err(format!("{}: {e}", show(&sp.target))),
                };
                if dir.kind() != FileKind::Directory {
                    return Err(format!("{}: a parent is not a directory", show(&sp.target)));
                }
            }
            // What the layers (or an outer splice) hold at the target itself.
            let t = self.tree.read();
            let under = if dir.state.read().splice().is_some() {
                let at = dir.state.read().splice().cloned().ok_or("splice")?;
                self.splice(&at)
                    .ok()
                    .and_then(|s| s.stat(&layer::join(&at.path, leaf)).ok())
                    .map(|st| (st.kind(), None))
            } else {
                match self.resolve(&t, &dir, leaf) {
                    Ok(Some(r)) => {
                        let kind = r.stat.kind();
                        Some((kind, Some(self.node_for(&dir, leaf, r, false))))
                    }
                    _ => None,
                }
            };
            let src_is_file = sp.file.is_some();
            match &under {
                Some((FileKind::Directory, _)) if src_is_file => {
                    return Err(format!(
                        "{}: cannot bind a file onto a directory",
                        show(&sp.target)
                    ));
                }
                Some((k, _)) if !src_is_file && *k != FileKind::Directory => {
                    return Err(format!(
                        "{}: cannot mount a directory onto a file",
                        show(&sp.target)
                    ));
                }
                _ => {}
            }
            if populate.get(i).copied().unwrap_or(false)
                && let Some((FileKind::Directory, Some(node))) = under
            {
                let dest = sys::dup(sys::borrow(&sp.root)).map_err(|e| e.to_string())?;
                self.copy_out(&t, &node, sys::borrow(&dest))
                    .map_err(|e| format!("{}: cannot fill volume: {e}", show(&sp.target)))?;
            }
        }
        Ok(())
    }

    /// Copy a union directory's visible content into `dest` (owners, modes, times,
    /// xattrs kept). Runs before the mount serves anything, so nothing waits on the
    /// tree lock it holds while copying.
    fn copy_out(&self, t: &Tree, dir: &Arc<Node>, dest: BorrowedFd<'_>) -> SysResult<()> {
        for e in self.list_dir(t, dir)? {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let Some(r) = self.resolve(t, dir, &e.name)? else {
                continue;
            };
            let st = r.stat;
            let node = self.node_for(dir, &e.name, r, false);
            match st.kind() {
                FileKind::Directory => {
                    sys::mkdir_at(dest, &e.name, 0o700)?;
                    let sub = sys::open_at(dest, &e.name, oflag::RDONLY | oflag::DIRECTORY, 0)?;
                    self.copy_out(t, &node, sys::borrow(&sub))?;
                }
                FileKind::Regular => {
                    let src = self.open_backing(t, &node, oflag::RDONLY)?;
                    let dst = sys::open_at(
                        dest,
                        &e.name,
                        oflag::WRONLY | oflag::CREAT | oflag::EXCL,
                        0o600,
                    )?;
                    super::copyup::copy_data(sys::borrow(&src), sys::borrow(&dst), st.size)?;
                    self.counters.filled(st.size);
                }
                FileKind::Symlink => {
                    let target = self.readlink_node(t, &node)?;
                    sys::symlink_at(&target, dest, &e.name)?;
                }
                k => sys::mknod_at(dest, &e.name, k.mode_bits() | 0o600, st.rdev)?,
            }
            sys::chown_at(dest, &e.name, st.uid, st.gid)?;
            if st.kind() != FileKind::Symlink {
                let fd = sys::open_path_at(dest, &e.name)?;
                sys::chmod_path_fd(sys::borrow(&fd), st.perm())?;
            }
            sys::set_times_at(
                dest,
                &e.name,
                sys::TimeSet::At(st.atime),
                sys::TimeSet::At(st.mtime),
            )?;
        }
        Ok(())
    }

    /// Paths inside splice `id` moved from `from` to `to` (and back, for an exchange):
    /// rewrite the paths of the nodes below.
    pub(super) fn splice_moved(&self, id: usize, from: &[u8], to: &[u8], exchange: bool) {
        let remap = |path: &[u8], a: &[u8], b: &[u8]| -> Option<RelPath> {
            let rest = path.strip_prefix(a)?;
            (rest.is_empty() || rest[0] == b'/').then(|| [b, rest].concat())
        };
        self.nodes.for_each(|n| {
            let mut s = n.state.write();
            let Some(at) = s.splice_mut().filter(|at| at.id == id) else {
                return;
            };
            if let Some(p) = remap(&at.path, from, to) {
                at.path = p;
            } else if exchange && let Some(p) = remap(&at.path, to, from) {
                at.path = p;
            }
        });
    }

    pub(super) fn splice_link(
        &self,
        src: &SpliceAt,
        to: &SpliceAt,
        name: &OsStr,
    ) -> SysResult<Stat> {
        if src.id != to.id {
            return Err(Errno::EXDEV);
        }
        let sp = self.splice(src)?;
        sp.writable()?;
        let (sdir, sname) = sp.locate(&src.path)?;
        let sname = sname.ok_or(Errno::EPERM)?;
        let d = sp.dir(&to.path)?;
        sys::link_at(sys::borrow(&sdir), &sname, sys::borrow(&d), name)?;
        sys::stat_at(sys::borrow(&d), name)
    }

    pub(super) fn splice_setattr(&self, at: &SpliceAt, set: &SetAttr) -> SysResult<Stat> {
        let sp = self.splice(at)?;
        sp.writable()?;
        let (dir, name) = sp.locate(&at.path)?;
        let d = sys::borrow(&dir);
        let name = name.unwrap_or_else(|| ".".into());
        let mut set = *set;
        // truncate(2) to the current size changes nothing, times included (an
        // ftruncate of the source would set them).
        if set
            .size
            .is_some_and(|s| sys::stat_at(d, &name).is_ok_and(|st| st.size == s))
        {
            set.size = None;
        }
        apply_setattr(d, &name, &set)?;
        sys::stat_at(d, &name)
    }

    /// An `O_PATH` handle on a splice entry, for xattr calls.
    pub(super) fn splice_object(&self, at: &SpliceAt) -> SysResult<OwnedFd> {
        let (dir, name) = self.splice(at)?.locate(&at.path)?;
        match name {
            Some(n) => sys::open_path_at(sys::borrow(&dir), &n),
            None => Ok(dir),
        }
    }

    pub(super) fn splice_writable(&self, at: &SpliceAt) -> SysResult<()> {
        self.splice(at)?.writable()
    }
}

/// chown, chmod, truncate and utimes of the file open at `fd`.
pub(super) fn apply_setattr_fd(fd: BorrowedFd<'_>, set: &SetAttr) -> SysResult<()> {
    if set.uid.is_some() || set.gid.is_some() {
        sys::chown_fd(fd, set.uid.unwrap_or(u32::MAX), set.gid.unwrap_or(u32::MAX))?;
    }
    if let Some(mode) = set.mode {
        sys::chmod_fd(fd, mode & 0o7777)?;
    }
    if let Some(size) = set.size {
        // Through the fd's own name: the fd may be open for reading only.
        sys::truncate_path_fd(fd, size)?;
    }
    if set.atime.is_some() || set.mtime.is_some() {
        sys::set_times_fd(
            fd,
            set.atime.unwrap_or(sys::TimeSet::Omit),
            set.mtime.unwrap_or(sys::TimeSet::Omit),
        )?;
    }
    Ok(())
}

/// chown, chmod, truncate and utimes of `name` in `dir`, never following a symlink.
pub(super) fn apply_setattr(dir: BorrowedFd<'_>, name: &OsStr, set: &SetAttr) -> SysResult<()> {
    if set.uid.is_some() || set.gid.is_some() {
        sys::chown_at(
            dir,
            name,
            set.uid.unwrap_or(u32::MAX),
            set.gid.unwrap_or(u32::MAX),
        )?;
    }
    if let Some(mode) = set.mode {
        let fd = sys::open_path_at(dir, name)?;
        sys::chmod_path_fd(sys::borrow(&fd), mode & 0o7777)?;
    }
    if let Some(size) = set.size {
        if set.through_open_file || cfg!(not(target_os = "linux")) {
            let fd = sys::open_at(dir, name, oflag::WRONLY, 0)?;
            sys::truncate_fd(sys::borrow(&fd), size)?;
        } else {
            let fd = sys::open_path_at(dir, name)?;
            sys::truncate_path_fd(sys::borrow(&fd), size)?;
        }
    }
    if set.atime.is_some() || set.mtime.is_some() {
        sys::set_times_at(
            dir,
            name,
            set.atime.unwrap_or(sys::TimeSet::Omit),
            set.mtime.unwrap_or(sys::TimeSet::Omit),
        )?;
    }
    Ok(())
}
