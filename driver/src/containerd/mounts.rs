//! The mounts a snapshot is used through. The snapshotter never mounts: containerd (or its shim)
//! mounts what it returns. A union is of type `fuse3.layerfuse`, which containerd mounts with
//! `mount.fuse3 layerfuse TARGET -o OPTIONS -t layerfuse`, and mount.fuse3 runs the `layerfuse`
//! program found in a standard directory (scripts/install.sh puts it in /usr/local/bin), exactly
//! as for fuse-overlayfs. A snapshot with no parent is a bind mount of its own directory (no
//! FUSE daemon at all). A view of even one layer is a union: a store layer holds OCI whiteouts
//! and `.wh..wh..lfmeta` records and shares inodes with other layers, which only the union
//! turns into the layer's tree as its tar said it (a bind would show the store's raw format).

use std::path::{Path, PathBuf};

/// One mount as containerd's `types.Mount` has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// The mount type of a layerfuse union, and the program mount.fuse3 runs for it.
pub const UNION_TYPE: &str = "fuse3.layerfuse";
pub const UNION_SOURCE: &str = "layerfuse";

fn bind(dir: &Path, writable: bool) -> Mount {
    Mount {
        kind: "bind".to_string(),
        source: dir.to_string_lossy().into_owned(),
        options: vec![
            if writable { "rw" } else { "ro" }.to_string(),
            "rbind".to_string(),
        ],
    }
}

fn lowerdir(lowers: &[PathBuf]) -> String {
    let dirs: Vec<_> = lowers.iter().map(|l| l.to_string_lossy()).collect();
    format!("lowerdir={}", dirs.join(":"))
}

/// A writable snapshot over `lowers` (nearest parent first) with its own `upper` and `work`.
pub fn active(lowers: &[PathBuf], upper: &Path, work: &Path) -> Vec<Mount> {
    if lowers.is_empty() {
        return vec![bind(upper, true)];
    }
    vec![Mount {
        kind: UNION_TYPE.to_string(),
        source: UNION_SOURCE.to_string(),
        options: vec![
            lowerdir(lowers),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    }]
}

/// A read-only view of `lowers`; `empty` (the view's own, empty dir) when it has no parent.
pub fn view(lowers: &[PathBuf], empty: &Path) -> Vec<Mount> {
    match lowers {
        [] => vec![bind(empty, false)],
        _ => vec![Mount {
            kind: UNION_TYPE.to_string(),
            source: UNION_SOURCE.to_string(),
            // No upperdir: layerfuse mounts read-only.
            options: vec![lowerdir(lowers)],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let l = [PathBuf::from("/r/2/fs"), PathBuf::from("/r/1/fs")];
        let a = active(&l, Path::new("/r/3/fs"), Path::new("/r/3/work"));
        assert_eq!(a[0].kind, "fuse3.layerfuse");
        assert_eq!(
            a[0].options,
            [
                "lowerdir=/r/2/fs:/r/1/fs",
                "upperdir=/r/3/fs",
                "workdir=/r/3/work"
            ]
        );
        assert_eq!(
            active(&[], Path::new("/u"), Path::new("/w"))[0].options,
            ["rw", "rbind"]
        );
        let v = view(&l[1..], Path::new("/e"));
        assert_eq!(v[0].kind, "fuse3.layerfuse");
        assert_eq!(v[0].options, ["lowerdir=/r/1/fs"]);
        assert_eq!(
            view(&l, Path::new("/e"))[0].options,
            ["lowerdir=/r/2/fs:/r/1/fs"]
        );
        assert_eq!(view(&[], Path::new("/e"))[0].source, "/e");
    }
}
