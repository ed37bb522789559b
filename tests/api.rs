//! The mount-free tier: the union driven through its Rust API (`Overlay`), no kernel
//! mount of the union in between, so each check is fast, shows exactly which call did
//! what, and needs no `/dev/fuse`. The differential suite (`tests/union.rs`) stays the
//! judge of behaviour; this tier pins down the union's own rules directly.
//!
//! - `routing`, `changes`: which layer a name comes from, whiteouts, opaque
//!   directories, merged listings, copy-up, rename, hard links. Any platform the union
//!   builds on; no privilege beyond owning the temp dir (a 0/0 whiteout device needs
//!   none since Linux 5.8).
//! - `markers` (Linux): the kernel's xattr and device markers, read and written, and
//!   xattr hiding; only the `trusted.*` check needs root.
//! - `locking` (Linux): lock order, against a lower layer served by a FUSE mount of the
//!   test's own (root and `/dev/fuse`), and what other requests see of a removal held
//!   half-way (`open_gate`: fanotify holds an open of the union's; root).

#[path = "api/fixture.rs"]
mod fixture;

#[path = "api/changes.rs"]
mod changes;
#[path = "api/routing.rs"]
mod routing;

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
#[path = "api/locking.rs"]
mod locking;
#[cfg(target_os = "linux")]
#[path = "api/markers.rs"]
mod markers;
#[cfg(target_os = "linux")]
#[path = "api/open_gate.rs"]
mod open_gate;
