//! Building and taking apart a directory tree whose names come from hostile input
//! (a layer tar): every step is one `*at` call on one name inside a directory that was
//! reached beneath the tree's root without following a symlink, so nothing a tar
//! makes (a symlink to `/etc`, a `..`) can send a write outside the tree.
//!
//! [`Tree`] is the root; [`TreeDir`] one directory in it. Names given to a `TreeDir`
//! are single components: `/`, `.`, `..` and empty names are refused (`EINVAL`).

use crate::sys::{self, Errno, RawDirEntry, Stat, SysResult, TimeSet};

pub use crate::sys::{Errno as OsError, Stat as EntryStat};
/// What a tree's user needs of the OS types (the `sys` module itself stays inside).
pub use crate::sys::{FileKind, Timespec};

/// The effective user and group ids (what `chown` and device nodes depend on).
pub fn effective_ids() -> (u32, u32) {
    (sys::geteuid(), sys::getegid())
}

/// Whether an error means the filesystem lacks the feature (xattrs, a flag).
pub fn is_unsupported(e: Errno) -> bool {
    sys::is_unsupported(e)
}
use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A directory tree written and read only beneath its root.
#[derive(Debug)]
pub struct Tree {
    root: OwnedFd,
}

/// One directory of a [`Tree`] (or any directory the caller trusts), open for `*at` calls.
#[derive(Debug)]
pub struct TreeDir {
    fd: OwnedFd,
}

fn component(name: &OsStr) -> SysResult<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(name)
}

impl Tree {
    /// Open the tree whose root is the directory at `path` (a path the caller trusts).
    pub fn open(path: &Path) -> SysResult<Tree> {
        Ok(Tree {
            root: sys::open_dir_path(path)?,
        })
    }

    /// The directory at `rel` (`/`-separated, relative; empty for the root), reached
    /// without following any symlink.
    pub fn dir(&self, rel: &[u8]) -> SysResult<TreeDir> {
        let fd = sys::open_beneath(
            sys::borrow(&self.root),
            rel,
            sys::oflag::RDONLY | sys::oflag::DIRECTORY,
            0,
        )?;
        Ok(TreeDir { fd })
    }

    /// The root directory itself.
    pub fn root(&self) -> SysResult<TreeDir> {
        self.dir(b"")
    }
}

impl TreeDir {
    /// Open a directory at a path the caller trusts (the store's own directories).
    pub fn open(path: &Path) -> SysResult<TreeDir> {
        Ok(TreeDir {
            fd: sys::open_dir_path(path)?,
        })
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> SysResult<TreeDir> {
        Ok(TreeDir {
            fd: sys::dup(self.fd())?,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        sys::borrow(&self.fd)
    }

    /// The subdirectory `name` (never a symlink to one).
    pub fn child(&self, name: &OsStr) -> SysResult<TreeDir> {
        let fd = sys::open_at(
            self.fd(),
            component(name)?,
            sys::oflag::RDONLY | sys::oflag::DIRECTORY | sys::oflag::NOFOLLOW,
            0,
        )?;
        Ok(TreeDir { fd })
    }

    pub fn mkdir(&self, name: &OsStr, mode: u32) -> SysResult<()> {
        sys::mkdir_at(self.fd(), component(name)?, mode)
    }

    /// A new regular file (fails if `name` exists), open for writing.
    pub fn create(&self, name: &OsStr, mode: u32) -> SysResult<std::fs::File> {
        let fd = sys::open_at(
            self.fd(),
            component(name)?,
            sys::oflag::WRONLY | sys::oflag::CREAT | sys::oflag::EXCL | sys::oflag::NOFOLLOW,
            mode,
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Open the regular file `name` for reading (a symlink is refused, `ELOOP`).
    pub fn open_read(&self, name: &OsStr) -> SysResult<std::fs::File> {
        let fd = sys::open_at(
            self.fd(),
            component(name)?,
            sys::oflag::RDONLY | sys::oflag::NOFOLLOW,
            0,
        )?;
        Ok(std::fs::File::from(fd))
    }

    pub fn symlink(&self, name: &OsStr, target: &OsStr) -> SysResult<()> {
        sys::symlink_at(target, self.fd(), component(name)?)
    }

    pub fn mknod(&self, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
        sys::mknod_at(self.fd(), component(name)?, mode, rdev)
    }

    /// A new name `name` here for the entry `from_name` of `from` (never followed).
    pub fn link_from(&self, from: &TreeDir, from_name: &OsStr, name: &OsStr) -> SysResult<()> {
        sys::link_at(
            from.fd(),
            component(from_name)?,
            self.fd(),
            component(name)?,
        )
    }

    /// Rename `name` here to `to_name` in `to`; with `no_replace`, fail if it exists.
    pub fn rename(
        &self,
        name: &OsStr,
        to: &TreeDir,
        to_name: &OsStr,
        no_replace: bool,
    ) -> SysResult<()> {
        let flags = if no_replace {
            sys::rename_flag::NOREPLACE
        } else {
            0
        };
        sys::rename_at(
            self.fd(),
            component(name)?,
            to.fd(),
            component(to_name)?,
            flags,
        )
    }

    /// Swap `name` here and `to_name` in `to` atomically.
    pub fn exchange(&self, name: &OsStr, to: &TreeDir, to_name: &OsStr) -> SysResult<()> {
        sys::rename_at(
            self.fd(),
            component(name)?,
            to.fd(),
            component(to_name)?,
            sys::rename_flag::EXCHANGE,
        )
    }

    /// Remove the non-directory `name`.
    pub fn unlink(&self, name: &OsStr) -> SysResult<()> {
        sys::unlink_at(self.fd(), component(name)?, false)
    }

    /// Remove `name` and everything beneath it (never following a symlink).
    /// A missing `name` is not an error.
    pub fn remove_all(&self, name: &OsStr) -> SysResult<()> {
        let name = component(name)?;
        match sys::unlink_at(self.fd(), name, false) {
            Ok(()) => return Ok(()),
            Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
            Err(e) => return Err(e),
        }
        let child = match self.child(name) {
            Ok(c) => c,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in child.entries()? {
            child.remove_all(&e.name)?;
        }
        match sys::unlink_at(self.fd(), name, true) {
            Err(Errno::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// The entries of this directory (`.` and `..` left out).
    pub fn entries(&self) -> SysResult<Vec<RawDirEntry>> {
        sys::read_dir(self.fd())
    }

    /// `lstat` of `name`; an empty name stats this directory.
    pub fn stat(&self, name: &OsStr) -> SysResult<Stat> {
        if name.is_empty() {
            return sys::stat_fd(self.fd());
        }
        sys::stat_at(self.fd(), component(name)?)
    }

    pub fn readlink(&self, name: &OsStr) -> SysResult<std::ffi::OsString> {
        sys::readlink_at(self.fd(), component(name)?)
    }

    /// Owner of `name` (a symlink itself, not its target); empty: this directory.
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> SysResult<()> {
        if name.is_empty() {
            return sys::chown_at(self.fd(), name, uid, gid);
        }
        sys::chown_at(self.fd(), component(name)?, uid, gid)
    }

    /// Permissions of `name` (symlinks have none: `EOPNOTSUPP` from the kernel);
    /// empty: this directory.
    pub fn chmod(&self, name: &OsStr, mode: u32) -> SysResult<()> {
        let fd = self.path_fd(name)?;
        sys::chmod_path_fd(sys::borrow(&fd), mode & 0o7777)
    }

    /// Times of `name` (a symlink itself); empty: this directory.
    pub fn set_times(
        &self,
        name: &OsStr,
        atime: sys::Timespec,
        mtime: sys::Timespec,
    ) -> SysResult<()> {
        if name.is_empty() {
            return sys::set_times_fd(self.fd(), TimeSet::At(atime), TimeSet::At(mtime));
        }
        sys::set_times_at(
            self.fd(),
            component(name)?,
            TimeSet::At(atime),
            TimeSet::At(mtime),
        )
    }

    /// Set the xattr `key` of `name` (a symlink itself); empty: this directory.
    pub fn set_xattr(&self, name: &OsStr, key: &OsStr, value: &[u8]) -> SysResult<()> {
        let fd = self.path_fd(name)?;
        sys::set_xattr(sys::borrow(&fd), key, value, 0)
    }

    /// Every xattr of `name` (a symlink itself), sorted by key; empty: this directory.
    /// Filesystems without xattrs give none.
    pub fn xattrs(&self, name: &OsStr) -> SysResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let fd = self.path_fd(name)?;
        let keys = match sys::list_xattr(sys::borrow(&fd)) {
            Ok(k) => k,
            Err(e) if sys::is_unsupported(e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match sys::get_xattr(sys::borrow(&fd), OsStr::from_bytes(&k)) {
                Ok(v) => out.push((k, v)),
                Err(Errno::ENODATA) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort();
        Ok(out)
    }

    /// The xattr `key` of `name`, if set; empty `name`: this directory.
    pub fn xattr(&self, name: &OsStr, key: &OsStr) -> SysResult<Option<Vec<u8>>> {
        let fd = self.path_fd(name)?;
        match sys::get_xattr(sys::borrow(&fd), key) {
            Ok(v) => Ok(Some(v)),
            Err(Errno::ENODATA) => Ok(None),
            Err(e) if sys::is_unsupported(e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Make this directory's entries durable.
    pub fn sync(&self) -> SysResult<()> {
        sys::fsync(self.fd())
    }

    /// Make everything written to this filesystem durable.
    pub fn sync_filesystem(&self) -> SysResult<()> {
        sys::syncfs(self.fd())
    }

    fn path_fd(&self, name: &OsStr) -> SysResult<OwnedFd> {
        if name.is_empty() {
            return sys::dup(self.fd());
        }
        sys::open_path_at(self.fd(), component(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn scratch(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("lf-writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn symlinks_made_in_the_tree_never_lead_out() {
        let base = scratch("escape");
        let outside = base.join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = base.join("root");
        std::fs::create_dir(&root).unwrap();
        let tree = Tree::open(&root).unwrap();
        let top = tree.root().unwrap();
        top.symlink(OsStr::new("evil"), outside.as_os_str())
            .unwrap();
        top.symlink(OsStr::new("up"), OsStr::new("..")).unwrap();
        // Through the symlink: refused, not followed.
        assert!(tree.dir(b"evil").is_err());
        assert!(tree.dir(b"up").is_err());
        assert!(top.child(OsStr::new("evil")).is_err());
        assert!(top.create(OsStr::new("evil"), 0o644).is_err());
        // `..` stays in the root.
        let d = tree.dir(b"../../..").unwrap();
        assert_eq!(
            d.stat(OsStr::new("")).unwrap().ino,
            top.stat(OsStr::new("")).unwrap().ino
        );
        for bad in ["", ".", "..", "a/b"] {
            assert_eq!(
                top.mkdir(OsStr::new(bad), 0o755),
                Err(Errno::EINVAL),
                "{bad}"
            );
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn build_then_remove_all() {
        let base = scratch("build");
        let tree = Tree::open(&base).unwrap();
        let top = tree.root().unwrap();
        top.mkdir(OsStr::new("d"), 0o700).unwrap();
        let d = tree.dir(b"d").unwrap();
        let mut f = d.create(OsStr::new("f"), 0o600).unwrap();
        f.write_all(b"hello").unwrap();
        drop(f);
        d.link_from(&d, OsStr::new("f"), OsStr::new("g")).unwrap();
        d.symlink(OsStr::new("s"), OsStr::new("/")).unwrap();
        d.chmod(OsStr::new("f"), 0o4755).unwrap();
        let t = sys::Timespec { sec: 1000, nsec: 5 };
        d.set_times(OsStr::new("s"), t, t).unwrap();
        let st = d.stat(OsStr::new("g")).unwrap();
        assert_eq!((st.nlink, st.perm(), st.size), (2, 0o4755, 5));
        assert_eq!(d.stat(OsStr::new("s")).unwrap().mtime, t);
        let mut s = String::new();
        d.open_read(OsStr::new("g"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        top.remove_all(OsStr::new("d")).unwrap();
        top.remove_all(OsStr::new("d")).unwrap();
        assert!(top.entries().unwrap().is_empty());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
