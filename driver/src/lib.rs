//! layerfuse as a storage driver: the layer store shared by every front end, and the
//! front ends runtimes talk to (Docker's graphdriver plugin, containerd's snapshotter).
//! Unions are mounted through `layerfuse`'s session API, never by running its CLI.
#![deny(unsafe_code)]

pub mod containerd;
pub mod docker;
pub mod store;
