//! `layerfuse-driver containerd` spoken to directly over its gRPC socket, as containerd does:
//! every call, containerd's error codes, labels, List filters, usage, a restart that answers
//! exactly as before, and kill -9 during commits (100 rounds) leaving consistent metadata.
//! Each test starts its own snapshotter on a private root and socket under /tmp/lft and stops
//! it by PID (also on panic).
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use containerd_snapshots::api::snapshots::v1 as api;
use containerd_snapshots::api::snapshots::v1::snapshots_client::SnapshotsClient;
use containerd_snapshots::tonic::transport::{Channel, Endpoint, Uri};
use containerd_snapshots::tonic::{Code, Status};

const SN: &str = "layerfuse";

struct Snapshotter {
    dir: PathBuf,
    child: Option<Child>,
}

impl Snapshotter {
    fn new(name: &str) -> Snapshotter {
        let dir = PathBuf::from(format!("/tmp/lft/snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Snapshotter { dir, child: None };
        s.start();
        s
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("snap.sock")
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_layerfuse-driver"))
            .arg("containerd")
            .arg("--root")
            .arg(self.root())
            .arg("--socket")
            .arg(self.socket())
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // The socket answers once it is in place (a stale one left by kill -9 refuses).
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("snapshotter exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "no socket within 30 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let status = c.wait().unwrap();
            assert!(status.success(), "snapshotter exit on SIGTERM: {status}");
            assert!(!self.socket().exists(), "socket removed on exit");
        }
    }

    async fn client(&self) -> SnapshotsClient<Channel> {
        let path = self.socket();
        let channel = Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                tokio::net::UnixStream::connect(path.clone())
            }))
            .await
            .unwrap();
        SnapshotsClient::new(channel)
    }

    /// Layers in the store (one per snapshot: must equal the snapshots listed).
    fn dirs(&self) -> usize {
        std::fs::read_dir(self.root().join("store/layers"))
            .unwrap()
            .count()
    }

    /// Regular files in the store's object directory (bytes no layer holds are freed).
    fn objects(&self) -> usize {
        let mut n = 0;
        for fan in std::fs::read_dir(self.root().join("store/objects")).unwrap() {
            n += std::fs::read_dir(fan.unwrap().path()).unwrap().count();
        }
        n
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn require_root() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the snapshotter tests need root (CI=true: refusing to skip)");
    }
    eprintln!("skipping: not root");
    false
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn prepare(
    c: &mut SnapshotsClient<Channel>,
    key: &str,
    parent: &str,
) -> Result<Vec<containerd_snapshots::api::types::Mount>, Status> {
    c.prepare(api::PrepareSnapshotRequest {
        snapshotter: SN.into(),
        key: key.into(),
        parent: parent.into(),
        labels: labels(&[("k", key)]),
    })
    .await
    .map(|r| r.into_inner().mounts)
}

async fn commit(c: &mut SnapshotsClient<Channel>, name: &str, key: &str) -> Result<(), Status> {
    c.commit(api::CommitSnapshotRequest {
        snapshotter: SN.into(),
        name: name.into(),
        key: key.into(),
        labels: labels(&[("committed", name)]),
    })
    .await
    .map(|_| ())
}

async fn stat(c: &mut SnapshotsClient<Channel>, key: &str) -> Result<api::Info, Status> {
    c.stat(api::StatSnapshotRequest {
        snapshotter: SN.into(),
        key: key.into(),
    })
    .await
    .map(|r| r.into_inner().info.unwrap())
}

async fn list(c: &mut SnapshotsClient<Channel>, filters: &[&str]) -> Vec<api::Info> {
    let mut stream = c
        .list(api::ListSnapshotsRequest {
            snapshotter: SN.into(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        out.extend(batch.info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

async fn remove(c: &mut SnapshotsClient<Channel>, key: &str) -> Result<(), Status> {
    c.remove(api::RemoveSnapshotRequest {
        snapshotter: SN.into(),
        key: key.into(),
    })
    .await
    .map(|_| ())
}

fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> Code {
    r.expect_err("expected an error").code()
}

/// The directory a writable snapshot's writes go to: its bind source or its upperdir.
fn upper(mounts: &[containerd_snapshots::api::types::Mount]) -> PathBuf {
    let m = &mounts[0];
    if m.r#type == "bind" {
        return PathBuf::from(&m.source);
    }
    let dir = m
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .expect("upperdir");
    PathBuf::from(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_with_containerd_semantics_and_a_restart() {
    if !require_root() {
        return;
    }
    let mut s = Snapshotter::new("api");
    let mut c = s.client().await;

    // A first layer: a writable bind of its own dir, then committed.
    let m = prepare(&mut c, "a1", "").await.unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].r#type.as_str(), m[0].options.clone()),
        ("bind", vec!["rw".into(), "rbind".into()])
    );
    std::fs::write(upper(&m).join("f"), vec![7u8; 100_000]).unwrap();
    assert_eq!(code(prepare(&mut c, "a1", "").await), Code::AlreadyExists);
    let active_usage = c
        .usage(api::UsageRequest {
            snapshotter: SN.into(),
            key: "a1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        active_usage.size >= 100_000 && active_usage.inodes == 2,
        "{active_usage:?}"
    );
    commit(&mut c, "l1", "a1").await.unwrap();
    assert_eq!(code(stat(&mut c, "a1").await), Code::NotFound);
    let l1 = stat(&mut c, "l1").await.unwrap();
    assert_eq!(l1.kind, 3, "committed");
    assert_eq!(l1.labels, labels(&[("committed", "l1")]));
    let usage = c
        .usage(api::UsageRequest {
            snapshotter: SN.into(),
            key: "l1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // The layer's tree plus the store's record of its deduplicated files.
    assert!(usage.size >= 100_000 && usage.inodes >= 2, "{usage:?}");

    // A second layer on it: a union mount of type fuse3.layerfuse.
    let m = prepare(&mut c, "a2", "l1").await.unwrap();
    assert_eq!(m[0].r#type, "fuse3.layerfuse");
    assert_eq!(m[0].source, "layerfuse");
    let lower = m[0].options[0]
        .strip_prefix("lowerdir=")
        .unwrap()
        .to_string();
    assert!(
        Path::new(&lower).join("f").is_file(),
        "lowerdir is l1's layer: {lower}"
    );
    assert!(m[0].options[2].starts_with("workdir="));
    // Mounts answers the same again.
    let again = c
        .mounts(api::MountsRequest {
            snapshotter: SN.into(),
            key: "a2".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(again, m);
    std::fs::write(upper(&m).join("g"), b"g").unwrap();
    commit(&mut c, "l2", "a2").await.unwrap();

    // Views: read-only unions (lowerdir only), even of one store layer.
    let v1 = c
        .view(api::ViewSnapshotRequest {
            snapshotter: SN.into(),
            key: "v1".into(),
            parent: "l1".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(v1[0].r#type, "fuse3.layerfuse");
    assert_eq!(v1[0].options, [format!("lowerdir={lower}")]);
    let v2 = c
        .view(api::ViewSnapshotRequest {
            snapshotter: SN.into(),
            key: "v2".into(),
            parent: "l2".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(v2[0].r#type, "fuse3.layerfuse");
    assert_eq!(v2[0].options.len(), 1, "lowerdir only: read-only {v2:?}");
    assert_eq!(v2[0].options[0].matches(':').count(), 1, "two lowers");

    // containerd's error codes.
    assert_eq!(code(stat(&mut c, "nope").await), Code::NotFound);
    assert_eq!(code(remove(&mut c, "nope").await), Code::NotFound);
    assert_eq!(code(prepare(&mut c, "x", "nope").await), Code::NotFound);
    assert_eq!(
        code(prepare(&mut c, "x", "v1").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(commit(&mut c, "lv", "v1").await),
        Code::FailedPrecondition
    );
    assert_eq!(code(commit(&mut c, "l9", "nope").await), Code::NotFound);
    prepare(&mut c, "a3", "l2").await.unwrap();
    assert_eq!(code(commit(&mut c, "l1", "a3").await), Code::AlreadyExists);
    assert_eq!(code(remove(&mut c, "l1").await), Code::FailedPrecondition);
    let committed_mounts = c
        .mounts(api::MountsRequest {
            snapshotter: SN.into(),
            key: "l1".into(),
        })
        .await;
    assert_eq!(code(committed_mounts), Code::FailedPrecondition);
    assert_eq!(code(prepare(&mut c, "", "").await), Code::InvalidArgument);

    // Labels: set one, replace all, and a field that cannot change.
    let mut info = stat(&mut c, "l2").await.unwrap();
    info.labels = labels(&[("containerd.io/gc.root", "x")]);
    let mask = |p: &[&str]| {
        Some(prost_types::FieldMask {
            paths: p.iter().map(|s| s.to_string()).collect(),
        })
    };
    let up = c
        .update(api::UpdateSnapshotRequest {
            snapshotter: SN.into(),
            info: Some(info.clone()),
            update_mask: mask(&["labels.containerd.io/gc.root"]),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(
        up.labels,
        labels(&[("committed", "l2"), ("containerd.io/gc.root", "x")])
    );
    let bad = c
        .update(api::UpdateSnapshotRequest {
            snapshotter: SN.into(),
            info: Some(info.clone()),
            update_mask: mask(&["parent"]),
        })
        .await;
    assert_eq!(code(bad), Code::InvalidArgument);

    // List, streamed, with filters.
    let all = list(&mut c, &[]).await;
    let names: Vec<_> = all.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a3", "l1", "l2", "v1", "v2"]);
    let names = |v: Vec<api::Info>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(
        names(list(&mut c, &["kind==committed"]).await),
        ["l1", "l2"]
    );
    assert_eq!(
        names(list(&mut c, &[r#"labels."containerd.io/gc.root""#]).await),
        ["l2"]
    );
    assert_eq!(
        names(list(&mut c, &["parent==l2,kind==view", "name==l1"]).await),
        ["l1", "v2"]
    );

    // Restart (SIGTERM): everything answers as before.
    let before = list(&mut c, &[]).await;
    s.stop();
    s.start();
    let mut c = s.client().await;
    assert_eq!(list(&mut c, &[]).await, before);
    assert_eq!(s.dirs(), before.len());

    // Remove child-first; Cleanup; nothing left on disk.
    for k in ["a3", "v1", "v2", "l2", "l1"] {
        remove(&mut c, k).await.unwrap();
    }
    c.cleanup(api::CleanupRequest {
        snapshotter: SN.into(),
    })
    .await
    .unwrap();
    assert!(list(&mut c, &[]).await.is_empty());
    assert_eq!(s.dirs(), 0);
    assert_eq!(s.objects(), 0, "no store bytes left");

    // A second snapshotter on the same socket refuses to start.
    let out = Command::new(env!("CARGO_BIN_EXE_layerfuse-driver"))
        .args(["containerd", "--root"])
        .arg(s.dir.join("root2"))
        .arg("--socket")
        .arg(s.socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another process"));
    s.stop();
}

/// Files in each round's layer.
const FILES: usize = 50;

fn write_files(dir: &Path, round: usize) {
    for i in 0..FILES {
        std::fs::write(dir.join(format!("f{i}")), format!("{round}/{i}")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_commits_leaves_consistent_metadata() {
    if !require_root() {
        return;
    }
    let mut s = Snapshotter::new("kill");
    let mut c = s.client().await;
    prepare(&mut c, "base-a", "").await.unwrap();
    commit(&mut c, "base", "base-a").await.unwrap();
    // How long one commit of a round's layer takes here, so the kills spread across it.
    let m = prepare(&mut c, "probe-a", "base").await.unwrap();
    write_files(&upper(&m), 0);
    let started = Instant::now();
    commit(&mut c, "probe", "probe-a").await.unwrap();
    let commit_micros = started.elapsed().as_micros() as u64 + 1;
    remove(&mut c, "probe").await.unwrap();
    // A cheap, seedless spread of kill delays (0..4 ms) across the rounds.
    let mut seed = u64::from(std::process::id()) | 1;
    let (mut committed, mut still_active) = (0, 0);
    for round in 0..100 {
        let key = format!("a{round}");
        let name = format!("c{round}");
        let m = prepare(&mut c, &key, "base").await.unwrap();
        write_files(&upper(&m), round);
        let mut c2 = c.clone();
        let (k2, n2) = (key.clone(), name.clone());
        let call = tokio::spawn(async move { commit(&mut c2, &n2, &k2).await });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // The kill lands at a spread of points in the commit; what is checked is the state after.
        tokio::time::sleep(Duration::from_micros(
            (seed >> 33) % (commit_micros * 3 / 2),
        ))
        .await;
        s.kill9();
        let _ = call.await;
        s.start();
        c = s.client().await;
        let a = stat(&mut c, &key).await;
        let n = stat(&mut c, &name).await;
        match (a, n) {
            (Ok(a), Err(e)) if e.code() == Code::NotFound => {
                assert_eq!(a.kind, 2, "round {round}: still active");
                still_active += 1;
                // Not committed: commit again, it must work now.
                commit(&mut c, &name, &key).await.unwrap();
            }
            (Err(e), Ok(n)) if e.code() == Code::NotFound => {
                assert_eq!(n.kind, 3, "round {round}: committed");
                committed += 1;
            }
            (a, n) => panic!("round {round}: active {a:?}, committed {n:?}"),
        }
        // The committed layer holds its files: seen through a view's lowerdir.
        let v = c
            .view(api::ViewSnapshotRequest {
                snapshotter: SN.into(),
                key: format!("v{round}"),
                parent: name.clone(),
                labels: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .mounts;
        let lowers = v[0].options[0].strip_prefix("lowerdir=").unwrap();
        let layer = lowers.split(':').next().unwrap();
        let files = std::fs::read_dir(layer)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('f')
            })
            .count();
        assert_eq!(
            files, FILES,
            "round {round}: the layer holds its {FILES} files"
        );
        remove(&mut c, &format!("v{round}")).await.unwrap();
        // Every listed snapshot's parent is listed, and exactly its directories are on disk.
        let all = list(&mut c, &[]).await;
        for i in &all {
            assert!(i.parent.is_empty() || all.iter().any(|p| p.name == i.parent));
        }
        assert_eq!(
            s.dirs(),
            all.len(),
            "round {round}: no orphan or missing dir"
        );
        // Keep the store small: drop the layer again (every other round, across a kill too).
        if round % 2 == 0 {
            remove(&mut c, &name).await.unwrap();
        }
    }
    println!(
        "kill -9 during commit ({commit_micros} us each): {committed} rounds found committed, {still_active} still active"
    );
    s.stop();
}
