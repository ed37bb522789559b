//! The upper filling up (ENOSPC). Upper and work dir live on a small tmpfs; a filler uses up
//! its data blocks or its inodes, then the union is asked to copy up, write, create, mkdir,
//! whiteout and rename. The same steps run on kernel overlayfs over an identical tmpfs, and
//! the two logs (errnos, what is visible afterwards) must be equal. Then the filler goes and
//! every step must work again on the same mount; after the next mount the work dir holds no
//! leftovers and the lower layer is what it was.

use crate::common::*;
use crate::need_root;
use crate::support::*;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const MIB: u64 = 1024 * 1024;
/// The small filesystem: room for the big lower file once, not beside the filler.
const SMALL_SIZE: u64 = 16 * MIB;
const SMALL_INODES: u64 = 400;
const BIG: usize = 6 * MIB as usize;

fn big_content() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

fn template() -> Layers {
    let t = Layers::new(1);
    t.lower(0)
        .file_bytes("big", &big_content())
        .file("small", "small\n")
        .file("renamed", "renamed\n")
        .file("sub/x", "x\n")
        .dir("ldir")
        .dir("ldir2");
    t
}

/// The observations of one side: errnos and what shows afterwards.
fn steps(mnt: &Path, small: &SmallFs, log: &mut Vec<String>) {
    let p = |r: &str| mnt.join(r);
    let show = |log: &mut Vec<String>, what: &str| {
        let mut names: Vec<String> = fs::read_dir(mnt)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        log.push(format!("{what}: listing {names:?}"));
        for f in ["big", "small", "renamed", "sub/x", "written"] {
            let s = match fs::read(p(f)) {
                Ok(b) => describe_bytes(&b),
                Err(e) => errno_name(&e),
            };
            log.push(format!("{what}: {f} = {s}"));
        }
    };
    // A file of the upper with some content, while there is room.
    fs::write(p("written"), b"old\n").unwrap();

    // --- data blocks used up ---
    small.fill_blocks();
    let r = fs::OpenOptions::new().write(true).open(p("big"));
    log.push(format!(
        "blocks full: open big for write (copy-up): {}",
        outcome(&r)
    ));
    drop(r);
    let r = fs::set_permissions(p("small"), fs::Permissions::from_mode(0o600));
    log.push(format!(
        "blocks full: chmod small (copy-up): {}",
        outcome(&r)
    ));
    let r = fs::rename(p("renamed"), p("renamed2"));
    log.push(format!("blocks full: rename a lower file: {}", outcome(&r)));
    let r = fs::OpenOptions::new()
        .append(true)
        .open(p("written"))
        .and_then(|mut f| {
            f.write_all(&vec![b'w'; 512 * 1024])
                .and_then(|()| f.sync_all())
        });
    log.push(format!("blocks full: append 512 KiB: {}", outcome(&r)));
    let mut head = [0u8; 4];
    let r = fs::File::open(p("written")).and_then(|mut f| f.read_exact(&mut head));
    log.push(format!(
        "blocks full: written still starts with old: {} {:?}",
        outcome(&r),
        &head
    ));
    // The append may have landed in part (as on any filesystem): cut it back.
    fs::write(p("written"), b"old\n").ok();
    show(log, "blocks full");
    log.push(format!(
        "blocks full: mode of small {:o}",
        fs::metadata(p("small")).unwrap().permissions().mode()
    ));
    small.free();

    // --- inodes used up ---
    small.fill_inodes();
    let r = fs::File::create(p("new"));
    log.push(format!("inodes full: create: {}", outcome(&r)));
    let r = fs::create_dir(p("newdir"));
    log.push(format!("inodes full: mkdir: {}", outcome(&r)));
    let r = fs::remove_file(p("small"));
    log.push(format!(
        "inodes full: unlink a lower file (whiteout): {}",
        outcome(&r)
    ));
    let r = fs::remove_dir(p("ldir"));
    log.push(format!(
        "inodes full: rmdir a lower dir (whiteout): {}",
        outcome(&r)
    ));
    let r = fs::remove_file(p("sub/x"));
    log.push(format!(
        "inodes full: unlink in a lower dir (parent copy-up): {}",
        outcome(&r)
    ));
    let r = fs::OpenOptions::new().write(true).open(p("renamed"));
    log.push(format!(
        "inodes full: open a lower file for write: {}",
        outcome(&r)
    ));
    drop(r);
    let r = fs::rename(p("ldir2"), p("ldir3"));
    log.push(format!("inodes full: rename a lower dir: {}", outcome(&r)));
    for f in ["new", "newdir", "ldir", "ldir2", "ldir3"] {
        log.push(format!("inodes full: stat {f}: {}", describe_stat(&p(f))));
    }
    show(log, "inodes full");
    small.free();

    // --- room again, same mount: everything works ---
    let r = fs::OpenOptions::new()
        .write(true)
        .open(p("big"))
        .and_then(|mut f| f.write_all(b"new!"));
    log.push(format!("freed: write into big: {}", outcome(&r)));
    let r = fs::set_permissions(p("small"), fs::Permissions::from_mode(0o600));
    log.push(format!("freed: chmod small: {}", outcome(&r)));
    let r = fs::rename(p("renamed"), p("renamed2"));
    log.push(format!("freed: rename a lower file: {}", outcome(&r)));
    let r = fs::OpenOptions::new()
        .append(true)
        .open(p("written"))
        .and_then(|mut f| f.write_all(b"more\n"));
    log.push(format!("freed: append: {}", outcome(&r)));
    let r = fs::File::create(p("new"));
    log.push(format!("freed: create: {}", outcome(&r)));
    let r = fs::create_dir(p("newdir"));
    log.push(format!("freed: mkdir: {}", outcome(&r)));
    let r = fs::remove_file(p("sub/x"));
    log.push(format!("freed: unlink in a lower dir: {}", outcome(&r)));
    let r = fs::remove_dir(p("ldir"));
    log.push(format!("freed: rmdir a lower dir: {}", outcome(&r)));
    let r = fs::rename(p("ldir2"), p("ldir3"));
    log.push(format!("freed: rename a lower dir: {}", outcome(&r)));
    show(log, "freed");
}

#[test]
fn upper_full_fails_each_operation_whole_and_recovers_without_remount() {
    need_root!();
    let tpl = template();

    // The oracle: kernel overlayfs, upper and work on an identical tmpfs.
    let kernel_log = {
        let small = SmallFs::new(SMALL_SIZE, SMALL_INODES);
        let l = tpl.clone_fresh();
        let (u, w) = (small.dir("u"), small.dir("w"));
        let _k = KernelOverlay::new(&l.lowers, &u, &w, &l.mnt);
        let mut log = Vec::new();
        steps(&l.mnt, &small, &mut log);
        if std::env::var_os("LAYERFUSE_TEST_SHOW").is_some() {
            eprintln!("kernel log:\n  {}", log.join("\n  "));
        }
        log
    };

    let small = SmallFs::new(SMALL_SIZE, SMALL_INODES);
    let l = tpl.clone_fresh();
    let lower_before = tree_snapshot(&l.lowers[0]);
    let (u, w) = (small.dir("u"), small.dir("w"));
    let mut m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &[]);
    let mut log = Vec::new();
    steps(&m.mnt, &small, &mut log);
    assert!(
        m.is_mounted(),
        "the mount went away; stderr:\n{}",
        m.stderr()
    );
    assert_same("ENOSPC steps", Impl::Layerfuse, &kernel_log, &log);

    // The next mount: no leftovers in the work dir, the lower untouched, the changes kept.
    m.unmount();
    let m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &[]);
    assert_eq!(
        work_leftovers(&w),
        Vec::<String>::new(),
        "work dir leftovers"
    );
    assert_eq!(tree_snapshot(&l.lowers[0]), lower_before, "lower changed");
    assert_eq!(fs::read(m.path("written")).unwrap(), b"old\nmore\n");
    let big = fs::read(m.path("big")).unwrap();
    assert_eq!(&big[..4], b"new!");
    assert_eq!(&big[4..], &big_content()[4..]);
}

/// The first population of a new volume does not fit: the mount is refused in one line,
/// nothing stays mounted, and no partly filled volume is ever shown: once there is room,
/// the next mount fills it completely. Both for a volume made beforehand (as `docker volume
/// create` does) and one the mount makes.
#[test]
fn volume_population_that_does_not_fit_fails_whole() {
    need_root!();
    let l = Layers::new(1);
    let content = |i: usize| vec![b'a' + i as u8; MIB as usize];
    for i in 0..6 {
        l.lower(0).file_bytes(&format!("data/f{i}"), &content(i));
    }
    let lower_before = tree_snapshot(&l.lowers[0]);
    let small = SmallFs::new(16 * MIB, 1000);
    let store = small.dir("store");
    let (st, err) = run_layerfuse(&[
        "volume".into(),
        "--root".into(),
        store.clone().into(),
        "create".into(),
        "made".into(),
    ]);
    assert!(st.is_some_and(|s| s.success()), "volume create: {err}");
    let (u, w) = (l.upper.clone().unwrap(), l.work.clone().unwrap());
    for vol in ["made", "fresh"] {
        let extra = vec![
            format!("--root={}", store.display()),
            format!("--volume={vol}:/data"),
        ];
        // Leave about 3 MiB: the 6 MiB of /data cannot fit.
        let filler = small.fill_blocks();
        let f = fs::OpenOptions::new().write(true).open(&filler).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 3 * MIB).unwrap();
        drop(f);
        let cmd = layerfuse_cmd(&l.lowers, &u, &w, &l.mnt, &extra);
        let err = match Live::start(cmd, &l.mnt) {
            Ok(_) => panic!("{vol}: the mount went live on a full volume store"),
            Err(e) => e,
        };
        assert!(
            err.contains("exited with") && err.contains("No space left"),
            "{vol}: not a refusal naming ENOSPC: {err}"
        );
        assert!(mounts_at(&l.mnt).is_empty(), "{vol}: left mounted");
        small.free();
        // Room again: the next mount fills the volume completely.
        let m = layerfuse_on(&l.lowers, &u, &w, &l.mnt, &extra);
        for i in 0..6 {
            let got = fs::read(m.path(&format!("data/f{i}"))).unwrap_or_default();
            assert!(
                got == content(i),
                "{vol}: data/f{i} after the second mount: {} bytes",
                got.len()
            );
        }
        assert_eq!(
            work_leftovers(&w),
            Vec::<String>::new(),
            "work dir leftovers"
        );
    }
    assert_eq!(tree_snapshot(&l.lowers[0]), lower_before, "lower changed");
}
