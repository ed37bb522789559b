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
