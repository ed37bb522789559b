//! The on-disk format: every marker a union reads or writes in a layer, in one place,
//! so a second format is this module's concern alone.
//!
//! - whiteouts: a 0/0 character device (the kernel's), a zero-size file carrying
//!   `overlay.whiteout` in a directory marked `overlay.opaque=x` (xattr whiteouts), or
//!   an OCI/aufs `.wh.NAME` file (layers written by container runtimes; `Layer::oci`);
//! - opaque directories: `overlay.opaque=y`, or an OCI `.wh..wh..opq` file;
//! - redirects: `overlay.redirect` on a moved directory or metadata-only copy;
//! - origins: `overlay.origin`, the kernel's `struct ovl_fb` file handle of the lower
//!   entry a copy came from (empty: "copied up, origin not recorded");
//! - metadata-only copies: `overlay.metacopy`;
//! - the hard-link index: entry names in `W/index` (hex of the origin handle) and
//!   `W/lf-index` (`DEV-INO`), and the `overlay.nlink` count adjustment (`U+N`);
//! - fuse-overlayfs' owner/mode record (`user.containers.override_stat`, `UID:GID:MODE`);
//! - the layer store's `.wh..wh..lfmeta` records live in `storemeta.rs`.
//!
//! The xattr names of the markers, in both namespaces, are in `markers.rs`. The
//! union (`crate::overlay`) decides when a marker is needed and calls these.

use super::storemeta::{self, StoredFile};
use super::{Layer, OCI_OPAQUE, OCI_WHITEOUT_PREFIX};
use crate::sys::{self, Errno, FileKind, Stat, SysResult, rename_flag};
use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

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

/// The markers of an upper entry that lookup needs, read with one listing (an entry
/// made through the mount has none, and then costs only that call).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpperMarkers {
    /// `overlay.origin`: copied up (the lower entry's file handle, or empty).
    pub origin: Option<Vec<u8>>,
    /// `overlay.metacopy`: its data is still the lower file's.
    pub metacopy: bool,
    /// A file's `overlay.redirect` (a metacopy's data elsewhere) and `overlay.nlink`
    /// adjustment (0 without one), read by [`Layer::upper_markers_at`] where listed.
    pub redirect: Option<Vec<u8>>,
    pub nlink_adjust: i64,
}

/// The name of a lower inode's entry in the work dir's hard-link index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexKey {
    /// In `W/index` (the kernel's, named by the hex of the origin file handle, so a
    /// kernel mounted with `index=on` finds the same entry); else in `W/lf-index`.
    pub kernel: bool,
    pub name: OsString,
}

/// The index entry of the lower inode `st` whose origin file handle is `origin`
/// (`None`: the filesystem makes none).
pub fn index_key(origin: Option<&[u8]>, st: &Stat) -> IndexKey {
    match origin {
        Some(fb) => IndexKey {
            kernel: true,
            name: OsString::from(fb.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        },
        None => IndexKey {
            kernel: false,
            name: OsString::from(format!("{:x}-{:x}", st.dev, st.ino)),
        },
    }
}

/// `UID:GID:MODE` (mode in octal, file type bits allowed), as containers/storage and
/// fuse-overlayfs write `user.containers.override_stat`.
pub fn parse_override(v: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.trim_end_matches('\0').split(':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    Some((uid, gid, mode))
}

/// The override record of an owner and a mode (type bits included).
pub fn override_value(uid: u32, gid: u32, mode: u32) -> String {
    format!("{uid}:{gid}:0{mode:o}")
}

/// The store's record in the directory open at `dir`. A record that cannot be read
/// or decoded is ignored: the files then show as their inodes are.
fn read_record(dir: BorrowedFd<'_>) -> Option<Vec<StoredFile>> {
    // Far beyond any real record (a directory of 65,536 files with 255-byte names).
    const MAX: usize = 64 << 20;
    let fd = sys::open_at(
        dir,
        OsStr::new(storemeta::RECORD_NAME),
        sys::oflag::RDONLY,
        0,
    )
    .ok()?;
    let st = sys::stat_fd(sys::borrow(&fd)).ok()?;
    if st.kind() != FileKind::Regular || st.size as usize > MAX {
        return None;
    }
    let bytes = sys::read_exact_at(sys::borrow(&fd), st.size as usize, 0).ok()?;
    storemeta::decode(&bytes).ok()
}

/// The `U+N` value of `overlay.nlink`.
fn parse_nlink_adjust(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.strip_prefix('U')?.parse().ok()
}

impl Layer {
    /// Open the upper layer. It is written in the kernel's format; where the platform
    /// cannot make the kernel's whiteouts (FreeBSD, macOS), OCI markers are read in it.
    pub fn open_upper(path: &std::path::Path, markers: super::MarkerNames) -> SysResult<Layer> {
        Layer::open(path, markers, !sys::KERNEL_WHITEOUTS)
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

    /// The origin record ([`Layer::origin_handle`]) of the entry `name` in the
    /// directory open at `dir`. `None` where the system has no xattrs to keep it in
    /// (the portable module): the entry is then not opened (a socket cannot be, and
    /// opening a device would run its driver).
    pub fn origin_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Option<Vec<u8>> {
        if !sys::XATTRS {
            return None;
        }
        let fd = sys::open_path_at(dir, name).ok()?;
        self.origin_handle(sys::borrow(&fd))
    }

    /// [`Layer::origin_at`] of the entry at `rel` from this layer's root.
    pub fn origin_of(&self, rel: &[u8]) -> Option<Vec<u8>> {
        if !sys::XATTRS {
            return None;
        }
        let fd = self.open_any(rel).ok()?;
        self.origin_handle(sys::borrow(&fd))
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
        oci_whiteout_name(name).is_ok_and(|wh| sys::stat_at(dir, &wh).is_ok())
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
        Ok(self.list_with_record(dir, markers)?.0)
    }

    /// [`Layer::list`], and the layer store's record of the directory's deduplicated
    /// files (`storemeta`), where it holds a readable one.
    pub fn list_with_record(
        &self,
        dir: BorrowedFd<'_>,
        markers: &DirMarkers,
    ) -> SysResult<(Vec<Listed>, Option<Vec<StoredFile>>)> {
        let raw = sys::read_dir(dir)?;
        let mut out = Vec::with_capacity(raw.len());
        let mut record = None;
        for e in raw {
            let bytes = e.name.as_bytes();
            if self.oci && bytes == storemeta::RECORD_NAME.as_bytes() {
                record = read_record(dir);
                continue;
            }
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
        Ok((out, record))
    }

    // ---- What the union writes (into the upper layer). ----

    /// What this layer holds at `name` in the directory open at `dir`, where the
    /// directory holds no xattr whiteouts (the union writes none).
    pub fn entry_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Found> {
        self.find(dir, name, &DirMarkers::default())
    }

    /// Put a whiteout at `name` in `dir`: the kernel's 0/0 device, or where the system
    /// has none (the portable module, `!sys::KERNEL_WHITEOUTS`) an OCI `.wh.NAME` file.
    pub fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
        if sys::KERNEL_WHITEOUTS {
            return sys::mknod_at(dir, name, FileKind::CharDevice.mode_bits(), 0);
        }
        let flags = sys::oflag::WRONLY | sys::oflag::CREAT | sys::oflag::EXCL;
        match sys::open_at(dir, &oci_whiteout_name(name)?, flags, 0o600) {
            Ok(_) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Remove the OCI whiteout of `name` in `dir` once an entry took its place.
    pub fn drop_oci_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) {
        if let Ok(wh) = oci_whiteout_name(name) {
            let _ = sys::unlink_at(dir, &wh, false);
        }
    }

    /// Move `from_dir/from` to `to_dir/to`, leaving a whiteout at the old name: in one
    /// step where the filesystem can (`RENAME_WHITEOUT`), else the move then the
    /// whiteout.
    pub fn move_leaving_whiteout(
        &self,
        from_dir: BorrowedFd<'_>,
        from: &OsStr,
        to_dir: BorrowedFd<'_>,
        to: &OsStr,
    ) -> SysResult<()> {
        match sys::rename_at(from_dir, from, to_dir, to, rename_flag::WHITEOUT) {
            Err(e) if e == Errno::EINVAL || e == Errno::EPERM => {
                sys::rename_at(from_dir, from, to_dir, to, 0)?;
                self.make_whiteout(from_dir, from)
            }
            other => other,
        }
    }

    /// Mark the directory behind `fd` opaque: nothing below merges into it.
    pub fn set_opaque(&self, fd: BorrowedFd<'_>) -> SysResult<()> {
        if sys::KERNEL_WHITEOUTS {
            return sys::set_xattr(fd, self.markers.opaque(), b"y", 0);
        }
        // No trusted.* there: the OCI marker inside the directory. The kernel's marker is
        // an xattr, which leaves the directory's mtime as it was; a new entry in it would
        // not, so the time it had is put back (the directory's, which the union shows).
        let before = sys::stat_fd(fd)?;
        let flags = sys::oflag::WRONLY | sys::oflag::CREAT;
        sys::open_at(fd, OsStr::from_bytes(OCI_OPAQUE), flags, 0o600).map(drop)?;
        sys::set_times_fd(fd, sys::TimeSet::Omit, sys::TimeSet::At(before.mtime))
    }

    /// Take the OCI opaque marker out of the directory behind `fd`, where the upper keeps
    /// it as a file of the directory (the portable module): an empty opaque directory
    /// is about to be replaced by a rename, which that file would refuse (ENOTEMPTY)
    /// where the kernel's xattr does not. Whether it was there, to put it back
    /// ([`Layer::set_opaque`]) if the rename fails.
    pub fn take_oci_opaque(&self, fd: BorrowedFd<'_>) -> SysResult<bool> {
        if sys::KERNEL_WHITEOUTS {
            return Ok(false);
        }
        match sys::unlink_at(fd, OsStr::from_bytes(OCI_OPAQUE), false) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Record where the lower content of the entry behind `fd` lives (the old name
    /// within the same parent, or `/path/from/layer/root`).
    pub fn set_redirect(&self, fd: BorrowedFd<'_>, value: &[u8]) -> SysResult<()> {
        sys::set_xattr(fd, self.markers.redirect(), value, 0)
    }

    /// The origin and metacopy markers of the upper entry behind `fd`.
    pub fn upper_markers(&self, fd: BorrowedFd<'_>) -> UpperMarkers {
        let names = sys::list_xattr(fd).unwrap_or_default();
        self.upper_markers_of(&names, false, |x| sys::get_xattr(fd, x))
    }

    /// [`Layer::upper_markers`] of the entry `name` of `dir`, read without opening it.
    /// A file's redirect and link-count adjustment come with them (read only where listed).
    pub fn upper_markers_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> UpperMarkers {
        let names = sys::list_xattr_at(dir, name).unwrap_or_default();
        self.upper_markers_of(&names, true, |x| sys::get_xattr_at(dir, name, x))
    }

    fn upper_markers_of(
        &self,
        names: &[Vec<u8>],
        file: bool,
        get: impl Fn(&OsStr) -> SysResult<Vec<u8>>,
    ) -> UpperMarkers {
        let has = |n: &OsStr| names.iter().any(|x| x.as_slice() == n.as_bytes());
        let read = |n: &OsStr| if has(n) { get(n).ok() } else { None };
        UpperMarkers {
            origin: read(self.markers.origin()),
            metacopy: has(self.markers.metacopy()),
            // A directory's redirect is read with its other markers (`dir_markers`).
            redirect: if file {
                read(self.markers.redirect())
            } else {
                None
            },
            nlink_adjust: if file {
                read(self.markers.nlink())
                    .and_then(|v| parse_nlink_adjust(&v))
                    .unwrap_or(0)
            } else {
                0
            },
        }
    }

    /// Record the lower entry a copy behind `fd` came from (`origin` empty: not known).
    pub fn set_origin(&self, fd: BorrowedFd<'_>, origin: &[u8]) -> SysResult<()> {
        sys::set_xattr(fd, self.markers.origin(), origin, 0)
    }

    /// Whether the entry behind `fd` is a metadata-only copy.
    pub fn is_metacopy(&self, fd: BorrowedFd<'_>) -> bool {
        sys::get_xattr(fd, self.markers.metacopy()).is_ok()
    }

    /// Mark the copy behind `fd` metadata-only (its data is still the lower file's).
    pub fn set_metacopy(&self, fd: BorrowedFd<'_>) -> SysResult<()> {
        sys::set_xattr(fd, self.markers.metacopy(), b"", 0)
    }

    /// The copy behind `fd` holds its data now.
    pub fn clear_metacopy(&self, fd: BorrowedFd<'_>) -> SysResult<()> {
        match sys::remove_xattr(fd, self.markers.metacopy()) {
            Ok(()) | Err(Errno::ENODATA) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The `overlay.nlink` adjustment of the inode behind `fd` (0 when none).
    pub fn nlink_adjust(&self, fd: BorrowedFd<'_>) -> i64 {
        sys::get_xattr(fd, self.markers.nlink())
            .ok()
            .and_then(|v| parse_nlink_adjust(&v))
            .unwrap_or(0)
    }

    /// Record that the union's link count of the inode behind `fd` is its own plus
    /// `adjust`.
    pub fn set_nlink_adjust(&self, fd: BorrowedFd<'_>, adjust: i64) -> SysResult<()> {
        sys::set_xattr(
            fd,
            self.markers.nlink(),
            format!("U{adjust:+}").as_bytes(),
            0,
        )
    }
}

/// The OCI whiteout of `name`: `.wh.NAME` (too long for a name: ENAMETOOLONG).
fn oci_whiteout_name(name: &OsStr) -> SysResult<OsString> {
    let mut wh = OCI_WHITEOUT_PREFIX.to_vec();
    wh.extend_from_slice(name.as_bytes());
    if wh.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(OsString::from(OsStr::from_bytes(&wh)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_values_round_trip() {
        assert_eq!(parse_override(b"0:0:0755"), Some((0, 0, 0o755)));
        assert_eq!(
            parse_override(b"1000:100:100644"),
            Some((1000, 100, 0o100644))
        );
        assert_eq!(parse_override(b"x"), None);
        assert_eq!(
            parse_override(override_value(7, 8, 0o100640).as_bytes()),
            Some((7, 8, 0o100640))
        );
    }

    #[test]
    fn nlink_adjustments_parse() {
        assert_eq!(parse_nlink_adjust(b"U+2"), Some(2));
        assert_eq!(parse_nlink_adjust(b"U-1"), Some(-1));
        assert_eq!(parse_nlink_adjust(b"L+1"), None);
    }
}
