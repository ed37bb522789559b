//! The identifiers that travel through the union's API: which node (inode) a request
//! is about, which open file or directory, which lower layer. Each is its own type so
//! that a handle can never be passed where a node is meant, nor a layer's position
//! confused with a count.

use crate::layer::Layer;

/// A node of the union: its inode number as the kernel sees it (`st_ino`), which is
/// also the id the kernel names it by in requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    /// The root directory (the FUSE root id).
    pub const ROOT: NodeId = NodeId(1);

    pub const fn new(raw: u64) -> NodeId {
        NodeId(raw)
    }

    /// The number as the wire and `st_ino` carry it.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An open file or directory of the union (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandleId(u64);

impl HandleId {
    pub const fn new(raw: u64) -> HandleId {
        HandleId(raw)
    }

    /// The number as the wire carries it.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The position of a lower layer in the mount's stack (0 = topmost lower). Made only
/// by [`LowerLayers`], so indexing the stack with one never fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerIndex(usize);

impl LayerIndex {
    pub fn get(self) -> usize {
        self.0
    }
}

/// The mount's lower layers, topmost first.
#[derive(Debug)]
pub(crate) struct LowerLayers(Vec<Layer>);

impl LowerLayers {
    pub(crate) fn new(layers: Vec<Layer>) -> LowerLayers {
        LowerLayers(layers)
    }

    /// Every layer with its index, topmost first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (LayerIndex, &Layer)> {
        self.0.iter().enumerate().map(|(i, l)| (LayerIndex(i), l))
    }

    /// The layers alone, topmost first.
    pub(crate) fn layers(&self) -> &[Layer] {
        &self.0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn first(&self) -> Option<&Layer> {
        self.0.first()
    }
}

impl std::ops::Index<LayerIndex> for LowerLayers {
    type Output = Layer;
    fn index(&self, i: LayerIndex) -> &Layer {
        // In range by construction: a LayerIndex comes from `iter` of this stack.
        &self.0[i.0]
    }
}

#[cfg(test)]
impl LayerIndex {
    pub(crate) fn for_test(i: usize) -> LayerIndex {
        LayerIndex(i)
    }
}
