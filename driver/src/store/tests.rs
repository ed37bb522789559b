//! The store on a real filesystem: import, exact export, dedup, records, hostile
//! tars, container-layer export from the union's markers, crash leftovers.

use super::*;
use layerfuse::layer::storemeta;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;

/// A scratch store root under /tmp/lft, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = PathBuf::from(format!(
            "/tmp/lft/driver-store-{tag}-{}-{}",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn id(s: &str) -> LayerId {
    LayerId::parse(s).unwrap()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(100);
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    h
}

/// A tar with a raw name (bypassing the tar crate's own checks), for hostile input.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &[u8],
    kind: tar::EntryType,
    link: &[u8],
    data: &[u8],
) {
    let mut h = header(kind, 0o644, data.len() as u64);
    h.as_old_mut().name.fill(0);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname.fill(0);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, "etc/", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o4755, 11);
    b.append_data(&mut h, "etc/suid", &b"hello world"[..])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 11);
    b.append_data(&mut h, "etc/plain", &b"hello world"[..])
        .unwrap();
    let mut h = header(tar::EntryType::Link, 0o644, 0);
    b.append_link(&mut h, "etc/plain-link", "etc/plain")
        .unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "etc/sym", "/etc/passwd").unwrap();
    let mut h = header(tar::EntryType::Regular, 0, 0);
    b.append_data(&mut h, "etc/.wh.gone", std::io::empty())
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0, 0);
    b.append_data(&mut h, "var/.wh..wh..opq", std::io::empty())
        .unwrap();
    let long = format!("deep/{}/file", "x".repeat(200));
    let mut h = header(tar::EntryType::Regular, 0o600, 3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut v = b.into_inner().unwrap();
    // Trailing zeros past the end-of-archive blocks, as some tools write.
    v.extend_from_slice(&[0u8; 2048]);
    v
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

#[test]
fn import_then_export_gives_the_same_bytes() {
    let s = Scratch::new("exact");
    let store = Store::open(&s.0).unwrap();
    let tar = sample_tar();
    let sum = store.import(&id("base"), None, &tar[..], None).unwrap();
    assert_eq!(sum.diff_id, sha(&tar));
    assert_eq!(sum.tar_size, tar.len() as u64);
    let mut out = Vec::new();
    store.diff(&id("base"), None, &mut out).unwrap();
    assert_eq!(out, tar);
    let meta = store.get(&id("base")).unwrap();
    assert_eq!(meta.diff_id.as_deref(), Some(sha(&tar).as_str()));
    // Whiteouts kept as OCI files; the store's record beside the deduplicated files.
    let diff = store.layer_path(&id("base")).join("diff");
    assert!(diff.join("etc/.wh.gone").is_file());
    assert!(diff.join("var/.wh..wh..opq").is_file());
    let rec = storemeta::decode(&std::fs::read(diff.join("etc/.wh..wh..lfmeta")).unwrap()).unwrap();
    let plain = storemeta::find(&rec, b"plain").unwrap();
    let link = storemeta::find(&rec, b"plain-link").unwrap();
    let suid = storemeta::find(&rec, b"suid").unwrap();
    assert_eq!((plain.nlink, plain.file), (2, link.file));
    assert_eq!(
        (suid.nlink, suid.mode, suid.uid, suid.gid),
        (1, 0o104755, 1000, 100)
    );
    assert_ne!(suid.file, plain.file);
    assert_eq!(plain.mtime.sec, 1_600_000_000);
    // Same content, different mode: two objects, so no set-id bit leaks.
    let m = |p: &str| std::fs::symlink_metadata(diff.join(p)).unwrap();
    assert_ne!(m("etc/suid").ino(), m("etc/plain").ino());
    assert_eq!(m("etc/suid").mode() & 0o7777, 0o4755);
    assert_eq!(m("etc/plain").mode() & 0o7777, 0o644);
}

#[test]
fn identical_files_across_layers_share_one_object() {
    let s = Scratch::new("dedup");
    let store = Store::open(&s.0).unwrap();
    let tar = sample_tar();
    store.import(&id("a"), None, &tar[..], None).unwrap();
    store
        .import(&id("b"), Some(&id("a")), &tar[..], None)
        .unwrap();
    let p = |l: &str| store.layer_path(&id(l)).join("diff/etc/plain");
    let (a, b) = (
        std::fs::metadata(p("a")).unwrap(),
        std::fs::metadata(p("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    let u = store.usage().unwrap();
    assert_eq!((u.layers, u.image_layers), (2, 2));
    // plain (x2 per layer via the tar's hard link), suid, deep file: 3 objects.
    assert_eq!(u.objects, 3);
    assert!(u.deduplicated_bytes >= 11 + 11 + 3, "{u:?}");
    // Distinct file numbers per layer.
    let rec = |l: &str| {
        let b = std::fs::read(store.layer_path(&id(l)).join("diff/etc/.wh..wh..lfmeta")).unwrap();
        storemeta::decode(&b).unwrap()
    };
    assert_ne!(rec("a")[0].file, rec("b")[0].file);
    assert_eq!(store.lower_dirs(&id("b")).unwrap().len(), 2);
    // Removing both leaves only garbage objects, which gc takes.
    assert_eq!(store.remove(&id("a")).unwrap_err().kind, ErrorKind::Busy);
    store.remove(&id("b")).unwrap();
    store.remove(&id("a")).unwrap();
    let g = store.gc().unwrap();
    assert_eq!(g.objects_removed, 3);
    assert_eq!(store.usage().unwrap().objects, 0);
}

fn hostile(tar: Vec<u8>, why: &str) {
    let s = Scratch::new("hostile");
    let mut store = Store::open(&s.0).unwrap();
    store.set_device_nodes(false);
    let err = store.import(&id("h"), None, &tar[..], None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Hostile, "{err}");
    assert!(err.message.contains(why), "{err}");
    // Nothing listed, nothing staged, nothing outside the store.
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(s.0.join("store/staging"))
            .unwrap()
            .count(),
        0
    );
    let mut names: Vec<_> = std::fs::read_dir(&s.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![OsString::from("store")]);
}

use std::ffi::OsString;

#[test]
fn hostile_absolute_name() {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"/tmp/evil", tar::EntryType::Regular, b"", b"x");
    hostile(b.into_inner().unwrap(), "absolute name");
}

#[test]
fn hostile_dotdot() {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"a/../../evil", tar::EntryType::Regular, b"", b"x");
    hostile(b.into_inner().unwrap(), "'..'");
}

#[test]
fn hostile_path_through_own_symlink() {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"link", tar::EntryType::Symlink, b"..", b"");
    raw_entry(&mut b, b"link/evil", tar::EntryType::Regular, b"", b"x");
    hostile(b.into_inner().unwrap(), "through a symlink");
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"d", tar::EntryType::Symlink, b"/tmp", b"");
    raw_entry(&mut b, b"d/x/y", tar::EntryType::Directory, b"", b"");
    hostile(b.into_inner().unwrap(), "through a symlink");
}

#[test]
fn hostile_hard_link_outside() {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"passwd", tar::EntryType::Link, b"/etc/passwd", b"");
    hostile(b.into_inner().unwrap(), "absolute name");
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"passwd", tar::EntryType::Link, b"etc/passwd", b"");
    hostile(b.into_inner().unwrap(), "outside this layer");
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        b"passwd",
        tar::EntryType::Link,
        b"../../etc/passwd",
        b"",
    );
    hostile(b.into_inner().unwrap(), "'..'");
}

#[test]
fn hostile_device_node_when_not_allowed() {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"dev/sda", tar::EntryType::Block, b"", b"");
    hostile(b.into_inner().unwrap(), "device node");
}

#[test]
fn hostile_long_name() {
    let mut b = tar::Builder::new(Vec::new());
    let name = format!("d/{}", "n".repeat(256));
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    b.append_data(&mut h, &name, &b"x"[..]).unwrap();
    hostile(b.into_inner().unwrap(), "over 255 bytes");
}

#[test]
fn hostile_reserved_record_name() {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        b"etc/.wh..wh..lfmeta",
        tar::EntryType::Regular,
        b"",
        b"x",
    );
    hostile(b.into_inner().unwrap(), "reserved");
}

#[test]
fn hostile_truncated_tar() {
    let mut t = sample_tar();
    t.truncate(1200);
    let s = Scratch::new("trunc");
    let store = Store::open(&s.0).unwrap();
    assert!(store.import(&id("t"), None, &t[..], None).is_err());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn ids_are_checked() {
    for bad in ["", "..", ".x", "a/b", "a\0b", &"x".repeat(129), "-a"] {
        assert!(LayerId::parse(bad).is_err(), "{bad:?}");
    }
    for good in ["abc", "0f-init", "a.b_c", &"x".repeat(128)] {
        assert!(LayerId::parse(good).is_ok(), "{good:?}");
    }
    assert!(serde_json::from_str::<LayerId>("\"../x\"").is_err());
}

#[test]
fn crash_leftovers_are_gone_at_open() {
    let s = Scratch::new("crash");
    let store = Store::open(&s.0).unwrap();
    store.create(&id("kept"), None, LayerKind::Image).unwrap();
    // A staged change whose maker died (its lock file is free), a half removal.
    let st = s.0.join("store/staging/dead");
    std::fs::create_dir_all(st.join("layer/diff")).unwrap();
    std::fs::write(st.join("lock"), b"").unwrap();
    std::fs::create_dir_all(s.0.join("store/trash/x/diff")).unwrap();
    // A live one in this process is kept.
    let live = store.stage().unwrap();
    drop(store);
    let store = Store::open(&s.0).unwrap();
    assert!(!st.exists());
    assert!(!s.0.join("store/trash/x").exists());
    assert!(live.path.exists());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn container_layer_exports_markers_and_reimports_exactly() {
    if layerfuse::layer::writer::effective_ids().0 != 0 {
        assert!(std::env::var("CI").is_err(), "needs root under CI");
        return;
    }
    let s = Scratch::new("rw");
    let store = Store::open(&s.0).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in [
        ("old/a", "1"),
        ("old/sub/b", "2"),
        ("keep/c", "3"),
        ("del", "4"),
        ("opq/x", "5"),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, p, data.as_bytes()).unwrap();
    }
    let base = b.into_inner().unwrap();
    store.import(&id("img"), None, &base[..], None).unwrap();
    store
        .create(&id("ctr"), Some(&id("img")), LayerKind::Container)
        .unwrap();
    let up = store.layer_path(&id("ctr")).join("upper");
    // What the union leaves after: rm del; mv old new (redirect); echo > keep/c2;
    // rm -r opq && mkdir opq && touch opq/y; echo > new/sub/b2.
    let wh = |p: &Path| {
        let st = std::process::Command::new("mknod")
            .arg(p)
            .args(["c", "0", "0"])
            .status()
            .unwrap();
        assert!(st.success());
    };
    wh(&up.join("del"));
    wh(&up.join("old"));
    std::fs::create_dir_all(up.join("new/sub")).unwrap();
    xattr_set(&up.join("new"), "trusted.overlay.redirect", b"/old");
    std::fs::write(up.join("new/sub/b2"), "6").unwrap();
    std::fs::create_dir_all(up.join("keep")).unwrap();
    std::fs::write(up.join("keep/c2"), "7").unwrap();
    std::fs::create_dir_all(up.join("opq")).unwrap();
    xattr_set(&up.join("opq"), "trusted.overlay.opaque", b"y");
    std::fs::write(up.join("opq/y"), "8").unwrap();

    let mut out = Vec::new();
    store.diff(&id("ctr"), Some(&id("img")), &mut out).unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&out[..]).entries().unwrap() {
        names.push(String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap());
    }
    let want = [
        ".wh.del",
        "keep",
        "keep/c2",
        "new",
        "new/a",
        "new/sub",
        "new/sub/b",
        "new/sub/b2",
        ".wh.old",
        "opq",
        "opq/.wh..wh..opq",
        "opq/y",
    ];
    for w in want {
        assert!(
            names.iter().any(|n| n.trim_end_matches('/') == w),
            "{w} missing from {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.starts_with("opq/x")), "{names:?}");
    let changes = store.changes(&id("ctr"), None).unwrap();
    let has = |p: &str, k: ChangeKind| changes.iter().any(|c| c.path == p && c.kind == k);
    assert!(has("/del", ChangeKind::Delete), "{changes:?}");
    assert!(has("/old", ChangeKind::Delete), "{changes:?}");
    assert!(has("/new/a", ChangeKind::Add), "{changes:?}");
    assert!(has("/keep", ChangeKind::Modify), "{changes:?}");
    assert!(has("/keep/c2", ChangeKind::Add), "{changes:?}");
    assert_eq!(store.diff_size(&id("ctr"), None).unwrap(), 5);
    // Commit: the export imported as a new layer gives the same bytes (and diffID).
    let sum = store
        .import(&id("committed"), Some(&id("img")), &out[..], None)
        .unwrap();
    assert_eq!(sum.diff_id, sha(&out));
    let mut again = Vec::new();
    store.diff(&id("committed"), None, &mut again).unwrap();
    assert_eq!(again, out);
}

fn xattr_set(p: &Path, k: &str, v: &[u8]) {
    let d = layerfuse::layer::writer::TreeDir::open(p).unwrap();
    d.set_xattr(OsStr::new(""), OsStr::new(k), v).unwrap();
}
