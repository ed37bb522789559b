//! Faults, through real mounts: the upper filling up (ENOSPC), the upper failing (EIO, on a
//! fault-injecting FUSE filesystem built here), the daemon out of file descriptors, layers
//! changed or removed under a live mount, `kill -9` at any point of a change, and a mount
//! that must go live or fail within its wait under load. Each test checks what the caller
//! sees (the errno), that the daemon keeps serving, that nothing half-made becomes visible
//! and that the lower layers are never touched; where kernel overlayfs can run the same
//! setup, its errnos are the expected ones. What is promised and the last results:
//! `docs/reliability.md` ("Faults").
#![cfg(target_os = "linux")]

mod common;

#[path = "faults/support.rs"]
mod support;

#[path = "faults/changed.rs"]
mod changed;
#[path = "faults/crash.rs"]
mod crash;
#[path = "faults/eio.rs"]
mod eio;
#[path = "faults/enospc.rs"]
mod enospc;
#[path = "faults/faultfs.rs"]
mod faultfs;
#[path = "faults/fds.rs"]
mod fds;
#[path = "faults/liveness.rs"]
mod liveness;
