//! The wire: the only module that knows the FUSE protocol and fuser. The request
//! policy (`policy`: cache lifetimes, negative entries, listing streams,
//! passthrough, invalidations, error mapping) is one, and two transports carry it:
//! the classic `/dev/fuse` through fuser (`devfuse`) and FUSE-over-io_uring with
//! layerfuse's own protocol code (`uring`, bytes in `wire`). Cache lifetimes are
//! long: every change to the union goes through this mount.

mod convert;
mod devfuse;
mod dirstream;
mod mount;
mod passthrough;
pub mod policy;
#[cfg(target_os = "linux")]
mod uring;
pub mod wire;

pub use mount::{MountOptions, Transport, mount};
