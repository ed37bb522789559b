//! layerfuse: a userspace union filesystem with kernel overlayfs semantics.
//!
//! The code is four layers, each depending only on the ones below it:
//! `sys` (every syscall and every `unsafe` block) ← `layer` (one directory tree and
//! its markers) ← `overlay` (the union as a plain Rust API) ← `fuse` (the wire).
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod fuse;
pub mod layer;
pub mod overlay;
pub mod sys;
pub mod volumes;
