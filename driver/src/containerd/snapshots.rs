//! The snapshotter's operations (containerd's Snapshotter interface), synchronous: metadata in
//! `meta`, the layers in the shared layer store (`crate::store`, `ROOT/store/`), mounts from
//! `mounts`. Each snapshot N is the store layer `ctd-N`: a container layer (upper + work) while
//! active or a view, an image layer once committed: the active layer's changes are exported as a
//! tar and imported into a new image layer, so committed snapshots are deduplicated with every
//! other layer of the store (Docker's included).
//!
//! Crash safety: a store layer is made (staged and renamed into place by the store) inside the
//! metadata transaction that names it, before it commits; a removed snapshot's metadata goes
//! first and its layer after. So a crash leaves at most `ctd-` layers that no metadata names,
//! which `cleanup` (run at every start, and on containerd's Cleanup) removes, within a write
//! transaction so that it never races a layer being made.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use super::error::{SnapError, io_error};
use super::filters;
use super::meta::{Kind, Meta, Record, Usage};
use super::mounts::{self, Mount};
use super::usage::disk_usage;
use crate::store::{ErrorKind, LayerId, LayerKind, Store, StoreError};

/// Longest key accepted (containerd's own keys are "NAMESPACE/N/NAME", well under this).
const MAX_KEY: usize = 4096;

pub struct Snapshots {
    store: Store,
    meta: Meta,
}

/// The store layer of snapshot `id`.
fn layer_id(id: u64) -> LayerId {
    // "ctd-" and digits: always a valid id.
    LayerId::parse(&format!("{LAYER_PREFIX}{id}")).unwrap_or_else(|_| unreachable!())
}

const LAYER_PREFIX: &str = "ctd-";

fn store_error(e: StoreError) -> SnapError {
    match e.kind {
        ErrorKind::NotFound => SnapError::NotFound(e.message),
        ErrorKind::AlreadyExists => SnapError::AlreadyExists(e.message),
        ErrorKind::Busy => SnapError::FailedPrecondition(e.message),
        ErrorKind::Invalid | ErrorKind::Hostile => SnapError::InvalidArgument(e.message),
        ErrorKind::Io => SnapError::Internal(e.message),
    }
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
    /// Opens the snapshotter's state: metadata under `dir` (`ROOT/containerd`), layers in the
    /// store under `root`, and removes whatever an interrupted call left behind.
    pub fn open(root: &Path, dir: &Path) -> Result<Snapshots, SnapError> {
        let text = root.to_string_lossy();
        // Mount options are "lowerdir=A:B,upperdir=C": a path with ',' or ':' cannot be said.
        if text.contains([',', ':']) || !root.is_absolute() {
            return Err(SnapError::InvalidArgument(format!(
                "root {} must be an absolute path without ',' or ':'",
                root.display()
            )));
        }
        private_dir(dir)?;
        let store = Store::open(root).map_err(store_error)?;
        let meta = Meta::open(&dir.join("metadata.redb"))?;
        let s = Snapshots { store, meta };
        s.cleanup()?;
        Ok(s)
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
            let parent_layer = (!parent.is_empty())
                .then(|| tx.get(parent))
                .transpose()?
                .flatten()
                .map(|p| layer_id(p.id));
            self.store
                .create(&layer_id(id), parent_layer.as_ref(), LayerKind::Container)
                .map_err(store_error)?;
            if let Err(e) = tx.put(key, &rec) {
                self.discard_layer(id);
                return Err(e);
            }
            Ok((id, rec))
        })?;
        tracing::debug!(key, parent, id, ?kind, "snapshot created");
        self.mounts_of(&rec)
    }

    /// Removes the store layer of snapshot `id`. No metadata names it any more, so a crash
    /// half way leaves an orphan that `cleanup` finishes.
    fn discard_layer(&self, id: u64) {
        match self.store.remove(&layer_id(id)) {
            Err(e) if e.kind != ErrorKind::NotFound => {
                tracing::warn!("cannot remove layer {}: {e}", layer_id(id));
            }
            _ => {}
        }
    }

    fn mounts_of(&self, rec: &Record) -> Result<Vec<Mount>, SnapError> {
        if rec.kind == Kind::Committed {
            return Err(SnapError::FailedPrecondition(
                "a committed snapshot has no mounts: make a view of it".to_string(),
            ));
        }
        let layer = layer_id(rec.id);
        let meta = self.store.get(&layer).map_err(store_error)?;
        // A container layer's lower dirs are its ancestors' content, nearest first.
        let lowers = self.store.lower_dirs(&layer).map_err(store_error)?;
        let upper = self.store.content_dir(&meta);
        Ok(match rec.kind {
            Kind::Active => mounts::active(&lowers, &upper, &self.store.work_dir(&layer)),
            _ => mounts::view(&lowers, &upper),
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
        let old = self.meta.write(|tx| {
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
            let id = tx.next_id()?;
            let usage = self.import(rec.id, id, &rec.parent, tx)?;
            tx.delete(key, &rec)?;
            let now = SystemTime::now();
            let new = Record {
                id,
                kind: Kind::Committed,
                labels,
                created: now,
                updated: now,
                usage: Some(usage),
                ..rec.clone()
            };
            if let Err(e) = tx.put(name, &new) {
                self.discard_layer(id);
                return Err(e);
            }
            Ok(rec.id)
        })?;
        // The active layer, now an image layer of the store; a crash before this leaves an
        // orphan that cleanup removes.
        self.discard_layer(old);
        tracing::debug!(key, name, "snapshot committed");
        Ok(())
    }

    /// The changes of the container layer of snapshot `from` imported as the image layer of
    /// snapshot `to` (deduplicated by the store), its disk use measured.
    fn import(
        &self,
        from: u64,
        to: u64,
        parent_key: &str,
        tx: &super::meta::Tx,
    ) -> Result<Usage, SnapError> {
        let parent = (!parent_key.is_empty())
            .then(|| tx.get(parent_key))
            .transpose()?
            .flatten()
            .map(|p| layer_id(p.id));
        let (src, dst) = (layer_id(from), layer_id(to));
        self.store
            .create(&dst, parent.as_ref(), LayerKind::Image)
            .map_err(store_error)?;
        let imported = (|| {
            let (reader, mut writer) =
                std::io::pipe().map_err(|e| SnapError::Internal(format!("pipe: {e}")))?;
            let (applied, exported) = std::thread::scope(|scope| {
                let export = scope.spawn(|| {
                    let r = self.store.diff(&src, parent.as_ref(), &mut writer);
                    drop(writer);
                    r
                });
                let applied = self.store.apply_diff(&dst, parent.as_ref(), reader, None);
                (applied, export.join())
            });
            let exported =
                exported.map_err(|_| SnapError::Internal("layer export panicked".into()))?;
            // The importer's error says more (the exporter then only sees a closed pipe).
            applied.map_err(store_error)?;
            exported.map_err(store_error)?;
            let meta = self.store.get(&dst).map_err(store_error)?;
            let dir = self.store.content_dir(&meta);
            disk_usage(&dir).map_err(|e| io_error("cannot measure", &dir, e))
        })();
        if imported.is_err() {
            self.discard_layer(to);
        }
        imported
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
        self.discard_layer(id);
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
                let meta = self.store.get(&layer_id(rec.id)).map_err(store_error)?;
                let upper = self.store.content_dir(&meta);
                disk_usage(&upper).map_err(|e| io_error("cannot measure", &upper, e))
            }
        }
    }

    /// Removes every `ctd-` store layer no metadata names (left by a crash or a failed
    /// removal), children before parents, then lets the store free the objects no layer holds
    /// any more: this is where an image's bytes go after containerd removed its snapshots.
    pub fn cleanup(&self) -> Result<(), SnapError> {
        self.meta.write(|tx| {
            let ids: HashSet<u64> = tx.ids()?.into_iter().collect();
            loop {
                let layers = self.store.list().map_err(store_error)?;
                let orphans: Vec<_> = layers
                    .iter()
                    .filter(|m| {
                        m.id.as_str()
                            .strip_prefix(LAYER_PREFIX)
                            .and_then(|n| n.parse::<u64>().ok())
                            .is_some_and(|id| !ids.contains(&id))
                    })
                    // Leaves first: a layer with children cannot go yet.
                    .filter(|m| !layers.iter().any(|c| c.parent.as_ref() == Some(&m.id)))
                    .collect();
                if orphans.is_empty() {
                    return Ok(());
                }
                for m in orphans {
                    tracing::info!("removing layer {} (no snapshot names it)", m.id);
                    self.store.remove(&m.id).map_err(store_error)?;
                }
            }
        })?;
        let freed = self.store.gc().map_err(store_error)?;
        if freed.objects_removed > 0 {
            tracing::info!(
                "freed {} bytes in {} objects",
                freed.bytes_freed,
                freed.objects_removed
            );
        }
        Ok(())
    }
}
