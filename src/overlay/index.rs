//! The hard-link index: a lower file with several names is copied up once and
//! linked into `W/index` (named as the kernel names it) or `W/lf-index`, so its
//! other names join the same upper inode when they are next looked up (the kernel's
//! `index=on`); `overlay.nlink` keeps the link count the union shows. The names and
//! values on disk are `crate::layer`'s (`index_key`, `nlink_adjust`); this module
//! decides when an entry is made, joined or adopted.

use super::copyup::{Data, remove_tree};
use super::dircache::LayerId;
use super::lookup::Resolved;
use super::node::{IndexRef, LowerRef, Lowers, Node};
use super::tree::{Tree, TreeRead};
use super::{Overlay, Upper};
use crate::layer::{self, IndexKey};
use crate::sys::{self, Errno, FileKind, Stat, SysResult};
use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

/// `W/lf-nlink`, where the upper has no xattrs (the portable module): for each entry
/// `W/lf-index/KEY`, the file `KEY` holds its `overlay.nlink` adjustment in decimal, so
/// a copied lower hard link shows the same link count after a remount.
pub(super) const NLINK_RECORDS: &str = "lf-nlink";

/// An adjustment kept for one upper inode (the portable module) and the index entry it
/// is recorded under, once linked there.
#[derive(Clone, Debug)]
pub(super) struct KeptAdjust {
    pub adjust: i64,
    pub key: Option<OsString>,
}

/// The records of `W/lf-nlink` (open at `records`), by the upper inode number of their
/// `W/lf-index` entry (open at `index`). A record whose entry is gone, or left half
/// written (a temporary name), is removed.
pub(super) fn load_nlink_records(
    records: BorrowedFd<'_>,
    index: BorrowedFd<'_>,
) -> Vec<(u64, KeptAdjust)> {
    let mut out = Vec::new();
    for e in sys::read_dir(records).unwrap_or_default() {
        let adjust = sys::open_at(records, &e.name, sys::oflag::RDONLY, 0)
            .and_then(|fd| sys::read_exact_at(sys::borrow(&fd), 24, 0))
            .ok()
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<i64>().ok());
        match (adjust, sys::stat_at(index, &e.name)) {
            (Some(adjust), Ok(st)) if !e.name.as_encoded_bytes().starts_with(b"#") => {
                out.push((
                    st.ino,
                    KeptAdjust {
                        adjust,
                        key: Some(e.name),
                    },
                ));
            }
            _ => {
                let _ = sys::unlink_at(records, &e.name, false);
            }
        }
    }
    out
}

/// Where the index keeps the copy of a lower file with several names.
pub(super) struct IndexSlot<'a> {
    pub dir: BorrowedFd<'a>,
    pub key: OsString,
    pub kernel: bool,
}

/// The index entry of a lower inode (its name is the format's: `layer::index_key`).
pub(super) fn index_slot<'a>(upper: &'a Upper, origin: Option<&[u8]>, st: &Stat) -> IndexSlot<'a> {
    let IndexKey { kernel, name } = layer::index_key(origin, st);
    IndexSlot {
        dir: sys::borrow(if kernel {
            &upper.kernel_index
        } else {
            &upper.index
        }),
        key: name,
        kernel,
    }
}

impl Overlay {
    /// A lower file with several names whose inode was copied up through another
    /// name (found in the index): link this name to that copy too. Returns whether it
    /// did.
    pub(super) fn join_indexed_copy(
        &self,
        t: &Tree,
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
        let origin = layer.origin_of(&lower.path);
        let slot = index_slot(upper, origin.as_deref(), st);
        if sys::stat_at(slot.dir, &slot.key).is_err() {
            return Ok(false);
        }
        self.copy_up_dir(t, parent)?;
        let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(t, parent))?;
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

    /// The lower file of `node` and its stat, when it is a hard link of a lower layer
    /// that is not yet in the upper one.
    fn lower_hard_link(&self, node: &Node) -> SysResult<Option<(LowerRef, Stat)>> {
        {
            let s = node.state.read();
            if s.upper || s.kind == FileKind::Directory {
                return Ok(None);
            }
        }
        let lower = self.first_lower(node).ok_or(Errno::EIO)?;
        let st = self.lowers[lower.layer].stat(&lower.path)?;
        Ok((st.nlink > 1).then_some((lower, st)))
    }

    /// A name of a lower hard link is about to go (removed, or renamed over): copy the
    /// inode into the index only (no name in the upper), so its link count can be kept
    /// (the kernel does the same with `index=on`); the node then takes that copy as its
    /// data ([`Overlay::try_adopt_index_copy`]). This half copies data: it makes the
    /// index entry if there is none yet, with the tree lock let go while the copy is
    /// built; the node is not changed.
    pub(super) fn build_index_copy(&self, t: &mut TreeRead, node: &Arc<Node>) -> SysResult<()> {
        let upper = self.upper()?;
        let _turn = node.copy_up_turn(t);
        let Some((lower, _)) = self.lower_hard_link(node)? else {
            return Ok(());
        };
        let src_layer = &self.lowers[lower.layer];
        let (src_dir_path, src_name) = layer::split_last(&lower.path).ok_or(Errno::EIO)?;
        let src_dir = src_layer.open_dir(src_dir_path)?;
        let src_dir = sys::borrow(&src_dir);
        let st = sys::stat_at(src_dir, src_name)?;
        let origin = src_layer.origin_at(src_dir, src_name);
        let slot = index_slot(upper, origin.as_deref(), &st);
        if sys::stat_at(slot.dir, &slot.key).is_ok() {
            return Ok(());
        }
        let work = sys::borrow(&upper.work);
        let tmp = self.temp_name();
        // Neither the lower file nor the index moves with a rename: no lock needed.
        let built = t.unlocked(|| {
            self.build_copy(
                src_dir,
                src_name,
                &st,
                (work, &tmp),
                st.kind(),
                self.meta_or_full(Data::Meta, st.kind()),
                origin.as_deref().unwrap_or(b""),
            )
        });
        let placed = built.and_then(|origin_recorded| {
            if !origin_recorded {
                // Numbered as the lower file is, which is what a lookup of any of its
                // names gave until now.
                let number = self.fold_ino(src_layer.dev, st.ino);
                self.number_copy(work, &tmp, number);
            }
            // One name (the index) stands for the lower's `nlink` names.
            self.set_nlink_adjust_at(work, &tmp, st.nlink as i64 - 1)?;
            upper.has_index_entries.store(true, Ordering::Release);
            match sys::link_at(work, &tmp, slot.dir, &slot.key) {
                Ok(()) => {
                    self.record_index_key(slot.dir, &slot.key);
                    Ok(())
                }
                Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        });
        let _ = remove_tree(work, &tmp);
        placed
    }

    /// The second half: `node` takes the index entry made for its lower hard link as
    /// its data. Copies nothing, under any tree guard (the write phase of a rename or a
    /// removal): the node's `copy_up` mutex is only tried, as a copy-up holding it may be
    /// waiting for the tree lock. `Ok(false)` when it is taken, or the entry is not there.
    pub(super) fn try_adopt_index_copy(&self, t: &Tree, node: &Arc<Node>) -> SysResult<bool> {
        match node.try_copy_up_turn(t) {
            Some(_turn) => self.adopt_index_copy_locked(node),
            None => Ok(false),
        }
    }

    fn adopt_index_copy_locked(&self, node: &Arc<Node>) -> SysResult<bool> {
        let upper = self.upper()?;
        let Some((lower, st)) = self.lower_hard_link(node)? else {
            return Ok(true);
        };
        let origin = self.lowers[lower.layer].origin_of(&lower.path);
        let slot = index_slot(upper, origin.as_deref(), &st);
        if sys::stat_at(slot.dir, &slot.key).is_err() {
            return Ok(false);
        }
        let adjust = self.nlink_adjust_at(slot.dir, &slot.key);
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
        Ok(true)
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

    /// Change the `overlay.nlink` adjustment of the upper `dir/name` by `delta`;
    /// returns the new one.
    pub(super) fn add_nlink_adjust(&self, dir: BorrowedFd<'_>, name: &OsStr, delta: i64) -> i64 {
        let adjust = self.nlink_adjust_at(dir, name) + delta;
        let _ = self.set_nlink_adjust_at(dir, name, adjust);
        adjust
    }

    /// The `overlay.nlink` adjustment of the upper `dir/name` (0 when none). Where the
    /// upper has no xattrs (the portable module) the one kept for its inode.
    pub(super) fn nlink_adjust_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> i64 {
        if !sys::XATTRS {
            return sys::stat_at(dir, name).map_or(0, |st| self.kept_nlink_adjust(st.ino));
        }
        match (self.upper(), sys::open_path_at(dir, name)) {
            (Ok(upper), Ok(fd)) => upper.layer.nlink_adjust(sys::borrow(&fd)),
            _ => 0,
        }
    }

    /// Record the `overlay.nlink` adjustment of the upper `dir/name`. Where the upper
    /// has no xattrs (the portable module) it is kept by inode number instead (a regular
    /// file, so it is stat'ed, never opened), and in `W/lf-nlink` once the copy is in the
    /// index: a copied lower hard link then shows the lower's link count, not one more
    /// for its index entry.
    pub(super) fn set_nlink_adjust_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        adjust: i64,
    ) -> SysResult<()> {
        if !sys::XATTRS {
            let st = sys::stat_at(dir, name)?;
            let key = {
                let mut kept = self
                    .nlink_adjusts
                    .entry(st.ino)
                    .or_insert(KeptAdjust { adjust, key: None });
                kept.adjust = adjust;
                kept.key.clone()
            };
            if let Some(key) = key {
                self.write_nlink_record(&key, adjust);
            }
            return Ok(());
        }
        let upper = self.upper()?;
        let fd = sys::open_path_at(dir, name)?;
        upper.layer.set_nlink_adjust(sys::borrow(&fd), adjust)
    }

    /// The adjustment kept for the upper inode `ino` (the portable module).
    pub(super) fn kept_nlink_adjust(&self, ino: u64) -> i64 {
        self.kept_index(ino).0
    }

    /// The adjustment and the index entry kept for the upper inode `ino` (the portable
    /// module, where no origin record leads to the entry: its name is the lower
    /// inode's, not the copy's).
    pub(super) fn kept_index(&self, ino: u64) -> (i64, Option<IndexRef>) {
        if self.nlink_adjusts.is_empty() {
            return (0, None);
        }
        match self.nlink_adjusts.get(&ino) {
            Some(kept) => (
                kept.adjust,
                kept.key.clone().map(|key| IndexRef { kernel: false, key }),
            ),
            None => (0, None),
        }
    }

    /// The copy of a lower hard link was just linked into the index as `W/lf-index/key`
    /// (open at `index`): where the upper has no xattrs (the portable module), its
    /// adjustment is recorded under that name from now on, for the next mount.
    pub(super) fn record_index_key(&self, index: BorrowedFd<'_>, key: &OsStr) {
        if sys::XATTRS {
            return;
        }
        let Ok(st) = sys::stat_at(index, key) else {
            return;
        };
        let adjust = match self.nlink_adjusts.get_mut(&st.ino) {
            Some(mut kept) => {
                kept.key = Some(key.to_owned());
                kept.adjust
            }
            None => return,
        };
        self.write_nlink_record(key, adjust);
    }

    /// `W/lf-nlink/key` := `adjust`, replaced in one step (written under a temporary
    /// name, renamed over). Failing, the count shown after a remount is one more.
    fn write_nlink_record(&self, key: &OsStr, adjust: i64) {
        let Some(dir) = self.upper.as_ref().and_then(|u| u.nlink_records.as_ref()) else {
            return;
        };
        let dir = sys::borrow(dir);
        let tmp = self.temp_name();
        let flags = sys::oflag::WRONLY | sys::oflag::CREAT | sys::oflag::EXCL;
        let written = sys::open_at(dir, &tmp, flags, 0o600)
            .and_then(|fd| sys::pwrite(sys::borrow(&fd), adjust.to_string().as_bytes(), 0))
            .and_then(|_| sys::rename_at(dir, &tmp, dir, key, 0));
        if written.is_err() {
            let _ = sys::unlink_at(dir, &tmp, false);
        }
    }

    /// A hard link whose data is in the index (another name was copied up or removed)
    /// reached by a name still only in a lower layer: give that name in the upper,
    /// linked to the index entry, as the kernel's copy-up of that name does.
    pub(super) fn join_index_by_name(&self, t: &TreeRead, node: &Arc<Node>) -> SysResult<()> {
        let (index, parent, name) = {
            let s = node.state.read();
            match (s.index(), &s.parent) {
                (Some(ix), Some(p)) if !s.stale_name && s.kind != FileKind::Directory => {
                    (ix.clone(), p.clone(), s.name.clone())
                }
                _ => return Ok(()),
            }
        };
        self.copy_up_dir(t, &parent)?;
        let upper = self.upper()?;
        let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(t, &parent))?;
        let pdir = sys::borrow(&pdir);
        let _turn = node.copy_up_turn(t);
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

    /// Whether the upper `dir/name` is a metadata-only copy.
    pub(super) fn is_metacopy_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        let Ok(upper) = self.upper() else {
            return false;
        };
        sys::open_path_at(dir, name).is_ok_and(|fd| upper.layer.is_metacopy(sys::borrow(&fd)))
    }
}
