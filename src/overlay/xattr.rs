//! Extended attributes through the union: the layers' own markers stay hidden, an
//! overlay xattr set through the mount is stored escaped (as the kernel does since
//! 6.7), and a change copies the file up first.

use super::copyup::Data;
use super::node::Node;
use super::tree::Tree;
use super::{NodeId, Overlay};
use crate::sys::{self, Errno, SysResult};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

impl Overlay {
    /// An `O_PATH` handle on the object a node shows.
    pub(super) fn object_fd(&self, t: &Tree, node: &Node) -> SysResult<OwnedFd> {
        let (upper, spliced) = {
            let s = node.state.read();
            (s.upper, s.splice().cloned())
        };
        let lower = if upper || spliced.is_some() {
            None
        } else {
            self.first_lower(node)
        };
        if let Some(at) = spliced {
            return self.splice_object(&at);
        }
        if upper {
            let (dir, name) = self.upper_object(t, node)?;
            sys::open_path_at(sys::borrow(&dir), &name)
        } else {
            let l = lower.ok_or(Errno::ENOENT)?;
            self.lowers[l.layer].open_any(&l.path)
        }
    }

    /// The stored name of an xattr: escaped in the union, as is inside a splice.
    fn stored_xattr(&self, node: &Node, name: &OsStr) -> Vec<u8> {
        if node.state.read().splice().is_some() {
            name.as_bytes().to_vec()
        } else {
            self.markers.stored_name(name.as_bytes())
        }
    }

    pub fn getxattr(&self, ino: NodeId, name: &OsStr) -> SysResult<Vec<u8>> {
        let node = self.node(ino)?;
        if name == "security.capability" && node.state.read().no_capability {
            return Err(Errno::ENODATA);
        }
        let t = self.tree.read();
        let fd = self.object_fd(&t, &node)?;
        let stored = self.stored_xattr(&node, name);
        sys::get_xattr(sys::borrow(&fd), OsStr::from_bytes(&stored))
    }

    /// Visible xattr names, each NUL-terminated, as listxattr returns them.
    pub fn listxattr(&self, ino: NodeId) -> SysResult<Vec<u8>> {
        let node = self.node(ino)?;
        let t = self.tree.read();
        let fd = self.object_fd(&t, &node)?;
        let spliced = node.state.read().splice().is_some();
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
            let shown = if spliced {
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
        let mut t = self.tree.read();
        let spliced = node.state.read().splice().cloned();
        match &spliced {
            Some(at) => self.splice_writable(at)?,
            None => {
                self.upper()?;
                self.copy_up(&mut t, &node, Data::Meta)?;
            }
        }
        let fd = self.object_fd(&t, &node)?;
        let stored = self.stored_xattr(&node, name);
        node.state.write().no_capability = false;
        sys::set_xattr(sys::borrow(&fd), OsStr::from_bytes(&stored), value, flags)
    }

    pub fn removexattr(&self, ino: NodeId, name: &OsStr) -> SysResult<()> {
        let node = self.node(ino)?;
        let mut t = self.tree.read();
        let stored = self.stored_xattr(&node, name);
        let stored = OsStr::from_bytes(&stored);
        let (upper, spliced) = {
            let s = node.state.read();
            (s.upper, s.splice().cloned())
        };
        match &spliced {
            Some(at) => self.splice_writable(at)?,
            None => {
                self.upper()?;
                if !upper {
                    // Nothing to remove needs no copy.
                    let fd = self.object_fd(&t, &node)?;
                    sys::get_xattr(sys::borrow(&fd), stored)?;
                    self.copy_up(&mut t, &node, Data::Meta)?;
                }
            }
        }
        let fd = self.object_fd(&t, &node)?;
        sys::remove_xattr(sys::borrow(&fd), stored)
    }
}
