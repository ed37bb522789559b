//! Holds every open of an entry inside one directory until the test lets it go (fanotify
//! permission events): it shows what else can happen at that point of an operation of
//! the union — the operation waits inside its `open` for as long as the test wants,
//! without any timing. Needs CAP_SYS_ADMIN (the tests run as root).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fanotify group holding the opens of entries directly inside one directory.
pub struct OpenGate {
    /// `None` once released: closing the group lets every open go on, also those
    /// not read yet.
    group: Option<OwnedFd>,
    /// Opens being held: the event's fd (a reference to the opened entry).
    held: Vec<OwnedFd>,
}

impl OpenGate {
    /// Hold every open (for reading or writing; files and directories) of an entry
    /// directly inside `dir`, from now on.
    pub fn new(dir: &Path) -> io::Result<OpenGate> {
        let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
        // SAFETY: plain syscall; the fd it returns is owned here.
        let fd = unsafe { libc::fanotify_init(flags, event_flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by fanotify_init and is not owned elsewhere.
        let group = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = crate::common::sys::cpath(dir);
        let mask = libc::FAN_OPEN_PERM | libc::FAN_EVENT_ON_CHILD | libc::FAN_ONDIR;
        // SAFETY: valid group fd and NUL-terminated path.
        let rc = unsafe {
            libc::fanotify_mark(
                group.as_raw_fd(),
                libc::FAN_MARK_ADD,
                mask,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OpenGate {
            group: Some(group),
            held: Vec::new(),
        })
    }

    /// Wait (at most `deadline`) until an open is being held; the path it opens.
    pub fn wait_for_open(&mut self, deadline: Duration) -> Option<PathBuf> {
        let end = Instant::now() + deadline;
        loop {
            let group = self.group.as_ref()?;
            let mut pfd = libc::pollfd {
                fd: group.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return None;
            }
            let before = self.held.len();
            self.read_events();
            if let Some(fd) = self.held.get(before) {
                return std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok();
            }
        }
    }

    /// Read what events are there; keep the opens (permission events) to answer later.
    fn read_events(&mut self) {
        let Some(group) = &self.group else { return };
        // Aligned for the event records.
        let mut buf = [0u64; 512];
        let size = std::mem::size_of_val(&buf);
        // SAFETY: buffer pointer and length from a live array.
        let n = unsafe { libc::read(group.as_raw_fd(), buf.as_mut_ptr().cast(), size) };
        if n <= 0 {
            return;
        }
        let bytes = n as usize;
        let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut at = 0;
        while at + meta_len <= bytes {
            // SAFETY: a whole record header lies within the bytes read; read_unaligned
            // needs no alignment.
            let m: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<u8>().add(at).cast()) };
            assert_eq!(
                m.vers,
                libc::FANOTIFY_METADATA_VERSION,
                "fanotify event format"
            );
            if m.fd >= 0 {
                // SAFETY: the kernel made this fd for us with the event.
                self.held.push(unsafe { OwnedFd::from_raw_fd(m.fd) });
            }
            if m.event_len == 0 {
                break;
            }
            at += m.event_len as usize;
        }
    }

    /// Let every held open go on, and stop holding.
    pub fn release(&mut self) {
        if let Some(group) = &self.group {
            for fd in self.held.drain(..) {
                let answer = libc::fanotify_response {
                    fd: fd.as_raw_fd(),
                    response: libc::FAN_ALLOW,
                };
                // SAFETY: writes one response struct from a live value.
                unsafe {
                    libc::write(
                        group.as_raw_fd(),
                        (&raw const answer).cast(),
                        std::mem::size_of_val(&answer),
                    );
                }
            }
        }
        self.held.clear();
        // Closing the group allows whatever open it still holds.
        self.group = None;
    }
}

impl Drop for OpenGate {
    fn drop(&mut self) {
        self.release();
    }
}
