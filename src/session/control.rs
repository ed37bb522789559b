//! The control socket of a mount: while a session serves, it answers `status` on a
//! Unix socket of its own with one JSON line ([`MountStatus`]), and `layerfuse
//! status` finds every live mount by asking each socket.
//!
//! Where: `/run/layerfuse/mounts/PID.N.sock` for root, `$XDG_RUNTIME_DIR/layerfuse/mounts/`
//! for others (a directory of their own: the storage driver keeps its sockets in
//! `/run/layerfuse/` too). Who: the directory is the daemon user's and 0700, the socket 0600, so only
//! that user (the mount's owner) and root can connect. A socket nobody answers on is
//! a daemon that died: the next lister that may removes it.
//!
//! Beside each socket, `PID.N.mount` records the mount it serves (mountpoint, type,
//! device). It outlives a daemon killed with its mount still there, so `layerfuse
//! umount` knows that dead mount as layerfuse's whatever its subtype (`-o subtype=`);
//! it goes with the mount.

use crate::counters::Snapshot;
use crate::overlay::Overlay;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a lister waits for one daemon's answer.
const ANSWER_PATIENCE: Duration = Duration::from_secs(2);

/// A volume or bind joined into the union.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GraftStatus {
    /// `volume` or `bind`.
    pub kind: String,
    /// The volume's name; empty for a bind.
    pub name: String,
    /// Where its content is on the host.
    pub source: PathBuf,
    /// Where it shows in the union.
    pub target: PathBuf,
    pub read_only: bool,
}

/// One live mount, as its daemon tells it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountStatus {
    pub mountpoint: PathBuf,
    /// Source and type as /proc/mounts shows them.
    pub fsname: String,
    pub fstype: String,
    /// Topmost first.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub read_only: bool,
    /// `uring` or `dev`.
    pub transport: String,
    pub pid: u32,
    /// Seconds since the epoch when the mount went live.
    pub started: u64,
    pub uptime_secs: u64,
    pub grafts: Vec<GraftStatus>,
    pub counters: Snapshot,
    /// Open files and directories.
    pub open_files: u64,
    /// Nodes the kernel holds (looked up, not yet forgotten).
    pub nodes_held: u64,
    /// Resident memory of the daemon process (all of its mounts).
    pub rss_bytes: u64,
}

/// What a session knows of itself that does not change while it serves.
#[derive(Clone, Debug)]
pub(crate) struct Fixed {
    pub mountpoint: PathBuf,
    pub fsname: String,
    pub fstype: String,
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub read_only: bool,
    pub transport: String,
    pub grafts: Vec<GraftStatus>,
}

/// The directories control sockets live in: the caller's own first; root also
/// looks in every user's runtime directory.
fn socket_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![own_socket_dir()];
    if crate::sys::geteuid() == 0
        && let Ok(users) = std::fs::read_dir("/run/user")
    {
        dirs.extend(users.flatten().map(|u| u.path().join("layerfuse/mounts")));
    }
    dirs
}

/// Where this process's sockets go.
fn own_socket_dir() -> PathBuf {
    if crate::sys::geteuid() == 0 {
        return PathBuf::from("/run/layerfuse/mounts");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        Some(x) => PathBuf::from(x).join("layerfuse/mounts"),
        None => std::env::temp_dir().join(format!("layerfuse-{}-mounts", crate::sys::geteuid())),
    }
}

/// Make (or check) the socket directory: ours, 0700 (its parent made if missing).
fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let md = std::fs::symlink_metadata(dir)?;
            if !md.is_dir() || md.uid() != crate::sys::geteuid() {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory of this user",
                    dir.display()
                )));
            }
            if md.mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// What `PID.N.mount` holds: the mount a session serves, as mountinfo shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct MountRecord {
    mountpoint: PathBuf,
    fstype: String,
    /// `MAJ:MIN` of the FUSE connection.
    device: String,
}

impl MountRecord {
    /// Whether the topmost mount at the recorded mountpoint is still this one.
    fn still_mounted(&self) -> bool {
        crate::config::mount_device_and_type(&self.mountpoint)
            .is_some_and(|(device, fstype)| device == self.device && fstype == self.fstype)
    }
}

/// The record beside the socket `sock`.
fn record_path(sock: &Path) -> PathBuf {
    sock.with_extension("mount")
}

/// Write the record of a live mount beside its socket (0600, by rename: never torn).
fn write_record(sock: &Path, fixed: &Fixed) {
    let Some((device, fstype)) = crate::config::mount_device_and_type(&fixed.mountpoint) else {
        return;
    };
    let record = MountRecord {
        mountpoint: fixed.mountpoint.clone(),
        fstype,
        device,
    };
    let path = record_path(sock);
    let tmp = sock.with_extension("mount.tmp");
    let written = serde_json::to_vec(&record)
        .map_err(std::io::Error::other)
        .and_then(|json| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            std::fs::rename(&tmp, &path)
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(record = %path.display(), error = %e, "mount record not written");
    }
}

/// The records whose daemon is gone (nobody answers on the socket beside them) of
/// mounts still there; records of mounts gone are removed on the way.
fn dead_records() -> Vec<(PathBuf, MountRecord)> {
    let mut found = Vec::new();
    for path in files_named("mount") {
        let record = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<MountRecord>(&b).ok());
        let Some(record) = record else {
            continue;
        };
        // A daemon that answers: its mount is not dead.
        if UnixStream::connect(path.with_extension("sock")).is_ok() {
            continue;
        }
        if record.still_mounted() {
            found.push((path, record));
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    found
}

/// Every `*.EXT` file of the socket directories this caller looks in.
fn files_named(ext: &'static str) -> impl Iterator<Item = PathBuf> {
    socket_dirs()
        .into_iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(move |p| p.extension().is_some_and(|x| x == ext))
}

/// The records a dead daemon left of the mount at `mountpoint` (still there).
pub fn dead_mount_records(mountpoint: &Path) -> Vec<PathBuf> {
    dead_records()
        .into_iter()
        .filter(|(_, r)| r.mountpoint == mountpoint)
        .map(|(p, _)| p)
        .collect()
}

/// Forget a dead daemon's mount once it is unmounted: its record and socket.
pub fn drop_dead_records(records: &[PathBuf]) {
    for r in records {
        let _ = std::fs::remove_file(r.with_extension("sock"));
        let _ = std::fs::remove_file(r);
    }
}

/// The control socket of one serving session; dropping it stops answering and
/// removes the socket (and the mount's record).
pub(crate) struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A control socket made but not answering yet: made before the mount, so that
/// once the mount is visible its status can be asked (an early question waits in the
/// socket's backlog until [`Bound::serve`]).
pub(crate) struct Bound {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Bound {
    /// Make this session's socket. A mount is not refused for want of its status:
    /// failures are logged and `None` returned.
    pub fn new() -> Option<Bound> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = own_socket_dir();
        let path = dir.join(format!(
            "{}.{}.sock",
            crate::sys::getpid(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let listener = prepare_dir(&dir).and_then(|()| {
            // A leftover of a process that had our pid: nobody answers on it.
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            Ok(l)
        });
        match listener {
            Ok(l) => Some(Bound {
                path,
                listener: Some(l),
            }),
            Err(e) => {
                tracing::warn!(socket = %path.display(), error = %e, "no control socket: layerfuse status will not list this mount");
                None
            }
        }
    }

    /// Answer on it until the returned server is dropped.
    pub fn serve(mut self, fixed: Fixed, overlay: Arc<Overlay>) -> Option<ControlServer> {
        let listener = self.listener.take()?;
        let path = self.path.clone();
        write_record(&path, &fixed);
        let stop = Arc::new(AtomicBool::new(false));
        let started = SystemTime::now();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("layerfuse-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(c) = conn {
                        answer(c, &fixed, &overlay, started);
                    }
                }
            });
        match thread {
            Ok(t) => Some(ControlServer {
                path,
                stop,
                thread: Some(t),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no control thread");
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(record_path(&path));
                None
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accepting thread; it sees the flag and ends.
        let woke = UnixStream::connect(&self.path).is_ok();
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(record_path(&self.path));
        if let Some(t) = self.thread.take()
            && woke
        {
            let _ = t.join();
        }
    }
}

/// Answer one connection: a `status` line gets one JSON line back.
fn answer(c: UnixStream, fixed: &Fixed, overlay: &Overlay, started: SystemTime) {
    let _ = c.set_read_timeout(Some(ANSWER_PATIENCE));
    let _ = c.set_write_timeout(Some(ANSWER_PATIENCE));
    let mut line = String::new();
    if BufReader::new(&c).read_line(&mut line).is_err() || line.trim() != "status" {
        return;
    }
    let status = status_of(fixed, overlay, started);
    if let Ok(mut json) = serde_json::to_string(&status) {
        json.push('\n');
        let _ = (&c).write_all(json.as_bytes());
    }
}

fn status_of(fixed: &Fixed, overlay: &Overlay, started: SystemTime) -> MountStatus {
    let started_secs = started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    MountStatus {
        mountpoint: fixed.mountpoint.clone(),
        fsname: fixed.fsname.clone(),
        fstype: fixed.fstype.clone(),
        lowers: fixed.lowers.clone(),
        upper: fixed.upper.clone(),
        work: fixed.work.clone(),
        read_only: fixed.read_only,
        transport: fixed.transport.clone(),
        pid: crate::sys::getpid(),
        started: started_secs,
        uptime_secs: started.elapsed().map_or(0, |d| d.as_secs()),
        grafts: fixed.grafts.clone(),
        counters: overlay.counters().snapshot(),
        open_files: overlay.open_handles() as u64,
        nodes_held: overlay.nodes_held() as u64,
        rss_bytes: rss_bytes(),
    }
}

/// This process's resident memory, from /proc/self/status (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Ask one socket; `None` when no daemon answers there.
fn ask(socket: &Path) -> Option<MountStatus> {
    let mut c = UnixStream::connect(socket).ok()?;
    c.set_read_timeout(Some(ANSWER_PATIENCE)).ok()?;
    c.set_write_timeout(Some(ANSWER_PATIENCE)).ok()?;
    c.write_all(b"status\n").ok()?;
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// Every live layerfuse mount whose daemon this caller may ask, by mountpoint.
/// Sockets of daemons that died are removed on the way (where the caller may).
pub fn list() -> Vec<MountStatus> {
    let mut out = Vec::new();
    for path in files_named("sock") {
        match ask(&path) {
            Some(s) => out.push(s),
            None => {
                if matches!(
                    UnixStream::connect(&path),
                    Err(ref err) if err.kind() == std::io::ErrorKind::ConnectionRefused
                ) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    // Records of dead daemons' mounts that are gone too (a plain `umount`) go now.
    let _ = dead_records();
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    out
}

/// The status of the mount at `mountpoint`, if a layerfuse daemon serves it.
pub fn status_of_mount(mountpoint: &Path) -> Option<MountStatus> {
    let canon = std::fs::canonicalize(mountpoint).ok()?;
    list().into_iter().find(|s| s.mountpoint == canon)
}
