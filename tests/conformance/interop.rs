//! On-disk interop and remount consistency: one implementation writes the upper through a
//! random sequence, another (or the same, remounted) reads it over the same lowers, and the
//! merged trees must be equal — the kernel reading layerfuse's upper, layerfuse reading the
//! kernel's (whiteouts, opaque dirs, redirects, index), and layerfuse reading its own.

use super::mount::{Impl, Mounted, Scratch};
use super::ops::{Side, exec};
use super::runner::{Case, Failure, SideDirs};
use super::snapshot::{diff, snapshot};

/// `writer` runs the ops; its live tree must equal the tree `reader` shows after a remount.
/// Inode identity is not compared across mounts; hard-link groups are.
pub fn interop_case(case: &Case, writer: Impl, reader: Impl) -> Result<(), Failure> {
    let scratch = Scratch::new();
    // the kernel cannot read OCI whiteouts, so OCI layers only when layerfuse reads and writes
    let oci_ok = writer == Impl::Layerfuse && reader == Impl::Layerfuse;
    let dirs = SideDirs::write(&scratch, "X", case, oci_ok);
    let layers = dirs.layers(case);
    let mnt = scratch.dir.join("X/m");
    let w = Mounted::mount(writer, &layers, &mnt)
        .map_err(|e| Failure::Setup(format!("{} (writer): {e}", writer.name())))?;
    let mut side = Side::new(&w.mnt);
    for op in &case.ops {
        exec(op, &mut side);
    }
    side.close_all();
    let live = snapshot(&w.mnt).described(None);
    drop(side);
    w.unmount()
        .map_err(|e| Failure::Setup(format!("{} (writer) unmount: {e}", writer.name())))?;
    let r = Mounted::mount(reader, &layers, &mnt)
        .map_err(|e| Failure::Setup(format!("{} (reader): {e}", reader.name())))?;
    let again = snapshot(&r.mnt).described(None);
    let w_name = format!("{}(live)", writer.name());
    let r_name = format!("{}(remount)", reader.name());
    // the comparer expects the kernel (if any) as its first side, to tolerate its quirks
    let (d, kind) = if reader == Impl::Kernel && writer != Impl::Kernel {
        diff(&again, &live, &r_name, &w_name)
    } else {
        diff(&live, &again, &w_name, &r_name)
    };
    r.unmount()
        .map_err(|e| Failure::Setup(format!("{} (reader) unmount: {e}", reader.name())))?;
    if d.is_empty() {
        Ok(())
    } else {
        Err(Failure::Final(d, kind))
    }
}

/// Regression tests for interop call this.
#[allow(dead_code)]
pub fn check_interop(case: &Case, writer: Impl, reader: Impl) {
    if !super::mount::environment_ok() {
        return;
    }
    let _g = crate::serial();
    crate::setup();
    if let Err(f) = interop_case(case, writer, reader) {
        panic!("{}", f.describe(reader.name()));
    }
}
