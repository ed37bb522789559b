//! layerfuse: a userspace union filesystem with kernel overlayfs semantics.
//!
//! The code is layers, each depending only on the ones below it: `sys` (every
//! syscall and every `unsafe` block) ← `layer` (one directory tree and its markers)
//! ← `overlay` (the union as a plain Rust API) ← `fuse` (the wire) ← [`session`]
//! (one mount's life: what the `layerfuse` binary and the storage driver call).
//!
//! The public surface: [`session`] to mount, [`volumes`] for the named volume store,
//! and `overlay`/`layer` for code that drives the union without a mount (benchmarks,
//! mount-free tests, the layer store). `sys` and the wire stay inside.
#![deny(unsafe_code)]

mod config;
pub mod counters;
mod error;
mod fuse;
pub mod layer;
pub mod overlay;
pub mod session;
mod sys;
#[cfg(target_os = "linux")]
mod uring;
pub mod volumes;

pub use error::{SetupError, SetupErrorKind};
