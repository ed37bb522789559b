//! The layer store: image layers and container layers under one root, each with its
//! parent chain, diffID, size and creation time; regular files of image layers stored
//! once per content in `objects/` and hard-linked into every layer that holds them.
//!
//! Layout under `ROOT/store/` (docs/driver.md has the why of each piece):
//! ```text
//! lock                    flock held while a change is put in place (commit, remove, gc)
//! seq                     the last layer sequence number handed out (file numbers)
//! objects/AA/KEY          one inode per (content sha256, mode, owner, xattrs)
//! layers/ID/meta.json     LayerMeta
//! layers/ID/diff/         an image layer's tree (OCI whiteouts kept, .wh..wh..lfmeta records)
//! layers/ID/skeleton      the imported tar minus file contents, to give the same bytes back
//! layers/ID/upper, work/  a container layer's writable directory and the union's work dir
//! staging/N/              a change being made (N/lock held by the maker); gone at next open
//! trash/N/                a layer being removed; gone at next open
//! mnt/ID/                 where a container layer's union is mounted
//! ```
//! Every change is made in `staging/` and renamed into `layers/` in one step: a crash
//! leaves either the old layer or the new one, and its leftovers are removed at open.

mod export;
mod import;
mod skeleton;

pub use export::{Change, ChangeKind};
pub use import::{ImportSummary, Progress};

use layerfuse::layer::writer::OsError as Errno;
use layerfuse::layer::writer::TreeDir;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest layer id accepted (Docker's are 64 hex digits, plus `-init`).
pub const MAX_ID_LEN: usize = 128;

/// What went wrong, as a runtime needs to tell it apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    /// The layer is in use (mounted, or has children).
    Busy,
    /// A bad id, parent or argument.
    Invalid,
    /// A layer tar that breaks a rule (its entry is named in the message).
    Hostile,
    Io,
}

/// One line saying what failed and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
        }
    }
    pub(crate) fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> StoreError {
        StoreError::new(ErrorKind::Io, format!("{what}: {e}"))
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

/// A layer id from a runtime, checked before it becomes a path: 1 to 128 bytes of
/// `[A-Za-z0-9_.-]`, starting with a letter or digit (so never `.`, `..` or hidden).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LayerId(String);

impl LayerId {
    pub fn parse(s: &str) -> StoreResult<LayerId> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_ID_LEN
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(LayerId(s.to_string()))
        } else {
            Err(StoreError::new(
                ErrorKind::Invalid,
                format!(
                    "invalid layer id {:?}: 1 to {MAX_ID_LEN} of [A-Za-z0-9_.-], starting with a letter or digit",
                    s.chars().take(MAX_ID_LEN + 8).collect::<String>()
                ),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    fn os(&self) -> &OsStr {
        OsStr::new(&self.0)
    }
}

impl TryFrom<String> for LayerId {
    type Error = StoreError;
    fn try_from(s: String) -> StoreResult<LayerId> {
        LayerId::parse(&s)
    }
}

impl From<LayerId> for String {
    fn from(id: LayerId) -> String {
        id.0
    }
}

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image layer (read-only, filled once from a tar) or a container layer (writable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Image,
    Container,
}

/// What the store keeps about a layer (`layers/ID/meta.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    pub id: LayerId,
    pub parent: Option<LayerId>,
    pub kind: LayerKind,
    /// `sha256:` and the hex digest of the uncompressed tar; `None` until filled.
    pub diff_id: Option<String>,
    /// Bytes of file content in this layer alone.
    pub size: u64,
    /// Bytes of the tar it was filled from.
    pub tar_size: u64,
    /// Regular files, directories and other entries of the layer.
    pub entries: u64,
    /// Seconds since the epoch.
    pub created: i64,
    /// Store-wide sequence number; file numbers of this layer are `seq << 24 | n`.
    pub seq: u64,
}

/// Store-wide counts (shown by `docker info` and `layer ls`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub layers: u64,
    pub image_layers: u64,
    pub container_layers: u64,
    pub objects: u64,
    /// Bytes the objects take once each.
    pub object_bytes: u64,
    /// Bytes that layers would take on their own beyond that (kept once instead).
    pub deduplicated_bytes: u64,
}

/// What `gc` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub objects_removed: u64,
    pub bytes_freed: u64,
    pub leftovers_removed: u64,
}

/// The store under one root.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    store: PathBuf,
    /// Whether imports may make device nodes (only root can).
    device_nodes: bool,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A change being made in `staging/N/`, removed when dropped (committed or not).
pub(crate) struct Staging {
    pub dir: TreeDir,
    pub path: PathBuf,
    name: String,
    parent: TreeDir,
    _lock: File,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.parent.remove_all(OsStr::new(&self.name));
    }
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An OS error as `std::io::Error`.
pub(crate) fn os_err(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.0)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Open (creating if needed) the store under `root`, and remove what a crash left:
    /// staged changes whose maker is gone, layers half removed.
    pub fn open(root: &Path) -> StoreResult<Store> {
        let store = root.join("store");
        std::fs::create_dir_all(root).map_err(|e| StoreError::io(root.display(), e))?;
        for d in ["", "objects", "layers", "staging", "trash", "mnt"] {
            let p = store.join(d);
            mkdir_private(&p)?;
        }
        let s = Store {
            root: root.to_path_buf(),
            store,
            device_nodes: layerfuse::layer::writer::effective_ids().0 == 0,
        };
        s.recover()?;
        Ok(s)
    }

    /// Refuse (or allow, as root) device nodes in imported tars.
    pub fn set_device_nodes(&mut self, allowed: bool) {
        self.device_nodes = allowed && layerfuse::layer::writer::effective_ids().0 == 0;
    }

    pub(crate) fn device_nodes(&self) -> bool {
        self.device_nodes
    }

    /// The root given at open (the volume store lives beside, in `ROOT/volumes`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.store.join(sub)
    }

    fn dir(&self, sub: &str) -> StoreResult<TreeDir> {
        let p = self.path(sub);
        TreeDir::open(&p).map_err(|e| StoreError::io(p.display(), e))
    }

    /// Remove staged changes whose maker died, and half-removed layers.
    fn recover(&self) -> StoreResult<u64> {
        let mut removed = 0;
        let staging = self.dir("staging")?;
        for e in staging
            .entries()
            .map_err(|e| StoreError::io("staging", e))?
        {
            let Ok(work) = staging.child(&e.name) else {
                let _ = staging.remove_all(&e.name);
                continue;
            };
            // A maker holds N/lock for as long as it lives (the kernel drops it at exit).
            let free = match work.open_read(OsStr::new("lock")) {
                Ok(f) => f.try_lock().is_ok(),
                Err(_) => true,
            };
            if free {
                staging
                    .remove_all(&e.name)
                    .map_err(|err| StoreError::io("removing a staged change", err))?;
                removed += 1;
            }
        }
        let trash = self.dir("trash")?;
        for e in trash.entries().map_err(|e| StoreError::io("trash", e))? {
            trash
                .remove_all(&e.name)
                .map_err(|err| StoreError::io("removing a removed layer", err))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// A fresh `staging/N/` with its lock held.
    pub(crate) fn stage(&self) -> StoreResult<Staging> {
        let parent = self.dir("staging")?;
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            now_secs(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        parent
            .mkdir(OsStr::new(&name), 0o700)
            .map_err(|e| StoreError::io("staging", e))?;
        let dir = parent
            .child(OsStr::new(&name))
            .map_err(|e| StoreError::io("staging", e))?;
        let lock = dir
            .create(OsStr::new("lock"), 0o600)
            .map_err(|e| StoreError::io("staging lock", e))?;
        lock.try_lock()
            .map_err(|e| StoreError::io("staging lock", e))?;
        Ok(Staging {
            dir,
            path: self.path("staging").join(&name),
            name,
            parent,
            _lock: lock,
        })
    }

    /// Hold the store's change lock (blocks while another process commits).
    pub(crate) fn lock(&self) -> StoreResult<File> {
        let p = self.path("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| StoreError::io(p.display(), e))?;
        f.lock().map_err(|e| StoreError::io("store lock", e))?;
        Ok(f)
    }

    /// The next layer sequence number (under the change lock).
    pub(crate) fn next_seq(&self) -> StoreResult<u64> {
        let _lock = self.lock()?;
        let p = self.path("seq");
        let last: u64 = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let next = last + 1;
        if next >= 1 << 24 {
            return Err(StoreError::new(
                ErrorKind::Io,
                "layer sequence numbers exhausted",
            ));
        }
        write_replace(&self.path("seq.new"), &p, format!("{next}\n").as_bytes())?;
        Ok(next)
    }

    pub fn layer_path(&self, id: &LayerId) -> PathBuf {
        self.path("layers").join(id.as_str())
    }

    /// The directory a layer's content is in: `diff/` (image) or `upper/` (container).
    pub fn content_dir(&self, meta: &LayerMeta) -> PathBuf {
        let sub = match meta.kind {
            LayerKind::Image => "diff",
            LayerKind::Container => "upper",
        };
        self.layer_path(&meta.id).join(sub)
    }

    /// The union's work directory of a container layer.
    pub fn work_dir(&self, id: &LayerId) -> PathBuf {
        self.layer_path(id).join("work")
    }

    /// Where a container layer's union is mounted.
    pub fn mount_dir(&self, id: &LayerId) -> PathBuf {
        self.path("mnt").join(id.as_str())
    }

    pub fn exists(&self, id: &LayerId) -> bool {
        self.layer_path(id).join("meta.json").is_file()
    }

    pub fn get(&self, id: &LayerId) -> StoreResult<LayerMeta> {
        let p = self.layer_path(id).join("meta.json");
        let bytes = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::new(ErrorKind::NotFound, format!("no layer {id}"))
            } else {
                StoreError::io(p.display(), e)
            }
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::io(format!("layer {id}: meta.json"), e))
    }

    /// Every layer, sorted by id.
    pub fn list(&self) -> StoreResult<Vec<LayerMeta>> {
        let layers = self.dir("layers")?;
        let mut out = Vec::new();
        for e in layers.entries().map_err(|e| StoreError::io("layers", e))? {
            let Some(id) = e.name.to_str().and_then(|s| LayerId::parse(s).ok()) else {
                continue;
            };
            match self.get(&id) {
                Ok(m) => out.push(m),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The layer and its ancestors, nearest first.
    pub fn chain(&self, id: &LayerId) -> StoreResult<Vec<LayerMeta>> {
        let mut out = vec![self.get(id)?];
        while let Some(p) = out.last().and_then(|m| m.parent.clone()) {
            if out.len() > 500 {
                return Err(StoreError::new(
                    ErrorKind::Invalid,
                    format!("layer {id}: parent chain longer than 500"),
                ));
            }
            out.push(self.get(&p)?);
        }
        Ok(out)
    }

    /// The content directories a union stacks under a layer, topmost first: for an
    /// image layer its own and its ancestors'; for a container layer its ancestors'.
    pub fn lower_dirs(&self, id: &LayerId) -> StoreResult<Vec<PathBuf>> {
        let chain = self.chain(id)?;
        let skip = usize::from(chain.first().map(|m| m.kind) == Some(LayerKind::Container));
        Ok(chain
            .iter()
            .skip(skip)
            .map(|m| self.content_dir(m))
            .collect())
    }

    /// Make an empty layer `id` on `parent` (an image layer, to be filled by
    /// [`Store::apply_diff`], or a container layer with its upper and work dirs).
    pub fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        kind: LayerKind,
    ) -> StoreResult<LayerMeta> {
        if let Some(p) = parent {
            self.get(p)?;
        }
        if self.exists(id) {
            return Err(StoreError::new(
                ErrorKind::AlreadyExists,
                format!("layer {id} exists"),
            ));
        }
        let seq = self.next_seq()?;
        let stage = self.stage()?;
        let io = |e: Errno| StoreError::io(format!("creating layer {id}"), e);
        stage.dir.mkdir(OsStr::new("layer"), 0o700).map_err(io)?;
        let layer = stage.dir.child(OsStr::new("layer")).map_err(io)?;
        let subs: &[&str] = match kind {
            LayerKind::Image => &["diff"],
            LayerKind::Container => &["upper", "work"],
        };
        for s in subs {
            layer.mkdir(OsStr::new(s), 0o755).map_err(io)?;
        }
        let meta = LayerMeta {
            id: id.clone(),
            parent: parent.cloned(),
            kind,
            diff_id: None,
            size: 0,
            tar_size: 0,
            entries: 0,
            created: now_secs(),
            seq,
        };
        write_meta(&layer, &meta)?;
        let _lock = self.lock()?;
        if let Some(p) = parent {
            // The parent may have gone while this was staged.
            self.get(p)?;
        }
        let layers = self.dir("layers")?;
        stage
            .dir
            .rename(OsStr::new("layer"), &layers, id.os(), true)
            .map_err(|e| match e {
                Errno::EEXIST | Errno::ENOTEMPTY => {
                    StoreError::new(ErrorKind::AlreadyExists, format!("layer {id} exists"))
                }
                e => io(e),
            })?;
        layers.sync().map_err(io)?;
        Ok(meta)
    }

    /// Ids of the layers whose parent is `id`.
    pub fn children(&self, id: &LayerId) -> StoreResult<Vec<LayerId>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|m| m.parent.as_ref() == Some(id))
            .map(|m| m.id)
            .collect())
    }

    /// Remove a layer (refused while it has children). Its objects stay until `gc`.
    pub fn remove(&self, id: &LayerId) -> StoreResult<()> {
        let _lock = self.lock()?;
        self.get(id)?;
        let kids = self.children(id)?;
        if let Some(k) = kids.first() {
            return Err(StoreError::new(
                ErrorKind::Busy,
                format!("layer {id} is the parent of {k}"),
            ));
        }
        let layers = self.dir("layers")?;
        let trash = self.dir("trash")?;
        let name = format!(
            "{id}-{}-{}",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let io = |e: Errno| StoreError::io(format!("removing layer {id}"), e);
        layers
            .rename(id.os(), &trash, OsStr::new(&name), true)
            .map_err(io)?;
        layers.sync().map_err(io)?;
        drop(_lock);
        trash.remove_all(OsStr::new(&name)).map_err(io)?;
        Ok(())
    }

    /// Counts and bytes across the store.
    pub fn usage(&self) -> StoreResult<Usage> {
        let mut u = Usage::default();
        for m in self.list()? {
            u.layers += 1;
            match m.kind {
                LayerKind::Image => u.image_layers += 1,
                LayerKind::Container => u.container_layers += 1,
            }
        }
        self.each_object(|_, _, st| {
            u.objects += 1;
            u.object_bytes += st.size;
            // One name is objects/, the others are layers' (and tars' own hard links).
            u.deduplicated_bytes += st.size * st.nlink.saturating_sub(2);
            Ok(())
        })?;
        Ok(u)
    }

    fn each_object(
        &self,
        mut f: impl FnMut(&TreeDir, &OsStr, &layerfuse::layer::writer::EntryStat) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let objects = self.dir("objects")?;
        for fan in objects
            .entries()
            .map_err(|e| StoreError::io("objects", e))?
        {
            let Ok(d) = objects.child(&fan.name) else {
                continue;
            };
            for o in d.entries().map_err(|e| StoreError::io("objects", e))? {
                if let Ok(st) = d.stat(&o.name) {
                    f(&d, &o.name, &st)?;
                }
            }
        }
        Ok(())
    }

    /// Remove objects no layer holds any more, and leftovers of crashed changes.
    pub fn gc(&self) -> StoreResult<GcReport> {
        let mut r = GcReport {
            leftovers_removed: self.recover()?,
            ..GcReport::default()
        };
        let _lock = self.lock()?;
        self.each_object(|d, name, st| {
            if st.nlink <= 1 {
                d.unlink(name)
                    .map_err(|e| StoreError::io("removing an object", e))?;
                r.objects_removed += 1;
                r.bytes_freed += st.size;
            }
            Ok(())
        })?;
        Ok(r)
    }

    /// The object directory for a key (`objects/AA/`), made on first use.
    pub(crate) fn object_dir(&self, key: &str) -> StoreResult<TreeDir> {
        let fan = key.get(..2).unwrap_or("00");
        let objects = self.dir("objects")?;
        match objects.mkdir(OsStr::new(fan), 0o700) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(StoreError::io("objects", e)),
        }
        objects
            .child(OsStr::new(fan))
            .map_err(|e| StoreError::io("objects", e))
    }

    pub(crate) fn layers_dir(&self) -> StoreResult<TreeDir> {
        self.dir("layers")
    }
}

fn mkdir_private(p: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Root only, whatever an older version or the umask left.
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StoreError::io(p.display(), e))
        }
        Err(e) => Err(StoreError::io(p.display(), e)),
    }
}

/// Write `bytes` to `tmp`, flush it to disk and rename it over `dst`.
fn write_replace(tmp: &Path, dst: &Path, bytes: &[u8]) -> StoreResult<()> {
    let mut f = File::create(tmp).map_err(|e| StoreError::io(tmp.display(), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(tmp.display(), e))?;
    std::fs::rename(tmp, dst).map_err(|e| StoreError::io(dst.display(), e))
}

/// Write `meta.json` into a staged layer directory.
pub(crate) fn write_meta(layer: &TreeDir, meta: &LayerMeta) -> StoreResult<()> {
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::io("meta.json", e))?;
    let name = OsStr::from_bytes(b"meta.json");
    let _ = layer.unlink(name);
    let mut f = layer
        .create(name, 0o600)
        .map_err(|e| StoreError::io("meta.json", e))?;
    f.write_all(&bytes)
        .map_err(|e| StoreError::io("meta.json", e))?;
    Ok(())
}

#[cfg(test)]
mod tests;
