//! Changes to the namespace and to attributes: create, remove, rename, link, setattr.
//! Every change lands in the upper layer in the kernel's format: whiteouts where a
//! lower layer still has a removed name, opaque directories over whiteouts, redirects
//! on renamed lower directories.

use super::copyup::{Data, remove_tree};
use super::dircache::LayerId;
use super::ids::{HandleId, NodeId};
use super::lookup::Resolved;
use super::node::Node;
use super::place::{NamePlace, Place};
use super::tree::{Tree, TreeRead, TreeWrite};
use super::{Attr, Caller, Overlay, SetAttr, Upper, check_name};
use crate::layer::{self, Found};
use crate::sys::{self, Errno, FileKind, SysResult, oflag, rename_flag};
use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

/// What to make for a new name.
#[derive(Clone, Copy)]
pub enum NewEntry<'a> {
    File { flags: i32 },
    Dir,
    Node { rdev: u64 },
    Symlink { target: &'a OsStr },
}

/// What a new entry gets before it is moved into place.
#[derive(Clone, Copy)]
struct Finish {
    perm: u32,
    is_dir: bool,
    is_symlink: bool,
    opaque: bool,
    caller: Caller,
}

/// A checked place for a new name in the upper layer.
struct Slot {
    dir: Arc<OwnedFd>,
    /// The upper layer has a whiteout at the name, to be replaced atomically.
    over_whiteout: bool,
    /// The upper layer has an OCI whiteout (`.wh.NAME`, a file of its own: the portable
    /// module's format) for the name: the new entry is made first (an entry wins over a
    /// whiteout in the same layer), then the marker is removed.
    over_oci_whiteout: bool,
    /// The name was looked at in the upper layer. Unprobed, the slot knows of no
    /// whiteout: its entry is made with an exclusive create, which finds one (EEXIST).
    probed: bool,
}

impl Slot {
    /// Look at `name` in the upper directory for a whiteout.
    fn probe(&mut self, upper: &Upper, name: &OsStr) -> SysResult<()> {
        let dir = sys::borrow(&self.dir);
        let whiteout = upper.layer.entry_at(dir, name)? == Found::Whiteout;
        let oci = whiteout && upper.layer.oci && sys::stat_at(dir, name) == Err(Errno::ENOENT);
        self.over_whiteout = whiteout && !oci;
        self.over_oci_whiteout = oci;
        self.probed = true;
        Ok(())
    }
}

/// How the write phase of a removal ended.
enum Removal {
    /// Removed; with what was moved into the work dir, to delete there.
    Done(Option<MovedAway>),
    /// Another operation came in between the phases: prepare again.
    Retry,
}

/// A removed entry waiting in the work dir to be deleted.
struct MovedAway {
    node: Arc<Node>,
    tmp: std::ffi::OsString,
    dir: bool,
}

/// A removed file with more blocks than this (512-byte units: 1 MiB) is moved into the
/// work dir and deleted there after the tree lock is let go: freeing its data may take
/// long, and every request waits while the lock is held for writing.
const FREE_LATER_BLOCKS: u64 = 2048;

/// The kernel's type checks of unlink (`dir` false) and rmdir.
fn check_remove_kind(node: &Node, dir: bool) -> SysResult<()> {
    match (dir, node.kind() == FileKind::Directory) {
        (true, false) => Err(Errno::ENOTDIR),
        (false, true) => Err(Errno::EISDIR),
        _ => Ok(()),
    }
}

impl Overlay {
    /// Copy the parent up and check that `name` is free in the union. `probe`: look
    /// at the name in the upper layer for a whiteout now (always done for the OCI
    /// format, whose whiteout is another name).
    fn slot(
        &self,
        t: &Tree,
        parent: &Arc<Node>,
        name: &OsStr,
        probe: bool,
    ) -> SysResult<(&Upper, Slot)> {
        check_name(name)?;
        let upper = self.upper()?;
        if parent.kind() != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        self.copy_up_dir(t, parent)?;
        let dir = self.dir_fd(LayerId::Upper, &self.upper_path(t, parent))?;
        let mut slot = Slot {
            dir,
            over_whiteout: false,
            over_oci_whiteout: false,
            probed: false,
        };
        if probe || upper.layer.oci {
            slot.probe(upper, name)?;
        }
        Ok((upper, slot))
    }

    /// Create a new entry: a file (returned open), directory, device node or symlink.
    pub fn create(
        &self,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        what: NewEntry<'_>,
        caller: Caller,
    ) -> SysResult<(Attr, Option<HandleId>)> {
        if let NewEntry::Node { rdev: 0 } = what
            && FileKind::from_mode(mode) == FileKind::CharDevice
        {
            // A 0/0 device would read back as a whiteout.
            return Err(Errno::EPERM);
        }
        let caller = Caller {
            uid: self
                .ownership
                .uids
                .stored(caller.uid)
                .ok_or(Errno::EOVERFLOW)?,
            gid: self
                .ownership
                .gids
                .stored(caller.gid)
                .ok_or(Errno::EOVERFLOW)?,
            umask: caller.umask,
        };
        let parent = self.node(parent)?;
        let t = self.tree.read();
        match self.place_of_name(&t, &parent, name) {
            // The kernel looked the name up and found it free before asking (it holds
            // the directory's lock): a mount point is never free.
            NamePlace::Graft(at) if at.is_root() => return Err(Errno::EEXIST),
            NamePlace::Graft(at) => {
                return self.graft_create(&t, &parent, at, name, mode, what, caller);
            }
            NamePlace::Union => {}
        }
        let (upper, mut slot) = self.slot(&t, &parent, name, false)?;
        let perm = mode & 0o7777 & !caller.umask;
        // Made with its final mode unless it has set-id or sticky bits, which the
        // chown that follows would clear: then it gets them after.
        let init = if perm & 0o7000 == 0 { perm } else { 0o600 };
        // Made straight at its name unless a whiteout is known to be there. A name the
        // union shows free may still hold one in the upper layer (the kernel's format
        // is not probed first): the exclusive create finds it (EEXIST), and only then
        // is the name looked at, and the entry made in the work dir to replace it.
        let mut made_at_name = None;
        if !slot.over_whiteout {
            match make_entry(sys::borrow(&slot.dir), name, what, mode, init) {
                Err(Errno::EEXIST) if !slot.probed => {
                    slot.probe(upper, name)?;
                    if !slot.over_whiteout {
                        return Err(Errno::EEXIST);
                    }
                }
                made => made_at_name = Some(made?),
            }
        }
        // A directory made in a merged directory (or over a whiteout) is opaque, as
        // the kernel makes it: nothing below can ever merge into it.
        let opaque = matches!(what, NewEntry::Dir)
            && (slot.over_whiteout
                || slot.over_oci_whiteout
                || !parent.state.read().lowers.is_empty());
        let work = sys::borrow(&upper.work);
        let (at_dir, at_name) = if slot.over_whiteout {
            (work, self.temp_name())
        } else {
            (sys::borrow(&slot.dir), name.to_owned())
        };
        let is_dir = matches!(what, NewEntry::Dir);
        let is_symlink = matches!(what, NewEntry::Symlink { .. });
        let opened = match made_at_name {
            Some(opened) => opened,
            None => make_entry(at_dir, &at_name, what, mode, init)?,
        };
        let result = self.finish_new(
            upper,
            &slot,
            (at_dir, &at_name),
            name,
            &Finish {
                perm,
                is_dir,
                is_symlink,
                opaque,
                caller,
            },
        );
        if let Err(e) = result {
            let _ = if slot.over_whiteout {
                remove_tree(work, &at_name)
            } else {
                sys::unlink_at(at_dir, &at_name, is_dir)
            };
            return Err(e);
        }
        if slot.over_oci_whiteout {
            upper.layer.drop_oci_whiteout(sys::borrow(&slot.dir), name);
        }
        let st = match &opened {
            Some(fd) => sys::stat_fd(sys::borrow(fd))?,
            None => sys::stat_at(sys::borrow(&slot.dir), name)?,
        };
        // A new object: no copy's number is this inode's any more.
        self.drop_copy_number(st.ino);
        let r = Resolved {
            stat: st,
            upper: true,
            metacopy: false,
            lowers: Default::default(),
            ino: self.fold_ino(upper.layer.dev, st.ino),
            nlink_adjust: 0,
            index: None,
        };
        // A new inode is no other name of a node the union knows: one still holding its
        // number is of an object removed from outside (after which a create read back
        // ENOENT: it joined that node, whose name was gone).
        self.nodes.vacate(r.ino);
        let node = self.node_for(&parent, name, r, true);
        if !is_dir {
            node.state.write().no_capability = true;
        }
        let attr = self.attr_of(&t, &node, &st);
        let fh = opened.map(|fd| self.insert_file_handle(node, fd));
        Ok((attr, fh))
    }

    /// Give a new entry its owner, mode and markers, then move it into place.
    fn finish_new(
        &self,
        upper: &Upper,
        slot: &Slot,
        (at_dir, at_name): (BorrowedFd<'_>, &OsStr),
        name: &OsStr,
        f: &Finish,
    ) -> SysResult<()> {
        let Finish {
            perm,
            is_dir,
            is_symlink,
            opaque,
            caller,
        } = *f;
        let special = perm & 0o7000 != 0;
        // The daemon made it as root (0:0, or the setgid directory's group, which the
        // filesystem gave already): only another owner needs a chown, and only then (or
        // for a set-id directory) the parent's setgid bit matters. Made in the work dir
        // (over a whiteout), it got nothing from its real parent: group and setgid bit
        // are given here.
        let by_root = caller.uid == 0 && caller.gid == 0;
        let in_work = slot.over_whiteout;
        let (parent_sgid, parent_gid) = if in_work || !by_root || (special && is_dir) {
            let pst = sys::stat_fd(sys::borrow(&slot.dir))?;
            (pst.mode & 0o2000 != 0, pst.gid)
        } else {
            (false, 0)
        };
        let add_sgid = is_dir && parent_sgid && in_work;
        if let Some(xname) = &self.override_stat {
            // Owner and mode live in the override xattr; the file keeps the daemon's.
            let pst = sys::stat_fd(sys::borrow(&slot.dir))?;
            let gid = if pst.mode & 0o2000 != 0 {
                pst.gid
            } else {
                caller.gid
            };
            let st = sys::stat_at(at_dir, at_name)?;
            let value = layer::override_value(caller.uid, gid, (st.mode & !0o7777) | perm);
            if let Ok(fd) = sys::open_path_at(at_dir, at_name) {
                // Symlinks cannot carry user.* xattrs: they keep their real owner.
                let _ = sys::set_xattr(sys::borrow(&fd), xname, value.as_bytes(), 0);
            }
        } else if !by_root || (in_work && parent_sgid) {
            let gid = match (parent_sgid, in_work) {
                (true, true) => parent_gid,
                (true, false) => u32::MAX,
                (false, _) => caller.gid,
            };
            sys::chown_at(at_dir, at_name, caller.uid, gid)?;
        }
        if !is_symlink && (special || add_sgid) {
            let keep_sgid = if is_dir && parent_sgid { 0o2000 } else { 0 };
            sys::chmod_at(at_dir, at_name, perm | keep_sgid)?;
        }
        if opaque {
            // Only directories are made opaque.
            let fd = sys::open_path_at(at_dir, at_name)?;
            upper.layer.set_opaque(sys::borrow(&fd))?;
        }
        if slot.over_whiteout {
            sys::rename_at(
                at_dir,
                at_name,
                sys::borrow(&slot.dir),
                name,
                rename_flag::EXCHANGE,
            )?;
            // The whiteout now sits at the temporary name.
            let _ = sys::unlink_at(sys::borrow(&upper.work), at_name, false);
        }
        Ok(())
    }

    /// Remove a name (`dir`: rmdir semantics). In two phases, as rename: under the
    /// tree lock held for reading, the checks and everything that copies data (the
    /// parent's copy-up, the index copy of a lower hard link); then, under it held
    /// for writing, the name's change in the upper layer together with the node's
    /// mark (`unlinked`, or its next name). No request ever finds the node at a name
    /// that already holds a whiteout, nothing or another object, and no lookup finds
    /// the object at its name after its node was marked. What the removal moved
    /// into the work dir is deleted there once the lock is let go.
    pub fn remove(&self, parent: NodeId, name: &OsStr, dir: bool) -> SysResult<()> {
        check_name(name)?;
        let parent = self.node(parent)?;
        // A file whose directory is in the upper already needs nothing of phase 1 (no
        // copy-up; phase 2 makes the kernel's checks and sends a lower hard link back
        // to it), so the first try goes straight to phase 2: one resolve, not two.
        let mut prepare = dir || !parent.state.read().upper;
        loop {
            let node = if prepare {
                let mut t = self.tree.read();
                match self.place_of_name(&t, &parent, name) {
                    // A mount point (also one nested in another graft).
                    NamePlace::Graft(at) if at.is_root() => return Err(Errno::EBUSY),
                    NamePlace::Graft(at) => return self.graft_remove(&at, dir),
                    NamePlace::Union => {}
                }
                Some(self.remove_prepare(&mut t, &parent, name, dir)?)
            } else {
                None
            };
            prepare = true;
            let t = self.tree.write();
            let removed = self.remove_name(&t, &parent, name, dir, node.as_ref())?;
            drop(t);
            match removed {
                Removal::Retry => continue,
                Removal::Done(None) => return Ok(()),
                Removal::Done(Some(left)) => {
                    self.delete_moved_away(&left);
                    return Ok(());
                }
            }
        }
    }

    /// Phase 1 of a removal, under the read lock: the kernel's checks, and what the
    /// removal needs that may copy data. Returns the node to remove.
    fn remove_prepare(
        &self,
        t: &mut TreeRead,
        parent: &Arc<Node>,
        name: &OsStr,
        dir: bool,
    ) -> SysResult<Arc<Node>> {
        self.upper()?;
        let (node, st) = self.lookup_node(t, parent, name, false)?;
        check_remove_kind(&node, dir)?;
        if dir && !self.dir_is_empty(t, &node, self.lower_positive(parent, name)?)? {
            return Err(Errno::ENOTEMPTY);
        }
        self.copy_up_dir(t, parent)?;
        if !dir && st.nlink > 1 {
            // One name of a lower hard link may go below: its copy in the index is
            // made now, before the upper directory is looked at.
            self.build_index_copy(t, &node)?;
        }
        Ok(node)
    }

    /// Phase 2 of a removal, under the write lock: look the name up again (another
    /// operation may have come in between: back to phase 1 if what phase 1 made is
    /// not there, or if the name is a graft's, which phase 1 answers for), change the upper layer and mark the node. Copies no data, and frees
    /// none that may take long: a directory, an entry that leaves a whiteout and a
    /// large file are moved into the work dir instead, to be deleted after (the
    /// `Removal::Done` value). `prepared`: the node phase 1 returned, if it ran.
    fn remove_name(
        &self,
        t: &TreeWrite,
        parent: &Arc<Node>,
        name: &OsStr,
        dir: bool,
        prepared: Option<&Arc<Node>>,
    ) -> SysResult<Removal> {
        let upper = self.upper()?;
        if let NamePlace::Graft(_) = self.place_of_name(t, parent, name) {
            // A mount point, or a name in a graft: phase 1 answers for it.
            return Ok(Removal::Retry);
        }
        // The entry at this name in the upper layer (not just the node's: hard links)
        // comes with the lookup.
        let (node, st, in_upper) = self.lookup_union_name(t, parent, name, false)?;
        check_remove_kind(&node, dir)?;
        if !parent.state.read().upper || (prepared.is_none() && st.nlink > 1) {
            // Phase 1 has work to do first (a copy-up, a hard link's index copy).
            return Ok(Removal::Retry);
        }
        let need_whiteout = self.lower_positive(parent, name)?;
        // Another directory at the name since phase 1 (never through the kernel, which
        // holds the directory's lock throughout): its emptiness is checked here. Not a
        // retry: an object whose inode number cannot be folded gets a new node at every
        // lookup.
        if dir
            && !prepared.is_some_and(|p| Arc::ptr_eq(&node, p))
            && !self.dir_is_empty(t, &node, need_whiteout)?
        {
            return Err(Errno::ENOTEMPTY);
        }
        let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(t, parent))?;
        let pdir = sys::borrow(&pdir);
        let mut last_link = true;
        let mut left = None;
        if let Some(ust) = in_upper {
            if !dir {
                last_link = ust.nlink as i64 + node.state.read().nlink_adjust() <= 1;
            }
            let free_later =
                ust.kind() == FileKind::Regular && ust.nlink == 1 && ust.blocks > FREE_LATER_BLOCKS;
            if dir || need_whiteout || free_later {
                // Moved into the work dir (leaving a whiteout in the same step when a
                // lower layer still has the name), deleted there after.
                let tmp = self.temp_name();
                self.move_away(pdir, name, sys::borrow(&upper.work), &tmp, need_whiteout)?;
                left = Some(tmp);
            } else {
                sys::unlink_at(pdir, name, false)?;
            }
            if last_link {
                self.drop_copy_number(ust.ino);
            }
        } else {
            if !dir && st.nlink > 1 && !self.try_adopt_index_copy(t, &node)? {
                // One name of a lower hard link goes: its count is kept in the index,
                // whose copy phase 1 made (or a copy-up of it holds its turn).
                return Ok(Removal::Retry);
            }
            let (upper_node, adjust) = {
                let s = node.state.read();
                (s.upper, s.nlink_adjust())
            };
            if upper_node && adjust > 0 {
                // A lower-only name of a copied-up hard link: one name fewer.
                last_link = false;
                let (d, n) = self.upper_object(t, &node)?;
                let a = self.add_nlink_adjust(sys::borrow(&d), &n, -1);
                node.state.write().set_nlink_adjust(a);
            }
            self.make_whiteout(pdir, name)?;
        }
        if dir {
            // Cached fds of upper directories at or below it would outlive it; none
            // is cached again before the lock is let go.
            self.dirs.drop_upper();
        }
        let mut s = node.state.write();
        if last_link {
            s.unlinked = true;
            // What it looked like just before it went (a directory's is refined once
            // its whiteouts are cleared, see `delete_moved_away`).
            s.set_removed(in_upper);
        } else if s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent)) && *s.name == *name {
            switch_to_alias(&mut s, parent, name);
        } else {
            s.aliases_mut()
                .retain(|(p, n)| !(Arc::ptr_eq(p, parent) && n == name));
        }
        drop(s);
        Ok(Removal::Done(left.map(|tmp| MovedAway { node, tmp, dir })))
    }

    /// Delete what a removal moved into the work dir (no rename moves anything there,
    /// so no tree lock is needed). The name is gone already: a failure here leaves
    /// only a leftover, which the next mount clears.
    fn delete_moved_away(&self, left: &MovedAway) {
        let Ok(upper) = self.upper() else { return };
        let work = sys::borrow(&upper.work);
        if !left.dir {
            let _ = remove_tree(work, &left.tmp);
            return;
        }
        let Ok(fd) = sys::open_at(work, &left.tmp, oflag::RDONLY | oflag::DIRECTORY, 0) else {
            let _ = remove_tree(work, &left.tmp);
            return;
        };
        for e in sys::read_dir(sys::borrow(&fd)).unwrap_or_default() {
            let _ = remove_tree(sys::borrow(&fd), &e.name);
        }
        // A directory as it was after its whiteouts were cleared (which sets its
        // times), just before it went.
        if let Ok(emptied) = sys::stat_fd(sys::borrow(&fd)) {
            left.node.state.write().set_removed(Some(emptied));
        }
        drop(fd);
        let _ = remove_tree(work, &left.tmp);
    }

    /// Put a whiteout at `name` in the upper directory `dir`.
    pub(super) fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        self.upper()?.layer.make_whiteout(dir, name)?;
        self.counters.whiteouts(1);
        Ok(())
    }

    /// Move the upper entry `dir/name` to `to_dir/to`, leaving a whiteout behind when
    /// `whiteout` (a lower layer still has the name).
    pub(super) fn move_away(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        to_dir: BorrowedFd<'_>,
        to: &OsStr,
        whiteout: bool,
    ) -> SysResult<()> {
        if !whiteout {
            return sys::rename_at(dir, name, to_dir, to, 0);
        }
        self.upper()?
            .layer
            .move_leaving_whiteout(dir, name, to_dir, to)?;
        self.counters.whiteouts(1);
        Ok(())
    }

    /// Hard-link `ino` as `name` in `newparent`.
    pub fn link(&self, ino: NodeId, newparent: NodeId, name: &OsStr) -> SysResult<Attr> {
        let node = self.node(ino)?;
        if node.kind() == FileKind::Directory {
            return Err(Errno::EPERM);
        }
        let newparent = self.node(newparent)?;
        let mut t = self.tree.read();
        match (self.place(&node), self.place_of_name(&t, &newparent, name)) {
            // The kernel found the name taken before asking.
            (_, to) if to.is_mount_point() => return Err(Errno::EEXIST),
            (Place::Graft(a), NamePlace::Graft(b)) => {
                check_name(name)?;
                let st = self.graft_link(&a, &b)?;
                self.nodes.count_lookup(&node);
                return Ok(self.attr_of(&t, &node, &st));
            }
            (Place::Upper | Place::Lower, NamePlace::Union) => {}
            _ => return Err(Errno::EXDEV),
        }
        let (upper, slot) = self.slot(&t, &newparent, name, true)?;
        self.copy_up(&mut t, &node, Data::Meta)?;
        if node.state.read().metacopy {
            // The new name lies elsewhere: record where the data is from the root,
            // as the kernel does before linking a metadata-only copy.
            let (sdir, sname) = self.upper_object(&t, &node)?;
            self.set_redirect(&t, &node, &newparent, false, sys::borrow(&sdir), &sname)?;
        }
        let (sdir, sname) = self.upper_object(&t, &node)?;
        let sname = sname.as_os_str();
        if slot.over_whiteout {
            let work = sys::borrow(&upper.work);
            let tmp = self.temp_name();
            sys::link_at(sys::borrow(&sdir), sname, work, &tmp)?;
            if let Err(e) = sys::rename_at(
                work,
                &tmp,
                sys::borrow(&slot.dir),
                name,
                rename_flag::EXCHANGE,
            ) {
                let _ = sys::unlink_at(work, &tmp, false);
                return Err(e);
            }
            let _ = sys::unlink_at(work, &tmp, false);
        } else {
            sys::link_at(sys::borrow(&sdir), sname, sys::borrow(&slot.dir), name)?;
        }
        if slot.over_oci_whiteout {
            upper.layer.drop_oci_whiteout(sys::borrow(&slot.dir), name);
        }
        node.state
            .write()
            .aliases_mut()
            .push((newparent.clone(), name.to_owned()));
        self.nodes.count_lookup(&node);
        let st = sys::stat_at(sys::borrow(&slot.dir), name)?;
        Ok(self.attr_of(&t, &node, &st))
    }

    /// Change attributes, copying up first.
    pub fn setattr(&self, ino: NodeId, set: SetAttr) -> SysResult<Attr> {
        let node = self.node(ino)?;
        let mut t = self.tree.read();
        let changes = set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.size.is_some()
            || set.atime.is_some()
            || set.mtime.is_some();
        if !changes {
            let st = self.stat_node(&t, &node)?;
            return Ok(self.attr_of(&t, &node, &st));
        }
        let set = SetAttr {
            uid: match set.uid {
                Some(u) => Some(self.ownership.uids.stored(u).ok_or(Errno::EINVAL)?),
                None => None,
            },
            gid: match set.gid {
                Some(g) => Some(self.ownership.gids.stored(g).ok_or(Errno::EINVAL)?),
                None => None,
            },
            ..set
        };
        if let Place::Graft(at) = self.place(&node) {
            let st = self.graft_setattr(&at, &set)?;
            return Ok(self.attr_of(&t, &node, &st));
        }
        self.upper()?;
        if node.state.read().unlinked
            && let Some(fd) = self.handles.upper_fd_of(&node)
        {
            // Removed while the kernel still holds it (an open file, or a request that
            // raced the removal): the change goes to the object itself, as the kernel's
            // goes to the orphan inode; its old name may lead to another object by now.
            apply_setattr_fd(sys::borrow(&fd), &set)?;
            let st = sys::stat_fd(sys::borrow(&fd))?;
            return Ok(self.attr_of(&t, &node, &st));
        }
        let mut set = set;
        // A truncate to the size the file has is still passed on: whether it sets the
        // times is the upper filesystem's choice (tmpfs: not for 0 -> 0, yes for
        // 3 -> 3; ext4: always), as under the kernel's overlayfs. A size that changes
        // sets them everywhere, also when the copy was made empty to start with.
        let size_before = match set.size {
            Some(_) => self.stat_node(&t, &node).ok().map(|st| st.size),
            None => None,
        };
        if set.size.is_some() && set.size != size_before {
            set.through_open_file = true;
        }
        let data = match set.size {
            Some(0) => Data::Empty,
            Some(_) => Data::Full,
            // Owner, mode and times only: no data needs to move.
            None => Data::Meta,
        };
        self.copy_up(&mut t, &node, data)?;
        let (dir, name) = self.upper_object(&t, &node)?;
        let dir = sys::borrow(&dir);
        if set.mode.is_some() && node.kind() == FileKind::Symlink {
            return Err(Errno::EOPNOTSUPP);
        }
        if let Some(xname) = &self.override_stat
            && (set.uid.is_some() || set.gid.is_some() || set.mode.is_some())
        {
            // Owner and mode live in the override xattr, not on the file.
            let st = sys::stat_at(dir, &name)?;
            let (u, g, m) = self
                .override_of(&t, &node)
                .unwrap_or((st.uid, st.gid, st.mode));
            let value = layer::override_value(
                set.uid.unwrap_or(u),
                set.gid.unwrap_or(g),
                (st.mode & !0o7777) | (set.mode.unwrap_or(m) & 0o7777),
            );
            let fd = sys::open_path_at(dir, &name)?;
            sys::set_xattr(sys::borrow(&fd), xname, value.as_bytes(), 0)?;
            set.uid = None;
            set.gid = None;
            set.mode = None;
        }
        apply_setattr(dir, &name, &set)?;
        let st = sys::stat_at(dir, &name)?;
        Ok(self.attr_of(&t, &node, &st))
    }
}

/// The recorded name of a node with other names was removed: take another name given
/// through the mount, or mark the name stale (the next lookup, or the index, reaches it).
pub(super) fn switch_to_alias(s: &mut super::node::NodeState, parent: &Arc<Node>, name: &OsStr) {
    s.aliases_mut()
        .retain(|(p, n)| !(Arc::ptr_eq(p, parent) && n == name));
    match s.aliases_mut().pop() {
        Some((p, n)) => {
            s.parent = Some(p);
            s.name = n.into();
            s.stale_name = false;
        }
        None => s.stale_name = true,
    }
}

/// Make the new entry `name` in `dir` with permission bits `init` (`mode` gives a
/// device node's type); a new file comes back open with the access `flags` asked.
pub(super) fn make_entry(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    what: NewEntry<'_>,
    mode: u32,
    init: u32,
) -> SysResult<Option<OwnedFd>> {
    match what {
        NewEntry::File { flags } => {
            let keep = flags & (oflag::ACCMODE | oflag::SYNC | oflag::NONBLOCK);
            let fd = sys::open_at(dir, name, keep | oflag::CREAT | oflag::EXCL, init)?;
            return Ok(Some(fd));
        }
        NewEntry::Dir => sys::mkdir_at(dir, name, init)?,
        NewEntry::Node { rdev } => {
            let kind = FileKind::from_mode(mode);
            sys::mknod_at(dir, name, kind.mode_bits() | init, rdev)?
        }
        NewEntry::Symlink { target } => sys::symlink_at(target, dir, name)?,
    }
    Ok(None)
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
        sys::chmod_at(dir, name, mode & 0o7777)?;
    }
    if let Some(size) = set.size {
        if set.through_open_file {
            let fd = sys::open_at(dir, name, oflag::WRONLY, 0)?;
            sys::truncate_fd(sys::borrow(&fd), size)?;
        } else {
            // As truncate(2): where the system has no truncate by handle (the portable
            // module), the file is opened for writing there.
            sys::truncate_at(dir, name, size)?;
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
