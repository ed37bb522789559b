//! Copy-up: bring a lower entry into the upper layer before it changes.
//!
//! The copy is built under the work dir (`W/work/#lf-…`) with its data, owner, mode,
//! xattrs and times, made durable, and only then renamed into place, so a crash at
//! any moment leaves either the lower entry visible or the complete copy. Leftovers
//! in the work dir are removed at the next mount. Parents are copied first.

use super::dircache::LayerId;
use super::lookup::Resolved;
use super::node::{IndexRef, Lowers, Node};
use super::{Overlay, Upper};
use crate::layer;
use crate::sys::{self, Errno, FileKind, Stat, SysResult, TimeSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the copy needs of its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Data {
    /// All of it.
    Full,
    /// None (the caller truncates to 0 right away).
    Empty,
    /// None if the mount makes metadata-only copies (`metacopy=on`) of this file: the
    /// change is to its inode only. Otherwise all of it.
    Meta,
}

/// Make (and empty) `W/work`, the kernel's name for the same scratch space.
pub(super) fn prepare_work_dir(work_root: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    let name = OsStr::new("work");
    match sys::mkdir_at(work_root, name, 0o700) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let work = sys::open_at(
        work_root,
        name,
        sys::oflag::RDONLY | sys::oflag::DIRECTORY,
        0,
    )?;
    for e in sys::read_dir(sys::borrow(&work))? {
        remove_tree(sys::borrow(&work), &e.name)?;
    }
    Ok(work)
}

/// Open (making it if needed) an index dir of the work dir, kept across mounts:
/// `W/index` (the kernel's, entries named by origin file handle) or `W/lf-index`
/// (layerfuse's own, for files whose filesystem has no file handles).
pub(super) fn open_index_dir(work_root: BorrowedFd<'_>, name: &str) -> SysResult<OwnedFd> {
    let name = OsStr::new(name);
    match sys::mkdir_at(work_root, name, 0o700) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    sys::open_at(
        work_root,
        name,
        sys::oflag::RDONLY | sys::oflag::DIRECTORY,
        0,
    )
}

/// Where the index keeps the copy of a lower file with several names.
pub(super) struct IndexSlot<'a> {
    pub dir: BorrowedFd<'a>,
    pub key: OsString,
    pub kernel: bool,
}

/// The index entry of a lower inode: the kernel's name (hex of its origin file
/// handle) where there is one, so the kernel finds the same entry.
pub(super) fn index_slot<'a>(upper: &'a Upper, origin: Option<&[u8]>, st: &Stat) -> IndexSlot<'a> {
    match origin {
        Some(fb) => {
            let hex: String = fb.iter().map(|b| format!("{b:02x}")).collect();
            IndexSlot {
                dir: sys::borrow(&upper.kernel_index),
                key: OsString::from(hex),
                kernel: true,
            }
        }
        None => IndexSlot {
            dir: sys::borrow(&upper.index),
            key: OsString::from(format!("{:x}-{:x}", st.dev, st.ino)),
            kernel: false,
        },
    }
}

/// Remove `name` in `dir` and everything below it.
pub(super) fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    let st = match sys::stat_at(dir, name) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if st.kind() == FileKind::Directory {
        let sub = sys::open_at(dir, name, sys::oflag::RDONLY | sys::oflag::DIRECTORY, 0)?;
        for e in sys::read_dir(sys::borrow(&sub))? {
            remove_tree(sys::borrow(&sub), &e.name)?;
        }
        sys::unlink_at(dir, name, true)
    } else {
        sys::unlink_at(dir, name, false)
    }
}

impl Overlay {
    /// Run `place`, which puts an entry into the upper directory `dir` for a copy-up
    /// (no change of the directory, as on the kernel), and put the directory's times
    /// back after it. Placements take turns: two copy-ups racing into one directory
    /// would otherwise each read the times the other is about to change, and the
    /// later one would leave the changed times behind the kernel's cached ones. One
    /// lock for all directories: a placement is three metadata syscalls (the data was
    /// copied before), and keying a lock by directory would cost a stat more.
    pub(super) fn place_keeping_times<T>(
        &self,
        dir: BorrowedFd<'_>,
        place: impl FnOnce() -> SysResult<T>,
    ) -> SysResult<T> {
        let _turn = self.placements.lock();
        let before = sys::stat_fd(dir)?;
        let placed = place()?;
        let _ = sys::set_times_fd(dir, TimeSet::At(before.atime), TimeSet::At(before.mtime));
        Ok(placed)
    }

    /// A fresh name in the work dir.
    pub(super) fn temp_name(&self) -> OsString {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#lf{:x}-{:x}", sys::getpid(), n))
    }

    /// A lower file with several names whose inode was copied up through another
    /// name (found in the index): link this name to that copy too. Returns whether it
    /// did. Call with the tree lock held.
    pub(super) fn join_indexed_copy(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        r: &Resolved,
    ) -> SysResult<bool> {
        let Some(upper) = &self.upper else {
            return Ok(false);
        };
        let st = &r.stat;
        if st.kind() == FileKind::Directory || st.nlink <= 1 {
            return Ok(false);
        }
        let Some(lower) = r.lowers.first() else {
            return Ok(false);
        };
        if !upper.has_index_entries.load(Ordering::Acquire) {
            return Ok(false);
        }
        let layer = &self.lowers[lower.layer];
        let origin = layer
            .open_any(&lower.path)
            .ok()
            .and_then(|fd| layer.origin_handle(sys::borrow(&fd)));
        let slot = index_slot(upper, origin.as_deref(), st);
        if sys::stat_at(slot.dir, &slot.key).is_err() {
            return Ok(false);
        }
        self.copy_up(parent, Data::Full)?;
        let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(parent))?;
        // Joining a copy is no change of the directory: its times are kept.
        let joined = self.place_keeping_times(sys::borrow(&pdir), || {
            match sys::link_at(slot.dir, &slot.key, sys::borrow(&pdir), name) {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) => Ok(false),
                Err(e) => Err(e),
            }
        })?;
        if joined {
            self.add_nlink_adjust(slot.dir, &slot.key, -1);
        }
        Ok(true)
    }

    /// A name of a lower hard link is about to go: copy the inode into the index only
    /// (no name in the upper), so its link count can be kept (the kernel does the
    /// same with `index=on`). The node's data then lives in the index entry.
    pub(super) fn index_lower_link(&self, node: &Arc<Node>) -> SysResult<()> {
        let upper = self.upper()?;
        let _guard = node.copy_up.lock();
        {
            let s = node.state.read();
            if s.upper || s.kind == FileKind::Directory {
                return Ok(());
            }
        }
        let lower = self.first_lower(node).ok_or(Errno::EIO)?;
        let src_layer = &self.lowers[lower.layer];
        let (src_dir_path, src_name) = layer::split_last(&lower.path).ok_or(Errno::EIO)?;
        let src_dir = src_layer.open_dir(src_dir_path)?;
        let src_dir = sys::borrow(&src_dir);
        let st = sys::stat_at(src_dir, src_name)?;
        if st.nlink <= 1 {
            return Ok(());
        }
        let origin = sys::open_path_at(src_dir, src_name)
            .ok()
            .and_then(|fd| src_layer.origin_handle(sys::borrow(&fd)));
        let slot = index_slot(upper, origin.as_deref(), &st);
        if sys::stat_at(slot.dir, &slot.key).is_err() {
            let work = sys::borrow(&upper.work);
            let tmp = self.temp_name();
            let built = self.build_copy(
                src_dir,
                src_name,
                &st,
                (work, &tmp),
                st.kind(),
                self.meta_or_full(Data::Meta, st.kind()),
                origin.as_deref().unwrap_or(b""),
            );
            let placed = built.and_then(|()| {
                // One name (the index) stands for the lower's `nlink` names.
                let fd = sys::open_path_at(work, &tmp)?;
                let adjust = st.nlink as i64 - 1;
                sys::set_xattr(
                    sys::borrow(&fd),
                    self.markers.nlink(),
                    format!("U{adjust:+}").as_bytes(),
                    0,
                )?;
                upper.has_index_entries.store(true, Ordering::Release);
                match sys::link_at(work, &tmp, slot.dir, &slot.key) {
                    Ok(()) | Err(Errno::EEXIST) => Ok(()),
                    Err(e) => Err(e),
                }
            });
            let _ = remove_tree(work, &tmp);
            placed?;
        }
        let adjust = sys::open_path_at(slot.dir, &slot.key)
            .map(|fd| self.read_nlink_adjust(sys::borrow(&fd)))
            .unwrap_or(0);
        let metacopy = self.is_metacopy_at(slot.dir, &slot.key);
        // In the upper layer from now on: keep the lower entry's own path.
        let lowers = self.node_lowers(node);
        let mut s = node.state.write();
        s.lowers = Lowers::Stack(lowers);
        s.upper = true;
        s.metacopy = metacopy;
        s.stale_name = true;
        s.set_nlink_adjust(adjust);
        s.set_index(Some(IndexRef {
            kernel: slot.kernel,
            key: slot.key,
        }));
        Ok(())
    }

    /// The index entry of an upper file with several names, found by its origin
    /// record (or its own identity where the filesystem has no file handles).
    pub(super) fn index_of(&self, origin: Option<&[u8]>, st: &Stat) -> Option<IndexRef> {
        let upper = self.upper.as_ref()?;
        let origin = origin.filter(|o| !o.is_empty());
        let slot = index_slot(upper, origin, st);
        let here = sys::stat_at(slot.dir, &slot.key).ok()?;
        (here.ino == st.ino && here.dev == st.dev).then_some(IndexRef {
            kernel: slot.kernel,
            key: slot.key,
        })
    }

    /// Where a node's data lives in the upper layer: its directory and name there.
    /// A hard link whose recorded name was removed is reached through its index entry.
    pub(super) fn upper_object(&self, node: &Node) -> SysResult<(OwnedFd, OsString)> {
        let upper = self.upper()?;
        let (stale, index, unlinked) = {
            let s = node.state.read();
            (s.stale_name, s.index().cloned(), s.unlinked)
        };
        if let (true, Some(ix)) = (stale, index) {
            let dir = if ix.kernel {
                &upper.kernel_index
            } else {
                &upper.index
            };
            return Ok((sys::dup(sys::borrow(dir))?, ix.key));
        }
        if unlinked {
            // Its last name is gone: that path now leads to something else, or nowhere.
            return Err(Errno::ENOENT);
        }
        let path = self.upper_path(node);
        match layer::split_last(&path) {
            Some((d, n)) => Ok((upper.layer.open_dir(d)?, n.to_owned())),
            None => Ok((upper.layer.open_dir(b"")?, ".".into())),
        }
    }

    /// The `overlay.nlink` adjustment of the inode behind `fd`.
    pub(super) fn read_nlink_adjust(&self, fd: BorrowedFd<'_>) -> i64 {
        sys::get_xattr(fd, self.markers.nlink())
            .ok()
            .and_then(|v| {
                let s = std::str::from_utf8(&v).ok()?;
                s.strip_prefix('U')?.parse::<i64>().ok()
            })
            .unwrap_or(0)
    }

    /// Change the `overlay.nlink` adjustment of `dir/name` by `delta`; returns the new one.
    pub(super) fn add_nlink_adjust(&self, dir: BorrowedFd<'_>, name: &OsStr, delta: i64) -> i64 {
        let Ok(fd) = sys::open_path_at(dir, name) else {
            return 0;
        };
        let adjust = self.read_nlink_adjust(sys::borrow(&fd)) + delta;
        let _ = sys::set_xattr(
            sys::borrow(&fd),
            self.markers.nlink(),
            format!("U{adjust:+}").as_bytes(),
            0,
        );
        adjust
    }

    /// Make sure `node` (and every ancestor) exists in the upper layer.
    /// Call with the tree lock held for reading.
    pub(super) fn copy_up(&self, node: &Arc<Node>, data: Data) -> SysResult<()> {
        let (upper, metacopy) = {
            let s = node.state.read();
            (s.upper, s.metacopy)
        };
        if upper {
            if metacopy && data != Data::Meta {
                self.copy_up_data(node, data)?;
                self.follow_copy_up(node);
            }
            return self.join_index_by_name(node);
        }
        let upper = self.upper()?;
        // Ancestors first, from the top down.
        let mut chain = Vec::new();
        let mut cur = node.parent();
        while let Some(p) = cur {
            if p.state.read().upper {
                break;
            }
            cur = p.parent();
            chain.push(p);
        }
        for dir in chain.iter().rev() {
            self.copy_up_one(upper, dir, Data::Full)?;
        }
        self.copy_up_one(upper, node, data)?;
        self.counters.copied_up(chain.len() as u64 + 1);
        self.follow_copy_up(node);
        Ok(())
    }

    /// A hard link whose data is in the index (another name was copied up or removed)
    /// reached by a name still only in a lower layer: give that name in the upper,
    /// linked to the index entry, as the kernel's copy-up of that name does.
    fn join_index_by_name(&self, node: &Arc<Node>) -> SysResult<()> {
        let (index, parent, name) = {
            let s = node.state.read();
            match (s.index(), &s.parent) {
                (Some(ix), Some(p)) if !s.stale_name && s.kind != FileKind::Directory => {
                    (ix.clone(), p.clone(), s.name.clone())
                }
                _ => return Ok(()),
            }
        };
        self.copy_up(&parent, Data::Full)?;
        let upper = self.upper()?;
        let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(&parent))?;
        let pdir = sys::borrow(&pdir);
        let _guard = node.copy_up.lock();
        match sys::stat_at(pdir, &name) {
            Err(Errno::ENOENT) => {}
            _ => return Ok(()),
        }
        let idir = sys::borrow(if index.kernel {
            &upper.kernel_index
        } else {
            &upper.index
        });
        self.link_upper_name(node, (idir, &index.key), pdir, &name)
    }

    /// Give `node` one more upper name, `name` in `pdir`, as a hard link of its upper
    /// object `src`. The name was already counted below, so the link count shown stays
    /// (`overlay.nlink` one lower), and the directory keeps its times: placing a copy
    /// is no change of it.
    pub(super) fn link_upper_name(
        &self,
        node: &Node,
        (src_dir, src_name): (BorrowedFd<'_>, &OsStr),
        pdir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> SysResult<()> {
        self.place_keeping_times(pdir, || sys::link_at(src_dir, src_name, pdir, name))?;
        let adjust = self.add_nlink_adjust(pdir, name, -1);
        node.state.write().set_nlink_adjust(adjust);
        Ok(())
    }

    fn copy_up_one(&self, upper: &Upper, node: &Arc<Node>, data: Data) -> SysResult<()> {
        let _guard = node.copy_up.lock();
        let (kind, parent, name) = {
            let s = node.state.read();
            if s.upper {
                return Ok(());
            }
            (s.kind, s.parent.clone().ok_or(Errno::EIO)?, s.name.clone())
        };
        // In the upper layer from now on: the lower entry keeps its own path.
        let lowers = self.node_lowers(node);
        let lower = lowers.first().cloned().ok_or(Errno::EIO)?;
        let src_layer = &self.lowers[lower.layer];
        let (src_dir_path, src_name) = layer::split_last(&lower.path).ok_or(Errno::EIO)?;
        let src_dir = src_layer.open_dir(src_dir_path)?;
        let src_dir = sys::borrow(&src_dir);
        let st = sys::stat_at(src_dir, src_name)?;
        let work = sys::borrow(&upper.work);
        let origin = sys::open_path_at(src_dir, src_name)
            .ok()
            .and_then(|fd| src_layer.origin_handle(sys::borrow(&fd)));
        let indexed = kind != FileKind::Directory && st.nlink > 1;
        let IndexSlot {
            dir: index,
            key,
            kernel,
        } = index_slot(upper, origin.as_deref(), &st);
        let index_ref = indexed.then(|| IndexRef {
            kernel,
            key: key.clone(),
        });
        let data = self.meta_or_full(data, kind);
        // Another name of this inode was copied up already: join it.
        if indexed && sys::stat_at(index, &key).is_ok() {
            let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(&parent))?;
            self.link_upper_name(node, (index, &key), sys::borrow(&pdir), &name)?;
            let metacopy = self.is_metacopy_at(index, &key);
            let mut s = node.state.write();
            s.lowers = Lowers::Stack(lowers);
            s.upper = true;
            s.metacopy = metacopy;
            s.set_index(index_ref);
            drop(s);
            if metacopy && data != Data::Meta {
                return self.copy_up_data_locked(node, data);
            }
            return Ok(());
        }
        let tmp = self.temp_name();
        let built = self.build_copy(
            src_dir,
            src_name,
            &st,
            (work, &tmp),
            kind,
            data,
            origin.as_deref().unwrap_or(b""),
        );
        if let Err(e) = built {
            let _ = remove_tree(work, &tmp);
            return Err(e);
        }
        if indexed {
            // Two names now (index + this one) stand for the lower's `nlink`.
            let adjust = st.nlink as i64 - 2;
            if let Ok(fd) = sys::open_path_at(work, &tmp) {
                let _ = sys::set_xattr(
                    sys::borrow(&fd),
                    self.markers.nlink(),
                    format!("U{adjust:+}").as_bytes(),
                    0,
                );
            }
            node.state.write().set_nlink_adjust(adjust);
            upper.has_index_entries.store(true, Ordering::Release);
            match sys::link_at(work, &tmp, index, &key) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    let _ = remove_tree(work, &tmp);
                    return Err(e);
                }
            }
        }
        // Into place: the parent's upper path is computed now, under the tree lock
        // the caller holds, so a concurrent rename cannot move it under us.
        let ppath = self.upper_path(&parent);
        let pdir = self.dir_fd(LayerId::Upper, &ppath)?;
        // A copy-up is not a change of the parent: its times are put back after.
        let placed = self.place_keeping_times(sys::borrow(&pdir), || {
            sys::rename_at(
                work,
                &tmp,
                sys::borrow(&pdir),
                &name,
                sys::rename_flag::NOREPLACE,
            )
        });
        if let Err(e) = placed {
            let _ = remove_tree(work, &tmp);
            return Err(e);
        }
        {
            let mut s = node.state.write();
            s.lowers = Lowers::Stack(lowers);
            s.upper = true;
            s.metacopy = data == Data::Meta;
            if index_ref.is_some() {
                s.set_index(index_ref);
            }
        }
        if kind == FileKind::Directory {
            // Now merged: it reports nlink 1 from here on.
            self.attr_changed(node.ino);
        }
        Ok(())
    }

    /// Give a metadata-only copy its data (`Full`), or none (`Empty`: the caller
    /// truncates it to 0): in place, as the kernel does. The marker goes only after
    /// the data is durable, so until then (and after a crash) reads still come from
    /// the lower file, never from a half-filled copy.
    fn copy_up_data(&self, node: &Arc<Node>, data: Data) -> SysResult<()> {
        let _guard = node.copy_up.lock();
        self.copy_up_data_locked(node, data)
    }

    /// [`Overlay::copy_up_data`] with the node's copy-up lock held.
    fn copy_up_data_locked(&self, node: &Arc<Node>, data: Data) -> SysResult<()> {
        if !node.state.read().metacopy {
            return Ok(());
        }
        let lower = self.first_lower(node).ok_or(Errno::EIO)?;
        let (dir, name) = self.upper_object(node)?;
        let dir = sys::borrow(&dir);
        let dst = sys::open_at(dir, &name, sys::oflag::WRONLY, 0)?;
        let st = sys::stat_fd(sys::borrow(&dst))?;
        if data == Data::Empty {
            sys::truncate_fd(sys::borrow(&dst), 0)?;
        } else if st.size > 0 {
            let src = self.lowers[lower.layer].open_file(&lower.path, sys::oflag::RDONLY)?;
            copy_data(sys::borrow(&src), sys::borrow(&dst), st.size)?;
            self.counters.bytes_copied(st.size);
        }
        // The copy's writes set its mtime, as the kernel's data copy-up does.
        if !self.volatile {
            sys::fsync(sys::borrow(&dst))?;
        }
        match sys::remove_xattr(sys::borrow(&dst), self.markers.metacopy()) {
            Ok(()) | Err(Errno::ENODATA) => {}
            Err(e) => return Err(e),
        }
        node.state.write().metacopy = false;
        // Its mtime and block count changed: the kernel's cached attributes are stale.
        self.attr_changed(node.ino);
        Ok(())
    }

    /// What a copy of `kind` asked for with `data` gets: a metadata-only copy only for
    /// regular files on a mount with `metacopy=on`, else the data.
    fn meta_or_full(&self, data: Data, kind: FileKind) -> Data {
        match data {
            Data::Meta if self.metacopy && kind == FileKind::Regular => Data::Meta,
            Data::Meta => Data::Full,
            d => d,
        }
    }

    /// Whether `dir/name` is a metadata-only copy.
    fn is_metacopy_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        sys::open_path_at(dir, name)
            .is_ok_and(|fd| sys::get_xattr(sys::borrow(&fd), self.markers.metacopy()).is_ok())
    }

    /// Build the copy of one entry at `work/tmp`.
    #[allow(clippy::too_many_arguments)]
    fn build_copy(
        &self,
        src_dir: BorrowedFd<'_>,
        src_name: &OsStr,
        st: &Stat,
        (work, tmp): (BorrowedFd<'_>, &OsStr),
        kind: FileKind,
        data: Data,
        origin: &[u8],
    ) -> SysResult<()> {
        match kind {
            FileKind::Directory => sys::mkdir_at(work, tmp, 0o700)?,
            FileKind::Regular => {
                let dst = sys::open_at(
                    work,
                    tmp,
                    sys::oflag::WRONLY | sys::oflag::CREAT | sys::oflag::EXCL,
                    0o600,
                )?;
                // A metadata-only copy gets its size and marker below, after the
                // xattrs (the kernel's order, which keeps the same xattr layout).
                if data != Data::Meta {
                    self.fill_copy(src_dir, src_name, st, sys::borrow(&dst), data)?;
                }
            }
            FileKind::Symlink => {
                let target = sys::readlink_at(src_dir, src_name)?;
                sys::symlink_at(&target, work, tmp)?;
            }
            _ => sys::mknod_at(work, tmp, st.kind().mode_bits() | 0o600, st.rdev)?,
        }
        match sys::chown_at(work, tmp, st.uid, st.gid) {
            Ok(()) => {}
            // In a user namespace an owner it does not map cannot be given to the copy:
            // the copy keeps the namespace's own ids, as a copy made by cp would.
            Err(e) if (e == Errno::EINVAL || e == Errno::EPERM) && !self.privileged => {}
            Err(e) => return Err(e),
        }
        let dst = sys::open_path_at(work, tmp)?;
        if kind != FileKind::Symlink {
            sys::chmod_path_fd(sys::borrow(&dst), st.perm())?;
        }
        let src = sys::open_path_at(src_dir, src_name)?;
        self.copy_xattrs(sys::borrow(&src), sys::borrow(&dst))?;
        // The kernel's origin record (its file handle of the lower entry; empty means
        // "copied up, origin unknown"): lookup keeps the lower inode number for it,
        // and the kernel finds the hard-link index entry by it.
        let _ = sys::set_xattr(sys::borrow(&dst), self.markers.origin(), origin, 0);
        if kind == FileKind::Regular && data == Data::Meta {
            let file = sys::open_at(work, tmp, sys::oflag::WRONLY, 0)?;
            // Without the marker (an upper filesystem refusing it) the data is copied.
            match sys::set_xattr(sys::borrow(&dst), self.markers.metacopy(), b"", 0) {
                Ok(()) => sys::truncate_fd(sys::borrow(&file), st.size)?,
                Err(_) => self.fill_copy(src_dir, src_name, st, sys::borrow(&file), Data::Full)?,
            }
        }
        sys::set_times_at(work, tmp, TimeSet::At(st.atime), TimeSet::At(st.mtime))?;
        Ok(())
    }

    /// Give a new copy its data (all of it, or none for `Empty`), made durable.
    fn fill_copy(
        &self,
        src_dir: BorrowedFd<'_>,
        src_name: &OsStr,
        st: &Stat,
        dst: BorrowedFd<'_>,
        data: Data,
    ) -> SysResult<()> {
        if data != Data::Empty && st.size > 0 {
            let src = sys::open_at(src_dir, src_name, sys::oflag::RDONLY, 0)?;
            copy_data(sys::borrow(&src), dst, st.size)?;
            self.counters.bytes_copied(st.size);
        }
        if !self.volatile {
            sys::fsync(dst)?;
        }
        Ok(())
    }

    /// Copy every xattr but the union's own markers.
    pub(super) fn copy_xattrs(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> SysResult<()> {
        let names = match sys::list_xattr(src) {
            Ok(n) => n,
            Err(e) if e == Errno::ENOTSUP || e == Errno::EOPNOTSUPP => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in names {
            if self.markers.is_private(&name) {
                continue;
            }
            let name = OsStr::from_bytes(&name);
            let value = match sys::get_xattr(src, name) {
                Ok(v) => v,
                Err(Errno::ENODATA) => continue,
                Err(e) => return Err(e),
            };
            match sys::set_xattr(dst, name, &value, 0) {
                Ok(()) => {}
                // Some namespaces cannot be set on every kind of file (user.* on
                // symlinks): the kernel skips those too.
                Err(e) if e == Errno::EPERM || e == Errno::ENOTSUP || e == Errno::EOPNOTSUPP => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Copy `size` bytes: a reflink where the filesystem shares blocks, else an in-kernel
/// copy of the data extents only (holes stay holes), else read and write.
pub(super) fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    if sys::clone_file(src, dst).is_ok() {
        return Ok(());
    }
    let mut off: u64 = 0;
    while off < size {
        let data = match sys::lseek(src, off as i64, sys::seek::DATA) {
            Ok(d) => d as u64,
            // ENXIO: no data after `off` (a trailing hole).
            Err(Errno::ENXIO) => break,
            Err(_) => off,
        };
        if data >= size {
            break;
        }
        let hole = match sys::lseek(src, data as i64, sys::seek::HOLE) {
            Ok(h) => (h as u64).min(size),
            Err(_) => size,
        };
        copy_extent(src, dst, data, hole - data)?;
        off = hole;
    }
    // Keep the size (and any trailing hole).
    sys::truncate_fd(dst, size)
}

fn copy_extent(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, start: u64, len: u64) -> SysResult<()> {
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(1 << 30) as usize;
        match sys::copy_range(src, start + done, dst, start + done, chunk) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(e) if sys::is_unsupported(e) => {
                return copy_by_hand(src, dst, start + done, len - done);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_by_hand(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, start: u64, len: u64) -> SysResult<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let want = ((len - done) as usize).min(buf.len());
        let n = sys::pread(src, &mut buf[..want], start + done)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += sys::pwrite(dst, &buf[w..n], start + done + w as u64)?;
        }
        done += n as u64;
    }
    Ok(())
}
