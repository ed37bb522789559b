//! Whole-tree snapshots of a mounted union and their comparison.
//!
//! Only what is deterministic is compared: types, modes, owners, sizes (not of directories),
//! content hashes, link targets, xattrs, nlink, d_type, "d_ino == st_ino", harness-set times, and
//! inode *identity* (same inode as which path before the sequence; which paths share an inode) —
//! never raw inode numbers, never atime, never "now" times.

use super::ops::{DINO_MARK, GHOST_MARK, Side, dtype_char, fmt_content, magic_time, type_char};
use super::sys;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub desc: String,
    pub ino: u64,
    pub is_dir: bool,
}

/// path ("" is the root) -> description
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

fn describe(abs: &Path, st: &libc::stat, dtype: Option<u8>, dino_ok: bool) -> String {
    let t = type_char(st.st_mode);
    let mut d = format!(
        "{t} 0{:o} {}:{} nlink={}",
        st.st_mode & 0o7777,
        st.st_uid,
        st.st_gid,
        st.st_nlink
    );
    if let Some(dt) = dtype
        && dtype_char(dt) != t
    {
        d += &format!(" d_type={}", dtype_char(dt));
    }
    if !dino_ok {
        d += &format!(" {DINO_MARK}");
    }
    match t {
        'f' => {
            d += &format!(" size={}", st.st_size);
            match std::fs::read(abs) {
                Ok(b) => d += &format!(" data={}", fmt_content(&b)),
                Err(e) => {
                    d += &format!(
                        " data=ERR({})",
                        e.raw_os_error().map(sys::errno_name).unwrap_or_default()
                    )
                }
            }
        }
        'l' => {
            d += &format!(" -> {:?}", sys::readlink(abs).unwrap_or_default());
        }
        'c' | 'b' => d += &format!(" rdev={}", st.st_rdev),
        _ => {}
    }
    d += &format!(" mtime={}", magic_time(st.st_mtime));
    if crate::PORTABLE {
        // The portable path has no xattrs by design (docs/design.md): none are compared.
        d += " xattrs=(not compared: the portable path has none)";
        return d;
    }
    match sys::llistxattr(abs) {
        Ok(names) => {
            for n in names {
                let v = sys::lgetxattr(abs, &n)
                    .map(|v| fmt_content(&v))
                    .unwrap_or_else(|e| format!("ERR({})", sys::errno_name(e)));
                d += &format!(" {n}={v}");
            }
        }
        Err(e) => d += &format!(" listxattr=ERR({})", sys::errno_name(e)),
    }
    d
}

fn walk(root: &Path, rel: &str, tree: &mut Tree) {
    let abs = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    match sys::readdir(&abs) {
        Ok(ents) => {
            for e in ents {
                let child = join(rel, &e.name);
                let cabs = root.join(&child);
                match sys::lstat(&cabs) {
                    Ok(st) => {
                        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                        let desc = describe(&cabs, &st, Some(e.dtype), st.st_ino == e.ino);
                        tree.nodes.insert(
                            child.clone(),
                            Node {
                                desc,
                                ino: st.st_ino,
                                is_dir,
                            },
                        );
                        if is_dir {
                            walk(root, &child, tree);
                        }
                    }
                    Err(err) => {
                        tree.nodes.insert(
                            child,
                            Node {
                                desc: format!("{GHOST_MARK} ({})", sys::errno_name(err)),
                                ino: 0,
                                is_dir: false,
                            },
                        );
                    }
                }
            }
        }
        Err(err) => {
            let n = tree.nodes.entry(rel.to_string()).or_insert(Node {
                desc: String::new(),
                ino: 0,
                is_dir: true,
            });
            n.desc += &format!(" readdir=ERR({})", sys::errno_name(err));
        }
    }
}

pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::default();
    match sys::lstat(root) {
        Ok(st) => {
            let desc = describe(root, &st, None, true);
            tree.nodes.insert(
                String::new(),
                Node {
                    desc,
                    ino: st.st_ino,
                    is_dir: true,
                },
            );
        }
        Err(e) => {
            tree.nodes.insert(
                String::new(),
                Node {
                    desc: format!("root lstat {}", sys::errno_name(e)),
                    ino: 0,
                    is_dir: true,
                },
            );
            return tree;
        }
    }
    walk(root, "", &mut tree);
    tree
}

impl Tree {
    /// Records every inode number of this (initial) tree in `side`, smallest path first.
    pub fn record_initial(&self, side: &mut Side) {
        for (p, n) in &self.nodes {
            side.initial_ino
                .entry(n.ino)
                .or_insert_with(|| if p.is_empty() { "/".into() } else { p.clone() });
        }
    }

    /// Descriptions with the inode relations added: `id=` (identity before the sequence, if
    /// `side` is given) and `links=` (other paths of the same non-directory inode).
    pub fn described(&self, side: Option<&Side>) -> BTreeMap<String, String> {
        let mut by_ino: HashMap<u64, Vec<&String>> = HashMap::new();
        for (p, n) in &self.nodes {
            if !n.is_dir && n.ino != 0 {
                by_ino.entry(n.ino).or_default().push(p);
            }
        }
        self.nodes
            .iter()
            .map(|(p, n)| {
                let mut d = n.desc.clone();
                if let Some(s) = side {
                    d += &format!(" id={}", s.identity(n.ino));
                }
                if let Some(group) = by_ino.get(&n.ino).filter(|g| g.len() > 1) {
                    let others: Vec<&str> = group
                        .iter()
                        .filter(|q| **q != p)
                        .map(|q| q.as_str())
                        .collect();
                    d += &format!(" links={others:?}");
                }
                (p.clone(), d)
            })
            .collect()
    }
}

/// Kernel quirks that the other side need not copy, removed from the kernel's outcome when the
/// other side does not show them (docs/conformance.md, "Kernel quirks tolerated"):
/// - a listing entry whose d_ino differs from its st_ino;
/// - a name a listing shows but lookup cannot find (a whiteout in a directory that exists in
///   one lower layer only is listed by the kernel as a char device).
pub fn tolerate_kernel_quirks(kernel: &str, other: &str) -> String {
    let mut k = kernel.to_string();
    if !other.contains(DINO_MARK) {
        k = k
            .replace(&format!(" {DINO_MARK}"), "")
            .replace(DINO_MARK, "");
    }
    if !other.contains(GHOST_MARK)
        && let Some(i) = k.find(&format!(" {GHOST_MARK}["))
        && let Some(j) = k[i..].find(']')
    {
        k.replace_range(i..i + j + 1, "");
    }
    k
}

/// The kind of a token of a description or outcome, without names or values: `nlink`, `mtime`,
/// `d_ino`, `err:ENOENT`, ... — what a difference is about.
fn token_kind(t: &str) -> String {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if t.contains(DINO_MARK) {
        "d_ino".into()
    } else if t
        .split_once(':')
        .is_some_and(|(u, g)| digits(u) && digits(g))
    {
        "owner".into()
    } else if t.starts_with('0') && digits(t) {
        "mode".into()
    } else if t.len() == 1 {
        "type".into()
    } else if let Some((k, _)) = t.split_once('=') {
        k.trim_start_matches('[').into()
    } else if t.split_once(':').is_some_and(|(_, e)| {
        !e.is_empty()
            && e.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    }) || t == "ok"
        || t == "open"
    {
        t.into() // err:ENOENT, open:EEXIST, ok
    } else {
        "value".into()
    }
}

/// What two outcomes differ in, as a short key (e.g. `nlink`, `err:ENOENT/ok`).
pub fn outcome_kind(kernel: &str, other: &str) -> String {
    let ka: Vec<&str> = kernel.split(' ').collect();
    let kb: Vec<&str> = other.split(' ').collect();
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for t in ka.iter().filter(|t| !kb.contains(t)) {
        keys.insert(token_kind(t));
    }
    for t in kb.iter().filter(|t| !ka.contains(t)) {
        keys.insert(token_kind(t));
    }
    keys.into_iter().collect::<Vec<_>>().join("/")
}

/// The kinds of difference between two described trees, by file type: `f.nlink`, `d.mtime`,
/// `only-kernel.f`, ... Failures of the same kind count as one bug while shrinking.
pub fn diff_kind(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for k in a.keys().chain(b.keys()) {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if tolerate_kernel_quirks(x, y) != *y => {
                let t = x.split(' ').next().unwrap_or("?");
                for kk in outcome_kind(&tolerate_kernel_quirks(x, y), y).split('/') {
                    keys.insert(format!("{t}.{kk}"));
                }
            }
            (Some(x), None) if !x.starts_with(GHOST_MARK) => {
                keys.insert(format!(
                    "only-kernel.{}",
                    x.split(' ').next().unwrap_or("?")
                ));
            }
            (None, Some(y)) => {
                keys.insert(format!("only-other.{}", y.split(' ').next().unwrap_or("?")));
            }
            _ => {}
        }
    }
    keys.into_iter().collect::<Vec<_>>().join(",")
}

/// Line-per-path differences between the kernel's described tree (`a`) and the other's; empty
/// when equal.
/// Also returns the kind of the differences (`diff_kind`).
pub fn diff(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    a_name: &str,
    b_name: &str,
) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let shown = if k.is_empty() { "/" } else { k.as_str() };
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if tolerate_kernel_quirks(x, y) == *y => {}
            (Some(x), Some(y)) => out.push(format!(
                "{shown}:\n      {a_name}: {x}\n      {b_name}: {y}"
            )),
            (Some(x), None) if x.starts_with(GHOST_MARK) => {}
            (Some(x), None) => out.push(format!("{shown}: only in {a_name}: {x}")),
            (None, Some(y)) => out.push(format!("{shown}: only in {b_name}: {y}")),
            (None, None) => {}
        }
    }
    (out, diff_kind(a, b))
}
