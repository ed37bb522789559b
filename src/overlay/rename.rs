//! Rename: the one operation that changes upper paths, and so the one that takes the
//! tree lock for writing — for the move only. It runs in two phases:
//!
//! 1. prepare, with the lock held for reading (and let go while data is copied): look
//!    both names up, check what the kernel checks, and copy up all the move needs
//!    (both parents, the source, an exchanged target, the index copy of a replaced
//!    lower hard link);
//! 2. move, with the lock held for writing: look both names up again and check again;
//!    if another operation got in between and something is not in the upper layer
//!    any more, back to 1; else move.
//!
//! Nothing that copies data accepts the write guard (see `tree`), so a stat never
//! waits for a copy made for a rename.

use super::copyup::{Data, remove_tree};
use super::dircache::LayerId;
use super::graft::GraftAt;
use super::ids::NodeId;
use super::node::Node;
use super::ops::switch_to_alias;
use super::place::NamePlace;
use super::tree::{Tree, TreeRead, TreeWrite};
use super::{Overlay, check_name};
use crate::layer::{self, Found};
use crate::sys::{self, Errno, FileKind, SysResult, oflag, rename_flag};
use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// One rename request.
#[derive(Clone, Copy)]
struct Names<'a> {
    p: &'a Arc<Node>,
    name: &'a OsStr,
    q: &'a Arc<Node>,
    newname: &'a OsStr,
    flags: u32,
}

impl Names<'_> {
    fn exchange(&self) -> bool {
        self.flags & rename_flag::EXCHANGE != 0
    }
}

/// What the checks found.
enum Check {
    /// Both names are one object: nothing to do.
    Same,
    /// Inside grafts, from one entry to the other (one graft: the source's own
    /// rename).
    Graft(GraftAt, GraftAt, Arc<Node>),
    /// In the union.
    Union(Plan),
}

/// A rename in the union that passed the checks.
struct Plan {
    src: Arc<Node>,
    dst: Option<Arc<Node>>,
    src_dir: bool,
    /// The target is a directory with lower content (empty in the union).
    dst_merged_dir: bool,
}

/// How the move phase ended.
enum Moved {
    Done,
    /// Something it needs is not in the upper layer (any more): prepare again.
    Retry,
}

fn has_lower_dir(n: &Node) -> bool {
    let s = n.state.read();
    s.kind == FileKind::Directory && !s.lowers.is_empty()
}

impl Overlay {
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
        let p = self.node(parent)?;
        let q = self.node(newparent)?;
        let names = Names {
            p: &p,
            name,
            q: &q,
            newname,
            flags,
        };
        loop {
            {
                let mut t = self.tree.read();
                if !self.rename_prepare(&mut t, names)? {
                    return Ok(());
                }
            }
            let t = self.tree.write();
            match self.rename_move(&t, names)? {
                Moved::Done => return Ok(()),
                Moved::Retry => continue,
            }
        }
    }

    /// Phase 1: check, and copy up what the move needs. `false`: nothing to move.
    fn rename_prepare(&self, t: &mut TreeRead, n: Names<'_>) -> SysResult<bool> {
        let plan = match self.rename_check(t, n)? {
            Check::Same => return Ok(false),
            Check::Graft(..) => return Ok(true),
            Check::Union(plan) => plan,
        };
        self.copy_up_dir(t, n.p)?;
        self.copy_up_dir(t, n.q)?;
        self.copy_up(t, &plan.src, Data::Meta)?;
        match &plan.dst {
            Some(d) if n.exchange() => self.copy_up(t, d, Data::Meta)?,
            // A replaced lower hard link keeps its other names' count in the index.
            Some(d) if d.kind() != FileKind::Directory => self.build_index_copy(t, d)?,
            _ => {}
        }
        Ok(true)
    }

    /// The checks of a rename, in the kernel's order; run in both phases.
    fn rename_check(&self, t: &Tree, n: Names<'_>) -> SysResult<Check> {
        let Names {
            p,
            name,
            q,
            newname,
            flags,
        } = n;
        let exchange = n.exchange();
        let noreplace = flags & rename_flag::NOREPLACE != 0;
        let (src, _) = self.lookup_node(t, p, name, false)?;
        let from = self.place_of_name(t, p, name);
        let to = self.place_of_name(t, q, newname);
        if from.is_mount_point() || to.is_mount_point() || self.holds_graft_target(t, &src) {
            // A mount point moves with its mount, not alone.
            return Err(Errno::EBUSY);
        }
        match (from, to) {
            (NamePlace::Graft(a), NamePlace::Graft(b)) => return Ok(Check::Graft(a, b, src)),
            (NamePlace::Union, NamePlace::Union) => {}
            _ => return Err(Errno::EXDEV),
        }
        self.upper()?;
        let dst = self
            .resolve(t, q, newname)?
            .map(|r| self.node_for(q, newname, r, false));
        if let Some(d) = &dst {
            if Arc::ptr_eq(d, &src) {
                return Ok(Check::Same);
            }
            if noreplace {
                return Err(Errno::EEXIST);
            }
        } else if exchange {
            return Err(Errno::ENOENT);
        }
        let src_dir = src.kind() == FileKind::Directory;
        let dst_dir = dst
            .as_ref()
            .is_some_and(|d| d.kind() == FileKind::Directory);
        // Moving a directory below itself.
        if src_dir || dst_dir {
            let moving = match &dst {
                Some(d) if !src_dir => d,
                _ => &src,
            };
            let target_parent = if src_dir { q } else { p };
            if is_ancestor(moving, target_parent) {
                return Err(Errno::EINVAL);
            }
        }
        // The order of the kernel: types (checked by the VFS), then whether the
        // directories may move (EXDEV), then emptiness of a replaced directory.
        if dst.is_some() && !exchange {
            match (src_dir, dst_dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                _ => {}
            }
        }
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
            && !self.dir_is_empty(t, d, true)?
        {
            return Err(Errno::ENOTEMPTY);
        }
        Ok(Check::Union(Plan {
            src,
            dst,
            src_dir,
            dst_merged_dir,
        }))
    }

    /// Phase 2: the move itself, with the tree lock held for writing. Copies no data:
    /// what needs a copy and has none sends the rename back to phase 1.
    fn rename_move(&self, t: &TreeWrite, n: Names<'_>) -> SysResult<Moved> {
        let Names {
            p,
            name,
            q,
            newname,
            flags,
        } = n;
        let exchange = n.exchange();
        let Plan {
            src,
            dst,
            src_dir,
            dst_merged_dir,
        } = match self.rename_check(t, n)? {
            Check::Same => return Ok(Moved::Done),
            Check::Graft(a, b, src) => {
                self.graft_rename(&a, &b, flags)?;
                let mut s = src.state.write();
                s.parent = Some(q.clone());
                s.name = newname.into();
                return Ok(Moved::Done);
            }
            Check::Union(plan) => plan,
        };
        let in_upper = |n: &Node| n.state.read().upper;
        if !in_upper(p)
            || !in_upper(q)
            || !in_upper(&src)
            || (exchange && dst.as_ref().is_some_and(|d| !in_upper(d)))
        {
            return Ok(Moved::Retry);
        }
        // Whether the replaced file loses its last name (a hard link keeps others).
        let dst_stat = match &dst {
            Some(d) if !exchange => self.stat_node(t, d).ok(),
            _ => None,
        };
        let dst_last_link = match (&dst, &dst_stat) {
            (Some(d), Some(st)) if d.kind() != FileKind::Directory => {
                self.attr_of(t, d, st).nlink <= 1
            }
            _ => true,
        };
        let qdir = self.dir_fd(LayerId::Upper, &self.upper_path(t, q))?;
        let dst_name_was_upper = dst.is_some()
            && matches!(
                self.upper_entry(sys::borrow(&qdir), newname),
                Ok(Found::Entry(_))
            );
        // One name of a lower hard link goes: its inode's count is kept in the index,
        // whose copy phase 1 made. Never waited for here: a copy-up of that file in
        // progress lets go of the tree lock and must be able to take it again.
        let replaced_lower_link = !exchange
            && !dst_last_link
            && !dst_name_was_upper
            && dst.as_ref().is_some_and(|d| !in_upper(d));
        if replaced_lower_link
            && let Some(d) = &dst
            && !self.try_adopt_index_copy(t, d)?
        {
            return Ok(Moved::Retry);
        }
        if src_dir
            || dst
                .as_ref()
                .is_some_and(|d| d.kind() == FileKind::Directory)
        {
            // Upper paths of directories change: cached fds must be looked up again.
            self.dirs.drop_upper();
        }
        let pdir = self.dir_fd(LayerId::Upper, &self.upper_path(t, p))?;
        let qdir = self.dir_fd(LayerId::Upper, &self.upper_path(t, q))?;
        let (pdir, qdir) = (sys::borrow(&pdir), sys::borrow(&qdir));
        // A hard link copied up through another name: this name joins the copy first.
        self.link_name_up(t, &src, pdir, name)?;
        if exchange && let Some(d) = &dst {
            self.link_name_up(t, d, qdir, newname)?;
        }
        let samedir = Arc::ptr_eq(p, q);
        // What moves with its lower content left behind: a merged or lower directory,
        // or a metadata-only copy whose data is still in the lower file.
        let needs_redirect = |n: &Node| has_lower_dir(n) || n.state.read().metacopy;
        if needs_redirect(&src) {
            self.set_redirect(t, &src, q, samedir, pdir, name)?;
        }
        if exchange
            && let Some(d) = &dst
            && needs_redirect(d)
        {
            self.set_redirect(t, d, p, samedir, qdir, newname)?;
        }
        // A pure upper directory moved into a merged directory becomes opaque, so that
        // lower content appearing at its new name can never merge into it (the kernel's
        // rule, which also keeps the two readings of the upper identical).
        let merged_parent = |n: &Node| !n.state.read().lowers.is_empty();
        if src_dir && !has_lower_dir(&src) && merged_parent(q) {
            self.set_opaque(pdir, name)?;
        }
        if exchange
            && let Some(d) = &dst
            && d.kind() == FileKind::Directory
            && !has_lower_dir(d)
            && merged_parent(p)
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
            // A directory of the upper alone being replaced (empty in the union, as
            // checked) may be opaque: on the portable module its marker is a file in it,
            // which the rename would count. It goes first, and comes back if the move
            // fails.
            let mut unmarked = None;
            if let Some(d) = &dst
                && !dst_merged_dir
                && d.kind() == FileKind::Directory
                && d.state.read().upper
                && !sys::KERNEL_WHITEOUTS
            {
                let fd = sys::open_at(qdir, newname, oflag::RDONLY | oflag::DIRECTORY, 0)?;
                if self.upper()?.layer.take_oci_opaque(sys::borrow(&fd))? {
                    unmarked = Some(fd);
                }
            }
            let whiteout = self.lower_positive(p, name)?;
            let target_is_whiteout =
                dst.is_none() && matches!(self.upper_entry(qdir, newname), Ok(Found::Whiteout));
            // An OCI whiteout (the portable module's format) is a file of its own,
            // `.wh.NAME`, with nothing at the name itself: there is nothing to exchange
            // with (and no RENAME_EXCHANGE there). The entry moves in (an entry wins
            // over a whiteout in its own layer), then the marker goes.
            let target_is_oci_whiteout = target_is_whiteout
                && self.upper()?.layer.oci
                && sys::stat_at(qdir, newname) == Err(Errno::ENOENT);
            if target_is_oci_whiteout {
                self.move_away(pdir, name, qdir, newname, whiteout)?;
                self.upper()?.layer.drop_oci_whiteout(qdir, newname);
            } else if target_is_whiteout {
                // Swap with the whiteout: it lands at the old name, which is where one
                // is needed if a lower layer still has that name; else remove it.
                sys::rename_at(pdir, name, qdir, newname, rename_flag::EXCHANGE)?;
                if !whiteout {
                    sys::unlink_at(pdir, name, false)?;
                }
            } else {
                let moved = self.move_away(pdir, name, qdir, newname, whiteout);
                if moved.is_err()
                    && let Some(fd) = &unmarked
                {
                    let _ = self.upper()?.layer.set_opaque(sys::borrow(fd));
                }
                moved?;
            }
        }
        {
            let mut s = src.state.write();
            let recorded = s.parent.as_ref().is_some_and(|x| Arc::ptr_eq(x, p)) && *s.name == *name;
            if !recorded && let Some(old) = s.parent.clone() {
                // An alias of a hard link moved: the recorded name stays valid as an alias.
                let old_name = s.name.clone();
                s.aliases_mut().push((old, old_name.into()));
            }
            s.aliases_mut()
                .retain(|(x, n)| !(Arc::ptr_eq(x, p) && n == name));
            s.parent = Some(q.clone());
            s.name = newname.into();
        }
        let Some(d) = dst else {
            return Ok(Moved::Done);
        };
        let mut s = d.state.write();
        let recorded = s.parent.as_ref().is_some_and(|x| Arc::ptr_eq(x, q)) && *s.name == *newname;
        if exchange {
            if !recorded && let Some(old) = s.parent.clone() {
                // Reached through another name of a hard link: the recorded one stays.
                let old_name = s.name.clone();
                s.aliases_mut().push((old, old_name.into()));
            }
            s.aliases_mut()
                .retain(|(x, n)| !(Arc::ptr_eq(x, q) && n == newname));
            s.parent = Some(p.clone());
            s.name = name.into();
        } else if dst_last_link {
            s.unlinked = true;
            if s.upper {
                s.set_removed(dst_stat);
            }
            if let (true, Some(st)) = (dst_name_was_upper, dst_stat) {
                self.drop_copy_number(st.ino);
            }
        } else {
            // Its other names live on; the replaced one may have been the recorded one.
            if recorded {
                switch_to_alias(&mut s, q, newname);
            } else {
                s.aliases_mut()
                    .retain(|(x, n)| !(Arc::ptr_eq(x, q) && n == newname));
            }
            if !dst_name_was_upper {
                drop(s);
                if d.state.read().nlink_adjust() > 0
                    && let Ok((dd, dn)) = self.upper_object(t, &d)
                {
                    let a = self.add_nlink_adjust(sys::borrow(&dd), &dn, -1);
                    d.state.write().set_nlink_adjust(a);
                }
            }
        }
        Ok(Moved::Done)
    }

    /// Make sure `name` in the upper directory `dir` is a name of `node`'s copy: a
    /// lower hard link whose inode was copied up through another name is linked here.
    fn link_name_up(
        &self,
        t: &Tree,
        node: &Node,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> SysResult<()> {
        if node.kind() == FileKind::Directory
            || matches!(self.upper_entry(dir, name), Ok(Found::Entry(_)))
        {
            return Ok(());
        }
        let (sdir, sname) = self.upper_object(t, node)?;
        self.link_upper_name(node, (sys::borrow(&sdir), &sname), dir, name)
    }

    fn set_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        let fd = sys::open_path_at(dir, name)?;
        self.upper()?.layer.set_opaque(sys::borrow(&fd))
    }

    /// What the upper directory `dir` holds at `name`.
    fn upper_entry(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Found> {
        self.upper()?.layer.entry_at(dir, name)
    }

    /// Record where a renamed directory's lower content lives (the kernel's
    /// `redirect_dir` format: the old name within the same parent, else a path from
    /// the layer root).
    pub(super) fn set_redirect(
        &self,
        t: &Tree,
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
        let format = &self.upper()?.layer;
        let own = format.redirect_of(sys::borrow(&fd));
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
            v.extend_from_slice(&self.top_lower_path(t, dir, own)?);
            v
        };
        format.set_redirect(sys::borrow(&fd), &value)
    }

    /// Where a lookup of `node` searches the topmost lower layer: its entry there if it
    /// has one, else its parent's such path with its name (or the redirect its upper entry
    /// records, `own` for the node itself). An absolute redirect must hold this path, as
    /// the kernel's does (it builds it from the union's names and redirects the same way):
    /// the path of the entry in a deeper layer can be hidden by a whiteout or a rename in
    /// a layer above, which a lookup walks first.
    fn top_lower_path(
        &self,
        t: &Tree,
        node: &Node,
        own: Option<Vec<u8>>,
    ) -> SysResult<layer::RelPath> {
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
                let path = self.upper_path(t, &parent);
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
