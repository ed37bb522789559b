//! Micro-benchmarks of the union logic without mounting: the `Overlay` API called
//! directly, so the figures are the daemon's own cost per request (no FUSE round trip).
//!
//! `cargo bench --bench union` prints, for each case, the median of 5 runs:
//! - lookup of a name through 1, 10, 100 and 500 lower layers (hit in the bottom layer,
//!   and a miss), the cost that should stay flat in the number of layers;
//! - a merged listing of a 10,000-entry directory spread over three layers;
//! - the node table under contention: 1, 2 and 4 threads looking up distinct names.
//!
//! Not a test: nothing here passes or fails on a timing.

use layerfuse::overlay::{NodeId, Overlay, OverlayConfig};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("lf-bench-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).expect("scratch dir");
    p
}

/// A read-only union over `lowers` (no upper: needs no privilege).
fn union(lowers: Vec<PathBuf>) -> Overlay {
    Overlay::new(&OverlayConfig {
        lowers,
        upper: None,
        redirect_dir: true,
        metacopy: false,
        userxattr: true,
        volatile: true,
        ownership: Default::default(),
        grafts: Vec::new(),
        override_stat: None,
    })
    .expect("open union")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median per-operation time of `f`, run `n` times per sample, 5 samples.
fn per_op(n: u32, mut f: impl FnMut(u32)) -> Duration {
    let samples = (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed() / n
        })
        .collect();
    median(samples)
}

fn layers_case(root: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = root.join(format!("l{i}"));
            fs::create_dir_all(d.join("dir")).unwrap();
            // Each layer has a few names of its own in the shared directory.
            for k in 0..4 {
                fs::write(d.join(format!("dir/own-{i}-{k}")), b"x").unwrap();
            }
            d
        })
        .collect()
}

fn lookups() {
    for n in [1usize, 10, 100, 500] {
        let root = scratch(&format!("layers{n}"));
        let lowers = layers_case(&root, n);
        let bottom = n - 1;
        let ov = union(lowers);
        let (dir, _) = ov.lookup(NodeId::ROOT, "dir".as_ref()).expect("dir");
        let hit = OsString::from(format!("own-{bottom}-0"));
        // Warm the per-directory index once, as a mount would after its first lookup.
        let _ = ov.lookup(dir.ino, &hit);
        let t_hit = per_op(2000, |_| {
            let _ = ov.lookup(dir.ino, &hit);
        });
        let t_miss = per_op(2000, |_| {
            let _ = ov.lookup(dir.ino, "missing".as_ref());
        });
        println!(
            "lookup through {n:>3} lowers: hit in the bottom layer {:>8.2?}, miss {:>8.2?}",
            t_hit, t_miss
        );
        let _ = fs::remove_dir_all(&root);
    }
}

fn merged_readdir() {
    let root = scratch("readdir");
    let lowers: Vec<PathBuf> = (0..3).map(|i| root.join(format!("l{i}"))).collect();
    for (i, l) in lowers.iter().enumerate() {
        fs::create_dir_all(l.join("big")).unwrap();
        for k in (i..10_000).step_by(3) {
            fs::write(l.join(format!("big/f{k:05}")), b"").unwrap();
        }
    }
    let ov = union(lowers);
    let (big, _) = ov.lookup(NodeId::ROOT, "big".as_ref()).expect("big");
    let t = per_op(5, |_| {
        let fh = ov.opendir(big.ino).expect("opendir").0;
        let entries = ov.readdir(fh, 0).expect("readdir");
        assert!(entries.len() >= 10_000);
        ov.releasedir(fh);
    });
    println!("merged listing of 10,000 entries over 3 layers: {t:>8.2?}");
    let _ = fs::remove_dir_all(&root);
}

fn contention() {
    let root = scratch("contention");
    let lowers = vec![root.join("l0")];
    fs::create_dir_all(lowers[0].join("d")).unwrap();
    for k in 0..4000 {
        fs::write(lowers[0].join(format!("d/f{k}")), b"").unwrap();
    }
    let ov = Arc::new(union(lowers));
    let (d, _) = ov.lookup(NodeId::ROOT, "d".as_ref()).expect("d");
    for threads in [1usize, 2, 4] {
        let per = 4000 / threads;
        let t = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ov = ov.clone();
                std::thread::spawn(move || {
                    for k in t * per..(t + 1) * per {
                        let _ = ov.lookup(d.ino, format!("f{k}").as_ref());
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        let el = t.elapsed();
        println!(
            "4,000 lookups on {threads} thread(s): {el:>8.2?} ({:.0} lookups/s)",
            4000.0 / el.as_secs_f64()
        );
    }
    let _ = fs::remove_dir_all(&root);
}

fn main() {
    lookups();
    merged_readdir();
    contention();
}
