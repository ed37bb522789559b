//! `kill -9` of the daemon at any moment of a change, round after round: copy-up, rename of a
//! file and of a directory, whiteout, opaque directory creation, copy-up of a file with hard
//! links, the data copy of a metadata-only copy, removals (of a large upper file, which is
//! moved into the work dir and freed there, and of a merged directory tree, moved there
//! leaving a whiteout), and a volume's first population. After each
//! kill the same upper and work dir are mounted again, with no repair: the mount must go
//! live, the work dir must hold no leftovers, the lower layer must be untouched, and the
//! union must show exactly one of the states the change passes through (found by running
//! the same steps once without a kill): for each file before or after, never a mixture and
//! never a torn copy.
//!
//! The kill instant is drawn from a seeded generator, uniformly over the time the change
//! takes (measured on the reference run). `LAYERFUSE_CRASH_ROUNDS` sets the number of
//! rounds (default 90: 10 of each kind), `LAYERFUSE_CRASH_SEED` the seed.

use crate::common::*;
use crate::need_root;
use crate::support::*;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

const KIB: usize = 1024;

type Step = fn(&Path) -> io::Result<()>;

struct Kind {
    name: &'static str,
    metacopy: bool,
    steps: &'static [Step],
}

fn write_head(p: &Path) -> io::Result<()> {
    let f = fs::OpenOptions::new().write(true).open(p)?;
    f.write_all_at(b"NEW!", 0)
}

const KINDS: &[Kind] = &[
    Kind {
        name: "copy-up",
        metacopy: false,
        steps: &[|m| write_head(&m.join("big"))],
    },
    Kind {
        name: "rename file",
        metacopy: false,
        steps: &[|m| fs::rename(m.join("big"), m.join("big.moved"))],
    },
    Kind {
        name: "rename dir",
        metacopy: false,
        steps: &[|m| fs::rename(m.join("tree"), m.join("tree.moved"))],
    },
    Kind {
        name: "whiteout",
        metacopy: false,
        steps: &[
            |m| fs::remove_file(m.join("tree/a")),
            |m| fs::remove_file(m.join("big")),
        ],
    },
    Kind {
        name: "opaque dir",
        metacopy: false,
        steps: &[
            |m| fs::remove_file(m.join("od/x")),
            |m| fs::remove_dir(m.join("od")),
            |m| fs::create_dir(m.join("od")),
            // A write of a new file is two requests (the create, then the write): each is
            // a step, as a kill can fall between them.
            |m| fs::File::create(m.join("od/y")).map(drop),
            |m| fs::write(m.join("od/y"), b"y\n"),
        ],
    },
    Kind {
        name: "hard-link copy-up",
        metacopy: false,
        steps: &[|m| write_head(&m.join("h1"))],
    },
    Kind {
        name: "remove upper file",
        metacopy: false,
        steps: &[
            |m| write_head(&m.join("big")),
            |m| fs::remove_file(m.join("big")),
        ],
    },
    Kind {
        name: "remove merged tree",
        metacopy: false,
        steps: &[
            |m| fs::File::create(m.join("tree/sub/new")).map(drop),
            |m| fs::write(m.join("tree/sub/new"), b"new\n"),
            |m| fs::remove_file(m.join("tree/sub/new")),
            |m| fs::remove_file(m.join("tree/sub/b")),
            |m| fs::remove_file(m.join("tree/sub/c")),
            |m| fs::remove_dir(m.join("tree/sub")),
            |m| fs::remove_file(m.join("tree/a")),
            |m| fs::remove_dir(m.join("tree")),
        ],
    },
    Kind {
        name: "metacopy data copy",
        metacopy: true,
        steps: &[
            |m| fs::set_permissions(m.join("big"), fs::Permissions::from_mode(0o600)),
            |m| write_head(&m.join("big")),
        ],
    },
];

/// What the union shows: every entry with its type, mode, owner, link count, size and a
/// digest of its content, or its symlink target. Times are left out (a change sets them).
fn view(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = fs::symlink_metadata(&p).unwrap();
            let mut line = format!("{rel}: mode={:o} uid={}", md.mode(), md.uid());
            if md.is_file() {
                let data = fs::read(&p).unwrap();
                line.push_str(&format!(" nlink={} {}", md.nlink(), describe_bytes(&data)));
            }
            out.push(line);
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn template() -> Layers {
    let l = Layers::new(1);
    let big: Vec<u8> = (0..4096 * KIB).map(|i| (i % 253) as u8).collect();
    l.lower(0)
        .file_bytes("big", &big)
        .file("tree/a", "a\n")
        .file("tree/sub/b", "b\n")
        .file_bytes("tree/sub/c", &big[..256 * KIB])
        .file("od/x", "x\n")
        .file_bytes("h1", &big[..1024 * KIB])
        .hardlink("h2", "h1")
        .file("vdata/v0", "v0\n");
    for i in 1..8 {
        l.lower(0).file_bytes(
            &format!("vdata/v{i}"),
            &big[i * 256 * KIB..(i + 1) * 256 * KIB],
        );
    }
    l
}

fn reset(dirs: &[&Path]) {
    for d in dirs {
        let _ = fs::remove_dir_all(d);
        fs::create_dir(d).unwrap();
    }
}

fn extra(k: &Kind) -> Vec<String> {
    if k.metacopy {
        vec!["--metacopy".into(), "on".into()]
    } else {
        Vec::new()
    }
}

/// Legal states of a change: the view before it and after each of its steps, and how long
/// the steps take when run as a round runs them (without a view between them: the fastest of
/// three runs, so the kill instants spread over the change rather than after it).
fn reference(l: &Layers, k: &Kind) -> (Vec<Vec<String>>, Duration) {
    let (u, w) = (l.upper.as_ref().unwrap(), l.work.as_ref().unwrap());
    reset(&[u, w]);
    let m = layerfuse_on(&l.lowers, u, w, &l.mnt, &extra(k));
    let mut states = vec![view(&m.mnt)];
    for s in k.steps {
        s(&m.mnt).unwrap_or_else(|e| panic!("{}: reference step: {e}", k.name));
        states.push(view(&m.mnt));
    }
    drop(m);
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        reset(&[u, w]);
        let m = layerfuse_on(&l.lowers, u, w, &l.mnt, &extra(k));
        let start = Instant::now();
        for s in k.steps {
            s(&m.mnt).unwrap_or_else(|e| panic!("{}: reference step: {e}", k.name));
        }
        fastest = fastest.min(start.elapsed());
        assert_eq!(
            view(&m.mnt),
            *states.last().unwrap(),
            "{}: the steps end in another state when run again",
            k.name
        );
    }
    (states, fastest)
}

#[test]
fn kill_9_during_changes_leaves_before_or_after() {
    need_root!();
    let rounds = env_number("LAYERFUSE_CRASH_ROUNDS", 90);
    let seed = env_number("LAYERFUSE_CRASH_SEED", 0x1a7e_f05e);
    let mut rng = Rng::new(seed);
    let l = template();
    let lower_before = tree_snapshot(&l.lowers[0]);
    let (u, w) = (l.upper.clone().unwrap(), l.work.clone().unwrap());
    let refs: Vec<_> = KINDS.iter().map(|k| reference(&l, k)).collect();
    let states_most = KINDS.iter().map(|k| k.steps.len() + 1).max().unwrap_or(1);
    let mut seen = vec![vec![0usize; states_most]; KINDS.len()];
    let started = Instant::now();
    for round in 0..rounds {
        let ki = round as usize % KINDS.len();
        let (k, (states, took)) = (&KINDS[ki], &refs[ki]);
        reset(&[&u, &w]);
        let mut m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &extra(k));
        // The kill lands anywhere from before the first step to a little after the last.
        let window = took.as_micros() as u64 * 3 / 2 + 200;
        let delay = Duration::from_micros(rng.below(window));
        let mnt = m.mnt.clone();
        let worker = std::thread::spawn(move || {
            for s in k.steps {
                if s(&mnt).is_err() {
                    break;
                }
            }
        });
        std::thread::sleep(delay);
        m.kill();
        worker.join().unwrap();
        m.unmount();
        drop(m);
        // Mounted again as it is: no repair.
        let m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &extra(k));
        let now = view(&m.mnt);
        let which = states.iter().position(|s| *s == now);
        let Some(which) = which else {
            panic!(
                "round {round} ({}, seed {seed:#x}, kill after {delay:?}): the union shows a \
                 state the change never passes through:\n{}\nlegal states:\n{}",
                k.name,
                now.join("\n"),
                states
                    .iter()
                    .map(|s| s.join("\n"))
                    .collect::<Vec<_>>()
                    .join("\n--\n")
            )
        };
        seen[ki][which] += 1;
        assert_eq!(
            work_leftovers(&w),
            Vec::<String>::new(),
            "round {round} ({}): leftovers in the work dir after the remount",
            k.name
        );
        drop(m);
    }
    assert_eq!(tree_snapshot(&l.lowers[0]), lower_before, "lower changed");
    eprintln!(
        "{rounds} rounds in {:?} (seed {seed:#x}); per kind, rounds that ended in state 0 (before), 1, 2…:",
        started.elapsed()
    );
    for (k, s) in KINDS.iter().zip(&seen) {
        eprintln!("  {:<20} {:?}", k.name, &s[..=k.steps.len()]);
    }
}

/// A volume's first population cut by `kill -9` at any moment of the mount: the next mount
/// shows the volume complete, never part of it.
#[test]
fn kill_9_during_volume_population_never_shows_part_of_it() {
    need_root!();
    let rounds = env_number("LAYERFUSE_CRASH_ROUNDS", 70) / 8 + 4;
    let seed = env_number("LAYERFUSE_CRASH_SEED", 0x1a7e_f05e) ^ 0x5eed;
    let mut rng = Rng::new(seed);
    let l = template();
    let (u, w) = (l.upper.clone().unwrap(), l.work.clone().unwrap());
    let store = l.root.join("store");
    let args = vec![
        format!("--root={}", store.display()),
        "--volume=vol:/vdata".to_string(),
    ];
    // Reference: an uninterrupted first mount, and how long it takes to go live.
    reset(&[&u, &w, &store]);
    let start = Instant::now();
    let full = {
        let m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &args);
        let took = start.elapsed();
        (view(&m.path("vdata")), took)
    };
    let mut cut = 0;
    for round in 0..rounds {
        reset(&[&u, &w, &store]);
        let window = full.1.as_micros() as u64 * 3 / 2;
        let delay = Duration::from_micros(rng.below(window));
        let mut child = layerfuse_cmd(&l.lowers, &u, &w, &l.mnt, &args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        if mounts_at(&l.mnt).is_empty() {
            cut += 1;
        }
        unmount_all(&l.mnt);
        let m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &args);
        let now = view(&m.path("vdata"));
        assert!(
            now == full.0,
            "round {round} (seed {seed:#x}, kill after {delay:?}): the volume shows\n{}\ninstead of\n{}",
            now.join("\n"),
            full.0.join("\n")
        );
        drop(m);
    }
    eprintln!("{rounds} volume rounds, {cut} killed before the mount was live");
}
