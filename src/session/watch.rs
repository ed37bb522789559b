//! Live lower layers (`--watch-lowers`, Linux): one inotify watch per lower
//! directory, set up before the mount goes live, and one thread per mount that turns
//! what the host changes into dropped union caches (`Overlay::lower_changed`) and
//! FUSE invalidations for the kernel, through whichever transport serves the mount.
//!
//! At the watch limit (`/proc/sys/fs/inotify/max_user_watches`) the directories
//! not watched show host changes only once the kernel's entry and attribute times
//! run out; the mount goes on serving.
//!
//! When the inotify queue overflows (`IN_Q_OVERFLOW`: changes came faster than they
//! were read, `/proc/sys/fs/inotify/max_queued_events`), what changed is not known:
//! every lower directory is watched again (new ones added, vanished ones dropped,
//! moved ones re-pathed), the union drops everything it cached of the lower layers
//! (`Overlay::lower_lost`), and the kernel is told to drop every entry at once
//! (`FUSE_NOTIFY_INC_EPOCH`, Linux 6.16) and the attributes and cached content of
//! every directory and every node showing lower data. A kernel without the epoch
//! notification gets an entry invalidation per node and per name each cached
//! directory shows now instead (logged once).
//!
//! Watches are added with `IN_DONT_FOLLOW` and directories are walked without
//! following symlinks: nothing outside a layer is watched.

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
    /// The watch limit was reached.
    full: bool,
    /// The watch limit was reported (once per mount).
    full_reported: bool,
    /// The kernel refused `FUSE_NOTIFY_INC_EPOCH` (reported once; not tried again).
    no_epoch: bool,
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
            full_reported: false,
            no_epoch: false,
        };
        for layer in 0..roots.len() {
            w.watch_tree(layer, RelPath::new(), false);
        }
        tracing::info!(
            directories = w.dirs.len(),
            ms = started.elapsed().as_millis() as u64,
            "watching lower layers for changes"
        );
        Ok(w)
    }

    /// Watch `dir` of `layer` and every directory below it. At the watch limit the
    /// walk stops, unless `whole` (watching everything again: a directory watched
    /// already is found again at no cost, wherever it is now).
    fn watch_tree(&mut self, layer: usize, dir: RelPath, whole: bool) {
        let mut todo = vec![dir];
        while let Some(rel) = todo.pop() {
            if self.full && !whole {
                return;
            }
            let path = self.roots[layer].join(OsStr::from_bytes(&rel));
            match self.inotify.watches().add(&path, mask()) {
                Ok(wd) => {
                    self.dirs.insert(wd, (layer, rel.clone()));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    self.full = true;
                    if !self.full_reported {
                        self.full_reported = true;
                        tracing::warn!(
                            watched = self.dirs.len(),
                            "inotify watch limit reached (/proc/sys/fs/inotify/max_user_watches): {} lower directories are watched; changes in the rest show only after the attribute/entry TTL",
                            self.dirs.len()
                        );
                    }
                    if !whole {
                        return;
                    }
                    // Directories below may be watched already: walked on.
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

    /// Watch every lower directory again, after changes were lost: directories made
    /// meanwhile are added, moved ones recorded at their new path, and the watches
    /// of directories no longer in a layer removed.
    fn rewatch(&mut self) {
        let old = std::mem::take(&mut self.dirs);
        self.full = false;
        for layer in 0..self.roots.len() {
            self.watch_tree(layer, RelPath::new(), true);
        }
        for wd in old.into_keys() {
            if !self.dirs.contains_key(&wd) {
                // Gone with its directory already (EINVAL) or moved out of the layer.
                let _ = self.inotify.watches().remove(wd);
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
            let mut lost = false;
            let deadline = Instant::now() + GATHER;
            loop {
                lost |= self.read(&mut buf, &mut changes);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero()
                    || !crate::sys::wait_readable(self.inotify.as_fd(), left.as_millis() as i32)
                        .unwrap_or(false)
                {
                    break;
                }
            }
            if lost {
                // What is known of the batch is part of what is dropped now.
                self.recover(overlay, notify);
                continue;
            }
            changes.sort_unstable();
            changes.dedup();
            if changes.is_empty() {
                continue;
            }
            send(notify, overlay.lower_changed(&changes));
        }
    }

    /// Changes were lost (the queue overflowed): watch everything again, then drop
    /// every lower cache of the union and then the kernel's, so that whatever the
    /// kernel asks next is answered from the layers as they are now.
    fn recover(&mut self, overlay: &Overlay, notify: &dyn Notify) {
        let started = Instant::now();
        self.rewatch();
        let inodes = overlay.lower_lost();
        let by_epoch = !self.no_epoch
            && match notify.inc_epoch() {
                Ok(()) => true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                    self.no_epoch = true;
                    tracing::warn!(
                        error = %e,
                        "the kernel cannot drop all its entries at once (FUSE_NOTIFY_INC_EPOCH, Linux 6.16): after lost lower changes each entry is dropped by name"
                    );
                    false
                }
                Err(e) => {
                    tracing::debug!(error = %e, "epoch increment not delivered");
                    false
                }
            };
        let entries = if by_epoch {
            0
        } else {
            let known = overlay.known_entries();
            let n = known.len();
            send(notify, known);
            n
        };
        let n = inodes.len();
        send(notify, inodes);
        tracing::warn!(
            watched = self.dirs.len(),
            inodes = n,
            entries,
            epoch = by_epoch,
            ms = started.elapsed().as_millis() as u64,
            "inotify queue overflow: lower layer changes came faster than they were read; every lower directory watched again, every cached lower entry, listing and attribute dropped"
        );
    }

    /// Read what is queued into `changes`, watching new directories as they come;
    /// true when the queue overflowed (changes were lost).
    fn read(&mut self, buf: &mut [u8], changes: &mut Vec<LowerChange>) -> bool {
        let mut lost = false;
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
                    lost = true;
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
            self.watch_tree(layer, dir, false);
        }
        lost
    }
}

/// Send invalidations to the kernel.
fn send(notify: &dyn Notify, invalidations: Vec<Invalidation>) {
    for i in invalidations {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::{NodeId, OverlayConfig};
    use parking_lot::Mutex;

    /// Records what the watcher tells the kernel; the epoch answered as configured.
    struct Recorder {
        epoch: Option<i32>,
        sent: Mutex<Vec<String>>,
    }

    impl Notify for Recorder {
        fn inval_inode(&self, ino: u64, offset: i64, len: i64) -> io::Result<()> {
            self.sent.lock().push(format!("inode {ino} {offset} {len}"));
            Ok(())
        }
        fn inval_entry(&self, parent: u64, name: &OsStr) -> io::Result<()> {
            self.sent
                .lock()
                .push(format!("entry {parent} {}", name.to_string_lossy()));
            Ok(())
        }
        fn inc_epoch(&self) -> io::Result<()> {
            self.sent.lock().push("epoch".into());
            match self.epoch {
                None => Ok(()),
                Some(e) => Err(io::Error::from_raw_os_error(e)),
            }
        }
    }

    fn union(tag: &str) -> (PathBuf, Arc<Overlay>) {
        let root = std::env::temp_dir().join(format!("lf-watch-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("l0/dir")).unwrap();
        std::fs::write(root.join("l0/dir/file"), "x").unwrap();
        let cfg = OverlayConfig {
            lowers: vec![root.join("l0")],
            upper: None,
            redirect_dir: true,
            metacopy: false,
            userxattr: false,
            volatile: false,
            ownership: Default::default(),
            grafts: Vec::new(),
            override_stat: None,
        };
        let o = Overlay::new(&cfg).unwrap();
        let (dir, _) = o.lookup(NodeId::ROOT, OsStr::new("dir")).unwrap();
        o.lookup(dir.ino, OsStr::new("file")).unwrap();
        (root, Arc::new(o))
    }

    fn sent(r: &Recorder) -> Vec<String> {
        std::mem::take(&mut *r.sent.lock())
    }

    /// After lost changes every node is invalidated; entries go by epoch when the kernel
    /// takes it, else one by one (and the epoch is not tried again).
    #[test]
    fn lost_changes_invalidate_everything() {
        for (tag, epoch) in [("epoch", None), ("einval", Some(libc::EINVAL))] {
            let (root, o) = union(tag);
            let mut w = Watcher::new(&[root.join("l0")]).unwrap();
            assert_eq!(w.watched(), 2);
            // A directory made while changes were lost is watched by the recovery.
            std::fs::create_dir(root.join("l0/new")).unwrap();
            let r = Recorder {
                epoch,
                sent: Mutex::new(Vec::new()),
            };
            w.recover(&o, &r);
            assert_eq!(w.watched(), 3, "{tag}");
            let got = sent(&r);
            let inodes = got.iter().filter(|s| s.starts_with("inode ")).count();
            let entries = got.iter().filter(|s| s.starts_with("entry ")).count();
            assert_eq!(got[0], "epoch", "{tag}: {got:?}");
            // The root, `dir` and `file`: attributes and cached content.
            assert_eq!(inodes, 3, "{tag}: {got:?}");
            assert!(
                got.iter()
                    .all(|s| !s.starts_with("inode ") || s.ends_with(" 0 0"))
            );
            match epoch {
                None => assert_eq!(entries, 0, "{tag}: {got:?}"),
                Some(_) => {
                    // `dir` in the root, `file` in `dir` (known nodes, and listed),
                    // and `new` in the root (listed: made while changes were lost).
                    assert_eq!(entries, 3, "{tag}: {got:?}");
                    assert!(got.contains(&"entry 1 dir".to_string()), "{got:?}");
                    assert!(got.contains(&"entry 1 new".to_string()), "{got:?}");
                    w.recover(&o, &r);
                    let again = sent(&r);
                    assert!(!again.contains(&"epoch".to_string()), "{again:?}");
                    assert_eq!(again.iter().filter(|s| s.starts_with("entry ")).count(), 3);
                }
            }
            drop(w);
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}
