//! layerfuse: a userspace union filesystem with kernel overlayfs semantics.
#![deny(unsafe_code)]
