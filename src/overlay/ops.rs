//! Changes to the namespace and to attributes: create, remove, rename, link, setattr.
//! Every change lands in the upper layer in the kernel's format: whiteouts where a
//! lower layer still has a removed name, opaque directories over whiteouts, redirects
//! on renamed lower directories.

use super::copyup::{Data, remove_tree};
use super::lookup::Resolved;
use super::node::Node;
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
        if self.resolve(parent, name)?.is_some() {
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
        let parent = self.node(parent)?;
        let _t = self.tree.read();
        let (upper, slot) = self.slot(&parent, name)?;
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
                if kind == FileKind::CharDevice && rdev == 0 {
                    // It would read back as a whiteout.
                    return Err(Errno::EPERM);
                }
                sys::mknod_at(at_dir, &at_name, kind.mode_bits() | 0o600, rdev)?
            }
            NewEntry::Symlink { target } => sys::symlink_at(target, at_dir, &at_name)?,
        }
        let result = self.finish_new(
            upper, &slot, at_dir, &at_name, name, perm, is_dir, is_symlink, caller,
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
        };
        let node = self.node_for(&parent, name, r, true);
        let attr = self.attr_of(&node, &st);
        let fh = opened.map(|fd| self.insert_file_handle(node, fd));
        Ok((attr, fh))
    }

    /// Give a new entry its owner, mode and markers, then move it into place.
    #[allow(clippy::too_many_arguments)]
    fn finish_new(
        &self,
        upper: &Upper,
        slot: &Slot,
        at_dir: BorrowedFd<'_>,
        at_name: &OsStr,
        name: &OsStr,
        perm: u32,
        is_dir: bool,
        is_symlink: bool,
        caller: Caller,
    ) -> SysResult<()> {
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
            if is_dir && slot.over_whiteout {
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
        let upper = self.upper()?;
        let _t = self.tree.read();
        let node = self.lookup_node(&parent, name, false)?;
        let kind = node.kind();
        match (dir, kind == FileKind::Directory) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if dir && !self.dir_is_empty(&node)? {
            return Err(Errno::ENOTEMPTY);
        }
        self.copy_up(&parent, Data::Full)?;
        let need_whiteout = self.lower_positive(&parent, name)?;
        let pdir = upper.layer.open_dir(&self.upper_path(&parent))?;
        let pdir = sys::borrow(&pdir);
        let in_upper = node.state.read().upper;
        let mut last_link = true;
        if in_upper {
            if !dir && let Ok(st) = sys::stat_at(pdir, name) {
                last_link = st.nlink <= 1;
            }
            self.remove_upper(upper, pdir, name, dir, need_whiteout)?;
        } else {
            self.make_whiteout(pdir, name)?;
        }
        if last_link {
            node.state.write().unlinked = true;
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
        let _t = self.tree.read();
        let (upper, slot) = self.slot(&newparent, name)?;
        self.copy_up(&node, Data::Full)?;
        let src_path = self.upper_path(&node);
        let (sdir, sname) = layer::split_last(&src_path).ok_or(Errno::EINVAL)?;
        let sdir = upper.layer.open_dir(sdir)?;
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
        let _t = self.tree.read();
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
        let upper = self.upper()?;
        let data = if set.size == Some(0) {
            Data::Empty
        } else {
            Data::Full
        };
        self.copy_up(&node, data)?;
        let path = self.upper_path(&node);
        let (dir, name) = match layer::split_last(&path) {
            Some((d, n)) => (upper.layer.open_dir(d)?, n.to_owned()),
            None => (upper.layer.open_dir(b"")?, ".".into()),
        };
        let dir = sys::borrow(&dir);
        if set.uid.is_some() || set.gid.is_some() {
            sys::chown_at(
                dir,
                &name,
                set.uid.unwrap_or(u32::MAX),
                set.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(mode) = set.mode {
            if node.kind() == FileKind::Symlink {
                return Err(Errno::EOPNOTSUPP);
            }
            let fd = sys::open_path_at(dir, &name)?;
            sys::chmod_path_fd(sys::borrow(&fd), mode & 0o7777)?;
        }
        if let Some(size) = set.size {
            let fd = sys::open_at(dir, &name, oflag::WRONLY, 0)?;
            sys::truncate_fd(sys::borrow(&fd), size)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            sys::set_times_at(
                dir,
                &name,
                set.atime.unwrap_or(sys::TimeSet::Omit),
                set.mtime.unwrap_or(sys::TimeSet::Omit),
            )?;
        }
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
        let upper = self.upper()?;
        let p = self.node(parent)?;
        let q = self.node(newparent)?;
        let _t = self.tree.write();
        let src = self.lookup_node(&p, name, false)?;
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
        if let (Some(d), false) = (&dst, exchange) {
            let dst_dir = d.kind() == FileKind::Directory;
            match (src_dir, dst_dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.dir_is_empty(d)? => return Err(Errno::ENOTEMPTY),
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
        self.copy_up(&p, Data::Full)?;
        self.copy_up(&q, Data::Full)?;
        self.copy_up(&src, Data::Full)?;
        if exchange && let Some(d) = &dst {
            self.copy_up(d, Data::Full)?;
        }
        let pdir = upper.layer.open_dir(&self.upper_path(&p))?;
        let qdir = upper.layer.open_dir(&self.upper_path(&q))?;
        let (pdir, qdir) = (sys::borrow(&pdir), sys::borrow(&qdir));
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
        // A pure upper directory moved where a lower still shows a directory must not
        // merge with it.
        let src_pure_upper_dir = src_dir && !has_lower_dir(&src);
        if src_pure_upper_dir && self.lower_positive(&q, newname)? {
            let fd = sys::open_path_at(pdir, name)?;
            sys::set_xattr(sys::borrow(&fd), self.markers.opaque(), b"y", 0)?;
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
