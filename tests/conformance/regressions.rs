//! Minimal reproducers printed by the runner, pasted here as they were printed. Each runs kernel
//! overlayfs against `LAYERFUSE_FUZZ_IMPL` (default layerfuse) and fails on any difference.
#![allow(unused_imports)]

use super::interop::check_interop;
use super::layers::{E, Layer};
use super::mount::Impl;
use super::ops::{Data, Op};
use super::runner::{Case, check_case};

/// Not a found bug: the reproducer format in use (OCI and kernel layers, attributes, a large
/// write, a directory rename), and a check that a written case runs.
#[test]
fn example_reproducer_format() {
    let case = Case {
        seed: 0,
        redirect_dir: true,
        lowers: vec![
            Layer::oci(vec![
                E::dir("a")
                    .opaque()
                    .mode(0o750)
                    .owner(1000, 1000)
                    .xattr("user.x", "1"),
                E::file("a/f", "hi"),
                E::whiteout("b"),
            ]),
            Layer::kernel(vec![
                E::file("b", "under"),
                E::dir("a"),
                E::file("a/g", "hidden"),
            ]),
        ],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Open {
                path: "a/f".into(),
                flags: libc::O_WRONLY | libc::O_APPEND,
                mode: 0o644,
                write: Some((0, Data::rep(b'z', 5000))),
                read: false,
            },
            Op::Rename {
                from: "a".into(),
                to: "c".into(),
                flags: 0,
            },
            Op::Readdir { path: "c".into() },
            Op::Stat { path: "b".into() },
        ],
    };
    check_case(&case);
}

// Found against the first union core and fixed since; each kept as it was printed.

/// A copy renamed or exchanged away from its lower name keeps its inode number
/// (origin found by file handle, not by name).
#[test]
fn case_seed_538025432_exchange_keeps_st_ino() {
    let case = Case {
        seed: 538025432,
        redirect_dir: true,
        lowers: vec![
            Layer::kernel(vec![E::symlink("a/e/c", "d/e")]),
            Layer::kernel(vec![E::dir("a/b/d").mode(0o600)]),
        ],
        upper: Layer::kernel(vec![]),
        ops: vec![Op::Rename {
            from: "a/e/c".into(),
            to: "a/b/d".into(),
            flags: libc::RENAME_EXCHANGE,
        }],
    };
    check_case(&case);
}

/// link() of a lower file: both names are one inode with the lower's number.
#[test]
fn case_seed_766412701_link_keeps_st_ino() {
    let case = Case {
        seed: 766412701,
        redirect_dir: true,
        lowers: vec![Layer::kernel(vec![E::file("c/d", "x")])],
        upper: Layer::kernel(vec![]),
        ops: vec![Op::Link {
            from: "c/d".into(),
            to: "e".into(),
        }],
    };
    check_case(&case);
}

/// Rename of a lower fifo over a lower file of another type keeps the fifo's number.
#[test]
fn case_seed_88671948_rename_over_other_type_keeps_st_ino() {
    let case = Case {
        seed: 88671948,
        redirect_dir: true,
        lowers: vec![Layer::kernel(vec![E::file("b/c/b", "x"), E::fifo("b/b/b")])],
        upper: Layer::kernel(vec![]),
        ops: vec![Op::Rename {
            from: "b/b/b".into(),
            to: "b/c/b".into(),
            flags: 0,
        }],
    };
    check_case(&case);
}

/// After the copied-up name of a hard link is removed, another name still opens (was
/// ENXIO: the daemon opened the whiteout left at the removed name).
#[test]
fn case_seed_501261161_other_name_after_unlink() {
    let case = Case {
        seed: 501261161,
        redirect_dir: true,
        lowers: vec![Layer::kernel(vec![
            E::file("d/d/e", "x"),
            E::hardlink("c/b", "d/d/e"),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::FdOpen {
                slot: 1,
                path: "c/b".into(),
                flags: libc::O_RDONLY | libc::O_TRUNC,
            },
            Op::Unlink { path: "c/b".into() },
            Op::FdOpen {
                slot: 0,
                path: "d/d/e".into(),
                flags: libc::O_RDONLY,
            },
        ],
    };
    check_case(&case);
}

/// truncate(2) to 0 of a lower file changes its mtime (the copy made empty must still
/// be truncated), while truncate to the current size changes nothing.
#[test]
fn case_seed_700611170_truncate_times() {
    let case = Case {
        seed: 700611170,
        redirect_dir: true,
        lowers: vec![Layer::kernel(vec![E::file("a/c/e", "x").mode(0o4755)])],
        upper: Layer::kernel(vec![E::file("e/a", "")]),
        ops: vec![
            Op::Truncate {
                path: "a/c/e".into(),
                size: 0,
            },
            Op::Truncate {
                path: "e/a".into(),
                size: 0,
            },
            Op::Open {
                path: "a/c/e".into(),
                flags: libc::O_RDONLY,
                mode: 0o644,
                write: None,
                read: false,
            },
        ],
    };
    check_case(&case);
}

/// With redirect_dir=off, renaming a lower directory over an upper one is EXDEV first.
#[test]
fn case_seed_143557763_redirect_off_exdev() {
    let case = Case {
        seed: 143557763,
        redirect_dir: false,
        lowers: vec![Layer::kernel(vec![E::dir("e/a").mode(0o640)])],
        upper: Layer::kernel(vec![E::file("b/c/a", "x")]),
        ops: vec![Op::Rename {
            from: "e/a".into(),
            to: "b/c".into(),
            flags: 0,
        }],
    };
    check_case(&case);
}

/// A directory renamed onto a name the upper holds a whiteout for.
#[test]
fn case_seed_554832486_rename_dir_onto_whiteout() {
    let case = Case {
        seed: 554832486,
        redirect_dir: true,
        lowers: vec![Layer::kernel(vec![E::dir("e/b/c")])],
        upper: Layer::kernel(vec![E::whiteout("d/e/d")]),
        ops: vec![Op::Rename {
            from: "e/b/c".into(),
            to: "d/e/d".into(),
            flags: 0,
        }],
    };
    check_case(&case);
}

/// RENAME_EXCHANGE with a copied-up hard-linked file.
#[test]
fn case_seed_890962753_exchange_with_copied_hard_link() {
    let case = Case {
        seed: 890962753,
        redirect_dir: true,
        lowers: vec![
            Layer::kernel(vec![E::file("e", "x"), E::hardlink("a/c/a", "e")]),
            Layer::kernel(vec![E::fifo("b/b/c")]),
        ],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Truncate {
                path: "e".into(),
                size: 0,
            },
            Op::Rename {
                from: "b".into(),
                to: "a/c/a".into(),
                flags: libc::RENAME_EXCHANGE,
            },
        ],
    };
    check_case(&case);
}
