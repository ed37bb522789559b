//! The differential suite: every test runs the same operations on kernel overlayfs and on
//! layerfuse over identical layers and requires identical outcomes (see `common/mod.rs`).
//! Rules under test: `shared/design/semantics.md`.
#![cfg(target_os = "linux")]

mod common;

#[path = "union/changes.rs"]
mod changes;
#[path = "union/cli.rs"]
mod cli;
#[path = "union/copyup.rs"]
mod copyup;
#[path = "union/grafts.rs"]
mod grafts;
#[path = "union/ids.rs"]
mod ids;
// An upper exchanged with kernel overlayfs: the kernel's on-disk format, which the portable
// path does not write (OCI markers, no xattrs: docs/design.md "The portable path").
#[cfg(not(feature = "portable"))]
#[path = "union/interop.rs"]
mod interop;
#[path = "union/io.rs"]
mod io;
#[path = "union/lookup.rs"]
mod lookup;
// Metadata-only copies are marked and redirected by xattrs, which the portable path has not.
#[cfg(not(feature = "portable"))]
#[path = "union/metacopy.rs"]
mod metacopy;
#[path = "union/perms.rs"]
mod perms;
#[path = "union/rootless.rs"]
mod rootless;
#[path = "union/status.rs"]
mod status;
#[path = "union/watch.rs"]
mod watch;
