//! An imported tar without its file contents (`layers/ID/skeleton`): replayed with the
//! contents read back from the layer's tree, it gives the very bytes that were
//! imported, so a layer exported again has the same diffID (Docker's
//! `ReproducesExactDiffs`) whatever tool wrote the tar (PAX, GNU, padding, order).
//!
//! Bytes: magic `LFSKEL1\n`, then records until the end of the file:
//! `R` u32-le length, that many bytes copied verbatim (headers, padding, trailer);
//! `F` u64-le size, u16-le path length, path: `size` bytes of the regular file at
//! that path of the layer's tree.

use layerfuse::layer::writer::Tree;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

const MAGIC: &[u8; 8] = b"LFSKEL1\n";
const FLUSH_AT: usize = 1 << 16;

/// Records the raw parts of a tar as it is read.
pub struct SkeletonWriter<W: Write> {
    out: W,
    pending: Vec<u8>,
}

impl<W: Write> SkeletonWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        Ok(SkeletonWriter {
            out,
            pending: Vec::with_capacity(FLUSH_AT),
        })
    }

    /// Bytes of the tar that are not file content.
    pub fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= FLUSH_AT {
            self.flush_raw()?;
        }
        Ok(())
    }

    fn flush_raw(&mut self) -> io::Result<()> {
        for chunk in self.pending.chunks(u32::MAX as usize) {
            self.out.write_all(b"R")?;
            self.out.write_all(&(chunk.len() as u32).to_le_bytes())?;
            self.out.write_all(chunk)?;
        }
        self.pending.clear();
        Ok(())
    }

    /// The next `size` bytes of the tar are the content of the file at `path`.
    pub fn file(&mut self, path: &[u8], size: u64) -> io::Result<()> {
        self.flush_raw()?;
        let len = u16::try_from(path.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path too long"))?;
        self.out.write_all(b"F")?;
        self.out.write_all(&size.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(path)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.flush_raw()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("layer skeleton: {what}"),
    )
}

/// Write the tar a skeleton describes, contents read from `tree`. Returns its size.
pub fn replay(mut skel: impl Read, tree: &Tree, out: &mut impl Write) -> io::Result<u64> {
    let mut magic = [0u8; 8];
    skel.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(bad("not a skeleton"));
    }
    let mut total = 0u64;
    let mut tag = [0u8; 1];
    loop {
        match skel.read(&mut tag)? {
            0 => return Ok(total),
            _ => match tag[0] {
                b'R' => {
                    let mut len = [0u8; 4];
                    skel.read_exact(&mut len)?;
                    let len = u64::from(u32::from_le_bytes(len));
                    let n = io::copy(&mut (&mut skel).take(len), out)?;
                    if n != len {
                        return Err(bad("truncated"));
                    }
                    total += n;
                }
                b'F' => {
                    let mut size = [0u8; 8];
                    skel.read_exact(&mut size)?;
                    let size = u64::from_le_bytes(size);
                    let mut len = [0u8; 2];
                    skel.read_exact(&mut len)?;
                    let mut path = vec![0u8; usize::from(u16::from_le_bytes(len))];
                    skel.read_exact(&mut path)?;
                    let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
                        Some(i) => (&path[..i], &path[i + 1..]),
                        None => (&[][..], &path[..]),
                    };
                    let file = tree
                        .dir(dir)
                        .and_then(|d| d.open_read(OsStr::from_bytes(name)))
                        .map_err(super::os_err)?;
                    let n = io::copy(&mut file.take(size), out)?;
                    if n != size {
                        return Err(bad("a file is shorter than its tar entry"));
                    }
                    total += n;
                }
                _ => return Err(bad("unknown record")),
            },
        }
    }
}
