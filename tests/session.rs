//! The mount session as a library call, in this process (as the storage driver uses it):
//! start returns with the mount live, unmount ends it and its serving threads, and every
//! refusal comes back as the kind a caller acts on, with nothing left mounted.
//! Its own test binary: a union in-process sets the process umask to 0 (the daemon's rule),
//! which must not leak into other suites' file creation.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use layerfuse::session::{MountRequest, Session, SetupErrorKind};
use std::fs;
use std::path::Path;

fn request(l: &Layers) -> MountRequest {
    MountRequest {
        lowers: l.lowers.clone(),
        upper: l.upper.clone(),
        work: l.work.clone(),
        mountpoint: l.mnt.clone(),
        redirect_dir: true,
        ..Default::default()
    }
}

fn mounted(p: &Path) -> bool {
    !mounts_at(p).is_empty()
}

#[test]
fn start_serves_in_process_and_unmount_ends_it() {
    need_root!();
    let l = Layers::new(2);
    l.lower(0).file("top", "t");
    l.lower(1).file("base", "b");
    let cfg = request(&l).validate().expect("valid request");
    let session = Session::start(cfg).expect("start");
    // Live when start returns: no polling.
    assert!(mounted(&l.mnt), "not mounted after start");
    assert_eq!(session.mountpoint(), l.mnt.as_path());
    assert_eq!(fs::read_to_string(l.mnt.join("base")).unwrap(), "b");
    fs::write(l.mnt.join("new"), "n").unwrap();
    fs::remove_file(l.mnt.join("top")).unwrap();
    session.unmount().expect("unmount");
    assert!(!mounted(&l.mnt), "still mounted after unmount");
    // The daemon's work is in the upper once unmount returned.
    let upper = l.upper.as_ref().unwrap();
    assert_eq!(fs::read_to_string(upper.join("new")).unwrap(), "n");
    assert!(
        fs::symlink_metadata(upper.join("top")).is_ok(),
        "no whiteout"
    );
}

#[test]
fn a_dropped_session_unmounts() {
    need_root!();
    let l = Layers::new(1);
    let session = Session::start(request(&l).validate().unwrap()).unwrap();
    assert!(mounted(&l.mnt));
    drop(session);
    assert!(!mounted(&l.mnt), "a dropped session left its mount");
}

#[test]
fn refusals_have_the_kind_a_caller_acts_on() {
    need_root!();
    let l = Layers::new(2);
    let kind = |r: MountRequest| r.validate().map(|_| ()).unwrap_err().kind();

    let mut r = request(&l);
    r.lowers.push(l.root.join("nope"));
    assert_eq!(kind(r), SetupErrorKind::NotFound);

    let mut r = request(&l);
    r.upper = Some(l.lowers[0].join("sub"));
    fs::create_dir(l.lowers[0].join("sub")).unwrap();
    assert_eq!(kind(r), SetupErrorKind::Invalid, "upper inside a lower");

    let mut r = request(&l);
    r.uid_mapping = Some("1:2".into());
    assert_eq!(kind(r), SetupErrorKind::Invalid, "bad uid mapping");

    let first = Session::start(request(&l).validate().unwrap()).unwrap();
    assert_eq!(
        kind(request(&l)),
        SetupErrorKind::AlreadyExists,
        "mountpoint already a layerfuse mount"
    );

    // The same upper and work dir at another mountpoint: the work dir is held.
    let other = l.root.join("m2");
    fs::create_dir(&other).unwrap();
    let mut r = request(&l);
    r.mountpoint = other.clone();
    let err = Session::start(r.validate().unwrap()).unwrap_err();
    assert_eq!(err.kind(), SetupErrorKind::Busy, "{err}");
    assert!(!err.to_string().contains('\n'));
    assert!(!mounted(&other), "a refused start left a mount");

    // A busy mount refuses to unmount, and stays served.
    let unmounter = first.unmounter();
    let open = fs::File::open(l.mnt.join(".")).unwrap();
    let err = first.unmount().unwrap_err();
    drop(open);
    assert_eq!(err.kind(), SetupErrorKind::Busy, "{err}");
    assert!(mounted(&l.mnt), "a refused unmount unmounted");
    unmounter.unmount(false).expect("unmount once idle");
    assert!(!mounted(&l.mnt));
}
