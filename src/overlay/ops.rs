//! Changes to the namespace and to attributes: create, remove, rename, link, setattr.
//! Every change lands in the upper layer in the kernel's format: whiteouts where a
//! lower layer still has a removed name, opaque directories over whiteouts, redirects
//! on renamed lower directories.

use super::copyup::{Data, remove_tree};
use super::dircache::LayerId;
use super::ids::{HandleId, NodeId};
use super::lookup::Resolved;
use super::node::Node;
use super::splice::{apply_setattr, apply_setattr_fd};
use super::{Attr, Caller, Overlay, SetAttr, Upper, check_name};
use crate::layer;
use crate::sys::{self, Errno, FileKind, Stat, SysResult, oflag, rename_flag};
use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// What to make for a new name.
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
}

impl Overlay {
    /// Copy the parent up and check that `name` is free in the union.
    fn slot(&self, parent: &Arc<Node>, name: &OsStr) -> SysResult<(&Upper, Slot)> {
        check_name(name)?;
        let upper = self.upper()?;
        if parent.kind() != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        // The kernel looked the name up and found it free before asking (it holds the
        // directory's lock); an upper entry would still fail the O_EXCL create below.
        if self.splice_target(parent, name).is_some() {
            return Err(Errno::EEXIST);
        }
        self.copy_up(parent, Data::Full)?;
        let dir = self.dir_fd(LayerId::Upper, &self.upper_path(parent))?;
        let over_whiteout = match sys::stat_at(sys::borrow(&dir), name) {
            Ok(st) if st.is_whiteout_device() => true,
            Ok(_) => false,
            Err(Errno::ENOENT) => false,
            Err(e) => return Err(e),
        };
        Ok((upper, Slot { dir, over_whiteout }))
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
        let _t = self.tree.read_recursive();
        if let Some(at) = parent.state.read().splice().cloned() {
            return self.splice_create(&parent, &at, name, mode, what, caller);
        }
        let (upper, slot) = self.slot(&parent, name)?;
        // A directory made in a merged directory (or over a whiteout) is opaque, as
        // the kernel makes it: nothing below can ever merge into it.
        let opaque = matches!(what, NewEntry::Dir)
            && (slot.over_whiteout || !parent.state.read().lowers.is_empty());
        let work = sys::borrow(&upper.work);
        let (at_dir, at_name) = if slot.over_whiteout {
            (work, self.temp_name())
        } else {
            (sys::borrow(&slot.dir), name.to_owned())
        };
        let perm = mode & 0o7777 & !caller.umask;
        // Made with its final mode unless it has set-id or sticky bits, which the
        // chown that follows would clear: then it gets them after.
        let init = if perm & 0o7000 == 0 { perm } else { 0o600 };
        let mut opened = None;
        let is_dir = matches!(what, NewEntry::Dir);
        let is_symlink = matches!(what, NewEntry::Symlink { .. });
        match what {
            NewEntry::File { flags } => {
                let fd = sys::open_at(
                    at_dir,
                    &at_name,
                    (flags & (oflag::ACCMODE | oflag::SYNC | oflag::NONBLOCK))
                        | oflag::CREAT
                        | oflag::EXCL,
                    init,
                )?;
                opened = Some(fd);
            }
            NewEntry::Dir => sys::mkdir_at(at_dir, &at_name, init)?,
            NewEntry::Node { rdev } => {
                let kind = FileKind::from_mode(mode);
                sys::mknod_at(at_dir, &at_name, kind.mode_bits() | init, rdev)?
            }
            NewEntry::Symlink { target } => sys::symlink_at(target, at_dir, &at_name)?,
        }
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
        let st = sys::stat_at(sys::borrow(&slot.dir), name)?;
        let r = Resolved {
            stat: st,
            upper: true,
            metacopy: false,
            lowers: Default::default(),
            ino: self.fold_ino(upper.layer.dev, st.ino),
            nlink_adjust: 0,
            index: None,
        };
        let node = self.node_for(&parent, name, r, true);
        if !is_dir {
            node.state.write().no_capability = true;
        }
        let attr = self.attr_of(&node, &st);
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
            let value = format!("{}:{}:0{:o}", caller.uid, gid, (st.mode & !0o7777) | perm);
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
        if !is_symlink && (special || opaque || add_sgid) {
            let fd = sys::open_path_at(at_dir, at_name)?;
            if special || add_sgid {
                let keep_sgid = if is_dir && parent_sgid { 0o2000 } else { 0 };
                sys::chmod_path_fd(sys::borrow(&fd), perm | keep_sgid)?;
            }
            if opaque {
                sys::set_xattr(sys::borrow(&fd), self.markers.opaque(), b"y", 0)?;
            }
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

    /// Remove a name (`dir`: rmdir semantics).
    pub fn remove(&self, parent: NodeId, name: &OsStr, dir: bool) -> SysResult<()> {
        check_name(name)?;
        let parent = self.node(parent)?;
        let _t = self.tree.read_recursive();
        if self.splice_target(&parent, name).is_some() {
            // A mount point (also one nested in another splice).
            return Err(Errno::EBUSY);
        }
        if let Some(at) = parent.state.read().splice().cloned() {
            return self.splice_remove(&at, name, dir);
        }
        let upper = self.upper()?;
        let (node, st) = self.lookup_node(&parent, name, false)?;
        let kind = node.kind();
        match (dir, kind == FileKind::Directory) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if dir && !self.dir_is_empty(&node, self.lower_positive(&parent, name)?)? {
            return Err(Errno::ENOTEMPTY);
        }
        if dir {
            // Cached fds of upper directories below it would outlive it.
            self.dirs.drop_upper();
        }
        self.copy_up(&parent, Data::Full)?;
        let need_whiteout = self.lower_positive(&parent, name)?;
        let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(&parent))?;
        let pdir = sys::borrow(&pdir);
        // This name (not just the node: hard links) may be in the upper or only below.
        let name_in_upper = matches!(sys::stat_at(pdir, name), Ok(st) if !st.is_whiteout_device());
        let mut last_link = true;
        let mut removed = None;
        if name_in_upper {
            removed = sys::stat_at(pdir, name).ok();
            if !dir && let Some(st) = &removed {
                last_link = st.nlink as i64 + node.state.read().nlink_adjust() <= 1;
            }
            let emptied = self.remove_upper(upper, pdir, name, dir, need_whiteout)?;
            if dir {
                // A directory as it was after its whiteouts were cleared (which sets
                // its times), just before it went.
                removed = emptied;
            }
        } else {
            if !dir && st.nlink > 1 {
                // One name of a lower hard link goes: keep the count in the index.
                self.index_lower_link(&node)?;
            }
            let (upper_node, adjust) = {
                let s = node.state.read();
                (s.upper, s.nlink_adjust())
            };
            if upper_node && adjust > 0 {
                // A lower-only name of a copied-up hard link: one name fewer.
                last_link = false;
                let (d, n) = self.upper_object(&node)?;
                let a = self.add_nlink_adjust(sys::borrow(&d), &n, -1);
                node.state.write().set_nlink_adjust(a);
            }
            self.make_whiteout(pdir, name)?;
        }
        let mut s = node.state.write();
        if last_link {
            s.unlinked = true;
            s.set_removed(removed);
        } else if s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, &parent)) && *s.name == *name {
            switch_to_alias(&mut s, &parent, name);
        } else {
            s.aliases_mut()
                .retain(|(p, n)| !(Arc::ptr_eq(p, &parent) && n == name));
        }
        Ok(())
    }

    /// Remove an upper entry, leaving a whiteout atomically when asked. Returns a
    /// directory's attributes taken once it was emptied, just before its removal.
    fn remove_upper(
        &self,
        upper: &Upper,
        pdir: BorrowedFd<'_>,
        name: &OsStr,
        dir: bool,
        whiteout: bool,
    ) -> SysResult<Option<Stat>> {
        if !dir && !whiteout {
            return sys::unlink_at(pdir, name, false).map(|()| None);
        }
        // Move the entry into the work dir (leaving a whiteout in one step when
        // needed), then delete it there with whatever whiteouts it holds.
        let work = sys::borrow(&upper.work);
        let tmp = self.temp_name();
        let flags = if whiteout { rename_flag::WHITEOUT } else { 0 };
        match sys::rename_at(pdir, name, work, &tmp, flags) {
            Ok(()) => self.counters.whiteouts(whiteout as u64),
            Err(e) if whiteout && (e == Errno::EINVAL || e == Errno::EPERM) => {
                sys::rename_at(pdir, name, work, &tmp, 0)?;
                self.make_whiteout(pdir, name)?;
            }
            Err(e) => return Err(e),
        }
        if !dir {
            return remove_tree(work, &tmp).map(|()| None);
        }
        let fd = sys::open_at(work, &tmp, oflag::RDONLY | oflag::DIRECTORY, 0)?;
        for e in sys::read_dir(sys::borrow(&fd))? {
            remove_tree(sys::borrow(&fd), &e.name)?;
        }
        let emptied = sys::stat_fd(sys::borrow(&fd)).ok();
        sys::unlink_at(work, &tmp, true)?;
        Ok(emptied)
    }

    fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        sys::mknod_at(dir, name, FileKind::CharDevice.mode_bits(), 0)?;
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
        let _t = self.tree.read_recursive();
        let from = node.state.read().splice().cloned();
        let to = newparent.state.read().splice().cloned();
        match (from, to) {
            (Some(a), Some(b)) => {
                check_name(name)?;
                let st = self.splice_link(&a, &b, name)?;
                self.nodes.count_lookup(&node);
                return Ok(self.attr_of(&node, &st));
            }
            (None, None) => {}
            _ => return Err(Errno::EXDEV),
        }
        let (upper, slot) = self.slot(&newparent, name)?;
        self.copy_up(&node, Data::Meta)?;
        if node.state.read().metacopy {
            // The new name lies elsewhere: record where the data is from the root,
            // as the kernel does before linking a metadata-only copy.
            let (sdir, sname) = self.upper_object(&node)?;
            self.set_redirect(&node, &newparent, false, sys::borrow(&sdir), &sname)?;
        }
        let (sdir, sname) = self.upper_object(&node)?;
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
        node.state
            .write()
            .aliases_mut()
            .push((newparent.clone(), name.to_owned()));
        self.nodes.count_lookup(&node);
        let st = sys::stat_at(sys::borrow(&slot.dir), name)?;
        Ok(self.attr_of(&node, &st))
    }

    /// Change attributes, copying up first.
    pub fn setattr(&self, ino: NodeId, set: SetAttr) -> SysResult<Attr> {
        let node = self.node(ino)?;
        let _t = self.tree.read_recursive();
        let changes = set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.size.is_some()
            || set.atime.is_some()
            || set.mtime.is_some();
        if !changes {
            let st = self.stat_node(&node)?;
            return Ok(self.attr_of(&node, &st));
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
        if let Some(at) = node.state.read().splice().cloned() {
            let st = self.splice_setattr(&at, &set)?;
            return Ok(self.attr_of(&node, &st));
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
            return Ok(self.attr_of(&node, &st));
        }
        let mut set = set;
        // A truncate to the size the file has is still passed on: whether it sets the
        // times is the upper filesystem's choice (tmpfs: not for 0 -> 0, yes for
        // 3 -> 3; ext4: always), as under the kernel's overlayfs. A size that changes
        // sets them everywhere, also when the copy was made empty to start with.
        let size_before = match set.size {
            Some(_) => self.stat_node(&node).ok().map(|st| st.size),
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
        self.copy_up(&node, data)?;
        let (dir, name) = self.upper_object(&node)?;
        let dir = sys::borrow(&dir);
        if set.mode.is_some() && node.kind() == FileKind::Symlink {
            return Err(Errno::EOPNOTSUPP);
        }
        if let Some(xname) = &self.override_stat
            && (set.uid.is_some() || set.gid.is_some() || set.mode.is_some())
        {
            // Owner and mode live in the override xattr, not on the file.
            let st = sys::stat_at(dir, &name)?;
            let (u, g, m) = self.override_of(&node).unwrap_or((st.uid, st.gid, st.mode));
            let value = format!(
                "{}:{}:0{:o}",
                set.uid.unwrap_or(u),
                set.gid.unwrap_or(g),
                (st.mode & !0o7777) | (set.mode.unwrap_or(m) & 0o7777)
            );
            let fd = sys::open_path_at(dir, &name)?;
            sys::set_xattr(sys::borrow(&fd), xname, value.as_bytes(), 0)?;
            set.uid = None;
            set.gid = None;
            set.mode = None;
        }
        apply_setattr(dir, &name, &set)?;
        let st = sys::stat_at(dir, &name)?;
        Ok(self.attr_of(&node, &st))
    }

    /// Rename with `renameat2` semantics (`NOREPLACE`, `EXCHANGE`).
    pub fn rename(
        &self,
        parent: NodeId,
        name: &OsStr,
        newparent: NodeId,
        newname: &OsStr,
        flags: u32,
    ) -> SysResult<()> {
        check_name(name)?;
        check_name(newname)?;
        if flags & rename_flag::WHITEOUT != 0 {
            return Err(Errno::EINVAL);
        }
        let exchange = flags & rename_flag::EXCHANGE != 0;
        let noreplace = flags & rename_flag::NOREPLACE != 0;
        let p = self.node(parent)?;
        let q = self.node(newparent)?;
        let _t = self.tree.write();
        let (src, _) = self.lookup_node(&p, name, false)?;
        let is_splice_root = |n: &Node| n.state.read().splice().is_some_and(|a| a.path.is_empty());
        if is_splice_root(&src)
            || self.splice_target(&q, newname).is_some()
            || self.holds_splice_target(&src)
        {
            // A mount point moves with its mount, not alone.
            return Err(Errno::EBUSY);
        }
        let (ps, qs) = (
            p.state.read().splice().cloned(),
            q.state.read().splice().cloned(),
        );
        match (ps, qs) {
            (Some(a), Some(b)) => {
                self.splice_rename(&a, name, &b, newname, flags)?;
                let (from, to) = (layer::join(&a.path, name), layer::join(&b.path, newname));
                self.splice_moved(a.id, &from, &to, exchange);
                let mut s = src.state.write();
                s.parent = Some(q.clone());
                s.name = newname.into();
                return Ok(());
            }
            (None, None) => {}
            _ => return Err(Errno::EXDEV),
        }
        self.upper()?;
        let dst = self
            .resolve(&q, newname)?
            .map(|r| self.node_for(&q, newname, r, false));
        if let Some(d) = &dst {
            if Arc::ptr_eq(d, &src) {
                return Ok(());
            }
            if noreplace {
                return Err(Errno::EEXIST);
            }
        } else if exchange {
            return Err(Errno::ENOENT);
        }
        let src_dir = src.kind() == FileKind::Directory;
        // Moving a directory below itself.
        if src_dir
            || dst
                .as_ref()
                .is_some_and(|d| d.kind() == FileKind::Directory)
        {
            let moving = if src_dir {
                &src
            } else {
                dst.as_ref().unwrap_or(&src)
            };
            let target_parent = if src_dir { &q } else { &p };
            if is_ancestor(moving, target_parent) {
                return Err(Errno::EINVAL);
            }
        }
        // The order of the kernel: types (checked by the VFS), then whether the
        // directories may move (EXDEV), then emptiness of a replaced directory.
        if let (Some(d), false) = (&dst, exchange) {
            match (src_dir, d.kind() == FileKind::Directory) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                _ => {}
            }
        }
        let has_lower_dir = |n: &Node| {
            let s = n.state.read();
            s.kind == FileKind::Directory && !s.lowers.is_empty()
        };
        if !self.redirect_dir
            && (has_lower_dir(&src) || (exchange && dst.as_ref().is_some_and(|d| has_lower_dir(d))))
        {
            return Err(Errno::EXDEV);
        }
        // A replaced directory with lower content must look empty in the union; one of
        // the upper alone is left to the upper filesystem's rename (after the copy-ups,
        // as the kernel orders it).
        let dst_merged_dir = dst.as_ref().is_some_and(|d| has_lower_dir(d));
        if let (Some(d), false) = (&dst, exchange)
            && src_dir
            && dst_merged_dir
            && !self.dir_is_empty(d, true)?
        {
            return Err(Errno::ENOTEMPTY);
        }
        // Whether the replaced file loses its last name (a hard link keeps others).
        let dst_stat = match &dst {
            Some(d) if !exchange => self.stat_node(d).ok(),
            _ => None,
        };
        let dst_last_link = match (&dst, &dst_stat) {
            (Some(d), Some(st)) if d.kind() != FileKind::Directory => {
                self.attr_of(d, st).nlink <= 1
            }
            _ => true,
        };
        if src_dir
            || dst
                .as_ref()
                .is_some_and(|d| d.kind() == FileKind::Directory)
        {
            // Upper paths of directories change: cached fds must be looked up again.
            self.dirs.drop_upper();
        }
        self.copy_up(&p, Data::Full)?;
        self.copy_up(&q, Data::Full)?;
        self.copy_up(&src, Data::Meta)?;
        if exchange && let Some(d) = &dst {
            self.copy_up(d, Data::Meta)?;
        }
        let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(&p))?;
        let qdir = self.dir_fd(LayerId::Upper, &self.upper_path(&q))?;
        let (pdir, qdir) = (sys::borrow(&pdir), sys::borrow(&qdir));
        let dst_name_was_upper = dst.is_some()
            && matches!(sys::stat_at(qdir, newname), Ok(st) if !st.is_whiteout_device());
        // A hard link copied up through another name: this name joins the copy first.
        self.link_name_up(&src, pdir, name)?;
        if exchange && let Some(d) = &dst {
            self.link_name_up(d, qdir, newname)?;
        }
        let samedir = Arc::ptr_eq(&p, &q);
        // What moves with its lower content left behind: a merged or lower directory,
        // or a metadata-only copy whose data is still in the lower file.
        let needs_redirect = |n: &Node| has_lower_dir(n) || n.state.read().metacopy;
        if needs_redirect(&src) {
            self.set_redirect(&src, &q, samedir, pdir, name)?;
        }
        if exchange
            && let Some(d) = &dst
            && needs_redirect(d)
        {
            self.set_redirect(d, &p, samedir, qdir, newname)?;
        }
        // A pure upper directory moved into a merged directory becomes opaque, so that
        // lower content appearing at its new name can never merge into it (the kernel's
        // rule, which also keeps the two readings of the upper identical).
        let merged_parent = |n: &Node| !n.state.read().lowers.is_empty();
        if src_dir && !has_lower_dir(&src) && merged_parent(&q) {
            self.set_opaque(pdir, name)?;
        }
        if exchange
            && let Some(d) = &dst
            && d.kind() == FileKind::Directory
            && !has_lower_dir(d)
            && merged_parent(&p)
        {
            self.set_opaque(qdir, newname)?;
        }
        if exchange {
            sys::rename_at(pdir, name, qdir, newname, rename_flag::EXCHANGE)?;
        } else {
            // A merged directory being replaced (empty in the union) may still hold
            // whiteouts in the upper.
            if let Some(d) = &dst
                && dst_merged_dir
                && d.state.read().upper
            {
                let fd = sys::open_at(qdir, newname, oflag::RDONLY | oflag::DIRECTORY, 0)?;
                for e in sys::read_dir(sys::borrow(&fd))? {
                    remove_tree(sys::borrow(&fd), &e.name)?;
                }
            }
            let whiteout = self.lower_positive(&p, name)?;
            let target_is_whiteout = dst.is_none()
                && matches!(sys::stat_at(qdir, newname), Ok(st) if st.is_whiteout_device());
            if target_is_whiteout {
                // Swap with the whiteout: it lands at the old name, which is where one
                // is needed if a lower layer still has that name; else remove it.
                sys::rename_at(pdir, name, qdir, newname, rename_flag::EXCHANGE)?;
                if !whiteout {
                    sys::unlink_at(pdir, name, false)?;
                }
            } else {
                let wflag = if whiteout { rename_flag::WHITEOUT } else { 0 };
                match sys::rename_at(pdir, name, qdir, newname, wflag) {
                    Ok(()) => self.counters.whiteouts(whiteout as u64),
                    Err(e) if whiteout && (e == Errno::EINVAL || e == Errno::EPERM) => {
                        sys::rename_at(pdir, name, qdir, newname, 0)?;
                        self.make_whiteout(pdir, name)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        {
            let mut s = src.state.write();
            let recorded =
                s.parent.as_ref().is_some_and(|x| Arc::ptr_eq(x, &p)) && *s.name == *name;
            if !recorded && let Some(old) = s.parent.clone() {
                // An alias of a hard link moved: the recorded name stays valid as an alias.
                let old_name = s.name.clone();
                s.aliases_mut().push((old, old_name.into()));
            }
            s.aliases_mut()
                .retain(|(x, n)| !(Arc::ptr_eq(x, &p) && n == name));
            s.parent = Some(q.clone());
            s.name = newname.into();
        }
        if let Some(d) = dst {
            let mut s = d.state.write();
            let recorded =
                s.parent.as_ref().is_some_and(|x| Arc::ptr_eq(x, &q)) && *s.name == *newname;
            if exchange {
                if !recorded && let Some(old) = s.parent.clone() {
                    // Reached through another name of a hard link: the recorded one stays.
                    let old_name = s.name.clone();
                    s.aliases_mut().push((old, old_name.into()));
                }
                s.aliases_mut()
                    .retain(|(x, n)| !(Arc::ptr_eq(x, &q) && n == newname));
                s.parent = Some(p.clone());
                s.name = name.into();
            } else if dst_last_link {
                s.unlinked = true;
                if s.upper {
                    s.set_removed(dst_stat);
                }
            } else {
                // Its other names live on; the replaced one may have been the recorded one.
                if recorded {
                    switch_to_alias(&mut s, &q, newname);
                } else {
                    s.aliases_mut()
                        .retain(|(x, n)| !(Arc::ptr_eq(x, &q) && n == newname));
                }
                if !dst_name_was_upper {
                    drop(s);
                    // One name of a lower hard link went: keep the count in the index.
                    self.index_lower_link(&d)?;
                    if d.state.read().nlink_adjust() <= 0 {
                        return Ok(());
                    }
                    if let Ok((dd, dn)) = self.upper_object(&d) {
                        let a = self.add_nlink_adjust(sys::borrow(&dd), &dn, -1);
                        d.state.write().set_nlink_adjust(a);
                    }
                }
            }
        }
        Ok(())
    }

    /// Make sure `name` in the upper directory `dir` is a name of `node`'s copy: a
    /// lower hard link whose inode was copied up through another name is linked here.
    fn link_name_up(&self, node: &Node, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        if node.kind() == FileKind::Directory
            || matches!(sys::stat_at(dir, name), Ok(st) if !st.is_whiteout_device())
        {
            return Ok(());
        }
        let (sdir, sname) = self.upper_object(node)?;
        self.link_upper_name(node, (sys::borrow(&sdir), &sname), dir, name)
    }

    fn set_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        let fd = sys::open_path_at(dir, name)?;
        sys::set_xattr(sys::borrow(&fd), self.markers.opaque(), b"y", 0)
    }

    /// Record where a renamed directory's lower content lives (the kernel's
    /// `redirect_dir` format: the old name within the same parent, else a path from
    /// the layer root).
    fn set_redirect(
        &self,
        dir: &Node,
        new_parent: &Node,
        samedir: bool,
        at: BorrowedFd<'_>,
        name: &OsStr,
    ) -> SysResult<()> {
        let Some(first) = self.first_lower(dir) else {
            return Ok(());
        };
        let (lparent, lname) = layer::split_last(&first.path).ok_or(Errno::EINVAL)?;
        let parent_same_in_lower = new_parent
            .state
            .read()
            .lowers
            .dir_stack()
            .iter()
            .any(|l| l.layer == first.layer && l.path == lparent);
        let fd = sys::open_path_at(at, name)?;
        // A path from the root stays true wherever the entry moves (the kernel keeps it).
        let own = sys::get_xattr(sys::borrow(&fd), self.markers.redirect()).ok();
        if own.as_ref().is_some_and(|r| r.starts_with(b"/")) {
            return Ok(());
        }
        // A file whose lower inode has several names may get upper names in other
        // directories (sharing this xattr): only a path from the root fits them all
        // (the kernel's rule).
        let lower_hard_link = dir.kind() != FileKind::Directory
            && self
                .stat_in(LayerId::Lower(first.layer), &first.path)
                .is_ok_and(|st| st.nlink > 1);
        let value = if samedir && parent_same_in_lower && !lower_hard_link {
            lname.as_bytes().to_vec()
        } else {
            let mut v = b"/".to_vec();
            v.extend_from_slice(&self.top_lower_path(dir, own)?);
            v
        };
        sys::set_xattr(sys::borrow(&fd), self.markers.redirect(), &value, 0)
    }

    /// Where a lookup of `node` searches the topmost lower layer: its entry there if it
    /// has one, else its parent's such path with its name (or the redirect its upper entry
    /// records, `own` for the node itself). An absolute redirect must hold this path, as
    /// the kernel's does (it builds it from the union's names and redirects the same way):
    /// the path of the entry in a deeper layer can be hidden by a whiteout or a rename in
    /// a layer above, which a lookup walks first.
    fn top_lower_path(&self, node: &Node, own: Option<Vec<u8>>) -> SysResult<layer::RelPath> {
        let mut tail: Vec<Vec<u8>> = Vec::new();
        let mut redirect = own;
        let mut cur: Option<Arc<Node>> = None;
        let prefix = loop {
            let n = cur.as_deref().unwrap_or(node);
            if let Some(l) = self.first_lower(n).filter(|l| l.layer.get() == 0) {
                break l.path;
            }
            let (parent, name) = {
                let s = n.state.read();
                (s.parent.clone(), s.name.as_bytes().to_vec())
            };
            let Some(parent) = parent else {
                break layer::RelPath::new();
            };
            match redirect.take() {
                Some(r) => match r.strip_prefix(b"/") {
                    Some(abs) => break abs.to_vec(),
                    None => tail.push(r),
                },
                None => tail.push(name),
            }
            if parent.state.read().upper && parent.parent().is_some() {
                let path = self.upper_path(&parent);
                let fd = self.dir_fd(LayerId::Upper, &path)?;
                redirect = self.upper()?.layer.redirect_of(sys::borrow(&fd));
            }
            cur = Some(parent);
        };
        Ok(tail
            .iter()
            .rev()
            .fold(prefix, |p, c| layer::join(&p, OsStr::from_bytes(c))))
    }
}

/// The recorded name of a node with other names was removed: take another name given
/// through the mount, or mark the name stale (the next lookup, or the index, reaches it).
fn switch_to_alias(s: &mut super::node::NodeState, parent: &Arc<Node>, name: &OsStr) {
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

/// Whether `a` is `b` or one of its ancestors.
fn is_ancestor(a: &Arc<Node>, b: &Arc<Node>) -> bool {
    let mut cur = Some(b.clone());
    while let Some(n) = cur {
        if Arc::ptr_eq(&n, a) {
            return true;
        }
        cur = n.parent();
    }
    false
}
