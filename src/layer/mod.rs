//! One layer: a directory tree reached only beneath its root, and the on-disk
//! markers a union writes into it (whiteouts, opaque directories, redirects).
//!
//! A layer does not know it is stacked: it answers "what is at this name" and
//! "is this directory opaque", in the kernel's format and (for layers written by
//! container runtimes) the OCI/aufs `.wh.` format.

use crate::sys::{self, Errno, FileKind, Stat, SysResult};
use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod markers;
pub mod storemeta;
pub mod writer;
pub use markers::{MarkerNames, OCI_OPAQUE, OCI_WHITEOUT_PREFIX};

/// What a layer holds at one name of a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: look further down.
    Missing,
    /// A whiteout: the name is deleted from every layer below.
    Whiteout,
    /// A real entry.
    Entry(Stat),
}

/// One entry of a layer's directory listing, with whiteouts already decoded.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: OsString,
    pub ino: u64,
    pub kind: FileKind,
    pub whiteout: bool,
}

/// The markers a directory carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirMarkers {
    /// Hides every layer below.
    pub opaque: bool,
    /// The directory may hold xattr whiteouts (`overlay.opaque=x`).
    pub xattr_whiteouts: bool,
    /// Where this directory's lower content lives (`overlay.redirect`).
    pub redirect: Option<Vec<u8>>,
}

/// A layer's root directory and how to read its markers.
#[derive(Debug)]
pub struct Layer {
    root: OwnedFd,
    /// The path the user gave, resolved once at mount; for messages only.
    pub path: PathBuf,
    /// Device of the layer root (layers may sit on different filesystems).
    pub dev: u64,
    /// xattr names of the markers (`trusted.overlay.*` or `user.overlay.*`).
    pub markers: MarkerNames,
    /// Whether `.wh.` files mean whiteouts here (layers written by runtimes).
    pub oci: bool,
    /// The filesystem's UUID, as the kernel puts it into origin file handles.
    uuid: Option<[u8; 16]>,
}

/// A path relative to a layer root, as bytes: components joined by `/`, no leading
/// slash; empty for the root itself.
pub type RelPath = Vec<u8>;

/// Append one name to a relative path.
pub fn join(dir: &[u8], name: &OsStr) -> RelPath {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name.as_bytes());
    p
}

impl Layer {
    /// Open a layer at a user-given path (symlinks in that path are followed, once).
    pub fn open(path: &Path, markers: MarkerNames, oci: bool) -> SysResult<Layer> {
        let root = sys::open_dir_path(path)?;
        let st = sys::stat_fd(sys::borrow(&root))?;
        if st.kind() != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let uuid = sys::fs_uuid(sys::borrow(&root));
        Ok(Layer {
            root,
            path: path.to_path_buf(),
            dev: st.dev,
            markers,
            oci,
            uuid,
        })
    }

    /// The entry of this layer an `overlay.origin` value names, if it is in this layer
    /// (same filesystem UUID, and the kernel can open the handle here).
    pub fn stat_origin(&self, origin: &[u8]) -> Option<Stat> {
        if origin.len() <= 21 || origin[0] != 0 || origin[1] != 0xfb {
            return None;
        }
        if origin[5..21] != self.uuid.unwrap_or([0; 16]) {
            return None;
        }
        let fd = sys::open_by_handle(self.root(), i32::from(origin[4]), &origin[21..]).ok()?;
        let st = sys::stat_fd(sys::borrow(&fd)).ok()?;
        (st.dev == self.dev).then_some(st)
    }

    /// The kernel's `overlay.origin` value for the entry behind `fd` in this layer:
    /// `struct ovl_fb` (version 0, magic 0xfb, length, flags, handle type, the
    /// filesystem UUID) followed by the file handle. `None` where the filesystem
    /// cannot make file handles.
    pub fn origin_handle(&self, fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
        let (ty, handle) = sys::file_handle(fd).ok()?;
        let len = 21 + handle.len();
        let ty = u8::try_from(ty).ok()?;
        let mut fb = Vec::with_capacity(len);
        // Little-endian CPUs need no endianness flag; big-endian ones say so.
        let flags = if cfg!(target_endian = "big") { 1 } else { 0 };
        fb.extend_from_slice(&[0, 0xfb, u8::try_from(len).ok()?, flags, ty]);
        fb.extend_from_slice(&self.uuid.unwrap_or([0; 16]));
        fb.extend_from_slice(&handle);
        Some(fb)
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        sys::borrow(&self.root)
    }

    /// Open the directory at `rel` for `*at` calls.
    pub fn open_dir(&self, rel: &[u8]) -> SysResult<OwnedFd> {
        sys::open_beneath(
            self.root(),
            rel,
            sys::oflag::RDONLY | sys::oflag::DIRECTORY,
            0,
        )
    }

    /// Open the entry at `rel` with `flags` (never following a symlink at any step).
    pub fn open_file(&self, rel: &[u8], flags: i32) -> SysResult<OwnedFd> {
        sys::open_beneath(self.root(), rel, flags, 0)
    }

    /// `O_PATH` handle of any entry, symlinks included.
    pub fn open_any(&self, rel: &[u8]) -> SysResult<OwnedFd> {
        match split_last(rel) {
            Some((dir, name)) => {
                let d = self.open_dir(dir)?;
                sys::open_path_at(sys::borrow(&d), name)
            }
            None => self.open_dir(rel),
        }
    }

    /// The directory holding the entry at `rel`, open, and the entry's name in it
    /// (`.` for the root itself): for the `*at` calls that change an entry.
    pub fn locate(&self, rel: &[u8]) -> SysResult<(OwnedFd, OsString)> {
        match split_last(rel) {
            Some((dir, name)) => Ok((self.open_dir(dir)?, name.to_owned())),
            None => Ok((self.open_dir(rel)?, ".".into())),
        }
    }

    /// The target of the symlink at `rel`.
    pub fn readlink(&self, rel: &[u8]) -> SysResult<OsString> {
        let (dir, name) = split_last(rel).ok_or(Errno::EINVAL)?;
        let d = self.open_dir(dir)?;
        sys::readlink_at(sys::borrow(&d), name)
    }

    /// Figures of the filesystem the layer is on.
    pub fn statfs(&self) -> SysResult<sys::FsStats> {
        sys::fstatvfs(self.root())
    }

    /// Stat the entry at `rel`.
    pub fn stat(&self, rel: &[u8]) -> SysResult<Stat> {
        match split_last(rel) {
            Some((dir, name)) => {
                let d = self.open_dir(dir)?;
                sys::stat_at(sys::borrow(&d), name)
            }
            None => sys::stat_fd(self.root()),
        }
    }

    /// What this layer holds at `name` inside the directory open at `dir`.
    /// `markers` are that directory's own (for xattr whiteouts).
    pub fn find(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        markers: &DirMarkers,
    ) -> SysResult<Found> {
        if self.oci && name.as_bytes().starts_with(OCI_WHITEOUT_PREFIX) {
            // `.wh.*` names are reserved: never an entry of the union.
            return Ok(Found::Missing);
        }
        match sys::stat_at(dir, name) {
            Ok(st) => {
                if st.is_whiteout_device() {
                    return Ok(Found::Whiteout);
                }
                if markers.xattr_whiteouts
                    && st.kind() == FileKind::Regular
                    && st.size == 0
                    && self.has_xattr_at(dir, name, self.markers.whiteout())
                {
                    return Ok(Found::Whiteout);
                }
                Ok(Found::Entry(st))
            }
            Err(Errno::ENOENT) => {
                if self.oci && self.has_oci_whiteout(dir, name) {
                    Ok(Found::Whiteout)
                } else {
                    Ok(Found::Missing)
                }
            }
            Err(e) => Err(e),
        }
    }

    fn has_oci_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        let mut wh = OCI_WHITEOUT_PREFIX.to_vec();
        wh.extend_from_slice(name.as_bytes());
        if wh.len() > 255 {
            return false;
        }
        sys::stat_at(dir, OsStr::from_bytes(&wh)).is_ok()
    }

    fn has_xattr_at(&self, dir: BorrowedFd<'_>, name: &OsStr, xattr: &OsStr) -> bool {
        match sys::open_path_at(dir, name) {
            Ok(fd) => sys::get_xattr(sys::borrow(&fd), xattr).is_ok(),
            Err(_) => false,
        }
    }

    /// The `overlay.redirect` of the entry open at `fd` (a moved directory, or a moved
    /// metadata-only copy of a file).
    pub fn redirect_of(&self, fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
        sys::get_xattr(fd, self.markers.redirect()).ok()
    }

    /// The markers of the directory open at `dir`.
    pub fn dir_markers(&self, dir: BorrowedFd<'_>) -> DirMarkers {
        let mut m = DirMarkers::default();
        match sys::get_xattr(dir, self.markers.opaque()) {
            Ok(v) if v == b"y" => m.opaque = true,
            Ok(v) if v == b"x" => m.xattr_whiteouts = true,
            _ => {}
        }
        if !m.opaque && self.oci && sys::stat_at(dir, OsStr::from_bytes(OCI_OPAQUE)).is_ok() {
            m.opaque = true;
        }
        m.redirect = self.redirect_of(dir);
        m
    }

    /// Every entry of the directory open at `dir`, whiteouts decoded, reserved
    /// names dropped. Entries whose type the filesystem did not report are stat'ed.
    pub fn list(&self, dir: BorrowedFd<'_>, markers: &DirMarkers) -> SysResult<Vec<Listed>> {
        let raw = sys::read_dir(dir)?;
        let mut out = Vec::with_capacity(raw.len());
        for e in raw {
            let bytes = e.name.as_bytes();
            if self.oci && bytes.starts_with(OCI_WHITEOUT_PREFIX) {
                let rest = &bytes[OCI_WHITEOUT_PREFIX.len()..];
                if !rest.starts_with(OCI_WHITEOUT_PREFIX) && !rest.is_empty() {
                    out.push(Listed {
                        name: OsStr::from_bytes(rest).to_owned(),
                        ino: 0,
                        kind: FileKind::CharDevice,
                        whiteout: true,
                    });
                }
                continue;
            }
            let kind = match e.kind {
                Some(k) => k,
                None => match sys::stat_at(dir, &e.name) {
                    Ok(st) => st.kind(),
                    Err(_) => continue,
                },
            };
            let whiteout = match kind {
                FileKind::CharDevice => {
                    matches!(sys::stat_at(dir, &e.name), Ok(st) if st.is_whiteout_device())
                }
                FileKind::Regular if markers.xattr_whiteouts => {
                    matches!(self.find(dir, &e.name, markers), Ok(Found::Whiteout))
                }
                _ => false,
            };
            out.push(Listed {
                name: e.name,
                ino: e.ino,
                kind,
                whiteout,
            });
        }
        Ok(out)
    }
}

/// Split a relative path into its directory and last name.
pub fn split_last(rel: &[u8]) -> Option<(&[u8], &OsStr)> {
    if rel.is_empty() {
        return None;
    }
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => Some((&rel[..i], OsStr::from_bytes(&rel[i + 1..]))),
        None => Some((&[][..], OsStr::from_bytes(rel))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_split_are_inverse() {
        let p = join(b"", OsStr::new("a"));
        assert_eq!(p, b"a");
        let q = join(&p, OsStr::new("b"));
        assert_eq!(q, b"a/b");
        let (dir, name) = split_last(&q).unwrap();
        assert_eq!(dir, b"a");
        assert_eq!(name, "b");
        assert!(split_last(b"").is_none());
    }
}
