//! The kernel mount of one union and the transport that serves it. As root the
//! session opens `/dev/fuse` and mounts it itself (mount(2) with `fd=`, so the mount
//! shows the fsname and the type `fuse.SUBTYPE` asked for), then hands the device to
//! a transport: FUSE-over-io_uring where the kernel offers it, else fuser's
//! `/dev/fuse` loop. Without the right to mount (EPERM: rootless) fuser mounts
//! through fusermount3. The transports only translate requests; mounting, and
//! unmounting what was mounted but could not be served, is the session's.

use crate::config::Transport;
use crate::fuse::{self, DevServing, FuserMount};
use crate::overlay::Overlay;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How the union is mounted.
#[derive(Clone, Debug)]
pub(super) struct MountOptions {
    pub read_only: bool,
    /// Request-serving threads of the `/dev/fuse` transport (each with its own fd
    /// on Linux). The io_uring transport has its own (`THREADS_PER_QUEUE` per CPU).
    pub threads: usize,
    /// Extra kernel mount flags (`nodev`, `noexec`, …), checked by `config`.
    pub flags: Vec<String>,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub transport: Transport,
    /// The source and subtype (type `fuse.SUBTYPE`) the mount shows in /proc/mounts.
    pub fsname: String,
    pub subtype: String,
}

enum Serving {
    Dev(DevServing),
    #[cfg(target_os = "linux")]
    Uring(crate::uring::UringSession),
    /// Layerfuse's own `/dev/fuse` threads, READ replies spliced.
    #[cfg(target_os = "linux")]
    Splice(crate::uring::UringSession),
}

/// A mounted union: run it with [`Mounted::run`]; unmounting it (from anywhere) ends it.
pub(super) struct Mounted {
    serving: Serving,
}

impl Mounted {
    /// Serve requests until the filesystem is unmounted.
    pub fn run(self) -> io::Result<()> {
        match self.serving {
            Serving::Dev(s) => s.run(),
            #[cfg(target_os = "linux")]
            Serving::Uring(s) | Serving::Splice(s) => s.run(),
        }
    }

    /// Where invalidations for this mount go, whichever transport serves it.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn notifier(&self) -> Arc<dyn fuse::policy::Notify> {
        match &self.serving {
            Serving::Dev(s) => Arc::new(DevNotify::new(s)),
            #[cfg(target_os = "linux")]
            Serving::Uring(s) | Serving::Splice(s) => s.notifier(),
        }
    }

    /// The transport serving this mount: `uring` or `dev`.
    pub fn transport(&self) -> Transport {
        match self.serving {
            Serving::Dev(_) => Transport::Dev,
            #[cfg(target_os = "linux")]
            Serving::Uring(_) => Transport::Uring,
            #[cfg(target_os = "linux")]
            Serving::Splice(_) => Transport::Splice,
        }
    }
}

/// Mount `overlay` at `mountpoint`. Returns once the kernel has mounted it and
/// finished the FUSE handshake: the mount is live.
pub(super) fn mount(
    overlay: Arc<Overlay>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> io::Result<Mounted> {
    #[cfg(target_os = "linux")]
    match opts.transport {
        Transport::Dev => {}
        Transport::Splice => {
            return mount_splice(overlay, mountpoint, opts)
                .map_err(|e| io::Error::other(format!("splice transport: {e}")));
        }
        Transport::Uring => {
            return mount_uring(overlay, mountpoint, opts)
                .map_err(|e| io::Error::other(format!("io_uring transport: {e}")));
        }
        Transport::Auto => match crate::uring::kernel_offers_uring() {
            Some(Ok(())) => match mount_uring(overlay.clone(), mountpoint, opts) {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring transport unavailable; using /dev/fuse")
                }
            },
            Some(Err(why)) => tracing::info!("{why}; using /dev/fuse"),
            None => tracing::info!(
                "FUSE-over-io_uring not known to be enabled (no enable_uring switch visible); using /dev/fuse"
            ),
        },
    }
    mount_dev(overlay, mountpoint, opts)
}

/// The classic transport. As root, on a mount of our own; otherwise (EPERM)
/// through fuser's mount, i.e. fusermount3, which honours fsname and subtype too
/// (fuser's own mount(2) would always say `fuse`).
fn mount_dev(overlay: Arc<Overlay>, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mounted> {
    #[cfg(target_os = "linux")]
    let own = match kernel_mount(mountpoint, opts) {
        Ok(dev) => Some(dev),
        Err(e) if e == crate::sys::Errno::EPERM => None,
        Err(e) => return Err(io::Error::from_raw_os_error(e.0)),
    };
    #[cfg(not(target_os = "linux"))]
    let own: Option<std::os::fd::OwnedFd> = None;
    let serving = match own {
        Some(dev) => fuse::serve_device(overlay, dev, opts.threads).inspect_err(|_| {
            // Mounted but not served: nothing may stay mounted.
            let _ = crate::sys::unmount(mountpoint, true);
        })?,
        None => fuse::mount_and_serve(
            overlay,
            mountpoint,
            opts.threads,
            &FuserMount {
                fsname: &opts.fsname,
                subtype: &opts.subtype,
                read_only: opts.read_only,
                flags: &opts.flags,
            },
        )?,
    };
    Ok(Mounted {
        serving: Serving::Dev(serving),
    })
}

/// mount(2) a FUSE filesystem of our own at `mountpoint` and return its device: the
/// fsname as source, `fuse.SUBTYPE` as type, the kernel flags asked for. Root only
/// (others get EPERM).
#[cfg(target_os = "linux")]
fn kernel_mount(
    mountpoint: &Path,
    opts: &MountOptions,
) -> crate::sys::SysResult<std::os::fd::OwnedFd> {
    use crate::sys::uring::{self as sysuring, mount_flag};
    let dev = sysuring::open_fuse_device()?;
    let mut flags = 0;
    for f in &opts.flags {
        flags |= match f.as_str() {
            "nodev" => mount_flag::NODEV,
            "nosuid" => mount_flag::NOSUID,
            "noexec" => mount_flag::NOEXEC,
            "noatime" => mount_flag::NOATIME,
            "sync" => mount_flag::SYNCHRONOUS,
            "dirsync" => mount_flag::DIRSYNC,
            _ => 0,
        };
    }
    if opts.read_only {
        flags |= mount_flag::RDONLY;
    }
    let root_mode = 0o040000;
    let data = format!(
        "fd={},rootmode={root_mode:o},user_id={},group_id={},default_permissions,allow_other",
        std::os::fd::AsRawFd::as_raw_fd(&dev),
        crate::sys::geteuid(),
        crate::sys::getegid()
    );
    let fstype = format!("fuse.{}", opts.subtype);
    sysuring::mount_fuse(&opts.fsname, mountpoint, &fstype, flags, &data)?;
    Ok(dev)
}

/// The io_uring transport on a mount of our own.
#[cfg(target_os = "linux")]
fn mount_uring(
    overlay: Arc<Overlay>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<Mounted, crate::uring::Unavailable> {
    if let Some(offered) = crate::uring::kernel_offers_uring() {
        offered.map_err(crate::uring::Unavailable::NotOffered)?;
    }
    let dev = kernel_mount(mountpoint, opts)?;
    match crate::uring::start(dev, fuse::policy::Policy::new(overlay)) {
        Ok(s) => Ok(Mounted {
            serving: Serving::Uring(s),
        }),
        Err(e) => {
            let _ = crate::sys::unmount(mountpoint, true);
            Err(e)
        }
    }
}

/// Layerfuse's own `/dev/fuse` threads on a mount of our own (root: mount(2)).
#[cfg(target_os = "linux")]
fn mount_splice(
    overlay: Arc<Overlay>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<Mounted, crate::uring::Unavailable> {
    let dev = kernel_mount(mountpoint, opts)?;
    match crate::uring::start_device(dev, fuse::policy::Policy::new(overlay), opts.threads) {
        Ok(s) => Ok(Mounted {
            serving: Serving::Splice(s),
        }),
        Err(e) => {
            let _ = crate::sys::unmount(mountpoint, true);
            Err(e)
        }
    }
}

/// The classic transport's invalidations: fuser's calls, and the epoch (which fuser
/// has no call for) written to a duplicate of the session's `/dev/fuse` as the
/// io_uring transport writes all of its own.
struct DevNotify {
    fuser: Arc<dyn fuse::policy::Notify>,
    #[cfg(target_os = "linux")]
    dev: Option<std::os::fd::OwnedFd>,
}

impl DevNotify {
    fn new(serving: &DevServing) -> DevNotify {
        #[cfg(target_os = "linux")]
        let dev = match serving.device().try_clone_to_owned() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "cannot duplicate /dev/fuse: no epoch invalidation");
                None
            }
        };
        DevNotify {
            fuser: serving.notifier(),
            #[cfg(target_os = "linux")]
            dev,
        }
    }
}

impl fuse::policy::Notify for DevNotify {
    fn inval_inode(&self, ino: u64, offset: i64, len: i64) -> io::Result<()> {
        self.fuser.inval_inode(ino, offset, len)
    }
    fn inval_entry(&self, parent: u64, name: &std::ffi::OsStr) -> io::Result<()> {
        self.fuser.inval_entry(parent, name)
    }
    #[cfg(target_os = "linux")]
    fn inc_epoch(&self) -> io::Result<()> {
        use std::os::fd::AsFd;
        let Some(dev) = &self.dev else {
            return self.fuser.inc_epoch();
        };
        crate::sys::uring::dev_write(dev.as_fd(), &[&crate::uring::wire::notify_inc_epoch()])
            .map_err(|e| io::Error::from_raw_os_error(e.0))?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    fn inc_epoch(&self) -> io::Result<()> {
        self.fuser.inc_epoch()
    }
}
