//! The snapshotter's operations (containerd's Snapshotter interface), synchronous: metadata in
//! `meta`, one directory per snapshot under `ROOT/containerd/snapshots/ID/` (`fs`: the layer
//! itself, the upper of an active snapshot; `work`: the union's work dir), mounts from `mounts`.
//!
//! Crash safety: a snapshot directory is made under a staging name and renamed into place before
//! the metadata transaction that names it commits; a removed snapshot's metadata is deleted
//! first and its directory after. So a crash leaves at most directories that no metadata names,
//! which `cleanup` (run at every start, and on containerd's Cleanup) deletes. The metadata never
//! names a directory that is not there.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::{SnapError, io_error};
use super::filters;
use super::meta::{Kind, Meta, Record, Usage};
use super::mounts::{self, Mount};
use super::usage::disk_usage;

/// Longest key accepted (containerd's own keys are "NAMESPACE/N/NAME", well under this).
const MAX_KEY: usize = 4096;

pub struct Snapshots {
    snapshots_dir: PathBuf,
    meta: Meta,
}

/// A snapshot as containerd sees it (Stat, List, Update).
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    pub key: String,
    pub kind: Kind,
    pub parent: String,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

fn info(key: &str, rec: &Record) -> Info {
    Info {
        key: key.to_string(),
        kind: rec.kind,
        parent: rec.parent.clone(),
        labels: rec.labels.clone(),
        created: rec.created,
        updated: rec.updated,
    }
}

fn check_key(what: &str, key: &str) -> Result<(), SnapError> {
    if key.is_empty() {
        return Err(SnapError::InvalidArgument(format!(
            "{what} must not be empty"
        )));
    }
    if key.len() > MAX_KEY || key.contains('\0') {
        return Err(SnapError::InvalidArgument(format!(
            "{what} must be at most {MAX_KEY} bytes without NUL"
        )));
    }
    Ok(())
}

fn not_found(key: &str) -> SnapError {
    SnapError::NotFound(format!("snapshot {key} does not exist"))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), SnapError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| io_error("cannot create", path, e))
}

/// Creates `dir` (and its parents) if missing, owned by root and closed to everyone else.
pub fn private_dir(dir: &Path) -> Result<(), SnapError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("cannot create", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error("cannot set the mode of", dir, e))
}

impl Snapshots {
    /// Opens the snapshotter's state under `dir` (`ROOT/containerd`), creating it, and deletes
    /// whatever an interrupted call left behind.
    pub fn open(dir: &Path) -> Result<Snapshots, SnapError> {
        let text = dir.to_string_lossy();
        // Mount options are "lowerdir=A:B,upperdir=C": a path with ',' or ':' cannot be said.
        if text.contains([',', ':']) || !dir.is_absolute() {
            return Err(SnapError::InvalidArgument(format!(
                "root {} must be an absolute path without ',' or ':'",
                dir.display()
            )));
        }
        private_dir(dir)?;
        let snapshots_dir = dir.join("snapshots");
        private_dir(&snapshots_dir)?;
        let meta = Meta::open(&dir.join("metadata.redb"))?;
        let s = Snapshots {
            snapshots_dir,
            meta,
        };
        s.cleanup()?;
        Ok(s)
    }

    fn dir_of(&self, id: u64) -> PathBuf {
        self.snapshots_dir.join(id.to_string())
    }

    fn fs_of(&self, id: u64) -> PathBuf {
        self.dir_of(id).join("fs")
    }

    /// Prepare (`kind` Active) or View: a new snapshot on `parent` (empty: none).
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapError> {
        check_key("snapshot key", key)?;
        let (id, rec) = self.meta.write(|tx| {
            if tx.get(key)?.is_some() {
                return Err(SnapError::AlreadyExists(format!(
                    "snapshot {key} already exists"
                )));
            }
            if !parent.is_empty() {
                let p = tx.get(parent)?.ok_or_else(|| {
                    SnapError::NotFound(format!("parent snapshot {parent} does not exist"))
                })?;
                if p.kind != Kind::Committed {
                    return Err(SnapError::InvalidArgument(format!(
                        "parent {parent} is not a committed snapshot"
                    )));
                }
            }
            let id = tx.next_id()?;
            let now = SystemTime::now();
            let rec = Record {
                id,
                kind,
                parent: parent.to_string(),
                labels,
                created: now,
                updated: now,
                usage: None,
            };
            self.make_dir(id)?;
            if let Err(e) = tx.put(key, &rec) {
                self.discard_dir(id);
                return Err(e);
            }
            Ok((id, rec))
        })?;
        tracing::debug!(key, parent, id, ?kind, "snapshot created");
        self.mounts_of(&rec)
    }

    /// `snapshots/.new-ID/{fs,work}` renamed to `snapshots/ID`: never seen half made.
    fn make_dir(&self, id: u64) -> Result<(), SnapError> {
        let staged = self.snapshots_dir.join(format!(".new-{id}"));
        let target = self.dir_of(id);
        for stale in [&staged, &target] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(|e| io_error("cannot remove", stale, e))?;
            }
        }
        let made = (|| {
            mkdir(&staged, 0o700)?;
            mkdir(&staged.join("fs"), 0o755)?;
            mkdir(&staged.join("work"), 0o700)?;
            std::fs::rename(&staged, &target).map_err(|e| io_error("cannot rename", &staged, e))
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&staged);
        }
        made
    }

    /// Deletes `snapshots/ID`. No metadata names it any more, so a crash half way leaves an
    /// orphan that `cleanup` finishes.
    fn discard_dir(&self, id: u64) {
        let dir = self.dir_of(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("cannot delete {}: {e}", dir.display());
            }
            _ => {}
        }
    }

    /// The fs dirs of `rec`'s parent chain, nearest first.
    fn lowers_of(&self, rec: &Record) -> Result<Vec<PathBuf>, SnapError> {
        let mut lowers = Vec::new();
        let mut parent = rec.parent.clone();
        while !parent.is_empty() {
            let p = self.meta.get(&parent)?.ok_or_else(|| {
                SnapError::Internal(format!("parent snapshot {parent} is missing"))
            })?;
            lowers.push(self.fs_of(p.id));
            parent = p.parent;
        }
        Ok(lowers)
    }

    fn mounts_of(&self, rec: &Record) -> Result<Vec<Mount>, SnapError> {
        let lowers = self.lowers_of(rec)?;
        let dir = self.dir_of(rec.id);
        Ok(match rec.kind {
            Kind::Active => mounts::active(&lowers, &dir.join("fs"), &dir.join("work")),
            Kind::View => mounts::view(&lowers, &dir.join("fs")),
            Kind::Committed => {
                return Err(SnapError::FailedPrecondition(
                    "a committed snapshot has no mounts: make a view of it".to_string(),
                ));
            }
        })
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapError> {
        let rec = self.meta.get(key)?.ok_or_else(|| not_found(key))?;
        self.mounts_of(&rec)
    }

    /// Commit the active snapshot `key` as the committed snapshot `name`.
    pub fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapError> {
        check_key("snapshot name", name)?;
        let id = self.meta.write(|tx| {
            let rec = tx.get(key)?.ok_or_else(|| not_found(key))?;
            if rec.kind != Kind::Active {
                return Err(SnapError::FailedPrecondition(format!(
                    "snapshot {key} is not active: only active snapshots can be committed"
                )));
            }
            if tx.get(name)?.is_some() {
                return Err(SnapError::AlreadyExists(format!(
                    "snapshot {name} already exists"
                )));
            }
            let fs = self.fs_of(rec.id);
            let usage = disk_usage(&fs).map_err(|e| io_error("cannot measure", &fs, e))?;
            tx.delete(key, &rec)?;
            let now = SystemTime::now();
            tx.put(
                name,
                &Record {
                    kind: Kind::Committed,
                    labels,
                    created: now,
                    updated: now,
                    usage: Some(usage),
                    ..rec
                },
            )?;
            Ok(rec.id)
        })?;
        // The union's work dir is of no use to a layer that never changes again.
        let work = self.dir_of(id).join("work");
        if let Err(e) = std::fs::remove_dir_all(&work).and_then(|()| mkdir_plain(&work)) {
            tracing::warn!("cannot empty {}: {e}", work.display());
        }
        tracing::debug!(key, name, id, "snapshot committed");
        Ok(())
    }

    pub fn remove(&self, key: &str) -> Result<(), SnapError> {
        let id = self.meta.write(|tx| {
            let rec = tx.get(key)?.ok_or_else(|| not_found(key))?;
            if tx.has_children(key)? {
                return Err(SnapError::FailedPrecondition(format!(
                    "cannot remove snapshot {key}: other snapshots are based on it"
                )));
            }
            tx.delete(key, &rec)?;
            Ok(rec.id)
        })?;
        self.discard_dir(id);
        tracing::debug!(key, id, "snapshot removed");
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Info, SnapError> {
        let rec = self.meta.get(key)?.ok_or_else(|| not_found(key))?;
        Ok(info(key, &rec))
    }

    /// Update: only labels can change. No field paths: the labels are replaced; `labels`:
    /// likewise; `labels.KEY`: that one label set (or removed when `new.labels` lacks it).
    pub fn update(&self, new: Info, fieldpaths: &[String]) -> Result<Info, SnapError> {
        let key = new.key.as_str();
        self.meta.write(|tx| {
            let mut rec = tx.get(key)?.ok_or_else(|| not_found(key))?;
            if fieldpaths.is_empty() {
                rec.labels = new.labels.clone();
            }
            for path in fieldpaths {
                if path == "labels" {
                    rec.labels = new.labels.clone();
                } else if let Some(label) = path.strip_prefix("labels.") {
                    match new.labels.get(label) {
                        Some(v) => rec.labels.insert(label.to_string(), v.clone()),
                        None => rec.labels.remove(label),
                    };
                } else {
                    return Err(SnapError::InvalidArgument(format!(
                        "cannot update field {path:?} of snapshot {key}: only labels change"
                    )));
                }
            }
            rec.updated = SystemTime::now();
            tx.put(key, &rec)?;
            Ok(info(key, &rec))
        })
    }

    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>, SnapError> {
        let filters = filters::parse_all(filters)?;
        Ok(self
            .meta
            .all()?
            .iter()
            .filter(|(k, r)| filters::any_matches(&filters, k, r))
            .map(|(k, r)| info(k, r))
            .collect())
    }

    /// Usage of the snapshot's own layer: measured at commit for committed ones, now for an
    /// active one (its upper), nothing for a view.
    pub fn usage(&self, key: &str) -> Result<Usage, SnapError> {
        let rec = self.meta.get(key)?.ok_or_else(|| not_found(key))?;
        match rec.kind {
            Kind::Committed => Ok(rec.usage.unwrap_or_default()),
            Kind::View => Ok(Usage::default()),
            Kind::Active => {
                let fs = self.fs_of(rec.id);
                disk_usage(&fs).map_err(|e| io_error("cannot measure", &fs, e))
            }
        }
    }

    /// Deletes every snapshot directory no metadata names (left by a crash or a failed
    /// removal, or a staging dir `.new-ID`).
    pub fn cleanup(&self) -> Result<(), SnapError> {
        let ids: HashSet<u64> = self.meta.all()?.iter().map(|(_, r)| r.id).collect();
        let entries = std::fs::read_dir(&self.snapshots_dir)
            .map_err(|e| io_error("cannot read", &self.snapshots_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot read", &self.snapshots_dir, e))?;
            let known = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| ids.contains(&id));
            if !known {
                let path = entry.path();
                tracing::info!("removing {} (no snapshot names it)", path.display());
                std::fs::remove_dir_all(&path).map_err(|e| io_error("cannot delete", &path, e))?;
            }
        }
        Ok(())
    }
}

fn mkdir_plain(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}
