//! Live lower layers (`--watch-lowers`): what the union drops when a lower layer is
//! changed on the host, and what the kernel must then be told.
//!
//! The union otherwise takes its lower layers as fixed and caches accordingly: each
//! lower directory's listing (`lowerindex`), open lower directories (`dircache`),
//! which layer of a directory's stack first holds each name (`LowerStack::names`), and
//! per node the place its lower entry was found. A change reported in lower directory
//! `dir` of layer `l` drops the listing of `dir` (and, for an entry that was a
//! directory, everything cached below it), resets the stack names of every merged
//! directory showing `dir`, and marks a lower-only node whose name changed so that the
//! next lookup finds it afresh. Names that the upper layer holds or whites out are
//! resolved there first, as always: a lower change under them stays invisible.

use super::dircache::LayerId;
use super::node::{LowerStack, Lowers, Node};
use super::{FileKind, LayerIndex, NodeId, Overlay};
use crate::layer::{self, RelPath};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::sync::Arc;

/// What changed in a lower layer, as a watcher saw it (ordered by layer, directory,
/// name, kind, so a batch sorts and deduplicates as it is).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LowerChange {
    /// Which lower layer (0 = topmost).
    pub layer: usize,
    /// The directory the change is in, from the layer's root ("" for the root).
    pub dir: RelPath,
    pub name: OsString,
    pub kind: LowerChangeKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LowerChangeKind {
    /// The name was made, removed, or renamed away or onto.
    Entry,
    /// The content or attributes of what the name holds changed.
    Content,
}

/// What the kernel must drop after lower changes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// The entry (or negative entry) `name` in directory `parent`.
    Entry(NodeId, OsString),
    /// An inode's attributes and cached content (a directory's: its listing).
    Inode(NodeId),
}

impl Overlay {
    /// Drop what the union cached of the lower entries in `changes`, and return what
    /// the kernel must drop of the nodes it may hold.
    pub fn lower_changed(&self, changes: &[LowerChange]) -> Vec<Invalidation> {
        let layer_of = |i: usize| self.lowers.iter().nth(i).map(|(li, _)| li);
        let mut by_dir: HashMap<(LayerIndex, &[u8]), Vec<&LowerChange>> = HashMap::new();
        for c in changes {
            let Some(li) = layer_of(c.layer) else {
                continue;
            };
            self.lower_index.remove(li, &c.dir);
            if c.kind == LowerChangeKind::Entry {
                // Whatever was at the name (maybe a whole tree) is gone or moved.
                let below = layer::join(&c.dir, &c.name);
                self.lower_index.remove_below(li, &below);
                self.dirs.remove_below(LayerId::Lower(li), &below);
            }
            by_dir.entry((li, &c.dir)).or_default().push(c);
        }
        let t = self.tree.read();
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        self.nodes.for_each(|n| nodes.push(n.clone()));
        // Merged directories showing a changed lower directory, with its changes.
        let mut dirs: HashMap<NodeId, Vec<&LowerChange>> = HashMap::new();
        // Most directories show no changed lower directory: look under the read lock,
        // write only where there is a hit (the tree lock keeps each stack meanwhile).
        for n in nodes.iter().filter(|n| n.kind() == FileKind::Directory) {
            let hit: Vec<&LowerChange> = {
                let s = n.state.read();
                let Lowers::Stack(st) = &s.lowers else {
                    continue;
                };
                st.iter()
                    .filter_map(|r| by_dir.get(&(r.layer, &r.path[..])))
                    .flatten()
                    .copied()
                    .collect()
            };
            if hit.is_empty() {
                continue;
            }
            // Which layer first holds each name may have changed.
            let mut s = n.state.write();
            if let Lowers::Stack(st) = &s.lowers {
                s.lowers = Lowers::Stack(LowerStack::shared(st.to_vec()));
            }
            dirs.insert(n.ino, hit);
        }
        if dirs.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Invalidation> = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |i: Invalidation, out: &mut Vec<Invalidation>| {
            if seen.insert(i.clone()) {
                out.push(i);
            }
        };
        for (&dir, cs) in &dirs {
            for c in cs {
                if c.kind == LowerChangeKind::Entry {
                    push(Invalidation::Entry(dir, c.name.clone()), &mut out);
                    push(Invalidation::Inode(dir), &mut out);
                }
            }
        }
        // Nodes the kernel may hold at a changed name: lower-only ones show the change.
        for n in &nodes {
            let kind = {
                let s = n.state.read();
                if s.upper {
                    continue;
                }
                let Some(cs) = s.parent.as_ref().and_then(|p| dirs.get(&p.ino)) else {
                    continue;
                };
                let Some(c) = cs.iter().find(|c| *c.name == *s.name) else {
                    continue;
                };
                c.kind
            };
            if kind == LowerChangeKind::Entry {
                // Its lower entry may be gone or elsewhere now: the next lookup of
                // the object (at any name) records where it is.
                n.state.write().stale_name = true;
            }
            push(Invalidation::Inode(n.ino), &mut out);
        }
        drop(t);
        out
    }

    /// Changes to the lower layers were lost (the watcher's queue overflowed): drop
    /// everything the union cached of them, as [`Overlay::lower_changed`] does for one
    /// change, but everywhere — every listing and open lower directory, the stack
    /// names of every merged directory, the recorded place of every lower-only node.
    /// Returns what the kernel must drop of the nodes it may hold: the attributes and
    /// cached content (a directory's: its listing) of every directory and of every
    /// node showing lower data. Its entries are dropped apart (an epoch, or
    /// [`Overlay::known_entries`]).
    pub fn lower_lost(&self) -> Vec<Invalidation> {
        self.lower_index.clear();
        self.dirs.drop_lower();
        let t = self.tree.read();
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        self.nodes.for_each(|n| nodes.push(n.clone()));
        let mut out = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let affected = {
                let s = n.state.read();
                s.kind == FileKind::Directory || !s.upper || s.metacopy
            };
            if !affected {
                continue;
            }
            let mut s = n.state.write();
            if let Lowers::Stack(st) = &s.lowers {
                // Which layer first holds each name may have changed.
                s.lowers = Lowers::Stack(LowerStack::shared(st.to_vec()));
            }
            if !s.upper && n.ino != NodeId::ROOT {
                // Its lower entry may be gone or elsewhere now: the next lookup of
                // the object (at any name) records where it is.
                s.stale_name = true;
            }
            out.push(Invalidation::Inode(n.ino));
        }
        drop(t);
        out
    }

    /// Every entry the kernel may hold that may be wrong now, for a kernel that cannot
    /// drop all its entries at once: each node at its recorded name and its other
    /// names (positive entries, maybe removed since), and every name each directory
    /// shows now (a negative entry there is wrong if the name was made since; a name
    /// absent now needs nothing dropped).
    pub fn known_entries(&self) -> Vec<Invalidation> {
        let t = self.tree.read();
        // Node Arcs first: no node-table shard lock is held while a state lock is taken.
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        self.nodes.for_each(|n| nodes.push(n.clone()));
        let mut out = Vec::with_capacity(nodes.len());
        let mut seen = HashSet::new();
        let mut push = |i: Invalidation, out: &mut Vec<Invalidation>| {
            if seen.insert(i.clone()) {
                out.push(i);
            }
        };
        for n in &nodes {
            let dir = {
                let s = n.state.read();
                if let Some(p) = &s.parent {
                    push(Invalidation::Entry(p.ino, s.name.to_os_string()), &mut out);
                }
                for (p, name) in s.aliases() {
                    push(Invalidation::Entry(p.ino, name.clone()), &mut out);
                }
                s.kind == FileKind::Directory && !s.unlinked
            };
            if !dir {
                continue;
            }
            // A directory that cannot be listed now (removed meanwhile) holds nothing
            // the kernel could find.
            for e in self.list_dir(&t, n).unwrap_or_default() {
                if e.name != "." && e.name != ".." {
                    push(Invalidation::Entry(n.ino, e.name), &mut out);
                }
            }
        }
        drop(t);
        out
    }
}
