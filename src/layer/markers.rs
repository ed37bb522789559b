//! The names of the on-disk markers, in both xattr namespaces the kernel uses.

use std::ffi::{OsStr, OsString};

/// OCI/aufs whiteout prefix: `.wh.NAME` deletes NAME from the layers below.
pub const OCI_WHITEOUT_PREFIX: &[u8] = b".wh.";
/// OCI/aufs opaque marker inside a directory.
pub const OCI_OPAQUE: &[u8] = b".wh..wh..opq";

/// The overlay xattr names of one mount: `trusted.overlay.*` as the kernel writes by
/// default, or `user.overlay.*` (the kernel's `userxattr`, for unprivileged mounts).
#[derive(Clone, Debug)]
pub struct MarkerNames {
    prefix: &'static str,
    opaque: OsString,
    redirect: OsString,
    whiteout: OsString,
    origin: OsString,
    nlink: OsString,
    metacopy: OsString,
    /// Prefix under which an overlay xattr set *through* the mount is stored escaped.
    escaped: OsString,
}

impl MarkerNames {
    pub fn trusted() -> MarkerNames {
        MarkerNames::with_prefix("trusted.overlay.")
    }

    pub fn user() -> MarkerNames {
        MarkerNames::with_prefix("user.overlay.")
    }

    fn with_prefix(prefix: &'static str) -> MarkerNames {
        let n = |s: &str| OsString::from(format!("{prefix}{s}"));
        MarkerNames {
            prefix,
            opaque: n("opaque"),
            redirect: n("redirect"),
            whiteout: n("whiteout"),
            origin: n("origin"),
            nlink: n("nlink"),
            metacopy: n("metacopy"),
            escaped: n("overlay."),
        }
    }

    pub fn prefix(&self) -> &'static str {
        self.prefix
    }
    pub fn opaque(&self) -> &OsStr {
        &self.opaque
    }
    pub fn redirect(&self) -> &OsStr {
        &self.redirect
    }
    pub fn whiteout(&self) -> &OsStr {
        &self.whiteout
    }
    pub fn origin(&self) -> &OsStr {
        &self.origin
    }
    /// `U+N`: the union's link count is the upper inode's plus N (hard links whose
    /// other names are still only in a lower layer).
    pub fn nlink(&self) -> &OsStr {
        &self.nlink
    }

    /// Marks an upper file whose data is still in the lower layers (the kernel's
    /// `metacopy=on`): owner, mode, times and size are the upper's own.
    pub fn metacopy(&self) -> &OsStr {
        &self.metacopy
    }

    /// How an xattr name read from a layer shows through the mount: the union's own
    /// markers are hidden (`None`); escaped ones (`P.overlay.X`) show as `P.X`.
    pub fn visible_name(&self, stored: &[u8]) -> Option<Vec<u8>> {
        let p = self.prefix.as_bytes();
        if !stored.starts_with(p) {
            return Some(stored.to_vec());
        }
        let rest = &stored[p.len()..];
        if let Some(inner) = rest.strip_prefix(b"overlay.".as_slice()) {
            let mut v = p.to_vec();
            v.extend_from_slice(inner);
            return Some(v);
        }
        None
    }

    /// Where an xattr name set through the mount is stored in the upper: names in the
    /// overlay namespace are escaped (the kernel's behaviour since 6.7).
    pub fn stored_name(&self, visible: &[u8]) -> Vec<u8> {
        let p = self.prefix.as_bytes();
        match visible.strip_prefix(p) {
            Some(rest) => {
                let mut v = self.escaped.as_encoded_bytes().to_vec();
                v.extend_from_slice(rest);
                v
            }
            None => visible.to_vec(),
        }
    }

    /// Whether a stored xattr is one of the union's own markers (never copied up).
    pub fn is_private(&self, stored: &[u8]) -> bool {
        self.visible_name(stored).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_hidden_and_escapes_round_trip() {
        let m = MarkerNames::trusted();
        assert_eq!(m.visible_name(b"trusted.overlay.opaque"), None);
        assert_eq!(m.visible_name(b"user.foo"), Some(b"user.foo".to_vec()));
        let stored = m.stored_name(b"trusted.overlay.foo");
        assert_eq!(stored, b"trusted.overlay.overlay.foo");
        assert_eq!(
            m.visible_name(&stored),
            Some(b"trusted.overlay.foo".to_vec())
        );
        assert_eq!(
            m.stored_name(b"security.capability"),
            b"security.capability"
        );
        assert!(m.is_private(b"trusted.overlay.redirect"));
        assert!(!m.is_private(b"trusted.overlay.overlay.x"));
    }
}
