//! Changes to the namespace and to attributes: create, remove, rename, link, setattr.
//! Every change lands in the upper layer in the kernel's format: whiteouts where a
//! lower layer still has a removed name, opaque directories over whiteouts, redirects
//! on renamed lower directories.

use super::copyup::{Data, remove_tree};
use super::lookup::Resolved;
use super::node::Node;
use super::splice::apply_setattr;
use super::{Attr, Caller, Overlay, SetAttr, Upper, check_name};
use crate::layer;
use crate::sys::{self, Errno, FileKind, SysResult, oflag, rename_flag};
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
    dir: OwnedFd,
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
        if self.splice_target(parent, name).is_some() || self.resolve(parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        self.copy_up(parent, Data::Full)?;
        let dir = upper.layer.open_dir(&self.upper_path(parent))?;
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
        parent: u64,
        name: &OsStr,
        mode: u32,
        what: NewEntry<'_>,
        caller: Caller,
    ) -> SysResult<(Attr, Option<u64>)> {
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
        if let Some(at) = parent.state.read().splice.clone() {
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
                    0o600,
                )?;
                opened = Some(fd);
            }
            NewEntry::Dir => sys::mkdir_at(at_dir, &at_name, 0o700)?,
            NewEntry::Node { rdev } => {
                let kind = FileKind::from_mode(mode);
                sys::mknod_at(at_dir, &at_name, kind.mode_bits() | 0o600, rdev)?
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
            lowers: Vec::new(),
            ino: self.fold_ino(upper.layer.dev, st.ino),
            nlink_adjust: 0,
            index: None,
        };
        let node = self.node_for(&parent, name, r, true);
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
        // A setgid directory gives its group (the filesystem did that already).
        let pst = sys::stat_fd(sys::borrow(&slot.dir))?;
        let gid = if pst.mode & 0o2000 != 0 {
            u32::MAX
        } else {
            caller.gid
        };
        sys::chown_at(at_dir, at_name, caller.uid, gid)?;
        if !is_symlink {
            let fd = sys::open_path_at(at_dir, at_name)?;
            let keep_sgid = if is_dir && pst.mode & 0o2000 != 0 {
                0o2000
            } else {
                0
            };
            sys::chmod_path_fd(sys::borrow(&fd), perm | keep_sgid)?;
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
    pub fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> SysResult<()> {
        check_name(name)?;
        let parent = self.node(parent)?;
        let _t = self.tree.read_recursive();
        if self.splice_target(&parent, name).is_some() {
            // A mount point (also one nested in another splice).
            return Err(Errno::EBUSY);
        }
        if let Some(at) = parent.state.read().splice.clone() {
            return self.splice_remove(&at, name, dir);
        }
        let upper = self.upper()?;
        let (node, _) = self.lookup_node(&parent, name, false)?;
        let kind = node.kind();
        match (dir, kind == FileKind::Directory) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if dir && !self.dir_is_empty(&node)? {
            return Err(Errno::ENOTEMPTY);
        }
        if dir {
            // Cached fds of upper directories below it would outlive it.
            self.dirs.drop_upper();
        }
        self.copy_up(&parent, Data::Full)?;
        let need_whiteout = self.lower_positive(&parent, name)?;
        let pdir = upper.layer.open_dir(&self.upper_path(&parent))?;
        let pdir = sys::borrow(&pdir);
        // This name (not just the node: hard links) may be in the upper or only below.
        let name_in_upper = matches!(sys::stat_at(pdir, name), Ok(st) if !st.is_whiteout_device());
        let mut last_link = true;
        if name_in_upper {
            if !dir && let Ok(st) = sys::stat_at(pdir, name) {
                last_link = st.nlink as i64 + node.state.read().nlink_adjust <= 1;
            }
            self.remove_upper(upper, pdir, name, dir, need_whiteout)?;
        } else {
            let (upper_node, adjust) = {
                let s = node.state.read();
                (s.upper, s.nlink_adjust)
            };
            if upper_node && adjust > 0 {
                // A lower-only name of a copied-up hard link: one name fewer.
                last_link = false;
                let (d, n) = self.upper_object(&node)?;
                let a = self.add_nlink_adjust(sys::borrow(&d), &n, -1);
                node.state.write().nlink_adjust = a;
            }
            self.make_whiteout(pdir, name)?;
        }
        let mut s = node.state.write();
        if last_link {
            s.unlinked = true;
        } else if s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, &parent)) && s.name == name {
            s.stale_name = true;
        }
        Ok(())
    }

    /// Remove an upper entry, leaving a whiteout atomically when asked.
    fn remove_upper(
        &self,
        upper: &Upper,
        pdir: BorrowedFd<'_>,
        name: &OsStr,
        dir: bool,
        whiteout: bool,
    ) -> SysResult<()> {
        if !dir && !whiteout {
            return sys::unlink_at(pdir, name, false);
        }
        // Move the entry into the work dir (leaving a whiteout in one step when
        // needed), then delete it there with whatever whiteouts it holds.
        let work = sys::borrow(&upper.work);
        let tmp = self.temp_name();
        let flags = if whiteout { rename_flag::WHITEOUT } else { 0 };
        match sys::rename_at(pdir, name, work, &tmp, flags) {
            Ok(()) => {}
            Err(e) if whiteout && (e == Errno::EINVAL || e == Errno::EPERM) => {
                sys::rename_at(pdir, name, work, &tmp, 0)?;
                self.make_whiteout(pdir, name)?;
            }
            Err(e) => return Err(e),
        }
        remove_tree(work, &tmp)
    }

    fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        sys::mknod_at(dir, name, FileKind::CharDevice.mode_bits(), 0)
    }

    /// Hard-link `ino` as `name` in `newparent`.
    pub fn link(&self, ino: u64, newparent: u64, name: &OsStr) -> SysResult<Attr> {
        let node = self.node(ino)?;
        if node.kind() == FileKind::Directory {
            return Err(Errno::EPERM);
        }
        let newparent = self.node(newparent)?;
        let _t = self.tree.read_recursive();
        let from = node.state.read().splice.clone();
        let to = newparent.state.read().splice.clone();
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
        self.copy_up(&node, Data::Full)?;
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
        self.nodes.count_lookup(&node);
        let st = sys::stat_at(sys::borrow(&slot.dir), name)?;
        Ok(self.attr_of(&node, &st))
    }

    /// Change attributes, copying up first.
    pub fn setattr(&self, ino: u64, set: SetAttr) -> SysResult<Attr> {
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
        if let Some(at) = node.state.read().splice.clone() {
            let st = self.splice_setattr(&at, &set)?;
            return Ok(self.attr_of(&node, &st));
        }
        self.upper()?;
        let mut set = set;
        // truncate(2) to the size the file already has changes nothing, times
        // included (an ftruncate of the copy would set them).
        if set
            .size
            .is_some_and(|s| self.stat_node(&node).is_ok_and(|st| st.size == s))
        {
            set.size = None;
        }
        let data = if set.size == Some(0) {
            Data::Empty
        } else {
            Data::Full
        };
        self.copy_up(&node, data)?;
        let (dir, name) = self.upper_object(&node)?;
        let dir = sys::borrow(&dir);
        if set.mode.is_some() && node.kind() == FileKind::Symlink {
            return Err(Errno::EOPNOTSUPP);
        }
        apply_setattr(dir, &name, &set)?;
        let st = sys::stat_at(dir, &name)?;
        Ok(self.attr_of(&node, &st))
    }

    /// Rename with `renameat2` semantics (`NOREPLACE`, `EXCHANGE`).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
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
        let is_splice_root = |n: &Node| {
            n.state
                .read()
                .splice
                .as_ref()
                .is_some_and(|a| a.path.is_empty())
        };
        if is_splice_root(&src)
            || self.splice_target(&q, newname).is_some()
            || self.holds_splice_target(&src)
        {
            // A mount point moves with its mount, not alone.
            return Err(Errno::EBUSY);
        }
        let (ps, qs) = (p.state.read().splice.clone(), q.state.read().splice.clone());
        match (ps, qs) {
            (Some(a), Some(b)) => {
                self.splice_rename(&a, name, &b, newname, flags)?;
                let (from, to) = (layer::join(&a.path, name), layer::join(&b.path, newname));
                self.splice_moved(a.id, &from, &to, exchange);
                let mut s = src.state.write();
                s.parent = Some(q.clone());
                s.name = newname.to_owned();
                return Ok(());
            }
            (None, None) => {}
            _ => return Err(Errno::EXDEV),
        }
        let upper = self.upper()?;
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
        if let (Some(d), false) = (&dst, exchange)
            && src_dir
            && !self.dir_is_empty(d)?
        {
            return Err(Errno::ENOTEMPTY);
        }
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
        self.copy_up(&src, Data::Full)?;
        if exchange && let Some(d) = &dst {
            self.copy_up(d, Data::Full)?;
        }
        let pdir = upper.layer.open_dir(&self.upper_path(&p))?;
        let qdir = upper.layer.open_dir(&self.upper_path(&q))?;
        let (pdir, qdir) = (sys::borrow(&pdir), sys::borrow(&qdir));
        // A hard link copied up through another name: this name joins the copy first.
        self.link_name_up(&src, pdir, name)?;
        if exchange && let Some(d) = &dst {
            self.link_name_up(d, qdir, newname)?;
        }
        let samedir = Arc::ptr_eq(&p, &q);
        if has_lower_dir(&src) {
            self.set_redirect(&src, &q, samedir, pdir, name)?;
        }
        if exchange
            && let Some(d) = &dst
            && has_lower_dir(d)
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
            // An upper directory being replaced may still hold whiteouts.
            if let Some(d) = &dst
                && d.kind() == FileKind::Directory
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
                    Ok(()) => {}
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
            s.parent = Some(q.clone());
            s.name = newname.to_owned();
        }
        if let Some(d) = dst {
            let mut s = d.state.write();
            if exchange {
                s.parent = Some(p.clone());
                s.name = name.to_owned();
            } else {
                s.unlinked = true;
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
        sys::link_at(sys::borrow(&sdir), &sname, dir, name)?;
        // One more upper name for a name that was only below.
        let adjust = self.add_nlink_adjust(dir, name, -1);
        node.state.write().nlink_adjust = adjust;
        Ok(())
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
        let Some(first) = dir.state.read().lowers.first().cloned() else {
            return Ok(());
        };
        let (lparent, lname) = layer::split_last(&first.path).ok_or(Errno::EINVAL)?;
        let parent_same_in_lower = new_parent
            .state
            .read()
            .lowers
            .iter()
            .any(|l| l.layer == first.layer && l.path == lparent);
        let value = if samedir && parent_same_in_lower {
            lname.as_bytes().to_vec()
        } else {
            let mut v = b"/".to_vec();
            v.extend_from_slice(&first.path);
            v
        };
        let fd = sys::open_path_at(at, name)?;
        sys::set_xattr(sys::borrow(&fd), self.markers.redirect(), &value, 0)
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
