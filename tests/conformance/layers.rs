//! Layer stacks: a seeded generator, a description that renders as Rust code, and the code that
//! writes a layer to disk in the kernel format or the OCI (`.wh.`) format.

use super::sys;
use std::collections::BTreeMap;
use std::path::Path;

/// SplitMix64: tiny, fast, and its sequence for a seed never changes with a crate upgrade, so a
/// printed seed replays the same case forever.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, pct: u32) -> bool {
        (self.next_u64() % 100) < pct as u64
    }
    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
}

/// Times given to every layer entry; a stat that still shows one of these after the sequence
/// proves the time survived copy-up (the comparer shows only such "magic" times).
pub const LAYER_TIME: i64 = 1_000_000_000;

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Dir,
    File(String),
    Symlink(String),
    /// A second name for a file earlier in the same layer.
    HardLink(String),
    Fifo,
    Whiteout,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub opaque: bool,
    pub xattrs: Vec<(String, String)>,
}

/// Builders used by rendered reproducers: `E::file("a/b", "x").mode(0o600)`.
pub struct E;

impl E {
    fn entry(path: &str, kind: Kind, mode: u32) -> Entry {
        Entry {
            path: path.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            opaque: false,
            xattrs: Vec::new(),
        }
    }
    pub fn dir(path: &str) -> Entry {
        E::entry(path, Kind::Dir, 0o755)
    }
    pub fn file(path: &str, content: &str) -> Entry {
        E::entry(path, Kind::File(content.to_string()), 0o644)
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        E::entry(path, Kind::Symlink(target.to_string()), 0o777)
    }
    pub fn hardlink(path: &str, to: &str) -> Entry {
        E::entry(path, Kind::HardLink(to.to_string()), 0o644)
    }
    pub fn fifo(path: &str) -> Entry {
        E::entry(path, Kind::Fifo, 0o644)
    }
    pub fn whiteout(path: &str) -> Entry {
        E::entry(path, Kind::Whiteout, 0)
    }
}

impl Entry {
    pub fn mode(mut self, m: u32) -> Entry {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn opaque(mut self) -> Entry {
        self.opaque = true;
        self
    }
    pub fn xattr(mut self, name: &str, value: &str) -> Entry {
        self.xattrs.push((name.to_string(), value.to_string()));
        self
    }

    fn default_mode(&self) -> u32 {
        match self.kind {
            Kind::Dir => 0o755,
            Kind::Symlink(_) => 0o777,
            Kind::Whiteout => 0,
            _ => 0o644,
        }
    }

    pub fn render(&self) -> String {
        let mut s = match &self.kind {
            Kind::Dir => format!("E::dir({:?})", self.path),
            Kind::File(c) => format!("E::file({:?}, {:?})", self.path, c),
            Kind::Symlink(t) => format!("E::symlink({:?}, {:?})", self.path, t),
            Kind::HardLink(t) => format!("E::hardlink({:?}, {:?})", self.path, t),
            Kind::Fifo => format!("E::fifo({:?})", self.path),
            Kind::Whiteout => format!("E::whiteout({:?})", self.path),
        };
        if self.mode != self.default_mode() {
            s += &format!(".mode(0o{:o})", self.mode);
        }
        if (self.uid, self.gid) != (0, 0) {
            s += &format!(".owner({}, {})", self.uid, self.gid);
        }
        if self.opaque {
            s += ".opaque()";
        }
        for (n, v) in &self.xattrs {
            s += &format!(".xattr({n:?}, {v:?})");
        }
        s
    }
}

/// How whiteouts and opaque directories are written in a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    /// char device 0/0 and `trusted.overlay.opaque=y`.
    Kernel,
    /// `.wh.NAME` and `.wh..wh..opq` (container image layers).
    Oci,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub format: Format,
    pub entries: Vec<Entry>,
}

impl Layer {
    pub fn kernel(entries: Vec<Entry>) -> Layer {
        Layer {
            format: Format::Kernel,
            entries,
        }
    }
    pub fn oci(entries: Vec<Entry>) -> Layer {
        Layer {
            format: Format::Oci,
            entries,
        }
    }
    pub fn render(&self, indent: &str) -> String {
        let ctor = match self.format {
            Format::Kernel => "Layer::kernel",
            Format::Oci => "Layer::oci",
        };
        if self.entries.is_empty() {
            return format!("{ctor}(vec![])");
        }
        let mut s = format!("{ctor}(vec![\n");
        for e in &self.entries {
            s += &format!("{indent}    {},\n", e.render());
        }
        s += &format!("{indent}])");
        s
    }

    /// Every path this layer names (including whiteouts), parents included.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.entries {
            let mut acc = String::new();
            for comp in e.path.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(comp);
                out.push(acc.clone());
            }
        }
        out
    }
}

/// Names shared by all layers, so that layers overlap and hide each other often.
pub const NAMES: &[&str] = &["a", "b", "c", "d", "e"];

pub fn random_rel_path(rng: &mut Rng, max_depth: usize) -> String {
    let depth = 1 + rng.below(max_depth);
    (0..depth)
        .map(|_| rng.pick(NAMES))
        .collect::<Vec<_>>()
        .join("/")
}

fn parent(p: &str) -> Option<&str> {
    p.rfind('/').map(|i| &p[..i])
}

pub fn random_content(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => String::new(),
        1 => "0123456789abcdef".repeat(300), // crosses a page
        _ => format!("data{}", rng.below(1000)),
    }
}

/// A random layer. `upper` layers are always in the kernel format.
pub fn random_layer(rng: &mut Rng, upper: bool) -> Layer {
    let format = if !upper && rng.chance(40) {
        Format::Oci
    } else {
        Format::Kernel
    };
    let count = if upper {
        rng.below(5)
    } else {
        2 + rng.below(8)
    };
    // path -> is a directory, for the paths already placed in this layer
    let mut placed: BTreeMap<String, bool> = BTreeMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    for _ in 0..count {
        let path = random_rel_path(rng, 3);
        if placed.contains_key(&path) {
            continue;
        }
        // every ancestor must be a directory of this layer (or absent, then made a plain dir)
        let mut ok = true;
        let mut anc = parent(&path);
        while let Some(a) = anc {
            if placed.get(a) == Some(&false) {
                ok = false;
            }
            anc = parent(a);
        }
        if !ok {
            continue;
        }
        let files: Vec<String> = entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File(_)))
            .map(|e| e.path.clone())
            .collect();
        let roll = rng.below(100);
        let mut e = if roll < 30 {
            let mut e = E::dir(&path);
            if rng.chance(25) {
                e.opaque = true;
            }
            e
        } else if roll < 62 {
            E::file(&path, &random_content(rng))
        } else if roll < 70 {
            let t = if rng.chance(50) {
                random_rel_path(rng, 2)
            } else {
                // relative, no "..": a symlink never leads out of the mount
                "nowhere/x".to_string()
            };
            E::symlink(&path, &t)
        } else if roll < 78 && !files.is_empty() {
            E::hardlink(&path, &rng.pick(&files))
        } else if roll < 83 {
            E::fifo(&path)
        } else {
            E::whiteout(&path)
        };
        if !matches!(
            e.kind,
            Kind::Whiteout | Kind::Symlink(_) | Kind::HardLink(_)
        ) {
            if rng.chance(20) {
                e.mode = rng.pick(&[0o600, 0o700, 0o640, 0o4755, 0o1777, 0o444]);
            }
            if rng.chance(15) {
                e.uid = 1000;
                e.gid = 1000;
            }
            if !matches!(e.kind, Kind::Fifo) && rng.chance(20) {
                e.xattrs
                    .push(("user.x".into(), format!("v{}", rng.below(10))));
            }
            if rng.chance(5) {
                e.xattrs.push(("trusted.t".into(), "tv".into()));
            }
        }
        // parents this entry needs become implicit directories
        let mut anc = parent(&path);
        while let Some(a) = anc {
            placed.insert(a.to_string(), true);
            anc = parent(a);
        }
        placed.insert(path.clone(), matches!(e.kind, Kind::Dir));
        entries.push(e);
    }
    Layer { format, entries }
}

fn mkdirs(root: &Path, rel: &str) {
    let mut acc = root.to_path_buf();
    for comp in rel.split('/') {
        acc.push(comp);
        if sys::lstat(&acc).is_err() {
            sys::mkdir(&acc, 0o755).expect("mkdir parent");
            sys::lutimes(&acc, Some(LAYER_TIME), Some(LAYER_TIME)).ok();
        }
    }
}

/// Writes `layer` into the empty directory `root`, in `format` (callers pass `Format::Kernel` for
/// a kernel overlayfs side, which cannot read OCI whiteouts). Entries that do not fit (a hard link
/// to a missing file, a child under a non-directory) are skipped, so a shrunk layer still writes.
pub fn materialize(layer: &Layer, root: &Path, format: Format) {
    for e in &layer.entries {
        let p = root.join(&e.path);
        if let Some(par) = parent(&e.path) {
            let pp = root.join(par);
            match sys::lstat(&pp) {
                Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => continue,
                Ok(_) => {}
                Err(_) => mkdirs(root, par),
            }
        }
        if sys::lstat(&p).is_ok() {
            continue;
        }
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        let made = match &e.kind {
            Kind::Dir => sys::mkdir(&p, 0o755),
            Kind::File(content) => std::fs::write(&p, content)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EIO)),
            Kind::Symlink(t) => sys::symlink(t, &p),
            Kind::HardLink(t) => {
                let tp = root.join(t);
                match sys::lstat(&tp) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => sys::link(&tp, &p),
                    _ => continue,
                }
            }
            Kind::Fifo => sys::mknod(&p, libc::S_IFIFO | 0o644, 0),
            Kind::Whiteout => match format {
                Format::Kernel => sys::mknod(&p, libc::S_IFCHR, 0),
                Format::Oci => {
                    let w = p.with_file_name(format!(".wh.{name}"));
                    std::fs::write(&w, b"")
                        .map_err(|_| std::io::Error::from_raw_os_error(libc::EIO))
                        .and_then(|_| sys::chmod(&w, 0))
                }
            },
        };
        made.unwrap_or_else(|e2| panic!("writing layer entry {}: errno {e2}", e.path));
        if matches!(e.kind, Kind::Whiteout | Kind::HardLink(_)) {
            continue;
        }
        if !matches!(e.kind, Kind::Symlink(_)) {
            sys::chmod(&p, e.mode).expect("chmod");
        }
        sys::lchown(&p, e.uid, e.gid).expect("lchown");
        for (n, v) in &e.xattrs {
            sys::lsetxattr(&p, n, v.as_bytes()).expect("setxattr");
        }
        if e.opaque {
            match format {
                Format::Kernel => sys::lsetxattr(&p, "trusted.overlay.opaque", b"y"),
                Format::Oci => std::fs::write(p.join(".wh..wh..opq"), b"")
                    .map_err(|_| std::io::Error::from_raw_os_error(libc::EIO)),
            }
            .expect("opaque marker");
        }
        if !matches!(e.kind, Kind::Dir) {
            sys::lutimes(&p, Some(LAYER_TIME), Some(LAYER_TIME)).expect("utimes");
        }
    }
    // directory times last, after all their entries were made
    for ent in walk(root).into_iter().chain([root.to_path_buf()]) {
        let st = sys::lstat(&ent).expect("lstat");
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            sys::lutimes(&ent, Some(LAYER_TIME), Some(LAYER_TIME)).expect("utimes dir");
        }
    }
}

/// Every path under `root` (not root itself), depth first.
pub fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(ents) = sys::readdir(root) {
        for e in ents {
            let p = root.join(&e.name);
            out.push(p.clone());
            if e.dtype == libc::DT_DIR {
                out.extend(walk(&p));
            }
        }
    }
    out
}
