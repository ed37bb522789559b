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
        metacopy: false,
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
#[cfg_attr(
    feature = "portable",
    ignore = "RENAME_EXCHANGE, and a copy found by its origin file handle: the portable path has neither (no renameat2, no xattrs)"
)]
fn case_seed_538025432_exchange_keeps_st_ino() {
    let case = Case {
        seed: 538025432,
        redirect_dir: true,
        metacopy: false,
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
        metacopy: false,
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
        metacopy: false,
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
        metacopy: false,
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
        metacopy: false,
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
        metacopy: false,
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
        metacopy: false,
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
#[cfg_attr(
    feature = "portable",
    ignore = "RENAME_EXCHANGE: FreeBSD and macOS have no renameat2, the portable path refuses it (EINVAL)"
)]
fn case_seed_890962753_exchange_with_copied_hard_link() {
    let case = Case {
        seed: 890962753,
        redirect_dir: true,
        metacopy: false,
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

/// Renaming over one name of a lower hard link leaves the other name alive.
#[test]
fn case_seed_912453295_rename_over_one_hard_link_name() {
    let case = Case {
        seed: 912453295,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![
            E::fifo("c/c/c").mode(0o640),
            E::file("a/a", "x").mode(0o1777),
            E::hardlink("b/d", "a/a"),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![Op::Rename {
            from: "c/c/c".into(),
            to: "a/a".into(),
            flags: 0,
        }],
    };
    check_case(&case);
}

/// Kept difference (docs/conformance.md): which name of a lower hard link is copied up,
/// and so which directories become merged, is not the kernel's. Directory link counts are
/// masked for such cases; everything else must match.
#[test]
fn case_seed_183114216_hard_link_name_choice() {
    let case = Case {
        seed: 183114216,
        redirect_dir: false,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![
            E::file("a", ""),
            E::hardlink("d/a/c", "a"),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Open {
                path: "d/a/c".into(),
                flags: libc::O_WRONLY,
                mode: 0o644,
                write: None,
                read: false,
            },
            Op::Stat { path: "d".into() },
        ],
    };
    check_case(&case);
}

/// A redirect whose path crosses a symlink in a lower layer: that layer has no such
/// directory (was ELOOP from the contained walk).
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "a renamed lower directory's redirect is an xattr: EXDEV on the portable path (redirect_dir=off), and it has no RENAME_EXCHANGE"
)]
fn case_seed_814847850_redirect_through_a_lower_symlink() {
    let case = Case {
        seed: 814847850,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![
            Layer::kernel(vec![E::file("a/d", "x")]),
            Layer::kernel(vec![E::dir("c/b/d")]),
            Layer::kernel(vec![E::symlink("c", "b/b")]),
        ],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Rename {
                from: "c/b/d".into(),
                to: "a/d".into(),
                flags: libc::RENAME_EXCHANGE,
            },
            Op::Mkdir {
                path: "a/d".into(),
                mode: 0o700,
            },
        ],
    };
    check_case(&case);
}

/// rmdir of a directory of the upper alone that holds only a whiteout: ENOTEMPTY, as the
/// upper filesystem says (the kernel checks merged emptiness only for merged directories).
#[test]
fn case_seed_673593910_rmdir_upper_dir_with_whiteout() {
    let case = Case {
        seed: 673593910,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![])],
        upper: Layer::kernel(vec![E::whiteout("b/b/e")]),
        ops: vec![Op::Rmdir { path: "b/b".into() }],
    };
    check_case(&case);
}

/// The same for a directory renamed over one.
#[test]
fn case_seed_727250320_rename_over_upper_dir_with_whiteout() {
    let case = Case {
        seed: 727250320,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![])],
        upper: Layer::kernel(vec![E::dir("a/b"), E::whiteout("b/a/d")]),
        ops: vec![Op::Rename {
            from: "a/b".into(),
            to: "b/a".into(),
            flags: 0,
        }],
    };
    check_case(&case);
}

/// Renaming a lower directory over a non-empty directory of the upper alone: the kernel
/// copies up first and lets the upper's rename fail (ENOTEMPTY), so the source's parents
/// end up copied (merged).
#[test]
fn case_seed_257079624_rename_over_nonempty_upper_dir() {
    let case = Case {
        seed: 257079624,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::dir("d/a/e")])],
        upper: Layer::kernel(vec![E::whiteout("a/b/d")]),
        ops: vec![Op::Rename {
            from: "d/a/e".into(),
            to: "a".into(),
            flags: 0,
        }],
    };
    check_case(&case);
}

/// link, then unlink of the original name: the new name still takes a chown (was EIO:
/// the node kept the removed name).
#[test]
fn case_seed_676676611_chown_after_unlinking_the_linked_name() {
    let case = Case {
        seed: 676676611,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![
            E::dir("d/e").mode(0o444),
            E::file("b", "x").mode(0o640),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Link {
                from: "b".into(),
                to: "d/d".into(),
            },
            Op::Unlink { path: "b".into() },
            Op::Chown {
                path: "d/d".into(),
                uid: 65534,
                gid: 0,
            },
        ],
    };
    check_case(&case);
}

/// fstat of a lower file held open after its name is unlinked: the kernel reports the
/// lower inode's own link count (1), not 0 (the file is still linked in its layer).
#[test]
fn case_seed_17725088_fdstat_nlink_of_unlinked_lower_file() {
    let case = Case {
        seed: 17725088,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::file("b/b", "x")])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::FdOpen {
                slot: 1,
                path: "b/b".into(),
                flags: libc::O_RDONLY,
            },
            Op::Unlink { path: "b/b".into() },
            Op::FdStat { slot: 1 },
        ],
    };
    check_case(&case);
}

/// rmdir of an upper directory holding only whiteouts, over a lower entry that is not a
/// directory (so nothing merges): the kernel checks the union (empty), clears the
/// whiteouts and leaves a whiteout; the dir was refused with ENOTEMPTY.
#[test]
fn case_seed_497323309_rmdir_upper_dir_of_whiteouts_over_lower_symlink() {
    let case = Case {
        seed: 497323309,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::symlink("b/b", "nowhere/x")])],
        upper: Layer::kernel(vec![E::whiteout("b/b/a")]),
        ops: vec![Op::Rmdir { path: "b/b".into() }],
    };
    check_case(&case);
}

/// truncate(2) to the current, non-zero size of a copied-up file sets its mtime on tmpfs
/// (the kernel passes it to the upper); it was skipped as a no-op.
#[test]
fn case_seed_32335820_truncate_to_same_size_sets_mtime() {
    let case = Case {
        seed: 32335820,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::file("a/c", "x")])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Truncate {
                path: "a/c".into(),
                size: 3,
            },
            Op::Utimens {
                path: "a/c".into(),
                mtime: Some(1100093000),
            },
            Op::Truncate {
                path: "a/c".into(),
                size: 3,
            },
        ],
    };
    check_case(&case);
}

/// One name of a lower hard link removed (its data moves to the index), then the other
/// name, still only in the lower, is exchanged with a directory: that name must be
/// linked into the upper from the index first (was ENOENT).
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "RENAME_EXCHANGE: FreeBSD and macOS have no renameat2, the portable path refuses it (EINVAL)"
)]
fn case_seed_721321889_exchange_other_name_of_indexed_lower_link() {
    let case = Case {
        seed: 721321889,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![
            E::dir("d/c/c"),
            E::file("c/c/c", "x"),
            E::hardlink("c/a", "c/c/c"),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Unlink { path: "c/a".into() },
            Op::Rename {
                from: "d/c".into(),
                to: "c/c/c".into(),
                flags: libc::RENAME_EXCHANGE,
            },
        ],
    };
    check_case(&case);
}

/// Two upper names of one file, both looked up; removing the name the node was first
/// found by must leave it reachable by the other (was ENOENT on the other name).
#[test]
fn case_seed_890395661_unlink_recorded_name_of_upper_hard_link() {
    let case = Case {
        seed: 890395661,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![])],
        upper: Layer::kernel(vec![E::file("e", "x"), E::hardlink("b/b/a", "e")]),
        ops: vec![Op::Unlink { path: "e".into() }],
    };
    check_case(&case);
}

/// fstat of an open lower directory after another directory was renamed over it: the
/// kernel still reports the lower directory (was ENOENT).
#[test]
fn case_seed_405136221_fdstat_of_replaced_lower_dir() {
    let case = Case {
        seed: 405136221,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![
            Layer::kernel(vec![E::dir("b/d")]),
            Layer::kernel(vec![E::symlink("a/d/c", "nowhere/x")]),
        ],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::FdOpen {
                slot: 1,
                path: "b/d".into(),
                flags: libc::O_RDONLY,
            },
            Op::Rename {
                from: "a".into(),
                to: "b/d".into(),
                flags: 0,
            },
            Op::FdStat { slot: 1 },
        ],
    };
    check_case(&case);
}

/// mkdir over a whiteout in a setgid directory: the new directory takes the parent's
/// group and setgid bit, as if made in place (it is built in the work dir first).
#[test]
fn case_seed_185767213_mkdir_over_whiteout_in_setgid_dir() {
    let case = Case {
        seed: 185767213,
        redirect_dir: false,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::dir("d/b")])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Rmdir { path: "d/b".into() },
            Op::Chmod {
                path: "d".into(),
                mode: 0o2775,
            },
            Op::Mkdir {
                path: "d/b".into(),
                mode: 0o755,
            },
        ],
    };
    check_case(&case);
}

/// A directory moved with an absolute redirect: a middle lower layer where a component of
/// the redirect's path is opaque ends the search there, as in the kernel (layerfuse merged
/// a hidden directory from below it and reported nlink 1).
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "redirects are xattrs: EXDEV on the portable path (redirect_dir=off), nothing to follow"
)]
fn case_seed_377123929_redirect_stops_at_opaque_path_component() {
    let case = Case {
        seed: 377123929,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![
            Layer::kernel(vec![E::dir("e/c/b")]),
            Layer::kernel(vec![E::dir("e/c/c")]),
            Layer::kernel(vec![E::dir("e").mode(0o640).opaque()]),
            Layer::kernel(vec![E::dir("e/c/c")]),
        ],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Rename {
                from: "e/c/b".into(),
                to: "b".into(),
                flags: 0,
            },
            Op::Mkdir {
                path: "b/a".into(),
                mode: 0o700,
            },
            Op::Rename {
                from: "e/c".into(),
                to: "b/a/c".into(),
                flags: 0,
            },
        ],
    };
    check_case(&case);
}

/// fstat of an open lower FIFO after a chown copied it up and its name was removed: the
/// kernel reports the removed upper FIFO (nlink 0). The kernel opens FIFOs itself, so the
/// daemon has no fd to ask: it answers from what the node was when its name went.
#[test]
fn case_seed_553252937_fdstat_of_removed_copied_up_fifo() {
    let case = Case {
        seed: 553252937,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::fifo("p")])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::FdOpen {
                slot: 0,
                path: "p".into(),
                flags: libc::O_RDONLY,
            },
            Op::Chown {
                path: "p".into(),
                uid: 65534,
                gid: 65534,
            },
            Op::Unlink { path: "p".into() },
            Op::FdStat { slot: 0 },
        ],
    };
    check_case(&case);
}

/// metacopy=on: a chown of a lower hard link makes a metadata-only copy (through the index,
/// as the kernel does), and the next open for writing copies the data in place, which sets
/// the file's mtime (the kernel keeps no times across its data copy-up).
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "metacopy: its marker is an xattr, the portable path makes full copies only"
)]
fn case_seed_539307423_metacopy_data_copy_up_of_hard_link_sets_mtime() {
    let case = Case {
        seed: 539307423,
        redirect_dir: true,
        metacopy: true,
        lowers: vec![Layer::kernel(vec![
            E::file("c/d", "x"),
            E::hardlink("b", "c/d"),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Chown {
                path: "b".into(),
                uid: 1000,
                gid: 1000,
            },
            Op::Open {
                path: "b".into(),
                flags: libc::O_WRONLY,
                mode: 0o644,
                write: None,
                read: false,
            },
        ],
    };
    check_case(&case);
}

/// metacopy=on: a lower hard link exchanged with a directory (a metadata-only copy in the
/// index, moved with a redirect); its other, lower-only name joins the copy when looked up
/// after its directory was copied up, and still shows the data.
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "metacopy and redirects are xattrs, RENAME_EXCHANGE needs renameat2: the portable path has none of them"
)]
fn case_seed_149865397_metacopy_other_name_of_moved_hard_link() {
    let case = Case {
        seed: 149865397,
        redirect_dir: true,
        metacopy: true,
        lowers: vec![Layer::kernel(vec![
            E::file("a/e", "").mode(0o1777),
            E::hardlink("c/a", "a/e"),
            E::dir("a/a/b"),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Rename {
                from: "a/e".into(),
                to: "a/a".into(),
                flags: libc::RENAME_EXCHANGE,
            },
            Op::Open {
                path: "c/d".into(),
                flags: libc::O_RDWR | libc::O_CREAT,
                mode: 0o644,
                write: None,
                read: false,
            },
        ],
    };
    check_case(&case);
}

/// A reader opened on a lower file, the file copied up by a truncate, then another file
/// renamed over its name before the reader's next read: the reader sees the copy (now
/// unlinked), as on the kernel, not the file that took its name.
#[test]
fn case_seed_781314722_reader_keeps_copy_replaced_by_rename() {
    let case = Case {
        seed: 781314722,
        redirect_dir: false,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::file("c/e", "x").mode(0o700)])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::FdOpen {
                slot: 0,
                path: "c/e".into(),
                flags: libc::O_RDONLY,
            },
            Op::Open {
                path: "d".into(),
                flags: libc::O_WRONLY | libc::O_CREAT,
                mode: 0o644,
                write: None,
                read: false,
            },
            Op::Open {
                path: "d".into(),
                flags: libc::O_RDWR,
                mode: 0o644,
                write: Some((8342, Data::lit("w23"))),
                read: false,
            },
            Op::Truncate {
                path: "c/e".into(),
                size: 70000,
            },
            Op::Rename {
                from: "d".into(),
                to: "c/e".into(),
                flags: 0,
            },
            Op::FdRead { slot: 0 },
        ],
    };
    check_case(&case);
}

/// fstat of an open upper directory after rmdir, where the directory held whiteouts over a
/// lower file: the kernel clears the whiteouts first (setting the directory's times), so
/// the removed directory's stat (nlink 0) carries those times.
#[test]
fn case_seed_124272687_fdstat_of_removed_dir_after_clearing_whiteouts() {
    let case = Case {
        seed: 124272687,
        redirect_dir: false,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::file("a", "x")])],
        upper: Layer::kernel(vec![E::whiteout("a/e")]),
        ops: vec![
            Op::FdOpen {
                slot: 1,
                path: "a".into(),
                flags: libc::O_RDONLY,
            },
            Op::Rmdir { path: "a".into() },
            Op::FdStat { slot: 1 },
        ],
    };
    check_case(&case);
}

/// Issue 17: a directory renamed in one commit (relative redirect `dir102` in the first upper),
/// moved into another directory in the next (absolute redirect `/a/dir102x` in the second):
/// after the second commit the redirect found in the first upper must be followed on to the
/// lower layer, relative to where the absolute one led (`/a/dir102`), as the kernel does.
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "redirects are xattrs: EXDEV on the portable path (redirect_dir=off), nothing to follow across commits"
)]
fn redirect_chain_across_commits_keeps_lower_content() {
    let case = Case {
        seed: 0,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![
            E::dir("a"),
            E::dir("a/dir102"),
            E::file("a/dir102/file", "data"),
            E::dir("a/empty102"),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Rename {
                from: "a/dir102".into(),
                to: "a/dir102x".into(),
                flags: 0,
            },
            Op::Commit,
            Op::Rename {
                from: "a/dir102x".into(),
                to: "a/empty102/dir102".into(),
                flags: 0,
            },
            Op::Readdir {
                path: "a/empty102/dir102".into(),
            },
            Op::Commit,
            Op::Readdir {
                path: "a/empty102/dir102".into(),
            },
            Op::Stat {
                path: "a/empty102/dir102/file".into(),
            },
        ],
    };
    check_case(&case);
}

/// A redirect on a directory on the way, not on the entry itself: `b` renamed from `x` in one
/// commit, `b/c` moved out in the next; below the first upper, `b/c` is `x/c`.
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "redirects are xattrs: EXDEV on the portable path (redirect_dir=off), nothing to follow across commits"
)]
fn redirect_of_an_ancestor_is_followed_across_commits() {
    let case = Case {
        seed: 0,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![
            E::dir("x"),
            E::dir("x/c"),
            E::file("x/c/f", "data"),
            E::dir("d"),
        ])],
        upper: Layer::kernel(vec![]),
        ops: vec![
            Op::Rename {
                from: "x".into(),
                to: "b".into(),
                flags: 0,
            },
            Op::Commit,
            Op::Rename {
                from: "b/c".into(),
                to: "d/c".into(),
                flags: 0,
            },
            Op::Commit,
            Op::Rename {
                from: "d/c".into(),
                to: "d/c2".into(),
                flags: 0,
            },
            Op::Commit,
            Op::Readdir {
                path: "d/c2".into(),
            },
            Op::Stat {
                path: "d/c2/f".into(),
            },
        ],
    };
    check_case(&case);
}

/// A directory renamed over an empty opaque directory of the upper alone: the portable
/// path's opaque marker is a file in it (`.wh..wh..opq`), and the rename failed with
/// ENOTEMPTY where the kernel's xattr-marked directory is replaced.
#[test]
fn case_seed_851444188_rename_over_empty_opaque_upper_dir() {
    let case = Case {
        seed: 851444188,
        redirect_dir: true,
        metacopy: false,
        lowers: vec![Layer::kernel(vec![E::dir("c/b/a")])],
        upper: Layer::kernel(vec![E::dir("a").opaque()]),
        ops: vec![
            Op::Mkdir {
                path: "c/b/d".into(),
                mode: 0o755,
            },
            Op::Rename {
                from: "c/b/d".into(),
                to: "a".into(),
                flags: 0,
            },
        ],
    };
    check_case(&case);
}
