//! The io_uring transport (FUSE-over-io_uring, protocol 7.42): layerfuse opens
//! `/dev/fuse` and mounts it itself, answers INIT on the device (asking for
//! `FUSE_OVER_IO_URING`), then registers one queue per possible CPU, as the kernel
//! requires before it sends any request through a ring. Queue `q` is served by
//! [`THREADS_PER_QUEUE`] threads pinned to CPU `q`, each with a ring of its own and
//! exactly one entry registered on the queue: the kernel puts a request on the queue
//! of the CPU its caller runs on, hands it to an idle entry, completes that entry's
//! waiting `COMMIT_AND_FETCH` in its thread's task context, and the thread answers in
//! place and fetches the next request in the same `io_uring_enter` — no reader
//! thread woken on another CPU, no hand-off.
//!
//! One entry per thread is what keeps a long request (a copy-up of a big file) from
//! holding up the others on its CPU: the kernel only gives a request to an entry that
//! is waiting in the kernel, and an entry is only waiting when its thread is free. A
//! thread with several entries would be given requests it cannot start until its
//! current one is done — a lookup queued behind a 256 MiB copy.
//!
//! FORGET and INTERRUPT still come over `/dev/fuse` (the kernel sends only those
//! there once the ring is up), read by one more thread; notifications are written
//! to the device. Every request goes to the same [`Policy`] as the fuser transport.
//!
//! The same protocol code also serves a mount over `/dev/fuse` alone, without rings
//! ([`start_device`], `--transport splice`): several threads, each reading requests
//! from a clone of the device fd, and a READ answered by splicing the file's pages
//! into the reply ([`splice`]) instead of copying them through the daemon.

mod dispatch;
mod splice;
pub(crate) mod wire;

use crate::fuse::policy::{self, Negotiated, Notify, Policy};
use crate::overlay::{Errno, HandleId};
use crate::sys::uring::{self as sysuring, BackingFile, QueueRing};
use dispatch::{Answer, encode, handle};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use wire::{InHeader, Out, Request, init, ring};

/// Threads (each with one ring entry) per queue: as many requests of one CPU can be
/// under way at once; a long one occupies one thread while the others keep answering.
const THREADS_PER_QUEUE: usize = 4;

pub(crate) type UPolicy = Policy<BackingFile>;

/// Why the io_uring transport cannot serve this mount.
#[derive(Debug)]
pub enum Unavailable {
    /// The kernel has no FUSE-over-io_uring, or the administrator has not enabled it.
    NotOffered(String),
    Io(io::Error),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotOffered(s) => f.write_str(s),
            Unavailable::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for Unavailable {
    fn from(e: io::Error) -> Self {
        Unavailable::Io(e)
    }
}

impl From<Errno> for Unavailable {
    fn from(e: Errno) -> Self {
        Unavailable::Io(io::Error::from_raw_os_error(e.0))
    }
}

/// Whether this kernel offers FUSE-over-io_uring now (`enable_uring`): None when
/// it cannot be told (no such switch, or no /sys in a chroot): then only INIT can.
pub fn kernel_offers_uring() -> Option<Result<(), String>> {
    match sysuring::fuse_uring_enabled() {
        Some(true) => Some(Ok(())),
        Some(false) => Some(Err(
            "FUSE-over-io_uring is disabled (/sys/module/fuse/parameters/enable_uring is N)".into(),
        )),
        None => None,
    }
}

/// Writes notifications to the device.
struct DevNotify(Arc<OwnedFd>);

impl Notify for DevNotify {
    fn inval_inode(&self, ino: u64, offset: i64, len: i64) -> io::Result<()> {
        let m = wire::notify_inval_inode(ino, offset, len);
        sysuring::dev_write(self.0.as_fd(), &[&m])
            .map_err(|e| io::Error::from_raw_os_error(e.0))?;
        Ok(())
    }
    fn inval_entry(&self, parent: u64, name: &std::ffi::OsStr) -> io::Result<()> {
        let m = wire::notify_inval_entry(parent, name.as_encoded_bytes());
        sysuring::dev_write(self.0.as_fd(), &[&m])
            .map_err(|e| io::Error::from_raw_os_error(e.0))?;
        Ok(())
    }
    fn inc_epoch(&self) -> io::Result<()> {
        sysuring::dev_write(self.0.as_fd(), &[&wire::notify_inc_epoch()])
            .map_err(|e| io::Error::from_raw_os_error(e.0))?;
        Ok(())
    }
}

/// A mount served through io_uring queues.
pub struct UringSession {
    threads: Vec<JoinHandle<()>>,
    /// Notifications go to the device fd even though requests come over the rings.
    notify: Arc<dyn Notify>,
}

impl UringSession {
    /// Where invalidations for this mount go (the watcher of live lower layers).
    pub fn notifier(&self) -> Arc<dyn Notify> {
        self.notify.clone()
    }

    /// Serve until the filesystem is unmounted.
    pub fn run(self) -> io::Result<()> {
        for t in self.threads {
            let _ = t.join();
        }
        Ok(())
    }
}

/// The INIT exchange on the device, before any queue exists. `ring`: ask for
/// FUSE-over-io_uring (and fail without it).
fn handshake(dev: &OwnedFd, policy: &UPolicy, ring: bool) -> Result<Negotiated, Unavailable> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sysuring::dev_read(dev.as_fd(), &mut buf)?;
        let Some(msg) = buf.get(..n) else {
            return Err(Unavailable::Io(io::Error::from_raw_os_error(
                Errno::EINVAL.0,
            )));
        };
        let (h, req) = wire::parse_message(msg)
            .map_err(|_| Unavailable::NotOffered("malformed INIT".into()))?;
        let Request::Init {
            major,
            minor,
            flags,
            ..
        } = req
        else {
            // Nothing else comes before INIT; answer ENOSYS to be safe.
            reply_dev(dev, h.unique, -Errno::ENOSYS.0, &[]);
            continue;
        };
        if major != wire::KERNEL_VERSION
            || minor < wire::KERNEL_MINOR_VERSION
            || (ring && flags & init::OVER_IO_URING == 0)
        {
            // Answer so the mount does not hang, then give up on the ring.
            reply_dev(dev, h.unique, -Errno::EIO.0, &[]);
            return Err(Unavailable::NotOffered(if ring {
                format!("the kernel offers FUSE {major}.{minor} without FUSE-over-io_uring")
            } else {
                format!("the kernel offers FUSE {major}.{minor}; this transport needs 7.42")
            }));
        }
        // Layerfuse parses SETATTR/OPEN/WRITE itself here, so the kill flags reach the
        // daemon: the kernel drops its GETXATTR per write and GETATTR per chown.
        let over_ring = if ring { init::OVER_IO_URING } else { 0 };
        let n = policy.negotiate(flags, over_ring | init::INIT_EXT | init::HANDLE_KILLPRIV_V2);
        let out = wire::InitOut {
            minor: wire::KERNEL_MINOR_VERSION,
            max_readahead: n.max_readahead,
            flags: n.flags | init::INIT_EXT,
            max_background: n.max_background,
            congestion_threshold: n.max_background * 3 / 4,
            max_write: n.max_write,
            // Without rings READs are spliced through a pipe: no larger than it carries.
            max_pages: if ring {
                (n.max_write / 4096) as u16
            } else {
                ((n.max_write / 4096) as u16).min(splice::max_read_pages())
            },
            max_stack_depth: n.max_stack_depth,
        };
        let mut b = [0u8; 64];
        let mut o = Out::new(&mut b);
        wire::put_init(&mut o, &out);
        reply_dev(dev, h.unique, 0, &b);
        return Ok(n);
    }
}

fn reply_dev(dev: &OwnedFd, unique: u64, error: i32, body: &[u8]) {
    let h = wire::out_header((wire::OUT_HEADER_LEN + body.len()) as u32, error, unique);
    if let Err(e) = sysuring::dev_write(dev.as_fd(), &[&h, body]) {
        tracing::debug!(unique, error = %e, "reply not delivered");
    }
}

/// Answer INIT over the mounted device `dev`, register the queues and start
/// serving. Returns once every queue is registered (the mount is live).
pub fn start(dev: OwnedFd, policy: UPolicy) -> Result<UringSession, Unavailable> {
    let dev = Arc::new(dev);
    let n = handshake(&dev, &policy, true)?;
    let policy = Arc::new(policy);
    let notify: Arc<dyn Notify> = Arc::new(DevNotify(dev.clone()));
    policy.set_notifier(Box::new(DevNotify(dev.clone())));
    policy.forward_attr_changes(notify.clone());
    // The kernel's payload size for every entry: max(8 KiB, max_write, max_pages pages).
    let payload = (n.max_write as usize)
        .max(8192)
        .max((n.max_write as usize / 4096) * 4096);
    let cpus = sysuring::possible_cpus();
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), Errno>>();
    let servers = cpus * THREADS_PER_QUEUE;
    let mut threads = Vec::with_capacity(servers + 1);
    for qid in 0..cpus {
        for n in 0..THREADS_PER_QUEUE {
            let (dev, policy, tx) = (dev.clone(), policy.clone(), tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("lf-uring-q{qid}.{n}"))
                .spawn(move || serve_queue(qid, &dev, &policy, payload, tx))?;
            threads.push(t);
        }
    }
    drop(tx);
    let mut failed = None;
    for _ in 0..servers {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(Errno::EIO),
        }
    }
    {
        let (dev, policy) = (dev.clone(), policy.clone());
        threads.push(
            std::thread::Builder::new()
                .name("lf-uring-dev".into())
                .spawn(move || serve_device(&dev, &policy, None))?,
        );
    }
    if let Some(e) = failed {
        // Requests then come over the device, which the device thread serves; a
        // mount that asked for io_uring should know.
        tracing::warn!(error = %e, "FUSE-over-io_uring queue registration failed; serving over /dev/fuse");
    }
    tracing::info!(
        queues = cpus,
        threads_per_queue = THREADS_PER_QUEUE,
        payload,
        "serving over FUSE-over-io_uring"
    );
    Ok(UringSession { threads, notify })
}

/// Answer INIT over the mounted device `dev` without rings and serve every request
/// over the device, on `threads` threads (each with a clone of `dev`, so the kernel
/// hands requests to whichever is free), READ replies spliced. Returns once the mount
/// is live.
pub fn start_device(
    dev: OwnedFd,
    policy: UPolicy,
    threads: usize,
) -> Result<UringSession, Unavailable> {
    let dev = Arc::new(dev);
    handshake(&dev, &policy, false)?;
    let policy = Arc::new(policy);
    let notify: Arc<dyn Notify> = Arc::new(DevNotify(dev.clone()));
    policy.set_notifier(Box::new(DevNotify(dev.clone())));
    policy.forward_attr_changes(notify.clone());
    let mut fds = vec![dev.clone()];
    for _ in 1..threads.max(1) {
        // A reply must go to the fd its request was read from: each thread keeps one.
        fds.push(Arc::new(sysuring::dev_clone(dev.as_fd())?));
    }
    let mut spawned = Vec::with_capacity(fds.len());
    for (i, fd) in fds.into_iter().enumerate() {
        let policy = policy.clone();
        spawned.push(
            std::thread::Builder::new()
                .name(format!("lf-dev{i}"))
                .spawn(move || serve_device(&fd, &policy, splice::Pipe::new()))?,
        );
    }
    tracing::info!(
        threads = spawned.len(),
        "serving over /dev/fuse, READ replies spliced"
    );
    Ok(UringSession {
        threads: spawned,
        notify,
    })
}

/// One server of queue `qid`: pinned to its CPU, one entry registered, then answer
/// and fetch until unmount.
fn serve_queue(
    qid: usize,
    dev: &Arc<OwnedFd>,
    policy: &UPolicy,
    payload: usize,
    ready: std::sync::mpsc::Sender<Result<(), Errno>>,
) {
    if let Err(e) = sysuring::pin_to_cpu(qid) {
        tracing::debug!(qid, error = %e, "queue thread not pinned");
    }
    let mut q = match QueueRing::new(dev.as_fd(), 1, ring::REQ_HEADER_SZ, payload) {
        Ok(q) => q,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let cmd = ring::cmd_req(0, qid as u16);
    if let Err(e) = q.register_all(ring::CMD_REGISTER, &cmd) {
        let _ = ready.send(Err(e));
        return;
    }
    let _ = ready.send(Ok(()));
    let mut done = Vec::with_capacity(q.depth());
    loop {
        if let Err(e) = q.wait(&mut done) {
            tracing::warn!(qid, error = %e, "io_uring wait failed; queue stops");
            return;
        }
        let mut live = false;
        for &(idx, res) in &done {
            if res < 0 {
                // ENOTCONN / ECANCELED: unmounted or aborted; the entry stays with us.
                tracing::debug!(qid, idx, res, "ring entry ended");
                continue;
            }
            live = true;
            let Some((header, payload)) = q.buffers(idx) else {
                continue;
            };
            let commit_id = answer_entry(policy, dev, header, payload);
            let cmd = ring::cmd_req(commit_id, qid as u16);
            if let Err(e) = q.commit(idx, ring::CMD_COMMIT_AND_FETCH, &cmd) {
                tracing::warn!(qid, error = %e, "commit failed; queue stops");
                return;
            }
        }
        if !live && !done.is_empty() {
            // Every completion was an end: the connection is gone.
            return;
        }
    }
}

/// Read the request in a ring entry, answer it in place. Returns the commit id.
fn answer_entry(
    policy: &UPolicy,
    dev: &Arc<OwnedFd>,
    header: &mut [u8],
    payload: &mut [u8],
) -> u64 {
    let Some((commit_id, payload_sz)) = ring::ent_in(header) else {
        return 0;
    };
    let (error, len) = match InHeader::parse(&header[..ring::IN_OUT_HEADER_SZ]) {
        Ok(h) => {
            let op_in = &header[ring::IN_OUT_HEADER_SZ..ring::ENT_IN_OUT_OFFSET];
            let arg = &op_in[..wire::op_in_size(h.opcode).min(op_in.len())];
            let body = &payload[..(payload_sz as usize).min(payload.len())];
            let answer = match wire::parse(h.opcode, arg, body) {
                Ok(req) => handle(policy, dev, &h, req),
                Err(_) => Answer::Err(Errno::EINVAL),
            };
            let mut out = Out::new(payload);
            let error = encode(policy, &h, answer, &mut out);
            (error, out.len())
        }
        Err(_) => (-Errno::EINVAL.0, 0),
    };
    if error != 0 {
        policy.counters().error(-error);
    }
    let len = if error != 0 { 0 } else { len };
    let h = wire::out_header((wire::OUT_HEADER_LEN + len) as u32, error, commit_id);
    header[..wire::OUT_HEADER_LEN].copy_from_slice(&h);
    ring::set_payload_sz(header, commit_id, len as u32);
    commit_id
}

/// The device thread: FORGET, BATCH_FORGET and INTERRUPT (which never use the ring),
/// and any request the kernel sends before or instead of the ring.
/// `pipe`: answer READs by splicing (see [`splice`]); without it they are copied.
fn serve_device(dev: &Arc<OwnedFd>, policy: &UPolicy, mut pipe: Option<splice::Pipe>) {
    let mut buf = vec![0u8; policy::MAX_WRITE as usize + 64 * 1024];
    let mut reply = vec![0u8; policy::MAX_WRITE as usize + 4096];
    loop {
        let n = match sysuring::dev_read(dev.as_fd(), &mut buf) {
            Ok(n) => n,
            Err(e) => {
                // ENODEV: unmounted.
                tracing::debug!(error = %e, "device closed");
                return;
            }
        };
        let Some(msg) = buf.get(..n) else { continue };
        let Ok((h, req)) = wire::parse_message(msg) else {
            if let Ok(h) = InHeader::parse(msg) {
                reply_dev(dev, h.unique, -Errno::EINVAL.0, &[]);
            }
            continue;
        };
        if matches!(req, Request::Destroy) {
            reply_dev(dev, h.unique, 0, &[]);
            return;
        }
        if let (Some(p), Request::Read { fh, offset, size }) = (&mut pipe, &req) {
            let fh = HandleId::new(*fh);
            if let Err(e) = p.answer_read(policy, dev, h.unique, fh, *offset, *size) {
                policy.counters().error(e.0);
                reply_dev(dev, h.unique, -e.0, &[]);
            }
            continue;
        }
        let answer = handle(policy, dev, &h, req);
        if matches!(answer, Answer::NoReply) {
            continue;
        }
        let mut out = Out::new(&mut reply);
        let error = encode(policy, &h, answer, &mut out);
        if error != 0 {
            policy.counters().error(-error);
        }
        let len = out.len();
        reply_dev(
            dev,
            h.unique,
            error,
            if error != 0 { &[] } else { &reply[..len] },
        );
    }
}
