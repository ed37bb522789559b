//! Random differential conformance tests: layerfuse against kernel overlayfs.
//! See docs/conformance.md. Needs root, /dev/fuse and kernel overlayfs; under `CI=true` a missing
//! one fails the test instead of skipping it.

#[allow(unused_imports)]
#[path = "common/mod.rs"]
mod common;
#[path = "conformance/concurrency.rs"]
mod concurrency;
#[path = "conformance/interop.rs"]
mod interop;
#[path = "conformance/layers.rs"]
mod layers;
#[path = "conformance/mount.rs"]
mod mount;
#[path = "conformance/ops.rs"]
mod ops;
#[path = "conformance/regressions.rs"]
mod regressions;
#[path = "conformance/runner.rs"]
mod runner;
#[path = "conformance/snapshot.rs"]
mod snapshot;

use common::sys;
use mount::{Impl, environment_ok};
use runner::{Case, run_and_report, seed_for};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Built with `--features portable`: layerfuse runs the portable OS module (`src/sys/bsd.rs`,
/// what FreeBSD and macOS run). What a process sees through the merged view is still judged
/// by the kernel; what that module does not have by design (docs/design.md "The portable
/// path") is not compared, and says so where it is skipped: no xattrs (xattr ops are not run,
/// trees compare none), no redirects nor metacopy (the kernel judges with `redirect_dir=off`,
/// `metacopy=off`), no RENAME_EXCHANGE (not run), and its upper is an OCI-format layer (its
/// layers are written in that format, its upper's `.wh.` markers are read as such).
pub const PORTABLE: bool = cfg!(feature = "portable");

/// Mount-heavy tests run one at a time: they share the machine's two cores and the fixed
/// timeouts of the concurrency test must not be eaten by a neighbour.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn setup() {
    sys::set_umask(0o022);
}

/// Runs `seeds`; prints every seed; returns the reports of the failing ones.
fn run_seeds(
    seeds: &[u64],
    n_ops: usize,
    other: Impl,
    stop_on_first: bool,
) -> (usize, Vec<String>) {
    run_generated(seeds, n_ops, other, stop_on_first, Case::generate)
}

/// `run_seeds` with another case generator (`Case::generate_chained`).
fn run_generated(
    seeds: &[u64],
    n_ops: usize,
    other: Impl,
    stop_on_first: bool,
    generate: fn(u64, usize) -> Case,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut ops = 0;
    let mut shrunk = HashSet::new();
    for &seed in seeds {
        let case = generate(seed, n_ops);
        ops += case.ops.len();
        match run_and_report(&case, other, &mut shrunk) {
            Ok(()) => eprintln!(
                "seed {seed}: ok ({} ops, kernel vs {})",
                case.ops.len(),
                other.name()
            ),
            Err(report) => {
                eprintln!("{report}");
                failures.push(report);
                if stop_on_first {
                    break;
                }
            }
        }
    }
    (ops, failures)
}

/// The CI set: `LAYERFUSE_FUZZ_SEEDS` seeds (default 20) of `LAYERFUSE_FUZZ_OPS` ops (default 60)
/// against the implementation named by `LAYERFUSE_FUZZ_IMPL` (default layerfuse).
/// `LAYERFUSE_FUZZ_SEED=S` replays exactly seed S.
#[test]
fn fixed_seeds() {
    let other = Impl::from_env();
    if !environment_ok() {
        return;
    }
    let _g = serial();
    setup();
    let n_ops = env_u64("LAYERFUSE_FUZZ_OPS", 60) as usize;
    let seeds: Vec<u64> = match std::env::var("LAYERFUSE_FUZZ_SEED") {
        Ok(s) => vec![s.parse().expect("LAYERFUSE_FUZZ_SEED must be a number")],
        Err(_) => (0..env_u64("LAYERFUSE_FUZZ_SEEDS", 20))
            .map(|i| seed_for(0, i))
            .collect(),
    };
    let (ops, failures) = run_seeds(&seeds, n_ops, other, false);
    eprintln!(
        "{} sequences, {ops} ops, {} mismatching",
        seeds.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} seeds mismatch:\n\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n\n")
    );
}

/// Directories renamed across commits, N levels (`Case::generate_chained`):
/// `LAYERFUSE_FUZZ_CHAIN_SEEDS` seeds (default 100, ~10 s); `LAYERFUSE_FUZZ_SEED=S` replays seed S.
#[test]
fn chained_commits() {
    let other = Impl::from_env();
    if !environment_ok() {
        return;
    }
    let _g = serial();
    setup();
    let n_ops = env_u64("LAYERFUSE_FUZZ_OPS", 60) as usize;
    let seeds: Vec<u64> = match std::env::var("LAYERFUSE_FUZZ_SEED") {
        Ok(s) => vec![s.parse().expect("LAYERFUSE_FUZZ_SEED must be a number")],
        Err(_) => (0..env_u64("LAYERFUSE_FUZZ_CHAIN_SEEDS", 100))
            .map(|i| seed_for(4000, i))
            .collect(),
    };
    let (ops, failures) = run_generated(&seeds, n_ops, other, false, Case::generate_chained);
    eprintln!(
        "{} chained sequences, {ops} ops, {} mismatching",
        seeds.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} chained seeds mismatch:\n\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n\n")
    );
}

/// The runner checked against itself: kernel overlayfs on both sides must never differ. A
/// failure here is a bug in the harness (nondeterminism), not in layerfuse.
#[test]
fn harness_is_deterministic_kernel_vs_kernel() {
    if !environment_ok() {
        return;
    }
    let _g = serial();
    setup();
    let seeds: Vec<u64> = (0..env_u64("LAYERFUSE_FUZZ_SELFCHECK_SEEDS", 10))
        .map(|i| seed_for(77, i))
        .collect();
    let (_, failures) = run_seeds(&seeds, 60, Impl::Kernel, false);
    assert!(
        failures.is_empty(),
        "kernel vs kernel differs (harness bug):\n{}",
        failures.join("\n\n")
    );
}

/// Long runs (scripts/fuzz.sh): random seeds for `LAYERFUSE_FUZZ_MINUTES`, stop at the first
/// mismatch and print its minimal reproducer.
#[test]
#[ignore = "long run: scripts/fuzz.sh"]
fn fuzz_long() {
    let other = Impl::from_env();
    assert!(environment_ok(), "environment missing");
    let _g = serial();
    setup();
    let n_ops = env_u64("LAYERFUSE_FUZZ_OPS", 60) as usize;
    if let Ok(s) = std::env::var("LAYERFUSE_FUZZ_SEED") {
        let seed = s.parse().expect("LAYERFUSE_FUZZ_SEED must be a number");
        let (_, failures) = run_seeds(&[seed], n_ops, other, true);
        assert!(failures.is_empty(), "seed {seed} mismatches");
        return;
    }
    let minutes = env_u64("LAYERFUSE_FUZZ_MINUTES", 5);
    let base = env_u64(
        "LAYERFUSE_FUZZ_BASE",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
    );
    eprintln!(
        "fuzzing kernel vs {} for {minutes} min, base {base}, {n_ops} ops per sequence",
        other.name()
    );
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    let (mut sequences, mut ops) = (0u64, 0usize);
    let mut i = 0;
    while Instant::now() < deadline {
        let seed = seed_for(base, i);
        i += 1;
        // Every other sequence renames directories across commits.
        let generate = if i % 2 == 0 {
            Case::generate_chained
        } else {
            Case::generate
        };
        let (n, failures) = run_generated(&[seed], n_ops, other, true, generate);
        sequences += 1;
        ops += n;
        if !failures.is_empty() {
            eprintln!("TOTAL: {sequences} sequences, {ops} ops, stopped at seed {seed}");
            panic!("mismatch at seed {seed}");
        }
    }
    eprintln!("TOTAL: {sequences} sequences, {ops} ops, 0 mismatches");
}

fn interop_seeds(writer: Impl, reader: Impl) {
    let _g = serial();
    setup();
    let n = env_u64("LAYERFUSE_FUZZ_INTEROP_SEEDS", 10);
    let call = format!(
        "check_interop(&case, Impl::{:?}, Impl::{:?})",
        writer, reader
    );
    let mut failures = Vec::new();
    let mut shrunk = HashSet::new();
    for i in 0..n {
        let case = Case::generate(seed_for(1000, i), 60);
        let check = |c: &Case| interop::interop_case(c, writer, reader);
        match runner::report(&case, &check, reader, &call, &mut shrunk) {
            Ok(()) => eprintln!(
                "seed {}: {} -> {} ok",
                case.seed,
                writer.name(),
                reader.name()
            ),
            Err(r) => {
                eprintln!("{r}");
                failures.push(r);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} seeds differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// An upper written by layerfuse, read by kernel overlayfs over the same lowers.
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "the kernel's on-disk format: the portable path writes an OCI-format upper (.wh. markers, no xattrs), which kernel overlayfs does not read"
)]
fn interop_layerfuse_upper_read_by_kernel() {
    let other = Impl::from_env();
    if environment_ok() {
        interop_seeds(other, Impl::Kernel);
    }
}

/// An upper written by kernel overlayfs (whiteouts, opaque dirs, redirects, index), read by layerfuse.
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "the kernel's on-disk format: its opaque, redirect and index markers are xattrs, which the portable path does not read"
)]
fn interop_kernel_upper_read_by_layerfuse() {
    let other = Impl::from_env();
    if environment_ok() {
        interop_seeds(Impl::Kernel, other);
    }
}

/// The tree through a live mount equals the tree after unmount and remount.
#[test]
fn remount_consistency() {
    let other = Impl::from_env();
    if environment_ok() {
        interop_seeds(other, other);
    }
}

/// `LAYERFUSE_FUZZ_THREADS` threads (default 4) × `LAYERFUSE_FUZZ_OPS`×5 ops on one mount.
#[test]
fn concurrency() {
    let other = Impl::from_env();
    if !environment_ok() {
        return;
    }
    let _g = serial();
    setup();
    let threads = env_u64("LAYERFUSE_FUZZ_THREADS", 4) as usize;
    let ops = env_u64("LAYERFUSE_FUZZ_OPS", 60) as usize * 5;
    let mut failures = Vec::new();
    for i in 0..env_u64("LAYERFUSE_FUZZ_CONC_SEEDS", 3) {
        let seed = seed_for(2000, i);
        match concurrency::concurrent_run(seed, threads, ops, other, Duration::from_secs(120)) {
            Ok(()) => eprintln!(
                "seed {seed}: {threads} threads × {ops} ops on {} ok",
                other.name()
            ),
            Err(e) => {
                eprintln!(
                    "seed {seed}: concurrency problems on {}:\n{e}",
                    other.name()
                );
                failures.push(format!("seed {seed}:\n{e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The runner must catch a real difference and shrink it: kernel with redirect_dir=on against
/// kernel with redirect_dir=off differs exactly on renaming a lower directory (EXDEV).
#[test]
fn harness_catches_and_shrinks_a_difference() {
    if !environment_ok() {
        return;
    }
    let _g = serial();
    setup();
    use layers::{E, Layer};
    use ops::Op;
    let mut case = Case::generate(seed_for(3000, 0), 60);
    case.redirect_dir = true;
    case.lowers
        .push(Layer::kernel(vec![E::dir("zdir"), E::file("zdir/f", "x")]));
    case.ops.insert(
        30,
        Op::Rename {
            from: "zdir".into(),
            to: "zmoved".into(),
            flags: 0,
        },
    );
    let mut off = case.clone();
    off.redirect_dir = false;
    let check = |c: &Case| {
        let mut o = c.clone();
        o.redirect_dir = false;
        runner::run_cases(c, &o, Impl::Kernel)
    };
    let first = runner::run_cases(&case, &off, Impl::Kernel).expect_err("difference not detected");
    let sig = first.signature();
    assert!(
        sig.starts_with("step:"),
        "unexpected failure {}",
        first.describe("kernel-off")
    );
    let small = runner::shrink(&case, &|c| check(c).err(), &sig, 400);
    eprintln!(
        "{}",
        small.render_test(
            "shrunk",
            &check(&small).unwrap_err().describe("kernel-off"),
            "check_case(&case)"
        )
    );
    assert!(
        small.ops.len() <= 2,
        "shrinker left {} ops",
        small.ops.len()
    );
    let entries: usize =
        small.lowers.iter().map(|l| l.entries.len()).sum::<usize>() + small.upper.entries.len();
    assert!(entries <= 2, "shrinker left {entries} layer entries");
}
