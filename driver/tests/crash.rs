//! kill -9 of `layerfuse-driver layer import` at 100 points of an import (the tar fed
//! through a pipe, the process killed once it has been sent the first K bytes; the last 20
//! rounds killed once the import has staged its metadata, racing the commit itself): each time the store opens, nothing staged is left,
//! and every layer it lists gives back its tar byte for byte.

use layerfuse_driver::store::{LayerId, Store};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..300u32 {
        // Every third file repeats an earlier content: deduplicated objects too.
        let len = 16 * 1024 + (i as usize % 7) * 100;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if i % 3 == 2 { 7 } else { seed as u8 }
            })
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("d{}/f{i}", i % 10), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn kill_9_during_import_100_rounds() {
    let root = PathBuf::from(format!("/tmp/lft/driver-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(root.clone());
    let tar = sample_tar();
    let want = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(&tar);
        format!(
            "sha256:{}",
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    let mut whole = 0;
    for round in 0..100usize {
        // Rounds 0..80 cut the stream at 80 points; rounds 80.. send it all and kill once
        // the import has written its meta.json: during the commit (sync, objects, swap).
        let cut = if round < 80 {
            tar.len() * round / 80
        } else {
            tar.len()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_layerfuse-driver"))
            .args(["layer", "import", "--root"])
            .arg(&root)
            .arg(format!("l{round}"))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(if round >= 90 {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start layerfuse-driver");
        let mut stdin = child.stdin.take().expect("stdin");
        // A write fails only if the child is gone already (it never is before the kill).
        let _ = stdin.write_all(&tar[..cut]);
        drop(stdin);
        if round >= 80 {
            // 80..85: once the import staged its metadata (the commit's sync under way);
            // 85..90: once it publishes objects; 90..: once the layer is swapped in (the
            // old empty layer still in staging).
            let objects_before = count_objects(&root);
            let layer_dir = root.join(format!("store/layers/l{round}/skeleton"));
            let reached = || match round {
                80..85 => std::fs::read_dir(root.join("store/staging"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| e.path().join("layer/meta.json").exists()),
                85..90 => count_objects(&root) > objects_before,
                _ => layer_dir.exists(),
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !reached()
                && child.try_wait().ok().flatten().is_none()
                && std::time::Instant::now() < deadline
            {
                std::thread::yield_now();
            }
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");

        let store = Store::open(&root).expect("the store opens after kill -9");
        let staged = std::fs::read_dir(root.join("store/staging"))
            .unwrap()
            .count();
        assert_eq!(
            staged, 0,
            "round {round}: a staged change survived the reopen"
        );
        for m in store.list().unwrap() {
            // A layer is listed whole (filled, giving its tar back) or was made empty by
            // the import's first step and never filled: never half.
            match &m.diff_id {
                Some(d) => {
                    assert_eq!(d, &want, "round {round}: layer {}", m.id);
                    let mut out = Vec::new();
                    store.diff(&m.id, None, &mut out).unwrap();
                    assert!(
                        out == tar,
                        "round {round}: layer {} gives other bytes",
                        m.id
                    );
                }
                None => {
                    let diff = store.content_dir(&m);
                    assert_eq!(
                        std::fs::read_dir(&diff).unwrap().count(),
                        0,
                        "round {round}"
                    );
                }
            }
        }
        if store
            .get(&LayerId::parse(&format!("l{round}")).unwrap())
            .is_ok_and(|m| m.diff_id.is_some())
        {
            whole += 1;
        }
    }
    println!("{whole} of 100 imports completed before the kill");
    let store = Store::open(&root).unwrap();
    store.gc().unwrap();
    for m in store.list().unwrap() {
        store.remove(&m.id).unwrap();
    }
    let g = store.gc().unwrap();
    assert_eq!(store.usage().unwrap().objects, 0, "{g:?}");
}

fn count_objects(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("store/objects"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).map(|r| r.count()).unwrap_or(0))
        .sum()
}
