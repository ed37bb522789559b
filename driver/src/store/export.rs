//! What a layer holds as a tar (`Diff`), a change list (`Changes`) and a size
//! (`DiffSize`). An image layer gives back the very tar it was filled from (its
//! skeleton replayed). A container layer is read from its upper directory and the
//! union's markers in it: 0/0 whiteouts and xattr whiteouts become `.wh.NAME`, opaque
//! directories get `.wh..wh..opq`, a renamed lower directory (`overlay.redirect`) is
//! written in full under its new name (its old name is whited out in the upper
//! already), and a metadata-only copy-up (`overlay.metacopy`) takes its data from the
//! layer below.

use super::skeleton;
use super::{ErrorKind, LayerId, LayerKind, LayerMeta, Store, StoreError, StoreResult};
use layerfuse::layer::storemeta::{self, StoredFile};
use layerfuse::layer::writer::Tree;
use layerfuse::layer::writer::{EntryStat as Stat, FileKind};
use layerfuse::layer::{DirMarkers, Found, Layer, MarkerNames, join, split_last};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Docker's change kinds (`Kind` of `GraphDriver.Changes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ChangeKind {
    Modify = 0,
    Add = 1,
    Delete = 2,
}

/// One changed path (absolute, as Docker shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

/// One layer of the stack: markers through `Layer`, contents through `Tree`.
struct Level {
    layer: Layer,
    tree: Tree,
}

impl Level {
    fn open(dir: &Path, oci: bool) -> StoreResult<Level> {
        let layer = Layer::open(dir, MarkerNames::trusted(), oci)
            .map_err(|e| StoreError::io(dir.display(), e))?;
        let tree = Tree::open(dir).map_err(|e| StoreError::io(dir.display(), e))?;
        Ok(Level { layer, tree })
    }

    fn markers(&self, rel: &[u8]) -> Option<DirMarkers> {
        let d = self.layer.open_dir(rel).ok()?;
        Some(self.layer.dir_markers(d.as_fd()))
    }

    /// What this layer holds at `rel` (its directory must exist here).
    fn find(&self, rel: &[u8]) -> Found {
        let Some((dir, name)) = split_last(rel) else {
            return match self.layer.stat(b"") {
                Ok(st) => Found::Entry(st),
                Err(_) => Found::Missing,
            };
        };
        let Ok(d) = self.layer.open_dir(dir) else {
            return Found::Missing;
        };
        let m = self.layer.dir_markers(d.as_fd());
        self.layer
            .find(d.as_fd(), name, &m)
            .unwrap_or(Found::Missing)
    }
}

/// The read-only layers under a container layer, topmost first.
struct Lowers {
    levels: Vec<Level>,
}

impl Lowers {
    /// Levels in which `rel` is a directory seen through the stack, topmost first.
    fn dir_levels(&self, rel: &[u8]) -> Vec<usize> {
        let mut set: Vec<usize> = Vec::new();
        for (i, l) in self.levels.iter().enumerate() {
            set.push(i);
            if l.markers(b"").is_some_and(|m| m.opaque) {
                break;
            }
        }
        let mut prefix = Vec::new();
        for c in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            prefix = join(&prefix, OsStr::from_bytes(c));
            let mut next = Vec::new();
            for &i in &set {
                let l = &self.levels[i];
                match l.find(&prefix) {
                    Found::Whiteout => break,
                    Found::Missing => continue,
                    Found::Entry(st) if st.kind() == FileKind::Directory => {
                        next.push(i);
                        if l.markers(&prefix).is_some_and(|m| m.opaque) {
                            break;
                        }
                    }
                    Found::Entry(_) => break,
                }
            }
            set = next;
            if set.is_empty() {
                break;
            }
        }
        set
    }

    /// The entry seen at `rel`: its level and stat.
    fn lookup(&self, rel: &[u8]) -> Option<(usize, Stat)> {
        let (dir, _) = split_last(rel)?;
        for i in self.dir_levels(dir) {
            match self.levels[i].find(rel) {
                Found::Whiteout => return None,
                Found::Missing => continue,
                Found::Entry(st) => return Some((i, st)),
            }
        }
        None
    }

    /// The merged listing of directory `rel`: name → level.
    fn list(&self, rel: &[u8]) -> BTreeMap<OsString, usize> {
        let mut seen = BTreeMap::new();
        let mut hidden = HashSet::new();
        for i in self.dir_levels(rel) {
            let l = &self.levels[i];
            let Ok(d) = l.layer.open_dir(rel) else {
                continue;
            };
            let d = d.as_fd();
            let m = l.layer.dir_markers(d);
            for e in l.layer.list(d, &m).unwrap_or_default() {
                if seen.contains_key(&e.name) || hidden.contains(&e.name) {
                    continue;
                }
                if e.whiteout {
                    hidden.insert(e.name);
                } else {
                    seen.insert(e.name, i);
                }
            }
        }
        seen
    }
}

/// Where an entry's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Src {
    Upper,
    Lower(usize),
}

enum Event {
    /// `path` was deleted from the layers below.
    Whiteout(Vec<u8>),
    /// Directory `path` hides everything below it.
    Opaque(Vec<u8>),
    /// An entry; `full` when it is part of a renamed directory written in full.
    Entry {
        path: Vec<u8>,
        src: Src,
        st: Stat,
        /// Where a regular file's data is (a metacopy's lower file), if not at `path`.
        data: Option<(Src, Vec<u8>)>,
        /// Where the entry is in `src` (differs from `path` under a renamed directory).
        at: Vec<u8>,
        full: bool,
    },
}

/// A container layer's upper and the layers under it.
struct Walk {
    upper: Level,
    lowers: Lowers,
}

fn redirect_target(value: &[u8], parent: &[u8]) -> Vec<u8> {
    match value.strip_prefix(b"/") {
        Some(abs) => abs.to_vec(),
        None => join(parent, OsStr::from_bytes(value)),
    }
}

impl Walk {
    fn new(store: &Store, id: &LayerId) -> StoreResult<Walk> {
        let meta = store.get(id)?;
        let upper = Level::open(&store.content_dir(&meta), false)?;
        let mut levels = Vec::new();
        for d in store.lower_dirs(id)? {
            levels.push(Level::open(&d, true)?);
        }
        Ok(Walk {
            upper,
            lowers: Lowers { levels },
        })
    }

    /// Visit the changes of directory `out` (its upper part at `upper`, and with `lower`
    /// the lower directory merged into it, for renamed directories written in full).
    fn walk(
        &self,
        out: &[u8],
        upper: Option<&[u8]>,
        lower: Option<Vec<u8>>,
        sink: &mut dyn FnMut(Event) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let full = lower.is_some();
        let mut names: BTreeMap<OsString, Option<usize>> = BTreeMap::new();
        let mut upper_listed = HashMap::new();
        let mut merge = lower;
        if let Some(u) = upper {
            let d = self
                .upper
                .layer
                .open_dir(u)
                .map_err(|e| StoreError::io("reading the container layer", e))?;
            let d = d.as_fd();
            let m = self.upper.layer.dir_markers(d);
            if m.opaque {
                merge = None;
            }
            for e in self
                .upper
                .layer
                .list(d, &m)
                .map_err(|e| StoreError::io("reading the container layer", e))?
            {
                names.insert(e.name.clone(), None);
                upper_listed.insert(e.name.clone(), e);
            }
        }
        if let Some(l) = &merge {
            for (name, i) in self.lowers.list(l) {
                names.entry(name).or_insert(Some(i));
            }
        }
        for (name, lower_level) in names {
            let path = join(out, &name);
            match lower_level {
                None => {
                    let Some(u) = upper else { continue };
                    let at = join(u, &name);
                    let Some(e) = upper_listed.get(&name) else {
                        continue;
                    };
                    if e.whiteout {
                        if !full {
                            sink(Event::Whiteout(path))?;
                        }
                        continue;
                    }
                    let st = self
                        .upper
                        .layer
                        .stat(&at)
                        .map_err(|e| StoreError::io("reading the container layer", e))?;
                    if st.kind() == FileKind::Directory {
                        let cm = self.upper.markers(&at).unwrap_or_default();
                        let child_lower = match &cm.redirect {
                            Some(r) => Some(redirect_target(
                                r,
                                split_last(&at).map(|(p, _)| p).unwrap_or_default(),
                            )),
                            None => merge.as_ref().map(|l| join(l, &name)),
                        };
                        let written_full = full || cm.redirect.is_some();
                        sink(Event::Entry {
                            path: path.clone(),
                            src: Src::Upper,
                            st,
                            data: None,
                            at: at.clone(),
                            full: written_full,
                        })?;
                        let below_is_dir = self
                            .lowers
                            .lookup(&path)
                            .is_some_and(|(_, s)| s.kind() == FileKind::Directory);
                        if (cm.opaque || cm.redirect.is_some()) && (below_is_dir || !full) {
                            sink(Event::Opaque(path.clone()))?;
                        }
                        let child_lower = if written_full && !cm.opaque {
                            child_lower
                        } else {
                            None
                        };
                        self.walk(&path, Some(&at), child_lower, sink)?;
                    } else {
                        let data = self.metacopy_source(&at)?;
                        sink(Event::Entry {
                            path,
                            src: Src::Upper,
                            st,
                            data,
                            at,
                            full,
                        })?;
                    }
                }
                Some(i) => {
                    let Some(l) = &merge else { continue };
                    let at = join(l, &name);
                    let Ok(st) = self.lowers.levels[i].layer.stat(&at) else {
                        continue;
                    };
                    let dir = st.kind() == FileKind::Directory;
                    sink(Event::Entry {
                        path: path.clone(),
                        src: Src::Lower(i),
                        st,
                        data: None,
                        at: at.clone(),
                        full: true,
                    })?;
                    if dir {
                        self.walk(&path, None, Some(at), sink)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Where the data of a metadata-only copy-up is.
    fn metacopy_source(&self, at: &[u8]) -> StoreResult<Option<(Src, Vec<u8>)>> {
        let Some((dir, name)) = split_last(at) else {
            return Ok(None);
        };
        let Ok(d) = self.upper.tree.dir(dir) else {
            return Ok(None);
        };
        let markers = &self.upper.layer.markers;
        if d.xattr(name, markers.metacopy()).ok().flatten().is_none() {
            return Ok(None);
        }
        let from = match d.xattr(name, markers.redirect()).ok().flatten() {
            Some(r) => redirect_target(&r, dir),
            None => at.to_vec(),
        };
        match self.lowers.lookup(&from) {
            Some((i, _)) => Ok(Some((Src::Lower(i), from))),
            None => Err(StoreError::io(
                format!("{:?}", String::from_utf8_lossy(at)),
                "metadata-only copy without its data below",
            )),
        }
    }

    fn level(&self, src: Src) -> &Level {
        match src {
            Src::Upper => &self.upper,
            Src::Lower(i) => self.lowers.levels.get(i).unwrap_or(&self.upper),
        }
    }
}

/// A store layer's record for the directory of `rel`, cached per directory.
struct Records {
    cache: HashMap<(Src, Vec<u8>), Vec<StoredFile>>,
}

impl Records {
    fn get(&mut self, level: &Level, src: Src, rel: &[u8]) -> Option<StoredFile> {
        let (dir, name) = split_last(rel)?;
        let key = (src, dir.to_vec());
        if !self.cache.contains_key(&key) {
            let rec = level
                .tree
                .dir(dir)
                .and_then(|d| {
                    let mut b = Vec::new();
                    let mut f = d.open_read(OsStr::new(storemeta::RECORD_NAME))?;
                    f.read_to_end(&mut b)?;
                    Ok(b)
                })
                .ok()
                .and_then(|b| storemeta::decode(&b).ok())
                .unwrap_or_default();
            self.cache.insert(key.clone(), rec);
        }
        self.cache
            .get(&key)
            .and_then(|r| storemeta::find(r, name.as_bytes()))
            .cloned()
    }
}

/// Tar output of a container layer, deterministic: sorted names, GNU headers,
/// xattrs as PAX `SCHILY.xattr.*`, hard links as link entries.
struct TarOut<W: Write> {
    builder: tar::Builder<W>,
    links: HashMap<(u8, u64, u64), Vec<u8>>,
    records: Records,
}

fn os_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

impl<W: Write> TarOut<W> {
    fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, mtime: i64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        h.set_mtime(u64::try_from(mtime).unwrap_or(0));
        h.set_size(0);
        h
    }

    fn whiteout(&mut self, path: &[u8], marker: &[u8]) -> io::Result<()> {
        let (dir, name) = split_last(path).unwrap_or((b"", OsStr::new("")));
        let mut wh = marker.to_vec();
        if marker == b".wh." {
            wh.extend_from_slice(name.as_bytes());
            let p = join(dir, OsStr::from_bytes(&wh));
            let mut h = Self::header(tar::EntryType::Regular, 0, 0, 0, 0);
            return self.builder.append_data(&mut h, os_path(&p), io::empty());
        }
        let p = join(path, OsStr::from_bytes(&wh));
        let mut h = Self::header(tar::EntryType::Regular, 0, 0, 0, 0);
        self.builder.append_data(&mut h, os_path(&p), io::empty())
    }

    fn entry(
        &mut self,
        walk: &Walk,
        ev_path: &[u8],
        src: Src,
        at: &[u8],
        st: &Stat,
        data: Option<&(Src, Vec<u8>)>,
    ) -> StoreResult<()> {
        let level = walk.level(src);
        let io_err = |e: io::Error| {
            StoreError::io(
                format!("exporting {:?}", String::from_utf8_lossy(ev_path)),
                e,
            )
        };
        let (mut mode, mut uid, mut gid, mut mtime) = (st.mode, st.uid, st.gid, st.mtime.sec);
        let mut link_key = (0u8, st.dev, st.ino);
        let mut multi = st.nlink > 1;
        if src != Src::Upper
            && st.kind() == FileKind::Regular
            && let Some(r) = self.records.get(level, src, at)
        {
            (mode, uid, gid, mtime) = (r.mode, r.uid, r.gid, r.mtime.sec);
            link_key = (1, r.file, 0);
            multi = r.nlink > 1;
        }
        let (dir, name) = split_last(at).unwrap_or((b"", OsStr::new("")));
        let d = level.tree.dir(dir).map_err(|e| io_err(super::os_err(e)))?;
        let xattrs: Vec<(String, Vec<u8>)> = d
            .xattrs(if at.is_empty() { OsStr::new("") } else { name })
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| {
                !k.starts_with(b"trusted.overlay.") && !k.starts_with(b"user.overlay.")
            })
            .map(|(k, v)| (format!("SCHILY.xattr.{}", String::from_utf8_lossy(&k)), v))
            .collect();
        if !xattrs.is_empty() {
            self.builder
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(io_err)?;
        }
        let kind = st.kind();
        let path = os_path(ev_path);
        if kind == FileKind::Regular && multi {
            if let Some(first) = self.links.get(&link_key) {
                let mut h = Self::header(tar::EntryType::Link, mode, uid, gid, mtime);
                return self
                    .builder
                    .append_link(&mut h, path, os_path(&first.clone()))
                    .map_err(io_err);
            }
            self.links.insert(link_key, ev_path.to_vec());
        }
        match kind {
            FileKind::Directory => {
                let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid, mtime);
                self.builder
                    .append_data(&mut h, path, io::empty())
                    .map_err(io_err)
            }
            FileKind::Regular => {
                let (dsrc, drel) = match data {
                    Some((s, r)) => (*s, r.clone()),
                    None => (src, at.to_vec()),
                };
                let (ddir, dname) = split_last(&drel).unwrap_or((b"", OsStr::new("")));
                let f = walk
                    .level(dsrc)
                    .tree
                    .dir(ddir)
                    .and_then(|d| d.open_read(dname))
                    .map_err(|e| io_err(super::os_err(e)))?;
                let size = f.metadata().map_err(io_err)?.len();
                let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, mtime);
                h.set_size(size);
                self.builder
                    .append_data(&mut h, path, f.take(size))
                    .map_err(io_err)
            }
            FileKind::Symlink => {
                let target = d.readlink(name).map_err(|e| io_err(super::os_err(e)))?;
                let mut h = Self::header(tar::EntryType::Symlink, mode, uid, gid, mtime);
                self.builder
                    .append_link(&mut h, path, Path::new(&target))
                    .map_err(io_err)
            }
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => {
                let ty = match kind {
                    FileKind::CharDevice => tar::EntryType::Char,
                    FileKind::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = Self::header(ty, mode, uid, gid, mtime);
                let major = ((st.rdev >> 32) & 0xffff_f000) | ((st.rdev >> 8) & 0xfff);
                let minor = ((st.rdev >> 12) & 0xffff_ff00) | (st.rdev & 0xff);
                h.set_device_major(major as u32).map_err(io_err)?;
                h.set_device_minor(minor as u32).map_err(io_err)?;
                self.builder
                    .append_data(&mut h, path, io::empty())
                    .map_err(io_err)
            }
            // Sockets are not kept in layers (as Docker does).
            FileKind::Socket => Ok(()),
        }
    }
}

impl Store {
    fn check_parent(&self, meta: &LayerMeta, parent: Option<&LayerId>) -> StoreResult<()> {
        if let Some(p) = parent
            && meta.parent.as_ref() != Some(p)
        {
            return Err(StoreError::new(
                ErrorKind::Invalid,
                format!(
                    "layer {} is not a child of {p}: only diffs against the parent are kept",
                    meta.id
                ),
            ));
        }
        Ok(())
    }

    /// Write layer `id`'s changes against its parent as a tar; returns its size.
    pub fn diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        out: &mut impl Write,
    ) -> StoreResult<u64> {
        let meta = self.get(id)?;
        self.check_parent(&meta, parent)?;
        let mut counted = CountingWriter { inner: out, n: 0 };
        match meta.kind {
            LayerKind::Image => {
                let dir = self.layer_path(id);
                match std::fs::File::open(dir.join("skeleton")) {
                    Ok(f) => {
                        let tree = Tree::open(&dir.join("diff"))
                            .map_err(|e| StoreError::io(dir.display(), e))?;
                        skeleton::replay(
                            io::BufReader::with_capacity(1 << 16, f),
                            &tree,
                            &mut counted,
                        )
                        .map_err(|e| StoreError::io(format!("exporting layer {id}"), e))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Never filled: an empty tar.
                        let b = tar::Builder::new(&mut counted);
                        b.into_inner().map_err(|e| StoreError::io("tar", e))?;
                    }
                    Err(e) => return Err(StoreError::io(dir.display(), e)),
                }
            }
            LayerKind::Container => {
                let walk = Walk::new(self, id)?;
                let mut t = TarOut {
                    builder: tar::Builder::new(&mut counted),
                    links: HashMap::new(),
                    records: Records {
                        cache: HashMap::new(),
                    },
                };
                walk.walk(b"", Some(b""), None, &mut |ev| match ev {
                    Event::Whiteout(p) => t
                        .whiteout(&p, b".wh.")
                        .map_err(|e| StoreError::io("tar", e)),
                    Event::Opaque(p) => t
                        .whiteout(&p, storemeta_opaque())
                        .map_err(|e| StoreError::io("tar", e)),
                    Event::Entry {
                        path,
                        src,
                        st,
                        data,
                        at,
                        ..
                    } => t.entry(&walk, &path, src, &at, &st, data.as_ref()),
                })?;
                t.builder
                    .into_inner()
                    .map_err(|e| StoreError::io("tar", e))?;
            }
        }
        Ok(counted.n)
    }

    /// The paths layer `id` adds, changes or deletes against its parent.
    pub fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> StoreResult<Vec<Change>> {
        let meta = self.get(id)?;
        self.check_parent(&meta, parent)?;
        let mut out = Vec::new();
        let abs = |p: &[u8]| format!("/{}", String::from_utf8_lossy(p));
        match meta.kind {
            LayerKind::Container => {
                let walk = Walk::new(self, id)?;
                walk.walk(b"", Some(b""), None, &mut |ev| {
                    match ev {
                        Event::Whiteout(p) => {
                            if walk.lowers.lookup(&p).is_some() {
                                out.push(Change {
                                    path: abs(&p),
                                    kind: ChangeKind::Delete,
                                });
                            }
                        }
                        Event::Opaque(_) => {}
                        Event::Entry { path, full, .. } => {
                            let kind = if !full && walk.lowers.lookup(&path).is_some() {
                                ChangeKind::Modify
                            } else {
                                ChangeKind::Add
                            };
                            out.push(Change {
                                path: abs(&path),
                                kind,
                            });
                        }
                    }
                    Ok(())
                })?;
            }
            LayerKind::Image => {
                // Read from the tar the layer was filled from, streamed through a pipe.
                let (r, mut w) = io::pipe().map_err(|e| StoreError::io("pipe", e))?;
                let mut a = tar::Archive::new(r);
                let walked: StoreResult<()> = std::thread::scope(|s| {
                    let writer = s.spawn(move || self.diff(id, parent, &mut w).map(|_| ()));
                    let read = (|| -> StoreResult<()> {
                        for e in a.entries().map_err(|e| StoreError::io("tar", e))? {
                            let e = e.map_err(|e| StoreError::io("tar", e))?;
                            let p = e.path_bytes().into_owned();
                            let p = super::import::clean_path(&p).unwrap_or_default();
                            let (dir, name) = split_last(&p).unwrap_or((b"", OsStr::new("")));
                            let name = name.as_bytes();
                            if name == b".wh..wh..opq" {
                                continue;
                            }
                            if let Some(n) = name.strip_prefix(b".wh.") {
                                out.push(Change {
                                    path: abs(&join(dir, OsStr::from_bytes(n))),
                                    kind: ChangeKind::Delete,
                                });
                            } else if !p.is_empty() {
                                out.push(Change {
                                    path: abs(&p),
                                    kind: ChangeKind::Add,
                                });
                            }
                        }
                        Ok(())
                    })();
                    drop(a);
                    let wrote = writer.join().unwrap_or_else(|_| {
                        Err(StoreError::io("export", "writer thread panicked"))
                    });
                    read.and(wrote)
                });
                walked?;
            }
        }
        Ok(out)
    }

    /// Bytes of file content layer `id` holds beyond its parent.
    pub fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> StoreResult<u64> {
        let meta = self.get(id)?;
        self.check_parent(&meta, parent)?;
        if meta.kind == LayerKind::Image {
            return Ok(meta.size);
        }
        let walk = Walk::new(self, id)?;
        let mut size = 0u64;
        walk.walk(b"", Some(b""), None, &mut |ev| {
            if let Event::Entry { st, .. } = ev
                && st.kind() == FileKind::Regular
            {
                size += st.size;
            }
            Ok(())
        })?;
        Ok(size)
    }
}

fn storemeta_opaque() -> &'static [u8] {
    layerfuse::layer::OCI_OPAQUE
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
