//! The wire: the FUSE protocol and fuser. The request policy (`policy`: cache
//! lifetimes, negative entries, listing streams, passthrough, invalidations, error
//! mapping, and the protocol flags it decides on, `flags`) is one, and two transports
//! carry it: the classic `/dev/fuse` through fuser (`devfuse`, here) and
//! FUSE-over-io_uring with layerfuse's own protocol code (`crate::uring`). Cache
//! lifetimes are long: every change to the union goes through this mount.

mod convert;
mod devfuse;
mod dirstream;
pub mod flags;
mod mount;
mod passthrough;
pub mod policy;

pub use mount::{MountOptions, Transport, mount};
