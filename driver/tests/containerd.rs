//! containerd 1.6 with layerfuse as its snapshotter (proxy plugin), driven by `ctr`: image import,
//! containers, snapshots commands, restarts, GC. The work is in `containerd.sh` beside this
//! file (scripts/runtime/lib.sh's contract: exit 0 ok, 77 prerequisite missing, else failed).
//! With `CI=true` a missing prerequisite fails the test instead of skipping it.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

#[test]
fn containerd_with_the_layerfuse_snapshotter() {
    let driver = Path::new(env!("CARGO_BIN_EXE_layerfuse-driver"));
    // The union program mount.fuse3 runs: the workspace's `layerfuse`, built beside us by
    // `cargo test --workspace` / scripts/test.sh.
    let layerfuse = driver.with_file_name("layerfuse");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !layerfuse.is_file() {
        let msg = format!(
            "{} is not built (cargo build --release)",
            layerfuse.display()
        );
        assert!(!ci, "{msg} (CI=true: refusing to skip)");
        eprintln!("skipping: {msg}");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/containerd.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("LAYERFUSE_BIN", &layerfuse)
        .env("LAYERFUSE_DRIVER_BIN", driver)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    println!(
        "--- commands and their output ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => {}
        Some(77) if !ci => eprintln!("skipping: prerequisite missing"),
        _ => {
            let failed: Vec<_> = stdout.lines().filter(|l| l.contains(" FAIL ")).collect();
            panic!(
                "containerd.sh failed ({}):\n{}",
                out.status,
                failed.join("\n")
            );
        }
    }
}
