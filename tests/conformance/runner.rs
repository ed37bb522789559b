//! Differential runner: the same case on kernel overlayfs (side A, the reference) and on the
//! implementation under test (side B), compared after every op and as a whole tree at the end;
//! a delta-debugging shrinker; reproducers rendered as Rust tests.

use super::layers::{Format, Layer, Rng, materialize, random_layer};
use super::mount::{Impl, Layers, Mounted, Scratch};
use super::ops::{Op, PathPool, Side, exec, random_op};
use super::snapshot::{diff, outcome_kind, snapshot, tolerate_kernel_quirks};
use super::sys;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub seed: u64,
    pub redirect_dir: bool,
    /// Metadata-only copy-up (`metacopy=on` for the kernel, `--metacopy on` for layerfuse).
    pub metacopy: bool,
    /// Topmost first.
    pub lowers: Vec<Layer>,
    pub upper: Layer,
    pub ops: Vec<Op>,
}

impl Case {
    pub fn generate(seed: u64, n_ops: usize) -> Case {
        let mut rng = Rng::new(seed);
        // Now and then a deep stack (8+ lowers: lookups then go through the
        // whole-stack name map).
        let n_lowers = if rng.chance(10) {
            8 + rng.below(4)
        } else {
            1 + rng.below(4)
        };
        let lowers: Vec<Layer> = (0..n_lowers)
            .map(|_| random_layer(&mut rng, false))
            .collect();
        let upper = if rng.chance(40) {
            random_layer(&mut rng, true)
        } else {
            Layer::kernel(vec![])
        };
        let redirect_dir = !rng.chance(20);
        let mut pool = PathPool::from_layers(&lowers.iter().chain([&upper]).collect::<Vec<_>>());
        let ops = (0..n_ops).map(|_| random_op(&mut rng, &mut pool)).collect();
        // Drawn last, so the layers and ops of every earlier seed stay as they were.
        let metacopy = redirect_dir && rng.chance(3);
        Case {
            seed,
            redirect_dir,
            metacopy,
            lowers,
            upper,
            ops,
        }
    }

    /// The case as a test to paste into `tests/conformance/regressions.rs`.
    pub fn render_test(&self, name: &str, note: &str, call: &str) -> String {
        let mut s = String::new();
        for line in note.lines() {
            s += &format!("// {line}\n");
        }
        s += &format!(
            "#[test]\nfn {name}() {{\n    let case = Case {{\n        seed: {},\n",
            self.seed
        );
        s += &format!(
            "        redirect_dir: {},\n        metacopy: {},\n        lowers: vec![\n",
            self.redirect_dir, self.metacopy
        );
        for l in &self.lowers {
            s += &format!("            {},\n", l.render("            "));
        }
        s += "        ],\n";
        s += &format!("        upper: {},\n", self.upper.render("        "));
        if self.ops.is_empty() {
            s += "        ops: vec![],\n";
        } else {
            s += "        ops: vec![\n";
            for op in &self.ops {
                s += &format!("            {},\n", op.render());
            }
            s += "        ],\n";
        }
        s += &format!("    }};\n    {call};\n}}\n");
        s
    }
}

#[derive(Clone, Debug)]
pub enum Failure {
    /// Side B could not be set up (mount failed) while the kernel could.
    Setup(String),
    /// The trees differ before any op ran (lookup, listing, whiteout or opaque handling).
    /// The second field is the kind of difference (see `snapshot::diff_kind`).
    Initial(Vec<String>, String),
    Step {
        index: usize,
        op: String,
        kernel: String,
        other: String,
    },
    Final(Vec<String>, String),
    /// An op (or the final walk, `index` None) on side B did not return in time; the daemon was
    /// killed so the run could go on.
    Hang {
        index: Option<usize>,
        op: String,
    },
    /// The harness itself failed on the kernel side (not a finding about side B).
    Harness(String),
}

impl Failure {
    /// Failures with the same signature count as the same bug while shrinking.
    pub fn signature(&self) -> String {
        match self {
            Failure::Setup(_) => "setup".into(),
            Failure::Initial(_, kind) => format!("initial:{kind}"),
            Failure::Step {
                op, kernel, other, ..
            } => {
                let op = op
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("Op::");
                format!("step:{op}:{}", outcome_kind(kernel, other))
            }
            Failure::Final(_, kind) => format!("final:{kind}"),
            Failure::Hang { op, .. } => {
                format!(
                    "hang:{}",
                    op.split(' ')
                        .next()
                        .unwrap_or("")
                        .trim_start_matches("Op::")
                )
            }
            Failure::Harness(_) => "harness".into(),
        }
    }

    pub fn describe(&self, other: &str) -> String {
        match self {
            Failure::Setup(e) => format!("{other} failed to mount where the kernel mounted: {e}"),
            Failure::Initial(d, _) => format!("trees differ before any op:\n  {}", d.join("\n  ")),
            Failure::Step {
                index,
                op,
                kernel,
                other: o,
            } => {
                format!("op #{index} {op}\n  kernel:    {kernel}\n  {other:<10} {o}")
            }
            Failure::Final(d, _) => format!("final trees differ:\n  {}", d.join("\n  ")),
            Failure::Hang { index, op } => format!(
                "{} {op} did not return within {:?}: {other} hung (its daemon was killed)",
                index.map(|i| format!("op #{i}")).unwrap_or_default(),
                op_timeout()
            ),
            Failure::Harness(e) => format!("harness error: {e}"),
        }
    }
}

/// The lower, upper and work dirs of one side, written from the case.
pub struct SideDirs {
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl SideDirs {
    pub fn write(scratch: &Scratch, tag: &str, case: &Case, oci_ok: bool) -> SideDirs {
        let lowers: Vec<PathBuf> = case
            .lowers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let d = scratch.mkdir(&format!("{tag}/l{i}"));
                materialize(l, &d, if oci_ok { l.format } else { Format::Kernel });
                d
            })
            .collect();
        let upper = scratch.mkdir(&format!("{tag}/u"));
        materialize(&case.upper, &upper, Format::Kernel);
        let work = scratch.mkdir(&format!("{tag}/w"));
        SideDirs {
            lowers,
            upper,
            work,
        }
    }

    pub fn layers(&self, case: &Case) -> Layers<'_> {
        Layers {
            lowers: &self.lowers,
            upper: &self.upper,
            work: &self.work,
            redirect_dir: case.redirect_dir,
            metacopy: case.metacopy,
        }
    }
}

/// `LAYERFUSE_FUZZ_TRACE=1` prints every op and its outcome.
fn trace() -> bool {
    std::env::var("LAYERFUSE_FUZZ_TRACE").is_ok_and(|v| v == "1")
}

/// How long one op (or one tree walk) may take before side B counts as hung:
/// `LAYERFUSE_FUZZ_OP_TIMEOUT` seconds, default 10.
pub fn op_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("LAYERFUSE_FUZZ_OP_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    )
}

/// Kills a hung daemon: while armed, a watcher thread SIGKILLs `pid` once the deadline passes,
/// which aborts the FUSE connection so the blocked call returns (ENOTCONN) and the run goes on.
pub struct Watchdog {
    started: Instant,
    /// Deadline in ms since `started`; 0 = disarmed.
    deadline_ms: AtomicU64,
    fired: AtomicBool,
}

impl Watchdog {
    pub fn arm(&self) {
        let d = self.started.elapsed() + op_timeout();
        self.deadline_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::SeqCst);
    }
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// Runs `f` with a watchdog over the daemon `pid` (none for the kernel: nothing to kill).
pub fn watched<R>(pid: Option<u32>, f: impl FnOnce(&Watchdog) -> R) -> R {
    let w = Watchdog {
        started: Instant::now(),
        deadline_ms: AtomicU64::new(0),
        fired: AtomicBool::new(false),
    };
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let d = w.deadline_ms.load(Ordering::SeqCst);
                if d != 0 && w.started.elapsed().as_millis() as u64 > d {
                    w.fired.store(true, Ordering::SeqCst);
                    if let Some(pid) = pid {
                        sys::kill(pid, libc::SIGKILL);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let r = f(&w);
        stop.store(true, Ordering::SeqCst);
        r
    })
}

/// Runs `case` on the kernel and on `other`; Ok if every outcome and the final tree agree.
pub fn run_case(case: &Case, other: Impl) -> Result<(), Failure> {
    run_cases(case, case, other)
}

/// As `run_case`, with side B set up from `b_case` (its layers and options; the ops are `case`'s).
/// Only the harness self-test gives two different cases, to prove a difference is caught.
pub fn run_cases(case: &Case, b_case: &Case, other: Impl) -> Result<(), Failure> {
    let scratch = Scratch::new();
    let a_dirs = SideDirs::write(&scratch, "A", case, false);
    let b_dirs = SideDirs::write(&scratch, "B", b_case, other == Impl::Layerfuse);
    let a_mnt = Mounted::mount(Impl::Kernel, &a_dirs.layers(case), &scratch.dir.join("A/m"))
        .map_err(Failure::Harness)?;
    let b_mnt = Mounted::mount(other, &b_dirs.layers(b_case), &scratch.dir.join("B/m"))
        .map_err(Failure::Setup)?;
    let mut a = Side::new(&a_mnt.mnt);
    let mut b = Side::new(&b_mnt.mnt);
    let res = watched(b_mnt.pid(), |w| {
        let hang = |index: Option<usize>, op: String| Failure::Hang { index, op };
        let ta = snapshot(&a.root);
        w.arm();
        let tb = snapshot(&b.root);
        w.disarm();
        if w.fired() {
            return Err(hang(None, "walking the initial tree".into()));
        }
        ta.record_initial(&mut a);
        tb.record_initial(&mut b);
        let (d, kind) = diff(
            &ta.described(None),
            &tb.described(None),
            "kernel",
            other.name(),
        );
        if !d.is_empty() {
            return Err(Failure::Initial(d, kind));
        }
        for (index, op) in case.ops.iter().enumerate() {
            let mut ra = exec(op, &mut a);
            w.arm();
            let mut rb = exec(op, &mut b);
            w.disarm();
            let describes_dir = ra.split(' ').nth(1) == Some("d") || ra.contains("[d ");
            if lower_hard_links(case) && describes_dir {
                // The kept difference of `lower_hard_links` (below), for a stat of a directory.
                ra = mask_nlink(&ra);
                rb = mask_nlink(&rb);
            }
            if w.fired() {
                return Err(hang(Some(index), op.render()));
            }
            if trace() {
                eprintln!("  #{index} {}\n      -> {ra}", op.render());
            }
            if tolerate_kernel_quirks(&ra, &rb) != rb {
                return Err(Failure::Step {
                    index,
                    op: op.render(),
                    kernel: ra,
                    other: rb,
                });
            }
        }
        a.close_all();
        w.arm();
        b.close_all();
        let (ta, tb) = (snapshot(&a.root), snapshot(&b.root));
        w.disarm();
        if w.fired() {
            return Err(hang(None, "walking the final tree".into()));
        }
        let (mut da, mut db) = (ta.described(Some(&a)), tb.described(Some(&b)));
        if lower_hard_links(case) {
            // A kept difference (docs/design.md): FUSE does not say through which name
            // a hard-linked lower file is written, so layerfuse may copy up another name
            // than the kernel does, and different parent directories become merged
            // (nlink 1). Directory link counts are not compared in such cases.
            for t in [&mut da, &mut db] {
                for d in t.values_mut() {
                    if d.starts_with("d ") {
                        *d = mask_nlink(d);
                    }
                }
            }
        }
        if trace() {
            for (p, d) in &da {
                eprintln!("  final /{p}: {d}");
            }
        }
        let (d, kind) = diff(&da, &db, "kernel", other.name());
        if d.is_empty() {
            Ok(())
        } else {
            Err(Failure::Final(d, kind))
        }
    });
    drop((a, b));
    drop(b_mnt);
    drop(a_mnt);
    res
}

/// Delta debugging: the smallest case (fewest ops, then fewest layer entries, then simplest ops)
/// that still fails with the same signature. `budget` bounds the number of runs, and
/// `LAYERFUSE_FUZZ_SHRINK_SECS` (default 180) the time.
pub fn shrink(
    case: &Case,
    fails: &dyn Fn(&Case) -> Option<Failure>,
    sig: &str,
    budget: usize,
) -> Case {
    let runs = std::cell::Cell::new(0usize);
    let secs = std::env::var("LAYERFUSE_FUZZ_SHRINK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let test = |c: &Case| -> bool {
        if runs.get() >= budget || std::time::Instant::now() > deadline {
            return false;
        }
        runs.set(runs.get() + 1);
        fails(c).is_some_and(|f| f.signature() == sig)
    };
    let mut best = case.clone();
    // Ops after a failing step never matter.
    if let Some(Failure::Step { index, .. }) = fails(&best) {
        best.ops.truncate(index + 1);
    }
    // ddmin over the op list.
    let mut n = 2usize;
    while best.ops.len() >= 2 {
        let len = best.ops.len();
        let chunk = len.div_ceil(n);
        let mut reduced = false;
        for start in (0..len).step_by(chunk) {
            let mut c = best.clone();
            c.ops.drain(start..(start + chunk).min(len));
            if test(&c) {
                best = c;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= len {
                break;
            }
            n = (n * 2).min(len);
        }
    }
    if best.ops.len() == 1 {
        let mut c = best.clone();
        c.ops.clear();
        if test(&c) {
            best = c;
        }
    }
    loop {
        let before = best.clone();
        // whole lower layers, then single entries of every layer
        let mut i = 0;
        while best.lowers.len() > 1 && i < best.lowers.len() {
            let mut c = best.clone();
            c.lowers.remove(i);
            if test(&c) { best = c } else { i += 1 }
        }
        for li in 0..=best.lowers.len() {
            let mut ei = 0;
            loop {
                let layer = if li < best.lowers.len() {
                    &best.lowers[li]
                } else {
                    &best.upper
                };
                if ei >= layer.entries.len() {
                    break;
                }
                let mut c = best.clone();
                let l = if li < c.lowers.len() {
                    &mut c.lowers[li]
                } else {
                    &mut c.upper
                };
                l.entries.remove(ei);
                if test(&c) { best = c } else { ei += 1 }
            }
        }
        // one op at a time (ddmin may leave some), then simpler ops
        let mut oi = 0;
        while oi < best.ops.len() {
            let mut c = best.clone();
            c.ops.remove(oi);
            if test(&c) { best = c } else { oi += 1 }
        }
        for oi in 0..best.ops.len() {
            for simpler in best.ops[oi].simpler() {
                let mut c = best.clone();
                c.ops[oi] = simpler;
                if test(&c) {
                    best = c;
                    break;
                }
            }
        }
        // simpler layers: kernel format, no attributes, empty content
        for li in 0..=best.lowers.len() {
            let count = if li < best.lowers.len() {
                best.lowers[li].entries.len()
            } else {
                best.upper.entries.len()
            };
            if li < best.lowers.len() && best.lowers[li].format == Format::Oci {
                let mut c = best.clone();
                c.lowers[li].format = Format::Kernel;
                if test(&c) {
                    best = c;
                }
            }
            for ei in 0..count {
                for k in 0..4 {
                    let mut c = best.clone();
                    let l = if li < c.lowers.len() {
                        &mut c.lowers[li]
                    } else {
                        &mut c.upper
                    };
                    let e = &mut l.entries[ei];
                    let changed = match k {
                        0 if !e.xattrs.is_empty() => {
                            e.xattrs.clear();
                            true
                        }
                        1 if (e.uid, e.gid) != (0, 0) => {
                            e.uid = 0;
                            e.gid = 0;
                            true
                        }
                        2 => match &mut e.kind {
                            super::layers::Kind::File(s) if s.len() > 1 => {
                                *s = "x".into();
                                true
                            }
                            _ => false,
                        },
                        3 if e.opaque => {
                            e.opaque = false;
                            true
                        }
                        _ => false,
                    };
                    if changed && test(&c) {
                        best = c;
                    }
                }
            }
        }
        if best == before || runs.get() >= budget {
            break;
        }
    }
    best
}

/// Every seed of a run gets a distinct, printable 64-bit seed.
pub fn seed_for(base: u64, i: u64) -> u64 {
    let mut r = Rng::new(base.wrapping_add(i.wrapping_mul(0x9E37_79B9)));
    r.next_u64() % 1_000_000_000
}

/// Runs `case` with `check`; on failure, confirms it reproduces, shrinks it and returns a report
/// whose reproducer test calls `call` (e.g. `check_case(&case)`). A failure whose signature is in
/// `shrunk` already is reported without shrinking again (keeps a many-failure CI run short).
pub fn report(
    case: &Case,
    check: &dyn Fn(&Case) -> Result<(), Failure>,
    other: Impl,
    call: &str,
    shrunk: &mut std::collections::HashSet<String>,
) -> Result<(), String> {
    let first = match check(case) {
        Ok(()) => return Ok(()),
        Err(f) => f,
    };
    if let Failure::Harness(e) = &first {
        return Err(format!(
            "seed {}: harness error (kernel side): {e}",
            case.seed
        ));
    }
    let again = check(case).err();
    let sig = first.signature();
    if again.as_ref().map(|f| f.signature()) != Some(sig.clone()) {
        return Err(format!(
            "seed {}: NONDETERMINISTIC failure (did not reproduce the same way)\n{}",
            case.seed,
            first.describe(other.name())
        ));
    }
    if !shrunk.insert(sig.clone()) {
        return Err(format!(
            "seed {} MISMATCH ({sig}, as a seed shrunk above; replay with LAYERFUSE_FUZZ_SEED={})\n{}",
            case.seed,
            case.seed,
            first.describe(other.name())
        ));
    }
    let budget: usize = std::env::var("LAYERFUSE_FUZZ_SHRINK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let small = shrink(case, &|c| check(c).err(), &sig, budget);
    let f = check(&small).err().unwrap_or(first);
    let what = f.describe(other.name());
    let fn_name = call
        .split('(')
        .next()
        .unwrap_or("check")
        .trim_start_matches("check_");
    let kind: String = sig
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut name = format!("{fn_name}_seed_{}_{kind}", case.seed);
    name.truncate(80);
    let test = small.render_test(&name, &what, call);
    Err(format!(
        "seed {} ({} ops) MISMATCH, replay with LAYERFUSE_FUZZ_SEED={}\n{what}\n\nminimal reproducer ({} ops):\n{test}",
        case.seed,
        case.ops.len(),
        case.seed,
        small.ops.len()
    ))
}

pub fn run_and_report(
    case: &Case,
    other: Impl,
    shrunk: &mut std::collections::HashSet<String>,
) -> Result<(), String> {
    report(
        case,
        &|c| run_case(c, other),
        other,
        "check_case(&case)",
        shrunk,
    )
}

/// Regression tests call this: panics with a description on any difference.
pub fn check_case(case: &Case) {
    let other = Impl::from_env();
    if !super::mount::environment_ok() {
        return;
    }
    let _g = crate::serial();
    crate::setup();
    if let Err(f) = run_case(case, other) {
        panic!("{}", f.describe(other.name()));
    }
}

/// Whether any lower layer of the case holds a hard link.
fn lower_hard_links(case: &Case) -> bool {
    case.lowers.iter().any(|l| {
        l.entries
            .iter()
            .any(|e| matches!(e.kind, super::layers::Kind::HardLink(_)))
    })
}

/// A described directory with its link count masked.
fn mask_nlink(d: &str) -> String {
    d.split(' ')
        .map(|t| {
            if t.starts_with("nlink=") {
                "nlink=*"
            } else {
                t
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
