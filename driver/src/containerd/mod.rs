//! layerfuse as a containerd snapshotter (a proxy plugin): containerd's Snapshots gRPC service on
//! a unix socket, snapshots as directories under `ROOT/containerd/`, their metadata in a
//! transactional store, and mounts of type `fuse3.layerfuse` that containerd mounts itself.
//! Owns `layerfuse-driver containerd`: the socket (0600, root), the state under ROOT/containerd.
//!
//! ```toml
//! [proxy_plugins.layerfuse]
//!   type = "snapshot"
//!   address = "/run/layerfuse/snapshotter.sock"
//! ```

mod error;
mod filters;
mod meta;
mod mounts;
mod service;
mod snapshots;
mod usage;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::SnapError;

/// `layerfuse-driver containerd`: serve containerd's snapshotter API.
#[derive(clap::Args, Debug)]
pub struct ContainerdArgs {
    /// layerfuse's storage root; the snapshotter keeps its state in ROOT/containerd.
    #[arg(long, default_value = "/var/lib/layerfuse")]
    pub root: PathBuf,
    /// The unix socket containerd connects to (`address` of `[proxy_plugins.layerfuse]`).
    #[arg(long, default_value = "/run/layerfuse/snapshotter.sock")]
    pub socket: PathBuf,
}

/// Binds `socket` so that it only ever appears with mode 0600: bound under a temporary name,
/// chmod, then renamed into place. A live socket at the path (another snapshotter) is an error; a
/// stale one is replaced.
fn bind(socket: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    use std::os::unix::net::{UnixListener, UnixStream};
    let parent = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| format!("socket path {} has no directory", socket.display()))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    match std::fs::symlink_metadata(socket) {
        Ok(md) if md.file_type().is_socket() => {
            if UnixStream::connect(socket).is_ok() {
                return Err(format!(
                    "{} is being served by another process (a snapshotter already running?)",
                    socket.display()
                ));
            }
            std::fs::remove_file(socket)
                .map_err(|e| format!("cannot remove stale {}: {e}", socket.display()))?;
        }
        Ok(_) => return Err(format!("{} exists and is not a socket", socket.display())),
        Err(_) => {}
    }
    let mut tmp = socket.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| format!("cannot listen on {}: {e}", tmp.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, socket));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot place {}: {e}", socket.display()));
    }
    Ok(listener)
}

/// Serves until SIGTERM or SIGINT, then removes the socket. Errors are one line for the user.
pub fn run(args: ContainerdArgs) -> Result<(), String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let state = args.root.join("containerd");
    let snapshots = snapshots::Snapshots::open(&args.root, &state).map_err(|e| e.to_string())?;
    let listener = bind(&args.socket)?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("socket: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let socket = args.socket.clone();
    let served = runtime.block_on(async move {
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|e| format!("socket: {e}"))?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let service = service::Service::new(Arc::new(snapshots));
        tracing::info!(
            "containerd snapshotter serving {} (state in {})",
            socket.display(),
            state.display()
        );
        containerd_snapshots::tonic::transport::Server::builder()
            .add_service(containerd_snapshots::server(Arc::new(service)))
            .serve_with_incoming_shutdown(incoming, stop_signal())
            .await
            .map_err(|e| format!("serving {}: {e}", socket.display()))
    });
    let _ = std::fs::remove_file(&args.socket);
    served
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, serve until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping");
}
