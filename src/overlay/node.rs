//! Nodes: what the union knows of one inode the kernel holds, and the table of them.
//!
//! A node is identified by its inode number, which is also the number the kernel
//! sees as `st_ino` and as the FUSE node id. The number is derived from the object's
//! origin (the lower inode a copy came from), so it does not change on copy-up.
//! Nodes live while the kernel holds a lookup reference or a child node points to
//! them; the table never grows with entries the kernel has forgotten.

use super::ids::{LayerIndex, NodeId};
use super::tree::{Tree, TreeRead};
use crate::layer::RelPath;
use crate::sys::FileKind;
use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard, RwLock};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Where a node's content lives in one lower layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerRef {
    /// Which of the mount's lower layers.
    pub layer: LayerIndex,
    /// Path of the entry from that layer's root.
    pub path: RelPath,
    /// The directory may hold xattr whiteouts (`overlay.opaque=x`).
    pub xattr_whiteouts: bool,
}

/// A directory's lower stack, with the names of the whole stack once they are known.
///
/// Lower layers never change under a mount, so which layer of a stack first holds a
/// name (entry or whiteout) is fixed: with it a lookup goes straight to that layer
/// instead of consulting every layer's index, and its cost stays flat in the number
/// of layers.
#[derive(Debug, Default)]
pub struct LowerStack {
    /// Inline for the common stack of one (a lower file): one allocation per node less.
    refs: SmallVec<[LowerRef; 1]>,
    /// Position in `refs` of the first layer holding each name; `None` inside when the
    /// stack is too large to keep such a map.
    pub(super) names: std::sync::OnceLock<Option<Arc<super::lowerindex::StackNames>>>,
}

impl LowerStack {
    pub fn new(refs: Vec<LowerRef>) -> LowerStack {
        LowerStack {
            refs: refs.into_iter().collect(),
            names: Default::default(),
        }
    }

    /// A stack to keep in a node: the empty one (upper-only nodes) is shared by all.
    pub fn shared(refs: Vec<LowerRef>) -> Arc<LowerStack> {
        static EMPTY: std::sync::OnceLock<Arc<LowerStack>> = std::sync::OnceLock::new();
        if refs.is_empty() {
            EMPTY.get_or_init(Default::default).clone()
        } else {
            Arc::new(LowerStack::new(refs))
        }
    }
}

impl std::ops::Deref for LowerStack {
    type Target = [LowerRef];
    fn deref(&self) -> &[LowerRef] {
        &self.refs
    }
}

/// Where a node's lower entries are.
#[derive(Clone, Debug)]
pub enum Lowers {
    /// These entries, topmost first.
    Stack(Arc<LowerStack>),
    /// A file only in lower layer `.0`, found by its name: the entry is the node's name
    /// in the parent's directory of that layer. Most nodes of a tree walk are such files;
    /// they keep no path of their own. Only while the node is not in the upper layer
    /// (its parent and name never change then): a copy-up turns it into a `Stack`.
    ByName(LayerIndex),
}

impl Lowers {
    pub fn stack(refs: Vec<LowerRef>) -> Lowers {
        Lowers::Stack(LowerStack::shared(refs))
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Lowers::Stack(s) if s.is_empty())
    }

    pub fn count(&self) -> usize {
        match self {
            Lowers::Stack(s) => s.len(),
            Lowers::ByName(_) => 1,
        }
    }

    /// The stack of a directory (a file found by name has none of its own: empty).
    pub fn dir_stack(&self) -> Arc<LowerStack> {
        match self {
            Lowers::Stack(s) => s.clone(),
            Lowers::ByName(_) => LowerStack::shared(Vec::new()),
        }
    }
}

impl Default for Lowers {
    fn default() -> Lowers {
        Lowers::stack(Vec::new())
    }
}

/// The mutable part of a node, behind its lock.
#[derive(Debug)]
pub struct NodeState {
    /// The directory this node was last reached through (`None` only for the root).
    pub parent: Option<Arc<Node>>,
    /// The name in that directory.
    pub name: Box<std::ffi::OsStr>,
    pub kind: FileKind,
    /// The node exists in the upper layer at `parent`'s upper path + `name`.
    pub upper: bool,
    /// An upper regular file whose data is still that of its lower file (the first
    /// of `lowers`): the kernel's metadata-only copy, marked `overlay.metacopy`.
    pub metacopy: bool,
    /// Directories: the lower directories merged below the upper one, topmost first,
    /// down to the first opaque one. Other files: the lower file the node shows (or
    /// was copied up from), if any.
    pub lowers: Lowers,
    /// The last name of this node was removed.
    pub unlinked: bool,
    /// The name recorded here was removed while other names remain: the next lookup
    /// by another name takes its place.
    pub stale_name: bool,
    /// What few nodes have, out of line (a node costs memory as long as the kernel
    /// holds its inode, and the kernel may hold millions).
    extra: Option<Box<NodeExtra>>,
    /// Made through this mount and given no `security.capability` since: the kernel
    /// asks for that xattr before every write, and the answer is known.
    pub no_capability: bool,
}

/// One other name of a node: its directory and the name in it.
pub type Alias = (Arc<Node>, OsString);

/// The rare parts of a node.
#[derive(Debug, Default)]
struct NodeExtra {
    /// Added to the upper inode's link count (see `MarkerNames::nlink`).
    nlink_adjust: i64,
    /// Set for nodes inside a volume or bind mount (a graft): everything goes to its
    /// source.
    graft: Option<super::graft::GraftAt>,
    /// The index entry of a copied-up hard link: its data stays reachable there when
    /// the name recorded here is removed while other names remain.
    index: Option<IndexRef>,
    /// Other upper names this node was given through the mount (link), to fall back on
    /// when the recorded name is removed.
    aliases: Vec<Alias>,
    /// What the object looked like when its last name was removed (kept for the
    /// kernel's stat of an open file the daemon holds no fd of, e.g. a FIFO).
    removed: Option<crate::sys::Stat>,
}

/// An entry of the work dir's hard-link index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRef {
    /// In `W/index` (the kernel's); else in `W/lf-index`.
    pub kernel: bool,
    pub key: OsString,
}

impl NodeState {
    /// A node of `kind` named `name` in `parent`, with nothing else known yet.
    pub fn new(parent: Option<Arc<Node>>, name: OsString, kind: FileKind, upper: bool) -> Self {
        NodeState {
            parent,
            name: name.into(),
            kind,
            upper,
            metacopy: false,
            lowers: Lowers::default(),
            unlinked: false,
            stale_name: false,
            extra: None,
            no_capability: false,
        }
    }

    fn extra_mut(&mut self) -> &mut NodeExtra {
        self.extra.get_or_insert_default()
    }

    /// Added to the upper inode's link count (see `MarkerNames::nlink`).
    pub fn nlink_adjust(&self) -> i64 {
        self.extra.as_ref().map_or(0, |e| e.nlink_adjust)
    }

    pub fn set_nlink_adjust(&mut self, adjust: i64) {
        if adjust != 0 || self.extra.is_some() {
            self.extra_mut().nlink_adjust = adjust;
        }
    }

    /// Inside a volume or bind mount (a graft): where in it.
    pub fn graft(&self) -> Option<&super::graft::GraftAt> {
        self.extra.as_ref()?.graft.as_ref()
    }

    pub fn graft_mut(&mut self) -> Option<&mut super::graft::GraftAt> {
        self.extra.as_mut()?.graft.as_mut()
    }

    pub fn set_graft(&mut self, at: super::graft::GraftAt) {
        self.extra_mut().graft = Some(at);
    }

    /// The index entry of a copied-up hard link.
    pub fn index(&self) -> Option<&IndexRef> {
        self.extra.as_ref()?.index.as_ref()
    }

    pub fn set_index(&mut self, index: Option<IndexRef>) {
        if index.is_some() || self.extra.is_some() {
            self.extra_mut().index = index;
        }
    }

    /// Other upper names given through the mount.
    pub fn aliases(&self) -> &[Alias] {
        self.extra.as_ref().map_or(&[], |e| &e.aliases)
    }

    pub fn aliases_mut(&mut self) -> &mut Vec<Alias> {
        &mut self.extra_mut().aliases
    }

    /// The attributes the object had when its last name went.
    pub fn removed(&self) -> Option<&crate::sys::Stat> {
        self.extra.as_ref()?.removed.as_ref()
    }

    pub fn set_removed(&mut self, st: Option<crate::sys::Stat>) {
        if st.is_some() || self.extra.is_some() {
            self.extra_mut().removed = st;
        }
    }

    /// The data read through this node is the upper file's own.
    pub fn data_upper(&self) -> bool {
        self.upper && !self.metacopy
    }

    /// A directory present in more than one layer (reports nlink 1, as the kernel does).
    pub fn is_merged_dir(&self) -> bool {
        self.kind == FileKind::Directory && usize::from(self.upper) + self.lowers.count() > 1
    }
}

#[derive(Debug)]
pub struct Node {
    pub ino: NodeId,
    /// References the kernel holds (lookup replies minus forgets).
    lookups: AtomicU64,
    pub state: RwLock<NodeState>,
    /// Held while this node is copied up, so one copy runs at a time per node. A
    /// file's copy-up holds it while it lets go of the tree lock to copy data, so
    /// under the write lock it may only be tried: see the methods below.
    copy_up: Mutex<()>,
}

impl Node {
    pub fn new(ino: NodeId, state: NodeState) -> Node {
        Node {
            ino,
            lookups: AtomicU64::new(0),
            state: RwLock::new(state),
            copy_up: Mutex::new(()),
        }
    }

    pub fn kind(&self) -> FileKind {
        self.state.read().kind
    }

    pub fn parent(&self) -> Option<Arc<Node>> {
        self.state.read().parent.clone()
    }

    /// Wait for this node's turn to be copied up. Only with the tree lock held for
    /// reading: whoever holds the turn and waits to take the lock again then gets it.
    pub fn copy_up_turn(&self, _t: &TreeRead) -> MutexGuard<'_, ()> {
        self.copy_up.lock()
    }

    /// This node's turn to be copied up if nobody has it (under any tree guard).
    pub fn try_copy_up_turn(&self, _t: &Tree) -> Option<MutexGuard<'_, ()>> {
        self.copy_up.try_lock()
    }

    /// A directory's turn to be copied up, under any tree guard: a directory's copy
    /// never lets go of the tree lock, so its holder never waits for it.
    pub fn dir_copy_up_turn(&self, _t: &Tree) -> MutexGuard<'_, ()> {
        debug_assert_eq!(self.kind(), FileKind::Directory);
        self.copy_up.lock()
    }
}

/// All nodes the kernel may name, by inode number.
#[derive(Debug, Default)]
pub struct NodeTable {
    nodes: DashMap<NodeId, Arc<Node>>,
    /// Numbers for objects whose natural number is taken by another live node
    /// (e.g. an upper inode number reused while the old file is still open).
    next_synthetic: AtomicU64,
    /// Natural number → the synthetic number of the live object that stands in for
    /// it, so that every lookup of that object finds the one node the kernel knows
    /// (two nodes of one object would each keep their own name, and a rename
    /// through one would leave the other naming the old path). Taken before any
    /// shard of `nodes`; touched only while some natural number is taken.
    stand_ins: Mutex<HashMap<u64, NodeId>>,
    /// Entries in `stand_ins` plus lookups inside [`NodeTable::stand_in`], read
    /// without its lock. While it is not zero a free natural slot is not taken
    /// without that lock: a lookup making a stand-in announces itself here
    /// before it looks at the slot, so a lookup that then finds the slot free (its old
    /// holder just forgotten) takes the locked path and finds the stand-in.
    stand_in_busy: AtomicUsize,
    /// Nodes evicted so far: every `TRIM_EVERY` the allocator is asked to give the
    /// freed memory back, so the daemon shrinks when the kernel forgets inodes.
    evicted: AtomicU64,
}

/// Evictions between two returns of freed memory to the OS.
const TRIM_EVERY: u64 = 1 << 16;

/// Inode numbers at or above this are synthetic.
const SYNTHETIC_BASE: u64 = 1 << 63;

impl NodeTable {
    pub fn new(root: Node) -> NodeTable {
        let t = NodeTable {
            nodes: DashMap::new(),
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
            stand_ins: Mutex::default(),
            stand_in_busy: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        };
        root.lookups.store(1, Ordering::Relaxed);
        t.nodes.insert(NodeId::ROOT, Arc::new(root));
        t
    }

    pub fn get(&self, ino: NodeId) -> Option<Arc<Node>> {
        self.nodes.get(&ino).map(|n| n.clone())
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// An object was just made with natural number `ino`: a new inode, so no live
    /// object has that number. A node still claiming it (at the number itself, or
    /// standing in for it) is of an object gone behind the union's back (removed from
    /// the upper or a lower layer directly, its inode number reused since): it is marked
    /// removed, so that no lookup of the new object takes that node, whose name leads
    /// nowhere now.
    pub fn vacate(&self, ino: u64) {
        if ino == 0 || ino == NodeId::ROOT.get() {
            return;
        }
        let stand_in = if self.stand_in_busy.load(Ordering::Acquire) > 0 {
            self.stand_ins.lock().get(&ino).copied()
        } else {
            None
        };
        for n in [Some(NodeId::new(ino)), stand_in].into_iter().flatten() {
            if let Some(node) = self.get(n) {
                node.state.write().unlinked = true;
            }
        }
    }

    /// Find the node for `ino`, or make one with `make`. `same` decides whether an
    /// existing node is the same object; if not, the new object gets a synthetic number.
    /// Counts one kernel reference when `count` is set.
    pub fn get_or_insert(
        &self,
        ino: u64,
        count: bool,
        same: impl Fn(&Node) -> bool,
        make: impl FnOnce(NodeId) -> Node,
    ) -> Arc<Node> {
        let ino = if ino == NodeId::ROOT.get() || ino == 0 {
            self.synthetic()
        } else {
            NodeId::new(ino)
        };
        let node = match self.natural_slot(ino, &same, make, true) {
            Ok(node) => node,
            Err(make) => self.stand_in(ino, &same, make),
        };
        if count {
            node.lookups.fetch_add(1, Ordering::Relaxed);
        }
        node
    }

    /// The node at `ino` itself if it is the same object, or a new one there if the
    /// slot is free; `Err(make)` when another object holds the slot, or, on the
    /// unlocked path (`unlocked`), when the slot is free but a stand-in may be in the
    /// making: the shard lock orders this check after that lookup's announcement.
    fn natural_slot<F: FnOnce(NodeId) -> Node>(
        &self,
        ino: NodeId,
        same: &impl Fn(&Node) -> bool,
        make: F,
        unlocked: bool,
    ) -> Result<Arc<Node>, F> {
        match self.nodes.entry(ino) {
            dashmap::Entry::Occupied(e) if same(e.get()) => Ok(e.get().clone()),
            dashmap::Entry::Occupied(_) => Err(make),
            dashmap::Entry::Vacant(_)
                if unlocked && self.stand_in_busy.load(Ordering::Acquire) != 0 =>
            {
                Err(make)
            }
            dashmap::Entry::Vacant(v) => Ok(v.insert(Arc::new(make(ino))).clone()),
        }
    }

    /// [`NodeTable::get_or_insert`] while some natural number is taken: the object's
    /// stand-in if it has one, else its natural slot, else a new stand-in.
    fn stand_in(
        &self,
        ino: NodeId,
        same: &impl Fn(&Node) -> bool,
        make: impl FnOnce(NodeId) -> Node,
    ) -> Arc<Node> {
        // Announced before the slot is looked at (see `stand_in_busy`).
        self.stand_in_busy.fetch_add(1, Ordering::AcqRel);
        let (node, dropped) = self.stand_in_locked(ino, same, make);
        self.stand_in_busy.fetch_sub(1, Ordering::AcqRel);
        // A stand-in no longer standing in, kept only for that (the kernel forgot it):
        // it goes now.
        if let Some(n) = dropped {
            self.evict(n);
        }
        node
    }

    fn stand_in_locked(
        &self,
        ino: NodeId,
        same: &impl Fn(&Node) -> bool,
        make: impl FnOnce(NodeId) -> Node,
    ) -> (Arc<Node>, Option<NodeId>) {
        let mut stand_ins = self.stand_ins.lock();
        let mut dropped = None;
        if let Some(&n) = stand_ins.get(&ino.get()) {
            match self.get(n) {
                Some(node) if same(&node) => return (node, None),
                // Forgotten, or no longer this object: the natural slot decides again.
                _ => {
                    stand_ins.remove(&ino.get());
                    self.stand_in_busy.fetch_sub(1, Ordering::Release);
                    dropped = Some(n);
                }
            }
        }
        // The shard lock of `ino` is held while its entry is alive: a synthetic number
        // is inserted only after the entry is dropped (it may hash to the same shard).
        let make = match self.natural_slot(ino, same, make, false) {
            Ok(node) => return (node, dropped),
            Err(make) => make,
        };
        let n = self.synthetic();
        let node = Arc::new(make(n));
        self.nodes.insert(n, node.clone());
        stand_ins.insert(ino.get(), n);
        self.stand_in_busy.fetch_add(1, Ordering::Release);
        (node, dropped)
    }

    fn synthetic(&self) -> NodeId {
        NodeId::new(self.next_synthetic.fetch_add(1, Ordering::Relaxed))
    }

    /// Visit every node (for rare whole-table fix-ups).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Node>)) {
        for n in self.nodes.iter() {
            f(n.value());
        }
    }

    /// One more kernel reference to an existing node.
    pub fn count_lookup(&self, node: &Node) {
        node.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// The kernel dropped `n` references. A node with none left, that no child
    /// points to, leaves the table, and its parent may follow.
    pub fn forget(&self, ino: NodeId, n: u64) {
        if ino == NodeId::ROOT {
            return;
        }
        let Some(node) = self.get(ino) else { return };
        let prev = node
            .lookups
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            })
            .unwrap_or(0);
        if prev <= n {
            drop(node);
            self.evict(ino);
        }
    }

    /// Remove `ino` if nothing refers to it any more, then consider its parent.
    fn evict(&self, mut ino: NodeId) {
        loop {
            // A stand-in stays while its object lives, though the kernel forgot it: its
            // number is the object's `st_ino`, and a new stand-in (or the natural number,
            // once free) would change it. It goes when its object is removed (a removal
            // looks the object up, so a forget follows). Asked before the shard lock,
            // which is taken after `stand_ins`, never before.
            let standing_in = ino.get() >= SYNTHETIC_BASE
                && self.stand_in_busy.load(Ordering::Acquire) > 0
                && self.stand_ins.lock().values().any(|&n| n == ino);
            let removed = self.nodes.remove_if(&ino, |_, node| {
                // The table's own Arc is the only one left, and the kernel holds none.
                Arc::strong_count(node) == 1
                    && node.lookups.load(Ordering::Acquire) == 0
                    && (!standing_in || node.state.read().unlinked)
            });
            let Some((_, node)) = removed else { return };
            if ino.get() >= SYNTHETIC_BASE && self.stand_in_busy.load(Ordering::Acquire) > 0 {
                let mut stand_ins = self.stand_ins.lock();
                let before = stand_ins.len();
                stand_ins.retain(|_, n| *n != ino);
                self.stand_in_busy
                    .fetch_sub(before - stand_ins.len(), Ordering::Release);
            }
            let parent = node.state.write().parent.take();
            drop(node);
            if (self.evicted.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(TRIM_EVERY) {
                // The table's own space too: it does not shrink by itself.
                self.nodes.shrink_to_fit();
                crate::sys::release_free_memory();
            }
            match parent {
                Some(p) if p.ino != NodeId::ROOT => {
                    ino = p.ino;
                    drop(p);
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: NodeId) -> Node {
        Node::new(
            ino,
            NodeState::new(None, "f".into(), FileKind::Regular, true),
        )
    }

    fn live(n: &Node) -> bool {
        !n.state.read().unlinked
    }

    /// An upper inode number reused while the kernel still holds the removed file's
    /// node: every lookup of the new object must find one node, under one number, until
    /// the kernel forgets it, and the natural number serves again after both are gone.
    #[test]
    fn a_reused_number_gives_one_stand_in_per_object() {
        let t = NodeTable::new(file(NodeId::ROOT));
        let old = t.get_or_insert(42, true, live, file);
        old.state.write().unlinked = true;
        let a = t.get_or_insert(42, true, live, file);
        let b = t.get_or_insert(42, true, live, file);
        assert!(Arc::ptr_eq(&a, &b), "two nodes for one object");
        assert!(a.ino.get() >= SYNTHETIC_BASE);
        assert_eq!(
            t.get(NodeId::new(42)).map(|n| n.ino),
            Some(NodeId::new(42)),
            "the old node keeps its number"
        );
        // The old node goes; the object keeps its stand-in.
        drop(old);
        t.forget(NodeId::new(42), 1);
        assert!(t.get(NodeId::new(42)).is_none());
        let c = t.get_or_insert(42, false, live, file);
        assert!(
            Arc::ptr_eq(&a, &c),
            "a second node after the old one was forgotten"
        );
        // The kernel forgets the stand-in too: the object keeps its number (issue 17).
        let n = a.ino;
        drop((a, b, c));
        t.forget(n, 2);
        let again = t.get_or_insert(42, true, live, file);
        assert_eq!(
            again.ino, n,
            "a live object's number changed after a forget"
        );
        // Once the object is removed and forgotten, the natural number serves again.
        again.state.write().unlinked = true;
        drop(again);
        t.forget(n, 1);
        assert!(t.get(n).is_none());
        let d = t.get_or_insert(42, false, live, file);
        assert_eq!(d.ino, NodeId::new(42));
        assert_eq!(t.stand_in_busy.load(Ordering::Acquire), 0);
    }

    /// Two lookups of a new object whose number is taken, racing with the kernel
    /// forgetting the old object: both must find the same node, whichever way the
    /// three interleave (one may make a stand-in while the other finds the number free).
    #[test]
    fn lookups_racing_a_forget_find_one_node() {
        let rounds = std::env::var("LAYERFUSE_RACE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let start = std::sync::Barrier::new(3);
        for round in 0..rounds {
            let t = NodeTable::new(file(NodeId::ROOT));
            let old = t.get_or_insert(42, true, live, file);
            old.state.write().unlinked = true;
            drop(old);
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(|| {
                    start.wait();
                    t.get_or_insert(42, true, live, file)
                });
                let b = s.spawn(|| {
                    start.wait();
                    t.get_or_insert(42, true, live, file)
                });
                start.wait();
                t.forget(NodeId::new(42), 1);
                (a.join().expect("lookup a"), b.join().expect("lookup b"))
            });
            assert!(
                Arc::ptr_eq(&a, &b),
                "round {round}: two nodes for one object ({} and {})",
                a.ino,
                b.ino
            );
        }
    }

    /// Every order of the kernel's lookups and forgets around one reused number, in one
    /// thread so that each order is replayed exactly (issue 17: a file's `st_ino` changed
    /// across a rename under load). The number 42 is first held by a removed object the
    /// kernel has not forgotten yet; file F reuses it, is later removed, and G reuses it
    /// again. Rules checked after every step: an object keeps the first number it was
    /// given for as long as it exists, whenever the kernel forgets and looks it up again;
    /// two live objects never share a number; once the kernel holds nothing, only nodes
    /// of live objects remain.
    #[test]
    fn reused_numbers_survive_every_order_of_lookups_and_forgets() {
        #[derive(Clone, Copy, Debug)]
        enum Ev {
            LookF,
            ForgetF,
            ForgetOld,
            RemoveF,
            LookG,
            ForgetG,
        }
        const ALL: [Ev; 6] = [
            Ev::LookF,
            Ev::ForgetF,
            Ev::ForgetOld,
            Ev::RemoveF,
            Ev::LookG,
            Ev::ForgetG,
        ];
        // A node stands for object `tag`: the table's `same` compares the object an
        // inode number now names with the node's, as lookup does (unlinked: never again).
        fn obj(tag: &'static str) -> impl Fn(NodeId) -> Node {
            move |ino| {
                Node::new(
                    ino,
                    NodeState::new(None, tag.into(), FileKind::Regular, true),
                )
            }
        }
        fn is(tag: &'static str) -> impl Fn(&Node) -> bool {
            move |n| live(n) && &*n.state.read().name == std::ffi::OsStr::new(tag)
        }
        fn run(seq: &[Ev]) -> Result<(), String> {
            let t = NodeTable::new(file(NodeId::ROOT));
            let old = t.get_or_insert(42, true, is("old"), obj("old"));
            old.state.write().unlinked = true;
            drop(old);
            // Kernel references held, and the first number each object was given.
            let (mut held_old, mut held_f, mut held_g) = (1u64, 0u64, 0u64);
            let (mut f_ino, mut g_ino): (Option<NodeId>, Option<NodeId>) = (None, None);
            let mut f_removed = false;
            let look = |tag, held: &mut u64, first: &mut Option<NodeId>| {
                let n = t.get_or_insert(42, true, is(tag), obj(tag));
                *held += 1;
                match *first {
                    Some(i) if i != n.ino => {
                        Err(format!("{tag} was {i}, a lookup now gives {}", n.ino))
                    }
                    _ => {
                        *first = Some(n.ino);
                        Ok(())
                    }
                }
            };
            for (step, ev) in seq.iter().enumerate() {
                let at = |e: String| format!("step {step} ({ev:?}) of {seq:?}: {e}");
                match ev {
                    Ev::LookF if !f_removed => look("F", &mut held_f, &mut f_ino).map_err(at)?,
                    Ev::LookG if f_removed => look("G", &mut held_g, &mut g_ino).map_err(at)?,
                    Ev::ForgetF if held_f > 0 => {
                        t.forget(f_ino.unwrap_or(NodeId::ROOT), held_f);
                        held_f = 0;
                    }
                    Ev::ForgetG if held_g > 0 => {
                        t.forget(g_ino.unwrap_or(NodeId::ROOT), held_g);
                        held_g = 0;
                    }
                    Ev::ForgetOld if held_old > 0 => {
                        t.forget(NodeId::new(42), held_old);
                        held_old = 0;
                    }
                    // Removing F goes through a lookup of it (the kernel's unlink).
                    Ev::RemoveF if !f_removed => {
                        look("F", &mut held_f, &mut f_ino).map_err(at)?;
                        let n = t.get(f_ino.unwrap_or(NodeId::ROOT)).ok_or("no F")?;
                        n.state.write().unlinked = true;
                        f_removed = true;
                    }
                    _ => {}
                }
                if !f_removed && f_ino.is_some() && f_ino == g_ino {
                    return Err(at("F and G share a number".into()));
                }
            }
            // The kernel lets go of everything: only live objects may keep a node.
            for (ino, held) in [
                (Some(NodeId::new(42)), held_old),
                (f_ino, held_f),
                (g_ino, held_g),
            ] {
                if let (Some(i), true) = (ino, held > 0) {
                    t.forget(i, held);
                }
            }
            let mut left = Vec::new();
            t.for_each(|n| {
                if n.ino != NodeId::ROOT && !live(n) {
                    left.push(n.ino);
                }
            });
            if !left.is_empty() {
                return Err(format!("{seq:?}: nodes of removed objects left: {left:?}"));
            }
            Ok(())
        }
        let mut seqs: Vec<Vec<Ev>> = vec![vec![Ev::LookF]];
        let mut runs = 0;
        for _ in 0..7 {
            let mut next = Vec::new();
            for s in &seqs {
                for e in ALL {
                    let mut n = s.clone();
                    n.push(e);
                    run(&n).unwrap_or_else(|e| panic!("{e}"));
                    runs += 1;
                    next.push(n);
                }
            }
            seqs = next;
        }
        assert!(runs > 300_000, "only {runs} orders tried");
    }
}
