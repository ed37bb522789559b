//! Copy-up: bring a lower entry into the upper layer before it changes.
//!
//! The copy is built under the work dir (`W/work/#lf-…`) with its data, owner, mode,
//! xattrs and times, made durable, and only then renamed into place, so a crash at
//! any moment leaves either the lower entry visible or the complete copy. Leftovers
//! in the work dir are removed at the next mount. Parents are copied first.

use super::dircache::LayerId;
use super::index::{IndexSlot, index_slot};
use super::node::{IndexRef, Lowers, Node};
use super::tree::{Tree, TreeRead};
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

/// The lower entry a copy is made from: its directory, name, attributes and origin
/// record, and the node's lower stack (kept once the node is in the upper layer).
struct CopySource {
    lowers: Arc<super::node::LowerStack>,
    dir: OwnedFd,
    name: OsString,
    st: Stat,
    origin: Option<Vec<u8>>,
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

    /// Where a node's data lives in the upper layer: its directory and name there.
    /// A hard link whose recorded name was removed is reached through its index entry.
    /// The directory's fd comes from the cache of open directories.
    pub(super) fn upper_object(
        &self,
        t: &Tree,
        node: &Node,
    ) -> SysResult<(Arc<OwnedFd>, OsString)> {
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
            return Ok((Arc::new(sys::dup(sys::borrow(dir))?), ix.key));
        }
        if unlinked || stale {
            // Its last name is gone, or the name recorded is (the object lives on under
            // a name not known yet, which its next lookup records): that path now leads
            // to a whiteout, to nowhere, or to another object made there since.
            return Err(Errno::ENOENT);
        }
        let path = self.upper_path(t, node);
        match crate::layer::split_last(&path) {
            Some((dir, name)) => Ok((self.dir_fd(LayerId::Upper, dir)?, name.to_owned())),
            None => Ok((self.dir_fd(LayerId::Upper, &path)?, ".".into())),
        }
    }

    /// Make sure `node` (and every ancestor) exists in the upper layer, with the data
    /// `data` asks for. The tree lock is let go while file data is copied and held
    /// again to put the copy in place: an upper path computed before is stale after
    /// (the borrow checker holds callers to that, see `tree`).
    pub(super) fn copy_up(&self, t: &mut TreeRead, node: &Arc<Node>, data: Data) -> SysResult<()> {
        let (upper, metacopy, kind) = {
            let s = node.state.read();
            (s.upper, s.metacopy, s.kind)
        };
        if kind == FileKind::Directory {
            return self.copy_up_dir(t, node);
        }
        if upper {
            if metacopy && data != Data::Meta {
                self.copy_up_data(t, node, data)?;
                self.follow_copy_up(t, node);
            }
            return self.join_index_by_name(t, node);
        }
        let upper = self.upper()?;
        if let Some(parent) = node.parent() {
            self.copy_up_dir(t, &parent)?;
        }
        self.copy_up_file(t, upper, node, data)?;
        self.follow_copy_up(t, node);
        Ok(())
    }

    /// Make sure the directory `dir` and every ancestor exist in the upper layer. A
    /// directory's copy holds no data, so this runs with the lock held either way
    /// (rename's move may make one).
    pub(super) fn copy_up_dir(&self, t: &Tree, dir: &Arc<Node>) -> SysResult<()> {
        if dir.state.read().upper {
            return Ok(());
        }
        if dir.kind() != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let upper = self.upper()?;
        // Ancestors first, from the top down.
        let mut chain = vec![dir.clone()];
        let mut cur = dir.parent();
        while let Some(p) = cur {
            if p.state.read().upper {
                break;
            }
            cur = p.parent();
            chain.push(p);
        }
        for d in chain.iter().rev() {
            self.copy_up_one_dir(t, upper, d)?;
        }
        Ok(())
    }

    /// The lower entry a node is copied from.
    fn copy_source(&self, node: &Node) -> SysResult<CopySource> {
        // In the upper layer from now on: the lower entry keeps its own path.
        let lowers = self.node_lowers(node);
        let lower = lowers.first().cloned().ok_or(Errno::EIO)?;
        let layer = &self.lowers[lower.layer];
        let (dir_path, name) = layer::split_last(&lower.path).ok_or(Errno::EIO)?;
        let dir = layer.open_dir(dir_path)?;
        let st = sys::stat_at(sys::borrow(&dir), name)?;
        let origin = layer.origin_at(sys::borrow(&dir), name);
        Ok(CopySource {
            name: name.to_owned(),
            lowers,
            dir,
            st,
            origin,
        })
    }

    /// Put the copy built at `W/work/tmp` into place as `node`'s name. Its parent's
    /// upper path is computed now, under the tree lock, so a rename cannot move it
    /// in between; a copy-up is no change of the parent, whose times are put back.
    fn place_copy(&self, t: &Tree, node: &Node, upper: &Upper, tmp: &OsStr) -> SysResult<()> {
        let work = sys::borrow(&upper.work);
        let placed = (|| {
            let (parent, name) = {
                let s = node.state.read();
                if s.unlinked {
                    // Removed while its data was copied (the lock let go): its name holds
                    // a whiteout now, or another object.
                    return Err(Errno::ENOENT);
                }
                (s.parent.clone().ok_or(Errno::EIO)?, s.name.clone())
            };
            let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(t, &parent))?;
            self.place_keeping_times(sys::borrow(&pdir), || {
                sys::rename_at(
                    work,
                    tmp,
                    sys::borrow(&pdir),
                    &name,
                    sys::rename_flag::NOREPLACE,
                )
            })
        })();
        if placed.is_err() {
            let _ = remove_tree(work, tmp);
        }
        placed
    }

    /// Copy one directory whose parent is in the upper layer already.
    fn copy_up_one_dir(&self, t: &Tree, upper: &Upper, dir: &Arc<Node>) -> SysResult<()> {
        let _turn = dir.dir_copy_up_turn(t);
        if dir.state.read().upper {
            return Ok(());
        }
        let src = self.copy_source(dir)?;
        let work = sys::borrow(&upper.work);
        let tmp = self.temp_name();
        let built = self.build_copy(
            sys::borrow(&src.dir),
            &src.name,
            &src.st,
            (work, &tmp),
            FileKind::Directory,
            Data::Full,
            src.origin.as_deref().unwrap_or(b""),
        );
        let origin_recorded = match built {
            Ok(recorded) => recorded,
            Err(e) => {
                let _ = remove_tree(work, &tmp);
                return Err(e);
            }
        };
        if !origin_recorded {
            self.number_copy(work, &tmp, dir.ino.get());
        }
        self.place_copy(t, dir, upper, &tmp)?;
        {
            let mut s = dir.state.write();
            s.lowers = Lowers::Stack(src.lowers);
            s.upper = true;
            s.metacopy = false;
            // The copy is at the name recorded: it leads to the node.
            s.stale_name = false;
        }
        self.counters.copied_up(1);
        // Now merged: it reports nlink 1 from here on.
        self.attr_changed(dir.ino);
        Ok(())
    }

    /// Copy one file (not a directory) whose parent is in the upper layer already. Its
    /// data is copied with the tree lock let go; the node's `copy_up` mutex stays held,
    /// so one copy of it runs at a time.
    fn copy_up_file(
        &self,
        t: &mut TreeRead,
        upper: &Upper,
        node: &Arc<Node>,
        data: Data,
    ) -> SysResult<()> {
        let _turn = node.copy_up_turn(t);
        let (kind, name) = {
            let s = node.state.read();
            if s.upper {
                return Ok(());
            }
            (s.kind, s.name.clone())
        };
        let src = self.copy_source(node)?;
        let st = src.st;
        let work = sys::borrow(&upper.work);
        let indexed = st.nlink > 1;
        let IndexSlot {
            dir: index,
            key,
            kernel,
        } = index_slot(upper, src.origin.as_deref(), &st);
        let index_ref = indexed.then(|| IndexRef {
            kernel,
            key: key.clone(),
        });
        let data = self.meta_or_full(data, kind);
        // Another name of this inode was copied up already: join it.
        if indexed && sys::stat_at(index, &key).is_ok() {
            let parent = node.parent().ok_or(Errno::EIO)?;
            let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(t, &parent))?;
            self.link_upper_name(node, (index, &key), sys::borrow(&pdir), &name)?;
            if !sys::XATTRS {
                // No origin record on this system to number the copy by.
                self.number_copy(index, &key, node.ino.get());
            }
            let metacopy = self.is_metacopy_at(index, &key);
            let mut s = node.state.write();
            s.lowers = Lowers::Stack(src.lowers);
            s.upper = true;
            s.metacopy = metacopy;
            s.stale_name = false;
            s.set_index(index_ref);
            drop(s);
            if metacopy && data != Data::Meta {
                return self.copy_up_data_locked(t, node, data);
            }
            return Ok(());
        }
        let tmp = self.temp_name();
        // The copy is built from the lower entry into the work dir: no upper path is
        // involved, so the tree lock is let go meanwhile.
        let built = t.unlocked(|| {
            self.build_copy(
                sys::borrow(&src.dir),
                &src.name,
                &st,
                (work, &tmp),
                kind,
                data,
                src.origin.as_deref().unwrap_or(b""),
            )
        });
        let origin_recorded = match built {
            Ok(recorded) => recorded,
            Err(e) => {
                let _ = remove_tree(work, &tmp);
                return Err(e);
            }
        };
        if !origin_recorded {
            self.number_copy(work, &tmp, node.ino.get());
        }
        if indexed {
            // Two names now (index + this one) stand for the lower's `nlink`.
            let adjust = st.nlink as i64 - 2;
            let _ = self.set_nlink_adjust_at(work, &tmp, adjust);
            node.state.write().set_nlink_adjust(adjust);
            upper.has_index_entries.store(true, Ordering::Release);
            match sys::link_at(work, &tmp, index, &key) {
                Ok(()) => self.record_index_key(index, &key),
                Err(Errno::EEXIST) => {}
                Err(e) => {
                    let _ = remove_tree(work, &tmp);
                    return Err(e);
                }
            }
        }
        self.place_copy(t, node, upper, &tmp)?;
        self.counters.copied_up(1);
        let mut s = node.state.write();
        s.lowers = Lowers::Stack(src.lowers);
        s.upper = true;
        s.metacopy = data == Data::Meta;
        s.stale_name = false;
        if index_ref.is_some() {
            s.set_index(index_ref);
        }
        Ok(())
    }

    /// Give a metadata-only copy its data (`Full`), or none (`Empty`: the caller
    /// truncates it to 0): in place, as the kernel does. The marker goes only after
    /// the data is durable, so until then (and after a crash) reads still come from
    /// the lower file, never from a half-filled copy.
    fn copy_up_data(&self, t: &mut TreeRead, node: &Arc<Node>, data: Data) -> SysResult<()> {
        let turn = node.copy_up_turn(t);
        let r = self.copy_up_data_locked(t, node, data);
        drop(turn);
        r
    }

    /// [`Overlay::copy_up_data`] with the node's copy-up lock held. The data is copied
    /// between two open files with the tree lock let go.
    fn copy_up_data_locked(&self, t: &mut TreeRead, node: &Arc<Node>, data: Data) -> SysResult<()> {
        if !node.state.read().metacopy {
            return Ok(());
        }
        let lower = self.first_lower(node).ok_or(Errno::EIO)?;
        let dst = {
            let (dir, name) = self.upper_object(t, node)?;
            sys::open_at(sys::borrow(&dir), &name, sys::oflag::WRONLY, 0)?
        };
        let st = sys::stat_fd(sys::borrow(&dst))?;
        if data == Data::Empty {
            sys::truncate_fd(sys::borrow(&dst), 0)?;
        } else if st.size > 0 {
            let src = self.lowers[lower.layer].open_file(&lower.path, sys::oflag::RDONLY)?;
            t.unlocked(|| copy_data(sys::borrow(&src), sys::borrow(&dst), st.size))?;
            self.counters.bytes_copied(st.size);
        }
        // The copy's writes set its mtime, as the kernel's data copy-up does.
        if !self.volatile {
            sys::fsync(sys::borrow(&dst))?;
        }
        self.upper()?.layer.clear_metacopy(sys::borrow(&dst))?;
        node.state.write().metacopy = false;
        // Its mtime and block count changed: the kernel's cached attributes are stale.
        self.attr_changed(node.ino);
        Ok(())
    }

    /// What a copy of `kind` asked for with `data` gets: a metadata-only copy only for
    /// regular files on a mount with `metacopy=on`, else the data.
    pub(super) fn meta_or_full(&self, data: Data, kind: FileKind) -> Data {
        match data {
            Data::Meta if self.metacopy && kind == FileKind::Regular => Data::Meta,
            Data::Meta => Data::Full,
            d => d,
        }
    }

    /// Build the copy of one entry at `work/tmp`. Returns whether it carries the
    /// origin record.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn build_copy(
        &self,
        src_dir: BorrowedFd<'_>,
        src_name: &OsStr,
        st: &Stat,
        (work, tmp): (BorrowedFd<'_>, &OsStr),
        kind: FileKind,
        data: Data,
        origin: &[u8],
    ) -> SysResult<bool> {
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
        // Handles on the two entries carry their xattrs. Where the system has none (the
        // portable module) neither is opened: a socket cannot be, and opening a device
        // would run its driver.
        let dst = if sys::XATTRS {
            Some(sys::open_path_at(work, tmp)?)
        } else {
            None
        };
        let dst = dst.as_ref().map(sys::borrow);
        if kind != FileKind::Symlink {
            match dst {
                Some(fd) => sys::chmod_path_fd(fd, st.perm())?,
                None => sys::chmod_at(work, tmp, st.perm())?,
            }
        }
        let format = &self.upper()?.layer;
        let mut origin_recorded = false;
        if let Some(dst) = dst {
            let src = sys::open_path_at(src_dir, src_name)?;
            self.copy_xattrs(sys::borrow(&src), dst)?;
            // The kernel's origin record (its file handle of the lower entry; empty
            // means "copied up, origin unknown"): lookup keeps the lower inode number
            // for it, and the kernel finds the hard-link index entry by it.
            origin_recorded = format.set_origin(dst, origin).is_ok();
        }
        if kind == FileKind::Regular && data == Data::Meta {
            let file = sys::open_at(work, tmp, sys::oflag::WRONLY, 0)?;
            // Without the marker (an upper filesystem refusing it) the data is copied.
            match dst.map(|fd| format.set_metacopy(fd)) {
                Some(Ok(())) => sys::truncate_fd(sys::borrow(&file), st.size)?,
                _ => self.fill_copy(src_dir, src_name, st, sys::borrow(&file), Data::Full)?,
            }
        }
        sys::set_times_at(work, tmp, TimeSet::At(st.atime), TimeSet::At(st.mtime))?;
        Ok(origin_recorded)
    }

    /// A copy of the object numbered `number` was built at `dir/name` with no origin
    /// record (an upper without xattrs: the portable module). A lookup of the copy
    /// reads the upper inode, whose number is another: the object keeps its number
    /// here, as the origin record keeps it on the kernel's format, so that lookup finds
    /// the node the kernel holds. A second node of the object would keep the old name,
    /// and a rename or unlink through one would leave the other naming a gone path.
    pub(super) fn number_copy(&self, dir: BorrowedFd<'_>, name: &OsStr, number: u64) {
        if let Ok(st) = sys::stat_at(dir, name) {
            self.copy_numbers.insert(st.ino, number);
        }
    }

    /// The number the union gives the upper inode `ino`: the number its object had
    /// before it was copied without an origin record, else its own (folded).
    pub(super) fn upper_number(&self, ino: u64) -> u64 {
        if !self.copy_numbers.is_empty()
            && let Some(n) = self.copy_numbers.get(&ino)
        {
            return *n;
        }
        self.fold_ino(self.upper.as_ref().map_or(0, |u| u.layer.dev), ino)
    }

    /// The upper inode `ino` lost its last name (or is a new object): the number of
    /// a copy it was no longer applies (the filesystem may give the inode number to
    /// another object).
    pub(super) fn drop_copy_number(&self, ino: u64) {
        if !self.copy_numbers.is_empty() {
            self.copy_numbers.remove(&ino);
        }
        if !self.nlink_adjusts.is_empty() {
            self.nlink_adjusts.remove(&ino);
        }
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
