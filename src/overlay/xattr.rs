//! Extended attributes through the union: the layers' own markers stay hidden, an
//! overlay xattr set through the mount is stored escaped (as the kernel does since
//! 6.7), and a change copies the file up first.

use super::copyup::Data;
use super::node::Node;
use super::place::Place;
use super::tree::Tree;
use super::{NodeId, Overlay};
use crate::sys::{self, Errno, SysResult};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

impl Overlay {
    /// An `O_PATH` handle on the object a node shows.
    pub(super) fn object_fd(&self, t: &Tree, node: &Node) -> SysResult<OwnedFd> {
        let place = self.place(node);
        match self.branch_entry(node, &place)? {
            Some((layer, path)) => layer.open_any(&path),
            None => {
                let (dir, name) = self.upper_object(t, node)?;
                sys::open_path_at(sys::borrow(&dir), &name)
            }
        }
    }

    /// The stored name of an xattr: escaped in the union, as is inside a graft
    /// (whose source holds no markers).
    fn stored_xattr(&self, place: &Place, name: &OsStr) -> Vec<u8> {
        match place {
            Place::Graft(_) => name.as_bytes().to_vec(),
            Place::Upper | Place::Lower => self.markers.stored_name(name.as_bytes()),
        }
    }

    /// An xattr change where the system has none (the portable module): a read-only place
    /// refuses it first (EROFS, as the kernel checks the mount before the filesystem), then
    /// ENOTSUP. Nothing is copied up.
    fn no_xattr_change(&self, node: &Node) -> SysResult<()> {
        match self.place(node) {
            Place::Graft(at) => self.graft(&at)?.writable()?,
            Place::Upper | Place::Lower => {
                self.upper()?;
            }
        }
        Err(Errno::ENOTSUP)
    }

    pub fn getxattr(&self, ino: NodeId, name: &OsStr) -> SysResult<Vec<u8>> {
        let node = self.node(ino)?;
        if !sys::XATTRS {
            // None on this system (the portable module): the entry is not opened (a
            // socket cannot be, and opening a device would run its driver).
            return Err(Errno::ENOTSUP);
        }
        if name == "security.capability" && node.state.read().no_capability {
            return Err(Errno::ENODATA);
        }
        let t = self.tree.read();
        let fd = self.object_fd(&t, &node)?;
        let stored = self.stored_xattr(&self.place(&node), name);
        sys::get_xattr(sys::borrow(&fd), OsStr::from_bytes(&stored))
    }

    /// Visible xattr names, each NUL-terminated, as listxattr returns them.
    pub fn listxattr(&self, ino: NodeId) -> SysResult<Vec<u8>> {
        let node = self.node(ino)?;
        if !sys::XATTRS {
            return Ok(Vec::new());
        }
        let t = self.tree.read();
        let fd = self.object_fd(&t, &node)?;
        let grafted = matches!(self.place(&node), Place::Graft(_));
        let mut out = Vec::new();
        for name in sys::list_xattr(sys::borrow(&fd))? {
            if self
                .override_stat
                .as_ref()
                .is_some_and(|o| o.as_encoded_bytes() == name.as_slice())
            {
                // The mount's own record of owners and modes.
                continue;
            }
            let shown = if grafted {
                Some(name)
            } else {
                self.markers.visible_name(&name)
            };
            if let Some(v) = shown {
                out.extend_from_slice(&v);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: NodeId, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
        let node = self.node(ino)?;
        if !sys::XATTRS {
            // Nothing to copy up for a change that cannot be made.
            return self.no_xattr_change(&node);
        }
        let mut t = self.tree.read();
        let place = self.place(&node);
        match &place {
            Place::Graft(at) => self.graft(at)?.writable()?,
            Place::Upper | Place::Lower => {
                self.upper()?;
                self.copy_up(&mut t, &node, Data::Meta)?;
            }
        }
        let fd = self.object_fd(&t, &node)?;
        let stored = self.stored_xattr(&place, name);
        node.state.write().no_capability = false;
        sys::set_xattr(sys::borrow(&fd), OsStr::from_bytes(&stored), value, flags)
    }

    pub fn removexattr(&self, ino: NodeId, name: &OsStr) -> SysResult<()> {
        let node = self.node(ino)?;
        if !sys::XATTRS {
            return self.no_xattr_change(&node);
        }
        let mut t = self.tree.read();
        let place = self.place(&node);
        let stored = self.stored_xattr(&place, name);
        let stored = OsStr::from_bytes(&stored);
        match &place {
            Place::Graft(at) => self.graft(at)?.writable()?,
            Place::Upper => {
                self.upper()?;
            }
            Place::Lower => {
                self.upper()?;
                // Nothing to remove needs no copy.
                let fd = self.object_fd(&t, &node)?;
                sys::get_xattr(sys::borrow(&fd), stored)?;
                self.copy_up(&mut t, &node, Data::Meta)?;
            }
        }
        let fd = self.object_fd(&t, &node)?;
        sys::remove_xattr(sys::borrow(&fd), stored)
    }
}
