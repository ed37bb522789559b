//! The command line: `layerfuse mount|umount …`, and the fuse-overlayfs style
//! `layerfuse [-f] -o lowerdir=…,upperdir=…,workdir=… [SOURCE] MOUNTPOINT` that
//! container runtimes and `mount.fuse3` use.

use clap::{Args, Parser, Subcommand, ValueEnum};
use layerfuse::SetupError;
use layerfuse::session::{MountRequest, MountStatus, parse_graft, split_lowers};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "layerfuse",
    version,
    about = "A userspace union filesystem with kernel overlayfs semantics",
    long_about = "layerfuse merges read-only lower layers with one writable upper directory \
into one tree, as kernel overlayfs does, from userspace (FUSE).\n\n\
Example:\n  layerfuse mount --lower /img/top:/img/base --upper /c/upper /c/merged\n  \
layerfuse umount /c/merged\n\n\
It also accepts the fuse-overlayfs command line:\n  \
layerfuse -o lowerdir=/img/top:/img/base,upperdir=/c/upper,workdir=/c/work /c/merged"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a union (returns once it is live; the daemon stays in the background).
    Mount(Box<MountArgs>),
    /// Unmount a union; its daemon then exits (a mount whose daemon was killed goes too).
    #[command(alias = "unmount")]
    Umount(UmountArgs),
    /// Manage named volumes (they outlive every mount that uses them).
    Volume(VolumeArgs),
    /// The storage driver's layer store: ls, inspect, rm, gc, verify, import, export.
    /// Runs `layerfuse-driver layer ARGS…` installed beside this program.
    #[command(disable_help_flag = true)]
    Layer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Show every live layerfuse mount: layers, transport, daemon, volumes and binds,
    /// live counters. Example: layerfuse status --format json
    Status(StatusArgs),
    /// Print the completion script for a shell.
    /// Example: layerfuse completions bash > /usr/share/bash-completion/completions/layerfuse
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (layerfuse.1, layerfuse-mount.1, …) into DIR (scripts/install.sh).
    #[command(hide = true)]
    Man { dir: PathBuf },
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this mount. Example: layerfuse status /c/merged
    pub mountpoint: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Refresh every second on a terminal (with MOUNTPOINT). Example: layerfuse status /c/merged --watch
    #[arg(long, requires = "mountpoint")]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct VolumeArgs {
    /// The volume store. Example: --root /srv/layerfuse
    #[arg(long, value_name = "DIR", global = true)]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: VolumeCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Make a volume (a random id without NAME). Example: layerfuse volume create appdata
    Create { name: Option<String> },
    /// List volumes. Example: layerfuse volume ls --format json
    Ls {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show a volume: name, created, host path, size, live mounts using it.
    /// Example: layerfuse volume inspect appdata --format json
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Remove a volume (refused while a live mount uses it, unless --force).
    /// Example: layerfuse volume rm appdata
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Remove every volume no live mount uses. Example: layerfuse volume prune
    Prune,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  layerfuse mount --lower /img/top:/img/base \
--upper /c/upper /c/merged")]
pub struct MountArgs {
    /// Lower layers, topmost first, separated by ':' (write '\:' for a colon inside a
    /// path). Symlinks in these paths are resolved once, at mount.
    /// Example: --lower /layers/app:/layers/base
    #[arg(long, value_name = "DIR:DIR:...")]
    pub lower: String,
    /// Writable upper directory; without it the union is read-only.
    /// Example: --upper /c/upper
    #[arg(long, value_name = "DIR")]
    pub upper: Option<PathBuf>,
    /// layerfuse's scratch directory, on the same filesystem as the upper; one mount
    /// at a time. Default: UPPER.layerfuse-work beside the upper, made at the first
    /// mount and reused. Example: --work /c/work
    #[arg(long, value_name = "DIR", requires = "upper")]
    pub work: Option<PathBuf>,
    /// Renaming a directory that comes from a lower layer: on (default) records a
    /// redirect as the kernel's redirect_dir=on does; off fails with EXDEV.
    /// Example: --redirect-dir off
    #[arg(long, value_enum, default_value = "on")]
    pub redirect_dir: OnOff,
    /// A metadata-only change (chmod, chown, touch, xattrs, rename, link) of a lower
    /// file copies its inode but not its data, which is fetched from the lower at the
    /// first data write (the kernel's metacopy=on format; off, the default as in the
    /// kernel, copies the data at once). Example: --metacopy on
    #[arg(long, value_enum, default_value = "off")]
    pub metacopy: OnOff,
    /// Write markers as user.overlay.* xattrs (the kernel's userxattr), as an
    /// unprivileged mount must. Example: --userxattr
    #[arg(long)]
    pub userxattr: bool,
    /// Skip fsync (copy-ups and callers' fsync are not made durable).
    /// Example: --volatile
    #[arg(long)]
    pub volatile: bool,
    /// Mount read-only even with an upper. Example: --read-only
    #[arg(long)]
    pub read_only: bool,
    /// How requests travel between the kernel and the daemon: uring
    /// (FUSE-over-io_uring, per-CPU queues; needs root and the kernel's
    /// enable_uring), dev (/dev/fuse), splice (/dev/fuse served by layerfuse's own
    /// threads, file data of READ replies spliced, not copied; Linux, root), or auto
    /// (uring where the kernel offers it, else dev).
    /// Default: $LAYERFUSE_TRANSPORT, else auto. Example: --transport uring
    #[arg(long, value_name = "auto|uring|dev|splice")]
    pub transport: Option<layerfuse::session::Transport>,
    /// Show changes made directly in the lower layers (new, changed, removed files
    /// and directories) within a second: one inotify watch per lower directory
    /// (Linux). Names the upper layer holds or whites out keep showing the upper.
    /// Example: --watch-lowers
    #[arg(long)]
    pub watch_lowers: bool,
    /// Show stored user ids HOST..HOST+COUNT as CONTAINER..CONTAINER+COUNT (and store
    /// the reverse); several triples may follow each other.
    /// Example: --uidmapping 0:100000:65536
    #[arg(long, value_name = "CONTAINER:HOST:COUNT")]
    pub uidmapping: Option<String>,
    /// The same for group ids. Example: --gidmapping 0:100000:65536
    #[arg(long, value_name = "CONTAINER:HOST:COUNT")]
    pub gidmapping: Option<String>,
    /// Join a named volume at a directory of the union (made if missing; `:/target`
    /// makes a fresh anonymous one). A new empty volume is first filled with what the
    /// layers hold there, unless `nocopy`. Repeatable.
    /// Example: --volume appdata:/var/lib/app  or  --volume :/cache:nocopy
    #[arg(long = "volume", value_name = "NAME:/TARGET[:ro][,nocopy]")]
    pub volumes: Vec<String>,
    /// Join a host directory or single file at a path of the union. Repeatable.
    /// Example: --bind /etc/resolv.conf:/etc/resolv.conf:ro
    #[arg(long = "bind", value_name = "/HOST/PATH:/TARGET[:ro]")]
    pub binds: Vec<String>,
    /// The volume store (default /var/lib/layerfuse for root, else
    /// $XDG_DATA_HOME/layerfuse). Example: --root /srv/layerfuse
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Mount options, comma separated: kernel flags (nodev, nosuid, noexec, noatime,
    /// sync, dirsync, ro), and fsname=NAME / subtype=NAME, the source and the type
    /// (fuse.NAME) the mount shows in /proc/mounts (default layerfuse, fuse.layerfuse).
    /// Example: -o nodev,noexec,fsname=app1
    #[arg(short = 'o', value_name = "FLAGS")]
    pub options: Vec<String>,
    /// Stay in the foreground and log to stderr (SIGTERM/SIGINT unmount and exit).
    /// Example: -f
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    /// Example: --log-level debug
    #[arg(long, default_value = "warn")]
    pub log_level: String,
    /// Where to mount the union. Example: /c/merged
    pub mountpoint: PathBuf,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    /// The mount point to unmount. Example: layerfuse umount /c/merged
    pub mountpoint: PathBuf,
    /// Detach even if busy (the union goes away when its last user leaves).
    #[arg(short = 'l', long)]
    pub lazy: bool,
}

impl MountArgs {
    pub fn request(&self) -> Result<MountRequest, SetupError> {
        let mut grafts = Vec::new();
        for v in &self.volumes {
            grafts.push(parse_graft(v, true)?);
        }
        for b in &self.binds {
            grafts.push(parse_graft(b, false)?);
        }
        Ok(MountRequest {
            lowers: split_lowers(&self.lower),
            upper: self.upper.clone(),
            work: self.work.clone(),
            mountpoint: self.mountpoint.clone(),
            redirect_dir: self.redirect_dir == OnOff::On,
            metacopy: self.metacopy == OnOff::On,
            userxattr: self.userxattr,
            volatile: self.volatile,
            read_only: self.read_only,
            transport: self.transport,
            watch_lowers: self.watch_lowers,
            flags: self
                .options
                .iter()
                .flat_map(|o| o.split(','))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            uid_mapping: self.uidmapping.clone(),
            gid_mapping: self.gidmapping.clone(),
            squash_uid: None,
            squash_gid: None,
            grafts,
            store_root: self.root.clone(),
            override_stat: None,
        })
    }
}

/// One mount's status for a person: a heading line, then a few indented lines.
pub fn render_status(s: &MountStatus) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}  ({} from {}, pid {}, up {}, transport {}{})",
        s.mountpoint.display(),
        s.fstype,
        s.fsname,
        s.pid,
        duration(s.uptime_secs),
        s.transport,
        if s.read_only { ", read-only" } else { "" }
    );
    const TOP: usize = 3;
    let mut lowers: Vec<String> = s
        .lowers
        .iter()
        .take(TOP)
        .map(|l| l.display().to_string())
        .collect();
    if s.lowers.len() > TOP {
        lowers.push(format!("… {} more", s.lowers.len() - TOP));
    }
    let _ = writeln!(o, "  lowers    {}: {}", s.lowers.len(), lowers.join(", "));
    if let Some(u) = &s.upper {
        let work = s.work.as_ref().map(|w| w.display().to_string());
        let _ = writeln!(
            o,
            "  upper     {}  (work {})",
            u.display(),
            work.unwrap_or_default()
        );
    }
    for g in &s.grafts {
        let what = if g.kind == "volume" {
            format!("volume {}", g.name)
        } else {
            format!("bind {}", g.source.display())
        };
        let _ = writeln!(
            o,
            "  {:<9} {what} at {}{}",
            g.kind,
            g.target.display(),
            if g.read_only { " (ro)" } else { "" }
        );
    }
    let c = &s.counters;
    let mut kinds: Vec<(&String, &u64)> = c.requests.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    let kinds: Vec<String> = kinds
        .iter()
        .take(6)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(o, "  requests  {} ({})", c.requests_total, kinds.join(", "));
    let errors: Vec<String> = c
        .errors_by_errno
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "  errors    {}{}",
        c.errors,
        if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(", "))
        }
    );
    let _ = writeln!(
        o,
        "  copy-ups  {} ({} copied), whiteouts {}",
        c.copy_ups,
        bytes(c.bytes_copied),
        c.whiteouts
    );
    let _ = write!(
        o,
        "  held      {} open files, {} nodes, daemon RSS {}",
        s.open_files,
        s.nodes_held,
        bytes(s.rss_bytes)
    );
    o
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A mount asked for in fuse-overlayfs's words.
#[derive(Debug)]
pub struct CompatMount {
    pub request: MountRequest,
    pub foreground: bool,
    pub debug: bool,
    /// Options not understood (warned about, never fatal).
    pub unknown: Vec<String>,
}

/// Whether argv is in fuse-overlayfs form (no subcommand).
pub fn is_compat(args: &[OsString]) -> bool {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return false;
    };
    if matches!(first, "help" | "--help" | "-h" | "--version" | "-V") {
        return false;
    }
    // Any subcommand clap knows (the list is the definitions themselves).
    !<Cli as clap::CommandFactory>::command()
        .get_subcommands()
        .any(|c| c.get_name() == first || c.get_all_aliases().any(|a| a == first))
}

/// Parse `[-f] [-d] -o OPTS [-o OPTS …] [SOURCE] MOUNTPOINT` (options may come anywhere).
pub fn parse_compat(args: &[OsString]) -> Result<CompatMount, SetupError> {
    let mut opts: Vec<String> = Vec::new();
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut foreground = false;
    let mut debug = false;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-f" => foreground = true,
            "-d" | "--debug" => {
                debug = true;
                foreground = true;
            }
            "-o" => {
                let v = it
                    .next()
                    .ok_or_else(|| SetupError::invalid("-o needs a value"))?;
                opts.push(utf8_option(v)?.to_owned());
            }
            o if o.starts_with("-o") => opts.push(utf8_option(a)?[2..].to_owned()),
            o if o.starts_with('-') && o.len() > 1 => {}
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let mountpoint = positional
        .pop()
        .ok_or_else(|| SetupError::invalid("no mount point given"))?;
    let mut req = MountRequest {
        mountpoint,
        redirect_dir: true,
        ..Default::default()
    };
    // mount.fuse3 passes the source it was given: the mount shows it, as mount(8) promised
    // (an explicit fsname= wins).
    if let Some(source) = positional.pop()
        && let Some(source) = source.to_str()
        && !source.is_empty()
        && !source.contains([',', ' ', '\t', '\n'])
    {
        req.flags.push(format!("fsname={source}"));
    }
    let mut unknown = Vec::new();
    for item in opts.iter().flat_map(|o| split_options(o)) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item.as_str(), None),
        };
        match (key, value) {
            ("lowerdir", Some(v)) => req.lowers = split_lowers(v),
            ("upperdir", Some(v)) => req.upper = Some(unescape_dir(v)),
            ("workdir", Some(v)) => req.work = Some(unescape_dir(v)),
            ("volatile", None) | ("fsync", Some("0")) => req.volatile = true,
            ("redirect_dir", Some(v)) => req.redirect_dir = v != "off" && v != "nofollow",
            ("metacopy", Some("on")) => req.metacopy = true,
            ("metacopy", Some("off")) => req.metacopy = false,
            ("userxattr", None) => req.userxattr = true,
            ("xattr_permissions", Some("0")) => req.override_stat = None,
            ("xattr_permissions", Some("1")) => {
                req.override_stat = Some("user.fuseoverlayfs.override_stat".into())
            }
            ("xattr_permissions", Some("2")) => {
                req.override_stat = Some("user.containers.override_stat".into())
            }
            ("uidmapping", Some(v)) => req.uid_mapping = Some(v.to_owned()),
            ("gidmapping", Some(v)) => req.gid_mapping = Some(v.to_owned()),
            ("squash_to_root", None) => {
                req.squash_uid = Some(0);
                req.squash_gid = Some(0);
            }
            ("squash_to_uid", Some(v)) => req.squash_uid = Some(id(key, v)?),
            ("squash_to_gid", Some(v)) => req.squash_gid = Some(id(key, v)?),
            ("fsname" | "subtype", Some(_)) => req.flags.push(item.clone()),
            ("ro", None) => req.read_only = true,
            ("watch_lowers", None) => req.watch_lowers = true,
            ("transport", Some(v)) => req.transport = Some(v.parse().map_err(SetupError::invalid)?),
            ("rw", None) | ("dev", None) | ("suid", None) | ("exec", None) | ("atime", None) => {}
            ("nodev" | "nosuid" | "noexec" | "noatime" | "sync" | "dirsync", None) => {
                req.flags.push(key.to_owned())
            }
            // Accepted and ignored: tuning knobs of other implementations.
            ("threaded" | "writeback" | "fsync" | "context" | "index", _) => {}
            ("default_permissions" | "allow_other" | "allow_root" | "suid_dev", _) => {}
            _ => unknown.push(item.clone()),
        }
    }
    Ok(CompatMount {
        request: req,
        foreground,
        debug,
        unknown,
    })
}

/// An option string as text: a path in it that is not UTF-8 would otherwise become another
/// path (its bytes replaced), so it is refused, as `layerfuse mount` refuses it.
fn utf8_option(o: &std::ffi::OsStr) -> Result<&str, SetupError> {
    o.to_str().ok_or_else(|| {
        SetupError::invalid(format!(
            "-o {}: not valid UTF-8 (paths in options must be UTF-8)",
            o.to_string_lossy()
        ))
    })
}

/// A numeric id option's value.
fn id(key: &str, v: &str) -> Result<u32, SetupError> {
    v.parse()
        .map_err(|_| SetupError::invalid(format!("bad {key}={v}")))
}

/// Split a comma-separated option string; a value in double quotes (SELinux
/// contexts) may hold commas, and `\,` is a comma inside a value (the backslash stays
/// for the value's own unescaping, as the kernel's overlay option parser does). Empty
/// items are dropped.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '\\' => {
                cur.push(c);
                cur.extend(chars.next());
            }
            ',' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A directory option's value without its escapes (`\X` is X), as the kernel reads
/// `upperdir=` and `workdir=`.
fn unescape_dir(v: &str) -> PathBuf {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn compat_argv_of_podman_parses() {
        let a = argv(&[
            "fuse-overlayfs",
            "-o",
            "lowerdir=/l/A:/l/B,upperdir=/u,workdir=/w,",
            "-o",
            ",,volatile",
            "/merged",
        ]);
        assert!(is_compat(&a));
        let c = parse_compat(&a).unwrap();
        assert_eq!(
            c.request.lowers,
            vec![PathBuf::from("/l/A"), PathBuf::from("/l/B")]
        );
        assert_eq!(c.request.upper, Some(PathBuf::from("/u")));
        assert_eq!(c.request.work, Some(PathBuf::from("/w")));
        assert!(c.request.volatile);
        assert_eq!(c.request.mountpoint, PathBuf::from("/merged"));
        assert!(c.unknown.is_empty());
    }

    #[test]
    fn compat_source_comes_before_mountpoint_and_unknown_options_are_kept() {
        let a = argv(&[
            "layerfuse",
            "overlay",
            "/mnt",
            "-o",
            "lowerdir=/a,frobnicate,dev,suid",
        ]);
        let c = parse_compat(&a).unwrap();
        assert_eq!(c.request.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(c.unknown, vec!["frobnicate".to_string()]);
        // mount.fuse3's source names the mount; an explicit fsname= comes later and wins.
        assert_eq!(c.request.flags, vec!["fsname=overlay".to_string()]);
    }

    #[test]
    fn id_mappings_and_squash_are_understood() {
        let a = argv(&[
            "layerfuse",
            "-o",
            "lowerdir=/a,uidmapping=:0:100000:65536,gidmapping=0:100000:65536,squash_to_gid=5",
            "/m",
        ]);
        let c = parse_compat(&a).unwrap();
        assert!(c.unknown.is_empty());
        assert_eq!(c.request.uid_mapping.as_deref(), Some(":0:100000:65536"));
        assert_eq!(c.request.gid_mapping.as_deref(), Some("0:100000:65536"));
        assert_eq!(c.request.squash_gid, Some(5));
        let bad = argv(&["layerfuse", "-o", "lowerdir=/a,squash_to_uid=x", "/m"]);
        assert!(parse_compat(&bad).is_err());
    }

    #[test]
    fn option_strings_that_are_not_utf8_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        for a in [
            vec![b"-o".to_vec(), b"lowerdir=/l/\xffa".to_vec()],
            vec![b"-olowerdir=/l/\xffa".to_vec()],
        ] {
            let mut argv = vec![OsString::from("layerfuse")];
            argv.extend(a.into_iter().map(OsString::from_vec));
            argv.push("/m".into());
            let e = parse_compat(&argv).unwrap_err().to_string();
            assert!(e.contains("not valid UTF-8"), "{e}");
        }
    }

    #[test]
    fn escaped_commas_stay_inside_their_value() {
        let a = argv(&[
            "layerfuse",
            "-o",
            "lowerdir=/l/a\\,b:/l/c\\:d,upperdir=/u\\,1,workdir=/w\\\\x,ro",
            "/m",
        ]);
        let c = parse_compat(&a).unwrap();
        assert_eq!(
            c.request.lowers,
            vec![PathBuf::from("/l/a,b"), PathBuf::from("/l/c:d")]
        );
        assert_eq!(c.request.upper, Some(PathBuf::from("/u,1")));
        assert_eq!(c.request.work, Some(PathBuf::from("/w\\x")));
        assert!(c.request.read_only && c.unknown.is_empty());
    }

    #[test]
    fn quoted_context_keeps_its_commas() {
        assert_eq!(
            split_options("context=\"a,b\",ro"),
            vec!["context=\"a,b\"".to_string(), "ro".to_string()]
        );
    }
}
