//! Live lower layers (`--watch-lowers`, Linux): one inotify watch per lower
//! directory, set up before the mount goes live, and one thread per mount that turns
//! what the host changes into dropped union caches (`Overlay::lower_changed`) and
//! FUSE invalidations for the kernel, through whichever transport serves the mount.
//!
//! At the watch limit (`/proc/sys/fs/inotify/max_user_watches`) the directories
//! not watched show host changes only once the kernel's entry and attribute times
//! run out; the mount goes on serving. Watches are added with `IN_DONT_FOLLOW` and
//! directories are walked without following symlinks: nothing outside a layer is
//! watched.

use crate::fuse::policy::Notify;
use crate::layer::{self, RelPath};
use crate::overlay::{Invalidation, LowerChange, LowerChangeKind, Overlay};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The watches of a mount's lower layers, before the mount is live.
pub(super) struct Watcher {
    inotify: Inotify,
    roots: Vec<PathBuf>,
    /// Each watch's layer and directory.
    dirs: HashMap<WatchDescriptor, (usize, RelPath)>,
    /// The watch limit was reached (reported once).
    full: bool,
}

/// A running watcher: stopped (and joined) by [`Running::stop`].
pub(super) struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Running {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

/// How long one batch of host changes is gathered before it is applied: an editor's
/// save or a `git checkout` comes as a burst of events.
const GATHER: Duration = Duration::from_millis(20);
/// How often the thread looks whether the mount has ended.
const TICK_MS: i32 = 200;

impl Watcher {
    /// Watch every directory of the lower layers at `roots` (topmost first).
    pub fn new(roots: &[PathBuf]) -> io::Result<Watcher> {
        let started = Instant::now();
        let mut w = Watcher {
            inotify: Inotify::init()?,
            roots: roots.to_vec(),
            dirs: HashMap::new(),
            full: false,
        };
        for layer in 0..roots.len() {
            w.watch_tree(layer, RelPath::new());
        }
        tracing::info!(
            directories = w.dirs.len(),
            ms = started.elapsed().as_millis() as u64,
            "watching lower layers for changes"
        );
        Ok(w)
    }

    /// Watch `dir` of `layer` and every directory below it.
    fn watch_tree(&mut self, layer: usize, dir: RelPath) {
        let mut todo = vec![dir];
        while let Some(rel) = todo.pop() {
            if self.full {
                return;
            }
            let path = self.roots[layer].join(OsStr::from_bytes(&rel));
            match self.inotify.watches().add(&path, mask()) {
                Ok(wd) => {
                    self.dirs.insert(wd, (layer, rel.clone()));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    self.full = true;
                    tracing::warn!(
                        watched = self.dirs.len(),
                        "inotify watch limit reached (/proc/sys/fs/inotify/max_user_watches): {} lower directories are watched; changes in the rest show only after the attribute/entry TTL",
                        self.dirs.len()
                    );
                    return;
                }
                // Gone already, or not a directory any more: nothing to watch.
                Err(_) => continue,
            }
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for e in entries.flatten() {
                // Not following symlinks: a link to a directory is a file here.
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(layer::join(&rel, &e.file_name()));
                }
            }
        }
    }

    /// Stop watching `dir` of `layer` and everything below it (moved away).
    fn unwatch_tree(&mut self, layer: usize, dir: &[u8]) {
        let gone: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(_, (l, p))| *l == layer && layer::is_at_or_below(p, dir))
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = self.inotify.watches().remove(wd);
        }
    }

    /// How many directories are watched.
    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    /// Serve host changes to `overlay` and the kernel until stopped.
    pub fn start(self, overlay: Arc<Overlay>, notify: Arc<dyn Notify>) -> io::Result<Running> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("layerfuse-watch".into())
            .spawn(move || self.run(&overlay, &*notify, &stopped))?;
        Ok(Running { stop, thread })
    }

    fn run(mut self, overlay: &Overlay, notify: &dyn Notify, stop: &AtomicBool) {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match crate::sys::wait_readable(self.inotify.as_fd(), TICK_MS) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "lower layers no longer watched");
                    return;
                }
            }
            let mut changes = Vec::new();
            let deadline = Instant::now() + GATHER;
            loop {
                self.read(&mut buf, &mut changes);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero()
                    || !crate::sys::wait_readable(self.inotify.as_fd(), left.as_millis() as i32)
                        .unwrap_or(false)
                {
                    break;
                }
            }
            changes.sort_unstable();
            changes.dedup();
            if changes.is_empty() {
                continue;
            }
            for i in overlay.lower_changed(&changes) {
                let sent = match &i {
                    Invalidation::Entry(dir, name) => notify.inval_entry(dir.get(), name),
                    Invalidation::Inode(n) => notify.inval_inode(n.get(), 0, 0),
                };
                if let Err(e) = sent {
                    // ENOENT: the kernel holds no such inode or entry any more.
                    tracing::debug!(?i, error = %e, "invalidation not delivered");
                }
            }
        }
    }

    /// Read what is queued into `changes`, watching new directories as they come.
    fn read(&mut self, buf: &mut [u8], changes: &mut Vec<LowerChange>) {
        let mut new_dirs = Vec::new();
        let mut moved_dirs = Vec::new();
        loop {
            let events = match self.inotify.read_events(buf) {
                Ok(ev) => ev,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading lower layer changes");
                    break;
                }
            };
            let mut any = false;
            for e in events {
                any = true;
                if e.mask.contains(EventMask::Q_OVERFLOW) {
                    tracing::warn!(
                        "lower layer changes came faster than they were read; some show only after the attribute/entry TTL"
                    );
                    continue;
                }
                if e.mask.contains(EventMask::IGNORED) {
                    self.dirs.remove(&e.wd);
                    continue;
                }
                let (Some((layer, dir)), Some(name)) = (self.dirs.get(&e.wd), e.name) else {
                    continue;
                };
                let entry = EventMask::CREATE
                    | EventMask::DELETE
                    | EventMask::MOVED_FROM
                    | EventMask::MOVED_TO;
                let kind = if e.mask.intersects(entry) {
                    LowerChangeKind::Entry
                } else {
                    LowerChangeKind::Content
                };
                if e.mask.contains(EventMask::ISDIR) {
                    let at = (*layer, layer::join(dir, name));
                    if e.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                        new_dirs.push(at);
                    } else if e.mask.contains(EventMask::MOVED_FROM) {
                        moved_dirs.push(at);
                    }
                }
                changes.push(LowerChange {
                    layer: *layer,
                    dir: dir.clone(),
                    name: name.to_owned(),
                    kind,
                });
            }
            if !any {
                break;
            }
        }
        for (layer, dir) in moved_dirs {
            self.unwatch_tree(layer, &dir);
        }
        for (layer, dir) in new_dirs {
            self.watch_tree(layer, dir);
        }
    }
}
