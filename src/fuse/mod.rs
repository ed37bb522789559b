//! The wire: the FUSE protocol and fuser. The request policy (`policy`: cache
//! lifetimes, negative entries, listing streams, passthrough, invalidations, error
//! mapping, and the protocol flags it decides on, `flags`) is one, and two transports
//! carry it: the classic `/dev/fuse` through fuser (`devfuse`, here) and
//! FUSE-over-io_uring with layerfuse's own protocol code (`crate::uring`). Cache
//! lifetimes are long: every change to the union goes through this mount. A
//! transport is handed a mounted device (or, rootless, fuser mounts through
//! fusermount3): the mount itself is the session's.

mod convert;
mod devfuse;
mod dirstream;
pub mod flags;
mod passthrough;
pub mod policy;

pub use devfuse::{DevServing, FuserMount, mount_and_serve, serve_device};
