//! layerfuse under real container runtimes, each started by its test with private roots and
//! sockets: Podman (`mount_program`), dockerd 20.10 (`--storage-driver fuse-overlayfs`),
//! containerd 1.6 (mounts of type `fuse3.layerfuse` through `mount.fuse3`), and an unprivileged
//! user namespace (rootless).
//!
//! Each test runs `scripts/runtime/NAME.sh` (see `scripts/runtime/lib.sh` for the contract) with
//! `LAYERFUSE_BIN` set to the binary cargo built. A script exits 77 when a prerequisite is
//! missing (root, /dev/fuse, a runtime Debian cannot install): outside CI the test then skips
//! with the reason printed; with `CI=true` it fails. The tests run one at a time (the machines
//! have 2 cores and the runtimes are heavy).
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SKIPPED: i32 = 77;

fn run_script(name: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/runtime")
        .join(format!("{name}.sh"));
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .env("LAYERFUSE_BIN", env!("CARGO_BIN_EXE_layerfuse"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown by cargo test on failure, and always with --nocapture.
    println!("{stdout}");
    println!("--- commands and their output ---\n{stderr}");
    println!("{name}: {:.1} s", started.elapsed().as_secs_f64());
    match out.status.code() {
        Some(0) => {}
        Some(SKIPPED) => {
            let reason = stdout
                .lines()
                .find(|l| l.contains("SKIP:"))
                .unwrap_or("prerequisite missing");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{name}: {reason} (CI=true: refusing to skip)");
            }
            eprintln!("skipping {name}: {reason}");
        }
        _ => {
            let failed = stdout
                .lines()
                .filter(|l| l.contains(" FAIL "))
                .collect::<Vec<_>>()
                .join("\n");
            panic!("{name} failed ({}):\n{failed}", out.status);
        }
    }
}

#[test]
fn podman_with_layerfuse_as_mount_program() {
    run_script("podman");
}

#[test]
fn dockerd_with_layerfuse_as_fuse_overlayfs() {
    run_script("docker");
}

#[test]
fn containerd_with_fuse3_layerfuse_mounts() {
    run_script("containerd");
}

#[test]
fn install_script_and_mount_t_fuse_layerfuse() {
    run_script("mount-helper");
}

#[test]
fn rootless_user_namespace_and_rootless_podman() {
    run_script("rootless");
}
