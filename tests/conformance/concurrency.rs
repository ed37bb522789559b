//! Several threads run random sequences at once on one mount, each mostly in its own subtree and
//! partly in a shared one. Checked: no error the kernel would not give (EIO, ENOTCONN, ...), no
//! deadlock (a deadline), the daemon exits cleanly at unmount, no stray entries in the upper, and
//! a remount shows the tree the live mount showed.

use super::layers::{Kind, Layer, Rng, random_layer};
use super::mount::{Impl, Mounted, Scratch};
use super::ops::{PathPool, Side, exec, random_op};
use super::runner::{Case, SideDirs};
use super::snapshot::{diff, snapshot};
use super::sys;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Errors no conforming union gives for these ops.
const FORBIDDEN: &[&str] = &[
    "EIO", "ENOTCONN", "ENOSYS", "ESTALE", "ENOMEM", "EFAULT", "errno",
];

fn prefixed(layer: Layer, prefix: &str) -> Layer {
    let entries = layer
        .entries
        .into_iter()
        .map(|mut e| {
            e.path = format!("{prefix}{}", e.path);
            if let Kind::HardLink(t) = &mut e.kind {
                *t = format!("{prefix}{t}");
            }
            e
        })
        .collect();
    Layer {
        format: layer.format,
        entries,
    }
}

/// Two lowers, each holding a random subtree under every thread's dir and under `s/`.
fn stack(seed: u64, threads: usize) -> Case {
    let mut rng = Rng::new(seed);
    let prefixes: Vec<String> = (0..threads)
        .map(|t| format!("t{t}/"))
        .chain(["s/".to_string()])
        .collect();
    let lowers = (0..2)
        .map(|_| {
            let mut all = Layer::kernel(vec![]);
            for p in &prefixes {
                let l = random_layer(&mut rng, false);
                all.format = l.format;
                all.entries.extend(prefixed(l, p).entries);
            }
            all
        })
        .collect();
    Case {
        seed,
        redirect_dir: true,
        metacopy: false,
        lowers,
        upper: Layer::kernel(vec![]),
        ops: vec![],
    }
}

pub fn concurrent_run(
    seed: u64,
    threads: usize,
    ops_per_thread: usize,
    which: Impl,
    deadline: Duration,
) -> Result<(), String> {
    let case = stack(seed, threads);
    let scratch = Scratch::new();
    let dirs = SideDirs::write(&scratch, "C", &case, which == Impl::Layerfuse);
    for t in 0..threads {
        std::fs::create_dir_all(dirs.lowers[1].join(format!("t{t}"))).expect("thread dir");
    }
    std::fs::create_dir_all(dirs.lowers[1].join("s")).expect("shared dir");
    let layers = dirs.layers(&case);
    let mnt = scratch.dir.join("C/m");
    let m = Mounted::mount(which, &layers, &mnt).map_err(|e| format!("mount: {e}"))?;
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let mut handles = Vec::new();
    for t in 0..threads {
        let tx = tx.clone();
        let root = m.mnt.clone();
        let mut pool = PathPool::from_layers(&case.lowers.iter().collect::<Vec<_>>());
        let own = format!("t{t}/");
        pool.prefixes = vec![own.clone(), own, "s/".into()];
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(t as u64 + 1));
            let mut side = Side::new(&root);
            let mut bad = Vec::new();
            for i in 0..ops_per_thread {
                let op = random_op(&mut rng, &mut pool);
                let out = exec(&op, &mut side);
                if FORBIDDEN.iter().any(|f| out.contains(f)) {
                    bad.push(format!("thread {t} op #{i} {} -> {out}", op.render()));
                }
            }
            side.close_all();
            let _ = tx.send(bad);
        }));
    }
    drop(tx);
    let end = Instant::now() + deadline;
    let mut problems = Vec::new();
    let mut finished = 0;
    while finished < threads {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(bad) => {
                finished += 1;
                problems.extend(bad);
            }
            Err(_) => {
                problems.push(format!(
                    "DEADLOCK: {} of {threads} threads not done after {deadline:?}",
                    threads - finished
                ));
                // tearing the mount down unblocks the threads; they are not joined
                drop(m);
                return Err(problems.join("\n"));
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let live = snapshot(&m.mnt).described(None);
    if let Err(e) = m.unmount() {
        problems.push(format!("unmount/daemon: {e}"));
    }
    // every non-whiteout entry of the upper must be visible: nothing half-made left behind
    for p in super::layers::walk(&dirs.upper) {
        let st = sys::lstat(&p).expect("lstat upper");
        let whiteout = st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0;
        let rel = p
            .strip_prefix(&dirs.upper)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // The portable path's upper is in the OCI format (docs/design.md): `.wh.NAME` is a
        // whiteout, `.wh..wh..opq` an opaque marker, neither an entry of the union.
        let oci_marker = crate::PORTABLE
            && p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b".wh."));
        if !whiteout && !oci_marker && !live.contains_key(&rel) {
            problems.push(format!(
                "stray entry in the upper, not visible through the mount: {rel}"
            ));
        }
    }
    let r = Mounted::mount(which, &layers, &mnt).map_err(|e| format!("remount: {e}"))?;
    let again = snapshot(&r.mnt).described(None);
    problems.extend(diff(&live, &again, "live", "remounted").0);
    if let Err(e) = r.unmount() {
        problems.push(format!("second unmount/daemon: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
