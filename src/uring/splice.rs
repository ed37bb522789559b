//! READ replies spliced from the file (`--transport splice`): the reply header is
//! written into a pipe, the file's page-cache pages follow it by reference
//! (splice(2), no copy), and the pipe goes into `/dev/fuse` in one splice, where the
//! kernel copies the pages once into the mount's own page cache. The copying path
//! reads them into a buffer of the daemon first, which on these machines costs more
//! CPU than the kernel's copy (docs/benchmarks.md, "Sequential read").
//!
//! A pipe holds the header and the data only if it has a slot per page: the kernel
//! is told to send READs of at most [`max_read_pages`] pages, and a READ that would
//! not fit all the same (an unaligned one) is answered by copying.

use super::{UPolicy, reply_dev, wire};
use crate::overlay::{Errno, HandleId};
use crate::sys::{self, uring as sysuring};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

const PAGE: usize = 4096;
/// The pipe asked for: a 1 MiB READ, its header and an unaligned page.
const WANTED: usize = (1 << 20) + 2 * PAGE;

pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    /// Where a READ that cannot be spliced is read (and a short splice drained).
    buf: Vec<u8>,
}

/// Pages per READ for the kernel (INIT's `max_pages`): what a pipe of this system
/// carries with its header, at most 256 (1 MiB).
pub(super) fn max_read_pages() -> u16 {
    match sysuring::pipe_for_splice(WANTED) {
        Ok((_, _, cap)) => (cap / PAGE).saturating_sub(2).clamp(1, 256) as u16,
        Err(_) => 256,
    }
}

impl Pipe {
    /// None where no pipe can be made (READs are then copied).
    pub(super) fn new() -> Option<Pipe> {
        match sysuring::pipe_for_splice(WANTED) {
            Ok((read, write, capacity)) => Some(Pipe {
                read,
                write,
                capacity,
                buf: Vec::new(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no pipe for splicing; READ replies are copied");
                None
            }
        }
    }

    /// Answer READ `unique` of `size` bytes at `offset` of open file `fh` on `dev`.
    /// An error is for the caller to send; once the header is in the pipe every
    /// outcome is answered here.
    pub(super) fn answer_read(
        &mut self,
        policy: &UPolicy,
        dev: &Arc<OwnedFd>,
        unique: u64,
        fh: HandleId,
        offset: u64,
        size: u32,
    ) -> Result<(), Errno> {
        // A READ the pipe cannot carry (never one the kernel sends under INIT's
        // max_pages, page-aligned) takes the copying path.
        let slots = 1 + (offset as usize % PAGE + size as usize).div_ceil(PAGE);
        if slots * PAGE > self.capacity {
            self.buf.resize(size as usize, 0);
            let n = policy.read_into(fh, offset, &mut self.buf)?;
            reply_dev(dev, unique, 0, &self.buf[..n]);
            return Ok(());
        }
        let fd = policy.read_source(fh, offset, size as u64)?;
        let len = sys::stat_fd(fd.as_fd())?.size;
        let n = (size as u64).min(len.saturating_sub(offset)) as usize;
        let header = wire::out_header((wire::OUT_HEADER_LEN + n) as u32, 0, unique);
        sysuring::write_once(self.write.as_fd(), &header)?;
        let mut moved = 0;
        while moved < n {
            match sysuring::splice(
                fd.as_fd(),
                Some(offset + moved as u64),
                self.write.as_fd(),
                n - moved,
            ) {
                Ok(0) => break,
                Ok(k) => moved += k,
                Err(e) => {
                    self.drain(wire::OUT_HEADER_LEN + moved);
                    policy.counters().error(e.0);
                    reply_dev(dev, unique, -e.0, &[]);
                    return Ok(());
                }
            }
        }
        if moved < n {
            // The file shrank under the read: the header in the pipe is wrong. Take
            // back what went in and send what was read, with its own length.
            self.drain(wire::OUT_HEADER_LEN + moved);
            let data = self.buf[wire::OUT_HEADER_LEN..wire::OUT_HEADER_LEN + moved].to_vec();
            reply_dev(dev, unique, 0, &data);
            return Ok(());
        }
        let total = wire::OUT_HEADER_LEN + n;
        match sysuring::splice(self.read.as_fd(), None, dev.as_fd(), total) {
            Ok(k) if k == total => {}
            Ok(k) => {
                // The device takes a message whole or not at all; drop any rest.
                tracing::debug!(unique, k, total, "short splice to the device");
                self.drain(total - k);
            }
            Err(e) => {
                // ENOENT: the request was interrupted and is gone; nothing to answer.
                tracing::debug!(unique, error = %e, "spliced reply not delivered");
                self.drain(total);
            }
        }
        Ok(())
    }

    /// Read `len` bytes out of the pipe into `buf` (which then holds them).
    fn drain(&mut self, len: usize) {
        self.buf.resize(len, 0);
        let mut got = 0;
        while got < len {
            match sysuring::read_some(self.read.as_fd(), &mut self.buf[got..len]) {
                Ok(0) | Err(_) => break,
                Ok(k) => got += k,
            }
        }
    }
}
