//! Docker's graphdriver plugin (a legacy v1 plugin): the calls of
//! `/GraphDriver.*` on the layer store, and the union mounts of `Get`/`Put`.
//! [`http`] speaks the wire; this module holds the meaning.
//!
//! Mounts are counted per layer: `Get` mounts on the first call (a container layer:
//! its ancestors as lowers and its own upper; an image layer: read-only), `Put`
//! unmounts when the count reaches zero, `Cleanup` unmounts all. The unions are
//! served by this process, so a restart cannot re-attach a mount: at start the
//! plugin unmounts what a previous run left (a stopped container loses nothing, its
//! layer is on disk) and names the container layers that were still mounted.

pub mod http;

use crate::store::{ErrorKind, LayerId, LayerKind, Store, StoreError, StoreResult};
use layerfuse::session::{MountRequest, Session, SetupErrorKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One mounted union and how many `Get`s hold it.
struct Mounted {
    session: Session,
    count: u32,
}

/// The plugin's state: the store and the live mounts.
pub struct Plugin {
    pub store: Store,
    mounts: Mutex<HashMap<LayerId, Mounted>>,
    /// An empty directory: the lower of a union with no ancestors.
    empty: PathBuf,
}

fn setup_err(e: layerfuse::SetupError) -> StoreError {
    let kind = match e.kind() {
        SetupErrorKind::NotFound => ErrorKind::NotFound,
        SetupErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        SetupErrorKind::Busy => ErrorKind::Busy,
        SetupErrorKind::Invalid => ErrorKind::Invalid,
        _ => ErrorKind::Io,
    };
    StoreError::new(kind, e.to_string())
}

/// Whether `path` is a mount point (any filesystem, a dead FUSE mount included).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_encoded_bytes();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| unescape_mountinfo(m) == want)
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Detach whatever is mounted at `path` (a mount whose daemon is gone included).
fn detach(path: &Path) {
    if !is_mount_point(path) {
        return;
    }
    if layerfuse::session::unmount_path(path, true).is_ok() && !is_mount_point(path) {
        return;
    }
    // A dead FUSE mount cannot be resolved (ENOTCONN): umount(8) detaches it by name.
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(path)
        .status();
}

impl Plugin {
    /// Open the store under `root` and clear mounts a previous run left.
    pub fn open(root: &Path) -> StoreResult<Plugin> {
        let store = Store::open(root)?;
        let empty = store.root().join("store/empty");
        std::fs::create_dir_all(&empty).map_err(|e| StoreError::io(empty.display(), e))?;
        let plugin = Plugin {
            store,
            mounts: Mutex::new(HashMap::new()),
            empty,
        };
        plugin.clear_stale_mounts();
        Ok(plugin)
    }

    fn clear_stale_mounts(&self) {
        let mnt = self.store.root().join("store/mnt");
        let Ok(rd) = std::fs::read_dir(&mnt) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if is_mount_point(&p) {
                tracing::error!(
                    layer = %e.file_name().to_string_lossy(),
                    "was mounted when the plugin stopped: its union is gone (a running container \
                     sees ENOTCONN and must be restarted); unmounting"
                );
                detach(&p);
            }
            let _ = std::fs::remove_dir(&p);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LayerId, Mounted>> {
        // A panic elsewhere never leaves the map half-changed (one insert/remove).
        self.mounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Get`: mount (first call) and return the union's directory.
    pub fn get(&self, id: &LayerId) -> StoreResult<PathBuf> {
        let mut mounts = self.lock();
        if let Some(m) = mounts.get_mut(id) {
            m.count += 1;
            return Ok(m.session.mountpoint().to_path_buf());
        }
        let meta = self.store.get(id)?;
        let mut lowers = self.store.lower_dirs(id)?;
        if lowers.is_empty() {
            lowers.push(self.empty.clone());
        }
        let mountpoint = self.store.mount_dir(id);
        detach(&mountpoint);
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| StoreError::io(mountpoint.display(), e))?;
        let container = meta.kind == LayerKind::Container;
        let req = MountRequest {
            lowers,
            upper: container.then(|| self.store.content_dir(&meta)),
            work: container.then(|| self.store.work_dir(id)),
            mountpoint: mountpoint.clone(),
            redirect_dir: true,
            read_only: !container,
            store_root: Some(self.store.root().to_path_buf()),
            ..MountRequest::default()
        };
        let cfg = req.validate().map_err(setup_err)?;
        let session = Session::start(cfg).map_err(setup_err)?;
        tracing::info!(layer = %id, dir = %mountpoint.display(), "mounted");
        mounts.insert(id.clone(), Mounted { session, count: 1 });
        Ok(mountpoint)
    }

    /// `Put`: unmount when the last `Get` is put back.
    pub fn put(&self, id: &LayerId) -> StoreResult<()> {
        let mut mounts = self.lock();
        let Some(m) = mounts.get_mut(id) else {
            // Docker puts layers it got before a plugin restart: nothing is mounted.
            return Ok(());
        };
        m.count = m.count.saturating_sub(1);
        if m.count > 0 {
            return Ok(());
        }
        if let Some(m) = mounts.remove(id) {
            unmount(id, m.session);
        }
        Ok(())
    }

    /// `Cleanup`: unmount everything.
    pub fn cleanup(&self) {
        let mut mounts = self.lock();
        for (id, m) in mounts.drain() {
            unmount(&id, m.session);
        }
    }

    /// `Remove`: unmount if still mounted, then remove the layer. A layer already
    /// gone is not an error (Docker retries removals after a crash).
    pub fn remove(&self, id: &LayerId) -> StoreResult<()> {
        if let Some(m) = self.lock().remove(id) {
            unmount(id, m.session);
        }
        match self.store.remove(id) {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            r => {
                let _ = std::fs::remove_dir(self.store.mount_dir(id));
                r
            }
        }
    }

    pub fn mounted(&self) -> usize {
        self.lock().len()
    }

    /// `Status`: what `docker info` shows.
    pub fn status(&self) -> Vec<[String; 2]> {
        let mut out = vec![[
            "Root Dir".to_string(),
            self.store.root().display().to_string(),
        ]];
        match self.store.usage() {
            Ok(u) => {
                out.push(["Layers".into(), u.layers.to_string()]);
                out.push(["Image Layers".into(), u.image_layers.to_string()]);
                out.push(["Container Layers".into(), u.container_layers.to_string()]);
                out.push(["Stored Objects".into(), u.objects.to_string()]);
                out.push(["Object Bytes".into(), u.object_bytes.to_string()]);
                out.push([
                    "Deduplicated Bytes".into(),
                    u.deduplicated_bytes.to_string(),
                ]);
            }
            Err(e) => out.push(["Error".into(), e.to_string()]),
        }
        out.push(["Mounted".into(), self.mounted().to_string()]);
        out
    }

    /// `GetMetadata`: shown by `docker inspect` under GraphDriver.Data.
    pub fn metadata(&self, id: &LayerId) -> StoreResult<HashMap<String, String>> {
        let meta = self.store.get(id)?;
        let mut m = HashMap::new();
        m.insert(
            "LayerDir".into(),
            self.store.layer_path(id).display().to_string(),
        );
        let lowers: Vec<String> = self
            .store
            .lower_dirs(id)?
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        m.insert("LowerDirs".into(), lowers.join(":"));
        if meta.kind == LayerKind::Container {
            m.insert(
                "UpperDir".into(),
                self.store.content_dir(&meta).display().to_string(),
            );
            m.insert(
                "WorkDir".into(),
                self.store.work_dir(id).display().to_string(),
            );
        }
        m.insert(
            "MergedDir".into(),
            self.store.mount_dir(id).display().to_string(),
        );
        if let Some(d) = meta.diff_id {
            m.insert("DiffID".into(), d);
        }
        Ok(m)
    }
}

fn unmount(id: &LayerId, session: Session) {
    let path = session.mountpoint().to_path_buf();
    let um = session.unmounter();
    match session.unmount() {
        Ok(()) => tracing::info!(layer = %id, "unmounted"),
        Err(e) => {
            // Busy (a process still in it): detach now, it goes with its last user.
            tracing::warn!(layer = %id, "{e}; detaching");
            if um.unmount(true).is_err() {
                detach(&path);
            }
        }
    }
}
