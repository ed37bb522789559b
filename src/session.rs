//! One mount's life as a library call. [`Session::start`] attaches the volumes and
//! binds, opens the layers, mounts and serves on threads of this process, and returns
//! once the mount is live; [`Session::unmount`] ends it, [`Session::wait`] serves until
//! someone else unmounts it. The `layerfuse` binary and the storage driver both mount
//! this way; everything that can go wrong before serving is one [`SetupError`].

mod control;
mod mount;
#[cfg(target_os = "linux")]
mod watch;

pub use control::{GraftStatus, MountStatus};

use crate::overlay::{GraftConfig, Overlay};
use crate::volumes::{Claim, VolumeStore};
use mount::MountOptions;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::config::{
    GraftSource, GraftSpec, MountConfig, MountRequest, Transport, default_work_dir,
    is_layerfuse_mount, parse_graft, split_lowers,
};
pub use crate::error::{SetupError, SetupErrorKind};

/// One mount served by this process.
#[derive(Debug)]
pub struct Session {
    mountpoint: PathBuf,
    /// The thread that serves requests until the mount goes; `None` once joined (or
    /// when the mount was gone before it served).
    serving: Option<JoinHandle<io::Result<()>>>,
}

/// How the first population of new volumes goes (see [`Session::start_reporting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillProgress {
    /// Bytes of file data copied so far.
    pub bytes: u64,
    /// The last report: every new volume is filled.
    pub done: bool,
}

/// Ends a session's mount from elsewhere (a signal handler's thread).
#[derive(Clone, Debug)]
pub struct Unmounter {
    mountpoint: PathBuf,
}

impl Unmounter {
    /// Unmount; `lazy` detaches a busy mount (it goes when its last user leaves).
    pub fn unmount(&self, lazy: bool) -> Result<(), SetupError> {
        crate::sys::unmount(&self.mountpoint, lazy)
            .map_err(|e| SetupError::errno(&self.mountpoint, "cannot unmount", e.0))
    }
}

/// The volumes and binds of a mount, ready for the union.
#[derive(Debug, Default)]
struct Attached {
    grafts: Vec<GraftConfig>,
    /// Per graft: fill it from the layers first (a new, empty volume).
    populate: Vec<bool>,
    /// Held while mounted: marks the volumes as in use.
    claims: Vec<Claim>,
    /// Volumes made by this mount, removed again if the mount is refused.
    made: Vec<String>,
    /// What `layerfuse status` shows of them.
    shown: Vec<GraftStatus>,
    /// Volumes being filled for the first time: marked until the fill is complete.
    filling: Vec<crate::volumes::Volume>,
}

/// Make (or find) the volumes a mount asks for, claim them for this process, and
/// turn every volume and bind into a graft of the union.
fn attach(cfg: &MountConfig, store: &VolumeStore, out: &mut Attached) -> Result<(), SetupError> {
    for s in &cfg.grafts {
        let target = s.target.as_os_str().as_encoded_bytes().to_vec();
        match &s.source {
            GraftSource::Volume(name) => {
                let (v, new) = match name {
                    Some(n) => store.get_or_create(n)?,
                    None => (store.create(None)?, true),
                };
                if new {
                    out.made.push(v.name.clone());
                }
                out.claims.push(store.claim(&v.name, &cfg.mountpoint)?);
                // A population cut short (no room, kill -9) is never shown: it starts over.
                let unfinished = store.fill_unfinished(&v);
                if unfinished {
                    store.clear_unfinished(&v)?;
                }
                let empty = std::fs::read_dir(&v.path)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                let populate = empty && !s.nocopy;
                if populate {
                    store.begin_fill(&v)?;
                    out.filling.push(v.clone());
                } else if unfinished {
                    store.end_fill(&v)?;
                }
                out.populate.push(populate);
                out.shown.push(GraftStatus {
                    kind: "volume".into(),
                    name: v.name.clone(),
                    source: v.path.clone(),
                    target: Path::new("/").join(&s.target),
                    read_only: s.read_only,
                });
                out.grafts.push(GraftConfig {
                    target,
                    source: v.path,
                    read_only: s.read_only,
                });
            }
            GraftSource::Bind(src) => {
                out.populate.push(false);
                out.shown.push(GraftStatus {
                    kind: "bind".into(),
                    name: String::new(),
                    source: src.clone(),
                    target: Path::new("/").join(&s.target),
                    read_only: s.read_only,
                });
                out.grafts.push(GraftConfig {
                    target,
                    source: src.clone(),
                    read_only: s.read_only,
                });
            }
        }
    }
    Ok(())
}

/// Request-serving threads: one per core, at least 2 (a slow request must not stall
/// the rest), at most 8. Other systems' fuser serves on one.
fn serving_threads() -> usize {
    if !cfg!(target_os = "linux") {
        return 1;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

impl Session {
    /// Attach volumes, open layers, mount, start serving; returns once the mount is
    /// live. A refused mount leaves nothing behind: no mount, no volume or work dir it
    /// made.
    pub fn start(cfg: MountConfig) -> Result<Session, SetupError> {
        Session::start_reporting(cfg, &|_| {})
    }

    /// [`start`](Self::start), telling `report` how the first population of new
    /// volumes from the layers goes (a few times a second while it runs, then once
    /// with `done`): a large image path can take a while, and a person should see it.
    pub fn start_reporting(
        cfg: MountConfig,
        report: &(dyn Fn(FillProgress) + Sync),
    ) -> Result<Session, SetupError> {
        // Every file a caller holds open in the union is an fd here: as many as the hard
        // limit allows, not the soft 1024 a service usually starts with.
        match crate::sys::raise_open_file_limit() {
            Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
            Err(e) => tracing::debug!(error = %e, "open-file limit not raised"),
        }
        let made_work = match &cfg.make_work {
            Some(w) => {
                make_work_dir(w)?;
                Some(w.clone())
            }
            None => None,
        };
        // Watched before the mount is live: no host change after it goes unseen.
        #[cfg(target_os = "linux")]
        let watcher = if cfg.watch_lowers {
            Some(watch::Watcher::new(&cfg.overlay.lowers).map_err(|e| {
                SetupError::new(
                    crate::error::kind_of(&e),
                    format!("--watch-lowers: cannot watch the lower layers: {e}"),
                )
            })?)
        } else {
            None
        };
        let store = VolumeStore::new(cfg.store_root.clone());
        let mut attached = Attached::default();
        let control = control::Bound::new();
        let started = attach(&cfg, &store, &mut attached)
            .and_then(|()| open_union(&cfg, &attached, report))
            .and_then(|overlay| {
                for v in &attached.filling {
                    store.end_fill(v)?;
                }
                Ok(overlay)
            })
            .and_then(|overlay| {
                let overlay = Arc::new(overlay);
                let opts = MountOptions {
                    read_only: cfg.read_only,
                    threads: serving_threads(),
                    flags: cfg.flags.clone(),
                    fsname: cfg.fsname.clone(),
                    subtype: cfg.subtype.clone(),
                    transport: match cfg.transport {
                        Some(t) => t,
                        None => Transport::from_env().map_err(SetupError::invalid)?,
                    },
                };
                match mount::mount(overlay.clone(), &cfg.mountpoint, &opts) {
                    Ok(m) => Ok(Some((m, overlay))),
                    // Unmounted (umount2, fusermount -u) between the kernel's mount and
                    // the first request: nothing is left mounted, as after any unmount.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(None),
                    Err(e) => Err(SetupError::io(&cfg.mountpoint, "cannot mount", &e)),
                }
            });
        let mounted = match started {
            Ok(m) => m,
            Err(e) => {
                let made = std::mem::take(&mut attached.made);
                drop(attached);
                for name in made {
                    let _ = store.remove(&name, true);
                }
                if let Some(w) = made_work {
                    let _ = std::fs::remove_dir_all(w);
                }
                return Err(e);
            }
        };
        let Some((mounted, overlay)) = mounted else {
            tracing::info!("unmounted before serving");
            return Ok(Session {
                mountpoint: cfg.mountpoint,
                serving: None,
            });
        };
        tracing::info!(mountpoint = %cfg.mountpoint.display(), transport = %mounted.transport(), "mounted");
        widen_read_ahead(&cfg.mountpoint);
        let mountpoint = cfg.mountpoint.clone();
        #[cfg(target_os = "linux")]
        let watching = match watcher {
            Some(w) => {
                let watched = w.watched();
                match w.start(overlay.clone(), mounted.notifier()) {
                    Ok(r) => {
                        tracing::debug!(watched, "lower layer watcher started");
                        Some(r)
                    }
                    Err(e) => {
                        drop(mounted);
                        let _ = crate::sys::unmount(&cfg.mountpoint, true);
                        return Err(SetupError::io(&cfg.mountpoint, "cannot watch lowers", &e));
                    }
                }
            }
            None => None,
        };
        let control = control.and_then(|c| {
            c.serve(
                control::Fixed {
                    mountpoint: cfg.mountpoint.clone(),
                    fsname: cfg.fsname.clone(),
                    fstype: format!("fuse.{}", cfg.subtype),
                    lowers: cfg.overlay.lowers.clone(),
                    upper: cfg.overlay.upper.as_ref().map(|(u, _)| u.clone()),
                    work: cfg.overlay.upper.as_ref().map(|(_, w)| w.clone()),
                    read_only: cfg.read_only,
                    transport: mounted.transport().to_string(),
                    grafts: std::mem::take(&mut attached.shown),
                },
                overlay,
            )
        });
        let serving = std::thread::Builder::new()
            .name("layerfuse-session".into())
            .spawn(move || {
                // The claims live exactly as long as the mount is served.
                let _claims = attached.claims;
                // Answers status while the mount is served, not after.
                let _control = control;
                let served = mounted.run();
                #[cfg(target_os = "linux")]
                if let Some(w) = watching {
                    w.stop();
                }
                if served.is_err() {
                    // A connection that failed leaves a dead mount (ENOTCONN): not kept.
                    let _ = crate::sys::unmount(&mountpoint, true);
                }
                served
            })
            .map_err(|e| SetupError::io(&cfg.mountpoint, "cannot start serving", &e))?;
        Ok(Session {
            mountpoint: cfg.mountpoint,
            serving: Some(serving),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// A handle that unmounts this session's mount from another thread.
    pub fn unmounter(&self) -> Unmounter {
        Unmounter {
            mountpoint: self.mountpoint.clone(),
        }
    }

    /// Unmount and wait for the serving threads to end (the daemon's work is
    /// flushed). A busy mount is refused ([`SetupErrorKind::Busy`]) and stays served.
    pub fn unmount(mut self) -> Result<(), SetupError> {
        if self.serving.is_some()
            && let Err(e) = self.unmounter().unmount(false)
        {
            // Still mounted: the serving thread goes on (detached) for whoever uses it.
            self.serving = None;
            return Err(e);
        }
        self.join()
    }

    /// Serve until the mount is unmounted from outside (umount, fusermount3 -u).
    pub fn wait(mut self) -> Result<(), SetupError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), SetupError> {
        let Some(t) = self.serving.take() else {
            return Ok(());
        };
        let ended = match t.join() {
            Ok(r) => r,
            Err(_) => Err(io::Error::other("the serving thread panicked")),
        };
        tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted");
        ended.map_err(|e| SetupError::io(&self.mountpoint, "session ended", &e))
    }
}

impl Drop for Session {
    /// A session dropped while mounted is unmounted (detached if busy), never left
    /// served by nobody's threads.
    fn drop(&mut self) {
        if self.serving.is_none() {
            return;
        }
        let u = self.unmounter();
        if u.unmount(false).is_ok() {
            let _ = self.join();
        } else {
            let _ = u.unmount(true);
        }
    }
}

/// Open the layers with the volumes and binds grafted in, and fill new volumes.
fn open_union(
    cfg: &MountConfig,
    attached: &Attached,
    report: &(dyn Fn(FillProgress) + Sync),
) -> Result<Overlay, SetupError> {
    let mut ocfg = cfg.overlay.clone();
    ocfg.grafts = attached.grafts.clone();
    let overlay = Overlay::new(&ocfg).map_err(|e| {
        let kind = crate::error::kind_of(&io::Error::from_raw_os_error(e.errno.0));
        SetupError::new(kind, e.to_string())
    })?;
    if !attached.populate.contains(&true) {
        // Grafts are still placed and checked (targets made, kinds matched).
        overlay
            .prepare_grafts(&attached.populate)
            .map_err(|e| SetupError::new(SetupErrorKind::Io, e))?;
        return Ok(overlay);
    }
    // The union copies; a watcher reports the bytes it counted, every tenth of a second.
    let (finished, ticks) = std::sync::mpsc::channel::<()>();
    let filled = std::thread::scope(|scope| {
        let overlay = &overlay;
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                ticks.recv_timeout(Duration::from_millis(100))
            {
                report(FillProgress {
                    bytes: overlay.counters().bytes_filled(),
                    done: false,
                });
            }
        });
        let filled = overlay.prepare_grafts(&attached.populate);
        drop(finished);
        filled
    });
    filled.map_err(|e| SetupError::new(SetupErrorKind::Io, e))?;
    report(FillProgress {
        bytes: overlay.counters().bytes_filled(),
        done: true,
    });
    Ok(overlay)
}

/// Give the new mount the readahead window of [`crate::fuse::policy::MOUNT_READ_AHEAD_KB`]
/// (its own device's setting, as `max_readahead` is). Only root may; others keep the
/// kernel's 128 KiB, and so does a mount whose device cannot be found (FreeBSD and
/// macOS have neither mountinfo nor the setting).
fn widen_read_ahead(mountpoint: &Path) {
    let Some(dev) = crate::config::mount_device(mountpoint) else {
        return;
    };
    match crate::sys::raise_read_ahead_kb(&dev, crate::fuse::policy::MOUNT_READ_AHEAD_KB) {
        Ok(kb) => tracing::debug!(device = %dev, kb, "readahead window"),
        Err(e) => tracing::debug!(device = %dev, error = %e, "readahead window left as it is"),
    }
}

/// Make the work dir of our own (`--work` not given), root's or the owner's only.
fn make_work_dir(w: &Path) -> Result<(), SetupError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(w)
        .map_err(|e| {
            SetupError::new(
                crate::error::kind_of(&e),
                format!(
                    "{}: cannot make the work dir beside the upper: {e}; give --work DIR on the upper's filesystem",
                    w.display()
                ),
            )
        })
}

/// Every live layerfuse mount this caller may ask about (root: all of them).
pub fn status() -> Vec<MountStatus> {
    control::list()
}

/// The live layerfuse mount at `mountpoint`, if there is one this caller may ask about.
pub fn status_of(mountpoint: &Path) -> Option<MountStatus> {
    control::status_of_mount(mountpoint)
}

/// `layerfuse umount`: unmount a layerfuse mount (only one: any other filesystem at
/// that path is refused); its daemon then exits.
pub fn unmount_path(mountpoint: &Path, lazy: bool) -> Result<(), SetupError> {
    let canon = mountpoint_path(mountpoint)?;
    // A mount of another subtype (-o subtype=) is ours if its daemon says so, or, its
    // daemon dead, if the record it left says so.
    let mut dead_records = Vec::new();
    if !is_layerfuse_mount(&canon) && status_of(&canon).is_none() {
        dead_records = control::dead_mount_records(&canon);
        if dead_records.is_empty() {
            return Err(SetupError::new(
                SetupErrorKind::NotFound,
                format!("{}: not a layerfuse mount", mountpoint.display()),
            ));
        }
    }
    Unmounter { mountpoint: canon }.unmount(lazy)?;
    control::drop_dead_records(&dead_records);
    Ok(())
}

/// The absolute path of a mount point. A mount whose daemon died (killed) answers
/// ENOTCONN to everything, stat included, so it is named through its parent: umount(2)
/// never asks the filesystem, and the dead mount goes as `umount` makes it go.
fn mountpoint_path(mountpoint: &Path) -> Result<PathBuf, SetupError> {
    let err = |e: &std::io::Error| SetupError::io(mountpoint, "", e);
    match std::fs::canonicalize(mountpoint) {
        Ok(p) => Ok(p),
        Err(e) if e.raw_os_error() == Some(crate::sys::Errno::ENOTCONN.0) => {
            let name = mountpoint.file_name().ok_or_else(|| err(&e))?;
            let parent = match mountpoint.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            Ok(std::fs::canonicalize(parent)
                .map_err(|e| err(&e))?
                .join(name))
        }
        Err(e) => Err(err(&e)),
    }
}
