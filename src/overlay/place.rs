//! Where a node or a name lives: decided here, once per operation.
//!
//! Every operation starts by asking one of two questions and then runs the branch
//! the answer names, so the "graft, upper or lower?" switch is written once:
//!
//! - [`Overlay::place`]: where an existing node's object is — inside a graft (a
//!   volume or bind mount), in the upper layer, or only in the lower layers;
//! - [`Overlay::place_of_name`]: where a name in a directory belongs — to a graft
//!   (the graft's own target, a mount point, or a name inside a graft's source) or to
//!   the union's layers, where lookup decides between upper and lower.
//!
//! A lower layer and a graft's source are both read through [`Layer`]
//! ([`Overlay::branch_entry`]); the upper is reached through the node's upper path,
//! which copy-up, whiteouts and the hard-link index make its own.

use super::Overlay;
use super::graft::GraftAt;
use super::node::Node;
use super::tree::Tree;
use crate::layer::{self, Layer, RelPath};
use crate::sys::{Errno, SysResult};
use std::ffi::OsStr;

/// Where a node's object lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Inside a graft: every operation goes to its source.
    Graft(GraftAt),
    /// In the upper layer (a metadata-only copy's data is still its lower file's).
    Upper,
    /// Only in the lower layers: read-only until copied up.
    Lower,
}

/// Where a name in a directory belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum NamePlace {
    /// A graft decides: the name is a graft's target (`at.is_root()`), or the
    /// directory is inside a graft.
    Graft(GraftAt),
    /// The union's layers decide.
    Union,
}

impl NamePlace {
    /// The name is where a graft is joined: it moves or goes only with its mount.
    pub(super) fn is_mount_point(&self) -> bool {
        matches!(self, NamePlace::Graft(at) if at.is_root())
    }
}

impl Overlay {
    /// Where `node` lives now. A copy-up moves a node from `Lower` to `Upper`; nothing
    /// moves a node into or out of a graft.
    pub(super) fn place(&self, node: &Node) -> Place {
        let s = node.state.read();
        match s.graft() {
            Some(at) => Place::Graft(at.clone()),
            None if s.upper => Place::Upper,
            None => Place::Lower,
        }
    }

    /// Where `name` in the union directory `parent` belongs. A target is checked
    /// before the enclosing graft's source: grafts nest (`/data`, `/data/cache`).
    pub(super) fn place_of_name(&self, t: &Tree, parent: &Node, name: &OsStr) -> NamePlace {
        if let Some(id) = self.graft_target(t, parent, name) {
            return NamePlace::Graft(GraftAt {
                id,
                path: RelPath::new(),
            });
        }
        match parent.state.read().graft() {
            Some(p) => NamePlace::Graft(GraftAt {
                id: p.id,
                path: layer::join(&p.path, name),
            }),
            None => NamePlace::Union,
        }
    }

    /// The layer and path of a node that is read through a layer of its own: a lower
    /// layer's entry, or a graft's. `None` for the upper, whose entry is the node's
    /// upper path (see `upper_object`).
    pub(super) fn branch_entry(
        &self,
        node: &Node,
        place: &Place,
    ) -> SysResult<Option<(&Layer, RelPath)>> {
        match place {
            Place::Upper => Ok(None),
            Place::Lower => {
                let l = self.first_lower(node).ok_or(Errno::ENOENT)?;
                Ok(Some((&self.lowers[l.layer], l.path)))
            }
            Place::Graft(at) => self.graft(at)?.entry(&at.path).map(Some),
        }
    }
}
