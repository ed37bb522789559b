//! Grafts: volumes and bind mounts joined into the union at a target path.
//!
//! A graft is one more branch of the tree, read and written through the same
//! [`Layer`] code as the union's layers: its root fd, every walk contained beneath it
//! (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`), stat, readlink, the
//! `O_PATH` handle for xattrs. So no link inside a source leads the daemon out of it.
//!
//! What differs from a layer is the rule, not the reading: inside a graft every
//! operation goes straight to the source (no copy-up, no whiteouts, nothing in the
//! upper), and a graft hides what the layers hold at its target. Whether a node or a
//! name is in a graft is decided once per operation, in `place.rs`; the operations
//! here are what a graft does once it was chosen. Crossing a graft boundary (rename,
//! link) gives EXDEV, as between two mounts; removing a target gives EBUSY. The
//! source may change on the host side at any time, so the kernel may cache graft
//! entries and attributes only briefly (see `GRAFT_TTL` in `crate::fuse`).

use super::node::{Node, NodeState};
use super::ops::{NewEntry, apply_setattr, make_entry};
use super::tree::Tree;
use super::{Attr, Caller, DirEntry, HandleId, Overlay, SetAttr, check_name};
use crate::layer::{self, Layer, MarkerNames, RelPath};
use crate::sys::{self, Errno, FileKind, Stat, SysResult, oflag};
use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

/// A graft as the mount is asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraftConfig {
    /// Path inside the merged tree, relative (no leading `/`), never empty.
    pub target: RelPath,
    /// The host directory or file.
    pub source: PathBuf,
    pub read_only: bool,
}

/// An open graft: its source as a layer.
#[derive(Debug)]
pub(super) struct Graft {
    pub target: RelPath,
    /// The source directory, or for a single-file bind the directory holding it.
    layer: Layer,
    /// For a single-file bind: the file's name in the layer's root.
    file: Option<OsString>,
    pub read_only: bool,
}

/// Where a node lives inside a graft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraftAt {
    /// Index into the mount's grafts.
    pub id: usize,
    /// Path below the graft's source (empty: the source itself, at the target).
    pub path: RelPath,
}

impl GraftAt {
    /// The graft's root: its target in the union, a mount point.
    pub fn is_root(&self) -> bool {
        self.path.is_empty()
    }
}

impl Graft {
    pub(super) fn open(cfg: &GraftConfig) -> SysResult<Graft> {
        // The source path is the user's: symlinks in it are resolved once, here (as
        // for lower layers); nothing inside the source is ever followed afterwards.
        let source = std::fs::canonicalize(&cfg.source).map_err(Errno::from)?;
        let st = std::fs::metadata(&source).map_err(Errno::from)?;
        // A source has no markers: the names are only there because a layer has them.
        let open = |dir: &std::path::Path| Layer::open(dir, MarkerNames::trusted(), false);
        let (layer, file) = if st.is_dir() {
            (open(&source)?, None)
        } else {
            let parent = source.parent().ok_or(Errno::EINVAL)?;
            let name = source.file_name().ok_or(Errno::EINVAL)?;
            (open(parent)?, Some(name.to_owned()))
        };
        Ok(Graft {
            target: cfg.target.clone(),
            layer,
            file,
            read_only: cfg.read_only,
        })
    }

    /// The path in the layer of the entry at `path` below the source.
    fn layer_path(&self, path: &[u8]) -> SysResult<RelPath> {
        match &self.file {
            Some(f) if path.is_empty() => Ok(f.as_bytes().to_vec()),
            Some(_) => Err(Errno::ENOTDIR),
            None => Ok(path.to_vec()),
        }
    }

    /// The source's layer, and the path in it of the entry at `path`.
    pub(super) fn entry(&self, path: &[u8]) -> SysResult<(&Layer, RelPath)> {
        Ok((&self.layer, self.layer_path(path)?))
    }

    pub(super) fn stat(&self, path: &[u8]) -> SysResult<Stat> {
        self.layer.stat(&self.layer_path(path)?)
    }

    /// The directory holding the entry at `path`, and its name there (`.`: the
    /// source directory itself).
    fn locate(&self, path: &[u8]) -> SysResult<(OwnedFd, OsString)> {
        self.layer.locate(&self.layer_path(path)?)
    }

    /// An open directory of the source (for `*at` calls and listings).
    fn dir(&self, path: &[u8]) -> SysResult<OwnedFd> {
        if self.file.is_some() {
            return Err(Errno::ENOTDIR);
        }
        self.layer.open_dir(path)
    }

    pub(super) fn layer(&self) -> &Layer {
        &self.layer
    }

    pub(super) fn writable(&self) -> SysResult<()> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }
}

impl Overlay {
    pub(super) fn graft(&self, at: &GraftAt) -> SysResult<&Graft> {
        self.grafts.get(at.id).ok_or(Errno::EIO)
    }

    /// The graft whose target is `name` in the union directory `parent`, if any.
    pub(super) fn graft_target(&self, t: &Tree, parent: &Node, name: &OsStr) -> Option<usize> {
        if self.grafts.is_empty() {
            return None;
        }
        let path = layer::join(&self.upper_path(t, parent), name);
        self.grafts.iter().position(|g| g.target == path)
    }

    /// Whether a graft target lies below `dir` (such a directory cannot move: its
    /// grafts are joined at fixed paths).
    pub(super) fn holds_graft_target(&self, t: &Tree, dir: &Node) -> bool {
        if self.grafts.is_empty() || dir.kind() != FileKind::Directory {
            return false;
        }
        let mut p = self.upper_path(t, dir).to_vec();
        p.push(b'/');
        self.grafts.iter().any(|g| g.target.starts_with(&p))
    }

    /// Graft targets directly inside the union directory `dir`, with their names.
    pub(super) fn graft_targets_in(&self, t: &Tree, dir: &Node) -> Vec<(OsString, usize)> {
        if self.grafts.is_empty() {
            return Vec::new();
        }
        let dpath = self.upper_path(t, dir);
        self.grafts
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                let (p, n) = layer::split_last(&g.target)?;
                (p == &*dpath).then(|| (n.to_owned(), i))
            })
            .collect()
    }

    /// Inode numbers of a graft live in their own space (bits 56–62 = 64 + graft).
    pub(super) fn graft_ino(&self, id: usize, ino: u64) -> u64 {
        if ino >> 56 == 0 && id < 63 {
            ((64 + id as u64) << 56) | ino
        } else {
            0
        }
    }

    /// The node of the graft entry `at`, named `name` in `parent`, with its stat.
    pub(super) fn graft_lookup(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        at: GraftAt,
        count: bool,
    ) -> SysResult<(Arc<Node>, Stat)> {
        let st = self.graft(&at)?.stat(&at.path)?;
        Ok((self.graft_node(parent, name, at, &st, count), st))
    }

    fn graft_node(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        at: GraftAt,
        st: &Stat,
        count: bool,
    ) -> Arc<Node> {
        let kind = st.kind();
        let ino = self.graft_ino(at.id, st.ino);
        let node = self.nodes.get_or_insert(
            ino,
            count,
            |n| {
                let s = n.state.read();
                !s.unlinked && s.kind == kind && s.graft().is_some_and(|a| a.id == at.id)
            },
            |ino| {
                Node::new(ino, {
                    let mut s = NodeState::new(Some(parent.clone()), name.to_owned(), kind, false);
                    s.set_graft(at.clone());
                    s
                })
            },
        );
        let mut s = node.state.write();
        s.parent = Some(parent.clone());
        s.name = name.into();
        s.set_graft(at);
        drop(s);
        node
    }

    /// The entries of a directory inside a graft: the source's own, as they are.
    pub(super) fn graft_entries(&self, at: &GraftAt) -> SysResult<Vec<DirEntry>> {
        let dir = self.graft(at)?.dir(&at.path)?;
        let mut out = Vec::new();
        for e in sys::read_dir(sys::borrow(&dir))? {
            let kind = match e.kind {
                Some(k) => k,
                None => sys::stat_at(sys::borrow(&dir), &e.name)?.kind(),
            };
            out.push(DirEntry {
                ino: self.graft_ino(at.id, e.ino),
                name: e.name,
                kind,
            });
        }
        Ok(out)
    }

    /// Graft targets in `dir` show their graft, whatever else the listing holds at
    /// that name (a single-file bind adds its file beside the layers' files): the
    /// entry is replaced where it stands, or added at the end.
    pub(super) fn show_graft_targets(&self, t: &Tree, dir: &Node, entries: &mut Vec<DirEntry>) {
        for (name, id) in self.graft_targets_in(t, dir) {
            let at = GraftAt {
                id,
                path: RelPath::new(),
            };
            let shown = self.graft(&at).and_then(|g| g.stat(&at.path)).ok();
            let pos = entries.iter().position(|e| e.name == name);
            match (shown, pos) {
                (Some(st), pos) => {
                    let e = DirEntry {
                        ino: self.graft_ino(id, st.ino),
                        name,
                        kind: st.kind(),
                    };
                    match pos {
                        Some(i) => entries[i] = e,
                        None => entries.push(e),
                    }
                }
                // A source gone on the host: nothing shows at its target.
                (None, Some(i)) => {
                    entries.remove(i);
                }
                (None, None) => {}
            }
        }
    }

    /// Create an entry at `at` inside a graft (named `name` in `parent`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn graft_create(
        &self,
        t: &Tree,
        parent: &Arc<Node>,
        at: GraftAt,
        name: &OsStr,
        mode: u32,
        what: NewEntry<'_>,
        caller: Caller,
    ) -> SysResult<(Attr, Option<HandleId>)> {
        check_name(name)?;
        let g = self.graft(&at)?;
        g.writable()?;
        let (dir, leaf) = g.locate(&at.path)?;
        let d = sys::borrow(&dir);
        let perm = mode & 0o7777 & !caller.umask;
        let is_symlink = matches!(what, NewEntry::Symlink { .. });
        let init = if matches!(what, NewEntry::Dir) {
            0o700
        } else {
            0o600
        };
        let opened = make_entry(d, &leaf, what, mode, init)?;
        let pst = sys::stat_fd(d)?;
        let gid = if pst.mode & 0o2000 != 0 {
            u32::MAX
        } else {
            caller.gid
        };
        sys::chown_at(d, &leaf, caller.uid, gid)?;
        if !is_symlink {
            sys::chmod_at(d, &leaf, perm)?;
        }
        let st = sys::stat_at(d, &leaf)?;
        let node = self.graft_node(parent, name, at, &st, true);
        let attr = self.attr_of(t, &node, &st);
        let fh = opened.map(|fd| self.insert_file_handle(node, fd));
        Ok((attr, fh))
    }

    /// Remove the entry at `at` inside a graft.
    pub(super) fn graft_remove(&self, at: &GraftAt, dir: bool) -> SysResult<()> {
        let g = self.graft(at)?;
        g.writable()?;
        let (d, name) = g.locate(&at.path)?;
        sys::unlink_at(sys::borrow(&d), &name, dir)
    }

    /// Rename within one graft, and rewrite the paths of the nodes below.
    pub(super) fn graft_rename(&self, from: &GraftAt, to: &GraftAt, flags: u32) -> SysResult<()> {
        if from.id != to.id {
            return Err(Errno::EXDEV);
        }
        let g = self.graft(from)?;
        g.writable()?;
        let (a, name) = g.locate(&from.path)?;
        let (b, newname) = g.locate(&to.path)?;
        sys::rename_at(sys::borrow(&a), &name, sys::borrow(&b), &newname, flags)?;
        let exchange = flags & sys::rename_flag::EXCHANGE != 0;
        self.graft_moved(from.id, &from.path, &to.path, exchange);
        Ok(())
    }

    /// Hard-link the graft entry `src` as `to`, within one graft.
    pub(super) fn graft_link(&self, src: &GraftAt, to: &GraftAt) -> SysResult<Stat> {
        if src.id != to.id {
            return Err(Errno::EXDEV);
        }
        let g = self.graft(src)?;
        g.writable()?;
        if src.is_root() {
            return Err(Errno::EPERM);
        }
        let (sdir, sname) = g.locate(&src.path)?;
        let (d, name) = g.locate(&to.path)?;
        sys::link_at(sys::borrow(&sdir), &sname, sys::borrow(&d), &name)?;
        sys::stat_at(sys::borrow(&d), &name)
    }

    /// chown, chmod, truncate and utimes of a graft entry.
    pub(super) fn graft_setattr(&self, at: &GraftAt, set: &SetAttr) -> SysResult<Stat> {
        let g = self.graft(at)?;
        g.writable()?;
        let (dir, name) = g.locate(&at.path)?;
        let d = sys::borrow(&dir);
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

    /// Paths inside graft `id` moved from `from` to `to` (and back, for an exchange):
    /// rewrite the paths of the nodes below.
    fn graft_moved(&self, id: usize, from: &[u8], to: &[u8], exchange: bool) {
        let remap = |path: &[u8], a: &[u8], b: &[u8]| -> Option<RelPath> {
            let rest = path.strip_prefix(a)?;
            (rest.is_empty() || rest[0] == b'/').then(|| [b, rest].concat())
        };
        self.nodes.for_each(|n| {
            let mut s = n.state.write();
            let Some(at) = s.graft_mut().filter(|at| at.id == id) else {
                return;
            };
            if let Some(p) = remap(&at.path, from, to) {
                at.path = p;
            } else if exchange && let Some(p) = remap(&at.path, to, from) {
                at.path = p;
            }
        });
    }

    /// Before mounting: make every graft target's parent directories, refuse a file
    /// bound onto a directory (or a directory onto a file), and fill each volume
    /// marked `populate` with what the layers hold at its target (as Docker fills a
    /// new volume from the image).
    pub fn prepare_grafts(&self, populate: &[bool]) -> Result<(), String> {
        let root = self.nodes.get(super::NodeId::ROOT).ok_or("no root node")?;
        let admin = Caller {
            uid: self.ownership.uids.stored(0).unwrap_or(0),
            gid: self.ownership.gids.stored(0).unwrap_or(0),
            umask: 0o022,
        };
        let show = |p: &[u8]| format!("/{}", String::from_utf8_lossy(p));
        for (i, g) in self.grafts.iter().enumerate() {
            let (parent_path, leaf) =
                layer::split_last(&g.target).ok_or("a graft target names the root")?;
            // Parents, made where missing.
            let mut dir = root.clone();
            for comp in parent_path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
                let name = OsStr::from_bytes(comp);
                let t = self.tree.read();
                dir = match self.lookup_node(&t, &dir, name, false) {
                    Ok((n, _)) => n,
                    Err(Errno::ENOENT) => {
                        drop(t);
                        self.create(dir.ino, name, 0o755, NewEntry::Dir, admin)
                            .map_err(|e| {
                                format!("{}: cannot make graft target: {e}", show(&g.target))
                            })?;
                        let t = self.tree.read();
                        self.lookup_node(&t, &dir, name, false)
                            .map_err(|e| format!("{}: {e}", show(&g.target)))?
                            .0
                    }
                    Err(e) => return Err(format!("{}: {e}", show(&g.target))),
                };
                if dir.kind() != FileKind::Directory {
                    return Err(format!("{}: a parent is not a directory", show(&g.target)));
                }
            }
            // What the layers (or an outer graft) hold at the target itself.
            let t = self.tree.read();
            let outer = dir.state.read().graft().cloned();
            let under = match outer {
                Some(at) => self
                    .graft(&at)
                    .ok()
                    .and_then(|o| o.stat(&layer::join(&at.path, leaf)).ok())
                    .map(|st| (st.kind(), None)),
                None => match self.resolve(&t, &dir, leaf) {
                    Ok(Some(r)) => {
                        let kind = r.stat.kind();
                        Some((kind, Some(self.node_for(&dir, leaf, r, false))))
                    }
                    _ => None,
                },
            };
            let src_is_file = g.file.is_some();
            match &under {
                Some((FileKind::Directory, _)) if src_is_file => {
                    return Err(format!(
                        "{}: cannot bind a file onto a directory",
                        show(&g.target)
                    ));
                }
                Some((k, _)) if !src_is_file && *k != FileKind::Directory => {
                    return Err(format!(
                        "{}: cannot mount a directory onto a file",
                        show(&g.target)
                    ));
                }
                _ => {}
            }
            if populate.get(i).copied().unwrap_or(false)
                && let Some((FileKind::Directory, Some(node))) = under
            {
                let dest = sys::dup(g.layer.root()).map_err(|e| e.to_string())?;
                self.copy_out(&t, &node, sys::borrow(&dest))
                    .map_err(|e| format!("{}: cannot fill volume: {e}", show(&g.target)))?;
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
                sys::chmod_at(dest, &e.name, st.perm())?;
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
}
