//! Filling an image layer from a tar (`ApplyDiff`): one pass over the stream, the
//! diffID hashed as it is read, the skeleton recorded, regular files written once as
//! blobs and linked to the store's objects, every hostile entry refused by name.

use super::skeleton::SkeletonWriter;
use super::{ErrorKind, LayerId, LayerKind, Store, StoreError, StoreResult, hex, write_meta};
use layerfuse::layer::storemeta::{self, StoredFile};
use layerfuse::layer::writer::{
    FileKind, OsError as Errno, Timespec, effective_ids, is_unsupported,
};
use layerfuse::layer::writer::{Tree, TreeDir};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

/// Called with the bytes of tar read so far.
pub type Progress<'a> = &'a dyn Fn(u64);

/// What an import made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    pub diff_id: String,
    pub size: u64,
    pub tar_size: u64,
    pub entries: u64,
}

struct TeeState {
    hasher: Sha256,
    skeleton: SkeletonWriter<BufWriter<std::fs::File>>,
    /// Bytes being read now are a file's content (hashed, not recorded).
    content: bool,
    total: u64,
}

/// The tar stream as the `tar` crate reads it, hashed and recorded on the way.
struct Tee<'p, R> {
    inner: R,
    state: Rc<RefCell<TeeState>>,
    progress: Option<Progress<'p>>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = buf.get(..n).unwrap_or_default();
        let mut s = self.state.borrow_mut();
        s.hasher.update(got);
        s.total += n as u64;
        if !s.content {
            s.skeleton.raw(got)?;
        }
        if let Some(p) = self.progress {
            p(s.total);
        }
        Ok(n)
    }
}

fn hostile(path: &[u8], why: &str) -> StoreError {
    StoreError::new(
        ErrorKind::Hostile,
        format!(
            "refused tar entry {:?}: {why}",
            String::from_utf8_lossy(&path[..path.len().min(300)])
        ),
    )
}

/// A tar name as a clean relative path: no leading `/`, no `..`, `.` and empty
/// components dropped, each component at most 255 bytes.
pub(crate) fn clean_path(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute name");
    }
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return Err("name with '..'"),
            c if c.len() > 255 => return Err("name component over 255 bytes"),
            c if c.contains(&0) => return Err("name with a NUL byte"),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[][..], path),
    }
}

/// A numeric header field, an empty one (all NUL or spaces) read as 0 as Go's
/// archive/tar (Docker's own tar code) reads it.
fn numeric(field: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    if field.iter().all(|&b| b == 0 || b == b' ') {
        return Ok(0);
    }
    parsed
}

/// Linux's `makedev`.
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// Attributes an entry asks for.
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Timespec,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut nsec = 0i64;
    let digits: String = frac.chars().take(9).collect();
    if !digits.is_empty() {
        nsec = format!("{digits:0<9}").parse().ok()?;
        if sec < 0 && nsec > 0 {
            return Some(Timespec {
                sec: sec - 1,
                nsec: 1_000_000_000 - nsec,
            });
        }
    }
    Some(Timespec { sec, nsec })
}

/// xattrs a layer may carry; the union's own markers never come from a tar.
fn xattr_allowed(key: &[u8]) -> bool {
    (key.starts_with(b"user.") && !key.starts_with(b"user.overlay."))
        || key == b"security.capability"
}

struct Importer<'s> {
    store: &'s Store,
    tree: Tree,
    blobs: TreeDir,
    blob_seq: u64,
    root: bool,
    /// Layer file numbers are `seq << 24 | n`.
    seq: u64,
    next_file: u64,
    /// Objects made by this import, by key: the blob holding each.
    new_objects: HashMap<String, String>,
    /// Deduplicated regular files by path: what the tar said.
    files: BTreeMap<Vec<u8>, StoredFile>,
    /// Directories known to exist (made or checked).
    dirs: HashSet<Vec<u8>>,
    /// Attributes of directory entries, applied at the end (children change times).
    dir_attrs: BTreeMap<Vec<u8>, Attrs>,
    /// Non-directories this tar made (hard-link targets must be among them).
    written: HashSet<Vec<u8>>,
    size: u64,
    entries: u64,
    last_dir: Option<(Vec<u8>, TreeDir)>,
}

impl Importer<'_> {
    fn io(&self, path: &[u8], e: impl std::fmt::Display) -> StoreError {
        StoreError::io(format!("importing {:?}", String::from_utf8_lossy(path)), e)
    }

    /// The directory `rel`, made (and its parents) if missing; a path through a
    /// symlink or a non-directory is refused.
    fn ensure_dir(&mut self, rel: &[u8], entry: &[u8]) -> StoreResult<TreeDir> {
        if !self.dirs.contains(rel) && !rel.is_empty() {
            let mut prefix = Vec::new();
            for c in rel.split(|&b| b == b'/') {
                let parent = prefix.clone();
                if !prefix.is_empty() {
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(c);
                if self.dirs.contains(&prefix) {
                    continue;
                }
                let pd = self.open_dir(&parent, entry)?;
                match pd.stat(OsStr::from_bytes(c)) {
                    Ok(st) if st.kind() == FileKind::Directory => {}
                    Ok(st) if st.kind() == FileKind::Symlink => {
                        return Err(hostile(entry, "path goes through a symlink"));
                    }
                    Ok(_) => return Err(hostile(entry, "path goes through a non-directory")),
                    Err(Errno::ENOENT) => pd
                        .mkdir(OsStr::from_bytes(c), 0o755)
                        .map_err(|e| self.io(entry, e))?,
                    Err(e) => return Err(self.io(entry, e)),
                }
                self.dirs.insert(prefix.clone());
            }
        }
        self.open_dir(rel, entry)
    }

    fn open_dir(&mut self, rel: &[u8], entry: &[u8]) -> StoreResult<TreeDir> {
        if let Some((p, d)) = &self.last_dir
            && p == rel
        {
            return d.try_clone().map_err(|e| self.io(entry, e));
        }
        let d = self.tree.dir(rel).map_err(|e| match e {
            Errno::ELOOP | Errno::EXDEV => hostile(entry, "path goes through a symlink"),
            Errno::ENOTDIR => hostile(entry, "path goes through a non-directory"),
            e => self.io(entry, e),
        })?;
        let keep = d.try_clone().map_err(|e| self.io(entry, e))?;
        self.last_dir = Some((rel.to_vec(), keep));
        Ok(d)
    }

    /// Clear `name` in `dir` for a new entry (a later entry of a tar replaces an
    /// earlier one; a directory stays when the new entry is a directory too).
    fn clear(
        &mut self,
        dir: &TreeDir,
        path: &[u8],
        name: &OsStr,
        keep_dir: bool,
    ) -> StoreResult<()> {
        match dir.stat(name) {
            Ok(st) if keep_dir && st.kind() == FileKind::Directory => Ok(()),
            Ok(_) => {
                self.files.remove(path);
                self.written.remove(path);
                self.dirs.retain(|d| {
                    !(d == path || d.starts_with(path) && d.get(path.len()) == Some(&b'/'))
                });
                self.last_dir = None;
                dir.remove_all(name).map_err(|e| self.io(path, e))
            }
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(self.io(path, e)),
        }
    }

    fn set_attrs(
        &self,
        dir: &TreeDir,
        name: &OsStr,
        path: &[u8],
        a: &Attrs,
        symlink: bool,
    ) -> StoreResult<()> {
        let io = |e: Errno| self.io(path, e);
        if self.root {
            dir.chown(name, a.uid, a.gid).map_err(io)?;
        }
        if !symlink {
            // After chown, which clears set-id bits.
            dir.chmod(name, a.mode & 0o7777).map_err(io)?;
        }
        for (k, v) in &a.xattrs {
            match dir.set_xattr(name, OsStr::from_bytes(k), v) {
                Ok(()) => {}
                Err(e) if is_unsupported(e) || e == Errno::EPERM => {
                    tracing::warn!(path = %String::from_utf8_lossy(path), "xattr {} not kept: {e}", String::from_utf8_lossy(k));
                }
                Err(e) => return Err(io(e)),
            }
        }
        dir.set_times(name, a.atime, a.mtime).map_err(io)
    }

    fn entry<R: Read>(
        &mut self,
        mut e: tar::Entry<'_, R>,
        state: &Rc<RefCell<TeeState>>,
    ) -> StoreResult<()> {
        let raw = e.path_bytes().into_owned();
        let ty = e.header().entry_type();
        if matches!(ty, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let path = clean_path(&raw).map_err(|why| hostile(&raw, why))?;
        let (parent, name_b) = split(&path);
        let name = OsStr::from_bytes(name_b);
        if name_b == storemeta::RECORD_NAME.as_bytes() {
            return Err(hostile(&raw, "name reserved by the store"));
        }
        let h = e.header();
        let old = h.as_old();
        let mtime_s =
            numeric(&old.mtime, h.mtime()).map_err(|err| hostile(&raw, &err.to_string()))?;
        let mut a = Attrs {
            mode: numeric(&old.mode, h.mode().map(u64::from))
                .map_err(|err| hostile(&raw, &err.to_string()))? as u32,
            uid: u32::try_from(
                numeric(&old.uid, h.uid()).map_err(|err| hostile(&raw, &err.to_string()))?,
            )
            .map_err(|_| hostile(&raw, "uid out of range"))?,
            gid: u32::try_from(
                numeric(&old.gid, h.gid()).map_err(|err| hostile(&raw, &err.to_string()))?,
            )
            .map_err(|_| hostile(&raw, "gid out of range"))?,
            atime: Timespec::default(),
            mtime: Timespec {
                sec: i64::try_from(mtime_s).unwrap_or(i64::MAX),
                nsec: 0,
            },
            xattrs: Vec::new(),
        };
        a.atime = a.mtime;
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        if let Some(exts) = e
            .pax_extensions()
            .map_err(|err| hostile(&raw, &err.to_string()))?
        {
            for ext in exts {
                let ext = ext.map_err(|err| hostile(&raw, &err.to_string()))?;
                let k = ext.key_bytes();
                if k == b"mtime" {
                    if let Some(t) = pax_time(ext.value_bytes()) {
                        a.mtime = t;
                    }
                } else if k == b"atime" {
                    if let Some(t) = pax_time(ext.value_bytes()) {
                        a.atime = t;
                    }
                } else if let Some(x) = k.strip_prefix(b"SCHILY.xattr.")
                    && xattr_allowed(x)
                {
                    a.xattrs.push((x.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        self.entries += 1;
        if path.is_empty() {
            // The layer's root directory itself (`./`).
            if ty.is_dir() {
                self.dir_attrs.insert(path, a);
                return Ok(());
            }
            return Err(hostile(&raw, "the layer root as a non-directory"));
        }
        let dir = self.ensure_dir(parent, &raw)?;
        match ty {
            tar::EntryType::Directory => {
                self.clear(&dir, &path, name, true)?;
                match dir.mkdir(name, 0o755) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(err) => return Err(self.io(&raw, err)),
                }
                self.dirs.insert(path.clone());
                self.dir_attrs.insert(path, a);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&dir, &path, name, false)?;
                let size = e.size();
                if size == 0 {
                    // Empty files (whiteouts among them) keep their own inode.
                    dir.create(name, 0o600).map_err(|err| self.io(&raw, err))?;
                    self.set_attrs(&dir, name, &raw, &a, false)?;
                } else {
                    self.regular(&dir, &path, name, &mut e, size, &a, state)?;
                }
                self.written.insert(path);
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| hostile(&raw, "symlink without a target"))?;
                if target.is_empty() || target.contains(&0) {
                    return Err(hostile(&raw, "symlink with an empty target"));
                }
                self.clear(&dir, &path, name, false)?;
                dir.symlink(name, OsStr::from_bytes(&target))
                    .map_err(|err| self.io(&raw, err))?;
                self.set_attrs(&dir, name, &raw, &a, true)?;
                self.written.insert(path);
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| hostile(&raw, "hard link without a target"))?;
                let target = clean_path(&target).map_err(|why| hostile(&raw, why))?;
                if !self.written.contains(&target) {
                    return Err(hostile(&raw, "hard link to a file outside this layer"));
                }
                if target == path {
                    return Ok(());
                }
                self.clear(&dir, &path, name, false)?;
                let (tp, tn) = split(&target);
                let tdir = self.open_dir(tp, &raw)?;
                dir.link_from(&tdir, OsStr::from_bytes(tn), name)
                    .map_err(|err| self.io(&raw, err))?;
                if let Some(f) = self.files.get(&target) {
                    let mut f = f.clone();
                    f.name = name_b.to_vec();
                    self.files.insert(path.clone(), f);
                }
                self.written.insert(path);
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (kind, rdev) = match ty {
                    tar::EntryType::Char => {
                        (FileKind::CharDevice, makedev(major.into(), minor.into()))
                    }
                    tar::EntryType::Block => {
                        (FileKind::BlockDevice, makedev(major.into(), minor.into()))
                    }
                    _ => (FileKind::Fifo, 0),
                };
                if kind != FileKind::Fifo && !self.store.device_nodes() {
                    return Err(hostile(
                        &raw,
                        "device node (only root may import device nodes)",
                    ));
                }
                self.clear(&dir, &path, name, false)?;
                dir.mknod(name, kind.mode_bits() | (a.mode & 0o7777), rdev)
                    .map_err(|err| self.io(&raw, err))?;
                self.set_attrs(&dir, name, &raw, &a, false)?;
                self.written.insert(path);
            }
            tar::EntryType::GNUSparse => {
                return Err(hostile(&raw, "sparse entries are not supported"));
            }
            other => {
                return Err(hostile(
                    &raw,
                    &format!("unsupported entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn regular<R: Read>(
        &mut self,
        dir: &TreeDir,
        path: &[u8],
        name: &OsStr,
        e: &mut tar::Entry<'_, R>,
        size: u64,
        a: &Attrs,
        state: &Rc<RefCell<TeeState>>,
    ) -> StoreResult<()> {
        let blob = format!("{}", self.blob_seq);
        self.blob_seq += 1;
        let blob_os = OsStr::new(&blob);
        let mut f = self
            .blobs
            .create(blob_os, 0o600)
            .map_err(|err| self.io(path, err))?;
        {
            let mut s = state.borrow_mut();
            s.skeleton
                .file(path, size)
                .map_err(|err| self.io(path, err))?;
            s.content = true;
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        let res: io::Result<()> = (|| {
            loop {
                let n = e.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                let chunk = buf.get(..n).unwrap_or_default();
                hasher.update(chunk);
                f.write_all(chunk)?;
                got += n as u64;
            }
            Ok(())
        })();
        state.borrow_mut().content = false;
        res.map_err(|err| self.io(path, err))?;
        if got != size {
            return Err(hostile(path, "tar ends inside this file"));
        }
        drop(f);
        let (uid, gid) = if self.root {
            (a.uid, a.gid)
        } else {
            effective_ids()
        };
        let mut xattrs = a.xattrs.clone();
        xattrs.sort();
        self.set_attrs(&self.blobs, blob_os, path, a, false)?;
        // One object per content AND per what its inode shares across hard links.
        let mut attr = Sha256::new();
        attr.update(format!("{:o}:{uid}:{gid}", a.mode & 0o7777).as_bytes());
        for (k, v) in &xattrs {
            attr.update((k.len() as u64).to_le_bytes());
            attr.update(k);
            attr.update((v.len() as u64).to_le_bytes());
            attr.update(v);
        }
        let key = format!(
            "{}-{}",
            hex(&hasher.finalize()),
            hex(&attr.finalize()).get(..16).unwrap_or_default()
        );
        let objects = self.store.object_dir(&key)?;
        let key_os = OsStr::new(&key);
        let linked = if let Some(b) = self.new_objects.get(&key) {
            dir.link_from(&self.blobs, OsStr::new(b), name)
        } else {
            dir.link_from(&objects, key_os, name)
        };
        match linked {
            Ok(()) => {
                let _ = self.blobs.unlink(blob_os);
            }
            // No object yet (or it is full of links, or gc just took it): this blob is one.
            Err(Errno::ENOENT) | Err(Errno::EMLINK) => {
                dir.link_from(&self.blobs, blob_os, name)
                    .map_err(|err| self.io(path, err))?;
                self.new_objects.insert(key, blob);
            }
            Err(err) => return Err(self.io(path, err)),
        }
        self.next_file += 1;
        if self.next_file >= 1 << 24 {
            return Err(hostile(
                path,
                "more than 16777215 regular files in one layer",
            ));
        }
        self.files.insert(
            path.to_vec(),
            StoredFile {
                name: name.as_bytes().to_vec(),
                mode: FileKind::Regular.mode_bits() | (a.mode & 0o7777),
                uid: a.uid,
                gid: a.gid,
                atime: a.atime,
                mtime: a.mtime,
                nlink: 1,
                file: self.seq << 24 | self.next_file,
            },
        );
        self.size += size;
        Ok(())
    }

    /// Write each directory's record and put directory attributes last.
    fn finish(&mut self) -> StoreResult<()> {
        let mut links: HashMap<u64, u32> = HashMap::new();
        for f in self.files.values() {
            *links.entry(f.file).or_default() += 1;
        }
        let mut by_dir: BTreeMap<Vec<u8>, Vec<StoredFile>> = BTreeMap::new();
        for (path, f) in &self.files {
            let mut f = f.clone();
            f.nlink = links.get(&f.file).copied().unwrap_or(1);
            by_dir.entry(split(path).0.to_vec()).or_default().push(f);
        }
        for (dir, files) in by_dir {
            let d = self.open_dir(&dir, &dir)?;
            let name = OsStr::new(storemeta::RECORD_NAME);
            let mut f = d.create(name, 0o600).map_err(|e| self.io(&dir, e))?;
            f.write_all(&storemeta::encode(&files))
                .map_err(|e| self.io(&dir, e))?;
        }
        self.last_dir = None;
        let attrs = std::mem::take(&mut self.dir_attrs);
        // Deepest first: setting a child's times changes nothing of its parent's.
        for (path, a) in attrs.iter().rev() {
            let (parent, name) = split(path);
            if path.is_empty() {
                let root = self.tree.root().map_err(|e| self.io(path, e))?;
                self.set_attrs(&root, OsStr::new(""), path, a, false)?;
            } else {
                let d = self.open_dir(parent, path)?;
                self.set_attrs(&d, OsStr::from_bytes(name), path, a, false)?;
            }
        }
        Ok(())
    }
}

impl Store {
    /// Fill the empty image layer `id` (made by [`Store::create`]) from a tar.
    /// Nothing of it is visible until the whole tar is in; on any error the layer
    /// stays empty and nothing is left behind.
    pub fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: impl Read,
        progress: Option<Progress<'_>>,
    ) -> StoreResult<ImportSummary> {
        let mut meta = self.get(id)?;
        check_fillable(&meta, parent)?;
        let stage = self.stage()?;
        let io = |e: Errno| StoreError::io(format!("importing layer {id}"), e);
        stage.dir.mkdir(OsStr::new("layer"), 0o700).map_err(io)?;
        stage.dir.mkdir(OsStr::new("blobs"), 0o700).map_err(io)?;
        let layer = stage.dir.child(OsStr::new("layer")).map_err(io)?;
        layer.mkdir(OsStr::new("diff"), 0o755).map_err(io)?;
        let skel_file = layer.create(OsStr::new("skeleton"), 0o600).map_err(io)?;
        let state = Rc::new(RefCell::new(TeeState {
            hasher: Sha256::new(),
            skeleton: SkeletonWriter::new(BufWriter::with_capacity(1 << 16, skel_file))
                .map_err(|e| StoreError::io("skeleton", e))?,
            content: false,
            total: 0,
        }));
        let tree = Tree::open(&stage.path.join("layer/diff")).map_err(io)?;
        let mut imp = Importer {
            store: self,
            tree,
            blobs: stage.dir.child(OsStr::new("blobs")).map_err(io)?,
            blob_seq: 0,
            root: effective_ids().0 == 0,
            seq: meta.seq,
            next_file: 0,
            new_objects: HashMap::new(),
            files: BTreeMap::new(),
            dirs: HashSet::new(),
            dir_attrs: BTreeMap::new(),
            written: HashSet::new(),
            size: 0,
            entries: 0,
            last_dir: None,
        };
        let tee = Tee {
            inner: tar,
            state: state.clone(),
            progress,
        };
        let mut archive = tar::Archive::new(tee);
        let read_err = |e: io::Error| {
            if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
                // The tar crate quotes the bad bytes: keep the message one printable line.
                let why: String = e.to_string().escape_debug().take(200).collect();
                StoreError::new(
                    ErrorKind::Hostile,
                    format!("layer {id}: not a valid tar: {why}"),
                )
            } else {
                StoreError::io(format!("reading the tar of layer {id}"), e)
            }
        };
        for e in archive.entries().map_err(read_err)? {
            let e = e.map_err(read_err)?;
            imp.entry(e, &state)?;
        }
        // Whatever follows the end-of-archive blocks is part of the diffID too.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
        drop(rest);
        imp.finish()?;
        let st = Rc::try_unwrap(state)
            .map_err(|_| StoreError::io("import", "tar state still shared"))?
            .into_inner();
        st.skeleton
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(|e| StoreError::io("skeleton", e))?;
        meta.diff_id = Some(format!("sha256:{}", hex(&st.hasher.finalize())));
        meta.size = imp.size;
        meta.tar_size = st.total;
        meta.entries = imp.entries;
        write_meta(&layer, &meta)?;
        let new_objects = std::mem::take(&mut imp.new_objects);
        let blobs = imp.blobs;

        // Commit: everything durable, objects published, then the layer swapped in.
        let _lock = self.lock()?;
        check_fillable(&self.get(id)?, parent)?;
        layer.sync_filesystem().map_err(io)?;
        for (key, blob) in &new_objects {
            let objects = self.object_dir(key)?;
            match objects.link_from(&blobs, OsStr::new(blob), OsStr::new(key)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io(e)),
            }
        }
        let layers = self.layers_dir()?;
        stage
            .dir
            .exchange(OsStr::new("layer"), &layers, OsStr::new(id.as_str()))
            .map_err(io)?;
        layers.sync().map_err(io)?;
        drop(_lock);
        Ok(ImportSummary {
            diff_id: meta.diff_id.unwrap_or_default(),
            size: meta.size,
            tar_size: meta.tar_size,
            entries: meta.entries,
        })
    }

    /// Make image layer `id` on `parent` and fill it from a tar in one step.
    pub fn import(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: impl Read,
        progress: Option<Progress<'_>>,
    ) -> StoreResult<ImportSummary> {
        self.create(id, parent, LayerKind::Image)?;
        match self.apply_diff(id, parent, tar, progress) {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.remove(id);
                Err(e)
            }
        }
    }
}

fn check_fillable(meta: &super::LayerMeta, parent: Option<&LayerId>) -> StoreResult<()> {
    if meta.kind != LayerKind::Image {
        return Err(StoreError::new(
            ErrorKind::Invalid,
            format!(
                "layer {} is a container layer: a tar goes into an image layer",
                meta.id
            ),
        ));
    }
    if meta.diff_id.is_some() {
        return Err(StoreError::new(
            ErrorKind::AlreadyExists,
            format!("layer {} is already filled", meta.id),
        ));
    }
    if let Some(p) = parent
        && meta.parent.as_ref() != Some(p)
    {
        return Err(StoreError::new(
            ErrorKind::Invalid,
            format!(
                "layer {} has parent {:?}, not {p}",
                meta.id,
                meta.parent.as_ref().map(|p| p.as_str())
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(clean_path(b"./").unwrap(), b"");
        assert!(clean_path(b"/etc/passwd").is_err());
        assert!(clean_path(b"a/../../x").is_err());
        assert!(clean_path(&[b'x'; 256]).is_err());
        assert!(clean_path(&[b'x'; 255]).is_ok());
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            pax_time(b"12.5"),
            Some(Timespec {
                sec: 12,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            pax_time(b"-1.25"),
            Some(Timespec {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(pax_time(b"7"), Some(Timespec { sec: 7, nsec: 0 }));
        assert_eq!(pax_time(b"x"), None);
    }
}
