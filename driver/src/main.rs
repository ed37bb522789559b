//! `layerfuse-driver`: the storage driver's front ends as one program — the Docker
//! plugin (`docker`) and the layer store for humans (`layer ls|inspect|rm|gc|import|export`).
//! Errors end as one line on stderr and a non-zero exit.

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use layerfuse_driver::docker::{Plugin, http};
use layerfuse_driver::store::{LayerId, LayerMeta, Store};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const DEFAULT_ROOT: &str = "/var/lib/layerfuse";
const DEFAULT_SOCKET: &str = "/run/docker/plugins/layerfuse.sock";

/// layerfuse as a container runtime's storage driver.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Docker's graphdriver plugin protocol (dockerd --experimental --storage-driver layerfuse).
    Docker {
        /// The store's root (layers in ROOT/store, volumes in ROOT/volumes).
        #[arg(long, default_value = DEFAULT_ROOT)]
        root: PathBuf,
        /// The plugin socket dockerd finds by name.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Socket mode 0660 instead of 0600 (for a group that may drive dockerd's storage).
        #[arg(long)]
        group_access: bool,
        /// Log level (error, warn, info, debug, trace).
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// Inspect and manage the layer store.
    Layer {
        #[arg(long, global = true, default_value = DEFAULT_ROOT)]
        root: PathBuf,
        #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(subcommand)]
        action: LayerAction,
    },
    /// Serve containerd's snapshotter API (a proxy plugin) on a unix socket.
    Containerd(layerfuse_driver::containerd::ContainerdArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum LayerAction {
    /// List layers, with the store's totals.
    Ls,
    /// Show one layer.
    Inspect { id: String },
    /// Remove layers (not while they have children).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove objects no layer holds and leftovers of interrupted changes.
    Gc,
    /// Check that every filled image layer (or those named) still gives its diffID.
    Verify { ids: Vec<String> },
    /// Import a layer from an uncompressed tar (a file, or - for stdin).
    Import {
        id: String,
        file: PathBuf,
        #[arg(long)]
        parent: Option<String>,
    },
    /// Write a layer's diff as a tar (to a file, or stdout).
    Export { id: String, file: Option<PathBuf> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Docker {
            root,
            socket,
            group_access,
            log,
        } => docker(&root, &socket, group_access, &log),
        Command::Layer {
            root,
            format,
            action,
        } => layer(&root, format, action),
        Command::Containerd(args) => layerfuse_driver::containerd::run(args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layerfuse-driver: {e}");
            ExitCode::FAILURE
        }
    }
}

fn docker(root: &Path, socket: &Path, group: bool, log: &str) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log)
                .map_err(|e| format!("bad --log {log:?}: {e}"))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let plugin = Arc::new(Plugin::open(root).map_err(|e| e.to_string())?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let served: Result<(), String> = rt.block_on(async {
        let listener =
            http::bind(socket, group).map_err(|e| format!("{}: {e}", socket.display()))?;
        tracing::info!(socket = %socket.display(), root = %root.display(), "serving");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            r = http::serve(listener, plugin.clone()) => r.map_err(|e| e.to_string()),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    });
    tracing::info!("stopping: unmounting");
    plugin.cleanup();
    let _ = std::fs::remove_file(socket);
    served
}

fn id(s: &str) -> Result<LayerId, String> {
    LayerId::parse(s).map_err(|e| e.to_string())
}

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn bar(total: Option<u64>, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template(
        "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    b.set_message(what.to_string());
    // Shown only once the work takes longer than a second.
    b.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
    Some(b)
}

fn print_layers(layers: &[LayerMeta]) {
    println!(
        "{:<24} {:<9} {:<24} {:>10} {:<20} DIFF ID",
        "ID", "KIND", "PARENT", "SIZE", "CREATED"
    );
    for m in layers {
        let short = |s: &str| s.chars().take(24).collect::<String>();
        println!(
            "{:<24} {:<9} {:<24} {:>10} {:<20} {}",
            short(m.id.as_str()),
            format!("{:?}", m.kind).to_lowercase(),
            m.parent
                .as_ref()
                .map(|p| short(p.as_str()))
                .unwrap_or("-".into()),
            human(m.size),
            m.created,
            m.diff_id.as_deref().unwrap_or("-"),
        );
    }
}

fn layer(root: &Path, format: Format, action: LayerAction) -> Result<(), String> {
    let store = Store::open(root).map_err(|e| e.to_string())?;
    let json = |v: serde_json::Value| println!("{v:#}");
    match action {
        LayerAction::Ls => {
            let layers = store.list().map_err(|e| e.to_string())?;
            let usage = store.usage().map_err(|e| e.to_string())?;
            if format == Format::Json {
                json(serde_json::json!({"layers": layers, "usage": usage}));
            } else {
                print_layers(&layers);
                println!(
                    "{} layers, {} objects ({}), {} deduplicated",
                    usage.layers,
                    usage.objects,
                    human(usage.object_bytes),
                    human(usage.deduplicated_bytes)
                );
            }
        }
        LayerAction::Inspect { id: i } => {
            let m = store.get(&id(&i)?).map_err(|e| e.to_string())?;
            if format == Format::Json {
                json(serde_json::to_value(&m).map_err(|e| e.to_string())?);
            } else {
                print_layers(std::slice::from_ref(&m));
                let lowers = store.lower_dirs(&m.id).map_err(|e| e.to_string())?;
                println!("content: {}", store.content_dir(&m).display());
                println!("chain: {} layers below", lowers.len());
            }
        }
        LayerAction::Rm { ids } => {
            for i in ids {
                store.remove(&id(&i)?).map_err(|e| e.to_string())?;
                if format == Format::Table {
                    println!("{i}");
                }
            }
        }
        LayerAction::Gc => {
            let r = store.gc().map_err(|e| e.to_string())?;
            if format == Format::Json {
                json(serde_json::to_value(&r).map_err(|e| e.to_string())?);
            } else {
                println!(
                    "removed {} objects ({}), {} leftovers",
                    r.objects_removed,
                    human(r.bytes_freed),
                    r.leftovers_removed
                );
            }
        }
        LayerAction::Verify { ids } => {
            let layers = if ids.is_empty() {
                store.list().map_err(|e| e.to_string())?
            } else {
                ids.iter()
                    .map(|i| store.get(&id(i)?).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let mut bad = 0;
            for m in &layers {
                let Some(want) = &m.diff_id else { continue };
                let mut h = HashingWriter(sha2::Sha256::default());
                let got = match store.diff(&m.id, None, &mut h) {
                    Ok(_) => format!("sha256:{}", hex(&sha2::Digest::finalize(h.0))),
                    Err(e) => e.to_string(),
                };
                if &got != want {
                    bad += 1;
                    println!("{}: BAD: has {want}, gives {got}", m.id);
                } else if format == Format::Table {
                    println!("{}: ok", m.id);
                }
            }
            if bad > 0 {
                return Err(format!("{bad} layers do not give their diffID"));
            }
        }
        LayerAction::Import {
            id: i,
            file,
            parent,
        } => {
            let parent = parent.as_deref().map(id).transpose()?;
            let (input, total): (Box<dyn Read>, Option<u64>) = if file.as_os_str() == "-" {
                (Box::new(std::io::stdin().lock()), None)
            } else {
                let f =
                    std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let len = f.metadata().ok().map(|m| m.len());
                (Box::new(f), len)
            };
            let pb = bar(total, "importing");
            let progress = |n: u64| {
                if let Some(b) = &pb {
                    b.set_position(n);
                }
            };
            let s = store
                .import(&id(&i)?, parent.as_ref(), input, Some(&progress))
                .map_err(|e| e.to_string())?;
            if let Some(b) = pb {
                b.finish_and_clear();
            }
            if format == Format::Json {
                json(serde_json::to_value(&s).map_err(|e| e.to_string())?);
            } else {
                println!(
                    "{i} {} ({} in {} entries)",
                    s.diff_id,
                    human(s.size),
                    s.entries
                );
            }
        }
        LayerAction::Export { id: i, file } => {
            let lid = id(&i)?;
            let m = store.get(&lid).map_err(|e| e.to_string())?;
            let out: Box<dyn Write> = match &file {
                Some(f) => {
                    Box::new(std::fs::File::create(f).map_err(|e| format!("{}: {e}", f.display()))?)
                }
                None => {
                    if std::io::stdout().is_terminal() {
                        return Err("refusing to write a tar to a terminal: give a file".into());
                    }
                    Box::new(std::io::stdout().lock())
                }
            };
            let pb = bar(Some(m.tar_size).filter(|&n| n > 0), "exporting");
            let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
            let n = match &pb {
                Some(b) => store.diff(&lid, None, &mut b.wrap_write(&mut out)),
                None => store.diff(&lid, None, &mut out),
            }
            .map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            if let Some(b) = pb {
                b.finish_and_clear();
            }
            if file.is_some() && format == Format::Table {
                println!("{i}: {}", human(n));
            }
        }
    }
    Ok(())
}

/// A `Write` that only hashes.
struct HashingWriter(sha2::Sha256);

impl Write for HashingWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
