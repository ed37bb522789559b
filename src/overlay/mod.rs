//! The union as a plain Rust API: which layer holds a name, copy-up, whiteouts,
//! merged listings. No FUSE types and no libc here: the wire adapter (`crate::fuse`)
//! calls these methods, and they reach the disk through `crate::layer` and
//! `crate::sys`.
//!
//! Lock order: the tree lock (`Overlay::tree`, read for every operation that turns
//! a node into an upper path, write for rename) before any node's `copy_up` mutex,
//! parent's before child's; node `state` locks are held only for short reads and
//! updates, never across I/O and never two at once except parent-then-child.

mod copyup;
mod dir;
mod dircache;
mod graft;
mod handles;
mod ids;
mod index;
mod live;
mod lookup;
mod lowerindex;
mod node;
mod ops;
mod ownership;
mod place;
mod rename;
mod tree;
mod xattr;

/// Plain types the union's API speaks in (re-exported so callers need not reach
/// below the union).
pub use crate::sys::{Errno, FileKind, FsStats, SysResult, TimeSet, Timespec, oflag, rename_flag};
pub use dir::DirEntry;
pub use graft::GraftConfig;
pub use handles::OpenInfo;
pub use ids::{HandleId, LayerIndex, NodeId};
pub use live::{Invalidation, LowerChange, LowerChangeKind};
pub use ops::NewEntry;
pub use ownership::{IdMap, IdRange, Ownership};

use crate::layer::{Layer, MarkerNames, RelPath};
use crate::sys::{self, Stat};
use dircache::{DirCache, LayerId};
use handles::HandleTable;
use ids::LowerLayers;
use node::{Node, NodeTable};
use place::Place;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use tree::{Tree, TreeLock, UpperPath};

/// What the union needs to know to run; built and validated by `crate::config`.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// Lower layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// Upper and work directories; `None` for a read-only union.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// Rename directories that come from a lower layer (the kernel's `redirect_dir=on`).
    pub redirect_dir: bool,
    /// Copy only the inode on a metadata-only change of a lower file; its data stays
    /// in the lower until the first data write (the kernel's `metacopy=on`).
    pub metacopy: bool,
    /// Use `user.overlay.*` markers (the kernel's `userxattr`) instead of `trusted.overlay.*`.
    pub userxattr: bool,
    /// Skip fsync on copy-up and on the caller's fsync.
    pub volatile: bool,
    /// How stored owners show through the mount (id mappings, squashing).
    pub ownership: Ownership,
    /// Volumes and bind mounts joined into the tree (grafts).
    pub grafts: Vec<GraftConfig>,
    /// Keep owners and modes set through the mount in this xattr instead of on the
    /// files (fuse-overlayfs's `xattr_permissions`: `user.containers.override_stat`).
    pub override_stat: Option<String>,
}

/// The identity of whoever made a request.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
}

/// Attributes as the union reports them.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: NodeId,
    pub kind: FileKind,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    /// Inside a volume or bind mount: the host may change it at any time.
    pub volatile: bool,
}

/// A changed attribute set, as `setattr` asks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// The change comes through an open file (ftruncate, open with `O_TRUNC`): the
    /// upper file is changed the same way, which sets its times even when the size
    /// stays; otherwise as truncate(2), which leaves that to the filesystem.
    pub through_open_file: bool,
}

/// The upper layer and the work directory beside it.
#[derive(Debug)]
struct Upper {
    layer: Layer,
    /// `W/work`: where copies are built before they are renamed into place.
    work: OwnedFd,
    /// `W/index` (the kernel's) and `W/lf-index`: one link to every copied-up file
    /// that had several names in its lower layer, so the other names join the same
    /// inode (the kernel's `index=on`).
    kernel_index: OwnedFd,
    index: OwnedFd,
    /// Some index entry may exist (found at mount, or made since). While none does, a
    /// lookup of a lower file with several names need not look for one: on layers
    /// full of hard links that probe was half the syscalls of a cold walk.
    has_index_entries: std::sync::atomic::AtomicBool,
    /// `W/lf-nlink` where the upper has no xattrs (the portable module): the link-count
    /// adjustment of each `W/lf-index` entry, in a file named as the entry.
    nlink_records: Option<OwnedFd>,
    /// Held open with an exclusive lock: one mount per work dir.
    _work_lock: OwnedFd,
}

pub struct Overlay {
    lowers: LowerLayers,
    upper: Option<Upper>,
    markers: MarkerNames,
    redirect_dir: bool,
    metacopy: bool,
    volatile: bool,
    /// CAP_SYS_ADMIN in the initial namespace (not rootless).
    privileged: bool,
    /// See [`OverlayConfig::override_stat`].
    override_stat: Option<std::ffi::OsString>,
    ownership: Ownership,
    /// Distinct devices of the layers, for folding inode numbers into one space.
    devices: Vec<u64>,
    nodes: NodeTable,
    handles: HandleTable,
    /// Read by every operation that maps a node to an upper path; written by rename's
    /// move (see `tree`).
    tree: TreeLock,
    /// Names of temporary entries in the work dir.
    temp_counter: AtomicU64,
    /// Copy-ups put entries into upper directories in turn (see `copyup`).
    placements: parking_lot::Mutex<()>,
    /// Told the inode number of a node whose attributes changed without a request on
    /// that node (a directory copied up now reports nlink 1), so caches can drop them.
    attr_changed: OnceLock<AttrChangeHook>,
    /// Open directories of every layer, bounded (see `dircache`).
    dirs: DirCache,
    /// Listings of lower directories, read once (see `lowerindex`).
    lower_index: lowerindex::LowerIndex,
    /// Volumes and bind mounts, each served through a `Layer` of its own.
    grafts: Vec<graft::Graft>,
    /// Copies made by this mount that carry no origin record (an upper without xattrs:
    /// the portable module): upper inode number → the number the object had before
    /// (see `Overlay::number_copy`). An entry goes with the object's last name.
    copy_numbers: dashmap::DashMap<u64, u64>,
    /// Where the upper has no xattrs (the portable module), the `overlay.nlink`
    /// adjustment of each copied lower hard link: upper inode number → adjustment and
    /// index entry, kept across mounts in `W/lf-nlink` (see `Overlay::set_nlink_adjust_at`).
    nlink_adjusts: dashmap::DashMap<u64, index::KeptAdjust>,
    /// What `layerfuse status` shows of this union's work.
    counters: crate::counters::Counters,
}

/// See [`Overlay::on_attr_change`].
pub type AttrChangeHook = Box<dyn Fn(NodeId) + Send + Sync>;

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("lowers", &self.lowers.len())
            .field("upper", &self.upper.is_some())
            .finish()
    }
}

/// A layer that could not be opened or prepared at mount time.
#[derive(Debug)]
pub struct SetupError {
    pub path: PathBuf,
    pub what: &'static str,
    pub errno: Errno,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.path.display(), self.what, self.errno)
    }
}

impl std::error::Error for SetupError {}

impl Overlay {
    /// This union's live counters (see `layerfuse status`).
    pub fn counters(&self) -> &crate::counters::Counters {
        &self.counters
    }

    /// Nodes the kernel holds (looked up and not forgotten), and open files and
    /// directories.
    pub fn nodes_held(&self) -> usize {
        self.nodes.len()
    }

    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// Open every layer, claim and clean the work dir. The caller validated paths.
    pub fn new(cfg: &OverlayConfig) -> Result<Overlay, SetupError> {
        // Entries are made with the modes callers ask for (their umask already applied by
        // the kernel): the daemon's own umask must not take bits away.
        sys::set_umask(0);
        // trusted.* needs CAP_SYS_ADMIN in the initial namespace: without it (rootless,
        // in a user namespace) markers go to user.overlay.*, as the kernel's userxattr.
        let markers = if cfg.userxattr || !sys::has_admin_capability() {
            MarkerNames::user()
        } else {
            MarkerNames::trusted()
        };
        let err = |path: &PathBuf, what, errno| SetupError {
            path: path.clone(),
            what,
            errno,
        };
        let mut lowers = Vec::with_capacity(cfg.lowers.len());
        for p in &cfg.lowers {
            let layer = Layer::open(p, markers.clone(), true)
                .map_err(|e| err(p, "cannot open lower layer", e))?;
            lowers.push(layer);
        }
        let upper = match &cfg.upper {
            None => None,
            Some((u, w)) => {
                let layer = Layer::open_upper(u, markers.clone())
                    .map_err(|e| err(u, "cannot open upper dir", e))?;
                let work_root =
                    sys::open_dir_path(w).map_err(|e| err(w, "cannot open work dir", e))?;
                lock_work_dir(sys::borrow(&work_root))
                    .map_err(|e| err(w, "work dir is in use by another mount", e))?;
                let work = copyup::prepare_work_dir(sys::borrow(&work_root))
                    .map_err(|e| err(w, "cannot prepare work dir", e))?;
                let index = index::open_index_dir(sys::borrow(&work_root), "lf-index")
                    .map_err(|e| err(w, "cannot prepare index dir", e))?;
                let kernel_index = index::open_index_dir(sys::borrow(&work_root), "index")
                    .map_err(|e| err(w, "cannot prepare index dir", e))?;
                let nlink_records = if sys::XATTRS {
                    None
                } else {
                    Some(
                        index::open_index_dir(sys::borrow(&work_root), index::NLINK_RECORDS)
                            .map_err(|e| err(w, "cannot prepare index dir", e))?,
                    )
                };
                let has_index_entries = [&kernel_index, &index].iter().any(|d| {
                    sys::read_dir(sys::borrow(d)).map_or(true, |entries| !entries.is_empty())
                });
                Some(Upper {
                    layer,
                    work,
                    kernel_index,
                    index,
                    has_index_entries: has_index_entries.into(),
                    nlink_records,
                    _work_lock: work_root,
                })
            }
        };
        let lowers = LowerLayers::new(lowers);
        let nlink_adjusts = dashmap::DashMap::new();
        if let Some(u) = &upper
            && let Some(records) = &u.nlink_records
        {
            for (ino, kept) in
                index::load_nlink_records(sys::borrow(records), sys::borrow(&u.index))
            {
                nlink_adjusts.insert(ino, kept);
            }
        }
        let mut devices = Vec::new();
        for dev in upper
            .iter()
            .map(|u| u.layer.dev)
            .chain(lowers.layers().iter().map(|l| l.dev))
        {
            if !devices.contains(&dev) {
                devices.push(dev);
            }
        }
        let mut grafts = Vec::with_capacity(cfg.grafts.len());
        for g in &cfg.grafts {
            grafts.push(
                graft::Graft::open(g)
                    .map_err(|e| err(&g.source, "cannot open volume or bind source", e))?,
            );
        }
        let root_state = lookup::root_state(upper.as_ref().map(|u| &u.layer), &lowers)
            .map_err(|e| err(&cfg.lowers[0], "cannot read layer root", e))?;
        Ok(Overlay {
            lowers,
            upper,
            markers,
            // A renamed directory's redirect is an xattr: without `trusted.*` (the portable
            // module) renaming a lower directory fails with EXDEV, as `redirect_dir=off`.
            redirect_dir: cfg.redirect_dir && sys::KERNEL_WHITEOUTS,
            // The metacopy marker is an xattr too: full copies only on the portable module
            // (and `metacopy=on` needs `redirect_dir=on`, which it cannot have either).
            metacopy: cfg.metacopy && sys::XATTRS,
            volatile: cfg.volatile,
            privileged: sys::has_admin_capability(),
            override_stat: cfg.override_stat.clone().map(Into::into),
            ownership: {
                let mut o = cfg.ownership.clone();
                // Only where ids can be unmapped (a Linux user namespace): on the portable
                // module an owner 65534 is `nobody`, shown as stored, as the kernel shows it.
                if sys::unmapped_ids_read_as_overflow() {
                    o.uids.unmapped_as = Some(sys::geteuid());
                    o.gids.unmapped_as = Some(sys::getegid());
                }
                o
            },
            devices,
            nodes: NodeTable::new(Node::new(NodeId::ROOT, root_state)),
            handles: HandleTable::default(),
            tree: TreeLock::default(),
            temp_counter: AtomicU64::new(0),
            placements: parking_lot::Mutex::new(()),
            attr_changed: OnceLock::new(),
            dirs: DirCache::new(256),
            lower_index: lowerindex::LowerIndex::new(100_000),
            grafts,
            copy_numbers: Default::default(),
            nlink_adjusts,
            counters: Default::default(),
        })
    }

    /// Register who to tell when a node's attributes change behind the kernel's back.
    pub fn on_attr_change(&self, hook: AttrChangeHook) {
        let _ = self.attr_changed.set(hook);
    }

    fn attr_changed(&self, ino: NodeId) {
        if let Some(hook) = self.attr_changed.get() {
            hook(ino);
        }
    }

    /// Whether this process may hand the kernel backing files (FUSE passthrough needs
    /// CAP_SYS_ADMIN in the initial namespace).
    pub fn may_passthrough(&self) -> bool {
        self.privileged
    }

    /// Whether names below `ino` may change behind the kernel's back (inside a
    /// graft, whose source the host may change): then misses are not cached long.
    pub fn is_volatile(&self, ino: NodeId) -> bool {
        self.nodes
            .get(ino)
            .is_some_and(|n| matches!(self.place(&n), Place::Graft(_)))
    }

    pub fn is_read_only(&self) -> bool {
        self.upper.is_none()
    }

    /// How many nodes the union holds now (for tests and diagnostics).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn node(&self, ino: NodeId) -> SysResult<Arc<Node>> {
        self.nodes.get(ino).ok_or(Errno::ENOENT)
    }

    fn upper(&self) -> SysResult<&Upper> {
        self.upper.as_ref().ok_or(Errno::EROFS)
    }

    /// One inode space for layers on several filesystems: the device's index in the
    /// high bits (0 when every layer shares one filesystem, so numbers are the real ones).
    fn fold_ino(&self, dev: u64, ino: u64) -> u64 {
        let idx = self.devices.iter().position(|&d| d == dev).unwrap_or(0) as u64;
        if idx == 0 {
            ino
        } else if ino >> 56 == 0 {
            (idx << 56) | ino
        } else {
            // Cannot fold: let the node table hand out a synthetic number.
            0
        }
    }

    /// The node's path in the upper layer, true while the tree lock is held.
    fn upper_path<'t>(&self, t: &'t Tree, node: &Node) -> UpperPath<'t> {
        let mut parts: Vec<Box<std::ffi::OsStr>> = Vec::new();
        let mut cur = {
            let s = node.state.read();
            if s.parent.is_none() {
                return UpperPath::new(t, RelPath::new());
            }
            parts.push(s.name.clone());
            s.parent.clone()
        };
        while let Some(n) = cur {
            let s = n.state.read();
            if s.parent.is_none() {
                break;
            }
            parts.push(s.name.clone());
            cur = s.parent.clone();
        }
        let mut path = RelPath::new();
        for p in parts.iter().rev() {
            path = crate::layer::join(&path, p);
        }
        UpperPath::new(t, path)
    }

    /// The directory at `path` of a layer, from the cache when it is there.
    fn dir_fd(&self, id: LayerId, path: &[u8]) -> SysResult<Arc<OwnedFd>> {
        if let Some(fd) = self.dirs.get(id, path) {
            return Ok(fd);
        }
        let layer = match id {
            LayerId::Upper => &self.upper()?.layer,
            LayerId::Lower(i) => &self.lowers[i],
        };
        let fd = Arc::new(layer.open_dir(path)?);
        self.dirs.insert(id, path, fd.clone());
        Ok(fd)
    }

    /// The index of the lower directory `path` of layer `li` (read now if not yet);
    /// `None` where the layer has no directory there.
    fn lower_dir_index(
        &self,
        li: LayerIndex,
        path: &[u8],
        xattr_whiteouts: bool,
    ) -> SysResult<Option<Arc<lowerindex::DirIndex>>> {
        if let Some(d) = self.lower_index.get(li, path) {
            return Ok(Some(d));
        }
        let dir = match self.dir_fd(LayerId::Lower(li), path) {
            Ok(d) => d,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(e),
        };
        let markers = crate::layer::DirMarkers {
            xattr_whiteouts,
            ..Default::default()
        };
        let (list, record) = self.lowers[li].list_with_record(sys::borrow(&dir), &markers)?;
        let index = Arc::new(lowerindex::DirIndex::new(list, record));
        self.lower_index.insert(li, path, index.clone());
        Ok(Some(index))
    }

    /// Stat the entry at `path` of a layer.
    fn stat_in(&self, id: LayerId, path: &[u8]) -> SysResult<Stat> {
        match crate::layer::split_last(path) {
            Some((dir, name)) => {
                let d = self.dir_fd(id, dir)?;
                sys::stat_at(sys::borrow(&d), name)
            }
            None => {
                let d = self.dir_fd(id, path)?;
                sys::stat_fd(sys::borrow(&d))
            }
        }
    }

    /// Stat the object a node shows right now.
    fn stat_node(&self, t: &Tree, node: &Node) -> SysResult<Stat> {
        match self.place(node) {
            Place::Graft(at) => self.graft(&at)?.stat(&at.path),
            Place::Upper if node.state.read().stale_name => {
                let (dir, name) = self.upper_object(t, node)?;
                sys::stat_at(sys::borrow(&dir), &name)
            }
            Place::Upper => self.stat_in(LayerId::Upper, &self.upper_path(t, node)),
            // Through the cache of lower directories (a graft's may change on the host).
            Place::Lower => {
                let l = self.first_lower(node).ok_or(Errno::ENOENT)?;
                self.stat_in(LayerId::Lower(l.layer), &l.path)
            }
        }
    }

    /// Owner and mode recorded in the override xattr, if the mount keeps them there.
    fn override_of(&self, t: &Tree, node: &Node) -> Option<(u32, u32, u32)> {
        let name = self.override_stat.as_ref()?;
        let fd = self.object_fd(t, node).ok()?;
        let v = sys::get_xattr(sys::borrow(&fd), name).ok()?;
        crate::layer::parse_override(&v)
    }

    /// The link count the layer store's record gives a lower file (the names it had
    /// in its layer's tar): a deduplicated file's inode is shared by every layer
    /// holding the same content, and its own count is theirs together.
    fn stored_nlink(&self, node: &Node) -> Option<u64> {
        let l = self.first_lower(node)?;
        // Only OCI (store) layers carry the record.
        if !self.lowers[l.layer].oci {
            return None;
        }
        let (dir, name) = crate::layer::split_last(&l.path)?;
        // The directory's index as lookup built it (with its xattr-whiteout marker).
        let xattr_whiteouts = node.parent().is_some_and(|p| {
            p.state
                .read()
                .lowers
                .dir_stack()
                .iter()
                .any(|pl| pl.layer == l.layer && pl.path == dir && pl.xattr_whiteouts)
        });
        let index = self.lower_dir_index(l.layer, dir, xattr_whiteouts).ok()??;
        let record = index.record.as_ref()?;
        crate::layer::storemeta::find(record, name.as_bytes()).map(|f| u64::from(f.nlink))
    }

    fn attr_of(&self, t: &Tree, node: &Node, st: &Stat) -> Attr {
        let mut st = *st;
        if st.nlink > 1
            && st.kind() == FileKind::Regular
            && self.place(node) == Place::Lower
            && let Some(n) = self.stored_nlink(node)
        {
            st.nlink = n;
        }
        let metacopy = node.state.read().metacopy;
        let data_lower = if metacopy {
            self.first_lower(node)
        } else {
            None
        };
        if let Some(l) = data_lower
            && let Ok(data) = self.stat_in(LayerId::Lower(l.layer), &l.path)
        {
            // A metadata-only copy occupies the blocks of its data (the kernel's figure).
            st.blocks = data.blocks;
        }
        if let Some((uid, gid, mode)) = self.override_of(t, node) {
            st.uid = uid;
            st.gid = gid;
            st.mode = (st.mode & !0o7777) | (mode & 0o7777);
        }
        let st = &st;
        let (merged, adjust, unlinked, volatile) = {
            let s = node.state.read();
            (
                s.is_merged_dir(),
                if s.upper { s.nlink_adjust() } else { 0 },
                // The kernel reports the real inode's count for an open, unlinked
                // file: zero once the upper file is gone, but a lower-only file
                // is still linked in its layer.
                s.unlinked && s.upper && (s.kind != FileKind::Directory || s.removed().is_some()),
                s.graft().is_some(),
            )
        };
        let nlink = if unlinked {
            0
        } else {
            (st.nlink as i64 + adjust).clamp(0, u32::MAX as i64) as u64
        };
        Attr {
            ino: node.ino,
            kind: st.kind(),
            perm: st.perm(),
            nlink: if merged { 1 } else { nlink as u32 },
            uid: self.ownership.uids.shown(st.uid),
            gid: self.ownership.gids.shown(st.gid),
            rdev: st.rdev,
            size: st.size,
            blocks: st.blocks,
            blksize: st.blksize,
            atime: st.atime,
            mtime: st.mtime,
            ctime: st.ctime,
            volatile,
        }
    }

    pub fn getattr(&self, ino: NodeId, fh: Option<HandleId>) -> SysResult<Attr> {
        let node = self.node(ino)?;
        let t = self.tree.read();
        if let Some(st) = fh.and_then(|fh| self.handles.fstat(fh)) {
            return Ok(self.attr_of(&t, &node, &st));
        }
        // A node only in the lower layers still is its lower entry once its name is gone
        // (layers never change); an upper one's path may name something else by now.
        // Through the union, a node not marked removed is at its name: the removal and
        // the mark are one step under the tree lock (see `remove`). Layers changed
        // behind the union's back (an upper entry replaced from outside, a live lower
        // layer's entry) can still put an object of another type there: an object never
        // changes its type, so that name no longer holds this node (ENOENT), where
        // reporting it would have the kernel mark the inode bad and answer EIO.
        let reliable = |n: &Node, st: &Stat| {
            let s = n.state.read();
            let lower_only = !s.upper && s.graft().is_none();
            st.kind() == s.kind && (!s.unlinked || lower_only)
        };
        let st = match self.stat_node(&t, &node) {
            Ok(st) if reliable(&node, &st) => st,
            other => match self.handles.fstat_any_of(ino) {
                Some(st) => st,
                // Gone, and no open file of the daemon's reaches it (the kernel opens
                // FIFOs and devices itself): what it was when its last name went.
                None if node.state.read().unlinked => match node.state.read().removed() {
                    Some(st) => *st,
                    None => return Err(Errno::ENOENT),
                },
                // Its name holds another object now: this one is gone from it.
                None => match other {
                    Ok(_) => return Err(Errno::ENOENT),
                    Err(e) => return Err(e),
                },
            },
        };
        Ok(self.attr_of(&t, &node, &st))
    }

    pub fn forget(&self, ino: NodeId, n: u64) {
        self.nodes.forget(ino, n);
    }

    /// Filesystem figures as seen at `ino`: a graft's source filesystem inside a
    /// graft, else the upper's (the top lower's when read-only).
    pub fn statfs(&self, ino: NodeId) -> SysResult<FsStats> {
        let place = self.nodes.get(ino).map(|n| self.place(&n));
        let layer = match (place, &self.upper) {
            (Some(Place::Graft(at)), _) => self.graft(&at)?.layer(),
            (_, Some(u)) => &u.layer,
            (_, None) => self.lowers.first().ok_or(Errno::EIO)?,
        };
        layer.statfs()
    }

    pub fn readlink(&self, ino: NodeId) -> SysResult<std::ffi::OsString> {
        let node = self.node(ino)?;
        let t = self.tree.read();
        self.readlink_node(&t, &node)
    }

    fn readlink_node(&self, t: &Tree, node: &Node) -> SysResult<std::ffi::OsString> {
        let place = self.place(node);
        match self.branch_entry(node, &place)? {
            Some((layer, path)) => layer.readlink(&path),
            None => {
                let (dir, name) = self.upper_object(t, node)?;
                sys::readlink_at(sys::borrow(&dir), &name)
            }
        }
    }

    /// Sync the upper filesystem.
    pub fn syncfs(&self) -> SysResult<()> {
        match &self.upper {
            Some(u) if !self.volatile => sys::syncfs(u.layer.root()),
            _ => Ok(()),
        }
    }
}

/// Names longer than this are refused with ENAMETOOLONG, as by the kernel.
pub const NAME_MAX: usize = 255;

fn check_name(name: &OsStr) -> SysResult<()> {
    if name.len() > NAME_MAX {
        Err(Errno::ENAMETOOLONG)
    } else {
        Ok(())
    }
}

/// Take the work dir's lock. A daemon whose mount was just unmounted still holds it for
/// the moment it takes to exit, and runtimes mount the same layer again right away
/// (Docker does between two containers): wait for it to be released, up to a few seconds.
fn lock_work_dir(work_root: std::os::fd::BorrowedFd<'_>) -> SysResult<()> {
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
    let start = std::time::Instant::now();
    loop {
        match sys::flock_exclusive_nonblocking(work_root) {
            Err(Errno::EAGAIN) if start.elapsed() < PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}
