//! Disk use of a snapshot's directory, as containerd measures it (du): bytes allocated
//! (st_blocks × 512) and inodes, the directory itself included, each hard-linked inode once.
//! Symlinks are never followed; the walk stays on the directory's own filesystem.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::meta::Usage;

pub fn disk_usage(dir: &Path) -> std::io::Result<Usage> {
    let root = std::fs::symlink_metadata(dir)?;
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut count = |md: &std::fs::Metadata, usage: &mut Usage| {
        if seen.insert((md.dev(), md.ino())) {
            usage.inodes += 1;
            usage.size += i64::try_from(md.blocks().saturating_mul(512)).unwrap_or(i64::MAX);
        }
    };
    count(&root, &mut usage);
    let mut todo: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let md = entry.metadata()?; // lstat: never follows a symlink
            count(&md, &mut usage);
            if md.is_dir() && md.dev() == root.dev() {
                todo.push(entry.path());
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hard_links_once_and_never_follows_symlinks() {
        let dir = std::env::temp_dir().join(format!("lf-usage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), vec![1u8; 10000]).unwrap();
        std::fs::hard_link(dir.join("sub/f"), dir.join("g")).unwrap();
        std::os::unix::fs::symlink("/usr", dir.join("l")).unwrap();
        let u = disk_usage(&dir).unwrap();
        // dir, sub, f (= g), l
        assert_eq!(u.inodes, 4);
        let f = std::fs::metadata(dir.join("g")).unwrap().blocks() as i64 * 512;
        assert!(u.size >= f && u.size < f + 3 * 64 * 1024, "{u:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
