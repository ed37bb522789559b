//! The mount-free tier: the union driven through its Rust API (`Overlay`), no kernel
//! mount of the union in between, so each check is fast and shows exactly which call
//! did what. The differential suite (`tests/union.rs`) stays the judge of behaviour;
//! this tier pins down the union's own rules (locking, routing) directly.
#![cfg(target_os = "linux")]

mod common;

#[path = "api/blocking_lower.rs"]
mod blocking_lower;
#[path = "api/locking.rs"]
mod locking;
