//! Merged directory listings: the union of a directory's layers, topmost entry per
//! name, whiteouts and reserved names left out.

use super::Overlay;
use super::dircache::LayerId;
use super::ids::LayerIndex;
use super::node::Node;
use super::place::Place;
use super::tree::Tree;
use crate::layer::{DirMarkers, Listed};
use crate::sys::{self, Errno, FileKind, SysResult};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;

/// One entry of a merged listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: OsString,
    /// Equal to the entry's `st_ino` through the mount.
    pub ino: u64,
    pub kind: FileKind,
}

/// Where a listed name came from.
struct Source {
    kind: FileKind,
    ino: u64,
    /// Index of the layer: `None` for the upper.
    lower: Option<LayerIndex>,
    /// An upper entry with a visible lower entry of the same name below it.
    shadows_lower: bool,
}

/// Layers' listings folded top-down into one.
#[derive(Default)]
struct Merge {
    order: Vec<OsString>,
    seen: HashMap<OsString, Source>,
    hidden: HashSet<OsString>,
}

impl Merge {
    fn add(&mut self, list: impl IntoIterator<Item = Listed>, lower: Option<LayerIndex>) {
        let mut new_hidden = Vec::new();
        for e in list {
            if self.hidden.contains(&e.name) {
                continue;
            }
            if let Some(src) = self.seen.get_mut(&e.name) {
                if src.lower.is_none() && !e.whiteout {
                    src.shadows_lower = true;
                }
                continue;
            }
            if e.whiteout {
                new_hidden.push(e.name);
                continue;
            }
            self.order.push(e.name.clone());
            self.seen.insert(
                e.name,
                Source {
                    kind: e.kind,
                    ino: e.ino,
                    lower,
                    shadows_lower: false,
                },
            );
        }
        // A layer's whiteouts hide names of the layers below it only.
        self.hidden.extend(new_hidden);
    }
}

impl Overlay {
    /// The visible names of a directory, in listing order, with `.` and `..` first:
    /// a graft's source as it is, or the union of the layers; graft targets in it
    /// show their graft.
    pub(super) fn list_dir(&self, t: &Tree, node: &Node) -> SysResult<Vec<DirEntry>> {
        let mut entries = match self.place(node) {
            Place::Graft(at) => self.graft_entries(&at)?,
            // Removed (a request that raced the rmdir; the kernel answers later ones
            // itself): its name leads elsewhere now, and a removed directory is listed
            // by no one (the kernel's readdir of a dead directory: ENOENT).
            Place::Upper | Place::Lower if node.state.read().unlinked => {
                return Err(Errno::ENOENT);
            }
            Place::Upper | Place::Lower => self.merged_names(t, node)?,
        };
        self.show_graft_targets(t, node, &mut entries);
        let mut out = Vec::with_capacity(entries.len() + 2);
        let parent_ino = node.parent().map_or(node.ino, |p| p.ino).get();
        out.push(DirEntry {
            name: ".".into(),
            ino: node.ino.get(),
            kind: FileKind::Directory,
        });
        out.push(DirEntry {
            name: "..".into(),
            ino: parent_ino,
            kind: FileKind::Directory,
        });
        out.extend(entries);
        Ok(out)
    }

    /// Whether a directory shows no entries (only whiteouts or nothing).
    /// `covers_lower`: a lower layer has an entry (of any type) at the directory's name,
    /// so removing it leaves a whiteout.
    pub(super) fn dir_is_empty(
        &self,
        t: &Tree,
        node: &Node,
        covers_lower: bool,
    ) -> SysResult<bool> {
        let (upper, pure_upper) = {
            let s = node.state.read();
            (s.upper, s.lowers.is_empty())
        };
        // A graft target in it counts as an entry (a mount point).
        let targets = self.graft_targets_in(t, node).len();
        if upper && pure_upper && !covers_lower {
            // A directory of the upper alone is removed as it is on disk: whiteouts in
            // it count (the kernel's rmdir then fails ENOTEMPTY, as the upper's would).
            // Over a lower entry the kernel checks the union instead and clears the
            // whiteouts as it replaces the directory by a whiteout. The directory's own
            // OCI opaque marker (the portable module's, in place of the kernel's xattr)
            // is no entry: the layer's listing leaves it out, and the removal, which
            // moves the directory away in one step first, clears it with the rest.
            let u = self.upper()?;
            let fd = self.dir_fd(LayerId::Upper, &self.upper_path(t, node))?;
            let on_disk = u.layer.list(sys::borrow(&fd), &DirMarkers::default())?;
            return Ok(on_disk.is_empty() && targets == 0);
        }
        Ok(self.merged_names(t, node)?.is_empty() && targets == 0)
    }

    fn merged_names(&self, t: &Tree, node: &Node) -> SysResult<Vec<DirEntry>> {
        let (upper, lowers) = {
            let s = node.state.read();
            (s.upper, s.lowers.dir_stack())
        };
        let mut merge = Merge::default();
        if upper {
            let u = self.upper()?;
            let fd = self.dir_fd(LayerId::Upper, &self.upper_path(t, node))?;
            let list = u.layer.list(sys::borrow(&fd), &DirMarkers::default())?;
            merge.add(list, None);
        }
        for l in lowers.iter() {
            let Ok(Some(idx)) = self.lower_dir_index(l.layer, &l.path, l.xattr_whiteouts) else {
                continue;
            };
            merge.add(idx.list.iter().cloned(), Some(l.layer));
        }
        // Inode numbers as lookup gives them: a lower entry's own (folded), an upper
        // entry's own unless it shadows a lower entry (a copy keeps the lower's) or is
        // a copy made without an origin record (it keeps the number it had).
        // Names at graft targets are shown by the graft (`show_graft_targets`): the
        // layers' entries there need no inode number of their own.
        let targets = self.graft_targets_in(t, node);
        let mut out = Vec::with_capacity(merge.order.len());
        for name in merge.order {
            if targets.iter().any(|(n, _)| *n == name) {
                out.push(DirEntry {
                    name,
                    ino: 0,
                    kind: FileKind::Directory,
                });
                continue;
            }
            let Some(src) = merge.seen.get(&name) else {
                continue;
            };
            let ino = match src.lower {
                Some(li) => self.fold_ino(self.lowers[li].dev, src.ino),
                None if src.shadows_lower => self.copied_entry_ino(t, node, &name, src.ino),
                None => self.upper_number(src.ino),
            };
            out.push(DirEntry {
                name,
                ino,
                kind: src.kind,
            });
        }
        Ok(out)
    }

    /// The number lookup reports for an upper entry that shadows a lower one.
    fn copied_entry_ino(
        &self,
        t: &Tree,
        dir: &Node,
        name: &std::ffi::OsStr,
        upper_ino: u64,
    ) -> u64 {
        match self.resolve(t, dir, name) {
            Ok(Some(r)) if r.ino != 0 => r.ino,
            _ => self.upper_number(upper_ino),
        }
    }
}
