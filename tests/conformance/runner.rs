//! Differential runner: the same case on kernel overlayfs (side A, the reference) and on the
//! implementation under test (side B), compared after every op and as a whole tree at the end;
//! a delta-debugging shrinker; reproducers rendered as Rust tests.

use super::layers::{E, Format, Kind, Layer, Rng, materialize, random_layer};
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

    /// Directories renamed across commits (issue 17's family): `generate`'s case cut by
    /// 1-3 `Op::Commit`s; before each, one or two directories move (renamed in place, into
    /// another directory, into one moved before, or an ancestor of one moved before), and
    /// after it their new places are listed. A commit stacks the upper on the lowers, so a
    /// directory moved at every level is found through a chain of redirects, relative and
    /// absolute, in several layers.
    pub fn generate_chained(seed: u64, n_ops: usize) -> Case {
        let mut case = Case::generate(seed, n_ops);
        // Without redirects a lower directory cannot be renamed (EXDEV): nothing to chain.
        case.redirect_dir = true;
        // Metadata-only copies read back from a lower layer are not followed to their data
        // yet (docs/reliability.md, known gaps); the rename family is tested without them.
        case.metacopy = false;
        // A commit drops the work dir and with it the hard-link index: a lower file with
        // several names then shows through each name as its layer holds it, and which name
        // holds the copy is a kept difference (FUSE does not say through which name a file
        // is written; docs/design.md). Not this family's subject.
        // Hard links made in an upper become lower ones at the next commit: none either.
        for l in case.lowers.iter_mut().chain([&mut case.upper]) {
            l.entries.retain(|e| !matches!(e.kind, Kind::HardLink(_)));
        }
        case.ops.retain(|op| !matches!(op, Op::Link { .. }));
        let mut rng = Rng::new(seed ^ 0xC0FF_EE17);
        let mut dirs: Vec<String> = case
            .lowers
            .iter()
            .flat_map(|l| &l.entries)
            .filter(|e| e.kind == Kind::Dir)
            .map(|e| e.path.clone())
            .collect();
        if dirs.is_empty() {
            let bottom = case.lowers.len() - 1;
            case.lowers[bottom]
                .entries
                .extend([E::dir("r"), E::file("r/f", "x")]);
            dirs.push("r".into());
        }
        dirs.sort();
        dirs.dedup();
        let levels = 1 + rng.below(3);
        let ops = std::mem::take(&mut case.ops);
        let mut chunks = ops.chunks(ops.len().div_ceil(levels + 1).max(1));
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        for level in 0..levels {
            out.extend(chunks.next().unwrap_or_default().iter().cloned());
            let mut moved = Vec::new();
            for _ in 0..1 + rng.below(2) {
                let from = match &last {
                    Some(l) if rng.chance(60) => l.clone(),
                    // now and then the parent of the one moved last
                    Some(l) if rng.chance(30) && l.contains('/') => {
                        l.rsplit_once('/').map_or(l.clone(), |(p, _)| p.to_string())
                    }
                    _ => rng.pick(&dirs),
                };
                let inside = |d: &String| *d == from || d.starts_with(&format!("{from}/"));
                let mut parents: Vec<String> =
                    dirs.iter().filter(|d| !inside(d)).cloned().collect();
                parents.push(String::new());
                // A third of the moves rename in place (a relative redirect).
                let parent = if rng.chance(33) {
                    from.rsplit_once('/')
                        .map_or(String::new(), |(p, _)| p.to_string())
                } else {
                    rng.pick(&parents)
                };
                let base = from.rsplit('/').next().unwrap_or("r");
                let mut to = if parent.is_empty() {
                    format!("{base}{level}")
                } else if rng.chance(50) {
                    format!("{parent}/{base}")
                } else {
                    format!("{parent}/{base}{level}")
                };
                while to == from || dirs.contains(&to) {
                    to.push('m');
                }
                for d in dirs.iter_mut() {
                    if *d == from {
                        *d = to.clone();
                    } else if let Some(rest) = d.strip_prefix(&format!("{from}/")) {
                        *d = format!("{to}/{rest}");
                    }
                }
                out.push(Op::Rename {
                    from,
                    to: to.clone(),
                    flags: 0,
                });
                moved.push(to.clone());
                last = Some(to);
            }
            out.push(Op::Commit);
            out.extend(moved.into_iter().map(|path| Op::Readdir { path }));
        }
        for c in chunks {
            out.extend(c.iter().cloned());
        }
        case.ops = out;
        case
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
    /// The trees differ after the commit at op `.0` (unmount, upper stacked as a lower,
    /// remount): the upper written before reads back differently.
    Committed(usize, Vec<String>, String),
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
            Failure::Committed(_, _, kind) => format!("commit:{kind}"),
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
            Failure::Committed(i, d, _) => format!(
                "trees differ after the commit at op #{i}:\n  {}",
                d.join("\n  ")
            ),
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
    /// `oci_ok`: only layerfuse mounts this side (the kernel cannot read OCI whiteouts).
    /// On the portable path every layer of such a side is written in the OCI format, the
    /// one it reads (its opaque marker is a file, not an xattr).
    pub fn write(scratch: &Scratch, tag: &str, case: &Case, oci_ok: bool) -> SideDirs {
        let format = |l: &Layer| match (oci_ok, crate::PORTABLE) {
            (false, _) => Format::Kernel,
            (true, true) => Format::Oci,
            (true, false) => l.format,
        };
        let lowers: Vec<PathBuf> = case
            .lowers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let d = scratch.mkdir(&format!("{tag}/l{i}"));
                materialize(l, &d, format(l));
                d
            })
            .collect();
        let upper = scratch.mkdir(&format!("{tag}/u"));
        materialize(&case.upper, &upper, format(&Layer::kernel(vec![])));
        let work = scratch.mkdir(&format!("{tag}/w"));
        SideDirs {
            lowers,
            upper,
            work,
        }
    }

    /// The upper becomes the topmost lower (`TAG/cN`); a fresh upper and work dir.
    pub fn commit(&mut self, scratch: &Scratch, tag: &str, n: usize) {
        let layer = scratch.dir.join(format!("{tag}/c{n}"));
        std::fs::rename(&self.upper, &layer).expect("commit: move the upper");
        let _ = std::fs::remove_dir_all(&self.work);
        self.lowers.insert(0, layer);
        self.upper = scratch.mkdir(&format!("{tag}/u"));
        self.work = scratch.mkdir(&format!("{tag}/w"));
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
/// `Op::Commit` splits the ops into segments: between two, both sides are unmounted, each
/// side's upper becomes its own topmost lower, and the trees must agree after the remount.
pub fn run_cases(case: &Case, b_case: &Case, other: Impl) -> Result<(), Failure> {
    let (case, b_case) = (
        &portable_options(case, other),
        &portable_options(b_case, other),
    );
    let scratch = Scratch::new();
    let mut a_dirs = SideDirs::write(&scratch, "A", case, false);
    let mut b_dirs = SideDirs::write(&scratch, "B", b_case, other == Impl::Layerfuse);
    let mut a_mnt = Mounted::mount(Impl::Kernel, &a_dirs.layers(case), &scratch.dir.join("A/m"))
        .map_err(Failure::Harness)?;
    let mut b_mnt = Mounted::mount(other, &b_dirs.layers(b_case), &scratch.dir.join("B/m"))
        .map_err(Failure::Setup)?;
    let mut a = Side::new(&a_mnt.mnt);
    let mut b = Side::new(&b_mnt.mnt);
    let mut start = 0;
    let mut commits = 0;
    let res = loop {
        let end = case.ops[start..]
            .iter()
            .position(|op| matches!(op, Op::Commit))
            .map_or(case.ops.len(), |i| start + i);
        let seg = run_segment(case, other, (&mut a, &mut b), start..end, b_mnt.pid());
        if seg.is_err() || end == case.ops.len() {
            break seg;
        }
        // Commit: unmount both, stack each upper on its own lowers, mount again.
        a.close_all();
        b.close_all();
        commits += 1;
        // Placeholders until the remounts below (dropping an unmounted guard is a no-op).
        let a_gone = std::mem::replace(&mut a_mnt, Mounted::none()).unmount();
        let b_gone = std::mem::replace(&mut b_mnt, Mounted::none()).unmount();
        if let Err(e) = a_gone {
            break Err(Failure::Harness(format!("kernel unmount at commit: {e}")));
        }
        a_dirs.commit(&scratch, "A", commits);
        b_dirs.commit(&scratch, "B", commits);
        a_mnt = match Mounted::mount(Impl::Kernel, &a_dirs.layers(case), &scratch.dir.join("A/m")) {
            Ok(m) => m,
            Err(e) => break Err(Failure::Harness(e)),
        };
        let step = |other: String| Failure::Step {
            index: end,
            op: Op::Commit.render(),
            kernel: "commit".into(),
            other,
        };
        if let Err(e) = b_gone {
            break Err(step(format!("unmount: {e}")));
        }
        b_mnt = match Mounted::mount(other, &b_dirs.layers(b_case), &scratch.dir.join("B/m")) {
            Ok(m) => m,
            Err(e) => break Err(step(format!("mount: {e}"))),
        };
        let walked = watched(b_mnt.pid(), |w| {
            w.arm();
            let t = (snapshot(&a.root), snapshot(&b.root));
            w.disarm();
            (!w.fired()).then_some(t)
        });
        let Some((ta, tb)) = walked else {
            break Err(Failure::Hang {
                index: Some(end),
                op: "walking the tree after a commit".into(),
            });
        };
        // Inode identities are compared within a mount only (as in the interop tests):
        // the kernel's root, for one, takes the new upper's number at each mount.
        let (d, kind) = diff(
            &ta.described(None),
            &tb.described(None),
            "kernel",
            other.name(),
        );
        if !d.is_empty() {
            break Err(Failure::Committed(end, d, kind));
        }
        a.initial_ino.clear();
        b.initial_ino.clear();
        ta.record_initial(&mut a);
        tb.record_initial(&mut b);
        start = end + 1;
    };
    drop((a, b));
    drop(b_mnt);
    drop(a_mnt);
    res
}

/// On the portable path (`crate::PORTABLE`, layerfuse under test) the kernel judges with the
/// options that path has: `redirect_dir=off` (a redirect is an xattr: renaming a lower
/// directory is EXDEV there) and so `metacopy=off` (its marker is an xattr too, and the kernel
/// wants redirects for it). Elsewhere the case as it is.
fn portable_options(case: &Case, other: Impl) -> Case {
    let mut c = case.clone();
    if crate::PORTABLE && other == Impl::Layerfuse {
        c.redirect_dir = false;
        c.metacopy = false;
    }
    c
}

/// Why an op is not run on the portable path (`crate::PORTABLE`, layerfuse under test), on
/// either side, so both trees stay comparable: what that path does not have by design.
pub fn not_on_portable(op: &Op, other: Impl) -> Option<&'static str> {
    if !crate::PORTABLE || other != Impl::Layerfuse {
        return None;
    }
    match op {
        Op::SetXattr { .. }
        | Op::GetXattr { .. }
        | Op::ListXattr { .. }
        | Op::RemoveXattr { .. } => Some("not run: the portable path has no xattrs"),
        Op::Rename { flags, .. } if flags & libc::RENAME_EXCHANGE != 0 => {
            Some("not run: the portable path has no RENAME_EXCHANGE (EINVAL)")
        }
        _ => None,
    }
}

/// One segment of ops between commits on both sides: the initial trees (first segment), each
/// op's outcome, and the final trees (last segment).
fn run_segment(
    case: &Case,
    other: Impl,
    (a, b): (&mut Side, &mut Side),
    ops: std::ops::Range<usize>,
    pid: Option<u32>,
) -> Result<(), Failure> {
    let (first, last) = (ops.start == 0, ops.end == case.ops.len());
    watched(pid, |w| {
        let hang = |index: Option<usize>, op: String| Failure::Hang { index, op };
        if first {
            let ta = snapshot(&a.root);
            w.arm();
            let tb = snapshot(&b.root);
            w.disarm();
            if w.fired() {
                return Err(hang(None, "walking the initial tree".into()));
            }
            ta.record_initial(a);
            tb.record_initial(b);
            let (d, kind) = diff(
                &ta.described(None),
                &tb.described(None),
                "kernel",
                other.name(),
            );
            if !d.is_empty() {
                return Err(Failure::Initial(d, kind));
            }
        }
        for index in ops {
            let op = &case.ops[index];
            if let Some(why) = not_on_portable(op, other) {
                if trace() {
                    eprintln!("  #{index} {}\n      -> {why}", op.render());
                }
                continue;
            }
            let mut ra = exec(op, a);
            w.arm();
            let mut rb = exec(op, b);
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
        if !last {
            return Ok(());
        }
        a.close_all();
        w.arm();
        b.close_all();
        let (ta, tb) = (snapshot(&a.root), snapshot(&b.root));
        w.disarm();
        if w.fired() {
            return Err(hang(None, "walking the final tree".into()));
        }
        let (mut da, mut db) = (ta.described(Some(a)), tb.described(Some(b)));
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
    })
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
    if let Some(Failure::Step { index, .. } | Failure::Committed(index, ..)) = fails(&best) {
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
