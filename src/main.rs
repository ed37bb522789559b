//! The `layerfuse` command: parse argv into checked settings, then mount (as a
//! background daemon unless `-f`) or unmount. Errors end as one line on stderr and a
//! non-zero exit code.

use clap::Parser;
use layerfuse::cli::{self, Cli, Command};
use layerfuse::cli::{Format, VolumeArgs, VolumeCommand};
use layerfuse::config::SpliceSource;
use layerfuse::config::{self, MountConfig, MountRequest};
use layerfuse::fuse::{self, MountOptions};
use layerfuse::overlay::{Overlay, SpliceConfig};
use layerfuse::volumes::{Claim, VolumeStore};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in the daemon child that its parent waits on: print `ready` once mounted.
const READY_ENV: &str = "LAYERFUSE_NOTIFY_READY";
/// What the daemon prints on stdout once the mount is live.
const READY_LINE: &str = "layerfuse-ready";

/// Once the daemon is detached, stderr is a pipe nobody reads: logs stop there.
static DETACHED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let result = if cli::is_compat(&args) {
        run_compat(&args)
    } else {
        let cli = Cli::parse_from(&args);
        match cli.command {
            Command::Mount(m) => {
                init_logging(&m.log_level);
                m.request()
                    .and_then(|req| mount_or_spawn(req, m.foreground))
            }
            Command::Umount(u) => umount(&u.mountpoint, u.lazy),
            Command::Volume(v) => volume_command(v),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("layerfuse: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run_compat(args: &[OsString]) -> Result<(), String> {
    let c = cli::parse_compat(args)?;
    init_logging(if c.debug { "debug" } else { "warn" });
    for u in &c.unknown {
        tracing::warn!(option = %u, "unknown mount option ignored");
    }
    mount_or_spawn(c.request, c.foreground)
}

fn init_logging(level: &str) {
    // fuser warns when it finds the mount already gone at exit, which is how every
    // unmount from outside ends: not worth a line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},fuser::session=error"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| -> Box<dyn Write> {
            if DETACHED.load(Ordering::Relaxed) {
                Box::new(std::io::sink())
            } else {
                Box::new(std::io::stderr())
            }
        })
        .try_init();
}

/// Validate, then either mount here (foreground, or the daemon child) or start the
/// daemon and wait until its mount is live.
fn mount_or_spawn(req: MountRequest, foreground: bool) -> Result<(), String> {
    let cfg = req.validate().map_err(|e| e.to_string())?;
    let notify = std::env::var_os(READY_ENV).is_some();
    if foreground || notify {
        serve(&cfg, notify)
    } else {
        spawn_daemon()
    }
}

/// Start this same command again as the daemon, relay its errors, and return once it
/// says the mount is live (or fail with its message).
fn spawn_daemon() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's ^C does not reach the daemon.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start daemon: {e}"))?;
    let stderr = child.stderr.take();
    let relay = std::thread::spawn(move || {
        let mut said = false;
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                eprintln!("{line}");
                said = true;
            }
        }
        said
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line == READY_LINE {
                return Ok(());
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let said = relay.join().unwrap_or(false);
    if said {
        // The daemon's own line (already relayed) says what went wrong.
        Err(String::new())
    } else {
        Err(format!(
            "daemon exited before the mount was live ({status})"
        ))
    }
}

/// The volumes and binds of a mount, ready for the union.
#[derive(Default)]
struct Attached {
    splices: Vec<SpliceConfig>,
    /// Per splice: fill it from the layers first (a new, empty volume).
    populate: Vec<bool>,
    /// Held while mounted: marks the volumes as in use.
    _claims: Vec<Claim>,
    /// Volumes made by this mount, removed again if the mount is refused.
    made: Vec<String>,
}

/// Make (or find) the volumes a mount asks for, claim them for this process, and
/// turn every volume and bind into a splice of the union.
fn attach_splices(cfg: &MountConfig) -> Result<Attached, String> {
    let store = VolumeStore::new(cfg.store_root.clone());
    let (mut splices, mut populate, mut claims) = (Vec::new(), Vec::new(), Vec::new());
    let mut made = Vec::new();
    for s in &cfg.splices {
        let target = s.target.as_os_str().as_encoded_bytes().to_vec();
        match &s.source {
            SpliceSource::Volume(name) => {
                let (v, new) = match name {
                    Some(n) => store.get_or_create(n)?,
                    None => (store.create(None)?, true),
                };
                if new {
                    made.push(v.name.clone());
                }
                claims.push(store.claim(&v.name, &cfg.mountpoint)?);
                let empty = std::fs::read_dir(&v.path)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                populate.push(empty && !s.nocopy);
                splices.push(SpliceConfig {
                    target,
                    source: v.path,
                    read_only: s.read_only,
                });
            }
            SpliceSource::Bind(src) => {
                populate.push(false);
                splices.push(SpliceConfig {
                    target,
                    source: src.clone(),
                    read_only: s.read_only,
                });
            }
        }
    }
    Ok(Attached {
        splices,
        populate,
        _claims: claims,
        made,
    })
}

/// Open the layers, mount, and serve until unmounted.
fn serve(cfg: &MountConfig, notify: bool) -> Result<(), String> {
    let attached = attach_splices(cfg)?;
    // A refused mount leaves no volume it made behind.
    let refused = |attached: Attached, msg: String| {
        let store = VolumeStore::new(cfg.store_root.clone());
        let made = attached.made.clone();
        drop(attached);
        for name in made {
            let _ = store.remove(&name, true);
        }
        msg
    };
    let mut ocfg = cfg.overlay.clone();
    ocfg.splices = attached.splices.clone();
    let overlay = match Overlay::new(&ocfg) {
        Ok(o) => o,
        Err(e) => return Err(refused(attached, e.to_string())),
    };
    if let Err(e) = overlay.prepare_splices(&attached.populate) {
        return Err(refused(attached, e));
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let opts = MountOptions {
        read_only: cfg.read_only,
        threads: if cfg!(target_os = "linux") {
            threads
        } else {
            1
        },
        flags: cfg.flags.clone(),
    };
    // Taken over before the mount is live: a signal right after must unmount, not kill.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot handle signals: {e}"))?;
    let mut mounted = match fuse::mount(Arc::new(overlay), &cfg.mountpoint, &opts) {
        Ok(m) => m,
        // Unmounted (umount2, fusermount -u) between the kernel's mount and the first
        // request: nothing is left mounted, as after any unmount.
        Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {
            tracing::info!(error = %e, "unmounted before serving, exiting");
            return Ok(());
        }
        Err(e) => return Err(format!("{}: cannot mount: {e}", cfg.mountpoint.display())),
    };
    tracing::info!(mountpoint = %cfg.mountpoint.display(), "mounted");
    let mut unmounter = mounted.unmounter();
    let mountpoint = cfg.mountpoint.clone();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "unmounting");
            if let Err(e) = unmounter.unmount() {
                tracing::warn!(error = %e, "unmount failed, detaching lazily");
                let _ = layerfuse::sys::unmount(&mountpoint, true);
            }
        }
    });
    if notify {
        println!("{READY_LINE}");
        let _ = std::io::stdout().flush();
        DETACHED.store(true, Ordering::Relaxed);
    }
    mounted
        .run()
        .map_err(|e| format!("{}: session ended: {e}", cfg.mountpoint.display()))?;
    tracing::info!("unmounted, exiting");
    Ok(())
}

fn umount(mountpoint: &std::path::Path, lazy: bool) -> Result<(), String> {
    if !config::is_layerfuse_mount(
        &std::fs::canonicalize(mountpoint).map_err(|e| format!("{}: {e}", mountpoint.display()))?,
    ) {
        return Err(format!("{}: not a layerfuse mount", mountpoint.display()));
    }
    layerfuse::sys::unmount(mountpoint, lazy).map_err(|e| format!("{}: {e}", mountpoint.display()))
}

fn volume_command(args: VolumeArgs) -> Result<(), String> {
    let store = VolumeStore::new(args.root);
    match args.command {
        VolumeCommand::Create { name } => {
            let v = store.create(name.as_deref())?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls { format } => {
            let vols = store.list();
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&vols).map_err(|e| e.to_string())?
                ),
                Format::Text => {
                    println!("NAME");
                    for v in vols {
                        println!("{}", v.name);
                    }
                }
            }
        }
        VolumeCommand::Inspect { name, format } => {
            let v = store.get(&name)?;
            let users = store.users(&name);
            let size = store.size(&v);
            let info = serde_json::json!({
                "name": v.name,
                "created": v.created,
                "anonymous": v.anonymous,
                "path": v.path,
                "size": size,
                "mounts": users,
            });
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&info).map_err(|e| e.to_string())?
                ),
                Format::Text => {
                    println!("name:    {}", v.name);
                    println!("created: {}", v.created);
                    println!("path:    {}", v.path.display());
                    println!("size:    {size}");
                    for u in users {
                        println!("mounted: {} (pid {})", u.mountpoint, u.pid);
                    }
                }
            }
        }
        VolumeCommand::Rm { name, force } => store.remove(&name, force)?,
        VolumeCommand::Prune => {
            for n in store.prune()? {
                println!("{n}");
            }
        }
    }
    Ok(())
}
