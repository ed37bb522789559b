//! One layer: a directory tree reached only beneath its root, and the on-disk
//! markers a union reads and writes in it (`format.rs`: every one of them).
//!
//! A layer does not know it is stacked: it answers "what is at this name" and
//! "is this directory opaque", in the kernel's format and (for layers written by
//! container runtimes) the OCI/aufs `.wh.` format.

use crate::sys::{self, Errno, FileKind, Stat, SysResult};
use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod format;
mod markers;
pub mod storemeta;
pub mod writer;
pub use format::{
    DirMarkers, Found, IndexKey, Listed, UpperMarkers, index_key, override_value, parse_override,
};
pub use markers::{MarkerNames, OCI_OPAQUE, OCI_WHITEOUT_PREFIX};

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

/// Whether relative path `p` is `dir` or below it.
pub fn is_at_or_below(p: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (p.starts_with(dir) && (p.len() == dir.len() || p[dir.len()] == b'/'))
}

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
