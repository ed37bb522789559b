//! dockerd 20.10 on the layerfuse graphdriver plugin, started by the test with private
//! roots, sockets and plugin name: runs `docker-plugin.sh` beside this file (see
//! scripts/runtime/lib.sh for the contract). Exit 77 means a prerequisite is missing: a
//! skip outside CI, a failure with `CI=true`.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

#[test]
fn dockerd_on_the_layerfuse_plugin() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/docker-plugin.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("LAYERFUSE_BIN", env!("CARGO_BIN_EXE_layerfuse-driver"))
        .env(
            "LAYERFUSE_DRIVER_BIN",
            env!("CARGO_BIN_EXE_layerfuse-driver"),
        )
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
        Some(77) => {
            let reason = stdout
                .lines()
                .find(|l| l.contains("SKIP:"))
                .unwrap_or("prerequisite missing");
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{reason} (CI=true: refusing to skip)"
            );
            eprintln!("skipping: {reason}");
        }
        _ => {
            let failed: Vec<&str> = stdout.lines().filter(|l| l.contains(" FAIL ")).collect();
            panic!(
                "docker plugin test failed ({}):\n{}",
                out.status,
                failed.join("\n")
            );
        }
    }
}
