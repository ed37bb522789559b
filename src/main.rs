//! The `layerfuse` command: argv becomes one library call (a mount session, an
//! unmount, a volume command) and its outcome an exit code; errors end as one line on
//! stderr. `mount` without `-f` starts this same command again as the background
//! daemon and returns once that daemon says its mount is live.

mod cli;

use clap::Parser;
use cli::{Cli, Command, Format, StatusArgs, VolumeArgs, VolumeCommand};
use layerfuse::SetupError;
use layerfuse::session::{self, FillProgress, MountRequest, Session};
use layerfuse::volumes::VolumeStore;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// A line on stdout; a reader that went away (`| head`) is not an error worth a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Set in the daemon child that its parent waits on: print `READY_LINE` once mounted.
const READY_ENV: &str = "LAYERFUSE_NOTIFY_READY";
/// What the daemon prints on stdout once the mount is live.
const READY_LINE: &str = "layerfuse-ready";
/// What the daemon prints on stdout while it fills new volumes: `PREFIX BYTES DONE`.
const PROGRESS_PREFIX: &str = "layerfuse-progress ";

/// The first population of new volumes, as a progress line on stderr when it is a
/// terminal (indicatif draws nothing otherwise: logs and pipes stay quiet).
#[derive(Default)]
struct FillBar(std::sync::OnceLock<indicatif::ProgressBar>);

impl FillBar {
    fn show(&self, p: FillProgress) {
        let bar = self.0.get_or_init(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} filling new volumes from the image: {bytes} ({bytes_per_sec}, {elapsed})",
            ) {
                bar.set_style(style);
            }
            bar
        });
        bar.set_position(p.bytes);
        if p.done {
            bar.finish();
        } else {
            bar.tick();
        }
    }
}

/// Once the daemon is detached, stderr is a pipe nobody reads: logs stop there.
static DETACHED: AtomicBool = AtomicBool::new(false);

/// A failure already told on stderr (by the daemon): exit non-zero, say nothing more.
struct Told;

enum Failure {
    Setup(SetupError),
    Told(Told),
}

impl From<SetupError> for Failure {
    fn from(e: SetupError) -> Failure {
        Failure::Setup(e)
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let result = if cli::is_compat(&args) {
        run_compat(&args)
    } else {
        match Cli::parse_from(&args).command {
            Command::Mount(m) => {
                init_logging(&m.log_level);
                m.request()
                    .map_err(Failure::from)
                    .and_then(|req| mount(req, m.foreground))
            }
            Command::Umount(u) => session::unmount_path(&u.mountpoint, u.lazy).map_err(Into::into),
            Command::Volume(v) => volume_command(v).map_err(Into::into),
            Command::Layer { args } => layer_command(args).map_err(Into::into),
            Command::Status(s) => status_command(s).map_err(Into::into),
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut cmd, "layerfuse", &mut script);
                let _ = std::io::stdout().write_all(&script);
                Ok(())
            }
            Command::Man { dir } => man_pages(&dir).map_err(Into::into),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Setup(e)) => {
            eprintln!("layerfuse: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Told(Told)) => ExitCode::FAILURE,
    }
}

fn run_compat(args: &[OsString]) -> Result<(), Failure> {
    let c = cli::parse_compat(args)?;
    init_logging(if c.debug { "debug" } else { "warn" });
    // Said once, by the command that was run: the daemon it starts parses the same
    // arguments again, and its stderr is relayed until the mount is live.
    if std::env::var_os(READY_ENV).is_none() {
        for u in &c.unknown {
            tracing::warn!(option = %u, "unknown mount option ignored");
        }
    }
    mount(c.request, c.foreground)
}

fn init_logging(level: &str) {
    // fuser warns when it finds the mount already gone at exit, which is how every
    // unmount from outside ends: not worth a line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},fuser::session=error"))
    });
    // Colour only for a person at a terminal: a log file or a runtime's journal gets none.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_ansi(colour)
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

/// Validate, then either serve here (foreground, or as the daemon child) or start the
/// daemon and return once its mount is live.
fn mount(req: MountRequest, foreground: bool) -> Result<(), Failure> {
    let cfg = req.validate()?;
    let notify = std::env::var_os(READY_ENV).is_some();
    if !foreground && !notify {
        return spawn_daemon();
    }
    // Taken over before the mount is live: a signal right after must unmount, not kill.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| SetupError::new(layerfuse::SetupErrorKind::Io, format!("signals: {e}")))?;
    let bar = FillBar::default();
    let session = if notify {
        // The waiting parent draws it (its stderr may be a terminal; ours is its pipe).
        Session::start_reporting(cfg, &|p| {
            out!("{PROGRESS_PREFIX}{} {}", p.bytes, u8::from(p.done));
            let _ = std::io::stdout().flush();
        })?
    } else {
        Session::start_reporting(cfg, &|p| bar.show(p))?
    };
    let unmounter = session.unmounter();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "unmounting");
            if let Err(e) = unmounter.unmount(false) {
                tracing::warn!(error = %e, "unmount failed, detaching lazily");
                let _ = unmounter.unmount(true);
            }
        }
    });
    if notify {
        let _ = writeln!(std::io::stdout(), "{READY_LINE}");
        let _ = std::io::stdout().flush();
        DETACHED.store(true, Ordering::Relaxed);
    }
    session.wait()?;
    Ok(())
}

/// Start this same command again as the daemon, relay what it says on stderr, and
/// return once it prints the ready line (or fail when it exits without).
fn spawn_daemon() -> Result<(), Failure> {
    let daemon_error =
        |e: std::io::Error| SetupError::new(layerfuse::SetupErrorKind::Io, format!("daemon: {e}"));
    let exe = std::env::current_exe().map_err(daemon_error)?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's ^C does not reach the daemon.
        .process_group(0)
        .spawn()
        .map_err(daemon_error)?;
    let stderr = child.stderr.take();
    let relay = std::thread::spawn(move || {
        let mut said = false;
        for line in stderr
            .into_iter()
            .flat_map(|s| BufReader::new(s).lines().map_while(Result::ok))
        {
            eprintln!("{line}");
            said = true;
        }
        said
    });
    let bar = FillBar::default();
    let ready = child.stdout.take().is_some_and(|out| {
        BufReader::new(out).lines().map_while(Result::ok).any(|l| {
            match l.strip_prefix(PROGRESS_PREFIX) {
                Some(p) => {
                    let mut f = p.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
                    let (bytes, done) = (f.next().unwrap_or(0), f.next() == Some(1));
                    bar.show(FillProgress { bytes, done });
                    false
                }
                None => l == READY_LINE,
            }
        })
    });
    if ready {
        return Ok(());
    }
    let status = child.wait().map_err(daemon_error)?;
    if relay.join().unwrap_or(false) {
        // The daemon's own line (already relayed) says what went wrong.
        return Err(Failure::Told(Told));
    }
    Err(SetupError::new(
        layerfuse::SetupErrorKind::Io,
        format!("daemon exited before the mount was live ({status})"),
    )
    .into())
}

/// `layerfuse status`: what every live mount's daemon says (or one mount's, refreshed
/// each second with `--watch` on a terminal).
fn status_command(args: StatusArgs) -> Result<(), SetupError> {
    use std::io::IsTerminal;
    let one = |mnt: &std::path::Path| {
        session::status_of(mnt).ok_or_else(|| {
            SetupError::new(
                layerfuse::SetupErrorKind::NotFound,
                format!(
                    "{}: no layerfuse mount here (or not yours to ask about)",
                    mnt.display()
                ),
            )
        })
    };
    let mounts = match &args.mountpoint {
        Some(m) => vec![one(m)?],
        None => session::status(),
    };
    if args.watch {
        let Some(mnt) = &args.mountpoint else {
            return Ok(());
        };
        if !std::io::stdout().is_terminal() {
            return Err(SetupError::invalid(
                "--watch refreshes a terminal: stdout is not one",
            ));
        }
        loop {
            let now = one(mnt)?;
            // Home, clear the screen, draw.
            out!("\x1b[H\x1b[2J{}", cli::render_status(&now));
            let _ = std::io::stdout().flush();
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    match args.format {
        Format::Json => print_json(&mounts),
        Format::Text if mounts.is_empty() => out!("no live layerfuse mounts"),
        Format::Text => {
            let shown: Vec<String> = mounts.iter().map(cli::render_status).collect();
            out!("{}", shown.join("\n\n"));
        }
    }
    Ok(())
}

/// Render the man pages from the clap definitions: `layerfuse.1`, and one
/// `layerfuse-SUB.1` per visible subcommand.
fn man_pages(dir: &std::path::Path) -> Result<(), SetupError> {
    let root = <Cli as clap::CommandFactory>::command();
    let mut pages = vec![("layerfuse.1".to_string(), root.clone())];
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("layerfuse-{}", sub.get_name());
        pages.push((format!("{name}.1"), sub.clone().name(name)));
    }
    for (file, cmd) in pages {
        let path = dir.join(&file);
        let mut roff = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut roff)
            .and_then(|()| std::fs::write(&path, roff))
            .map_err(|e| SetupError::io(&path, "", &e))?;
    }
    Ok(())
}

fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => out!("{s}"),
        Err(e) => eprintln!("layerfuse: {e}"),
    }
}

/// `layerfuse layer …`: hand over to `layerfuse-driver layer …` beside this binary (the
/// driver links this library, so this binary cannot link the driver: docs/design.md).
fn layer_command(args: Vec<OsString>) -> Result<(), SetupError> {
    let exe = std::env::current_exe()
        .map_err(|e| SetupError::io(std::path::Path::new("layerfuse"), "cannot find myself", &e))?;
    let driver = exe.with_file_name("layerfuse-driver");
    if !driver.is_file() {
        return Err(SetupError::new(
            layerfuse::SetupErrorKind::NotFound,
            format!(
                "layerfuse layer needs {} (install the storage driver: scripts/install.sh)",
                driver.display()
            ),
        ));
    }
    let e = std::process::Command::new(&driver)
        .arg("layer")
        .args(args)
        .exec();
    Err(SetupError::io(&driver, "cannot run", &e))
}

fn volume_command(args: VolumeArgs) -> Result<(), SetupError> {
    let store = VolumeStore::new(args.root);
    match args.command {
        VolumeCommand::Create { name } => {
            let v = store.create(name.as_deref())?;
            out!("{}", v.name);
        }
        VolumeCommand::Ls { format } => {
            let vols = store.list();
            match format {
                Format::Json => print_json(&vols),
                Format::Text => {
                    out!("NAME");
                    for v in vols {
                        out!("{}", v.name);
                    }
                }
            }
        }
        VolumeCommand::Inspect { name, format } => {
            let v = store.get(&name)?;
            let users = store.users(&name);
            let size = store.size(&v);
            match format {
                Format::Json => print_json(&serde_json::json!({
                    "name": v.name,
                    "created": v.created,
                    "anonymous": v.anonymous,
                    "path": v.path,
                    "size": size,
                    "mounts": users,
                })),
                Format::Text => {
                    out!("name:    {}", v.name);
                    out!("created: {}", v.created);
                    out!("path:    {}", v.path.display());
                    out!("size:    {size}");
                    for u in users {
                        out!("mounted: {} (pid {})", u.mountpoint, u.pid);
                    }
                }
            }
        }
        VolumeCommand::Rm { name, force } => store.remove(&name, force)?,
        VolumeCommand::Prune => {
            for n in store.prune()? {
                out!("{n}");
            }
        }
    }
    Ok(())
}
