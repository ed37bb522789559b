//! Resolving one name across the layers: topmost wins, directories merge down to
//! the first opaque one, whiteouts end the search, redirects send it elsewhere.

use super::dircache::LayerId;
use super::ids::{LayerIndex, LowerLayers, NodeId};
use super::lowerindex::StackNames;
use super::node::{LowerRef, LowerStack, Lowers, Node, NodeState};
use super::place::NamePlace;
use super::tree::Tree;
use super::{Attr, Overlay, check_name};
use crate::layer::{self, DirMarkers, Found, Layer, RelPath};
use crate::sys::{self, Errno, FileKind, Stat, SysResult};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// The root node: the upper root over every lower root down to the first opaque one.
pub(super) fn root_state(upper: Option<&Layer>, lowers: &LowerLayers) -> SysResult<NodeState> {
    let mut stack = Vec::new();
    let mut opaque = false;
    if let Some(u) = upper {
        opaque = u.dir_markers(u.root()).opaque;
    }
    if !opaque {
        for (i, l) in lowers.iter() {
            let m = l.dir_markers(l.root());
            stack.push(LowerRef {
                layer: i,
                path: RelPath::new(),
                xattr_whiteouts: m.xattr_whiteouts,
            });
            if m.opaque {
                break;
            }
        }
    }
    let mut state = NodeState::new(
        None,
        Default::default(),
        FileKind::Directory,
        upper.is_some(),
    );
    state.lowers = Lowers::Stack(Arc::new(LowerStack::new(stack)));
    Ok(state)
}

/// What resolving a name found, before it becomes a node.
#[derive(Debug)]
pub(super) struct Resolved {
    pub stat: Stat,
    pub upper: bool,
    /// The upper file is a metadata-only copy: its data is the first of `lowers`.
    pub metacopy: bool,
    pub lowers: Vec<LowerRef>,
    /// The inode number the union reports (0: let the table choose).
    pub ino: u64,
    /// Added to the upper link count (hard links partly copied up).
    pub nlink_adjust: i64,
    /// The hard-link index entry of an upper file, if it has one.
    pub index: Option<super::node::IndexRef>,
}

/// How to find the next lower entry of a name.
enum Search {
    /// This name under the parent's path in each lower layer.
    Name(Vec<u8>),
    /// This path from each lower layer's root (an absolute redirect).
    Absolute(Vec<u8>),
}

impl Overlay {
    /// The first lower entry of a node (a file's own, a directory's topmost).
    pub(super) fn first_lower(&self, node: &Node) -> Option<LowerRef> {
        let (layer, parent, name) = {
            let s = node.state.read();
            match &s.lowers {
                Lowers::Stack(st) => return st.first().cloned(),
                Lowers::ByName(l) => (*l, s.parent.clone()?, s.name.clone()),
            }
        };
        let p = parent.state.read().lowers.dir_stack();
        let i = p.binary_search_by_key(&layer, |x| x.layer).ok()?;
        Some(LowerRef {
            layer,
            path: layer::join(&p[i].path, &name),
            xattr_whiteouts: false,
        })
    }

    /// A node's lower entries as a stack of their own (for a file found by name, built
    /// from its parent's).
    pub(super) fn node_lowers(&self, node: &Node) -> Arc<LowerStack> {
        if let Lowers::Stack(st) = &node.state.read().lowers {
            return st.clone();
        }
        LowerStack::shared(self.first_lower(node).into_iter().collect())
    }

    /// Look a name up and count a kernel reference on the node it names.
    pub fn lookup(&self, parent: NodeId, name: &OsStr) -> SysResult<(Attr, u64)> {
        check_name(name)?;
        let parent = self.node(parent)?;
        let t = self.tree.read();
        let (node, st) = self.lookup_node(&t, &parent, name, true)?;
        Ok((self.attr_of(&t, &node, &st), 0))
    }

    /// Find (or make) the node of `name` in `parent`, with the stat of what it shows.
    pub(super) fn lookup_node(
        &self,
        t: &Tree,
        parent: &Arc<Node>,
        name: &OsStr,
        count: bool,
    ) -> SysResult<(Arc<Node>, Stat)> {
        if let NamePlace::Graft(at) = self.place_of_name(t, parent, name) {
            return self.graft_lookup(parent, name, at, count);
        }
        self.lookup_union_name(t, parent, name, count)
            .map(|(node, st, _)| (node, st))
    }

    /// [`Self::lookup_node`] of a name that is no graft, with the upper layer's entry
    /// at this very name (for a hard link, not necessarily the node's recorded name):
    /// `None` when the name is only below. A removal needs no second look at it.
    pub(super) fn lookup_union_name(
        &self,
        t: &Tree,
        parent: &Arc<Node>,
        name: &OsStr,
        count: bool,
    ) -> SysResult<(Arc<Node>, Stat, Option<Stat>)> {
        let mut r = self.resolve(t, parent, name)?.ok_or(Errno::ENOENT)?;
        if !r.upper && self.join_indexed_copy(t, parent, name, &r)? {
            r = self.resolve(t, parent, name)?.ok_or(Errno::ENOENT)?;
        }
        let (found_upper, st) = (r.upper, r.stat);
        let node = self.node_for(parent, name, r, count);
        // The stat resolving made is the node's own unless the node is a hard link
        // already copied up through another name.
        let node_st = if node.state.read().upper == found_upper {
            st
        } else {
            self.stat_node(t, &node)?
        };
        Ok((node, node_st, found_upper.then_some(st)))
    }

    /// Turn a resolved entry into its node.
    pub(super) fn node_for(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        r: Resolved,
        count: bool,
    ) -> Arc<Node> {
        let kind = r.stat.kind();
        // A file only below, found at its own name: it keeps no path of its own.
        let by_name = (kind != FileKind::Directory && !r.upper && r.lowers.len() == 1)
            .then(|| {
                let l = &r.lowers[0];
                let p = parent.state.read().lowers.dir_stack();
                let i = p.binary_search_by_key(&l.layer, |x| x.layer).ok()?;
                (layer::join(&p[i].path, name) == l.path).then_some(l.layer)
            })
            .flatten();
        // Moved into a new node, or kept to update an existing directory's stack.
        let mut lowers = Some(r.lowers);
        let node = self.nodes.get_or_insert(
            r.ino,
            count,
            |n| {
                let s = n.state.read();
                !s.unlinked && s.kind == kind
            },
            |ino| {
                Node::new(ino, {
                    let mut s =
                        NodeState::new(Some(parent.clone()), name.to_owned(), kind, r.upper);
                    s.metacopy = r.metacopy;
                    s.lowers = match by_name {
                        Some(layer) => Lowers::ByName(layer),
                        None => Lowers::stack(lowers.take().unwrap_or_default()),
                    };
                    s.set_nlink_adjust(r.nlink_adjust);
                    s.set_index(r.index.clone());
                    s
                })
            },
        );
        // A file found by name that is now in the upper layer keeps its lower entry's
        // path from here on (its parent and name may change).
        let materialized = (r.upper && matches!(node.state.read().lowers, Lowers::ByName(_)))
            .then(|| self.node_lowers(&node));
        // A node reached again by another name (a hard link) keeps the name it was
        // first found by (the one a copy-up will use), unless that name is gone or
        // this name is the one that already lives in the upper layer.
        let mut s = node.state.write();
        if let Some(m) = materialized {
            s.lowers = Lowers::Stack(m);
        }
        let same_place =
            s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent)) && *s.name == *name;
        if same_place {
            // Found at the name recorded: that name leads to it (again).
            s.stale_name = false;
        } else if s.stale_name || (r.upper && !s.upper) {
            s.parent = Some(parent.clone());
            s.name = name.into();
            s.stale_name = false;
        } else if r.upper && s.kind != FileKind::Directory {
            // Another upper name of a hard link: remembered, so that removing the
            // recorded name leaves the node reachable through this one.
            const MAX_ALIASES: usize = 64;
            let known = s
                .aliases()
                .iter()
                .any(|(p, n)| Arc::ptr_eq(p, parent) && n == name);
            if !known && s.aliases().len() < MAX_ALIASES {
                s.aliases_mut().push((parent.clone(), name.to_owned()));
            }
        }
        if r.upper {
            s.upper = true;
            s.metacopy = r.metacopy;
            s.set_nlink_adjust(r.nlink_adjust);
            if r.index.is_some() {
                s.set_index(r.index);
            }
        }
        if let Some(l) = lowers
            && (s.kind == FileKind::Directory || s.metacopy)
            && !l.is_empty()
            && s.lowers.dir_stack()[..] != l[..]
        {
            s.lowers = Lowers::stack(l);
        }
        drop(s);
        node
    }

    /// Walk the directories on the way to `path` in lower layer `li`, as the kernel's
    /// absolute lookup does. `blocked`: one of them is opaque, a whiteout or not a
    /// directory, so the search ends with this layer. `onward`: the path to search in
    /// the layers below, with the redirects of those directories applied (a directory
    /// renamed in an earlier commit has its content below under its old name).
    fn walk_absolute(&self, li: LayerIndex, path: &[u8]) -> SysResult<AbsoluteWalk> {
        let mut walk = AbsoluteWalk {
            blocked: false,
            onward: path.to_vec(),
        };
        let Some((dir, leaf)) = layer::split_last(path) else {
            return Ok(walk);
        };
        let comps: Vec<&[u8]> = dir
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        // The path below, rebuilt component by component as redirects rewrite it.
        let mut onward = RelPath::new();
        let mut prefix = RelPath::new();
        let mut reached = 0;
        for comp in &comps {
            let Some(idx) = self.lower_dir_index(li, &prefix, false)? else {
                break;
            };
            match idx.get(OsStr::from_bytes(comp)) {
                None => break,
                Some(e) if e.whiteout || e.kind != FileKind::Directory => {
                    walk.blocked = true;
                    break;
                }
                Some(_) => {}
            }
            prefix = layer::join(&prefix, OsStr::from_bytes(comp));
            reached += 1;
            let fd = match self.dir_fd(LayerId::Lower(li), &prefix) {
                Ok(fd) => fd,
                Err(_) => {
                    walk.blocked = true;
                    onward = layer::join(&onward, OsStr::from_bytes(comp));
                    break;
                }
            };
            let m = self.lowers[li].dir_markers(sys::borrow(&fd));
            if m.opaque {
                walk.blocked = true;
                onward = layer::join(&onward, OsStr::from_bytes(comp));
                continue;
            }
            onward = match m.redirect {
                Some(r) => match r.strip_prefix(b"/") {
                    // An absolute redirect below an opaque directory lets the search
                    // go on (the kernel resets its stop there too).
                    Some(abs) => {
                        walk.blocked = false;
                        abs.to_vec()
                    }
                    None => layer::join(&onward, OsStr::from_bytes(&r)),
                },
                None => layer::join(&onward, OsStr::from_bytes(comp)),
            };
        }
        for comp in &comps[reached..] {
            onward = layer::join(&onward, OsStr::from_bytes(comp));
        }
        walk.onward = layer::join(&onward, leaf);
        Ok(walk)
    }

    /// Position in `stack` of the first layer holding `name` (an entry or a whiteout);
    /// `None` when no layer does. Small stacks are simply walked.
    fn stack_start(&self, stack: &LowerStack, name: &OsStr) -> SysResult<Option<usize>> {
        const MIN_LAYERS: usize = 8;
        if stack.len() < MIN_LAYERS {
            return Ok(Some(0));
        }
        let names = match stack.names.get() {
            Some(n) => n.clone(),
            None => {
                let mut per_layer = Vec::with_capacity(stack.len());
                for l in stack.iter() {
                    per_layer.push(self.lower_dir_index(l.layer, &l.path, l.xattr_whiteouts)?);
                }
                let built = StackNames::build(&per_layer).map(Arc::new);
                stack.names.get_or_init(|| built).clone()
            }
        };
        Ok(match names {
            Some(n) => n.first(name),
            None => Some(0),
        })
    }

    /// Resolve `name` in `parent` across every layer. `None`: no such name (or whited out).
    pub(super) fn resolve(
        &self,
        t: &Tree,
        parent: &Node,
        name: &OsStr,
    ) -> SysResult<Option<Resolved>> {
        let (p_upper, p_lowers) = {
            let s = parent.state.read();
            if s.kind != FileKind::Directory {
                return Err(Errno::ENOTDIR);
            }
            (s.upper, s.lowers.dir_stack())
        };
        let mut upper_stat = None;
        let mut search = Search::Name(name.as_encoded_bytes().to_vec());
        let mut merge_lowers = true;
        let mut origin: Option<Vec<u8>> = None;
        let mut nlink_adjust = 0;
        let mut index = None;
        let mut metacopy = false;
        if let (true, Some(u)) = (p_upper, &self.upper) {
            let ppath = self.upper_path(t, parent);
            let dir = self.dir_fd(LayerId::Upper, &ppath)?;
            match u
                .layer
                .find(sys::borrow(&dir), name, &DirMarkers::default())?
            {
                Found::Whiteout => return Ok(None),
                Found::Missing => {}
                Found::Entry(st) => {
                    let is_dir = st.kind() == FileKind::Directory;
                    // The entry's markers are xattrs (an OCI opaque marker is a file in
                    // the directory). Where the system has no xattrs (the portable
                    // module) any other entry is not opened for them: a socket cannot
                    // be opened, and opening a device would run its driver.
                    // A directory is opened for its own markers too; a file's are read
                    // by name, its redirect and link-count adjustment with them.
                    let fd = if is_dir {
                        Some(sys::open_path_at(sys::borrow(&dir), name)?)
                    } else {
                        None
                    };
                    let fd = fd.as_ref().map(sys::borrow);
                    let marked = match fd {
                        Some(fd) => u.layer.upper_markers(fd),
                        None if sys::XATTRS => u.layer.upper_markers_at(sys::borrow(&dir), name),
                        None => Default::default(),
                    };
                    origin = marked.origin;
                    let has_origin = origin.is_some();
                    if is_dir {
                        let m = fd.map(|fd| u.layer.dir_markers(fd)).unwrap_or_default();
                        if m.opaque {
                            merge_lowers = false;
                        } else if let Some(r) = m.redirect {
                            search = redirect_search(r);
                        }
                    } else {
                        if st.kind() == FileKind::Regular && marked.metacopy {
                            if !self.metacopy {
                                // The kernel's answer without metacopy=on: its data
                                // is elsewhere, and following it is not allowed.
                                return Err(Errno::EPERM);
                            }
                            metacopy = true;
                            if let Some(r) = marked.redirect {
                                search = redirect_search(r);
                            }
                        }
                        if !has_origin && !metacopy {
                            merge_lowers = false;
                            if !sys::XATTRS && st.nlink > 1 {
                                // No origin record (the portable module): a copied lower
                                // hard link's adjustment and index entry are the ones
                                // kept for its inode (`W/lf-nlink`).
                                (nlink_adjust, index) = self.kept_index(st.ino);
                            }
                        } else if st.nlink > 1 {
                            nlink_adjust = marked.nlink_adjust;
                            index = self.index_of(origin.as_deref(), &st);
                        }
                    }
                    upper_stat = Some(st);
                }
            }
        }
        let upper_is_dir = upper_stat.is_some_and(|s| s.kind() == FileKind::Directory);
        let mut lowers = Vec::new();
        let mut first_lower: Option<Stat> = None;
        if merge_lowers {
            // The parent's lower stack is in layer order: walk it with a cursor so a
            // lookup costs one step per layer, not a search of the stack per layer.
            let mut cursor = 0;
            if let Search::Name(n) = &search {
                match self.stack_start(&p_lowers, OsStr::from_bytes(n))? {
                    Some(first) => cursor = first,
                    // No layer of the stack has the name.
                    None => cursor = p_lowers.len(),
                }
            }
            // Set when a redirect's path was blocked in the layer just searched.
            let mut stop_after = false;
            for (li, layer) in self.lowers.iter() {
                if stop_after {
                    break;
                }
                let mut onward = None;
                if let Search::Absolute(p) = &search {
                    let walk = self.walk_absolute(li, p)?;
                    stop_after = walk.blocked;
                    onward = Some(walk.onward);
                }
                let (path, xwh) = match &search {
                    Search::Name(n) => {
                        while p_lowers.get(cursor).is_some_and(|l| l.layer < li) {
                            cursor += 1;
                        }
                        match p_lowers.get(cursor) {
                            Some(pl) if pl.layer == li => (
                                layer::join(&pl.path, OsStr::from_bytes(n)),
                                pl.xattr_whiteouts,
                            ),
                            Some(_) => continue,
                            None => break,
                        }
                    }
                    Search::Absolute(p) => (p.clone(), false),
                };
                // The layers below this one search where this layer's directories point.
                if let Some(o) = onward {
                    search = Search::Absolute(o);
                }
                let Some((dpath, leaf)) = layer::split_last(&path) else {
                    continue;
                };
                // The layer's listing says whether to look at all.
                match self.lower_dir_index(li, dpath, xwh)? {
                    None => continue,
                    Some(idx) => match idx.get(leaf) {
                        None => continue,
                        Some(e) if e.whiteout => break,
                        Some(_) => {}
                    },
                }
                let dir = match self.dir_fd(LayerId::Lower(li), dpath) {
                    Ok(d) => d,
                    // A non-directory (or a symlink, never followed) on the way: not in this layer.
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => continue,
                    Err(e) => return Err(e),
                };
                let markers = DirMarkers {
                    xattr_whiteouts: xwh,
                    ..Default::default()
                };
                let st = match layer.find(sys::borrow(&dir), leaf, &markers)? {
                    Found::Whiteout => break,
                    Found::Missing => continue,
                    Found::Entry(st) => st,
                };
                let is_dir = st.kind() == FileKind::Directory;
                if upper_stat.is_some() && !upper_is_dir {
                    // A copied-up file: the lower entry at the same name is its origin
                    // if its file handle is the one recorded (any entry of the same
                    // type when the record is empty).
                    let same_kind = Some(st.kind()) == upper_stat.map(|s| s.kind());
                    let is_origin = match origin.as_deref() {
                        Some(o) if !o.is_empty() => sys::open_path_at(sys::borrow(&dir), leaf)
                            .ok()
                            .and_then(|fd| layer.origin_handle(sys::borrow(&fd)))
                            .is_some_and(|h| h == o),
                        _ => same_kind,
                    };
                    if is_origin {
                        lowers.push(LowerRef {
                            layer: li,
                            path,
                            xattr_whiteouts: false,
                        });
                        first_lower = Some(st);
                    } else if metacopy {
                        // The data a metadata-only copy names is not there.
                        return Err(Errno::EIO);
                    }
                    break;
                }
                if first_lower.is_none() && upper_stat.is_none() && !is_dir {
                    first_lower = Some(st);
                    lowers.push(LowerRef {
                        layer: li,
                        path,
                        xattr_whiteouts: false,
                    });
                    break;
                }
                if !is_dir {
                    // A non-directory below a directory ends the merge.
                    break;
                }
                let child = match self.dir_fd(LayerId::Lower(li), &path) {
                    Ok(c) => c,
                    Err(_) => break,
                };
                let m = layer.dir_markers(sys::borrow(&child));
                if first_lower.is_none() {
                    first_lower = Some(st);
                }
                lowers.push(LowerRef {
                    layer: li,
                    path,
                    xattr_whiteouts: m.xattr_whiteouts,
                });
                if m.opaque {
                    break;
                }
                if let Some(r) = m.redirect {
                    search = search.redirected(r);
                }
            }
        }
        if metacopy && lowers.is_empty() {
            // A metadata-only copy whose lower data is missing (the kernel: EIO).
            return Err(Errno::EIO);
        }
        let (stat, upper) = match (upper_stat, first_lower) {
            (Some(st), _) => (st, true),
            (None, Some(st)) => (st, false),
            (None, None) => return Ok(None),
        };
        let has_origin = origin.is_some();
        let ino = match (&upper_stat, lowers.first(), first_lower) {
            // A copy keeps the number of the lower file it came from.
            (Some(_), Some(l), Some(lst)) if has_origin => {
                self.fold_ino(self.lowers[l.layer].dev, lst.ino)
            }
            // A copy renamed or linked away from its lower name: find the lower file
            // by its recorded handle.
            (Some(st), None, _)
                if !upper_is_dir && origin.as_ref().is_some_and(|o| !o.is_empty()) =>
            {
                let o = origin.as_deref().unwrap_or_default();
                self.lowers
                    .layers()
                    .iter()
                    .find_map(|l| l.stat_origin(o).map(|lst| self.fold_ino(l.dev, lst.ino)))
                    .unwrap_or_else(|| {
                        self.fold_ino(self.upper.as_ref().map_or(0, |u| u.layer.dev), st.ino)
                    })
            }
            // The number of the object before it was copied, where the copy carries
            // no origin record (an upper without xattrs).
            (Some(st), _, _) => self.upper_number(st.ino),
            (None, Some(l), Some(lst)) => self.fold_ino(self.lowers[l.layer].dev, lst.ino),
            _ => 0,
        };
        Ok(Some(Resolved {
            stat,
            upper,
            metacopy,
            lowers,
            ino,
            nlink_adjust,
            index,
        }))
    }

    /// Whether some lower layer still shows `name` in `parent` (then removing it from
    /// the union needs a whiteout).
    pub(super) fn lower_positive(&self, parent: &Node, name: &OsStr) -> SysResult<bool> {
        let p_lowers = parent.state.read().lowers.dir_stack();
        for pl in p_lowers.iter() {
            let Some(idx) = self.lower_dir_index(pl.layer, &pl.path, pl.xattr_whiteouts)? else {
                continue;
            };
            match idx.get(name) {
                Some(e) if e.whiteout => return Ok(false),
                None => continue,
                Some(_) => return Ok(true),
            }
        }
        Ok(false)
    }
}

/// What walking an absolute redirect's path through one lower layer found.
struct AbsoluteWalk {
    blocked: bool,
    onward: RelPath,
}

impl Search {
    /// The search after a lower directory found by this one carries redirect `r`: an
    /// absolute one starts from the root; a relative one replaces the last name, also
    /// of an absolute path (a directory moved across commits, then renamed in place).
    fn redirected(self, r: Vec<u8>) -> Search {
        match (self, r.starts_with(b"/")) {
            (Search::Absolute(p), false) => {
                let dir = layer::split_last(&p).map_or(&[][..], |(d, _)| d);
                Search::Absolute(layer::join(dir, OsStr::from_bytes(&r)))
            }
            _ => redirect_search(r),
        }
    }
}

fn redirect_search(r: Vec<u8>) -> Search {
    match r.strip_prefix(b"/") {
        Some(abs) => Search::Absolute(abs.to_vec()),
        None => Search::Name(r),
    }
}
