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
// Only the io_uring transport (Linux) writes whole messages; the policy uses its constants.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub mod wire;

pub use mount::{MountOptions, Transport, mount};
