//! Mounting the union on the chosen transport and running it until it is unmounted.

use super::devfuse::DevFs;
use super::policy::{Notify, Policy};
use crate::overlay::Overlay;
use fuser::{Config, MountOption, Session, SessionACL};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Which channel carries requests between the kernel and the daemon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// io_uring where the kernel offers it (`enable_uring`), else `/dev/fuse`.
    #[default]
    Auto,
    /// FUSE-over-io_uring: per-CPU queues (Linux 6.14+, root, `enable_uring=1`).
    Uring,
    /// The classic `/dev/fuse` read/write loop (every platform, rootless).
    Dev,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Transport::Auto),
            "uring" | "io_uring" => Ok(Transport::Uring),
            "dev" => Ok(Transport::Dev),
            other => Err(format!(
                "unknown transport {other:?} (expected auto, uring or dev)"
            )),
        }
    }
}

impl Transport {
    /// `$LAYERFUSE_TRANSPORT` (how test harnesses choose), else auto.
    pub fn from_env() -> Result<Transport, String> {
        match std::env::var("LAYERFUSE_TRANSPORT") {
            Ok(v) => v.parse(),
            Err(_) => Ok(Transport::Auto),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::Uring => "uring",
            Transport::Dev => "dev",
        })
    }
}

/// How the union is mounted.
#[derive(Clone, Debug)]
pub struct MountOptions {
    pub read_only: bool,
    /// Request-serving threads of the `/dev/fuse` transport (each with its own fd
    /// on Linux). The io_uring transport has one per CPU.
    pub threads: usize,
    /// Extra kernel mount flags (`nodev`, `noexec`, …).
    pub flags: Vec<String>,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub transport: Transport,
    /// The source and subtype (type `fuse.SUBTYPE`) the mount shows in /proc/mounts.
    pub fsname: String,
    pub subtype: String,
}

enum Serving {
    Dev(Session<DevFs>),
    #[cfg(target_os = "linux")]
    Uring(crate::uring::UringSession),
}

/// A mounted union: run it with [`Mounted::run`]; unmounting it (from anywhere) ends it.
pub struct Mounted {
    serving: Serving,
}

impl Mounted {
    /// Serve requests until the filesystem is unmounted.
    pub fn run(self) -> io::Result<()> {
        match self.serving {
            Serving::Dev(s) => s.run(),
            #[cfg(target_os = "linux")]
            Serving::Uring(s) => s.run(),
        }
    }

    /// The transport serving this mount: `uring` or `dev`.
    pub fn transport(&self) -> Transport {
        match self.serving {
            Serving::Dev(_) => Transport::Dev,
            #[cfg(target_os = "linux")]
            Serving::Uring(_) => Transport::Uring,
        }
    }
}

/// The kernel mount flags asked for: (dev, suid, other fuser options).
fn flag_options(opts: &MountOptions) -> (bool, bool, Vec<MountOption>) {
    let mut options = Vec::new();
    let mut dev = true;
    let mut suid = true;
    for f in &opts.flags {
        match f.as_str() {
            "nodev" => dev = false,
            "nosuid" => suid = false,
            "noexec" => options.push(MountOption::NoExec),
            "noatime" => options.push(MountOption::NoAtime),
            "sync" => options.push(MountOption::Sync),
            "dirsync" => options.push(MountOption::DirSync),
            _ => {}
        }
    }
    (dev, suid, options)
}

/// Mount `overlay` at `mountpoint`. Returns once the kernel has mounted it and
/// finished the FUSE handshake: the mount is live.
pub fn mount(overlay: Arc<Overlay>, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mounted> {
    #[cfg(target_os = "linux")]
    match opts.transport {
        Transport::Dev => {}
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

/// The classic transport. As root, on a mount of our own (so it shows the fsname
/// and the type `fuse.SUBTYPE` asked for; fuser's own mount(2) always says `fuse`);
/// otherwise (EPERM) through fuser's mount, i.e. fusermount3, which honours both.
fn mount_dev(overlay: Arc<Overlay>, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mounted> {
    let mut config = Config::default();
    config.acl = SessionACL::All;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = cfg!(target_os = "linux") && opts.threads > 1;
    let policy = Arc::new(Policy::new(overlay));
    let fs = DevFs {
        policy: policy.clone(),
    };
    #[cfg(target_os = "linux")]
    let own = match kernel_mount(mountpoint, opts) {
        Ok(dev) => Some(dev),
        Err(e) if e == crate::sys::Errno::EPERM => None,
        Err(e) => return Err(io::Error::from_raw_os_error(e.0)),
    };
    #[cfg(not(target_os = "linux"))]
    let own: Option<std::os::fd::OwnedFd> = None;
    let session = match own {
        Some(dev) => Session::from_fd(fs, dev, SessionACL::All, config).inspect_err(|_| {
            // Mounted but not served: nothing may stay mounted.
            let _ = crate::sys::unmount(mountpoint, true);
        })?,
        None => {
            config.mount_options = fuser_options(opts);
            Session::new(fs, mountpoint, &config)?
        }
    };
    let notifier: Arc<dyn Notify> = Arc::new(FuserNotify(session.notifier()));
    policy.set_notifier(Box::new(FuserNotify(session.notifier())));
    policy.forward_attr_changes(notifier);
    tracing::info!(transport = "dev", "serving over /dev/fuse");
    Ok(Mounted {
        serving: Serving::Dev(session),
    })
}

/// The mount options fuser (and so fusermount3) is given.
fn fuser_options(opts: &MountOptions) -> Vec<MountOption> {
    let (dev, suid, mut flags) = flag_options(opts);
    let mut options = vec![
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype(opts.subtype.clone()),
        MountOption::DefaultPermissions,
    ];
    options.append(&mut flags);
    // A container root needs device nodes and setuid binaries to work.
    options.push(if dev {
        MountOption::Dev
    } else {
        MountOption::NoDev
    });
    options.push(if suid {
        MountOption::Suid
    } else {
        MountOption::NoSuid
    });
    options.push(if opts.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    options
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
    let (devices, suid, _) = flag_options(opts);
    let mut flags = 0;
    if !devices {
        flags |= mount_flag::NODEV;
    }
    if !suid {
        flags |= mount_flag::NOSUID;
    }
    for f in &opts.flags {
        flags |= match f.as_str() {
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

struct FuserNotify(fuser::Notifier);

impl Notify for FuserNotify {
    fn inval_inode(&self, ino: u64, offset: i64, len: i64) -> io::Result<()> {
        self.0.inval_inode(fuser::INodeNo(ino), offset, len)
    }
}

/// The io_uring transport: our own device, mount(2) and handshake.
#[cfg(target_os = "linux")]
fn mount_uring(
    overlay: Arc<Overlay>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<Mounted, crate::uring::Unavailable> {
    use crate::uring::Unavailable;
    if let Some(offered) = crate::uring::kernel_offers_uring() {
        offered.map_err(Unavailable::NotOffered)?;
    }
    let dev = kernel_mount(mountpoint, opts)?;
    match crate::uring::start(dev, Policy::new(overlay)) {
        Ok(s) => Ok(Mounted {
            serving: Serving::Uring(s),
        }),
        Err(e) => {
            let _ = crate::sys::unmount(mountpoint, true);
            Err(e)
        }
    }
}
