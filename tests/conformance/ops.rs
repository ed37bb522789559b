//! Filesystem operations: a seeded generator, an executor that turns each op into raw syscalls
//! and a deterministic outcome string, and rendering to Rust source for reproducers.

use super::layers::{Layer, Rng, random_rel_path};
use super::sys::{self, errno_name};
use std::collections::HashMap;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};

/// Bytes to write: literal text, or one byte repeated (to cross page and buffer boundaries).
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Lit(String),
    Rep(u8, usize),
}

impl Data {
    pub fn lit(s: &str) -> Data {
        Data::Lit(s.to_string())
    }
    pub fn rep(b: u8, n: usize) -> Data {
        Data::Rep(b, n)
    }
    fn bytes(&self) -> Vec<u8> {
        match self {
            Data::Lit(s) => s.as_bytes().to_vec(),
            Data::Rep(b, n) => vec![*b; *n],
        }
    }
    fn render(&self) -> String {
        match self {
            Data::Lit(s) => format!("Data::lit({s:?})"),
            Data::Rep(b, n) => format!("Data::rep(b'{}', {n})", *b as char),
        }
    }
}

/// Number of descriptor slots the `Fd*` ops use; every open slot is closed at the end.
pub const SLOTS: usize = 2;

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// open(flags | O_NONBLOCK), then optionally pwrite at an offset, then optionally read the
    /// whole file back, then fstat, then close.
    Open {
        path: String,
        flags: i32,
        mode: u32,
        write: Option<(i64, Data)>,
        read: bool,
    },
    Truncate {
        path: String,
        size: i64,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    /// A fifo, or (whiteout = true) a char device 0/0, which a union must refuse.
    Mknod {
        path: String,
        whiteout: bool,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Readlink {
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Chown {
        path: String,
        uid: u32,
        gid: u32,
    },
    /// `None` sets the time to now (then only "not a magic time" is compared).
    Utimens {
        path: String,
        mtime: Option<i64>,
    },
    SetXattr {
        path: String,
        name: String,
        value: String,
        flags: i32,
    },
    GetXattr {
        path: String,
        name: String,
    },
    ListXattr {
        path: String,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Readdir {
        path: String,
    },
    Stat {
        path: String,
    },
    Statfs,
    FdOpen {
        slot: usize,
        path: String,
        flags: i32,
    },
    FdRead {
        slot: usize,
    },
    FdWrite {
        slot: usize,
        offset: i64,
        data: Data,
    },
    FdStat {
        slot: usize,
    },
    FdClose {
        slot: usize,
    },
    /// Unmount; the upper becomes the topmost lower and a fresh upper and work dir are
    /// mounted over it, as a runtime does when it commits a container (run by the runner).
    Commit,
}

const OPEN_FLAG_NAMES: &[(i32, &str)] = &[
    (libc::O_CREAT, "O_CREAT"),
    (libc::O_EXCL, "O_EXCL"),
    (libc::O_TRUNC, "O_TRUNC"),
    (libc::O_APPEND, "O_APPEND"),
    (libc::O_DIRECTORY, "O_DIRECTORY"),
    (libc::O_NOFOLLOW, "O_NOFOLLOW"),
];

fn render_open_flags(f: i32) -> String {
    let mut parts = vec![match f & libc::O_ACCMODE {
        libc::O_WRONLY => "libc::O_WRONLY".to_string(),
        libc::O_RDWR => "libc::O_RDWR".to_string(),
        _ => "libc::O_RDONLY".to_string(),
    }];
    for (bit, name) in OPEN_FLAG_NAMES {
        if f & bit != 0 {
            parts.push(format!("libc::{name}"));
        }
    }
    parts.join(" | ")
}

fn render_rename_flags(f: u32) -> &'static str {
    match f {
        0 => "0",
        libc::RENAME_NOREPLACE => "libc::RENAME_NOREPLACE",
        libc::RENAME_EXCHANGE => "libc::RENAME_EXCHANGE",
        libc::RENAME_WHITEOUT => "libc::RENAME_WHITEOUT",
        _ => "/* unknown */ 0",
    }
}

fn render_xattr_flags(f: i32) -> &'static str {
    match f {
        libc::XATTR_CREATE => "libc::XATTR_CREATE",
        libc::XATTR_REPLACE => "libc::XATTR_REPLACE",
        _ => "0",
    }
}

impl Op {
    pub fn render(&self) -> String {
        match self {
            Op::Open {
                path,
                flags,
                mode,
                write,
                read,
            } => {
                let w = match write {
                    None => "None".to_string(),
                    Some((off, d)) => format!("Some(({off}, {}))", d.render()),
                };
                format!(
                    "Op::Open {{ path: {path:?}.into(), flags: {}, mode: 0o{mode:o}, write: {w}, read: {read} }}",
                    render_open_flags(*flags)
                )
            }
            Op::Truncate { path, size } => {
                format!("Op::Truncate {{ path: {path:?}.into(), size: {size} }}")
            }
            Op::Mkdir { path, mode } => {
                format!("Op::Mkdir {{ path: {path:?}.into(), mode: 0o{mode:o} }}")
            }
            Op::Mknod { path, whiteout } => {
                format!("Op::Mknod {{ path: {path:?}.into(), whiteout: {whiteout} }}")
            }
            Op::Rmdir { path } => format!("Op::Rmdir {{ path: {path:?}.into() }}"),
            Op::Unlink { path } => format!("Op::Unlink {{ path: {path:?}.into() }}"),
            Op::Rename { from, to, flags } => format!(
                "Op::Rename {{ from: {from:?}.into(), to: {to:?}.into(), flags: {} }}",
                render_rename_flags(*flags)
            ),
            Op::Link { from, to } => {
                format!("Op::Link {{ from: {from:?}.into(), to: {to:?}.into() }}")
            }
            Op::Symlink { target, path } => {
                format!("Op::Symlink {{ target: {target:?}.into(), path: {path:?}.into() }}")
            }
            Op::Readlink { path } => format!("Op::Readlink {{ path: {path:?}.into() }}"),
            Op::Chmod { path, mode } => {
                format!("Op::Chmod {{ path: {path:?}.into(), mode: 0o{mode:o} }}")
            }
            Op::Chown { path, uid, gid } => {
                format!("Op::Chown {{ path: {path:?}.into(), uid: {uid}, gid: {gid} }}")
            }
            Op::Utimens { path, mtime } => {
                format!("Op::Utimens {{ path: {path:?}.into(), mtime: {mtime:?} }}")
            }
            Op::SetXattr {
                path,
                name,
                value,
                flags,
            } => format!(
                "Op::SetXattr {{ path: {path:?}.into(), name: {name:?}.into(), value: {value:?}.into(), flags: {} }}",
                render_xattr_flags(*flags)
            ),
            Op::GetXattr { path, name } => {
                format!("Op::GetXattr {{ path: {path:?}.into(), name: {name:?}.into() }}")
            }
            Op::ListXattr { path } => format!("Op::ListXattr {{ path: {path:?}.into() }}"),
            Op::RemoveXattr { path, name } => {
                format!("Op::RemoveXattr {{ path: {path:?}.into(), name: {name:?}.into() }}")
            }
            Op::Readdir { path } => format!("Op::Readdir {{ path: {path:?}.into() }}"),
            Op::Stat { path } => format!("Op::Stat {{ path: {path:?}.into() }}"),
            Op::Statfs => "Op::Statfs".to_string(),
            Op::Commit => "Op::Commit".to_string(),
            Op::FdOpen { slot, path, flags } => format!(
                "Op::FdOpen {{ slot: {slot}, path: {path:?}.into(), flags: {} }}",
                render_open_flags(*flags)
            ),
            Op::FdRead { slot } => format!("Op::FdRead {{ slot: {slot} }}"),
            Op::FdWrite { slot, offset, data } => format!(
                "Op::FdWrite {{ slot: {slot}, offset: {offset}, data: {} }}",
                data.render()
            ),
            Op::FdStat { slot } => format!("Op::FdStat {{ slot: {slot} }}"),
            Op::FdClose { slot } => format!("Op::FdClose {{ slot: {slot} }}"),
        }
    }

    /// Simpler variants of this op, tried by the shrinker once no op can be removed.
    pub fn simpler(&self) -> Vec<Op> {
        let mut out = Vec::new();
        match self {
            Op::Open {
                path,
                flags,
                mode,
                write,
                read,
            } => {
                for (bit, _) in OPEN_FLAG_NAMES {
                    if flags & bit != 0 {
                        out.push(Op::Open {
                            path: path.clone(),
                            flags: flags & !bit,
                            mode: *mode,
                            write: write.clone(),
                            read: *read,
                        });
                    }
                }
                if *read {
                    out.push(Op::Open {
                        path: path.clone(),
                        flags: *flags,
                        mode: *mode,
                        write: write.clone(),
                        read: false,
                    });
                }
                if let Some((off, d)) = write {
                    out.push(Op::Open {
                        path: path.clone(),
                        flags: *flags,
                        mode: *mode,
                        write: None,
                        read: *read,
                    });
                    if *off != 0 || *d != Data::lit("x") {
                        out.push(Op::Open {
                            path: path.clone(),
                            flags: *flags,
                            mode: *mode,
                            write: Some((0, Data::lit("x"))),
                            read: *read,
                        });
                    }
                }
                if *mode != 0o644 {
                    out.push(Op::Open {
                        path: path.clone(),
                        flags: *flags,
                        mode: 0o644,
                        write: write.clone(),
                        read: *read,
                    });
                }
            }
            Op::FdWrite { slot, offset, data } if *offset != 0 || *data != Data::lit("x") => {
                out.push(Op::FdWrite {
                    slot: *slot,
                    offset: 0,
                    data: Data::lit("x"),
                });
            }
            Op::Rename { from, to, flags } if *flags != 0 => {
                out.push(Op::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    flags: 0,
                });
            }
            Op::SetXattr {
                path,
                name,
                value,
                flags,
            } if *flags != 0 || value != "v" => {
                out.push(Op::SetXattr {
                    path: path.clone(),
                    name: name.clone(),
                    value: "v".into(),
                    flags: 0,
                });
            }
            Op::Truncate { path, size } if *size != 0 => {
                out.push(Op::Truncate {
                    path: path.clone(),
                    size: 0,
                });
            }
            _ => {}
        }
        out
    }
}

const XATTR_NAMES: &[&str] = &[
    "user.x",
    "user.y",
    "trusted.t",
    "trusted.overlay.opaque",
    "trusted.overlay.z",
];

fn random_open_flags(rng: &mut Rng) -> i32 {
    let mut f = match rng.below(10) {
        0..=3 => libc::O_RDONLY,
        4..=6 => libc::O_WRONLY,
        _ => libc::O_RDWR,
    };
    if rng.chance(40) {
        f |= libc::O_CREAT;
        if rng.chance(35) {
            f |= libc::O_EXCL;
        }
    }
    if rng.chance(20) {
        f |= libc::O_TRUNC;
    }
    if rng.chance(15) {
        f |= libc::O_APPEND;
    }
    if rng.chance(3) {
        f |= libc::O_DIRECTORY;
    }
    if rng.chance(5) {
        f |= libc::O_NOFOLLOW;
    }
    f
}

fn random_data(rng: &mut Rng) -> Data {
    if rng.chance(10) {
        Data::Rep(b'A' + rng.below(26) as u8, 1 + rng.below(200_000))
    } else {
        Data::Lit(format!("w{}", rng.below(100)))
    }
}

/// Paths the generator draws from: every name the layers mention, plus names ops created.
pub struct PathPool {
    pub known: Vec<String>,
    /// Prefixes ops are confined to (the concurrency test gives each thread its own subtree).
    pub prefixes: Vec<String>,
}

impl PathPool {
    pub fn from_layers(layers: &[&Layer]) -> PathPool {
        let mut known: Vec<String> = layers.iter().flat_map(|l| l.paths()).collect();
        known.sort();
        known.dedup();
        PathPool {
            known,
            prefixes: vec![String::new()],
        }
    }

    fn pick(&mut self, rng: &mut Rng) -> String {
        let prefix = rng.pick(&self.prefixes);
        let roll = rng.below(100);
        if roll < 70 && !self.known.is_empty() {
            let cands: Vec<&String> = self
                .known
                .iter()
                .filter(|k| k.starts_with(&prefix))
                .collect();
            if cands.is_empty() {
                format!("{prefix}{}", random_rel_path(rng, 3))
            } else {
                cands[rng.below(cands.len())].clone()
            }
        } else if roll < 97 {
            // a new name, mostly inside a directory that may exist
            let cands: Vec<&String> = self
                .known
                .iter()
                .filter(|k| k.starts_with(&prefix))
                .collect();
            if !cands.is_empty() && rng.chance(60) {
                let dir = cands[rng.below(cands.len())];
                let name = random_rel_path(rng, 1);
                if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                }
            } else {
                format!("{prefix}{}", random_rel_path(rng, 2))
            }
        } else if roll < 99 || !prefix.is_empty() {
            format!("{prefix}{}", "n".repeat(256))
        } else {
            String::new() // the mount root
        }
    }

    fn created(&mut self, p: &str) {
        if !self.known.iter().any(|k| k == p) {
            self.known.push(p.to_string());
        }
    }
}

pub fn random_op(rng: &mut Rng, pool: &mut PathPool) -> Op {
    let roll = rng.below(112);
    let path = pool.pick(rng);
    let op = match roll {
        0..=19 => {
            let flags = random_open_flags(rng);
            let writes = if flags & libc::O_ACCMODE == libc::O_RDONLY {
                rng.chance(5)
            } else {
                rng.chance(85)
            };
            let write = writes.then(|| {
                let off = if rng.chance(60) {
                    0
                } else {
                    rng.below(9000) as i64
                };
                (off, random_data(rng))
            });
            Op::Open {
                path,
                flags,
                mode: rng.pick(&[0o644, 0o600, 0o755]),
                write,
                read: rng.chance(50),
            }
        }
        20..=23 => Op::Truncate {
            path,
            size: rng.pick(&[0, 1, 3, 5000, 70000]),
        },
        24..=30 => Op::Mkdir {
            path,
            mode: rng.pick(&[0o755, 0o700, 0o1777]),
        },
        31..=32 => Op::Mknod {
            path,
            whiteout: rng.chance(40),
        },
        33..=37 => Op::Rmdir { path },
        38..=44 => Op::Unlink { path },
        45..=56 => {
            let flags = match rng.below(20) {
                0..=11 => 0,
                12..=15 => libc::RENAME_NOREPLACE,
                16..=18 => libc::RENAME_EXCHANGE,
                _ => libc::RENAME_WHITEOUT,
            };
            Op::Rename {
                from: path,
                to: pool.pick(rng),
                flags,
            }
        }
        57..=60 => Op::Link {
            from: path,
            to: pool.pick(rng),
        },
        61..=63 => Op::Symlink {
            target: random_rel_path(rng, 2),
            path,
        },
        64..=65 => Op::Readlink { path },
        66..=68 => Op::Chmod {
            path,
            mode: rng.pick(&[0o600, 0o755, 0o4711, 0o000, 0o2775]),
        },
        69..=70 => Op::Chown {
            path,
            uid: rng.pick(&[0, 1000, 65534]),
            gid: rng.pick(&[0, 1000, 65534]),
        },
        71..=73 => {
            let mtime = rng
                .chance(70)
                .then(|| 1_100_000_000 + rng.below(100) as i64 * 1000);
            Op::Utimens { path, mtime }
        }
        74..=77 => Op::SetXattr {
            path,
            name: rng.pick(XATTR_NAMES).to_string(),
            value: format!("s{}", rng.below(10)),
            flags: rng.pick(&[0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]),
        },
        78..=79 => Op::GetXattr {
            path,
            name: rng.pick(XATTR_NAMES).to_string(),
        },
        80..=81 => Op::ListXattr { path },
        82..=83 => Op::RemoveXattr {
            path,
            name: rng.pick(XATTR_NAMES).to_string(),
        },
        84..=89 => Op::Readdir { path },
        90..=96 => Op::Stat { path },
        97 => Op::Statfs,
        98..=101 => Op::FdOpen {
            slot: rng.below(SLOTS),
            path,
            flags: random_open_flags(rng),
        },
        102..=104 => Op::FdRead {
            slot: rng.below(SLOTS),
        },
        105..=107 => Op::FdWrite {
            slot: rng.below(SLOTS),
            offset: if rng.chance(50) {
                0
            } else {
                rng.below(5000) as i64
            },
            data: random_data(rng),
        },
        108..=109 => Op::FdStat {
            slot: rng.below(SLOTS),
        },
        _ => Op::FdClose {
            slot: rng.below(SLOTS),
        },
    };
    match &op {
        Op::Open { path, flags, .. } if flags & libc::O_CREAT != 0 => pool.created(path),
        Op::Mkdir { path, .. } | Op::Mknod { path, .. } | Op::Symlink { path, .. } => {
            pool.created(path)
        }
        Op::Rename { to, .. } | Op::Link { to, .. } => pool.created(to),
        _ => {}
    }
    op
}

/// One mounted side while a sequence runs: its root, its open descriptors, and the st_ino of
/// every path before the first op (so outcomes can say "same inode as initial path P").
pub struct Side {
    pub root: PathBuf,
    pub fds: [Option<i32>; SLOTS],
    pub initial_ino: HashMap<u64, String>,
}

impl Side {
    pub fn new(root: &Path) -> Side {
        Side {
            root: root.to_path_buf(),
            fds: [None; SLOTS],
            initial_ino: HashMap::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        // join() with a leading '/' would leave the mount and touch the host
        assert!(
            !rel.starts_with('/') && !rel.split('/').any(|c| c == ".."),
            "path {rel:?} leaves the mount"
        );
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// "initial:P" if this inode number belonged to path P before the sequence, else "new".
    pub fn identity(&self, ino: u64) -> String {
        match self.initial_ino.get(&ino) {
            Some(p) => format!("initial:{p}"),
            None => "new".to_string(),
        }
    }

    pub fn close_all(&mut self) {
        for fd in self.fds.iter_mut() {
            if let Some(fd) = fd.take() {
                sys::close(fd);
            }
        }
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Marks a listing entry whose d_ino is not its st_ino.
pub const DINO_MARK: &str = "(d_ino!=st_ino)";
/// Marks names a listing shows but lstat cannot find.
pub const GHOST_MARK: &str = "listed-not-found";

pub fn type_char(mode: u32) -> char {
    match mode & libc::S_IFMT {
        libc::S_IFREG => 'f',
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFSOCK => 's',
        _ => '?',
    }
}

pub fn dtype_char(d: u8) -> char {
    match d {
        libc::DT_REG => 'f',
        libc::DT_DIR => 'd',
        libc::DT_LNK => 'l',
        libc::DT_FIFO => 'p',
        libc::DT_CHR => 'c',
        libc::DT_BLK => 'b',
        libc::DT_SOCK => 's',
        _ => '?',
    }
}

/// A time is shown only if it is one this harness set (layers, or an explicit utimens);
/// "now" differs between runs and is shown as `-`.
pub fn magic_time(t: i64) -> String {
    if (1_000_000_000..1_200_000_000).contains(&t) {
        t.to_string()
    } else {
        "-".to_string()
    }
}

pub fn fmt_stat(st: &libc::stat, side: &Side) -> String {
    let mode = st.st_mode;
    let t = type_char(mode);
    let size = if t == 'd' {
        String::new()
    } else {
        format!(" size={}", st.st_size)
    };
    let rdev = if t == 'c' || t == 'b' {
        format!(" rdev={}", st.st_rdev)
    } else {
        String::new()
    };
    format!(
        "{t} 0{:o} {}:{}{size}{rdev} nlink={} id={} mtime={}",
        mode & 0o7777,
        st.st_uid,
        st.st_gid,
        st.st_nlink,
        side.identity(st.st_ino),
        magic_time(st.st_mtime)
    )
}

/// Short, deterministic rendering of file content.
pub fn fmt_content(b: &[u8]) -> String {
    if b.len() <= 40 {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &x in b {
            h = (h ^ x as u64).wrapping_mul(0x1000_0000_01b3);
        }
        format!("len={} fnv={h:016x}", b.len())
    }
}

fn err(stage: &str, e: std::io::Error) -> String {
    format!("{stage}:{}", errno_name(e))
}

fn unit(r: sys::Sys<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => err("err", e),
    }
}

/// Runs one op on one side and describes the outcome. Two conforming implementations give equal
/// strings for equal ops on equal trees.
pub fn exec(op: &Op, s: &mut Side) -> String {
    match op {
        Op::Open {
            path,
            flags,
            mode,
            write,
            read,
        } => {
            let fd = match sys::open(&s.path(path), flags | libc::O_NONBLOCK, *mode)
                .map(IntoRawFd::into_raw_fd)
            {
                Ok(fd) => fd,
                Err(e) => return err("open", e),
            };
            let mut out = "open".to_string();
            if let Some((off, data)) = write {
                match sys::pwrite(fd, &data.bytes(), *off) {
                    Ok(n) => out += &format!(" w={n}"),
                    Err(e) => out += &format!(" {}", err("write", e)),
                }
            }
            if *read {
                match sys::pread_all(fd) {
                    Ok(b) => out += &format!(" r={}", fmt_content(&b)),
                    Err(e) => out += &format!(" {}", err("read", e)),
                }
            }
            match sys::fstat(fd) {
                Ok(st) => out += &format!(" [{}]", fmt_stat(&st, s)),
                Err(e) => out += &format!(" {}", err("fstat", e)),
            }
            sys::close(fd);
            out
        }
        Op::Truncate { path, size } => unit(sys::truncate(&s.path(path), *size)),
        Op::Mkdir { path, mode } => unit(sys::mkdir(&s.path(path), *mode)),
        Op::Mknod { path, whiteout } => {
            let mode = if *whiteout {
                libc::S_IFCHR
            } else {
                libc::S_IFIFO | 0o644
            };
            unit(sys::mknod(&s.path(path), mode, 0))
        }
        Op::Rmdir { path } => unit(sys::rmdir(&s.path(path))),
        Op::Unlink { path } => unit(sys::unlink(&s.path(path))),
        Op::Rename { from, to, flags } => unit(sys::renameat2(&s.path(from), &s.path(to), *flags)),
        Op::Link { from, to } => unit(sys::link(&s.path(from), &s.path(to))),
        Op::Symlink { target, path } => unit(sys::symlink(target, &s.path(path))),
        Op::Readlink { path } => match sys::readlink(&s.path(path)) {
            Ok(t) => format!("ok {t:?}"),
            Err(e) => err("err", e),
        },
        Op::Chmod { path, mode } => unit(sys::chmod(&s.path(path), *mode)),
        Op::Chown { path, uid, gid } => unit(sys::lchown(&s.path(path), *uid, *gid)),
        Op::Utimens { path, mtime } => unit(sys::lutimes(&s.path(path), *mtime, *mtime)),
        Op::SetXattr {
            path,
            name,
            value,
            flags,
        } => unit(sys::lsetxattr_flags(
            &s.path(path),
            name,
            value.as_bytes(),
            *flags,
        )),
        Op::GetXattr { path, name } => match sys::lgetxattr(&s.path(path), name) {
            Ok(v) => format!("ok {}", fmt_content(&v)),
            Err(e) => err("err", e),
        },
        Op::ListXattr { path } => match sys::llistxattr(&s.path(path)) {
            Ok(v) => format!("ok {v:?}"),
            Err(e) => err("err", e),
        },
        Op::RemoveXattr { path, name } => unit(sys::lremovexattr(&s.path(path), name)),
        Op::Readdir { path } => {
            let dir = s.path(path);
            match sys::readdir(&dir) {
                Ok(ents) => {
                    let mut items = Vec::new();
                    let mut ghosts = Vec::new();
                    for e in ents {
                        let item = format!("{}:{}", e.name, dtype_char(e.dtype));
                        // d_ino must equal st_ino; say so rather than print either number
                        match sys::lstat(&dir.join(&e.name)) {
                            Ok(st) if st.st_ino == e.ino => items.push(item),
                            Ok(_) => items.push(format!("{item}{DINO_MARK}")),
                            Err(_) => ghosts.push(item),
                        }
                    }
                    let mut out = format!("ok [{}]", items.join(" "));
                    if !ghosts.is_empty() {
                        out += &format!(" {GHOST_MARK}[{}]", ghosts.join(" "));
                    }
                    out
                }
                Err(e) => err("err", e),
            }
        }
        Op::Stat { path } => match sys::lstat(&s.path(path)) {
            Ok(st) => format!("ok {}", fmt_stat(&st, s)),
            Err(e) => err("err", e),
        },
        // The runner remounts between the ops around it; nothing to do on the mount.
        Op::Commit => "commit".to_string(),
        Op::Statfs => match sys::statfs(&s.root) {
            Ok(st) => format!(
                "ok bsize={} namelen={} blocks={} files={}",
                st.f_bsize, st.f_namelen, st.f_blocks, st.f_files
            ),
            Err(e) => err("err", e),
        },
        Op::FdOpen { slot, path, flags } => {
            if let Some(old) = s.fds[*slot].take() {
                sys::close(old);
            }
            match sys::open(&s.path(path), flags | libc::O_NONBLOCK, 0o644)
                .map(IntoRawFd::into_raw_fd)
            {
                Ok(fd) => {
                    s.fds[*slot] = Some(fd);
                    "ok".into()
                }
                Err(e) => err("err", e),
            }
        }
        Op::FdRead { slot } => match s.fds[*slot] {
            None => "no-fd".into(),
            Some(fd) => match sys::pread_all(fd) {
                Ok(b) => format!("ok {}", fmt_content(&b)),
                Err(e) => err("err", e),
            },
        },
        Op::FdWrite { slot, offset, data } => match s.fds[*slot] {
            None => "no-fd".into(),
            Some(fd) => match sys::pwrite(fd, &data.bytes(), *offset) {
                Ok(n) => format!("ok {n}"),
                Err(e) => err("err", e),
            },
        },
        Op::FdStat { slot } => match s.fds[*slot] {
            None => "no-fd".into(),
            Some(fd) => match sys::fstat(fd) {
                Ok(st) => format!("ok {}", fmt_stat(&st, s)),
                Err(e) => err("err", e),
            },
        },
        Op::FdClose { slot } => match s.fds[*slot].take() {
            None => "no-fd".into(),
            Some(fd) => {
                sys::close(fd);
                "ok".into()
            }
        },
    }
}
