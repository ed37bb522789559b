//! The `layerfuse` command: parse argv into checked settings, then mount (as a
//! background daemon unless `-f`) or unmount. Errors end as one line on stderr and a
//! non-zero exit code.

use clap::Parser;
use layerfuse::cli::{self, Cli, Command};
use layerfuse::config::{self, MountConfig, MountRequest};
use layerfuse::fuse::{self, MountOptions};
use layerfuse::overlay::Overlay;
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
                mount_or_spawn(m.request(), m.foreground)
            }
            Command::Umount(u) => umount(&u.mountpoint, u.lazy),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("layerfuse: {msg}");
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
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
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                eprintln!("{line}");
            }
        }
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line == READY_LINE {
                return Ok(());
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = relay.join();
    Err(format!(
        "daemon exited before the mount was live ({status})"
    ))
}

/// Open the layers, mount, and serve until unmounted.
fn serve(cfg: &MountConfig, notify: bool) -> Result<(), String> {
    let overlay = Overlay::new(&cfg.overlay).map_err(|e| e.to_string())?;
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
    layerfuse::sys::set_umask(0);
    let mut mounted = fuse::mount(Arc::new(overlay), &cfg.mountpoint, &opts)
        .map_err(|e| format!("{}: cannot mount: {e}", cfg.mountpoint.display()))?;
    tracing::info!(mountpoint = %cfg.mountpoint.display(), "mounted");
    let mut unmounter = mounted.unmounter();
    let mountpoint = cfg.mountpoint.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot handle signals: {e}"))?;
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
