//! Fuzzing of the input parsers on stable Rust (docs/reliability.md "Hostile input"): the
//! fuse-overlayfs `-o` option strings, `--lower` layer lists with their escapes, and `--volume` /
//! `--bind` specs (grafts). A small mutational fuzzer without coverage feedback: every input of
//! `fuzz/corpus/TARGET/` is run as is, then mutated (bytes flipped, inserted, deleted, repeated,
//! spliced with other seeds, tokens of the grammar inserted) until the time budget is spent.
//!
//! Properties: no panic; an error is one printable line; what a formatter writes parses back to
//! the same value; an accepted input names only paths that were given (a lower layer is a piece
//! of the input, a graft target stays inside the union, a validated mount uses only the
//! directories it was asked for).
//!
//! Budget: `LAYERFUSE_PARSE_FUZZ_SECS` seconds per target (default 10), seed
//! `LAYERFUSE_PARSE_FUZZ_SEED` (default: the clock; printed, so a failure can be replayed). A
//! failing input is printed escaped; add it to the target's corpus as a file once fixed.

#[path = "../src/cli.rs"]
#[allow(dead_code)]
mod cli;

use layerfuse::session::{GraftSource, GraftSpec, MountRequest, parse_graft, split_lowers};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The fuzzer
// ---------------------------------------------------------------------------------------------

/// splitmix64: small, fast, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that mean something to one of the grammars, and some that should mean nothing.
const TOKENS: &[&[u8]] = &[
    b":",
    b"\\",
    b"\\:",
    b"\\\\",
    b",",
    b"=",
    b"/",
    b".",
    b"..",
    b"/../",
    b"/./",
    b"\"",
    b" ",
    b"\n",
    b"\t",
    b"\0",
    b"\xff",
    b"\xc3\xa9",
    b"\xe2\x80\x8b",
    b"lowerdir=",
    b"upperdir=",
    b"workdir=",
    b"redirect_dir=",
    b"metacopy=on",
    b"userxattr",
    b"volatile",
    b"uidmapping=",
    b"gidmapping=",
    b"squash_to_uid=",
    b"squash_to_gid=",
    b"squash_to_root",
    b"fsname=",
    b"subtype=",
    b"transport=",
    b"ro",
    b"rw",
    b"nocopy",
    b"nodev",
    b"noexec",
    b"context=\"",
    b"xattr_permissions=",
    b"4294967295",
    b"4294967296",
    b"-1",
    b"0:0:1",
    b":0:100000:65536",
    b"/etc",
    b"/proc/self/root",
    b"../../..",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if !v.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(v.len());
                v.drain(at.min(v.len() - 1)..end);
            }
            3 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(16)).min(v.len());
                let piece = v[start..end].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len() + 1);
                let end = (start + rng.below(32)).min(other.len());
                v.splice(at..at, other[start..end].iter().copied());
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
        }
    }
    v.truncate(4096);
    v
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| {
            let mut b = std::fs::read(f).unwrap();
            // One input per file; a final newline is the editor's, not the input's.
            if b.last() == Some(&b'\n') {
                b.pop();
            }
            b
        })
        .collect();
    assert!(!seeds.is_empty(), "{}: empty corpus", dir.display());
    seeds
}

fn escaped(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Run `check` on every seed of `target`, then on mutants until the budget is spent. A panic
/// (of the parser, or of `check` finding a property broken) fails the test with the input.
fn fuzz(target: &str, check: impl Fn(&[u8])) {
    let seeds = corpus(target);
    let secs: u64 = std::env::var("LAYERFUSE_PARSE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("LAYERFUSE_PARSE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = Rng(seed);
    let run = |input: &[u8]| {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| check(input))) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz {target} (seed {seed}): input b\"{}\" fails: {msg}",
                escaped(input)
            );
        }
    };
    for s in &seeds {
        run(s);
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    let mut pool = seeds.clone();
    while Instant::now() < end {
        for _ in 0..64 {
            let base = &pool[rng.below(pool.len())];
            let m = mutate(&mut rng, base, &seeds);
            run(&m);
            // Keep some mutants as bases: deeper mutations without coverage feedback.
            if rng.below(16) == 0 {
                if pool.len() < 4096 {
                    pool.push(m);
                } else {
                    let i = rng.below(pool.len());
                    pool[i] = m;
                }
            }
            n += 1;
        }
    }
    eprintln!(
        "fuzz {target}: {} seeds, {n} mutants in {secs} s (seed {seed})",
        seeds.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// An error message for a person: one line, nothing unprintable, not empty.
fn one_printable_line(msg: &str) {
    assert!(!msg.trim().is_empty(), "empty error message");
    assert!(
        !msg.chars().any(|c| c.is_control()),
        "error message is not one printable line: {msg:?}"
    );
}

/// `lowerdir` syntax: `\` escapes the next character, `:` separates.
fn format_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|l| {
            let mut s = String::new();
            for c in l.to_str().unwrap().chars() {
                if c == '\\' || c == ':' {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// `s` without its escapes: the characters the user meant, separators included.
fn unescaped(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            out.push(it.next().unwrap_or('\\'));
        } else {
            out.push(c);
        }
    }
    out
}

fn check_lowers(input: &str, lowers: &[PathBuf]) {
    let meant = unescaped(input);
    for l in lowers {
        let s = l.to_str().expect("a lower from a str is a str");
        assert!(!s.is_empty(), "an empty lower layer");
        assert!(
            meant.contains(s),
            "lower {s:?} is not a piece of what was given ({meant:?})"
        );
    }
    let again = split_lowers(&format_lowers(lowers));
    assert_eq!(again, lowers, "format then parse changed the lowers");
}

#[test]
fn fuzz_lower_layer_lists() {
    fuzz("lowers", |input| {
        let s = String::from_utf8_lossy(input);
        check_lowers(&s, &split_lowers(&s));
        // The same through the command line, as `layerfuse mount --lower S M` parses it.
        if s.contains('\0') {
            return;
        }
        let argv = ["layerfuse", "mount", "--lower", &s, "/mnt"];
        if let Ok(cli) = <cli::Cli as clap::Parser>::try_parse_from(argv)
            && let cli::Command::Mount(m) = cli.command
        {
            match m.request() {
                Ok(r) => check_lowers(&s, &r.lowers),
                Err(e) => one_printable_line(&e.to_string()),
            }
        }
    });
}

/// The spec a [`GraftSpec`] came from, written back.
fn format_graft(s: &GraftSpec) -> String {
    let source = match &s.source {
        GraftSource::Volume(None) => String::new(),
        GraftSource::Volume(Some(n)) => n.clone(),
        GraftSource::Bind(p) => p.to_str().unwrap().to_owned(),
    };
    let mut out = format!("{source}:/{}", s.target.display());
    let opts: Vec<&str> = [(s.read_only, "ro"), (s.nocopy, "nocopy")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, o)| *o)
        .collect();
    if !opts.is_empty() {
        out.push(':');
        out.push_str(&opts.join(","));
    }
    out
}

#[test]
fn fuzz_volume_and_bind_specs() {
    fuzz("grafts", |input| {
        let s = String::from_utf8_lossy(input);
        for volume in [true, false] {
            match parse_graft(&s, volume) {
                Err(e) => one_printable_line(&e.to_string()),
                Ok(spec) => {
                    // The target stays inside the union: plain names only, not the root.
                    let comps: Vec<Component> = spec.target.components().collect();
                    assert!(!comps.is_empty(), "empty target");
                    assert!(
                        comps.iter().all(|c| matches!(c, Component::Normal(_))),
                        "target {:?} leaves the union",
                        spec.target
                    );
                    match &spec.source {
                        GraftSource::Volume(Some(n)) => {
                            assert!(volume);
                            layerfuse::volumes::check_name(n).expect("a checked volume name");
                        }
                        GraftSource::Volume(None) => assert!(volume),
                        GraftSource::Bind(p) => {
                            assert!(!volume && p.is_absolute(), "bind source {p:?}");
                            assert!(s.contains(p.to_str().unwrap()), "bind source {p:?}");
                        }
                    }
                    let again = parse_graft(&format_graft(&spec), volume)
                        .unwrap_or_else(|e| panic!("{:?} does not parse back: {e}", spec));
                    assert_eq!(again, spec, "format then parse changed the spec");
                }
            }
        }
    });
}

/// A directory tree the option strings can name: relative names resolve in it.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = std::env::temp_dir().join(format!("layerfuse-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["a", "b", "c", "u", "w", "m", "a/inner"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Sandbox { root }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn fuzz_fuse_overlayfs_option_strings() {
    let sb = Sandbox::new();
    let root = sb.root.to_str().unwrap().to_owned();
    fuzz("options", |input| {
        // The option string with the sandbox's absolute path where the seeds say `@`.
        let mut bytes = Vec::new();
        for &b in input {
            if b == b'@' {
                bytes.extend_from_slice(root.as_bytes());
            } else {
                bytes.push(b);
            }
        }
        let opts = OsString::from_vec(bytes.clone());
        let mnt = format!("{root}/m");
        let argv: Vec<OsString> = vec!["layerfuse".into(), "-o".into(), opts, mnt.into()];
        let req = match cli::parse_compat(&argv) {
            Err(e) => return one_printable_line(&e.to_string()),
            Ok(c) => c.request,
        };
        let given = String::from_utf8_lossy(&bytes).into_owned();
        let meant = unescaped(&given);
        for p in req.lowers.iter().chain(&req.upper).chain(&req.work) {
            let s = p.to_str().expect("paths from option strings are strings");
            assert!(
                std::str::from_utf8(&bytes).is_ok() || !s.contains('\u{fffd}'),
                "path {s:?} is not what was given (the input was not UTF-8)"
            );
            assert!(
                given.contains(s) || meant.contains(s),
                "path {s:?} is not a piece of what was given"
            );
        }
        check_validated(&req);
    });
}

/// A request that validates uses exactly the directories it names (resolved), or the work dir
/// of its own beside the upper; an error is one line.
fn check_validated(req: &MountRequest) {
    let cfg = match req.validate() {
        Err(e) => return one_printable_line(&e.to_string()),
        Ok(c) => c,
    };
    let resolved = |p: &PathBuf| std::fs::canonicalize(p).ok();
    let given: Vec<PathBuf> = req
        .lowers
        .iter()
        .chain(&req.upper)
        .chain(&req.work)
        .filter_map(resolved)
        .collect();
    for l in &cfg.overlay.lowers {
        assert!(given.contains(l), "lower {l:?} was not asked for");
    }
    if let Some((u, w)) = &cfg.overlay.upper {
        assert!(given.contains(u), "upper {u:?} was not asked for");
        let own = layerfuse::session::default_work_dir(u);
        assert!(
            given.contains(w) || own.as_ref() == Some(w),
            "work dir {w:?} was not asked for"
        );
    }
    assert_eq!(
        Some(&cfg.mountpoint),
        resolved(&req.mountpoint).as_ref(),
        "the mount point is not the one given"
    );
}

#[test]
fn fuzz_id_mappings_round_trip() {
    use layerfuse::overlay::IdMap;
    fuzz("idmaps", |input| {
        let s = String::from_utf8_lossy(input);
        match IdMap::parse_ranges(&s) {
            Err(e) => one_printable_line(&e),
            Ok(ranges) => {
                let text: Vec<String> = ranges
                    .iter()
                    .map(|r| format!("{}:{}:{}", r.shown, r.stored, r.len))
                    .collect();
                let again = IdMap::parse_ranges(&text.join(":")).expect("formatted ranges parse");
                assert_eq!(again, ranges, "format then parse changed the ranges");
            }
        }
    });
}

#[test]
fn the_corpus_is_in_the_repository() {
    for t in ["lowers", "grafts", "options", "idmaps"] {
        assert!(corpus(t).len() >= 5, "fuzz/corpus/{t}: too few seeds");
    }
    // The fuzzer's own pieces: escapes round-trip on a path with every special character.
    let l = vec![
        PathBuf::from("/a:b\\c"),
        PathBuf::from(":"),
        PathBuf::from("\\"),
    ];
    assert_eq!(split_lowers(&format_lowers(&l)), l);
}
