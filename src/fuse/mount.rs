//! Mounting the union and running its session until it is unmounted.

use super::LayerFs;
use crate::overlay::Overlay;
use fuser::{Config, MountOption, Session, SessionACL};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How the union is mounted.
#[derive(Clone, Debug)]
pub struct MountOptions {
    pub read_only: bool,
    /// Request-serving threads (each with its own `/dev/fuse` fd on Linux).
    pub threads: usize,
    /// Extra kernel mount flags (`nodev`, `noexec`, …).
    pub flags: Vec<String>,
}

/// A mounted union: run it with [`Mounted::run`]; unmounting it (from anywhere) ends it.
pub struct Mounted {
    session: Session<LayerFs>,
}

impl Mounted {
    /// Serve requests until the filesystem is unmounted.
    pub fn run(self) -> io::Result<()> {
        self.session.run()
    }
}

/// Mount `overlay` at `mountpoint`. Returns once the kernel has mounted it and
/// finished the FUSE handshake: the mount is live.
pub fn mount(overlay: Arc<Overlay>, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mounted> {
    let mut options = vec![
        MountOption::FSName("layerfuse".into()),
        MountOption::Subtype("layerfuse".into()),
        MountOption::DefaultPermissions,
    ];
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
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = SessionACL::All;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = cfg!(target_os = "linux") && opts.threads > 1;
    let notifier_cell = Arc::new(std::sync::OnceLock::new());
    let session = Session::new(
        LayerFs::new(overlay.clone(), notifier_cell.clone()),
        mountpoint,
        &config,
    )?;
    let _ = notifier_cell.set(session.notifier());
    // Attribute invalidations carry no page-cache range, so the kernel takes no lock
    // that a request in flight could hold: they can be sent from inside a handler.
    let notifier = session.notifier();
    overlay.on_attr_change(Box::new(move |ino| {
        let r = notifier.inval_inode(fuser::INodeNo(ino.get()), -1, 0);
        tracing::debug!(ino = ino.get(), ?r, "invalidate attributes");
        if let Err(e) = r {
            tracing::debug!(ino = ino.get(), error = %e, "attribute invalidation not delivered");
        }
    }));
    Ok(Mounted { session })
}
